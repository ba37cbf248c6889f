//! `restore`: writes a complete data directory from a backup, set up to recover to a target.
//!
//! Files are written by a small pool of threads, each reading a file's chunks through the
//! store's file reader (`File::read_through`: merged ranged reads); all-zero chunks become holes. The directory is synced once at the end with
//! syncfs rather than file by file.

use crate::error::{io, Error, Result};
use crate::pg::recovery::{self, Rewritten};
use crate::pitr::Plan;
use crate::store::reader::File;
use crate::store::tree::{BlobRef, NodeKind};
use crate::store::{Repository, StoreError};
use crossbeam_channel::bounded;
use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Where and how to restore: the options of `pgsnapfs restore`.
pub struct RestoreOptions {
    /// The data directory to write; it must be missing or empty.
    pub to: PathBuf,
    /// Where to put each tablespace; default: its original location.
    pub tablespace_map: HashMap<u32, PathBuf>,
    /// Threads writing files (at least one runs).
    pub threads: usize,
    /// Called from the writing threads with each chunk's length in bytes as it is written.
    pub progress: Box<dyn Fn(u64) + Sync>,
    /// The recovery settings for postgresql.auto.conf's pgsnapfs block (`pg::recovery::render`).
    pub recovery: String,
    /// Whether the restored server keeps the backup's archiving settings.
    pub archive_mode: ArchiveMode,
}

/// Whether the restored server archives WAL once started (pgBackRest's --archive-mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ArchiveMode {
    /// Keep the backup's archive settings: a server that replaces a lost one archives on.
    Preserve,
    /// archive_mode = off: a test restore never pushes WAL into the production archive.
    Off,
}

/// What the restored configuration says about archiving, as far as the data directory shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Archiving {
    /// archive_mode is off, set so or by default (a postgresql.conf that does not set it).
    Off,
    /// archive_mode is on (or always), with this archive_command or archive_library (15+),
    /// if one is set.
    On {
        /// The last archive_command set, if not empty.
        command: Option<String>,
        /// The last archive_library set, if not empty.
        library: Option<String>,
    },
    /// The data directory has no postgresql.conf (Debian keeps it in /etc) and
    /// postgresql.auto.conf does not set archive_mode.
    Unknown,
}

