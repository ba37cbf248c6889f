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
//! chunks). Repacking adds about 60 bytes per blob moved and holds one pack in memory. The
//! repack plan keeps, per tree and chunk list, what it points at (about 80 bytes per
//! reference), so that a dry run can follow the rewrites a real run makes.

use crate::catalog::{keys, Backups, Snapshot};
use crate::error::{Error, Result};
use crate::lock::{self, Lease};
use crate::status::{Recorder, Run, Watched};
use crate::store::crypto::Crypto;
use crate::store::pack::{self, BlobType, Entry};
use crate::store::snapshot;
use crate::store::tree::{
    decode_chunk_list, encode_chunk_list, encode_dir, BlobRef, Dir, Loc, NodeKind,
};
use crate::store::{random_id, BlobId, PackId, Packer, Repository, StoreError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap, HashSet};

/// `trash/<run>`: packs one gc run condemned, and what was alive then.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Condemned {
    /// The gc run's id (the record's key is `trash/<run>`).
    pub run: String,
    /// When the packs were condemned.
    pub created: DateTime<Utc>,
    /// Ids of the leases alive (other than gc's own) when the packs were condemned.
    pub leases: Vec<String>,
    /// The backups that existed then; expire voids the record if it deletes one not listed.
    pub backups: Vec<String>,
    /// The condemned packs.
    pub packs: Vec<PackId>,
}

/// Repack passes per run: the first moves data, the next the metadata packs it left mostly
/// dead; a third is rarely needed.
const REPACK_ROUNDS: usize = 3;

/// Every trash record.
pub fn trash(repo: &Repository) -> Result<Vec<Condemned>> {
    let mut out = Vec::new();
    for key in repo.trash_records()? {
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
            repo.delete_trash(&record.run)?;
            voided += 1;
        }
    }
    Ok(voided)
}

/// How `gc` runs.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Repack a pack when at least this fraction of its bytes is garbage (0 < f ≤ 1).
    pub repack_threshold: f64,
    /// Report what would be done, and change nothing.
    pub dry_run: bool,
}

/// What `gc` did (or, in a dry run, would do).
#[derive(Debug, Default, Serialize)]
pub struct GcReport {
    /// Nothing was changed.
    pub dry_run: bool,
    /// Packs in the repository when the run began.
    pub packs_before: u64,
    /// Their bytes.
    pub bytes_before: u64,
    /// Packs deleted by this run, and their bytes.
    pub deleted_packs: u64,
    /// Bytes of the packs deleted.
    pub freed_bytes: u64,
    /// Packs condemned and left for a later run, because other commands were running.
    pub condemned_packs: u64,
    /// Bytes of the packs condemned.
    pub condemned_bytes: u64,
    /// Packs whose live blobs were copied to new packs, and what was written.
    pub repacked_packs: u64,
    /// Bytes of the packs repacked.
    pub repacked_bytes: u64,
    /// Bytes written to the new packs.
    pub written_bytes: u64,
    /// Backups whose manifests now point at the repacked blobs.
    pub rewritten_backups: Vec<String>,
    /// Leases that keep condemned packs from being deleted yet.
    pub waiting_for: Vec<String>,
}

/// Which blobs the current backups use.
#[derive(Default)]
struct Refs {
    index: HashMap<PackId, u32>,
    /// Live stored bytes (blob and table entry) per pack index.
    live: Vec<u64>,
    blobs: HashSet<(u32, u32)>,
    walked: HashSet<BlobId>,
    /// What each tree and chunk list points at, by content: the graph a repack plan walks.
    meta: HashMap<BlobId, Meta>,
}

/// The references of one tree or chunk list.
#[derive(Debug, Default, Clone)]
struct Meta {
    /// Sub-trees and chunk lists.
    children: Vec<(BlobId, Loc)>,
    /// The packs holding a list's chunks.
    chunk_packs: Vec<PackId>,
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

    fn uses(&self, pack: &PackId) -> bool {
        self.index.contains_key(pack)
    }

    fn live_bytes(&self, pack: &PackId) -> u64 {
        self.index.get(pack).map_or(0, |i| self.live[*i as usize])
    }

