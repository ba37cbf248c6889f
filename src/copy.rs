//! `copy`: backups and archived WAL from one repository into another (a second copy, 3-2-1).
//!
//! The two repositories may differ in back end and in encryption, so blob ids may differ
//! (HMAC ids under different keys): a copied backup's chunk lists and trees are rewritten with
//! the target's ids and places. Only chunks the target lacks are sent. What it has is known
//! from its pack entry tables (24 bytes a blob in memory, see [`Stored`]), and, cheaper, from
//! a backup both repositories hold: the copy of an unchanged file reuses that backup's lists
//! in the target without reading a chunk. Entry tables are not trusted while a gc runs: it
//! may delete a pack no backup references (a killed copy's) under our feet.
//!
//! Order is the backup's: packs first, the manifest last, so a killed copy leaves no visible
//! backup, and a rerun finds the packs it wrote in the entry tables and sends only the rest.
//! The target is written under a shared lease, like a backup, so gc keeps what it writes and
//! its own backups run alongside.

use crate::archive::{self, System};
use crate::catalog::{keys, BackupMeta};
use crate::error::{Error, Result};
use crate::gc::Condemned;
use crate::lock::{self, Lease};
use crate::pg::wal::{segment_of, WalFile};
use crate::store::backend::BackendError;
use crate::store::pack::BlobType;
use crate::store::snapshot::{Requests, Snapshot};
use crate::store::tree::{encode_chunk_list, encode_dir, BlobRef, Chunk, Dir, Loc, Node, NodeKind};
use crate::store::{BlobId, PackId, Packer, Repository, StoreError};
use serde_json::{Map, Value};
use std::collections::{BTreeSet, HashMap, HashSet};

/// How many chunks of a list are read from the source at a time (8 MiB of 64 KiB chunks).
const READ_BATCH: usize = 128;

/// A manifest as stored, whatever its writer's metadata: copied field for field.
type Manifest = Snapshot<Map<String, Value>>;

/// Which backups to copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every backup of the source.
    All,
    /// One backup, by id (or `latest`).
    One(String),
}

/// What to copy, and where progress goes.
pub struct CopyOptions {
    /// The backups to copy.
    pub backups: Selection,
    /// Copy every archived WAL file (and its summary) the target lacks, not only the WAL
    /// of the selected backups (from start to stop, and history files), which is always copied.
    pub wal: bool,
    /// Called with the total bytes (logical) of the backups to copy, once known.
    pub total: Box<dyn Fn(u64)>,
    /// Called with bytes of backup content done as the copy goes on.
    pub progress: Box<dyn Fn(u64)>,
}

/// What a copy did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct CopySummary {
    /// Backups copied by this run, oldest first.
    pub backups_copied: Vec<String>,
    /// Selected backups the target already held.
    pub backups_present: Vec<String>,
    /// Chunks written to the target.
    pub chunks_sent: u64,
    /// Plain bytes of the chunks written.
    pub bytes_sent: u64,
    /// Plain bytes of the copied backups not sent: held by the target already, or all-zero.
    pub bytes_skipped: u64,
    /// Bytes of packs written to the target (stored: compressed, and encrypted if it is).
    pub pack_bytes_written: u64,
    /// WAL files (and summaries) copied.
    pub wal_files_sent: u64,
    /// WAL files (and summaries) the target already held.
    pub wal_files_present: u64,
    /// Bytes of the WAL objects written.
    pub wal_bytes_sent: u64,
    /// Requests sent to the source (S3 only).
    pub requests_from: Option<Requests>,
    /// Requests sent to the target (S3 only).
    pub requests_to: Option<Requests>,
}

/// The backups to copy, oldest first, and those the target already holds: pure.
pub fn plan(
    source: &[(String, chrono::DateTime<chrono::Utc>)],
    target: &HashSet<String>,
    selection: &Selection,
) -> Result<(Vec<String>, Vec<String>)> {
    let mut ordered: Vec<_> = source.to_vec();
    ordered.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    let chosen: Vec<String> = match selection {
        Selection::All => ordered.into_iter().map(|(id, _)| id).collect(),
        Selection::One(id) if id == "latest" => match ordered.pop() {
            Some((id, _)) => vec![id],
            None => {
                return Err(Error::NotFound(
                    "the source repository has no backup".into(),
                ))
            }
        },
        Selection::One(id) => {
            if !ordered.iter().any(|(s, _)| s == id) {
                return Err(Error::NotFound(format!(
                    "backup {id} is not in the source repository; `pgsnapfs list` shows its backups"
                )));
            }
            vec![id.clone()]
        }
    };
    Ok(chosen.into_iter().partition(|id| !target.contains(id)))
}

/// Refuses when the target's backup of `m`'s id is another backup: ids are start times to the
/// second, so two repositories backed up at once hold different backups under one id.
fn refuse_other(to: &Repository, m: &Manifest) -> Result<()> {
    let held: Manifest = to.load_manifest(&m.id)?;
    if held.meta == m.meta && held.size_logical == m.size_logical {
        return Ok(());
    }
    Err(Error::BadInput(format!(
        "the target holds another backup under id {}: it was not copied; copy the others \
         with --backup ID, or restore it from the source",
        m.id
    )))
}

