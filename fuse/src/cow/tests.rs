//! The copy-on-write semantics, driven directly against a [`MemSource`], without a kernel.

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::source::{NodeId, ROOT};
use crate::MemSource;

const BS: u32 = 8192;
const BSU: usize = BS as usize;

/// Bytes that differ at every offset, so a misplaced block shows.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ seed).collect()
}

struct Fixture {
    overlay: Overlay,
    source: Arc<MemSource>,
    scratch: tempfile::TempDir,
}

/// A source with `big` (3 blocks + 100 bytes), `dir/a`, `dir/b`, `dir/sub/c` and `link`.
fn fixture() -> Fixture {
    let mut src = MemSource::new(0o700);
    src.add_file("big", pattern(3 * BSU + 100, 0), 0o600);
    src.add_file("dir/a", b"source a".to_vec(), 0o600);
    src.add_file("dir/b", b"source b".to_vec(), 0o600);
    src.add_file("dir/sub/c", b"source c".to_vec(), 0o600);
    src.add_symlink("link", "dir/a");
    with_source(src, true)
}

fn with_source(src: MemSource, writable: bool) -> Fixture {
    let source = Arc::new(src);
    let scratch = tempfile::tempdir().unwrap();
    let dir = writable.then(|| scratch.path().join("cow"));
    let overlay = Overlay::new(source.clone(), dir, BS).unwrap();
    Fixture {
        overlay,
        source,
        scratch,
    }
}

impl Fixture {
    /// Resolves a path as the kernel would, one lookup per component.
    fn ino(&self, path: &str) -> Ino {
        self.try_ino(path).unwrap()
    }

    fn try_ino(&self, path: &str) -> Result<Ino, Error> {
        Path::new(path)
            .iter()
            .try_fold(ROOT, |dir, name| Ok(self.overlay.lookup(dir, name)?.ino))
    }

    fn errno(&self, path: &str) -> i32 {
        self.try_ino(path).unwrap_err().errno
    }

    fn read_all(&self, path: &str) -> Vec<u8> {
        let ino = self.ino(path);
        self.overlay.read(ino, 0, u32::MAX).unwrap()
    }

    fn write(&self, path: &str, offset: u64, data: &[u8]) {
        self.overlay.write(self.ino(path), offset, data).unwrap();
    }

