//! A WAL record scanner that summarises one archived segment: the commit
//! times, xids and restore points in it, i.e. which recovery targets it serves;
//! and the tablespaces it creates, whose redo touches the replaying host.
//! Key types: `SegmentSummary`, `RestorePoint`, `TablespaceCreation`.
//! Decision: like PostgreSQL's xlogreader, the scan ends quietly at the first
//! record that is missing, torn, misplaced or fails its CRC, since that is how
//! the end of WAL looks in partial and recycled segments.

use std::borrow::Cow;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use super::lsn::Lsn;
use super::version::{self, Major};
use super::wal::{
    self, le_u16, le_u32, le_u64, SegmentHeader, LONG_PAGE_HEADER_SIZE, SHORT_PAGE_HEADER_SIZE,
    XLP_FIRST_IS_CONTRECORD, XLP_LONG_HEADER,
};
use super::Error;

/// SizeOfXLogRecord.
const RECORD_HEADER_SIZE: usize = 24;
/// XLogRecordMaxSize: a longer xl_tot_len is garbage.
const MAX_RECORD_SIZE: usize = 1020 * 1024 * 1024;

const RM_XLOG_ID: u8 = 0;
const RM_XACT_ID: u8 = 1;
const RM_TBLSPC_ID: u8 = 5;
const RM_STANDBY_ID: u8 = 8;
const XLOG_STANDBY_LOCK: u8 = 0x00;
const XLOG_RUNNING_XACTS: u8 = 0x10;
/// sizeof(xl_standby_lock): xid, dbOid, relOid.
const STANDBY_LOCK_SIZE: usize = 12;
/// offsetof(xl_running_xacts, oldestRunningXid).
const OLDEST_RUNNING_XID_AT: usize = 16;
const XLOG_TBLSPC_CREATE: u8 = 0x00;
const XLR_RMGR_INFO_MASK: u8 = 0xF0;
const XLOG_SWITCH: u8 = 0x40;
const XLOG_RESTORE_POINT: u8 = 0x70;

const XLOG_XACT_OPMASK: u8 = 0x70;
const XLOG_XACT_HAS_INFO: u8 = 0x80;
const XLOG_XACT_COMMIT: u8 = 0x00;
const XLOG_XACT_ABORT: u8 = 0x20;
const XLOG_XACT_COMMIT_PREPARED: u8 = 0x30;
const XLOG_XACT_ABORT_PREPARED: u8 = 0x40;

const XACT_XINFO_HAS_DBINFO: u32 = 1 << 0;
const XACT_XINFO_HAS_SUBXACTS: u32 = 1 << 1;
const XACT_XINFO_HAS_RELFILELOCATORS: u32 = 1 << 2;
const XACT_XINFO_HAS_INVALS: u32 = 1 << 3;
const XACT_XINFO_HAS_TWOPHASE: u32 = 1 << 4;
const XACT_XINFO_HAS_DROPPED_STATS: u32 = 1 << 8;
/// sizeof(RelFileLocator), called RelFileNode before 16.
const REL_FILE_LOCATOR_SIZE: usize = 12;
/// sizeof(SharedInvalidationMessage).
const INVAL_MESSAGE_SIZE: usize = 16;

const XLR_MAX_BLOCK_ID: u8 = 32;
const XLR_BLOCK_ID_DATA_SHORT: u8 = 255;
const XLR_BLOCK_ID_DATA_LONG: u8 = 254;
const XLR_BLOCK_ID_ORIGIN: u8 = 253;
const XLR_BLOCK_ID_TOPLEVEL_XID: u8 = 252;
const BKPBLOCK_HAS_IMAGE: u8 = 0x10;
const BKPBLOCK_SAME_REL: u8 = 0x80;
const BKPIMAGE_HAS_HOLE: u8 = 0x01;

/// MAXFNAMELEN, the size of xl_restore_point.rp_name.
const RESTORE_POINT_NAME_SIZE: usize = 64;

/// 2000-01-01 00:00:00 UTC, PostgreSQL's timestamp epoch, in Unix microseconds.
const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

/// A named point created by pg_create_restore_point().
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestorePoint {
    /// The name given to pg_create_restore_point().
    pub name: String,
    /// PostgreSQL timestamp (microseconds since 2000-01-01 UTC).
    pub time: i64,
    /// Start of the restore point record.
    pub lsn: Lsn,
}

/// A CREATE TABLESPACE record (xl_tblspc_create_rec). Its redo works on `location` of the
/// host that replays it: chmod, removal of the version directory there, mkdir, and a link
/// from pg_tblspc.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TablespaceCreation {
    /// Start of the record.
    pub lsn: Lsn,
    /// Start of the record before it (xl_prev): an inclusive `recovery_target_lsn` stops
    /// after the first record at or past the target, so only a target at or before this one
    /// stops before the creation.
    pub prev: Lsn,
    /// The tablespace's oid.
    pub oid: u32,
    /// The absolute directory given to CREATE TABLESPACE (empty for an in-place tablespace,
    /// made inside pg_tblspc); `None` when the record goes on into the next segment, so the
    /// scan of this one cannot read it.
    pub location: Option<String>,
}

/// What a WAL segment offers as point-in-time recovery targets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentSummary {
    /// Earliest and latest xact_time of COMMIT, ABORT, COMMIT_PREPARED and
    /// ABORT_PREPARED records (PostgreSQL timestamps). Min and max rather than
    /// first and last in WAL order: concurrent commits may be logged slightly
    /// out of time order.
    pub first_commit_time: Option<i64>,
    /// Latest commit (or abort) time, as a PostgreSQL timestamp.
    pub last_commit_time: Option<i64>,
    /// The restore points, in WAL order.
    pub restore_points: Vec<RestorePoint>,
    /// Smallest and largest ended transaction id, compared modulo 2^32 as
    /// PostgreSQL does (the xids of one segment are close together).
    pub min_commit_xid: Option<u32>,
    /// Largest ended transaction id (see `min_commit_xid`).
    pub max_commit_xid: Option<u32>,
    /// End of the last complete record found (of a record begun in the
    /// previous segment if none begins here); the segment start if none.
    pub end_lsn: Lsn,
    /// The CREATE TABLESPACE records, in WAL order; `None` in a summary written before
    /// pgsnapfs looked for them (unknown: read the segment).
    #[serde(default)]
    pub tablespaces: Option<Vec<TablespaceCreation>>,
}

/// Converts a PostgreSQL timestamp to microseconds since the Unix epoch.
pub fn pg_time_to_unix_micros(t: i64) -> i64 {
    t.saturating_add(PG_EPOCH_UNIX_MICROS)
}

/// Converts microseconds since the Unix epoch to a PostgreSQL timestamp.
pub fn unix_micros_to_pg_time(t: i64) -> i64 {
    t.saturating_sub(PG_EPOCH_UNIX_MICROS)
}

/// A PostgreSQL timestamp as a UTC time (the Unix epoch when out of range).
pub fn utc_of_pg(t: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(pg_time_to_unix_micros(t)).unwrap_or_default()
}

/// Formats a PostgreSQL timestamp as RFC 3339 in UTC, e.g.
/// "2026-11-20T14:30:00.123456Z"; out-of-range values print as PostgreSQL
/// prints its infinities.
pub fn format_pg_time(t: i64) -> String {
    match DateTime::from_timestamp_micros(pg_time_to_unix_micros(t)) {
        Some(utc) => utc.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        None if t < 0 => "-infinity".to_string(),
        None => "infinity".to_string(),
    }
}

/// Summarises a WAL segment as archived (a whole segment, a .partial file or
/// a prefix of one). `header` is its long page header (`SegmentHeader::parse`);
/// the caller checks that `header.pageaddr` starts the segment the file is
/// named for, since a recycled file not yet reused keeps its old header.
/// Fails on an unknown page magic, or on a transaction or restore point
/// record that passed its CRC but does not decode (a format we do not know).
pub fn scan_segment(data: &[u8], header: &SegmentHeader) -> Result<SegmentSummary, Error> {
    let scan = scan(data, header)?;
    Ok(summarise(
        &scan.xact_ends,
        scan.restore_points,
        scan.tablespaces,
        scan.end_lsn,
    ))
}

/// The CREATE TABLESPACE records of a segment, as [`scan_segment`] finds them but reading
/// nothing else: what `wal-fetch` checks before it hands a segment to a view's server. Fails
/// where a tablespace record does not decode.
pub fn tablespace_creations(
    data: &[u8],
    header: &SegmentHeader,
) -> Result<Vec<TablespaceCreation>, Error> {
    let major = major_of(header)?;
    let mut records = Records::new(data, header)?;
    let mut found = Vec::new();
    for r in records.by_ref() {
        if let Some(c) = tablespace_creation(&r.bytes, major, r.lsn)? {
            found.push(c);
        }
    }
    found.extend(records.cut);
    Ok(found)
}

