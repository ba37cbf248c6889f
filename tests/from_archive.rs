//! `backup --from-archive` (issue 18): backups made from the repository alone, by replaying
//! archived WAL on the newest backup, with the production server stopped and unreachable.
//! One cluster, in sequence: a server backup; pgbench and DDL (CREATE TABLE, DROP TABLE,
//! TRUNCATE, VACUUM FULL, CREATE DATABASE); the server stopped; a backup from the archive,
//! whose every table equals a classic PITR of the server backup to the same LSN; more WAL
//! and a view after it that starts from it; a second backup from the archive, chained from
//! the first, whose restore to the end equals the source; retention that thins them apart; a
//! damaged segment (replay fails, the server's log is quoted) and a missing one (refused by
//! name). Two smaller clusters: an encrypted repository with a time target then the end, and
//! replay across a timeline switch (on a local repository and on S3).

mod common;

use common::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// `backup --from-archive` as root (it mounts a view), with libpq pointed nowhere: it must
/// not need the server. Its work directories go below the repository's own [`work_dir`], so
/// that a test sees only its own.
fn from_archive(repo: &Repo, args: &[&str]) -> Run {
    let work = work_dir(repo);
    let mut all = repo.args("backup", &["--from-archive", "--json", "--work-dir"]);
    all.push(work.display().to_string());
    all.extend(args.iter().map(|a| a.to_string()));
    let mut cmd = Command::new(pgsnapfs_bin());
    cmd.args(&all)
        .current_dir("/")
        .stdin(std::process::Stdio::null());
    for var in SCRUBBED_ENV {
        cmd.env_remove(var);
    }
    cmd.env("PGHOST", "/nonexistent/no-server-here")
        .env("PGPORT", "1");
    if test_major() != 15 {
        cmd.arg("--pg-bin").arg(test_server_bin());
    }
    run_command(&mut cmd)
}

/// Every user table of every database that allows connections, by `db.schema.table`, with
/// a digest of its rows (sorted, so physical order does not count).
fn digests(c: &Cluster) -> BTreeMap<String, String> {
    let dbs = c.psql(
        "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database \
         WHERE datallowconn",
    );
    let mut out = BTreeMap::new();
    for db in dbs.split(',') {
        let tables = c.psql_db(
            db,
            "SELECT coalesce(string_agg(format('%I.%I', n.nspname, c.relname), ',' \
             ORDER BY 1), '') FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')",
        );
        for t in tables.split(',').filter(|t| !t.is_empty()) {
            let d = c.psql_db(
                db,
                &format!("SELECT count(*) || ':' || coalesce(md5(string_agg(r::text, '|' ORDER BY r::text)), '') FROM {t} r"),
            );
            out.insert(format!("{db}.{t}"), d);
        }
    }
    out
}

/// Restores `goal` into `work/name`, starts it, and returns its tables' digests.
fn restored(
    repo: &Repo,
    work: &TestDir,
    name: &str,
    goal: &[&str],
) -> (BTreeMap<String, String>, String) {
    let to = work.join(name);
    let run = repo.restore(&to, goal).assert_ok();
    let mut c = Cluster::start_on(&to);
    c.wait_until_paused_or_ready();
    let d = digests(&c);
    c.stop();
    std::fs::remove_dir_all(&to).unwrap();
    (d, run.stderr_str())
}

/// Some of everything replay must carry: pgbench, and DDL that creates, drops, truncates
/// and rewrites files, plus a new database (copied directory by directory).
fn workload(c: &Cluster, round: u32) {
    c.pgbench(&["-n", "-T", "2", "-c", "2"]);
    c.psql(&format!(
        "CREATE TABLE made_{round} AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 5000) g; \
         CREATE TABLE gone_{round} (x int); INSERT INTO gone_{round} SELECT generate_series(1, 100); \
         DROP TABLE gone_{round}; \
         TRUNCATE pgbench_history; \
         VACUUM FULL pgbench_tellers; \
         CREATE DATABASE db_{round}"
    ));
    c.psql_db(
        &format!("db_{round}"),
        "CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g",
    );
    // A restartpoint for replay to stop at, then more changes after it.
    c.psql("CHECKPOINT");
    c.pgbench(&["-n", "-T", "1", "-c", "2"]);
    c.psql(&format!(
        "UPDATE made_{round} SET v = 'late' WHERE id % 10 = 0"
    ));
}

