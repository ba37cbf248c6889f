//! Retention and garbage collection against real PostgreSQL: `expire`, `backup-keep`,
//! `gc` and leases. What remains restores with exactly its rows, what goes is gone, and
//! commands running at the same time (backup, mounts) lose nothing. Expire, gc and repack run
//! on both back ends.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// Every row of `t`, as one comparable string.
const T_ROWS: &str = "SELECT count(*) || ' rows, sum ' || coalesce(sum(id), 0) FROM t";

fn create_t(c: &Cluster) {
    c.psql("CREATE TABLE t(id int PRIMARY KEY, v text)");
}

/// Adds rows `from..=to` to `t`, each with a few hundred bytes that compress poorly.
fn add_rows(c: &Cluster, from: u32, to: u32) {
    c.psql(&format!(
        "INSERT INTO t SELECT g, repeat(md5(g::text), 8) FROM generate_series({from}, {to}) g"
    ));
}

/// Creates `table` with `rows` rows of hex digests: about 170 bytes a row on disk, which
/// compress to half at best, so the data takes room in packs.
fn add_noise(c: &Cluster, table: &str, rows: u32) {
    c.psql(&format!(
        "CREATE TABLE {table} AS SELECT g, md5(g::text) || md5((g * 7)::text) || \
         md5((g * 13)::text) || md5((g * 31)::text) AS v FROM generate_series(1, {rows}) g"
    ));
}

/// Restores `backup` to a fresh directory, starts a server on it and returns `query`'s answer.
fn restored(repo: &Repo, backup: &str, query: &str) -> String {
    let out = TestDir::new("restore");
    let to = out.join("data");
    repo.restore(&to, &["--backup", backup]).assert_ok();
    let server = Cluster::start_on(&to);
    assert_ne!(
        server.wait_until_paused_or_ready(),
        RecoveryState::ShutDown,
        "server on the restore of {backup} shut down"
    );
    server.psql(query)
}

fn ids(list: &[serde_json::Value]) -> Vec<String> {
    let mut v: Vec<String> = list.iter().map(|b| json_str(b, "id")).collect();
    v.sort();
    v
}

/// The WAL segment file that holds `lsn` on timeline 1 (16 MiB segments).
fn segment_of(lsn: &str) -> String {
    let lsn = parse_lsn(lsn);
    format!(
        "{:08X}{:08X}{:08X}",
        1,
        lsn >> 32,
        (lsn & 0xFFFF_FFFF) >> 24
    )
}

/// Names of the archived WAL segments in the repository, sorted.
fn archived_segments(repo: &Repo) -> Vec<String> {
    let mut v: Vec<String> = repo
        .objects("wal/")
        .into_iter()
        .filter_map(|(k, _)| k.rsplit('/').next().map(str::to_string))
        .filter(|n| n.len() == 24)
        .collect();
    v.sort();
    v
}

/// Total bytes of the packs.
fn pack_bytes(repo: &Repo) -> u64 {
    repo.objects("packs/").iter().map(|(_, n)| n).sum()
}

#[track_caller]
fn gc(repo: &Repo, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    repo.run("gc", &all).assert_ok().json()
}

#[track_caller]
fn expire(repo: &Repo, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    repo.run("expire", &all).assert_ok().json()
}

/// The `keep` flag and reasons of each backup in an expire report.
fn verdicts(report: &serde_json::Value) -> Vec<(String, bool, String)> {
    report["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                json_str(v, "id"),
                v["keep"].as_bool().unwrap(),
                v["reasons"].to_string(),
            )
        })
        .collect()
}