/// Copies the selected backups (and with `wal`, the archived WAL) from `from` into `to`.
pub fn run(from: &Repository, to: &Repository, opts: CopyOptions) -> Result<CopySummary> {
    if from.config.id == to.config.id {
        return Err(Error::BadInput(
            "the source and the target are the same repository".into(),
        ));
    }
    if from.config.chunk_size != to.config.chunk_size {
        return Err(Error::BadInput(format!(
            "the source cuts files into chunks of {} bytes and the target into {}: chunk lists \
             cannot be carried across; create the target with `pgsnapfs init --chunk-size {}`",
            from.config.chunk_size, to.config.chunk_size, from.config.chunk_size
        )));
    }
    // Before anything is read: gc keeps what both leases' holders may use.
    let _reading = Lease::shared(from, "copy")?;
    let writing = Lease::shared(to, "copy")?;
    let manifests: Vec<Manifest> = from.manifests_all_or_error()?;
    let source: Vec<_> = manifests
        .iter()
        .map(|m| (m.id.clone(), m.stop_time))
        .collect();
    let present: HashSet<String> = to.snapshot_ids()?.into_iter().collect();
    let (todo, already) = plan(&source, &present, &opts.backups)?;
    for id in &already {
        if let Some(m) = manifests.iter().find(|m| &m.id == id) {
            refuse_other(to, m)?;
        }
    }
    let mut summary = CopySummary {
        backups_present: already,
        ..CopySummary::default()
    };
    let by_id: HashMap<&str, &Manifest> = manifests.iter().map(|m| (m.id.as_str(), m)).collect();
    (opts.total)(
        todo.iter()
            .filter_map(|id| by_id.get(id.as_str()))
            .map(|m| m.size_logical)
            .sum(),
    );
    // WAL first: a backup that appears in the target can be restored there at once. Without
    // `wal`, each selected backup's own WAL, which its restore cannot do without.
    let selected = todo.iter().chain(&summary.backups_present);
    let needed = match opts.wal {
        true => None,
        false => Some(backup_wal(
            selected.filter_map(|id| by_id.get(id.as_str()).copied()),
        )?),
    };
    copy_wal(from, to, needed.as_ref(), &mut summary)?;
    let mut logical = 0;
    if !todo.is_empty() {
        let stored = match gc_running(to)? {
            // It may have surveyed before our lease and so delete any unreferenced pack at
            // once: only blobs of manifests read under the lease (the base) are reused.
            true => Stored::default(),
            false => Stored::read(to, &condemned(to, &writing.id())?)?,
        };
        let mut copier = Copier::new(from, to, &opts, stored);
        for id in &todo {
            let Some(m) = by_id.get(id.as_str()) else {
                continue;
            };
            register(from, to, m)?;
            let base = common_base(to, m, &manifests, &present, &summary.backups_copied)?;
            let root = copier.dir(&m.root, base.as_ref().map(|(a, b)| (a, b)))?;
            let written = copier.flush()?;
            // Subtrees taken whole from the base were not walked: the bar ends at the total.
            (opts.progress)(m.size_logical.saturating_sub(copier.walked));
            copier.walked = 0;
            logical += m.size_logical;
            let mut copy = (*m).clone();
            copy.root = root;
            copy.size_stored_new = written;
            // A gc that started before our lease may have condemned a pack listed at the
            // start since: publishing would reference a pack its next run deletes.
            if !copier.reused.is_disjoint(&condemned(to, &writing.id())?) {
                return Err(Error::CopyRaced { backup: id.clone() });
            }
            writing.ensure_held()?;
            match to.save_manifest(&copy) {
                // Another copy published it first: nothing is lost if it is the same backup.
                Err(StoreError::Backend(BackendError::Conflict { .. })) => {
                    refuse_other(to, m)?;
                    summary.backups_present.push(id.clone())
                }
                other => {
                    other?;
                    summary.backups_copied.push(id.clone());
                }
            }
            copier.backup_done();
            tracing::info!(backup = %id, written, "backup copied");
        }
        summary.chunks_sent = copier.chunks_sent;
        summary.bytes_sent = copier.bytes_sent;
        summary.bytes_skipped = logical.saturating_sub(copier.bytes_sent);
        summary.pack_bytes_written = copier.written_before;
    }
    summary.requests_from = from.backend().stats().map(Into::into);
    summary.requests_to = to.backend().stats().map(Into::into);
    Ok(summary)
}

/// Registers the backup's cluster in the target, as a backup does.
fn register(from: &Repository, to: &Repository, m: &Manifest) -> Result<()> {
    let sysid = m
        .meta
        .get("system_identifier")
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| {
            StoreError::corrupt(keys::snapshot(&m.id), "no system_identifier".to_string())
        })?;
    if let Some(system) = archive::load_system(from, sysid)? {
        archive::register_system(to, &system)?;
    }
    Ok(())
}

