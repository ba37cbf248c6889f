//! A pgBackRest repository in a local directory: its info files, manifests and the bytes of
//! each backed-up file, checked against the SHA-1 and size the manifest records.

use super::block;
use super::cipher::{self, Decrypting};
use super::info::{ArchiveInfo, BackupInfo};
use super::ini::Ini;
use super::manifest::{BlockIncr, File, Manifest, Storage};
use super::Error;
use sha1::{Digest, Sha1};
use std::collections::HashMap;
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
    ///
    /// `pass` is the user's passphrase for `backup.info` and `archive.info`: an encrypted one
    /// that does not decrypt to a sealed info file then means a wrong passphrase (exit 2), as
    /// a wrong key can leave valid padding. Manifests' passphrases come from `backup.info`:
    /// a failure there is damage.
    fn load_ini(&self, path: &Path, pass: Option<&[u8]>) -> Result<Ini, Error> {
        let users = path.file_name().is_some_and(|n| n != "backup.manifest");
        let mut first_error = None;
        for candidate in [path.to_path_buf(), copy_of(path)] {
            let object = self.object(&candidate);
            let result = match fs::read(&candidate) {
                Ok(bytes) => {
                    let encrypted = cipher::is_encrypted(&bytes);
                    let parsed = decrypted(bytes, pass, &object).and_then(|plain| {
                        match String::from_utf8(plain) {
                            Ok(text) => Ini::parse(&text, &object),
                            Err(_) => Err(Error::corrupt(&object, "not UTF-8 text")),
                        }
                    });
                    match parsed {
                        Err(Error::Corrupt { reason, .. }) if encrypted && users => {
                            Err(Error::Passphrase(format!(
                                "cannot decrypt {object} ({reason}): is the passphrase the \
                                 repository's repo1-cipher-pass?"
                            )))
                        }
                        other => other,
                    }
                }
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
    ) -> Result<(PathBuf, u64), Error> {
        let dir = self.label_dir(holder, file)?;
        Ok(match file.bundle {
            Some((id, offset)) => (dir.join("bundle").join(id.to_string()), offset),
            None => (dir.join(format!("{}{}", file.name, compress.ext())), 0),
        })
    }

    /// The directory of backup `label`, which holds (a part of) `file`: an error if the
    /// label or the file's name would lead out of it (`..`, `/`), or to another file, which
    /// the SHA-1 check would then confirm a guess at.
    fn label_dir(&self, label: &str, file: &File) -> Result<PathBuf, Error> {
        let parts_ok = |name: &str| {
            name.split('/')
                .all(|part| !matches!(part, "" | "." | "..") && !part.contains('\0'))
        };
        if !parts_ok(label) || label.contains('/') || !parts_ok(&file.name) {
            return Err(Error::corrupt(
                self.object(&self.backup_dir()),
                format!(
                    "file {:?} of backup {label:?}: a name that leads out of the backup",
                    file.name
                ),
            ));
        }
        Ok(self.backup_dir().join(label))
    }

    /// A reader of `file`'s content, held by backup `holder` that stores files as `storage`
    /// says, that checks its size and SHA-1 as it is read (see [`Checked`]).
    pub fn open_file(
        &self,
        holder: &str,
        storage: &Storage,
        file: &File,
    ) -> Result<Checked<Box<dyn Read>>, Error> {
        let Some(checksum) = file.checksum.clone() else {
            // pgBackRest records no checksum for an empty file only.
            if file.size > 0 {
                return Err(Error::corrupt(
                    format!("backup/{}/{holder}/backup.manifest", self.stanza),
                    format!("{}: {} bytes but no checksum", file.name, file.size),
                ));
            }
            return Ok(Checked::new(
                Box::new(io::empty()),
                file.name.clone(),
                String::new(),
                hex::encode(Sha1::digest(b"")),
                0,
            ));
        };
        let (path, offset) = self.locate(holder, storage.compress, file)?;
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
        let raw = storage.bundle_raw && file.bundle.is_some();
        if let Some(pass) = &storage.cipher_pass {
            stored = Box::new(match raw {
                true => Decrypting::new_raw(stored, pass.as_bytes()),
                false => Decrypting::new(stored, pass.as_bytes()),
            });
        }
        let decoded = match raw {
            true => storage.compress.raw_decoder(stored),
            false => storage.compress.decoder(stored),
        }
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

impl PgbrRepo {
    /// A reader of block-incremental `file` of backup `m` (see [`super::block`]), checked as
    /// [`PgbrRepo::open_file`]'s; `storages` has how each backup of `m.references` stores its
    /// files.
    pub fn open_block_file(
        &self,
        m: &Manifest,
        storages: &HashMap<String, Storage>,
        file: &File,
        incr: BlockIncr,
    ) -> Result<Checked<Box<dyn Read>>, Error> {
        let holder = m.holder(file);
        let (bundle_id, offset) = file.bundle.unwrap_or((0, 0));
        let path = self.block_object(holder, bundle_id, file)?;
        let object = self.object(&path);
        let storage = storages.get(holder).ok_or_else(|| {
            Error::corrupt(&object, format!("{}: unknown backup {holder}", file.name))
        })?;
        let map_at = file
            .repo_size
            .checked_sub(incr.map_size)
            .and_then(|at| at.checked_add(offset))
            .ok_or_else(|| {
                Error::corrupt(
                    &object,
                    format!(
                        "{}: a block map of {} bytes in {} stored bytes",
                        file.name, incr.map_size, file.repo_size
                    ),
                )
            })?;
        let mut map = self.read_range(&path, map_at, incr.map_size)?;
        if let Some(pass) = &storage.cipher_pass {
            map = block::read_all(Decrypting::new_raw(&map[..], pass.as_bytes()))
                .map_err(|e| Error::corrupt(&object, format!("{}: block map: {e}", file.name)))?;
        }
        let blocks = file.size.div_ceil(incr.block_size);
        let items = block::parse_map(&map, incr.block_size, incr.checksum_size, blocks)
            .map_err(|e| Error::corrupt(&object, format!("{}: block map: {e}", file.name)))?;
        if items.len() as u64 != blocks {
            return Err(Error::corrupt(
                &object,
                format!(
                    "{}: the block map lists {} blocks for {} bytes",
                    file.name,
                    items.len(),
                    file.size
                ),
            ));
        }
        let mut supers = Vec::new();
        for item in &items {
            let label = m.references.get(item.reference).ok_or_else(|| {
                Error::corrupt(
                    &object,
                    format!("{}: block map reference {}", file.name, item.reference),
                )
            })?;
            let stored = storages.get(label).cloned().ok_or_else(|| {
                Error::corrupt(&object, format!("{}: unknown backup {label}", file.name))
            })?;
            supers.push((self.block_object(label, item.bundle_id, file)?, stored));
        }
        let reader = BlockReader {
            root: self.root.clone(),
            items,
            supers,
            block_size: incr.block_size,
            remaining: file.size,
            at: 0,
            cache: Vec::new(),
            buf: Vec::new(),
            buf_at: 0,
            name: file.name.clone(),
        };
        let checksum = file.checksum.clone().unwrap_or_default();
        Ok(Checked::new(
            Box::new(reader),
            file.name.clone(),
            object,
            checksum,
            file.size,
        ))
    }

    /// The object holding super blocks of `file` written by backup `label`: a bundle, or
    /// (bundle id 0) the file's own `.pgbi` object.
    fn block_object(&self, label: &str, bundle_id: u64, file: &File) -> Result<PathBuf, Error> {
        let dir = self.label_dir(label, file)?;
        Ok(match bundle_id {
            0 => dir.join(format!("{}.pgbi", file.name)),
            id => dir.join("bundle").join(id.to_string()),
        })
    }

    fn read_range(&self, path: &Path, offset: u64, len: u64) -> Result<Vec<u8>, Error> {
        read_range(&self.root, path, offset, len)
    }
}

/// `len` bytes at `offset` of `path`, an object of the repository at `root`.
fn read_range(root: &Path, path: &Path, offset: u64, len: u64) -> Result<Vec<u8>, Error> {
    let object = path
        .strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string();
    let io_err = |source| Error::Io {
        object: object.clone(),
        source,
    };
    let mut f = fs::File::open(path).map_err(|e| match e.kind() {
        ErrorKind::NotFound => Error::Missing {
            object: object.clone(),
            why: String::new(),
        },
        _ => io_err(e),
    })?;
    // Lengths come from the repository: checked against the object before any allocation.
    let size = f.metadata().map_err(io_err)?.len();
    let end = offset.checked_add(len).filter(|end| *end <= size);
    let (Some(end), Ok(len)) = (end, usize::try_from(len)) else {
        return Err(Error::corrupt(
            &object,
            format!("{size} bytes, shorter than the {len} bytes at {offset} the manifest says"),
        ));
    };
    f.seek(SeekFrom::Start(offset)).map_err(io_err)?;
    let mut data = vec![0u8; len];
    f.read_exact(&mut data).map_err(|e| match e.kind() {
        ErrorKind::UnexpectedEof => Error::corrupt(&object, format!("shorter than {end} bytes")),
        _ => io_err(e),
    })?;
    Ok(data)
}

/// The largest super block read (pgBackRest's are at most a few MiB): a bigger one is damage.
const MAX_SUPER_BLOCK: u64 = 64 << 20;

/// Super blocks kept decoded while a block-incremental file is read.
const SUPER_BLOCK_CACHE: usize = 16;

/// A super block: its object and offset.
type SuperBlockKey = (PathBuf, u64);

/// A block-incremental file's bytes, block after block.
struct BlockReader {
    root: PathBuf,
    items: Vec<block::MapItem>,
    /// Each item's super block object, and how the backup that wrote it stores files.
    supers: Vec<(PathBuf, Storage)>,
    block_size: u64,
    remaining: u64,
    at: usize,
    /// Decoded super blocks: (object, offset) and their blocks.
    cache: Vec<(SuperBlockKey, Vec<Vec<u8>>)>,
    buf: Vec<u8>,
    buf_at: usize,
    name: String,
}

impl BlockReader {
    fn next_block(&mut self) -> io::Result<bool> {
        let Some(item) = self.items.get(self.at).copied() else {
            return Ok(false);
        };
        let (path, stored_as) = self.supers[self.at].clone();
        let key = (path.clone(), item.offset);
        let bad = |e: String| io::Error::new(ErrorKind::InvalidData, e);
        let pos = match self.cache.iter().position(|(k, _)| *k == key) {
            Some(p) => p,
            None => {
                let stored = read_range(&self.root, &path, item.offset, item.size)
                    .map_err(|e| bad(e.to_string()))?;
                let mut compressed = block::unchunk(&stored).map_err(|e| {
                    bad(format!(
                        "{}: {e}",
                        path.strip_prefix(&self.root).unwrap_or(&path).display()
                    ))
                })?;
                if let Some(pass) = &stored_as.cipher_pass {
                    compressed =
                        block::read_all(Decrypting::new_raw(&compressed[..], pass.as_bytes()))?;
                }
                // Each block follows a varint of at most 10 bytes; more is damage.
                let most = item
                    .super_block_size
                    .saturating_add(item.super_block_size.div_ceil(self.block_size) * 10);
                if most > MAX_SUPER_BLOCK {
                    return Err(bad(format!(
                        "{}: a super block of {} bytes",
                        self.name, item.super_block_size
                    )));
                }
                let plain = block::read_all(
                    stored_as
                        .compress
                        .raw_decoder(&compressed[..])?
                        .take(most + 1),
                )?;
                if plain.len() as u64 > most {
                    return Err(bad(format!(
                        "{}: a super block decompresses to more than its {} bytes",
                        self.name, item.super_block_size
                    )));
                }
                let blocks = block::blocks(&plain, item.super_block_size, self.block_size)
                    .map_err(|e| {
                        bad(format!(
                            "{}: {e}",
                            path.strip_prefix(&self.root).unwrap_or(&path).display()
                        ))
                    })?
                    .into_iter()
                    .map(<[u8]>::to_vec)
                    .collect();
                if self.cache.len() == SUPER_BLOCK_CACHE {
                    self.cache.remove(0);
                }
                self.cache.push((key, blocks));
                self.cache.len() - 1
            }
        };
        let blocks = &self.cache[pos].1;
        let block = blocks.get(item.block as usize).ok_or_else(|| {
            bad(format!(
                "{}: block {} is not in its super block of {} blocks",
                self.name,
                item.block,
                blocks.len()
            ))
        })?;
        let len = (block.len() as u64).min(self.remaining) as usize;
        self.buf = block[..len].to_vec();
        self.buf_at = 0;
        self.remaining -= len as u64;
        self.at += 1;
        Ok(true)
    }
}

impl Read for BlockReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.buf_at == self.buf.len() {
            if !self.next_block()? {
                return Ok(0);
            }
        }
        let n = out.len().min(self.buf.len() - self.buf_at);
        out[..n].copy_from_slice(&self.buf[self.buf_at..self.buf_at + n]);
        self.buf_at += n;
        Ok(n)
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
             (repo1-cipher-pass) in PGBACKREST_REPO1_CIPHER_PASS, or with \
             --from-passphrase-file or --from-passphrase-command (import), --passphrase-file \
             or --passphrase-command (list, info)"
        )));
    };
    let mut out = Vec::new();
    Decrypting::new(&bytes[..], pass)
        .read_to_end(&mut out)
        .map_err(|e| Error::corrupt(object, format!("cannot be decrypted: {e}")))?;
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
                // A stream longer than recorded (a decompression bomb, say) is not read on.
                if self.read > self.size {
                    let why = format!("longer than the {} bytes the manifest records", self.size);
                    self.failed.get_or_insert_with(|| why.clone());
                    return Err(io::Error::new(ErrorKind::InvalidData, why));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pgbackrest::compress::Compress;
    use sha1::{Digest, Sha1};

    /// A stream longer than the manifest's size (a decompression bomb) fails as soon as it
    /// passes that size, and is reported as corruption.
    #[test]
    fn a_stream_running_long_stops_at_the_recorded_size() {
        let bomb = io::repeat(0).take(100 << 20);
        let mut c = Checked::new(bomb, "f".into(), "o".into(), String::new(), 10);
        let mut buf = Vec::new();
        assert!(c.read_to_end(&mut buf).is_err());
        assert!(
            buf.len() < 1 << 20,
            "stopped early: {} bytes read",
            buf.len()
        );
        assert!(c.failure().is_some_and(|e| e.exit_code() == 3));
    }

    /// A file of backup `F` (zstd, optionally at an offset in bundle 1) read and checked.
    #[test]
    fn files_are_checked_against_the_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let fixtures = format!("{}/src/pgbackrest/testdata", env!("CARGO_MANIFEST_DIR"));
        let backup = dir.path().join("backup/main");
        fs::create_dir_all(backup.join("F/pg_data/base")).unwrap();
        fs::create_dir_all(backup.join("F/bundle")).unwrap();
        fs::copy(
            format!("{fixtures}/backup.info"),
            backup.join("backup.info"),
        )
        .unwrap();
        let repo = PgbrRepo::open(dir.path(), "main", None).unwrap();
        let content = b"a relation's pages".repeat(100);
        let stored = zstd::encode_all(&content[..], 1).unwrap();
        fs::write(backup.join("F/pg_data/base/16384.zst"), &stored).unwrap();
        let mut bundle = b"another file first".to_vec();
        bundle.extend_from_slice(&stored);
        fs::write(backup.join("F/bundle/1"), &bundle).unwrap();
        let storage = Storage {
            compress: Compress::Zst,
            cipher_pass: None,
            bundle_raw: false,
        };
        let file = |checksum: &str, bundle| File {
            name: "pg_data/base/16384".into(),
            size: content.len() as u64,
            checksum: Some(checksum.into()),
            reference: None,
            bundle,
            repo_size: stored.len() as u64,
            timestamp: 0,
            mode: 0o600,
            block_incremental: None,
        };
        let good = hex::encode(Sha1::digest(&content));
        for bundle in [None, Some((1, 18))] {
            let mut r = repo.open_file("F", &storage, &file(&good, bundle)).unwrap();
            let mut out = Vec::new();
            r.read_to_end(&mut out).unwrap();
            assert_eq!(out, content);
            r.verify().unwrap();
        }
        let mut r = repo
            .open_file("F", &storage, &file(&"0".repeat(40), None))
            .unwrap();
        r.read_to_end(&mut Vec::new()).unwrap();
        match r.verify() {
            Err(Error::Corrupt { object, reason }) => {
                assert_eq!(object, "backup/main/F/pg_data/base/16384.zst");
                assert!(reason.contains("SHA-1"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        // A bundle offset that misses the file: not a zstd stream.
        let mut r = repo
            .open_file("F", &storage, &file(&good, Some((1, 3))))
            .unwrap();
        assert!(r.read_to_end(&mut Vec::new()).is_err());
        assert!(matches!(r.failure(), Some(Error::Corrupt { .. })));
        // A file with bytes but no checksum is damage, not an empty file.
        let unchecked = File {
            checksum: None,
            ..file(&good, None)
        };
        let e = repo.open_file("F", &storage, &unchecked).err().unwrap();
        assert!(e.to_string().contains("no checksum"), "{e}");
        // A name leading out of the backup is refused, before anything is opened.
        let escaping = File {
            name: "pg_data/../../../../etc/passwd".into(),
            ..file(&good, None)
        };
        let e = repo.open_file("F", &storage, &escaping).err().unwrap();
        assert!(e.to_string().contains("leads out"), "{e}");
        let e = repo
            .open_file("../F", &storage, &file(&good, None))
            .err()
            .unwrap();
        assert!(e.to_string().contains("leads out"), "{e}");
        // A bundle offset and length past the object's end: refused before reading.
        let past = File {
            repo_size: 1 << 40,
            ..file(&good, Some((1, 18)))
        };
        let e = repo.read_range(&backup.join("F/bundle/1"), 18, past.repo_size);
        assert!(matches!(e, Err(Error::Corrupt { .. })), "{e:?}");
    }
}
