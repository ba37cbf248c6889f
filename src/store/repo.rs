//! The repository: its config, and typed reads and writes of blobs, trees and snapshots.

use super::backend::{Backend, LocalBackend};
use super::crypto::{Crypto, Sealer};
use super::diskcache::{CacheCounts, DiskCache};
use super::key::{new_master, Kdf, Slot};
use super::snapshot::Snapshot;
use super::tree::{decode_chunk_list, BlobRef, Chunk, Dir, Loc};
use super::{keys, object, BlobId, StoreError};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use zeroize::Zeroizing;

/// The repository format version of plain repositories made before format 3.
pub const VERSION: u32 = 1;
/// The format version of encrypted repositories made before format 3: older builds refuse
/// them instead of misreading (or writing plaintext into) them.
pub const ENCRYPTED_VERSION: u32 = 2;
/// The format version `init` writes, plain or encrypted (its `encryption` field says): chunk
/// lists of version 2, with a crc32c of every chunk's stored bytes. Repositories of versions
/// 1 and 2 keep writing version-1 lists, which the builds that made them read.
pub const CRC_VERSION: u32 = 3;

/// The largest chunk a repository may be created with.
pub const MAX_CHUNK_SIZE: u32 = 16 << 20;

/// A passphrase (or key file's content), asked for only when a repository is encrypted.
pub type Secret<'a> = &'a dyn Fn() -> Result<Zeroizing<Vec<u8>>, StoreError>;

/// The `config` object: plain JSON, so the version can be read before anything else.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    /// The format version: `CRC_VERSION`; older repositories `VERSION`, or
    /// `ENCRYPTED_VERSION` for an encrypted one.
    pub version: u32,
    /// A random id of 16 hex digits, chosen at `init`; it tells repositories apart.
    pub id: String,
    /// Bytes per chunk (for PostgreSQL data, a multiple of its 8 KiB page).
    pub chunk_size: u32,
    /// The zstd level (1 to 22) blobs and sealed objects are compressed with.
    pub compression_level: i32,
    /// Target size of a pack in bytes.
    pub pack_size: u32,
    /// When the repository was created.
    pub created: DateTime<Utc>,
    /// Present in encrypted repositories (version 2, or 3 when encrypted) only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
}

/// The algorithms of an encrypted repository (see `crypto` and `key`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Encryption {
    /// The AEAD sealing blobs and objects; only `xchacha20-poly1305` is known.
    pub cipher: String,
    /// How blob ids are derived from content; only `hmac-sha256` is known (keyed, so
    /// nobody without the key can test whether a known page is stored).
    pub blob_ids: String,
}

impl Encryption {
    fn current() -> Encryption {
        Encryption {
            cipher: "xchacha20-poly1305".into(),
            blob_ids: "hmac-sha256".into(),
        }
    }
}

/// How much a read of a data chunk checks (trees, chunk lists, sealed objects and chunks
/// of lists without crcs are always checked in full).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Verification {
    /// The crc32c of the stored bytes that the chunk list recorded, the AEAD tag in an
    /// encrypted repository, and the decompressed length: catches accidental damage at a
    /// fraction of the cost of a hash.
    #[default]
    Fast,
    /// The content's SHA-256 (keyed HMAC in an encrypted repository) against the chunk's id:
    /// also catches stored bytes forged by someone who can write the repository (for
    /// `verify --full`; `check --read-data` hashes whole packs on its own).
    Full,
}

/// What opened an encrypted repository: needed to add key slots.
struct Unlocked {
    master: Zeroizing<[u8; 32]>,
    slot: String,
    /// The exact bytes of `config`, bound into every key slot.
    config: Vec<u8>,
}

/// An open repository: its back end, config and (if encrypted) keys, with the reads that
/// verify every blob and object against its id or seal. Shared by threads behind an `Arc`.
pub struct Repository {
    backend: Arc<dyn Backend>,
    /// The repository's `config` object, as read at open (or written at init).
    pub config: Config,
    crypto: Crypto,
    unlocked: Option<Unlocked>,
    /// Local copies of blobs, for remote repositories read by mounts.
    disk_cache: Option<DiskCache>,
    /// Recently read stretches of metadata packs, most recent first.
    meta_windows: Mutex<VecDeque<MetaWindow>>,
    verification: Verification,
}

/// Backups write a snapshot's trees and chunk lists into packs of their own, in the order a
/// walk of the tree reads them, so metadata is read in windows of `META_WINDOW` bytes: one
/// request serves the next few hundred files' lists. At most `META_WINDOWS` are kept.
const META_WINDOW: u64 = 1 << 20;
const META_WINDOWS: usize = 8;

struct MetaWindow {
    pack: super::PackId,
    start: u64,
    data: Arc<Vec<u8>>,
}

/// Opens the back end a `--repo` value names: `s3://bucket/prefix`, or a local directory.
pub fn open_backend(spec: &str) -> Result<Arc<dyn Backend>, StoreError> {
    let backend = match spec.split_once("://") {
        None => Ok(Arc::new(LocalBackend::open(Path::new(spec))) as Arc<dyn Backend>),
        Some(("s3", _)) => super::backend::S3Backend::open(spec)
            .map(|b| Arc::new(b) as Arc<dyn Backend>)
            .map_err(|e| StoreError::BadSetting(e.to_string())),
        // Only the scheme: the rest of the URL may hold something secret.
        Some((scheme, _)) => Err(StoreError::BadSetting(format!(
            "unsupported repository URL scheme {scheme:?}: use s3://bucket/prefix or a directory"
        ))),
    }?;
    super::backend::killpoint::wrap(backend)
}

