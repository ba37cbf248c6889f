//! WAL file names and segment headers.
//! Key types: `WalFile` (segment, .partial, .history and .backup names) and
//! `SegmentHeader` (XLogLongPageHeaderData of a segment's first page).
//! Decision: the segment size is always an explicit parameter, because the
//! last 16 hex digits of a segment name depend on it.

use super::lsn::Lsn;
use super::version::MAJORS;
use super::Error;

/// wal_segment_size of a default initdb.
pub const DEFAULT_SEG_SIZE: u64 = 16 * 1024 * 1024;

/// xlp_info bit: the page starts with the rest of a record from the previous page.
pub(super) const XLP_FIRST_IS_CONTRECORD: u16 = 0x0001;
/// xlp_info bit: the page has the long header (first page of a segment).
pub(super) const XLP_LONG_HEADER: u16 = 0x0002;
/// SizeOfXLogShortPHD.
pub(super) const SHORT_PAGE_HEADER_SIZE: usize = 24;
/// SizeOfXLogLongPHD.
pub(super) const LONG_PAGE_HEADER_SIZE: usize = 40;

/// A file name found in a WAL archive or pg_wal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WalFile {
    /// `TTTTTTTTXXXXXXXXYYYYYYYY`
    Segment {
        /// The timeline.
        tli: u32,
        /// The segment number (the LSN divided by the segment size).
        segno: u64,
    },
    /// `TTTTTTTTXXXXXXXXYYYYYYYY.partial`, written at a timeline switch.
    Partial {
        /// The timeline.
        tli: u32,
        /// The segment number.
        segno: u64,
    },
    /// `TTTTTTTT.history`
    History {
        /// The new timeline the history leads to.
        tli: u32,
    },
    /// `TTTTTTTTXXXXXXXXYYYYYYYY.OOOOOOOO.backup`; offset of the backup start
    /// within its segment.
    Backup {
        /// The timeline the backup started on.
        tli: u32,
        /// The segment of the backup start.
        segno: u64,
        /// Byte offset of the backup start within that segment.
        offset: u32,
    },
}

fn hex_u32(s: &str) -> Option<u32> {
    // PostgreSQL writes and matches names with upper-case hex only.
    if s.len() == 8
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
    {
        u32::from_str_radix(s, 16).ok()
    } else {
        None
    }
}

fn segments_per_id(seg_size: u64) -> u64 {
    0x1_0000_0000 / seg_size
}

fn parse_segment(name: &str, seg_size: u64) -> Option<(u32, u64)> {
    // Not ASCII: the slices below could cut a character.
    if name.len() != 24 || !name.is_ascii() {
        return None;
    }
    let tli = hex_u32(&name[0..8])?;
    let log = u64::from(hex_u32(&name[8..16])?);
    let seg = u64::from(hex_u32(&name[16..24])?);
    // A size of 0 (a file that is not a segment, a record that does not say) names no segment.
    let per_id = 0x1_0000_0000u64.checked_div(seg_size)?;
    (seg < per_id).then_some((tli, log * per_id + seg))
}

/// The name of segment `segno` of timeline `tli`.
pub fn segment_name(tli: u32, segno: u64, seg_size: u64) -> String {
    let per_id = segments_per_id(seg_size);
    format!("{tli:08X}{:08X}{:08X}", segno / per_id, segno % per_id)
}

impl WalFile {
    /// Parses a WAL file name; `seg_size` is wal_segment_size in bytes (a power
    /// of two between 1 MiB and 1 GiB).
    pub fn parse(name: &str, seg_size: u64) -> Option<WalFile> {
        if let Some(stem) = name.strip_suffix(".partial") {
            let (tli, segno) = parse_segment(stem, seg_size)?;
            return Some(WalFile::Partial { tli, segno });
        }
        if let Some(stem) = name.strip_suffix(".history") {
            return Some(WalFile::History {
                tli: hex_u32(stem)?,
            });
        }
        if let Some(stem) = name.strip_suffix(".backup") {
            let (seg, offset) = stem.split_once('.')?;
            let (tli, segno) = parse_segment(seg, seg_size)?;
            let offset = hex_u32(offset)?;
            return (u64::from(offset) < seg_size).then_some(WalFile::Backup {
                tli,
                segno,
                offset,
            });
        }
        let (tli, segno) = parse_segment(name, seg_size)?;
        Some(WalFile::Segment { tli, segno })
    }

