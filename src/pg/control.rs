//! The control file, global/pg_control: cluster identity and version.
//! Key type: `ControlData`.
//! Decision: the CRC is verified whenever the layout (PG_CONTROL_VERSION) is
//! one we know, and the major is named only when the version pair identifies
//! it; for a big-endian or unknown-layout file both are skipped, not guessed.

use super::lsn::Lsn;
use super::version::MAJORS;
use super::wal::{le_u32, le_u64};
use super::Error;

/// The identifying fields of pg_control.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlData {
    /// The cluster's system identifier, shared by its standbys and its WAL.
    pub system_identifier: u64,
    /// PG_CONTROL_VERSION, the layout of the file.
    pub control_version: u32,
    /// CATALOG_VERSION_NO, the system catalog format.
    pub catalog_version: u32,
    /// The major version (13–18) if the version pair identifies one.
    pub major: Option<u32>,
}

impl ControlData {
    /// Parses the bytes of global/pg_control (8192 bytes, only the first few
    /// hundred are used).
    pub fn parse(bytes: &[u8]) -> Result<ControlData, Error> {
        if bytes.len() < 16 {
            return Err(Error::Control("shorter than its version fields"));
        }
        let control_version = le_u32(bytes, 8);
        let catalog_version = le_u32(bytes, 12);
        let layout = MAJORS.iter().find(|m| m.control_version == control_version);
        if let Some(layout) = layout {
            let at = layout.control_crc_offset;
            if bytes.len() < at + 4 {
                return Err(Error::Control("shorter than its crc"));
            }
            if crc32c::crc32c(&bytes[..at]) != le_u32(bytes, at) {
                return Err(Error::Control("crc mismatch"));
            }
        }
        Ok(ControlData {
            system_identifier: le_u64(bytes, 0),
            control_version,
            catalog_version,
            major: major_of(control_version, catalog_version),
        })
    }
}

/// The settings a hot standby must have at least as high as the server that wrote the WAL,
/// as pg_control last recorded them: (name in postgresql.conf, value). None for a layout
/// this does not know (the fields sit at the same offsets in 13–18, little-endian).
pub fn standby_minimums(bytes: &[u8]) -> Result<Option<[(&'static str, u32); 5]>, Error> {
    let control = ControlData::parse(bytes)?;
    let known = MAJORS
        .iter()
        .any(|m| m.control_version == control.control_version);
    if !known || bytes.len() < 200 {
        return Ok(None);
    }
    Ok(Some([
        ("max_connections", le_u32(bytes, 180)),
        ("max_worker_processes", le_u32(bytes, 184)),
        ("max_wal_senders", le_u32(bytes, 188)),
        ("max_prepared_transactions", le_u32(bytes, 192)),
        ("max_locks_per_transaction", le_u32(bytes, 196)),
    ]))
}

/// Where a cluster stands in recovery, as pg_control records it: what a backup made by
/// replaying WAL on a copy must record so that a later start resumes from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryPoint {
    /// The cluster state (`DBState`): see [`RecoveryPoint::shut_down_in_recovery`].
    pub state: u32,
    /// The latest checkpoint (or restartpoint) record.
    pub checkpoint: Lsn,
    /// Where replay starts from that checkpoint.
    pub redo: Lsn,
    /// The checkpoint's timeline.
    pub timeline: u32,
    /// How far replay must go before the cluster is consistent (0/0: no constraint).
    pub min_recovery_point: Lsn,
    /// The timeline of `min_recovery_point`.
    pub min_recovery_timeline: u32,
}

/// DB_SHUTDOWNED_IN_RECOVERY in `DBState`.
const SHUT_DOWN_IN_RECOVERY: u32 = 2;

impl RecoveryPoint {
    /// Reads the recovery fields of pg_control; None for a layout this does not know (they
    /// sit at the same offsets in 13–18, little-endian).
    pub fn parse(bytes: &[u8]) -> Result<Option<RecoveryPoint>, Error> {
        let control = ControlData::parse(bytes)?;
        let known = MAJORS
            .iter()
            .any(|m| m.control_version == control.control_version);
        if !known || bytes.len() < 148 {
            return Ok(None);
        }
        Ok(Some(RecoveryPoint {
            state: le_u32(bytes, 16),
            checkpoint: Lsn(le_u64(bytes, 32)),
            redo: Lsn(le_u64(bytes, 40)),
            timeline: le_u32(bytes, 48),
            min_recovery_point: Lsn(le_u64(bytes, 136)),
            min_recovery_timeline: le_u32(bytes, 144),
        }))
    }

    /// Whether the server shut down cleanly while in recovery (a restartpoint written), so
    /// that a start resumes recovery from here.
    pub fn shut_down_in_recovery(&self) -> bool {
        self.state == SHUT_DOWN_IN_RECOVERY
    }
}

