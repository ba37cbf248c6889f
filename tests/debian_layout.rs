//! A cluster in Debian's packaged layout: postgresql.conf, pg_hba.conf and pg_ident.conf live
//! outside the data directory (/etc/postgresql/MAJOR/main), so a backup holds none of them.
//! `verify` and a server started on a `mount` view must still start: the view supplies a
//! minimal postgresql.conf, a pg_hba.conf letting local peer connections in, and an empty
//! pg_ident.conf, and it never reads or writes the source's files named in its
//! postgresql.auto.conf. `backup` names the files it does not hold, and `restore` says how to
//! start a server without them.
//!
//! verify and mount need root (FUSE), so they run as root here; the server on the view runs
//! as postgres, started with the command docs/operations.md gives.

mod common;

use common::*;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A server started on a view with `pg_ctl -D MNT -o '-p PORT -k SOCKDIR'`, as the docs
/// start one; stopped (immediate) on drop.
struct ViewServer {
    data: PathBuf,
    sock: PathBuf,
    port: u16,
    log: PathBuf,
}

impl ViewServer {
    #[track_caller]
    fn start(data: &Path, sock: &Path, log: &Path) -> ViewServer {
        let port = free_port();
        let run = run_command(
            postgres_command(test_server_bin().join("pg_ctl"))
                .arg("-D")
                .arg(data)
                .arg("-l")
                .arg(log)
                .arg("-o")
                .arg(format!("-p {port} -k {}", s(sock)))
                .args(["-w", "-t", "120", "start"]),
        );
        let server = ViewServer {
            data: data.to_path_buf(),
            sock: sock.to_path_buf(),
            port,
            log: log.to_path_buf(),
        };
        assert!(
            run.status.success(),
            "the server did not start on the view\n{}\n--- server log ---\n{}",
            run.report(),
            fs::read_to_string(log).unwrap_or_default()
        );
        server
    }

    /// psql run by `os_user` as role postgres over the server's Unix socket.
    fn psql_as(&self, os_user: &str, sql: &str) -> Run {
        let mut cmd = match os_user {
            "postgres" => postgres_command(pg_tool("psql")),
            _ => Command::new(pg_tool("psql")),
        };
        cmd.arg("-h")
            .arg(&self.sock)
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d"])
            .args(["postgres", "-XAt", "-v", "ON_ERROR_STOP=1", "-c", sql]);
        run_command(&mut cmd)
    }

    #[track_caller]
    fn psql(&self, sql: &str) -> String {
        let run = self.psql_as("postgres", sql);
        assert!(
            run.status.success(),
            "{}\n--- server log ---\n{}",
            run.report(),
            fs::read_to_string(&self.log).unwrap_or_default()
        );
        run.stdout_str().trim().to_string()
    }
}

