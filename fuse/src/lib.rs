//! A FUSE file system that serves a read-only tree, optionally with a block-level
//! copy-on-write layer on top. It knows nothing of what the tree holds.
//!
//! # The source
//! The tree comes from a [`Source`]: lookup, getattr, readdir, readlink and ranged read
//! on stable [`NodeId`]s, which the mount reports as inode numbers. The source is never
//! written; it needs no write methods at all. [`MemSource`] is one held in memory.
//!
//! # The copy-on-write layer
//! With [`MountOptions::writable`] set to a scratch directory, the mount accepts every
//! change a database server makes: create, write, truncate, rename, unlink, link, mkdir,
//! symlink, chmod, fsync, fallocate. Changes live in two places:
//! - in memory, per inode: attributes, directory entries added and source entries
//!   deleted (whiteouts), and for each written file a set of written blocks;
//! - in the scratch directory, one sparse file per written file, holding the written
//!   blocks at their own offsets.
//!
//! By default the layer is throw-away: unmounting discards it, and nothing in the scratch
//! directory is needed afterwards. With [`MountOptions::durable`], the inode state is also
//! journaled in the scratch directory, and the layer survives unmount and crashes of the
//! process or the machine as a local disk's files would: what was fsynced (files with
//! `fsync`/`fdatasync`, directory changes with `fsyncdir` or a file's `fsync`) is kept;
//! changes not yet synced may be lost, whole, never half-applied. Mounting the same source
//! on the directory again brings the changes back. See `cow/journal.rs` for the format.
//!
//! Why blocks rather than whole files: a database opens its relation files read-write
//! just to read them, and writes a few pages of a gigabyte segment at a time. Copying a
//! file up on open or on first write (as overlayfs does) would copy gigabytes to change
//! kilobytes. Here a write stores only the [`MountOptions::block_size`] blocks it touches,
//! reading the rest of a partly covered block from the source, and a file that is only
//! read is never copied.
//!
//! # Passthrough
//! A source may have a complete local copy of a file ([`Source::local_file`]). With
//! [`MountOptions::passthrough`], such a file is opened with FUSE passthrough (Linux 6.9+,
//! CAP_SYS_ADMIN): the kernel reads it, and on a writable mount writes it, without a request
//! to this process. A writable mount first adopts the copy as the file's copy-on-write copy,
//! merging in blocks written before. Where passthrough is refused, files are served as
//! usual and the log says so once.
//!
//! # Mounting
//! [`mount`] mounts in the background and returns a [`MountHandle`] once the kernel has
//! connected. Requests are served by [`MountOptions::threads`] threads, and the kernel
//! keeps file pages and attributes cached, as every change goes through this file system.
//! Sequential reads reach the source as requests of 1 MiB: fuser negotiates
//! `FUSE_MAX_PAGES` (the kernel's limit, 256 pages) and the mount raises readahead to match.
//!
//! ```no_run
//! use std::sync::Arc;
//! use pgsnapfs_fuse::{mount, MemSource, MountOptions};
//!
//! let mut source = MemSource::new(0o700);
//! source.add_file("PG_VERSION", "15\n", 0o600);
//! let opts = MountOptions {
//!     fsname: "pgsnapfs".into(),
//!     uid: 101, // the server's user, which must own its data directory
//!     gid: 104,
//!     allow_other: true,
//!     writable: Some("/var/tmp/pgsnapfs-cow".into()),
//!     durable: false,
//!     block_size: 8192,
//!     threads: 4,
//!     writeback_cache: true,
//!     passthrough: false,
//! };
//! let handle = mount(Arc::new(source), "/mnt/view".as_ref(), opts)?;
//! // ... run the server on /mnt/view, stop it ...
//! handle.unmount()?;
//! # Ok::<(), pgsnapfs_fuse::Error>(())
//! ```

#![deny(missing_docs)]

mod cow;
mod error;
mod fill;
mod fs;
mod inode;
mod mem;
mod source;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use fuser::{BackgroundSession, Config, MountOption, Session, SessionACL};

pub use crate::cow::FileChange;
pub use crate::error::Error;
pub use crate::fill::{Filled, Filler};
pub use crate::mem::MemSource;
pub use crate::source::{Attr, DirEntry, Kind, NodeId, Source, MAX_NODE, ROOT};