impl Repository {
    /// Creates a plain repository in an empty (or missing) location.
    pub fn init(
        backend: Arc<dyn Backend>,
        chunk_size: u32,
        compression_level: i32,
    ) -> Result<Repository, StoreError> {
        Repository::create(backend, chunk_size, compression_level, None, CRC_VERSION)
    }

    /// Creates an encrypted repository whose first key slot opens with `passphrase`.
    pub fn init_encrypted(
        backend: Arc<dyn Backend>,
        chunk_size: u32,
        compression_level: i32,
        passphrase: &[u8],
    ) -> Result<Repository, StoreError> {
        Repository::create(
            backend,
            chunk_size,
            compression_level,
            Some((passphrase, Kdf::new_slot())),
            CRC_VERSION,
        )
    }

    /// `version` is `CRC_VERSION`, or an older one in tests of repositories made before it.
    fn create(
        backend: Arc<dyn Backend>,
        chunk_size: u32,
        compression_level: i32,
        encrypt: Option<(&[u8], Kdf)>,
        version: u32,
    ) -> Result<Repository, StoreError> {
        // What chunk sizes suit the data is the caller's business (`catalog::chunk_size`).
        if chunk_size == 0 || chunk_size > MAX_CHUNK_SIZE {
            return Err(StoreError::BadSetting(format!(
                "chunk size {chunk_size} must be between 1 byte and 16 MiB"
            )));
        }
        if !(1..=22).contains(&compression_level) {
            return Err(StoreError::BadSetting(format!(
                "compression level {compression_level} must be between 1 and 22"
            )));
        }
        if !backend.list("")?.is_empty() {
            return Err(StoreError::NotEmpty {
                location: backend.location(),
            });
        }
        let config = Config {
            version,
            id: super::random_id().to_hex()[..16].to_string(),
            chunk_size,
            compression_level,
            pack_size: 32 << 20,
            created: Utc::now(),
            encryption: encrypt.as_ref().map(|_| Encryption::current()),
        };
        let json = serde_json::to_vec_pretty(&config).expect("config serializes");
        let mut repo = Repository::new(backend, config);
        if let Some((passphrase, kdf)) = encrypt {
            let master = new_master();
            let slot = Slot::new(&master, passphrase, &json, kdf).ok_or_else(|| {
                StoreError::BadSetting("this passphrase cannot make a key".into())
            })?;
            // The slot first: the config is what makes the location a repository.
            repo.put_slot(&slot)?;
            repo.crypto = Crypto::encrypted(&master);
            repo.unlocked = Some(Unlocked {
                master,
                slot: slot.id,
                config: json.clone(),
            });
        }
        repo.backend.put(keys::CONFIG, &json)?;
        Ok(repo)
    }

    fn new(backend: Arc<dyn Backend>, config: Config) -> Repository {
        Repository {
            backend,
            config,
            crypto: Crypto::default(),
            unlocked: None,
            disk_cache: None,
            meta_windows: Mutex::default(),
            verification: Verification::default(),
        }
    }

    /// Opens an existing plain repository, refusing formats this build does not know.
    pub fn open(backend: Arc<dyn Backend>) -> Result<Repository, StoreError> {
        let location = backend.location();
        Repository::open_with(backend, &|| Err(StoreError::NeedKey(location.clone())))
    }

    /// Opens an existing repository; an encrypted one is unlocked with `secret` before
    /// anything but its config and key slots is read.
    pub fn open_with(backend: Arc<dyn Backend>, secret: Secret) -> Result<Repository, StoreError> {
        let raw = match backend.get(keys::CONFIG) {
            Ok(raw) => raw,
            Err(e) if e.is_not_found() => {
                return Err(StoreError::NotARepository(backend.location()))
            }
            Err(e) => return Err(e.into()),
        };
        #[derive(Deserialize)]
        struct Versioned {
            version: u32,
        }
        let v: Versioned = serde_json::from_slice(&raw)
            .map_err(|e| StoreError::corrupt(keys::CONFIG, e.to_string()))?;
        if ![VERSION, ENCRYPTED_VERSION, CRC_VERSION].contains(&v.version) {
            return Err(StoreError::Version {
                location: backend.location(),
                found: v.version,
                supported: CRC_VERSION,
            });
        }
        let config: Config = serde_json::from_slice(&raw)
            .map_err(|e| StoreError::corrupt(keys::CONFIG, e.to_string()))?;
        let encrypted = config.encryption.is_some();
        let version_says = match config.version {
            VERSION => Some(false),
            ENCRYPTED_VERSION => Some(true),
            _ => None,
        };
        if version_says.is_some_and(|e| e != encrypted)
            || config
                .encryption
                .as_ref()
                .is_some_and(|e| *e != Encryption::current())
        {
            return Err(StoreError::corrupt(
                keys::CONFIG,
                "version and encryption settings disagree",
            ));
        }
        let mut repo = Repository::new(backend, config);
        if encrypted {
            let passphrase = secret()?;
            let mut slots = repo.key_slots()?;
            // Key-file slots first: they open in microseconds, an Argon2id slot in a third
            // of a second.
            slots.sort_by_key(|s| s.kdf.is_stretched());
            let unlocked = slots
                .into_iter()
                .find_map(|slot| {
                    slot.open(&passphrase, &raw).map(|master| Unlocked {
                        master,
                        slot: slot.id,
                        config: raw.clone(),
                    })
                })
                .ok_or_else(|| StoreError::WrongKey(repo.backend.location()))?;
            repo.crypto = Crypto::encrypted(&unlocked.master);
            repo.unlocked = Some(unlocked);
        }
        Ok(repo)
    }

    /// How this repository stores blobs and sealed objects.
    pub fn crypto(&self) -> &Crypto {
        &self.crypto
    }

