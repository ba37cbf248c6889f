//! `pgsnapfs mount` and `pgsnapfs umount`

use super::{human, parse_action, GoalArgs};
use crate::error::{io, Error, Result};
use crate::lock::Lease;
use crate::mount::SnapSource;
use crate::pg::recovery::RecoverySettings;
use crate::pg::target::TargetAction;
use crate::store::Repository;
use crate::view::Owner;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

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
}

#[derive(clap::Args)]
pub struct UmountArgs {
    /// The mount point to unmount.
    pub mountpoint: PathBuf,
    /// Detach now even if busy; the mount goes away when the last file is closed.
    #[arg(long)]
    pub lazy: bool,
}

/// The line a mount prints on stdout once it can be used; `--background` waits for it.
const READY: &str = "pgsnapfs: mounted";
/// Set by `--background` for the mount process it starts.
const DETACHED: &str = "PGSNAPFS_MOUNT_DETACHED";

/// Once mounted in the background, stop holding the caller's stdout and stderr (a caller
/// piping them would otherwise wait forever): later messages go to `<scratch>/mount.log`, or
/// nowhere for the catalogue.
fn detach_output(scratch: Option<&Path>) -> Result<()> {
    let target = match scratch {
        Some(dir) => dir.join("mount.log"),
        None => PathBuf::from("/dev/null"),
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&target)
        .map_err(io(format!("open {}", target.display())))?;
    use std::os::fd::AsRawFd;
    // SAFETY: duplicating a valid descriptor onto stdout and stderr.
    unsafe {
        libc::dup2(file.as_raw_fd(), 1);
        libc::dup2(file.as_raw_fd(), 2);
    }
    Ok(())
}

fn check_mountpoint(dir: &Path) -> Result<()> {
    match std::fs::read_dir(dir).map(|mut entries| entries.next().is_none()) {
        Ok(true) => Ok(()),
        Ok(false) => Err(Error::BadInput(format!(
            "mount point {} is not empty",
            dir.display()
        ))),
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Err(Error::BadInput(format!(
            "mount point {} holds a stale mount; clean it up with `pgsnapfs umount {}`",
            dir.display(),
            dir.display()
        ))),
        Err(e) => Err(Error::BadInput(format!(
            "mount point {}: {e}",
            dir.display()
        ))),
    }
}

