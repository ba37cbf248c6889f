//! Incremental `verify`: once a verification of a backup is recorded, the next verify of the
//! same cluster reads only relations whose chunks changed, says what it skipped and in which
//! backup it was verified, still finds damage in what changed, and `verify --full` reads
//! everything again; `expire` deletes the record of a backup it expires, and a record left of
//! a gone backup is ignored. One cluster, in sequence, against real PostgreSQL and real FUSE.

// This file uses only part of the harness's re-exports.
#[allow(unused_imports)]
mod common;

use common::mount::{root_cmd, signal, wait_child, MOUNT_TIMEOUT};
use common::*;
use sha2::{Digest, Sha256};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::process::Stdio;

/// `pgsnapfs verify --json ARGS...` as root (FUSE).
fn verify(repo: &Repo, args: &[&str]) -> Run {
    let mut all = repo.args("verify", &["--json"]);
    all.extend(args.iter().map(|a| a.to_string()));
    pgsnapfs_as_root(&all)
}

/// The backup each skipped relation was verified in, by relation name.
fn skipped(report: &serde_json::Value) -> Vec<(String, String)> {
    report["skipped"]
        .as_array()
        .unwrap_or_else(|| panic!("no \"skipped\" array in {report}"))
        .iter()
        .map(|s| (json_str(s, "relation"), json_str(s, "verified_in")))
        .collect()
}

/// Flips a byte in the stored chunk holding the middle of `relpath` as restored in `restored` (the
/// chunk's id is the SHA-256 of its bytes in a plain repository).
fn corrupt_middle_chunk(repo: &Repo, restored: &std::path::Path, relpath: &str) {
    let chunk_size = {
        let config: serde_json::Value =
            serde_json::from_slice(&fs::read(repo.path.join("config")).unwrap()).unwrap();
        json_u64(&config, "chunk_size") as usize
    };
    let bytes = fs::read(restored.join(relpath)).unwrap();
    let chunks = bytes.len().div_ceil(chunk_size);
    assert!(chunks >= 4, "{relpath}: only {chunks} chunks");
    let at = chunks / 2 * chunk_size;
    let id = Sha256::digest(&bytes[at..(at + chunk_size).min(bytes.len())]);
    let places = find_blob(&repo.path, &id);
    assert!(
        !places.is_empty(),
        "the middle chunk of {relpath} is in no pack"
    );
    for p in &places {
        flip_byte(&p.pack, p.offset + p.stored_len / 2);
    }
}

