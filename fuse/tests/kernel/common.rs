//! Mounting a [`MemSource`] in a fresh temporary directory, unmounted on drop.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pgsnapfs_fuse::{mount, MemSource, MountHandle, MountOptions, Source};

pub const BLOCK: usize = 8192;

/// Bytes that differ at every offset, so a misplaced block shows.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ seed).collect()
}

/// A mounted [`MemSource`]; unmounts on drop, before the temporary directories go.
pub struct TestMount {
    pub handle: Option<MountHandle>,
    pub source: Arc<MemSource>,
    pub root: PathBuf,
    pub scratch: PathBuf,
    durable: bool,
    _dir: tempfile::TempDir,
}

impl TestMount {
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    pub fn unmount(mut self) {
        self.handle
            .take()
            .expect("mounted")
            .unmount()
            .expect("unmount");
        assert!(
            !is_mounted(&self.root),
            "{} still mounted",
            self.root.display()
        );
        // A throw-away copy-on-write layer leaves nothing behind.
        if let (Ok(dir), false) = (std::fs::read_dir(&self.scratch), self.durable) {
            assert_eq!(dir.count(), 0, "scratch files left after unmount");
        }
    }
}

impl Drop for TestMount {
    fn drop(&mut self) {
        drop(self.handle.take());
    }
}

pub struct Setup {
    pub writable: bool,
    pub allow_other: bool,
    pub writeback_cache: bool,
    pub passthrough: bool,
    pub uid: u32,
    pub gid: u32,
    /// A durable copy-on-write layer kept in this directory, instead of a throw-away one.
    pub durable: Option<PathBuf>,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            writable: true,
            allow_other: true,
            writeback_cache: false,
            passthrough: false,
            uid: 0,
            gid: 0,
            durable: None,
        }
    }
}

impl Setup {
    pub fn mount(self, source: MemSource) -> TestMount {
        let source = Arc::new(source);
        self.mount_serving(source.clone(), source)
    }

    /// Mounts `served`, which wraps `source`.
    pub fn mount_serving(self, source: Arc<MemSource>, served: Arc<dyn Source>) -> TestMount {
        assert!(
            Path::new("/dev/fuse").exists(),
            "/dev/fuse is missing: these tests need FUSE"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        // Other users (postgres) must be able to reach the mountpoint.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let root = dir.path().join("mnt");
        let durable = self.durable.is_some();
        let scratch = self
            .durable
            .clone()
            .unwrap_or_else(|| dir.path().join("scratch"));
        std::fs::create_dir(&root).unwrap();
        let opts = MountOptions {
            fsname: "pgsnapfs-test".into(),
            uid: self.uid,
            gid: self.gid,
            allow_other: self.allow_other,
            writable: self.writable.then(|| scratch.clone()),
            durable,
            block_size: BLOCK as u32,
            threads: 4,
            writeback_cache: self.writeback_cache,
            passthrough: self.passthrough,
        };
        let root = root.canonicalize().unwrap();
        let handle = mount(served, &root, opts).expect("mount (needs root and /dev/fuse)");
        assert!(is_mounted(&root), "{} not in /proc/mounts", root.display());
        TestMount {
            handle: Some(handle),
            source,
            root,
            scratch,
            durable,
            _dir: dir,
        }
    }
}

pub fn is_mounted(path: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let path = path.to_string_lossy();
    mounts.lines().any(|l| l.split(' ').nth(1) == Some(&*path))
}
