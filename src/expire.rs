//! `expire`: deletes the backups a retention policy does not keep, and the WAL no kept backup
//! needs. Packs are left to gc.
//!
//! A backup disappears atomically with its manifest. WAL is decided per timeline
//! (`wal_to_keep`, pure): each kept backup keeps the WAL recovery from it reads toward every
//! timeline whose history holds the backup's end: on its own timeline from its start, on
//! each descendant from the switch segment, and on an ancestor of the path only up to where the
//! path leaves it. Everything else goes, so the WAL of an abandoned timeline (the old
//! primary's after a recovery, a stray test restore's) stays exactly as long as a kept backup
//! can reach it. On one timeline this is "everything from the oldest kept backup's start on".
//! A timeline whose history file is missing keeps everything from the oldest kept backup's
//! start (its place in the tree is unknown). History files are always kept (they are tiny,
//! and recovery to a later timeline reads all of them). Backups marked with `backup-keep`, and
//! backups pinned by a running mount, verify or restore, are kept.

use crate::archive::{self, System};
use crate::catalog::{keys, wal, Backups, SystemId};
use crate::error::{Error, Result};
use crate::lock::{self, Lease};
use crate::pg::history::TimelineTree;
use crate::pg::wal::{segment_name, segment_of, segment_start, WalFile};
use crate::retention::{self, Candidate, Policy, Reason};
use crate::store::{Repository, StoreError};
use crate::timelines::BackupPoint;
use crate::verified;
use crate::walindex;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// The decision on one backup.
#[derive(Debug, Serialize)]
pub struct Verdict {
    /// The backup's id.
    pub id: String,
    /// Its cluster's system identifier.
    pub system_identifier: String,
    /// When it finished.
    pub stop_time: DateTime<Utc>,
    /// Whether it is kept.
    pub keep: bool,
    /// Why it is kept; empty for a backup that goes.
    pub reasons: Vec<Reason>,
}

/// The WAL decision on one cluster.
#[derive(Debug, Serialize)]
pub struct WalCut {
    /// The cluster's system identifier.
    pub system_identifier: String,
    /// Where the oldest kept backup starts: nothing before it is kept, on any timeline.
    pub keep_from: String,
    /// WAL files removed (or, in a dry run, to be removed) on every timeline.
    pub files_removed: u64,
    /// Markers of dropped WAL (`waldrop/`) removed (or to be): those of WAL no longer kept.
    pub drop_markers_removed: u64,
    /// Pieces of streamed segments (`walstream/`) removed (or to be): those of segments
    /// archived since (a receiver killed before it deleted them) or no longer kept.
    pub stream_pieces_removed: u64,
    /// What is kept and removed on each timeline, and why.
    pub timelines: Vec<TimelineCut>,
}

/// The WAL decision on one timeline.
#[derive(Debug, Serialize)]
pub struct TimelineCut {
    /// The timeline's id.
    pub timeline: u32,
    /// The first segment kept (to the end of the timeline); None: nothing is kept.
    pub keep_from: Option<String>,
    /// The kept backups that reach this timeline.
    pub keep_for: Vec<String>,
    /// Other reasons it is kept from the oldest kept backup's start on.
    pub held: Vec<Hold>,
    /// WAL files removed (or to be removed) on this timeline.
    pub files_removed: u64,
    /// Why what goes, goes.
    pub why: String,
}

/// Why a timeline's WAL is kept from the oldest kept backup's start on, whether or not a
/// kept backup reaches it: what it is needed for is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Hold {
    /// Its history file is missing, so where it branched is unknown.
    HistoryMissing,
    /// A backup is running (or a lease cannot be read): its WAL may be on any timeline.
    BackupRunning,
}

impl std::fmt::Display for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Hold::HistoryMissing => "its history file is missing",
            Hold::BackupRunning => "a backup is running",
        })
    }
}

/// What to keep of one timeline: segment `from` to its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keep {
    /// The first segment number kept.
    pub from: u64,
    /// The kept backups whose recovery can follow this timeline.
    pub backups: BTreeSet<String>,
    /// The other reasons to keep it (see [`Hold`]).
    pub held: BTreeSet<Hold>,
}

