//! `backup`: an online, non-exclusive base backup of a running server into the repository.
//!
//! The server is told a backup is running (pg_backup_start) while the files are read straight
//! from PGDATA; torn pages are fine because replay of the WAL from the start LSN repairs them.
//! The snapshot manifest is written last, after every pack and the WAL the backup needs.

use crate::archive::{self, System};
use crate::catalog::{
    wal, BackupMeta, Backups, ReadMode, ReadRecord, Snapshot, Source, SystemId, Tablespace,
};
use crate::error::{io, Error, Result};
use crate::lock::Lease;
use crate::pg::label::BackupLabel;
use crate::pg::layout::{self, Entry};
use crate::pg::summary::{self, Changes, Summary};
use crate::pg::wal::{segment_of, WalFile};
use crate::pg::{control::ControlData, lsn::Lsn};
use crate::server::{ConnOpts, Server};
use crate::status::{Recorder, Run, Watched};
use crate::store::ingest::{Ingest, IngestError, KnownChanges, Vanished, Visit};
use crate::store::snapshot;
use crate::store::{BackendError, Repository, StoreError};
use chrono::{DateTime, Utc};
use std::cell::RefCell;
use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

/// How long a backup waits for the WAL summarizer to reach its start before reading in full.
const SUMMARIZER_WAIT: Duration = Duration::from_secs(60);

/// What to back up and how: the options of `pgsnapfs backup`.
pub struct BackupOptions {
    /// The server's data directory, read directly; it must be the one the server at `conn`
    /// reports (compared after resolving links). Optional when a standby is read instead.
    pub pgdata: Option<PathBuf>,
    /// How to reach the server, which is told the backup starts and stops.
    pub conn: ConnOpts,
    /// Read the files of this streaming standby of the server instead (`--from-standby`).
    pub standby: Option<StandbySource>,
    /// The label given to pg_backup_start and kept in the snapshot; `None` means
    /// `pgsnapfs <backup id>`.
    pub label: Option<String>,
    /// Worker threads that compress, encrypt and store chunks (at least one runs).
    pub threads: usize,
    /// Read every file even when WAL summaries could say what changed.
    pub full_read: bool,
    /// Shows progress as bytes are read (a terminal progress bar, or nothing).
    pub progress: Box<dyn Fn(u64)>,
    /// Told the bytes the backup will go through, once the data directory has been listed.
    pub total: Box<dyn Fn(u64)>,
}

/// The standby whose files a backup reads, and whether the primary's will do when it is down.
pub struct StandbySource {
    /// The standby's data directory, read directly.
    pub pgdata: PathBuf,
    /// How to reach the standby.
    pub conn: ConnOpts,
    /// `--from-standby=prefer`: when no standby answers, read the primary's files.
    pub prefer: bool,
}

/// Which server's files a backup read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadFrom {
    /// The primary's (no standby asked for).
    Primary,
    /// The standby's.
    Standby,
    /// The primary's, because the preferred standby did not answer: why.
    PrimaryInstead(String),
}

/// A finished backup, and what its output should say besides.
pub struct Backup {
    /// Whose files were read.
    pub read_from: ReadFrom,
    /// The snapshot manifest as published in the repository.
    pub snapshot: Snapshot,
    /// The server's configuration files outside its data directory, which the backup does
    /// not hold (Debian keeps them in /etc/postgresql/MAJOR/NAME).
    pub config_outside: Vec<String>,
}

impl From<IngestError> for Error {
    fn from(e: IngestError) -> Error {
        match e {
            IngestError::Store(s) => Error::Store(s),
            other => Error::Ingest(other),
        }
    }
}

fn canonical(p: &Path) -> Result<PathBuf> {
    fs::canonicalize(p).map_err(io(format!("resolve {}", p.display())))
}

/// Reads pg_control from a data directory, or explains why it is not one.
pub fn control_of(pgdata: &Path) -> Result<ControlData> {
    if !pgdata.join("PG_VERSION").is_file() {
        return Err(Error::BadInput(format!(
            "{} is not a PostgreSQL data directory (no PG_VERSION file)",
            pgdata.display()
        )));
    }
    let bytes = fs::read(pgdata.join("global/pg_control"))
        .map_err(io(format!("read {}/global/pg_control", pgdata.display())))?;
    Ok(ControlData::parse(&bytes)?)
}

