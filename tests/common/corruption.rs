//! Corrupting a local repository on purpose: flipping bytes, finding where a blob lies.

use super::*;

/// Inverts every bit of the byte at `offset`.
pub fn flip_byte(path: &Path, offset: u64) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.read_exact(&mut b).unwrap();
    b[0] ^= 0xff;
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&b).unwrap();
    f.sync_all().unwrap();
}

/// Where a blob lies in a pack file (docs/repository-format.md, "Packs").
#[derive(Debug)]
pub struct BlobPlace {
    pub pack: PathBuf,
    pub offset: u64,
    pub stored_len: u64,
    /// Where the blob's 48-byte entry in the pack's entry table starts.
    pub entry_at: u64,
}

/// Every place, in every pack of a local, unencrypted repository, of the blob with this id.
/// Packs whose tail does not parse and entries the library rejects are skipped.
pub fn find_blob(repo: &Path, id: &[u8]) -> Vec<BlobPlace> {
    use pgsnapfs::store::pack::{entries, parse_tail, table_start, ENTRY_LEN, TAIL_LEN};
    let mut found = Vec::new();
    for pack in files_below(&repo.join("packs")) {
        let data = fs::read(&pack).unwrap();
        let name = pack.display().to_string();
        let Some(tail) = data.len().checked_sub(TAIL_LEN).map(|at| &data[at..]) else {
            continue;
        };
        let Ok(count) = parse_tail(tail, &name) else {
            continue;
        };
        let Ok(table) = table_start(data.len() as u64, count, 0, &name) else {
            continue;
        };
        let table_bytes = &data[table as usize..data.len() - TAIL_LEN];
        for (i, entry) in entries(table_bytes, table).enumerate() {
            match entry {
                Ok(e) if e.id.0[..] == *id => found.push(BlobPlace {
                    pack: pack.clone(),
                    offset: e.offset as u64,
                    stored_len: e.stored_len as u64,
                    entry_at: table + (i * ENTRY_LEN) as u64,
                }),
                _ => {}
            }
        }
    }
    found
}
