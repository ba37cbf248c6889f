//! The snapshot tree: directories (JSON tree blobs) → files → chunk lists (binary blobs).
//!
//! Every node is a content-addressed blob in a pack, so an unchanged directory or file list
//! costs nothing in the next backup. A file's chunks are split into lists of at most
//! `LIST_FANOUT` chunks: a 1 GiB relation segment with a few changed pages rewrites a few
//! lists, not one list of every chunk. References carry the blob's location, so reading a
//! backup needs no repository-wide index.

use super::{BlobId, PackId, StoreError};
use serde::{Deserialize, Serialize};

/// Chunks per chunk-list blob: 1024 × 52 bytes ≈ 52 KiB per list.
pub const LIST_FANOUT: usize = 1024;
/// A chunk ref of a version-1 list; version 2 adds a u32 crc32c.
const CHUNK_REF_LEN: usize = 48;
const ZERO_PACK: u32 = u32::MAX;
/// Where a version-1 list has its pack count, a version-2 list has this mark (a version-1
/// list of 2^32 − 1 packs cannot exist: it would be 128 GiB).
const VERSION_2_MARK: u32 = u32::MAX;

/// Where a blob lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Loc {
    /// The pack holding the blob.
    pub pack: PackId,
    /// Byte offset of the blob in the pack.
    pub offset: u32,
    /// The blob's length in the pack, in bytes (compressed, and encrypted if the repository is).
    pub stored_len: u32,
}

/// A reference to a tree or chunk-list blob, as written in tree JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    /// The blob's content id.
    pub id: BlobId,
    /// Where it is stored (flattened into the JSON object).
    #[serde(flatten)]
    pub loc: Loc,
    /// The blob's plain length in bytes.
    pub len: u32,
}

/// One fixed-size piece of a file. `loc == None` marks an all-zero chunk, which is never
/// stored (and whose `id` is all zeros).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    /// The chunk's content id (all zeros for an all-zero chunk).
    pub id: BlobId,
    /// The chunk's plain length in bytes (the chunk size, or less at the end of a file).
    pub len: u32,
    /// Where it is stored; `None` for an all-zero chunk.
    pub loc: Option<Loc>,
    /// crc32c of the stored bytes at `loc`, for a cheap check on reads (see
    /// `Verification`): recorded by repositories of format 3, `None` in older lists and for
    /// all-zero chunks.
    pub crc: Option<u32>,
}

/// Encodes a directory as its tree blob (JSON).
pub fn encode_dir(dir: &Dir) -> Vec<u8> {
    // Names, numbers and ids only: nothing in a Dir can fail to serialize.
    serde_json::to_vec(dir).expect("a tree serializes")
}

/// Encodes a chunk list, little endian. Version 1: `u32 pack count || pack ids || u32 chunk
/// count || chunk refs`, each ref `id || u32 pack index (u32::MAX = zeros) || u32 offset ||
/// u32 stored length || u32 length`. Version 2: `u32 0xFFFFFFFF` first, then the same with a
/// `u32 crc32c` of the stored bytes (0 for zeros) at the end of each ref. The pack table keeps
/// refs at 48 (52) bytes instead of 80.
///
/// The version follows the chunks: 2 when every stored chunk carries a crc, as in a
/// repository that records them (format 3), else 1, which older builds read.
pub fn encode_chunk_list(chunks: &[Chunk]) -> Vec<u8> {
    let with_crc = chunks.iter().any(|c| c.crc.is_some())
        && chunks.iter().all(|c| c.loc.is_none() || c.crc.is_some());
    let ref_len = CHUNK_REF_LEN + if with_crc { 4 } else { 0 };
    let mut packs: Vec<PackId> = Vec::new();
    let mut refs = Vec::with_capacity(chunks.len() * ref_len);
    for c in chunks {
        let (idx, offset, stored) = match c.loc {
            None => (ZERO_PACK, 0, 0),
            Some(loc) => {
                // Lists are short and packs few, so a linear search beats a map here.
                let idx = match packs.iter().rposition(|p| *p == loc.pack) {
                    Some(i) => i,
                    None => {
                        packs.push(loc.pack);
                        packs.len() - 1
                    }
                };
                (idx as u32, loc.offset, loc.stored_len)
            }
        };
        refs.extend_from_slice(&c.id.0);
        for v in [idx, offset, stored, c.len] {
            refs.extend_from_slice(&v.to_le_bytes());
        }
        if with_crc {
            refs.extend_from_slice(&c.crc.unwrap_or(0).to_le_bytes());
        }
    }
    let mut out = Vec::with_capacity(12 + packs.len() * 32 + refs.len());
    if with_crc {
        out.extend_from_slice(&VERSION_2_MARK.to_le_bytes());
    }
    out.extend_from_slice(&(packs.len() as u32).to_le_bytes());
    for p in &packs {
        out.extend_from_slice(&p.0);
    }
    out.extend_from_slice(&(chunks.len() as u32).to_le_bytes());
    out.extend_from_slice(&refs);
    out
}

