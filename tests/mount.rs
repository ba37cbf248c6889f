//! `pgsnapfs mount` / `umount` against real FUSE and real PostgreSQL: the read-only catalogue
//! of backups, writable point-in-time views that a server starts on directly, and the life
//! cycle of a mount (busy, stale, signals, bad mount points).
//!
//! FUSE mounts need root, so pgsnapfs `mount`/`umount` run as root here (not as postgres like
//! the rest of the harness). Every mount is a [`Mount`] guard (tests/common/mount.rs): dropping
//! it stops the server running on the mount, unmounts (lazily if it must) and reaps or kills
//! the mount process, so a failing test leaves nothing mounted.

mod common;

use common::mount::*;
use common::*;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Every row of `t`, as one comparable string.
const T_ROWS: &str =
    "SELECT coalesce(string_agg(id || ':' || v, ',' ORDER BY id), '<empty>') FROM t";

// ---------------------------------------------------------------------------------------------
// Servers on views

/// A server started on a view exactly as a user would: `pg_ctl -D MOUNTPOINT -o "-p PORT -k
/// SOCKDIR" -w start`, with no setting overridden ([`Cluster::start_on`] forces archive_mode
/// off by itself, which would hide whether the view does). Drop stops it (immediate mode).
/// Declare it after the [`Mount`] it runs on, so it is stopped before the unmount.
struct PlainServer {
    data: PathBuf,
    dir: TestDir,
    sock: PathBuf,
    port: u16,
    running: bool,
}

