//! A small disk of its own for a test: a tmpfs to fill up.

use super::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted on a directory, owned by `postgres`; unmounted on drop.
pub struct Tmpfs {
    pub point: PathBuf,
}

impl Tmpfs {
    /// Creates `point` and mounts a tmpfs of `size` (as mount's `size=` takes it) there.
    pub fn mount(point: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir(point).unwrap();
        run_command(
            Command::new("mount")
                .args([
                    "-t",
                    "tmpfs",
                    "-o",
                    &format!("size={size},mode=0700"),
                    "tmpfs",
                ])
                .arg(point),
        )
        .assert_ok();
        chown_to_postgres(point);
        Tmpfs {
            point: point.to_path_buf(),
        }
    }

    /// Its free bytes, as `df` says.
    pub fn free_bytes(&self) -> u64 {
        let out = run_command(
            Command::new("df")
                .args(["--output=avail", "-B1"])
                .arg(&self.point),
        )
        .assert_ok()
        .stdout_str();
        out.lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or_else(|| panic!("cannot parse df output: {out}"))
    }

    /// Writes a file `name` on it until at most `leave` bytes are free; returns its path.
    pub fn fill(&self, name: &str, leave: u64) -> PathBuf {
        use std::io::Write;
        let filler = self.point.join(name);
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0xa5u8; 64 << 10];
        let mut left = self.free_bytes().saturating_sub(leave);
        while left > 0 {
            let n = left.min(block.len() as u64) as usize;
            // With nothing to leave, the last block may not fit: full is what was asked for.
            if f.write_all(&block[..n]).is_err() {
                break;
            }
            left -= n as u64;
        }
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.point).status();
    }
}
