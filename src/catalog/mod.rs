//! The catalog: what the store's objects mean to PostgreSQL.
//!
//! The store keeps chunks, packs, trees and snapshots without knowing what they hold. This
//! layer gives them their PostgreSQL meaning: a snapshot's metadata (system, timeline, LSNs,
//! backup_label, tablespaces), the keys of clusters and their WAL, system identifiers, and the
//! chunk sizes that suit relation pages. Commands use the store through it.

pub mod keys;
mod meta;
mod system_id;
pub mod wal;

#[cfg(test)]
pub use meta::sample;
pub use meta::{
    ArchiveSource, BackupMeta, Backups, ImportSource, ReadMode, ReadRecord, Snapshot, Source,
    Tablespace,
};
pub use system_id::SystemId;

use crate::pg::PAGE_SIZE;
use crate::store::{StoreError, MAX_CHUNK_SIZE};

/// The chunk size a repository for PostgreSQL data may be created with: whole pages, so a
/// changed page changes one chunk, and at most the store's limit.
pub fn chunk_size(bytes: u64) -> Result<u32, StoreError> {
    u32::try_from(bytes)
        .ok()
        .filter(|&n| n > 0 && n <= MAX_CHUNK_SIZE && n.is_multiple_of(PAGE_SIZE as u32))
        .ok_or_else(|| {
            StoreError::BadSetting(format!(
                "chunk size {bytes} must be a multiple of 8 KiB, at most 16 MiB"
            ))
        })
}

#[cfg(test)]
mod tests {
    #[test]
    fn chunk_sizes_are_whole_pages() {
        assert_eq!(super::chunk_size(65536).unwrap(), 65536);
        for bad in [0, 1000, 8193, 32 << 20, u64::MAX] {
            let e = super::chunk_size(bad).unwrap_err().to_string();
            assert!(e.contains("multiple of 8 KiB"), "{e}");
        }
    }
}
