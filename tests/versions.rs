//! Every supported PostgreSQL major, 13 to 18: backup, WAL archive, restore to a point in time,
//! a mounted point in time with a server of that major on it, and verify. 15 is Debian's; the
//! others are the npm builds scripts/test installs (see `server_bin`). psql is Debian's 15
//! for all of them.

mod common;

use common::*;
use std::fs;
use std::path::Path;
use std::time::Duration;

/// Every row of `t`, as one comparable string.
const T_ROWS: &str =
    "SELECT coalesce(string_agg(id || ':' || v, ',' ORDER BY id), '<empty>') FROM t";

/// One test per major, so they run in parallel and a failure names the major.
macro_rules! each_major {
    ($($name:ident => $major:literal),* $(,)?) => {$(
        #[test]
        fn $name() {
            round_trip($major)
        }
    )*};
}

each_major!(
    postgres_13 => 13,
    postgres_14 => 14,
    postgres_15 => 15,
    postgres_16 => 16,
    postgres_17 => 17,
    postgres_18 => 18,
);

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A started cluster of `major` archiving into `repo`.
fn cluster_of(major: u32, repo: &Repo) -> Cluster {
    let c = Cluster::start_new(ClusterOptions {
        server_bin: Some(server_bin(major)),
        ..ClusterOptions::archiving_to(&repo.spec)
    });
    let version: u32 = c.psql("SHOW server_version_num").parse().unwrap();
    assert_eq!(version / 10000, major, "the cluster runs the wrong major");
    c
}

/// Backup, writes, a target time, more writes; then the state at the target, three ways:
/// restored, mounted with a server on the view, and through verify.
fn round_trip(major: u32) {
    let bin = server_bin(major);
    let repo = Repo::init();
    let source = cluster_of(major, &repo);
    source.psql(
        "CREATE TABLE t(id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, 'base-' || g FROM generate_series(1, 200) g;",
    );
    let backup = repo.backup(&source);
    assert_eq!(json_u64(&backup, "pg_major"), u64::from(major), "{backup}");
    assert_eq!(
        json_str(&backup, "system_identifier"),
        source.system_identifier()
    );

    // After the backup and before the target: these rows come from WAL replay.
    source.switch_wal_and_wait_archived();
    source.psql(
        "UPDATE t SET v = 'replayed-' || id WHERE id % 3 = 0;
         DELETE FROM t WHERE id > 190;
         INSERT INTO t VALUES (1000, 'late row');",
    );
    let want = source.psql(T_ROWS);
    let target = source.now();
    std::thread::sleep(Duration::from_millis(1100));
    source.psql("UPDATE t SET v = 'after target'; INSERT INTO t VALUES (2000, 'too late')");
    source.switch_wal_and_wait_archived();
    let goal = ["--target-time", target.as_str()];

    let out = TestDir::new("restore");
    let to = out.join("data");
    repo.restore(&to, &goal)
        .assert_ok()
        .assert_mentions(&format!("PostgreSQL {major}'s server"));
    // A server of another major refuses the directory before touching it. A newer one says
    // which major made it; an older one already stops at settings it does not know.
    let other = if major < 18 { 18 } else { 17 };
    let refused = Cluster::try_start_on_bin(&to, &server_bin(other), &[])
        .err()
        .unwrap_or_else(|| panic!("PostgreSQL {other} started on a PostgreSQL {major} restore"));
    assert!(
        other < major || refused.contains(&format!("initialized by PostgreSQL version {major}")),
        "{refused}"
    );
    let restored = Cluster::try_start_on_bin(&to, &bin, &[]).unwrap_or_else(|e| panic!("{e}"));
    restored.wait_until_paused();
    assert_eq!(
        restored.psql(T_ROWS),
        want,
        "PostgreSQL {major}: rows after restore to {target}"
    );
    drop(restored);

    let work = TestDir::new("view");
    let mnt = work.subdir("mnt", 0o755);
    let scratch = work.join("scratch");
    let mut args = repo.args("mount", &[s(&mnt)]);
    args.extend(goal.iter().map(|a| a.to_string()));
    args.extend([
        "--scratch".into(),
        s(&scratch).into(),
        "--background".into(),
    ]);
    pgsnapfs_as_root(&args)
        .assert_ok()
        .assert_mentions(&format!("start PostgreSQL {major} on it"));
    let view = Cluster::try_start_on_bin(&mnt, &bin, &[]).unwrap_or_else(|e| panic!("{e}"));
    view.wait_until_paused();
    assert_eq!(
        view.psql(T_ROWS),
        want,
        "PostgreSQL {major}: rows on the view at {target}"
    );
    drop(view);
    pgsnapfs_as_root(&["umount", s(&mnt)]).assert_ok();

    let report = repo
        .run(
            "verify",
            &[&goal[..], &["--pg-bin", s(&bin), "--json"]].concat(),
        )
        .assert_ok()
        .json();
    assert_eq!(report["ok"], true, "verify of PostgreSQL {major}: {report}");
    assert!(json_u64(&report, "tables") > 0, "{report}");

    // verify refuses another major's server, naming both.
    let other = if major == 15 { 16 } else { 15 };
    repo.run(
        "verify",
        &[&goal[..], &["--pg-bin", s(&server_bin(other))]].concat(),
    )
    .assert_exit(2)
    .assert_mentions(&format!("PostgreSQL {major}"))
    .assert_mentions(&format!("PostgreSQL) {other}."));
    assert!(fs::read_dir(&mnt).unwrap().next().is_none());
}

