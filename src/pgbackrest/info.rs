//! `backup.info` (the backups of a stanza, oldest first) and `archive.info` (the clusters
//! whose WAL the stanza archives, by db id).

use super::ini::{decode, Ini};
use super::Error;
use serde::Deserialize;

/// One backup as `backup.info` lists it (`[backup:current]`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InfoBackup {
    /// Its label, such as `20261204-220215F_20261204-220226I`: also its directory.
    pub label: String,
    /// `full`, `diff` or `incr`.
    pub kind: String,
    /// The db id (see [`ArchiveInfo`]) of the cluster backed up.
    pub db_id: u32,
    /// The backups it takes unchanged files from.
    pub references: Vec<String>,
    /// When it started, in seconds since the epoch.
    pub timestamp_start: i64,
    /// When it stopped.
    pub timestamp_stop: i64,
    /// Where replay starts and where the backup is consistent, as pgBackRest writes LSNs.
    pub lsn_start: Option<String>,
    /// See `lsn_start`.
    pub lsn_stop: Option<String>,
    /// The backup a diff or incr was taken against.
    pub prior: Option<String>,
    /// The bytes of the data directory it restores.
    pub size: u64,
    /// Its bytes in the repository, its own files only.
    pub repo_size_delta: u64,
}

/// A cluster a stanza has held (`[db:history]`): pg_upgrade or a new cluster adds one.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DbHistory {
    /// The stanza's number for it.
    pub id: u32,
    /// Its system identifier.
    pub system_id: u64,
    /// Its PostgreSQL version, as pgBackRest spells it ("15", "9.6").
    pub version: String,
}

impl DbHistory {
    /// The archive id WAL of this cluster is stored under: `<version>-<id>`.
    pub fn archive_id(&self) -> String {
        format!("{}-{}", self.version, self.id)
    }
}

/// `backup.info`.
#[derive(Debug, Clone)]
pub struct BackupInfo {
    /// The backups, oldest first.
    pub backups: Vec<InfoBackup>,
    /// The clusters the stanza has held.
    pub history: Vec<DbHistory>,
    /// The passphrase of the manifests, in an encrypted repository (`[cipher] cipher-pass`).
    pub cipher_pass: Option<String>,
}

#[derive(Deserialize)]
struct CurrentJson {
    #[serde(rename = "backup-type")]
    kind: String,
    #[serde(rename = "db-id")]
    db_id: u32,
    #[serde(rename = "backup-reference", default)]
    references: Vec<String>,
    #[serde(rename = "backup-timestamp-start")]
    timestamp_start: i64,
    #[serde(rename = "backup-timestamp-stop", default)]
    timestamp_stop: i64,
    #[serde(rename = "backup-lsn-start")]
    lsn_start: Option<String>,
    #[serde(rename = "backup-lsn-stop")]
    lsn_stop: Option<String>,
    #[serde(rename = "backup-prior")]
    prior: Option<String>,
    #[serde(rename = "backup-info-size", default)]
    size: u64,
    #[serde(rename = "backup-info-repo-size-delta", default)]
    repo_size_delta: u64,
}

impl BackupInfo {
    /// Parses `backup.info` (`object` names it in errors).
    pub fn parse(ini: &Ini, object: &str) -> Result<BackupInfo, Error> {
        let mut backups = Vec::new();
        for (label, value) in ini.section("backup:current") {
            let j: CurrentJson = decode(value, &format!("backup {label}"), object)?;
            backups.push(InfoBackup {
                label: label.clone(),
                kind: j.kind,
                db_id: j.db_id,
                references: j.references,
                timestamp_start: j.timestamp_start,
                timestamp_stop: j.timestamp_stop,
                lsn_start: j.lsn_start,
                lsn_stop: j.lsn_stop,
                prior: j.prior,
                size: j.size,
                repo_size_delta: j.repo_size_delta,
            });
        }
        // Labels start with the full backup's time: sorting them sorts by start.
        backups.sort_by(|a, b| (a.timestamp_start, &a.label).cmp(&(b.timestamp_start, &b.label)));
        Ok(BackupInfo {
            backups,
            history: history(ini, object, "db-system-id")?,
            cipher_pass: ini.get("cipher", "cipher-pass", object)?,
        })
    }
}

