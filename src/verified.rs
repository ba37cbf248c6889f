//! The record of what `verify` has read, so the next verify of the same cluster reads only
//! relations whose stored chunks changed since.
//!
//! A relation is known by its file path in the data directory (`base/5/16384`) and by a digest
//! of the ids of the chunk lists of all its files (segments and forks). Chunk lists are content
//! addressed over the chunk ids, so equal digests mean the very chunks read before: reading them
//! again could only find what the earlier verify found. A rewritten relation (VACUUM FULL,
//! TRUNCATE) gets a new file path and is read again.
//!
//! The plan (`decide`, `next_record`) is pure; `load_latest`, `save` and `tree_digests` do the
//! I/O.

use crate::catalog::{keys, SystemId};
use crate::pg::layout::{self, Fork};
use crate::store::tree::{BlobRef, NodeKind};
use crate::store::{BlobId, Repository, StoreError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};

/// The record's format; a reader skips records of a format it does not know.
pub const FORMAT: u32 = 1;

/// One verify run that passed: the relations it knows to be good, and where each was read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// [`FORMAT`] when written.
    pub format: u32,
    /// The backup this run verified.
    pub backup: String,
    /// The cluster.
    pub system_identifier: SystemId,
    /// When the run ended.
    pub time: DateTime<Utc>,
    /// Whether every relation was read in this run (`verify --full`, or no earlier record).
    pub full: bool,
    /// By relation file path.
    pub relations: BTreeMap<String, Verified>,
}

/// What a run knows of one relation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verified {
    /// Hex SHA-256 over the relation's files' names and chunk-list ids.
    pub digest: String,
    /// The backup in which these chunks were last read.
    pub verified_in: String,
}

/// What to do with one relation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Read it in full (and check its indexes).
    Read,
    /// Its chunks were read and found good when verifying this backup.
    Skip {
        /// The backup in which its chunks were read.
        verified_in: String,
    },
}

/// Read a relation unless `previous` verified the very chunks it has in this backup.
/// `digests` are this backup's (see `tree_digests`); a relation absent from them (created by
/// WAL replay after the backup started) is always read.
pub fn decide(previous: Option<&Record>, digests: &Digests, path: &str) -> Decision {
    let (Some(previous), Some(now)) = (previous, digests.get(path)) else {
        return Decision::Read;
    };
    match previous.relations.get(path) {
        Some(v) if v.digest == *now => Decision::Skip {
            verified_in: v.verified_in.clone(),
        },
        _ => Decision::Read,
    }
}

/// The record after a run that passed: what it read is verified in `backup`, what it skipped
/// keeps the backup it was verified in. Relations without a digest are not recorded.
pub fn next_record(
    backup: &str,
    system_identifier: SystemId,
    time: DateTime<Utc>,
    full: bool,
    digests: &Digests,
    outcomes: &[(String, Decision)],
) -> Record {
    let relations = outcomes
        .iter()
        .filter_map(|(path, decision)| {
            let digest = digests.get(path)?.clone();
            let verified_in = match decision {
                Decision::Read => backup.to_string(),
                Decision::Skip { verified_in } => verified_in.clone(),
            };
            Some((
                path.clone(),
                Verified {
                    digest,
                    verified_in,
                },
            ))
        })
        .collect();
    Record {
        format: FORMAT,
        backup: backup.to_string(),
        system_identifier,
        time,
        full,
        relations,
    }
}

/// Relation file path → digest of its files in one backup.
pub type Digests = BTreeMap<String, String>;

/// The relation a data-directory file belongs to: `base/5/16384.2` and `base/5/16384_vm` are
/// both `base/5/16384`. None for files that are not relation files.
pub fn relation_of(path: &str) -> Option<&str> {
    layout::relation_path(path)?;
    let (dir, name) = path.rsplit_once('/')?;
    let digits = name.bytes().take_while(u8::is_ascii_digit).count();
    Some(&path[..dir.len() + 1 + digits])
}

/// Digests of the relations among `files` (path, chunk lists), in any order.
pub fn digests<'a>(files: impl IntoIterator<Item = (&'a str, &'a [BlobRef])>) -> Digests {
    let mut by_relation: BTreeMap<&str, Vec<(&str, &[BlobRef])>> = BTreeMap::new();
    for (path, lists) in files {
        if let Some(rel) = relation_of(path) {
            by_relation.entry(rel).or_default().push((path, lists));
        }
    }
    by_relation
        .into_iter()
        .map(|(rel, mut files)| {
            files.sort_by_key(|(p, _)| *p);
            let mut text = Vec::new();
            for (path, lists) in files {
                text.extend_from_slice(path.as_bytes());
                text.push(0);
                for l in lists {
                    text.extend_from_slice(&l.id.0);
                }
            }
            (rel.to_string(), BlobId::of(&text).to_hex())
        })
        .collect()
}

