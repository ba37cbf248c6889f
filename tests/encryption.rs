//! Encrypted repositories: a stolen repository reveals nothing, tampering is caught, keys
//! rotate without rewriting data, and backup needs no superuser.

mod common;

use common::*;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

const PASS: &str = "correct horse battery staple";
/// Distinctive strings the tests look for in the repository's bytes.
const ROW_MARK: &str = "zq7secretrowmark";
const TABLE: &str = "tbl_zq7_secret_name";
const LABEL_TEXT: &str = "START WAL LOCATION";
const FILE_NAME: &str = "pg_filenode.map";

/// Every row of the secret table, as one comparable string.
const ROWS: &str =
    "SELECT count(*) || ':' || md5(string_agg(v, ',' ORDER BY id)) FROM tbl_zq7_secret_name";

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A cluster whose archive_command pushes into `repo` with the repository's passphrase file.
fn archiving(repo: &Repo) -> Cluster {
    let mut opts = ClusterOptions::archiving_to(&repo.spec);
    if let Some(f) = &repo.passphrase_file {
        opts.settings.push((
            "archive_command".into(),
            format!(
                "'{} wal-push --repo \"{}\" --passphrase-file \"{}\" %p'",
                pgsnapfs_bin().display(),
                repo.spec,
                f.display()
            ),
        ));
    }
    Cluster::start_new(opts)
}

/// The secret table: each row a marker and random hex, so the data is not all alike.
fn fill(c: &Cluster, from: u32, to: u32) {
    c.psql(&format!(
        "CREATE TABLE IF NOT EXISTS {TABLE}(id int PRIMARY KEY, v text);
         INSERT INTO {TABLE} SELECT g, '{ROW_MARK}-' || g || '-' || md5(random()::text)
           FROM generate_series({from}, {to}) g;"
    ));
}

/// The bytes of every object of a local repository, followed by the content of every zstd
/// frame found in them: compression alone must not count as hiding a string.
fn readable_bytes(repo: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for f in files(repo) {
        let data = fs::read(&f).unwrap();
        for (i, w) in data.windows(4).enumerate() {
            if w == [0x28, 0xb5, 0x2f, 0xfd] {
                if let Ok(d) = zstd::stream::read::Decoder::new(&data[i..]) {
                    let mut frame = Vec::new();
                    if d.single_frame().read_to_end(&mut frame).is_ok() {
                        out.extend_from_slice(&frame);
                    }
                }
            }
        }
        out.extend_from_slice(&data);
    }
    out
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

fn found(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// The secrets a repository holds after a backup and archived WAL of the secret table.
fn secrets_in(repo: &Repo) -> Vec<&'static str> {
    let c = archiving(repo);
    fill(&c, 1, 3000);
    repo.backup(&c);
    fill(&c, 3001, 3100);
    c.switch_wal_and_wait_archived();
    let hay = readable_bytes(&repo.path);
    [ROW_MARK, TABLE, LABEL_TEXT, FILE_NAME]
        .into_iter()
        .filter(|n| found(&hay, n))
        .collect()
}

/// The same test reads both repositories, so it can fail: the plain one shows every string.
#[test]
fn encrypted_repository_reveals_no_rows_names_or_labels() {
    let plain = Repo::init();
    assert_eq!(
        secrets_in(&plain),
        vec![ROW_MARK, TABLE, LABEL_TEXT, FILE_NAME],
        "a plain repository shows them"
    );
    let enc = Repo::init_encrypted_on(Store::Local, PASS);
    assert_eq!(
        secrets_in(&enc),
        Vec::<&str>::new(),
        "an encrypted one must not"
    );
    // Files are owner-only on disk.
    for f in files(&enc.path) {
        let mode = fs::metadata(&f).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o077,
            0,
            "{} is readable by others",
            f.display()
        );
    }
}

/// Point-in-time restore and verify (mount, server start, queries) on an encrypted repository.
fn encrypted_restore_and_verify(store: Store) {
    let repo = Repo::init_encrypted_on(store, PASS);
    let source = archiving(&repo);
    fill(&source, 1, 500);
    let id = json_str(&repo.backup(&source), "id");
    fill(&source, 501, 700);
    let want = source.psql(ROWS);
    let lsn = source.current_wal_lsn();
    fill(&source, 701, 800);
    source.switch_wal_and_wait_archived();

    let out = TestDir::new("restore");
    let to = out.join("data");
    repo.restore(&to, &["--target-lsn", &lsn]).assert_ok();
    let restored = Cluster::start_on(&to);
    restored.wait_until_paused();
    assert_eq!(restored.psql(ROWS), want, "rows at the target");
    drop(restored);

    let dir = TestDir::new("verify-sql");
    let sql = dir.join("check.sql");
    fs::write(&sql, format!("SELECT count(*) = 500 FROM {TABLE};\n")).unwrap();
    let args = repo.args("verify", &["--json", "--backup", &id, "--sql", s(&sql)]);
    let run = pgsnapfs_as_root(&args).assert_exit(0);
    assert_eq!(run.json()["ok"], true, "{}", run.report());
    repo.run("check", &["--read-data", "--full"]).assert_exit(0);

    // Expire and gc read and write encrypted pack tables: repack everything still live.
    let want_all = source.psql(ROWS);
    let second = json_str(&repo.backup(&source), "id");
    repo.run("expire", &["--keep-last", "1"]).assert_ok();
    let gc = repo
        .run("gc", &["--repack-threshold", "1%", "--json"])
        .assert_ok()
        .json();
    assert!(json_u64(&gc, "freed_bytes") > 0, "{gc}");
    repo.run("check", &["--read-data", "--full"]).assert_exit(0);
    let to = out.join("second");
    repo.restore(&to, &["--backup", &second]).assert_ok();
    let restored = Cluster::start_on(&to);
    assert_ne!(
        restored.wait_until_paused_or_ready(),
        RecoveryState::ShutDown
    );
    assert_eq!(restored.psql(ROWS), want_all, "rows of {second} after gc");
}

