//! A session on a mounted backup, the one way commands mount one: `mount` (the catalogue,
//! or a view of one point in time that a server starts on) and `verify`. A session plans
//! and pins the backup, writes the view's settings, restore_command and key file, mounts,
//! serves until unmounted or signalled, and tears down. The CLI parses and prints.
//!
//! The pure decisions (what to mount, which settings, which FUSE options) are in [`plan`].

pub mod lifecycle;
pub mod plan;
pub mod unmount;

use crate::error::{io, Error, Result};
use crate::hydrate::Hydrator;
use crate::lock::Lease;
use crate::mount::SnapSource;
use crate::passphrase;
use crate::pg::target::TargetAction;
use crate::pitr::{self, Goal};
use crate::store::diskcache::DiskCache;
use crate::store::{BackendError, Repository, StoreError};
use crate::tblspc;
use crate::view::Owner;
use lifecycle::Signals;
use plan::{Latest, Subject};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The caches of a session's reads.
#[derive(Debug, Clone)]
pub struct CacheOptions {
    /// Memory for decompressed chunks.
    pub memory: u64,
    /// The local disk cache of chunks of a remote repository: its base directory (default
    /// `$XDG_CACHE_HOME/pgsnapfs` or `~/.cache/pgsnapfs`) and size limit (0: none).
    pub dir: Option<PathBuf>,
    /// The disk cache's size limit in bytes (0: none).
    pub disk_size: u64,
}

/// The user's cache directory: `$XDG_CACHE_HOME/pgsnapfs` or `~/.cache/pgsnapfs`.
pub fn user_cache() -> Result<PathBuf> {
    match std::env::var_os("XDG_CACHE_HOME") {
        Some(xdg) if !xdg.is_empty() => Ok(PathBuf::from(xdg).join("pgsnapfs")),
        _ => std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(".cache/pgsnapfs"))
            .ok_or_else(|| Error::BadInput("no HOME to put the cache in: use --cache-dir".into())),
    }
}

impl CacheOptions {
    /// Adds the disk cache to a remote repository; a local one is its own disk.
    pub fn attach(&self, repo: Repository, spec: &str) -> Result<Repository> {
        if !spec.contains("://") || self.disk_size == 0 {
            return Ok(repo);
        }
        let base = match &self.dir {
            Some(dir) => dir.clone(),
            None => user_cache()?,
        };
        // Per repository, named by its id: two repositories never share cache files.
        let dir = base.join(&repo.config.id);
        let cache = DiskCache::open(&dir, self.disk_size).map_err(|e| {
            Error::BadInput(format!(
                "cannot use disk cache {}: {e}; choose another with --cache-dir or turn it off \
                 with --disk-cache-size 0",
                dir.display()
            ))
        })?;
        Ok(repo.with_disk_cache(cache))
    }
}

/// What a view's server is set up with.
#[derive(Debug, Clone)]
pub struct ViewSettings {
    /// What the server does at the target.
    pub action: TargetAction,
    /// shared_buffers, sized so replay does not evict pages through FUSE one at a time.
    pub shared_buffers: String,
    /// Files the command adds or replaces at the view's top, over the view's own.
    pub files: Vec<(String, Vec<u8>)>,
    /// What the view does about tablespaces its replay creates.
    pub tablespaces: crate::tblspc::Policy,
    /// A clone: the copy-on-write state is durable and kept in the scratch directory, which
    /// a later mount takes up again, and the server runs with fsync on.
    pub durable: bool,
    /// A follower: the server starts as a standby that replays the archived WAL as it comes,
    /// until promoted, rather than recovering to the plan's target.
    pub standby: bool,
}

/// `--hydrate`: copy the mounted backup's files to the scratch directory in the
/// background and serve them from there (see [`crate::hydrate`]).
#[derive(Debug, Clone)]
pub struct Hydrate {
    /// The most the copies may take (the scratch disk's reserve applies in any case).
    pub limit: Option<u64>,
}

/// What a command asks of a session.
pub struct Request {
    /// The command, as its lease and the mount's file system name show it.
    pub command: &'static str,
    /// The repository's location as given, for the view's restore_command.
    pub repo_spec: String,
    /// Where the view's `wal-fetch` passphrase comes from, for an encrypted repository.
    pub passphrase: passphrase::Source,
    /// The point in time to mount.
    pub goal: Goal,
    /// What a goal that names nothing means.
    pub latest: Latest,
    /// The cluster, when the repository holds several.
    pub system: Option<u64>,
    /// An existing, empty directory.
    pub mountpoint: PathBuf,
    /// A view's scratch directory (missing or empty): the server's writes, its pg_wal and
    /// its key file.
    pub scratch: Option<PathBuf>,
    /// The user the server runs as, shown as the owner of every file (root only: others
    /// see their own files).
    pub owner: String,
    /// What a view changes for its server.
    pub view: ViewSettings,
    /// Chunk caches in memory and on disk.
    pub cache: CacheOptions,
    /// Local copies, served with FUSE passthrough.
    pub hydrate: Option<Hydrate>,
}

