//! Packs: large objects holding many blobs (data chunks and tree blobs) in the order written.
//!
//! `"PGSNPK01" || blob… || entry… || u32 entry count || "PGSNPKIX"`; an entry is
//! `id (32) || u8 type || 3 zero bytes || u32 offset || u32 stored length || u32 length`
//! (little endian, 48 bytes). The entry table sits at the end so blobs stream out as they are
//! compressed, and the table alone lets `check` and `gc` rebuild what a pack holds without any
//! other object. A blob whose stored length equals its length is raw; otherwise it is one zstd
//! frame. A pack's name is random, fixed when the pack is opened, so references to its blobs
//! can be written before it is full; integrity rests on each blob's own hash.

use super::{BlobId, StoreError};
use std::cell::RefCell;

/// The first 8 bytes of every pack; the `01` is the pack format's version.
pub const MAGIC: &[u8; 8] = b"PGSNPK01";
/// The last 8 bytes of every pack, after the entry count: a pack without it is truncated.
pub const TRAILER_MAGIC: &[u8; 8] = b"PGSNPKIX";
/// Bytes per entry of a plain entry table.
pub const ENTRY_LEN: usize = 48;
/// No blob is larger: chunks are at most 16 MiB and tree blobs far smaller.
pub const MAX_BLOB_LEN: u32 = 64 << 20;

/// What a blob holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobType {
    /// A chunk of a file's content.
    Data = 0,
    /// A directory's tree (see `tree::Dir`).
    Tree = 1,
    /// A run of a file's chunk references (see `tree::encode_chunk_list`).
    ChunkList = 2,
}

impl BlobType {
    fn from_u8(v: u8) -> Option<BlobType> {
        match v {
            0 => Some(BlobType::Data),
            1 => Some(BlobType::Tree),
            2 => Some(BlobType::ChunkList),
            _ => None,
        }
    }
}

/// One blob's place in a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The blob's id: the hash of its content (see `crypto`).
    pub id: BlobId,
    /// What the blob holds.
    pub kind: BlobType,
    /// Where its stored bytes start, in bytes from the start of the pack (after the magic).
    pub offset: u32,
    /// Its length as stored in the pack (compressed, and encrypted if the repository is), in
    /// bytes.
    pub stored_len: u32,
    /// The blob's own length once decoded, in bytes.
    pub len: u32,
}

/// Compresses a blob for storage: one zstd frame if that is smaller, else the raw bytes.
pub fn encode_blob(data: &[u8], level: i32) -> Vec<u8> {
    match zstd::bulk::compress(data, level) {
        Ok(c) if c.len() < data.len() => c,
        _ => data.to_vec(),
    }
}

/// Turns stored blob bytes back into the blob and checks them against `id` (SHA-256: an
/// encrypted repository decrypts first and uses its keyed hash, see `crypto`).
pub fn decode_blob(
    stored: &[u8],
    len: u32,
    id: &BlobId,
    pack: &str,
) -> Result<Vec<u8>, StoreError> {
    let data = decompress_blob(stored, len, id, pack)?;
    if BlobId::of(&data) != *id {
        return Err(StoreError::corrupt(
            pack,
            format!("blob {id}: checksum mismatch"),
        ));
    }
    Ok(data)
}

/// Undoes `encode_blob`: a body of `len` bytes is raw, anything else one zstd frame.
pub fn decompress_blob(
    stored: &[u8],
    len: u32,
    id: &BlobId,
    pack: &str,
) -> Result<Vec<u8>, StoreError> {
    if len > MAX_BLOB_LEN {
        return Err(StoreError::corrupt(
            pack,
            format!("blob {id}: implausible length {len}"),
        ));
    }
    let data = if stored.len() == len as usize {
        stored.to_vec()
    } else {
        decompress(stored, len as usize)
            .map_err(|e| StoreError::corrupt(pack, format!("blob {id}: cannot decompress: {e}")))?
    };
    if data.len() != len as usize {
        return Err(StoreError::corrupt(
            pack,
            format!("blob {id}: checksum mismatch"),
        ));
    }
    Ok(data)
}

thread_local! {
    /// Each thread's zstd decompression context, kept: making one per chunk cost more than
    /// decompressing a 64 KiB chunk of PostgreSQL pages (profiled on 2026-12-04).
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

/// One zstd frame of at most `capacity` bytes, decompressed with this thread's context.
fn decompress(frame: &[u8], capacity: usize) -> std::io::Result<Vec<u8>> {
    DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        let d = match &mut *d {
            Some(d) => d,
            empty => empty.insert(zstd::bulk::Decompressor::new()?),
        };
        d.decompress(frame, capacity)
    })
}