impl Drop for ViewServer {
    fn drop(&mut self) {
        let _ = postgres_command(test_server_bin().join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// One cluster with its configuration in its own "/etc": verify of its backup passes, and a
/// view at a point in time starts with the docs' command and shows the rows of that moment to
/// postgres over the socket, while root is refused (peer), nothing listens on TCP, and the
/// source's pg_hba.conf and PID file named in postgresql.auto.conf are left alone.
#[test]
fn configuration_outside_the_data_directory() {
    let repo = Repo::init();
    // Above the defaults, as production raises them in /etc: a hot standby refuses to start
    // with less than the source had.
    let mut source = Cluster::new(ClusterOptions {
        settings: vec![
            ("max_connections".into(), "150".into()),
            ("max_locks_per_transaction".into(), "128".into()),
        ],
        ..ClusterOptions::archiving_to(&repo.spec)
    });
    let etc = source.dir().subdir("etc", 0o755);
    source.move_config_to(&etc);
    // ALTER SYSTEM can write these, and a postgresql.auto.conf copied from another server
    // carries them: paths outside the data directory, which a view must not use. (initdb's
    // pg_hba.conf, here in etc, trusts every local connection.)
    let pid_file = etc.join("15-main.pid");
    fs::OpenOptions::new()
        .append(true)
        .open(source.data.join("postgresql.auto.conf"))
        .and_then(|mut f| {
            writeln!(
                f,
                "data_directory = '{}'\nhba_file = '{}'\nident_file = '{}'\n\
                 external_pid_file = '{}'",
                s(&source.data),
                s(&etc.join("pg_hba.conf")),
                s(&etc.join("pg_ident.conf")),
                s(&pid_file)
            )
        })
        .expect("append to postgresql.auto.conf");
    source.start();
    assert!(
        !source.data.join("postgresql.conf").exists(),
        "the source keeps postgresql.conf in its data directory"
    );
    source.psql(
        "CREATE TABLE t(id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 100) g;",
    );
    // backup says the configuration is not in the backup, naming the files.
    let args = source.backup_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = repo.run("backup", &args).assert_ok();
    for file in ["postgresql.conf", "pg_hba.conf", "pg_ident.conf"] {
        let path = etc.join(file);
        assert!(
            run.stderr_str().contains(s(&path)),
            "backup does not name {}\n{}",
            path.display(),
            run.report()
        );
    }
    source.psql("INSERT INTO t SELECT g, 'before' FROM generate_series(101, 110) g");
    let target = source.now();
    // The target must fall strictly before the next commit.
    let later = format!("SELECT clock_timestamp() > '{target}'");
    wait_for(Duration::from_secs(5), || {
        (source.psql(&later) == "t")
            .then_some(())
            .ok_or_else(|| "not later yet".to_string())
    })
    .unwrap();
    source.psql("INSERT INTO t SELECT g, 'after' FROM generate_series(111, 120) g");
    source.switch_wal_and_wait_archived();
    let source_pid = fs::read_to_string(&pid_file).expect("the source's external PID file");

    // restore's summary says how to start a server without postgresql.conf.
    let work = TestDir::new("debian-layout");
    repo.restore(&work.join("restored"), &["--archive-mode", "off"])
        .assert_ok()
        .assert_mentions("has no postgresql.conf")
        .assert_mentions("config_file=");
    fs::remove_dir_all(work.join("restored")).unwrap();

    // verify of the backup as taken: the server starts and reads the table.
    let checks = work.join("checks.sql");
    fs::write(&checks, "SELECT count(*) = 100 FROM t;\n").unwrap();
    let run = pgsnapfs_as_root(&repo.args("verify", &["--json", "--sql", s(&checks)]));
    let report = run.json();
    assert_eq!(report["ok"], true, "{}", run.report());
    assert!(json_u64(&report, "tables") > 0, "{}", run.report());
    assert_eq!(json_u64(&report, "assertions"), 1, "{}", run.report());
    run.assert_exit(0);

    // A view at the target, started as docs/operations.md starts one.
    let mnt = fs::canonicalize(work.subdir("before", 0o755)).unwrap();
    let scratch = work.join("before.scratch");
    let sock = work.subdir("sock", 0o700);
    let run = pgsnapfs_as_root(&repo.args(
        "mount",
        &[
            "--target-time",
            &target,
            "--scratch",
            s(&scratch),
            "--shared-buffers",
            "128MB",
            "--background",
            s(&mnt),
        ],
    ))
    .assert_ok()
    .assert_mentions("no postgresql.conf")
    .assert_mentions("peer");
    eprintln!("{}", run.stderr_str());
    // The docs say to edit the view's pg_hba.conf to let in others: it is writable.
    let hba = mnt.join("pg_hba.conf");
    run_command(
        postgres_command("sh")
            .arg("-c")
            .arg(format!("echo '# edited' >> '{}'", s(&hba))),
    )
    .assert_ok();
    assert!(fs::read_to_string(&hba)
        .unwrap()
        .ends_with("peer\n# edited\n"));
    let server = ViewServer::start(&mnt, &sock, &scratch.join("server.log"));
    wait_for(Duration::from_secs(120), || {
        let state = server.psql("SELECT pg_get_wal_replay_pause_state()");
        (state == "paused").then_some(()).ok_or(state)
    })
    .unwrap_or_else(|e| panic!("recovery did not pause at the target: {e}"));
    assert_eq!(
        server.psql("SELECT count(*), max(id), count(*) FILTER (WHERE v = 'after') FROM t"),
        "110|110|0",
        "the view does not show the rows of the target time"
    );

    // Safety of the supplied configuration: no TCP, the view's own authentication files
    // (peer: root may not connect as postgres), and the source's PID file untouched.
    assert_eq!(server.psql("SHOW listen_addresses"), "");
    assert_eq!(server.psql("SHOW max_connections"), "150");
    assert_eq!(
        server.psql("SHOW hba_file"),
        mnt.join("pg_hba.conf").display().to_string()
    );
    let as_root = server.psql_as("root", "SELECT 1");
    assert!(
        !as_root.status.success() && as_root.stderr_str().contains("Peer authentication failed"),
        "root connected as postgres to the view\n{}",
        as_root.report()
    );
    assert_eq!(
        fs::read_to_string(&pid_file).unwrap(),
        source_pid,
        "the view's server wrote the source's external PID file"
    );
    drop(server);
    pgsnapfs_as_root(&["umount", s(&mnt)]).assert_ok();
}
