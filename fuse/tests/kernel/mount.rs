//! The file system through a real kernel mount, used with std::fs like any disk.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::common::{is_mounted, pattern, Setup, TestMount, BLOCK};
use pgsnapfs_fuse::{MemSource, Source, ROOT};

fn source() -> MemSource {
    let mut src = MemSource::new(0o755);
    src.add_file("big", pattern(5 * 1024 * 1024 + 123, 0), 0o644);
    src.add_file("dir/a", b"source a".to_vec(), 0o600);
    src.add_file("dir/b", b"source b".to_vec(), 0o600);
    src.add_dir("dir/sub", 0o700);
    src.add_file("dir/sub/c", pattern(3 * BLOCK, 1), 0o600);
    src.add_symlink("link", "dir/a");
    src
}

fn errno(result: std::io::Result<impl Sized>) -> i32 {
    result
        .err()
        .and_then(|e| e.raw_os_error())
        .expect("an OS error")
}

fn cstr(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap()
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The source must read exactly as it was built, whatever happened on the mount.
fn assert_source_intact(m: &TestMount) {
    let src = &m.source;
    let big = src.lookup(ROOT, "big".as_ref()).unwrap().unwrap();
    assert_eq!(
        src.read(big, 0, u32::MAX).unwrap(),
        pattern(5 * 1024 * 1024 + 123, 0)
    );
    let dir = src.lookup(ROOT, "dir".as_ref()).unwrap().unwrap();
    assert_eq!(src.readdir(dir).unwrap().len(), 3);
    let a = src.lookup(dir, "a".as_ref()).unwrap().unwrap();
    assert_eq!(src.read(a, 0, 100).unwrap(), b"source a");
}

#[test]
fn reads_match_the_source() {
    let m = Setup::default().mount(source());
    assert_eq!(
        fs::read(m.path("big")).unwrap(),
        pattern(5 * 1024 * 1024 + 123, 0)
    );
    assert_eq!(
        fs::read(m.path("dir/sub/c")).unwrap(),
        pattern(3 * BLOCK, 1)
    );
    let mut at = [0u8; 1000];
    File::open(m.path("big"))
        .unwrap()
        .read_exact_at(&mut at, 4_000_001)
        .unwrap();
    assert_eq!(
        at[..],
        pattern(5 * 1024 * 1024 + 123, 0)[4_000_001..4_001_001]
    );

    assert_eq!(names(&m.root), ["big", "dir", "link"]);
    assert_eq!(names(&m.path("dir")), ["a", "b", "sub"]);
    assert_eq!(fs::read_link(m.path("link")).unwrap(), Path::new("dir/a"));
    assert_eq!(fs::read(m.path("link")).unwrap(), b"source a");

    let meta = fs::metadata(m.path("dir/a")).unwrap();
    assert_eq!(
        (meta.mode() & 0o7777, meta.uid(), meta.gid(), meta.len()),
        (0o600, 0, 0, 8)
    );
    assert_eq!(
        fs::metadata(m.path("dir/sub")).unwrap().mode() & 0o7777,
        0o700
    );
    assert!(
        fs::read_dir(&m.scratch).unwrap().next().is_none(),
        "reading copies nothing"
    );
    let dev = fs::metadata(&m.root).unwrap().dev();
    let knob = format!(
        "/sys/class/bdi/{}:{}/read_ahead_kb",
        libc::major(dev),
        libc::minor(dev)
    );
    assert_eq!(
        fs::read_to_string(knob).unwrap().trim(),
        "1024",
        "readahead raised to 1 MiB"
    );
    m.unmount();
}

fn behaves_like_a_disk(writeback_cache: bool) {
    let m = Setup {
        writeback_cache,
        ..Setup::default()
    }
    .mount(source());

    // New files.
    fs::write(m.path("new"), b"hello").unwrap();
    assert_eq!(fs::read(m.path("new")).unwrap(), b"hello");
    assert_eq!(fs::metadata(m.path("new")).unwrap().len(), 5);
    assert_eq!(
        errno(
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(m.path("new"))
        ),
        libc::EEXIST
    );
    assert_eq!(
        errno(
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(m.path("big"))
        ),
        libc::EEXIST
    );

    // Writes into a source file, unaligned, and past its end.
    let mut want = pattern(5 * 1024 * 1024 + 123, 0);
    {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(m.path("big"))
            .unwrap();
        f.write_all_at(&[0xAA; 100], 3 * BLOCK as u64 - 50).unwrap();
        f.write_all_at(&[0xBB; BLOCK], 10 * BLOCK as u64).unwrap();
        f.write_all_at(b"end", want.len() as u64 + 10).unwrap();
        f.sync_all().unwrap();
        f.sync_data().unwrap();
        assert_eq!(
            f.metadata().unwrap().len(),
            want.len() as u64 + 13,
            "getattr after write sees the new size"
        );
    }
    want[3 * BLOCK - 50..3 * BLOCK + 50].fill(0xAA);
    want[10 * BLOCK..11 * BLOCK].fill(0xBB);
    want.extend_from_slice(&[0; 10]);
    want.extend_from_slice(b"end");
    assert_eq!(fs::read(m.path("big")).unwrap(), want);

    // Appends, and open with O_TRUNC.
    let mut f = OpenOptions::new()
        .append(true)
        .open(m.path("dir/a"))
        .unwrap();
    f.write_all(b" appended").unwrap();
    drop(f);
    assert_eq!(fs::read(m.path("dir/a")).unwrap(), b"source a appended");
    fs::write(m.path("dir/b"), b"rewritten").unwrap();
    assert_eq!(fs::read(m.path("dir/b")).unwrap(), b"rewritten");

    // Truncate: shrink, then grow with zeros.
    let f = OpenOptions::new()
        .write(true)
        .open(m.path("dir/sub/c"))
        .unwrap();
    f.set_len(100).unwrap();
    assert_eq!(fs::metadata(m.path("dir/sub/c")).unwrap().len(), 100);
    f.set_len(2 * BLOCK as u64).unwrap();
    drop(f);
    let c = fs::read(m.path("dir/sub/c")).unwrap();
    assert_eq!(c[..100], pattern(100, 1)[..]);
    assert!(c[100..].iter().all(|&b| b == 0) && c.len() == 2 * BLOCK);

    // Rename: over a file, of a directory, with RENAME_NOREPLACE; not RENAME_EXCHANGE.
    fs::rename(m.path("new"), m.path("dir/a")).unwrap();
    assert_eq!(fs::read(m.path("dir/a")).unwrap(), b"hello");
    assert!(!m.path("new").exists());
    fs::rename(m.path("dir"), m.path("moved")).unwrap();
    assert_eq!(names(&m.root), ["big", "link", "moved"]);
    assert_eq!(names(&m.path("moved")), ["a", "b", "sub"]);
    let (from, to) = (cstr(&m.path("moved/a")), cstr(&m.path("moved/b")));
    for (flags, want) in [
        (libc::RENAME_NOREPLACE, libc::EEXIST),
        (libc::RENAME_EXCHANGE, libc::EINVAL),
    ] {
        // SAFETY: valid C strings; AT_FDCWD with absolute paths.
        let rc = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                from.as_ptr(),
                libc::AT_FDCWD,
                to.as_ptr(),
                flags,
            )
        };
        assert_eq!(
            (rc, std::io::Error::last_os_error().raw_os_error()),
            (-1, Some(want))
        );
    }

    // Unlink, including a file that is still open.
    let mut open = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.path("moved/b"))
        .unwrap();
    fs::remove_file(m.path("moved/b")).unwrap();
    assert!(!m.path("moved/b").exists());
    open.write_all_at(b"R", 0).unwrap();
    let mut s = String::new();
    open.seek(SeekFrom::Start(0)).unwrap();
    open.read_to_string(&mut s).unwrap();
    assert_eq!(s, "Rewritten");
    drop(open);
    assert_eq!(names(&m.path("moved")), ["a", "sub"]);

    // Directories.
    fs::create_dir(m.path("moved/new_dir")).unwrap();
    fs::write(m.path("moved/new_dir/f"), b"x").unwrap();
    assert_eq!(
        errno(fs::remove_dir(m.path("moved/new_dir"))),
        libc::ENOTEMPTY
    );
    assert_eq!(errno(fs::remove_dir(m.path("moved/sub"))), libc::ENOTEMPTY);
    fs::remove_file(m.path("moved/new_dir/f")).unwrap();
    fs::remove_dir(m.path("moved/new_dir")).unwrap();
    fs::remove_dir_all(m.path("moved/sub")).unwrap();
    assert_eq!(names(&m.path("moved")), ["a"]);
    File::open(m.path("moved")).unwrap().sync_all().unwrap();

    // Symlinks and hard links.
    std::os::unix::fs::symlink("/elsewhere/pg_wal", m.path("pg_wal")).unwrap();
    assert_eq!(
        fs::read_link(m.path("pg_wal")).unwrap(),
        Path::new("/elsewhere/pg_wal")
    );
    fs::hard_link(m.path("moved/a"), m.path("a_link")).unwrap();
    fs::hard_link(m.path("big"), m.path("big_link")).unwrap();
    assert_eq!(fs::metadata(m.path("a_link")).unwrap().nlink(), 2);
    assert_eq!(
        fs::metadata(m.path("moved/a")).unwrap().ino(),
        fs::metadata(m.path("a_link")).unwrap().ino()
    );
    fs::write(m.path("a_link"), b"via link").unwrap();
    assert_eq!(fs::read(m.path("moved/a")).unwrap(), b"via link");
    fs::remove_file(m.path("moved/a")).unwrap();
    assert_eq!(fs::metadata(m.path("a_link")).unwrap().nlink(), 1);
    assert_eq!(fs::read(m.path("big_link")).unwrap(), want);

    // Attributes.
    fs::set_permissions(m.path("big"), fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(fs::metadata(m.path("big")).unwrap().mode() & 0o7777, 0o640);
    let when = SystemTime::UNIX_EPOCH + Duration::from_secs(1_500_000_000);
    File::options()
        .write(true)
        .open(m.path("a_link"))
        .unwrap()
        .set_modified(when)
        .unwrap();
    assert_eq!(
        fs::metadata(m.path("a_link")).unwrap().modified().unwrap(),
        when
    );
    assert_eq!(
        errno(std::os::unix::fs::chown(m.path("a_link"), Some(1), None)),
        libc::EPERM
    );

    // fallocate mode 0 grows; other modes are refused.
    let f = OpenOptions::new()
        .write(true)
        .open(m.path("a_link"))
        .unwrap();
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open descriptor.
    assert_eq!(unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, 100_000) }, 0);
    assert_eq!(f.metadata().unwrap().len(), 100_000);
    // SAFETY: as above.
    let rc = unsafe { libc::fallocate(f.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, 0, 200_000) };
    assert_eq!(
        (rc, std::io::Error::last_os_error().raw_os_error()),
        (-1, Some(libc::EOPNOTSUPP))
    );
    drop(f);

    // xattrs are absent (not "not implemented"); statfs, access and mknod of a file work.
    let path = cstr(&m.path("big"));
    let name = CString::new("user.test").unwrap();
    for _ in 0..2 {
        // SAFETY: valid C strings; a null buffer of size 0 asks for the length.
        let rc = unsafe { libc::getxattr(path.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) };
        assert_eq!(
            (rc, std::io::Error::last_os_error().raw_os_error()),
            (-1, Some(libc::ENODATA))
        );
    }
    // SAFETY: as above.
    assert_eq!(
        unsafe { libc::listxattr(path.as_ptr(), std::ptr::null_mut(), 0) },
        0
    );
    // SAFETY: statvfs writes into `vfs` only.
    let mut vfs: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(path.as_ptr(), &mut vfs) }, 0);
    assert!(vfs.f_bavail > 0 && vfs.f_namemax == 255);
    // SAFETY: a valid C string.
    assert_eq!(
        unsafe { libc::access(path.as_ptr(), libc::R_OK | libc::W_OK) },
        0
    );
    let (file, fifo) = (cstr(&m.path("made")), cstr(&m.path("fifo")));
    // SAFETY: valid C strings.
    assert_eq!(
        unsafe { libc::mknod(file.as_ptr(), libc::S_IFREG | 0o600, 0) },
        0
    );
    // SAFETY: as above.
    let rc = unsafe { libc::mknod(fifo.as_ptr(), libc::S_IFIFO | 0o600, 0) };
    assert_eq!(
        (rc, std::io::Error::last_os_error().raw_os_error()),
        (-1, Some(libc::EPERM))
    );

    assert_eq!(
        names(&m.root),
        ["a_link", "big", "big_link", "link", "made", "moved", "pg_wal"]
    );
    assert_source_intact(&m);
    m.unmount();
}

