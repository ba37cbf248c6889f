//! Clones: persistent, writable data directories at a point in time, sharing the backup's
//! blocks. A clone is a view (see [`crate::view`]) made durable: its copy-on-write state is
//! kept in its directory by the FUSE crate's durable mode, so it survives unmount, a killed
//! mount process and a crash of the machine, and its server runs with fsync on.
//!
//! A clone's directory, `<clones dir>/<name>/`:
//! - `clone.json`: what it is of ([`settings::Settings`]);
//! - `data/`: where its data directory is mounted;
//! - `scratch/`: its writes (`cow/`, the durable copy-on-write state), its `pg_wal`, the
//!   mount's log and the server's.
//!
//! Each clone holds a persistent repository lease pinning its backup, so expire keeps the
//! backup (and the WAL it needs) and gc its chunks, whether or not the clone is mounted;
//! destroy releases it.

pub mod detach;
pub mod hydration;
pub mod lag;
pub mod settings;
pub mod state;

use crate::error::{io, Error, Result};
use crate::lock;
use crate::pg::target::TargetAction;
use crate::pitr::{self, Goal, Point};
use crate::session::plan::Latest;
use crate::session::{CacheOptions, Request, ViewSettings};
use crate::store::Repository;
use settings::{Settings, StoredPoint};
use std::path::{Path, PathBuf};

/// Where a clone's parts are.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The clone's directory.
    pub dir: PathBuf,
}

impl Layout {
    /// The clone `name` in `clones_dir`.
    pub fn new(clones_dir: &Path, name: &str) -> Layout {
        Layout {
            dir: clones_dir.join(name),
        }
    }

    /// `clone.json`.
    pub fn record(&self) -> PathBuf {
        self.dir.join("clone.json")
    }

    /// The mounted data directory.
    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The writes: copy-on-write state, pg_wal, logs.
    pub fn scratch(&self) -> PathBuf {
        self.dir.join("scratch")
    }

    /// Where the printed `pg_ctl` line sends the server's log.
    pub fn server_log(&self) -> PathBuf {
        self.scratch().join("server.log")
    }

    /// How the mount stands.
    pub fn mount_state(&self) -> state::Mount {
        state::mount(&self.data(), &self.dir)
    }

    /// The clone's record, checking it is of repository `repo_id`.
    pub fn load(&self, repo_id: &str) -> Result<Settings> {
        let s = Settings::load(&self.record())?;
        if s.repo_id != repo_id {
            return Err(Error::BadInput(format!(
                "clone {} is of repository {} ({}), not of this one ({repo_id})",
                s.name, s.repo, s.repo_id
            )));
        }
        Ok(s)
    }
}

/// The clones directory: the one given, else `$XDG_STATE_HOME/pgsnapfs/<repo id>/clones`,
/// else `~/.local/state/pgsnapfs/<repo id>/clones`.
pub fn clones_dir(given: Option<PathBuf>, repo_id: &str) -> Result<PathBuf> {
    let dir = given.or_else(|| {
        let env = |k| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        env("XDG_STATE_HOME")
            .or_else(|| env("HOME").map(|h| h.join(".local/state")))
            .map(|d| d.join("pgsnapfs").join(repo_id).join("clones"))
    });
    let dir = dir.ok_or_else(|| {
        Error::BadInput("no place for clones (no XDG_STATE_HOME or HOME): use --clones-dir".into())
    })?;
    std::path::absolute(&dir).map_err(io(format!("resolve {}", dir.display())))
}

/// Refuses a name that is not a plain directory name.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    match ok {
        true => Ok(()),
        false => Err(Error::BadInput(format!(
            "{name:?} is not a clone name: use up to 64 letters, digits, '-', '_' and '.', not \
             starting with '.'"
        ))),
    }
}

/// What `create` is asked.
pub struct CreateRequest<'a> {
    /// The repository, as given (local paths absolute).
    pub repo_spec: &'a str,
    /// The point in time.
    pub goal: &'a Goal,
    /// The cluster, when the repository holds several.
    pub system: Option<u64>,
    /// The user the server runs as.
    pub owner: &'a str,
    /// shared_buffers of the clone's server.
    pub shared_buffers: &'a str,
    /// A follower of the archive (see [`settings::Settings::follow`]).
    pub follow: bool,
    /// Hydrated, at most this many bytes per second if given (see [`hydration`]).
    pub hydrate: Option<Option<u64>>,
}

