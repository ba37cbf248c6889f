//! Asynchronous archiving: `wal-push --async` queues a file in the [`Spool`] and returns; the
//! pusher sends queued files to the repository with several threads, oldest first, and
//! removes each from the spool only once the repository has it.
//!
//! Crash safety comes from the order of those steps: a pusher killed at any point leaves
//! every file either still queued (the next pusher archives it again, and
//! [`archive::push`] recognises a copy already archived) or archived. One pusher runs per
//! spool, under the spool's flock()ed lock file.

use crate::archive::{self, PushOutcome};
use crate::catalog::keys;
use crate::error::{io, Error, Result};
use crate::pg::wal::{WalFile, DEFAULT_SEG_SIZE};
use crate::spool::{DropMarker, Enqueued, Limit, Queued, Spool, Status};
use crate::store::{BackendError, Repository, StoreError};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::ffi::OsString;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How often an idle pusher looks for new files.
const POLL: Duration = Duration::from_millis(20);
/// How long a push waits for the archiver's retry it asked for.
const RETRY_WAIT: Duration = Duration::from_secs(2);
/// The longest wait between attempts while the repository fails: a failed attempt costs one
/// request, and the archive should catch up soon after the repository is back.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// What `wal-push --async` does besides queueing.
pub struct AsyncOptions {
    /// What happens to a file over the spool's limit.
    pub limit: Limit,
    /// Fail (so PostgreSQL keeps its WAL) once the pusher has failed this long; not with
    /// [`Limit::Drop`], which chose to lose WAL rather than stop.
    pub fail_after: Duration,
}

/// Queues `path` for the pusher and starts one (with `start`) if none runs on the spool.
pub fn push_async(
    spool: &Spool,
    path: &Path,
    opts: &AsyncOptions,
    start: impl FnOnce() -> Result<()>,
) -> Result<Enqueued> {
    let queued = spool.enqueue(path, opts.limit);
    // Started when there is work, even when the queue is full, so that it drains.
    let work = matches!(queued, Ok(_) | Err(Error::ArchiveQueue(_)));
    if work && spool.pusher_pid().is_none() {
        start()?;
    }
    let queued = queued?;
    if queued == Enqueued::Dropped {
        tracing::error!(
            "DROPPED {}: the spool {} is over --queue-max; this WAL is lost to the archive and \
             recovery cannot pass it (a marker records the gap for `info` and `check`)",
            path.display(),
            spool.dir().display()
        );
    }
    if matches!(opts.limit, Limit::Block(_)) {
        if let Some((failing, error)) = failing_for(spool, opts.fail_after) {
            // PostgreSQL is retrying: so does the archiver, now rather than after its backoff,
            // and a repository that is back answers this very push.
            spool.wake();
            let deadline = Instant::now() + RETRY_WAIT;
            while Instant::now() < deadline {
                std::thread::sleep(POLL);
                if failing_for(spool, opts.fail_after).is_none() {
                    return Ok(queued);
                }
            }
            return Err(Error::ArchiveQueue(format!(
                "{} is queued, but the archiver of spool {} has failed for {}s: {error}. \
                 PostgreSQL keeps its WAL until the archiver recovers; see {}",
                path.display(),
                spool.dir().display(),
                failing.as_secs(),
                spool.log_path().display()
            )));
        }
    }
    Ok(queued)
}

/// How long the archiver has failed, and its last error, if longer than `fail_after` (and it
/// runs).
fn failing_for(spool: &Spool, fail_after: Duration) -> Option<(Duration, String)> {
    let s = spool.status().filter(|_| spool.pusher_pid().is_some())?;
    let failing = (Utc::now() - s.failing_since?).to_std().unwrap_or_default();
    (failing >= fail_after).then(|| (failing, s.last_error.unwrap_or_default()))
}

/// Starts a pusher for `spool`, detached (its own session, output to the spool's log): the
/// current executable with `args` (`archive-daemon …`).
pub fn spawn_pusher(spool: &Spool, args: &[OsString]) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().map_err(io("find the pgsnapfs executable"))?;
    let log_path = spool.log_path();
    // A log over 10 MiB starts again, keeping the previous one.
    if std::fs::metadata(&log_path).is_ok_and(|m| m.len() > 10 << 20) {
        let _ = std::fs::rename(&log_path, log_path.with_extension("log.1"));
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(io(format!("open {}", log_path.display())))?;
    let err = log
        .try_clone()
        .map_err(io(format!("open {}", log_path.display())))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(args)
        .current_dir(spool.dir())
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(err);
    // SAFETY: setsid is async-signal-safe. A session of its own keeps the pusher out of
    // the signals PostgreSQL sends its archiver's process group.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    cmd.spawn()
        .map_err(io("start the archiver (pgsnapfs archive-daemon)"))?;
    Ok(())
}

