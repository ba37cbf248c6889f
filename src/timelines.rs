//! The timelines of one cluster as the repository holds them: how they branch (history files),
//! the WAL each holds, the times each can reach and from which backups, and whether two of
//! them are being written at the same time. `info`, `check` and `expire` share it; its
//! `BackupPoint` is also what the planner (`walpath`) knows of a backup.
//!
//! Recovery toward a timeline reads each segment from one timeline of its history (the newest
//! whose switch segment is at or below it), so "the WAL on the way to timeline T" is a
//! function of T's history alone: `TimelineTree` walks that path (`segment_source`,
//! `path_segments`, `missing_on_path`, `contiguous_end`), for the planner as for these
//! reports. The functions below are pure over the tree and the archived segment lists;
//! `survey` reads the few WAL summaries the answers need (commit times).
//!
//! "Both active" is judged by commit times, not LSNs: after a real recovery to a point in the
//! past the parent also holds WAL past the fork (what was written before the disaster), and
//! that is normal. Two servers are both writing when the older timeline committed after the
//! first commit the newer one made past its switch segment (timeline ids grow with time:
//! PostgreSQL numbers a new timeline above every one in the archive).

use crate::archive::{self, SummaryCache, System, TimelineWal};
use crate::catalog::Snapshot;
use crate::error::Result;
use crate::pg::history::TimelineTree;
use crate::pg::lsn::Lsn;
use crate::pg::wal::segment_of;
use crate::pg::walscan::{unix_micros_to_pg_time, utc_of_pg};
use crate::store::Repository;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};

/// What the planner and the reports need of a backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupPoint {
    /// The backup's id.
    pub id: String,
    /// The timeline it was taken on.
    pub timeline: u32,
    /// Where its WAL starts.
    pub start_lsn: Lsn,
    /// Where its WAL ends: recovery must replay up to here to be consistent.
    pub stop_lsn: Lsn,
    /// PostgreSQL time (microseconds since 2000-01-01 UTC).
    pub stop_time: i64,
}

impl From<&Snapshot> for BackupPoint {
    fn from(s: &Snapshot) -> BackupPoint {
        BackupPoint {
            id: s.id.clone(),
            timeline: s.timeline,
            start_lsn: s.start_lsn,
            stop_lsn: s.stop_lsn,
            stop_time: unix_micros_to_pg_time(s.stop_time.timestamp_micros()),
        }
    }
}

impl BackupPoint {
    /// The first segment of timeline `tli` that recovery from this backup reads: its start
    /// segment on its own timeline, the switch segment on a later one. None when `tli`'s
    /// history does not hold the backup's end (recovery from it cannot follow `tli`).
    pub fn first_read_on(&self, tree: &TimelineTree, tli: u32, seg_size: u64) -> Option<u64> {
        if !tree.contains(tli, self.timeline, self.stop_lsn) {
            return None;
        }
        Some(if tli == self.timeline {
            segment_of(self.start_lsn, seg_size)
        } else {
            tree.first_segment(tli, seg_size)
        })
    }
}

/// Whether recovery from backup `b` can follow `target` and read its first segment: the
/// target's history holds the backup's end, and no segment is missing from the backup's start
/// to where the target begins (to the backup's end, for its own timeline).
pub fn reaches(
    tree: &TimelineTree,
    b: &BackupPoint,
    target: u32,
    seg_size: u64,
    have: &dyn Fn(u32, u64) -> bool,
) -> bool {
    if !tree.contains(target, b.timeline, b.stop_lsn) {
        return false;
    }
    let entry = if b.timeline == target {
        segment_of(b.stop_lsn, seg_size)
    } else {
        tree.first_segment(target, seg_size)
    };
    let from = segment_of(b.start_lsn, seg_size);
    tree.missing_on_path(target, from, entry, seg_size, have)
        .is_empty()
}

/// Commit times seen on one timeline's own segments (PostgreSQL timestamps).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Activity {
    /// The newest commit in its own WAL.
    pub last_commit: Option<i64>,
    /// The first commit past its switch segment: certainly its own, not the parent's WAL
    /// copied into the switch segment.
    pub first_own_commit: Option<i64>,
}

/// Two timelines both written after the newer one began.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BothActive {
    /// The older and the newer timeline.
    pub timelines: [u32; 2],
    /// The newer timeline's parent and switchpoint.
    pub newer_parent: Option<u32>,
    /// The newer timeline's switchpoint on its parent.
    pub newer_fork_lsn: Option<String>,
    /// The older timeline's last commit, after the newer one's first.
    pub older_last_commit: DateTime<Utc>,
    /// The newer timeline's first commit.
    pub newer_first_commit: DateTime<Utc>,
}

impl BothActive {
    /// One line for people.
    pub fn describe(&self) -> String {
        let [old, new] = self.timelines;
        let fork = match (self.newer_parent, &self.newer_fork_lsn) {
            (Some(p), Some(l)) => format!(" (it forked from timeline {p} at {l})"),
            _ => String::new(),
        };
        format!(
            "timelines {old} and {new} are both active: timeline {new}{fork} committed at {}, \
             and timeline {old} still committed at {}. Two servers archive into this \
             repository; if one is a test restore, stop it or turn its archiving off. A target \
             after the fork means the newest timeline unless --target-timeline names another",
            fmt_millis(self.newer_first_commit),
            fmt_millis(self.older_last_commit)
        )
    }
}

