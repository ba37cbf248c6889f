//! The WAL index: per cluster and timeline, one object (`walidx/<system>/<timeline>`) that
//! lists the archived segments as runs, whether the history file is archived, and the
//! segments' summaries (commit times, xids, restore points). Planning reads it instead of
//! listing every WAL key and reading one summary object per segment.
//!
//! Decision: the per-segment objects stay the source of truth, and the index is a cache of
//! them that is never trusted blindly.
//! - `wal-push` writes nothing to it. WAL archived since the index was written is found by
//!   listing each timeline's directory *after* the index's last key (`Backend::list_after`),
//!   and its summaries are read one by one, as before: the tail costs what it costs without
//!   an index, and `check` (or `gc`) folds it into the index.
//! - A reader confirms what the index says is absent or first: the first segment of each
//!   indexed timeline (expire deletes from the front) and both ends of each gap (a late or
//!   out-of-order push fills them) are asked for; if any answer differs, or the object is
//!   missing a field, of another format, cluster or segment size, or unreadable, the index
//!   is bypassed (a full listing, with a warning) until `check` rewrites it.
//! - A timeline newer than every indexed one is found by the listing after the newest
//!   indexed timeline's last key (PostgreSQL numbers a new timeline above every one in the
//!   archive).
//!
//! Writing: `compact` lists everything (as `check` does anyway), reuses the summaries the
//! old index holds, reads only the summary objects it lacks, and replaces the object when
//! its content differs.

use crate::archive::{self, segment_size, System, TimelineWal};
use crate::catalog::{keys, wal, SystemId};
use crate::error::{Error, Result};
use crate::pg::lsn::Lsn;
use crate::pg::wal::WalFile;
use crate::pg::walscan::{RestorePoint, SegmentSummary, TablespaceCreation};
use crate::store::{Repository, StoreError};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// The format written; readers bypass any other.
pub const FORMAT: u32 = 1;

/// One timeline's index object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineIndex {
    /// [`FORMAT`].
    pub format: u32,
    /// The cluster.
    pub system_identifier: SystemId,
    /// The timeline.
    pub timeline: u32,
    /// The cluster's WAL segment size.
    pub wal_segment_size: u64,
    /// The greatest segment or history file name in the timeline's directory when written:
    /// segments archived since sort after it (or fill a gap, which readers check).
    pub through: String,
    /// Whether the timeline's history file is archived.
    pub history: bool,
    /// The archived segments, as inclusive runs `[first, last]`, ascending.
    pub runs: Vec<(u64, u64)>,
    /// The summaries of the segments that have a readable one, ascending.
    pub summaries: Vec<Entry>,
    /// Segments whose summary object could not be read: readers read it themselves.
    pub unreadable: Vec<u64>,
}

/// One segment's summary, as a JSON array: segment number, first and last commit time,
/// smallest and largest xid, end LSN, restore points as `[name, time, lsn]`, and (when the
/// summary knows them) tablespace creations as `[lsn, prev, oid, location]`. An entry of seven
/// elements, written before the eighth existed, knows no creations: readers read the segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry(
    u64,
    Option<i64>,
    Option<i64>,
    Option<u32>,
    Option<u32>,
    u64,
    Vec<(String, i64, u64)>,
    #[serde(default, skip_serializing_if = "Option::is_none")] Option<Vec<Created>>,
);

/// A tablespace creation in an [`Entry`]: LSN and previous record's LSN as numbers, oid,
/// location.
type Created = (u64, u64, u32, Option<String>);

impl Entry {
    fn of(segno: u64, s: &SegmentSummary) -> Entry {
        Entry(
            segno,
            s.first_commit_time,
            s.last_commit_time,
            s.min_commit_xid,
            s.max_commit_xid,
            s.end_lsn.0,
            s.restore_points
                .iter()
                .map(|r| (r.name.clone(), r.time, r.lsn.0))
                .collect(),
            s.tablespaces.as_ref().map(|t| {
                t.iter()
                    .map(|c| (c.lsn.0, c.prev.0, c.oid, c.location.clone()))
                    .collect()
            }),
        )
    }

    fn summary(&self) -> SegmentSummary {
        SegmentSummary {
            first_commit_time: self.1,
            last_commit_time: self.2,
            restore_points: self
                .6
                .iter()
                .map(|(name, time, lsn)| RestorePoint {
                    name: name.clone(),
                    time: *time,
                    lsn: Lsn(*lsn),
                })
                .collect(),
            min_commit_xid: self.3,
            max_commit_xid: self.4,
            end_lsn: Lsn(self.5),
            tablespaces: self.7.as_ref().map(|t| {
                t.iter()
                    .map(|(lsn, prev, oid, location)| TablespaceCreation {
                        lsn: Lsn(*lsn),
                        prev: Lsn(*prev),
                        oid: *oid,
                        location: location.clone(),
                    })
                    .collect()
            }),
        }
    }
}

