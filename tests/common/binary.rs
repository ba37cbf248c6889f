//! The pgsnapfs binary under test, and running it.

use super::*;

/// The pgsnapfs binary built by cargo, at a path the `postgres` user can execute (copied to a
/// shared temp dir if the checkout is not traversable by postgres, e.g. under /root).
pub fn pgsnapfs_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let built = PathBuf::from(env!("CARGO_BIN_EXE_pgsnapfs"));
        assert!(
            built.is_file(),
            "pgsnapfs binary missing: {}",
            built.display()
        );
        let reachable = postgres_command("test")
            .arg("-x")
            .arg(&built)
            .status()
            .expect("run test -x as postgres")
            .success();
        if reachable {
            return built;
        }
        // Named after size and mtime so concurrent test binaries share one copy per build.
        let meta = fs::metadata(&built).expect("stat pgsnapfs");
        let dir = machine().tmp_root.join("pgsnapfs-test-bin");
        fs::create_dir_all(&dir).expect("create bin copy dir");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod bin dir");
        let copy = dir.join(format!("pgsnapfs-{}-{}", meta.len(), meta.mtime_nsec()));
        if !copy.exists() {
            let tmp = dir.join(format!("pgsnapfs.tmp.{}", std::process::id()));
            fs::copy(&built, &tmp).expect("copy pgsnapfs");
            fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).expect("chmod copy");
            fs::rename(&tmp, &copy).expect("rename pgsnapfs copy");
        }
        copy
    })
}

/// A command running pgsnapfs as `postgres` (cwd `/`, `PGSNAPFS_REPO` and libpq variables
/// unset). Adjust it (cwd, env) and run it with [`run_command`], or spawn it.
pub fn pgsnapfs_command<S: AsRef<OsStr>>(args: &[S]) -> Command {
    let mut cmd = postgres_command(pgsnapfs_bin());
    cmd.args(args);
    cmd
}

/// Runs pgsnapfs as `postgres` and waits for it.
pub fn pgsnapfs<S: AsRef<OsStr>>(args: &[S]) -> Run {
    run_command(&mut pgsnapfs_command(args))
}

/// Runs pgsnapfs as `postgres` in `cwd`, as PostgreSQL runs archive_command and
/// restore_command in the data directory.
pub fn pgsnapfs_in<S: AsRef<OsStr>>(cwd: &Path, args: &[S]) -> Run {
    run_command(pgsnapfs_command(args).current_dir(cwd))
}

/// Runs pgsnapfs as root (for FUSE mounts), with the same scrubbed environment.
pub fn pgsnapfs_as_root<S: AsRef<OsStr>>(args: &[S]) -> Run {
    let mut cmd = Command::new(pgsnapfs_bin());
    cmd.args(args).current_dir("/").stdin(Stdio::null());
    for var in SCRUBBED_ENV {
        cmd.env_remove(var);
    }
    run_command(&mut cmd)
}
