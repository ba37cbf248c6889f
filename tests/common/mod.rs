//! Harness for the integration tests: real PostgreSQL clusters (15, or the major in
//! `PGSNAPFS_TEST_PG_MAJOR`: see [`test_major`]) driven by the real `pgsnapfs` binary,
//! everything run as the `postgres` user because the tests themselves run as root.
//!
//! - [`TestDir`]: a temp dir that `postgres` owns; removed on drop (after unmounting anything
//!   still mounted inside it), so a panicking test cleans up too.
//! - [`Cluster`] (in `cluster.rs`): initdb, start/stop, psql, pgbench, WAL switching, and
//!   servers started on restored data directories.
//! - [`pgsnapfs`] and friends run the binary and return a [`Run`] whose `assert_*` methods print
//!   the command, stdout and stderr when they fail.
//!
//! Nothing here skips: a missing PostgreSQL, `postgres` user or root privilege panics with a
//! message saying what to install.

// Each test binary uses a different part of the harness.
#![allow(dead_code)]

pub mod cluster;
pub mod moto;
pub mod mount;

// Not every test binary uses all of them.
#[allow(unused_imports)]
pub use cluster::{Cluster, ClusterOptions, RecoveryState};

use std::collections::hash_map::RandomState;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Where PostgreSQL 15's programs live on Debian. `PGSNAPFS_TEST_PG_BIN` overrides it.
pub const DEFAULT_PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// Where scripts/lib/deps.sh (`install_pg_matrix`) puts the other majors, as `MAJOR/bin`.
/// `PGSNAPFS_TEST_PG_MATRIX` overrides it.
pub const DEFAULT_PG_MATRIX: &str = "/opt/pgsnapfs-pg";

/// Facts about this machine checked once per test process.
pub struct Machine {
    pub pg_bin: PathBuf,
    pub postgres_uid: u32,
    pub postgres_gid: u32,
    pub postgres_home: String,
    pub tmp_root: PathBuf,
}

/// Checks the prerequisites once and panics loudly if one is missing.
pub fn machine() -> &'static Machine {
    static MACHINE: OnceLock<Machine> = OnceLock::new();
    MACHINE.get_or_init(|| {
        let euid = command_stdout(Command::new("id").arg("-u"));
        assert_eq!(
            euid.trim(),
            "0",
            "the integration tests must run as root: they run PostgreSQL and pgsnapfs as the \
             `postgres` user through setpriv (and FUSE mounts as root)"
        );
        let pg_bin = std::env::var_os("PGSNAPFS_TEST_PG_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_PG_BIN));
        for tool in [
            "initdb",
            "pg_ctl",
            "postgres",
            "psql",
            "pgbench",
            "pg_controldata",
        ] {
            assert!(
                pg_bin.join(tool).is_file(),
                "PostgreSQL 15 is missing: {} not found (install the Debian packages \
                 postgresql-15 and postgresql-client-15, e.g. with scripts/test)",
                pg_bin.join(tool).display()
            );
        }
        let passwd = Command::new("getent")
            .args(["passwd", "postgres"])
            .output()
            .expect("run getent");
        assert!(
            passwd.status.success(),
            "the `postgres` user does not exist (the Debian package postgresql-15 creates it)"
        );
        // postgres:x:UID:GID:GECOS:HOME:SHELL
        let passwd = String::from_utf8_lossy(&passwd.stdout).trim().to_string();
        let fields: Vec<&str> = passwd.split(':').collect();
        assert!(fields.len() >= 7, "unexpected getent output: {passwd}");
        let tmp_root = std::env::var_os("PGSNAPFS_TEST_TMPDIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/tmp"));
        assert!(
            tmp_root.is_dir(),
            "temp root {} is not a directory",
            tmp_root.display()
        );
        Machine {
            pg_bin,
            postgres_uid: fields[2].parse().expect("postgres uid"),
            postgres_gid: fields[3].parse().expect("postgres gid"),
            postgres_home: fields[5].to_string(),
            tmp_root,
        }
    })
}

/// The absolute path of a PostgreSQL program (`initdb`, `psql`, ...).
pub fn pg_tool(name: &str) -> PathBuf {
    machine().pg_bin.join(name)
}

