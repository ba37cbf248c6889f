//! `verify`: an automated restore test. Mounts a point in time, starts PostgreSQL on it,
//! reads every table, checks indexes with amcheck where it can, runs the user's assertions,
//! and tears everything down. Relations whose chunks an earlier passing run read are skipped
//! (`verified`); the record of a passing run is the only thing written to the repository.
//!
//! The view is promoted at its target so amcheck can be installed; its writes go to a
//! throw-away copy-on-write layer, and archiving is off, so promotion touches nothing real.

use crate::error::{io, Error, Result};
use crate::passphrase;
use crate::pg::target::TargetAction;
use crate::pitr::{Goal, Plan, Point};
use crate::server::{ConnOpts, Server};
use crate::session::lifecycle::Signals;
use crate::session::plan::Latest;
use crate::session::{self, CacheOptions, Request, Session, ViewSettings};
use crate::status::{Recorder, Run, Watched};
use crate::store::backend::RequestCounts;
use crate::store::diskcache::CacheCounts;
use crate::store::{Repository, Verification};
use crate::verified::{self, Decision, Digests, Record, Sizes};
use crate::view::Owner;
use serde::Serialize;
use std::collections::hash_map::{Entry, HashMap};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// A throw-away server on a private view of a point, promoted there: what `verify` and
/// `dump` both start.
#[derive(Clone)]
pub struct ViewServer {
    /// The repository's location as given, for the server's restore_command.
    pub repo_spec: String,
    /// Where the server's `wal-fetch` finds the passphrase of an encrypted repository.
    pub passphrase: passphrase::Source,
    /// The point; naming nothing is the newest backup as it was taken.
    pub goal: Goal,
    /// The cluster, when the repository holds several.
    pub system: Option<u64>,
    /// The memory and disk caches of the mount the server runs on.
    pub cache: CacheOptions,
    /// The operating-system user the server runs as, and the database role used.
    pub user: String,
    /// The directory of the server's programs (`postgres`, `pg_ctl`) for the backup's major
    /// version; `None` means Debian's `/usr/lib/postgresql/MAJOR/bin`.
    pub pg_bin: Option<PathBuf>,
}

/// Mounts `server`'s view at `work`'s data directory for `command`, promoted at its target
/// (which releases the locks of a transaction still open there), and returns its plan.
pub(crate) fn open_view(
    repo: Repository,
    command: &'static str,
    server: &ViewServer,
    work: &Workspace,
) -> Result<(Session, Plan)> {
    let session = Session::open(
        repo,
        Request {
            command,
            repo_spec: server.repo_spec.clone(),
            passphrase: server.passphrase.clone(),
            goal: server.goal.clone(),
            latest: Latest::NewestBackup,
            system: server.system,
            mountpoint: work.data(),
            scratch: Some(work.dir.join("scratch")),
            owner: server.user.clone(),
            view: ViewSettings {
                action: TargetAction::Promote,
                shared_buffers: "256MB".into(),
                // Only this process (root) and the server's user can reach the private
                // socket: trust it, whatever pg_hba.conf said (peer would refuse root as the
                // server's role).
                files: vec![("pg_hba.conf".into(), b"local all all trust\n".to_vec())],
                tablespaces: crate::tblspc::Policy::Cover,
                durable: false,
                standby: false,
            },
            cache: server.cache.clone(),
            hydrate: None,
        },
    )?;
    let plan = match session.view() {
        Some(view) => view.plan.clone(),
        None => {
            return Err(Error::Mount(format!(
                "{command} mounted the catalogue, not a view"
            )))
        }
    };
    Ok((session, plan))
}

/// What to test and how: the options of `pgsnapfs verify`.
pub struct VerifyOptions {
    /// The server and the point it tests.
    pub server: ViewServer,
    /// SQL assertions: each statement must return one row holding true.
    pub assertions: Vec<Assertion>,
    /// Read every relation, whatever earlier verify runs recorded.
    pub full: bool,
    /// Told the plan, then each relation as it is checked.
    pub progress: Box<dyn Fn(Progress)>,
}

/// What the checks will do, as planned before they start.
#[derive(Debug, Default, Clone)]
pub struct Planned {
    /// Tables (heap, materialized view, TOAST) to read.
    pub tables: usize,
    /// B-tree indexes to check with amcheck.
    pub indexes: usize,
    /// The main-fork size of the relations to read, in bytes.
    pub bytes: u64,
    /// Tables skipped: their chunks were verified by an earlier run.
    pub skipped_tables: usize,
    /// Indexes skipped likewise.
    pub skipped_indexes: usize,
    /// The main-fork size of the skipped relations, in bytes.
    pub skipped_bytes: u64,
}

/// How the checks are going, for a progress bar: the plan once, then each relation read.
pub enum Progress<'a> {
    /// The relations are listed and each is to be read or skipped; nothing read yet.
    Planned(&'a Planned),
    /// A relation is being read (a big table can take a while).
    Checking {
        /// Its name, as `regclass` prints it (schema-qualified where needed).
        relation: &'a str,
    },
    /// The relation announced by `Checking` is done, whether it passed or not.
    Checked {
        /// Whether it was an index.
        index: bool,
        /// Its main-fork size in bytes.
        bytes: u64,
    },
}

/// A relation not read again: its chunks were verified in `verified_in`.
#[derive(Debug, Serialize)]
pub struct Skipped {
    /// The database holding it.
    pub database: String,
    /// Its name, as `regclass` prints it.
    pub relation: String,
    /// The id of the backup whose verify read these same chunks.
    pub verified_in: String,
}

/// The earlier verification this run builds on, and this backup's relation digests.
struct Incremental {
    previous: Option<Record>,
    digests: Digests,
    /// The relations' main-fork sizes as stored.
    sizes: Sizes,
}

