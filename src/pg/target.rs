//! Recovery targets: where point-in-time recovery stops, and what the server
//! does there. Key types: `Target`, `TargetAction`.
//! Decision: `parse_time` accepts the spellings of recovery_target_time seen
//! in practice; a time without a zone is read in the local zone of the machine
//! running pgsnapfs (chrono's Local), as the server would read it in its own.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, FixedOffset, Local, NaiveDateTime, TimeZone};

use super::lsn::Lsn;
use super::Error;

/// Where recovery stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// As soon as the backup is consistent (recovery_target = 'immediate').
    Immediate,
    /// The first commit at or after this time (recovery_target_time).
    Time(DateTime<FixedOffset>),
    /// This WAL position (recovery_target_lsn).
    Lsn(Lsn),
    /// A restore point created by pg_create_restore_point().
    Name(String),
    /// The commit of this transaction id (recovery_target_xid).
    Xid(u32),
}

/// recovery_target_action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetAction {
    /// Stop replay and wait (pause), so the result can be inspected before promoting.
    Pause,
    /// End recovery and open a new timeline for writes.
    Promote,
    /// Stop the server once the target is reached.
    Shutdown,
}

impl fmt::Display for TargetAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TargetAction::Pause => "pause",
            TargetAction::Promote => "promote",
            TargetAction::Shutdown => "shutdown",
        })
    }
}

impl FromStr for TargetAction {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s.to_ascii_lowercase().as_str() {
            "pause" => Ok(TargetAction::Pause),
            "promote" => Ok(TargetAction::Promote),
            "shutdown" => Ok(TargetAction::Shutdown),
            _ => Err(Error::TargetAction(s.to_string())),
        }
    }
}

/// The spellings `parse_time` accepts, for error messages: every quoted example parses.
pub const TIME_FORMATS: &str = "'YYYY-MM-DD HH:MM[:SS[.fraction]][zone]', such as \
    '2026-11-20 14:30:00+00', '2026-11-20T14:30:00.5Z', '2026-11-20 14:30:00 UTC' or \
    '2026-11-20 14:30' (no zone: this machine's local time); a zone is +HH, +HHMM, +HH:MM, \
    Z, UTC or GMT";

/// Parses a recovery target time written in one of the [`TIME_FORMATS`]; a time without a zone is this machine's local time.
pub fn parse_time(s: &str) -> Result<DateTime<FixedOffset>, Error> {
    let bad = || Error::TargetTime(s.to_string());
    let (when, offset) = split_zone(s.trim()).ok_or_else(bad)?;
    let when = when.trim_end().replacen('T', " ", 1);
    let naive = ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(&when, f).ok())
        .ok_or_else(bad)?;
    let time = match offset {
        Some(offset) => offset.from_local_datetime(&naive).single(),
        // None for local times skipped or repeated by a daylight saving change.
        None => Local
            .from_local_datetime(&naive)
            .single()
            .map(|t| t.fixed_offset()),
    };
    time.ok_or_else(bad)
}

