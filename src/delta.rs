//! `restore --delta`: brings an existing data directory (a failed-over old primary, a standby
//! that fell behind) to a backup's state, writing only the chunks whose content differs.
//!
//! Each file on disk is read chunk by chunk and hashed as the repository names chunks; only a
//! chunk whose id differs from the backup's is fetched and written. Entries the backup lacks
//! are removed, entries of the wrong kind replaced, modes set as backed up and ownership
//! given to the data directory's owner. The recovery settings are then written as a plain
//! restore writes them (`restore::settle`).
//!
//! Crash safety: first `global/pg_control` is renamed to `global/pg_control.pgsnapfs-delta`,
//! so a directory half brought over cannot be started (PostgreSQL refuses to start without
//! pg_control) yet still says which cluster it holds; the backup's pg_control is put in
//! place last, after everything else is synced. A rerun after a kill compares again and
//! completes.

use crate::error::{io, Error, Result};
use crate::pg::control::ControlData;
use crate::pitr::Plan;
use crate::restore::{self, in_pool, lock, mkdir, RestoreOptions, Restored};
use crate::store::backend::killpoint;
use crate::store::tree::{BlobRef, Chunk, Node, NodeKind, LIST_FANOUT};
use crate::store::{Repository, StoreError};
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

const PG_CONTROL: &str = "global/pg_control";
/// Where pg_control waits while a delta restore runs.
const SET_ASIDE: &str = "global/pg_control.pgsnapfs-delta";
/// Chunks compared, then fetched, at a time (8 MiB of 64 KiB chunks).
const BATCH: usize = 128;

/// What a delta restore compared, wrote and removed.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct DeltaCounts {
    /// Bytes read from disk and hashed.
    pub bytes_compared: u64,
    /// Bytes written (chunks that differed or were missing).
    pub bytes_written: u64,
    /// Files with at least one chunk written, created, or truncated.
    pub files_written: u64,
    /// Files (and links) removed: the backup lacks them, or holds another kind of entry there.
    pub files_removed: u64,
}

/// A delta restore's result: what a plain restore reports, and the counts.
pub struct DeltaRestored {
    /// As a plain restore reports it.
    pub restored: Restored,
    /// What was compared, written and removed.
    pub counts: DeltaCounts,
}

/// What one name of a directory is on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
enum OnDisk {
    Dir,
    File,
    Link(PathBuf),
    /// A socket, fifo or device: never in a backup.
    Other,
}

/// What to do with one name of a directory: decided from the backup and the disk alone.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// The backup lacks it.
    Remove,
    /// Nothing differs (a link to the same target).
    Keep,
    /// Bring to the backup's node, after removing what is there if `clear`.
    Sync { clear: bool },
}

/// The steps for one directory, by name: every name of the backup's `nodes` and of `disk`.
fn reconcile(nodes: &[Node], disk: &BTreeMap<String, OnDisk>) -> BTreeMap<String, Step> {
    let mut steps: BTreeMap<String, Step> = disk
        .keys()
        .map(|name| (name.clone(), Step::Remove))
        .collect();
    for node in nodes {
        let step = match (&node.kind, disk.get(&node.name)) {
            (_, None) => Step::Sync { clear: false },
            (NodeKind::Dir { .. }, Some(OnDisk::Dir))
            | (NodeKind::File { .. }, Some(OnDisk::File)) => Step::Sync { clear: false },
            (NodeKind::Symlink { target }, Some(OnDisk::Link(now))) if Path::new(target) == now => {
                Step::Keep
            }
            _ => Step::Sync { clear: true },
        };
        steps.insert(node.name.clone(), step);
    }
    steps
}

/// The owner the data directory's entries get: its top directory's.
#[derive(Debug, Clone, Copy)]
struct Owner {
    uid: u32,
    gid: u32,
}

impl Owner {
    /// Gives `path` (not following a link) to the owner, if it is not already theirs.
    fn claim(&self, path: &Path, meta: &fs::Metadata) -> Result<()> {
        if meta.uid() == self.uid && meta.gid() == self.gid {
            return Ok(());
        }
        std::os::unix::fs::lchown(path, Some(self.uid), Some(self.gid))
            .map_err(io(format!("chown {}", path.display())))
    }
}

