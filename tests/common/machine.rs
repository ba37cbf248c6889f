//! Where PostgreSQL lives, the `postgres` user, the temp root: what the machine provides.

use super::*;

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
