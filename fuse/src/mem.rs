//! [`MemSource`]: a [`Source`] held in memory, for tests and for mounting an empty
//! writable tree. It counts reads so tests can check what the file system fetched.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use crate::source::{Attr, DirEntry, Kind, NodeId, Source, ROOT};
use crate::Error;

/// An in-memory tree. Build it with the `add_*` methods, then share it as a [`Source`].
#[derive(Debug)]
pub struct MemSource {
    /// Indexed by node id - 1.
    nodes: Vec<Node>,
    reads: AtomicU64,
}

#[derive(Debug)]
struct Node {
    attr: Attr,
    children: BTreeMap<OsString, NodeId>,
    data: Vec<u8>,
    target: PathBuf,
    local: Option<PathBuf>,
}

impl MemSource {
    /// An empty tree whose root directory has permissions `root_perm`.
    pub fn new(root_perm: u16) -> Self {
        let root = Node::new(Kind::Dir, 0, root_perm);
        Self {
            nodes: vec![root],
            reads: AtomicU64::new(0),
        }
    }

    /// Adds a directory. Missing parents are created with mode 0o700.
    ///
    /// # Panics
    /// If `path` exists or goes through a non-directory.
    pub fn add_dir(&mut self, path: impl AsRef<Path>, perm: u16) -> NodeId {
        self.insert(path.as_ref(), Node::new(Kind::Dir, 0, perm))
    }

    /// Adds a regular file holding `data`. Missing parents are created with mode 0o700.
    ///
    /// # Panics
    /// As [`MemSource::add_dir`].
    pub fn add_file(
        &mut self,
        path: impl AsRef<Path>,
        data: impl Into<Vec<u8>>,
        perm: u16,
    ) -> NodeId {
        let data = data.into();
        let mut node = Node::new(Kind::File, data.len() as u64, perm);
        node.data = data;
        self.insert(path.as_ref(), node)
    }

    /// Adds a symbolic link to `target`. Missing parents are created with mode 0o700.
    ///
    /// # Panics
    /// As [`MemSource::add_dir`].
    pub fn add_symlink(&mut self, path: impl AsRef<Path>, target: impl Into<PathBuf>) -> NodeId {
        let target = target.into();
        let mut node = Node::new(Kind::Symlink, target.as_os_str().len() as u64, 0o777);
        node.target = target;
        self.insert(path.as_ref(), node)
    }

    /// Says that `path` holds the full content of file `node` ([`Source::local_file`]).
    pub fn set_local(&mut self, node: NodeId, path: impl Into<PathBuf>) {
        self.nodes[node as usize - 1].local = Some(path.into());
    }

    /// How many times [`Source::read`] was called.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    fn insert(&mut self, path: &Path, node: Node) -> NodeId {
        let names: Vec<&OsStr> = path
            .components()
            .filter_map(|c| match c {
                Component::Normal(name) => Some(name),
                _ => None,
            })
            .collect();
        let (last, parents) = names.split_last().expect("path names no file");
        let mut dir = ROOT;
        for name in parents {
            dir = match self.node(dir).children.get(*name) {
                Some(&child) => child,
                None => self.push(dir, name, Node::new(Kind::Dir, 0, 0o700)),
            };
            assert_eq!(
                self.node(dir).attr.kind,
                Kind::Dir,
                "{path:?} goes through a non-directory"
            );
        }
        assert!(
            !self.node(dir).children.contains_key(*last),
            "{path:?} exists"
        );
        self.push(dir, last, node)
    }

    fn push(&mut self, parent: NodeId, name: &OsStr, node: Node) -> NodeId {
        self.nodes.push(node);
        let id = self.nodes.len() as NodeId;
        self.nodes[parent as usize - 1]
            .children
            .insert(name.to_owned(), id);
        id
    }

    fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id as usize - 1]
    }

    fn get(&self, id: NodeId) -> Result<&Node, Error> {
        let index = id
            .checked_sub(1)
            .ok_or_else(|| Error::not_found("node 0"))?;
        self.nodes
            .get(index as usize)
            .ok_or_else(|| Error::not_found(format!("no node {id}")))
    }

    fn get_kind(&self, id: NodeId, kind: Kind) -> Result<&Node, Error> {
        let node = self.get(id)?;
        if node.attr.kind == kind {
            Ok(node)
        } else {
            Err(Error::new(
                libc::EINVAL,
                format!("node {id} is a {:?}", node.attr.kind),
            ))
        }
    }
}

impl Node {
    fn new(kind: Kind, size: u64, perm: u16) -> Self {
        Self {
            attr: Attr {
                kind,
                size,
                perm,
                mtime: SystemTime::now(),
            },
            children: BTreeMap::new(),
            data: Vec::new(),
            target: PathBuf::new(),
            local: None,
        }
    }
}

impl Source for MemSource {
    fn lookup(&self, parent: NodeId, name: &OsStr) -> Result<Option<NodeId>, Error> {
        Ok(self
            .get_kind(parent, Kind::Dir)?
            .children
            .get(name)
            .copied())
    }

    fn getattr(&self, node: NodeId) -> Result<Attr, Error> {
        Ok(self.get(node)?.attr.clone())
    }

    fn readdir(&self, node: NodeId) -> Result<Vec<DirEntry>, Error> {
        let dir = self.get_kind(node, Kind::Dir)?;
        Ok(dir
            .children
            .iter()
            .map(|(name, &child)| DirEntry {
                name: name.clone(),
                node: child,
                kind: self.node(child).attr.kind,
            })
            .collect())
    }

    fn readlink(&self, node: NodeId) -> Result<PathBuf, Error> {
        Ok(self.get_kind(node, Kind::Symlink)?.target.clone())
    }

    fn read(&self, node: NodeId, offset: u64, size: u32) -> Result<Vec<u8>, Error> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        let data = &self.get_kind(node, Kind::File)?.data;
        let start = offset.min(data.len() as u64) as usize;
        let end = offset
            .saturating_add(u64::from(size))
            .min(data.len() as u64) as usize;
        Ok(data[start..end].to_vec())
    }

    fn local_file(&self, node: NodeId) -> Option<PathBuf> {
        self.get(node).ok()?.local.clone()
    }
}
