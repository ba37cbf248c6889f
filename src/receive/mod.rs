//! `pgsnapfs wal-receive`: streams WAL from a server with the physical replication protocol
//! into the repository, for a recovery point of seconds (or zero, as a synchronous standby)
//! instead of a whole segment.
//!
//! The segment being received is kept in memory; each flush stores the bytes not stored yet as
//! one more piece under `walstream/<system>/<timeline>/<segment>/` (see [`piece`] and
//! docs/repository-format.md). A completed segment goes through [`archive::push`], so it is
//! stored exactly as `wal-push` stores it, and its pieces are then deleted. The
//! position reported to the server as flushed is always one the repository holds durably:
//! with `--synchronous` that makes `synchronous_commit` wait for the repository.
//!
//! The receiver keeps no state of its own: after a restart or a lost connection it starts
//! again at the beginning of the newest segment the repository holds partially (or after the
//! newest complete one), so it never loses its place.

mod conn;
pub mod piece;
mod segment;

use crate::archive::{self, System};
use crate::catalog::{keys, SystemId};
use crate::error::{io, Error, Result};
use crate::pg::history::{parse_history, timeline_of};
use crate::pg::lsn::Lsn;
use crate::pg::wal::{segment_of, WalFile};
use crate::server::ConnOpts;
use crate::store::{BackendError, Repository, StoreError};
use conn::{ReplConn, StreamMsg};
pub use segment::Segment;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How often the receiver tells the server where it is when nothing else happens (the
/// server's wal_receiver_timeout is 60 s by default).
const STATUS_INTERVAL: Duration = Duration::from_secs(10);
/// How long to wait before connecting again after a failure.
const RETRY_DELAY: Duration = Duration::from_secs(1);
/// After this many pieces of one segment, the next flush stores the whole received part as
/// one piece and deletes the others, so readers and the final clean-up stay cheap.
const MAX_PIECES: usize = 64;

/// What `wal-receive` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where the server is.
    pub conn: ConnOpts,
    /// The physical replication slot to stream from.
    pub slot: Option<String>,
    /// Create the slot if it does not exist.
    pub create_slot: bool,
    /// The longest a received byte waits before it is stored.
    pub flush_interval: Duration,
    /// Store at every flush the server could wait for, and only then report it flushed.
    pub synchronous: bool,
    /// The application_name the server sees (for synchronous_standby_names).
    pub application_name: String,
    /// When the server no longer has the WAL that follows the repository's, start at the
    /// server's current position instead of failing.
    pub accept_gap: bool,
}

/// Whether the server refused to stream because it no longer has the WAL asked for
/// ("requested WAL segment … has already been removed"). Its SQLSTATE comes from errno and is
/// 58P01 (undefined_file) only when a read failed; when the server knew beforehand it is often
/// XX000, so the message is matched too.
fn wal_removed(e: &conn::QueryError) -> bool {
    e.code == "58P01" || e.message.contains("has already been removed")
}

/// Set by SIGTERM or SIGINT: store what was received, then return.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// Makes SIGTERM (systemd's stop) and SIGINT interrupt blocking reads and end [`run`] cleanly.
fn catch_stop_signals() {
    // SAFETY: the handler only stores to an atomic; no SA_RESTART, so a blocked read returns
    // EINTR and the loop sees the flag at once.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_stop as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGTERM, &sa, std::ptr::null_mut());
        libc::sigaction(libc::SIGINT, &sa, std::ptr::null_mut());
    }
}

