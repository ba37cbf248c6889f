//! A private mount namespace for a server pgsnapfs starts on a view, with host directories
//! covered by the view's own (see `crate::tblspc`).
//!
//! Decision: the namespace is made in the child between fork and exec, while it is still
//! root (setpriv drops to the server's user after): `unshare(CLONE_NEWNS)`, `/` made
//! recursively private so nothing mounted in it reaches the host, then one bind mount per
//! cover. Mounting changes no directory: the host's stays exactly as it was, and everything
//! else (the view's FUSE mount, the socket, the repository) is seen as before. The namespace
//! goes with the server's last process.

use crate::error::{Error, Result};
use crate::tblspc::Cover;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

fn c_path(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| Error::BadInput(format!("{} holds a NUL byte", p.display())))
}

/// Makes `cmd` run in a mount namespace of its own where each cover's directory is mounted
/// over its location. Nothing when there is nothing to cover. The caller is root.
pub fn isolate(cmd: &mut Command, covers: &[Cover]) -> Result<()> {
    if covers.is_empty() {
        return Ok(());
    }
    let binds = covers
        .iter()
        .map(|c| Ok((c_path(&c.dir)?, c_path(&c.location)?)))
        .collect::<Result<Vec<_>>>()?;
    // SAFETY: the closure runs in the forked child before exec and only makes system calls
    // on memory prepared before the fork (no allocation, no lock).
    unsafe { cmd.pre_exec(move || enter(&binds)) };
    Ok(())
}

/// In the child: the namespace, `/` private, the bind mounts.
fn enter(binds: &[(CString, CString)]) -> std::io::Result<()> {
    let check = |rc: libc::c_int| match rc {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    };
    // SAFETY: plain system calls with NUL-terminated paths that outlive them.
    unsafe {
        check(libc::unshare(libc::CLONE_NEWNS))?;
        check(libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ))?;
        for (dir, location) in binds {
            check(libc::mount(
                dir.as_ptr(),
                location.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            ))?;
        }
    }
    Ok(())
}
