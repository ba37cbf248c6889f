//! Object keys of the store's own objects. The keys of what only a PostgreSQL catalog
//! knows (clusters, WAL) are in `catalog::keys`; together they are the whole layout.

use super::PackId;

/// The repository's configuration (format version, chunking and encryption settings).
pub const CONFIG: &str = "config";
/// Prefix of the snapshot manifests, one object per snapshot id.
pub const SNAPSHOTS: &str = "snapshots/";
/// Prefix of the packs, fanned out by the first two hex digits of their id.
pub const PACKS: &str = "packs/";
/// Prefix of the leases of running commands.
pub const LOCKS: &str = "locks/";
/// Prefix of the keep marks, which exempt backups from expiry.
pub const KEEP: &str = "keep/";
/// Prefix of gc's trash records (packs condemned by a run, deleted in a later one).
pub const TRASH: &str = "trash/";
/// Prefix of the key slots of an encrypted repository.
pub const KEY_SLOTS: &str = "keys/";

/// The key of pack `id`: `packs/<first two hex digits>/<hex id>`.
pub fn pack(id: &PackId) -> String {
    let hex = id.to_hex();
    format!("{PACKS}{}/{hex}", &hex[..2])
}

/// The key of the manifest of snapshot `id`.
pub fn snapshot(id: &str) -> String {
    format!("{SNAPSHOTS}{id}")
}

/// A lease held by a running command.
pub fn lock(id: &str) -> String {
    format!("{LOCKS}{id}")
}

/// The mark that keeps a backup from expiring.
pub fn keep(backup: &str) -> String {
    format!("{KEEP}{backup}")
}

/// The packs one gc run condemned.
pub fn trash(run: &str) -> String {
    format!("{TRASH}{run}")
}

/// A key slot of an encrypted repository.
pub fn key_slot(id: &str) -> String {
    format!("{KEY_SLOTS}{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_keys() {
        let id = PackId::of(b"x");
        assert_eq!(
            pack(&id),
            format!("packs/{}/{}", &id.to_hex()[..2], id.to_hex())
        );
        assert_eq!(snapshot("20261121T054012Z"), "snapshots/20261121T054012Z");
        assert_eq!(lock("9f3a"), "locks/9f3a");
        assert_eq!(key_slot("9f3a"), "keys/9f3a");
        assert_eq!(keep("20261121T054012Z"), "keep/20261121T054012Z");
        assert_eq!(
            trash("20261121T054012Z-9f3a"),
            "trash/20261121T054012Z-9f3a"
        );
    }
}
