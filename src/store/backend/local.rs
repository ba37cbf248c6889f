//! The local-directory back end: one file per object, written as temp file + fsync + link.
//!
//! `link(2)` rather than `rename(2)` publishes the object, because link fails when the name is
//! taken, which gives "never overwrite a different object" without a race. The directory is
//! fsynced afterwards so the new name survives a crash.
//!
//! The repository's top directory decides who owns everything below it: every file and
//! directory a command creates gets its owner and group, and its mode's user and group bits
//! (never access for others). Root writes on the owner's behalf; any other user who is not
//! the owner is refused before anything is written, so a command run as the wrong user can
//! never leave objects the owner's own commands (the archiver) cannot read or replace.

use super::{Backend, BackendError, Result};
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Temporary files live in the repository so the final link stays on one filesystem.
const TMP_DIR: &str = "tmp";

/// A repository in a local directory: each object is a file, written to a temporary file, fsynced and renamed into place.
pub struct LocalBackend {
    root: PathBuf,
    /// Decided at the first write, from the top directory.
    ownership: OnceLock<Ownership>,
}

/// How this process creates files and directories in the repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ownership {
    /// The owner and group to give them: set when root writes for another owner.
    chown: Option<(u32, u32)>,
    dir_mode: u32,
    file_mode: u32,
}

/// A process that may not write to the repository: neither its owner nor root.
#[derive(Debug, PartialEq, Eq)]
struct NotOwner {
    owner: u32,
}

/// What a process of effective ids `euid`/`egid` does in a repository whose top directory has
/// `uid`, `gid` and `mode`. Directories keep the top's user and group bits (and set-group-id,
/// so a shared group carries down); files the same without execute.
fn ownership(
    euid: u32,
    egid: u32,
    uid: u32,
    gid: u32,
    mode: u32,
) -> std::result::Result<Ownership, NotOwner> {
    let dir_mode = mode & 0o2770;
    let file_mode = mode & 0o660;
    let chown = match euid {
        e if e == uid => None,
        0 if (uid, gid) == (0, egid) => None,
        0 => Some((uid, gid)),
        _ => return Err(NotOwner { owner: uid }),
    };
    Ok(Ownership {
        chown,
        dir_mode,
        file_mode,
    })
}

/// A user's name, or `uid N` when it has none.
pub fn user_name(uid: u32) -> String {
    let mut buf = vec![0u8; 16384];
    // SAFETY: zeroed passwd is a valid out-parameter; getpwuid_r writes only into pwd and buf
    // (whose length it is given) and sets `found` to &pwd or null.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        let r = libc::getpwuid_r(
            uid,
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut found,
        );
        if r == 0 && !found.is_null() {
            return std::ffi::CStr::from_ptr(pwd.pw_name)
                .to_string_lossy()
                .into_owned();
        }
    }
    format!("uid {uid}")
}

