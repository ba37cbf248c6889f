//! `pgsnapfs restore`

use super::{human, parse_action, print_json, progress, GoalArgs};
use crate::delta::{self, DeltaCounts};
use crate::error::{Error, Result};
use crate::pg::layout::tablespace_version_dir;
use crate::pg::recovery::{self, RecoverySettings};
use crate::pg::target::TargetAction;
use crate::pitr::Plan;
use crate::restore::{self, ArchiveMode, Archiving, RestoreOptions};
use crate::store::Repository;
use crate::tblspc;
use crate::walfetch;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// The directory to write (missing or empty; with --delta, an existing data directory).
    #[arg(long)]
    pub to: PathBuf,
    #[command(flatten)]
    pub goal: GoalArgs,
    /// What the server does at the target.
    #[arg(long, default_value = "pause", value_parser = parse_action)]
    pub target_action: TargetAction,
    /// Put tablespace OID at DIR instead of its original location (repeatable).
    #[arg(long, value_name = "OID=DIR", value_parser = parse_map)]
    pub tablespace_map: Vec<(u32, PathBuf)>,
    /// The cluster, when the repository holds several.
    #[arg(long)]
    pub system: Option<u64>,
    /// preserve: keep the backup's archive settings, so a server that replaces a lost one
    /// archives on; off: write archive_mode = off, for a test restore that must never
    /// push WAL into the production archive.
    #[arg(long, value_enum, default_value = "preserve")]
    pub archive_mode: ArchiveMode,
    /// Bring an existing data directory (an old primary, a standby that fell behind) to the
    /// backup in place: only chunks whose content differs are written, files the backup
    /// lacks are removed. Its server must be stopped.
    #[arg(long)]
    pub delta: bool,
    /// With --delta: replace a directory of another cluster (or not a data directory at all).
    #[arg(long, requires = "delta")]
    pub force: bool,
    /// Let the restored server's replay of a CREATE TABLESPACE take over the version
    /// directory (PG_<major>_<catversion>) it finds at the recorded location on this host,
    /// writing over the files there. Without it, such a restore is refused.
    #[arg(long)]
    pub overwrite_tablespaces: bool,
    #[arg(long, help = super::JSON_HELP)]
    pub json: bool,
}

/// What `restore --json` prints.
#[derive(serde::Serialize)]
struct Summary<'a> {
    backup: &'a str,
    files: u64,
    bytes: u64,
    /// Present with --delta.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    delta: Option<DeltaCounts>,
    seconds: f64,
}

fn parse_map(s: &str) -> std::result::Result<(u32, PathBuf), String> {
    let (oid, dir) = s.split_once('=').ok_or("expected OID=DIR")?;
    Ok((
        oid.parse()
            .map_err(|_| format!("{oid:?} is not a tablespace OID"))?,
        PathBuf::from(dir),
    ))
}

