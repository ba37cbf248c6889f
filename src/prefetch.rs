//! `wal-fetch --prefetch N`: recovery asks for WAL one segment at a time, one process each.
//! With prefetch, a fetch that goes to the repository also fetches the next N segments of the
//! same timeline, all at once, into a local directory; the later calls are served from there
//! without opening the repository (no listing, no key derivation).
//!
//! A prefetched file is stored as `<name>.<sha256 of its bytes>`, taken from the bytes the
//! repository returned (and verified against their seal); serving it hashes it again, so a
//! damaged or truncated copy is never served: it is removed and fetched anew.

use crate::archive;
use crate::error::{io, Result};
use crate::pg::wal::WalFile;
use crate::store::{BlobId, Repository};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Most fetches running at once.
const MAX_THREADS: usize = 8;

/// The prefetch directory of a restore_command's destination (`pg_wal/RECOVERYXLOG`):
/// `pg_wal/pgsnapfs-prefetch`, on the same file system so a served file is renamed.
pub fn default_dir(dest: &Path) -> PathBuf {
    dest.parent()
        .unwrap_or(Path::new("."))
        .join("pgsnapfs-prefetch")
}

/// Serves `name` from `dir` into `dest` if a prefetched copy is there and intact; `false`
/// if there is none (or it was damaged, then removed).
pub fn serve(dir: &Path, name: &str, dest: &Path) -> Result<bool> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(false);
    };
    let prefix = format!("{name}.");
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(digest) = file_name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        let path = entry.path();
        let data = std::fs::read(&path).map_err(io(format!("read {}", path.display())))?;
        if BlobId::of(&data).to_hex() == digest {
            std::fs::rename(&path, dest).map_err(io(format!("rename to {}", dest.display())))?;
            return Ok(true);
        }
        tracing::warn!(
            "{} does not match its digest: removed, fetched again",
            path.display()
        );
        std::fs::remove_file(&path).map_err(io(format!("remove {}", path.display())))?;
    }
    Ok(false)
}

/// Fetches `name` into `dest` and the `ahead` segments after it (same timeline) into `dir`,
/// in parallel; removes prefetched segments recovery has passed.
pub fn fetch(
    repo: &Repository,
    sysid: Option<u64>,
    name: &str,
    dest: &Path,
    dir: &Path,
    ahead: u32,
) -> Result<()> {
    let system = archive::resolve_system(repo, sysid)?;
    let seg_size = archive::segment_size(&system);
    let Some(WalFile::Segment { tli, segno }) = WalFile::parse(name, seg_size) else {
        return archive::fetch(repo, Some(system.sysid()), name, dest);
    };
    std::fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
    let cached = cached_segments(dir, seg_size);
    for (path, s) in &cached {
        if *s < segno {
            let _ = std::fs::remove_file(path);
        }
    }
    let wanted: Vec<String> = (segno + 1..=segno + u64::from(ahead))
        .filter(|s| !cached.iter().any(|(_, c)| c == s))
        .map(|s| WalFile::Segment { tli, segno: s }.name(seg_size))
        .collect();
    let next = AtomicUsize::new(0);
    let work = || -> Result<()> {
        while let Some(n) = wanted.get(next.fetch_add(1, Ordering::Relaxed)) {
            // The archive ends somewhere: a segment not there yet is not an error.
            if let Some(data) = archive::read_file(repo, system.sysid(), n)? {
                let path = dir.join(format!("{n}.{}", BlobId::of(&data).to_hex()));
                write_atomically(&path, &data)?;
            }
        }
        Ok(())
    };
    let sysid = system.sysid();
    std::thread::scope(|s| {
        let helpers: Vec<_> = (0..wanted.len().min(MAX_THREADS - 1))
            .map(|_| s.spawn(work))
            .collect();
        let own = archive::fetch(repo, Some(sysid), name, dest);
        // A failed prefetch only costs a later fetch from the repository.
        for h in helpers {
            if let Ok(Err(e)) = h.join() {
                tracing::warn!("prefetching after {name}: {e}");
            }
        }
        own
    })
}

/// The prefetched segments in `dir`, with their segment numbers.
fn cached_segments(dir: &Path, seg_size: u64) -> Vec<(PathBuf, u64)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_str()?.split('.').next()?.to_string();
            match WalFile::parse(&n, seg_size) {
                Some(WalFile::Segment { segno, .. }) => Some((e.path(), segno)),
                _ => None,
            }
        })
        .collect()
}

fn write_atomically(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).map_err(io(format!("write {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(io(format!("rename to {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::wal::DEFAULT_SEG_SIZE;

    #[test]
    fn serves_only_an_intact_copy() {
        let t = std::env::temp_dir().join(format!("pgsnapfs-prefetch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&t);
        std::fs::create_dir_all(&t).unwrap();
        let name = "000000010000000000000003";
        let data = b"segment bytes".to_vec();
        let good = t.join(format!("{name}.{}", BlobId::of(&data).to_hex()));
        std::fs::write(&good, &data).unwrap();
        let dest = t.join("RECOVERYXLOG");
        assert!(!serve(&t, "000000010000000000000004", &dest).unwrap());
        assert!(serve(&t, name, &dest).unwrap());
        assert_eq!(std::fs::read(&dest).unwrap(), data);
        assert!(!good.exists(), "a served copy is moved, not copied");
        // Damaged: not served, removed.
        std::fs::write(&good, b"segment bytez").unwrap();
        assert!(!serve(&t, name, &dest).unwrap());
        assert!(!good.exists());
        assert_eq!(
            cached_segments(&t, DEFAULT_SEG_SIZE),
            Vec::<(PathBuf, u64)>::new()
        );
        std::fs::remove_dir_all(&t).unwrap();
    }
}
