//! The `fuser::Filesystem` glue: decodes each request, calls the [`Overlay`] and encodes
//! the reply; no file-system logic lives here. Each request runs under `catch_unwind`, so
//! a bug answers EIO instead of killing a session thread. Missing features answer a real
//! errno (ENODATA, EOPNOTSUPP), never ENOSYS, which the kernel would remember.
//!
//! Passthrough: a file with a complete local copy is opened with FUSE passthrough, and
//! the kernel reads and writes that copy itself. The kernel refuses to mix passthrough
//! and cached opens of one inode, so opens are counted per inode: while cached opens are
//! live, new ones are cached too; while passthrough opens are live, new ones share their
//! backing id, released with the last of them. Where the kernel or our privileges refuse
//! passthrough, files are served here as usual, and the log says so once.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, BackingId, BsdFileFlags, Errno, FileAttr, FileHandle, FileType, Filesystem,
    FopenFlags, Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenAccMode, OpenFlags,
    RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::cow::{Entry, Overlay, SetAttr, Stat};
use crate::source::Kind;
use crate::Error;

/// How long the kernel may cache attributes and names. Long, because every change goes
/// through this file system, and the kernel updates or drops its cache on each one; a
/// source directory that changes by itself says so (`Source::entry_ttl`).
const TTL: Duration = Duration::from_secs(3600);

/// Inode numbers are never reused, so one generation does.
const GENERATION: Generation = Generation(0);

/// Open files need no per-handle state: everything is keyed by inode. The handle only
/// says how the file was opened, for release.
const NO_HANDLE: FileHandle = FileHandle(0);
const PASSTHROUGH_HANDLE: FileHandle = FileHandle(1);

/// Kernel cache of file pages is kept across opens: content changes only through us.
/// Not for passthrough opens, whose pages are the local copy's (the kernel refuses it).
const OPEN_FLAGS: FopenFlags = FopenFlags::FOPEN_KEEP_CACHE;

pub(crate) struct Fs {
    overlay: Arc<Overlay>,
    uid: u32,
    gid: u32,
    block_size: u32,
    writeback_cache: bool,
    /// Passthrough is wanted and not (yet) refused by the kernel.
    passthrough: AtomicBool,
    /// Open files, per inode.
    opens: Mutex<HashMap<u64, Opens>>,
    /// Listings taken at opendir, so offsets stay valid while the directory changes.
    dirs: Mutex<HashMap<u64, Arc<[Entry]>>>,
    next_dir: AtomicU64,
}

/// The live opens of one inode: cached ones, or passthrough ones sharing a backing id.
#[derive(Default)]
struct Opens {
    cached: u32,
    passthrough: Option<(BackingId, u32)>,
    /// Written through passthrough before (writable mounts): the kernel's cached pages of
    /// it may be stale.
    passed_through: bool,
}

impl Opens {
    /// Nothing to remember.
    fn unused(&self) -> bool {
        self.cached == 0 && self.passthrough.is_none() && !self.passed_through
    }
}

impl Fs {
    pub(crate) fn new(
        overlay: Arc<Overlay>,
        uid: u32,
        gid: u32,
        block_size: u32,
        writeback_cache: bool,
        passthrough: bool,
    ) -> Self {
        Self {
            overlay,
            uid,
            gid,
            block_size,
            // The kernel turns passthrough off when it caches writes.
            writeback_cache: writeback_cache && !passthrough,
            passthrough: AtomicBool::new(passthrough),
            opens: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            next_dir: AtomicU64::new(1),
        }
    }

    fn attr(&self, st: &Stat) -> FileAttr {
        FileAttr {
            ino: INodeNo(st.ino),
            size: st.size,
            blocks: st.size.div_ceil(512),
            atime: st.mtime,
            mtime: st.mtime,
            ctime: st.mtime,
            crtime: st.mtime,
            kind: file_type(st.kind),
            perm: st.perm,
            nlink: st.nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: self.block_size,
            flags: 0,
        }
    }

    fn entry(&self, op: &str, reply: ReplyEntry, f: impl FnOnce() -> Result<Stat, Error>) {
        match run(op, f) {
            Ok(st) => reply.entry(&TTL, &self.attr(&st), GENERATION),
            Err(e) => reply.error(e),
        }
    }