/// Creates clone `name`: plans the point, takes the persistent lease pinning its backup,
/// and writes the clone's directory. Mounting is the caller's next step.
pub fn create(
    repo: &Repository,
    layout: &Layout,
    name: &str,
    req: &CreateRequest,
) -> Result<Settings> {
    check_name(name)?;
    if layout.dir.exists() {
        return Err(Error::BadInput(format!(
            "clone {name} exists ({}); choose another name, or `pgsnapfs clone destroy {name}`",
            layout.dir.display()
        )));
    }
    if req.follow && !matches!(req.goal.to, Point::Backup(_)) {
        return Err(Error::BadInput(
            "a follower starts at a backup and follows the archive from there: give --backup \
             ID|latest, not a --target-*"
                .into(),
        ));
    }
    let mut plan = pitr::plan(repo, req.system, req.goal)?;
    let point = StoredPoint::of(&req.goal.to, &plan.snapshot.id).ok_or_else(|| {
        Error::BadInput(
            "a clone is of a fixed point: give --backup ID|latest or a --target-* option".into(),
        )
    })?;
    let (lease, mut waited) = lock::take_persistent(
        repo,
        &format!("clone {name}"),
        std::slice::from_ref(&plan.snapshot.id),
    )?;
    let made = (|| {
        // An expire ran as the lease was written: the backup may be gone; plan again.
        while waited {
            plan = pitr::plan(repo, req.system, req.goal)?;
            waited = lock::repin_persistent(repo, &lease, std::slice::from_ref(&plan.snapshot.id))?;
        }
        let settings = Settings {
            version: settings::VERSION,
            name: name.to_string(),
            repo: req.repo_spec.to_string(),
            repo_id: repo.config.id.clone(),
            system: plan.system.system_identifier.0,
            backup: plan.snapshot.id.clone(),
            point: StoredPoint::of(&req.goal.to, &plan.snapshot.id).unwrap_or(point),
            timeline: plan.timeline,
            follow: req.follow,
            hydrate: req.hydrate.is_some(),
            hydrate_rate: req.hydrate.flatten(),
            lease: lease.clone(),
            owner: req.owner.to_string(),
            shared_buffers: req.shared_buffers.to_string(),
            created: chrono::Utc::now(),
        };
        make_dirs(layout)?;
        settings.save(&layout.record())?;
        Ok(settings)
    })();
    if made.is_err() {
        let _ = std::fs::remove_dir_all(&layout.dir);
        if let Err(e) = lock::release_persistent(repo, &lease) {
            tracing::warn!("cannot release lease {lease} of the clone not made: {e}");
        }
    }
    made
}

/// The clone's directory (reachable by the server's user: its data directory is mounted
/// there) and its mount point.
fn make_dirs(layout: &Layout) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    for dir in [&layout.dir, &layout.data()] {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(io(format!("create {}", dir.display())))?;
    }
    Ok(())
}

/// The session request that mounts the clone: its view, durable, recovering to its point
/// and promoting at the first start.
pub fn mount_request(
    settings: &Settings,
    layout: &Layout,
    passphrase: crate::passphrase::Source,
    cache: CacheOptions,
) -> Result<Request> {
    Ok(Request {
        command: "clone",
        repo_spec: settings.repo.clone(),
        passphrase,
        goal: settings.goal(&layout.record())?,
        latest: Latest::NewestBackup,
        system: Some(settings.system),
        mountpoint: layout.data(),
        scratch: Some(layout.scratch()),
        owner: settings.owner.clone(),
        view: ViewSettings {
            action: TargetAction::Promote,
            shared_buffers: settings.shared_buffers.clone(),
            files: Vec::new(),
            // The user starts the clone's server: no namespace can cover a location.
            tablespaces: crate::tblspc::Policy::Refuse,
            durable: true,
            standby: settings.follow,
        },
        cache,
        hydrate: None,
    })
}

/// Fails unless the session planned the clone's own backup: its writes are over that
/// backup's files and no other's.
pub fn check_plan(settings: &Settings, plan: &pitr::Plan) -> Result<()> {
    if plan.snapshot.id != settings.backup {
        return Err(Error::Mount(format!(
            "clone {} is of backup {}, but its point ({}) now resolves to backup {}; mount \
             refused, its writes are over the first",
            settings.name,
            settings.backup,
            settings.point.describe(),
            plan.snapshot.id
        )));
    }
    Ok(())
}

/// Makes way for a mount: a stale mount left by a killed process is unmounted; a live one
/// is refused.
pub fn clear_mountpoint(layout: &Layout, name: &str) -> Result<()> {
    match layout.mount_state() {
        state::Mount::No => Ok(()),
        state::Mount::Stale => {
            // Lazily: processes of a killed server may still hold files there, and a dead
            // mount has nothing left to write.
            tracing::info!("clone {name}: detaching the stale mount of a killed mount process");
            crate::session::unmount::umount(&layout.data(), true)
        }
        state::Mount::Yes => Err(Error::BadInput(format!(
            "clone {name} is mounted already, at {}",
            layout.data().display()
        ))),
    }
}

/// Unmounts the clone (refused while busy); a stale mount is detached lazily (see
/// [`clear_mountpoint`]); nothing to do if it is not mounted.
pub fn unmount(layout: &Layout) -> Result<()> {
    match layout.mount_state() {
        state::Mount::No => Ok(()),
        state::Mount::Stale => crate::session::unmount::umount(&layout.data(), true),
        state::Mount::Yes => crate::session::unmount::umount(&layout.data(), false),
    }
}