/// Four backups; one marked; expire --keep-last 1 (dry, then for real); gc; the survivors
/// restore exactly; WAL before the oldest survivor is gone. Then the mark is lifted.
fn expire_keep_marks_and_gc(store: Store) {
    let repo = Repo::init_on(store);
    let source = Cluster::archiving_to(&repo.spec);
    create_t(&source);
    let mut backups = Vec::new();
    let mut want = Vec::new();
    for i in 0..4u32 {
        add_rows(&source, i * 2000 + 1, (i + 1) * 2000);
        if i == 2 {
            add_noise(&source, "scratch", 100_000);
        }
        want.push(source.psql(T_ROWS));
        backups.push(repo.backup(&source));
        if i == 2 {
            source.psql("DROP TABLE scratch");
        }
    }
    let id: Vec<String> = backups.iter().map(|b| json_str(b, "id")).collect();
    repo.run("backup-keep", &[&id[1]]).assert_ok();
    // The archiver pushes the last backup's history file in its own time: let it finish, so
    // the repository holds still while the dry run is compared.
    source.switch_wal_and_wait_archived();

    let before = repo.digest();
    let dry = expire(&repo, &["--keep-last", "1", "--dry-run"]);
    assert_same_tree(&before, &repo.digest(), "repository after expire --dry-run");
    let v = verdicts(&dry);
    let keep: Vec<(&str, bool)> = v.iter().map(|(i, k, _)| (i.as_str(), *k)).collect();
    assert_eq!(
        keep,
        vec![
            (id[0].as_str(), false),
            (id[1].as_str(), true),
            (id[2].as_str(), false),
            (id[3].as_str(), true)
        ],
        "{dry}"
    );
    assert!(
        v[1].2.contains("marked"),
        "reason for {}: {}",
        id[1],
        v[1].2
    );
    assert!(v[3].2.contains("last"), "reason for {}: {}", id[3], v[3].2);

    let wal_before = archived_segments(&repo);
    let first_kept = segment_of(&json_str(&backups[1], "start_lsn"));
    assert!(
        wal_before.iter().any(|s| *s < first_kept),
        "no WAL before {first_kept} to expire: {wal_before:?}"
    );
    expire(&repo, &["--keep-last", "1"]);
    assert_eq!(ids(&repo.list()), vec![id[1].clone(), id[3].clone()]);
    let wal_after = archived_segments(&repo);
    assert_eq!(
        wal_after.first(),
        Some(&first_kept),
        "WAL kept must start at {}'s start segment",
        id[1]
    );
    assert!(wal_after
        .iter()
        .all(|s| wal_before.contains(s) || *s > first_kept));

    let bytes_before = pack_bytes(&repo);
    let report = gc(&repo, &[]);
    let freed = json_u64(&report, "freed_bytes");
    assert!(freed > 0, "gc freed nothing: {report}");
    assert_eq!(
        pack_bytes(&repo),
        bytes_before - freed + json_u64(&report, "written_bytes"),
        "pack bytes on disk do not match the report: {report}"
    );
    assert_eq!(
        restored(&repo, &id[1], T_ROWS),
        want[1],
        "rows of {}",
        id[1]
    );
    assert_eq!(
        restored(&repo, &id[3], T_ROWS),
        want[3],
        "rows of {}",
        id[3]
    );

    // A second gc has nothing left to free.
    let again = gc(&repo, &[]);
    assert_eq!(json_u64(&again, "freed_bytes"), 0, "{again}");

    repo.run("backup-keep", &["--off", &id[1]]).assert_ok();
    repo.run("backup-keep", &["--off", &id[1]]).assert_exit(4);
    expire(&repo, &["--keep-last", "1"]);
    assert_eq!(ids(&repo.list()), vec![id[3].clone()]);
    assert_eq!(
        archived_segments(&repo).first(),
        Some(&segment_of(&json_str(&backups[3], "start_lsn")))
    );
    gc(&repo, &[]);
    assert_eq!(
        restored(&repo, &id[3], T_ROWS),
        want[3],
        "rows of {}",
        id[3]
    );
}