/// Splits "date time[zone]" into the date-time text and its zone, if any.
fn split_zone(s: &str) -> Option<(&str, Option<FixedOffset>)> {
    let utc = FixedOffset::east_opt(0).expect("zero offset");
    for name in ["UTC", "GMT", "Z"] {
        let cut = s.len().checked_sub(name.len())?;
        if s.is_char_boundary(cut) && s[cut..].eq_ignore_ascii_case(name) {
            return Some((&s[..cut], Some(utc)));
        }
    }
    // A numeric offset is the last sign after the time's first colon.
    let time_at = s.find(':')?;
    let Some(sign_at) = s[time_at..].rfind(['+', '-']).map(|i| time_at + i) else {
        return Some((s, None));
    };
    let digits: String = s[sign_at + 1..].chars().filter(|&c| c != ':').collect();
    if !(digits.len() == 2 || digits.len() == 4) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let hours: i32 = digits[..2].parse().ok()?;
    let minutes: i32 = if digits.len() == 4 {
        digits[2..].parse().ok()?
    } else {
        0
    };
    if minutes >= 60 {
        return None;
    }
    let seconds = (hours * 60 + minutes) * 60;
    let sign = if s[sign_at..].starts_with('-') { -1 } else { 1 };
    Some((&s[..sign_at], Some(FixedOffset::east_opt(sign * seconds)?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveDate, Timelike};

    fn utc(h: u32, m: u32, s: u32, micros: u32) -> DateTime<FixedOffset> {
        NaiveDate::from_ymd_opt(2026, 11, 20)
            .unwrap()
            .and_hms_micro_opt(h, m, s, micros)
            .unwrap()
            .and_utc()
            .fixed_offset()
    }

    #[test]
    fn accepted_spellings() {
        let cases = [
            ("2026-11-20 14:30:00+00", utc(14, 30, 0, 0), 0),
            (
                "2026-11-20 14:30:00.123456+05:30",
                utc(9, 0, 0, 123456),
                19800,
            ),
            ("2026-11-20 14:30:00 UTC", utc(14, 30, 0, 0), 0),
            ("2026-11-20 14:30:00 utc", utc(14, 30, 0, 0), 0),
            ("2026-11-20 14:30:00+0000", utc(14, 30, 0, 0), 0),
            ("2026-11-20T14:30:00Z", utc(14, 30, 0, 0), 0),
            ("2026-11-20T14:30:00.5-03", utc(17, 30, 0, 500000), -10800),
            ("2026-11-20 14:30 +01", utc(13, 30, 0, 0), 3600),
            ("  2026-11-20 14:30:00 GMT  ", utc(14, 30, 0, 0), 0),
        ];
        for (text, expected, offset) in cases {
            let t = parse_time(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(t, expected, "{text}");
            assert_eq!(t.offset().local_minus_utc(), offset, "{text}");
        }
    }

    #[test]
    fn the_error_shows_formats_that_parse() {
        let msg = parse_time("half past never").unwrap_err().to_string();
        assert!(
            msg.contains("\"half past never\"") && msg.contains(TIME_FORMATS),
            "{msg}"
        );
        let examples: Vec<&str> = TIME_FORMATS
            .split('\'')
            .skip(1)
            .step_by(2)
            .filter(|e| e.starts_with("20"))
            .collect();
        assert_eq!(examples.len(), 4, "{examples:?}");
        for e in examples {
            assert!(parse_time(e).is_ok(), "{e}");
        }
    }

    #[test]
    fn no_zone_means_local() {
        let t = parse_time("2026-11-20 14:30:00").unwrap();
        let local = Local
            .with_ymd_and_hms(2026, 11, 20, 14, 30, 0)
            .single()
            .unwrap();
        assert_eq!(t, local.fixed_offset());
        assert_eq!(t.hour(), 14);
    }

    #[test]
    fn rejected_spellings() {
        for text in [
            "",
            "yesterday",
            "2026-11-20",
            "2026-13-20 14:30:00+00",
            "2026-11-20 25:30:00+00",
            "2026-11-20 14:30:00 CET",
            "2026-11-20 14:30:00+5",
            "2026-11-20 14:30:00+05:60",
            "2026-11-20 14:30:00+24",
            "2026-11-20 14:30:00+0a",
            "2026-11-20 14:30:00 +00 extra",
        ] {
            assert_eq!(
                parse_time(text),
                Err(Error::TargetTime(text.to_string())),
                "{text:?}"
            );
        }
    }

    #[test]
    fn actions() {
        for (text, action) in [
            ("pause", TargetAction::Pause),
            ("promote", TargetAction::Promote),
            ("shutdown", TargetAction::Shutdown),
            ("Promote", TargetAction::Promote),
        ] {
            assert_eq!(text.parse::<TargetAction>().unwrap(), action);
            assert_eq!(action.to_string(), text.to_ascii_lowercase());
        }
        assert_eq!(
            "stop".parse::<TargetAction>(),
            Err(Error::TargetAction("stop".to_string()))
        );
    }
}
