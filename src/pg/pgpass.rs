//! The libpq password file (`~/.pgpass`, or `PGPASSFILE`): `host:port:database:user:password`
//! lines, `*` matching anything, `\:` and `\\` escapes, `#` comments, first match wins.
//!
//! Decision: the same rules as libpq's `passwordFromFile` (fe-connect.c), so one file serves
//! psql and pgsnapfs alike: an empty host or the default socket directory is looked up as
//! `localhost` (any other socket directory by its path), and a file that group or others may
//! access is ignored with a warning. Matching is pure; [`read`] does the I/O.

use std::path::Path;

/// The socket directory libpq is built with on Debian (DEFAULT_PGSOCKET_DIR), also pgsnapfs's
/// default host. Only this directory is matched as `localhost`.
pub const DEFAULT_SOCKET_DIR: &str = "/var/run/postgresql";

/// What a connection looks up: host as given (name, address or socket directory).
#[derive(Debug, Clone, Copy)]
pub struct Key<'a> {
    /// The host as given to the connection.
    pub host: &'a str,
    /// The port.
    pub port: u16,
    /// The database name.
    pub dbname: &'a str,
    /// The user name.
    pub user: &'a str,
}

/// The host name a line's first field is compared with (libpq's rule).
pub fn host_key(host: &str) -> &str {
    if host.is_empty() || host == DEFAULT_SOCKET_DIR {
        "localhost"
    } else {
        host
    }
}

/// The password of the first line that matches `key`, if any.
pub fn find(contents: &str, key: Key) -> Option<String> {
    let port = key.port.to_string();
    let wanted = [host_key(key.host), port.as_str(), key.dbname, key.user];
    contents
        .lines()
        .map(|l| l.trim_end_matches(['\r', '\n']))
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .find_map(|line| {
            let mut rest = line;
            for want in wanted {
                rest = field_matches(rest, want)?;
            }
            Some(unescape_field(rest).0)
        })
}

/// Whether the line starts with a field matching `want`; then the text after its `:`.
fn field_matches<'l>(line: &'l str, want: &str) -> Option<&'l str> {
    if let Some(rest) = line.strip_prefix("*:") {
        return Some(rest);
    }
    let (value, rest) = unescape_field(line);
    (value == want).then_some(rest?)
}

/// The field at the start of `s`, unescaped, and the text after its terminating `:`
/// (None when the field ends the line).
fn unescape_field(s: &str) -> (String, Option<&str>) {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            ':' => return (out, Some(&s[i + 1..])),
            '\\' => match chars.next() {
                Some((_, e)) => out.push(e),
                None => out.push('\\'),
            },
            c => out.push(c),
        }
    }
    (out, None)
}

/// Why a password file gave no password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Miss {
    /// No such file (or unreadable): silently skipped, as libpq does.
    Absent,
    /// Not a regular file: ignored with a warning.
    NotAFile,
    /// Group or others may access it: ignored with a warning.
    Insecure {
        /// The file's permission bits.
        mode: u32,
    },
    /// Read, but no line matched.
    NoMatch,
}

impl std::fmt::Display for Miss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Miss::Absent => f.write_str("not present"),
            Miss::NotAFile => f.write_str("ignored: not a plain file"),
            Miss::Insecure { mode } => write!(
                f,
                "ignored: mode {mode:04o} gives group or world access; chmod 0600 it"
            ),
            Miss::NoMatch => f.write_str("no matching line"),
        }
    }
}

/// Whether a file of this mode must be ignored (libpq: any group or other permission bit).
pub fn insecure(mode: u32) -> bool {
    mode & 0o077 != 0
}

