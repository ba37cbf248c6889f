//! What a clone is doing now, read from the machine: whether its data directory is mounted
//! (or left as a stale mount by a killed mount process), whether a server runs on it, and
//! how much its writes take on local disk.

use serde::Serialize;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The state of a clone's data directory mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mount {
    /// Not mounted.
    No,
    /// Mounted and served.
    Yes,
    /// Mounted, but its process is gone (killed, or the machine's FUSE connection aborted).
    Stale,
}

/// How the mount at `data` (a directory in `parent`) stands. The kernel may answer a stat
/// of a dead mount from its cache: a listing always asks the mount process.
pub fn mount(data: &Path, parent: &Path) -> Mount {
    let stale = |e: &std::io::Error| e.raw_os_error() == Some(libc::ENOTCONN);
    // A mount process killed a moment ago may still answer from the kernel's caches while
    // its last threads exit (the connection ends with the last of them): its process
    // decides.
    let dead = || {
        crate::session::unmount::serving_process(data)
            .is_some_and(|pid| !crate::lock::holder_alive(pid, None))
    };
    match (std::fs::metadata(data), std::fs::metadata(parent)) {
        (Err(e), _) if stale(&e) => Mount::Stale,
        (Ok(d), Ok(p)) if d.dev() != p.dev() => match std::fs::read_dir(data) {
            Err(e) if stale(&e) => Mount::Stale,
            _ if dead() => Mount::Stale,
            _ => Mount::Yes,
        },
        _ => Mount::No,
    }
}

/// The PID of the postmaster running on the mounted data directory `data`, from its
/// postmaster.pid, if that process lives.
pub fn server(data: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(data.join("postmaster.pid")).ok()?;
    let pid: u32 = text.lines().next()?.trim().parse().ok()?;
    crate::lock::holder_alive(pid, None).then_some(pid)
}

/// Bytes the files below `dir` take on disk (allocated blocks: the data files are sparse).
pub fn disk_usage(dir: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(dir) else {
        return 0;
    };
    let own = meta.blocks() * 512;
    if !meta.is_dir() {
        return own;
    }
    let children = std::fs::read_dir(dir).into_iter().flatten().flatten();
    own + children.map(|e| disk_usage(&e.path())).sum::<u64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_files_count_what_they_hold() {
        let dir = tempfile::tempdir().unwrap();
        let f = std::fs::File::create(dir.path().join("sparse")).unwrap();
        f.set_len(1 << 30).unwrap();
        std::fs::write(dir.path().join("small"), vec![1u8; 100_000]).unwrap();
        let used = disk_usage(dir.path());
        assert!((100_000..1 << 20).contains(&used), "{used}");
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        assert_eq!(mount(&sub, dir.path()), Mount::No);
        assert_eq!(server(dir.path()), None);
    }
}
