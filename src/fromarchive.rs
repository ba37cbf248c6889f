//! `backup --from-archive`: a new backup made from the repository alone, with no connection
//! to the server it backs up. The newest suitable backup is mounted as a private view; a
//! server started on it replays the archived WAL to the target and shuts down there
//! (`recovery_target_action = shutdown`), which writes a restartpoint and leaves pg_control
//! "shut down in recovery": a later start resumes recovery from that restartpoint. The
//! view's data directory is then stored as a new snapshot. Only the chunks holding blocks
//! that replay wrote (the copy-on-write layer's record) are read; the others are the base
//! backup's chunk lists, reused unread. The manifest (written last) records where a restore
//! starts (the restartpoint's redo) and must reach (the minimum recovery point).

use crate::archive;
use crate::backup::{free_id, pg_filter, publish};
use crate::catalog::{ArchiveSource, BackupMeta, Snapshot, Source, Tablespace};
use crate::error::{io, Error, Result};
use crate::lock::Lease;
use crate::passphrase;
use crate::pg::control::RecoveryPoint;
use crate::pg::lsn::Lsn;
use crate::pg::target::{Target, TargetAction};
use crate::pg::wal::{segment_name, SegmentHeader};
use crate::pg::walscan::next_to_last_record_start;
use crate::pitr::{self, Goal, Point};
use crate::session::lifecycle::Signals;
use crate::session::plan::Latest;
use crate::session::{server_owner, CacheOptions, Mounted, Request, Session, ViewSettings};
use crate::status::{Recorder, Run, Watched};
use crate::store::ingest::{Ingest, KnownChanges, Visit};
use crate::store::snapshot;
use crate::store::Repository;
use crate::view::Owner;
use crate::walpath::TimelineChoice;
use chrono::Utc;
use pgsnapfs_fuse::FileChange;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

/// The options of `pgsnapfs backup --from-archive`.
pub struct Options {
    /// The repository's location as given, for the server's restore_command.
    pub repo_spec: String,
    /// Where the server's `wal-fetch` finds the passphrase of an encrypted repository.
    pub passphrase: passphrase::Source,
    /// The cluster, when the repository holds several.
    pub system: Option<u64>,
    /// Where replay stops; `None`: the next-to-last record of the newest archived segment
    /// (see [`next_to_last_record_start`]).
    pub target: Option<Target>,
    /// A directory for the view, its scratch and the server's socket (a new directory is
    /// made in it and removed afterwards); `None`: the system's temporary directory.
    pub work_dir: Option<PathBuf>,
    /// The operating-system user the server runs as.
    pub user: String,
    /// The server's programs for the backup's major; `None`: Debian's.
    pub pg_bin: Option<PathBuf>,
    /// shared_buffers of the replaying server.
    pub shared_buffers: String,
    /// The label kept in the snapshot; `None` names the base backup.
    pub label: Option<String>,
    /// Worker threads that compress, encrypt and store chunks.
    pub threads: usize,
}

/// What `backup --from-archive` did.
pub enum Outcome {
    /// A new backup, published.
    Stored(Box<Snapshot>),
    /// The newest backup already reaches the end of the archived WAL.
    UpToDate {
        /// That backup.
        backup: String,
        /// Where a new backup would stop.
        end: Lsn,
    },
}

/// The server's log lines shown when replay fails.
const LOG_LINES: usize = 15;

