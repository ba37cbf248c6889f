//! The library's error type and the CLI exit code each kind maps to.
//!
//! Exit codes (documented in docs/operations.md): 0 success, 1 the operation failed,
//! 2 bad input or usage, 3 corruption detected, 4 not found (wal-fetch of a missing file).

use crate::store::{BackendError, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Pg(#[from] crate::pg::Error),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("PostgreSQL: {what}: {message}")]
    Postgres {
        what: String,
        /// The server's own message (tokio-postgres displays only "db error").
        message: String,
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
    WalConflict { name: String, key: String },
    /// A backup's WAL is neither archived nor in the server's pg_wal.
    #[error(
        "WAL segment {name}, needed to restore this backup, is neither in the repository nor in \
         {pg_wal}; check archive_command"
    )]
    WalMissing { name: String, pg_wal: String },
    #[error(transparent)]
    Lease(#[from] crate::lock::LeaseError),
    /// Reading the data directory failed (the store's own errors are `Store`).
    #[error(transparent)]
    Ingest(crate::store::ingest::IngestError),
    /// The server could not be reached or would not let us in.
    #[error("cannot connect to PostgreSQL at {target}: {reason}")]
    Connect { target: String, reason: String },
    /// The server answered something pgsnapfs cannot use.
    #[error("server {0}")]
    BadAnswer(String),
    /// A file of the backup that a restore or view must rewrite cannot be rewritten.
    #[error("{0}")]
    CannotRewrite(String),
    /// Mounting or unmounting failed.
    #[error("{0}")]
    Mount(String),
    #[error("backup {backup} failed verification: {}", problems.join("; "))]
    VerifyFailed {
        backup: String,
        problems: Vec<String>,
    },
    /// gc stops before deleting anything when a backup cannot be read.
    #[error(
        "cannot read backup {id} ({source}); gc cannot tell which packs it uses and stops \
         without deleting anything. Remove or repair that backup first"
    )]
    GcBlocked {
        id: String,
        #[source]
        source: StoreError,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

impl From<BackendError> for Error {
    fn from(e: BackendError) -> Error {
        Error::Store(e.into())
    }
}

impl Error {
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
