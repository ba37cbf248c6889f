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
use crate::pitr::Plan;
use crate::server::{ConnOpts, Server};
use crate::session;
use crate::session::lifecycle::Signals;
use crate::store::Repository;
use crate::verify::{
    free_port, log_tail, open_view, pg_bin, stopped_in_recovery, Interrupt, Launch, Postmaster,
    Started, ViewServer, Workspace, POLL,
};
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
    /// The server and the point it dumps.
    pub server: ViewServer,
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
    /// Restore the tables straight into a live database under new names instead.
    pub into: Option<Into>,
    /// Told of each stage as it starts.
    pub stage: Box<dyn Fn(Stage)>,
}

/// `--into`: where the dumped tables go, and the suffix of their new names.
pub struct Into {
    /// A libpq connection string or URI of the live database.
    pub conninfo: String,
    /// Added to every restored table, index and owned sequence name; `None`: `_at_HHMM` of
    /// the target time (or of the backup's end).
    pub suffix: Option<String>,
}

/// The stages of a dump, for a line on a terminal.
pub enum Stage<'a> {
    /// The backup and point are chosen; the view is being mounted.
    Planned(&'a Plan),
    /// The server is starting and replaying WAL to the target.
    Recovering,
    /// pg_dump is running.
    Dumping,
    /// pg_restore is loading the renamed tables into the live database.
    Restoring,
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
    /// Seconds pg_dump (and with `--into`, pg_restore) ran.
    pub dump_s: f64,
    /// With `--into`: the tables, indexes and sequences created in the live database,
    /// schema-qualified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restored: Option<Vec<String>>,
}

