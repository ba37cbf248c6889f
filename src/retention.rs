//! Retention policy: which backups `expire` keeps, and why. Pure: no I/O.
//!
//! Policies apply to each cluster (system identifier) on its own, so after a major-version
//! upgrade (pg_upgrade makes a new cluster) or a rebuild, the old cluster's backups cannot
//! crowd out the new one's. Periods follow restic's `forget`: a `--keep-daily N` rule keeps
//! the newest backup of each of the last N days that have a backup, judged by when the backup
//! finished (UTC), not by its name.

use chrono::{DateTime, Datelike, Utc};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

/// What to keep. Rules add up: a backup is kept if any rule keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// The newest `last` backups.
    pub last: u32,
    /// The newest backup of each of the last `daily` days that have one.
    pub daily: u32,
    /// The newest backup of each of the last `weekly` weeks that have one.
    pub weekly: u32,
    /// The newest backup of each of the last `monthly` months that have one.
    pub monthly: u32,
    /// The newest backup of each of the last `yearly` years that have one.
    pub yearly: u32,
    /// Every backup finished within this long before the cluster's newest backup.
    pub within: Option<Duration>,
    /// Point-in-time recovery to any time within this long before now: the newest backup
    /// finished before the window starts is kept, and with it the WAL from there on.
    pub pitr: Option<Duration>,
    /// The newest N backups made from the archive (`backup --from-archive`). When set, the
    /// rules above look at server backups only, and this one at the others.
    pub archive_last: Option<u32>,
}

impl Policy {
    /// Whether the policy has no rule, which `expire` refuses rather than deleting everything.
    pub fn is_empty(&self) -> bool {
        *self == Policy::default()
    }
}

/// Why a backup is kept.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case", tag = "rule", content = "by")]
pub enum Reason {
    /// The newest backup of its cluster is never expired.
    Newest,
    /// Among the newest `last`.
    Last,
    /// The newest of its day.
    Daily,
    /// The newest of its week.
    Weekly,
    /// The newest of its month.
    Monthly,
    /// The newest of its year.
    Yearly,
    /// Finished within the `within` period.
    Within,
    /// Among the newest `archive_last` backups made from the archive.
    ArchiveLast,
    /// Needed for point-in-time recovery within the `pitr` window.
    Pitr,
    /// Marked with `pgsnapfs backup-keep`.
    Marked,
    /// In use by a running command: the lease's description.
    Pinned(String),
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Newest => f.write_str("newest of its cluster"),
            Reason::Last => f.write_str("keep-last"),
            Reason::Daily => f.write_str("keep-daily"),
            Reason::Weekly => f.write_str("keep-weekly"),
            Reason::Monthly => f.write_str("keep-monthly"),
            Reason::Yearly => f.write_str("keep-yearly"),
            Reason::Within => f.write_str("keep-within"),
            Reason::ArchiveLast => f.write_str("keep-archive-last"),
            Reason::Pitr => f.write_str("keep-pitr"),
            Reason::Marked => f.write_str("marked with backup-keep"),
            Reason::Pinned(by) => write!(f, "in use by {by}"),
        }
    }
}

/// The facts about one backup the policy looks at.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The backup's id.
    pub id: String,
    /// Its cluster's system identifier.
    pub system: u64,
    /// When it finished.
    pub stop_time: DateTime<Utc>,
    /// Made from the archive (`backup --from-archive`), not by a server.
    pub from_archive: bool,
}