fn stopping() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// Streams until the process is stopped (SIGTERM or SIGINT: what was received is stored
/// first, then it returns Ok): a lost connection or a server restart is retried
/// every second; only what cannot get better by retrying (a repository of another cluster,
/// a conflicting segment, damage) ends it with an error.
pub fn run(repo: &Repository, opts: &Options) -> Result<()> {
    let cfg = opts.conn.settings()?;
    catch_stop_signals();
    let spool = std::env::temp_dir().join(format!("pgsnapfs-receive-{}", std::process::id()));
    let mut r = Receiver {
        repo,
        opts,
        spool,
        sysid: 0,
        seg: None,
        pieces: 0,
        flushed: 0,
        last_flush: Instant::now(),
        skip_gap: false,
    };
    loop {
        let outcome = r.session(&cfg);
        // What arrived before the connection ended is kept, whatever ended it.
        r.flush()?;
        if stopping() {
            tracing::info!("stopped by a signal; everything received is stored");
            return Ok(());
        }
        match outcome {
            Ok(()) => tracing::info!("the server ended replication; connecting again"),
            Err(
                e @ (Error::Store(_)
                | Error::WalConflict { .. }
                | Error::BadInput(_)
                | Error::NotFound(_)),
            ) => return Err(e),
            Err(e) => tracing::warn!("{e}; connecting again in {RETRY_DELAY:?}"),
        }
        std::thread::sleep(RETRY_DELAY);
    }
}

struct Receiver<'a> {
    repo: &'a Repository,
    opts: &'a Options,
    /// Where completed segments are laid out for [`archive::push`].
    spool: PathBuf,
    sysid: u64,
    /// The segment being received.
    seg: Option<Segment>,
    /// How many pieces of it this receiver has stored.
    pieces: usize,
    /// The position up to which the repository holds the WAL durably.
    flushed: u64,
    last_flush: Instant,
    /// The server lacked the WAL after the repository's and `--accept-gap` is given: the next
    /// session starts at the server's current position.
    skip_gap: bool,
}

