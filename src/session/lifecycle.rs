//! A mount's process: in the foreground until unmounted or signalled, or started in the
//! background as a detached copy of itself that the caller waits for until it is mounted.

use crate::error::{io, Error, Result};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The line a mount prints on stdout once it can be used; `--background` waits for it.
pub const READY: &str = "pgsnapfs: mounted";
/// Set by `--background` for the mount process it starts.
const DETACHED: &str = "PGSNAPFS_MOUNT_DETACHED";

/// SIGINT and SIGTERM, blocked in this thread and in every thread started after it, so a
/// waiter takes them synchronously and unmounts cleanly.
#[derive(Clone, Copy)]
pub struct Signals(libc::sigset_t);

/// Blocks SIGINT and SIGTERM: call it before any thread starts, since a thread with the
/// default mask would take SIGTERM and die, leaving a stale mount.
pub fn block_signals() -> Signals {
    // SAFETY: plain signal-mask calls on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        Signals(set)
    }
}

impl Signals {
    /// Waits for one of the blocked signals and returns its number.
    pub fn wait(&self) -> i32 {
        let mut sig = 0;
        // SAFETY: waits for one of the signals of a valid set.
        unsafe { libc::sigwait(&self.0, &mut sig) };
        sig
    }
}

/// Whether this process is a mount started by `--background`.
pub fn detached() -> bool {
    std::env::var_os(DETACHED).is_some()
}

/// Once mounted in the background, stop holding the caller's stdout and stderr (a caller
/// piping them would otherwise wait forever): later messages go to `<scratch>/mount.log`, or
/// nowhere for the catalogue.
pub fn detach_output(scratch: Option<&Path>) -> Result<()> {
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

/// A mount process started in the background, once it is mounted.
pub struct Started {
    /// Its ready line: [`READY`] and where.
    pub line: String,
    /// The mount process.
    pub pid: u32,
}

/// Starts this same command in the foreground as a detached child, and returns once it has
/// printed that it is mounted (or has failed).
pub fn background() -> Result<Started> {
    spawn(
        std::env::args_os()
            .skip(1)
            .filter(|a| a != "--background")
            .collect(),
    )
}

/// Starts pgsnapfs with `args` (a mount in the foreground) as a detached child, and returns
/// once it has printed that it is mounted (or has failed).
pub fn spawn(args: Vec<std::ffi::OsString>) -> Result<Started> {
    let exe = std::env::current_exe().map_err(io("find the pgsnapfs executable"))?;
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
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line.map_err(io("read from the mount process"))?;
            if line.starts_with(READY) {
                return Ok(Started {
                    line,
                    pid: child.id(),
                });
            }
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

/// Refuses a mount point that is not an empty directory, naming a stale mount as such.
pub fn check_mountpoint(dir: &Path) -> Result<()> {
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
