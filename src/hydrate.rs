//! Background hydration (`mount --hydrate`): a low-priority thread copies the files of the
//! mounted backup to the mount's scratch directory, largest first, and marks each one local
//! once every byte is there. The FUSE layer then opens it with passthrough, and the kernel
//! reads it from local disk without a request to the mount process (a view adopts the copy
//! as the file's copy-on-write copy, so the server's writes land in it).
//!
//! Bytes come through the mount's own source, that is the store's `FileReader` with its
//! checks: a file with a chunk that fails them is never made local, and its reads keep
//! failing with EIO. A copy is written under a temporary name, flushed, and renamed into
//! place before it is marked local, so a half-written copy is never served.
//!
//! Space: a file is copied only if the copies stay within the limit asked for and the
//! scratch file system keeps [`RESERVE_PERCENT`] of its space free afterwards; a file that
//! does not fit is skipped, and smaller ones after it may still fit.

use crate::mount::SnapSource;
use pgsnapfs_fuse::{Error as FsError, Kind, NodeId, Source, ROOT};
use std::collections::HashMap;
use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::thread::JoinHandle;

/// The share of the scratch file system hydration always leaves free, for the server's
/// writes on a view and for everyone else on that disk.
pub const RESERVE_PERCENT: u64 = 10;

/// How much one read asks of the source: the reader's read-ahead works on runs this long.
const PIECE: u32 = 1 << 20;

/// Smaller files are not copied: the mount serves them in a request or two, and the kernel
/// keeps their pages, so a copy (and its flush) would gain nothing.
pub const MIN_SIZE: u64 = 128 << 10;

/// The files copied to local disk so far, by node: what the source answers to
/// `Source::local_file`.
#[derive(Debug, Default)]
pub struct LocalCopies {
    files: RwLock<HashMap<NodeId, PathBuf>>,
}

impl LocalCopies {
    /// The complete local copy of `node`, if it has one.
    pub fn get(&self, node: NodeId) -> Option<PathBuf> {
        // Only inserts happen under the lock: a poisoned map is whole.
        let files = self.files.read().unwrap_or_else(PoisonError::into_inner);
        files.get(&node).cloned()
    }

    fn insert(&self, node: NodeId, path: PathBuf) {
        let mut files = self.files.write().unwrap_or_else(PoisonError::into_inner);
        files.insert(node, path);
    }
}

/// A file of the mounted backup that hydration may copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The node serving it.
    pub node: NodeId,
    /// Its path below the hydrated tree, for messages.
    pub path: PathBuf,
    /// Its length.
    pub size: u64,
}

/// The order files are copied in: largest first, as they are the slowest through the mount;
/// files under [`MIN_SIZE`] are left out.
pub fn order(mut files: Vec<Candidate>) -> Vec<Candidate> {
    files.retain(|f| f.size >= MIN_SIZE);
    files.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.path.cmp(&b.path)));
    files
}

/// Whether a file of `size` bytes may be copied, with `used` bytes copied so far, `limit`
/// the most hydration may use (None: no limit of its own), and the scratch file system
/// having `free` of `total` bytes available now.
pub fn fits(size: u64, used: u64, limit: Option<u64>, free: u64, total: u64) -> bool {
    let within_limit = limit.is_none_or(|l| used.saturating_add(size) <= l);
    let reserve = total / 100 * RESERVE_PERCENT;
    within_limit && free.saturating_sub(size) >= reserve && size <= free
}

/// The background copier; dropping it stops it and removes the copies it left unadopted.
pub struct Hydrator {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    dir: PathBuf,
}

impl Hydrator {
    /// Starts copying the files below `root` (a directory path below the mount's root, or
    /// the root itself when empty) into `dir`, created if missing, using at most `limit`
    /// bytes.
    pub fn start(
        source: Arc<SnapSource>,
        root: &Path,
        dir: PathBuf,
        limit: Option<u64>,
    ) -> crate::error::Result<Hydrator> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(crate::error::io(format!("create {}", dir.display())))?;
        let stop = Arc::new(AtomicBool::new(false));
        let job = Job {
            source,
            root: root.to_path_buf(),
            dir: dir.clone(),
            limit,
            stop: stop.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("hydrate".into())
            .spawn(move || job.run())
            .map_err(crate::error::io("start the hydration thread".to_string()))?;
        Ok(Hydrator {
            stop,
            thread: Some(thread),
            dir,
        })
    }
}

impl Drop for Hydrator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(
                "cannot remove the local copies in {}: {e}",
                self.dir.display()
            );
        }
    }
}

struct Job {
    source: Arc<SnapSource>,
    root: PathBuf,
    dir: PathBuf,
    limit: Option<u64>,
    stop: Arc<AtomicBool>,
}

/// Why a file was not copied.
enum Skip {
    Stopped,
    Failed(String),
}

impl Job {
    fn run(self) {
        lower_priority();
        let files = match self.candidates() {
            Ok(files) => order(files),
            Err(e) => {
                tracing::warn!("hydration: cannot list {}: {e}", self.root.display());
                return;
            }
        };
        let local = self.source.local_copies();
        let (mut copied, mut bytes, mut skipped) = (0u64, 0u64, 0u64);
        for file in &files {
            let (free, total) = match space(&self.dir) {
                Ok(space) => space,
                Err(e) => {
                    tracing::warn!("hydration stopped: {e}");
                    return;
                }
            };
            if !fits(file.size, bytes, self.limit, free, total) {
                skipped += 1;
                continue;
            }
            let path = self.dir.join(file.node.to_string());
            match self.copy(file, &path) {
                Ok(()) => {
                    local.insert(file.node, path);
                    copied += 1;
                    bytes += file.size;
                }
                Err(Skip::Stopped) => return,
                Err(Skip::Failed(e)) => {
                    tracing::warn!("hydration: not copying {}: {e}", file.path.display());
                    skipped += 1;
                }
            }
        }
        tracing::info!(
            "hydration finished: {copied} files ({} bytes) local in {}, {skipped} skipped",
            bytes,
            self.dir.display()
        );
    }

