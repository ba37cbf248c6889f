//! `backup --from-standby`: the files come from a streaming standby, the start and stop calls
//! go to the primary; `--from-standby=prefer` falls back to the primary's files; and
//! `--only-on-primary` does nothing on a standby. One primary, one standby made with
//! `pg_basebackup -R`, one scenario.

mod common;

use common::cluster::{Cluster, ClusterOptions};
use common::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

const T_ROWS: &str =
    "SELECT count(*), coalesce(sum(id), 0), md5(string_agg(v, ',' ORDER BY id)) FROM t";
const ACCOUNTS: &str = "SELECT count(*), sum(abalance) FROM pgbench_accounts";

/// A streaming standby of `primary` in a directory of `dir`, started on its own socket.
fn standby_of(primary: &Cluster, dir: &TestDir) -> Cluster {
    let data = dir.join("data");
    let mut cmd = postgres_command(pg_tool("pg_basebackup"));
    cmd.arg("-D")
        .arg(&data)
        .arg("-h")
        .arg(&primary.sock)
        .args(["-p", &primary.port.to_string(), "-U", "postgres"])
        .args(["-R", "-X", "stream", "-c", "fast"]);
    run_command(&mut cmd).assert_ok();
    let standby = Cluster::start_on(&data);
    assert_eq!(standby.psql("SELECT pg_is_in_recovery()"), "t");
    standby
}

/// `--from-standby` arguments naming `standby` (the primary's come from `backup_args`).
fn standby_args(standby: &Cluster, mode: &str) -> Vec<String> {
    vec![
        format!("--from-standby={mode}"),
        "--standby-pgdata".into(),
        standby.data.display().to_string(),
        "--standby-host".into(),
        standby.sock.display().to_string(),
        "--standby-port".into(),
        standby.port.to_string(),
    ]
}

fn primary_conn(primary: &Cluster) -> Vec<String> {
    vec![
        "-h".into(),
        primary.sock.display().to_string(),
        "-p".into(),
        primary.port.to_string(),
        "-U".into(),
        "postgres".into(),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn backups_from_a_standby() {
    let repo = Repo::init();
    let primary = Cluster::archiving_to(&repo.spec);
    primary.pgbench_init(1);
    primary.psql("CREATE TABLE t (id int PRIMARY KEY, v text)");
    let standby_dir = TestDir::new("standby");
    let mut standby = standby_of(&primary, &standby_dir);
    // Written after the standby copied the primary: replayed into its buffers, where they
    // stay dirty until a restartpoint (the backup must make one before it reads).
    primary.psql("INSERT INTO t SELECT g, repeat('x', 200) || g FROM generate_series(1, 40000) g");

    // Bad input: a "standby" that is another cluster.
    let other = Cluster::start_new(ClusterOptions::default());
    let mut args = vec!["--json".to_string()];
    args.extend(primary_conn(&primary));
    args.extend(standby_args(&other, "require"));
    repo.run("backup", &strs(&args))
        .assert_exit(2)
        .assert_mentions("another cluster");
    assert!(repo.list().is_empty(), "a refused backup stored something");
    drop(other);

    // --only-on-primary on the standby: nothing, exit 0, JSON says skipped.
    let mut args = vec!["--json".to_string(), "--only-on-primary".to_string()];
    args.extend(standby.backup_args());
    let skipped = repo.run("backup", &strs(&args)).assert_ok().json();
    assert_eq!(skipped["skipped"], true, "{skipped}");
    assert!(
        repo.list().is_empty(),
        "--only-on-primary on a standby stored a backup"
    );

    // From the standby while the primary takes writes.
    let stop = AtomicBool::new(false);
    let written = AtomicU64::new(0);
    let backup = std::thread::scope(|s| {
        s.spawn(|| {
            let mut i = 100_000;
            while !stop.load(Ordering::Relaxed) {
                primary.psql(&format!(
                    "INSERT INTO t SELECT g, 'w' || g FROM generate_series({i}, {}) g;
                     UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 97 = {};",
                    i + 99,
                    i % 97
                ));
                i += 100;
                written.fetch_add(1, Ordering::Relaxed);
            }
        });
        let mut args = vec!["--json".to_string()];
        args.extend(primary_conn(&primary));
        args.extend(standby_args(&standby, "require"));
        let run = repo.run("backup", &strs(&args));
        stop.store(true, Ordering::Relaxed);
        run
    });
    let backup = backup
        .assert_ok()
        .assert_mentions("read the standby's files")
        .json();
    assert!(
        written.load(Ordering::Relaxed) > 0,
        "no write ran during the backup"
    );
    let id = backup["id"].as_str().expect("backup id").to_string();
    assert_eq!(
        backup["system_identifier"].as_str(),
        Some(primary.system_identifier().as_str())
    );

    // The primary at a point after the backup, then writes that must not be restored.
    let want_t = primary.psql(T_ROWS);
    let want_accounts = primary.psql(ACCOUNTS);
    primary.psql("SELECT pg_create_restore_point('after_standby_backup')");
    primary.psql("DELETE FROM t WHERE id <= 1000; UPDATE pgbench_accounts SET abalance = 0");
    primary.switch_wal_and_wait_archived();

    let out = TestDir::new("restore");
    let to = out.join("data");
    // The only backup yet: the one a restore to the restore point starts from.
    repo.restore(&to, &["--target-name", "after_standby_backup"])
        .assert_ok();
    assert!(
        !to.join("standby.signal").exists(),
        "the standby's standby.signal was restored"
    );
    {
        let restored = Cluster::start_on(&to);
        restored.wait_until_paused();
        assert_eq!(restored.psql(T_ROWS), want_t, "table t restored from {id}");
        assert_eq!(
            restored.psql(ACCOUNTS),
            want_accounts,
            "pgbench_accounts restored from {id}"
        );
    }

    // --only-on-primary on the primary backs up.
    let mut args = vec!["--json".to_string(), "--only-on-primary".to_string()];
    args.extend(primary.backup_args());
    let on_primary = repo.run("backup", &strs(&args)).assert_ok().json();
    assert!(on_primary["id"].is_string(), "{on_primary}");
    assert_eq!(repo.list().len(), 2);

    // prefer, with the standby down: the primary's files, and it says so.
    standby.stop();
    let mut args = vec!["--json".to_string()];
    args.extend(primary.backup_args());
    args.extend(standby_args(&standby, "prefer"));
    repo.run("backup", &strs(&args))
        .assert_ok()
        .assert_mentions("no standby reachable");
    assert_eq!(repo.list().len(), 3);
    // require, with the standby down: fails and stores nothing.
    let mut args = primary_conn(&primary);
    args.extend(standby_args(&standby, "require"));
    repo.run("backup", &strs(&args)).assert_exit(1);
    assert_eq!(repo.list().len(), 3);
}
