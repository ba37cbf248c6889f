//! `pgsnapfs check` against backups of real PostgreSQL: a clean repository passes; a
//! flipped byte in a data chunk, in a pack's entry table, in a snapshot manifest, in archived
//! WAL and in a WAL summary, and a missing WAL segment, are each reported (exit 3) naming the
//! object, the backups and the files affected; the unaffected backup still restores with
//! exactly its rows, and reads of the damaged data fail with exit 3 rather than return wrong
//! bytes.

// This file uses only part of the harness's re-exports.
#[allow(unused_imports)]
mod common;

use common::*;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

const KEPT_ROWS: &str =
    "SELECT count(*) || ':' || sum(id) || ':' || md5(string_agg(v, ',' ORDER BY id)) FROM kept";

fn check(repo: &Repo, state: &Path, args: &[&str]) -> Run {
    let mut all = vec!["--json", "--state-dir", state.to_str().unwrap()];
    all.extend_from_slice(args);
    repo.run("check", &all)
}

fn problems(report: &serde_json::Value) -> Vec<serde_json::Value> {
    report["problems"]
        .as_array()
        .unwrap_or_else(|| panic!("no \"problems\" array in {report}"))
        .clone()
}

fn strings(v: &serde_json::Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// The one problem of `kind`.
#[track_caller]
fn the_problem(report: &serde_json::Value, kind: &str) -> serde_json::Value {
    let found: Vec<_> = problems(report)
        .into_iter()
        .filter(|p| p["kind"] == kind)
        .collect();
    assert_eq!(found.len(), 1, "one {kind} problem expected in {report:#}");
    found[0].clone()
}

fn kinds(report: &serde_json::Value) -> BTreeSet<String> {
    problems(report)
        .iter()
        .map(|p| p["kind"].as_str().unwrap().to_string())
        .collect()
}

fn chunk_size(repo: &Repo) -> usize {
    let config: serde_json::Value =
        serde_json::from_slice(&fs::read(repo.path.join("config")).unwrap()).unwrap();
    json_u64(&config, "chunk_size") as usize
}

/// The only place of chunk `n` of a file (as restored), in the repository's packs.
#[track_caller]
fn chunk_place(repo: &Repo, file: &Path, n: usize) -> BlobPlace {
    let data = fs::read(file).unwrap();
    let size = chunk_size(repo);
    let chunk = &data[n * size..((n + 1) * size).min(data.len())];
    let mut places = find_blob(&repo.path, &Sha256::digest(chunk));
    assert_eq!(places.len(), 1, "chunk {n} of {}", file.display());
    places.remove(0)
}

/// A table of about 6 MB of barely compressible rows: many chunks.
fn create_big(c: &Cluster, table: &str) -> String {
    c.psql(&format!(
        "CREATE TABLE {table}(id int PRIMARY KEY, v text);
         INSERT INTO {table} SELECT g, md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text)
           FROM generate_series(1, 50000) g;
         CHECKPOINT;"
    ));
    c.psql(&format!("SELECT pg_relation_filepath('{table}')"))
}

fn wal_key(repo: &Repo, sysid: &str, seg: &str) -> std::path::PathBuf {
    repo.path.join("wal").join(sysid).join(&seg[..8]).join(seg)
}