/// pg_upgrade makes a new cluster (new system identifier, new major) that backs up into the
/// same repository: each cluster is a lineage of its own, restores pick one with --system, and
/// `expire --keep-last 1` keeps the newest backup of each.
#[test]
fn upgraded_cluster_starts_a_new_lineage() {
    let repo = Repo::init();
    let mut old = cluster_of(15, &repo);
    old.psql("CREATE TABLE t(id int, v text); INSERT INTO t VALUES (1, 'before upgrade')");
    repo.backup(&old);
    old.psql("INSERT INTO t VALUES (2, 'old cluster, newest backup')");
    let old_newest = json_str(&repo.backup(&old), "id");
    let old_rows = old.psql(T_ROWS);
    let old_sysid = old.system_identifier();
    old.stop();

    let new = cluster_of(16, &repo);
    new.psql("CREATE TABLE t(id int, v text); INSERT INTO t VALUES (1, 'after upgrade')");
    repo.backup(&new);
    new.psql("INSERT INTO t VALUES (3, 'new cluster, newest backup')");
    let new_newest = json_str(&repo.backup(&new), "id");
    let new_rows = new.psql(T_ROWS);
    let new_sysid = new.system_identifier();
    assert_ne!(old_sysid, new_sysid);

    let majors: Vec<(String, u64)> = repo
        .list()
        .iter()
        .map(|b| (json_str(b, "system_identifier"), json_u64(b, "pg_major")))
        .collect();
    for (sysid, major) in [(&old_sysid, 15), (&new_sysid, 16)] {
        assert_eq!(
            majors
                .iter()
                .filter(|(s, m)| s == sysid && *m == major)
                .count(),
            2,
            "list: {majors:?}"
        );
    }

    // Two clusters: which one must be said, and the refusal names both.
    let out = TestDir::new("restore");
    repo.restore(&out.join("any"), &["--backup", "latest"])
        .assert_exit(2)
        .assert_mentions("--system")
        .assert_mentions(&old_sysid)
        .assert_mentions(&new_sysid);

    repo.run("expire", &["--keep-last", "1"]).assert_ok();
    let left: Vec<String> = repo.list().iter().map(|b| json_str(b, "id")).collect();
    let mut want = vec![old_newest, new_newest];
    want.sort();
    let mut got = left.clone();
    got.sort();
    assert_eq!(
        got, want,
        "expire --keep-last 1 must keep the newest of each cluster"
    );

    for (sysid, major, rows) in [(&old_sysid, 15, &old_rows), (&new_sysid, 16, &new_rows)] {
        let to = out.join(format!("pg{major}"));
        repo.restore(&to, &["--system", sysid, "--backup", "latest"])
            .assert_ok();
        let server = Cluster::try_start_on_bin(&to, &server_bin(major), &[])
            .unwrap_or_else(|e| panic!("{e}"));
        server.wait_until_paused_or_ready();
        assert_eq!(&server.psql(T_ROWS), rows, "restore of the {major} lineage");
    }
}
