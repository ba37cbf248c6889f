//! The read-only catalogue of `pgsnapfs mount` against real FUSE and real PostgreSQL: a
//! mounted backup has the source's bytes; the listing follows the repository; `cp -r`, the
//! archived WAL it serves, and its refusal of writes.
//!
//! FUSE mounts need root, so pgsnapfs `mount`/`umount` run as root here (not as postgres like
//! the rest of the harness). Every mount is a [`Mount`] guard (tests/common/mount.rs): dropping
//! it stops the server running on the mount, unmounts (lazily if it must) and reaps or kills
//! the mount process, so a failing test leaves nothing mounted.

mod common;

use common::mount::*;
use common::*;
use std::collections::BTreeSet;
use std::fs;
use std::process::Command;
use std::time::Duration;

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

    let before = sha_tree_live(&source.data);
    let backup = repo.backup(&source);
    let after = sha_tree_live(&source.data);
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

// Catalogue mounts of a repository on either back end: one test body each.
on_both_stores!(mounted_backup_has_the_source_bytes,);

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