fn effective_ids() -> (u32, u32) {
    // SAFETY: plain id queries.
    unsafe { (libc::geteuid(), libc::getegid()) }
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl LocalBackend {
    /// Opens a back end rooted at an existing directory.
    pub fn open(root: &Path) -> LocalBackend {
        LocalBackend {
            root: root.to_path_buf(),
            ownership: OnceLock::new(),
        }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    /// Maps an I/O error on `key` to a back-end error; a permission error says whose the
    /// object and the repository are, and what to do.
    fn io<'a>(
        &'a self,
        op: &'static str,
        key: &'a str,
    ) -> impl FnOnce(std::io::Error) -> BackendError + 'a {
        move |source| match source.kind() {
            ErrorKind::NotFound => BackendError::NotFound {
                key: key.to_string(),
            },
            ErrorKind::StorageFull | ErrorKind::QuotaExceeded => BackendError::NoSpace {
                op,
                key: key.to_string(),
            },
            ErrorKind::PermissionDenied => BackendError::Denied {
                op,
                key: key.to_string(),
                hint: self.denied_hint(key),
            },
            _ => BackendError::Io {
                op,
                key: key.to_string(),
                source,
            },
        }
    }

    fn denied_hint(&self, key: &str) -> String {
        let owner_of = |p: &Path| fs::metadata(p).ok().map(|m| user_name(m.uid()));
        let (me, _) = effective_ids();
        let me = user_name(me);
        let location = self.root.display();
        match (owner_of(&self.path(key)), owner_of(&self.root)) {
            (Some(object), Some(repo)) if object != repo => format!(
                "it belongs to {object}, the repository to {repo}: give it back with \
                 `chown -R {repo}: {location}` as root, then run the command as {repo}"
            ),
            (_, Some(repo)) => format!(
                "the repository belongs to {repo} and this command runs as {me}: run it as \
                 {repo}{}",
                if repo == "root" { "" } else { " (or root)" }
            ),
            (_, None) => {
                format!("{me} cannot reach the repository {location}: run the command as its owner")
            }
        }
    }

    /// How this process creates files here; refuses a user who is neither the owner of the
    /// top directory nor root, before anything is written.
    fn ownership(&self) -> Result<Ownership> {
        if let Some(o) = self.ownership.get() {
            return Ok(*o);
        }
        let top = fs::metadata(&self.root).map_err(self.io("stat", ""))?;
        let (euid, egid) = effective_ids();
        let o = ownership(euid, egid, top.uid(), top.gid(), top.mode()).map_err(|n| {
            BackendError::WrongUser {
                location: self.root.display().to_string(),
                owner: user_name(n.owner),
                user: user_name(euid),
            }
        })?;
        let _ = self.ownership.set(o);
        Ok(o)
    }

    fn temp_path(&self) -> PathBuf {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        self.root
            .join(TMP_DIR)
            .join(format!("{}-{}-{}.tmp", std::process::id(), n, nanos))
    }

    /// Gives a new file or directory its owner and mode (chmod too, as the umask may have
    /// taken bits away).
    fn own(path: &Path, own: &Ownership, mode: u32) -> std::io::Result<()> {
        if let Some((uid, gid)) = own.chown {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
        }
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
    }

    /// Creates `dir` and missing parents below the top directory, owned as `own` says, and
    /// fsyncs each new entry's parent. A directory made for another owner is prepared in
    /// `tmp/` and renamed into place, so no other process ever finds it with the wrong owner.
    fn create_dirs(&self, dir: &Path, own: &Ownership) -> std::io::Result<()> {
        if dir.is_dir() || dir == self.root {
            return Ok(());
        }
        let parent = dir.parent().unwrap_or(&self.root);
        self.create_dirs(parent, own)?;
        let tmp_dir = self.root.join(TMP_DIR);
        let made = if own.chown.is_none() || dir == tmp_dir {
            match fs::DirBuilder::new().mode(own.dir_mode).create(dir) {
                Ok(()) => Self::own(dir, own, own.dir_mode),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(()),
                Err(e) => Err(e),
            }
        } else {
            let staged = self.temp_path();
            fs::DirBuilder::new().mode(0o700).create(&staged)?;
            let placed =
                Self::own(&staged, own, own.dir_mode).and_then(|()| fs::rename(&staged, dir));
            match placed {
                Ok(()) => Ok(()),
                Err(e) => {
                    let _ = fs::remove_dir(&staged);
                    match dir.is_dir() {
                        // Another process made it first.
                        true => return Ok(()),
                        false => Err(e),
                    }
                }
            }
        };
        made.and_then(|()| fsync_dir(parent))
    }

    /// Writes and fsyncs `data` to the temporary file `tmp`, owned as the repository's files
    /// are, and creates `dest`'s directory.
    fn write_temp(&self, tmp: &Path, dest: &Path, data: &[u8], key: &str) -> Result<()> {
        let own = self.ownership()?;
        let write = || -> std::io::Result<()> {
            self.create_dirs(tmp.parent().expect("temp path has a parent"), &own)?;
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(own.file_mode)
                .open(tmp)?;
            if let Some((uid, gid)) = own.chown {
                std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
            }
            f.set_permissions(fs::Permissions::from_mode(own.file_mode))?;
            f.write_all(data)?;
            f.sync_all()?;
            self.create_dirs(dest.parent().expect("object path has a parent"), &own)
        };
        write().map_err(self.io("write", key))
    }

    fn same_content(path: &Path, data: &[u8]) -> std::io::Result<bool> {
        let mut f = File::open(path)?;
        if f.metadata()?.len() != data.len() as u64 {
            return Ok(false);
        }
        let mut buf = vec![0u8; 1 << 20];
        let mut pos = 0;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                return Ok(pos == data.len());
            }
            if data.get(pos..pos + n) != Some(&buf[..n]) {
                return Ok(false);
            }
            pos += n;
        }
    }
}