    /// Every regular file below the root, with its size.
    fn candidates(&self) -> Result<Vec<Candidate>, FsError> {
        let mut node = ROOT;
        for name in self.root.iter() {
            node = self
                .source
                .lookup(node, name)?
                .ok_or_else(|| FsError::not_found(format!("{}", self.root.display())))?;
        }
        let mut out = Vec::new();
        let mut dirs = vec![(node, PathBuf::new())];
        while let Some((dir, path)) = dirs.pop() {
            for entry in self.source.readdir(dir)? {
                let path = path.join(&entry.name);
                match entry.kind {
                    Kind::Dir => dirs.push((entry.node, path)),
                    Kind::File => out.push(Candidate {
                        node: entry.node,
                        size: self.source.getattr(entry.node)?.size,
                        path,
                    }),
                    Kind::Symlink => {}
                }
            }
        }
        Ok(out)
    }

    /// Copies one file to `path`: to a temporary name, flushed, then renamed.
    fn copy(&self, file: &Candidate, path: &Path) -> Result<(), Skip> {
        let tmp = path.with_extension("tmp");
        let result = self.write_copy(file, &tmp).and_then(|()| {
            std::fs::rename(&tmp, path).map_err(|e| Skip::Failed(format!("rename: {e}")))
        });
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    fn write_copy(&self, file: &Candidate, tmp: &Path) -> Result<(), Skip> {
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            Skip::Failed(format!("{what} {}: {e}", tmp.display()))
        };
        let mut out = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(tmp)
            .map_err(|e| failed("create", &e))?;
        let mut offset = 0;
        while offset < file.size {
            if self.stop.load(Ordering::Relaxed) {
                return Err(Skip::Stopped);
            }
            let bytes = self
                .source
                .read(file.node, offset, PIECE)
                .map_err(|e| Skip::Failed(e.to_string()))?;
            if bytes.is_empty() {
                return Err(Skip::Failed(format!(
                    "ends at {offset} of {} bytes",
                    file.size
                )));
            }
            out.write_all(&bytes).map_err(|e| failed("write", &e))?;
            offset += bytes.len() as u64;
        }
        out.sync_all().map_err(|e| failed("flush", &e))?;
        Ok(())
    }
}

/// Available and total bytes of the file system holding `dir`.
fn space(dir: &Path) -> Result<(u64, u64), String> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| format!("{}: a NUL byte in the path", dir.display()))?;
    // SAFETY: statvfs is plain integers, for which zero is valid.
    let mut vfs: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated and `vfs` is a statvfs to write into.
    if unsafe { libc::statvfs(c.as_ptr(), &mut vfs) } != 0 {
        return Err(format!(
            "statvfs {}: {}",
            dir.display(),
            std::io::Error::last_os_error()
        ));
    }
    let unit = vfs.f_frsize;
    Ok((vfs.f_bavail * unit, vfs.f_blocks * unit))
}

/// Hydration yields to everything else: lowest CPU priority, idle I/O class.
pub(crate) fn lower_priority() {
    // SAFETY: plain system calls on this thread's own id.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19);
        // ioprio_set(IOPRIO_WHO_PROCESS, tid, IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT)
        libc::syscall(libc::SYS_ioprio_set, 1, tid, 3 << 13);
    }
}

/// The directory a mount's local copies go to, in its scratch directory.
pub fn copies_dir(scratch: &Path) -> PathBuf {
    scratch.join("hydrated")
}

/// What the catalogue hydrates: the newest backup, as `backups/latest/` shows it.
pub fn catalogue_root() -> PathBuf {
    Path::new("backups").join("latest")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(node: NodeId, size: u64) -> Candidate {
        Candidate {
            node,
            path: PathBuf::from(format!("f{node}")),
            size,
        }
    }

    #[test]
    fn largest_files_first_and_small_ones_never() {
        let got = order(vec![
            c(1, MIN_SIZE),
            c(2, 0),
            c(3, 1 << 30),
            c(4, MIN_SIZE + 1),
            c(5, MIN_SIZE - 1),
        ]);
        let nodes: Vec<_> = got.iter().map(|f| f.node).collect();
        assert_eq!(nodes, [3, 4, 1]);
    }

    #[test]
    fn copies_stay_within_the_limit_and_leave_the_reserve_free() {
        let gib = 1 << 30;
        // 100 GiB disk, 50 free: a 1 GiB file fits, with or without a limit.
        assert!(fits(gib, 0, None, 50 * gib, 100 * gib));
        assert!(fits(gib, gib, Some(2 * gib), 50 * gib, 100 * gib));
        // Past the limit.
        assert!(!fits(gib, gib + 1, Some(2 * gib), 50 * gib, 100 * gib));
        // Into the last 10% of the disk.
        assert!(!fits(gib, 0, None, 10 * gib + gib / 2, 100 * gib));
        assert!(fits(gib, 0, None, 11 * gib, 100 * gib));
        // Larger than what is free.
        assert!(!fits(gib, 0, None, gib / 2, 0));
    }
}
