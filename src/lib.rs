//! pgsnapfs: PostgreSQL base backups and archived WAL in a content-addressed chunk store,
//! restorable to any point in time and mountable as a data directory.
//!
//! `store` knows nothing of PostgreSQL and `pg` nothing of the store; `backup`, `archive`,
//! `pitr` and `restore` join the two, and `cli` only parses and prints.

#![deny(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]

pub mod archive;
pub mod archiver;
pub mod backup;
pub mod catalog;
pub mod check;
pub mod cli;
pub mod clone;
pub mod copy;
pub mod delta;
pub mod dump;
pub mod error;
pub mod expire;
pub mod foreign;
pub mod fromarchive;
pub mod gc;
pub mod hydrate;
pub mod import;
pub mod info;
pub mod init;
pub mod lock;
pub mod mapped;
pub mod metrics;
pub mod mount;
pub mod namespace;
pub mod passphrase;
pub mod pg;
pub mod pgbackrest;
pub mod pitr;
pub mod prefetch;
pub mod receive;
pub mod restore;
pub mod retention;
pub mod server;
pub mod session;
pub mod spool;
pub mod standby;
pub mod status;
pub mod store;
pub mod targetlocks;
pub mod tblspc;
pub mod timelines;
pub mod verified;
pub mod verify;
pub mod view;
pub mod walfetch;
pub mod walindex;
pub mod walpath;

pub use error::{Error, Result};
