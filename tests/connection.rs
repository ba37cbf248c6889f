//! Connecting as libpq users expect, and printing into a pipe the reader closed.
//!
//! One cluster whose backup role must give a password (scram-sha-256 on the socket): the
//! password comes from a PGPASSFILE; a wrong one and an insecure file fail saying why.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;

const ROLE: &str = "pgsnapfs_backup";
const PASSWORD: &str = "pa:ss\\word";

/// A password file for postgres holding `contents`, with `mode`.
fn passfile(dir: &TestDir, name: &str, contents: &str, mode: u32) -> String {
    let path = dir.join(name);
    fs::write(&path, contents).expect("write password file");
    chown_to_postgres(&path);
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod password file");
    path.display().to_string()
}

/// `pgsnapfs backup` as the backup role, its password only in `passfile`.
fn backup_as_role(repo: &Repo, c: &Cluster, passfile: &str) -> Run {
    let mut args = c.backup_args();
    let u = args
        .iter()
        .position(|a| a == "-U")
        .expect("-U in backup_args");
    args[u + 1] = ROLE.into();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_command(pgsnapfs_command(&repo.args("backup", &args)).env("PGPASSFILE", passfile))
}

/// The line of a password file for `password` on this cluster's socket (the socket is not the
/// default directory, so it is named by its path; its colons would be escaped).
fn entry(c: &Cluster, password: &str) -> String {
    let escape = |s: &str| s.replace('\\', "\\\\").replace(':', "\\:");
    format!(
        "# a comment, then a line for another role\n*:*:*:someone:else\n{}:{}:*:{ROLE}:{}\n",
        escape(&c.sock.display().to_string()),
        c.port,
        escape(password)
    )
}

#[test]
fn password_file_and_its_errors() {
    let repo = Repo::init();
    let mut c = Cluster::new(ClusterOptions::archiving_to(&repo.spec));
    let hba = c.data.join("pg_hba.conf");
    let trust = fs::read_to_string(&hba).expect("read pg_hba.conf");
    fs::write(&hba, format!("local all {ROLE} scram-sha-256\n{trust}")).expect("pg_hba.conf");
    c.start();
    c.create_backup_role(Some(PASSWORD));
    c.psql("CREATE TABLE t AS SELECT generate_series(1, 100) AS id");
    let dir = TestDir::new("pgpass");

    let good = passfile(&dir, "good", &entry(&c, PASSWORD), 0o600);
    let run = backup_as_role(&repo, &c, &good).assert_ok();
    assert!(!run.stderr_str().contains("WARN"), "{}", run.report());
    assert_eq!(
        repo.list().len(),
        1,
        "the backup taken with the password file"
    );

    let wrong = passfile(&dir, "wrong", &entry(&c, "not it"), 0o600);
    backup_as_role(&repo, &c, &wrong)
        .assert_exit(1)
        .assert_mentions(&format!("password authentication failed for user {ROLE}"))
        .assert_mentions(&wrong);

    // libpq ignores a file that others may read, and says so; so does pgsnapfs.
    let open = passfile(&dir, "open", &entry(&c, PASSWORD), 0o644);
    backup_as_role(&repo, &c, &open)
        .assert_exit(1)
        .assert_mentions("group or world access")
        .assert_mentions(&format!("asks for a password for user {ROLE}"))
        .assert_mentions(&format!("{open} (ignored: mode 0644"));

    let missing = dir.join("absent").display().to_string();
    let run = backup_as_role(&repo, &c, &missing)
        .assert_exit(1)
        .assert_mentions(&format!("{missing} (not present)"));
    assert!(
        !run.stderr_str().contains("invalid configuration"),
        "{}",
        run.report()
    );
    assert_eq!(repo.list().len(), 1, "failed connections took no backup");
    c.stop();

    closed_pipe_is_quiet(&repo);
}

/// Printing commands whose reader has gone away: exit 0, no panic, nothing on stderr.
fn closed_pipe_is_quiet(repo: &Repo) {
    for args in [&["list", "--json"][..], &["list"], &["info"]] {
        let (sub, rest) = args.split_first().expect("a subcommand");
        let mut cmd = pgsnapfs_command(&repo.args(sub, rest));
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pgsnapfs");
        // Closing the read end before the command prints makes every write fail with EPIPE,
        // whatever the pipe's buffer size.
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("wait for pgsnapfs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(0),
            "pgsnapfs {args:?} into a closed pipe: {:?}\n{stderr}",
            out.status
        );
        assert!(stderr.is_empty(), "pgsnapfs {args:?}: {stderr}");
    }
}
