//! `pgsnapfs metrics`: the state of a repository as Prometheus metrics, for node_exporter's
//! textfile collector or a scrape of `--listen`. Everything comes from what `info` reads (the
//! manifests, the WAL index and the tail of the WAL listing) and the status objects
//! (`status`): no listing of packs, no walk of trees. Gathered here, formatted by
//! `exposition`, served by `http`.

pub mod exposition;
pub mod http;

use crate::archive;
use crate::catalog::{Snapshot, Source};
use crate::error::Result;
use crate::info::Info;
use crate::status::{self, Run, Watched};
use crate::store::{Repository, StoreError};
use chrono::{DateTime, Utc};

/// What the metrics say about one repository, at one moment.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Where the repository is (the `repository` label).
    pub repository: String,
    /// When this was gathered: ages are counted to it.
    pub now: DateTime<Utc>,
    /// Per cluster.
    pub systems: Vec<SystemMetrics>,
    /// The last `check`.
    pub check: Option<Run>,
    /// The last `gc`.
    pub gc: Option<Run>,
    /// The bytes backups that ended after that gc added to the repository.
    pub stored_since_gc: u64,
}

/// The newest backup of one kind.
#[derive(Debug, Clone, PartialEq)]
pub struct LastBackup {
    /// Its id.
    pub id: String,
    /// When it ended.
    pub stop_time: DateTime<Utc>,
    /// The size of the data directory it holds.
    pub size_logical: u64,
    /// The bytes it added to the repository.
    pub size_stored_new: u64,
}

/// The newest archived segment of a cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct LastSegment {
    /// Its timeline (the newest that holds WAL).
    pub timeline: u32,
    /// Its file name.
    pub name: String,
    /// Its number on the timeline.
    pub segno: u64,
    /// When `wal-push` stored it, if its summary says.
    pub archived_at: Option<DateTime<Utc>>,
}

/// The metrics of one cluster.
#[derive(Debug, Clone, Default)]
pub struct SystemMetrics {
    /// Its system identifier (the `system` label).
    pub system_identifier: String,
    /// Its backups.
    pub backups: usize,
    /// Its newest backup from a running server, and the last run of `backup`.
    pub server: Kind,
    /// Its newest backup made from the archive, and the last run of `backup --from-archive`.
    pub archive: Kind,
    /// The last segment archived.
    pub last_segment: Option<LastSegment>,
    /// Runs of missing segments between the first and last archived one, over its timelines.
    pub wal_gaps: usize,
    /// The segments those runs miss.
    pub wal_missing_segments: u64,
    /// WAL files asynchronous archiving dropped (`--queue-max`).
    pub wal_dropped: usize,
    /// The last `verify`.
    pub verify: Option<Run>,
    /// The oldest point a recovery can reach: the end of its oldest backup.
    pub restorable_from: Option<DateTime<Utc>>,
    /// The newest: the last archived commit of its newest timeline.
    pub restorable_to: Option<DateTime<Utc>>,
}

/// Backups of one source.
#[derive(Debug, Clone, Default)]
pub struct Kind {
    /// The newest.
    pub last: Option<LastBackup>,
    /// The last run of the command that makes them.
    pub run: Option<Run>,
}

impl Metrics {
    /// Reads the repository's state (what `info` reads, plus the status objects).
    pub fn gather(repo: &Repository) -> Result<Metrics> {
        let info = Info::gather(repo)?;
        let mut systems = Vec::new();
        for range in &info.ranges {
            let sys = &range.system_identifier;
            let Ok(sysid) = sys.parse::<u64>() else {
                continue;
            };
            let mine: Vec<&Snapshot> = info
                .backups
                .iter()
                .filter(|b| b.system_identifier.to_string() == *sys)
                .collect();
            let newest = |source: Source| {
                mine.iter()
                    .filter(|b| b.source == source)
                    .max_by_key(|b| b.stop_time)
                    .map(|b| LastBackup {
                        id: b.id.clone(),
                        stop_time: b.stop_time,
                        size_logical: b.size_logical,
                        size_stored_new: b.size_stored_new,
                    })
            };
            let wal: Vec<&archive::TimelineWal> = info
                .wal
                .iter()
                .filter(|w| w.system_identifier == *sys)
                .map(|w| &w.timeline)
                .collect();
            let last_segment = match wal
                .iter()
                .filter(|t| !t.segnos.is_empty())
                .max_by_key(|t| t.timeline)
            {
                Some(t) => {
                    let name = t.last.clone().unwrap_or_default();
                    Some(LastSegment {
                        timeline: t.timeline,
                        segno: t.segnos.last().copied().unwrap_or_default(),
                        archived_at: archive::archived_at(repo, sysid, t.timeline, &name)
                            .unwrap_or_else(|e| {
                                tracing::warn!("{e}: the age of the last segment is not shown");
                                None
                            }),
                        name,
                    })
                }
                None => None,
            };
            systems.push(SystemMetrics {
                system_identifier: sys.clone(),
                backups: mine.len(),
                server: Kind {
                    last: newest(Source::Server),
                    run: status_of(repo, Watched::Backup(Source::Server), sysid),
                },
                archive: Kind {
                    last: newest(Source::Archive),
                    run: status_of(repo, Watched::Backup(Source::Archive), sysid),
                },
                last_segment,
                wal_gaps: wal.iter().map(|t| t.gaps.len()).sum(),
                wal_missing_segments: wal.iter().map(|t| missing(&t.segnos)).sum(),
                wal_dropped: info
                    .dropped
                    .iter()
                    .filter(|d| d.system_identifier == sysid)
                    .count(),
                verify: status_of(repo, Watched::Verify, sysid),
                restorable_from: range.earliest_time,
                restorable_to: range.latest_time,
            });
        }
        let gc = status_of(repo, Watched::Gc, 0);
        let stored_since_gc = gc.as_ref().map_or(0, |g| {
            info.backups
                .iter()
                .filter(|b| b.stop_time > g.finished)
                .map(|b| b.size_stored_new)
                .sum()
        });
        Ok(Metrics {
            repository: repo.backend().location(),
            now: Utc::now(),
            systems,
            check: status_of(repo, Watched::Check, 0),
            gc,
            stored_since_gc,
        })
    }
}

/// The segments missing between the first and the last of `segnos` (ascending).
fn missing(segnos: &[u64]) -> u64 {
    match (segnos.first(), segnos.last()) {
        (Some(first), Some(last)) => (last - first + 1).saturating_sub(segnos.len() as u64),
        _ => 0,
    }
}

/// A status object, or `None` with a warning when it cannot be read: a damaged status must
/// not hide the other metrics.
fn status_of(repo: &Repository, what: Watched, sysid: u64) -> Option<Run> {
    status::load(repo, what, sysid).unwrap_or_else(|e: StoreError| {
        tracing::warn!("{e}: its metrics are not shown");
        None
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn missing_segments_between_first_and_last() {
        assert_eq!(super::missing(&[]), 0);
        assert_eq!(super::missing(&[3]), 0);
        assert_eq!(super::missing(&[3, 4, 5]), 0);
        assert_eq!(super::missing(&[3, 5, 9]), 4);
    }
}
