//! Crash injection: `backup`, `wal-push`, `expire` and `gc` SIGKILLed at every point where
//! they change the repository, just before each put, replace and delete and just after each
//! took effect. The points are deterministic (`PGSNAPFS_KILL_AT`,
//! src/store/backend/killpoint.rs), and each command's are enumerated by a counting run rather
//! than guessed; each scenario makes every run of its command do the same work, so they are
//! the same points every time. After every kill, `check --read-data --full` passes and the
//! killed command succeeds when run again; every backup that finished before a kill (and that
//! no expire removes) still restores with exactly its rows. The debris of the killed runs stays
//! in the repository, as it would in life. `verify` is killed at the points of its record
//! (the only thing it writes); the next verify works and leaves one record. `backup
//! --from-archive` is killed at a sample of its points (its lease, its first pack, its
//! manifest, its last point): no partial backup is listed, and a rerun works. `restore
//! --delta` is killed after each file it writes, each time over a fresh copy of the same
//! directory: the copy cannot start, and a rerun makes it what an uninterrupted run makes.

mod common;

use common::*;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What a restored copy holds of `t`; [`rows_after`] is what it must hold. The test never
/// reads `t` on the source: a read sets hint bits, and the checkpoint of the next backup would
/// write those pages, so the number of changed chunks (and kill points) would vary.
const ROWS: &str = "SELECT count(*), count(DISTINCT id), min(id), max(id), \
     bool_and(v = md5(id::text)) FROM t";

/// [`ROWS`] once batches `0..=n` are in: ids 1 to N, each once, each with its own value.
fn rows_after(n: u32) -> String {
    let last = (n + 1) * BATCH;
    format!("{last}|{last}|1|{last}|t")
}

/// Rows per batch: a few 64 KiB chunks.
const BATCH: u32 = 2500;
/// Batches `t` has room for.
const BATCHES: u32 = 48;

/// Table `t`, partitioned by batch: each batch of rows fills a file of its own, so adding one
/// changes the same number of chunks whichever batch it is, and no catalog page.
fn create_t(c: &Cluster) {
    let mut sql =
        "CREATE TABLE t(batch int, id int, v text) PARTITION BY LIST (batch);".to_string();
    for n in 0..BATCHES {
        sql.push_str(&format!(
            "CREATE TABLE t{n} PARTITION OF t FOR VALUES IN ({n});"
        ));
    }
    c.psql(&sql);
}

/// Adds batch `n` of rows to `t`.
fn add_batch(c: &Cluster, n: u32) {
    assert!(n < BATCHES, "t has room for {BATCHES} batches");
    c.psql(&format!(
        "INSERT INTO t SELECT {n}, g, md5(g::text) FROM generate_series({}, {}) g",
        n * BATCH + 1,
        (n + 1) * BATCH
    ));
}

/// The kill points a successful run of `args` passes, in order, with the keys they touch.
fn count_points(args: &[String]) -> (Run, Vec<(String, String)>) {
    let run = run_command(pgsnapfs_command(args).env("PGSNAPFS_KILL_AT", "count")).assert_ok();
    let points = run
        .stderr_str()
        .lines()
        .filter_map(|l| l.strip_prefix("kill point "))
        .map(|l| {
            let (point, key) = l.split_once(' ').unwrap_or((l, ""));
            (point.to_string(), key.to_string())
        })
        .collect();
    (run, points)
}

/// Runs `args` with a kill point and asserts that SIGKILL ended it there.
#[track_caller]
fn kill_at(args: &[String], point: &str, key: &str) {
    let run = run_command(pgsnapfs_command(args).env("PGSNAPFS_KILL_AT", point));
    assert_eq!(
        run.status.signal(),
        Some(libc::SIGKILL),
        "expected SIGKILL at {point} ({key})\n{}",
        run.report()
    );
}

#[track_caller]
fn assert_check_passes(repo: &Repo, state: &Path, after: &str) {
    let run = repo.run(
        "check",
        &[
            "--read-data",
            "--full",
            "--json",
            "--state-dir",
            state.to_str().unwrap(),
        ],
    );
    assert_eq!(run.code(), Some(0), "check after {after}\n{}", run.report());
    assert_eq!(
        run.json()["ok"],
        true,
        "check after {after}\n{}",
        run.report()
    );
}

