//! The mount adapter: serves backups from the repository as a `pgsnapfs_fuse::Source`.
//!
//! This is the one place where the store, PostgreSQL and the FUSE crate meet. Two trees:
//! the catalogue (`backups/<id>/`, `backups/latest/`, `wal/<timeline>/`), and the view of one
//! backup prepared for a server to start on (recovery settings, `pg_wal` on scratch,
//! tablespaces as links). Nodes are created lazily as directories are first listed, so
//! memory grows with what is looked at. File content comes from the store's `FileReader`
//! (read-ahead, read-around, verification; no cache of decoded chunks, the kernel keeps the
//! pages): this module only maps nodes to files.
//!
//! The catalogue follows the repository: its own directories (`backups/`, `wal/` and the
//! timelines below) are listed again when a lookup or listing finds them older than
//! [`CATALOGUE_REFRESH`], and tell the kernel to keep their names no longer than that. A
//! backup's tree never changes, so everything below `backups/<id>/` is cached for good.

use crate::archive;
use crate::catalog::{wal, Backups, Snapshot};
use crate::store::reader::{File, FileReader};
use crate::store::tree::{BlobRef, NodeKind};
use crate::store::{Repository, StoreError};
use pgsnapfs_fuse::{Attr, DirEntry, Error as FsError, Kind, NodeId, Source};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Where the view keeps tablespace contents; `pg_tblspc/<oid>` links point here, because
/// PostgreSQL insists that entries of pg_tblspc are symbolic links.
pub const TABLESPACES_DIR: &str = ".pgsnapfs-tablespaces";

/// Changes a view makes to the root of a backup's tree.
#[derive(Default)]
pub struct ViewChanges {
    /// Files added or replaced, with their content.
    pub files: Vec<(String, Vec<u8>)>,
    /// Symbolic links added or replacing entries.
    pub symlinks: Vec<(String, PathBuf)>,
    /// Entries hidden.
    pub hide: Vec<String>,
    /// The mount point, to make tablespace links absolute; None leaves tablespaces as
    /// directories.
    pub mountpoint: Option<PathBuf>,
}

enum Content {
    Chunks(File),
    Bytes(Arc<Vec<u8>>),
    /// An archived WAL file: a sealed object, served whole from the cache.
    Sealed {
        key: String,
        len: OnceLock<u64>,
    },
}

enum Data {
    Dir {
        tree: Option<(BlobRef, u32)>,
        children: OnceLock<BTreeMap<String, NodeId>>,
        tblspc: bool,
    },
    File {
        size: u64,
        content: Content,
    },
    Symlink(PathBuf),
    /// A directory of the catalogue whose entries follow the repository (`Catalogue`).
    Live,
}

struct NodeData {
    mode: u16,
    mtime: i64,
    data: Data,
}

/// How old a listing of the catalogue's directories may get before it is taken again.
pub const CATALOGUE_REFRESH: Duration = Duration::from_secs(2);

/// The catalogue's directories that follow the repository, and their latest listing.
struct Catalogue {
    backups: NodeId,
    wal: NodeId,
    listing: Mutex<Listing>,
}

struct Listing {
    taken: Instant,
    /// The entries of each `Data::Live` directory.
    dirs: HashMap<NodeId, Arc<BTreeMap<String, NodeId>>>,
    /// What was listed, by a name that stays the same across listings (a backup id, a WAL
    /// key, a directory's path), so an entry keeps its node while it stays in the repository.
    known: HashMap<String, Known>,
    /// Backup records that could not be read: tried again at each listing, reported once.
    unreadable: HashSet<String>,
}

#[derive(Clone)]
struct Known {
    node: NodeId,
    /// For backups: to find the newest one without reading its record again.
    snapshot: Option<Arc<Snapshot>>,
}

/// A tree of backups served to the FUSE layer.
pub struct SnapSource {
    repo: Arc<Repository>,
    nodes: RwLock<Vec<Arc<NodeData>>>,
    reader: FileReader,
    tablespace_base: Option<PathBuf>,
    /// Set for the catalogue.
    catalogue: OnceLock<Catalogue>,
    /// Files copied to local disk (`mount --hydrate`).
    local: Arc<crate::hydrate::LocalCopies>,
}

