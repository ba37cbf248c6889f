//! `pgsnapfs clone create --hydrate` and `clone detach`, against real PostgreSQL and real
//! FUSE: one source cluster and one hydrating clone. Its mount process is killed with
//! kill -9 mid-hydration and `clone mount` resumes; a server runs a write workload on it
//! while hydration goes on; once hydration completes, the clone is detached into a plain
//! data directory, which starts with no FUSE mount and holds every acknowledged commit.

mod common;

use common::cluster::Cluster;
use common::*;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

const TXNS: u32 = 1500;

struct Clones<'a> {
    repo: &'a Repo,
    dir: PathBuf,
}

impl Clones<'_> {
    fn run(&self, args: &[&str]) -> Run {
        let mut all = vec!["--clones-dir", self.dir.to_str().unwrap()];
        all.extend_from_slice(args);
        pgsnapfs_as_root(&self.repo.args("clone", &all))
    }

    /// The one clone's hydration progress in `clone list --json`.
    fn hydration(&self) -> serde_json::Value {
        let list = self.run(&["list", "--json"]).assert_ok().json();
        assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
        list[0]["hydration"].clone()
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

fn mount_pid(run: &Run) -> u32 {
    let out = run.stdout_str();
    let pid = out
        .split("(process ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|pid| pid.parse().ok());
    pid.unwrap_or_else(|| panic!("no mount process in:\n{out}"))
}

fn hydrated(h: &serde_json::Value) -> u64 {
    h["hydrated"].as_u64().unwrap_or(0)
}

/// Each transaction inserts row `i` and adds 1 to one account: rows 1..=n, balances sum n.
fn workload_script(dir: &TestDir) -> PathBuf {
    let mut sql = String::new();
    for i in 1..=TXNS {
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
    let script = workload_script(&work);
    let mut psql = postgres_command(pg_tool("psql"))
        .args([
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            &server.conninfo(),
            "-f",
        ])
        .arg(&script)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
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