on_both_stores!(encrypted_restore_and_verify);

#[test]
fn wrong_or_missing_passphrase_fails_before_writing() {
    let repo = Repo::init_encrypted_on(Store::Local, PASS);
    let mut c = archiving(&repo);
    repo.backup(&c);
    let backup_args = c.backup_args();
    // Nothing archives while the digest is compared.
    c.stop();
    let before = repo.digest();
    let dir = TestDir::new("wrong");
    let wrong = dir.join("wrong");
    fs::write(&wrong, "incorrect horse").unwrap();
    chown_to_postgres(&wrong);
    let spec = repo.spec.clone();
    for cmd in ["backup", "list", "check", "gc"] {
        let mut args = vec![cmd, "--repo", &spec, "--passphrase-file", s(&wrong)];
        if cmd == "backup" {
            args.extend(backup_args.iter().map(String::as_str));
        }
        pgsnapfs(&args)
            .assert_exit(2)
            .assert_mentions("no key slot");
    }
    pgsnapfs(&["list", "--repo", &spec])
        .assert_exit(2)
        .assert_mentions("PGSNAPFS_PASSPHRASE");
    assert_same_tree(
        &before,
        &repo.digest(),
        "the repository after wrong passphrases",
    );
    // The right one still works.
    assert_eq!(repo.list().len(), 1);
}

/// One flipped byte in each kind of object is reported, never served.
#[test]
fn a_flipped_byte_in_any_object_is_detected() {
    let repo = Repo::init_encrypted_on(Store::Local, PASS);
    let c = archiving(&repo);
    fill(&c, 1, 2000);
    let id = json_str(&repo.backup(&c), "id");
    c.switch_wal_and_wait_archived();
    repo.run("check", &["--read-data", "--full"]).assert_exit(0);

    let first = |prefix: &str| -> PathBuf {
        files(&repo.path.join(prefix))
            .into_iter()
            .max_by_key(|f| fs::metadata(f).unwrap().len())
            .unwrap_or_else(|| panic!("no object under {prefix}"))
    };
    let biggest_pack = first("packs");
    let pack_len = fs::metadata(&biggest_pack).unwrap().len();
    let cases: Vec<(&str, PathBuf, u64)> = vec![
        ("pack blob", biggest_pack.clone(), 100),
        ("pack table", biggest_pack, pack_len - 12 - 48 + 5),
        ("manifest", repo.path.join("snapshots").join(&id), 40),
        ("WAL", first("wal"), 5000),
        ("WAL summary", first("walsum"), 30),
        ("system record", first("systems"), 30),
    ];
    let pristine = TestDir::new("pristine");
    let copy = pristine.join("repo");
    let cp = |from: &Path, to: &Path| {
        let st = std::process::Command::new("cp")
            .args(["-a", s(from), s(to)])
            .status()
            .unwrap();
        assert!(st.success());
    };
    cp(&repo.path, &copy);
    for (what, file, offset) in cases {
        flip_byte(&file, offset);
        let run = repo.run("check", &["--read-data", "--full"]);
        assert_eq!(run.code(), Some(3), "{what}: {}", run.report());
        fs::remove_dir_all(&repo.path).unwrap();
        cp(&copy, &repo.path);
    }
    // Config and key slots: the slot no longer opens, so nothing is read at all.
    let slot = first("keys");
    let text = fs::read_to_string(&slot).unwrap();
    let at = text.find("\"wrapped\": \"").unwrap() + 20;
    for (what, file, offset) in [
        ("key slot", slot, at as u64),
        ("config", repo.path.join("config"), 20),
    ] {
        flip_byte(&file, offset);
        let run = repo.run("list", &[]);
        assert!(
            matches!(run.code(), Some(2 | 3)),
            "{what}: {}",
            run.report()
        );
        fs::remove_dir_all(&repo.path).unwrap();
        cp(&copy, &repo.path);
    }
    repo.run("check", &["--read-data", "--full"]).assert_exit(0);
}

