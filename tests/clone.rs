//! `pgsnapfs clone`: a persistent writable clone of a backup, against real PostgreSQL and
//! real FUSE. One source cluster and one clone, through the clone's whole life: a workload
//! whose acknowledged commits must survive kill -9 of the server and of the mount process,
//! unmount and mount, gc and expire while it is not mounted, reset, destroy. A hydrating
//! clone whose mount process is killed mid-hydration resumes, runs a workload while it
//! hydrates, and is detached into a plain data directory that starts with no FUSE mount and
//! holds every acknowledged commit. Followers, ten clones at once, bad requests.

mod common;

use common::cluster::Cluster;
use common::*;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// Transactions in the workload script; the crash comes after `KILL_AFTER` acknowledged.
const TXNS: u32 = 3000;
/// Transactions of the workload on a hydrating clone.
const HYDRATE_TXNS: u32 = 1500;
const KILL_AFTER: u32 = 400;

struct Clones<'a> {
    repo: &'a Repo,
    dir: PathBuf,
}

impl Clones<'_> {
    /// `pgsnapfs clone --clones-dir DIR ARGS...` as root (FUSE needs it).
    fn run(&self, args: &[&str]) -> Run {
        let mut all = vec!["--clones-dir", self.dir.to_str().unwrap()];
        all.extend_from_slice(args);
        pgsnapfs_as_root(&self.repo.args("clone", &all))
    }

    fn data(&self, name: &str) -> PathBuf {
        self.dir.join(name).join("data")
    }

    /// The one clone of `clone list --json`.
    fn listed(&self) -> serde_json::Value {
        let list = self.run(&["list", "--json"]).assert_ok().json();
        assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
        list[0].clone()
    }

    /// The one clone's hydration progress in `clone list --json`.
    fn hydration(&self) -> serde_json::Value {
        self.listed()["hydration"].clone()
    }

    /// Waits until hydration satisfies `done`; returns the progress then.
    fn wait_hydration(&self, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        wait_for(Duration::from_secs(240), || {
            let h = self.hydration();
            match done(&h) {
                true => Ok(h),
                false => Err(format!("hydration at {h}")),
            }
        })
        .unwrap()
    }
}

/// The mount process's PID from the `(process N)` that create and mount print.
fn mount_pid(run: &Run) -> u32 {
    let out = run.stdout_str();
    let pid = out
        .split("(process ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|pid| pid.parse().ok());
    pid.unwrap_or_else(|| panic!("no mount process in:\n{out}"))
}

fn kill9(pid: u32) {
    // SAFETY: sending a signal.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
}

/// kill -9 of a postmaster and of every process it started, then waits for them to be gone
/// (backends left attached to its shared memory would stop the next start).
fn kill_server(pid: u32) {
    let children: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|st| {
                st.rsplit(')')
                    .next()
                    .and_then(|rest| rest.split_whitespace().nth(1))
                    == Some(&pid.to_string())
            })
        })
        .collect();
    for p in std::iter::once(pid).chain(children.iter().copied()) {
        kill9(p);
    }
    // Gone for good, reaped: PostgreSQL takes a zombie's PID in postmaster.pid for a
    // running server.
    for p in std::iter::once(pid).chain(children) {
        wait_for(Duration::from_secs(30), || {
            match Path::new(&format!("/proc/{p}")).exists() {
                false => Ok(()),
                true => Err(format!("process {p} still exists")),
            }
        })
        .unwrap();
    }
}

/// Starts a server on the clone's data directory and waits until it takes writes.
fn start(data: &Path) -> Cluster {
    let c = Cluster::start_on(data);
    assert_eq!(
        c.wait_until_paused_or_ready(),
        cluster::RecoveryState::Ready,
        "{}",
        c.log_tail(40)
    );
    c
}

