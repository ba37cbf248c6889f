//! The durable layer's metadata journal: every change to the copy-on-write state, as
//! records appended to `journal` in the layer's directory, replayed at mount.
//!
//! Format (version 1, little-endian): an 8-byte magic `PGSFSCOW`, the version (u32) and the
//! block size (u32), then frames: payload length (u32), CRC-32 of the payload (u32), and
//! the payload, one or more records. A frame is one change (a rename's two names, say), so
//! replay applies a change whole or not at all. Replay stops at the first frame that is
//! cut short or fails its checksum: the torn tail of a crash, written but never synced.
//!
//! Source nodes are named by path, not by node id, which the source need only keep for
//! one mount: a [`Record::Source`] says which (parent, name) a node id stands for in the
//! rest of the journal, before its first use.
//!
//! The journal is compacted at mount and at clean unmount: the whole state is written to
//! `journal.new`, synced, and renamed over `journal`, so a crash leaves one or the other.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::inode::{Ino, FIRST_CREATED};
use crate::source::{Kind, ROOT};
use crate::Error;

const MAGIC: &[u8; 8] = b"PGSFSCOW";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 16;
pub(crate) const JOURNAL: &str = "journal";
const JOURNAL_NEW: &str = "journal.new";
/// Data files are named `<id>.blocks`.
const DATA_SUFFIX: &str = ".blocks";