/// Looks `key` up in the file at `path`, warning (as libpq does) when the file is ignored.
pub fn read(path: &Path, key: Key) -> Result<String, Miss> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|_| Miss::Absent)?;
    let miss = if !meta.is_file() {
        Some(Miss::NotAFile)
    } else if insecure(meta.permissions().mode()) {
        Some(Miss::Insecure {
            mode: meta.permissions().mode() & 0o7777,
        })
    } else {
        None
    };
    if let Some(miss) = miss {
        tracing::warn!("password file {}: {miss}", path.display());
        return Err(miss);
    }
    let contents = std::fs::read_to_string(path).map_err(|_| Miss::Absent)?;
    find(&contents, key).ok_or(Miss::NoMatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key<'a>(host: &'a str, port: u16, dbname: &'a str, user: &'a str) -> Key<'a> {
        Key {
            host,
            port,
            dbname,
            user,
        }
    }

    #[test]
    fn exact_and_wildcard_fields_match() {
        let f = "db.example:5433:app:alice:s3cret\n*:*:*:bob:other\n";
        let k = key("db.example", 5433, "app", "alice");
        assert_eq!(find(f, k).as_deref(), Some("s3cret"));
        assert_eq!(find(f, key("db.example", 5432, "app", "alice")), None);
        assert_eq!(find(f, key("db.example", 5433, "app", "carol")), None);
        assert_eq!(
            find(f, key("anywhere", 1, "x", "bob")).as_deref(),
            Some("other")
        );
    }

    #[test]
    fn first_match_wins_and_comments_and_blank_lines_are_skipped() {
        let f = "# *:*:*:*:comment\n\n*:*:*:u:first\r\n*:*:*:u:second\n";
        assert_eq!(find(f, key("h", 5432, "d", "u")).as_deref(), Some("first"));
    }

    #[test]
    fn escapes_in_fields_and_password() {
        let f = r"h\:x:5432:d\\b:u:pa\:ss\\w:ignored";
        assert_eq!(
            find(f, key("h:x", 5432, r"d\b", "u")).as_deref(),
            Some(r"pa:ss\w")
        );
        // An escaped star is a literal star, not a wildcard.
        let f = r"\*:*:*:u:lit";
        assert_eq!(find(f, key("h", 5432, "d", "u")), None);
        assert_eq!(find(f, key("*", 5432, "d", "u")).as_deref(), Some("lit"));
        // A star that is only part of a field is literal too.
        assert_eq!(find("h*:*:*:u:p", key("hx", 5432, "d", "u")), None);
    }

    #[test]
    fn short_lines_do_not_match() {
        assert_eq!(find("*:*:*", key("h", 5432, "d", "u")), None);
        assert_eq!(find("*:*:*:u", key("h", 5432, "d", "u")), None);
        assert_eq!(
            find("*:*:*:u:", key("h", 5432, "d", "u")).as_deref(),
            Some("")
        );
    }

    #[test]
    fn localhost_matches_only_the_default_socket_directory() {
        let f = "localhost:5432:*:u:local\n/tmp/sock:5432:*:u:tmp\n";
        assert_eq!(
            find(f, key(DEFAULT_SOCKET_DIR, 5432, "d", "u")).as_deref(),
            Some("local")
        );
        assert_eq!(find(f, key("", 5432, "d", "u")).as_deref(), Some("local"));
        assert_eq!(
            find(f, key("localhost", 5432, "d", "u")).as_deref(),
            Some("local")
        );
        assert_eq!(
            find(f, key("/tmp/sock", 5432, "d", "u")).as_deref(),
            Some("tmp")
        );
        assert_eq!(find(f, key("/other", 5432, "d", "u")), None);
    }

    #[test]
    fn group_or_world_access_is_insecure() {
        assert!(!insecure(0o100600));
        assert!(!insecure(0o400));
        assert!(insecure(0o640));
        assert!(insecure(0o604));
        assert!(insecure(0o610));
    }

    #[test]
    fn read_ignores_an_insecure_or_absent_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pgpass");
        let k = key("h", 5432, "d", "u");
        assert_eq!(read(&path, k), Err(Miss::Absent));
        std::fs::write(&path, "*:*:*:u:pw\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(read(&path, k), Err(Miss::Insecure { mode: 0o644 }));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read(&path, k).as_deref(), Ok("pw"));
        assert_eq!(read(&path, key("h", 5432, "d", "v")), Err(Miss::NoMatch));
        assert_eq!(read(dir.path(), k), Err(Miss::NotAFile));
    }
}