/// A backup that finished, and the last batch of rows it holds.
struct Finished {
    id: String,
    batch: u32,
}

/// Backups `list` shows that are not in `finished`.
fn unlisted(repo: &Repo, finished: &[Finished]) -> Vec<String> {
    repo.list()
        .iter()
        .map(|b| json_str(b, "id"))
        .filter(|id| !finished.iter().any(|f| &f.id == id))
        .collect()
}

/// Restores each backup and compares its rows.
#[track_caller]
fn assert_restore(repo: &Repo, backups: &[&Finished], after: &str) {
    for b in backups {
        assert_restores_rows(repo, &["--backup", &b.id], b.batch, after);
    }
}

/// Restores what `goal` names and asserts it holds batches `0..=batch` of `t`.
#[track_caller]
fn assert_restores_rows(repo: &Repo, goal: &[&str], batch: u32, after: &str) {
    let dir = TestDir::new("restore");
    let to = dir.join("data");
    repo.restore(&to, goal).assert_ok();
    let restored = Cluster::start_on(&to);
    assert_ne!(
        restored.wait_until_paused_or_ready(),
        RecoveryState::ShutDown,
        "restore {goal:?} after {after}"
    );
    assert_eq!(
        restored.psql(ROWS),
        rows_after(batch),
        "rows of restore {goal:?} after {after}"
    );
}

/// Waits for the next second of the clock. A backup's checkpoint rewrites
/// pg_logical/replorigin_checkpoint with the same content, and its directory is stored anew
/// only if the file's mtime (in seconds) differs from the previous backup's: a backup that
/// starts in a second of its own always stores it, so the blobs gc later finds unused in
/// each round do not vary.
fn next_second() {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    // A margin for the file system's coarser clock.
    std::thread::sleep(
        Duration::from_nanos(1_000_000_000 - u64::from(now.subsec_nanos()))
            + Duration::from_millis(20),
    );
}

/// An archive_command into the repository that waits while the gate is closed. A killed
/// backup must store the WAL it needs itself: if the archiver could store it first, the
/// backup's kill points would depend on a race.
struct ArchiveGate {
    dir: TestDir,
}

impl ArchiveGate {
    fn new() -> ArchiveGate {
        ArchiveGate {
            dir: TestDir::new("gate"),
        }
    }

    fn file(&self) -> PathBuf {
        self.dir.join("closed")
    }

    /// A cluster archiving through the gate, with 1 MB WAL segments (`check --read-data`
    /// reads them all after every kill).
    fn options(&self, repo: &Repo) -> ClusterOptions {
        let command = format!(
            "'while test -e {}; do sleep 0.05; done; {} wal-push --repo {} %p'",
            self.file().display(),
            pgsnapfs_bin().display(),
            repo.spec
        );
        ClusterOptions {
            settings: vec![
                ("archive_mode".into(), "on".into()),
                ("archive_command".into(), command),
                // Nothing but the test changes the data: the same work, the same kill points.
                ("autovacuum".into(), "off".into()),
            ],
            wal_segsize_mb: Some(1),
            ..ClusterOptions::default()
        }
    }

    fn close(&self) {
        fs::write(self.file(), b"").unwrap();
    }

    /// Opens the gate and waits until the archiver has stored every finished segment.
    fn open(&self, source: &Cluster) {
        fs::remove_file(self.file()).unwrap();
        // Some WAL, so that the switch finishes a segment even right after a backup's.
        source.psql("SELECT pg_logical_emit_message(false, 'crash-test', 'wake')");
        source.switch_wal_and_wait_archived();
    }
}

