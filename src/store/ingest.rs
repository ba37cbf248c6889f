//! Ingest: turns a directory tree on disk into chunks and tree blobs, reusing what a parent
//! snapshot already stored.
//!
//! Reading stays on the calling thread, in file order, so packs keep files together; hashing
//! and compression run on a worker pool, with a bounded window of chunks in flight. A chunk
//! is compared first with the chunk at the same position in the parent's file, then with the
//! blobs stored earlier in this run. Memory: the window, one pack, the parent's chunk refs of
//! the file being read, and about 100 bytes per blob newly stored in this run.
//!
//! A caller that knows which chunks of a file changed since the parent (PostgreSQL's WAL
//! summaries) can say so with [`Ingest::set_known_changes`]: the other chunks are then
//! taken from the parent without being read.

use super::crypto::Crypto;
use super::pack::BlobType;
use super::tree::{encode_chunk_list, BlobRef, Chunk, Dir, Loc, Node, NodeKind, LIST_FANOUT};
use super::{BlobId, Packer, Repository, StoreError};
use crossbeam_channel::{bounded, Receiver, Sender};
use std::collections::{HashMap, VecDeque};
use std::fs::{self, File};
use std::io::{Cursor, ErrorKind, Read, Seek, SeekFrom};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// What to do with a path met while walking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visit {
    /// Store it (a directory: walk into it).
    Keep,
    /// Keep the directory but none of its contents.
    Empty,
    /// Leave it out.
    Skip,
    /// A symlink to store as the directory it points to.
    Follow,
}

/// What an ingest did, for reports and progress.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Regular files stored.
    pub files: u64,
    /// Bytes of those files.
    pub bytes: u64,
    /// Chunks written to new packs.
    pub chunks_new: u64,
    /// Chunks already stored (reused, not uploaded again).
    pub chunks_reused: u64,
    /// All-zero chunks, which are never stored.
    pub chunks_zero: u64,
    /// Bytes taken from the parent without reading them (see [`KnownChanges`]).
    pub bytes_skipped: u64,
}

/// Which chunks of a file may have changed since the parent snapshot: those listed (sorted,
/// numbered from the file's start) and every chunk from `read_from` on. The others are
/// the parent's, unread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownChanges {
    /// The chunks (numbered from the file's start, sorted) that may have changed before `read_from`.
    pub changed: Vec<u64>,
    /// The first chunk from which every chunk is read.
    pub read_from: u64,
}

impl KnownChanges {
    fn unchanged(&self, chunk: u64) -> bool {
        chunk < self.read_from && self.changed.binary_search(&chunk).is_err()
    }
}

/// What to do with an entry that disappears between listing its directory and reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Vanished {
    /// Fail the ingest with the read error.
    #[default]
    Fail,
    /// Leave it out, as if it had not been listed: for callers whose data accounts for
    /// removals some other way.
    Skip,
}

/// Answers, for a file's path relative to the ingested root, what is known of its changes.
pub type ChangeOracle<'r> = Box<dyn Fn(&str) -> Option<KnownChanges> + 'r>;

/// A file read with known changes: what is known, its size when opened, and its descriptor
/// for read-ahead hints.
struct Skipping {
    known: KnownChanges,
    size_at_open: u64,
    fd: RawFd,
}

/// How far ahead of the reader a skipping read asks the kernel for the chunks it will read:
/// reads between skips are not sequential, so the kernel's own read-ahead stops.
const PREFETCH_BYTES: u64 = 32 << 20;

/// Errors while ingesting: the store's, or reading the source tree.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The chunk store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file or directory of the source could not be read.
    #[error("read {path}: {source}")]
    Read {
        /// The path that could not be read.
        path: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A path whose name is not UTF-8, which trees cannot hold.
    #[error("{path}: file names must be UTF-8")]
    BadName {
        /// The path, lossily decoded.
        path: String,
    },
}

/// Where a blob stored in this run is, with the crc32c of its stored bytes when it is a
/// chunk and the repository records crcs (see `Chunk::crc`).
type Placed = (Loc, Option<u32>);

