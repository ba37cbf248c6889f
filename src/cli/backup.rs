//! `pgsnapfs backup`

use super::progress::set_total;
use super::{human, print_json, progress};
use crate::backup::{self, BackupOptions};
use crate::error::Result;
use crate::server::ConnOpts;
use crate::store::Repository;
use std::path::PathBuf;

/// `-h` is the host, as in every PostgreSQL tool, so help is `--help` only.
#[derive(clap::Args)]
#[command(disable_help_flag = true)]
pub struct Args {
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// The server's data directory [env: PGDATA]
    #[arg(short = 'D', long, env = "PGDATA", hide_env = true)]
    pub pgdata: PathBuf,
    #[command(flatten)]
    pub conn: ConnOpts,
    /// Backup label shown by the server.
    #[arg(long)]
    pub label: Option<String>,
    /// Read and hash every file, even when the server's WAL summaries (PostgreSQL 17+,
    /// summarize_wal = on) say which blocks changed since the previous backup.
    #[arg(long)]
    pub full_read: bool,
    /// Print the backup record as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(repo: &Repository, a: Args) -> Result<()> {
    let bar = progress(None, "backing up");
    let (tick, sized) = (bar.clone(), bar.clone());
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let done = backup::run(
        repo,
        BackupOptions {
            pgdata: a.pgdata,
            conn: a.conn,
            label: a.label,
            threads,
            full_read: a.full_read,
            progress: Box::new(move |n| tick.inc(n)),
            total: Box::new(move |total| set_total(&sized, total)),
        },
    )?;
    bar.finish_and_clear();
    let snap = done.snapshot;
    if !done.config_outside.is_empty() {
        eprintln!(
            "the server's configuration is outside its data directory and not in this backup \
             (keep copies of it): {}",
            done.config_outside.join(", ")
        );
    }
    if a.json {
        print_json(&super::info::BackupRow::from(&snap));
    } else {
        outln!(
            "backup {} done: {} in {} files, {} newly stored, WAL {} – {} on timeline {}",
            snap.id,
            human(snap.size_logical),
            snap.files,
            human(snap.size_stored_new),
            snap.start_lsn,
            snap.stop_lsn,
            snap.timeline
        );
    }
    Ok(())
}
