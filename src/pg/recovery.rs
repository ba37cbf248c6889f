//! Recovery settings written to postgresql.auto.conf before starting a server on a
//! restored or mounted backup, and the settings of earlier recoveries removed from its
//! configuration. Key types: `RecoverySettings`, `Rewritten`.
//! Decision: values are always written quoted with the server's own escaping
//! (as ALTER SYSTEM writes them), so any restore command or restore point
//! name survives the config file parser. Settings are written as one marked block that
//! the next run replaces, and every recovery target, restore_command and cleanup command
//! found elsewhere is commented out (as pgBackRest does): a target left behind by an
//! earlier recovery would silently stop the next one early.

use super::target::{Target, TargetAction};
use super::version;

/// What recovery replays and where it stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoverySettings {
    /// The command the server runs to fetch each WAL file (pgsnapfs wal-fetch).
    pub restore_command: String,
    /// None: replay all the WAL restore_command finds.
    pub target: Option<Target>,
    /// What the server does at the target; unused without one.
    pub action: TargetAction,
    /// recovery_target_timeline: "latest", "current" or a timeline id, written
    /// as given (the server checks it); None keeps the default, "latest".
    pub timeline: Option<String>,
}

/// Quotes a string for a configuration file: backslashes and quotes are
/// doubled, and line breaks become escapes, which the config parser reads back.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            _ => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// The lines of the recovery settings block for `settings`.
/// recovery_target_inclusive keeps its default (stop just after the target).
/// Majors 13–18 all take these settings unchanged; `_major` is the server's
/// major, so that a future difference lands here without changing callers.
pub fn render(settings: &RecoverySettings, _major: u32) -> String {
    let mut out = format!("restore_command = {}\n", quote(&settings.restore_command));
    if let Some(target) = &settings.target {
        let (name, value) = match target {
            Target::Immediate => ("recovery_target", "immediate".to_string()),
            // UTC with "+00", as the server itself prints timestamps.
            Target::Time(t) => (
                "recovery_target_time",
                t.naive_utc().format("%Y-%m-%d %H:%M:%S%.f+00").to_string(),
            ),
            Target::Lsn(lsn) => ("recovery_target_lsn", lsn.to_string()),
            Target::Name(n) => ("recovery_target_name", n.clone()),
            Target::Xid(x) => ("recovery_target_xid", x.to_string()),
        };
        out += &format!("{name} = {}\n", quote(&value));
        let action = settings.action.to_string();
        out += &format!("recovery_target_action = {}\n", quote(&action));
    }
    if let Some(tli) = &settings.timeline {
        out += &format!("recovery_target_timeline = {}\n", quote(tli));
    }
    out
}

/// The first and last lines of the one block of recovery settings pgsnapfs writes at the
/// end of postgresql.auto.conf; the next restore or view replaces the block whole.
pub const BLOCK_BEGIN: &str =
    "# Recovery settings written by pgsnapfs; the next restore or view replaces this block";
/// The last line of the block (see [`BLOCK_BEGIN`]).
pub const BLOCK_END: &str = "# End of recovery settings written by pgsnapfs";
/// The prefix of a setting of an earlier recovery, commented out.
const REMOVED: &str = "# Removed by pgsnapfs: ";

/// Settings that belong to one recovery and must not reach the next: a target left behind
/// stops a later recovery early, and two kinds of target make the server refuse to start
/// ("multiple recovery targets specified"). recovery_end_command and
/// archive_cleanup_command go with the restore_command they were written for, and a
/// cleanup command may delete WAL from another server's archive.
const STALE: [&str; 11] = [
    "recovery_target",
    "recovery_target_action",
    "recovery_target_inclusive",
    "recovery_target_lsn",
    "recovery_target_name",
    "recovery_target_time",
    "recovery_target_timeline",
    "recovery_target_xid",
    "restore_command",
    "recovery_end_command",
    "archive_cleanup_command",
];

/// Settings naming where the server finds its files or writes its PID file. A view's server
/// must use the view's own: data_directory would start it on the source's data directory,
/// hba_file and ident_file would read files outside the view, external_pid_file would
/// overwrite the source's PID file. (The server ignores data_directory and config_file in
/// postgresql.auto.conf; they are commented out there too, so the file says what applies.)
pub const LOCATIONS: [&str; 5] = [
    "config_file",
    "data_directory",
    "external_pid_file",
    "hba_file",
    "ident_file",
];

