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
use crate::error::{io, Result};
use crate::pg::history::TimelineTree;
use crate::pg::wal::{segment_name, segment_of, WalFile};
use crate::pg::walscan::SegmentSummary;
use crate::store::crypto::Crypto;
use crate::store::pack::{self, BadEntry, Entry};
use crate::store::snapshot::Snapshot;
use crate::store::tree::{BlobRef, Loc, NodeKind};
use crate::store::{keys, Id, Repository, StoreError};
use crate::timelines::{self, BackupPoint, Survey};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Bytes read from a pack's end when only its entry table is wanted: the table of a pack of
/// up to 1300 blobs, so one read usually does.
const TABLE_GUESS: u64 = 64 << 10;

/// A pack or WAL object verified by reading is read again after this long, so bit rot that
/// happens after a check is found by a later one even without `--full`.
pub const REVERIFY_AFTER_SECS: i64 = 30 * 24 * 3600;

/// Which objects `--read-data` reads this time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Subset {
    All,
    /// The `n`-th (1-based) of `m` fixed slices, by the SHA-256 of the object's key: running
    /// 1/m … m/m on successive days reads everything once.
    Slice {
        n: u64,
        m: u64,
    },
    /// A random share, in hundredths of a percent, drawn anew each run.
    Percent {
        hundredths: u32,
    },
}

impl Subset {
    /// Parses `N/M` or `P%` (`2.5%` allowed).
    pub fn parse(s: &str) -> std::result::Result<Subset, String> {
        let bad = || format!("{s:?} is not a subset such as 1/10 or 10%");
        if let Some(p) = s.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| bad())?;
            if !(p > 0.0 && p <= 100.0) {
                return Err(format!(
                    "{s:?}: the percentage must be above 0 and at most 100"
                ));
            }
            return Ok(Subset::Percent {
                hundredths: (p * 100.0).round().max(1.0) as u32,
            });
        }
        let (n, m) = s.split_once('/').ok_or_else(bad)?;
        let (n, m): (u64, u64) = (
            n.trim().parse().map_err(|_| bad())?,
            m.trim().parse().map_err(|_| bad())?,
        );
        if m == 0 || n == 0 || n > m {
            return Err(format!("{s:?}: N/M needs 1 <= N <= M"));
        }
        Ok(Subset::Slice { n, m })
    }

    /// Whether `key` is in the subset; `seed` varies the random share between runs.
    pub fn selects(&self, key: &str, seed: u64) -> bool {
        let h = |salt: &[u8]| {
            let mut buf = salt.to_vec();
            buf.extend_from_slice(key.as_bytes());
            u64::from_be_bytes(Id::of(&buf).0[..8].try_into().expect("8 bytes")) as u128
        };
        match *self {
            Subset::All => true,
            Subset::Slice { n, m } => (h(b"") * m as u128) >> 64 == (n - 1) as u128,
            Subset::Percent { hundredths } => {
                (h(&seed.to_le_bytes()) * 10_000) >> 64 < hundredths as u128
            }
        }
    }
}

/// The record of verified objects for repository `repo_id`, if a state directory is known:
/// the one given, else `$XDG_STATE_HOME/pgsnapfs`, else `~/.local/state/pgsnapfs`.
pub fn record_path(state_dir: Option<PathBuf>, repo_id: &str) -> Option<PathBuf> {
    let dir = state_dir.or_else(|| {
        let env = |k| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        env("XDG_STATE_HOME")
            .or_else(|| env("HOME").map(|h| h.join(".local/state")))
            .map(|d| d.join("pgsnapfs"))
    })?;
    Some(dir.join(repo_id).join("verified"))
}

