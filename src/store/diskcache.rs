//! A bounded local disk cache of blobs read from a remote repository.
//!
//! Mounts and `verify` of an S3 repository read the same chunks again and again, across
//! processes and days; this keeps them on local disk. Blobs are kept exactly as stored in the
//! pack (compressed), one file per blob named by its id, and every hit is decoded and verified
//! like a read from the repository (against the crc its chunk list recorded, or its id), so a
//! damaged cache file is dropped and fetched again, never served.
//!
//! The size limit is enforced per process (several processes sharing a directory may each
//! overshoot it briefly) by evicting the least recently used files: a hit touches the file's
//! mtime. Eviction lists the whole cache, about 100 bytes per cached blob, bounded by the
//! limit.

use super::crypto::Crypto;
use super::BlobId;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

/// A directory of cached blobs with a size limit, shared by the threads of one process
/// (and safely by several processes). A hit is always verified against the blob's id.
pub struct DiskCache {
    dir: PathBuf,
    limit: u64,
    /// Bytes in the cache as this process knows it; guarded so one thread evicts at a time.
    used: Mutex<u64>,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// What the cache did, for `--json` reports and the benchmark.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct CacheCounts {
    /// Lookups answered from the cache with verified bytes.
    pub hits: u64,
    /// Lookups that found no file or a damaged one, so the blob was fetched.
    pub misses: u64,
}