/// Makes a backup by replaying archived WAL on the newest suitable backup (see the module
/// comment). On an error nothing is published. `signals` (SIGINT and SIGTERM, blocked since
/// the command started) stop the server, and the command then cleans up and fails.
///
/// A run that began writing (took its lease) is recorded in the cluster's status object
/// (`status`), passed or failed; one that found nothing to do or was refused writes nothing.
pub fn run(repo: Repository, opts: Options, signals: Signals) -> Result<Outcome> {
    let started = Utc::now();
    let recorder = Recorder::of(&repo);
    let began = std::cell::Cell::new(None);
    let result = replay_archive(repo, opts, signals, &began);
    let run = match &result {
        Ok(Outcome::Stored(snap)) => Some(Run {
            backup: Some(snap.id.clone()),
            ..Run::ended(started, true)
        }),
        // Decided before the lease: nothing was written, and nothing is recorded.
        Ok(Outcome::UpToDate { .. }) => None,
        Err(e) => Some(Run::failed(started, e)),
    };
    if let (Some(sysid), Some(run)) = (began.get(), run) {
        recorder.record(Watched::Backup(Source::Archive), sysid, &run);
    }
    result
}

/// `began` hears the cluster once the lease is taken.
fn replay_archive(
    repo: Repository,
    opts: Options,
    signals: Signals,
    began: &std::cell::Cell<Option<u64>>,
) -> Result<Outcome> {
    let stopper = Stopper::listen(signals);
    let goal = match goal(&repo, &opts)? {
        Ok(goal) => goal,
        Err(up_to_date) => return Ok(up_to_date),
    };
    let owner = server_owner(&opts.user)?;
    // Before the base is read: gc keeps the packs this backup reuses and writes.
    let lease = Lease::shared(&repo, "backup")?;
    began.set(match opts.system {
        Some(sysid) => Some(sysid),
        None => archive::resolve_system(&repo, None).ok().map(|s| s.sysid()),
    });
    let work = WorkDir::create(opts.work_dir.as_deref(), owner)?;
    let start_time = Utc::now();
    let session = Session::open(
        repo,
        Request {
            command: "backup",
            repo_spec: opts.repo_spec.clone(),
            passphrase: opts.passphrase.clone(),
            goal,
            latest: Latest::NewestBackup,
            system: opts.system,
            mountpoint: work.mountpoint(),
            scratch: Some(work.dir.join("view")),
            owner: opts.user.clone(),
            view: ViewSettings {
                action: TargetAction::Shutdown,
                shared_buffers: opts.shared_buffers.clone(),
                files: Vec::new(),
                tablespaces: crate::tblspc::Policy::Cover,
                durable: false,
                standby: false,
            },
            cache: CacheOptions {
                memory: 128 << 20,
                dir: None,
                disk_size: 0,
            },
            hydrate: None,
        },
    )?;
    let mounted = session.mount()?;
    let result = replay_and_store(&mounted, &lease, &work, &opts, &stopper, start_time);
    if let Err(e) = mounted.unmount() {
        tracing::warn!("{e}");
    }
    result.map(|s| Outcome::Stored(Box::new(s)))
}

/// The goal of the replay, or `Err(UpToDate)` when the archive holds nothing new.
fn goal(repo: &Repository, opts: &Options) -> Result<std::result::Result<Goal, Outcome>> {
    if let Some(target) = &opts.target {
        return Ok(Ok(Goal {
            to: Point::Target(target.clone()),
            timeline: TimelineChoice::Auto,
        }));
    }
    let plan = pitr::plan(
        repo,
        opts.system,
        &Goal {
            to: Point::Latest,
            timeline: TimelineChoice::Auto,
        },
    )?;
    if let Some(missing) = &plan.stops_early_at {
        return Err(Error::NotFound(format!(
            "WAL segment {missing} is missing from the archive, between backup {} and the end \
             of the archived WAL: a backup from the archive cannot go past it. Archive it \
             (or take a server backup after it), or stop before it with --target-lsn",
            plan.snapshot.id
        )));
    }
    let (tli, segno) = plan.end_segment;
    let seg_size = plan.snapshot.wal_segment_size;
    let name = segment_name(tli, segno, seg_size);
    let data = archive::read_file(repo, plan.system.sysid(), &name)?
        .ok_or_else(|| Error::NotFound(format!("{name} is not in the archive")))?;
    let header = SegmentHeader::parse(&data)?;
    let end = next_to_last_record_start(&data, &header)?
        .ok_or_else(|| Error::NotFound(format!("fewer than two WAL records end in {name}")))?;
    if end <= plan.snapshot.stop_lsn {
        return Ok(Err(Outcome::UpToDate {
            backup: plan.snapshot.id,
            end,
        }));
    }
    tracing::info!(
        "replaying to {end}, the next-to-last record of {name}, from backup {}",
        plan.snapshot.id
    );
    Ok(Ok(Goal {
        to: Point::Target(Target::Lsn(end)),
        timeline: TimelineChoice::BlobId(plan.timeline),
    }))
}

