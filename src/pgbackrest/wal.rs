//! Archived WAL of a pgBackRest stanza: `archive/<stanza>/<archive id>/<first 16 hex of the
//! segment>/<segment>-<sha1 of its content><ext>`, and history files
//! `archive/<stanza>/<archive id>/<TLI>.history` (stored as they are).

use super::compress::Compress;
use super::{Error, PgbrRepo};
use crate::pg::wal::{WalFile, DEFAULT_SEG_SIZE};
use sha1::{Digest, Sha1};
use std::fs;
use std::io::{ErrorKind, Read};
use std::path::PathBuf;

/// The largest WAL file PostgreSQL writes (wal_segment_size is at most 1 GiB): a stream
/// decompressing to more is corrupt, and is not read on.
const MAX_WAL_FILE: u64 = 1 << 30;

/// One archived WAL file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalObject {
    /// Its name in pg_wal.
    pub name: String,
    /// The SHA-1 of its content, from its object's name (history files have none).
    pub sha1: Option<String>,
    /// How it is compressed.
    pub compress: Compress,
    /// Its object.
    pub path: PathBuf,
}

/// A WAL object's file name: the WAL file's name, its SHA-1 and compression; `None` for
/// other files (`.backup` files, temporary files).
pub fn parse_name(file_name: &str) -> Option<(String, Option<String>, Compress)> {
    let (compress, stem) = Compress::from_name(file_name);
    if let Some((name, sha1)) = stem.split_once('-') {
        let is_sha1 = sha1.len() == 40 && sha1.bytes().all(|b| b.is_ascii_hexdigit());
        return match WalFile::parse(name, DEFAULT_SEG_SIZE) {
            Some(WalFile::Segment { .. } | WalFile::Partial { .. }) if is_sha1 => {
                Some((name.to_string(), Some(sha1.to_string()), compress))
            }
            _ => None,
        };
    }
    match WalFile::parse(stem, DEFAULT_SEG_SIZE) {
        Some(WalFile::History { .. }) => Some((stem.to_string(), None, compress)),
        _ => None,
    }
}

/// What a stanza's archive holds for one cluster (`info`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ArchiveSummary {
    /// Its archive id (`15-1`).
    pub archive_id: String,
    /// The cluster's system identifier.
    pub system_identifier: u64,
    /// WAL files archived (segments and history files).
    pub files: usize,
    /// The first segment.
    pub first: Option<String>,
    /// The last segment.
    pub last: Option<String>,
}

impl PgbrRepo {
    /// What the archive holds, per cluster of `archive.info`.
    pub fn archive_summary(&self) -> Result<Vec<ArchiveSummary>, Error> {
        let mut out = Vec::new();
        for db in self
            .archive_info()
            .map(|a| a.history.as_slice())
            .unwrap_or(&[])
        {
            let wal = self.wal(&db.archive_id())?;
            let segments: Vec<&str> = wal
                .iter()
                .map(|w| w.name.as_str())
                .filter(|n| !n.ends_with(".history"))
                .collect();
            out.push(ArchiveSummary {
                archive_id: db.archive_id(),
                system_identifier: db.system_id,
                files: wal.len(),
                first: segments.first().map(|s| s.to_string()),
                last: segments.last().map(|s| s.to_string()),
            });
        }
        Ok(out)
    }

    /// The WAL archived under `archive_id` (such as `15-1`), sorted by name: history files
    /// first, then segments.
    pub fn wal(&self, archive_id: &str) -> Result<Vec<WalObject>, Error> {
        let dir = self.archive_dir().join(archive_id);
        let mut out = Vec::new();
        let list = |dir: &PathBuf| -> Result<Vec<(String, PathBuf)>, Error> {
            let object = self.object(dir);
            let entries = match fs::read_dir(dir) {
                Ok(e) => e,
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
                Err(source) => return Err(Error::Io { object, source }),
            };
            let mut names = Vec::new();
            for entry in entries {
                let entry = entry.map_err(|source| Error::Io {
                    object: object.clone(),
                    source,
                })?;
                if let Ok(name) = entry.file_name().into_string() {
                    names.push((name, entry.path()));
                }
            }
            Ok(names)
        };
        for (name, path) in list(&dir)? {
            let is_segment_dir = name.len() == 16 && name.bytes().all(|b| b.is_ascii_hexdigit());
            if is_segment_dir {
                for (file, path) in list(&path)? {
                    if let Some((name, sha1, compress)) = parse_name(&file) {
                        out.push(WalObject {
                            name,
                            sha1,
                            compress,
                            path,
                        });
                    }
                }
            } else if let Some((name, sha1, compress)) = parse_name(&name) {
                out.push(WalObject {
                    name,
                    sha1,
                    compress,
                    path,
                });
            }
        }
        // History files sort before segments ("00000002.history" < "000000020000...").
        out.sort_by(|a, b| {
            (!a.name.ends_with(".history"), &a.name).cmp(&(!b.name.ends_with(".history"), &b.name))
        });
        Ok(out)
    }

