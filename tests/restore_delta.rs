//! `pgsnapfs restore --delta` over the data directory of a cluster that ran on after its
//! backup (an old primary to re-seed): refused while its server runs and for another
//! cluster's directory. Over a copy made by root: far fewer bytes are written than the
//! cluster holds, the files created after the backup are gone, ownership and modes are
//! fixed, and a second run writes only pg_control. Over the directory itself, a run killed
//! midway leaves a directory that cannot start; a rerun makes it equal to the copy, and the
//! server starts with the backup's rows, those of a table in a tablespace included.
//! Around the directory: two tablespaces mapped to one directory are refused; a file hard
//! linked from outside (a `pg_upgrade --link` leftover) is replaced, never written through;
//! another cluster's version directory in the shared tablespace location is left alone; a
//! `pg_wal` link stays a link, its directory brought over.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;

const ROWS: &str = "SELECT count(*) || ':' || md5(string_agg(v, ',' ORDER BY id)) FROM t";
const DROPPED: &str = "SELECT count(*) || ':' || sum(id) FROM dropped";
const IN_TS: &str = "SELECT count(*) || ':' || sum(id) FROM in_ts";

fn fill(c: &Cluster, from: u32, to: u32) {
    c.psql(&format!(
        "INSERT INTO t SELECT g, md5(g::text || random()::text)
           FROM generate_series({from}, {to}) g;"
    ));
}

