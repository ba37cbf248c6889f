//! `pgsnapfs key add|list|remove`, and where the passphrase of an encrypted repository
//! comes from: `PGSNAPFS_PASSPHRASE`, `--passphrase-file` or `--passphrase-command`. Never a
//! command-line value: other users see those in `ps`.

use super::print_json;
use crate::error::{Error, Result};
use crate::passphrase::{self, read_secret, NEW_ENV};
use crate::store::{Repository, StoreError};
use std::path::PathBuf;
use zeroize::Zeroizing;

/// Where the passphrase (or key file) of an encrypted repository comes from.
#[derive(clap::Args, Clone, Default)]
pub struct PassphraseArgs {
    /// File holding the passphrase of an encrypted repository, or a key file (random bytes);
    /// otherwise PGSNAPFS_PASSPHRASE is used.
    #[arg(long, global = true)]
    pub passphrase_file: Option<PathBuf>,
    /// Command printing the passphrase on stdout (a KMS or Vault client), run by `sh -c`.
    #[arg(long, global = true, conflicts_with = "passphrase_file")]
    pub passphrase_command: Option<String>,
}

impl PassphraseArgs {
    pub fn source(&self) -> passphrase::Source {
        passphrase::Source {
            file: self.passphrase_file.clone(),
            command: self.passphrase_command.clone(),
        }
    }

    /// The passphrase, asked for only when the repository is encrypted.
    pub fn read(&self, location: &str) -> std::result::Result<Zeroizing<Vec<u8>>, StoreError> {
        self.source().read(location)
    }
}

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: KeyCommand,
}

#[derive(clap::Subcommand)]
pub enum KeyCommand {
    /// Add a key slot for a new passphrase, given by PGSNAPFS_NEW_PASSPHRASE,
    /// --new-passphrase-file or --new-passphrase-command (the current one opens the repository).
    Add {
        /// File holding the new passphrase.
        #[arg(long)]
        new_passphrase_file: Option<PathBuf>,
        /// Command printing the new passphrase on stdout, run by `sh -c`.
        #[arg(long, conflicts_with = "new_passphrase_file")]
        new_passphrase_command: Option<String>,
    },
    /// List the key slots.
    List {
        #[arg(long, help = super::JSON_HELP)]
        json: bool,
    },
    /// Remove a key slot; the passphrase given must open another slot.
    Remove {
        /// The slot's name, as `key list` shows it.
        slot: String,
    },
}

pub fn run(repo: &Repository, a: Args) -> Result<()> {
    if !repo.crypto().is_encrypted() {
        return Err(Error::BadInput(
            "this repository is not encrypted: it has no keys (create one with `pgsnapfs init --encryption`)"
                .into(),
        ));
    }
    match a.command {
        KeyCommand::Add {
            new_passphrase_file,
            new_passphrase_command,
        } => {
            let new = read_secret(
                new_passphrase_file.as_deref(),
                new_passphrase_command.as_deref(),
                NEW_ENV,
            )?
            .ok_or_else(|| {
                Error::BadInput(format!(
                    "no new passphrase: set {NEW_ENV}, or use --new-passphrase-file or \
                     --new-passphrase-command"
                ))
            })?;
            let slot = repo.add_key(&new)?;
            outln!("added key slot {}", slot.id);
        }
        KeyCommand::List { json } => {
            let slots = repo.key_slots()?;
            if json {
                #[derive(serde::Serialize)]
                struct Row<'a> {
                    id: &'a str,
                    created: chrono::DateTime<chrono::Utc>,
                    kdf: &'a crate::store::key::Kdf,
                    current: bool,
                }
                let rows: Vec<Row> = slots
                    .iter()
                    .map(|s| Row {
                        id: &s.id,
                        created: s.created,
                        kdf: &s.kdf,
                        current: repo.opened_with() == Some(s.id.as_str()),
                    })
                    .collect();
                print_json(&rows);
            } else {
                for s in &slots {
                    let current = if repo.opened_with() == Some(s.id.as_str()) {
                        "  (this passphrase)"
                    } else {
                        ""
                    };
                    outln!(
                        "{}  created {}  {} {} MiB × {}{current}",
                        s.id,
                        s.created.to_rfc3339(),
                        s.kdf.algorithm,
                        s.kdf.memory_kib / 1024,
                        s.kdf.iterations
                    );
                }
            }
        }
        KeyCommand::Remove { slot } => {
            repo.remove_key(&slot)?;
            outln!("removed key slot {slot}");
        }
    }
    Ok(())
}