    /// The content of a WAL object (at most [`MAX_WAL_FILE`]), checked against the SHA-1 in
    /// its name.
    pub fn read_wal(&self, wal: &WalObject) -> Result<Vec<u8>, Error> {
        let object = self.object(&wal.path);
        let f = fs::File::open(&wal.path).map_err(|source| Error::Io {
            object: object.clone(),
            source,
        })?;
        let mut data = Vec::new();
        let pass = self.archive_info().and_then(|a| a.cipher_pass.as_deref());
        let stored: Box<dyn Read> = match pass {
            Some(pass) => Box::new(super::cipher::Decrypting::new(f, pass.as_bytes())),
            None => Box::new(f),
        };
        wal.compress
            .decoder(stored)
            .and_then(|d| d.take(MAX_WAL_FILE + 1).read_to_end(&mut data))
            .map_err(|e| Error::corrupt(&object, format!("cannot be decompressed: {e}")))?;
        if data.len() as u64 > MAX_WAL_FILE {
            return Err(Error::corrupt(
                object,
                "decompresses to more than 1 GiB, the largest WAL segment PostgreSQL makes",
            ));
        }
        if let Some(expected) = &wal.sha1 {
            let actual = hex::encode(Sha1::digest(&data));
            if &actual != expected {
                return Err(Error::corrupt(
                    object,
                    format!("its content has SHA-1 {actual}, not the {expected} of its name"),
                ));
            }
        }
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_object_names() {
        let sha = "0e3b97174c8da23c2a9f447730bfca6cbd6472df";
        assert_eq!(
            parse_name(&format!("000000010000000000000014-{sha}.zst")),
            Some((
                "000000010000000000000014".into(),
                Some(sha.into()),
                Compress::Zst
            ))
        );
        assert_eq!(
            parse_name(&format!("000000010000000000000014-{sha}")),
            Some((
                "000000010000000000000014".into(),
                Some(sha.into()),
                Compress::None
            ))
        );
        assert_eq!(
            parse_name("00000002.history"),
            Some(("00000002.history".into(), None, Compress::None))
        );
        assert_eq!(parse_name("000000010000000000000009.00000028.backup"), None);
        assert_eq!(parse_name("000000010000000000000014-nothex.gz"), None);
    }
}

#[cfg(test)]
mod repo_tests {
    use super::*;
    use sha1::{Digest, Sha1};

    /// A stanza `main` with the fixtures' backup.info and archive.info, and one archived
    /// segment (zstd) stored under the SHA-1 `named`; its content is `content`.
    fn stanza(content: &[u8], named: &str) -> (tempfile::TempDir, PgbrRepo) {
        let dir = tempfile::tempdir().unwrap();
        let fixtures = format!("{}/src/pgbackrest/testdata", env!("CARGO_MANIFEST_DIR"));
        let backup = dir.path().join("backup/main");
        let archive = dir.path().join("archive/main/15-1/0000000100000000");
        fs::create_dir_all(&backup).unwrap();
        fs::create_dir_all(&archive).unwrap();
        fs::copy(
            format!("{fixtures}/backup.info"),
            backup.join("backup.info"),
        )
        .unwrap();
        fs::copy(
            format!("{fixtures}/archive.info"),
            dir.path().join("archive/main/archive.info"),
        )
        .unwrap();
        let stored = zstd::encode_all(content, 1).unwrap();
        fs::write(
            archive.join(format!("000000010000000000000003-{named}.zst")),
            stored,
        )
        .unwrap();
        // Not WAL: left alone.
        fs::write(
            archive.join("000000010000000000000003.00000028.backup"),
            "x",
        )
        .unwrap();
        let repo = PgbrRepo::open(dir.path(), "main", None).unwrap();
        (dir, repo)
    }

    #[test]
    fn archived_wal_is_listed_and_checked_against_its_name() {
        let content = vec![7u8; 8192];
        let sha = hex::encode(Sha1::digest(&content));
        let (_dir, repo) = stanza(&content, &sha);
        let wal = repo.wal("15-1").unwrap();
        assert_eq!(wal.len(), 1);
        assert_eq!(wal[0].name, "000000010000000000000003");
        assert_eq!(repo.read_wal(&wal[0]).unwrap(), content);
        assert_eq!(repo.archive_summary().unwrap()[0].files, 1);

        let (_dir, repo) = stanza(&content, &"0".repeat(40));
        let wal = repo.wal("15-1").unwrap();
        match repo.read_wal(&wal[0]) {
            Err(Error::Corrupt { object, reason }) => {
                assert!(object.starts_with("archive/main/15-1/"), "{object}");
                assert!(reason.contains(&sha), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_missing_stanza_is_named() {
        let dir = tempfile::tempdir().unwrap();
        match PgbrRepo::open(dir.path(), "main", None) {
            Err(e @ Error::Missing { .. }) => {
                assert_eq!(e.exit_code(), 4);
                assert!(e.to_string().contains("backup/main/backup.info"), "{e}");
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("opened"),
        }
    }
}