/// Builds one pack in memory; the caller bounds its size.
pub struct PackWriter {
    buf: Vec<u8>,
    entries: Vec<Entry>,
}

impl Default for PackWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl PackWriter {
    /// An empty pack: the magic and no blobs.
    pub fn new() -> PackWriter {
        PackWriter {
            buf: MAGIC.to_vec(),
            entries: Vec::new(),
        }
    }

    /// Appends an already encoded blob and returns its entry.
    pub fn add(&mut self, id: BlobId, kind: BlobType, stored: &[u8], len: u32) -> Entry {
        let entry = Entry {
            id,
            kind,
            offset: self.buf.len() as u32,
            stored_len: stored.len() as u32,
            len,
        };
        self.buf.extend_from_slice(stored);
        self.entries.push(entry);
        entry
    }

    /// The pack's size in bytes so far, counting its entry table (as stored in a plain
    /// repository) but not the 12-byte trailer.
    pub fn size(&self) -> usize {
        self.buf.len() + self.entries.len() * ENTRY_LEN
    }

    /// Whether no blob has been added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends the entry table, as `seal_table` stores it (plain, or encrypted), and returns
    /// the pack's bytes.
    pub fn finish(mut self, seal_table: impl FnOnce(&[u8]) -> Vec<u8>) -> (Vec<u8>, Vec<Entry>) {
        let mut table = Vec::with_capacity(self.entries.len() * ENTRY_LEN);
        for e in &self.entries {
            table.extend_from_slice(&e.id.0);
            table.extend_from_slice(&[e.kind as u8, 0, 0, 0]);
            table.extend_from_slice(&e.offset.to_le_bytes());
            table.extend_from_slice(&e.stored_len.to_le_bytes());
            table.extend_from_slice(&e.len.to_le_bytes());
        }
        self.buf.extend_from_slice(&seal_table(&table));
        self.buf
            .extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(TRAILER_MAGIC);
        (self.buf, self.entries)
    }
}

/// The length of the trailer read first when listing a pack: count and magic.
pub const TAIL_LEN: usize = 12;

/// Parses the count from the last `TAIL_LEN` bytes of a pack.
pub fn parse_tail(tail: &[u8], pack: &str) -> Result<u32, StoreError> {
    if tail.len() != TAIL_LEN || &tail[4..] != TRAILER_MAGIC {
        return Err(StoreError::corrupt(pack, "bad pack trailer"));
    }
    Ok(u32::from_le_bytes(tail[..4].try_into().expect("4 bytes")))
}

/// Where the stored entry table of a pack of `pack_len` bytes holding `count` entries starts;
/// `overhead` is what encryption adds to the table (see `Crypto::table_overhead`). The blobs
/// end there.
pub fn table_start(
    pack_len: u64,
    count: u32,
    overhead: usize,
    pack: &str,
) -> Result<u64, StoreError> {
    let table = count as u64 * ENTRY_LEN as u64 + (overhead + TAIL_LEN) as u64;
    if table + MAGIC.len() as u64 > pack_len {
        return Err(StoreError::corrupt(
            pack,
            format!("bad pack trailer: {count} entries do not fit in {pack_len} bytes"),
        ));
    }
    Ok(pack_len - table)
}

/// Why one entry of an entry table is unusable; its neighbours may still be fine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadEntry {
    /// The type byte is none of [`BlobType`]'s (written by a newer format, or damaged).
    #[error("entry {index} has unknown blob type {kind}")]
    UnknownType {
        /// The entry's position in the table, from 0.
        index: usize,
        /// The type byte found.
        kind: u8,
    },
    /// The blob's bytes would start before the first blob or end past the last.
    #[error("entry {index} (blob {id}) lies outside the pack: bytes {offset}..{end}, blobs end at {blob_end}")]
    OutOfBounds {
        /// The entry's position in the table, from 0.
        index: usize,
        /// The blob the entry names.
        id: BlobId,
        /// Where the entry says the blob starts, in bytes from the start of the pack.
        offset: u32,
        /// Where it would end: `offset` plus its stored length.
        end: u64,
        /// Where the blobs end: the start of the entry table.
        blob_end: u64,
    },
}

