//! `check`: does the repository hold everything its backups need, and (with `read_data`) is
//! every byte of it intact?
//!
//! Three passes, each with memory bounded by a small per-blob constant:
//! 1. walk every backup's tree, reading each distinct tree and chunk-list blob once (they are
//!    content addressed, so shared subtrees are not walked again), and note the place of every
//!    referenced blob;
//! 2. hold each referenced pack's entry table against those places (and with `read_data`
//!    re-hash every blob), and check the WAL each backup needs is archived (and readable);
//! 3. only when something is damaged, walk the trees again to name the files it affects.
//!
//! Nothing is written to the repository: the record of verified objects lives on the local
//! machine (see `Record`).

use crate::archive::{self, System};
use crate::catalog::{keys, wal, Backups, Snapshot, SystemId};
use crate::error::{io, Result};
use crate::pg::history::TimelineTree;
use crate::pg::wal::{segment_name, segment_of, WalFile};
use crate::pg::walscan::SegmentSummary;
use crate::status::{Recorder, Run, Watched};
use crate::store::crypto::Crypto;
use crate::store::pack::{self, BadEntry, Entry};
use crate::store::tree::{BlobRef, Loc, NodeKind};
use crate::store::{BlobId, PackId, Repository, StoreError};
use crate::timelines::{self, BackupPoint, Survey};
use crate::walindex;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::rc::Rc;

mod attribution;
mod continuity;
mod packs;
mod record;
mod subset;

use packs::*;
pub use record::record_path;
use record::*;
pub use subset::Subset;

/// A pack or WAL object verified by reading is read again after this long, so bit rot that
/// happens after a check is found by a later one even without `--full`.
pub const REVERIFY_AFTER_SECS: i64 = 30 * 24 * 3600;

/// What `check` does besides reading the metadata.
pub struct CheckOptions {
    /// Re-hash blobs and read WAL objects (in `subset`).
    pub read_data: bool,
    /// Which objects `read_data` reads this run.
    pub subset: Subset,
    /// Read again what the record says was verified.
    pub full: bool,
    /// The record of verified objects; `None`: read everything and record nothing.
    pub record: Option<PathBuf>,
    /// Called with the number of bytes read as reading goes on.
    pub progress: Box<dyn Fn(u64)>,
}

/// What is wrong, for monitoring systems to match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// A backup references a pack that is not in the repository.
    MissingPack,
    /// A pack's trailer, header or entry table cannot be read.
    BadPack,
    /// An entry of a pack's table points outside the pack.
    EntryOutsidePack,
    /// An entry of a pack's table has an unknown blob type.
    BadPackEntry,
    /// A backup references a blob its pack's entry table does not list at that place.
    MissingBlob,
    /// A blob's bytes do not match its id (checksum mismatch, or not decompressible).
    BlobCorrupt,
    /// A snapshot manifest cannot be read.
    BadManifest,
    /// A tree or chunk-list blob cannot be read or parsed.
    BadTree,
    /// WAL a backup needs (to restore it, or to recover past it) is not archived.
    WalGap,
    /// A WAL file was dropped by asynchronous archiving over its `--queue-max`: a gap.
    WalDropped,
    /// An archived WAL file fails its checksum.
    BadWal,
    /// A WAL summary fails its checksum or does not parse.
    BadWalSummary,
    /// A piece of a segment `wal-receive` is streaming fails its checksum, or holds another
    /// length than its name says.
    BadStreamedWal,
    /// A cluster's record (`systems/…`) is missing or cannot be read.
    BadSystem,
    /// A timeline above 1 holds WAL but its history file is missing or unreadable: recovery
    /// cannot follow it from a backup on an earlier timeline.
    MissingHistory,
    /// WAL of an ancestor before a timeline's fork (or the timeline's own first segment) is
    /// missing: recovery from the backups before the gap cannot reach that timeline.
    TimelineUnreachable,
    /// A warning, not a problem: two timelines both received WAL after the newer one began
    /// (two servers archive into the repository).
    BothActive,
}

/// One problem: the object, what is wrong, and what it affects.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// What sort of damage.
    pub kind: ProblemKind,
    /// The repository key of the damaged (or missing) object.
    pub object: String,
    /// What is wrong, for people.
    pub detail: String,
    /// Backups that cannot be restored (or, for WAL, recovered past this point) as they are.
    pub backups: BTreeSet<String>,
    /// Paths inside the data directory whose content is affected, in any of `backups`.
    pub files: BTreeSet<String>,
}

