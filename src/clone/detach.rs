//! `clone detach`: a fully hydrated clone becomes a plain data directory. The server must
//! be stopped (a clean shutdown, so the copy is consistent without the clone); its files
//! are copied from the mount, whose hydrated files are read from local disk, and `pg_wal`
//! from the scratch disk it is linked to. The view's settings block in
//! postgresql.auto.conf is replaced by one holding only the restore_command; then the
//! clone is destroyed and its lease released.

use super::{hydration, settings::Settings, state, Layout};
use crate::error::{io, Error, Result};
use crate::pg::recovery;
use crate::store::Repository;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Why a clone cannot be detached now, or None.
pub fn refusal(layout: &Layout, settings: &Settings, to: &Path) -> Option<String> {
    let name = &settings.name;
    let progress = hydration::progress(&layout.scratch());
    if !settings.hydrate {
        return Some(format!(
            "clone {name} is not hydrated (made without --hydrate): it needs the repository's \
             chunks; `pgsnapfs restore` makes a plain data directory instead"
        ));
    }
    match progress {
        Some(p) if p.complete => {}
        p => {
            let p = p.unwrap_or_default();
            return Some(format!(
                "clone {name} is not fully hydrated yet ({} of {} bytes); keep it mounted \
                 (`pgsnapfs clone mount {name}` resumes hydration) and detach once `pgsnapfs \
                 clone list` shows it hydrated",
                p.hydrated, p.total
            ));
        }
    }
    if layout.mount_state() != state::Mount::Yes {
        return Some(format!(
            "clone {name} is not mounted: `pgsnapfs clone mount {name}`, then detach"
        ));
    }
    if let Some(pid) = state::server(&layout.data()) {
        return Some(format!(
            "a server runs on clone {name} (pid {pid}): stop it (runuser -u {} -- pg_ctl -D {} \
             stop -m fast), then detach; start it on {} afterwards",
            settings.owner,
            layout.data().display(),
            to.display()
        ));
    }
    let occupied = fs::read_dir(to).is_ok_and(|mut entries| entries.next().is_some());
    occupied.then(|| {
        format!(
            "{} is not empty: detach into a new or empty directory",
            to.display()
        )
    })
}

/// Detaches the clone into `to` (see the module's docs).
pub fn detach(repo: &Repository, layout: &Layout, settings: &Settings, to: &Path) -> Result<()> {
    if let Some(why) = refusal(layout, settings, to) {
        return Err(Error::BadInput(why));
    }
    let data = layout.data();
    let copied = copy_tree(&data, to)
        .and_then(|()| copy_tree(&layout.scratch().join("pg_wal"), &to.join("pg_wal")))
        .and_then(|()| keep_restore_command(&to.join("postgresql.auto.conf")))
        .and_then(|()| sync_dir(to));
    if let Err(e) = copied {
        let _ = fs::remove_dir_all(to);
        return Err(e);
    }
    super::destroy(repo, layout, settings)
}

/// Copies the tree at `from` to `to` (created), owners, modes and times kept, each file
/// synced. A link named pg_wal at the top is left out (copied from where it points).
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    let meta = fs::metadata(from).map_err(io(format!("stat {}", from.display())))?;
    fs::DirBuilder::new()
        .mode(meta.mode() & 0o7777)
        .create(to)
        .or_else(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => Ok(()),
            _ => Err(e),
        })
        .map_err(io(format!("create {}", to.display())))?;
    own(to, &meta)?;
    fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777))
        .map_err(io(format!("chmod {}", to.display())))?;
    for entry in fs::read_dir(from).map_err(io(format!("list {}", from.display())))? {
        let entry = entry.map_err(io(format!("list {}", from.display())))?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let meta = fs::symlink_metadata(&src).map_err(io(format!("stat {}", src.display())))?;
        if meta.is_dir() {
            copy_tree(&src, &dst)?;
        } else if meta.file_type().is_symlink() {
            if entry.file_name() == "pg_wal" {
                continue;
            }
            let target = fs::read_link(&src).map_err(io(format!("read {}", src.display())))?;
            std::os::unix::fs::symlink(&target, &dst)
                .map_err(io(format!("link {}", dst.display())))?;
            std::os::unix::fs::lchown(&dst, Some(meta.uid()), Some(meta.gid()))
                .map_err(io(format!("chown {}", dst.display())))?;
        } else if meta.is_file() {
            copy_file(&src, &dst, &meta)?;
        }
    }
    sync_dir(to)
}

fn copy_file(src: &Path, dst: &Path, meta: &fs::Metadata) -> Result<()> {
    let mut input = fs::File::open(src).map_err(io(format!("open {}", src.display())))?;
    let mut out = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(meta.mode() & 0o7777)
        .open(dst)
        .map_err(io(format!("create {}", dst.display())))?;
    std::io::copy(&mut input, &mut out).map_err(io(format!("copy {}", src.display())))?;
    out.set_modified(
        meta.modified()
            .map_err(io(format!("stat {}", src.display())))?,
    )
    .and_then(|()| out.sync_all())
    .map_err(io(format!("write {}", dst.display())))?;
    own(dst, meta)
}

fn own(path: &Path, meta: &fs::Metadata) -> Result<()> {
    std::os::unix::fs::chown(path, Some(meta.uid()), Some(meta.gid()))
        .map_err(io(format!("chown {}", path.display())))
}

fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(format!("sync {}", dir.display())))
}

/// The view's settings block, with only its restore_command left: the detached server
/// runs on the cluster's own settings.
fn keep_restore_command(path: &Path) -> Result<()> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(format!("read {}", path.display()))(e)),
    };
    let out = restore_command_only(&text);
    let meta = fs::metadata(path).map_err(io(format!("stat {}", path.display())))?;
    let tmp = path.with_extension("conf.tmp");
    fs::write(&tmp, out.as_bytes())
        .and_then(|()| fs::File::open(&tmp)?.sync_all())
        .and_then(|()| fs::rename(&tmp, path))
        .map_err(io(format!("rewrite {}", path.display())))?;
    own(path, &meta)
}

/// postgresql.auto.conf `text` with the pgsnapfs block holding only its restore_command.
pub fn restore_command_only(text: &str) -> String {
    let mut in_block = false;
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_end();
        if trimmed == recovery::BLOCK_BEGIN {
            in_block = true;
        } else if trimmed == recovery::BLOCK_END {
            in_block = false;
        } else if in_block && !trimmed.starts_with("restore_command") {
            continue;
        }
        out.push_str(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_restore_command_of_the_block_is_kept() {
        let text = format!(
            "work_mem = '8MB'\n{}\nrestore_command = 'pgsnapfs fetch %f %p'\n\
             recovery_target = 'immediate'\nfsync = on\nhba_file = '/clones/a/data/pg_hba.conf'\n{}\n",
            recovery::BLOCK_BEGIN,
            recovery::BLOCK_END
        );
        assert_eq!(
            restore_command_only(&text),
            format!(
                "work_mem = '8MB'\n{}\nrestore_command = 'pgsnapfs fetch %f %p'\n{}\n",
                recovery::BLOCK_BEGIN,
                recovery::BLOCK_END
            )
        );
    }
}
