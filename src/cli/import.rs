//! `pgsnapfs import`

use super::progress::set_total;
use super::{human, print_json, progress};
use crate::error::{Error, Result};
use crate::import::{self, Options};
use crate::store::Repository;
use std::path::PathBuf;

/// The arguments of `pgsnapfs import`.
#[derive(clap::Args)]
pub struct Args {
    /// The repository to import from: pgbackrest:PATH, PATH being pgBackRest's repo1-path.
    #[arg(long)]
    pub from: String,
    /// The pgBackRest stanza.
    #[arg(long)]
    pub stanza: String,
    /// One backup by its pgBackRest label, or all (the default). Backups imported before are
    /// skipped.
    #[arg(long, default_value = "all")]
    pub backup: String,
    /// Also import all the archived WAL, not only the WAL each backup needs.
    #[arg(long)]
    pub wal: bool,
    /// File holding the pgBackRest repository's passphrase (repo1-cipher-pass), if it is
    /// encrypted; otherwise PGBACKREST_REPO1_CIPHER_PASS is used.
    #[arg(long)]
    pub from_passphrase_file: Option<PathBuf>,
    /// Command printing that passphrase on stdout, run by `sh -c`.
    #[arg(long, conflicts_with = "from_passphrase_file")]
    pub from_passphrase_command: Option<String>,
    /// Print what was imported as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// pgBackRest's own variable for `repo1-cipher-pass`.
pub(super) const PGBACKREST_PASS_ENV: &str = "PGBACKREST_REPO1_CIPHER_PASS";

/// The directory a `pgbackrest:PATH` source names.
fn source_path(from: &str) -> Result<PathBuf> {
    match from.strip_prefix("pgbackrest:") {
        Some(path) if !path.is_empty() => Ok(PathBuf::from(path)),
        _ => Err(Error::BadInput(format!(
            "--from {from:?}: expected pgbackrest:PATH, PATH being the pgBackRest repository's \
             directory (repo1-path)"
        ))),
    }
}

pub fn run(repo: &Repository, a: Args) -> Result<()> {
    let bar = progress(None, "importing");
    let (tick, sized) = (bar.clone(), bar.clone());
    let summary = import::run(
        repo,
        &Options {
            from: source_path(&a.from)?,
            stanza: a.stanza.clone(),
            passphrase: crate::passphrase::read_secret(
                a.from_passphrase_file.as_deref(),
                a.from_passphrase_command.as_deref(),
                PGBACKREST_PASS_ENV,
            )?,
            backup: (a.backup != "all").then(|| a.backup.clone()),
            wal: a.wal,
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            total: Box::new(move |total| set_total(&sized, total)),
            progress: Box::new(move |n| tick.inc(n)),
        },
    )?;
    bar.finish_and_clear();
    if a.json {
        print_json(&summary);
        return Ok(());
    }
    for (label, id) in &summary.skipped {
        outln!("{label}: already imported as backup {id}");
    }
    for b in &summary.imported {
        outln!(
            "{}: imported as backup {} ({}, {} in {} files, {} read and checked, {} newly stored)",
            b.label,
            b.id,
            b.kind,
            human(b.bytes),
            b.files,
            human(b.bytes_read),
            human(b.stored_new)
        );
    }
    outln!(
        "stanza {}: {} backups imported, {} already there; WAL files: {} archived, {} already there",
        summary.stanza,
        summary.imported.len(),
        summary.skipped.len(),
        summary.wal_stored,
        summary.wal_present
    );
    Ok(())
}
