//! The backup_label and tablespace_map files returned by pg_backup_stop().
//! Key type: `BackupLabel`.
//! Decision: both are parsed as recovery reads them (read_backup_label and
//! read_tablespace_map in xlogrecovery.c), so a file we accept is one the
//! server will accept when it starts from the backup.

use super::lsn::Lsn;
use super::Error;

/// The fields of backup_label that locate and identify a backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupLabel {
    /// Redo start of the backup checkpoint ("START WAL LOCATION").
    pub start_lsn: Lsn,
    /// Position of the backup checkpoint record itself ("CHECKPOINT LOCATION").
    pub checkpoint_lsn: Lsn,
    /// The timeline the backup started on ("START TIMELINE").
    pub start_tli: u32,
    /// As written by the server, e.g. "2026-11-21 05:40:12 UTC".
    pub start_time_text: String,
    /// The label given to pg_backup_start ("LABEL").
    pub label: String,
}

impl BackupLabel {
    /// Parses backup_label text. Lines this module does not need (BACKUP
    /// METHOD, BACKUP FROM, the INCREMENTAL FROM lines of 17+) are ignored.
    pub fn parse(text: &str) -> Result<BackupLabel, Error> {
        let mut start: Option<(Lsn, u32)> = None;
        let mut checkpoint_lsn = None;
        let mut timeline_line = None;
        let mut start_time_text = None;
        let mut label = None;
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("START WAL LOCATION: ") {
                start = Some(start_location(v)?);
            } else if let Some(v) = line.strip_prefix("CHECKPOINT LOCATION: ") {
                checkpoint_lsn = Some(
                    v.parse()
                        .map_err(|_| Error::BackupLabel("invalid checkpoint location"))?,
                );
            } else if let Some(v) = line.strip_prefix("START TIMELINE: ") {
                timeline_line = Some(
                    v.parse::<u32>()
                        .map_err(|_| Error::BackupLabel("invalid start timeline"))?,
                );
            } else if let Some(v) = line.strip_prefix("START TIME: ") {
                start_time_text = Some(v.to_string());
            } else if let Some(v) = line.strip_prefix("LABEL:") {
                // "LABEL: %s"; an empty label may have lost its trailing space.
                label = Some(v.strip_prefix(' ').unwrap_or(v).to_string());
            }
        }
        let (start_lsn, start_tli) =
            start.ok_or(Error::BackupLabel("missing start wal location"))?;
        if timeline_line.is_some_and(|t| t != start_tli) {
            return Err(Error::BackupLabel(
                "start timeline does not match the start wal file",
            ));
        }
        Ok(BackupLabel {
            start_lsn,
            checkpoint_lsn: checkpoint_lsn
                .ok_or(Error::BackupLabel("missing checkpoint location"))?,
            start_tli,
            start_time_text: start_time_text.ok_or(Error::BackupLabel("missing start time"))?,
            label: label.ok_or(Error::BackupLabel("missing label"))?,
        })
    }
}

/// "0/2000028 (file 000000010000000000000002)": the LSN and the timeline of
/// the named file.
fn start_location(v: &str) -> Result<(Lsn, u32), Error> {
    let bad = Error::BackupLabel("invalid start wal location");
    let (lsn, file) = v.split_once(" (file ").ok_or(bad.clone())?;
    let file = file.strip_suffix(')').ok_or(bad.clone())?;
    if file.len() != 24 || !file.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad);
    }
    let tli = u32::from_str_radix(&file[..8], 16).map_err(|_| bad.clone())?;
    Ok((lsn.parse().map_err(|_| bad)?, tli))
}

/// Parses tablespace_map: lines "OID PATH" where backslash escapes the next
/// character (PostgreSQL escapes '\\', '\n' and '\r' in paths).
pub fn parse_tablespace_map(text: &str) -> Result<Vec<(u32, String)>, Error> {
    let mut entries = Vec::new();
    let mut current = String::new();
    let mut escaped = false;
    let mut line = 1;
    for ch in text.chars() {
        if !escaped && (ch == '\n' || ch == '\r') {
            // A "\r\n" ending yields an empty line, which is skipped.
            if !current.is_empty() {
                entries.push(map_entry(&current, line)?);
                current.clear();
            }
            if ch == '\n' {
                line += 1;
            }
        } else if !escaped && ch == '\\' {
            escaped = true;
        } else {
            current.push(ch);
            escaped = false;
        }
    }
    if !current.is_empty() || escaped {
        return Err(Error::TablespaceMap {
            line,
            reason: "last line is not terminated",
        });
    }
    Ok(entries)
}

