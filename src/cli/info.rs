//! `pgsnapfs list` and `pgsnapfs info`

use super::{human, print_json};
use crate::catalog::{ArchiveSource, Backups, ImportSource, ReadRecord, Snapshot};
use crate::error::Result;
use crate::info::{Info, Restorable, WalRow};
use crate::store::backend::RequestCounts;
use crate::store::Repository;
use crate::timelines::{fmt_time, BothActive, Survey, TimelineInfo};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::fmt::Write as _;

#[derive(clap::Args)]
pub struct ListArgs {
    #[arg(long, help = super::JSON_HELP)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct InfoArgs {
    #[arg(long, help = super::JSON_HELP)]
    pub json: bool,
}

/// One backup as `list --json` and `backup --json` print it.
#[derive(Serialize)]
pub struct BackupRow {
    pub id: String,
    pub system_identifier: String,
    pub pg_major: u32,
    pub pg_version: String,
    pub timeline: u32,
    pub start_lsn: String,
    pub stop_lsn: String,
    pub start_time: DateTime<Utc>,
    pub stop_time: DateTime<Utc>,
    pub size_logical: u64,
    pub size_stored_new: u64,
    pub files: u64,
    pub label: String,
    pub parent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests: Option<RequestCounts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read: Option<ReadRecord>,
    /// `server` or `archive` (made by `backup --from-archive`).
    pub source: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_archive: Option<ArchiveSource>,
    /// For a backup imported from pgBackRest: which backup it was there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imported: Option<ImportSource>,
}

impl From<&Snapshot> for BackupRow {
    fn from(s: &Snapshot) -> BackupRow {
        BackupRow {
            id: s.id.clone(),
            system_identifier: s.system_identifier.to_string(),
            pg_major: s.pg_major,
            pg_version: s.pg_version.clone(),
            timeline: s.timeline,
            start_lsn: s.start_lsn.to_string(),
            stop_lsn: s.stop_lsn.to_string(),
            start_time: s.start_time,
            stop_time: s.stop_time,
            size_logical: s.size_logical,
            size_stored_new: s.size_stored_new,
            files: s.files,
            label: s.label.clone(),
            parent: s.parent.clone(),
            requests: s.requests.map(Into::into),
            read: s.read.clone(),
            source: s.source.name(),
            from_archive: s.from_archive.clone(),
            imported: s.imported.clone(),
        }
    }
}

/// Every backup, oldest first; one that cannot be read fails the command.
fn backups(repo: &Repository) -> Result<Vec<Snapshot>> {
    Ok(repo.snapshots_all_or_error()?)
}

fn print_backups(list: &[Snapshot]) {
    if list.is_empty() {
        outln!("no backups");
        return;
    }
    outln!(
        "{:<20} {:<20} {:>4} {:>14} {:>10} {:>10}  {}",
        "backup",
        "finished (UTC)",
        "tli",
        "stop LSN",
        "size",
        "new",
        "source"
    );
    for s in list {
        let source = match (&s.from_archive, &s.imported) {
            (Some(f), _) => format!("archive: {} + WAL {} – {}", f.base, f.wal_start, s.stop_lsn),
            (None, Some(i)) => format!("pgbackrest: {} {}", i.stanza, i.label),
            (None, None) => s.source.name().to_string(),
        };
        outln!(
            "{:<20} {:<20} {:>4} {:>14} {:>10} {:>10}  {}",
            s.id,
            s.stop_time.format("%Y-%m-%d %H:%M:%S"),
            s.timeline,
            s.stop_lsn.to_string(),
            human(s.size_logical),
            human(s.size_stored_new),
            source
        );
    }
}

pub fn list(repo: &Repository, a: ListArgs) -> Result<()> {
    let list = backups(repo)?;
    if a.json {
        #[derive(Serialize)]
        struct Out {
            backups: Vec<BackupRow>,
        }
        print_json(&Out {
            backups: list.iter().map(BackupRow::from).collect(),
        });
    } else {
        print_backups(&list);
    }
    Ok(())
}