/// A view being served: the backup and point chosen, and what to tell its user.
pub struct View {
    /// The backup, point and timeline chosen.
    pub plan: pitr::Plan,
    /// What whoever starts a server on the view should know, one line each.
    pub notes: Vec<String>,
    /// The server's writes, its pg_wal and its key file.
    pub scratch: PathBuf,
    /// What the server does at the target: pause or promote.
    pub action: TargetAction,
    /// The names at the view's top that the view adds, replaces or hides: not the backup's.
    pub replaced: Vec<String>,
    /// The host directories the view's server must run with covered (see
    /// [`crate::namespace`]); always empty under [`crate::tblspc::Policy::Refuse`].
    pub covers: Vec<crate::tblspc::Cover>,
    /// The passphrase for the server's `wal-fetch`, removed with the session.
    _key: Option<KeyFile>,
}

/// A session ready to mount: planned, pinned and prepared.
pub struct Session {
    repo: Arc<Repository>,
    _lease: Lease,
    mountpoint: PathBuf,
    source: SnapSource,
    fuse: pgsnapfs_fuse::MountOptions,
    view: Option<View>,
    /// What to hydrate (a path below the mount's root), where to, and the limit.
    hydrate: Option<(PathBuf, PathBuf, Option<u64>)>,
}

/// Plans recovery and pins the chosen backup in `lease`, so expire keeps it and its WAL
/// while the command runs. If an expire was running as the pin was written, the plan is
/// made again: the backup may have gone. Without a lease, the plan is not pinned.
pub fn plan_pinned(
    repo: &Repository,
    lease: Option<&Lease>,
    system: Option<u64>,
    goal: &Goal,
) -> Result<pitr::Plan> {
    loop {
        let plan = pitr::plan(repo, system, goal)?;
        match lease {
            Some(lease) if lease.pin(repo, std::slice::from_ref(&plan.snapshot.id))? => {}
            _ => return Ok(plan),
        }
    }
}

/// A shared lease for `command`, or none when the repository has no room for it: a full
/// repository disk must not stand between a lost server and its restore. The caller goes
/// on unprotected and says so.
pub fn lease_unless_full(repo: &Repository, command: &str) -> Result<Option<Lease>> {
    match Lease::shared(repo, command) {
        Err(Error::Store(StoreError::Backend(BackendError::NoSpace { .. }))) => Ok(None),
        lease => lease.map(Some),
    }
}

fn is_root() -> bool {
    // SAFETY: a plain id query.
    unsafe { libc::geteuid() == 0 }
}

/// The owner of a view's files: the user its server runs as, which only root may choose;
/// anyone else mounts as themselves.
pub fn server_owner(name: &str) -> Result<Owner> {
    match is_root() {
        true => Owner::lookup(name),
        false => Ok(Owner::me()),
    }
}

