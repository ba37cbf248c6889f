//! Pass 2 for packs: entry tables held against the references into them, blobs re-hashed.

use super::*;

/// Bytes read from a pack's end when only its entry table is wanted: the table of a pack of
/// up to 1300 blobs, so one read usually does.
pub(super) const TABLE_GUESS: u64 = 64 << 10;

/// A referenced blob's expected entry: 16 bytes, keyed by (pack index, offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Expect {
    pub(super) stored_len: u32,
    pub(super) len: u32,
    /// The first 8 bytes of the id: enough to tell a wrong entry from the right one, at a
    /// quarter of the memory (the blob's full hash is checked by `read_data`).
    pub(super) id8: u64,
}

pub(super) fn id8(id: &BlobId) -> u64 {
    u64::from_le_bytes(id.0[..8].try_into().expect("8 bytes"))
}

/// One finding about a pack, with the offsets of the references it affects.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Finding {
    pub(super) kind: ProblemKind,
    pub(super) detail: String,
    pub(super) offsets: Vec<u32>,
}

/// Holds one pack's entry table (and, given the whole pack, its blobs) against the references
/// into it. Returns the findings and how many blobs were re-hashed.
pub(super) fn examine_pack(
    crypto: &Crypto,
    key: &str,
    blob_end: u64,
    table: &[u8],
    data: Option<&[u8]>,
    refs: &[(u32, Expect)],
) -> (Vec<Finding>, u64) {
    let mut findings = Vec::new();
    let mut table_broken = false;
    if let Some(d) = data {
        if d.get(..pack::MAGIC.len()) != Some(pack::MAGIC.as_slice()) {
            findings.push(Finding {
                kind: ProblemKind::BadPack,
                detail: "bad pack header".into(),
                offsets: Vec::new(),
            });
        }
    }
    let mut by_offset: HashMap<u32, Entry> = HashMap::new();
    for e in pack::entries(table, blob_end) {
        match e {
            Ok(e) => {
                by_offset.insert(e.offset, e);
            }
            Err(bad) => {
                table_broken = true;
                let kind = match bad {
                    BadEntry::OutOfBounds { .. } => ProblemKind::EntryOutsidePack,
                    BadEntry::UnknownType { .. } => ProblemKind::BadPackEntry,
                };
                findings.push(Finding {
                    kind,
                    detail: bad.to_string(),
                    offsets: Vec::new(),
                });
            }
        }
    }
    let mut checked = 0;
    let mut corrupt: HashMap<u32, usize> = HashMap::new();
    if let Some(d) = data {
        let mut entries: Vec<&Entry> = by_offset.values().collect();
        entries.sort_by_key(|e| e.offset);
        for e in entries {
            let stored = &d[e.offset as usize..(e.offset + e.stored_len) as usize];
            checked += 1;
            if let Err(err) = crypto.decode_blob(stored, e.len, &e.id, key) {
                let reason = match err {
                    StoreError::Corrupt { reason, .. } => reason,
                    other => other.to_string(),
                };
                corrupt.insert(e.offset, findings.len());
                findings.push(Finding {
                    kind: ProblemKind::BlobCorrupt,
                    detail: reason,
                    offsets: Vec::new(),
                });
            }
        }
    }
    let mut unmatched = Vec::new();
    for &(offset, want) in refs {
        match by_offset.get(&offset) {
            Some(e)
                if e.stored_len == want.stored_len
                    && e.len == want.len
                    && id8(&e.id) == want.id8 =>
            {
                if let Some(&i) = corrupt.get(&offset) {
                    findings[i].offsets.push(offset);
                }
            }
            _ => unmatched.push(offset),
        }
    }
    if !unmatched.is_empty() {
        // A broken entry is the likely reason a reference finds no entry: charge it there.
        match findings.iter_mut().find(|f| {
            table_broken
                && matches!(
                    f.kind,
                    ProblemKind::EntryOutsidePack | ProblemKind::BadPackEntry
                )
        }) {
            Some(f) => f.offsets.extend(unmatched),
            None => findings.push(Finding {
                kind: ProblemKind::MissingBlob,
                detail: format!(
                    "{} referenced blobs are not in the pack's entry table at the place the \
                     backups name",
                    unmatched.len()
                ),
                offsets: unmatched,
            }),
        }
    }
    (findings, checked)
}

