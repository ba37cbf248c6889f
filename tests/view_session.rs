//! Failures of a mount session as its user sees them: a store that did not answer while the
//! catalogue was listed is a transient failure (exit 1, "try again"), never corruption; a
//! damaged cluster record is corruption (exit 3).

mod common;
mod s3;

use common::{pgsnapfs, pgsnapfs_as_root, Run, TestDir};
use pgsnapfs::store::backend::{Backend, S3Backend, S3Settings};
use s3::{Action, FaultProxy, Moto, Seen};

/// Whether a request lists the repository's cluster records (`systems/`).
fn lists_systems(s: &Seen) -> bool {
    s.method == "GET" && s.query("prefix").is_some_and(|p| p.contains("systems"))
}

#[test]
fn catalogue_mount_tells_a_store_that_did_not_answer_from_a_damaged_record() {
    s3::aws_env();
    let moto = Moto::start();
    moto.create_bucket("views");
    let proxy = FaultProxy::start(moto.port);
    let spec = format!("s3://views/repo?endpoint={}", proxy.endpoint());
    pgsnapfs(&["init", "--repo", &spec]).assert_ok();
    let dir = TestDir::new("view-session");
    let mnt = dir.subdir("mnt", 0o755);
    let mnt = mnt.to_str().expect("UTF-8 path");
    let mount = || -> Run {
        pgsnapfs_as_root(&[
            "mount",
            "--repo",
            &spec,
            "--disk-cache-size",
            "0",
            "--background",
            mnt,
        ])
    };

    // The store answers 503 to every listing of the cluster records, and then drops the
    // connection instead: each time the mount fails as transient, naming what it was doing.
    for action in [Action::Fail503, Action::Reset] {
        proxy.set_rule(move |s: &Seen| match lists_systems(s) {
            true => action,
            false => Action::Forward,
        });
        proxy.clear_seen();
        let run = mount().assert_exit(1);
        let err = run.stderr_str();
        assert!(
            err.contains("try again") && err.contains("systems"),
            "{action:?}: {err}"
        );
        assert!(
            proxy
                .seen()
                .iter()
                .any(|s| lists_systems(s) && s.action == action),
            "the listing of systems/ never met the fault: {:?}",
            proxy.seen()
        );
    }

    // Through the same proxy, a cluster record that is not one is corruption.
    proxy.set_rule(|_: &Seen| Action::Forward);
    let direct = S3Backend::open_with(
        &format!("s3://views/repo?endpoint={}", moto.endpoint()),
        S3Settings::default(),
    )
    .expect("open the bucket");
    direct
        .put("systems/7000000000000000001", b"not a cluster record")
        .expect("put a damaged record");
    let err = mount().assert_exit(3).stderr_str();
    assert!(err.contains("systems/7000000000000000001"), "{err}");
}
