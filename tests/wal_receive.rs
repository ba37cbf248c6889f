//! `pgsnapfs wal-receive` (issue 17, item 4): WAL streamed into the repository with the
//! replication protocol is restorable up to the last commit the server acknowledged.
//!
//! One primary lives through: an asynchronous receiver whose stored position follows a commit
//! within the flush interval; that receiver killed while the slot keeps the WAL; a second,
//! synchronous receiver that starts where the repository ends; a commit acknowledged by it,
//! then kill -9 of both the primary and the receiver; a restore to the end shows every row,
//! and one to a time inside the streamed part of the last segment the rows until then; `info`
//! says how far the streamed WAL reaches and `check` names a damaged piece. A failover is
//! followed into a repository that holds another cluster too. On S3, a resume point the server
//! no longer has ends the receiver (exit 4) unless `--accept-gap`, and expire removes the
//! pieces retention no longer keeps.

mod common;

use common::*;
use pgsnapfs::archive::{self, System};
use pgsnapfs::catalog::{keys, SystemId};
use pgsnapfs::store::backend::LocalBackend;
use pgsnapfs::store::Repository;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Every row of `t`, as one comparable string.
const ROWS: &str = "SELECT string_agg(v, ',' ORDER BY id) FROM t";
const FLUSH_INTERVAL: Duration = Duration::from_secs(2);

/// A running `wal-receive`, killed (SIGKILL) when dropped.
struct Receiver {
    child: Child,
    log: std::path::PathBuf,
}

impl Receiver {
    fn start(repo: &Repo, c: &Cluster, log: std::path::PathBuf, extra: &[&str]) -> Receiver {
        let port = c.port.to_string();
        let mut args = vec![
            "-h",
            c.sock.to_str().unwrap(),
            "-p",
            &port,
            "-U",
            "postgres",
        ];
        args.extend_from_slice(extra);
        Receiver::start_with(repo, log, &args)
    }