/// The workload: each transaction inserts row `i` and adds 1 to one account, so the rows
/// are 1..=n without a hole and the balances sum to n; a checkpoint every 100 makes the
/// server fsync data files through the mount. Returns the script's path.
fn workload_script(dir: &TestDir, txns: u32) -> PathBuf {
    let mut sql = String::new();
    for i in 1..=txns {
        sql += &format!(
            "BEGIN; INSERT INTO w VALUES ({i}, repeat('w', 300)); \
             UPDATE acct SET bal = bal + 1 WHERE id = {}; COMMIT;\n",
            i % 50
        );
        if i % 100 == 0 {
            sql += "CHECKPOINT;\n";
        }
    }
    let path = dir.join("workload.sql");
    std::fs::write(&path, sql).unwrap();
    path
}

/// psql running `script` on `server`, its output (a line per statement, `COMMIT` for each
/// acknowledged commit) on a pipe.
fn run_script(server: &Cluster, script: &Path) -> std::process::Child {
    postgres_command(pg_tool("psql"))
        .args([
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            &server.conninfo(),
            "-f",
        ])
        .arg(script)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Every btree index of the database passes amcheck, heap included.
fn assert_amcheck_clean(c: &Cluster) {
    c.psql("CREATE EXTENSION IF NOT EXISTS amcheck");
    let checked = c.psql(
        "SELECT count(bt_index_check(i.indexrelid, true)) FROM pg_index i \
         JOIN pg_class r ON r.oid = i.indexrelid JOIN pg_am a ON a.oid = r.relam \
         WHERE a.amname = 'btree' AND r.relpersistence = 'p'",
    );
    assert!(
        checked.parse::<u32>().unwrap() > 10,
        "{checked} indexes checked"
    );
}

#[test]
fn a_clone_keeps_its_writes_through_crashes_unmounts_gc_and_expire() {
    let started = std::time::Instant::now();
    let repo = Repo::init();
    let source = Cluster::archiving_to(&repo.spec);
    source.psql(
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 5000) g;
         CREATE TABLE untouched AS SELECT g AS id, repeat('u', 200) AS v
           FROM generate_series(1, 3000) g;
         CREATE INDEX ON untouched (id);",
    );
    let first = repo.backup(&source);
    let first_id = first["id"].as_str().unwrap().to_string();

    let work = TestDir::new("clone");
    let clones = Clones {
        repo: &repo,
        dir: work.join("clones"),
    };
    let created = clones
        .run(&[
            "create",
            "dev",
            "--backup",
            "latest",
            "--shared-buffers",
            "64MB",
        ])
        .assert_ok();
    let data = clones.data("dev");
    assert!(
        created.stdout_str().contains(data.to_str().unwrap()),
        "{}",
        created.report()
    );
    assert!(
        created.stdout_str().contains("pg_ctl -D"),
        "{}",
        created.report()
    );
    let listed = clones.listed();
    assert_eq!(listed["mounted"], "yes", "{listed}");
    assert_eq!(listed["backup"], first_id.as_str());

    // First start: recovery to the backup, promoted; fsync is on.
    let server = start(&data);
    assert_eq!(server.psql("SHOW fsync"), "on");
    let listed = clones.listed();
    assert_eq!(listed["server_pid"], server.read_pid().unwrap(), "{listed}");
    assert_eq!(server.psql("SELECT count(*) FROM t"), "5000");
    server.psql(
        "CREATE TABLE w (id int PRIMARY KEY, pad text);
         CREATE TABLE acct (id int PRIMARY KEY, bal int NOT NULL);
         INSERT INTO acct SELECT g, 0 FROM generate_series(0, 49) g;",
    );

    // The workload, killed with the mount process mid-run.
    let script = workload_script(&work, TXNS);
    let mut psql = run_script(&server, &script);
    let mut acked = 0;
    let mut killed = false;
    let server_pid = server.read_pid().unwrap();
    for line in BufReader::new(psql.stdout.take().unwrap()).lines() {
        if line.unwrap() == "COMMIT" {
            acked += 1;
        }
        if acked == KILL_AFTER && !killed {
            kill9(mount_pid(&created));
            kill_server(server_pid);
            killed = true;
        }
    }
    let _ = psql.wait();
    assert!(
        killed && acked < TXNS,
        "the workload ended ({acked}) before the crash"
    );
    drop(server);
    assert_eq!(clones.listed()["mounted"], "stale");

    // Mounted again over the stale mount: crash recovery, every acknowledged commit there.
    let mounted = clones.run(&["mount", "dev"]).assert_ok();
    let server = start(&data);
    let (rows, max, sum) = {
        let row = server.psql("SELECT count(*), max(id), (SELECT sum(bal) FROM acct) FROM w");
        let v: Vec<u32> = row.split('|').map(|x| x.parse().unwrap()).collect();
        (v[0], v[1], v[2])
    };
    assert!(rows >= acked, "{rows} rows, {acked} commits acknowledged");
    eprintln!("{acked} commits acknowledged before the crash, {rows} recovered");
    assert_eq!(
        (max, sum),
        (rows, rows),
        "rows 1..={rows} and balances sum to it"
    );
    assert_amcheck_clean(&server);
    server.psql("INSERT INTO w VALUES (-1, 'after the crash')");

    // Stop, unmount, mount, start: still there.
    let mut server = server;
    server.stop();
    drop(server);
    clones.run(&["umount", "dev"]).assert_ok();
    assert!(mount::pid_gone(mount_pid(&mounted)));
    assert_eq!(clones.listed()["mounted"], "no");
    assert!(clones.listed()["bytes_written"].as_u64().unwrap() > 1 << 20);

    // Meanwhile the source moves on; expire and gc run while the clone is not mounted.
    source.psql("DROP TABLE untouched; CREATE TABLE later AS SELECT 1 AS x");
    repo.backup(&source);
    let expired = repo.run("expire", &["--keep-last", "1"]).assert_ok();
    assert!(
        expired.stdout_str().contains("clone dev"),
        "expire does not say it keeps the clone's backup:\n{}",
        expired.report()
    );
    repo.run("gc", &[]).assert_ok();
    assert!(repo.list().iter().any(|b| b["id"] == first_id.as_str()));

    let mounted = clones.run(&["mount", "dev"]).assert_ok();
    let mut server = start(&data);
    assert_eq!(server.psql("SELECT count(*) FROM w WHERE id = -1"), "1");
    assert_eq!(
        server.psql("SELECT count(*) FROM w"),
        (rows + 1).to_string()
    );
    // Never read before gc: its pages come from the backup's chunks.
    assert_eq!(
        server.psql("SELECT count(*), sum(length(v)) FROM untouched"),
        "3000|600000"
    );
    assert_amcheck_clean(&server);

    // Reset: the backup's rows, none of the clone's.
    server.stop();
    drop(server);
    clones.run(&["reset", "dev"]).assert_failed();
    clones.run(&["umount", "dev"]).assert_ok();
    assert!(mount::pid_gone(mount_pid(&mounted)));
    clones.run(&["reset", "dev"]).assert_ok();
    clones.run(&["mount", "dev"]).assert_ok();
    let server = start(&data);
    assert_eq!(server.psql("SELECT count(*) FROM t"), "5000");
    assert_eq!(server.psql("SELECT to_regclass('w') IS NULL"), "t");

    // Destroy: unmounted, gone, its lease released; then expire lets the backup go.
    let mut server = server;
    server.stop();
    drop(server);
    let lease = clones.listed()["lease"].as_str().unwrap().to_string();
    clones.run(&["destroy", "dev"]).assert_ok();
    assert!(!clones.dir.join("dev").exists());
    let locks = repo.run("locks", &["--json"]).assert_ok().stdout_str();
    assert!(!locks.contains(&lease), "lease {lease} left:\n{locks}");
    clones.run(&["list", "--json"]).assert_ok();
    repo.run("expire", &["--keep-last", "1"]).assert_ok();
    assert!(!repo.list().iter().any(|b| b["id"] == first_id.as_str()));
    eprintln!("clone life cycle took {:?}", started.elapsed());
}

