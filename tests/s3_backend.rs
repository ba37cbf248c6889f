//! The back-end contract, run against the local back end and against the S3 back end on a
//! real S3-protocol server (moto); then the S3 back end through a fault-injecting proxy, and
//! the `pgsnapfs` binary on an `s3://` repository.

mod common;
mod s3;

use pgsnapfs::store::backend::{Backend, BackendError, LocalBackend, S3Backend, S3Settings};
use s3::{Action, Admin, FaultProxy, Moto, Seen, SECRET_KEY};
use std::process::Command;
use std::time::Duration;

/// Fast retries, so injected failures cost milliseconds.
fn fast() -> S3Settings {
    S3Settings {
        initial_backoff: Duration::from_millis(10),
        ..S3Settings::default()
    }
}

fn open(endpoint: &str, bucket: &str, prefix: &str) -> S3Backend {
    s3::aws_env();
    S3Backend::open_with(
        &format!("s3://{bucket}/{prefix}?endpoint={endpoint}"),
        fast(),
    )
    .expect("open S3 back end")
}

/// Deterministic bytes that do not repeat within a part.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn is_conflict(r: Result<(), BackendError>) -> bool {
    matches!(r, Err(BackendError::Conflict { .. }))
}

/// What every back end must do, as `Backend`'s documentation states it.
fn contract(b: &dyn Backend) {
    let what = b.location();
    // Missing keys.
    assert!(b.get("nope").unwrap_err().is_not_found(), "{what}");
    assert!(b.get_range("nope", 0, 10).unwrap_err().is_not_found());
    assert!(b.get_range("nope", 0, 0).unwrap_err().is_not_found());
    assert!(!b.exists("nope").unwrap());
    assert!(b.size("nope").unwrap_err().is_not_found(), "{what}");
    assert!(b.list("").unwrap().is_empty());

    // Create-only, idempotent put.
    b.put("config", b"{}").unwrap();
    b.put("a/b/c", b"hello").unwrap();
    b.put("a/b/c", b"hello").unwrap();
    assert!(is_conflict(b.put("a/b/c", b"other")), "{what}");
    assert!(is_conflict(b.put("a/b/c", b"hellp")), "same length: {what}");
    assert_eq!(b.get("a/b/c").unwrap(), b"hello");
    assert!(b.exists("a/b/c").unwrap());
    assert_eq!(b.size("a/b/c").unwrap(), 5, "{what}");

    // Ranges: short only at the end, empty past it.
    assert_eq!(b.get_range("a/b/c", 1, 3).unwrap(), b"ell");
    assert_eq!(b.get_range("a/b/c", 3, 100).unwrap(), b"lo");
    assert_eq!(b.get_range("a/b/c", 5, 10).unwrap(), b"");
    assert_eq!(b.get_range("a/b/c", 100, 10).unwrap(), b"");
    assert_eq!(b.get_range("a/b/c", 2, 0).unwrap(), b"");
    b.put("a/empty", b"").unwrap();
    assert_eq!(b.get("a/empty").unwrap(), b"");
    assert_eq!(b.get_range("a/empty", 0, 10).unwrap(), b"");

    // More than one page of keys (S3 lists 1000 at a time), put from several threads.
    let keys: Vec<String> = (0..1100)
        .map(|i| format!("many/{:02x}/{i:05}", i % 7))
        .collect();
    std::thread::scope(|s| {
        for chunk in keys.chunks(keys.len().div_ceil(8)) {
            s.spawn(move || {
                for k in chunk {
                    b.put(k, k.as_bytes()).unwrap();
                }
            });
        }
    });
    let mut want = keys.clone();
    want.sort();
    assert_eq!(b.list("many/").unwrap(), want, "{what}");
    assert_eq!(b.list("a/").unwrap(), ["a/b/c", "a/empty"]);
    assert_eq!(b.list("").unwrap().len(), 1 + 2 + keys.len());
    assert_eq!(b.get(&keys[777]).unwrap(), keys[777].as_bytes());

    // A pack-sized object: multipart on S3.
    let big = pattern(40 << 20, 1);
    b.put("packs/ab/big", &big).unwrap();
    assert!(
        b.get("packs/ab/big").unwrap() == big,
        "{what}: 40 MiB read back"
    );
    let across = (8 << 20) - 10;
    assert_eq!(
        b.get_range("packs/ab/big", across as u64, 20).unwrap(),
        &big[across..across + 20]
    );
    assert_eq!(
        b.get_range("packs/ab/big", (40 << 20) - 3, 100).unwrap(),
        &big[(40 << 20) - 3..]
    );
    b.put("packs/ab/big", &big).unwrap();
    let mut other = big.clone();
    other[20 << 20] ^= 1;
    assert!(is_conflict(b.put("packs/ab/big", &other)), "{what}");
    assert!(is_conflict(b.put("packs/ab/big", &big[1..])), "{what}");

    // Replace (manifests rewritten by gc): whole new bytes, or a new object.
    b.replace("a/b/c", b"replaced, longer").unwrap();
    assert_eq!(b.get("a/b/c").unwrap(), b"replaced, longer", "{what}");
    assert_eq!(b.size("a/b/c").unwrap(), 16, "{what}");
    b.replace("a/new", b"fresh").unwrap();
    assert_eq!(b.get("a/new").unwrap(), b"fresh", "{what}");
    b.delete("a/new").unwrap();

    b.delete("a/b/c").unwrap();
    assert!(!b.exists("a/b/c").unwrap());
    assert!(b.get("a/b/c").unwrap_err().is_not_found());
    assert!(b.stats().is_none() || b.location().starts_with("s3://"));
}

