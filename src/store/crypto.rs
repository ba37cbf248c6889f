//! Encryption at rest: how an encrypted repository turns blobs and sealed objects into
//! ciphertext, and how it names chunks without revealing their content.
//!
//! One 32-byte data key (the *master key*, wrapped by key slots: see `key`) yields two
//! subkeys, `HMAC-SHA-256(master, label)`: an XChaCha20-Poly1305 key, and an HMAC-SHA-256 key
//! for blob ids. Blob ids are `HMAC-SHA-256(id key, plaintext)`, so nobody without the key
//! can test whether a known page is stored, and equal chunks still get equal ids (dedup).
//! Every ciphertext has its own random 24-byte nonce: with XChaCha20 random nonces never
//! repeat in practice, so no counter has to be kept consistent between writers.
//!
//! A plain repository uses the same interface with SHA-256 ids and no encryption, so callers
//! never ask which kind they have.

use super::object::{self, Header};
use super::{pack, BlobId, StoreError};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::sync::Arc;

/// The magic of an encrypted sealed object.
pub const SEALED_MAGIC: &[u8; 8] = b"PGSNENC1";
/// Length of an XChaCha20-Poly1305 nonce, in bytes.
pub const NONCE_LEN: usize = 24;
/// Length of a Poly1305 authentication tag, in bytes.
pub const TAG_LEN: usize = 16;
/// What encryption adds to a blob or object: the nonce and the tag.
pub const OVERHEAD: usize = NONCE_LEN + TAG_LEN;

type HmacSha256 = Hmac<Sha256>;

/// Fills `buf` from the kernel's random source.
pub fn fill_random(buf: &mut [u8]) {
    // SAFETY: buf is a valid writable buffer of the given length.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    assert_eq!(n, buf.len() as isize, "getrandom failed");
}

/// `HMAC-SHA-256(key, label)`: subkeys from the master key, and key-slot binding.
pub fn derive(key: &[u8], label: &[u8]) -> [u8; 32] {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(label);
    mac.finalize().into_bytes().into()
}

/// Encrypts `msg` under `key` with a fresh nonce: `nonce (24) || ciphertext || tag (16)`.
pub fn encrypt(key: &[u8; 32], msg: &[u8], aad: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; NONCE_LEN];
    fill_random(&mut out);
    let ct = XChaCha20Poly1305::new(key.into())
        .encrypt(XNonce::from_slice(&out), Payload { msg, aad })
        .expect("XChaCha20-Poly1305 encrypts any length we use");
    out.extend_from_slice(&ct);
    out
}

/// Decrypts what `encrypt` wrote; `None` if the bytes, the nonce, the key or `aad` differ.
pub fn decrypt(key: &[u8; 32], data: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
    if data.len() < OVERHEAD {
        return None;
    }
    let (nonce, ct) = data.split_at(NONCE_LEN);
    XChaCha20Poly1305::new(key.into())
        .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad })
        .ok()
}

struct Keys {
    cipher: [u8; 32],
    /// The HMAC keyed with the id key, cloned for each id.
    ids: HmacSha256,
}

impl Drop for Keys {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.cipher);
    }
}

/// How a repository stores blobs and sealed objects: plain, or encrypted under a data key.
#[derive(Clone, Default)]
pub struct Crypto(Option<Arc<Keys>>);

impl Crypto {
    /// Encryption under the master key of a repository.
    pub fn encrypted(master: &[u8; 32]) -> Crypto {
        let id_key = derive(master, b"pgsnapfs blob ids");
        Crypto(Some(Arc::new(Keys {
            cipher: derive(master, b"pgsnapfs encryption"),
            ids: <HmacSha256 as Mac>::new_from_slice(&id_key).expect("HMAC takes any key length"),
        })))
    }

    /// Whether this repository encrypts (format 2, or 3 with `encryption`), as opposed to only
    /// authenticating by digest.
    pub fn is_encrypted(&self) -> bool {
        self.0.is_some()
    }

    /// A blob's id: SHA-256 of its content, or the keyed HMAC in an encrypted repository.
    pub fn id(&self, data: &[u8]) -> BlobId {
        match &self.0 {
            None => BlobId::of(data),
            Some(k) => {
                let mut mac = k.ids.clone();
                mac.update(data);
                BlobId(mac.finalize().into_bytes().into())
            }
        }
    }

    /// A blob as stored in a pack: compressed (see `pack::encode_blob`), then encrypted
    /// with its id as associated data, so a stored blob cannot pass for another.
    pub fn encode_blob(&self, id: &BlobId, data: &[u8], level: i32) -> Vec<u8> {
        let body = pack::encode_blob(data, level);
        match &self.0 {
            None => body,
            Some(k) => encrypt(&k.cipher, &body, &id.0),
        }
    }

