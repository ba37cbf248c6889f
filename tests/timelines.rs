//! Timelines (issue 13): after a recovery is promoted and archives into the same repository,
//! every backup and every point on every timeline still mounts, restores and verifies with its
//! own rows. One repository lives through three recoveries in sequence: a recovery to a point
//! in time (timeline 2), a recovery of that recovery (timeline 3), and a promoted standby
//! (timeline 4), each archiving into the repository as a real recovery does; then a second
//! recovery from timeline 1 (timeline 5) makes the latest state ambiguous.

mod common;

use common::cluster::{Cluster, RecoveryState};
use common::mount::*;
use common::*;
use std::path::Path;
use std::time::Duration;

/// Every row of `t`, as one comparable string.
const ROWS: &str = "SELECT string_agg(id || ':' || v, ',' ORDER BY id) FROM t";

/// Writes rows `from..=to` of `t` labelled `label`, and returns the time just after them.
fn write(c: &Cluster, from: u32, to: u32, label: &str) -> String {
    c.psql(&format!(
        "INSERT INTO t SELECT g, '{label}' FROM generate_series({from}, {to}) g"
    ));
    let t = c.now();
    // Commits after `t` must carry a later time than it.
    std::thread::sleep(Duration::from_millis(1100));
    t
}

/// The timeline a server writes, as the first 8 digits of its WAL file names.
fn timeline(c: &Cluster) -> String {
    c.psql("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)")
}

/// A restored directory's server, archiving into the repository as a recovered production
/// server does (its postgresql.conf holds the source's archive_command).
fn start_archiving(data: &Path) -> Cluster {
    let c =
        Cluster::try_start_on(data, &[("archive_mode", "on")]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c.wait_until_paused_or_ready(),
        RecoveryState::Ready,
        "{}",
        c.log_tail(20)
    );
    c
}

/// Restores `goal` with promotion into a fresh directory and starts a server on it, archiving
/// into the repository.
fn recover(repo: &Repo, work: &TestDir, name: &str, goal: &[&str]) -> Cluster {
    let to = work.join(name);
    let mut args = goal.to_vec();
    args.extend(["--target-action", "promote"]);
    repo.restore(&to, &args).assert_ok();
    start_archiving(&to)
}

/// The rows a view of `goal` shows.
fn view_rows(repo: &Repo, work: &TestDir, name: &str, goal: &[&str]) -> String {
    let mnt = mountpoint(work, name);
    let scratch = work.join(format!("{name}-scratch"));
    let mut m = Mount::start(repo, &mnt, &view_args(&scratch, goal));
    let server = m.start_server();
    let state = server.wait_until_paused_or_ready();
    assert_eq!(state, RecoveryState::Paused, "{}", server.log_tail(20));
    let rows = server.psql(ROWS);
    m.stop_server();
    m.umount_ok();
    rows
}

/// The rows a restore of `goal` shows once started (archiving off).
fn restored_rows(repo: &Repo, work: &TestDir, name: &str, goal: &[&str]) -> String {
    let to = work.join(name);
    repo.restore(&to, goal).assert_ok();
    let mut c = Cluster::start_on(&to);
    c.wait_until_paused_or_ready();
    let rows = c.psql(ROWS);
    c.stop();
    rows
}

/// `verify --json ARGS` as root, with an assertion that `t` holds `rows`.
fn verify_rows(repo: &Repo, work: &TestDir, goal: &[&str], rows: &str) -> serde_json::Value {
    let sql = work.join("rows.sql");
    std::fs::write(&sql, format!("SELECT ({ROWS}) = '{rows}';\n")).unwrap();
    let mut all = repo.args("verify", &["--json", "--sql", sql.to_str().unwrap()]);
    all.extend(goal.iter().map(|a| a.to_string()));
    let run = pgsnapfs_as_root(&all);
    let report = run.json();
    assert_eq!(report["ok"], true, "verify {goal:?}\n{}", run.report());
    report
}

