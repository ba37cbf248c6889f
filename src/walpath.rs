//! The timeline a recovery follows and the base backup it starts from, decided over the
//! timeline tree. Key types: `Archive` (the archived WAL and its tree), `TimelineChoice`
//! (`--target-timeline`), `Choice` (the decision).
//!
//! Decision: a recovery reads the WAL of one timeline's *path*: each ancestor up to where the
//! path leaves it, the segment holding a switchpoint from the newer timeline (as PostgreSQL's
//! XLogFileReadAnyTLI does), then the timeline itself. Every goal resolves to one such path:
//! - a backup (`--backup`, `latest`, immediate): the backup's own timeline;
//! - a time, LSN, name or xid: the newest timeline whose path holds the target and a backup
//!   before it. A time target in the *fork gap* of a timeline (after its parent's last
//!   transaction before the fork, before its own first one) is held by it only weakly: the
//!   live cluster at that time was the parent, so the parent wins when it holds the time;
//! - no target: the one leaf timeline of the timelines reachable from a backup; several
//!   leaves are ambiguous and refused.
//!
//! `--target-timeline N` searches N only; `current` only the timelines of the backups (the
//! target must lie on the base backup's own timeline, PostgreSQL's meaning); `latest` is the
//! default rule. Pure: segment summaries come through `Summaries`.

use crate::error::{Error, Result};
use crate::pg::history::{timeline_of, TimelineTree};
use crate::pg::lsn::Lsn;
use crate::pg::target::Target;
use crate::pg::wal::{segment_name, segment_of, segment_start};
use crate::pg::walscan::{format_pg_time, unix_micros_to_pg_time, SegmentSummary};
use crate::timelines::BackupPoint;
use std::collections::{BTreeMap, BTreeSet};

/// `--target-timeline`: which timeline a recovery follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimelineChoice {
    /// The rules in the module comment.
    #[default]
    Auto,
    /// The newest timeline that holds the target; with no target, the one leaf timeline.
    Latest,
    /// The timeline of the base backup: the target must be on the backup's own timeline.
    Current,
    /// This timeline.
    BlobId(u32),
}

impl std::str::FromStr for TimelineChoice {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<TimelineChoice, String> {
        match s {
            "latest" => Ok(TimelineChoice::Latest),
            "current" => Ok(TimelineChoice::Current),
            n => match n.parse::<u32>() {
                Ok(id) if id > 0 => Ok(TimelineChoice::BlobId(id)),
                _ => Err(format!(
                    "{s:?} is not a timeline: a number, `latest` or `current`"
                )),
            },
        }
    }
}

/// Where a recovery goes.
#[derive(Debug, Clone, Copy)]
pub enum Aim<'a> {
    /// Backup number i (of the list given), as it ended.
    Backup(usize),
    /// All archived WAL.
    End,
    /// Up to this recovery target.
    Target(&'a Target),
}

/// Segment summaries, by timeline and segment number.
pub trait Summaries {
    /// The summary of the whole segment; None when it cannot be read.
    fn whole(&mut self, tli: u32, segno: u64) -> Result<Option<SegmentSummary>>;
    /// The records of the segment before each of the ascending positions `at`, between them,
    /// and after the last (`at.len() + 1` summaries); None when it cannot be read.
    fn split(&mut self, tli: u32, segno: u64, at: &[Lsn]) -> Result<Option<Vec<SegmentSummary>>>;
}

/// The archived WAL of a cluster and its timeline tree.
#[derive(Debug, Clone)]
pub struct Archive<'a> {
    /// The cluster's timeline history.
    pub tree: &'a TimelineTree,
    /// Archived segment numbers per timeline.
    pub segments: BTreeMap<u32, BTreeSet<u64>>,
    /// The WAL segment size, in bytes.
    pub seg_size: u64,
}

/// The decision: recover from backup `backup` along the path to `timeline`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The timeline to recover along.
    pub timeline: u32,
    /// Index into the backups given.
    pub backup: usize,
    /// The last segment recovery reads.
    pub end_segment: u64,
    /// Other timelines that hold the target at another point (`--target-timeline` picks one).
    pub also: Vec<u32>,
    /// With no target: the first segment missing on the path, where recovery will stop.
    pub stops_early_at: Option<String>,
}

/// A piece of WAL on a path: a segment, or one side of a switchpoint in it.
struct Piece {
    segno: u64,
    sum: SegmentSummary,
    /// The timeline whose records these are.
    owner: u32,
    /// The part after a switchpoint: the first records of a new timeline.
    entered: bool,
    /// A switchpoint segment that could not be split: its records are of both timelines.
    unsplit: bool,
}

/// Where a target lies on one timeline's path.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Found {
    /// The segment where recovery stops.
    segno: u64,
    /// The timeline whose record recovery stops at.
    owner: u32,
    /// The target's own position, when known (restore points).
    lsn: Option<Lsn>,
    /// A time in a fork gap (or maybe in one: see `Piece::unsplit`).
    weak: bool,
}

/// Why a timeline does not hold a target.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Miss {
    /// Time: the last transaction on the path, if any.
    AfterLastCommit(Option<i64>),
    /// LSN: the last segment on the path, if any.
    AfterEnd(Option<(u32, u64)>),
    NotInWal,
    NoBackup,
}

