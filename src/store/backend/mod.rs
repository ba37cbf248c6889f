//! Storage back ends: a plain object store of immutable, atomically written objects.
//!
//! Keys are `/`-separated paths such as `packs/ab/ab12…`; the repository layout lives in
//! `store::keys` only. `put` never replaces a different object: content-addressed objects
//! are idempotent to write, and anything else that collides is a bug worth stopping for.
//! `replace` is the one exception, for the few records that change in place (leases, and
//! snapshot manifests that gc points at repacked blobs).

pub mod killpoint;
mod local;
#[cfg(test)]
pub mod memory;
mod s3;

pub use local::{user_name, LocalBackend};
pub use s3::{RequestCounts, S3Backend, S3ConfigError, S3Settings};

/// Why a back-end call failed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The object does not exist.
    #[error("object {key} not found")]
    NotFound {
        /// The object's key.
        key: String,
    },
    /// `put` found a different object under the key (an identical one is not a conflict).
    #[error("object {key} already exists with different content")]
    Conflict {
        /// The object's key.
        key: String,
    },
    /// The repository's disk (or quota) is full.
    #[error(
        "no space left in the repository to {op} {key}: free space there, then run the command \
         again (backups already stored are intact)"
    )]
    NoSpace {
        /// The operation (`put`, `replace`, ...).
        op: &'static str,
        /// The object's key.
        key: String,
    },
    /// The operating system refused access to an object (local repositories).
    #[error("cannot {op} {key}: permission denied; {hint}")]
    Denied {
        /// The operation refused.
        op: &'static str,
        /// The object's key.
        key: String,
        /// What to do about it (for example, which user owns the repository).
        hint: String,
    },
    /// This user may not write to the repository (local repositories): nothing was written.
    #[error(
        "repository {location} belongs to {owner}, and {user} may not write to it: run the \
         command as {owner} (or as root, which writes as {owner})"
    )]
    WrongUser {
        /// The repository's location.
        location: String,
        /// The user owning the repository's directory.
        owner: String,
        /// The user running this command.
        user: String,
    },
    /// The store did not answer in time, lost the connection, or said it is busy or failing
    /// (S3 5xx, SlowDown): a later attempt may well work.
    #[error("{op} {key}: {message} (a transient failure: try again later)")]
    Unavailable {
        /// The request (`GET`, `PUT`, ...).
        op: &'static str,
        /// The object's key.
        key: String,
        /// The store's (or the connection's) message.
        message: String,
    },
    /// The store answered with an error that trying again would not fix (an S3 4xx other
    /// than those above, or 501): wrong credentials or permissions, an unsupported request.
    #[error("{op} {key}: {message}")]
    Refused {
        /// The request (`GET`, `PUT`, ...).
        op: &'static str,
        /// The object's key.
        key: String,
        /// The store's message, with its error code.
        message: String,
    },
    /// Another local I/O error; transient or not by its kind (see [`BackendError::is_transient`]).
    #[error("{op} {key}: {source}")]
    Io {
        /// The operation that failed.
        op: &'static str,
        /// The object's key (or the repository's path).
        key: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

impl BackendError {
    /// Whether the object asked for does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, BackendError::NotFound { .. })
    }

    /// Whether the same request may succeed later: the store or the way to it failed, not
    /// the request or the data.
    pub fn is_transient(&self) -> bool {
        use std::io::ErrorKind::*;
        match self {
            BackendError::Unavailable { .. } => true,
            BackendError::Io { source, .. } => matches!(
                source.kind(),
                TimedOut
                    | Interrupted
                    | WouldBlock
                    | ConnectionReset
                    | ConnectionAborted
                    | ConnectionRefused
                    | NotConnected
                    | BrokenPipe
            ),
            _ => false,
        }
    }
}

/// The result of a back-end call.
pub type Result<T> = std::result::Result<T, BackendError>;