/// Runs the server on the mounted view until it shuts down at the target, then stores the
/// view's data directory.
fn replay_and_store(
    mounted: &Mounted,
    lease: &Lease,
    work: &WorkDir,
    opts: &Options,
    stopper: &Stopper,
    start_time: chrono::DateTime<Utc>,
) -> Result<Snapshot> {
    let repo = mounted.repo();
    let view = mounted
        .view()
        .ok_or_else(|| Error::Mount("the session mounted no view".into()))?;
    let base = &view.plan.snapshot;
    let data = mounted.mountpoint();
    tracing::info!(
        "replaying {} from backup {}: about {} bytes of WAL",
        view.plan.describe(),
        base.id,
        view.plan.replay_bytes
    );
    replay(data, work, opts, stopper, base.pg_major, &view.covers)?;
    // Tablespaces replay created are stored from their covers, never from the host.
    let created = crate::tblspc::relink_to_covers(&data.join("pg_tblspc"), &view.covers)?;
    let control = fs::read(data.join("global/pg_control"))
        .map_err(io(format!("read {}/global/pg_control", data.display())))?;
    let point = RecoveryPoint::parse(&control)?.ok_or_else(|| {
        Error::BadInput(format!(
            "the pg_control layout of PostgreSQL {} is not known to this pgsnapfs",
            base.pg_major
        ))
    })?;
    if !point.shut_down_in_recovery() {
        return Err(replay_failed(
            work,
            &format!(
                "the server stopped without shutting down in recovery (pg_control state {})",
                point.state
            ),
        ));
    }
    // A server stopped from outside (a smart shutdown in recovery) also ends in that state:
    // what replay reached must cover the base's end and the target.
    let reached = point.min_recovery_point.max(point.checkpoint);
    let wanted = match &view.plan.target {
        Some(Target::Lsn(l)) => base.stop_lsn.max(*l),
        _ => base.stop_lsn,
    };
    if reached < wanted {
        return Err(replay_failed(
            work,
            &format!("replay stopped at {reached}, before {wanted}: nothing was stored"),
        ));
    }
    // A backup lives on one timeline (the planner's model): one whose restartpoint is before a
    // switch and whose consistency point is after it would be planned wrongly.
    if point.min_recovery_timeline != 0 && point.min_recovery_timeline != point.timeline {
        return Err(Error::BadInput(format!(
            "replay stopped on timeline {} but its last restartpoint is on timeline {}: no \
             checkpoint of the new timeline was replayed yet. Nothing was stored; run again once \
             one is archived, or stop before the switch with --target-lsn",
            point.min_recovery_timeline, point.timeline
        )));
    }

    let mut ingest = Ingest::new(repo, opts.threads, Box::new(|_| {}));
    let chunk_size = u64::from(repo.config.chunk_size);
    ingest.set_known_changes(Box::new(move |rel| {
        known_changes(mounted, data, rel, chunk_size)
    }));
    let replaced = view.replaced.clone();
    let inner = pg_filter(data.to_path_buf());
    let filter = move |rel: &str, meta: &fs::Metadata| {
        let own = rel == crate::mount::TABLESPACES_DIR || replaced.iter().any(|n| n == rel);
        if own {
            Visit::Skip
        } else {
            inner(rel, meta)
        }
    };
    let mut root = ingest.read_dir(data, "", Some(&base.root), &filter)?;
    // What the view put at its top is its own: the backup's entries stand there.
    let base_top = repo.load_dir(&base.root)?;
    root.extend(
        view.replaced
            .iter()
            .filter_map(|name| base_top.get(name).cloned()),
    );
    let root_ref = ingest.write_dir(root, Some(&base.root))?;
    let (stats, stored) = ingest.finish()?;
    let source = ArchiveSource {
        base: base.id.clone(),
        wal_start: base.start_lsn,
        wal_end: match &view.plan.target {
            Some(Target::Lsn(l)) => Some(*l),
            _ => None,
        },
        checkpoint: point.checkpoint,
        redo: point.redo,
        min_recovery_point: point.min_recovery_point,
        min_recovery_timeline: point.min_recovery_timeline,
        bytes_read: stats.bytes - stats.bytes_skipped,
        bytes_skipped: stats.bytes_skipped,
    };
    let stop_lsn = stop_lsn(&point, base.wal_segment_size);
    let stop_time = consistent_as_of(
        last_commit_before(repo, &view.plan, stop_lsn)?,
        base.stop_time,
        view.plan.target.as_ref(),
        Utc::now(),
    );
    let snap = Snapshot {
        format: snapshot::FORMAT,
        id: free_id(repo, start_time)?,
        meta: BackupMeta {
            system_identifier: base.system_identifier,
            pg_major: base.pg_major,
            pg_version: base.pg_version.clone(),
            timeline: point.timeline,
            start_lsn: point.redo,
            stop_lsn,
            wal_segment_size: base.wal_segment_size,
            backup_label: String::new(),
            tablespace_map: None,
            tablespaces: tablespaces(&base.tablespaces, &created),
            read: None,
            source: Source::Archive,
            from_archive: Some(source),
            imported: None,
        },
        start_time,
        stop_time,
        label: opts
            .label
            .clone()
            .unwrap_or_else(|| format!("pgsnapfs from archive, base {}", base.id)),
        size_logical: stats.bytes,
        size_stored_new: stored,
        files: stats.files,
        chunk_size: repo.config.chunk_size,
        parent: Some(base.id.clone()),
        root: root_ref,
        root_mode: base.root_mode,
        root_mtime: base.root_mtime,
        requests: repo.backend().stats().map(Into::into),
    };
    // A signal during the ingest: nothing is published.
    stopper.check()?;
    let snap = publish(repo, lease, snap, start_time)?;
    tracing::info!(
        backup = %snap.id,
        chunks_new = stats.chunks_new,
        chunks_reused = stats.chunks_reused,
        bytes_skipped = stats.bytes_skipped,
        "backup from the archive finished"
    );
    Ok(snap)
}