#[test]
fn backups_from_the_archive_replay_chain_and_refuse_gaps() {
    let started = std::time::Instant::now();
    let repo = Repo::init();
    let work = TestDir::new("from-archive");
    let mut source = Cluster::archiving_to(&repo.spec);
    source.pgbench_init(2);
    let b0 = json_str(&repo.backup(&source), "id");

    workload(&source, 1);
    let last_commit = source.psql("SELECT extract(epoch FROM now())::float8");
    source.switch_wal_and_wait_archived();
    source.stop();

    // With the server down and PGHOST pointing nowhere.
    let run = from_archive(&repo, &[]).assert_ok();
    let a1 = run.json();
    // Its stop time is when its content was current (the last commit replayed), not when the
    // command ran: a time target after that last commit can start from it.
    let stop = chrono::DateTime::parse_from_rfc3339(&json_str(&a1, "stop_time")).unwrap();
    let last: f64 = last_commit.parse().unwrap();
    assert!(
        (stop.timestamp_micros() as f64 / 1e6) < last + 1.0,
        "stop_time {stop}, last commit at {last}: {}",
        run.report()
    );
    assert_eq!(a1["source"], "archive", "{}", run.report());
    assert_eq!(a1["from_archive"]["base"], b0.as_str(), "{}", run.report());
    let a1_id = json_str(&a1, "id");
    let target = a1["from_archive"]["wal_end"].as_str().unwrap().to_string();
    // What replay did not write was taken from the base unread.
    let read = a1["from_archive"]["bytes_read"].as_u64().unwrap();
    let skipped = a1["from_archive"]["bytes_skipped"].as_u64().unwrap();
    let size = a1["size_logical"].as_u64().unwrap();
    assert_eq!(read + skipped, size, "{}", run.report());
    assert!(skipped > size / 4, "{}", run.report());
    let listed = repo.list();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["source"], "server");
    assert_eq!(listed[1]["source"], "archive");

    // The archive-made backup as it ended, against a classic PITR of the server backup to
    // the same LSN (the planner takes b0: a1 is consistent only after that LSN).
    let (at_a1, said) = restored(&repo, &work, "a1", &["--backup", &a1_id]);
    assert!(
        said.contains(&format!("restoring backup {a1_id}")),
        "{said}"
    );
    let (pitr, said) = restored(&repo, &work, "pitr", &["--target-lsn", &target]);
    assert!(said.contains(&format!("restoring backup {b0}")), "{said}");
    assert!(at_a1.contains_key("db_1.public.t"), "{at_a1:?}");
    assert!(at_a1.contains_key("postgres.public.made_1"), "{at_a1:?}");
    assert!(!at_a1.contains_key("postgres.public.gone_1"), "{at_a1:?}");
    assert_eq!(at_a1, pitr);
    let run = pgsnapfs_as_root(&repo.args("verify", &["--json", "--backup", &a1_id]));
    assert_eq!(
        run.json()["ok"],
        true,
        "verify of {a1_id}\n{}",
        run.report()
    );

    // Nothing new archived: nothing to do.
    from_archive(&repo, &[])
        .assert_ok()
        .assert_mentions("nothing to do");

    // More WAL. A view at a point after the archive-made backup starts from it, says how much
    // WAL it replays, and holds the source's rows there.
    source.start();
    workload(&source, 2);
    let point = source.current_wal_lsn();
    // One record at the point, for the inclusive target; it changes no table.
    source.psql("SELECT pg_logical_emit_message(false, 'from-archive', 'after')");
    let end = digests(&source);
    source.switch_wal_and_wait_archived();
    source.stop();
    let mnt = common::mount::mountpoint(&work, "view");
    let scratch = work.join("view-scratch");
    let mut view = common::mount::Mount::start(
        &repo,
        &mnt,
        &common::mount::view_args(&scratch, &["--target-lsn", &point]),
    );
    let said = view.report();
    assert!(said.contains(&format!("mounting backup {a1_id}")), "{said}");
    assert!(said.contains("of WAL to replay"), "{said}");
    let server = view.start_server();
    server.wait_until_paused();
    assert_eq!(digests(server), end, "view at {point}");
    view.stop_server();
    view.umount_ok();
    drop(view);

    // A second backup from the archive, made from the first.
    let run = from_archive(&repo, &[]).assert_ok();
    let a2 = run.json();
    assert_eq!(
        a2["from_archive"]["base"],
        a1_id.as_str(),
        "{}",
        run.report()
    );
    assert_eq!(a2["parent"], a1_id.as_str());
    let a2_id = json_str(&a2, "id");
    let (latest, said) = restored(&repo, &work, "latest", &[]);
    assert!(
        said.contains(&format!("restoring backup {a2_id}")),
        "{said}"
    );
    assert_ne!(
        a2["start_lsn"], a1["start_lsn"],
        "a2 has a restartpoint of its own"
    );
    assert_eq!(latest, end);

    // Retention thins backups made from the archive apart: the newest of them, and the
    // newest server backup by the other rules.
    let plan = repo
        .run(
            "expire",
            &[
                "--keep-last",
                "1",
                "--keep-archive-last",
                "1",
                "--dry-run",
                "--json",
            ],
        )
        .assert_ok()
        .json();
    let kept: Vec<(String, bool)> = plan["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (json_str(v, "id"), v["keep"] == true))
        .collect();
    assert_eq!(
        kept,
        [
            (b0.clone(), true),
            (a1_id.clone(), false),
            (a2_id.clone(), true)
        ],
        "{plan:#}"
    );

    // A damaged segment after the newest backup: replay fails, the server's log is quoted,
    // nothing is stored. Then the segment missing: refused, naming it, with or without a
    // target past it.
    source.start();
    source.psql("CREATE TABLE after_gap AS SELECT 1 AS x");
    let missing = source.switch_wal_and_wait_archived();
    source.psql("INSERT INTO after_gap VALUES (2)");
    let past = source.current_wal_lsn();
    source.psql("INSERT INTO after_gap VALUES (3)");
    source.switch_wal_and_wait_archived();
    source.stop();
    let sysid = json_str(&a2, "system_identifier");
    let object = repo
        .path
        .join("wal")
        .join(&sysid)
        .join(&missing[..8])
        .join(&missing);
    let len = std::fs::metadata(&object).unwrap().len();
    flip_byte(&object, len / 2);
    let failed = from_archive(&repo, &[]).assert_exit(1);
    let said = failed.stderr_str();
    assert!(said.contains("replay failed"), "{}", failed.report());
    assert!(
        said.contains("LOG:  "),
        "the server's log lines\n{}",
        failed.report()
    );
    assert_eq!(repo.list().len(), 3);
    std::fs::remove_file(&object).unwrap();
    from_archive(&repo, &[])
        .assert_exit(4)
        .assert_mentions(&missing);
    from_archive(&repo, &["--target-lsn", &past]).assert_mentions(&missing);
    assert_eq!(repo.list().len(), 3);
    assert!(no_work_dirs_left(&repo), "a work directory was left behind");
    eprintln!("from_archive: {:.1}s", started.elapsed().as_secs_f64());
}

