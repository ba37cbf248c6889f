//! Tests of the test harness itself, without pgsnapfs: when these fail, the machine (PostgreSQL,
//! the postgres user, temp dirs) is the problem, not the product.

mod common;

use common::*;
use std::path::PathBuf;

#[test]
fn cluster_lifecycle_and_psql() {
    let mut c = Cluster::start_new(ClusterOptions::default());
    // Every server a test does not give a major runs PGSNAPFS_TEST_PG_MAJOR's (15 by default).
    let major = |c: &Cluster| c.psql("SHOW server_version_num").parse::<u32>().unwrap() / 10000;
    assert_eq!(major(&c), test_major());
    // Several statements, each in its own transaction; only query results are printed.
    let out = c.psql(
        "CREATE TABLE t(id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, 'x' FROM generate_series(1, 10) g;
         SELECT count(*) FROM t;
         SELECT 'two', 2;",
    );
    assert_eq!(out, "10\ntwo|2");
    let err = c.try_psql("SELECT * FROM no_such_table").unwrap_err();
    assert!(err.contains("no_such_table"), "{err}");
    assert!(!c.system_identifier().is_empty());
    assert!(parse_lsn(&c.current_wal_lsn()) > 0);

    c.restart();
    assert_eq!(c.psql("SELECT count(*) FROM t"), "10");
    c.stop();

    // A server on a copy of the data directory, with its own port and archiving off.
    let copy = TestDir::new("copy");
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(&c.data)
        .arg(copy.join("data"))
        .status()
        .unwrap();
    assert!(st.success());
    let on_copy = Cluster::start_on(&copy.join("data"));
    assert_ne!(on_copy.port, c.port);
    assert_eq!(on_copy.wait_until_paused_or_ready(), RecoveryState::Ready);
    assert_eq!(on_copy.psql("SELECT count(*) FROM t"), "10");
    assert_eq!(on_copy.psql("SHOW archive_mode"), "off");
    assert_eq!(major(&on_copy), test_major());
}

#[test]
fn failed_start_reports_the_server_log() {
    let mut c = Cluster::new(ClusterOptions {
        settings: vec![("shared_buffers".into(), "'lots'".into())],
        ..ClusterOptions::default()
    });
    let report = c.try_start().unwrap_err();
    assert!(report.contains("shared_buffers"), "{report}");
}

/// A test that panics still stops its servers and removes its temp dirs.
#[test]
fn panicking_test_cleans_up() {
    let mut seen: Option<(u32, PathBuf)> = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let c = Cluster::start_new(ClusterOptions::default());
        seen = Some((c.read_pid().expect("postmaster.pid"), c.data.clone()));
        panic!("deliberate");
    }));
    assert!(result.is_err());
    let (pid, data) = seen.unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Gone, or a zombie waiting for init to reap it.
    assert!(
        stat.is_empty() || stat.contains(") Z"),
        "postmaster {pid} still runs: {stat}"
    );
    assert!(!data.exists(), "{} was not removed", data.display());
}

#[test]
fn ports_are_distinct() {
    let ports: std::collections::HashSet<u16> = (0..50).map(|_| free_port()).collect();
    assert_eq!(ports.len(), 50);
}
