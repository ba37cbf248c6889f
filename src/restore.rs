//! `restore`: writes a complete data directory from a backup, set up to recover to a target.
//!
//! Files are written by a small pool of threads, each reading a file's chunks with merged
//! ranged reads; all-zero chunks become holes. The directory is synced once at the end with
//! syncfs rather than file by file.

use crate::error::{io, Error, Result};
use crate::pitr::Plan;
use crate::store::tree::{BlobRef, NodeKind};
use crate::store::Repository;
use crossbeam_channel::bounded;
use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub struct RestoreOptions {
    pub to: PathBuf,
    /// Where to put each tablespace; default: its original location.
    pub tablespace_map: HashMap<u32, PathBuf>,
    pub threads: usize,
    pub progress: Box<dyn Fn(u64) + Sync>,
    /// The recovery settings to append to postgresql.auto.conf (see `pg::recovery`).
    pub recovery_conf: String,
}

pub struct Restored {
    pub files: u64,
    pub bytes: u64,
}

/// A directory is usable if it is missing or empty.
pub fn check_empty(dir: &Path, what: &str) -> Result<()> {
    match fs::read_dir(dir) {
        Ok(mut entries) => match entries.next() {
            None => Ok(()),
            Some(_) => Err(Error::BadInput(format!(
                "{what} {} is not empty; use an empty or missing directory",
                dir.display()
            ))),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(format!("read {}", dir.display()))(e)),
    }
}

fn mkdir(path: &Path, mode: u32) -> Result<()> {
    match fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            fs::set_permissions(path, fs::Permissions::from_mode(mode))
                .map_err(io(format!("chmod {}", path.display())))
        }
        Err(e) => Err(io(format!("create {}", path.display()))(e)),
    }
}

struct FileJob {
    path: PathBuf,
    size: u64,
    mode: u32,
    lists: Vec<BlobRef>,
}

pub fn run(repo: &Repository, plan: &Plan, opts: &RestoreOptions) -> Result<Restored> {
    let snap = &plan.snapshot;
    check_empty(&opts.to, "restore directory")?;
    let mut spaces = HashMap::new();
    for ts in &snap.tablespaces {
        let dest = opts
            .tablespace_map
            .get(&ts.oid)
            .cloned()
            .unwrap_or_else(|| PathBuf::from(&ts.location));
        check_empty(&dest, &format!("tablespace {} location", ts.oid)).map_err(|e| {
            Error::BadInput(format!(
                "{e}; map it elsewhere with --tablespace-map {}=DIR",
                ts.oid
            ))
        })?;
        spaces.insert(ts.oid, dest);
    }
    if let Some(parent) = opts.to.parent() {
        fs::create_dir_all(parent).map_err(io(format!("create {}", parent.display())))?;
    }
    mkdir(&opts.to, 0o700)?;

    let (tx, rx) = bounded::<FileJob>(64);
    let failure: Mutex<Option<Error>> = Mutex::new(None);
    let totals = Mutex::new((0u64, 0u64));
    std::thread::scope(|scope| -> Result<()> {
        for _ in 0..opts.threads.max(1) {
            let rx = rx.clone();
            let (failure, totals) = (&failure, &totals);
            scope.spawn(move || {
                for job in rx {
                    if failure.lock().expect("lock").is_some() {
                        continue;
                    }
                    match write_file(repo, &job, &*opts.progress) {
                        Ok(()) => {
                            let mut t = totals.lock().expect("lock");
                            t.0 += 1;
                            t.1 += job.size;
                        }
                        Err(e) => {
                            failure.lock().expect("lock").get_or_insert(e);
                        }
                    }
                }
            });
        }
        let walked = walk(repo, &snap.root, &opts.to, "", &spaces, &tx);
        drop(tx);
        walked
    })?;
    if let Some(e) = failure.into_inner().expect("lock") {
        return Err(e);
    }

    let conf = opts.to.join("postgresql.auto.conf");
    let mut f = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&conf)
        .map_err(io(format!("open {}", conf.display())))?;
    f.write_all(opts.recovery_conf.as_bytes())
        .map_err(io(format!("write {}", conf.display())))?;
    let signal = opts.to.join("recovery.signal");
    fs::write(&signal, b"").map_err(io(format!("write {}", signal.display())))?;
    fs::set_permissions(&opts.to, fs::Permissions::from_mode(0o700)).map_err(io("chmod"))?;
    for dir in std::iter::once(&opts.to).chain(spaces.values()) {
        syncfs(dir)?;
    }
    let (files, bytes) = totals.into_inner().expect("lock");
    Ok(Restored { files, bytes })
}

fn syncfs(dir: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let f = fs::File::open(dir).map_err(io(format!("open {}", dir.display())))?;
    // SAFETY: a valid open descriptor.
    if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
        return Err(io(format!("sync {}", dir.display()))(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

fn walk(
    repo: &Repository,
    tree: &BlobRef,
    dest: &Path,
    rel: &str,
    spaces: &HashMap<u32, PathBuf>,
    files: &crossbeam_channel::Sender<FileJob>,
) -> Result<()> {
    for node in repo.load_dir(tree)?.entries {
        let rel_child = if rel.is_empty() {
            node.name.clone()
        } else {
            format!("{rel}/{}", node.name)
        };
        let mut path = dest.join(&node.name);
        match &node.kind {
            NodeKind::Dir { tree } => {
                // A tablespace: its contents go to its location, linked from pg_tblspc.
                let space = rel
                    .eq("pg_tblspc")
                    .then(|| node.name.parse::<u32>().ok())
                    .flatten()
                    .and_then(|oid| spaces.get(&oid));
                if let Some(location) = space {
                    fs::create_dir_all(location)
                        .map_err(io(format!("create {}", location.display())))?;
                    std::os::unix::fs::symlink(location, &path)
                        .map_err(io(format!("link {}", path.display())))?;
                    path = location.clone();
                }
                mkdir(&path, node.mode & 0o7777)?;
                walk(repo, tree, &path, &rel_child, spaces, files)?;
            }
            NodeKind::Symlink { target } => {
                std::os::unix::fs::symlink(target, &path)
                    .map_err(io(format!("link {}", path.display())))?;
            }
            NodeKind::File { size, lists } => {
                let job = FileJob {
                    path,
                    size: *size,
                    mode: node.mode & 0o7777,
                    lists: lists.clone(),
                };
                if files.send(job).is_err() {
                    break;
                }
            }
        }
    }
    Ok(())
}

fn write_file(repo: &Repository, job: &FileJob, progress: &(dyn Fn(u64) + Sync)) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(job.mode)
        .open(&job.path)
        .map_err(io(format!("create {}", job.path.display())))?;
    let werr = || io(format!("write {}", job.path.display()));
    for list in &job.lists {
        let chunks = repo.load_chunk_list(list)?;
        for batch in chunks.chunks(64) {
            for (c, data) in batch.iter().zip(repo.read_chunks(batch)?) {
                if c.loc.is_none() {
                    f.seek(SeekFrom::Current(c.len as i64)).map_err(werr())?;
                } else {
                    f.write_all(&data).map_err(werr())?;
                }
                progress(c.len as u64);
            }
        }
    }
    f.set_len(job.size).map_err(werr())?;
    Ok(())
}
