//! Views that replay a CREATE TABLESPACE, on the host that holds the tablespace (the danger
//! scenario: PostgreSQL's redo of the record chmods the location, removes its version
//! directory and writes into it). One cluster, archiving with wal-push; a backup; then a
//! tablespace created in this test's own directory, a table in it, rows.
//! - `dump` and `verify` of a point past the creation see the rows, and the host's
//!   tablespace directory stays byte-for-byte (and mode-for-mode) as it was; the source
//!   still reads the table afterwards.
//! - `verify` not run as root, or for a location that is not a directory here, is refused
//!   (exit 2).
//! - `backup --from-archive` past the creation stores the tablespace as replay made it, and
//!   a verify of that backup sees the rows.
//! - `mount` at that point is refused up front (exit 2, naming LSN, oid and location), and
//!   nothing is mounted.
//! - `wal-fetch` for a view refuses the segment holding the record.
//! - A view at a target before the creation still works.
//! - Where the repository does not know what a segment creates (no summary), a mount goes
//!   ahead and its `wal-fetch` refuses the segment: recovery stops loudly.
//!
//! Everything the old code could damage is inside this test's temporary directories.

mod common;

use common::mount::{view_args, Mount};
use common::*;
use pgsnapfs::catalog::Backups;
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

/// Every entry below `dir` (and `dir` itself, as ""), with its kind, size, hash and mode.
fn host_state(dir: &Path) -> BTreeMap<String, String> {
    let mut state = tree_digest(dir);
    for (rel, v) in state.iter_mut() {
        let meta = std::fs::symlink_metadata(dir.join(rel)).unwrap();
        v.push_str(&format!(" mode {:o} uid {}", meta.mode(), meta.uid()));
    }
    state
}

/// Runs `pgsnapfs ARGS...` as root, killed after `secs` (a mount the old code let through
/// would otherwise serve forever).
fn root_run_within(secs: u32, args: &[String]) -> Run {
    let mut cmd = Command::new("timeout");
    cmd.arg(secs.to_string()).arg(pgsnapfs_bin()).args(args);
    for var in SCRUBBED_ENV {
        cmd.env_remove(var);
    }
    cmd.current_dir("/").stdin(std::process::Stdio::null());
    run_command(&mut cmd)
}

const IN_TS: &str = "SELECT count(*) || ' ' || sum(length(v)) FROM in_ts";

