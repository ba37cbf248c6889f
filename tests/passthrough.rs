//! `mount --hydrate`: files copied to scratch and served by the kernel with FUSE
//! passthrough. Bytes read equal the source's on the catalogue and through a view a server
//! runs on (writes included); a corrupt chunk is never copied and still reads as EIO; a
//! mount without the privilege for passthrough serves the copies itself and says so once.

// This file uses only part of the harness's re-exports.
#[allow(unused_imports)]
mod common;

use common::mount::{mountpoint, s, view_args, Mount};
use common::*;
use sha2::{Digest, Sha256};
use std::fs;
use std::path::Path;
use std::time::Duration;

const FINISHED: &str = "hydration finished";
const FALLBACK: &str = "FUSE passthrough is not available";

fn chunk_size(repo: &Repo) -> u64 {
    let config: serde_json::Value =
        serde_json::from_slice(&fs::read(repo.path.join("config")).unwrap()).unwrap();
    json_u64(&config, "chunk_size")
}

/// Bytes the mount process has written so far: every byte it serves goes to /dev/fuse,
/// while passthrough reads never pass through it.
fn written_by(pid: u32) -> u64 {
    let io = fs::read_to_string(format!("/proc/{pid}/io")).unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("wchar: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

/// Hydration runs at nice 19: on a machine busy with other work (a parallel test run, a
/// benchmark at a higher priority) it may take minutes, which is what a user would want.
const HYDRATION_TIMEOUT: Duration = Duration::from_secs(600);

/// Waits until the mount's log holds `line`, and returns the log.
#[track_caller]
fn wait_log(m: &Mount, line: &str) -> String {
    wait_for(HYDRATION_TIMEOUT, || {
        let log = fs::read_to_string(&m.log).unwrap_or_default();
        match log.contains(line) {
            true => Ok(log),
            false => Err(String::new()),
        }
    })
    .unwrap_or_else(|e| panic!("no {line:?} in the mount's log: {e}\n{}", m.report()))
}

/// `pgsnapfs -v mount ...` as postgres: a mount without CAP_SYS_ADMIN.
fn mount_as_postgres(repo: &Repo, mnt: &Path, args: &[&str]) -> Mount {
    let cmd = pgsnapfs_command(&repo.args("mount", &[&[s(mnt)], args].concat()));
    Mount::spawn(cmd, mnt).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn hydrated_files_read_as_the_source_and_corruption_still_fails() {
    let repo = Repo::init();
    let mut source = Cluster::archiving_to(&repo.spec);
    source.psql(
        "CREATE TABLE big(id int PRIMARY KEY, v text);
         INSERT INTO big SELECT g, md5(g::text) || md5((g * 7)::text)
           FROM generate_series(1, 60000) g;",
    );
    let rel = source.psql("SELECT pg_relation_filepath('big')");
    // Before the checkpoint, so the hint bits it sets are in the backup too.
    let rows = source.psql("SELECT count(*), sum(length(v)) FROM big");
    source.psql("CHECKPOINT");
    let id = json_str(&repo.backup(&source), "id");
    source.stop();
    let want = fs::read(source.data.join(&rel)).unwrap();
    let work = TestDir::new("passthrough");
    let latest = |m: &Mount| m.dir.join("backups/latest").join(&rel);

    // Catalogue, as root: after hydration, reads are the kernel's, not the mount process's.
    {
        let scratch = work.join("scratch-cat");
        let m = Mount::start(
            &repo,
            &mountpoint(&work, "cat"),
            &["--hydrate", "--scratch", s(&scratch), "-v"],
        );
        wait_log(&m, FINISHED);
        let before = written_by(m.pid());
        assert_eq!(fs::read(latest(&m)).unwrap(), want, "passthrough read");
        let served = written_by(m.pid()) - before;
        assert!(
            served < want.len() as u64 / 4,
            "the mount process served {served} of {} bytes\n{}",
            want.len(),
            m.report()
        );
        // The same file through backups/<id>/ (not hydrated) reads the same.
        let by_id = m.dir.join("backups").join(&id).join(&rel);
        assert_eq!(fs::read(by_id).unwrap(), want, "read through the mount");
        assert!(!m.report().contains(FALLBACK), "{}", m.report());
    }

    // A view: the server's relation files are the local copies, adopted as copy-on-write
    // copies; it reads the original rows and writes into the copies.
    {
        let scratch = work.join("scratch-view");
        let mut args = view_args(&scratch, &["--backup", &id, "--target-action", "promote"]);
        args.extend(["--hydrate", "-v"]);
        let mut m = Mount::start(&repo, &mountpoint(&work, "view"), &args);
        wait_log(&m, FINISHED);
        let pid = m.pid();
        let server = m.start_server();
        server.wait_until_paused_or_ready();
        let before = written_by(pid);
        assert_eq!(
            server.psql("SELECT count(*), sum(length(v)) FROM big"),
            rows
        );
        let served = written_by(pid) - before;
        assert!(
            served < want.len() as u64 / 4,
            "the mount process served {served} bytes of a {}-byte table",
            want.len()
        );
        server.psql("UPDATE big SET v = 'x' WHERE id <= 1000; CHECKPOINT;");
        assert_eq!(
            server.psql("SELECT count(*) FROM big WHERE v = 'x'"),
            "1000"
        );
        m.stop_server();
        assert!(!m.report().contains(FALLBACK), "{}", m.report());
        m.umount_ok();
        assert!(
            !scratch.join("hydrated").exists(),
            "local copies left after unmount"
        );
    }

    // A corrupt chunk: the file is never copied, and its bad chunk reads as EIO.
    let cs = chunk_size(&repo);
    let victim = 9u64;
    let chunk = &want[(victim * cs) as usize..((victim + 1) * cs) as usize];
    let places = find_blob(&repo.path, &Sha256::digest(chunk));
    assert_eq!(places.len(), 1);
    flip_byte(&places[0].pack, places[0].offset + places[0].stored_len / 2);
    {
        let scratch = work.join("scratch-bad");
        let m = Mount::start(
            &repo,
            &mountpoint(&work, "bad"),
            &["--hydrate", "--scratch", s(&scratch), "-v"],
        );
        let log = wait_log(&m, FINISHED);
        assert!(
            log.contains(&format!("not copying {rel}")),
            "the corrupt file was copied\n{}",
            m.report()
        );
        let eio = |r: std::io::Result<Vec<u8>>| matches!(r, Err(e) if e.raw_os_error() == Some(libc::EIO));
        assert!(eio(fs::read(latest(&m))), "sequential read");
        assert!(
            eio(pread(&latest(&m), victim * cs + 10, 100)),
            "random read"
        );
        let next = ((victim + 1) * cs) as usize;
        assert_eq!(
            pread(&latest(&m), next as u64, 100).unwrap(),
            want[next..next + 100]
        );
    }
}

#[test]
fn without_the_privilege_copies_are_served_by_the_mount_and_it_says_so_once() {
    let repo = Repo::init();
    let mut source = Cluster::archiving_to(&repo.spec);
    source.psql(
        "CREATE TABLE t(id int, v text);
         INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 20000) g;
         CREATE TABLE u AS SELECT * FROM t WHERE id % 3 = 0;
         SELECT count(*) FROM t;
         SELECT count(*) FROM u;
         CHECKPOINT;",
    );
    let rels: Vec<String> = ["t", "u"]
        .iter()
        .map(|t| source.psql(&format!("SELECT pg_relation_filepath('{t}')")))
        .collect();
    repo.backup(&source);
    source.stop();
    let work = TestDir::new("passthrough-user");
    let scratch = work.subdir("scratch", 0o700);
    let m = mount_as_postgres(
        &repo,
        &mountpoint(&work, "mnt"),
        &["--hydrate", "--scratch", s(&scratch), "-v"],
    );
    wait_log(&m, FINISHED);
    // Only its own user may read a mount made without root.
    let cat = |rel: &str| {
        let path = m.dir.join("backups/latest").join(rel);
        let out = postgres_command("cat").arg(&path).output().unwrap();
        assert!(out.status.success(), "cat {}: {out:?}", path.display());
        out.stdout
    };
    let before = written_by(m.pid());
    let first = cat(&rels[0]);
    assert_eq!(first, fs::read(source.data.join(&rels[0])).unwrap());
    assert!(
        written_by(m.pid()) - before >= first.len() as u64,
        "served without going through the mount process?\n{}",
        m.report()
    );
    wait_log(&m, FALLBACK);
    for rel in rels.iter().chain(&rels) {
        assert_eq!(cat(rel), fs::read(source.data.join(rel)).unwrap(), "{rel}");
    }
    let log = fs::read_to_string(&m.log).unwrap();
    assert_eq!(log.matches(FALLBACK).count(), 1, "{}", m.report());
}