/// The summaries an index holds for one timeline's segments.
#[derive(Debug, Default)]
pub struct Covered {
    /// Every segment the index lists whose summary it knows, ascending: `None` when it has
    /// none.
    summaries: Vec<(u64, Option<SegmentSummary>)>,
}

impl Covered {
    /// What the index knows of segment `segno`'s summary: `None` when the segment must be
    /// asked for (not covered, or its summary was unreadable).
    pub fn get(&self, segno: u64) -> Option<Option<&SegmentSummary>> {
        let i = self
            .summaries
            .binary_search_by_key(&segno, |(s, _)| *s)
            .ok()?;
        Some(self.summaries[i].1.as_ref())
    }
}

/// Inclusive runs of consecutive numbers, from ascending numbers.
pub fn runs_of(segnos: &[u64]) -> Vec<(u64, u64)> {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for &s in segnos {
        match runs.last_mut() {
            Some((_, last)) if *last + 1 == s => *last = s,
            _ => runs.push((s, s)),
        }
    }
    runs
}

impl TimelineIndex {
    /// Why this object cannot stand for timeline `tli` of `system`, if it cannot.
    fn invalid(&self, system: &System, tli: u32) -> Option<String> {
        // Runs apart and in order; summaries in order.
        let runs_ok = self.runs.iter().all(|(a, b)| a <= b)
            && self.runs.windows(2).all(|w| w[0].1 + 1 < w[1].0);
        let sums_ok = self.summaries.windows(2).all(|w| w[0].0 < w[1].0);
        if self.format != FORMAT {
            Some(format!(
                "format {} (this version reads {FORMAT})",
                self.format
            ))
        } else if self.system_identifier.get() != system.sysid() || self.timeline != tli {
            Some(format!(
                "it describes timeline {} of system {}",
                self.timeline, self.system_identifier
            ))
        } else if self.wal_segment_size != segment_size(system) {
            Some(format!(
                "its segment size {} is not the cluster's",
                self.wal_segment_size
            ))
        } else if !runs_ok || !sums_ok {
            Some("its segments are not in order".into())
        } else {
            None
        }
    }

    fn segnos(&self) -> impl Iterator<Item = u64> + '_ {
        self.runs.iter().flat_map(|(a, b)| *a..=*b)
    }

    fn covered(&self) -> Covered {
        let unreadable: BTreeSet<u64> = self.unreadable.iter().copied().collect();
        let mut entries = self.summaries.iter().peekable();
        let mut summaries = Vec::new();
        for segno in self.segnos() {
            while entries.next_if(|e| e.0 < segno).is_some() {}
            let summary = entries.next_if(|e| e.0 == segno).map(Entry::summary);
            if !unreadable.contains(&segno) {
                summaries.push((segno, summary));
            }
        }
        Covered { summaries }
    }
}

/// The index objects of a cluster, by timeline; `Err` says why one is unusable.
fn load_all(
    repo: &Repository,
    system: &System,
) -> Result<BTreeMap<u32, std::result::Result<TimelineIndex, String>>> {
    let sysid = system.sysid();
    let mut out = BTreeMap::new();
    for key in repo.backend().list(&keys::wal_indexes(sysid))? {
        let Some(tli) = key
            .rsplit('/')
            .next()
            .and_then(|t| u32::from_str_radix(t, 16).ok())
        else {
            continue;
        };
        let index = match repo.get_sealed(&key) {
            Ok(p) => serde_json::from_slice::<TimelineIndex>(&p)
                .map_err(|e| format!("{key} does not parse: {e}"))
                .and_then(|i| match i.invalid(system, tli) {
                    Some(why) => Err(format!("{key}: {why}")),
                    None => Ok(i),
                }),
            Err(StoreError::Corrupt { reason, .. }) => Err(format!("{key} is damaged: {reason}")),
            // Deleted since the listing (a concurrent compaction).
            Err(StoreError::Backend(e)) if e.is_not_found() => continue,
            Err(e) => return Err(e.into()),
        };
        out.insert(tli, index);
    }
    Ok(out)
}