    fn dirs(&self) -> MutexGuard<'_, HashMap<u64, Arc<[Entry]>>> {
        // Only inserts and removes happen under this lock: a panic cannot leave it torn.
        self.dirs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn opens(&self) -> MutexGuard<'_, HashMap<u64, Opens>> {
        // Counts change after the fallible work is done: a panic cannot leave them torn.
        self.opens.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Turns passthrough off for the rest of the mount, saying so once.
    fn refuse_passthrough(&self, why: &str) {
        if self.passthrough.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                "FUSE passthrough is not available ({why}): files copied to local disk are \
                 served through pgsnapfs instead, which is slower; passthrough needs Linux \
                 6.9 or later and a mount by root (CAP_SYS_ADMIN)"
            );
        }
    }

    /// Opens `ino` with passthrough when it has a complete local copy and no cached open
    /// stands in the way; otherwise as a cached open.
    fn open_file(&self, ino: u64, write: bool, truncate: bool, reply: ReplyOpen) {
        let mut opens = self.opens();
        let state = opens.entry(ino).or_default();
        let want_local = state.cached == 0
            && state.passthrough.is_none()
            && self.passthrough.load(Ordering::Relaxed);
        let opened = run("open", || {
            self.overlay.open(ino, write, truncate, want_local)
        });
        let local = match opened {
            Ok(local) => local,
            Err(e) => {
                if state.unused() {
                    opens.remove(&ino);
                }
                return reply.error(e);
            }
        };
        if let Some((id, n)) = &mut state.passthrough {
            *n += 1;
            return reply.opened_passthrough(PASSTHROUGH_HANDLE, FopenFlags::empty(), id);
        }
        if let Some(local) = local {
            match reply.open_backing(&local) {
                Ok(id) => {
                    reply.opened_passthrough(PASSTHROUGH_HANDLE, FopenFlags::empty(), &id);
                    state.passthrough = Some((id, 1));
                    state.passed_through = self.overlay.is_writable();
                    return;
                }
                Err(e) => self.refuse_passthrough(&format!("registering a backing file: {e}")),
            }
        }
        state.cached += 1;
        // Pages cached before a passthrough open may since have changed under the kernel.
        let flags = match state.passed_through {
            true => FopenFlags::empty(),
            false => OPEN_FLAGS,
        };
        reply.opened(NO_HANDLE, flags);
    }
}

/// Runs one request, turning a panic into EIO and logging failures once: the only place an
/// EIO is logged, so the source's message (naming the object) appears once, with the op.
fn run<T>(op: &str, f: impl FnOnce() -> Result<T, Error>) -> Result<T, Errno> {
    let result = catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err(Error::io(format!("{op}: panicked"))));
    result.map_err(|e| {
        if e.errno == libc::EIO {
            tracing::error!("{op}: {e}");
        } else {
            tracing::debug!("{op}: {e}");
        }
        Errno::from_i32(e.errno)
    })
}

