//! `pgsnapfs copy`

use super::progress::set_total;
use super::{human, open_with, print_json, progress};
use crate::copy::{self, CopyOptions, Selection};
use crate::error::{Error, Result};
use crate::passphrase::read_secret;
use std::path::PathBuf;

/// The environment variables holding the two repositories' passphrases when no file or
/// command is given.
const FROM_ENV: &str = "PGSNAPFS_FROM_PASSPHRASE";
const TO_ENV: &str = "PGSNAPFS_TO_PASSPHRASE";

#[derive(clap::Args)]
pub struct Args {
    /// The repository to copy from: a directory, or s3://bucket/prefix.
    #[arg(long)]
    pub from: String,
    /// The repository to copy into (created beforehand with `pgsnapfs init`).
    #[arg(long)]
    pub to: String,
    /// The backup to copy: its id, `latest`, or `all`.
    #[arg(long, default_value = "all")]
    pub backup: String,
    /// Copy all the archived WAL (with its summaries and drop markers) the target lacks; without
    /// it, only the WAL each copied backup needs to be restored (its start to its stop).
    #[arg(long)]
    pub wal: bool,
    /// File holding the source's passphrase (or key file); otherwise PGSNAPFS_FROM_PASSPHRASE.
    #[arg(long)]
    pub from_passphrase_file: Option<PathBuf>,
    /// Command printing the source's passphrase on stdout, run by `sh -c`.
    #[arg(long, conflicts_with = "from_passphrase_file")]
    pub from_passphrase_command: Option<String>,
    /// File holding the target's passphrase (or key file); otherwise PGSNAPFS_TO_PASSPHRASE.
    #[arg(long)]
    pub to_passphrase_file: Option<PathBuf>,
    /// Command printing the target's passphrase on stdout, run by `sh -c`.
    #[arg(long, conflicts_with = "to_passphrase_file")]
    pub to_passphrase_command: Option<String>,
    /// Print what was copied as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args, global: &super::key::PassphraseArgs) -> Result<()> {
    if global.passphrase_file.is_some() || global.passphrase_command.is_some() {
        return Err(Error::BadInput(
            "copy opens two repositories: give their passphrases with --from-passphrase-file \
             and --to-passphrase-file (or the -command options), not --passphrase-file"
                .into(),
        ));
    }
    let secret = |file: &Option<PathBuf>, command: &Option<String>, env: &'static str| {
        let (file, command) = (file.clone(), command.clone());
        move |location: &str| {
            read_secret(file.as_deref(), command.as_deref(), env)?
                .ok_or_else(|| crate::store::StoreError::NeedKey(location.to_string()))
        }
    };
    let from = open_with(
        &a.from,
        &secret(
            &a.from_passphrase_file,
            &a.from_passphrase_command,
            FROM_ENV,
        ),
    )?;
    let to = open_with(
        &a.to,
        &secret(&a.to_passphrase_file, &a.to_passphrase_command, TO_ENV),
    )?;
    let backups = match a.backup.as_str() {
        "all" => Selection::All,
        "" => {
            return Err(Error::BadInput(
                "--backup needs an id, latest or all".into(),
            ))
        }
        id => Selection::One(id.to_string()),
    };
    let bar = progress(None, "copying");
    let (tick, sized) = (bar.clone(), bar.clone());
    let done = copy::run(
        &from,
        &to,
        CopyOptions {
            backups,
            wal: a.wal,
            total: Box::new(move |total| set_total(&sized, total)),
            progress: Box::new(move |n| tick.inc(n)),
        },
    )?;
    bar.finish_and_clear();
    if a.json {
        print_json(&done);
        return Ok(());
    }
    for id in &done.backups_copied {
        outln!("copied backup {id}");
    }
    outln!(
        "{} backups copied ({} already there): {} sent in {} chunks ({} of packs), {} not sent",
        done.backups_copied.len(),
        done.backups_present.len(),
        human(done.bytes_sent),
        done.chunks_sent,
        human(done.pack_bytes_written),
        human(done.bytes_skipped)
    );
    outln!(
        "WAL: {} files copied ({}), {} already there",
        done.wal_files_sent,
        human(done.wal_bytes_sent),
        done.wal_files_present
    );
    Ok(())
}