/// The cluster's archived WAL from its index and the files archived since; `None` when
/// there is no index or it must be bypassed (the reason is logged).
pub fn catalog(repo: &Repository, system: &System) -> Result<Option<Vec<TimelineWal>>> {
    let sysid = system.sysid();
    let seg_size = segment_size(system);
    let mut indexes = BTreeMap::new();
    for (tli, index) in load_all(repo, system)? {
        match index {
            Ok(i) => indexes.insert(tli, i),
            Err(why) => return Ok(bypass(sysid, &why)),
        };
    }
    let Some(newest) = indexes.keys().next_back().copied() else {
        return Ok(None);
    };
    let mut by_tli: BTreeMap<u32, Listed> = BTreeMap::new();
    for (tli, index) in &indexes {
        let after = keys::wal_file(sysid, *tli, &index.through);
        let prefix = match *tli == newest {
            // Newer timelines sort after the newest indexed one's keys.
            true => keys::wal_system(sysid),
            false => keys::wal_timeline(sysid, *tli),
        };
        let tail = repo.backend().list_after(&prefix, &after)?;
        by_tli.insert(
            *tli,
            Listed {
                segnos: index.segnos().collect(),
                history: index.history,
                covered: Some(Arc::new(index.covered())),
            },
        );
        for object in tail.into_iter().map(wal::WalObject::of) {
            match WalFile::parse(&object.name, seg_size) {
                Some(WalFile::Segment { tli, segno }) => {
                    by_tli.entry(tli).or_default().segnos.insert(segno);
                }
                Some(WalFile::History { tli }) => by_tli.entry(tli).or_default().history = true,
                _ => {}
            }
        }
    }
    // Confirm what the index says is first or absent.
    for (tli, index) in &indexes {
        let segnos = &by_tli[tli].segnos;
        let name = |segno| WalFile::Segment { tli: *tli, segno }.name(seg_size);
        let mut asks: Vec<(u64, bool)> = Vec::new();
        if let Some((first, _)) = index.runs.first() {
            asks.push((*first, true));
        }
        let listed: Vec<u64> = segnos.iter().copied().collect();
        for w in listed.windows(2).filter(|w| w[1] > w[0] + 1) {
            asks.push((w[0] + 1, false));
            if w[1] - 1 > w[0] + 1 {
                asks.push((w[1] - 1, false));
            }
        }
        for (segno, present) in asks {
            if wal::has_file(repo, sysid, *tli, &name(segno))? != present {
                let why = match present {
                    true => format!("segment {} is gone (expired?)", name(segno)),
                    false => format!("segment {} was archived after it was written", name(segno)),
                };
                return Ok(bypass(sysid, &why));
            }
        }
    }
    Ok(Some(
        by_tli
            .into_iter()
            .map(|(tli, l)| {
                let mut t =
                    archive::timeline_wal(tli, l.segnos.into_iter().collect(), l.history, seg_size);
                t.indexed = l.covered;
                t
            })
            .collect(),
    ))
}

/// One timeline as the index and the listing after it show it.
#[derive(Default)]
struct Listed {
    segnos: BTreeSet<u64>,
    history: bool,
    /// The index's summaries (none for a timeline created since).
    covered: Option<Arc<Covered>>,
}

fn bypass<T>(sysid: u64, why: &str) -> Option<T> {
    tracing::warn!(
        "the WAL index of system {sysid} is not used ({why}): listing the archive instead; \
         `pgsnapfs check` rewrites it"
    );
    None
}

/// What `compact` did for one timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Compacted {
    /// The timeline.
    pub timeline: u32,
    /// Segments the index now lists.
    pub segments: usize,
    /// Summary objects read (the ones the old index lacked).
    pub summaries_read: usize,
    /// What was done.
    pub outcome: Outcome,
}

/// What `compact` did to a timeline's index object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It was up to date.
    UpToDate,
    /// It was written for the first time.
    Created,
    /// WAL archived since it was written was added to it.
    Extended,
    /// It disagreed with the archive beyond new WAL (expired or late segments), and was rewritten.
    Repaired,
    /// It could not be read (damaged, unknown format, another cluster's), and was rewritten.
    Replaced(String),
    /// The timeline has no WAL left, and its index object was deleted.
    Deleted,
}

impl std::fmt::Display for Compacted {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let tli = self.timeline;
        match &self.outcome {
            Outcome::UpToDate => write!(f, "timeline {tli}: up to date"),
            Outcome::Created => write!(f, "timeline {tli}: written"),
            Outcome::Extended => write!(f, "timeline {tli}: WAL archived since added"),
            Outcome::Repaired => write!(f, "timeline {tli}: stale, rewritten"),
            Outcome::Replaced(why) => write!(f, "timeline {tli}: unusable ({why}), rewritten"),
            Outcome::Deleted => write!(f, "timeline {tli}: no WAL left, deleted"),
        }?;
        if !matches!(self.outcome, Outcome::Deleted) {
            write!(
                f,
                " ({} segments, {} summaries read)",
                self.segments, self.summaries_read
            )?;
        }
        Ok(())
    }
}