#[test]
fn contract_holds_for_local_and_s3() {
    let dir = tempfile::tempdir().unwrap();
    contract(&LocalBackend::open(dir.path()));

    let moto = Moto::start();
    let admin = Admin::new(&moto.endpoint());
    admin.create_bucket("contract");
    let b = open(&moto.endpoint(), "contract", "repo/one");
    assert_eq!(b.location(), "s3://contract/repo/one");
    contract(&b);

    // Same layout as the local back end, under the prefix.
    let stored = admin.keys("contract");
    assert!(stored.contains(&"repo/one/packs/ab/big".to_string()));
    assert!(stored.iter().all(|k| k.starts_with("repo/one/")));
    // Request economy: 40 MiB in 8 MiB parts, and re-putting it uploads nothing.
    let c = b.request_counts();
    assert_eq!(b.stats(), Some(c));
    assert_eq!(c.upload_part, 5, "{c:?}");
    assert_eq!(c.retries, 0, "{c:?}");
    assert!(c.list >= 2, "paginated: {c:?}");
    eprintln!("contract on S3: {c:?}");
}

#[test]
fn transient_failures_are_retried() {
    let moto = Moto::start();
    Admin::new(&moto.endpoint()).create_bucket("flaky");
    let proxy = FaultProxy::start(moto.port);
    let b = open(&proxy.endpoint(), "flaky", "r");

    // The first four requests fail, 503 SlowDown and connection resets in turn: the first
    // put succeeds at its fifth and last attempt.
    proxy.set_rule(|s: &Seen| match s.index {
        0..=3 if s.index.is_multiple_of(2) => Action::Fail503,
        0..=3 => Action::Reset,
        _ => Action::Forward,
    });
    b.put("wal/1", b"one").unwrap();
    assert_eq!(b.get("wal/1").unwrap(), b"one");
    assert!(b.exists("wal/1").unwrap());
    assert_eq!(b.list("").unwrap(), ["wal/1"]);
    let c = b.request_counts();
    assert_eq!((c.put, c.retries), (5, 4), "{c:?}");

    // Each kind of request fails once.
    proxy.set_rule(s3::once_each(|_| true, Action::Fail503));
    b.put("wal/2", b"two").unwrap();
    assert_eq!(b.get_range("wal/2", 1, 5).unwrap(), b"wo");
    assert!(!b.exists("wal/none").unwrap());
    assert_eq!(b.list("wal/").unwrap(), ["wal/1", "wal/2"]);
    b.delete("wal/1").unwrap();

    // The conditional PUT is applied but its answer is lost: the retry gets 412, compares,
    // and succeeds; a different object is still refused.
    proxy.set_rule(s3::once_each(
        |s| s.method == "PUT",
        Action::ForwardThenReset,
    ));
    proxy.clear_seen();
    b.put("snapshots/x", b"manifest").unwrap();
    let sent: Vec<_> = proxy
        .seen()
        .iter()
        .map(|s| (s.method.clone(), s.action))
        .collect();
    let want = [
        ("PUT", Action::ForwardThenReset),
        ("PUT", Action::Forward),
        ("GET", Action::Forward),
    ];
    assert!(
        sent.iter().map(|(m, a)| (m.as_str(), *a)).eq(want),
        "{sent:?}"
    );
    assert_eq!(b.get("snapshots/x").unwrap(), b"manifest");
    assert!(is_conflict(b.put("snapshots/x", b"another")));

    // A body cut off half-way is read again.
    proxy.set_rule(s3::once_each(|s| s.method == "GET", Action::Truncate));
    let data = pattern(3 << 20, 2);
    b.put("packs/00/mid", &data).unwrap();
    proxy.clear_seen();
    assert!(b.get("packs/00/mid").unwrap() == data);
    let gets: Vec<_> = proxy.seen().iter().map(|s| s.action).collect();
    assert_eq!(gets, [Action::Truncate, Action::Forward]);

    // Every part of a multipart upload fails once, reset or 503.
    proxy.set_rule(s3::once_each(|s| s.part_number().is_some(), Action::Reset));
    let big = pattern(20 << 20, 3);
    b.put("packs/00/big", &big).unwrap();
    assert!(b.get("packs/00/big").unwrap() == big);
    let c = b.request_counts();
    assert!(c.upload_part >= 6, "3 parts, each twice: {c:?}");
    eprintln!("with injected failures: {c:?}");
}

