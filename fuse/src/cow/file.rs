//! One file's copy-on-write data: the set of written blocks and a sparse scratch file that
//! holds them at their own offsets. Unwritten blocks come from the source up to
//! `source_len` and read as zeros past it. Invariant: the scratch file is zero outside
//! written blocks and at or past `size`, so shrinking is `set_len` and growing is free.
//!
//! Durable (with a [`Journal`]): blocks written since the last sync are `pending`; a sync
//! flushes the data file, then journals them with the size and time, so the journal never
//! names a block the data file may lack. A truncation is journaled (and synced) before the
//! data file is cut. After a crash the data file may hold bytes the journal does not name
//! (written, never synced): a block is wholly defined when first written (source bytes or
//! zeros around the write), and [`CowFile::reopen`] cuts the file to its size, so those
//! bytes never show.
//!
//! A whole file ([`CowFile::whole`]) is a complete local copy adopted from the source: the
//! scratch file is the file, size and time included, so the kernel may read and write it
//! directly (FUSE passthrough) while requests that still come here see the same bytes.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::SystemTime;

use super::journal::{FileRecord, Journal, Record};
use crate::inode::Ino;
use crate::source::{NodeId, Source};
use crate::Error;

/// The copy-on-write state of one regular file.
#[derive(Debug)]
pub(crate) struct CowFile {
    /// The inode, as the journal names it.
    ino: Ino,
    /// Durable: changes are journaled, and the data file outlives this value.
    journal: Option<Arc<Journal>>,
    /// The source node whose bytes show through, if the file came from the source.
    origin: Option<NodeId>,
    path: PathBuf,
    block_size: u64,
    inner: RwLock<Inner>,
}

#[derive(Debug)]
struct Inner {
    size: u64,
    mtime: SystemTime,
    /// Bytes below this that are not in a written block come from the source. Only ever
    /// shrinks (truncation), so bytes cut off and regrown read as zeros.
    source_len: u64,
    written: Blocks,
    /// Created on the first write, so a file that is only truncated or grown costs nothing.
    data: Option<File>,
    /// The scratch file holds every byte (`data` is set): size and time are its own.
    whole: bool,
    /// Durable: written blocks not yet journaled.
    pending: Blocks,
    /// Durable: the data file was created and its name is not yet synced.
    fresh: bool,
    /// Durable: changed since its last record, which a sync must write.
    unjournaled: bool,
}

impl CowFile {
    /// State for a file of `size` bytes whose bytes show through from `origin`.
    pub(crate) fn new(
        ino: Ino,
        origin: Option<NodeId>,
        size: u64,
        mtime: SystemTime,
        path: PathBuf,
        block_size: u32,
        journal: Option<Arc<Journal>>,
    ) -> Self {
        Self {
            ino,
            journal,
            origin,
            path,
            block_size: u64::from(block_size),
            inner: RwLock::new(Inner {
                size,
                mtime,
                source_len: if origin.is_some() { size } else { 0 },
                written: Blocks::default(),
                data: None,
                whole: false,
                pending: Blocks::default(),
                fresh: false,
                unjournaled: false,
            }),
        }
    }

    /// Durable state rebuilt from the journal: `record` is the file's first; apply the
    /// others with [`Self::apply`], then [`Self::reopen`].
    pub(crate) fn restore(record: &FileRecord, block_size: u32, journal: Arc<Journal>) -> Self {
        let path = journal.dir().join(&record.data);
        let origin = record.origin.then_some(record.ino);
        Self::new(
            record.ino,
            origin,
            record.size,
            record.mtime,
            path,
            block_size,
            Some(journal),
        )
    }

    /// Applies a journal record of this file.
    pub(crate) fn apply(&self, record: &FileRecord) -> Result<(), Error> {
        let mut inner = self.write_lock()?;
        if let Some(cut) = record.cut {
            inner.written.truncate(cut);
        }
        inner.written.add_words(&record.words);
        inner.size = record.size;
        inner.source_len = record.source_len;
        inner.mtime = record.mtime;
        Ok(())
    }

