//! `wal-push`: an encrypted repository archived through a key-file slot (no Argon2id per
//! segment), restored from; the key file revoked; a segment pushed twice, and a different file
//! under an archived name.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

const PASS: &str = "correct horse battery staple";
const ROWS: &str = "SELECT count(*) || ':' || md5(string_agg(v, ',' ORDER BY id)) FROM t";

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn fill(c: &Cluster, from: u32, to: u32) {
    c.psql(&format!(
        "CREATE TABLE IF NOT EXISTS t(id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, md5(g::text) FROM generate_series({from}, {to}) g;"
    ));
}

/// `wal-push --json FILE` into `repo`, opened with `key_file` only.
fn push_with(repo: &Repo, key_file: &Path, file: &Path) -> Run {
    pgsnapfs(&[
        "wal-push",
        "--repo",
        &repo.spec,
        "--passphrase-file",
        s(key_file),
        "--json",
        s(file),
    ])
}

#[test]
fn key_file_slot_archives_restores_and_is_revoked() {
    let repo = Repo::init_encrypted_on(Store::Local, PASS);
    let keys = TestDir::new("keys");
    let key_file = keys.subdir("k", 0o700).join("archive.key");
    let added = repo
        .run("key", &["add", "--new-key-file", s(&key_file)])
        .assert_ok()
        .stdout_str();
    let slot = added
        .split_whitespace()
        .nth(3)
        .unwrap_or_else(|| panic!("no slot id in {added:?}"))
        .to_string();
    let meta = fs::metadata(&key_file).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let key = fs::read(&key_file).unwrap();
    // Never overwritten.
    repo.run("key", &["add", "--new-key-file", s(&key_file)])
        .assert_exit(2)
        .assert_mentions("already exists");
    assert_eq!(fs::read(&key_file).unwrap(), key);
    let listed = repo.run("key", &["list", "--json"]).assert_ok().json();
    let kinds: Vec<(String, String)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (json_str(r, "id"), json_str(r, "kind")))
        .collect();
    assert!(
        kinds.contains(&(slot.clone(), "key_file".into())) && kinds.len() == 2,
        "{listed}"
    );

    // archive_command opens the repository with the key file alone.
    let mut opts = ClusterOptions::archiving_to(&repo.spec);
    opts.settings.push((
        "archive_command".into(),
        format!(
            "'{} wal-push --repo \"{}\" --passphrase-file \"{}\" %p'",
            pgsnapfs_bin().display(),
            repo.spec,
            key_file.display()
        ),
    ));
    let source = Cluster::start_new(opts);
    fill(&source, 1, 500);
    repo.backup(&source);
    fill(&source, 501, 800);
    let want = source.psql(ROWS);
    let lsn = source.current_wal_lsn();
    fill(&source, 801, 900);
    let name = source.switch_wal_and_wait_archived();
    // The backup's .backup file and every segment went in at the first attempt.
    assert_eq!(
        source.psql("SELECT failed_count, last_failed_wal FROM pg_stat_archiver"),
        "0|",
        "an archive_command failed"
    );
    // Copied aside at once: a checkpoint may recycle it in pg_wal.
    let aside = keys.subdir("aside", 0o700);
    let copy = aside.join(&name);
    copy_for_postgres(&source.data.join("pg_wal").join(&name), &copy);

    let out = TestDir::new("restore");
    let to = out.join("data");
    repo.restore(&to, &["--target-lsn", &lsn]).assert_ok();
    let restored = Cluster::start_on(&to);
    restored.wait_until_paused();
    assert_eq!(restored.psql(ROWS), want, "rows at the target");
    drop(restored);

    // The same segment again: already archived. Another file under its name: refused.
    let again = push_with(&repo, &key_file, &copy).assert_ok().json();
    assert_eq!(again["outcome"], "already_archived", "{again}");
    let mut other = fs::read(&copy).unwrap();
    let at = other.len() - 100;
    other[at] ^= 0xff;
    let forged = keys.subdir("forged", 0o700).join(&name);
    fs::write(&forged, &other).unwrap();
    chown_to_postgres(&forged);
    push_with(&repo, &key_file, &forged)
        .assert_exit(1)
        .assert_mentions("different content");

    // Its slot removed, the key file opens nothing, and says so.
    repo.run("key", &["remove", &slot]).assert_ok();
    push_with(&repo, &key_file, &copy)
        .assert_exit(2)
        .assert_mentions("no key slot");
}
