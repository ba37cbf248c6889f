//! A throw-away PostgreSQL server run as `postgres`: either a fresh cluster (initdb) that the
//! struct owns, or a server started on an existing data directory (a restored copy or a mount).
//! Servers listen only on a private unix socket dir. Drop stops the server (immediate mode) and
//! then removes the cluster's own temp dir.

use super::{
    describe, free_port, pg_tool, pgsnapfs_bin, postgres_command, run_command, test_server_bin,
    wait_for, Run, TestDir,
};
use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// How long a server may take to start, to stop, or to archive a segment.
const SERVER_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Clone, Debug, Default)]
pub struct ClusterOptions {
    /// Archive WAL into this repository (a `--repo` value): `archive_mode=on` and
    /// `archive_command='<pgsnapfs> wal-push --repo "<repo>" %p'`. Without it, archiving is off.
    pub archive_repo: Option<String>,
    /// Extra `name = value` lines for postgresql.conf (values are written as given, so quote
    /// strings: `("work_mem", "'8MB'")`).
    pub settings: Vec<(String, String)>,
    /// initdb --data-checksums.
    pub data_checksums: bool,
    /// initdb --wal-segsize, in MB; PostgreSQL's 16 when not given.
    pub wal_segsize_mb: Option<u32>,
    /// initdb, pg_ctl and postgres from this directory (see [`super::server_bin`]) instead of
    /// those of [`super::test_major`].
    pub server_bin: Option<PathBuf>,
}

impl ClusterOptions {
    pub fn archiving_to(repo: impl AsRef<OsStr>) -> ClusterOptions {
        ClusterOptions {
            archive_repo: Some(repo.as_ref().to_string_lossy().into_owned()),
            ..ClusterOptions::default()
        }
    }
}

/// Where a server started on a restored data directory ended up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecoveryState {
    /// In recovery, replay paused (at the recovery target, with recovery_target_action=pause).
    Paused,
    /// Out of recovery: promoted, or never was in recovery.
    Ready,
    /// The server exited (recovery_target_action=shutdown, or a failure: see the log).
    ShutDown,
}

pub struct Cluster {
    pub data: PathBuf,
    pub sock: PathBuf,
    pub port: u16,
    pub log: PathBuf,
    /// Where initdb, pg_ctl and postgres come from.
    pub server_bin: PathBuf,
    /// `-c` settings passed on the postgres command line at every start.
    command_line: Vec<(String, String)>,
    running: bool,
    /// The postmaster's PID while running, to kill it if pg_ctl cannot stop it.
    pid: Option<u32>,
    /// Holds the socket dir, the log and (for an initdb'd cluster) the data dir. Dropped after
    /// the server is stopped, because Drop::drop runs before fields are dropped.
    dir: TestDir,
}

impl Cluster {
    /// initdb (as postgres) plus configuration; not started.
    pub fn new(opts: ClusterOptions) -> Cluster {
        let dir = TestDir::new("cluster");
        let data = dir.join("data");
        let sock = dir.subdir("sock", 0o700);
        let log = dir.join("server.log");
        let server_bin = opts.server_bin.clone().unwrap_or_else(test_server_bin);
        let mut initdb = postgres_command(server_bin.join("initdb"));
        initdb.arg("-D").arg(&data).args([
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "-N",
            "-U",
            "postgres",
        ]);
        if opts.data_checksums {
            initdb.arg("--data-checksums");
        }
        if let Some(mb) = opts.wal_segsize_mb {
            initdb.arg(format!("--wal-segsize={mb}"));
        }
        run_command(&mut initdb).assert_ok();

        let port = free_port();
        let mut conf = format!(
            "\n# pgsnapfs test harness\n\
             port = {port}\n\
             listen_addresses = ''\n\
             unix_socket_directories = '{}'\n\
             wal_level = replica\n\
             max_wal_senders = 4\n\
             fsync = off\n\
             shared_buffers = 16MB\n\
             max_connections = 20\n\
             log_line_prefix = '%m [%p] '\n",
            sock.display()
        );
        match &opts.archive_repo {
            Some(repo) => {
                conf.push_str(&format!(
                    // Double quotes: an s3:// URL holds `?` and `&`.
                    "archive_mode = on\narchive_command = '{} wal-push --repo \"{}\" %p'\n",
                    pgsnapfs_bin().display(),
                    repo
                ));
            }
            None => conf.push_str("archive_mode = off\n"),
        }
        // On 17+ the suite's incremental backups read from WAL summaries, as they do in
        // production with summarize_wal on (tests/incremental.rs compares them with full reads).
        if opts.server_bin.is_none() && super::test_major() >= 17 {
            conf.push_str("summarize_wal = on\n");
        }
        for (k, v) in &opts.settings {
            conf.push_str(&format!("{k} = {v}\n"));
        }
        fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .and_then(|mut f| f.write_all(conf.as_bytes()))
            .expect("append to postgresql.conf");

        Cluster {
            data,
            sock,
            port,
            log,
            server_bin,
            command_line: Vec::new(),
            running: false,
            pid: None,
            dir,
        }
    }