#[test]
fn backup_killed_at_every_point() {
    let repo = Repo::init();
    let state = TestDir::new("check-state");
    let gate = ArchiveGate::new();
    let source = Cluster::start_new(gate.options(&repo));
    create_t(&source);
    let mut backup = repo.args("backup", &["--json"]);
    backup.extend(source.backup_args());

    let finished_as = |run: &Run, batch: u32| Finished {
        id: json_str(&run.json(), "id"),
        batch,
    };
    add_batch(&source, 0);
    let mut finished = vec![finished_as(&pgsnapfs(&backup).assert_ok(), 0)];

    // Every later backup does the same work: one batch of rows since the backup before.
    add_batch(&source, 1);
    gate.close();
    let (counted, points) = count_points(&backup);
    gate.open(&source);
    finished.push(finished_as(&counted, 1));
    eprintln!("backup kill points: {points:?}");
    assert!(points.len() as u32 + 2 <= BATCHES, "{points:?}");
    assert!(points.len() >= 10, "{points:?}");

    let stored = points
        .iter()
        .position(|(p, k)| p.starts_with("put-done") && k.starts_with("snapshots/"))
        .expect("a backup stores its manifest");
    for (i, (batch, (point, key))) in (2..).zip(&points).enumerate() {
        let after = format!("backup killed at {point} ({key})");
        add_batch(&source, batch);
        gate.close();
        kill_at(&backup, point, key);
        gate.open(&source);
        // Killed once its manifest was stored, the backup finished; before, it must not show.
        let new = unlisted(&repo, &finished);
        if i >= stored {
            assert_eq!(new.len(), 1, "{after}: new backups {new:?}");
            finished.push(Finished {
                id: new[0].clone(),
                batch,
            });
        } else {
            assert!(
                new.is_empty(),
                "{after}: a killed backup is listed: {new:?}"
            );
        }
        assert_check_passes(&repo, state.path(), &after);
        if batch % 8 == 0 {
            assert_restore(&repo, &[&finished[0], finished.last().unwrap()], &after);
        }
        finished.push(finished_as(&pgsnapfs(&backup).assert_ok(), batch));
    }

    assert_eq!(unlisted(&repo, &finished), Vec::<String>::new());
    assert_eq!(
        repo.list().len(),
        finished.len(),
        "list shows the finished backups"
    );
    assert_check_passes(&repo, state.path(), "all kills");
    assert_restore(&repo, &finished.iter().collect::<Vec<_>>(), "all kills");
}

#[test]
fn wal_push_killed_at_every_point() {
    let repo = Repo::init();
    let state = TestDir::new("check-state");
    // No archiver: the test pushes each segment itself, as archive_command would.
    let source = Cluster::start_new(ClusterOptions {
        wal_segsize_mb: Some(1),
        ..ClusterOptions::default()
    });
    create_t(&source);
    add_batch(&source, 0);
    let first = Finished {
        id: json_str(&repo.backup(&source), "id"),
        batch: 0,
    };
    // The segments after the backup, one batch each, copied aside as they are finished: a
    // checkpoint may recycle them in pg_wal.
    let scratch = TestDir::new("wal");
    let segments: Vec<(u32, String, PathBuf)> = (1..=6)
        .map(|batch| {
            add_batch(&source, batch);
            let name = source.switch_wal();
            let copy = scratch.join(&name);
            copy_for_postgres(&source.data.join("pg_wal").join(&name), &copy);
            (batch, name, copy)
        })
        .collect();
    let push = |copy: &Path| repo.args("wal-push", &[copy.to_str().unwrap()]);

    let (_, points) = count_points(&push(&segments[0].2));
    eprintln!("wal-push kill points: {points:?}");
    assert!((2..segments.len()).contains(&points.len()), "{points:?}");
    let mut pushed = 1;
    for ((point, key), (_, name, copy)) in points.iter().zip(&segments[1..]) {
        let after = format!("wal-push {name} killed at {point} ({key})");
        kill_at(&push(copy), point, key);
        assert_check_passes(&repo, state.path(), &after);
        // PostgreSQL runs archive_command again until it succeeds.
        pgsnapfs(&push(copy)).assert_ok();
        let fetched = scratch.join(format!("{name}.fetched"));
        repo.run("wal-fetch", &[name, fetched.to_str().unwrap()])
            .assert_ok();
        assert!(
            fs::read(&fetched).unwrap() == fs::read(copy).unwrap(),
            "wal-fetch {name} after {after} returned other bytes"
        );
        pushed += 1;
    }

    assert_check_passes(&repo, state.path(), "all kills");
    assert_restore(&repo, &[&first], "all kills");
    // Recovery through every pushed segment reaches the last batch they hold.
    assert_restores_rows(&repo, &[], segments[pushed - 1].0, "all kills");
}