#[test]
fn failed_multipart_upload_is_aborted() {
    let moto = Moto::start();
    let admin = Admin::new(&moto.endpoint());
    admin.create_bucket("doomed");
    let proxy = FaultProxy::start(moto.port);
    let b = open(&proxy.endpoint(), "doomed", "r");

    // Parts 1 and 2 go through; from part 3 on every attempt fails, so retries run out.
    proxy.set_rule(|s: &Seen| match s.part_number() {
        Some(n) if n >= 3 => Action::Fail503,
        _ => Action::Forward,
    });
    let big = pattern(40 << 20, 4);
    let err = b.put("packs/cd/doomed", &big).unwrap_err();
    // A store that keeps answering 503 is unavailable: a transient failure, worth a retry later.
    assert!(matches!(err, BackendError::Unavailable { .. }), "{err}");
    assert!(err.is_transient(), "{err}");
    let msg = err.to_string();
    eprintln!("failed multipart upload: {msg}");
    assert!(
        msg.contains("packs/cd/doomed") && msg.contains("SlowDown"),
        "{msg}"
    );
    assert!(!msg.contains(SECRET_KEY));
    // Aborted: nothing in progress, nothing visible.
    assert_eq!(admin.multipart_uploads("doomed"), Vec::<String>::new());
    assert!(admin.keys("doomed").is_empty());
    assert!(!b.exists("packs/cd/doomed").unwrap());
    let aborts = proxy
        .seen()
        .iter()
        .filter(|s| s.method == "DELETE" && s.query("uploadId").is_some())
        .count();
    assert_eq!(aborts, 1);

    // Connections dropped mid-upload instead: the same.
    proxy.set_rule(|s: &Seen| match s.part_number() {
        Some(n) if n >= 2 => Action::Reset,
        _ => Action::Forward,
    });
    assert!(b.put("packs/cd/doomed", &big).is_err());
    assert_eq!(admin.multipart_uploads("doomed"), Vec::<String>::new());
    assert!(admin.keys("doomed").is_empty());

    // Once the network is back the same put succeeds.
    proxy.set_rule(|_: &Seen| Action::Forward);
    b.put("packs/cd/doomed", &big).unwrap();
    assert_eq!(admin.keys("doomed"), ["r/packs/cd/doomed"]);
    assert_eq!(admin.multipart_uploads("doomed"), Vec::<String>::new());
}

#[test]
fn cli_init_and_info_on_s3() {
    let moto = Moto::start();
    let admin = Admin::new(&moto.endpoint());
    admin.create_bucket("cli");
    // The standard AWS variables, no flag: endpoint, region and credentials.
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_pgsnapfs"))
            .args(args)
            .env("AWS_ENDPOINT_URL", moto.endpoint())
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", s3::ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("RUST_LOG", "trace")
            .env_remove("PGSNAPFS_REPO")
            .output()
            .expect("run pgsnapfs");
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        );
        // Even trace-level logging of every request must not reveal the secret key.
        assert!(
            !stdout.contains(SECRET_KEY) && !stderr.contains(SECRET_KEY),
            "secret leaked by {args:?}"
        );
        let last = |s: &str| s.lines().rev().take(5).collect::<Vec<_>>().join("\n");
        (out.status, stdout, last(&stderr))
    };

    let (st, out, err) = run(&["init", "--repo", "s3://cli/backups/main"]);
    assert!(st.success(), "{out}\n{err}");
    assert!(out.contains("s3://cli/backups/main"), "{out}");
    assert_eq!(admin.keys("cli"), ["backups/main/config"]);

    let (st, out, err) = run(&["info", "--repo", "s3://cli/backups/main"]);
    assert!(st.success(), "{out}\n{err}");
    let (st, out, err) = run(&["list", "--repo", "s3://cli/backups/main"]);
    assert!(st.success(), "{out}\n{err}");

    let (st, _, err) = run(&["init", "--repo", "s3://cli/backups/main"]);
    assert!(!st.success());
    assert!(err.contains("not empty"), "{err}");
    let (st, _, err) = run(&["info", "--repo", "s3://cli/elsewhere"]);
    assert!(!st.success());
    assert!(err.contains("not a pgsnapfs repository"), "{err}");
    let (st, _, err) = run(&["info", "--repo", "s3://no-such-bucket/x"]);
    assert!(!st.success());
    assert!(err.contains("NoSuchBucket"), "{err}");
    let (st, _, err) = run(&["info", "--repo", "gs://cli/x"]);
    assert!(!st.success());
    assert!(err.contains("unsupported repository URL scheme"), "{err}");
}
