//! `pgsnapfs clone`: persistent writable clones of a point in time (see [`crate::clone`]).

use super::{human, GoalArgs};
use crate::clone::{self, state::Mount, CreateRequest, Layout};
use crate::error::Result;
use crate::session::lifecycle::{self, READY};
use crate::session::Session;
use crate::store::Repository;
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Where clones live, one directory each [env: PGSNAPFS_CLONES_DIR] [default:
    /// $XDG_STATE_HOME/pgsnapfs/REPO-ID/clones, else ~/.local/state/pgsnapfs/REPO-ID/clones].
    /// Its parents must let the server's user through.
    #[arg(long, env = "PGSNAPFS_CLONES_DIR", hide_env = true, global = true)]
    pub clones_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Sub,
}

#[derive(clap::Subcommand)]
pub enum Sub {
    /// Create a clone of a backup or point in time and mount its data directory.
    Create(CreateArgs),
    /// List the clones: point in time, mount, server, bytes written.
    List(ListArgs),
    /// Mount a clone's data directory again (after umount, a reboot or a killed mount).
    Mount(MountArgs),
    /// Unmount a clone's data directory (stop its server first); its writes are kept.
    Umount(NameArgs),
    /// Drop every write of an unmounted clone: back to its point in time.
    Reset(NameArgs),
    /// Unmount and delete a clone, and release its repository lease.
    Destroy(NameArgs),
    /// A follower's running server stops following the archive and becomes writable.
    Promote(NameArgs),
    /// Make a fully hydrated clone a plain data directory (its server stopped), then
    /// destroy the clone and release its lease.
    Detach(DetachArgs),
}

#[derive(clap::Args)]
pub struct DetachArgs {
    /// The clone's name.
    pub name: String,
    /// The new data directory: new, or an empty directory.
    #[arg(long)]
    pub to: PathBuf,
}

#[derive(clap::Args)]
pub struct CreateArgs {
    /// The clone's name.
    pub name: String,
    #[command(flatten)]
    pub goal: GoalArgs,
    /// The user the server runs as: files are shown as owned by it (root only).
    #[arg(long, default_value = "postgres")]
    pub owner: String,
    /// shared_buffers for the clone's server.
    #[arg(long, default_value = "256MB")]
    pub shared_buffers: String,
    /// The cluster, when the repository holds several.
    #[arg(long)]
    pub system: Option<u64>,
    /// A follower: its server is a standby that replays newly archived WAL as it comes, from
    /// the backup given with --backup, until `clone promote`.
    #[arg(long)]
    pub follow: bool,
    /// Copy every byte of the clone's files to local disk in the background, resumed by
    /// each `clone mount`; then `clone detach` makes it a plain data directory.
    #[arg(long, conflicts_with = "follow")]
    pub hydrate: bool,
    /// The most hydration copies per second, e.g. 100M (default: no limit).
    #[arg(long, requires = "hydrate", value_parser = super::parse_size)]
    pub hydrate_rate: Option<u64>,
}

#[derive(clap::Args)]
pub struct ListArgs {
    #[arg(long, help = super::JSON_HELP)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct NameArgs {
    /// The clone's name.
    pub name: String,
}

#[derive(clap::Args)]
pub struct MountArgs {
    /// The clone's name.
    pub name: String,
    #[command(flatten)]
    pub cache: super::CacheArgs,
    /// Serve in this process until unmounted (what the background mount process runs).
    #[arg(long, hide = true)]
    pub foreground: bool,
}

