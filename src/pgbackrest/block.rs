//! Block-incremental files (`repo-block=y`, pgBackRest 2.45 and later): a file is a list of
//! blocks; each backup stores the blocks that changed, compressed in groups (super blocks),
//! and a block map at the end of the file's object says, for every block of the file, which
//! backup (an index into the manifest's `backup-reference`), bundle, offset and super block
//! holds it. The map's format (LEB128 varints, zigzag deltas, flags in the low bits) is
//! pgBackRest's `blockMapNewRead`; a super block is a chunked stream (varint chunk lengths,
//! zigzag deltas, 0 at the end) of compressed data holding, per block, a varint then the
//! block's bytes.

use std::io::Read;

/// One block of the file, in file order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapItem {
    /// The backup holding it: an index into the manifest's `backup-reference`.
    pub reference: usize,
    /// Its bundle (0: the file's own `.pgbi` object).
    pub bundle_id: u64,
    /// Where its super block starts in that object.
    pub offset: u64,
    /// The super block's stored (compressed) size.
    pub size: u64,
    /// The super block's uncompressed size.
    pub super_block_size: u64,
    /// The block's number in its super block.
    pub block: u64,
}

const FLAG_LAST: u64 = 1;
const FLAG_BUNDLE_ID: u64 = 2;
const FLAG_OFFSET: u64 = 4;
const FLAG_CONTINUE: u64 = 2;
const FLAG_CONTINUE_LAST: u64 = 4;
const REFERENCE_SHIFT: u32 = 3;
const FLAG_SUPER_BLOCK_SIZE_REMAINDER: u64 = 1;
const SUPER_BLOCK_SIZE_SHIFT: u32 = 1;
const FLAG_SUPER_BLOCK_CHANGE: u64 = 2;
const FLAG_SUPER_BLOCK_TOTAL_OFFSET: u64 = 4;
const SUPER_BLOCK_SHIFT: u32 = 3;
const FLAG_BLOCK_TOTAL_OFFSET: u64 = 1;
const BLOCK_TOTAL_SHIFT: u32 = 1;

/// A cursor over bytes that reads LEB128 varints.
struct Cursor<'a> {
    data: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self
                .data
                .get(self.at)
                .ok_or("the map ends inside a number")?;
            self.at += 1;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("a number longer than 64 bits".into())
    }

    fn skip(&mut self, n: usize) -> Result<(), String> {
        if n > self.data.len() - self.at {
            return Err("the map ends inside a checksum".into());
        }
        self.at += n;
        Ok(())
    }
}

fn zigzag(n: u64) -> i64 {
    ((n >> 1) as i64) ^ -((n & 1) as i64)
}

#[derive(Clone, Copy)]
struct RefState {
    super_block_size: u64,
    bundle_id: u64,
    offset: u64,
    size: u64,
    block: u64,
}

/// A sum of numbers read from a map, or the map is damaged.
fn add(a: u64, b: u64) -> Result<u64, String> {
    a.checked_add(b)
        .ok_or_else(|| "an offset or size past 2^64".into())
}