impl Archive<'_> {
    /// The timeline whose copy of `segno` recovery to `tli` reads.
    pub fn timeline_of(&self, tli: u32, segno: u64) -> u32 {
        self.tree.segment_source(tli, segno, self.seg_size)
    }

    fn has(&self, tli: u32, segno: u64) -> bool {
        self.segments.get(&tli).is_some_and(|s| s.contains(&segno))
    }

    /// The last archived segment on the path to `tli`.
    pub fn path_end(&self, tli: u32) -> Option<u64> {
        let members = self.tree.history(tli).iter().map(|e| e.parent_tli);
        members
            .chain([tli])
            .filter_map(|t| {
                let segs = self.segments.get(&t)?;
                segs.iter()
                    .rev()
                    .find(|s| self.timeline_of(tli, **s) == t)
                    .copied()
            })
            .max()
    }

    /// The first segment missing from the path to `tli` between `from` and `to`, by name.
    pub fn first_gap(&self, tli: u32, from: u64, to: u64) -> Option<String> {
        self.tree
            .path_segments(tli, from, to, self.seg_size)
            .find(|(t, s)| !self.has(*t, *s))
            .map(|(t, s)| self.name(t, s))
    }

    /// The file name of segment `segno` on timeline `tli`.
    pub fn name(&self, tli: u32, segno: u64) -> String {
        segment_name(tli, segno, self.seg_size)
    }

    /// The switchpoints on the path to `tli` inside segment `segno`, in order: (timeline
    /// left, where). One segment can hold several, when a recovery of a recovery stopped soon
    /// after the first one began.
    fn switches_in(&self, tli: u32, segno: u64) -> Vec<(u32, Lsn)> {
        self.tree
            .history(tli)
            .iter()
            .filter(|e| segment_of(e.switchpoint, self.seg_size) == segno)
            .map(|e| (e.parent_tli, e.switchpoint))
            .collect()
    }

    /// Visits the archived WAL on the path to `tli` from segment `from`, in order, until
    /// `visit` returns something.
    fn walk<R>(
        &self,
        tli: u32,
        from: u64,
        sums: &mut dyn Summaries,
        mut visit: impl FnMut(&Piece) -> Option<R>,
    ) -> Result<Option<R>> {
        let Some(end) = self.path_end(tli) else {
            return Ok(None);
        };
        for (t, segno) in self.tree.path_segments(tli, from, end, self.seg_size) {
            if !self.has(t, segno) {
                continue;
            }
            let piece = |sum, owner, entered, unsplit| Piece {
                segno,
                sum,
                owner,
                entered,
                unsplit,
            };
            let switches = self.switches_in(tli, segno);
            let at: Vec<Lsn> = switches.iter().map(|s| s.1).collect();
            let split = match at.is_empty() {
                true => None,
                false => sums.split(t, segno, &at)?,
            };
            let pieces: Vec<Piece> = match split {
                // Part 0 is the first timeline left; part i the one entered at switch i - 1.
                Some(parts) => parts
                    .into_iter()
                    .enumerate()
                    .map(|(i, sum)| {
                        let owner = switches.get(i).map_or(t, |s| s.0);
                        piece(sum, owner, i > 0, false)
                    })
                    .collect(),
                None => sums
                    .whole(t, segno)?
                    .map(|s| piece(s, t, !at.is_empty(), !at.is_empty()))
                    .into_iter()
                    .collect(),
            };
            for p in &pieces {
                if let Some(r) = visit(p) {
                    return Ok(Some(r));
                }
            }
        }
        Ok(None)
    }

    /// Where `target` lies on the path to `tli`, searching from segment `from`.
    fn find(
        &self,
        tli: u32,
        target: &Target,
        from: u64,
        sums: &mut dyn Summaries,
    ) -> Result<std::result::Result<Found, Miss>> {
        let found = |segno, owner| Found {
            segno,
            owner,
            lsn: None,
            weak: false,
        };
        Ok(match target {
            Target::Immediate => Err(Miss::NotInWal),
            Target::Lsn(lsn) => {
                let segno = segment_of(*lsn, self.seg_size);
                match self.path_end(tli) {
                    Some(end) if segno <= end => {
                        Ok(found(segno, timeline_of(*lsn, tli, self.tree.history(tli))))
                    }
                    end => Err(Miss::AfterEnd(end.map(|e| (self.timeline_of(tli, e), e)))),
                }
            }
            Target::Time(t) => {
                let t = unix_micros_to_pg_time(t.timestamp_micros());
                let mut last: Option<i64> = None;
                // Entered a new timeline that has had no transaction yet (unsplit or not).
                let mut fork: Option<bool> = None;
                let hit = self.walk(tli, from, sums, |p| {
                    if p.entered {
                        fork = Some(p.unsplit);
                    }
                    let lc = p.sum.last_commit_time?;
                    if lc <= t {
                        last = Some(lc);
                        fork = None;
                        return None;
                    }
                    // Recovery stops at the first transaction after the target. In a fork
                    // gap that is the new timeline's first one, while the last one before
                    // the fork came before the target: the target's time belongs to the
                    // parent, not to this timeline.
                    let first = p.sum.first_commit_time.unwrap_or(lc);
                    let weak = fork.is_some_and(|unsplit| unsplit || (first > t && last.is_some()));
                    Some(Found {
                        weak,
                        ..found(p.segno, p.owner)
                    })
                })?;
                hit.ok_or(Miss::AfterLastCommit(last))
            }
            Target::Name(name) => self
                .walk(tli, from, sums, |p| {
                    let rp = p.sum.restore_points.iter().find(|rp| &rp.name == name)?;
                    Some(Found {
                        lsn: Some(rp.lsn),
                        ..found(p.segno, p.owner)
                    })
                })?
                .ok_or(Miss::NotInWal),
            Target::Xid(xid) => self
                .walk(tli, from, sums, |p| {
                    let (lo, hi) = p.sum.min_commit_xid.zip(p.sum.max_commit_xid)?;
                    (lo <= *xid && *xid <= hi).then(|| found(p.segno, p.owner))
                })?
                .ok_or(Miss::NotInWal),
        })
    }

    /// The newest backup on the path to `tli` (ended before the path left its timeline) that
    /// `before` accepts; with `own`, only backups of `tli` itself.
    fn base(
        &self,
        backups: &[BackupPoint],
        tli: u32,
        own: bool,
        before: impl Fn(&BackupPoint) -> bool,
    ) -> Option<usize> {
        backups.iter().rposition(|b| {
            (!own || b.timeline == tli)
                && self.tree.contains(tli, b.timeline, b.stop_lsn)
                && before(b)
        })
    }
}

