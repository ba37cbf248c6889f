//! `pgsnapfs dump` against real PostgreSQL 15 and real FUSE: a dropped table dumped from
//! before the DROP and loaded into a fresh database has exactly its rows; a target inside the
//! DROP's transaction (whose AccessExclusiveLock a paused recovery keeps) dumps without
//! waiting; `--format custom` restores with pg_restore; `--into` restores into the live database under new
//! names and refuses names that exist; unknown names fail clearly, exit 4,
//! and leave nothing mounted; SIGTERM while pg_dump runs tears everything down (exit 143).
//! One cluster for that scenario, a PostgreSQL 13 one (a build without client programs,
//! dumped by Debian's newer pg_dump) and a PostgreSQL 18 one (dumped by its own pg_dump).
//!
//! dump mounts with FUSE, so it runs as root here.

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Every row of `t`, as one comparable string.
const T_ROWS: &str =
    "SELECT coalesce(string_agg(id || ':' || v, ',' ORDER BY id), '<empty>') FROM t";

/// `pgsnapfs dump --repo R ARGS...` as root, stopped by SIGTERM (which dump cleans up
/// after) if it runs past two minutes: a dump waiting on a lock fails instead of hanging.
fn dump(repo: &Repo, args: &[&str]) -> Run {
    let mut cmd = Command::new("timeout");
    cmd.arg("120")
        .arg(pgsnapfs_bin())
        .args(repo.args("dump", args))
        .current_dir("/")
        .stdin(Stdio::null());
    for var in SCRUBBED_ENV {
        cmd.env_remove(var);
    }
    run_command(&mut cmd)
}

/// Mounts left behind by dump processes that have ended (the other test's running dump
/// has its own).
fn dump_mounts() -> Vec<String> {
    let ended = |line: &str| {
        let pid = line.split_once('@').and_then(|(_, r)| r.split(' ').next());
        pid.is_none_or(|p| !Path::new("/proc").join(p).exists())
    };
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("pgsnapfs-dump") && ended(l))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_dropped_table_comes_back_through_dump() {
    let repo = Repo::init();
    let source = Cluster::archiving_to(&repo.spec);
    source.psql(
        "CREATE TABLE t(id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, 'base-' || g FROM generate_series(1, 300) g;
         CREATE TABLE other(id int);
         CREATE TABLE big AS SELECT g, repeat('x', 100) AS pad FROM generate_series(1, 20000) g;",
    );
    repo.backup(&source);
    // Changes after the backup, so the rows come from WAL replay.
    source.psql(
        "UPDATE t SET v = 'replayed-' || id WHERE id % 3 = 0;
         INSERT INTO t VALUES (1000, 'late row');",
    );
    let want = source.psql(T_ROWS);
    let before = source.now();
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
    assert!(source.try_psql(T_ROWS).is_err(), "t was not dropped");

    // Plain SQL on stdout, from the time before the DROP, loaded into a fresh database.
    let run = dump(
        &repo,
        &[
            "--target-time",
            &before,
            "--dbname",
            "postgres",
            "--table",
            "t",
        ],
    )
    .assert_ok();
    let sql = run.stdout_str();
    assert!(sql.contains("CREATE TABLE public.t"), "{}", run.report());
    source.psql("CREATE DATABASE at_time");
    source.psql_db("at_time", &sql);
    assert_eq!(source.psql_db("at_time", T_ROWS), want);

    // Inside the DROP's transaction: recovery ends there, so the lock is gone and the table
    // is there; a custom archive restores with pg_restore.
    let work = TestDir::new("dump");
    let file = work.join("t.dump");
    let run = dump(
        &repo,
        &[
            "--target-lsn",
            &inside,
            "--dbname",
            "postgres",
            "--table",
            "t",
            "--format",
            "custom",
            "-f",
            file.to_str().unwrap(),
            "--json",
        ],
    )
    .assert_ok();
    let report = run.json();
    assert_eq!(report["format"], "custom", "{}", run.report());
    assert_eq!(report["pg_major"], 15);
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    source.psql("CREATE DATABASE at_lsn");
    let mut restore = postgres_command(pg_tool("pg_restore"));
    restore
        .arg("-h")
        .arg(&source.sock)
        .args([
            "-p",
            &source.port.to_string(),
            "-U",
            "postgres",
            "-d",
            "at_lsn",
        ])
        .arg(&file);
    run_command(&mut restore).assert_ok();
    assert_eq!(source.psql_db("at_lsn", T_ROWS), want);

    // --into: straight into the live database under new names, with its index; a second
    // run refuses, as the names exist, and changes nothing.
    let live = source.conninfo();
    let into = [
        "--target-time",
        before.as_str(),
        "--dbname",
        "postgres",
        "--table",
        "t",
        "--into",
        live.as_str(),
        "--rename-suffix",
        "_back",
    ];
    dump(&repo, &into).assert_ok();
    assert_eq!(source.psql(&T_ROWS.replace(" t", " t_back")), want);
    assert_eq!(
        source.psql("SELECT string_agg(indexname, ',') FROM pg_indexes WHERE tablename = 't_back'"),
        "t_pkey_back"
    );
    source.psql("DELETE FROM t_back WHERE id = 1");
    let kept = source.psql(&T_ROWS.replace(" t", " t_back"));
    dump(&repo, &into)
        .assert_exit(2)
        .assert_mentions("public.t_back");
    assert_eq!(source.psql(&T_ROWS.replace(" t", " t_back")), kept);

    // Unknown names: exit 4 naming them, nothing left mounted, no output file.
    let missing = work.join("missing.sql");
    let run = dump(
        &repo,
        &[
            "--target-time",
            &before,
            "--dbname",
            "postgres",
            "--table",
            "no_such_table",
            "-f",
            missing.to_str().unwrap(),
        ],
    )
    .assert_exit(4)
    .assert_mentions("no_such_table");
    assert!(!Path::new(&missing).exists(), "{}", run.report());
    assert_eq!(dump_mounts(), Vec::<String>::new());
    dump(
        &repo,
        &[
            "--target-time",
            &before,
            "--dbname",
            "no_such_db",
            "--table",
            "t",
        ],
    )
    .assert_exit(4)
    .assert_mentions("no_such_db");
    assert_eq!(dump_mounts(), Vec::<String>::new());

    // SIGTERM while pg_dump runs, held by a stdout pipe nobody reads: exit 143 once the
    // server is stopped, nothing left mounted, the work directory gone.
    let mut child = Command::new(pgsnapfs_bin())
        .args(repo.args(
            "dump",
            &[
                "--target-time",
                &before,
                "--dbname",
                "postgres",
                "-t",
                "big",
            ],
        ))
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let pid_file = format!("/tmp/pgsnapfs-dump-{pid}/data/postmaster.pid");
    wait_for(Duration::from_secs(120), || {
        match child_named(pid, "pg_dump") {
            true => Ok(()),
            false => Err("pg_dump has not started".to_string()),
        }
    })
    .unwrap();
    assert!(Path::new(&pid_file).exists(), "no server at {pid_file}");
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    wait_for(Duration::from_secs(60), || {
        match Path::new(&pid_file).exists() {
            false => Ok(()),
            true => Err("the server still runs".to_string()),
        }
    })
    .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    std::io::copy(&mut stdout, &mut std::io::sink()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{said}");
    assert_eq!(dump_mounts(), Vec::<String>::new());
    assert!(!Path::new(&format!("/tmp/pgsnapfs-dump-{pid}")).exists());
}

/// Whether process `parent` has a child running `name`.
fn child_named(parent: u32, name: &str) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten().any(|e| {
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        // pid (comm) state ppid ...
        let Some((comm, rest)) = stat.split_once(") ") else {
            return false;
        };
        let ppid = rest.split(' ').nth(1).and_then(|p| p.parse::<u32>().ok());
        comm.ends_with(&format!("({name}")) && ppid == Some(parent)
    })
}