impl DiskCache {
    /// Opens (creating, mode 0700) the cache in `dir`, holding at most about `limit` bytes.
    pub fn open(dir: &Path, limit: u64) -> std::io::Result<DiskCache> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir.join("tmp"))?;
        let used = files(dir)?.iter().map(|f| f.size).sum();
        Ok(DiskCache {
            dir: dir.to_path_buf(),
            limit,
            used: Mutex::new(used),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    /// The hits and misses of this process since [`DiskCache::open`].
    pub fn counts(&self) -> CacheCounts {
        CacheCounts {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }

    fn path(&self, id: &BlobId) -> PathBuf {
        let hex = id.to_hex();
        self.dir.join(&hex[..2]).join(hex)
    }

    /// The blob's verified bytes, if cached and intact: checked against `crc` if given (the
    /// fast check, see `Verification`), else against its id. Stored bytes are kept as the
    /// repository stores them: ciphertext for an encrypted one.
    pub fn get(&self, id: &BlobId, len: u32, crc: Option<u32>, crypto: &Crypto) -> Option<Vec<u8>> {
        let path = self.path(id);
        let Ok(stored) = fs::read(&path) else {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        const WHERE: &str = "disk cache";
        let decoded = match crc {
            // The file may hold another stored copy of the same blob (encrypted with another
            // nonce), whose crc differs: then its id decides.
            Some(crc) => crypto
                .decode_blob_crc(&stored, len, id, crc, WHERE)
                .or_else(|_| crypto.decode_blob(&stored, len, id, WHERE)),
            None => crypto.decode_blob(&stored, len, id, WHERE),
        };
        match decoded {
            Ok(data) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                // Recency for eviction; a failure only makes eviction less exact.
                let _ = File::open(&path).and_then(|f| f.set_modified(SystemTime::now()));
                Some(data)
            }
            Err(e) => {
                tracing::warn!("dropping damaged cache file {}: {e}", path.display());
                let _ = fs::remove_file(&path);
                self.forget(stored.len() as u64);
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Keeps a blob's stored bytes. They need not be verified yet: every hit is (`get`), and
    /// a damaged file is then dropped. Failures (a full disk) are logged and otherwise
    /// ignored: the cache is only an optimisation.
    pub fn put(&self, id: &BlobId, stored: &[u8]) {
        if stored.len() as u64 > self.limit {
            return;
        }
        match self.write(id, stored) {
            Ok(true) => {
                let mut used = self.used.lock().expect("cache size lock");
                *used += stored.len() as u64;
                if *used > self.limit {
                    match evict(&self.dir, self.limit - self.limit / 10) {
                        Ok(left) => *used = left,
                        Err(e) => tracing::warn!("disk cache eviction failed: {e}"),
                    }
                }
            }
            Ok(false) => {}
            Err(e) => tracing::warn!("cannot write disk cache in {}: {e}", self.dir.display()),
        }
    }

    /// Writes the file unless it exists; true if written.
    fn write(&self, id: &BlobId, stored: &[u8]) -> std::io::Result<bool> {
        let path = self.path(id);
        if path.exists() {
            return Ok(false);
        }
        let tmp = self.dir.join("tmp").join(format!(
            "{}.{}.{:?}",
            id.to_hex(),
            std::process::id(),
            std::thread::current().id()
        ));
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(stored)?;
        drop(f);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path.parent().expect("cache files are in a fan-out dir"))?;
        // No fsync: a torn file after a crash fails verification and is dropped.
        fs::rename(&tmp, &path)?;
        Ok(true)
    }

    fn forget(&self, bytes: u64) {
        let mut used = self.used.lock().expect("cache size lock");
        *used = used.saturating_sub(bytes);
    }
}

struct CachedFile {
    path: PathBuf,
    size: u64,
    used: SystemTime,
}

/// Every cached blob file (the fan-out directories' contents).
fn files(dir: &Path) -> std::io::Result<Vec<CachedFile>> {
    let mut out = Vec::new();
    for fan in fs::read_dir(dir)? {
        let fan = fan?;
        if fan.file_name().len() != 2 || !fan.file_type()?.is_dir() {
            continue;
        }
        for f in fs::read_dir(fan.path())? {
            let f = f?;
            // Raced with another process's eviction: skip.
            let Ok(meta) = f.metadata() else { continue };
            out.push(CachedFile {
                path: f.path(),
                size: meta.len(),
                used: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            });
        }
    }
    Ok(out)
}

/// Removes least recently used files until at most `target` bytes remain; returns the bytes
/// left.
fn evict(dir: &Path, target: u64) -> std::io::Result<u64> {
    let mut all = files(dir)?;
    let mut total: u64 = all.iter().map(|f| f.size).sum();
    all.sort_by_key(|f| std::cmp::Reverse(f.used));
    while total > target {
        let Some(oldest) = all.pop() else { break };
        if fs::remove_file(&oldest.path).is_ok() {
            total -= oldest.size;
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn blob(n: u8) -> (BlobId, Vec<u8>) {
        let data = vec![n; 1000];
        (BlobId::of(&data), data)
    }

    #[test]
    fn serves_verified_blobs_and_drops_damaged_ones() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::open(&dir.path().join("c"), 1 << 20).unwrap();
        let (id, data) = blob(1);
        assert_eq!(cache.get(&id, 1000, None, &Crypto::default()), None);
        cache.put(&id, &data);
        assert_eq!(
            cache.get(&id, 1000, None, &Crypto::default()).as_deref(),
            Some(&data[..])
        );

        let path = cache.path(&id);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let mut damaged = data.clone();
        damaged[10] ^= 1;
        fs::write(&path, &damaged).unwrap();
        assert_eq!(
            cache.get(&id, 1000, None, &Crypto::default()),
            None,
            "a damaged file is never served"
        );
        assert!(!path.exists(), "and it is dropped");
        assert_eq!(cache.counts().hits, 1);
        assert_eq!(cache.counts().misses, 2);
    }

    /// With the crc of a chunk list: the crc checks the file, without hashing it.
    #[test]
    fn checks_the_crc_a_chunk_list_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::open(dir.path(), 1 << 20).unwrap();
        let plain = Crypto::default();
        let (id, data) = blob(1);
        let crc = crc32c::crc32c(&data);
        cache.put(&id, &data);
        assert_eq!(cache.get(&id, 1000, Some(crc), &plain), Some(data.clone()));
        // Another stored copy of the same blob (another crc) is still served: by its id.
        assert_eq!(cache.get(&id, 1000, Some(!crc), &plain), Some(data.clone()));
        // Damage fails both checks: dropped, never served.
        let mut damaged = data.clone();
        damaged[999] ^= 0x80;
        fs::write(cache.path(&id), &damaged).unwrap();
        assert_eq!(cache.get(&id, 1000, Some(crc), &plain), None);
        assert!(!cache.path(&id).exists());
    }

    #[test]
    fn stays_within_its_limit_evicting_least_recently_used() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::open(dir.path(), 3500).unwrap();
        let blobs: Vec<_> = (0..3).map(blob).collect();
        for (id, data) in &blobs {
            cache.put(id, data);
        }
        // Make blob 0 the most recently used, then overflow with a fourth.
        let old = SystemTime::now() - std::time::Duration::from_secs(60);
        for (id, _) in &blobs[1..] {
            File::open(cache.path(id))
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        assert!(cache
            .get(&blobs[0].0, 1000, None, &Crypto::default())
            .is_some());
        let (id3, data3) = blob(3);
        cache.put(&id3, &data3);
        let present: Vec<bool> = blobs
            .iter()
            .chain([&(id3, data3.clone())])
            .map(|(id, _)| cache.path(id).exists())
            .collect();
        assert_eq!(present.iter().filter(|p| **p).count(), 3, "{present:?}");
        assert!(
            present[0] && present[3],
            "recently used and new kept: {present:?}"
        );

        let reopened = DiskCache::open(dir.path(), 3500).unwrap();
        assert_eq!(*reopened.used.lock().unwrap(), 3000);
    }
}
