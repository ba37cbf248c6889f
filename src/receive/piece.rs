//! The pieces of a streamed segment: each flush of `wal-receive` stores only the bytes it has
//! not stored yet, as `walstream/<system>/<TLI>/<segment>/<start>-<end>` (offsets within the
//! segment, 8 hex digits each), so a flush costs what it adds, not what the segment holds.

use crate::catalog::keys;

/// A piece's range within its segment, from its key's last part.
pub fn parse(name: &str) -> Option<(u32, u32)> {
    let (start, end) = name.split_once('-')?;
    let start = u32::from_str_radix(start, 16).ok()?;
    let end = u32::from_str_radix(end, 16).ok()?;
    (start < end).then_some((start, end))
}

/// The key of the piece holding bytes `start..end` of a streamed segment.
pub fn key(sysid: u64, tli: u32, segment: &str, start: u32, end: u32) -> String {
    format!(
        "{}{start:08X}-{end:08X}",
        keys::wal_stream(sysid, tli, segment)
    )
}

/// Which pieces rebuild the segment from its first byte, in order, and the length they reach:
/// each one adds bytes past the previous ones; the rest overlap, and a gap ends it.
pub fn assemble(mut pieces: Vec<(u32, u32)>) -> (Vec<(u32, u32)>, u32) {
    pieces.sort_unstable_by_key(|&(s, e)| (s, std::cmp::Reverse(e)));
    let mut len = 0;
    let mut used = Vec::new();
    for (s, e) in pieces {
        if s > len {
            break;
        }
        if e > len {
            used.push((s, e));
            len = e;
        }
    }
    (used, len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_assembly() {
        assert_eq!(parse("00000000-00020000"), Some((0, 0x20000)));
        assert_eq!(parse("00000010-00000010"), None);
        assert_eq!(parse("x"), None);
        assert_eq!(
            key(7, 2, "000000020000000000000003", 16, 32),
            "walstream/7/00000002/000000020000000000000003/00000010-00000020"
        );
        // Overlaps (a restarted receiver stores from the segment start again) and a gap.
        let (used, len) = assemble(vec![(100, 150), (0, 100), (0, 120), (200, 300), (120, 130)]);
        assert_eq!((used, len), (vec![(0, 120), (100, 150)], 150));
        assert_eq!(assemble(vec![(5, 9)]), (vec![], 0));
    }
}