#[test]
fn behaves_like_a_disk_write_through() {
    behaves_like_a_disk(false);
}

#[test]
fn behaves_like_a_disk_with_writeback_cache() {
    behaves_like_a_disk(true);
}

#[test]
fn parallel_readers_and_writers() {
    let m = Setup::default().mount(source());
    std::thread::scope(|s| {
        for t in 0..8u8 {
            let m = &m;
            s.spawn(move || {
                let path = m.path(&format!("file{t}"));
                let data = pattern(1024 * 1024 + usize::from(t) * 1000, t);
                fs::write(&path, &data).unwrap();
                assert_eq!(fs::read(&path).unwrap(), data);
                let mut big = vec![0u8; 300_000];
                File::open(m.path("big"))
                    .unwrap()
                    .read_exact_at(&mut big, u64::from(t) * 500_000)
                    .unwrap();
                let start = usize::from(t) * 500_000;
                assert_eq!(
                    big,
                    pattern(5 * 1024 * 1024 + 123, 0)[start..start + 300_000]
                );
            });
        }
    });
    assert_eq!(fs::read_dir(&m.root).unwrap().count(), 11);
    m.unmount();
}

#[test]
fn read_only_gives_erofs() {
    let m = Setup {
        writable: false,
        ..Setup::default()
    }
    .mount(source());
    assert_eq!(fs::read(m.path("dir/a")).unwrap(), b"source a");
    assert_eq!(errno(File::create(m.path("new"))), libc::EROFS);
    assert_eq!(
        errno(OpenOptions::new().write(true).open(m.path("dir/a"))),
        libc::EROFS
    );
    assert_eq!(errno(fs::create_dir(m.path("d"))), libc::EROFS);
    assert_eq!(errno(fs::remove_file(m.path("dir/a"))), libc::EROFS);
    assert_eq!(
        errno(fs::rename(m.path("dir/a"), m.path("dir/z"))),
        libc::EROFS
    );
    assert_eq!(
        errno(fs::set_permissions(
            m.path("big"),
            fs::Permissions::from_mode(0o600)
        )),
        libc::EROFS
    );
    assert!(!m.scratch.exists());
    m.unmount();
}

