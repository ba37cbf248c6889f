//! gc: deletes packs no backup uses, and repacks packs that are mostly garbage.
//!
//! Deletion is two-phase, so gc never waits for, nor breaks, commands running beside it. A
//! run condemns the packs nothing references in a `trash/<run>` record, together with the
//! leases alive then and the backups it saw; a pack is deleted only when every one of those
//! leases is gone and the pack is still unreferenced (immediately, if no other lease was
//! alive). docs/repository-format.md ("Deleting") gives the argument.
//!
//! Memory: the referenced set holds, per pack, its id and byte counts (about 100 bytes), and
//! per referenced blob 8 bytes (pack index and offset) in a hash set, about 16 bytes with the
//! table's overhead; tree and chunk-list blobs add their 32-byte id once (one per 1024
//! chunks). Repacking adds about 60 bytes per blob moved and holds one pack in memory.

use crate::error::{Error, Result};
use crate::lock::{self, Lease};
use crate::store::crypto::Crypto;
use crate::store::pack::{self, BlobType, Entry};
use crate::store::snapshot::{self, Snapshot};
use crate::store::tree::{decode_chunk_list, encode_chunk_list, BlobRef, Dir, Loc, NodeKind};
use crate::store::{keys, random_id, Id, Packer, Repository, StoreError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap, HashSet};

/// `trash/<run>`: packs one gc run condemned, and what was alive then.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Condemned {
    pub run: String,
    pub created: DateTime<Utc>,
    /// Ids of the leases alive (other than gc's own) when the packs were condemned.
    pub leases: Vec<String>,
    /// The backups that existed then; expire voids the record if it deletes one not listed.
    pub backups: Vec<String>,
    pub packs: Vec<Id>,
}

/// Repack passes per run: the first moves data, the next the metadata packs it left mostly
/// dead; a third is rarely needed.
const REPACK_ROUNDS: usize = 3;

/// Every trash record.
pub fn trash(repo: &Repository) -> Result<Vec<Condemned>> {
    let mut out = Vec::new();
    for key in repo.backend().list(keys::TRASH)? {
        let payload = repo.get_sealed(&key)?;
        out.push(
            serde_json::from_slice(&payload)
                .map_err(|e| StoreError::corrupt(&key, e.to_string()))?,
        );
    }
    Ok(out)
}

/// Deletes the trash records that did not see one of `deleted`: a backup created after a
/// record may use its packs, and once deleted nothing would tell gc that a reader of that
/// backup still needs them. The packs are condemned again, with fresh leases, by the next gc.
pub fn void_trash(repo: &Repository, deleted: &[String]) -> Result<usize> {
    let mut voided = 0;
    for record in trash(repo)? {
        let saw: HashSet<&String> = record.backups.iter().collect();
        if deleted.iter().any(|d| !saw.contains(d)) {
            repo.backend().delete(&keys::trash(&record.run))?;
            voided += 1;
        }
    }
    Ok(voided)
}

#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Repack a pack when at least this fraction of its bytes is garbage (0 < f ≤ 1).
    pub repack_threshold: f64,
    pub dry_run: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct GcReport {
    pub dry_run: bool,
    pub packs_before: u64,
    pub bytes_before: u64,
    /// Packs deleted by this run, and their bytes.
    pub deleted_packs: u64,
    pub freed_bytes: u64,
    /// Packs condemned and left for a later run, because other commands were running.
    pub condemned_packs: u64,
    pub condemned_bytes: u64,
    /// Packs whose live blobs were copied to new packs, and what was written.
    pub repacked_packs: u64,
    pub repacked_bytes: u64,
    pub written_bytes: u64,
    /// Backups whose manifests now point at the repacked blobs.
    pub rewritten_backups: Vec<String>,
    /// Leases that keep condemned packs from being deleted yet.
    pub waiting_for: Vec<String>,
}

/// Which blobs the current backups use.
#[derive(Default)]
struct Refs {
    index: HashMap<Id, u32>,
    /// Live stored bytes (blob and table entry) per pack index.
    live: Vec<u64>,
    blobs: HashSet<(u32, u32)>,
    walked: HashSet<Id>,
}