/// How to mount.
#[derive(Clone, Debug)]
pub struct MountOptions {
    /// Shown as the mount's source in /proc/mounts.
    pub fsname: String,
    /// Owner reported for every file; the kernel checks permissions against it.
    pub uid: u32,
    /// Group reported for every file.
    pub gid: u32,
    /// Let users other than the one mounting use the mount (FUSE `allow_other`). Needed
    /// when root mounts for a server that runs as another user.
    pub allow_other: bool,
    /// `Some(scratch dir)`: writable, with the copy-on-write layer kept there (created
    /// with mode 0700 if missing). `None`: read-only, changes fail with EROFS.
    pub writable: Option<PathBuf>,
    /// With `writable`: keep the copy-on-write state in the scratch directory, durably,
    /// and take up what it holds (see the crate docs). The source must be the same tree
    /// (same paths and contents) at every mount; its node ids may differ.
    pub durable: bool,
    /// Copy-on-write granularity in bytes, e.g. 8192.
    pub block_size: u32,
    /// Threads serving requests; reads of different files and blocks run in parallel.
    pub threads: usize,
    /// Let the kernel cache writes and send them in batches (FUSE writeback cache). Faster
    /// for small writes; the kernel then owns file sizes and times until it flushes.
    pub writeback_cache: bool,
    /// Open files the source has a complete local copy of ([`Source::local_file`]) with
    /// FUSE passthrough: the kernel reads (and, writable, writes) the copy itself, without
    /// a request to this process. Needs Linux 6.9 or later and CAP_SYS_ADMIN; where refused,
    /// files are served as usual and the log says so once. Turns `writeback_cache` off, which
    /// the kernel does not combine with passthrough.
    pub passthrough: bool,
}

/// Mounts `source` at `mountpoint`, served in the background. Returns once the kernel has
/// connected, so the mount can be used at once.
pub fn mount(
    source: Arc<dyn Source>,
    mountpoint: &Path,
    opts: MountOptions,
) -> Result<MountHandle, Error> {
    let mountpoint = mountpoint
        .canonicalize()
        .map_err(|e| Error::context(e, format!("mountpoint {}", mountpoint.display())))?;
    let writable = opts.writable.is_some();
    let overlay = Arc::new(match (opts.writable, opts.durable) {
        (Some(dir), true) => cow::Overlay::durable(source, dir, opts.block_size)?,
        (writable, _) => cow::Overlay::new(source, writable, opts.block_size)?,
    });
    let fs = fs::Fs::new(
        overlay.clone(),
        opts.uid,
        opts.gid,
        opts.block_size,
        opts.writeback_cache,
        opts.passthrough,
    );

    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName(opts.fsname),
        MountOption::DefaultPermissions,
        if writable {
            MountOption::RW
        } else {
            MountOption::RO
        },
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    if opts.allow_other {
        config.acl = SessionACL::All;
    }
    config.n_threads = Some(opts.threads.max(1));
    // One /dev/fuse descriptor per thread, so the kernel hands requests out in parallel.
    config.clone_fd = true;

    let failed = |e| Error::context(e, format!("mount {}", mountpoint.display()));
    let session = Session::new(fs, &mountpoint, &config).map_err(failed)?;
    let session = session.spawn().map_err(failed)?;
    raise_readahead(&mountpoint);
    tracing::info!("mounted {}", mountpoint.display());
    Ok(MountHandle {
        session: Some(session),
        mountpoint,
        overlay,
    })
}

/// A mounted file system. Dropping it unmounts.
pub struct MountHandle {
    session: Option<BackgroundSession>,
    mountpoint: PathBuf,
    overlay: Arc<cow::Overlay>,
}

impl std::fmt::Debug for MountHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MountHandle")
            .field("mountpoint", &self.mountpoint)
            .finish_non_exhaustive()
    }
}

impl MountHandle {
    /// Where the file system is mounted (canonical path).
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// How the regular file at `path` (relative to the mount's root) differs from the
    /// source's file at the same path, as the copy-on-write layer recorded it: what a
    /// caller storing the changed tree must read again. Ask once nothing writes to the
    /// mount any more and its writers have fsynced (the kernel may still hold unflushed
    /// pages of a file not fsynced).
    pub fn file_change(&self, path: &Path) -> Result<FileChange, Error> {
        self.overlay.file_change(path)
    }

    /// A [`Filler`] of this mount's writable layer, for hydration from another thread.
    pub fn filler(&self) -> Filler {
        Filler {
            overlay: self.overlay.clone(),
        }
    }

