//! Who runs what: the operations guide has root run mounts and `verify`, and postgres run
//! archiving, backups and expire, on one local repository. Whatever root writes stays usable
//! by postgres (the repository's top directory decides every object's owner and mode), the
//! leases root's mounts hold protect their backups from postgres's expire, a lease that
//! cannot be read stops deletion, and a user who may not write is refused before writing.

mod common;

use common::*;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Stdio;

const ROWS: &str = "SELECT count(*) || ' rows, sum ' || coalesce(sum(id), 0) FROM t";

fn as_root(repo: &Repo, sub: &str, args: &[&str]) -> Run {
    pgsnapfs_as_root(&repo.args(sub, args))
}

fn ids(list: &[serde_json::Value]) -> Vec<String> {
    let mut v: Vec<String> = list.iter().map(|b| json_str(b, "id")).collect();
    v.sort();
    v
}

fn backup_as_root(repo: &Repo, c: &Cluster) -> String {
    let mut args = vec!["--json".to_string()];
    args.extend(c.backup_args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    json_str(&as_root(repo, "backup", &args).assert_ok().json(), "id")
}

/// Every file and directory below `root` (and `root`) that is not owned by postgres, or that
/// others may access.
#[track_caller]
fn assert_all_postgres_owned(root: &Path, after: &str) {
    let m = machine();
    let mut wrong = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = fs::symlink_metadata(&p).unwrap();
        if meta.uid() != m.postgres_uid || meta.gid() != m.postgres_gid || meta.mode() & 0o077 != 0
        {
            wrong.push(format!(
                "{} {}:{} {:o}",
                p.display(),
                meta.uid(),
                meta.gid(),
                meta.mode() & 0o7777
            ));
        }
        if meta.is_dir() {
            stack.extend(fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
    assert!(
        wrong.is_empty(),
        "after {after}, not postgres's alone:\n{}",
        wrong.join("\n")
    );
}

/// Gives `path` to root with mode 0600, as pgsnapfs run as root used to write everything.
fn make_roots(path: &Path) {
    std::os::unix::fs::chown(path, Some(0), Some(0)).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
}

/// The guide's set-up, start to end: backups and gc as root, archiving, expire and list as
/// postgres, mounts as root.
#[test]
fn root_and_postgres_share_one_repository() {
    let repo = Repo::init();
    let top = fs::metadata(&repo.path).unwrap();
    assert_eq!(top.mode() & 0o7777, 0o700, "init's top directory");
    assert_eq!(top.uid(), machine().postgres_uid);

    let source = Cluster::archiving_to(&repo.spec);
    source.psql("CREATE TABLE t(id int PRIMARY KEY, v text)");
    source.psql("INSERT INTO t SELECT g, repeat(md5(g::text), 8) FROM generate_series(1, 1000) g");
    source.psql("CREATE TABLE noise AS SELECT g, md5(g::text) || md5((g * 7)::text) AS v FROM generate_series(1, 100000) g");
    let want_first = source.psql(ROWS);
    let first = backup_as_root(&repo, &source);
    // The archiver (postgres) keeps working after root's backup stored WAL.
    source.switch_wal_and_wait_archived();
    source.psql("DROP TABLE noise");
    source.psql("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1001, 1500) g");
    let second = json_str(&repo.backup(&source), "id");
    assert_all_postgres_owned(&repo.path, "a backup as root");

    // Root mounts the first backup; postgres's expire keeps it.
    let work = TestDir::new("ownership");
    let view = fs::canonicalize(work.subdir("view", 0o755)).unwrap();
    let scratch = work.join("scratch");
    as_root(
        &repo,
        "mount",
        &[
            view.to_str().unwrap(),
            "--background",
            "--backup",
            &first,
            "--scratch",
            scratch.to_str().unwrap(),
        ],
    )
    .assert_ok();
    let report = repo
        .run("expire", &["--keep-last", "1", "--json"])
        .assert_ok()
        .json();
    let kept: Vec<&serde_json::Value> = report["backups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["keep"] == true)
        .collect();
    assert_eq!(kept.len(), 2, "the mounted backup must be kept: {report}");
    assert_eq!(ids(&repo.list()), {
        let mut v = vec![first.clone(), second.clone()];
        v.sort();
        v
    });

    // A copy of the mount's lease as older versions wrote it as root: postgres cannot read
    // it, so expire and gc stop, naming it, and delete nothing.
    let leases = repo.run("locks", &["--json"]).assert_ok().json();
    let lease = leases
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["command"] == "mount")
        .unwrap_or_else(|| panic!("no mount lease: {leases}"));
    let lease_id = json_str(lease, "id");
    let old_lease = repo.path.join("locks").join("0ld");
    fs::copy(repo.path.join("locks").join(&lease_id), &old_lease).unwrap();
    make_roots(&old_lease);
    // Leases come and go (the mount refreshes its own): the rest must not change.
    let objects = || {
        let mut d = repo.digest();
        d.retain(|k, _| !k.contains("locks"));
        d
    };
    let before = objects();
    for (sub, args) in [("expire", vec!["--keep-last", "1"]), ("gc", vec![])] {
        repo.run(sub, &args)
            .assert_exit(1)
            .assert_mentions("lease 0ld")
            .assert_mentions("belongs to root")
            .assert_mentions("nothing is deleted");
    }
    assert_eq!(
        before,
        objects(),
        "a refused expire or gc changed the repository"
    );
    fs::remove_file(&old_lease).unwrap();

    // The mounted backup and its WAL are all there: a server starts on the view.
    let mut server = Cluster::start_on(&view);
    assert_eq!(server.psql(ROWS), want_first);
    server.stop();

    // The mount runs on this host: its lease is not removed without --force.
    repo.run("locks", &["--remove", &lease_id])
        .assert_exit(2)
        .assert_mentions("still running");

    // A mount killed with SIGKILL (not reaped yet) is stale at once.
    let cat = fs::canonicalize(work.subdir("cat", 0o755)).unwrap();
    let mut child = std::process::Command::new(pgsnapfs_bin())
        .args(repo.args("mount", &[cat.to_str().unwrap()]))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start mount");
    let ready = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .any(|l| l.starts_with("pgsnapfs: mounted"));
    assert!(ready, "the catalogue mount did not start");
    child.kill().unwrap();
    let pid = child.id();
    wait_for(std::time::Duration::from_secs(30), || {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        match stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next())
        {
            Some("Z") => Ok(()),
            other => Err(format!("mount process state {other:?}")),
        }
    })
    .unwrap();
    let leases = repo.run("locks", &["--json"]).assert_ok().json();
    let killed = leases
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["pid"] == pid)
        .unwrap_or_else(|| panic!("no lease of pid {pid}: {leases}"));
    assert_eq!(killed["stale"], true, "{leases}");
    child.wait().unwrap();
    let _ = pgsnapfs_as_root(&["umount", "--lazy", cat.to_str().unwrap()]);

    repo.run("locks", &["--remove", &lease_id, "--force"])
        .assert_ok();
    let leases = repo.run("locks", &["--json"]).assert_ok().json();
    assert!(
        !leases.to_string().contains(&lease_id),
        "the lease is still there: {leases}"
    );
    pgsnapfs_as_root(&["umount", view.to_str().unwrap()]).assert_ok();

    // expire and gc as root; then postgres archives and lists every backup.
    as_root(&repo, "expire", &["--keep-last", "1"]).assert_ok();
    // A low threshold so gc repacks the expired backup's packs and rewrites the other's record.
    let report = as_root(&repo, "gc", &["--json", "--repack-threshold", "1%"])
        .assert_ok()
        .json();
    assert_eq!(
        report["rewritten_backups"].as_array().map(Vec::len),
        Some(1),
        "gc rewrote no backup record: {report}"
    );
    assert_all_postgres_owned(&repo.path, "expire and gc as root");
    assert_eq!(ids(&repo.list()), vec![second.clone()]);
    source.psql("INSERT INTO t VALUES (0, 'after gc')");
    source.switch_wal_and_wait_archived();

    // A backup record postgres cannot read fails list, info and check, naming it.
    let manifest = repo.path.join("snapshots").join(&second);
    make_roots(&manifest);
    for sub in ["list", "info", "check"] {
        repo.run(sub, &[])
            .assert_exit(1)
            .assert_mentions(&format!("snapshots/{second}"))
            .assert_mentions("chown -R postgres:");
    }
    chown_to_postgres(&manifest);
    repo.run("check", &[]).assert_ok();

    // A repository root made for itself: postgres cannot reach it, and once given group
    // access, may read it but not write to it; nothing is written.
    let other = TestDir::new("rootrepo");
    let other_repo = other.join("repo");
    let spec = other_repo.to_str().unwrap();
    pgsnapfs_as_root(&["init", "--repo", spec]).assert_ok();
    let seg = source.psql("SELECT pg_walfile_name(pg_current_wal_lsn())");
    let seg = source.data.join("pg_wal").join(seg);
    let push = ["wal-push", "--repo", spec, seg.to_str().unwrap()];
    pgsnapfs(&push)
        .assert_exit(1)
        .assert_mentions("permission denied")
        .assert_mentions("run it as root");
    // Group access, as the operations guide shows it.
    for (cmd, arg) in [("chgrp", "postgres"), ("chmod", "g+rX")] {
        let ok = std::process::Command::new(cmd)
            .args(["-R", arg, spec])
            .status()
            .unwrap()
            .success();
        assert!(ok, "{cmd} -R {arg} {spec}");
    }
    let before = tree_digest(&other_repo);
    pgsnapfs(&push)
        .assert_exit(2)
        .assert_mentions("belongs to root")
        .assert_mentions("run the command as root");
    assert_eq!(before, tree_digest(&other_repo), "a refused wal-push wrote");
    pgsnapfs(&["list", "--repo", spec]).assert_ok();

    // Root can make a repository for postgres, or in a directory prepared for postgres.
    let given = other.join("given");
    pgsnapfs_as_root(&[
        "init",
        "--repo",
        given.to_str().unwrap(),
        "--owner",
        "postgres",
    ])
    .assert_ok();
    assert_all_postgres_owned(&given, "init --owner postgres");
    let prepared = other.subdir("prepared", 0o755);
    pgsnapfs_as_root(&["init", "--repo", prepared.to_str().unwrap()])
        .assert_ok()
        .assert_mentions("owned by postgres, mode 0700");
    let top = fs::metadata(&prepared).unwrap();
    assert_eq!(
        (top.uid(), top.mode() & 0o7777),
        (machine().postgres_uid, 0o700)
    );
}
