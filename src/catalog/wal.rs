//! Listings of a cluster's archived WAL and WAL summaries, read from their keys.

use super::keys;
use crate::store::{Repository, StoreError};

/// One object under a cluster's WAL (or WAL summary) prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalObject {
    /// Its key in the repository.
    pub key: String,
    /// The file name: a segment, partial, history or backup file's.
    pub name: String,
    /// The timeline directory it is in, as named in the key (eight hex digits).
    pub timeline_dir: String,
}

impl WalObject {
    /// The object under `key`.
    pub fn of(key: String) -> WalObject {
        let mut parts = key.rsplit('/');
        let name = parts.next().unwrap_or_default().to_string();
        let timeline_dir = parts.next().unwrap_or_default().to_string();
        WalObject {
            key,
            name,
            timeline_dir,
        }
    }
}

/// Every archived WAL file of cluster `sysid`, in key order.
pub fn files(repo: &Repository, sysid: u64) -> Result<Vec<WalObject>, StoreError> {
    list(repo, &keys::wal_system(sysid))
}

/// Every WAL summary of cluster `sysid`, in key order.
pub fn summaries(repo: &Repository, sysid: u64) -> Result<Vec<WalObject>, StoreError> {
    list(repo, &keys::wal_summaries(sysid))
}

fn list(repo: &Repository, prefix: &str) -> Result<Vec<WalObject>, StoreError> {
    Ok(repo
        .backend()
        .list(prefix)?
        .into_iter()
        .map(WalObject::of)
        .collect())
}

/// Deletes a listed WAL file or summary.
pub fn delete(repo: &Repository, object: &WalObject) -> Result<(), StoreError> {
    Ok(repo.backend().delete(&object.key)?)
}

/// Whether WAL file `name` of timeline `tli` is archived.
pub fn has_file(repo: &Repository, sysid: u64, tli: u32, name: &str) -> Result<bool, StoreError> {
    Ok(repo.backend().exists(&keys::wal_file(sysid, tli, name))?)
}

/// The clusters with a registry record, by the identifier in its key (keys that hold no
/// number are not records).
pub fn system_ids(repo: &Repository) -> Result<Vec<u64>, StoreError> {
    Ok(repo
        .backend()
        .list(keys::SYSTEMS)?
        .iter()
        .filter_map(|k| k.trim_start_matches(keys::SYSTEMS).parse().ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::backend::memory::MemoryBackend;
    use std::sync::Arc;

    #[test]
    fn listings_name_their_objects() {
        let repo = Repository::init(Arc::new(MemoryBackend::default()), 65536, 3).unwrap();
        let seg = "000000010000000000000003";
        repo.put_sealed(&keys::wal_file(7, 1, seg), b"w").unwrap();
        repo.put_sealed(&keys::wal_summary(7, 1, seg), b"s")
            .unwrap();
        repo.put_sealed(&keys::wal_file(8, 1, seg), b"w").unwrap();
        repo.put_sealed(&keys::system(7), b"{}").unwrap();
        repo.put_sealed("systems/junk", b"{}").unwrap();
        assert_eq!(
            files(&repo, 7).unwrap(),
            vec![WalObject {
                key: keys::wal_file(7, 1, seg),
                name: seg.into(),
                timeline_dir: "00000001".into(),
            }]
        );
        assert_eq!(summaries(&repo, 7).unwrap()[0].name, seg);
        assert!(has_file(&repo, 8, 1, seg).unwrap());
        assert!(!has_file(&repo, 8, 2, seg).unwrap());
        assert_eq!(system_ids(&repo).unwrap(), vec![7]);
    }
}