impl Session {
    /// Checks the request, takes the command's lease, plans and pins, and prepares what is
    /// mounted: for a view, its scratch directory, settings and key file.
    pub fn open(repo: Repository, req: Request) -> Result<Session> {
        let subject = plan::subject(req.goal, req.latest, req.scratch, req.hydrate.is_some())?;
        lifecycle::check_mountpoint(&req.mountpoint)?;
        let lease = Lease::shared(&repo, req.command)?;
        let repo = Arc::new(req.cache.attach(repo, &req.repo_spec)?);
        let owner = server_owner(&req.owner)?;
        let cache = req.cache.memory as usize;
        let pid = std::process::id();
        let mut durable = false;
        // What hydration copies (a path below the mount's root), and to which scratch.
        let (source, view, hydrate_into) = match subject {
            Subject::Catalogue { scratch } => (
                SnapSource::catalogue(repo.clone(), cache)?,
                None,
                scratch.map(|s| (crate::hydrate::catalogue_root(), s)),
            ),
            Subject::View { goal, scratch } => {
                let plan = plan_pinned(&repo, Some(&lease), req.system, &goal)?;
                let mountpoint = std::fs::canonicalize(&req.mountpoint)
                    .map_err(io(format!("resolve {}", req.mountpoint.display())))?;
                let created = tblspc::replayed(&repo, &plan)?;
                let scratch_abs = std::path::absolute(&scratch)
                    .map_err(io(format!("resolve {}", scratch.display())))?;
                let covers_dir = tblspc::covers_dir(&scratch_abs);
                let covers = match req.view.tablespaces {
                    tblspc::Policy::Refuse => match created.first() {
                        Some(c) => return Err(tblspc::refusal(c)),
                        None => Vec::new(),
                    },
                    tblspc::Policy::Cover => tblspc::plan_covers(
                        &created,
                        is_root(),
                        |p| std::fs::canonicalize(p).ok().filter(|c| c.is_dir()),
                        &mountpoint,
                        &covers_dir,
                    )?,
                };
                // The server is started by someone else, with its own environment: the view
                // keeps the passphrase in its scratch directory for wal-fetch.
                let key_path = match repo.crypto().is_encrypted() {
                    true => Some(
                        std::path::absolute(plan::key_file(&scratch))
                            .map_err(io(format!("resolve {}", scratch.display())))?,
                    ),
                    false => None,
                };
                let key_options = key_path.as_ref().map_or(String::new(), |p| {
                    format!(
                        " --passphrase-file {}",
                        crate::walfetch::sh_quote(&p.display().to_string())
                    )
                });
                // wal-fetch hands over no segment whose tablespace creation is not covered.
                let guard = tblspc::guard_options(
                    &covers_dir,
                    plan.snapshot.start_lsn,
                    tblspc::replay_end(&plan),
                );
                let restore_command = crate::walfetch::restore_command(
                    &req.repo_spec,
                    plan.system.system_identifier,
                    &format!("{key_options}{guard}"),
                )?;
                let settings =
                    plan::settings(&plan, restore_command, req.view.action, req.view.standby);
                let prepared = crate::view::prepare(
                    &repo,
                    &plan,
                    &settings,
                    &scratch,
                    &mountpoint,
                    owner,
                    &req.view,
                )?;
                if !covers.is_empty() {
                    tblspc::make_covers(&covers, &covers_dir, owner)?;
                }
                if let Some(path) = key_path.as_ref().filter(|_| req.view.durable) {
                    // Left by a mount process that was killed: this one writes its own.
                    match std::fs::remove_file(path) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                            return Err(io(format!("remove {}", path.display()))(e))
                        }
                        _ => {}
                    }
                }
                let key = match key_path {
                    Some(path) => Some(KeyFile::write(
                        &req.passphrase.read(&req.repo_spec)?,
                        path,
                        owner,
                    )?),
                    None => None,
                };
                let mut changes = prepared.changes;
                changes.files.extend(req.view.files);
                let replaced = (changes.files.iter().map(|(n, _)| n))
                    .chain(changes.symlinks.iter().map(|(n, _)| n))
                    .chain(&changes.hide)
                    .cloned()
                    .collect();
                let source = SnapSource::view(repo.clone(), &plan.snapshot, changes, cache)?;
                let hydrate_into = Some((PathBuf::new(), scratch.clone()));
                durable = req.view.durable;
                let view = View {
                    plan,
                    notes: prepared.notes,
                    scratch,
                    action: req.view.action,
                    replaced,
                    covers,
                    _key: key,
                };
                (source, Some(view), hydrate_into)
            }
        };
        let backup = view.as_ref().map(|v| v.plan.snapshot.id.as_str());
        let writable = view.as_ref().map(|v| v.scratch.join("cow"));
        let fuse = plan::fuse_options(
            plan::fsname(req.command, backup, pid),
            owner,
            is_root(),
            writable,
            durable,
            req.hydrate.is_some(),
        );
        let hydrate = req
            .hydrate
            .zip(hydrate_into)
            .map(|(h, (root, scratch))| (root, crate::hydrate::copies_dir(&scratch), h.limit));
        Ok(Session {
            repo,
            _lease: lease,
            mountpoint: req.mountpoint,
            source,
            fuse,
            view,
            hydrate,
        })
    }

    /// The view, unless this is the catalogue.
    /// The repository the session reads, with its caches.
    pub fn repo(&self) -> &Repository {
        &self.repo
    }

    /// The view, or `None` for the catalogue.
    pub fn view(&self) -> Option<&View> {
        self.view.as_ref()
    }

    /// Mounts; the mount is usable once this returns.
    pub fn mount(self) -> Result<Mounted> {
        let source = Arc::new(self.source);
        let handle =
            pgsnapfs_fuse::mount(source.clone(), &self.mountpoint, self.fuse).map_err(|e| {
                let hint = if !is_root() && e.errno == libc::EACCES {
                    "; without root, mounting needs read-write access to /dev/fuse (mode 0666, \
                     Debian's default) and fusermount3 (Debian package fuse3)"
                } else {
                    ""
                };
                Error::Mount(format!(
                    "cannot mount at {}: {e}{hint}",
                    self.mountpoint.display()
                ))
            })?;
        let hydrator = match self.hydrate {
            Some((root, dir, limit)) => Some(Hydrator::start(source, &root, dir, limit)?),
            None => None,
        };
        Ok(Mounted {
            handle,
            _hydrator: hydrator,
            repo: self.repo,
            view: self.view,
            _lease: self._lease,
        })
    }
}