pub struct CheckOptions {
    /// Re-hash blobs and read WAL objects (in `subset`).
    pub read_data: bool,
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
    /// An archived WAL file fails its checksum.
    BadWal,
    /// A WAL summary fails its checksum or does not parse.
    BadWalSummary,
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
    pub kind: ProblemKind,
    /// The repository key of the damaged (or missing) object.
    pub object: String,
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

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub ok: bool,
    pub read_data: bool,
    /// Backups (snapshot manifests) checked.
    pub snapshots: usize,
    /// Distinct tree and chunk-list blobs read.
    pub trees: u64,
    /// Packs the backups reference, and packs nothing references (left for gc).
    pub packs: usize,
    pub packs_unreferenced: usize,
    /// Packs whose every blob was re-hashed this run, and packs in the subset skipped because
    /// an earlier run verified them.
    pub packs_read: usize,
    pub packs_verified_earlier: usize,
    pub blobs_checked: u64,
    /// Archived WAL files and summaries, and how many were read this run.
    pub wal_objects: usize,
    pub wal_objects_read: usize,
    pub bytes_read: u64,
    pub problems: Vec<Problem>,
    /// Hazards that are not damage (`both_active`): reported, but `ok` stays true.
    pub warnings: Vec<Problem>,
}

/// Seconds since the Unix epoch.
fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Objects an earlier run read and found intact, as `key size unix-seconds` lines, on the
/// machine that ran the check rather than in the repository: the record must not live in the
/// thing it vouches for, and `check` stays read-only (read-only credentials suffice). A lost
/// record only costs a re-read. An entry counts only while the object still has the recorded
/// size and for `REVERIFY_AFTER_SECS`.
struct Record {
    path: PathBuf,
    verified: HashMap<String, (u64, i64)>,
    append: Option<std::fs::File>,
}

impl Record {
    fn load(path: &Path) -> Result<Record> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io(format!("read {}", path.display()))(e)),
        };
        Ok(Record {
            path: path.to_path_buf(),
            verified: parse_record(&text),
            append: None,
        })
    }

    fn is_fresh(&self, key: &str, size: u64, now: i64) -> bool {
        self.verified
            .get(key)
            .is_some_and(|&(s, t)| s == size && now - t < REVERIFY_AFTER_SECS)
    }

    /// Appends at once, so an interrupted check keeps what it verified.
    fn add(&mut self, key: &str, size: u64, now: i64) -> Result<()> {
        let what = || format!("write {}", self.path.display());
        if self.append.is_none() {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir).map_err(io(what()))?;
            }
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(io(what()))?;
            self.append = Some(f);
        }
        let f = self.append.as_mut().expect("opened above");
        writeln!(f, "{key} {size} {now}").map_err(io(what()))?;
        self.verified.insert(key.to_string(), (size, now));
        Ok(())
    }

    /// Rewrites the record without expired entries (which also drops deleted objects).
    fn compact(self, now: i64) -> Result<()> {
        let mut text = String::new();
        let mut keys: Vec<_> = self.verified.iter().collect();
        keys.sort();
        for (key, (size, t)) in keys {
            if now - t < REVERIFY_AFTER_SECS {
                text.push_str(&format!("{key} {size} {t}\n"));
            }
        }
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, text).map_err(io(format!("write {}", tmp.display())))?;
        std::fs::rename(&tmp, &self.path).map_err(io(format!("rename {}", tmp.display())))
    }
}

/// Later lines win; malformed lines are ignored (the object is then simply read again).
fn parse_record(text: &str) -> HashMap<String, (u64, i64)> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            let (key, size, t) = (f.next()?, f.next()?.parse().ok()?, f.next()?.parse().ok()?);
            Some((key.to_string(), (size, t)))
        })
        .collect()
}

/// A referenced blob's expected entry: 16 bytes, keyed by (pack index, offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Expect {
    stored_len: u32,
    len: u32,
    /// The first 8 bytes of the id: enough to tell a wrong entry from the right one, at a
    /// quarter of the memory (the blob's full hash is checked by `read_data`).
    id8: u64,
}

fn id8(id: &Id) -> u64 {
    u64::from_le_bytes(id.0[..8].try_into().expect("8 bytes"))
}

/// One finding about a pack, with the offsets of the references it affects.
#[derive(Debug, Clone, PartialEq)]
struct Finding {
    kind: ProblemKind,
    detail: String,
    offsets: Vec<u32>,
}

