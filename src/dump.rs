//! `dump`: a table, a schema or a database as it was at a point in time, in one command.
//! Mounts a private view of the point, starts PostgreSQL on it on a private socket, runs the
//! backup's major's `pg_dump`, and tears everything down whatever happens.
//!
//! The view is promoted at its target: its writes go to a throw-away copy-on-write layer and
//! archiving is off, so promotion touches nothing real, and ending recovery aborts a
//! transaction still open at the target. A target inside the transaction of the accident (a
//! DROP or TRUNCATE, whose AccessExclusiveLock a paused recovery would keep holding) so
//! dumps the table as it was, without waiting on that lock.

use crate::error::{io, Error, Result};
use crate::passphrase;
use crate::pg::target::TargetAction;
use crate::pitr::{Goal, Plan};
use crate::server::{ConnOpts, Server};
use crate::session::lifecycle::Signals;
use crate::session::plan::Latest;
use crate::session::{self, CacheOptions, Request, Session, ViewSettings};
use crate::store::Repository;
use crate::verify::{free_port, pg_bin, Interrupt, Launch, Postmaster, Started, Workspace, POLL};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// pg_dump's output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// SQL text, for psql.
    Plain,
    /// pg_dump's custom archive, for pg_restore.
    Custom,
    /// One file per table in a directory, for pg_restore.
    Directory,
}

impl Format {
    fn flag(self) -> &'static str {
        match self {
            Format::Plain => "--format=plain",
            Format::Custom => "--format=custom",
            Format::Directory => "--format=directory",
        }
    }
}

/// What to dump and from where: the options of `pgsnapfs dump`.
pub struct DumpOptions {
    /// The repository's location as given, for the server's restore_command.
    pub repo_spec: String,
    /// Where the server's `wal-fetch` finds the passphrase of an encrypted repository.
    pub passphrase: passphrase::Source,
    /// The point to dump; naming nothing dumps the newest backup as it was taken.
    pub goal: Goal,
    /// The cluster, when the repository holds several.
    pub system: Option<u64>,
    /// The memory and disk caches of the mount the server runs on.
    pub cache: CacheOptions,
    /// The operating-system user the server runs as, and the database role pg_dump uses.
    pub user: String,
    /// The directory of the backup's major's programs; `None` means Debian's
    /// `/usr/lib/postgresql/MAJOR/bin`.
    pub pg_bin: Option<PathBuf>,
    /// The database to dump.
    pub dbname: String,
    /// pg_dump's `--table` patterns; each must match (`--strict-names`).
    pub tables: Vec<String>,
    /// pg_dump's `--schema` patterns; each must match.
    pub schemas: Vec<String>,
    /// The output format.
    pub format: Format,
    /// The output file or directory; `None` is stdout (plain and custom only).
    pub file: Option<PathBuf>,
    /// More pg_dump options, passed as given.
    pub extra: Vec<String>,
    /// Told of each stage as it starts.
    pub stage: Box<dyn Fn(Stage)>,
}

/// The stages of a dump, for a line on a terminal.
pub enum Stage<'a> {
    /// The backup and point are chosen; the view is being mounted.
    Planned(&'a Plan),
    /// The server is starting and replaying WAL to the target.
    Recovering,
    /// pg_dump is running.
    Dumping,
}

/// What a dump did, printed as text or (with `--json`) as this JSON.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The id of the backup the view started from.
    pub backup: String,
    /// The point recovered to, in words.
    pub target: String,
    /// The PostgreSQL major of the backup, whose pg_dump ran.
    pub pg_major: u32,
    /// The database dumped.
    pub database: String,
    /// The output format.
    pub format: Format,
    /// The output file or directory; absent for stdout.
    pub file: Option<PathBuf>,
    /// Seconds from the start until recovery ended at the target.
    pub recovery_s: f64,
    /// Seconds pg_dump ran.
    pub dump_s: f64,
}

/// Checks what can be checked before anything is mounted.
fn check_options(opts: &DumpOptions) -> Result<()> {
    match (&opts.file, opts.format) {
        (None, Format::Directory) => Err(Error::BadInput(
            "--format directory writes a directory: name it with -f DIR".into(),
        )),
        (Some(f), _) if f.exists() => Err(Error::BadInput(format!(
            "{} already exists: dump writes a new file; choose another -f or remove it",
            f.display()
        ))),
        _ => Ok(()),
    }
}