/// The WAL to keep per timeline, given the tree, the timelines holding WAL and the kept
/// backups. A kept backup reaches every timeline whose history holds its end: its own from
/// its start, and each descendant from its switch segment (every timeline on the path to a
/// descendant is itself reached, so each is kept to its end). A timeline no kept backup
/// reaches keeps nothing, unless it is held (`Hold`): then, as without timeline
/// information, from the oldest kept backup's start on. `backup_running`: a backup not yet
/// published may need WAL on any timeline.
pub fn wal_to_keep(
    tree: &TimelineTree,
    timelines: &[u32],
    kept: &[BackupPoint],
    backup_running: bool,
    seg_size: u64,
) -> BTreeMap<u32, Keep> {
    let mut out: BTreeMap<u32, Keep> = BTreeMap::new();
    let mut add = |tli: u32, from: u64, backup: Option<&str>, hold: Option<Hold>| {
        let k = out.entry(tli).or_insert(Keep {
            from,
            backups: BTreeSet::new(),
            held: BTreeSet::new(),
        });
        k.from = k.from.min(from);
        k.backups.extend(backup.map(str::to_string));
        k.held.extend(hold);
    };
    let targets: BTreeSet<u32> = timelines
        .iter()
        .copied()
        .chain(kept.iter().map(|k| k.timeline))
        .collect();
    for k in kept {
        for &tli in &targets {
            if let Some(from) = k.first_read_on(tree, tli, seg_size) {
                add(tli, from, Some(&k.id), None);
            }
        }
    }
    if let Some(oldest) = kept.iter().map(|k| segment_of(k.start_lsn, seg_size)).min() {
        for &tli in &tree.missing {
            add(tli, oldest, None, Some(Hold::HistoryMissing));
        }
        if backup_running {
            for &tli in &targets {
                add(tli, oldest, None, Some(Hold::BackupRunning));
            }
        }
    }
    out
}

/// What `expire` decided and did.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Nothing was deleted: the report says what would be.
    pub dry_run: bool,
    /// Every backup, with its verdict.
    pub backups: Vec<Verdict>,
    /// The WAL decision per cluster.
    pub wal: Vec<WalCut>,
    /// Manifests that could not be read: never expired, and while any exists no WAL is
    /// removed, since their needs are unknown.
    pub unreadable: Vec<String>,
    /// Records of earlier verify runs (`verified/`) of backups that are gone, deleted (or,
    /// in a dry run, to be deleted).
    pub verification_records_removed: usize,
}

/// `keep/<backup>`: the mark set by `pgsnapfs backup-keep`.
#[derive(Debug, Serialize, Deserialize)]
struct Mark {
    backup: String,
    marked: DateTime<Utc>,
}

/// Marks a backup so expire never deletes it, or (`on == false`) removes the mark.
pub fn mark(repo: &Repository, id: &str, on: bool) -> Result<()> {
    if !on {
        if !repo.has_keep_mark(id)? {
            return Err(Error::NotFound(format!(
                "backup {id} is not marked to keep"
            )));
        }
        return Ok(repo.delete_keep_mark(id)?);
    }
    repo.load_snapshot(id)?;
    if repo.has_keep_mark(id)? {
        return Ok(());
    }
    let json = serde_json::to_vec_pretty(&Mark {
        backup: id.to_string(),
        marked: Utc::now(),
    })
    .expect("mark serializes");
    Ok(repo.put_keep_mark(id, &json)?)
}

/// The ids of the backups marked to keep.
pub fn marks(repo: &Repository) -> Result<HashSet<String>> {
    Ok(repo.keep_marks()?.into_iter().collect())
}

/// Backups pinned by live leases, with every lease that pins them (a clone's, and its
/// mount's); an unreadable lease stops expire.
fn pins(repo: &Repository) -> Result<HashMap<String, String>> {
    let mut out: HashMap<String, String> = HashMap::new();
    for r in lock::live(repo)? {
        for id in &r.pins {
            let by = format!("{} (lease {})", r.command, r.id);
            out.entry(id.clone())
                .and_modify(|all| *all = format!("{all}, {by}"))
                .or_insert(by);
        }
    }
    Ok(out)
}