    /// An [`Unmounter`] that other threads can use, e.g. on a signal, while this thread waits.
    pub fn unmounter(&self) -> Unmounter {
        Unmounter {
            mountpoint: self.mountpoint.clone(),
        }
    }

    /// Unmounts and waits for the serving threads to finish. If files are still open
    /// (EBUSY), the mount is detached lazily instead: it disappears from the tree at once,
    /// is served until the last file is closed, and the EBUSY error is returned.
    pub fn unmount(mut self) -> Result<(), Error> {
        self.unmount_now()
    }

    /// Blocks until the file system is unmounted by anyone: `umount`, `fusermount3 -u`, or
    /// an [`Unmounter`].
    pub fn wait(mut self) -> Result<(), Error> {
        match self.session.take() {
            Some(session) => {
                join(session)?;
                self.overlay.close()
            }
            None => Ok(()),
        }
    }

    fn unmount_now(&mut self) -> Result<(), Error> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        match umount(&self.mountpoint, 0) {
            // EINVAL: someone else unmounted it already.
            Ok(()) | Err(libc::EINVAL) => {
                join(session)?;
                self.overlay.close()
            }
            // Not root: fuser goes through fusermount.
            Err(libc::EPERM) => {
                session.umount_and_join().map_err(|e| {
                    Error::context(e, format!("unmount {}", self.mountpoint.display()))
                })?;
                self.overlay.close()
            }
            Err(errno) => {
                let detached = umount(&self.mountpoint, libc::MNT_DETACH);
                tracing::warn!(
                    "unmount {}: {}; lazy detach: {detached:?}",
                    self.mountpoint.display(),
                    Error::from_errno(errno)
                );
                // The session thread keeps serving open files until the kernel lets go.
                drop(session);
                Err(Error::new(
                    errno,
                    format!(
                        "unmount {}: busy; detached lazily",
                        self.mountpoint.display()
                    ),
                ))
            }
        }
    }
}

impl Drop for MountHandle {
    fn drop(&mut self) {
        if let Err(e) = self.unmount_now() {
            tracing::warn!("{e}");
        }
    }
}

/// Unmounts a [`MountHandle`]'s file system from another thread; its `wait` then returns.
#[derive(Clone, Debug)]
pub struct Unmounter {
    mountpoint: PathBuf,
}

impl Unmounter {
    /// Unmounts with umount(2), or `fusermount3 -u` when not root. Fails with EBUSY while
    /// files are open.
    pub fn unmount(&self) -> Result<(), Error> {
        let failed = |errno: i32| {
            Error::new(
                errno,
                format!(
                    "unmount {}: {}",
                    self.mountpoint.display(),
                    Error::from_errno(errno)
                ),
            )
        };
        match umount(&self.mountpoint, 0) {
            Ok(()) => Ok(()),
            Err(libc::EPERM) => {
                for tool in ["fusermount3", "fusermount"] {
                    if let Ok(status) = Command::new(tool).arg("-u").arg(&self.mountpoint).status()
                    {
                        return if status.success() {
                            Ok(())
                        } else {
                            Err(failed(libc::EPERM))
                        };
                    }
                }
                Err(failed(libc::EPERM))
            }
            Err(errno) => Err(failed(errno)),
        }
    }
}

/// The kernel gives a FUSE mount 128 KiB of readahead; sequential reads over a slow source
/// go much faster in requests as large as FUSE allows (1 MiB). Random reads are not
/// affected: the kernel only grows the window for sequential access. Only root may change
/// it, so this is best effort.
fn raise_readahead(mountpoint: &Path) {
    let knob = std::fs::metadata(mountpoint).map(|m| {
        let dev = m.dev();
        format!(
            "/sys/class/bdi/{}:{}/read_ahead_kb",
            libc::major(dev),
            libc::minor(dev)
        )
    });
    if let Err(e) = knob.and_then(|knob| std::fs::write(knob, "1024")) {
        tracing::debug!(
            "readahead of {} left at the default: {e}",
            mountpoint.display()
        );
    }
}

fn join(session: BackgroundSession) -> Result<(), Error> {
    session
        .join()
        .map_err(|e| Error::context(e, "file system session"))
}

/// umount2(2), returning the errno on failure.
fn umount(path: &Path, flags: libc::c_int) -> Result<(), i32> {
    let path = CString::new(path.as_os_str().as_bytes()).map_err(|_| libc::EINVAL)?;
    // SAFETY: `path` is a valid NUL-terminated string for the duration of the call.
    if unsafe { libc::umount2(path.as_ptr(), flags) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO))
    }
}
