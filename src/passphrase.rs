//! Where the passphrase of an encrypted repository comes from: `PGSNAPFS_PASSPHRASE`, a
//! file or a command. Never a command-line value: other users see those in `ps`.

use crate::error::{io, Result};
use crate::store::StoreError;
use crate::walfetch::sh_quote;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// The environment variable holding the passphrase when no file or command is given.
pub const ENV: &str = "PGSNAPFS_PASSPHRASE";
/// The environment variable holding a new passphrase, for `key add`.
pub const NEW_ENV: &str = "PGSNAPFS_NEW_PASSPHRASE";

/// A passphrase file or command; with neither, the environment variable.
#[derive(Debug, Clone, Default)]
pub struct Source {
    /// A file whose first line is the passphrase.
    pub file: Option<PathBuf>,
    /// A shell command that prints the passphrase.
    pub command: Option<String>,
}

impl Source {
    /// The passphrase of the repository at `location`, which needs one.
    pub fn read(&self, location: &str) -> std::result::Result<Zeroizing<Vec<u8>>, StoreError> {
        read_secret(self.file.as_deref(), self.command.as_deref(), ENV)?
            .ok_or_else(|| StoreError::NeedKey(location.to_string()))
    }

    /// The options a `wal-fetch` run by a restored server needs to find the same passphrase:
    /// the file or command, never the passphrase itself; with the environment variable, the
    /// server must have it in its own environment (empty options).
    pub fn fetch_options(&self) -> Result<String> {
        Ok(match (&self.file, &self.command) {
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
pub fn read_secret(
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
