//! The copy-on-write layer ([`Overlay`]): the source tree as changed through the mount.
//! It merges the source with the inode table (attributes, directory entries, whiteouts)
//! and per-file block stores in the scratch directory, speaks inode numbers and errnos,
//! and needs no kernel, so every semantic is unit-tested here. Without a scratch
//! directory the layer is read-only and every change fails with EROFS.
//!
//! Durable ([`Overlay::durable`]): the same layer, with every change also journaled in its
//! directory (see [`journal`]) so that it survives unmount and crashes as a local disk's
//! files would: a change is in the journal before the reply (not yet synced), and
//! `fsync`/`fsyncdir` sync the data file and the journal before replying.

mod durable;
pub(crate) mod file;
pub(crate) mod journal;
#[cfg(test)]
mod tests;

use std::ffi::{OsStr, OsString};
use std::fs::{DirBuilder, File, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use self::file::CowFile;
use self::journal::{Journal, NameChange};
use crate::inode::{DirOverlay, Ino, Inode, InodeTable, FIRST_CREATED};
use crate::source::{Kind, Source, MAX_NODE};
use crate::Error;

/// Attributes of an inode as the mount shows them.
#[derive(Clone, Debug)]
pub(crate) struct Stat {
    pub(crate) ino: Ino,
    pub(crate) kind: Kind,
    pub(crate) size: u64,
    pub(crate) perm: u16,
    pub(crate) mtime: SystemTime,
    pub(crate) nlink: u32,
}

/// An entry of a merged directory listing.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub(crate) name: OsString,
    pub(crate) ino: Ino,
    pub(crate) kind: Kind,
}

/// The attribute changes of a setattr; ownership is checked by the caller.
#[derive(Clone, Debug, Default)]
pub(crate) struct SetAttr {
    pub(crate) mode: Option<u32>,
    pub(crate) size: Option<u64>,
    pub(crate) mtime: Option<SystemTime>,
}

/// Free space of the scratch file system, for statfs.
#[derive(Clone, Debug, Default)]
pub(crate) struct Space {
    pub(crate) blocks: u64,
    pub(crate) bfree: u64,
    pub(crate) bavail: u64,
    pub(crate) files: u64,
    pub(crate) ffree: u64,
    pub(crate) bsize: u32,
}

/// How a regular file of the mount differs from the source's file at the same path
/// ([`crate::MountHandle::file_change`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileChange {
    /// The source's file, unchanged.
    Unchanged,
    /// The source's file with these blocks (of the mount's block size, ascending)
    /// rewritten; bytes from `source_len` on are not the source's (cut off, then zeros or
    /// written blocks).
    Blocks {
        /// The blocks written.
        written: Vec<u64>,
        /// How much of the source's bytes still shows through.
        source_len: u64,
    },
    /// Another file: created, renamed here, or the source's file at another path.
    Replaced,
    /// Nothing at that path.
    Missing,
}

const NAME_MAX: usize = 255;

pub(crate) struct Overlay {
    source: Arc<dyn Source>,
    /// None: read-only.
    scratch: Option<PathBuf>,
    block_size: u32,
    table: Mutex<InodeTable>,
    /// Durable: where every change is journaled.
    journal: Option<Arc<Journal>>,
    /// Closed (unmounted): hydration holds this shared for each step, and closing takes it
    /// alone, so no step runs into the final compaction.
    pub(crate) closed: std::sync::RwLock<bool>,
}