/// Decodes a chunk list of either version written by `encode_chunk_list`; `name` is the blob's name for the [`StoreError::Corrupt`] returned on malformed input.
pub fn decode_chunk_list(data: &[u8], name: &str) -> Result<Vec<Chunk>, StoreError> {
    let bad = || StoreError::corrupt(name, "malformed chunk list");
    let u32_at = |i: usize| -> Result<u32, StoreError> {
        let b = data.get(i..i + 4).ok_or_else(bad)?;
        Ok(u32::from_le_bytes(b.try_into().expect("4 bytes")))
    };
    let id_at = |i: usize| -> Result<BlobId, StoreError> {
        let b = data.get(i..i + 32).ok_or_else(bad)?;
        Ok(BlobId(b.try_into().expect("32 bytes")))
    };
    let with_crc = u32_at(0)? == VERSION_2_MARK;
    let start = if with_crc { 4 } else { 0 };
    let ref_len = CHUNK_REF_LEN + if with_crc { 4 } else { 0 };
    let npacks = u32_at(start)? as usize;
    let base = start + 4 + npacks.checked_mul(32).ok_or_else(bad)?;
    let n = u32_at(base)? as usize;
    if data.len() != base + 4 + n * ref_len {
        return Err(bad());
    }
    let packs = (0..npacks)
        .map(|i| id_at(start + 4 + i * 32).map(|id| PackId(id.0)))
        .collect::<Result<Vec<_>, _>>()?;
    (0..n)
        .map(|i| {
            let at = base + 4 + i * ref_len;
            let idx = u32_at(at + 32)?;
            let loc = match idx {
                ZERO_PACK => None,
                i => Some(Loc {
                    pack: *packs.get(i as usize).ok_or_else(bad)?,
                    offset: u32_at(at + 36)?,
                    stored_len: u32_at(at + 40)?,
                }),
            };
            let crc = match (with_crc, loc) {
                (true, Some(_)) => Some(u32_at(at + 48)?),
                _ => None,
            };
            Ok(Chunk {
                id: id_at(at)?,
                len: u32_at(at + 44)?,
                loc,
                crc,
            })
        })
        .collect()
}

/// A directory tree blob. Entries are sorted by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dir {
    /// The directory's entries, sorted by name (so [`Dir::get`] can search them).
    pub entries: Vec<Node>,
}

impl Dir {
    /// The entry called `name`, found by binary search.
    pub fn get(&self, name: &str) -> Option<&Node> {
        self.entries
            .binary_search_by(|n| n.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.entries[i])
    }
}

/// One directory entry: its name, permissions, mtime and what it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// The entry's file name (UTF-8, no `/`).
    pub name: String,
    /// Permission bits.
    pub mode: u32,
    /// Seconds since the Unix epoch.
    pub mtime: i64,
    /// Directory, file or symlink, with what each needs (`type` in the JSON).
    #[serde(flatten)]
    pub kind: NodeKind,
}

