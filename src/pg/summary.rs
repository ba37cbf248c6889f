//! Which chunks of which relation files changed between two LSNs, as the server's WAL
//! summaries record them (PostgreSQL 17+ with `summarize_wal = on`).
//! Key type: `Changes`, built from rows of `pg_wal_summary_contents()` grouped by chunk.
//! Decision: a chunk is reused without reading only when the summaries prove that none of
//! its blocks changed. Only main forks qualify (the free space map is not WAL-logged, and
//! the other forks are small); a database created or dropped in the range, and every
//! block at or past a fork's truncation point, are read again. Reading more is always
//! safe: the chunk is then compared by hash as in a full read.

use super::layout::{Fork, RelationPath};
use super::lsn::Lsn;
use std::collections::{HashMap, HashSet};

/// One summary file: the blocks that WAL on `tli` modified in [start, end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// The timeline the summarized WAL is on.
    pub tli: u32,
    /// The first LSN summarized.
    pub start: Lsn,
    /// The LSN where the summary ends (exclusive).
    pub end: Lsn,
}

/// Why the summaries cannot tell what changed in a range of WAL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoverageError {
    /// No summary covers part of the range.
    #[error("no WAL summary covers {from} to {to} on timeline {tli}")]
    Gap {
        /// The timeline.
        tli: u32,
        /// Start of the uncovered range.
        from: Lsn,
        /// End of the uncovered range.
        to: Lsn,
    },
    /// Summaries on the timeline stop before the end of the range.
    #[error("WAL on timeline {tli} is summarized up to {reached}, not up to {to}")]
    Short {
        /// The timeline.
        tli: u32,
        /// How far the summaries go.
        reached: Lsn,
        /// How far they had to go.
        to: Lsn,
    },
}

/// Which chunks of one relation segment file may have changed: those listed (sorted,
/// numbered from the file's start) and every chunk from `read_from` on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChanges {
    /// Chunks that may have changed before `read_from`, sorted, numbered from the file's start.
    pub changed: Vec<u64>,
    /// The first chunk from which every chunk may have changed (the file may have grown).
    pub read_from: u64,
}