/// Not logged here: the FUSE layer logs every EIO once, with the operation, and the store's
/// message names the object.
fn eio(e: StoreError) -> FsError {
    FsError::io(e.to_string())
}

impl SnapSource {
    fn new(
        repo: Arc<Repository>,
        cache_bytes: usize,
        tablespace_base: Option<PathBuf>,
    ) -> SnapSource {
        SnapSource {
            repo: repo.clone(),
            nodes: RwLock::new(Vec::new()),
            reader: FileReader::new(repo.clone(), cache_bytes),
            tablespace_base,
            catalogue: OnceLock::new(),
            local: Arc::default(),
        }
    }

    // The node table only grows: a request that panicked (the FUSE layer serves on) cannot
    // have left it torn, so a poisoned lock is used as it is.
    fn add(&self, node: NodeData) -> NodeId {
        let mut nodes = self.nodes.write().unwrap_or_else(PoisonError::into_inner);
        nodes.push(Arc::new(node));
        nodes.len() as NodeId
    }

    fn node(&self, id: NodeId) -> Result<Arc<NodeData>, FsError> {
        let nodes = self.nodes.read().unwrap_or_else(PoisonError::into_inner);
        id.checked_sub(1)
            .and_then(|i| nodes.get(i as usize))
            .cloned()
            .ok_or_else(|| FsError::not_found(format!("no node {id}")))
    }

    /// Node 1 must be the root, but its children are made first: reserve it, fill it later.
    fn reserve_root(&self) {
        let root = self.add(NodeData {
            mode: 0o700,
            mtime: now(),
            data: Data::Dir {
                tree: None,
                children: OnceLock::new(),
                tblspc: false,
            },
        });
        debug_assert_eq!(root, pgsnapfs_fuse::ROOT);
    }

    fn set_root(&self, mode: u32, mtime: i64, children: BTreeMap<String, NodeId>) {
        let cell = OnceLock::new();
        let _ = cell.set(children);
        self.nodes.write().unwrap_or_else(PoisonError::into_inner)[0] = Arc::new(NodeData {
            mode: mode as u16,
            mtime,
            data: Data::Dir {
                tree: None,
                children: cell,
                tblspc: false,
            },
        });
    }

    fn virtual_dir(&self, children: BTreeMap<String, NodeId>) -> NodeId {
        let cell = OnceLock::new();
        let _ = cell.set(children);
        self.add(NodeData {
            mode: 0o700,
            mtime: now(),
            data: Data::Dir {
                tree: None,
                children: cell,
                tblspc: false,
            },
        })
    }

    fn tree_dir(
        &self,
        tree: BlobRef,
        chunk_size: u32,
        mode: u32,
        mtime: i64,
        tblspc: bool,
    ) -> NodeId {
        self.add(NodeData {
            mode: mode as u16,
            mtime,
            data: Data::Dir {
                tree: Some((tree, chunk_size)),
                children: OnceLock::new(),
                tblspc,
            },
        })
    }

    fn bytes_file(&self, data: Vec<u8>, mtime: i64) -> NodeId {
        self.add(NodeData {
            mode: 0o600,
            mtime,
            data: Data::File {
                size: data.len() as u64,
                content: Content::Bytes(Arc::new(data)),
            },
        })
    }

    fn symlink(&self, target: PathBuf) -> NodeId {
        self.add(NodeData {
            mode: 0o777,
            mtime: now(),
            data: Data::Symlink(target),
        })
    }

    /// The read-only catalogue of every backup and all archived WAL.
    pub fn catalogue(repo: Arc<Repository>, cache_bytes: usize) -> Result<SnapSource, StoreError> {
        let src = SnapSource::new(repo, cache_bytes, None);
        src.reserve_root();
        let live = || {
            src.add(NodeData {
                mode: 0o700,
                mtime: now(),
                data: Data::Live,
            })
        };
        let (backups, wal) = (live(), live());
        let mut listing = Listing {
            taken: Instant::now(),
            dirs: HashMap::new(),
            known: HashMap::new(),
            unreadable: HashSet::new(),
        };
        // The first listing fails the mount, rather than showing an empty catalogue.
        listing.dirs = src.list_catalogue(backups, wal, &mut listing)?;
        let catalogue = Catalogue {
            backups,
            wal,
            listing: Mutex::new(listing),
        };
        let _ = src.catalogue.set(catalogue);
        let root = BTreeMap::from([("backups".to_string(), backups), ("wal".to_string(), wal)]);
        src.set_root(0o700, now(), root);
        Ok(src)
    }