/// Decides the timeline and base backup for `aim`. `backups` are ordered by end time.
pub fn choose(
    archive: &Archive,
    backups: &[BackupPoint],
    aim: Aim,
    choice: TimelineChoice,
    sums: &mut dyn Summaries,
) -> Result<Choice> {
    let Some(newest) = backups.len().checked_sub(1) else {
        return Err(Error::NotFound(
            "the repository has no backup of this cluster".into(),
        ));
    };
    let seg = |lsn| segment_of(lsn, archive.seg_size);
    let known = |tli: u32| -> Result<()> {
        if archive.tree.timelines().any(|t| t == tli) || backups.iter().any(|b| b.timeline == tli) {
            Ok(())
        } else {
            Err(Error::BadInput(format!(
                "timeline {tli} is not in this repository (timelines: {})",
                list(archive.tree.timelines())
            )))
        }
    };
    let choice_of = |tli, backup, end_segment| Choice {
        timeline: tli,
        backup,
        end_segment,
        also: Vec::new(),
        stops_early_at: None,
    };
    let checked = |c: Choice, strict: bool, what: &str| -> Result<Choice> {
        let b = &backups[c.backup];
        match archive.first_gap(c.timeline, seg(b.start_lsn), c.end_segment) {
            Some(missing) if strict => Err(Error::BadInput(format!(
                "WAL segment {missing} is missing from the archive, and recovery along timeline \
                 {} to {what} needs it; choose a target before it",
                c.timeline
            ))),
            missing => Ok(Choice {
                stops_early_at: missing,
                ..c
            }),
        }
    };
    match aim {
        Aim::Backup(i) => {
            let b = &backups[i];
            let tli = match choice {
                TimelineChoice::BlobId(n) => {
                    known(n)?;
                    if !archive.tree.contains(n, b.timeline, b.stop_lsn) {
                        return Err(Error::BadInput(format!(
                            "timeline {n} does not pass through the end of this backup \
                             (timeline {}, LSN {}){}; leave out --target-timeline",
                            b.timeline,
                            b.stop_lsn,
                            forked(archive.tree, n, b.timeline)
                        )));
                    }
                    n
                }
                _ => b.timeline,
            };
            checked(
                choice_of(tli, i, seg(b.stop_lsn)),
                true,
                "the end of the backup",
            )
        }
        Aim::End => {
            let tli = match choice {
                TimelineChoice::BlobId(n) => {
                    known(n)?;
                    n
                }
                TimelineChoice::Current => backups[newest].timeline,
                TimelineChoice::Auto | TimelineChoice::Latest => {
                    let reachable: Vec<u32> = archive
                        .tree
                        .timelines()
                        .filter(|t| archive.base(backups, *t, false, |_| true).is_some())
                        .collect();
                    let leaves: Vec<u32> = reachable
                        .iter()
                        .copied()
                        .filter(|t| {
                            !reachable
                                .iter()
                                .any(|d| d != t && archive.tree.is_ancestor(*t, *d))
                        })
                        .collect();
                    match leaves.as_slice() {
                        [] => backups[newest].timeline,
                        [one] => *one,
                        several => {
                            return Err(Error::BadInput(format!(
                                "the latest state is ambiguous: timelines {} each branch off \
                                 after a backup ({}); choose one with --target-timeline",
                                list(several.iter().copied()),
                                several
                                    .iter()
                                    .map(|t| describe_tli(archive.tree, *t))
                                    .collect::<Vec<_>>()
                                    .join("; ")
                            )))
                        }
                    }
                }
            };
            let Some(i) = archive.base(backups, tli, false, |_| true) else {
                return Err(Error::BadInput(format!(
                    "no backup lies on the history of timeline {tli}{}",
                    forked_from(archive.tree, tli)
                )));
            };
            let end = archive
                .path_end(tli)
                .unwrap_or(0)
                .max(seg(backups[i].stop_lsn));
            checked(choice_of(tli, i, end), false, "its end")
        }
        Aim::Target(target) => {
            let what = describe_target(target);
            let from = backups.iter().map(|b| seg(b.start_lsn)).min().unwrap_or(0);
            let candidates: Vec<u32> = match choice {
                TimelineChoice::BlobId(n) => {
                    known(n)?;
                    vec![n]
                }
                _ => {
                    let mut all: Vec<u32> = archive.tree.timelines().collect();
                    all.reverse();
                    all
                }
            };
            let own = choice == TimelineChoice::Current;
            let mut hits: Vec<(u32, Found, usize)> = Vec::new();
            let mut misses: Vec<(u32, Miss)> = Vec::new();
            for tli in candidates {
                let found = match archive.find(tli, target, from, sums)? {
                    Ok(f) => f,
                    Err(miss) => {
                        misses.push((tli, miss));
                        continue;
                    }
                };
                let before = |b: &BackupPoint| match target {
                    Target::Time(t) => b.stop_time < unix_micros_to_pg_time(t.timestamp_micros()),
                    Target::Lsn(l) => b.stop_lsn <= *l,
                    Target::Name(_) => found.lsn.is_none_or(|l| b.stop_lsn <= l),
                    _ => b.stop_lsn <= segment_start(found.segno, archive.seg_size),
                };
                match archive.base(backups, tli, own, before) {
                    Some(i) => hits.push((tli, found, i)),
                    None => misses.push((tli, Miss::NoBackup)),
                }
            }
            // Newest first; a time in a fork gap only when nothing holds it outright.
            let best = hits.iter().find(|(_, f, _)| !f.weak).or(hits.first());
            let Some((tli, found, i)) = best else {
                let reasons = misses
                    .iter()
                    .map(|(t, m)| explain(archive, *t, m))
                    .collect::<Vec<_>>()
                    .join("; ");
                let hint = match target {
                    Target::Time(_) | Target::Lsn(_) => {
                        ". Archive more WAL (SELECT pg_switch_wal()) or choose another target"
                    }
                    _ => ". `pgsnapfs info` lists the restorable range",
                };
                return Err(Error::BadInput(match choice {
                    TimelineChoice::BlobId(n) => format!(
                        "{what} is not reachable on timeline {n}: {reasons}{}",
                        elsewhere(archive, backups, target, from, sums, n)?
                    ),
                    _ => format!("{what} is not reachable on any timeline: {reasons}{hint}"),
                }));
            };
            let also = hits
                .iter()
                .filter(|(t, f, _)| {
                    t != tli && !f.weak && (f.owner, f.segno) != (found.owner, found.segno)
                })
                .map(|(t, _, _)| *t)
                .collect();
            checked(
                Choice {
                    also,
                    ..choice_of(*tli, *i, found.segno)
                },
                true,
                &what,
            )
        }
    }
}