    /// The blob's bytes, verified: decrypted (which authenticates them), decompressed, and
    /// hashed again to compare with `id`.
    pub fn decode_blob(
        &self,
        stored: &[u8],
        len: u32,
        id: &BlobId,
        pack: &str,
    ) -> Result<Vec<u8>, StoreError> {
        let Some(k) = &self.0 else {
            return pack::decode_blob(stored, len, id, pack);
        };
        let data = pack::decompress_blob(&open_blob(k, stored, id, pack)?, len, id, pack)?;
        if self.id(&data) != *id {
            return Err(StoreError::corrupt(
                pack,
                format!("blob {id}: checksum mismatch"),
            ));
        }
        Ok(data)
    }

    /// The blob's bytes, checked cheaply: the crc32c of its stored bytes against `crc` (what
    /// its chunk list recorded), decrypted in an encrypted repository (which authenticates
    /// them), decompressed and its length checked, but not hashed. That catches accidental
    /// damage, not a forger who can also write the crc: see repository-format.md, "Threat
    /// model".
    pub fn decode_blob_crc(
        &self,
        stored: &[u8],
        len: u32,
        id: &BlobId,
        crc: u32,
        pack: &str,
    ) -> Result<Vec<u8>, StoreError> {
        if crc32c::crc32c(stored) != crc {
            return Err(StoreError::corrupt(
                pack,
                format!("blob {id}: crc32c mismatch"),
            ));
        }
        match &self.0 {
            None => pack::decompress_blob(stored, len, id, pack),
            Some(k) => pack::decompress_blob(&open_blob(k, stored, id, pack)?, len, id, pack),
        }
    }

    /// Bytes encryption adds to a pack's entry table.
    pub fn table_overhead(&self) -> usize {
        if self.is_encrypted() {
            OVERHEAD
        } else {
            0
        }
    }

    /// A pack's entry table as stored: plain, or `nonce || ciphertext || tag` with the pack's
    /// key as associated data, so blob ids, types and lengths are not readable.
    pub fn seal_table(&self, pack: &str, table: &[u8]) -> Vec<u8> {
        match &self.0 {
            None => table.to_vec(),
            Some(k) => encrypt(&k.cipher, table, &table_aad(pack)),
        }
    }

    /// The plain entry table of a pack from its stored bytes, authenticated.
    pub fn open_table(&self, pack: &str, stored: &[u8]) -> Result<Vec<u8>, StoreError> {
        match &self.0 {
            None => Ok(stored.to_vec()),
            Some(k) => decrypt(&k.cipher, stored, &table_aad(pack))
                .ok_or_else(|| StoreError::corrupt(pack, "entry table: authentication failed")),
        }
    }

    /// A sealed object (see `object`) for the key `name`; encrypted, it is
    /// `"PGSNENC1" || nonce || XChaCha20-Poly1305(sealed object, aad = "PGSNENC1" || name)`,
    /// so an object copied under another name does not open.
    pub fn seal(&self, name: &str, payload: &[u8], level: i32) -> Vec<u8> {
        let sealed = object::seal(payload, level);
        match &self.0 {
            None => sealed,
            Some(k) => {
                let mut out = SEALED_MAGIC.to_vec();
                out.extend_from_slice(&encrypt(&k.cipher, &sealed, &sealed_aad(name)));
                out
            }
        }
    }

    /// The payload of a sealed object, verified.
    pub fn open(&self, name: &str, data: &[u8]) -> Result<Vec<u8>, StoreError> {
        object::open(&self.unwrap_sealed(name, data)?, name)
    }

    /// The header of a whole sealed object (its payload's digest and length).
    pub fn header(&self, name: &str, data: &[u8]) -> Result<Header, StoreError> {
        object::header(&self.unwrap_sealed(name, data)?, name)
    }

    /// The plain sealed object inside an encrypted one.
    fn unwrap_sealed<'a>(
        &self,
        name: &str,
        data: &'a [u8],
    ) -> Result<std::borrow::Cow<'a, [u8]>, StoreError> {
        let Some(k) = &self.0 else {
            return Ok(data.into());
        };
        let body = data
            .strip_prefix(SEALED_MAGIC.as_slice())
            .ok_or_else(|| StoreError::corrupt(name, "not an encrypted pgsnapfs object"))?;
        decrypt(&k.cipher, body, &sealed_aad(name))
            .map(Into::into)
            .ok_or_else(|| StoreError::corrupt(name, "authentication failed"))
    }
}

/// What a thread needs to seal objects apart from the repository (a lease's heartbeat).
#[derive(Clone)]
pub struct Sealer {
    /// The repository's keys (or none, in a plain repository).
    pub crypto: Crypto,
    /// The zstd level to compress with.
    pub level: i32,
}

impl Sealer {
    /// Seals `payload` as the object `name`, as [`Crypto::seal`] does.
    pub fn seal(&self, name: &str, payload: &[u8]) -> Vec<u8> {
        self.crypto.seal(name, payload, self.level)
    }
}

