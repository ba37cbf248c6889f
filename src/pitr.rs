//! Point-in-time planning: which timeline to follow and which backup to start from (the
//! rules are in `walpath`), and whether the archived WAL can reach the target, decided
//! before anything is written.
//!
//! PostgreSQL can only stop at a time target when it meets a transaction record after that
//! time, so the latest reachable time is the last archived commit, not the last segment.

use crate::archive::{self, segment_size, SummaryCache, System, TimelineWal};
use crate::catalog::{Backups, Snapshot};
use crate::error::{Error, Result};
use crate::pg::lsn::Lsn;
use crate::pg::target::Target;
use crate::pg::wal::{segment_name, segment_of, SegmentHeader};
use crate::pg::walscan::{scan_segment_split, utc_of_pg, SegmentSummary};
use crate::store::Repository;
use crate::timelines::BackupPoint;
use crate::walpath::{self, Aim, Archive, Summaries, TimelineChoice};
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::Arc;

/// What a restore or mount should recover to, and along which timeline.
#[derive(Debug, Clone)]
pub struct Goal {
    /// The point to recover to.
    pub to: Point,
    /// Which timeline recovery follows.
    pub timeline: TimelineChoice,
}

/// The point a recovery goes to.
#[derive(Debug, Clone)]
pub enum Point {
    /// A backup as it was when it ended (`recovery_target = 'immediate'`).
    Backup(String),
    /// The newest backup of the latest timeline, then every archived WAL record of it.
    Latest,
    /// A recovery target: the backup that can reach it, then WAL up to it.
    Target(Target),
}

/// The chosen backup, and what recovery will do from it.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The backup restored or mounted.
    pub snapshot: Snapshot,
    /// Its cluster.
    pub system: System,
    /// None: replay all archived WAL.
    pub target: Option<Target>,
    /// The timeline recovery follows (`recovery_target_timeline`, always written).
    pub timeline: u32,
    /// Other timelines that hold the target at another point.
    pub also_on: Vec<u32>,
    /// WAL bytes to replay, as far as the catalog tells (to the target, or to the end).
    pub replay_bytes: u64,
    /// The last segment recovery reads, and the timeline whose copy of it is read.
    pub end_segment: (u32, u64),
    /// With no target: the first segment missing on the path, where recovery will stop.
    pub stops_early_at: Option<String>,
    /// The segments recovery reads, from the backup's start to `end_segment`, each with the
    /// timeline whose copy is read.
    pub path: Vec<(u32, u64)>,
    /// The archived WAL the plan was made from, with the WAL index's summaries.
    pub catalog: Arc<Vec<TimelineWal>>,
}

/// Segment summaries from the repository, each read once; a switchpoint segment is split by
/// reading its WAL.
struct Stored<'a> {
    sums: SummaryCache<'a>,
    repo: &'a Repository,
    sysid: u64,
    seg_size: u64,
    splits: HashMap<(u32, u64), Option<Vec<SegmentSummary>>>,
}

impl Summaries for Stored<'_> {
    fn whole(&mut self, tli: u32, segno: u64) -> Result<Option<SegmentSummary>> {
        Ok(self.sums.get(tli, segno)?.cloned())
    }

    fn split(&mut self, tli: u32, segno: u64, at: &[Lsn]) -> Result<Option<Vec<SegmentSummary>>> {
        // A timeline's copy of a segment is split at the same points on every path through it.
        if let Some(s) = self.splits.get(&(tli, segno)) {
            return Ok(s.clone());
        }
        let name = segment_name(tli, segno, self.seg_size);
        let data = archive::segment_data(self.repo, self.sysid, tli, &name, self.seg_size)?
            .ok_or_else(|| Error::NotFound(format!("{name} is not in the archive")))?;
        let split = SegmentHeader::parse(&data)
            .and_then(|h| scan_segment_split(&data, &h, at))
            .map_err(|e| tracing::warn!("{name}: cannot read it to split it at {at:?}: {e}"))
            .ok();
        self.splits.insert((tli, segno), split.clone());
        Ok(split)
    }
}