/// A follower replays what the primary archives as it comes; promoted, it takes writes, and
/// stays promoted through unmount and mount.
#[test]
fn a_follower_follows_the_archive_until_promoted() {
    let started = std::time::Instant::now();
    let repo = Repo::init();
    let source = Cluster::archiving_to(&repo.spec);
    source.psql("CREATE TABLE f AS SELECT generate_series(1, 10) AS n");
    repo.backup(&source);
    let work = TestDir::new("clone-follow");
    let clones = Clones {
        repo: &repo,
        dir: work.join("clones"),
    };
    clones
        .run(&[
            "create",
            "rep",
            "--follow",
            "--target-time",
            "2026-01-01 00:00:00+00",
        ])
        .assert_exit(2)
        .assert_mentions("follower");
    clones
        .run(&[
            "create",
            "rep",
            "--follow",
            "--backup",
            "latest",
            "--shared-buffers",
            "64MB",
        ])
        .assert_ok();
    let data = clones.data("rep");
    let server = Cluster::start_on(&data);
    assert_eq!(server.psql("SELECT pg_is_in_recovery()"), "t");
    assert_eq!(server.psql("SELECT count(*) FROM f"), "10");
    assert_eq!(clones.listed()["following"], true);

    // New commits on the primary reach the follower once archived.
    source.psql("INSERT INTO f SELECT generate_series(11, 15)");
    source.switch_wal_and_wait_archived();
    wait_for(Duration::from_secs(60), || {
        match server.psql("SELECT count(*) FROM f").as_str() {
            "15" => Ok(()),
            n => Err(format!("{n} rows on the follower")),
        }
    })
    .unwrap();
    // Caught up: it waits for the segment after the newest archived one.
    let lag = wait_for(Duration::from_secs(30), || {
        let lag = clones.listed()["lag"].clone();
        match lag["segments_behind"].as_u64() {
            Some(0) => Ok(lag),
            _ => Err(format!("lag {lag}")),
        }
    })
    .unwrap();
    assert_eq!(lag["waiting"], true, "{lag}");

    clones.run(&["promote", "rep"]).assert_ok();
    wait_for(Duration::from_secs(60), || {
        match server.psql("SELECT pg_is_in_recovery()").as_str() {
            "f" => Ok(()),
            r => Err(format!("in recovery: {r}")),
        }
    })
    .unwrap();
    server.psql("INSERT INTO f VALUES (100)");
    assert_eq!(clones.listed()["following"], false);
    clones.run(&["promote", "rep"]).assert_exit(2);

    let mut server = server;
    server.stop();
    drop(server);
    clones.run(&["umount", "rep"]).assert_ok();
    clones.run(&["mount", "rep"]).assert_ok();
    let server = start(&data);
    assert_eq!(server.psql("SELECT count(*) FROM f"), "16");
    let mut server = server;
    server.stop();
    drop(server);
    clones.run(&["destroy", "rep"]).assert_ok();
    eprintln!("follower took {:?}", started.elapsed());
}