impl PlainServer {
    #[track_caller]
    fn start(data: &Path) -> PlainServer {
        let dir = TestDir::new("plain-server");
        let sock = dir.subdir("sock", 0o700);
        let port = free_port();
        let mut server = PlainServer {
            data: data.to_path_buf(),
            sock: sock.clone(),
            port,
            running: false,
            dir,
        };
        let run = run_command(
            postgres_command(test_server_bin().join("pg_ctl"))
                .arg("-D")
                .arg(data)
                .arg("-l")
                .arg(server.dir.join("server.log"))
                .arg("-o")
                .arg(format!("-p {port} -k {}", sock.display()))
                .args(["-w", "-t", "120", "start"]),
        );
        server.running = run.status.success();
        assert!(
            server.running,
            "pg_ctl start on {}\n{}\n--- log ---\n{}",
            data.display(),
            run.report(),
            server.log()
        );
        server
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// Runs SQL from a file (so VACUUM and CHECKPOINT run outside a transaction block).
    #[track_caller]
    fn psql(&self, sql: &str) -> String {
        let file = self.dir.join("query.sql");
        fs::write(&file, sql).unwrap();
        chown_to_postgres(&file);
        let run = run_command(
            common::cluster::psql_command(&self.sock, self.port, "postgres").arg(&file),
        );
        assert!(
            run.status.success(),
            "{}\n--- log ---\n{}",
            run.report(),
            self.log()
        );
        run.stdout_str().trim().to_string()
    }

    /// Waits until the server is out of recovery (promoted).
    #[track_caller]
    fn wait_promoted(&self) {
        let done = wait_for(Duration::from_secs(120), || {
            match self.psql("SELECT pg_is_in_recovery()").as_str() {
                "f" => Ok(()),
                other => Err(other.to_string()),
            }
        });
        assert!(done.is_ok(), "{done:?}\n--- log ---\n{}", self.log());
    }

    fn pg_ctl_stop(&mut self, mode: &str) -> Run {
        self.running = false;
        run_command(
            postgres_command(test_server_bin().join("pg_ctl"))
                .arg("-D")
                .arg(&self.data)
                .args(["-m", mode, "-w", "-t", "120", "stop"]),
        )
    }

    #[track_caller]
    fn stop(&mut self) {
        let run = self.pg_ctl_stop("fast");
        assert!(
            run.status.success(),
            "{}\n--- log ---\n{}",
            run.report(),
            self.log()
        );
    }
}

impl Drop for PlainServer {
    fn drop(&mut self) {
        if self.running {
            let _ = self.pg_ctl_stop("immediate");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// File helpers

fn sha256_file(p: &Path) -> std::io::Result<String> {
    let mut f = fs::File::open(p)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Relative path → sha256 of every regular file below `root` (symbolic links not followed).
#[track_caller]
fn sha_tree(root: &Path) -> BTreeMap<String, String> {
    files_below(root)
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let h = sha256_file(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
            (rel, h)
        })
        .collect()
}

/// Whether a base backup leaves this data-directory file out (pg_basebackup's rules, which
/// pgsnapfs follows): WAL, the per-run files, caches the server rebuilds, temporary files.
fn excluded_from_backup(rel: &str) -> bool {
    const DIR_CONTENTS: [&str; 7] = [
        "pg_stat_tmp",
        "pg_replslot",
        "pg_dynshmem",
        "pg_notify",
        "pg_serial",
        "pg_snapshots",
        "pg_subtrans",
    ];
    const FILES: [&str; 7] = [
        "postgresql.auto.conf.tmp",
        "current_logfiles.tmp",
        "backup_label",
        "tablespace_map",
        "backup_manifest",
        "postmaster.pid",
        "postmaster.opts",
    ];
    let parts: Vec<&str> = rel.split('/').collect();
    let (name, parents) = parts.split_last().unwrap();
    parents.first() == Some(&"pg_wal")
        || parents
            .iter()
            .any(|d| DIR_CONTENTS.contains(d) || d.starts_with("pgsql_tmp"))
        || name.starts_with("pgsql_tmp")
        || name.starts_with("pg_internal.init")
        || FILES.contains(name)
}

fn backup_dir(mnt: &Path, id: &str) -> PathBuf {
    mnt.join("backups").join(id)
}

// ---------------------------------------------------------------------------------------------
// Tests

/// Every file of a mounted backup has the bytes the source data directory had at backup time.
///
/// How "at backup time" is pinned down without stopping the source (a shutdown rewrites
/// pg_control and writes pg_stat, and the server keeps writing while it runs): autovacuum is
/// off and the cluster is idle and checkpointed, then the source tree is hashed right before
/// and right after the backup. A file with the same hash both times did not change while the
/// backup read it, so the mount must show exactly those bytes. Files that did change in
/// between (pg_control, rewritten by the backup's own checkpoint; anything else the server
/// touched) are listed, must not include the tables' relation files, and are not compared.
/// Files the backup excludes by design (pg_wal/*, postmaster.pid/opts, pg_internal.init,
/// pg_subtrans/*, ...) must be absent from the mount, and backup_label must be the one
/// pg_backup_stop returned.
fn mounted_backup_has_the_source_bytes(store: Store) {
    let repo = Repo::init_on(store);
    let source = Cluster::start_new(ClusterOptions {
        settings: vec![("autovacuum".into(), "off".into())],
        ..ClusterOptions::default()
    });
    source.pgbench_init(1);
    source.psql(
        "CREATE TABLE t(id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, repeat(md5(g::text), 40) FROM generate_series(1, 2000) g;",
    );
    // The user tables' files (t's long values live in its TOAST table).
    let relations: Vec<String> = source
        .psql(
            "SELECT pg_relation_filepath(c) FROM unnest(ARRAY['pgbench_accounts', \
             'pgbench_accounts_pkey', 't', 't_pkey']::regclass[]) c
             UNION ALL
             SELECT pg_relation_filepath(reltoastrelid) FROM pg_class WHERE relname = 't'",
        )
        .lines()
        .map(str::to_string)
        .collect();
    // Quiesce: VACUUM FREEZE sets every hint bit, so the backup's own catalogue reads do not
    // dirty pages; the checkpoint writes everything out before the "before" hashes.
    source.psql("VACUUM FREEZE; CHECKPOINT;");

    let before = sha_tree(&source.data);
    let backup = repo.backup(&source);
    let after = sha_tree(&source.data);
    let id = json_str(&backup, "id");

    let work = TestDir::new("mount-bytes");
    let mnt = mountpoint(&work, "mnt");
    let m = Mount::start(&repo, &mnt, &[]);
    let root = backup_dir(&m.dir, &id);
    let mounted = sha_tree(&root);

    let mut changed = Vec::new();
    let mut compared = 0;
    let mut problems = String::new();
    for (rel, hash) in &after {
        if excluded_from_backup(rel) {
            continue;
        }
        match before.get(rel) {
            Some(h) if h == hash => {}
            // Changed or created while the backup ran: not comparable.
            _ => {
                changed.push(rel.clone());
                continue;
            }
        }
        compared += 1;
        match mounted.get(rel) {
            None => problems.push_str(&format!("  missing from the mount: {rel}\n")),
            Some(h) if h != hash => problems.push_str(&format!(
                "  different bytes: {rel} (source {hash}, mount {h})\n"
            )),
            _ => {}
        }
    }
    for rel in mounted.keys() {
        let known = before.contains_key(rel) || after.contains_key(rel);
        if rel != "backup_label" && !known {
            problems.push_str(&format!("  in the mount, not in the source: {rel}\n"));
        }
        if rel != "backup_label" && excluded_from_backup(rel) {
            problems.push_str(&format!("  excluded file present in the mount: {rel}\n"));
        }
    }
    assert!(
        problems.is_empty(),
        "backup {id} mounted at {} differs from the source {}:\n{problems}\
         (files changed during the backup, not compared: {changed:?})",
        root.display(),
        source.data.display()
    );
    // The comparison must have covered the data: the relation files, and nearly every file.
    for rel in &relations {
        assert!(
            !changed.contains(rel),
            "relation file {rel} changed while the backup ran; the comparison proves nothing"
        );
        assert!(
            mounted.contains_key(rel),
            "relation file {rel} missing from the mount"
        );
    }
    eprintln!("not compared (changed while the backup ran): {changed:?}; compared {compared}");
    assert!(
        changed.len() * 20 < compared,
        "too many files changed during the backup ({} of {compared}): {changed:?}",
        changed.len()
    );
    // Excluded by design, and present in the source: must not be in the mount.
    assert!(after.contains_key("postmaster.pid"));
    for rel in after.keys().filter(|r| excluded_from_backup(r)) {
        assert!(
            !mounted.contains_key(rel),
            "{rel} should not be in the backup"
        );
    }
    assert!(
        root.join("pg_wal").is_dir(),
        "pg_wal missing from the backup"
    );

    // backup_label is pg_backup_stop's.
    let label = fs::read_to_string(root.join("backup_label")).unwrap();
    let start_lsn = json_str(&backup, "start_lsn");
    assert!(
        label.starts_with(&format!("START WAL LOCATION: {start_lsn} (file ")),
        "backup_label does not start at the backup's start LSN {start_lsn}:\n{label}"
    );
    assert!(
        label.contains(&format!("LABEL: pgsnapfs {id}")),
        "backup_label has another label:\n{label}"
    );
    assert!(label.contains("BACKUP METHOD: streamed"), "{label}");
}

/// The classic accident: a table is dropped by mistake. Mounting the point in time T just
/// before the DROP (recovery pauses there, hot standby) and starting PostgreSQL on the mount
/// shows the table with exactly its rows at T, and nothing committed after.
///
/// Replay stops after the DROP's AccessExclusiveLock record but before its commit, so while
/// paused the startup process holds that lock and a SELECT would wait: as the mount's message
/// and the operations guide say, promote with pg_wal_replay_resume() first. Queries run with
/// a lock_timeout so a regression fails instead of hanging.
fn dropped_table_is_back_at_target_time(store: Store) {
    dropped_table_scenario(None, store);
}

/// The same accident, recovered with `--target-action promote`: the view ends recovery at
/// T and opens read-write, with the table and its rows.
#[test]
fn dropped_table_is_back_at_target_time_promoted() {
    dropped_table_scenario(Some("promote"), Store::Local);
}

// Mounts of a repository on either back end: one test body each.
on_both_stores!(
    mounted_backup_has_the_source_bytes,
    dropped_table_is_back_at_target_time,
    repository_unchanged_by_mounts_servers_and_verify,
);

fn dropped_table_scenario(action: Option<&str>, store: Store) {
    let repo = Repo::init_on(store);
    let source = Cluster::archiving_to(&repo.spec);
    source.psql(
        "CREATE TABLE t(id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, 'base-' || g FROM generate_series(1, 300) g;",
    );
    repo.backup(&source);
    // Changes after the backup, so the rows come from WAL replay, not from the backup.
    source.psql(
        "UPDATE t SET v = 'replayed-' || id WHERE id % 3 = 0;
         DELETE FROM t WHERE id > 290;
         INSERT INTO t VALUES (1000, 'late row');",
    );
    let want = source.psql(T_ROWS);
    let t = source.now();
    std::thread::sleep(Duration::from_millis(1100));
    source.psql("DROP TABLE t");
    source.psql(
        "CREATE TABLE after_drop(id int);
         INSERT INTO after_drop SELECT generate_series(1, 100);",
    );
    source.switch_wal_and_wait_archived();
    assert!(source.try_psql(T_ROWS).is_err(), "t was not dropped");

    let work = TestDir::new("mount-drop");
    let mnt = mountpoint(&work, "mnt");
    let scratch = work.join("scratch");
    let mut goal = vec!["--target-time", t.as_str()];
    if let Some(a) = action {
        goal.extend(["--target-action", a]);
    }
    let mut m = if action.is_none() {
        Mount::start_background(&repo, &mnt, &view_args(&scratch, &goal))
    } else {
        Mount::start(&repo, &mnt, &view_args(&scratch, &goal))
    };
    // pg_wal of the view lives on the scratch disk.
    let pg_wal = fs::read_link(m.dir.join("pg_wal")).expect("pg_wal is a symbolic link");
    assert!(
        pg_wal.starts_with(fs::canonicalize(&scratch).unwrap()),
        "pg_wal points to {}, not into the scratch dir {}",
        pg_wal.display(),
        scratch.display()
    );
    let server = m.start_server();
    let state = server.wait_until_paused_or_ready();
    let want_state = if action.is_none() {
        RecoveryState::Paused
    } else {
        RecoveryState::Ready
    };
    assert_eq!(state, want_state, "server log:\n{}", server.log_tail(30));
    if action.is_none() {
        // Paused in hot standby, the DROP's transaction (open at T) still holds its
        // AccessExclusiveLock. The documented remedy, which the mount prints: promote.
        server.psql("SELECT pg_wal_replay_resume()");
        let promoted = wait_for(Duration::from_secs(120), || {
            match server.psql("SELECT pg_is_in_recovery()").as_str() {
                "f" => Ok(()),
                other => Err(other.to_string()),
            }
        });
        assert!(promoted.is_ok(), "{promoted:?}\n{}", server.log_tail(20));
    }
    let got = server.try_psql(&format!("SET lock_timeout = '5s'; {T_ROWS}"));
    let got = got.unwrap_or_else(|e| {
        panic!(
            "cannot read t on the view at {t} (target action {action:?}): {e}\n\
             locks held: {}\n--- server log (tail) ---\n{}",
            server.psql(
                "SELECT string_agg(locktype || ' ' || coalesce(relation::regclass::text, '') \
                 || ' ' || mode || ' pid ' || pid || ' granted ' || granted, '; ') FROM pg_locks"
            ),
            server.log_tail(15)
        )
    });
    assert_eq!(got, want, "rows of t at {t}");
    assert_eq!(
        server.psql("SELECT to_regclass('after_drop') IS NULL"),
        "t",
        "a table created after the target is visible"
    );
    assert_eq!(server.psql("SHOW archive_mode"), "off");
    m.stop_server();
    m.umount_ok();
}

/// Mounts (catalogue and views), servers on views (including writes and a promotion) and
/// verify read the repository and never change a byte of it.
fn repository_unchanged_by_mounts_servers_and_verify(store: Store) {
    let repo = Repo::init_on(store);
    let mut source = Cluster::archiving_to(&repo.spec);
    source.psql(
        "CREATE TABLE t(id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 500) g;",
    );
    let id = json_str(&repo.backup(&source), "id");
    source.psql("INSERT INTO t VALUES (501, 'after backup')");
    let lsn = source.current_wal_lsn();
    source.switch_wal_and_wait_archived();
    // No more archiving from here on.
    source.stop();
    let before = repo.digest();

    let work = TestDir::new("mount-ro");
    {
        let cat = Mount::start(&repo, &mountpoint(&work, "cat"), &[]);
        let files = sha_tree(&backup_dir(&cat.dir, &id));
        assert!(files.contains_key("PG_VERSION"), "{files:?}");
        let wal = sha_tree(&cat.dir.join("wal"));
        assert!(!wal.is_empty(), "no archived WAL in the catalogue");
    }
    {
        // A promoted view that writes, switches WAL, checkpoints and shuts down, on a server
        // started by hand with no overrides: the backed-up postgresql.conf says
        // archive_mode = on with an archive_command into this repository, so only the view's
        // own settings keep the server from pushing its new timeline's WAL here.
        let conf = fs::read_to_string(source.data.join("postgresql.conf")).unwrap();
        assert!(
            conf.contains("archive_mode = on"),
            "the source does not archive"
        );
        let scratch = work.join("scratch1");
        let mut m = Mount::start(
            &repo,
            &mountpoint(&work, "view1"),
            &view_args(
                &scratch,
                &["--target-lsn", &lsn, "--target-action", "promote"],
            ),
        );
        let mut server = PlainServer::start(&m.dir);
        server.wait_promoted();
        assert_eq!(
            server.psql("SELECT setting FROM pg_settings WHERE name = 'archive_mode'"),
            "off",
            "archive_mode of a server on a view"
        );
        server.psql(
            "INSERT INTO t SELECT g, 'view' FROM generate_series(1000, 3000) g;
             CREATE TABLE new_in_view AS SELECT generate_series(1, 10000) AS n;
             VACUUM FULL t;
             SELECT pg_switch_wal();
             INSERT INTO t VALUES (5000, 'more');
             CHECKPOINT;",
        );
        // With archiving on, the backend finishing a segment marks it .ready in
        // archive_status before pg_switch_wal returns (and the archiver renames that to
        // .done): no such mark for the segment just finished means nothing will archive it.
        let seg = server.psql("SELECT pg_walfile_name(pg_switch_wal())");
        assert_eq!(
            server.psql(&format!(
                "SELECT count(*) FROM pg_ls_dir('pg_wal/archive_status') f \
                 WHERE f LIKE '{seg}.%'"
            )),
            "0",
            "the server on the view marked {seg} for archiving"
        );
        assert_eq!(
            server.psql("SELECT archived_count + failed_count FROM pg_stat_archiver"),
            "0",
            "the server on the view tried to archive"
        );
        server.stop();
        drop(server);
        m.umount_ok();
    }
    {
        // A paused view.
        let scratch = work.join("scratch2");
        let mut m = Mount::start(
            &repo,
            &mountpoint(&work, "view2"),
            &view_args(&scratch, &["--backup", &id]),
        );
        let server = m.start_server();
        server.wait_until_paused_or_ready();
        assert_eq!(server.psql("SELECT count(*) FROM t"), "500");
        m.stop_server();
        m.umount_ok();
    }
    pgsnapfs_as_root(&repo.args("verify", &["--json"])).assert_ok();

    assert_same_tree(&before, &repo.digest(), "the repository");
}

/// Two views of different points in time, each with its own server, at the same time: each
/// sees its own rows, and a write on one (promoted) view does not show in the other.
#[test]
fn two_servers_on_two_points_in_time_at_once() {
    let repo = Repo::init();
    let source = Cluster::archiving_to(&repo.spec);
    source.psql(
        "CREATE TABLE t(id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, 'base' FROM generate_series(1, 50) g;",
    );
    repo.backup(&source);
    source.psql("INSERT INTO t SELECT g, 'a' FROM generate_series(51, 100) g");
    let rows_a = source.psql(T_ROWS);
    let lsn_a = source.current_wal_lsn();
    source.psql(
        "INSERT INTO t SELECT g, 'b' FROM generate_series(101, 150) g;
         UPDATE t SET v = 'b-updated' WHERE id <= 10;",
    );
    let rows_b = source.psql(T_ROWS);
    source.switch_wal_and_wait_archived();
    let latest = json_str(&repo.backup(&source), "id");
    assert_ne!(rows_a, rows_b);

    let work = TestDir::new("mount-two");
    let mut at_a = Mount::start(
        &repo,
        &mountpoint(&work, "a"),
        &view_args(&work.join("scratch-a"), &["--target-lsn", &lsn_a]),
    );
    let mut at_latest = Mount::start_background(
        &repo,
        &mountpoint(&work, "latest"),
        &view_args(
            &work.join("scratch-latest"),
            &["--backup", "latest", "--target-action", "promote"],
        ),
    );
    at_a.start_server();
    at_latest.start_server();
    at_a.server().wait_until_paused();
    assert_eq!(
        at_latest.server().wait_until_paused_or_ready(),
        RecoveryState::Ready
    );
    assert_eq!(at_a.server().psql(T_ROWS), rows_a, "view at {lsn_a}");
    assert_eq!(
        at_latest.server().psql(T_ROWS),
        rows_b,
        "view of backup {latest}"
    );

    at_latest
        .server()
        .psql("INSERT INTO t VALUES (9999, 'only in the latest view')");
    assert_eq!(
        at_a.server().psql(T_ROWS),
        rows_a,
        "view at {lsn_a} after a write elsewhere"
    );
    assert_eq!(
        at_latest.server().psql("SELECT v FROM t WHERE id = 9999"),
        "only in the latest view"
    );
    // And the source, still running, has neither view's write.
    assert_eq!(source.psql("SELECT count(*) FROM t WHERE id = 9999"), "0");

    at_a.stop_server();
    at_latest.stop_server();
    at_a.umount_ok();
    at_latest.umount_ok();
}

/// The catalogue lists every backup and `latest`, and follows the repository while mounted:
/// a new backup and its WAL appear, `latest` moves to it, and what expire removes goes.
/// `cp -r` of `latest` copies the newest backup's files; archived WAL is served as stored;
/// and the catalogue is read-only (EROFS).
#[test]
fn catalogue_listing_copy_wal_and_read_only() {
    let repo = Repo::init();
    let mut source = Cluster::archiving_to(&repo.spec);
    source.pgbench_init(1);
    let first = json_str(&repo.backup(&source), "id");
    let sysid = source.system_identifier();
    let stored_wal = || -> BTreeSet<String> {
        fs::read_dir(repo.path.join("wal").join(&sysid).join("00000001"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };

    let work = TestDir::new("mount-cat");
    let m = Mount::start(&repo, &mountpoint(&work, "mnt"), &[]);
    let listed = || -> BTreeSet<String> {
        fs::read_dir(m.dir.join("backups"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    let shown_wal = || -> BTreeSet<String> {
        fs::read_dir(m.dir.join("wal/00000001"))
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let label = |dir: &str| fs::read(m.dir.join("backups").join(dir).join("backup_label")).ok();
    assert_eq!(listed(), [first.clone(), "latest".to_string()].into());
    assert_eq!(label("latest"), label(&first), "backups/latest");

    // While mounted: a new backup and more WAL.
    source.psql("CREATE TABLE t AS SELECT generate_series(1, 1000) AS n");
    let second = json_str(&repo.backup(&source), "id");
    let seg = source.switch_wal_and_wait_archived();
    source.stop();
    assert_ne!(first, second);
    let want: BTreeSet<String> = [first.clone(), second.clone(), "latest".to_string()].into();
    let followed = wait_for(Duration::from_secs(30), || {
        let (names, wal) = (listed(), shown_wal());
        if names == want && label("latest") == label(&second) && wal == stored_wal() {
            Ok(())
        } else {
            Err(format!(
                "backups/ lists {names:?}; wal/00000001 lists {wal:?}"
            ))
        }
    });
    assert!(
        followed.is_ok(),
        "the catalogue did not show backup {second} as latest, nor segment {seg}: {followed:?}"
    );

    // cp -r of latest (a directory, not a link) equals the newest backup, file for file.
    let copy = work.join("copy");
    run_command(
        Command::new("cp")
            .arg("-r")
            .arg(m.dir.join("backups/latest"))
            .arg(&copy),
    )
    .assert_ok();
    assert!(copy.is_dir() && !copy.is_symlink(), "cp -r copied a link");
    let mounted = sha_tree(&backup_dir(&m.dir, &second));
    let copied = sha_tree(&copy);
    assert!(
        mounted.keys().any(|k| k.starts_with("base/")) && mounted.len() > 100,
        "the backup has too few files: {}",
        mounted.len()
    );
    if mounted != copied {
        let differ: Vec<_> = mounted
            .keys()
            .chain(copied.keys())
            .filter(|k| mounted.get(*k) != copied.get(*k))
            .collect();
        panic!("cp -r of backups/latest ({second}) differs from the mount: {differ:?}");
    }

    // Archived WAL is served with the stored bytes.
    let fetched = work.subdir("fetched", 0o755).join(&seg);
    repo.run("wal-fetch", &[&seg, s(&fetched)]).assert_ok();
    let served = fs::read(m.dir.join("wal/00000001").join(&seg)).unwrap();
    assert_eq!(served.len(), 16 << 20, "size of WAL segment {seg}");
    assert!(
        served == fs::read(&fetched).unwrap(),
        "WAL segment {seg} differs from wal-fetch"
    );

    // What expire removes leaves the catalogue.
    let before_expire = stored_wal();
    pgsnapfs_as_root(&repo.args("expire", &["--keep-last", "1"])).assert_ok();
    let kept: BTreeSet<String> = [second.clone(), "latest".to_string()].into();
    assert!(
        stored_wal().len() < before_expire.len(),
        "expire removed no WAL"
    );
    let followed = wait_for(Duration::from_secs(30), || {
        let (names, wal) = (listed(), shown_wal());
        if names == kept && wal == stored_wal() {
            Ok(())
        } else {
            Err(format!(
                "backups/ lists {names:?}; wal/00000001 lists {wal:?}"
            ))
        }
    });
    assert!(followed.is_ok(), "after expire: {followed:?}");

    // Read-only.
    let b = backup_dir(&m.dir, &second);
    let erofs = |what: &str, r: std::io::Result<()>| match r {
        Err(e) if e.raw_os_error() == Some(libc::EROFS) => {}
        other => panic!("{what} in the catalogue: expected EROFS, got {other:?}"),
    };
    erofs("create a file", fs::write(b.join("new_file"), b"x"));
    erofs(
        "open for writing",
        fs::OpenOptions::new()
            .write(true)
            .open(b.join("PG_VERSION"))
            .map(|_| ()),
    );
    erofs("remove a file", fs::remove_file(b.join("PG_VERSION")));
    erofs(
        "make a directory",
        fs::create_dir(m.dir.join("backups/new")),
    );
    erofs(
        "rename",
        fs::rename(b.join("PG_VERSION"), b.join("PG_VERSION.old")),
    );
    assert_eq!(
        fs::read_to_string(b.join("PG_VERSION")).unwrap().trim(),
        test_major().to_string()
    );
}

/// A mount in use cannot be unmounted (exit 1, "busy"): not while a server runs on a view,
/// not while a process has its cwd in the catalogue; once the user goes away, umount works
/// and the mount process exits 0.
#[test]
fn busy_mount_refuses_to_unmount() {
    let repo = Repo::init();
    let source = Cluster::archiving_to(&repo.spec);
    source.psql("CREATE TABLE t AS SELECT generate_series(1, 100) AS n");
    repo.backup(&source);

    let work = TestDir::new("mount-busy");
    // A server on a view.
    let mut view = Mount::start(
        &repo,
        &mountpoint(&work, "view"),
        &view_args(&work.join("scratch"), &["--backup", "latest"]),
    );
    view.start_server().wait_until_paused_or_ready();
    view.umount().assert_exit(1).assert_mentions("busy");
    assert!(is_mounted(&view.dir), "a failed umount unmounted anyway");
    assert_eq!(view.server().psql("SELECT count(*) FROM t"), "100");
    view.stop_server();
    view.umount_ok();

    // A shell-like process whose cwd is inside the catalogue.
    let mut cat = Mount::start(&repo, &mountpoint(&work, "cat"), &[]);
    let mut sleeper = Command::new("sleep")
        .arg("600")
        .current_dir(cat.dir.join("backups"))
        .spawn()
        .unwrap();
    let busy = cat.umount();
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    busy.assert_exit(1).assert_mentions("busy");
    assert!(is_mounted(&cat.dir), "a failed umount unmounted anyway");
    cat.umount_ok();
    assert!(
        is_absent_or_empty(&cat.dir),
        "the mount point is not empty after umount"
    );
}

/// What a signal did to a mount process: still mounted and serving, cleanly gone, or killed
/// and leaving a stale mount behind.
fn after_signal(m: &mut Mount) -> String {
    let mounted = is_mounted(&m.dir);
    let stale = fs::read_dir(&m.dir)
        .err()
        .is_some_and(|e| e.raw_os_error() == Some(libc::ENOTCONN));
    let status = m.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
    format!("mounted={mounted} stale(ENOTCONN)={stale} process exit status={status:?}")
}

/// SIGTERM and SIGINT to a foreground mount unmount it cleanly: the process exits 0 and the
/// mount point leaves /proc/mounts.
#[test]
fn signals_unmount_a_foreground_mount() {
    let repo = Repo::init();
    let source = Cluster::archiving_to(&repo.spec);
    repo.backup(&source);
    let work = TestDir::new("mount-signal");

    for (name, sig) in [("SIGTERM", libc::SIGTERM), ("SIGINT", libc::SIGINT)] {
        let mnt = mountpoint(&work, name);
        let mut m = Mount::start(&repo, &mnt, &[]);
        assert!(m.dir.join("backups/latest/PG_VERSION").is_file());
        signal(m.pid(), sig);
        let st = wait_child(m.child.as_mut().unwrap(), MOUNT_TIMEOUT);
        assert!(
            st.is_some_and(|st| st.success()),
            "after {name} the mount process ended with {st:?} ({})\n{}",
            after_signal(&mut m),
            m.report()
        );
        assert!(!is_mounted(&mnt), "{name} left {} mounted", mnt.display());
        assert!(is_absent_or_empty(&mnt));
    }
}

/// SIGTERM to the mount process of a view a server runs on must not pull the file system
/// from under the server: the mount stays and keeps serving. Once the server is stopped, a
/// second SIGTERM unmounts and the process exits 0.
#[test]
fn sigterm_leaves_a_busy_mount_alone() {
    let repo = Repo::init();
    let source = Cluster::archiving_to(&repo.spec);
    source.psql("CREATE TABLE t AS SELECT generate_series(1, 100) AS n");
    repo.backup(&source);

    let work = TestDir::new("mount-sigbusy");
    let mut view = Mount::start(
        &repo,
        &mountpoint(&work, "view"),
        &view_args(&work.join("scratch"), &["--backup", "latest"]),
    );
    view.start_server().wait_until_paused_or_ready();
    signal(view.pid(), libc::SIGTERM);
    // The process has handled the signal once it says it cannot unmount: only then does
    // "still mounted" prove anything.
    let refused = wait_for(MOUNT_TIMEOUT, || {
        let log = fs::read_to_string(&view.log).unwrap_or_default();
        if log.contains("cannot unmount yet") {
            Ok(())
        } else {
            Err(after_signal(&mut view))
        }
    });
    let state = after_signal(&mut view);
    assert!(
        refused.is_ok(),
        "SIGTERM to the mount process of a busy view: no refusal: {refused:?}\n{}",
        view.report()
    );
    assert!(
        is_mounted(&view.dir) && !pid_gone(view.pid()),
        "SIGTERM to the mount process of a busy view: {state}\n{}",
        view.report()
    );
    assert_eq!(
        view.server().try_psql("SELECT count(*) FROM t"),
        Ok("100".to_string()),
        "the server after SIGTERM to its mount process ({state})"
    );
    view.stop_server();
    signal(view.pid(), libc::SIGTERM);
    let st = wait_child(view.child.as_mut().unwrap(), MOUNT_TIMEOUT);
    assert!(
        st.is_some_and(|st| st.success()),
        "second SIGTERM: the mount process ended with {st:?}\n{}",
        view.report()
    );
    assert!(!is_mounted(&view.dir));
}

/// SIGKILL of the mount process leaves a stale mount (ENOTCONN). Mounting on it again is
/// refused with a hint; `pgsnapfs umount` cleans it up and the directory can be mounted on
/// again.
#[test]
fn killed_mount_process_leaves_stale_mount_that_umount_cleans() {
    let repo = Repo::init();
    let source = Cluster::archiving_to(&repo.spec);
    let id = json_str(&repo.backup(&source), "id");

    let work = TestDir::new("mount-stale");
    let mnt = mountpoint(&work, "mnt");
    let mut m = Mount::start(&repo, &mnt, &[]);
    assert!(backup_dir(&m.dir, &id).join("PG_VERSION").is_file());
    let mut child = m.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();

    assert!(is_mounted(&mnt), "the mount vanished with its process");
    let err = fs::read_dir(&mnt).map(|_| ()).unwrap_err();
    assert_eq!(
        err.raw_os_error(),
        Some(libc::ENOTCONN),
        "stat of a stale mount: {err}"
    );

    pgsnapfs_as_root(&["mount", "--repo", &repo.spec, s(&mnt)])
        .assert_exit(2)
        .assert_mentions("stale")
        .assert_mentions("umount");

    pgsnapfs_as_root(&["umount", s(&mnt)]).assert_ok();
    assert!(!is_mounted(&mnt), "{} still mounted", mnt.display());
    assert!(
        is_absent_or_empty(&mnt) && mnt.is_dir(),
        "mount point not usable"
    );

    let again = Mount::start(&repo, &mnt, &[]);
    assert!(backup_dir(&again.dir, &id).join("PG_VERSION").is_file());
}

/// A non-empty or missing mount point is refused with exit 2 and a message naming it, before
/// anything is created; `umount` of a directory that is not a mount point is bad input too.
#[test]
fn bad_mount_points_are_refused() {
    let repo = Repo::init();
    let source = Cluster::archiving_to(&repo.spec);
    repo.backup(&source);
    let work = TestDir::new("mount-bad");

    let full = mountpoint(&work, "full");
    fs::write(full.join("keep.txt"), b"mine").unwrap();
    // --background reports the mount process's exit code, as the foreground command would.
    for args in [
        vec![],
        vec!["--background"],
        vec![
            "--backup",
            "latest",
            "--scratch",
            s(&work.path().join("scratch")),
        ],
    ] {
        let mut all = vec!["mount", "--repo", &repo.spec, s(&full)];
        all.extend(args.iter().copied());
        pgsnapfs_as_root(&all)
            .assert_exit(2)
            .assert_mentions(s(&full))
            .assert_mentions("not empty");
        assert!(!is_mounted(&full));
        assert_eq!(fs::read(full.join("keep.txt")).unwrap(), b"mine");
        assert!(
            !work.join("scratch").exists(),
            "scratch created for a refused mount"
        );
    }

    let missing = work.join("missing");
    pgsnapfs_as_root(&["mount", "--repo", &repo.spec, s(&missing)])
        .assert_exit(2)
        .assert_mentions(s(&missing));
    assert!(!missing.exists() && !is_mounted(&missing));

    pgsnapfs_as_root(&["umount", s(&full)])
        .assert_exit(2)
        .assert_mentions("not a mount point");
}

/// Whatever a server writes on a view lives in the scratch dir only: after unmounting and
/// removing it, a new mount of the same point in time does not have the server's table.
#[test]
fn removing_scratch_discards_the_servers_writes() {
    let repo = Repo::init();
    let source = Cluster::archiving_to(&repo.spec);
    source.psql(
        "CREATE TABLE t(id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, 'v' FROM generate_series(1, 100) g;",
    );
    let id = json_str(&repo.backup(&source), "id");

    let work = TestDir::new("mount-scratch");
    let mnt = mountpoint(&work, "mnt");
    // Missing parents are made, and the server can reach pg_wal below them.
    let scratch = work.join("new/parents/scratch");
    let goal = ["--backup", id.as_str(), "--target-action", "promote"];
    {
        let mut m = Mount::start(&repo, &mnt, &view_args(&scratch, &goal));
        let server = m.start_server();
        assert_eq!(server.wait_until_paused_or_ready(), RecoveryState::Ready);
        server.psql(
            "CREATE TABLE written_on_view AS SELECT generate_series(1, 5000) AS n;
             UPDATE t SET v = 'changed on view';
             CHECKPOINT;",
        );
        m.stop_server();
        m.umount_ok();
    }
    assert!(
        !files_below(&scratch).is_empty(),
        "the server's writes are not in the scratch dir {}",
        scratch.display()
    );
    // A used scratch dir is not silently reused; the message is about the mount.
    let refused = pgsnapfs_as_root(&{
        let mut a = vec!["mount", "--repo", &repo.spec, s(&mnt)];
        a.extend(view_args(&scratch, &goal));
        a
    })
    .assert_exit(2)
    .assert_mentions(&format!(
        "scratch directory {} is not empty",
        scratch.display()
    ));
    assert!(
        !refused.stderr_str().contains("restore"),
        "{}",
        refused.report()
    );
    assert!(!is_mounted(&mnt));

    fs::remove_dir_all(&scratch).unwrap();
    let scratch2 = work.join("scratch2");
    let mut m = Mount::start(&repo, &mnt, &view_args(&scratch2, &goal));
    let server = m.start_server();
    assert_eq!(server.wait_until_paused_or_ready(), RecoveryState::Ready);
    assert_eq!(
        server.psql("SELECT to_regclass('written_on_view') IS NULL"),
        "t",
        "the table written on the first view survived removing its scratch dir"
    );
    assert_eq!(
        server.psql("SELECT count(*) FILTER (WHERE v = 'v') FROM t"),
        "100",
        "rows of t"
    );
    m.stop_server();
    m.umount_ok();
}

/// Run as the server's own user, a mount goes through the setuid fusermount3 (Debian
/// `fuse3`). It needs read-write access to /dev/fuse, which Debian's udev rule gives everyone
/// (mode 0666); this machine's device node may be 0600, so the test opens it up as Debian does.
#[test]
fn the_server_user_can_mount_through_fusermount3() {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions("/dev/fuse", fs::Permissions::from_mode(0o666)).expect("chmod /dev/fuse");
    let repo = Repo::init();
    let source = Cluster::archiving_to(&repo.spec);
    source.psql("CREATE TABLE t(id int); INSERT INTO t SELECT generate_series(1, 42);");
    let id = json_str(&repo.backup(&source), "id");
    source.switch_wal_and_wait_archived();

    let work = TestDir::new("mount-user");
    let mnt = mountpoint(&work, "mnt");
    let mnt_arg = mnt.display().to_string();
    let repo_arg = repo.path.display().to_string();
    pgsnapfs(&["mount", "--repo", &repo_arg, "--background", &mnt_arg]).assert_ok();
    // Only the mounting user may enter a mount made without allow_other, root included.
    let listed = Command::new("runuser")
        .args(["-u", "postgres", "--", "ls"])
        .arg(mnt.join("backups"))
        .output()
        .expect("run ls as postgres");
    let umount = pgsnapfs(&["umount", &mnt_arg]);
    let names = String::from_utf8_lossy(&listed.stdout).to_string();
    assert_eq!(
        names.split_whitespace().collect::<Vec<_>>(),
        [id.as_str(), "latest"],
        "{listed:?}"
    );
    umount.assert_ok();
    assert!(is_absent_or_empty(&mnt), "the mount point is empty again");
}
