//! PostgreSQL on-disk formats that pgsnapfs reads and writes: LSNs, WAL file
//! names and records, timeline history, pg_control, backup_label, the
//! base-backup file layout, recovery settings, and WAL-summary changes.
//! Decision: pure functions over bytes and text; callers do the I/O, so every
//! format is unit-tested without a server.
//! Version-specific facts for majors 13–18 live only in `version`.

pub mod control;
pub mod error;
pub mod history;
pub mod label;
pub mod layout;
pub mod lsn;
pub mod pgclass;
pub mod pgpass;
pub mod recovery;
pub mod summary;
pub mod target;
pub mod version;
pub mod wal;
pub mod walscan;

pub use error::Error;

/// Size of a relation data page (BLCKSZ) in a default build.
pub const PAGE_SIZE: usize = 8192;
