//! A base backup's PostgreSQL metadata, kept in its snapshot manifest beside the store's
//! fields (docs/repository-format.md, "Snapshots").

use super::SystemId;
use crate::pg::lsn::Lsn;
use crate::store::{Repository, StoreError};
use serde::{Deserialize, Serialize};

/// A base backup: a store snapshot with its PostgreSQL metadata.
pub type Snapshot = crate::store::snapshot::Snapshot<BackupMeta>;

/// What a snapshot of a data directory means to PostgreSQL.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupMeta {
    /// The cluster backed up.
    pub system_identifier: SystemId,
    /// The server's major version, which decides the layout and the tools that fit.
    pub pg_major: u32,
    /// The server's full version string, as it reports it.
    pub pg_version: String,
    /// The timeline the backup started on.
    pub timeline: u32,
    /// Where replay must start (pg_backup_start's checkpoint).
    pub start_lsn: Lsn,
    /// Where replay must reach before the backup is consistent (pg_backup_stop).
    pub stop_lsn: Lsn,
    /// Bytes per WAL segment of the cluster.
    pub wal_segment_size: u64,
    /// The backup_label pg_backup_stop returned (also a file in the root tree).
    pub backup_label: String,
    /// The tablespace_map pg_backup_stop returned, if the cluster has tablespaces.
    pub tablespace_map: Option<String>,
    /// The tablespaces, stored in the tree at `pg_tblspc/<oid>`.
    pub tablespaces: Vec<Tablespace>,
    /// How the data directory was read (absent in manifests older than this field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<ReadRecord>,
    /// What made the backup (absent in manifests older than this field: a server).
    #[serde(default)]
    pub source: Source,
    /// For a backup made from the archive: its base and the WAL replayed on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_archive: Option<ArchiveSource>,
    /// For a backup imported from another tool's repository (pgBackRest, which took it from a
    /// server: its `source` is `server`): which backup it was there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported: Option<ImportSource>,
}

/// What made a backup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// A running server, told the backup started and stopped (`backup`).
    #[default]
    Server,
    /// Archived WAL replayed on an earlier backup (`backup --from-archive`).
    Archive,
}

impl Source {
    /// As `list` shows it.
    pub fn name(self) -> &'static str {
        match self {
            Source::Server => "server",
            Source::Archive => "archive",
        }
    }
}

/// How a backup was made from the archive: the backup replayed on, the WAL replayed, and
/// where the result stands in recovery (from its pg_control, "shut down in recovery"). A
/// restore starts replay at `redo` (the backup's `start_lsn`) and is consistent once past
/// `min_recovery_point` (its `stop_lsn`); the data directory holds no backup_label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveSource {
    /// The backup the WAL was replayed on.
    pub base: String,
    /// Where that replay started (the base's start).
    pub wal_start: Lsn,
    /// The recovery target it stopped at (inclusive), when it was an LSN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_end: Option<Lsn>,
    /// The restartpoint's checkpoint record.
    pub checkpoint: Lsn,
    /// The restartpoint's redo location.
    pub redo: Lsn,
    /// How far a restore must replay before the data is consistent.
    pub min_recovery_point: Lsn,
    /// The timeline of `min_recovery_point`.
    pub min_recovery_timeline: u32,
    /// Bytes read from the replayed data directory: the chunks replay wrote to.
    pub bytes_read: u64,
    /// Bytes taken from the base's chunk lists unread.
    pub bytes_skipped: u64,
}

/// Which backup of another tool's repository an imported backup is: a rerun of `import`
/// skips the backups it finds here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportSource {
    /// The pgBackRest stanza.
    pub stanza: String,
    /// The backup's label there (`20261204-220215F_20261204-220226I`).
    pub label: String,
    /// `full`, `diff` or `incr`.
    pub kind: String,
}

impl BackupMeta {
    /// The system identifier as a number.
    pub fn sysid(&self) -> u64 {
        self.system_identifier.get()
    }
}

/// A tablespace of the backed-up cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tablespace {
    /// Its OID: the name of its link in `pg_tblspc`.
    pub oid: u32,
    /// Where the tablespace lived on the backed-up host.
    pub location: String,
}

/// How a backup read the data directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadRecord {
    /// Whether every file was read.
    pub mode: ReadMode,
    /// Why every file was read, when WAL summaries could not be used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_read_reason: Option<String>,
    /// Bytes read from the data directory.
    pub bytes_read: u64,
    /// Bytes taken from the parent unread, because the WAL summaries show them unchanged.
    pub bytes_skipped: u64,
}

/// How much of the data directory a backup read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReadMode {
    /// Every file was read and hashed.
    Full,
    /// Relation files were read only where the server's WAL summaries (17+) show changes.
    WalSummaries,
}