/// The backup's pg_control, written last.
struct Control {
    path: PathBuf,
    size: u64,
    mode: u32,
    lists: Vec<BlobRef>,
}

/// A file being brought to the backup's content: opened, with mode, owner and length set, by
/// the walk; its chunk lists are compared by the pool, one job each, so the segments of a
/// large relation are compared on every core.
struct Target {
    path: PathBuf,
    file: fs::File,
    /// Its length was changed.
    resized: bool,
    /// A chunk was written.
    written: AtomicBool,
    /// Jobs not finished yet.
    left: AtomicUsize,
}

/// One chunk list of a file, starting at `offset`.
struct ListJob {
    target: Arc<Target>,
    offset: u64,
    list: BlobRef,
}

/// Brings `opts.to` to the plan's backup in place, then writes the recovery settings, as a
/// plain restore does. `force` accepts a directory of another cluster (or none).
pub fn run(
    repo: &Repository,
    plan: &Plan,
    opts: &RestoreOptions,
    force: bool,
) -> Result<DeltaRestored> {
    let snap = &plan.snapshot;
    refuse_running(&opts.to)?;
    let sysid = snap.system_identifier.get();
    match (held_cluster(&opts.to)?, force) {
        (Held::Empty, _) | (_, true) => {}
        (Held::Cluster(id), false) if id == sysid => {}
        (held, false) => {
            return Err(Error::BadInput(format!(
                "{} {}, not the cluster of backup {} (system identifier {sysid}): a delta \
                 restore would replace it; check the directory, or give --force to replace it",
                opts.to.display(),
                held.describe(),
                snap.id
            )))
        }
    }
    let spaces = restore::locations(snap, opts);
    restore::refuse_shared_locations(&spaces)?;
    refuse_foreign_tablespaces(&opts.to, &spaces)?;
    if let Some(parent) = opts.to.parent() {
        fs::create_dir_all(parent).map_err(io(format!("create {}", parent.display())))?;
    }
    mkdir(&opts.to, 0o700)?;
    let top = fs::metadata(&opts.to).map_err(io(format!("stat {}", opts.to.display())))?;
    let owner = Owner {
        uid: top.uid(),
        gid: top.gid(),
    };
    set_aside_pg_control(&opts.to)?;

    let counts = Mutex::new(DeltaCounts::default());
    let totals = Mutex::new((0u64, 0u64));
    let control: Mutex<Option<Control>> = Mutex::new(None);
    let walker = Walker {
        repo,
        spaces: &spaces,
        owner,
        chunk_size: u64::from(snap.chunk_size),
        counts: &counts,
        totals: &totals,
        control: &control,
    };
    in_pool(
        opts.threads,
        &|job: ListJob| sync_list(repo, &job, &counts, &*opts.progress),
        |tx| walker.dir(&snap.root, &opts.to, "", tx),
    )?;
    let (rewritten, archiving) = restore::settle(opts, &spaces)?;
    // Written by this process: the owner's, like the rest.
    for rel in rewritten
        .iter()
        .map(|r| r.path.as_str())
        .chain(["recovery.signal"])
    {
        walker.claim(&opts.to.join(rel))?;
    }
    let control = control.into_inner().unwrap_or_else(|e| e.into_inner());
    let Some(control) = control else {
        let key = crate::catalog::keys::snapshot(&snap.id);
        return Err(StoreError::corrupt(key, format!("the backup holds no {PG_CONTROL}")).into());
    };
    put_pg_control(repo, &opts.to, &control, owner)?;
    let (files, bytes) = totals.into_inner().unwrap_or_else(|e| e.into_inner());
    let mut counts = counts.into_inner().unwrap_or_else(|e| e.into_inner());
    counts.bytes_written += control.size;
    counts.files_written += 1;
    Ok(DeltaRestored {
        restored: Restored {
            files: files + 1,
            bytes: bytes + control.size,
            rewritten,
            archiving,
            has_postgresql_conf: opts.to.join("postgresql.conf").is_file(),
        },
        counts,
    })
}