/// One change to the copy-on-write state.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Record {
    /// Source node `ino` is `name` in source directory `parent`, for the records after it.
    Source {
        ino: Ino,
        parent: Ino,
        name: OsString,
    },
    /// The attributes of an inode; `nlink == 0`: it is gone.
    Node {
        ino: Ino,
        kind: Kind,
        perm: Option<u16>,
        mtime: Option<SystemTime>,
        nlink: u32,
        target: Option<PathBuf>,
    },
    /// A name added to or removed from a directory.
    Name {
        dir: Ino,
        dir_mtime: SystemTime,
        name: OsString,
        change: NameChange,
    },
    /// A regular file's data: blocks synced to its data file, size and times.
    File(FileRecord),
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum NameChange {
    Add(Ino),
    /// `hide`: a whiteout hides the source's entry of that name.
    Remove {
        hide: bool,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct FileRecord {
    pub(crate) ino: Ino,
    /// The data file's name in the layer's directory.
    pub(crate) data: OsString,
    /// The source's bytes show through (the file came from the source).
    pub(crate) origin: bool,
    pub(crate) size: u64,
    pub(crate) source_len: u64,
    pub(crate) mtime: SystemTime,
    /// Truncated: blocks from this one on are dropped before `words` are added.
    pub(crate) cut: Option<u64>,
    /// Blocks now in the data file, as (word, bits) of 64 blocks each.
    pub(crate) words: Vec<(u64, u64)>,
}

impl Record {
    /// The source nodes the record names, which must be declared before it.
    fn source_nodes(&self) -> Vec<Ino> {
        let inos = match self {
            Record::Source { .. } => vec![],
            Record::Node { ino, .. } => vec![*ino],
            Record::Name { dir, change, .. } => match change {
                NameChange::Add(ino) => vec![*dir, *ino],
                NameChange::Remove { .. } => vec![*dir],
            },
            Record::File(f) => vec![f.ino],
        };
        inos.into_iter()
            .filter(|&i| i < FIRST_CREATED && i != ROOT)
            .collect()
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Record::Source { ino, parent, name } => {
                out.push(1);
                put_u64(out, *ino);
                put_u64(out, *parent);
                put_bytes(out, name.as_bytes());
            }
            Record::Node {
                ino,
                kind,
                perm,
                mtime,
                nlink,
                target,
            } => {
                out.push(2);
                put_u64(out, *ino);
                out.push(kind_code(*kind));
                out.push(u8::from(perm.is_some()));
                out.extend_from_slice(&perm.unwrap_or(0).to_le_bytes());
                out.push(u8::from(mtime.is_some()));
                put_time(out, mtime.unwrap_or(UNIX_EPOCH));
                put_u32(out, *nlink);
                out.push(u8::from(target.is_some()));
                put_bytes(
                    out,
                    target
                        .as_ref()
                        .map_or(&[][..], |t| t.as_os_str().as_bytes()),
                );
            }
            Record::Name {
                dir,
                dir_mtime,
                name,
                change,
            } => {
                out.push(3);
                put_u64(out, *dir);
                put_time(out, *dir_mtime);
                put_bytes(out, name.as_bytes());
                match change {
                    NameChange::Add(ino) => {
                        out.push(0);
                        put_u64(out, *ino);
                    }
                    NameChange::Remove { hide } => {
                        out.push(1);
                        out.push(u8::from(*hide));
                    }
                }
            }
            Record::File(f) => {
                out.push(4);
                put_u64(out, f.ino);
                put_bytes(out, f.data.as_bytes());
                out.push(u8::from(f.origin));
                put_u64(out, f.size);
                put_u64(out, f.source_len);
                put_time(out, f.mtime);
                out.push(u8::from(f.cut.is_some()));
                put_u64(out, f.cut.unwrap_or(0));
                put_u32(out, f.words.len() as u32);
                for (word, bits) in &f.words {
                    put_u64(out, *word);
                    put_u64(out, *bits);
                }
            }
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Record, Error> {
        Ok(match r.u8()? {
            1 => Record::Source {
                ino: r.u64()?,
                parent: r.u64()?,
                name: r.os()?,
            },
            2 => {
                let ino = r.u64()?;
                let kind = kind_of(r.u8()?)?;
                let has_perm = r.u8()? != 0;
                let perm = u16::from_le_bytes([r.u8()?, r.u8()?]);
                let has_mtime = r.u8()? != 0;
                let mtime = r.time()?;
                let nlink = r.u32()?;
                let has_target = r.u8()? != 0;
                let target = PathBuf::from(r.os()?);
                Record::Node {
                    ino,
                    kind,
                    perm: has_perm.then_some(perm),
                    mtime: has_mtime.then_some(mtime),
                    nlink,
                    target: has_target.then_some(target),
                }
            }
            3 => {
                let dir = r.u64()?;
                let dir_mtime = r.time()?;
                let name = r.os()?;
                let change = match r.u8()? {
                    0 => NameChange::Add(r.u64()?),
                    1 => NameChange::Remove { hide: r.u8()? != 0 },
                    other => return Err(bad(format!("name change {other}"))),
                };
                Record::Name {
                    dir,
                    dir_mtime,
                    name,
                    change,
                }
            }
            4 => {
                let ino = r.u64()?;
                let data = r.os()?;
                let origin = r.u8()? != 0;
                let size = r.u64()?;
                let source_len = r.u64()?;
                let mtime = r.time()?;
                let has_cut = r.u8()? != 0;
                let cut = r.u64()?;
                let n = r.u32()? as usize;
                let mut words = Vec::with_capacity(n.min(r.left() / 16));
                for _ in 0..n {
                    words.push((r.u64()?, r.u64()?));
                }
                Record::File(FileRecord {
                    ino,
                    data,
                    origin,
                    size,
                    source_len,
                    mtime,
                    cut: has_cut.then_some(cut),
                    words,
                })
            }
            other => return Err(bad(format!("record type {other}"))),
        })
    }
}

/// The journal being appended to, and what it knows of source paths.
pub(crate) struct Journal {
    dir: PathBuf,
    block_size: u32,
    out: Mutex<Out>,
    /// (parent, name) of every source node looked up, to declare it when first named.
    origins: Mutex<HashMap<Ino, (Ino, OsString)>>,
    next_data: AtomicU64,
    /// Data files of dropped files, whose removal may not be in the journal yet.
    dropped: Mutex<Vec<PathBuf>>,
    /// Data files whose removal is in the journal: deleted once it is synced.
    doomed: Mutex<Vec<PathBuf>>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

struct Out {
    file: Arc<File>,
    /// Source nodes declared in the current journal file.
    declared: HashSet<Ino>,
    /// An append or sync failed: the file may end in part of a frame, after which replay
    /// would drop every later frame, or hold records never synced. Every later append and
    /// sync fails until the next rewrite (a remount), so no fsync is acknowledged that a
    /// replay would not honour.
    broken: bool,
}

impl Journal {
    /// Reads the journal in `dir` (created 0700 if missing): the records of every whole
    /// frame, and a journal to go on with once the state is rebuilt and [`Self::rewrite`]n.
    pub(crate) fn open(dir: &Path, block_size: u32) -> Result<(Journal, Vec<Record>), Error> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::context(e, format!("create {}", dir.display())))?;
        // A compaction that did not finish: the journal is still whole.
        match std::fs::remove_file(dir.join(JOURNAL_NEW)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::context(e, format!("remove {JOURNAL_NEW}")))
            }
            _ => {}
        }
        let path = dir.join(JOURNAL);
        let records = match std::fs::read(&path) {
            Ok(bytes) => parse(&bytes, block_size, &path)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Error::context(e, format!("read {}", path.display()))),
        };
        let next = records
            .iter()
            .filter_map(|r| match r {
                Record::File(f) => data_id(&f.data),
                _ => None,
            })
            .max()
            .map_or(0, |id| id + 1);
        // Appends go nowhere until the first rewrite opens the new journal.
        let placeholder = File::open("/dev/null").map_err(|e| Error::context(e, "/dev/null"))?;
        Ok((
            Journal {
                dir: dir.to_owned(),
                block_size,
                out: Mutex::new(Out {
                    file: Arc::new(placeholder),
                    declared: HashSet::new(),
                    broken: false,
                }),
                origins: Mutex::new(HashMap::new()),
                next_data: AtomicU64::new(next),
                dropped: Mutex::new(Vec::new()),
                doomed: Mutex::new(Vec::new()),
            },
            records,
        ))
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// A new data file's path (never one the journal names).
    pub(crate) fn new_data_path(&self) -> PathBuf {
        let id = self.next_data.fetch_add(1, Ordering::Relaxed);
        self.dir.join(format!("{id:016x}{DATA_SUFFIX}"))
    }

    /// Source node `node` is `name` in `parent`.
    pub(crate) fn learn(&self, node: Ino, parent: Ino, name: &std::ffi::OsStr) {
        if let Ok(mut origins) = self.origins.lock() {
            origins
                .entry(node)
                .or_insert_with(|| (parent, name.to_owned()));
        }
    }

    /// Appends `records` as one frame, declaring the source nodes they name first. Not
    /// synced: see [`Self::sync`].
    pub(crate) fn append(&self, records: &[Record]) -> Result<(), Error> {
        if records.is_empty() {
            return Ok(());
        }
        let mut out = self.lock_out()?;
        self.usable(&out)?;
        let mut all = Vec::new();
        for record in records {
            for ino in record.source_nodes() {
                self.declare(&mut out.declared, ino, &mut all)?;
            }
            all.push(record.clone());
        }
        let frame = frame(&all);
        let written = (&*out.file).write_all(&frame);
        out.broken = written.is_err();
        written
            .map_err(|e| Error::context(e, format!("append to {}", self.journal_path().display())))
    }

    /// Refuses to go on with a journal an append or sync failed on.
    fn usable(&self, out: &Out) -> Result<(), Error> {
        match out.broken {
            true => Err(Error::io(format!(
                "{} failed earlier: changes are refused until the file system is mounted again",
                self.journal_path().display()
            ))),
            false => Ok(()),
        }
    }

    /// Makes every record appended so far durable, then deletes the data files whose
    /// removal that made durable.
    pub(crate) fn sync(&self) -> Result<(), Error> {
        // Synced outside the lock: appends go on meanwhile, and what came before is covered.
        let file = {
            let out = self.lock_out()?;
            self.usable(&out)?;
            out.file.clone()
        };
        let doomed = std::mem::take(&mut *lock(&self.doomed)?);
        if let Err(e) = file.sync_data() {
            self.lock_out()?.broken = true;
            return Err(Error::context(
                e,
                format!("sync {}", self.journal_path().display()),
            ));
        }
        for path in doomed {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    tracing::warn!("remove data file {}: {e}", path.display())
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The data file at `path` belongs to a file that is gone: deleted once its removal is
    /// journaled ([`Self::doom_dropped`]) and synced.
    pub(crate) fn drop_data(&self, path: PathBuf) {
        if let Ok(mut dropped) = self.dropped.lock() {
            dropped.push(path);
        }
    }

    /// Every change so far is appended (the caller holds the inode table, whose changes
    /// drop files only after journaling their removal): the files dropped so far may go at
    /// the next sync.
    pub(crate) fn doom_dropped(&self) -> Result<(), Error> {
        let dropped = std::mem::take(&mut *lock(&self.dropped)?);
        lock(&self.doomed)?.extend(dropped);
        Ok(())
    }

    /// Makes the data files' names durable (new data files are created in the directory).
    pub(crate) fn sync_dir(&self) -> Result<(), Error> {
        sync_dir(&self.dir)
    }

    /// Replaces the journal with `state` (the whole state, as records), atomically, and
    /// removes data files it does not name.
    pub(crate) fn rewrite(&self, state: &[Record]) -> Result<(), Error> {
        let mut out = self.lock_out()?;
        let mut declared = HashSet::new();
        let new_path = self.dir.join(JOURNAL_NEW);
        let mut bytes = header(self.block_size);
        for record in state {
            let mut all = Vec::new();
            for ino in record.source_nodes() {
                self.declare(&mut declared, ino, &mut all)?;
            }
            all.push(record.clone());
            bytes.extend_from_slice(&frame(&all));
        }
        let failed = |e, what: &str| Error::context(e, format!("{what} {}", new_path.display()));
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&new_path)
            .map_err(|e| failed(e, "create"))?;
        file.write_all(&bytes).map_err(|e| failed(e, "write"))?;
        file.sync_all().map_err(|e| failed(e, "sync"))?;
        drop(file);
        let path = self.journal_path();
        std::fs::rename(&new_path, &path).map_err(|e| failed(e, "rename"))?;
        sync_dir(&self.dir)?;
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| Error::context(e, format!("open {}", path.display())))?;
        *out = Out {
            file: Arc::new(file),
            declared,
            broken: false,
        };
        drop(out);
        self.remove_unnamed(state)
    }

    /// Data files the state does not name: written and never synced, or dropped.
    fn remove_unnamed(&self, state: &[Record]) -> Result<(), Error> {
        let named: HashSet<&OsString> = state
            .iter()
            .filter_map(|r| match r {
                Record::File(f) => Some(&f.data),
                _ => None,
            })
            .collect();
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|e| Error::context(e, format!("list {}", self.dir.display())))?;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            if data_id(&name).is_some() && !named.contains(&name) {
                std::fs::remove_file(entry.path())
                    .map_err(|e| Error::context(e, format!("remove {}", entry.path().display())))?;
            }
        }
        Ok(())
    }

    /// Pushes the Source records `ino` needs (its parents' first), unless declared.
    fn declare(
        &self,
        declared: &mut HashSet<Ino>,
        ino: Ino,
        out: &mut Vec<Record>,
    ) -> Result<(), Error> {
        let origins = self
            .origins
            .lock()
            .map_err(|_| Error::io("journal poisoned by an earlier panic"))?;
        let mut chain = Vec::new();
        let mut node = ino;
        while node != ROOT && !declared.contains(&node) {
            let (parent, name) = origins
                .get(&node)
                .ok_or_else(|| Error::io(format!("source node {node}: its path is not known")))?;
            chain.push(Record::Source {
                ino: node,
                parent: *parent,
                name: name.clone(),
            });
            node = *parent;
        }
        for record in chain.into_iter().rev() {
            if let Record::Source { ino, .. } = &record {
                declared.insert(*ino);
            }
            out.push(record);
        }
        Ok(())
    }

    fn journal_path(&self) -> PathBuf {
        self.dir.join(JOURNAL)
    }

    fn lock_out(&self) -> Result<MutexGuard<'_, Out>, Error> {
        self.out
            .lock()
            .map_err(|_| Error::io("journal poisoned by an earlier panic"))
    }
}

