//! Running commands (as `postgres` or root) and [`Run`], the result with its `assert_*` methods.

use super::*;

/// Environment variables that would change which server or repository a command talks to;
/// removed from every command the harness runs so the tests say it explicitly.
pub const SCRUBBED_ENV: &[&str] = &[
    "PGSNAPFS_REPO",
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGDATABASE",
    "PGDATA",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGOPTIONS",
    "PGAPPNAME",
    "PGSSLMODE",
    "PGTZ",
    "PGCONNECT_TIMEOUT",
];

/// A command that runs `program` as the `postgres` user (setpriv execs it, so the child's PID is
/// the program's own and can be signalled), with cwd `/`, no stdin and a scrubbed environment.
pub fn postgres_command(program: impl AsRef<OsStr>) -> Command {
    let m = machine();
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=postgres",
        "--regid=postgres",
        "--init-groups",
        "--",
    ]);
    cmd.arg(program);
    cmd.env("HOME", &m.postgres_home)
        .env("USER", "postgres")
        .env("LOGNAME", "postgres")
        .current_dir("/")
        .stdin(Stdio::null());
    for var in SCRUBBED_ENV {
        cmd.env_remove(var);
    }
    cmd
}

/// Runs a command to completion, panicking if it cannot be started.
pub fn run_command(cmd: &mut Command) -> Run {
    let description = describe(cmd);
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("could not start `{description}`: {e}"));
    Run {
        command: description,
        output,
    }
}

pub fn command_stdout(cmd: &mut Command) -> String {
    run_command(cmd).assert_ok().stdout_str()
}

/// `program args...` as one line, for messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// The output of a finished command plus the command line, for assertion messages.
/// Derefs to [`Output`].
pub struct Run {
    pub command: String,
    pub output: Output,
}

impl std::ops::Deref for Run {
    type Target = Output;
    fn deref(&self) -> &Output {
        &self.output
    }
}

impl Run {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// The exit code, or None when a signal ended the process.
    pub fn code(&self) -> Option<i32> {
        self.output.status.code()
    }

    /// stdout and stderr together, for "the message names X" checks.
    pub fn all_output(&self) -> String {
        format!("{}\n{}", self.stdout_str(), self.stderr_str())
    }

    /// A report of the command, its exit status and its output.
    pub fn report(&self) -> String {
        format!(
            "command: {}\nstatus: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command,
            self.output.status,
            self.stdout_str(),
            self.stderr_str()
        )
    }

    #[track_caller]
    pub fn assert_ok(self) -> Self {
        assert!(
            self.output.status.success(),
            "command failed\n{}",
            self.report()
        );
        self
    }

    #[track_caller]
    pub fn assert_exit(self, code: i32) -> Self {
        assert_eq!(
            self.code(),
            Some(code),
            "expected exit code {code}\n{}",
            self.report()
        );
        self
    }

    /// Asserts the command exited with a non-zero code (not killed by a signal).
    #[track_caller]
    pub fn assert_failed(self) -> Self {
        assert!(
            matches!(self.code(), Some(c) if c != 0),
            "expected a non-zero exit code\n{}",
            self.report()
        );
        self
    }

    /// Asserts stdout+stderr contain `needle` (case-insensitive).
    #[track_caller]
    pub fn assert_mentions(self, needle: &str) -> Self {
        assert!(
            self.all_output()
                .to_lowercase()
                .contains(&needle.to_lowercase()),
            "expected the output to mention {needle:?}\n{}",
            self.report()
        );
        self
    }

    /// Parses stdout as one JSON document.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.output.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON: {e}\n{}", self.report()))
    }
}
