//! A repository with two timelines made for real, and what `info`, `check` and `expire` make
//! of it: a cluster on timeline 1 is backed up (B1, B2); a restore to a time between them is
//! promoted and archives timeline 2 into the same repository while the original keeps
//! archiving timeline 1 (the "test restore that archives" of issue 14); timeline 2 is backed
//! up (B3).
//!
//! - `info --json` shows the tree (parent, fork point from the real history file), each
//!   timeline's WAL and the backups that reach it, and flags timelines 1 and 2 as both active;
//! - `check` warns about that (exit 0), and reports a deleted history file, a deleted
//!   timeline 1 segment before the fork, and one after B2 that timeline 2 has a segment of the
//!   same number for (exit 3);
//! - `expire` keeps timeline 1's WAL while a kept backup reaches it (B1 then still recovers
//!   along timeline 2 to its last row), removes all of it once none does, keeps exactly what
//!   B3 needs of timeline 2, and B3 then restores with timeline 2's rows.

// This file uses only part of the harness's re-exports.
#[allow(unused_imports)]
mod common;

use common::*;
use std::collections::BTreeSet;
use std::fs;

const ROWS: &str = "SELECT count(*) || ':' || string_agg(id || tl, ',' ORDER BY id) FROM t";

/// The entries of `info --json`'s `timelines` for one timeline.
#[track_caller]
fn timeline(info: &serde_json::Value, tli: u64) -> serde_json::Value {
    info["timelines"]
        .as_array()
        .unwrap_or_else(|| panic!("no timelines array in {info:#}"))
        .iter()
        .find(|t| t["timeline"] == tli)
        .unwrap_or_else(|| panic!("no timeline {tli} in {info:#}"))
        .clone()
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn kinds(v: &serde_json::Value, field: &str) -> BTreeSet<String> {
    v[field]
        .as_array()
        .unwrap_or_else(|| panic!("no {field} in {v:#}"))
        .iter()
        .map(|p| p["kind"].as_str().unwrap().to_string())
        .collect()
}

/// The WAL file names archived for `sysid` on timeline `tli`.
fn wal_names(repo: &Repo, sysid: &str, tli: u32) -> Vec<String> {
    repo.objects(&format!("wal/{sysid}/{tli:08X}/"))
        .into_iter()
        .map(|(k, _)| k.rsplit('/').next().unwrap().to_string())
        .collect()
}

#[test]
fn two_timelines_in_info_check_and_expire() {
    let started = std::time::Instant::now();
    let repo = Repo::init();
    let one = Cluster::archiving_to(&repo.spec);
    let sysid = one.system_identifier();
    one.psql("CREATE TABLE t(id int PRIMARY KEY, tl text); INSERT INTO t VALUES (1, 'base')");
    let b1 = json_str(&repo.backup(&one), "id");
    // A segment of timeline 1 after B1 and before the fork, to delete later.
    one.psql("INSERT INTO t VALUES (2, 'before')");
    let before_fork = one.switch_wal_and_wait_archived();
    one.psql("INSERT INTO t VALUES (3, 'before')");
    one.switch_wal_and_wait_archived();
    let at_target = one.psql(ROWS);
    let target = one.now();
    one.psql("INSERT INTO t VALUES (4, 'after')");
    one.switch_wal_and_wait_archived();
    let b2 = json_str(&repo.backup(&one), "id");
    one.psql("INSERT INTO t VALUES (40, 'after')");
    let after_b2 = one.switch_wal_and_wait_archived();

    // The restore to the target, promoted, archiving into the same repository.
    let out = TestDir::new("timeline2");
    let data2 = out.join("data");
    repo.restore(
        &data2,
        &["--target-time", &target, "--target-action", "promote"],
    )
    .assert_ok();
    let two = Cluster::start_on_with(&data2, &[("archive_mode", "on")]);
    assert_eq!(two.wait_until_paused_or_ready(), RecoveryState::Ready);
    assert_eq!(two.psql(ROWS), at_target, "timeline 2 starts at the target");
    assert_eq!(
        two.psql("SELECT timeline_id FROM pg_control_checkpoint()"),
        "2"
    );
    // A commit past timeline 2's switch segment, then timeline 1 commits after it: both
    // servers are writing.
    two.switch_wal();
    two.psql("INSERT INTO t VALUES (201, 'two')");
    two.switch_wal_and_wait_archived();
    one.psql("INSERT INTO t VALUES (5, 'one')");
    let one_last = one.switch_wal_and_wait_archived();
    // The restore's target stays in postgresql.auto.conf and would end a later recovery from
    // B3 at it (issue 14, item 1: not this test's subject): clear it as a careful DBA does.
    two.psql("ALTER SYSTEM RESET recovery_target_time; ALTER SYSTEM RESET recovery_target_action");
    let b3_run = repo.backup(&two);
    let b3 = json_str(&b3_run, "id");
    assert_eq!(json_u64(&b3_run, "timeline"), 2);
    two.psql("INSERT INTO t VALUES (202, 'two')");
    let two_last = two.switch_wal_and_wait_archived();
    let rows_two = two.psql(ROWS);
    let history = fs::read_to_string(data2.join("pg_wal/00000002.history")).unwrap();
    let fork = parse_lsn(history.split('\t').nth(1).expect("a history line"));
    let mut one = one;
    let mut two = two;
    // Immediate: a clean shutdown ends the segment holding what was logged since the last
    // switch (a standby snapshot) and may archive it, so the last archived would be a race.
    one.stop_mode("immediate");
    two.stop_mode("immediate");

    // info: the tree, the WAL, who reaches what, and the warning.
    let info = repo.run("info", &["--json"]).assert_ok().json();
    let t1 = timeline(&info, 1);
    let t2 = timeline(&info, 2);
    assert_eq!(t1["parent"], serde_json::Value::Null, "{t1:#}");
    assert_eq!(t1["children"], serde_json::json!([2]), "{t1:#}");
    assert_eq!(t2["parent"], 1, "{t2:#}");
    assert_eq!(parse_lsn(&json_str(&t2, "fork_lsn")), fork, "{t2:#}");
    assert_eq!(t2["history_missing"], false);
    assert_eq!(json_str(&t1["wal"], "last"), one_last, "{t1:#}");
    assert_eq!(json_str(&t2["wal"], "last"), two_last, "{t2:#}");
    // Timeline 2 begins with the segment holding the fork.
    let fork_seg = fork / (16 << 20);
    assert_eq!(
        json_str(&t2["wal"], "first"),
        format!("00000002{:08X}{:08X}", fork_seg >> 8, fork_seg & 0xff),
        "{t2:#}"
    );
    for t in [&t1, &t2] {
        assert_eq!(t["wal"]["gaps"], serde_json::json!([]), "{t:#}");
    }
    assert_eq!(
        strings(&t1["restorable"]["backups"]),
        vec![b1.clone(), b2.clone()]
    );
    assert_eq!(
        strings(&t2["restorable"]["backups"]),
        vec![b1.clone(), b3.clone()]
    );
    // Each range belongs to its timeline: timeline 1's ends at its last commit (row 5), before
    // timeline 2's last (row 202); both begin at B1's end.
    let time = |t: &serde_json::Value, f: &str| {
        chrono::DateTime::parse_from_rfc3339(&json_str(&t["restorable"], f)).unwrap()
    };
    assert!(
        time(&t1, "latest_time") < time(&t2, "latest_time"),
        "{info:#}"
    );
    assert_eq!(time(&t1, "earliest_time"), time(&t2, "earliest_time"));
    let both = info["both_active"].as_array().unwrap();
    assert_eq!(both.len(), 1, "{info:#}");
    assert_eq!(both[0]["timelines"], serde_json::json!([1, 2]));
    let text = repo.run("info", &[]).assert_ok().stdout_str();
    assert!(
        text.contains("WARNING: timelines 1 and 2 are both active"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "    timeline 2, forked from timeline 1 at {}",
            json_str(&t2, "fork_lsn")
        )),
        "{text}"
    );

    // check: a warning, no problem; then a lost history file, and a lost segment before the
    // fork.
    let state = TestDir::new("check-state");
    let check = || {
        repo.run(
            "check",
            &["--json", "--state-dir", state.path().to_str().unwrap()],
        )
    };
    let clean = check().assert_exit(0).json();
    assert_eq!(clean["ok"], true, "{clean:#}");
    assert_eq!(
        kinds(&clean, "warnings"),
        ["both_active".to_string()].into()
    );
    let stash = TestDir::new("stash");
    let wal_dir = repo.path.join("wal").join(&sysid);
    let history_key = wal_dir.join("00000002/00000002.history");
    fs::rename(&history_key, stash.join("h")).unwrap();
    let lost = check().assert_exit(3).json();
    assert!(
        kinds(&lost, "problems").contains("missing_history"),
        "{lost:#}"
    );
    fs::rename(stash.join("h"), &history_key).unwrap();
    let segment_key = wal_dir.join("00000001").join(&before_fork);
    fs::rename(&segment_key, stash.join("s")).unwrap();
    let cut = check().assert_exit(3).json();
    let p = cut["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["kind"] == "timeline_unreachable")
        .unwrap_or_else(|| panic!("no timeline_unreachable in {cut:#}"))
        .clone();
    assert_eq!(
        json_str(&p, "object"),
        format!("wal/{sysid}/00000001/{before_fork}")
    );
    assert_eq!(strings(&p["backups"]), vec![b1.clone()], "{p:#}");
    assert!(
        json_str(&p, "detail").contains("cannot reach timeline 2 (forked from timeline 1"),
        "{p:#}"
    );
    fs::rename(stash.join("s"), &segment_key).unwrap();
    // A segment of timeline 1 after B2: timeline 2 has a segment of the same number, which
    // must not hide the gap on B2's own timeline.
    let number = |name: &str| name[8..].to_string();
    assert!(
        number(&json_str(&t2["wal"], "first")) <= number(&after_b2)
            && number(&after_b2) <= number(&json_str(&t2["wal"], "last")),
        "timeline 2 has no segment {} to stand in: {t2:#}",
        number(&after_b2)
    );
    let last_key = wal_dir.join("00000001").join(&after_b2);
    fs::rename(&last_key, stash.join("l")).unwrap();
    let gap = check().assert_exit(3).json();
    let p = gap["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["kind"] == "wal_gap")
        .unwrap_or_else(|| panic!("no wal_gap in {gap:#}"))
        .clone();
    assert_eq!(
        json_str(&p, "object"),
        format!("wal/{sysid}/00000001/{after_b2}")
    );
    assert_eq!(strings(&p["backups"]), vec![b2.clone()], "{p:#}");
    fs::rename(stash.join("l"), &last_key).unwrap();
    check().assert_exit(0);

    // expire with B1 marked: B2 goes; B1 still reaches timeline 1 (to its end, past the fork)
    // and timeline 2, so no WAL after B1's start goes.
    repo.run("backup-keep", &[&b1]).assert_ok();
    let one_before = wal_names(&repo, &sysid, 1);
    let first = repo
        .run("expire", &["--keep-last", "1", "--json"])
        .assert_ok()
        .json();
    let cuts = first["wal"][0]["timelines"].as_array().unwrap().clone();
    assert_eq!(cuts[0]["timeline"], 1);
    assert_eq!(strings(&cuts[0]["keep_for"]), vec![b1.clone()], "{first:#}");
    assert_eq!(cuts[1]["timeline"], 2);
    assert_eq!(
        strings(&cuts[1]["keep_for"]),
        vec![b1.clone(), b3.clone()],
        "{first:#}"
    );
    assert_eq!(
        json_str(&cuts[1], "keep_from"),
        json_str(&t2["wal"], "first")
    );
    assert_eq!(json_u64(&cuts[1], "files_removed"), 0, "{first:#}");
    let one_after = wal_names(&repo, &sysid, 1);
    assert!(one_after.contains(&one_last), "{one_after:?}");
    assert!(one_after.contains(&before_fork), "{one_after:?}");
    assert!(one_after.len() < one_before.len(), "nothing before B1 went");

    // What is left takes B1 along timeline 2 to its end. The planner of this branch picks
    // backups by time only, so the timeline is set by hand: B1 restored, then its target
    // replaced by timeline 2.
    let out = TestDir::new("b1-on-2");
    let via = out.join("data");
    repo.restore(&via, &["--backup", &b1]).assert_ok();
    let mut conf = fs::OpenOptions::new()
        .append(true)
        .open(via.join("postgresql.auto.conf"))
        .unwrap();
    std::io::Write::write_all(
        &mut conf,
        b"recovery_target = ''\nrecovery_target_timeline = '2'\nrecovery_target_action = 'promote'\n",
    )
    .unwrap();
    let b1_on_2 = Cluster::start_on(&via);
    assert_eq!(b1_on_2.wait_until_paused_or_ready(), RecoveryState::Ready);
    assert_eq!(b1_on_2.psql(ROWS), rows_two, "{}", b1_on_2.log_tail(30));
    drop(b1_on_2);

    // Unmarked: only B3 is kept. Timeline 1 is reached by no kept backup: all its WAL goes;
    // timeline 2 keeps what B3 needs, from its start.
    repo.run("backup-keep", &["--off", &b1]).assert_ok();
    let dry = repo
        .run("expire", &["--keep-last", "1", "--json", "--dry-run"])
        .assert_ok()
        .json();
    let cuts = dry["wal"][0]["timelines"].as_array().unwrap().clone();
    assert_eq!(cuts[0]["keep_from"], serde_json::Value::Null, "{dry:#}");
    assert_eq!(
        json_str(&cuts[0], "why"),
        "no kept backup reaches timeline 1"
    );
    assert_eq!(json_u64(&cuts[0], "files_removed"), one_after.len() as u64);
    let text = repo
        .run("expire", &["--keep-last", "1"])
        .assert_ok()
        .stdout_str();
    assert!(
        text.contains("timeline 1: removed") && text.contains("no kept backup reaches timeline 1"),
        "{text}"
    );
    assert_eq!(wal_names(&repo, &sysid, 1), Vec::<String>::new());
    let b3_start = parse_lsn(&json_str(&b3_run, "start_lsn")) / (16 << 20);
    let b3_seg = format!("00000002{:08X}{:08X}", b3_start >> 8, b3_start & 0xff);
    let left = wal_names(&repo, &sysid, 2);
    assert_eq!(left[0], "00000002.history", "{left:?}");
    assert!(
        left[1..].iter().all(|n| n[..24] >= *b3_seg),
        "{b3_seg}: {left:?}"
    );
    assert!(
        left.contains(&b3_seg) && left.contains(&two_last),
        "{left:?}"
    );

    // What is left restores B3 and all of timeline 2 after it.
    let out = TestDir::new("restore");
    let to = out.join("data");
    repo.restore(&to, &[]).assert_ok();
    let restored = Cluster::start_on(&to);
    assert_eq!(restored.wait_until_paused_or_ready(), RecoveryState::Ready);
    assert_eq!(restored.psql(ROWS), rows_two, "{}", restored.log_contents());
    eprintln!("timeline_catalog took {:?}", started.elapsed());
}
