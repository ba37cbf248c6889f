//! Backup, WAL archive and restore against real PostgreSQL: what a restored server contains,
//! and what the WAL archive accepts and refuses.

mod common;

use common::*;
use std::time::Duration;

/// Every row of `t`, as one comparable string.
const T_ROWS: &str =
    "SELECT coalesce(string_agg(id || ':' || v, ',' ORDER BY id), '<empty>') FROM t";
/// pgbench's accounts: row count and total balance (pgbench changes the balances).
const ACCOUNTS: &str =
    "SELECT count(*) || ' rows, balance ' || sum(abalance) FROM pgbench_accounts";

/// `t(id int primary key, v text)` with rows 1..=100.
fn create_t(c: &Cluster) {
    c.psql(
        "CREATE TABLE t(id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, 'base-' || g FROM generate_series(1, 100) g;",
    );
}

/// Writes after the recovery target: these must not be in the restored server.
fn batch_b(c: &Cluster) {
    c.psql(
        "INSERT INTO t SELECT g, 'b-' || g FROM generate_series(151, 200) g;
         UPDATE t SET v = 'b-updated' WHERE id <= 10;
         DELETE FROM t WHERE id BETWEEN 11 AND 20;",
    );
    c.pgbench_run(1, 2);
}

enum Target {
    Time,
    Lsn,
    Name,
}

/// Backup, writes, target, more writes; restore to the target and compare with the source as
/// it was at the target.
fn point_in_time_round_trip(target: Target, store: Store) {
    let repo = Repo::init_on(store);
    let source = Cluster::archiving_to(&repo.spec);
    source.pgbench_init(1);
    create_t(&source);
    let backup = repo.backup(&source);
    assert_eq!(
        json_str(&backup, "system_identifier"),
        source.system_identifier(),
        "backup JSON: {backup}"
    );

    // Batch A: after the backup, before the target.
    source.pgbench_run(2, 2);
    source.psql("INSERT INTO t SELECT g, 'a-' || g FROM generate_series(101, 150) g");
    let want_t = source.psql(T_ROWS);
    let want_accounts = source.psql(ACCOUNTS);

    let target_args: Vec<String> = match target {
        Target::Time => {
            // now() in a transaction of its own, after batch A committed; batch B commits
            // more than a second later.
            let t = source.now();
            std::thread::sleep(Duration::from_millis(1100));
            vec!["--target-time".into(), t]
        }
        Target::Lsn => vec!["--target-lsn".into(), source.current_wal_lsn()],
        Target::Name => {
            source.psql("SELECT pg_create_restore_point('before_b')");
            vec!["--target-name".into(), "before_b".into()]
        }
    };

    batch_b(&source);
    assert_ne!(source.psql(T_ROWS), want_t, "batch B changed nothing");
    source.switch_wal_and_wait_archived();

    let out = TestDir::new("restore");
    let to = out.join("data");
    let args: Vec<&str> = target_args.iter().map(String::as_str).collect();
    repo.restore(&to, &args).assert_ok();
    let restored = Cluster::start_on(&to);
    restored.wait_until_paused();
    assert_eq!(
        restored.psql(T_ROWS),
        want_t,
        "table t after restore with {target_args:?}: batch A must be there, batch B not"
    );
    assert_eq!(
        restored.psql(ACCOUNTS),
        want_accounts,
        "pgbench_accounts after restore with {target_args:?}"
    );
}

fn restore_to_target_time(store: Store) {
    point_in_time_round_trip(Target::Time, store);
}

#[test]
fn restore_to_target_lsn() {
    point_in_time_round_trip(Target::Lsn, Store::Local);
}

#[test]
fn restore_to_target_name() {
    point_in_time_round_trip(Target::Name, Store::Local);
}

// The repository's contract on both back ends: one test body each.
on_both_stores!(
    restore_to_target_time,
    restore_latest_backup_without_target,
    second_backup_stores_only_changes,
    wal_push_is_idempotent_and_refuses_different_content,
    wal_fetch_of_missing_segment_exits_4,
);