impl Refs {
    fn mark(&mut self, loc: &Loc) {
        let next = self.index.len() as u32;
        let i = *self.index.entry(loc.pack).or_insert(next);
        if i == next {
            self.live.push(0);
        }
        if self.blobs.insert((i, loc.offset)) {
            self.live[i as usize] += loc.stored_len as u64 + pack::ENTRY_LEN as u64;
        }
    }

    fn uses(&self, pack: &Id) -> bool {
        self.index.contains_key(pack)
    }

    fn live_bytes(&self, pack: &Id) -> u64 {
        self.index.get(pack).map_or(0, |i| self.live[*i as usize])
    }

    fn is_live(&self, pack: &Id, offset: u32) -> bool {
        self.index
            .get(pack)
            .is_some_and(|i| self.blobs.contains(&(*i, offset)))
    }

    fn walk_dir(&mut self, repo: &Repository, r: &BlobRef) -> Result<()> {
        self.mark(&r.loc);
        if !self.walked.insert(r.id) {
            return Ok(());
        }
        for node in repo.load_dir(r)?.entries {
            match node.kind {
                NodeKind::Dir { tree } => self.walk_dir(repo, &tree)?,
                NodeKind::File { lists, .. } => {
                    for l in lists {
                        self.mark(&l.loc);
                        if self.walked.insert(l.id) {
                            for c in repo.load_chunk_list(&l)? {
                                if let Some(loc) = c.loc {
                                    self.mark(&loc);
                                }
                            }
                        }
                    }
                }
                NodeKind::Symlink { .. } => {}
            }
        }
        Ok(())
    }
}

/// Every backup, refusing to go on if one cannot be read: gc could not tell what it uses.
fn load_backups(repo: &Repository) -> Result<Vec<Snapshot>> {
    repo.snapshot_ids()?
        .iter()
        .map(|id| {
            repo.load_snapshot(id).map_err(|e| {
                Error::Failed(format!(
                    "cannot read backup {id} ({e}); gc cannot tell which packs it uses and \
                     stops without deleting anything. Remove or repair that backup first"
                ))
            })
        })
        .collect()
}

fn pack_id(key: &str) -> Option<Id> {
    Id::from_hex(key.rsplit('/').next()?)
}

