//! Snapshot manifests: one sealed JSON object per finished backup, written last.
//!
//! A manifest's existence is what makes a backup visible, so it is the final write of a
//! backup, after every pack it references is durable.

use super::backend::RequestCounts;
use super::tree::BlobRef;
use crate::pg::lsn::Lsn;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The manifest format written by this version.
pub const FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tablespace {
    pub oid: u32,
    /// Where the tablespace lived on the backed-up host.
    pub location: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    pub format: u32,
    pub id: String,
    /// As a string: JSON readers lose precision on 64-bit integers.
    pub system_identifier: String,
    pub pg_major: u32,
    pub pg_version: String,
    pub timeline: u32,
    pub start_lsn: Lsn,
    pub stop_lsn: Lsn,
    pub start_time: DateTime<Utc>,
    pub stop_time: DateTime<Utc>,
    pub wal_segment_size: u64,
    pub label: String,
    pub backup_label: String,
    pub tablespace_map: Option<String>,
    pub tablespaces: Vec<Tablespace>,
    /// Bytes of all files in the backup.
    pub size_logical: u64,
    /// Bytes this backup added to the repository (compressed, including tree blobs).
    pub size_stored_new: u64,
    pub files: u64,
    pub chunk_size: u32,
    /// The backup whose tree was compared against to reuse unchanged chunks.
    pub parent: Option<String>,
    pub root: BlobRef,
    /// Permission bits and mtime of the data directory itself.
    pub root_mode: u32,
    pub root_mtime: i64,
    /// Requests the backup sent to an S3 repository, up to (not including) this manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<RequestCounts>,
    /// How the data directory was read (absent in manifests older than this field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<ReadRecord>,
}

/// How a backup read the data directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadRecord {
    pub mode: ReadMode,
    /// Why every file was read, when WAL summaries could not be used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_read_reason: Option<String>,
    pub bytes_read: u64,
    /// Bytes taken from the parent unread, because the WAL summaries show them unchanged.
    pub bytes_skipped: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReadMode {
    /// Every file was read and hashed.
    Full,
    /// Relation files were read only where the server's WAL summaries (17+) show changes.
    WalSummaries,
}

impl Snapshot {
    pub fn sysid(&self) -> u64 {
        self.system_identifier.parse().unwrap_or(0)
    }
}

/// A backup id from its start time: sortable, readable, and safe as a file name.
pub fn id_for(time: DateTime<Utc>) -> String {
    time.format("%Y%m%dT%H%M%SZ").to_string()
}

/// A manifest with plausible values, for tests of code that handles manifests.
#[cfg(test)]
pub fn sample(id: &str, root: BlobRef) -> Snapshot {
    serde_json::from_value(serde_json::json!({
        "format": FORMAT, "id": id, "system_identifier": "7", "pg_major": 15,
        "pg_version": "15", "timeline": 1, "start_lsn": "0/2000028",
        "stop_lsn": "0/2000138", "start_time": "2026-01-01T00:00:00Z",
        "stop_time": "2026-01-01T00:00:01Z", "wal_segment_size": 16777216,
        "label": "", "backup_label": "", "tablespace_map": null, "tablespaces": [],
        "size_logical": 0, "size_stored_new": 0, "files": 1, "chunk_size": 65536,
        "parent": null, "root": root, "root_mode": 448, "root_mtime": 0
    }))
    .expect("sample manifest")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn ids_sort_by_time() {
        let a = id_for(Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap());
        let b = id_for(Utc.with_ymd_and_hms(2026, 11, 2, 3, 4, 5).unwrap());
        assert_eq!(a, "20260102T030405Z");
        assert!(a < b);
    }
}