    fn is_live(&self, pack: &PackId, offset: u32) -> bool {
        self.index
            .get(pack)
            .is_some_and(|i| self.blobs.contains(&(*i, offset)))
    }

    fn walk_dir(&mut self, repo: &Repository, r: &BlobRef) -> Result<()> {
        self.mark(&r.loc);
        if !self.walked.insert(r.id) {
            return Ok(());
        }
        let mut children = Vec::new();
        for node in repo.load_dir(r)?.entries {
            match node.kind {
                NodeKind::Dir { tree } => {
                    children.push((tree.id, tree.loc));
                    self.walk_dir(repo, &tree)?
                }
                NodeKind::File { lists, .. } => {
                    for l in lists {
                        children.push((l.id, l.loc));
                        self.mark(&l.loc);
                        if self.walked.insert(l.id) {
                            let mut chunk_packs = Vec::new();
                            for c in repo.load_chunk_list(&l)? {
                                if let Some(loc) = c.loc {
                                    self.mark(&loc);
                                    if !chunk_packs.contains(&loc.pack) {
                                        chunk_packs.push(loc.pack);
                                    }
                                }
                            }
                            let meta = Meta {
                                children: Vec::new(),
                                chunk_packs,
                            };
                            self.meta.insert(l.id, meta);
                        }
                    }
                }
                NodeKind::Symlink { .. } => {}
            }
        }
        let meta = Meta {
            children,
            chunk_packs: Vec::new(),
        };
        self.meta.insert(r.id, meta);
        Ok(())
    }

    fn of(repo: &Repository, backups: &[Snapshot]) -> Result<Refs> {
        let mut refs = Refs::default();
        for b in backups {
            refs.walk_dir(repo, &b.root)?;
        }
        Ok(refs)
    }

    /// Live bytes per pack.
    fn live_map(&self) -> HashMap<PackId, u64> {
        self.index
            .iter()
            .map(|(p, i)| (*p, self.live[*i as usize]))
            .collect()
    }
}

/// What the repack rounds of a run do, worked out before anything is written: a dry run
/// reports it, and a real run carries it out.
#[derive(Debug, Default)]
struct RepackPlan {
    /// The packs each round repacks. Rewriting trees and chunk lists to point at moved
    /// blobs supersedes their old copies, which may leave the packs holding them mostly dead:
    /// the next round repacks those.
    rounds: Vec<Vec<PackId>>,
    /// The backups rewritten (indexes into the backups walked), in the order a run does it.
    rewritten: Vec<usize>,
    /// Live bytes per pack once every round is done.
    live: HashMap<PackId, u64>,
    /// About how many bytes the rounds write: the live blobs of the repacked packs, and the
    /// rewritten trees and lists.
    written: u64,
}

/// Plans the repack rounds over the backups' `roots`, given the pack `sizes`, the `live`
/// bytes in each, the metadata graph, and the packs already being deleted (`skip`).
fn plan_repack(
    sizes: &HashMap<PackId, u64>,
    mut live: HashMap<PackId, u64>,
    meta: &HashMap<BlobId, Meta>,
    roots: &[(BlobId, Loc)],
    skip: &HashSet<PackId>,
    threshold: f64,
) -> RepackPlan {
    let mut plan = RepackPlan::default();
    let mut released: HashSet<PackId> = HashSet::new();
    // Trees and lists already rewritten: they are in packs this run writes.
    let mut moved: HashSet<(BlobId, Loc)> = HashSet::new();
    for _ in 0..REPACK_ROUNDS {
        let mut round: Vec<PackId> = sizes
            .iter()
            .filter(|(id, size)| {
                let l = live.get(*id).copied().unwrap_or(0);
                !released.contains(*id)
                    && !skip.contains(*id)
                    && l > 0
                    && (size.saturating_sub(l)) as f64 >= threshold * **size as f64
            })
            .map(|(id, _)| *id)
            .collect();
        if round.is_empty() {
            break;
        }
        round.sort();
        let repacked: HashSet<PackId> = round.iter().copied().collect();
        plan.written += round
            .iter()
            .map(|p| live.get(p).copied().unwrap_or(0))
            .sum::<u64>();
        let mut sim = Simulation {
            meta,
            repacked: &repacked,
            moved: &mut moved,
            live: &mut live,
            written: 0,
            memo: HashMap::new(),
        };
        for (i, root) in roots.iter().enumerate() {
            if sim.rewrite(*root) && !plan.rewritten.contains(&i) {
                plan.rewritten.push(i);
            }
        }
        plan.written += sim.written;
        // Everything in a repacked pack moved, or was rewritten elsewhere.
        for p in &round {
            live.insert(*p, 0);
        }
        released.extend(round.iter().copied());
        plan.rounds.push(round);
    }
    plan.live = live;
    plan
}

