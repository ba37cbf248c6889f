//! The content-addressed chunk store: back ends, packs, trees, snapshots and the repository.
//!
//! Data flows chunk → pack → tree → snapshot, and is written in that order: a snapshot
//! manifest is written only once everything it references is durable, so a crash never makes
//! a partial backup visible. See docs/repository-format.md.

pub mod backend;
pub mod cache;
pub mod crypto;
pub mod diskcache;
mod id;
pub mod ingest;
pub mod key;
pub mod keys;
pub mod object;
mod objects;
pub mod pack;
mod packer;
pub mod reader;
mod repo;
pub mod snapshot;
pub mod tree;

pub use backend::{Backend, BackendError};
pub use id::{BlobId, PackId};
pub use objects::PackListing;
pub use packer::{random_id, Packer};
pub use repo::{open_backend, Config, Repository, Verification, MAX_CHUNK_SIZE};

/// Errors of the chunk store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A back-end call failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// An object's content is not what was written: a bad digest, a truncated or undecodable object.
    #[error("{object} is corrupt: {reason}")]
    Corrupt {
        /// The object's key (or a description of it).
        object: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The location has no `config` object.
    #[error(
        "{0} is not a pgsnapfs repository (no config object); create one with `pgsnapfs init`"
    )]
    NotARepository(String),
    /// `init` found objects already there.
    #[error("{location} is not empty; `pgsnapfs init` needs an empty or missing location")]
    NotEmpty {
        /// The repository's location.
        location: String,
    },
    /// The repository's format is newer than this binary reads.
    #[error(
        "repository {location} has format version {found}, but this pgsnapfs reads version {supported}; use a newer pgsnapfs"
    )]
    Version {
        /// The repository's location.
        location: String,
        /// The format version in its config.
        found: u32,
        /// The newest format version this binary reads.
        supported: u32,
    },
    /// No snapshot has this id.
    #[error("backup {0} not found; `pgsnapfs list` shows the backups")]
    NoSuchBackup(String),
    /// A repository setting (in config or given at init) is out of range.
    #[error("invalid repository setting: {0}")]
    BadSetting(String),
    /// The repository is encrypted and no passphrase was given.
    #[error(
        "repository {0} is encrypted: give its passphrase in PGSNAPFS_PASSPHRASE, with --passphrase-file or with --passphrase-command"
    )]
    NeedKey(String),
    /// No key slot opens with the passphrase given.
    #[error(
        "no key slot of repository {0} opens with this passphrase: check the passphrase (or key file) given; `pgsnapfs key list` shows the slots. If the passphrase is right, the config or key slots are damaged"
    )]
    WrongKey(String),
    /// A bug, not a fault of the data: one of pgsnapfs's own threads panicked.
    #[error("internal error: a {worker} worker panicked ({message}); nothing was published, please report this as a bug")]
    WorkerPanicked {
        /// Which worker (for example `ingest`, `restore`).
        worker: &'static str,
        /// The panic's message.
        message: String,
    },
}

impl StoreError {
    /// A [`StoreError::Corrupt`] for `object`, with `reason`.
    pub fn corrupt(object: impl Into<String>, reason: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            object: object.into(),
            reason: reason.into(),
        }
    }

    /// Whether a later attempt may succeed (see [`BackendError::is_transient`]).
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Backend(e) if e.is_transient())
    }

    /// The error for a `worker` thread that panicked with `payload` (from `JoinHandle::join`).
    pub fn worker_panicked(
        worker: &'static str,
        payload: &(dyn std::any::Any + Send),
    ) -> StoreError {
        StoreError::WorkerPanicked {
            worker,
            message: panic_message(payload),
        }
    }
}

/// The message a panic was raised with: `panic!` gives a `&str` or a `String`.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "no message".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_panic_names_worker_and_message() {
        for payload in [
            std::panic::catch_unwind(|| panic!("static text")).unwrap_err(),
            std::panic::catch_unwind(|| panic!("formatted {}", 7)).unwrap_err(),
        ] {
            let e = StoreError::worker_panicked("ingest", &*payload);
            let shown = e.to_string();
            assert!(shown.contains("ingest worker panicked"), "{shown}");
            assert!(
                shown.contains("static text") || shown.contains("formatted 7"),
                "{shown}"
            );
        }
        let odd = std::panic::catch_unwind(|| std::panic::panic_any(3u8)).unwrap_err();
        assert!(StoreError::worker_panicked("restore", &*odd)
            .to_string()
            .contains("no message"));
    }
}
