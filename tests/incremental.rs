//! PostgreSQL 17 and later: with `summarize_wal = on`, a backup reads only the chunks that the
//! server's WAL summaries show changed since the previous backup, and takes the rest from it.
//! What it stores must be what a full read stores, byte for byte, after every kind of change
//! that moves, grows, shrinks or replaces relation files.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::fs;
use std::time::Duration;

/// One test per major, so they run in parallel and a failure names the major.
macro_rules! each_major {
    ($($name:ident => $major:literal),* $(,)?) => {$(
        #[test]
        fn $name() {
            incremental_equals_full_read($major)
        }
    )*};
}

each_major!(postgres_17 => 17, postgres_18 => 18);

/// Every user table's row count and a hash of its rows, and whether `gone` exists.
const CONTENTS: &str = "SELECT string_agg(format('%s %s %s', t, n, h), '; ' ORDER BY t) FROM (
       SELECT 'big' t, count(*) n, md5(string_agg(id || v, ',' ORDER BY id)) h FROM big
       UNION ALL SELECT 'upd', count(*), md5(string_agg(id || v, ',' ORDER BY id)) FROM upd
       UNION ALL SELECT 'trunc', count(*), md5(string_agg(id || v, ',' ORDER BY id)) FROM trunc
       UNION ALL SELECT 'fresh', count(*), md5(string_agg(id || v, ',' ORDER BY id)) FROM fresh
       UNION ALL SELECT 'vf', count(*), md5(string_agg(id || v, ',' ORDER BY id)) FROM vf
       UNION ALL SELECT 'gone exists', count(*), '' FROM pg_class WHERE relname = 'gone') x";

/// The relation files of a restored data directory: everything under base/ and global/ but
/// pg_control, which every checkpoint rewrites.
fn relation_files(data: &std::path::Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for dir in ["base", "global"] {
        for (k, v) in tree_digest(&data.join(dir)) {
            if !(dir == "global" && k == "pg_control") {
                out.insert(format!("{dir}/{k}"), v);
            }
        }
    }
    out
}

fn incremental_equals_full_read(major: u32) {
    let repo = Repo::init();
    let source = Cluster::start_new(ClusterOptions {
        server_bin: Some(server_bin(major)),
        // Checksums WAL-log hint bits, so the summaries see every byte that changes on disk;
        // without them only hint bits could differ from a full read.
        data_checksums: true,
        settings: vec![
            ("summarize_wal".into(), "on".into()),
            // Nothing may write between the two backups compared below.
            ("autovacuum".into(), "off".into()),
        ],
        ..ClusterOptions::archiving_to(&repo.spec)
    });
    source.psql(
        "CREATE TABLE big(id int PRIMARY KEY, v text);
         INSERT INTO big SELECT g, repeat(md5(g::text), 3) FROM generate_series(1, 100000) g;
         CREATE TABLE upd AS SELECT g id, md5(g::text) v FROM generate_series(1, 20000) g;
         CREATE TABLE trunc AS SELECT g id, md5(g::text) v FROM generate_series(1, 20000) g;
         CREATE TABLE gone AS SELECT g id, md5(g::text) v FROM generate_series(1, 20000) g;
         CREATE TABLE vf AS SELECT g id, md5(g::text) v FROM generate_series(1, 20000) g;
         VACUUM; CHECKPOINT;",
    );
    let first = repo.backup(&source);
    assert_eq!(first["read"]["mode"], "full", "{first}");

    source.psql(
        "INSERT INTO big SELECT g, 'new ' || g FROM generate_series(100001, 101000) g;
         UPDATE upd SET v = 'updated' WHERE id % 997 = 0;
         TRUNCATE trunc; INSERT INTO trunc VALUES (1, 'after truncate');
         CREATE TABLE fresh AS SELECT g id, 'fresh ' || g v FROM generate_series(1, 5000) g;
         DROP TABLE gone;
         DELETE FROM vf WHERE id % 2 = 0; VACUUM FULL vf;
         DELETE FROM upd WHERE id > 15000; VACUUM upd;
         CHECKPOINT;",
    );
    let want = source.psql(CONTENTS);
    assert!(want.contains("gone exists 0"), "{want}");

    let inc = repo.backup(&source);
    let read = &inc["read"];
    assert_eq!(read["mode"], "wal-summaries", "{inc}");
    let (skipped, bytes_read) = (
        json_u64(read, "bytes_skipped"),
        json_u64(read, "bytes_read"),
    );
    assert!(
        skipped > 2 * bytes_read,
        "an incremental after a few changes should skip most of {} bytes: {inc}",
        json_u64(&inc, "size_logical")
    );

    let full = repo
        .run(
            "backup",
            &[
                &["--full-read", "--json"][..],
                &source
                    .backup_args()
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>(),
            ]
            .concat(),
        )
        .assert_ok()
        .json();
    assert_eq!(full["read"]["mode"], "full", "{full}");
    assert_eq!(json_u64(&full["read"], "bytes_skipped"), 0, "{full}");
    assert!(
        json_str(&full["read"], "full_read_reason").contains("--full-read"),
        "{full}"
    );

    let out = TestDir::new("restores");
    let restore = |id: &str| {
        let to = out.join(id);
        repo.restore(&to, &["--backup", id]).assert_ok();
        to
    };
    let from_summaries = restore(&json_str(&inc, "id"));
    let from_full_read = restore(&json_str(&full, "id"));
    let files = relation_files(&from_summaries);
    assert!(files.len() > 100, "{files:?}");
    assert_same_tree(
        &relation_files(&from_full_read),
        &files,
        "the relation files of the WAL-summary backup, against a full read,",
    );

    let restored = Cluster::try_start_on_bin(&from_summaries, &server_bin(major), &[])
        .unwrap_or_else(|e| panic!("{e}"));
    restored.wait_until_paused_or_ready();
    assert_eq!(
        restored.psql(CONTENTS),
        want,
        "PostgreSQL {major}: rows restored from the WAL-summary backup"
    );
    drop(restored);

    // Summaries that no longer reach back to the previous backup (removed here, as
    // wal_summary_keep_time removes them) mean a full read, and so does summarize_wal = off.
    source.psql("INSERT INTO big VALUES (0, 'its summary is removed'); CHECKPOINT");
    let summarized = format!(
        "SELECT count(*) FROM pg_available_wal_summaries() WHERE end_lsn > '{}'",
        json_str(&full, "start_lsn")
    );
    wait_for(Duration::from_secs(60), || {
        match source.psql(&summarized).as_str() {
            "0" => Err("the change is not summarized yet".into()),
            _ => Ok(()),
        }
    })
    .unwrap();
    for f in fs::read_dir(source.data.join("pg_wal/summaries")).unwrap() {
        fs::remove_file(f.unwrap().path()).unwrap();
    }
    let gap = repo.backup(&source);
    assert_eq!(gap["read"]["mode"], "full", "{gap}");
    assert!(
        json_str(&gap["read"], "full_read_reason").contains("summar"),
        "{gap}"
    );
    source.psql("ALTER SYSTEM SET summarize_wal = off; SELECT pg_reload_conf()");
    let off = repo.backup(&source);
    assert!(
        json_str(&off["read"], "full_read_reason").contains("summarize_wal is off"),
        "{off}"
    );
}