    /// Moves postgresql.conf, pg_hba.conf and pg_ident.conf out of the data directory into
    /// `dir`, which Debian's packaged clusters keep in /etc/postgresql/MAJOR/NAME: the moved
    /// postgresql.conf names the data directory and the other two files, as Debian's does,
    /// and the server is started with `-c config_file=…`, as pg_ctlcluster starts it. Call
    /// before the first start.
    pub fn move_config_to(&mut self, dir: &Path) {
        for name in ["postgresql.conf", "pg_hba.conf", "pg_ident.conf"] {
            fs::rename(self.data.join(name), dir.join(name))
                .unwrap_or_else(|e| panic!("move {name} to {}: {e}", dir.display()));
        }
        let conf = dir.join("postgresql.conf");
        fs::OpenOptions::new()
            .append(true)
            .open(&conf)
            .and_then(|mut f| {
                writeln!(
                    f,
                    "data_directory = '{}'\nhba_file = '{}'\nident_file = '{}'",
                    self.data.display(),
                    dir.join("pg_hba.conf").display(),
                    dir.join("pg_ident.conf").display()
                )
            })
            .expect("append to the moved postgresql.conf");
        self.command_line
            .push(("config_file".into(), conf.display().to_string()));
    }

    /// initdb + start.
    pub fn start_new(opts: ClusterOptions) -> Cluster {
        let mut c = Cluster::new(opts);
        c.start();
        c
    }

    /// A started cluster archiving into `repo`.
    pub fn archiving_to(repo: impl AsRef<OsStr>) -> Cluster {
        Cluster::start_new(ClusterOptions::archiving_to(repo))
    }

    /// Starts a server on an existing data directory (a restored copy or a mount) with its own
    /// port and socket dir and `archive_mode=off` (a copy keeps the original's
    /// archive_command). The directory is not removed on drop. Panics with the log on failure.
    #[track_caller]
    pub fn start_on(data: &Path) -> Cluster {
        Cluster::start_on_with(data, &[])
    }

    /// [`Cluster::start_on`] with extra `-c name=value` settings.
    #[track_caller]
    pub fn start_on_with(data: &Path, settings: &[(&str, &str)]) -> Cluster {
        match Cluster::try_start_on(data, settings) {
            Ok(c) => c,
            Err(report) => panic!("{report}"),
        }
    }

    /// Like [`Cluster::start_on_with`] but returns the failure report (pg_ctl output and the
    /// server log) instead of panicking. The server is of [`super::test_major`].
    pub fn try_start_on(data: &Path, settings: &[(&str, &str)]) -> Result<Cluster, String> {
        Cluster::try_start_on_bin(data, &test_server_bin(), settings)
    }

    /// [`Cluster::try_start_on`] with the server programs in `server_bin` (another major).
    pub fn try_start_on_bin(
        data: &Path,
        server_bin: &Path,
        settings: &[(&str, &str)],
    ) -> Result<Cluster, String> {
        let mut with_off = vec![("archive_mode", "off")];
        with_off.extend_from_slice(settings);
        Cluster::try_start_on_configured(data, server_bin, &with_off)
    }