/// Takes a base backup of the running server into `repo`, compared against the cluster's
/// newest backup ([`latest_of`]) to skip what did not change. When it returns `Ok`, the snapshot and all it needs (packs,
/// and the WAL from its start to its stop LSN) are durable; on an error nothing is published.
/// A run that began writing (took its lease) is recorded in the cluster's status object
/// (`status`), passed or failed; one refused before (bad input, no server) writes nothing.
pub fn run(repo: &Repository, opts: BackupOptions) -> Result<Backup> {
    let started = Utc::now();
    let began = std::cell::Cell::new(None);
    let result = take(repo, opts, &began);
    if let Some(sysid) = began.get() {
        let run = match &result {
            Ok(done) => Run {
                backup: Some(done.snapshot.id.clone()),
                ..Run::ended(started, true)
            },
            Err(e) => Run::failed(started, e),
        };
        Recorder::of(repo).record(Watched::Backup(Source::Server), sysid, &run);
    }
    result
}

/// `began` hears the cluster once the lease is taken.
fn take(
    repo: &Repository,
    opts: BackupOptions,
    began: &std::cell::Cell<Option<u64>>,
) -> Result<Backup> {
    // A bad --pgdata is bad input even when the server is down.
    let primary_dir = opts.pgdata.as_deref().map(data_directory).transpose()?;
    let server = Server::connect(&opts.conn)?;
    let info = server.info()?;
    if let (Some((dir, _)), Some(given)) = (&primary_dir, &opts.pgdata) {
        if canonical(Path::new(&info.data_directory))? != *dir {
            return Err(Error::BadInput(format!(
                "--pgdata {} is not the data directory of the server at {} (it uses {})",
                given.display(),
                server.target(),
                info.data_directory
            )));
        }
    }
    let (standby, read_from) = connect_standby(opts.standby.as_ref())?;
    // The directory the files are read from: the standby's, or the primary's.
    let (pgdata, control) = match (&standby, &opts.standby, primary_dir) {
        (Some(s), Some(src), _) => {
            let (dir, control) = data_directory(&src.pgdata)?;
            crate::standby::check(&info, s, &s.info()?, &dir)?;
            (dir, control)
        }
        (_, _, Some(primary)) => primary,
        (_, _, None) => {
            return Err(Error::BadInput(
                "give the primary's data directory with --pgdata (or PGDATA) to back up from \
                 the primary"
                    .into(),
            ))
        }
    };
    if control.system_identifier != info.system_identifier {
        return Err(Error::BadInput(format!(
            "{}/global/pg_control has system identifier {}, but the server reports {}",
            pgdata.display(),
            control.system_identifier,
            info.system_identifier
        )));
    }
    let sysid = info.system_identifier;
    let major = info.major();
    warn_recovery_targets(&server)?;
    let config_outside = config_outside(&server, &info.data_directory, &pgdata)?;
    // Before the parent is read: while the lease is live, gc keeps the packs this backup
    // reuses and writes (docs/repository-format.md, "Deleting").
    let lease = Lease::shared(repo, "backup")?;
    began.set(Some(sysid));
    archive::register_system(
        repo,
        &System {
            system_identifier: SystemId(sysid),
            pg_major: major,
            wal_segment_size: info.wal_segment_size,
            registered: Utc::now(),
        },
    )?;
    let parent = latest_of(repo, sysid)?;

    let start_time = Utc::now();
    let id = free_id(repo, start_time)?;
    let label = opts
        .label
        .clone()
        .unwrap_or_else(|| format!("pgsnapfs {id}"));
    tracing::info!(backup = %id, parent = ?parent.as_ref().map(|p| &p.id), "starting backup");
    let start_lsn = server.backup_start(&label, major)?;
    if let Some(standby) = &standby {
        // The checkpoint pg_backup_start made (or a later one), on the primary's timeline.
        let row = server
            .query_rows("SELECT checkpoint_lsn::text, timeline_id FROM pg_control_checkpoint()")?;
        let (checkpoint, tli) = match row.first().map(Vec::as_slice) {
            Some([lsn, tli]) => (
                Lsn::from_str(lsn)
                    .map_err(|_| Error::BadAnswer(format!("returned a bad LSN {lsn:?}")))?,
                tli.parse()
                    .map_err(|_| Error::BadAnswer(format!("returned a bad timeline {tli:?}")))?,
            ),
            _ => return Err(Error::BadAnswer("returned no checkpoint".into())),
        };
        crate::standby::ready_at(
            standby,
            start_lsn,
            checkpoint,
            tli,
            crate::standby::CATCH_UP_WAIT,
        )?;
    }

    let tablespaces = tablespaces_of(&pgdata)?;
    let mut ingest = Ingest::new(repo, opts.threads, opts.progress);
    // A file dropped while the backup reads: WAL replay from the start LSN accounts for it.
    ingest.set_vanished(Vanished::Skip);
    let changes = match (&parent, opts.full_read) {
        (_, true) => Err(FullRead::Asked),
        (None, _) => Err(FullRead::NoParent),
        (Some(p), _) => changes_since(&server, p, major, start_lsn, repo.config.chunk_size),
    };
    let full_read_reason = match changes {
        Ok(changes) => {
            tracing::info!("reading only what WAL summaries show changed");
            ingest.set_known_changes(Box::new(move |rel| {
                let file = changes.for_file(&layout::relation_path(rel)?)?;
                Some(KnownChanges {
                    changed: file.changed,
                    read_from: file.read_from,
                })
            }));
            None
        }
        Err(why) => {
            tracing::info!("reading every file: {why}");
            Some(why.to_string())
        }
    };
    let filter = standby_filter(pg_filter(pgdata.clone()), standby.is_some());
    (opts.total)(bytes_below(&pgdata, "", &filter));
    let parent_root = parent.as_ref().map(|p| p.root);
    let mut root = ingest.read_dir(&pgdata, "", parent_root.as_ref(), &filter)?;

    let stop = server.backup_stop(major)?;
    let stop_time = Utc::now();
    let parsed = BackupLabel::parse(&stop.label_file)?;
    root.retain(|n| n.name != "backup_label");
    root.push(ingest.file_from_bytes(
        "backup_label",
        stop.label_file.as_bytes(),
        0o600,
        stop_time.timestamp(),
    )?);
    let root_meta = fs::metadata(&pgdata).map_err(io(format!("stat {}", pgdata.display())))?;
    let root_ref = ingest.write_dir(root, parent_root.as_ref())?;
    let (stats, stored) = ingest.finish()?;
    let read = ReadRecord {
        mode: match full_read_reason {
            None => ReadMode::WalSummaries,
            Some(_) => ReadMode::Full,
        },
        full_read_reason,
        bytes_read: stats.bytes - stats.bytes_skipped,
        bytes_skipped: stats.bytes_skipped,
    };

    if let Some(standby) = &standby {
        let end = crate::standby::segment_end(stop.lsn, info.wal_segment_size);
        crate::standby::received(standby, end, crate::standby::CATCH_UP_WAIT)?;
    }
    ensure_wal(
        repo,
        &pgdata,
        sysid,
        parsed.start_tli,
        start_lsn,
        stop.lsn,
        info.wal_segment_size,
    )?;

    let snap = Snapshot {
        format: snapshot::FORMAT,
        id,
        meta: BackupMeta {
            system_identifier: SystemId(sysid),
            pg_major: major,
            pg_version: info.version.clone(),
            timeline: parsed.start_tli,
            start_lsn,
            stop_lsn: stop.lsn,
            wal_segment_size: info.wal_segment_size,
            backup_label: stop.label_file,
            tablespace_map: stop.tablespace_map,
            tablespaces,
            read: Some(read),
            source: Source::Server,
            from_archive: None,
            imported: None,
        },
        start_time,
        stop_time,
        label,
        size_logical: stats.bytes,
        size_stored_new: stored,
        files: stats.files,
        chunk_size: repo.config.chunk_size,
        parent: parent.map(|p| p.id),
        root: root_ref,
        root_mode: root_meta.permissions().mode() & 0o7777,
        root_mtime: root_meta.mtime(),
        requests: repo.backend().stats().map(Into::into),
    };
    let snap = publish(repo, &lease, snap, start_time)?;
    tracing::info!(
        backup = %snap.id,
        chunks_new = stats.chunks_new,
        chunks_reused = stats.chunks_reused,
        chunks_zero = stats.chunks_zero,
        bytes_skipped = stats.bytes_skipped,
        "backup finished"
    );
    Ok(Backup {
        read_from,
        snapshot: snap,
        config_outside,
    })
}