/// Where [`from_archive`] runs with `repo` keep their work directories: like /tmp (sticky,
/// writable by all), as the view's server runs as postgres there.
fn work_dir(repo: &Repo) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = repo.path.parent().unwrap_or(&repo.path).join("fa-work");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    dir
}

/// Whether `backup --from-archive` removed its work directories.
fn no_work_dirs_left(repo: &Repo) -> bool {
    std::fs::read_dir(work_dir(repo))
        .map(|rd| {
            rd.flatten().all(|e| {
                !e.file_name().to_string_lossy().starts_with("pgsnapfs-fa.")
                    || !Path::new(&e.path()).join("mnt").exists()
            })
        })
        .unwrap_or(true)
}

#[test]
fn an_encrypted_base_gives_an_encrypted_backup_to_a_time() {
    let repo = Repo::init_encrypted_on(Store::Local, "from-archive secret");
    let work = TestDir::new("from-archive-enc");
    let file = repo.passphrase_file.clone().unwrap();
    let mut opts = ClusterOptions::archiving_to(&repo.spec);
    opts.settings.push((
        "archive_command".into(),
        format!(
            "'{} wal-push --repo \"{}\" --passphrase-file \"{}\" %p'",
            pgsnapfs_bin().display(),
            repo.spec,
            file.display()
        ),
    ));
    let mut source = Cluster::start_new(opts);
    source.pgbench_init(1);
    repo.backup(&source);
    source.pgbench(&["-n", "-t", "200"]);
    source.psql("CHECKPOINT");
    // A time target: replay stops before the first commit after it.
    let t = source.now();
    let at_t = digests(&source);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    source.psql("CREATE TABLE after_t AS SELECT 1 AS x");
    source.pgbench(&["-n", "-t", "50"]);
    source.switch_wal_and_wait_archived();
    let at_end = digests(&source);
    source.stop();

    let by_time = from_archive(&repo, &["--target-time", &t])
        .assert_ok()
        .json();
    let (rows, _) = restored(&repo, &work, "t", &["--backup", &json_str(&by_time, "id")]);
    assert_eq!(rows, at_t, "the backup made to {t}");

    // Then the end, from that one.
    let a = from_archive(&repo, &[]).assert_ok().json();
    assert_eq!(a["from_archive"]["base"], by_time["id"]);
    assert_eq!(a["source"], "archive");
    let id = json_str(&a, "id");
    let (restored_rows, _) = restored(&repo, &work, "enc", &["--backup", &id]);
    // The archive-made backup ends at the next-to-last record, before the final switch: the
    // source's state at its end.
    assert_eq!(restored_rows, at_end);
    let manifest = std::fs::read(repo.path.join("snapshots").join(&id)).unwrap();
    let needle = b"from_archive";
    assert!(
        !manifest.windows(needle.len()).any(|w| w == needle),
        "the manifest of {id} is stored in the clear"
    );
}