/// Rewrites the index objects of a cluster that differ from its archived WAL, reading only
/// the summaries they lack. Lists every WAL and summary key of the cluster.
pub fn compact(repo: &Repository, system: &System) -> Result<Vec<Compacted>> {
    let sysid = system.sysid();
    let seg_size = segment_size(system);
    let mut old = load_all(repo, system)?;
    let mut dirs: BTreeMap<u32, (Vec<u64>, bool, String)> = BTreeMap::new();
    for object in wal::files(repo, sysid)? {
        let Some(file) = WalFile::parse(&object.name, seg_size) else {
            continue;
        };
        let d = dirs.entry(file.tli()).or_default();
        // Only segments and history files move `through`: a `.partial` or `.backup` file sorts
        // after the segment it belongs to, which may be archived after it.
        match file {
            WalFile::Segment { segno, .. } => d.0.push(segno),
            WalFile::History { .. } => d.1 = true,
            _ => continue,
        }
        d.2 = d.2.clone().max(object.name.clone());
    }
    let summarized: BTreeSet<(u32, u64)> = wal::summaries(repo, sysid)?
        .iter()
        .filter_map(|o| match WalFile::parse(&o.name, seg_size)? {
            WalFile::Segment { tli, segno } => Some((tli, segno)),
            _ => None,
        })
        .collect();
    let mut out = Vec::new();
    for (tli, (mut segnos, history, through)) in dirs {
        segnos.sort_unstable();
        let previous = old.remove(&tli);
        let known: HashMap<u64, &Entry> = match &previous {
            Some(Ok(p)) => p.summaries.iter().map(|e| (e.0, e)).collect(),
            _ => HashMap::new(),
        };
        let mut next = TimelineIndex {
            format: FORMAT,
            system_identifier: SystemId(sysid),
            timeline: tli,
            wal_segment_size: seg_size,
            through,
            history,
            runs: runs_of(&segnos),
            summaries: Vec::new(),
            unreadable: Vec::new(),
        };
        let wanted: Vec<u64> = segnos
            .iter()
            .copied()
            .filter(|s| summarized.contains(&(tli, *s)))
            .collect();
        let lacking: Vec<u64> = wanted
            .iter()
            .copied()
            .filter(|s| !known.contains_key(s))
            .collect();
        let read = lacking.len();
        let mut fetched = read_summaries(repo, sysid, tli, &lacking, seg_size)?.into_iter();
        for segno in wanted {
            match known.get(&segno) {
                Some(e) => next.summaries.push((*e).clone()),
                None => match fetched.next() {
                    Some(Read::Found(s)) => next.summaries.push(Entry::of(segno, &s)),
                    Some(Read::Absent) | None => {}
                    Some(Read::Unreadable) => next.unreadable.push(segno),
                },
            }
        }
        let outcome = match &previous {
            None => Outcome::Created,
            Some(Err(why)) => Outcome::Replaced(why.clone()),
            Some(Ok(p)) if *p == next => Outcome::UpToDate,
            Some(Ok(p)) if p.segnos().all(|s| segnos.binary_search(&s).is_ok()) => {
                Outcome::Extended
            }
            Some(Ok(_)) => Outcome::Repaired,
        };
        if outcome != Outcome::UpToDate {
            let json = serde_json::to_vec(&next).expect("an index serializes");
            repo.replace_sealed(&keys::wal_index(sysid, tli), &json)?;
        }
        out.push(Compacted {
            timeline: tli,
            segments: segnos.len(),
            summaries_read: read,
            outcome,
        });
    }
    // Timelines whose WAL is all gone (expired).
    for tli in old.into_keys() {
        match repo.backend().delete(&keys::wal_index(sysid, tli)) {
            Err(e) if !e.is_not_found() => return Err(StoreError::from(e).into()),
            _ => {}
        }
        out.push(Compacted {
            timeline: tli,
            segments: 0,
            summaries_read: 0,
            outcome: Outcome::Deleted,
        });
    }
    Ok(out)
}

/// A push of the last segment of each run of this many extends the index (`after_push`).
pub const RUN: u64 = 256;