/// Whether the server at `conn` is in recovery: `--only-on-primary` backs up nothing then.
pub fn in_recovery(conn: &ConnOpts) -> Result<bool> {
    crate::standby::in_recovery(&Server::connect(conn)?)
}

/// A data directory's canonical path and pg_control (bad input when it is not one).
fn data_directory(given: &Path) -> Result<(PathBuf, ControlData)> {
    let control = control_of(given)?;
    Ok((canonical(given)?, control))
}

/// Connects to the standby asked for; with `prefer`, a standby that does not answer means
/// the primary's files are read instead (any other refusal stays an error).
fn connect_standby(source: Option<&StandbySource>) -> Result<(Option<Server>, ReadFrom)> {
    let Some(source) = source else {
        return Ok((None, ReadFrom::Primary));
    };
    match Server::connect(&source.conn) {
        Ok(s) => Ok((Some(s), ReadFrom::Standby)),
        Err(e @ Error::Connect { .. }) if source.prefer => {
            tracing::warn!("no standby reachable ({e}): backing up from the primary");
            Ok((None, ReadFrom::PrimaryInstead(e.to_string())))
        }
        Err(e) => Err(e),
    }
}

/// A standby's recovery signal files are its own, not the backup's: a restore writes its
/// own recovery.signal (pgBackRest leaves them out too).
fn standby_filter(
    filter: impl Fn(&str, &fs::Metadata) -> Visit,
    from_standby: bool,
) -> impl Fn(&str, &fs::Metadata) -> Visit {
    move |rel: &str, meta: &fs::Metadata| {
        if from_standby && matches!(rel, "standby.signal" | "recovery.signal") {
            return Visit::Skip;
        }
        filter(rel, meta)
    }
}