impl Checker<'_> {
    /// Pass 2 for one referenced pack.
    pub(super) fn check_pack(&mut self, index: u32, key: &str) -> Result<()> {
        let refs: Vec<(u32, Expect)> = self
            .refs
            .range((index, 0)..=(index, u32::MAX))
            .map(|(&(_, off), &e)| (off, e))
            .collect();
        let backend = self.repo.backend();
        let mut read_whole = self.wants_data(key);
        let mut size = None;
        if read_whole && !self.opts.full && self.record.is_some() {
            let s = match backend.size(key) {
                Err(e) if e.is_not_found() => return self.missing_pack(index, key),
                other => other?,
            };
            size = Some(s);
            if self.fresh(key, s) {
                read_whole = false;
                self.report.packs_verified_earlier += 1;
            }
        }
        let (data, size) = if read_whole {
            let d = match backend.get(key) {
                Err(e) if e.is_not_found() => return self.missing_pack(index, key),
                other => other?,
            };
            self.read(d.len() as u64);
            let n = d.len() as u64;
            (Some(d), n)
        } else {
            let s = match size.map_or_else(|| backend.size(key), Ok) {
                Err(e) if e.is_not_found() => return self.missing_pack(index, key),
                other => other?,
            };
            (None, s)
        };
        let (table, blob_end) = match self.entry_table(key, size, data.as_deref())? {
            Ok(t) => t,
            Err(reason) => {
                let p = self.problem(Problem::new(ProblemKind::BadPack, key, reason));
                self.bad_packs.insert(index, p);
                return Ok(());
            }
        };
        let (findings, checked) = examine_pack(
            self.repo.crypto(),
            key,
            blob_end,
            &table,
            data.as_deref(),
            &refs,
        );
        self.report.blobs_checked += checked;
        if data.is_some() {
            self.report.packs_read += 1;
            if findings.is_empty() {
                self.remember(key, size)?;
            }
        }
        for f in findings {
            let p = self.problem(Problem::new(f.kind, key, f.detail));
            for off in f.offsets {
                self.bad_blobs.entry((index, off)).or_insert(p);
            }
        }
        Ok(())
    }

    /// The plain entry table of a pack and where it starts (where the blobs end), from the
    /// whole pack or from its end (one ranged read for tables up to `TABLE_GUESS`, two
    /// beyond); the inner error says why the trailer or table is unusable.
    pub(super) fn entry_table(
        &mut self,
        key: &str,
        size: u64,
        data: Option<&[u8]>,
    ) -> Result<std::result::Result<(Vec<u8>, u64), String>> {
        let backend = self.repo.backend();
        let (end, end_at) = match data {
            Some(d) => (std::borrow::Cow::Borrowed(d), 0),
            None => {
                let at = size.saturating_sub(TABLE_GUESS);
                let e = backend.get_range(key, at, size - at)?;
                self.read(e.len() as u64);
                (std::borrow::Cow::Owned(e), at)
            }
        };
        let reason = |e: StoreError| match e {
            StoreError::Corrupt { reason, .. } => reason,
            other => other.to_string(),
        };
        let tail = &end[end.len().saturating_sub(pack::TAIL_LEN)..];
        let count = match pack::parse_tail(tail, key) {
            Ok(c) => c,
            Err(e) => return Ok(Err(reason(e))),
        };
        let crypto = self.repo.crypto();
        let start = match pack::table_start(size, count, crypto.table_overhead(), key) {
            Ok(s) => s,
            Err(e) => return Ok(Err(reason(e))),
        };
        let table_end = end.len() - pack::TAIL_LEN;
        let stored = if start >= end_at {
            end[(start - end_at) as usize..table_end].to_vec()
        } else {
            let t = backend.get_range(key, start, size - start - pack::TAIL_LEN as u64)?;
            self.read(t.len() as u64);
            t
        };
        Ok(crypto
            .open_table(key, &stored)
            .map(|table| (table, start))
            .map_err(reason))
    }

    pub(super) fn missing_pack(&mut self, index: u32, key: &str) -> Result<()> {
        let p = self.problem(Problem::new(
            ProblemKind::MissingPack,
            key,
            "backups reference this pack, but it is not in the repository",
        ));
        self.bad_packs.insert(index, p);
        Ok(())
    }

    /// Pass 2 for packs: every referenced pack, in key order.
    pub(super) fn check_packs(&mut self) -> Result<()> {
        let listed = self.repo.packs()?;
        self.report.packs_unreferenced += listed.strays;
        let mut present = vec![false; self.pack_ids.len()];
        for id in &listed.ids {
            match self.pack_index.get(id).copied() {
                Some(i) => {
                    present[i as usize] = true;
                    let key = keys::pack(id);
                    tracing::debug!("checking {key}");
                    self.check_pack(i, &key)?;
                }
                None => self.report.packs_unreferenced += 1,
            }
        }
        self.report.packs = self.pack_ids.len();
        for (i, seen) in present.iter().enumerate() {
            if !seen {
                let key = keys::pack(&self.pack_ids[i]);
                self.missing_pack(i as u32, &key)?;
            }
        }
        Ok(())
    }
}