/// The directory holding initdb, pg_ctl and postgres of PostgreSQL `major`: the harness's
/// own for 15, else the npm build that scripts/test installs. psql and pgbench always come
/// from [`pg_tool`] (Debian's 15 is a client for every major).
pub fn server_bin(major: u32) -> PathBuf {
    if major == 15 {
        return machine().pg_bin.clone();
    }
    let root = std::env::var_os("PGSNAPFS_TEST_PG_MATRIX")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PG_MATRIX));
    let bin = root.join(major.to_string()).join("bin");
    assert!(
        bin.join("postgres").is_file(),
        "PostgreSQL {major} is missing: {} not found (scripts/test installs it: \
         install_pg_matrix in scripts/lib/deps.sh)",
        bin.join("postgres").display()
    );
    bin
}

/// The major of every server a test starts without naming one (initdb, pg_ctl and postgres
/// come from [`server_bin`] of it): `PGSNAPFS_TEST_PG_MAJOR`, 15 when unset. scripts/test runs
/// the integration tests once more with 17 and with 18. Clients (psql, pgbench) stay 15's.
pub fn test_major() -> u32 {
    static MAJOR: OnceLock<u32> = OnceLock::new();
    *MAJOR.get_or_init(|| match std::env::var("PGSNAPFS_TEST_PG_MAJOR") {
        Err(_) => 15,
        Ok(v) => v.trim().parse().unwrap_or_else(|_| {
            panic!("PGSNAPFS_TEST_PG_MAJOR={v:?} is not a PostgreSQL major such as 17")
        }),
    })
}

/// The server programs of [`test_major`].
pub fn test_server_bin() -> PathBuf {
    server_bin(test_major())
}

/// Environment variables that would change which server or repository a command talks to;
/// removed from every command the harness runs so the tests say it explicitly.
const SCRUBBED_ENV: &[&str] = &[
    "PGSNAPFS_REPO",
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGDATABASE",
    "PGDATA",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGOPTIONS",
    "PGAPPNAME",
    "PGSSLMODE",
    "PGTZ",
    "PGCONNECT_TIMEOUT",
];

/// A command that runs `program` as the `postgres` user (setpriv execs it, so the child's PID is
/// the program's own and can be signalled), with cwd `/`, no stdin and a scrubbed environment.
pub fn postgres_command(program: impl AsRef<OsStr>) -> Command {
    let m = machine();
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=postgres",
        "--regid=postgres",
        "--init-groups",
        "--",
    ]);
    cmd.arg(program);
    cmd.env("HOME", &m.postgres_home)
        .env("USER", "postgres")
        .env("LOGNAME", "postgres")
        .current_dir("/")
        .stdin(Stdio::null());
    for var in SCRUBBED_ENV {
        cmd.env_remove(var);
    }
    cmd
}

/// Runs a command to completion, panicking if it cannot be started.
pub fn run_command(cmd: &mut Command) -> Run {
    let description = describe(cmd);
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("could not start `{description}`: {e}"));
    Run {
        command: description,
        output,
    }
}

fn command_stdout(cmd: &mut Command) -> String {
    run_command(cmd).assert_ok().stdout_str()
}

/// `program args...` as one line, for messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// The output of a finished command plus the command line, for assertion messages.
/// Derefs to [`Output`].
pub struct Run {
    pub command: String,
    pub output: Output,
}

impl std::ops::Deref for Run {
    type Target = Output;
    fn deref(&self) -> &Output {
        &self.output
    }
}

impl Run {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// The exit code, or None when a signal ended the process.
    pub fn code(&self) -> Option<i32> {
        self.output.status.code()
    }

    /// stdout and stderr together, for "the message names X" checks.
    pub fn all_output(&self) -> String {
        format!("{}\n{}", self.stdout_str(), self.stderr_str())
    }

    /// A report of the command, its exit status and its output.
    pub fn report(&self) -> String {
        format!(
            "command: {}\nstatus: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command,
            self.output.status,
            self.stdout_str(),
            self.stderr_str()
        )
    }

    #[track_caller]
    pub fn assert_ok(self) -> Self {
        assert!(
            self.output.status.success(),
            "command failed\n{}",
            self.report()
        );
        self
    }

    #[track_caller]
    pub fn assert_exit(self, code: i32) -> Self {
        assert_eq!(
            self.code(),
            Some(code),
            "expected exit code {code}\n{}",
            self.report()
        );
        self
    }

    /// Asserts the command exited with a non-zero code (not killed by a signal).
    #[track_caller]
    pub fn assert_failed(self) -> Self {
        assert!(
            matches!(self.code(), Some(c) if c != 0),
            "expected a non-zero exit code\n{}",
            self.report()
        );
        self
    }