/// The first backup id for `start_time` not yet taken: its time, then `-1`, `-2`...
pub(crate) fn free_id(repo: &Repository, start_time: DateTime<Utc>) -> Result<String> {
    let base = snapshot::id_for(start_time);
    let mut id = base.clone();
    let mut suffix = 0;
    while repo.snapshot_exists(&id)? {
        suffix += 1;
        id = format!("{base}-{suffix}");
    }
    Ok(id)
}

/// Publishes a backup's manifest, the last write, while `lease` is held: under its id (from
/// [`free_id`]), or if another backup took that id meanwhile, the next free one for its start
/// time. Returns it as published.
pub(crate) fn publish(
    repo: &Repository,
    lease: &Lease,
    mut snap: Snapshot,
    start_time: DateTime<Utc>,
) -> Result<Snapshot> {
    loop {
        lease.ensure_held()?;
        match repo.save_snapshot(&snap) {
            // Another backup that started in the same second published first.
            Err(StoreError::Backend(BackendError::Conflict { .. })) => {
                snap.id = free_id(repo, start_time)?;
            }
            other => break other?,
        }
    }
    Ok(snap)
}

/// The server's configuration files (postgresql.conf, pg_hba.conf, pg_ident.conf) that are
/// not inside its data directory, as the server names them. A role that may not read these
/// settings (pg_read_all_settings) sees no rows, and no files.
fn config_outside(server: &Server, data_directory: &str, pgdata: &Path) -> Result<Vec<String>> {
    let files = server.query_strings(
        "SELECT setting FROM pg_settings \
         WHERE name IN ('config_file', 'hba_file', 'ident_file') ORDER BY name",
    )?;
    Ok(outside(files, data_directory, pgdata))
}

/// The files not inside the data directory, either as the server spells it or (through a
/// link) as `pgdata`, its canonical path.
fn outside(files: Vec<String>, data_directory: &str, pgdata: &Path) -> Vec<String> {
    files
        .into_iter()
        .filter(|file| {
            let path = Path::new(file);
            let resolved = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
            !(path.starts_with(data_directory) || resolved.starts_with(pgdata))
        })
        .collect()
}