/// The newest backup both repositories hold that is older than `m`: its root in each, so
/// unchanged subtrees map from one to the other without reading them.
fn common_base(
    to: &Repository,
    m: &Manifest,
    manifests: &[Manifest],
    present: &HashSet<String>,
    copied: &[String],
) -> Result<Option<(BlobRef, BlobRef)>> {
    let Some(base) = manifests
        .iter()
        .filter(|b| b.stop_time <= m.stop_time && b.id != m.id)
        .filter(|b| present.contains(&b.id) || copied.contains(&b.id))
        .filter(|b| b.meta.get("system_identifier") == m.meta.get("system_identifier"))
        .max_by_key(|b| b.stop_time)
    else {
        return Ok(None);
    };
    let theirs: Manifest = match to.load_manifest(&base.id) {
        // Expired in the target since it was listed: copy without a base.
        Err(StoreError::NoSuchBackup(_)) => return Ok(None),
        other => other?,
    };
    // The base maps chunks by position, so it must be the same backup, not one that only
    // shares its id: same cluster, LSNs, label and sizes.
    let same = theirs.meta == base.meta
        && theirs.size_logical == base.size_logical
        && theirs.files == base.files;
    Ok(same.then_some((base.root, theirs.root)))
}

/// Whether a gc may be running: its exclusive lease is live, or a lease cannot be read. Such
/// a gc may have listed the leases before ours, and then deletes the packs it finds
/// unreferenced at once; one that starts later counts our lease and keeps them while we run.
fn gc_running(to: &Repository) -> Result<bool> {
    Ok(lock::list(to)?.iter().any(|f| {
        !f.stale
            && f.record
                .as_ref()
                .map_or(true, |r| r.exclusive && r.command == "gc")
    }))
}

/// The target's blobs as its pack entry tables list them (except packs a gc run condemned:
/// they may go at any time), sorted by the first 8 bytes of their ids: 24 bytes a blob,
/// whatever the blob, plus 32 a pack. A match is confirmed by reading the blob.
#[derive(Default)]
struct Stored {
    packs: Vec<PackId>,
    slots: Vec<Slot>,
}

/// One blob of [`Stored`].
#[derive(Clone, Copy)]
struct Slot {
    prefix: [u8; 8],
    pack: u32,
    offset: u32,
    stored_len: u32,
    len: u32,
}

impl Stored {
    fn read(to: &Repository, condemned: &HashSet<PackId>) -> Result<Stored> {
        let mut out = Stored::default();
        for pack in to.packs()?.ids {
            if condemned.contains(&pack) {
                continue;
            }
            let index = out.packs.len() as u32;
            out.packs.push(pack);
            out.slots
                .extend(to.pack_entries(&pack)?.into_iter().map(|e| Slot {
                    prefix: prefix(&e.id),
                    pack: index,
                    offset: e.offset,
                    stored_len: e.stored_len,
                    len: e.len,
                }));
        }
        out.slots.sort_unstable_by_key(|s| s.prefix);
        out.slots.shrink_to_fit();
        Ok(out)
    }

    /// Adds blobs written since the table was read.
    fn add(&mut self, blobs: impl Iterator<Item = (BlobId, Loc, u32)>) {
        let mut index: HashMap<PackId, u32> = HashMap::new();
        for (id, loc, len) in blobs {
            let pack = *index.entry(loc.pack).or_insert_with(|| {
                self.packs.push(loc.pack);
                (self.packs.len() - 1) as u32
            });
            self.slots.push(Slot {
                prefix: prefix(&id),
                pack,
                offset: loc.offset,
                stored_len: loc.stored_len,
                len,
            });
        }
        self.slots.sort_unstable_by_key(|s| s.prefix);
    }

    /// The slots whose id starts like `id`'s.
    fn candidates(&self, id: &BlobId) -> &[Slot] {
        let p = prefix(id);
        let start = self.slots.partition_point(|s| s.prefix < p);
        let end = start + self.slots[start..].partition_point(|s| s.prefix == p);
        &self.slots[start..end]
    }

    /// Whether the target may hold `id` (a match of the prefix only).
    fn may_hold(&self, id: &BlobId) -> bool {
        !self.candidates(id).is_empty()
    }

    /// Where the target holds blob `id`, with the crc of its stored bytes: read and checked
    /// against the id, so a blob sharing only the prefix (or damaged) is not taken.
    fn find(&self, to: &Repository, id: &BlobId) -> Result<Option<(Loc, Option<u32>)>> {
        for slot in self.candidates(id) {
            let loc = Loc {
                pack: self.packs[slot.pack as usize],
                offset: slot.offset,
                stored_len: slot.stored_len,
            };
            let key = keys::pack(&loc.pack);
            let stored =
                match to
                    .backend()
                    .get_range(&key, u64::from(loc.offset), u64::from(loc.stored_len))
                {
                    Err(e) if e.is_not_found() => continue,
                    other => other?,
                };
            if to.crypto().decode_blob(&stored, slot.len, id, &key).is_ok() {
                return Ok(Some((loc, Some(crc32c::crc32c(&stored)))));
            }
        }
        Ok(None)
    }
}

fn prefix(id: &BlobId) -> [u8; 8] {
    let mut p = [0; 8];
    p.copy_from_slice(&id.0[..8]);
    p
}

/// The packs of the target that a gc run condemned without counting lease `ours`: its next
/// run may delete them whatever this copy does. (Those condemned with `ours` alive stay while
/// it lives, and are referenced once the copy publishes.)
fn condemned(to: &Repository, ours: &str) -> Result<HashSet<PackId>> {
    let mut packs = HashSet::new();
    for key in to.trash_records()? {
        let record: Condemned = serde_json::from_slice(&to.get_sealed(&key)?)
            .map_err(|e| StoreError::corrupt(&key, e.to_string()))?;
        if !record.leases.iter().any(|l| l == ours) {
            packs.extend(record.packs);
        }
    }
    Ok(packs)
}

