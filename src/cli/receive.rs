//! `pgsnapfs wal-receive`

use crate::error::Result;
use crate::receive::{self, Options};
use crate::retention::parse_duration;
use crate::server::ConnOpts;
use crate::store::Repository;
use std::time::Duration;

/// `-h` is the host, as in every PostgreSQL tool, so help is `--help` only.
#[derive(clap::Args)]
#[command(disable_help_flag = true)]
pub struct Args {
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// The server to stream from (libpq options; PGHOST, PGPORT, PGUSER, PGPASSWORD and the
    /// password file fill the gaps). The role needs the REPLICATION attribute.
    #[command(flatten)]
    pub conn: ConnOpts,
    /// Stream from this physical replication slot: the server keeps the WAL the receiver has
    /// not stored, also while it is down (watch pg_replication_slots).
    #[arg(long)]
    pub slot: Option<String>,
    /// Create the slot (--slot) if it does not exist.
    #[arg(long, requires = "slot")]
    pub create_slot: bool,
    /// Store the segment being received at least this often (s, m, h).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10s")]
    pub flush_interval: Duration,
    /// Act as a synchronous standby: store every burst of WAL at once and only then report
    /// it flushed, so synchronous_commit waits for the repository.
    #[arg(long)]
    pub synchronous: bool,
    /// The application_name the server sees, for synchronous_standby_names.
    #[arg(long, default_value = "pgsnapfs")]
    pub application_name: String,
    /// When the server no longer has the WAL that follows what the repository holds, start
    /// at the server's current position instead of failing (exit 4): the WAL between is lost
    /// to the archive, so take a new backup.
    #[arg(long)]
    pub accept_gap: bool,
}

pub fn run(repo: &Repository, a: Args) -> Result<()> {
    receive::run(
        repo,
        &Options {
            conn: a.conn,
            slot: a.slot,
            create_slot: a.create_slot,
            flush_interval: a.flush_interval,
            synchronous: a.synchronous,
            application_name: a.application_name,
            accept_gap: a.accept_gap,
        },
    )
}
