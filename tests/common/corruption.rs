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

/// Every place, in every pack of a local repository, of the blob with this id.
pub fn find_blob(repo: &Path, id: &[u8]) -> Vec<BlobPlace> {
    let mut found = Vec::new();
    for pack in files_below(&repo.join("packs")) {
        let data = fs::read(&pack).unwrap();
        let n = data.len();
        if n < 20 || &data[n - 8..] != b"PGSNPKIX" {
            continue;
        }
        let count = u32::from_le_bytes(data[n - 12..n - 8].try_into().unwrap()) as usize;
        let table = n - 12 - count * 48;
        for i in 0..count {
            let e = &data[table + i * 48..table + (i + 1) * 48];
            if &e[..32] == id {
                found.push(BlobPlace {
                    pack: pack.clone(),
                    offset: u32::from_le_bytes(e[36..40].try_into().unwrap()) as u64,
                    stored_len: u32::from_le_bytes(e[40..44].try_into().unwrap()) as u64,
                    entry_at: (table + i * 48) as u64,
                });
            }
        }
    }
    found
}