/// Blocks SIGINT and SIGTERM in every thread started after this, and returns a waiter for
/// them: the signals are taken synchronously, so the mount unmounts cleanly.
fn block_signals() -> libc::sigset_t {
    // SAFETY: plain signal-mask calls on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

pub fn run(
    repo: Repository,
    repo_spec: &str,
    pass: &super::key::PassphraseArgs,
    a: Args,
) -> Result<()> {
    // Before any thread starts: a thread with the default mask would take SIGTERM and die,
    // leaving a stale mount.
    let signals = block_signals();
    if a.background {
        return background();
    }
    check_mountpoint(&a.mountpoint)?;
    let lease = Lease::shared(&repo, "mount")?;
    let repo = a.cache.attach(repo, repo_spec)?;
    let is_root = unsafe { libc::geteuid() } == 0;
    let owner = if is_root {
        Owner::lookup(&a.owner)?
    } else {
        Owner::me()
    };
    let (uid, gid) = (owner.uid, owner.gid);
    let repo = Arc::new(repo);
    let cache = a.cache.cache_size as usize;
    let view = a.goal.names_a_point();
    if !view && a.goal.target_timeline.is_some() {
        return Err(Error::BadInput(
            "--target-timeline chooses the timeline of a point-in-time view: give it with \
             --backup or a --target-* option"
                .into(),
        ));
    }
    let (source, writable, fsname, key_file) = if view {
        let scratch = a.scratch.clone().ok_or_else(|| {
            Error::BadInput(
                "a point-in-time mount needs --scratch DIR for the server's writes".into(),
            )
        })?;
        let plan = super::plan_pinned(&repo, &lease, a.system, &a.goal.goal()?)?;
        let mountpoint = std::fs::canonicalize(&a.mountpoint)
            .map_err(io(format!("resolve {}", a.mountpoint.display())))?;
        // The server is started by someone else, with its own environment: the view keeps
        // the passphrase in its scratch directory for wal-fetch.
        let key = match repo.crypto().is_encrypted() {
            true => Some(super::key::view_key(&scratch)?),
            false => None,
        };
        let settings = RecoverySettings {
            restore_command: super::restore::restore_command(
                repo_spec,
                &plan,
                key.as_ref().map_or("", |k| &k.1),
            )?,
            target: plan.target.clone(),
            action: a.target_action,
            timeline: Some(plan.timeline.to_string()),
        };
        let view = crate::view::prepare(
            &repo,
            &plan,
            &settings,
            &scratch,
            &mountpoint,
            owner,
            &a.shared_buffers,
        )?;
        if let Some((path, _)) = &key {
            super::key::write_view_key(&pass.read(repo_spec)?, path, owner)?;
        }
        eprintln!(
            "mounting backup {} (PostgreSQL {}, ended {}) at {}; about {} of WAL to replay on \
             start, to {}; start PostgreSQL {} on it",
            plan.snapshot.id,
            plan.snapshot.pg_major,
            plan.snapshot.stop_time.to_rfc3339(),
            a.mountpoint.display(),
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
        if matches!(a.target_action, TargetAction::Pause) {
            eprintln!(
                "recovery pauses at the target in hot standby; if a query waits on a lock held by a \
                 transaction still open at the target (a DROP or TRUNCATE), promote the view with \
                 SELECT pg_wal_replay_resume() (or mount with --target-action promote)"
            );
        }
        let source = SnapSource::view(repo.clone(), &plan.snapshot, view.changes, cache)?;
        (
            source,
            Some(scratch.join("cow")),
            format!("pgsnapfs:{}@{}", plan.snapshot.id, std::process::id()),
            key.map(|(path, _)| path),
        )
    } else {
        if a.scratch.is_some() {
            return Err(Error::BadInput(
                "--scratch is for a point-in-time mount: add --backup or a --target-*".into(),
            ));
        }
        (
            SnapSource::catalogue(repo.clone(), cache)?,
            None,
            format!("pgsnapfs@{}", std::process::id()),
            None,
        )
    };
    let handle = pgsnapfs_fuse::mount(
        Arc::new(source),
        &a.mountpoint,
        pgsnapfs_fuse::MountOptions {
            fsname,
            uid,
            gid,
            allow_other: is_root,
            writable,
            block_size: crate::pg::PAGE_SIZE as u32,
            threads: 4,
            writeback_cache: true,
        },
    )
    .map_err(|e| {
        let hint = if !is_root && e.errno == libc::EACCES {
            "; without root, mounting needs read-write access to /dev/fuse (mode 0666, Debian's \
             default) and fusermount3 (Debian package fuse3)"
        } else {
            ""
        };
        Error::Mount(format!(
            "cannot mount at {}: {e}{hint}",
            a.mountpoint.display()
        ))
    })?;
    outln!("{READY} at {}", handle.mountpoint().display());
    let _ = std::io::stdout().flush();
    if std::env::var_os(DETACHED).is_some() {
        detach_output(a.scratch.as_deref())?;
    }
    let unmounter = handle.unmounter();
    std::thread::spawn(move || loop {
        let mut sig = 0;
        // SAFETY: waits for one of the blocked signals.
        unsafe { libc::sigwait(&signals, &mut sig) };
        tracing::info!("signal {sig}: unmounting");
        match unmounter.unmount() {
            Ok(()) => break,
            Err(e) => eprintln!("pgsnapfs: cannot unmount yet: {e}; stop what is using the mount, then signal again"),
        }
    });
    let ended = handle
        .wait()
        .map_err(|e| Error::Mount(format!("mount ended with an error: {e}")));
    // The server that needed it is gone with the mount.
    if let Some(path) = key_file {
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!("cannot remove the view's key file {}: {e}", path.display());
        }
    }
    ended
}

/// Starts this same command in the foreground as a detached child, and returns once it has
/// printed that it is mounted (or has failed).
fn background() -> Result<()> {
    let exe = std::env::current_exe().map_err(io("find the pgsnapfs executable"))?;
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--background")
        .collect();
    let mut cmd = Command::new(exe);
    cmd.args(&args)
        .env(DETACHED, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // SAFETY: setsid in the child before exec, so terminal signals do not reach it.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(io("start the mount process"))?;
    let stdout = child.stdout.take().expect("piped");
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(io("read from the mount process"))?;
        if line.starts_with(READY) {
            outln!("{line} (process {})", child.id());
            return Ok(());
        }
    }
    let status = child.wait().map_err(io("wait for the mount process"))?;
    let msg =
        format!("the mount process exited ({status}) before mounting; see the messages above");
    // Its exit code says what kind of failure it was (bad input, not found): keep it.
    Err(match status.code() {
        Some(2) => Error::BadInput(msg),
        Some(3) => Error::Store(crate::store::StoreError::corrupt("the repository", msg)),
        Some(4) => Error::NotFound(msg),
        _ => Error::Mount(msg),
    })
}

/// The process serving the pgsnapfs mount at `path`, from its file system name
/// (`pgsnapfs[:backup]@PID`) in a mountinfo listing.
fn mount_process(mountinfo: &str, path: &Path) -> Option<u32> {
    let path = std::fs::canonicalize(path).ok()?;
    // Mount points are escaped: space, tab, newline and backslash as octal.
    let escaped = path
        .to_str()?
        .replace('\\', "\\134")
        .replace(' ', "\\040")
        .replace('\t', "\\011")
        .replace('\n', "\\012");
    mountinfo
        .lines()
        .filter(|l| l.split(' ').nth(4) == Some(escaped.as_str()))
        .filter_map(|l| l.split_once(" - ")?.1.split(' ').nth(1))
        .filter(|source| source.starts_with("pgsnapfs"))
        .filter_map(|source| source.rsplit_once('@')?.1.parse().ok())
        // The last of stacked mounts is the one visible.
        .next_back()
}

pub fn umount(a: UmountArgs) -> Result<()> {
    let path = &a.mountpoint;
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::BadInput(format!("bad path {}", path.display())))?;
    let flags = if a.lazy { libc::MNT_DETACH } else { 0 };
    let owner = std::fs::read_to_string("/proc/self/mountinfo")
        .ok()
        .and_then(|info| mount_process(&info, path));
    let done = || {
        // The mount process releases its lease and scratch on the way out: wait for it, so
        // what runs next (gc, rm -rf scratch) finds it gone. A lazy unmount may stay busy.
        if let (Some(pid), false) = (owner, a.lazy) {
            let gone = || !Path::new(&format!("/proc/{pid}")).exists();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while !gone() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        outln!("unmounted {}", path.display());
    };
    // SAFETY: a valid C string.
    if unsafe { libc::umount2(c.as_ptr(), flags) } == 0 {
        done();
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EPERM) => {
            let status = Command::new("fusermount3")
                .arg("-u")
                .args(a.lazy.then_some("-z"))
                .arg(path)
                .status();
            match status {
                Ok(s) if s.success() => {
                    done();
                    Ok(())
                }
                _ => Err(Error::Mount(format!("cannot unmount {}: permission denied (run as root, or as the user who mounted it with fusermount3 installed)", path.display()))),
            }
        }
        Some(libc::EBUSY) => Err(Error::Mount(format!(
            "{} is busy: stop the server or shell using it (fuser -vm {}), or use --lazy",
            path.display(),
            path.display()
        ))),
        Some(libc::EINVAL) => Err(Error::BadInput(format!(
            "{} is not a mount point",
            path.display()
        ))),
        Some(libc::ENOENT) => Err(Error::BadInput(format!(
            "{} does not exist",
            path.display()
        ))),
        _ => Err(Error::Mount(format!(
            "cannot unmount {}: {err}",
            path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_the_mount_process_by_file_system_name() {
        let dir = tempfile::tempdir().unwrap();
        let mnt = std::fs::canonicalize(dir.path()).unwrap().join("a b");
        std::fs::create_dir(&mnt).unwrap();
        let shown = mnt.to_str().unwrap().replace(' ', "\\040");
        let info = format!(
            "22 1 0:21 / /proc rw - proc proc rw\n\
             90 22 0:50 / {shown} rw,nosuid - fuse pgsnapfs:20261121T054012Z@4242 rw\n"
        );
        assert_eq!(super::mount_process(&info, &mnt), Some(4242));
        let other = format!("90 22 0:50 / {shown} rw - fuse sshfs@host rw\n");
        assert_eq!(super::mount_process(&other, &mnt), None);
        assert_eq!(super::mount_process(&info, dir.path()), None);
    }
}