#[test]
fn check_reports_each_kind_of_damage_and_the_rest_still_restores() {
    let repo = Repo::init();
    let state = TestDir::new("check-state");
    let mut source = Cluster::archiving_to(&repo.spec);
    let sysid = source.system_identifier();
    source.psql(
        "CREATE TABLE kept AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 1000) g",
    );
    let want_kept = source.psql(KEPT_ROWS);
    let b1 = json_str(&repo.backup(&source), "id");

    // Two tables only the second backup holds.
    let hurt = create_big(&source, "hurt");
    let listed = create_big(&source, "listed");
    let b2 = json_str(&repo.backup(&source), "id");
    // WAL after the second backup and before the third: needed to recover past b2 only.
    let mut segs = Vec::new();
    for i in 0..3 {
        source.psql(&format!("INSERT INTO kept VALUES ({}, 'later')", 2000 + i));
        segs.push(source.switch_wal_and_wait_archived());
    }
    let b3 = json_str(&repo.backup(&source), "id");
    source.stop();

    let clean = check(&repo, state.path(), &["--read-data"]).assert_exit(0);
    let report = clean.json();
    assert_eq!(report["ok"], true, "{}", clean.report());
    assert_eq!(json_u64(&report, "snapshots"), 3, "{report}");
    assert!(json_u64(&report, "packs") > 0, "{report}");
    assert_eq!(report["packs_read"], report["packs"], "{report}");
    assert!(json_u64(&report, "blobs_checked") > 200, "{report}");
    assert!(json_u64(&report, "wal_objects_read") >= 6, "{report}");
    assert!(problems(&report).is_empty(), "{report}");

    // Restore b2 while it is intact, to find its chunks.
    let work = TestDir::new("check-restore");
    let b2_dir = work.join("b2");
    repo.restore(&b2_dir, &["--backup", &b2]).assert_ok();
    let size = chunk_size(&repo);
    let victim = fs::metadata(b2_dir.join(&hurt)).unwrap().len() as usize / size / 2;
    let chunk = chunk_place(&repo, &b2_dir.join(&hurt), victim);
    let entry = chunk_place(&repo, &b2_dir.join(&listed), victim);
    let pack_key = |p: &BlobPlace| {
        p.pack
            .strip_prefix(&repo.path)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string()
    };

    // The damage.
    flip_byte(&chunk.pack, chunk.offset + chunk.stored_len / 2);
    // The high byte of the entry's offset: it now points far outside the pack.
    flip_byte(&entry.pack, entry.entry_at + 39);
    let manifest = repo.path.join("snapshots").join(&b3);
    flip_byte(&manifest, fs::metadata(&manifest).unwrap().len() / 2);
    let bad_wal = wal_key(&repo, &sysid, &segs[0]);
    flip_byte(&bad_wal, fs::metadata(&bad_wal).unwrap().len() / 2);
    let summary = repo
        .path
        .join("walsum")
        .join(&sysid)
        .join(&segs[1][..8])
        .join(&segs[1]);
    flip_byte(&summary, fs::metadata(&summary).unwrap().len() - 1);
    fs::remove_file(wal_key(&repo, &sysid, &segs[2])).unwrap();

    // Structure only: what needs no data read.
    let run = check(&repo, state.path(), &[]).assert_exit(3);
    let report = run.json();
    assert_eq!(report["ok"], false, "{}", run.report());
    assert_eq!(
        kinds(&report),
        ["bad_manifest", "entry_outside_pack", "wal_gap"]
            .map(String::from)
            .into(),
        "{report:#}"
    );
    let p = the_problem(&report, "bad_manifest");
    assert_eq!(json_str(&p, "object"), format!("snapshots/{b3}"));
    assert_eq!(strings(&p["backups"]), [b3.clone()].into());
    let p = the_problem(&report, "entry_outside_pack");
    assert_eq!(json_str(&p, "object"), pack_key(&entry));
    assert_eq!(strings(&p["backups"]), [b2.clone()].into(), "{p}");
    assert_eq!(strings(&p["files"]), [listed.clone()].into(), "{p}");
    let p = the_problem(&report, "wal_gap");
    assert!(json_str(&p, "object").ends_with(&segs[2]), "{p}");
    assert_eq!(strings(&p["backups"]), [b2.clone()].into(), "{p}");

    // Reading the data finds the rest; the record of the clean run does not hide it with
    // --full.
    let run = check(&repo, state.path(), &["--read-data", "--full"]).assert_exit(3);
    let report = run.json();
    assert_eq!(
        kinds(&report),
        [
            "bad_manifest",
            "bad_wal",
            "bad_wal_summary",
            "blob_corrupt",
            "entry_outside_pack",
            "wal_gap"
        ]
        .map(String::from)
        .into(),
        "{report:#}"
    );
    let p = the_problem(&report, "blob_corrupt");
    assert_eq!(json_str(&p, "object"), pack_key(&chunk));
    assert_eq!(strings(&p["backups"]), [b2.clone()].into(), "{p}");
    assert_eq!(strings(&p["files"]), [hurt.clone()].into(), "{p}");
    let p = the_problem(&report, "bad_wal");
    assert_eq!(
        json_str(&p, "object"),
        format!("wal/{sysid}/{}/{}", &segs[0][..8], segs[0])
    );
    assert_eq!(strings(&p["backups"]), [b2.clone()].into(), "{p}");
    let p = the_problem(&report, "bad_wal_summary");
    assert!(json_str(&p, "object").starts_with("walsum/"), "{p}");
    assert_eq!(strings(&p["backups"]), [b2.clone()].into(), "{p}");
    for p in problems(&report) {
        assert!(!strings(&p["backups"]).contains(&b1), "{b1} is intact: {p}");
    }

    // For people: the same, on stdout, with the exit code.
    let run = repo
        .run(
            "check",
            &[
                "--read-data",
                "--full",
                "--state-dir",
                state.path().to_str().unwrap(),
            ],
        )
        .assert_exit(3);
    let text = run.stdout_str();
    assert!(text.contains("PROBLEM blob_corrupt"), "{}", run.report());
    assert!(text.contains(&hurt), "{}", run.report());

    // The intact backup restores with exactly its rows.
    let b1_dir = work.join("b1");
    repo.restore(&b1_dir, &["--backup", &b1]).assert_ok();
    let restored = Cluster::start_on(&b1_dir);
    restored.wait_until_paused_or_ready();
    assert_eq!(restored.psql(KEPT_ROWS), want_kept, "kept in backup {b1}");
    drop(restored);

    // Damaged reads fail loudly, naming the object, and never hand out the bytes.
    repo.restore(&work.join("b2-again"), &["--backup", &b2])
        .assert_exit(3)
        .assert_mentions(&pack_key(&chunk));
    repo.restore(&work.join("b3"), &["--backup", &b3])
        .assert_exit(3)
        .assert_mentions(&b3);
    let fetched = work.join("fetched");
    repo.run("wal-fetch", &[&segs[0], fetched.to_str().unwrap()])
        .assert_exit(3);
    assert!(!fetched.exists(), "a corrupt WAL segment was written out");
}

