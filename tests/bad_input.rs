//! Wrong input and damaged repositories: each case must fail with a non-zero exit code and a
//! message naming what is wrong, and leave the repository exactly as it was.

mod common;

use common::*;
use std::fs;
use std::path::Path;

/// A repository with one backup of a small cluster and its WAL archived; the cluster is stopped
/// so nothing writes to the repository afterwards.
fn repo_with_backup() -> Repo {
    let repo = Repo::init();
    let mut c = Cluster::archiving_to(&repo.spec);
    c.psql("CREATE TABLE t(id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 10);");
    repo.backup(&c);
    c.psql("INSERT INTO t VALUES (11)");
    c.switch_wal_and_wait_archived();
    c.stop();
    repo
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn missing_repository() {
    let dir = TestDir::new("missing");
    let repo = dir.join("no-such-repo");
    let (r, dest, seg) = (s(&repo), dir.join("restore"), dir.join("seg"));
    let cases: [&[&str]; 4] = [
        &["list", "--repo", r],
        &["info", "--repo", r],
        &["restore", "--repo", r, "--to", s(&dest)],
        &[
            "wal-fetch",
            "--repo",
            r,
            "000000010000000000000001",
            s(&seg),
        ],
    ];
    for args in cases {
        pgsnapfs(args).assert_exit(2).assert_mentions(r);
    }
    assert!(!repo.exists(), "a command created the missing repository");
    assert!(
        !dest.exists() && !seg.exists(),
        "a failed command wrote output"
    );

    // Neither --repo nor PGSNAPFS_REPO.
    pgsnapfs(&["list"]).assert_exit(2).assert_mentions("repo");
}

#[test]
fn repository_from_environment() {
    let repo = Repo::init();
    let run = run_command(pgsnapfs_command(&["list", "--json"]).env("PGSNAPFS_REPO", &repo.path))
        .assert_ok();
    assert_eq!(
        run.json()["backups"],
        serde_json::json!([]),
        "{}",
        run.report()
    );
}

#[test]
fn init_refuses_non_empty_directory() {
    let dir = TestDir::new("init");
    let target = dir.subdir("occupied", 0o755);
    fs::write(target.join("precious.txt"), "do not touch").unwrap();
    chown_to_postgres(&target.join("precious.txt"));
    let before = tree_digest(&target);
    pgsnapfs(&["init", "--repo", s(&target)])
        .assert_exit(2)
        .assert_mentions(s(&target));
    assert_same_tree(
        &before,
        &tree_digest(&target),
        "a non-empty directory after init",
    );
}

#[test]
fn unsupported_repository_version() {
    let repo = Repo::init();
    let config = repo.path.join("config");
    let text = fs::read(&config).expect("the repository has a config file");
    let mut json: serde_json::Value = serde_json::from_slice(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", config.display()));
    assert!(
        json["version"].is_u64(),
        "config has no numeric version: {json}"
    );
    json["version"] = 999.into();
    fs::write(&config, serde_json::to_vec_pretty(&json).unwrap()).unwrap();

    let before = repo.digest();
    let out = TestDir::new("restore");
    let dest = out.join("data");
    repo.run("list", &[]).assert_exit(2).assert_mentions("999");
    repo.run("info", &[]).assert_exit(2).assert_mentions("999");
    repo.restore(&dest, &["--backup", "latest"])
        .assert_exit(2)
        .assert_mentions("999");
    assert!(
        is_absent_or_empty(&dest),
        "restore wrote into {}",
        dest.display()
    );
    assert_same_tree(
        &before,
        &repo.digest(),
        "repository with an unknown version",
    );
}

/// `--pgdata` naming a real data directory that is not the connected server's.
#[test]
fn backup_with_pgdata_of_another_cluster() {
    let repo = Repo::init();
    let server = Cluster::start_new(ClusterOptions::default());
    let other = Cluster::new(ClusterOptions::default());
    let mut args = server.backup_args();
    let i = args.iter().position(|a| a == "--pgdata").unwrap();
    args[i + 1] = other.data.display().to_string();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    let before = repo.digest();
    repo.run("backup", &args)
        .assert_exit(2)
        .assert_mentions(s(&other.data));
    assert_same_tree(&before, &repo.digest(), "repository after a refused backup");
    assert!(repo.list().is_empty(), "a refused backup is listed");
}

#[test]
fn backup_of_stopped_server() {
    let repo = Repo::init();
    let stopped = Cluster::new(ClusterOptions::default());
    let args = stopped.backup_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let before = repo.digest();
    let run = repo.run("backup", &args).assert_failed();
    let said = run.all_output();
    assert!(
        said.contains(&stopped.port.to_string()) || said.contains(s(&stopped.sock)),
        "the message should name the server it could not reach (socket {} port {})\n{}",
        stopped.sock.display(),
        stopped.port,
        run.report()
    );
    assert_same_tree(
        &before,
        &repo.digest(),
        "repository after a backup of a stopped server",
    );
}

/// Runs a restore that must be refused with exit 2 and a message containing `mention`; checks
/// nothing was written to the repository or the destination.
fn refused_restore(repo: &Repo, args: &[&str], mention: &str) -> Run {
    let out = TestDir::new("restore");
    let dest = out.join("data");
    let before = repo.digest();
    let run = repo
        .restore(&dest, args)
        .assert_exit(2)
        .assert_mentions(mention);
    assert!(
        is_absent_or_empty(&dest),
        "restore {args:?} was refused but wrote into {}",
        dest.display()
    );
    assert_same_tree(
        &before,
        &repo.digest(),
        "repository after a refused restore",
    );
    run
}

#[test]
fn restore_target_time_before_first_backup() {
    let repo = repo_with_backup();
    refused_restore(
        &repo,
        &["--target-time", "2000-01-01 00:00:00+00"],
        "2000-01-01",
    );
}

#[test]
fn restore_target_time_after_archived_wal() {
    let repo = repo_with_backup();
    refused_restore(
        &repo,
        &["--target-time", "2999-01-01 00:00:00+00"],
        "2999-01-01",
    );
}

#[test]
fn restore_unknown_backup_and_malformed_targets() {
    let repo = repo_with_backup();
    refused_restore(&repo, &["--backup", "no-such-backup"], "no-such-backup");
    // The message shows how to write a time.
    refused_restore(
        &repo,
        &["--target-time", "half past never"],
        "half past never",
    )
    .assert_mentions("2026-11-20 14:30:00+00");
    refused_restore(&repo, &["--target-lsn", "not-an-lsn"], "not-an-lsn");
    refused_restore(&repo, &["--target-name", "never_created"], "never_created");
}

#[test]
fn restore_into_non_empty_directory() {
    let repo = repo_with_backup();
    let out = TestDir::new("restore");
    let dest = out.subdir("data", 0o700);
    fs::write(dest.join("precious.txt"), "do not touch").unwrap();
    let dest_before = tree_digest(&dest);
    let before = repo.digest();
    let run = repo
        .restore(&dest, &["--backup", "latest"])
        .assert_exit(2)
        .assert_mentions(s(&dest));
    // Refused before it announces a restore.
    assert!(!run.stderr_str().contains("restoring"), "{}", run.report());
    assert_same_tree(
        &dest_before,
        &tree_digest(&dest),
        "the non-empty restore directory",
    );
    assert_same_tree(
        &before,
        &repo.digest(),
        "repository after a refused restore",
    );
}

/// A flipped byte in a pack: restoring a backup that uses it fails with exit 3 naming the
/// pack; a backup of another cluster in the same repository, which does not use that pack,
/// still restores.
#[test]
fn corrupt_pack_fails_only_the_backup_using_it() {
    let repo = Repo::init();
    let packs = repo.path.join("packs");

    // The other cluster first, so the damaged cluster's new packs hold only its own chunks.
    let mut other = Cluster::archiving_to(&repo.spec);
    other.psql(
        "CREATE TABLE survivor(id int PRIMARY KEY, v text);
         INSERT INTO survivor SELECT g, 'other-' || g FROM generate_series(1, 1000) g;",
    );
    let want_other = other.psql("SELECT count(*) || ' ' || sum(length(v)) FROM survivor");
    let other_backup = json_str(&repo.backup(&other), "id");
    other.switch_wal_and_wait_archived();
    other.stop();
    let packs_before = files_below(&packs);
    assert!(
        !packs_before.is_empty(),
        "no pack files under {}",
        packs.display()
    );

    let mut damaged = Cluster::archiving_to(&repo.spec);
    damaged.pgbench_init(1);
    let damaged_backup = json_str(&repo.backup(&damaged), "id");
    damaged.switch_wal_and_wait_archived();
    damaged.stop();

    let new_packs: Vec<_> = files_below(&packs)
        .into_iter()
        .filter(|p| !packs_before.contains(p))
        .collect();
    let victim = new_packs
        .iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap_or_else(|| panic!("backup {damaged_backup} wrote no new pack"));
    let len = fs::metadata(victim).unwrap().len();
    flip_byte(victim, len / 2);
    let victim_name = victim.file_name().unwrap().to_string_lossy().into_owned();

    let before = repo.digest();
    let out = TestDir::new("restore");
    let run = repo
        .restore(&out.join("damaged"), &["--backup", &damaged_backup])
        .assert_exit(3);
    // The pack may be named by its file name or by its id (the name without an extension).
    let stem = victim_name.split('.').next().unwrap();
    run.assert_mentions(stem);
    assert_same_tree(&before, &repo.digest(), "repository after a failed restore");

    let survivor = out.join("survivor");
    repo.restore(&survivor, &["--backup", &other_backup])
        .assert_ok();
    let restored = Cluster::start_on(&survivor);
    assert_ne!(
        restored.wait_until_paused_or_ready(),
        RecoveryState::ShutDown
    );
    assert_eq!(
        restored.psql("SELECT count(*) || ' ' || sum(length(v)) FROM survivor"),
        want_other,
        "rows of the undamaged cluster's backup {other_backup}"
    );
}