fn empty(reply: ReplyEmpty, result: Result<(), Errno>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

fn file_type(kind: Kind) -> FileType {
    match kind {
        Kind::Dir => FileType::Directory,
        Kind::File => FileType::RegularFile,
        Kind::Symlink => FileType::Symlink,
    }
}

impl Filesystem for Fs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let mut wanted = InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_CACHE_SYMLINKS
            | InitFlags::FUSE_ATOMIC_O_TRUNC;
        if self.writeback_cache {
            wanted |= InitFlags::FUSE_WRITEBACK_CACHE;
        }
        for flag in wanted.iter() {
            if config.add_capabilities(flag).is_err() {
                tracing::warn!("kernel does not support {flag:?}");
            }
        }
        if self.passthrough.load(Ordering::Relaxed) {
            match config.add_capabilities(InitFlags::FUSE_PASSTHROUGH) {
                // 2, the kernel's most: local copies may then sit on a stacked file system
                // (overlayfs in a container); nothing can stack on this mount in turn.
                Ok(()) => {
                    let _ = config.set_max_stack_depth(2);
                }
                Err(_) => self.refuse_passthrough("the kernel does not offer it"),
            }
        }
        // More reads in flight than the default 16, for readahead over slow sources.
        let _ = config.set_max_background(64);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        // A directory that changes under us has its names asked again after its TTL.
        let ttl = self.overlay.entry_ttl(parent.0).unwrap_or(TTL);
        match run("lookup", || self.overlay.lookup(parent.0, name)) {
            Ok(st) => reply.entry(&ttl, &self.attr(&st), GENERATION),
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        let _ = run("forget", || self.overlay.forget(ino.0, nlookup));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match run("getattr", || self.overlay.getattr(ino.0)) {
            Ok(st) => reply.attr(&TTL, &self.attr(&st)),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let result = run("setattr", || {
            // Every file has the one owner the mount reports.
            if uid.is_some_and(|u| u != self.uid) || gid.is_some_and(|g| g != self.gid) {
                return Err(Error::new(libc::EPERM, "ownership cannot change"));
            }
            let mtime = mtime.map(|t| match t {
                TimeOrNow::SpecificTime(t) => t,
                TimeOrNow::Now => SystemTime::now(),
            });
            self.overlay.setattr(ino.0, &SetAttr { mode, size, mtime })
        });
        match result {
            Ok(st) => reply.attr(&TTL, &self.attr(&st)),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match run("readlink", || self.overlay.readlink(ino.0)) {
            Ok(target) => reply.data(target.as_os_str().as_encoded_bytes()),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        self.entry("mknod", reply, || {
            if mode & libc::S_IFMT != libc::S_IFREG {
                return Err(Error::new(libc::EPERM, "only regular files can be made"));
            }
            self.overlay
                .create(parent.0, name, mode & !umask, true, false)
        });
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        self.entry("mkdir", reply, || {
            self.overlay.mkdir(parent.0, name, mode & !umask)
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(reply, run("unlink", || self.overlay.unlink(parent.0, name)));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(reply, run("rmdir", || self.overlay.rmdir(parent.0, name)));
    }

    fn symlink(
        &self,
        _req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        self.entry("symlink", reply, || {
            self.overlay.symlink(parent.0, link_name, target)
        });
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        empty(
            reply,
            run("rename", || {
                if !(flags - RenameFlags::RENAME_NOREPLACE).is_empty() {
                    return Err(Error::new(
                        libc::EINVAL,
                        format!("rename flags {flags} are not supported"),
                    ));
                }
                let noreplace = flags.contains(RenameFlags::RENAME_NOREPLACE);
                self.overlay
                    .rename(parent.0, name, newparent.0, newname, noreplace)
            }),
        );
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        self.entry("link", reply, || {
            self.overlay.link(ino.0, newparent.0, newname)
        });
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let write = flags.acc_mode() != OpenAccMode::O_RDONLY;
        let truncate = flags.0 & libc::O_TRUNC != 0;
        self.open_file(ino.0, write, truncate, reply);
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let mut opens = self.opens();
        if let Some(state) = opens.get_mut(&ino.0) {
            if fh == PASSTHROUGH_HANDLE {
                if let Some((_, n)) = &mut state.passthrough {
                    *n -= 1;
                    if *n == 0 {
                        // Dropping the id closes it in the kernel.
                        state.passthrough = None;
                    }
                }
            } else {
                state.cached = state.cached.saturating_sub(1);
            }
            if state.unused() {
                opens.remove(&ino.0);
            }
        }
        reply.ok();
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match run("read", || self.overlay.read(ino.0, offset, size)) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match run("write", || self.overlay.write(ino.0, offset, data)) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        empty(reply, run("fsync", || self.overlay.fsync(ino.0, datasync)));
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let listing = run("opendir", || {
            let dots = [".", ".."].map(|name| Entry {
                name: name.into(),
                ino: ino.0,
                kind: Kind::Dir,
            });
            Ok(dots
                .into_iter()
                .chain(self.overlay.readdir(ino.0)?)
                .collect::<Arc<[Entry]>>())
        });
        match listing {
            Ok(listing) => {
                let fh = self.next_dir.fetch_add(1, Ordering::Relaxed);
                self.dirs().insert(fh, listing);
                reply.opened(FileHandle(fh), FopenFlags::empty());
            }
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Some(listing) = self.dirs().get(&fh.0).cloned() else {
            reply.error(Errno::EBADF);
            return;
        };
        // An entry's offset is where the next readdir resumes.
        for (i, e) in listing.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(e.ino), i as u64 + 1, file_type(e.kind), &e.name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.dirs().remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        empty(reply, run("fsyncdir", || self.overlay.fsync_dir()));
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match run("statfs", || self.overlay.statfs()) {
            Ok(s) => reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, 255, s.bsize,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EOPNOTSUPP);
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(Errno::NO_XATTR);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: ReplyXattr) {
        if size == 0 {
            reply.size(0);
        } else {
            reply.data(&[]);
        }
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::NO_XATTR);
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // The kernel checks permissions itself (default_permissions); this is existence only.
        empty(
            reply,
            run("access", || self.overlay.getattr(ino.0).map(drop)),
        );
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let exclusive = flags & libc::O_EXCL != 0;
        let truncate = flags & libc::O_TRUNC != 0;
        // Counted as a cached open: created files have no local copy to pass through.
        let mut opens = self.opens();
        match run("create", || {
            self.overlay
                .create(parent.0, name, mode & !umask, exclusive, truncate)
        }) {
            Ok(st) => {
                let state = opens.entry(st.ino).or_default();
                match &mut state.passthrough {
                    // An existing file, already passed through: the kernel allows no other kind.
                    Some((id, n)) => {
                        *n += 1;
                        reply.created_passthrough(
                            &TTL,
                            &self.attr(&st),
                            GENERATION,
                            PASSTHROUGH_HANDLE,
                            FopenFlags::empty(),
                            id,
                        )
                    }
                    None => {
                        state.cached += 1;
                        reply.created(&TTL, &self.attr(&st), GENERATION, NO_HANDLE, OPEN_FLAGS)
                    }
                }
            }
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        empty(
            reply,
            run("fallocate", || {
                if mode != 0 {
                    return Err(Error::new(
                        libc::EOPNOTSUPP,
                        format!("fallocate mode {mode:#x} is not supported"),
                    ));
                }
                self.overlay.allocate(ino.0, offset, length)
            }),
        );
    }
}