/// Runs gc. `lease` is gc's exclusive lease (none for a dry run, which writes nothing).
pub fn run(repo: &Repository, opts: &GcOptions, lease: Option<&Lease>) -> Result<GcReport> {
    let own = lease.map(|l| l.id());
    let held = || lease.map_or(Ok(()), Lease::ensure_held);
    let mut report = GcReport {
        dry_run: opts.dry_run,
        ..GcReport::default()
    };
    // The order of these three listings is what makes condemning safe: packs first, so a
    // pack written later is never condemned; then leases, so any command that starts after
    // (and so is not recorded) reads backups no earlier than the walk below.
    let mut sizes: HashMap<Id, u64> = HashMap::new();
    for key in repo.backend().list(keys::PACKS)? {
        if let Some(id) = pack_id(&key) {
            sizes.insert(id, repo.backend().size(&key)?);
        }
    }
    report.packs_before = sizes.len() as u64;
    report.bytes_before = sizes.values().sum();
    // The leases of everyone else.
    let others = || -> Result<BTreeSet<String>> {
        let mut ids: BTreeSet<String> = lock::live_ids(repo)?.into_iter().collect();
        ids.remove(own.as_deref().unwrap_or_default());
        Ok(ids)
    };
    let mut alive = others()?;
    let mut backups = load_backups(repo)?;
    let mut refs = Refs::default();
    for b in &backups {
        refs.walk_dir(repo, &b.root)?;
    }

    // Phase 2 of earlier runs: delete what they condemned once nobody alive then remains.
    // Packs still waiting are condemned again below, with the leases alive now.
    let mut deleted: HashSet<Id> = HashSet::new();
    for record in trash(repo)? {
        let waiting: Vec<&String> = record
            .leases
            .iter()
            .filter(|l| alive.contains(*l))
            .collect();
        for p in &record.packs {
            if !waiting.is_empty() || refs.uses(p) || !sizes.contains_key(p) || deleted.contains(p)
            {
                continue;
            }
            if !opts.dry_run {
                held()?;
                delete_pack(repo, p)?;
            }
            deleted.insert(*p);
            report.deleted_packs += 1;
            report.freed_bytes += sizes.get(p).copied().unwrap_or(0);
        }
        if !opts.dry_run {
            repo.backend().delete(&keys::trash(&record.run))?;
        }
    }

    // Repack: live blobs of mostly-dead packs move to new packs, and the backups using them
    // are rewritten to point there; the old packs are then unreferenced. Rewriting supersedes
    // trees and chunk lists, which live in packs of their own: those packs may now be mostly
    // dead in turn, so the selection runs again on what is live after the rewrite.
    let mut released: HashSet<Id> = HashSet::new();
    for _ in 0..REPACK_ROUNDS {
        let mut mostly_dead: Vec<Id> = sizes
            .iter()
            .filter(|(id, size)| {
                let live = refs.live_bytes(id);
                !released.contains(*id)
                    && !deleted.contains(*id)
                    && live > 0
                    && (size.saturating_sub(live)) as f64 >= opts.repack_threshold * **size as f64
            })
            .map(|(id, _)| *id)
            .collect();
        if mostly_dead.is_empty() {
            break;
        }
        mostly_dead.sort();
        report.repacked_packs += mostly_dead.len() as u64;
        report.repacked_bytes += mostly_dead.iter().map(|p| sizes[p]).sum::<u64>();
        if opts.dry_run {
            released.extend(mostly_dead);
            break;
        }
        let done = repack(repo, &backups, &refs, &mostly_dead, &held)?;
        report.written_bytes += done.written;
        for id in done.rewritten {
            if !report.rewritten_backups.contains(&id) {
                report.rewritten_backups.push(id);
            }
        }
        released.extend(done.emptied);
        released.extend(mostly_dead);
        backups = load_backups(repo)?;
        refs = Refs::default();
        for b in &backups {
            refs.walk_dir(repo, &b.root)?;
        }
    }

    // Phase 1: condemn what is unreferenced now.
    let mut packs: Vec<Id> = sizes
        .keys()
        .filter(|p| !deleted.contains(p) && (!refs.uses(p) || released.contains(p)))
        .copied()
        .collect();
    packs.sort();
    if packs.is_empty() {
        return Ok(report);
    }
    let bytes: u64 = packs.iter().map(|p| sizes[p]).sum();
    if !released.is_empty() && !opts.dry_run {
        // Readers of the manifests as they were before the rewrite hold leases listed now.
        alive.extend(others()?);
    }
    if alive.is_empty() {
        // Nobody else was running: nothing can come to reference these packs.
        if !opts.dry_run {
            let record = condemn(repo, &backups, &alive, &packs)?;
            for p in &packs {
                held()?;
                delete_pack(repo, p)?;
            }
            repo.backend().delete(&keys::trash(&record))?;
        }
        report.deleted_packs += packs.len() as u64;
        report.freed_bytes += bytes;
    } else {
        if !opts.dry_run {
            condemn(repo, &backups, &alive, &packs)?;
        }
        report.condemned_packs = packs.len() as u64;
        report.condemned_bytes = bytes;
        report.waiting_for = alive.into_iter().collect();
    }
    Ok(report)
}

fn delete_pack(repo: &Repository, p: &Id) -> Result<()> {
    match repo.backend().delete(&keys::pack(p)) {
        Err(e) if !e.is_not_found() => Err(e.into()),
        _ => Ok(()),
    }
}

/// Writes the trash record of this run; returns its run id.
fn condemn(
    repo: &Repository,
    backups: &[Snapshot],
    alive: &BTreeSet<String>,
    packs: &[Id],
) -> Result<String> {
    let now = Utc::now();
    let run = format!("{}-{}", snapshot::id_for(now), &random_id().to_hex()[..8]);
    let record = Condemned {
        run: run.clone(),
        created: now,
        leases: alive.iter().cloned().collect(),
        backups: backups.iter().map(|b| b.id.clone()).collect(),
        packs: packs.to_vec(),
    };
    repo.put_sealed(
        &keys::trash(&run),
        &serde_json::to_vec_pretty(&record).expect("trash record serializes"),
    )?;
    Ok(run)
}

struct Repacked {
    written: u64,
    rewritten: Vec<String>,
    /// Packs that held nothing but trees and lists now replaced.
    emptied: Vec<Id>,
}