impl Problem {
    fn new(kind: ProblemKind, object: impl Into<String>, detail: impl Into<String>) -> Problem {
        Problem {
            kind,
            object: object.into(),
            detail: detail.into(),
            backups: BTreeSet::new(),
            files: BTreeSet::new(),
        }
    }
}

/// What `check` found: counts of what it looked at, and the problems.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// No problem found (hazards do not count).
    pub ok: bool,
    /// Whether blobs and WAL objects were read and re-hashed.
    pub read_data: bool,
    /// Backups (snapshot manifests) checked.
    pub snapshots: usize,
    /// Distinct tree and chunk-list blobs read.
    pub trees: u64,
    /// Packs the backups reference, and packs nothing references (left for gc).
    pub packs: usize,
    /// Packs nothing references.
    pub packs_unreferenced: usize,
    /// Packs whose every blob was re-hashed this run, and packs in the subset skipped because
    /// an earlier run verified them.
    pub packs_read: usize,
    /// Packs of the subset skipped because an earlier run verified them.
    pub packs_verified_earlier: usize,
    /// Blobs re-hashed.
    pub blobs_checked: u64,
    /// Archived WAL files and summaries, and how many were read this run.
    pub wal_objects: usize,
    /// WAL objects read this run.
    pub wal_objects_read: usize,
    /// Bytes read from the repository.
    pub bytes_read: u64,
    /// The damage found, object by object.
    pub problems: Vec<Problem>,
    /// Hazards that are not damage (`both_active`): reported, but `ok` stays true.
    pub warnings: Vec<Problem>,
    /// What was done to each cluster's WAL index, by system identifier: check rewrites an
    /// index that is missing, behind, stale or damaged (see `walindex`).
    pub wal_index: BTreeMap<String, Vec<walindex::Compacted>>,
    /// Clusters whose WAL index could not be rewritten, and why (planning then lists the
    /// archive, which is slower but correct).
    pub wal_index_failed: BTreeMap<String, String>,
}

struct Checker<'a> {
    repo: &'a Repository,
    opts: CheckOptions,
    record: Option<Record>,
    seed: u64,
    report: Report,
    /// Packs by index, so a reference costs 4 bytes of pack id, not 32.
    pack_ids: Vec<PackId>,
    pack_index: HashMap<PackId, u32>,
    /// Every referenced blob: 24 bytes of key and value, 40–50 with the B-tree's overhead.
    refs: BTreeMap<(u32, u32), Expect>,
    /// Tree and chunk-list blobs already walked.
    walked: HashSet<BlobId>,
    /// Damaged places and packs, to the problem they belong to.
    bad_blobs: HashMap<(u32, u32), usize>,
    bad_packs: HashMap<u32, usize>,
}

impl<'a> Checker<'a> {
    fn read(&mut self, n: u64) {
        self.report.bytes_read += n;
        (self.opts.progress)(n);
    }

    fn problem(&mut self, p: Problem) -> usize {
        tracing::warn!("{:?} {}: {}", p.kind, p.object, p.detail);
        self.report.problems.push(p);
        self.report.problems.len() - 1
    }

    fn pack_of(&mut self, id: PackId) -> u32 {
        let next = self.pack_ids.len() as u32;
        *self.pack_index.entry(id).or_insert_with(|| {
            self.pack_ids.push(id);
            next
        })
    }

    fn note(&mut self, id: &BlobId, loc: &Loc, len: u32) {
        let pack = self.pack_of(loc.pack);
        self.refs.insert(
            (pack, loc.offset),
            Expect {
                stored_len: loc.stored_len,
                len,
                id8: id8(id),
            },
        );
    }

    /// A tree or list blob that cannot be read: reported here unless its pack is missing
    /// (pass 2 reports that); a failing back end stops the check.
    fn unreadable(&mut self, r: &BlobRef, what: &str, e: StoreError) -> Result<()> {
        match e {
            StoreError::Backend(b) if b.is_not_found() => Ok(()),
            StoreError::Corrupt { object, reason } => {
                let pack = self.pack_of(r.loc.pack);
                let p = self.problem(Problem::new(
                    ProblemKind::BadTree,
                    keys::pack(&r.loc.pack),
                    format!("{what} blob {} ({object}): {reason}", r.id),
                ));
                self.bad_blobs.insert((pack, r.loc.offset), p);
                Ok(())
            }
            other => Err(other.into()),
        }
    }