/// Parses a block map (see the module comment) of a file of `max_items` blocks: a map
/// listing more is damaged, and is not read on.
pub fn parse_map(
    data: &[u8],
    block_size: u64,
    checksum_size: usize,
    max_items: u64,
) -> Result<Vec<MapItem>, String> {
    if block_size == 0 {
        return Err("a block size of 0".into());
    }
    let mut c = Cursor { data, at: 0 };
    if c.varint()? & 1 != 0 {
        return Err("block map version is not 0".into());
    }
    let mut refs: std::collections::HashMap<usize, RefState> = Default::default();
    let mut items = Vec::new();
    let mut size_last: i64 = 0;
    loop {
        let encoded = c.varint()?;
        let reference = (encoded >> REFERENCE_SHIFT) as usize;
        let mut item = MapItem {
            reference,
            bundle_id: 0,
            offset: 0,
            size: 0,
            super_block_size: block_size,
            block: 0,
        };
        let mut continued = false;
        match refs.get_mut(&reference) {
            None => {
                if encoded & FLAG_BUNDLE_ID != 0 {
                    item.bundle_id = c.varint()?;
                }
                if encoded & FLAG_OFFSET != 0 {
                    item.offset = c.varint()?;
                }
                refs.insert(
                    reference,
                    RefState {
                        super_block_size: block_size,
                        bundle_id: item.bundle_id,
                        offset: item.offset,
                        size: 0,
                        block: 0,
                    },
                );
            }
            Some(r) => {
                item.super_block_size = r.super_block_size;
                item.bundle_id = r.bundle_id;
                if encoded & FLAG_CONTINUE != 0 {
                    item.offset = r.offset;
                    item.size = r.size;
                    continued = true;
                } else {
                    item.offset = add(r.offset, r.size)?;
                    if encoded & FLAG_OFFSET != 0 {
                        item.offset = add(item.offset, c.varint()?)?;
                    }
                    r.offset = item.offset;
                }
            }
        }
        let mut first = true;
        loop {
            let r = refs
                .get_mut(&reference)
                .ok_or("a reference the map did not name")?;
            let super_encoded = if continued {
                continued = false;
                let last = if encoded & FLAG_CONTINUE_LAST != 0 {
                    FLAG_LAST
                } else {
                    0
                };
                last | FLAG_SUPER_BLOCK_TOTAL_OFFSET
            } else {
                let e = c.varint()?;
                item.size = e >> SUPER_BLOCK_SHIFT;
                if size_last != 0 {
                    item.size = zigzag(item.size)
                        .checked_add(size_last)
                        .and_then(|s| u64::try_from(s).ok())
                        .ok_or("a negative super block size")?;
                }
                if e & FLAG_SUPER_BLOCK_CHANGE != 0 {
                    let s = c.varint()?;
                    item.super_block_size = (s >> SUPER_BLOCK_SIZE_SHIFT)
                        .checked_mul(block_size)
                        .ok_or("a super block size past 2^64")?;
                    if s & FLAG_SUPER_BLOCK_SIZE_REMAINDER != 0 {
                        item.super_block_size = add(item.super_block_size, c.varint()?)?;
                    }
                    r.super_block_size = item.super_block_size;
                }
                if first {
                    r.offset = item.offset;
                } else {
                    r.offset = add(r.offset, size_last as u64)?;
                }
                r.size = item.size;
                r.block = 0;
                e
            };
            size_last = i64::try_from(item.size).map_err(|_| "a super block size past 2^63")?;
            first = false;
            let total = if super_encoded & FLAG_SUPER_BLOCK_TOTAL_OFFSET != 0 {
                let t = c.varint()?;
                if t & FLAG_BLOCK_TOTAL_OFFSET != 0 {
                    r.block = add(r.block, c.varint()?)?;
                }
                (t >> BLOCK_TOTAL_SHIFT) + 1
            } else {
                item.super_block_size.div_ceil(block_size)
            };
            if total > max_items.saturating_sub(items.len() as u64) {
                return Err(format!("more than the file's {max_items} blocks"));
            }
            for i in 0..total {
                item.block = add(r.block, i)?;
                c.skip(checksum_size)?;
                items.push(item);
            }
            r.block = add(r.block, total)?;
            item.offset = add(item.offset, item.size)?;
            if super_encoded & FLAG_LAST != 0 {
                break;
            }
        }
        if encoded & FLAG_LAST != 0 {
            break;
        }
    }
    Ok(items)
}

/// The compressed stream of a super block, from its chunked form.
pub fn unchunk(data: &[u8]) -> Result<Vec<u8>, String> {
    let mut c = Cursor { data, at: 0 };
    let mut out = Vec::new();
    let mut last: i64 = 0;
    loop {
        let delta = c.varint()?;
        let len = if delta == 0 {
            0
        } else if last == 0 {
            i64::try_from(delta).unwrap_or(i64::MAX)
        } else {
            zigzag(delta - 1).saturating_add(last)
        };
        if len <= 0 {
            return Ok(out);
        }
        let len = usize::try_from(len).map_err(|_| "a chunk past the address space")?;
        let chunk =
            c.at.checked_add(len)
                .and_then(|end| data.get(c.at..end))
                .ok_or("a super block ends inside a chunk")?;
        out.extend_from_slice(chunk);
        c.at += len;
        last = len as i64;
    }
}