/// The base's tablespaces and those replay created (oid, location), by oid; a created one
/// replaces a base's of the same oid.
fn tablespaces(base: &[Tablespace], created: &[(u32, String)]) -> Vec<Tablespace> {
    let mut all: Vec<Tablespace> = base
        .iter()
        .filter(|t| !created.iter().any(|(oid, _)| *oid == t.oid))
        .cloned()
        .chain(created.iter().map(|(oid, location)| Tablespace {
            oid: *oid,
            location: location.clone(),
        }))
        .collect();
    all.sort_by_key(|t| t.oid);
    all
}

/// The manifest's `stop_lsn`: how far a restore must replay, so the planner asks for the
/// segment holding it. The minimum recovery point, or the byte before it when it falls on a
/// segment boundary (after a WAL switch): the WAL up to it ends in the segment before.
fn stop_lsn(point: &RecoveryPoint, seg_size: u64) -> Lsn {
    match point.min_recovery_point {
        Lsn(0) => point.checkpoint,
        Lsn(l) if l % seg_size == 0 => Lsn(l - 1),
        l => l,
    }
}

/// What the copy-on-write layer knows of the changes to `rel` since the base backup, in
/// chunks; None (read it all) when it cannot tell. The file is fsynced first: the kernel
/// may hold pages the server wrote that the layer has not seen.
fn known_changes(
    mounted: &Mounted,
    data: &Path,
    rel: &str,
    chunk_size: u64,
) -> Option<KnownChanges> {
    let path = data.join(rel);
    if let Err(e) = fs::File::open(&path).and_then(|f| f.sync_all()) {
        tracing::debug!("{}: {e}; read in full", path.display());
        return None;
    }
    // A tablespace's link points into the view's own directory of tablespaces.
    let in_view = match rel.strip_prefix("pg_tblspc/") {
        Some(rest) => format!("{}/{rest}", crate::mount::TABLESPACES_DIR),
        None => rel.to_string(),
    };
    let block = crate::pg::PAGE_SIZE as u64;
    match mounted.file_change(Path::new(&in_view)) {
        Ok(FileChange::Unchanged) => Some(KnownChanges {
            changed: Vec::new(),
            read_from: u64::MAX,
        }),
        Ok(FileChange::Blocks {
            written,
            source_len,
        }) => Some(KnownChanges {
            changed: chunks_of(&written, block, chunk_size),
            read_from: source_len / chunk_size,
        }),
        Ok(_) => None,
        Err(e) => {
            tracing::debug!("{e}; read in full");
            None
        }
    }
}