/// Where else a target is, for a refusal on timeline `not`.
fn elsewhere(
    archive: &Archive,
    backups: &[BackupPoint],
    target: &Target,
    from: u64,
    sums: &mut dyn Summaries,
    not: u32,
) -> Result<String> {
    let mut on = Vec::new();
    for t in archive.tree.timelines().filter(|t| *t != not) {
        if let Ok(f) = archive.find(t, target, from, sums)? {
            if archive.base(backups, t, false, |_| true).is_some() && !f.weak {
                on.push(t);
            }
        }
    }
    Ok(match on.as_slice() {
        [] => String::new(),
        [one] => format!("; timeline {one} holds it: use --target-timeline {one}"),
        several => format!(
            "; timelines {} hold it: choose one with --target-timeline",
            list(several.iter().copied())
        ),
    })
}

fn explain(archive: &Archive, tli: u32, miss: &Miss) -> String {
    let why = match miss {
        Miss::AfterLastCommit(Some(t)) => {
            format!("its last archived transaction is at {}", format_pg_time(*t))
        }
        Miss::AfterLastCommit(None) => "it holds no archived transaction".into(),
        Miss::AfterEnd(Some((t, s))) => {
            format!(
                "its archived WAL ends with segment {}",
                archive.name(*t, *s)
            )
        }
        Miss::AfterEnd(None) => "it holds no archived WAL".into(),
        Miss::NotInWal => "not in its archived WAL".into(),
        Miss::NoBackup => "no backup on its history ends before the target".into(),
    };
    format!("timeline {tli}{}: {why}", forked_from(archive.tree, tli))
}

/// " (from timeline P at LSN)", or a note that the history file is missing.
fn forked_from(tree: &TimelineTree, tli: u32) -> String {
    if tree.missing.contains(&tli) {
        return " (its history file is missing, so its ancestors are unknown)".into();
    }
    tree.parent(tli)
        .map(|(p, at)| format!(" (from timeline {p} at {at})"))
        .unwrap_or_default()
}

fn describe_tli(tree: &TimelineTree, tli: u32) -> String {
    format!("timeline {tli}{}", forked_from(tree, tli))
}

/// Why timeline `tli` does not pass through a point of timeline `on`.
fn forked(tree: &TimelineTree, tli: u32, on: u32) -> String {
    match tree.leaves_at(on, tli) {
        Some(at) => format!(": it left timeline {on} at {at}, before the backup ended"),
        None => format!(": timeline {on} is not on its history"),
    }
}

fn list(tlis: impl Iterator<Item = u32>) -> String {
    tlis.map(|t| t.to_string()).collect::<Vec<_>>().join(", ")
}