/// One round of a repack plan: which trees and lists change, as the `Rewriter` decides it.
struct Simulation<'a> {
    meta: &'a HashMap<BlobId, Meta>,
    repacked: &'a HashSet<PackId>,
    moved: &'a mut HashSet<(BlobId, Loc)>,
    live: &'a mut HashMap<PackId, u64>,
    written: u64,
    memo: HashMap<(BlobId, Loc), bool>,
}

impl Simulation<'_> {
    /// Whether the blob at `node` is stored anew: it is in a repacked pack, or a chunk or
    /// child of it moves. Its old copy then no longer counts as live.
    fn rewrite(&mut self, node: (BlobId, Loc)) -> bool {
        if let Some(done) = self.memo.get(&node) {
            return *done;
        }
        let meta = self.meta.get(&node.0).cloned().unwrap_or_default();
        let mut changed = meta.chunk_packs.iter().any(|p| self.repacked.contains(p));
        for child in meta.children {
            // Every child is visited: each one rewritten supersedes its own old copy.
            changed |= self.rewrite(child);
        }
        let in_place = !self.moved.contains(&node);
        changed |= in_place && self.repacked.contains(&node.1.pack);
        if changed {
            let cost = node.1.stored_len as u64 + pack::ENTRY_LEN as u64;
            if in_place {
                if let Some(l) = self.live.get_mut(&node.1.pack) {
                    *l = l.saturating_sub(cost);
                }
                self.moved.insert(node);
            }
            if !(in_place && self.repacked.contains(&node.1.pack)) {
                self.written += cost;
            }
        }
        self.memo.insert(node, changed);
        changed
    }
}

/// Every backup, refusing to go on if one cannot be read: gc could not tell what it uses.
fn load_backups(repo: &Repository) -> Result<Vec<Snapshot>> {
    repo.snapshot_ids()?
        .iter()
        .map(|id| {
            repo.load_snapshot(id).map_err(|source| Error::GcBlocked {
                id: id.clone(),
                source,
            })
        })
        .collect()
}

/// What gc finds before deciding anything, read in the order that makes condemning safe:
/// packs first, so a pack written later is never condemned; then leases, so any command that
/// starts after (and so is not recorded) reads backups no earlier than the walk.
struct Survey {
    sizes: HashMap<PackId, u64>,
    /// The leases of everyone else.
    alive: BTreeSet<String>,
    backups: Vec<Snapshot>,
    refs: Refs,
    trash: Vec<Condemned>,
}

impl Survey {
    fn read(repo: &Repository, others: &dyn Fn() -> Result<BTreeSet<String>>) -> Result<Survey> {
        let mut sizes = HashMap::new();
        for id in repo.packs()?.ids {
            sizes.insert(id, repo.pack_size(&id)?);
        }
        let alive = others()?;
        let backups = load_backups(repo)?;
        let refs = Refs::of(repo, &backups)?;
        Ok(Survey {
            sizes,
            alive,
            backups,
            refs,
            trash: trash(repo)?,
        })
    }
}

/// What a run does, decided from the survey alone: a dry run reports it, and a real run
/// carries it out.
#[derive(Debug)]
struct GcPlan {
    /// Phase 2 of earlier runs, per trash record: the packs deleted now, once nobody alive
    /// then remains. Packs still waiting are condemned again, with the leases alive now.
    phase2: Vec<(String, Vec<PackId>)>,
    /// Every pack of `phase2`.
    deleted: HashSet<PackId>,
    /// Repack: live blobs of mostly-dead packs move to new packs, and the backups using them
    /// are rewritten to point there; the old packs are then unreferenced.
    repack: RepackPlan,
    /// Phase 1: the packs unreferenced once the repack is done, to condemn.
    condemned: Vec<PackId>,
}

