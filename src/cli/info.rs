//! `pgsnapfs list` and `pgsnapfs info`

use super::{human, print_json};
use crate::archive::{self, TimelineWal};
use crate::error::Result;
use crate::pitr;
use crate::store::backend::RequestCounts;
use crate::store::snapshot::{ReadRecord, Snapshot};
use crate::store::Repository;
use chrono::{DateTime, Utc};
use serde::Serialize;

#[derive(clap::Args)]
pub struct ListArgs {
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct InfoArgs {
    #[arg(long)]
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
}

impl From<&Snapshot> for BackupRow {
    fn from(s: &Snapshot) -> BackupRow {
        BackupRow {
            id: s.id.clone(),
            system_identifier: s.system_identifier.clone(),
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
            requests: s.requests,
            read: s.read.clone(),
        }
    }
}

/// Readable backups, oldest first; unreadable ones are reported on stderr.
fn backups(repo: &Repository) -> Result<Vec<Snapshot>> {
    Ok(repo
        .snapshots()?
        .into_iter()
        .filter_map(|s| s.map_err(|e| eprintln!("pgsnapfs: warning: {e}")).ok())
        .collect())
}

fn print_backups(list: &[Snapshot]) {
    if list.is_empty() {
        outln!("no backups");
        return;
    }
    outln!(
        "{:<20} {:<20} {:>4} {:>14} {:>10} {:>10}",
        "backup",
        "finished (UTC)",
        "tli",
        "stop LSN",
        "size",
        "new"
    );
    for s in list {
        outln!(
            "{:<20} {:<20} {:>4} {:>14} {:>10} {:>10}",
            s.id,
            s.stop_time.format("%Y-%m-%d %H:%M:%S"),
            s.timeline,
            s.stop_lsn.to_string(),
            human(s.size_logical),
            human(s.size_stored_new)
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

#[derive(Serialize)]
struct WalRow {
    system_identifier: String,
    #[serde(flatten)]
    timeline: TimelineWal,
}

#[derive(Serialize)]
struct Restorable {
    system_identifier: String,
    earliest_time: Option<DateTime<Utc>>,
    latest_time: Option<DateTime<Utc>>,
}

pub fn info(repo: &Repository, a: InfoArgs) -> Result<()> {
    let list = backups(repo)?;
    let mut wal = Vec::new();
    let mut ranges = Vec::new();
    for system in archive::systems(repo)? {
        for t in archive::catalog(repo, &system)? {
            wal.push(WalRow {
                system_identifier: system.system_identifier.clone(),
                timeline: t,
            });
        }
        let (earliest_time, latest_time) = pitr::restorable_range(repo, &system, &list)?;
        ranges.push(Restorable {
            system_identifier: system.system_identifier.clone(),
            earliest_time,
            latest_time,
        });
    }
    // The cluster of the newest backup is the one most readers ask about.
    let newest_sys = list.last().map(|s| s.system_identifier.clone());
    let main_range = ranges
        .iter()
        .find(|r| Some(&r.system_identifier) == newest_sys.as_ref())
        .or(ranges.first());
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
            wal: &wal,
            restorable: main_range,
            restorable_by_system: &ranges,
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
    print_backups(&list);
    outln!();
    for w in &wal {
        let t = &w.timeline;
        outln!(
            "WAL of system {} timeline {}: {} segments, {} – {}",
            w.system_identifier,
            t.timeline,
            t.segments,
            t.first.as_deref().unwrap_or("-"),
            t.last.as_deref().unwrap_or("-")
        );
        for g in &t.gaps {
            outln!("  GAP: {} – {} missing", g.from, g.to);
        }
    }
    for r in &ranges {
        let fmt =
            |t: Option<DateTime<Utc>>| t.map(|t| t.to_rfc3339()).unwrap_or_else(|| "-".into());
        outln!(
            "system {}: restorable from {} to {} (last archived commit)",
            r.system_identifier,
            fmt(r.earliest_time),
            fmt(r.latest_time)
        );
    }
    Ok(())
}