/// The target in words, for messages ("target time ...", "restore point ...").
pub fn describe_target(target: &Target) -> String {
    match target {
        Target::Immediate => "the end of the backup".into(),
        Target::Time(t) => format!("target time {}", t.to_rfc3339()),
        Target::Lsn(l) => format!("target LSN {l}"),
        Target::Name(n) => format!("restore point {n:?}"),
        Target::Xid(x) => format!("transaction {x}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::history::parse_history;
    use crate::pg::walscan::RestorePoint;
    use chrono::{DateTime, FixedOffset};
    use std::collections::HashMap;

    const SEG: u64 = 16 << 20;

    fn lsn(s: &str) -> Lsn {
        s.parse().unwrap()
    }

    fn at(secs: i64) -> i64 {
        secs * 1_000_000
    }

    fn time(secs: i64) -> Target {
        let utc =
            DateTime::from_timestamp_micros(crate::pg::walscan::pg_time_to_unix_micros(at(secs)))
                .unwrap();
        Target::Time(utc.with_timezone(&FixedOffset::east_opt(0).unwrap()))
    }

    /// Summaries from commit lists: (tli, segno) -> [(lsn offset in segment, time)].
    #[derive(Default)]
    struct Fake {
        commits: HashMap<(u32, u64), Vec<(u64, i64)>>,
        points: HashMap<(u32, u64), Vec<(u64, &'static str)>>,
        /// Segments whose WAL cannot be read (split returns None).
        unreadable: BTreeSet<(u32, u64)>,
    }

    impl Fake {
        fn sum(&self, tli: u32, segno: u64, keep: impl Fn(Lsn) -> bool) -> SegmentSummary {
            let base = segno * SEG;
            let c: Vec<(Lsn, i64)> = self
                .commits
                .get(&(tli, segno))
                .into_iter()
                .flatten()
                .map(|(o, t)| (Lsn(base + o), *t))
                .filter(|(l, _)| keep(*l))
                .collect();
            let xids = c.iter().map(|(l, _)| (l.0 / 1000) as u32);
            SegmentSummary {
                first_commit_time: c.iter().map(|x| x.1).min(),
                last_commit_time: c.iter().map(|x| x.1).max(),
                restore_points: self
                    .points
                    .get(&(tli, segno))
                    .into_iter()
                    .flatten()
                    .map(|(o, n)| RestorePoint {
                        name: n.to_string(),
                        time: 0,
                        lsn: Lsn(base + o),
                    })
                    .filter(|r| keep(r.lsn))
                    .collect(),
                min_commit_xid: xids.clone().min(),
                max_commit_xid: xids.max(),
                end_lsn: Lsn(base + SEG),
                tablespaces: Some(Vec::new()),
            }
        }
    }

    impl Summaries for Fake {
        fn whole(&mut self, tli: u32, segno: u64) -> Result<Option<SegmentSummary>> {
            Ok(Some(self.sum(tli, segno, |_| true)))
        }
        fn split(
            &mut self,
            tli: u32,
            segno: u64,
            at: &[Lsn],
        ) -> Result<Option<Vec<SegmentSummary>>> {
            if self.unreadable.contains(&(tli, segno)) {
                return Ok(None);
            }
            let bounds: Vec<Lsn> = [Lsn(0)]
                .into_iter()
                .chain(at.iter().copied())
                .chain([Lsn(u64::MAX)])
                .collect();
            Ok(Some(
                bounds
                    .windows(2)
                    .map(|w| self.sum(tli, segno, |l| w[0] <= l && l < w[1]))
                    .collect(),
            ))
        }
    }

    fn tree(histories: &[(u32, &str)], missing: &[u32]) -> TimelineTree {
        TimelineTree::new(
            histories
                .iter()
                .map(|(t, h)| (*t, parse_history(h).unwrap()))
                .collect(),
            missing.to_vec(),
        )
    }

    fn archive<'a>(
        tree: &'a TimelineTree,
        segs: &[(u32, std::ops::RangeInclusive<u64>)],
    ) -> Archive<'a> {
        let mut segments: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
        for (t, r) in segs {
            segments.entry(*t).or_default().extend(r.clone());
        }
        Archive {
            tree,
            segments,
            seg_size: SEG,
        }
    }

    fn backup(tli: u32, start: &str, stop: &str, secs: i64) -> BackupPoint {
        BackupPoint {
            id: String::new(),
            timeline: tli,
            start_lsn: lsn(start),
            stop_lsn: lsn(stop),
            stop_time: at(secs),
        }
    }

    /// The scenario. Timeline 1: commits each second, segment s holding t = 50s to
    /// 50s+49 (t=50 to 349); B1 ends in segment 1 at t=60, B2 in segment 5 at t=251. A
    /// recovery to t=162 (the fork at 0/3400000, in segment 3) was promoted to timeline 2,
    /// whose first transaction is at t=1000.
    struct Scenario {
        tree: TimelineTree,
        fake: Fake,
        backups: Vec<BackupPoint>,
    }

    fn scenario() -> Scenario {
        let tree = tree(&[(1, ""), (2, "1\t0/3400000\tbefore 200\n")], &[]);
        let mut fake = Fake::default();
        for s in 1..=6u64 {
            // Timeline 1: segment s holds t = 50s .. 50s+49, spread over the segment.
            let c = (0..50)
                .map(|i| (i * (SEG / 50), at(50 * s as i64 + i as i64)))
                .collect();
            fake.commits.insert((1, s), c);
        }
        // Timeline 2's copy of segment 3: timeline 1's commits before 0/3400000, then its own.
        let mut c3: Vec<(u64, i64)> = fake.commits[&(1, 3)]
            .iter()
            .copied()
            .filter(|(o, _)| *o < 0x40_0000)
            .collect();
        c3.push((0x50_0000, at(1000)));
        fake.commits.insert((2, 3), c3);
        fake.commits
            .insert((2, 4), vec![(0x10, at(1010)), (0x20, at(1020))]);
        let backups = vec![
            backup(1, "0/1000028", "0/1000100", 60),
            backup(1, "0/5000028", "0/5000100", 251),
        ];
        Scenario {
            tree,
            fake,
            backups,
        }
    }

    impl Scenario {
        fn choose(&mut self, aim: Aim, choice: TimelineChoice) -> Result<Choice> {
            let a = archive(&self.tree, &[(1, 1..=6), (2, 3..=4)]);
            choose(&a, &self.backups, aim, choice, &mut self.fake)
        }
    }

    fn picked(c: Result<Choice>) -> (u32, usize, u64) {
        let c = c.unwrap();
        (c.timeline, c.backup, c.end_segment)
    }

    fn refused(c: Result<Choice>) -> String {
        match c {
            Err(Error::BadInput(m)) => m,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn backup_after_the_fork_keeps_its_own_timeline() {
        let mut s = scenario();
        assert_eq!(
            picked(s.choose(Aim::Backup(1), TimelineChoice::Auto)),
            (1, 1, 5)
        );
        assert_eq!(
            picked(s.choose(Aim::Backup(0), TimelineChoice::Auto)),
            (1, 0, 1)
        );
        // B1 is on timeline 2's history too; B2 is not.
        assert_eq!(
            picked(s.choose(Aim::Backup(0), TimelineChoice::BlobId(2))),
            (2, 0, 1)
        );
        let m = refused(s.choose(Aim::Backup(1), TimelineChoice::BlobId(2)));
        assert!(m.contains("left timeline 1 at 0/3400000"), "{m}");
        let m = refused(s.choose(Aim::Backup(1), TimelineChoice::BlobId(7)));
        assert!(m.contains("timeline 7 is not in this repository"), "{m}");
    }

    #[test]
    fn time_before_the_fork_goes_to_the_newest_timeline() {
        let mut s = scenario();
        // t=155 is before the fork: the same on both, the newest wins; B1 is the base.
        let c = s
            .choose(Aim::Target(&time(155)), TimelineChoice::Auto)
            .unwrap();
        assert_eq!((c.timeline, c.backup, c.end_segment), (2, 0, 3));
        assert!(c.also.is_empty(), "{c:?}");
    }

    #[test]
    fn time_after_the_fork_on_the_parent_stays_on_the_parent() {
        let mut s = scenario();
        // t=240: timeline 1 was live; timeline 2 only began at t=1000.
        let c = s
            .choose(Aim::Target(&time(240)), TimelineChoice::Auto)
            .unwrap();
        assert_eq!((c.timeline, c.backup, c.end_segment), (1, 0, 4));
        // t=270, after B2 on timeline 1: B2 is the base.
        assert_eq!(
            picked(s.choose(Aim::Target(&time(270)), TimelineChoice::Auto)),
            (1, 1, 5)
        );
        // Asked for explicitly, timeline 2 stops at its first transaction (the fork state).
        assert_eq!(
            picked(s.choose(Aim::Target(&time(240)), TimelineChoice::BlobId(2))),
            (2, 0, 3)
        );
    }

    #[test]
    fn time_on_the_child_after_its_start() {
        let mut s = scenario();
        let c = s
            .choose(Aim::Target(&time(1005)), TimelineChoice::Auto)
            .unwrap();
        assert_eq!((c.timeline, c.backup, c.end_segment), (2, 0, 4));
        // Timeline 1 ends at t=349.
        let m = refused(s.choose(Aim::Target(&time(1005)), TimelineChoice::BlobId(1)));
        assert!(
            m.contains("not reachable on timeline 1: timeline 1: its last archived transaction")
                && m.contains("timeline 2 holds it: use --target-timeline 2"),
            "{m}"
        );
        // After everything: the reason names each timeline's last transaction.
        let m = refused(s.choose(Aim::Target(&time(5000)), TimelineChoice::Auto));
        assert!(
            m.contains("timeline 2 (from timeline 1 at 0/3400000): its last archived transaction is at 2000-01-01T00:17:00Z")
                && m.contains("timeline 1: its last archived transaction is at 2000-01-01T00:05:49Z"),
            "{m}"
        );
    }

    #[test]
    fn time_before_every_backup_is_refused() {
        let mut s = scenario();
        let m = refused(s.choose(Aim::Target(&time(55)), TimelineChoice::Auto));
        assert!(
            m.contains("no backup on its history ends before the target"),
            "{m}"
        );
    }

    #[test]
    fn lsn_targets() {
        let mut s = scenario();
        // Before the fork: the newest timeline.
        assert_eq!(
            picked(s.choose(
                Aim::Target(&Target::Lsn(lsn("0/2000000"))),
                TimelineChoice::Auto
            )),
            (2, 0, 2)
        );
        // After the fork on both timelines: the newest, and timeline 1 is named as the other.
        let c = s
            .choose(
                Aim::Target(&Target::Lsn(lsn("0/3800000"))),
                TimelineChoice::Auto,
            )
            .unwrap();
        assert_eq!((c.timeline, c.backup, c.also.clone()), (2, 0, vec![1]));
        assert_eq!(
            picked(s.choose(
                Aim::Target(&Target::Lsn(lsn("0/3800000"))),
                TimelineChoice::BlobId(1)
            )),
            (1, 0, 3)
        );
        // Beyond timeline 2's WAL: timeline 1 still has segment 6.
        assert_eq!(
            picked(s.choose(
                Aim::Target(&Target::Lsn(lsn("0/6000100"))),
                TimelineChoice::Auto
            )),
            (1, 1, 6)
        );
        let m = refused(s.choose(
            Aim::Target(&Target::Lsn(lsn("0/9000000"))),
            TimelineChoice::Auto,
        ));
        assert!(
            m.contains("its archived WAL ends with segment 000000020000000000000004"),
            "{m}"
        );
    }

    #[test]
    fn restore_points_and_xids_on_the_two_sides_of_a_switchpoint() {
        let mut s = scenario();
        s.fake.points.insert((1, 3), vec![(0x60_0000, "late")]);
        s.fake.points.insert((2, 3), vec![(0x60_0000, "child")]);
        let name = |n: &str| Target::Name(n.into());
        assert_eq!(
            picked(s.choose(Aim::Target(&name("late")), TimelineChoice::Auto)),
            (1, 0, 3)
        );
        assert_eq!(
            picked(s.choose(Aim::Target(&name("child")), TimelineChoice::Auto)),
            (2, 0, 3)
        );
        let m = refused(s.choose(Aim::Target(&name("nowhere")), TimelineChoice::Auto));
        assert!(m.contains("timeline 1: not in its archived WAL"), "{m}");
        // xids of the fake are lsn/1000: timeline 2's own transaction at 0/3500000.
        let xid = ((3 * SEG + 0x50_0000) / 1000) as u32;
        assert_eq!(
            picked(s.choose(Aim::Target(&Target::Xid(xid)), TimelineChoice::Auto)),
            (2, 0, 3)
        );
    }

    #[test]
    fn switchpoint_segment_is_read_from_the_newer_timeline() {
        let s = scenario();
        let a = archive(&s.tree, &[(1, 1..=6), (2, 3..=4)]);
        assert_eq!(a.timeline_of(2, 2), 1);
        assert_eq!(a.timeline_of(2, 3), 2);
        assert_eq!(a.path_end(2), Some(4));
        assert_eq!(a.path_end(1), Some(6));
        // Without timeline 2's copy of segment 3 the path has a gap, though timeline 1 has it.
        let a = archive(&s.tree, &[(1, 1..=6), (2, 4..=4)]);
        assert_eq!(
            a.first_gap(2, 1, 4),
            Some("000000020000000000000003".into())
        );
        assert_eq!(a.first_gap(1, 1, 6), None);
    }

    #[test]
    fn gap_on_the_path_refuses_but_gap_elsewhere_does_not() {
        let mut s = scenario();
        let a = archive(&s.tree, &[(1, 1..=1), (1, 3..=6), (2, 3..=4)]);
        let m = refused(choose(
            &a,
            &s.backups,
            Aim::Target(&time(1005)),
            TimelineChoice::Auto,
            &mut s.fake,
        ));
        assert!(m.contains("000000010000000000000002 is missing"), "{m}");
        // A gap on timeline 1 after the fork is not on timeline 2's path.
        let a = archive(&s.tree, &[(1, 1..=3), (1, 5..=6), (2, 3..=4)]);
        let c = choose(
            &a,
            &s.backups,
            Aim::Target(&time(1005)),
            TimelineChoice::Auto,
            &mut s.fake,
        );
        assert_eq!(picked(c), (2, 0, 4));
        // With no target, a gap only warns.
        let a = archive(&s.tree, &[(1, 1..=2), (2, 4..=4)]);
        let c = choose(&a, &s.backups, Aim::End, TimelineChoice::Auto, &mut s.fake).unwrap();
        assert_eq!(c.stops_early_at, Some("000000020000000000000003".into()));
    }

    #[test]
    fn latest_follows_the_one_leaf() {
        let mut s = scenario();
        // Timeline 2 descends from B1; timeline 1 is its parent, so not a leaf.
        assert_eq!(picked(s.choose(Aim::End, TimelineChoice::Auto)), (2, 0, 4));
        assert_eq!(
            picked(s.choose(Aim::End, TimelineChoice::BlobId(1))),
            (1, 1, 6)
        );
        assert_eq!(
            picked(s.choose(Aim::End, TimelineChoice::Current)),
            (1, 1, 6)
        );
        // Only B2 left: timeline 2 forked before it, so timeline 1 is the latest state.
        s.backups.remove(0);
        assert_eq!(picked(s.choose(Aim::End, TimelineChoice::Auto)), (1, 0, 6));
        let m = refused(s.choose(Aim::End, TimelineChoice::BlobId(2)));
        assert!(
            m.contains("no backup lies on the history of timeline 2"),
            "{m}"
        );
    }

    #[test]
    fn two_siblings() {
        let mut s = scenario();
        s.tree = tree(
            &[(1, ""), (2, "1\t0/3400000\tx\n"), (3, "1\t0/4400000\ty\n")],
            &[],
        );
        s.fake.commits.insert(
            (3, 4),
            vec![
                (0x10, at(230)),
                (0x50_0000, at(1400)),
                (0x60_0000, at(2000)),
            ],
        );
        let a = archive(&s.tree, &[(1, 1..=6), (2, 3..=4), (3, 4..=4)]);
        let m = refused(choose(
            &a,
            &s.backups,
            Aim::End,
            TimelineChoice::Auto,
            &mut s.fake,
        ));
        assert!(m.contains("timelines 2, 3 each branch off"), "{m}");
        assert!(m.contains("--target-timeline"), "{m}");
        // A time on timeline 3 after its start: past timeline 2's end.
        let c = choose(
            &a,
            &s.backups,
            Aim::Target(&time(1500)),
            TimelineChoice::Auto,
            &mut s.fake,
        );
        assert_eq!(picked(c), (3, 0, 4));
        // Between the siblings' starts, timeline 2 holds it (timeline 3's fork gap).
        let c = choose(
            &a,
            &s.backups,
            Aim::Target(&time(1005)),
            TimelineChoice::Auto,
            &mut s.fake,
        );
        assert_eq!(picked(c), (2, 0, 4));
    }

    #[test]
    fn four_deep_and_a_sibling() {
        let mut s = scenario();
        s.tree = tree(
            &[
                (1, ""),
                (2, "1\t0/3400000\tx\n"),
                (3, "1\t0/3400000\tx\n2\t0/4000018\ty\n"),
                (4, "1\t0/3400000\tx\n2\t0/4000018\ty\n3\t0/4000100\tz\n"),
                (5, "1\t0/4400000\tw\n"),
            ],
            &[],
        );
        let a = archive(
            &s.tree,
            &[(1, 1..=6), (2, 3..=4), (3, 4..=4), (4, 4..=4), (5, 4..=4)],
        );
        let m = refused(choose(
            &a,
            &s.backups,
            Aim::End,
            TimelineChoice::Auto,
            &mut s.fake,
        ));
        assert!(m.contains("timelines 4, 5 each branch off"), "{m}");
    }

    #[test]
    fn two_switchpoints_in_one_segment() {
        // Timeline 3 recovered from timeline 2 soon after timeline 2 began, in segment 3.
        let mut s = scenario();
        s.tree = tree(
            &[
                (1, ""),
                (2, "1\t0/3400000\tx\n"),
                (3, "1\t0/3400000\tx\n2\t0/3600000\ty\n"),
            ],
            &[],
        );
        let mut c3 = s.fake.commits[&(2, 3)].clone();
        c3.push((0x70_0000, at(3000)));
        s.fake.commits.insert((3, 3), c3);
        let a = archive(&s.tree, &[(1, 1..=6), (2, 3..=4), (3, 3..=3)]);
        assert_eq!(
            a.switches_in(3, 3),
            vec![(1, lsn("0/3400000")), (2, lsn("0/3600000"))]
        );
        let (b, f) = (&s.backups, &mut s.fake);
        // t=240 is in timeline 2's fork gap, on timeline 3's path too: timeline 1 holds it.
        let c = choose(&a, b, Aim::Target(&time(240)), TimelineChoice::Auto, f);
        assert_eq!(picked(c), (1, 0, 4));
        // t=1000, in timeline 3's fork gap, while timeline 2 goes on: timeline 2's.
        let c = choose(&a, b, Aim::Target(&time(1000)), TimelineChoice::Auto, f);
        assert_eq!(picked(c), (2, 0, 4));
        // t=2000, after timeline 2's end: only timeline 3 reaches it.
        let c = choose(&a, b, Aim::Target(&time(2000)), TimelineChoice::Auto, f);
        assert_eq!(picked(c), (3, 0, 3));
    }

    #[test]
    fn three_deep() {
        let mut s = scenario();
        // Timeline 3 branched from timeline 2 at 0/4000018 (t=1010 is its last before).
        s.tree = tree(
            &[
                (1, ""),
                (2, "1\t0/3400000\tx\n"),
                (3, "1\t0/3400000\tx\n2\t0/4000018\ty\n"),
            ],
            &[],
        );
        s.fake
            .commits
            .insert((3, 4), vec![(0x10, at(1010)), (0x100, at(3000))]);
        s.backups.push(backup(2, "0/4000010", "0/4000014", 1011));
        let a = archive(&s.tree, &[(1, 1..=6), (2, 3..=4), (3, 4..=4)]);
        let (b, f) = (&s.backups, &mut s.fake);
        let c = choose(&a, b, Aim::End, TimelineChoice::Auto, f);
        assert_eq!(picked(c), (3, 2, 4));
        let c = choose(&a, b, Aim::Target(&time(2999)), TimelineChoice::Auto, f);
        assert_eq!(picked(c), (3, 2, 4));
        // Before timeline 2's start: B1 on timeline 1, recovered along timeline 3's path.
        let c = choose(&a, b, Aim::Target(&time(155)), TimelineChoice::Auto, f);
        assert_eq!(picked(c), (3, 0, 3));
        let c = choose(&a, b, Aim::Target(&time(240)), TimelineChoice::Auto, f);
        assert_eq!(picked(c), (1, 0, 4));
        // `current`: the target on the base backup's own timeline (B3, timeline 2).
        let c = choose(&a, b, Aim::Target(&time(1015)), TimelineChoice::Current, f);
        assert_eq!(picked(c), (2, 2, 4));
        let m = refused(choose(
            &a,
            b,
            Aim::Target(&time(2999)),
            TimelineChoice::Current,
            f,
        ));
        assert!(
            m.contains("timeline 3 (from timeline 2 at 0/4000018): no backup"),
            "{m}"
        );
        assert_eq!(a.timeline_of(3, 3), 2);
        assert_eq!(a.timeline_of(3, 4), 3);
    }

    #[test]
    fn missing_history_file() {
        let mut s = scenario();
        s.tree = tree(&[(1, ""), (2, "")], &[2]);
        let a = archive(&s.tree, &[(1, 1..=6), (2, 3..=4)]);
        // Without its history, timeline 2 reaches no backup: timeline 1 decides everything.
        let c = choose(&a, &s.backups, Aim::End, TimelineChoice::Auto, &mut s.fake);
        assert_eq!(picked(c), (1, 1, 6));
        let m = refused(choose(
            &a,
            &s.backups,
            Aim::Target(&time(1005)),
            TimelineChoice::Auto,
            &mut s.fake,
        ));
        assert!(m.contains("timeline 2 (its history file is missing"), "{m}");
    }

    #[test]
    fn unreadable_switchpoint_segment_counts_as_the_new_timeline() {
        let mut s = scenario();
        s.fake.unreadable.insert((2, 3));
        // Whether t=190 is before the fork cannot be told from timeline 2's copy of segment
        // 3, so timeline 2 holds it only weakly, and timeline 1, which holds it, wins.
        let c = s
            .choose(Aim::Target(&time(190)), TimelineChoice::Auto)
            .unwrap();
        assert_eq!((c.timeline, c.end_segment), (1, 3));
        // Before timeline 1's last commit before the switch segment it is still timeline 2's.
        let c = s
            .choose(Aim::Target(&time(120)), TimelineChoice::Auto)
            .unwrap();
        assert_eq!((c.timeline, c.end_segment), (2, 2));
    }

    #[test]
    fn timeline_choice_parses() {
        assert_eq!("latest".parse(), Ok(TimelineChoice::Latest));
        assert_eq!("current".parse(), Ok(TimelineChoice::Current));
        assert_eq!("3".parse(), Ok(TimelineChoice::BlobId(3)));
        assert!("0".parse::<TimelineChoice>().is_err());
        assert!("x".parse::<TimelineChoice>().is_err());
    }
}