/// On S3 too: the view's restore_command reads the archive there.
fn replay_follows_a_timeline_switch(store: Store) {
    let repo = Repo::init_on(store);
    let work = TestDir::new("from-archive-tli");
    let mut source = Cluster::archiving_to(&repo.spec);
    source.pgbench_init(1);
    repo.backup(&source);
    source.pgbench(&["-n", "-t", "100"]);
    let fork = source.current_wal_lsn();
    source.psql("SELECT pg_logical_emit_message(false, 'from-archive', 'fork')");
    source.psql("CREATE TABLE lost_on_timeline_1 AS SELECT 1 AS x");
    source.switch_wal_and_wait_archived();
    source.stop();

    // A recovery to the fork, promoted, archiving into the repository: timeline 2.
    let to = work.join("tl2");
    repo.restore(&to, &["--target-lsn", &fork, "--target-action", "promote"])
        .assert_ok();
    let mut tl2 = Cluster::try_start_on(&to, &[("archive_mode", "on")]).unwrap();
    assert_eq!(tl2.wait_until_paused_or_ready(), RecoveryState::Ready);
    tl2.psql("CREATE TABLE made_on_timeline_2 AS SELECT g FROM generate_series(1, 1000) g");
    tl2.pgbench(&["-n", "-t", "100"]);
    tl2.psql("CHECKPOINT");
    tl2.psql("UPDATE made_on_timeline_2 SET g = -g WHERE g % 7 = 0");
    tl2.switch_wal_and_wait_archived();
    let end = digests(&tl2);
    tl2.stop();

    let run = from_archive(&repo, &[]).assert_ok();
    let a = run.json();
    assert_eq!(a["timeline"], 2, "{}", run.report());
    let (rows, said) = restored(&repo, &work, "a", &["--backup", &json_str(&a, "id")]);
    assert!(said.contains("on timeline 2"), "{said}");
    assert!(
        !rows.contains_key("postgres.public.lost_on_timeline_1"),
        "{rows:?}"
    );
    assert_eq!(rows, end);
}

on_both_stores!(replay_follows_a_timeline_switch);