#[test]
fn delta_restore_over_an_old_primary() {
    let repo = Repo::init();
    let mut c = Cluster::archiving_to(&repo.spec);
    let location = c.dir().subdir("tablespace", 0o700);
    let location2 = c.dir().subdir("tablespace2", 0o700);
    c.psql(&format!(
        "CREATE TABLE t(id int PRIMARY KEY, v text);
         CREATE TABLE dropped AS SELECT g AS id FROM generate_series(1, 5000) g;
         CREATE TABLESPACE ts LOCATION '{}';
         CREATE TABLE in_ts TABLESPACE ts AS SELECT g AS id FROM generate_series(1, 3000) g;
         CREATE TABLESPACE ts2 LOCATION '{}';",
        location.display(),
        location2.display()
    ));
    fill(&c, 1, 30_000);
    let backup = json_str(&repo.backup(&c), "id");
    let want = c.psql(ROWS);
    let want_dropped = c.psql(DROPPED);
    let want_in_ts = c.psql(IN_TS);
    let t_file = c.psql("SELECT pg_relation_filepath('t')");

    // The cluster runs on: more rows (in the tablespace too), a new table, a dropped one.
    fill(&c, 30_001, 35_000);
    c.psql("INSERT INTO in_ts SELECT g FROM generate_series(3001, 9000) g");
    c.psql("CREATE TABLE created AS SELECT g AS id FROM generate_series(1, 1000) g");
    let created = c
        .data
        .join(c.psql("SELECT pg_relation_filepath('created')"));
    c.psql("DROP TABLE dropped; CHECKPOINT");
    assert!(created.is_file());
    let data = c.data.clone();
    let delta = |extra: &[&str]| {
        let mut args = vec!["--to", data.to_str().unwrap()];
        args.extend_from_slice(&["--delta", "--backup", backup.as_str(), "--json"]);
        args.extend_from_slice(extra);
        repo.args("restore", &args)
    };

    // Refused while the server runs, and over another cluster's directory.
    pgsnapfs(&delta(&[]))
        .assert_exit(2)
        .assert_mentions("a server is running");
    let other = TestDir::new("other");
    fs::create_dir(other.join("global")).unwrap();
    let mut control = vec![0u8; 8192];
    control[..8].copy_from_slice(&42u64.to_le_bytes());
    control[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    fs::write(other.join("global/pg_control"), &control).unwrap();
    let mut args = repo.args("restore", &["--to", other.path().to_str().unwrap()]);
    args.extend(["--delta".to_string(), "--backup".into(), backup.clone()]);
    pgsnapfs_as_root(&args)
        .assert_exit(2)
        .assert_mentions("holds cluster 42");
    assert_eq!(fs::read(other.join("global/pg_control")).unwrap(), control);
    // --force replaces it, once the tablespace, which is another directory's, goes elsewhere.
    args.push("--force".into());
    pgsnapfs_as_root(&args)
        .assert_exit(2)
        .assert_mentions("--tablespace-map");
    let oid = c.psql("SELECT oid FROM pg_tablespace WHERE spcname = 'ts'");
    let oid2 = c.psql("SELECT oid FROM pg_tablespace WHERE spcname = 'ts2'");
    args.extend([
        "--tablespace-map".into(),
        format!("{oid}={}", other.join("ts").display()),
        "--tablespace-map".into(),
        format!("{oid2}={}", other.join("ts").display()),
    ]);
    // Two tablespaces at one directory would be written over each other.
    pgsnapfs_as_root(&args)
        .assert_exit(2)
        .assert_mentions("would both be put at");
    args.pop();
    args.push(format!("{oid2}={}", other.join("ts2").display()));
    pgsnapfs_as_root(&args).assert_ok();
    assert_ne!(fs::read(other.join("global/pg_control")).unwrap(), control);
    assert!(!other.join("global/pg_control.pgsnapfs-delta").exists());
    c.stop();

    // A copy made by root, as after copying a directory back by hand: root owns its entries
    // but the top, and a mode differs. A delta restore as root gives everything to the top
    // directory's owner and sets the backed-up modes.
    let aside = TestDir::new("aside");
    let copy = aside.join("data");
    run_command(
        std::process::Command::new("cp")
            .arg("-r")
            .arg(&c.data)
            .arg(&copy),
    )
    .assert_ok();
    chown_to_postgres(&copy);
    fs::set_permissions(copy.join("PG_VERSION"), fs::Permissions::from_mode(0o644)).unwrap();
    let delta_as_root = || {
        let mut args = repo.args("restore", &["--to", copy.to_str().unwrap(), "--delta"]);
        args.extend(["--backup".into(), backup.clone(), "--json".into()]);
        pgsnapfs_as_root(&args).assert_ok().json()
    };
    // A relation file hard linked from outside, as pg_upgrade --link leaves them.
    let linked = aside.join("linked-by-another-cluster");
    fs::hard_link(copy.join(&t_file), &linked).unwrap();
    let linked_bytes = fs::read(&linked).unwrap();
    // Another cluster's version directory in the shared tablespace location.
    let neighbour = location.join("PG_16_202307071/5/16384");
    fs::create_dir_all(neighbour.parent().unwrap()).unwrap();
    fs::write(&neighbour, b"another cluster's relation").unwrap();
    // WAL kept on another disk: pg_wal a link.
    let wal = aside.join("wal");
    fs::rename(copy.join("pg_wal"), &wal).unwrap();
    std::os::unix::fs::symlink(&wal, copy.join("pg_wal")).unwrap();
    let old_wal = fs::read_dir(&wal)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().len() == 24)
        .count();
    assert!(old_wal > 0, "the old timeline's WAL is there");
    let first = delta_as_root();
    assert!(
        fs::read(&linked).unwrap() == linked_bytes,
        "nothing written through the hard link"
    );
    assert_eq!(fs::metadata(copy.join(&t_file)).unwrap().nlink(), 1);
    assert_eq!(
        fs::read(&neighbour).unwrap(),
        b"another cluster's relation",
        "the other cluster's version directory is left alone"
    );
    assert_eq!(
        fs::read_link(copy.join("pg_wal")).unwrap(),
        wal,
        "pg_wal link kept"
    );
    assert_eq!(
        fs::read_dir(&wal)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().len() == 24)
            .count(),
        0,
        "the old timeline's WAL is gone from the link's directory"
    );
    let written = json_u64(&first, "bytes_written");
    let size = json_u64(&first, "bytes");
    assert!(
        written * 4 < size,
        "{written} bytes written of {size}: {first}"
    );
    assert!(json_u64(&first, "bytes_compared") > written, "{first}");
    assert!(json_u64(&first, "files_removed") > 0, "{first}");
    let created_in_copy = copy.join(created.strip_prefix(&c.data).unwrap());
    assert!(
        !created_in_copy.exists(),
        "a table created after the backup is gone"
    );
    let postgres = machine().postgres_uid;
    for path in files_below(&copy) {
        let meta = fs::symlink_metadata(&path).unwrap();
        assert_eq!(meta.uid(), postgres, "{} is not postgres's", path.display());
    }
    let mode = fs::metadata(copy.join("PG_VERSION"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // Right after, nothing differs but what the recovery settings change.
    let second = delta_as_root();
    assert_eq!(
        json_u64(&second, "bytes_written"),
        8192,
        "pg_control: {second}"
    );
    assert_eq!(
        json_u64(&second, "files_removed"),
        1,
        "recovery.signal: {second}"
    );

    // Back to a pg_wal directory, to compare with the cluster's own below.
    fs::remove_file(copy.join("pg_wal")).unwrap();
    fs::rename(&wal, copy.join("pg_wal")).unwrap();

    // Over the cluster's own directory, killed after its second file: the directory cannot
    // start; a rerun completes it, equal to the copy (every kill point: crash_injection.rs).
    let killed = run_command(pgsnapfs_command(&delta(&[])).env("PGSNAPFS_KILL_AT", "file:2"));
    assert_eq!(
        killed.status.signal(),
        Some(libc::SIGKILL),
        "{}",
        killed.report()
    );
    assert!(!c.data.join("global/pg_control").exists());
    assert!(Cluster::try_start_on(&c.data, &[]).is_err());
    pgsnapfs(&delta(&[])).assert_ok();
    assert_same_tree(&tree_digest(&copy), &tree_digest(&c.data), "the directory");

    let restored = Cluster::start_on(&c.data);
    assert_ne!(
        restored.wait_until_paused_or_ready(),
        RecoveryState::ShutDown
    );
    assert_eq!(restored.psql(ROWS), want, "the backup's rows");
    assert_eq!(
        restored.psql(DROPPED),
        want_dropped,
        "the dropped table is back"
    );
    assert_eq!(restored.psql(IN_TS), want_in_ts, "the tablespace's rows");
    assert_eq!(
        restored.psql("SELECT count(*) FROM pg_class WHERE relname = 'created'"),
        "0"
    );
}