/// The repository and source of the expire and gc scenarios, where every round adds one
/// backup the same way.
struct Rounds {
    repo: Repo,
    source: Cluster,
    backup: Vec<String>,
    /// Backups that finished and that nothing has expired yet.
    live: Vec<Finished>,
    batch: u32,
}

impl Rounds {
    fn new() -> Rounds {
        let repo = Repo::init();
        let source = Cluster::start_new(ClusterOptions {
            settings: vec![("autovacuum".into(), "off".into())],
            wal_segsize_mb: Some(1),
            ..ClusterOptions::archiving_to(&repo.spec)
        });
        create_t(&source);
        let mut backup = repo.args("backup", &["--json"]);
        backup.extend(source.backup_args());
        Rounds {
            repo,
            source,
            backup,
            live: Vec::new(),
            batch: 0,
        }
    }

    /// Adds a batch of rows and backs it up; waits until its WAL is all archived, so that
    /// what expire cuts does not depend on the archiver's pace.
    fn add_backup(&mut self) {
        add_batch(&self.source, self.batch);
        next_second();
        let id = json_str(&pgsnapfs(&self.backup).assert_ok().json(), "id");
        self.source.switch_wal_and_wait_archived();
        self.live.push(Finished {
            id,
            batch: self.batch,
        });
        self.batch += 1;
    }

    /// `expire --keep-last KEEP`.
    fn expire(&self) -> Vec<String> {
        self.repo
            .args("expire", &["--keep-last", &KEEP.to_string()])
    }

    /// Drops what a finished expire removed from `live`.
    fn expired(&mut self) {
        let excess = self.live.len().saturating_sub(KEEP);
        self.live.drain(..excess);
    }

    /// After a kill: check passes, the newest `KEEP` backups (which expire keeps) are listed,
    /// and with `restore` the oldest and newest of them restore with their rows.
    #[track_caller]
    fn assert_intact(&self, state: &Path, after: &str, restore: bool) {
        assert_check_passes(&self.repo, state, after);
        let kept = &self.live[self.live.len().saturating_sub(KEEP)..];
        let listed: Vec<String> = self.repo.list().iter().map(|b| json_str(b, "id")).collect();
        for b in kept {
            assert!(listed.contains(&b.id), "{after}: backup {} is gone", b.id);
        }
        if restore {
            assert_restore(&self.repo, &[&kept[0], kept.last().unwrap()], after);
        }
    }
}

/// Backups expire keeps in the expire and gc scenarios.
const KEEP: usize = 2;

#[test]
fn expire_killed_at_every_point() {
    let mut r = Rounds::new();
    let state = TestDir::new("check-state");
    // A round: one more backup, then expire removes the oldest (its manifest and its WAL).
    for _ in 0..=KEEP {
        r.add_backup();
    }
    // Not counted: the first expire also removes the WAL from before the first backup.
    pgsnapfs(&r.expire()).assert_ok();
    r.expired();
    r.add_backup();
    let (_, points) = count_points(&r.expire());
    r.expired();
    eprintln!("expire kill points: {points:?}");
    assert!(points.len() >= 6, "{points:?}");

    for (i, (point, key)) in points.iter().enumerate() {
        let after = format!("expire killed at {point} ({key})");
        r.add_backup();
        kill_at(&r.expire(), point, key);
        r.assert_intact(state.path(), &after, i % 4 == 3);
        pgsnapfs(&r.expire()).assert_ok();
        r.expired();
        let listed: Vec<String> = r.repo.list().iter().map(|b| json_str(b, "id")).collect();
        let live: Vec<String> = r.live.iter().map(|b| b.id.clone()).collect();
        assert_eq!(listed, live, "after the expire killed at {point} ran again");
    }
    r.assert_intact(state.path(), "all kills", true);
}