/// Refuses a tablespace location that holds files but is not this directory's (its
/// `pg_tblspc/OID` links elsewhere or is missing): another cluster's, perhaps running.
fn refuse_foreign_tablespaces(dir: &Path, spaces: &HashMap<u32, PathBuf>) -> Result<()> {
    for (oid, location) in spaces {
        let link = fs::read_link(dir.join("pg_tblspc").join(oid.to_string())).ok();
        if link.as_deref() == Some(location.as_path()) {
            continue;
        }
        restore::check_empty(location, &format!("tablespace {oid} location")).map_err(|e| {
            Error::BadInput(format!(
                "{e}, and it is not this data directory's tablespace (pg_tblspc/{oid} does \
                 not link to it); map it elsewhere with --tablespace-map {oid}=DIR"
            ))
        })?;
    }
    Ok(())
}

/// Refuses a directory whose server runs: its postmaster.pid names a live process.
fn refuse_running(dir: &Path) -> Result<()> {
    let path = dir.join("postmaster.pid");
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(format!("read {}", path.display()))(e)),
    };
    let pid = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<u32>().ok());
    match pid {
        Some(pid) if pid > 0 && crate::lock::holder_alive(pid, None) => {
            Err(Error::BadInput(format!(
                "a server is running on {} ({} names process {pid}, which runs): stop it \
                 first; if no server runs there (the PID was reused), remove postmaster.pid",
                dir.display(),
                path.display()
            )))
        }
        _ => Ok(()),
    }
}

/// Which cluster a directory holds, by its pg_control (or the one a killed delta restore set
/// aside).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Held {
    /// Missing or empty.
    Empty,
    Cluster(u64),
    /// Files, but no pg_control that can be read.
    Unknown(String),
}

impl Held {
    fn describe(&self) -> String {
        match self {
            Held::Empty => "is empty".into(),
            Held::Cluster(id) => format!("holds cluster {id}"),
            Held::Unknown(why) => format!("is not a data directory ({why})"),
        }
    }
}

fn held_cluster(dir: &Path) -> Result<Held> {
    if restore::check_empty(dir, "").is_ok() {
        return Ok(Held::Empty);
    }
    for rel in [PG_CONTROL, SET_ASIDE] {
        let path = dir.join(rel);
        match fs::read(&path) {
            Ok(bytes) => {
                return Ok(match ControlData::parse(&bytes) {
                    Ok(c) => Held::Cluster(c.system_identifier),
                    Err(e) => Held::Unknown(format!("{}: {e}", path.display())),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(format!("read {}", path.display()))(e)),
        }
    }
    Ok(Held::Unknown(format!("no {PG_CONTROL}")))
}

/// Renames pg_control aside (durably) before anything changes, unless a killed run did.
fn set_aside_pg_control(dir: &Path) -> Result<()> {
    let (from, to) = (dir.join(PG_CONTROL), dir.join(SET_ASIDE));
    match fs::rename(&from, &to) {
        Ok(()) => sync_dir(&dir.join("global")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(format!("rename {}", from.display()))(e)),
    }
}

/// Writes the backup's pg_control (temporary name, fsync, rename), then drops the one set
/// aside: the directory can be started from now on.
fn put_pg_control(repo: &Repository, dir: &Path, job: &Control, owner: Owner) -> Result<()> {
    let data = repo.read_file(&job.lists)?;
    let tmp = dir.join("global/pg_control.pgsnapfs-tmp");
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(job.mode)
        .open(&tmp)
        .map_err(io(format!("create {}", tmp.display())))?;
    f.write_all(&data)
        .and_then(|()| f.sync_all())
        .map_err(io(format!("write {}", tmp.display())))?;
    let meta = f
        .metadata()
        .map_err(io(format!("stat {}", tmp.display())))?;
    owner.claim(&tmp, &meta)?;
    fs::rename(&tmp, &job.path).map_err(io(format!("rename {}", tmp.display())))?;
    sync_dir(&dir.join("global"))?;
    match fs::remove_file(dir.join(SET_ASIDE)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(io(format!("remove {SET_ASIDE}"))(e))
        }
        _ => {}
    }
    sync_dir(&dir.join("global"))
}

fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io(format!("sync {}", dir.display())))
}

/// Walks the backup's trees beside the directory, fixing entries and sending files to compare.
struct Walker<'a> {
    repo: &'a Repository,
    spaces: &'a HashMap<u32, PathBuf>,
    owner: Owner,
    chunk_size: u64,
    counts: &'a Mutex<DeltaCounts>,
    /// Regular files of the backup and their bytes.
    totals: &'a Mutex<(u64, u64)>,
    /// The backup's pg_control, written last.
    control: &'a Mutex<Option<Control>>,
}

