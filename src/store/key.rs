//! Key slots: the master key of an encrypted repository, wrapped under each passphrase.
//!
//! `keys/<slot id>` is plain JSON. The passphrase is stretched with Argon2id into a
//! key-encryption key, which wraps the master key with XChaCha20-Poly1305; the associated
//! data is `"PGSNKEY1"` and the exact bytes of the `config` object, so a slot opens only with
//! the config it was made for and a changed config is caught before anything is read.
//! Adding or removing a slot never touches the data: the master key stays the same.

use super::crypto::{decrypt, encrypt, fill_random};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

const AAD_MAGIC: &[u8; 8] = b"PGSNKEY1";

/// Argon2id settings of a slot: 64 MiB, 3 passes, 1 lane (about a third of a second),
/// above the OWASP minimum; stored per slot so they can grow without a format change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kdf {
    /// The key derivation function; `argon2id` is the only one read.
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

    fn with_cost(memory_kib: u32, iterations: u32) -> Kdf {
        let mut salt = vec![0u8; 16];
        fill_random(&mut salt);
        Kdf {
            algorithm: "argon2id".into(),
            memory_kib,
            iterations,
            parallelism: 1,
            salt,
        }
    }

    /// The key-encryption key; `None` for settings this build does not accept.
    fn derive(&self, passphrase: &[u8]) -> Option<Zeroizing<[u8; 32]>> {
        use argon2::{Algorithm, Argon2, Params, Version};
        // A damaged slot must not ask for terabytes of memory or years of work.
        if self.algorithm != "argon2id" || self.memory_kib > 4 << 20 || self.iterations > 64 {
            return None;
        }
        let params =
            Params::new(self.memory_kib, self.iterations, self.parallelism, Some(32)).ok()?;
        let mut out = Zeroizing::new([0u8; 32]);
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(passphrase, &self.salt, out.as_mut())
            .ok()?;
        Some(out)
    }
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
    /// Wraps `master` under `passphrase` for the repository whose config is `config`.
    pub fn new(master: &[u8; 32], passphrase: &[u8], config: &[u8], kdf: Kdf) -> Slot {
        let kek = kdf.derive(passphrase).expect("settings made by this build");
        let mut id = [0u8; 8];
        fill_random(&mut id);
        Slot {
            id: hex::encode(id),
            created: Utc::now(),
            wrapped: encrypt(&kek, master, &aad(config)),
            kdf,
        }
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
        let slot = Slot::new(&master, b"correct horse", b"{config}", cheap_kdf());
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
}