    /// Starts a server on a restored data directory with the archiving its own configuration
    /// sets, as a recovered primary runs (not `archive_mode=off` as [`Cluster::start_on`]).
    #[track_caller]
    pub fn start_on_as_configured(data: &Path) -> Cluster {
        Cluster::try_start_on_configured(data, &test_server_bin(), &[])
            .unwrap_or_else(|report| panic!("{report}"))
    }

    fn try_start_on_configured(
        data: &Path,
        server_bin: &Path,
        settings: &[(&str, &str)],
    ) -> Result<Cluster, String> {
        let dir = TestDir::new("server");
        let sock = dir.subdir("sock", 0o700);
        let port = free_port();
        let mut command_line = vec![
            ("port".to_string(), port.to_string()),
            ("listen_addresses".to_string(), String::new()),
            (
                "unix_socket_directories".to_string(),
                sock.display().to_string(),
            ),
        ];
        command_line.extend(settings.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let mut c = Cluster {
            data: data.to_path_buf(),
            log: dir.join("server.log"),
            server_bin: server_bin.to_path_buf(),
            sock,
            port,
            command_line,
            running: false,
            pid: None,
            dir,
        };
        c.try_start()?;
        Ok(c)
    }

    /// The temp dir holding this cluster's socket dir and log (and its data dir if initdb'd
    /// here): a place for test files postgres must reach (e.g. a tablespace).
    pub fn dir(&self) -> &TestDir {
        &self.dir
    }

    pub fn is_running(&self) -> bool {
        self.running
    }

    #[track_caller]
    pub fn start(&mut self) {
        if let Err(report) = self.try_start() {
            panic!("{report}");
        }
    }

    /// `pg_ctl start -w`; on failure returns pg_ctl's output and the server log.
    pub fn try_start(&mut self) -> Result<(), String> {
        assert!(
            !self.running,
            "server on {} already running",
            self.data.display()
        );
        let mut opts = String::new();
        for (k, v) in &self.command_line {
            // pg_ctl hands -o to /bin/sh: single-quote each value.
            opts.push_str(&format!(" -c {k}='{}'", v.replace('\'', r"'\''")));
        }
        let mut cmd = postgres_command(self.server_bin.join("pg_ctl"));
        cmd.arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log)
            .args(["-w", "-t", &SERVER_TIMEOUT.as_secs().to_string()]);
        if !opts.is_empty() {
            cmd.arg("-o").arg(opts.trim_start());
        }
        cmd.arg("start");
        let run = run_command(&mut cmd);
        if !run.status.success() {
            // pg_ctl may time out while the postmaster lives on: don't leak it.
            if let Some(pid) = self.read_pid() {
                self.pid = Some(pid);
                self.running = true;
                self.kill();
            }
            return Err(format!(
                "could not start PostgreSQL on {}\n{}\n--- server log {} ---\n{}",
                self.data.display(),
                run.report(),
                self.log.display(),
                self.log_contents()
            ));
        }
        self.running = true;
        self.pid = self.read_pid();
        Ok(())
    }

    /// `pg_ctl stop -m fast`.
    #[track_caller]
    pub fn stop(&mut self) {
        self.stop_mode("fast");
    }

    /// `pg_ctl stop -m MODE` (smart, fast, immediate). Panics with the log on failure.
    #[track_caller]
    pub fn stop_mode(&mut self, mode: &str) {
        assert!(
            self.running,
            "server on {} is not running",
            self.data.display()
        );
        let run = self.pg_ctl_stop(mode);
        if !run.status.success() {
            panic!(
                "could not stop PostgreSQL on {}\n{}\n--- server log ---\n{}",
                self.data.display(),
                run.report(),
                self.log_contents()
            );
        }
        self.running = false;
        if let Some(pid) = self.pid.take() {
            Cluster::wait_gone(pid);
        }
    }

    #[track_caller]
    pub fn restart(&mut self) {
        self.stop();
        self.start();
    }