    /// The entries of catalogue directory `id`, listed again if the listing is too old.
    fn live_children(&self, id: NodeId) -> Result<Arc<BTreeMap<String, NodeId>>, FsError> {
        let cat = self
            .catalogue
            .get()
            .ok_or_else(|| FsError::io(format!("node {id} is not in a catalogue")))?;
        let mut listing = cat.listing.lock().unwrap_or_else(|e| e.into_inner());
        if listing.taken.elapsed() >= CATALOGUE_REFRESH {
            // Failed listings are retried after the same delay, serving the last one meanwhile.
            listing.taken = Instant::now();
            match self.list_catalogue(cat.backups, cat.wal, &mut listing) {
                Ok(dirs) => listing.dirs = dirs,
                Err(e) => tracing::warn!("cannot list the repository again: {e}"),
            }
        }
        Ok(listing.dirs.get(&id).cloned().unwrap_or_default())
    }

    /// Lists the repository's backups and archived WAL as the entries of the catalogue's
    /// directories. Entries the last listing knew keep their node; its `known` is left
    /// holding just what this listing found, or untouched if listing fails.
    fn list_catalogue(
        &self,
        backups_dir: NodeId,
        wal_dir: NodeId,
        last: &mut Listing,
    ) -> Result<HashMap<NodeId, Arc<BTreeMap<String, NodeId>>>, StoreError> {
        let known = &last.known;
        let mut unreadable = HashSet::new();
        let mut seen: HashMap<String, Known> = HashMap::new();
        let mut node = |name: String, make: &dyn Fn() -> Known| -> Known {
            let k = known.get(&name).cloned().unwrap_or_else(make);
            seen.insert(name, k.clone());
            k
        };
        let tree =
            |s: &Snapshot| self.tree_dir(s.root, s.chunk_size, s.root_mode, s.root_mtime, false);
        let live = || Known {
            node: self.add(NodeData {
                mode: 0o700,
                mtime: now(),
                data: Data::Live,
            }),
            snapshot: None,
        };
        let mut dirs = HashMap::new();

        let mut backups = BTreeMap::new();
        let mut newest: Option<Arc<Snapshot>> = None;
        for id in self.repo.snapshot_ids()? {
            let snapshot = match known.get(&format!("backups/{id}")) {
                Some(k) => k.snapshot.clone(),
                None => match self.repo.load_snapshot(&id) {
                    Ok(s) => Some(Arc::new(s)),
                    Err(e) => {
                        if !last.unreadable.contains(&id) {
                            tracing::warn!("not shown: {e}");
                        }
                        unreadable.insert(id.clone());
                        None
                    }
                },
            };
            let Some(snap) = snapshot else { continue };
            let k = node(format!("backups/{id}"), &|| Known {
                node: tree(&snap),
                snapshot: Some(snap.clone()),
            });
            backups.insert(id, k.node);
            if newest
                .as_ref()
                .is_none_or(|n| n.stop_time <= snap.stop_time)
            {
                newest = Some(snap);
            }
        }
        // A directory, not a link, so `cp -r backups/latest` copies the backup itself.
        if let Some(s) = newest {
            let k = node(format!("latest/{}", s.id), &|| Known {
                node: tree(&s),
                snapshot: None,
            });
            backups.insert("latest".into(), k.node);
        }
        dirs.insert(backups_dir, Arc::new(backups));

        let systems = archive::systems(&self.repo)?;
        let mut wal = BTreeMap::new();
        for system in &systems {
            let sysid = system.sysid();
            let mut by_tli: BTreeMap<String, BTreeMap<String, NodeId>> = BTreeMap::new();
            for file in wal::files(&self.repo, sysid)? {
                let k = node(file.key.clone(), &|| Known {
                    node: self.sealed_file(&file.key),
                    snapshot: None,
                });
                by_tli
                    .entry(file.timeline_dir)
                    .or_default()
                    .insert(file.name, k.node);
            }
            let mut timelines = BTreeMap::new();
            for (tli, files) in by_tli {
                let dir = node(format!("wal/{sysid}/{tli}"), &live).node;
                dirs.insert(dir, Arc::new(files));
                timelines.insert(tli, dir);
            }
            if systems.len() == 1 {
                wal = timelines;
            } else {
                let dir = node(format!("wal/{sysid}"), &live).node;
                dirs.insert(dir, Arc::new(timelines));
                wal.insert(system.system_identifier.to_string(), dir);
            }
        }
        dirs.insert(wal_dir, Arc::new(wal));
        last.known = seen;
        last.unreadable = unreadable;
        Ok(dirs)
    }

