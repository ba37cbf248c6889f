//! The life cycle of a `pgsnapfs mount` process against real FUSE: busy mounts, signals,
//! stale mounts, bad mount points, and mounting as the server's user through fusermount3.
//!
//! FUSE mounts need root, so pgsnapfs `mount`/`umount` run as root here (not as postgres like
//! the rest of the harness). Every mount is a [`Mount`] guard (tests/common/mount.rs): dropping
//! it stops the server running on the mount, unmounts (lazily if it must) and reaps or kills
//! the mount process, so a failing test leaves nothing mounted.

mod common;

use common::mount::*;
use common::*;
use std::fs;
use std::process::Command;

/// A mount in use cannot be unmounted (exit 1, "busy"): not while a server runs on a view,
/// not while a process has its cwd in the catalogue; once the user goes away, umount works
/// and the mount process exits 0.
#[test]
fn busy_mount_refuses_to_unmount() {
    let repo = Repo::init();
    let source = Cluster::archiving_to(&repo.spec);
    source.psql("CREATE TABLE t AS SELECT generate_series(1, 100) AS n");
    repo.backup(&source);

    let work = TestDir::new("mount-busy");
    // A server on a view.
    let mut view = Mount::start(
        &repo,
        &mountpoint(&work, "view"),
        &view_args(&work.join("scratch"), &["--backup", "latest"]),
    );
    view.start_server().wait_until_paused_or_ready();
    view.umount().assert_exit(1).assert_mentions("busy");
    assert!(is_mounted(&view.dir), "a failed umount unmounted anyway");
    assert_eq!(view.server().psql("SELECT count(*) FROM t"), "100");
    view.stop_server();
    view.umount_ok();

    // A shell-like process whose cwd is inside the catalogue.
    let mut cat = Mount::start(&repo, &mountpoint(&work, "cat"), &[]);
    let mut sleeper = Command::new("sleep")
        .arg("600")
        .current_dir(cat.dir.join("backups"))
        .spawn()
        .unwrap();
    let busy = cat.umount();
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    busy.assert_exit(1).assert_mentions("busy");
    assert!(is_mounted(&cat.dir), "a failed umount unmounted anyway");
    cat.umount_ok();
    assert!(
        is_absent_or_empty(&cat.dir),
        "the mount point is not empty after umount"
    );
}

/// SIGTERM and SIGINT to a foreground mount unmount it cleanly: the process exits 0 and the
/// mount point leaves /proc/mounts.
#[test]
fn signals_unmount_a_foreground_mount() {
    let repo = Repo::init();
    let source = Cluster::archiving_to(&repo.spec);
    repo.backup(&source);
    let work = TestDir::new("mount-signal");

    for (name, sig) in [("SIGTERM", libc::SIGTERM), ("SIGINT", libc::SIGINT)] {
        let mnt = mountpoint(&work, name);
        let mut m = Mount::start(&repo, &mnt, &[]);
        assert!(m.dir.join("backups/latest/PG_VERSION").is_file());
        signal(m.pid(), sig);
        let st = wait_child(m.child.as_mut().unwrap(), MOUNT_TIMEOUT);
        assert!(
            st.is_some_and(|st| st.success()),
            "after {name} the mount process ended with {st:?} ({})\n{}",
            after_signal(&mut m),
            m.report()
        );
        assert!(!is_mounted(&mnt), "{name} left {} mounted", mnt.display());
        assert!(is_absent_or_empty(&mnt));
    }
}

/// SIGTERM to the mount process of a view a server runs on must not pull the file system
/// from under the server: the mount stays and keeps serving. Once the server is stopped, a
/// second SIGTERM unmounts and the process exits 0.
#[test]
fn sigterm_leaves_a_busy_mount_alone() {
    let repo = Repo::init();
    let source = Cluster::archiving_to(&repo.spec);
    source.psql("CREATE TABLE t AS SELECT generate_series(1, 100) AS n");
    repo.backup(&source);

    let work = TestDir::new("mount-sigbusy");
    let mut view = Mount::start(
        &repo,
        &mountpoint(&work, "view"),
        &view_args(&work.join("scratch"), &["--backup", "latest"]),
    );
    view.start_server().wait_until_paused_or_ready();
    signal(view.pid(), libc::SIGTERM);
    // The process has handled the signal once it says it cannot unmount: only then does
    // "still mounted" prove anything.
    let refused = wait_for(MOUNT_TIMEOUT, || {
        let log = fs::read_to_string(&view.log).unwrap_or_default();
        if log.contains("cannot unmount yet") {
            Ok(())
        } else {
            Err(after_signal(&mut view))
        }
    });
    let state = after_signal(&mut view);
    assert!(
        refused.is_ok(),
        "SIGTERM to the mount process of a busy view: no refusal: {refused:?}\n{}",
        view.report()
    );
    assert!(
        is_mounted(&view.dir) && !pid_gone(view.pid()),
        "SIGTERM to the mount process of a busy view: {state}\n{}",
        view.report()
    );
    assert_eq!(
        view.server().try_psql("SELECT count(*) FROM t"),
        Ok("100".to_string()),
        "the server after SIGTERM to its mount process ({state})"
    );
    view.stop_server();
    signal(view.pid(), libc::SIGTERM);
    let st = wait_child(view.child.as_mut().unwrap(), MOUNT_TIMEOUT);
    assert!(
        st.is_some_and(|st| st.success()),
        "second SIGTERM: the mount process ended with {st:?}\n{}",
        view.report()
    );
    assert!(!is_mounted(&view.dir));
}