impl Overlay {
    /// A layer over `source`; with `scratch`, writable, creating that directory (0700) if needed.
    pub(crate) fn new(
        source: Arc<dyn Source>,
        scratch: Option<PathBuf>,
        block_size: u32,
    ) -> Result<Self, Error> {
        if block_size == 0 {
            return Err(Error::new(libc::EINVAL, "block size must not be zero"));
        }
        if let Some(dir) = &scratch {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| Error::context(e, format!("create scratch dir {}", dir.display())))?;
        }
        Ok(Self {
            source,
            scratch,
            block_size,
            table: Mutex::new(InodeTable::new()),
            journal: None,
            closed: std::sync::RwLock::new(false),
        })
    }

    pub(crate) fn is_writable(&self) -> bool {
        self.scratch.is_some()
    }

    /// Resolves `name` in `parent` and counts a kernel lookup of the result.
    pub(crate) fn lookup(&self, parent: Ino, name: &OsStr) -> Result<Stat, Error> {
        // The source is asked without the table lock held: it may be slow.
        let step = self.overlay_lookup(&*self.table()?, parent, name)?;
        let ino = match step {
            Step::Found(ino) => ino,
            Step::Missing => return Err(not_found(parent, name)),
            Step::AskSource => self
                .source_lookup(parent, name)?
                .ok_or_else(|| not_found(parent, name))?,
        };
        let stat = self.getattr(ino)?;
        self.table()?.looked_up(ino, stat.kind);
        Ok(stat)
    }

    /// How long the kernel may keep names found in directory `ino`: the source's say for
    /// its directories; `None` (no limit) for created ones, which change only through us.
    pub(crate) fn entry_ttl(&self, ino: Ino) -> Option<Duration> {
        match ino {
            ..FIRST_CREATED => self.source.entry_ttl(ino),
            _ => None,
        }
    }

    /// The kernel dropped `n` lookups of `ino`.
    pub(crate) fn forget(&self, ino: Ino, n: u64) -> Result<(), Error> {
        self.table()?.forget(ino, n);
        Ok(())
    }

    pub(crate) fn getattr(&self, ino: Ino) -> Result<Stat, Error> {
        let known = self.table()?.get(ino).map(Known::of);
        let Some(known) = known else {
            if ino >= FIRST_CREATED {
                return Err(stale(ino));
            }
            let attr = self.source.getattr(ino)?;
            return Ok(Stat {
                ino,
                kind: attr.kind,
                size: attr.size,
                perm: attr.perm,
                mtime: attr.mtime,
                nlink: 1,
            });
        };
        let mut stat = match (known.perm, known.mtime) {
            // Created inodes carry every attribute.
            (Some(perm), Some(mtime)) if ino >= FIRST_CREATED => Stat {
                ino,
                kind: known.kind,
                size: known.target_len,
                perm,
                mtime,
                nlink: known.nlink,
            },
            _ => {
                let attr = self.source.getattr(ino)?;
                Stat {
                    ino,
                    kind: attr.kind,
                    size: attr.size,
                    perm: known.perm.unwrap_or(attr.perm),
                    mtime: known.mtime.unwrap_or(attr.mtime),
                    nlink: known.nlink,
                }
            }
        };
        if let Some(file) = known.file {
            (stat.size, stat.mtime) = file.size_mtime()?;
        }
        Ok(stat)
    }

    pub(crate) fn setattr(&self, ino: Ino, change: &SetAttr) -> Result<Stat, Error> {
        self.check_writable()?;
        if let Some(size) = change.size {
            self.file_for_write(ino)?.set_size(size)?;
        }
        {
            let mut table = self.table()?;
            let inode = self.entry(&mut table, ino)?;
            if let Some(mode) = change.mode {
                inode.perm = Some((mode & 0o7777) as u16);
                inode.pinned = true;
            }
            if let Some(mtime) = change.mtime {
                match &inode.file {
                    Some(file) => file.set_mtime(mtime)?,
                    None => inode.mtime = Some(mtime),
                }
                inode.pinned = true;
            }
            if change.mode.is_some() || change.mtime.is_some() {
                self.log_node(&mut table, ino);
            }
            self.commit(&mut table)?;
        }
        self.getattr(ino)
    }

    pub(crate) fn readlink(&self, ino: Ino) -> Result<PathBuf, Error> {
        let table = self.table()?;
        match table.get(ino) {
            Some(Inode {
                kind: Kind::Symlink,
                target: Some(target),
                ..
            }) => Ok(target.clone()),
            Some(inode) if inode.kind != Kind::Symlink => Err(Error::new(
                libc::EINVAL,
                format!("inode {ino} is not a symlink"),
            )),
            _ if ino >= FIRST_CREATED => Err(stale(ino)),
            _ => {
                drop(table);
                self.source.readlink(ino)
            }
        }
    }

    /// The merged listing of directory `ino`: source entries not hidden, then the overlay's.
    pub(crate) fn readdir(&self, ino: Ino) -> Result<Vec<Entry>, Error> {
        self.list(&*self.table()?, ino)
    }

    /// Checks that file `ino` may be opened, and truncates it if asked. Opening for
    /// writing copies nothing: blocks are copied when written. With `local`, returns a
    /// descriptor of a complete local copy of the file if there is one, for passthrough.
    pub(crate) fn open(
        &self,
        ino: Ino,
        write: bool,
        truncate: bool,
        local: bool,
    ) -> Result<Option<File>, Error> {
        if write || truncate {
            self.check_writable()?;
        }
        // Adopted before truncating, so the truncation lands in the adopted copy.
        let local = if local { self.local(ino)? } else { None };
        if truncate {
            self.file_for_write(ino)?.set_size(0)?;
        }
        Ok(local)
    }

    /// The complete local copy of file `ino`: the source's own (read-only mount), or the
    /// whole copy-on-write file, adopting the source's local copy on first use (with the
    /// blocks written before merged into it). None when there is none.
    fn local(&self, ino: Ino) -> Result<Option<File>, Error> {
        if self.journal.is_some() {
            // Adopting a copy is not journaled: a durable layer keeps to its own files.
            return Ok(None);
        }
        let mut table = self.table()?;
        if let Some(file) = table.get(ino).and_then(|inode| inode.file.clone()) {
            if let Some(local) = file.local()? {
                return Ok(Some(local));
            }
            let Some(path) = self.source_copy(ino) else {
                return Ok(None);
            };
            // Merging written blocks takes a while: not with every lookup waiting.
            drop(table);
            return match file.absorb(&path) {
                Ok(true) => file.local(),
                Ok(false) => Ok(None),
                Err(e) => {
                    tracing::warn!("cannot adopt local copy {}: {e}", path.display());
                    Ok(None)
                }
            };
        }
        let Some(path) = self.source_copy(ino) else {
            return Ok(None);
        };
        if !self.is_writable() {
            return match File::open(&path) {
                Ok(f) => Ok(Some(f)),
                Err(e) => {
                    tracing::warn!("local copy {} of inode {ino}: {e}", path.display());
                    Ok(None)
                }
            };
        }
        let inode = self.entry(&mut table, ino)?;
        if inode.kind != Kind::File {
            return Ok(None);
        }
        let data_path = self.data_path(ino);
        let adopted = std::fs::rename(&path, &data_path)
            .and_then(|()| OpenOptions::new().read(true).write(true).open(&data_path));
        let data = match adopted {
            Ok(data) => data,
            Err(e) => {
                tracing::warn!(
                    "cannot adopt local copy {} of inode {ino}: {e}",
                    path.display()
                );
                return Ok(None);
            }
        };
        // The copy's own time now shows: make it the one the file had.
        let mtime = match inode.mtime {
            Some(mtime) => mtime,
            None => self.source.getattr(ino)?.mtime,
        };
        data.set_modified(mtime)?;
        let file = Arc::new(CowFile::whole(ino, data, data_path, self.block_size));
        let local = file.local();
        inode.file = Some(file);
        inode.pinned = true;
        local
    }

    pub(crate) fn read(&self, ino: Ino, offset: u64, size: u32) -> Result<Vec<u8>, Error> {
        let file = match self.table()?.get(ino) {
            Some(inode) if inode.kind != Kind::File => {
                return Err(Error::new(
                    libc::EISDIR,
                    format!("inode {ino} is not a file"),
                ))
            }
            Some(inode) => inode.file.clone(),
            None if ino >= FIRST_CREATED => return Err(stale(ino)),
            None => None,
        };
        match file {
            Some(file) => file.read(&*self.source, offset, size),
            None => self.source.read(ino, offset, size),
        }
    }

    pub(crate) fn write(&self, ino: Ino, offset: u64, data: &[u8]) -> Result<(), Error> {
        self.check_writable()?;
        self.file_for_write(ino)?.write(&*self.source, offset, data)
    }

    /// Grows the file to at least `offset + len` (fallocate mode 0: the space is not reserved).
    pub(crate) fn allocate(&self, ino: Ino, offset: u64, len: u64) -> Result<(), Error> {
        self.check_writable()?;
        let end = offset
            .checked_add(len)
            .ok_or_else(|| Error::from_errno(libc::EFBIG))?;
        if end > self.getattr(ino)?.size {
            self.file_for_write(ino)?.set_size(end)?;
        }
        Ok(())
    }

    /// Flushes the scratch data of `ino`, if it has any; durable, its journaled changes
    /// (and every change before them) too.
    pub(crate) fn fsync(&self, ino: Ino, datasync: bool) -> Result<(), Error> {
        let file = self.table()?.get(ino).and_then(|i| i.file.clone());
        match file {
            Some(file) => file.sync(datasync),
            None => self.fsync_dir(),
        }
    }

    /// Durable: makes every directory change so far durable. Otherwise nothing to do.
    pub(crate) fn fsync_dir(&self) -> Result<(), Error> {
        match &self.journal {
            Some(journal) => journal.sync(),
            None => Ok(()),
        }
    }

    /// Creates regular file `name` in `parent`, or opens the existing one unless `exclusive`.
    pub(crate) fn create(
        &self,
        parent: Ino,
        name: &OsStr,
        mode: u32,
        exclusive: bool,
        truncate: bool,
    ) -> Result<Stat, Error> {
        self.check_writable()?;
        let existing = {
            let mut table = self.table()?;
            self.resolve(&mut table, parent, name)?
        };
        match existing {
            Some(_) if exclusive => Err(exists(parent, name)),
            Some(ino) => {
                let stat = self.getattr(ino)?;
                if stat.kind == Kind::Dir {
                    return Err(Error::from_errno(libc::EISDIR));
                }
                self.open(ino, true, truncate, false)?;
                self.table()?.looked_up(ino, stat.kind);
                self.getattr(ino)
            }
            None => self.add_node(parent, name, Kind::File, mode, |ino, inode, overlay| {
                inode.file = Some(Arc::new(CowFile::new(
                    ino,
                    None,
                    0,
                    SystemTime::now(),
                    overlay.data_path(ino),
                    overlay.block_size,
                    overlay.journal.clone(),
                )));
            }),
        }
    }

    pub(crate) fn mkdir(&self, parent: Ino, name: &OsStr, mode: u32) -> Result<Stat, Error> {
        self.add_node(parent, name, Kind::Dir, mode, |_, inode, _| {
            inode.dir = Some(DirOverlay::default())
        })
    }

    pub(crate) fn symlink(&self, parent: Ino, name: &OsStr, target: &Path) -> Result<Stat, Error> {
        self.add_node(parent, name, Kind::Symlink, 0o777, |_, inode, _| {
            inode.target = Some(target.to_owned())
        })
    }

    /// Adds name `newname` in `newparent` for the existing file `ino` (a hard link).
    pub(crate) fn link(&self, ino: Ino, newparent: Ino, newname: &OsStr) -> Result<Stat, Error> {
        self.check_writable()?;
        check_name(newname)?;
        {
            let mut table = self.table()?;
            if self.resolve(&mut table, newparent, newname)?.is_some() {
                return Err(exists(newparent, newname));
            }
            let inode = self.entry(&mut table, ino)?;
            if inode.kind == Kind::Dir {
                return Err(Error::new(
                    libc::EPERM,
                    "hard links to directories are not allowed",
                ));
            }
            inode.pinned = true;
            inode.nlink += 1;
            inode.lookups += 1;
            self.log_node(&mut table, ino);
            self.add_name(&mut table, newparent, newname, ino)?;
            self.commit(&mut table)?;
        }
        self.getattr(ino)
    }

    pub(crate) fn unlink(&self, parent: Ino, name: &OsStr) -> Result<(), Error> {
        self.remove(parent, name, false)
    }

    pub(crate) fn rmdir(&self, parent: Ino, name: &OsStr) -> Result<(), Error> {
        self.remove(parent, name, true)
    }

    /// Renames `parent/name` to `newparent/newname`, replacing a compatible target unless
    /// `noreplace`.
    pub(crate) fn rename(
        &self,
        parent: Ino,
        name: &OsStr,
        newparent: Ino,
        newname: &OsStr,
        noreplace: bool,
    ) -> Result<(), Error> {
        self.check_writable()?;
        check_name(newname)?;
        let mut table = self.table()?;
        let ino = self
            .resolve(&mut table, parent, name)?
            .ok_or_else(|| not_found(parent, name))?;
        let target = self.resolve(&mut table, newparent, newname)?;
        if target == Some(ino) {
            // Two names of one file: rename(2) does nothing.
            return Ok(());
        }
        let kind = self.entry(&mut table, ino)?.kind;
        if let Some(target) = target {
            if noreplace {
                return Err(exists(newparent, newname));
            }
            self.check_replaceable(&mut table, kind, target)?;
        }
        self.remove_name(&mut table, parent, name)?;
        if let Some(target) = target {
            self.unlink_inode(&mut table, target)?;
        }
        self.add_name(&mut table, newparent, newname, ino)?;
        self.entry(&mut table, ino)?.pinned = true;
        self.log_node(&mut table, ino);
        self.commit(&mut table)
    }

    pub(crate) fn statfs(&self) -> Result<Space, Error> {
        let Some(dir) = &self.scratch else {
            return Ok(Space {
                bsize: self.block_size,
                ..Space::default()
            });
        };
        let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
            .map_err(|_| Error::new(libc::EINVAL, "scratch path has a NUL byte"))?;
        // SAFETY: statvfs is plain integers, for which zero is valid.
        let mut vfs: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `path` is NUL-terminated and `vfs` is a statvfs to write into.
        if unsafe { libc::statvfs(path.as_ptr(), &mut vfs) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(Space {
            blocks: vfs.f_blocks,
            bfree: vfs.f_bfree,
            bavail: vfs.f_bavail,
            files: vfs.f_files,
            ffree: vfs.f_ffree,
            bsize: vfs.f_frsize as u32,
        })
    }

    /// Blocks stored in the scratch directory for `ino`.
    #[cfg(test)]
    pub(crate) fn stored_blocks(&self, ino: Ino) -> Result<u64, Error> {
        match self.table()?.get(ino).and_then(|i| i.file.clone()) {
            Some(file) => file.stored_blocks(),
            None => Ok(0),
        }
    }

    #[cfg(test)]
    pub(crate) fn inodes(&self) -> usize {
        self.table().map(|t| t.len()).unwrap_or(0)
    }

    fn add_node(
        &self,
        parent: Ino,
        name: &OsStr,
        kind: Kind,
        mode: u32,
        init: impl FnOnce(Ino, &mut Inode, &Self),
    ) -> Result<Stat, Error> {
        self.check_writable()?;
        check_name(name)?;
        let mut table = self.table()?;
        if self.resolve(&mut table, parent, name)?.is_some() {
            return Err(exists(parent, name));
        }
        let (ino, inode) = table.create(kind);
        inode.perm = Some((mode & 0o7777) as u16);
        inode.mtime = Some(SystemTime::now());
        inode.lookups = 1;
        init(ino, inode, self);
        self.log_node(&mut table, ino);
        self.add_name(&mut table, parent, name, ino)?;
        self.commit(&mut table)?;
        drop(table);
        self.getattr(ino)
    }

    fn remove(&self, parent: Ino, name: &OsStr, dir: bool) -> Result<(), Error> {
        self.check_writable()?;
        let mut table = self.table()?;
        let ino = self
            .resolve(&mut table, parent, name)?
            .ok_or_else(|| not_found(parent, name))?;
        let kind = self.entry(&mut table, ino)?.kind;
        match (dir, kind) {
            (true, Kind::Dir) => {
                if !self.list(&table, ino)?.is_empty() {
                    return Err(Error::from_errno(libc::ENOTEMPTY));
                }
            }
            (true, _) => return Err(Error::from_errno(libc::ENOTDIR)),
            (false, Kind::Dir) => return Err(Error::from_errno(libc::EISDIR)),
            (false, _) => {}
        }
        self.remove_name(&mut table, parent, name)?;
        self.unlink_inode(&mut table, ino)?;
        self.commit(&mut table)
    }

    /// Rename may replace a file by a non-directory, or an empty directory by a directory.
    fn check_replaceable(
        &self,
        table: &mut InodeTable,
        kind: Kind,
        target: Ino,
    ) -> Result<(), Error> {
        match (kind, self.entry(table, target)?.kind) {
            (Kind::Dir, Kind::Dir) if !self.list(table, target)?.is_empty() => {
                Err(Error::from_errno(libc::ENOTEMPTY))
            }
            (Kind::Dir, Kind::Dir) => Ok(()),
            (Kind::Dir, _) => Err(Error::from_errno(libc::ENOTDIR)),
            (_, Kind::Dir) => Err(Error::from_errno(libc::EISDIR)),
            _ => Ok(()),
        }
    }

    /// Drops one link of `ino`; the inode lives on while the kernel holds it (open files).
    fn unlink_inode(&self, table: &mut InodeTable, ino: Ino) -> Result<(), Error> {
        let inode = self.entry(table, ino)?;
        inode.pinned = true;
        inode.nlink = inode.nlink.saturating_sub(1);
        self.log_node(table, ino);
        table.collect(ino);
        Ok(())
    }

    fn list(&self, table: &InodeTable, ino: Ino) -> Result<Vec<Entry>, Error> {
        let overlay = match table.get(ino) {
            Some(inode) if inode.kind != Kind::Dir => return Err(Error::from_errno(libc::ENOTDIR)),
            Some(inode) => inode.dir.as_ref(),
            None if ino >= FIRST_CREATED => return Err(stale(ino)),
            None => None,
        };
        let empty = DirOverlay::default();
        let overlay = overlay.unwrap_or(&empty);
        let mut out = Vec::new();
        if ino < FIRST_CREATED {
            for e in self.source.readdir(ino)? {
                if !overlay.hidden.contains(&e.name) && !overlay.entries.contains_key(&e.name) {
                    out.push(Entry {
                        name: e.name,
                        ino: e.node,
                        kind: e.kind,
                    });
                }
            }
        }
        for (name, &child) in &overlay.entries {
            let kind = table.get(child).map(|i| i.kind).ok_or_else(|| {
                Error::io(format!("entry {name:?} of inode {ino} names no inode"))
            })?;
            out.push(Entry {
                name: name.clone(),
                ino: child,
                kind,
            });
        }
        Ok(out)
    }

    /// How the file at `path` (relative to the root) differs from the source's file at
    /// the same path. Meant for a mount nothing writes to any more.
    pub(crate) fn file_change(&self, path: &Path) -> Result<FileChange, Error> {
        let mut table = self.table()?;
        let (mut merged, mut source) = (Some(crate::source::ROOT), Some(crate::source::ROOT));
        for name in path.iter() {
            merged = match merged {
                Some(dir) => self.resolve(&mut table, dir, name)?,
                None => None,
            };
            source = match source {
                Some(dir) => self.source_lookup(dir, name)?,
                None => None,
            };
        }
        let Some(ino) = merged else {
            return Ok(FileChange::Missing);
        };
        if source != Some(ino) {
            return Ok(FileChange::Replaced);
        }
        match table.get(ino).and_then(|i| i.file.clone()) {
            None => Ok(FileChange::Unchanged),
            Some(file) => file.change(),
        }
    }

    /// The file at `path` (relative to the root), for hydration: None when it is no
    /// regular file (any more).
    pub(crate) fn file_at(&self, path: &Path) -> Result<Option<Arc<CowFile>>, Error> {
        self.check_writable()?;
        let mut ino = crate::source::ROOT;
        {
            let mut table = self.table()?;
            for name in path.iter() {
                match self.resolve(&mut table, ino, name)? {
                    Some(next) => ino = next,
                    None => return Ok(None),
                }
            }
            if self.entry(&mut table, ino)?.kind != Kind::File {
                return Ok(None);
            }
        }
        self.file_for_write(ino).map(Some)
    }

    /// The source the layer is over.
    pub(crate) fn source(&self) -> &dyn Source {
        &*self.source
    }

    /// The copy-on-write granularity.
    pub(crate) fn block_size(&self) -> u32 {
        self.block_size
    }

    /// The overlay's say on `parent/name`, without asking the source.
    fn overlay_lookup(&self, table: &InodeTable, parent: Ino, name: &OsStr) -> Result<Step, Error> {
        match table.get(parent) {
            Some(inode) if inode.kind != Kind::Dir => Err(Error::from_errno(libc::ENOTDIR)),
            Some(inode) => Ok(match &inode.dir {
                Some(dir) if dir.entries.contains_key(name) => Step::Found(dir.entries[name]),
                Some(dir) if dir.hidden.contains(name) => Step::Missing,
                _ if parent >= FIRST_CREATED => Step::Missing,
                _ => Step::AskSource,
            }),
            None if parent >= FIRST_CREATED => Err(stale(parent)),
            None => Ok(Step::AskSource),
        }
    }

    fn source_lookup(&self, parent: Ino, name: &OsStr) -> Result<Option<Ino>, Error> {
        match self.source.lookup(parent, name)? {
            Some(node) if node == 0 || node > MAX_NODE => Err(Error::io(format!(
                "{name:?} in node {parent}: node id {node} is out of range"
            ))),
            found => {
                if let (Some(journal), Some(node)) = (&self.journal, found) {
                    journal.learn(node, parent, name);
                }
                Ok(found)
            }
        }
    }

    /// The inode `parent/name` names, if any, asking the source with the table locked
    /// (for changes, which must see a stable table).
    fn resolve(
        &self,
        table: &mut InodeTable,
        parent: Ino,
        name: &OsStr,
    ) -> Result<Option<Ino>, Error> {
        match self.overlay_lookup(table, parent, name)? {
            Step::Found(ino) => Ok(Some(ino)),
            Step::Missing => Ok(None),
            Step::AskSource => self.source_lookup(parent, name),
        }
    }

    /// The table entry of `ino`, made from the source if the kernel has not looked it up.
    fn entry<'t>(&self, table: &'t mut InodeTable, ino: Ino) -> Result<&'t mut Inode, Error> {
        if table.get(ino).is_none() {
            if ino >= FIRST_CREATED {
                return Err(stale(ino));
            }
            let kind = self.source.getattr(ino)?.kind;
            table.source_entry(ino, kind);
        }
        Ok(table.get_mut(ino).expect("made above"))
    }

    /// The overlay of directory `dir`, made (and the directory pinned) on its first change.
    fn dir_mut<'t>(
        &self,
        table: &'t mut InodeTable,
        dir: Ino,
    ) -> Result<&'t mut DirOverlay, Error> {
        let inode = self.entry(table, dir)?;
        if inode.kind != Kind::Dir {
            return Err(Error::from_errno(libc::ENOTDIR));
        }
        inode.pinned = true;
        inode.mtime = Some(SystemTime::now());
        Ok(inode.dir.get_or_insert_with(DirOverlay::default))
    }

    fn add_name(
        &self,
        table: &mut InodeTable,
        dir: Ino,
        name: &OsStr,
        ino: Ino,
    ) -> Result<(), Error> {
        let overlay = self.dir_mut(table, dir)?;
        overlay.entries.insert(name.to_owned(), ino);
        self.log_name(table, dir, name, NameChange::Add(ino));
        Ok(())
    }

    /// Removes `name` from `dir`; a source directory remembers it as a whiteout.
    fn remove_name(&self, table: &mut InodeTable, dir: Ino, name: &OsStr) -> Result<(), Error> {
        let overlay = self.dir_mut(table, dir)?;
        overlay.entries.remove(name);
        let hide = dir < FIRST_CREATED;
        if hide {
            overlay.hidden.insert(name.to_owned());
        }
        self.log_name(table, dir, name, NameChange::Remove { hide });
        Ok(())
    }

    /// The block store of regular file `ino`, made on its first change.
    fn file_for_write(&self, ino: Ino) -> Result<Arc<CowFile>, Error> {
        let mut table = self.table()?;
        let inode = self.entry(&mut table, ino)?;
        if inode.kind != Kind::File {
            return Err(Error::new(
                libc::EISDIR,
                format!("inode {ino} is not a regular file"),
            ));
        }
        if let Some(file) = &inode.file {
            return Ok(file.clone());
        }
        let attr = self.source.getattr(ino)?;
        let mtime = inode.mtime.unwrap_or(attr.mtime);
        let file = Arc::new(CowFile::new(
            ino,
            Some(ino),
            attr.size,
            mtime,
            self.data_path(ino),
            self.block_size,
            self.journal.clone(),
        ));
        inode.file = Some(file.clone());
        inode.pinned = true;
        Ok(file)
    }

    /// The source's complete local copy of `ino`, if it came from the source and has one.
    fn source_copy(&self, ino: Ino) -> Option<PathBuf> {
        match ino {
            ..FIRST_CREATED => self.source.local_file(ino),
            _ => None,
        }
    }

    /// A new data file for `ino`: named by inode when throw-away; durable, by a number of
    /// its own (a source node's id may differ at the next mount).
    fn data_path(&self, ino: Ino) -> PathBuf {
        if let Some(journal) = &self.journal {
            return journal.new_data_path();
        }
        self.scratch
            .as_ref()
            .expect("writable")
            .join(format!("{ino:016x}.blocks"))
    }

    fn check_writable(&self) -> Result<(), Error> {
        if self.is_writable() {
            Ok(())
        } else {
            Err(Error::new(libc::EROFS, "mounted read-only"))
        }
    }

    fn table(&self) -> Result<MutexGuard<'_, InodeTable>, Error> {
        self.table
            .lock()
            .map_err(|_| Error::io("inode table poisoned by an earlier panic"))
    }
}

