//! The restore_command of a server started on a restore or a view: `pgsnapfs wal-fetch` from
//! this repository, for this cluster, with the options that find the key of an encrypted one.

use crate::error::{io, Result};
use crate::passphrase;
use crate::store::Repository;
use std::fmt::Display;
use std::path::Path;

/// Shell-quotes a word for restore_command, which PostgreSQL runs through sh.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The command itself, from the executable, the repository's absolute location, the
/// cluster and the key options (empty for an unencrypted repository).
fn command(exe: &Path, repo: &str, system: impl Display, key: &str) -> String {
    format!(
        "{} wal-fetch --repo {}{key} --system {system} %f %p",
        sh_quote(&exe.display().to_string()),
        sh_quote(repo),
    )
}

/// The restore_command that fetches WAL of cluster `system` from the repository at
/// `repo_spec`, run by this same executable. `key` holds the options that give `wal-fetch`
/// the key of an encrypted repository.
pub fn restore_command(repo_spec: &str, system: impl Display, key: &str) -> Result<String> {
    let exe = std::env::current_exe().map_err(io("find the pgsnapfs executable"))?;
    // The server runs the command in its data directory: use an absolute repository path.
    let repo = if repo_spec.contains("://") {
        repo_spec.to_string()
    } else {
        std::fs::canonicalize(repo_spec)
            .map_err(io(format!("resolve {repo_spec}")))?
            .display()
            .to_string()
    };
    Ok(command(&exe, &repo, system, key))
}

/// The key options of a restored server's `wal-fetch`: the same passphrase file or command
/// as this run; empty for an unencrypted repository, or when the server must find
/// PGSNAPFS_PASSPHRASE in its own environment.
pub fn key_options(repo: &Repository, passphrase: &passphrase::Source) -> Result<String> {
    match repo.crypto().is_encrypted() {
        true => passphrase.fetch_options(),
        false => Ok(String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_every_word_the_shell_could_split() {
        assert_eq!(
            command(
                Path::new("/opt/it's/pgsnapfs"),
                "/srv/my repo",
                7,
                " --passphrase-file '/s/passphrase'"
            ),
            r"'/opt/it'\''s/pgsnapfs' wal-fetch --repo '/srv/my repo' --passphrase-file '/s/passphrase' --system 7 %f %p"
        );
    }
}