/// Warns when the server's configuration sets recovery targets (left by the recovery that
/// made it, usually): the backup carries them, and a server restored from it would stop
/// its recovery at that old target if nothing removed them. `restore` and views do.
fn warn_recovery_targets(server: &Server) -> Result<()> {
    let rows = server.query_rows(
        "SELECT name, setting, coalesce(sourcefile, '') FROM pg_settings \
         WHERE name LIKE 'recovery\\_target%' AND source NOT IN ('default', 'override') \
         ORDER BY name",
    )?;
    if rows.is_empty() {
        return Ok(());
    }
    let settings: Vec<String> = rows
        .iter()
        .map(|r| match r.as_slice() {
            [name, setting, file] if !file.is_empty() => format!("{name} = '{setting}' ({file})"),
            [name, setting, ..] => format!("{name} = '{setting}'"),
            _ => String::new(),
        })
        .collect();
    tracing::warn!(
        "the server's configuration sets recovery targets, which this backup carries: {}; \
         pgsnapfs restore and mount remove them, but remove them from the server's \
         configuration (ALTER SYSTEM RESET ...) so that no other tool trips on them",
        settings.join(", ")
    );
    Ok(())
}

/// Why a backup reads every file instead of only what the WAL summaries show changed; its
/// text is the manifest's `full_read_reason`.
#[derive(Debug, thiserror::Error)]
enum FullRead {
    #[error("--full-read was given")]
    Asked,
    #[error("there is no earlier backup of this cluster")]
    NoParent,
    #[error("PostgreSQL {major} has no WAL summaries (17 and later do)")]
    NoSummaries { major: u32 },
    #[error("the previous backup is of PostgreSQL {major}")]
    ParentMajor { major: u32 },
    #[error("summarize_wal is off (turn it on for faster incremental backups)")]
    SummarizeWalOff,
    #[error("the previous backup {parent} is on timeline {parent_tli}, this one on {tli}")]
    ParentTimeline {
        parent: String,
        parent_tli: u32,
        tli: u64,
    },
    #[error("the previous backup {0} starts after this one")]
    ParentStartsLater(String),
    #[error(
        "the repository's {chunk_size}-byte chunks do not tile {segment_blocks}-block segment files"
    )]
    ChunksDoNotTile {
        chunk_size: u32,
        segment_blocks: u64,
    },
    #[error("the WAL summarizer has reached only {reached} after {waited} s, not {start}")]
    SummarizerBehind {
        reached: String,
        waited: u64,
        start: Lsn,
    },
    #[error(transparent)]
    Coverage(#[from] summary::CoverageError),
    #[error("{0}")]
    Query(Box<Error>),
    #[error("no row from {0:?}")]
    NoRow(String),
    #[error("the server returned {0:?}, not a number")]
    NotANumber(String),
    #[error("the server returned a bad LSN {0:?}")]
    BadLsn(String),
    #[error("bad fork number {0:?}")]
    BadFork(String),
}

