//! The WAL archive: `wal-push`, `wal-fetch`, the registry of clusters and the WAL catalog.
//!
//! Each archived file is one sealed object under `wal/<system>/<timeline>/`, and each segment
//! also gets a small summary object (commit times, restore points, xids) under `walsum/`, so
//! point-in-time targets can be checked without reading WAL. `wal-push` reads no index and
//! lists nothing on its usual path: a registry lookup, two create-only writes.

use crate::catalog::{keys, wal, SystemId};
use crate::error::{io, Error, Result};
use crate::pg::history::{parse_history, TimelineTree};
use crate::pg::wal::{major_from_wal_magic, SegmentHeader, WalFile, DEFAULT_SEG_SIZE};
use crate::pg::walscan::{scan_segment, SegmentSummary};
use crate::pg::{control::ControlData, lsn::Lsn};
use crate::receive::piece;
use crate::store::{BackendError, Repository, StoreError};
use crate::walindex::{self, Covered};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

/// A cluster (system identifier) known to the repository.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct System {
    /// The cluster's system identifier.
    pub system_identifier: SystemId,
    /// The PostgreSQL major version it ran when registered.
    pub pg_major: u32,
    /// Its WAL segment size in bytes; 0 reads as the 16 MiB default (see [`segment_size`]).
    pub wal_segment_size: u64,
    /// When the repository first saw it.
    pub registered: DateTime<Utc>,
}

impl System {
    /// The system identifier as a number.
    pub fn sysid(&self) -> u64 {
        self.system_identifier.get()
    }
}

