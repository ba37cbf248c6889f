//! Writable point-in-time views of `pgsnapfs mount` against real FUSE and real PostgreSQL:
//! servers start on them directly, see exactly the rows of their point in time, never write
//! to the repository, and keep their writes in the scratch directory only.
//!
//! FUSE mounts need root, so pgsnapfs `mount`/`umount` run as root here (not as postgres like
//! the rest of the harness). Every mount is a [`Mount`] guard (tests/common/mount.rs): dropping
//! it stops the server running on the mount, unmounts (lazily if it must) and reaps or kills
//! the mount process, so a failing test leaves nothing mounted; a [`PlainServer`] is a server
//! started on a view exactly as a user would.

mod common;

use common::mount::*;
use common::*;
use std::fs;
use std::time::Duration;

/// Every row of `t`, as one comparable string.
const T_ROWS: &str =
    "SELECT coalesce(string_agg(id || ':' || v, ',' ORDER BY id), '<empty>') FROM t";

/// The classic accident: a table is dropped by mistake. Mounting the point in time T just
/// before the DROP (recovery pauses there, hot standby) and starting PostgreSQL on the mount
/// shows the table with exactly its rows at T, and nothing committed after.
///
/// Replay stops after the DROP's AccessExclusiveLock record but before its commit, so while
/// paused the startup process holds that lock and a SELECT would wait: as the mount's message
/// and the operations guide say, promote with pg_wal_replay_resume() first. Queries run with
/// a lock_timeout so a regression fails instead of hanging.
fn dropped_table_is_back_at_target_time(store: Store) {
    dropped_table_scenario(None, store);
}

/// The same accident, recovered with `--target-action promote`: the view ends recovery at
/// T and opens read-write, with the table and its rows.
#[test]
fn dropped_table_is_back_at_target_time_promoted() {
    dropped_table_scenario(Some("promote"), Store::Local);
}

// Views of a repository on either back end: one test body each.
on_both_stores!(
    dropped_table_is_back_at_target_time,
    repository_unchanged_by_mounts_servers_and_verify,
);

fn dropped_table_scenario(action: Option<&str>, store: Store) {
    let repo = Repo::init_on(store);
    let source = Cluster::archiving_to(&repo.spec);
    source.psql(
        "CREATE TABLE t(id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, 'base-' || g FROM generate_series(1, 300) g;",
    );
    repo.backup(&source);
    // Changes after the backup, so the rows come from WAL replay, not from the backup.
    source.psql(
        "UPDATE t SET v = 'replayed-' || id WHERE id % 3 = 0;
         DELETE FROM t WHERE id > 290;
         INSERT INTO t VALUES (1000, 'late row');",
    );
    let want = source.psql(T_ROWS);
    let t = source.now();
    std::thread::sleep(Duration::from_millis(1100));
    source.psql("DROP TABLE t");
    source.psql(
        "CREATE TABLE after_drop(id int);
         INSERT INTO after_drop SELECT generate_series(1, 100);",
    );
    source.switch_wal_and_wait_archived();
    assert!(source.try_psql(T_ROWS).is_err(), "t was not dropped");

    let work = TestDir::new("mount-drop");
    let mnt = mountpoint(&work, "mnt");
    let scratch = work.join("scratch");
    let mut goal = vec!["--target-time", t.as_str()];
    if let Some(a) = action {
        goal.extend(["--target-action", a]);
    }
    let mut m = if action.is_none() {
        Mount::start_background(&repo, &mnt, &view_args(&scratch, &goal))
    } else {
        Mount::start(&repo, &mnt, &view_args(&scratch, &goal))
    };
    // pg_wal of the view lives on the scratch disk.
    let pg_wal = fs::read_link(m.dir.join("pg_wal")).expect("pg_wal is a symbolic link");
    assert!(
        pg_wal.starts_with(fs::canonicalize(&scratch).unwrap()),
        "pg_wal points to {}, not into the scratch dir {}",
        pg_wal.display(),
        scratch.display()
    );
    let server = m.start_server();
    let state = server.wait_until_paused_or_ready();
    let want_state = if action.is_none() {
        RecoveryState::Paused
    } else {
        RecoveryState::Ready
    };
    assert_eq!(state, want_state, "server log:\n{}", server.log_tail(30));
    if action.is_none() {
        // Paused in hot standby, the DROP's transaction (open at T) still holds its
        // AccessExclusiveLock. The documented remedy, which the mount prints: promote.
        server.psql("SELECT pg_wal_replay_resume()");
        let promoted = wait_for(Duration::from_secs(120), || {
            match server.psql("SELECT pg_is_in_recovery()").as_str() {
                "f" => Ok(()),
                other => Err(other.to_string()),
            }
        });
        assert!(promoted.is_ok(), "{promoted:?}\n{}", server.log_tail(20));
    }
    let got = server.try_psql(&format!("SET lock_timeout = '5s'; {T_ROWS}"));
    let got = got.unwrap_or_else(|e| {
        panic!(
            "cannot read t on the view at {t} (target action {action:?}): {e}\n\
             locks held: {}\n--- server log (tail) ---\n{}",
            server.psql(
                "SELECT string_agg(locktype || ' ' || coalesce(relation::regclass::text, '') \
                 || ' ' || mode || ' pid ' || pid || ' granted ' || granted, '; ') FROM pg_locks"
            ),
            server.log_tail(15)
        )
    });
    assert_eq!(got, want, "rows of t at {t}");
    assert_eq!(
        server.psql("SELECT to_regclass('after_drop') IS NULL"),
        "t",
        "a table created after the target is visible"
    );
    assert_eq!(server.psql("SHOW archive_mode"), "off");
    m.stop_server();
    m.umount_ok();
}