/// Rewrites trees, lists and chunks of the source into the target.
struct Copier<'a> {
    from: &'a Repository,
    to: &'a Repository,
    /// Whether both repositories compute the same id for the same content.
    same_ids: bool,
    /// The target's blobs from before this run.
    stored: Stored,
    /// The blobs this run wrote for the backup being copied, by target id, with crcs where
    /// recorded and their plain length; moved into `stored` once it is published.
    sent: HashMap<BlobId, (Loc, Option<u32>, u32)>,
    /// Source tree and list ids of the backup being copied already mapped to the target.
    refs: HashMap<BlobId, BlobRef>,
    /// Source chunk ids of the backup being copied already mapped to the target.
    chunks: HashMap<BlobId, Chunk>,
    data: Packer<'a>,
    meta: Packer<'a>,
    written_before: u64,
    progress: &'a dyn Fn(u64),
    /// Packs of the target whose blobs were found in entry tables (perhaps referenced by no
    /// backup) and reused.
    reused: HashSet<PackId>,
    /// Bytes of files walked in the backup being copied.
    walked: u64,
    chunks_sent: u64,
    bytes_sent: u64,
}

impl<'a> Copier<'a> {
    fn new(
        from: &'a Repository,
        to: &'a Repository,
        opts: &'a CopyOptions,
        stored: Stored,
    ) -> Copier<'a> {
        let probe = b"pgsnapfs copy: do both repositories name blobs alike?";
        Copier {
            from,
            to,
            same_ids: from.crypto().id(probe) == to.crypto().id(probe),
            stored,
            sent: HashMap::new(),
            refs: HashMap::new(),
            chunks: HashMap::new(),
            data: Packer::new(to, to.config.pack_size as usize),
            meta: Packer::new(to, to.config.pack_size as usize),
            written_before: 0,
            progress: &*opts.progress,
            reused: HashSet::new(),
            walked: 0,
            chunks_sent: 0,
            bytes_sent: 0,
        }
    }

    /// A directory tree, with `base` the same directory in a backup both hold (source, target).
    fn dir(&mut self, r: &BlobRef, base: Option<(&BlobRef, &BlobRef)>) -> Result<BlobRef> {
        if let Some(done) = self.mapped(r, base) {
            return Ok(done);
        }
        let dir = self.from.load_dir(r)?;
        let bases = match base {
            Some((a, b)) => Some((self.from.load_dir(a)?, self.to.load_dir(b)?)),
            None => None,
        };
        let mut entries = Vec::with_capacity(dir.entries.len());
        for node in dir.entries {
            let twin = |n: &str| {
                bases
                    .as_ref()
                    .and_then(|(a, b)| Some((a.get(n)?, b.get(n)?)))
            };
            let kind = match &node.kind {
                NodeKind::Dir { tree } => {
                    let pair = match twin(&node.name).map(|(a, b)| (&a.kind, &b.kind)) {
                        Some((NodeKind::Dir { tree: a }, NodeKind::Dir { tree: b })) => {
                            Some((*a, *b))
                        }
                        _ => None,
                    };
                    NodeKind::Dir {
                        tree: self.dir(tree, pair.as_ref().map(|(a, b)| (a, b)))?,
                    }
                }
                NodeKind::File { size, lists } => {
                    let pair = match twin(&node.name).map(|(a, b)| (&a.kind, &b.kind)) {
                        Some((
                            NodeKind::File { lists: a, .. },
                            NodeKind::File { lists: b, .. },
                        )) if a.len() == b.len() => Some((a.clone(), b.clone())),
                        _ => None,
                    };
                    let mut out = Vec::with_capacity(lists.len());
                    for (i, list) in lists.iter().enumerate() {
                        let twin = pair
                            .as_ref()
                            .and_then(|(a, b)| Some((a.get(i)?, b.get(i)?)));
                        out.push(self.list(list, twin)?);
                    }
                    self.walked += size;
                    (self.progress)(*size);
                    NodeKind::File {
                        size: *size,
                        lists: out,
                    }
                }
                other => other.clone(),
            };
            entries.push(Node { kind, ..node });
        }
        let json = encode_dir(&Dir { entries });
        self.store(r, BlobType::Tree, &json)
    }

    /// The target's copy of a source tree or list already mapped, or the base's own.
    fn mapped(&mut self, r: &BlobRef, base: Option<(&BlobRef, &BlobRef)>) -> Option<BlobRef> {
        if let Some(done) = self.refs.get(&r.id) {
            return Some(*done);
        }
        let (_, b) = base.filter(|(a, _)| a.id == r.id)?;
        self.refs.insert(r.id, *b);
        Some(*b)
    }

    /// A chunk list; the base's lists (source, target) map its unchanged chunks.
    fn list(&mut self, r: &BlobRef, base: Option<(&BlobRef, &BlobRef)>) -> Result<BlobRef> {
        if let Some(done) = self.mapped(r, base) {
            return Ok(done);
        }
        if let Some((a, b)) = base {
            let theirs = self.from.load_chunk_list(a)?;
            let ours = self.to.load_chunk_list(b)?;
            for (x, y) in theirs.iter().zip(&ours) {
                if x.loc.is_some() && y.loc.is_some() && x.len == y.len {
                    self.chunks.entry(x.id).or_insert(*y);
                }
            }
        }
        let chunks = self.from.load_chunk_list(r)?;
        let mut out = Vec::with_capacity(chunks.len());
        // Neighbours to read are fetched together: one ranged read per run of them.
        for part in chunks.chunks(READ_BATCH) {
            let unread: Vec<Chunk> = part.iter().filter(|c| self.must_read(c)).copied().collect();
            let mut read: HashMap<BlobId, Vec<u8>> = unread
                .iter()
                .map(|c| c.id)
                .zip(self.from.read_chunks(&unread)?)
                .collect();
            for c in part {
                let data = read.remove(&c.id);
                out.push(self.chunk(c, data)?);
            }
        }
        self.store(r, BlobType::ChunkList, &encode_chunk_list(&out))
    }

    /// Whether a chunk's content must be read from the source to place it in the target.
    fn must_read(&self, c: &Chunk) -> bool {
        c.loc.is_some()
            && !self.chunks.contains_key(&c.id)
            && !(self.same_ids && (self.sent.contains_key(&c.id) || self.stored.may_hold(&c.id)))
    }

    /// One chunk in the target: mapped already, held there, or sent; `data` is its content
    /// if it was read.
    fn chunk(&mut self, c: &Chunk, data: Option<Vec<u8>>) -> Result<Chunk> {
        if c.loc.is_none() {
            return Ok(*c);
        }
        if let Some(done) = self.chunks.get(&c.id) {
            return Ok(Chunk {
                len: c.len,
                ..*done
            });
        }
        let held = match self.same_ids {
            true => self.held(&c.id)?,
            false => None,
        };
        let out = match held {
            Some(placed) => self.reuse(c.id, c.len, placed),
            None => {
                let data = match data {
                    Some(data) => data,
                    None => self.from.read_chunk(c)?,
                };
                let id = self.to.crypto().id(&data);
                match self.held(&id)? {
                    Some(placed) => self.reuse(id, c.len, placed),
                    None => self.send(id, &data)?,
                }
            }
        };
        self.chunks.insert(c.id, out);
        Ok(out)
    }

    /// Where the target holds blob `id`: written by this run, or found in a pack before it.
    fn held(&mut self, id: &BlobId) -> Result<Option<(Loc, Option<u32>)>> {
        if let Some((loc, crc, _)) = self.sent.get(id) {
            return Ok(Some((*loc, *crc)));
        }
        let found = self.stored.find(self.to, id)?;
        if let Some((loc, _)) = found {
            self.reused.insert(loc.pack);
        }
        Ok(found)
    }

    /// A chunk the target holds, with the crc its lists record.
    fn reuse(&mut self, id: BlobId, len: u32, (loc, crc): (Loc, Option<u32>)) -> Chunk {
        Chunk {
            id,
            len,
            loc: Some(loc),
            crc: crc.filter(|_| self.to.records_crcs()),
        }
    }

    /// Sends a chunk the target lacks.
    fn send(&mut self, id: BlobId, data: &[u8]) -> Result<Chunk> {
        let level = self.to.config.compression_level;
        let stored = self.to.crypto().encode_blob(&id, data, level);
        let len = data.len() as u32;
        let loc = self.data.add(id, BlobType::Data, &stored, len)?;
        let crc = self.to.records_crcs().then(|| crc32c::crc32c(&stored));
        self.sent.insert(id, (loc, crc, len));
        self.chunks_sent += 1;
        self.bytes_sent += u64::from(len);
        Ok(Chunk {
            id,
            len,
            loc: Some(loc),
            crc,
        })
    }

    /// Stores a rewritten tree or list blob for source blob `r`, unless the target holds it.
    fn store(&mut self, r: &BlobRef, kind: BlobType, data: &[u8]) -> Result<BlobRef> {
        let id = self.to.crypto().id(data);
        let out = match self.held(&id)? {
            Some((loc, _)) => BlobRef {
                id,
                loc,
                len: data.len() as u32,
            },
            None => {
                let out = self.meta.add_blob(kind, data)?;
                self.sent.insert(id, (out.loc, None, out.len));
                out
            }
        };
        self.refs.insert(r.id, out);
        Ok(out)
    }

    /// After a backup is published: what this run wrote joins the target's blobs at their 24
    /// bytes each, and the maps of that backup go, so a run's memory does not grow with the
    /// backups it copies (a later backup's unchanged chunks are mapped through its base).
    fn backup_done(&mut self) {
        self.stored
            .add(self.sent.drain().map(|(id, (loc, _, len))| (id, loc, len)));
        self.refs = HashMap::new();
        self.chunks = HashMap::new();
    }

    /// Writes the open packs; returns the pack bytes written since the last flush.
    fn flush(&mut self) -> Result<u64> {
        self.data.flush()?;
        self.meta.flush()?;
        let total = self.data.bytes_written + self.meta.bytes_written;
        let since = total - self.written_before;
        self.written_before = total;
        Ok(since)
    }
}

