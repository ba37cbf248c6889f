//! `pgsnapfs backup`

use super::key::PassphraseArgs;
use super::progress::set_total;
use super::{human, print_json, progress};
use crate::backup::{self, BackupOptions, ReadFrom};
use crate::error::{Error, Result};
use crate::fromarchive::{self, Outcome};
use crate::pg::target::Target;
use crate::server::ConnOpts;
use crate::store::Repository;
use std::path::PathBuf;

/// `-h` is the host, as in every PostgreSQL tool, so help is `--help` only.
#[derive(clap::Args)]
#[command(disable_help_flag = true)]
pub struct Args {
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// The server's data directory [env: PGDATA]
    #[arg(
        short = 'D',
        long,
        env = "PGDATA",
        hide_env = true,
        required_unless_present_any = ["from_archive", "from_standby"]
    )]
    pub pgdata: Option<PathBuf>,
    #[command(flatten)]
    pub conn: ConnOpts,
    #[command(flatten)]
    pub standby: StandbyArgs,
    /// Back up only when the server is a primary: on a server in recovery (a standby) do
    /// nothing and exit 0, for one schedule on every node of a cluster (Patroni).
    #[arg(long, conflicts_with = "from_archive")]
    pub only_on_primary: bool,
    /// Backup label shown by the server.
    #[arg(long)]
    pub label: Option<String>,
    /// Read and hash every file, even when the server's WAL summaries (PostgreSQL 17+,
    /// summarize_wal = on) say which blocks changed since the previous backup.
    #[arg(long)]
    pub full_read: bool,
    /// Print the backup record as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub archive: FromArchiveArgs,
}

/// `--from-standby=require|prefer`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FromStandby {
    /// Read the standby's files; fail when it cannot be used.
    Require,
    /// Read the standby's files; when no standby answers, the primary's (--pgdata).
    Prefer,
}

/// `--from-standby` and the standby's location.
#[derive(clap::Args)]
pub struct StandbyArgs {
    /// Read the files of a streaming standby of the server (-h/-p/-d name the primary,
    /// which starts and stops the backup and archives its WAL). `prefer` falls back to the
    /// primary's files (--pgdata) when the standby does not answer.
    #[arg(
        long,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "require",
        conflicts_with = "from_archive",
        requires = "standby_pgdata"
    )]
    pub from_standby: Option<FromStandby>,
    /// The standby's data directory, read directly.
    #[arg(long, requires = "from_standby")]
    pub standby_pgdata: Option<PathBuf>,
    /// The standby's host or socket directory (default: the primary's -h).
    #[arg(long, requires = "from_standby")]
    pub standby_host: Option<String>,
    /// The standby's port (default: the primary's -p).
    #[arg(long, requires = "from_standby")]
    pub standby_port: Option<u16>,
    /// The standby's connection string, instead of --standby-host/--standby-port (the
    /// primary's -U applies unless it names a user).
    #[arg(long, requires = "from_standby")]
    pub standby_dbname: Option<String>,
}

impl StandbyArgs {
    /// The standby to read, its connection built from the primary's where not given.
    fn source(&self, primary: &ConnOpts) -> Option<backup::StandbySource> {
        let mode = self.from_standby?;
        let pgdata = self.standby_pgdata.clone()?;
        // A primary conninfo string names the primary's host: only its database carries over.
        let dbname = self.standby_dbname.clone().or_else(|| {
            primary
                .dbname
                .clone()
                .filter(|d| !d.contains('=') && !d.contains("://"))
        });
        Some(backup::StandbySource {
            pgdata,
            conn: ConnOpts {
                dbname,
                host: self.standby_host.clone().or_else(|| primary.host.clone()),
                port: self.standby_port.or(primary.port),
                username: primary.username.clone(),
            },
            prefer: mode == FromStandby::Prefer,
        })
    }
}

/// `--from-archive` and the options that go with it.
#[derive(clap::Args)]
pub struct FromArchiveArgs {
    /// Make the backup from the repository alone, without the server: replay the archived
    /// WAL on the newest suitable backup, and store the result.
    #[arg(long)]
    pub from_archive: bool,
    /// The cluster, when the repository holds several.
    #[arg(long, requires = "from_archive")]
    pub system: Option<u64>,
    /// Replay up to this LSN (inclusive: a record must start there or later); default: the
    /// last record of the newest archived segment.
    #[arg(long, requires = "from_archive", conflicts_with = "target_time")]
    pub target_lsn: Option<String>,
    /// Replay up to the first commit at or after this time.
    #[arg(long, requires = "from_archive")]
    pub target_time: Option<String>,
    /// The operating-system user the replaying server runs as.
    #[arg(long, default_value = "postgres", requires = "from_archive")]
    pub user: String,
    /// The directory of the server's programs for the backup's major version (default:
    /// Debian's /usr/lib/postgresql/MAJOR/bin).
    #[arg(long, requires = "from_archive")]
    pub pg_bin: Option<PathBuf>,
    /// Where the view and the server's socket go while it runs (a new directory in it,
    /// removed afterwards); default: the system's temporary directory.
    #[arg(long, requires = "from_archive")]
    pub work_dir: Option<PathBuf>,
    /// shared_buffers of the replaying server.
    #[arg(long, default_value = "1GB", requires = "from_archive")]
    pub shared_buffers: String,
}

