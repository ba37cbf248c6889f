//! A clone's hydration (`clone create --hydrate`): a low-priority thread of the mount
//! process copies every byte of the clone's files into its durable copy-on-write layer
//! (see [`pgsnapfs_fuse::Filler`]), largest files first, throttled to a rate if asked.
//! The layer journals what it filled as written blocks, so a crash or a remount keeps it,
//! the server's writes are never overwritten, and the next mount's pass copies only what
//! is left. Progress goes to `hydration.json` in the clone's scratch directory (written
//! atomically), which `clone list` and `clone detach` read.

use crate::error::{io, Result};
use pgsnapfs_fuse::Filler;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How far hydration is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Bytes of the clone's files.
    pub total: u64,
    /// Bytes of them on local disk.
    pub hydrated: u64,
    /// Bytes read from the repository by the latest pass (a resumed pass copies only what
    /// the earlier ones left).
    #[serde(default)]
    pub copied: u64,
    /// A whole pass found every file local: the clone no longer needs the repository's
    /// chunks for what its files held then.
    pub complete: bool,
}

/// The progress file in scratch directory `scratch`.
pub fn progress_path(scratch: &Path) -> PathBuf {
    scratch.join("hydration.json")
}

/// The progress recorded in `scratch`, if hydration ever ran there.
pub fn progress(scratch: &Path) -> Option<Progress> {
    let bytes = std::fs::read(progress_path(scratch)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn save(path: &Path, p: &Progress) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec(p).expect("progress serializes");
    let mut f = std::fs::File::create(&tmp).map_err(io(format!("create {}", tmp.display())))?;
    f.write_all(&bytes)
        .and_then(|()| f.sync_all())
        .map_err(io(format!("write {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(io(format!("rename to {}", path.display())))
}

/// Keeps copying under `rate` bytes per second: how long to wait after `done` bytes in
/// `elapsed`.
pub fn pause(rate: Option<u64>, done: u64, elapsed: Duration) -> Duration {
    match rate.filter(|&r| r > 0) {
        Some(rate) => Duration::from_secs_f64(done as f64 / rate as f64).saturating_sub(elapsed),
        None => Duration::ZERO,
    }
}

/// Starts (or resumes) hydrating a mounted clone, unless a pass completed already: what
/// the server writes after that is local anyway.
pub fn resume(
    layout: &super::Layout,
    settings: &super::settings::Settings,
    mounted: &crate::session::Mounted,
) -> Result<Option<Hydration>> {
    if progress(&layout.scratch()).is_some_and(|p| p.complete) {
        return Ok(None);
    }
    Hydration::start(
        mounted.filler(),
        mounted.mountpoint().to_path_buf(),
        &layout.scratch(),
        settings.hydrate_rate,
    )
    .map(Some)
}

/// The background hydration of a mounted clone; dropping it stops it (what was copied is
/// kept).
pub struct Hydration {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Hydration {
    /// Starts hydrating the clone mounted at `mountpoint` through `filler`, recording
    /// progress in `scratch`.
    pub fn start(
        filler: Filler,
        mountpoint: PathBuf,
        scratch: &Path,
        rate: Option<u64>,
    ) -> Result<Hydration> {
        let stop = Arc::new(AtomicBool::new(false));
        let job = Job {
            filler,
            mountpoint,
            progress: progress_path(scratch),
            rate,
            stop: stop.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("hydrate".into())
            .spawn(move || {
                if let Err(e) = job.run() {
                    tracing::warn!("hydration stopped: {e}");
                }
            })
            .map_err(io("start the hydration thread".to_string()))?;
        Ok(Hydration {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Hydration {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Job {
    filler: Filler,
    mountpoint: PathBuf,
    progress: PathBuf,
    rate: Option<u64>,
    stop: Arc<AtomicBool>,
}

impl Job {
    fn run(self) -> Result<()> {
        crate::hydrate::lower_priority();
        let files = self.files()?;
        let mut p = Progress {
            total: files.iter().map(|(_, size)| size).sum(),
            ..Progress::default()
        };
        save(&self.progress, &p)?;
        let started = Instant::now();
        let (mut copied, mut last_saved) = (0u64, Instant::now());
        for (path, size) in &files {
            let before = p.hydrated;
            let filled = self.filler.fill(path, &mut |bytes| {
                copied += bytes;
                std::thread::sleep(pause(self.rate, copied, started.elapsed()));
                !self.stop.load(Ordering::Relaxed)
            });
            let filled = match filled {
                Ok(filled) => filled,
                // Unmounted: what was filled is kept; the next mount goes on.
                Err(e) if e.errno == libc::ESHUTDOWN => return Ok(()),
                Err(e) => {
                    return Err(crate::error::Error::Mount(format!(
                        "hydrate {}: {e}",
                        path.display()
                    )))
                }
            };
            if !filled.complete {
                return Ok(());
            }
            p.hydrated = before + size;
            p.copied = copied;
            if last_saved.elapsed() > Duration::from_millis(500) {
                save(&self.progress, &p)?;
                last_saved = Instant::now();
            }
        }
        p.complete = true;
        p.copied = copied;
        save(&self.progress, &p)?;
        tracing::info!(
            "hydration complete: {} bytes local, {copied} copied in this pass",
            p.total
        );
        Ok(())
    }

    /// Every regular file of the clone (relative path and size), largest first. pg_wal is
    /// a link to the scratch disk: not followed.
    fn files(&self) -> Result<Vec<(PathBuf, u64)>> {
        let mut out = Vec::new();
        let mut dirs = vec![PathBuf::new()];
        while let Some(dir) = dirs.pop() {
            let at = self.mountpoint.join(&dir);
            for entry in std::fs::read_dir(&at).map_err(io(format!("list {}", at.display())))? {
                let entry = entry.map_err(io(format!("list {}", at.display())))?;
                let rel = dir.join(entry.file_name());
                // Gone since the listing (the server removes files): nothing to copy.
                let Ok(meta) = entry.metadata() else {
                    continue;
                };
                if meta.is_dir() {
                    dirs.push(rel);
                } else if meta.is_file() {
                    out.push((rel, meta.size()));
                }
            }
        }
        out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_paces_the_copy() {
        let s = Duration::from_secs;
        assert_eq!(pause(None, 1 << 30, s(0)), Duration::ZERO);
        assert_eq!(pause(Some(1 << 20), 4 << 20, s(1)), s(3));
        assert_eq!(pause(Some(1 << 20), 1 << 20, s(2)), Duration::ZERO);
    }
}