/// `archive.info`.
#[derive(Debug, Clone)]
pub struct ArchiveInfo {
    /// The clusters whose WAL is archived.
    pub history: Vec<DbHistory>,
    /// The passphrase of the archived WAL, in an encrypted repository.
    pub cipher_pass: Option<String>,
}

impl ArchiveInfo {
    /// Parses `archive.info` (`object` names it in errors).
    pub fn parse(ini: &Ini, object: &str) -> Result<ArchiveInfo, Error> {
        // archive.info spells the system identifier "db-id" (pgBackRest's own quirk).
        Ok(ArchiveInfo {
            history: history(ini, object, "db-id")?,
            cipher_pass: ini.get("cipher", "cipher-pass", object)?,
        })
    }
}

fn history(ini: &Ini, object: &str, sysid_key: &str) -> Result<Vec<DbHistory>, Error> {
    let mut out = Vec::new();
    for (id, value) in ini.section("db:history") {
        let id: u32 = id.parse().map_err(|_| {
            Error::corrupt(object, format!("[db:history] key {id:?} is not a number"))
        })?;
        let j: serde_json::Map<String, serde_json::Value> =
            decode(value, &format!("[db:history] {id}"), object)?;
        let system_id = j.get(sysid_key).and_then(|v| v.as_u64());
        let version = j.get("db-version").and_then(|v| v.as_str());
        match (system_id, version) {
            (Some(system_id), Some(version)) => out.push(DbHistory {
                id,
                system_id,
                version: version.to_string(),
            }),
            _ => {
                return Err(Error::corrupt(
                    object,
                    format!("[db:history] {id} lacks {sysid_key} or db-version"),
                ))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!(
            "{}/src/pgbackrest/testdata/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    /// backup.info of a stanza with a full, a diff and an incr backup (pgBackRest 2.45).
    #[test]
    fn backup_info_lists_the_chain() {
        let ini = Ini::parse(&fixture("backup.info"), "backup.info").unwrap();
        let info = BackupInfo::parse(&ini, "backup.info").unwrap();
        let labels: Vec<_> = info.backups.iter().map(|b| b.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "20261204-220215F",
                "20261204-220215F_20261204-220220D",
                "20261204-220215F_20261204-220226I"
            ]
        );
        assert_eq!(info.backups[2].kind, "incr");
        assert_eq!(info.backups[2].references.len(), 2);
        assert_eq!(info.backups[2].lsn_stop.as_deref(), Some("0/14018428"));
        assert_eq!(info.backups[2].prior.as_deref(), Some(labels[1]));
        assert_eq!(info.backups[0].size, 30742166);
        assert_eq!(info.history[0].system_id, 7715572398002760392);
        assert_eq!(info.cipher_pass, None);
    }

    #[test]
    fn archive_info_names_the_archive_id() {
        let ini = Ini::parse(&fixture("archive.info"), "archive.info").unwrap();
        let info = ArchiveInfo::parse(&ini, "archive.info").unwrap();
        assert_eq!(info.history[0].archive_id(), "15-1");
        assert_eq!(info.history[0].system_id, 7715572398002760392);
    }

    /// One changed byte, anywhere, breaks the checksum.
    #[test]
    fn an_edited_info_file_is_corrupt() {
        let text =
            fixture("backup.info").replace("\"backup-type\":\"diff\"", "\"backup-type\":\"full\"");
        match Ini::parse(&text, "backup/main/backup.info") {
            Err(Error::Corrupt { object, reason }) => {
                assert_eq!(object, "backup/main/backup.info");
                assert!(reason.contains("checksum"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        let truncated = &fixture("backup.info")[..200];
        assert!(matches!(
            Ini::parse(truncated, "x"),
            Err(Error::Corrupt { .. })
        ));
    }
}
