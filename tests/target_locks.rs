//! `mount` and `restore` at a target inside a transaction that holds an AccessExclusiveLock
//! (a DROP TABLE, whose lock a recovery paused there keeps): they name the locked relations
//! (by the backup's name and the oid), with the ways out, at a target LSN or time. Against
//! real PostgreSQL 15 and real FUSE, one cluster: the server started on the view and promoted
//! as told shows the table with its rows; the point before the lock that the message suggests
//! holds no lock, and the table is readable there without promotion.
//!
//! FUSE mounts need root, so `mount` runs as root here.

mod common;

use common::mount::*;
use common::*;
use std::time::Duration;

/// Every row of `t`, as one comparable string.
const T_ROWS: &str =
    "SELECT coalesce(string_agg(id || ':' || v, ',' ORDER BY id), '<empty>') FROM t";

/// The LSN `or mount --target-lsn X` suggests in a mount's output (not its command line).
fn suggested_lsn(out: &str) -> Option<String> {
    let rest = out.split("or mount --target-lsn ").nth(1)?;
    Some(rest.split_whitespace().next()?.to_string())
}

#[test]
fn a_target_inside_a_drop_names_its_locks() {
    let repo = Repo::init();
    let source = Cluster::archiving_to(&repo.spec);
    source.psql(
        "CREATE TABLE t(id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, 'base-' || g FROM generate_series(1, 300) g;
         CREATE TABLE other(id int);",
    );
    repo.backup(&source);
    source.psql("UPDATE t SET v = 'replayed-' || id WHERE id % 3 = 0;");
    let want = source.psql(T_ROWS);
    let oid = source.psql("SELECT 't'::regclass::oid");
    let before_drop = source.now();
    std::thread::sleep(Duration::from_millis(1100));
    // The accident; the LSN is taken inside its transaction, after the DROP's lock record.
    let out = source.psql(
        "BEGIN; DROP TABLE t; SELECT pg_current_wal_insert_lsn(); INSERT INTO other VALUES (1); COMMIT;",
    );
    let inside = out
        .lines()
        .find(|l| l.contains('/'))
        .unwrap_or_else(|| panic!("no LSN in {out:?}"))
        .to_string();
    source.switch_wal_and_wait_archived();
    let work = TestDir::new("target-locks");
    // Named from the backup's pg_class, and by the source's oid.
    let named = format!("relation \"t\" (in the backup), oid {oid} in database oid ");

    // Inside the transaction: the lock is named, with the ways out.
    let mnt = mountpoint(&work, "inside");
    let mut m = Mount::start(
        &repo,
        &mnt,
        &view_args(&work.join("scratch-inside"), &["--target-lsn", &inside]),
    );
    let said = m.report();
    assert!(said.contains(&named), "{said}");
    assert!(said.contains("SELECT pg_wal_replay_resume()"), "{said}");
    assert!(said.contains(&format!("SELECT {oid}::regclass")), "{said}");
    let before = suggested_lsn(&said).unwrap_or_else(|| panic!("no --target-lsn in {said}"));
    let server = m.start_server();
    assert_eq!(
        server.wait_until_paused_or_ready(),
        RecoveryState::Paused,
        "{}",
        server.log_tail(20)
    );
    // The SQL the message gives names the relation on the paused server, without waiting.
    assert_eq!(
        server.psql(&format!("SET lock_timeout = '5s'; SELECT {oid}::regclass")),
        "t"
    );
    server.psql("SELECT pg_wal_replay_resume()");
    let promoted = wait_for(Duration::from_secs(120), || {
        match server.psql("SELECT pg_is_in_recovery()").as_str() {
            "f" => Ok(()),
            other => Err(other.to_string()),
        }
    });
    assert!(promoted.is_ok(), "{promoted:?}\n{}", server.log_tail(20));
    let got = server.try_psql(&format!("SET lock_timeout = '5s'; {T_ROWS}"));
    assert_eq!(
        got.as_deref(),
        Ok(want.as_str()),
        "rows of t after promotion"
    );
    m.stop_server();
    m.umount_ok();

    // The point the message suggests: before the lock, so no warning, and t is readable
    // while paused.
    let mnt = mountpoint(&work, "before");
    let mut m = Mount::start(
        &repo,
        &mnt,
        &view_args(&work.join("scratch-before"), &["--target-lsn", &before]),
    );
    let said = m.report();
    assert!(!said.contains("AccessExclusiveLock"), "{said}");
    let server = m.start_server();
    assert_eq!(
        server.wait_until_paused_or_ready(),
        RecoveryState::Paused,
        "{}",
        server.log_tail(20)
    );
    let got = server.try_psql(&format!("SET lock_timeout = '5s'; {T_ROWS}"));
    assert_eq!(got.as_deref(), Ok(want.as_str()), "rows of t at {before}");
    m.stop_server();
    m.umount_ok();

    // A time before the DROP's commit: recovery stops before that commit, after its lock.
    let mnt = mountpoint(&work, "time");
    let mut m = Mount::start(
        &repo,
        &mnt,
        &view_args(&work.join("scratch-time"), &["--target-time", &before_drop]),
    );
    let said = m.report();
    assert!(said.contains(&named), "{said}");
    m.umount_ok();

    // restore at the LSN inside the transaction says it too.
    let run = repo
        .restore(&work.join("restored"), &["--target-lsn", &inside])
        .assert_ok();
    let said = run.report();
    assert!(said.contains(&named), "{said}");
    assert!(said.contains("or restore --target-lsn"), "{said}");
}