type Known = Arc<Mutex<HashMap<BlobId, Placed>>>;

/// The map stays valid if a worker panicked holding it: workers only look up.
fn lock(known: &Known) -> MutexGuard<'_, HashMap<BlobId, Placed>> {
    known.lock().unwrap_or_else(PoisonError::into_inner)
}

enum Outcome {
    Zero,
    /// Equal to the parent's chunk at the same position.
    Same,
    Known(BlobId, Placed),
    New {
        id: BlobId,
        stored: Vec<u8>,
    },
}

struct Job {
    data: Vec<u8>,
    expect: Option<BlobId>,
    reply: Sender<Outcome>,
}

fn work(job: Job, known: &Known, crypto: &Crypto, level: i32) {
    let data = &job.data;
    let outcome = if data.iter().all(|b| *b == 0) {
        Outcome::Zero
    } else {
        let id = crypto.id(data);
        let hit = lock(known).get(&id).copied();
        match hit {
            _ if job.expect == Some(id) => Outcome::Same,
            Some(placed) => Outcome::Known(id, placed),
            None => Outcome::New {
                id,
                stored: crypto.encode_blob(&id, data, level),
            },
        }
    };
    let _ = job.reply.send(outcome);
}

/// Stores directory trees into the repository: cuts files into chunks, skips those already stored, packs the rest, and writes tree and chunk-list blobs, returning each root as a [`BlobRef`] for a snapshot.
pub struct Ingest<'r> {
    repo: &'r Repository,
    packer: Packer<'r>,
    /// Trees and chunk lists go to packs of their own, so a reader of a backup's metadata
    /// fetches it in a few large reads instead of one per file.
    meta_packer: Packer<'r>,
    known: Known,
    jobs: Option<Sender<Job>>,
    workers: Vec<std::thread::JoinHandle<()>>,
    window: usize,
    /// What has been stored so far.
    pub stats: Stats,
    progress: Box<dyn Fn(u64) + 'r>,
    changes: Option<ChangeOracle<'r>>,
    vanished: Vanished,
}

