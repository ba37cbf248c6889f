//! The recovery settings `restore` and views write (issue 14, sections 1 and 2): the disaster
//! runbook repeated on the servers it creates must reach the last archived commit, however
//! many recoveries came before, and a test restore must never archive.

mod common;

use common::*;
use std::fs;
use std::path::Path;
use std::time::Duration;

/// Every row of `t`, in order.
const ROWS: &str = "SELECT string_agg(v, ',' ORDER BY id) FROM t";

/// The settings of a configuration file that are not commented out, as `name = value` lines.
fn live_settings(path: &Path, prefix: &str) -> Vec<String> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.lines()
        .map(str::trim)
        .filter(|l| l.starts_with(prefix))
        .map(String::from)
        .collect()
}

/// Inserts `v` in a transaction of its own.
fn insert(c: &Cluster, v: &str) {
    c.psql(&format!("INSERT INTO t(v) VALUES ('{v}')"));
}

/// A time after everything committed so far, with the next commit over a second later.
fn target_time(c: &Cluster) -> String {
    let t = c.now();
    std::thread::sleep(Duration::from_millis(1100));
    t
}

/// `backup` of `c`; returns its id and what it printed on stderr.
fn backup(repo: &Repo, c: &Cluster) -> (String, String) {
    let mut args = vec!["--json".to_string()];
    args.extend(c.backup_args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = repo.run("backup", &args).assert_ok();
    (json_str(&run.json(), "id"), run.stderr_str())
}

/// Restores to `to` and starts a server on it that archives as its configuration says,
/// waiting for it to be promoted; returns the server and restore's output.
fn restore_and_promote(repo: &Repo, to: &Path, args: &[&str]) -> (Cluster, Run) {
    let run = repo.restore(to, args).assert_ok();
    let server = Cluster::start_on_as_configured(to);
    assert_eq!(
        server.wait_until_paused_or_ready(),
        RecoveryState::Ready,
        "the restored server was not promoted\n{}",
        server.log_tail(40)
    );
    (server, run)
}

/// The disaster runbook twice, each time on the server the previous run created, then a
/// restore without a target. Before the fix, each restore appended its settings to
/// postgresql.auto.conf and left the old ones: the promoted servers kept their targets, their
/// backups carried them, and the last restore stopped at an old target, losing archived
/// commits (or refused to start: "multiple recovery targets specified").
#[test]
fn runbook_cycles_reach_the_last_archived_commit() {
    let repo = Repo::init();
    // A target left in postgresql.conf by hand: harmless on a primary, fatal or silently
    // wrong in any recovery that inherits it.
    let source = Cluster::start_new(ClusterOptions {
        settings: vec![("recovery_target_name".into(), "'left-over'".into())],
        ..ClusterOptions::archiving_to(&repo.spec)
    });
    source.psql("CREATE TABLE t(id serial PRIMARY KEY, v text)");
    insert(&source, "base");
    let (_, warned) = backup(&repo, &source);
    assert!(
        warned.contains("recovery_target_name"),
        "backup did not warn about the server's recovery target:\n{warned}"
    );
    insert(&source, "kept-1");
    let t1 = target_time(&source);
    insert(&source, "lost-1");
    source.switch_wal_and_wait_archived();
    drop(source);

    // Cycle 1: the runbook's restore to a time, promoted; it archives into the same repository.
    let dir = TestDir::new("recovery-settings");
    let first = dir.join("first");
    let (primary, run) = restore_and_promote(
        &repo,
        &first,
        &["--target-time", &t1, "--target-action", "promote"],
    );
    assert!(
        run.stderr_str().contains("recovery_target_name"),
        "restore did not say it removed the backup's recovery target:\n{}",
        run.report()
    );
    assert!(
        run.stdout_str()
            .contains(&format!("archives WAL into {}", repo.spec)),
        "restore's summary does not say the server archives into the repository:\n{}",
        run.report()
    );
    assert_eq!(primary.psql(ROWS), "base,kept-1");
    insert(&primary, "tl2");
    let (_, warned) = backup(&repo, &primary);
    assert!(
        warned.contains("recovery_target_time"),
        "backup of a recovered server did not warn about its recovery target:\n{warned}"
    );
    insert(&primary, "kept-2");
    let t2 = target_time(&primary);
    insert(&primary, "lost-2");
    primary.switch_wal_and_wait_archived();
    drop(primary);

    // Cycle 2, from the backup of the server cycle 1 created.
    let second = dir.join("second");
    let (primary, run) = restore_and_promote(
        &repo,
        &second,
        &["--target-time", &t2, "--target-action", "promote"],
    );
    assert!(
        run.stderr_str().contains("recovery_target_time"),
        "restore did not say it removed the earlier recovery's target:\n{}",
        run.report()
    );
    assert_eq!(primary.psql(ROWS), "base,kept-1,tl2,kept-2");
    insert(&primary, "tl3");
    let (last_backup, _) = backup(&repo, &primary);
    insert(&primary, "last");
    primary.switch_wal_and_wait_archived();
    drop(primary);

    // No target: replay everything archived. A test restore, so it must not archive.
    let third = dir.join("third");
    let wal_before = repo.objects("wal/");
    let (server, run) = restore_and_promote(&repo, &third, &["--archive-mode", "off"]);
    assert_eq!(
        server.psql(ROWS),
        "base,kept-1,tl2,kept-2,tl3,last",
        "a restore without a target stopped before the last archived commit\n{}",
        server.log_tail(40)
    );
    let auto = third.join("postgresql.auto.conf");
    assert_eq!(
        live_settings(&auto, "restore_command").len(),
        1,
        "{}",
        fs::read_to_string(&auto).unwrap_or_default()
    );
    // No target is left from the earlier cycles: only the timeline the planner chose (the
    // backup's own, 3, the one timeline descending from it), written explicitly.
    for (file, want) in [
        (&auto, vec!["recovery_target_timeline = '3'".to_string()]),
        (&third.join("postgresql.conf"), vec![]),
    ] {
        assert_eq!(
            live_settings(file, "recovery_target"),
            want,
            "stale recovery targets in {}",
            file.display()
        );
    }
    assert!(
        run.stdout_str().contains("archive_mode is off"),
        "{}",
        run.report()
    );

    // The promoted test restore wrote its timeline's history file and a new segment, and
    // archived neither.
    assert_eq!(server.psql("SHOW archive_mode"), "off");
    let tli = server.psql("SELECT timeline_id FROM pg_control_checkpoint()");
    let tli: u32 = tli.parse().expect("a timeline id");
    assert!(
        third.join(format!("pg_wal/{tli:08X}.history")).is_file(),
        "no history file of timeline {tli} in the promoted test restore"
    );
    insert(&server, "test-only");
    server.switch_wal();
    assert_eq!(
        server.psql("SELECT archived_count, failed_count FROM pg_stat_archiver"),
        "0|0"
    );
    assert_eq!(
        repo.objects("wal/"),
        wal_before,
        "the test restore changed the archive"
    );
    drop(server);

    // verify starts a server on a view of the backup that carried a target.
    let verify = pgsnapfs_as_root(&repo.args("verify", &["--json", "--backup", &last_backup]));
    assert!(
        verify.status.success(),
        "verify of {last_backup} failed:\n{}",
        verify.report()
    );
}