pub fn run(
    repo_spec: &str,
    pass: &super::key::PassphraseArgs,
    a: Args,
    open: &dyn Fn(&str) -> Result<Repository>,
) -> Result<()> {
    if let Sub::Mount(m) = &a.command {
        if m.foreground {
            // Before any thread starts, opening the repository included (see block_signals).
            let signals = lifecycle::block_signals();
            let repo = open(repo_spec)?;
            let layout = Layout::new(&clone::clones_dir(a.clones_dir, &repo.config.id)?, &m.name);
            let settings = layout.load(&repo.config.id)?;
            let req = clone::mount_request(&settings, &layout, pass.source(), m.cache.options())?;
            let session = Session::open(repo, req)?;
            if let Some(view) = session.view() {
                clone::check_plan(&settings, &view.plan)?;
            }
            let mounted = session.mount()?;
            // Stopped (and what it copied kept) when the mount ends.
            let _hydration = match settings.hydrate {
                true => clone::hydration::resume(&layout, &settings, &mounted)?,
                false => None,
            };
            outln!("{READY} at {}", mounted.mountpoint().display());
            let _ = std::io::stdout().flush();
            return mounted.serve(signals, |e| {
                eprintln!(
                    "pgsnapfs: cannot unmount yet: {e}; stop the clone's server, then signal again"
                )
            });
        }
    }
    let repo = open(repo_spec)?;
    let dir = clone::clones_dir(a.clones_dir, &repo.config.id)?;
    let layout = |name: &str| Layout::new(&dir, name);
    match a.command {
        Sub::Create(c) => {
            let spec = absolute_spec(repo_spec)?;
            let goal = c.goal.goal()?;
            let settings = clone::create(
                &repo,
                &layout(&c.name),
                &c.name,
                &CreateRequest {
                    repo_spec: &spec,
                    goal: &goal,
                    system: c.system,
                    owner: &c.owner,
                    shared_buffers: &c.shared_buffers,
                    follow: c.follow,
                    hydrate: c.hydrate.then_some(c.hydrate_rate),
                },
            )?;
            eprintln!(
                "clone {} of {} (backup {}, timeline {}) created in {}",
                c.name,
                settings.point.describe(),
                settings.backup,
                settings.timeline,
                layout(&c.name).dir.display()
            );
            mount(&repo, repo_spec, pass, &dir, &c.name)
        }
        Sub::List(l) => {
            let clones = clone::list(&dir, &repo)?;
            if l.json {
                super::print_json(&clones);
                return Ok(());
            }
            if clones.is_empty() {
                outln!("no clones in {}", dir.display());
            }
            for c in clones {
                let mounted = match c.mounted {
                    Mount::Yes => "mounted",
                    Mount::No => "not mounted",
                    Mount::Stale => "stale mount (`clone mount` repairs it)",
                };
                let mut server = c
                    .server_pid
                    .map_or("no server".into(), |p| format!("server pid {p}"));
                if c.following {
                    server += ", following";
                }
                if let Some(lag) = &c.lag {
                    server += &format!(", {} segments behind", lag.segments_behind);
                    if let Some(s) = lag.seconds_behind {
                        server += &format!(" ({s} s)");
                    }
                }
                let hydration = match c.hydration {
                    Some(p) if p.complete => "\thydrated".to_string(),
                    Some(p) => format!("\thydrating: {} of {}", human(p.hydrated), human(p.total)),
                    None => String::new(),
                };
                outln!(
                    "{}\t{}\t{mounted}\t{server}\t{} written{hydration}",
                    c.name,
                    c.point.describe(),
                    human(c.bytes_written)
                );
            }
            Ok(())
        }
        Sub::Mount(m) => mount(&repo, repo_spec, pass, &dir, &m.name),
        Sub::Umount(n) => {
            let layout = layout(&n.name);
            layout.load(&repo.config.id)?;
            clone::unmount(&layout)?;
            outln!("clone {} unmounted; its writes are kept", n.name);
            Ok(())
        }
        Sub::Reset(n) => {
            let layout = layout(&n.name);
            layout.load(&repo.config.id)?;
            clone::reset(&layout, &n.name)?;
            outln!(
                "clone {} reset: every write dropped; `pgsnapfs clone mount {}` mounts it at its \
                 point in time again",
                n.name,
                n.name
            );
            Ok(())
        }
        Sub::Promote(n) => {
            let layout = layout(&n.name);
            layout.load(&repo.config.id)?;
            clone::promote(&layout, &n.name)?;
            outln!(
                "clone {}: its server is promoting; it stops following and takes writes once \
                 pg_is_in_recovery() is false",
                n.name
            );
            Ok(())
        }
        Sub::Detach(d) => {
            let layout = layout(&d.name);
            let settings = layout.load(&repo.config.id)?;
            let to = std::path::absolute(&d.to)
                .map_err(crate::error::io(format!("resolve {}", d.to.display())))?;
            clone::detach::detach(&repo, &layout, &settings, &to)?;
            outln!(
                "clone {} detached to {}; the clone is destroyed and lease {} released",
                d.name,
                to.display(),
                settings.lease
            );
            outln!(
                "start its server: runuser -u {} -- pg_ctl -D {} -l {}/server.log start",
                settings.owner,
                to.display(),
                to.display()
            );
            eprintln!(
                "{} runs on the cluster's own settings (its archive_command, \
                 listen_addresses and port included); postgresql.auto.conf keeps the clone's \
                 restore_command, which you may remove",
                to.display()
            );
            Ok(())
        }
        Sub::Destroy(n) => {
            let layout = layout(&n.name);
            let settings = layout.load(&repo.config.id)?;
            clone::destroy(&repo, &layout, &settings)?;
            outln!(
                "clone {} destroyed; lease {} released",
                n.name,
                settings.lease
            );
            Ok(())
        }
    }
}

/// Mounts clone `name` in a background mount process, and says how to start its server.
fn mount(
    repo: &Repository,
    repo_spec: &str,
    pass: &super::key::PassphraseArgs,
    dir: &std::path::Path,
    name: &str,
) -> Result<()> {
    let layout = Layout::new(dir, name);
    let settings = layout.load(&repo.config.id)?;
    clone::clear_mountpoint(&layout, name)?;
    let mut args = super::wal::relaunch_args(repo_spec, pass, 0)?;
    args.extend(["clone".into(), "--clones-dir".into(), dir.into()]);
    args.extend(["mount".into(), name.into(), "--foreground".into()]);
    let started = lifecycle::spawn(args)?;
    let data = layout.data();
    outln!("{} (process {})", started.line, started.pid);
    outln!("data directory: {}", data.display());
    outln!(
        "start its server: runuser -u {} -- pg_ctl -D {} -l {} start",
        settings.owner,
        data.display(),
        layout.server_log().display()
    );
    let start = match settings.follow {
        true => format!(
            "the server starts as a standby at {} and follows the archive until `pgsnapfs clone \
             promote {name}`",
            settings.point.describe()
        ),
        false => format!(
            "the first start recovers to {} and promotes; later starts are crash recovery",
            settings.point.describe()
        ),
    };
    eprintln!(
        "{start}. The server listens on Unix sockets only (listen_addresses = '') and runs \
         with fsync on"
    );
    Ok(())
}

/// The repository as the background mount process and the clone's record name it.
fn absolute_spec(spec: &str) -> Result<String> {
    match spec.contains("://") {
        true => Ok(spec.to_string()),
        false => Ok(std::path::absolute(spec)
            .map_err(crate::error::io(format!("resolve {spec}")))?
            .display()
            .to_string()),
    }
}