/// The chunks (ascending) that hold any of the `written` blocks (ascending).
fn chunks_of(written: &[u64], block: u64, chunk_size: u64) -> Vec<u64> {
    let mut chunks: Vec<u64> = written
        .iter()
        .flat_map(|b| (b * block / chunk_size)..=((b + 1) * block - 1) / chunk_size)
        .collect();
    chunks.dedup();
    chunks
}

/// Starts the server on the view and waits until it exits; a signal stops it.
fn replay(
    data: &Path,
    work: &WorkDir,
    opts: &Options,
    stopper: &Stopper,
    major: u32,
    covers: &[crate::tblspc::Cover],
) -> Result<()> {
    let bin = crate::verify::pg_bin(opts.pg_bin.as_deref(), major)?;
    let owner = server_owner(&opts.user)?;
    let log = work.log();
    let out = fs::File::create(&log).map_err(io(format!("create {}", log.display())))?;
    let err = out
        .try_clone()
        .map_err(io(format!("open {}", log.display())))?;
    let postgres = bin.join("postgres");
    let mut cmd = if owner.uid == Owner::me().uid {
        Command::new(&postgres)
    } else {
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={}", owner.uid))
            .arg(format!("--regid={}", owner.gid))
            .args(["--init-groups", "--"])
            .arg(&postgres);
        c.env("USER", &opts.user).env("LOGNAME", &opts.user);
        match crate::verify::home_of(owner.uid) {
            Some(home) => c.env("HOME", home),
            None => c.env_remove("HOME"),
        };
        c
    };
    cmd.arg("-D")
        .arg(data)
        .args(["-p", "5432", "-k"])
        .arg(work.socket())
        .args(["-c", "listen_addresses=", "-c", "hot_standby=off"])
        .current_dir(&work.dir)
        // Kill points (tests/crash_injection.rs) are this command's, not its wal-fetch's.
        .env_remove("PGSNAPFS_KILL_AT")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    crate::namespace::isolate(&mut cmd, covers)?;
    let mut child = cmd
        .spawn()
        .map_err(io(format!("start {}", postgres.display())))?;
    stopper.watch(child.id());
    let status = child.wait().map_err(io("wait for the server"));
    stopper.watch(0);
    let status = status?;
    stopper.check()?;
    if !status.success() {
        return Err(replay_failed(
            work,
            &format!("the server exited with {status}"),
        ));
    }
    Ok(())
}