fn map_entry(line_text: &str, line: usize) -> Result<(u32, String), Error> {
    let bad = |reason| Error::TablespaceMap { line, reason };
    let (oid, path) = line_text
        .split_once(' ')
        .ok_or(bad("expected an oid and a path"))?;
    if oid.is_empty() || path.is_empty() {
        return Err(bad("expected an oid and a path"));
    }
    if !oid.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("invalid oid"));
    }
    let oid = oid.parse().map_err(|_| bad("invalid oid"))?;
    Ok((oid, path.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As returned by pg_backup_stop() on PostgreSQL 15.
    const LABEL: &str = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n\
                         CHECKPOINT LOCATION: 0/2000060\n\
                         BACKUP METHOD: streamed\n\
                         BACKUP FROM: primary\n\
                         START TIME: 2026-11-21 05:40:12 UTC\n\
                         LABEL: nightly: it's #1\n\
                         START TIMELINE: 1\n";

    #[test]
    fn parses_pg_backup_stop_output() {
        assert_eq!(
            BackupLabel::parse(LABEL).unwrap(),
            BackupLabel {
                start_lsn: Lsn(0x200_0028),
                checkpoint_lsn: Lsn(0x200_0060),
                start_tli: 1,
                start_time_text: "2026-11-21 05:40:12 UTC".into(),
                label: "nightly: it's #1".into(),
            }
        );
    }

    #[test]
    fn timeline_comes_from_the_file_name() {
        let text = LABEL
            .replace(
                "(file 000000010000000000000002)",
                "(file 0000000A0000000000000002)",
            )
            .replace("START TIMELINE: 1\n", "INCREMENTAL FROM LSN: 0/1000028\n");
        let l = BackupLabel::parse(&text).unwrap();
        assert_eq!(l.start_tli, 10);
        let mismatch = LABEL.replace("START TIMELINE: 1", "START TIMELINE: 2");
        assert_eq!(
            BackupLabel::parse(&mismatch),
            Err(Error::BackupLabel(
                "start timeline does not match the start wal file"
            ))
        );
    }

    #[test]
    fn empty_label() {
        let l = BackupLabel::parse(&LABEL.replace("LABEL: nightly: it's #1", "LABEL:")).unwrap();
        assert_eq!(l.label, "");
        let l = BackupLabel::parse(&LABEL.replace("LABEL: nightly: it's #1", "LABEL:  x")).unwrap();
        assert_eq!(l.label, " x");
    }

    #[test]
    fn rejects_incomplete_or_malformed_labels() {
        let cases = [
            (
                "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n",
                "missing start wal location",
            ),
            (
                "CHECKPOINT LOCATION: 0/2000060\n",
                "missing checkpoint location",
            ),
            (
                "START TIME: 2026-11-21 05:40:12 UTC\n",
                "missing start time",
            ),
            ("LABEL: nightly: it's #1\n", "missing label"),
        ];
        for (line, reason) in cases {
            assert_eq!(
                BackupLabel::parse(&LABEL.replace(line, "")),
                Err(Error::BackupLabel(reason))
            );
        }
        let bad = [
            (
                "0/2000028 (file 000000010000000000000002)",
                "0/2000028 (file 0000000100000002)",
            ),
            (
                "0/2000028 (file 000000010000000000000002)",
                "0/2000028 file 000000010000000000000002",
            ),
            ("0/2000028 (file", "x/2000028 (file"),
        ];
        for (from, to) in bad {
            assert_eq!(
                BackupLabel::parse(&LABEL.replace(from, to)),
                Err(Error::BackupLabel("invalid start wal location"))
            );
        }
        assert_eq!(
            BackupLabel::parse(
                &LABEL.replace("CHECKPOINT LOCATION: 0/2000060", "CHECKPOINT LOCATION: 0")
            ),
            Err(Error::BackupLabel("invalid checkpoint location"))
        );
        assert_eq!(
            BackupLabel::parse(&LABEL.replace("START TIMELINE: 1", "START TIMELINE: one")),
            Err(Error::BackupLabel("invalid start timeline"))
        );
    }

    #[test]
    fn tablespace_map_with_escapes() {
        let text = "16385 /mnt/ts one\n16386 /mnt/a\\\\b\\\nc\r\n16387  /mnt/leading space\n";
        assert_eq!(
            parse_tablespace_map(text).unwrap(),
            vec![
                (16385, "/mnt/ts one".to_string()),
                (16386, "/mnt/a\\b\nc".to_string()),
                (16387, " /mnt/leading space".to_string()),
            ]
        );
        assert_eq!(parse_tablespace_map("").unwrap(), vec![]);
    }

    #[test]
    fn tablespace_map_errors() {
        let cases = [
            ("16385 /mnt/ts", 1, "last line is not terminated"),
            ("16385 /mnt/ts\\", 1, "last line is not terminated"),
            ("16385 /a\n16386\n", 2, "expected an oid and a path"),
            ("16385 \n", 1, "expected an oid and a path"),
            (" /mnt/ts\n", 1, "expected an oid and a path"),
            ("x1 /mnt/ts\n", 1, "invalid oid"),
            ("99999999999 /mnt/ts\n", 1, "invalid oid"),
        ];
        for (text, line, reason) in cases {
            assert_eq!(
                parse_tablespace_map(text),
                Err(Error::TablespaceMap { line, reason }),
                "{text:?}"
            );
        }
    }
}