pub fn info(repo: &Repository, a: InfoArgs) -> Result<()> {
    let gathered = Info::gather(repo)?;
    let Info {
        backups: list,
        wal,
        ranges,
        surveys,
        dropped,
        streamed,
    } = &gathered;
    let main_range = gathered.main_range();
    if a.json {
        #[derive(Serialize)]
        struct Repo<'a> {
            location: String,
            version: u32,
            chunk_size: u32,
            compression_level: i32,
            id: &'a str,
        }
        #[derive(Serialize)]
        struct Out<'a> {
            repository: Repo<'a>,
            backups: Vec<BackupRow>,
            wal: &'a [WalRow],
            restorable: Option<&'a Restorable>,
            restorable_by_system: &'a [Restorable],
            /// Every timeline of every cluster: parent, fork, WAL, restorable range.
            timelines: Vec<&'a TimelineInfo>,
            /// Pairs of timelines both written after the newer one began.
            both_active: Vec<BothActiveRow<'a>>,
            /// WAL files asynchronous archiving dropped (--queue-max): gaps.
            dropped_wal: &'a [crate::spool::DropMarker],
            /// Segments wal-receive holds in pieces beyond the archive, and up to where.
            streamed_wal: &'a [crate::info::StreamedRow],
            /// What this `info` cost, on S3.
            #[serde(skip_serializing_if = "Option::is_none")]
            requests: Option<RequestCounts>,
        }
        print_json(&Out {
            repository: Repo {
                location: repo.backend().location(),
                version: repo.config.version,
                chunk_size: repo.config.chunk_size,
                compression_level: repo.config.compression_level,
                id: &repo.config.id,
            },
            backups: list.iter().map(BackupRow::from).collect(),
            wal,
            restorable: main_range,
            restorable_by_system: ranges,
            timelines: surveys.iter().flat_map(|(_, s)| &s.timelines).collect(),
            both_active: surveys
                .iter()
                .flat_map(|(sys, s)| {
                    s.both_active.iter().map(move |b| BothActiveRow {
                        system_identifier: sys,
                        pair: b,
                        detail: b.describe(),
                    })
                })
                .collect(),
            dropped_wal: dropped,
            streamed_wal: streamed,
            requests: repo.backend().stats(),
        });
        return Ok(());
    }
    outln!(
        "repository {} (format {}, {} KiB chunks, zstd {})\n",
        repo.backend().location(),
        repo.config.version,
        repo.config.chunk_size / 1024,
        repo.config.compression_level
    );
    print_backups(list);
    outln!();
    for (sys, survey) in surveys {
        out!("{}", render_timelines(sys, survey));
    }
    for d in dropped {
        outln!(
            "DROPPED WAL {} of system {}: dropped by wal-push --async --queue-max at {}; \
             recovery cannot pass it",
            d.name,
            d.system_identifier,
            d.dropped_at.to_rfc3339()
        );
    }
    for s in streamed {
        outln!(
            "system {}: streamed WAL beyond the archive up to {} on timeline {} ({}, {} pieces)",
            s.system_identifier,
            s.segment.through,
            s.segment.timeline,
            s.segment.segment,
            s.segment.pieces
        );
    }
    for r in ranges {
        let fmt =
            |t: Option<DateTime<Utc>>| t.map(|t| t.to_rfc3339()).unwrap_or_else(|| "-".into());
        outln!(
            "system {}: restorable from {} to {} (last archived commit of the newest timeline)",
            r.system_identifier,
            fmt(r.earliest_time),
            fmt(r.latest_time)
        );
    }
    Ok(())
}

#[derive(Serialize)]
struct BothActiveRow<'a> {
    system_identifier: &'a str,
    #[serde(flatten)]
    pair: &'a BothActive,
    detail: String,
}

/// The timeline tree of one cluster for people: each timeline under its parent, with its fork
/// point, WAL, gaps and restorable range, then warnings.
fn render_timelines(system: &str, s: &Survey) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "timelines of system {system}{}:",
        if s.both_active.is_empty() {
            ""
        } else {
            " (WARNING below)"
        }
    );
    let by_tli: std::collections::BTreeMap<u32, &TimelineInfo> =
        s.timelines.iter().map(|t| (t.timeline, t)).collect();
    // Roots first (timeline 1, and timelines whose parent is unknown or holds nothing here),
    // each followed by its descendants, depth first.
    let mut stack: Vec<(u32, usize)> = by_tli
        .values()
        .filter(|t| t.parent.is_none_or(|p| !by_tli.contains_key(&p)))
        .map(|t| (t.timeline, 0))
        .rev()
        .collect();
    while let Some((tli, depth)) = stack.pop() {
        let t = by_tli[&tli];
        render_timeline(&mut out, t, depth, by_tli.len() > 1);
        for c in t.children.iter().rev() {
            if by_tli.contains_key(c) {
                stack.push((*c, depth + 1));
            }
        }
    }
    for b in &s.both_active {
        let _ = writeln!(out, "WARNING: {}", b.describe());
    }
    out
}