/// Folds the WAL archived since into each indexed timeline's index, without listing the
/// archive: what `catalog` reads, plus the summaries of the new segments, plus one write per
/// timeline that changed. Nothing when there is no usable index (a first index, or a repair,
/// needs `compact`).
pub fn extend(repo: &Repository, system: &System) -> Result<Vec<Compacted>> {
    let sysid = system.sysid();
    let seg_size = segment_size(system);
    let Some(catalog) = catalog(repo, system)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for t in catalog {
        // A timeline created since the index was written has none yet: its first.
        let covered = t.indexed.as_deref();
        let tli = t.timeline;
        let fresh: Vec<u64> = t
            .segnos
            .iter()
            .copied()
            .filter(|s| covered.is_none_or(|c| c.get(*s).is_none()))
            .collect();
        if fresh.is_empty() && covered.is_some() {
            continue;
        }
        let mut next = TimelineIndex {
            format: FORMAT,
            system_identifier: SystemId(sysid),
            timeline: tli,
            wal_segment_size: seg_size,
            through: t.last.clone().unwrap_or_default(),
            history: t.history,
            runs: runs_of(&t.segnos),
            summaries: Vec::new(),
            unreadable: Vec::new(),
        };
        if next.through.is_empty() && t.history {
            next.through = WalFile::History { tli }.name(seg_size);
        }
        let mut fetched = read_summaries(repo, sysid, tli, &fresh, seg_size)?.into_iter();
        for &segno in &t.segnos {
            match covered.and_then(|c| c.get(segno)) {
                Some(Some(s)) => next.summaries.push(Entry::of(segno, s)),
                Some(None) => {}
                None => match fetched.next() {
                    Some(Read::Found(s)) => next.summaries.push(Entry::of(segno, &s)),
                    Some(Read::Absent) | None => {}
                    Some(Read::Unreadable) => next.unreadable.push(segno),
                },
            }
        }
        let json = serde_json::to_vec(&next).expect("an index serializes");
        repo.replace_sealed(&keys::wal_index(sysid, tli), &json)?;
        out.push(Compacted {
            timeline: tli,
            segments: t.segnos.len(),
            summaries_read: fresh.len(),
            outcome: match covered {
                Some(_) => Outcome::Extended,
                None => Outcome::Created,
            },
        });
    }
    Ok(out)
}

/// How many summary objects are read at once: a request to S3 costs about 13 ms, mostly
/// waiting, so a run of [`RUN`] costs about 16 round trips, not 256.
const PARALLEL_READS: usize = 16;

/// What reading one summary object gave.
enum Read {
    Found(SegmentSummary),
    /// Missing, or it does not parse.
    Absent,
    /// It fails its checksum: the index lists the segment as unreadable.
    Unreadable,
}

/// The summaries of segments `segnos` of timeline `tli`, in order, read [`PARALLEL_READS`]
/// at a time. An error other than a failed checksum fails it all.
fn read_summaries(
    repo: &Repository,
    sysid: u64,
    tli: u32,
    segnos: &[u64],
    seg_size: u64,
) -> Result<Vec<Read>> {
    let chunk = segnos.len().div_ceil(PARALLEL_READS).max(1);
    std::thread::scope(|s| {
        let workers: Vec<_> = segnos
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(
                            |&segno| match archive::summary(repo, sysid, tli, segno, seg_size) {
                                Ok(Some(found)) => Ok(Read::Found(found)),
                                Ok(None) => Ok(Read::Absent),
                                Err(Error::Store(StoreError::Corrupt { .. })) => {
                                    Ok(Read::Unreadable)
                                }
                                Err(e) => Err(e),
                            },
                        )
                        .collect::<Result<Vec<_>>>()
                })
            })
            .collect();
        let mut out = Vec::with_capacity(segnos.len());
        for w in workers {
            out.extend(
                w.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?,
            );
        }
        Ok(out)
    })
}

/// The first index of a cluster is written by a push when the cluster holds at most this
/// many WAL files: listing them and reading their summaries is then cheap. A larger archive
/// without an index waits for `check`.
const FIRST_INDEX_MAX: usize = 2 * RUN as usize;

/// Writes the first WAL index of a cluster that has none, when its archive is small
/// ([`FIRST_INDEX_MAX`] files): one listing of the index prefix, one of the WAL, and (for
/// `compact`) a second of the WAL and one of the summaries, plus the summary reads.
fn first_index(repo: &Repository, system: &System) -> Result<Vec<Compacted>> {
    let sysid = system.sysid();
    if !repo.backend().list(&keys::wal_indexes(sysid))?.is_empty() {
        // An index that must be bypassed: check rewrites it.
        return Ok(Vec::new());
    }
    let files = repo.backend().list(&keys::wal_system(sysid))?.len();
    if files > FIRST_INDEX_MAX {
        tracing::info!(
            "system {sysid} has {files} archived WAL files and no WAL index: `pgsnapfs check` \
             writes it"
        );
        return Ok(Vec::new());
    }
    compact(repo, system)
}