impl Walker<'_> {
    fn dir(
        &self,
        tree: &BlobRef,
        dest: &Path,
        rel: &str,
        files: &crossbeam_channel::Sender<ListJob>,
    ) -> Result<()> {
        let nodes = self.repo.load_dir(tree)?.entries;
        let Listing {
            names: mut disk,
            foreign,
        } = list(dest)?;
        if rel == "global" {
            // The set-aside pg_control stays until the backup's is in place.
            disk.remove(SET_ASIDE.trim_start_matches("global/"));
        }
        // The top of a tablespace location may hold other clusters' version directories
        // (PG_<major>_<catversion>, a shared location or pg_upgrade's old one): only the
        // backup's own is touched there.
        let location_top = rel
            .strip_prefix("pg_tblspc/")
            .and_then(|oid| oid.parse::<u32>().ok())
            .is_some_and(|oid| self.spaces.contains_key(&oid));
        if location_top {
            disk.retain(|name, _| nodes.iter().any(|n| &n.name == name));
        } else {
            for path in &foreign {
                self.remove(path)?;
            }
        }
        let steps = reconcile(&nodes, &disk);
        for (name, step) in &steps {
            if *step == Step::Remove {
                self.remove(&dest.join(name))?;
            }
        }
        for node in nodes {
            let rel_child = match rel {
                "" => node.name.clone(),
                _ => format!("{rel}/{}", node.name),
            };
            let mut path = dest.join(&node.name);
            // A tablespace: its contents are at its location, linked from pg_tblspc.
            let space = (rel == "pg_tblspc")
                .then(|| node.name.parse::<u32>().ok())
                .flatten()
                .and_then(|oid| self.spaces.get(&oid));
            // A pg_wal link (WAL on another disk) stays, as pgBackRest keeps it: the
            // directory it leads to is brought over instead.
            let wal_link = rel.is_empty()
                && node.name == "pg_wal"
                && matches!(node.kind, NodeKind::Dir { .. })
                && matches!(disk.get("pg_wal"), Some(OnDisk::Link(_)))
                && path.is_dir();
            match steps.get(&node.name) {
                Some(Step::Sync { clear: true }) if space.is_none() && !wal_link => {
                    self.remove(&path)?
                }
                Some(Step::Keep) => continue,
                _ => {}
            }
            match &node.kind {
                NodeKind::Dir { tree } => {
                    if let Some(location) = space {
                        if fs::read_link(&path).ok().as_deref() != Some(location) {
                            self.remove(&path)?;
                            fs::create_dir_all(location)
                                .map_err(io(format!("create {}", location.display())))?;
                            std::os::unix::fs::symlink(location, &path)
                                .map_err(io(format!("link {}", path.display())))?;
                        }
                        path = location.clone();
                    }
                    mkdir(&path, node.mode & 0o7777)?;
                    self.claim(&path)?;
                    self.dir(tree, &path, &rel_child, files)?;
                }
                NodeKind::Symlink { target } => {
                    std::os::unix::fs::symlink(target, &path)
                        .map_err(io(format!("link {}", path.display())))?;
                    self.claim(&path)?;
                }
                NodeKind::File { size, lists } => {
                    let mode = node.mode & 0o7777;
                    if rel_child == PG_CONTROL {
                        *lock(self.control) = Some(Control {
                            path,
                            size: *size,
                            mode,
                            lists: lists.clone(),
                        });
                        continue;
                    }
                    {
                        let mut t = lock(self.totals);
                        t.0 += 1;
                        t.1 += size;
                    }
                    let target = open_target(path, *size, mode, self.owner, lists.len())?;
                    if lists.is_empty() {
                        finish(&target, self.counts);
                    }
                    let span = self.chunk_size * LIST_FANOUT as u64;
                    for (i, list) in lists.iter().enumerate() {
                        let job = ListJob {
                            target: target.clone(),
                            offset: i as u64 * span,
                            list: *list,
                        };
                        if files.send(job).is_err() {
                            return Ok(());
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn claim(&self, path: &Path) -> Result<()> {
        let meta = fs::symlink_metadata(path).map_err(io(format!("stat {}", path.display())))?;
        self.owner.claim(path, &meta)
    }

    /// Removes an entry, a directory with all it holds (a link is removed, not followed).
    fn remove(&self, path: &Path) -> Result<()> {
        let meta = match fs::symlink_metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io(format!("stat {}", path.display()))(e)),
        };
        if meta.is_dir() {
            let inside = list(path)?;
            for p in inside
                .names
                .keys()
                .map(|n| path.join(n))
                .chain(inside.foreign)
            {
                self.remove(&p)?;
            }
            fs::remove_dir(path).map_err(io(format!("remove {}", path.display())))
        } else {
            fs::remove_file(path).map_err(io(format!("remove {}", path.display())))?;
            lock(self.counts).files_removed += 1;
            Ok(())
        }
    }
}

/// The entries of a directory on disk.
#[derive(Default)]
struct Listing {
    /// By name.
    names: BTreeMap<String, OnDisk>,
    /// Names that are not UTF-8, which no backup holds.
    foreign: Vec<PathBuf>,
}

fn list(dir: &Path) -> Result<Listing> {
    let mut out = Listing::default();
    let entries = fs::read_dir(dir).map_err(io(format!("list {}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(io(format!("list {}", dir.display())))?;
        let path = entry.path();
        let kind = entry
            .file_type()
            .map_err(io(format!("stat {}", path.display())))?;
        let on_disk = if kind.is_symlink() {
            OnDisk::Link(fs::read_link(&path).map_err(io(format!("read link {}", path.display())))?)
        } else if kind.is_dir() {
            OnDisk::Dir
        } else if kind.is_file() {
            OnDisk::File
        } else {
            OnDisk::Other
        };
        match entry.file_name().into_string() {
            Ok(name) => {
                out.names.insert(name, on_disk);
            }
            Err(_) => out.foreign.push(path),
        }
    }
    Ok(out)
}

/// Opens (or creates) a file to bring over, with the backed-up mode, the owner, and the
/// backup's length: cut or extended with a hole first, so every chunk compares against what
/// is there (an all-zero chunk past the old end already matches).
fn open_target(
    path: PathBuf,
    size: u64,
    mode: u32,
    owner: Owner,
    jobs: usize,
) -> Result<Arc<Target>> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(mode)
        .open(&path)
        .map_err(io(format!("open {}", path.display())))?;
    let mut meta = file
        .metadata()
        .map_err(io(format!("stat {}", path.display())))?;
    let file = if meta.nlink() > 1 {
        let file = unshare(&path, file)?;
        meta = file
            .metadata()
            .map_err(io(format!("stat {}", path.display())))?;
        file
    } else {
        file
    };
    if meta.permissions().mode() & 0o7777 != mode {
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io(format!("chmod {}", path.display())))?;
    }
    owner.claim(&path, &meta)?;
    let resized = meta.len() != size;
    if resized {
        file.set_len(size)
            .map_err(io(format!("truncate {}", path.display())))?;
    }
    Ok(Arc::new(Target {
        path,
        file,
        resized,
        written: AtomicBool::new(false),
        left: AtomicUsize::new(jobs),
    }))
}

/// A file whose inode has other names (a `pg_upgrade --link` leftover shares it with the
/// other cluster) is never written in place: its content is copied to a new file that
/// replaces this name, and that one is opened. A leftover copy of a killed run is a name the
/// backup lacks, removed by the next.
fn unshare(path: &Path, file: fs::File) -> Result<fs::File> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".pgsnapfs-unlinked");
    let tmp = path.with_file_name(name);
    let mut from = file;
    let mut to = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(format!("create {}", tmp.display())))?;
    std::io::copy(&mut from, &mut to).map_err(io(format!("copy {}", path.display())))?;
    fs::rename(&tmp, path).map_err(io(format!("rename {}", tmp.display())))?;
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io(format!("open {}", path.display())))
}