    /// Pass 1 for one tree: notes every blob below it, walking each distinct blob once.
    fn walk_tree(&mut self, r: &BlobRef) -> Result<()> {
        self.note(&r.id, &r.loc, r.len);
        if !self.walked.insert(r.id) {
            return Ok(());
        }
        self.report.trees += 1;
        self.read(r.loc.stored_len as u64);
        let dir = match self.repo.load_dir(r) {
            Ok(d) => d,
            Err(e) => return self.unreadable(r, "tree", e),
        };
        for node in &dir.entries {
            match &node.kind {
                NodeKind::Dir { tree } => self.walk_tree(tree)?,
                NodeKind::File { lists, .. } => {
                    for l in lists {
                        self.walk_list(l)?;
                    }
                }
                NodeKind::Symlink { .. } => {}
            }
        }
        Ok(())
    }

    fn walk_list(&mut self, l: &BlobRef) -> Result<()> {
        self.note(&l.id, &l.loc, l.len);
        if !self.walked.insert(l.id) {
            return Ok(());
        }
        self.report.trees += 1;
        self.read(l.loc.stored_len as u64);
        let chunks = match self.repo.load_chunk_list(l) {
            Ok(c) => c,
            Err(e) => return self.unreadable(l, "chunk list", e),
        };
        for c in &chunks {
            if let Some(loc) = &c.loc {
                self.note(&c.id, loc, c.len);
            }
        }
        Ok(())
    }

    /// Whether this run reads the data of `key` (before consulting the record).
    fn wants_data(&self, key: &str) -> bool {
        self.opts.read_data && self.opts.subset.selects(key, self.seed)
    }

    /// Brings the cluster's WAL index up to date before the WAL is surveyed through it. A
    /// failure is noted, not fatal: the index is only a cache.
    fn compact_wal_index(&mut self, system: &System) {
        let sysid = system.system_identifier.to_string();
        match walindex::compact(self.repo, system) {
            Ok(done) => {
                for d in done
                    .iter()
                    .filter(|d| d.outcome != walindex::Outcome::UpToDate)
                {
                    tracing::info!("WAL index of system {sysid}, {d}");
                }
                self.report.wal_index.insert(sysid, done);
            }
            Err(e) => {
                tracing::warn!("cannot rewrite the WAL index of system {sysid}: {e}");
                self.report.wal_index_failed.insert(sysid, e.to_string());
            }
        }
    }

    fn fresh(&self, key: &str, size: u64) -> bool {
        !self.opts.full
            && self
                .record
                .as_ref()
                .is_some_and(|r| r.is_fresh(key, size, now()))
    }

    fn remember(&mut self, key: &str, size: u64) -> Result<()> {
        match &mut self.record {
            Some(r) => r.add(key, size, now()),
            None => Ok(()),
        }
    }
}

/// Checks the repository. Problems found go into the report; an error means the check could
/// not run (the back end failed, the record could not be written). Either way the run is
/// recorded in the repository's status object (`status`): the one write a check makes to
/// the repository besides the WAL index.
pub fn check(repo: &Repository, opts: CheckOptions) -> Result<Report> {
    let started = chrono::Utc::now();
    let read_data = match (opts.read_data, &opts.subset) {
        (false, _) => "none",
        (true, Subset::All) => "all",
        (true, _) => "subset",
    };
    let result = check_repository(repo, opts);
    let mut run = match &result {
        Ok(report) => Run {
            problems: Some(report.problems.len() as u64),
            error: report
                .problems
                .first()
                .map(|p| format!("{}: {}", p.object, p.detail)),
            ..Run::ended(started, report.ok)
        },
        Err(e) => Run::failed(started, e),
    };
    run.read_data = Some(read_data.into());
    Recorder::of(repo).record(Watched::Check, 0, &run);
    result
}