pub fn run(
    repo: &Repository,
    repo_spec: &str,
    pass: &super::key::PassphraseArgs,
    a: Args,
) -> Result<()> {
    // Refused before anything is said or locked.
    if !a.delta {
        crate::restore::check_empty(&a.to, "restore directory")?;
    }
    let lease = crate::session::lease_unless_full(repo, "restore")?;
    if lease.is_none() {
        eprintln!(
            "pgsnapfs: warning: no space in the repository for this restore's lease; \
             restoring without it: run no expire or gc until the restore is done"
        );
    }
    let plan = crate::session::plan_pinned(repo, lease.as_ref(), a.system, &a.goal.goal()?)?;
    let snap = &plan.snapshot;
    eprintln!(
        "restoring backup {} (PostgreSQL {}, {}, ended {}) to {}, recovering to {}; about {} \
         of WAL to replay",
        snap.id,
        snap.pg_major,
        human(snap.size_logical),
        snap.stop_time.to_rfc3339(),
        a.to.display(),
        plan.describe(),
        human(plan.replay_bytes)
    );
    for line in tablespaces_replayed(repo, &plan, &a)? {
        eprintln!("pgsnapfs: {line}");
    }
    let key_options = walfetch::key_options(repo, &pass.source())?;
    if repo.crypto().is_encrypted() && key_options.is_empty() {
        eprintln!(
            "the repository is encrypted: the server's restore_command reads PGSNAPFS_PASSPHRASE \
             from the server's environment"
        );
    }
    let settings = RecoverySettings {
        restore_command: walfetch::restore_command(
            repo_spec,
            plan.system.system_identifier,
            &key_options,
        )?,
        target: plan.target.clone(),
        action: a.target_action,
        timeline: Some(plan.timeline.to_string()),
    };
    let bar = progress(Some(snap.size_logical), "restoring");
    let tick = bar.clone();
    let started = Instant::now();
    let opts = RestoreOptions {
        to: a.to.clone(),
        tablespace_map: a.tablespace_map.into_iter().collect::<HashMap<_, _>>(),
        threads: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2),
        progress: Box::new(move |n| tick.inc(n)),
        recovery: recovery::render(&settings, snap.pg_major),
        archive_mode: a.archive_mode,
    };
    let (done, counts) = match a.delta {
        true => delta::run(repo, &plan, &opts, a.force)
            .map(|d| (d.restored, Some(d.counts)))
            .inspect_err(|e| {
                if !matches!(e, Error::BadInput(_)) {
                    eprintln!(
                        "pgsnapfs: {} is not ready to start: run the same restore --delta \
                         again to complete it",
                        a.to.display()
                    );
                }
            })?,
        false => restore::run(repo, &plan, &opts)
            .map(|d| (d, None))
            .inspect_err(|e| {
                if !matches!(e, Error::BadInput(_)) {
                    eprintln!(
                        "pgsnapfs: {} may be incomplete: delete it before trying again",
                        a.to.display()
                    );
                }
            })?,
    };
    bar.finish_and_clear();
    if let Some(removed) = recovery::describe_removed(&done.rewritten) {
        eprintln!(
            "pgsnapfs: warning: backup {} carries the recovery settings of an earlier recovery; \
             removed so they cannot stop this recovery early: {removed}",
            snap.id
        );
    }
    let start = if done.has_postgresql_conf {
        format!("pg_ctl -D {} start", a.to.display())
    } else {
        format!(
            "the backup has no postgresql.conf (configuration kept outside the data directory, \
             e.g. Debian's /etc/postgresql/{major}/main, which the backup does not hold): start \
             it with that configuration (systemctl start postgresql@{major}-main, or pg_ctl -D \
             {} -o '-c config_file=FILE' start)",
            a.to.display(),
            major = snap.pg_major
        )
    };
    if a.json {
        print_json(&Summary {
            backup: &snap.id,
            files: done.files,
            bytes: done.bytes,
            delta: counts,
            seconds: started.elapsed().as_secs_f64(),
        });
        eprintln!("{}", describe_archiving(&done.archiving));
        return Ok(());
    }
    if let Some(c) = &counts {
        outln!(
            "compared {}, wrote {} in {} files, removed {} files the backup lacks",
            human(c.bytes_compared),
            human(c.bytes_written),
            c.files_written,
            c.files_removed
        );
    }
    outln!(
        "restored {} files ({}) in {:.1}s. Start it with PostgreSQL {}'s server: {start}",
        done.files,
        human(done.bytes),
        started.elapsed().as_secs_f64(),
        snap.pg_major,
    );
    outln!("{}", describe_archiving(&done.archiving));
    if matches!(a.target_action, TargetAction::Pause) {
        super::mount::warn_held_locks(repo, &plan, false);
    }
    Ok(())
}

/// The tablespace creations the restored server's replay carries out on this host (it runs
/// unconfined): refused where one would remove a directory, else what recovery will do.
fn tablespaces_replayed(repo: &Repository, plan: &Plan, a: &Args) -> Result<Vec<String>> {
    let major = plan.snapshot.pg_major;
    let version = crate::pg::version::major(major).ok_or_else(|| {
        Error::BadInput(format!(
            "backup {} is of PostgreSQL {major}, which pgsnapfs does not know",
            plan.snapshot.id
        ))
    })?;
    let version_dir = tablespace_version_dir(major, version.catalog_version);
    // With --delta, a link of the directory's own pg_tblspc to the location: its own.
    let own = |oid: u32, location: &Path| {
        let link = a.to.join("pg_tblspc").join(oid.to_string());
        a.delta
            && std::fs::canonicalize(link)
                .is_ok_and(|l| std::fs::canonicalize(location).is_ok_and(|p| p == l))
    };
    let found: Vec<_> = tblspc::replayed(repo, plan)?
        .into_iter()
        .map(|c| {
            let host = tblspc::on_host(&c, &version_dir, own);
            (c, host)
        })
        .collect();
    tblspc::restore_check(&found, a.overwrite_tablespaces)
}

/// Where the restored server's WAL goes once it is started.
fn describe_archiving(archiving: &Archiving) -> String {
    match archiving {
        Archiving::Off => "archive_mode is off: the restored server will not archive WAL".into(),
        Archiving::On {
            command: None,
            library: None,
        } => "archive_mode is on but no archive_command is set: the restored server will keep \
              its WAL until one is"
            .into(),
        Archiving::On {
            command: None,
            library: Some(library),
        } => format!(
            "archive_mode is on: once started, the restored server archives WAL with \
             archive_library = {}; for a test restore, restore again with --archive-mode off",
            recovery::quote(library)
        ),
        Archiving::On {
            command: Some(command),
            ..
        } => format!(
            "archive_mode is on: once started, the restored server archives WAL{} with \
             archive_command = {}; for a test restore, restore again with --archive-mode off",
            walfetch::archive_target(command)
                .map(|r| format!(" into {r}"))
                .unwrap_or_default(),
            recovery::quote(command)
        ),
        Archiving::Unknown => {
            "the data directory has no postgresql.conf: the restored server archives WAL as \
             the configuration it is started with says; restore with --archive-mode off for \
             a test restore"
                .into()
        }
    }
}
