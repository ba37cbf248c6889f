//! A repository whose disk fills up: a backup that cannot fit fails with a message naming the
//! object and what to do, shows no partial backup, and leaves the repository consistent; the
//! earlier backup still restores with its rows; a wal-push into the full disk fails with a
//! non-zero exit (so PostgreSQL retries it) and damages nothing; and once space is freed, the
//! push and a new backup succeed.

mod common;

use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A small tmpfs mounted for the test, unmounted on drop (before its dir is removed).
struct Tmpfs {
    point: PathBuf,
    _dir: TestDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = TestDir::new("tmpfs");
        let point = dir.join("mnt");
        fs::create_dir(&point).unwrap();
        run_command(
            Command::new("mount")
                .args([
                    "-t",
                    "tmpfs",
                    "-o",
                    &format!("size={size},mode=0755"),
                    "tmpfs",
                ])
                .arg(&point),
        )
        .assert_ok();
        chown_to_postgres(&point);
        Tmpfs { point, _dir: dir }
    }

    fn free_bytes(&self) -> u64 {
        let out = run_command(
            Command::new("df")
                .args(["--output=avail", "-B1"])
                .arg(&self.point),
        )
        .assert_ok()
        .stdout_str();
        out.lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or_else(|| panic!("cannot parse df output: {out}"))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.point).status();
    }
}

/// Writes a file `name` next to the repository until at most `leave` bytes are free.
fn fill(disk: &Tmpfs, name: &str, leave: u64) -> PathBuf {
    use std::io::Write;
    let filler = disk.point.join(name);
    let mut f = fs::File::create(&filler).unwrap();
    let block = vec![0xa5u8; 64 << 10];
    let mut left = disk.free_bytes().saturating_sub(leave);
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        // With nothing to leave, the last block may not fit: full is what was asked for.
        if f.write_all(&block[..n]).is_err() {
            break;
        }
        left -= n as u64;
    }
    filler
}

const ROWS: &str =
    "SELECT count(*) || ':' || sum(id) || ':' || md5(string_agg(v, ',' ORDER BY id)) FROM t";

fn check(repo_spec: &str, state: &Path) -> Run {
    pgsnapfs(&[
        "check",
        "--repo",
        repo_spec,
        "--read-data",
        "--full",
        "--state-dir",
        state.to_str().unwrap(),
    ])
}

#[test]
fn full_repository_fails_cleanly_and_recovers_once_space_is_freed() {
    let disk = Tmpfs::mount("24m");
    let spec = disk.point.join("repo").display().to_string();
    pgsnapfs(&["init", "--repo", &spec]).assert_ok();
    let state = TestDir::new("check-state");
    let source = Cluster::start_new(ClusterOptions {
        wal_segsize_mb: Some(1),
        ..ClusterOptions::archiving_to(&spec)
    });
    source.psql(
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 1000) g",
    );
    let want = source.psql(ROWS);
    let mut backup = vec![
        "backup".to_string(),
        "--json".into(),
        "--repo".into(),
        spec.clone(),
    ];
    backup.extend(source.backup_args());
    let first = json_str(&pgsnapfs(&backup).assert_ok().json(), "id");

    // Barely compressible data, far more than what is left.
    source.psql(
        "CREATE TABLE big AS SELECT g, md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text) AS v
           FROM generate_series(1, 100000) g",
    );
    // The source archives into the same disk: let it catch up first. Its archiver can still
    // take the space left while the backup runs (the backup's checkpoint ends a segment), so
    // the object named may be the backup's lease or a pack.
    source.switch_wal_and_wait_archived();
    let filler = fill(&disk, "filler", 512 << 10);
    pgsnapfs(&backup)
        .assert_exit(1)
        .assert_mentions("no space left in the repository to write ")
        .assert_mentions("run the command again");

    let list = |spec: &str| -> Vec<String> {
        let v = pgsnapfs(&["list", "--json", "--repo", spec])
            .assert_ok()
            .json();
        v["backups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| json_str(b, "id"))
            .collect()
    };
    assert_eq!(
        list(&spec),
        vec![first.clone()],
        "no partial backup is listed"
    );
    check(&spec, state.path()).assert_ok();

    let out = TestDir::new("restore");
    let restore_first = |to: &Path| {
        pgsnapfs(&[
            "restore",
            "--repo",
            &spec,
            "--backup",
            &first,
            "--to",
            to.to_str().unwrap(),
        ])
        .assert_ok()
    };
    let to = out.join("data");
    restore_first(&to);
    {
        let restored = Cluster::start_on(&to);
        assert_ne!(
            restored.wait_until_paused_or_ready(),
            RecoveryState::ShutDown
        );
        assert_eq!(
            restored.psql(ROWS),
            want,
            "rows of {first} after the disk filled"
        );
    }

    // PostgreSQL keeps a segment until archive_command succeeds, so a failure must be non-zero.
    // The failed backup removed its unfinished pack: first fill what that freed.
    let more = fill(&disk, "more", 0);
    source.psql("INSERT INTO t VALUES (1001, 'after')");
    let name = source.switch_wal();
    let segment = source.data.join("pg_wal").join(&name);
    let scratch = TestDir::new("wal");
    let copy = scratch.join(&name);
    copy_for_postgres(&segment, &copy);
    pgsnapfs(&["wal-push", "--repo", &spec, copy.to_str().unwrap()])
        .assert_exit(1)
        .assert_mentions("no space left");
    // Recovery does not wait for space: restore works on the full disk, without its lease.
    restore_first(&out.join("data-full")).assert_mentions("without it");
    // With no byte free, check cannot write its lease: give it the few it needs.
    fs::remove_file(more).unwrap();
    check(&spec, state.path()).assert_ok();

    fs::remove_file(filler).unwrap();
    pgsnapfs(&["wal-push", "--repo", &spec, copy.to_str().unwrap()]).assert_ok();
    // The archiver catches up too, so no WAL is missing.
    source.switch_wal_and_wait_archived();
    let second = json_str(&pgsnapfs(&backup).assert_ok().json(), "id");
    let mut listed = list(&spec);
    listed.sort();
    assert_eq!(listed, vec![first, second]);
    check(&spec, state.path()).assert_ok();
}