/// The entries of a (plain) table, one by one, each checked to lie inside the blob area,
/// which ends at `blob_end` (the table's start). The caller has checked the table is a whole
/// number of entries.
pub fn entries(table: &[u8], blob_end: u64) -> impl Iterator<Item = Result<Entry, BadEntry>> + '_ {
    table
        .chunks_exact(ENTRY_LEN)
        .enumerate()
        .map(move |(index, e)| {
            let u32_at = |i: usize| u32::from_le_bytes(e[i..i + 4].try_into().expect("4 bytes"));
            let mut id = [0u8; 32];
            id.copy_from_slice(&e[..32]);
            let entry = Entry {
                id: BlobId(id),
                kind: BlobType::from_u8(e[32])
                    .ok_or(BadEntry::UnknownType { index, kind: e[32] })?,
                offset: u32_at(36),
                stored_len: u32_at(40),
                len: u32_at(44),
            };
            let end = entry.offset as u64 + entry.stored_len as u64;
            if (entry.offset as u64) < MAGIC.len() as u64 || end > blob_end {
                return Err(BadEntry::OutOfBounds {
                    index,
                    id: entry.id,
                    offset: entry.offset,
                    end,
                    blob_end,
                });
            }
            Ok(entry)
        })
}

/// Parses a (plain) entry table, checking every entry lies inside the blob area.
pub fn parse_entries(table: &[u8], blob_end: u64, pack: &str) -> Result<Vec<Entry>, StoreError> {
    if !table.len().is_multiple_of(ENTRY_LEN) {
        return Err(StoreError::corrupt(pack, "bad entry table length"));
    }
    entries(table, blob_end)
        .map(|e| e.map_err(|e| StoreError::corrupt(pack, e.to_string())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_layout_and_round_trip() {
        let mut w = PackWriter::new();
        let blob = b"page".repeat(100);
        let stored = encode_blob(&blob, 3);
        let e = w.add(
            BlobId::of(&blob),
            BlobType::Data,
            &stored,
            blob.len() as u32,
        );
        assert_eq!(e.offset, 8);
        let (bytes, entries) = w.finish(<[u8]>::to_vec);
        assert_eq!(&bytes[..8], MAGIC);
        assert_eq!(bytes.len(), 8 + stored.len() + ENTRY_LEN + TAIL_LEN);
        let n = parse_tail(&bytes[bytes.len() - TAIL_LEN..], "p").unwrap();
        assert_eq!(n, 1);
        let table_start = bytes.len() - TAIL_LEN - ENTRY_LEN;
        let parsed = parse_entries(
            &bytes[table_start..bytes.len() - TAIL_LEN],
            table_start as u64,
            "p",
        )
        .unwrap();
        assert_eq!(parsed, entries);
        let s = &bytes[e.offset as usize..(e.offset + e.stored_len) as usize];
        assert_eq!(decode_blob(s, e.len, &e.id, "p").unwrap(), blob);
        let mut bad = s.to_vec();
        bad[3] ^= 1;
        assert!(decode_blob(&bad, e.len, &e.id, "p").is_err());
        // The thread's decompression context is still good after a bad frame.
        assert_eq!(decode_blob(s, e.len, &e.id, "p").unwrap(), blob);
    }

    /// A damaged entry is reported on its own; its neighbours still parse.
    #[test]
    fn entries_one_by_one() {
        let mut w = PackWriter::new();
        for blob in [b"first".as_slice(), b"second"] {
            w.add(BlobId::of(blob), BlobType::Data, blob, blob.len() as u32);
        }
        let (mut bytes, written) = w.finish(<[u8]>::to_vec);
        let n = bytes.len() as u64;
        let count = parse_tail(&bytes[bytes.len() - TAIL_LEN..], "p").unwrap();
        let start = table_start(n, count, 0, "p").unwrap() as usize;
        assert_eq!(start, 8 + 5 + 6);
        assert!(table_start(n, 1000, 0, "p").is_err());
        // The high byte of the first entry's offset.
        bytes[start + 39] ^= 0xff;
        let table = &bytes[start..bytes.len() - TAIL_LEN];
        let parsed: Vec<_> = entries(table, start as u64).collect();
        assert!(
            matches!(parsed[0], Err(BadEntry::OutOfBounds { index: 0, id, .. }) if id == written[0].id),
            "{parsed:?}"
        );
        assert_eq!(parsed[1], Ok(written[1]));
        assert!(parse_entries(table, start as u64, "p").is_err());
    }
}