enum Step {
    Found(Ino),
    Missing,
    AskSource,
}

/// What getattr needs from the table, copied out so the source is asked unlocked.
struct Known {
    kind: Kind,
    perm: Option<u16>,
    mtime: Option<SystemTime>,
    nlink: u32,
    file: Option<Arc<CowFile>>,
    target_len: u64,
}

impl Known {
    fn of(inode: &Inode) -> Self {
        Self {
            kind: inode.kind,
            perm: inode.perm,
            mtime: inode.mtime,
            nlink: inode.nlink,
            file: inode.file.clone(),
            target_len: inode
                .target
                .as_ref()
                .map_or(0, |t| t.as_os_str().len() as u64),
        }
    }
}

fn check_name(name: &OsStr) -> Result<(), Error> {
    if name.len() > NAME_MAX {
        return Err(Error::from_errno(libc::ENAMETOOLONG));
    }
    Ok(())
}

fn not_found(parent: Ino, name: &OsStr) -> Error {
    Error::not_found(format!("{name:?} in inode {parent}: no such entry"))
}

fn exists(parent: Ino, name: &OsStr) -> Error {
    Error::new(libc::EEXIST, format!("{name:?} in inode {parent} exists"))
}

fn stale(ino: Ino) -> Error {
    Error::new(libc::ESTALE, format!("inode {ino} is gone"))
}