/// A time for people: UTC, to the second.
pub fn fmt_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// A time for people, to the millisecond: commits on two servers may share a second.
fn fmt_millis(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string()
}

/// Every pair of timelines where the older committed after the newer's first own commit.
pub fn both_active(tree: &TimelineTree, activity: &BTreeMap<u32, Activity>) -> Vec<BothActive> {
    let mut out = Vec::new();
    for (&old, a) in activity {
        for (&new, b) in activity.range(old + 1..) {
            if let (Some(last), Some(first)) = (a.last_commit, b.first_own_commit) {
                if last > first {
                    let parent = tree.parent(new);
                    out.push(BothActive {
                        timelines: [old, new],
                        newer_parent: parent.map(|(p, _)| p),
                        newer_fork_lsn: parent.map(|(_, l)| l.to_string()),
                        older_last_commit: utc_of_pg(last),
                        newer_first_commit: utc_of_pg(first),
                    });
                }
            }
        }
    }
    out
}

/// What recovery along one timeline can reach.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Reach {
    /// The end of the earliest backup that can follow this timeline.
    pub earliest_time: Option<DateTime<Utc>>,
    /// The last archived commit recovery along this timeline reaches without a gap.
    pub latest_time: Option<DateTime<Utc>>,
    /// The backups recovery along this timeline can start from, oldest first.
    pub backups: Vec<String>,
}

/// One timeline, for `info`.
#[derive(Debug, Clone, Serialize)]
pub struct TimelineInfo {
    /// The cluster's system identifier.
    pub system_identifier: String,
    /// The timeline's id.
    pub timeline: u32,
    /// The timeline it branched from, and where (None for timeline 1, or when its history
    /// file is missing).
    pub parent: Option<u32>,
    /// Where it branched off its parent.
    pub fork_lsn: Option<String>,
    /// The history file above timeline 1 is missing or unreadable: its parent is unknown.
    pub history_missing: bool,
    /// The timelines that branched from it.
    pub children: Vec<u32>,
    /// Its own archived WAL: segments, first, last, gaps.
    pub wal: TimelineWal,
    /// The times a restore along this timeline reaches (`--target-timeline N`).
    pub restorable: Reach,
}

/// The timelines of one cluster.
#[derive(Debug, Clone, Serialize)]
pub struct Survey {
    /// Every timeline of the cluster, ascending.
    pub timelines: Vec<TimelineInfo>,
    /// Pairs of timelines both written to after the newer began (a split brain).
    pub both_active: Vec<BothActive>,
    /// The history of the timelines, for planning.
    #[serde(skip)]
    pub tree: TimelineTree,
}

/// The last commit time in the first of `segs` (tried in order) that has one.
fn last_commit(
    sums: &mut SummaryCache,
    segs: impl Iterator<Item = (u32, u64)>,
) -> Result<Option<i64>> {
    for (tli, segno) in segs {
        if let Some(t) = sums.get(tli, segno)?.and_then(|s| s.last_commit_time) {
            return Ok(Some(t));
        }
    }
    Ok(None)
}