    /// Whether chunks written to this repository record the crc32c of their stored bytes
    /// (format 3), so their lists are written in version 2.
    pub fn records_crcs(&self) -> bool {
        self.config.version >= CRC_VERSION
    }

    /// Checks data chunks as `verification` says from now on (`Fast` by default).
    pub fn with_verification(mut self, verification: Verification) -> Repository {
        self.verification = verification;
        self
    }

    /// The key slots of an encrypted repository, by id. An unreadable slot is corruption.
    pub fn key_slots(&self) -> Result<Vec<Slot>, StoreError> {
        self.backend
            .list(keys::KEY_SLOTS)?
            .iter()
            .map(|key| {
                serde_json::from_slice(&self.backend.get(key)?)
                    .map_err(|e| StoreError::corrupt(key, e.to_string()))
            })
            .collect()
    }

    /// The id of the slot that opened this repository.
    pub fn opened_with(&self) -> Option<&str> {
        self.unlocked.as_ref().map(|u| u.slot.as_str())
    }

    /// Adds a key slot opening with `secret`: a passphrase (`Kdf::new_slot`), or a key
    /// file's content (`Kdf::key_file`, refused for anything else); the data is untouched.
    pub fn add_key(&self, secret: &[u8], kdf: Kdf) -> Result<Slot, StoreError> {
        let u = self.unlocked.as_ref().ok_or_else(|| {
            StoreError::BadSetting("the repository is not encrypted: it has no keys".into())
        })?;
        let slot = Slot::new(&u.master, secret, &u.config, kdf).ok_or_else(|| {
            StoreError::BadSetting(
                "a key-file slot takes a key file (64 hex digits), never a passphrase".into(),
            )
        })?;
        self.put_slot(&slot)?;
        Ok(slot)
    }

    /// Removes a key slot other than the one that opened the repository, so at least one
    /// known passphrase always remains.
    pub fn remove_key(&self, id: &str) -> Result<(), StoreError> {
        if self.opened_with() == Some(id) {
            return Err(StoreError::BadSetting(format!(
                "key slot {id} is the one this passphrase opens; give another key to remove it"
            )));
        }
        let key = keys::key_slot(id);
        if !self.backend.exists(&key)? {
            return Err(StoreError::BadSetting(format!(
                "no key slot {id}; `pgsnapfs key list` shows them"
            )));
        }
        Ok(self.backend.delete(&key)?)
    }

    fn put_slot(&self, slot: &Slot) -> Result<(), StoreError> {
        let json = serde_json::to_vec_pretty(slot).expect("key slot serializes");
        Ok(self.backend.put(&keys::key_slot(&slot.id), &json)?)
    }

    /// The back end, for raw object access (listing, deleting, leases).
    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    /// The back end, shared, for work that outlives this borrow (threads, mounts).
    pub fn backend_arc(&self) -> Arc<dyn Backend> {
        self.backend.clone()
    }

    /// Reads blobs through `cache` from now on.
    pub fn with_disk_cache(mut self, cache: DiskCache) -> Repository {
        self.disk_cache = Some(cache);
        self
    }

    /// The disk cache blobs are read through, if any.
    pub fn disk_cache(&self) -> Option<&DiskCache> {
        self.disk_cache.as_ref()
    }

    /// The disk cache's hits and misses so far; `None` without a disk cache.
    pub fn disk_cache_counts(&self) -> Option<CacheCounts> {
        self.disk_cache.as_ref().map(DiskCache::counts)
    }

    /// Reads one blob and verifies it against its id.
    pub fn read_blob(&self, id: &BlobId, loc: &Loc, len: u32) -> Result<Vec<u8>, StoreError> {
        self.read_stored(id, loc, len, None)
    }

    /// Reads one blob, checked against `crc` (in `Fast` mode) or its id.
    fn read_stored(
        &self,
        id: &BlobId,
        loc: &Loc,
        len: u32,
        crc: Option<u32>,
    ) -> Result<Vec<u8>, StoreError> {
        let crc = self.fast(crc);
        if let Some(data) = self
            .disk_cache
            .as_ref()
            .and_then(|c| c.get(id, len, crc, &self.crypto))
        {
            return Ok(data);
        }
        let key = keys::pack(&loc.pack);
        let stored = self
            .backend
            .get_range(&key, loc.offset as u64, loc.stored_len as u64)?;
        if stored.len() != loc.stored_len as usize {
            return Err(StoreError::corrupt(&key, format!("blob {id} is truncated")));
        }
        self.decode(&stored, len, id, crc, &key)
    }

    /// The crc to check a chunk with instead of its id: its own in `Fast` mode, if it has one.
    fn fast(&self, crc: Option<u32>) -> Option<u32> {
        crc.filter(|_| self.verification == Verification::Fast)
    }

    /// Verifies a stored blob, by its crc if given (see [`Repository::fast`]) or else by its
    /// id, and keeps it in the disk cache.
    fn decode(
        &self,
        stored: &[u8],
        len: u32,
        id: &BlobId,
        crc: Option<u32>,
        key: &str,
    ) -> Result<Vec<u8>, StoreError> {
        let data = match crc {
            Some(crc) => self.crypto.decode_blob_crc(stored, len, id, crc, key)?,
            None => self.crypto.decode_blob(stored, len, id, key)?,
        };
        if let Some(cache) = &self.disk_cache {
            cache.put(id, stored);
        }
        Ok(data)
    }

    /// A chunk's bytes: zeros for an all-zero chunk, otherwise the verified blob.
    pub fn read_chunk(&self, c: &Chunk) -> Result<Vec<u8>, StoreError> {
        match &c.loc {
            None => Ok(vec![0; c.len as usize]),
            Some(loc) => self.read_stored(&c.id, loc, c.len, c.crc),
        }
    }

