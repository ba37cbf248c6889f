//! `restore` to a point after a CREATE TABLESPACE, on the host that holds the tablespace (a
//! side copy restored on the production host): the restored server runs unconfined, and its
//! replay of the record removes the location's version directory. One cluster; a backup; a
//! tablespace created in this test's own directory, with rows; the cluster stopped.
//! - A restore whose replay would remove that directory is refused up front (exit 2, naming
//!   the WAL position, oid and location), and nothing is written.
//! - With --overwrite-tablespaces it goes ahead, and the restored server really writes over
//!   the source's files there (PostgreSQL 15 reuses the version directory in recovery; older
//!   releases remove it): the hazard. The source's rows in it are no longer what it wrote.
//! - `restore --delta` over the source's own directory goes ahead: the version directory is
//!   its own tablespace; the server recovers the rows.
//! - Where the location does not exist, the restore says recovery stops at the record until
//!   it is created, and the restored server does so.

mod common;

use common::*;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

const IN_TS: &str = "SELECT count(*) || ' ' || sum(length(v)) FROM in_ts";

/// Every entry below `dir`, with its kind, size, hash, mode and owner.
fn host_state(dir: &Path) -> std::collections::BTreeMap<String, String> {
    let mut state = tree_digest(dir);
    for (rel, v) in state.iter_mut() {
        let meta = std::fs::symlink_metadata(dir.join(rel)).unwrap();
        v.push_str(&format!(" mode {:o} uid {}", meta.mode(), meta.uid()));
    }
    state
}

#[test]
fn restores_replaying_create_tablespace_over_a_host_directory() {
    let repo = Repo::init();
    let mut source = Cluster::archiving_to(&repo.spec);
    source.psql("CREATE TABLE t0(id int); INSERT INTO t0 VALUES (1), (2);");
    repo.backup(&source);
    let location = source.dir().subdir("tablespace", 0o700);
    source.psql(&format!(
        "CREATE TABLESPACE ts LOCATION '{}'",
        location.display()
    ));
    let oid = source.psql("SELECT oid FROM pg_tablespace WHERE spcname = 'ts'");
    source.psql(
        "CREATE TABLE in_ts(id int PRIMARY KEY, v text) TABLESPACE ts;
         INSERT INTO in_ts SELECT g, 'ts-' || g FROM generate_series(1, 500) g;
         CHECKPOINT;",
    );
    let after = source.current_wal_lsn();
    let want = source.psql(IN_TS);
    // The source goes on: its pages in the tablespace are newer than the restore's target.
    source.psql("UPDATE in_ts SET v = v || '-later'; CHECKPOINT;");
    source.switch_wal_and_wait_archived();
    source.stop();
    let version = std::fs::read_dir(&location)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("PG_"))
        .expect("the tablespace's version directory");
    let host = host_state(&location);

    let work = TestDir::new("restore-ts");
    let target = ["--target-lsn", after.as_str(), "--archive-mode", "off"];
    let refused_to = work.join("refused");
    repo.restore(&refused_to, &target)
        .assert_exit(2)
        .assert_mentions(&format!("oid {oid}"))
        .assert_mentions(&version.display().to_string())
        .assert_mentions("WAL position")
        .assert_mentions("--overwrite-tablespaces");
    assert!(!refused_to.exists(), "nothing written");
    assert_same_tree(&host, &host_state(&location), "the host's tablespace");

    // With the override, the restored server's replay removes the host's version directory.
    let over = work.join("over");
    let mut args = target.to_vec();
    args.push("--overwrite-tablespaces");
    repo.restore(&over, &args)
        .assert_ok()
        .assert_mentions(&format!("recovery takes over {}", version.display()));
    let mut restored = Cluster::start_on(&over);
    restored.wait_until_paused();
    assert_eq!(restored.psql(IN_TS), want, "the rows, replayed");
    // Its shutdown restartpoint (at the replayed CHECKPOINT) writes the replayed pages, into
    // the source's files.
    restored.stop();
    assert_ne!(
        host,
        host_state(&location),
        "the restored server wrote into the source's tablespace"
    );
    drop(restored);

    // restore --delta over the source itself (an old primary re-seeded): the version
    // directory is its own tablespace (pg_tblspc links there), so replay may take it over.
    let data = source.data.to_str().unwrap().to_string();
    let mut args = vec!["--to", data.as_str(), "--delta"];
    args.extend_from_slice(&target);
    repo.run("restore", &args)
        .assert_ok()
        .assert_mentions("own tablespace");
    let mut reseeded = Cluster::start_on(&source.data);
    reseeded.wait_until_paused();
    assert_eq!(reseeded.psql(IN_TS), want, "the rows, replayed in place");
    reseeded.stop();
    drop(reseeded);

    // Where the location does not exist, the restore goes ahead and says what recovery needs.
    std::fs::remove_dir_all(&location).unwrap();
    let missing = work.join("missing");
    repo.restore(&missing, &target)
        .assert_ok()
        .assert_mentions("does not exist on this host");
    let log = match Cluster::try_start_on(&missing, &[]) {
        Ok(server) => {
            assert_eq!(server.wait_until_paused_or_ready(), RecoveryState::ShutDown);
            server.log_contents()
        }
        Err(report) => report,
    };
    assert!(log.contains("does not exist"), "{log}");
    assert!(!location.exists(), "recovery did not create it");
}