/// Mounts (catalogue and views), servers on views (including writes and a promotion) and
/// verify never change a byte of the repository's backups, packs and WAL; verify only adds
/// its record.
fn repository_unchanged_by_mounts_servers_and_verify(store: Store) {
    let repo = Repo::init_on(store);
    let mut source = Cluster::archiving_to(&repo.spec);
    source.psql(
        "CREATE TABLE t(id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 500) g;",
    );
    let id = json_str(&repo.backup(&source), "id");
    source.psql("INSERT INTO t VALUES (501, 'after backup')");
    let lsn = source.current_wal_lsn();
    source.switch_wal_and_wait_archived();
    // No more archiving from here on.
    source.stop();
    let before = repo.digest();

    let work = TestDir::new("mount-ro");
    {
        let cat = Mount::start(&repo, &mountpoint(&work, "cat"), &[]);
        let files = sha_tree(&backup_dir(&cat.dir, &id));
        assert!(files.contains_key("PG_VERSION"), "{files:?}");
        let wal = sha_tree(&cat.dir.join("wal"));
        assert!(!wal.is_empty(), "no archived WAL in the catalogue");
    }
    {
        // A promoted view that writes, switches WAL, checkpoints and shuts down, on a server
        // started by hand with no overrides: the backed-up postgresql.conf says
        // archive_mode = on with an archive_command into this repository, so only the view's
        // own settings keep the server from pushing its new timeline's WAL here.
        let conf = fs::read_to_string(source.data.join("postgresql.conf")).unwrap();
        assert!(
            conf.contains("archive_mode = on"),
            "the source does not archive"
        );
        let scratch = work.join("scratch1");
        let mut m = Mount::start(
            &repo,
            &mountpoint(&work, "view1"),
            &view_args(
                &scratch,
                &["--target-lsn", &lsn, "--target-action", "promote"],
            ),
        );
        let mut server = PlainServer::start(&m.dir);
        server.wait_promoted();
        assert_eq!(
            server.psql("SELECT setting FROM pg_settings WHERE name = 'archive_mode'"),
            "off",
            "archive_mode of a server on a view"
        );
        server.psql(
            "INSERT INTO t SELECT g, 'view' FROM generate_series(1000, 3000) g;
             CREATE TABLE new_in_view AS SELECT generate_series(1, 10000) AS n;
             VACUUM FULL t;
             SELECT pg_switch_wal();
             INSERT INTO t VALUES (5000, 'more');
             CHECKPOINT;",
        );
        // With archiving on, the backend finishing a segment marks it .ready in
        // archive_status before pg_switch_wal returns (and the archiver renames that to
        // .done): no such mark for the segment just finished means nothing will archive it.
        let seg = server.psql("SELECT pg_walfile_name(pg_switch_wal())");
        assert_eq!(
            server.psql(&format!(
                "SELECT count(*) FROM pg_ls_dir('pg_wal/archive_status') f \
                 WHERE f LIKE '{seg}.%'"
            )),
            "0",
            "the server on the view marked {seg} for archiving"
        );
        assert_eq!(
            server.psql("SELECT archived_count + failed_count FROM pg_stat_archiver"),
            "0",
            "the server on the view tried to archive"
        );
        server.stop();
        drop(server);
        m.umount_ok();
    }
    {
        // A paused view.
        let scratch = work.join("scratch2");
        let mut m = Mount::start(
            &repo,
            &mountpoint(&work, "view2"),
            &view_args(&scratch, &["--backup", &id]),
        );
        let server = m.start_server();
        server.wait_until_paused_or_ready();
        assert_eq!(server.psql("SELECT count(*) FROM t"), "500");
        m.stop_server();
        m.umount_ok();
    }
    pgsnapfs_as_root(&repo.args("verify", &["--json"])).assert_ok();

    // verify adds its record for the next incremental run (docs/operations.md, "Incremental
    // verify") and its status object for `metrics`, and nothing else: backups, packs and WAL
    // stay as they were.
    let mut after = repo.digest();
    let record: Vec<String> = after
        .keys()
        .filter(|k| k.starts_with("verified"))
        .cloned()
        .collect();
    assert!(
        record.iter().any(|k| k.ends_with(&format!("/{id}"))),
        "verify recorded backup {id}: {record:?}"
    );
    assert!(
        after
            .keys()
            .any(|k| k.starts_with("status/system/") && k.ends_with("/verify")),
        "verify recorded its status: {:?}",
        after.keys().collect::<Vec<_>>()
    );
    let verify_status = |k: &str| k.starts_with("status/") && k.ends_with("/verify");
    after.retain(|k, _| !(k.starts_with("verified") || verify_status(k)));
    assert_same_tree(&before, &after, "the repository");
}

