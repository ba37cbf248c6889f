//! The library's error type and the CLI exit code each kind maps to.
//!
//! Exit codes (documented in docs/operations.md): 0 success, 1 the operation failed,
//! 2 bad input or usage, 3 corruption detected, 4 not found (wal-fetch of a missing file).

use crate::store::{BackendError, StoreError};

/// Everything a pgsnapfs command can fail with; [`Error::exit_code`] maps each kind to the CLI's exit code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The chunk store failed (back end, corruption, missing repository or key).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A PostgreSQL file, name or setting is malformed.
    #[error(transparent)]
    Pg(#[from] crate::pg::Error),
    /// A local file or directory could not be read or written.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, on which path (the start of the message).
        what: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The server refused or failed a query.
    #[error("PostgreSQL: {what}: {message}")]
    Postgres {
        /// The query or step that failed (the start of the message).
        what: String,
        /// The server's own message (tokio-postgres displays only "db error").
        message: String,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The input cannot work: a wrong path, target or option. Nothing was changed.
    #[error("{0}")]
    BadInput(String),
    /// What was asked for is not in the repository.
    #[error("{0}")]
    NotFound(String),
    /// A WAL file is already archived with other content.
    #[error(
        "{name} is already archived in {key} with different content; refusing to overwrite it. \
         Two clusters may be archiving into one place, or this file is damaged: compare the two \
         before doing anything else"
    )]
    WalConflict {
        /// The WAL file's name.
        name: String,
        /// The repository key it is archived under.
        key: String,
    },
    /// A backup's WAL is neither archived nor in the server's pg_wal.
    #[error(
        "WAL segment {name}, needed to restore this backup, is neither in the repository nor in \
         {pg_wal}; check archive_command"
    )]
    WalMissing {
        /// The segment's file name.
        name: String,
        /// The server's pg_wal directory that was searched.
        pg_wal: String,
    },
    /// Another command holds the repository's lease, or the lease could not be taken or kept.
    #[error(transparent)]
    Lease(#[from] crate::lock::LeaseError),
    /// Reading the data directory failed (the store's own errors are `Store`).
    #[error(transparent)]
    Ingest(crate::store::ingest::IngestError),
    /// The server could not be reached or would not let us in.
    #[error("cannot connect to PostgreSQL at {target}: {reason}")]
    Connect {
        /// The connection target (host, port, database), for the message.
        target: String,
        /// Why the connection failed, from the driver or the server.
        reason: String,
    },
    /// The server answered something pgsnapfs cannot use.
    #[error("server {0}")]
    BadAnswer(String),
    /// A file of the backup that a restore or view must rewrite cannot be rewritten.
    #[error("{0}")]
    CannotRewrite(String),
    /// Mounting or unmounting failed.
    #[error("{0}")]
    Mount(String),
    /// A backup read back does not match what was stored (`backup --verify`).
    #[error("backup {backup} failed verification: {}", problems.join("; "))]
    VerifyFailed {
        /// The backup's id.
        backup: String,
        /// Each problem found, one line each.
        problems: Vec<String>,
    },
    /// gc stops before deleting anything when a backup cannot be read.
    #[error(
        "cannot read backup {id} ({source}); gc cannot tell which packs it uses and stops \
         without deleting anything. Remove or repair that backup first"
    )]
    GcBlocked {
        /// The backup that cannot be read.
        id: String,
        /// Why it cannot be read.
        #[source]
        source: StoreError,
    },
    /// The server replaying WAL for `backup --from-archive` failed; with its log lines.
    #[error("replay failed: {0}")]
    Replay(String),
    /// A gc of the target condemned packs a copy reuses while it ran: nothing was published.
    #[error(
        "a gc of the target condemned packs the copy of backup {backup} reuses while it ran; \
         that backup was not published: run copy again"
    )]
    CopyRaced {
        /// The backup whose manifest was not written.
        backup: String,
    },
    /// The spool of asynchronous archiving cannot take a file (full), or its pusher keeps failing.
    #[error("{0}")]
    ArchiveQueue(String),
    /// A pgBackRest repository could not be read, or holds damaged objects.
    #[error(transparent)]
    Pgbackrest(#[from] crate::pgbackrest::Error),
    /// SIGINT or SIGTERM (the number) stopped the command after it cleaned up.
    #[error(
        "interrupted by signal {0}: the test server was stopped and the view unmounted; \
         nothing was recorded"
    )]
    Interrupted(i32),
}

/// The library's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl From<BackendError> for Error {
    fn from(e: BackendError) -> Error {
        Error::Store(e.into())
    }
}

impl Error {
    /// The CLI exit code for this error: 1 failed, 2 bad input, 3 corruption, 4 not found,
    /// 128 + the signal's number when interrupted (130 for SIGINT, 143 for SIGTERM), as shells
    /// report a command a signal ended.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Store(StoreError::Corrupt { .. }) => 3,
            Error::Store(
                StoreError::NotARepository(_)
                | StoreError::NotEmpty { .. }
                | StoreError::Version { .. }
                | StoreError::NoSuchBackup(_)
                | StoreError::BadSetting(_)
                | StoreError::NeedKey(_)
                | StoreError::WrongKey(_)
                | StoreError::Backend(BackendError::WrongUser { .. }),
            )
            | Error::BadInput(_) => 2,
            Error::NotFound(_) => 4,
            Error::Pgbackrest(e) => e.exit_code(),
            Error::Interrupted(sig) => u8::try_from(128 + sig).unwrap_or(1),
            _ => 1,
        }
    }
}

/// Wraps an I/O error with what was being done, for `map_err`.
pub fn io(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io {
        what: what.to_string(),
        source,
    }
}
