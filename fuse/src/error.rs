//! The crate's one error type: a message plus the errno the kernel will see.
//! The errno is chosen where the error is made, never guessed later from how it was
//! wrapped, so a back-end failure stays EIO and a missing name stays ENOENT.

/// An error with an explicit errno (never derived from how it was wrapped).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    /// The errno replied to the kernel, e.g. `libc::ENOENT`.
    pub errno: i32,
    /// One line for logs, naming the object.
    pub message: String,
}

impl Error {
    /// An error with the given errno.
    pub fn new(errno: i32, message: impl Into<String>) -> Self {
        Self {
            errno,
            message: message.into(),
        }
    }

    /// EIO: corruption, a back-end failure, or a bug.
    pub fn io(message: impl Into<String>) -> Self {
        Self::new(libc::EIO, message)
    }

    /// ENOENT: no such file or directory.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(libc::ENOENT, message)
    }

    /// An I/O error with what was being done, keeping its errno.
    pub(crate) fn context(err: std::io::Error, what: impl std::fmt::Display) -> Self {
        Self::new(
            err.raw_os_error().unwrap_or(libc::EIO),
            format!("{what}: {err}"),
        )
    }

    /// An error whose message is the system's text for `errno`.
    pub(crate) fn from_errno(errno: i32) -> Self {
        Self::new(errno, std::io::Error::from_raw_os_error(errno).to_string())
    }
}

impl From<std::io::Error> for Error {
    /// Keeps the OS errno (ENOSPC from the scratch disk stays ENOSPC); anything else is EIO.
    fn from(err: std::io::Error) -> Self {
        Self::new(err.raw_os_error().unwrap_or(libc::EIO), err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_keep_their_errno() {
        let enospc = std::io::Error::from_raw_os_error(libc::ENOSPC);
        assert_eq!(Error::from(enospc).errno, libc::ENOSPC);
        let custom = std::io::Error::other("no errno here");
        assert_eq!(Error::from(custom).errno, libc::EIO);
    }
}