    /// The file name PostgreSQL uses for this file.
    pub fn name(&self, seg_size: u64) -> String {
        match *self {
            WalFile::Segment { tli, segno } => segment_name(tli, segno, seg_size),
            WalFile::Partial { tli, segno } => {
                format!("{}.partial", segment_name(tli, segno, seg_size))
            }
            WalFile::History { tli } => format!("{tli:08X}.history"),
            WalFile::Backup { tli, segno, offset } => {
                format!("{}.{offset:08X}.backup", segment_name(tli, segno, seg_size))
            }
        }
    }

    /// The timeline the file belongs to.
    pub fn tli(&self) -> u32 {
        match *self {
            WalFile::Segment { tli, .. }
            | WalFile::Partial { tli, .. }
            | WalFile::History { tli }
            | WalFile::Backup { tli, .. } => tli,
        }
    }
}

/// The segment number holding `lsn` (XLByteToSeg).
pub fn segment_of(lsn: Lsn, seg_size: u64) -> u64 {
    lsn.0 / seg_size
}

/// The first position of segment `segno`.
pub fn segment_start(segno: u64, seg_size: u64) -> Lsn {
    Lsn(segno * seg_size)
}

/// The long page header at the start of every WAL segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// XLOG_PAGE_MAGIC, which tells the PostgreSQL major version.
    pub magic: u16,
    /// The timeline the segment was written on.
    pub tli: u32,
    /// Position of the segment's first byte.
    pub pageaddr: u64,
    /// The system identifier of the cluster that wrote it.
    pub system_identifier: u64,
    /// The segment size in bytes (wal_segment_size).
    pub seg_size: u32,
    /// XLOG_BLCKSZ, the WAL page size.
    pub block_size: u32,
}

pub(super) fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

pub(super) fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

pub(super) fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl SegmentHeader {
    /// Reads XLogLongPageHeaderData from the first page of a segment.
    pub fn parse(first_page: &[u8]) -> Result<SegmentHeader, Error> {
        if first_page.len() < LONG_PAGE_HEADER_SIZE {
            return Err(Error::SegmentHeader("shorter than a long page header"));
        }
        if le_u16(first_page, 2) & XLP_LONG_HEADER == 0 {
            return Err(Error::SegmentHeader(
                "first page lacks the long header flag",
            ));
        }
        let header = SegmentHeader {
            magic: le_u16(first_page, 0),
            tli: le_u32(first_page, 4),
            pageaddr: le_u64(first_page, 8),
            system_identifier: le_u64(first_page, 24),
            seg_size: le_u32(first_page, 32),
            block_size: le_u32(first_page, 36),
        };
        // Ranges allowed by initdb --wal-segsize and configure --with-wal-blocksize.
        if !header.seg_size.is_power_of_two() || !(1 << 20..=1 << 30).contains(&header.seg_size) {
            return Err(Error::SegmentHeader("invalid segment size"));
        }
        if !header.block_size.is_power_of_two() || !(1 << 10..=1 << 16).contains(&header.block_size)
        {
            return Err(Error::SegmentHeader("invalid page size"));
        }
        if !header.pageaddr.is_multiple_of(u64::from(header.seg_size)) {
            return Err(Error::SegmentHeader("page address is not a segment start"));
        }
        Ok(header)
    }
}

/// The PostgreSQL major that writes WAL pages with this XLOG_PAGE_MAGIC.
pub fn major_from_wal_magic(magic: u16) -> Option<u32> {
    MAJORS
        .iter()
        .find(|m| m.wal_magic == magic)
        .map(|m| m.major)
}