impl<'r> Ingest<'r> {
    /// `progress` is called with the number of bytes read as reading goes on.
    pub fn new(
        repo: &'r Repository,
        threads: usize,
        progress: Box<dyn Fn(u64) + 'r>,
    ) -> Ingest<'r> {
        let known: Known = Arc::default();
        let (tx, rx) = bounded::<Job>(threads * 4);
        let level = repo.config.compression_level;
        let workers = (0..threads.max(1))
            .map(|_| {
                let rx = rx.clone();
                let known = known.clone();
                let crypto = repo.crypto().clone();
                std::thread::spawn(move || {
                    for job in rx {
                        work(job, &known, &crypto, level);
                    }
                })
            })
            .collect();
        Ingest {
            repo,
            packer: Packer::new(repo, repo.config.pack_size as usize),
            meta_packer: Packer::new(repo, repo.config.pack_size as usize),
            known,
            jobs: Some(tx),
            workers,
            window: threads.max(1) * 4,
            stats: Stats::default(),
            progress,
            changes: None,
            vanished: Vanished::Fail,
        }
    }

    /// From now on, files with a parent are read only where `oracle` says they may have
    /// changed. The caller vouches that every other chunk equals the parent's.
    pub fn set_known_changes(&mut self, oracle: ChangeOracle<'r>) {
        self.changes = Some(oracle);
    }

    /// Sets what happens to entries that vanish while the tree is read.
    pub fn set_vanished(&mut self, policy: Vanished) {
        self.vanished = policy;
    }

    /// Stores a tree or list blob unless the parent's blob or one from this run is identical.
    fn store_blob(
        &mut self,
        kind: BlobType,
        data: &[u8],
        parent: Option<&BlobRef>,
    ) -> Result<BlobRef, StoreError> {
        let id = self.repo.crypto().id(data);
        if let Some(p) = parent.filter(|p| p.id == id) {
            return Ok(*p);
        }
        if let Some((loc, _)) = lock(&self.known).get(&id) {
            return Ok(BlobRef {
                id,
                loc: *loc,
                len: data.len() as u32,
            });
        }
        let r = self.meta_packer.add_blob(kind, data)?;
        lock(&self.known).insert(id, (r.loc, None));
        Ok(r)
    }

    fn resolve(
        &mut self,
        outcome: Outcome,
        len: u32,
        parent: Option<&Chunk>,
    ) -> Result<Chunk, StoreError> {
        Ok(match outcome {
            Outcome::Zero => {
                self.stats.chunks_zero += 1;
                Chunk {
                    id: BlobId::default(),
                    len,
                    loc: None,
                    crc: None,
                }
            }
            Outcome::Same => {
                self.stats.chunks_reused += 1;
                *parent.expect("Same only when the parent has a chunk here")
            }
            Outcome::Known(id, (loc, crc)) => {
                self.stats.chunks_reused += 1;
                Chunk {
                    id,
                    len,
                    loc: Some(loc),
                    crc,
                }
            }
            Outcome::New { id, stored } => {
                let hit = lock(&self.known).get(&id).copied();
                let (loc, crc) = match hit {
                    // Another worker stored the same chunk while this one compressed it.
                    Some(placed) => placed,
                    None => {
                        let loc = self.packer.add(id, BlobType::Data, &stored, len)?;
                        let crc = self.repo.records_crcs().then(|| crc32c::crc32c(&stored));
                        lock(&self.known).insert(id, (loc, crc));
                        self.stats.chunks_new += 1;
                        (loc, crc)
                    }
                };
                Chunk {
                    id,
                    len,
                    loc: Some(loc),
                    crc,
                }
            }
        })
    }

    /// Chunks a stream; returns its size and chunk-list refs. With `skipping`, unchanged
    /// chunks of the length the parent stored are skipped and taken from the parent.
    fn ingest_stream(
        &mut self,
        mut reader: impl Read + Seek,
        path: &str,
        parent_lists: &[BlobRef],
        skipping: Option<Skipping>,
    ) -> Result<(u64, Vec<BlobRef>), IngestError> {
        let parent_chunks = self.repo.file_chunks(parent_lists)?;
        let chunk_size = self.repo.config.chunk_size as usize;
        let mut chunks: Vec<Chunk> = Vec::new();
        let mut pending: VecDeque<(Receiver<Outcome>, u32)> = VecDeque::new();
        let mut size = 0u64;
        let read_err = |source| IngestError::Read {
            path: path.to_string(),
            source,
        };
        // The length of chunk `idx` when it is skipped; chunks before it are all full.
        let skip_len = |idx: usize| -> Option<usize> {
            let s = skipping.as_ref()?;
            let start = (idx * chunk_size) as u64;
            let len = s.size_at_open.saturating_sub(start).min(chunk_size as u64);
            let same_len = parent_chunks
                .get(idx)
                .is_some_and(|c| u64::from(c.len) == len);
            (len > 0 && same_len && s.known.unchanged(idx as u64)).then_some(len as usize)
        };
        let prefetch_chunks = (PREFETCH_BYTES as usize / chunk_size).max(1);
        let mut advised = 0;
        loop {
            let idx = chunks.len() + pending.len();
            if let Some(s) = &skipping {
                let end = (s.size_at_open.div_ceil(chunk_size as u64) as usize)
                    .min(idx + prefetch_chunks);
                for i in advised.max(idx)..end {
                    if skip_len(i).is_none() {
                        // Only a hint: the read that follows works without it.
                        // SAFETY: posix_fadvise reads nothing but its arguments.
                        unsafe {
                            libc::posix_fadvise(
                                s.fd,
                                (i * chunk_size) as libc::off_t,
                                chunk_size as libc::off_t,
                                libc::POSIX_FADV_WILLNEED,
                            );
                        }
                    }
                }
                advised = advised.max(end);
            }
            if let Some(len) = skip_len(idx) {
                let (reply, rx) = bounded(1);
                reply.send(Outcome::Same).expect("receiver held");
                pending.push_back((rx, len as u32));
                size += len as u64;
                self.stats.bytes_skipped += len as u64;
                // Done as much as read: the progress bar's total counts every byte.
                (self.progress)(len as u64);
                reader.seek(SeekFrom::Start(size)).map_err(read_err)?;
                if pending.len() >= self.window {
                    self.resolve_next(&mut pending, &mut chunks, &parent_chunks)?;
                }
                // A short chunk ends the file as it was at open; what grew since is in WAL.
                if len < chunk_size {
                    break;
                }
                continue;
            }
            let mut buf = vec![0u8; chunk_size];
            let n = read_full(&mut reader, &mut buf).map_err(read_err)?;
            if n == 0 {
                break;
            }
            buf.truncate(n);
            size += n as u64;
            (self.progress)(n as u64);
            let expect = parent_chunks
                .get(idx)
                .filter(|c| c.len as usize == n)
                .map(|c| c.id);
            let (reply, rx) = bounded(1);
            let job = Job {
                data: buf,
                expect,
                reply,
            };
            let sent = self
                .jobs
                .as_ref()
                .is_some_and(|jobs| jobs.send(job).is_ok());
            if !sent {
                return Err(self.worker_failure().into());
            }
            pending.push_back((rx, n as u32));
            if pending.len() >= self.window {
                self.resolve_next(&mut pending, &mut chunks, &parent_chunks)?;
            }
            if n < chunk_size {
                break;
            }
        }
        while !pending.is_empty() {
            self.resolve_next(&mut pending, &mut chunks, &parent_chunks)?;
        }
        let mut lists = Vec::with_capacity(chunks.len().div_ceil(LIST_FANOUT));
        for (i, part) in chunks.chunks(LIST_FANOUT).enumerate() {
            let data = encode_chunk_list(part);
            lists.push(self.store_blob(BlobType::ChunkList, &data, parent_lists.get(i))?);
        }
        Ok((size, lists))
    }

    fn resolve_next(
        &mut self,
        pending: &mut VecDeque<(Receiver<Outcome>, u32)>,
        chunks: &mut Vec<Chunk>,
        parent_chunks: &[Chunk],
    ) -> Result<(), StoreError> {
        let (rx, len) = pending.pop_front().expect("pending is not empty");
        // A worker drops its reply only when it panics.
        let outcome = rx.recv().map_err(|_| self.worker_failure())?;
        let chunk = self.resolve(outcome, len, parent_chunks.get(chunks.len()))?;
        chunks.push(chunk);
        Ok(())
    }

    /// A file node for in-memory content (such as a backup_label).
    pub fn file_from_bytes(
        &mut self,
        name: &str,
        data: &[u8],
        mode: u32,
        mtime: i64,
    ) -> Result<Node, IngestError> {
        let (size, lists) = self.ingest_stream(Cursor::new(data), name, &[], None)?;
        self.stats.files += 1;
        self.stats.bytes += size;
        Ok(Node {
            name: name.into(),
            mode,
            mtime,
            kind: NodeKind::File { size, lists },
        })
    }

    /// A file node for content read from a stream (a file of another tool's repository),
    /// compared chunk by chunk with `parent_lists`, the same file in the parent snapshot;
    /// `path` names the source in errors.
    pub fn file_from_reader(
        &mut self,
        node: (&str, u32, i64),
        reader: impl Read,
        path: &str,
        parent_lists: &[BlobRef],
    ) -> Result<Node, IngestError> {
        let (name, mode, mtime) = node;
        let (size, lists) = self.ingest_stream(Sequential(reader), path, parent_lists, None)?;
        self.stats.files += 1;
        self.stats.bytes += size;
        Ok(Node {
            name: name.into(),
            mode,
            mtime,
            kind: NodeKind::File { size, lists },
        })
    }

    /// Writes a directory blob from its (unsorted) entries.
    pub fn write_dir(
        &mut self,
        mut entries: Vec<Node>,
        parent: Option<&BlobRef>,
    ) -> Result<BlobRef, StoreError> {
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        let data = super::tree::encode_dir(&Dir { entries });
        self.store_blob(BlobType::Tree, &data, parent)
    }

    /// Reads the entries of directory `path` (relative name `rel`, "" for the root).
    pub fn read_dir(
        &mut self,
        path: &Path,
        rel: &str,
        parent: Option<&BlobRef>,
        filter: &dyn Fn(&str, &fs::Metadata) -> Visit,
    ) -> Result<Vec<Node>, IngestError> {
        let parent_dir = match parent {
            Some(r) => Some(self.repo.load_dir(r)?),
            None => None,
        };
        let read_err = |source| IngestError::Read {
            path: path.display().to_string(),
            source,
        };
        let mut names = Vec::new();
        for entry in fs::read_dir(path).map_err(read_err)? {
            let entry = entry.map_err(read_err)?;
            let name = entry
                .file_name()
                .into_string()
                .map_err(|n| IngestError::BadName {
                    path: path.join(n).display().to_string(),
                })?;
            names.push(name);
        }
        names.sort();
        let mut nodes = Vec::new();
        for name in names {
            let child_rel = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let child = path.join(&name);
            let meta = match fs::symlink_metadata(&child) {
                Ok(m) => m,
                Err(e) if e.kind() == ErrorKind::NotFound && self.vanished == Vanished::Skip => {
                    continue
                }
                Err(source) => {
                    return Err(IngestError::Read {
                        path: child.display().to_string(),
                        source,
                    })
                }
            };
            let prev = parent_dir.as_ref().and_then(|d| d.get(&name));
            let visit = filter(&child_rel, &meta);
            let meta = match visit {
                Visit::Follow => fs::metadata(&child).map_err(|source| IngestError::Read {
                    path: child.display().to_string(),
                    source,
                })?,
                _ => meta,
            };
            let mode = meta.permissions().mode() & 0o7777;
            let mtime = meta.mtime();
            let kind = match visit {
                Visit::Skip => continue,
                Visit::Empty => NodeKind::Dir {
                    tree: self.write_dir(Vec::new(), None)?,
                },
                _ if meta.is_dir() => {
                    let prev_tree = match prev.map(|n| &n.kind) {
                        Some(NodeKind::Dir { tree }) => Some(tree),
                        _ => None,
                    };
                    let entries = self.read_dir(&child, &child_rel, prev_tree, filter)?;
                    NodeKind::Dir {
                        tree: self.write_dir(entries, prev_tree)?,
                    }
                }
                _ if meta.file_type().is_symlink() => {
                    let target = fs::read_link(&child).map_err(|source| IngestError::Read {
                        path: child.display().to_string(),
                        source,
                    })?;
                    NodeKind::Symlink {
                        target: target.to_string_lossy().into_owned(),
                    }
                }
                _ if meta.is_file() => {
                    let file = match File::open(&child) {
                        Ok(f) => f,
                        Err(e)
                            if e.kind() == ErrorKind::NotFound
                                && self.vanished == Vanished::Skip =>
                        {
                            continue
                        }
                        Err(source) => {
                            return Err(IngestError::Read {
                                path: child.display().to_string(),
                                source,
                            })
                        }
                    };
                    let prev_lists: &[BlobRef] = match prev.map(|n| &n.kind) {
                        Some(NodeKind::File { lists, .. }) => lists,
                        _ => &[],
                    };
                    let skipping = match &self.changes {
                        Some(oracle) if !prev_lists.is_empty() => {
                            oracle(&child_rel).map(|known| Skipping {
                                known,
                                size_at_open: meta.len(),
                                fd: file.as_raw_fd(),
                            })
                        }
                        _ => None,
                    };
                    let skipped_before = self.stats.bytes_skipped;
                    let (size, lists) = self.ingest_stream(
                        file,
                        &child.display().to_string(),
                        prev_lists,
                        skipping,
                    )?;
                    tracing::debug!(
                        file = child_rel,
                        size,
                        skipped = self.stats.bytes_skipped - skipped_before,
                        "file read"
                    );
                    self.stats.files += 1;
                    self.stats.bytes += size;
                    NodeKind::File { size, lists }
                }
                _ => {
                    tracing::warn!(
                        "skipping {}: not a file, directory or symlink",
                        child.display()
                    );
                    continue;
                }
            };
            nodes.push(Node {
                name,
                mode,
                mtime,
                kind,
            });
        }
        Ok(nodes)
    }

    /// Closes the pool and waits for the workers; the first panic among them is the error.
    fn stop_workers(&mut self) -> Result<(), StoreError> {
        self.jobs = None;
        let mut first = Ok(());
        for w in self.workers.drain(..) {
            if let (Err(payload), Ok(())) = (w.join(), &first) {
                first = Err(StoreError::worker_panicked("ingest", &*payload));
            }
        }
        first
    }

    /// Why a worker stopped replying: the panic it died of.
    fn worker_failure(&mut self) -> StoreError {
        self.stop_workers()
            .err()
            .unwrap_or_else(|| StoreError::WorkerPanicked {
                worker: "ingest",
                message: "the worker pool closed early".to_string(),
            })
    }

    /// Writes the last pack. Returns the bytes this ingest added to the repository.
    pub fn finish(mut self) -> Result<(Stats, u64), StoreError> {
        self.stop_workers()?;
        self.packer.flush()?;
        self.meta_packer.flush()?;
        Ok((
            self.stats.clone(),
            self.packer.bytes_written + self.meta_packer.bytes_written,
        ))
    }
}

