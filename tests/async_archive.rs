//! Asynchronous archiving (`wal-push --async`) with a real server, in one scenario: archiving
//! under pgbench while its archiver is killed; archivers killed at every step of their work
//! (the kill points of their repository writes), then rerun: nothing lost, `check` clean, a
//! restore's rows equal the source's; a second async push of an archived file is harmless;
//! `wal-fetch --prefetch` serves later segments locally, never a damaged copy; the repository's
//! disk full, then freed: the server is told (its archive_command fails with
//! the archiver's error) and the queue drains; with `--queue-max` a dropped file is reported
//! as a gap by `info` and `check`. A second, small test archives asynchronously into an
//! encrypted repository.

mod common;

use common::*;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::Duration;

const ROWS: &str = "SELECT count(*), sum(abalance), (SELECT count(*) FROM pgbench_history) \
                    FROM pgbench_accounts";

fn archive_status(spool: &Path) -> serde_json::Value {
    let run = pgsnapfs(&[
        "archive-status",
        "--spool",
        spool.to_str().unwrap(),
        "--json",
    ]);
    assert!(matches!(run.code(), Some(0 | 1)), "{}", run.report());
    run.json()
}

/// Waits until the spool is empty and its archiver is not failing.
#[track_caller]
fn wait_drained(spool: &Path) -> serde_json::Value {
    wait_for(Duration::from_secs(120), || {
        let s = archive_status(spool);
        match s["queued_files"] == 0 && s["failing_since"].is_null() {
            true => Ok(s),
            false => Err(s.to_string()),
        }
    })
    .unwrap_or_else(|e| panic!("the spool did not drain: {e}"))
}

fn set_archive_command(c: &Cluster, command: &str) {
    c.psql(&format!(
        "ALTER SYSTEM SET archive_command = '{}'",
        command.replace('\'', "''")
    ));
    c.psql("SELECT pg_reload_conf()");
}

fn kill9(pid: u64) {
    // SAFETY: a signal to a process of this test.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
}

#[track_caller]
fn assert_check_clean(repo: &Repo, after: &str) {
    let run = repo.run("check", &["--read-data", "--json"]);
    assert_eq!(run.code(), Some(0), "check after {after}\n{}", run.report());
}

