//! pgsnapfs: PostgreSQL base backups and archived WAL in a content-addressed chunk store,
//! restorable to any point in time and mountable as a data directory.
//!
//! `store` knows nothing of PostgreSQL; `pg` knows nothing of the store; the commands
//! (`backup`, `archive`, `restore`, …) join the two.

pub mod store;
pub mod error;
pub mod server;
pub use error::{Error, Result};
// TEMP STUB until src/pg lands
pub mod pg {
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
    pub struct Lsn(pub u64);
    impl std::str::FromStr for Lsn { type Err = (); fn from_str(_: &str) -> Result<Lsn, ()> { Err(()) } }
    #[derive(Debug, thiserror::Error)] #[error("x")] pub struct Error;
}