/// Brings one chunk list of a file to the backup's content: each chunk on disk is hashed and
/// compared with the backup's; those that differ are fetched and written.
fn sync_list(
    repo: &Repository,
    job: &ListJob,
    counts: &Mutex<DeltaCounts>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<()> {
    let t = &job.target;
    let chunks = repo.load_chunk_list(&job.list)?;
    let (mut compared, mut written) = (0u64, 0u64);
    let mut offset = job.offset;
    let mut buf = Vec::new();
    for part in chunks.chunks(BATCH) {
        let span: u64 = part.iter().map(|c| u64::from(c.len)).sum();
        buf.resize(span as usize, 0);
        t.file
            .read_exact_at(&mut buf, offset)
            .map_err(io(format!("read {}", t.path.display())))?;
        let mut differ: Vec<(u64, Chunk)> = Vec::new();
        let mut at = 0usize;
        for c in part {
            let have = &buf[at..at + c.len as usize];
            let same = match c.loc {
                None => have.iter().all(|b| *b == 0),
                Some(_) => repo.crypto().id(have) == c.id,
            };
            if !same {
                differ.push((offset + at as u64, *c));
            }
            at += c.len as usize;
        }
        let stored: Vec<Chunk> = differ.iter().map(|(_, c)| *c).collect();
        for ((at, c), data) in differ.iter().zip(repo.read_chunks(&stored)?) {
            t.file
                .write_all_at(&data, *at)
                .map_err(io(format!("write {}", t.path.display())))?;
            written += u64::from(c.len);
        }
        compared += span;
        offset += span;
        progress(span);
    }
    {
        let mut counts = lock(counts);
        counts.bytes_compared += compared;
        counts.bytes_written += written;
    }
    if written > 0 {
        t.written.store(true, Ordering::Relaxed);
    }
    if t.left.fetch_sub(1, Ordering::AcqRel) == 1 {
        finish(t, counts);
    }
    Ok(())
}

/// Counts a file whose jobs are all done, if anything in it changed; its kill point.
fn finish(t: &Target, counts: &Mutex<DeltaCounts>) {
    if t.resized || t.written.load(Ordering::Relaxed) {
        lock(counts).files_written += 1;
        killpoint::file_written(&t.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::backend::memory::MemoryBackend;
    use crate::store::ingest::{Ingest, Visit};
    use std::sync::Arc;

    const CHUNK: u32 = 8192;

    fn node(name: &str, kind: NodeKind) -> Node {
        Node {
            name: name.into(),
            mode: 0o600,
            mtime: 0,
            kind,
        }
    }

    #[test]
    fn steps_per_name() {
        let tree = BlobRef {
            id: crate::store::BlobId::of(b"t"),
            loc: crate::store::tree::Loc {
                pack: crate::store::PackId::of(b"p"),
                offset: 0,
                stored_len: 1,
            },
            len: 1,
        };
        let nodes = vec![
            node("base", NodeKind::Dir { tree }),
            node(
                "f",
                NodeKind::File {
                    size: 0,
                    lists: vec![],
                },
            ),
            node(
                "link",
                NodeKind::Symlink {
                    target: "/a".into(),
                },
            ),
            node(
                "moved",
                NodeKind::Symlink {
                    target: "/b".into(),
                },
            ),
            node(
                "new",
                NodeKind::File {
                    size: 0,
                    lists: vec![],
                },
            ),
            node(
                "was_dir",
                NodeKind::File {
                    size: 0,
                    lists: vec![],
                },
            ),
        ];
        let disk: BTreeMap<String, OnDisk> = [
            ("base", OnDisk::Dir),
            ("f", OnDisk::File),
            ("link", OnDisk::Link("/a".into())),
            ("moved", OnDisk::Link("/c".into())),
            ("was_dir", OnDisk::Dir),
            ("extra", OnDisk::File),
            ("sock", OnDisk::Other),
        ]
        .into_iter()
        .map(|(n, k)| (n.to_string(), k))
        .collect();
        let steps = reconcile(&nodes, &disk);
        let sync = |clear| Step::Sync { clear };
        let want: BTreeMap<String, Step> = [
            ("base", sync(false)),
            ("f", sync(false)),
            ("link", Step::Keep),
            ("moved", sync(true)),
            ("new", sync(false)),
            ("was_dir", sync(true)),
            ("extra", Step::Remove),
            ("sock", Step::Remove),
        ]
        .into_iter()
        .map(|(n, s)| (n.to_string(), s))
        .collect();
        assert_eq!(steps, want);
    }

    #[test]
    fn which_cluster_and_whether_it_runs() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert_eq!(held_cluster(&d.join("missing")).unwrap(), Held::Empty);
        assert_eq!(held_cluster(d).unwrap(), Held::Empty);
        fs::write(d.join("notes"), "x").unwrap();
        assert!(matches!(held_cluster(d).unwrap(), Held::Unknown(_)));
        fs::create_dir(d.join("global")).unwrap();
        let mut control = vec![0u8; 64];
        control[..8].copy_from_slice(&42u64.to_le_bytes());
        control[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        fs::write(d.join(SET_ASIDE), &control).unwrap();
        assert_eq!(
            held_cluster(d).unwrap(),
            Held::Cluster(42),
            "set aside by a killed run"
        );
        set_aside_pg_control(d).unwrap();
        assert!(d.join(SET_ASIDE).exists());

        assert!(refuse_running(d).is_ok());
        fs::write(
            d.join("postmaster.pid"),
            format!("{}\n{}\n", std::process::id(), d.display()),
        )
        .unwrap();
        assert!(matches!(refuse_running(d), Err(Error::BadInput(_))));
        // A server that crashed left its file; nothing runs under that PID now.
        fs::write(d.join("postmaster.pid"), "999999999\n").unwrap();
        assert!(refuse_running(d).is_ok());
    }

    /// A file brought to a backup's content: only the differing chunk is written, a longer
    /// file is cut, and a second pass writes nothing.
    #[test]
    fn only_differing_chunks_are_written() {
        let repo = Repository::init(Arc::new(MemoryBackend::default()), CHUNK, 3).unwrap();
        let src = tempfile::tempdir().unwrap();
        // Two chunk lists: the second is compared by a job of its own.
        let data: Vec<u8> = (0..(LIST_FANOUT + 10) * CHUNK as usize)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let mut with_zeros = data.clone();
        with_zeros[3 * CHUNK as usize..5 * CHUNK as usize].fill(0);
        fs::write(src.path().join("rel"), &with_zeros).unwrap();
        let mut ingest = Ingest::new(&repo, 1, Box::new(|_| {}));
        let nodes = ingest
            .read_dir(src.path(), "", None, &|_, _| Visit::Keep)
            .unwrap();
        ingest.finish().unwrap();
        let NodeKind::File { size, lists } = &nodes[0].kind else {
            panic!("not a file")
        };
        assert_eq!(lists.len(), 2);

        let dest = tempfile::tempdir().unwrap();
        let path = dest.path().join("rel");
        let mut on_disk = with_zeros.clone();
        on_disk[(LIST_FANOUT + 7) * CHUNK as usize] ^= 1;
        on_disk[4 * CHUNK as usize] = 1;
        on_disk.extend_from_slice(&[9; 100]);
        fs::write(&path, &on_disk).unwrap();
        let me = fs::metadata(dest.path()).unwrap();
        let owner = Owner {
            uid: me.uid(),
            gid: me.gid(),
        };
        // The walk's part, then each list's job.
        let sync = |counts: &Mutex<DeltaCounts>| {
            let target = open_target(path.clone(), *size, 0o600, owner, lists.len()).unwrap();
            for (i, list) in lists.iter().enumerate() {
                let job = ListJob {
                    target: target.clone(),
                    offset: (i * LIST_FANOUT) as u64 * u64::from(CHUNK),
                    list: *list,
                };
                sync_list(&repo, &job, counts, &|_| {}).unwrap();
            }
        };
        let counts = Mutex::new(DeltaCounts::default());
        sync(&counts);
        assert_eq!(fs::read(&path).unwrap(), with_zeros);
        let c = lock(&counts).clone();
        assert_eq!(c.bytes_written, 2 * u64::from(CHUNK));
        assert_eq!(
            c.bytes_compared,
            with_zeros.len() as u64,
            "the tail cut off is not read"
        );
        assert_eq!(c.files_written, 1);

        let again = Mutex::new(DeltaCounts::default());
        sync(&again);
        assert_eq!(lock(&again).bytes_written, 0);
        assert_eq!(lock(&again).files_written, 0);

        // A missing file is written whole (zeros as a hole).
        fs::remove_file(&path).unwrap();
        sync(&again);
        assert_eq!(fs::read(&path).unwrap(), with_zeros);
    }
}
