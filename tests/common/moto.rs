//! A moto S3 server on 127.0.0.1, for the tests that run on an S3 repository, and the AWS
//! settings every pgsnapfs run in the test process inherits.
//!
//! Nothing skips: a missing `moto_server` panics with a message saying how to install it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "AKIAPGSNAPFSTEST";
/// Must never show up in any output, error or location.
pub const SECRET_KEY: &str = "pgsnapfs-test-secret-7c1d2e";

/// Sets the credentials the S3 back end finds through the standard AWS chain. Once, before any
/// test of the binary touches the environment: every test calls it first. Servers the tests
/// start inherit them, so an archive_command can push to S3.
pub fn aws_env() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::env::set_var("AWS_ACCESS_KEY_ID", ACCESS_KEY);
        std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
        std::env::set_var("AWS_REGION", "us-east-1");
        // No instance-metadata probing for credentials or region on a developer machine.
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
        for var in [
            "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT_URL_S3",
            "AWS_PROFILE",
            "AWS_SESSION_TOKEN",
        ] {
            std::env::remove_var(var);
        }
    });
}

const INSTALL: &str = "The S3 tests need moto's S3 server: run scripts/test, which installs it \
                       (pip install 'moto[server]').";

/// A `moto_server` on 127.0.0.1, killed on drop.
pub struct Moto {
    child: Child,
    pub port: u16,
    _log: tempfile::NamedTempFile,
}

impl Moto {
    pub fn start() -> Moto {
        aws_env();
        let port = super::free_port();
        // Its request log goes to a file: a pipe nobody reads would fill up and stall it.
        let log = tempfile::NamedTempFile::new().expect("temp file for the moto log");
        let out = log.reopen().expect("reopen moto log");
        let args = ["-H", "127.0.0.1", "-p", &port.to_string()];
        let spawn = |cmd: &mut Command| {
            cmd.stdin(Stdio::null())
                .stdout(out.try_clone().expect("dup moto log"))
                .stderr(out.try_clone().expect("dup moto log"))
                .spawn()
        };
        // The console script, or the module when pip put no script on PATH (a pyenv without
        // rehash); a python3 without moto exits at once and the check below says so.
        let child = spawn(Command::new("moto_server").args(args))
            .or_else(|_| {
                spawn(
                    Command::new("python3")
                        .args(["-m", "moto.server"])
                        .args(args),
                )
            })
            .unwrap_or_else(|e| panic!("cannot run moto_server or python3 ({e}). {INSTALL}"));
        let mut moto = Moto {
            child,
            port,
            _log: log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = moto.child.try_wait() {
                let log = std::fs::read_to_string(moto._log.path()).unwrap_or_default();
                panic!("moto_server exited with {status} before listening:\n{log}\n{INSTALL}");
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen on port {port} within 60 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        moto
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates a bucket with one plain HTTP request: moto does not check signatures, and
    /// creating buckets is not something pgsnapfs does. A connection that moto resets or
    /// refuses is tried again for a while: a port that accepted a connection is not yet a
    /// server that answers (on a loaded machine, or a loopback connect that met itself).
    pub fn create_bucket(&self, bucket: &str) {
        let request = || -> std::io::Result<String> {
            let mut conn = TcpStream::connect(("127.0.0.1", self.port))?;
            write!(
                conn,
                "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                self.port
            )?;
            let mut reply = String::new();
            conn.read_to_string(&mut reply)?;
            Ok(reply)
        };
        let reply = super::wait_for(Duration::from_secs(30), || {
            request().map_err(|e| format!("create bucket {bucket} on moto: {e}"))
        })
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            reply.starts_with("HTTP/1.1 200"),
            "moto refused to create bucket {bucket}:\n{reply}"
        );
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
