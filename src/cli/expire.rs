//! `pgsnapfs expire` and `pgsnapfs backup-keep`

use super::print_json;
use crate::error::{Error, Result};
use crate::expire::{self, TimelineCut};
use crate::lock::Lease;
use crate::retention::{parse_duration, Policy};
use crate::store::Repository;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// Keep the newest N backups.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep_last: Option<u32>,
    /// Keep the newest backup of each of the last N days that have one (UTC, by end time).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep_daily: Option<u32>,
    /// Keep the newest backup of each of the last N ISO weeks that have one.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep_weekly: Option<u32>,
    /// Keep the newest backup of each of the last N months that have one.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep_monthly: Option<u32>,
    /// Keep the newest backup of each of the last N years that have one.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep_yearly: Option<u32>,
    /// Keep every backup that ended within DURATION (e.g. 7d, 36h) of the cluster's newest.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub keep_within: Option<Duration>,
    /// Keep point-in-time recovery to any moment of the last DURATION: the backup before
    /// that window, and the WAL from it on.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub keep_pitr: Option<Duration>,
    /// Keep the newest N backups made from the archive (`backup --from-archive`); the other
    /// --keep-* rules then apply to server backups only.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep_archive_last: Option<u32>,
    /// Show what would be removed and why each backup is kept; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long, help = super::JSON_HELP)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct KeepArgs {
    /// The backup id.
    pub backup: String,
    /// Remove the mark instead, so policies apply to the backup again.
    #[arg(long)]
    pub off: bool,
}

pub fn run(repo: &Repository, a: Args) -> Result<()> {
    let policy = Policy {
        last: a.keep_last.unwrap_or(0),
        daily: a.keep_daily.unwrap_or(0),
        weekly: a.keep_weekly.unwrap_or(0),
        monthly: a.keep_monthly.unwrap_or(0),
        yearly: a.keep_yearly.unwrap_or(0),
        within: a.keep_within,
        pitr: a.keep_pitr,
        archive_last: a.keep_archive_last,
    };
    if policy.is_empty() {
        return Err(Error::BadInput(
            "no retention policy given: use --keep-last, --keep-daily, --keep-weekly, \
             --keep-monthly, --keep-yearly, --keep-within, --keep-pitr or --keep-archive-last"
                .into(),
        ));
    }
    // A dry run writes nothing, not even a lease.
    let lease = match a.dry_run {
        true => None,
        false => Some(Lease::exclusive(repo, "expire")?),
    };
    let report = expire::run(repo, &policy, a.dry_run, lease.as_ref())?;
    if a.json {
        print_json(&report);
        return Ok(());
    }
    let verb = if a.dry_run { "would remove" } else { "removed" };
    for v in &report.backups {
        let why: Vec<String> = v.reasons.iter().map(ToString::to_string).collect();
        outln!(
            "{:<12} {:<20} ended {}  system {}{}",
            if v.keep { "keep" } else { verb },
            v.id,
            v.stop_time
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            v.system_identifier,
            if why.is_empty() {
                String::new()
            } else {
                format!("  ({})", why.join(", "))
            }
        );
    }
    for id in &report.unreadable {
        outln!(
            "{:<12} {id:<20} unreadable: left alone, and no WAL was removed",
            "keep"
        );
    }
    for w in &report.wal {
        outln!(
            "WAL of system {}: {verb} {} files",
            w.system_identifier,
            w.files_removed
        );
        if w.drop_markers_removed + w.stream_pieces_removed > 0 {
            outln!(
                "  markers of dropped WAL: {verb} {}; pieces of streamed segments: {verb} {}",
                w.drop_markers_removed,
                w.stream_pieces_removed
            );
        }
        for t in &w.timelines {
            out!("{}", render_timeline_cut(t, verb));
        }
    }
    if report.verification_records_removed > 0 {
        outln!(
            "verify records of removed backups: {verb} {}",
            report.verification_records_removed
        );
    }
    if !a.dry_run && report.backups.iter().any(|v| !v.keep) {
        outln!("run `pgsnapfs gc` to free the space of the removed backups");
    }
    Ok(())
}

/// One timeline's WAL decision for people: what is kept for which backups, what goes and why.
fn render_timeline_cut(t: &TimelineCut, verb: &str) -> String {
    let mut out = format!("  timeline {}: ", t.timeline);
    if let Some(from) = &t.keep_from {
        let mut why: Vec<String> = t.held.iter().map(ToString::to_string).collect();
        if !t.keep_for.is_empty() {
            why.insert(0, format!("reached by {}", t.keep_for.join(", ")));
        }
        let why = why.join("; ");
        out.push_str(&format!("keep {from} on ({why}); "));
    }
    out.push_str(&format!("{verb} {} files", t.files_removed));
    if t.files_removed > 0 || t.keep_from.is_none() {
        out.push_str(&format!(" ({})", t.why));
    }
    out.push('\n');
    out
}

pub fn keep(repo: &Repository, a: KeepArgs) -> Result<()> {
    // Exclusive, so a concurrent expire cannot miss the mark.
    let _lease = Lease::exclusive(repo, "backup-keep")?;
    expire::mark(repo, &a.backup, !a.off)?;
    if a.off {
        outln!(
            "backup {} is no longer marked; policies apply to it again",
            a.backup
        );
    } else {
        outln!(
            "backup {} is marked: expire keeps it until `pgsnapfs backup-keep --off {}`",
            a.backup,
            a.backup
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeline_cuts_for_people() {
        let kept = TimelineCut {
            timeline: 1,
            keep_from: Some("000000010000000000000005".into()),
            keep_for: vec!["B1".into(), "B2".into()],
            held: vec![],
            files_removed: 4,
            why: "before every kept backup that reaches it".into(),
        };
        assert_eq!(
            render_timeline_cut(&kept, "would remove"),
            "  timeline 1: keep 000000010000000000000005 on (reached by B1, B2); would remove 4 \
             files (before every kept backup that reaches it)\n"
        );
        let gone = TimelineCut {
            timeline: 3,
            keep_from: None,
            keep_for: vec![],
            held: vec![],
            files_removed: 2,
            why: "no kept backup reaches timeline 3".into(),
        };
        assert_eq!(
            render_timeline_cut(&gone, "removed"),
            "  timeline 3: removed 2 files (no kept backup reaches timeline 3)\n"
        );
    }
}