/// The (lower-case) parameter a configuration line sets, and the rest of the line after
/// the name, or None for a comment, a blank line or something the server would reject.
fn parse_line(line: &str) -> Option<(String, &str)> {
    let line = line.trim_start();
    let end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .unwrap_or(line.len());
    let (name, rest) = line.split_at(end);
    let starts_ok = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_');
    // "name = value" or "name value", as the configuration file parser takes both.
    let rest_ok = rest.is_empty() || rest.starts_with([' ', '\t', '=']);
    (starts_ok && rest_ok).then(|| (name.to_ascii_lowercase(), rest))
}

/// A setting's value as the server reads it: quoted with '' and backslash escapes, or bare.
fn parse_value(rest: &str) -> Option<String> {
    let rest = rest.trim_start();
    let rest = rest.strip_prefix('=').unwrap_or(rest).trim_start();
    let Some(quoted) = rest.strip_prefix('\'') else {
        let end = rest
            .find(|c: char| c.is_whitespace() || c == '#')
            .unwrap_or(rest.len());
        return (end > 0).then(|| rest[..end].to_string());
    };
    let mut out = String::new();
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' if chars.clone().next() == Some('\'') => {
                chars.next();
                out.push('\'');
            }
            '\'' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

/// A file or directory a configuration file includes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Include {
    /// include or include_if_exists (a missing file is skipped either way: the server's
    /// own check comes at start).
    File(String),
    /// include_dir: its files ending in ".conf", in name order.
    Dir(String),
}

/// The includes of a configuration file, in order.
pub fn includes(text: &str) -> Vec<Include> {
    text.lines()
        .filter_map(|line| {
            let (name, rest) = parse_line(line)?;
            let value = parse_value(rest)?;
            match name.as_str() {
                "include" | "include_if_exists" => Some(Include::File(value)),
                "include_dir" => Some(Include::Dir(value)),
                _ => None,
            }
        })
        .collect()
}

/// A configuration file with the stale recovery settings, and the settings in `also`,
/// commented out (as pgBackRest does, so what was there stays visible), and the names of
/// those settings.
pub fn comment_out(text: &str, also: &[&str]) -> (String, Vec<String>) {
    let mut removed = Vec::new();
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let stale = |n: &str| STALE.contains(&n) || also.contains(&n);
        if let Some((name, _)) = parse_line(line).filter(|(n, _)| stale(n)) {
            out.push_str(REMOVED);
            removed.push(name);
        }
        out.push_str(line);
    }
    (out, removed)
}

/// postgresql.auto.conf for a new recovery: the block an earlier pgsnapfs run wrote is
/// dropped, any other stale setting (or one in `also`) commented out, and `settings`
/// appended as the one new block. Also returns the names of the settings dropped or
/// commented out.
pub fn rewrite_auto_conf(text: &str, settings: &str, also: &[&str]) -> (String, Vec<String>) {
    let mut kept = String::with_capacity(text.len());
    let mut dropped = Vec::new();
    let mut lines = text.split_inclusive('\n').peekable();
    while let Some(line) = lines.next() {
        // A block whose end marker was edited away is left as it is: only its stale
        // settings are commented out below.
        let has_end =
            line.trim_end() == BLOCK_BEGIN && lines.clone().any(|l| l.trim_end() == BLOCK_END);
        if !has_end {
            kept.push_str(line);
            continue;
        }
        for inner in lines.by_ref() {
            if inner.trim_end() == BLOCK_END {
                break;
            }
            dropped.extend(
                parse_line(inner)
                    .map(|(n, _)| n)
                    .filter(|n| STALE.contains(&n.as_str())),
            );
        }
    }
    let (mut out, mut removed) = comment_out(kept.trim_end_matches('\n'), also);
    dropped.append(&mut removed);
    if !out.is_empty() {
        out.push_str("\n\n");
    }
    out.push_str(BLOCK_BEGIN);
    out.push('\n');
    out.push_str(settings);
    if !settings.is_empty() && !settings.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(BLOCK_END);
    out.push('\n');
    (out, dropped)
}

/// A configuration file `rewrite_config` changed: its path in the data directory and its
/// new text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewritten {
    /// The file's path, relative to the data directory.
    pub path: String,
    /// The file's new content.
    pub text: String,
    /// The settings of an earlier recovery commented out or dropped, by name.
    pub removed: Vec<String>,
    /// The settings of `rewrite_config`'s `also` commented out, by name.
    pub also_removed: Vec<String>,
}

