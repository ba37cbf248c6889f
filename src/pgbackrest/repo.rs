//! A pgBackRest repository in a local directory: its info files, manifests and the bytes of
//! each backed-up file, checked against the SHA-1 and size the manifest records.

use super::cipher::{self, Decrypting};
use super::info::{ArchiveInfo, BackupInfo};
use super::ini::Ini;
use super::manifest::{File, Manifest, Storage};
use super::Error;
use sha1::{Digest, Sha1};
use std::fs;
use std::io::{self, ErrorKind, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// A stanza of a pgBackRest repository, with its `backup.info` and `archive.info` read.
pub struct PgbrRepo {
    root: PathBuf,
    stanza: String,
    info: BackupInfo,
    archive: Option<ArchiveInfo>,
}

impl PgbrRepo {
    /// The stanza `stanza` of the repository at `root` (its `repo1-path`); `pass` is the
    /// repository's passphrase (`repo1-cipher-pass`), if it is encrypted.
    pub fn open(root: &Path, stanza: &str, pass: Option<&[u8]>) -> Result<PgbrRepo, Error> {
        let mut repo = PgbrRepo {
            root: root.to_path_buf(),
            stanza: stanza.to_string(),
            info: BackupInfo {
                backups: Vec::new(),
                history: Vec::new(),
                cipher_pass: None,
            },
            archive: None,
        };
        let info = repo.backup_dir().join("backup.info");
        if !info.exists() && !repo.backup_dir().join("backup.info.copy").exists() {
            return Err(Error::Missing {
                object: repo.object(&info),
                why: format!(
                    ": is {} a pgBackRest repository (repo1-path) with a stanza {stanza}?",
                    root.display()
                ),
            });
        }
        let path = repo.backup_dir().join("backup.info");
        let object = repo.object(&path);
        repo.info = BackupInfo::parse(&repo.load_ini(&path, pass)?, &object)?;
        let path = repo.archive_dir().join("archive.info");
        let object = repo.object(&path);
        repo.archive = match repo.load_ini(&path, pass) {
            Ok(ini) => Some(ArchiveInfo::parse(&ini, &object)?),
            Err(Error::Missing { .. }) => None,
            Err(e) => return Err(e),
        };
        Ok(repo)
    }

    /// The stanza's name.
    pub fn stanza(&self) -> &str {
        &self.stanza
    }

    /// The repository's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn backup_dir(&self) -> PathBuf {
        self.root.join("backup").join(&self.stanza)
    }

    pub(super) fn archive_dir(&self) -> PathBuf {
        self.root.join("archive").join(&self.stanza)
    }

    /// `path` as the object name errors show: relative to the repository.
    pub(super) fn object(&self, path: &Path) -> String {
        path.strip_prefix(&self.root)
            .unwrap_or(path)
            .display()
            .to_string()
    }

    /// An info file, or its `.copy` when the file is missing or corrupt (as pgBackRest
    /// reads them: both are written at each change).
    fn load_ini(&self, path: &Path, pass: Option<&[u8]>) -> Result<Ini, Error> {
        let mut first_error = None;
        for candidate in [path.to_path_buf(), copy_of(path)] {
            let object = self.object(&candidate);
            let result = match fs::read(&candidate) {
                Ok(bytes) => match decrypted(bytes, pass, &object) {
                    Ok(bytes) => match String::from_utf8(bytes) {
                        Ok(text) => Ini::parse(&text, &object),
                        Err(_) => Err(Error::corrupt(&object, "not UTF-8 text")),
                    },
                    Err(e) => Err(e),
                },
                Err(e) if e.kind() == ErrorKind::NotFound => Err(Error::Missing {
                    object,
                    why: String::new(),
                }),
                Err(source) => Err(Error::Io { object, source }),
            };
            match result {
                Ok(ini) => return Ok(ini),
                // Both files are encrypted alike: the copy cannot do better.
                Err(e @ Error::Passphrase(_)) => return Err(e),
                Err(e) => {
                    tracing::debug!("{e}");
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.expect("two candidates were tried"))
    }

    /// `backup.info`.
    pub fn backup_info(&self) -> &BackupInfo {
        &self.info
    }

    /// `archive.info`; `None` if the stanza has none.
    pub fn archive_info(&self) -> Option<&ArchiveInfo> {
        self.archive.as_ref()
    }

    /// The manifest of backup `label`.
    pub fn manifest(&self, label: &str) -> Result<Manifest, Error> {
        let path = self.backup_dir().join(label).join("backup.manifest");
        let object = self.object(&path);
        let pass = self.info.cipher_pass.as_deref().map(str::as_bytes);
        let manifest = Manifest::parse(&self.load_ini(&path, pass)?, &object)?;
        if manifest.label != label {
            return Err(Error::corrupt(
                object,
                format!("it is the manifest of backup {}", manifest.label),
            ));
        }
        Ok(manifest)
    }

    /// The repository object that holds `file` of a backup whose directory is `holder` and
    /// compression `compress`: (path, offset).
    fn locate(
        &self,
        holder: &str,
        compress: super::compress::Compress,
        file: &File,
    ) -> (PathBuf, u64) {
        let dir = self.backup_dir().join(holder);
        match file.bundle {
            Some((id, offset)) => (dir.join("bundle").join(id.to_string()), offset),
            None => (dir.join(format!("{}{}", file.name, compress.ext())), 0),
        }
    }

    /// A reader of `file`'s content, held by backup `holder` that stores files as `storage`
    /// says, that checks its size and SHA-1 as it is read (see [`Checked`]).
    pub fn open_file(
        &self,
        holder: &str,
        storage: &Storage,
        file: &File,
    ) -> Result<Checked<Box<dyn Read>>, Error> {
        if file.block_incremental {
            return Err(Error::Unsupported(format!(
                "{}: block-incremental files (repo-block=y) are not read by pgsnapfs yet",
                file.name
            )));
        }
        let Some(checksum) = file.checksum.clone() else {
            return Ok(Checked::new(
                Box::new(io::empty()),
                file.name.clone(),
                String::new(),
                hex::encode(Sha1::digest(b"")),
                0,
            ));
        };
        let (path, offset) = self.locate(holder, storage.compress, file);
        let object = self.object(&path);
        let mut f = fs::File::open(&path).map_err(|e| match e.kind() {
            ErrorKind::NotFound => Error::Missing {
                object: object.clone(),
                why: format!(", which holds {} of backup {holder}", file.name),
            },
            _ => Error::Io {
                object: object.clone(),
                source: e,
            },
        })?;
        f.seek(SeekFrom::Start(offset))
            .map_err(|source| Error::Io {
                object: object.clone(),
                source,
            })?;
        let mut stored: Box<dyn Read> = Box::new(f.take(file.repo_size));
        if let Some(pass) = &storage.cipher_pass {
            stored = Box::new(Decrypting::new(stored, pass.as_bytes()));
        }
        let decoded = storage
            .compress
            .decoder(stored)
            .map_err(|e| Error::corrupt(&object, format!("{}: {e}", file.name)))?;
        Ok(Checked::new(
            decoded,
            file.name.clone(),
            object,
            checksum,
            file.size,
        ))
    }
}

/// The plaintext of an info file: as it is, or decrypted with `pass`.
fn decrypted(bytes: Vec<u8>, pass: Option<&[u8]>, object: &str) -> Result<Vec<u8>, Error> {
    if !cipher::is_encrypted(&bytes) {
        return Ok(bytes);
    }
    let Some(pass) = pass else {
        return Err(Error::Passphrase(format!(
            "{object} is encrypted (repo1-cipher-type): give the repository's passphrase \
             (repo1-cipher-pass) with --from-passphrase-file, --from-passphrase-command or \
             PGBACKREST_REPO1_CIPHER_PASS"
        )));
    };
    let mut out = Vec::new();
    Decrypting::new(&bytes[..], pass)
        .read_to_end(&mut out)
        .map_err(|e| {
            Error::Passphrase(format!(
                "cannot decrypt {object} ({e}): is the passphrase the repository's \
                 repo1-cipher-pass?"
            ))
        })?;
    Ok(out)
}

fn copy_of(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".copy");
    PathBuf::from(s)
}

/// A file's content as it is read, hashed: [`Checked::verify`] then says whether it is what
/// the manifest recorded. A failure to decompress is remembered too, so that the caller can
/// tell corruption from other read errors.
pub struct Checked<R> {
    inner: R,
    name: String,
    object: String,
    expected: String,
    size: u64,
    hasher: Sha1,
    read: u64,
    failed: Option<String>,
}

impl<R: Read> Checked<R> {
    fn new(inner: R, name: String, object: String, expected: String, size: u64) -> Checked<R> {
        Checked {
            inner,
            name,
            object,
            expected,
            size,
            hasher: Sha1::new(),
            read: 0,
            failed: None,
        }
    }

    /// The file's manifest name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// After the whole file was read: whether its size and SHA-1 are the manifest's.
    pub fn verify(self) -> Result<(), Error> {
        let corrupt = |reason: String| Error::Corrupt {
            object: self.object.clone(),
            reason: format!("{}: {reason}", self.name),
        };
        if let Some(why) = &self.failed {
            return Err(corrupt(format!("cannot be decompressed: {why}")));
        }
        if self.read != self.size {
            return Err(corrupt(format!(
                "{} bytes, but the manifest records {}",
                self.read, self.size
            )));
        }
        let actual = hex::encode(self.hasher.finalize());
        if actual != self.expected {
            return Err(corrupt(format!(
                "SHA-1 {actual}, but the manifest records {}",
                self.expected
            )));
        }
        Ok(())
    }

    /// A read error's cause, when the stream could not be decompressed: corruption.
    pub fn failure(&self) -> Option<Error> {
        self.failed.as_ref().map(|why| Error::Corrupt {
            object: self.object.clone(),
            reason: format!("{}: cannot be decompressed: {why}", self.name),
        })
    }
}

impl<R: Read> Read for Checked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.hasher.update(&buf[..n]);
                self.read += n as u64;
                // A stream longer than recorded: stop here, verify reports it.
                if self.read > self.size {
                    self.failed.get_or_insert_with(|| {
                        format!("longer than the {} bytes the manifest records", self.size)
                    });
                }
                Ok(n)
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => Err(e),
            Err(e) => {
                self.failed.get_or_insert_with(|| e.to_string());
                Err(e)
            }
        }
    }
}