/// Summarises the records of a segment that begin before `at`, and those that begin at or
/// after it, for each of the ascending positions `at`: the sides of timeline switchpoints, as
/// a timeline's copy of a segment holds its ancestors' WAL up to each switch. Returns
/// `at.len() + 1` summaries, in order.
pub fn scan_segment_split(
    data: &[u8],
    header: &SegmentHeader,
    at: &[Lsn],
) -> Result<Vec<SegmentSummary>, Error> {
    let scan = scan(data, header)?;
    let mut out = Vec::with_capacity(at.len() + 1);
    let (mut xacts, mut points, mut spaces) =
        (&scan.xact_ends[..], scan.restore_points, scan.tablespaces);
    for &end in at {
        let split = xacts.partition_point(|x| x.lsn < end);
        let (before, after): (Vec<_>, Vec<_>) = points.into_iter().partition(|r| r.lsn < end);
        let (made, later): (Vec<_>, Vec<_>) = spaces.into_iter().partition(|t| t.lsn < end);
        out.push(summarise(&xacts[..split], before, made, end));
        (xacts, points, spaces) = (&xacts[split..], after, later);
    }
    out.push(summarise(xacts, points, spaces, scan.end_lsn));
    Ok(out)
}

/// The start of the next-to-last record that begins and ends in a segment. As an
/// inclusive `recovery_target_lsn`, recovery replays the segment but its last record and
/// stops; a later recovery that stops as soon as it is consistent there (`recovery_target
/// = 'immediate'`) then still finds a record to stop before. None if fewer than two
/// records begin and end in the segment.
pub fn next_to_last_record_start(
    data: &[u8],
    header: &SegmentHeader,
) -> Result<Option<Lsn>, Error> {
    let mut last = [None, None];
    for r in Records::new(data, header)? {
        last = [last[1], Some(r.lsn)];
    }
    Ok(last[1].and(last[0]))
}

fn summarise(
    xact_ends: &[XactEnd],
    restore_points: Vec<RestorePoint>,
    tablespaces: Vec<TablespaceCreation>,
    end_lsn: Lsn,
) -> SegmentSummary {
    let times = xact_ends.iter().map(|x| x.time);
    let mut xids = xact_ends.iter().map(|x| x.xid).filter(|&x| x != 0);
    let first_xid = xids.next();
    let (min_xid, max_xid) = xids.fold((first_xid, first_xid), |(lo, hi), x| {
        (
            lo.map(|l| if xid_precedes(x, l) { x } else { l }),
            hi.map(|h| if xid_precedes(h, x) { x } else { h }),
        )
    });
    SegmentSummary {
        first_commit_time: times.clone().min(),
        last_commit_time: times.max(),
        restore_points,
        min_commit_xid: min_xid,
        max_commit_xid: max_xid,
        end_lsn,
        tablespaces: Some(tablespaces),
    }
}

/// TransactionIdPrecedes for normal xids.
fn xid_precedes(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// A transaction-ending record.
#[derive(Debug, Clone, PartialEq, Eq)]
struct XactEnd {
    lsn: Lsn,
    xid: u32,
    time: i64,
}

/// Everything the scan found, in WAL order.
#[derive(Debug)]
struct Scan {
    xact_ends: Vec<XactEnd>,
    restore_points: Vec<RestorePoint>,
    tablespaces: Vec<TablespaceCreation>,
    end_lsn: Lsn,
}

struct PageHeader {
    info: u16,
    rem_len: usize,
    size: usize,
}

/// The segment's pages, validated one at a time as the scan reaches them.
struct Pages<'a> {
    data: &'a [u8],
    page_size: usize,
    count: usize,
    seg_start: u64,
    magic: u16,
}

impl<'a> Pages<'a> {
    /// The header of page `idx`, or None where WAL ends: past the data, or an
    /// old page left in a recycled segment (wrong address) or never written.
    fn header(&self, idx: usize) -> Option<PageHeader> {
        if idx >= self.count {
            return None;
        }
        let at = idx * self.page_size;
        let info = le_u16(self.data, at + 2);
        let addr = self.seg_start + at as u64;
        let long = info & XLP_LONG_HEADER != 0;
        if le_u16(self.data, at) != self.magic
            || le_u64(self.data, at + 8) != addr
            || long != (idx == 0)
        {
            return None;
        }
        Some(PageHeader {
            info,
            rem_len: le_u32(self.data, at + 16) as usize,
            size: if long {
                LONG_PAGE_HEADER_SIZE
            } else {
                SHORT_PAGE_HEADER_SIZE
            },
        })
    }

    /// Follows `remaining` bytes of a record continued from the page before
    /// page `idx`, appending them to `out`; returns the offset just past them.
    fn continuation(
        &self,
        mut idx: usize,
        mut remaining: usize,
        mut out: Option<&mut Vec<u8>>,
    ) -> Option<usize> {
        loop {
            let page = self.header(idx)?;
            if page.info & XLP_FIRST_IS_CONTRECORD == 0 || page.rem_len != remaining {
                return None;
            }
            let start = idx * self.page_size + page.size;
            let n = remaining.min(self.page_size - page.size);
            if let Some(buf) = out.as_mut() {
                buf.extend_from_slice(&self.data[start..start + n]);
            }
            remaining -= n;
            if remaining == 0 {
                return Some(start + n);
            }
            idx += 1;
        }
    }

    /// The `len` bytes of the record starting at `pos`, gathered across pages,
    /// and the offset just past them; None if it does not end in the segment.
    fn record(&self, pos: usize, len: usize) -> Option<(Cow<'a, [u8]>, usize)> {
        let page_end = (pos / self.page_size + 1) * self.page_size;
        if pos + len <= page_end {
            return Some((Cow::Borrowed(&self.data[pos..pos + len]), pos + len));
        }
        if len > self.count * self.page_size - pos {
            return None;
        }
        let mut buf = Vec::with_capacity(len);
        buf.extend_from_slice(&self.data[pos..page_end]);
        let end = self.continuation(
            page_end / self.page_size,
            len - (page_end - pos),
            Some(&mut buf),
        )?;
        Some((Cow::Owned(buf), end))
    }
}

fn maxalign(n: usize) -> usize {
    (n + 7) & !7
}

/// xl_crc covers the record after its header, then the header up to xl_crc.
fn crc_ok(record: &[u8]) -> bool {
    let crc = crc32c::crc32c(&record[RECORD_HEADER_SIZE..]);
    crc32c::crc32c_append(crc, &record[..20]) == le_u32(record, 20)
}

/// A complete record whose CRC matched.
struct Record<'a> {
    lsn: Lsn,
    bytes: Cow<'a, [u8]>,
    end: Lsn,
}

/// The records that begin in a segment and end in it, in order, up to the
/// end of valid WAL.
struct Records<'a> {
    pages: Pages<'a>,
    /// Offset of the next record, or of the page header before it.
    pos: usize,
    prev: Option<u64>,
    done: bool,
    /// Where the tail of a record begun in the previous segment ends.
    tail_end: Option<Lsn>,
    /// Where the records end: a CREATE TABLESPACE record that goes on into the next segment.
    cut: Option<TablespaceCreation>,
}

impl<'a> Records<'a> {
    fn new(data: &'a [u8], header: &SegmentHeader) -> Result<Records<'a>, Error> {
        let pages = Pages {
            data,
            page_size: header.block_size as usize,
            count: data.len().min(header.seg_size as usize) / header.block_size as usize,
            seg_start: header.pageaddr,
            magic: header.magic,
        };
        let first = pages.header(0).ok_or(Error::SegmentHeader(
            "first page does not match the segment header",
        ))?;
        let mut records = Records {
            pos: first.size,
            pages,
            prev: None,
            done: false,
            tail_end: None,
            cut: None,
        };
        if first.info & XLP_FIRST_IS_CONTRECORD != 0 {
            match records.pages.continuation(0, first.rem_len, None) {
                Some(end) => {
                    records.tail_end = Some(Lsn(header.pageaddr + end as u64));
                    records.pos = maxalign(end);
                }
                None => records.done = true,
            }
        }
        Ok(records)
    }

    /// A CREATE TABLESPACE record at the current position that goes on past the segment's
    /// data, told by its header (whole on its page, and chained to the record before); its
    /// location is in the next segment.
    fn cut_creation(&self, len: usize) -> Option<TablespaceCreation> {
        let pages = &self.pages;
        let page_end = (self.pos / pages.page_size + 1) * pages.page_size;
        if len <= pages.count * pages.page_size - self.pos
            || self.pos + RECORD_HEADER_SIZE > page_end
        {
            return None;
        }
        let lsn = pages.seg_start + self.pos as u64;
        let xl_prev = le_u64(pages.data, self.pos + 8);
        let (info, rmid) = (pages.data[self.pos + 16], pages.data[self.pos + 17]);
        let chained = self.prev.map_or(xl_prev < lsn, |p| p == xl_prev);
        (chained && rmid == RM_TBLSPC_ID && info & XLR_RMGR_INFO_MASK == XLOG_TBLSPC_CREATE)
            .then_some(TablespaceCreation {
                lsn: Lsn(lsn),
                prev: Lsn(xl_prev),
                oid: 0,
                location: None,
            })
    }

    fn read(&mut self) -> Option<Record<'a>> {
        let pages = &self.pages;
        if self.pos.is_multiple_of(pages.page_size) {
            match pages.header(self.pos / pages.page_size) {
                Some(page) if page.info & XLP_FIRST_IS_CONTRECORD == 0 => self.pos += page.size,
                _ => return None,
            }
        }
        let len = le_u32(pages.data, self.pos) as usize;
        if !(RECORD_HEADER_SIZE..=MAX_RECORD_SIZE).contains(&len) {
            return None;
        }
        let Some((bytes, end)) = pages.record(self.pos, len) else {
            self.cut = self.cut_creation(len);
            return None;
        };
        let lsn = Lsn(pages.seg_start + self.pos as u64);
        let xl_prev = le_u64(&bytes, 8);
        // The first record's predecessor lies in an earlier segment.
        if !self.prev.map_or(xl_prev < lsn.0, |p| p == xl_prev) || !crc_ok(&bytes) {
            return None;
        }
        let (info, rmid) = (bytes[16], bytes[17]);
        // After a switch the rest of the segment is padding.
        self.done = rmid == RM_XLOG_ID && info & XLR_RMGR_INFO_MASK == XLOG_SWITCH;
        self.prev = Some(lsn.0);
        self.pos = maxalign(end);
        Some(Record {
            lsn,
            bytes,
            end: Lsn(pages.seg_start + end as u64),
        })
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Record<'a>;

    fn next(&mut self) -> Option<Record<'a>> {
        if self.done {
            return None;
        }
        let record = self.read();
        self.done |= record.is_none();
        record
    }
}