#[test]
fn gc_killed_at_every_point() {
    let mut r = Rounds::new();
    let state = TestDir::new("check-state");
    // Repack every pack that holds any garbage: more of gc's steps run each time.
    let gc = r.repo.args("gc", &["--repack-threshold", "1%"]);
    // A round: one more backup, expire removes the oldest, and gc deletes and repacks what
    // only that backup used.
    let round = |r: &mut Rounds| {
        r.add_backup();
        pgsnapfs(&r.expire()).assert_ok();
        r.expired();
    };
    for _ in 0..=KEEP {
        r.add_backup();
    }
    // Not counted: the first gc also repacks the first, full backup's packs.
    round(&mut r);
    pgsnapfs(&gc).assert_ok();
    round(&mut r);
    let (_, points) = count_points(&gc);
    eprintln!("gc kill points: {points:?}");
    assert!(points.len() >= 6, "{points:?}");

    // Not every round's gc does the same work: which packs hold live blobs after an expire
    // depends on the data (shared chunks such as a WAL segment's zero-filled tail), so a round
    // may repack one pack fewer (seen on PostgreSQL 17). So each round's points are counted
    // on a copy of the repository first, and the point killed is the one that touches the
    // same kind of object as the enumerated one: the same step, the same top-level directory
    // and the same place among those. A round without it is run to the end and the next tries.
    let copies = TestDir::new("gc-count");
    for (i, (point, key)) in points.iter().enumerate() {
        let want = point_class(&points, i);
        let mut tries = 0;
        let here = loop {
            round(&mut r);
            let copy = copies.join(format!("repo-{i}-{tries}"));
            let st = std::process::Command::new("cp")
                .arg("-a")
                .arg(&r.repo.path)
                .arg(&copy)
                .status()
                .unwrap();
            assert!(st.success(), "copy the repository");
            let copy_gc: Vec<String> = ["gc", "--repo", copy.to_str().unwrap()]
                .iter()
                .chain(["--repack-threshold", "1%"].iter())
                .map(|a| a.to_string())
                .collect();
            let (_, now) = count_points(&copy_gc);
            fs::remove_dir_all(&copy).unwrap();
            if let Some(j) = (0..now.len()).find(|&j| point_class(&now, j) == want) {
                break now[j].0.clone();
            }
            tries += 1;
            assert!(
                tries < 4,
                "no gc run in {tries} rounds passed a point like {point} ({key}): {now:?}"
            );
            pgsnapfs(&gc).assert_ok();
        };
        let after = format!("gc killed at {here} (enumerated as {point}, {key})");
        kill_at(&gc, &here, key);
        r.assert_intact(state.path(), &after, i % 4 == 3);
        pgsnapfs(&gc).assert_ok();
    }
    r.assert_intact(state.path(), "all kills", true);
}

/// What the `i`th of a run's kill `points` does: its step (`delete-done`), the top-level
/// directory of its key (`packs`) and how many points of that step and directory came before.
fn point_class(points: &[(String, String)], i: usize) -> (String, String, usize) {
    let class = |(point, key): &(String, String)| {
        let step = point.split(':').next().unwrap_or_default().to_string();
        let dir = key.split('/').next().unwrap_or_default().to_string();
        (step, dir)
    };
    let (step, dir) = class(&points[i]);
    let before = points[..i]
        .iter()
        .filter(|p| class(p) == (step.clone(), dir.clone()))
        .count();
    (step, dir, before)
}

/// `pgsnapfs COMMAND ARGS` as root (FUSE), with kill point `kill` (`count`, a point, or
/// none) and its work directory in `tmp`.
fn root_run_at(repo: &Repo, tmp: &Path, kill: Option<&str>, command: &str, args: &[&str]) -> Run {
    let mut cmd = std::process::Command::new(pgsnapfs_bin());
    cmd.args(repo.args(command, args))
        .current_dir("/")
        .stdin(std::process::Stdio::null())
        .env("TMPDIR", tmp);
    for var in SCRUBBED_ENV {
        cmd.env_remove(var);
    }
    if let Some(kill) = kill {
        cmd.env("PGSNAPFS_KILL_AT", kill);
    }
    run_command(&mut cmd)
}

