//! Sealed objects: the envelope around every repository object that is not a pack.
//!
//! `magic "PGSNOBJ1" || sha256(payload) || u64 payload length || u8 compression || 7 zero bytes
//! || body`. The digest covers the uncompressed payload, so a reader detects corruption of the
//! body and of the header alike, and `wal-push` can compare a stored segment with a new one by
//! reading the first 56 bytes only.

use super::{BlobId, StoreError};

/// The first 8 bytes of every sealed object.
pub const MAGIC: &[u8; 8] = b"PGSNOBJ1";
/// The header's length in bytes: magic, digest, length, compression byte and padding.
pub const HEADER_LEN: usize = 56;
const RAW: u8 = 0;
const ZSTD: u8 = 1;

/// The fixed-size header of a sealed object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The SHA-256 of the uncompressed payload.
    pub digest: BlobId,
    /// The uncompressed payload's length in bytes.
    pub len: u64,
}

/// Payloads from this size on (WAL segments) are hashed on a thread of their own while they
/// are compressed; below it a thread costs more than it saves.
const PARALLEL_FROM: usize = 1 << 20;

/// Seals `payload`, compressing it with zstd at `level` when that makes it smaller.
pub fn seal(payload: &[u8], level: i32) -> Vec<u8> {
    let compress = || zstd::bulk::compress(payload, level).ok();
    let (digest, compressed) = if payload.len() < PARALLEL_FROM {
        (BlobId::of(payload), compress())
    } else {
        std::thread::scope(|s| {
            let digest = s.spawn(|| BlobId::of(payload));
            let compressed = compress();
            let digest = digest
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (digest, compressed)
        })
    };
    let (kind, body) = match &compressed {
        Some(c) if c.len() < payload.len() => (ZSTD, c.as_slice()),
        _ => (RAW, payload),
    };
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&digest.0);
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.push(kind);
    out.extend_from_slice(&[0; 7]);
    out.extend_from_slice(body);
    out
}

/// Parses the header of a sealed object (the first `HEADER_LEN` bytes suffice).
pub fn header(data: &[u8], name: &str) -> Result<Header, StoreError> {
    if data.len() < HEADER_LEN || &data[..8] != MAGIC {
        return Err(StoreError::corrupt(
            name,
            "not a pgsnapfs object (bad magic)",
        ));
    }
    let mut digest = [0u8; 32];
    digest.copy_from_slice(&data[8..40]);
    let len = u64::from_le_bytes(data[40..48].try_into().expect("8 bytes"));
    Ok(Header {
        digest: BlobId(digest),
        len,
    })
}

/// Opens a sealed object, verifying its digest.
pub fn open(data: &[u8], name: &str) -> Result<Vec<u8>, StoreError> {
    let h = header(data, name)?;
    let body = &data[HEADER_LEN..];
    let payload = match data[48] {
        RAW => body.to_vec(),
        // The stream decoder sizes its output from the frame, not from a length that may be
        // corrupt, so a flipped header bit cannot ask for a huge allocation.
        ZSTD => zstd::stream::decode_all(body)
            .map_err(|e| StoreError::corrupt(name, format!("cannot decompress: {e}")))?,
        other => {
            return Err(StoreError::corrupt(
                name,
                format!("unknown compression {other}"),
            ))
        }
    };
    if payload.len() as u64 != h.len || BlobId::of(&payload) != h.digest {
        return Err(StoreError::corrupt(name, "checksum mismatch"));
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let payload = b"hello hello hello hello hello hello hello".repeat(10);
        let sealed = seal(&payload, 3);
        assert!(sealed.len() < payload.len());
        assert_eq!(open(&sealed, "x").unwrap(), payload);
        assert_eq!(header(&sealed, "x").unwrap().digest, BlobId::of(&payload));
        for i in [0, 10, 45, 48, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[i] ^= 0x40;
            assert!(open(&bad, "x").is_err(), "flip at {i} went unnoticed");
        }
        // Incompressible payloads are stored raw.
        let raw = seal(b"ab", 3);
        assert_eq!(raw[48], RAW);
        assert_eq!(open(&raw, "x").unwrap(), b"ab");
        // Large payloads (hashed beside the compression) seal to the same bytes.
        let big: Vec<u8> = (0..PARALLEL_FROM as u32 + 7)
            .map(|i| (i % 251) as u8)
            .collect();
        let sealed = seal(&big, 3);
        assert_eq!(header(&sealed, "x").unwrap().digest, BlobId::of(&big));
        assert_eq!(open(&sealed, "x").unwrap(), big);
    }
}