/// What a finished restore wrote, and what its output should warn about.
pub struct Restored {
    /// Regular files written (directories and links not counted).
    pub files: u64,
    /// Their total size in bytes, holes included.
    pub bytes: u64,
    /// The configuration files whose settings of an earlier recovery were removed.
    pub rewritten: Vec<Rewritten>,
    /// What the restored configuration says about archiving.
    pub archiving: Archiving,
    /// Whether the restored directory has a postgresql.conf; without one (Debian's layout)
    /// the server must be started with its configuration from elsewhere.
    pub has_postgresql_conf: bool,
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

/// Where each tablespace of `snap` goes: as mapped, or its original location.
pub(crate) fn locations(
    snap: &crate::catalog::Snapshot,
    opts: &RestoreOptions,
) -> HashMap<u32, PathBuf> {
    snap.tablespaces
        .iter()
        .map(|ts| {
            let dest = opts.tablespace_map.get(&ts.oid).cloned();
            (ts.oid, dest.unwrap_or_else(|| PathBuf::from(&ts.location)))
        })
        .collect()
}

/// Refuses two tablespaces put at one directory (a --tablespace-map onto another's
/// location): their files would be written over each other.
pub(crate) fn refuse_shared_locations(spaces: &HashMap<u32, PathBuf>) -> Result<()> {
    let mut by_dir: Vec<(PathBuf, u32)> = spaces
        .iter()
        .map(|(oid, dir)| (fs::canonicalize(dir).unwrap_or_else(|_| dir.clone()), *oid))
        .collect();
    by_dir.sort();
    for pair in by_dir.windows(2) {
        if let [(a, x), (b, y)] = pair {
            if a == b {
                return Err(Error::BadInput(format!(
                    "tablespaces {x} and {y} would both be put at {}: map one of them \
                     elsewhere with --tablespace-map OID=DIR",
                    a.display()
                )));
            }
        }
    }
    Ok(())
}

/// The last steps once the files are written: the recovery settings and signal, the data
/// directory's mode, and everything synced to disk.
pub(crate) fn settle(
    opts: &RestoreOptions,
    spaces: &HashMap<u32, PathBuf>,
) -> Result<(Vec<Rewritten>, Archiving)> {
    let body = match opts.archive_mode {
        ArchiveMode::Preserve => opts.recovery.clone(),
        ArchiveMode::Off => format!("{}archive_mode = 'off'\n", opts.recovery),
    };
    let rewritten = write_recovery(&opts.to, &body)?;
    let archiving = archiving(&opts.to)?;
    fs::set_permissions(&opts.to, fs::Permissions::from_mode(0o700)).map_err(io("chmod"))?;
    for dir in std::iter::once(&opts.to).chain(spaces.values()) {
        syncfs(dir)?;
    }
    Ok((rewritten, archiving))
}

/// Runs `work` on every job `produce` sends, in `threads` threads (at least one). After the
/// first failure the remaining jobs are skipped; an error of `produce` comes first.
pub(crate) fn in_pool<J: Send>(
    threads: usize,
    work: &(dyn Fn(J) -> Result<()> + Sync),
    produce: impl FnOnce(&crossbeam_channel::Sender<J>) -> Result<()>,
) -> Result<()> {
    let (tx, rx) = bounded::<J>(64);
    let failure: Mutex<Option<Error>> = Mutex::new(None);
    std::thread::scope(|scope| -> Result<()> {
        let workers: Vec<_> = (0..threads.max(1))
            .map(|_| {
                let rx = rx.clone();
                let failure = &failure;
                scope.spawn(move || {
                    for job in rx {
                        if lock(failure).is_some() {
                            continue;
                        }
                        if let Err(e) = work(job) {
                            lock(failure).get_or_insert(e);
                        }
                    }
                })
            })
            .collect();
        let produced = produce(&tx);
        drop(tx);
        // Joined here, so a panic is an error rather than a panic of the scope.
        for w in workers {
            if let Err(payload) = w.join() {
                lock(&failure)
                    .get_or_insert(StoreError::worker_panicked("restore", &*payload).into());
            }
        }
        produced
    })?;
    match failure.into_inner().unwrap_or_else(PoisonError::into_inner) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Creates directory `path` with `mode`, or gives an existing one that mode.
pub(crate) fn mkdir(path: &Path, mode: u32) -> Result<()> {
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

/// Writes the plan's backup to `opts.to` (and its tablespaces to their locations), then the
/// recovery settings and recovery.signal, so the server started there recovers to the plan's
/// target. On `Ok` everything is synced to disk. On an error the directory is left partial:
/// it is not a usable data directory, and a new restore needs it emptied.
pub fn run(repo: &Repository, plan: &Plan, opts: &RestoreOptions) -> Result<Restored> {
    let snap = &plan.snapshot;
    check_empty(&opts.to, "restore directory")?;
    let spaces = locations(snap, opts);
    refuse_shared_locations(&spaces)?;
    for (oid, dest) in &spaces {
        check_empty(dest, &format!("tablespace {oid} location")).map_err(|e| {
            Error::BadInput(format!(
                "{e}; map it elsewhere with --tablespace-map {oid}=DIR"
            ))
        })?;
    }
    if let Some(parent) = opts.to.parent() {
        fs::create_dir_all(parent).map_err(io(format!("create {}", parent.display())))?;
    }
    mkdir(&opts.to, 0o700)?;

    let totals = Mutex::new((0u64, 0u64));
    in_pool(
        opts.threads,
        &|job: FileJob| {
            write_file(repo, &job, snap.chunk_size, &*opts.progress)?;
            let mut t = lock(&totals);
            t.0 += 1;
            t.1 += job.size;
            Ok(())
        },
        |tx| walk(repo, &snap.root, &opts.to, "", &spaces, tx),
    )?;

    let (rewritten, archiving) = settle(opts, &spaces)?;
    let (files, bytes) = totals.into_inner().unwrap_or_else(PoisonError::into_inner);
    Ok(Restored {
        files,
        bytes,
        rewritten,
        archiving,
        has_postgresql_conf: opts.to.join("postgresql.conf").is_file(),
    })
}

/// A configuration file of the restored directory, by its path there: None if missing or
/// not a regular file (a link to /etc is outside what the backup holds).
fn read_conf(dir: &Path, rel: &str) -> Result<Option<String>> {
    let path = dir.join(rel);
    match fs::symlink_metadata(&path) {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(format!("stat {}", path.display()))(e)),
    }
    let bytes = fs::read(&path).map_err(io(format!("read {}", path.display())))?;
    String::from_utf8(bytes).map(Some).map_err(|_| {
        Error::CannotRewrite(format!(
            "{} is not UTF-8 text, so its recovery settings cannot be rewritten; convert it \
             to UTF-8 in the restored directory and restore again",
            path.display()
        ))
    })
}

fn list_conf(dir: &Path, rel: &str) -> Result<Vec<String>> {
    let path = dir.join(rel);
    let entries = match fs::read_dir(&path) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(format!("list {}", path.display()))(e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io(format!("list {}", path.display())))?;
        names.extend(entry.file_name().into_string().ok());
    }
    Ok(names)
}

/// Writes the one block of recovery settings, comments out those of earlier recoveries, and
/// leaves recovery.signal as the only signal file: with standby.signal too, the server
/// would start as a standby instead of recovering to the target.
fn write_recovery(dir: &Path, body: &str) -> Result<Vec<Rewritten>> {
    let rewritten = recovery::rewrite_config(
        &|rel| read_conf(dir, rel),
        &|rel| list_conf(dir, rel),
        body,
        &[],
    )?;
    for file in &rewritten {
        let path = dir.join(&file.path);
        let mode = fs::metadata(&path).map_or(0o600, |m| m.permissions().mode() & 0o7777);
        let tmp = dir.join(format!("{}.pgsnapfs-tmp", file.path));
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io(format!("create {}", tmp.display())))?;
        f.write_all(file.text.as_bytes())
            .map_err(io(format!("write {}", tmp.display())))?;
        fs::rename(&tmp, &path).map_err(io(format!("rename {}", tmp.display())))?;
    }
    let standby = dir.join("standby.signal");
    match fs::remove_file(&standby) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(io(format!("remove {}", standby.display()))(e))
        }
        _ => {}
    }
    let signal = dir.join("recovery.signal");
    fs::write(&signal, b"").map_err(io(format!("write {}", signal.display())))?;
    Ok(rewritten)
}