/// How the pusher runs.
pub struct PusherOptions {
    /// Files pushed at once.
    pub process_max: usize,
    /// Exit after the queue has been empty this long; `None`: run until killed.
    pub idle_exit: Option<Duration>,
}

/// How a pusher ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// Another pusher runs on the spool (its pid).
    AlreadyRunning(Option<u32>),
    /// The queue stayed empty for the idle time.
    Idle,
}

/// Runs the pusher of `spool` until it is idle for `idle_exit` (or forever). `open` opens
/// the repository; a failure to open is retried like a failed push, and reported the same way.
pub fn run_pusher(
    open: impl Fn() -> Result<Repository>,
    spool: &Spool,
    opts: &PusherOptions,
) -> Result<Ended> {
    let Some(_lock) = spool.try_lock()? else {
        return Ok(Ended::AlreadyRunning(spool.pusher_pid()));
    };
    spool.clean_tmp();
    let previous = spool.status();
    let mut status = Status {
        pid: std::process::id(),
        updated: Utc::now(),
        failing_since: previous.as_ref().and_then(|s| s.failing_since),
        last_error: previous.as_ref().and_then(|s| s.last_error.clone()),
        last_error_at: previous.as_ref().and_then(|s| s.last_error_at),
        last_archived: previous.as_ref().and_then(|s| s.last_archived.clone()),
        last_archived_at: previous.as_ref().and_then(|s| s.last_archived_at),
        archived_files: 0,
        archived_bytes: 0,
    };
    spool.write_status(&status)?;
    tracing::info!("archiver started on spool {}", spool.dir().display());
    let mut idle_since = Instant::now();
    let mut failures = 0u32;
    let mut repo = None;
    loop {
        let queue = spool.queued()?;
        let mut error = None;
        if repo.is_none() && (!queue.is_empty() || !spool.drops()?.is_empty()) {
            match open() {
                Ok(r) => repo = Some(r),
                Err(e) => error = Some(format!("cannot open the repository: {e}")),
            }
        }
        if let Some(repo) = &repo {
            error = send_drops(repo, spool).err().map(|e| e.to_string());
        }
        if queue.is_empty() && error.is_none() {
            if status.failing_since.is_some() {
                status.failing_since = None;
                status.updated = Utc::now();
                spool.write_status(&status)?;
            }
            if opts.idle_exit.is_some_and(|d| idle_since.elapsed() >= d) {
                tracing::info!("archiver idle: exiting");
                return Ok(Ended::Idle);
            }
            std::thread::sleep(POLL);
            continue;
        }
        let results = match (&repo, &error) {
            (Some(repo), None) => push_all(repo, spool, &queue, opts.process_max),
            _ => Vec::new(),
        };
        for (q, result) in results {
            match result {
                Ok(outcome) => {
                    tracing::debug!("{}: {outcome:?}", q.name);
                    status.archived_files += 1;
                    status.archived_bytes += q.bytes;
                    status.last_archived = Some(q.name.clone());
                    status.last_archived_at = Some(Utc::now());
                }
                Err(e) => error = Some(format!("{}: {e}", q.name)),
            }
        }
        let now = Utc::now();
        status.updated = now;
        match error {
            Some(e) => {
                tracing::error!("archiving from spool {} failed: {e}", spool.dir().display());
                status.failing_since.get_or_insert(now);
                status.last_error = Some(e);
                status.last_error_at = Some(now);
                spool.write_status(&status)?;
                let until = Instant::now() + backoff(failures);
                while Instant::now() < until && !spool.take_wake() {
                    std::thread::sleep(POLL);
                }
                failures += 1;
            }
            None => {
                status.failing_since = None;
                failures = 0;
                spool.write_status(&status)?;
            }
        }
        idle_since = Instant::now();
    }
}

/// The wait after `failures` consecutive failed rounds: 0.5 s, doubling, at most 10 s.
fn backoff(failures: u32) -> Duration {
    (Duration::from_millis(500) * 2u32.saturating_pow(failures.min(6))).min(MAX_BACKOFF)
}