    /// Opens the data file of rebuilt state, cut to the file's size: bytes past it were
    /// written and never synced.
    pub(crate) fn reopen(&self) -> Result<(), Error> {
        let mut inner = self.write_lock()?;
        let data = match OpenOptions::new().read(true).write(true).open(&self.path) {
            Ok(data) => data,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && inner.written.is_empty() => {
                return Ok(())
            }
            Err(e) => return Err(Error::context(e, format!("open {}", self.path.display()))),
        };
        data.set_len(inner.size)?;
        inner.data = Some(data);
        Ok(())
    }

    /// The whole state of this durable file as one record (for compaction).
    pub(crate) fn snapshot(&self) -> Result<Record, Error> {
        let inner = self.read_lock()?;
        let mut record = self.record(&inner, None);
        record.words = inner.written.words();
        Ok(Record::File(record))
    }

    /// A record of the file's size and times, without blocks.
    fn record(&self, inner: &Inner, cut: Option<u64>) -> FileRecord {
        FileRecord {
            ino: self.ino,
            data: self.path.file_name().unwrap_or_default().to_owned(),
            origin: self.origin.is_some(),
            size: inner.size,
            source_len: inner.source_len,
            mtime: inner.mtime,
            cut,
            words: Vec::new(),
        }
    }

    /// State for a file whose complete content is `data`, kept at `path` in the scratch
    /// directory; the kernel may write to it behind our back.
    pub(crate) fn whole(ino: Ino, data: File, path: PathBuf, block_size: u32) -> Self {
        Self {
            ino,
            journal: None,
            origin: None,
            path,
            block_size: u64::from(block_size),
            inner: RwLock::new(Inner {
                size: 0,
                mtime: SystemTime::UNIX_EPOCH,
                source_len: 0,
                written: Blocks::default(),
                data: Some(data),
                whole: true,
                pending: Blocks::default(),
                fresh: false,
                unjournaled: false,
            }),
        }
    }

    /// How this file differs from its origin's bytes: the blocks written, and where the
    /// origin's bytes stop showing through. A whole file owes the origin nothing.
    pub(crate) fn change(&self) -> Result<super::FileChange, Error> {
        let inner = self.read_lock()?;
        if inner.whole || self.origin.is_none() {
            return Ok(super::FileChange::Replaced);
        }
        Ok(super::FileChange::Blocks {
            written: inner.written.iter().collect(),
            source_len: inner.source_len,
        })
    }

    /// Makes this file whole with `copy`, a complete local copy of its source bytes: the
    /// blocks written so far are copied into it, and it replaces the scratch file. Declines
    /// (false) when the file was cut below its source length, whose zeros the copy lacks.
    pub(crate) fn absorb(&self, copy_path: &Path) -> Result<bool, Error> {
        let mut inner = self.write_lock()?;
        if inner.whole || self.origin.is_none() {
            return Ok(false);
        }
        let copy = OpenOptions::new()
            .read(true)
            .write(true)
            .open(copy_path)
            .map_err(|e| Error::context(e, format!("open {}", copy_path.display())))?;
        if copy.metadata()?.len() != inner.source_len {
            return Ok(false);
        }
        if let Some(data) = &inner.data {
            let mut buf = vec![0; self.block_size as usize];
            for block in inner.written.iter() {
                let start = block * self.block_size;
                let len = self.block_size.min(inner.size.saturating_sub(start)) as usize;
                read_at_most(data, &mut buf[..len], start)?;
                copy.write_all_at(&buf[..len], start)?;
            }
        }
        copy.set_len(inner.size)?;
        copy.set_modified(inner.mtime)?;
        std::fs::rename(copy_path, &self.path)
            .map_err(|e| Error::context(e, format!("rename to {}", self.path.display())))?;
        inner.data = Some(copy);
        inner.written = Blocks::default();
        inner.whole = true;
        Ok(true)
    }

