//! What `info` reports about a repository: its backups, and per cluster the timelines with
//! their WAL and the range a point-in-time recovery can reach. Gathered here; `cli::info`
//! only prints it.

use crate::archive::{self, TimelineWal};
use crate::archiver;
use crate::catalog::{Backups, Snapshot};
use crate::error::Result;
use crate::pitr;
use crate::receive;
use crate::spool::DropMarker;
use crate::store::Repository;
use crate::timelines::{self, Survey};
use chrono::{DateTime, Utc};
use serde::Serialize;

/// The archived WAL of one timeline of one cluster.
#[derive(Serialize)]
pub struct WalRow {
    /// The cluster.
    pub system_identifier: String,
    /// The timeline's WAL: first and last segment, gaps.
    #[serde(flatten)]
    pub timeline: TimelineWal,
}

/// The times a point-in-time recovery of one cluster can reach.
#[derive(Serialize)]
pub struct Restorable {
    /// The cluster.
    pub system_identifier: String,
    /// The end of its oldest backup.
    pub earliest_time: Option<DateTime<Utc>>,
    /// The last archived commit of its newest timeline.
    pub latest_time: Option<DateTime<Utc>>,
}

/// Everything `info` shows.
pub struct Info {
    /// Every backup, oldest first.
    pub backups: Vec<Snapshot>,
    /// Per cluster and timeline.
    pub wal: Vec<WalRow>,
    /// Per cluster.
    pub ranges: Vec<Restorable>,
    /// Per cluster (by system identifier): its timelines as the repository holds them.
    pub surveys: Vec<(String, Survey)>,
    /// WAL files asynchronous archiving dropped (`--queue-max`): gaps recovery cannot pass.
    pub dropped: Vec<DropMarker>,
    /// Segments `wal-receive` holds in pieces beyond the archive: recovery reaches their end.
    pub streamed: Vec<StreamedRow>,
}

/// A segment held only as pieces `wal-receive` streamed.
#[derive(Serialize)]
pub struct StreamedRow {
    /// The cluster.
    pub system_identifier: String,
    /// The segment, and up to where it holds WAL.
    #[serde(flatten)]
    pub segment: receive::Streamed,
}

impl Info {
    /// Reads it all; a backup record that cannot be read fails, naming it.
    pub fn gather(repo: &Repository) -> Result<Info> {
        let backups = repo.snapshots_all_or_error()?;
        let mut info = Info {
            backups,
            wal: Vec::new(),
            ranges: Vec::new(),
            surveys: Vec::new(),
            dropped: Vec::new(),
            streamed: Vec::new(),
        };
        for system in archive::systems(repo)? {
            let all: Vec<&Snapshot> = info.backups.iter().collect();
            let survey = timelines::survey(repo, &system, &all)?;
            let sys = system.system_identifier.to_string();
            let archived = |tli: u32, segno: u64| {
                survey
                    .timelines
                    .iter()
                    .any(|t| t.timeline == tli && t.wal.segnos.binary_search(&segno).is_ok())
            };
            let seg_size = archive::segment_size(&system);
            for segment in receive::streamed(repo, system.sysid(), seg_size, archived)? {
                info.streamed.push(StreamedRow {
                    system_identifier: sys.clone(),
                    segment,
                });
            }
            for t in &survey.timelines {
                info.wal.push(WalRow {
                    system_identifier: sys.clone(),
                    timeline: t.wal.clone(),
                });
            }
            let (earliest_time, latest_time) =
                pitr::restorable_range(repo, &system, &info.backups)?;
            info.ranges.push(Restorable {
                system_identifier: sys.clone(),
                earliest_time,
                latest_time,
            });
            info.surveys.push((sys, survey));
            info.dropped
                .extend(archiver::dropped(repo, system.sysid())?);
        }
        Ok(info)
    }

    /// The range of the cluster of the newest backup, the one most readers ask about.
    pub fn main_range(&self) -> Option<&Restorable> {
        let newest = self.backups.last().map(|s| s.system_identifier.to_string());
        self.ranges
            .iter()
            .find(|r| Some(&r.system_identifier) == newest.as_ref())
            .or(self.ranges.first())
    }
}