fn major_of(header: &SegmentHeader) -> Result<&'static Major, Error> {
    wal::major_from_wal_magic(header.magic)
        .and_then(version::major)
        .ok_or(Error::WalMagic(header.magic))
}

/// The creation a record is, if it is a CREATE TABLESPACE record.
fn tablespace_creation(
    bytes: &[u8],
    major: &Major,
    lsn: Lsn,
) -> Result<Option<TablespaceCreation>, Error> {
    let (info, rmid) = (bytes[16], bytes[17]);
    if rmid != RM_TBLSPC_ID || info & XLR_RMGR_INFO_MASK != XLOG_TBLSPC_CREATE {
        return Ok(None);
    }
    let invalid = |reason| Error::WalRecord { lsn, reason };
    let main = main_data(bytes, major).map_err(invalid)?;
    create_record(main, lsn, Lsn(le_u64(bytes, 8)))
        .map(Some)
        .map_err(invalid)
}

/// xl_tblspc_create_rec: the oid, then the NUL-terminated location.
fn create_record(main: &[u8], lsn: Lsn, prev: Lsn) -> Result<TablespaceCreation, &'static str> {
    let mut c = Cursor { bytes: main, at: 0 };
    let oid = c.u32()?;
    let path = &main[c.at..];
    let len = path
        .iter()
        .position(|&b| b == 0)
        .ok_or("tablespace location is not terminated")?;
    let location = std::str::from_utf8(&path[..len])
        .map_err(|_| "tablespace location is not UTF-8")?
        .to_string();
    Ok(TablespaceCreation {
        lsn,
        prev,
        oid,
        location: Some(location),
    })
}

fn scan(data: &[u8], header: &SegmentHeader) -> Result<Scan, Error> {
    let major = major_of(header)?;
    let mut records = Records::new(data, header)?;
    let mut scan = Scan {
        xact_ends: Vec::new(),
        restore_points: Vec::new(),
        tablespaces: Vec::new(),
        end_lsn: records.tail_end.unwrap_or(Lsn(header.pageaddr)),
    };
    for Record { lsn, bytes, end } in records.by_ref() {
        let (info, rmid) = (bytes[16], bytes[17]);
        let invalid = |reason| Error::WalRecord { lsn, reason };
        if rmid == RM_XACT_ID {
            if let Some(ended) = ended_xact(&bytes, info, major).map_err(invalid)? {
                // A prepared transaction's xid is in the record body; the
                // header has the xid of the session that ran COMMIT PREPARED.
                let xid = ended.twophase_xid.unwrap_or(le_u32(&bytes, 4));
                scan.xact_ends.push(XactEnd {
                    lsn,
                    xid,
                    time: ended.time,
                });
            }
        } else if rmid == RM_XLOG_ID && info & XLR_RMGR_INFO_MASK == XLOG_RESTORE_POINT {
            let main = main_data(&bytes, major).map_err(invalid)?;
            scan.restore_points
                .push(restore_point(main, lsn).map_err(invalid)?);
        } else if let Some(created) = tablespace_creation(&bytes, major, lsn)? {
            scan.tablespaces.push(created);
        }
        scan.end_lsn = end;
    }
    scan.tablespaces.extend(records.cut);
    Ok(scan)
}

/// Reads fields front to back, failing on truncation.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or("truncated")?;
        let field = &self.bytes[self.at..end];
        self.at = end;
        Ok(field)
    }

    fn u8(&mut self) -> Result<u8, &'static str> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, &'static str> {
        Ok(le_u16(self.take(2)?, 0))
    }

    fn u32(&mut self) -> Result<u32, &'static str> {
        Ok(le_u32(self.take(4)?, 0))
    }

    /// An `int` count followed by that many xids.
    fn xids(&mut self) -> Result<Vec<u32>, &'static str> {
        let count = self.u32()? as i32;
        let count = usize::try_from(count).map_err(|_| "negative count")?;
        let raw = self.take(count.checked_mul(4).ok_or("truncated")?)?;
        Ok(raw.chunks_exact(4).map(|x| le_u32(x, 0)).collect())
    }

    /// Skips an `int` count followed by that many items of `size` bytes.
    fn skip_array(&mut self, size: usize) -> Result<(), &'static str> {
        let count = self.u32()? as i32;
        let count = usize::try_from(count).map_err(|_| "negative count")?;
        self.take(count.checked_mul(size).ok_or("truncated")?)?;
        Ok(())
    }
}

/// The main data of a record, found by walking its block headers as
/// DecodeXLogRecord does.
fn main_data<'r>(record: &'r [u8], major: &Major) -> Result<&'r [u8], &'static str> {
    let mut c = Cursor {
        bytes: record,
        at: RECORD_HEADER_SIZE,
    };
    let mut data_total = 0usize;
    let mut main_len = 0usize;
    while record.len() - c.at > data_total {
        match c.u8()? {
            XLR_BLOCK_ID_DATA_SHORT => {
                main_len = usize::from(c.u8()?);
                data_total += main_len;
                break;
            }
            XLR_BLOCK_ID_DATA_LONG => {
                main_len = c.u32()? as usize;
                data_total += main_len;
                break;
            }
            XLR_BLOCK_ID_ORIGIN => {
                c.take(2)?;
            }
            XLR_BLOCK_ID_TOPLEVEL_XID => {
                c.take(4)?;
            }
            id if id <= XLR_MAX_BLOCK_ID => {
                let fork_flags = c.u8()?;
                data_total += usize::from(c.u16()?);
                if fork_flags & BKPBLOCK_HAS_IMAGE != 0 {
                    data_total += usize::from(c.u16()?);
                    c.take(2)?; // hole_offset
                    let bimg_info = c.u8()?;
                    if bimg_info & major.bimg_compressed_mask != 0
                        && bimg_info & BKPIMAGE_HAS_HOLE != 0
                    {
                        c.take(2)?; // hole_length
                    }
                }
                if fork_flags & BKPBLOCK_SAME_REL == 0 {
                    c.take(REL_FILE_LOCATOR_SIZE)?;
                }
                c.take(4)?; // block number
            }
            _ => return Err("invalid block id"),
        }
    }
    if record.len() - c.at != data_total {
        return Err("block headers do not match the record length");
    }
    Ok(&record[record.len() - main_len..])
}

/// What a commit or abort record tells of the transaction it ends.
#[derive(Debug, PartialEq, Eq)]
struct Ended {
    time: i64,
    /// The prepared transaction's xid, for COMMIT/ABORT PREPARED.
    twophase_xid: Option<u32>,
    /// The subtransactions ended with it.
    subxids: Vec<u32>,
}

/// xact_time, the subtransactions and the prepared transaction's xid of a commit or abort
/// record (ParseCommitRecord / ParseAbortRecord).
/// The end a transaction record logs (commit or abort, prepared or not); None for the
/// transaction manager's other records.
fn ended_xact(record: &[u8], info: u8, major: &Major) -> Result<Option<Ended>, &'static str> {
    let op = info & XLOG_XACT_OPMASK;
    let commit = match op {
        XLOG_XACT_COMMIT | XLOG_XACT_COMMIT_PREPARED => true,
        XLOG_XACT_ABORT | XLOG_XACT_ABORT_PREPARED => false,
        _ => return Ok(None),
    };
    xact_end(main_data(record, major)?, info, commit, major).map(Some)
}