#[test]
fn async_archiving_survives_kills_outages_and_full_queues() {
    let started = std::time::Instant::now();
    // The repository on a disk of its own, to fill up.
    let repo = Repo::new();
    let disk = Tmpfs::mount(&repo.path, "512M");
    repo.run("init", &[]).assert_ok();
    let dir = TestDir::new("async");
    let spool = dir.subdir("spool", 0o700);
    let push = format!(
        "{} wal-push --async --spool {} --repo {} --fail-after 1",
        pgsnapfs_bin().display(),
        spool.display(),
        repo.spec
    );
    let mut c = Cluster::new(ClusterOptions {
        settings: vec![
            ("archive_mode".into(), "on".into()),
            ("archive_command".into(), format!("'{push} %p'")),
            // Archived segments stay in pg_wal, to be pushed a second time.
            ("wal_keep_size".into(), "'1GB'".into()),
        ],
        ..ClusterOptions::default()
    });
    c.start();
    c.pgbench_init(5);
    repo.backup(&c);

    // 1. Under pgbench, the archiver is killed; the next push starts another.
    eprintln!("phase 1: {:.1?}", started.elapsed());
    let pid = wait_for(Duration::from_secs(30), || {
        archive_status(&spool)["pusher_pid"]
            .as_u64()
            .ok_or_else(|| "no archiver".to_string())
    })
    .unwrap();
    std::thread::scope(|s| {
        s.spawn(|| c.pgbench_run(6, 2));
        std::thread::sleep(Duration::from_secs(2));
        kill9(pid);
    });
    c.switch_wal_and_wait_archived();
    let drained = wait_drained(&spool);
    assert_ne!(drained["status"]["pid"].as_u64(), Some(pid), "{drained}");
    assert_check_clean(&repo, "an archiver killed under pgbench");

    // 2. Archivers that die before their first repository write, started by the server's
    // pushes: the queue grows and nothing can drain it. Then archivers killed at each step,
    // until one finishes.
    eprintln!("phase 2: {:.1?}", started.elapsed());
    set_archive_command(&c, &format!("PGSNAPFS_KILL_AT=put:1 {push} %p"));
    if let Some(pid) = archive_status(&spool)["pusher_pid"].as_u64() {
        kill9(pid);
    }
    wait_for(Duration::from_secs(10), || {
        match archive_status(&spool)["pusher_pid"].is_null() {
            true => Ok(()),
            false => Err("the archiver still runs".to_string()),
        }
    })
    .unwrap();
    // The kill points below pass at most 0+1+1+2+2+3 puts before their 6th kill, and every
    // queued file takes at least one: 10 files guarantee 6 kills.
    for _ in 0..10 {
        c.pgbench(&["-t", "100", "-c", "2"]);
        c.switch_wal_and_wait_archived();
    }
    set_archive_command(&c, &format!("{push} %p"));
    if let Some(pid) = archive_status(&spool)["pusher_pid"].as_u64() {
        kill9(pid);
    }
    let queued = archive_status(&spool)["queued_files"].as_u64().unwrap();
    assert!(
        queued >= 10,
        "only {queued} files queued: an archiver drained the spool"
    );
    let daemon = |point: Option<&str>, threads: &str| {
        let mut cmd = pgsnapfs_command(&repo.args(
            "archive-daemon",
            &["--spool", spool.to_str().unwrap(), "--idle-exit", "0"],
        ));
        cmd.args(["--process-max", threads]);
        if let Some(p) = point {
            cmd.env("PGSNAPFS_KILL_AT", p);
        }
        run_command(&mut cmd)
    };
    let points = [
        "put:1",
        "put-done:1",
        "put:2",
        "put-done:2",
        "put:3",
        "put-done:3",
    ];
    let mut kills = 0;
    for round in 0.. {
        assert!(round < 200, "archivers killed {kills} times did not finish");
        let point = points[round % points.len()];
        let run = daemon(Some(point), ["1", "2"][round / points.len() % 2]);
        match run.status.signal() {
            Some(libc::SIGKILL) => kills += 1,
            _ => {
                run.assert_ok();
                break;
            }
        }
    }
    eprintln!("{queued} queued files archived by archivers killed {kills} times");
    assert!(kills >= points.len(), "only {kills} kills");
    daemon(None, "2").assert_ok();
    assert_eq!(wait_drained(&spool)["queued_files"], 0);
    assert_check_clean(&repo, "archivers killed at every step");
    let source_rows = c.psql(ROWS);
    {
        let restore_dir = TestDir::new("restore");
        let to = restore_dir.join("data");
        repo.restore(&to, &["--archive-mode", "off"]).assert_ok();
        let restored = Cluster::start_on(&to);
        assert_ne!(
            restored.wait_until_paused_or_ready(),
            RecoveryState::ShutDown
        );
        assert_eq!(restored.psql(ROWS), source_rows, "restored rows");
    }

    // 3. A second async push of an archived file is harmless.
    eprintln!("phase 3: {:.1?}", started.elapsed());
    let last = c.psql("SELECT last_archived_wal FROM pg_stat_archiver");
    let file = c.data.join("pg_wal").join(&last);
    for _ in 0..2 {
        let mut args: Vec<String> = push.split(' ').skip(1).map(String::from).collect();
        args.push(file.display().to_string());
        pgsnapfs(&args).assert_ok();
    }
    // The archiver the first push started records what it archived.
    let drained = wait_for(Duration::from_secs(60), || {
        let s = wait_drained(&spool);
        match s["status"]["archived_files"].as_u64() >= Some(1) {
            true => Ok(s),
            false => Err(s.to_string()),
        }
    })
    .unwrap();
    assert_eq!(
        drained["status"]["last_archived"],
        last.as_str(),
        "{drained}"
    );
    assert_check_clean(&repo, "a file pushed twice");

    // 4. wal-fetch --prefetch: later segments are served from the prefetch directory without
    // the repository, and only intact.
    eprintln!("phase 4: {:.1?}", started.elapsed());
    let segs: Vec<String> = c
        .wal_segments()
        .into_iter()
        .filter(|s| *s <= last)
        .collect();
    let want = &segs[segs.len() - 4..];
    let fetch_dir = dir.subdir("fetch", 0o755);
    let dest = fetch_dir.join("RECOVERYXLOG");
    let fetch_from = |spec: &str, name: &str| {
        pgsnapfs(&[
            "wal-fetch",
            "--repo",
            spec,
            "--prefetch",
            "3",
            name,
            dest.to_str().unwrap(),
        ])
    };
    let fetch = |name: &str| fetch_from(&repo.spec, name);
    let gone = dir.join("no-repository");
    let gone = gone.to_str().unwrap();
    let fetched_is = |name: &str| {
        assert!(
            std::fs::read(&dest).unwrap()
                == std::fs::read(c.data.join("pg_wal").join(name)).unwrap(),
            "wal-fetch --prefetch of {name} returned other bytes"
        )
    };
    fetch(&want[0]).assert_ok();
    fetched_is(&want[0]);
    fetch_from(gone, &want[1]).assert_ok();
    fetched_is(&want[1]);
    let copy = std::fs::read_dir(fetch_dir.join("pgsnapfs-prefetch"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with(&want[2])
        })
        .expect("a prefetched copy");
    flip_byte(&copy, 4096);
    fetch_from(gone, &want[2]).assert_failed();
    fetch(&want[2]).assert_ok();
    fetched_is(&want[2]);

    // 5. The repository's disk full: the server's pushes fail with the archiver's error once
    // it has failed for --fail-after; space freed, the queue drains.
    eprintln!("phase 5: {:.1?}", started.elapsed());
    let filler = disk.fill("filler", 0);
    let failed_before: u64 = c
        .psql("SELECT failed_count FROM pg_stat_archiver")
        .parse()
        .unwrap();
    c.pgbench(&["-t", "200", "-c", "2"]);
    let cut = c.switch_wal();
    c.psql("CREATE TABLE outage (x int)");
    wait_for(Duration::from_secs(60), || {
        // More WAL to push: a push after the archiver has failed for a second fails.
        c.psql("INSERT INTO outage VALUES (1); SELECT pg_switch_wal()");
        std::thread::sleep(Duration::from_millis(500));
        let failed: u64 = c
            .psql("SELECT failed_count FROM pg_stat_archiver")
            .parse()
            .unwrap();
        match failed > failed_before {
            true => Ok(()),
            false => Err(format!("failed_count {failed}")),
        }
    })
    .unwrap();
    let log = c.log_contents();
    assert!(
        log.contains("the archiver of spool") && log.contains("has failed for"),
        "the server log does not give the archiver's error:\n{}",
        c.log_tail(20)
    );
    let s = archive_status(&spool);
    assert!(!s["failing_since"].is_null(), "{s}");
    assert!(s["status"]["last_error"].as_str().is_some(), "{s}");
    std::fs::remove_file(&filler).unwrap();
    let archived = c.switch_wal_and_wait_archived();
    assert!(archived >= cut);
    wait_drained(&spool);
    assert_check_clean(&repo, "a full disk");

    // 6. --queue-max: a file over it is dropped, loudly, and reported as a gap.
    eprintln!("phase 6: {:.1?}", started.elapsed());
    set_archive_command(&c, &format!("{push} --queue-max 1 %p"));
    c.psql("CREATE TABLE after_drop AS SELECT 1");
    let dropped = c.switch_wal_and_wait_archived();
    assert!(c.log_contents().contains("DROPPED"), "{}", c.log_tail(10));
    let info = wait_for(Duration::from_secs(60), || {
        let info = repo.run("info", &["--json"]).assert_ok().json();
        match info["dropped_wal"]
            .as_array()
            .is_some_and(|d| !d.is_empty())
        {
            true => Ok(info),
            false => Err(info["dropped_wal"].to_string()),
        }
    })
    .unwrap();
    assert_eq!(info["dropped_wal"][0]["name"], dropped.as_str(), "{info}");
    let check = repo.run("check", &["--json"]).assert_exit(3).json();
    assert!(
        check["problems"].as_array().unwrap().iter().any(|p| {
            p["kind"] == "wal_dropped" && p["object"].as_str().unwrap().ends_with(&dropped)
        }),
        "{check}"
    );
    eprintln!("async_archive: {:.1?}", started.elapsed());
}

