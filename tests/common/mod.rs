//! Harness for the integration tests: real PostgreSQL clusters (15, or the major in
//! `PGSNAPFS_TEST_PG_MAJOR`: see [`test_major`]) driven by the real `pgsnapfs` binary,
//! everything run as the `postgres` user because the tests themselves run as root.
//!
//! - [`TestDir`]: a temp dir that `postgres` owns; removed on drop (after unmounting anything
//!   still mounted inside it), so a panicking test cleans up too.
//! - [`Cluster`] (in `cluster.rs`): initdb, start/stop, psql, pgbench, WAL switching, and
//!   servers started on restored data directories.
//! - [`pgsnapfs`] and friends run the binary and return a [`Run`] whose `assert_*` methods print
//!   the command, stdout and stderr when they fail.
//!
//! - One module per part, each re-exported so every name is `common::NAME`: `machine`
//!   (PostgreSQL's programs, the `postgres` user), `command` ([`Run`]), `binary` (pgsnapfs),
//!   `repo` ([`Repo`], [`Store`]), `dirs` ([`TestDir`]), `wait` (ports, [`wait_for`]),
//!   `digest` (tree digests) and `corruption` (flipping bytes of a repository).
//!
//! Nothing here skips: a missing PostgreSQL, `postgres` user or root privilege panics with a
//! message saying what to install.

// Each test binary uses a different part of the harness.
#![allow(dead_code)]

mod binary;
pub mod cluster;
mod command;
mod corruption;
mod digest;
mod dirs;
mod machine;
pub mod moto;
pub mod mount;
mod repo;
mod tmpfs;
mod wait;

#[allow(unused_imports)]
pub use binary::*;
#[allow(unused_imports)]
pub use command::*;
#[allow(unused_imports)]
pub use corruption::*;
#[allow(unused_imports)]
pub use digest::*;
#[allow(unused_imports)]
pub use dirs::*;
// Every name stays `common::NAME`; not every test binary uses all of them.
#[allow(unused_imports)]
pub use machine::*;
#[allow(unused_imports)]
pub use repo::*;
#[allow(unused_imports)]
pub use tmpfs::Tmpfs;
#[allow(unused_imports)]
pub use wait::*;

// Not every test binary uses all of them.
#[allow(unused_imports)]
pub use cluster::{Cluster, ClusterOptions, RecoveryState};

use std::collections::hash_map::RandomState;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