fn cat_as_postgres(path: &Path) -> std::process::Output {
    Command::new("runuser")
        .args(["-u", "postgres", "--", "cat"])
        .arg(path)
        .output()
        .expect("runuser")
}

#[test]
fn allow_other_lets_another_user_read() {
    let m = Setup::default().mount(source());
    let out = cat_as_postgres(&m.path("big"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, pattern(5 * 1024 * 1024 + 123, 0));
    // Permissions are the kernel's to check: dir/a is 0600 root.
    assert!(!cat_as_postgres(&m.path("dir/a")).status.success());
    m.unmount();

    let m = Setup {
        allow_other: false,
        ..Setup::default()
    }
    .mount(source());
    let out = cat_as_postgres(&m.path("big"));
    assert!(
        !out.status.success(),
        "without allow_other only the mounting user gets in"
    );
    m.unmount();
}

#[test]
fn reported_owner_is_the_configured_one() {
    let m = Setup {
        uid: 101,
        gid: 104,
        ..Setup::default()
    }
    .mount(source());
    let meta = fs::metadata(m.path("dir/a")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (101, 104));
    fs::write(m.path("created"), b"x").unwrap();
    assert_eq!(fs::metadata(m.path("created")).unwrap().uid(), 101);
    m.unmount();
}

#[test]
fn wait_returns_after_an_outside_unmount() {
    let mut m = Setup::default().mount(source());
    let handle = m.handle.take().unwrap();
    let root = m.root.clone();
    // Set just before the unmount: wait() must not return without it, whenever it runs.
    let unmounting = Arc::new(AtomicBool::new(false));
    let seen = unmounting.clone();
    let waiter = std::thread::spawn(move || {
        let result = handle.wait();
        (result, seen.load(Ordering::SeqCst))
    });
    // The mount keeps serving while waited on.
    assert_eq!(fs::read(root.join("dir/a")).unwrap(), b"source a");
    unmounting.store(true, Ordering::SeqCst);
    let status = Command::new("umount").arg(&root).status().unwrap();
    assert!(status.success());
    let (result, after_unmount) = waiter.join().unwrap();
    result.unwrap();
    assert!(after_unmount, "wait returned before the unmount");
    assert!(!is_mounted(&root));

    // And through an Unmounter from another thread.
    let mut m = Setup::default().mount(source());
    let handle = m.handle.take().unwrap();
    let unmounter = handle.unmounter();
    let waiter = std::thread::spawn(move || handle.wait());
    unmounter.unmount().unwrap();
    waiter.join().unwrap().unwrap();
    assert!(!is_mounted(&m.root));
}

#[test]
fn busy_unmount_detaches_lazily() {
    let mut m = Setup::default().mount(source());
    let mut open = File::open(m.path("dir/a")).unwrap();
    let err = m.handle.take().unwrap().unmount().unwrap_err();
    assert_eq!(err.errno, libc::EBUSY);
    assert!(!is_mounted(&m.root), "detached from the tree at once");
    let mut s = String::new();
    open.read_to_string(&mut s).unwrap();
    assert_eq!(s, "source a", "open files are still served");
}

#[test]
fn dropping_the_handle_unmounts() {
    let m = Setup::default().mount(source());
    let root = m.root.clone();
    drop(m);
    assert!(!is_mounted(&root));
}

#[test]
fn errors_are_reported_not_swallowed() {
    let m = Setup::default().mount(source());
    assert_eq!(errno(fs::read(m.path("missing"))), libc::ENOENT);
    assert_eq!(errno(fs::read_dir(m.path("big"))), libc::ENOTDIR);
    assert_eq!(
        fs::read(m.path("dir")).unwrap_err().kind(),
        ErrorKind::IsADirectory
    );
    m.unmount();
}

/// Serves a [`MemSource`] but panics or fails when one node is read.
struct Faulty {
    inner: std::sync::Arc<MemSource>,
    node: pgsnapfs_fuse::NodeId,
    panic: bool,
}

impl Source for Faulty {
    fn lookup(
        &self,
        parent: u64,
        name: &std::ffi::OsStr,
    ) -> Result<Option<u64>, pgsnapfs_fuse::Error> {
        self.inner.lookup(parent, name)
    }
    fn getattr(&self, node: u64) -> Result<pgsnapfs_fuse::Attr, pgsnapfs_fuse::Error> {
        self.inner.getattr(node)
    }
    fn readdir(&self, node: u64) -> Result<Vec<pgsnapfs_fuse::DirEntry>, pgsnapfs_fuse::Error> {
        self.inner.readdir(node)
    }
    fn readlink(&self, node: u64) -> Result<std::path::PathBuf, pgsnapfs_fuse::Error> {
        self.inner.readlink(node)
    }
    fn read(&self, node: u64, offset: u64, size: u32) -> Result<Vec<u8>, pgsnapfs_fuse::Error> {
        match node == self.node {
            true if self.panic => panic!("injected panic reading node {node}"),
            true => Err(pgsnapfs_fuse::Error::new(
                libc::EBADMSG,
                "injected corruption",
            )),
            false => self.inner.read(node, offset, size),
        }
    }
}

#[test]
fn source_failures_reach_the_reader_and_the_mount_survives() {
    for panic in [true, false] {
        let mut src = source();
        let node = src.add_file("bad", b"unreadable".to_vec(), 0o644);
        let src = std::sync::Arc::new(src);
        let served = std::sync::Arc::new(Faulty {
            inner: src.clone(),
            node,
            panic,
        });
        let m = Setup::default().mount_serving(src, served);
        let want = if panic { libc::EIO } else { libc::EBADMSG };
        assert_eq!(errno(fs::read(m.path("bad"))), want);
        // A write that needs the failing bytes fails too, and stores nothing.
        let f = OpenOptions::new().write(true).open(m.path("bad")).unwrap();
        assert_eq!(errno(f.write_all_at(b"x", 1)), want);
        drop(f);
        assert_eq!(
            fs::read(m.path("dir/a")).unwrap(),
            b"source a",
            "other requests still work"
        );
        m.unmount();
    }
}

/// A durable layer, through the kernel: what was written, fsynced and renamed is there at the
/// next mount of the same source on the same directory, and the journal is all that is left
/// of files dropped.
#[test]
fn a_durable_mount_keeps_its_changes_across_unmount() {
    let state = tempfile::tempdir().unwrap();
    let setup = || Setup {
        durable: Some(state.path().join("cow")),
        writeback_cache: true,
        ..Setup::default()
    };
    let m = setup().mount(source());
    let dir = m.path("dir");
    std::fs::write(dir.join("a"), b"changed a").unwrap();
    let mut f = File::create(dir.join("new.tmp")).unwrap();
    f.write_all(&pattern(3 * BLOCK + 5, 9)).unwrap();
    f.sync_all().unwrap();
    drop(f);
    std::fs::rename(dir.join("new.tmp"), dir.join("new")).unwrap();
    File::open(&dir).unwrap().sync_all().unwrap();
    std::fs::write(m.path("gone"), b"x").unwrap();
    std::fs::remove_file(m.path("gone")).unwrap();
    std::fs::remove_file(dir.join("b")).unwrap();
    m.unmount();

    let m = setup().mount(source());
    let dir = m.path("dir");
    assert_eq!(std::fs::read(dir.join("a")).unwrap(), b"changed a");
    assert_eq!(
        std::fs::read(dir.join("new")).unwrap(),
        pattern(3 * BLOCK + 5, 9)
    );
    assert!(!m.path("gone").exists() && !dir.join("b").exists());
    assert_source_intact(&m);
    m.unmount();
}