/// An encrypted repository: the archiver the first async push starts opens it with the
/// push's passphrase file, and what it archives decrypts to the server's segments.
#[test]
fn async_archiving_into_an_encrypted_repository() {
    let started = std::time::Instant::now();
    let repo = Repo::init_encrypted_on(Store::Local, "correct horse battery staple");
    let dir = TestDir::new("async-encrypted");
    let spool = dir.subdir("spool", 0o700);
    let push = format!(
        "{} wal-push --async --spool {} --repo {} --passphrase-file {}",
        pgsnapfs_bin().display(),
        spool.display(),
        repo.spec,
        repo.passphrase_file.as_ref().unwrap().display()
    );
    let c = Cluster::start_new(ClusterOptions {
        settings: vec![
            ("archive_mode".into(), "on".into()),
            ("archive_command".into(), format!("'{push} %p'")),
            ("wal_keep_size".into(), "'1GB'".into()),
        ],
        ..ClusterOptions::default()
    });
    c.psql("CREATE TABLE t AS SELECT generate_series(1, 10000) AS x");
    let last = c.switch_wal_and_wait_archived();
    wait_drained(&spool);
    assert_check_clean(&repo, "async archiving into an encrypted repository");
    let dest = dir.join("fetched");
    repo.run("wal-fetch", &[&last, dest.to_str().unwrap()])
        .assert_ok();
    assert!(
        std::fs::read(&dest).unwrap() == std::fs::read(c.data.join("pg_wal").join(&last)).unwrap(),
        "{last} fetched from the repository differs from the server's"
    );
    eprintln!("async_archive encrypted: {:.1?}", started.elapsed());
}