/// `restore --backup latest`: the restored server reaches consistency with the rows the
/// backup saw; `list` and the backup JSON describe the backup.
fn restore_latest_backup_without_target(store: Store) {
    let repo = Repo::init_on(store);
    let source = Cluster::archiving_to(&repo.spec);
    source.pgbench_init(1);
    create_t(&source);
    source.pgbench_run(1, 2);
    let want_t = source.psql(T_ROWS);
    let want_accounts = source.psql(ACCOUNTS);
    let backup = repo.backup(&source);

    let id = json_str(&backup, "id");
    assert!(!id.is_empty(), "backup JSON: {backup}");
    assert_eq!(json_u64(&backup, "timeline"), 1, "backup JSON: {backup}");
    assert_eq!(
        json_u64(&backup, "pg_major"),
        u64::from(test_major()),
        "backup JSON: {backup}"
    );
    assert!(
        parse_lsn(&json_str(&backup, "start_lsn")) <= parse_lsn(&json_str(&backup, "stop_lsn")),
        "start_lsn after stop_lsn: {backup}"
    );
    assert!(
        json_u64(&backup, "size_logical") > 20 << 20,
        "a pgbench scale-1 cluster is more than 20 MiB: {backup}"
    );
    // On S3 a backup records what it cost: whole packs, not a request per file.
    match store {
        Store::Local => assert!(backup.get("requests").is_none(), "{backup}"),
        Store::S3 => {
            let r = &backup["requests"];
            let files = json_u64(&backup, "files");
            let total = requests_total(r);
            assert!(
                json_u64(r, "put") + json_u64(r, "upload_part") > 0,
                "{backup}"
            );
            assert!(
                total * 10 < files,
                "{total} requests for a backup of {files} files: {backup}"
            );
        }
    }
    let listed: Vec<String> = repo.list().iter().map(|b| json_str(b, "id")).collect();
    assert_eq!(listed, vec![id.clone()], "list --json after one backup");

    let out = TestDir::new("restore");
    let to = out.join("data");
    repo.restore(&to, &["--backup", "latest"]).assert_ok();
    assert!(
        to.join("recovery.signal").is_file(),
        "restore wrote no recovery.signal"
    );
    let restored = Cluster::start_on(&to);
    let state = restored.wait_until_paused_or_ready();
    assert_ne!(
        state,
        RecoveryState::ShutDown,
        "server on the restored backup {id} exited\n{}",
        restored.log_tail(40)
    );
    assert_eq!(restored.psql(T_ROWS), want_t, "table t in backup {id}");
    assert_eq!(
        restored.psql(ACCOUNTS),
        want_accounts,
        "pgbench_accounts in backup {id}"
    );
}

/// Deduplication: a second backup after `pgbench -T 5` stores a small fraction of what the
/// first stored.
///
/// pgbench runs at full speed on a hot set of 2,000 accounts, as OLTP traffic concentrates on
/// recent rows. With pgbench's default script every transaction updates a random account
/// anywhere in the table plus a random leaf page of its primary key, so it touches a new 64 KiB
/// chunk almost every time: measured at scale 2, 5 s at 2,500 tps changes 78% of the chunks,
/// and even 100 rate-limited transactions change 30% of the compressed bytes (mostly the
/// index). No chunk-level deduplication could pass a 25% bound on that workload.
fn second_backup_stores_only_changes(store: Store) {
    let repo = Repo::init_on(store);
    let source = Cluster::archiving_to(&repo.spec);
    source.pgbench_init(2);
    let first = repo.backup(&source);
    let script = source.dir().join("hot-set.sql");
    std::fs::write(
        &script,
        "\\set aid random(1, 2000)\n\
         \\set delta random(-5000, 5000)\n\
         BEGIN;\n\
         UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;\n\
         SELECT abalance FROM pgbench_accounts WHERE aid = :aid;\n\
         INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) \
         VALUES (1, 1, :aid, :delta, CURRENT_TIMESTAMP);\n\
         END;\n",
    )
    .unwrap();
    let report = source.pgbench(&[
        "-T",
        "5",
        "-c",
        "2",
        "-j",
        "2",
        "-f",
        script.to_str().unwrap(),
    ]);
    let second = repo.backup(&source);
    // On 17+ the harness turns summarize_wal on: the second backup reads only changed chunks.
    let mode = if test_major() >= 17 {
        "wal-summaries"
    } else {
        "full"
    };
    assert_eq!(second["read"]["mode"], mode, "{second}");
    let (a, b) = (
        json_u64(&first, "size_stored_new"),
        json_u64(&second, "size_stored_new"),
    );
    assert!(a > 0, "first backup stored nothing: {first}");
    assert!(
        b * 4 < a,
        "second backup stored {b} new bytes, not under 25% of the first backup's {a}\n\
         first: {first}\nsecond: {second}\npgbench: {report}"
    );
}

