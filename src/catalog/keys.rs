//! The repository layout: the store's keys (re-exported) and the keys of clusters and their
//! WAL, which only this layer knows. Commands take every key from here.

pub use crate::store::keys::*;

/// Archived WAL files, per cluster and timeline.
pub const WAL: &str = "wal/";
/// The registry of clusters.
pub const SYSTEMS: &str = "systems/";
/// Summaries of archived WAL segments, per cluster and timeline.
pub const WAL_SUMMARIES: &str = "walsum/";
/// Markers of WAL files dropped by `wal-push --async --queue-max`, per cluster and timeline.
pub const WAL_DROPPED: &str = "waldrop/";
/// The WAL index: one object per cluster and timeline (see `walindex`).
pub const WAL_INDEX: &str = "walidx/";
/// Records of passing verify runs, per cluster.
pub const VERIFIED: &str = "verified/";
/// The segments `wal-receive` is streaming, stored partially, per cluster and timeline.
pub const WAL_STREAM: &str = "walstream/";
/// The status objects `metrics` reads: the last run of backup, verify, check and gc.
pub const STATUS: &str = "status/";

/// The registry record of one cluster.
pub fn system(sysid: u64) -> String {
    format!("{SYSTEMS}{sysid}")
}

/// The record of a verify run of one backup of a cluster; with `backup` empty, the prefix
/// holding all of that cluster's records.
pub fn verification(sysid: u64, backup: &str) -> String {
    format!("{VERIFIED}{sysid}/{backup}")
}

/// The status object of a command's last run on one cluster (`status`).
pub fn status_of_system(sysid: u64, command: &str) -> String {
    format!("{STATUS}system/{sysid}/{command}")
}

/// The status object of a command's last run on the whole repository (`status`).
pub fn status_of_repository(command: &str) -> String {
    format!("{STATUS}repository/{command}")
}

/// The prefix holding all WAL of one cluster.
pub fn wal_system(sysid: u64) -> String {
    format!("{WAL}{sysid}/")
}

/// The prefix holding the WAL summaries of one cluster.
pub fn wal_summaries(sysid: u64) -> String {
    format!("{WAL_SUMMARIES}{sysid}/")
}

/// The prefix holding the WAL index objects of one cluster.
pub fn wal_indexes(sysid: u64) -> String {
    format!("{WAL_INDEX}{sysid}/")
}

/// The WAL index object of one timeline of a cluster.
pub fn wal_index(sysid: u64, tli: u32) -> String {
    format!("{WAL_INDEX}{sysid}/{tli:08X}")
}

/// The prefix holding the archived WAL of one timeline of a cluster.
pub fn wal_timeline(sysid: u64, tli: u32) -> String {
    format!("{WAL}{sysid}/{tli:08X}/")
}

/// An archived WAL file (segment, partial, history or backup file) of one cluster.
pub fn wal_file(sysid: u64, tli: u32, name: &str) -> String {
    format!("{WAL}{sysid}/{tli:08X}/{name}")
}

/// The prefix holding the partially streamed segments of one cluster.
pub fn wal_stream_system(sysid: u64) -> String {
    format!("{WAL_STREAM}{sysid}/")
}

/// The prefix holding the stored pieces of a segment `wal-receive` is streaming.
pub fn wal_stream(sysid: u64, tli: u32, segment: &str) -> String {
    format!("{WAL_STREAM}{sysid}/{tli:08X}/{segment}/")
}

/// The summary of an archived WAL segment (commit times, restore points, xids).
pub fn wal_summary(sysid: u64, tli: u32, segment: &str) -> String {
    format!("{WAL_SUMMARIES}{sysid}/{tli:08X}/{segment}")
}

/// The prefix holding the drop markers of one cluster.
pub fn wal_dropped_system(sysid: u64) -> String {
    format!("{WAL_DROPPED}{sysid}/")
}

/// The marker of a WAL file that asynchronous archiving dropped (`--queue-max`): a known gap.
pub fn wal_dropped(sysid: u64, tli: u32, name: &str) -> String {
    format!("{WAL_DROPPED}{sysid}/{tli:08X}/{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_keys() {
        assert_eq!(
            wal_file(7, 2, "000000020000000000000003"),
            "wal/7/00000002/000000020000000000000003"
        );
        assert_eq!(system(7), "systems/7");
        assert_eq!(wal_index(7, 2), "walidx/7/00000002");
        assert_eq!(wal_indexes(7), "walidx/7/");
        assert_eq!(wal_timeline(7, 2), "wal/7/00000002/");
        assert_eq!(wal_system(7), "wal/7/");
        assert_eq!(wal_summaries(7), "walsum/7/");
        assert_eq!(
            wal_summary(7, 2, "000000020000000000000003"),
            "walsum/7/00000002/000000020000000000000003"
        );
        assert_eq!(snapshot("20261121T054012Z"), "snapshots/20261121T054012Z");
        assert_eq!(
            verification(7, "20261121T054012Z"),
            "verified/7/20261121T054012Z"
        );
    }
}