/// Holds one pack's entry table (and, given the whole pack, its blobs) against the references
/// into it. Returns the findings and how many blobs were re-hashed.
fn examine_pack(
    crypto: &Crypto,
    key: &str,
    blob_end: u64,
    table: &[u8],
    data: Option<&[u8]>,
    refs: &[(u32, Expect)],
) -> (Vec<Finding>, u64) {
    let mut findings = Vec::new();
    let mut table_broken = false;
    if let Some(d) = data {
        if d.get(..pack::MAGIC.len()) != Some(pack::MAGIC.as_slice()) {
            findings.push(Finding {
                kind: ProblemKind::BadPack,
                detail: "bad pack header".into(),
                offsets: Vec::new(),
            });
        }
    }
    let mut by_offset: HashMap<u32, Entry> = HashMap::new();
    for e in pack::entries(table, blob_end) {
        match e {
            Ok(e) => {
                by_offset.insert(e.offset, e);
            }
            Err(bad) => {
                table_broken = true;
                let kind = match bad {
                    BadEntry::OutOfBounds { .. } => ProblemKind::EntryOutsidePack,
                    BadEntry::UnknownType { .. } => ProblemKind::BadPackEntry,
                };
                findings.push(Finding {
                    kind,
                    detail: bad.to_string(),
                    offsets: Vec::new(),
                });
            }
        }
    }
    let mut checked = 0;
    let mut corrupt: HashMap<u32, usize> = HashMap::new();
    if let Some(d) = data {
        let mut entries: Vec<&Entry> = by_offset.values().collect();
        entries.sort_by_key(|e| e.offset);
        for e in entries {
            let stored = &d[e.offset as usize..(e.offset + e.stored_len) as usize];
            checked += 1;
            if let Err(err) = crypto.decode_blob(stored, e.len, &e.id, key) {
                let reason = match err {
                    StoreError::Corrupt { reason, .. } => reason,
                    other => other.to_string(),
                };
                corrupt.insert(e.offset, findings.len());
                findings.push(Finding {
                    kind: ProblemKind::BlobCorrupt,
                    detail: reason,
                    offsets: Vec::new(),
                });
            }
        }
    }
    let mut unmatched = Vec::new();
    for &(offset, want) in refs {
        match by_offset.get(&offset) {
            Some(e)
                if e.stored_len == want.stored_len
                    && e.len == want.len
                    && id8(&e.id) == want.id8 =>
            {
                if let Some(&i) = corrupt.get(&offset) {
                    findings[i].offsets.push(offset);
                }
            }
            _ => unmatched.push(offset),
        }
    }
    if !unmatched.is_empty() {
        // A broken entry is the likely reason a reference finds no entry: charge it there.
        match findings.iter_mut().find(|f| {
            table_broken
                && matches!(
                    f.kind,
                    ProblemKind::EntryOutsidePack | ProblemKind::BadPackEntry
                )
        }) {
            Some(f) => f.offsets.extend(unmatched),
            None => findings.push(Finding {
                kind: ProblemKind::MissingBlob,
                detail: format!(
                    "{} referenced blobs are not in the pack's entry table at the place the \
                     backups name",
                    unmatched.len()
                ),
                offsets: unmatched,
            }),
        }
    }
    (findings, checked)
}

/// The missing segment ranges (inclusive) of `from..=to`, given the archived segments, sorted.
fn missing_ranges(have: &[u64], from: u64, to: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut next = from;
    let start = have.partition_point(|&s| s < from);
    for &s in &have[start..] {
        if s > to {
            break;
        }
        if s > next {
            out.push((next, s - 1));
        }
        next = s + 1;
    }
    if next <= to {
        out.push((next, to));
    }
    out
}

/// The WAL one backup needs on one timeline its recovery can follow: on its own timeline from
/// its start segment, through its stop segment (to restore it); on a later timeline whose
/// history holds its end, from that timeline's first segment; in both cases up to the next
/// backup on the same path or the end of the timeline's archive (to recover past it). The
/// ancestors' WAL before a fork is `check_timelines`' part.
#[derive(Debug, Clone)]
struct WalNeed {
    backup: String,
    /// The timeline whose segments these are.
    tli: u32,
    from: u64,
    /// The backup's stop segment, on its own timeline.
    stop: Option<u64>,
    to: u64,
}