/// A table in a tablespace comes back. Restoring must not write into the live tablespace's
/// directory: it either refuses (naming the location) or puts the tablespace elsewhere;
/// `--tablespace-map OID=DIR` puts it where asked.
#[test]
fn tablespace_round_trip() {
    let repo = Repo::init();
    let mut source = Cluster::archiving_to(&repo.spec);
    let location = source.dir().subdir("tablespace", 0o700);
    source.psql(&format!(
        "CREATE TABLESPACE ts LOCATION '{}';
         CREATE TABLE in_ts(id int PRIMARY KEY, v text) TABLESPACE ts;
         INSERT INTO in_ts SELECT g, 'ts-' || g FROM generate_series(1, 500) g;",
        location.display()
    ));
    let oid = source.psql("SELECT oid FROM pg_tablespace WHERE spcname = 'ts'");
    let want = source.psql("SELECT count(*) || ' ' || sum(length(v)) FROM in_ts");
    repo.backup(&source);
    source.stop();
    let live_tablespace = tree_digest(&location);

    let out = TestDir::new("restore");
    let to = out.join("data");
    let plain = repo.restore(&to, &["--backup", "latest"]);
    assert_same_tree(
        &live_tablespace,
        &tree_digest(&location),
        "the live tablespace directory after a restore elsewhere",
    );
    let restored = if plain.status.success() {
        Cluster::start_on(&to)
    } else {
        let plain = plain
            .assert_exit(2)
            .assert_mentions(&location.display().to_string());
        assert!(
            is_absent_or_empty(&to),
            "refused restore left files in {}\n{}",
            to.display(),
            plain.report()
        );
        let mapped = out.subdir("ts-mapped", 0o700);
        let map = format!("{oid}={}", mapped.display());
        repo.restore(&to, &["--backup", "latest", "--tablespace-map", &map])
            .assert_ok();
        assert!(
            !is_absent_or_empty(&mapped),
            "--tablespace-map {map}: nothing written there"
        );
        Cluster::start_on(&to)
    };
    assert_ne!(
        restored.wait_until_paused_or_ready(),
        RecoveryState::ShutDown
    );
    assert_eq!(
        restored.psql("SELECT count(*) || ' ' || sum(length(v)) FROM in_ts"),
        want,
        "rows of the table in tablespace ts"
    );
    assert_same_tree(
        &live_tablespace,
        &tree_digest(&location),
        "the original tablespace directory after starting the restored server",
    );
}

/// A cluster without archiving, with `n` finished WAL segments of its own; returns the names.
fn cluster_with_segments(n: usize) -> (Cluster, Vec<String>) {
    let c = Cluster::start_new(ClusterOptions::default());
    c.psql("CREATE TABLE w(x int)");
    let mut names = Vec::new();
    for i in 0..n {
        c.psql(&format!("INSERT INTO w VALUES ({i})"));
        names.push(c.switch_wal());
    }
    (c, names)
}

/// wal-push run as archive_command runs it: in the data directory, with `pg_wal/NAME`.
fn push_from_pg_wal(repo: &Repo, c: &Cluster, name: &str) -> Run {
    pgsnapfs_in(
        &c.data,
        &repo.args("wal-push", &[&format!("pg_wal/{name}")]),
    )
}