    fn pg_ctl_stop(&self, mode: &str) -> Run {
        run_command(
            postgres_command(self.server_bin.join("pg_ctl"))
                .arg("-D")
                .arg(&self.data)
                .args([
                    "-m",
                    mode,
                    "-w",
                    "-t",
                    &SERVER_TIMEOUT.as_secs().to_string(),
                ])
                .arg("stop"),
        )
    }

    /// The postmaster PID from postmaster.pid, if the file exists.
    pub fn read_pid(&self) -> Option<u32> {
        let s = fs::read_to_string(self.data.join("postmaster.pid")).ok()?;
        s.lines().next()?.trim().parse().ok()
    }

    /// Whether the server process is still alive (it may exit by itself, e.g. after
    /// recovery_target_action=shutdown or a FATAL during recovery).
    pub fn process_alive(&self) -> bool {
        match self.pid.or_else(|| self.read_pid()) {
            Some(pid) => !Cluster::is_gone(pid),
            None => false,
        }
    }

    /// True if `pid` no longer runs (no such process, or a zombie).
    fn is_gone(pid: u32) -> bool {
        match fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(s) => s
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z'),
        }
    }

    /// Waits (up to 10 s) until process `pid` is gone: pg_ctl returns once postmaster.pid is
    /// removed, a moment before the postmaster exits.
    fn wait_gone(pid: u32) {
        for _ in 0..100 {
            if Cluster::is_gone(pid) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL the postmaster (children exit when they notice it died).
    fn kill(&mut self) {
        if let Some(pid) = self.pid.take() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
            Cluster::wait_gone(pid);
        }
        self.running = false;
    }

    pub fn log_contents(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_else(|e| format!("(no log: {e})"))
    }

    /// The last `n` lines of the server log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log_contents();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    // -----------------------------------------------------------------------------------------
    // Connecting

    /// libpq connection string (key=value form).
    pub fn conninfo(&self) -> String {
        format!(
            "host={} port={} user=postgres dbname=postgres",
            self.sock.display(),
            self.port
        )
    }

    /// Creates the non-superuser `pgsnapfs_backup` role of docs/operations.md ("A backup
    /// role"), with a password when one is given.
    pub fn create_backup_role(&self, password: Option<&str>) {
        let password = password
            .map(|p| format!(" PASSWORD '{}'", p.replace('\'', "''")))
            .unwrap_or_default();
        self.psql(&format!(
            "CREATE ROLE pgsnapfs_backup LOGIN{password};
             GRANT pg_read_all_settings TO pgsnapfs_backup;
             GRANT EXECUTE ON FUNCTION pg_backup_start(text, boolean) TO pgsnapfs_backup;
             GRANT EXECUTE ON FUNCTION pg_backup_stop(boolean) TO pgsnapfs_backup;"
        ));
    }

    /// The `backup` arguments for this cluster: `--pgdata DIR -h SOCKDIR -p PORT -U postgres`.
    pub fn backup_args(&self) -> Vec<String> {
        vec![
            "--pgdata".to_string(),
            self.data.display().to_string(),
            "-h".to_string(),
            self.sock.display().to_string(),
            "-p".to_string(),
            self.port.to_string(),
            "-U".to_string(),
            "postgres".to_string(),
        ]
    }

    /// Runs SQL (any number of statements, each in its own transaction unless the SQL says
    /// otherwise) in database `postgres`; returns the unaligned, tuples-only output, trimmed.
    /// Panics with psql's stderr and the log tail on error.
    #[track_caller]
    pub fn psql(&self, sql: &str) -> String {
        self.psql_db("postgres", sql)
    }

    #[track_caller]
    pub fn psql_db(&self, db: &str, sql: &str) -> String {
        match self.try_psql_db(db, sql) {
            Ok(s) => s,
            Err(e) => panic!(
                "psql failed on {} port {}\nSQL: {sql}\n{e}\n--- server log (tail) ---\n{}",
                self.sock.display(),
                self.port,
                self.log_tail(30)
            ),
        }
    }

    pub fn try_psql(&self, sql: &str) -> Result<String, String> {
        self.try_psql_db("postgres", sql)
    }

    pub fn try_psql_db(&self, db: &str, sql: &str) -> Result<String, String> {
        let mut cmd = psql_command(&self.sock, self.port, db);
        cmd.arg("-")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let description = describe(&cmd);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("could not start `{description}`: {e}"));
        // Errors writing mean psql exited early; its stderr says why.
        let _ = child.stdin.take().unwrap().write_all(sql.as_bytes());
        let out = child.wait_with_output().expect("wait for psql");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(format!(
                "psql exited with {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// `pgbench ARGS... postgres` against this server; returns stdout. Panics on failure.
    #[track_caller]
    pub fn pgbench(&self, args: &[&str]) -> String {
        let run = run_command(
            postgres_command(pg_tool("pgbench"))
                .arg("-h")
                .arg(&self.sock)
                .args(["-p", &self.port.to_string()])
                .args(args)
                .arg("postgres"),
        );
        if !run.status.success() {
            panic!(
                "{}\n--- server log (tail) ---\n{}",
                run.report(),
                self.log_tail(30)
            );
        }
        run.stdout_str()
    }

    /// `pgbench -i -s SCALE` (quiet).
    #[track_caller]
    pub fn pgbench_init(&self, scale: u32) {
        self.pgbench(&["-i", "-q", "-s", &scale.to_string()]);
    }

    /// `pgbench -T SECONDS -c CLIENTS -j CLIENTS`; returns pgbench's report.
    #[track_caller]
    pub fn pgbench_run(&self, seconds: u32, clients: u32) -> String {
        let c = clients.to_string();
        self.pgbench(&["-T", &seconds.to_string(), "-c", &c, "-j", &c])
    }

    // -----------------------------------------------------------------------------------------
    // WAL and recovery

    /// `pg_switch_wal()`; returns the name of the last finished segment: the one the switch
    /// finished, or, if nothing was written since the last switch, the one before.
    #[track_caller]
    pub fn switch_wal(&self) -> String {
        // The segment before the one WAL is now inserted into, worked out here: what
        // pg_switch_wal() returns when there was nothing to switch, and what pg_walfile_name()
        // makes of a segment boundary, differ between majors (18 returns a position past the
        // new segment's page header).
        let row = self.psql(
            "SELECT pg_switch_wal(), pg_current_wal_insert_lsn(), \
                    pg_walfile_name(pg_current_wal_insert_lsn()), setting \
             FROM pg_settings WHERE name = 'wal_segment_size'",
        );
        let fields: Vec<&str> = row.split('|').collect();
        assert_eq!(fields.len(), 4, "unexpected row {row:?}");
        let insert = super::parse_lsn(fields[1]);
        let seg_size: u64 = fields[3].parse().expect("wal_segment_size in bytes");
        let finished = insert / seg_size - 1;
        let per_id = 0x1_0000_0000 / seg_size;
        format!(
            "{}{:08X}{:08X}",
            &fields[2][..8],
            finished / per_id,
            finished % per_id
        )
    }

    /// `pg_switch_wal()`, then waits until pg_stat_archiver reports the finished segment (or a
    /// later one) archived. Returns the segment name. Panics after a timeout with the archiver
    /// stats and the log.
    #[track_caller]
    pub fn switch_wal_and_wait_archived(&self) -> String {
        let seg = self.switch_wal();
        // Also nothing else waiting: a backup's history file (SEG.XXXXXXXX.backup) sorts after
        // its segment, so the segment can be archived before it. And the other way round: a
        // segment finished during a backup is archived before the backup's history file,
        // which then is the last archived although it sorts before the segment: so the
        // segment's .done counts too.
        let query = format!(
            "SELECT (coalesce(last_archived_wal, '') >= '{seg}' OR EXISTS \
                     (SELECT FROM pg_ls_archive_statusdir() WHERE name = '{seg}.done')) \
                    AND NOT EXISTS \
                    (SELECT FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'), \
                    coalesce(last_archived_wal, '-'), failed_count, \
                    coalesce(last_failed_wal, '-') \
             FROM pg_stat_archiver"
        );
        let waited = wait_for(SERVER_TIMEOUT, || {
            let row = self.psql(&query);
            if row.starts_with("t|") {
                Ok(())
            } else {
                Err(format!(
                    "pg_stat_archiver (done|last_archived|failed_count|last_failed) = {row}"
                ))
            }
        });
        if let Err(e) = waited {
            panic!(
                "WAL segment {seg} was not archived: {e}\n--- server log (tail) ---\n{}",
                self.log_tail(40)
            );
        }
        seg
    }

    /// Polls until the server is paused in recovery or out of recovery (or has exited).
    #[track_caller]
    pub fn wait_until_paused_or_ready(&self) -> RecoveryState {
        // pg_get_wal_replay_pause_state() is new in 14; 13 has only the boolean.
        let query = if self.major() < 14 {
            "SELECT pg_is_in_recovery(), CASE WHEN NOT pg_is_in_recovery() \
             THEN 'not in recovery' WHEN pg_is_wal_replay_paused() THEN 'paused' \
             ELSE 'not paused' END"
        } else {
            "SELECT pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() \
             THEN pg_get_wal_replay_pause_state() ELSE 'not in recovery' END"
        };
        let waited = wait_for(SERVER_TIMEOUT, || match self.try_psql(query) {
            Ok(row) => match row.as_str() {
                "t|paused" => Ok(RecoveryState::Paused),
                r if r.starts_with("f|") => Ok(RecoveryState::Ready),
                _ => Err(format!("pg_is_in_recovery|pause_state = {row}")),
            },
            Err(_) if !self.process_alive() => Ok(RecoveryState::ShutDown),
            Err(e) => Err(e),
        });
        waited.unwrap_or_else(|e| {
            panic!(
                "recovery neither paused nor finished: {e}\n--- server log (tail) ---\n{}",
                self.log_tail(60)
            )
        })
    }

    /// Waits for recovery and asserts it paused (the default recovery_target_action).
    #[track_caller]
    pub fn wait_until_paused(&self) {
        let state = self.wait_until_paused_or_ready();
        assert_eq!(
            state,
            RecoveryState::Paused,
            "expected recovery to pause at the target\n--- server log ---\n{}",
            self.log_tail(60)
        );
    }

    /// The major of the data directory (its PG_VERSION file).
    #[track_caller]
    pub fn major(&self) -> u32 {
        let v = fs::read_to_string(self.data.join("PG_VERSION"))
            .unwrap_or_else(|e| panic!("read PG_VERSION in {}: {e}", self.data.display()));
        v.trim().parse().expect("PG_VERSION holds a number")
    }

    #[track_caller]
    pub fn current_wal_lsn(&self) -> String {
        self.psql("SELECT pg_current_wal_lsn()")
    }

    /// `now()` as PostgreSQL prints it (e.g. `2026-11-21 05:40:01.123456+00`).
    #[track_caller]
    pub fn now(&self) -> String {
        self.psql("SELECT now()")
    }

    #[track_caller]
    pub fn system_identifier(&self) -> String {
        self.psql("SELECT system_identifier FROM pg_control_system()")
    }

    /// The WAL segment files currently in pg_wal, sorted.
    pub fn wal_segments(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.data.join("pg_wal"))
            .expect("read pg_wal")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.len() == 24 && n.chars().all(|c| c.is_ascii_hexdigit()))
            .collect();
        v.sort();
        v
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.running {
            return;
        }
        // Never panic here: this often runs while a failed test unwinds.
        if self.pg_ctl_stop("immediate").status.success() {
            self.running = false;
            if let Some(pid) = self.pid.take() {
                Cluster::wait_gone(pid);
            }
        } else {
            self.kill();
        }
    }
}

/// psql as postgres on a server's private socket: quiet, unaligned, tuples only, stopping at
/// the first error; the caller adds the file to run after `-f`.
pub fn psql_command(sock: &Path, port: u16, db: &str) -> Command {
    let mut cmd = postgres_command(pg_tool("psql"));
    cmd.arg("-h")
        .arg(sock)
        .args(["-p", &port.to_string()])
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            db,
            "-f",
        ]);
    cmd
}