/// What a directory entry is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum NodeKind {
    /// A subdirectory.
    Dir {
        /// Its tree blob.
        tree: BlobRef,
    },
    /// A regular file.
    File {
        /// Its length in bytes.
        size: u64,
        /// Its chunk-list blobs, in file order.
        lists: Vec<BlobRef>,
    },
    /// A symbolic link.
    Symlink {
        /// The link's target, as stored on disk.
        target: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three stored chunks in two packs and a zero chunk; with crcs or without.
    fn sample(crcs: bool) -> Vec<Chunk> {
        let p1 = PackId::of(b"p1");
        let p2 = PackId::of(b"p2");
        let stored = |id: &[u8], len, pack, offset, stored_len, crc| Chunk {
            id: BlobId::of(id),
            len,
            loc: Some(Loc {
                pack,
                offset,
                stored_len,
            }),
            crc: crcs.then_some(crc),
        };
        vec![
            stored(b"a", 65536, p1, 8, 100, 0xdead_beef),
            Chunk {
                id: BlobId::default(),
                len: 65536,
                loc: None,
                crc: None,
            },
            stored(b"b", 100, p2, 9, 50, 0),
            stored(b"c", 7, p1, 200, 7, 0xffff_ffff),
        ]
    }

    #[test]
    fn chunk_list_round_trip_in_both_versions() {
        let v1 = sample(false);
        let enc = encode_chunk_list(&v1);
        assert_eq!(enc.len(), 4 + 2 * 32 + 4 + 4 * 48);
        assert_eq!(u32::from_le_bytes(enc[..4].try_into().unwrap()), 2);
        assert_eq!(decode_chunk_list(&enc, "x").unwrap(), v1);
        assert!(decode_chunk_list(&enc[..enc.len() - 1], "x").is_err());

        let v2 = sample(true);
        let enc = encode_chunk_list(&v2);
        assert_eq!(enc.len(), 4 + 4 + 2 * 32 + 4 + 4 * 52);
        assert_eq!(&enc[..4], &[0xff; 4], "the version-2 mark");
        assert_eq!(decode_chunk_list(&enc, "x").unwrap(), v2);
        for cut in [1, 4, 52, enc.len() - 4] {
            assert!(decode_chunk_list(&enc[..enc.len() - cut], "x").is_err());
        }
        assert!(decode_chunk_list(&enc[..3], "x").is_err());

        // A list of only zero chunks has nothing to check: version 1.
        let zeros = &v2[1..2];
        assert_eq!(encode_chunk_list(zeros).len(), 4 + 4 + 48);
        // A stored chunk without a crc (never written so) makes the whole list version 1.
        let mut mixed = v2.clone();
        mixed[2].crc = None;
        let decoded = decode_chunk_list(&encode_chunk_list(&mixed), "x").unwrap();
        assert_eq!(decoded, v1);
    }

    #[test]
    fn dir_json_shape() {
        let loc = Loc {
            pack: PackId::of(b"p"),
            offset: 8,
            stored_len: 10,
        };
        let dir = Dir {
            entries: vec![
                Node {
                    name: "PG_VERSION".into(),
                    mode: 0o600,
                    mtime: 1,
                    kind: NodeKind::File {
                        size: 3,
                        lists: vec![BlobRef {
                            id: BlobId::of(b"l"),
                            loc,
                            len: 10,
                        }],
                    },
                },
                Node {
                    name: "base".into(),
                    mode: 0o700,
                    mtime: 1,
                    kind: NodeKind::Dir {
                        tree: BlobRef {
                            id: BlobId::of(b"t"),
                            loc,
                            len: 10,
                        },
                    },
                },
                Node {
                    name: "pg_wal".into(),
                    mode: 0o777,
                    mtime: 1,
                    kind: NodeKind::Symlink {
                        target: "/x".into(),
                    },
                },
            ],
        };
        let json = serde_json::to_string(&dir).unwrap();
        assert!(json.contains(r#""type":"file""#), "{json}");
        assert!(json.contains(r#""stored_len":10"#), "{json}");
        assert_eq!(serde_json::from_str::<Dir>(&json).unwrap(), dir);
        assert!(dir.get("base").is_some());
        assert!(dir.get("nope").is_none());
    }
}
