//! pgsnapfs killed with SIGKILL part-way: the repository stays usable, nothing half-written is
//! listed, and a retry succeeds.

mod common;

use common::*;
use std::process::Stdio;
use std::time::Duration;

/// Runs `args` as postgres and SIGKILLs it after `delay`. Returns the run, whose status is
/// either the signal or, if it finished first, its exit code.
fn run_and_kill(args: &[String], delay: Duration) -> Run {
    let mut cmd = pgsnapfs_command(args);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let command = describe(&cmd);
    let mut child = cmd.spawn().expect("spawn pgsnapfs");
    std::thread::sleep(delay);
    // setpriv execs pgsnapfs, so this is pgsnapfs's own PID. Killing a process that already
    // exited is a no-op; wait() still reports how it ended.
    let _ = child.kill();
    let output = child.wait_with_output().expect("wait for pgsnapfs");
    Run { command, output }
}

const T_ROWS: &str = "SELECT count(*) || ' ' || sum(id) FROM t";

#[test]
fn killed_backup_leaves_repository_usable() {
    let repo = Repo::init();
    let source = Cluster::archiving_to(&repo.spec);
    source.pgbench_init(5);
    source.psql(
        "CREATE TABLE t(id int PRIMARY KEY);
         INSERT INTO t SELECT generate_series(1, 1000);",
    );
    let want_first = source.psql(T_ROWS);
    let started = std::time::Instant::now();
    let first = json_str(&repo.backup(&source), "id");
    let full = started.elapsed();
    source.psql("INSERT INTO t SELECT generate_series(1001, 2000)");

    let mut backup_args = repo.args("backup", &["--json"]);
    backup_args.extend(source.backup_args());
    let mut completed = vec![first.clone()];
    let mut killed = 0;
    // Early kills land while files are read; the later ones, scaled to how long a whole backup
    // took, near pg_backup_stop and the writing of the manifest (or after a finished backup).
    let delays = [
        Duration::from_millis(150),
        Duration::from_millis(400),
        full / 2,
        full * 9 / 10,
    ];
    for delay in delays {
        let run = run_and_kill(&backup_args, delay);
        match run.code() {
            Some(0) => completed.push(json_str(&run.json(), "id")),
            None => killed += 1,
            Some(_) => panic!("backup failed before it was killed\n{}", run.report()),
        }
    }
    eprintln!(
        "first backup took {full:?}; killed {killed} of {} backups after {delays:?}; {} completed",
        delays.len(),
        completed.len() - 1
    );
    assert!(
        killed > 0,
        "every backup of a scale-5 cluster finished within the kill delays; nothing was tested"
    );

    // The server must not be left in backup mode, and the next backup must work.
    let last = json_str(&repo.backup(&source), "id");
    completed.push(last);

    let mut listed: Vec<String> = repo.list().iter().map(|b| json_str(b, "id")).collect();
    listed.sort();
    completed.sort();
    assert_eq!(
        listed, completed,
        "list must show exactly the completed backups ({killed} were killed)"
    );

    let out = TestDir::new("restore");
    let to = out.join("data");
    repo.restore(&to, &["--backup", &first]).assert_ok();
    let restored = Cluster::start_on(&to);
    assert_ne!(
        restored.wait_until_paused_or_ready(),
        RecoveryState::ShutDown
    );
    assert_eq!(
        restored.psql(T_ROWS),
        want_first,
        "rows of the first backup {first} after later backups were killed"
    );
}

#[test]
fn killed_wal_push_can_be_retried() {
    let repo = Repo::init();
    let source = Cluster::start_new(ClusterOptions::default());
    source.psql("CREATE TABLE w(x int)");
    let scratch = TestDir::new("wal");
    // Copies, so a checkpoint recycling pg_wal cannot take them away mid-test.
    let mut segments = Vec::new();
    for i in 0..4 {
        source.psql(&format!(
            "INSERT INTO w SELECT generate_series(1, 1000 * {i} + 1)"
        ));
        let name = source.psql("SELECT pg_walfile_name(pg_switch_wal())");
        let copy = scratch.join(&name);
        copy_for_postgres(&source.data.join("pg_wal").join(&name), &copy);
        segments.push((name, copy));
    }

    let mut killed = 0;
    for ((name, copy), ms) in segments.iter().zip([1, 10, 40, 120]) {
        let push = repo.args("wal-push", &[copy.to_str().unwrap()]);
        let run = run_and_kill(&push, Duration::from_millis(ms));
        match run.code() {
            None => killed += 1,
            Some(0) => {}
            Some(_) => panic!("wal-push failed before it was killed\n{}", run.report()),
        }
        // PostgreSQL retries the same command after a failure; it must succeed now.
        pgsnapfs(&push).assert_ok();
        let fetched = scratch.join(format!("{name}.fetched"));
        pgsnapfs(&repo.args("wal-fetch", &[name, fetched.to_str().unwrap()])).assert_ok();
        assert!(
            std::fs::read(&fetched).unwrap() == std::fs::read(copy).unwrap(),
            "wal-fetch {name} after a killed push returned different bytes"
        );
    }
    eprintln!("killed {killed} of {} wal-push runs", segments.len());
    assert!(
        killed > 0,
        "no wal-push was killed before it finished; nothing was tested"
    );
}
