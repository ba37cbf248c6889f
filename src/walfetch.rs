//! The restore_command of a server started on a restore or a view: `pgsnapfs wal-fetch` from
//! this repository, for this cluster, with the options that find the key of an encrypted one;
//! and which repository a pgsnapfs archive_command pushes into.

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

/// The repository a pgsnapfs archive_command pushes into (its --repo), if it is one.
pub fn archive_target(command: &str) -> Option<String> {
    let words = shell_words(command);
    if !words.iter().any(|w| w == "wal-push") {
        return None;
    }
    words
        .iter()
        .enumerate()
        .find_map(|(i, w)| match w.strip_prefix("--repo") {
            Some("") => words.get(i + 1).cloned(),
            Some(v) => v.strip_prefix('=').map(String::from),
            None => None,
        })
}

/// The words of a sh command line, unquoted: enough for a typical archive_command.
fn shell_words(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                w.extend(chars.by_ref().take_while(|&c| c != '\''));
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => w.extend(chars.next()),
                        c => w.push(c),
                    }
                }
            }
            '\\' => word.get_or_insert_with(String::new).extend(chars.next()),
            c if c.is_whitespace() || ";&|".contains(c) => words.extend(word.take()),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    words
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

    #[test]
    fn archive_target_of_commands() {
        assert_eq!(
            archive_target("'/usr/bin/pgsnapfs' wal-push --repo '/srv/my repo' %p").as_deref(),
            Some("/srv/my repo")
        );
        assert_eq!(
            archive_target("pgsnapfs --repo=s3://b/p wal-push %p && true").as_deref(),
            Some("s3://b/p")
        );
        assert_eq!(
            archive_target("PGSNAPFS_REPO=/r pgsnapfs wal-push %p"),
            None
        );
        assert_eq!(archive_target("cp %p /mnt/server/archivedir/%f"), None);
        assert_eq!(shell_words(r#"a "b \"c\"" d\ e"#), ["a", "b \"c\"", "d e"]);
    }
}