/// Relation file path → size of its main fork (all segments), in bytes.
pub type Sizes = BTreeMap<String, u64>;

/// The main-fork sizes of the relations among `files` (path, size), in any order.
pub fn main_fork_sizes<'a>(files: impl IntoIterator<Item = (&'a str, u64)>) -> Sizes {
    let mut sizes = Sizes::new();
    for (path, size) in files {
        if let (
            Some(rel),
            Some(layout::RelationPath {
                fork: Fork::Main, ..
            }),
        ) = (relation_of(path), layout::relation_path(path))
        {
            *sizes.entry(rel.to_string()).or_default() += size;
        }
    }
    sizes
}

/// The relation digests and main-fork sizes of a backup, from its directory tree: chunk
/// lists are not read, and nothing is asked of the mounted files.
pub fn tree_digests(repo: &Repository, root: &BlobRef) -> Result<(Digests, Sizes), StoreError> {
    let mut files: Vec<(String, u64, Vec<BlobRef>)> = Vec::new();
    let mut stack = vec![(String::new(), *root)];
    while let Some((prefix, dir)) = stack.pop() {
        for node in repo.load_dir(&dir)?.entries {
            let path = format!("{prefix}{}", node.name);
            match node.kind {
                NodeKind::Dir { tree } => stack.push((format!("{path}/"), tree)),
                NodeKind::File { size, lists } => files.push((path, size, lists)),
                NodeKind::Symlink { .. } => {}
            }
        }
    }
    Ok((
        digests(files.iter().map(|(p, _, l)| (p.as_str(), l.as_slice()))),
        main_fork_sizes(files.iter().map(|(p, s, _)| (p.as_str(), *s))),
    ))
}

/// The record of the newest verified backup of this cluster, if any. A record whose backup
/// is gone (left by an expire killed between the backup's manifest and its record) is
/// ignored. A record that cannot be read is reported as an error so the caller can fall
/// back to reading everything.
pub fn load_latest(repo: &Repository, sysid: u64) -> Result<Option<Record>, StoreError> {
    let prefix = keys::verification(sysid, "");
    for key in repo.backend().list(&prefix)?.into_iter().rev() {
        if !repo.snapshot_exists(&key[prefix.len()..])? {
            continue;
        }
        let record: Record = serde_json::from_slice(&repo.get_sealed(&key)?)
            .map_err(|e| StoreError::corrupt(key.clone(), e.to_string()))?;
        return Ok((record.format == FORMAT).then_some(record));
    }
    Ok(None)
}

/// The records, among the keys of a listing of [`keys::VERIFIED`], whose backup is not one
/// of `backups`: expire deletes them after the backups' manifests.
pub fn orphaned(listing: Vec<String>, backups: &HashSet<String>) -> Vec<String> {
    listing
        .into_iter()
        .filter(|key| {
            let backup = key.rsplit('/').next().unwrap_or_default();
            !backups.contains(backup)
        })
        .collect()
}