/// The verdict on each candidate: the reasons it is kept, empty if it expires.
pub fn decide(
    backups: &[Candidate],
    policy: &Policy,
    now: DateTime<Utc>,
    marked: &HashSet<String>,
    pinned: &HashMap<String, String>,
) -> BTreeMap<String, Vec<Reason>> {
    let mut out: BTreeMap<String, Vec<Reason>> =
        backups.iter().map(|b| (b.id.clone(), Vec::new())).collect();
    let mut by_system: BTreeMap<u64, Vec<&Candidate>> = BTreeMap::new();
    for b in backups {
        by_system.entry(b.system).or_default().push(b);
    }
    for group in by_system.values_mut() {
        // Newest first; the id breaks ties so the verdict does not depend on input order.
        group.sort_by(|a, b| (b.stop_time, &b.id).cmp(&(a.stop_time, &a.id)));
        let mut keep = |b: &Candidate, r: Reason| out.get_mut(&b.id).expect("listed").push(r);
        keep(group[0], Reason::Newest);
        for b in group.iter() {
            if marked.contains(&b.id) {
                keep(b, Reason::Marked);
            }
            if let Some(by) = pinned.get(&b.id) {
                keep(b, Reason::Pinned(by.clone()));
            }
        }
        // With a rule of their own, backups made from the archive are thinned apart.
        if let Some(n) = policy.archive_last {
            let archive = group.iter().filter(|b| b.from_archive);
            for b in archive.take(n as usize) {
                keep(b, Reason::ArchiveLast);
            }
            group.retain(|b| !b.from_archive);
            if group.is_empty() {
                continue;
            }
        }
        for b in group.iter().take(policy.last as usize) {
            keep(b, Reason::Last);
        }
        type Period = fn(DateTime<Utc>) -> (i32, u32, u32);
        let periods: [(u32, Reason, Period); 4] = [
            (policy.daily, Reason::Daily, |t| (t.year(), t.ordinal(), 0)),
            (policy.weekly, Reason::Weekly, |t| {
                (t.iso_week().year(), t.iso_week().week(), 0)
            }),
            (policy.monthly, Reason::Monthly, |t| {
                (t.year(), t.month(), 0)
            }),
            (policy.yearly, Reason::Yearly, |t| (t.year(), 0, 0)),
        ];
        for (count, reason, period) in periods {
            let mut left = count;
            let mut last = None;
            for b in group.iter() {
                let p = period(b.stop_time);
                if left > 0 && last != Some(p) {
                    keep(b, reason.clone());
                    left -= 1;
                    last = Some(p);
                }
            }
        }
        if let Some(within) = policy.within {
            let from = group[0].stop_time - chrono::Duration::from_std(within).unwrap_or_default();
            for b in group.iter().filter(|b| b.stop_time >= from) {
                keep(b, Reason::Within);
            }
        }
        if let Some(window) = policy.pitr {
            let start = now - chrono::Duration::from_std(window).unwrap_or_default();
            // The newest backup finished before the window; if none is that old, the oldest
            // backup is the earliest point recovery can reach.
            let base = group
                .iter()
                .find(|b| b.stop_time <= start)
                .or(group.last())
                .expect("groups are not empty");
            keep(base, Reason::Pitr);
        }
    }
    out
}