/// A mounted session. Dropping it unmounts, stops hydration and removes the local copies,
/// removes the view's key file and releases the lease, in that order.
pub struct Mounted {
    handle: pgsnapfs_fuse::MountHandle,
    _hydrator: Option<Hydrator>,
    repo: Arc<Repository>,
    view: Option<View>,
    _lease: Lease,
}

impl Mounted {
    /// Where it is mounted (canonical).
    pub fn mountpoint(&self) -> &Path {
        self.handle.mountpoint()
    }

    /// The repository the mount reads, with its caches.
    pub fn repo(&self) -> &Repository {
        &self.repo
    }

    /// The view, or `None` for the catalogue.
    pub fn view(&self) -> Option<&View> {
        self.view.as_ref()
    }

    /// Serves until someone unmounts it or one of `signals` arrives. A mount started by
    /// `--background` first lets go of its caller's output (see [`lifecycle::detach_output`]).
    /// `busy` hears of a signal that could not unmount because the mount is in use.
    pub fn serve(self, signals: Signals, busy: fn(&str)) -> Result<()> {
        if lifecycle::detached() {
            lifecycle::detach_output(self.view.as_ref().map(|v| v.scratch.as_path()))?;
        }
        let unmounter = self.handle.unmounter();
        std::thread::spawn(move || loop {
            let sig = signals.wait();
            tracing::info!("signal {sig}: unmounting");
            match unmounter.unmount() {
                Ok(()) => break,
                Err(e) => busy(&e.to_string()),
            }
        });
        let Mounted { handle, .. } = self;
        handle
            .wait()
            .map_err(|e| Error::Mount(format!("mount ended with an error: {e}")))
    }

    /// How the file at `path` (relative to the root) differs from the backup's, as the
    /// copy-on-write layer recorded it (see [`pgsnapfs_fuse::MountHandle::file_change`]).
    pub fn file_change(&self, path: &Path) -> Result<pgsnapfs_fuse::FileChange> {
        self.handle
            .file_change(path)
            .map_err(|e| Error::Mount(format!("what changed in {}: {e}", path.display())))
    }

    /// A filler of the mount's writable layer, for hydration (see
    /// [`pgsnapfs_fuse::Filler`]).
    pub fn filler(&self) -> pgsnapfs_fuse::Filler {
        self.handle.filler()
    }

    /// Unmounts now.
    pub fn unmount(self) -> Result<()> {
        let Mounted { handle, .. } = self;
        let at = handle.mountpoint().display().to_string();
        handle
            .unmount()
            .map_err(|e| Error::Mount(format!("unmount {at}: {e}")))
    }
}

/// The passphrase for a view's `wal-fetch`, in its scratch directory for as long as the
/// view is mounted: the server that needed it is gone with the mount.
struct KeyFile(PathBuf);

impl KeyFile {
    /// Writes it 0600 and owned by the server's user. The scratch directory is 0700: only
    /// that user (and root) can read the file.
    fn write(secret: &[u8], path: PathBuf, owner: Owner) -> Result<KeyFile> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(io(format!("create {}", path.display())))?;
        let key = KeyFile(path);
        std::io::Write::write_all(&mut f, secret)
            .map_err(io(format!("write {}", key.0.display())))?;
        std::os::unix::fs::fchown(&f, Some(owner.uid), Some(owner.gid))
            .map_err(io(format!("chown {}", key.0.display())))?;
        Ok(key)
    }
}

impl Drop for KeyFile {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0) {
            tracing::warn!(
                "cannot remove the view's key file {}: {e}",
                self.0.display()
            );
        }
    }
}
