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
pub mod pack;
mod packer;
mod repo;
pub mod snapshot;
pub mod tree;

pub use backend::{Backend, BackendError};
pub use id::Id;
pub use packer::{random_id, Packer};
pub use repo::{open_backend, Config, Repository};

/// Errors of the chunk store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("{object} is corrupt: {reason}")]
    Corrupt { object: String, reason: String },
    #[error(
        "{0} is not a pgsnapfs repository (no config object); create one with `pgsnapfs init`"
    )]
    NotARepository(String),
    #[error("{location} is not empty; `pgsnapfs init` needs an empty or missing location")]
    NotEmpty { location: String },
    #[error(
        "repository {location} has format version {found}, but this pgsnapfs reads version {supported}; use a newer pgsnapfs"
    )]
    Version {
        location: String,
        found: u32,
        supported: u32,
    },
    #[error("backup {0} not found; `pgsnapfs list` shows the backups")]
    NoSuchBackup(String),
    #[error("invalid repository setting: {0}")]
    BadSetting(String),
    #[error(
        "repository {0} is encrypted: give its passphrase in PGSNAPFS_PASSPHRASE, with --passphrase-file or with --passphrase-command"
    )]
    NeedKey(String),
    #[error(
        "no key slot of repository {0} opens with this passphrase: check the passphrase (or key file) given; `pgsnapfs key list` shows the slots. If the passphrase is right, the config or key slots are damaged"
    )]
    WrongKey(String),
}

impl StoreError {
    pub fn corrupt(object: impl Into<String>, reason: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            object: object.into(),
            reason: reason.into(),
        }
    }
}