#[test]
fn every_backup_and_point_on_every_timeline() {
    let started = std::time::Instant::now();
    let repo = Repo::init();
    let work = TestDir::new("timelines");

    // Timeline 1: B1, changes, T, more changes, T1, B2, more changes.
    let mut source = Cluster::archiving_to(&repo.spec);
    source.psql("CREATE TABLE t(id int PRIMARY KEY, v text)");
    write(&source, 1, 10, "base");
    let b1 = json_str(&repo.backup(&source), "id");
    let at_b1 = source.psql(ROWS);
    let t = write(&source, 11, 20, "before-T");
    let at_t = source.psql(ROWS);
    let t1 = write(&source, 21, 30, "after-T");
    let at_t1 = source.psql(ROWS);
    write(&source, 31, 40, "before-B2");
    let b2 = json_str(&repo.backup(&source), "id");
    let at_b2 = source.psql(ROWS);
    write(&source, 41, 50, "after-B2");
    source.switch_wal_and_wait_archived();
    source.stop();

    // The recovery to T, promoted: timeline 2, archiving into the same repository.
    let tl2 = recover(&repo, &work, "tl2", &["--target-time", &t]);
    assert_eq!(tl2.psql(ROWS), at_t, "the recovery to T");
    assert_eq!(timeline(&tl2), "00000002");
    let t2 = write(&tl2, 100, 110, "tl2");
    let at_t2 = tl2.psql(ROWS);
    let t2_late = write(&tl2, 111, 120, "tl2-late");
    let at_t2_late = tl2.psql(ROWS);
    write(&tl2, 121, 125, "tl2-end");
    tl2.switch_wal_and_wait_archived();

    // B2, taken on timeline 1 after timeline 2 forked off, mounts and restores as it was.
    assert_eq!(
        view_rows(&repo, &work, "b2", &["--backup", &b2]),
        at_b2,
        "view of B2"
    );
    assert_eq!(
        restored_rows(&repo, &work, "b2-restored", &["--backup", &b2]),
        at_b2,
        "restore of B2"
    );
    // A point on timeline 2, and a point on timeline 1 after the fork (by the rule, and named).
    assert_eq!(
        view_rows(&repo, &work, "t2", &["--target-time", &t2]),
        at_t2
    );
    assert_eq!(
        view_rows(&repo, &work, "t1", &["--target-time", &t1]),
        at_t1
    );
    assert_eq!(
        restored_rows(
            &repo,
            &work,
            "t1-restored",
            &["--target-time", &t1, "--target-timeline", "1"]
        ),
        at_t1
    );
    // Refused before anything is written: B2 is not on timeline 2's history; a time after
    // everything is on no timeline.
    let refused = work.join("refused");
    let run = repo
        .restore(&refused, &["--backup", &b2, "--target-timeline", "2"])
        .assert_exit(2);
    assert!(
        run.stderr_str()
            .contains("timeline 2 does not pass through"),
        "{}",
        run.report()
    );
    let run = repo
        .restore(&refused, &["--target-time", "2999-01-01 00:00:00+00"])
        .assert_exit(2);
    let err = run.stderr_str();
    assert!(
        err.contains("timeline 1: its last archived transaction is at")
            && err.contains("timeline 2 (from timeline 1 at"),
        "{}",
        run.report()
    );
    assert!(is_absent_or_empty(&refused));
    // verify on each timeline.
    verify_rows(&repo, &work, &["--backup", &b2], &at_b2);
    verify_rows(
        &repo,
        &work,
        &["--target-time", &t2, "--target-timeline", "2"],
        &at_t2,
    );
    verify_rows(
        &repo,
        &work,
        &["--target-time", &t1, "--target-timeline", "1"],
        &at_t1,
    );

    // A recovery of the recovery: timeline 3 from a point on timeline 2.
    drop(tl2);
    let tl3 = recover(&repo, &work, "tl3", &["--target-time", &t2]);
    assert_eq!(timeline(&tl3), "00000003");
    let t3 = write(&tl3, 200, 210, "tl3");
    let at_t3 = tl3.psql(ROWS);
    write(&tl3, 211, 220, "tl3-late");
    tl3.switch_wal_and_wait_archived();
    drop(tl3);
    assert_eq!(
        view_rows(&repo, &work, "t3", &["--target-time", &t3]),
        at_t3
    );
    verify_rows(
        &repo,
        &work,
        &["--target-time", &t3, "--target-timeline", "3"],
        &at_t3,
    );
    // Timeline 2 after timeline 3 forked off it is still there, found by the rule.
    verify_rows(&repo, &work, &["--target-time", &t2_late], &at_t2_late);

    // A standby restored from the repository, promoted: timeline 4.
    let standby_dir = work.join("standby");
    repo.restore(&standby_dir, &[]).assert_ok();
    std::fs::write(standby_dir.join("standby.signal"), "").unwrap();
    chown_to_postgres(&standby_dir.join("standby.signal"));
    let mut standby = Cluster::try_start_on(&standby_dir, &[("archive_mode", "on")])
        .unwrap_or_else(|e| panic!("{e}"));
    let caught_up = wait_for(Duration::from_secs(60), || {
        let rows = standby.psql(ROWS);
        if rows.ends_with("220:tl3-late") {
            Ok(())
        } else {
            Err(rows)
        }
    });
    assert!(caught_up.is_ok(), "{caught_up:?}\n{}", standby.log_tail(20));
    standby.psql("SELECT pg_promote()");
    assert_eq!(standby.wait_until_paused_or_ready(), RecoveryState::Ready);
    assert_eq!(timeline(&standby), "00000004");
    write(&standby, 300, 310, "tl4");
    let end_of_tl4 = standby.psql(ROWS);
    standby.switch_wal_and_wait_archived();
    standby.stop();
    // The latest state is timeline 4's end; B1 is on its history, three forks back.
    assert_eq!(restored_rows(&repo, &work, "latest", &[]), end_of_tl4);
    verify_rows(
        &repo,
        &work,
        &["--backup", &b1, "--target-timeline", "4"],
        &at_b1,
    );
    // A second recovery from timeline 1 (timeline 5): two latest states, refused as ambiguous.
    let mut tl5 = recover(&repo, &work, "tl5", &["--target-time", &t1]);
    assert_eq!(timeline(&tl5), "00000005");
    assert_eq!(
        tl5.psql(ROWS),
        at_t1,
        "a recovery to T1 with timelines 2 to 4 around"
    );
    write(&tl5, 400, 410, "tl5");
    tl5.switch_wal_and_wait_archived();
    tl5.stop();
    let run = repo.restore(&refused, &[]).assert_exit(2);
    assert!(
        run.stderr_str().contains("timelines 4, 5 each branch off")
            && run.stderr_str().contains("--target-timeline"),
        "{}",
        run.report()
    );
    assert!(is_absent_or_empty(&refused));
    eprintln!("timelines scenario took {:.0?}", started.elapsed());
}
