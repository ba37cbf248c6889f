//! The store's file reader: the one place that turns a file's chunk lists into bytes for
//! random and sequential readers (the mount's catalogue and views today).
//!
//! Threads and caches, all bounded:
//! - `READ_AHEAD_WORKERS` worker threads fetch and verify the chunks after a sequential
//!   reader's position (`READ_AHEAD_CHUNKS` of them, neighbours in one ranged read); a full
//!   queue drops the request, so read-ahead never blocks a reader;
//! - one LRU of verified chunks (`cache_bytes`), where concurrent misses of one chunk share
//!   one fetch;
//! - each file's chunk lists, loaded on first use (48 bytes of list per chunk, about 90 bytes
//!   per chunk in memory).

use super::cache::BlobCache;
use super::tree::{BlobRef, Chunk, LIST_FANOUT};
use super::{BlobId, Repository, StoreError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// Chunks read ahead of a sequential reader.
const READ_AHEAD_CHUNKS: usize = 8;
const READ_AHEAD_WORKERS: usize = 2;

/// A read failure; shared, because concurrent readers of one chunk share one fetch.
pub type ReadError = Arc<StoreError>;

/// One file of a backup, as the reader serves it.
pub struct File {
    size: u64,
    chunk_size: u32,
    lists: Vec<(BlobRef, OnceLock<Arc<Vec<Chunk>>>)>,
    /// Where a sequential reader would read next, to detect sequential access.
    next: AtomicU64,
}

impl File {
    /// A file of `size` bytes cut into `chunk_size`-byte chunks (only the last may be
    /// shorter), listed in order by the chunk lists `lists` of `LIST_FANOUT` chunks each.
    /// Nothing is read until the file is.
    pub fn new(size: u64, chunk_size: u32, lists: Vec<BlobRef>) -> File {
        File {
            size,
            chunk_size,
            lists: lists.into_iter().map(|r| (r, OnceLock::new())).collect(),
            next: AtomicU64::new(0),
        }
    }

    /// The file's length in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }
}

/// Reads files and sealed objects of one repository, with read-ahead and a chunk cache.
pub struct FileReader {
    repo: Arc<Repository>,
    cache: Arc<BlobCache<ReadError>>,
    /// Runs of chunks to fetch ahead; a full queue drops the request.
    read_ahead: crossbeam_channel::Sender<Vec<Chunk>>,
}

impl FileReader {
    /// A reader caching at most `cache_bytes` of chunks. Its workers end when it is dropped.
    pub fn new(repo: Arc<Repository>, cache_bytes: usize) -> FileReader {
        let cache = Arc::new(BlobCache::new(cache_bytes));
        let (tx, rx) = crossbeam_channel::bounded::<Vec<Chunk>>(4);
        for _ in 0..READ_AHEAD_WORKERS {
            let (rx, repo, cache) = (rx.clone(), repo.clone(), cache.clone());
            std::thread::spawn(move || {
                for run in rx {
                    let missing: Vec<Chunk> = run
                        .into_iter()
                        .filter(|c| c.loc.is_some() && cache.get(&c.id).is_none())
                        .collect();
                    // Neighbours come in one ranged read; errors surface on the real read.
                    if let Ok(all) = repo.read_chunks(&missing) {
                        for (c, data) in missing.iter().zip(all) {
                            let _ = cache.get_or_fetch(&c.id, || Ok(data));
                        }
                    }
                }
            });
        }
        FileReader {
            repo,
            cache,
            read_ahead: tx,
        }
    }

    /// Up to `size` bytes of `file` from `offset`; fewer only at the end of the file.
    pub fn read(&self, file: &File, offset: u64, size: u32) -> Result<Vec<u8>, ReadError> {
        let cs = file.chunk_size as u64;
        let end = offset.saturating_add(size as u64).min(file.size);
        if file.next.swap(end, Ordering::Relaxed) == offset && offset > 0 {
            self.queue_ahead(
                file,
                (end / cs) as usize + 1,
                file.size.div_ceil(cs) as usize,
            );
        }
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        let mut pos = offset;
        while pos < end {
            let index = pos / cs;
            let chunk = self.chunk(file, index as usize)?;
            let data = self.chunk_data(&chunk)?;
            let from = (pos - index * cs) as usize;
            let to = ((end - index * cs) as usize).min(data.len());
            if from >= to {
                return Err(Arc::new(StoreError::corrupt(
                    format!("chunk {}", chunk.id),
                    "it is shorter than its file says",
                )));
            }
            out.extend_from_slice(&data[from..to]);
            pos = index * cs + to as u64;
        }
        Ok(out)
    }

    /// A sealed object's payload, verified, served whole from the cache.
    pub fn read_sealed(&self, key: &str) -> Result<Arc<Vec<u8>>, ReadError> {
        self.cache.get_or_fetch(&BlobId::of(key.as_bytes()), || {
            self.repo.get_sealed(key).map_err(Arc::new)
        })
    }

    fn chunk(&self, file: &File, index: usize) -> Result<Chunk, ReadError> {
        let past = || Arc::new(StoreError::corrupt("file", "chunk index past its lists"));
        let (r, cell) = file.lists.get(index / LIST_FANOUT).ok_or_else(past)?;
        let list = match cell.get() {
            Some(l) => l.clone(),
            None => {
                let loaded = Arc::new(self.repo.load_chunk_list(r).map_err(Arc::new)?);
                cell.get_or_init(|| loaded).clone()
            }
        };
        list.get(index % LIST_FANOUT).copied().ok_or_else(past)
    }

    fn chunk_data(&self, c: &Chunk) -> Result<Arc<Vec<u8>>, ReadError> {
        if c.loc.is_none() {
            return Ok(Arc::new(vec![0; c.len as usize]));
        }
        self.cache
            .get_or_fetch(&c.id, || self.repo.read_chunk(c).map_err(Arc::new))
    }

    /// Queues chunks `from..` (of `count`) for the workers, unless all are cached.
    fn queue_ahead(&self, file: &File, from: usize, count: usize) {
        let run: Vec<Chunk> = (from..count.min(from + READ_AHEAD_CHUNKS))
            .filter_map(|i| self.chunk(file, i).ok())
            .collect();
        if run
            .iter()
            .any(|c| c.loc.is_some() && self.cache.get(&c.id).is_none())
        {
            let _ = self.read_ahead.try_send(run);
        }
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
    fn file(mem: &Arc<MemoryBackend>, n: u8) -> (Arc<Repository>, File, Vec<u8>, Chunk) {
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
        (Arc::new(repo), f, content, chunks[3])
    }

    #[test]
    fn sequential_and_random_reads_return_the_file() {
        let mem = Arc::new(MemoryBackend::default());
        let (repo, f, content, _) = file(&mem, 40);
        let reader = FileReader::new(repo, 1 << 20);
        let mut got = Vec::new();
        while (got.len() as u64) < f.size() {
            got.extend(reader.read(&f, got.len() as u64, 5000).unwrap());
        }
        assert_eq!(got, content);
        for (off, len) in [(8000, 400), (0, 1), (327_000, 10_000), (400_000, 10)] {
            let end = (off + len).min(content.len());
            let want = content.get(off..end).unwrap_or_default();
            assert_eq!(reader.read(&f, off as u64, len as u32).unwrap(), want);
        }
    }

    #[test]
    fn a_corrupt_chunk_is_an_error_never_bytes() {
        let mem = Arc::new(MemoryBackend::default());
        let (repo, f, _, victim) = file(&mem, 8);
        let loc = victim.loc.unwrap();
        mem.tamper(&keys::pack(&loc.pack), |b| b[loc.offset as usize + 3] ^= 1);
        let reader = FileReader::new(repo, 1 << 20);
        assert!(reader.read(&f, 0, 8192).is_ok());
        let err = reader.read(&f, 3 * 8192 + 10, 100).unwrap_err();
        assert!(matches!(*err, StoreError::Corrupt { .. }), "{err}");
        // Sequential readers (read-ahead) get the error too.
        let mut pos = 0;
        let failed = loop {
            match reader.read(&f, pos, 4096) {
                Ok(b) if b.is_empty() => break false,
                Ok(b) => pos += b.len() as u64,
                Err(_) => break true,
            }
        };
        assert!(failed && pos == 3 * 8192, "stopped at {pos}");
    }
}