/// Two views of different points in time, each with its own server, at the same time: each
/// sees its own rows, and a write on one (promoted) view does not show in the other.
#[test]
fn two_servers_on_two_points_in_time_at_once() {
    let repo = Repo::init();
    let source = Cluster::archiving_to(&repo.spec);
    source.psql(
        "CREATE TABLE t(id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, 'base' FROM generate_series(1, 50) g;",
    );
    repo.backup(&source);
    source.psql("INSERT INTO t SELECT g, 'a' FROM generate_series(51, 100) g");
    let rows_a = source.psql(T_ROWS);
    let lsn_a = source.current_wal_lsn();
    source.psql(
        "INSERT INTO t SELECT g, 'b' FROM generate_series(101, 150) g;
         UPDATE t SET v = 'b-updated' WHERE id <= 10;",
    );
    let rows_b = source.psql(T_ROWS);
    source.switch_wal_and_wait_archived();
    let latest = json_str(&repo.backup(&source), "id");
    assert_ne!(rows_a, rows_b);

    let work = TestDir::new("mount-two");
    let mut at_a = Mount::start(
        &repo,
        &mountpoint(&work, "a"),
        &view_args(&work.join("scratch-a"), &["--target-lsn", &lsn_a]),
    );
    let mut at_latest = Mount::start_background(
        &repo,
        &mountpoint(&work, "latest"),
        &view_args(
            &work.join("scratch-latest"),
            &["--backup", "latest", "--target-action", "promote"],
        ),
    );
    at_a.start_server();
    at_latest.start_server();
    at_a.server().wait_until_paused();
    assert_eq!(
        at_latest.server().wait_until_paused_or_ready(),
        RecoveryState::Ready
    );
    assert_eq!(at_a.server().psql(T_ROWS), rows_a, "view at {lsn_a}");
    assert_eq!(
        at_latest.server().psql(T_ROWS),
        rows_b,
        "view of backup {latest}"
    );

    at_latest
        .server()
        .psql("INSERT INTO t VALUES (9999, 'only in the latest view')");
    assert_eq!(
        at_a.server().psql(T_ROWS),
        rows_a,
        "view at {lsn_a} after a write elsewhere"
    );
    assert_eq!(
        at_latest.server().psql("SELECT v FROM t WHERE id = 9999"),
        "only in the latest view"
    );
    // And the source, still running, has neither view's write.
    assert_eq!(source.psql("SELECT count(*) FROM t WHERE id = 9999"), "0");

    at_a.stop_server();
    at_latest.stop_server();
    at_a.umount_ok();
    at_latest.umount_ok();
}