/// Checks what can be checked before anything is mounted.
fn check_options(opts: &DumpOptions) -> Result<()> {
    if opts.into.is_some() && (opts.tables.is_empty() || opts.file.is_some()) {
        return Err(Error::BadInput(
            "--into restores tables under new names: name them with --table, and give no -f".into(),
        ));
    }
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
fn pg_dump_args(
    opts: &DumpOptions,
    format: Format,
    file: Option<&Path>,
    socket: &Path,
    port: u16,
) -> Vec<String> {
    let mut args = vec![
        format!("--host={}", socket.display()),
        format!("--port={port}"),
        format!("--username={}", opts.server.user),
        format!("--dbname={}", conninfo_value(&opts.dbname)),
        "--no-password".into(),
        format.flag().into(),
    ];
    if !opts.tables.is_empty() || !opts.schemas.is_empty() {
        // A pattern that matches nothing is an error, not a silently smaller dump.
        args.push("--strict-names".into());
    }
    args.extend(opts.tables.iter().map(|t| format!("--table={t}")));
    args.extend(opts.schemas.iter().map(|s| format!("--schema={s}")));
    if let Some(f) = file {
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
    let owner = session::server_owner(&opts.server.user)?;
    // Declared first so it goes last: the server and the mount are gone before it is removed.
    let work = Workspace::create(owner, "dump")?;
    let started = Instant::now();
    let (session, plan) = open_view(repo, "dump", &opts.server, &work)?;
    (opts.stage)(Stage::Planned(&plan));
    let major = plan.snapshot.pg_major;
    let bin = pg_bin(opts.server.pg_bin.as_deref(), major)?;
    // Found before anything is mounted, so that a missing program fails first.
    let pg_dump = client(&bin, "pg_dump", major, DEBIAN_PG)?;
    let into = (opts.into.as_ref())
        .map(|into| client(&bin, "pg_restore", major, DEBIAN_PG).map(|r| (into, r)))
        .transpose()?;
    let mounted = session.mount()?;
    // SAFETY: a plain id query.
    let as_other = unsafe { libc::geteuid() } == 0 && opts.server.user != "root";
    let launch = Launch {
        bin: &bin,
        user: as_other.then_some((opts.server.user.as_str(), owner)),
        interrupt: &interrupt,
        covers: mounted.view().map_or(&[], |v| &v.covers),
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
    let result = match &into {
        None => dump(
            &pg_dump,
            opts,
            opts.format,
            opts.file.as_deref(),
            &work.socket(),
            port,
        )
        .map(|()| None),
        Some((into, pg_restore)) => {
            let suffix = into.suffix.clone().unwrap_or_else(|| default_suffix(&plan));
            restore_into(&pg_dump, pg_restore, opts, into, &suffix, &work, port).map(Some)
        }
    };
    // A signal stops the server under pg_dump: its failure is the signal's.
    interrupt.check()?;
    let restored = result?;
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
        restored,
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
        let why = match ready {
            Started::TimedOut => "it was still starting after an hour",
            _ => "it exited",
        };
        return Err(Error::Mount(format!(
            "the server on the view did not start ({why}): {}",
            log_tail(&log)
        )));
    }
    // A server that stops during recovery (a target the archive never reaches) says why in
    // its log; the lost connection alone would not.
    let died = |e: Error| match stopped_in_recovery(&log) {
        Some(why) => Error::Mount(format!(
            "the server on the view stopped during recovery to the target: {why}"
        )),
        None => e,
    };
    let conn = ConnOpts {
        dbname: None,
        host: Some(work.socket().display().to_string()),
        port: Some(port),
        username: Some(opts.server.user.clone()),
    };
    let server = Server::connect(&conn).map_err(died)?;
    while server
        .query_bool("SELECT pg_is_in_recovery()")
        .map_err(died)?
    {
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

/// Where Debian installs each major's programs.
const DEBIAN_PG: &str = "/usr/lib/postgresql";

/// A client program for a server of `major`: the one beside the server's, else Debian's of
/// the nearest major at or above it under `debian` (a newer pg_dump dumps an older server;
/// builds of the server alone, such as the npm ones, have no client programs).
fn client(bin: &Path, tool: &str, major: u32, debian: &str) -> Result<PathBuf> {
    if bin.join(tool).is_file() {
        return Ok(bin.join(tool));
    }
    let of = |m: u32| Path::new(debian).join(m.to_string()).join("bin").join(tool);
    let nearest = std::fs::read_dir(debian)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|m| *m >= major && of(*m).is_file())
        .min();
    nearest.map(of).ok_or_else(|| {
        Error::BadInput(format!(
            "no {tool} for PostgreSQL {major} in {} or {debian}/{major}+: install the \
             PostgreSQL {major} client programs, or pass --pg-bin with them",
            bin.display()
        ))
    })
}

/// Runs pg_dump: its output to the file or to our stdout, its messages to our stderr.
fn dump(
    pg_dump: &Path,
    opts: &DumpOptions,
    format: Format,
    file: Option<&Path>,
    socket: &Path,
    port: u16,
) -> Result<()> {
    let mut cmd = Command::new(pg_dump);
    // stdout stays ours: the dump itself goes there without -f.
    cmd.args(pg_dump_args(opts, format, file, socket, port))
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
    if let Some(f) = file {
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

/// `_at_HHMM` (UTC) of the target time, or of the backup's end for any other point.
fn default_suffix(plan: &Plan) -> String {
    let at = match &plan.target {
        Some(crate::pg::target::Target::Time(t)) => t.with_timezone(&chrono::Utc),
        _ => plan.snapshot.stop_time.with_timezone(&chrono::Utc),
    };
    format!("_at_{}", at.format("%H%M"))
}

/// An SQL identifier, quoted.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// An SQL string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The oids of the tables in a custom archive's table of contents (`pg_restore -l`): its
/// `ID; TABLEOID OID TABLE …` and `TABLE DATA` entries (a data-only dump has only these). By
/// oid, not name: names may hold spaces.
fn archive_table_oids(toc: &str) -> Vec<u32> {
    let mut oids: Vec<u32> = toc
        .lines()
        .filter(|l| !l.starts_with(';'))
        .filter_map(|l| {
            let (_, entry) = l.split_once("; ")?;
            let mut f = entry.splitn(3, ' ');
            let (_tableoid, oid, desc) = (f.next()?, f.next()?, f.next()?);
            let is_table = desc.starts_with("TABLE ") || desc.starts_with("TABLE DATA ");
            is_table.then(|| oid.parse().ok()).flatten()
        })
        .collect();
    oids.sort_unstable();
    oids.dedup();
    oids
}

/// One relation to rename on the view before the dump that is restored.
struct Rename {
    kind: &'static str,
    schema: String,
    old: String,
    new: String,
}

/// `--into`: dumps the selected tables, renames them with their indexes and owned
/// sequences on the view (a throw-away promoted copy), refuses if any new name exists in the
/// live database, dumps again and restores in one transaction, so nothing existing is
/// touched and a failure leaves nothing behind. Returns the names created.
fn restore_into(
    pg_dump: &Path,
    pg_restore: &Path,
    opts: &DumpOptions,
    into: &Into,
    suffix: &str,
    work: &Workspace,
    port: u16,
) -> Result<Vec<String>> {
    let socket = work.socket();
    let first = work.dir.join("selected.dump");
    dump(pg_dump, opts, Format::Custom, Some(&first), &socket, port)?;
    let toc = run_tool(
        Command::new(pg_restore).arg("--list").arg(&first),
        "pg_restore --list",
    )?;
    let oids = archive_table_oids(&toc);
    let view = Server::connect(&ConnOpts {
        dbname: Some(conninfo_value(&opts.dbname)),
        host: Some(socket.display().to_string()),
        port: Some(port),
        username: Some(opts.server.user.clone()),
    })?;
    let tables: Vec<(String, String)> = match oids.is_empty() {
        true => Vec::new(),
        false => view
            .query_rows(&format!(
                "SELECT n.nspname, c.relname FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.oid IN ({}) AND c.relkind IN ('r', 'p') ORDER BY 1, 2",
                oids.iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))?
            .into_iter()
            .filter_map(|row| match row.as_slice() {
                [schema, name] => Some((schema.clone(), name.clone())),
                _ => None,
            })
            .collect(),
    };
    // Without tables the second dump would select nothing, that is everything, restored
    // under the original names: refused.
    if tables.is_empty() {
        return Err(Error::BadInput(format!(
            "--into restores tables, and the dump of {} holds none: nothing was restored",
            opts.tables.join(", ")
        )));
    }
    let mut renames = Vec::new();
    for (schema, table) in &tables {
        let rel = literal(&format!("{}.{}", ident(schema), ident(table)));
        renames.push(Rename {
            kind: "TABLE",
            schema: schema.clone(),
            old: table.clone(),
            new: format!("{table}{suffix}"),
        });
        let dependents = view.query_rows(&format!(
            "SELECT CASE c.relkind WHEN 'S' THEN 'SEQUENCE' ELSE 'INDEX' END, c.relname \
             FROM pg_class c WHERE c.oid IN (\
               SELECT indexrelid FROM pg_index WHERE indrelid = {rel}::regclass \
               UNION SELECT objid FROM pg_depend WHERE refobjid = {rel}::regclass \
                 AND classid = 'pg_class'::regclass AND deptype IN ('a', 'i')) \
             AND c.relkind IN ('i', 'S') ORDER BY 2"
        ))?;
        for row in dependents {
            if let [kind, name] = row.as_slice() {
                renames.push(Rename {
                    kind: if kind == "SEQUENCE" {
                        "SEQUENCE"
                    } else {
                        "INDEX"
                    },
                    schema: schema.clone(),
                    old: name.clone(),
                    new: format!("{name}{suffix}"),
                });
            }
        }
    }
    let live = Server::connect(&ConnOpts {
        dbname: Some(into.conninfo.clone()),
        ..ConnOpts::default()
    })?;
    let mut taken = Vec::new();
    for r in &renames {
        if live.query_bool(&format!(
            "SELECT EXISTS (SELECT FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = {} AND c.relname = {})",
            literal(&r.schema),
            literal(&r.new)
        ))? {
            taken.push(format!("{}.{}", r.schema, r.new));
        }
    }
    if !taken.is_empty() {
        return Err(Error::BadInput(format!(
            "the live database already has {}: nothing was restored; choose another \
             --rename-suffix",
            taken.join(", ")
        )));
    }
    let sql: String = renames
        .iter()
        .map(|r| {
            format!(
                "ALTER {} {}.{} RENAME TO {};",
                r.kind,
                ident(&r.schema),
                ident(&r.old),
                ident(&r.new)
            )
        })
        .collect();
    view.execute(&format!("BEGIN; {sql} COMMIT;"))?;
    drop(view);
    let renamed = DumpOptions {
        tables: tables
            .iter()
            .map(|(s, t)| format!("{}.{}", ident(s), ident(&format!("{t}{suffix}"))))
            .collect(),
        schemas: Vec::new(),
        ..selection_of(opts)
    };
    let second = work.dir.join("renamed.dump");
    dump(
        pg_dump,
        &renamed,
        Format::Custom,
        Some(&second),
        &socket,
        port,
    )?;
    (opts.stage)(Stage::Restoring);
    run_tool(
        Command::new(pg_restore)
            .args([
                "--single-transaction",
                "--exit-on-error",
                "--no-owner",
                "--dbname",
            ])
            .arg(&into.conninfo)
            .arg(&second),
        "pg_restore into the live database",
    )?;
    Ok(renames
        .iter()
        .map(|r| format!("{}.{}", r.schema, r.new))
        .collect())
}

/// The options that shape pg_dump's connection and selection, for a second dump.
fn selection_of(opts: &DumpOptions) -> DumpOptions {
    DumpOptions {
        server: opts.server.clone(),
        dbname: opts.dbname.clone(),
        tables: opts.tables.clone(),
        schemas: opts.schemas.clone(),
        format: opts.format,
        file: None,
        extra: opts.extra.clone(),
        into: None,
        stage: Box::new(|_| {}),
    }
}

/// Runs a client program; its stdout, or its stderr in the error.
fn run_tool(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(io(format!("run {what}")))?;
    if !out.status.success() {
        return Err(Error::BadAnswer(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
                .trim()
                .replace('\n', " | ")
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(format: Format, file: Option<&str>) -> DumpOptions {
        DumpOptions {
            server: ViewServer {
                repo_spec: "r".into(),
                passphrase: crate::passphrase::Source::default(),
                goal: crate::pitr::Goal {
                    to: crate::pitr::Point::Latest,
                    timeline: Default::default(),
                },
                system: None,
                cache: crate::session::CacheOptions {
                    memory: 0,
                    dir: None,
                    disk_size: 0,
                },
                user: "postgres".into(),
                pg_bin: None,
            },
            dbname: "shop's".into(),
            tables: vec!["orders".into()],
            schemas: Vec::new(),
            format,
            file: file.map(PathBuf::from),
            extra: vec!["--no-owner".into()],
            into: None,
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
    fn the_tables_of_an_archive_are_its_table_entries() {
        let toc = ";\n; Archive created at 2026-12-04\n215; 1259 16385 TABLE public t postgres\n\
                   3340; 0 16385 TABLE DATA public t postgres\n\
                   3195; 2606 16390 CONSTRAINT public t t_pkey postgres\n";
        let data_only = "3340; 0 16400 TABLE DATA public my table postgres\n";
        assert_eq!(archive_table_oids(toc), [16385]);
        assert_eq!(archive_table_oids(data_only), [16400]);
        assert_eq!(archive_table_oids(";\n"), Vec::<u32>::new());
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(literal("it's"), "'it''s'");
    }

    #[test]
    fn named_tables_must_match_and_extra_options_come_last() {
        let o = opts(Format::Custom, Some("/o.dump"));
        let a = pg_dump_args(&o, o.format, o.file.as_deref(), Path::new("/s"), 5);
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

    #[test]
    fn client_programs_beside_the_server_else_the_nearest_newer_debian_major() {
        let dir = tempfile::tempdir().unwrap();
        let put = |rel: &str| {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, "").unwrap();
        };
        put("server/pg_dump");
        put("debian/13/bin/pg_dump");
        put("debian/15/bin/pg_dump");
        put("debian/17/bin/pg_dump");
        put("debian/16/bin/psql");
        let debian = dir.path().join("debian");
        let debian = debian.to_str().unwrap();
        let server = dir.path().join("server");
        let npm = dir.path().join("npm");
        let found = |bin: &Path, major| client(bin, "pg_dump", major, debian).unwrap();
        assert_eq!(found(&server, 14), server.join("pg_dump"));
        assert_eq!(found(&npm, 14), Path::new(debian).join("15/bin/pg_dump"));
        assert_eq!(found(&npm, 16), Path::new(debian).join("17/bin/pg_dump"));
        assert_eq!(found(&npm, 13), Path::new(debian).join("13/bin/pg_dump"));
        let none = client(&npm, "pg_dump", 18, debian).unwrap_err();
        assert!(none.to_string().contains("PostgreSQL 18"), "{none}");
    }
}