    /// Asserts stdout+stderr contain `needle` (case-insensitive).
    #[track_caller]
    pub fn assert_mentions(self, needle: &str) -> Self {
        assert!(
            self.all_output()
                .to_lowercase()
                .contains(&needle.to_lowercase()),
            "expected the output to mention {needle:?}\n{}",
            self.report()
        );
        self
    }

    /// Parses stdout as one JSON document.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.output.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON: {e}\n{}", self.report()))
    }
}

// ---------------------------------------------------------------------------------------------
// pgsnapfs

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

/// Which back end a test repository lives on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Store {
    /// A directory.
    Local,
    /// A bucket on a moto S3 server of its own, started for the repository.
    S3,
}

/// Declares `#[test]`s `NAME::local` and `NAME::s3` for each `fn NAME(store: Store)`, so one
/// test body runs on both back ends.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn local() {
                super::$name($crate::common::Store::Local)
            }
            #[test]
            fn s3() {
                super::$name($crate::common::Store::S3)
            }
        }
    )*};
}

/// A pgsnapfs repository inside its own [`TestDir`]. [`Repo::new`] only picks the location;
/// [`Repo::init`] also runs `pgsnapfs init`. On S3, `path` is a local directory for the test's
/// own files and `spec` the `s3://` URL.
pub struct Repo {
    pub path: PathBuf,
    /// The `--repo` value.
    pub spec: String,
    pub store: Store,
    /// For an encrypted repository: the passphrase file (owned by postgres, 0600) every
    /// command of [`Repo::run`] gets.
    pub passphrase_file: Option<PathBuf>,
    /// Declared before the dir: the server stops first.
    moto: Option<moto::Moto>,
    _dir: TestDir,
}

impl Repo {
    pub fn new() -> Repo {
        Repo::new_on(Store::Local)
    }

    pub fn init() -> Repo {
        Repo::init_on(Store::Local)
    }

    pub fn new_on(store: Store) -> Repo {
        let dir = TestDir::new("repo");
        let path = dir.join("repo");
        let (spec, moto) = match store {
            Store::Local => (path.display().to_string(), None),
            Store::S3 => {
                let moto = moto::Moto::start();
                moto.create_bucket("pgsnapfs");
                let spec = format!("s3://pgsnapfs/repo?endpoint={}", moto.endpoint());
                fs::create_dir(&path).expect("create the test's local dir");
                chown_to_postgres(&path);
                (spec, Some(moto))
            }
        };
        Repo {
            path,
            spec,
            store,
            passphrase_file: None,
            moto,
            _dir: dir,
        }
    }

    pub fn init_on(store: Store) -> Repo {
        let repo = Repo::new_on(store);
        repo.run("init", &[]).assert_ok();
        repo
    }

