//! A writable view of a backup for a server to start on: what changes in its root, and the
//! scratch directory that takes the server's writes.
//!
//! `pg_wal` is a link to the scratch disk, because WAL restored and written through FUSE
//! makes replay several times slower; archiving is turned off so a server on a view can
//! never push WAL into the production archive.
//!
//! A view is self-contained: a backup without postgresql.conf, pg_hba.conf or pg_ident.conf
//! (Debian and Ubuntu keep them in /etc/postgresql/MAJOR/NAME) gets minimal ones, and
//! settings naming files outside the view (data_directory, hba_file, ...) are commented
//! out or overridden, so the view's server never reads or writes the source cluster's files.

use crate::error::{io, Error, Result};
use crate::mount::ViewChanges;
use crate::pg::control;
use crate::pg::recovery::{self, RecoverySettings};
use crate::pitr::Plan;
use crate::store::tree::{BlobRef, Dir, NodeKind};
use crate::store::Repository;
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

/// The user and group that own the scratch directory: those the view's server runs as.
#[derive(Debug, Clone, Copy)]
pub struct Owner {
    /// Numeric user id.
    pub uid: u32,
    /// Numeric id of the user's primary group.
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

/// A view of a backup: the changes it makes, and what whoever starts a server on it should
/// know, one line each.
pub struct View {
    /// What the mount adds to, replaces in and hides from the backup's root.
    pub changes: ViewChanges,
    /// Notes for the operator (configuration files supplied, or kept outside the backup),
    /// one sentence each; empty when there is nothing to say.
    pub notes: Vec<String>,
}

/// A file a view adds or replaces at its top: name and content.
type File = (String, Vec<u8>);

/// The configuration files a server reads from its data directory, and what a view supplies
/// for one the backup lacks.
const SUPPLIED: [(&str, &str); 3] = [
    (
        "postgresql.conf",
        "# Supplied by pgsnapfs: the backup has no postgresql.conf (its configuration was kept\n\
         # outside the data directory, as in Debian's /etc/postgresql). The server's settings\n\
         # come from this file, from postgresql.auto.conf, whose last block pgsnapfs wrote for\n\
         # this view, and from its command line: pg_ctl -o '-p PORT -k SOCKETDIR -c name=value'.\n",
    ),
    (
        "pg_hba.conf",
        "# Supplied by pgsnapfs: the backup has no pg_hba.conf. A view's server listens on no\n\
         # TCP address (listen_addresses = ''), so only Unix-socket connections reach it, and\n\
         # peer lets an operating-system user in as the role of the same name:\n\
         # runuser -u postgres -- psql -h SOCKETDIR -p PORT -U postgres. To let in others,\n\
         # edit this file before starting the server (the change goes to the scratch directory).\n\
         # TYPE  DATABASE  USER  METHOD\n\
         local   all       all   peer\n",
    ),
    (
        "pg_ident.conf",
        "# Supplied by pgsnapfs: the backup has no pg_ident.conf, so there are no user name maps.\n",
    ),
];

/// The settings of a view's pgsnapfs block in postgresql.auto.conf: recovery, plus what
/// a throw-away server needs (no archiving, hot standby, shared_buffers for replay), and
/// the view's own authentication files, whatever the backup's configuration names. A
/// durable view (a clone) keeps its writes like a local disk: its server runs with fsync.
fn settings_text(
    settings: &RecoverySettings,
    major: u32,
    shared_buffers: &str,
    mountpoint: &Path,
    durable: bool,
) -> Result<String> {
    let mut text = recovery::render(settings, major);
    for (name, mut value) in recovery::view_overrides(major) {
        if durable && name == "fsync" {
            value = "on".into();
        }
        text += &format!("{name} = {value}\n");
    }
    text += &format!("shared_buffers = {}\n", recovery::quote(shared_buffers));
    let mountpoint = mountpoint.to_str().ok_or_else(|| {
        Error::BadInput(format!(
            "mount point {} is not UTF-8: the server's configuration cannot name it",
            mountpoint.display()
        ))
    })?;
    for (name, file) in [("hba_file", "pg_hba.conf"), ("ident_file", "pg_ident.conf")] {
        let path = format!("{}/{file}", mountpoint.trim_end_matches('/'));
        text += &format!("{name} = {}\n", recovery::quote(&path));
    }
    Ok(text)
}

/// "a", "a or b", "a, b or c".
fn or_list(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => one.to_string(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

/// The configuration files the view supplies because the backup's top directory has no
/// such regular file (a link would point outside the view), with the note saying so.
fn supplied_files(repo: &Repository, plan: &Plan) -> Result<(Vec<File>, Option<String>)> {
    let top = repo.load_dir(&plan.snapshot.root)?;
    let missing: Vec<(&str, &str)> = SUPPLIED
        .into_iter()
        .filter(|(name, _)| !matches!(top.get(name).map(|n| &n.kind), Some(NodeKind::File { .. })))
        .collect();
    if missing.is_empty() {
        return Ok((Vec::new(), None));
    }
    let names: Vec<&str> = missing.iter().map(|(name, _)| *name).collect();
    let mut note = format!(
        "backup {} has no {} (configuration kept outside the data directory, e.g. Debian's \
         /etc/postgresql): the view supplies {}",
        plan.snapshot.id,
        or_list(&names),
        if names.len() == 1 {
            "a minimal one"
        } else {
            "minimal ones"
        }
    );
    if names.contains(&"postgresql.conf") {
        note += "; the settings a hot standby needs (max_connections and the like) come from \
                 the backup's pg_control, the others from postgresql.auto.conf and the server's \
                 command line";
    }
    if names.contains(&"pg_hba.conf") {
        note += "; pg_hba.conf allows Unix-socket connections only, by peer authentication (an \
                 operating-system user as the role of the same name: runuser -u postgres -- \
                 psql -h SOCKETDIR ...)";
    }
    let mut files = Vec::new();
    for (name, text) in missing {
        let mut text = text.to_string();
        if name == "postgresql.conf" {
            text += &standby_minimums(repo, plan)?;
        }
        files.push((name.to_string(), text.into_bytes()));
    }
    Ok((files, Some(note)))
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
    let Some(bytes) = read_file(repo, root, path)? else {
        return Ok(None);
    };
    String::from_utf8(bytes).map(Some).map_err(|_| {
        Error::CannotRewrite(format!(
            "{path} of the backup is not UTF-8 text, so its recovery settings cannot be \
             rewritten for a view"
        ))
    })
}

/// A regular file of the backup by its path in the data directory; None if missing or not
/// a regular file.
pub(crate) fn read_file(repo: &Repository, root: &BlobRef, path: &str) -> Result<Option<Vec<u8>>> {
    let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
    let Some(dir) = dir_at(repo, root, parent)? else {
        return Ok(None);
    };
    let Some(NodeKind::File { lists, .. }) = dir.get(name).map(|n| &n.kind) else {
        return Ok(None);
    };
    Ok(Some(repo.read_file(lists)?))
}

/// Settings for a supplied postgresql.conf: a hot standby refuses to start below the
/// source's max_connections and the like, which the configuration the backup lacks held;
/// the backup's pg_control recorded them.
fn standby_minimums(repo: &Repository, plan: &Plan) -> Result<String> {
    let Some(bytes) = read_file(repo, &plan.snapshot.root, "global/pg_control")? else {
        return Ok(String::new());
    };
    match control::standby_minimums(&bytes) {
        Ok(Some(settings)) => {
            let mut text = "\n# The source's values, from the backup's pg_control: a hot standby \
                            needs at least these.\n"
                .to_string();
            for (name, value) in settings {
                text += &format!("{name} = {value}\n");
            }
            Ok(text)
        }
        Ok(None) => Ok(String::new()),
        Err(e) => {
            tracing::warn!(
                "cannot read global/pg_control of backup {} ({e}): the view's server gets \
                 the default max_connections and the like",
                plan.snapshot.id
            );
            Ok(String::new())
        }
    }
}

/// The configuration changes of a view: its recovery settings block, and the settings of
/// earlier recoveries and those naming files outside the view commented out (with a note
/// for the latter). A view replaces files at its top only, so a file deeper down keeps
/// them, and the server may refuse to start: say which. A data_directory left there would
/// start the server on another data directory: refuse.
fn config_files(repo: &Repository, plan: &Plan, body: &str) -> Result<(Vec<File>, Option<String>)> {
    let root = &plan.snapshot.root;
    let rewritten = recovery::rewrite_config(
        &|path| read_conf(repo, root, path),
        &|path| {
            Ok(dir_at(repo, root, path)?
                .map(|d| d.entries.into_iter().map(|n| n.name).collect())
                .unwrap_or_default())
        },
        body,
        &recovery::LOCATIONS,
    )?;
    if let Some(removed) = recovery::describe_removed(&rewritten) {
        tracing::warn!(
            "backup {} carries the recovery settings of an earlier recovery; removed in \
             this view so they cannot stop its recovery early: {removed}",
            plan.snapshot.id
        );
    }
    let mut files = Vec::new();
    let mut locations = Vec::new();
    for file in rewritten {
        if file.path.contains('/') {
            if file.also_removed.iter().any(|n| n == "data_directory") {
                return Err(Error::CannotRewrite(format!(
                    "{} of backup {} sets data_directory, which a view cannot remove there: \
                     a server started on the view would start on that directory instead; \
                     restore the backup instead",
                    file.path, plan.snapshot.id
                )));
            }
            tracing::warn!(
                "{} of backup {} sets {}, which a view cannot remove there: if the server \
                 refuses to start, restore the backup instead",
                file.path,
                plan.snapshot.id,
                [file.removed, file.also_removed].concat().join(", ")
            );
            continue;
        }
        if !file.also_removed.is_empty() {
            locations.push(format!("{} ({})", file.path, file.also_removed.join(", ")));
        }
        files.push((file.path, file.text.into_bytes()));
    }
    let note = (!locations.is_empty()).then(|| {
        format!(
            "the configuration of backup {} names files outside the view, commented out here \
             so the view's server uses its own: {}",
            plan.snapshot.id,
            locations.join("; ")
        )
    });
    Ok((files, note))
}

/// Creates the scratch directory and returns the changes the view makes to the backup.
/// `mountpoint` is absolute: the server's configuration names files under it. A durable
/// view's scratch directory may hold its state from an earlier mount, which it goes on with.
pub fn prepare(
    repo: &Repository,
    plan: &Plan,
    settings: &RecoverySettings,
    scratch: &Path,
    mountpoint: &Path,
    owner: Owner,
    view: &crate::session::ViewSettings,
) -> Result<View> {
    if !view.durable {
        crate::restore::check_empty(scratch, "scratch directory")?;
    }
    mkdir_owned_all(scratch, owner)?;
    let wal = scratch.join("pg_wal");
    mkdir_owned_all(&wal.join("archive_status"), owner)?;

    let body = settings_text(
        settings,
        plan.snapshot.pg_major,
        &view.shared_buffers,
        mountpoint,
        view.durable,
    )?;
    let (supplied, supplied_note) = supplied_files(repo, plan)?;
    let (mut files, locations_note) = config_files(repo, plan, &body)?;
    files.extend(supplied);
    // A standby follows the archive until promoted; otherwise recovery ends at the target.
    let (signal, other) = match view.standby {
        true => ("standby.signal", "recovery.signal"),
        false => ("recovery.signal", "standby.signal"),
    };
    files.push((signal.into(), Vec::new()));
    let wal = fs::canonicalize(&wal).map_err(io(format!("resolve {}", wal.display())))?;
    if !wal.is_absolute() {
        return Err(Error::Mount(format!(
            "{} did not resolve to an absolute path",
            wal.display()
        )));
    }
    let changes = ViewChanges {
        files,
        symlinks: vec![("pg_wal".into(), wal)],
        hide: vec![
            other.into(),
            "postmaster.pid".into(),
            "postmaster.opts".into(),
        ],
        mountpoint: Some(mountpoint.to_path_buf()),
    };
    Ok(View {
        changes,
        notes: supplied_note.into_iter().chain(locations_note).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_names_the_views_own_authentication_files() {
        let settings = RecoverySettings {
            restore_command: "fetch %f %p".into(),
            target: None,
            action: crate::pg::target::TargetAction::Pause,
            timeline: None,
        };
        let text =
            settings_text(&settings, 15, "1GB", Path::new("/srv/views/it's/"), false).unwrap();
        assert!(text.contains("listen_addresses = ''\n"), "{text}");
        assert!(text.contains("fsync = off\n"), "{text}");
        let durable =
            settings_text(&settings, 15, "1GB", Path::new("/srv/views/it's/"), true).unwrap();
        assert!(durable.contains("fsync = on\n"), "{durable}");
        assert!(
            text.ends_with(
                "hba_file = '/srv/views/it''s/pg_hba.conf'\n\
                 ident_file = '/srv/views/it''s/pg_ident.conf'\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn supplied_hba_lets_in_local_peer_only() {
        let (_, hba) = SUPPLIED[1];
        let rules: Vec<Vec<&str>> = hba
            .lines()
            .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(rules, [["local", "all", "all", "peer"]]);
        for (name, text) in SUPPLIED {
            assert!(text.starts_with("# Supplied by pgsnapfs"), "{name}");
        }
    }

    #[test]
    fn names_in_a_sentence() {
        assert_eq!(or_list(&["a"]), "a");
        assert_eq!(or_list(&["a", "b"]), "a or b");
        assert_eq!(or_list(&["a", "b", "c"]), "a, b or c");
    }
}
