//! A repository whose disk fills up: a backup that cannot fit fails with a message naming the
//! object and what to do, shows no partial backup, and leaves the repository consistent; the
//! earlier backup still restores with its rows; a wal-push into the full disk fails with a
//! non-zero exit (so PostgreSQL retries it) and damages nothing; and once space is freed, the
//! push and a new backup succeed.

mod common;

use common::*;
use std::fs;
use std::path::Path;

const ROWS: &str =
    "SELECT count(*) || ':' || sum(id) || ':' || md5(string_agg(v, ',' ORDER BY id)) FROM t";

fn check(repo_spec: &str, state: &Path) -> Run {
    pgsnapfs(&[
        "check",
        "--repo",
        repo_spec,
        "--read-data",
        "--full",
        "--state-dir",
        state.to_str().unwrap(),
    ])
}

#[test]
fn full_repository_fails_cleanly_and_recovers_once_space_is_freed() {
    let dir = TestDir::new("tmpfs");
    let disk = Tmpfs::mount(&dir.join("mnt"), "24m");
    let spec = disk.point.join("repo").display().to_string();
    pgsnapfs(&["init", "--repo", &spec]).assert_ok();
    let state = TestDir::new("check-state");
    let source = Cluster::start_new(ClusterOptions {
        wal_segsize_mb: Some(1),
        ..ClusterOptions::archiving_to(&spec)
    });
    source.psql(
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 1000) g",
    );
    let want = source.psql(ROWS);
    let mut backup = vec![
        "backup".to_string(),
        "--json".into(),
        "--repo".into(),
        spec.clone(),
    ];
    backup.extend(source.backup_args());
    let first = json_str(&pgsnapfs(&backup).assert_ok().json(), "id");

    // Barely compressible data, far more than what is left.
    source.psql(
        "CREATE TABLE big AS SELECT g, md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text) AS v
           FROM generate_series(1, 100000) g",
    );
    // The source archives into the same disk: let it catch up first. Its archiver can still
    // take the space left while the backup runs (the backup's checkpoint ends a segment), so
    // the object named may be the backup's lease or a pack.
    source.switch_wal_and_wait_archived();
    let filler = disk.fill("filler", 512 << 10);
    pgsnapfs(&backup)
        .assert_exit(1)
        .assert_mentions("no space left in the repository to write ")
        .assert_mentions("run the command again");

    let list = |spec: &str| -> Vec<String> {
        let v = pgsnapfs(&["list", "--json", "--repo", spec])
            .assert_ok()
            .json();
        v["backups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| json_str(b, "id"))
            .collect()
    };
    assert_eq!(
        list(&spec),
        vec![first.clone()],
        "no partial backup is listed"
    );
    check(&spec, state.path()).assert_ok();

    let out = TestDir::new("restore");
    let restore_first = |to: &Path| {
        pgsnapfs(&[
            "restore",
            "--repo",
            &spec,
            "--backup",
            &first,
            "--to",
            to.to_str().unwrap(),
        ])
        .assert_ok()
    };
    let to = out.join("data");
    restore_first(&to);
    {
        let restored = Cluster::start_on(&to);
        assert_ne!(
            restored.wait_until_paused_or_ready(),
            RecoveryState::ShutDown
        );
        assert_eq!(
            restored.psql(ROWS),
            want,
            "rows of {first} after the disk filled"
        );
    }

    // PostgreSQL keeps a segment until archive_command succeeds, so a failure must be non-zero.
    // The failed backup removed its unfinished pack: first fill what that freed.
    let more = disk.fill("more", 0);
    source.psql("INSERT INTO t VALUES (1001, 'after')");
    let name = source.switch_wal();
    let segment = source.data.join("pg_wal").join(&name);
    let scratch = TestDir::new("wal");
    let copy = scratch.join(&name);
    copy_for_postgres(&segment, &copy);
    pgsnapfs(&["wal-push", "--repo", &spec, copy.to_str().unwrap()])
        .assert_exit(1)
        .assert_mentions("no space left");
    // Recovery does not wait for space: restore works on the full disk, without its lease.
    restore_first(&out.join("data-full")).assert_mentions("without it");
    // With no byte free, check cannot write its lease: give it the few it needs.
    fs::remove_file(more).unwrap();
    check(&spec, state.path()).assert_ok();

    fs::remove_file(filler).unwrap();
    pgsnapfs(&["wal-push", "--repo", &spec, copy.to_str().unwrap()]).assert_ok();
    // The archiver catches up too, so no WAL is missing.
    source.switch_wal_and_wait_archived();
    let second = json_str(&pgsnapfs(&backup).assert_ok().json(), "id");
    let mut listed = list(&spec);
    listed.sort();
    assert_eq!(listed, vec![first, second]);
    check(&spec, state.path()).assert_ok();
}