impl GcPlan {
    fn new(s: &Survey, threshold: f64) -> GcPlan {
        let mut deleted = HashSet::new();
        let phase2 = s
            .trash
            .iter()
            .map(|record| {
                let waiting = record.leases.iter().any(|l| s.alive.contains(l));
                let packs = record
                    .packs
                    .iter()
                    .filter(|p| {
                        !waiting
                            && !s.refs.uses(p)
                            && s.sizes.contains_key(*p)
                            && deleted.insert(**p)
                    })
                    .copied()
                    .collect();
                (record.run.clone(), packs)
            })
            .collect();
        let roots: Vec<(BlobId, Loc)> = s.backups.iter().map(|b| (b.root.id, b.root.loc)).collect();
        let repack = plan_repack(
            &s.sizes,
            s.refs.live_map(),
            &s.refs.meta,
            &roots,
            &deleted,
            threshold,
        );
        let condemned = unreferenced(
            &s.sizes,
            &deleted,
            |p| repack.live.get(p).is_some_and(|l| *l > 0),
            &repack.released(),
        );
        GcPlan {
            phase2,
            deleted,
            repack,
            condemned,
        }
    }

    /// The figures a run knows before it writes: what was there, phase 2, the repack rounds.
    fn report(&self, s: &Survey) -> GcReport {
        let rounds = self.repack.rounds.iter().flatten();
        GcReport {
            packs_before: s.sizes.len() as u64,
            bytes_before: s.sizes.values().sum(),
            deleted_packs: self.deleted.len() as u64,
            freed_bytes: self.deleted.iter().map(|p| s.sizes[p]).sum(),
            repacked_packs: rounds.clone().count() as u64,
            repacked_bytes: rounds.map(|p| s.sizes[p]).sum(),
            ..GcReport::default()
        }
    }

    /// What a dry run reports: everything the plan would do if nothing changed meanwhile.
    fn dry_report(&self, s: &Survey) -> GcReport {
        let mut report = GcReport {
            dry_run: true,
            written_bytes: self.repack.written,
            rewritten_backups: self
                .repack
                .rewritten
                .iter()
                .map(|i| s.backups[*i].id.clone())
                .collect(),
            ..self.report(s)
        };
        settle(&mut report, &self.condemned, &s.sizes, &s.alive);
        report
    }
}

impl RepackPlan {
    /// The packs the rounds empty.
    fn released(&self) -> HashSet<PackId> {
        self.rounds.iter().flatten().copied().collect()
    }
}

/// The packs to condemn, sorted: those not deleted already that no backup `used`, or whose
/// blobs a repack moved out.
fn unreferenced(
    sizes: &HashMap<PackId, u64>,
    deleted: &HashSet<PackId>,
    used: impl Fn(&PackId) -> bool,
    released: &HashSet<PackId>,
) -> Vec<PackId> {
    let mut packs: Vec<PackId> = sizes
        .keys()
        .filter(|p| !deleted.contains(p) && (!used(p) || released.contains(p)))
        .copied()
        .collect();
    packs.sort();
    packs
}

/// Counts condemned `packs`: deleted at once when no other command was `alive`, otherwise
/// left waiting for those leases.
fn settle(
    report: &mut GcReport,
    packs: &[PackId],
    sizes: &HashMap<PackId, u64>,
    alive: &BTreeSet<String>,
) {
    if packs.is_empty() {
        return;
    }
    let bytes: u64 = packs.iter().map(|p| sizes[p]).sum();
    if alive.is_empty() {
        report.deleted_packs += packs.len() as u64;
        report.freed_bytes += bytes;
    } else {
        report.condemned_packs = packs.len() as u64;
        report.condemned_bytes = bytes;
        report.waiting_for = alive.iter().cloned().collect();
    }
}