/// The first backup holds a large table; it is mostly deleted and rewritten, a second backup
/// reuses the unchanged files, the first expires: its packs are mostly garbage, gc repacks
/// them and rewrites the second backup's manifest, which still restores exactly.
fn repack_after_most_data_expired(store: Store) {
    let repo = Repo::init_on(store);
    let source = Cluster::archiving_to(&repo.spec);
    create_t(&source);
    add_rows(&source, 1, 150_000);
    let first = json_str(&repo.backup(&source), "id");
    source.psql("DELETE FROM t WHERE id > 1000; VACUUM FULL t;");
    let want = source.psql(T_ROWS);
    let second = json_str(&repo.backup(&source), "id");
    expire(&repo, &["--keep-last", "1"]);
    assert_eq!(
        ids(&repo.list()),
        vec![second.clone()],
        "{first} should be gone"
    );

    let bytes_before = pack_bytes(&repo);
    let dry = gc(&repo, &["--dry-run"]);
    assert!(
        json_u64(&dry, "repacked_packs") > 0,
        "nothing to repack: {dry}"
    );
    assert_eq!(
        pack_bytes(&repo),
        bytes_before,
        "gc --dry-run changed packs"
    );
    let report = gc(&repo, &["--repack-threshold", "50%"]);
    assert!(json_u64(&report, "repacked_packs") > 0, "{report}");
    assert_eq!(
        report["rewritten_backups"],
        serde_json::json!([second]),
        "{report}"
    );
    let after = pack_bytes(&repo);
    assert!(
        after * 2 < bytes_before,
        "repacking freed too little: {bytes_before} → {after} bytes\n{report}"
    );
    assert_eq!(restored(&repo, &second, T_ROWS), want);
    // Repacked data is live data: nothing more to do.
    let again = gc(&repo, &[]);
    assert_eq!(json_u64(&again, "repacked_packs"), 0, "{again}");
    assert_eq!(json_u64(&again, "freed_bytes"), 0, "{again}");
}

on_both_stores!(expire_keep_marks_and_gc, repack_after_most_data_expired);

