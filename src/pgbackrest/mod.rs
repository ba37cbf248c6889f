//! Reading pgBackRest repositories (a local directory), as pgBackRest 2.x writes them:
//!
//! - `backup/<stanza>/backup.info` lists the backups; `archive/<stanza>/archive.info` the
//!   clusters (db ids) whose WAL is archived (`ini`, `info`);
//! - `backup/<stanza>/<label>/backup.manifest` lists a backup's files, each with its size,
//!   SHA-1, and where it is: in this backup or (`reference`) an earlier one, as a file
//!   `pg_data/<path><ext>` or at an offset of a bundle `bundle/<id>` (`manifest`);
//! - every file is one compressed stream (`compress`): none, gz, zst, lz4 or bz2;
//! - WAL is `archive/<stanza>/<version>-<db id>/<first 16 hex>/<segment>-<sha1><ext>` (`wal`).
//!
//! Everything read is checked against what pgBackRest recorded (the info files' checksums,
//! each file's SHA-1 and size): a mismatch is [`Error::Corrupt`] naming the file and the
//! repository object. Encrypted repositories (`cipher`) and block-incremental files
//! (`block`, pgBackRest 2.45's format) are read. Lengths, sizes and names read from the
//! repository are checked before they are used: damage is an error, never a panic, a loop or
//! an unbounded allocation.

pub mod block;
pub mod cipher;
pub mod compress;
pub mod info;
pub mod ini;
pub mod manifest;
pub mod repo;
pub mod wal;

pub use repo::PgbrRepo;

/// What reading a pgBackRest repository can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An object does not hold what pgBackRest recorded, or cannot be parsed.
    #[error("pgBackRest repository object {object} is corrupt: {reason}")]
    Corrupt {
        /// The repository object (a path below the repository).
        object: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An object the repository should hold is not there.
    #[error("pgBackRest repository object {object} is missing{why}")]
    Missing {
        /// The repository object.
        object: String,
        /// Why it was needed (starts with ", " when not empty).
        why: String,
    },
    /// An encrypted repository's passphrase is missing or wrong.
    #[error("{0}")]
    Passphrase(String),
    /// The repository uses a feature this pgsnapfs cannot read.
    #[error("{0}")]
    Unsupported(String),
    /// An object could not be read.
    #[error("read pgBackRest repository object {object}: {source}")]
    Io {
        /// The repository object.
        object: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// A corruption of `object`.
    pub fn corrupt(object: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::Corrupt {
            object: object.into(),
            reason: reason.into(),
        }
    }

    /// The CLI's exit code: 3 corruption, 4 missing, 2 unsupported or no passphrase, 1
    /// unreadable.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Corrupt { .. } => 3,
            Error::Missing { .. } => 4,
            Error::Unsupported(_) | Error::Passphrase(_) => 2,
            Error::Io { .. } => 1,
        }
    }
}