#[test]
fn views_replaying_create_tablespace_leave_the_host_alone() {
    let repo = Repo::init();
    let mut source = Cluster::archiving_to(&repo.spec);
    source.psql("CREATE TABLE t0(id int); INSERT INTO t0 VALUES (1), (2);");
    repo.backup(&source);
    source.psql("INSERT INTO t0 VALUES (3)");
    let before = source.current_wal_lsn();
    let location = source.dir().subdir("tablespace", 0o700);
    source.psql(&format!(
        "CREATE TABLESPACE ts LOCATION '{}'",
        location.display()
    ));
    let oid = source.psql("SELECT oid FROM pg_tablespace WHERE spcname = 'ts'");
    let create_segment = source.psql(&format!("SELECT pg_walfile_name('{before}'::pg_lsn + 1)"));
    source.psql(
        "CREATE TABLE in_ts(id int PRIMARY KEY, v text) TABLESPACE ts;
         INSERT INTO in_ts SELECT g, 'ts-' || g FROM generate_series(1, 400) g;",
    );
    let mid = source.current_wal_lsn();
    let want_mid = source.psql(IN_TS);
    source.psql("INSERT INTO in_ts SELECT g, 'more-' || g FROM generate_series(401, 700) g");
    let after = source.current_wal_lsn();
    let want = source.psql(IN_TS);
    source.switch_wal_and_wait_archived();
    // Stopped, so that nothing but the views could change the host's directory.
    source.stop();
    let host = host_state(&location);
    assert!(
        host.keys().any(|k| k.starts_with("PG_")),
        "the tablespace's version directory is there: {host:?}"
    );
    let unchanged = |what: &str| assert_same_tree(&host, &host_state(&location), what);

    // dump of the table in the tablespace, past its creation.
    let work = TestDir::new("tblspc");
    let out = work.join("in_ts.sql");
    let dumped = root_run_within(
        300,
        &repo.args(
            "dump",
            &[
                "--target-lsn",
                &after,
                "--dbname",
                "postgres",
                "--table",
                "in_ts",
                "-f",
                out.to_str().unwrap(),
            ],
        ),
    );
    unchanged("the host's tablespace directory after dump");
    dumped.assert_ok();
    let sql = std::fs::read_to_string(&out).unwrap();
    assert_eq!(
        sql.lines().filter(|l| l.contains("\tmore-")).count(),
        300,
        "the rows inserted after the creation are in the dump"
    );

    // verify past the creation, asserting the rows.
    let check = work.join("check.sql");
    std::fs::write(&check, format!("SELECT ({IN_TS}) = '{want}';\n")).unwrap();
    let verified = root_run_within(
        300,
        &repo.args(
            "verify",
            &[
                "--json",
                "--target-lsn",
                &after,
                "--sql",
                check.to_str().unwrap(),
            ],
        ),
    );
    unchanged("the host's tablespace directory after verify");
    let report = verified.assert_ok().json();
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["assertions"], 1, "{report}");

    // verify as another user than root cannot make the namespace: refused, with the way out.
    repo.run("verify", &["--target-lsn", &after])
        .assert_exit(2)
        .assert_mentions("only as root")
        .assert_mentions(&format!("oid {oid}"));
    // A location that is not a directory here: no mount point can be made without touching
    // the host, so verify refuses too.
    let moved = location.with_extension("moved");
    std::fs::rename(&location, &moved).unwrap();
    let missing = root_run_within(300, &repo.args("verify", &["--target-lsn", &after]));
    std::fs::rename(&moved, &location).unwrap();
    missing
        .assert_exit(2)
        .assert_mentions("not a directory on this host");
    unchanged("the host's tablespace directory after the refused verify runs");

    // backup --from-archive past the creation: replayed under cover, and the new backup holds
    // the tablespace as replay made it, not as the host has it.
    let made = root_run_within(
        300,
        &repo.args(
            "backup",
            &["--from-archive", "--json", "--target-lsn", &mid],
        ),
    );
    unchanged("the host's tablespace directory after backup --from-archive");
    let id = json_str(&made.assert_ok().json(), "id");
    let check_mid = work.join("check-mid.sql");
    std::fs::write(&check_mid, format!("SELECT ({IN_TS}) = '{want_mid}';\n")).unwrap();
    let stored =
        pgsnapfs::store::Repository::open(pgsnapfs::store::open_backend(&repo.spec).unwrap())
            .unwrap()
            .load_snapshot(&id)
            .unwrap();
    assert_eq!(
        stored.tablespaces,
        [pgsnapfs::catalog::Tablespace {
            oid: oid.parse().unwrap(),
            location: location.display().to_string()
        }],
        "restore puts the new tablespace back where it was"
    );
    let verified = root_run_within(
        300,
        &repo.args(
            "verify",
            &[
                "--json",
                "--backup",
                &id,
                "--sql",
                check_mid.to_str().unwrap(),
            ],
        ),
    );
    unchanged("the host's tablespace directory after verify of the backup from the archive");
    let report = verified.assert_ok().json();
    assert_eq!(report["ok"], true, "{report}");

    // mount at the same point: the user starts that server, so it is refused up front.
    let mp = common::mount::mountpoint(&work, "after");
    let scratch = work.join("scratch-after");
    let mut args = vec![mp.to_str().unwrap()];
    args.extend(view_args(&scratch, &["--target-lsn", &after]));
    let refused = root_run_within(60, &repo.args("mount", &args));
    unchanged("the host's tablespace directory after a refused mount");
    let refused = refused
        .assert_exit(2)
        .assert_mentions(&location.display().to_string())
        .assert_mentions(&format!("oid {oid}"))
        .assert_mentions("--target-lsn");
    assert!(
        !mount_points().iter().any(|m| m.starts_with(work.path())),
        "nothing mounted: {}",
        refused.report()
    );

    // wal-fetch for a view never serves the segment holding the record.
    let dest = work.subdir("fetched", 0o755);
    let fetched = pgsnapfs_in(
        &dest,
        &repo.args(
            "wal-fetch",
            &[
                "--view-tablespaces",
                dest.to_str().unwrap(),
                &create_segment,
                "RECOVERYXLOG",
            ],
        ),
    );
    let fetched = fetched
        .assert_exit(2)
        .assert_mentions(&location.display().to_string());
    assert!(
        !dest.join("RECOVERYXLOG").exists(),
        "nothing handed over: {}",
        fetched.report()
    );

    // A view at a target before the creation still works, though its last segment holds it.
    let mp = common::mount::mountpoint(&work, "before");
    let scratch = work.join("scratch-before");
    let mut view = Mount::start(&repo, &mp, &view_args(&scratch, &["--target-lsn", &before]));
    view.start_server().wait_until_paused();
    assert_eq!(view.server().psql("SELECT count(*) FROM t0"), "3");
    assert_eq!(
        view.server()
            .psql("SELECT count(*) FROM pg_tablespace WHERE spcname = 'ts'"),
        "0"
    );
    drop(view);
    unchanged("the host's tablespace directory after a view before the creation");

    // The last line of defence: a repository that does not know what that segment creates
    // (its summary is gone, as where an older pgsnapfs archived it). The mount goes ahead; its
    // wal-fetch refuses the segment, so recovery stops loudly.
    let summary = repo
        .keys("walsum/")
        .into_iter()
        .find(|k| k.ends_with(&create_segment))
        .expect("the segment's summary");
    pgsnapfs::store::open_backend(&repo.spec)
        .unwrap()
        .delete(&summary)
        .unwrap();
    let mp = common::mount::mountpoint(&work, "unknown");
    let scratch = work.join("scratch-unknown");
    let view = Mount::start(&repo, &mp, &view_args(&scratch, &["--target-lsn", &after]));
    // A hot standby may accept connections before replay reaches the segment.
    let log = match Cluster::try_start_on(&mp, &[]) {
        Ok(server) => {
            assert_eq!(
                server.wait_until_paused_or_ready(),
                RecoveryState::ShutDown,
                "{}",
                server.log_contents()
            );
            server.log_contents()
        }
        Err(report) => report,
    };
    for said in [
        "refusing to hand",
        "recovery ended before configured recovery target",
    ] {
        assert!(log.contains(said), "{said}:\n{log}");
    }
    drop(view);
    unchanged("the host's tablespace directory after a view its wal-fetch stopped");
    // verify there fails, saying why the server stopped (its log), not "connection closed",
    // whether it stopped before or after it accepted connections.
    root_run_within(300, &repo.args("verify", &["--target-lsn", &after]))
        .assert_exit(1)
        .assert_mentions("refusing to hand")
        .assert_mentions("recovery ended before configured recovery target");
    unchanged("the host's tablespace directory after a verify its wal-fetch stopped");

    // The source still has its table.
    source.start();
    assert_eq!(source.psql(IN_TS), want);
}
