//! `pgsnapfs mount` run as root (FUSE needs it) and what runs on a mount: [`Mount`] is a
//! guard that stops the server on the mount, unmounts (lazily if it must) and reaps or kills
//! the mount process on drop, so a failing test leaves nothing mounted.

use super::cluster::Cluster;
use super::{
    chown_to_postgres, describe, free_port, mount_points, pgsnapfs_as_root, postgres_command,
    run_command, test_server_bin, wait_for, Repo, Run, TestDir,
};
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The line a mount prints on stdout once it can be used.
pub const READY: &str = "pgsnapfs: mounted";
/// How long a mount may take to come up, and a mount process to exit after unmounting.
pub const MOUNT_TIMEOUT: Duration = Duration::from_secs(60);
/// shared_buffers for servers on views: the default (1GB) is sized for big replays; these
/// tests run several servers at once on tiny data.
pub const VIEW_SHARED_BUFFERS: &str = "128MB";

/// `pgsnapfs ARGS...` as root (FUSE needs it), with the harness's scrubbed environment.
pub fn root_cmd<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgsnapfs"));
    cmd.args(args).current_dir("/").stdin(Stdio::null());
    for var in [
        "PGSNAPFS_REPO",
        "PGHOST",
        "PGPORT",
        "PGUSER",
        "PGDATABASE",
        "PGDATA",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

pub fn is_mounted(p: &Path) -> bool {
    mount_points().iter().any(|m| m == p)
}

/// True if the process no longer runs (gone, or a zombie).
pub fn pid_gone(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(st) => st
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
    }
}

