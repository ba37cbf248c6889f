//! Standard output for every command, through `outln!`/`out!`.
//!
//! Decision: a closed pipe (`pgsnapfs list --json | head -1`) must end quietly, not panic as
//! `println!` does. Restoring SIGPIPE's default action would do that for free, but it would
//! also kill a mount or an S3 transfer on any write to a closed socket instead of returning
//! EPIPE. Exiting on the spot would skip the destructors that release leases and unmount. So
//! the first failed write only stops further output; the command finishes its work as if
//! nobody had closed the pipe, and `main` exits with its usual status (0 for a reader that
//! left early, like ripgrep). Another write error (a full disk behind `>`) fails the command.

use std::io::{ErrorKind, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

static CLOSED: AtomicBool = AtomicBool::new(false);
static FAILED: OnceLock<String> = OnceLock::new();

/// Writes to stdout, unless an earlier write failed.
pub fn write(args: std::fmt::Arguments) {
    if CLOSED.load(Ordering::Relaxed) {
        return;
    }
    if let Err(e) = std::io::stdout().lock().write_fmt(args) {
        CLOSED.store(true, Ordering::Relaxed);
        if e.kind() != ErrorKind::BrokenPipe {
            let _ = FAILED.set(e.to_string());
        }
    }
}

/// Why output was lost, if it was for another reason than a reader that went away.
pub fn failure() -> Option<&'static str> {
    // What is still buffered goes out now, so its error is seen too.
    if !CLOSED.load(Ordering::Relaxed) {
        if let Err(e) = std::io::stdout().lock().flush() {
            CLOSED.store(true, Ordering::Relaxed);
            if e.kind() != ErrorKind::BrokenPipe {
                let _ = FAILED.set(e.to_string());
            }
        }
    }
    FAILED.get().map(String::as_str)
}