/// The resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with("VmRSS:"));
    line.and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// Ten clones of one backup at once, each with a running server that writes: gc and
/// expire meanwhile delete nothing they need, and each sees the backup and its own writes.
#[test]
fn ten_clones_of_one_backup_run_at_once_through_gc_and_expire() {
    const N: usize = 10;
    let started = std::time::Instant::now();
    let repo = Repo::init();
    let source = Cluster::archiving_to(&repo.spec);
    source.psql(
        "CREATE TABLE t AS SELECT g AS id, repeat('t', 200) AS v FROM generate_series(1, 20000) g",
    );
    let first = repo.backup(&source)["id"].as_str().unwrap().to_string();
    let work = TestDir::new("clone-ten");
    let clones = Clones {
        repo: &repo,
        dir: work.join("clones"),
    };
    let mut servers = Vec::new();
    let mut mounts = Vec::new();
    let mut first_query = Vec::new();
    for i in 0..N {
        let name = format!("dev{i}");
        let t0 = std::time::Instant::now();
        let run = clones
            .run(&[
                "create",
                &name,
                "--backup",
                "latest",
                "--shared-buffers",
                "32MB",
            ])
            .assert_ok();
        mounts.push(mount_pid(&run));
        let server = start(&clones.data(&name));
        assert_eq!(server.psql("SELECT count(*) FROM t WHERE id = 1"), "1");
        first_query.push(t0.elapsed().as_millis());
        server.psql(&format!(
            "CREATE TABLE mine AS SELECT {i} AS who; UPDATE t SET v = 'x' WHERE id % 10 = {i}"
        ));
        servers.push(server);
    }
    // The source moves on and retention runs while every clone is in use.
    source.psql("DELETE FROM t WHERE id > 100");
    repo.backup(&source);
    let expired = repo.run("expire", &["--keep-last", "1"]).assert_ok();
    assert_eq!(
        expired.stdout_str().matches("clone dev").count(),
        N,
        "every clone's lease keeps the backup:\n{}",
        expired.report()
    );
    repo.run("gc", &[]).assert_ok();
    assert!(repo.list().iter().any(|b| b["id"] == first.as_str()));
    let listed = clones.run(&["list", "--json"]).assert_ok().json();
    let written: Vec<u64> = (0..N)
        .map(|i| listed[i]["bytes_written"].as_u64().unwrap())
        .collect();
    let rss: Vec<u64> = mounts.iter().map(|&p| rss_kib(p)).collect();
    for (i, server) in servers.iter().enumerate() {
        assert_eq!(
            server.psql(
                "SELECT (SELECT who FROM mine), count(*), count(*) FILTER (WHERE v = 'x') FROM t"
            ),
            format!("{i}|20000|2000"),
        );
    }
    for mut server in servers {
        server.stop();
    }
    for i in 0..N {
        clones.run(&["destroy", &format!("dev{i}")]).assert_ok();
    }
    eprintln!(
        "{N} clones took {:?}; create to first query (ms): {first_query:?}; written per \
         clone (KiB): {:?}; mount RSS (KiB): {:?}",
        started.elapsed(),
        written.iter().map(|b| b / 1024).collect::<Vec<_>>(),
        rss
    );
}