/// SIGKILL of the mount process leaves a stale mount (ENOTCONN). Mounting on it again is
/// refused with a hint; `pgsnapfs umount` cleans it up and the directory can be mounted on
/// again.
#[test]
fn killed_mount_process_leaves_stale_mount_that_umount_cleans() {
    let repo = Repo::init();
    let source = Cluster::archiving_to(&repo.spec);
    let id = json_str(&repo.backup(&source), "id");

    let work = TestDir::new("mount-stale");
    let mnt = mountpoint(&work, "mnt");
    let mut m = Mount::start(&repo, &mnt, &[]);
    assert!(backup_dir(&m.dir, &id).join("PG_VERSION").is_file());
    let mut child = m.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();

    assert!(is_mounted(&mnt), "the mount vanished with its process");
    let err = fs::read_dir(&mnt).map(|_| ()).unwrap_err();
    assert_eq!(
        err.raw_os_error(),
        Some(libc::ENOTCONN),
        "stat of a stale mount: {err}"
    );

    pgsnapfs_as_root(&["mount", "--repo", &repo.spec, s(&mnt)])
        .assert_exit(2)
        .assert_mentions("stale")
        .assert_mentions("umount");

    pgsnapfs_as_root(&["umount", s(&mnt)]).assert_ok();
    assert!(!is_mounted(&mnt), "{} still mounted", mnt.display());
    assert!(
        is_absent_or_empty(&mnt) && mnt.is_dir(),
        "mount point not usable"
    );

    let again = Mount::start(&repo, &mnt, &[]);
    assert!(backup_dir(&again.dir, &id).join("PG_VERSION").is_file());
}

/// A non-empty or missing mount point is refused with exit 2 and a message naming it, before
/// anything is created; `umount` of a directory that is not a mount point is bad input too.
#[test]
fn bad_mount_points_are_refused() {
    let repo = Repo::init();
    let source = Cluster::archiving_to(&repo.spec);
    repo.backup(&source);
    let work = TestDir::new("mount-bad");

    let full = mountpoint(&work, "full");
    fs::write(full.join("keep.txt"), b"mine").unwrap();
    // --background reports the mount process's exit code, as the foreground command would.
    for args in [
        vec![],
        vec!["--background"],
        vec![
            "--backup",
            "latest",
            "--scratch",
            s(&work.path().join("scratch")),
        ],
    ] {
        let mut all = vec!["mount", "--repo", &repo.spec, s(&full)];
        all.extend(args.iter().copied());
        pgsnapfs_as_root(&all)
            .assert_exit(2)
            .assert_mentions(s(&full))
            .assert_mentions("not empty");
        assert!(!is_mounted(&full));
        assert_eq!(fs::read(full.join("keep.txt")).unwrap(), b"mine");
        assert!(
            !work.join("scratch").exists(),
            "scratch created for a refused mount"
        );
    }

    let missing = work.join("missing");
    pgsnapfs_as_root(&["mount", "--repo", &repo.spec, s(&missing)])
        .assert_exit(2)
        .assert_mentions(s(&missing));
    assert!(!missing.exists() && !is_mounted(&missing));

    pgsnapfs_as_root(&["umount", s(&full)])
        .assert_exit(2)
        .assert_mentions("not a mount point");
}

/// Run as the server's own user, a mount goes through the setuid fusermount3 (Debian
/// `fuse3`). It needs read-write access to /dev/fuse, which Debian's udev rule gives everyone
/// (mode 0666); this machine's device node may be 0600, so the test opens it up as Debian does.
#[test]
fn the_server_user_can_mount_through_fusermount3() {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions("/dev/fuse", fs::Permissions::from_mode(0o666)).expect("chmod /dev/fuse");
    let repo = Repo::init();
    let source = Cluster::archiving_to(&repo.spec);
    source.psql("CREATE TABLE t(id int); INSERT INTO t SELECT generate_series(1, 42);");
    let id = json_str(&repo.backup(&source), "id");
    source.switch_wal_and_wait_archived();

    let work = TestDir::new("mount-user");
    let mnt = mountpoint(&work, "mnt");
    let mnt_arg = mnt.display().to_string();
    let repo_arg = repo.path.display().to_string();
    pgsnapfs(&["mount", "--repo", &repo_arg, "--background", &mnt_arg]).assert_ok();
    // Only the mounting user may enter a mount made without allow_other, root included.
    let listed = Command::new("runuser")
        .args(["-u", "postgres", "--", "ls"])
        .arg(mnt.join("backups"))
        .output()
        .expect("run ls as postgres");
    let umount = pgsnapfs(&["umount", &mnt_arg]);
    let names = String::from_utf8_lossy(&listed.stdout).to_string();
    assert_eq!(
        names.split_whitespace().collect::<Vec<_>>(),
        [id.as_str(), "latest"],
        "{listed:?}"
    );
    umount.assert_ok();
    assert!(is_absent_or_empty(&mnt), "the mount point is empty again");
}