fn check_repository(repo: &Repository, opts: CheckOptions) -> Result<Report> {
    let record = match &opts.record {
        Some(path) if opts.read_data => Some(Record::load(path)?),
        _ => None,
    };
    let mut c = Checker {
        repo,
        record,
        seed: std::hash::BuildHasher::hash_one(
            &std::collections::hash_map::RandomState::new(),
            std::process::id(),
        ),
        report: Report {
            read_data: opts.read_data,
            ..Report::default()
        },
        opts,
        pack_ids: Vec::new(),
        pack_index: HashMap::new(),
        refs: BTreeMap::new(),
        walked: HashSet::new(),
        bad_blobs: HashMap::new(),
        bad_packs: HashMap::new(),
    };

    // Pass 1: manifests and trees.
    let mut snapshots = Vec::new();
    for id in repo.snapshot_ids()? {
        match repo.load_snapshot(&id) {
            Ok(s) => snapshots.push(s),
            // Deleted since the listing (expire): nothing to check.
            Err(StoreError::NoSuchBackup(_)) => {}
            Err(StoreError::Corrupt { object, reason }) => {
                let mut p = Problem::new(ProblemKind::BadManifest, object, reason);
                p.backups.insert(id.clone());
                p.files.insert(".".into());
                c.problem(p);
            }
            Err(e) => return Err(e.into()),
        }
    }
    c.report.snapshots = snapshots.len();
    tracing::info!("walking the trees of {} backups", snapshots.len());
    for s in &snapshots {
        c.walk_tree(&s.root)?;
    }
    c.walked = HashSet::new();

    // Pass 2: packs, then WAL per cluster.
    tracing::info!("checking {} packs", c.pack_ids.len());
    c.check_packs()?;
    let mut sysids: BTreeSet<u64> = snapshots.iter().map(|s| s.sysid()).collect();
    sysids.extend(wal::system_ids(repo)?);
    for sysid in sysids {
        let backups: Vec<&Snapshot> = snapshots.iter().filter(|s| s.sysid() == sysid).collect();
        let record = archive::load_system(repo, sysid);
        let registered = matches!(record, Ok(Some(_)));
        let system = match record {
            Ok(Some(s)) => s,
            other => {
                let detail = match other {
                    Err(e) => e.to_string(),
                    _ => "the cluster's record is missing".to_string(),
                };
                c.problem(Problem::new(
                    ProblemKind::BadSystem,
                    keys::system(sysid),
                    detail,
                ));
                // Enough to find the WAL: the segment size from a backup, or the default.
                System {
                    system_identifier: SystemId(sysid),
                    pg_major: 0,
                    wal_segment_size: backups.first().map_or(0, |s| s.wal_segment_size),
                    registered: chrono::Utc::now(),
                }
            }
        };
        if registered {
            c.compact_wal_index(&system);
        }
        let survey = timelines::survey(repo, &system, &backups)?;
        c.check_wal(sysid, &system, &backups, &survey)?;
        // A drop counts while a backup older than it is kept: its recovery stops there.
        let seg_size = archive::segment_size(&system);
        for d in crate::archiver::dropped(repo, sysid)? {
            let file = WalFile::parse(&d.name, seg_size);
            let segno = match file {
                Some(WalFile::Segment { segno, .. } | WalFile::Partial { segno, .. }) => segno,
                _ => u64::MAX,
            };
            if !backups.is_empty()
                && backups
                    .iter()
                    .all(|b| segment_of(b.start_lsn, seg_size) > segno)
            {
                continue;
            }
            c.problem(Problem::new(
                ProblemKind::WalDropped,
                keys::wal_dropped(sysid, file.map_or(0, |f| f.tli()), &d.name),
                format!(
                    "{} was dropped by wal-push --async at {} (the spool held {} bytes, over \
                     --queue-max {}): recovery cannot pass it; take a new backup",
                    d.name, d.dropped_at, d.queued_bytes, d.queue_max
                ),
            ));
        }
        c.check_timelines(sysid, &system, &backups, &survey)?;
    }

    // Pass 3: name what the damage affects.
    if !c.bad_blobs.is_empty() || !c.bad_packs.is_empty() {
        tracing::info!("finding the files affected by damaged blobs");
        c.attribute(&snapshots);
    }
    if let Some(r) = c.record.take() {
        r.compact(now())?;
    }
    c.report.ok = c.report.problems.is_empty();
    Ok(c.report)
}

#[cfg(test)]
mod tests {
    use super::continuity::*;
    use super::*;
    use crate::store::pack::{BlobType, PackWriter};

    #[test]
    fn subsets_parse_and_slices_partition() {
        assert_eq!(Subset::parse("1/10"), Ok(Subset::Slice { n: 1, m: 10 }));
        assert_eq!(
            Subset::parse("2.5%"),
            Ok(Subset::Percent { hundredths: 250 })
        );
        for bad in ["0/3", "4/3", "1/0", "x", "0%", "101%", "1/2/3"] {
            assert!(Subset::parse(bad).is_err(), "{bad}");
        }
        let keys: Vec<String> = (0..3000).map(|i| format!("packs/{i:04}")).collect();
        let mut total = 0;
        for n in 1..=3 {
            let s = Subset::Slice { n, m: 3 };
            let picked = keys.iter().filter(|k| s.selects(k, 0)).count();
            // Each slice is a third, give or take; together they take every key once.
            assert!((800..1200).contains(&picked), "slice {n}/3 took {picked}");
            total += picked;
            // Deterministic: the seed does not matter.
            assert!(keys.iter().all(|k| s.selects(k, 0) == s.selects(k, 99)));
        }
        assert_eq!(total, keys.len());
        let ten = Subset::Percent { hundredths: 1000 };
        let picked = keys.iter().filter(|k| ten.selects(k, 7)).count();
        assert!((200..400).contains(&picked), "10% took {picked}");
        let other_run = keys
            .iter()
            .filter(|k| ten.selects(k, 7) != ten.selects(k, 8))
            .count();
        assert!(other_run > 0, "a random share must differ between runs");
        assert!(keys.iter().all(|k| Subset::All.selects(k, 0)));
    }