#[cfg(test)]
mod tests {
    use super::super::control::ControlData;
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn a_name_of_24_bytes_that_is_not_ascii_is_no_segment() {
        // 8 ASCII bytes, then a 2-byte character across the slice at byte 16.
        let name = "00000001000000020000000\u{e9}";
        assert_eq!(name.len(), 25);
        let name = "0000000100000002000000\u{e9}";
        assert_eq!(name.len(), 24);
        assert!(WalFile::parse(name, DEFAULT_SEG_SIZE).is_none());
        let cut = "000000010000000\u{e9}0000000";
        assert_eq!(cut.len(), 24);
        assert!(WalFile::parse(cut, DEFAULT_SEG_SIZE).is_none());
    }

    #[test]
    fn segment_names_depend_on_segment_size() {
        let f = WalFile::parse("000000010000000200000003", DEFAULT_SEG_SIZE).unwrap();
        assert_eq!(
            f,
            WalFile::Segment {
                tli: 1,
                segno: 2 * 256 + 3
            }
        );
        let f = WalFile::parse("000000010000000200000003", 64 * MIB).unwrap();
        assert_eq!(
            f,
            WalFile::Segment {
                tli: 1,
                segno: 2 * 64 + 3
            }
        );
        let f = WalFile::parse("0000000A00000001000003FF", MIB).unwrap();
        assert_eq!(
            f,
            WalFile::Segment {
                tli: 10,
                segno: 4096 + 1023
            }
        );
        // 0x40 is not a valid low part with 64 MiB segments (only 0..0x3F).
        assert_eq!(WalFile::parse("000000010000000200000040", 64 * MIB), None);
    }

    #[test]
    fn names_roundtrip() {
        let files = [
            WalFile::Segment {
                tli: 1,
                segno: 0x1_23,
            },
            WalFile::Partial { tli: 2, segno: 7 },
            WalFile::History { tli: 0x1F },
            WalFile::Backup {
                tli: 1,
                segno: 2,
                offset: 0x28,
            },
        ];
        for f in files {
            for size in [MIB, DEFAULT_SEG_SIZE, 1024 * MIB] {
                assert_eq!(WalFile::parse(&f.name(size), size), Some(f));
            }
        }
        assert_eq!(files[0].name(DEFAULT_SEG_SIZE), "000000010000000100000023");
        assert_eq!(
            files[1].name(DEFAULT_SEG_SIZE),
            "000000020000000000000007.partial"
        );
        assert_eq!(files[2].name(DEFAULT_SEG_SIZE), "0000001F.history");
        assert_eq!(
            files[3].name(DEFAULT_SEG_SIZE),
            "000000010000000000000002.00000028.backup"
        );
    }

    #[test]
    fn parse_rejects_other_names() {
        for name in [
            "",
            "00000001000000000000000",
            "0000000100000000000000011",
            "00000001000000000000000a",
            "000000010000000000000001.tmp",
            "00000001.history.tmp",
            "0000001.history",
            "000000010000000000000001.0000028.backup",
            "000000010000000000000001.01000000.backup",
            "000000010000000000000001.partial.partial",
            "archive_status",
        ] {
            assert_eq!(WalFile::parse(name, DEFAULT_SEG_SIZE), None, "{name:?}");
        }
        // No segment size (wal-push of a backup or history file): no segment, no panic.
        for name in [
            "000000010000000000000001",
            "000000010000000000000001.partial",
            "000000010000000000000001.00000028.backup",
        ] {
            assert_eq!(WalFile::parse(name, 0), None, "{name:?}");
        }
        assert_eq!(
            WalFile::parse("00000002.history", 0),
            Some(WalFile::History { tli: 2 })
        );
    }

    #[test]
    fn tli_of_every_kind() {
        assert_eq!(WalFile::Segment { tli: 3, segno: 1 }.tli(), 3);
        assert_eq!(WalFile::Partial { tli: 4, segno: 1 }.tli(), 4);
        assert_eq!(WalFile::History { tli: 5 }.tli(), 5);
        assert_eq!(
            WalFile::Backup {
                tli: 6,
                segno: 1,
                offset: 0
            }
            .tli(),
            6
        );
    }

