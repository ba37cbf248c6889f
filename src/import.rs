//! `import --from pgbackrest:PATH`: pgBackRest backups (and archived WAL) converted into
//! native backups of this repository.
//!
//! Each backup's files are read from the pgBackRest repository (following references to
//! earlier backups, bundles and compression), checked against the SHA-1 pgBackRest recorded,
//! and stored through the chunk store, compared with the previous backup of the cluster so
//! that unchanged chunks are stored once. A file the previous imported backup already held
//! with the same SHA-1 is taken from it unread. The WAL from each backup's start to its stop
//! is archived before its manifest, which is written last and records the pgBackRest label
//! (`imported`): a rerun skips what is already imported, and a killed import leaves nothing
//! published for the backup it was in.

use crate::archive::{self, System};
use crate::backup::{free_id, publish};
use crate::catalog::{
    wal as catalog_wal, BackupMeta, Backups, ImportSource, Snapshot, Source, SystemId, Tablespace,
};
use crate::error::{Error, Result};
use crate::lock::Lease;
use crate::pg::label::BackupLabel;
use crate::pg::wal::{segment_name, SegmentHeader, WalFile, DEFAULT_SEG_SIZE};
use crate::pgbackrest::info::InfoBackup;
use crate::pgbackrest::manifest::{File, Manifest, Storage};
use crate::pgbackrest::wal::WalObject;
use crate::pgbackrest::{self, PgbrRepo};
use crate::store::ingest::{Ingest, IngestError};
use crate::store::snapshot;
use crate::store::tree::{BlobRef, Dir, Node, NodeKind};
use crate::store::Repository;
use chrono::{TimeZone, Utc};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::path::PathBuf;

/// The options of `pgsnapfs import`.
pub struct Options {
    /// The pgBackRest repository's directory (its `repo1-path`).
    pub from: PathBuf,
    /// The stanza to import.
    pub stanza: String,
    /// The pgBackRest repository's passphrase (`repo1-cipher-pass`), if it is encrypted.
    pub passphrase: Option<zeroize::Zeroizing<Vec<u8>>>,
    /// One backup by label; `None`: all of them.
    pub backup: Option<String>,
    /// Also import all the archived WAL, not only what the backups need.
    pub wal: bool,
    /// Worker threads that compress, encrypt and store chunks.
    pub threads: usize,
    /// Told the bytes of the backups to import, once their manifests are read.
    pub total: Box<dyn Fn(u64)>,
    /// Told each number of bytes done as the import goes on.
    pub progress: Box<dyn Fn(u64)>,
}

/// What an import did (`--json` prints it).
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    /// The stanza imported.
    pub stanza: String,
    /// The backups imported now, oldest first.
    pub imported: Vec<Imported>,
    /// The backups an earlier import already stored: pgBackRest label and backup id.
    pub skipped: Vec<(String, String)>,
    /// WAL files archived now.
    pub wal_stored: u64,
    /// WAL files that were already archived.
    pub wal_present: u64,
}

/// One backup imported.
#[derive(Debug, Serialize)]
pub struct Imported {
    /// Its pgBackRest label.
    pub label: String,
    /// Its id here.
    pub id: String,
    /// `full`, `diff` or `incr`.
    pub kind: String,
    /// Regular files.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Bytes read and checked from the pgBackRest repository (the others were files the
    /// previous imported backup held with the same SHA-1).
    pub bytes_read: u64,
    /// Bytes added to this repository.
    pub stored_new: u64,
}

/// What to do with each backup of the stanza.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Import it.
    Import(String),
    /// Already imported, as the backup with this id.
    Skip(String, String),
}