/// The blocks of a decompressed super block of `super_block_size` bytes.
pub fn blocks(data: &[u8], super_block_size: u64, block_size: u64) -> Result<Vec<&[u8]>, String> {
    if block_size == 0 {
        return Err("a block size of 0".into());
    }
    let mut c = Cursor { data, at: 0 };
    let total = super_block_size.div_ceil(block_size);
    let mut out = Vec::new();
    for i in 0..total {
        c.varint()?;
        let len = if i == total - 1 && !super_block_size.is_multiple_of(block_size) {
            super_block_size % block_size
        } else {
            block_size
        } as usize;
        let block =
            c.at.checked_add(len)
                .and_then(|end| data.get(c.at..end))
                .ok_or("a super block ends inside a block")?;
        out.push(block);
        c.at += len;
    }
    Ok(out)
}

/// Reads a whole stream.
pub fn read_all(mut r: impl Read) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    r.read_to_end(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_zigzag() {
        let mut c = Cursor {
            data: &[0x96, 0x01, 0x05],
            at: 0,
        };
        assert_eq!(c.varint().unwrap(), 150);
        assert_eq!(c.varint().unwrap(), 5);
        assert!(c.varint().is_err());
        assert_eq!(zigzag(0), 0);
        assert_eq!(zigzag(1), -1);
        assert_eq!(zigzag(4), 2);
    }

    /// The map of an 8.2 MiB table file in the second incremental backup of a chain, as
    /// pgBackRest 2.45 wrote it (`bi` 1, `bim` 7070): one item per 8 KiB block, from the full
    /// backup (reference 0) and from the incrementals.
    #[test]
    fn a_real_block_map() {
        let data = include_bytes!("testdata/block-map.bin");
        let items = parse_map(data, 8192, 6, 1051).unwrap();
        assert_eq!(items.len(), 8_609_792 / 8192);
        let refs: std::collections::BTreeSet<usize> = items.iter().map(|i| i.reference).collect();
        assert!(refs.contains(&0) && refs.contains(&2), "{refs:?}");
        assert!(refs.iter().all(|r| *r <= 2), "{refs:?}");
        // Blocks of one super block are numbered from 0 and share its offset and size.
        for w in items.windows(2) {
            if w[0].reference == w[1].reference && w[0].offset == w[1].offset {
                assert_eq!(w[0].size, w[1].size);
            }
        }
        assert!(parse_map(&data[..100], 8192, 6, 1051).is_err());
    }

    fn varint(mut n: u64, out: &mut Vec<u8>) {
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }

    /// Damaged maps end in an error, never a panic, a loop or memory for blocks the file
    /// cannot have.
    #[test]
    fn damaged_maps_are_errors() {
        let map = |numbers: &[u64]| {
            let mut out = Vec::new();
            for n in numbers {
                varint(*n, &mut out);
            }
            out
        };
        // Version 0; reference 0, last; a super block of 100 bytes, last, with a block count
        // of 2^63.
        let huge = map(&[0, 1, (100 << 3) | 5, u64::MAX - 1]);
        let e = parse_map(&huge, 8192, 0, 1000).unwrap_err();
        assert!(e.contains("more than the file's 1000 blocks"), "{e}");
        // The same with 3 blocks, for a file of 2.
        let three = map(&[0, 1, (100 << 3) | 5, 2 << 1]);
        assert!(parse_map(&three, 8192, 0, 3).is_ok());
        assert!(parse_map(&three, 8192, 0, 2).is_err());
        assert!(parse_map(&three, 0, 0, 3).is_err(), "a block size of 0");
        // An offset past 2^64.
        let far = map(&[0, 1 | 4, u64::MAX, (u64::MAX >> 3) << 3 | 5, 0]);
        assert!(parse_map(&far, 8192, 6, 10).is_err());
        // A chunk longer than the address space, and one past the data.
        assert!(unchunk(&map(&[u64::MAX])).is_err());
        assert!(unchunk(&[5, 1, 2]).is_err());
        assert!(blocks(&[0, 1], 2, 0).is_err(), "a block size of 0");
    }

    #[test]
    fn chunks_and_blocks() {
        // Chunks of 3 then 2 bytes (delta: zigzag(-1) + 1 = 2), then the end.
        let chunked = [3, b'a', b'b', b'c', 2, b'd', b'e', 0];
        assert_eq!(unchunk(&chunked).unwrap(), b"abcde");
        // Two blocks of 2 bytes then one of 1, each after a varint.
        let data = [0, 1, 2, 0, 3, 4, 0, 5];
        assert_eq!(blocks(&data, 5, 2).unwrap(), [&[1u8, 2][..], &[3, 4], &[5]]);
    }
}
