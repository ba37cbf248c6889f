//! The inode table: an entry for each inode the kernel holds (with its lookup count) or
//! the copy-on-write layer changed. Source nodes keep their id as inode number and need no
//! entry until then; ids from [`FIRST_CREATED`] up are handed out to created files and
//! never reused. An entry goes when the kernel forgets it and nothing else needs it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use crate::cow::file::CowFile;
use crate::cow::journal::Record;
use crate::source::{Kind, MAX_NODE, ROOT};

/// An inode number: a source node id, or a created inode from [`FIRST_CREATED`] up.
pub(crate) type Ino = u64;

/// The first inode number of files created through the mount.
pub(crate) const FIRST_CREATED: Ino = MAX_NODE + 1;

/// What the file system knows about one inode beyond the source.
#[derive(Debug)]
pub(crate) struct Inode {
    pub(crate) kind: Kind,
    /// Lookups the kernel has not forgotten yet.
    pub(crate) lookups: u64,
    /// Names that lead here. Only tracked once pinned; a clean source node has one.
    pub(crate) nlink: u32,
    /// Holds state the source cannot give back (data, attributes, names): kept while linked.
    pub(crate) pinned: bool,
    /// Set by chmod, and always for created inodes.
    pub(crate) perm: Option<u16>,
    /// Set by a change, and always for created inodes; a `file` keeps its own.
    pub(crate) mtime: Option<SystemTime>,
    /// The written blocks of a regular file, once it is changed (created files: always).
    pub(crate) file: Option<Arc<CowFile>>,
    /// The entries of a directory, once it is changed (created directories: always).
    pub(crate) dir: Option<DirOverlay>,
    /// The target of a created symlink.
    pub(crate) target: Option<PathBuf>,
}

/// The changes to one directory's source listing.
#[derive(Debug, Default)]
pub(crate) struct DirOverlay {
    /// Names created, linked or renamed here; they hide a source entry of the same name.
    pub(crate) entries: BTreeMap<OsString, Ino>,
    /// Source entries deleted or renamed away (whiteouts).
    pub(crate) hidden: BTreeSet<OsString>,
}

impl Inode {
    fn new(kind: Kind) -> Self {
        Self {
            kind,
            lookups: 0,
            nlink: 1,
            pinned: false,
            perm: None,
            mtime: None,
            file: None,
            dir: None,
            target: None,
        }
    }

    fn unused(&self) -> bool {
        self.lookups == 0 && (!self.pinned || self.nlink == 0)
    }
}

#[derive(Debug)]
pub(crate) struct InodeTable {
    inodes: HashMap<Ino, Inode>,
    next_created: Ino,
    /// Durable layer: the changes made under the current lock, for the journal.
    pub(crate) log: Vec<Record>,
}

impl InodeTable {
    pub(crate) fn new() -> Self {
        Self {
            inodes: HashMap::new(),
            next_created: FIRST_CREATED,
            log: Vec::new(),
        }
    }

    /// The entry of `ino` as the journal rebuilds it, made if missing. Created inode
    /// numbers are handed out from past the highest one seen.
    pub(crate) fn restore(&mut self, ino: Ino, kind: Kind) -> &mut Inode {
        if ino >= self.next_created {
            self.next_created = ino.saturating_add(1);
        }
        self.inodes.entry(ino).or_insert_with(|| Inode::new(kind))
    }

    /// Drops the entry of `ino` (the journal says it is gone).
    pub(crate) fn remove(&mut self, ino: Ino) {
        if ino >= self.next_created {
            self.next_created = ino.saturating_add(1);
        }
        self.inodes.remove(&ino);
    }

    /// Every entry, in no order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Ino, &Inode)> {
        self.inodes.iter().map(|(&ino, inode)| (ino, inode))
    }

    pub(crate) fn get(&self, ino: Ino) -> Option<&Inode> {
        self.inodes.get(&ino)
    }

    pub(crate) fn get_mut(&mut self, ino: Ino) -> Option<&mut Inode> {
        self.inodes.get_mut(&ino)
    }

    /// The entry of source node `ino`, made on first use.
    pub(crate) fn source_entry(&mut self, ino: Ino, kind: Kind) -> &mut Inode {
        debug_assert!(ino < FIRST_CREATED);
        self.inodes.entry(ino).or_insert_with(|| Inode::new(kind))
    }

    /// A new created inode: pinned, one link, not yet looked up.
    pub(crate) fn create(&mut self, kind: Kind) -> (Ino, &mut Inode) {
        let ino = self.next_created;
        self.next_created += 1;
        let mut inode = Inode::new(kind);
        inode.pinned = true;
        (ino, self.inodes.entry(ino).or_insert(inode))
    }

    /// Counts a lookup the kernel made of `ino` (a lookup, or the reply to a create).
    pub(crate) fn looked_up(&mut self, ino: Ino, kind: Kind) {
        let inode = match ino {
            ..FIRST_CREATED => self.source_entry(ino, kind),
            _ => match self.inodes.get_mut(&ino) {
                Some(inode) => inode,
                None => return,
            },
        };
        inode.lookups += 1;
    }

    /// The kernel dropped `n` lookups of `ino`.
    pub(crate) fn forget(&mut self, ino: Ino, n: u64) {
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.lookups = inode.lookups.saturating_sub(n);
            self.collect(ino);
        }
    }

    /// Drops the entry of `ino` if neither the kernel nor a name needs it. A clean source
    /// node can always be rebuilt from the source; a dropped file takes its scratch file along.
    pub(crate) fn collect(&mut self, ino: Ino) {
        if ino != ROOT && self.inodes.get(&ino).is_some_and(Inode::unused) {
            self.inodes.remove(&ino);
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inodes.len()
    }
}
