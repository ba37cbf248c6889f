//! Ids, as newtypes so they print as hex and parse back: `BlobId` names a blob by its content,
//! `PackId` names a pack at random.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use std::fmt;

/// A blob's id, derived from its content: the SHA-256 of the content in a plain repository,
/// its HMAC-SHA256 under the repository's key in an encrypted (format 2) one (see
/// `Crypto::id`). `BlobId::of` is the plain SHA-256.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct BlobId(pub [u8; 32]);

impl BlobId {
    /// The SHA-256 of `data` (the id in a plain repository; an encrypted one uses `Crypto::id`).
    pub fn of(data: &[u8]) -> BlobId {
        BlobId(Sha256::digest(data).into())
    }

    /// The 64 lowercase hex digits of the id.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits; `None` if `s` is anything else.
    pub fn from_hex(s: &str) -> Option<BlobId> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(BlobId(out))
    }

    /// Whether this is the all-zero id, which names the all-zero chunk that is never stored.
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 32]
    }
}

/// A pack's name: random, chosen before its content is known, so not a digest of it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PackId(pub [u8; 32]);

impl PackId {
    /// A fresh random name.
    pub fn random() -> PackId {
        let mut buf = [0u8; 32];
        super::crypto::fill_random(&mut buf);
        PackId(buf)
    }

    /// The 64 lowercase hex digits of the name.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits; `None` if `s` is anything else.
    pub fn from_hex(s: &str) -> Option<PackId> {
        BlobId::from_hex(s).map(|id| PackId(id.0))
    }

    /// A name derived from `seed`, for tests that need known pack names.
    #[cfg(test)]
    pub fn of(seed: &[u8]) -> PackId {
        PackId(BlobId::of(seed).0)
    }
}

impl fmt::Display for PackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for PackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PackId({})", &self.to_hex()[..12])
    }
}

impl Serialize for PackId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for PackId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<PackId, D::Error> {
        let s = String::deserialize(d)?;
        PackId::from_hex(&s).ok_or_else(|| serde::de::Error::custom(format!("bad pack id {s:?}")))
    }
}

impl fmt::Display for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobId({})", &self.to_hex()[..12])
    }
}

impl Serialize for BlobId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for BlobId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<BlobId, D::Error> {
        let s = String::deserialize(d)?;
        BlobId::from_hex(&s).ok_or_else(|| serde::de::Error::custom(format!("bad id {s:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_known_digest() {
        let id = BlobId::of(b"abc");
        assert_eq!(
            id.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(BlobId::from_hex(&id.to_hex()), Some(id));
        assert_eq!(BlobId::from_hex("zz"), None);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<BlobId>(&json).unwrap(), id);
    }
}