/// pg_dump's arguments, the connection to the view's server first.
fn pg_dump_args(opts: &DumpOptions, socket: &Path, port: u16) -> Vec<String> {
    let mut args = vec![
        format!("--host={}", socket.display()),
        format!("--port={port}"),
        format!("--username={}", opts.user),
        format!("--dbname={}", conninfo_value(&opts.dbname)),
        "--no-password".into(),
        opts.format.flag().into(),
    ];
    if !opts.tables.is_empty() || !opts.schemas.is_empty() {
        // A pattern that matches nothing is an error, not a silently smaller dump.
        args.push("--strict-names".into());
    }
    args.extend(opts.tables.iter().map(|t| format!("--table={t}")));
    args.extend(opts.schemas.iter().map(|s| format!("--schema={s}")));
    if let Some(f) = &opts.file {
        args.push(format!("--file={}", f.display()));
    }
    args.extend(opts.extra.iter().cloned());
    args
}

/// `dbname='…'` as a conninfo string, so a database named like a URI stays a name.
fn conninfo_value(db: &str) -> String {
    format!("dbname='{}'", db.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Mounts a view of the goal, promoted at its target, dumps from it, and tears down.
/// `signals` (blocked before any thread started) interrupt the run: it then cleans up and
/// returns `Error::Interrupted`.
pub fn run(repo: Repository, opts: &DumpOptions, signals: Signals) -> Result<Report> {
    check_options(opts)?;
    let interrupt = Interrupt::listen(signals);
    let owner = session::server_owner(&opts.user)?;
    // Declared first so it goes last: the server and the mount are gone before it is removed.
    let work = Workspace::create(owner, "dump")?;
    let started = Instant::now();
    let session = Session::open(
        repo,
        Request {
            command: "dump",
            repo_spec: opts.repo_spec.clone(),
            passphrase: opts.passphrase.clone(),
            goal: opts.goal.clone(),
            latest: Latest::NewestBackup,
            system: opts.system,
            mountpoint: work.data(),
            scratch: Some(work.dir.join("scratch")),
            owner: opts.user.clone(),
            view: ViewSettings {
                // Ending recovery at the target releases the locks of a transaction still
                // open there.
                action: TargetAction::Promote,
                shared_buffers: "256MB".into(),
                // Only this process (root) and the server's user can reach the private socket.
                files: vec![("pg_hba.conf".into(), b"local all all trust\n".to_vec())],
            },
            cache: opts.cache.clone(),
            hydrate: None,
        },
    )?;
    let plan = match session.view() {
        Some(view) => view.plan.clone(),
        None => {
            return Err(Error::Mount(
                "dump mounted the catalogue, not a view".into(),
            ))
        }
    };
    (opts.stage)(Stage::Planned(&plan));
    let major = plan.snapshot.pg_major;
    let bin = pg_bin(opts.pg_bin.as_deref(), major)?;
    let pg_dump = bin.join("pg_dump");
    if !pg_dump.is_file() {
        return Err(Error::BadInput(format!(
            "no pg_dump in {} for PostgreSQL {major}; install its client programs or pass --pg-bin",
            bin.display()
        )));
    }
    let mounted = session.mount()?;
    // SAFETY: a plain id query.
    let as_other = unsafe { libc::geteuid() } == 0 && opts.user != "root";
    let launch = Launch {
        bin: &bin,
        user: as_other.then_some((opts.user.as_str(), owner)),
        interrupt: &interrupt,
    };
    (opts.stage)(Stage::Recovering);
    let port = free_port()?;
    let recovered = recover(&launch, &work, port, opts);
    // A signal stops the server under recovery: the failure is the signal's.
    interrupt.check()?;
    let postmaster = recovered?;
    let recovery_s = started.elapsed().as_secs_f64();
    (opts.stage)(Stage::Dumping);
    let dumped = Instant::now();
    let result = dump(&pg_dump, opts, &work.socket(), port);
    // A signal stops the server under pg_dump: its failure is the signal's.
    interrupt.check()?;
    result?;
    drop(postmaster);
    mounted.unmount()?;
    Ok(Report {
        backup: plan.snapshot.id.clone(),
        target: plan.describe(),
        pg_major: major,
        database: opts.dbname.clone(),
        format: opts.format,
        file: opts.file.clone(),
        recovery_s: round_ms(recovery_s),
        dump_s: round_ms(dumped.elapsed().as_secs_f64()),
    })
}

fn round_ms(s: f64) -> f64 {
    (s * 1000.0).round() / 1000.0
}

/// Starts the server on the view and waits until recovery has ended at the target and the
/// database to dump is there.
fn recover(launch: &Launch, work: &Workspace, port: u16, opts: &DumpOptions) -> Result<Postmaster> {
    let log = work.dir.join("server.log");
    let mut postmaster = Postmaster::start(launch, work, port, &log)?;
    let deadline = Instant::now() + Duration::from_secs(3600);
    let ready = postmaster.wait_ready(&work.data(), deadline)?;
    if !matches!(ready, Started::Ready) {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(8).collect();
        let why = match ready {
            Started::TimedOut => "it was still starting after an hour",
            _ => "it exited",
        };
        return Err(Error::Mount(format!(
            "the server on the view did not start ({why}): {}",
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        )));
    }
    let conn = ConnOpts {
        dbname: None,
        host: Some(work.socket().display().to_string()),
        port: Some(port),
        username: Some(opts.user.clone()),
    };
    let server = Server::connect(&conn)?;
    while server.query_bool("SELECT pg_is_in_recovery()")? {
        if Instant::now() > deadline {
            return Err(Error::Mount(
                "recovery on the view did not finish within an hour".into(),
            ));
        }
        std::thread::sleep(POLL);
    }
    let name = opts.dbname.replace('\'', "''");
    if !server.query_bool(&format!(
        "SELECT EXISTS (SELECT FROM pg_database WHERE datname = '{name}')"
    ))? {
        let names = server
            .query_strings("SELECT datname FROM pg_database WHERE datallowconn ORDER BY datname")?;
        return Err(Error::NotFound(format!(
            "database {:?} did not exist at that point; it had: {}",
            opts.dbname,
            names.join(", ")
        )));
    }
    Ok(postmaster)
}

/// Runs pg_dump: its output to the file or to our stdout, its messages to our stderr.
fn dump(pg_dump: &Path, opts: &DumpOptions, socket: &Path, port: u16) -> Result<()> {
    let mut cmd = Command::new(pg_dump);
    // stdout stays ours: the dump itself goes there without -f.
    cmd.args(pg_dump_args(opts, socket, port))
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped());
    let out = cmd
        .spawn()
        .and_then(|c| c.wait_with_output())
        .map_err(io(format!("run {}", pg_dump.display())))?;
    let messages = String::from_utf8_lossy(&out.stderr);
    eprint!("{messages}");
    if out.status.success() {
        return Ok(());
    }
    if let Some(f) = &opts.file {
        // A failed pg_dump leaves a partial file or directory: nobody should restore it.
        let _ = std::fs::remove_file(f).or_else(|_| std::fs::remove_dir_all(f));
    }
    let said = messages.trim().replace('\n', " | ");
    match messages.contains("no matching") {
        true => Err(Error::NotFound(format!(
            "{said}: check the names with --table/--schema at that point (psql's \\dt on a \
             `pgsnapfs mount` of it)"
        ))),
        false => Err(Error::BadAnswer(format!(
            "pg_dump failed ({}): {said}",
            out.status
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(format: Format, file: Option<&str>) -> DumpOptions {
        DumpOptions {
            repo_spec: "r".into(),
            passphrase: passphrase::Source::default(),
            goal: Goal {
                to: crate::pitr::Point::Latest,
                timeline: Default::default(),
            },
            system: None,
            cache: CacheOptions {
                memory: 0,
                dir: None,
                disk_size: 0,
            },
            user: "postgres".into(),
            pg_bin: None,
            dbname: "shop's".into(),
            tables: vec!["orders".into()],
            schemas: Vec::new(),
            format,
            file: file.map(PathBuf::from),
            extra: vec!["--no-owner".into()],
            stage: Box::new(|_| {}),
        }
    }

    #[test]
    fn a_directory_dump_needs_a_file_name() {
        assert!(matches!(
            check_options(&opts(Format::Directory, None)),
            Err(Error::BadInput(_))
        ));
        assert!(check_options(&opts(Format::Custom, None)).is_ok());
    }

    #[test]
    fn named_tables_must_match_and_extra_options_come_last() {
        let a = pg_dump_args(&opts(Format::Custom, Some("/o.dump")), Path::new("/s"), 5);
        assert_eq!(
            a,
            [
                "--host=/s",
                "--port=5",
                "--username=postgres",
                "--dbname=dbname='shop\\'s'",
                "--no-password",
                "--format=custom",
                "--strict-names",
                "--table=orders",
                "--file=/o.dump",
                "--no-owner"
            ]
        );
    }
}