/// The WAL a backup needs to become consistent: segments `first..=last` of its cluster, on its
/// timeline or a later one (a standby promoted while it was backed up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BackupWal {
    tli: u32,
    first: u64,
    last: u64,
}

/// The WAL ranges of `backups`, per cluster.
fn backup_wal<'m>(
    backups: impl Iterator<Item = &'m Manifest>,
) -> Result<HashMap<u64, Vec<BackupWal>>> {
    let mut out: HashMap<u64, Vec<BackupWal>> = HashMap::new();
    for m in backups {
        let meta: BackupMeta = serde_json::from_value(Value::Object(m.meta.clone()))
            .map_err(|e| StoreError::corrupt(keys::snapshot(&m.id), e.to_string()))?;
        let seg_size = meta.wal_segment_size;
        out.entry(meta.sysid()).or_default().push(BackupWal {
            tli: meta.timeline,
            first: segment_of(meta.start_lsn, seg_size),
            last: segment_of(meta.stop_lsn, seg_size),
        });
    }
    Ok(out)
}

/// Whether WAL file `name` is one `ranges` need: in a range, or a history file (recovery reads
/// them to choose its timeline).
fn wal_needed(name: &str, seg_size: u64, ranges: &[BackupWal]) -> bool {
    let (tli, segno) = match WalFile::parse(name, seg_size) {
        Some(WalFile::History { .. }) => return true,
        Some(
            WalFile::Segment { tli, segno }
            | WalFile::Partial { tli, segno }
            | WalFile::Backup { tli, segno, .. },
        ) => (tli, segno),
        None => return false,
    };
    ranges
        .iter()
        .any(|r| tli >= r.tli && (r.first..=r.last).contains(&segno))
}