/// PostgreSQL 13, an npm build of the server alone: dump takes Debian's newer pg_dump.
#[test]
fn a_server_without_client_programs_is_dumped_by_a_newer_pg_dump() {
    let bin = server_bin(13);
    assert!(
        !bin.join("pg_dump").exists(),
        "the npm build has a pg_dump now"
    );
    dump_a_table_on(13);
}

/// PostgreSQL 18, newer than Debian's clients: its own pg_dump (scripts/test links 18's
/// client programs beside its server).
#[test]
fn a_server_newer_than_debian_s_clients_is_dumped_by_its_own_pg_dump() {
    dump_a_table_on(18);
}

/// A table as it was before a TRUNCATE, dumped from a `major` cluster in custom format,
/// loads into a fresh database with exactly the rows at the target.
fn dump_a_table_on(major: u32) {
    let repo = Repo::init();
    let bin = server_bin(major);
    let source = Cluster::start_new(ClusterOptions {
        server_bin: Some(bin.clone()),
        ..ClusterOptions::archiving_to(&repo.spec)
    });
    source.psql(
        "CREATE TABLE t(id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, 'base-' || g FROM generate_series(1, 200) g;",
    );
    repo.backup(&source);
    source.psql("UPDATE t SET v = 'replayed-' || id WHERE id % 2 = 0");
    let want = source.psql(T_ROWS);
    let at = source.now();
    std::thread::sleep(Duration::from_millis(1100));
    source.psql("TRUNCATE t");
    source.switch_wal_and_wait_archived();
    let work = TestDir::new(&format!("dump{major}"));
    let file = work.join("t.dump");
    dump(
        &repo,
        &[
            "--target-time",
            &at,
            "--dbname",
            "postgres",
            "-t",
            "t",
            "--format",
            "custom",
            "--pg-bin",
            bin.to_str().unwrap(),
            "-f",
            file.to_str().unwrap(),
        ],
    )
    .assert_ok();
    chown_to_postgres(&file);
    source.psql("CREATE DATABASE fresh");
    // An archive loads with a pg_restore at least as new as the pg_dump that wrote it.
    let pg_restore = Some(bin.join("pg_restore"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| pg_tool("pg_restore"));
    run_command(
        postgres_command(pg_restore)
            .arg("-h")
            .arg(&source.sock)
            .args(["-p", &source.port.to_string(), "-d", "fresh"])
            .arg(&file),
    )
    .assert_ok();
    assert_eq!(source.psql_db("fresh", T_ROWS), want);
    assert_eq!(dump_mounts(), Vec::<String>::new());
}
