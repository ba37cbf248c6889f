//! Key slots: the master key of an encrypted repository, wrapped under each passphrase.
//!
//! `keys/<slot id>` is plain JSON. The passphrase is stretched with Argon2id into a
//! key-encryption key, which wraps the master key with XChaCha20-Poly1305. A key-file slot
//! (`hmac-sha256`) takes 32 random bytes instead of a passphrase; they need no stretching,
//! so its key-encryption key is one HMAC of them, and opening costs microseconds. The associated
//! data is `"PGSNKEY1"` and the exact bytes of the `config` object, so a slot opens only with
//! the config it was made for and a changed config is caught before anything is read.
//! Adding or removing a slot never touches the data: the master key stays the same.

use super::crypto::{decrypt, derive, encrypt, fill_random};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

const AAD_MAGIC: &[u8; 8] = b"PGSNKEY1";
/// The KDF of a passphrase slot.
const ARGON2ID: &str = "argon2id";
/// The "KDF" of a key-file slot: `HMAC-SHA-256(key, "pgsnapfs key file" || salt)`.
const KEY_FILE: &str = "hmac-sha256";
/// Bytes of a key file's key.
pub const KEY_FILE_LEN: usize = 32;

/// Argon2id settings of a slot: 64 MiB, 3 passes, 1 lane (about a third of a second),
/// above the OWASP minimum; stored per slot so they can grow without a format change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kdf {
    /// The key derivation function: `argon2id` (a passphrase), or `hmac-sha256` (a key
    /// file, whose costs are 0).
    pub algorithm: String,
    /// Memory cost, in KiB.
    pub memory_kib: u32,
    /// Number of passes.
    pub iterations: u32,
    /// Number of lanes.
    pub parallelism: u32,
    /// Random salt, hex in the JSON.
    #[serde(with = "hex_bytes")]
    pub salt: Vec<u8>,
}

impl Kdf {
    /// The settings for a new slot, with a fresh salt.
    pub fn new_slot() -> Kdf {
        Kdf::with_cost(64 * 1024, 3)
    }

    /// The settings of a key-file slot, with a fresh salt.
    pub fn key_file() -> Kdf {
        Kdf {
            algorithm: KEY_FILE.into(),
            memory_kib: 0,
            iterations: 0,
            parallelism: 0,
            salt: salt(),
        }
    }

    fn with_cost(memory_kib: u32, iterations: u32) -> Kdf {
        Kdf {
            algorithm: ARGON2ID.into(),
            memory_kib,
            iterations,
            parallelism: 1,
            salt: salt(),
        }
    }

    /// Whether opening the slot stretches a passphrase (slow on purpose), as opposed to
    /// taking a key file's random bytes as they are.
    pub fn is_stretched(&self) -> bool {
        self.algorithm != KEY_FILE
    }

    /// The key-encryption key; `None` for settings this build does not accept, and for a
    /// key-file slot given anything but a key file.
    fn derive(&self, secret: &[u8]) -> Option<Zeroizing<[u8; 32]>> {
        use argon2::{Algorithm, Argon2, Params, Version};
        if self.algorithm == KEY_FILE {
            let key = Zeroizing::new(parse_key_file(secret)?);
            let label = [b"pgsnapfs key file".as_slice(), &self.salt].concat();
            return Some(Zeroizing::new(derive(key.as_ref(), &label)));
        }
        // A damaged slot must not ask for terabytes of memory or years of work.
        if self.algorithm != ARGON2ID || self.memory_kib > 4 << 20 || self.iterations > 64 {
            return None;
        }
        let params =
            Params::new(self.memory_kib, self.iterations, self.parallelism, Some(32)).ok()?;
        let mut out = Zeroizing::new([0u8; 32]);
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(secret, &self.salt, out.as_mut())
            .ok()?;
        Some(out)
    }
}

fn salt() -> Vec<u8> {
    let mut salt = vec![0u8; 16];
    fill_random(&mut salt);
    salt
}

/// A new key file's content: 32 random bytes as 64 hex digits and a newline (text, so the
/// trailing newline a passphrase file may have is never part of the key).
pub fn new_key_file() -> Zeroizing<String> {
    let mut key = Zeroizing::new([0u8; KEY_FILE_LEN]);
    fill_random(key.as_mut());
    Zeroizing::new(format!("{}\n", hex::encode(key.as_ref())))
}

/// The key in a key file's content (its trailing newline already dropped): exactly 64 hex
/// digits. A passphrase a person chose and typed is never one.
pub fn parse_key_file(secret: &[u8]) -> Option<[u8; KEY_FILE_LEN]> {
    let mut key = [0u8; KEY_FILE_LEN];
    if secret.len() != 2 * KEY_FILE_LEN {
        return None;
    }
    hex::decode_to_slice(secret, &mut key).ok()?;
    Some(key)
}