impl FromArchiveArgs {
    fn target(&self) -> Result<Option<Target>> {
        let bad = |e: crate::pg::Error| Error::BadInput(e.to_string());
        Ok(match (&self.target_lsn, &self.target_time) {
            (Some(l), _) => Some(Target::Lsn(l.parse().map_err(|_| {
                Error::BadInput(format!("{l:?} is not an LSN such as 0/3000060"))
            })?)),
            (None, Some(t)) => Some(Target::Time(crate::pg::target::parse_time(t).map_err(bad)?)),
            (None, None) => None,
        })
    }
}

fn threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

/// `backup --from-archive`: the signals are blocked before the repository is opened (its
/// threads inherit the mask), so that a SIGINT stops the server and cleans up.
pub fn run_from_archive(
    repo_spec: &str,
    pass: &PassphraseArgs,
    a: Args,
    open: &dyn Fn(&str) -> Result<Repository>,
) -> Result<()> {
    let signals = crate::session::lifecycle::block_signals();
    let repo = open(repo_spec)?;
    let f = &a.archive;
    let outcome = fromarchive::run(
        repo,
        fromarchive::Options {
            repo_spec: repo_spec.to_string(),
            passphrase: pass.source(),
            system: f.system,
            target: f.target()?,
            work_dir: f.work_dir.clone(),
            user: f.user.clone(),
            pg_bin: f.pg_bin.clone(),
            shared_buffers: f.shared_buffers.clone(),
            label: a.label.clone(),
            threads: threads(),
        },
        signals,
    )?;
    let snap = match outcome {
        Outcome::Stored(snap) => snap,
        Outcome::UpToDate { backup, end } => {
            outln!(
                "backup {backup} already reaches the end of the archived WAL ({end}): nothing \
                 to do"
            );
            return Ok(());
        }
    };
    if a.json {
        print_json(&super::info::BackupRow::from(&*snap));
    } else {
        let from = snap.from_archive.as_ref();
        outln!(
            "backup {} done from the archive: backup {} plus WAL to {}, {} read of {}, {} \
             newly stored; restores start at {} on timeline {}",
            snap.id,
            from.map_or("?", |f| f.base.as_str()),
            snap.stop_lsn,
            human(from.map_or(0, |f| f.bytes_read)),
            human(snap.size_logical),
            human(snap.size_stored_new),
            snap.start_lsn,
            snap.timeline
        );
    }
    Ok(())
}

pub fn run(repo: &Repository, a: Args) -> Result<()> {
    if a.only_on_primary && backup::in_recovery(&a.conn)? {
        let reason = "the server is in recovery (a standby): only a primary is backed up \
                      (--only-on-primary)";
        if a.json {
            print_json(&serde_json::json!({ "skipped": true, "reason": reason }));
        } else {
            outln!("nothing to do: {reason}");
        }
        return Ok(());
    }
    let bar = progress(None, "backing up");
    let (tick, sized) = (bar.clone(), bar.clone());
    let threads = threads();
    let done = backup::run(
        repo,
        BackupOptions {
            standby: a.standby.source(&a.conn),
            pgdata: a.pgdata,
            conn: a.conn,
            label: a.label,
            threads,
            full_read: a.full_read,
            progress: Box::new(move |n| tick.inc(n)),
            total: Box::new(move |total| set_total(&sized, total)),
        },
    )?;
    bar.finish_and_clear();
    let snap = done.snapshot;
    match &done.read_from {
        ReadFrom::Primary => {}
        ReadFrom::Standby => {
            eprintln!("read the standby's files; the primary started and stopped the backup")
        }
        ReadFrom::PrimaryInstead(why) => eprintln!(
            "no standby reachable ({why}): read the primary's files instead (--from-standby=prefer)"
        ),
    }
    if !done.config_outside.is_empty() {
        eprintln!(
            "the server's configuration is outside its data directory and not in this backup \
             (keep copies of it): {}",
            done.config_outside.join(", ")
        );
    }
    if a.json {
        print_json(&super::info::BackupRow::from(&snap));
    } else {
        outln!(
            "backup {} done: {} in {} files, {} newly stored, WAL {} – {} on timeline {}",
            snap.id,
            human(snap.size_logical),
            snap.files,
            human(snap.size_stored_new),
            snap.start_lsn,
            snap.stop_lsn,
            snap.timeline
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{FromStandby, StandbyArgs};
    use crate::server::ConnOpts;

    #[test]
    fn the_standby_connection_borrows_what_the_primary_gives() {
        let args = StandbyArgs {
            from_standby: Some(FromStandby::Prefer),
            standby_pgdata: Some("/nonexistent/standby".into()),
            standby_host: None,
            standby_port: Some(5433),
            standby_dbname: None,
        };
        let primary = ConnOpts {
            dbname: Some("appdb".into()),
            host: Some("/run/postgresql".into()),
            port: Some(5432),
            username: Some("pgsnapfs_backup".into()),
        };
        let s = args.source(&primary).expect("a standby source");
        assert!(s.prefer);
        assert_eq!(s.conn.host.as_deref(), Some("/run/postgresql"));
        assert_eq!(s.conn.port, Some(5433));
        assert_eq!(s.conn.dbname.as_deref(), Some("appdb"));
        assert_eq!(s.conn.username.as_deref(), Some("pgsnapfs_backup"));
        // A primary's connection string names the primary's host: it does not carry over.
        let primary = ConnOpts {
            dbname: Some("host=primary dbname=appdb".into()),
            ..primary
        };
        assert_eq!(args.source(&primary).expect("source").conn.dbname, None);
        let none = StandbyArgs {
            from_standby: None,
            ..args
        };
        assert!(none.source(&primary).is_none());
    }
}
