//! `pgsnapfs mount` and `pgsnapfs umount`

use super::{human, parse_action, GoalArgs};
use crate::error::Result;
use crate::pg::target::TargetAction;
use crate::session::lifecycle::{self, READY};
use crate::session::plan::Latest;
use crate::session::{unmount, Hydrate, Request, Session, View, ViewSettings};
use crate::store::Repository;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// Where to mount (an existing, empty directory).
    pub mountpoint: PathBuf,
    #[command(flatten)]
    pub goal: GoalArgs,
    /// Writable view: where the server's writes go (a missing or empty directory).
    #[arg(long)]
    pub scratch: Option<PathBuf>,
    /// The user the server runs as: files are shown as owned by it (root only).
    #[arg(long, default_value = "postgres")]
    pub owner: String,
    /// What the server does at the target.
    #[arg(long, default_value = "pause", value_parser = parse_action)]
    pub target_action: TargetAction,
    /// shared_buffers for the server on the view: sized so replay does not evict
    /// pages through FUSE one at a time.
    #[arg(long, default_value = "1GB")]
    pub shared_buffers: String,
    #[command(flatten)]
    pub cache: super::CacheArgs,
    /// Return once the mount is ready, leaving it mounted in the background.
    #[arg(long)]
    pub background: bool,
    /// The cluster, when the repository holds several.
    #[arg(long)]
    pub system: Option<u64>,
    /// Copy the backup's files to --scratch in the background, largest first, and serve
    /// each copied file from local disk (FUSE passthrough). The catalogue copies
    /// backups/latest/.
    #[arg(long)]
    pub hydrate: bool,
    /// The most --hydrate may copy; it always leaves 10% of the scratch disk free.
    #[arg(long, requires = "hydrate", value_parser = super::parse_size)]
    pub hydrate_limit: Option<u64>,
}

#[derive(clap::Args)]
pub struct UmountArgs {
    /// The mount point to unmount.
    pub mountpoint: PathBuf,
    /// Detach now even if busy; the mount goes away when the last file is closed.
    #[arg(long)]
    pub lazy: bool,
}

pub fn run(
    repo_spec: &str,
    pass: &super::key::PassphraseArgs,
    a: Args,
    open: &dyn Fn(&str) -> Result<Repository>,
) -> Result<()> {
    // Before any thread starts, opening the repository included (see block_signals).
    let signals = lifecycle::block_signals();
    if a.background {
        let started = lifecycle::background()?;
        outln!("{} (process {})", started.line, started.pid);
        return Ok(());
    }
    let session = Session::open(
        open(repo_spec)?,
        Request {
            command: "mount",
            repo_spec: repo_spec.to_string(),
            passphrase: pass.source(),
            goal: a.goal.goal()?,
            latest: Latest::Catalogue,
            system: a.system,
            mountpoint: a.mountpoint.clone(),
            scratch: a.scratch,
            owner: a.owner,
            view: ViewSettings {
                action: a.target_action,
                shared_buffers: a.shared_buffers,
                files: Vec::new(),
                tablespaces: crate::tblspc::Policy::Refuse,
                durable: false,
                standby: false,
            },
            cache: a.cache.options(),
            hydrate: a.hydrate.then_some(Hydrate {
                limit: a.hydrate_limit,
            }),
        },
    )?;
    if let Some(view) = session.view() {
        describe(view, &a.mountpoint);
        if matches!(view.action, TargetAction::Pause) {
            warn_held_locks(session.repo(), &view.plan, true);
        }
    }
    let mounted = session.mount()?;
    outln!("{READY} at {}", mounted.mountpoint().display());
    let _ = std::io::stdout().flush();
    mounted.serve(signals, |e| {
        eprintln!(
            "pgsnapfs: cannot unmount yet: {e}; stop what is using the mount, then signal again"
        )
    })
}

/// What whoever starts a server on a view should know.
fn describe(view: &View, mountpoint: &Path) {
    let plan = &view.plan;
    eprintln!(
        "mounting backup {} (PostgreSQL {}, ended {}) at {}; about {} of WAL to replay on \
         start, to {}; start PostgreSQL {} on it",
        plan.snapshot.id,
        plan.snapshot.pg_major,
        plan.snapshot.stop_time.to_rfc3339(),
        mountpoint.display(),
        human(plan.replay_bytes),
        plan.describe(),
        plan.snapshot.pg_major
    );
    eprintln!(
        "archive_mode is off and listen_addresses is '' on this view: a server started \
         here never archives WAL and takes Unix-socket connections only"
    );
    for note in &view.notes {
        eprintln!("{note}");
    }
    if matches!(view.action, TargetAction::Pause) {
        eprintln!(
            "recovery pauses at the target in hot standby; if a query waits on a lock held by a \
             transaction still open at the target (a DROP or TRUNCATE), promote the view with \
             SELECT pg_wal_replay_resume() (or mount with --target-action promote)"
        );
    }
}

/// Names the AccessExclusiveLocks a paused recovery of `plan` holds at its target, if any.
pub(super) fn warn_held_locks(repo: &Repository, plan: &crate::pitr::Plan, mount: bool) {
    match crate::targetlocks::held(repo, plan) {
        Ok(locks) => {
            let names = crate::targetlocks::names(repo, plan, &locks);
            if let Some(text) = crate::targetlocks::describe(&locks, &names, mount) {
                eprintln!("pgsnapfs: {text}");
            }
        }
        Err(e) => tracing::warn!("cannot tell which locks recovery holds at the target: {e}"),
    }
}

pub fn umount(a: UmountArgs) -> Result<()> {
    unmount::umount(&a.mountpoint, a.lazy)?;
    outln!("unmounted {}", a.mountpoint.display());
    Ok(())
}