/// One key slot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Slot {
    /// The slot's id, as `key list` shows it.
    pub id: String,
    /// When the slot was added.
    pub created: DateTime<Utc>,
    /// How the passphrase is turned into the key that opens this slot.
    pub kdf: Kdf,
    /// `nonce (24) || encrypted master key (32) || tag (16)`.
    #[serde(with = "hex_bytes")]
    pub wrapped: Vec<u8>,
}

/// Byte strings as hex in JSON.
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        hex::decode(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

fn aad(config: &[u8]) -> Vec<u8> {
    [AAD_MAGIC.as_slice(), config].concat()
}

impl Slot {
    /// Wraps `master` under `passphrase` (or, with `Kdf::key_file`, a key file's content
    /// from `new_key_file`) for the repository whose config is `config`; `None` for a key-file
    /// slot given anything but a key file.
    pub fn new(master: &[u8; 32], passphrase: &[u8], config: &[u8], kdf: Kdf) -> Option<Slot> {
        let kek = kdf.derive(passphrase)?;
        let mut id = [0u8; 8];
        fill_random(&mut id);
        Some(Slot {
            id: hex::encode(id),
            created: Utc::now(),
            wrapped: encrypt(&kek, master, &aad(config)),
            kdf,
        })
    }

    /// The master key, if `passphrase` is this slot's and slot and config are intact.
    pub fn open(&self, passphrase: &[u8], config: &[u8]) -> Option<Zeroizing<[u8; 32]>> {
        let kek = self.kdf.derive(passphrase)?;
        let master = Zeroizing::new(decrypt(&kek, &self.wrapped, &aad(config))?);
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(master.get(..32).filter(|_| master.len() == 32)?);
        Some(out)
    }
}

/// A fresh random master key.
pub fn new_master() -> Zeroizing<[u8; 32]> {
    let mut k = Zeroizing::new([0u8; 32]);
    fill_random(k.as_mut());
    k
}

/// Argon2id settings cheap enough for unit tests (64 KiB, one pass); never for real slots.
#[cfg(test)]
pub fn cheap_kdf() -> Kdf {
    Kdf::with_cost(64, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_opens_with_its_passphrase_and_config_only() {
        let master = new_master();
        let slot = Slot::new(&master, b"correct horse", b"{config}", cheap_kdf()).unwrap();
        assert_eq!(*slot.open(b"correct horse", b"{config}").unwrap(), *master);
        assert!(slot.open(b"wrong horse", b"{config}").is_none());
        assert!(slot.open(b"correct horse", b"{config }").is_none());
        let json = serde_json::to_vec(&slot).unwrap();
        let back: Slot = serde_json::from_slice(&json).unwrap();
        assert_eq!(*back.open(b"correct horse", b"{config}").unwrap(), *master);
        for i in 0..back.wrapped.len() {
            let mut bad = back.clone();
            bad.wrapped[i] ^= 1;
            assert!(
                bad.open(b"correct horse", b"{config}").is_none(),
                "flip at {i}"
            );
        }
        let mut bad = back.clone();
        bad.kdf.salt[0] ^= 1;
        assert!(bad.open(b"correct horse", b"{config}").is_none());
        bad.kdf.memory_kib = u32::MAX;
        assert!(bad.open(b"correct horse", b"{config}").is_none());
    }

    #[test]
    fn key_file_slots_take_key_files_only() {
        let master = new_master();
        let file = new_key_file();
        assert_eq!(file.len(), 65);
        let key = file.trim_end().as_bytes();
        assert!(parse_key_file(key).is_some());
        // A human passphrase makes no key-file slot, and opens none.
        for passphrase in [
            b"correct horse".as_slice(),
            &key[1..],
            b"zz".repeat(32).as_slice(),
        ] {
            assert!(Slot::new(&master, passphrase, b"{c}", Kdf::key_file()).is_none());
        }
        let slot = Slot::new(&master, key, b"{c}", Kdf::key_file()).unwrap();
        assert!(!slot.kdf.is_stretched() && cheap_kdf().is_stretched());
        assert_eq!(*slot.open(key, b"{c}").unwrap(), *master);
        assert!(slot.open(file.as_bytes(), b"{c}").is_none(), "newline kept");
        assert!(slot.open(key, b"{c }").is_none());
        assert!(slot
            .open(new_key_file().trim_end().as_bytes(), b"{c}")
            .is_none());
        let mut other_salt = slot.clone();
        other_salt.kdf.salt[0] ^= 1;
        assert!(other_salt.open(key, b"{c}").is_none());
        // Older builds read the slot's JSON (same fields) and simply cannot open it.
        let json = serde_json::to_value(&slot).unwrap();
        assert_eq!(json["kdf"]["algorithm"], "hmac-sha256");
        assert_eq!(json["kdf"]["memory_kib"], 0);
        // A key-file slot and a passphrase slot of the same key do not open each other.
        let argon = Slot::new(&master, key, b"{c}", cheap_kdf()).unwrap();
        assert_eq!(*argon.open(key, b"{c}").unwrap(), *master);
        let mut swapped = argon.clone();
        swapped.kdf = slot.kdf.clone();
        assert!(swapped.open(key, b"{c}").is_none());
    }
}