    /// A descriptor of the complete local copy, for passthrough; None unless whole.
    pub(crate) fn local(&self) -> Result<Option<File>, Error> {
        let inner = self.read_lock()?;
        match &inner.data {
            Some(data) if inner.whole => Ok(Some(data.try_clone()?)),
            _ => Ok(None),
        }
    }

    /// The current size and modification time.
    pub(crate) fn size_mtime(&self) -> Result<(u64, SystemTime), Error> {
        let inner = self.read_lock()?;
        if let Some(data) = inner.data.as_ref().filter(|_| inner.whole) {
            let meta = data.metadata()?;
            return Ok((meta.len(), meta.modified()?));
        }
        Ok((inner.size, inner.mtime))
    }

    /// How many blocks are stored in the scratch file.
    #[cfg(test)]
    pub(crate) fn stored_blocks(&self) -> Result<u64, Error> {
        Ok(self.read_lock()?.written.count())
    }

    /// Reads up to `len` bytes at `offset`, merging written blocks over the source.
    pub(crate) fn read(
        &self,
        source: &dyn Source,
        offset: u64,
        len: u32,
    ) -> Result<Vec<u8>, Error> {
        let inner = self.read_lock()?;
        if let Some(data) = inner.data.as_ref().filter(|_| inner.whole) {
            let end = offset
                .saturating_add(u64::from(len))
                .min(data.metadata()?.len());
            let mut out = vec![0; end.saturating_sub(offset) as usize];
            read_at_most(data, &mut out, offset)?;
            return Ok(out);
        }
        let end = offset.saturating_add(u64::from(len)).min(inner.size);
        let mut out = Vec::new();
        let mut pos = offset;
        // Walk runs of bytes with the same origin, so a clean range is one source read.
        while pos < end {
            let (run, run_end) = self.run_at(&inner, pos, end);
            if run == Run::Source && pos == offset && run_end == end {
                // The whole reply is one clean run: the source's buffer is it, uncopied.
                let origin = self
                    .origin
                    .expect("only files with an origin have source bytes");
                let mut bytes = source.read(origin, pos, len_of(pos, end))?;
                bytes.resize(len_of(pos, end) as usize, 0);
                return Ok(bytes);
            }
            out.reserve_exact(len_of(pos, end) as usize);
            let want = (run_end - pos) as usize;
            let start = out.len();
            match run {
                Run::Scratch => {
                    out.resize(start + want, 0);
                    if let Some(data) = &inner.data {
                        read_at_most(data, &mut out[start..], pos)?;
                    }
                }
                Run::Source => {
                    let origin = self
                        .origin
                        .expect("only files with an origin have source bytes");
                    let bytes = source.read(origin, pos, want as u32)?;
                    out.extend_from_slice(&bytes[..bytes.len().min(want)]);
                    out.resize(start + want, 0);
                }
                Run::Zero => out.resize(start + want, 0),
            }
            pos = run_end;
        }
        Ok(out)
    }

    /// Writes `buf` at `offset`. A block the write covers only in part is first filled
    /// from the source (read-modify-write), unless it is already stored or has no source bytes.
    pub(crate) fn write(&self, source: &dyn Source, offset: u64, buf: &[u8]) -> Result<(), Error> {
        if buf.is_empty() {
            return Ok(());
        }
        let end = checked_end(offset, buf.len() as u64)?;
        let mut inner = self.write_lock()?;
        if let Some(data) = inner.data.as_ref().filter(|_| inner.whole) {
            data.write_all_at(buf, offset)?;
            return Ok(());
        }
        if inner.data.is_none() {
            inner.data = Some(self.create_data_file()?);
            inner.fresh = true;
        }
        let first = offset / self.block_size;
        let last = (end - 1) / self.block_size;
        for block in [first, last] {
            self.fill_from_source(&mut inner, source, block, offset, end)?;
        }
        let data = inner.data.as_ref().expect("created above");
        data.write_all_at(buf, offset)?;
        for block in first..=last {
            self.mark(&mut inner, block);
        }
        inner.size = inner.size.max(end);
        inner.mtime = SystemTime::now();
        inner.unjournaled = true;
        Ok(())
    }

