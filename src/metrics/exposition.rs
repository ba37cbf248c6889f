//! The Prometheus text exposition format (version 0.0.4) of [`Metrics`]: every family once,
//! with its HELP and TYPE lines and all its samples together, as the format requires. Names
//! carry their unit (`_seconds`, `_bytes`, `_timestamp_seconds`); a fact not known (no backup
//! yet, no check recorded) has no sample rather than a made-up value.

use super::{Kind, Metrics, SystemMetrics};
use crate::status::Run;
use chrono::{DateTime, Utc};
use std::fmt::Write as _;

/// The content type of the text this module writes.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One metric family and its samples.
struct Family {
    name: &'static str,
    help: &'static str,
    samples: Vec<(Vec<(&'static str, String)>, f64)>,
}

/// The families in the order they are written, with their samples added as they are found.
struct Families(Vec<Family>);

impl Families {
    fn add(&mut self, name: &'static str, help: &'static str) {
        self.0.push(Family {
            name,
            help,
            samples: Vec::new(),
        });
    }

    /// A sample of family `name`; `None` values are left out.
    fn set(&mut self, name: &str, labels: &[(&'static str, &str)], value: Option<f64>) {
        let Some(value) = value else { return };
        let family = self
            .0
            .iter_mut()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("metric family {name} is not declared"));
        let labels = labels.iter().map(|(k, v)| (*k, v.to_string())).collect();
        family.samples.push((labels, value));
    }
}

/// Every family `render` can write: name and help. All are gauges.
const FAMILIES: &[(&str, &str)] = &[
    ("pgsnapfs_metrics_generated_timestamp_seconds", "When these metrics were computed (a textfile that stops changing means its timer stopped)."),
    ("pgsnapfs_backups", "Backups of the cluster in the repository."),
    ("pgsnapfs_backup_last_timestamp_seconds", "When the newest backup of this source (server: pgsnapfs backup; archive: backup --from-archive) ended."),
    ("pgsnapfs_backup_last_age_seconds", "Seconds from the end of the newest backup of this source to when these metrics were computed."),
    ("pgsnapfs_backup_last_size_bytes", "Size of the data directory the newest backup of this source holds."),
    ("pgsnapfs_backup_last_stored_new_bytes", "Bytes the newest backup of this source added to the repository."),
    ("pgsnapfs_backup_last_run_success", "Whether the last run of the backup command of this source succeeded (1) or failed (0). Runs refused before they began writing (bad options, server unreachable) write nothing and are not counted: alert on the backup's age too."),
    ("pgsnapfs_backup_last_run_timestamp_seconds", "When the last run of the backup command of this source ended."),
    ("pgsnapfs_backup_last_run_duration_seconds", "How long the last run of the backup command of this source took."),
    ("pgsnapfs_wal_last_segment", "Number of the newest archived WAL segment on the newest timeline (segment start = number x segment size)."),
    ("pgsnapfs_wal_last_archived_timestamp_seconds", "When the newest archived WAL segment was pushed (from its summary)."),
    ("pgsnapfs_wal_last_archived_age_seconds", "Seconds from the push of the newest archived WAL segment to when these metrics were computed."),
    ("pgsnapfs_wal_gaps", "Runs of WAL segments missing between the first and last archived segment of a timeline, over all timelines."),
    ("pgsnapfs_wal_missing_segments", "WAL segments those gaps miss."),
    ("pgsnapfs_wal_dropped_files", "WAL files asynchronous archiving dropped (wal-push --queue-max): recovery cannot pass them."),
    ("pgsnapfs_restorable_oldest_timestamp_seconds", "The oldest point a recovery can reach: the end of the oldest backup."),
    ("pgsnapfs_restorable_newest_timestamp_seconds", "The newest point a recovery can reach: the last archived commit of the newest timeline."),
    ("pgsnapfs_verify_last_success", "Whether the last verify of the cluster passed (1) or failed (0)."),
    ("pgsnapfs_verify_last_timestamp_seconds", "When the last verify of the cluster ended."),
    ("pgsnapfs_verify_last_duration_seconds", "How long the last verify of the cluster took."),
    ("pgsnapfs_verify_last_first_query_seconds", "How long the last verify took until the recovered server answered its first query."),
    ("pgsnapfs_check_last_success", "Whether the last check of the repository found no problem (1) or not (0)."),
    ("pgsnapfs_check_last_timestamp_seconds", "When the last check of the repository ended."),
    ("pgsnapfs_check_last_duration_seconds", "How long the last check of the repository took."),
    ("pgsnapfs_check_last_problems", "Problems the last check of the repository found."),
    ("pgsnapfs_check_last_read_data", "What pack data the last check read: 0 none (metadata only), 1 a subset, 2 all."),
    ("pgsnapfs_gc_last_success", "Whether the last gc (or gc --dry-run) of the repository completed (1) or failed (0)."),
    ("pgsnapfs_gc_last_timestamp_seconds", "When the last gc (or gc --dry-run) of the repository ended."),
    ("pgsnapfs_repository_packs_bytes", "Bytes of packs in the repository: what the last gc left plus what backups that ended since added (gc lists the packs; metrics does not, so packs of killed backups are not counted)."),
    ("pgsnapfs_repository_reclaimable_bytes", "Bytes of packs no backup used that the last gc left (condemned while other commands ran; after gc --dry-run, all it would free). Backups expired since are not counted."),
];

fn seconds(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

fn age(now: DateTime<Utc>, t: DateTime<Utc>) -> f64 {
    ((now - t).num_milliseconds() as f64 / 1000.0).max(0.0)
}

fn flag(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

/// The metrics as exposition text.
pub fn render(m: &Metrics) -> String {
    let mut f = Families(Vec::new());
    for (name, help) in FAMILIES {
        f.add(name, help);
    }
    let repo = m.repository.as_str();
    let base = [("repository", repo)];
    f.set(
        "pgsnapfs_metrics_generated_timestamp_seconds",
        &base,
        Some(seconds(m.now)),
    );
    for s in &m.systems {
        system(&mut f, m.now, repo, s);
    }
    if let Some(c) = &m.check {
        f.set("pgsnapfs_check_last_success", &base, Some(flag(c.ok)));
        run_times(&mut f, CHECK_TIMES, &base, c);
        f.set(
            "pgsnapfs_check_last_problems",
            &base,
            c.problems.map(|p| p as f64),
        );
        let read = match c.read_data.as_deref() {
            Some("all") => Some(2.0),
            Some("subset") => Some(1.0),
            Some("none") => Some(0.0),
            _ => None,
        };
        f.set("pgsnapfs_check_last_read_data", &base, read);
    }
    if let Some(g) = &m.gc {
        f.set("pgsnapfs_gc_last_success", &base, Some(flag(g.ok)));
        f.set(
            "pgsnapfs_gc_last_timestamp_seconds",
            &base,
            Some(seconds(g.finished)),
        );
        f.set(
            "pgsnapfs_repository_packs_bytes",
            &base,
            g.packs_bytes.map(|b| (b + m.stored_since_gc) as f64),
        );
        f.set(
            "pgsnapfs_repository_reclaimable_bytes",
            &base,
            g.reclaimable_bytes.map(|b| b as f64),
        );
    }
    write(&f.0)
}

/// When a run ended and how long it took, as the two families `names`.
fn run_times(f: &mut Families, names: [&str; 2], labels: &[(&'static str, &str)], r: &Run) {
    f.set(names[0], labels, Some(seconds(r.finished)));
    f.set(names[1], labels, Some(r.duration_s()));
}

const CHECK_TIMES: [&str; 2] = [
    "pgsnapfs_check_last_timestamp_seconds",
    "pgsnapfs_check_last_duration_seconds",
];
const VERIFY_TIMES: [&str; 2] = [
    "pgsnapfs_verify_last_timestamp_seconds",
    "pgsnapfs_verify_last_duration_seconds",
];
const BACKUP_RUN_TIMES: [&str; 2] = [
    "pgsnapfs_backup_last_run_timestamp_seconds",
    "pgsnapfs_backup_last_run_duration_seconds",
];

fn system(f: &mut Families, now: DateTime<Utc>, repo: &str, s: &SystemMetrics) {
    let sys = [
        ("repository", repo),
        ("system", s.system_identifier.as_str()),
    ];
    f.set("pgsnapfs_backups", &sys, Some(s.backups as f64));
    for (source, kind) in [("server", &s.server), ("archive", &s.archive)] {
        backups(f, now, &[sys[0], sys[1], ("source", source)], kind);
    }
    if let Some(seg) = &s.last_segment {
        let tli = seg.timeline.to_string();
        f.set(
            "pgsnapfs_wal_last_segment",
            &[sys[0], sys[1], ("timeline", &tli)],
            Some(seg.segno as f64),
        );
        f.set(
            "pgsnapfs_wal_last_archived_timestamp_seconds",
            &sys,
            seg.archived_at.map(seconds),
        );
        f.set(
            "pgsnapfs_wal_last_archived_age_seconds",
            &sys,
            seg.archived_at.map(|t| age(now, t)),
        );
    }
    f.set("pgsnapfs_wal_gaps", &sys, Some(s.wal_gaps as f64));
    f.set(
        "pgsnapfs_wal_missing_segments",
        &sys,
        Some(s.wal_missing_segments as f64),
    );
    f.set(
        "pgsnapfs_wal_dropped_files",
        &sys,
        Some(s.wal_dropped as f64),
    );
    f.set(
        "pgsnapfs_restorable_oldest_timestamp_seconds",
        &sys,
        s.restorable_from.map(seconds),
    );
    f.set(
        "pgsnapfs_restorable_newest_timestamp_seconds",
        &sys,
        s.restorable_to.map(seconds),
    );
    if let Some(v) = &s.verify {
        f.set("pgsnapfs_verify_last_success", &sys, Some(flag(v.ok)));
        run_times(f, VERIFY_TIMES, &sys, v);
        f.set(
            "pgsnapfs_verify_last_first_query_seconds",
            &sys,
            v.first_query_s,
        );
    }
}

fn backups(f: &mut Families, now: DateTime<Utc>, labels: &[(&'static str, &str)], k: &Kind) {
    if let Some(b) = &k.last {
        f.set(
            "pgsnapfs_backup_last_timestamp_seconds",
            labels,
            Some(seconds(b.stop_time)),
        );
        f.set(
            "pgsnapfs_backup_last_age_seconds",
            labels,
            Some(age(now, b.stop_time)),
        );
        f.set(
            "pgsnapfs_backup_last_size_bytes",
            labels,
            Some(b.size_logical as f64),
        );
        f.set(
            "pgsnapfs_backup_last_stored_new_bytes",
            labels,
            Some(b.size_stored_new as f64),
        );
    }
    if let Some(r) = &k.run {
        f.set("pgsnapfs_backup_last_run_success", labels, Some(flag(r.ok)));
        run_times(f, BACKUP_RUN_TIMES, labels, r);
    }
}

/// A label value as the format quotes it.
fn escape(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', r#"\""#)
        .replace('\n', r"\n")
}

fn write(families: &[Family]) -> String {
    let mut out = String::new();
    for fam in families.iter().filter(|f| !f.samples.is_empty()) {
        let _ = writeln!(out, "# HELP {} {}", fam.name, fam.help);
        let _ = writeln!(out, "# TYPE {} gauge", fam.name);
        for (labels, value) in &fam.samples {
            let labels: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            let _ = writeln!(out, "{}{{{}}} {value}", fam.name, labels.join(","));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::{LastBackup, LastSegment};
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 4, h, m, 0).unwrap()
    }

    fn run(ok: bool, from: DateTime<Utc>, to: DateTime<Utc>) -> Run {
        Run {
            started: from,
            finished: to,
            ..Run::ended(from, ok)
        }
    }

    fn sample() -> Metrics {
        let mut verify = run(false, at(3, 0), at(3, 2));
        verify.first_query_s = Some(12.5);
        let mut check = run(true, at(4, 0), at(4, 10));
        check.problems = Some(0);
        check.read_data = Some("subset".into());
        let mut gc = run(true, at(5, 0), at(5, 1));
        gc.packs_bytes = Some(1 << 30);
        gc.reclaimable_bytes = Some(4096);
        Metrics {
            repository: "s3://b/p\"x".into(),
            now: at(12, 0),
            systems: vec![SystemMetrics {
                system_identifier: "7391".into(),
                backups: 3,
                server: Kind {
                    last: Some(LastBackup {
                        id: "20261204T010000Z".into(),
                        stop_time: at(1, 30),
                        size_logical: 1000,
                        size_stored_new: 10,
                    }),
                    run: Some(run(true, at(1, 0), at(1, 30))),
                },
                archive: Kind::default(),
                last_segment: Some(LastSegment {
                    timeline: 2,
                    name: "000000020000000000000011".into(),
                    segno: 17,
                    archived_at: Some(at(11, 50)),
                }),
                wal_gaps: 1,
                wal_missing_segments: 2,
                wal_dropped: 0,
                verify: Some(verify),
                restorable_from: Some(at(1, 30)),
                restorable_to: Some(at(11, 49)),
            }],
            check: Some(check),
            gc: Some(gc),
            stored_since_gc: 100,
        }
    }

    #[test]
    fn families_have_help_and_type_once_and_their_samples_together() {
        let text = render(&sample());
        let mut seen = Vec::new();
        let mut current = "";
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap();
                assert!(!seen.contains(&name), "{name} twice");
                seen.push(name);
                current = name;
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                assert_eq!(rest, format!("{current} gauge"));
            } else {
                let name = line.split('{').next().unwrap();
                assert_eq!(name, current, "{line}");
                assert!(name.starts_with("pgsnapfs_"));
            }
        }
        // No archive-made backup, and no run of it: nothing is made up.
        assert!(!text.contains("source=\"archive\""), "{text}");
    }

    #[test]
    fn values_and_labels() {
        let text = render(&sample());
        let l = r#"repository="s3://b/p\"x",system="7391""#;
        for want in [
            format!("pgsnapfs_backups{{{l}}} 3"),
            format!(
                "pgsnapfs_backup_last_timestamp_seconds{{{l},source=\"server\"}} {}",
                at(1, 30).timestamp()
            ),
            format!("pgsnapfs_backup_last_age_seconds{{{l},source=\"server\"}} 37800"),
            format!("pgsnapfs_backup_last_size_bytes{{{l},source=\"server\"}} 1000"),
            format!("pgsnapfs_backup_last_run_duration_seconds{{{l},source=\"server\"}} 1800"),
            format!("pgsnapfs_backup_last_run_success{{{l},source=\"server\"}} 1"),
            format!("pgsnapfs_wal_last_segment{{{l},timeline=\"2\"}} 17"),
            format!("pgsnapfs_wal_last_archived_age_seconds{{{l}}} 600"),
            format!("pgsnapfs_wal_gaps{{{l}}} 1"),
            format!("pgsnapfs_wal_missing_segments{{{l}}} 2"),
            format!("pgsnapfs_verify_last_success{{{l}}} 0"),
            format!("pgsnapfs_verify_last_duration_seconds{{{l}}} 120"),
            format!("pgsnapfs_verify_last_first_query_seconds{{{l}}} 12.5"),
            format!(
                "pgsnapfs_restorable_newest_timestamp_seconds{{{l}}} {}",
                at(11, 49).timestamp()
            ),
            r#"pgsnapfs_check_last_read_data{repository="s3://b/p\"x"} 1"#.into(),
            r#"pgsnapfs_check_last_duration_seconds{repository="s3://b/p\"x"} 600"#.into(),
            r#"pgsnapfs_repository_packs_bytes{repository="s3://b/p\"x"} 1073741924"#.into(),
            r#"pgsnapfs_repository_reclaimable_bytes{repository="s3://b/p\"x"} 4096"#.into(),
        ] {
            assert!(text.lines().any(|line| line == want), "{want} in\n{text}");
        }
    }

    #[test]
    fn an_empty_repository_has_only_the_time() {
        let text = render(&Metrics {
            repository: "/r".into(),
            now: at(1, 0),
            ..Metrics::default()
        });
        assert_eq!(
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .collect::<Vec<_>>(),
            vec![format!(
                "pgsnapfs_metrics_generated_timestamp_seconds{{repository=\"/r\"}} {}",
                at(1, 0).timestamp()
            )]
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\\b\"c\nd"), r#"a\\b\"c\nd"#);
    }
}