/// After `expire` deleted WAL of cluster `system`: rewrites the index objects it has, so they
/// list no deleted segment (readers would bypass them until then). Nothing when it has none.
pub fn after_expire(repo: &Repository, system: &System) -> Result<Vec<Compacted>> {
    if repo
        .backend()
        .list(&keys::wal_indexes(system.sysid()))?
        .is_empty()
    {
        return Ok(Vec::new());
    }
    compact(repo, system)
}

/// After `wal-push` stored segment `name` (of `seg_size` bytes) of cluster `sysid`: when it
/// ends a run of [`RUN`] segments, extends the index, so the tail planning reads one by one
/// stays short between checks. Costs that push what `catalog` costs, plus a GET per segment
/// since the last extension and one write; the other pushes pay nothing (not a request).
/// Never fails the push: a failure is logged, and the next extension or `check` catches up.
pub fn after_push(repo: &Repository, sysid: u64, seg_size: u64, name: &str) {
    match WalFile::parse(name, seg_size) {
        Some(WalFile::Segment { segno, .. }) if segno % RUN == RUN - 1 => {}
        _ => return,
    }
    let extended = archive::load_system(repo, sysid)
        .map_err(Error::from)
        .and_then(|system| match system {
            Some(system) => match extend(repo, &system)? {
                done if done.is_empty() => first_index(repo, &system),
                done => Ok(done),
            },
            None => Ok(Vec::new()),
        });
    match extended {
        Ok(done) => done
            .iter()
            .for_each(|d| tracing::info!("WAL index of system {sysid}, {d}")),
        Err(e) => tracing::warn!(
            "{name} is archived, but the WAL index of system {sysid} was not extended: {e}"
        ),
    }
}