    /// Reads chunks in order. Chunks not in the disk cache are fetched with one ranged read
    /// per run of neighbours in one pack, of at most `MAX_SPAN` bytes: backups write a file's
    /// chunks next to each other.
    pub fn read_chunks(&self, chunks: &[Chunk]) -> Result<Vec<Vec<u8>>, StoreError> {
        const MAX_SPAN: u64 = 8 << 20;
        let mut out: Vec<Option<Vec<u8>>> = chunks
            .iter()
            .map(|c| match c.loc {
                None => Some(vec![0; c.len as usize]),
                Some(_) => self
                    .disk_cache
                    .as_ref()
                    .and_then(|d| d.get(&c.id, c.len, self.fast(c.crc), &self.crypto)),
            })
            .collect();
        let mut i = 0;
        while i < chunks.len() {
            let (Some(first), None) = (chunks[i].loc, &out[i]) else {
                i += 1;
                continue;
            };
            let mut end = first.offset as u64 + first.stored_len as u64;
            let mut j = i + 1;
            while let (Some(Some(next)), Some(None)) = (chunks.get(j).map(|c| c.loc), out.get(j)) {
                let next_end = next.offset as u64 + next.stored_len as u64;
                if next.pack != first.pack
                    || next.offset as u64 != end
                    || next_end - first.offset as u64 > MAX_SPAN
                {
                    break;
                }
                end = next_end;
                j += 1;
            }
            let key = keys::pack(&first.pack);
            let span =
                self.backend
                    .get_range(&key, first.offset as u64, end - first.offset as u64)?;
            for (c, slot) in chunks[i..j].iter().zip(&mut out[i..j]) {
                let loc = c.loc.expect("runs hold stored chunks");
                let at = (loc.offset - first.offset) as usize;
                let stored = span.get(at..at + loc.stored_len as usize).ok_or_else(|| {
                    StoreError::corrupt(&key, format!("blob {} is truncated", c.id))
                })?;
                *slot = Some(self.decode(stored, c.len, &c.id, self.fast(c.crc), &key)?);
            }
            i = j;
        }
        Ok(out
            .into_iter()
            .map(|d| d.expect("every chunk read"))
            .collect())
    }

    /// Reads a tree or chunk list blob through the metadata windows.
    fn read_meta(&self, r: &BlobRef) -> Result<Vec<u8>, StoreError> {
        if let Some(data) = self
            .disk_cache
            .as_ref()
            .and_then(|c| c.get(&r.id, r.len, None, &self.crypto))
        {
            return Ok(data);
        }
        let (off, len) = (r.loc.offset as u64, r.loc.stored_len as u64);
        let hit = {
            let mut windows = self.meta_windows.lock().expect("metadata windows");
            let found = windows.iter().position(|w| {
                w.pack == r.loc.pack && w.start <= off && off + len <= w.start + w.data.len() as u64
            });
            found.map(|i| {
                let w = windows.remove(i).expect("found above");
                let hit = (w.start, w.data.clone());
                windows.push_front(w);
                hit
            })
        };
        let key = keys::pack(&r.loc.pack);
        let (start, data) = match hit {
            Some(hit) => hit,
            None => {
                let data = Arc::new(self.backend.get_range(&key, off, len.max(META_WINDOW))?);
                let mut windows = self.meta_windows.lock().expect("metadata windows");
                windows.push_front(MetaWindow {
                    pack: r.loc.pack,
                    start: off,
                    data: data.clone(),
                });
                windows.truncate(META_WINDOWS);
                (off, data)
            }
        };
        let at = (off - start) as usize;
        let stored = data
            .get(at..at + len as usize)
            .ok_or_else(|| StoreError::corrupt(&key, format!("blob {} is truncated", r.id)))?;
        self.decode(stored, r.len, &r.id, None, &key)
    }

    /// A directory's tree blob, read through the metadata windows and verified.
    pub fn load_dir(&self, r: &BlobRef) -> Result<Dir, StoreError> {
        let data = self.read_meta(r)?;
        serde_json::from_slice(&data)
            .map_err(|e| StoreError::corrupt(format!("tree {}", r.id), e.to_string()))
    }

    /// One chunk list blob of a file (up to `LIST_FANOUT` chunks), read through the
    /// metadata windows and verified.
    pub fn load_chunk_list(&self, r: &BlobRef) -> Result<Vec<Chunk>, StoreError> {
        let data = self.read_meta(r)?;
        decode_chunk_list(&data, &format!("chunk list {}", r.id))
    }

    /// Every chunk of a file, in order.
    pub fn file_chunks(&self, lists: &[BlobRef]) -> Result<Vec<Chunk>, StoreError> {
        let mut out = Vec::new();
        for r in lists {
            out.extend(self.load_chunk_list(r)?);
        }
        Ok(out)
    }

    /// A whole (small) file's content.
    pub fn read_file(&self, lists: &[BlobRef]) -> Result<Vec<u8>, StoreError> {
        Ok(self.read_chunks(&self.file_chunks(lists)?)?.concat())
    }

    /// A sealed object's bytes for `key` (see `object` and `crypto`).
    pub fn seal(&self, key: &str, payload: &[u8]) -> Vec<u8> {
        self.sealer().seal(key, payload)
    }

    /// What seals objects as this repository does, detached from it (for other threads).
    pub fn sealer(&self) -> Sealer {
        Sealer {
            crypto: self.crypto.clone(),
            level: self.config.compression_level,
        }
    }

