//! `pgsnapfs verify` (automated restore test) against real PostgreSQL and real FUSE: it
//! passes on a good backup, fails on a false assertion, and fails naming the problem when a
//! chunk a table needs is corrupt, while the mount answers EIO for that data and never
//! wrong bytes.
//!
//! verify and mount need root (FUSE), so they run as root here, not as postgres.

// This file uses only part of the harness's re-exports.
#[allow(unused_imports)]
mod common;

use common::*;
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const READY: &str = "pgsnapfs: mounted";
const MOUNT_TIMEOUT: Duration = Duration::from_secs(60);
const PAGE: usize = 8192;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `pgsnapfs verify --repo R --json ARGS...` as root.
fn verify(repo: &Repo, args: &[&str]) -> Run {
    let mut all = repo.args("verify", &["--json"]);
    all.extend(args.iter().map(|a| a.to_string()));
    pgsnapfs_as_root(&all)
}

/// An SQL assertions file readable by root.
fn sql_file(dir: &TestDir, name: &str, sql: &str) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, sql).unwrap();
    p
}

fn is_mounted(p: &Path) -> bool {
    fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .any(|m| Path::new(m) == p)
}

/// A read-only catalogue mount (`pgsnapfs mount --repo R DIR` in the foreground, as root).
/// Drop unmounts it (lazily if it must) and reaps the mount process.
struct Catalogue {
    dir: PathBuf,
    child: Child,
    log: PathBuf,
}

impl Catalogue {
    #[track_caller]
    fn mount(repo: &Repo, dir: &Path) -> Catalogue {
        let dir = fs::canonicalize(dir).unwrap();
        let log = dir.with_extension("mount.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgsnapfs"));
        cmd.args(repo.args("mount", &[s(&dir)]))
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&log).unwrap())
            .env_remove("PGSNAPFS_REPO");
        let mut child = cmd.spawn().unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if line.starts_with(READY) {
                    let _ = tx.send(true);
                }
            }
            let _ = tx.send(false);
        });
        let c = Catalogue { dir, child, log };
        let ready = rx.recv_timeout(MOUNT_TIMEOUT);
        assert!(
            matches!(ready, Ok(true)) && is_mounted(&c.dir),
            "catalogue mount at {} failed ({ready:?}):\n{}",
            c.dir.display(),
            fs::read_to_string(&c.log).unwrap_or_default()
        );
        c
    }
}