/// Runs gc. `lease` is gc's exclusive lease (none for a dry run, which writes nothing).
/// A run that is not a dry run is recorded in the repository's status object (`status`).
pub fn run(repo: &Repository, opts: &GcOptions, lease: Option<&Lease>) -> Result<GcReport> {
    let started = Utc::now();
    let own = lease.map(|l| l.id());
    let others = || -> Result<BTreeSet<String>> {
        let mut ids: BTreeSet<String> = lock::live_ids(repo)?.into_iter().collect();
        ids.remove(own.as_deref().unwrap_or_default());
        Ok(ids)
    };
    let survey = Survey::read(repo, &others)?;
    let plan = GcPlan::new(&survey, opts.repack_threshold);
    if opts.dry_run {
        return Ok(plan.dry_report(&survey));
    }
    let held = || lease.map_or(Ok(()), Lease::ensure_held);
    let result = execute(repo, survey, plan, &held, &others);
    // What `metrics` shows of the repository's size, without listing it.
    let run = match &result {
        Ok(r) => Run {
            packs_bytes: Some((r.bytes_before + r.written_bytes).saturating_sub(r.freed_bytes)),
            reclaimable_bytes: Some(r.condemned_bytes),
            ..Run::ended(started, true)
        },
        Err(e) => Run::failed(started, e),
    };
    Recorder::of(repo).record(Watched::Gc, 0, &run);
    result
}

/// Carries out a plan. Backups may be published meanwhile, so after repacking, what is
/// unreferenced is decided again from the manifests as they are then.
fn execute(
    repo: &Repository,
    survey: Survey,
    plan: GcPlan,
    held: &dyn Fn() -> Result<()>,
    others: &dyn Fn() -> Result<BTreeSet<String>>,
) -> Result<GcReport> {
    let mut report = plan.report(&survey);
    for (run, packs) in &plan.phase2 {
        for p in packs {
            held()?;
            repo.delete_pack(p)?;
        }
        repo.delete_trash(run)?;
    }
    let Survey {
        sizes,
        mut alive,
        mut backups,
        mut refs,
        ..
    } = survey;
    let mut released = plan.repack.released();
    for round in &plan.repack.rounds {
        let done = repack(repo, &backups, &refs, round, held)?;
        report.written_bytes += done.written;
        for id in done.rewritten {
            if !report.rewritten_backups.contains(&id) {
                report.rewritten_backups.push(id);
            }
        }
        released.extend(done.emptied);
        backups = load_backups(repo)?;
        refs = Refs::of(repo, &backups)?;
    }
    let packs = unreferenced(&sizes, &plan.deleted, |p| refs.uses(p), &released);
    if packs.is_empty() {
        return Ok(report);
    }
    if !released.is_empty() {
        // Readers of the manifests as they were before the rewrite hold leases listed now.
        alive.extend(others()?);
    }
    let record = condemn(repo, &backups, &alive, &packs)?;
    if alive.is_empty() {
        // Nobody else was running: nothing can come to reference these packs.
        for p in &packs {
            held()?;
            repo.delete_pack(p)?;
        }
        repo.delete_trash(&record)?;
    }
    settle(&mut report, &packs, &sizes, &alive);
    Ok(report)
}

/// Writes the trash record of this run; returns its run id.
fn condemn(
    repo: &Repository,
    backups: &[Snapshot],
    alive: &BTreeSet<String>,
    packs: &[PackId],
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
    emptied: Vec<PackId>,
}