/// A stored blob's body, decrypted and authenticated against its id.
fn open_blob(k: &Keys, stored: &[u8], id: &BlobId, pack: &str) -> Result<Vec<u8>, StoreError> {
    decrypt(&k.cipher, stored, &id.0)
        .ok_or_else(|| StoreError::corrupt(pack, format!("blob {id}: authentication failed")))
}

fn table_aad(pack: &str) -> Vec<u8> {
    [pack::TRAILER_MAGIC.as_slice(), pack.as_bytes()].concat()
}

fn sealed_aad(name: &str) -> Vec<u8> {
    [SEALED_MAGIC.as_slice(), name.as_bytes()].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Crypto {
        Crypto::encrypted(&[7; 32])
    }

    #[test]
    fn blobs_round_trip_and_tampering_is_caught() {
        let c = keys();
        let data = b"a distinctive row ".repeat(100);
        let id = c.id(&data);
        assert_ne!(id, BlobId::of(&data), "ids are keyed");
        assert_ne!(id, Crypto::encrypted(&[8; 32]).id(&data));
        let stored = c.encode_blob(&id, &data, 3);
        assert!(!stored.windows(10).any(|w| w == &data[..10]));
        assert_eq!(
            c.decode_blob(&stored, data.len() as u32, &id, "p").unwrap(),
            data
        );
        for i in [0, NONCE_LEN, stored.len() / 2, stored.len() - 1] {
            let mut bad = stored.clone();
            bad[i] ^= 1;
            let err = c.decode_blob(&bad, data.len() as u32, &id, "p");
            assert!(
                matches!(err, Err(StoreError::Corrupt { .. })),
                "flip at {i}"
            );
        }
        // Another blob's id, or another key, does not open it.
        let other = c.id(b"other");
        assert!(c
            .decode_blob(&stored, data.len() as u32, &other, "p")
            .is_err());
        let wrong = Crypto::encrypted(&[8; 32]);
        assert!(wrong
            .decode_blob(&stored, data.len() as u32, &id, "p")
            .is_err());
    }

    #[test]
    fn sealed_objects_are_bound_to_their_name() {
        let c = keys();
        let payload = br#"{"label": "a secret backup label"}"#;
        let sealed = c.seal("snapshots/a", payload, 3);
        assert_eq!(&sealed[..8], SEALED_MAGIC);
        assert_eq!(c.open("snapshots/a", &sealed).unwrap(), payload);
        assert_eq!(
            c.header("snapshots/a", &sealed).unwrap().digest,
            BlobId::of(payload)
        );
        assert!(c.open("snapshots/b", &sealed).is_err());
        assert!(Crypto::encrypted(&[8; 32])
            .open("snapshots/a", &sealed)
            .is_err());
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x10;
            assert!(c.open("snapshots/a", &bad).is_err(), "flip at {i}");
        }
        // A plain object is refused, not taken for plaintext.
        assert!(c
            .open(
                "snapshots/a",
                &Crypto::default().seal("snapshots/a", payload, 3)
            )
            .is_err());
    }

    #[test]
    fn pack_tables_are_hidden_and_bound_to_their_pack() {
        let c = keys();
        let table = [7u8; 96];
        let stored = c.seal_table("packs/ab/ab01", &table);
        assert_eq!(stored.len(), table.len() + c.table_overhead());
        assert!(
            !stored.windows(8).any(|w| w == [7u8; 8]),
            "the table is readable"
        );
        assert_eq!(c.open_table("packs/ab/ab01", &stored).unwrap(), table);
        assert!(c.open_table("packs/ab/ab02", &stored).is_err());
        let mut bad = stored.clone();
        bad[40] ^= 1;
        assert!(matches!(
            c.open_table("packs/ab/ab01", &bad),
            Err(StoreError::Corrupt { .. })
        ));
        let plain = Crypto::default();
        assert_eq!(plain.seal_table("p", &table), table);
        assert_eq!(plain.table_overhead(), 0);
    }

    #[test]
    fn nonces_are_fresh() {
        let c = keys();
        let a = c.seal("x", b"same", 3);
        let b = c.seal("x", b"same", 3);
        assert_ne!(a[8..8 + NONCE_LEN], b[8..8 + NONCE_LEN]);
        assert_ne!(a, b);
    }

    #[test]
    fn plain_is_unchanged() {
        let c = Crypto::default();
        let data = b"page".repeat(100);
        assert_eq!(c.id(&data), BlobId::of(&data));
        assert_eq!(
            c.encode_blob(&c.id(&data), &data, 3),
            pack::encode_blob(&data, 3)
        );
        assert_eq!(c.seal("x", b"abc", 3), object::seal(b"abc", 3));
    }
}