pub fn signal(pid: u32, sig: i32) {
    // SAFETY: plain kill(2) of a process this test started.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Waits up to `timeout` for a child to exit.
pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One `pgsnapfs mount` and what runs on it. Drop stops the server, unmounts (falling back to
/// a lazy `umount -l`), and reaps or kills the mount process.
pub struct Mount {
    /// The mount point (canonical, as /proc/mounts shows it).
    pub dir: PathBuf,
    /// The foreground mount process.
    pub child: Option<Child>,
    /// The mount process of a `--background` mount (not our child).
    pub bg_pid: Option<u32>,
    /// The mount process's stderr.
    pub log: PathBuf,
    pub stdout: Arc<Mutex<String>>,
    pub command: String,
    pub server: Option<Cluster>,
}

/// `--scratch DIR --shared-buffers 128MB` plus a goal, for a writable view.
pub fn view_args<'a>(scratch: &'a Path, goal: &[&'a str]) -> Vec<&'a str> {
    let mut v = goal.to_vec();
    v.extend([
        "--scratch",
        s(scratch),
        "--shared-buffers",
        VIEW_SHARED_BUFFERS,
    ]);
    v
}

/// An empty directory for a mount point, owned by postgres.
pub fn mountpoint(work: &TestDir, name: &str) -> PathBuf {
    let p = work.subdir(name, 0o755);
    fs::canonicalize(&p).unwrap()
}

impl Mount {
    /// `pgsnapfs mount --repo R MOUNTPOINT ARGS...` in the foreground; returns once it printed
    /// that it is mounted. Panics with its output if it does not mount.
    #[track_caller]
    pub fn start(repo: &Repo, mountpoint: &Path, args: &[&str]) -> Mount {
        Mount::try_start(repo, mountpoint, args).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn try_start(repo: &Repo, mountpoint: &Path, args: &[&str]) -> Result<Mount, String> {
        let cmd = root_cmd(&repo.args("mount", &[&[s(mountpoint)], args].concat()));
        Mount::spawn(cmd, mountpoint)
    }

    /// Runs `cmd`, a foreground `pgsnapfs mount` of `mountpoint` (as root or as another user),
    /// and returns once it printed that it is mounted and the mount is in /proc/mounts.
    pub fn spawn(mut cmd: Command, mountpoint: &Path) -> Result<Mount, String> {
        let log = mountpoint.with_extension("mount.log");
        cmd.stdout(Stdio::piped())
            .stderr(fs::File::create(&log).expect("create mount log"));
        let command = describe(&cmd);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{command}`: {e}"));
        let stdout = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel::<bool>();
        let out = child.stdout.take().unwrap();
        let collected = stdout.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let ready = line.starts_with(READY);
                collected.lock().unwrap().push_str(&(line + "\n"));
                if ready {
                    let _ = tx.send(true);
                }
            }
            let _ = tx.send(false);
        });
        let mut m = Mount {
            dir: fs::canonicalize(mountpoint).unwrap_or(mountpoint.to_path_buf()),
            child: Some(child),
            bg_pid: None,
            log,
            stdout,
            command,
            server: None,
        };
        match rx.recv_timeout(MOUNT_TIMEOUT) {
            Ok(true) if is_mounted(&m.dir) => Ok(m),
            Ok(true) => Err(format!(
                "the mount said it was ready but {} is not in /proc/mounts\n{}",
                m.dir.display(),
                m.report()
            )),
            Ok(false) => {
                let st = wait_child(m.child.as_mut().unwrap(), MOUNT_TIMEOUT);
                Err(format!(
                    "mount exited ({st:?}) before mounting\n{}",
                    m.report()
                ))
            }
            Err(_) => Err(format!(
                "mount not ready after {MOUNT_TIMEOUT:?}\n{}",
                m.report()
            )),
        }
    }

    /// `pgsnapfs mount ... --background`: the command must return once mounted, printing
    /// `pgsnapfs: mounted at ...` and the mount process's id.
    #[track_caller]
    pub fn start_background(repo: &Repo, mountpoint: &Path, args: &[&str]) -> Mount {
        let log = mountpoint.with_extension("mount.log");
        let mut all = repo.args("mount", &[&[s(mountpoint)], args].concat());
        all.push("--background".into());
        // stderr to a file: the mount process inherits it and keeps it open while mounted.
        let mut cmd = root_cmd(&all);
        cmd.stdout(Stdio::piped())
            .stderr(fs::File::create(&log).expect("create mount log"));
        let command = describe(&cmd);
        let mut child = cmd.spawn().unwrap();
        let mut out = String::new();
        let mut pipe = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let _ = pipe.read_to_string(&mut out);
            out
        });
        let status = wait_child(&mut child, MOUNT_TIMEOUT);
        let dir = fs::canonicalize(mountpoint).unwrap();
        let mut m = Mount {
            dir: dir.clone(),
            child: None,
            bg_pid: None,
            log,
            stdout: Arc::new(Mutex::new(String::new())),
            command,
            server: None,
        };
        let Some(status) = status else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`mount --background` did not return within {MOUNT_TIMEOUT:?}\n{}",
                m.report()
            );
        };
        let out = reader.join().unwrap();
        *m.stdout.lock().unwrap() = out.clone();
        // "pgsnapfs: mounted at DIR (process PID)"
        m.bg_pid = out
            .split("(process ")
            .nth(1)
            .and_then(|r| r.split(')').next())
            .and_then(|p| p.trim().parse().ok());
        assert!(
            status.success(),
            "mount --background failed\n{}",
            m.report()
        );
        assert!(
            out.contains(READY),
            "mount --background did not say it was mounted\n{}",
            m.report()
        );
        assert!(
            m.bg_pid.is_some(),
            "mount --background did not print the mount process id\n{}",
            m.report()
        );
        assert!(
            is_mounted(&dir),
            "{} is not mounted\n{}",
            dir.display(),
            m.report()
        );
        m
    }

    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .map(|c| c.id())
            .or(self.bg_pid)
            .expect("a mount process")
    }

    pub fn report(&self) -> String {
        format!(
            "command: {}\n--- stdout ---\n{}--- stderr ({}) ---\n{}",
            self.command,
            self.stdout.lock().unwrap(),
            self.log.display(),
            fs::read_to_string(&self.log).unwrap_or_default()
        )
    }

    /// Starts PostgreSQL (as postgres) on this mount; it is stopped before the unmount.
    #[track_caller]
    pub fn start_server(&mut self) -> &Cluster {
        assert!(
            self.server.is_none(),
            "a server already runs on {}",
            self.dir.display()
        );
        match Cluster::try_start_on(&self.dir, &[]) {
            Ok(c) => self.server = Some(c),
            Err(e) => panic!("{e}\n--- mount ---\n{}", self.report()),
        }
        self.server.as_ref().unwrap()
    }

    pub fn server(&self) -> &Cluster {
        self.server.as_ref().expect("no server on this mount")
    }

    /// `pg_ctl stop -m fast` of the server on this mount.
    #[track_caller]
    pub fn stop_server(&mut self) {
        let mut c = self.server.take().expect("no server on this mount");
        c.stop();
    }

    /// `pgsnapfs umount MOUNTPOINT` as root.
    pub fn umount(&self) -> Run {
        pgsnapfs_as_root(&["umount", s(&self.dir)])
    }

    /// Unmounts with `pgsnapfs umount`, and checks that the mount process then exits 0 and
    /// the mount point is gone from /proc/mounts.
    #[track_caller]
    pub fn umount_ok(&mut self) {
        self.umount().assert_ok();
        assert!(
            !is_mounted(&self.dir),
            "{} still mounted",
            self.dir.display()
        );
        let pid = self.pid();
        if let Some(child) = self.child.as_mut() {
            let st = wait_child(child, MOUNT_TIMEOUT);
            assert!(
                st.is_some_and(|st| st.success()),
                "mount process ended with {st:?} after umount\n{}",
                self.report()
            );
        } else {
            let gone = wait_for(MOUNT_TIMEOUT, || {
                if pid_gone(pid) {
                    Ok(())
                } else {
                    Err(format!("process {pid} runs"))
                }
            });
            assert!(
                gone.is_ok(),
                "background mount process: {gone:?}\n{}",
                self.report()
            );
        }
    }

    pub fn cleanup(&mut self) {
        // The server first: a server holds the mount busy.
        drop(self.server.take());
        if is_mounted(&self.dir) {
            let ok = pgsnapfs_as_root(&["umount", s(&self.dir)]).status.success();
            if !ok {
                let _ = Command::new("umount")
                    .arg("-l")
                    .arg(&self.dir)
                    .stderr(Stdio::null())
                    .status();
            }
        }
        if let Some(mut child) = self.child.take() {
            if wait_child(&mut child, Duration::from_secs(10)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if let Some(pid) = self.bg_pid.take() {
            let _ = wait_for(Duration::from_secs(10), || {
                if pid_gone(pid) {
                    Ok(())
                } else {
                    Err(String::new())
                }
            });
            if !pid_gone(pid) {
                signal(pid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// What a signal did to a mount process: still mounted and serving, cleanly gone, or killed
/// and leaving a stale mount behind.
pub fn after_signal(m: &mut Mount) -> String {
    let mounted = is_mounted(&m.dir);
    let stale = fs::read_dir(&m.dir)
        .err()
        .is_some_and(|e| e.raw_os_error() == Some(libc::ENOTCONN));
    let status = m.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
    format!("mounted={mounted} stale(ENOTCONN)={stale} process exit status={status:?}")
}

/// A backup's directory in a mounted catalogue.
pub fn backup_dir(mnt: &Path, id: &str) -> PathBuf {
    mnt.join("backups").join(id)
}

/// Whether a base backup leaves this data-directory file out (pg_basebackup's rules, which
/// pgsnapfs follows): WAL, the per-run files, caches the server rebuilds, temporary files.
pub fn excluded_from_backup(rel: &str) -> bool {
    const DIR_CONTENTS: [&str; 7] = [
        "pg_stat_tmp",
        "pg_replslot",
        "pg_dynshmem",
        "pg_notify",
        "pg_serial",
        "pg_snapshots",
        "pg_subtrans",
    ];
    const FILES: [&str; 7] = [
        "postgresql.auto.conf.tmp",
        "current_logfiles.tmp",
        "backup_label",
        "tablespace_map",
        "backup_manifest",
        "postmaster.pid",
        "postmaster.opts",
    ];
    let parts: Vec<&str> = rel.split('/').collect();
    let (name, parents) = parts.split_last().unwrap();
    parents.first() == Some(&"pg_wal")
        || parents
            .iter()
            .any(|d| DIR_CONTENTS.contains(d) || d.starts_with("pgsql_tmp"))
        || name.starts_with("pgsql_tmp")
        || name.starts_with("pg_internal.init")
        || FILES.contains(name)
}

/// A server started on a view exactly as a user would: `pg_ctl -D MOUNTPOINT -o "-p PORT -k
/// SOCKDIR" -w start`, with no setting overridden ([`Cluster::start_on`] forces archive_mode
/// off by itself, which would hide whether the view does). Drop stops it (immediate mode).
/// Declare it after the [`Mount`] it runs on, so it is stopped before the unmount.
pub struct PlainServer {
    data: PathBuf,
    dir: TestDir,
    sock: PathBuf,
    port: u16,
    running: bool,
}

impl PlainServer {
    #[track_caller]
    pub fn start(data: &Path) -> PlainServer {
        let dir = TestDir::new("plain-server");
        let sock = dir.subdir("sock", 0o700);
        let port = free_port();
        let mut server = PlainServer {
            data: data.to_path_buf(),
            sock: sock.clone(),
            port,
            running: false,
            dir,
        };
        let run = run_command(
            postgres_command(test_server_bin().join("pg_ctl"))
                .arg("-D")
                .arg(data)
                .arg("-l")
                .arg(server.dir.join("server.log"))
                .arg("-o")
                .arg(format!("-p {port} -k {}", sock.display()))
                .args(["-w", "-t", "120", "start"]),
        );
        server.running = run.status.success();
        assert!(
            server.running,
            "pg_ctl start on {}\n{}\n--- log ---\n{}",
            data.display(),
            run.report(),
            server.log()
        );
        server
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// Runs SQL from a file (so VACUUM and CHECKPOINT run outside a transaction block).
    #[track_caller]
    pub fn psql(&self, sql: &str) -> String {
        let file = self.dir.join("query.sql");
        fs::write(&file, sql).unwrap();
        chown_to_postgres(&file);
        let run =
            run_command(super::cluster::psql_command(&self.sock, self.port, "postgres").arg(&file));
        assert!(
            run.status.success(),
            "{}\n--- log ---\n{}",
            run.report(),
            self.log()
        );
        run.stdout_str().trim().to_string()
    }

    /// Waits until the server is out of recovery (promoted).
    #[track_caller]
    pub fn wait_promoted(&self) {
        let done = wait_for(Duration::from_secs(120), || {
            match self.psql("SELECT pg_is_in_recovery()").as_str() {
                "f" => Ok(()),
                other => Err(other.to_string()),
            }
        });
        assert!(done.is_ok(), "{done:?}\n--- log ---\n{}", self.log());
    }

    fn pg_ctl_stop(&mut self, mode: &str) -> Run {
        self.running = false;
        run_command(
            postgres_command(test_server_bin().join("pg_ctl"))
                .arg("-D")
                .arg(&self.data)
                .args(["-m", mode, "-w", "-t", "120", "stop"]),
        )
    }

    #[track_caller]
    pub fn stop(&mut self) {
        let run = self.pg_ctl_stop("fast");
        assert!(
            run.status.success(),
            "{}\n--- log ---\n{}",
            run.report(),
            self.log()
        );
    }
}

impl Drop for PlainServer {
    fn drop(&mut self) {
        if self.running {
            let _ = self.pg_ctl_stop("immediate");
        }
    }
}