    fn names(&self, path: &str) -> Vec<String> {
        let ino = if path.is_empty() {
            ROOT
        } else {
            self.ino(path)
        };
        let mut names: Vec<String> = self
            .overlay
            .readdir(ino)
            .unwrap()
            .into_iter()
            .map(|e| e.name.to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn create(&self, dir: &str, name: &str, data: &[u8]) -> Ino {
        let parent = if dir.is_empty() { ROOT } else { self.ino(dir) };
        let st = self
            .overlay
            .create(parent, OsStr::new(name), 0o600, true, false)
            .unwrap();
        self.overlay.write(st.ino, 0, data).unwrap();
        st.ino
    }

    fn scratch_files(&self) -> Vec<std::fs::DirEntry> {
        match std::fs::read_dir(self.scratch.path().join("cow")) {
            Ok(dir) => dir.map(Result::unwrap).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// The source must read exactly as it was built: nothing ever writes it.
    fn assert_source_intact(&self) {
        let big = self
            .source
            .lookup(ROOT, OsStr::new("big"))
            .unwrap()
            .unwrap();
        assert_eq!(
            self.source.read(big, 0, u32::MAX).unwrap(),
            pattern(3 * BSU + 100, 0)
        );
        let dir = self
            .source
            .lookup(ROOT, OsStr::new("dir"))
            .unwrap()
            .unwrap();
        let a = self.source.lookup(dir, OsStr::new("a")).unwrap().unwrap();
        assert_eq!(self.source.read(a, 0, 100).unwrap(), b"source a");
        assert_eq!(self.source.readdir(dir).unwrap().len(), 3);
    }
}

#[test]
fn reads_pass_through_and_copy_nothing() {
    let f = fixture();
    assert_eq!(f.read_all("big"), pattern(3 * BSU + 100, 0));
    let big = f.ino("big");
    assert_eq!(
        f.overlay.read(big, 100, 50).unwrap(),
        pattern(3 * BSU + 100, 0)[100..150]
    );
    assert_eq!(
        f.overlay.read(big, 3 * BS as u64 + 90, 50).unwrap().len(),
        10,
        "short at end of file"
    );
    assert_eq!(f.read_all("dir/sub/c"), b"source c");
    assert_eq!(
        f.overlay.readlink(f.ino("link")).unwrap(),
        Path::new("dir/a")
    );
    // Opening for writing copies nothing either.
    f.overlay.open(big, true, false, false).unwrap();
    assert!(f.scratch_files().is_empty());
    assert_eq!(f.overlay.stored_blocks(big).unwrap(), 0);
}

#[test]
fn aligned_write_stores_one_block_without_reading_the_source() {
    let f = fixture();
    let big = f.ino("big");
    let reads = f.source.reads();
    f.write("big", BS as u64, &[7u8; BSU]);
    assert_eq!(
        f.source.reads(),
        reads,
        "a whole-block write needs no read-modify-write"
    );
    assert_eq!(f.overlay.stored_blocks(big).unwrap(), 1);

    let mut want = pattern(3 * BSU + 100, 0);
    want[BSU..2 * BSU].fill(7);
    assert_eq!(f.read_all("big"), want);
    assert_eq!(f.overlay.getattr(big).unwrap().size, want.len() as u64);
    f.assert_source_intact();
}

#[test]
fn unaligned_write_fills_partial_blocks_from_the_source() {
    let f = fixture();
    let big = f.ino("big");
    // Straddles blocks 0 and 1.
    f.write("big", BS as u64 - 10, &[9u8; 30]);
    assert_eq!(f.overlay.stored_blocks(big).unwrap(), 2);
    let mut want = pattern(3 * BSU + 100, 0);
    want[BSU - 10..BSU + 20].fill(9);
    assert_eq!(f.read_all("big"), want);

    // A second write into a stored block goes straight to the scratch file.
    let reads = f.source.reads();
    f.write("big", 5, b"hello");
    assert_eq!(f.source.reads(), reads);
    want[5..10].copy_from_slice(b"hello");
    assert_eq!(f.read_all("big"), want);

    // The last, partial block: a write past the end extends the file.
    f.write("big", 3 * BS as u64 + 90, &[1u8; 20]);
    want.truncate(3 * BSU + 90);
    want.extend_from_slice(&[1u8; 20]);
    assert_eq!(f.read_all("big"), want);
    assert_eq!(f.overlay.getattr(big).unwrap().size, 3 * BS as u64 + 110);
    assert_eq!(f.overlay.stored_blocks(big).unwrap(), 3);
    f.assert_source_intact();
}

#[test]
fn only_touched_blocks_take_scratch_space() {
    let mut src = MemSource::new(0o700);
    src.add_file("huge", pattern(256 * BSU, 3), 0o600);
    let f = with_source(src, true);
    f.write("huge", 100 * BS as u64 + 1, b"x");
    f.overlay.fsync(f.ino("huge"), false).unwrap();
    let files = f.scratch_files();
    assert_eq!(files.len(), 1);
    let meta = files[0].metadata().unwrap();
    assert!(
        meta.blocks() * 512 <= 2 * BS as u64,
        "{} bytes allocated for one block",
        meta.blocks() * 512
    );
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let dir_mode = std::fs::metadata(f.scratch.path().join("cow"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o777, 0o700);
}

#[test]
fn truncate_shrinks_then_grows_with_zeros() {
    let f = fixture();
    let big = f.ino("big");
    let cut = |size| {
        f.overlay
            .setattr(
                big,
                &SetAttr {
                    size: Some(size),
                    ..SetAttr::default()
                },
            )
            .unwrap()
    };
    f.write("big", 10, b"written");
    let st = cut(BS as u64 + 5);
    assert_eq!(st.size, BS as u64 + 5);
    let mut want = pattern(BSU + 5, 0);
    want[10..17].copy_from_slice(b"written");
    assert_eq!(f.read_all("big"), want);
    assert_eq!(
        f.overlay.read(big, BS as u64, 100).unwrap().len(),
        5,
        "reads past the new size are short"
    );

    // Shrink into the stored block 0, then grow: the cut bytes of both the stored block
    // and the source block come back as zeros.
    cut(12);
    cut(3 * BS as u64);
    let data = f.read_all("big");
    assert_eq!(data.len(), 3 * BSU);
    assert_eq!(&data[..10], &pattern(10, 0)[..]);
    assert_eq!(&data[10..12], b"wr");
    assert!(data[12..].iter().all(|&b| b == 0));
    f.assert_source_intact();
}

#[test]
fn grown_files_read_holes_as_zeros() {
    let f = fixture();
    let ino = f.create("", "sparse", b"head");
    f.overlay.write(ino, 10 * BS as u64, b"tail").unwrap();
    let data = f.read_all("sparse");
    assert_eq!(data.len(), 10 * BSU + 4);
    assert_eq!(&data[..4], b"head");
    assert!(data[4..10 * BSU].iter().all(|&b| b == 0));
    assert_eq!(&data[10 * BSU..], b"tail");
    assert_eq!(f.overlay.stored_blocks(ino).unwrap(), 2);

    // fallocate mode 0 grows; a smaller range leaves the size alone.
    f.overlay.allocate(ino, 0, 20 * BS as u64).unwrap();
    assert_eq!(f.overlay.getattr(ino).unwrap().size, 20 * BS as u64);
    f.overlay.allocate(ino, 0, 1).unwrap();
    assert_eq!(f.overlay.getattr(ino).unwrap().size, 20 * BS as u64);
    assert!(f
        .overlay
        .read(ino, 15 * BS as u64, 100)
        .unwrap()
        .iter()
        .all(|&b| b == 0));
}

#[test]
fn open_with_truncate_empties_a_source_file() {
    let f = fixture();
    let a = f.ino("dir/a");
    f.overlay.open(a, true, true, false).unwrap();
    assert_eq!(f.overlay.getattr(a).unwrap().size, 0);
    assert!(f.read_all("dir/a").is_empty());
    f.write("dir/a", 0, b"new");
    assert_eq!(f.read_all("dir/a"), b"new");
    f.assert_source_intact();
}

#[test]
fn create_exclusive_and_reopen() {
    let f = fixture();
    let dir = f.ino("dir");
    let e = f
        .overlay
        .create(dir, OsStr::new("a"), 0o600, true, false)
        .unwrap_err();
    assert_eq!(e.errno, libc::EEXIST, "a source file");
    f.create("dir", "new", b"data");
    let e = f
        .overlay
        .create(dir, OsStr::new("new"), 0o600, true, false)
        .unwrap_err();
    assert_eq!(e.errno, libc::EEXIST, "a created file");
    let st = f
        .overlay
        .create(dir, OsStr::new("new"), 0o600, false, false)
        .unwrap();
    assert_eq!(st.size, 4, "O_CREAT without O_EXCL opens the file");
    let st = f
        .overlay
        .create(dir, OsStr::new("new"), 0o600, false, true)
        .unwrap();
    assert_eq!(st.size, 0, "and O_TRUNC truncates it");
    assert_eq!(st.perm, 0o600);
    assert_eq!(st.kind, Kind::File);
}

#[test]
fn readdir_merges_creations_and_whiteouts() {
    let f = fixture();
    assert_eq!(f.names("dir"), ["a", "b", "sub"]);
    f.create("dir", "new", b"1");
    f.overlay.unlink(f.ino("dir"), OsStr::new("a")).unwrap();
    f.overlay
        .mkdir(f.ino("dir"), OsStr::new("made"), 0o700)
        .unwrap();
    assert_eq!(f.names("dir"), ["b", "made", "new", "sub"]);
    assert_eq!(f.errno("dir/a"), libc::ENOENT);

    // A name deleted from the source can be created again.
    f.create("dir", "a", b"second a");
    assert_eq!(f.names("dir"), ["a", "b", "made", "new", "sub"]);
    assert_eq!(f.read_all("dir/a"), b"second a");
    f.assert_source_intact();
}

#[test]
fn unlinked_open_file_lives_until_forgotten() {
    let f = fixture();
    let ino = f.create("", "tmp", b"still here");
    // The kernel holds a lookup for an open file: one from create, one from lookup.
    assert_eq!(f.ino("tmp"), ino);
    f.overlay.unlink(ROOT, OsStr::new("tmp")).unwrap();
    assert_eq!(f.errno("tmp"), libc::ENOENT);
    assert_eq!(f.overlay.read(ino, 0, 100).unwrap(), b"still here");
    f.overlay.write(ino, 0, b"STILL").unwrap();
    assert_eq!(f.overlay.read(ino, 0, 100).unwrap(), b"STILL here");
    assert_eq!(f.scratch_files().len(), 1);

    f.overlay.forget(ino, 2).unwrap();
    assert_eq!(f.overlay.getattr(ino).unwrap_err().errno, libc::ESTALE);
    assert!(
        f.scratch_files().is_empty(),
        "the scratch file goes with the inode"
    );
}

#[test]
fn unlink_of_a_source_file_keeps_it_readable_while_held() {
    let f = fixture();
    let big = f.ino("big");
    f.overlay.unlink(ROOT, OsStr::new("big")).unwrap();
    assert!(!f.names("").contains(&"big".to_string()));
    assert_eq!(f.overlay.read(big, 0, 10).unwrap(), pattern(10, 0));
    assert_eq!(f.overlay.getattr(big).unwrap().nlink, 0);
    f.overlay.forget(big, 1).unwrap();
    assert_eq!(f.errno("big"), libc::ENOENT);
    f.assert_source_intact();
}

#[test]
fn rename_over_an_existing_file() {
    let f = fixture();
    let dir = f.ino("dir");
    f.write("dir/a", 0, b"changed a");
    let a = f.ino("dir/a");
    f.overlay
        .rename(dir, OsStr::new("a"), dir, OsStr::new("b"), false)
        .unwrap();
    assert_eq!(f.names("dir"), ["b", "sub"]);
    assert_eq!(f.ino("dir/b"), a, "the inode moves with its name");
    assert_eq!(f.read_all("dir/b"), b"changed a");

    // Across directories, over a created file, and back over the whiteout.
    f.create("", "target", b"old");
    f.overlay
        .rename(dir, OsStr::new("b"), ROOT, OsStr::new("target"), false)
        .unwrap();
    assert_eq!(f.read_all("target"), b"changed a");
    f.overlay
        .rename(ROOT, OsStr::new("target"), dir, OsStr::new("a"), false)
        .unwrap();
    assert_eq!(f.names("dir"), ["a", "sub"]);
    assert_eq!(f.read_all("dir/a"), b"changed a");
    assert!(!f.names("").contains(&"target".to_string()));
    f.assert_source_intact();
}

#[test]
fn rename_checks_like_posix() {
    let f = fixture();
    let dir = f.ino("dir");
    let rename = |from: &str, to: &str, noreplace| {
        f.overlay
            .rename(dir, OsStr::new(from), dir, OsStr::new(to), noreplace)
            .map_err(|e| e.errno)
    };
    assert_eq!(rename("a", "b", true), Err(libc::EEXIST));
    assert_eq!(rename("a", "sub", false), Err(libc::EISDIR));
    assert_eq!(rename("sub", "a", false), Err(libc::ENOTDIR));
    assert_eq!(rename("missing", "x", false), Err(libc::ENOENT));
    f.overlay.mkdir(dir, OsStr::new("empty"), 0o700).unwrap();
    assert_eq!(rename("empty", "sub", false), Err(libc::ENOTEMPTY));
    assert_eq!(rename("sub", "empty", false), Ok(()));
    assert_eq!(f.names("dir"), ["a", "b", "empty"]);
    assert_eq!(rename("a", "a", false), Ok(()));
}

#[test]
fn renamed_source_directory_keeps_its_contents() {
    let f = fixture();
    f.overlay
        .rename(ROOT, OsStr::new("dir"), ROOT, OsStr::new("moved"), false)
        .unwrap();
    assert_eq!(f.errno("dir"), libc::ENOENT);
    assert_eq!(f.names("moved"), ["a", "b", "sub"]);
    assert_eq!(f.read_all("moved/sub/c"), b"source c");
    f.write("moved/sub/c", 0, b"S");
    assert_eq!(f.read_all("moved/sub/c"), b"Source c");
}

#[test]
fn mkdir_and_rmdir() {
    let f = fixture();
    let made = f.overlay.mkdir(ROOT, OsStr::new("made"), 0o750).unwrap();
    assert_eq!((made.kind, made.perm), (Kind::Dir, 0o750));
    assert_eq!(
        f.overlay
            .mkdir(ROOT, OsStr::new("made"), 0o700)
            .unwrap_err()
            .errno,
        libc::EEXIST
    );
    f.create("made", "f", b"");
    assert_eq!(
        f.overlay.rmdir(ROOT, OsStr::new("made")).unwrap_err().errno,
        libc::ENOTEMPTY
    );
    f.overlay.unlink(made.ino, OsStr::new("f")).unwrap();
    f.overlay.rmdir(ROOT, OsStr::new("made")).unwrap();
    assert_eq!(f.errno("made"), libc::ENOENT);

    // A source directory empties by whiteouts, then goes.
    let sub = f.ino("dir/sub");
    assert_eq!(
        f.overlay
            .rmdir(f.ino("dir"), OsStr::new("sub"))
            .unwrap_err()
            .errno,
        libc::ENOTEMPTY
    );
    f.overlay.unlink(sub, OsStr::new("c")).unwrap();
    assert_eq!(
        f.overlay.rmdir(ROOT, OsStr::new("big")).unwrap_err().errno,
        libc::ENOTDIR
    );
    assert_eq!(
        f.overlay
            .unlink(f.ino("dir"), OsStr::new("sub"))
            .unwrap_err()
            .errno,
        libc::EISDIR
    );
    f.overlay.rmdir(f.ino("dir"), OsStr::new("sub")).unwrap();
    assert_eq!(f.names("dir"), ["a", "b"]);
    f.assert_source_intact();
}

#[test]
fn hard_links_share_the_inode() {
    let f = fixture();
    let ino = f.create("", "wal", b"segment");
    let st = f
        .overlay
        .link(ino, f.ino("dir"), OsStr::new("wal2"))
        .unwrap();
    assert_eq!((st.ino, st.nlink), (ino, 2));
    assert_eq!(f.ino("dir/wal2"), ino);
    f.write("dir/wal2", 0, b"S");
    assert_eq!(f.read_all("wal"), b"Segment");
    // PostgreSQL links a new WAL segment into place, then unlinks the temporary name.
    f.overlay.unlink(ROOT, OsStr::new("wal")).unwrap();
    assert_eq!(f.read_all("dir/wal2"), b"Segment");
    assert_eq!(f.overlay.getattr(ino).unwrap().nlink, 1);

    // Links to source files, too; but not to directories, nor over a name.
    let a = f.ino("dir/a");
    f.overlay.link(a, ROOT, OsStr::new("a2")).unwrap();
    f.write("a2", 0, b"S");
    assert_eq!(f.read_all("dir/a"), b"Source a");
    assert_eq!(
        f.overlay
            .link(f.ino("dir/sub"), ROOT, OsStr::new("d"))
            .unwrap_err()
            .errno,
        libc::EPERM
    );
    assert_eq!(
        f.overlay
            .link(a, ROOT, OsStr::new("big"))
            .unwrap_err()
            .errno,
        libc::EEXIST
    );
    f.assert_source_intact();
}

#[test]
fn symlinks_and_attributes() {
    let f = fixture();
    let st = f
        .overlay
        .symlink(ROOT, OsStr::new("pg_wal"), Path::new("/scratch/wal"))
        .unwrap();
    assert_eq!(st.kind, Kind::Symlink);
    assert_eq!(st.size, "/scratch/wal".len() as u64);
    assert_eq!(
        f.overlay.readlink(f.ino("pg_wal")).unwrap(),
        Path::new("/scratch/wal")
    );
    assert_eq!(
        f.overlay.readlink(f.ino("big")).unwrap_err().errno,
        libc::EINVAL
    );

    let big = f.ino("big");
    let mtime = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
    let st = f
        .overlay
        .setattr(
            big,
            &SetAttr {
                mode: Some(0o100640),
                mtime: Some(mtime),
                size: None,
            },
        )
        .unwrap();
    assert_eq!((st.perm, st.mtime), (0o640, mtime));
    let dir = f
        .overlay
        .setattr(
            f.ino("dir"),
            &SetAttr {
                mode: Some(0o750),
                ..SetAttr::default()
            },
        )
        .unwrap();
    assert_eq!(dir.perm, 0o750);
    assert!(
        f.scratch_files().is_empty(),
        "attribute changes store no data"
    );
}

#[test]
fn forgotten_clean_inodes_leave_the_table() {
    let f = fixture();
    // One lookup per component, as the kernel makes them.
    let walk = || {
        let lookup = |dir, name| f.overlay.lookup(dir, OsStr::new(name)).unwrap().ino;
        let dir = lookup(ROOT, "dir");
        let sub = lookup(dir, "sub");
        [lookup(sub, "c"), sub, dir]
    };
    let forget = |inos: [Ino; 3]| {
        inos.iter()
            .for_each(|&ino| f.overlay.forget(ino, 1).unwrap())
    };
    let inos = walk();
    assert_eq!(f.overlay.inodes(), 3);
    forget(inos);
    assert_eq!(f.overlay.inodes(), 0);

    // A changed inode stays, and is found again under its source name.
    let inos = walk();
    f.overlay.write(inos[0], 0, b"S").unwrap();
    forget(inos);
    assert_eq!(f.overlay.inodes(), 1);
    assert_eq!(walk(), inos);
    assert_eq!(f.overlay.read(inos[0], 0, 100).unwrap(), b"Source c");
}

#[test]
fn read_only_refuses_every_change() {
    let mut src = MemSource::new(0o700);
    src.add_file("f", b"data".to_vec(), 0o600);
    let f = with_source(src, false);
    let ino = f.ino("f");
    assert_eq!(f.read_all("f"), b"data");
    let erofs = |r: Result<(), Error>| assert_eq!(r.unwrap_err().errno, libc::EROFS);
    erofs(f.overlay.write(ino, 0, b"x"));
    erofs(f.overlay.open(ino, true, false, false).map(drop));
    erofs(
        f.overlay
            .create(ROOT, OsStr::new("n"), 0o600, true, false)
            .map(drop),
    );
    erofs(f.overlay.mkdir(ROOT, OsStr::new("d"), 0o700).map(drop));
    erofs(
        f.overlay
            .symlink(ROOT, OsStr::new("s"), Path::new("f"))
            .map(drop),
    );
    erofs(f.overlay.link(ino, ROOT, OsStr::new("l")).map(drop));
    erofs(f.overlay.unlink(ROOT, OsStr::new("f")));
    erofs(
        f.overlay
            .rename(ROOT, OsStr::new("f"), ROOT, OsStr::new("g"), false),
    );
    erofs(
        f.overlay
            .setattr(
                ino,
                &SetAttr {
                    mode: Some(0o644),
                    ..SetAttr::default()
                },
            )
            .map(drop),
    );
    erofs(f.overlay.allocate(ino, 0, 10));
    f.overlay.open(ino, false, false, false).unwrap();
    assert!(!f.scratch.path().join("cow").exists());
}

/// Fails every read of the source.
struct Unreadable(MemSource);

impl Source for Unreadable {
    fn lookup(&self, parent: NodeId, name: &OsStr) -> Result<Option<NodeId>, Error> {
        self.0.lookup(parent, name)
    }
    fn getattr(&self, node: NodeId) -> Result<crate::Attr, Error> {
        self.0.getattr(node)
    }
    fn readdir(&self, node: NodeId) -> Result<Vec<crate::DirEntry>, Error> {
        self.0.readdir(node)
    }
    fn readlink(&self, node: NodeId) -> Result<std::path::PathBuf, Error> {
        self.0.readlink(node)
    }
    fn read(&self, _node: NodeId, _offset: u64, _size: u32) -> Result<Vec<u8>, Error> {
        Err(Error::new(libc::EBADMSG, "injected corruption"))
    }
}

#[test]
fn source_errors_keep_their_errno_and_store_nothing() {
    let mut src = MemSource::new(0o700);
    src.add_file("f", pattern(2 * BSU, 0), 0o600);
    let scratch = tempfile::tempdir().unwrap();
    let overlay = Overlay::new(Arc::new(Unreadable(src)), Some(scratch.path().into()), BS).unwrap();
    let ino = overlay.lookup(ROOT, OsStr::new("f")).unwrap().ino;
    assert_eq!(overlay.read(ino, 0, 10).unwrap_err().errno, libc::EBADMSG);
    assert_eq!(
        overlay.write(ino, 1, b"x").unwrap_err().errno,
        libc::EBADMSG
    );
    assert_eq!(
        overlay.stored_blocks(ino).unwrap(),
        0,
        "a failed fill marks nothing"
    );
    assert_eq!(
        overlay.read(ino, 0, 10).unwrap_err().errno,
        libc::EBADMSG,
        "no zeros appear"
    );
    // A whole-block write needs no source bytes, so it succeeds.
    overlay.write(ino, BS as u64, &[5; BSU]).unwrap();
    assert_eq!(overlay.read(ino, BS as u64, BS).unwrap(), vec![5; BSU]);
}

/// A source whose directory `live` changes by itself, and says so.
struct Changing(MemSource, NodeId);

impl Source for Changing {
    fn lookup(&self, parent: NodeId, name: &OsStr) -> Result<Option<NodeId>, Error> {
        self.0.lookup(parent, name)
    }
    fn getattr(&self, node: NodeId) -> Result<crate::Attr, Error> {
        self.0.getattr(node)
    }
    fn readdir(&self, node: NodeId) -> Result<Vec<crate::DirEntry>, Error> {
        self.0.readdir(node)
    }
    fn readlink(&self, node: NodeId) -> Result<std::path::PathBuf, Error> {
        self.0.readlink(node)
    }
    fn read(&self, node: NodeId, offset: u64, size: u32) -> Result<Vec<u8>, Error> {
        self.0.read(node, offset, size)
    }
    fn entry_ttl(&self, dir: NodeId) -> Option<std::time::Duration> {
        (dir == self.1).then_some(std::time::Duration::from_secs(2))
    }
}

#[test]
fn names_in_a_changing_source_directory_expire() {
    let mut src = MemSource::new(0o700);
    let live = src.add_dir("live", 0o700);
    src.add_dir("still", 0o700);
    let scratch = tempfile::tempdir().unwrap();
    let overlay = Overlay::new(
        Arc::new(Changing(src, live)),
        Some(scratch.path().into()),
        BS,
    )
    .unwrap();
    let still = overlay.lookup(ROOT, OsStr::new("still")).unwrap().ino;
    assert_eq!(
        overlay.entry_ttl(live),
        Some(std::time::Duration::from_secs(2))
    );
    assert_eq!(overlay.entry_ttl(ROOT), None);
    // A directory made through the mount changes only through it.
    let made = overlay.mkdir(still, OsStr::new("made"), 0o700).unwrap().ino;
    assert_eq!(overlay.entry_ttl(made), None);
}

/// A source with `big` and `cut` (3 blocks + 100 bytes each), and complete local copies of
/// both in a directory of their own (on the scratch directory's file system).
fn with_copies() -> (Fixture, tempfile::TempDir) {
    let copies = tempfile::tempdir().unwrap();
    let mut src = MemSource::new(0o700);
    for name in ["big", "cut"] {
        let node = src.add_file(name, pattern(3 * BSU + 100, 0), 0o600);
        let path = copies.path().join(name);
        std::fs::write(&path, pattern(3 * BSU + 100, 0)).unwrap();
        src.set_local(node, path);
    }
    (with_source(src, true), copies)
}

#[test]
fn a_local_copy_absorbs_the_blocks_written_before_it() {
    let (f, copies) = with_copies();
    let mut want = pattern(3 * BSU + 100, 0);
    f.write("big", BS as u64 + 10, b"xyz");
    want[BSU + 10..BSU + 13].copy_from_slice(b"xyz");
    f.write("big", 5 * BS as u64, b"tail");
    want.resize(5 * BSU, 0);
    want.extend_from_slice(b"tail");
    let ino = f.ino("big");
    let local = f
        .overlay
        .open(ino, true, false, true)
        .unwrap()
        .expect("adopted");
    let mut through_fd = vec![0; want.len() + 10];
    let n = std::os::unix::fs::FileExt::read_at(&local, &mut through_fd, 0).unwrap();
    assert_eq!(&through_fd[..n], &want[..]);
    assert_eq!(f.read_all("big"), want);
    assert_eq!(f.overlay.getattr(ino).unwrap().size, want.len() as u64);
    assert!(!copies.path().join("big").exists(), "moved, not copied");
    // Writes after adoption land in the copy, which is the file.
    f.write("big", 0, b"head");
    want[..4].copy_from_slice(b"head");
    assert_eq!(f.read_all("big"), want);

    // Cut below its source length and grown again: the copy would show old bytes there.
    let cut = f.ino("cut");
    for size in [10, 3 * BS as u64] {
        let change = SetAttr {
            size: Some(size),
            ..SetAttr::default()
        };
        f.overlay.setattr(cut, &change).unwrap();
    }
    assert!(f.overlay.open(cut, false, false, true).unwrap().is_none());
    let mut cut_want = pattern(10, 0);
    cut_want.resize(3 * BSU, 0);
    assert_eq!(f.read_all("cut"), cut_want);
}

#[test]
fn an_untouched_file_adopts_its_copy_and_a_read_only_layer_only_opens_it() {
    let (f, copies) = with_copies();
    let ino = f.ino("big");
    assert!(f.overlay.open(ino, false, false, false).unwrap().is_none());
    let local = f
        .overlay
        .open(ino, false, false, true)
        .unwrap()
        .expect("adopted");
    assert_eq!(local.metadata().unwrap().len(), 3 * BS as u64 + 100);
    assert!(!copies.path().join("big").exists());
    assert_eq!(f.read_all("big"), pattern(3 * BSU + 100, 0));

    let mut src = MemSource::new(0o700);
    let node = src.add_file("f", b"data".to_vec(), 0o600);
    let copy = copies.path().join("f");
    std::fs::write(&copy, b"data").unwrap();
    src.set_local(node, &copy);
    let ro = with_source(src, false);
    let ino = ro.ino("f");
    assert!(ro.overlay.open(ino, false, false, true).unwrap().is_some());
    assert!(copy.exists(), "a read-only layer must not take the copy");
}

#[test]
fn file_changes_name_the_written_blocks_of_the_same_source_file() {
    let f = fixture();
    let change = |path: &str| f.overlay.file_change(Path::new(path)).unwrap();
    assert_eq!(change("big"), FileChange::Unchanged);
    // Looked up and read only: still unchanged.
    f.read_all("dir/a");
    assert_eq!(change("dir/a"), FileChange::Unchanged);

    f.write("big", 2 * BS as u64 + 3, b"x");
    f.write("big", 0, &pattern(BSU, 7));
    let blocks = FileChange::Blocks {
        written: vec![0, 2],
        source_len: 3 * BS as u64 + 100,
    };
    assert_eq!(change("big"), blocks);
    // Cut into block 1: the source shows through only up to the cut.
    f.overlay
        .setattr(
            f.ino("big"),
            &SetAttr {
                size: Some(BS as u64 + 1),
                ..SetAttr::default()
            },
        )
        .unwrap();
    assert_eq!(
        change("big"),
        FileChange::Blocks {
            written: vec![0],
            source_len: BS as u64 + 1,
        }
    );

    // A file renamed over another is another file there, even unwritten; created files and
    // names that are gone are told apart.
    let dir = f.ino("dir");
    f.overlay
        .rename(dir, OsStr::new("a"), dir, OsStr::new("b"), false)
        .unwrap();
    assert_eq!(change("dir/b"), FileChange::Replaced);
    assert_eq!(change("dir/a"), FileChange::Missing);
    f.create("dir", "new", b"created");
    assert_eq!(change("dir/new"), FileChange::Replaced);
    assert_eq!(change("dir/sub/c"), FileChange::Unchanged);
}

// The durable layer: state kept in its directory, rebuilt at the next open.

/// The fixture's tree, built in another order, so its node ids differ from `fixture()`'s:
/// the journal must name source nodes by path.
fn reordered_source() -> Arc<MemSource> {
    let mut src = MemSource::new(0o700);
    src.add_symlink("link", "dir/a");
    src.add_file("dir/sub/c", b"source c".to_vec(), 0o600);
    src.add_file("dir/b", b"source b".to_vec(), 0o600);
    src.add_file("dir/a", b"source a".to_vec(), 0o600);
    src.add_file("big", pattern(3 * BSU + 100, 0), 0o600);
    Arc::new(src)
}

fn durable_fixture() -> Fixture {
    let f = fixture();
    let overlay = Overlay::durable(f.source.clone(), f.scratch.path().join("cow"), BS).unwrap();
    Fixture { overlay, ..f }
}

impl Fixture {
    /// The layer opened again on its directory over the reordered source, after `close`
    /// (a clean unmount) or without it (a crash of the process: what was written to the
    /// journal file is there, synced or not).
    fn reopen(self, clean: bool) -> Fixture {
        if clean {
            self.overlay.close().unwrap();
        }
        drop(self.overlay);
        let source = reordered_source();
        let overlay =
            Overlay::durable(source.clone(), self.scratch.path().join("cow"), BS).unwrap();
        Fixture {
            overlay,
            source,
            scratch: self.scratch,
        }
    }

    fn journal(&self) -> std::path::PathBuf {
        self.scratch.path().join("cow").join(journal::JOURNAL)
    }
}

/// Every kind of change, synced, then read back after a clean close or a crash.
#[test]
fn durable_changes_survive_close_and_crash() {
    for clean in [true, false] {
        let f = durable_fixture();
        let dir = f.ino("dir");
        f.write("big", BS as u64 + 10, b"XYZ");
        f.overlay
            .setattr(
                f.ino("big"),
                &SetAttr {
                    size: Some(2 * BS as u64 + 5),
                    ..SetAttr::default()
                },
            )
            .unwrap();
        f.create("dir", "new", b"created");
        f.overlay
            .rename(dir, OsStr::new("a"), ROOT, OsStr::new("moved"), false)
            .unwrap();
        f.overlay.unlink(dir, OsStr::new("b")).unwrap();
        let sub = f
            .overlay
            .mkdir(ROOT, OsStr::new("made"), 0o750)
            .unwrap()
            .ino;
        f.overlay
            .symlink(sub, OsStr::new("ln"), Path::new("../moved"))
            .unwrap();
        f.overlay
            .link(f.ino("dir/new"), sub, OsStr::new("hard"))
            .unwrap();
        f.overlay
            .setattr(
                f.ino("dir/sub/c"),
                &SetAttr {
                    mode: Some(0o640),
                    ..SetAttr::default()
                },
            )
            .unwrap();
        f.overlay.rmdir(ROOT, OsStr::new("made")).unwrap_err();
        f.overlay.fsync(f.ino("big"), false).unwrap();
        f.overlay.fsync(f.ino("dir/new"), true).unwrap();
        let expected_big = {
            let mut b = pattern(3 * BSU + 100, 0);
            b[BSU + 10..BSU + 13].copy_from_slice(b"XYZ");
            b.truncate(2 * BSU + 5);
            b
        };
        let f = f.reopen(clean);
        assert_eq!(f.read_all("big"), expected_big, "clean: {clean}");
        assert_eq!(f.overlay.stored_blocks(f.ino("big")).unwrap(), 1);
        assert_eq!(f.names(""), ["big", "dir", "link", "made", "moved"]);
        assert_eq!(f.names("dir"), ["new", "sub"]);
        assert_eq!(f.read_all("moved"), b"source a");
        assert_eq!(f.read_all("made/hard"), b"created");
        assert_eq!(f.ino("made/hard"), f.ino("dir/new"));
        assert_eq!(f.overlay.getattr(f.ino("dir/new")).unwrap().nlink, 2);
        assert_eq!(
            f.overlay.readlink(f.ino("made/ln")).unwrap(),
            Path::new("../moved")
        );
        assert_eq!(f.overlay.getattr(f.ino("made")).unwrap().perm, 0o750);
        assert_eq!(f.overlay.getattr(f.ino("dir/sub/c")).unwrap().perm, 0o640);
        // It goes on working, and a file made now gets a fresh inode and data file.
        let again = f.create("made", "later", b"later");
        assert!(again > f.ino("dir/new"));
        assert_eq!(f.read_all("made/later"), b"later");
        assert_eq!(f.read_all("made/hard"), b"created");
        f.assert_source_intact();
    }
}

/// After a crash, blocks written and never synced read as before; a block of such bytes
/// written again in part shows none of them; what the data file holds past the journaled
/// size is cut.
#[test]
fn unsynced_writes_leave_no_trace_after_a_crash() {
    let f = durable_fixture();
    f.write("big", 0, &pattern(BSU, 7));
    f.overlay.fsync(f.ino("big"), true).unwrap();
    f.write("big", BS as u64, &pattern(BSU, 9)); // never synced
    let tmp = f.create("", "tmp", &pattern(3 * BSU, 3));
    f.overlay.fsync(tmp, false).unwrap();
    f.overlay
        .setattr(
            tmp,
            &SetAttr {
                size: Some(BS as u64 + 1),
                ..SetAttr::default()
            },
        )
        .unwrap();
    f.overlay.fsync(tmp, false).unwrap();
    // Grown again and written far out, unsynced: the data file holds bytes past the size.
    f.overlay.write(tmp, 2 * BS as u64, b"late").unwrap();
    f.create("", "never synced", b"lost");
    let f = f.reopen(false);
    assert_eq!(
        f.read_all("never synced"),
        b"",
        "made, but its data never synced"
    );
    let big = f.read_all("big");
    assert_eq!(&big[..BSU], &pattern(BSU, 7)[..]);
    assert_eq!(&big[BSU..2 * BSU], &pattern(3 * BSU + 100, 0)[BSU..2 * BSU]);
    let mut expected_tmp = pattern(3 * BSU, 3);
    expected_tmp.truncate(BSU + 1);
    assert_eq!(f.read_all("tmp"), expected_tmp);
    // A short write into the block past the end: zeros around it, not the stale bytes.
    let tmp = f.ino("tmp");
    f.overlay.write(tmp, 2 * BS as u64 + 100, b"new").unwrap();
    let read = f.read_all("tmp");
    assert_eq!(read.len(), 2 * BSU + 103);
    assert!(read[BSU + 1..2 * BSU + 100].iter().all(|&b| b == 0));
    assert_eq!(&read[2 * BSU + 100..], b"new");
}

/// A change whose frame was cut short by a crash of the machine is not applied, and the
/// journal goes on after it; so is one whose bytes are garbage.
#[test]
fn a_torn_journal_tail_is_ignored() {
    let f = durable_fixture();
    let kept = f.create("", "kept", b"kept");
    f.overlay.fsync(kept, true).unwrap();
    let whole = std::fs::metadata(f.journal()).unwrap().len();
    let dir = f.ino("dir");
    f.overlay
        .rename(dir, OsStr::new("a"), ROOT, OsStr::new("moved"), false)
        .unwrap();
    let torn = std::fs::metadata(f.journal()).unwrap().len();
    assert!(torn > whole + 8);
    drop(f.overlay);
    for cut in [whole + 3, torn - 1] {
        let copy = tempfile::tempdir().unwrap();
        let dir = copy.path().join("cow");
        std::fs::create_dir(&dir).unwrap();
        for e in std::fs::read_dir(f.scratch.path().join("cow")).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
        }
        let journal = dir.join(journal::JOURNAL);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&journal)
            .unwrap()
            .set_len(cut)
            .unwrap();
        let g = Fixture {
            overlay: Overlay::durable(reordered_source(), dir, BS).unwrap(),
            source: reordered_source(),
            scratch: copy,
        };
        assert_eq!(g.names(""), ["big", "dir", "kept", "link"], "cut at {cut}");
        assert_eq!(g.names("dir"), ["a", "b", "sub"]);
        assert_eq!(g.read_all("kept"), b"kept");
        // Garbage where the tail was: ignored too, and the journal is whole again.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&journal)
            .unwrap()
            .write_all(&[0xff; 20])
            .unwrap();
        let g = g.reopen(false);
        assert_eq!(g.names(""), ["big", "dir", "kept", "link"]);
        g.overlay
            .rename(g.ino("dir"), OsStr::new("b"), ROOT, OsStr::new("b2"), false)
            .unwrap();
        let g = g.reopen(false);
        assert_eq!(g.names(""), ["b2", "big", "dir", "kept", "link"]);
    }
}

/// A dropped file's data file goes once its removal is journaled and synced (or at the next
/// open, had the process died first); the block size must not change.
#[test]
fn durable_housekeeping() {
    let f = durable_fixture();
    let tmp = f.create("", "tmp", b"gone soon");
    f.overlay.fsync(tmp, false).unwrap();
    let kept = f.create("", "kept", b"kept");
    f.overlay.fsync(kept, false).unwrap();
    let len = std::fs::metadata(f.journal()).unwrap().len();
    f.overlay.fsync(kept, false).unwrap();
    let again = std::fs::metadata(f.journal()).unwrap().len();
    assert_eq!(again, len, "an unchanged file's fsync journals nothing");
    f.overlay.unlink(ROOT, OsStr::new("tmp")).unwrap();
    f.overlay.forget(tmp, 1).unwrap();
    assert_eq!(
        f.scratch_files().len(),
        3,
        "removal not synced: data file kept"
    );
    f.overlay.unlink(ROOT, OsStr::new("kept")).unwrap();
    assert_eq!(f.scratch_files().len(), 3, "a held file keeps its data");
    f.overlay.fsync_dir().unwrap();
    assert_eq!(
        f.scratch_files().len(),
        2,
        "journal, and the data of the held file"
    );
    assert_eq!(f.overlay.read(kept, 0, 10).unwrap(), b"kept");
    let f = f.reopen(false);
    assert_eq!(f.scratch_files().len(), 1, "the journal alone");
    drop(f.overlay);
    let Err(err) = Overlay::durable(reordered_source(), f.scratch.path().join("cow"), 4096) else {
        panic!("opened with another block size");
    };
    assert_eq!(err.errno, libc::EUCLEAN, "{err}");
}

/// Hydration fills every block a file lacks, keeps the blocks written before, and is
/// journaled: after a crash the filled file reads the same from the layer alone, a write
/// made after it is kept, and a second pass copies nothing.
#[test]
fn filled_files_survive_a_crash_and_are_not_filled_again() {
    let f = durable_fixture();
    f.write("big", BS as u64 + 10, b"XYZ");
    let filler = crate::Filler {
        overlay: Arc::new(f.overlay),
    };
    let mut steps = 0;
    let filled = filler
        .fill(Path::new("big"), &mut |_| {
            steps += 1;
            true
        })
        .unwrap();
    assert!(filled.complete);
    // The written block is not copied over: 3 of the 4 blocks, the last one short.
    assert_eq!(filled.copied, 2 * BS as u64 + 100);
    assert!(steps >= 1);
    let f = Fixture {
        overlay: Arc::into_inner(filler.overlay).unwrap(),
        ..f
    };
    let mut expected = pattern(3 * BSU + 100, 0);
    expected[BSU + 10..BSU + 13].copy_from_slice(b"XYZ");
    // A crash (no close): what was filled was synced with its journal record.
    let f = f.reopen(false);
    assert_eq!(f.overlay.stored_blocks(f.ino("big")).unwrap(), 4);
    assert_eq!(f.read_all("big"), expected);
    let data: Vec<_> = f
        .scratch_files()
        .into_iter()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".blocks"))
        .collect();
    assert_eq!(data.len(), 1);
    // The data file is the file, byte for byte.
    assert_eq!(std::fs::read(data[0].path()).unwrap(), expected);
    f.write("big", 0, b"after");
    f.overlay.fsync(f.ino("big"), true).unwrap();
    expected[..5].copy_from_slice(b"after");
    let filler = crate::Filler {
        overlay: Arc::new(f.overlay),
    };
    let again = filler.fill(Path::new("big"), &mut |_| true).unwrap();
    assert_eq!((again.copied, again.complete), (0, true));
    let none = filler.fill(Path::new("dir"), &mut |_| true).unwrap();
    assert_eq!((none.copied, none.complete), (0, true));
    let f = Fixture {
        overlay: Arc::into_inner(filler.overlay).unwrap(),
        ..f
    };
    assert_eq!(f.reopen(false).read_all("big"), expected);
}
