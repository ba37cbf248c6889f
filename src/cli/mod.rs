//! The command line: clap definitions and output. Commands hold no logic of their own; they
//! parse, call the library and print, human-readable by default and JSON with `--json`.

/// `println!` for command output: see [`out`] for what a closed pipe does.
macro_rules! outln {
    () => { $crate::cli::out::write(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::cli::out::write(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `print!` for command output.
macro_rules! out {
    ($($arg:tt)*) => { $crate::cli::out::write(format_args!($($arg)*)) };
}

pub mod out;

mod backup;
mod check;
mod clone;
mod copy;
mod dump;
mod expire;
mod gc;
mod import;
mod info;
mod init;
mod key;
mod locks;
mod metrics;
mod mount;
mod pgbackrest;
mod progress;
mod receive;
mod restore;
mod verify;
mod wal;

use crate::error::{Error, Result};
use crate::pg::target::{Target, TargetAction};
use crate::pitr::{Goal, Point};
use crate::store::{open_backend, Repository};
use crate::walpath::TimelineChoice;
use clap::{Parser, Subcommand};
use progress::progress;

/// The whole command line: options global to every command, and the command.
#[derive(Parser)]
#[command(
    name = "pgsnapfs",
    version,
    about = "PostgreSQL backups you can mount at any point in time"
)]
pub struct Cli {
    /// Repository location: a directory, or s3://bucket/prefix [env: PGSNAPFS_REPO]
    #[arg(long, env = "PGSNAPFS_REPO", global = true, hide_env = true)]
    pub repo: Option<String>,
    /// More logging (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Where the passphrase of an encrypted repository comes from.
    #[command(flatten)]
    pub passphrase: key::PassphraseArgs,
    /// With --repo pgbackrest:PATH: the pgBackRest stanza.
    #[arg(long, global = true)]
    pub stanza: Option<String>,
    /// With --repo pgbackrest:PATH, for mount, verify, restore and dump: where the backups
    /// are imported on first use (default /var/cache/pgsnapfs/pgbackrest for root,
    /// ~/.cache/pgsnapfs/pgbackrest for others).
    #[arg(long, global = true, value_name = "DIR")]
    pub pgbackrest_cache: Option<std::path::PathBuf>,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands; each variant's doc comment is its line in `pgsnapfs --help`.
#[derive(Subcommand)]
pub enum Command {
    /// Create a repository.
    Init(init::Args),
    /// Take an online base backup of a running server.
    Backup(backup::Args),
    /// Archive one WAL file (for archive_command = 'pgsnapfs wal-push %p').
    WalPush(wal::PushArgs),
    /// Send the WAL files that `wal-push --async` queued in a spool to the repository (started
    /// on demand by `wal-push --async`, or run under systemd).
    ArchiveDaemon(wal::DaemonArgs),
    /// Show the queue and state of an asynchronous archiving spool; exit 1 when its archiver
    /// is failing or has dropped WAL.
    ArchiveStatus(wal::StatusArgs),
    /// Restore one archived WAL file (for restore_command = 'pgsnapfs wal-fetch %f %p').
    WalFetch(wal::FetchArgs),
    /// Stream WAL into the repository with the replication protocol, as a (synchronous)
    /// standby would: the recovery point is seconds, or zero with --synchronous.
    WalReceive(receive::Args),
    /// List backups.
    List(info::ListArgs),
    /// Show backups, archived WAL per timeline with gaps, and the restorable range.
    Info(info::InfoArgs),
    /// Write a data directory that recovers to a backup or a point in time.
    Restore(restore::Args),
    /// Mount the catalogue of backups, or (with --backup or --target-*) a writable view of
    /// one point in time that PostgreSQL starts on directly.
    Mount(mount::Args),
    /// Unmount a mount, including a stale one left by a killed process.
    Umount(mount::UmountArgs),
    /// Persistent writable clones of a point in time, sharing the backup's blocks: create,
    /// list, mount, umount, reset, destroy.
    Clone(clone::Args),
    /// Check the repository: every object the backups need is there (and with --read-data
    /// intact), and the WAL is continuous. Exit 3 when something is damaged or missing.
    Check(check::Args),
    /// Restore test: mount a point in time, start PostgreSQL on it, read every table,
    /// check indexes, run assertions, tear down.
    Verify(verify::Args),
    /// Dump a database, schema or table as it was at a backup or point in time (for a
    /// dropped table): a private view, its server and pg_dump, torn down afterwards.
    Dump(dump::Args),
    /// Delete the backups a retention policy does not keep, and the WAL no kept backup needs.
    Expire(expire::Args),
    /// Mark a backup so expire never deletes it (or remove the mark with --off).
    BackupKeep(expire::KeepArgs),
    /// Delete packs no backup uses and repack mostly-unused ones; reports the space freed.
    Gc(gc::Args),
    /// List the leases of commands using the repository, or remove a stale one.
    Locks(locks::Args),
    /// Add, list or remove the passphrases (key slots) of an encrypted repository.
    Key(key::Args),
    /// Print the repository's state as Prometheus metrics (backup ages and sizes, WAL,
    /// last check and verify, restorable range), or serve them over HTTP with --listen.
    Metrics(metrics::Args),
    /// Copy backups (and with --wal archived WAL) that another repository lacks into it:
    /// only missing chunks are sent; a killed copy is resumed by running it again.
    Copy(copy::Args),
    /// Import the backups (and with --wal the archived WAL) of a pgBackRest repository as
    /// native backups: each file checked against pgBackRest's SHA-1, stored deduplicated; a
    /// rerun imports only what is new.
    Import(import::Args),
}

/// Runs the command, opening the repository for those that use one; `Err` carries what
/// `main` reports and the exit code it maps to.
pub fn run(cli: Cli) -> Result<()> {
    let pass = &cli.passphrase;
    // A pgBackRest repository is only read: by list and info, and by the commands that
    // read a backup through the cache repository it is imported into (`crate::foreign`).
    if let Some((spec, path)) = cli
        .repo
        .as_deref()
        .and_then(|spec| Some((spec, pgbackrest::foreign(spec)?)))
    {
        let source = pgbackrest::Source {
            spec,
            path: &path,
            stanza: cli.stanza.as_deref(),
            cache: cli.pgbackrest_cache.as_deref(),
            pass,
        };
        return match cli.command {
            Command::List(a) => pgbackrest::list(&source, a),
            Command::Info(a) => pgbackrest::info(&source, a),
            Command::Mount(mut a) => {
                let cache = source.cache(&mut a.goal)?;
                mount::run(&cache, pass, a, &|spec| open(spec, pass))
            }
            Command::Restore(mut a) => {
                let cache = source.cache(&mut a.goal)?;
                restore::run(&open(&cache, pass)?, &cache, pass, a)
            }
            Command::Verify(mut a) => {
                let signals = crate::session::lifecycle::block_signals();
                let cache = source.cache(&mut a.goal)?;
                verify::run(open(&cache, pass)?, signals, &cache, pass, a)
            }
            Command::Dump(mut a) => {
                let signals = crate::session::lifecycle::block_signals();
                let cache = source.cache(&mut a.goal)?;
                dump::run(open(&cache, pass)?, signals, &cache, pass, a)
            }
            _ => Err(pgbackrest::refuse(spec)),
        };
    }
    let repo = || -> Result<String> {
        cli.repo.clone().ok_or_else(|| {
            Error::BadInput("no repository given: use --repo or set PGSNAPFS_REPO".into())
        })
    };
    let open = |spec: &str| open(spec, pass);
    match cli.command {
        Command::Init(a) => init::run(&repo()?, a, pass),
        Command::Backup(a) if a.archive.from_archive => {
            backup::run_from_archive(&repo()?, pass, a, &open)
        }
        Command::Backup(a) => backup::run(&open(&repo()?)?, a),
        Command::WalPush(a) if a.asynchronous => {
            wal::push_async(a, wal::relaunch_args(&repo()?, pass, cli.verbose)?)
        }
        Command::WalPush(a) => wal::push(&open(&repo()?)?, a),
        Command::ArchiveDaemon(a) => wal::daemon(|| open(&repo()?), a),
        Command::ArchiveStatus(a) => wal::status(a),
        Command::WalFetch(a) => wal::fetch(|| open(&repo()?), a),
        Command::WalReceive(a) => receive::run(&open(&repo()?)?, a),
        Command::List(a) => info::list(&open(&repo()?)?, a),
        Command::Info(a) => info::info(&open(&repo()?)?, a),
        Command::Restore(a) => restore::run(&open(&repo()?)?, &repo()?, pass, a),
        Command::Mount(a) => mount::run(&repo()?, pass, a, &open),
        Command::Umount(a) => mount::umount(a),
        Command::Clone(a) => clone::run(&repo()?, pass, a, &open),
        Command::Verify(a) => {
            // Before any thread starts, opening the repository included: verify cleans up
            // its server and view on SIGINT and SIGTERM.
            let signals = crate::session::lifecycle::block_signals();
            verify::run(open(&repo()?)?, signals, &repo()?, pass, a)
        }
        Command::Dump(a) => {
            let signals = crate::session::lifecycle::block_signals();
            dump::run(open(&repo()?)?, signals, &repo()?, pass, a)
        }
        Command::Check(a) => check::run(&open(&repo()?)?, a),
        Command::Expire(a) => expire::run(&open(&repo()?)?, a),
        Command::BackupKeep(a) => expire::keep(&open(&repo()?)?, a),
        Command::Gc(a) => gc::run(&open(&repo()?)?, a),
        Command::Locks(a) => locks::run(&open(&repo()?)?, a),
        Command::Key(a) => key::run(&open(&repo()?)?, a),
        Command::Copy(a) => copy::run(a, pass),
        Command::Metrics(a) => {
            // Before the repository's threads start: SIGTERM stops the server cleanly.
            let signals = a
                .listen
                .is_some()
                .then(crate::session::lifecycle::block_signals);
            metrics::run(&open(&repo()?)?, signals, a)
        }
        Command::Import(a) => import::run(&open(&repo()?)?, a),
    }
}

/// Opens an existing repository, with a clear error for a missing one; the passphrase is
/// read only if the repository is encrypted.
fn open(spec: &str, pass: &key::PassphraseArgs) -> Result<Repository> {
    open_with(spec, &|location| pass.read(location))
}

/// The passphrase of the repository at a location, read only if it is encrypted.
type SecretFor<'a> =
    &'a dyn Fn(&str) -> std::result::Result<zeroize::Zeroizing<Vec<u8>>, crate::store::StoreError>;

/// [`open`] with the passphrase from `secret`, asked with the repository's location.
fn open_with(spec: &str, secret: SecretFor) -> Result<Repository> {
    if !spec.contains("://") && !std::path::Path::new(spec).is_dir() {
        return Err(Error::BadInput(format!(
            "repository {spec} does not exist; create it with `pgsnapfs init --repo {spec}`"
        )));
    }
    Ok(Repository::open_with(open_backend(spec)?, &|| {
        secret(spec)
    })?)
}

/// Which point to recover to, and along which timeline: shared by restore, mount and verify.
#[derive(clap::Args, Debug, Clone)]
pub struct GoalArgs {
    /// The point to recover to; none given means the latest state.
    #[command(flatten)]
    pub point: PointArgs,
    /// The timeline to recover along: a number, `latest` (the newest timeline that holds the
    /// target) or `current` (the base backup's own timeline). By default a backup keeps its own
    /// timeline and a target goes to the newest timeline that holds it.
    #[arg(long, value_name = "N|latest|current")]
    pub target_timeline: Option<TimelineChoice>,
}

/// The `--backup` and `--target-*` options, of which at most one may be given.
#[derive(clap::Args, Debug, Clone)]
#[group(multiple = false)]
pub struct PointArgs {
    /// A backup as it was when it ended: its id, or `latest`.
    #[arg(long)]
    pub backup: Option<String>,
    /// Recover to this time ('2026-11-20 14:30:00+00' or RFC 3339; no zone = local time).
    #[arg(long)]
    pub target_time: Option<String>,
    /// Recover to this WAL location (e.g. 0/3000060).
    #[arg(long)]
    pub target_lsn: Option<String>,
    /// Recover to this named restore point (pg_create_restore_point).
    #[arg(long)]
    pub target_name: Option<String>,
    /// Recover to the commit of this transaction id.
    #[arg(long)]
    pub target_xid: Option<u32>,
}

impl GoalArgs {
    /// The goal; with nothing given, the latest state: newest backup plus all archived WAL.
    pub fn goal(&self) -> Result<Goal> {
        Ok(Goal {
            to: self.point()?,
            timeline: self.target_timeline.unwrap_or_default(),
        })
    }

    fn point(&self) -> Result<Point> {
        let bad = |e: crate::pg::Error| Error::BadInput(e.to_string());
        let p = &self.point;
        Ok(if let Some(b) = &p.backup {
            Point::Backup(b.clone())
        } else if let Some(t) = &p.target_time {
            Point::Target(Target::Time(crate::pg::target::parse_time(t).map_err(bad)?))
        } else if let Some(l) = &p.target_lsn {
            Point::Target(Target::Lsn(l.parse().map_err(|_| {
                Error::BadInput(format!("{l:?} is not an LSN such as 0/3000060"))
            })?))
        } else if let Some(n) = &p.target_name {
            Point::Target(Target::Name(n.clone()))
        } else if let Some(x) = p.target_xid {
            Point::Target(Target::Xid(x))
        } else {
            Point::Latest
        })
    }
}

/// Parses `--target-action` (pause, promote or shutdown), with a message listing those.
pub fn parse_action(s: &str) -> std::result::Result<TargetAction, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not one of pause, promote, shutdown"))
}

/// Parses a size such as `64K`, `128MiB` or `4G` (binary units).
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let upper = s.to_ascii_uppercase();
    let n = upper.trim_end_matches("IB").trim_end_matches('B');
    let (num, shift) = match n.chars().last() {
        Some('K') => (&n[..n.len() - 1], 10),
        Some('M') => (&n[..n.len() - 1], 20),
        Some('G') => (&n[..n.len() - 1], 30),
        Some('T') => (&n[..n.len() - 1], 40),
        _ => (n, 0),
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| format!("{s:?} is not a size such as 64K, 128MiB or 4G"))
}

/// Caches for commands that read a backup through a mount: `mount` and `verify`.
#[derive(clap::Args)]
pub struct CacheArgs {
    /// Memory for chunks decoded ahead of sequential readers and for archived WAL being read
    /// (the kernel's page cache keeps file pages).
    #[arg(long, default_value = "128MiB", value_parser = parse_size)]
    pub cache_size: u64,
    /// Local disk cache of chunks read from an S3 repository, shared by later mounts and
    /// verifies [env: PGSNAPFS_CACHE_DIR] [default: $XDG_CACHE_HOME/pgsnapfs or
    /// ~/.cache/pgsnapfs]
    #[arg(long, env = "PGSNAPFS_CACHE_DIR", hide_env = true)]
    pub cache_dir: Option<std::path::PathBuf>,
    /// Size limit of that disk cache; 0 turns it off.
    #[arg(long, default_value = "4GiB", value_parser = parse_size)]
    pub disk_cache_size: u64,
}

impl CacheArgs {
    fn options(&self) -> crate::session::CacheOptions {
        crate::session::CacheOptions {
            memory: self.cache_size,
            dir: self.cache_dir.clone(),
            disk_size: self.disk_cache_size,
        }
    }
}

/// The throw-away server of `verify` and `dump`.
#[derive(clap::Args)]
pub struct ServerArgs {
    /// The user the server on the view runs as (and the role that connects to it).
    #[arg(long, default_value = "postgres")]
    pub user: String,
    /// Directory of the backup's PostgreSQL programs [default: /usr/lib/postgresql/MAJOR/bin].
    #[arg(long)]
    pub pg_bin: Option<std::path::PathBuf>,
    /// The caches of the view's mount.
    #[command(flatten)]
    pub cache: CacheArgs,
    /// The cluster, when the repository holds several.
    #[arg(long)]
    pub system: Option<u64>,
}

impl ServerArgs {
    fn view_server(
        self,
        repo_spec: &str,
        pass: &key::PassphraseArgs,
        goal: crate::pitr::Goal,
    ) -> crate::verify::ViewServer {
        crate::verify::ViewServer {
            repo_spec: repo_spec.to_string(),
            passphrase: pass.source(),
            goal,
            system: self.system,
            cache: self.cache.options(),
            user: self.user,
            pg_bin: self.pg_bin,
        }
    }
}

/// "1.5 GiB"-style sizes for humans.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// The help of `--json` where the command prints nothing more specific.
const JSON_HELP: &str = "Print the result as JSON on stdout, for scripts and monitoring.";

fn print_json(value: &impl serde::Serialize) {
    outln!(
        "{}",
        serde_json::to_string_pretty(value).expect("serializes")
    );
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }

    /// Every option and argument of every command says what it is for in `--help`.
    #[test]
    fn every_argument_has_a_help_text() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if !builtin
                    && arg
                        .get_help()
                        .is_none_or(|h| h.to_string().trim().is_empty())
                {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "pgsnapfs", &mut missing);
        assert!(
            missing.is_empty(),
            "arguments without a help text: {missing:?}"
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(super::parse_size("64K"), Ok(65536));
        assert_eq!(super::parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(super::parse_size("4G"), Ok(4 << 30));
        assert_eq!(super::parse_size("8192"), Ok(8192));
        assert!(super::parse_size("lots").is_err());
        assert!(super::parse_size("99999999T").is_err());
    }

    #[test]
    fn sizes_for_humans() {
        assert_eq!(super::human(512), "512 B");
        assert_eq!(super::human(1536), "1.5 KiB");
    }
}
