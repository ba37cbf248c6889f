//! PostgreSQL 15 on a writable mount of an empty source: initdb, start, writes,
//! VACUUM FULL, checkpoint, stop, restart. If the server is happy, the copy-on-write layer
//! does what the product needs. Fails (never skips) if PostgreSQL or FUSE is missing.

use std::ffi::CString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::Setup;
use pgsnapfs_fuse::MemSource;

const BIN: &str = "/usr/lib/postgresql/15/bin";

fn postgres_ids() -> (u32, u32) {
    let name = CString::new("postgres").unwrap();
    // SAFETY: a valid C string; the result is read before any other getpw* call.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(!pw.is_null(), "no postgres user");
    // SAFETY: checked non-null above.
    unsafe { ((*pw).pw_uid, (*pw).pw_gid) }
}

/// Runs a PostgreSQL binary as the postgres user.
fn as_postgres(bin: &str, args: &[&str]) -> Output {
    Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(Path::new(BIN).join(bin))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {bin}: {e}"))
}

struct Server {
    data: PathBuf,
    sockets: PathBuf,
    log: PathBuf,
}

impl Server {
    fn pg_ctl(&self, args: &[&str]) -> Output {
        let mut all = vec!["-D", self.data.to_str().unwrap(), "-w", "-t", "60"];
        all.extend_from_slice(args);
        as_postgres("pg_ctl", &all)
    }

    fn start(&self) {
        let opts = format!(
            "-k {} -c listen_addresses='' -c port=5432",
            self.sockets.display()
        );
        let out = self.pg_ctl(&["-l", self.log.to_str().unwrap(), "-o", &opts, "start"]);
        assert!(out.status.success(), "start failed:\n{}", self.log_text());
    }

    fn stop(&self) {
        let out = self.pg_ctl(&["-m", "fast", "stop"]);
        assert!(out.status.success(), "stop failed:\n{}", self.log_text());
    }

    fn sql(&self, sql: &str) -> String {
        let out = Command::new("runuser")
            .args([
                "-u",
                "postgres",
                "--",
                "psql",
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
            ])
            .args([
                "-h",
                self.sockets.to_str().unwrap(),
                "-p",
                "5432",
                "-d",
                "postgres",
                "-c",
                sql,
            ])
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "{sql}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log_text()
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // After a failed assertion: the mount cannot go while the server holds it.
        if self.data.join("postmaster.pid").exists() {
            self.pg_ctl(&["-m", "immediate", "stop"]);
        }
    }
}

/// `durable`: the layer is kept there, and the cluster starts again on a second mount.
fn postgres_runs(writeback_cache: bool, durable: Option<&Path>) {
    assert!(
        Path::new(BIN).join("postgres").exists(),
        "PostgreSQL 15 is not installed at {BIN}"
    );
    let (uid, gid) = postgres_ids();
    let m = Setup {
        uid,
        gid,
        writeback_cache,
        durable: durable.map(Path::to_owned),
        ..Setup::default()
    }
    .mount(MemSource::new(0o700));
    let side = tempfile::tempdir().unwrap();
    std::fs::set_permissions(side.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut server = Server {
        data: m.path("data"),
        sockets: side.path().to_owned(),
        log: side.path().join("log"),
    };

    let out = as_postgres(
        "initdb",
        &[
            "-D",
            server.data.to_str().unwrap(),
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
        ],
    );
    assert!(
        out.status.success(),
        "initdb: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    server.start();
    server.sql("CREATE TABLE t (id int PRIMARY KEY, v text)");
    server.sql("INSERT INTO t SELECT i, repeat('x', 100) FROM generate_series(1, 100000) i");
    server.sql("UPDATE t SET v = 'y' WHERE id % 3 = 0");
    server.sql("DELETE FROM t WHERE id % 5 = 0");
    server.sql("VACUUM FULL t");
    server.sql("CHECKPOINT");
    server.sql("SELECT pg_switch_wal()");
    assert_eq!(
        server.sql("SELECT count(*), sum(id) FROM t WHERE v = 'y'"),
        "26667|1333366668"
    );
    server.stop();

    // A clean restart reads everything back through the mount.
    server.start();
    assert_eq!(server.sql("SELECT count(*) FROM t"), "80000");
    assert_eq!(server.sql("SELECT count(*) FROM t WHERE v = 'y'"), "26667");
    server.stop();
    m.unmount();
    if let Some(dir) = durable {
        // Mounted again on the kept layer: the cluster is all there, and takes writes.
        let m = Setup {
            uid,
            gid,
            writeback_cache,
            durable: Some(dir.to_owned()),
            ..Setup::default()
        }
        .mount(MemSource::new(0o700));
        server.data = m.path("data");
        server.start();
        assert_eq!(server.sql("SELECT count(*) FROM t WHERE v = 'y'"), "26667");
        server.sql("INSERT INTO t VALUES (0, 'again')");
        server.stop();
        m.unmount();
    }
}

#[test]
fn postgres_runs_on_a_writable_mount() {
    postgres_runs(false, None);
}

#[test]
fn postgres_runs_with_writeback_cache() {
    postgres_runs(true, None);
}

#[test]
fn postgres_runs_on_a_durable_mount_and_again_after_unmount() {
    let state = tempfile::tempdir().unwrap();
    postgres_runs(true, Some(&state.path().join("cow")));
}