/// How long each phase of a verify took, in seconds (to the millisecond); a phase not
/// reached stays 0.
#[derive(Debug, Default, Serialize)]
pub struct Phases {
    /// From the start of the run until the view is mounted (planning and digests included).
    pub mount_s: f64,
    /// Starting the server (`pg_ctl start`), until it accepts connections.
    pub start_s: f64,
    /// Recovery, until it ends and the server is promoted.
    pub recovery_s: f64,
    /// Reading the tables, checking the indexes and running the assertions.
    pub checks_s: f64,
}

/// The outcome of a verify, printed as text or (with `--json`) as this JSON.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// The id of the backup tested.
    pub backup: String,
    /// Whether the server started, recovered and passed every check and assertion:
    /// `problems` is empty.
    pub ok: bool,
    /// How long each phase took.
    pub phases: Phases,
    /// Databases that allow connections, all of which were checked.
    pub databases: usize,
    /// Tables read (amcheck's `verify_heapam` where available, else `count(*)`), passing
    /// or not.
    pub tables: usize,
    /// B-tree indexes checked with amcheck's `bt_index_check`, passing or not.
    pub indexes_checked: usize,
    /// Whether amcheck could be installed in every database with relations to read; where
    /// not, that database's indexes are not checked and its tables only read.
    pub amcheck: bool,
    /// Assertions run, whatever their result.
    pub assertions: usize,
    /// Whether every relation was read (`--full`, or nothing verified before).
    pub full: bool,
    /// The backup whose verification record this run built on.
    pub since: Option<String>,
    /// The main-fork size of the relations read, in bytes.
    pub bytes_read: u64,
    /// Tables not read again (see `skipped`).
    pub tables_skipped: usize,
    /// Indexes not checked again (see `skipped`).
    pub indexes_skipped: usize,
    /// The main-fork size of the relations not read again, in bytes.
    pub bytes_skipped: u64,
    /// Relations not read again, and the backup in which each was verified.
    pub skipped: Vec<Skipped>,
    /// The problems include damaged data (a relation unreadable or failing amcheck).
    pub corrupt: bool,
    /// Whether this run's result was recorded for the next incremental verify.
    pub recorded: bool,
    /// What the operator should know that is not a failure, one sentence each.
    pub notes: Vec<String>,
    /// Each failure (a server that did not start, an unreadable table, an amcheck finding,
    /// an assertion not true), one sentence each.
    pub problems: Vec<String>,
    /// Requests sent to an S3 repository.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests: Option<RequestCounts>,
    /// Chunks served from (and missing in) the local disk cache.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_cache: Option<CacheCounts>,
}

/// Where the time goes, for `-vv`: the seconds since `since` (the start of the run, or of
/// the checks) at each step the phases do not show.
fn debug_since(since: Instant, step: &str) {
    tracing::debug!(s = secs(since), "verify: {step}");
}

fn secs(since: Instant) -> f64 {
    (since.elapsed().as_secs_f64() * 1000.0).round() / 1000.0
}

/// The server binaries for a major: the ones given, or Debian's for that major.
pub(crate) fn pg_bin(given: Option<&Path>, major: u32) -> Result<PathBuf> {
    let dir = given
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(format!("/usr/lib/postgresql/{major}/bin")));
    let out = Command::new(dir.join("postgres"))
        .arg("--version")
        .output()
        .map_err(|e| {
            Error::BadInput(format!(
                "no PostgreSQL {major} server in {} ({e}); pass --pg-bin",
                dir.display()
            ))
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let found: Option<u32> = text
        .split_whitespace()
        .last()
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse().ok());
    if found != Some(major) {
        return Err(Error::BadInput(format!(
            "the backup is of PostgreSQL {major}, but {} is {}; pass --pg-bin with PostgreSQL {major} binaries",
            dir.display(),
            text.trim()
        )));
    }
    Ok(dir)
}

pub(crate) fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(io("find a free port"))?;
    Ok(l.local_addr().map_err(io("find a free port"))?.port())
}

/// How to run the test server: its programs, its user (name and ids) when we are root and run
/// it as someone else, what stops it on a signal, and the host directories it runs with
/// covered (the view's `covers`).
pub(crate) struct Launch<'a> {
    pub(crate) bin: &'a Path,
    pub(crate) user: Option<(&'a str, Owner)>,
    pub(crate) interrupt: &'a Arc<Interrupt>,
    pub(crate) covers: &'a [crate::tblspc::Cover],
}

/// The test server: a postmaster run by this process, as the server's user when we are root
/// (setpriv execs it, so the child is the postmaster itself), writing its output to `log`.
/// Knowing the postmaster's process lets verify see it start or die at once, and stop it
/// without pg_ctl's tenth-of-a-second polling. Dropping it stops the server (immediate
/// shutdown) and waits until it has exited, so that nothing holds the view's files.
pub(crate) struct Postmaster {
    child: Child,
    /// The child has been waited for: its process id may belong to someone else now.
    reaped: bool,
    interrupt: Arc<Interrupt>,
}

/// How a server start ended.
pub(crate) enum Started {
    /// It accepts connections (a hot standby during recovery, or a primary).
    Ready,
    /// It exited first.
    Exited,
    /// It was still starting at the deadline.
    TimedOut,
}