impl Rewritten {
    fn new(path: String, text: String, names: Vec<String>, also: &[&str]) -> Rewritten {
        let (also_removed, removed) = names.into_iter().partition(|n| also.contains(&n.as_str()));
        Rewritten {
            path,
            text,
            removed,
            also_removed,
        }
    }
}

/// Where an include of `from` (a path in the data directory) points, if inside the data
/// directory: relative to `from`'s directory, never above the top. Absolute paths are
/// outside what a backup holds (Debian keeps its configuration in /etc).
fn resolve(from: &str, path: &str) -> Option<String> {
    if path.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = from.split('/').collect();
    parts.pop();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// How deep includes nest before the server itself gives up.
const MAX_INCLUDE_DEPTH: usize = 10;

/// The configuration files of a data directory rewritten for a new recovery:
/// postgresql.auto.conf gets `settings` as its one pgsnapfs block, and postgresql.conf and
/// the files it includes from inside the data directory get stale recovery settings, and
/// the settings named in `also` (`LOCATIONS` for a view), commented out. Only changed files
/// are returned, postgresql.auto.conf always.
/// `read` gives a file's text by its path in the data directory (None: no such file),
/// `list` the names of the files in a directory.
pub fn rewrite_config<E>(
    read: &dyn Fn(&str) -> Result<Option<String>, E>,
    list: &dyn Fn(&str) -> Result<Vec<String>, E>,
    settings: &str,
    also: &[&str],
) -> Result<Vec<Rewritten>, E> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut todo = vec![("postgresql.conf".to_string(), 0)];
    while let Some((path, depth)) = todo.pop() {
        if !seen.insert(path.clone()) || depth > MAX_INCLUDE_DEPTH {
            continue;
        }
        let Some(text) = read(&path)? else { continue };
        let mut found = Vec::new();
        for include in includes(&text) {
            match include {
                Include::File(p) => found.extend(resolve(&path, &p)),
                Include::Dir(d) => {
                    if let Some(dir) = resolve(&path, &d) {
                        found.extend(conf_files(list, &dir)?);
                    }
                }
            }
        }
        // Depth first, in order, as the server reads them.
        todo.extend(found.into_iter().rev().map(|p| (p, depth + 1)));
        let (new, removed) = comment_out(&text, also);
        if !removed.is_empty() {
            out.push(Rewritten::new(path, new, removed, also));
        }
    }
    let auto = read("postgresql.auto.conf")?.unwrap_or_default();
    let (text, removed) = rewrite_auto_conf(&auto, settings, also);
    out.push(Rewritten::new(
        "postgresql.auto.conf".into(),
        text,
        removed,
        also,
    ));
    Ok(out)
}