/// The error of a failed replay, with the server's last log lines.
fn replay_failed(work: &WorkDir, what: &str) -> Error {
    let text = fs::read_to_string(work.log()).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(LOG_LINES)..];
    Error::Replay(format!(
        "{what}; nothing was stored. The server's last log lines:\n{}",
        tail.join("\n")
    ))
}

/// The command's own directory: the mount point, the view's scratch, the server's socket
/// and log. Removed when dropped.
struct WorkDir {
    dir: PathBuf,
}

impl WorkDir {
    fn create(base: Option<&Path>, owner: Owner) -> Result<WorkDir> {
        let base = base
            .map(Path::to_path_buf)
            .unwrap_or_else(std::env::temp_dir);
        // Short: the server's socket path below it has a limit of 107 bytes.
        let dir = base.join(format!("pgsnapfs-fa.{}", std::process::id()));
        // Traversable by the server's user; what needs privacy is made 0700 below.
        fs::DirBuilder::new()
            .mode(0o755)
            .create(&dir)
            .map_err(io(format!("create {}", dir.display())))?;
        let work = WorkDir { dir };
        fs::set_permissions(&work.dir, fs::Permissions::from_mode(0o755))
            .map_err(io(format!("chmod {}", work.dir.display())))?;
        for (sub, mode) in [("mnt", 0o755), ("s", 0o700)] {
            let path = work.dir.join(sub);
            fs::DirBuilder::new()
                .mode(mode)
                .create(&path)
                .map_err(io(format!("create {}", path.display())))?;
            std::os::unix::fs::chown(&path, Some(owner.uid), Some(owner.gid))
                .map_err(io(format!("chown {}", path.display())))?;
        }
        Ok(work)
    }

    fn mountpoint(&self) -> PathBuf {
        self.dir.join("mnt")
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("s")
    }

    fn log(&self) -> PathBuf {
        self.dir.join("server.log")
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            tracing::warn!("cannot remove {}: {e}", self.dir.display());
        }
    }
}

/// The time of the last commit the replay to `stop` carried out, from the segment summaries:
/// the latest commit of the last segment up to `stop` that holds one (so possibly one after
/// `stop` in that segment: late, never early).
fn last_commit_before(
    repo: &Repository,
    plan: &pitr::Plan,
    stop: Lsn,
) -> Result<Option<chrono::DateTime<Utc>>> {
    let seg_size = archive::segment_size(&plan.system);
    let last = crate::pg::wal::segment_of(stop, seg_size);
    let mut sums = archive::SummaryCache::new(repo, plan.system.sysid(), seg_size, true)
        .with_catalog(&plan.catalog);
    for &(tli, segno) in plan.path.iter().rev().filter(|(_, s)| *s <= last) {
        if let Some(t) = sums.get(tli, segno)?.and_then(|s| s.last_commit_time) {
            return Ok(Some(crate::pg::walscan::utc_of_pg(t)));
        }
    }
    Ok(None)
}

