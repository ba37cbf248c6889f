//! Temp dirs that `postgres` owns, and file ownership for it.

use super::*;

/// A temp dir under /tmp (or `PGSNAPFS_TEST_TMPDIR`) owned by `postgres`, mode 0755. Dropping it
/// unmounts whatever is still mounted below it, then removes it; set `PGSNAPFS_TEST_KEEP=1` to
/// keep it for a post-mortem. Declare servers after the dirs they use (or own the dir inside
/// the server's struct) so they are stopped first.
pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    pub fn new(label: &str) -> TestDir {
        let m = machine();
        for _ in 0..100 {
            let path = m
                .tmp_root
                .join(format!("pgsnapfs-test.{label}.{:08x}", random_u64() as u32));
            match fs::create_dir(&path) {
                Ok(()) => {
                    chown_to_postgres(&path);
                    fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
                        .expect("chmod temp dir");
                    return TestDir { path };
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => panic!("cannot create temp dir {}: {e}", path.display()),
            }
        }
        panic!("could not find a free temp dir name");
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.path.join(p)
    }

    /// Creates `name` inside this dir, owned by postgres with `mode`.
    pub fn subdir(&self, name: &str, mode: u32) -> PathBuf {
        let p = self.join(name);
        mkdir_for_postgres(&p, mode);
        p
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::env::var_os("PGSNAPFS_TEST_KEEP").is_some() {
            eprintln!("keeping {}", self.path.display());
            return;
        }
        unmount_below(&self.path);
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Lazily unmounts every mount point at or below `root`, deepest first, so removing the dir
/// never deletes files through a mount left behind by a failed test.
pub fn unmount_below(root: &Path) {
    let mut points: Vec<PathBuf> = mount_points()
        .into_iter()
        .filter(|p| p.starts_with(root))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in points {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&p)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Creates a directory (and missing parents) owned by postgres with `mode`.
pub fn mkdir_for_postgres(path: &Path, mode: u32) {
    fs::create_dir_all(path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
    chown_to_postgres(path);
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

pub fn chown_to_postgres(path: &Path) {
    let m = machine();
    std::os::unix::fs::chown(path, Some(m.postgres_uid), Some(m.postgres_gid))
        .unwrap_or_else(|e| panic!("chown postgres {}: {e}", path.display()));
}

/// Copies a file (as root) and hands the copy to postgres.
pub fn copy_for_postgres(from: &Path, to: &Path) {
    fs::copy(from, to)
        .unwrap_or_else(|e| panic!("copy {} -> {}: {e}", from.display(), to.display()));
    chown_to_postgres(to);
}