/// Majors 13–16 share a control version and differ in catalog version;
/// beta releases have other catalog versions, so a control version used by a
/// single major is enough on its own.
fn major_of(control_version: u32, catalog_version: u32) -> Option<u32> {
    let same_layout = || {
        MAJORS
            .iter()
            .filter(|m| m.control_version == control_version)
    };
    if let Some(m) = same_layout().find(|m| m.catalog_version == catalog_version) {
        return Some(m.major);
    }
    let mut candidates = same_layout();
    match (candidates.next(), candidates.next()) {
        (Some(only), None) => Some(only.major),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PG15: &[u8] = include_bytes!("testdata/pg15_pg_control");
    const PG15_EXPECTED: &str = include_str!("testdata/pg15_pg_control.expected");

    /// A value from the pg_controldata output stored with the fixture.
    fn expected(field: &str) -> String {
        PG15_EXPECTED
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.strip_prefix(':'))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("{field} missing from pg_controldata output"))
    }

    #[test]
    fn recovery_fields_of_a_real_pg15_control_file() {
        let p = RecoveryPoint::parse(PG15).unwrap().unwrap();
        let lsn = |f: &str| expected(f).parse::<Lsn>().unwrap();
        assert_eq!(p.checkpoint, lsn("Latest checkpoint location"));
        assert_eq!(p.redo, lsn("Latest checkpoint's REDO location"));
        assert_eq!(
            p.timeline.to_string(),
            expected("Latest checkpoint's TimeLineID")
        );
        assert_eq!(
            p.min_recovery_point,
            lsn("Minimum recovery ending location")
        );
        assert_eq!(
            p.min_recovery_timeline.to_string(),
            expected("Min recovery ending loc's timeline")
        );
        // "in production"
        assert_eq!(p.state, 6);
        assert!(!p.shut_down_in_recovery());
    }

    #[test]
    fn real_pg15_control_file() {
        let c = ControlData::parse(PG15).unwrap();
        assert_eq!(
            c.system_identifier.to_string(),
            expected("Database system identifier")
        );
        assert_eq!(
            c.control_version.to_string(),
            expected("pg_control version number")
        );
        assert_eq!(
            c.catalog_version.to_string(),
            expected("Catalog version number")
        );
        assert_eq!(c.control_version, 1300);
        assert_eq!(c.major, Some(15));
    }

    #[test]
    fn standby_minimums_of_a_real_control_file() {
        let got = standby_minimums(PG15).unwrap().unwrap();
        let setting = |field: &str| expected(&format!("{field} setting"));
        let want = [
            ("max_connections", setting("max_connections")),
            ("max_worker_processes", setting("max_worker_processes")),
            ("max_wal_senders", setting("max_wal_senders")),
            ("max_prepared_transactions", setting("max_prepared_xacts")),
            ("max_locks_per_transaction", setting("max_locks_per_xact")),
        ];
        let got: Vec<(&str, String)> = got.iter().map(|(n, v)| (*n, v.to_string())).collect();
        assert_eq!(got, want);
        assert_eq!(standby_minimums(&synthetic(1201, 201909212, 288)), Ok(None));
    }

    #[test]
    fn crc_mismatch_is_rejected() {
        let mut bytes = PG15.to_vec();
        bytes[100] ^= 1;
        assert_eq!(
            ControlData::parse(&bytes),
            Err(Error::Control("crc mismatch"))
        );
        // Bytes past the crc are not covered by it.
        let mut bytes = PG15.to_vec();
        bytes[4000] ^= 1;
        assert!(ControlData::parse(&bytes).is_ok());
    }

    /// A synthetic control file with a valid crc at `crc_at`.
    fn synthetic(control_version: u32, catalog_version: u32, crc_at: usize) -> Vec<u8> {
        let mut b = vec![0u8; 8192];
        b[0..8].copy_from_slice(&42u64.to_le_bytes());
        b[8..12].copy_from_slice(&control_version.to_le_bytes());
        b[12..16].copy_from_slice(&catalog_version.to_le_bytes());
        let crc = crc32c::crc32c(&b[..crc_at]);
        b[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
        b
    }

    #[test]
    fn majors_by_version_pair() {
        let cases = [
            (1300, 202007201, 288, Some(13)),
            (1300, 202107181, 288, Some(14)),
            (1300, 202209061, 288, Some(15)),
            (1300, 202307071, 288, Some(16)),
            (1300, 202301011, 288, None),
            (1700, 202406281, 288, Some(17)),
            (1700, 202405161, 288, Some(17)),
            (1800, 202506291, 292, Some(18)),
        ];
        for (control, catalog, crc_at, major) in cases {
            let c = ControlData::parse(&synthetic(control, catalog, crc_at)).unwrap();
            assert_eq!(c.major, major, "{control} {catalog}");
            assert_eq!(c.system_identifier, 42);
        }
        // 18 moved the crc: a 17-style file claiming 1800 fails.
        assert_eq!(
            ControlData::parse(&synthetic(1800, 202506291, 288)),
            Err(Error::Control("crc mismatch"))
        );
    }

    #[test]
    fn unknown_layout_is_not_checked() {
        let mut b = synthetic(1201, 201909212, 288);
        b[200] ^= 1;
        let c = ControlData::parse(&b).unwrap();
        assert_eq!((c.control_version, c.major), (1201, None));
    }

    #[test]
    fn short_files() {
        assert_eq!(
            ControlData::parse(&[0u8; 15]),
            Err(Error::Control("shorter than its version fields"))
        );
        assert_eq!(
            ControlData::parse(&PG15[..290]),
            Err(Error::Control("shorter than its crc"))
        );
    }
}