impl Receiver<'_> {
    /// One connection: identify the server, find where to start, stream, follow timelines.
    fn session(&mut self, cfg: &tokio_postgres::Config) -> Result<()> {
        let mut c = ReplConn::connect(cfg, &self.opts.application_name)?;
        let answer = |what: &str, r: std::result::Result<_, conn::QueryError>| {
            r.map_err(|e| Error::BadAnswer(format!("{what}: {}", e.message)))
        };
        let id = answer("IDENTIFY_SYSTEM", c.query("IDENTIFY_SYSTEM")?)?;
        let field = |i: usize| id.first().and_then(|r| r.get(i).cloned().flatten());
        let bad = |what: &str| Error::BadAnswer(format!("IDENTIFY_SYSTEM gave no valid {what}"));
        let sysid: u64 = field(0)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("system identifier"))?;
        let server_tli: u32 = field(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("timeline"))?;
        let xlogpos: Lsn = field(2)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("position"))?;
        let show = |c: &mut ReplConn, name: &str| -> Result<String> {
            let rows = answer(name, c.query(&format!("SHOW {name}"))?)?;
            rows.first()
                .and_then(|r| r.first().cloned().flatten())
                .ok_or_else(|| Error::BadAnswer(format!("SHOW {name} gave nothing")))
        };
        let seg_size = parse_size(&show(&mut c, "wal_segment_size")?)
            .ok_or_else(|| bad("wal_segment_size"))?;
        let major = show(&mut c, "server_version_num")?
            .parse::<u32>()
            .map_or(0, |v| v / 10000);
        self.register(sysid, major, seg_size)?;
        self.sysid = sysid;

        if let (Some(slot), true) = (&self.opts.slot, self.opts.create_slot) {
            let sql = format!(
                "CREATE_REPLICATION_SLOT {} PHYSICAL RESERVE_WAL",
                ident(slot)
            );
            match c.query(&sql)? {
                Ok(_) => tracing::info!("created replication slot {slot}"),
                Err(e) if e.code == "42710" => {}
                Err(e) => return Err(Error::BadAnswer(format!("{sql}: {}", e.message))),
            }
        }
        // The server's history file is archived as it is (it names every ancestor).
        let history = match server_tli {
            1 => Vec::new(),
            tli => self.archive_history(&mut c, tli)?,
        };

        let resume = match std::mem::take(&mut self.skip_gap) {
            true => None,
            false => resume_point(self.repo, sysid, seg_size)?,
        };
        let (tli, segno) = match resume {
            Some((tli, segno)) => (
                timeline_of(Lsn(segno * seg_size), server_tli, &history).max(tli.min(server_tli)),
                segno,
            ),
            None => (server_tli, segment_of(xlogpos, seg_size)),
        };
        // Only a start the repository chose can be a gap in the archive; one the server chose
        // (nothing stored yet, or a new timeline) is retried.
        let mut resumed = resume.is_some();
        // The server cannot have removed its current segment or a later one: that answer is a
        // race with the segment's creation (seen on a standby), retried.
        let server_segno = segment_of(xlogpos, seg_size);
        let mut seg = Segment::new(tli, segno, seg_size);
        loop {
            let start = Lsn(seg.end());
            tracing::info!("streaming timeline {} from {start}", seg.tli);
            let slot = match &self.opts.slot {
                Some(s) => format!("SLOT {} ", ident(s)),
                None => String::new(),
            };
            let sql = format!(
                "START_REPLICATION {slot}PHYSICAL {start} TIMELINE {}",
                seg.tli
            );
            let started = match c.start_replication(&sql)? {
                Err(e) if resumed && segno < server_segno && wal_removed(&e) => {
                    Err(self.wal_gone(start, seg.tli, &e.message))
                }
                other => other.map_err(|e| Error::BadAnswer(format!("{sql}: {}", e.message))),
            };
            started?;
            // Stored again from here: pieces overlap those of an earlier run, harmlessly.
            self.flushed = seg.end();
            self.pieces = 0;
            let tli = seg.tli;
            self.seg = Some(seg);
            match self.stream(&mut c)? {
                Some(e) if resumed && segno < server_segno && wal_removed(&e) => {
                    return Err(self.wal_gone(start, tli, &e.message))
                }
                Some(e) => {
                    return Err(Error::BadAnswer(format!(
                        "{} ended replication: {}",
                        c.target, e.message
                    )))
                }
                None => {}
            }
            let Some((next_tli, next_pos)) = c.end_stream()? else {
                return Ok(());
            };
            resumed = false;
            // The old timeline's last segment keeps its pieces: it ends at the switch.
            self.flush()?;
            self.archive_history(&mut c, next_tli)?;
            tracing::info!("timeline {next_tli} starts at {}", Lsn(next_pos));
            seg = Segment::new(next_tli, segment_of(Lsn(next_pos), seg_size), seg_size);
        }
    }

    /// The server no longer has the WAL at `start`, where the repository's ends: a gap in the
    /// archive. Fails (exit 4) unless `--accept-gap` allows starting at the server's position.
    fn wal_gone(&mut self, start: Lsn, tli: u32, message: &str) -> Error {
        if self.opts.accept_gap {
            tracing::error!(
                "the server no longer has WAL from {start} on timeline {tli} ({message}): \
                 starting at its current position (--accept-gap); the WAL between is missing \
                 from the archive, take a new backup"
            );
            self.skip_gap = true;
            return Error::BadAnswer("starting again at the server's current position".into());
        }
        Error::NotFound(format!(
            "the server no longer has the WAL that follows what the repository holds: \
             streaming would resume at {start} on timeline {tli}, and the server says \
             \"{message}\". That WAL is lost to the archive, so recovery cannot pass {start}. \
             Take a new backup (pgsnapfs backup), then run wal-receive once with --accept-gap \
             to start at the server's current position; stream from a replication slot \
             (--slot, --create-slot) so the server keeps the WAL while the receiver is down"
        ))
    }

    /// Receives until the server ends the stream (`None`), ends it with an error (that
    /// error), or the connection fails.
    fn stream(&mut self, c: &mut ReplConn) -> Result<Option<conn::QueryError>> {
        let mut last_status = Instant::now();
        loop {
            if stopping() {
                return Err(Error::Interrupted(libc::SIGTERM));
            }
            let wait = if self.dirty() {
                self.opts
                    .flush_interval
                    .saturating_sub(self.last_flush.elapsed())
            } else {
                STATUS_INTERVAL
            };
            let mut reply = false;
            match c.next_stream(wait.min(STATUS_INTERVAL))? {
                Some(StreamMsg::Data { start, bytes }) => self.receive(start, &bytes)?,
                Some(StreamMsg::Keepalive { reply: r }) => reply = r,
                Some(StreamMsg::End) => return Ok(None),
                Some(StreamMsg::Failed(e)) => return Ok(Some(e)),
                None => {}
            }
            let due = self.dirty()
                && ((self.opts.synchronous && !c.has_buffered())
                    || self.last_flush.elapsed() >= self.opts.flush_interval);
            if due {
                self.flush()?;
                reply = true;
            }
            if reply || last_status.elapsed() >= STATUS_INTERVAL {
                let write = self.seg.as_ref().map_or(self.flushed, Segment::end);
                c.status(write, self.flushed)?;
                last_status = Instant::now();
            }
        }
    }

    /// Whether received bytes are not stored yet.
    fn dirty(&self) -> bool {
        self.seg.as_ref().is_some_and(|s| s.end() > self.flushed)
    }

    /// Takes streamed bytes; each segment they complete is archived.
    fn receive(&mut self, mut pos: u64, mut bytes: &[u8]) -> Result<()> {
        while !bytes.is_empty() {
            let Some(seg) = self.seg.as_mut() else {
                return Ok(());
            };
            let taken = seg.append(pos, bytes).map_err(|d| {
                Error::BadAnswer(format!(
                    "streamed WAL at {} where {} was expected",
                    Lsn(d.got),
                    Lsn(d.expected)
                ))
            })?;
            pos += taken as u64;
            bytes = &bytes[taken..];
            if seg.is_full() {
                let next = seg.next();
                self.complete()?;
                self.seg = Some(next);
            }
        }
        Ok(())
    }

    /// Archives the full current segment as `wal-push` does and deletes its pieces.
    fn complete(&mut self) -> Result<()> {
        let Some(seg) = &self.seg else { return Ok(()) };
        let dir = self.spool.join("pg_wal");
        std::fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
        let path = dir.join(seg.name());
        std::fs::write(&path, &seg.data).map_err(io(format!("write {}", path.display())))?;
        let pushed = archive::push(self.repo, &path);
        let _ = std::fs::remove_file(&path);
        let pushed = pushed?;
        tracing::info!("{} archived ({:?})", pushed.name, pushed.outcome);
        self.delete_pieces(seg, None)?;
        self.flushed = seg.end();
        self.pieces = 0;
        self.last_flush = Instant::now();
        Ok(())
    }

    /// Deletes the stored pieces of `seg`, but `keep`.
    fn delete_pieces(&self, seg: &Segment, keep: Option<&str>) -> Result<()> {
        let backend = self.repo.backend();
        let prefix = keys::wal_stream(self.sysid, seg.tli, &seg.name());
        for key in backend.list(&prefix).map_err(StoreError::from)? {
            if Some(key.as_str()) != keep {
                match backend.delete(&key) {
                    Err(e) if !e.is_not_found() => return Err(StoreError::from(e).into()),
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Stores what was received since the last flush as one more piece of the segment (or,
    /// after [`MAX_PIECES`], all of it as one piece in place of the others).
    fn flush(&mut self) -> Result<()> {
        if !self.dirty() {
            return Ok(());
        }
        let Some(seg) = &self.seg else { return Ok(()) };
        let whole = self.pieces >= MAX_PIECES;
        let from = match whole {
            true => 0,
            false => (self.flushed - seg.start()) as usize,
        };
        let key = piece::key(
            self.sysid,
            seg.tli,
            &seg.name(),
            from as u32,
            seg.data.len() as u32,
        );
        let started = Instant::now();
        match self.repo.put_sealed(&key, &seg.data[from..]) {
            // The same range stored by an earlier run: the same bytes.
            Err(StoreError::Backend(BackendError::Conflict { .. })) => {}
            other => other?,
        }
        if whole {
            self.delete_pieces(seg, Some(&key))?;
            self.pieces = 0;
        }
        self.pieces += 1;
        self.flushed = seg.end();
        self.last_flush = Instant::now();
        tracing::debug!("stored {key} in {:?}", started.elapsed());
        Ok(())
    }

    /// Fetches and archives the history file of timeline `tli`; returns its entries.
    fn archive_history(
        &mut self,
        c: &mut ReplConn,
        tli: u32,
    ) -> Result<Vec<crate::pg::history::HistoryEntry>> {
        let rows = c
            .query(&format!("TIMELINE_HISTORY {tli}"))?
            .map_err(|e| Error::BadAnswer(format!("TIMELINE_HISTORY {tli}: {}", e.message)))?;
        let (Some(name), Some(content)) = (
            rows.first().and_then(|r| r.first().cloned().flatten()),
            rows.first().and_then(|r| r.get(1).cloned().flatten()),
        ) else {
            return Err(Error::BadAnswer(format!(
                "TIMELINE_HISTORY {tli} gave nothing"
            )));
        };
        let dir = self.spool.join("pg_wal");
        std::fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
        let path = dir.join(&name);
        std::fs::write(&path, &content).map_err(io(format!("write {}", path.display())))?;
        let pushed = archive::push_for(self.repo, &path, Some(self.sysid));
        let _ = std::fs::remove_file(&path);
        pushed?;
        Ok(parse_history(&content)?)
    }

    /// Records the cluster, as `wal-push` would, so streamed pieces are found before the
    /// first complete segment; refuses a repository of other clusters.
    fn register(&self, sysid: u64, major: u32, seg_size: u64) -> Result<()> {
        if archive::load_system(self.repo, sysid)?.is_some() {
            return Ok(());
        }
        let known = archive::systems(self.repo)?;
        // Registered since the first look (a backup starting at the same time).
        if known.iter().any(|s| s.sysid() == sysid) {
            return Ok(());
        }
        if !known.is_empty() {
            return Err(Error::BadInput(format!(
                "the server has system identifier {sysid}, but this repository holds other \
                 clusters; run `pgsnapfs backup` of this cluster once to add it, or check --repo"
            )));
        }
        archive::register_system(
            self.repo,
            &System {
                system_identifier: SystemId(sysid),
                pg_major: major,
                wal_segment_size: seg_size,
                registered: chrono::Utc::now(),
            },
        )
    }
}

/// Where streaming resumes: the newest segment the repository holds, at its start if it is
/// partial, after it if it is complete. `None` for a cluster with no WAL yet.
fn resume_point(repo: &Repository, sysid: u64, seg_size: u64) -> Result<Option<(u32, u64)>> {
    let mut newest: Option<(u64, u32, bool)> = None;
    let full = crate::catalog::wal::files(repo, sysid)?
        .into_iter()
        .map(|o| (o.name, true));
    let partial = repo
        .backend()
        .list(&keys::wal_stream_system(sysid))
        .map_err(StoreError::from)?
        .into_iter()
        .filter_map(|k| Some((k.rsplit('/').nth(1)?.to_string(), false)));
    for (name, complete) in full.chain(partial) {
        if let Some(WalFile::Segment { tli, segno }) = WalFile::parse(&name, seg_size) {
            newest = newest.max(Some((segno, tli, complete)));
        }
    }
    Ok(newest.map(|(segno, tli, complete)| (tli, segno + u64::from(complete))))
}

/// A segment `wal-receive` holds in pieces and the archive does not hold (yet).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Streamed {
    /// The timeline it is streamed from.
    pub timeline: u32,
    /// The segment's name.
    pub segment: String,
    /// How many pieces it is stored as.
    pub pieces: usize,
    /// The position up to which its pieces hold WAL without a gap from the segment's start.
    pub through: Lsn,
}

/// The segments of cluster `sysid` held only as streamed pieces (those of segments
/// `archived` says are archived are leftovers, which `expire` removes), by timeline and
/// segment; read from the keys alone.
pub fn streamed(
    repo: &Repository,
    sysid: u64,
    seg_size: u64,
    archived: impl Fn(u32, u64) -> bool,
) -> Result<Vec<Streamed>> {
    let mut by_segment: std::collections::BTreeMap<(u32, u64, String), Vec<(u32, u32)>> =
        Default::default();
    for key in repo
        .backend()
        .list(&keys::wal_stream_system(sysid))
        .map_err(StoreError::from)?
    {
        let mut parts = key.rsplit('/');
        let (Some(range), Some(name)) = (parts.next().and_then(piece::parse), parts.next()) else {
            continue;
        };
        if let Some(WalFile::Segment { tli, segno }) = WalFile::parse(name, seg_size) {
            if !archived(tli, segno) {
                by_segment
                    .entry((tli, segno, name.to_string()))
                    .or_default()
                    .push(range);
            }
        }
    }
    Ok(by_segment
        .into_iter()
        .map(|((timeline, segno, segment), ranges)| {
            let pieces = ranges.len();
            let (_, len) = piece::assemble(ranges);
            Streamed {
                timeline,
                segment,
                pieces,
                through: Lsn(segno * seg_size + u64::from(len)),
            }
        })
        .collect())
}

/// A replication-command identifier, quoted.
fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// `SHOW wal_segment_size` ("16MB", "1GB") in bytes.
fn parse_size(s: &str) -> Option<u64> {
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: u64 = s[..digits].parse().ok()?;
    let unit = match s[digits..].trim() {
        "" | "B" => 1,
        "kB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        _ => return None,
    };
    Some(n * unit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::backend::memory::MemoryBackend;
    use std::sync::Arc;

    #[test]
    fn sizes_and_identifiers() {
        assert_eq!(parse_size("16MB"), Some(16 << 20));
        assert_eq!(parse_size("1GB"), Some(1 << 30));
        assert_eq!(parse_size("16 parsecs"), None);
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        let err = |code: &str, message: &str| conn::QueryError {
            code: code.into(),
            message: message.into(),
        };
        let gone = "ERROR: requested WAL segment 000000010000000000000001 has already been removed";
        assert!(wal_removed(&err("XX000", gone)));
        assert!(wal_removed(&err("58P01", "ERROR: could not open file")));
        assert!(!wal_removed(&err("XX000", "ERROR: out of memory")));
    }

    #[test]
    fn resumes_at_the_newest_partial_or_after_the_newest_segment() {
        let repo = Repository::init(Arc::new(MemoryBackend::default()), 65536, 3).unwrap();
        let seg = 16 << 20;
        assert_eq!(resume_point(&repo, 7, seg).unwrap(), None);
        let put = |k: String| repo.put_sealed(&k, b"w").unwrap();
        put(keys::wal_file(7, 1, "000000010000000000000003"));
        put(keys::wal_file(7, 1, "00000002.history"));
        assert_eq!(resume_point(&repo, 7, seg).unwrap(), Some((1, 4)));
        put(piece::key(7, 1, "000000010000000000000004", 0, 8));
        assert_eq!(resume_point(&repo, 7, seg).unwrap(), Some((1, 4)));
        put(piece::key(7, 2, "000000020000000000000004", 0, 8));
        assert_eq!(resume_point(&repo, 7, seg).unwrap(), Some((2, 4)));
        put(keys::wal_file(7, 2, "000000020000000000000004"));
        assert_eq!(resume_point(&repo, 7, seg).unwrap(), Some((2, 5)));
        put(piece::key(7, 2, "000000020000000000000005", 0, 8));
        put(piece::key(7, 2, "000000020000000000000005", 8, 20));
        put(piece::key(7, 2, "000000020000000000000005", 30, 40));
        let archived = |tli, segno| (tli, segno) == (2, 4);
        let s = streamed(&repo, 7, seg, archived).unwrap();
        let got: Vec<_> = s
            .iter()
            .map(|s| (s.timeline, s.pieces, s.through))
            .collect();
        // Segment 4 of timeline 2 is archived; a gap in segment 5 ends what it holds.
        assert_eq!(got, [(1, 1, Lsn(4 * seg + 8)), (2, 3, Lsn(5 * seg + 20))]);
    }
}
