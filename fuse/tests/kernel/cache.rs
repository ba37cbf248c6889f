//! The read transport: request sizes, and the kernel's page cache kept across opens
//! yet never stale after a write through the copy-on-write layer.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::common::{pattern, Setup};
use pgsnapfs_fuse::{Attr, DirEntry, Error, MemSource, NodeId, Source};

const LEN: usize = 8 * 1024 * 1024 + 123;

/// Serves a [`MemSource`], recording the size of every read asked of it.
struct Sizes(Arc<MemSource>, Mutex<BTreeSet<u32>>);

impl Source for Sizes {
    fn lookup(&self, parent: NodeId, name: &OsStr) -> Result<Option<NodeId>, Error> {
        self.0.lookup(parent, name)
    }
    fn getattr(&self, node: NodeId) -> Result<Attr, Error> {
        self.0.getattr(node)
    }
    fn readdir(&self, node: NodeId) -> Result<Vec<DirEntry>, Error> {
        self.0.readdir(node)
    }
    fn readlink(&self, node: NodeId) -> Result<PathBuf, Error> {
        self.0.readlink(node)
    }
    fn read(&self, node: NodeId, offset: u64, size: u32) -> Result<Vec<u8>, Error> {
        self.1.lock().unwrap().insert(size);
        self.0.read(node, offset, size)
    }
}

/// Drops the kernel's cached pages of `file`, so the next read asks the file system.
fn drop_pages(file: &File) {
    // SAFETY: a valid open descriptor; advice only.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0);
}

#[test]
fn large_requests_cached_pages_and_coherent_writes() {
    let mut src = MemSource::new(0o755);
    src.add_file("big", pattern(LEN, 0), 0o644);
    let src = Arc::new(src);
    let sizes = Arc::new(Sizes(src.clone(), Mutex::new(BTreeSet::new())));
    let m = Setup::default().mount_serving(src.clone(), sizes.clone());
    let path = m.path("big");
    let mut want = pattern(LEN, 0);

    // A sequential read is asked of the source in 1 MiB requests, not 128 KiB ones.
    assert_eq!(fs::read(&path).unwrap(), want);
    let largest = sizes.1.lock().unwrap().last().copied();
    assert_eq!(largest, Some(1024 * 1024), "request sizes: {:?}", sizes.1);

    // A re-read, through a new open, comes from the kernel's page cache.
    let reads = src.reads();
    assert_eq!(fs::read(&path).unwrap(), want);
    assert_eq!(src.reads(), reads, "re-read asked the source again");

    // A write through the copy-on-write layer shows at once, cached or not.
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    f.write_all_at(&[0xAB; 5000], 3_000_000).unwrap();
    drop(f);
    want[3_000_000..3_005_000].fill(0xAB);
    assert_eq!(fs::read(&path).unwrap(), want, "stale pages after a write");
    let f = File::open(&path).unwrap();
    drop_pages(&f);
    assert_eq!(fs::read(&path).unwrap(), want, "the layer serves the write");

    // A truncate and regrow, too: the cut bytes read as zeros.
    f.sync_all().unwrap();
    let w = OpenOptions::new().write(true).open(&path).unwrap();
    w.set_len(2_000_000).unwrap();
    w.set_len(LEN as u64).unwrap();
    drop(w);
    want[2_000_000..].fill(0);
    assert_eq!(fs::read(&path).unwrap(), want);
    drop_pages(&f);
    assert_eq!(fs::read(&path).unwrap(), want);
    drop(f);
    m.unmount();
}