    /// Shrinks or grows the file to `size`.
    pub(crate) fn set_size(&self, size: u64) -> Result<(), Error> {
        checked_end(size, 0)?;
        let mut inner = self.write_lock()?;
        if let Some(data) = inner.data.as_ref().filter(|_| inner.whole) {
            data.set_len(size)?;
            return Ok(());
        }
        if size < inner.size {
            let cut = size.div_ceil(self.block_size);
            inner.source_len = inner.source_len.min(size);
            inner.written.truncate(cut);
            inner.pending.truncate(cut);
            inner.size = size;
            if let Some(journal) = &self.journal {
                // Journaled first: the journal must never name blocks the data file lost.
                journal.append(&[Record::File(self.record(&inner, Some(cut)))])?;
                journal.sync()?;
            }
            if let Some(data) = &inner.data {
                // Zeroes the cut part of a stored block, keeping the invariant.
                data.set_len(size)?;
            }
        }
        inner.size = size;
        inner.mtime = SystemTime::now();
        inner.unjournaled = true;
        Ok(())
    }

    /// Sets the modification time.
    pub(crate) fn set_mtime(&self, mtime: SystemTime) -> Result<(), Error> {
        let mut inner = self.write_lock()?;
        match inner.data.as_ref().filter(|_| inner.whole) {
            Some(data) => data.set_modified(mtime)?,
            None => {
                inner.mtime = mtime;
                inner.unjournaled = true;
            }
        }
        Ok(())
    }

    /// Flushes the scratch file, if there is one, to the scratch disk; durable, then
    /// journals (and syncs) what it now holds, with the file's size and time.
    pub(crate) fn sync(&self, datasync: bool) -> Result<(), Error> {
        let Some(journal) = &self.journal else {
            let inner = self.read_lock()?;
            match &inner.data {
                Some(data) if datasync => data.sync_data()?,
                Some(data) => data.sync_all()?,
                None => {}
            }
            return Ok(());
        };
        // Locked throughout: a truncation must not slip in between the flush and the record.
        let mut inner = self.write_lock()?;
        if !inner.unjournaled {
            // Synced and recorded already (PostgreSQL fsyncs every file at startup): what
            // may be left is the journal's record of its name.
            return journal.sync();
        }
        if let Some(data) = &inner.data {
            data.sync_data()?;
        }
        if inner.fresh {
            journal.sync_dir()?;
            inner.fresh = false;
        }
        let mut record = self.record(&inner, None);
        record.words = std::mem::take(&mut inner.pending).words();
        journal.append(&[Record::File(record)])?;
        inner.unjournaled = false;
        journal.sync()
    }

    /// Hydration: makes the data file hold up to `max` more blocks of the file, from block
    /// `from` on, so that once every block below the size is held the data file is the
    /// file, byte for byte. Unwritten blocks get the source's bytes (zeros past them);
    /// blocks written before are kept. Durable: the blocks are journaled at the next sync.
    /// Returns the block to go on from (None: every block is held) and the bytes copied.
    pub(crate) fn fill(
        &self,
        source: &dyn Source,
        from: u64,
        max: u64,
    ) -> Result<(Option<u64>, u64), Error> {
        let mut inner = self.write_lock()?;
        if inner.whole {
            return Ok((None, 0));
        }
        let blocks = inner.size.div_ceil(self.block_size);
        let mut first = from;
        while first < blocks && inner.written.contains(first) {
            first += 1;
        }
        if first >= blocks {
            return Ok((None, 0));
        }
        let mut end = first;
        while end < blocks && end - first < max && !inner.written.contains(end) {
            end += 1;
        }
        if inner.data.is_none() {
            inner.data = Some(self.create_data_file()?);
            inner.fresh = true;
        }
        let start = first * self.block_size;
        let source_end = (end * self.block_size).min(inner.source_len);
        let mut bytes = Vec::new();
        if let Some(origin) = self.origin {
            while start + (bytes.len() as u64) < source_end {
                let at = start + bytes.len() as u64;
                let got = source.read(origin, at, len_of(at, source_end))?;
                if got.is_empty() {
                    return Err(Error::io(format!(
                        "source node {origin} ends at {at} of {source_end} bytes"
                    )));
                }
                bytes.extend_from_slice(&got);
            }
            bytes.truncate(source_end.saturating_sub(start) as usize);
        }
        bytes.resize(((end - first) * self.block_size) as usize, 0);
        let data = inner.data.as_ref().expect("created above");
        data.write_all_at(&bytes, start)?;
        for block in first..end {
            self.mark(&mut inner, block);
        }
        inner.unjournaled = true;
        let copied = source_end.saturating_sub(start);
        Ok(((end < blocks).then_some(end), copied))
    }