/// Pushing the same segment again succeeds; a different file under an archived name is
/// refused with a message saying it differs, and the archive keeps the original.
fn wal_push_is_idempotent_and_refuses_different_content(store: Store) {
    let repo = Repo::init_on(store);
    let (source, names) = cluster_with_segments(1);
    let name = &names[0];
    let original = std::fs::read(source.data.join("pg_wal").join(name)).expect("read segment");

    // -v: the second push logs that the segment was already there.
    let push_json = || {
        pgsnapfs_in(
            &source.data,
            &repo.args("wal-push", &["-v", "--json", &format!("pg_wal/{name}")]),
        )
        .assert_ok()
    };
    let first = push_json().json();
    let again = push_json();
    // A log on a pipe (archive_command's stderr goes to the server log) has no colour codes.
    let log = again.stderr_str();
    assert!(
        log.contains("already archived") && !log.contains('\u{1b}'),
        "{}",
        again.report()
    );
    let again = again.json();
    // Both runs say what happened, in the same shape.
    assert_eq!(first["outcome"], "stored", "{first}");
    assert_eq!(again["outcome"], "already_archived", "{again}");
    for out in [&first, &again] {
        assert_eq!(out["name"], name.as_str(), "{out}");
        assert_eq!(json_u64(out, "bytes"), original.len() as u64, "{out}");
        assert!(json_str(out, "key").ends_with(name.as_str()), "{out}");
    }
    if store == Store::S3 {
        // A constant handful per segment: config, cluster record, two conditional PUTs and
        // the reads that find the existing objects identical.
        let r = &again["requests"];
        let total = requests_total(r);
        assert!(total <= 6 && json_u64(r, "list") == 0, "{again}");
    }
    let before = repo.digest();
    push_from_pg_wal(&repo, &source, name).assert_ok();
    assert_same_tree(
        &before,
        &repo.digest(),
        "repository after re-pushing a segment",
    );

    let scratch = TestDir::new("wal");
    let forged = scratch.join(name);
    copy_for_postgres(&source.data.join("pg_wal").join(name), &forged);
    flip_byte(&forged, original.len() as u64 / 2);
    pgsnapfs(&repo.args("wal-push", &[forged.to_str().unwrap()]))
        .assert_failed()
        .assert_mentions("different")
        .assert_mentions(name);
    assert_same_tree(&before, &repo.digest(), "repository after a refused push");

    let fetched = scratch.join("fetched");
    pgsnapfs_in(
        &source.data,
        &repo.args("wal-fetch", &[name, fetched.to_str().unwrap()]),
    )
    .assert_ok();
    assert!(
        std::fs::read(&fetched).expect("read fetched segment") == original,
        "wal-fetch {name} did not return the segment first pushed"
    );
}

/// A segment of a cluster the repository does not know (another initdb, so another system
/// identifier) is refused, and the repository's own cluster keeps archiving.
#[test]
fn wal_push_refuses_segment_of_another_cluster() {
    let repo = Repo::init();
    let own = Cluster::archiving_to(&repo.spec);
    own.psql("CREATE TABLE w(x int); INSERT INTO w VALUES (1)");
    own.switch_wal_and_wait_archived();

    let (foreign, names) = cluster_with_segments(1);
    assert_ne!(foreign.system_identifier(), own.system_identifier());
    let before = repo.digest();
    push_from_pg_wal(&repo, &foreign, &names[0])
        .assert_failed()
        .assert_mentions(&foreign.system_identifier());
    assert_same_tree(
        &before,
        &repo.digest(),
        "repository after a refused foreign segment",
    );

    own.psql("INSERT INTO w VALUES (2)");
    own.switch_wal_and_wait_archived();
}

/// wal-fetch of a segment the archive does not have exits 4 (PostgreSQL then stops asking)
/// and writes nothing.
fn wal_fetch_of_missing_segment_exits_4(store: Store) {
    let repo = Repo::init_on(store);
    let c = Cluster::archiving_to(&repo.spec);
    c.psql("CREATE TABLE w(x int); INSERT INTO w VALUES (1)");
    let archived = c.switch_wal_and_wait_archived();
    let scratch = TestDir::new("fetch");

    let got = scratch.join("got");
    pgsnapfs_in(
        &c.data,
        &repo.args("wal-fetch", &[&archived, got.to_str().unwrap()]),
    )
    .assert_ok();
    assert_eq!(
        std::fs::metadata(&got).expect("fetched segment").len(),
        16 << 20,
        "fetched {archived}"
    );

    let missing = "0000000100000000000000F0";
    let dest = scratch.join("missing");
    pgsnapfs_in(
        &c.data,
        &repo.args("wal-fetch", &[missing, dest.to_str().unwrap()]),
    )
    .assert_exit(4);
    assert!(
        !dest.exists(),
        "wal-fetch of a missing segment created {}",
        dest.display()
    );
    let history = scratch.join("history");
    pgsnapfs_in(
        &c.data,
        &repo.args(
            "wal-fetch",
            &["00000002.history", history.to_str().unwrap()],
        ),
    )
    .assert_exit(4);
}