/// Whatever a server writes on a view lives in the scratch dir only: after unmounting and
/// removing it, a new mount of the same point in time does not have the server's table.
#[test]
fn removing_scratch_discards_the_servers_writes() {
    let repo = Repo::init();
    let source = Cluster::archiving_to(&repo.spec);
    source.psql(
        "CREATE TABLE t(id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, 'v' FROM generate_series(1, 100) g;",
    );
    let id = json_str(&repo.backup(&source), "id");

    let work = TestDir::new("mount-scratch");
    let mnt = mountpoint(&work, "mnt");
    // Missing parents are made, and the server can reach pg_wal below them.
    let scratch = work.join("new/parents/scratch");
    let goal = ["--backup", id.as_str(), "--target-action", "promote"];
    {
        let mut m = Mount::start(&repo, &mnt, &view_args(&scratch, &goal));
        let server = m.start_server();
        assert_eq!(server.wait_until_paused_or_ready(), RecoveryState::Ready);
        server.psql(
            "CREATE TABLE written_on_view AS SELECT generate_series(1, 5000) AS n;
             UPDATE t SET v = 'changed on view';
             CHECKPOINT;",
        );
        m.stop_server();
        m.umount_ok();
    }
    assert!(
        !files_below(&scratch).is_empty(),
        "the server's writes are not in the scratch dir {}",
        scratch.display()
    );
    // A used scratch dir is not silently reused; the message is about the mount.
    let refused = pgsnapfs_as_root(&{
        let mut a = vec!["mount", "--repo", &repo.spec, s(&mnt)];
        a.extend(view_args(&scratch, &goal));
        a
    })
    .assert_exit(2)
    .assert_mentions(&format!(
        "scratch directory {} is not empty",
        scratch.display()
    ));
    assert!(
        !refused.stderr_str().contains("restore"),
        "{}",
        refused.report()
    );
    assert!(!is_mounted(&mnt));

    fs::remove_dir_all(&scratch).unwrap();
    let scratch2 = work.join("scratch2");
    let mut m = Mount::start(&repo, &mnt, &view_args(&scratch2, &goal));
    let server = m.start_server();
    assert_eq!(server.wait_until_paused_or_ready(), RecoveryState::Ready);
    assert_eq!(
        server.psql("SELECT to_regclass('written_on_view') IS NULL"),
        "t",
        "the table written on the first view survived removing its scratch dir"
    );
    assert_eq!(
        server.psql("SELECT count(*) FILTER (WHERE v = 'v') FROM t"),
        "100",
        "rows of t"
    );
    m.stop_server();
    m.umount_ok();
}