/// Which chunks of relation files may have changed since `parent` started, from the server's
/// WAL summaries (17+); Err says why they cannot tell, and the backup then reads everything.
///
/// A chunk unchanged in the WAL from the parent's start to this backup's start holds what
/// the parent stored: the parent read it after its start, and any change after that point
/// is in this range. Changes after this backup's start are replayed from its WAL, as for
/// pages read torn.
fn changes_since(
    server: &Server,
    parent: &Snapshot,
    major: u32,
    start: Lsn,
    chunk_size: u32,
) -> std::result::Result<Changes, FullRead> {
    if major < 17 {
        return Err(FullRead::NoSummaries { major });
    }
    if parent.pg_major != major {
        return Err(FullRead::ParentMajor {
            major: parent.pg_major,
        });
    }
    let query = |sql: &str| {
        server
            .query_rows(sql)
            .map_err(|e| FullRead::Query(Box::new(e)))
    };
    let one = |sql: &str| -> std::result::Result<Vec<String>, FullRead> {
        query(sql)?
            .pop()
            .ok_or_else(|| FullRead::NoRow(sql.to_string()))
    };
    let num = |v: &str| -> std::result::Result<u64, FullRead> {
        v.parse().map_err(|_| FullRead::NotANumber(v.to_string()))
    };
    let lsn = |v: &str| Lsn::from_str(v).map_err(|_| FullRead::BadLsn(v.to_string()));
    let settings = one(
        "SELECT current_setting('summarize_wal'), current_setting('block_size'), \
         (SELECT setting FROM pg_settings WHERE name = 'segment_size'), \
         (SELECT timeline_id FROM pg_control_checkpoint())",
    )?;
    if settings[0] != "on" {
        return Err(FullRead::SummarizeWalOff);
    }
    let (block_size, segment_blocks, tli) =
        (num(&settings[1])?, num(&settings[2])?, num(&settings[3])?);
    if tli != u64::from(parent.timeline) {
        return Err(FullRead::ParentTimeline {
            parent: parent.id.clone(),
            parent_tli: parent.timeline,
            tli,
        });
    }
    if start < parent.start_lsn {
        return Err(FullRead::ParentStartsLater(parent.id.clone()));
    }
    let Some(mut changes) = Changes::new(u64::from(chunk_size) / block_size, segment_blocks) else {
        return Err(FullRead::ChunksDoNotTile {
            chunk_size,
            segment_blocks,
        });
    };
    // The summarizer writes a summary up to this backup's start checkpoint soon after it.
    let waited = Instant::now();
    loop {
        let state =
            one("SELECT summarized_tli, summarized_lsn FROM pg_get_wal_summarizer_state()")?;
        if num(&state[0])? == tli && lsn(&state[1])? >= start {
            break;
        }
        if waited.elapsed() > SUMMARIZER_WAIT {
            return Err(FullRead::SummarizerBehind {
                reached: state[1].clone(),
                waited: SUMMARIZER_WAIT.as_secs(),
                start,
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let summaries = query("SELECT tli, start_lsn, end_lsn FROM pg_available_wal_summaries()")?
        .iter()
        .map(|r| {
            Ok(Summary {
                tli: num(&r[0])? as u32,
                start: lsn(&r[1])?,
                end: lsn(&r[2])?,
            })
        })
        .collect::<std::result::Result<Vec<_>, FullRead>>()?;
    // Exactly the summaries checked: one removed since makes the query fail, not miss it.
    let covering = summary::covering(&summaries, tli as u32, parent.start_lsn, start)?
        .iter()
        .map(|s| format!("({}, '{}'::pg_lsn, '{}'::pg_lsn)", s.tli, s.start, s.end))
        .collect::<Vec<_>>();
    if covering.is_empty() {
        return Ok(changes);
    }
    // Grouped by chunk on the server: one row per changed chunk, not per block.
    let rows = query(&format!(
        "WITH c AS (SELECT c.* FROM (VALUES {}) s(tli, start_lsn, end_lsn), \
           LATERAL pg_wal_summary_contents(s.tli, s.start_lsn, s.end_lsn) c) \
         SELECT false, reltablespace, reldatabase, relfilenode, relforknumber, \
           relblocknumber / {per_chunk} FROM c WHERE NOT is_limit_block GROUP BY 2, 3, 4, 5, 6 \
         UNION ALL \
         SELECT true, reltablespace, reldatabase, relfilenode, relforknumber, \
           min(relblocknumber) FROM c WHERE is_limit_block GROUP BY 2, 3, 4, 5",
        covering.join(", "),
        per_chunk = changes.chunk_blocks(),
    ))?;
    for r in rows {
        let oid = |i: usize| num(&r[i]).map(|v| v as u32);
        let fork: i16 = r[4].parse().map_err(|_| FullRead::BadFork(r[4].clone()))?;
        let (spc, db, node, n) = (oid(1)?, oid(2)?, oid(3)?, num(&r[5])?);
        if r[0] == "t" {
            changes.add_limit(spc, db, node, fork, n);
        } else {
            changes.add_modified(spc, db, node, fork, n);
        }
    }
    changes.finish();
    Ok(changes)
}

/// The newest readable backup of a cluster: the one a new backup compares against.
pub fn latest_of(repo: &Repository, sysid: u64) -> Result<Option<Snapshot>> {
    Ok(repo
        .snapshots()?
        .into_iter()
        .filter_map(|s| s.ok())
        .rfind(|s| s.sysid() == sysid && s.chunk_size == repo.config.chunk_size))
}

/// The sizes of the files the backup's walk keeps below `dir`: the progress bar's total. An
/// estimate: files that change or vanish meanwhile are the WAL's business.
fn bytes_below(dir: &Path, rel: &str, filter: &dyn Fn(&str, &fs::Metadata) -> Visit) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut total = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let child_rel = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        let meta = match filter(&child_rel, &meta) {
            Visit::Skip | Visit::Empty => continue,
            Visit::Follow => match fs::metadata(&path) {
                Ok(m) => m,
                Err(_) => continue,
            },
            Visit::Keep => meta,
        };
        if meta.is_dir() {
            total += bytes_below(&path, &child_rel, filter);
        } else if meta.is_file() {
            total += meta.len();
        }
    }
    total
}

fn tablespaces_of(pgdata: &Path) -> Result<Vec<Tablespace>> {
    let dir = pgdata.join("pg_tblspc");
    let mut out = Vec::new();
    for entry in fs::read_dir(&dir).map_err(io(format!("list {}", dir.display())))? {
        let entry = entry.map_err(io(format!("list {}", dir.display())))?;
        let Ok(oid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(target) = fs::read_link(entry.path()) {
            out.push(Tablespace {
                oid,
                location: target.to_string_lossy().into_owned(),
            });
        }
    }
    out.sort_by_key(|t| t.oid);
    Ok(out)
}

/// What pg_basebackup leaves out, and tablespace links read as the directories they point to.
pub(crate) fn pg_filter(pgdata: PathBuf) -> impl Fn(&str, &fs::Metadata) -> Visit {
    // Unlogged relations are judged per directory; remember the last directory's verdict.
    let cache: RefCell<Option<(PathBuf, HashSet<String>)>> = RefCell::new(None);
    move |rel: &str, meta: &fs::Metadata| {
        let is_tablespace_link = meta.file_type().is_symlink()
            && rel
                .strip_prefix("pg_tblspc/")
                .is_some_and(|oid| oid.parse::<u32>().is_ok());
        if is_tablespace_link {
            return Visit::Follow;
        }
        match layout::classify(rel, meta.is_dir()) {
            Entry::Skip => return Visit::Skip,
            Entry::SkipContents => return Visit::Empty,
            Entry::Keep => {}
        }
        let (dir, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        if !meta.is_file() || !layout::is_relation_file(name) {
            return Visit::Keep;
        }
        let dir = PathBuf::from(dir);
        let mut cache = cache.borrow_mut();
        if cache.as_ref().map(|(d, _)| d != &dir).unwrap_or(true) {
            let names: Vec<String> = fs::read_dir(pgdata.join(&dir))
                .map(|rd| {
                    rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
                        .collect()
                })
                .unwrap_or_default();
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            *cache = Some((dir.clone(), layout::unlogged_skips(&refs)));
        }
        let skips = &cache.as_ref().expect("just set").1;
        if skips.contains(name) {
            Visit::Skip
        } else {
            Visit::Keep
        }
    }
}

/// Makes sure the WAL from start to stop is in the repository, copying it from pg_wal when the
/// archiver has not stored it yet (or archives elsewhere), so every backup is restorable.
/// The segments are complete: pg_backup_stop switched to a new segment and flushed.
fn ensure_wal(
    repo: &Repository,
    pgdata: &Path,
    sysid: u64,
    tli: u32,
    start: Lsn,
    stop: Lsn,
    seg_size: u64,
) -> Result<()> {
    for segno in segment_of(start, seg_size)..=segment_of(stop, seg_size) {
        let name = WalFile::Segment { tli, segno }.name(seg_size);
        if wal::has_file(repo, sysid, tli, &name)? {
            continue;
        }
        let path = pgdata.join("pg_wal").join(&name);
        if !path.exists() {
            return Err(Error::WalMissing {
                name,
                pg_wal: pgdata.join("pg_wal").display().to_string(),
            });
        }
        tracing::info!("copying {name} from pg_wal: the archiver has not stored it here yet");
        archive::push(repo, &path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn configuration_outside_the_data_directory() {
        let files = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let data = "/nonexistent/15/main";
        assert_eq!(
            super::outside(
                files(&[
                    "/nonexistent/etc/postgresql.conf",
                    "/nonexistent/15/main/pg_hba.conf",
                    "/nonexistent/15/mainly/pg_ident.conf",
                ]),
                data,
                Path::new("/nonexistent/data"),
            ),
            files(&[
                "/nonexistent/etc/postgresql.conf",
                "/nonexistent/15/mainly/pg_ident.conf"
            ])
        );
        // The canonical data directory, when the server reaches it through a link.
        assert!(super::outside(
            files(&["/nonexistent/data/postgresql.conf"]),
            data,
            Path::new("/nonexistent/data")
        )
        .is_empty());
    }
}