/// What the restored configuration files say about archiving (the last value of each
/// setting, as the server reads them).
fn archiving(dir: &Path) -> Result<Archiving> {
    let settings =
        recovery::settings_in_order(&|rel| read_conf(dir, rel), &|rel| list_conf(dir, rel))?;
    // The last value of a setting is the one in force; an empty one is unset.
    let last = |name: &str| {
        settings
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    };
    let mode = last("archive_mode").map(|m| m.to_ascii_lowercase());
    Ok(match mode.as_deref() {
        Some("on" | "always" | "true" | "yes" | "1") => Archiving::On {
            command: last("archive_command"),
            library: last("archive_library"),
        },
        Some(_) => Archiving::Off,
        None if read_conf(dir, "postgresql.conf")?.is_some() => Archiving::Off,
        None => Archiving::Unknown,
    })
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

/// The workers' shared state stays valid if one of them panicked holding it: each update
/// is a single step.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn write_file(
    repo: &Repository,
    job: &FileJob,
    chunk_size: u32,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(job.mode)
        .open(&job.path)
        .map_err(io(format!("create {}", job.path.display())))?;
    let werr = || io(format!("write {}", job.path.display()));
    let file = File::new(job.size, chunk_size, job.lists.clone());
    file.read_through(repo, |len, data| -> Result<()> {
        match data {
            None => f.seek(SeekFrom::Current(len as i64)).map(drop),
            Some(d) => f.write_all(d),
        }
        .map_err(werr())?;
        progress(len as u64);
        Ok(())
    })?;
    f.set_len(job.size).map_err(werr())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, text: &str) {
        fs::write(dir.join(rel), text).unwrap();
    }

    #[test]
    fn recovery_files_of_a_restored_directory() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::create_dir(d.join("conf.d")).unwrap();
        write(
            d,
            "postgresql.conf",
            "archive_mode = on\ninclude_dir 'conf.d'\n",
        );
        write(
            d,
            "conf.d/a.conf",
            "recovery_target_lsn = '0/1'\narchive_command = 'x'\n",
        );
        write(d, "postgresql.auto.conf", "recovery_target_time = 'T'\n");
        fs::set_permissions(
            d.join("postgresql.auto.conf"),
            fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        write(d, "standby.signal", "");
        // A link is never followed: it may lead out of the data directory (to /etc).
        std::os::unix::fs::symlink(d.join("conf.d/a.conf"), d.join("conf.d/b.conf")).unwrap();

        let rewritten = write_recovery(d, "restore_command = 'f'\n").unwrap();
        let paths: Vec<&str> = rewritten.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(paths, ["conf.d/a.conf", "postgresql.auto.conf"]);
        let a = fs::read_to_string(d.join("conf.d/a.conf")).unwrap();
        assert!(
            a.starts_with("# Removed by pgsnapfs: recovery_target_lsn"),
            "{a}"
        );
        let auto = d.join("postgresql.auto.conf");
        assert!(fs::read_to_string(&auto)
            .unwrap()
            .contains(recovery::BLOCK_BEGIN));
        assert_eq!(
            fs::metadata(&auto).unwrap().permissions().mode() & 0o777,
            0o640
        );
        assert!(fs::symlink_metadata(d.join("conf.d/b.conf"))
            .unwrap()
            .is_symlink());
        assert!(d.join("recovery.signal").is_file());
        assert!(!d.join("standby.signal").exists());
        assert_eq!(
            archiving(d).unwrap(),
            Archiving::On {
                command: Some("x".into()),
                library: None
            }
        );

        write_recovery(d, "archive_mode = 'off'\n").unwrap();
        assert_eq!(archiving(d).unwrap(), Archiving::Off);
        fs::remove_file(d.join("postgresql.conf")).unwrap();
        fs::remove_file(d.join("postgresql.auto.conf")).unwrap();
        assert_eq!(archiving(d).unwrap(), Archiving::Unknown);
    }
}