/// Copies the archived WAL files, summaries and drop markers the target lacks: all of every
/// cluster, or with `needed` only those of its clusters and ranges. Summaries first, as
/// `wal-push` writes them, so a segment in the target always has its summary. The WAL index
/// is not copied: the target's `check` writes its own, and readers list the archive until
/// then.
fn copy_wal(
    from: &Repository,
    to: &Repository,
    needed: Option<&HashMap<u64, Vec<BackupWal>>>,
    summary: &mut CopySummary,
) -> Result<()> {
    for system in archive::systems(from)? {
        let seg_size = archive::segment_size(&system);
        let wanted: Box<dyn Fn(&str) -> bool> = match needed {
            None => Box::new(|_| true),
            Some(needed) => match needed.get(&system.sysid()) {
                Some(ranges) => Box::new(move |name| wal_needed(name, seg_size, ranges)),
                None => continue,
            },
        };
        copy_system_wal(from, to, &system, &*wanted, summary)?;
    }
    Ok(())
}

fn copy_system_wal(
    from: &Repository,
    to: &Repository,
    system: &System,
    wanted: &dyn Fn(&str) -> bool,
    summary: &mut CopySummary,
) -> Result<()> {
    archive::register_system(to, system)?;
    let sysid = system.sysid();
    // Drop markers too: a gap the source knows of is one the target has.
    for prefix in [
        keys::wal_summaries(sysid),
        keys::wal_system(sysid),
        keys::wal_dropped_system(sysid),
    ] {
        let have: BTreeSet<String> = to.backend().list(&prefix)?.into_iter().collect();
        for key in from.backend().list(&prefix)? {
            let name = key.rsplit('/').next().unwrap_or(&key);
            if !wanted(name) {
                continue;
            }
            if have.contains(&key) {
                summary.wal_files_present += 1;
                continue;
            }
            let payload = from.get_sealed(&key)?;
            match to.put_sealed(&key, &payload) {
                Err(StoreError::Backend(BackendError::Conflict { .. })) => {
                    return Err(Error::WalConflict {
                        name: name.to_string(),
                        key,
                    })
                }
                other => other?,
            }
            summary.wal_files_sent += 1;
            summary.wal_bytes_sent += payload.len() as u64;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn at(s: i64) -> chrono::DateTime<Utc> {
        Utc.timestamp_opt(s, 0).unwrap()
    }

    use crate::store::backend::memory::MemoryBackend;
    use crate::store::ingest::{Ingest, Visit};
    use std::sync::Arc;

    const CHUNK: usize = 8192;

    /// A backup of `dir` into `repo` as manifest `id`, stopped at second `at`.
    fn backup(repo: &Repository, dir: &std::path::Path, id: &str, secs: i64) {
        let mut ingest = Ingest::new(repo, 2, Box::new(|_| {}));
        let nodes = ingest.read_dir(dir, "", None, &|_, _| Visit::Keep).unwrap();
        let root = ingest.write_dir(nodes, None).unwrap();
        let (stats, stored) = ingest.finish().unwrap();
        let meta = serde_json::json!({
            "system_identifier": "7", "pg_major": 15, "pg_version": "15", "timeline": 1,
            "start_lsn": "0/2000028", "stop_lsn": format!("0/{:X}", 0x2000100 + secs),
            "wal_segment_size": 16777216, "backup_label": id, "tablespaces": [],
        });
        let snap: Manifest = Snapshot {
            format: 1,
            id: id.into(),
            meta: meta.as_object().unwrap().clone(),
            start_time: at(secs),
            stop_time: at(secs),
            label: String::new(),
            size_logical: stats.bytes,
            size_stored_new: stored,
            files: stats.files,
            chunk_size: CHUNK as u32,
            parent: None,
            root,
            root_mode: 0o700,
            root_mtime: 0,
            requests: None,
        };
        repo.save_manifest(&snap).unwrap();
    }

    /// `base/rel` of backup `id`.
    fn rel(repo: &Repository, id: &str) -> Vec<u8> {
        let snap: Manifest = repo.load_manifest(id).unwrap();
        let root = repo.load_dir(&snap.root).unwrap();
        let NodeKind::Dir { tree } = &root.get("base").unwrap().kind else {
            panic!("base is not a directory")
        };
        match &repo.load_dir(tree).unwrap().get("rel").unwrap().kind {
            NodeKind::File { lists, .. } => repo.read_file(lists).unwrap(),
            other => panic!("rel is {other:?}"),
        }
    }

    fn all() -> CopyOptions {
        CopyOptions {
            backups: Selection::All,
            wal: false,
            total: Box::new(|_| {}),
            progress: Box::new(|_| {}),
        }
    }

    #[test]
    fn another_backup_under_the_same_id_is_refused() {
        let from = Repository::init(Arc::new(MemoryBackend::default()), CHUNK as u32, 3).unwrap();
        let to = Repository::init(Arc::new(MemoryBackend::default()), CHUNK as u32, 3).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), vec![1u8; CHUNK]).unwrap();
        backup(&from, dir.path(), "b1", 1);
        std::fs::write(dir.path().join("a"), vec![2u8; 2 * CHUNK]).unwrap();
        backup(&to, dir.path(), "b1", 1);
        assert!(matches!(run(&from, &to, all()), Err(Error::BadInput(_))));
        // The same backup, copied before, is present.
        let other = Repository::init(Arc::new(MemoryBackend::default()), CHUNK as u32, 3).unwrap();
        run(&from, &other, all()).unwrap();
        assert_eq!(run(&from, &other, all()).unwrap().backups_present, ["b1"]);
    }

    /// Two backups in one run whose files share chunks but not a base: the second's chunks
    /// are found among what the run wrote for the first (after its maps were dropped), not
    /// sent again.
    #[test]
    fn one_run_sends_a_chunk_once_across_backups() {
        let from = Repository::init(Arc::new(MemoryBackend::default()), CHUNK as u32, 3).unwrap();
        let to = Repository::init(Arc::new(MemoryBackend::default()), CHUNK as u32, 3).unwrap();
        let data: Vec<u8> = (0..10 * CHUNK).map(|i| (i * 13 % 251) as u8).collect();
        let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        std::fs::create_dir(one.path().join("base")).unwrap();
        std::fs::write(one.path().join("base/rel"), &data).unwrap();
        std::fs::create_dir(two.path().join("other")).unwrap();
        std::fs::write(two.path().join("other/copy"), &data).unwrap();
        backup(&from, one.path(), "b1", 1);
        backup(&from, two.path(), "b2", 2);
        let copied = run(&from, &to, all()).unwrap();
        assert_eq!(copied.backups_copied, vec!["b1", "b2"]);
        assert_eq!(copied.chunks_sent, 10);
        assert_eq!(rel(&to, "b1"), data);
    }

    #[test]
    fn second_copy_sends_only_the_changed_chunks() {
        let from = Repository::init(Arc::new(MemoryBackend::default()), CHUNK as u32, 3).unwrap();
        let to = Repository::init(Arc::new(MemoryBackend::default()), CHUNK as u32, 3).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut data: Vec<u8> = (0..40 * CHUNK).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::create_dir(dir.path().join("base")).unwrap();
        std::fs::write(dir.path().join("base/rel"), &data).unwrap();
        std::fs::write(dir.path().join("zeros"), vec![0u8; 3 * CHUNK]).unwrap();
        backup(&from, dir.path(), "b1", 1);
        let first = run(&from, &to, all()).unwrap();
        assert_eq!(first.backups_copied, vec!["b1"]);
        assert_eq!(first.chunks_sent, 40);
        assert_eq!(first.bytes_skipped, 3 * CHUNK as u64, "zeros are not sent");

        data[5 * CHUNK] ^= 1;
        data[30 * CHUNK] ^= 1;
        std::fs::write(dir.path().join("base/rel"), &data).unwrap();
        backup(&from, dir.path(), "b2", 2);
        let second = run(&from, &to, all()).unwrap();
        assert_eq!(second.backups_copied, vec!["b2"]);
        assert_eq!(second.backups_present, vec!["b1"]);
        assert_eq!(second.chunks_sent, 2);
        assert_eq!(rel(&to, "b2"), data);
        assert_ne!(rel(&to, "b1"), data);

        // A target backup that only shares the base's id maps nothing: all is read again.
        let other = Repository::init(Arc::new(MemoryBackend::default()), CHUNK as u32, 3).unwrap();
        run(
            &from,
            &other,
            CopyOptions {
                backups: Selection::One("b1".into()),
                ..all()
            },
        )
        .unwrap();
        let mut forged: Manifest = other.load_manifest("b1").unwrap();
        forged.meta.insert("stop_lsn".into(), "elsewhere".into());
        other.delete_snapshot("b1").unwrap();
        other.save_manifest(&forged).unwrap();
        let root = common_base(
            &other,
            &from.load_manifest("b2").unwrap(),
            &from.manifests_all_or_error().unwrap(),
            &["b1".to_string()].into(),
            &[],
        )
        .unwrap();
        assert!(root.is_none());
    }

    #[test]
    fn condemned_packs_are_not_reused() {
        let from = Repository::init(Arc::new(MemoryBackend::default()), CHUNK as u32, 3).unwrap();
        let to = Repository::init(Arc::new(MemoryBackend::default()), CHUNK as u32, 3).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..10 * CHUNK).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::create_dir(dir.path().join("base")).unwrap();
        std::fs::write(dir.path().join("base/rel"), &data).unwrap();
        backup(&from, dir.path(), "b1", 1);
        assert_eq!(run(&from, &to, all()).unwrap().chunks_sent, 10);
        // As after a killed copy: packs no backup references, then condemned by a gc.
        to.delete_snapshot("b1").unwrap();
        let record = Condemned {
            run: "r1".into(),
            created: at(2),
            leases: vec![],
            backups: vec![],
            packs: to.packs().unwrap().ids,
        };
        let json = serde_json::to_vec(&record).unwrap();
        to.put_sealed(&keys::trash("r1"), &json).unwrap();
        assert_eq!(run(&from, &to, all()).unwrap().chunks_sent, 10);
        assert_eq!(rel(&to, "b1"), data);
    }

    #[test]
    fn packs_of_a_killed_copy_are_not_reused_while_a_gc_runs() {
        let from = Repository::init(Arc::new(MemoryBackend::default()), CHUNK as u32, 3).unwrap();
        let to = Repository::init(Arc::new(MemoryBackend::default()), CHUNK as u32, 3).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..10 * CHUNK).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::create_dir(dir.path().join("base")).unwrap();
        std::fs::write(dir.path().join("base/rel"), &data).unwrap();
        backup(&from, dir.path(), "b1", 1);
        run(&from, &to, all()).unwrap();
        // As after a killed copy: packs no backup references.
        to.delete_snapshot("b1").unwrap();
        let orphans = to.packs().unwrap().ids;
        // A gc surveyed before the copy's lease: it saw them unreferenced and nobody else
        // alive, so it deletes them at once, whatever the copy does meanwhile.
        let gc = Lease::exclusive(&to, "gc").unwrap();
        let copied = run(&from, &to, all()).unwrap();
        for p in &orphans {
            to.delete_pack(p).unwrap();
        }
        drop(gc);
        assert_eq!(copied.chunks_sent, 10);
        assert_eq!(rel(&to, "b1"), data);
        // With no gc running, a rerun's packs are found again.
        to.delete_snapshot("b1").unwrap();
        assert_eq!(run(&from, &to, all()).unwrap().chunks_sent, 0);
        assert_eq!(rel(&to, "b1"), data);
    }

    #[test]
    fn stored_blobs_are_confirmed_beyond_their_prefix() {
        let to = Repository::init(Arc::new(MemoryBackend::default()), CHUNK as u32, 3).unwrap();
        let mut packer = Packer::new(&to, 1 << 20);
        let held = packer.add_blob(BlobType::Tree, b"held").unwrap();
        packer.flush().unwrap();
        let stored = Stored::read(&to, &HashSet::new()).unwrap();
        assert_eq!(stored.find(&to, &held.id).unwrap().unwrap().0, held.loc);
        // Another id with the same first 8 bytes: a candidate, but not the blob.
        let mut twin = held.id;
        twin.0[31] ^= 1;
        assert!(stored.may_hold(&twin));
        assert!(stored.find(&to, &twin).unwrap().is_none());
        assert!(!stored.may_hold(&to.crypto().id(b"other")));
    }

    #[test]
    fn a_backup_needs_its_segments_on_its_timeline_and_later_and_every_history() {
        let seg = 16 << 20;
        let ranges = [BackupWal {
            tli: 2,
            first: 3,
            last: 5,
        }];
        let needed = |name: &str| wal_needed(name, seg, &ranges);
        assert!(needed("000000020000000000000003"));
        assert!(needed("000000020000000000000005"));
        assert!(needed("000000030000000000000004.partial"));
        assert!(needed("000000020000000000000003.00000028.backup"));
        assert!(needed("00000001.history"));
        assert!(!needed("000000020000000000000006"));
        assert!(!needed("000000020000000000000002"));
        assert!(!needed("000000010000000000000004"));
        assert!(!needed("not-wal"));
    }

    #[test]
    fn plan_sends_what_the_target_lacks_oldest_first() {
        let source = vec![
            ("b2".into(), at(2)),
            ("b1".into(), at(1)),
            ("b3".into(), at(3)),
        ];
        let target: HashSet<String> = ["b2".to_string()].into();
        let (todo, present) = plan(&source, &target, &Selection::All).unwrap();
        assert_eq!(todo, vec!["b1", "b3"]);
        assert_eq!(present, vec!["b2"]);
        let (todo, _) = plan(&source, &target, &Selection::One("latest".into())).unwrap();
        assert_eq!(todo, vec!["b3"]);
        let (todo, present) = plan(&source, &target, &Selection::One("b2".into())).unwrap();
        assert!(todo.is_empty());
        assert_eq!(present, vec!["b2"]);
        assert!(matches!(
            plan(&source, &target, &Selection::One("b9".into())),
            Err(Error::NotFound(_))
        ));
        assert!(matches!(
            plan(&[], &target, &Selection::One("latest".into())),
            Err(Error::NotFound(_))
        ));
    }
}
