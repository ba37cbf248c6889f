//! `umount`: unmounting a mount, a stale one left by a killed process included, and waiting
//! for the process that served it to be gone.

use crate::error::{Error, Result};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// How long a busy mount is tried again before `umount` says it is busy.
const BUSY_GRACE: Duration = Duration::from_secs(3);

/// The process serving the pgsnapfs mount at `path`, from its file system name
/// (`pgsnapfs[-COMMAND][:BACKUP]@PID`) in a mountinfo listing.
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

/// The process serving the pgsnapfs mount at `path`, if one is mounted there.
pub fn serving_process(path: &Path) -> Option<u32> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mount_process(&info, path)
}

/// Unmounts `path`; `lazy` detaches it now even if busy. Without root, goes through
/// fusermount3.
pub fn umount(path: &Path, lazy: bool) -> Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::BadInput(format!("bad path {}", path.display())))?;
    let flags = if lazy { libc::MNT_DETACH } else { 0 };
    let owner = std::fs::read_to_string("/proc/self/mountinfo")
        .ok()
        .and_then(|info| mount_process(&info, path));
    let done = || {
        // The mount process releases its lease and scratch on the way out: wait for it, so
        // what runs next (gc, rm -rf scratch) finds it gone. A lazy unmount may stay busy.
        if let (Some(pid), false) = (owner, lazy) {
            // A zombie has finished too: its parent (a script, a test) reaps it after this.
            let gone = || {
                std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |st| {
                    st.rsplit(')')
                        .next()
                        .is_some_and(|s| s.trim_start().starts_with('Z'))
                })
            };
            let deadline = Instant::now() + Duration::from_secs(30);
            while !gone() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    // `pg_ctl stop` returns once the pid file is gone, a moment before the postmaster exits and
    // lets go of the data directory: a mount busy right after it gets a short grace.
    let grace = Instant::now() + BUSY_GRACE;
    let err = loop {
        // SAFETY: a valid C string.
        if unsafe { libc::umount2(c.as_ptr(), flags) } == 0 {
            done();
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EBUSY) || Instant::now() > grace {
            break err;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    match err.raw_os_error() {
        Some(libc::EPERM) => {
            let status = Command::new("fusermount3")
                .arg("-u")
                .args(lazy.then_some("-z"))
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
        let verify = format!("90 22 0:50 / {shown} rw - fuse pgsnapfs-verify:B@77 rw\n");
        assert_eq!(super::mount_process(&verify, &mnt), Some(77));
        let other = format!("90 22 0:50 / {shown} rw - fuse sshfs@host rw\n");
        assert_eq!(super::mount_process(&other, &mnt), None);
        assert_eq!(super::mount_process(&info, dir.path()), None);
    }
}