/// The stored record of cluster `sysid`; `None` if the repository has none, an error if it is unreadable or names another cluster.
pub fn load_system(
    repo: &Repository,
    sysid: u64,
) -> std::result::Result<Option<System>, StoreError> {
    match repo.get_sealed(&keys::system(sysid)) {
        Ok(p) => {
            let system: System = serde_json::from_slice(&p)
                .map_err(|e| StoreError::corrupt(keys::system(sysid), e.to_string()))?;
            if system.sysid() != sysid {
                return Err(StoreError::corrupt(
                    keys::system(sysid),
                    format!(
                        "holds system identifier {}, not its own {sysid}",
                        system.system_identifier
                    ),
                ));
            }
            Ok(Some(system))
        }
        Err(StoreError::Backend(e)) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// The clusters the repository knows. Store errors keep their kind: a damaged record is
/// corruption, a store that did not answer is transient.
pub fn systems(repo: &Repository) -> std::result::Result<Vec<System>, StoreError> {
    let mut out = Vec::new();
    for sysid in wal::system_ids(repo)? {
        out.extend(load_system(repo, sysid)?);
    }
    Ok(out)
}

/// Records a cluster, unless it is already known.
pub fn register_system(repo: &Repository, system: &System) -> Result<()> {
    let sysid = system.sysid();
    if load_system(repo, sysid)?.is_none() {
        let json = serde_json::to_vec_pretty(system).expect("system serializes");
        match repo.put_sealed(&keys::system(sysid), &json) {
            // A concurrent registration won; either record will do.
            Err(StoreError::Backend(BackendError::Conflict { .. })) => {}
            other => other?,
        }
    }
    Ok(())
}

/// Picks the cluster a command means: the one given, or the only one in the repository.
pub fn resolve_system(repo: &Repository, given: Option<u64>) -> Result<System> {
    if let Some(sysid) = given {
        return load_system(repo, sysid)?.ok_or_else(|| {
            Error::BadInput(format!(
                "system identifier {sysid} has no backups or WAL in this repository"
            ))
        });
    }
    let mut all = systems(repo)?;
    match all.len() {
        0 => Err(Error::NotFound(
            "the repository holds no backups or WAL yet".into(),
        )),
        1 => Ok(all.remove(0)),
        _ => Err(Error::BadInput(format!(
            "the repository holds several clusters ({}); choose one with --system",
            all.iter()
                .map(|s| match s.pg_major {
                    // Registered by wal-push without a readable pg_control.
                    0 => s.system_identifier.to_string(),
                    m => format!("{} of PostgreSQL {m}", s.system_identifier),
                })
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// What `push` did with one file.
#[derive(Debug, PartialEq, Eq, serde::Serialize)]
pub struct Pushed {
    /// The file's name, as in pg_wal.
    pub name: String,
    /// The object it is archived as.
    pub key: String,
    /// Its length.
    pub bytes: u64,
    /// Whether the file was stored or already there.
    pub outcome: PushOutcome,
}

/// What `push` did with a file.
#[derive(Debug, PartialEq, Eq, Clone, Copy, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PushOutcome {
    /// The file was archived now.
    Stored,
    /// An identical copy was already archived.
    AlreadyArchived,
}

/// The zstd level WAL is sealed at, whatever level the repository's backups use: at
/// level 1 a segment compresses in half the time of level 3 and comes out about 15% larger.
/// Archiving must keep up with the server; WAL is kept only as long as its backups.
const WAL_LEVEL: i32 = 1;

/// Archives one file from pg_wal (as `archive_command` passes it, relative to PGDATA).
///
/// The segment is hashed and compressed on threads of their own while the registry is read
/// and the summary made and written: a push costs about the compression and one write.
pub fn push(repo: &Repository, path: &Path) -> Result<Pushed> {
    push_for(repo, path, None)
}

/// As [`push`], for a caller that knows the file's cluster (`wal-receive`: a history file has
/// no WAL header and no pg_control beside it).
pub fn push_for(repo: &Repository, path: &Path, known: Option<u64>) -> Result<Pushed> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::BadInput(format!("{} is not a WAL file name", path.display())))?;
    // The segment size only matters for segment numbers; the key needs the timeline.
    let file = WalFile::parse(name, DEFAULT_SEG_SIZE).ok_or_else(|| {
        Error::BadInput(format!(
            "{name} is not a WAL segment, history or backup file name"
        ))
    })?;
    let data = crate::mapped::Mapped::open(path).map_err(io(format!("read {}", path.display())))?;
    // archive_command runs in PGDATA, so pg_control is beside pg_wal.
    let pgdata = path
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("."));
    let control = std::fs::read(pgdata.join("global/pg_control"))
        .ok()
        .and_then(|b| ControlData::parse(&b).ok());
    push_data(repo, name, file, &data, control.as_ref(), known)
}

/// Archives WAL file `name` (parsed as `file`) with content `data`, read from elsewhere than
/// pg_wal (`import`); `control` is the cluster's pg_control when at hand.
pub fn push_data(
    repo: &Repository,
    name: &str,
    file: WalFile,
    data: &[u8],
    control: Option<&ControlData>,
    known: Option<u64>,
) -> Result<Pushed> {
    let header = match file {
        WalFile::Segment { .. } | WalFile::Partial { .. } => {
            Some(segment_header(name, file, data)?)
        }
        _ => None,
    };
    let sysid = match (&header, &control) {
        (Some(h), _) => h.system_identifier,
        (None, Some(c)) => c.system_identifier,
        (None, None) => match known {
            Some(sysid) => sysid,
            None => resolve_system(repo, None)?.sysid(),
        },
    };
    let seg_size = header.as_ref().map_or(0, |h| h.seg_size as u64);
    let key = keys::wal_file(sysid, file.tli(), name);
    // The summary's write (and the registry's read) overlap the compression, so only the
    // segment's own write waits for it. The order of writes stays fixed: registry, summary,
    // segment.
    let sealed = std::thread::scope(|s| {
        let sealed = s.spawn(|| repo.crypto().seal(&key, data, WAL_LEVEL));
        check_system(repo, sysid, control, seg_size, name)?;
        if let Some(summary) = header.as_ref().and_then(|h| summarise(name, data, h)) {
            let stored = StoredSummary {
                summary: &summary,
                archived_at: Utc::now(),
            };
            let json = serde_json::to_vec(&stored).expect("summary serializes");
            match repo.put_sealed(&keys::wal_summary(sysid, file.tli(), name), &json) {
                // A retried push of a segment whose earlier summary differs is judged below
                // by the segment itself.
                Err(StoreError::Backend(BackendError::Conflict { .. })) => {}
                other => other?,
            }
        }
        Ok::<_, Error>(joined(sealed))
    })?;
    let pushed = |outcome| Pushed {
        name: name.to_string(),
        key: key.clone(),
        bytes: data.len() as u64,
        outcome,
    };
    // Create-only, without asking first: a retried push finds its own object (identical
    // bytes), or one sealed differently (another nonce, another compression level), judged by
    // digest below.
    match repo.backend().put_new(&key, &sealed) {
        Ok(true) => {
            walindex::after_push(repo, sysid, seg_size, name);
            return Ok(pushed(PushOutcome::Stored));
        }
        Ok(false) => return Ok(pushed(PushOutcome::AlreadyArchived)),
        Err(BackendError::Conflict { .. }) => {}
        Err(e) => return Err(StoreError::from(e).into()),
    }
    // Compare contents by digest: compression settings may differ between copies.
    if repo.sealed_header(&key)?.digest == crate::store::BlobId::of(data) {
        Ok(pushed(PushOutcome::AlreadyArchived))
    } else {
        Err(Error::WalConflict {
            name: name.to_string(),
            key,
        })
    }
}

/// A segment's summary as `wal-push` stores it: with the time of the push, so that `metrics`
/// tells the age of the last archived segment from one object, and a push costs no extra
/// write (readers of the summary ignore the field).
#[derive(Serialize)]
struct StoredSummary<'a> {
    #[serde(flatten)]
    summary: &'a SegmentSummary,
    archived_at: DateTime<Utc>,
}

/// When segment `name` of timeline `tli` was archived, from its summary object; `None` for a
/// segment without a summary, or archived by a build that did not record the time.
pub fn archived_at(
    repo: &Repository,
    sysid: u64,
    tli: u32,
    name: &str,
) -> std::result::Result<Option<DateTime<Utc>>, StoreError> {
    #[derive(Deserialize)]
    struct Stamp {
        archived_at: Option<DateTime<Utc>>,
    }
    let key = keys::wal_summary(sysid, tli, name);
    match repo.get_sealed(&key) {
        Ok(bytes) => serde_json::from_slice::<Stamp>(&bytes)
            .map(|s| s.archived_at)
            .map_err(|e| StoreError::corrupt(key, e.to_string())),
        Err(StoreError::Backend(e)) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// A scoped thread's result; its panic goes on in the caller.
fn joined<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> T {
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// The header of WAL segment (or partial segment) `name`, checked against the file's length
/// and name.
fn segment_header(name: &str, file: WalFile, data: &[u8]) -> Result<SegmentHeader> {
    let header = SegmentHeader::parse(data)?;
    if major_from_wal_magic(header.magic).is_none() {
        return Err(Error::BadInput(format!(
            "{name}: unknown WAL page magic {:#06x}; not a WAL segment of PostgreSQL 13–18",
            header.magic
        )));
    }
    if header.seg_size as usize != data.len() && matches!(file, WalFile::Segment { .. }) {
        return Err(Error::BadInput(format!(
            "{name}: {} bytes, but its header says segments are {} bytes",
            data.len(),
            header.seg_size
        )));
    }
    // A recycled file still carries the header of the segment it used to be.
    if let WalFile::Segment { segno, .. } | WalFile::Partial { segno, .. } =
        WalFile::parse(name, header.seg_size as u64).unwrap_or(file)
    {
        if header.pageaddr != segno * header.seg_size as u64 {
            return Err(Error::BadInput(format!(
                "{name}: its first page belongs to WAL position {}, not to this segment; \
                 refusing a recycled or misnamed file",
                crate::pg::lsn::Lsn(header.pageaddr)
            )));
        }
    }
    Ok(header)
}

/// The segment's summary; `None`, with a warning, for WAL it cannot read.
fn summarise(name: &str, data: &[u8], header: &SegmentHeader) -> Option<SegmentSummary> {
    scan_segment(data, header)
        .map_err(|e| {
            tracing::warn!("{name}: cannot summarise ({e}); time targets in it will not be checked")
        })
        .ok()
}

/// Refuses WAL of a cluster the repository does not know, unless it knows none yet.
fn check_system(
    repo: &Repository,
    sysid: u64,
    control: Option<&ControlData>,
    seg_size: u64,
    name: &str,
) -> Result<()> {
    if load_system(repo, sysid)?.is_some() {
        return Ok(());
    }
    let known = systems(repo)?;
    if known.is_empty() {
        let control = control.filter(|c| c.system_identifier == sysid);
        return register_system(
            repo,
            &System {
                system_identifier: SystemId(sysid),
                pg_major: control.and_then(|c| c.major).unwrap_or(0),
                wal_segment_size: seg_size,
                registered: Utc::now(),
            },
        );
    }
    Err(Error::BadInput(format!(
        "{name} belongs to the cluster with system identifier {sysid}, but this repository holds \
         {}; run `pgsnapfs backup` of this cluster once to add it, or check archive_command points \
         at the right repository",
        known
            .iter()
            .map(|s| s.system_identifier.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// Restores one archived file to `dest` (as `restore_command` asks), atomically.
pub fn fetch(repo: &Repository, sysid: Option<u64>, name: &str, dest: &Path) -> Result<()> {
    fetch_checked(repo, sysid, name, dest, &|_| Ok(()))
}

/// As [`fetch`], handing the file over only if `check` passes its bytes.
pub fn fetch_checked(
    repo: &Repository,
    sysid: Option<u64>,
    name: &str,
    dest: &Path,
    check: &dyn Fn(&[u8]) -> Result<()>,
) -> Result<()> {
    if WalFile::parse(name, DEFAULT_SEG_SIZE).is_none() {
        return Err(Error::BadInput(format!("{name} is not a WAL file name")));
    }
    let system = resolve_system(repo, sysid)?;
    let sysid = system.sysid();
    let data = match WalFile::parse(name, segment_size(&system)) {
        Some(WalFile::Segment { tli, .. }) => {
            segment_data(repo, sysid, tli, name, segment_size(&system))?
        }
        _ => read_file(repo, sysid, name)?,
    }
    .ok_or_else(|| Error::NotFound(format!("{name} is not in the archive")))?;
    check(&data)?;
    let tmp = dest.with_extension("pgsnapfs-tmp");
    std::fs::write(&tmp, &data).map_err(io(format!("write {}", tmp.display())))?;
    std::fs::rename(&tmp, dest).map_err(io(format!("rename to {}", dest.display())))
}

/// The bytes of archived file `name` of cluster `sysid` (verified against its seal); `None`
/// if it is not archived (a segment `wal-receive` is still streaming is not: see
/// [`segment_data`]).
pub fn read_file(repo: &Repository, sysid: u64, name: &str) -> Result<Option<Vec<u8>>> {
    let file = WalFile::parse(name, DEFAULT_SEG_SIZE)
        .ok_or_else(|| Error::BadInput(format!("{name} is not a WAL file name")))?;
    match repo.get_sealed(&keys::wal_file(sysid, file.tli(), name)) {
        Err(StoreError::Backend(e)) if e.is_not_found() => Ok(None),
        other => Ok(Some(other?)),
    }
}

/// Segment `name` of timeline `tli`: the archived object, else the part `wal-receive` has
/// streamed so far, zero-filled to a whole segment (recovery reads the zeros as the end of
/// WAL); `None` if there is neither.
pub fn segment_data(
    repo: &Repository,
    sysid: u64,
    tli: u32,
    name: &str,
    seg_size: u64,
) -> Result<Option<Vec<u8>>> {
    match read_file(repo, sysid, name)? {
        Some(data) => Ok(Some(data)),
        None => streamed_part(repo, sysid, tli, name, seg_size),
    }
}

/// The streamed part of segment `name`, assembled from its pieces and zero-filled to a whole
/// segment; `None` if none.
fn streamed_part(
    repo: &Repository,
    sysid: u64,
    tli: u32,
    name: &str,
    seg_size: u64,
) -> Result<Option<Vec<u8>>> {
    let listed = repo
        .backend()
        .list(&keys::wal_stream(sysid, tli, name))
        .map_err(StoreError::from)?;
    let (used, len) = piece::assemble(
        listed
            .iter()
            .filter_map(|k| piece::parse(k.rsplit('/').next()?))
            .collect(),
    );
    if len == 0 {
        return Ok(None);
    }
    let mut data = Vec::with_capacity(seg_size as usize);
    for (start, end) in used {
        let key = piece::key(sysid, tli, name, start, end);
        let bytes = match repo.get_sealed(&key) {
            // wal-receive completed the segment meanwhile: it archives it before it deletes
            // the pieces.
            Err(StoreError::Backend(e)) if e.is_not_found() => {
                return read_file(repo, sysid, name);
            }
            other => other?,
        };
        if bytes.len() as u64 != u64::from(end - start) || u64::from(end) > seg_size {
            return Err(StoreError::corrupt(
                key,
                format!("holds {} bytes, not what its name says", bytes.len()),
            )
            .into());
        }
        data.extend_from_slice(&bytes[data.len() - start as usize..]);
    }
    tracing::info!("{name}: using the {len} bytes wal-receive has streamed so far");
    data.resize(seg_size as usize, 0);
    Ok(Some(data))
}

/// The segments `wal-receive` holds partially (timeline, segment number), for planning: a
/// recovery may go into them, as `wal-fetch` serves them.
pub fn streamed_segments(repo: &Repository, system: &System) -> Result<Vec<(u32, u64)>> {
    let keys = repo
        .backend()
        .list(&keys::wal_stream_system(system.sysid()))
        .map_err(StoreError::from)?;
    let segments: std::collections::BTreeSet<(u32, u64)> = keys
        .iter()
        .filter_map(
            |k| match WalFile::parse(k.rsplit('/').nth(1)?, segment_size(system))? {
                WalFile::Segment { tli, segno } => Some((tli, segno)),
                _ => None,
            },
        )
        .collect();
    Ok(segments.into_iter().collect())
}

/// The archived WAL of one timeline.
#[derive(Debug, Clone, Serialize)]
pub struct TimelineWal {
    /// The timeline's id.
    pub timeline: u32,
    /// Segment numbers, ascending.
    #[serde(skip)]
    pub segnos: Vec<u64>,
    /// Number of archived segments.
    pub segments: usize,
    /// Name of the first archived segment.
    pub first: Option<String>,
    /// Name of the last archived segment.
    pub last: Option<String>,
    /// Runs of segments missing between the first and the last.
    pub gaps: Vec<Gap>,
    /// Whether the timeline's history file is archived.
    pub history: bool,
    /// The summaries the WAL index holds for it, when the catalog came from the index.
    #[serde(skip)]
    pub indexed: Option<Arc<Covered>>,
}

/// A run of consecutive segments missing from the archive.
#[derive(Debug, Clone, Serialize)]
pub struct Gap {
    /// The first missing segment.
    pub from: String,
    /// The last missing segment.
    pub to: String,
}

/// The archived WAL of a cluster, per timeline, with gaps: from the WAL index and what was
/// archived since (see `walindex`), or by listing every WAL key when the index is missing
/// or cannot be trusted.
pub fn catalog(repo: &Repository, system: &System) -> Result<Vec<TimelineWal>> {
    match walindex::catalog(repo, system)? {
        Some(c) => Ok(c),
        None => catalog_listed(repo, system),
    }
}

/// The archived WAL of a cluster, per timeline, with gaps, from a listing of every WAL key.
pub fn catalog_listed(repo: &Repository, system: &System) -> Result<Vec<TimelineWal>> {
    let sysid = system.sysid();
    let seg_size = segment_size(system);
    let mut by_tli: BTreeMap<u32, (Vec<u64>, bool)> = BTreeMap::new();
    for object in wal::files(repo, sysid)? {
        match WalFile::parse(&object.name, seg_size) {
            Some(WalFile::Segment { tli, segno }) => by_tli.entry(tli).or_default().0.push(segno),
            Some(WalFile::History { tli }) => by_tli.entry(tli).or_default().1 = true,
            _ => {}
        }
    }
    Ok(by_tli
        .into_iter()
        .map(|(tli, (mut segnos, history))| {
            segnos.sort_unstable();
            timeline_wal(tli, segnos, history, seg_size)
        })
        .collect())
}

/// The catalog entry of timeline `tli` with segments `segnos` (ascending).
pub fn timeline_wal(tli: u32, segnos: Vec<u64>, history: bool, seg_size: u64) -> TimelineWal {
    let name = |segno| WalFile::Segment { tli, segno }.name(seg_size);
    let gaps = segnos
        .windows(2)
        .filter(|w| w[1] > w[0] + 1)
        .map(|w| Gap {
            from: name(w[0] + 1),
            to: name(w[1] - 1),
        })
        .collect();
    TimelineWal {
        timeline: tli,
        segments: segnos.len(),
        first: segnos.first().map(|s| name(*s)),
        last: segnos.last().map(|s| name(*s)),
        segnos,
        gaps,
        history,
        indexed: None,
    }
}

/// The timeline tree of a cluster, from the history files its catalog lists. A timeline
/// above 1 whose history file is missing or unreadable is listed in `missing`.
pub fn timeline_tree(
    repo: &Repository,
    system: &System,
    catalog: &[TimelineWal],
) -> Result<TimelineTree> {
    let sysid = system.sysid();
    let mut histories = BTreeMap::new();
    let mut missing = Vec::new();
    for t in catalog {
        let entries = if t.timeline == 1 {
            Vec::new()
        } else if !t.history {
            missing.push(t.timeline);
            Vec::new()
        } else {
            let name = WalFile::History { tli: t.timeline }.name(segment_size(system));
            let text = repo.get_sealed(&keys::wal_file(sysid, t.timeline, &name))?;
            match parse_history(&String::from_utf8_lossy(&text)) {
                Ok(entries) => entries,
                Err(e) => {
                    tracing::warn!("{name} of system {sysid} is unreadable: {e}");
                    missing.push(t.timeline);
                    Vec::new()
                }
            }
        };
        histories.insert(t.timeline, entries);
    }
    Ok(TimelineTree::new(histories, missing))
}

/// The cluster's WAL segment size in bytes, the 16 MiB default for records that do not say.
pub fn segment_size(system: &System) -> u64 {
    if system.wal_segment_size == 0 {
        DEFAULT_SEG_SIZE
    } else {
        system.wal_segment_size
    }
}

/// The stored summary of one archived segment, if it has one.
pub fn summary(
    repo: &Repository,
    sysid: u64,
    tli: u32,
    segno: u64,
    seg_size: u64,
) -> Result<Option<SegmentSummary>> {
    let name = WalFile::Segment { tli, segno }.name(seg_size);
    let key = keys::wal_summary(sysid, tli, &name);
    match repo.get_sealed(&key) {
        Ok(p) => Ok(serde_json::from_slice(&p).ok()),
        Err(StoreError::Backend(e)) if e.is_not_found() => {
            streamed_summary(repo, sysid, tli, &name, seg_size)
        }
        Err(e) => Err(e.into()),
    }
}

/// The summary of the part of a segment `wal-receive` has stored, read from its WAL (it
/// changes until the segment is complete, so none is stored).
fn streamed_summary(
    repo: &Repository,
    sysid: u64,
    tli: u32,
    name: &str,
    seg_size: u64,
) -> Result<Option<SegmentSummary>> {
    let Some(data) = streamed_part(repo, sysid, tli, name, seg_size)? else {
        return Ok(None);
    };
    Ok(SegmentHeader::parse(&data)
        .and_then(|h| scan_segment(&data, &h))
        .map_err(|e| tracing::warn!("{name} (streamed part): cannot summarise ({e})"))
        .ok())
}

/// The stored summaries of one cluster's segments, each read at most once.
pub struct SummaryCache<'a> {
    repo: &'a Repository,
    sysid: u64,
    seg_size: u64,
    /// Read a damaged summary as none, with a warning, instead of failing.
    skip_corrupt: bool,
    cache: HashMap<(u32, u64), Option<SegmentSummary>>,
    /// The summaries the WAL index holds, by timeline: read before the objects.
    indexed: HashMap<u32, Arc<Covered>>,
}

impl<'a> SummaryCache<'a> {
    /// A cache of cluster `sysid`'s summaries; with `skip_corrupt`, a damaged summary reads as none (with a warning) instead of failing.
    pub fn new(repo: &'a Repository, sysid: u64, seg_size: u64, skip_corrupt: bool) -> Self {
        SummaryCache {
            repo,
            sysid,
            seg_size,
            skip_corrupt,
            cache: HashMap::new(),
            indexed: HashMap::new(),
        }
    }

    /// Takes the summaries the WAL index holds for the timelines of `catalog`.
    pub fn with_catalog(mut self, catalog: &[TimelineWal]) -> Self {
        for t in catalog {
            if let Some(c) = &t.indexed {
                self.indexed.insert(t.timeline, c.clone());
            }
        }
        self
    }

    /// The summary of segment `segno` of timeline `tli`, if it has one.
    pub fn get(&mut self, tli: u32, segno: u64) -> Result<Option<&SegmentSummary>> {
        if let Some(c) = self.indexed.get(&tli).filter(|c| c.get(segno).is_some()) {
            return Ok(c.get(segno).flatten());
        }
        if !self.cache.contains_key(&(tli, segno)) {
            let s = self.read(tli, segno)?;
            self.cache.insert((tli, segno), s);
        }
        Ok(self.cache[&(tli, segno)].as_ref())
    }

    /// Reads, 16 at a time (a request to S3 is mostly waiting), the summaries of `segments`
    /// (timeline, segment number) that neither the index nor the cache holds, so that `get`
    /// finds them.
    pub fn prefetch(&mut self, segments: &[(u32, u64)]) -> Result<()> {
        let missing: Vec<(u32, u64)> = segments
            .iter()
            .copied()
            .filter(|&(tli, segno)| {
                !self.cache.contains_key(&(tli, segno))
                    && self
                        .indexed
                        .get(&tli)
                        .is_none_or(|c| c.get(segno).is_none())
            })
            .collect();
        let chunk = missing.len().div_ceil(16).max(1);
        let this = &*self;
        let read = std::thread::scope(|s| {
            let workers: Vec<_> = missing
                .chunks(chunk)
                .map(|part| {
                    s.spawn(move || {
                        part.iter()
                            .map(|&(tli, segno)| Ok(((tli, segno), this.read(tli, segno)?)))
                            .collect::<Result<Vec<_>>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect::<Result<Vec<_>>>()
        })?;
        self.cache.extend(read.into_iter().flatten());
        Ok(())
    }

    /// The summary object of a segment; with `skip_corrupt`, a damaged one reads as none.
    fn read(&self, tli: u32, segno: u64) -> Result<Option<SegmentSummary>> {
        match summary(self.repo, self.sysid, tli, segno, self.seg_size) {
            Err(Error::Store(StoreError::Corrupt { object, reason })) if self.skip_corrupt => {
                tracing::warn!("{object} is unreadable ({reason}): its commit times are not used");
                Ok(None)
            }
            other => other,
        }
    }
}

/// The LSN just past the end of the segment, for range checks.
pub fn segment_end(segno: u64, seg_size: u64) -> Lsn {
    Lsn((segno + 1) * seg_size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::backend::memory::MemoryBackend;

    #[test]
    fn a_system_record_without_its_numeric_identifier_is_corrupt() {
        let repo = Repository::init(Arc::new(MemoryBackend::default()), 8192, 3).unwrap();
        let record = |id: &str| {
            serde_json::json!({
                "system_identifier": id, "pg_major": 15,
                "wal_segment_size": DEFAULT_SEG_SIZE, "registered": Utc::now(),
            })
        };
        let put = |sysid: u64, s: serde_json::Value| {
            repo.put_sealed(&keys::system(sysid), &serde_json::to_vec(&s).unwrap())
                .unwrap()
        };
        put(7, record("7"));
        put(8, record("eight"));
        put(9, record("7"));
        assert_eq!(load_system(&repo, 7).unwrap().unwrap().sysid(), 7);
        for sysid in [8, 9] {
            match load_system(&repo, sysid) {
                Err(StoreError::Corrupt { object, .. }) => assert_eq!(object, keys::system(sysid)),
                other => panic!("{sysid}: {other:?}"),
            }
        }
        assert!(matches!(systems(&repo), Err(StoreError::Corrupt { .. })));
    }

    #[test]
    fn prefetched_summaries_are_the_ones_get_reads() {
        let mem = Arc::new(MemoryBackend::default());
        let repo = Repository::init(mem.clone(), 8192, 3).unwrap();
        let sum = |segno: u64| SegmentSummary {
            first_commit_time: Some(segno as i64),
            last_commit_time: None,
            restore_points: Vec::new(),
            min_commit_xid: None,
            max_commit_xid: None,
            end_lsn: Lsn(segno),
            tablespaces: Some(Vec::new()),
        };
        let key = |segno| {
            let name = WalFile::Segment { tli: 1, segno }.name(DEFAULT_SEG_SIZE);
            keys::wal_summary(7, 1, &name)
        };
        for segno in 1..=40 {
            repo.put_sealed(&key(segno), &serde_json::to_vec(&sum(segno)).unwrap())
                .unwrap();
        }
        mem.tamper(&key(5), |b| b[0] ^= 1);
        let path: Vec<(u32, u64)> = (1..=45).map(|s| (1, s)).collect();
        let mut strict = SummaryCache::new(&repo, 7, DEFAULT_SEG_SIZE, false);
        assert!(strict.prefetch(&path).is_err(), "a damaged summary fails");
        let mut sums = SummaryCache::new(&repo, 7, DEFAULT_SEG_SIZE, true);
        sums.prefetch(&path).unwrap();
        assert_eq!(sums.cache.len(), 45);
        assert_eq!(sums.get(1, 40).unwrap(), Some(&sum(40)));
        assert_eq!(sums.get(1, 5).unwrap(), None, "damaged: read as none");
        assert_eq!(sums.get(1, 41).unwrap(), None, "absent");
    }
}