    /// A manifest whose backup covers segments `start..=stop` of 16 MiB.
    fn snapshot(id: &str, tli: u32, start: u64, stop: u64, root: Option<BlobRef>) -> Snapshot {
        let seg: u64 = 16 << 20;
        let root = root.unwrap_or(BlobRef {
            id: BlobId::default(),
            loc: Loc {
                pack: PackId::default(),
                offset: 8,
                stored_len: 1,
            },
            len: 1,
        });
        let json = serde_json::json!({
            "format": 1, "id": id, "system_identifier": "7", "pg_major": 15,
            "pg_version": "15", "timeline": tli,
            "start_lsn": crate::pg::lsn::Lsn(start * seg).to_string(),
            "stop_lsn": crate::pg::lsn::Lsn(stop * seg + 100).to_string(),
            "start_time": "2026-11-21T05:40:12Z", "stop_time": "2026-11-21T05:40:14Z",
            "wal_segment_size": seg, "label": "", "backup_label": "",
            "tablespace_map": null, "tablespaces": [], "size_logical": 0,
            "size_stored_new": 0, "files": 0, "chunk_size": 65536, "parent": null,
            "root": root, "root_mode": 448, "root_mtime": 0
        });
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn wal_gaps_and_needs() {
        assert_eq!(missing_ranges(&[2, 3, 4], 2, 4), vec![]);
        assert_eq!(
            missing_ranges(&[2, 5, 9], 1, 10),
            vec![(1, 1), (3, 4), (6, 8), (10, 10)]
        );
        assert_eq!(missing_ranges(&[], 3, 4), vec![(3, 4)]);
        assert_eq!(missing_ranges(&[1, 2, 7], 3, 6), vec![(3, 6)]);

        let seg = 16 << 20;
        let snap = |id: &str, tli, start: u64, stop: u64| snapshot(id, tli, start, stop, None);
        // Timeline 2 forks from 1 at segment 15; 1 goes on to 30, 2 to 25.
        let mut h = BTreeMap::new();
        h.insert(1, vec![]);
        h.insert(
            2,
            crate::pg::history::parse_history("1\t0/F000100\tx\n").unwrap(),
        );
        let tree = TimelineTree::new(h, vec![]);
        let last = |tli| Some(if tli == 1 { 30 } else { 25 });
        let (a, b, c, d) = (
            snap("a", 1, 2, 3),
            snap("b", 1, 8, 8),
            snap("c", 2, 20, 21),
            snap("d", 1, 16, 16),
        );
        // Out of order on purpose: needs follow WAL positions.
        let needs = wal_needs(&[&c, &d, &a, &b], seg, &tree, last);
        let got: Vec<_> = needs
            .iter()
            .map(|n| (n.backup.as_str(), n.tli, n.from, n.stop, n.to))
            .collect();
        assert_eq!(
            got,
            vec![
                // a: its own timeline up to b; timeline 2 is b's to cover.
                ("a", 1, 2, Some(3), 7),
                // b: timeline 1 up to d (after the fork, on timeline 1 only); timeline 2 from
                // its first segment up to c.
                ("b", 1, 8, Some(8), 15),
                ("b", 2, 15, None, 19),
                // d reaches timeline 1 only, c timeline 2 only.
                ("d", 1, 16, Some(16), 30),
                ("c", 2, 20, Some(21), 25),
            ]
        );
        assert!(needs[2].covers(2, 19) && !needs[2].covers(1, 19) && !needs[4].covers(1, 21));
        // Archived WAL that ends before a backup's stop still leaves its own WAL needed.
        let needs = wal_needs(&[&a], seg, &tree, |_| Some(2));
        assert_eq!((needs[0].from, needs[0].to), (2, 3));
    }

    /// A pack of three blobs, its table, and the references to them.
    fn sample_pack() -> (Vec<u8>, Vec<Entry>, Vec<(u32, Expect)>) {
        let mut w = PackWriter::new();
        for blob in [b"alpha".repeat(40), b"beta".repeat(50), b"gamma".repeat(60)] {
            let stored = pack::encode_blob(&blob, 3);
            w.add(
                BlobId::of(&blob),
                BlobType::Data,
                &stored,
                blob.len() as u32,
            );
        }
        let (bytes, entries) = w.finish(<[u8]>::to_vec);
        let refs = entries
            .iter()
            .map(|e| {
                (
                    e.offset,
                    Expect {
                        stored_len: e.stored_len,
                        len: e.len,
                        id8: id8(&e.id),
                    },
                )
            })
            .collect();
        (bytes, entries, refs)
    }

    fn table(bytes: &[u8]) -> &[u8] {
        let n = bytes.len();
        let count = pack::parse_tail(&bytes[n - pack::TAIL_LEN..], "p").unwrap();
        let start = pack::table_start(n as u64, count, 0, "p").unwrap() as usize;
        &bytes[start..n - pack::TAIL_LEN]
    }

    #[test]
    fn pack_findings_are_classified() {
        let (bytes, entries, refs) = sample_pack();
        let n = bytes.len() as u64;
        let clean = examine_pack(
            &Crypto::default(),
            "p",
            n,
            table(&bytes),
            Some(&bytes),
            &refs,
        );
        assert_eq!(clean, (vec![], 3));

        // A flipped byte inside the second blob: found only by reading the data, and
        // charged to the reference to that blob.
        let mut flipped = bytes.clone();
        flipped[entries[1].offset as usize + 3] ^= 0x10;
        let (f, checked) = examine_pack(&Crypto::default(), "p", n, table(&flipped), None, &refs);
        assert_eq!((f.len(), checked), (0, 0));
        let (f, _) = examine_pack(
            &Crypto::default(),
            "p",
            n,
            table(&flipped),
            Some(&flipped),
            &refs,
        );
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].kind, ProblemKind::BlobCorrupt);
        assert_eq!(f[0].offsets, vec![entries[1].offset]);