/// The summaries on `tli` that cover [from, to) without a gap; if there are none, why not.
pub fn covering(
    summaries: &[Summary],
    tli: u32,
    from: Lsn,
    to: Lsn,
) -> Result<Vec<Summary>, CoverageError> {
    let mut on: Vec<Summary> = summaries
        .iter()
        .filter(|s| s.tli == tli && s.end > from && s.start < to)
        .copied()
        .collect();
    on.sort_by_key(|s| s.start);
    let mut reached = from;
    for s in &on {
        if s.start > reached {
            return Err(CoverageError::Gap {
                tli,
                from: reached,
                to: s.start,
            });
        }
        reached = reached.max(s.end);
    }
    if reached < to {
        return Err(CoverageError::Short { tli, reached, to });
    }
    Ok(on)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Relation {
    tablespace: u32,
    database: u32,
    relfilenode: u32,
}

#[derive(Debug, Default)]
struct MainFork {
    /// The lowest block the fork was truncated to (0: created or dropped), if any.
    limit: Option<u64>,
    /// Relation-wide chunk numbers with a modified block; sorted by `finish`.
    chunks: Vec<u64>,
}

/// The changed chunks of main forks. Memory: one entry per changed relation and 8 bytes per
/// changed chunk.
#[derive(Debug)]
pub struct Changes {
    chunk_blocks: u64,
    segment_blocks: u64,
    /// (tablespace, database) pairs created or dropped: everything in them is read.
    whole: HashSet<(u32, u32)>,
    forks: HashMap<Relation, MainFork>,
}

impl Changes {
    /// `chunk_blocks` pages per chunk; `segment_blocks` pages per segment file (RELSEG_SIZE).
    /// None when chunks do not tile segments, so chunk numbers cannot be mapped.
    pub fn new(chunk_blocks: u64, segment_blocks: u64) -> Option<Changes> {
        (chunk_blocks > 0 && segment_blocks.is_multiple_of(chunk_blocks)).then(|| Changes {
            chunk_blocks,
            segment_blocks,
            whole: HashSet::new(),
            forks: HashMap::new(),
        })
    }

    /// Pages (blocks) per chunk, as given to [`Changes::new`].
    pub fn chunk_blocks(&self) -> u64 {
        self.chunk_blocks
    }

    /// A summary row grouped by chunk: `chunk` holds a modified block of the fork.
    pub fn add_modified(
        &mut self,
        tablespace: u32,
        database: u32,
        relfilenode: u32,
        fork: i16,
        chunk: u64,
    ) {
        if fork == Fork::Main as i16 {
            self.main_fork(tablespace, database, relfilenode)
                .chunks
                .push(chunk);
        }
    }

    /// A summary row for a limit block: the fork was truncated to `block` blocks (or
    /// created or dropped, at 0). Relfilenode 0 stands for a whole database.
    pub fn add_limit(
        &mut self,
        tablespace: u32,
        database: u32,
        relfilenode: u32,
        fork: i16,
        block: u64,
    ) {
        if relfilenode == 0 {
            self.whole.insert((tablespace, database));
        } else if fork == Fork::Main as i16 {
            let f = self.main_fork(tablespace, database, relfilenode);
            f.limit = Some(f.limit.map_or(block, |l| l.min(block)));
        }
    }

    fn main_fork(&mut self, tablespace: u32, database: u32, relfilenode: u32) -> &mut MainFork {
        self.forks
            .entry(Relation {
                tablespace,
                database,
                relfilenode,
            })
            .or_default()
    }

    /// Sorts what was added, so `for_file` can look chunks up.
    pub fn finish(&mut self) {
        for f in self.forks.values_mut() {
            f.chunks.sort_unstable();
            f.chunks.dedup();
        }
    }

    /// What to read of one relation segment file; None to read all of it.
    pub fn for_file(&self, path: &RelationPath) -> Option<FileChanges> {
        if path.fork != Fork::Main || self.whole.contains(&(path.tablespace, path.database)) {
            return None;
        }
        let per_segment = self.segment_blocks / self.chunk_blocks;
        let first = u64::from(path.segment) * per_segment;
        let Some(fork) = self.forks.get(&Relation {
            tablespace: path.tablespace,
            database: path.database,
            relfilenode: path.relfilenode,
        }) else {
            return Some(FileChanges {
                changed: Vec::new(),
                read_from: u64::MAX,
            });
        };
        // The chunk holding the limit block has blocks at or past it: read it too.
        let read_from = match fork.limit.map(|block| block / self.chunk_blocks) {
            Some(limit) if limit <= first => return None,
            Some(limit) => limit - first,
            None => u64::MAX,
        };
        let start = fork.chunks.partition_point(|&c| c < first);
        let end = fork.chunks.partition_point(|&c| c < first + per_segment);
        Some(FileChanges {
            changed: fork.chunks[start..end].iter().map(|c| c - first).collect(),
            read_from,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::layout::relation_path;

    fn lsn(v: u64) -> Lsn {
        Lsn(v)
    }

    fn summary(start: u64, end: u64) -> Summary {
        Summary {
            tli: 1,
            start: lsn(start),
            end: lsn(end),
        }
    }

    #[test]
    fn coverage_needs_contiguous_summaries_on_the_timeline() {
        let s = [summary(10, 20), summary(20, 35), summary(35, 50)];
        assert_eq!(covering(&s, 1, lsn(15), lsn(50)).unwrap(), s);
        assert_eq!(covering(&s, 1, lsn(21), lsn(30)).unwrap(), [s[1]]);
        assert!(covering(&s, 1, lsn(10), lsn(40)).is_ok());
        assert!(covering(&s, 1, lsn(5), lsn(40)).is_err(), "starts before");
        assert!(covering(&s, 1, lsn(15), lsn(60)).is_err(), "ends after");
        assert!(covering(&s, 2, lsn(15), lsn(40)).is_err(), "other timeline");
        let gap = [summary(10, 20), summary(25, 50)];
        let err = covering(&gap, 1, lsn(15), lsn(40)).unwrap_err();
        assert_eq!(
            err,
            CoverageError::Gap {
                tli: 1,
                from: lsn(20),
                to: lsn(25)
            }
        );
        assert!(err.to_string().contains("no WAL summary covers"), "{err}");
    }

    fn file(changes: &Changes, path: &str) -> Option<FileChanges> {
        changes.for_file(&relation_path(path).expect("a relation path"))
    }

    #[test]
    fn changed_chunks_map_onto_segment_files() {
        // 8 pages per chunk, 32 per segment: 4 chunks per segment file.
        let mut c = Changes::new(8, 32).unwrap();
        c.add_modified(1663, 5, 100, 0, 1);
        c.add_modified(1663, 5, 100, 0, 6);
        c.add_modified(1663, 5, 100, 0, 1);
        c.finish();
        assert_eq!(
            file(&c, "base/5/100"),
            Some(FileChanges {
                changed: vec![1],
                read_from: u64::MAX
            })
        );
        assert_eq!(file(&c, "base/5/100.1").unwrap().changed, vec![2]);
        assert_eq!(file(&c, "base/5/100.2").unwrap().changed, Vec::<u64>::new());
        // Untouched relation: nothing to read. Other forks: read all.
        assert_eq!(file(&c, "base/5/200").unwrap().changed, Vec::<u64>::new());
        assert_eq!(file(&c, "base/5/100_fsm"), None);
        assert_eq!(file(&c, "base/5/100_vm"), None);
        assert_eq!(file(&c, "base/5/100_init"), None);
        // The same relfilenode in another database or tablespace is another relation.
        assert_eq!(file(&c, "base/6/100").unwrap().changed, Vec::<u64>::new());
    }

    #[test]
    fn truncation_and_recreation_force_reads() {
        let mut c = Changes::new(8, 32).unwrap();
        c.add_limit(1663, 5, 100, 0, 44); // truncated to 44 blocks: chunk 5 on
        c.add_limit(1663, 5, 100, 0, 50);
        c.add_limit(1663, 5, 300, 0, 0); // created or dropped
        c.add_limit(1663, 5, 400, 1, 0); // an FSM limit changes nothing for main
        c.add_limit(16400, 7, 0, 0, 0); // a database created in a tablespace
        c.finish();
        assert_eq!(file(&c, "base/5/100").unwrap().read_from, 5);
        assert_eq!(file(&c, "base/5/100.1").unwrap().read_from, 1);
        assert_eq!(file(&c, "base/5/100.2"), None);
        assert_eq!(file(&c, "base/5/300"), None);
        assert_eq!(file(&c, "base/5/400").unwrap().read_from, u64::MAX);
        assert_eq!(file(&c, "pg_tblspc/16400/PG_17_1/7/100"), None);
        assert!(file(&c, "pg_tblspc/16400/PG_17_1/8/100").is_some());
    }

    #[test]
    fn chunks_must_tile_segments() {
        assert!(Changes::new(3, 131072).is_none());
        assert!(Changes::new(0, 131072).is_none());
        assert!(Changes::new(8, 131072).is_some());
    }
}