impl Postmaster {
    /// Starts the server, as `user` (name and ids) when given.
    pub(crate) fn start(
        launch: &Launch,
        work: &Workspace,
        port: u16,
        log: &Path,
    ) -> Result<Postmaster> {
        let Launch {
            bin,
            user,
            interrupt,
            covers,
        } = launch;
        interrupt.check()?;
        let out = std::fs::File::create(log).map_err(io(format!("create {}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(io(format!("open {}", log.display())))?;
        let postgres = bin.join("postgres");
        let mut cmd = match user {
            Some((name, o)) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={}", o.uid))
                    .arg(format!("--regid={}", o.gid))
                    .args(["--init-groups", "--"])
                    .arg(&postgres);
                // As runuser sets them: the server's restore_command (wal-fetch) finds the
                // user's own files, such as S3 credentials in ~/.aws.
                c.env("USER", name).env("LOGNAME", name);
                match home_of(o.uid) {
                    Some(home) => c.env("HOME", home),
                    None => c.env_remove("HOME"),
                };
                c
            }
            None => Command::new(&postgres),
        };
        cmd.arg("-D")
            .arg(work.data())
            .args(["-p", &port.to_string(), "-k"])
            .arg(work.socket())
            .args(["-c", "listen_addresses="])
            // The server's user may not reach our working directory.
            .current_dir(&work.dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // As pg_ctl does: a ^C meant for verify does not reach the server.
            .process_group(0);
        crate::namespace::isolate(&mut cmd, covers)?;
        let how = match covers.is_empty() {
            true => "",
            // unshare and mount need CAP_SYS_ADMIN, which a container may withhold from root.
            false => " in a mount namespace of its own, its tablespace locations covered",
        };
        let child = cmd
            .spawn()
            .map_err(io(format!("start {}{how}", postgres.display())))?;
        let postmaster = Postmaster {
            child,
            reaped: false,
            interrupt: Arc::clone(interrupt),
        };
        interrupt.watch_server(postmaster.child.id());
        Ok(postmaster)
    }

    /// Whether the server has exited (it is then reaped, and no longer signalled).
    fn exited(&mut self) -> Result<bool> {
        let mut server = self.interrupt.server();
        let done = self
            .child
            .try_wait()
            .map_err(io("wait for the server"))?
            .is_some();
        if done {
            *server = None;
            self.reaped = true;
        }
        Ok(done)
    }

    /// Waits until the server accepts connections, as its pid file in `data` says.
    pub(crate) fn wait_ready(&mut self, data: &Path, deadline: Instant) -> Result<Started> {
        let pid_file = data.join("postmaster.pid");
        loop {
            if self.exited()? {
                return Ok(Started::Exited);
            }
            // Absent or half-written while the server starts: look again.
            let text = std::fs::read_to_string(&pid_file).unwrap_or_default();
            if accepts_connections(&text, self.child.id()) {
                return Ok(Started::Ready);
            }
            if Instant::now() > deadline {
                return Ok(Started::TimedOut);
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Postmaster {
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        // Forgotten by the signal watcher before it is reaped: its id is never reused under it.
        *self.interrupt.server() = None;
        stop_server(self.child.id());
        let _ = self.child.wait();
    }
}

/// Stops the server `pid` at once (immediate shutdown). Callers make sure it is their child,
/// not yet waited for, so the id is still its.
fn stop_server(pid: u32) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: a signal to a process id the caller owns (see above).
        unsafe { libc::kill(pid, libc::SIGQUIT) };
    }
}

/// What SIGINT or SIGTERM does to a running verify: the test server stops at once, so its
/// recovery or queries fail, and verify unwinds through its usual teardown (server reaped,
/// view unmounted, scratch removed, nothing recorded) instead of leaving them behind.
#[derive(Default)]
pub(crate) struct Interrupt {
    /// The signal's number, 0 until one arrives.
    signal: AtomicI32,
    /// The test server while it runs and is not yet reaped.
    running: Mutex<Option<u32>>,
}

impl Interrupt {
    /// Takes `signals` (blocked in every thread since the command started) on a thread of its
    /// own for the rest of the run.
    pub(crate) fn listen(signals: Signals) -> Arc<Interrupt> {
        let interrupt = Arc::new(Interrupt::default());
        let watcher = interrupt.clone();
        std::thread::spawn(move || {
            let sig = signals.wait();
            tracing::warn!("signal {sig}: stopping the test server, then unmounting");
            watcher.signal.store(sig, Ordering::SeqCst);
            if let Some(pid) = *watcher.server() {
                stop_server(pid);
            }
        });
        interrupt
    }

    /// `Err(Interrupted)` once a signal has arrived.
    pub(crate) fn check(&self) -> Result<()> {
        match self.signal.load(Ordering::SeqCst) {
            0 => Ok(()),
            sig => Err(Error::Interrupted(sig)),
        }
    }

    /// From now on a signal stops the server `pid`; one that came first stops it at once.
    fn watch_server(&self, pid: u32) {
        let mut server = self.server();
        *server = Some(pid);
        if self.check().is_err() {
            stop_server(pid);
        }
    }

    fn server(&self) -> MutexGuard<'_, Option<u32>> {
        // Only plain stores happen under the lock: a poisoned value is whole.
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The home directory of user `uid`, from the password database.
pub(crate) fn home_of(uid: u32) -> Option<PathBuf> {
    // SAFETY: getpwuid returns null or a pointer to static storage, read at once.
    unsafe {
        let pw = libc::getpwuid(uid);
        if pw.is_null() || (*pw).pw_dir.is_null() {
            return None;
        }
        let dir = std::ffi::CStr::from_ptr((*pw).pw_dir);
        Some(PathBuf::from(std::ffi::OsStr::from_bytes(dir.to_bytes())))
    }
}

/// How often verify looks at a starting or recovering server.
pub(crate) const POLL: Duration = Duration::from_millis(10);

/// Whether a postmaster.pid written by the server with process id `pid` says it accepts
/// connections: its eighth line is `ready` (or `standby`, a hot standby in recovery).
fn accepts_connections(pid_file: &str, pid: u32) -> bool {
    let lines: Vec<&str> = pid_file.lines().collect();
    lines.first().and_then(|l| l.trim().parse::<u32>().ok()) == Some(pid)
        && matches!(lines.get(7).map(|l| l.trim()), Some("ready" | "standby"))
}

/// A verify's own directory: the view's mount point and scratch directory, the server's
/// socket and log. Removed with everything in it when dropped.
pub(crate) struct Workspace {
    pub(crate) dir: PathBuf,
}

impl Workspace {
    pub(crate) fn create(owner: Owner, command: &str) -> Result<Workspace> {
        let dir = std::env::temp_dir().join(format!("pgsnapfs-{command}-{}", std::process::id()));
        crate::restore::check_empty(&dir, "work directory")?;
        std::fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
        let work = Workspace { dir };
        let chown = |d: &Path| {
            std::os::unix::fs::chown(d, Some(owner.uid), Some(owner.gid))
                .map_err(io(format!("chown {}", d.display())))
        };
        chown(&work.dir)?;
        for d in [work.data(), work.socket()] {
            std::fs::create_dir(&d).map_err(io(format!("create {}", d.display())))?;
            chown(&d)?;
        }
        // The server trusts every connection on its socket: only its user (and root) may
        // reach it.
        let sock = work.socket();
        std::fs::set_permissions(&sock, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(io(format!("chmod {}", sock.display())))?;
        Ok(work)
    }

    /// The view's mount point: the server's data directory.
    pub(crate) fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub(crate) fn socket(&self) -> PathBuf {
        self.dir.join("socket")
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Mounts a view of the goal, promoted at its target, and tests it. `planned` hears which
/// backup and point were chosen, before the server starts. `signals` (blocked before any
/// thread started) interrupt the run: it then cleans up and returns `Error::Interrupted`.
/// A run that chose its backup, and was not interrupted, is recorded in the cluster's status
/// object (`status`), passed or failed.
pub fn run(
    repo: Repository,
    opts: &VerifyOptions,
    signals: Signals,
    planned: &dyn Fn(&Plan),
) -> Result<Report> {
    let started = chrono::Utc::now();
    let recorder = Recorder::of(&repo);
    let chosen = std::cell::Cell::new(None);
    let result = verify_view(repo, opts, signals, &|plan| {
        chosen.set(Some(plan.snapshot.sysid()));
        planned(plan)
    });
    let run = match &result {
        Ok(report) => {
            let p = &report.phases;
            Some(Run {
                backup: Some(report.backup.clone()),
                error: report.problems.first().cloned(),
                // The checks began with the first query to the recovered server.
                first_query_s: (p.checks_s > 0.0).then_some(p.mount_s + p.start_s + p.recovery_s),
                ..Run::ended(started, report.ok)
            })
        }
        Err(Error::Interrupted(_)) => None,
        Err(e) => Some(Run::failed(started, e)),
    };
    if let (Some(sysid), Some(run)) = (chosen.get(), run) {
        recorder.record(Watched::Verify, sysid, &run);
    }
    result
}

fn verify_view(
    repo: Repository,
    opts: &VerifyOptions,
    signals: Signals,
    planned: &dyn Fn(&Plan),
) -> Result<Report> {
    let interrupt = Interrupt::listen(signals);
    let owner = session::server_owner(&opts.server.user)?;
    let work = Workspace::create(owner, "verify")?;
    let started = Instant::now();
    // `--full` also hashes every chunk it reads; incremental runs check their crcs.
    let repo = repo.with_verification(match opts.full {
        true => Verification::Full,
        false => Verification::Fast,
    });
    let (session, plan) = open_view(repo, "verify", &opts.server, &work)?;
    planned(&plan);
    // `postgres --version` takes a few tens of milliseconds: asked while the view is mounted.
    let (given, major) = (opts.server.pg_bin.clone(), plan.snapshot.pg_major);
    let bin = std::thread::spawn(move || pg_bin(given.as_deref(), major));
    let mut report = Report {
        backup: plan.snapshot.id.clone(),
        ..Report::default()
    };
    let incremental = incremental(session.repo(), &plan, opts, &mut report)?;
    debug_since(started, "record and relation digests loaded");
    let mounted = session.mount()?;
    let bin = bin
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))?;
    report.phases.mount_s = secs(started);
    // Root runs the server as its user; anyone else runs it as themselves.
    // SAFETY: a plain id query.
    let as_other = unsafe { libc::geteuid() } == 0 && opts.server.user != "root";
    let user = as_other.then_some((opts.server.user.as_str(), owner));
    let launch = Launch {
        bin: &bin,
        user,
        interrupt: &interrupt,
        covers: mounted.view().map_or(&[], |v| &v.covers),
    };
    let tested = test(&launch, &work, &plan, opts, &incremental, &mut report);
    // Whatever the server's death made of the checks, nothing of them counts.
    interrupt.check()?;
    report.requests = mounted.repo().backend().stats();
    report.disk_cache = mounted.repo().disk_cache_counts();
    let outcomes = tested?;
    // Only a backup as it was taken holds its relations as stored; a later point has replayed
    // WAL into them, so its result says nothing about stored chunks.
    let as_taken = matches!(opts.server.goal.to, Point::Latest | Point::Backup(_));
    if report.ok && as_taken {
        let record = verified::next_record(
            &plan.snapshot.id,
            plan.snapshot.system_identifier,
            chrono::Utc::now(),
            report.full,
            &incremental.digests,
            &outcomes,
        );
        let saved = verified::save(mounted.repo(), plan.snapshot.sysid(), &record);
        debug_since(started, "record saved");
        match saved {
            Ok(()) => report.recorded = true,
            Err(e) => report.notes.push(format!(
                "this verification could not be recorded, so the next verify reads everything again: {e}"
            )),
        }
    }
    mounted.unmount()?;
    debug_since(started, "unmounted");
    Ok(report)
}

/// Starts the server on the mounted view, waits for its recovery, runs the checks, and
/// stops it.
fn test(
    launch: &Launch,
    work: &Workspace,
    plan: &Plan,
    opts: &VerifyOptions,
    incremental: &Incremental,
    report: &mut Report,
) -> Result<Vec<(String, Decision)>> {
    let mnt = work.data();
    let sock = work.socket();
    let port = free_port()?;
    let log = work.dir.join("server.log");
    let started = Instant::now();
    let mut postmaster = Postmaster::start(launch, work, port, &log)?;
    let deadline = started + Duration::from_secs(3600);
    let ready = postmaster.wait_ready(&mnt, deadline)?;
    if !matches!(ready, Started::Ready) {
        let why = match ready {
            Started::TimedOut => "it was still starting after an hour",
            _ => "it exited",
        };
        report.problems.push(format!(
            "the server did not start on backup {} ({why}): {}",
            plan.snapshot.id,
            log_tail(&log)
        ));
        return Ok(Vec::new());
    }
    report.phases.start_s = secs(started);

    let conn = ConnOpts {
        dbname: None,
        host: Some(sock.display().to_string()),
        port: Some(port),
        username: Some(opts.server.user.clone()),
    };
    let started = Instant::now();
    let recovering = |server: &Server| server.query_bool("SELECT pg_is_in_recovery()");
    let server = match Server::connect(&conn).and_then(|s| recovering(&s).map(|_| s)) {
        Ok(server) => server,
        Err(e) => match stopped_in_recovery(&log) {
            Some(why) => {
                report.problems.push(format!(
                    "the server stopped during recovery on backup {}: {why}",
                    plan.snapshot.id
                ));
                return Ok(Vec::new());
            }
            None => return Err(e),
        },
    };
    let deadline = Instant::now() + Duration::from_secs(3600);
    while recovering(&server).map_err(|e| match stopped_in_recovery(&log) {
        Some(why) => Error::Mount(format!("the server stopped during recovery: {why}")),
        None => e,
    })? {
        if Instant::now() > deadline {
            report
                .problems
                .push("recovery did not finish within an hour".into());
            return Ok(Vec::new());
        }
        std::thread::sleep(POLL);
    }
    report.phases.recovery_s = secs(started);

    let started = Instant::now();
    let outcomes = check_all(&server, &conn, opts, incremental, report)?;
    report.phases.checks_s = secs(started);
    report.ok = report.problems.is_empty();
    drop(server);
    drop(postmaster);
    debug_since(started, "server stopped");
    Ok(outcomes)
}

/// The last lines of a server's log, on one line.
pub(crate) fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(8).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
}

/// Why a server that was accepting connections went away during recovery (a target the
/// archive never reaches, a refused segment): its log's last lines, if it logged a FATAL or
/// PANIC. A lost connection alone says nothing.
pub(crate) fn stopped_in_recovery(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    (text.contains("FATAL") || text.contains("PANIC")).then(|| log_tail(log))
}

/// A relation the server lists, and the file it is stored in.
struct Relation {
    database: String,
    name: String,
    path: String,
    bytes: u64,
    index: bool,
    /// amcheck is installed in its database.
    amcheck: bool,
    /// amcheck's `verify_heapam` (PostgreSQL 14 and later) is there: it reads every block of
    /// a table and checks its tuples, so the table needs no `count(*)` as well.
    heapam: bool,
    /// The database's page size, for the block ranges of big tables.
    block_size: u64,
}

/// The relations of every database: tables (heap, materialized view, TOAST) and the valid
/// B-tree indexes amcheck can check, each with its data file, main-fork size and whether it
/// is read or skipped. The server measures only the relations to read; a skipped one has its
/// stored size, so an unchanged backup costs no file access however big it is. amcheck is
/// installed only in databases with something to read (a verify that reads nothing writes
/// nothing); where it cannot be, the indexes to read are left out: not checked, so not
/// recorded either.
fn list_relations(
    conn: &ConnOpts,
    databases: &[String],
    incremental: &Incremental,
    report: &mut Report,
) -> Result<Vec<(Relation, Decision)>> {
    let mut relations = Vec::new();
    report.amcheck = true;
    for db in databases {
        let s = Server::connect(&in_database(conn, db))?;
        let sql = "SELECT c.oid::regclass::text, coalesce(pg_relation_filepath(c.oid), ''), \
             c.oid::text, false FROM pg_class c WHERE c.relkind IN ('r', 'm', 't') \
             AND c.relpersistence = 'p' \
             UNION ALL SELECT c.oid::regclass::text, coalesce(pg_relation_filepath(c.oid), ''), \
             c.oid::text, true FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             JOIN pg_am a ON a.oid = c.relam WHERE a.amname = 'btree' AND c.relpersistence = 'p' \
             AND i.indisvalid ORDER BY 4, 1";
        let mut listed = Vec::new();
        let mut to_read: Vec<String> = Vec::new();
        for row in s.query_rows(sql)? {
            let [name, path, oid, index] = <[String; 4]>::try_from(row).map_err(|r| {
                Error::BadAnswer(format!(
                    "in database {db}: unexpected relation listing {r:?}"
                ))
            })?;
            let decision =
                verified::decide(incremental.previous.as_ref(), &incremental.digests, &path);
            let bytes = match decision {
                Decision::Read => {
                    to_read.push(oid);
                    0
                }
                Decision::Skip { .. } => incremental.sizes.get(&path).copied().unwrap_or(0),
            };
            listed.push((
                Relation {
                    database: db.clone(),
                    name,
                    path,
                    bytes,
                    index: index == "t",
                    amcheck: false,
                    heapam: false,
                    block_size: 8192,
                },
                decision,
            ));
        }
        let reads = !to_read.is_empty();
        if reads {
            // In the order listed: the oids are digits the server printed.
            let sizes = s.query_strings(&format!(
                "SELECT pg_relation_size(o)::text FROM unnest('{{{}}}'::oid[]) WITH ORDINALITY \
                 AS u(o, n) ORDER BY n",
                to_read.join(",")
            ))?;
            let read = listed.iter_mut().filter(|(_, d)| *d == Decision::Read);
            for ((r, _), size) in read.zip(&sizes) {
                r.bytes = size.parse().unwrap_or(0);
            }
        }
        let installed = reads && s.execute("CREATE EXTENSION IF NOT EXISTS amcheck").is_ok();
        report.amcheck &= installed || !reads;
        let heapam = installed && s.has_function("verify_heapam")?;
        let block_size = match reads {
            true => s
                .query_strings("SELECT current_setting('block_size')")?
                .first()
                .and_then(|b| b.parse().ok())
                .unwrap_or(8192),
            false => 8192,
        };
        for (mut r, d) in listed {
            if r.index && d == Decision::Read && !installed {
                continue;
            }
            r.amcheck = installed;
            r.heapam = heapam;
            r.block_size = block_size;
            relations.push((r, d));
        }
    }
    Ok(relations)
}

/// The newest verification record of this cluster (none with `--full`) and this backup's
/// relation digests. An unreadable record is noted and everything is read.
fn incremental(
    repo: &Repository,
    plan: &Plan,
    opts: &VerifyOptions,
    report: &mut Report,
) -> Result<Incremental> {
    let previous = if opts.full {
        None
    } else {
        match verified::load_latest(repo, plan.snapshot.sysid()) {
            Ok(r) => r,
            Err(e) => {
                report.notes.push(format!(
                    "the record of earlier verifications cannot be read, so every relation is read: {e}"
                ));
                None
            }
        }
    };
    report.full = previous.is_none();
    report.since = previous.as_ref().map(|r| r.backup.clone());
    let (digests, sizes) = verified::tree_digests(repo, &plan.snapshot.root)?;
    Ok(Incremental {
        previous,
        digests,
        sizes,
    })
}

fn check_all(
    server: &Server,
    conn: &ConnOpts,
    opts: &VerifyOptions,
    incremental: &Incremental,
    report: &mut Report,
) -> Result<Vec<(String, Decision)>> {
    let started = Instant::now();
    let databases =
        server.query_strings("SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1")?;
    report.databases = databases.len();
    // The plan: every relation read, or skipped because its chunks were verified before.
    let relations = list_relations(conn, &databases, incremental, report)?;
    debug_since(started, "relations listed");
    let mut planned = Planned::default();
    for (r, d) in &relations {
        match (d, r.index) {
            (Decision::Read, false) => planned.tables += 1,
            (Decision::Read, true) => planned.indexes += 1,
            (Decision::Skip { .. }, false) => planned.skipped_tables += 1,
            (Decision::Skip { .. }, true) => planned.skipped_indexes += 1,
        }
        match d {
            Decision::Read => planned.bytes += r.bytes,
            Decision::Skip { .. } => planned.skipped_bytes += r.bytes,
        }
    }
    (opts.progress)(Progress::Planned(&planned));
    report.tables_skipped = planned.skipped_tables;
    report.indexes_skipped = planned.skipped_indexes;
    report.bytes_skipped = planned.skipped_bytes;

    for (r, d) in &relations {
        if let Decision::Skip { verified_in } = d {
            report.skipped.push(Skipped {
                database: r.database.clone(),
                relation: r.name.clone(),
                verified_in: verified_in.clone(),
            });
        }
    }
    let tasks = tasks(&relations);
    run_checks(conn, opts, &relations, tasks, report)?;

    let mut sessions: HashMap<&str, Server> = HashMap::new();
    for Assertion { dbname: db, sql } in &opts.assertions {
        report.assertions += 1;
        let session = match sessions.entry(db) {
            Entry::Occupied(s) => s.into_mut(),
            Entry::Vacant(v) => match Server::connect(&in_database(conn, db)) {
                Ok(s) => v.insert(s),
                Err(e) => {
                    report.problems.push(format!(
                        "assertion not run: {sql}: cannot connect to database {db}: {e}"
                    ));
                    continue;
                }
            },
        };
        match session.query_bool(sql) {
            Ok(true) => {}
            Ok(false) => report
                .problems
                .push(format!("assertion returned false in database {db}: {sql}")),
            Err(e) => report
                .problems
                .push(format!("assertion failed in database {db}: {sql}: {e}")),
        }
    }
    Ok(relations.into_iter().map(|(r, d)| (r.path, d)).collect())
}

/// Tables bigger than this are checked in block ranges about this size, on several
/// connections at once: amcheck and the scans are single-threaded in the server.
const PIECE_BYTES: u64 = 256 << 20;

/// One query of the checks: a relation, or a block range of a big table.
struct Task {
    /// The relation's place in the plan.
    rel: usize,
    sql: String,
    /// Each row it returns is a finding (amcheck's `verify_heapam`); otherwise only an error
    /// is.
    findings: bool,
}

/// What a worker tells the thread that reports.
enum Event {
    Started(usize),
    /// The task's relation and its finding: amcheck's messages, or the query's error.
    Done(usize, std::result::Result<Vec<String>, Error>),
    /// A worker could not connect: the checks cannot go on.
    Failed(Error),
}

/// The block ranges `[start, end]` (inclusive, as `verify_heapam` takes them) of a table of
/// `blocks` blocks, in pieces of at most about `piece` blocks; an empty table is one
/// unbounded piece.
fn block_ranges(blocks: u64, piece: u64) -> Vec<Option<(u64, u64)>> {
    let pieces = blocks.div_ceil(piece.max(1));
    if pieces <= 1 {
        return vec![None];
    }
    let size = blocks.div_ceil(pieces);
    (0..pieces)
        .map(|i| Some((i * size, ((i + 1) * size).min(blocks) - 1)))
        .collect()
}

/// The queries of the relations to read: `bt_index_check` for an index; for a table,
/// `verify_heapam` over block ranges (it reads every block) where amcheck has it, else
/// `count(*)`. The biggest first, a database's tasks together.
fn tasks(relations: &[(Relation, Decision)]) -> Vec<Task> {
    let mut tasks = Vec::new();
    for (rel, (r, d)) in relations.iter().enumerate() {
        if *d != Decision::Read {
            continue;
        }
        let quoted = r.name.replace('\'', "''");
        if r.index {
            let sql = format!("SELECT bt_index_check('{quoted}'::regclass)");
            tasks.push((rel, r.bytes, sql, false));
        } else if r.heapam {
            let blocks = r.bytes / r.block_size.max(1);
            for range in block_ranges(blocks, PIECE_BYTES / r.block_size.max(1)) {
                let (bytes, bounds) = match range {
                    Some((a, b)) => (
                        (b + 1 - a) * r.block_size,
                        format!(", startblock := {a}, endblock := {b}"),
                    ),
                    None => (r.bytes, String::new()),
                };
                let sql = format!(
                    "SELECT blkno || ': ' || msg FROM verify_heapam('{quoted}'::regclass, \
                     check_toast := true{bounds}) LIMIT 5"
                );
                tasks.push((rel, bytes, sql, true));
            }
        } else {
            let sql = format!("SELECT count(*) FROM ONLY {}", r.name);
            tasks.push((rel, r.bytes, sql, false));
        }
    }
    // Databases in the order of their biggest task, each database's biggest tasks first.
    let mut first: HashMap<&str, (u64, usize)> = HashMap::new();
    for (n, (rel, bytes, ..)) in tasks.iter().enumerate() {
        let e = first
            .entry(&relations[*rel].0.database)
            .or_insert((*bytes, n));
        e.0 = e.0.max(*bytes);
    }
    let key = |(rel, bytes, ..): &(usize, u64, String, bool)| {
        let (biggest, n) = first[relations[*rel].0.database.as_str()];
        (std::cmp::Reverse(biggest), n, std::cmp::Reverse(*bytes))
    };
    tasks.sort_by_key(key);
    tasks
        .into_iter()
        .map(|(rel, _, sql, findings)| Task { rel, sql, findings })
        .collect()
}

/// Runs `tasks` on as many connections as there are cores (at least two), each connected to
/// its task's database, and reports each relation once all its tasks are done: its problems in
/// the plan's order, progress from this thread.
fn run_checks(
    conn: &ConnOpts,
    opts: &VerifyOptions,
    relations: &[(Relation, Decision)],
    tasks: Vec<Task>,
    report: &mut Report,
) -> Result<()> {
    let mut pending = vec![0usize; relations.len()];
    for t in &tasks {
        pending[t.rel] += 1;
    }
    let mut found: Vec<Vec<String>> = vec![Vec::new(); relations.len()];
    let mut failed: Vec<Option<Error>> = (0..relations.len()).map(|_| None).collect();
    let connections = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .max(2)
        .min(tasks.len().max(1));
    let queue = Mutex::new(tasks.into_iter());
    let next = || queue.lock().unwrap_or_else(PoisonError::into_inner).next();
    let (tx, rx) = std::sync::mpsc::channel::<Event>();
    let mut broken = None;
    std::thread::scope(|scope| {
        for _ in 0..connections {
            let (tx, next) = (tx.clone(), &next);
            scope.spawn(move || {
                let mut current: Option<(&str, Server)> = None;
                while let Some(task) = next() {
                    let db = relations[task.rel].0.database.as_str();
                    if current.as_ref().map(|c| c.0) != Some(db) {
                        match Server::connect(&in_database(conn, db)) {
                            Ok(s) => current = Some((db, s)),
                            Err(e) => {
                                let _ = tx.send(Event::Failed(e));
                                return;
                            }
                        }
                    }
                    let Some((_, s)) = &current else { return };
                    let _ = tx.send(Event::Started(task.rel));
                    let outcome = match task.findings {
                        true => s.query_strings(&task.sql),
                        false => s.execute(&task.sql).map(|()| Vec::new()),
                    };
                    let _ = tx.send(Event::Done(task.rel, outcome));
                }
            });
        }
        drop(tx);
        for event in rx {
            match event {
                Event::Started(rel) => {
                    let r = &relations[rel].0;
                    (opts.progress)(Progress::Checking { relation: &r.name });
                }
                Event::Done(rel, outcome) => {
                    match outcome {
                        Ok(rows) => found[rel].extend(rows),
                        Err(e) => {
                            failed[rel].get_or_insert(e);
                        }
                    }
                    pending[rel] -= 1;
                    if pending[rel] == 0 {
                        let r = &relations[rel].0;
                        (opts.progress)(Progress::Checked {
                            index: r.index,
                            bytes: r.bytes,
                        });
                    }
                }
                Event::Failed(e) => {
                    broken.get_or_insert(e);
                }
            }
        }
    });
    if let Some(e) = broken {
        return Err(e);
    }
    for (rel, (r, d)) in relations.iter().enumerate() {
        if *d != Decision::Read {
            continue;
        }
        let (db, name) = (&r.database, &r.name);
        let problem = match (&failed[rel], r.index) {
            (Some(e), true) => Some(format!("database {db}: index {name}: {e}")),
            (Some(e), false) => Some(format!("database {db}: table {name} cannot be read: {e}")),
            (None, _) if !found[rel].is_empty() => {
                found[rel].truncate(5);
                Some(format!(
                    "database {db}: table {name}: amcheck: {}",
                    found[rel].join("; ")
                ))
            }
            (None, _) => None,
        };
        if let Some(p) = problem {
            report.corrupt = true;
            report.problems.push(p);
        }
        match r.index {
            true => report.indexes_checked += 1,
            false => report.tables += 1,
        }
        report.bytes_read += r.bytes;
    }
    Ok(())
}

/// The connection options of `conn` for database `db`.
fn in_database(conn: &ConnOpts, db: &str) -> ConnOpts {
    let dbname = format!("dbname='{}'", db.replace('\\', "\\\\").replace('\'', "\\'"));
    ConnOpts {
        dbname: Some(dbname),
        ..conn.clone()
    }
}

/// One statement of an assertions file, and the database it runs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assertion {
    /// The database it runs in.
    pub dbname: String,
    /// The statement, without its final semicolon; it must return one row holding true.
    pub sql: String,
}

/// Splits an assertions file into statements at semicolons that end a line. Statements run
/// in `dbname` until a `\connect DB` (or `\c DB`) line, as in psql, switches to DB.
pub fn parse_assertions(text: &str, dbname: &str) -> Result<Vec<Assertion>> {
    let mut out = Vec::new();
    let mut db = dbname.to_string();
    let mut current = String::new();
    let mut flush = |current: &mut String, db: &str| {
        let sql = current.trim().trim_end_matches(';').trim_end();
        if !sql.is_empty() {
            out.push(Assertion {
                dbname: db.to_string(),
                sql: sql.to_string(),
            });
        }
        current.clear();
    };
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.starts_with("--") || trimmed.is_empty() {
            continue;
        }
        if let Some(meta) = trimmed.strip_prefix('\\') {
            let (command, rest) = meta.split_once(char::is_whitespace).unwrap_or((meta, ""));
            let rest = rest.trim();
            // One name, bare or quoted as psql quotes it.
            let name = match rest.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
                Some(quoted) => quoted,
                None if !rest.contains(char::is_whitespace) => rest.trim_matches('\''),
                None => "",
            };
            match command {
                "connect" | "c" if !name.is_empty() => {}
                _ => {
                    return Err(Error::BadInput(format!(
                        "line {}: {trimmed:?}: the only backslash command assertions may use is \
                         \\connect DBNAME",
                        n + 1
                    )))
                }
            }
            flush(&mut current, &db);
            db = name.to_string();
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if trimmed.ends_with(';') {
            flush(&mut current, &db);
        }
    }
    flush(&mut current, &db);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::{accepts_connections, block_ranges, parse_assertions, Assertion};

    #[test]
    fn big_tables_are_checked_in_block_ranges_that_cover_them_once() {
        assert_eq!(block_ranges(0, 100), [None]);
        assert_eq!(block_ranges(100, 100), [None]);
        assert_eq!(block_ranges(101, 100), [Some((0, 50)), Some((51, 100))]);
        for (blocks, piece) in [(163_935, 32_768), (1000, 7), (65_536, 32_768)] {
            let ranges = block_ranges(blocks, piece);
            let mut next = 0;
            for (a, b) in ranges.iter().map(|r| r.unwrap()) {
                assert_eq!(a, next);
                assert!(b >= a && b - a < piece, "{a}..={b}");
                next = b + 1;
            }
            assert_eq!(next, blocks);
        }
    }

    #[test]
    fn a_server_is_up_when_its_own_pid_file_says_ready_or_standby() {
        let pid_file = |pid: u32, status: &str| {
            format!("{pid}\n/d\n1733300000\n5432\n/s\n\n  1234  5678\n{status}\n")
        };
        assert!(accepts_connections(&pid_file(42, "ready   "), 42));
        assert!(accepts_connections(&pid_file(42, "standby "), 42));
        assert!(!accepts_connections(&pid_file(42, "starting"), 42));
        assert!(!accepts_connections(&pid_file(42, "stopping"), 42));
        // Another server's file, a half-written one, none.
        assert!(!accepts_connections(&pid_file(41, "ready   "), 42));
        assert!(!accepts_connections("42\n/d\n", 42));
        assert!(!accepts_connections("", 42));
    }

    fn parsed(text: &str) -> Vec<(String, String)> {
        parse_assertions(text, "postgres")
            .unwrap()
            .into_iter()
            .map(|Assertion { dbname, sql }| (dbname, sql))
            .collect()
    }

    fn pairs(want: &[(&str, &str)]) -> Vec<(String, String)> {
        want.iter()
            .map(|(d, s)| (d.to_string(), s.to_string()))
            .collect()
    }

    #[test]
    fn splits_statements_at_line_ending_semicolons() {
        let sql = "-- rows are there\nSELECT count(*) > 0\n  FROM t;\n\nSELECT true;\nSELECT 'a;b' = 'a;b'";
        assert_eq!(
            parsed(sql),
            pairs(&[
                ("postgres", "SELECT count(*) > 0\n  FROM t"),
                ("postgres", "SELECT true"),
                ("postgres", "SELECT 'a;b' = 'a;b'"),
            ])
        );
    }

    #[test]
    fn connect_switches_the_database_for_what_follows() {
        let sql = "SELECT 1 = 1;\n\\connect appdb\nSELECT count(*) > 0 FROM orders;\n\
                   SELECT true\n\\c \"other db\"\nSELECT 2 = 2;\n";
        assert_eq!(
            parse_assertions(sql, "start").unwrap(),
            [
                ("start", "SELECT 1 = 1"),
                ("appdb", "SELECT count(*) > 0 FROM orders"),
                ("appdb", "SELECT true"),
                ("other db", "SELECT 2 = 2"),
            ]
            .map(|(d, s)| Assertion {
                dbname: d.into(),
                sql: s.into()
            })
        );
        for bad in ["\\connect", "\\set x 1", "\\c a b"] {
            let e = parse_assertions(bad, "postgres").unwrap_err().to_string();
            assert!(e.contains("line 1") && e.contains("connect"), "{e}");
        }
    }
}
