//! Point-in-time planning: which backup to start from, and whether the archived WAL can
//! reach the target, decided before anything is written.
//!
//! PostgreSQL can only stop at a time target when it meets a transaction record after that
//! time, so the latest reachable time is the last archived commit, not the last segment.

use crate::archive::{self, segment_size, System, TimelineWal};
use crate::error::{Error, Result};
use crate::pg::target::Target;
use crate::pg::wal::{segment_of, segment_start, WalFile};
use crate::pg::walscan::{pg_time_to_unix_micros, SegmentSummary};
use crate::store::snapshot::Snapshot;
use crate::store::Repository;
use chrono::{DateTime, Utc};

/// What a restore or mount should recover to.
#[derive(Debug, Clone)]
pub enum Goal {
    /// A backup as it was when it ended (`recovery_target = 'immediate'`).
    Backup(String),
    /// The newest backup, then every archived WAL record.
    Latest,
    Target(Target),
}

/// The chosen backup, and what recovery will do from it.
#[derive(Debug, Clone)]
pub struct Plan {
    pub snapshot: Snapshot,
    pub system: System,
    /// None: replay all archived WAL.
    pub target: Option<Target>,
    /// WAL bytes to replay, as far as the catalog tells (to the target, or to the end).
    pub replay_bytes: u64,
}

fn utc_of_pg(t: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(pg_time_to_unix_micros(t)).unwrap_or_default()
}

/// Archived segments of a cluster in replay order, with their summaries.
struct Walk<'a> {
    repo: &'a Repository,
    sysid: u64,
    seg_size: u64,
    timelines: Vec<TimelineWal>,
}

impl Walk<'_> {
    /// Segments on or after `from` (any timeline at or above `tli`), in order.
    fn segments_from(&self, tli: u32, from: u64) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.timelines
            .iter()
            .filter(move |t| t.timeline >= tli)
            .flat_map(move |t| {
                t.segnos
                    .iter()
                    .filter(move |s| **s >= from)
                    .map(move |s| (t.timeline, *s))
            })
    }

    fn summary(&self, tli: u32, segno: u64) -> Result<Option<SegmentSummary>> {
        archive::summary(self.repo, self.sysid, tli, segno, self.seg_size)
    }

    /// The first segment number missing between `from` and `to` on timeline `tli`.
    fn first_gap(&self, tli: u32, from: u64, to: u64) -> Option<u64> {
        let have: std::collections::HashSet<u64> = self
            .timelines
            .iter()
            .filter(|t| t.timeline >= tli)
            .flat_map(|t| t.segnos.iter().copied())
            .collect();
        (from..=to).find(|s| !have.contains(s))
    }

    fn last_segment(&self, tli: u32) -> Option<u64> {
        self.segments_from(tli, 0).map(|(_, s)| s).max()
    }

    fn name(&self, tli: u32, segno: u64) -> String {
        WalFile::Segment { tli, segno }.name(self.seg_size)
    }
}

impl Plan {
    /// Where recovery stops, for people.
    pub fn describe(&self) -> String {
        match &self.target {
            None => "the end of the archived WAL".into(),
            Some(Target::Immediate) => "the end of the backup".into(),
            Some(Target::Time(t)) => format!("time {}", t.to_rfc3339()),
            Some(Target::Lsn(l)) => format!("LSN {l}"),
            Some(Target::Name(n)) => format!("restore point {n:?}"),
            Some(Target::Xid(x)) => format!("transaction {x}"),
        }
    }
}

