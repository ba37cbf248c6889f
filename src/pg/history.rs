//! Timeline history files (`TTTTTTTT.history`) and the timeline path they
//! describe: which timeline's copy of each segment recovery along it reads,
//! and where that path lacks one. Key types: `HistoryEntry`, one line of the
//! file; `TimelineTree`, the histories of one cluster.
//! Decision: parse as timeline.c's readTimeLineHistory does (comments and blank
//! lines skipped, ids strictly increasing), so what we accept is what recovery
//! accepts.

use super::lsn::Lsn;
use super::wal::segment_of;
use super::Error;

/// One ancestor timeline of the timeline the history file belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The ancestor timeline.
    pub parent_tli: u32,
    /// Where the next timeline branched off `parent_tli`.
    pub switchpoint: Lsn,
    /// Free text, e.g. "no recovery target specified".
    pub reason: String,
}

/// Parses a history file: lines `parentTLI<tab>switchpoint<tab>reason`.
pub fn parse_history(text: &str) -> Result<Vec<HistoryEntry>, Error> {
    let mut entries: Vec<HistoryEntry> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let bad = |reason| Error::History { line, reason };
        let trimmed = raw.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let (tli, rest) = split_field(trimmed);
        let tli: u32 = tli
            .parse()
            .map_err(|_| bad("expected a numeric timeline id"))?;
        let (switchpoint, reason) = split_field(rest.trim_start());
        let switchpoint: Lsn = switchpoint
            .parse()
            .map_err(|_| bad("expected a switchpoint location"))?;
        if entries.last().is_some_and(|last| tli <= last.parent_tli) {
            return Err(bad("timeline ids must be in increasing sequence"));
        }
        entries.push(HistoryEntry {
            parent_tli: tli,
            switchpoint,
            reason: reason.trim().to_string(),
        });
    }
    Ok(entries)
}

/// Splits off the text before the first whitespace.
fn split_field(s: &str) -> (&str, &str) {
    s.split_at(s.find(|c: char| c.is_ascii_whitespace()).unwrap_or(s.len()))
}

/// The timeline that holds `lsn` on the way to `target_tli`, whose history
/// is `history`. A switchpoint itself belongs to the newer timeline.
pub fn timeline_of(lsn: Lsn, target_tli: u32, history: &[HistoryEntry]) -> u32 {
    history
        .iter()
        .find(|e| lsn < e.switchpoint)
        .map_or(target_tli, |e| e.parent_tli)
}

/// The timeline whose file recovery reads for segment `segno` on the way to
/// `target_tli`: the segment holding a switchpoint comes from the newer
/// timeline, as in XLogFileReadAnyTLI.
pub fn timeline_of_segment(
    segno: u64,
    seg_size: u64,
    target_tli: u32,
    history: &[HistoryEntry],
) -> u32 {
    history
        .iter()
        .find(|e| segno < segment_of(e.switchpoint, seg_size))
        .map_or(target_tli, |e| e.parent_tli)
}

/// The timelines of one cluster and how they branched, from their history files.
///
/// Timeline 1 has no history file; any other timeline whose file is missing is recorded in
/// `missing`, and treated as if it had no ancestors (so nothing is planned across it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimelineTree {
    histories: std::collections::BTreeMap<u32, Vec<HistoryEntry>>,
    /// Timelines above 1 that hold WAL but have no readable history file.
    pub missing: Vec<u32>,
}

impl TimelineTree {
    /// A tree from each timeline's parsed history (timelines without one: empty).
    pub fn new(
        histories: std::collections::BTreeMap<u32, Vec<HistoryEntry>>,
        missing: Vec<u32>,
    ) -> TimelineTree {
        TimelineTree { histories, missing }
    }