fn xact_end(main: &[u8], info: u8, commit: bool, major: &Major) -> Result<Ended, &'static str> {
    let mut c = Cursor { bytes: main, at: 0 };
    let time = i64::from_le_bytes(c.take(8)?.try_into().expect("8 bytes"));
    let xinfo = if info & XLOG_XACT_HAS_INFO != 0 {
        c.u32()?
    } else {
        0
    };
    if xinfo & XACT_XINFO_HAS_DBINFO != 0 {
        c.take(8)?;
    }
    let subxids = if xinfo & XACT_XINFO_HAS_SUBXACTS != 0 {
        c.xids()?
    } else {
        Vec::new()
    };
    if xinfo & XACT_XINFO_HAS_RELFILELOCATORS != 0 {
        c.skip_array(REL_FILE_LOCATOR_SIZE)?;
    }
    if xinfo & XACT_XINFO_HAS_DROPPED_STATS != 0 {
        if major.xact_stats_item_size == 0 {
            return Err("dropped stats in a major that has none");
        }
        c.skip_array(major.xact_stats_item_size)?;
    }
    if commit && xinfo & XACT_XINFO_HAS_INVALS != 0 {
        c.skip_array(INVAL_MESSAGE_SIZE)?;
    }
    let twophase_xid = if xinfo & XACT_XINFO_HAS_TWOPHASE != 0 {
        Some(c.u32()?)
    } else {
        None
    };
    Ok(Ended {
        time,
        twophase_xid,
        subxids,
    })
}

fn restore_point(main: &[u8], lsn: Lsn) -> Result<RestorePoint, &'static str> {
    if main.len() < 8 + RESTORE_POINT_NAME_SIZE {
        return Err("restore point is truncated");
    }
    let name = &main[8..8 + RESTORE_POINT_NAME_SIZE];
    let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
    Ok(RestorePoint {
        name: String::from_utf8_lossy(name).into_owned(),
        time: i64::from_le_bytes(main[..8].try_into().expect("8 bytes")),
        lsn,
    })
}

/// An AccessExclusiveLock as a hot standby's replay holds it (xl_standby_lock): taken when
/// replay meets its XLOG_STANDBY_LOCK record, held until the transaction's commit or abort
/// record, or an XLOG_RUNNING_XACTS record whose oldest running xid is past it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StandbyLock {
    /// The (sub)transaction holding it.
    pub xid: u32,
    /// The relation's database (0 for a shared relation).
    pub db_oid: u32,
    /// The relation.
    pub rel_oid: u32,
    /// Start of the first record seen logging it.
    pub lsn: Lsn,
    /// Start of the record before that one: as an inclusive `recovery_target_lsn`, a point
    /// before the lock.
    pub prev: Lsn,
    /// Logged by a standby snapshot (a checkpoint's or the background writer's), not by the
    /// transaction taking it: the lock was taken before `lsn`.
    pub from_snapshot: bool,
}

/// Where a replay stops, as PostgreSQL's recovery targets do with
/// `recovery_target_inclusive` on (pgsnapfs never turns it off).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayStop {
    /// After the first record starting at or past this position.
    Lsn(Lsn),
    /// Before the first commit or abort record later than this PostgreSQL timestamp.
    Time(i64),
    /// After the commit or abort record of this transaction.
    Xid(u32),
    /// After the restore point of this name.
    Name(String),
    /// After the record that ends at or past this position (consistency, for
    /// `recovery_target = 'immediate'`: the backup's end).
    Consistent(Lsn),
}

/// The AccessExclusiveLocks a replay holds, fed consecutive segments (the first one at or
/// before a standby snapshot, see [`has_standby_snapshot`]) until it stops.
/// Decision: locks of prepared transactions are released by XLOG_RUNNING_XACTS like any
/// other (PostgreSQL keeps them): this tells of a paused replay, where a prepared
/// transaction is rare.
#[derive(Debug)]
pub struct LockReplay {
    stop: ReplayStop,
    held: Vec<StandbyLock>,
    stopped: bool,
}

impl LockReplay {
    /// A replay that stops at `stop`, holding nothing yet.
    pub fn new(stop: ReplayStop) -> LockReplay {
        LockReplay {
            stop,
            held: Vec::new(),
            stopped: false,
        }
    }

    /// Whether the replay reached its stop.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// The locks held, in the order they were first logged.
    pub fn held(&self) -> &[StandbyLock] {
        &self.held
    }

    /// Replays the records of the next segment, up to the stop. Fails on a lock, running
    /// transactions, transaction-end or restore point record that does not decode.
    pub fn feed(&mut self, data: &[u8], header: &SegmentHeader) -> Result<(), Error> {
        if self.stopped {
            return Ok(());
        }
        let major = major_of(header)?;
        for Record { lsn, bytes, end } in Records::new(data, header)? {
            let (info, rmid) = (bytes[16], bytes[17]);
            let invalid = |reason| Error::WalRecord { lsn, reason };
            let mut stop_after = match &self.stop {
                ReplayStop::Lsn(at) => lsn >= *at,
                ReplayStop::Consistent(at) => end >= *at,
                _ => false,
            };
            if rmid == RM_STANDBY_ID {
                let main = main_data(&bytes, major).map_err(invalid)?;
                match info & XLR_RMGR_INFO_MASK {
                    XLOG_STANDBY_LOCK => {
                        let from_snapshot = le_u32(&bytes, 4) == 0;
                        let prev = Lsn(le_u64(&bytes, 8));
                        for (xid, db_oid, rel_oid) in standby_locks(main).map_err(invalid)? {
                            self.acquire(StandbyLock {
                                xid,
                                db_oid,
                                rel_oid,
                                lsn,
                                prev,
                                from_snapshot,
                            });
                        }
                    }
                    XLOG_RUNNING_XACTS => {
                        let mut c = Cursor {
                            bytes: main,
                            at: OLDEST_RUNNING_XID_AT,
                        };
                        let oldest = c.u32().map_err(invalid)?;
                        self.held.retain(|l| !xid_precedes(l.xid, oldest));
                    }
                    _ => {}
                }
            } else if rmid == RM_XACT_ID {
                if let Some(ended) = ended_xact(&bytes, info, major).map_err(invalid)? {
                    if matches!(self.stop, ReplayStop::Time(t) if ended.time > t) {
                        self.stopped = true;
                        return Ok(());
                    }
                    let xid = ended.twophase_xid.unwrap_or(le_u32(&bytes, 4));
                    stop_after |= self.stop == ReplayStop::Xid(xid);
                    // StandbyReleaseLockTree: the transaction and its subtransactions.
                    self.held
                        .retain(|l| l.xid != xid && !ended.subxids.contains(&l.xid));
                }
            } else if rmid == RM_XLOG_ID && info & XLR_RMGR_INFO_MASK == XLOG_RESTORE_POINT {
                if let ReplayStop::Name(name) = &self.stop {
                    let main = main_data(&bytes, major).map_err(invalid)?;
                    stop_after |= restore_point(main, lsn).map_err(invalid)?.name == *name;
                }
            }
            if stop_after {
                self.stopped = true;
                return Ok(());
            }
        }
        Ok(())
    }

    /// Holds `lock` unless already held (a snapshot logs again the locks it finds).
    fn acquire(&mut self, lock: StandbyLock) {
        let same =
            |l: &StandbyLock| (l.xid, l.db_oid, l.rel_oid) == (lock.xid, lock.db_oid, lock.rel_oid);
        if !self.held.iter().any(same) {
            self.held.push(lock);
        }
    }
}

/// xl_standby_locks: an `int` count, then (xid, dbOid, relOid) triples.
fn standby_locks(main: &[u8]) -> Result<Vec<(u32, u32, u32)>, &'static str> {
    let mut c = Cursor { bytes: main, at: 0 };
    let count = usize::try_from(c.u32()? as i32).map_err(|_| "negative count")?;
    let raw = c.take(count.checked_mul(STANDBY_LOCK_SIZE).ok_or("truncated")?)?;
    Ok(raw
        .chunks_exact(STANDBY_LOCK_SIZE)
        .map(|l| (le_u32(l, 0), le_u32(l, 4), le_u32(l, 8)))
        .collect())
}