/// An object store. Implementations are shared between threads.
pub trait Backend: Send + Sync {
    /// A human-readable location, for messages.
    fn location(&self) -> String;
    /// The whole object.
    fn get(&self, key: &str) -> Result<Vec<u8>>;
    /// Up to `len` bytes from `offset`; short only at the end of the object.
    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>>;
    /// Stores `data` under `key` atomically and durably. Succeeds if an identical object is
    /// already there; fails with `Conflict` if a different one is.
    fn put(&self, key: &str, data: &[u8]) -> Result<()>;
    /// `put`, saying whether this call created the object (`false`: an identical one was
    /// already there). Back ends that cannot tell from the write itself ask first.
    fn put_new(&self, key: &str, data: &[u8]) -> Result<bool> {
        let existed = self.exists(key)?;
        self.put(key, data)?;
        Ok(!existed)
    }
    /// Stores `data` under `key` atomically and durably, replacing any object there: a reader
    /// sees the old bytes or the new, never a mix.
    fn replace(&self, key: &str, data: &[u8]) -> Result<()>;
    /// All keys under `prefix` (a directory-like prefix ending in `/`, or empty), sorted.
    fn list(&self, prefix: &str) -> Result<Vec<String>>;
    /// The keys under `prefix` that sort after `start_after` (byte order), sorted: the tail
    /// of a listing, so that an index of older keys needs only what came since.
    fn list_after(&self, prefix: &str, start_after: &str) -> Result<Vec<String>>;
    /// Deletes an object: gone for every later reader once this returns.
    fn delete(&self, key: &str) -> Result<()>;
    /// Whether `key` exists.
    fn exists(&self, key: &str) -> Result<bool>;
    /// The object's length in bytes (`check` needs it to find a pack's entry table).
    fn size(&self, key: &str) -> Result<u64>;
    /// Requests sent so far, for back ends that pay per request (S3).
    fn stats(&self) -> Option<RequestCounts> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `list_after` keeps to its prefix and starts strictly after the key given, which need
    /// not exist.
    fn lists_after(b: &dyn Backend) {
        for k in ["w/1/a", "w/1/b", "w/1/c", "w/2/a", "w/20", "x/a"] {
            b.put(k, k.as_bytes()).unwrap();
        }
        let after = |p, a| b.list_after(p, a).unwrap();
        assert_eq!(after("w/", "w/1/b"), ["w/1/c", "w/2/a", "w/20"]);
        assert_eq!(after("w/1/", "w/1/a"), ["w/1/b", "w/1/c"]);
        assert_eq!(after("w/1/", "w/1/bb"), ["w/1/c"]);
        assert_eq!(after("w/1/", ""), ["w/1/a", "w/1/b", "w/1/c"]);
        assert_eq!(after("w/", "w/1/~"), ["w/2/a", "w/20"]);
        assert!(after("w/1/", "w/1/c").is_empty());
        assert!(after("nope/", "").is_empty());
    }

    #[test]
    fn list_after_on_local_and_memory() {
        let dir = tempfile::tempdir().unwrap();
        lists_after(&LocalBackend::open(dir.path()));
        lists_after(&memory::MemoryBackend::default());
    }

    #[test]
    fn transient_failures() {
        let io = |kind| BackendError::Io {
            op: "get",
            key: "k".into(),
            source: std::io::Error::from(kind),
        };
        let unavailable = BackendError::Unavailable {
            op: "list",
            key: "systems/".into(),
            message: "timed out".into(),
        };
        assert!(unavailable.is_transient());
        assert!(
            unavailable.to_string().contains("try again"),
            "{unavailable}"
        );
        assert!(io(std::io::ErrorKind::TimedOut).is_transient());
        assert!(io(std::io::ErrorKind::ConnectionReset).is_transient());
        assert!(!io(std::io::ErrorKind::Other).is_transient());
        assert!(!io(std::io::ErrorKind::InvalidData).is_transient());
        assert!(!BackendError::NotFound { key: "k".into() }.is_transient());
        let refused = BackendError::Refused {
            op: "get",
            key: "k".into(),
            message: "AccessDenied: denied (HTTP 403)".into(),
        };
        assert!(!refused.is_transient());
        assert_eq!(
            refused.to_string(),
            "get k: AccessDenied: denied (HTTP 403)"
        );
        let store: crate::store::StoreError = unavailable.into();
        assert!(store.is_transient());
        assert!(!crate::store::StoreError::corrupt("k", "bad").is_transient());
    }
}
