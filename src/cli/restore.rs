//! `pgsnapfs restore`

use super::{human, parse_action, progress, GoalArgs};
use crate::error::{Error, Result};
use crate::lock::Lease;
use crate::pg::recovery::{self, RecoverySettings};
use crate::pg::target::TargetAction;
use crate::pitr::{self, Plan};
use crate::restore::{self, RestoreOptions};
use crate::store::{BackendError, Repository, StoreError};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// The directory to write (missing or empty).
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
}

fn parse_map(s: &str) -> std::result::Result<(u32, PathBuf), String> {
    let (oid, dir) = s.split_once('=').ok_or("expected OID=DIR")?;
    Ok((
        oid.parse()
            .map_err(|_| format!("{oid:?} is not a tablespace OID"))?,
        PathBuf::from(dir),
    ))
}

/// Shell-quotes a word for restore_command, which PostgreSQL runs through sh.
pub(super) fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The restore_command that fetches WAL of this plan's cluster from this repository.
/// `key` holds the options that give `wal-fetch` the key of an encrypted repository.
pub fn restore_command(repo_spec: &str, plan: &Plan, key: &str) -> Result<String> {
    let exe = std::env::current_exe().map_err(crate::error::io("find the pgsnapfs executable"))?;
    // The server runs the command in its data directory: use an absolute repository path.
    let repo = if repo_spec.contains("://") {
        repo_spec.to_string()
    } else {
        std::fs::canonicalize(repo_spec)
            .map_err(crate::error::io(format!("resolve {repo_spec}")))?
            .display()
            .to_string()
    };
    Ok(format!(
        "{} wal-fetch --repo {}{key} --system {} %f %p",
        sh_quote(&exe.display().to_string()),
        sh_quote(&repo),
        plan.system.system_identifier
    ))
}

/// The key options of a restored server's (or a verify server's) `wal-fetch`: the same
/// passphrase file or command as this run, or PGSNAPFS_PASSPHRASE from its environment.
pub fn fetch_key(repo: &Repository, pass: &super::key::PassphraseArgs) -> Result<String> {
    if !repo.crypto().is_encrypted() {
        return Ok(String::new());
    }
    let options = pass.fetch_options()?;
    if options.is_empty() {
        eprintln!(
            "the repository is encrypted: the server's restore_command reads PGSNAPFS_PASSPHRASE \
             from the server's environment"
        );
    }
    Ok(options)
}

pub fn run(
    repo: &Repository,
    repo_spec: &str,
    pass: &super::key::PassphraseArgs,
    a: Args,
) -> Result<()> {
    // A full repository disk must not stand between a lost server and its restore: without
    // room for the lease, restore goes on unprotected and says so.
    let lease = match Lease::shared(repo, "restore") {
        Err(Error::Store(StoreError::Backend(BackendError::NoSpace { .. }))) => {
            eprintln!(
                "pgsnapfs: warning: no space in the repository for this restore's lease; \
                 restoring without it: run no expire or gc until the restore is done"
            );
            None
        }
        lease => Some(lease?),
    };
    let plan = match &lease {
        Some(lease) => super::plan_pinned(repo, lease, a.system, &a.goal.goal()?)?,
        None => pitr::plan(repo, a.system, &a.goal.goal()?)?,
    };
    let snap = &plan.snapshot;
    eprintln!(
        "restoring backup {} (PostgreSQL {}, {}, ended {}) to {}; about {} of WAL to replay",
        snap.id,
        snap.pg_major,
        human(snap.size_logical),
        snap.stop_time.to_rfc3339(),
        a.to.display(),
        human(plan.replay_bytes)
    );
    let settings = RecoverySettings {
        restore_command: restore_command(repo_spec, &plan, &fetch_key(repo, pass)?)?,
        target: plan.target.clone(),
        action: a.target_action,
        timeline: Some(plan.timeline.to_string()),
    };
    let bar = progress(Some(snap.size_logical), "restoring");
    let tick = bar.clone();
    let started = Instant::now();
    let done = restore::run(
        repo,
        &plan,
        &RestoreOptions {
            to: a.to.clone(),
            tablespace_map: a.tablespace_map.into_iter().collect::<HashMap<_, _>>(),
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            progress: Box::new(move |n| tick.inc(n)),
            recovery_conf: recovery::render(&settings, snap.pg_major),
        },
    )
    .inspect_err(|e| {
        if !matches!(e, Error::BadInput(_)) {
            eprintln!(
                "pgsnapfs: {} may be incomplete: delete it before trying again",
                a.to.display()
            );
        }
    })?;
    bar.finish_and_clear();
    println!(
        "restored {} files ({}) in {:.1}s. Start it with PostgreSQL {}'s server: pg_ctl -D {} start",
        done.files,
        human(done.bytes),
        started.elapsed().as_secs_f64(),
        snap.pg_major,
        a.to.display()
    );
    Ok(())
}