/// Parses a duration such as `30d`, `12h`, `2w`, `1y` or `1d12h` (units s, m, h, d, w, y;
/// a year is 365 days).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration such as 30d, 12h, 2w or 1d12h");
    let mut total = 0u64;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        let unit = match rest[digits..].chars().next() {
            Some('s') => 1,
            Some('m') => 60,
            Some('h') => 3600,
            Some('d') => 86400,
            Some('w') => 7 * 86400,
            Some('y') => 365 * 86400,
            _ => return Err(bad()),
        };
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        rest = &rest[digits + 1..];
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, mo: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, 0, 0).unwrap()
    }

    fn backup(id: &str, system: u64, t: DateTime<Utc>) -> Candidate {
        Candidate {
            id: id.into(),
            system,
            stop_time: t,
            from_archive: false,
        }
    }

    /// Backups every 12 hours from 2026-01-01 00:00 for `days` days, ids `d<day>h<hour>`.
    fn twice_daily(days: u32) -> Vec<Candidate> {
        (0..days)
            .flat_map(|d| {
                [0, 12].map(|h| {
                    backup(
                        &format!("d{:02}h{h:02}", d + 1),
                        1,
                        at(2026, 1, 1, h) + chrono::Duration::days(d as i64),
                    )
                })
            })
            .collect()
    }

    fn kept(v: &BTreeMap<String, Vec<Reason>>) -> Vec<&str> {
        v.iter()
            .filter(|(_, r)| !r.is_empty())
            .map(|(id, _)| id.as_str())
            .collect()
    }

    fn decide_simple(
        b: &[Candidate],
        p: &Policy,
        now: DateTime<Utc>,
    ) -> BTreeMap<String, Vec<Reason>> {
        decide(b, p, now, &HashSet::new(), &HashMap::new())
    }

    #[test]
    fn keep_last_keeps_the_newest_by_stop_time_not_name() {
        let b = vec![
            backup("a", 1, at(2026, 1, 3, 0)),
            backup("b", 1, at(2026, 1, 1, 0)),
            backup("c", 1, at(2026, 1, 2, 0)),
        ];
        let policy = Policy {
            last: 2,
            ..Policy::default()
        };
        let v = decide_simple(&b, &policy, at(2026, 2, 1, 0));
        assert_eq!(kept(&v), vec!["a", "c"]);
        assert_eq!(v["a"], vec![Reason::Newest, Reason::Last]);
        assert_eq!(v["c"], vec![Reason::Last]);
    }

    #[test]
    fn daily_keeps_the_newest_of_each_of_the_last_n_days() {
        let b = twice_daily(10);
        let policy = Policy {
            daily: 3,
            ..Policy::default()
        };
        let v = decide_simple(&b, &policy, at(2026, 2, 1, 0));
        assert_eq!(kept(&v), vec!["d08h12", "d09h12", "d10h12"]);
    }

    #[test]
    fn periods_with_no_backup_do_not_count() {
        // Days 1, 2 and 9: keep-daily 2 keeps days 9 and 2, not "the last two calendar days".
        let b = vec![
            backup("x1", 1, at(2026, 1, 1, 5)),
            backup("x2", 1, at(2026, 1, 2, 5)),
            backup("x9", 1, at(2026, 1, 9, 5)),
        ];
        let policy = Policy {
            daily: 2,
            ..Policy::default()
        };
        assert_eq!(
            kept(&decide_simple(&b, &policy, at(2026, 1, 9, 6))),
            vec!["x2", "x9"]
        );
    }

    #[test]
    fn weekly_monthly_yearly() {
        // One backup a day, 2025-12-01 .. 2026-02-28.
        let b: Vec<Candidate> = (0..90)
            .map(|d| {
                let t = at(2025, 12, 1, 3) + chrono::Duration::days(d);
                backup(&t.format("%m%d").to_string(), 1, t)
            })
            .collect();
        let weekly = Policy {
            weekly: 2,
            ..Policy::default()
        };
        // 2026-02-28 is a Saturday: the newest of that ISO week, then Sunday 2026-02-22.
        assert_eq!(
            kept(&decide_simple(&b, &weekly, at(2026, 3, 1, 0))),
            vec!["0222", "0228"]
        );
        let monthly = Policy {
            monthly: 5,
            ..Policy::default()
        };
        assert_eq!(
            kept(&decide_simple(&b, &monthly, at(2026, 3, 1, 0))),
            vec!["0131", "0228", "1231"]
        );
        let yearly = Policy {
            yearly: 1,
            ..Policy::default()
        };
        assert_eq!(
            kept(&decide_simple(&b, &yearly, at(2026, 3, 1, 0))),
            vec!["0228"]
        );
    }

    #[test]
    fn rules_combine_and_each_reason_is_listed() {
        let b = twice_daily(5);
        let policy = Policy {
            last: 1,
            daily: 2,
            ..Policy::default()
        };
        let v = decide_simple(&b, &policy, at(2026, 2, 1, 0));
        assert_eq!(kept(&v), vec!["d04h12", "d05h12"]);
        assert_eq!(
            v["d05h12"],
            vec![Reason::Newest, Reason::Last, Reason::Daily]
        );
        assert_eq!(v["d04h12"], vec![Reason::Daily]);
    }

    #[test]
    fn within_counts_from_the_newest_backup() {
        let b = twice_daily(10);
        let policy = Policy {
            within: Some(parse_duration("1d").unwrap()),
            ..Policy::default()
        };
        // Long after the last backup, the last day of backups is still kept.
        let v = decide_simple(&b, &policy, at(2027, 1, 1, 0));
        assert_eq!(kept(&v), vec!["d09h12", "d10h00", "d10h12"]);
    }

    #[test]
    fn pitr_keeps_the_backup_before_the_window() {
        let b = twice_daily(10);
        let now = at(2026, 1, 10, 18);
        let policy = Policy {
            pitr: Some(parse_duration("2d").unwrap()),
            ..Policy::default()
        };
        // The window starts 2026-01-08 18:00: the newest backup before it is d08h12.
        let v = decide_simple(&b, &policy, now);
        assert_eq!(kept(&v), vec!["d08h12", "d10h12"]);
        assert_eq!(v["d08h12"], vec![Reason::Pitr]);
        // A window longer than the history keeps the oldest backup.
        let long = Policy {
            pitr: Some(parse_duration("30d").unwrap()),
            ..Policy::default()
        };
        assert_eq!(
            kept(&decide_simple(&b, &long, now)),
            vec!["d01h00", "d10h12"]
        );
    }

    #[test]
    fn marks_pins_and_clusters() {
        let mut b = twice_daily(3);
        // A new cluster (after pg_upgrade) with older-looking and newer backups.
        b.push(backup("new1", 2, at(2026, 1, 2, 1)));
        b.push(backup("new2", 2, at(2026, 1, 2, 2)));
        let policy = Policy {
            last: 1,
            ..Policy::default()
        };
        let marked = HashSet::from(["d01h00".to_string()]);
        let pinned = HashMap::from([("d02h00".to_string(), "mount lease 1".to_string())]);
        let v = decide(&b, &policy, at(2026, 2, 1, 0), &marked, &pinned);
        assert_eq!(kept(&v), vec!["d01h00", "d02h00", "d03h12", "new2"]);
        assert_eq!(v["d01h00"], vec![Reason::Marked]);
        assert_eq!(v["d02h00"], vec![Reason::Pinned("mount lease 1".into())]);
        assert!(v["new1"].is_empty());
    }

    #[test]
    fn archive_made_backups_are_thinned_apart() {
        // Server backups at midnight, archive-made ones at noon, for 10 days.
        let mut b = twice_daily(10);
        for c in b.iter_mut().filter(|c| c.id.ends_with("h12")) {
            c.from_archive = true;
        }
        let policy = Policy {
            daily: 3,
            archive_last: Some(2),
            ..Policy::default()
        };
        let v = decide_simple(&b, &policy, at(2026, 1, 11, 0));
        // The daily rule picks server backups only; the newest two archive-made ones stay.
        assert_eq!(kept(&v), ["d08h00", "d09h00", "d09h12", "d10h00", "d10h12"]);
        assert_eq!(v["d10h12"], [Reason::Newest, Reason::ArchiveLast]);
        assert_eq!(v["d09h12"], [Reason::ArchiveLast]);
        // Without the rule, every backup counts for the others, as before.
        let plain = Policy {
            daily: 3,
            ..Policy::default()
        };
        assert_eq!(
            kept(&decide_simple(&b, &plain, at(2026, 1, 11, 0))),
            ["d08h12", "d09h12", "d10h12"]
        );
    }

    #[test]
    fn newest_is_kept_even_when_no_rule_picks_it() {
        let b = twice_daily(10);
        let policy = Policy {
            pitr: Some(parse_duration("5d").unwrap()),
            ..Policy::default()
        };
        let v = decide_simple(&b, &policy, at(2026, 1, 10, 18));
        assert_eq!(v["d10h12"], vec![Reason::Newest]);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(
            parse_duration("1d12h").unwrap(),
            Duration::from_secs(36 * 3600)
        );
        assert_eq!(
            parse_duration("2w").unwrap(),
            Duration::from_secs(14 * 86400)
        );
        assert_eq!(
            parse_duration("1y").unwrap(),
            Duration::from_secs(365 * 86400)
        );
        for bad in ["", "d", "12", "3x", "-1d", "1.5d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