/// Rewrites trees and chunk lists to point at moved blobs, memoised so a subtree shared by
/// many backups is rewritten once.
struct Rewriter<'a> {
    repo: &'a Repository,
    refs: &'a Refs,
    repacked: HashSet<Id>,
    moved: HashMap<(u32, u32), Loc>,
    done: HashMap<(Id, Loc), BlobRef>,
    /// Bytes per pack of the trees and lists replaced by rewritten copies.
    superseded: HashMap<Id, u64>,
    packer: Packer<'a>,
}

impl Rewriter<'_> {
    fn moved(&self, loc: &Loc) -> Option<Loc> {
        let i = self.refs.index.get(&loc.pack)?;
        self.moved.get(&(*i, loc.offset)).copied()
    }

    /// Stores `data` anew if it changed or its pack is going away; else keeps `r`.
    fn store(
        &mut self,
        r: &BlobRef,
        kind: BlobType,
        data: Option<Vec<u8>>,
        old: Vec<u8>,
    ) -> Result<BlobRef> {
        let new = match data {
            Some(new) => self.packer.add_blob(kind, &new)?,
            None if self.repacked.contains(&r.loc.pack) => self.packer.add_blob(kind, &old)?,
            None => return Ok(*r),
        };
        *self.superseded.entry(r.loc.pack).or_default() +=
            r.loc.stored_len as u64 + pack::ENTRY_LEN as u64;
        Ok(new)
    }

    fn dir(&mut self, r: &BlobRef) -> Result<BlobRef> {
        if let Some(done) = self.done.get(&(r.id, r.loc)) {
            return Ok(*done);
        }
        let old = self.repo.read_blob(&r.id, &r.loc, r.len)?;
        let mut dir: Dir = serde_json::from_slice(&old)
            .map_err(|e| StoreError::corrupt(format!("tree {}", r.id), e.to_string()))?;
        let mut changed = false;
        for node in &mut dir.entries {
            match &mut node.kind {
                NodeKind::Dir { tree } => {
                    let new = self.dir(tree)?;
                    changed |= new != *tree;
                    *tree = new;
                }
                NodeKind::File { lists, .. } => {
                    for l in lists {
                        let new = self.list(l)?;
                        changed |= new != *l;
                        *l = new;
                    }
                }
                NodeKind::Symlink { .. } => {}
            }
        }
        let data = changed.then(|| serde_json::to_vec(&dir).expect("tree serializes"));
        let new = self.store(r, BlobType::Tree, data, old)?;
        self.done.insert((r.id, r.loc), new);
        Ok(new)
    }

    fn list(&mut self, r: &BlobRef) -> Result<BlobRef> {
        if let Some(done) = self.done.get(&(r.id, r.loc)) {
            return Ok(*done);
        }
        let old = self.repo.read_blob(&r.id, &r.loc, r.len)?;
        let mut chunks = decode_chunk_list(&old, &format!("chunk list {}", r.id))?;
        let mut changed = false;
        for c in &mut chunks {
            if let Some(new) = c.loc.as_ref().and_then(|l| self.moved(l)) {
                c.loc = Some(new);
                changed = true;
            }
        }
        let data = changed.then(|| encode_chunk_list(&chunks));
        let new = self.store(r, BlobType::ChunkList, data, old)?;
        self.done.insert((r.id, r.loc), new);
        Ok(new)
    }
}