/// Writes (or replaces) the record of `record.backup`, atomically, then deletes the cluster's
/// records of older backups: the new one carries over what they knew of its relations.
pub fn save(repo: &Repository, sysid: u64, record: &Record) -> Result<(), StoreError> {
    let payload = serde_json::to_vec(record).expect("a record serializes");
    let key = keys::verification(sysid, &record.backup);
    repo.replace_sealed(&key, &payload)?;
    for older in repo.backend().list(&keys::verification(sysid, ""))? {
        if older < key {
            repo.backend().delete(&older)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tree::Loc;
    use crate::store::PackId;

    fn list(tag: &str) -> BlobRef {
        BlobRef {
            id: BlobId::of(tag.as_bytes()),
            loc: Loc {
                pack: PackId::default(),
                offset: 0,
                stored_len: 0,
            },
            len: 0,
        }
    }

    #[test]
    fn relation_files_group_segments_and_forks() {
        assert_eq!(relation_of("base/5/16384"), Some("base/5/16384"));
        assert_eq!(relation_of("base/5/16384.12"), Some("base/5/16384"));
        assert_eq!(relation_of("base/5/16384_vm"), Some("base/5/16384"));
        assert_eq!(relation_of("base/5/16384_fsm.1"), Some("base/5/16384"));
        assert_eq!(relation_of("global/1262"), Some("global/1262"));
        assert_eq!(
            relation_of("pg_tblspc/16385/PG_15_202209061/5/16384.1"),
            Some("pg_tblspc/16385/PG_15_202209061/5/16384")
        );
        for other in [
            "base/5/PG_VERSION",
            "base/5/pg_filenode.map",
            "global/pg_control",
            "base/5/16384.",
            "base/5/16384_xx",
            "pg_xact/0000",
            "PG_VERSION",
        ] {
            assert_eq!(relation_of(other), None, "{other}");
        }
    }

    #[test]
    fn a_digest_changes_with_any_file_of_the_relation() {
        let (a, b, c) = ([list("a")], [list("b")], [list("c")]);
        let base = digests([
            ("base/5/1", &a[..]),
            ("base/5/1_vm", &b[..]),
            ("base/5/2", &c[..]),
            ("base/5/PG_VERSION", &c[..]),
        ]);
        assert_eq!(base.len(), 2);
        // Order of the listing does not matter.
        let shuffled = digests([
            ("base/5/2", &c[..]),
            ("base/5/1_vm", &b[..]),
            ("base/5/1", &a[..]),
        ]);
        assert_eq!(base, shuffled);
        let vm_changed = digests([
            ("base/5/1", &a[..]),
            ("base/5/1_vm", &c[..]),
            ("base/5/2", &c[..]),
        ]);
        assert_ne!(base["base/5/1"], vm_changed["base/5/1"]);
        assert_eq!(base["base/5/2"], vm_changed["base/5/2"]);
        let grown = digests([
            ("base/5/1", &a[..]),
            ("base/5/1.1", &a[..]),
            ("base/5/1_vm", &b[..]),
        ]);
        assert_ne!(base["base/5/1"], grown["base/5/1"]);
    }

    #[test]
    fn records_of_gone_backups_are_orphans() {
        let listing = ["verified/7/B1", "verified/7/B3", "verified/8/B2"].map(String::from);
        let backups: HashSet<String> = ["B2", "B3", "B4"].map(String::from).into();
        assert_eq!(orphaned(listing.to_vec(), &backups), ["verified/7/B1"]);
        assert!(orphaned(Vec::new(), &backups).is_empty());
    }

    #[test]
    fn sizes_add_up_the_main_fork_segments() {
        let sizes = main_fork_sizes([
            ("base/5/1", 1 << 30),
            ("base/5/1.1", 5),
            ("base/5/1_fsm", 7),
            ("base/5/1_vm.1", 7),
            ("base/5/2_init", 7),
            ("base/5/PG_VERSION", 3),
        ]);
        assert_eq!(
            sizes.into_iter().collect::<Vec<_>>(),
            [("base/5/1".to_string(), (1 << 30) + 5)]
        );
    }

    #[test]
    fn read_what_changed_skip_what_was_verified_and_carry_it_over() {
        let now: Digests = [("base/5/1", "d1"), ("base/5/2", "d2"), ("base/5/3", "d3")]
            .map(|(p, d)| (p.to_string(), d.to_string()))
            .into();
        let t = DateTime::<Utc>::from_timestamp(0, 0).unwrap();
        // No record: everything is read, and the record says all were read in B1.
        let outcomes: Vec<_> = ["base/5/1", "base/5/2", "base/5/3", "base/5/9"]
            .iter()
            .map(|p| (p.to_string(), decide(None, &now, p)))
            .collect();
        assert!(outcomes.iter().all(|(_, d)| *d == Decision::Read));
        let first = next_record("B1", SystemId(7), t, true, &now, &outcomes);
        assert_eq!(first.relations.len(), 3, "base/5/9 has no digest");
        assert!(first.relations.values().all(|v| v.verified_in == "B1"));

        // B2: relation 2 changed, 3 was rewritten to a new file 4; 9 is still not stored.
        let later: Digests = [("base/5/1", "d1"), ("base/5/2", "d2'"), ("base/5/4", "d3")]
            .map(|(p, d)| (p.to_string(), d.to_string()))
            .into();
        let decided: Vec<_> = ["base/5/1", "base/5/2", "base/5/4", "base/5/9"]
            .iter()
            .map(|p| (p.to_string(), decide(Some(&first), &later, p)))
            .collect();
        let skip_b1 = Decision::Skip {
            verified_in: "B1".into(),
        };
        assert_eq!(
            decided.iter().map(|(_, d)| d.clone()).collect::<Vec<_>>(),
            [skip_b1, Decision::Read, Decision::Read, Decision::Read]
        );
        let second = next_record("B2", SystemId(7), t, false, &later, &decided);
        let got: Vec<(&str, &str, &str)> = second
            .relations
            .iter()
            .map(|(p, v)| (p.as_str(), v.digest.as_str(), v.verified_in.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("base/5/1", "d1", "B1"),
                ("base/5/2", "d2'", "B2"),
                ("base/5/4", "d3", "B2")
            ]
        );
        // Round trip through JSON as stored.
        let json = serde_json::to_vec(&second).unwrap();
        assert_eq!(serde_json::from_slice::<Record>(&json).unwrap(), second);
    }
}