/// A stream read front to back: ingest seeks only to skip known-unchanged chunks, which a
/// stream without a parent file on disk never has.
struct Sequential<R>(R);

impl<R: Read> Read for Sequential<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl<R> Seek for Sequential<R> {
    fn seek(&mut self, _: SeekFrom) -> std::io::Result<u64> {
        Err(std::io::Error::new(
            ErrorKind::Unsupported,
            "a sequential stream cannot seek",
        ))
    }
}

/// Reads until `buf` is full or the stream ends.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::backend::memory::MemoryBackend;

    const CHUNK: usize = 8192;

    /// Backs up `dir`, with `parent` and what the oracle says; returns the root and stats.
    fn ingest(
        repo: &Repository,
        dir: &Path,
        parent: Option<&BlobRef>,
        oracle: Option<ChangeOracle<'static>>,
    ) -> (BlobRef, Stats) {
        let mut ingest = Ingest::new(repo, 2, Box::new(|_| {}));
        if let Some(o) = oracle {
            ingest.set_known_changes(o);
        }
        let nodes = ingest
            .read_dir(dir, "", parent, &|_, _| Visit::Keep)
            .unwrap();
        let root = ingest.write_dir(nodes, parent).unwrap();
        (root, ingest.finish().unwrap().0)
    }

    fn content(repo: &Repository, root: &BlobRef, name: &str) -> Vec<u8> {
        match &repo.load_dir(root).unwrap().get(name).unwrap().kind {
            NodeKind::File { lists, .. } => repo.read_file(lists).unwrap(),
            other => panic!("{name} is {other:?}"),
        }
    }

    #[test]
    fn a_panicking_worker_is_one_error_naming_it() {
        let repo = Repository::init(Arc::new(MemoryBackend::default()), CHUNK as u32, 3).unwrap();
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("f"), vec![7u8; 3 * CHUNK]).unwrap();
        let mut ingest = Ingest::new(&repo, 1, Box::new(|_| {}));
        ingest.stop_workers().unwrap();
        let (tx, rx) = bounded::<Job>(4);
        ingest.jobs = Some(tx);
        ingest.workers = vec![std::thread::spawn(move || {
            if rx.recv().is_ok() {
                panic!("boom");
            }
        })];
        match ingest.read_dir(dir.path(), "", None, &|_, _| Visit::Keep) {
            Err(IngestError::Store(StoreError::WorkerPanicked { worker, message })) => {
                assert_eq!((worker, message.as_str()), ("ingest", "boom"));
            }
            other => panic!("{other:?}"),
        }
    }

    /// A file removed between the directory listing and its open: an error unless the
    /// caller says its data accounts for removals.
    #[test]
    fn a_vanished_file_is_the_caller_s_policy() {
        let repo = Repository::init(Arc::new(MemoryBackend::default()), CHUNK as u32, 3).unwrap();
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("gone"), b"x").unwrap();
        fs::write(dir.path().join("kept"), b"y").unwrap();
        let remove = |rel: &str, _: &fs::Metadata| {
            if rel == "gone" {
                let _ = fs::remove_file(dir.path().join("gone"));
            }
            Visit::Keep
        };
        let mut ingest = Ingest::new(&repo, 1, Box::new(|_| {}));
        match ingest.read_dir(dir.path(), "", None, &remove) {
            Err(IngestError::Read { path, source }) => {
                assert!(path.ends_with("gone"), "{path}");
                assert_eq!(source.kind(), ErrorKind::NotFound);
            }
            other => panic!("{other:?}"),
        }
        fs::write(dir.path().join("gone"), b"x").unwrap();
        let mut ingest = Ingest::new(&repo, 1, Box::new(|_| {}));
        ingest.set_vanished(Vanished::Skip);
        let nodes = ingest.read_dir(dir.path(), "", None, &remove).unwrap();
        let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["kept"]);
    }

    #[test]
    fn known_changes_skip_unchanged_chunks_and_read_the_rest() {
        let repo = Repository::init(Arc::new(MemoryBackend::default()), CHUNK as u32, 3).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let v1: Vec<u8> = (0..4 * CHUNK + 100).map(|i| (i % 251) as u8 + 1).collect();
        fs::write(dir.path().join("rel"), &v1).unwrap();
        fs::write(dir.path().join("new"), b"first").unwrap();
        fs::write(dir.path().join("small"), [1; 3000]).unwrap();
        let (first, _) = ingest(&repo, dir.path(), None, None);

        // Chunks 1 and 3 change on disk, but the oracle knows only of chunk 1.
        let mut v2 = v1.clone();
        v2[CHUNK + 5] ^= 0xff;
        v2[3 * CHUNK + 5] ^= 0xff;
        v2.extend_from_slice(&[9; CHUNK]);
        fs::write(dir.path().join("rel"), &v2).unwrap();
        fs::write(dir.path().join("new"), b"second").unwrap();
        fs::write(dir.path().join("small"), [2; 3000]).unwrap();
        let oracle: ChangeOracle = Box::new(|rel| match rel {
            "rel" => Some(KnownChanges {
                changed: vec![1],
                read_from: 10,
            }),
            "small" => Some(KnownChanges {
                changed: vec![],
                read_from: 10,
            }),
            _ => None,
        });
        let (second, stats) = ingest(&repo, dir.path(), Some(&first), Some(oracle));

        // Chunks 0, 2 and 3 are the parent's unread; 1, the old tail (now longer) and the
        // growth are read. A short file of unchanged length is the parent's.
        assert_eq!(stats.bytes_skipped, 3 * CHUNK as u64 + 3000);
        assert_eq!(content(&repo, &second, "small"), [1; 3000]);
        let mut want = v2.clone();
        want[3 * CHUNK + 5] ^= 0xff;
        assert_eq!(content(&repo, &second, "rel"), want);
        assert_eq!(content(&repo, &second, "new"), b"second");

        // Chunks from read_from on are read even when unlisted.
        let oracle: ChangeOracle = Box::new(|_| {
            Some(KnownChanges {
                changed: vec![],
                read_from: 3,
            })
        });
        let (third, stats) = ingest(&repo, dir.path(), Some(&first), Some(oracle));
        assert_eq!(stats.bytes_skipped, 3 * CHUNK as u64 + 3000);
        let mut want = v2.clone();
        want[CHUNK + 5] ^= 0xff;
        assert_eq!(content(&repo, &third, "rel"), want);
    }
}
