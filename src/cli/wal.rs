//! `pgsnapfs wal-push` (with `--async`, `archive-daemon` and `archive-status`) and
//! `pgsnapfs wal-fetch`

use crate::archive::{self, PushOutcome, Pushed};
use crate::archiver::{self, AsyncOptions, Ended, PusherOptions};
use crate::error::{Error, Result};
use crate::pg::lsn::Lsn;
use crate::prefetch;
use crate::spool::{Limit, Spool};
use crate::store::backend::RequestCounts;
use crate::store::Repository;
use crate::tblspc::Guard;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args)]
pub struct PushArgs {
    /// The WAL file (%p).
    pub path: PathBuf,
    /// Print what was done as JSON on stdout: the object key, the size, the outcome (`stored`
    /// or `already_archived`), and on S3 the requests it took.
    #[arg(long)]
    pub json: bool,
    /// Queue the file in the spool (copied and fsynced) and return; a background archiver
    /// (`archive-daemon`, started on demand) sends it to the repository.
    #[arg(long = "async", requires = "spool")]
    pub asynchronous: bool,
    /// With --async: the spool directory, one per cluster, on local disk outside the data
    /// directory (e.g. /var/spool/pgsnapfs/main) [env: PGSNAPFS_SPOOL]
    #[arg(long, env = "PGSNAPFS_SPOOL", hide_env = true)]
    pub spool: Option<PathBuf>,
    #[command(flatten)]
    pub queue: QueueArgs,
}

/// What `wal-push --async` does when the archiver cannot keep up.
#[derive(clap::Args)]
pub struct QueueArgs {
    /// With --async: files the archiver it starts pushes at once.
    #[arg(long, default_value_t = 2)]
    pub process_max: usize,
    /// With --async: a file that would take the spool over this size is refused, so
    /// PostgreSQL keeps it in pg_wal and retries (nothing is lost).
    #[arg(long, default_value = "4GiB", value_parser = super::parse_size)]
    pub spool_max: u64,
    /// With --async: instead of refusing, DROP a file that would take the spool over this
    /// size, with an error and a marker that `info` and `check` report as a gap. The server
    /// never stops for archiving, and WAL is lost to the archive.
    #[arg(long, value_parser = super::parse_size, conflicts_with = "spool_max")]
    pub queue_max: Option<u64>,
    /// With --async (without --queue-max): fail, so PostgreSQL keeps its WAL, once the
    /// archiver has failed for this many seconds; the error is the archiver's.
    #[arg(long, default_value_t = 60)]
    pub fail_after: u64,
}

#[derive(clap::Args)]
pub struct DaemonArgs {
    /// The spool directory that `wal-push --async --spool` fills [env: PGSNAPFS_SPOOL]
    #[arg(long, env = "PGSNAPFS_SPOOL", hide_env = true)]
    pub spool: PathBuf,
    /// Files pushed to the repository at once.
    #[arg(long, default_value_t = 2)]
    pub process_max: usize,
    /// Exit once the queue has been empty this many seconds (run forever if not given).
    #[arg(long)]
    pub idle_exit: Option<u64>,
}

#[derive(clap::Args)]
pub struct StatusArgs {
    /// The spool directory [env: PGSNAPFS_SPOOL]
    #[arg(long, env = "PGSNAPFS_SPOOL", hide_env = true)]
    pub spool: PathBuf,
    #[arg(long, help = super::JSON_HELP)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct FetchArgs {
    /// The WAL file name wanted (%f).
    pub name: String,
    /// Where to write it (%p).
    pub dest: PathBuf,
    /// The cluster, when the repository holds several.
    #[arg(long)]
    pub system: Option<u64>,
    /// Also fetch the next N segments, in parallel, into the prefetch directory; later calls
    /// are served from there (checked against their digest) without opening the repository.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=256))]
    pub prefetch: u32,
    /// Where prefetched segments wait [default: pgsnapfs-prefetch beside the destination, i.e.
    /// in pg_wal]
    #[arg(long)]
    pub prefetch_dir: Option<PathBuf>,
    /// Serving a view (its restore_command sets this): hand over no segment that creates a
    /// tablespace at a location other than one of the view's covers in this directory.
    #[arg(long, conflicts_with = "prefetch")]
    pub view_tablespaces: Option<PathBuf>,
    /// With --view-tablespaces: where the view's replay starts.
    #[arg(long, requires = "view_tablespaces", default_value = "0/0")]
    pub replay_from: Lsn,
    /// With --view-tablespaces: where the view's replay ends, when it ends at a position.
    #[arg(long, requires = "view_tablespaces")]
    pub replay_until: Option<Lsn>,
}

pub fn push(repo: &Repository, a: PushArgs) -> Result<()> {
    let pushed = archive::push(repo, &a.path)?;
    if pushed.outcome == PushOutcome::AlreadyArchived {
        tracing::info!(
            "{} was already archived with identical content",
            a.path.display()
        );
    }
    if a.json {
        #[derive(serde::Serialize)]
        struct Out {
            file: String,
            #[serde(flatten)]
            pushed: Pushed,
            #[serde(skip_serializing_if = "Option::is_none")]
            requests: Option<RequestCounts>,
        }
        super::print_json(&Out {
            file: a.path.display().to_string(),
            pushed,
            requests: repo.backend().stats(),
        });
    }
    Ok(())
}