/// `pgsnapfs verify --json` of the newest backup.
fn verify_at(repo: &Repo, tmp: &Path, kill: Option<&str>) -> Run {
    root_run_at(repo, tmp, kill, "verify", &["--json"])
}

#[test]
fn verify_killed_at_its_record() {
    let repo = Repo::init();
    let state = TestDir::new("check-state");
    let tmp = TestDir::new("verify-tmp");
    let source = Cluster::archiving_to(&repo.spec);
    repo.backup(&source);
    let first = verify_at(&repo, tmp.path(), None).assert_ok();
    assert_eq!(first.json()["recorded"], true, "{}", first.report());

    // Each round verifies a new backup of the unchanged cluster: the same work, the same
    // points. Those of its record: its write, then the deletion of the record before it.
    repo.backup(&source);
    let counted = verify_at(&repo, tmp.path(), Some("count")).assert_ok();
    let points: Vec<(String, String)> = counted
        .stderr_str()
        .lines()
        .filter_map(|l| l.strip_prefix("kill point "))
        .filter_map(|l| l.split_once(' '))
        .filter(|(_, key)| key.starts_with("verified/"))
        .map(|(p, k)| (p.to_string(), k.to_string()))
        .collect();
    eprintln!("verify's kill points at its record: {points:?}");
    assert!(
        points.iter().any(|(p, _)| p.starts_with("replace-done:")),
        "{points:?}\n{}",
        counted.report()
    );

    for (point, key) in &points {
        let after = format!("verify killed at {point} ({key})");
        let newest = json_str(&repo.backup(&source), "id");
        let killed = verify_at(&repo, tmp.path(), Some(point));
        assert_eq!(
            killed.status.signal(),
            Some(libc::SIGKILL),
            "expected SIGKILL at {point} ({key})\n{}",
            killed.report()
        );
        // The server was stopped before the record; the killed run leaves its mount.
        for dir in fs::read_dir(tmp.path()).unwrap() {
            let dir = dir.unwrap().path();
            pgsnapfs_as_root(&["umount", dir.join("data").to_str().unwrap()]).assert_ok();
            fs::remove_dir_all(&dir).unwrap();
        }
        assert_check_passes(&repo, state.path(), &after);
        // The next verify builds on whichever record the killed one left, and leaves one.
        let next = verify_at(&repo, tmp.path(), None).assert_ok();
        let report = next.json();
        assert_eq!(report["full"], false, "{after}\n{}", next.report());
        assert_eq!(report["recorded"], true, "{after}\n{}", next.report());
        let records: Vec<String> = repo.keys("verified/");
        assert_eq!(
            records,
            [format!("verified/{}/{newest}", source.system_identifier())],
            "{after}"
        );
    }
}

/// `pgsnapfs backup --from-archive --json`.
fn from_archive_at(repo: &Repo, tmp: &Path, kill: Option<&str>) -> Run {
    root_run_at(repo, tmp, kill, "backup", &["--from-archive", "--json"])
}

