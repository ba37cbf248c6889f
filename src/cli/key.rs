//! `pgsnapfs key add|list|remove`, and where the passphrase of an encrypted repository
//! comes from: `PGSNAPFS_PASSPHRASE`, `--passphrase-file` or `--passphrase-command`. Never a
//! command-line value: other users see those in `ps`.

use super::print_json;
use super::restore::sh_quote;
use crate::error::{io, Error, Result};
use crate::store::{Repository, StoreError};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

const ENV: &str = "PGSNAPFS_PASSPHRASE";
const NEW_ENV: &str = "PGSNAPFS_NEW_PASSPHRASE";

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
    /// The passphrase, asked for only when the repository is encrypted.
    pub fn read(&self, location: &str) -> std::result::Result<Zeroizing<Vec<u8>>, StoreError> {
        read_secret(
            self.passphrase_file.as_deref(),
            self.passphrase_command.as_deref(),
            ENV,
        )?
        .ok_or_else(|| StoreError::NeedKey(location.to_string()))
    }

    /// The options a `wal-fetch` run by the server needs to find the same passphrase: the
    /// file or command, never the passphrase itself; with the environment variable, the
    /// server must have it in its own environment.
    pub fn fetch_options(&self) -> Result<String> {
        Ok(match (&self.passphrase_file, &self.passphrase_command) {
            (Some(f), _) => {
                let f = std::path::absolute(f).map_err(io(format!("resolve {}", f.display())))?;
                format!(" --passphrase-file {}", sh_quote(&f.display().to_string()))
            }
            (None, Some(c)) => format!(" --passphrase-command {}", sh_quote(c)),
            (None, None) => String::new(),
        })
    }
}

/// A secret from a file, a command or an environment variable; one trailing newline is
/// dropped. `None` when none is given.
fn read_secret(
    file: Option<&Path>,
    command: Option<&str>,
    env: &str,
) -> std::result::Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
    let mut secret = Zeroizing::new(if let Some(f) = file {
        std::fs::read(f).map_err(|e| {
            StoreError::BadSetting(format!("cannot read passphrase file {}: {e}", f.display()))
        })?
    } else if let Some(c) = command {
        let out = std::process::Command::new("sh")
            .args(["-c", c])
            .stderr(std::process::Stdio::inherit())
            .output()
            .map_err(|e| StoreError::BadSetting(format!("cannot run passphrase command: {e}")))?;
        if !out.status.success() {
            return Err(StoreError::BadSetting(format!(
                "passphrase command failed ({})",
                out.status
            )));
        }
        out.stdout
    } else if let Some(v) = std::env::var_os(env) {
        v.into_encoded_bytes()
    } else {
        return Ok(None);
    });
    if secret.last() == Some(&b'\n') {
        secret.pop();
    }
    if secret.is_empty() {
        return Err(StoreError::BadSetting("the passphrase is empty".into()));
    }
    Ok(Some(secret))
}

/// Where a view keeps the passphrase for its `wal-fetch`, and the options that use it.
pub fn view_key(scratch: &Path) -> Result<(PathBuf, String)> {
    let path = std::path::absolute(scratch.join("passphrase"))
        .map_err(io(format!("resolve {}", scratch.display())))?;
    let options = format!(
        " --passphrase-file {}",
        sh_quote(&path.display().to_string())
    );
    Ok((path, options))
}

/// Writes the passphrase for a view's `wal-fetch` into its scratch directory, 0600 and
/// owned by the server's user. The scratch directory is 0700: only that user (and root)
/// can read the file, and it goes with the scratch directory.
pub fn write_view_key(secret: &[u8], path: &Path, owner: crate::view::Owner) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(format!("create {}", path.display())))?;
    std::io::Write::write_all(&mut f, secret).map_err(io(format!("write {}", path.display())))?;
    std::os::unix::fs::fchown(&f, Some(owner.uid), Some(owner.gid))
        .map_err(io(format!("chown {}", path.display())))
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