impl Plan {
    /// Where recovery stops, for people.
    pub fn describe(&self) -> String {
        let point = match &self.target {
            None => "the end of the archived WAL".into(),
            Some(t) => walpath::describe_target(t),
        };
        let also = match self.also_on.as_slice() {
            [] => String::new(),
            [one] => {
                format!("; timeline {one} holds it at another point (--target-timeline {one})")
            }
            more => format!(
                "; timelines {} hold it at other points (--target-timeline)",
                more.iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        format!("{point} on timeline {}{also}", self.timeline)
    }
}

/// Chooses the timeline and backup and checks the WAL for a goal. Nothing is written.
pub fn plan(repo: &Repository, sysid: Option<u64>, goal: &Goal) -> Result<Plan> {
    let system = match (sysid, &goal.to) {
        (None, Point::Backup(id)) if id != "latest" => {
            let s = repo.load_snapshot(id)?;
            archive::resolve_system(repo, Some(s.sysid()))?
        }
        _ => archive::resolve_system(repo, sysid)?,
    };
    let sysid = system.sysid();
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
    if backups.is_empty() {
        return Err(Error::NotFound(format!(
            "the repository has no backup of system {sysid}"
        )));
    }
    let seg_size = segment_size(&system);
    let catalog = archive::catalog(repo, &system)?;
    let tree = archive::timeline_tree(repo, &system, &catalog)?;
    let mut archived = Archive {
        tree: &tree,
        segments: catalog
            .iter()
            .map(|t| (t.timeline, t.segnos.iter().copied().collect()))
            .collect(),
        seg_size,
    };
    let points: Vec<BackupPoint> = backups.iter().map(BackupPoint::from).collect();
    let newest = backups.len() - 1;
    let immediate = Some(Target::Immediate);
    let (aim, target) = match &goal.to {
        Point::Backup(id) if id == "latest" => (Aim::Backup(newest), immediate),
        Point::Backup(id) => {
            let Some(i) = backups.iter().position(|s| &s.id == id) else {
                // Unreadable (loading it says why), or of another cluster.
                repo.load_snapshot(id)?;
                return Err(Error::BadInput(format!(
                    "backup {id} is not a backup of system {sysid}"
                )));
            };
            (Aim::Backup(i), immediate)
        }
        Point::Target(Target::Immediate) => (Aim::Backup(newest), immediate),
        Point::Target(t) => (Aim::Target(t), Some(t.clone())),
        Point::Latest => (Aim::End, None),
    };
    let mut sums = Stored {
        sums: SummaryCache::new(repo, sysid, seg_size, false).with_catalog(&catalog),
        repo,
        sysid,
        seg_size,
        splits: HashMap::new(),
    };
    let choice = match walpath::choose(&archived, &points, aim, goal.timeline, &mut sums) {
        Ok(c) if !matches!(aim, Aim::End) => c,
        // wal-fetch also serves the part of a segment wal-receive has streamed so far, after
        // the archived ones: listed only when the archived WAL is not enough, so a target
        // inside it costs no request more.
        first => {
            let streamed = archive::streamed_segments(repo, &system)?;
            if streamed.is_empty() {
                first?
            } else {
                for (tli, segno) in streamed {
                    archived.segments.entry(tli).or_default().insert(segno);
                }
                walpath::choose(&archived, &points, aim, goal.timeline, &mut sums)?
            }
        }
    };
    if let Some(missing) = &choice.stops_early_at {
        tracing::warn!("WAL segment {missing} is missing: recovery will stop before it");
    }
    let snapshot = backups[choice.backup].clone();
    let from = segment_of(snapshot.start_lsn, seg_size);
    let replay_bytes = (choice.end_segment + 1).saturating_sub(from) * seg_size;
    let path = tree
        .path_segments(choice.timeline, from, choice.end_segment, seg_size)
        .collect();
    Ok(Plan {
        snapshot,
        system,
        target,
        timeline: choice.timeline,
        also_on: choice.also,
        replay_bytes,
        end_segment: (
            archived.timeline_of(choice.timeline, choice.end_segment),
            choice.end_segment,
        ),
        stops_early_at: choice.stops_early_at,
        path,
        catalog: Arc::new(catalog),
    })
}

/// The earliest and latest times a restore can reach, if any.
pub type Range = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// The earliest and latest times a restore can reach, for `info`.
pub fn restorable_range(repo: &Repository, system: &System, backups: &[Snapshot]) -> Result<Range> {
    let sysid = system.sysid();
    let Some(first) = backups.iter().find(|s| s.sysid() == sysid) else {
        return Ok((None, None));
    };
    let seg_size = segment_size(system);
    let from = segment_of(first.start_lsn, seg_size);
    let mut latest = None;
    let catalog = archive::catalog(repo, system)?;
    let mut sums = SummaryCache::new(repo, sysid, seg_size, false).with_catalog(&catalog);
    // The newest transaction of any timeline.
    for t in &catalog {
        for segno in t.segnos.iter().rev().take_while(|s| **s >= from) {
            if let Some(c) = sums
                .get(t.timeline, *segno)?
                .and_then(|s| s.last_commit_time)
            {
                latest = latest.max(Some(utc_of_pg(c)));
                break;
            }
        }
    }
    Ok((Some(first.stop_time), latest.max(Some(first.stop_time))))
}