/// Copies the live data blobs of `packs` into new packs, rewrites the trees and lists that
/// point at them, and then replaces the manifests of the backups that changed. New packs are
/// durable before any manifest names them; a crash leaves them as garbage for the next run.
fn repack(
    repo: &Repository,
    backups: &[Snapshot],
    refs: &Refs,
    packs: &[Id],
    held: &dyn Fn() -> Result<()>,
) -> Result<Repacked> {
    let mut w = Rewriter {
        repo,
        refs,
        repacked: packs.iter().copied().collect(),
        moved: HashMap::new(),
        done: HashMap::new(),
        superseded: HashMap::new(),
        packer: Packer::new(repo, repo.config.pack_size as usize),
    };
    for p in packs {
        let key = keys::pack(p);
        let bytes = repo.backend().get(&key)?;
        for e in entries(repo.crypto(), &bytes, &key)? {
            // Trees and lists are rewritten (or copied) as the walk below meets them.
            if e.kind != BlobType::Data || !refs.is_live(p, e.offset) {
                continue;
            }
            let stored = &bytes[e.offset as usize..(e.offset + e.stored_len) as usize];
            repo.crypto().decode_blob(stored, e.len, &e.id, &key)?;
            let loc = w.packer.add(e.id, BlobType::Data, stored, e.len)?;
            w.moved.insert((refs.index[p], e.offset), loc);
        }
    }
    let mut changed = Vec::new();
    for b in backups {
        let root = w.dir(&b.root)?;
        if root != b.root {
            changed.push(Snapshot { root, ..b.clone() });
        }
    }
    w.packer.flush()?;
    for s in &changed {
        held()?;
        let json = serde_json::to_vec_pretty(s).expect("snapshot serializes");
        repo.replace_sealed(&keys::snapshot(&s.id), &json)?;
        tracing::info!(backup = %s.id, "manifest now points at repacked blobs");
    }
    Ok(Repacked {
        written: w.packer.bytes_written,
        rewritten: changed.into_iter().map(|s| s.id).collect(),
        emptied: w
            .superseded
            .iter()
            .filter(|(p, bytes)| refs.live_bytes(p) == **bytes)
            .map(|(p, _)| *p)
            .collect(),
    })
}