impl WalNeed {
    fn covers(&self, tli: u32, segno: u64) -> bool {
        tli == self.tli && (self.from..=self.to).contains(&segno)
    }
}

/// Where each backup of one cluster needs WAL, given the timeline tree and the last archived
/// segment of each timeline.
fn wal_needs(
    backups: &[&Snapshot],
    seg_size: u64,
    tree: &TimelineTree,
    last_of: impl Fn(u32) -> Option<u64>,
) -> Vec<WalNeed> {
    let mut sorted: Vec<&Snapshot> = backups.to_vec();
    sorted.sort_by_key(|s| s.start_lsn);
    let targets: BTreeSet<u32> = tree
        .timelines()
        .chain(sorted.iter().map(|s| s.timeline))
        .collect();
    let mut out = Vec::new();
    for (i, s) in sorted.iter().enumerate() {
        let point = BackupPoint::from(*s);
        for &tli in &targets {
            let Some(from) = point.first_read_on(tree, tli, seg_size) else {
                continue;
            };
            let stop = (tli == s.timeline).then(|| segment_of(s.stop_lsn, seg_size));
            let next = sorted[i + 1..]
                .iter()
                .find(|n| tree.contains(tli, n.timeline, n.stop_lsn))
                .map(|n| segment_of(n.start_lsn, seg_size).saturating_sub(1));
            let Some(to) = next.or(last_of(tli)).or(stop) else {
                continue;
            };
            let to = to.max(stop.unwrap_or(0));
            if to >= from {
                out.push(WalNeed {
                    backup: s.id.clone(),
                    tli,
                    from,
                    stop,
                    to,
                });
            }
        }
    }
    out
}

/// The timelines a WAL gap cuts off, and the backups they are cut off from.
type CutOff = (BTreeSet<u32>, BTreeSet<String>);

/// The (relative path, problem) pairs of the damage below a tree; empty for a clean one.
type Hits = Rc<Vec<(String, usize)>>;

/// Pass 3's results per tree and chunk-list id: an entry per distinct tree or list.
#[derive(Default)]
struct Memo {
    trees: HashMap<Id, Hits>,
    lists: HashMap<Id, Vec<usize>>,
}