    /// Marks `block` as held by the data file.
    fn mark(&self, inner: &mut Inner, block: u64) {
        inner.written.insert(block);
        if self.journal.is_some() {
            inner.pending.insert(block);
        }
    }

    /// Where the byte at `pos` comes from, and where the run of bytes with that origin
    /// ends, at most at `end`.
    fn run_at(&self, inner: &Inner, pos: u64, end: u64) -> (Run, u64) {
        let (run, mut run_end) = self.classify(inner, pos);
        while run_end < end {
            match self.classify(inner, run_end) {
                (next, next_end) if next == run => run_end = next_end,
                _ => break,
            }
        }
        (run, run_end.min(end))
    }

    /// Where the byte at `pos` comes from, and where that run ends within its block.
    fn classify(&self, inner: &Inner, pos: u64) -> (Run, u64) {
        let block = pos / self.block_size;
        let block_end = (block + 1) * self.block_size;
        if inner.written.contains(block) {
            (Run::Scratch, block_end)
        } else if pos < inner.source_len {
            (Run::Source, block_end.min(inner.source_len))
        } else {
            (Run::Zero, block_end)
        }
    }

    /// Copies `block`'s source bytes to the scratch file before the write `[start, end)`
    /// lands on part of it. The whole block is copied, in one source read, so a write that
    /// fails half-way leaves old bytes rather than a hole. Durable, past the source's bytes
    /// the block is zeroed: the data file may hold stale bytes there from before a crash.
    fn fill_from_source(
        &self,
        inner: &mut Inner,
        source: &dyn Source,
        block: u64,
        start: u64,
        end: u64,
    ) -> Result<(), Error> {
        let block_start = block * self.block_size;
        let block_end = block_start + self.block_size;
        let source_end = block_end.min(inner.source_len);
        let covered = start <= block_start && end >= block_end;
        let durable = self.journal.is_some();
        if covered || inner.written.contains(block) || (block_start >= source_end && !durable) {
            return Ok(());
        }
        let mut bytes = match self.origin {
            Some(origin) if block_start < source_end => {
                let want = (source_end - block_start) as usize;
                let mut bytes = source.read(origin, block_start, want as u32)?;
                bytes.truncate(want);
                bytes
            }
            _ => Vec::new(),
        };
        if durable {
            bytes.resize(self.block_size as usize, 0);
        }
        let data = inner.data.as_ref().expect("created before filling");
        data.write_all_at(&bytes, block_start)?;
        // Mark it now: the first and last block may be the same one.
        self.mark(inner, block);
        Ok(())
    }

    fn create_data_file(&self) -> Result<File, Error> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&self.path)
            .map_err(|e| Error::context(e, format!("create {}", self.path.display())))
    }

    fn read_lock(&self) -> Result<RwLockReadGuard<'_, Inner>, Error> {
        self.inner.read().map_err(|_| poisoned())
    }

    fn write_lock(&self) -> Result<RwLockWriteGuard<'_, Inner>, Error> {
        self.inner.write().map_err(|_| poisoned())
    }
}