/// `wal-push --async`: queue, start an archiver if none runs, report its failures.
/// `relaunch` holds the options the archiver needs: repository and key.
pub fn push_async(a: PushArgs, relaunch: Vec<OsString>) -> Result<()> {
    let dir = a
        .spool
        .as_deref()
        .ok_or_else(|| Error::BadInput("--async needs --spool DIR (or PGSNAPFS_SPOOL)".into()))?;
    let spool = Spool::open(dir)?;
    let q = &a.queue;
    let opts = AsyncOptions {
        limit: match q.queue_max {
            Some(max) => Limit::Drop(max),
            None => Limit::Block(q.spool_max),
        },
        fail_after: Duration::from_secs(q.fail_after),
    };
    let mut args: Vec<OsString> = vec![
        "archive-daemon".into(),
        "--spool".into(),
        spool.dir().into(),
        "--process-max".into(),
        q.process_max.to_string().into(),
        "--idle-exit".into(),
        "60".into(),
    ];
    args.extend(relaunch);
    let queued = archiver::push_async(&spool, &a.path, &opts, || {
        archiver::spawn_pusher(&spool, &args)
    })?;
    if a.json {
        #[derive(serde::Serialize)]
        struct Out {
            file: String,
            spool: String,
            outcome: crate::spool::Enqueued,
        }
        super::print_json(&Out {
            file: a.path.display().to_string(),
            spool: spool.dir().display().to_string(),
            outcome: queued,
        });
    }
    Ok(())
}

/// The options a command this one starts (the archiver) needs to open the same repository
/// from another directory: absolute repository and passphrase file, verbosity.
pub fn relaunch_args(
    spec: &str,
    pass: &super::key::PassphraseArgs,
    verbose: u8,
) -> Result<Vec<std::ffi::OsString>> {
    let absolute = |p: &std::path::Path| {
        std::path::absolute(p).map_err(crate::error::io(format!("resolve {}", p.display())))
    };
    let repo = match spec.contains("://") {
        true => spec.into(),
        false => absolute(std::path::Path::new(spec))?.into_os_string(),
    };
    let mut args = vec!["--repo".into(), repo];
    if let Some(f) = &pass.passphrase_file {
        args.extend(["--passphrase-file".into(), absolute(f)?.into_os_string()]);
    }
    if let Some(c) = &pass.passphrase_command {
        args.extend(["--passphrase-command".into(), c.into()]);
    }
    args.extend((0..verbose).map(|_| "-v".into()));
    Ok(args)
}

/// `archive-daemon`: the archiver of one spool.
pub fn daemon(open: impl Fn() -> Result<Repository>, a: DaemonArgs) -> Result<()> {
    let spool = Spool::open(&a.spool)?;
    let opts = PusherOptions {
        process_max: a.process_max.max(1),
        idle_exit: a.idle_exit.map(Duration::from_secs),
    };
    match archiver::run_pusher(open, &spool, &opts)? {
        Ended::Idle => Ok(()),
        // Started on demand by two pushes at once: the other one works.
        Ended::AlreadyRunning(_) if a.idle_exit.is_some() => Ok(()),
        Ended::AlreadyRunning(pid) => Err(Error::BadInput(format!(
            "an archiver already runs on spool {} (pid {}); one per spool",
            spool.dir().display(),
            pid.map_or("unknown".into(), |p| p.to_string())
        ))),
    }
}

/// `archive-status`: the spool's queue and its archiver's state; exit 1 when it fails or
/// has dropped WAL.
pub fn status(a: StatusArgs) -> Result<()> {
    if !a.spool.is_dir() {
        return Err(Error::NotFound(format!(
            "no spool at {}",
            a.spool.display()
        )));
    }
    let r = archiver::report(&Spool::open(&a.spool)?)?;
    if a.json {
        super::print_json(&r);
    } else {
        outln!("spool        {}", r.spool);
        match r.pusher_pid {
            Some(pid) => outln!("archiver     running (pid {pid})"),
            None => outln!("archiver     not running"),
        }
        outln!(
            "queued       {} files, {}{}",
            r.queued_files,
            super::human(r.queued_bytes),
            r.oldest_queued
                .as_ref()
                .map_or(String::new(), |o| format!(", oldest {o}"))
        );
        if let Some(s) = &r.status {
            if let (Some(name), Some(at)) = (&s.last_archived, s.last_archived_at) {
                outln!("archived     {name} at {at}");
            }
            if let (Some(e), Some(at)) = (&s.last_error, s.last_error_at) {
                outln!("last error   {at}: {e}");
            }
        }
        if let Some(since) = r.failing_since {
            outln!("FAILING      since {since}");
        }
        for d in &r.dropped {
            outln!(
                "DROPPED      {} at {} (not yet recorded in the repository)",
                d.name,
                d.dropped_at
            );
        }
    }
    match (r.failing_since, r.dropped.len()) {
        (None, 0) => Ok(()),
        (Some(since), _) => Err(Error::ArchiveQueue(format!(
            "the archiver of spool {} has failed since {since}",
            r.spool
        ))),
        (None, n) => Err(Error::ArchiveQueue(format!(
            "{n} WAL files were dropped (--queue-max) and are not yet recorded in the repository"
        ))),
    }
}

pub fn fetch(open: impl FnOnce() -> Result<Repository>, a: FetchArgs) -> Result<()> {
    if let Some(covers) = a.view_tablespaces {
        let guard = Guard {
            covers,
            start: a.replay_from,
            end: a.replay_until,
        };
        let check = |data: &[u8]| guard.check(&a.name, data);
        return archive::fetch_checked(&open()?, a.system, &a.name, &a.dest, &check);
    }
    if a.prefetch == 0 {
        return archive::fetch(&open()?, a.system, &a.name, &a.dest);
    }
    let dir = a
        .prefetch_dir
        .clone()
        .unwrap_or_else(|| prefetch::default_dir(&a.dest));
    if prefetch::serve(&dir, &a.name, &a.dest)? {
        return Ok(());
    }
    prefetch::fetch(&open()?, a.system, &a.name, &a.dest, &dir, a.prefetch)
}