struct Checker<'a> {
    repo: &'a Repository,
    opts: CheckOptions,
    record: Option<Record>,
    seed: u64,
    report: Report,
    /// Packs by index, so a reference costs 4 bytes of pack id, not 32.
    pack_ids: Vec<Id>,
    pack_index: HashMap<Id, u32>,
    /// Every referenced blob: 24 bytes of key and value, 40–50 with the B-tree's overhead.
    refs: BTreeMap<(u32, u32), Expect>,
    /// Tree and chunk-list blobs already walked.
    walked: HashSet<Id>,
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

    fn pack_of(&mut self, id: Id) -> u32 {
        let next = self.pack_ids.len() as u32;
        *self.pack_index.entry(id).or_insert_with(|| {
            self.pack_ids.push(id);
            next
        })
    }

    fn note(&mut self, id: &Id, loc: &Loc, len: u32) {
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

    /// Pass 2 for one referenced pack.
    fn check_pack(&mut self, index: u32, key: &str) -> Result<()> {
        let refs: Vec<(u32, Expect)> = self
            .refs
            .range((index, 0)..=(index, u32::MAX))
            .map(|(&(_, off), &e)| (off, e))
            .collect();
        let backend = self.repo.backend();
        let mut read_whole = self.wants_data(key);
        let mut size = None;
        if read_whole && !self.opts.full && self.record.is_some() {
            let s = match backend.size(key) {
                Err(e) if e.is_not_found() => return self.missing_pack(index, key),
                other => other?,
            };
            size = Some(s);
            if self.fresh(key, s) {
                read_whole = false;
                self.report.packs_verified_earlier += 1;
            }
        }
        let (data, size) = if read_whole {
            let d = match backend.get(key) {
                Err(e) if e.is_not_found() => return self.missing_pack(index, key),
                other => other?,
            };
            self.read(d.len() as u64);
            let n = d.len() as u64;
            (Some(d), n)
        } else {
            let s = match size.map_or_else(|| backend.size(key), Ok) {
                Err(e) if e.is_not_found() => return self.missing_pack(index, key),
                other => other?,
            };
            (None, s)
        };
        let (table, blob_end) = match self.entry_table(key, size, data.as_deref())? {
            Ok(t) => t,
            Err(reason) => {
                let p = self.problem(Problem::new(ProblemKind::BadPack, key, reason));
                self.bad_packs.insert(index, p);
                return Ok(());
            }
        };
        let (findings, checked) = examine_pack(
            self.repo.crypto(),
            key,
            blob_end,
            &table,
            data.as_deref(),
            &refs,
        );
        self.report.blobs_checked += checked;
        if data.is_some() {
            self.report.packs_read += 1;
            if findings.is_empty() {
                self.remember(key, size)?;
            }
        }
        for f in findings {
            let p = self.problem(Problem::new(f.kind, key, f.detail));
            for off in f.offsets {
                self.bad_blobs.entry((index, off)).or_insert(p);
            }
        }
        Ok(())
    }

    /// The plain entry table of a pack and where it starts (where the blobs end), from the
    /// whole pack or from its end (one ranged read for tables up to `TABLE_GUESS`, two
    /// beyond); the inner error says why the trailer or table is unusable.
    fn entry_table(
        &mut self,
        key: &str,
        size: u64,
        data: Option<&[u8]>,
    ) -> Result<std::result::Result<(Vec<u8>, u64), String>> {
        let backend = self.repo.backend();
        let (end, end_at) = match data {
            Some(d) => (std::borrow::Cow::Borrowed(d), 0),
            None => {
                let at = size.saturating_sub(TABLE_GUESS);
                let e = backend.get_range(key, at, size - at)?;
                self.read(e.len() as u64);
                (std::borrow::Cow::Owned(e), at)
            }
        };
        let reason = |e: StoreError| match e {
            StoreError::Corrupt { reason, .. } => reason,
            other => other.to_string(),
        };
        let tail = &end[end.len().saturating_sub(pack::TAIL_LEN)..];
        let count = match pack::parse_tail(tail, key) {
            Ok(c) => c,
            Err(e) => return Ok(Err(reason(e))),
        };
        let crypto = self.repo.crypto();
        let start = match pack::table_start(size, count, crypto.table_overhead(), key) {
            Ok(s) => s,
            Err(e) => return Ok(Err(reason(e))),
        };
        let table_end = end.len() - pack::TAIL_LEN;
        let stored = if start >= end_at {
            end[(start - end_at) as usize..table_end].to_vec()
        } else {
            let t = backend.get_range(key, start, size - start - pack::TAIL_LEN as u64)?;
            self.read(t.len() as u64);
            t
        };
        Ok(crypto
            .open_table(key, &stored)
            .map(|table| (table, start))
            .map_err(reason))
    }

    fn missing_pack(&mut self, index: u32, key: &str) -> Result<()> {
        let p = self.problem(Problem::new(
            ProblemKind::MissingPack,
            key,
            "backups reference this pack, but it is not in the repository",
        ));
        self.bad_packs.insert(index, p);
        Ok(())
    }

    /// Pass 2 for packs: every referenced pack, in key order.
    fn check_packs(&mut self) -> Result<()> {
        let listed = self.repo.backend().list(keys::PACKS)?;
        let mut present = vec![false; self.pack_ids.len()];
        for key in &listed {
            let id = key.rsplit('/').next().and_then(Id::from_hex);
            match id.and_then(|id| self.pack_index.get(&id).copied()) {
                Some(i) => {
                    present[i as usize] = true;
                    tracing::debug!("checking {key}");
                    self.check_pack(i, key)?;
                }
                None => self.report.packs_unreferenced += 1,
            }
        }
        self.report.packs = self.pack_ids.len();
        for (i, seen) in present.iter().enumerate() {
            if !seen {
                let key = keys::pack(&self.pack_ids[i]);
                self.missing_pack(i as u32, &key)?;
            }
        }
        Ok(())
    }

    /// Pass 2 for one cluster's WAL: gaps in what each backup needs, and with `read_data`
    /// every archived file and summary.
    fn check_wal(
        &mut self,
        sysid: u64,
        system: &System,
        backups: &[&Snapshot],
        survey: &Survey,
    ) -> Result<()> {
        let seg_size = archive::segment_size(system);
        let have: HashMap<u32, &[u64]> = survey
            .timelines
            .iter()
            .map(|t| (t.timeline, t.wal.segnos.as_slice()))
            .collect();
        let needs = wal_needs(backups, seg_size, &survey.tree, |tli| {
            have.get(&tli).and_then(|v| v.last().copied())
        });
        let mut gaps: BTreeMap<(u32, u64, u64), usize> = BTreeMap::new();
        for need in &needs {
            let segnos = have.get(&need.tli).copied().unwrap_or_default();
            for (a, b) in missing_ranges(segnos, need.from, need.to) {
                let name = |s| segment_name(need.tli, s, seg_size);
                let p = match gaps.get(&(need.tli, a, b)) {
                    Some(&p) => p,
                    None => {
                        let missing = format!("WAL segments {} – {} are missing", name(a), name(b));
                        let detail = match need.stop {
                            Some(stop) if a <= stop => {
                                format!("{missing}: backup {} cannot be restored", need.backup)
                            }
                            Some(_) => format!(
                                "{missing}: recovery from backup {} stops before them",
                                need.backup
                            ),
                            None => format!(
                                "{missing}: recovery from backup {} along timeline {} stops \
                                 before them",
                                need.backup, need.tli
                            ),
                        };
                        let key = keys::wal_file(sysid, need.tli, &name(a));
                        let p = self.problem(Problem::new(ProblemKind::WalGap, key, detail));
                        gaps.insert((need.tli, a, b), p);
                        p
                    }
                };
                self.report.problems[p].backups.insert(need.backup.clone());
            }
        }
        let wal = self.repo.backend().list(&keys::wal_system(sysid))?;
        let sums = self
            .repo
            .backend()
            .list(&format!("{}{sysid}/", keys::WAL_SUMMARIES))?;
        self.report.wal_objects += wal.len() + sums.len();
        for (key, summary) in wal
            .iter()
            .map(|k| (k, false))
            .chain(sums.iter().map(|k| (k, true)))
        {
            if !self.wants_data(key) {
                continue;
            }
            if self.record.is_some() && !self.opts.full {
                match self.repo.backend().size(key) {
                    Ok(s) if self.fresh(key, s) => continue,
                    Err(e) if e.is_not_found() => continue,
                    other => {
                        other?;
                    }
                }
            }
            let raw = match self.repo.backend().get(key) {
                Err(e) if e.is_not_found() => continue,
                other => other?,
            };
            self.read(raw.len() as u64);
            self.report.wal_objects_read += 1;
            let opened = self.repo.crypto().open(key, &raw).and_then(|payload| {
                if summary {
                    serde_json::from_slice::<SegmentSummary>(&payload)
                        .map_err(|e| StoreError::corrupt(key, e.to_string()))?;
                }
                Ok(())
            });
            match opened {
                Ok(()) => self.remember(key, raw.len() as u64)?,
                Err(e) => {
                    let kind = if summary {
                        ProblemKind::BadWalSummary
                    } else {
                        ProblemKind::BadWal
                    };
                    let reason = match e {
                        StoreError::Corrupt { reason, .. } => reason,
                        other => other.to_string(),
                    };
                    let p = self.problem(Problem::new(kind, key, reason));
                    let name = key.rsplit('/').next().unwrap_or_default();
                    if let Some(WalFile::Segment { tli, segno } | WalFile::Partial { tli, segno }) =
                        WalFile::parse(name, seg_size)
                    {
                        for need in needs.iter().filter(|n| n.covers(tli, segno)) {
                            self.report.problems[p].backups.insert(need.backup.clone());
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Pass 2 for one cluster's timelines: history files, the WAL each fork needs from its
    /// ancestors, and timelines both being written.
    fn check_timelines(
        &mut self,
        sysid: u64,
        system: &System,
        backups: &[&Snapshot],
        survey: &Survey,
    ) -> Result<()> {
        let seg_size = archive::segment_size(system);
        let tree = &survey.tree;
        for &tli in &tree.missing {
            let name = WalFile::History { tli }.name(seg_size);
            let mut p = Problem::new(
                ProblemKind::MissingHistory,
                keys::wal_file(sysid, tli, &name),
                format!(
                    "timeline {tli} holds WAL but its history file {name} is missing or \
                     unreadable: recovery cannot follow timeline {tli} from a backup on an \
                     earlier timeline. Archive it again from pg_wal/{name} of the server that \
                     created timeline {tli} (pgsnapfs wal-push)"
                ),
            );
            p.backups.extend(
                backups
                    .iter()
                    .filter(|b| b.timeline < tli)
                    .map(|b| b.id.clone()),
            );
            self.problem(p);
        }
        let have: HashSet<(u32, u64)> = survey
            .timelines
            .iter()
            .flat_map(|t| t.wal.segnos.iter().map(move |s| (t.timeline, *s)))
            .collect();
        let have = |tli: u32, segno: u64| have.contains(&(tli, segno));
        // (timeline, first, last) of a gap -> the timelines it cuts off, and from which backups.
        let mut cut: BTreeMap<(u32, u64, u64), CutOff> = BTreeMap::new();
        for t in &survey.timelines {
            let Some(_) = t.parent else { continue };
            let tli = t.timeline;
            let reaching: Vec<&&Snapshot> = backups
                .iter()
                .filter(|b| b.timeline != tli && tree.contains(tli, b.timeline, b.stop_lsn))
                .collect();
            let Some(from) = reaching
                .iter()
                .map(|b| segment_of(b.start_lsn, seg_size))
                .min()
            else {
                continue;
            };
            // The ancestors' WAL up to the fork; and the switch segment itself once the
            // timeline has archived any (a newly promoted server has not yet).
            let first = tree.first_segment(tli, seg_size);
            let to = if t.wal.segnos.is_empty() {
                first.saturating_sub(1)
            } else {
                first
            };
            for gap in tree.missing_on_path(tli, from, to, seg_size, &have) {
                let e = cut.entry(gap).or_default();
                e.0.insert(tli);
                e.1.extend(
                    reaching
                        .iter()
                        .filter(|b| segment_of(b.start_lsn, seg_size) <= gap.2)
                        .map(|b| b.id.clone()),
                );
            }
        }
        for ((tli, a, b), (targets, affected)) in cut {
            let name = |s| segment_name(tli, s, seg_size);
            let forks: Vec<String> = targets
                .iter()
                .map(|t| match tree.parent(*t) {
                    Some((p, at)) => format!("timeline {t} (forked from timeline {p} at {at})"),
                    None => format!("timeline {t}"),
                })
                .collect();
            let mut p = Problem::new(
                ProblemKind::TimelineUnreachable,
                keys::wal_file(sysid, tli, &name(a)),
                format!(
                    "WAL segments {} – {} are missing: recovery from the backups before them \
                     cannot reach {}",
                    name(a),
                    name(b),
                    forks.join(", ")
                ),
            );
            p.backups = affected;
            self.problem(p);
        }
        for both in &survey.both_active {
            let [_, newer] = both.timelines;
            let name = WalFile::History { tli: newer }.name(seg_size);
            let w = Problem::new(
                ProblemKind::BothActive,
                keys::wal_file(sysid, newer, &name),
                both.describe(),
            );
            tracing::warn!("{}", w.detail);
            self.report.warnings.push(w);
        }
        Ok(())
    }

    fn hit(&self, loc: &Loc) -> Option<usize> {
        let pack = *self.pack_index.get(&loc.pack)?;
        self.bad_packs
            .get(&pack)
            .or_else(|| self.bad_blobs.get(&(pack, loc.offset)))
            .copied()
    }

    /// Pass 3: the damaged paths below a tree, relative to it; memoised per tree id.
    fn tree_hits(&mut self, r: &BlobRef, memo: &mut Memo) -> Hits {
        if let Some(h) = memo.trees.get(&r.id) {
            return h.clone();
        }
        let mut out = Vec::new();
        if let Some(p) = self.hit(&r.loc) {
            out.push((String::new(), p));
        } else if let Ok(dir) = self.repo.load_dir(r) {
            for node in &dir.entries {
                match &node.kind {
                    NodeKind::Dir { tree } => {
                        for (sub, p) in self.tree_hits(tree, memo).iter() {
                            let path = if sub.is_empty() {
                                node.name.clone()
                            } else {
                                format!("{}/{sub}", node.name)
                            };
                            out.push((path, *p));
                        }
                    }
                    NodeKind::File { lists, .. } => {
                        let mut ps = BTreeSet::new();
                        for l in lists {
                            ps.extend(self.list_hits(l, &mut memo.lists));
                        }
                        out.extend(ps.into_iter().map(|p| (node.name.clone(), p)));
                    }
                    NodeKind::Symlink { .. } => {}
                }
            }
        }
        let h = Rc::new(out);
        memo.trees.insert(r.id, h.clone());
        h
    }

    /// The problems touching a chunk list's chunks; memoised per list id (a changed file's
    /// unchanged lists are shared with other backups).
    fn list_hits(&self, l: &BlobRef, memo: &mut HashMap<Id, Vec<usize>>) -> Vec<usize> {
        if let Some(h) = memo.get(&l.id) {
            return h.clone();
        }
        let hits: BTreeSet<usize> = match self.hit(&l.loc) {
            Some(p) => [p].into(),
            None => match self.repo.load_chunk_list(l) {
                Ok(chunks) => chunks
                    .iter()
                    .filter_map(|c| c.loc.as_ref().and_then(|loc| self.hit(loc)))
                    .collect(),
                // Reported in pass 1.
                Err(_) => BTreeSet::new(),
            },
        };
        let hits: Vec<usize> = hits.into_iter().collect();
        memo.insert(l.id, hits.clone());
        hits
    }

    fn attribute(&mut self, snapshots: &[Snapshot]) {
        let mut memo = Memo::default();
        for s in snapshots {
            for (path, p) in self.tree_hits(&s.root, &mut memo).iter() {
                let problem = &mut self.report.problems[*p];
                problem.backups.insert(s.id.clone());
                problem.files.insert(if path.is_empty() {
                    ".".into()
                } else {
                    path.clone()
                });
            }
        }
    }
}

/// Checks the repository. Problems found go into the report; an error means the check could
/// not run (the back end failed, the record could not be written).
pub fn check(repo: &Repository, opts: CheckOptions) -> Result<Report> {
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
    let mut sysids: BTreeSet<u64> = snapshots.iter().map(Snapshot::sysid).collect();
    for key in repo.backend().list(keys::SYSTEMS)? {
        if let Ok(id) = key.trim_start_matches(keys::SYSTEMS).parse() {
            sysids.insert(id);
        }
    }
    for sysid in sysids {
        let backups: Vec<&Snapshot> = snapshots.iter().filter(|s| s.sysid() == sysid).collect();
        let system = match archive::load_system(repo, sysid) {
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
                    system_identifier: sysid.to_string(),
                    pg_major: 0,
                    wal_segment_size: backups.first().map_or(0, |s| s.wal_segment_size),
                    registered: chrono::Utc::now(),
                }
            }
        };
        let survey = timelines::survey(repo, &system, &backups)?;
        c.check_wal(sysid, &system, &backups, &survey)?;
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
            id: Id::default(),
            loc: Loc {
                pack: Id::default(),
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
            w.add(Id::of(&blob), BlobType::Data, &stored, blob.len() as u32);
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
                system_identifier: "7".into(),
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
                system_identifier: "7".into(),
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