impl Drop for CowFile {
    /// A throw-away data file goes with its state; a durable one once the journal's record
    /// of its removal is synced (see [`Journal::drop_data`]; compaction removes any left).
    fn drop(&mut self) {
        if let Some(journal) = &self.journal {
            if self.inner.get_mut().is_ok_and(|i| i.data.is_some()) {
                journal.drop_data(self.path.clone());
            }
            return;
        }
        let created = self
            .inner
            .get_mut()
            .map(|i| i.data.is_some())
            .unwrap_or(true);
        if created {
            if let Err(e) = std::fs::remove_file(&self.path) {
                tracing::warn!("remove scratch file {}: {e}", self.path.display());
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Run {
    Scratch,
    Source,
    Zero,
}

fn poisoned() -> Error {
    Error::io("file state poisoned by an earlier panic")
}

/// The length of `[pos, end)` as a request size (requests are at most a few MiB).
fn len_of(pos: u64, end: u64) -> u32 {
    (end - pos) as u32
}

/// `offset + len`, refusing sizes the kernel's signed offsets cannot hold.
fn checked_end(offset: u64, len: u64) -> Result<u64, Error> {
    offset
        .checked_add(len)
        .filter(|&end| end <= i64::MAX as u64)
        .ok_or_else(|| Error::from_errno(libc::EFBIG))
}

/// Fills `buf` from `offset`, leaving what lies past the end of `file` untouched (zero).
fn read_at_most(file: &File, buf: &mut [u8], offset: u64) -> Result<(), Error> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// A sparse set of block numbers: 64 per word, only non-empty words kept, so a write at a
/// huge offset costs one word.
#[derive(Debug, Default)]
struct Blocks {
    words: BTreeMap<u64, u64>,
}

impl Blocks {
    fn contains(&self, block: u64) -> bool {
        self.words
            .get(&(block / 64))
            .is_some_and(|w| w & (1 << (block % 64)) != 0)
    }

    /// Every block, in order.
    fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.words.iter().flat_map(|(&word, &bits)| {
            (0..64)
                .filter(move |bit| bits & (1 << bit) != 0)
                .map(move |bit| word * 64 + bit)
        })
    }

    fn insert(&mut self, block: u64) {
        *self.words.entry(block / 64).or_default() |= 1 << (block % 64);
    }

    fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// The set as (word, bits) pairs, for the journal.
    fn words(&self) -> Vec<(u64, u64)> {
        self.words.iter().map(|(&w, &b)| (w, b)).collect()
    }

    fn add_words(&mut self, words: &[(u64, u64)]) {
        for &(word, bits) in words.iter().filter(|(_, b)| *b != 0) {
            *self.words.entry(word).or_default() |= bits;
        }
    }

    /// Removes every block from `first` on.
    fn truncate(&mut self, first: u64) {
        self.words.split_off(&first.div_ceil(64));
        if !first.is_multiple_of(64) {
            if let Some(word) = self.words.get_mut(&(first / 64)) {
                *word &= (1 << (first % 64)) - 1;
            }
        }
        self.words.retain(|_, w| *w != 0);
    }

    #[cfg(test)]
    fn count(&self) -> u64 {
        self.words.values().map(|w| u64::from(w.count_ones())).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_truncate_inside_and_at_word_edges() {
        let mut b = Blocks::default();
        for i in [0, 1, 63, 64, 65, 200] {
            b.insert(i);
        }
        b.truncate(65);
        assert_eq!(b.count(), 4);
        assert!(b.contains(64) && !b.contains(65) && !b.contains(200));
        b.truncate(64);
        assert_eq!(b.count(), 3);
        b.truncate(0);
        assert_eq!(b.count(), 0);
    }

    #[test]
    fn blocks_iterate_in_order() {
        let mut b = Blocks::default();
        for i in [200, 0, 64, 63, 1] {
            b.insert(i);
        }
        assert_eq!(b.iter().collect::<Vec<_>>(), [0, 1, 63, 64, 200]);
    }
}