/// Chooses the backup and checks the WAL for a goal. Nothing is written.
pub fn plan(repo: &Repository, sysid: Option<u64>, goal: &Goal) -> Result<Plan> {
    let system = match (sysid, goal) {
        (None, Goal::Backup(id)) if id != "latest" => {
            let s = repo.load_snapshot(id)?;
            archive::resolve_system(repo, Some(s.sysid()))?
        }
        _ => archive::resolve_system(repo, sysid)?,
    };
    let sysid: u64 = system.system_identifier.parse().expect("numeric");
    let backups: Vec<Snapshot> = repo
        .snapshots()?
        .into_iter()
        .filter_map(|s| match s {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!("skipping an unreadable backup: {e}");
                None
            }
        })
        .filter(|s| s.sysid() == sysid)
        .collect();
    let Some(first) = backups.first().cloned() else {
        return Err(Error::NotFound(format!(
            "the repository has no backup of system {sysid}"
        )));
    };
    let walk = Walk {
        repo,
        sysid,
        seg_size: segment_size(&system),
        timelines: archive::catalog(repo, &system)?,
    };

    let newest_before = |ok: &dyn Fn(&Snapshot) -> bool, what: String| -> Result<Snapshot> {
        backups
            .iter()
            .rev()
            .find(|s| ok(s))
            .cloned()
            .ok_or_else(|| {
                Error::BadInput(format!(
                    "{what} is before the end of the earliest backup ({} ended at {}, LSN {}); \
                 nothing can be restored to it",
                    first.id,
                    first.stop_time.to_rfc3339(),
                    first.stop_lsn
                ))
            })
    };

    let (snapshot, target, end_segment): (Snapshot, Option<Target>, Option<(u32, u64)>) = match goal
    {
        Goal::Backup(id) => {
            let s = if id == "latest" {
                backups.last().cloned().expect("not empty")
            } else {
                repo.load_snapshot(id)?
            };
            let end = segment_of(s.stop_lsn, walk.seg_size);
            let tli = s.timeline;
            (s, Some(Target::Immediate), Some((tli, end)))
        }
        Goal::Latest => (backups.last().cloned().expect("not empty"), None, None),
        Goal::Target(Target::Immediate) => {
            let s = backups.last().cloned().expect("not empty");
            let end = segment_of(s.stop_lsn, walk.seg_size);
            let tli = s.timeline;
            (s, Some(Target::Immediate), Some((tli, end)))
        }
        Goal::Target(Target::Lsn(lsn)) => {
            let s = newest_before(&|s| s.stop_lsn <= *lsn, format!("target LSN {lsn}"))?;
            let end = segment_of(*lsn, walk.seg_size);
            if walk.last_segment(s.timeline).is_none_or(|last| end > last) {
                return Err(Error::BadInput(format!(
                    "target LSN {lsn} is after the last archived WAL ({}); archive more WAL \
                     (SELECT pg_switch_wal()) or choose an earlier target",
                    walk.last_segment(s.timeline)
                        .map(|l| walk.name(s.timeline, l))
                        .unwrap_or_else(|| "none".into())
                )));
            }
            let tli = s.timeline;
            (s, Some(Target::Lsn(*lsn)), Some((tli, end)))
        }
        Goal::Target(Target::Time(t)) => {
            let t_utc = t.with_timezone(&Utc);
            let s = newest_before(
                &|s| s.stop_time < t_utc,
                format!("target time {}", t.to_rfc3339()),
            )?;
            // Find the first archived commit after the target: recovery stops there.
            let from = segment_of(s.start_lsn, walk.seg_size);
            let mut found = None;
            let mut last_commit = None;
            for (tli, segno) in walk.segments_from(s.timeline, from) {
                if let Some(sum) = walk.summary(tli, segno)? {
                    if let Some(lc) = sum.last_commit_time {
                        last_commit = Some(utc_of_pg(lc));
                        if utc_of_pg(lc) > t_utc {
                            found = Some((tli, segno));
                            break;
                        }
                    }
                }
            }
            let Some(end) = found else {
                return Err(Error::BadInput(format!(
                    "target time {} is after the last archived transaction ({}); PostgreSQL could \
                     not reach it. Archive more WAL (SELECT pg_switch_wal()) or choose an earlier target",
                    t.to_rfc3339(),
                    last_commit.map(|t| t.to_rfc3339()).unwrap_or_else(|| "none".into())
                )));
            };
            (s, Some(Target::Time(*t)), Some(end))
        }
        Goal::Target(Target::Name(name)) => {
            let mut hit = None;
            'outer: for (tli, segno) in walk.segments_from(first.timeline, 0) {
                if let Some(sum) = walk.summary(tli, segno)? {
                    if let Some(rp) = sum.restore_points.iter().find(|rp| &rp.name == name) {
                        hit = Some((tli, segno, rp.lsn));
                        break 'outer;
                    }
                }
            }
            let Some((tli, segno, lsn)) = hit else {
                return Err(Error::BadInput(format!(
                    "restore point {name:?} is not in the archived WAL; `pgsnapfs info` lists the \
                     restorable range (was pg_create_restore_point followed by a WAL switch?)"
                )));
            };
            let s = newest_before(
                &|s| s.stop_lsn <= lsn,
                format!("restore point {name:?} (LSN {lsn})"),
            )?;
            (s, Some(Target::Name(name.clone())), Some((tli, segno)))
        }
        Goal::Target(Target::Xid(xid)) => {
            let mut hit = None;
            for (tli, segno) in walk.segments_from(first.timeline, 0) {
                if let Some(sum) = walk.summary(tli, segno)? {
                    if sum
                        .min_commit_xid
                        .zip(sum.max_commit_xid)
                        .is_some_and(|(lo, hi)| lo <= *xid && *xid <= hi)
                    {
                        hit = Some((tli, segno));
                        break;
                    }
                }
            }
            let Some((tli, segno)) = hit else {
                return Err(Error::BadInput(format!(
                    "no commit of transaction {xid} is in the archived WAL"
                )));
            };
            let seg_start = segment_start(segno, walk.seg_size);
            let s = newest_before(&|s| s.stop_lsn <= seg_start, format!("transaction {xid}"))?;
            (s, Some(Target::Xid(*xid)), Some((tli, segno)))
        }
    };

    let from = segment_of(snapshot.start_lsn, walk.seg_size);
    let last = walk.last_segment(snapshot.timeline);
    let to = match end_segment {
        Some((_, segno)) => segno,
        None => last.unwrap_or(from),
    };
    if let Some(gap) = walk.first_gap(snapshot.timeline, from, to) {
        let missing = walk.name(snapshot.timeline, gap);
        if end_segment.is_some() {
            return Err(Error::BadInput(format!(
                "WAL segment {missing} is missing from the archive, and recovery from backup {} to \
                 this target needs it; choose a target before it",
                snapshot.id
            )));
        }
        tracing::warn!("WAL segment {missing} is missing: recovery will stop before it");
    }
    let replay_bytes = (to + 1).saturating_sub(from) * walk.seg_size;
    Ok(Plan {
        snapshot,
        system,
        target,
        replay_bytes,
    })
}

/// The earliest and latest times a restore can reach, if any.
pub type Range = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// The earliest and latest times a restore can reach, for `info`.
pub fn restorable_range(repo: &Repository, system: &System, backups: &[Snapshot]) -> Result<Range> {
    let sysid: u64 = system.system_identifier.parse().expect("numeric");
    let Some(first) = backups.iter().find(|s| s.sysid() == sysid) else {
        return Ok((None, None));
    };
    let walk = Walk {
        repo,
        sysid,
        seg_size: segment_size(system),
        timelines: archive::catalog(repo, system)?,
    };
    let segs: Vec<(u32, u64)> = walk
        .segments_from(first.timeline, segment_of(first.start_lsn, walk.seg_size))
        .collect();
    let mut latest = None;
    for (tli, segno) in segs.iter().rev() {
        if let Some(t) = walk.summary(*tli, *segno)?.and_then(|s| s.last_commit_time) {
            latest = Some(utc_of_pg(t));
            break;
        }
    }
    Ok((Some(first.stop_time), latest.max(Some(first.stop_time))))
}
