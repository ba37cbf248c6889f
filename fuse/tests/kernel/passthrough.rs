//! FUSE passthrough: a file with a complete local copy is read (and, writable, written) by
//! the kernel from that copy, without a request to the source.

use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::common::{pattern, Setup};
use pgsnapfs_fuse::{Attr, DirEntry, Error, MemSource, NodeId, Source};

const LEN: usize = 3 * 1024 * 1024 + 77;

/// A source with file `f` and a local copy of it in a new temporary directory.
fn source_with_copy() -> (MemSource, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("f.copy");
    fs::write(&copy, pattern(LEN, 3)).unwrap();
    let mut src = MemSource::new(0o755);
    let f = src.add_file("f", pattern(LEN, 3), 0o644);
    src.add_file("plain", pattern(LEN, 5), 0o644);
    src.set_local(f, &copy);
    (src, dir)
}

#[test]
fn read_only_mounts_read_local_copies_without_the_source() {
    let (src, _copies) = source_with_copy();
    let m = Setup {
        writable: false,
        passthrough: true,
        ..Setup::default()
    }
    .mount(src);
    // Two opens at once share one backing file.
    let mut a = fs::File::open(m.path("f")).unwrap();
    let b = fs::read(m.path("f")).unwrap();
    let mut a_bytes = Vec::new();
    a.read_to_end(&mut a_bytes).unwrap();
    assert!(a_bytes == pattern(LEN, 3) && b == a_bytes);
    assert_eq!(m.source.reads(), 0, "passthrough reads reached the source");
    // Files without a local copy are served as before.
    assert_eq!(fs::read(m.path("plain")).unwrap(), pattern(LEN, 5));
    assert!(m.source.reads() > 0);
    drop(a);
    m.unmount();
}

#[test]
fn writable_mounts_adopt_the_copy_and_write_into_it() {
    let (src, copies) = source_with_copy();
    let m = Setup {
        passthrough: true,
        ..Setup::default()
    }
    .mount(src);
    let path = m.path("f");
    let mut want = pattern(LEN, 3);
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    // Adopted: moved into the scratch directory, not copied.
    assert!(!copies.path().join("f.copy").exists());
    f.seek(SeekFrom::Start(100)).unwrap();
    f.write_all(b"changed").unwrap();
    want[100..107].copy_from_slice(b"changed");
    // Past the end: the file grows, and stat says so.
    f.seek(SeekFrom::Start(LEN as u64 + 10)).unwrap();
    f.write_all(b"tail").unwrap();
    want.resize(LEN + 10, 0);
    want.extend_from_slice(b"tail");
    f.sync_all().unwrap();
    assert_eq!(fs::metadata(&path).unwrap().len(), want.len() as u64);
    assert_eq!(fs::read(&path).unwrap(), want);
    drop(f);
    // A later open sees the same bytes, and truncation lands in the copy.
    assert_eq!(fs::read(&path).unwrap(), want);
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(50)
        .unwrap();
    assert_eq!(fs::read(&path).unwrap(), &want[..50]);
    assert_eq!(m.source.reads(), 0, "passthrough reads reached the source");
    m.unmount();
}

/// Serves a [`MemSource`], offering its local copies only once switched on.
struct Later(Arc<MemSource>, AtomicBool);

impl Source for Later {
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
        self.0.read(node, offset, size)
    }
    fn local_file(&self, node: NodeId) -> Option<PathBuf> {
        self.1
            .load(Ordering::Relaxed)
            .then(|| self.0.local_file(node))
            .flatten()
    }
}

#[test]
fn a_copy_made_while_the_file_is_open_waits_for_it_to_close() {
    let (src, _copies) = source_with_copy();
    let src = Arc::new(src);
    let later = Arc::new(Later(src.clone(), AtomicBool::new(false)));
    let m = Setup {
        writable: false,
        passthrough: true,
        ..Setup::default()
    }
    .mount_serving(src.clone(), later.clone());
    let path = m.path("f");
    let read_from_start = |f: &mut fs::File| {
        let mut buf = Vec::new();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.read_to_end(&mut buf).unwrap();
        buf
    };
    let mut cached = fs::File::open(&path).unwrap();
    later.1.store(true, Ordering::Relaxed);
    // The kernel refuses a passthrough open next to a cached one (EIO): this one is cached.
    let mut second = fs::File::open(&path).unwrap();
    assert_eq!(read_from_start(&mut second), pattern(LEN, 3));
    assert!(src.reads() > 0);
    drop((cached, second));
    // All closed: the next open is passed through, and the source is asked nothing more.
    let reads = src.reads();
    cached = fs::File::open(&path).unwrap();
    // Drop the kernel's cached pages of the file, so a read that is not passed through shows.
    // SAFETY: a valid open descriptor; advice only.
    let rc = unsafe { libc::posix_fadvise(cached.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0);
    assert_eq!(read_from_start(&mut cached), pattern(LEN, 3));
    assert_eq!(src.reads(), reads, "a passthrough read reached the source");
    drop(cached);
    m.unmount();
}

#[test]
fn a_file_written_before_its_copy_was_ready_is_merged_into_it() {
    let (src, _copies) = source_with_copy();
    let src = Arc::new(src);
    let later = Arc::new(Later(src.clone(), AtomicBool::new(false)));
    let m = Setup {
        passthrough: true,
        ..Setup::default()
    }
    .mount_serving(src.clone(), later.clone());
    let path = m.path("f");
    let mut want = pattern(LEN, 3);
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(b"early", 9000).unwrap();
    want[9000..9005].copy_from_slice(b"early");
    drop(f);
    later.1.store(true, Ordering::Relaxed);
    // The kernel sends the writer's RELEASE without waiting for it, and while a cached open
    // is live new opens are cached too: an open that comes before the release is served
    // without passthrough. Every open reads the merged bytes; soon one is passed through.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let f = fs::File::open(&path).unwrap();
        // SAFETY: a valid open descriptor; advice only.
        let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0);
        let reads = src.reads();
        let mut got = vec![0; LEN];
        f.read_exact_at(&mut got, 0).unwrap();
        assert_eq!(got, want);
        if src.reads() == reads {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a passthrough read reached the source"
        );
        drop(f);
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    m.unmount();
}