#[test]
fn bad_clone_requests_say_what_is_wrong() {
    let repo = Repo::init();
    let source = Cluster::archiving_to(&repo.spec);
    repo.backup(&source);
    let work = TestDir::new("clone-bad");
    let clones = Clones {
        repo: &repo,
        dir: work.join("clones"),
    };
    clones
        .run(&["create", "a/b", "--backup", "latest"])
        .assert_exit(2)
        .assert_mentions("not a clone name");
    clones
        .run(&["create", "x"])
        .assert_exit(2)
        .assert_mentions("fixed point");
    clones
        .run(&["create", "x", "--backup", "20000101T000000Z"])
        .assert_failed()
        .assert_mentions("not found");
    clones.run(&["mount", "nope"]).assert_exit(4);
    clones.run(&["destroy", "nope"]).assert_exit(4);
    let locks = repo.run("locks", &["--json"]).assert_ok().json();
    assert_eq!(locks.as_array().map(Vec::len), Some(0), "{locks}");
    let _ = std::io::stdout().flush();
}

fn hydrated(h: &serde_json::Value) -> u64 {
    h["hydrated"].as_u64().unwrap_or(0)
}

#[test]
fn a_hydrated_clone_resumes_after_kill_and_detaches_into_a_plain_cluster() {
    let started = std::time::Instant::now();
    let repo = Repo::init();
    let source = Cluster::archiving_to(&repo.spec);
    source.psql(
        "CREATE TABLE big AS SELECT g AS id, repeat(md5(g::text), 8) AS v
           FROM generate_series(1, 40000) g;
         CREATE INDEX ON big (id);",
    );
    repo.backup(&source);
    let work = TestDir::new("clone-hydrate");
    let clones = Clones {
        repo: &repo,
        dir: work.join("clones"),
    };
    let data = clones.dir.join("h").join("data");
    // Slow enough to be caught mid-way, fast enough for CI.
    let created = clones
        .run(&[
            "create",
            "h",
            "--backup",
            "latest",
            "--shared-buffers",
            "64MB",
            "--hydrate",
            "--hydrate-rate",
            "4M",
        ])
        .assert_ok();
    let to = work.join("detached");

    // Mid-hydration: detach refuses, saying how far it is; then kill -9 of the mount.
    let partway = clones.wait_hydration(|h| hydrated(h) > 0);
    assert_eq!(partway["complete"], false, "{partway}");
    let refused = clones
        .run(&["detach", "h", "--to", to.to_str().unwrap()])
        .assert_exit(2);
    assert!(
        refused.stderr_str().contains("not fully hydrated"),
        "{}",
        refused.report()
    );
    // SAFETY: sending a signal.
    unsafe { libc::kill(mount_pid(&created) as libc::pid_t, libc::SIGKILL) };
    wait_for(Duration::from_secs(30), || {
        match mount::pid_gone(mount_pid(&created)) {
            true => Ok(()),
            false => Err("mount process alive".to_string()),
        }
    })
    .unwrap();

    // Mounted again: hydration resumes while a server writes.
    let mounted = clones.run(&["mount", "h"]).assert_ok();
    let server = Cluster::start_on(&data);
    assert_eq!(
        server.wait_until_paused_or_ready(),
        cluster::RecoveryState::Ready
    );
    assert_eq!(server.psql("SELECT count(*) FROM big"), "40000");
    server.psql(
        "CREATE TABLE w (id int PRIMARY KEY, pad text);
         CREATE TABLE acct (id int PRIMARY KEY, bal int NOT NULL);
         INSERT INTO acct SELECT g, 0 FROM generate_series(0, 49) g;",
    );
    let script = workload_script(&work, HYDRATE_TXNS);
    let mut psql = run_script(&server, &script);
    let mut acked = 0;
    let mut during = None;
    for line in BufReader::new(psql.stdout.take().unwrap()).lines() {
        if line.unwrap() == "COMMIT" {
            acked += 1;
        }
        if acked == 10 && during.is_none() {
            during = Some(clones.hydration());
        }
    }
    assert!(psql.wait().unwrap().success());
    let during = during.unwrap();
    eprintln!("hydration while the workload ran: {during}");
    let done = clones.wait_hydration(|h| h["complete"] == true);
    assert_eq!(hydrated(&done), done["total"].as_u64().unwrap());
    // The resumed pass copied only what the killed one had left.
    let total = done["total"].as_u64().unwrap();
    let copied = done["copied"].as_u64().unwrap();
    assert!(
        copied <= total - hydrated(&partway),
        "the resumed pass copied {copied} bytes; {partway} were hydrated before the kill"
    );
    let listed = clones.run(&["list"]).assert_ok();
    assert!(
        listed.stdout_str().contains("hydrated"),
        "{}",
        listed.report()
    );

    // Detach: refused while the server runs, done once it is stopped.
    clones
        .run(&["detach", "h", "--to", to.to_str().unwrap()])
        .assert_exit(2);
    let mut server = server;
    server.stop_mode("fast");
    drop(server);
    let detached = clones
        .run(&["detach", "h", "--to", to.to_str().unwrap()])
        .assert_ok();
    eprintln!("{}", detached.report());
    assert!(mount::pid_gone(mount_pid(&mounted)));
    assert!(!clones.dir.join("h").exists());
    let locks = repo.run("locks", &["--json"]).assert_ok().stdout_str();
    assert!(!locks.contains("clone h"), "lease left:\n{locks}");

    // A plain data directory: on the disk of its parent (no mount), no trace of pgsnapfs
    // but the restore_command, every acknowledged commit there.
    let dev = |p: &Path| std::fs::metadata(p).unwrap().dev();
    assert_eq!(dev(&to), dev(&work.join(".")));
    assert!(!std::fs::symlink_metadata(to.join("pg_wal"))
        .unwrap()
        .file_type()
        .is_symlink());
    let auto = std::fs::read_to_string(to.join("postgresql.auto.conf")).unwrap();
    for line in auto
        .lines()
        .filter(|l| l.contains("pgsnapfs") || l.contains("clones"))
    {
        assert!(
            line.starts_with('#') || line.starts_with("restore_command"),
            "{line}\n{auto}"
        );
    }
    let plain = Cluster::start_on(&to);
    assert_eq!(
        plain.wait_until_paused_or_ready(),
        cluster::RecoveryState::Ready,
        "{}",
        plain.log_tail(40)
    );
    let row = plain.psql("SELECT count(*), max(id), (SELECT sum(bal) FROM acct) FROM w");
    assert_eq!(row, format!("{acked}|{acked}|{acked}"));
    assert_eq!(plain.psql("SELECT count(*) FROM big"), "40000");
    assert_amcheck_clean(&plain);
    eprintln!("hydrate and detach took {:?}", started.elapsed());
}