    /// An encrypted repository (`init --encryption`) whose passphrase is `passphrase`.
    pub fn init_encrypted_on(store: Store, passphrase: &str) -> Repo {
        let mut repo = Repo::new_on(store);
        let file = repo._dir.join("passphrase");
        fs::write(&file, passphrase).expect("write the passphrase file");
        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).expect("chmod");
        chown_to_postgres(&file);
        repo.passphrase_file = Some(file);
        repo.run("init", &["--encryption"]).assert_ok();
        repo
    }

    /// `pgsnapfs SUBCOMMAND --repo PATH ARGS...` as postgres.
    pub fn run(&self, subcommand: &str, args: &[&str]) -> Run {
        pgsnapfs(&self.args(subcommand, args))
    }

    /// The argument list `SUBCOMMAND --repo SPEC ARGS...`; on S3, mount and verify keep their
    /// disk cache in the test's own dir.
    pub fn args(&self, subcommand: &str, args: &[&str]) -> Vec<String> {
        let mut v = vec![
            subcommand.to_string(),
            "--repo".to_string(),
            self.spec.clone(),
        ];
        if let Some(f) = &self.passphrase_file {
            v.push("--passphrase-file".into());
            v.push(f.display().to_string());
        }
        if self.store == Store::S3 && matches!(subcommand, "mount" | "verify") {
            v.push("--cache-dir".into());
            v.push(self.path.join("cache").display().to_string());
        }
        // verify finds Debian's server of the backup's major by itself (tested on 15); the
        // npm builds of the other majors are elsewhere.
        if subcommand == "verify" && test_major() != 15 && !args.contains(&"--pg-bin") {
            v.push("--pg-bin".into());
            v.push(test_server_bin().display().to_string());
        }
        v.extend(args.iter().map(|s| s.to_string()));
        v
    }

    /// `pgsnapfs backup --json` of a running cluster; asserts success and returns the JSON.
    #[track_caller]
    pub fn backup(&self, cluster: &Cluster) -> serde_json::Value {
        let mut args = vec!["--json".to_string()];
        args.extend(cluster.backup_args());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run("backup", &args).assert_ok().json()
    }

    /// `pgsnapfs list --json`'s backups.
    #[track_caller]
    pub fn list(&self) -> Vec<serde_json::Value> {
        let v = self.run("list", &["--json"]).assert_ok().json();
        v["backups"]
            .as_array()
            .unwrap_or_else(|| panic!("list --json has no \"backups\" array: {v}"))
            .clone()
    }

    /// `pgsnapfs restore --to DIR ARGS...`; returns the run without asserting.
    pub fn restore(&self, to: &Path, args: &[&str]) -> Run {
        let mut v = vec!["--to", to.to_str().expect("utf-8 path")];
        v.extend_from_slice(args);
        self.run("restore", &v)
    }

    /// The keys under `prefix` and their sizes, through the library's back end (either store).
    pub fn objects(&self, prefix: &str) -> Vec<(String, u64)> {
        let backend = pgsnapfs::store::open_backend(&self.spec).expect("open the repository");
        backend
            .list(prefix)
            .expect("list the repository")
            .into_iter()
            .map(|k| {
                let size = backend.size(&k).expect("size of an object");
                (k, size)
            })
            .collect()
    }

    /// A fingerprint of every object in the repository (and, locally, every file and its
    /// mode), to check a command changed nothing.
    pub fn digest(&self) -> BTreeMap<String, String> {
        match self.store {
            Store::Local => tree_digest(&self.path),
            Store::S3 => {
                let backend = pgsnapfs::store::open_backend(&self.spec).expect("open S3 repo");
                let keys = backend.list("").expect("list the S3 repository");
                keys.into_iter()
                    .map(|k| {
                        let mut h = std::collections::hash_map::DefaultHasher::new();
                        h.write(&backend.get(&k).expect("read an S3 object"));
                        (k, format!("{:x}", h.finish()))
                    })
                    .collect()
            }
        }
    }
}

/// The string field `key` of a backup JSON object.
#[track_caller]
pub fn json_str(v: &serde_json::Value, key: &str) -> String {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("field {key:?} missing or not a string in {v}"))
        .to_string()
}

/// The unsigned integer field `key` of a JSON object.
#[track_caller]
pub fn json_u64(v: &serde_json::Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("field {key:?} missing or not an unsigned integer in {v}"))
}

/// The requests in a `"requests"` object of pgsnapfs's JSON (retries are already in the
/// per-kind counts).
#[track_caller]
pub fn requests_total(r: &serde_json::Value) -> u64 {
    let kinds = r
        .as_object()
        .unwrap_or_else(|| panic!("\"requests\" is not an object: {r}"));
    kinds
        .iter()
        .filter(|(k, _)| k.as_str() != "retries")
        .map(|(_, v)| v.as_u64().unwrap_or_else(|| panic!("bad count in {r}")))
        .sum()
}

// ---------------------------------------------------------------------------------------------
// Temp dirs

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

// ---------------------------------------------------------------------------------------------
// Ports, randomness, waiting