/// Archives the queued files with `threads` threads, in queue order; stops taking new files
/// after the first failure (the repository is likely down). Returns what was attempted.
fn push_all<'q>(
    repo: &Repository,
    spool: &Spool,
    queue: &'q [Queued],
    threads: usize,
) -> Vec<(&'q Queued, Result<PushOutcome>)> {
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let work = || {
        let mut done = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let Some(q) = queue.get(next.fetch_add(1, Ordering::Relaxed)) else {
                break;
            };
            let result = push_one(repo, spool, q);
            if result.is_err() {
                stop.store(true, Ordering::Relaxed);
            }
            done.push((q, result));
        }
        done
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads.clamp(1, queue.len().max(1)))
            .map(|_| s.spawn(work))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join().unwrap_or_else(|_| {
                    vec![(
                        &queue[0],
                        Err(Error::ArchiveQueue("an archiver thread panicked".into())),
                    )]
                })
            })
            .collect()
    })
}

/// Archives one queued file, then removes it from the spool.
fn push_one(repo: &Repository, spool: &Spool, q: &Queued) -> Result<PushOutcome> {
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(&q.path)
        .map_err(io(format!("stat {}", q.path.display())))?
        .ino();
    let pushed = archive::push(repo, &q.path)?;
    spool.remove(q, ino)?;
    Ok(pushed.outcome)
}

/// Writes the spool's drop markers to the repository, removing each once written.
fn send_drops(repo: &Repository, spool: &Spool) -> Result<()> {
    for (path, marker) in spool.drops()? {
        let sysid = match marker.system_identifier {
            0 => archive::resolve_system(repo, None)?.sysid(),
            s => s,
        };
        let tli = WalFile::parse(&marker.name, DEFAULT_SEG_SIZE).map_or(0, |f| f.tli());
        let json = serde_json::to_vec_pretty(&DropMarker {
            system_identifier: sysid,
            ..marker.clone()
        })
        .expect("marker serializes");
        match repo.put_sealed(&keys::wal_dropped(sysid, tli, &marker.name), &json) {
            Err(StoreError::Backend(BackendError::Conflict { .. })) => {}
            other => other?,
        }
        std::fs::remove_file(&path).map_err(io(format!("remove {}", path.display())))?;
    }
    Ok(())
}

/// The drop markers the repository holds for cluster `sysid`: WAL that asynchronous
/// archiving dropped (`--queue-max`), so recovery cannot pass it.
pub fn dropped(repo: &Repository, sysid: u64) -> Result<Vec<DropMarker>> {
    let mut out = Vec::new();
    for key in repo.backend().list(&keys::wal_dropped_system(sysid))? {
        let bytes = repo.get_sealed(&key)?;
        let marker: DropMarker = serde_json::from_slice(&bytes)
            .map_err(|e| StoreError::corrupt(key.clone(), e.to_string()))?;
        out.push(marker);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// What `archive-status` reports about a spool.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The spool directory.
    pub spool: String,
    /// The running pusher's pid, if one runs.
    pub pusher_pid: Option<u32>,
    /// Files waiting.
    pub queued_files: usize,
    /// Their bytes.
    pub queued_bytes: u64,
    /// The oldest waiting file (the next to go).
    pub oldest_queued: Option<String>,
    /// Drop markers not yet written to the repository.
    pub dropped: Vec<DropMarker>,
    /// The pusher's own status.
    pub status: Option<Status>,
    /// Since when the pusher has been failing.
    pub failing_since: Option<DateTime<Utc>>,
    /// Nothing failing, nothing dropped.
    pub ok: bool,
}

/// The state of a spool and its pusher.
pub fn report(spool: &Spool) -> Result<Report> {
    let queue = spool.queued()?;
    let dropped: Vec<DropMarker> = spool.drops()?.into_iter().map(|(_, m)| m).collect();
    let status = spool.status();
    let failing_since = status.as_ref().and_then(|s| s.failing_since);
    Ok(Report {
        spool: spool.dir().display().to_string(),
        pusher_pid: spool.pusher_pid(),
        queued_files: queue.len(),
        queued_bytes: queue.iter().map(|q| q.bytes).sum(),
        oldest_queued: queue.first().map(|q| q.name.clone()),
        ok: failing_since.is_none() && dropped.is_empty(),
        dropped,
        status,
        failing_since,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_cap() {
        assert_eq!(backoff(0), Duration::from_millis(500));
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(5), MAX_BACKOFF);
        assert_eq!(backoff(100), MAX_BACKOFF);
    }
}