/// Applies `policy`. `lease` is expire's exclusive lease (none for a dry run).
pub fn run(
    repo: &Repository,
    policy: &Policy,
    dry_run: bool,
    lease: Option<&Lease>,
) -> Result<Report> {
    let mut backups = Vec::new();
    let mut unreadable = Vec::new();
    let ids = repo.snapshot_ids()?;
    for id in ids.iter().cloned() {
        match repo.load_snapshot(&id) {
            Ok(s) => backups.push(s),
            Err(StoreError::NoSuchBackup(_)) => {}
            Err(e) => {
                tracing::warn!("backup {id} is unreadable and is left alone: {e}");
                unreadable.push(id);
            }
        }
    }
    let candidates: Vec<Candidate> = backups
        .iter()
        .map(|s| Candidate {
            id: s.id.clone(),
            system: s.sysid(),
            stop_time: s.stop_time,
            from_archive: s.from_archive.is_some(),
        })
        .collect();
    let verdicts = retention::decide(&candidates, policy, Utc::now(), &marks(repo)?, &pins(repo)?);
    backups.sort_by(|a, b| (a.stop_time, &a.id).cmp(&(b.stop_time, &b.id)));
    let doomed: Vec<String> = backups
        .iter()
        .filter(|s| verdicts[&s.id].is_empty())
        .map(|s| s.id.clone())
        .collect();
    let held = || lease.map_or(Ok(()), Lease::ensure_held);
    if !dry_run && !doomed.is_empty() {
        held()?;
        crate::gc::void_trash(repo, &doomed)?;
        for id in &doomed {
            held()?;
            repo.delete_snapshot(id)?;
            tracing::info!(backup = %id, "expired");
        }
    }
    // Verification records go after their backups' manifests: a killed run leaves at worst a
    // record of a gone backup, which verify ignores and the next run deletes.
    let staying: HashSet<String> = ids.into_iter().filter(|id| !doomed.contains(id)).collect();
    let records = verified::orphaned(repo.backend().list(keys::VERIFIED)?, &staying);
    if !dry_run {
        for key in &records {
            held()?;
            match repo.backend().delete(key) {
                Err(e) if !e.is_not_found() => return Err(StoreError::from(e).into()),
                _ => tracing::info!(record = %key, "deleted the verification record"),
            }
        }
    }

    // WAL: per cluster, what the kept backups reach. A running backup is not published yet:
    // an unreadable lease may be one.
    let running = lock::list(repo)?
        .into_iter()
        .any(|f| !f.stale && !matches!(&f.record, Ok(r) if r.command != "backup"));
    let mut kept_by_system: BTreeMap<u64, Vec<&crate::catalog::Snapshot>> = BTreeMap::new();
    for s in backups.iter().filter(|s| !verdicts[&s.id].is_empty()) {
        kept_by_system.entry(s.sysid()).or_default().push(s);
    }
    let mut wal = Vec::new();
    if unreadable.is_empty() {
        for (sysid, kept) in kept_by_system {
            let system = archive::load_system(repo, sysid)?.unwrap_or_else(|| System {
                system_identifier: SystemId(sysid),
                pg_major: 0,
                wal_segment_size: kept[0].wal_segment_size,
                registered: Utc::now(),
            });
            let seg_size = archive::segment_size(&system);
            let catalog = archive::catalog(repo, &system)?;
            let tree = archive::timeline_tree(repo, &system, &catalog)?;
            let points: Vec<BackupPoint> = kept.iter().map(|s| BackupPoint::from(*s)).collect();
            // A timeline wal-receive is streaming may have no archived segment yet.
            let streamed = archive::streamed_segments(repo, &system)?;
            let tlis: Vec<u32> = catalog
                .iter()
                .map(|t| t.timeline)
                .chain(streamed.iter().map(|(tli, _)| *tli))
                .collect::<BTreeSet<u32>>()
                .into_iter()
                .collect();
            let keep = wal_to_keep(&tree, &tlis, &points, running, seg_size);
            let cut = cut_wal(repo, sysid, &keep, seg_size, dry_run, &held)?;
            let removed = &cut.files;
            if !dry_run && !removed.is_empty() {
                // The index is a cache: killed before this, readers bypass it (its first
                // segment is gone) until the next expire or check rewrites it.
                held()?;
                for d in walindex::after_expire(repo, &system)? {
                    tracing::info!("WAL index of system {sysid}, {d}");
                }
            }
            let first = points
                .iter()
                .map(|p| segment_of(p.start_lsn, seg_size))
                .min()
                .expect("a kept backup");
            let all: BTreeSet<u32> = tlis.iter().chain(keep.keys()).copied().collect();
            let timelines = all
                .into_iter()
                .map(|tli| {
                    let k = keep.get(&tli);
                    TimelineCut {
                        timeline: tli,
                        keep_from: k.map(|k| segment_name(tli, k.from, seg_size)),
                        keep_for: k.map_or(Vec::new(), |k| k.backups.iter().cloned().collect()),
                        held: k.map_or(Vec::new(), |k| k.held.iter().copied().collect()),
                        files_removed: removed.get(&tli).copied().unwrap_or(0),
                        why: match k {
                            None => format!("no kept backup reaches timeline {tli}"),
                            Some(k) if !k.held.is_empty() => "before the oldest kept backup".into(),
                            Some(_) => "before every kept backup that reaches it".into(),
                        },
                    }
                })
                .collect();
            wal.push(WalCut {
                system_identifier: sysid.to_string(),
                keep_from: segment_start(first, seg_size).to_string(),
                files_removed: removed.values().sum(),
                drop_markers_removed: cut.drop_markers,
                stream_pieces_removed: cut.stream_pieces,
                timelines,
            });
        }
    }
    Ok(Report {
        dry_run,
        backups: backups
            .iter()
            .map(|s| Verdict {
                id: s.id.clone(),
                system_identifier: s.system_identifier.to_string(),
                stop_time: s.stop_time,
                keep: !verdicts[&s.id].is_empty(),
                reasons: verdicts[&s.id].clone(),
            })
            .collect(),
        wal,
        unreadable,
        verification_records_removed: records.len(),
    })
}

