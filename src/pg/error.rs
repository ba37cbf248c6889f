//! The one error type of the `pg` module.
//! Key type: `Error`, whose Display is a single lowercase line naming the
//! object that was malformed. Decision: variants carry static reasons rather
//! than nested sources, because every failure here is a format check.

use super::lsn::Lsn;

/// A malformed PostgreSQL file, name or setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A log sequence number that is not `X/Y` hexadecimal.
    #[error("invalid lsn {0:?}")]
    Lsn(String),
    /// A WAL segment whose first page header is not a valid long header; says which check failed.
    #[error("invalid wal segment header: {0}")]
    SegmentHeader(&'static str),
    /// A WAL page magic of a PostgreSQL version pgsnapfs does not read.
    #[error("unsupported wal page magic {0:#06x}")]
    WalMagic(u16),
    /// A WAL record that cannot be decoded.
    #[error("invalid wal record at {lsn}: {reason}")]
    WalRecord {
        /// Where the record starts.
        lsn: Lsn,
        /// Which check failed.
        reason: &'static str,
    },
    /// A malformed line of a timeline history file.
    #[error("invalid timeline history line {line}: {reason}")]
    History {
        /// The line number, from 1.
        line: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A pg_control file pgsnapfs cannot read; says which check failed.
    #[error("invalid pg_control: {0}")]
    Control(&'static str),
    /// A backup_label pgsnapfs cannot read; says which line or check failed.
    #[error("invalid backup_label: {0}")]
    BackupLabel(&'static str),
    /// A malformed line of a tablespace_map.
    #[error("invalid tablespace_map line {line}: {reason}")]
    TablespaceMap {
        /// The line number, from 1.
        line: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A recovery target time in none of the accepted formats.
    #[error("invalid recovery target time {0:?}: write {formats}", formats = super::target::TIME_FORMATS)]
    TargetTime(String),
    /// A recovery target action other than pause, promote or shutdown.
    #[error("invalid recovery target action {0:?}")]
    TargetAction(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_one_lowercase_line() {
        let errors = [
            Error::Lsn("x".into()),
            Error::SegmentHeader("short"),
            Error::WalMagic(0xd110),
            Error::WalRecord {
                lsn: Lsn(0x100),
                reason: "bad",
            },
            Error::History {
                line: 2,
                reason: "bad",
            },
            Error::Control("crc mismatch"),
            Error::BackupLabel("missing"),
            Error::TablespaceMap {
                line: 1,
                reason: "bad",
            },
            Error::TargetTime("x".into()),
            Error::TargetAction("x".into()),
        ];
        for e in errors {
            let s = e.to_string();
            assert!(!s.contains('\n'), "{s}");
            assert!(s.starts_with(|c: char| c.is_ascii_lowercase()), "{s}");
        }
        assert_eq!(
            Error::WalRecord {
                lsn: Lsn(0x1_0000_0028),
                reason: "crc mismatch"
            }
            .to_string(),
            "invalid wal record at 1/28: crc mismatch"
        );
        assert_eq!(
            Error::WalMagic(0xd110).to_string(),
            "unsupported wal page magic 0xd110"
        );
    }
}