    /// Writes a sealed object.
    pub fn put_sealed(&self, key: &str, payload: &[u8]) -> Result<(), StoreError> {
        Ok(self.backend.put(key, &self.seal(key, payload))?)
    }

    /// Replaces a sealed object atomically (leases, repacked manifests).
    pub fn replace_sealed(&self, key: &str, payload: &[u8]) -> Result<(), StoreError> {
        Ok(self.backend.replace(key, &self.seal(key, payload))?)
    }

    /// A sealed object's payload, verified (and decrypted in an encrypted repository).
    pub fn get_sealed(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        self.crypto.open(key, &self.backend.get(key)?)
    }

    /// The header of a sealed object: from its first bytes in a plain repository, from the
    /// whole object (decrypted) in an encrypted one.
    pub fn sealed_header(&self, key: &str) -> Result<object::Header, StoreError> {
        if self.crypto.is_encrypted() {
            return self.crypto.header(key, &self.backend.get(key)?);
        }
        let head = self.backend.get_range(key, 0, object::HEADER_LEN as u64)?;
        object::header(&head, key)
    }

    /// The ids of all snapshot manifests, sorted as strings; nothing is read or verified.
    pub fn snapshot_ids(&self) -> Result<Vec<String>, StoreError> {
        Ok(self
            .backend
            .list(keys::SNAPSHOTS)?
            .into_iter()
            .filter_map(|k| k.strip_prefix(keys::SNAPSHOTS).map(str::to_string))
            .collect())
    }

    /// One manifest, with the metadata type its writer stored (see `snapshot`).
    pub fn load_manifest<M: DeserializeOwned>(&self, id: &str) -> Result<Snapshot<M>, StoreError> {
        let key = keys::snapshot(id);
        let payload = match self.get_sealed(&key) {
            Err(StoreError::Backend(e)) if e.is_not_found() => {
                return Err(StoreError::NoSuchBackup(id.to_string()))
            }
            other => other?,
        };
        serde_json::from_slice(&payload).map_err(|e| StoreError::corrupt(key, e.to_string()))
    }

    /// All snapshots, oldest first. A manifest that fails to load is returned as an error
    /// in its slot so one corrupt backup does not hide the others.
    pub fn manifests<M: DeserializeOwned>(
        &self,
    ) -> Result<Vec<Result<Snapshot<M>, StoreError>>, StoreError> {
        let mut all: Vec<_> = self
            .snapshot_ids()?
            .iter()
            .map(|id| self.load_manifest(id))
            .collect();
        all.sort_by_key(|s| s.as_ref().map(|s| s.stop_time).ok());
        Ok(all)
    }

    /// All snapshots, oldest first, failing on the first manifest that cannot be read (one
    /// removed since the listing is skipped): for commands that report on every backup, where
    /// leaving one out would mislead.
    pub fn manifests_all_or_error<M: DeserializeOwned>(
        &self,
    ) -> Result<Vec<Snapshot<M>>, StoreError> {
        let mut all = Vec::new();
        for id in self.snapshot_ids()? {
            match self.load_manifest(&id) {
                Ok(s) => all.push(s),
                Err(StoreError::NoSuchBackup(_)) => {}
                Err(e) => return Err(e),
            }
        }
        all.sort_by_key(|s| s.stop_time);
        Ok(all)
    }

    /// Publishes a backup. The caller has flushed every pack the snapshot references.
    pub fn save_manifest<M: Serialize>(&self, s: &Snapshot<M>) -> Result<(), StoreError> {
        let json = serde_json::to_vec_pretty(s).expect("snapshot serializes");
        self.put_sealed(&keys::snapshot(&s.id), &json)
    }
}

#[cfg(test)]
mod tests {
    use super::super::backend::memory::MemoryBackend;
    use super::super::pack::BlobType;
    use super::super::Packer;
    use super::*;

    #[test]
    fn init_open_and_blob_round_trip() {
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::default());
        let repo = Repository::init(backend.clone(), 65536, 3).unwrap();
        assert!(matches!(
            Repository::init(backend.clone(), 65536, 3),
            Err(StoreError::NotEmpty { .. })
        ));
        let repo2 = Repository::open(backend.clone()).unwrap();
        assert_eq!(repo2.config.chunk_size, 65536);

