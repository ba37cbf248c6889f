//! Object keys: the only place the repository layout is spelled out.

use super::Id;

pub const CONFIG: &str = "config";
pub const SNAPSHOTS: &str = "snapshots/";
pub const PACKS: &str = "packs/";
pub const WAL: &str = "wal/";
pub const SYSTEMS: &str = "systems/";
pub const WAL_SUMMARIES: &str = "walsum/";
pub const LOCKS: &str = "locks/";
pub const KEEP: &str = "keep/";
pub const TRASH: &str = "trash/";
pub const KEY_SLOTS: &str = "keys/";
pub const VERIFIED: &str = "verified/";

pub fn pack(id: &Id) -> String {
    let hex = id.to_hex();
    format!("{PACKS}{}/{hex}", &hex[..2])
}

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

pub fn system(sysid: u64) -> String {
    format!("{SYSTEMS}{sysid}")
}

/// The record of a verify run of one backup of a cluster; with `backup` empty, the prefix
/// holding all of that cluster's records.
pub fn verification(sysid: u64, backup: &str) -> String {
    format!("{VERIFIED}{sysid}/{backup}")
}

/// The prefix holding all WAL of one cluster.
pub fn wal_system(sysid: u64) -> String {
    format!("{WAL}{sysid}/")
}

/// The prefix holding the WAL summaries of one cluster.
pub fn wal_summaries(sysid: u64) -> String {
    format!("{WAL_SUMMARIES}{sysid}/")
}

/// An archived WAL file (segment, partial, history or backup file) of one cluster.
pub fn wal_file(sysid: u64, tli: u32, name: &str) -> String {
    format!("{WAL}{sysid}/{tli:08X}/{name}")
}

/// The summary of an archived WAL segment (commit times, restore points, xids).
pub fn wal_summary(sysid: u64, tli: u32, segment: &str) -> String {
    format!("{WAL_SUMMARIES}{sysid}/{tli:08X}/{segment}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_keys() {
        let id = Id::of(b"x");
        assert_eq!(
            pack(&id),
            format!("packs/{}/{}", &id.to_hex()[..2], id.to_hex())
        );
        assert_eq!(snapshot("20261121T054012Z"), "snapshots/20261121T054012Z");
        assert_eq!(
            wal_file(7, 2, "000000020000000000000003"),
            "wal/7/00000002/000000020000000000000003"
        );
        assert_eq!(system(7), "systems/7");
        assert_eq!(
            wal_summary(7, 2, "000000020000000000000003"),
            "walsum/7/00000002/000000020000000000000003"
        );
        assert_eq!(lock("9f3a"), "locks/9f3a");
        assert_eq!(
            verification(7, "20261121T054012Z"),
            "verified/7/20261121T054012Z"
        );
        assert_eq!(key_slot("9f3a"), "keys/9f3a");
        assert_eq!(keep("20261121T054012Z"), "keep/20261121T054012Z");
        assert_eq!(
            trash("20261121T054012Z-9f3a"),
            "trash/20261121T054012Z-9f3a"
        );
    }
}