        // The high byte of the third entry's offset: that entry points outside the pack, and
        // the reference to the third blob is charged to it.
        let mut table3 = table(&bytes).to_vec();
        table3[2 * pack::ENTRY_LEN + 39] ^= 0xff;
        let (f, _) = examine_pack(&Crypto::default(), "p", n, &table3, None, &refs);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].kind, ProblemKind::EntryOutsidePack);
        assert_eq!(f[0].offsets, vec![entries[2].offset]);

        // A reference the table does not back up (a wrong id).
        let mut wrong = refs.clone();
        wrong[0].1.id8 ^= 1;
        let (f, _) = examine_pack(&Crypto::default(), "p", n, table(&bytes), None, &wrong);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].kind, ProblemKind::MissingBlob);
        assert_eq!(f[0].offsets, vec![entries[0].offset]);

        // An unknown blob type.
        let mut table4 = table(&bytes).to_vec();
        table4[32] = 9;
        let (f, _) = examine_pack(&Crypto::default(), "p", n, &table4, None, &refs[1..]);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].kind, ProblemKind::BadPackEntry);
        assert!(f[0].offsets.is_empty());
    }

    /// The whole check in memory: a pack with a table larger than one end read, a damaged
    /// chunk named with its file and backup, and a referenced pack that is gone.
    #[test]
    fn check_names_the_files_of_damaged_chunks() {
        use crate::store::backend::memory::MemoryBackend;
        use crate::store::tree::{encode_chunk_list, Chunk, Dir, Node};
        use crate::store::Backend;
        use crate::store::Packer;
        use std::sync::Arc;

        let mem = Arc::new(MemoryBackend::default());
        let repo = Repository::init(mem.clone(), 65536, 3).unwrap();
        let mut packer = Packer::new(&repo, 1 << 30);
        // 2000 entries: a 96 KB table, more than TABLE_GUESS.
        let chunks: Vec<Chunk> = (0..2000u32)
            .map(|i| {
                let data = format!("chunk {i}").repeat(10);
                let r = packer.add_blob(BlobType::Data, data.as_bytes()).unwrap();
                Chunk {
                    id: r.id,
                    len: r.len,
                    loc: Some(r.loc),
                    crc: None,
                }
            })
            .collect();
        let list = |c: &[Chunk], packer: &mut Packer| {
            packer
                .add_blob(BlobType::ChunkList, &encode_chunk_list(c))
                .unwrap()
        };
        let file = |name: &str, lists| Node {
            name: name.into(),
            mode: 0o600,
            mtime: 0,
            kind: NodeKind::File { size: 0, lists },
        };
        let (l1, l2) = (
            list(&chunks[..1000], &mut packer),
            list(&chunks[1000..], &mut packer),
        );
        packer.flush().unwrap();
        // A second pack, which will go missing, holding one file's only list.
        let lost = list(&chunks[..1], &mut packer);
        packer.flush().unwrap();
        let base = Dir {
            entries: vec![file("16384", vec![l1]), file("16385", vec![l2])],
        };
        let base = packer
            .add_blob(BlobType::Tree, &serde_json::to_vec(&base).unwrap())
            .unwrap();
        let dir_node = Node {
            name: "base".into(),
            mode: 0o700,
            mtime: 0,
            kind: NodeKind::Dir { tree: base },
        };
        let root1 = Dir {
            entries: vec![dir_node.clone()],
        };
        let root2 = Dir {
            entries: vec![dir_node, file("lost", vec![lost])],
        };
        let root1 = packer
            .add_blob(BlobType::Tree, &serde_json::to_vec(&root1).unwrap())
            .unwrap();
        let root2 = packer
            .add_blob(BlobType::Tree, &serde_json::to_vec(&root2).unwrap())
            .unwrap();
        packer.flush().unwrap();
        archive::register_system(
            &repo,
            &System {
                system_identifier: SystemId(7),
                pg_major: 15,
                wal_segment_size: 16 << 20,
                registered: chrono::Utc::now(),
            },
        )
        .unwrap();
        for segno in 2..=4 {
            let name = WalFile::Segment { tli: 1, segno }.name(16 << 20);
            repo.put_sealed(&keys::wal_file(7, 1, &name), b"wal")
                .unwrap();
        }
        for (id, root, start) in [("b1", root1, 2), ("b2", root2, 4)] {
            repo.save_snapshot(&snapshot(id, 1, start, start, Some(root)))
                .unwrap();
        }
        let run = |read_data| {
            check(
                &repo,
                CheckOptions {
                    read_data,
                    subset: Subset::All,
                    full: false,
                    record: None,
                    progress: Box::new(|_| {}),
                },
            )
            .unwrap()
        };
        let clean = run(true);
        assert!(clean.problems.is_empty(), "{:?}", clean.problems);
        assert_eq!((clean.snapshots, clean.packs, clean.packs_read), (2, 3, 3));
        assert_eq!(clean.blobs_checked, 2000 + 2 + 1 + 3);
        assert_eq!(clean.trees, 3 + 3);

        let victim = chunks[1500].loc.unwrap();
        mem.tamper(&keys::pack(&victim.pack), |b| {
            b[victim.offset as usize + 1] ^= 1
        });
        mem.delete(&keys::pack(&lost.loc.pack)).unwrap();
        let structure = run(false);
        let kinds: Vec<_> = structure.problems.iter().map(|p| p.kind).collect();
        assert_eq!(kinds, vec![ProblemKind::MissingPack], "{structure:?}");
        let p = &structure.problems[0];
        assert_eq!(p.object, keys::pack(&lost.loc.pack));
        assert_eq!(p.backups, ["b2".to_string()].into());
        assert_eq!(p.files, ["lost".to_string()].into());

        let data = run(true);
        let p = data
            .problems
            .iter()
            .find(|p| p.kind == ProblemKind::BlobCorrupt)
            .expect("the flipped chunk is found");
        assert_eq!(p.object, keys::pack(&victim.pack));
        assert_eq!(p.backups, ["b1".to_string(), "b2".to_string()].into());
        assert_eq!(p.files, ["base/16385".to_string()].into());
        assert_eq!(data.problems.len(), 2, "{:?}", data.problems);
    }

    /// Timelines in memory: 2 forks from 1 in segment 5, 3 holds WAL without a history file;
    /// a segment of timeline 1 before the fork goes missing; timeline 1 commits after
    /// timeline 2's first commit.
    #[test]
    fn timelines_missing_history_unreachable_fork_and_both_active() {
        use crate::pg::walscan::SegmentSummary;
        use crate::store::backend::memory::MemoryBackend;
        use crate::store::Backend;
        use std::sync::Arc;

        let seg: u64 = 16 << 20;
        let mem = Arc::new(MemoryBackend::default());
        let repo = Repository::init(mem.clone(), 65536, 3).unwrap();
        archive::register_system(
            &repo,
            &System {
                system_identifier: SystemId(7),
                pg_major: 15,
                wal_segment_size: seg,
                registered: chrono::Utc::now(),
            },
        )
        .unwrap();
        let put = |tli: u32, segno: u64, commit: Option<i64>| {
            let name = WalFile::Segment { tli, segno }.name(seg);
            repo.put_sealed(&keys::wal_file(7, tli, &name), b"wal")
                .unwrap();
            let sum = SegmentSummary {
                first_commit_time: commit,
                last_commit_time: commit,
                restore_points: vec![],
                min_commit_xid: None,
                max_commit_xid: None,
                end_lsn: crate::pg::lsn::Lsn(segno * seg),
                tablespaces: Some(Vec::new()),
            };
            repo.put_sealed(
                &keys::wal_summary(7, tli, &name),
                &serde_json::to_vec(&sum).unwrap(),
            )
            .unwrap();
        };
        // Timeline 1: 2..=9, committing until time 900; timeline 2 from 5, first own
        // commit (past its switch segment) at 600.
        for segno in 2..=9 {
            put(1, segno, Some(segno as i64 * 100));
        }
        for segno in 5..=7 {
            put(2, segno, Some(segno as i64 * 100));
        }
        put(3, 12, None);
        repo.put_sealed(
            &keys::wal_file(7, 2, "00000002.history"),
            b"1\t0/5000100\tbefore 2026-11-20 14:30:00+00\n",
        )
        .unwrap();
        repo.save_snapshot(&snapshot("b1", 1, 2, 2, None)).unwrap();
        repo.save_snapshot(&snapshot("b2", 1, 3, 3, None)).unwrap();
        let run = || {
            check(
                &repo,
                CheckOptions {
                    read_data: false,
                    subset: Subset::All,
                    full: false,
                    record: None,
                    progress: Box::new(|_| {}),
                },
            )
            .unwrap()
        };
        let of = |r: &Report, kind| -> Vec<Problem> {
            r.problems
                .iter()
                .filter(|p| p.kind == kind)
                .cloned()
                .collect()
        };
        let r = run();
        assert!(of(&r, ProblemKind::TimelineUnreachable).is_empty(), "{r:?}");
        let missing = of(&r, ProblemKind::MissingHistory);
        assert_eq!(missing.len(), 1, "{r:?}");
        assert_eq!(missing[0].object, "wal/7/00000003/00000003.history");
        assert_eq!(r.warnings.len(), 1, "{r:?}");
        assert_eq!(r.warnings[0].kind, ProblemKind::BothActive);
        assert!(
            r.warnings[0]
                .detail
                .starts_with("timelines 1 and 2 are both active"),
            "{r:?}"
        );

        // Segment 3 of timeline 1 (before the fork) goes: timeline 2 is cut off from b1 and
        // b2 (both start at or before it).
        let gone = keys::wal_file(7, 1, &WalFile::Segment { tli: 1, segno: 3 }.name(seg));
        mem.delete(&gone).unwrap();
        let r = run();
        let cut = of(&r, ProblemKind::TimelineUnreachable);
        assert_eq!(cut.len(), 1, "{r:?}");
        assert_eq!(cut[0].object, gone);
        assert!(
            cut[0]
                .detail
                .contains("cannot reach timeline 2 (forked from timeline 1 at 0/5000100)"),
            "{}",
            cut[0].detail
        );
        assert_eq!(cut[0].backups, ["b1".to_string(), "b2".to_string()].into());
        // A damaged repository: not ok. A warning alone would leave it ok.
        assert!(!r.ok);
    }

    #[test]
    fn record_keeps_fresh_entries_of_the_same_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/verified");
        let mut r = Record::load(&path).unwrap();
        let t = 1_000_000_000;
        r.add("packs/aa/aa11", 100, t).unwrap();
        r.add("wal/1/00000001/x", 7, t - REVERIFY_AFTER_SECS)
            .unwrap();
        let r = Record::load(&path).unwrap();
        assert!(r.is_fresh("packs/aa/aa11", 100, t + 10));
        assert!(!r.is_fresh("packs/aa/aa11", 101, t + 10), "size changed");
        assert!(!r.is_fresh("packs/aa/aa11", 100, t + REVERIFY_AFTER_SECS));
        assert!(!r.is_fresh("packs/bb/bb22", 100, t));
        r.compact(t).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("packs/aa/aa11 100 {t}\n"));
        assert_eq!(parse_record("junk\nk 1 2\nk 3 4\n")["k"], (3, 4));
    }
}