#[test]
fn key_rotation_keeps_old_backups_readable() {
    let mut repo = Repo::init_encrypted_on(Store::Local, PASS);
    let c = archiving(&repo);
    fill(&c, 1, 300);
    let want = c.psql(ROWS);
    repo.backup(&c);
    c.switch_wal_and_wait_archived();
    let old_slot = repo.run("key", &["list", "--json"]).assert_ok().json()[0]["id"]
        .as_str()
        .unwrap()
        .to_string();

    let dir = TestDir::new("newkey");
    let new_file = dir.join("new");
    fs::write(&new_file, "a brand new passphrase\n").unwrap();
    chown_to_postgres(&new_file);
    repo.run("key", &["add", "--new-passphrase-file", s(&new_file)])
        .assert_ok();
    let old_file = repo.passphrase_file.replace(new_file);
    repo.run("key", &["remove", &old_slot]).assert_ok();
    let slots = repo.run("key", &["list", "--json"]).assert_ok().json();
    assert_eq!(slots.as_array().unwrap().len(), 1, "{slots}");
    assert_eq!(slots[0]["current"], true, "{slots}");

    // The removed passphrase opens nothing; the new one restores the old backup.
    let spec = repo.spec.clone();
    let old = old_file.unwrap();
    pgsnapfs(&["list", "--repo", &spec, "--passphrase-file", s(&old)])
        .assert_exit(2)
        .assert_mentions("no key slot");
    let out = TestDir::new("restore");
    let to = out.join("data");
    repo.restore(&to, &["--backup", "latest"]).assert_ok();
    let restored = Cluster::start_on(&to);
    assert_eq!(restored.psql(ROWS), want);
}

/// The documented GRANTs (docs/operations.md, "A backup role") are enough for `backup`.
#[test]
fn backup_works_as_a_non_superuser_role() {
    let repo = Repo::init_encrypted_on(Store::Local, PASS);
    let c = archiving(&repo);
    fill(&c, 1, 300);
    let want = c.psql(ROWS);
    c.create_backup_role(None);
    assert_eq!(
        c.psql("SELECT rolsuper FROM pg_roles WHERE rolname = 'pgsnapfs_backup'"),
        "f"
    );
    let mut args: Vec<String> = c.backup_args();
    let u = args.iter().position(|a| a == "-U").unwrap();
    args[u + 1] = "pgsnapfs_backup".into();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    repo.run("backup", &args).assert_ok();
    c.switch_wal_and_wait_archived();

    let out = TestDir::new("restore");
    let to = out.join("data");
    repo.restore(&to, &["--backup", "latest"]).assert_ok();
    let restored = Cluster::start_on(&to);
    assert_eq!(restored.psql(ROWS), want);
}

/// A view's restore_command gets the key from a 0600 file of the server's user in the scratch
/// directory, never from its command line; the mount shows nothing to other users.
#[test]
fn a_mounted_view_fetches_wal_with_a_private_key_file() {
    use std::os::unix::fs::MetadataExt;
    let repo = Repo::init_encrypted_on(Store::Local, PASS);
    let source = archiving(&repo);
    fill(&source, 1, 400);
    repo.backup(&source);
    let want = source.psql(ROWS);
    source.switch_wal_and_wait_archived();

    let work = TestDir::new("mount");
    let mp = fs::canonicalize(work.subdir("mnt", 0o755)).unwrap();
    let scratch = work.join("scratch");
    let args = repo.args(
        "mount",
        &[
            s(&mp),
            "--backup",
            "latest",
            "--scratch",
            s(&scratch),
            "--shared-buffers",
            "128MB",
            "--background",
        ],
    );
    pgsnapfs_as_root(&args).assert_ok();
    let postgres_uid = fs::metadata(repo.passphrase_file.as_ref().unwrap())
        .unwrap()
        .uid();
    let key = fs::metadata(scratch.join("passphrase")).unwrap();
    assert_eq!((key.mode() & 0o777, key.uid()), (0o600, postgres_uid));
    assert_eq!(fs::metadata(&scratch).unwrap().mode() & 0o077, 0);
    assert_eq!(
        fs::metadata(&mp).unwrap().mode() & 0o007,
        0,
        "the view is not world-readable"
    );
    let conf = fs::read_to_string(mp.join("postgresql.auto.conf")).unwrap();
    assert!(conf.contains("--passphrase-file"), "{conf}");
    assert!(!conf.contains(PASS), "{conf}");
    {
        let server = Cluster::start_on(&mp);
        server.wait_until_paused_or_ready();
        assert_eq!(server.psql(ROWS), want);
    }
    pgsnapfs_as_root(&["umount", s(&mp)]).assert_ok();
    assert!(
        !scratch.join("passphrase").exists(),
        "the key file goes with the mount"
    );
}