/// A whole pack's entry table.
fn entries(crypto: &Crypto, bytes: &[u8], key: &str) -> Result<Vec<Entry>> {
    let len = bytes.len();
    if len < pack::MAGIC.len() + pack::TAIL_LEN {
        return Err(StoreError::corrupt(key, "pack too short").into());
    }
    let n = pack::parse_tail(&bytes[len - pack::TAIL_LEN..], key)?;
    let start = pack::table_start(len as u64, n, crypto.table_overhead(), key)? as usize;
    let table = crypto.open_table(key, &bytes[start..len - pack::TAIL_LEN])?;
    Ok(pack::parse_entries(&table, start as u64, key)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::backend::memory::MemoryBackend;
    use crate::store::tree::{Chunk, Node};
    use crate::store::Backend;
    use std::sync::Arc;

    /// A backup of one file whose chunks are `data`, each chunk its own blob.
    fn backup(repo: &Repository, id: &str, packer: &mut Packer, data: &[&[u8]]) -> Snapshot {
        let chunks: Vec<Chunk> = data
            .iter()
            .map(|d| {
                let r = packer.add_blob(BlobType::Data, d).unwrap();
                Chunk {
                    id: r.id,
                    len: r.len,
                    loc: Some(r.loc),
                }
            })
            .collect();
        let list = packer
            .add_blob(BlobType::ChunkList, &encode_chunk_list(&chunks))
            .unwrap();
        let dir = Dir {
            entries: vec![Node {
                name: "f".into(),
                mode: 0o600,
                mtime: 0,
                kind: NodeKind::File {
                    size: data.iter().map(|d| d.len() as u64).sum(),
                    lists: vec![list],
                },
            }],
        };
        let root = packer
            .add_blob(BlobType::Tree, &serde_json::to_vec(&dir).unwrap())
            .unwrap();
        packer.flush().unwrap();
        let snap = snapshot::sample(id, root);
        repo.save_snapshot(&snap).unwrap();
        snap
    }

    fn file(repo: &Repository, id: &str) -> Vec<u8> {
        let snap = repo.load_snapshot(id).unwrap();
        let dir = repo.load_dir(&snap.root).unwrap();
        match &dir.entries[0].kind {
            NodeKind::File { lists, .. } => repo.read_file(lists).unwrap(),
            _ => unreachable!(),
        }
    }

    fn setup() -> (Arc<MemoryBackend>, Repository) {
        let mem = Arc::new(MemoryBackend::default());
        let repo = Repository::init(mem.clone(), 65536, 3).unwrap();
        (mem, repo)
    }

    fn opts(threshold: f64) -> GcOptions {
        GcOptions {
            repack_threshold: threshold,
            dry_run: false,
        }
    }

    /// Incompressible bytes.
    fn noise(seed: u8, n: usize) -> Vec<u8> {
        (0u32..)
            .flat_map(|i| Id::of(&[&[seed][..], &i.to_le_bytes()].concat()).0)
            .take(n)
            .collect()
    }

    #[test]
    fn unreferenced_packs_are_deleted_when_nobody_else_runs() {
        let (mem, repo) = setup();
        let mut packer = Packer::new(&repo, 1 << 20);
        backup(&repo, "a", &mut packer, &[&noise(1, 5000)]);
        let b = noise(2, 5000);
        backup(&repo, "b", &mut packer, &[&b]);
        let before = mem.list(keys::PACKS).unwrap().len();
        mem.delete(&keys::snapshot("a")).unwrap();
        let gc = Lease::exclusive(&repo, "gc").unwrap();
        let report = run(&repo, &opts(0.5), Some(&gc)).unwrap();
        assert_eq!(report.deleted_packs, 1);
        assert!(report.freed_bytes > 5000);
        assert_eq!(mem.list(keys::PACKS).unwrap().len(), before - 1);
        assert!(mem.list(keys::TRASH).unwrap().is_empty());
        assert_eq!(file(&repo, "b"), b);
    }

    #[test]
    fn packs_condemned_while_a_lease_lives_wait_for_it() {
        let (mem, repo) = setup();
        let mut packer = Packer::new(&repo, 1 << 20);
        backup(&repo, "a", &mut packer, &[&noise(1, 5000)]);
        // A backup in progress: its pack is written, its manifest not yet.
        let running = Lease::shared(&repo, "backup").unwrap();
        let fresh = packer.add_blob(BlobType::Data, &noise(3, 4000)).unwrap();
        packer.flush().unwrap();
        let gc = Lease::exclusive(&repo, "gc").unwrap();
        let report = run(&repo, &opts(0.5), Some(&gc)).unwrap();
        assert_eq!(report.deleted_packs, 0);
        assert_eq!(report.condemned_packs, 1);
        assert_eq!(report.waiting_for, vec![running.id()]);
        assert!(mem.exists(&keys::pack(&fresh.loc.pack)).unwrap());
        // While the backup runs, later runs keep waiting.
        let report = run(&repo, &opts(0.5), Some(&gc)).unwrap();
        assert_eq!((report.deleted_packs, report.condemned_packs), (0, 1));
        // The backup finishes: its manifest references the pack, which is kept for good.
        let snap = Snapshot {
            id: "b".into(),
            ..repo.load_snapshot("a").unwrap()
        };
        repo.save_snapshot(&snap).unwrap();
        let dir = Dir {
            entries: vec![Node {
                name: "g".into(),
                mode: 0o600,
                mtime: 0,
                kind: NodeKind::File {
                    size: 4000,
                    lists: vec![packer
                        .add_blob(
                            BlobType::ChunkList,
                            &encode_chunk_list(&[Chunk {
                                id: fresh.id,
                                len: fresh.len,
                                loc: Some(fresh.loc),
                            }]),
                        )
                        .unwrap()],
                },
            }],
        };
        let root = packer
            .add_blob(BlobType::Tree, &serde_json::to_vec(&dir).unwrap())
            .unwrap();
        packer.flush().unwrap();
        repo.replace_sealed(
            &keys::snapshot("b"),
            &serde_json::to_vec(&Snapshot { root, ..snap }).unwrap(),
        )
        .unwrap();
        drop(running);
        let report = run(&repo, &opts(0.5), Some(&gc)).unwrap();
        assert_eq!(report.deleted_packs, 0, "{report:?}");
        assert!(mem.exists(&keys::pack(&fresh.loc.pack)).unwrap());
    }

    #[test]
    fn a_killed_backup_s_packs_go_once_its_lease_is_stale() {
        let (mem, repo) = setup();
        let mut packer = Packer::new(&repo, 1 << 20);
        backup(&repo, "a", &mut packer, &[&noise(1, 5000)]);
        let running = Lease::shared(&repo, "backup").unwrap();
        let fresh = packer.add_blob(BlobType::Data, &noise(3, 4000)).unwrap();
        packer.flush().unwrap();
        let gc = Lease::exclusive(&repo, "gc").unwrap();
        assert_eq!(
            run(&repo, &opts(0.5), Some(&gc)).unwrap().condemned_packs,
            1
        );
        // The backup dies without its manifest (its lease is removed as stale).
        mem.delete(&keys::lock(&running.id())).unwrap();
        std::mem::forget(running);
        let report = run(&repo, &opts(0.5), Some(&gc)).unwrap();
        assert_eq!(report.deleted_packs, 1);
        assert!(!mem.exists(&keys::pack(&fresh.loc.pack)).unwrap());
        assert!(mem.list(keys::TRASH).unwrap().is_empty());
    }

    #[test]
    fn repack_moves_live_blobs_and_rewrites_manifests() {
        let (mem, repo) = setup();
        let mut packer = Packer::new(&repo, 1 << 20);
        let keep = noise(9, 3000);
        let gone: Vec<Vec<u8>> = (0..8).map(|i| noise(i, 6000)).collect();
        let mut both: Vec<&[u8]> = gone.iter().map(Vec::as_slice).collect();
        both.push(&keep);
        // "old" uses nine chunks in one pack; "new" (sharing that pack) only the last one.
        let old = backup(&repo, "old", &mut packer, &both);
        let new_root = {
            let chunks = repo
                .file_chunks(&match &repo.load_dir(&old.root).unwrap().entries[0].kind {
                    NodeKind::File { lists, .. } => lists.clone(),
                    _ => unreachable!(),
                })
                .unwrap();
            let list = packer
                .add_blob(BlobType::ChunkList, &encode_chunk_list(&chunks[8..]))
                .unwrap();
            let dir = Dir {
                entries: vec![Node {
                    name: "f".into(),
                    mode: 0o600,
                    mtime: 0,
                    kind: NodeKind::File {
                        size: 3000,
                        lists: vec![list],
                    },
                }],
            };
            let r = packer
                .add_blob(BlobType::Tree, &serde_json::to_vec(&dir).unwrap())
                .unwrap();
            packer.flush().unwrap();
            r
        };
        repo.save_snapshot(&Snapshot {
            id: "new".into(),
            root: new_root,
            ..old.clone()
        })
        .unwrap();
        mem.delete(&keys::snapshot("old")).unwrap();
        let old_pack = old.root.loc.pack;
        let gc = Lease::exclusive(&repo, "gc").unwrap();
        let dry = run(
            &repo,
            &GcOptions {
                repack_threshold: 0.5,
                dry_run: true,
            },
            None,
        )
        .unwrap();
        assert_eq!(dry.repacked_packs, 1);
        assert!(mem.exists(&keys::pack(&old_pack)).unwrap());
        let report = run(&repo, &opts(0.5), Some(&gc)).unwrap();
        assert_eq!(report.repacked_packs, 1);
        assert_eq!(report.rewritten_backups, vec!["new".to_string()]);
        assert!(report.written_bytes < 4000, "{report:?}");
        assert!(!mem.exists(&keys::pack(&old_pack)).unwrap());
        assert_eq!(file(&repo, "new"), keep);
        // A second run finds nothing to do.
        let again = run(&repo, &opts(0.5), Some(&gc)).unwrap();
        assert_eq!((again.deleted_packs, again.repacked_packs), (0, 0));
        // Below the threshold nothing is repacked.
        assert_eq!(run(&repo, &opts(1.0), Some(&gc)).unwrap().repacked_packs, 0);
    }

    #[test]
    fn expire_of_an_unseen_backup_voids_trash() {
        let (_mem, repo) = setup();
        let mut packer = Packer::new(&repo, 1 << 20);
        backup(&repo, "a", &mut packer, &[&noise(1, 5000)]);
        let _running = Lease::shared(&repo, "mount").unwrap();
        packer.add_blob(BlobType::Data, &noise(3, 4000)).unwrap();
        packer.flush().unwrap();
        let gc = Lease::exclusive(&repo, "gc").unwrap();
        run(&repo, &opts(0.5), Some(&gc)).unwrap();
        assert_eq!(trash(&repo).unwrap().len(), 1);
        assert_eq!(void_trash(&repo, &["a".into()]).unwrap(), 0);
        assert_eq!(void_trash(&repo, &["later".into()]).unwrap(), 1);
        assert!(trash(&repo).unwrap().is_empty());
    }
}