    /// Every timeline known, ascending.
    pub fn timelines(&self) -> impl Iterator<Item = u32> + '_ {
        self.histories.keys().copied()
    }

    /// The history of `tli`: its ancestors, oldest first, each with the switchpoint at
    /// which the path to `tli` left it.
    pub fn history(&self, tli: u32) -> &[HistoryEntry] {
        self.histories.get(&tli).map_or(&[], Vec::as_slice)
    }

    /// The timeline `tli` branched from, and where.
    pub fn parent(&self, tli: u32) -> Option<(u32, Lsn)> {
        self.history(tli)
            .last()
            .map(|e| (e.parent_tli, e.switchpoint))
    }

    /// The timelines whose parent is `tli`, ascending.
    pub fn children(&self, tli: u32) -> Vec<u32> {
        self.timelines()
            .filter(|t| self.parent(*t).is_some_and(|(p, _)| p == tli))
            .collect()
    }

    /// Whether `ancestor` is `tli` or lies on its history.
    pub fn is_ancestor(&self, ancestor: u32, tli: u32) -> bool {
        ancestor == tli || self.history(tli).iter().any(|e| e.parent_tli == ancestor)
    }

    /// Where the path to `tli` leaves `ancestor`: None when `ancestor` is `tli` itself (its
    /// WAL counts to its end) or is not on the path at all (see `is_ancestor`).
    pub fn leaves_at(&self, ancestor: u32, tli: u32) -> Option<Lsn> {
        self.history(tli)
            .iter()
            .find(|e| e.parent_tli == ancestor)
            .map(|e| e.switchpoint)
    }

    /// Whether WAL position `lsn` of timeline `on` is part of the history of `tli`: `on` is
    /// an ancestor of `tli` and `lsn` comes before the path to `tli` leaves it.
    pub fn contains(&self, tli: u32, on: u32, lsn: Lsn) -> bool {
        self.is_ancestor(on, tli) && self.leaves_at(on, tli).is_none_or(|end| lsn < end)
    }

    /// The timeline whose copy of segment `segno` recovery toward `tli` reads.
    pub fn segment_source(&self, tli: u32, segno: u64, seg_size: u64) -> u32 {
        timeline_of_segment(segno, seg_size, tli, self.history(tli))
    }

    /// The first segment of `tli`: the one holding its switchpoint (0 for a timeline with no
    /// known parent).
    pub fn first_segment(&self, tli: u32, seg_size: u64) -> u64 {
        self.parent(tli)
            .map_or(0, |(_, switch)| segment_of(switch, seg_size))
    }

    /// The segments recovery toward `tli` reads from `from` through `to`, each as (the
    /// timeline it is read from, segment number).
    pub fn path_segments(
        &self,
        tli: u32,
        from: u64,
        to: u64,
        seg_size: u64,
    ) -> impl DoubleEndedIterator<Item = (u32, u64)> + '_ {
        (from..=to).map(move |s| (self.segment_source(tli, s, seg_size), s))
    }

    /// The segments `have` lacks on the way toward `tli` from `from` through `to`, as
    /// (timeline, first, last) ranges.
    pub fn missing_on_path(
        &self,
        tli: u32,
        from: u64,
        to: u64,
        seg_size: u64,
        have: &dyn Fn(u32, u64) -> bool,
    ) -> Vec<(u32, u64, u64)> {
        let mut out: Vec<(u32, u64, u64)> = Vec::new();
        for (t, segno) in self.path_segments(tli, from, to, seg_size) {
            if have(t, segno) {
                continue;
            }
            match out.last_mut() {
                Some((o, _, last)) if *o == t && *last + 1 == segno => *last = segno,
                _ => out.push((t, segno, segno)),
            }
        }
        out
    }

    /// The last segment recovery toward `tli` reads without a gap from `from`, looking no
    /// further than `last`; None when `from` itself is missing.
    pub fn contiguous_end(
        &self,
        tli: u32,
        from: u64,
        last: u64,
        seg_size: u64,
        have: &dyn Fn(u32, u64) -> bool,
    ) -> Option<u64> {
        self.path_segments(tli, from, last, seg_size)
            .take_while(|(t, s)| have(*t, *s))
            .last()
            .map(|(_, s)| s)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const SEG: u64 = 16 * 1024 * 1024;

    /// 00000003.history as PostgreSQL writes it.
    const TLI3: &str = "1\t0/3000000\tno recovery target specified\n\n\
                        2\t0/5000160\tbefore 2026-11-20 14:30:00+00\n";

    fn tli3() -> Vec<HistoryEntry> {
        parse_history(TLI3).unwrap()
    }

    #[test]
    fn parses_postgres_output() {
        assert_eq!(
            tli3(),
            vec![
                HistoryEntry {
                    parent_tli: 1,
                    switchpoint: Lsn(0x300_0000),
                    reason: "no recovery target specified".into()
                },
                HistoryEntry {
                    parent_tli: 2,
                    switchpoint: Lsn(0x500_0160),
                    reason: "before 2026-11-20 14:30:00+00".into()
                },
            ]
        );
    }

    #[test]
    fn parses_a_real_pg15_history_file() {
        // 00000002.history written by PostgreSQL 15 promoting at a restore point.
        let h = parse_history("1\t0/93E8AA0\tat restore point \"rp_4\"\n").unwrap();
        assert_eq!(
            h,
            vec![HistoryEntry {
                parent_tli: 1,
                switchpoint: Lsn(0x93E_8AA0),
                reason: "at restore point \"rp_4\"".into()
            }]
        );
        assert_eq!(timeline_of(Lsn(0x93E_8A9F), 2, &h), 1);
        assert_eq!(timeline_of(Lsn(0x93E_8AA0), 2, &h), 2);
        assert_eq!(timeline_of_segment(8, 16 << 20, 2, &h), 1);
        assert_eq!(timeline_of_segment(9, 16 << 20, 2, &h), 2);
    }

    #[test]
    fn skips_comments_and_tolerates_missing_reason() {
        let h = parse_history("# comment\n  # indented comment\n1\t0/3000000\n").unwrap();
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].reason, "");
        assert_eq!(parse_history("").unwrap(), vec![]);
    }

    #[test]
    fn rejects_malformed_lines() {
        let cases = [
            ("x\t0/1\n", 1, "expected a numeric timeline id"),
            ("1\n", 1, "expected a switchpoint location"),
            ("1\tzz\n", 1, "expected a switchpoint location"),
            (
                "\n2\t0/1\ta\n2\t0/2\tb\n",
                3,
                "timeline ids must be in increasing sequence",
            ),
            (
                "3\t0/1\ta\n2\t0/2\tb\n",
                2,
                "timeline ids must be in increasing sequence",
            ),
        ];
        for (text, line, reason) in cases {
            assert_eq!(
                parse_history(text),
                Err(Error::History { line, reason }),
                "{text:?}"
            );
        }
    }

    #[test]
    fn timeline_of_lsn() {
        let h = tli3();
        assert_eq!(timeline_of(Lsn(0x100_0000), 3, &h), 1);
        assert_eq!(timeline_of(Lsn(0x2FF_FFFF), 3, &h), 1);
        assert_eq!(timeline_of(Lsn(0x300_0000), 3, &h), 2);
        assert_eq!(timeline_of(Lsn(0x500_015F), 3, &h), 2);
        assert_eq!(timeline_of(Lsn(0x500_0160), 3, &h), 3);
        assert_eq!(timeline_of(Lsn(u64::MAX), 3, &h), 3);
        assert_eq!(timeline_of(Lsn(0x100), 1, &[]), 1);
    }

    #[test]
    fn timeline_of_segment_prefers_newer_timeline() {
        let h = tli3();
        assert_eq!(timeline_of_segment(2, SEG, 3, &h), 1);
        // 0/3000000 starts segment 3, which therefore is read from timeline 2.
        assert_eq!(timeline_of_segment(3, SEG, 3, &h), 2);
        assert_eq!(timeline_of_segment(4, SEG, 3, &h), 2);
        // Segment 5 holds the switch to timeline 3 at 0/5000160.
        assert_eq!(timeline_of_segment(5, SEG, 3, &h), 3);
        assert_eq!(timeline_of_segment(9, SEG, 3, &h), 3);
    }

    fn tree() -> TimelineTree {
        // 1 -> 2 at 0/3000000 -> 3 at 0/5000160; 1 -> 4 at 0/6000000.
        let mut h = std::collections::BTreeMap::new();
        h.insert(1, vec![]);
        h.insert(2, parse_history("1\t0/3000000\tx\n").unwrap());
        h.insert(3, tli3());
        h.insert(4, parse_history("1\t0/6000000\ty\n").unwrap());
        TimelineTree::new(h, vec![])
    }

    #[test]
    fn tree_relations() {
        let t = tree();
        assert_eq!(t.timelines().collect::<Vec<_>>(), vec![1, 2, 3, 4]);
        assert_eq!(t.parent(1), None);
        assert_eq!(t.parent(3), Some((2, Lsn(0x500_0160))));
        assert_eq!(t.children(1), vec![2, 4]);
        assert_eq!(t.children(2), vec![3]);
        assert!(t.is_ancestor(1, 3) && t.is_ancestor(2, 3) && t.is_ancestor(3, 3));
        assert!(!t.is_ancestor(4, 3) && !t.is_ancestor(3, 2) && !t.is_ancestor(2, 4));
        assert_eq!(t.leaves_at(1, 3), Some(Lsn(0x300_0000)));
        assert_eq!(t.leaves_at(3, 3), None);
        assert_eq!(t.leaves_at(4, 3), None);
        assert!(t.contains(3, 1, Lsn(0x2FF_FFFF)));
        assert!(!t.contains(3, 1, Lsn(0x300_0000)));
        assert!(t.contains(3, 3, Lsn(u64::MAX)));
        assert!(!t.contains(3, 4, Lsn(0x100)));
        assert!(t.contains(4, 1, Lsn(0x5FF_FFFF)) && !t.contains(4, 1, Lsn(0x600_0000)));
    }

    /// 1 -> 2 at 0/5000100 -> 3 at 0/8000000; 1 -> 4 at 0/6000000 (shared by the unit tests
    /// of the modules that walk paths).
    pub(crate) fn path_tree() -> TimelineTree {
        let mut h = std::collections::BTreeMap::new();
        h.insert(1, vec![]);
        h.insert(2, parse_history("1\t0/5000100\tx\n").unwrap());
        h.insert(
            3,
            parse_history("1\t0/5000100\tx\n2\t0/8000000\ty\n").unwrap(),
        );
        h.insert(4, parse_history("1\t0/6000000\tz\n").unwrap());
        TimelineTree::new(h, vec![])
    }

    /// Every segment but `missing`.
    pub(crate) fn all_but(missing: &'static [(u32, u64)]) -> impl Fn(u32, u64) -> bool {
        move |t, s| !missing.contains(&(t, s))
    }

    #[test]
    fn paths_follow_history() {
        let t = path_tree();
        assert_eq!(t.segment_source(3, 4, SEG), 1);
        assert_eq!(t.segment_source(3, 5, SEG), 2);
        assert_eq!(t.segment_source(3, 8, SEG), 3);
        assert_eq!(t.segment_source(4, 5, SEG), 1);
        assert_eq!(t.first_segment(3, SEG), 8);
        assert_eq!(t.first_segment(1, SEG), 0);
        let have = all_but(&[(1, 3), (1, 4), (2, 6), (1, 9)]);
        assert_eq!(
            t.missing_on_path(3, 2, 9, SEG, &have),
            vec![(1, 3, 4), (2, 6, 6)]
        );
        assert_eq!(t.missing_on_path(1, 5, 9, SEG, &have), vec![(1, 9, 9)]);
        assert_eq!(t.contiguous_end(3, 5, 20, SEG, &have), Some(5));
        assert_eq!(t.contiguous_end(3, 7, 20, SEG, &have), Some(20));
        assert_eq!(t.contiguous_end(1, 3, 20, SEG, &have), None);
    }
}
