//! Relation names from a data directory's files, without a server: a database's
//! `pg_filenode.map` gives the file of its `pg_class`, whose heap tuples begin with the
//! relation's oid and name. Used to name relations in messages, so a name not found is no
//! error.
//! Decision: a name is taken from any tuple of the oid, preferring one not deleted (`t_xmax`
//! 0); the name a relation had in the backup, which a later RENAME may have changed.

use super::wal::{le_u16, le_u32};

/// pg_class's oid, a mapped catalog.
pub const PG_CLASS_OID: u32 = 1259;
/// RELMAPPER_FILEMAGIC.
const RELMAP_MAGIC: u32 = 0x0059_2717;
/// The most mappings any major's map file holds.
const MAX_MAPPINGS: usize = 64;
/// SizeOfPageHeaderData.
const PAGE_HEADER_SIZE: usize = 24;
/// offsetof(HeapTupleHeaderData, t_hoff).
const T_HOFF_AT: usize = 22;
/// NAMEDATALEN.
const NAME_SIZE: usize = 64;
const LP_NORMAL: u32 = 1;

/// The file number a relation map (`pg_filenode.map`) gives `oid`.
pub fn mapped_filenode(map: &[u8], oid: u32) -> Option<u32> {
    if map.len() < 8 || le_u32(map, 0) != RELMAP_MAGIC {
        return None;
    }
    let count = le_u32(map, 4) as usize;
    if count > MAX_MAPPINGS || map.len() < 8 + count * 8 {
        return None;
    }
    (0..count)
        .map(|i| 8 + i * 8)
        .find(|&at| le_u32(map, at) == oid)
        .map(|at| le_u32(map, at + 4))
}

/// The name of relation `oid` in a `pg_class` heap file.
pub fn relname(heap: &[u8], oid: u32) -> Option<String> {
    let mut found: Option<(bool, String)> = None;
    let mut at = 0;
    while at + PAGE_HEADER_SIZE <= heap.len() {
        let size = usize::from(le_u16(heap, at + 18) & 0xFF00);
        if size < PAGE_HEADER_SIZE || at + size > heap.len() {
            break;
        }
        let page = &heap[at..at + size];
        at += size;
        let lower = usize::from(le_u16(page, 12)).min(size);
        for item in (PAGE_HEADER_SIZE..lower).step_by(4) {
            if item + 4 > lower {
                break;
            }
            let lp = le_u32(page, item);
            let (off, flags, len) = ((lp & 0x7FFF) as usize, (lp >> 15) & 3, (lp >> 17) as usize);
            if flags != LP_NORMAL || off + len > size || len <= T_HOFF_AT {
                continue;
            }
            let tuple = &page[off..off + len];
            let hoff = usize::from(tuple[T_HOFF_AT]);
            if len < hoff + 4 + NAME_SIZE || le_u32(tuple, hoff) != oid {
                continue;
            }
            let name = &tuple[hoff + 4..hoff + 4 + NAME_SIZE];
            let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(NAME_SIZE)];
            let live = le_u32(tuple, 4) == 0;
            if found.as_ref().is_none_or(|(l, _)| live && !l) {
                found = Some((live, String::from_utf8_lossy(name).into_owned()));
            }
        }
    }
    found.map(|(_, name)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(tuples: &[(u32, u32, &str)]) -> Vec<u8> {
        let mut p = vec![0u8; 8192];
        p[18..20].copy_from_slice(&(8192u16 | 4).to_le_bytes());
        let mut upper = 8192;
        for (i, &(xmax, oid, name)) in tuples.iter().enumerate() {
            let hoff = 24;
            let len = hoff + 4 + NAME_SIZE + 8;
            upper -= len;
            let t = &mut p[upper..upper + len];
            t[4..8].copy_from_slice(&xmax.to_le_bytes());
            t[T_HOFF_AT] = hoff as u8;
            t[hoff..hoff + 4].copy_from_slice(&oid.to_le_bytes());
            t[hoff + 4..hoff + 4 + name.len()].copy_from_slice(name.as_bytes());
            let lp = upper as u32 | (LP_NORMAL << 15) | ((len as u32) << 17);
            p[24 + i * 4..28 + i * 4].copy_from_slice(&lp.to_le_bytes());
        }
        let lower = 24 + tuples.len() * 4;
        p[12..14].copy_from_slice(&(lower as u16).to_le_bytes());
        p
    }

    #[test]
    fn names_come_from_pg_class_tuples() {
        let mut heap = page(&[(0, 1259, "pg_class"), (900, 16384, "old_name")]);
        heap.extend(page(&[(0, 16384, "t"), (0, 16390, "t_pkey")]));
        assert_eq!(relname(&heap, 16384).as_deref(), Some("t"));
        assert_eq!(relname(&heap, 16390).as_deref(), Some("t_pkey"));
        assert_eq!(relname(&heap, 1), None);
        assert_eq!(
            relname(&page(&[(7, 5, "gone")]), 5).as_deref(),
            Some("gone")
        );
        assert_eq!(relname(&heap[..100], 16384), None);
    }

    #[test]
    fn map_gives_the_file_of_a_mapped_catalog() {
        let mut map = vec![0u8; 512];
        map[0..4].copy_from_slice(&RELMAP_MAGIC.to_le_bytes());
        map[4..8].copy_from_slice(&2u32.to_le_bytes());
        for (i, (oid, file)) in [(1262u32, 1262u32), (1259, 16500)].iter().enumerate() {
            map[8 + i * 8..12 + i * 8].copy_from_slice(&oid.to_le_bytes());
            map[12 + i * 8..16 + i * 8].copy_from_slice(&file.to_le_bytes());
        }
        assert_eq!(mapped_filenode(&map, PG_CLASS_OID), Some(16500));
        assert_eq!(mapped_filenode(&map, 1), None);
        assert_eq!(mapped_filenode(&map[..12], PG_CLASS_OID), None);
        map[0] = 0;
        assert_eq!(mapped_filenode(&map, PG_CLASS_OID), None);
    }
}