    #[test]
    fn segment_arithmetic() {
        assert_eq!(segment_of(Lsn(0x16_B374_D848), DEFAULT_SEG_SIZE), 0x16B3);
        assert_eq!(segment_of(Lsn(0x1FF_FFFF), DEFAULT_SEG_SIZE), 1);
        assert_eq!(segment_of(Lsn(0x200_0000), DEFAULT_SEG_SIZE), 2);
        assert_eq!(segment_start(2, DEFAULT_SEG_SIZE), Lsn(0x200_0000));
        assert_eq!(segment_start(0x16B3, DEFAULT_SEG_SIZE), Lsn(0x16_B300_0000));
    }

    fn long_header(info: u16, seg_size: u32, block: u32, pageaddr: u64) -> Vec<u8> {
        let mut p = vec![0u8; 8192];
        p[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
        p[2..4].copy_from_slice(&info.to_le_bytes());
        p[4..8].copy_from_slice(&7u32.to_le_bytes());
        p[8..16].copy_from_slice(&pageaddr.to_le_bytes());
        p[24..32].copy_from_slice(&0x1234_5678_9ABC_DEF0u64.to_le_bytes());
        p[32..36].copy_from_slice(&seg_size.to_le_bytes());
        p[36..40].copy_from_slice(&block.to_le_bytes());
        p
    }

    #[test]
    fn header_parse() {
        let h = SegmentHeader::parse(&long_header(0x0006, 16 << 20, 8192, 0x300_0000)).unwrap();
        assert_eq!(
            h,
            SegmentHeader {
                magic: 0xD110,
                tli: 7,
                pageaddr: 0x300_0000,
                system_identifier: 0x1234_5678_9ABC_DEF0,
                seg_size: 16 << 20,
                block_size: 8192,
            }
        );
    }

    #[test]
    fn header_parse_rejects_bad_pages() {
        let cases = [
            (
                long_header(0x0000, 16 << 20, 8192, 0),
                "first page lacks the long header flag",
            ),
            (
                long_header(0x0002, 3 << 20, 8192, 0),
                "invalid segment size",
            ),
            (
                long_header(0x0002, 2 << 30, 8192, 0),
                "invalid segment size",
            ),
            (long_header(0x0002, 16 << 20, 100, 0), "invalid page size"),
            (
                long_header(0x0002, 16 << 20, 8192, 0x2000),
                "page address is not a segment start",
            ),
        ];
        for (page, reason) in cases {
            assert_eq!(
                SegmentHeader::parse(&page),
                Err(Error::SegmentHeader(reason))
            );
        }
        assert_eq!(
            SegmentHeader::parse(&[0u8; 39]),
            Err(Error::SegmentHeader("shorter than a long page header"))
        );
    }

    #[test]
    fn real_pg15_segment_header() {
        let data = include_bytes!("testdata/pg15_wal_000000010000000000000002.prefix");
        let h = SegmentHeader::parse(data).unwrap();
        assert_eq!(h.magic, 0xD110);
        assert_eq!(h.tli, 1);
        assert_eq!(h.pageaddr, 0x200_0000);
        // Both fixtures come from the same cluster.
        let control = ControlData::parse(include_bytes!("testdata/pg15_pg_control")).unwrap();
        assert_eq!(h.system_identifier, control.system_identifier);
        assert_eq!(h.seg_size, 16 << 20);
        assert_eq!(h.block_size, 8192);
        assert_eq!(major_from_wal_magic(h.magic), Some(15));
    }

    #[test]
    fn magic_to_major() {
        let expected = [
            (0xD106, 13),
            (0xD10D, 14),
            (0xD110, 15),
            (0xD113, 16),
            (0xD116, 17),
            (0xD118, 18),
        ];
        for (magic, major) in expected {
            assert_eq!(major_from_wal_magic(magic), Some(major));
        }
        assert_eq!(major_from_wal_magic(0xD101), None);
        assert_eq!(major_from_wal_magic(0xD120), None);
    }
}