#[test]
fn backup_from_archive_killed_at_its_points() {
    let repo = Repo::init();
    let state = TestDir::new("check-state");
    let tmp = TestDir::new("from-archive-tmp");
    let source = Cluster::start_new(ClusterOptions {
        settings: vec![("autovacuum".into(), "off".into())],
        ..ClusterOptions::archiving_to(&repo.spec)
    });
    create_t(&source);
    add_batch(&source, 0);
    repo.backup(&source);
    // Each round replays one more batch, after a checkpoint (for the restartpoint): the
    // same work, the same points.
    let round = |batch: u32| {
        add_batch(&source, batch);
        source.psql("CHECKPOINT");
        source.switch_wal_and_wait_archived();
    };
    round(1);
    let counted = from_archive_at(&repo, tmp.path(), Some("count")).assert_ok();
    let points: Vec<(String, String)> = counted
        .stderr_str()
        .lines()
        .filter_map(|l| l.strip_prefix("kill point "))
        .filter_map(|l| l.split_once(' '))
        .map(|(p, k)| (p.to_string(), k.to_string()))
        .collect();
    eprintln!("backup --from-archive kill points: {points:?}");
    let manifest = points
        .iter()
        .position(|(p, k)| p.starts_with("put:") && k.starts_with("snapshots/"))
        .expect("a backup stores its manifest");
    let first_pack = points
        .iter()
        .position(|(p, k)| p.starts_with("put:") && k.starts_with("packs/"))
        .expect("a backup from the archive stores new chunks");
    let mut sample = vec![0, first_pack, manifest, manifest + 1, points.len() - 1];
    sample.dedup();

    let mut batch = 1;
    for i in sample {
        let (point, key) = &points[i];
        let after = format!("backup --from-archive killed at {point} ({key})");
        batch += 1;
        round(batch);
        let before = repo.list().len();
        let killed = from_archive_at(&repo, tmp.path(), Some(point));
        assert_eq!(
            killed.status.signal(),
            Some(libc::SIGKILL),
            "expected SIGKILL at {point} ({key})\n{}",
            killed.report()
        );
        // The killed run leaves its (dead) mount and work directory.
        for dir in fs::read_dir(tmp.path()).unwrap() {
            let dir = dir.unwrap().path();
            pgsnapfs_as_root(&["umount", "--lazy", dir.join("mnt").to_str().unwrap()]);
            fs::remove_dir_all(&dir).unwrap();
        }
        let listed = repo.list().len();
        if i > manifest {
            assert_eq!(listed, before + 1, "{after}: the manifest was stored");
        } else {
            assert_eq!(listed, before, "{after}: a killed backup is listed");
            // A rerun makes it.
            from_archive_at(&repo, tmp.path(), None).assert_ok();
        }
        assert_check_passes(&repo, state.path(), &after);
    }
    // The newest, made from the archive after all the kills, holds every batch.
    let newest = repo.list().last().map(|b| json_str(b, "id")).unwrap();
    assert_restores_rows(&repo, &["--backup", &newest], batch, "all kills");
}

#[test]
fn restore_delta_killed_after_each_file() {
    let repo = Repo::init();
    let mut source = Cluster::archiving_to(&repo.spec);
    create_t(&source);
    add_batch(&source, 0);
    let backup = json_str(&repo.backup(&source), "id");
    // The old primary runs on, then stops: its directory differs from the backup.
    add_batch(&source, 1);
    add_batch(&source, 2);
    source.psql("CHECKPOINT");
    source.stop();
    let work = TestDir::new("delta");
    let fresh = |name: &str| -> PathBuf {
        let to = work.join(name);
        run_command(Command::new("cp").arg("-a").arg(&source.data).arg(&to)).assert_ok();
        to
    };
    let args = |to: &Path| {
        let to = to.to_str().unwrap();
        repo.args("restore", &["--to", to, "--delta", "--backup", &backup])
    };
    let whole = fresh("whole");
    let (_, points) = count_points(&args(&whole));
    let files: Vec<&(String, String)> = points
        .iter()
        .filter(|(p, _)| p.starts_with("file:"))
        .collect();
    assert!(files.len() >= 3, "kill points: {points:?}");
    let want = tree_digest(&whole);
    for (point, key) in files {
        let to = fresh(&point.replace(':', "-"));
        kill_at(&args(&to), point, key);
        assert!(
            !to.join("global/pg_control").exists(),
            "a directory half brought over at {point} could start"
        );
        pgsnapfs(&args(&to)).assert_ok();
        assert_same_tree(
            &want,
            &tree_digest(&to),
            &format!("killed at {point} ({key})"),
        );
        fs::remove_dir_all(&to).unwrap();
    }
    let restored = Cluster::start_on(&whole);
    assert_ne!(
        restored.wait_until_paused_or_ready(),
        RecoveryState::ShutDown
    );
    assert_eq!(restored.psql(ROWS), rows_after(0));
}
