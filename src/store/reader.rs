//! The store's file reader: the one place that turns a file's chunk lists into bytes, for the
//! mount's random and sequential readers (`FileReader`) and for readers of whole files such
//! as `restore` (`File::read_through`). docs/architecture.md, "Read path", walks through it.
//!
//! No chunk is cached decoded for long: the kernel's page cache keeps the file pages the
//! mount served (it opens files with FOPEN_KEEP_CACHE), and the stored bytes stay where they
//! are cheap to read again (the OS page cache of local packs, the disk cache of an S3
//! repository). So a chunk is decoded (decompressed and verified) once per read that needs it:
//! - for a sequential reader, `WORKERS` read-ahead threads read and decode the next
//!   `AHEAD_BYTES` of the file, `RUN_BYTES` per job (one ranged read each), into the hand-off:
//!   decoded chunks waiting for the reader, each removed when its last byte is read, so the
//!   request thread mostly copies. A reader that gets to a chunk still being decoded waits
//!   for it instead of decoding it again;
//! - a random reader decodes on its request thread, the chunks of the request in one ranged
//!   read. On a remote repository a miss reads around: the request's chunks and the file's
//!   next ones up to `AROUND_BYTES` in one ranged read, the extra chunks going to the
//!   hand-off. With a disk cache, a remote miss (a request's or a read-ahead job's) first
//!   fetches the aligned `PACK_AROUND_BYTES` window of the pack around its first chunk, once,
//!   in one GET, and keeps every blob the pack's entry table (an LRU of `TABLE_CACHE_BYTES`)
//!   places there in the disk cache: the chunks of the files the backup wrote next to it,
//!   mostly the small files read next, so a scan costs a GET per few MiB of pack, not one per
//!   file;
//! - a chunk that fails to read or verify in read-ahead is dropped from the hand-off and read
//!   again by the request that needs it, which then fails with the store's error: a corrupt
//!   chunk is an error, never bytes, on every path.
//!
//! Memory, all bounded whatever the repository's size (`memory` is `--cache-size`, 128 MiB by
//! default):
//! - the hand-off: at most `memory / 2` bytes of decoded chunks, those being read ahead
//!   included; when full, read-ahead waits for the readers and the oldest chunks nobody took
//!   (an abandoned reader's) are dropped first;
//! - sealed objects (archived WAL, decoded whole and read in pieces): an LRU of `memory / 4`;
//! - chunk lists: an LRU of `LIST_CACHE_BYTES` (56 bytes per chunk, 1024 chunks per list);
//! - pack entry tables: an LRU of `TABLE_CACHE_BYTES`;
//! - per request thread, the reply and the chunks of one request (plus `AROUND_BYTES` of
//!   decoded chunks and a `PACK_AROUND_BYTES` window of stored ones on a remote miss, as for
//!   each read-ahead worker); per read-ahead worker, one job's stored bytes (at most `RUN_BYTES` plus
//!   compression overhead).
//!
//! At the defaults: 64 + 32 + 16 MiB of caches, 6 × 4 MiB of workers' stored bytes, and a
//! few MiB per FUSE thread, well under the mount's 256 MiB.

use super::cache::BlobCache;
use super::pack::{self, BlobType, Entry};
use super::tree::{BlobRef, Chunk, LIST_FANOUT};
use super::{keys, BlobId, Repository, StoreError};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// How far ahead of a sequential reader chunks are read and decoded.
const AHEAD_BYTES: u64 = 16 << 20;
/// The file bytes of one read-ahead job: one ranged read (one GET on S3) of neighbours.
const RUN_BYTES: u64 = 4 << 20;
/// The file bytes a random read's miss reads on a remote repository, from its first chunk.
const AROUND_BYTES: u64 = 1 << 20;
/// The aligned window of a pack a remote miss fetches in one GET into the disk cache (see the
/// module's comment).
const PACK_AROUND_BYTES: u64 = 4 << 20;
/// Memory for remembering the windows fetched: 8 bytes each, so about 131,000 windows (512 GiB
/// of packs); a window forgotten is only fetched again.
const WINDOWS_BYTES: usize = 1 << 20;
/// Memory for pack entry tables (about 2 MiB for a full 32 MiB pack of well-compressed 64 KiB
/// chunks).
const TABLE_CACHE_BYTES: usize = 8 << 20;
/// The bytes at a pack's end fetched to find its entry table; a bigger table takes a second
/// GET.
const TABLE_GUESS: u64 = 1 << 20;
/// How near the furthest read of a file a read counts as sequential.
const NEAR_BYTES: u64 = 4 << 20;
/// Read-ahead threads: enough GETs in flight for S3's latency; locally, more than the cores.
const WORKERS: usize = 6;
/// Memory for chunk lists.
const LIST_CACHE_BYTES: usize = 16 << 20;
/// A chunk decoded ahead that has waited this long for its reader may make room for others:
/// its reader went elsewhere (a live one takes its chunks within milliseconds).
const STALE: Duration = Duration::from_secs(2);