/// Writes the index of one timeline from given segments and summaries, as `compact` would
/// from the archive (for tools and tests that build large archives without listing them).
pub fn write(
    repo: &Repository,
    system: &System,
    tli: u32,
    segnos: &[u64],
    history: bool,
    summaries: &[(u64, SegmentSummary)],
) -> Result<()> {
    let seg_size = segment_size(system);
    let through = segnos
        .last()
        .map(|s| WalFile::Segment { tli, segno: *s }.name(seg_size))
        .unwrap_or_default();
    let index = TimelineIndex {
        format: FORMAT,
        system_identifier: SystemId(system.sysid()),
        timeline: tli,
        wal_segment_size: seg_size,
        through,
        history,
        runs: runs_of(segnos),
        summaries: summaries
            .iter()
            .map(|(s, sum)| Entry::of(*s, sum))
            .collect(),
        unreadable: Vec::new(),
    };
    let json = serde_json::to_vec(&index).expect("an index serializes");
    Ok(repo.replace_sealed(&keys::wal_index(system.sysid(), tli), &json)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::wal::DEFAULT_SEG_SIZE;
    use crate::store::backend::{memory::MemoryBackend, Backend};
    use chrono::Utc;

    fn system() -> System {
        System {
            system_identifier: SystemId(7),
            pg_major: 15,
            wal_segment_size: DEFAULT_SEG_SIZE,
            registered: Utc::now(),
        }
    }

    fn sum(t: i64) -> SegmentSummary {
        SegmentSummary {
            first_commit_time: Some(t),
            last_commit_time: Some(t + 5),
            restore_points: vec![RestorePoint {
                name: format!("rp{t}"),
                time: t,
                lsn: Lsn(t as u64),
            }],
            min_commit_xid: Some(t as u32),
            max_commit_xid: Some(t as u32 + 1),
            end_lsn: Lsn(99),
            tablespaces: Some(vec![TablespaceCreation {
                lsn: Lsn(t as u64 + 1),
                prev: Lsn(t as u64),
                oid: 16_385,
                location: Some(format!("/srv/ts{t}")),
            }]),
        }
    }

    /// Archives segment `segno` of `tli` with a summary, as wal-push leaves it.
    fn push(repo: &Repository, tli: u32, segno: u64) {
        let name = WalFile::Segment { tli, segno }.name(DEFAULT_SEG_SIZE);
        let json = serde_json::to_vec(&sum(segno as i64 * 10)).unwrap();
        repo.put_sealed(&keys::wal_summary(7, tli, &name), &json)
            .unwrap();
        repo.put_sealed(&keys::wal_file(7, tli, &name), b"w")
            .unwrap();
    }

    fn segnos(c: &[TimelineWal]) -> Vec<(u32, Vec<u64>, bool)> {
        c.iter()
            .map(|t| (t.timeline, t.segnos.clone(), t.history))
            .collect()
    }

    #[test]
    fn runs_and_entries_round_trip() {
        assert_eq!(runs_of(&[1, 2, 3, 5, 7, 8]), vec![(1, 3), (5, 5), (7, 8)]);
        assert!(runs_of(&[]).is_empty());
        let s = sum(40);
        assert_eq!(Entry::of(4, &s).summary(), s);
        // An entry written before tablespace creations were kept: they are unknown.
        let old: Entry = serde_json::from_str(r#"[4,40,45,40,41,99,[["rp40",40,40]]]"#).unwrap();
        let unknown = SegmentSummary {
            tablespaces: None,
            ..s.clone()
        };
        assert_eq!(old.summary(), unknown);
        assert_eq!(
            serde_json::to_string(&Entry::of(4, &unknown)).unwrap(),
            r#"[4,40,45,40,41,99,[["rp40",40,40]]]"#
        );
        assert!(serde_json::to_string(&Entry::of(4, &s))
            .unwrap()
            .ends_with(r#"[[41,40,16385,"/srv/ts40"]]]"#));
    }

    #[test]
    fn a_push_ending_a_run_extends_the_index() {
        let repo = Repository::init(Arc::new(MemoryBackend::default()), 65536, 3).unwrap();
        let sys = system();
        archive::register_system(&repo, &sys).unwrap();
        let name = |s| WalFile::Segment { tli: 1, segno: s }.name(DEFAULT_SEG_SIZE);
        for s in 1..=10 {
            push(&repo, 1, s);
        }
        // No index yet, a small archive: a run's end writes the first one.
        after_push(&repo, 7, DEFAULT_SEG_SIZE, &name(RUN - 1));
        let first = catalog(&repo, &sys).unwrap().expect("the first index");
        assert_eq!(first[0].segnos, (1..=10).collect::<Vec<_>>());
        for s in 11..=RUN + 5 {
            push(&repo, 1, s);
            after_push(&repo, 7, DEFAULT_SEG_SIZE, &name(s));
        }
        let stored = |r: &Repository| {
            serde_json::from_slice::<TimelineIndex>(&r.get_sealed(&keys::wal_index(7, 1)).unwrap())
                .unwrap()
        };
        let index = stored(&repo);
        assert_eq!(
            index.through,
            name(RUN - 1),
            "extended at the run's end only"
        );
        assert_eq!(index.runs, vec![(1, RUN - 1)]);
        assert_eq!(index.summaries.len() as u64, RUN - 1);
        assert_eq!(index.summaries[20], Entry::of(21, &sum(210)));
        let c = catalog(&repo, &sys).unwrap().unwrap();
        assert_eq!(c[0].segnos, (1..=RUN + 5).collect::<Vec<_>>());
        assert_eq!(extend(&repo, &sys).unwrap()[0].summaries_read, 6);
        assert!(extend(&repo, &sys).unwrap().is_empty(), "nothing new");
        // An extended index is the one check would write.
        assert_eq!(compact(&repo, &sys).unwrap()[0].outcome, Outcome::UpToDate);
        assert_eq!(stored(&repo).runs, vec![(1, RUN + 5)]);
        // A new timeline gets its first index with the next run's end.
        for s in 2 * RUN - 3..2 * RUN {
            push(&repo, 2, s);
        }
        repo.put_sealed(&keys::wal_file(7, 2, "00000002.history"), b"h")
            .unwrap();
        let name2 = WalFile::Segment {
            tli: 2,
            segno: 2 * RUN - 1,
        }
        .name(DEFAULT_SEG_SIZE);
        after_push(&repo, 7, DEFAULT_SEG_SIZE, &name2);
        let done = compact(&repo, &sys).unwrap();
        assert_eq!(done[1].outcome, Outcome::UpToDate, "{done:?}");
    }

    #[test]
    fn a_large_archive_without_an_index_waits_for_check() {
        let repo = Repository::init(Arc::new(MemoryBackend::default()), 65536, 3).unwrap();
        let sys = system();
        archive::register_system(&repo, &sys).unwrap();
        for s in 0..=FIRST_INDEX_MAX as u64 {
            let name = WalFile::Segment { tli: 1, segno: s }.name(DEFAULT_SEG_SIZE);
            repo.put_sealed(&keys::wal_file(7, 1, &name), b"w").unwrap();
        }
        let name = WalFile::Segment {
            tli: 1,
            segno: 3 * RUN - 1,
        }
        .name(DEFAULT_SEG_SIZE);
        after_push(&repo, 7, DEFAULT_SEG_SIZE, &name);
        assert!(catalog(&repo, &sys).unwrap().is_none());
    }

    #[test]
    fn the_index_agrees_with_the_listing_or_is_bypassed() {
        let mem = Arc::new(MemoryBackend::default());
        let repo = Repository::init(mem.clone(), 65536, 3).unwrap();
        let sys = system();
        for s in [1, 2, 3, 5] {
            push(&repo, 1, s);
        }
        assert!(catalog(&repo, &sys).unwrap().is_none(), "no index yet");
        let done = compact(&repo, &sys).unwrap();
        assert_eq!(done[0].outcome, Outcome::Created);
        assert_eq!(done[0].summaries_read, 4);
        let listed = |r: &Repository| segnos(&archive::catalog_listed(r, &sys).unwrap());
        let indexed = |r: &Repository| catalog(r, &sys).unwrap().map(|c| segnos(&c));
        assert_eq!(indexed(&repo), Some(listed(&repo)));
        let c = catalog(&repo, &sys).unwrap().unwrap();
        let covered = c[0].indexed.as_ref().unwrap();
        assert_eq!(covered.get(3), Some(Some(&sum(30))));
        assert_eq!(covered.get(4), None);

        // A partial and a backup file sort after their segment, which may come later.
        repo.put_sealed(
            &keys::wal_file(7, 1, "000000010000000000000006.partial"),
            b"p",
        )
        .unwrap();
        repo.put_sealed(
            &keys::wal_file(7, 1, "000000010000000000000006.00000028.backup"),
            b"b",
        )
        .unwrap();
        assert_eq!(compact(&repo, &sys).unwrap()[0].outcome, Outcome::UpToDate);
        // WAL archived since, on this timeline and a new one: the tail listing finds it.
        push(&repo, 1, 6);
        push(&repo, 2, 6);
        repo.put_sealed(&keys::wal_file(7, 2, "00000002.history"), b"h")
            .unwrap();
        assert_eq!(indexed(&repo), Some(listed(&repo)));
        let c = catalog(&repo, &sys).unwrap().unwrap();
        assert_eq!(
            c[0].indexed.as_ref().unwrap().get(6),
            None,
            "read from its object"
        );
        assert!(c[1].indexed.is_none() && c[1].history);
        let done = compact(&repo, &sys).unwrap();
        assert_eq!(
            done.iter().map(|c| c.outcome.clone()).collect::<Vec<_>>(),
            [Outcome::Extended, Outcome::Created]
        );
        assert_eq!(done[0].summaries_read, 1, "only the new summary is read");
        assert_eq!(compact(&repo, &sys).unwrap()[0].outcome, Outcome::UpToDate);

        // A gap filled late: confirmed, so the index is bypassed.
        push(&repo, 1, 4);
        assert_eq!(indexed(&repo), None);
        assert_eq!(compact(&repo, &sys).unwrap()[0].outcome, Outcome::Extended);
        assert_eq!(indexed(&repo), Some(listed(&repo)));

        // Expired from the front: bypassed, then repaired.
        for s in [1, 2] {
            let name = WalFile::Segment { tli: 1, segno: s }.name(DEFAULT_SEG_SIZE);
            mem.delete(&keys::wal_file(7, 1, &name)).unwrap();
        }
        assert_eq!(indexed(&repo), None);
        assert_eq!(compact(&repo, &sys).unwrap()[0].outcome, Outcome::Repaired);
        assert_eq!(indexed(&repo), Some(listed(&repo)));

        // Damaged: bypassed, then replaced.
        mem.tamper(&keys::wal_index(7, 1), |b| {
            let n = b.len();
            b[n - 1] ^= 1
        });
        assert_eq!(indexed(&repo), None);
        assert!(matches!(
            compact(&repo, &sys).unwrap()[0].outcome,
            Outcome::Replaced(_)
        ));
        assert_eq!(indexed(&repo), Some(listed(&repo)));

        // Another cluster's object, or another format: bypassed.
        let mut other = serde_json::from_slice::<TimelineIndex>(
            &repo.get_sealed(&keys::wal_index(7, 1)).unwrap(),
        )
        .unwrap();
        other.format = 2;
        repo.replace_sealed(&keys::wal_index(7, 1), &serde_json::to_vec(&other).unwrap())
            .unwrap();
        assert_eq!(indexed(&repo), None);
        compact(&repo, &sys).unwrap();

        // All WAL of timeline 2 expired: its index object goes.
        for k in mem.list("wal/7/00000002/").unwrap() {
            mem.delete(&k).unwrap();
        }
        let done = compact(&repo, &sys).unwrap();
        assert_eq!(done.last().unwrap().outcome, Outcome::Deleted);
        assert!(!mem.exists(&keys::wal_index(7, 2)).unwrap());
        assert_eq!(indexed(&repo), Some(listed(&repo)));
    }
}
