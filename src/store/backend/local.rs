//! The local-directory back end: one file per object, written as temp file + fsync + link.
//!
//! `link(2)` rather than `rename(2)` publishes the object, because link fails when the name is
//! taken, which gives "never overwrite a different object" without a race. The directory is
//! fsynced afterwards so the new name survives a crash.

use super::{Backend, BackendError, Result};
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Temporary files live in the repository so the final link stays on one filesystem.
const TMP_DIR: &str = "tmp";

pub struct LocalBackend {
    root: PathBuf,
}

fn io<'a>(op: &'static str, key: &'a str) -> impl FnOnce(std::io::Error) -> BackendError + 'a {
    move |source| match source.kind() {
        ErrorKind::NotFound => BackendError::NotFound {
            key: key.to_string(),
        },
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded => BackendError::NoSpace {
            op,
            key: key.to_string(),
        },
        _ => BackendError::Io {
            op,
            key: key.to_string(),
            source,
        },
    }
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` and missing parents with mode 0700, fsyncing each new entry's parent.
fn create_dirs(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dirs(parent)?;
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => fsync_dir(dir.parent().unwrap_or(Path::new("/"))),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

impl LocalBackend {
    /// Opens a back end rooted at an existing directory.
    pub fn open(root: &Path) -> LocalBackend {
        LocalBackend {
            root: root.to_path_buf(),
        }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
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

    /// Writes and fsyncs `data` to the temporary file `tmp`, and creates `dest`'s directory.
    fn write_temp(&self, tmp: &Path, dest: &Path, data: &[u8], key: &str) -> Result<()> {
        let write = || -> std::io::Result<()> {
            create_dirs(tmp.parent().expect("temp path has a parent"))?;
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(tmp)?;
            f.write_all(data)?;
            f.sync_all()?;
            create_dirs(dest.parent().expect("object path has a parent"))
        };
        write().map_err(io("write", key))
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
        fs::read(self.path(key)).map_err(io("read", key))
    }

    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let mut f = File::open(self.path(key)).map_err(io("open", key))?;
        f.seek(SeekFrom::Start(offset)).map_err(io("seek", key))?;
        let mut out = Vec::with_capacity(len as usize);
        f.take(len).read_to_end(&mut out).map_err(io("read", key))?;
        Ok(out)
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        let dest = self.path(key);
        if dest.exists() {
            return match Self::same_content(&dest, data).map_err(io("compare", key))? {
                true => Ok(()),
                false => Err(BackendError::Conflict {
                    key: key.to_string(),
                }),
            };
        }
        let tmp = self.temp_path();
        let result = self.write_temp(&tmp, &dest, data, key).and_then(|()| {
            match fs::hard_link(&tmp, &dest) {
                Ok(()) => fsync_dir(dest.parent().expect("object path has a parent"))
                    .map_err(io("fsync directory of", key)),
                // Someone else published it first: fine if it is the same object.
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    match Self::same_content(&dest, data).map_err(io("compare", key))? {
                        true => Ok(()),
                        false => Err(BackendError::Conflict {
                            key: key.to_string(),
                        }),
                    }
                }
                Err(e) => Err(io("link", key)(e)),
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
            fs::rename(&tmp, &dest).map_err(io("rename", key))?;
            fsync_dir(dest.parent().expect("object path has a parent"))
                .map_err(io("fsync directory of", key))
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
                Err(e) => return Err(io("list", prefix)(e)),
            };
            for entry in entries {
                let entry = entry.map_err(io("list", prefix))?;
                let path = entry.path();
                if entry.file_type().map_err(io("list", prefix))?.is_dir() {
                    stack.push(path);
                } else if let Ok(rel) = path.strip_prefix(&self.root) {
                    out.push(rel.to_string_lossy().into_owned());
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key);
        fs::remove_file(&path).map_err(io("delete", key))?;
        fsync_dir(path.parent().expect("object path has a parent")).map_err(io("fsync", key))
    }

    fn exists(&self, key: &str) -> Result<bool> {
        match fs::symlink_metadata(self.path(key)) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io("stat", key)(e)),
        }
    }

    fn size(&self, key: &str) -> Result<u64> {
        Ok(fs::metadata(self.path(key)).map_err(io("stat", key))?.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_is_create_only_and_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::open(dir.path());
        b.put("a/b/c", b"hello").unwrap();
        b.put("a/b/c", b"hello").unwrap();
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
}