/// Whether the clone's server is (or starts as) a standby following the archive: a
/// follower not promoted yet.
pub fn following(layout: &Layout) -> bool {
    layout.mount_state() == state::Mount::Yes && layout.data().join("standby.signal").exists()
}

/// Promotes a follower's running server: it stops following, finishes replay and becomes
/// writable on a new timeline, for good (the mount keeps standby.signal's removal). As
/// `pg_ctl promote` does: a `promote` file, then SIGUSR1 to the postmaster.
pub fn promote(layout: &Layout, name: &str) -> Result<()> {
    if !following(layout) {
        return Err(Error::BadInput(format!(
            "clone {name} is not a follower waiting for promotion (not mounted, not a \
             follower, or promoted already)"
        )));
    }
    let Some(pid) = state::server(&layout.data()) else {
        return Err(Error::BadInput(format!(
            "no server runs on clone {name}: start it, then promote"
        )));
    };
    let signal = layout.data().join("promote");
    std::fs::write(&signal, b"").map_err(io(format!("create {}", signal.display())))?;
    // SAFETY: sending a signal to a process.
    if unsafe { libc::kill(pid as libc::pid_t, libc::SIGUSR1) } != 0 {
        return Err(io(format!("signal the server (pid {pid})"))(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Drops every write of an unmounted clone (a stale mount is detached first): its next
/// mount is its point in time again.
pub fn reset(layout: &Layout, name: &str) -> Result<()> {
    if layout.mount_state() == state::Mount::Stale {
        unmount(layout)?;
    }
    if layout.mount_state() != state::Mount::No {
        return Err(Error::BadInput(format!(
            "clone {name} is mounted: stop its server and `pgsnapfs clone umount {name}` first"
        )));
    }
    remove_all(&layout.scratch())
}

/// Destroys the clone: unmounts it (refused while its server runs), removes its directory,
/// then releases its lease, so the backup is never unprotected while the clone exists.
pub fn destroy(repo: &Repository, layout: &Layout, settings: &Settings) -> Result<()> {
    unmount(layout)?;
    remove_all(&layout.dir)?;
    lock::release_persistent(repo, &settings.lease)
}

fn remove_all(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(io(format!("remove {}", dir.display()))(e))
        }
        _ => Ok(()),
    }
}

/// One clone as `clone list` shows it.
#[derive(Debug, serde::Serialize)]
pub struct Listed {
    /// The clone's name.
    pub name: String,
    /// Its backup.
    pub backup: String,
    /// Its point in time.
    pub point: StoredPoint,
    /// How its mount stands.
    pub mounted: state::Mount,
    /// Its data directory.
    pub data: PathBuf,
    /// The PID of the server running on it.
    pub server_pid: Option<u32>,
    /// A follower not promoted yet.
    pub following: bool,
    /// How far its running server is behind the archive (followers).
    pub lag: Option<lag::Lag>,
    /// Bytes its writes take on local disk (copy-on-write state, pg_wal, logs), hydrated
    /// bytes included.
    pub bytes_written: u64,
    /// How far hydration is (hydrated clones).
    pub hydration: Option<hydration::Progress>,
    /// Its lease.
    pub lease: String,
}

/// Every clone in `clones_dir`, by name, with the lag of running followers behind `repo`'s
/// archive; a directory without a readable record is skipped with a warning.
pub fn list(clones_dir: &Path, repo: &Repository) -> Result<Vec<Listed>> {
    let entries = match std::fs::read_dir(clones_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(format!("list {}", clones_dir.display()))(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io(format!("list {}", clones_dir.display())))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let layout = Layout::new(clones_dir, &name);
        let settings = match Settings::load(&layout.record()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("{}: skipped: {e}", layout.dir.display());
                continue;
            }
        };
        let mounted = layout.mount_state();
        let server_pid = (mounted == state::Mount::Yes)
            .then(|| state::server(&layout.data()))
            .flatten();
        let following = settings.follow && following(&layout);
        let lag = match server_pid.filter(|_| following) {
            Some(pid) => lag::lag(repo, settings.system, pid).unwrap_or_else(|e| {
                tracing::warn!("clone {name}: cannot tell its lag: {e}");
                None
            }),
            None => None,
        };
        out.push(Listed {
            name,
            backup: settings.backup,
            point: settings.point,
            mounted,
            data: layout.data(),
            server_pid,
            following,
            lag,
            bytes_written: state::disk_usage(&layout.scratch()),
            hydration: settings
                .hydrate
                .then(|| hydration::progress(&layout.scratch()).unwrap_or_default()),
            lease: settings.lease,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["dev1", "a.b-c_d", "X"] {
            check_name(ok).unwrap();
        }
        for bad in ["", ".hidden", "a/b", "..", "with space", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn default_clones_dir_is_per_repository_state() {
        let dir = clones_dir(Some("/srv/clones".into()), "r1").unwrap();
        assert_eq!(dir, Path::new("/srv/clones"));
    }
}
