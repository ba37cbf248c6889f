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
    #[error("{0}")]
    Failed(String),
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