/// Whether a segment holds a standby snapshot's XLOG_RUNNING_XACTS record, which follows the
/// XLOG_STANDBY_LOCK record logging every AccessExclusiveLock held then (LogStandbySnapshot).
pub fn has_standby_snapshot(data: &[u8], header: &SegmentHeader) -> Result<bool, Error> {
    Ok(Records::new(data, header)?.any(|r| {
        r.bytes[17] == RM_STANDBY_ID && r.bytes[16] & XLR_RMGR_INFO_MASK == XLOG_RUNNING_XACTS
    }))
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDateTime;

    use super::*;

    const MIB: usize = 1024 * 1024;
    const PAGE: usize = 8192;
    const MAGIC_15: u16 = 0xD110;

    /// Writes a WAL stream of 1 MiB segments the way PostgreSQL lays it out.
    struct Writer {
        buf: Vec<u8>,
        start: u64,
        magic: u16,
        pos: usize,
        prev: u64,
    }

    impl Writer {
        fn new(start: u64, magic: u16) -> Writer {
            let mut w = Writer {
                buf: Vec::new(),
                start,
                magic,
                pos: 0,
                prev: 0,
            };
            w.page_header(0);
            w
        }

        fn page_header(&mut self, rem_len: usize) {
            let at = self.pos;
            self.buf.resize(at + PAGE, 0);
            let long = at.is_multiple_of(MIB);
            let info = if long { XLP_LONG_HEADER } else { 0 }
                | if rem_len > 0 {
                    XLP_FIRST_IS_CONTRECORD
                } else {
                    0
                };
            let p = &mut self.buf[at..];
            p[0..2].copy_from_slice(&self.magic.to_le_bytes());
            p[2..4].copy_from_slice(&info.to_le_bytes());
            p[4..8].copy_from_slice(&1u32.to_le_bytes());
            p[8..16].copy_from_slice(&(self.start + at as u64).to_le_bytes());
            p[16..20].copy_from_slice(&(rem_len as u32).to_le_bytes());
            if long {
                p[24..32].copy_from_slice(&7u64.to_le_bytes());
                p[32..36].copy_from_slice(&(MIB as u32).to_le_bytes());
                p[36..40].copy_from_slice(&(PAGE as u32).to_le_bytes());
            }
            self.pos += if long {
                LONG_PAGE_HEADER_SIZE
            } else {
                SHORT_PAGE_HEADER_SIZE
            };
        }

        fn put(&mut self, mut bytes: &[u8]) {
            loop {
                let page_end = (self.pos / PAGE + 1) * PAGE;
                let n = bytes.len().min(page_end - self.pos);
                self.buf[self.pos..self.pos + n].copy_from_slice(&bytes[..n]);
                self.pos += n;
                bytes = &bytes[n..];
                if bytes.is_empty() {
                    return;
                }
                self.page_header(bytes.len());
            }
        }

        /// Appends a record whose header is followed by `body`.
        fn record(&mut self, rmid: u8, info: u8, xid: u32, body: &[u8]) -> Lsn {
            self.pos = maxalign(self.pos);
            if self.pos.is_multiple_of(PAGE) {
                self.page_header(0);
            }
            let lsn = self.start + self.pos as u64;
            let mut rec = Vec::new();
            rec.extend_from_slice(&((RECORD_HEADER_SIZE + body.len()) as u32).to_le_bytes());
            rec.extend_from_slice(&xid.to_le_bytes());
            rec.extend_from_slice(&self.prev.to_le_bytes());
            rec.extend_from_slice(&[info, rmid, 0, 0, 0, 0, 0, 0]);
            rec.extend_from_slice(body);
            let crc = crc32c::crc32c_append(crc32c::crc32c(&rec[24..]), &rec[..20]);
            rec[20..24].copy_from_slice(&crc.to_le_bytes());
            self.put(&rec);
            self.prev = lsn;
            Lsn(lsn)
        }

        fn end(&self) -> Lsn {
            Lsn(self.start + self.pos as u64)
        }

        /// Segment `n` of the stream (possibly only its written part).
        fn segment(&self, n: usize) -> &[u8] {
            &self.buf[n * MIB..self.buf.len().min((n + 1) * MIB)]
        }
    }

    fn main_only(main: &[u8]) -> Vec<u8> {
        let mut body = if main.len() < 256 {
            vec![XLR_BLOCK_ID_DATA_SHORT, main.len() as u8]
        } else {
            let mut b = vec![XLR_BLOCK_ID_DATA_LONG];
            b.extend_from_slice(&(main.len() as u32).to_le_bytes());
            b
        };
        body.extend_from_slice(main);
        body
    }

    /// xl_xact_commit/abort main data with the given xinfo parts, in order.
    fn xact_main(time: i64, xinfo: u32, parts: &[&[u8]]) -> Vec<u8> {
        let mut m = time.to_le_bytes().to_vec();
        if xinfo != 0 {
            m.extend_from_slice(&xinfo.to_le_bytes());
        }
        for p in parts {
            m.extend_from_slice(p);
        }
        m
    }

    fn array(count: u32, item: usize) -> Vec<u8> {
        let mut a = count.to_le_bytes().to_vec();
        a.resize(4 + count as usize * item, 0xAB);
        a
    }

    fn restore_main(time: i64, name: &str) -> Vec<u8> {
        let mut m = time.to_le_bytes().to_vec();
        let mut n = name.as_bytes().to_vec();
        n.resize(RESTORE_POINT_NAME_SIZE, 0);
        m.extend_from_slice(&n);
        m
    }

    fn commit(w: &mut Writer, xid: u32, time: i64) -> Lsn {
        w.record(
            RM_XACT_ID,
            XLOG_XACT_COMMIT,
            xid,
            &main_only(&xact_main(time, 0, &[])),
        )
    }

    /// A heap-like record with one block reference and some block data.
    fn noise(w: &mut Writer, len: usize) -> Lsn {
        let mut body = vec![0u8, 0x20];
        body.extend_from_slice(&(len as u16).to_le_bytes());
        body.extend_from_slice(&[1; 12]);
        body.extend_from_slice(&[2; 4]);
        body.extend_from_slice(&[XLR_BLOCK_ID_DATA_SHORT, 3]);
        body.resize(body.len() + len, 0x55);
        body.extend_from_slice(&[9, 9, 9]);
        w.record(10, 0, 1, &body)
    }

    fn scan_of(data: &[u8]) -> Scan {
        scan(data, &SegmentHeader::parse(data).unwrap()).unwrap()
    }

    fn summary_of(data: &[u8]) -> SegmentSummary {
        scan_segment(data, &SegmentHeader::parse(data).unwrap()).unwrap()
    }

    fn pg_time(text: &str) -> i64 {
        let t = NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f").unwrap();
        unix_micros_to_pg_time(t.and_utc().timestamp_micros())
    }

    #[test]
    fn matches_pg_waldump_on_a_real_pg15_segment() {
        let data = include_bytes!("testdata/pg15_wal_000000010000000000000002.prefix");
        let expected = include_str!("testdata/pg15_wal_000000010000000000000002.expected");
        let (mut xacts, mut points, mut end) = (Vec::new(), Vec::new(), None);
        for line in expected.lines() {
            let fields: Vec<&str> = line.splitn(4, ' ').collect();
            let lsn: Lsn = fields[1].parse().unwrap();
            match fields[0] {
                "xact" => xacts.push(XactEnd {
                    lsn,
                    xid: fields[2].parse().unwrap(),
                    time: pg_time(fields[3]),
                }),
                "restore" => points.push((lsn, line.splitn(3, ' ').nth(2).unwrap().to_string())),
                "last" => end = Some(Lsn(lsn.0 + fields[2].parse::<u64>().unwrap())),
                other => panic!("unexpected line kind {other}"),
            }
        }
        let scan = scan_of(data);
        assert!(
            xacts.len() >= 10,
            "fixture has commits, aborts and prepared ones"
        );
        assert_eq!(scan.xact_ends, xacts);
        let found: Vec<(Lsn, String)> = scan
            .restore_points
            .iter()
            .map(|r| (r.lsn, r.name.clone()))
            .collect();
        assert_eq!(found, points);
        assert_eq!(Some(scan.end_lsn), end);

        let summary = summary_of(data);
        assert_eq!(
            summary.first_commit_time,
            xacts.iter().map(|x| x.time).min()
        );
        assert_eq!(summary.last_commit_time, xacts.iter().map(|x| x.time).max());
        assert_eq!(summary.min_commit_xid, xacts.iter().map(|x| x.xid).min());
        assert_eq!(summary.max_commit_xid, xacts.iter().map(|x| x.xid).max());
        // A restore point is taken between the commits around it.
        let rp = &summary.restore_points[0];
        assert!(
            summary.first_commit_time.unwrap() <= rp.time
                && rp.time <= summary.last_commit_time.unwrap()
        );
    }

    #[test]
    fn summary_of_commits_aborts_and_restore_points() {
        let mut w = Writer::new(0x30_0000, MAGIC_15);
        noise(&mut w, 40);
        commit(&mut w, 700, 1_000);
        w.record(
            RM_XACT_ID,
            XLOG_XACT_ABORT,
            701,
            &main_only(&xact_main(900, 0, &[])),
        );
        // A PREPARE is not a transaction end.
        w.record(RM_XACT_ID, 0x10, 702, &main_only(&[0; 40]));
        let rp = w.record(
            RM_XLOG_ID,
            XLOG_RESTORE_POINT,
            0,
            &main_only(&restore_main(1_500, "before_delete")),
        );
        // COMMIT PREPARED with every optional part before the two-phase xid.
        let info = XLOG_XACT_COMMIT_PREPARED | XLOG_XACT_HAS_INFO;
        let xinfo = XACT_XINFO_HAS_DBINFO
            | XACT_XINFO_HAS_SUBXACTS
            | XACT_XINFO_HAS_RELFILELOCATORS
            | XACT_XINFO_HAS_DROPPED_STATS
            | XACT_XINFO_HAS_INVALS
            | XACT_XINFO_HAS_TWOPHASE;
        let main = xact_main(
            2_000,
            xinfo,
            &[
                &[0; 8],
                &array(2, 4),
                &array(1, 12),
                &array(3, 12),
                &array(2, 16),
                &702u32.to_le_bytes(),
            ],
        );
        w.record(RM_XACT_ID, info, 0, &main_only(&main));
        // ABORT PREPARED: no invalidation messages even though the flag is set.
        let info = XLOG_XACT_ABORT_PREPARED | XLOG_XACT_HAS_INFO;
        let main = xact_main(
            2_100,
            XACT_XINFO_HAS_TWOPHASE | XACT_XINFO_HAS_INVALS,
            &[&703u32.to_le_bytes()],
        );
        w.record(RM_XACT_ID, info, 0, &main_only(&main));
        // The switch ends the segment: later records are not read.
        w.record(RM_XLOG_ID, XLOG_SWITCH, 0, &[]);
        let end = w.end();
        commit(&mut w, 9_999, 9_999);

        let summary = summary_of(w.segment(0));
        assert_eq!(
            summary,
            SegmentSummary {
                first_commit_time: Some(900),
                last_commit_time: Some(2_100),
                restore_points: vec![RestorePoint {
                    name: "before_delete".into(),
                    time: 1_500,
                    lsn: rp
                }],
                min_commit_xid: Some(700),
                max_commit_xid: Some(703),
                end_lsn: end,
                tablespaces: Some(Vec::new()),
            }
        );
        let json = serde_json::to_string(&summary).unwrap();
        assert!(json.contains("\"end_lsn\":\"0/"), "{json}");
        assert_eq!(
            serde_json::from_str::<SegmentSummary>(&json).unwrap(),
            summary
        );
    }

    fn create_main(oid: u32, location: &str) -> Vec<u8> {
        let mut m = oid.to_le_bytes().to_vec();
        m.extend_from_slice(location.as_bytes());
        m.push(0);
        m
    }

    #[test]
    fn tablespace_creations_are_found() {
        let mut w = Writer::new(0x30_0000, MAGIC_15);
        let before = commit(&mut w, 700, 1_000);
        let at = w.record(
            RM_TBLSPC_ID,
            XLOG_TBLSPC_CREATE,
            701,
            &main_only(&create_main(16_385, "/srv/ts one")),
        );
        // A drop (0x10) is not a creation; an in-place tablespace has an empty location.
        let drop = w.record(
            RM_TBLSPC_ID,
            0x10,
            702,
            &main_only(&16_385u32.to_le_bytes()),
        );
        let in_place = w.record(
            RM_TBLSPC_ID,
            XLOG_TBLSPC_CREATE,
            703,
            &main_only(&create_main(16_390, "")),
        );
        commit(&mut w, 703, 2_000);
        let data = w.segment(0);
        let header = SegmentHeader::parse(data).unwrap();
        let want = vec![
            TablespaceCreation {
                lsn: at,
                prev: before,
                oid: 16_385,
                location: Some("/srv/ts one".into()),
            },
            TablespaceCreation {
                lsn: in_place,
                prev: drop,
                oid: 16_390,
                location: Some(String::new()),
            },
        ];
        assert_eq!(summary_of(data).tablespaces, Some(want.clone()));
        assert_eq!(tablespace_creations(data, &header).unwrap(), want);
        let parts = scan_segment_split(data, &header, &[in_place]).unwrap();
        assert_eq!(parts[0].tablespaces, Some(want[..1].to_vec()));
        assert_eq!(parts[1].tablespaces, Some(want[1..].to_vec()));
        // A summary written before the field: unknown, not none.
        let mut json: serde_json::Value = serde_json::to_value(summary_of(data)).unwrap();
        json.as_object_mut().unwrap().remove("tablespaces");
        let old: SegmentSummary = serde_json::from_value(json).unwrap();
        assert_eq!(old.tablespaces, None);
        // Unterminated, or too short for an oid: the record does not decode.
        for main in [vec![1, 0, 0, 0, b'/', b'x'], vec![1, 0]] {
            let mut w = Writer::new(0x30_0000, MAGIC_15);
            let lsn = w.record(RM_TBLSPC_ID, XLOG_TBLSPC_CREATE, 1, &main_only(&main));
            let data = w.segment(0);
            let header = SegmentHeader::parse(data).unwrap();
            assert!(
                matches!(tablespace_creations(data, &header), Err(Error::WalRecord { lsn: l, .. }) if l == lsn)
            );
            assert!(scan_segment(data, &header).is_err());
        }
    }

    #[test]
    fn a_creation_going_on_into_the_next_segment_has_no_known_location() {
        let mut w = Writer::new(0x10_0000, MAGIC_15);
        let mut last = Lsn(0);
        while w.pos < MIB - 700 {
            let n = (MIB - 700 - w.pos).min(4000);
            last = noise(&mut w, n);
        }
        let long = format!("/{}", "d".repeat(1200));
        let at = w.record(
            RM_TBLSPC_ID,
            XLOG_TBLSPC_CREATE,
            9,
            &main_only(&create_main(16_400, &long)),
        );
        assert!(at.0 < 0x20_0000 - 24 && w.end().0 > 0x20_0000);
        let cut = TablespaceCreation {
            lsn: at,
            prev: last,
            oid: 0,
            location: None,
        };
        let data = w.segment(0);
        let header = SegmentHeader::parse(data).unwrap();
        assert_eq!(summary_of(data).tablespaces, Some(vec![cut.clone()]));
        assert_eq!(tablespace_creations(data, &header).unwrap(), vec![cut]);
        // Any other record going on is nothing.
        let mut w = Writer::new(0x10_0000, MAGIC_15);
        while w.pos < MIB - 700 {
            let n = (MIB - 700 - w.pos).min(4000);
            noise(&mut w, n);
        }
        noise(&mut w, 1000);
        assert_eq!(summary_of(w.segment(0)).tablespaces, Some(Vec::new()));
    }

    #[test]
    fn split_at_a_switchpoint() {
        let mut w = Writer::new(0x30_0000, MAGIC_15);
        commit(&mut w, 700, 1_000);
        let at = w.record(
            RM_XLOG_ID,
            XLOG_RESTORE_POINT,
            0,
            &main_only(&restore_main(1_500, "fork")),
        );
        commit(&mut w, 701, 5_000);
        let c702 = commit(&mut w, 702, 6_000);
        let end = w.end();
        let data = w.segment(0);
        let header = SegmentHeader::parse(data).unwrap();
        let [before, after] =
            <[_; 2]>::try_from(scan_segment_split(data, &header, &[at]).unwrap()).unwrap();
        assert_eq!(
            (before.first_commit_time, before.last_commit_time),
            (Some(1_000), Some(1_000))
        );
        assert_eq!((before.min_commit_xid, before.end_lsn), (Some(700), at));
        assert!(before.restore_points.is_empty());
        assert_eq!(
            (after.first_commit_time, after.last_commit_time),
            (Some(5_000), Some(6_000))
        );
        assert_eq!(after.restore_points[0].name, "fork");
        assert_eq!((after.max_commit_xid, after.end_lsn), (Some(702), end));
        // Split at the start: everything is after.
        let parts = scan_segment_split(data, &header, &[Lsn(0x30_0000)]).unwrap();
        assert_eq!(parts[0].last_commit_time, None);
        assert_eq!(parts[1], scan_segment(data, &header).unwrap());
        // Two switchpoints in one segment: three parts.
        let parts = scan_segment_split(data, &header, &[at, c702]).unwrap();
        let times: Vec<_> = parts
            .iter()
            .map(|p| (p.first_commit_time, p.last_commit_time))
            .collect();
        assert_eq!(
            times,
            vec![
                (Some(1_000), Some(1_000)),
                (Some(5_000), Some(5_000)),
                (Some(6_000), Some(6_000))
            ]
        );
        assert_eq!((parts[1].restore_points.len(), parts[1].end_lsn), (1, c702));
    }

    #[test]
    fn empty_segment() {
        let w = Writer::new(0x10_0000, MAGIC_15);
        let summary = summary_of(w.segment(0));
        assert_eq!(summary.end_lsn, Lsn(0x10_0000));
        assert_eq!(
            (summary.first_commit_time, summary.min_commit_xid),
            (None, None)
        );
        assert!(summary.restore_points.is_empty());
    }

    #[test]
    fn next_to_last_record_of_a_segment() {
        let start = |w: &Writer| {
            let data = w.segment(0);
            next_to_last_record_start(data, &SegmentHeader::parse(data).unwrap()).unwrap()
        };
        let mut w = Writer::new(0x10_0000, MAGIC_15);
        assert_eq!(start(&w), None);
        commit(&mut w, 700, 1);
        assert_eq!(start(&w), None, "one record");
        let second = noise(&mut w, 100);
        commit(&mut w, 701, 2);
        assert_eq!(start(&w), Some(second));
        // A record that continues into the next segment does not end in this one.
        while w.pos < MIB - PAGE {
            noise(&mut w, 4000);
        }
        let last_whole = noise(&mut w, 10);
        w.record(
            RM_XACT_ID,
            XLOG_XACT_COMMIT | XLOG_XACT_HAS_INFO,
            702,
            &main_only(&xact_main(3, XACT_XINFO_HAS_SUBXACTS, &[&array(10_000, 4)])),
        );
        let data = w.segment(0);
        let before_last = Records::new(data, &SegmentHeader::parse(data).unwrap())
            .unwrap()
            .map(|r| r.lsn)
            .filter(|l| *l < last_whole)
            .last();
        assert_eq!(start(&w), before_last);
    }

    #[test]
    fn records_spanning_pages() {
        let mut w = Writer::new(0x10_0000, MAGIC_15);
        noise(&mut w, 8000);
        // 3000 subxacts: a 12 KiB commit record over three pages.
        let main = xact_main(5_000, XACT_XINFO_HAS_SUBXACTS, &[&array(3000, 4)]);
        let big = w.record(
            RM_XACT_ID,
            XLOG_XACT_COMMIT | XLOG_XACT_HAS_INFO,
            800,
            &main_only(&main),
        );
        noise(&mut w, 20_000);
        commit(&mut w, 801, 6_000);
        let scan = scan_of(w.segment(0));
        assert_eq!(
            scan.xact_ends,
            vec![
                XactEnd {
                    lsn: big,
                    xid: 800,
                    time: 5_000
                },
                XactEnd {
                    lsn: scan.xact_ends[1].lsn,
                    xid: 801,
                    time: 6_000
                },
            ]
        );
        assert_eq!(scan.end_lsn, w.end());
        assert!(w.end().0 - 0x10_0000 > 4 * PAGE as u64);
    }

    #[test]
    fn records_spanning_segments() {
        let mut w = Writer::new(0x10_0000, MAGIC_15);
        commit(&mut w, 700, 1);
        while w.pos < MIB - 3 * PAGE {
            noise(&mut w, 4000);
        }
        let before = w.end();
        // Crosses into the next segment by more than a page.
        let main = xact_main(2, XACT_XINFO_HAS_SUBXACTS, &[&array(10_000, 4)]);
        w.record(
            RM_XACT_ID,
            XLOG_XACT_COMMIT | XLOG_XACT_HAS_INFO,
            701,
            &main_only(&main),
        );
        let tail_end = w.end();
        let next = commit(&mut w, 702, 3);

        let first = scan_of(w.segment(0));
        assert_eq!(
            first.xact_ends.iter().map(|x| x.xid).collect::<Vec<_>>(),
            vec![700]
        );
        assert_eq!(first.end_lsn, before);

        let second = scan_of(w.segment(1));
        assert_eq!(
            second.xact_ends,
            vec![XactEnd {
                lsn: next,
                xid: 702,
                time: 3
            }]
        );
        assert!(tail_end.0 > 0x20_0000 + PAGE as u64);
        assert_eq!(second.end_lsn, w.end());

        // A segment that is nothing but the middle of one record.
        let mut w = Writer::new(0x10_0000, MAGIC_15);
        let main = xact_main(2, XACT_XINFO_HAS_SUBXACTS, &[&array(600_000, 4)]);
        w.record(
            RM_XACT_ID,
            XLOG_XACT_COMMIT | XLOG_XACT_HAS_INFO,
            1,
            &main_only(&main),
        );
        let middle = scan_of(w.segment(1));
        assert!(middle.xact_ends.is_empty());
        assert_eq!(middle.end_lsn, Lsn(0x20_0000));
    }

    #[test]
    fn stops_at_a_page_left_from_a_recycled_segment() {
        let mut w = Writer::new(0x10_0000, MAGIC_15);
        commit(&mut w, 700, 1);
        while w.pos < 2 * PAGE - 200 {
            noise(&mut w, 100);
        }
        let end = w.end();
        noise(&mut w, 500); // crosses into page 2
        commit(&mut w, 701, 2);
        let mut data = w.segment(0).to_vec();
        // Page 2 still has the address it had in an older segment.
        data[2 * PAGE + 8..2 * PAGE + 16].copy_from_slice(&(0x2 * PAGE as u64).to_le_bytes());
        let scan = scan_of(&data);
        assert_eq!(scan.xact_ends.len(), 1);
        assert_eq!(scan.end_lsn, end);
    }

    #[test]
    fn stops_at_crc_mismatch_or_broken_chain() {
        let mut w = Writer::new(0x10_0000, MAGIC_15);
        commit(&mut w, 700, 1);
        let second = commit(&mut w, 701, 2);
        let third = commit(&mut w, 702, 3);
        commit(&mut w, 703, 4);
        let offset = |lsn: Lsn| (lsn.0 - 0x10_0000) as usize;

        let mut data = w.segment(0).to_vec();
        data[offset(third) + 30] ^= 1;
        let scan = scan_of(&data);
        assert_eq!(scan.xact_ends.len(), 2);
        assert_eq!(scan.end_lsn, Lsn(second.0 + 34));

        // xl_prev pointing elsewhere, with a matching crc.
        let mut data = w.segment(0).to_vec();
        let at = offset(third);
        data[at + 8..at + 16].copy_from_slice(&0x10_0028u64.to_le_bytes());
        let crc =
            crc32c::crc32c_append(crc32c::crc32c(&data[at + 24..at + 34]), &data[at..at + 20]);
        data[at + 20..at + 24].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(scan_of(&data).xact_ends.len(), 2);

        // Garbage lengths end the scan too.
        let mut data = w.segment(0).to_vec();
        data[at..at + 4].copy_from_slice(&10u32.to_le_bytes());
        assert_eq!(scan_of(&data).xact_ends.len(), 2);
        data[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(scan_of(&data).xact_ends.len(), 2);
    }

    #[test]
    fn truncated_data_ends_the_scan() {
        let mut w = Writer::new(0x10_0000, MAGIC_15);
        commit(&mut w, 700, 1);
        noise(&mut w, 9000);
        commit(&mut w, 701, 2);
        for len in [PAGE, PAGE + 100, PAGE + 1000] {
            assert_eq!(scan_of(&w.segment(0)[..len]).xact_ends.len(), 1, "{len}");
        }
        assert_eq!(scan_of(w.segment(0)).xact_ends.len(), 2);
    }

    #[test]
    fn rejects_unknown_magic_and_mismatched_header() {
        let w = Writer::new(0x10_0000, 0xD101);
        let data = w.segment(0);
        assert_eq!(
            scan_segment(data, &SegmentHeader::parse(data).unwrap()),
            Err(Error::WalMagic(0xD101))
        );
        let w = Writer::new(0x10_0000, MAGIC_15);
        let mut header = SegmentHeader::parse(w.segment(0)).unwrap();
        header.pageaddr = 0x20_0000;
        assert_eq!(
            scan_segment(w.segment(0), &header),
            Err(Error::SegmentHeader(
                "first page does not match the segment header"
            ))
        );
    }

    #[test]
    fn undecodable_transaction_records_are_errors() {
        let cases: [(Vec<u8>, &str); 4] = [
            (vec![100, 0], "invalid block id"),
            (
                vec![XLR_BLOCK_ID_DATA_SHORT, 200, 1, 2],
                "block headers do not match the record length",
            ),
            (main_only(&[1, 2, 3]), "truncated"),
            (
                main_only(&xact_main(
                    1,
                    XACT_XINFO_HAS_SUBXACTS,
                    &[&(-1i32).to_le_bytes()],
                )),
                "negative count",
            ),
        ];
        for (body, reason) in cases {
            let mut w = Writer::new(0x10_0000, MAGIC_15);
            let lsn = w.record(RM_XACT_ID, XLOG_XACT_COMMIT | XLOG_XACT_HAS_INFO, 5, &body);
            let data = w.segment(0);
            assert_eq!(
                scan_segment(data, &SegmentHeader::parse(data).unwrap()),
                Err(Error::WalRecord { lsn, reason }),
                "{reason}"
            );
        }
    }

    /// A commit record body with one full-page image (`bimg_info`) ahead of
    /// the main data.
    fn with_image(bimg_info: u8, hole_length_field: bool, main: &[u8]) -> Vec<u8> {
        let image = [0x77u8; 100];
        let mut b = vec![0u8, BKPBLOCK_HAS_IMAGE];
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&(image.len() as u16).to_le_bytes());
        b.extend_from_slice(&40u16.to_le_bytes());
        b.push(bimg_info);
        if hole_length_field {
            b.extend_from_slice(&4000u16.to_le_bytes());
        }
        b.extend_from_slice(&[1; 12]);
        b.extend_from_slice(&[2; 4]);
        b.extend_from_slice(&[
            XLR_BLOCK_ID_ORIGIN,
            1,
            0,
            XLR_BLOCK_ID_TOPLEVEL_XID,
            9,
            0,
            0,
            0,
        ]);
        b.extend_from_slice(&[XLR_BLOCK_ID_DATA_SHORT, main.len() as u8]);
        b.extend_from_slice(&image);
        b.extend_from_slice(main);
        b
    }

    #[test]
    fn image_flags_depend_on_the_major() {
        let main = xact_main(77, 0, &[]);
        let record = |body: &[u8]| {
            let mut r = vec![0u8; RECORD_HEADER_SIZE];
            r.extend_from_slice(body);
            r
        };
        let (m13, m15) = (version::major(13).unwrap(), version::major(15).unwrap());
        // 0x03: a compressed image with a hole before 15, so hole_length follows.
        let r = record(&with_image(0x03, true, &main));
        assert_eq!(main_data(&r, m13), Ok(&main[..]));
        assert!(main_data(&r, m15).is_err());
        // From 15 on 0x03 is HAS_HOLE | APPLY: uncompressed, no hole_length.
        let r = record(&with_image(0x03, false, &main));
        assert_eq!(main_data(&r, m15), Ok(&main[..]));
        assert!(main_data(&r, m13).is_err());
        // 0x0D: an LZ4-compressed image with a hole on 15+.
        let r = record(&with_image(0x0D, true, &main));
        assert_eq!(main_data(&r, m15), Ok(&main[..]));
    }

    #[test]
    fn dropped_stats_size_depends_on_the_major() {
        let xinfo = XACT_XINFO_HAS_DROPPED_STATS | XACT_XINFO_HAS_TWOPHASE;
        let info = XLOG_XACT_COMMIT_PREPARED | XLOG_XACT_HAS_INFO;
        for (major, item) in [(15, 12), (16, 12), (17, 12), (18, 16)] {
            let m = version::major(major).unwrap();
            let main = xact_main(5, xinfo, &[&array(2, item), &4242u32.to_le_bytes()]);
            assert_eq!(
                xact_end(&main, info, true, m),
                Ok(Ended {
                    time: 5,
                    twophase_xid: Some(4242),
                    subxids: Vec::new()
                }),
                "{major}"
            );
        }
        let main = xact_main(5, xinfo, &[&array(2, 12), &4242u32.to_le_bytes()]);
        assert_eq!(
            xact_end(&main, info, true, version::major(14).unwrap()),
            Err("dropped stats in a major that has none")
        );
    }

    #[test]
    fn xid_range_wraps_around() {
        let mut w = Writer::new(0x10_0000, MAGIC_15);
        for xid in [u32::MAX - 5, u32::MAX, 3, 10] {
            commit(&mut w, xid, 1);
        }
        let s = summary_of(w.segment(0));
        assert_eq!(
            (s.min_commit_xid, s.max_commit_xid),
            (Some(u32::MAX - 5), Some(10))
        );
    }

    #[test]
    fn pg_time_conversions() {
        assert_eq!(pg_time_to_unix_micros(0), 946_684_800_000_000);
        assert_eq!(unix_micros_to_pg_time(946_684_800_000_000), 0);
        assert_eq!(
            unix_micros_to_pg_time(pg_time_to_unix_micros(123_456_789)),
            123_456_789
        );
        assert_eq!(format_pg_time(0), "2000-01-01T00:00:00Z");
        assert_eq!(format_pg_time(-1), "1999-12-31T23:59:59.999999Z");
        assert_eq!(
            format_pg_time(pg_time("2026-11-20 14:30:00.123456")),
            "2026-11-20T14:30:00.123456Z"
        );
        assert_eq!(
            format_pg_time(pg_time("2026-11-20 14:30:00.5")),
            "2026-11-20T14:30:00.500Z"
        );
        assert_eq!(format_pg_time(i64::MAX), "infinity");
        assert_eq!(format_pg_time(i64::MIN), "-infinity");
    }

    fn lock_main(locks: &[(u32, u32, u32)]) -> Vec<u8> {
        let mut m = (locks.len() as u32).to_le_bytes().to_vec();
        for &(xid, db, rel) in locks {
            for v in [xid, db, rel] {
                m.extend_from_slice(&v.to_le_bytes());
            }
        }
        m
    }

    fn running_main(oldest: u32) -> Vec<u8> {
        let mut m = vec![0u8; 24];
        m[OLDEST_RUNNING_XID_AT..OLDEST_RUNNING_XID_AT + 4].copy_from_slice(&oldest.to_le_bytes());
        m
    }

    /// Two segments: a snapshot re-logging 600's lock, 700 locking in a subtransaction (701)
    /// then committing, 800 locking and still open at its end.
    fn lock_stream() -> (Writer, [Lsn; 6]) {
        let mut w = Writer::new(0x30_0000, MAGIC_15);
        noise(&mut w, 10);
        let snap = w.record(
            RM_STANDBY_ID,
            XLOG_STANDBY_LOCK,
            0,
            &main_only(&lock_main(&[(600, 5, 16_000), (590, 5, 15_000)])),
        );
        w.record(
            RM_STANDBY_ID,
            XLOG_RUNNING_XACTS,
            0,
            &main_only(&running_main(595)),
        );
        let l701 = w.record(
            RM_STANDBY_ID,
            XLOG_STANDBY_LOCK,
            701,
            &main_only(&lock_main(&[(701, 5, 16_384)])),
        );
        let c700 = w.record(
            RM_XACT_ID,
            XLOG_XACT_COMMIT | XLOG_XACT_HAS_INFO,
            700,
            &main_only(&xact_main(
                1_000,
                XACT_XINFO_HAS_SUBXACTS,
                &[&1u32.to_le_bytes(), &701u32.to_le_bytes()],
            )),
        );
        while w.end().0 < 0x40_0100 {
            noise(&mut w, 8_000);
        }
        let l800 = w.record(
            RM_STANDBY_ID,
            XLOG_STANDBY_LOCK,
            800,
            &main_only(&lock_main(&[(800, 5, 16_390)])),
        );
        let c600 = commit(&mut w, 600, 2_000);
        let c800 = commit(&mut w, 800, 3_000);
        assert!(c800.0 > 0x40_0000, "the stream must span two segments");
        (w, [snap, l701, c700, l800, c600, c800])
    }

    fn held_at(w: &Writer, stop: ReplayStop) -> (Vec<(u32, u32)>, bool) {
        let mut replay = LockReplay::new(stop);
        for n in 0..2 {
            let data = w.segment(n);
            replay
                .feed(data, &SegmentHeader::parse(data).unwrap())
                .unwrap();
        }
        let held = replay.held().iter().map(|l| (l.xid, l.rel_oid)).collect();
        (held, replay.stopped())
    }

    #[test]
    fn locks_held_where_replay_stops() {
        let (w, [snap, l701, c700, l800, c600, _]) = lock_stream();
        // 590 ended before the snapshot's oldest running xid: released there.
        assert_eq!(
            held_at(&w, ReplayStop::Lsn(l701)),
            (vec![(600, 16_000), (701, 16_384)], true)
        );
        // 700's commit releases its subtransaction's lock.
        assert_eq!(
            held_at(&w, ReplayStop::Lsn(c700)),
            (vec![(600, 16_000)], true)
        );
        assert_eq!(
            held_at(&w, ReplayStop::Lsn(l800)),
            (vec![(600, 16_000), (800, 16_390)], true)
        );
        assert_eq!(
            held_at(&w, ReplayStop::Xid(600)),
            (vec![(800, 16_390)], true)
        );
        // A time target stops before the first later commit.
        assert_eq!(
            held_at(&w, ReplayStop::Time(1_500)),
            (vec![(600, 16_000), (800, 16_390)], true)
        );
        assert_eq!(held_at(&w, ReplayStop::Time(9_000)), (vec![], false));
        assert_eq!(
            held_at(&w, ReplayStop::Consistent(Lsn(c600.0 + 1))),
            (vec![(800, 16_390)], true)
        );
        let mut replay = LockReplay::new(ReplayStop::Lsn(l800));
        for n in 0..2 {
            let data = w.segment(n);
            replay
                .feed(data, &SegmentHeader::parse(data).unwrap())
                .unwrap();
        }
        let held = replay.held();
        assert!(held[0].from_snapshot && held[0].lsn == snap);
        assert!(!held[1].from_snapshot && held[1].lsn == l800 && held[1].prev < l800);
        let first = w.segment(0);
        assert!(has_standby_snapshot(first, &SegmentHeader::parse(first).unwrap()).unwrap());
        let second = w.segment(1);
        assert!(!has_standby_snapshot(second, &SegmentHeader::parse(second).unwrap()).unwrap());
    }

    #[test]
    fn restore_point_stops_lock_replay() {
        let mut w = Writer::new(0x30_0000, MAGIC_15);
        w.record(
            RM_STANDBY_ID,
            XLOG_STANDBY_LOCK,
            9,
            &main_only(&lock_main(&[(9, 1, 2)])),
        );
        w.record(
            RM_XLOG_ID,
            XLOG_RESTORE_POINT,
            0,
            &main_only(&restore_main(5, "here")),
        );
        commit(&mut w, 9, 10);
        let data = w.segment(0);
        let mut replay = LockReplay::new(ReplayStop::Name("here".into()));
        replay
            .feed(data, &SegmentHeader::parse(data).unwrap())
            .unwrap();
        assert_eq!(replay.held().len(), 1);
        assert!(replay.stopped());
        let truncated = w.record(
            RM_STANDBY_ID,
            XLOG_STANDBY_LOCK,
            9,
            &main_only(&lock_main(&[(9, 1, 2)])[..10]),
        );
        let data = w.segment(0);
        let mut replay = LockReplay::new(ReplayStop::Lsn(Lsn(u64::MAX)));
        assert!(matches!(
            replay.feed(data, &SegmentHeader::parse(data).unwrap()),
            Err(Error::WalRecord { lsn, .. }) if lsn == truncated
        ));
    }
}
