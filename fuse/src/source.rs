//! The read-only tree a mount serves: the [`Source`] trait and the plain types it speaks.
//! Node ids are the source's own and double as inode numbers, so they must be stable for
//! the life of the mount and at most [`MAX_NODE`]; ids above it belong to files created
//! through the mount. A directory may change what it lists (see [`Source::entry_ttl`]),
//! but a node id once handed out keeps naming the same node.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::Error;

/// A node of the source tree; stable for the life of the mount.
pub type NodeId = u64;

/// The root directory's node id (FUSE's root inode number).
pub const ROOT: NodeId = 1;

/// The largest node id a source may use: higher inode numbers are handed out to files
/// created through the mount.
pub const MAX_NODE: NodeId = (1 << 63) - 1;

/// What a node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symbolic link.
    Symlink,
}

/// A node's attributes. Ownership is not here: the mount reports one owner for everything.
#[derive(Clone, Debug)]
pub struct Attr {
    /// What the node is.
    pub kind: Kind,
    /// Length in bytes (files), or of the target (symlinks).
    pub size: u64,
    /// Permission bits, e.g. 0o600 or 0o700.
    pub perm: u16,
    /// Modification time.
    pub mtime: SystemTime,
}

/// One entry of a directory listing.
#[derive(Clone, Debug)]
pub struct DirEntry {
    /// The entry's name (one path component).
    pub name: OsString,
    /// The node it names.
    pub node: NodeId,
    /// What the node is.
    pub kind: Kind,
}

/// A read-only tree. Implementations must be cheap to call from several threads at once.
///
/// The tree must not contain hard links: a node has exactly one name. Errors carry the
/// errno the caller of the file system will see (EIO for back-end failures).
pub trait Source: Send + Sync + 'static {
    /// The child `name` of directory `parent`, if there is one.
    fn lookup(&self, parent: NodeId, name: &OsStr) -> Result<Option<NodeId>, Error>;
    /// The attributes of `node`.
    fn getattr(&self, node: NodeId) -> Result<Attr, Error>;
    /// Every entry of directory `node`, without `.` and `..`.
    fn readdir(&self, node: NodeId) -> Result<Vec<DirEntry>, Error>;
    /// The target of symlink `node`.
    fn readlink(&self, node: NodeId) -> Result<PathBuf, Error>;
    /// Read up to `size` bytes at `offset`; shorter only at end of file.
    fn read(&self, node: NodeId, offset: u64, size: u32) -> Result<Vec<u8>, Error>;
    /// How long the kernel may keep the names found in directory `dir`, and what they lead
    /// to. `None`, the default: as long as it likes, for a directory that never changes.
    /// A directory whose entries change while mounted answers a short time; a name looked up
    /// there is asked again once it has passed (listings are never cached).
    fn entry_ttl(&self, dir: NodeId) -> Option<Duration> {
        let _ = dir;
        None
    }
    /// A local file holding every byte of file `node`, checked, if the source has one (a
    /// copy on scratch disk, say). The default: none. A mount with
    /// [`MountOptions::passthrough`](crate::MountOptions::passthrough) opens it with FUSE
    /// passthrough, so the kernel serves reads from it without asking the source. A
    /// writable mount adopts it as the file's copy-on-write copy, and writes land in it: it
    /// renames the file into its scratch directory (which must be on the same file system)
    /// and never asks again, so the source must not use the path afterwards.
    fn local_file(&self, node: NodeId) -> Option<PathBuf> {
        let _ = node;
        None
    }
}