/// The repository's snapshots read as base backups.
pub trait Backups {
    /// One backup by id; `NoSuchBackup` if there is none.
    fn load_snapshot(&self, id: &str) -> Result<Snapshot, StoreError>;
    /// All backups, oldest first; one that fails to load is an error in its slot.
    fn snapshots(&self) -> Result<Vec<Result<Snapshot, StoreError>>, StoreError>;
    /// All backups, oldest first, failing on the first that cannot be read.
    fn snapshots_all_or_error(&self) -> Result<Vec<Snapshot>, StoreError>;
    /// Publishes a backup; every pack it references is flushed.
    fn save_snapshot(&self, s: &Snapshot) -> Result<(), StoreError>;
}

impl Backups for Repository {
    fn load_snapshot(&self, id: &str) -> Result<Snapshot, StoreError> {
        self.load_manifest(id)
    }

    fn snapshots(&self) -> Result<Vec<Result<Snapshot, StoreError>>, StoreError> {
        self.manifests()
    }

    fn snapshots_all_or_error(&self) -> Result<Vec<Snapshot>, StoreError> {
        self.manifests_all_or_error()
    }

    fn save_snapshot(&self, s: &Snapshot) -> Result<(), StoreError> {
        self.save_manifest(s)
    }
}

/// A manifest with plausible values, for tests of code that handles manifests.
#[cfg(test)]
pub fn sample(id: &str, root: crate::store::tree::BlobRef) -> Snapshot {
    serde_json::from_value(serde_json::json!({
        "format": crate::store::snapshot::FORMAT, "id": id, "system_identifier": "7",
        "pg_major": 15, "pg_version": "15", "timeline": 1, "start_lsn": "0/2000028",
        "stop_lsn": "0/2000138", "start_time": "2026-01-01T00:00:00Z",
        "stop_time": "2026-01-01T00:00:01Z", "wal_segment_size": 16777216,
        "label": "", "backup_label": "", "tablespace_map": null, "tablespaces": [],
        "size_logical": 0, "size_stored_new": 0, "files": 1, "chunk_size": 65536,
        "parent": null, "root": root, "root_mode": 448, "root_mtime": 0, "source": "server"
    }))
    .expect("sample manifest")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::backend::memory::MemoryBackend;
    use crate::store::tree::{BlobRef, Loc};
    use crate::store::{BlobId, PackId};
    use std::sync::Arc;

    fn root() -> BlobRef {
        BlobRef {
            id: BlobId::of(b"root"),
            loc: Loc {
                pack: PackId::of(b"pack"),
                offset: 8,
                stored_len: 700,
            },
            len: 2900,
        }
    }

    /// The manifest as docs/repository-format.md shows it reads, and writes back the same.
    #[test]
    fn documented_manifest_round_trips() {
        let json = serde_json::json!({
          "format": 1, "id": "20261121T054012Z", "system_identifier": "7439421817328571234",
          "pg_major": 15, "pg_version": "15.18 (Debian 15.18-0+deb12u1)", "timeline": 1,
          "start_lsn": "0/2000028", "stop_lsn": "0/2000138",
          "start_time": "2026-11-21T05:40:12.004Z", "stop_time": "2026-11-21T05:40:14.512Z",
          "wal_segment_size": 16777216, "label": "pgsnapfs 20261121T054012Z",
          "backup_label": "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n",
          "tablespace_map": null, "tablespaces": [{"oid": 16390, "location": "/srv/ts1"}],
          "size_logical": 23512344, "size_stored_new": 3120040, "files": 968,
          "chunk_size": 65536, "parent": "20261120T054012Z", "root": root(),
          "root_mode": 448, "root_mtime": 1763703612,
          "requests": {"get": 3, "put": 2, "head": 0, "list": 1, "delete": 0,
                       "upload_part": 16, "multipart_other": 8, "other": 0, "retries": 0},
          "read": {"mode": "wal-summaries", "bytes_read": 1203904, "bytes_skipped": 22308440},
          "source": "server"
        });
        let s: Snapshot = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(s.sysid(), 7439421817328571234);
        assert_eq!(s.start_lsn, Lsn(0x2000028));
        assert_eq!(s.read.as_ref().unwrap().mode, ReadMode::WalSummaries);
        assert_eq!(serde_json::to_value(&s).unwrap(), json);
    }

    #[test]
    fn a_bad_system_identifier_is_corruption_of_the_manifest() {
        let repo = Repository::init(Arc::new(MemoryBackend::default()), 65536, 3).unwrap();
        let mut json = serde_json::to_value(sample("b1", root())).unwrap();
        json["system_identifier"] = "seven".into();
        repo.put_sealed("snapshots/b1", &serde_json::to_vec(&json).unwrap())
            .unwrap();
        match repo.load_snapshot("b1") {
            Err(StoreError::Corrupt { object, reason }) => {
                assert_eq!(object, "snapshots/b1");
                assert!(reason.contains("\"seven\" is not a number"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }
}