    fn sealed_file(&self, key: &str) -> NodeId {
        self.add(NodeData {
            mode: 0o600,
            mtime: 0,
            data: Data::File {
                size: 0,
                content: Content::Sealed {
                    key: key.to_string(),
                    len: OnceLock::new(),
                },
            },
        })
    }

    /// A backup's data directory with `changes` applied to its root, for a server to start on.
    pub fn view(
        repo: Arc<Repository>,
        snap: &Snapshot,
        changes: ViewChanges,
        cache_bytes: usize,
    ) -> Result<SnapSource, StoreError> {
        let base = changes.mountpoint.as_ref().map(|m| m.join(TABLESPACES_DIR));
        let src = SnapSource::new(repo.clone(), cache_bytes, base.clone());
        src.reserve_root();
        let mut children = src.expand(&snap.root, snap.chunk_size, false)?;
        for name in &changes.hide {
            children.remove(name);
        }
        for (name, data) in changes.files {
            children.insert(name, src.bytes_file(data, now()));
        }
        for (name, target) in changes.symlinks {
            children.insert(name, src.symlink(target));
        }
        if base.is_some() {
            if let Some(&tblspc) = children.get("pg_tblspc") {
                let spaces = src.tablespace_trees(tblspc)?;
                if !spaces.is_empty() {
                    children.insert(TABLESPACES_DIR.into(), src.virtual_dir(spaces));
                }
            }
        }
        src.set_root(snap.root_mode, snap.root_mtime, children);
        Ok(src)
    }

    /// The tablespace directories under pg_tblspc, as nodes of their own.
    fn tablespace_trees(&self, tblspc: NodeId) -> Result<BTreeMap<String, NodeId>, StoreError> {
        let node = self
            .node(tblspc)
            .map_err(|e| StoreError::corrupt("pg_tblspc", e.to_string()))?;
        let Data::Dir {
            tree: Some((tree, chunk_size)),
            ..
        } = &node.data
        else {
            return Ok(BTreeMap::new());
        };
        let mut out = BTreeMap::new();
        for entry in self.repo.load_dir(tree)?.entries {
            if let NodeKind::Dir { tree } = entry.kind {
                out.insert(
                    entry.name,
                    self.tree_dir(tree, *chunk_size, entry.mode, entry.mtime, false),
                );
            }
        }
        Ok(out)
    }

    /// Creates nodes for the entries of a tree blob.
    fn expand(
        &self,
        tree: &BlobRef,
        chunk_size: u32,
        tblspc: bool,
    ) -> Result<BTreeMap<String, NodeId>, StoreError> {
        let dir = self.repo.load_dir(tree)?;
        let mut out = BTreeMap::new();
        for entry in dir.entries {
            let id = match entry.kind {
                NodeKind::Dir { .. } if tblspc && self.tablespace_base.is_some() => {
                    let base = self.tablespace_base.as_ref().expect("checked");
                    self.symlink(base.join(&entry.name))
                }
                NodeKind::Dir { tree } => self.tree_dir(
                    tree,
                    chunk_size,
                    entry.mode,
                    entry.mtime,
                    entry.name == "pg_tblspc",
                ),
                NodeKind::File { size, lists } => self.add(NodeData {
                    mode: entry.mode as u16,
                    mtime: entry.mtime,
                    data: Data::File {
                        size,
                        content: Content::Chunks(File::new(size, chunk_size, lists)),
                    },
                }),
                NodeKind::Symlink { target } => self.symlink(PathBuf::from(target)),
            };
            out.insert(entry.name, id);
        }
        Ok(out)
    }