/// The settings of a data directory's configuration files, in the order the server reads
/// them (postgresql.conf with its includes in place, then postgresql.auto.conf), so the
/// last value of a name is the one in force; files outside the data directory are unknown.
pub fn settings_in_order<E>(
    read: &dyn Fn(&str) -> Result<Option<String>, E>,
    list: &dyn Fn(&str) -> Result<Vec<String>, E>,
) -> Result<Vec<(String, String)>, E> {
    fn walk<E>(
        read: &dyn Fn(&str) -> Result<Option<String>, E>,
        list: &dyn Fn(&str) -> Result<Vec<String>, E>,
        path: &str,
        depth: usize,
        out: &mut Vec<(String, String)>,
    ) -> Result<(), E> {
        let Some(text) = read(path)?.filter(|_| depth <= MAX_INCLUDE_DEPTH) else {
            return Ok(());
        };
        for line in text.lines() {
            let Some((name, rest)) = parse_line(line) else {
                continue;
            };
            let Some(value) = parse_value(rest) else {
                continue;
            };
            match (name.as_str(), resolve(path, &value)) {
                ("include" | "include_if_exists", Some(file)) => {
                    walk(read, list, &file, depth + 1, out)?
                }
                ("include_dir", Some(dir)) => {
                    for file in conf_files(list, &dir)? {
                        walk(read, list, &file, depth + 1, out)?;
                    }
                }
                ("include" | "include_if_exists" | "include_dir", None) => {}
                _ => out.push((name, value)),
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(read, list, "postgresql.conf", 0, &mut out)?;
    walk(read, list, "postgresql.auto.conf", 0, &mut out)?;
    Ok(out)
}

/// The files include_dir reads: names ending in ".conf", not hidden, in name order.
fn conf_files<E>(
    list: &dyn Fn(&str) -> Result<Vec<String>, E>,
    dir: &str,
) -> Result<Vec<String>, E> {
    let mut names = list(dir)?;
    names.retain(|n| n.ends_with(".conf") && !n.starts_with('.'));
    names.sort();
    Ok(names.into_iter().map(|n| format!("{dir}/{n}")).collect())
}

/// One line naming the settings of an earlier recovery that `rewritten` removed, per file,
/// or None when there were none.
pub fn describe_removed(rewritten: &[Rewritten]) -> Option<String> {
    let parts: Vec<String> = rewritten
        .iter()
        .filter(|r| !r.removed.is_empty())
        .map(|r| {
            let mut names = r.removed.clone();
            names.sort();
            names.dedup();
            format!("{} ({})", r.path, names.join(", "))
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// Settings for a throw-away server started on a mounted backup, as
/// (name, value as written in the config file). The port and socket directory are the
/// caller's (the server's command line). Not overridden: max_connections,
/// max_wal_senders, max_worker_processes, max_prepared_transactions and
/// max_locks_per_transaction, which hot standby requires to be at least the
/// values the WAL was written with.
pub fn view_overrides(major: u32) -> Vec<(&'static str, String)> {
    let off = || "off".to_string();
    let empty = || quote("");
    let mut settings = vec![
        // Never push the view's WAL or .history files into the real archive.
        ("archive_mode", off()),
        // Commands copied from the source's config may delete archived WAL.
        ("archive_cleanup_command", empty()),
        ("recovery_end_command", empty()),
        // Never stream from, or hold a slot on, the live primary.
        ("primary_conninfo", empty()),
        ("primary_slot_name", empty()),
        // A promoted view of a subscriber would apply (and confirm on the publisher's slot)
        // changes the real subscriber then never gets.
        ("max_logical_replication_workers", "0".to_string()),
        // A promoted view would otherwise wait forever for the source's standbys.
        ("synchronous_standby_names", empty()),
        // Unix-socket connections only: the backup's listen_addresses would open a copy of
        // production's data on the network (and its port may be taken). A command-line
        // -c listen_addresses=... still wins.
        ("listen_addresses", empty()),
        // Read-only queries while recovery is paused at the target.
        ("hot_standby", "on".to_string()),
        // The view is disposable: its durability does not matter, and this
        // also skips the whole-directory sync at startup, slow through FUSE.
        ("fsync", off()),
    ];
    if version::major(major).is_some_and(|m| m.has_summarize_wal) {
        // WAL summaries only serve incremental backups of this server.
        settings.push(("summarize_wal", off()));
    }
    settings
}

#[cfg(test)]
mod tests {
    use super::super::lsn::Lsn;
    use super::super::target::parse_time;
    use super::*;

    fn settings(target: Target) -> RecoverySettings {
        RecoverySettings {
            restore_command: "pgsnapfs wal-fetch %f %p".into(),
            target: Some(target),
            action: TargetAction::Pause,
            timeline: None,
        }
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("plain"), "'plain'");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("it's"), "'it''s'");
        assert_eq!(quote(r"C:\wal\%f"), r"'C:\\wal\\%f'");
        assert_eq!(quote("line1\nline2\r"), r"'line1\nline2\r'");
        assert_eq!(quote(r"a\nb"), r"'a\\nb'");
    }

    #[test]
    fn render_each_target() {
        let cases = [
            (Target::Immediate, "recovery_target = 'immediate'"),
            (
                Target::Time(parse_time("2026-11-20 14:30:00.123456+05:30").unwrap()),
                "recovery_target_time = '2026-11-20 09:00:00.123456+00'",
            ),
            (
                Target::Time(parse_time("2026-11-20T14:30:00Z").unwrap()),
                "recovery_target_time = '2026-11-20 14:30:00+00'",
            ),
            (
                Target::Lsn(Lsn(0x16_B374_D848)),
                "recovery_target_lsn = '16/B374D848'",
            ),
            (
                Target::Name("it's here".into()),
                "recovery_target_name = 'it''s here'",
            ),
            (Target::Xid(4242), "recovery_target_xid = '4242'"),
        ];
        for (target, line) in cases {
            let text = render(&settings(target), 15);
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(
                lines,
                vec![
                    "restore_command = 'pgsnapfs wal-fetch %f %p'",
                    line,
                    "recovery_target_action = 'pause'"
                ]
            );
            assert!(text.ends_with('\n'));
        }
    }

    #[test]
    fn render_timeline_and_action() {
        let mut s = settings(Target::Immediate);
        s.action = TargetAction::Promote;
        s.timeline = Some("latest".into());
        assert!(render(&s, 18).ends_with(
            "recovery_target_action = 'promote'\nrecovery_target_timeline = 'latest'\n"
        ));
        s.action = TargetAction::Shutdown;
        s.timeline = Some("3".into());
        assert!(render(&s, 13)
            .ends_with("recovery_target_action = 'shutdown'\nrecovery_target_timeline = '3'\n"));
    }

    #[test]
    fn render_without_target_replays_everything() {
        let mut s = settings(Target::Immediate);
        s.target = None;
        s.timeline = Some("current".into());
        assert_eq!(
            render(&s, 15),
            "restore_command = 'pgsnapfs wal-fetch %f %p'\nrecovery_target_timeline = 'current'\n"
        );
    }

    #[test]
    fn view_overrides_per_major() {
        let names = |major| {
            view_overrides(major)
                .into_iter()
                .map(|(n, _)| n)
                .collect::<Vec<_>>()
        };
        for major in [13, 14, 15, 16] {
            assert!(!names(major).contains(&"summarize_wal"));
        }
        for major in [17, 18] {
            assert!(names(major).contains(&"summarize_wal"));
        }
        let v = view_overrides(15);
        assert!(v.contains(&("archive_mode", "off".to_string())));
        assert!(v.contains(&("hot_standby", "on".to_string())));
        assert!(v.contains(&("archive_cleanup_command", "''".to_string())));
        assert!(v.contains(&("listen_addresses", "''".to_string())));
        assert!(!names(15).contains(&"max_wal_senders"));
    }

    #[test]
    fn parse_lines_and_values() {
        assert_eq!(
            parse_line("  Recovery_Target_Time = '2026-01-01'"),
            Some(("recovery_target_time".into(), " = '2026-01-01'"))
        );
        assert_eq!(
            parse_line("restore_command 'cp'").unwrap().0,
            "restore_command"
        );
        assert_eq!(parse_line("# restore_command = 'cp'"), None);
        assert_eq!(parse_line(""), None);
        assert_eq!(
            parse_line("restore_commandx = 1").unwrap().0,
            "restore_commandx"
        );
        assert_eq!(
            parse_value(r" = 'it''s a\\b\n'"),
            Some("it's a\\b\n".into())
        );
        assert_eq!(parse_value(" 'conf.d' # comment"), Some("conf.d".into()));
        assert_eq!(parse_value("=extra.conf"), Some("extra.conf".into()));
        assert_eq!(parse_value(" = 'unterminated"), None);
    }

    #[test]
    fn includes_in_order() {
        let text = "include 'a.conf'\n# include 'no.conf'\ninclude_dir = conf.d\n\
                    include_if_exists = '/etc/x.conf'\nwork_mem = 4MB\n";
        assert_eq!(
            includes(text),
            vec![
                Include::File("a.conf".into()),
                Include::Dir("conf.d".into()),
                Include::File("/etc/x.conf".into())
            ]
        );
    }

    #[test]
    fn comment_out_stale_settings_only() {
        let text = "work_mem = 4MB\nrecovery_target_time = '2026-01-01 00:00:00+00'\n\
                    restore_command = 'cp %f %p'\n# recovery_target_xid = 1\n\
                    archive_cleanup_command 'pg_archivecleanup /a %r'\nrecovery_min_apply_delay = 0";
        let (out, removed) = comment_out(text, &[]);
        assert_eq!(
            out,
            "work_mem = 4MB\n# Removed by pgsnapfs: recovery_target_time = '2026-01-01 00:00:00+00'\n\
             # Removed by pgsnapfs: restore_command = 'cp %f %p'\n# recovery_target_xid = 1\n\
             # Removed by pgsnapfs: archive_cleanup_command 'pg_archivecleanup /a %r'\n\
             recovery_min_apply_delay = 0"
        );
        assert_eq!(
            removed,
            [
                "recovery_target_time",
                "restore_command",
                "archive_cleanup_command"
            ]
        );
    }

    /// The defect of issue 14: a restored, promoted server kept its target, and the next
    /// restore appended a second set; each run must leave exactly one.
    #[test]
    fn auto_conf_keeps_one_block_over_runs() {
        let first = "# Do not edit this file manually!\nwork_mem = '8MB'\n";
        let block1 = "restore_command = 'fetch 1'\nrecovery_target_time = 'T'\n\
                      recovery_target_action = 'promote'\n";
        let (once, removed) = rewrite_auto_conf(first, block1, &[]);
        assert!(removed.is_empty());
        assert_eq!(
            once,
            format!("{first}\n{BLOCK_BEGIN}\n{block1}{BLOCK_END}\n")
        );
        let block2 = "restore_command = 'fetch 2'\n";
        let (twice, removed) = rewrite_auto_conf(&once, block2, &[]);
        assert_eq!(
            twice,
            format!("{first}\n{BLOCK_BEGIN}\n{block2}{BLOCK_END}\n")
        );
        assert_eq!(
            removed,
            [
                "restore_command",
                "recovery_target_time",
                "recovery_target_action"
            ]
        );
        // Idempotent: the third run changes only the block.
        assert_eq!(rewrite_auto_conf(&twice, block2, &[]).0, twice);
    }

    #[test]
    fn auto_conf_without_markers() {
        // ALTER SYSTEM rewrites the file without comments: the markers are gone, and the
        // settings are found by name.
        let altered = "restore_command = 'fetch 1'\nrecovery_target_time = 'T'\nwork_mem = '8MB'\n";
        let (out, removed) = rewrite_auto_conf(altered, "restore_command = 'fetch 2'\n", &[]);
        assert_eq!(
            out,
            format!(
                "# Removed by pgsnapfs: restore_command = 'fetch 1'\n\
                 # Removed by pgsnapfs: recovery_target_time = 'T'\nwork_mem = '8MB'\n\n\
                 {BLOCK_BEGIN}\nrestore_command = 'fetch 2'\n{BLOCK_END}\n"
            )
        );
        assert_eq!(removed, ["restore_command", "recovery_target_time"]);
        // A begin marker without its end is not a block: nothing after it is dropped.
        let broken = format!("{BLOCK_BEGIN}\nwork_mem = '8MB'\n");
        let (out, _) = rewrite_auto_conf(&broken, "", &[]);
        assert!(out.starts_with(&broken));
        assert_eq!(
            rewrite_auto_conf("", "x = 1", &[]).0,
            format!("{BLOCK_BEGIN}\nx = 1\n{BLOCK_END}\n")
        );
    }

    #[test]
    fn include_paths_stay_in_the_data_directory() {
        assert_eq!(
            resolve("postgresql.conf", "a.conf").as_deref(),
            Some("a.conf")
        );
        assert_eq!(
            resolve("conf.d/x.conf", "../y.conf").as_deref(),
            Some("y.conf")
        );
        assert_eq!(
            resolve("conf.d/x.conf", "./z/w.conf").as_deref(),
            Some("conf.d/z/w.conf")
        );
        assert_eq!(resolve("postgresql.conf", "../etc.conf"), None);
        assert_eq!(resolve("postgresql.conf", "/etc/postgresql/x.conf"), None);
    }

    #[test]
    fn rewrite_follows_includes() {
        use std::collections::HashMap;
        let files: HashMap<&str, &str> = HashMap::from([
            (
                "postgresql.conf",
                "include_dir 'conf.d'\ninclude_if_exists 'missing.conf'\n\
                 include '/etc/outside.conf'\nrecovery_target_name = 'x'\n\
                 include 'postgresql.conf'\n",
            ),
            ("conf.d/10-a.conf", "recovery_target_xid = '7'\n"),
            ("conf.d/20-b.conf", "work_mem = 1MB\n"),
            ("conf.d/notes.txt", "recovery_target_lsn = '0/1'\n"),
            ("postgresql.auto.conf", "recovery_target_timeline = '2'\n"),
        ]);
        let read =
            |p: &str| -> Result<Option<String>, ()> { Ok(files.get(p).map(|t| t.to_string())) };
        let list = |d: &str| -> Result<Vec<String>, ()> {
            Ok(files
                .keys()
                .filter_map(|k| k.strip_prefix(&format!("{d}/")).map(String::from))
                .collect())
        };
        let out = rewrite_config(&read, &list, "restore_command = 'f'\n", &[]).unwrap();
        let paths: Vec<&str> = out.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "postgresql.conf",
                "conf.d/10-a.conf",
                "postgresql.auto.conf"
            ]
        );
        assert_eq!(
            out[1].text,
            "# Removed by pgsnapfs: recovery_target_xid = '7'\n"
        );
        assert!(out[2].text.ends_with(&format!(
            "{BLOCK_BEGIN}\nrestore_command = 'f'\n{BLOCK_END}\n"
        )));
        assert_eq!(
            describe_removed(&out).unwrap(),
            "postgresql.conf (recovery_target_name); conf.d/10-a.conf (recovery_target_xid); \
             postgresql.auto.conf (recovery_target_timeline)"
        );
        let none = |_: &str| -> Result<Option<String>, ()> { Ok(None) };
        let out = rewrite_config(&none, &list, "", &[]).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(describe_removed(&out), None);
    }

    /// A view comments out the settings naming files outside it, wherever the rewrite
    /// reaches, and reports them apart from the settings of earlier recoveries.
    #[test]
    fn rewrite_for_a_view_comments_out_locations() {
        use std::collections::HashMap;
        let files: HashMap<&str, &str> = HashMap::from([
            (
                "postgresql.conf",
                "data_directory = '/var/lib/postgresql/15/main'\ninclude 'more.conf'\n\
                 work_mem = 4MB\n",
            ),
            (
                "more.conf",
                "hba_file = '/etc/postgresql/15/main/pg_hba.conf'\nrecovery_target_xid = 7\n",
            ),
            (
                "postgresql.auto.conf",
                "External_Pid_File = '/run/postgresql/15-main.pid'\nident_file = '/etc/i'\n",
            ),
        ]);
        let read =
            |p: &str| -> Result<Option<String>, ()> { Ok(files.get(p).map(|t| t.to_string())) };
        let list = |_: &str| -> Result<Vec<String>, ()> { Ok(vec![]) };
        let out = rewrite_config(&read, &list, "", &LOCATIONS).unwrap();
        fn names(v: &[String]) -> Vec<&str> {
            v.iter().map(String::as_str).collect()
        }
        let summary: Vec<(&str, Vec<&str>, Vec<&str>)> = out
            .iter()
            .map(|r| (r.path.as_str(), names(&r.removed), names(&r.also_removed)))
            .collect();
        assert_eq!(
            summary,
            [
                ("postgresql.conf", vec![], vec!["data_directory"]),
                ("more.conf", vec!["recovery_target_xid"], vec!["hba_file"]),
                (
                    "postgresql.auto.conf",
                    vec![],
                    vec!["external_pid_file", "ident_file"]
                ),
            ]
        );
        assert!(out[0].text.starts_with(
            "# Removed by pgsnapfs: data_directory = '/var/lib/postgresql/15/main'\n"
        ));
        assert!(out[0].text.ends_with("work_mem = 4MB\n"));
        // A restore keeps them: the restored server replaces the source where it was.
        let out = rewrite_config(&read, &list, "", &[]).unwrap();
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|r| r.also_removed.is_empty()));
        assert!(out[1].text.starts_with("External_Pid_File"));
    }

    #[test]
    fn settings_in_reading_order() {
        use std::collections::HashMap;
        let files: HashMap<&str, &str> = HashMap::from([
            (
                "postgresql.conf",
                "archive_mode = on\ninclude 'conf.d/a.conf'\narchive_command = 'late'\n",
            ),
            (
                "conf.d/a.conf",
                "archive_mode = off\narchive_command = 'early'\n",
            ),
            ("postgresql.auto.conf", "archive_mode = 'always'\n"),
        ]);
        let read =
            |p: &str| -> Result<Option<String>, ()> { Ok(files.get(p).map(|t| t.to_string())) };
        let list = |_: &str| -> Result<Vec<String>, ()> { Ok(vec![]) };
        let got = settings_in_order(&read, &list).unwrap();
        let last = |name: &str| {
            got.iter()
                .rev()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(last("archive_mode"), Some("always"));
        assert_eq!(last("archive_command"), Some("late"));
        assert_eq!(got.len(), 5);
    }
}
