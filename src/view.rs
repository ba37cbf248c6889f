//! A writable view of a backup for a server to start on: what changes in its root, and the
//! scratch directory that takes the server's writes.
//!
//! `pg_wal` is a link to the scratch disk, because WAL restored and written through FUSE
//! makes replay several times slower; archiving is turned off so a server on a view can
//! never push WAL into the production archive.

use crate::error::{io, Error, Result};
use crate::mount::ViewChanges;
use crate::pg::recovery::{self, RecoverySettings};
use crate::pitr::Plan;
use crate::store::tree::{BlobRef, Dir, NodeKind};
use crate::store::Repository;
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

#[derive(Debug, Clone, Copy)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

impl Owner {
    /// The ids of a user, such as the `postgres` a server runs as.
    pub fn lookup(name: &str) -> Result<Owner> {
        let cname = std::ffi::CString::new(name)
            .map_err(|_| Error::BadInput(format!("bad user name {name:?}")))?;
        // SAFETY: getpwnam returns null or a pointer to static storage, read at once.
        unsafe {
            let pw = libc::getpwnam(cname.as_ptr());
            if pw.is_null() {
                return Err(Error::BadInput(format!("no such user {name:?}")));
            }
            Ok(Owner {
                uid: (*pw).pw_uid,
                gid: (*pw).pw_gid,
            })
        }
    }

    /// The user running this process.
    pub fn me() -> Owner {
        // SAFETY: plain id queries.
        unsafe {
            Owner {
                uid: libc::geteuid(),
                gid: libc::getegid(),
            }
        }
    }
}

fn mkdir_owned(path: &Path, owner: Owner) -> Result<()> {
    fs::DirBuilder::new()
        .mode(0o700)
        .create(path)
        .map_err(io(format!("create {}", path.display())))?;
    std::os::unix::fs::chown(path, Some(owner.uid), Some(owner.gid))
        .map_err(io(format!("chown {}", path.display())))
}

/// Creates `path` and its missing parents, each owned by `owner` so its server can reach
/// what is below.
fn mkdir_owned_all(path: &Path, owner: Owner) -> Result<()> {
    if path.exists() {
        return Ok(());
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        mkdir_owned_all(parent, owner)?;
    }
    mkdir_owned(path, owner)
}

/// The settings of a view's pgsnapfs block in postgresql.auto.conf: recovery, plus what
/// a throw-away server needs (no archiving, hot standby, shared_buffers for replay).
fn settings_text(settings: &RecoverySettings, major: u32, shared_buffers: &str) -> String {
    let mut text = recovery::render(settings, major);
    for (name, value) in recovery::view_overrides(major) {
        text += &format!("{name} = {value}\n");
    }
    text += &format!("shared_buffers = {}\n", recovery::quote(shared_buffers));
    text
}

/// The directory at `path` (components joined by '/') in a backup's tree, if there is one.
fn dir_at(repo: &Repository, root: &BlobRef, path: &str) -> Result<Option<Dir>> {
    let mut dir = repo.load_dir(root)?;
    for name in path.split('/').filter(|n| !n.is_empty()) {
        dir = match dir.get(name).map(|n| &n.kind) {
            Some(NodeKind::Dir { tree }) => repo.load_dir(tree)?,
            _ => return Ok(None),
        };
    }
    Ok(Some(dir))
}

/// A configuration file of the backup as text, by its path in the data directory; None
/// if missing or not a regular file.
fn read_conf(repo: &Repository, root: &BlobRef, path: &str) -> Result<Option<String>> {
    let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
    let Some(dir) = dir_at(repo, root, parent)? else {
        return Ok(None);
    };
    let Some(NodeKind::File { lists, .. }) = dir.get(name).map(|n| &n.kind) else {
        return Ok(None);
    };
    String::from_utf8(repo.read_file(lists)?)
        .map(Some)
        .map_err(|_| {
            Error::Failed(format!(
                "{path} of the backup is not UTF-8 text, so its recovery settings cannot be \
                 rewritten for a view"
            ))
        })
}

/// The configuration changes of a view: its recovery settings block, and the settings of
/// earlier recoveries commented out. A view replaces files at its top only, so a file
/// deeper down keeps them, and the server may refuse to start: say which.
fn config_files(repo: &Repository, plan: &Plan, body: &str) -> Result<Vec<(String, Vec<u8>)>> {
    let root = &plan.snapshot.root;
    let rewritten = recovery::rewrite_config(
        &|path| read_conf(repo, root, path),
        &|path| {
            Ok(dir_at(repo, root, path)?
                .map(|d| d.entries.into_iter().map(|n| n.name).collect())
                .unwrap_or_default())
        },
        body,
    )?;
    if let Some(removed) = recovery::describe_removed(&rewritten) {
        tracing::warn!(
            "backup {} carries the recovery settings of an earlier recovery; removed in \
             this view so they cannot stop its recovery early: {removed}",
            plan.snapshot.id
        );
    }
    let mut files = Vec::new();
    for file in rewritten {
        if file.path.contains('/') {
            tracing::warn!(
                "{} of backup {} sets {}, which a view cannot remove there: if the server \
                 refuses to start, restore the backup instead",
                file.path,
                plan.snapshot.id,
                file.removed.join(", ")
            );
        } else {
            files.push((file.path, file.text.into_bytes()));
        }
    }
    Ok(files)
}

/// Creates the scratch directory and returns the changes the view makes to the backup.
pub fn prepare(
    repo: &Repository,
    plan: &Plan,
    settings: &RecoverySettings,
    scratch: &Path,
    mountpoint: &Path,
    owner: Owner,
    shared_buffers: &str,
) -> Result<ViewChanges> {
    crate::restore::check_empty(scratch, "scratch directory")?;
    mkdir_owned_all(scratch, owner)?;
    let wal = scratch.join("pg_wal");
    mkdir_owned(&wal, owner)?;
    mkdir_owned(&wal.join("archive_status"), owner)?;

    let body = settings_text(settings, plan.snapshot.pg_major, shared_buffers);
    let mut files = config_files(repo, plan, &body)?;
    files.push(("recovery.signal".into(), Vec::new()));
    let wal = fs::canonicalize(&wal).map_err(io(format!("resolve {}", wal.display())))?;
    if !wal.is_absolute() {
        return Err(Error::Failed(format!(
            "{} did not resolve to an absolute path",
            wal.display()
        )));
    }
    Ok(ViewChanges {
        files,
        symlinks: vec![("pg_wal".into(), wal)],
        hide: vec![
            "standby.signal".into(),
            "postmaster.pid".into(),
            "postmaster.opts".into(),
        ],
        mountpoint: Some(mountpoint.to_path_buf()),
    })
}