#[test]
fn verify_reads_what_changed_since_a_recorded_verification() {
    let repo = Repo::init();
    let source = Cluster::archiving_to(&repo.spec);
    // Two tables of barely compressible rows spanning many chunks: `stable` never changes,
    // `hot` is rewritten in place (same file) between backups.
    let rows = |t: &str| {
        format!(
            "CREATE TABLE {t}(id int PRIMARY KEY, v text) WITH (autovacuum_enabled = off);
             INSERT INTO {t} SELECT g, md5(g::text) || md5((g * 7)::text) || md5('{t}' || g)
               FROM generate_series(1, 30000) g;"
        )
    };
    source.psql(&format!("{}{} CHECKPOINT;", rows("stable"), rows("hot")));
    let stable_path = source.psql("SELECT pg_relation_filepath('stable')");
    let hot_path = source.psql("SELECT pg_relation_filepath('hot')");

    // 1. The first verify reads everything and records it.
    let b1 = json_str(&repo.backup(&source), "id");
    let run = verify(&repo, &[]).assert_exit(0);
    let first = run.json();
    assert_eq!(first["full"], true, "{}", run.report());
    assert_eq!(first["recorded"], true, "{first}");
    assert!(skipped(&first).is_empty(), "{first}");
    let read_first = json_u64(&first, "tables");
    assert!(read_first > 0, "{first}");

    // 1b. SIGTERM while the test server runs (an assertion sleeps, so it cannot finish first):
    // verify stops the server, unmounts its view, records nothing and exits 128 + 15. Step 2
    // then runs on the record of step 1.
    let work = TestDir::new("verify-interrupt");
    let sleep = work.path().join("sleep.sql");
    fs::write(&sleep, "SELECT true FROM pg_sleep(600);\n").unwrap();
    let mut args = repo.args("verify", &["--json", "--sql"]);
    args.push(sleep.to_str().unwrap().to_string());
    let mut child = root_cmd(&args).stdout(Stdio::null()).spawn().unwrap();
    let suffix = format!("@{}", child.id());
    let view = || {
        let mounts = fs::read_to_string("/proc/mounts").unwrap();
        mounts
            .lines()
            .filter_map(|l| l.split_once(' '))
            .find(|(fsname, _)| fsname.starts_with("pgsnapfs-verify") && fsname.ends_with(&suffix))
            .map(|(_, rest)| rest.split(' ').next().unwrap().to_string())
    };
    let server: i32 = wait_for(MOUNT_TIMEOUT, || {
        let data = view().ok_or("no view mounted yet")?;
        let pid =
            fs::read_to_string(format!("{data}/postmaster.pid")).map_err(|e| e.to_string())?;
        pid.lines().next().and_then(|l| l.parse().ok()).ok_or(pid)
    })
    .unwrap();
    signal(child.id(), libc::SIGTERM);
    let status = wait_child(&mut child, MOUNT_TIMEOUT).expect("verify did not end after SIGTERM");
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{status:?}");
    assert_eq!(view(), None, "the interrupted verify left its view mounted");
    // SAFETY: signal 0 only asks whether the process exists.
    let alive = unsafe { libc::kill(server, 0) } == 0;
    assert!(
        !alive,
        "the interrupted verify left its server {server} running"
    );
    assert_eq!(
        repo.keys("verified/"),
        [format!("verified/{}/{b1}", source.system_identifier())]
    );

    // 2. A backup of the unchanged cluster: its user tables are skipped as verified in b1.
    source.psql("CHECKPOINT");
    let b2 = json_str(&repo.backup(&source), "id");
    let run = verify(&repo, &[]).assert_exit(0);
    let second = run.json();
    assert_eq!(json_str(&second, "backup"), b2);
    assert_eq!(second["full"], false, "{}", run.report());
    assert_eq!(json_str(&second, "since"), b1, "{second}");
    let skips = skipped(&second);
    for rel in ["stable", "stable_pkey", "hot", "hot_pkey"] {
        assert!(
            skips.contains(&(rel.to_string(), b1.clone())),
            "{rel} not skipped as verified in {b1}: {skips:?}"
        );
    }
    assert!(
        json_u64(&second, "bytes_read") * 4 < json_u64(&second, "bytes_skipped"),
        "an unchanged backup read most of its bytes again: {second}"
    );
    assert!(json_u64(&second, "tables") < read_first, "{second}");
    // The newest record replaces the older ones of the cluster.
    let records: Vec<String> = repo.keys("verified/");
    assert_eq!(
        records,
        [format!("verified/{}/{b2}", source.system_identifier())]
    );

    // 3. `hot` changes; both tables' chunks are then damaged. The incremental verify reads
    // the changed table and finds its damage (exit 3), and skips `stable` as verified in b1.
    source.psql("UPDATE hot SET v = reverse(v); VACUUM hot; CHECKPOINT;");
    assert_eq!(source.psql("SELECT pg_relation_filepath('hot')"), hot_path);
    let b3 = json_str(&repo.backup(&source), "id");
    source.switch_wal_and_wait_archived();
    let restored = TestDir::new("verify-incremental");
    let to = restored.join("data");
    repo.restore(&to, &["--backup", &b3]).assert_ok();
    corrupt_middle_chunk(&repo, &to, &hot_path);
    corrupt_middle_chunk(&repo, &to, &stable_path);

    let run = verify(&repo, &[]).assert_exit(3);
    let third = run.json();
    assert_eq!(json_str(&third, "backup"), b3);
    assert_eq!(third["ok"], false, "{}", run.report());
    assert_eq!(third["recorded"], false, "{third}");
    let p = problems(&third);
    assert!(
        p.iter().any(|m| m.contains("table hot")),
        "the damage in the changed table was not found: {p:?}\n{}",
        run.report()
    );
    assert!(
        skipped(&third).contains(&("stable".to_string(), b1.clone())),
        "{third}"
    );
    assert!(
        !p.iter().any(|m| m.contains("stable")),
        "stable was skipped, yet a problem names it: {p:?}"
    );

    // 4. `verify --full` reads the unchanged table too and finds its damage.
    let run = verify(&repo, &["--full"]).assert_exit(3);
    let full = run.json();
    assert_eq!(full["full"], true, "{}", run.report());
    assert!(skipped(&full).is_empty(), "{full}");
    let p = problems(&full);
    assert!(
        p.iter().any(|m| m.contains("table stable")),
        "verify --full did not find the damage in the unchanged table: {p:?}\n{}",
        run.report()
    );

    // 5. `expire` deletes the record of a backup it expires: b2's, with b1 and b2.
    let record = repo
        .path
        .join(format!("verified/{}/{b2}", source.system_identifier()));
    let (bytes, meta) = (fs::read(&record).unwrap(), fs::metadata(&record).unwrap());
    let expire = || {
        repo.run("expire", &["--keep-last", "1", "--json"])
            .assert_ok()
            .json()
    };
    let expired = expire();
    assert_eq!(
        json_u64(&expired, "verification_records_removed"),
        1,
        "{expired}"
    );
    assert_eq!(repo.objects("verified/"), [], "{expired}");

    // 6. A record of a gone backup, as an expire killed between the backup's manifest and its
    // record leaves it: verify ignores it, so it reads `stable` again and finds its damage, and
    // the next expire deletes it.
    fs::create_dir_all(record.parent().unwrap()).unwrap();
    fs::write(&record, bytes).unwrap();
    std::os::unix::fs::chown(&record, Some(meta.uid()), Some(meta.gid())).unwrap();
    let run = verify(&repo, &[]).assert_exit(3);
    let leftover = run.json();
    assert_eq!(leftover["full"], true, "{}", run.report());
    assert_eq!(leftover["since"], serde_json::Value::Null, "{leftover}");
    let p = problems(&leftover);
    assert!(
        p.iter().any(|m| m.contains("table stable")),
        "verify built on the record of a gone backup: {p:?}\n{}",
        run.report()
    );
    let expired = expire();
    assert_eq!(
        json_u64(&expired, "verification_records_removed"),
        1,
        "{expired}"
    );
    assert_eq!(repo.objects("verified/"), [], "{expired}");
}