/// gc runs again and again while a backup writes packs no manifest references yet: the
/// backup restores exactly afterwards.
#[test]
fn gc_during_backup_loses_nothing() {
    let repo = Repo::init();
    // Autovacuum off: nothing but this test writes while the backup runs.
    let source = Cluster::start_new(ClusterOptions {
        settings: vec![("autovacuum".into(), "off".into())],
        ..ClusterOptions::archiving_to(&repo.spec)
    });
    create_t(&source);
    add_rows(&source, 1, 1000);
    repo.backup(&source);
    // The next backup writes several packs of this before its manifest.
    add_noise(&source, "big", 700_000);
    add_rows(&source, 1001, 2000);
    let want = source.psql(T_ROWS);
    let big = "SELECT count(*) || ' ' || md5(string_agg(v, '' ORDER BY g)) FROM big";
    let want_big = source.psql(big);

    let mut args = repo.args("backup", &["--json"]);
    args.extend(source.backup_args());
    let mut backup = pgsnapfs_command(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start backup");
    // Runs in which gc found packs of the running backup unreferenced, and condemned them.
    let mut tempted = 0;
    let mut runs = 0;
    while backup.try_wait().unwrap().is_none() {
        let report = gc(&repo, &[]);
        runs += 1;
        if json_u64(&report, "condemned_packs") > 0 {
            tempted += 1;
        }
    }
    let out = backup.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "backup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = json_str(&serde_json::from_slice(&out.stdout).unwrap(), "id");
    eprintln!("{runs} gc runs, {tempted} found the running backup's packs unreferenced");
    assert!(
        tempted > 0,
        "no gc run saw a pack of the running backup before its manifest; nothing was tested"
    );
    // Once the backup is published its packs are referenced; later runs keep them.
    gc(&repo, &[]);
    gc(&repo, &[]);
    assert_eq!(
        restored(&repo, &id, &format!("{T_ROWS}; {big}")),
        format!("{want}\n{want_big}")
    );
}

/// The leases `pgsnapfs locks --json` lists.
fn locks(repo: &Repo) -> Vec<serde_json::Value> {
    as_root(repo, "locks", &["--json"])
        .assert_ok()
        .json()
        .as_array()
        .unwrap()
        .clone()
}

/// Runs pgsnapfs as root: mounts need it, and the lifecycle commands of these tests must
/// read the leases the mounts write.
fn as_root(repo: &Repo, sub: &str, args: &[&str]) -> Run {
    pgsnapfs_as_root(&repo.args(sub, args))
}

fn mount_background(repo: &Repo, mnt: &Path, args: &[&str]) {
    let mut all = vec![mnt.to_str().unwrap(), "--background"];
    all.extend_from_slice(args);
    as_root(repo, "mount", &all).assert_ok();
}

fn umount(mnt: &Path) {
    pgsnapfs_as_root(&["umount", mnt.to_str().unwrap()]).assert_ok();
}

fn mountpoint(work: &TestDir, name: &str) -> PathBuf {
    std::fs::canonicalize(work.subdir(name, 0o755)).unwrap()
}

/// A mount of a backup keeps it (pinned) through expire; a reader that has a backup open in
/// a catalogue mount (a `cp` under way) when the backup expires keeps reading the same bytes
/// through gc, whose deletion waits for the mount, although the listing no longer shows it.
#[test]
fn mounts_keep_working_through_expire_and_gc() {
    let repo = Repo::init();
    let source = Cluster::archiving_to(&repo.spec);
    create_t(&source);
    add_rows(&source, 1, 2000);
    add_noise(&source, "scratch", 100_000);
    let first = json_str(&repo.backup(&source), "id");
    source.psql("DROP TABLE scratch");
    add_rows(&source, 2001, 3000);
    let second = json_str(&repo.backup(&source), "id");

    let work = TestDir::new("mounts");
    // What the first backup holds, read through a mount that is gone before anything expires
    // (so no cache of the later mount holds these bytes).
    let probe = mountpoint(&work, "probe");
    mount_background(&repo, &probe, &[]);
    let want = tree_digest(&probe.join("backups").join(&first));
    umount(&probe);

    let cat = mountpoint(&work, "cat");
    mount_background(&repo, &cat, &[]);
    let view = mountpoint(&work, "view");
    let scratch = work.join("scratch");
    mount_background(
        &repo,
        &view,
        &["--backup", &first, "--scratch", scratch.to_str().unwrap()],
    );

    // The reader's handle on the backup's directory, opened before it expires.
    let open_dir = std::fs::File::open(cat.join("backups").join(&first)).unwrap();
    // "/." so the walk follows the descriptor's link into the directory.
    let held = PathBuf::from(format!("/proc/self/fd/{}/.", open_dir.as_raw_fd()));

    let report = as_root(&repo, "expire", &["--keep-last", "1", "--json"])
        .assert_ok()
        .json();
    let v = verdicts(&report);
    assert!(
        v[0].1 && v[0].2.contains("mount"),
        "{first} is mounted and must be kept: {report}"
    );
    umount(&view);
    as_root(&repo, "expire", &["--keep-last", "1"]).assert_ok();
    assert_eq!(ids(&repo.list()), vec![second.clone()]);

    let report = as_root(&repo, "gc", &["--json"]).assert_ok().json();
    assert_eq!(json_u64(&report, "freed_bytes"), 0, "{report}");
    assert!(json_u64(&report, "condemned_packs") > 0, "{report}");
    assert_same_tree(
        &want,
        &tree_digest(&held),
        "expired backup read through the catalogue mount after gc",
    );
    // The catalogue follows the repository: the expired backup leaves the listing.
    wait_for(std::time::Duration::from_secs(30), || {
        match cat.join("backups").join(&first).exists() {
            true => Err(format!("{first} is still listed")),
            false => Ok(()),
        }
    })
    .unwrap();
    drop(open_dir);
    umount(&cat);
    let report = as_root(&repo, "gc", &["--json"]).assert_ok().json();
    assert!(json_u64(&report, "freed_bytes") > 0, "{report}");
}

/// A mount killed with SIGKILL leaves its lease; it is stale at once on this machine, so the
/// next expire takes it over and gc does not wait for it.
#[test]
fn stale_lease_of_a_killed_process_is_taken_over() {
    let repo = Repo::init();
    let source = Cluster::archiving_to(&repo.spec);
    create_t(&source);
    add_noise(&source, "scratch", 100_000);
    repo.backup(&source);
    source.psql("DROP TABLE scratch");
    add_rows(&source, 1, 100);
    let second = json_str(&repo.backup(&source), "id");

    let work = TestDir::new("killed");
    let mnt = mountpoint(&work, "cat");
    let mut cmd = std::process::Command::new(pgsnapfs_bin());
    cmd.args(repo.args("mount", &[mnt.to_str().unwrap()]))
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("start mount");
    let ready = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .any(|l| l.starts_with("pgsnapfs: mounted"));
    assert!(ready, "the mount did not start");
    child.kill().unwrap();
    child.wait().unwrap();
    let _ = pgsnapfs_as_root(&["umount", "--lazy", mnt.to_str().unwrap()]);

    let held = locks(&repo);
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0]["command"], "mount");
    assert_eq!(held[0]["stale"], true, "{held:?}");

    as_root(&repo, "expire", &["--keep-last", "1"]).assert_ok();
    assert!(
        locks(&repo).is_empty(),
        "expire did not remove the stale lease"
    );
    let report = as_root(&repo, "gc", &["--json"]).assert_ok().json();
    assert!(json_u64(&report, "freed_bytes") > 0, "{report}");
    let listed = as_root(&repo, "list", &["--json"]).assert_ok().json();
    assert_eq!(ids(listed["backups"].as_array().unwrap()), vec![second]);
}