/// A backup from the archive's stop time: when its content was current, as `restore` and
/// `mount` compare it with a time target (a backup is a base for a target after its stop
/// time). No commit after the last one replayed is in it, nor (for a time target) any after
/// the target; it is never before its base's own end, nor after now.
fn consistent_as_of(
    last_commit: Option<chrono::DateTime<Utc>>,
    base_stop: chrono::DateTime<Utc>,
    target: Option<&Target>,
    now: chrono::DateTime<Utc>,
) -> chrono::DateTime<Utc> {
    let mut t = last_commit.map_or(base_stop, |c| c.max(base_stop));
    if let Some(Target::Time(target)) = target {
        t = t.min(target.with_timezone(&Utc).max(base_stop));
    }
    t.min(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_from_the_archive_is_as_of_its_last_commit() {
        let at = |s: i64| chrono::DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap();
        let (base, now) = (at(0), at(1000));
        assert_eq!(consistent_as_of(Some(at(500)), base, None, now), at(500));
        assert_eq!(
            consistent_as_of(None, base, None, now),
            base,
            "no commit replayed"
        );
        assert_eq!(consistent_as_of(Some(at(-5)), base, None, now), base);
        let target = Target::Time(at(400).into());
        assert_eq!(
            consistent_as_of(Some(at(450)), base, Some(&target), now),
            at(400),
            "a commit past the time target is in the summary's segment, not in the backup"
        );
        assert_eq!(consistent_as_of(Some(at(2000)), base, None, now), now);
    }

    #[test]
    fn stop_lsn_names_the_last_segment_replay_needs() {
        let point = |min: u64| RecoveryPoint {
            state: 2,
            checkpoint: Lsn(0x6172978),
            redo: Lsn(0x6172940),
            timeline: 1,
            min_recovery_point: Lsn(min),
            min_recovery_timeline: 1,
        };
        let seg = 16 << 20;
        assert_eq!(stop_lsn(&point(0x7406CC8), seg), Lsn(0x7406CC8));
        assert_eq!(stop_lsn(&point(0x8000000), seg), Lsn(0x7FFFFFF));
        assert_eq!(stop_lsn(&point(0), seg), Lsn(0x6172978));
    }

    #[test]
    fn created_tablespaces_join_the_base_s() {
        let t = |oid, location: &str| Tablespace {
            oid,
            location: location.into(),
        };
        let base = [t(16390, "/srv/b"), t(16400, "/srv/old")];
        assert_eq!(
            tablespaces(
                &base,
                &[(16387, "/srv/a".into()), (16400, "/srv/new".into())]
            ),
            [t(16387, "/srv/a"), t(16390, "/srv/b"), t(16400, "/srv/new")]
        );
        assert_eq!(tablespaces(&base, &[]), base);
    }

    #[test]
    fn written_blocks_name_the_chunks_that_hold_them() {
        // 8 KiB blocks in 64 KiB chunks: eight to a chunk.
        assert_eq!(chunks_of(&[0, 1, 7, 8, 100], 8192, 65536), [0, 1, 12]);
        // Chunks smaller than a block: a block covers several.
        assert_eq!(chunks_of(&[1, 2], 8192, 4096), [2, 3, 4, 5]);
        // Chunks that do not tile blocks: a block across two chunks marks both.
        assert_eq!(chunks_of(&[1], 8192, 12288), [0, 1]);
        assert!(chunks_of(&[], 8192, 65536).is_empty());
    }
}

/// What SIGINT and SIGTERM do: stop the replaying server at once, and make the command fail
/// before it publishes anything.
#[derive(Default)]
struct Stopper {
    /// The signal's number, 0 until one arrives.
    signal: AtomicI32,
    /// The server while it runs, 0 otherwise.
    server: AtomicI32,
}

impl Stopper {
    fn listen(signals: Signals) -> Arc<Stopper> {
        let stopper = Arc::new(Stopper::default());
        let watcher = stopper.clone();
        std::thread::spawn(move || {
            let sig = signals.wait();
            tracing::warn!("signal {sig}: stopping the replaying server, then unmounting");
            watcher.signal.store(sig, Ordering::SeqCst);
            let pid = watcher.server.load(Ordering::SeqCst);
            if pid > 0 {
                // SAFETY: a signal to our child, not yet reaped: its id is cleared first.
                unsafe { libc::kill(pid, libc::SIGQUIT) };
            }
        });
        stopper
    }

    fn watch(&self, pid: u32) {
        self.server
            .store(i32::try_from(pid).unwrap_or(0), Ordering::SeqCst);
    }

    fn check(&self) -> Result<()> {
        match self.signal.load(Ordering::SeqCst) {
            0 => Ok(()),
            sig => Err(Error::Interrupted(sig)),
        }
    }
}