/// Rewrites trees and chunk lists to point at moved blobs, memoised so a subtree shared by
/// many backups is rewritten once.
struct Rewriter<'a> {
    repo: &'a Repository,
    refs: &'a Refs,
    repacked: HashSet<PackId>,
    moved: HashMap<(u32, u32), Loc>,
    done: HashMap<(BlobId, Loc), BlobRef>,
    /// Bytes per pack of the trees and lists replaced by rewritten copies.
    superseded: HashMap<PackId, u64>,
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
        let data = changed.then(|| encode_dir(&dir));
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
    packs: &[PackId],
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
        let bytes = repo.read_pack(p)?;
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
                    crc: None,
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
        let snap = crate::catalog::sample(id, root);
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
            .flat_map(|i| BlobId::of(&[&[seed][..], &i.to_le_bytes()].concat()).0)
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
                                crc: None,
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

    /// A backup of one file whose chunks go to `data` and whose tree and list go to `meta`,
    /// as a backup keeps them in packs of their own. Both packers are flushed by the caller.
    fn split_backup(
        repo: &Repository,
        id: &str,
        data: &mut Packer,
        meta: &mut Packer,
        bytes: &[u8],
    ) {
        let c = data.add_blob(BlobType::Data, bytes).unwrap();
        let chunk = Chunk {
            id: c.id,
            len: c.len,
            loc: Some(c.loc),
            crc: None,
        };
        let list = meta
            .add_blob(BlobType::ChunkList, &encode_chunk_list(&[chunk]))
            .unwrap();
        let dir = Dir {
            entries: vec![Node {
                name: id.into(),
                mode: 0o600,
                mtime: 0,
                kind: NodeKind::File {
                    size: bytes.len() as u64,
                    lists: vec![list],
                },
            }],
        };
        let root = meta
            .add_blob(BlobType::Tree, &serde_json::to_vec(&dir).unwrap())
            .unwrap();
        repo.save_snapshot(&crate::catalog::sample(id, root))
            .unwrap();
    }

    /// Repacking a data pack rewrites the trees and lists pointing into it, which leaves their
    /// metadata pack mostly dead: a second round repacks that one. The dry run says so, and
    /// reports exactly what the real run then does.
    #[test]
    fn dry_run_plans_the_second_round_the_real_run_does() {
        let (mem, repo) = setup();
        let (mut data, mut meta) = (Packer::new(&repo, 1 << 20), Packer::new(&repo, 1 << 20));
        // One data pack: a big chunk of "gone", small ones of e..h. One metadata pack for all.
        split_backup(&repo, "gone", &mut data, &mut meta, &noise(0, 20000));
        for (i, id) in ["e", "f", "g", "h"].iter().enumerate() {
            split_backup(&repo, id, &mut data, &mut meta, &noise(i as u8 + 1, 100));
        }
        data.flush().unwrap();
        // i and j keep their data elsewhere, so their trees and lists stay put in round one.
        let mut other = Packer::new(&repo, 1 << 20);
        for (i, id) in ["i", "j", "k"].iter().enumerate() {
            split_backup(&repo, id, &mut other, &mut meta, &noise(i as u8 + 10, 3000));
        }
        other.flush().unwrap();
        meta.flush().unwrap();
        mem.delete(&keys::snapshot("gone")).unwrap();

        let dry = run(
            &repo,
            &GcOptions {
                repack_threshold: 0.5,
                dry_run: true,
            },
            None,
        )
        .unwrap();
        let gc = Lease::exclusive(&repo, "gc").unwrap();
        let real = run(&repo, &opts(0.5), Some(&gc)).unwrap();
        assert_eq!(real.repacked_packs, 2, "two rounds: {real:?}");
        let summary = |r: &GcReport| {
            let mut rewritten = r.rewritten_backups.clone();
            rewritten.sort();
            (
                r.repacked_packs,
                r.repacked_bytes,
                r.deleted_packs,
                r.freed_bytes,
                r.condemned_packs,
                rewritten,
            )
        };
        assert_eq!(
            summary(&dry),
            summary(&real),
            "dry run {dry:?}\nreal run {real:?}"
        );
        for id in ["e", "f", "g", "h", "i", "j", "k"] {
            assert!(!file(&repo, id).is_empty(), "{id}");
        }
        let again = run(&repo, &opts(0.5), Some(&gc)).unwrap();
        assert_eq!((again.deleted_packs, again.repacked_packs), (0, 0));
    }

    /// The whole plan from a survey built by hand: phase 2 waits for the leases a record
    /// names, deletes a pack once, and phase 1 condemns what no backup uses.
    #[test]
    fn plan_from_a_survey() {
        let [a, b, c, d] = [1u8, 2, 3, 4].map(|n| PackId([n; 32]));
        let mut refs = Refs::default();
        refs.mark(&Loc {
            pack: c,
            offset: 8,
            stored_len: 100,
        });
        let record = |run: &str, lease: &str, packs: Vec<PackId>| Condemned {
            run: run.into(),
            created: Utc::now(),
            leases: vec![lease.into()],
            backups: vec![],
            packs,
        };
        let survey = Survey {
            sizes: HashMap::from([
                (a, 1000),
                (b, 2000),
                (c, 100 + pack::ENTRY_LEN as u64),
                (d, 5),
            ]),
            alive: BTreeSet::from(["busy".to_string()]),
            backups: vec![],
            refs,
            trash: vec![
                record("r1", "gone", vec![a, c]),
                record("r2", "gone", vec![a]),
                record("r3", "busy", vec![b]),
            ],
        };
        let plan = GcPlan::new(&survey, 0.5);
        // The used pack c stays; a goes once; r3 waits for "busy".
        assert_eq!(
            plan.phase2,
            vec![
                ("r1".to_string(), vec![a]),
                ("r2".to_string(), vec![]),
                ("r3".to_string(), vec![])
            ]
        );
        assert!(plan.repack.rounds.is_empty());
        assert_eq!(plan.condemned, vec![b, d]);
        let report = plan.dry_report(&survey);
        assert!(report.dry_run);
        assert_eq!((report.deleted_packs, report.freed_bytes), (1, 1000));
        assert_eq!((report.condemned_packs, report.condemned_bytes), (2, 2005));
        assert_eq!(report.waiting_for, vec!["busy"]);
        // With nobody else running, the condemned packs go at once.
        let alone = Survey {
            alive: BTreeSet::new(),
            ..survey
        };
        let report = GcPlan::new(&alone, 0.5).dry_report(&alone);
        assert_eq!((report.deleted_packs, report.freed_bytes), (3, 3005));
        assert_eq!(report.condemned_packs, 0);
    }

    /// The plan on a graph built by hand: a list whose chunk moves is rewritten with its tree,
    /// and the metadata pack they leave is the next round's.
    #[test]
    fn repack_plan_follows_rewrites_into_a_second_round() {
        let id = |b: u8| BlobId([b; 32]);
        let pack_id = |b: u8| PackId([b; 32]);
        let loc = |pack: u8, offset: u32| Loc {
            pack: pack_id(pack),
            offset,
            stored_len: 52,
        };
        let (data, metap, other) = (pack_id(1), pack_id(2), pack_id(3));
        let entry = 52 + pack::ENTRY_LEN as u64;
        // Two backups: tree A -> list a (chunk in `data`); tree B -> list b (chunk in `other`).
        // All four metadata blobs are in `metap`; data is mostly dead, metap is not yet.
        let (tree_a, list_a) = ((id(10), loc(2, 0)), (id(11), loc(2, 100)));
        let (tree_b, list_b) = ((id(12), loc(2, 200)), (id(13), loc(2, 300)));
        let mut meta = HashMap::new();
        meta.insert(
            tree_a.0,
            Meta {
                children: vec![list_a],
                chunk_packs: vec![],
            },
        );
        meta.insert(
            list_a.0,
            Meta {
                children: vec![],
                chunk_packs: vec![data],
            },
        );
        meta.insert(
            tree_b.0,
            Meta {
                children: vec![list_b],
                chunk_packs: vec![],
            },
        );
        meta.insert(
            list_b.0,
            Meta {
                children: vec![],
                chunk_packs: vec![other],
            },
        );
        let sizes = HashMap::from([(data, 10_000), (metap, 4 * entry + 50), (other, 2_000)]);
        let live = HashMap::from([(data, 1_000), (metap, 4 * entry), (other, 1_900)]);
        let plan = plan_repack(&sizes, live, &meta, &[tree_a, tree_b], &HashSet::new(), 0.5);
        // Round one moves the chunk: list a and tree A are rewritten, half of metap is dead.
        // Round two repacks metap, which rewrites B too.
        assert_eq!(plan.rounds, vec![vec![data], vec![metap]]);
        assert_eq!(plan.rewritten, vec![0, 1]);
        assert_eq!(plan.live[&data], 0);
        assert_eq!(plan.live[&metap], 0);
        assert_eq!(plan.live[&other], 1_900);
        // Below the threshold, nothing.
        let live = HashMap::from([(data, 1_000), (metap, 4 * entry), (other, 1_900)]);
        let plan = plan_repack(
            &sizes,
            live,
            &meta,
            &[tree_a, tree_b],
            &HashSet::new(),
            0.95,
        );
        assert!(plan.rounds.is_empty() && plan.rewritten.is_empty());
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
