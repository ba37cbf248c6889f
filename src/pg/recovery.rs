//! Recovery settings appended to postgresql.auto.conf before starting a
//! server on a restored or mounted backup.
//! Key type: `RecoverySettings`.
//! Decision: values are always written quoted with the server's own escaping
//! (as ALTER SYSTEM writes them), so any restore command or restore point
//! name survives the config file parser.

use super::target::{Target, TargetAction};
use super::version;

/// What recovery replays and where it stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoverySettings {
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

/// The lines to append to postgresql.auto.conf for `settings`.
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

/// Settings for a throw-away server started on a mounted backup, as
/// (name, value as written in the config file). Connection settings (port,
/// sockets) are the caller's. Not overridden: max_connections,
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
        // A promoted view would otherwise wait forever for the source's standbys.
        ("synchronous_standby_names", empty()),
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
        assert!(!names(15).contains(&"max_wal_senders"));
    }
}