pub fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// A TCP port that is free on 127.0.0.1 and that no other test in this process got: a
/// per-process counter from a random base (so parallel test binaries start far apart), plus a
/// bind test. The servers listen only on their private unix socket, where the port just names
/// the socket file, so a race with another program is harmless.
pub fn free_port() -> u16 {
    const LOW: u32 = 20_000;
    const SPAN: u32 = 40_000;
    static BASE: OnceLock<u32> = OnceLock::new();
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = *BASE.get_or_init(|| (random_u64() % u64::from(SPAN)) as u32);
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (LOW + (base + n * 7) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port found");
}

/// Polls `f` every 100 ms until it returns Ok. `f` returns Err(how things stand) while not
/// there yet; after `timeout` the last such Err is returned.
pub fn wait_for<T>(
    timeout: Duration,
    mut f: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let start = Instant::now();
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if start.elapsed() > timeout => {
                return Err(format!("timed out after {timeout:?}; last state: {e}"))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// File helpers

/// Path → "kind size hash" for every entry below `root` (std's SipHash: enough to see a
/// change). A missing root gives an empty map.
pub fn tree_digest(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if root.symlink_metadata().is_ok() {
        digest_into(root, root, &mut out);
    }
    out
}

fn digest_into(root: &Path, p: &Path, out: &mut BTreeMap<String, String>) {
    let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
    let meta = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("stat {}: {e}", p.display()));
    if meta.file_type().is_symlink() {
        let target = fs::read_link(p).unwrap();
        out.insert(rel, format!("symlink {}", target.display()));
    } else if meta.is_dir() {
        out.insert(rel, "dir".to_string());
        let mut entries: Vec<PathBuf> = fs::read_dir(p)
            .unwrap_or_else(|e| panic!("read_dir {}: {e}", p.display()))
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for e in entries {
            digest_into(root, &e, out);
        }
    } else {
        let mut f = fs::File::open(p).unwrap_or_else(|e| panic!("open {}: {e}", p.display()));
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = f.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            h.write(&buf[..n]);
        }
        out.insert(rel, format!("file {} {:016x}", meta.len(), h.finish()));
    }
}

/// Asserts two [`tree_digest`]s are equal, listing the paths that differ.
#[track_caller]
pub fn assert_same_tree(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
    what: &str,
) {
    if before == after {
        return;
    }
    let mut diff = String::new();
    for (k, v) in before {
        match after.get(k) {
            None => writeln!(diff, "  removed: {k} ({v})").unwrap(),
            Some(w) if w != v => writeln!(diff, "  changed: {k} ({v} -> {w})").unwrap(),
            _ => {}
        }
    }
    for (k, v) in after {
        if !before.contains_key(k) {
            writeln!(diff, "  added:   {k} ({v})").unwrap();
        }
    }
    panic!("{what} changed:\n{diff}");
}

/// Inverts every bit of the byte at `offset`.
pub fn flip_byte(path: &Path, offset: u64) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.read_exact(&mut b).unwrap();
    b[0] ^= 0xff;
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&b).unwrap();
    f.sync_all().unwrap();
}

/// Where a blob lies in a pack file (docs/repository-format.md, "Packs").
#[derive(Debug)]
pub struct BlobPlace {
    pub pack: PathBuf,
    pub offset: u64,
    pub stored_len: u64,
    /// Where the blob's 48-byte entry in the pack's entry table starts.
    pub entry_at: u64,
}

/// Every place, in every pack of a local repository, of the blob with this id.
pub fn find_blob(repo: &Path, id: &[u8]) -> Vec<BlobPlace> {
    let mut found = Vec::new();
    for pack in files_below(&repo.join("packs")) {
        let data = fs::read(&pack).unwrap();
        let n = data.len();
        if n < 20 || &data[n - 8..] != b"PGSNPKIX" {
            continue;
        }
        let count = u32::from_le_bytes(data[n - 12..n - 8].try_into().unwrap()) as usize;
        let table = n - 12 - count * 48;
        for i in 0..count {
            let e = &data[table + i * 48..table + (i + 1) * 48];
            if &e[..32] == id {
                found.push(BlobPlace {
                    pack: pack.clone(),
                    offset: u32::from_le_bytes(e[36..40].try_into().unwrap()) as u64,
                    stored_len: u32::from_le_bytes(e[40..44].try_into().unwrap()) as u64,
                    entry_at: (table + i * 48) as u64,
                });
            }
        }
    }
    found
}

/// All regular files below `root`, sorted.
pub fn files_below(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// True if `dir` does not exist or has no entries.
pub fn is_absent_or_empty(dir: &Path) -> bool {
    match fs::read_dir(dir) {
        Ok(mut rd) => rd.next().is_none(),
        Err(_) => !dir.exists(),
    }
}

/// Parses a PostgreSQL LSN such as `0/3000060` into a byte position.
#[track_caller]
pub fn parse_lsn(s: &str) -> u64 {
    let (hi, lo) = s
        .trim()
        .split_once('/')
        .unwrap_or_else(|| panic!("{s:?} is not an LSN"));
    let hi = u64::from_str_radix(hi, 16).unwrap_or_else(|_| panic!("{s:?} is not an LSN"));
    let lo = u64::from_str_radix(lo, 16).unwrap_or_else(|_| panic!("{s:?} is not an LSN"));
    (hi << 32) | lo
}

/// Mount points currently in /proc/self/mounts, which escapes space, tab, newline and
/// backslash as octal.
pub fn mount_points() -> Vec<PathBuf> {
    fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .map(|p| {
            PathBuf::from(
                p.replace("\\040", " ")
                    .replace("\\011", "\t")
                    .replace("\\012", "\n")
                    .replace("\\134", "\\"),
            )
        })
        .collect()
}