/// Two clusters archive into one repository and are backed up at the same moment (so their
/// backups start in the same second and want the same id), while gc runs: both backups are
/// published, under different ids, and each restores with exactly its own rows.
#[test]
fn two_clusters_back_up_into_one_repository_at_once() {
    let repo = Repo::init();
    let clusters = [
        Cluster::archiving_to(&repo.spec),
        Cluster::archiving_to(&repo.spec),
    ];
    let mut want = Vec::new();
    for (i, c) in clusters.iter().enumerate() {
        create_t(c);
        add_rows(c, 1, 1000 * (i as u32 + 1));
        want.push(c.psql(T_ROWS));
    }
    let ids: Vec<String> = std::thread::scope(|s| {
        let running: Vec<_> = clusters
            .iter()
            .map(|c| s.spawn(|| json_str(&repo.backup(c), "id")))
            .collect();
        // WAL pushes and gc runs while both backups are in flight.
        for c in &clusters {
            c.psql("SELECT pg_switch_wal()");
        }
        while !running.iter().all(|t| t.is_finished()) {
            gc(&repo, &[]);
        }
        running.into_iter().map(|t| t.join().unwrap()).collect()
    });
    eprintln!("backup ids: {ids:?}");
    assert_ne!(ids[0], ids[1], "two backups got one id");
    for c in &clusters {
        c.switch_wal_and_wait_archived();
    }
    gc(&repo, &[]);
    let listed = repo.list();
    assert_eq!(listed.len(), 2, "{listed:?}");
    for (i, c) in clusters.iter().enumerate() {
        let b = listed
            .iter()
            .find(|b| json_str(b, "id") == ids[i])
            .unwrap_or_else(|| panic!("backup {} is not listed: {listed:?}", ids[i]));
        assert_eq!(json_str(b, "system_identifier"), c.system_identifier());
        assert_eq!(restored(&repo, &ids[i], T_ROWS), want[i], "cluster {i}");
    }
}