/// What `cut_wal` removed (or, in a dry run, would remove).
struct Cut {
    /// WAL files per timeline.
    files: BTreeMap<u32, u64>,
    drop_markers: u64,
    stream_pieces: u64,
}

/// Removes a cluster's WAL files (segments, partial and backup files) outside `keep`, with
/// their summaries, the drop markers of WAL outside it, and the streamed pieces of segments
/// outside it or archived already. Summaries, markers and pieces go first, the reverse of
/// the order they are written: a killed run leaves at most segments without them, removed
/// by the next run.
fn cut_wal(
    repo: &Repository,
    sysid: u64,
    keep: &BTreeMap<u32, Keep>,
    seg_size: u64,
    dry_run: bool,
    held: &dyn Fn() -> Result<()>,
) -> Result<Cut> {
    let doomed = |name: &str| match WalFile::parse(name, seg_size) {
        Some(WalFile::Segment { tli, segno })
        | Some(WalFile::Partial { tli, segno })
        | Some(WalFile::Backup { tli, segno, .. }) => {
            let kept = keep.get(&tli).is_some_and(|k| segno >= k.from);
            (!kept).then_some(tli)
        }
        Some(WalFile::History { .. }) | None => None,
    };
    let delete = |key: &str| -> Result<()> {
        if !dry_run {
            held()?;
            match repo.backend().delete(key) {
                Err(e) if !e.is_not_found() => return Err(StoreError::from(e).into()),
                _ => {}
            }
        }
        Ok(())
    };
    let summaries = wal::summaries(repo, sysid)?;
    let files = wal::files(repo, sysid)?;
    let archived: HashSet<&str> = files.iter().map(|o| o.name.as_str()).collect();
    let mut cut = Cut {
        files: BTreeMap::new(),
        drop_markers: 0,
        stream_pieces: 0,
    };
    for object in &summaries {
        if doomed(&object.name).is_some() {
            delete(&object.key)?;
        }
    }
    let markers = repo.backend().list(&keys::wal_dropped_system(sysid))?;
    for key in markers.iter().filter(|k| doomed(name_at(k, 0)).is_some()) {
        delete(key)?;
        cut.drop_markers += 1;
    }
    // walstream/<system>/<timeline>/<segment>/<piece>
    let pieces = repo.backend().list(&keys::wal_stream_system(sysid))?;
    for key in &pieces {
        let segment = name_at(key, 1);
        if doomed(segment).is_some() || archived.contains(segment) {
            delete(key)?;
            cut.stream_pieces += 1;
        }
    }
    for object in &files {
        if let Some(tli) = doomed(&object.name) {
            delete(&object.key)?;
            *cut.files.entry(tli).or_insert(0) += 1;
        }
    }
    Ok(cut)
}