fn lock<T>(m: &Mutex<T>) -> Result<MutexGuard<'_, T>, Error> {
    m.lock()
        .map_err(|_| Error::io("journal poisoned by an earlier panic"))
}

/// The id of a data file named `<16 hex digits>.blocks`.
fn data_id(name: &std::ffi::OsStr) -> Option<u64> {
    let name = name.to_str()?.strip_suffix(DATA_SUFFIX)?;
    (name.len() == 16)
        .then(|| u64::from_str_radix(name, 16).ok())
        .flatten()
}

fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::context(e, format!("sync {}", dir.display())))
}

fn header(block_size: u32) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    put_u32(&mut out, VERSION);
    put_u32(&mut out, block_size);
    out
}

fn frame(records: &[Record]) -> Vec<u8> {
    let mut payload = Vec::new();
    for record in records {
        record.encode(&mut payload);
    }
    let mut out = Vec::with_capacity(payload.len() + 8);
    put_u32(&mut out, payload.len() as u32);
    put_u32(&mut out, crc32fast::hash(&payload));
    out.extend_from_slice(&payload);
    out
}

/// The records of every whole frame of a journal; a torn tail ends it.
pub(crate) fn parse(bytes: &[u8], block_size: u32, path: &Path) -> Result<Vec<Record>, Error> {
    let corrupt =
        |what: String| Error::new(libc::EUCLEAN, format!("journal {}: {what}", path.display()));
    if bytes.len() < HEADER_LEN || &bytes[..8] != MAGIC {
        return Err(corrupt("not a copy-on-write journal".into()));
    }
    let mut head = Reader(&bytes[8..HEADER_LEN]);
    let (version, size) = (head.u32()?, head.u32()?);
    if version != VERSION {
        return Err(corrupt(format!(
            "format version {version}; this build reads {VERSION}"
        )));
    }
    if size != block_size {
        return Err(corrupt(format!(
            "kept with block size {size}, mounted with {block_size}"
        )));
    }
    let mut records = Vec::new();
    let mut pos = HEADER_LEN;
    while pos < bytes.len() {
        let Some(frame_head) = bytes.get(pos..pos + 8) else {
            break;
        };
        let mut r = Reader(frame_head);
        let (len, crc) = (r.u32()? as usize, r.u32()?);
        let Some(payload) = bytes.get(pos + 8..pos + 8 + len) else {
            break;
        };
        if crc32fast::hash(payload) != crc {
            break;
        }
        let mut r = Reader(payload);
        while r.left() > 0 {
            records.push(Record::decode(&mut r).map_err(|e| corrupt(e.message))?);
        }
        pos += 8 + len;
    }
    if pos < bytes.len() {
        tracing::warn!(
            "journal {}: {} bytes after offset {pos} are a torn tail (never synced): ignored",
            path.display(),
            bytes.len() - pos
        );
    }
    Ok(records)
}