impl Backend for LocalBackend {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn get(&self, key: &str) -> Result<Vec<u8>> {
        fs::read(self.path(key)).map_err(self.io("read", key))
    }

    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let mut f = File::open(self.path(key)).map_err(self.io("open", key))?;
        f.seek(SeekFrom::Start(offset))
            .map_err(self.io("seek", key))?;
        let mut out = Vec::with_capacity(len as usize);
        f.take(len)
            .read_to_end(&mut out)
            .map_err(self.io("read", key))?;
        Ok(out)
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        self.put_new(key, data).map(drop)
    }

    fn put_new(&self, key: &str, data: &[u8]) -> Result<bool> {
        let dest = self.path(key);
        if dest.exists() {
            return match Self::same_content(&dest, data).map_err(self.io("compare", key))? {
                true => Ok(false),
                false => Err(BackendError::Conflict {
                    key: key.to_string(),
                }),
            };
        }
        let tmp = self.temp_path();
        let result = self.write_temp(&tmp, &dest, data, key).and_then(|()| {
            match fs::hard_link(&tmp, &dest) {
                Ok(()) => fsync_dir(dest.parent().expect("object path has a parent"))
                    .map(|()| true)
                    .map_err(self.io("fsync directory of", key)),
                // Someone else published it first: fine if it is the same object.
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    match Self::same_content(&dest, data).map_err(self.io("compare", key))? {
                        true => Ok(false),
                        false => Err(BackendError::Conflict {
                            key: key.to_string(),
                        }),
                    }
                }
                Err(e) => Err(self.io("link", key)(e)),
            }
        });
        let _ = fs::remove_file(&tmp);
        result
    }

    /// rename(2) swaps the name atomically: readers see the old file or the new one.
    fn replace(&self, key: &str, data: &[u8]) -> Result<()> {
        let dest = self.path(key);
        let tmp = self.temp_path();
        let result = self.write_temp(&tmp, &dest, data, key).and_then(|()| {
            fs::rename(&tmp, &dest).map_err(self.io("rename", key))?;
            fsync_dir(dest.parent().expect("object path has a parent"))
                .map_err(self.io("fsync directory of", key))
        });
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut stack = vec![self.path(prefix)];
        while let Some(dir) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(self.io("list", prefix)(e)),
            };
            for entry in entries {
                let entry = entry.map_err(self.io("list", prefix))?;
                let path = entry.path();
                if entry.file_type().map_err(self.io("list", prefix))?.is_dir() {
                    stack.push(path);
                } else if let Ok(rel) = path.strip_prefix(&self.root) {
                    out.push(rel.to_string_lossy().into_owned());
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Reads the whole directory (a local listing costs no request), then keeps the tail.
    fn list_after(&self, prefix: &str, start_after: &str) -> Result<Vec<String>> {
        let mut keys = self.list(prefix)?;
        keys.retain(|k| k.as_str() > start_after);
        Ok(keys)
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.ownership()?;
        let path = self.path(key);
        fs::remove_file(&path).map_err(self.io("delete", key))?;
        fsync_dir(path.parent().expect("object path has a parent")).map_err(self.io("fsync", key))
    }

    fn exists(&self, key: &str) -> Result<bool> {
        match fs::symlink_metadata(self.path(key)) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(self.io("stat", key)(e)),
        }
    }

    fn size(&self, key: &str) -> Result<u64> {
        Ok(fs::metadata(self.path(key))
            .map_err(self.io("stat", key))?
            .len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_is_create_only_and_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::open(dir.path());
        assert!(b.put_new("a/b/c", b"hello").unwrap(), "created");
        b.put("a/b/c", b"hello").unwrap();
        assert!(!b.put_new("a/b/c", b"hello").unwrap(), "already there");
        assert!(matches!(
            b.put("a/b/c", b"other"),
            Err(BackendError::Conflict { .. })
        ));
        assert_eq!(b.get("a/b/c").unwrap(), b"hello");
        assert_eq!(b.get_range("a/b/c", 1, 3).unwrap(), b"ell");
        assert_eq!(b.get_range("a/b/c", 3, 100).unwrap(), b"lo");
        assert_eq!(b.size("a/b/c").unwrap(), 5);
        assert!(b.size("nope").unwrap_err().is_not_found());
        assert_eq!(b.list("a/").unwrap(), vec!["a/b/c".to_string()]);
        assert!(b.get("nope").unwrap_err().is_not_found());
        assert_eq!(b.size("a/b/c").unwrap(), 5);
        b.replace("a/b/c", b"replaced").unwrap();
        assert_eq!(b.get("a/b/c").unwrap(), b"replaced");
        b.replace("a/new", b"fresh").unwrap();
        assert_eq!(b.get("a/new").unwrap(), b"fresh");
        b.delete("a/b/c").unwrap();
        assert!(!b.exists("a/b/c").unwrap());
        // No temporary files are left behind.
        assert_eq!(fs::read_dir(dir.path().join(TMP_DIR)).unwrap().count(), 0);
    }

    #[test]
    fn ownership_follows_the_top_directory() {
        // The owner writes as itself; modes keep user and group bits only.
        let own = ownership(1000, 1000, 1000, 1000, 0o40755).unwrap();
        assert_eq!(
            own,
            Ownership {
                chown: None,
                dir_mode: 0o750,
                file_mode: 0o640
            }
        );
        // Root writes for the owner; a shared group's set-group-id bit carries down.
        let own = ownership(0, 0, 1000, 50, 0o42770).unwrap();
        assert_eq!(own.chown, Some((1000, 50)));
        assert_eq!((own.dir_mode, own.file_mode), (0o2770, 0o660));
        // Root in its own repository changes nothing.
        assert_eq!(ownership(0, 0, 0, 0, 0o40700).unwrap().chown, None);
        // Anyone else is refused, and told whose it is.
        assert_eq!(
            ownership(1001, 1000, 1000, 1000, 0o40770),
            Err(NotOwner { owner: 1000 })
        );
    }

    #[test]
    fn new_files_and_directories_take_the_top_directory_mode() {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o750)).unwrap();
        let b = LocalBackend::open(dir.path());
        b.put("packs/ab/x", b"x").unwrap();
        b.replace("locks/l", b"l").unwrap();
        let mode = |p: &str| fs::metadata(dir.path().join(p)).unwrap().mode() & 0o7777;
        assert_eq!(mode("packs"), 0o750);
        assert_eq!(mode("packs/ab"), 0o750);
        assert_eq!(mode("packs/ab/x"), 0o640);
        assert_eq!(mode("locks/l"), 0o640);
    }
}