/// Surveys one cluster's timelines. `backups` may hold other clusters' backups.
pub fn survey(repo: &Repository, system: &System, backups: &[&Snapshot]) -> Result<Survey> {
    let catalog = archive::catalog(repo, system)?;
    let tree = archive::timeline_tree(repo, system, &catalog)?;
    let sysid = system.sysid();
    let seg_size = archive::segment_size(system);
    let mut backups: Vec<&Snapshot> = backups
        .iter()
        .copied()
        .filter(|s| s.sysid() == sysid)
        .collect();
    backups.sort_by_key(|s| s.start_lsn);
    let have_set: HashSet<(u32, u64)> = catalog
        .iter()
        .flat_map(|t| t.segnos.iter().map(move |s| (t.timeline, *s)))
        .collect();
    let have = |tli: u32, segno: u64| have_set.contains(&(tli, segno));
    // A damaged summary only hides commit times (check reports it).
    let mut sums = SummaryCache::new(repo, sysid, seg_size, true).with_catalog(&catalog);
    let mut activity = BTreeMap::new();
    let mut timelines = Vec::new();
    for t in &catalog {
        let tli = t.timeline;
        let first = tree.first_segment(tli, seg_size);
        // Commit times only matter where two timelines could both be active.
        if catalog.len() > 1 {
            let own_back = t.segnos.iter().rev().map(|s| (tli, *s));
            let last_commit = last_commit(&mut sums, own_back)?;
            let mut first_own_commit = None;
            if tree.parent(tli).is_some() {
                for s in t.segnos.iter().filter(|s| **s > first) {
                    if let Some(c) = sums.get(tli, *s)?.and_then(|s| s.first_commit_time) {
                        first_own_commit = Some(c);
                        break;
                    }
                }
            }
            activity.insert(
                tli,
                Activity {
                    last_commit,
                    first_own_commit,
                },
            );
        }

        let reaching: Vec<&Snapshot> = backups
            .iter()
            .copied()
            .filter(|s| reaches(&tree, &BackupPoint::from(*s), tli, seg_size, &have))
            .collect();
        let mut reach = Reach {
            earliest_time: reaching.iter().map(|s| s.stop_time).min(),
            backups: reaching.iter().map(|s| s.id.clone()).collect(),
            ..Reach::default()
        };
        if let Some(newest) = reaching.last() {
            let from = segment_of(newest.start_lsn, seg_size);
            let last = t.segnos.last().copied().unwrap_or(from).max(from);
            if let Some(end) = tree.contiguous_end(tli, from, last, seg_size, &have) {
                let back = tree.path_segments(tli, from, end, seg_size).rev();
                reach.latest_time = last_commit(&mut sums, back)?.map(utc_of_pg);
            }
            let newest_stop = reaching.iter().map(|s| s.stop_time).max();
            reach.latest_time = reach.latest_time.max(newest_stop);
        }
        let parent = tree.parent(tli);
        timelines.push(TimelineInfo {
            system_identifier: system.system_identifier.to_string(),
            timeline: tli,
            parent: parent.map(|(p, _)| p),
            fork_lsn: parent.map(|(_, l)| l.to_string()),
            history_missing: tree.missing.contains(&tli),
            children: tree.children(tli),
            wal: t.clone(),
            restorable: reach,
        });
    }
    Ok(Survey {
        both_active: both_active(&tree, &activity),
        timelines,
        tree,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::history::tests::{all_but, path_tree as tree};

    const SEG: u64 = 16 << 20;

    #[test]
    fn which_backups_reach_which_timeline() {
        let t = tree();
        let b = |timeline, start: u64, stop: u64| BackupPoint {
            id: "b".into(),
            timeline,
            start_lsn: Lsn(start * SEG + 40),
            stop_lsn: Lsn(stop * SEG + 0x200),
            stop_time: 0,
        };
        let have = all_but(&[]);
        // Before every fork: reaches all four.
        for target in 1..=4 {
            assert!(reaches(&t, &b(1, 2, 3), target, SEG, &have), "{target}");
        }
        // On timeline 1 between the forks to 2 and to 4: timeline 1 and 4 only.
        let mid = b(1, 5, 5);
        let got: Vec<u32> = (1..=4)
            .filter(|x| reaches(&t, &mid, *x, SEG, &have))
            .collect();
        assert_eq!(got, vec![1, 4]);
        // On timeline 2: itself and its child 3, not its parent or sibling.
        let on2 = b(2, 6, 6);
        let got: Vec<u32> = (1..=4)
            .filter(|x| reaches(&t, &on2, *x, SEG, &have))
            .collect();
        assert_eq!(got, vec![2, 3]);
        // A gap on timeline 1 before the fork cuts off the children, not timeline 1 itself
        // (the backup restores; recovery along timeline 1 stops at the gap).
        let have = all_but(&[(1, 4)]);
        let got: Vec<u32> = (1..=4)
            .filter(|x| reaches(&t, &b(1, 2, 3), *x, SEG, &have))
            .collect();
        assert_eq!(got, vec![1]);
        // The child's own switch segment is needed to enter it.
        let have = all_but(&[(4, 6)]);
        assert!(!reaches(&t, &b(1, 2, 3), 4, SEG, &have));
        assert!(reaches(&t, &b(1, 2, 3), 2, SEG, &have));
    }

    #[test]
    fn both_active_needs_overlapping_commits() {
        let t = tree();
        let act = |last: Option<i64>, first: Option<i64>| Activity {
            last_commit: last,
            first_own_commit: first,
        };
        // A real recovery: timeline 1 stopped (last commit 100) before 2 began (first 200).
        let normal = BTreeMap::from([(1, act(Some(100), None)), (2, act(Some(300), Some(200)))]);
        assert_eq!(both_active(&t, &normal), vec![]);
        // The old primary kept committing after timeline 2's first commit: flagged, parent
        // and child; and a sibling (4) born later while 2 still commits.
        let test = BTreeMap::from([
            (1, act(Some(250), None)),
            (2, act(Some(500), Some(200))),
            (4, act(Some(450), Some(400))),
        ]);
        let got: Vec<[u32; 2]> = both_active(&t, &test).iter().map(|b| b.timelines).collect();
        assert_eq!(got, vec![[1, 2], [2, 4]]);
        let b = &both_active(&t, &test)[0];
        assert_eq!(
            (b.newer_parent, b.newer_fork_lsn.as_deref()),
            (Some(1), Some("0/5000100"))
        );
        assert!(b.describe().contains("timelines 1 and 2 are both active"));
        // A newer timeline with no commit of its own past its switch segment: undecided.
        let quiet = BTreeMap::from([(1, act(Some(900), None)), (2, act(Some(300), None))]);
        assert_eq!(both_active(&t, &quiet), vec![]);
    }
}