        let mut packer = Packer::new(&repo, 1 << 20);
        let blob = vec![7u8; 100_000];
        let r = packer.add_blob(BlobType::Data, &blob).unwrap();
        packer.flush().unwrap();
        assert_eq!(repo.read_blob(&r.id, &r.loc, r.len).unwrap(), blob);
    }

    #[test]
    fn corrupt_blob_is_reported_not_served() {
        let mem = Arc::new(MemoryBackend::default());
        let repo = Repository::init(mem.clone(), 65536, 3).unwrap();
        let mut packer = Packer::new(&repo, 1 << 20);
        let r = packer.add_blob(BlobType::Data, &[1u8; 5000]).unwrap();
        packer.flush().unwrap();
        mem.tamper(&keys::pack(&r.loc.pack), |b| {
            b[r.loc.offset as usize + 2] ^= 1
        });
        let err = repo.read_blob(&r.id, &r.loc, r.len).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains(&r.loc.pack.to_hex()), "{err}");
    }

    #[test]
    fn read_chunks_merges_misses_and_serves_hits_from_the_disk_cache() {
        let mem = Arc::new(MemoryBackend::default());
        let plain = Repository::init(mem.clone(), 65536, 3).unwrap();
        let mut packer = Packer::new(&plain, 1 << 20);
        let chunks: Vec<Chunk> = (0..6u8)
            .map(|n| {
                let r = packer.add_blob(BlobType::Data, &[n; 9000]).unwrap();
                Chunk {
                    id: r.id,
                    loc: Some(r.loc),
                    crc: None,
                    len: r.len,
                }
            })
            .collect();
        packer.flush().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::open(mem.clone())
            .unwrap()
            .with_disk_cache(DiskCache::open(dir.path(), 1 << 20).unwrap());
        let expect: Vec<Vec<u8>> = (0..6u8).map(|n| vec![n; 9000]).collect();

        // Chunks 1 and 4 cached: the rest come in runs around them.
        repo.read_chunks(&[chunks[1], chunks[4]]).unwrap();
        assert_eq!(repo.read_chunks(&chunks).unwrap(), expect);
        assert_eq!(repo.disk_cache_counts().unwrap().hits, 2);

        // Everything is cached now: the pack is not needed any more.
        mem.tamper(&keys::pack(&chunks[0].loc.unwrap().pack), |b| b.clear());
        assert_eq!(repo.read_chunks(&chunks).unwrap(), expect);
        assert!(plain.read_chunks(&chunks).is_err());
    }

    #[test]
    fn chunk_lists_are_read_in_windows_and_still_verified() {
        let mem = Arc::new(MemoryBackend::default());
        let repo = Repository::init(mem.clone(), 65536, 3).unwrap();
        let mut packer = Packer::new(&repo, 32 << 20);
        let lists: Vec<(BlobRef, Vec<Chunk>)> = (0..300u32)
            .map(|n| {
                let chunks = vec![Chunk {
                    id: BlobId::of(&n.to_le_bytes()),
                    len: 8192,
                    loc: None,
                    crc: None,
                }];
                let data = super::super::tree::encode_chunk_list(&chunks);
                (packer.add_blob(BlobType::ChunkList, &data).unwrap(), chunks)
            })
            .collect();
        packer.flush().unwrap();
        let before = mem.ranged_reads();
        for (r, chunks) in &lists {
            assert_eq!(&repo.load_chunk_list(r).unwrap(), chunks);
        }
        let reads = mem.ranged_reads() - before;
        assert_eq!(reads, 1, "300 lists in one pack: one window");

        let (victim, _) = &lists[150];
        mem.tamper(&keys::pack(&victim.loc.pack), |b| {
            b[victim.loc.offset as usize + 1] ^= 1
        });
        let fresh = Repository::open(mem.clone()).unwrap();
        assert!(matches!(
            fresh.load_chunk_list(victim),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(fresh.load_chunk_list(&lists[151].0).is_ok());
    }

    #[test]
    fn encrypted_repository_needs_its_passphrase_and_hides_ids() {
        let mem: Arc<dyn Backend> = Arc::new(MemoryBackend::default());
        let repo = Repository::create(
            mem.clone(),
            65536,
            3,
            Some((b"pass", super::super::key::cheap_kdf())),
            CRC_VERSION,
        )
        .unwrap();
        assert_eq!(repo.config.version, CRC_VERSION);
        let mut packer = Packer::new(&repo, 1 << 20);
        let blob = b"row".repeat(1000);
        let r = packer.add_blob(BlobType::Data, &blob).unwrap();
        packer.flush().unwrap();
        assert_ne!(r.id, BlobId::of(&blob), "ids are keyed");
        repo.put_sealed("systems/1", b"secret label").unwrap();
        assert!(!mem
            .get("systems/1")
            .unwrap()
            .windows(6)
            .any(|w| w == b"secret"));

        assert!(matches!(
            Repository::open(mem.clone()),
            Err(StoreError::NeedKey(_))
        ));
        let pass = |p: &'static [u8]| move || Ok(Zeroizing::new(p.to_vec()));
        assert!(matches!(
            Repository::open_with(mem.clone(), &pass(b"wrong")),
            Err(StoreError::WrongKey(_))
        ));
        let again = Repository::open_with(mem.clone(), &pass(b"pass")).unwrap();
        assert_eq!(again.read_blob(&r.id, &r.loc, r.len).unwrap(), blob);
        assert_eq!(again.get_sealed("systems/1").unwrap(), b"secret label");

        // A second slot opens it too; the first can then go, but not the one in use.
        again
            .add_key(b"other", super::super::key::cheap_kdf())
            .unwrap();
        let first = again.opened_with().unwrap().to_string();
        assert!(again.remove_key(&first).is_err());
        let other = Repository::open_with(mem.clone(), &pass(b"other")).unwrap();
        other.remove_key(&first).unwrap();
        assert!(Repository::open_with(mem.clone(), &pass(b"pass")).is_err());
        assert_eq!(other.get_sealed("systems/1").unwrap(), b"secret label");

        // A key file opens its own slot; a passphrase makes none; removed, it opens nothing.
        assert!(other.add_key(b"other", Kdf::key_file()).is_err());
        let file = super::super::key::new_key_file();
        let key: &'static [u8] = file.trim_end().as_bytes().to_vec().leak();
        let slot = other.add_key(key, Kdf::key_file()).unwrap();
        let by_file = Repository::open_with(mem.clone(), &pass(key)).unwrap();
        assert_eq!(by_file.opened_with(), Some(slot.id.as_str()));
        assert_eq!(by_file.get_sealed("systems/1").unwrap(), b"secret label");
        other.remove_key(&slot.id).unwrap();
        assert!(matches!(
            Repository::open_with(mem.clone(), &pass(key)),
            Err(StoreError::WrongKey(_))
        ));
    }

    /// A repository of format `version`, encrypted or not (cheap key derivation).
    fn repo_at(version: u32, encrypted: bool) -> (Arc<MemoryBackend>, Repository) {
        let mem = Arc::new(MemoryBackend::default());
        let encrypt = encrypted.then(|| (b"pass".as_slice(), super::super::key::cheap_kdf()));
        let repo = Repository::create(mem.clone(), 65536, 3, encrypt, version).unwrap();
        (mem, repo)
    }

    /// Opens `mem` again, as a later command would.
    fn reopen(mem: &Arc<MemoryBackend>) -> Repository {
        Repository::open_with(mem.clone(), &|| Ok(Zeroizing::new(b"pass".to_vec()))).unwrap()
    }

    /// Stores `data` as one file through the ingest, as a backup does; returns its lists.
    fn store_file(repo: &Repository, data: &[u8]) -> Vec<BlobRef> {
        let mut ingest = super::super::ingest::Ingest::new(repo, 2, Box::new(|_| {}));
        let node = ingest.file_from_bytes("f", data, 0o600, 0).unwrap();
        ingest.finish().unwrap();
        match node.kind {
            super::super::tree::NodeKind::File { lists, .. } => lists,
            other => panic!("{other:?}"),
        }
    }

    /// `n` 8 KiB pages laid out like pgbench_accounts' (page header, line pointers, 61 rows
    /// of aid, bid, abalance and 84 blanks each); with `zeros`, every fifth 64 KiB chunk is
    /// zeros.
    fn pages(n: usize, zeros: bool) -> Vec<u8> {
        const ROWS: usize = 61;
        const ROW: usize = 121;
        let mut out = vec![0u8; n * 8192];
        for (p, page) in out.chunks_mut(8192).enumerate() {
            if zeros && p / 8 % 5 == 2 {
                continue;
            }
            let put =
                |page: &mut [u8], at: usize, v: &[u8]| page[at..at + v.len()].copy_from_slice(v);
            put(page, 0, &(0x1_0000_0000 + p as u64 * 977).to_le_bytes());
            put(page, 12, &(24 + 4 * ROWS as u16).to_le_bytes());
            put(page, 14, &(8192 - 128 * ROWS as u16).to_le_bytes());
            put(page, 16, &0x2004u32.to_le_bytes());
            for r in 0..ROWS {
                let at = 8192 - 128 * (r + 1);
                let pointer = at as u32 | 1 << 15 | (ROW as u32) << 17;
                put(page, 24 + 4 * r, &pointer.to_le_bytes());
                let aid = (p * ROWS + r + 1) as u32;
                put(page, at, &735u32.to_le_bytes());
                put(page, at + 12, &(p as u32).to_be_bytes());
                put(page, at + 16, &(r as u16 + 1).to_le_bytes());
                put(page, at + 18, &[4, 0, 2, 9, 24]);
                put(page, at + 24, &aid.to_le_bytes());
                put(page, at + 28, &(aid / 100_000 + 1).to_le_bytes());
                page[at + 36] = (85 << 1) | 1;
                page[at + 37..at + ROW].fill(b' ');
            }
        }
        out
    }

    /// The stored bytes of a stored chunk, as in its pack.
    fn stored(mem: &MemoryBackend, c: &Chunk) -> Vec<u8> {
        let loc = c.loc.unwrap();
        let pack = mem.get(&keys::pack(&loc.pack)).unwrap();
        pack[loc.offset as usize..(loc.offset + loc.stored_len) as usize].to_vec()
    }

    fn is_corrupt<T: std::fmt::Debug>(r: Result<T, StoreError>) -> bool {
        matches!(r, Err(StoreError::Corrupt { .. }))
    }

    #[test]
    fn format_3_writes_crcs_in_version_2_lists_and_reads_both_ways() {
        let mut data = pages(8 * 40, true);
        // A repeated chunk: the second is found stored earlier in the run, crc and all.
        data.extend_from_within(..65536);
        for encrypted in [false, true] {
            let (mem, repo) = repo_at(CRC_VERSION, encrypted);
            assert!(repo.records_crcs());
            let lists = store_file(&repo, &data);
            let list = repo.read_blob(&lists[0].id, &lists[0].loc, lists[0].len);
            assert_eq!(&list.unwrap()[..4], &[0xff; 4], "a version-2 list");
            let chunks = repo.file_chunks(&lists).unwrap();
            assert!(chunks.iter().any(|c| c.loc.is_none()), "a zero chunk too");
            for c in chunks.iter().filter(|c| c.loc.is_some()) {
                assert_eq!(c.crc, Some(crc32c::crc32c(&stored(&mem, c))));
            }
            assert_eq!(chunks.last(), chunks.first());
            for v in [Verification::Fast, Verification::Full] {
                let again = reopen(&mem).with_verification(v);
                assert_eq!(again.config.version, CRC_VERSION);
                assert_eq!(again.read_chunks(&chunks).unwrap().concat(), data);
                assert_eq!(again.read_file(&lists).unwrap(), data);
                let one: Vec<u8> = chunks
                    .iter()
                    .flat_map(|c| again.read_chunk(c).unwrap())
                    .collect();
                assert_eq!(one, data);
            }
        }
    }

    #[test]
    fn formats_1_and_2_still_open_and_keep_writing_version_1_lists() {
        let data = pages(8 * 20, true);
        for (version, encrypted) in [(VERSION, false), (ENCRYPTED_VERSION, true)] {
            let (mem, repo) = repo_at(version, encrypted);
            assert!(!repo.records_crcs());
            let lists = store_file(&repo, &data);
            let raw = repo
                .read_blob(&lists[0].id, &lists[0].loc, lists[0].len)
                .unwrap();
            assert_ne!(
                &raw[..4],
                &[0xff; 4],
                "a version-1 list: what older builds read"
            );
            let again = reopen(&mem);
            assert_eq!(again.config.version, version);
            let chunks = again.file_chunks(&lists).unwrap();
            assert!(chunks.iter().all(|c| c.crc.is_none()));
            assert_eq!(again.read_chunks(&chunks).unwrap().concat(), data);
            // Without crcs, even Fast checks the id: a flipped byte is corruption.
            let victim = chunks.iter().find(|c| c.loc.is_some()).unwrap();
            let loc = victim.loc.unwrap();
            mem.tamper(&keys::pack(&loc.pack), |b| b[loc.offset as usize + 5] ^= 4);
            assert!(is_corrupt(again.read_chunk(victim)));
        }
        // A version 3 config that says it is encrypted must be (and 2 must be encrypted).
        let mem: Arc<dyn Backend> = Arc::new(MemoryBackend::default());
        let config = br#"{"version": 2, "id": "0", "chunk_size": 65536, "compression_level": 3,
            "pack_size": 1000, "created": "2026-12-04T00:00:00Z"}"#;
        mem.put(keys::CONFIG, config).unwrap();
        assert!(matches!(
            Repository::open(mem),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn a_flipped_byte_is_corruption_in_fast_mode_never_bytes() {
        let data = pages(8 * 4, true);
        for encrypted in [false, true] {
            let (mem, repo) = repo_at(CRC_VERSION, encrypted);
            let chunks = repo.file_chunks(&store_file(&repo, &data)).unwrap();
            let victim = chunks[3];
            let loc = victim.loc.unwrap();
            for at in [0, loc.stored_len / 2, loc.stored_len - 1] {
                for bit in [0x01, 0x80] {
                    let flip = |b: &mut Vec<u8>| b[(loc.offset + at) as usize] ^= bit;
                    mem.tamper(&keys::pack(&loc.pack), flip);
                    let fresh = reopen(&mem);
                    assert!(is_corrupt(fresh.read_chunks(&chunks)), "flip at {at}");
                    assert!(is_corrupt(fresh.read_chunk(&victim)), "flip at {at}");
                    mem.tamper(&keys::pack(&loc.pack), flip);
                }
            }
            assert_eq!(reopen(&mem).read_chunks(&chunks).unwrap().concat(), data);
        }
    }

    /// Makes the crc32c of `bytes` `want` by changing their last 4 bytes: crc32c is affine
    /// over GF(2), so 32 probes and an elimination find them. Anyone who can write the
    /// repository can do this, which is why Full hashes the content.
    fn force_crc(bytes: &mut [u8], want: u32) {
        let n = bytes.len();
        let crc_with = |b: &mut [u8], x: u32| {
            b[n - 4..].copy_from_slice(&x.to_le_bytes());
            crc32c::crc32c(b)
        };
        let base = crc_with(bytes, 0);
        // basis[bit]: (effect on the crc, with that highest bit; the tail bits causing it).
        let mut basis: [Option<(u32, u32)>; 32] = [None; 32];
        for i in 0..32 {
            let (mut effect, mut x) = (crc_with(bytes, 1 << i) ^ base, 1u32 << i);
            for bit in (0..32).rev() {
                if effect >> bit & 1 == 0 {
                    continue;
                }
                match basis[bit] {
                    None => {
                        basis[bit] = Some((effect, x));
                        break;
                    }
                    Some((e, v)) => (effect, x) = (effect ^ e, x ^ v),
                }
            }
        }
        let (mut need, mut x) = (want ^ base, 0);
        for bit in (0..32).rev() {
            if need >> bit & 1 == 0 {
                continue;
            }
            let (e, v) = basis[bit].expect("the last 4 bytes reach every crc");
            (need, x) = (need ^ e, x ^ v);
        }
        assert_eq!(crc_with(bytes, x), want);
    }

    /// The threat model, as a test: stored bytes replaced by other valid bytes with the same
    /// crc32c pass Fast (no hash) but not Full; in an encrypted repository the AEAD tag
    /// refuses them in either mode.
    #[test]
    fn full_catches_a_forged_chunk_that_fast_serves() {
        let mut data = vec![0u8; 3 * 65536];
        super::super::crypto::fill_random(&mut data);
        for encrypted in [false, true] {
            let (mem, repo) = repo_at(CRC_VERSION, encrypted);
            let chunks = repo.file_chunks(&store_file(&repo, &data)).unwrap();
            let victim = chunks[1];
            let loc = victim.loc.unwrap();
            let mut forged = stored(&mem, &victim);
            if !encrypted {
                assert_eq!(forged.len(), 65536, "random data is stored raw");
            }
            forged[100] ^= 0xff;
            force_crc(&mut forged, victim.crc.unwrap());
            mem.tamper(&keys::pack(&loc.pack), |b| {
                b[loc.offset as usize..(loc.offset + loc.stored_len) as usize]
                    .copy_from_slice(&forged)
            });
            let fast = reopen(&mem).read_chunks(&chunks);
            if encrypted {
                assert!(is_corrupt(fast), "the tag still authenticates");
            } else {
                let served = fast.unwrap().concat();
                assert_ne!(served, data, "Fast cannot tell");
                assert_eq!(served[65536 + 100], data[65536 + 100] ^ 0xff);
            }
            let full = reopen(&mem).with_verification(Verification::Full);
            assert!(is_corrupt(full.read_chunks(&chunks)));
            assert!(is_corrupt(full.read_chunk(&victim)));
        }
    }

    #[test]
    fn newer_format_is_refused() {
        let mem: Arc<dyn Backend> = Arc::new(MemoryBackend::default());
        mem.put(keys::CONFIG, br#"{"version": 999}"#).unwrap();
        assert!(matches!(
            Repository::open(mem),
            Err(StoreError::Version { found: 999, .. })
        ));
    }
}
