//! `pgsnapfs copy`: backups and WAL carried local → S3 (encrypted) → local, incrementally;
//! each copy passes `check --read-data` and restores to the source's rows; a copy killed at
//! each of its kill points leaves no partial backup, and a rerun completes it.

mod common;

use common::*;
use std::os::unix::process::ExitStatusExt;

const ROWS: &str = "SELECT count(*) || ':' || md5(string_agg(v, ',' ORDER BY id)) FROM t";

fn fill(c: &Cluster, from: u32, to: u32) {
    c.psql(&format!(
        "CREATE TABLE IF NOT EXISTS t(id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, md5(g::text || random()::text)
           FROM generate_series({from}, {to}) g;"
    ));
}

/// `copy --from A --to B ARGS... --json` with each side's passphrase file.
fn copy_args(from: &Repo, to: &Repo, args: &[&str]) -> Vec<String> {
    let mut v = vec![
        "copy".to_string(),
        "--from".into(),
        from.spec.clone(),
        "--to".into(),
        to.spec.clone(),
        "--json".into(),
    ];
    for (side, repo) in [("from", from), ("to", to)] {
        if let Some(f) = &repo.passphrase_file {
            v.push(format!("--{side}-passphrase-file"));
            v.push(f.display().to_string());
        }
    }
    v.extend(args.iter().map(|s| s.to_string()));
    v
}

#[track_caller]
fn copy(from: &Repo, to: &Repo, args: &[&str]) -> serde_json::Value {
    pgsnapfs(&copy_args(from, to, args)).assert_ok().json()
}

#[track_caller]
fn check_read_data(repo: &Repo) {
    let run = repo.run("check", &["--read-data", "--json"]);
    assert_eq!(run.code(), Some(0), "{}", run.report());
}

/// Restores the latest state from `repo` and returns the rows a server started on it sees.
fn restored_rows(repo: &Repo) -> String {
    let out = TestDir::new("restore");
    let to = out.join("data");
    repo.restore(&to, &[]).assert_ok();
    let restored = Cluster::start_on(&to);
    assert_ne!(
        restored.wait_until_paused_or_ready(),
        RecoveryState::ShutDown
    );
    restored.psql(ROWS)
}

fn ids(repo: &Repo) -> Vec<String> {
    repo.list().iter().map(|b| json_str(b, "id")).collect()
}

