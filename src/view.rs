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
use crate::store::tree::NodeKind;
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

/// The settings appended to postgresql.auto.conf of a view: recovery, plus what a
/// throw-away server needs (no archiving, hot standby, shared_buffers for replay).
pub fn settings_text(
    settings: &RecoverySettings,
    major: u32,
    shared_buffers: &str,
) -> Result<String> {
    let mut text = String::from("\n# Added by pgsnapfs for a server on a mounted backup.\n");
    text += &recovery::render(settings, major);
    for (name, value) in recovery::view_overrides(major) {
        text += &format!("{name} = {value}\n");
    }
    text += &format!("shared_buffers = {}\n", recovery::quote(shared_buffers));
    Ok(text)
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

    let root = repo.load_dir(&plan.snapshot.root)?;
    let mut conf = match root.get("postgresql.auto.conf").map(|n| &n.kind) {
        Some(NodeKind::File { lists, .. }) => repo.read_file(lists)?,
        _ => Vec::new(),
    };
    conf.extend_from_slice(
        settings_text(settings, plan.snapshot.pg_major, shared_buffers)?.as_bytes(),
    );
    let wal = fs::canonicalize(&wal).map_err(io(format!("resolve {}", wal.display())))?;
    if !wal.is_absolute() {
        return Err(Error::Failed(format!(
            "{} did not resolve to an absolute path",
            wal.display()
        )));
    }
    Ok(ViewChanges {
        files: vec![
            ("recovery.signal".into(), Vec::new()),
            ("postgresql.auto.conf".into(), conf),
        ],
        symlinks: vec![("pg_wal".into(), wal)],
        hide: vec![
            "standby.signal".into(),
            "postmaster.pid".into(),
            "postmaster.opts".into(),
        ],
        mountpoint: Some(mountpoint.to_path_buf()),
    })
}