/// `several`: the cluster has more than one timeline, so say how to choose this one.
fn render_timeline(out: &mut String, t: &TimelineInfo, depth: usize, several: bool) {
    let pad = "  ".repeat(depth + 1);
    let origin = match (t.parent, &t.fork_lsn) {
        (Some(p), Some(l)) => format!(", forked from timeline {p} at {l}"),
        _ if t.history_missing => ", HISTORY FILE MISSING: parent unknown".into(),
        _ => String::new(),
    };
    let _ = writeln!(out, "{pad}timeline {}{origin}", t.timeline);
    let w = &t.wal;
    match (&w.first, &w.last) {
        (Some(first), Some(last)) => {
            let _ = writeln!(
                out,
                "{pad}  WAL         {first} – {last} ({} segments)",
                w.segments
            );
        }
        _ => {
            let _ = writeln!(out, "{pad}  WAL         none archived yet");
        }
    }
    for g in &w.gaps {
        let _ = writeln!(out, "{pad}  GAP         {} – {} missing", g.from, g.to);
    }
    let r = &t.restorable;
    match (r.earliest_time, r.latest_time) {
        (Some(from), Some(to)) => {
            let choose = match several {
                true => format!(" (--target-timeline {})", t.timeline),
                false => String::new(),
            };
            let _ = writeln!(
                out,
                "{pad}  restorable  {} – {}{choose}",
                fmt_time(from),
                fmt_time(to)
            );
            let _ = writeln!(out, "{pad}  backups     {}", r.backups.join(", "));
        }
        _ => {
            let _ = writeln!(out, "{pad}  restorable  no backup reaches this timeline");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::{Gap, TimelineWal};
    use crate::timelines::Reach;
    use chrono::TimeZone;

    fn info(tli: u32, parent: Option<(u32, &str)>, children: Vec<u32>) -> TimelineInfo {
        TimelineInfo {
            system_identifier: "7".into(),
            timeline: tli,
            parent: parent.map(|p| p.0),
            fork_lsn: parent.map(|p| p.1.to_string()),
            history_missing: false,
            children,
            wal: TimelineWal {
                timeline: tli,
                segnos: vec![],
                segments: 3,
                first: Some(format!("{tli:08X}0000000000000003")),
                last: Some(format!("{tli:08X}0000000000000006")),
                gaps: vec![],
                history: parent.is_some(),
                indexed: None,
            },
            restorable: Reach {
                earliest_time: Some(Utc.with_ymd_and_hms(2026, 12, 4, 6, 0, 0).unwrap()),
                latest_time: Some(Utc.with_ymd_and_hms(2026, 12, 4, 6, 30, tli).unwrap()),
                backups: vec!["B1".into()],
            },
        }
    }

    #[test]
    fn tree_is_rendered_under_parents_with_warnings() {
        let mut one = info(1, None, vec![2, 4]);
        one.wal.gaps.push(Gap {
            from: "000000010000000000000004".into(),
            to: "000000010000000000000004".into(),
        });
        let mut orphan = info(5, None, vec![]);
        orphan.history_missing = true;
        orphan.restorable = Reach::default();
        let survey = Survey {
            timelines: vec![
                one,
                info(2, Some((1, "0/5000100")), vec![3]),
                info(3, Some((2, "0/8000000")), vec![]),
                info(4, Some((1, "0/6000000")), vec![]),
                orphan,
            ],
            both_active: vec![BothActive {
                timelines: [1, 4],
                newer_parent: Some(1),
                newer_fork_lsn: Some("0/6000000".into()),
                older_last_commit: Utc.with_ymd_and_hms(2026, 12, 4, 6, 40, 0).unwrap(),
                newer_first_commit: Utc.with_ymd_and_hms(2026, 12, 4, 6, 35, 0).unwrap(),
            }],
            tree: Default::default(),
        };
        let text = render_timelines("7", &survey);
        let heads: Vec<&str> = text
            .lines()
            .filter(|l| l.trim_start().starts_with("timeline "))
            .collect();
        assert_eq!(
            heads,
            vec![
                "  timeline 1",
                "    timeline 2, forked from timeline 1 at 0/5000100",
                "      timeline 3, forked from timeline 2 at 0/8000000",
                "    timeline 4, forked from timeline 1 at 0/6000000",
                "  timeline 5, HISTORY FILE MISSING: parent unknown",
            ],
            "{text}"
        );
        assert!(
            text.starts_with("timelines of system 7 (WARNING below):\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "    GAP         000000010000000000000004 – 000000010000000000000004 missing\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "        restorable  2026-12-04 06:00:00 UTC – 2026-12-04 06:30:03 UTC \
                 (--target-timeline 3)\n"
            ),
            "{text}"
        );
        assert!(text.contains("no backup reaches this timeline"), "{text}");
        // One timeline: nothing to choose.
        let single = Survey {
            timelines: vec![info(1, None, vec![])],
            both_active: vec![],
            tree: Default::default(),
        };
        assert_eq!(
            render_timelines("7", &single),
            "timelines of system 7:\n  timeline 1\n    WAL         \
             000000010000000000000003 – 000000010000000000000006 (3 segments)\n    \
             restorable  2026-12-04 06:00:00 UTC – 2026-12-04 06:30:01 UTC\n    backups     \
             B1\n"
        );
        assert!(
            text.contains(
                "WARNING: timelines 1 and 4 are both active: timeline 4 (it forked from \
                 timeline 1 at 0/6000000) committed at 2026-12-04 06:35:00.000 UTC, and timeline \
                 1 still committed at 2026-12-04 06:40:00.000 UTC"
            ),
            "{text}"
        );
    }
}