/// The steps for `backups` (backup.info's, oldest first): the one asked for, or all; those
/// in `done` (label to backup id) are skipped.
pub fn plan(
    backups: &[InfoBackup],
    wanted: Option<&str>,
    done: &HashMap<String, String>,
) -> Result<Vec<Step>> {
    let chosen: Vec<&InfoBackup> = match wanted {
        None => backups.iter().collect(),
        Some(label) => vec![backups.iter().find(|b| b.label == label).ok_or_else(|| {
            Error::NotFound(format!(
                "backup {label} is not in the stanza's backup.info; its backups are: {}",
                backups
                    .iter()
                    .map(|b| b.label.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?],
    };
    Ok(chosen
        .into_iter()
        .map(|b| match done.get(&b.label) {
            Some(id) => Step::Skip(b.label.clone(), id.clone()),
            None => Step::Import(b.label.clone()),
        })
        .collect())
}

/// Imports the stanza's backups (see the module comment). Each backup is published when it
/// is complete; an error stops the import, and the backups published before it stay.
pub fn run(repo: &Repository, opts: &Options) -> Result<Summary> {
    let pgbr = PgbrRepo::open(
        &opts.from,
        &opts.stanza,
        opts.passphrase.as_deref().map(|p| &p[..]),
    )?;
    let info = pgbr.backup_info();
    let mut done = HashMap::new();
    // Every manifest must be read: one skipped could be an import, imported again.
    for snap in repo.snapshots_all_or_error()? {
        if let Some(imp) = &snap.imported {
            if imp.stanza == opts.stanza {
                done.insert(imp.label.clone(), snap.id.clone());
            }
        }
    }
    let steps = plan(&info.backups, opts.backup.as_deref(), &done)?;
    let mut summary = Summary {
        stanza: opts.stanza.clone(),
        ..Summary::default()
    };
    let mut manifests = Vec::new();
    for step in steps {
        match step {
            Step::Skip(label, id) => summary.skipped.push((label, id)),
            Step::Import(label) => manifests.push(pgbr.manifest(&label)?),
        }
    }
    (opts.total)(
        manifests
            .iter()
            .flat_map(|m| &m.files)
            .map(|f| f.size)
            .sum(),
    );
    // Before the parent is read: gc keeps the packs the import reuses and writes.
    let lease = Lease::shared(repo, "import")?;
    let mut wal = WalSource::new(&pgbr);
    for manifest in &manifests {
        let imported = import_backup(repo, &pgbr, &lease, manifest, &mut wal, opts)?;
        summary.imported.push(imported);
    }
    if opts.wal {
        let history = pgbr
            .archive_info()
            .map(|a| a.history.clone())
            .unwrap_or_default();
        for hist in history {
            for object in pgbr.wal(&hist.archive_id())? {
                wal.push(repo, &object, hist.system_id)?;
            }
        }
    }
    summary.wal_stored = wal.stored;
    summary.wal_present = wal.present;
    Ok(summary)
}

/// The major version a pgBackRest version string names ("15"; "9.6" is too old).
fn major_of(version: &str, object: &str) -> Result<u32> {
    match version.parse::<u32>() {
        Ok(m) if m >= 10 => Ok(m),
        _ => Err(Error::BadInput(format!(
            "{object}: PostgreSQL {version} is older than pgsnapfs supports (10 and later)"
        ))),
    }
}

fn import_backup(
    repo: &Repository,
    pgbr: &PgbrRepo,
    lease: &Lease,
    m: &Manifest,
    wal: &mut WalSource,
    opts: &Options,
) -> Result<Imported> {
    let object = format!("backup/{}/{}/backup.manifest", pgbr.stanza(), m.label);
    let pg_major = major_of(&m.pg_version, &object)?;
    tracing::info!(label = %m.label, kind = %m.kind, "importing pgBackRest backup");
    // The WAL first: a backup is published only with what it needs to be consistent.
    let archive_id = format!("{}-{}", m.pg_version, m.db_id);
    let seg_size = wal.backup_wal(repo, m, &archive_id, pg_major)?;

    let mut holders = HashMap::new();
    holders.insert(m.label.clone(), m.storage());
    // Block maps may name any backup of the reference list, not only a file's holder.
    let labels = m
        .files
        .iter()
        .map(|f| m.holder(f))
        .chain(m.references.iter().map(String::as_str));
    for holder in labels {
        if !holders.contains_key(holder) {
            holders.insert(holder.to_string(), pgbr.manifest(holder)?.storage());
        }
    }
    let snapshots: Vec<Snapshot> = repo.snapshots()?.into_iter().flatten().collect();
    let parent = parent_for(&snapshots, m, pgbr.stanza(), repo.config.chunk_size).cloned();
    // The pgBackRest manifest of the parent, when it was imported from this stanza: its
    // files with the same SHA-1 are taken from the parent unread.
    let parent_manifest = parent
        .as_ref()
        .and_then(|p| p.imported.as_ref())
        .filter(|imp| imp.stanza == pgbr.stanza())
        .and_then(|imp| match pgbr.manifest(&imp.label) {
            Ok(pm) => Some(pm),
            Err(e) => {
                tracing::info!("reading every file: {e}");
                None
            }
        });

    let label_file = m
        .file("pg_data/backup_label")
        .ok_or_else(|| pgbackrest::Error::corrupt(&object, "it lists no pg_data/backup_label"))?;
    let backup_label = read_small(pgbr, m, &holders, label_file)?;
    let parsed = BackupLabel::parse(&backup_label)?;

    let start_time = Utc
        .timestamp_opt(m.timestamp_start, 0)
        .single()
        .unwrap_or_else(Utc::now);
    let stop_time = Utc
        .timestamp_opt(m.timestamp_stop, 0)
        .single()
        .unwrap_or(start_time);
    let tree = DirPlan::of(m);
    let mut ingest = Ingest::new(repo, opts.threads, Box::new(|n| (opts.progress)(n)));
    let mut bytes_read = 0;
    let root = {
        let mut store = TreeStore {
            repo,
            pgbr,
            manifest: m,
            holders: &holders,
            parent_manifest: parent_manifest.as_ref(),
            ingest: &mut ingest,
            dir_mtime: m.timestamp_start,
            bytes_read: &mut bytes_read,
            progress: &opts.progress,
        };
        store.dir(&tree, parent.as_ref().map(|p| &p.root))?
    };
    let (stats, stored) = ingest.finish()?;
    let snap = Snapshot {
        format: snapshot::FORMAT,
        id: free_id(repo, start_time)?,
        meta: BackupMeta {
            system_identifier: SystemId(m.system_id),
            pg_major,
            pg_version: m.pg_version.clone(),
            timeline: parsed.start_tli,
            start_lsn: m.lsn_start,
            stop_lsn: m.lsn_stop,
            wal_segment_size: seg_size,
            backup_label,
            tablespace_map: None,
            tablespaces: m
                .tablespaces
                .iter()
                .map(|(oid, location)| Tablespace {
                    oid: *oid,
                    location: location.clone(),
                })
                .collect(),
            read: None,
            // pgBackRest took it from a running server, as `backup` does.
            source: Source::Server,
            from_archive: None,
            imported: Some(ImportSource {
                stanza: pgbr.stanza().to_string(),
                label: m.label.clone(),
                kind: m.kind.clone(),
            }),
        },
        start_time,
        stop_time,
        label: format!("pgBackRest {}", m.label),
        size_logical: stats.bytes,
        size_stored_new: stored,
        files: stats.files,
        chunk_size: repo.config.chunk_size,
        parent: parent.map(|p| p.id),
        root,
        root_mode: tree.mode,
        root_mtime: m.timestamp_start,
        requests: repo.backend().stats().map(Into::into),
    };
    let snap = publish(repo, lease, snap, start_time)?;
    tracing::info!(backup = %snap.id, label = %m.label, "pgBackRest backup imported");
    Ok(Imported {
        label: m.label.clone(),
        id: snap.id,
        kind: m.kind.clone(),
        files: stats.files,
        bytes: stats.bytes,
        bytes_read,
        stored_new: stored,
    })
}

/// The backup an imported backup is compared with, chunk by chunk at the same positions
/// (and file by file, by SHA-1, when it was imported from the same stanza): the import of
/// its prior backup in the stanza, else the backup of the cluster that started last before
/// it (the most alike), else the cluster's newest.
fn parent_for<'s>(
    snapshots: &'s [Snapshot],
    m: &Manifest,
    stanza: &str,
    chunk_size: u32,
) -> Option<&'s Snapshot> {
    let cluster = || {
        snapshots
            .iter()
            .filter(|s| s.sysid() == m.system_id && s.chunk_size == chunk_size)
    };
    let prior = m.prior.as_deref().and_then(|prior| {
        cluster().find(|s| {
            s.imported
                .as_ref()
                .is_some_and(|i| i.stanza == stanza && i.label == prior)
        })
    });
    prior
        .or_else(|| {
            cluster()
                .filter(|s| s.start_time.timestamp() <= m.timestamp_start)
                .max_by_key(|s| s.start_time)
        })
        .or_else(|| cluster().max_by_key(|s| s.start_time))
}

/// A small file's content as text, checked (backup_label).
fn read_small(
    pgbr: &PgbrRepo,
    m: &Manifest,
    holders: &HashMap<String, Storage>,
    f: &File,
) -> Result<String> {
    let mut reader = pgbr.open_file(m.holder(f), &holders[m.holder(f)], f)?;
    let mut text = String::new();
    if reader.read_to_string(&mut text).is_err() {
        return Err(match reader.failure() {
            Some(e) => e.into(),
            None => pgbackrest::Error::corrupt(f.name.clone(), "not UTF-8 text").into(),
        });
    }
    reader.verify()?;
    Ok(text)
}

/// A backup's directory tree as the manifest lists it, with tablespaces at `pg_tblspc/<oid>`.
#[derive(Debug, Default)]
struct DirPlan<'m> {
    mode: u32,
    dirs: BTreeMap<String, DirPlan<'m>>,
    files: Vec<(String, &'m File)>,
}

/// A manifest name's path in the tree: `pg_data/x` is `x`, `pg_tblspc/...` stays.
fn tree_path(name: &str) -> Option<&str> {
    if name == "pg_data" {
        return Some("");
    }
    let path = name
        .strip_prefix("pg_data/")
        .or_else(|| name.starts_with("pg_tblspc/").then_some(name))?;
    // A name that could step out of the tree (restore writes where the names say), and
    // tablespace_map: pgBackRest stores it, but with backup_label present PostgreSQL would
    // re-point pg_tblspc at the original locations, which may be production's.
    let safe = path
        .split('/')
        .all(|part| !matches!(part, "" | "." | "..") && !part.contains('\0'));
    (safe && path != "tablespace_map").then_some(path)
}

impl<'m> DirPlan<'m> {
    fn of(m: &'m Manifest) -> DirPlan<'m> {
        let mut root = DirPlan {
            mode: 0o700,
            ..DirPlan::default()
        };
        for (name, mode) in &m.paths {
            if let Some(path) = tree_path(name) {
                root.dir_at(path).mode = *mode;
            }
        }
        for f in &m.files {
            let Some(path) = tree_path(&f.name) else {
                tracing::warn!(
                    "{}: not a file of the data directory or a tablespace that a restore \
                     needs; left out",
                    f.name
                );
                continue;
            };
            let (dir, leaf) = path.rsplit_once('/').unwrap_or(("", path));
            root.dir_at(dir).files.push((leaf.to_string(), f));
        }
        root
    }

    /// The directory at `path` ("" is this one), made (mode 0700) if missing.
    fn dir_at(&mut self, path: &str) -> &mut DirPlan<'m> {
        let mut dir = self;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            dir = dir.dirs.entry(part.to_string()).or_insert_with(|| DirPlan {
                mode: 0o700,
                ..DirPlan::default()
            });
        }
        dir
    }
}

/// Stores a backup's tree, directory by directory, against the parent's.
struct TreeStore<'a, 'r> {
    repo: &'a Repository,
    pgbr: &'a PgbrRepo,
    manifest: &'a Manifest,
    holders: &'a HashMap<String, Storage>,
    parent_manifest: Option<&'a Manifest>,
    ingest: &'a mut Ingest<'r>,
    dir_mtime: i64,
    bytes_read: &'a mut u64,
    progress: &'a dyn Fn(u64),
}

impl TreeStore<'_, '_> {
    fn dir(&mut self, plan: &DirPlan, parent: Option<&BlobRef>) -> Result<BlobRef> {
        let parent_dir: Option<Dir> = match parent {
            Some(r) => Some(self.repo.load_dir(r)?),
            None => None,
        };
        let prev = |name: &str| {
            parent_dir
                .as_ref()
                .and_then(|d| d.get(name))
                .map(|n| &n.kind)
        };
        let mut entries = Vec::new();
        for (name, sub) in &plan.dirs {
            let prev_tree = match prev(name) {
                Some(NodeKind::Dir { tree }) => Some(*tree),
                _ => None,
            };
            let tree = self.dir(sub, prev_tree.as_ref())?;
            entries.push(Node {
                name: name.clone(),
                mode: sub.mode,
                mtime: self.dir_mtime,
                kind: NodeKind::Dir { tree },
            });
        }
        for (name, f) in &plan.files {
            let prev_file = match prev(name) {
                Some(NodeKind::File { size, lists }) => Some((*size, lists.as_slice())),
                _ => None,
            };
            entries.push(self.file(name, f, prev_file)?);
        }
        Ok(self.ingest.write_dir(entries, parent)?)
    }

    fn file(&mut self, name: &str, f: &File, prev: Option<(u64, &[BlobRef])>) -> Result<Node> {
        // The parent holds this very content: pgBackRest recorded the same SHA-1 for it.
        let same_as_parent = self
            .parent_manifest
            .and_then(|pm| pm.file(&f.name))
            .is_some_and(|pf| {
                pf.checksum.is_some() && pf.checksum == f.checksum && pf.size == f.size
            });
        if let (true, Some((size, lists))) = (same_as_parent, prev) {
            if size == f.size {
                self.ingest.stats.files += 1;
                self.ingest.stats.bytes += size;
                self.ingest.stats.bytes_skipped += size;
                (self.progress)(size);
                return Ok(Node {
                    name: name.to_string(),
                    mode: f.mode,
                    mtime: f.timestamp,
                    kind: NodeKind::File {
                        size,
                        lists: lists.to_vec(),
                    },
                });
            }
        }
        let holder = self.manifest.holder(f);
        let mut reader = match f.block_incremental {
            Some(incr) => self
                .pgbr
                .open_block_file(self.manifest, self.holders, f, incr)?,
            None => self.pgbr.open_file(holder, &self.holders[holder], f)?,
        };
        let parent_lists = prev.map(|(_, l)| l).unwrap_or(&[]);
        let node = self.ingest.file_from_reader(
            (name, f.mode, f.timestamp),
            &mut reader,
            &f.name,
            parent_lists,
        );
        let node = match node {
            Ok(node) => node,
            // A stream that cannot be decompressed is damage in pgBackRest's repository.
            Err(e @ IngestError::Read { .. }) => {
                return Err(match reader.failure() {
                    Some(corrupt) => corrupt.into(),
                    None => e.into(),
                })
            }
            Err(e) => return Err(e.into()),
        };
        reader.verify()?;
        *self.bytes_read += f.size;
        Ok(node)
    }
}

/// The archived WAL of the pgBackRest stanza, pushed into the repository once each.
struct WalSource<'p> {
    pgbr: &'p PgbrRepo,
    /// The objects of each archive id, by WAL file name.
    listed: HashMap<String, HashMap<String, WalObject>>,
    done: HashSet<String>,
    stored: u64,
    present: u64,
}

impl<'p> WalSource<'p> {
    fn new(pgbr: &'p PgbrRepo) -> WalSource<'p> {
        WalSource {
            pgbr,
            listed: HashMap::new(),
            done: HashSet::new(),
            stored: 0,
            present: 0,
        }
    }

    /// Archives the segments from `m`'s start to its stop; returns the segment size.
    fn backup_wal(
        &mut self,
        repo: &Repository,
        m: &Manifest,
        archive_id: &str,
        pg_major: u32,
    ) -> Result<u64> {
        if !self.listed.contains_key(archive_id) {
            let objects = self.pgbr.wal(archive_id)?;
            self.listed.insert(
                archive_id.to_string(),
                objects.into_iter().map(|o| (o.name.clone(), o)).collect(),
            );
        }
        let missing = |name: &str| pgbackrest::Error::Missing {
            object: format!(
                "archive/{}/{archive_id}/{}/{name}-<sha1>",
                self.pgbr.stanza(),
                name.get(..16).unwrap_or(name)
            ),
            why: format!(", a WAL segment backup {} needs to be consistent", m.label),
        };
        let first = self.listed[archive_id]
            .get(&m.archive_start)
            .ok_or_else(|| missing(&m.archive_start))?
            .clone();
        let data = self.pgbr.read_wal(&first)?;
        let header = SegmentHeader::parse(&data)?;
        let seg_size = u64::from(header.seg_size);
        archive::register_system(
            repo,
            &System {
                system_identifier: SystemId(m.system_id),
                pg_major,
                wal_segment_size: seg_size,
                registered: Utc::now(),
            },
        )?;
        let (Some(WalFile::Segment { tli, segno: from }), Some(WalFile::Segment { segno: to, .. })) = (
            WalFile::parse(&m.archive_start, seg_size),
            WalFile::parse(&m.archive_stop, seg_size),
        ) else {
            return Err(pgbackrest::Error::corrupt(
                format!("backup/{}/{}/backup.manifest", self.pgbr.stanza(), m.label),
                format!(
                    "{}..{} are not WAL segment names",
                    m.archive_start, m.archive_stop
                ),
            )
            .into());
        };
        for segno in from..=to {
            let name = segment_name(tli, segno, seg_size);
            let object = self.listed[archive_id]
                .get(&name)
                .ok_or_else(|| missing(&name))?
                .clone();
            self.push(repo, &object, m.system_id)?;
        }
        Ok(seg_size)
    }

    /// Archives one WAL object of cluster `sysid`, unless it already is.
    fn push(&mut self, repo: &Repository, object: &WalObject, sysid: u64) -> Result<()> {
        if !self.done.insert(object.name.clone()) {
            return Ok(());
        }
        let Some(file) = WalFile::parse(&object.name, DEFAULT_SEG_SIZE) else {
            return Ok(());
        };
        if catalog_wal::has_file(repo, sysid, file.tli(), &object.name)? {
            self.present += 1;
            return Ok(());
        }
        let data = self.pgbr.read_wal(object)?;
        let pushed = archive::push_data(repo, &object.name, file, &data, None, Some(sysid))?;
        match pushed.outcome {
            archive::PushOutcome::Stored => self.stored += 1,
            archive::PushOutcome::AlreadyArchived => self.present += 1,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pgbackrest::compress::Compress;

    fn backup(label: &str) -> InfoBackup {
        InfoBackup {
            label: label.into(),
            kind: "full".into(),
            db_id: 1,
            references: Vec::new(),
            timestamp_start: 0,
            timestamp_stop: 0,
            lsn_start: None,
            lsn_stop: None,
            prior: None,
            size: 0,
            repo_size_delta: 0,
        }
    }

    #[test]
    fn a_rerun_skips_what_is_imported() {
        let backups = [backup("F1"), backup("F1_D1"), backup("F1_I2")];
        let done = HashMap::from([("F1".to_string(), "20260101T000000Z".to_string())]);
        assert_eq!(
            plan(&backups, None, &done).unwrap(),
            [
                Step::Skip("F1".into(), "20260101T000000Z".into()),
                Step::Import("F1_D1".into()),
                Step::Import("F1_I2".into()),
            ]
        );
        assert_eq!(
            plan(&backups, Some("F1_I2"), &done).unwrap(),
            [Step::Import("F1_I2".into())]
        );
        let e = plan(&backups, Some("F9"), &done).unwrap_err();
        assert_eq!(e.exit_code(), 4, "{e}");
    }

    fn snap(id: &str, start: i64, imported: Option<(&str, &str)>) -> Snapshot {
        let root = BlobRef {
            id: crate::store::BlobId::of(b"root"),
            loc: crate::store::tree::Loc {
                pack: crate::store::PackId::of(b"pack"),
                offset: 8,
                stored_len: 10,
            },
            len: 10,
        };
        let mut s = crate::catalog::sample(id, root);
        s.start_time = Utc.timestamp_opt(start, 0).unwrap();
        s.imported = imported.map(|(stanza, label)| ImportSource {
            stanza: stanza.into(),
            label: label.into(),
            kind: "full".into(),
        });
        s
    }

    fn manifest(label: &str, prior: Option<&str>, start: i64) -> Manifest {
        Manifest {
            label: label.into(),
            kind: "incr".into(),
            prior: prior.map(Into::into),
            references: Vec::new(),
            lsn_start: crate::pg::lsn::Lsn(0),
            lsn_stop: crate::pg::lsn::Lsn(0),
            archive_start: String::new(),
            archive_stop: String::new(),
            timestamp_start: start,
            timestamp_stop: start,
            system_id: 7,
            pg_version: "15".into(),
            db_id: 1,
            compress: Compress::None,
            cipher_pass: None,
            bundle_raw: false,
            tablespaces: Vec::new(),
            files: Vec::new(),
            paths: Vec::new(),
        }
    }

    /// The prior's import first; else the backup that started last before this one.
    #[test]
    fn the_parent_is_the_prior_or_the_nearest_earlier_backup() {
        let snaps = [
            snap("a", 100, Some(("main", "F1"))),
            snap("b", 200, Some(("other", "F9"))),
            snap("c", 300, None),
        ];
        let pick =
            |m: &Manifest, stanza: &str| parent_for(&snaps, m, stanza, 65536).map(|s| s.id.clone());
        assert_eq!(
            pick(&manifest("F1_I", Some("F1"), 250), "main").as_deref(),
            Some("a")
        );
        // The same label in another stanza is another backup.
        assert_eq!(
            pick(&manifest("F1_I", Some("F1"), 250), "x").as_deref(),
            Some("b")
        );
        assert_eq!(
            pick(&manifest("F2", None, 50), "main").as_deref(),
            Some("c")
        );
        assert!(parent_for(&snaps, &manifest("F2", None, 250), "main", 4096).is_none());
    }

    #[test]
    fn manifest_names_map_to_the_tree() {
        assert_eq!(tree_path("pg_data"), Some(""));
        assert_eq!(tree_path("pg_data/base/1/112"), Some("base/1/112"));
        assert_eq!(
            tree_path("pg_tblspc/16385/PG_15_202209061/5/16386"),
            Some("pg_tblspc/16385/PG_15_202209061/5/16386")
        );
        assert_eq!(tree_path("other/x"), None);
        assert_eq!(tree_path("pg_data/tablespace_map"), None);
        assert_eq!(tree_path("pg_data/../x"), None);
        assert_eq!(tree_path("pg_data/base//1"), None);
        assert_eq!(tree_path("pg_tblspc/16385/../../x"), None);
        assert_eq!(tree_path("pg_data/base/."), None);
    }
}