fn kind_code(kind: Kind) -> u8 {
    match kind {
        Kind::Dir => 0,
        Kind::File => 1,
        Kind::Symlink => 2,
    }
}

fn kind_of(code: u8) -> Result<Kind, Error> {
    match code {
        0 => Ok(Kind::Dir),
        1 => Ok(Kind::File),
        2 => Ok(Kind::Symlink),
        other => Err(bad(format!("kind {other}"))),
    }
}

fn bad(what: String) -> Error {
    Error::new(libc::EUCLEAN, format!("bad record: {what}"))
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, b.len() as u32);
    out.extend_from_slice(b);
}

/// Seconds and nanoseconds since the epoch (times before it are kept as the epoch).
fn put_time(out: &mut Vec<u8>, t: SystemTime) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    put_u64(out, d.as_secs());
    put_u32(out, d.subsec_nanos());
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], Error> {
        if self.0.len() < n {
            return Err(bad("cut short".into()));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn left(&self) -> usize {
        self.0.len()
    }

    fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, Error> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, Error> {
        let mut a = [0; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }

    fn os(&mut self) -> Result<OsString, Error> {
        let n = self.u32()? as usize;
        Ok(OsString::from_vec(self.take(n)?.to_vec()))
    }

    fn time(&mut self) -> Result<SystemTime, Error> {
        let secs = self.u64()?;
        let nanos = self.u32()?;
        UNIX_EPOCH
            .checked_add(Duration::new(secs, nanos.min(999_999_999)))
            .ok_or_else(|| Error::io(format!("a journal time of {secs} s is out of range")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Record> {
        vec![
            Record::Source {
                ino: 7,
                parent: ROOT,
                name: "base".into(),
            },
            Record::Node {
                ino: FIRST_CREATED,
                kind: Kind::Symlink,
                perm: Some(0o777),
                mtime: Some(UNIX_EPOCH + Duration::new(5, 6)),
                nlink: 1,
                target: Some("/x".into()),
            },
            Record::Name {
                dir: 7,
                dir_mtime: UNIX_EPOCH + Duration::from_secs(9),
                name: "n".into(),
                change: NameChange::Remove { hide: true },
            },
            Record::File(FileRecord {
                ino: 7,
                data: "0000000000000001.blocks".into(),
                origin: true,
                size: 10,
                source_len: 8,
                mtime: UNIX_EPOCH,
                cut: Some(3),
                words: vec![(0, 5), (9, 1)],
            }),
        ]
    }

    #[test]
    fn records_round_trip_and_a_torn_tail_is_dropped() {
        let mut bytes = header(8192);
        for r in samples() {
            bytes.extend_from_slice(&frame(&[r]));
        }
        let path = Path::new("j");
        assert_eq!(parse(&bytes, 8192, path).unwrap(), samples());
        let whole = bytes.len();
        bytes.extend_from_slice(&frame(&samples()));
        // Every cut inside the last frame drops that frame only.
        for cut in whole..bytes.len() {
            assert_eq!(parse(&bytes[..cut], 8192, path).unwrap(), samples());
        }
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert_eq!(parse(&bytes, 8192, path).unwrap(), samples());
        assert_eq!(parse(&bytes, 4096, path).unwrap_err().errno, libc::EUCLEAN);
    }

    #[test]
    fn data_file_names() {
        assert_eq!(data_id("000000000000000a.blocks".as_ref()), Some(10));
        assert_eq!(data_id("journal".as_ref()), None);
        assert_eq!(data_id("a.blocks".as_ref()), None);
    }

    #[test]
    fn after_a_failed_append_or_sync_nothing_more_is_acknowledged_until_a_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(dir.path(), 8192).unwrap();
        journal.learn(7, ROOT, std::ffi::OsStr::new("base"));
        journal.rewrite(&[]).unwrap();
        journal.append(&samples()).unwrap();
        journal.sync().unwrap();
        // As a short write or an EIO from the disk leaves it.
        journal.lock_out().unwrap().broken = true;
        assert_eq!(journal.append(&samples()).unwrap_err().errno, libc::EIO);
        assert_eq!(journal.sync().unwrap_err().errno, libc::EIO);
        journal.rewrite(&samples()).unwrap();
        journal.append(&samples()).unwrap();
        journal.sync().unwrap();
    }
}