impl Drop for Catalogue {
    fn drop(&mut self) {
        if is_mounted(&self.dir) {
            let ok = pgsnapfs_as_root(&["umount", s(&self.dir)]).status.success();
            if !ok {
                let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
            }
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// verify passes on a good backup (exit 0, ok, tables read, indexes checked with amcheck, a
/// true assertion), and fails with exit 1 naming the statement when an assertion is false. On
/// S3 the second verify reads from the local disk cache.
fn verify_passes_good_backup_and_fails_false_assertion(store: Store) {
    let repo = Repo::init_on(store);
    let source = Cluster::archiving_to(&repo.spec);
    source.psql(
        "CREATE TABLE t(id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 100) g;
         CREATE INDEX t_v ON t(v);",
    );
    let id = json_str(&repo.backup(&source), "id");
    // Rows after the backup are not in the backup as it was taken.
    source.psql("INSERT INTO t VALUES (101, 'after')");
    source.switch_wal_and_wait_archived();

    let dir = TestDir::new("verify-sql");
    let good = sql_file(
        &dir,
        "good.sql",
        "-- the backup's rows\nSELECT count(*) = 100 FROM t;\nSELECT max(id) = 100\n  FROM t;\n",
    );
    let run = verify(&repo, &["--sql", s(&good)]).assert_exit(0);
    let report = run.json();
    let first = report.clone();
    assert_eq!(report["ok"], true, "{}", run.report());
    assert_eq!(json_str(&report, "backup"), id);
    assert!(json_u64(&report, "databases") >= 1, "{report}");
    assert!(json_u64(&report, "tables") > 0, "{report}");
    assert!(json_u64(&report, "indexes_checked") >= 2, "{report}");
    assert_eq!(report["amcheck"], true, "{report}");
    assert_eq!(json_u64(&report, "assertions"), 2, "{report}");
    assert!(problems(&report).is_empty(), "{report}");
    for phase in ["mount_s", "start_s", "recovery_s", "checks_s"] {
        assert!(
            report["phases"][phase].as_f64().is_some(),
            "phase {phase} missing: {report}"
        );
    }

    let bad = sql_file(
        &dir,
        "bad.sql",
        "SELECT count(*) = 100 FROM t;\nSELECT count(*) = 101 FROM t;\n",
    );
    let run = verify(&repo, &["--backup", &id, "--sql", s(&bad)]).assert_exit(1);
    let report = run.json();
    assert_eq!(report["ok"], false, "{}", run.report());
    assert_eq!(json_u64(&report, "assertions"), 2, "{report}");
    let p = problems(&report);
    assert_eq!(
        p.len(),
        1,
        "exactly the false assertion is a problem: {p:?}"
    );
    assert!(p[0].contains("count(*) = 101"), "{p:?}");

    if store == Store::S3 {
        // The second verify of the same backup reads its chunks from the local disk cache.
        let cache = |r: &serde_json::Value| {
            (
                json_u64(&r["disk_cache"], "hits"),
                json_u64(&r["disk_cache"], "misses"),
                json_u64(&r["requests"], "get"),
            )
        };
        let ((_, first_misses, first_gets), (hits, misses, gets)) = (cache(&first), cache(&report));
        assert!(
            first_misses > 0,
            "the first verify fetched nothing: {first}"
        );
        assert!(
            hits > 0 && misses * 10 <= hits,
            "second verify: {hits} chunks from the disk cache, {misses} fetched\n{report}"
        );
        assert!(
            gets * 2 < first_gets,
            "second verify sent {gets} GETs, the first {first_gets}\n{report}"
        );
    }
}

on_both_stores!(verify_passes_good_backup_and_fails_false_assertion);

/// A flipped byte in a chunk that a table needs: a fresh catalogue mount answers EIO for that
/// part of the relation file (and never different bytes), and verify --full exits 3 naming the table
/// or the I/O error. The repository is only read throughout.
#[test]
fn verify_and_mount_report_a_corrupt_chunk() {
    let repo = Repo::init();
    let mut source = Cluster::archiving_to(&repo.spec);
    // About 6 MB of barely compressible rows, so the table spans many chunks.
    source.psql(
        "CREATE TABLE precious(id int PRIMARY KEY, v text);
         INSERT INTO precious SELECT g, md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text)
           FROM generate_series(1, 50000) g;
         CHECKPOINT;",
    );
    let relpath = source.psql("SELECT pg_relation_filepath('precious')");
    let id = json_str(&repo.backup(&source), "id");
    source.switch_wal_and_wait_archived();
    source.stop();

    // Good before the damage.
    let run = verify(&repo, &[]).assert_exit(0);
    assert_eq!(run.json()["ok"], true, "{}", run.report());

    let chunk_size = {
        let config: serde_json::Value =
            serde_json::from_slice(&fs::read(repo.path.join("config")).unwrap()).unwrap();
        json_u64(&config, "chunk_size") as usize
    };
    let work = TestDir::new("verify-corrupt");
    let original = {
        let cat = Catalogue::mount(&repo, &work.subdir("mnt1", 0o755));
        fs::read(cat.dir.join("backups").join(&id).join(&relpath)).unwrap()
    };
    let chunks = original.len().div_ceil(chunk_size);
    assert!(
        chunks >= 8,
        "{relpath} is {} bytes: too few chunks of {chunk_size}",
        original.len()
    );
    // A chunk in the middle; its id is the SHA-256 of its bytes (docs/repository-format.md).
    let victim = chunks / 2;
    let range = victim * chunk_size..((victim + 1) * chunk_size).min(original.len());
    let chunk_id = Sha256::digest(&original[range.clone()]);
    let places = find_blob(&repo.path, &chunk_id);
    assert!(
        !places.is_empty(),
        "chunk {victim} of {relpath} ({}) is in no pack",
        hex::encode(chunk_id)
    );
    for place in &places {
        flip_byte(&place.pack, place.offset + place.stored_len / 2);
    }
    let damaged = repo.digest();

    // The mount: EIO for the damaged chunk's pages, the original bytes or EIO elsewhere.
    {
        let cat = Catalogue::mount(&repo, &work.subdir("mnt2", 0o755));
        let path = cat.dir.join("backups").join(&id).join(&relpath);
        let whole = fs::read(&path);
        match &whole {
            Err(e) if e.raw_os_error() == Some(libc::EIO) => {}
            Err(e) => panic!("reading {relpath} whole: expected EIO, got {e}"),
            Ok(_) => panic!("reading {relpath} with a corrupt chunk succeeded"),
        }
        let f = fs::File::open(&path).unwrap();
        let mut ok_pages = 0;
        let mut buf = vec![0u8; PAGE];
        for page in 0..original.len() / PAGE {
            let at = page * PAGE;
            match f.read_at(&mut buf, at as u64) {
                Ok(n) => {
                    assert_eq!(n, PAGE, "short read of page {page}");
                    assert!(
                        buf == original[at..at + PAGE],
                        "page {page} of {relpath} read back with different bytes"
                    );
                    assert!(
                        !range.contains(&at),
                        "page {page}, in the corrupt chunk {victim}, was served"
                    );
                    ok_pages += 1;
                }
                Err(e) => assert_eq!(
                    e.raw_os_error(),
                    Some(libc::EIO),
                    "page {page} of {relpath}: {e}"
                ),
            }
        }
        assert!(ok_pages > 0, "no page of {relpath} could be read at all");
    }

    let run = verify(&repo, &["--backup", &id, "--full"]).assert_exit(3);
    let report = run.json();
    assert_eq!(report["ok"], false, "{}", run.report());
    let p = problems(&report);
    eprintln!("verify's problems with the corrupt chunk: {p:?}");
    assert!(
        p.iter().any(|m| {
            let m = m.to_lowercase();
            m.contains("precious") || m.contains("input/output error")
        }),
        "verify's problems do not name the table or the I/O error: {p:?}\n{}",
        run.report()
    );
    // Nothing but verify's status object (its result, for `metrics`) changed.
    let status = |k: &String| k.starts_with("status/") && k.ends_with("/verify");
    let mut damaged = damaged;
    damaged.retain(|k, _| !status(k));
    let mut after = repo.digest();
    assert!(after.keys().any(status), "verify recorded no status");
    after.retain(|k, _| !status(k));
    assert_same_tree(&damaged, &after, "the repository after mount and verify");
}

/// Assertions run in `--dbname` until a `\connect DB` line switches database, as in psql.
/// A problem says why: an assertion that fails with an SQL error is reported with the
/// server's message (here "division by zero"), not only with a generic "db error" (the same
/// formatting hides "could not read block ...: Input/output error" for an unreadable table).
#[test]
fn verify_assertions_in_several_databases_and_the_servers_error_message() {
    let repo = Repo::init();
    let source = Cluster::archiving_to(&repo.spec);
    source.psql("CREATE TABLE t AS SELECT generate_series(1, 10) AS n");
    source.psql("CREATE DATABASE appdb");
    source.psql_db(
        "appdb",
        "CREATE TABLE orders AS SELECT generate_series(1, 3) AS id",
    );
    repo.backup(&source);
    let dir = TestDir::new("verify-error");
    let sql = sql_file(
        &dir,
        "checks.sql",
        "SELECT count(*) = 3 FROM orders;\n\\connect postgres\nSELECT count(*) = 10 FROM t;\n\
         \\c appdb\nSELECT count(*) / 0 = 1 FROM orders;\n",
    );
    let run = verify(&repo, &["--dbname", "appdb", "--sql", s(&sql)]).assert_exit(1);
    let report = run.json();
    assert_eq!(json_u64(&report, "assertions"), 3, "{report}");
    // Only the division fails: the others found their tables in their databases.
    let p = problems(&report);
    assert_eq!(p.len(), 1, "{p:?}\n{}", run.report());
    assert!(
        p[0].contains("count(*) / 0 = 1") && p[0].contains("appdb"),
        "{p:?}"
    );
    assert!(
        p[0].contains("division by zero"),
        "the problem does not carry PostgreSQL's error message: {p:?}"
    );
}