/// The `n`th part of `key` from its end (0: its last).
fn name_at(key: &str, n: usize) -> &str {
    key.rsplit('/').nth(n).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{keys, sample};
    use crate::pg::history::tests::path_tree as tree;
    use crate::pg::lsn::Lsn;
    use crate::store::backend::memory::MemoryBackend;
    use crate::store::tree::{BlobRef, Loc};
    use crate::store::{Backend, BlobId, PackId};
    use std::sync::Arc;

    const SEG: u64 = 16 << 20;

    /// Backups starting in segments 2, 5 and 8, a day apart; WAL segments 1–9 on timeline 1
    /// with summaries, and a history file.
    fn setup() -> (Arc<MemoryBackend>, Repository) {
        let mem = Arc::new(MemoryBackend::default());
        let repo = Repository::init(mem.clone(), 65536, 3).unwrap();
        let root = BlobRef {
            id: BlobId::of(b"root"),
            loc: Loc {
                pack: PackId::of(b"pack"),
                offset: 8,
                stored_len: 1,
            },
            len: 1,
        };
        for (day, seg) in [(1, 2), (2, 5), (3, 8)] {
            let mut backup = sample(&format!("b{seg}"), root);
            backup.start_lsn = Lsn(seg * SEG + 40);
            backup.stop_time += chrono::Duration::days(day);
            repo.save_snapshot(&backup).unwrap();
        }
        for segno in 1..10 {
            let name = WalFile::Segment { tli: 1, segno }.name(SEG);
            repo.put_sealed(&keys::wal_file(7, 1, &name), b"wal")
                .unwrap();
            repo.put_sealed(&keys::wal_summary(7, 1, &name), b"{}")
                .unwrap();
        }
        repo.put_sealed(&keys::wal_file(7, 2, "00000002.history"), b"h")
            .unwrap();
        (mem, repo)
    }

    fn last(n: u32) -> Policy {
        Policy {
            last: n,
            ..Policy::default()
        }
    }

    fn wal_names(mem: &MemoryBackend) -> Vec<String> {
        mem.list("wal/7/")
            .unwrap()
            .iter()
            .map(|k| k.rsplit('/').next().unwrap()[16..].to_string())
            .collect()
    }

    #[test]
    fn expires_backups_and_the_wal_before_the_oldest_kept() {
        let (mem, repo) = setup();
        let before = mem.list("").unwrap();
        let dry = run(&repo, &last(2), true, None).unwrap();
        assert_eq!(
            mem.list("").unwrap(),
            before,
            "a dry run changed the repository"
        );
        assert_eq!(dry.wal[0].files_removed, 4);
        let lease = Lease::exclusive(&repo, "expire").unwrap();
        let report = run(&repo, &last(2), false, Some(&lease)).unwrap();
        let kept: Vec<_> = report
            .backups
            .iter()
            .map(|v| (v.id.as_str(), v.keep))
            .collect();
        assert_eq!(kept, vec![("b2", false), ("b5", true), ("b8", true)]);
        assert_eq!(repo.snapshot_ids().unwrap(), vec!["b5", "b8"]);
        assert_eq!(report.wal[0].keep_from, "0/5000000");
        // Segment 5 on is kept, and the history file (its name is shorter than a segment's).
        assert_eq!(
            wal_names(&mem),
            vec!["00000005", "00000006", "00000007", "00000008", "00000009", ""]
        );
        assert_eq!(mem.list(&keys::wal_summaries(7)).unwrap().len(), 5);
    }

    /// Expire leaves the WAL index listing what is left, so planning keeps using it.
    #[test]
    fn the_wal_index_follows_expired_wal() {
        let (_mem, repo) = setup();
        let system = System {
            system_identifier: SystemId(7),
            pg_major: 15,
            wal_segment_size: SEG,
            registered: Utc::now(),
        };
        archive::register_system(&repo, &system).unwrap();
        walindex::compact(&repo, &system).unwrap();
        let lease = Lease::exclusive(&repo, "expire").unwrap();
        run(&repo, &last(2), false, Some(&lease)).unwrap();
        let indexed = walindex::catalog(&repo, &system)
            .unwrap()
            .expect("the index is used");
        assert_eq!(indexed[0].segnos, (5..10).collect::<Vec<_>>());
    }

    /// Drop markers and streamed pieces go with the WAL they stand for; the pieces of a
    /// segment archived since (a receiver killed before deleting them) go as well.
    #[test]
    fn drop_markers_and_streamed_pieces_go_when_nothing_needs_them() {
        let (mem, repo) = setup();
        let name = |segno| WalFile::Segment { tli: 1, segno }.name(SEG);
        for segno in [3, 6] {
            repo.put_sealed(&keys::wal_dropped(7, 1, &name(segno)), b"{}")
                .unwrap();
        }
        for segno in [2, 7, 10] {
            repo.put_sealed(&piece_key(segno), b"w").unwrap();
        }
        let dry = run(&repo, &last(2), true, None).unwrap();
        assert_eq!(
            (
                dry.wal[0].drop_markers_removed,
                dry.wal[0].stream_pieces_removed
            ),
            (1, 2)
        );
        assert_eq!(
            mem.list(keys::WAL_STREAM).unwrap().len(),
            3,
            "a dry run deleted"
        );
        let lease = Lease::exclusive(&repo, "expire").unwrap();
        run(&repo, &last(2), false, Some(&lease)).unwrap();
        assert_eq!(
            mem.list(keys::WAL_DROPPED).unwrap(),
            [keys::wal_dropped(7, 1, &name(6))]
        );
        // Segment 10 is still being streamed.
        assert_eq!(mem.list(keys::WAL_STREAM).unwrap(), [piece_key(10)]);
    }

    fn piece_key(segno: u64) -> String {
        let name = WalFile::Segment { tli: 1, segno }.name(SEG);
        crate::receive::piece::key(7, 1, &name, 0, 8)
    }

    #[test]
    fn verification_records_go_with_their_backups_and_leftovers_are_ignored_then_removed() {
        let (mem, repo) = setup();
        let record = |id: &str| {
            let r =
                verified::next_record(id, SystemId(7), Utc::now(), true, &Default::default(), &[]);
            repo.put_sealed(&keys::verification(7, id), &serde_json::to_vec(&r).unwrap())
                .unwrap();
        };
        // b2's goes with b2; b9's backup is gone already (an expire killed between the two).
        for id in ["b2", "b8", "b9"] {
            record(id);
        }
        let newest = verified::load_latest(&repo, 7).unwrap().unwrap();
        assert_eq!(newest.backup, "b8", "the record of a gone backup was used");
        let records = || mem.list(keys::VERIFIED).unwrap();
        let dry = run(&repo, &last(2), true, None).unwrap();
        assert_eq!(dry.verification_records_removed, 2);
        assert_eq!(records().len(), 3, "a dry run deleted records");
        let lease = Lease::exclusive(&repo, "expire").unwrap();
        let report = run(&repo, &last(2), false, Some(&lease)).unwrap();
        assert_eq!(report.verification_records_removed, 2);
        assert_eq!(records(), [keys::verification(7, "b8")]);
        // Nothing to expire: nothing else goes.
        let again = run(&repo, &last(2), false, Some(&lease)).unwrap();
        assert_eq!(again.verification_records_removed, 0);
        assert_eq!(records().len(), 1);
    }

    fn point(id: &str, tli: u32, start: u64, stop: u64) -> BackupPoint {
        BackupPoint {
            id: id.into(),
            timeline: tli,
            start_lsn: Lsn(start * SEG + 40),
            stop_lsn: Lsn(stop * SEG + 0x200),
            stop_time: 0,
        }
    }

    /// (timeline, from, backups) of each timeline kept.
    fn kept(keep: &BTreeMap<u32, Keep>) -> Vec<(u32, u64, String)> {
        keep.iter()
            .map(|(tli, k)| {
                let b: Vec<&str> = k.backups.iter().map(String::as_str).collect();
                (*tli, k.from, b.join(","))
            })
            .collect()
    }

    #[test]
    fn wal_kept_per_timeline() {
        let t = tree();
        let all = [1, 2, 3, 4];
        // A backup before every fork keeps every timeline from where its path enters it.
        let early = wal_to_keep(&t, &all, &[point("a", 1, 2, 2)], false, SEG);
        assert_eq!(
            kept(&early),
            vec![
                (1, 2, "a".into()),
                (2, 5, "a".into()),
                (3, 8, "a".into()),
                (4, 6, "a".into())
            ]
        );
        // Only a backup after the fork, on timeline 2: timeline 1 (the abandoned old
        // primary's) and its other branch 4 are reached by no kept backup and go entirely.
        let later = wal_to_keep(&t, &all, &[point("b", 2, 6, 6)], false, SEG);
        assert_eq!(kept(&later), vec![(2, 6, "b".into()), (3, 8, "b".into())]);
        // A backup on timeline 1 between the two forks reaches 1 and 4, not 2 or 3; with one
        // on 3 as well, timeline 2 is kept for nobody.
        let mixed = wal_to_keep(
            &t,
            &all,
            &[point("c", 1, 5, 5), point("d", 3, 9, 9)],
            false,
            SEG,
        );
        assert_eq!(
            kept(&mixed),
            vec![(1, 5, "c".into()), (3, 9, "d".into()), (4, 6, "c".into())]
        );
        // Several backups reaching one timeline: kept from the oldest's need, naming all.
        let two = wal_to_keep(
            &t,
            &all,
            &[
                point("e", 1, 2, 2),
                point("f", 1, 4, 4),
                point("g", 2, 7, 7),
            ],
            false,
            SEG,
        );
        assert_eq!(
            kept(&two),
            vec![
                (1, 2, "e,f".into()),
                (2, 5, "e,f,g".into()),
                (3, 8, "e,f,g".into()),
                (4, 6, "e,f".into())
            ]
        );
        // A timeline whose history file is missing keeps everything from the oldest kept
        // backup: where it branched is unknown.
        let mut h = BTreeMap::new();
        h.insert(1, vec![]);
        h.insert(5, vec![]);
        let lost = TimelineTree::new(h, vec![5]);
        let keep = wal_to_keep(&lost, &[1, 5], &[point("g", 1, 3, 3)], false, SEG);
        assert_eq!(kept(&keep), vec![(1, 3, "g".into()), (5, 3, "".into())]);
        assert_eq!(keep[&5].held, [Hold::HistoryMissing].into());
        assert!(keep[&1].held.is_empty());
        // While a backup runs, every timeline keeps what it kept before timelines counted:
        // from the oldest kept backup's start.
        let busy = wal_to_keep(&t, &all, &[point("b", 2, 6, 6)], true, SEG);
        assert_eq!(
            kept(&busy),
            vec![
                (1, 6, "".into()),
                (2, 6, "b".into()),
                (3, 6, "b".into()),
                (4, 6, "".into())
            ]
        );
        assert_eq!(busy[&1].held, [Hold::BackupRunning].into());
        // Nothing kept, nothing reached.
        assert!(wal_to_keep(&t, &all, &[], false, SEG).is_empty());
    }

    /// Timeline 2 forks from 1 in segment 5; backups on 1 (segment 2) and on 2 (segment 7).
    /// Expiring the one on timeline 1 removes timeline 1's WAL entirely (the part past the
    /// fork is abandoned, the part before it is only needed by the expired backup), and
    /// keeps timeline 2 from the kept backup's start.
    #[test]
    fn abandoned_timeline_goes_with_its_last_backup() {
        let (mem, repo) = setup();
        for id in ["b2", "b5", "b8"] {
            repo.delete_snapshot(id).unwrap();
        }
        let root = BlobRef {
            id: BlobId::of(b"root"),
            loc: Loc {
                pack: PackId::of(b"pack"),
                offset: 8,
                stored_len: 1,
            },
            len: 1,
        };
        for (id, tli, seg, day) in [("one", 1, 2, 1), ("two", 2, 7, 2)] {
            let mut backup = sample(id, root);
            backup.timeline = tli;
            backup.start_lsn = Lsn(seg * SEG + 40);
            backup.stop_lsn = Lsn(seg * SEG + 0x200);
            backup.stop_time += chrono::Duration::days(day);
            repo.save_snapshot(&backup).unwrap();
        }
        // setup() stored a placeholder history file: a real one instead.
        let history = keys::wal_file(7, 2, "00000002.history");
        mem.delete(&history).unwrap();
        repo.put_sealed(&history, b"1\t0/5000100\tbefore 2026-11-20 14:30:00+00\n")
            .unwrap();
        for segno in 5..10 {
            let name = WalFile::Segment { tli: 2, segno }.name(SEG);
            repo.put_sealed(&keys::wal_file(7, 2, &name), b"wal")
                .unwrap();
        }
        let lease = Lease::exclusive(&repo, "expire").unwrap();
        // Both kept: timeline 1 to its end (the backup on it reaches it), timeline 2 from the
        // fork.
        let both = run(&repo, &last(2), true, None).unwrap();
        let cut = &both.wal[0];
        assert_eq!(cut.files_removed, 1, "{cut:?}");
        let from = |i: usize| cut.timelines[i].keep_from.as_deref();
        assert_eq!(from(0), Some("000000010000000000000002"));
        assert_eq!(from(1), Some("000000020000000000000005"));
        assert_eq!(cut.timelines[1].keep_for, vec!["one", "two"]);
        // While a backup runs (its WAL may be on timeline 1), timeline 1 keeps what it kept
        // before timelines counted: from the oldest kept backup's start.
        let running = Lease::shared(&repo, "backup").unwrap();
        let busy = run(&repo, &last(1), true, None).unwrap();
        let t1 = &busy.wal[0].timelines[0];
        assert_eq!(t1.held, vec![Hold::BackupRunning]);
        assert_eq!(t1.keep_from.as_deref(), Some("000000010000000000000007"));
        assert_eq!(t1.files_removed, 6);
        drop(running);
        // Only the newest (on timeline 2) kept.
        let report = run(&repo, &last(1), false, Some(&lease)).unwrap();
        let cut = &report.wal[0];
        assert_eq!(cut.timelines[0].timeline, 1);
        assert_eq!(cut.timelines[0].keep_from, None);
        assert_eq!(cut.timelines[0].files_removed, 9);
        assert_eq!(cut.timelines[0].why, "no kept backup reaches timeline 1");
        assert_eq!(
            cut.timelines[1].keep_from.as_deref(),
            Some("000000020000000000000007")
        );
        assert_eq!(cut.timelines[1].files_removed, 2);
        let left: Vec<String> = mem
            .list("wal/7/")
            .unwrap()
            .iter()
            .map(|k| k.rsplit('/').next().unwrap().to_string())
            .collect();
        assert_eq!(
            left,
            vec![
                "00000002.history",
                "000000020000000000000007",
                "000000020000000000000008",
                "000000020000000000000009"
            ]
        );
        assert!(mem.list(&keys::wal_summaries(7)).unwrap().is_empty());
    }

    #[test]
    fn marked_and_pinned_backups_stay() {
        let (_mem, repo) = setup();
        mark(&repo, "b2", true).unwrap();
        let mount = Lease::shared(&repo, "mount").unwrap();
        mount.pin(&repo, &["b5".into()]).unwrap();
        let lease = Lease::exclusive(&repo, "expire").unwrap();
        let report = run(&repo, &last(1), false, Some(&lease)).unwrap();
        assert_eq!(repo.snapshot_ids().unwrap(), vec!["b2", "b5", "b8"]);
        assert_eq!(report.backups[0].reasons, vec![Reason::Marked]);
        assert!(
            matches!(&report.backups[1].reasons[0], Reason::Pinned(by) if by.starts_with("mount"))
        );
        assert_eq!(report.wal[0].files_removed, 1);
        mark(&repo, "b2", false).unwrap();
        drop(mount);
        run(&repo, &last(1), false, Some(&lease)).unwrap();
        assert_eq!(repo.snapshot_ids().unwrap(), vec!["b8"]);
        assert!(
            mark(&repo, "b2", true).is_err(),
            "marked a backup that is gone"
        );
        assert!(matches!(mark(&repo, "b2", false), Err(Error::NotFound(_))));
    }
}