    fn children<'a>(&self, node: &'a NodeData) -> Result<&'a BTreeMap<String, NodeId>, FsError> {
        let Data::Dir {
            tree,
            children,
            tblspc,
        } = &node.data
        else {
            return Err(FsError::new(libc::ENOTDIR, "not a directory"));
        };
        if let Some(c) = children.get() {
            return Ok(c);
        }
        let (tree, chunk_size) = tree
            .as_ref()
            .expect("virtual directories are filled when made");
        let expanded = self.expand(tree, *chunk_size, *tblspc).map_err(eio)?;
        // A concurrent expansion may have won; its nodes are equivalent, ours go unused.
        Ok(children.get_or_init(|| expanded))
    }

    /// Where hydration records the files it copied to local disk.
    pub fn local_copies(&self) -> Arc<crate::hydrate::LocalCopies> {
        self.local.clone()
    }

    fn sealed(&self, key: &str) -> Result<Arc<Vec<u8>>, FsError> {
        self.reader
            .read_sealed(key)
            .map_err(|e| FsError::io(e.to_string()))
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn kind_of(data: &Data) -> Kind {
    match data {
        Data::Dir { .. } | Data::Live => Kind::Dir,
        Data::File { .. } => Kind::File,
        Data::Symlink(_) => Kind::Symlink,
    }
}

impl Source for SnapSource {
    fn lookup(&self, parent: NodeId, name: &OsStr) -> Result<Option<NodeId>, FsError> {
        let node = self.node(parent)?;
        let Some(name) = name.to_str() else {
            return Ok(None);
        };
        if let Data::Live = node.data {
            return Ok(self.live_children(parent)?.get(name).copied());
        }
        Ok(self.children(&node)?.get(name).copied())
    }

    fn getattr(&self, id: NodeId) -> Result<Attr, FsError> {
        let node = self.node(id)?;
        let size = match &node.data {
            Data::Dir { .. } | Data::Live => 4096,
            Data::File {
                size,
                content: Content::Sealed { key, len },
            } => match len.get() {
                Some(l) => *l,
                None => {
                    let l = self.repo.sealed_header(key).map_err(eio)?.len;
                    *len.get_or_init(|| l)
                }
            }
            .max(*size),
            Data::File { size, .. } => *size,
            Data::Symlink(t) => t.as_os_str().len() as u64,
        };
        Ok(Attr {
            kind: kind_of(&node.data),
            size,
            perm: node.mode & 0o7777,
            mtime: UNIX_EPOCH + Duration::from_secs(node.mtime.max(0) as u64),
        })
    }

    fn readdir(&self, id: NodeId) -> Result<Vec<DirEntry>, FsError> {
        let node = self.node(id)?;
        let live;
        let children = match node.data {
            Data::Live => {
                live = self.live_children(id)?;
                &*live
            }
            _ => self.children(&node)?,
        };
        children
            .iter()
            .map(|(name, &child)| {
                Ok(DirEntry {
                    name: name.into(),
                    node: child,
                    kind: kind_of(&self.node(child)?.data),
                })
            })
            .collect()
    }

    fn entry_ttl(&self, dir: NodeId) -> Option<Duration> {
        // Views never change: no lookup of theirs pays for the question.
        self.catalogue.get()?;
        let node = self.node(dir).ok()?;
        matches!(node.data, Data::Live).then_some(CATALOGUE_REFRESH)
    }

    fn local_file(&self, id: NodeId) -> Option<PathBuf> {
        self.local.get(id)
    }

    fn readlink(&self, id: NodeId) -> Result<PathBuf, FsError> {
        match &self.node(id)?.data {
            Data::Symlink(t) => Ok(t.clone()),
            _ => Err(FsError::new(libc::EINVAL, "not a symbolic link")),
        }
    }

    fn read(&self, id: NodeId, offset: u64, size: u32) -> Result<Vec<u8>, FsError> {
        let node = self.node(id)?;
        let Data::File { content, .. } = &node.data else {
            return Err(FsError::new(libc::EISDIR, "not a file"));
        };
        let whole = |data: &[u8]| {
            let start = (offset as usize).min(data.len());
            let end = (start + size as usize).min(data.len());
            data[start..end].to_vec()
        };
        match content {
            Content::Bytes(b) => Ok(whole(b)),
            Content::Sealed { key, .. } => Ok(whole(&self.sealed(key)?)),
            Content::Chunks(file) => self
                .reader
                .read(file, offset, size)
                .map_err(|e| FsError::io(e.to_string())),
        }
    }
}