    fn start_with(repo: &Repo, log: std::path::PathBuf, args: &[&str]) -> Receiver {
        let mut all = vec!["-v"];
        all.extend_from_slice(args);
        let args = repo.args("wal-receive", &all);
        let file = std::fs::File::create(&log).unwrap();
        let child = pgsnapfs_command(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .spawn()
            .expect("start wal-receive");
        Receiver { child, log }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until the receiver has reported position `lsn` as stored (flush_lsn is what it
/// reports only once the repository holds the WAL); returns how long that took.
fn wait_stored(c: &Cluster, r: &Receiver, lsn: &str) -> Duration {
    let start = Instant::now();
    wait_for(Duration::from_secs(60), || {
        let row = c.psql(&format!(
            "SELECT coalesce((SELECT flush_lsn >= '{lsn}' FROM pg_stat_replication \
             WHERE application_name = 'pgsnapfs'), false)"
        ));
        (row == "t").then_some(()).ok_or(row)
    })
    .unwrap_or_else(|e| panic!("{e}\n--- wal-receive ---\n{}", r.log()));
    start.elapsed()
}

/// "16/B3000028" as a number.
fn lsn_bytes(lsn: &str) -> u64 {
    let (hi, lo) = lsn.split_once('/').unwrap();
    u64::from_str_radix(hi, 16).unwrap() << 32 | u64::from_str_radix(lo, 16).unwrap()
}

#[test]
fn streamed_wal_restores_to_the_last_acknowledged_commit() {
    let started = Instant::now();
    let repo = Repo::init();
    let work = TestDir::new("receive");
    let c = Cluster::start_new(ClusterOptions::default());
    c.psql("CREATE TABLE t (id serial PRIMARY KEY, v text)");
    let mut r = Receiver::start(
        &repo,
        &c,
        work.join("receive1.log"),
        &[
            "--slot",
            "pgsnapfs",
            "--create-slot",
            "--flush-interval",
            "2s",
        ],
    );
    repo.backup(&c);

    // Asynchronous: a commit is in the repository within the flush interval.
    c.psql("INSERT INTO t (v) VALUES ('async')");
    let lsn = c.psql("SELECT pg_current_wal_lsn()");
    let took = wait_stored(&c, &r, &lsn);
    assert!(
        took <= FLUSH_INTERVAL + Duration::from_millis(1500),
        "stored after {took:?}, flush interval {FLUSH_INTERVAL:?}"
    );

    // The receiver is down: the slot keeps the WAL it has not stored, a segment included.
    r.kill();
    c.psql("INSERT INTO t (v) SELECT 'down' FROM generate_series(1, 3)");
    c.switch_wal();
    c.psql("INSERT INTO t (v) VALUES ('down-after-switch')");
    assert_eq!(
        c.psql("SELECT active, restart_lsn <= '{lsn}' FROM pg_replication_slots WHERE slot_name = 'pgsnapfs'".replace("{lsn}", &lsn).as_str()),
        "f|t",
        "the slot holds the WAL the receiver has not stored"
    );

    // Synchronous: a commit returns only once the repository has it.
    c.psql("ALTER SYSTEM SET synchronous_standby_names = 'pgsnapfs'");
    c.psql("SELECT pg_reload_conf()");
    let mut r = Receiver::start(
        &repo,
        &c,
        work.join("receive2.log"),
        &["--slot", "pgsnapfs", "--synchronous"],
    );
    wait_for(Duration::from_secs(60), || {
        let s = c
            .psql("SELECT sync_state FROM pg_stat_replication WHERE application_name = 'pgsnapfs'");
        (s == "sync").then_some(()).ok_or(s)
    })
    .unwrap_or_else(|e| panic!("{e}\n--- wal-receive ---\n{}", r.log()));
    let before_last = c.psql("SELECT clock_timestamp()");
    c.psql("INSERT INTO t (v) VALUES ('last')");
    let acknowledged = c.psql(
        "SELECT flush_lsn - '0/0'::pg_lsn FROM pg_stat_replication \
         WHERE application_name = 'pgsnapfs'",
    );
    let pid = c.read_pid().expect("postmaster.pid");
    run_command(std::process::Command::new("kill").args(["-KILL", &pid.to_string()])).assert_ok();
    r.kill();
    let receiver_log = r.log();

    // info says up to where the repository holds streamed WAL beyond the archive.
    let info = repo.run("info", &["--json"]).assert_ok().json();
    let streamed = info["streamed_wal"].as_array().expect("streamed_wal");
    let newest = streamed.last().expect("a streamed segment");
    let through = lsn_bytes(newest["through"].as_str().unwrap());
    let acknowledged: u64 = acknowledged.parse().unwrap();
    assert!(
        through >= acknowledged,
        "info says streamed WAL up to {through:X}, the server saw {acknowledged:X} stored"
    );
    repo.run("info", &[]).assert_ok().assert_mentions(&format!(
        "streamed WAL beyond the archive up to {}",
        newest["through"].as_str().unwrap()
    ));

    // A restore to the end replays the streamed WAL, the last partial segment included.
    let to = work.join("restored");
    repo.restore(&to, &[]).assert_ok();
    let restored = Cluster::start_on(&to);
    restored.wait_until_paused_or_ready();
    assert_eq!(
        restored.psql(ROWS),
        "async,down,down,down,down-after-switch,last",
        "--- wal-receive ---\n{receiver_log}\n--- restored server ---\n{}",
        restored.log_tail(30)
    );
    drop(restored);

    // A point in time inside the streamed part of the last segment.
    let to = work.join("restored-to-time");
    repo.restore(&to, &["--target-time", &before_last])
        .assert_ok();
    let restored = Cluster::start_on(&to);
    restored.wait_until_paused_or_ready();
    assert_eq!(
        restored.psql(ROWS),
        "async,down,down,down,down-after-switch",
        "{}",
        restored.log_tail(30)
    );
    drop(restored);

    // check reads the pieces: a damaged one is corruption, named.
    repo.run("check", &["--read-data"]).assert_ok();
    let piece = repo.keys("walstream/").pop().expect("a piece");
    flip_byte(&repo.path.join(&piece), 40);
    repo.run("check", &["--read-data", "--full"])
        .assert_exit(3)
        .assert_mentions(&piece);
    eprintln!("wal_receive: {:?}", started.elapsed());
}

/// Failover: the receiver follows a promoted standby onto its new timeline, archives the
/// history file, and a restore along the latest timeline shows rows from both servers. The
/// primary's archive_command pushes into the same repository meanwhile, without conflict.
#[test]
fn follows_a_promoted_standby_onto_its_timeline() {
    let started = Instant::now();
    let repo = Repo::init();
    let work = TestDir::new("failover");
    // The primary also archives into the repository: both store the same segments.
    let mut primary = Cluster::start_new(ClusterOptions::archiving_to(&repo.spec));
    primary.psql("CREATE TABLE t (id serial PRIMARY KEY, v text)");
    let sysid = primary.psql("SELECT system_identifier FROM pg_control_system()");
    repo.backup(&primary);
    let standby_data = work.join("standby");
    mkdir_for_postgres(&standby_data, 0o700);
    let port = primary.port.to_string();
    run_command(
        postgres_command(pg_tool("pg_basebackup"))
            .arg("-h")
            .arg(&primary.sock)
            .args(["-p", &port, "-U", "postgres", "-R", "-X", "stream", "-D"])
            .arg(&standby_data),
    )
    .assert_ok();
    let standby = Cluster::start_on(&standby_data);
    let hosts = format!(
        "host={},{} port={},{} user=postgres",
        primary.sock.display(),
        standby.sock.display(),
        primary.port,
        standby.port
    );
    // The repository holds another cluster too: the history file the receiver archives has
    // no WAL header and no pg_control beside it, so it must say whose it is.
    let local = Repository::open(Arc::new(LocalBackend::open(&repo.path))).unwrap();
    archive::register_system(
        &local,
        &System {
            system_identifier: SystemId(1),
            pg_major: 15,
            wal_segment_size: 16 << 20,
            registered: chrono::Utc::now(),
        },
    )
    .unwrap();
    chown_to_postgres(&repo.path.join(keys::system(1)));
    let r = Receiver::start_with(
        &repo,
        work.join("receive.log"),
        &["-d", &hosts, "--flush-interval", "1s"],
    );

    primary.psql("INSERT INTO t (v) VALUES ('primary')");
    let lsn = primary.psql("SELECT pg_current_wal_lsn()");
    wait_stored(&primary, &r, &lsn);
    wait_for(Duration::from_secs(60), || {
        let n = standby.psql("SELECT count(*) FROM t");
        (n == "1").then_some(()).ok_or(n)
    })
    .unwrap();
    primary.switch_wal_and_wait_archived();
    primary.stop();
    standby.psql("SELECT pg_promote()");
    standby.psql("INSERT INTO t (v) VALUES ('promoted')");
    let lsn = standby.psql("SELECT pg_current_wal_lsn()");
    wait_stored(&standby, &r, &lsn);
    assert!(
        repo.keys("wal/")
            .iter()
            .any(|k| k.ends_with("/00000002.history")),
        "the new timeline's history file is archived"
    );
    // systemd stops it with SIGTERM: it stores what it has and exits 0.
    let mut r = r;
    assert!(
        r.child.try_wait().unwrap().is_none(),
        "wal-receive ended:\n{}",
        r.log()
    );
    run_command(std::process::Command::new("kill").args(["-TERM", &r.child.id().to_string()]))
        .assert_ok();
    let status = wait_for(Duration::from_secs(30), || {
        r.child.try_wait().unwrap().ok_or("running".to_string())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", r.log()));
    assert!(status.success(), "{status}\n{}", r.log());
    drop(r);

    let to = work.join("restored");
    repo.restore(&to, &["--target-timeline", "latest", "--system", &sysid])
        .assert_ok();
    let restored = Cluster::start_on(&to);
    restored.wait_until_paused_or_ready();
    assert_eq!(
        restored.psql(ROWS),
        "primary,promoted",
        "{}",
        restored.log_tail(30)
    );
    eprintln!("wal_receive failover: {:?}", started.elapsed());
}

/// Into S3: a receiver without a slot stores a commit; while it is down the server removes
/// the WAL after it, so a new receiver fails (exit 4) naming the gap and what to do, and one
/// with --accept-gap starts at the server's position. A restore replays the WAL up to the gap.
#[test]
fn streams_into_s3_and_refuses_a_gap() {
    let started = Instant::now();
    let repo = Repo::init_on(Store::S3);
    let work = TestDir::new("receive-s3");
    let c = Cluster::start_new(ClusterOptions {
        settings: vec![("wal_keep_size".into(), "0".into())],
        ..ClusterOptions::default()
    });
    c.psql("CREATE TABLE t (id serial PRIMARY KEY, v text)");
    // The backup first: without a slot, its checkpoint may remove the segment a receiver
    // started before it is reading.
    repo.backup(&c);
    let mut r = Receiver::start(
        &repo,
        &c,
        work.join("receive1.log"),
        &["--flush-interval", "1s"],
    );
    c.psql("INSERT INTO t (v) VALUES ('one')");
    let lsn = c.psql("SELECT pg_current_wal_lsn()");
    wait_stored(&c, &r, &lsn);
    r.kill();

    // The server moves on and removes the segment the repository's WAL ends in.
    let gone = c.psql("SELECT pg_walfile_name(pg_current_wal_lsn())");
    c.psql("INSERT INTO t (v) VALUES ('lost')");
    for _ in 0..3 {
        c.switch_wal();
    }
    c.psql("CHECKPOINT");
    assert_eq!(
        c.psql(&format!(
            "SELECT count(*) FROM pg_ls_waldir() WHERE name = '{gone}'"
        )),
        "0"
    );
    let mut r = Receiver::start(&repo, &c, work.join("receive2.log"), &[]);
    let status = wait_for(Duration::from_secs(60), || {
        r.child.try_wait().unwrap().ok_or("running".to_string())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", r.log()));
    assert_eq!(status.code(), Some(4), "{}", r.log());
    for needle in ["no longer has the WAL", "--accept-gap", "new backup", &gone] {
        assert!(r.log().contains(needle), "{needle}: {}", r.log());
    }

    let r = Receiver::start(
        &repo,
        &c,
        work.join("receive3.log"),
        &["--accept-gap", "--flush-interval", "1s"],
    );
    c.psql("INSERT INTO t (v) VALUES ('after-gap')");
    let lsn = c.psql("SELECT pg_current_wal_lsn()");
    wait_stored(&c, &r, &lsn);
    drop(r);
    let info = repo.run("info", &["--json"]).assert_ok().json();
    let newest = info["streamed_wal"]
        .as_array()
        .and_then(|s| s.last().cloned())
        .expect("a streamed segment");
    assert!(lsn_bytes(newest["through"].as_str().unwrap()) >= lsn_bytes(&lsn));

    let to = work.join("restored");
    repo.restore(&to, &[]).assert_ok();
    let restored = Cluster::start_on(&to);
    restored.wait_until_paused_or_ready();
    assert_eq!(restored.psql(ROWS), "one", "{}", restored.log_tail(30));
    drop(restored);

    // A backup after the gap, and expire keeps only it: the pieces of the segment before the
    // gap go with the WAL retention no longer keeps.
    let kept = repo.backup(&c);
    let kept_from = c.psql(&format!(
        "SELECT pg_walfile_name('{}')",
        kept["start_lsn"].as_str().unwrap()
    ));
    let streamed = |repo: &Repo| -> Vec<String> {
        let mut segments: Vec<String> = repo
            .keys("walstream/")
            .iter()
            .filter_map(|k| k.rsplit('/').nth(1).map(String::from))
            .collect();
        segments.dedup();
        segments
    };
    let before = streamed(&repo);
    assert!(
        before.contains(&gone),
        "{before:?}\n--- first receiver ---\n{}",
        std::fs::read_to_string(work.join("receive1.log")).unwrap_or_default()
    );
    let expired = repo
        .run("expire", &["--keep-last", "1", "--json"])
        .assert_ok()
        .json();
    let after = streamed(&repo);
    assert!(
        !after.contains(&gone) && after.iter().all(|s| *s >= kept_from),
        "streamed segments {before:?} before expire, {after:?} after; the kept backup starts \
         in {kept_from}\n{expired}"
    );
    repo.run("check", &[]).assert_ok();
    eprintln!("wal_receive s3: {:?}", started.elapsed());
}
