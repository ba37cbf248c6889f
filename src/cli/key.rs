//! `pgsnapfs key add|list|remove`, and where the passphrase of an encrypted repository
//! comes from: `PGSNAPFS_PASSPHRASE`, `--passphrase-file` or `--passphrase-command`. Never a
//! command-line value: other users see those in `ps`.

use super::print_json;
use crate::error::{io, Error, Result};
use crate::passphrase::{self, read_secret, NEW_ENV};
use crate::store::key::{new_key_file, Kdf};
use crate::store::{Repository, StoreError};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Where the passphrase (or key file) of an encrypted repository comes from.
#[derive(clap::Args, Clone, Default)]
pub struct PassphraseArgs {
    /// File holding the passphrase of an encrypted repository, or a key file made by
    /// `key add --new-key-file` (no key stretching: for archive_command); otherwise
    /// PGSNAPFS_PASSPHRASE is used.
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
    /// --new-passphrase-file or --new-passphrase-command, or for a new key file made by
    /// --new-key-file (the current passphrase opens the repository).
    Add {
        /// File holding the new passphrase.
        #[arg(long)]
        new_passphrase_file: Option<PathBuf>,
        /// Command printing the new passphrase on stdout, run by `sh -c`.
        #[arg(long, conflicts_with = "new_passphrase_file")]
        new_passphrase_command: Option<String>,
        /// Create this file (mode 0600, never overwritten) holding a new random key, and add a
        /// slot it opens without key stretching: for archive_command and other commands run
        /// often by a service. Run this as the user who will read the file.
        #[arg(long, conflicts_with_all = ["new_passphrase_file", "new_passphrase_command"])]
        new_key_file: Option<PathBuf>,
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
            new_key_file: Some(path),
            ..
        } => {
            let content = new_key_file();
            write_key_file(&path, content.as_bytes())?;
            match repo.add_key(content.trim_end().as_bytes(), Kdf::key_file()) {
                Ok(slot) => outln!("added key slot {} for key file {}", slot.id, path.display()),
                Err(e) => {
                    // No slot opens with it: a file left behind would only mislead.
                    let _ = std::fs::remove_file(&path);
                    return Err(e.into());
                }
            }
        }
        KeyCommand::Add {
            new_passphrase_file,
            new_passphrase_command,
            new_key_file: None,
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
            let slot = repo.add_key(&new, Kdf::new_slot())?;
            outln!("added key slot {}", slot.id);
        }
        KeyCommand::List { json } => {
            let slots = repo.key_slots()?;
            if json {
                #[derive(serde::Serialize)]
                struct Row<'a> {
                    id: &'a str,
                    /// `passphrase` or `key_file`.
                    kind: &'static str,
                    created: chrono::DateTime<chrono::Utc>,
                    kdf: &'a Kdf,
                    current: bool,
                }
                let rows: Vec<Row> = slots
                    .iter()
                    .map(|s| Row {
                        id: &s.id,
                        kind: if s.kdf.is_stretched() {
                            "passphrase"
                        } else {
                            "key_file"
                        },
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
                    let kind = if s.kdf.is_stretched() {
                        format!(
                            "passphrase, {} {} MiB × {}",
                            s.kdf.algorithm,
                            s.kdf.memory_kib / 1024,
                            s.kdf.iterations
                        )
                    } else {
                        format!("key file, {}", s.kdf.algorithm)
                    };
                    outln!(
                        "{}  created {}  {kind}{current}",
                        s.id,
                        s.created.to_rfc3339()
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

/// Writes a new key file: created, never overwritten, readable by its owner only, fsynced.
fn write_key_file(path: &Path, content: &[u8]) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => Error::BadInput(format!(
                "{} already exists: a key file is never overwritten; choose another path",
                path.display()
            )),
            _ => io(format!("create key file {}", path.display()))(e),
        })?;
    let written = f.write_all(content).and_then(|()| f.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(path);
        return Err(io(format!("write key file {}", path.display()))(e));
    }
    Ok(())
}