/// A read failure; shared, because concurrent readers of one object share one fetch.
pub type ReadError = Arc<StoreError>;

/// One file of a backup, as the reader serves it.
pub struct File {
    size: u64,
    chunk_size: u32,
    lists: Vec<BlobRef>,
    /// The end of the furthest read since the last seek, to detect sequential access.
    high: AtomicU64,
    /// The first chunk not yet queued for read-ahead.
    ahead: AtomicU64,
}

impl File {
    /// A file of `size` bytes cut into `chunk_size`-byte chunks (only the last may be
    /// shorter), listed in order by the chunk lists `lists` of `LIST_FANOUT` chunks each.
    /// Nothing is read until the file is.
    pub fn new(size: u64, chunk_size: u32, lists: Vec<BlobRef>) -> File {
        File {
            size,
            chunk_size: chunk_size.max(1),
            lists,
            high: AtomicU64::new(0),
            ahead: AtomicU64::new(0),
        }
    }

    /// The file's length in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    fn chunk_count(&self) -> u64 {
        self.size.div_ceil(self.chunk_size as u64)
    }

    /// Reads every chunk in order on the calling thread, neighbours in one ranged read of at
    /// most `RUN_BYTES`, for readers of whole files: `each(len, Some(bytes))` for a stored
    /// chunk, `each(len, None)` for an all-zero one (a hole).
    pub fn read_through<E: From<StoreError>>(
        &self,
        repo: &Repository,
        mut each: impl FnMut(u32, Option<&[u8]>) -> Result<(), E>,
    ) -> Result<(), E> {
        let per_run = run_chunks(self.chunk_size, RUN_BYTES);
        for r in &self.lists {
            let chunks = repo.load_chunk_list(r)?;
            for run in chunks.chunks(per_run) {
                let stored: Vec<Chunk> = run.iter().filter(|c| c.loc.is_some()).copied().collect();
                let mut data = repo.read_chunks(&stored)?.into_iter();
                for c in run {
                    match c.loc {
                        None => each(c.len, None)?,
                        Some(_) => {
                            let d = data.next().ok_or_else(|| {
                                StoreError::corrupt(format!("chunk {}", c.id), "not read")
                            })?;
                            each(c.len, Some(&d))?
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// How many chunks of `chunk_size` make `bytes` (at least one).
fn run_chunks(chunk_size: u32, bytes: u64) -> usize {
    (bytes / chunk_size.max(1) as u64).max(1) as usize
}

/// Reads files and sealed objects of one repository for many threads at once, with
/// read-ahead and read-around (see the module's comment).
pub struct FileReader {
    repo: Arc<Repository>,
    handoff: Arc<HandOff>,
    lists: BlobCache<Vec<Chunk>, ReadError>,
    sealed: BlobCache<Vec<u8>, ReadError>,
    /// Reads around remote misses into the disk cache; `None` locally or without one.
    around: Option<Arc<PackAround>>,
    /// Read-ahead jobs; the workers start with the first and end when the reader is dropped.
    jobs: OnceLock<crossbeam_channel::Sender<Job>>,
    /// Whether the back end bills requests and answers slowly (S3): misses read around.
    remote: bool,
}

impl FileReader {
    /// A reader using about `memory` bytes for decoded chunks and sealed objects.
    pub fn new(repo: Arc<Repository>, memory: usize) -> FileReader {
        let remote = repo.backend().stats().is_some();
        FileReader {
            around: (remote && repo.disk_cache().is_some()).then(|| Arc::new(PackAround::new())),
            remote,
            repo,
            handoff: Arc::new(HandOff::new(memory / 2, STALE)),
            lists: BlobCache::new(LIST_CACHE_BYTES),
            sealed: BlobCache::new(memory / 4),
            jobs: OnceLock::new(),
        }
    }

    /// Up to `size` bytes of `file` from `offset`; fewer only at the end of the file.
    pub fn read(&self, file: &File, offset: u64, size: u32) -> Result<Vec<u8>, ReadError> {
        let cs = file.chunk_size as u64;
        let end = offset.saturating_add(size as u64).min(file.size);
        if offset >= end {
            return Ok(Vec::new());
        }
        // The kernel sends a sequential reader's requests from several threads, so they
        // arrive a little out of order: near the furthest read is sequential.
        let high = file.high.load(Ordering::Relaxed);
        if offset > 0 && offset <= high + NEAR_BYTES && offset + NEAR_BYTES >= high {
            let high = file.high.fetch_max(end, Ordering::Relaxed).max(end);
            self.read_ahead(file, high);
        } else {
            // A seek: read-ahead starts again from where the reader goes on.
            file.high.store(end, Ordering::Relaxed);
            file.ahead.store(0, Ordering::Relaxed);
        }
        let (first, last) = (offset / cs, (end - 1) / cs);
        let mut pieces = Vec::with_capacity((last - first + 1) as usize);
        let mut missing = Vec::new();
        for i in first..=last {
            let c = self.chunk(file, i)?;
            // Taken for good once this read reaches the chunk's end.
            let whole = end >= ((i + 1) * cs).min(file.size);
            let got = match c.loc {
                None => None,
                Some(_) => self.handoff.take(&c.id, whole),
            };
            if c.loc.is_some() && got.is_none() {
                missing.push(c);
            }
            pieces.push((c, got));
        }
        if !missing.is_empty() {
            let mut read = self.read_missing(file, last, missing)?.into_iter();
            for (c, got) in &mut pieces {
                if c.loc.is_some() && got.is_none() {
                    *got = read.next();
                }
            }
        }
        let mut out = Vec::with_capacity((end - offset) as usize);
        for (i, (c, got)) in (first..).zip(pieces) {
            let start = i * cs;
            let from = offset.saturating_sub(start) as usize;
            let to = (end - start).min(cs) as usize;
            if (c.len as usize) < to {
                return Err(Arc::new(StoreError::corrupt(
                    format!("chunk {}", c.id),
                    "it is shorter than its file says",
                )));
            }
            match got {
                None if c.loc.is_none() => out.resize(out.len() + to - from, 0),
                Some(data) if data.len() >= to => out.extend_from_slice(&data[from..to]),
                _ => {
                    return Err(Arc::new(StoreError::corrupt(
                        format!("chunk {}", c.id),
                        "it is shorter than its chunk list says",
                    )))
                }
            }
        }
        Ok(out)
    }

    /// Reads the stored chunks `missing` of one request (ending at chunk `last`) on the
    /// request thread. On a remote repository the file's next chunks come in the same ranged
    /// read and go to the hand-off; if that wider read fails, only the request's are read
    /// again, so a bad neighbour never fails a good chunk.
    fn read_missing(
        &self,
        file: &File,
        last: u64,
        missing: Vec<Chunk>,
    ) -> Result<Vec<Arc<Vec<u8>>>, ReadError> {
        let wanted = missing.len();
        let mut run = missing;
        let mut extra = None;
        if self.remote {
            let cs = file.chunk_size as u64;
            let upto = (last + 1 + AROUND_BYTES / cs).min(file.chunk_count());
            let around: Vec<Chunk> = (last + 1..upto)
                .filter_map(|i| self.chunk(file, i).ok())
                .filter(|c| c.loc.is_some())
                .collect();
            let (reserved, _) = self.handoff.reserve(&around);
            run.extend(reserved.chunks.iter().copied());
            extra = Some(reserved);
            if let Some(around) = &self.around {
                around.fetch(&self.repo, &run);
            }
        }
        let read = match self.repo.read_chunks(&run) {
            Ok(read) => read,
            Err(_) if run.len() > wanted => {
                drop(extra);
                return self.read_exact(&run[..wanted]);
            }
            Err(e) => return Err(Arc::new(e)),
        };
        let mut read = read.into_iter().map(Arc::new);
        let own: Vec<_> = read.by_ref().take(wanted).collect();
        if let Some(extra) = extra {
            extra.fill(read.collect());
        }
        Ok(own)
    }

    fn read_exact(&self, chunks: &[Chunk]) -> Result<Vec<Arc<Vec<u8>>>, ReadError> {
        let read = self.repo.read_chunks(chunks).map_err(Arc::new)?;
        Ok(read.into_iter().map(Arc::new).collect())
    }

    /// A sealed object's payload, verified, served whole from the cache.
    pub fn read_sealed(&self, key: &str) -> Result<Arc<Vec<u8>>, ReadError> {
        self.sealed.get_or_fetch(&BlobId::of(key.as_bytes()), || {
            self.repo.get_sealed(key).map_err(Arc::new)
        })
    }

    fn chunk(&self, file: &File, index: u64) -> Result<Chunk, ReadError> {
        let past = || Arc::new(StoreError::corrupt("file", "chunk index past its lists"));
        let index = index as usize;
        let r = file.lists.get(index / LIST_FANOUT).ok_or_else(past)?;
        let list = self
            .lists
            .get_or_fetch(&r.id, || self.repo.load_chunk_list(r).map_err(Arc::new))?;
        list.get(index % LIST_FANOUT).copied().ok_or_else(past)
    }

    /// Keeps `AHEAD_BYTES` after `end` (the furthest read) queued for the workers, in jobs of
    /// `RUN_BYTES`; chunks already in the hand-off, and those that do not fit in it, are left
    /// out.
    fn read_ahead(&self, file: &File, end: u64) {
        let cs = file.chunk_size as u64;
        let from = end / cs;
        let target =
            (from + run_chunks(file.chunk_size, AHEAD_BYTES) as u64).min(file.chunk_count());
        let per_job = run_chunks(file.chunk_size, RUN_BYTES) as u64;
        loop {
            let queued = file.ahead.load(Ordering::Relaxed);
            let start = queued.max(from);
            // Whole jobs only (but for the file's end): one ranged read of `RUN_BYTES` each.
            if start >= target || start + per_job > target && target < file.chunk_count() {
                return;
            }
            let stop = (start + per_job).min(target);
            if file
                .ahead
                .compare_exchange(queued, stop, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            let (index, chunks): (Vec<u64>, Vec<Chunk>) = (start..stop)
                .filter_map(|i| Some((i, self.chunk(file, i).ok()?)))
                .filter(|(_, c)| c.loc.is_some())
                .unzip();
            let (job, dealt) = self.handoff.reserve(&chunks);
            if !job.chunks.is_empty() {
                // A full queue drops the job (its chunks are read on demand): never block a
                // reader.
                let _ = self.workers().try_send(job);
            }
            if let Some(&full_at) = index.get(dealt) {
                // The hand-off is full: carry on from here once the reader has taken some.
                file.ahead.fetch_min(full_at, Ordering::Relaxed);
                return;
            }
        }
    }

    fn workers(&self) -> &crossbeam_channel::Sender<Job> {
        self.jobs.get_or_init(|| {
            let (tx, rx) = crossbeam_channel::bounded::<Job>(4 * WORKERS);
            for _ in 0..WORKERS {
                let (rx, repo) = (rx.clone(), self.repo.clone());
                let around = self.around.clone();
                std::thread::spawn(move || {
                    for job in rx {
                        if let Some(around) = &around {
                            around.fetch(&repo, &job.chunks);
                        }
                        // A failed read drops the job's chunks: the reader reads them again
                        // and reports the error.
                        if let Ok(data) = repo.read_chunks(&job.chunks) {
                            job.fill(data.into_iter().map(Arc::new).collect());
                        }
                    }
                });
            }
            tx
        })
    }
}

/// Read-around on a remote repository with a disk cache: a miss fetches the whole aligned
/// `PACK_AROUND_BYTES` window of its pack that holds its first chunk, once, and keeps every
/// data blob in it in the disk cache, where each is checked when taken. The miss's own chunks
/// then come from there, and so do those of the files written next to them. Best effort: on
/// any failure the chunks are read as usual.
struct PackAround {
    /// Entry tables by pack key, sorted by offset.
    tables: BlobCache<Vec<Entry>, ReadError>,
    /// Windows fetched (or being fetched, by one thread while the others wait), by pack key
    /// and window number.
    windows: BlobCache<Vec<u64>, ReadError>,
}

impl PackAround {
    fn new() -> PackAround {
        PackAround {
            tables: BlobCache::new(TABLE_CACHE_BYTES),
            windows: BlobCache::new(WINDOWS_BYTES),
        }
    }

    /// Makes sure the window of `run`'s first chunk went to the disk cache.
    fn fetch(&self, repo: &Repository, run: &[Chunk]) {
        let (Some(cache), Some(loc)) = (repo.disk_cache(), run.first().and_then(|c| c.loc)) else {
            return;
        };
        let key = keys::pack(&loc.pack);
        let window = loc.offset as u64 / PACK_AROUND_BYTES;
        let name = format!("{key}#{window}");
        let fetched = self.windows.get_or_fetch(&BlobId::of(name.as_bytes()), || {
            let table = self
                .tables
                .get_or_fetch(&BlobId::of(key.as_bytes()), || pack_table(repo, &key))?;
            let start = window * PACK_AROUND_BYTES;
            let from = table.partition_point(|e| (e.offset as u64) < start);
            let inside: Vec<&Entry> = table[from..]
                .iter()
                .take_while(|e| (e.offset as u64) < start + PACK_AROUND_BYTES)
                .filter(|e| e.kind == BlobType::Data)
                .collect();
            let (Some(first), Some(last)) = (inside.first(), inside.last()) else {
                return Ok(vec![window]);
            };
            let begin = first.offset as u64;
            let end = last.offset as u64 + last.stored_len as u64;
            let bytes = repo
                .backend()
                .get_range(&key, begin, end - begin)
                .map_err(|e| Arc::new(e.into()))?;
            for e in inside {
                let at = (e.offset as u64 - begin) as usize;
                if let Some(stored) = bytes.get(at..at + e.stored_len as usize) {
                    cache.put(&e.id, stored);
                }
            }
            Ok(vec![window])
        });
        if let Err(e) = fetched {
            tracing::debug!("no read-around in {name}: {e}");
        }
    }
}

/// A pack's entry table, sorted by offset: its size, then its last `TABLE_GUESS` bytes (and
/// the rest of the table if it is bigger).
fn pack_table(repo: &Repository, key: &str) -> Result<Vec<Entry>, ReadError> {
    let backend = repo.backend();
    let fail = |e: StoreError| Arc::new(e);
    let size = backend.size(key).map_err(|e| fail(e.into()))?;
    if size < (pack::MAGIC.len() + pack::TAIL_LEN) as u64 {
        return Err(fail(StoreError::corrupt(key, "pack too short")));
    }
    let from = size.saturating_sub(TABLE_GUESS);
    let mut end = backend
        .get_range(key, from, size - from)
        .map_err(|e| fail(e.into()))?;
    let tail = end.split_off(end.len().saturating_sub(pack::TAIL_LEN));
    let count = pack::parse_tail(&tail, key).map_err(fail)?;
    let crypto = repo.crypto();
    let start = pack::table_start(size, count, crypto.table_overhead(), key).map_err(fail)?;
    let stored = if start >= from {
        end.split_off((start - from) as usize)
    } else {
        let table_end = size - pack::TAIL_LEN as u64;
        backend
            .get_range(key, start, table_end - start)
            .map_err(|e| fail(e.into()))?
    };
    let table = crypto.open_table(key, &stored).map_err(fail)?;
    let mut entries = pack::parse_entries(&table, start, key).map_err(fail)?;
    entries.sort_by_key(|e| e.offset);
    Ok(entries)
}

/// Decoded chunks waiting for their reader: each taken once, bounded by `budget` bytes.
struct HandOff {
    budget: usize,
    stale: Duration,
    state: Mutex<Waiting>,
    /// Signalled whenever chunks are filled in or given up.
    filled: Condvar,
}

#[derive(Default)]
struct Waiting {
    chunks: HashMap<BlobId, Slot>,
    /// Ready chunks, oldest first: the stale ones are dropped when room is needed.
    ready: BTreeMap<u64, (BlobId, Instant)>,
    tick: u64,
    bytes: usize,
}

struct Slot {
    /// `None` while a worker reads it.
    data: Option<Arc<Vec<u8>>>,
    len: usize,
    tick: u64,
}

impl Waiting {
    fn remove(&mut self, id: &BlobId) {
        if let Some(slot) = self.chunks.remove(id) {
            self.bytes -= slot.len;
            if slot.data.is_some() {
                self.ready.remove(&slot.tick);
            }
        }
    }
}

impl HandOff {
    fn new(budget: usize, stale: Duration) -> HandOff {
        HandOff {
            budget,
            stale,
            state: Mutex::default(),
            filled: Condvar::new(),
        }
    }

    // No update under the lock can panic halfway: a poisoned lock is used as it is.
    fn lock(&self) -> MutexGuard<'_, Waiting> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes room for `chunks`, in order, as long as they fit in the budget (dropping stale
    /// chunks if needed), skipping those already here. The job returned reads
    /// them; dropping it unfilled gives them up. Also returns how many of `chunks` were dealt
    /// with before the budget ran out.
    fn reserve(self: &Arc<HandOff>, chunks: &[Chunk]) -> (Job, usize) {
        let mut reserved = Vec::new();
        let mut w = self.lock();
        let mut dealt = 0;
        for c in chunks {
            let len = c.len as usize;
            if w.chunks.contains_key(&c.id) {
                dealt += 1;
                continue;
            }
            while w.bytes + len > self.budget {
                match w.ready.first_key_value() {
                    Some((_, (oldest, at))) if at.elapsed() >= self.stale => {
                        let oldest = *oldest;
                        w.remove(&oldest);
                    }
                    _ => break,
                }
            }
            if w.bytes + len > self.budget {
                break;
            }
            dealt += 1;
            w.bytes += len;
            w.tick += 1;
            let tick = w.tick;
            w.chunks.insert(
                c.id,
                Slot {
                    data: None,
                    len,
                    tick,
                },
            );
            reserved.push(*c);
        }
        let job = Job {
            chunks: reserved,
            handoff: self.clone(),
        };
        (job, dealt)
    }

    /// The chunk if it is here, waiting for it while a worker reads it; removed if `consume`.
    fn take(&self, id: &BlobId, consume: bool) -> Option<Arc<Vec<u8>>> {
        let mut w = self.lock();
        loop {
            let data = w.chunks.get(id)?.data.clone();
            if let Some(data) = data {
                if consume {
                    w.remove(id);
                }
                return Some(data);
            }
            w = self.filled.wait(w).unwrap_or_else(PoisonError::into_inner);
        }
    }

    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

/// Chunks reserved in the hand-off, to be read; whatever is not filled when it is dropped
/// (an error, a full queue, a panic) is given up, so no reader waits for it forever.
struct Job {
    chunks: Vec<Chunk>,
    handoff: Arc<HandOff>,
}

impl Job {
    /// Hands over the chunks read, in order.
    fn fill(mut self, data: Vec<Arc<Vec<u8>>>) {
        let chunks = std::mem::take(&mut self.chunks);
        let mut w = self.handoff.lock();
        for (c, d) in chunks.iter().zip(data) {
            if d.len() != c.len as usize {
                w.remove(&c.id);
                continue;
            }
            w.tick += 1;
            let tick = w.tick;
            if let Some(slot) = w.chunks.get_mut(&c.id) {
                if slot.data.is_none() {
                    slot.data = Some(d);
                    slot.tick = tick;
                    w.ready.insert(tick, (c.id, Instant::now()));
                }
            }
        }
        drop(w);
        self.handoff.filled.notify_all();
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        if self.chunks.is_empty() {
            return;
        }
        let mut w = self.handoff.lock();
        for c in &self.chunks {
            if w.chunks.get(&c.id).is_some_and(|s| s.data.is_none()) {
                w.remove(&c.id);
            }
        }
        drop(w);
        self.handoff.filled.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::super::backend::memory::MemoryBackend;
    use super::super::pack::BlobType;
    use super::super::tree::encode_chunk_list;
    use super::super::{keys, Packer};
    use super::*;

    /// A file of `n` chunks of 8 KiB (chunk `i` all `i`), its last chunk all zeros.
    fn file(mem: &Arc<MemoryBackend>, n: u8) -> (Arc<Repository>, File, Vec<u8>, Vec<Chunk>) {
        let repo = Repository::init(mem.clone(), 8192, 3).unwrap();
        let mut packer = Packer::new(&repo, 1 << 20);
        let mut content = Vec::new();
        let mut chunks = Vec::new();
        for i in 0..n {
            let data = vec![i; 8192];
            let r = packer.add_blob(BlobType::Data, &data).unwrap();
            chunks.push(Chunk {
                id: r.id,
                len: r.len,
                loc: Some(r.loc),
                crc: None,
            });
            content.extend_from_slice(&data);
        }
        chunks.push(Chunk {
            id: BlobId::default(),
            len: 100,
            loc: None,
            crc: None,
        });
        content.extend_from_slice(&[0; 100]);
        let list = packer
            .add_blob(BlobType::ChunkList, &encode_chunk_list(&chunks))
            .unwrap();
        packer.flush().unwrap();
        let f = File::new(content.len() as u64, 8192, vec![list]);
        (Arc::new(repo), f, content, chunks)
    }

    fn read_sequentially(reader: &FileReader, f: &File, piece: u32) -> Result<Vec<u8>, ReadError> {
        let mut got = Vec::new();
        while (got.len() as u64) < f.size() {
            got.extend(reader.read(f, got.len() as u64, piece)?);
        }
        Ok(got)
    }

    fn corrupt(mem: &MemoryBackend, c: &Chunk) {
        let loc = c.loc.unwrap();
        mem.tamper(&keys::pack(&loc.pack), |b| b[loc.offset as usize + 3] ^= 1);
    }

    #[test]
    fn sequential_random_and_concurrent_reads_return_the_file() {
        let mem = Arc::new(MemoryBackend::default());
        let (repo, f, content, _) = file(&mem, 200);
        let reader = FileReader::new(repo, 1 << 20);
        for piece in [5000, 8192, 65536] {
            assert_eq!(read_sequentially(&reader, &f, piece).unwrap(), content);
        }
        for (off, len) in [(8000, 400), (0, 1), (327_000, 10_000), (1_700_000, 10)] {
            let end = (off + len).min(content.len());
            let want = content.get(off..end).unwrap_or_default();
            assert_eq!(reader.read(&f, off as u64, len as u32).unwrap(), want);
        }
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let (reader, f, content) = (&reader, &f, &content);
                s.spawn(move || {
                    for k in 0..200u64 {
                        let off = (k * 7919 + t * 104_729) % f.size();
                        let len = 1 + (k * 31 % 40_000) as u32;
                        let end = (off + len as u64).min(f.size()) as usize;
                        assert_eq!(
                            reader.read(f, off, len).unwrap(),
                            content[off as usize..end]
                        );
                    }
                });
            }
        });
        // Whole-file readers (restore) see the same bytes, holes as holes.
        let mut whole = Vec::new();
        f.read_through(&reader.repo, |len, data| -> Result<(), StoreError> {
            match data {
                Some(d) => whole.extend_from_slice(d),
                None => whole.resize(whole.len() + len as usize, 0),
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(whole, content);
    }

    #[test]
    fn a_corrupt_chunk_is_an_error_never_bytes() {
        let mem = Arc::new(MemoryBackend::default());
        let (repo, f, _, chunks) = file(&mem, 8);
        corrupt(&mem, &chunks[3]);
        let reader = FileReader::new(repo.clone(), 1 << 20);
        assert!(reader.read(&f, 0, 8192).is_ok());
        let err = reader.read(&f, 3 * 8192 + 10, 100).unwrap_err();
        assert!(matches!(*err, StoreError::Corrupt { .. }), "{err}");
        assert!(
            reader.read(&f, 4 * 8192, 100).is_ok(),
            "its neighbour reads"
        );
        // Sequential readers (read-ahead and the hand-off) get the error too.
        for piece in [4096, 20_000] {
            let mut pos = 0;
            let failed = loop {
                match reader.read(&f, pos, piece) {
                    Ok(b) if b.is_empty() => break false,
                    Ok(b) => pos += b.len() as u64,
                    Err(_) => break true,
                }
            };
            assert!(failed && pos <= 3 * 8192, "stopped at {pos}");
        }
        let e = f
            .read_through(&repo, |_, _| -> Result<(), StoreError> { Ok(()) })
            .unwrap_err();
        assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
    }

    #[test]
    fn read_ahead_hands_chunks_over_and_a_corrupt_one_is_never_handed_over() {
        let mem = Arc::new(MemoryBackend::default());
        let (repo, f, content, chunks) = file(&mem, 40);
        let reader = FileReader::new(repo, 1 << 20);
        // A sequential read queues the rest of the file; wait for the workers to decode it.
        reader.read(&f, 0, 8192).unwrap();
        reader.read(&f, 8192, 8192).unwrap();
        for c in &chunks[2..40] {
            assert_eq!(reader.handoff.take(&c.id, false).unwrap().len(), 8192);
        }
        assert_eq!(read_sequentially(&reader, &f, 8192).unwrap(), content);
        assert_eq!(reader.handoff.bytes(), 0, "every chunk taken once");

        // Corrupt chunk 20 after it was checked: the workers' reads fail, and so does the
        // reader's, at the chunk.
        corrupt(&mem, &chunks[20]);
        let reader = FileReader::new(reader.repo.clone(), 1 << 20);
        let mut pos = 0;
        let err = loop {
            match reader.read(&f, pos, 8192) {
                Ok(b) => pos += b.len() as u64,
                Err(e) => break e,
            }
        };
        assert_eq!(pos, 20 * 8192);
        assert!(matches!(*err, StoreError::Corrupt { .. }), "{err}");
        assert!(reader.handoff.take(&chunks[20].id, false).is_none());
    }

    #[test]
    fn memory_stays_within_its_budgets() {
        let mem = Arc::new(MemoryBackend::default());
        let (repo, f, content, chunks) = file(&mem, 200);
        // Room for 5 chunks decoded ahead: read-ahead stops there and the file still reads.
        let mut reader = FileReader::new(repo, 10 * 8192);
        let stale = Duration::from_millis(300);
        reader.handoff = Arc::new(HandOff::new(5 * 8192, stale));
        let mut got = Vec::new();
        while (got.len() as u64) < f.size() {
            got.extend(reader.read(&f, got.len() as u64, 8192).unwrap());
            assert!(
                reader.handoff.bytes() <= 5 * 8192,
                "{}",
                reader.handoff.bytes()
            );
            assert!(reader.lists.bytes() <= LIST_CACHE_BYTES);
        }
        assert_eq!(got, content);
        // An abandoned reader's chunks make way for another's.
        let a = File::new(f.size, 8192, f.lists.clone());
        let b = &File::new(f.size, 8192, f.lists.clone());
        reader.read(&a, 0, 8192).unwrap();
        reader.read(&a, 8192, 8192).unwrap();
        for c in &chunks[2..7] {
            assert!(
                reader.handoff.take(&c.id, false).is_some(),
                "read ahead for a"
            );
        }
        std::thread::sleep(stale);
        for off in (100 * 8192..120 * 8192).step_by(8192) {
            assert_eq!(
                reader.read(b, off, 8192).unwrap(),
                content[off as usize..off as usize + 8192]
            );
            assert!(reader.handoff.bytes() <= 5 * 8192);
        }
        assert!(
            reader.handoff.take(&chunks[2].id, false).is_none(),
            "a's were dropped"
        );
        assert!(
            reader.handoff.take(&chunks[121].id, false).is_some(),
            "b reads ahead"
        );
    }
}