#[test]
fn copy_local_s3_encrypted_local_incremental_and_killed() {
    let r1 = Repo::init();
    let r2 = Repo::init_encrypted_on(Store::S3, "copy passphrase");
    let r3 = Repo::init();
    let mut source = Cluster::archiving_to(&r1.spec);
    fill(&source, 1, 20_000);
    r1.backup(&source);
    source.switch_wal_and_wait_archived();

    let first = copy(&r1, &r2, &["--wal"]);
    assert_eq!(
        first["backups_copied"].as_array().unwrap().len(),
        1,
        "{first}"
    );
    assert!(json_u64(&first, "wal_files_sent") > 0, "{first}");
    let first_back = copy(&r2, &r3, &["--wal"]);
    let full = json_u64(&first_back, "bytes_sent");
    assert!(full > 0, "{first_back}");

    // A few changed pages, then a second backup: only its new chunks travel.
    source.psql("UPDATE t SET v = 'changed' WHERE id % 1000 = 0");
    fill(&source, 20_001, 21_000);
    r1.backup(&source);
    source.switch_wal_and_wait_archived();
    let want = source.psql(ROWS);
    let second = copy(&r1, &r2, &["--wal"]);
    assert_eq!(
        second["backups_copied"].as_array().unwrap().len(),
        1,
        "{second}"
    );
    assert_eq!(
        second["backups_present"].as_array().unwrap().len(),
        1,
        "{second}"
    );
    let second_back = copy(&r2, &r3, &["--wal"]);
    let delta = json_u64(&second_back, "bytes_sent");
    assert!(
        delta * 4 < full,
        "the second copy sent {delta} bytes, the first {full}: {second_back}"
    );
    assert!(
        json_u64(&second_back, "bytes_skipped") > delta,
        "{second_back}"
    );
    assert!(requests_total(&second["requests_to"]) > 0, "{second}");
    // Nothing new: nothing sent.
    let again = copy(&r2, &r3, &["--wal"]);
    assert_eq!(json_u64(&again, "bytes_sent"), 0, "{again}");
    assert_eq!(json_u64(&again, "wal_files_sent"), 0, "{again}");
    assert_eq!(ids(&r1), ids(&r3));

    check_read_data(&r2);
    check_read_data(&r3);
    source.stop();
    assert_eq!(
        restored_rows(&r3),
        want,
        "rows restored from the second copy"
    );

    // Killed at each of its kill points, a copy shows no partial backup; a rerun completes.
    let r4 = Repo::init();
    let args = copy_args(&r3, &r4, &["--wal"]);
    let counted = run_command(pgsnapfs_command(&args).env("PGSNAPFS_KILL_AT", "count"));
    let points: Vec<String> = counted
        .stderr_str()
        .lines()
        .filter_map(|l| l.strip_prefix("kill point "))
        .filter_map(|l| l.split(' ').next())
        .filter(|p| p.starts_with("put:"))
        .map(str::to_string)
        .collect();
    assert!(points.len() > 3, "{}", counted.report());
    let packs = |r: &Repo| r.objects("packs/").iter().map(|(_, n)| n).sum::<u64>();
    let mut last = None;
    for point in &points {
        let r4 = Repo::init();
        let args = copy_args(&r3, &r4, &["--wal"]);
        let run = run_command(pgsnapfs_command(&args).env("PGSNAPFS_KILL_AT", point));
        assert_eq!(run.status.signal(), Some(libc::SIGKILL), "{}", run.report());
        for id in ids(&r4) {
            assert!(ids(&r3).contains(&id), "{id} after a kill at {point}");
        }
        r4.run("check", &["--json"]).assert_exit(0);
        pgsnapfs(&args).assert_ok();
        // What the killed run stored was found again, not sent a second time.
        assert!(
            packs(&r4) * 10 < packs(&r3) * 11,
            "{} bytes of packs after a kill at {point}, {} in the source",
            packs(&r4),
            packs(&r3)
        );
        last = Some(r4);
    }
    let r4 = last.expect("kill points");
    assert_eq!(ids(&r3), ids(&r4));
    check_read_data(&r4);
    assert_eq!(
        restored_rows(&r4),
        want,
        "rows restored after killed copies"
    );

    // Chunk lists cannot carry another chunk size: refused before anything is written.
    let other = Repo::new();
    other.run("init", &["--chunk-size", "128K"]).assert_ok();
    let before = other.digest();
    pgsnapfs(&copy_args(&r3, &other, &[]))
        .assert_exit(2)
        .assert_mentions("--chunk-size 65536");
    assert_eq!(other.digest(), before);
    pgsnapfs(&copy_args(&r3, &r3, &[])).assert_exit(2);
    // One passphrase option for two repositories would be ambiguous.
    pgsnapfs(&copy_args(&r3, &r4, &["--passphrase-file", "/dev/null"]))
        .assert_exit(2)
        .assert_mentions("--to-passphrase-file");
    pgsnapfs(&copy_args(&r3, &r4, &["--backup", "20000101T000000Z"])).assert_exit(4);
}

/// Without `--wal`, a copied backup still carries the WAL from its start to its stop: a restore
/// from the copy alone reaches the backup's rows.
#[test]
fn copy_without_wal_carries_the_backup_s_own_wal() {
    let r1 = Repo::init();
    let r2 = Repo::init();
    let mut source = Cluster::archiving_to(&r1.spec);
    fill(&source, 1, 5_000);
    r1.backup(&source);
    let want = source.psql(ROWS);
    fill(&source, 5_001, 6_000);
    source.switch_wal_and_wait_archived();
    source.stop();
    let done = copy(&r1, &r2, &[]);
    assert!(json_u64(&done, "wal_files_sent") > 0, "{done}");
    assert!(
        r2.objects("wal/").len() < r1.objects("wal/").len(),
        "only the backup's WAL: {done}"
    );
    assert_eq!(
        restored_rows(&r2),
        want,
        "rows restored from the copy alone"
    );
}