/// `--read-data-subset` slices cover every pack once; the record skips what an earlier run
/// verified, so a corruption after that is found by `--full` (or once the record expires),
/// not by the next incremental run: the documented trade-off.
#[test]
fn subsets_and_the_record_of_verified_packs() {
    let repo = Repo::init();
    let state = TestDir::new("check-state");
    let mut source = Cluster::archiving_to(&repo.spec);
    let hurt = create_big(&source, "hurt");
    repo.backup(&source);
    source.switch_wal_and_wait_archived();
    source.stop();

    let mut packs_read = 0;
    let mut wal_read = 0;
    for slice in ["1/2", "2/2"] {
        let report = check(&repo, state.path(), &["--read-data-subset", slice])
            .assert_exit(0)
            .json();
        packs_read += json_u64(&report, "packs_read");
        wal_read += json_u64(&report, "wal_objects_read");
        assert_eq!(json_u64(&report, "packs_verified_earlier"), 0, "{report}");
    }
    let again = check(&repo, state.path(), &["--read-data"])
        .assert_exit(0)
        .json();
    let packs = json_u64(&again, "packs");
    assert_eq!(packs_read, packs, "the two halves read every pack once");
    assert_eq!(wal_read, json_u64(&again, "wal_objects"));
    assert_eq!(json_u64(&again, "packs_read"), 0, "{again}");
    assert_eq!(json_u64(&again, "packs_verified_earlier"), packs, "{again}");
    assert_eq!(json_u64(&again, "wal_objects_read"), 0, "{again}");

    let work = TestDir::new("check-restore");
    let dir = work.join("data");
    repo.restore(&dir, &["--backup", "latest"]).assert_ok();
    let place = chunk_place(&repo, &dir.join(&hurt), 3);
    flip_byte(&place.pack, place.offset + 1);

    let skipped = check(&repo, state.path(), &["--read-data"])
        .assert_exit(0)
        .json();
    assert_eq!(json_u64(&skipped, "packs_read"), 0, "{skipped}");
    let full = check(&repo, state.path(), &["--read-data", "--full"])
        .assert_exit(3)
        .json();
    let p = the_problem(&full, "blob_corrupt");
    assert_eq!(strings(&p["files"]), [hurt.clone()].into(), "{p}");
    let elsewhere = TestDir::new("check-state-2");
    check(&repo, elsewhere.path(), &["--read-data"]).assert_exit(3);

    check(&repo, state.path(), &["--read-data-subset", "0/2"]).assert_exit(2);
}

/// On either back end: a clean repository passes `check --read-data`, reading every pack and
/// WAL object; a pack that disappears is reported (exit 3) naming the backup that needs it.
fn missing_pack_is_named(store: Store) {
    let repo = Repo::init_on(store);
    let source = Cluster::archiving_to(&repo.spec);
    create_big(&source, "kept");
    let id = json_str(&repo.backup(&source), "id");
    source.switch_wal_and_wait_archived();
    let state = TestDir::new("check-state");

    let clean = check(&repo, state.path(), &["--read-data", "--full"])
        .assert_exit(0)
        .json();
    assert!(problems(&clean).is_empty(), "{clean:#}");
    assert!(json_u64(&clean, "packs_read") > 0, "{clean:#}");
    assert!(json_u64(&clean, "wal_objects_read") > 0, "{clean:#}");

    let backend = pgsnapfs::store::open_backend(&repo.spec).expect("open the repository");
    let pack = backend
        .list("packs/")
        .expect("list packs")
        .into_iter()
        .next()
        .expect("a backup wrote packs");
    backend.delete(&pack).expect("delete a pack");
    let report = check(&repo, state.path(), &[]).assert_exit(3).json();
    let p = the_problem(&report, "missing_pack");
    assert!(
        p["object"].as_str().unwrap_or_default().contains(&pack),
        "{p:#}"
    );
    assert_eq!(strings(&p["backups"]), BTreeSet::from([id]), "{p:#}");
}

on_both_stores!(missing_pack_is_named);
