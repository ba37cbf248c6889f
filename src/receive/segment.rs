//! The segment being received: WAL bytes from the start of one segment up to the newest
//! position, which the receiver stores in pieces until the segment is complete.

use crate::pg::wal::segment_name;

/// WAL of one segment of one timeline, from its first byte on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// The timeline it is streamed from.
    pub tli: u32,
    /// Its segment number.
    pub segno: u64,
    seg_size: u64,
    /// Bytes from the segment's start.
    pub data: Vec<u8>,
}

/// Streamed bytes that do not continue what was received.
#[derive(Debug, PartialEq, Eq)]
pub struct Discontinuity {
    /// Where the next byte was expected.
    pub expected: u64,
    /// Where the server's bytes start.
    pub got: u64,
}

impl Segment {
    /// An empty segment `segno` of timeline `tli`.
    pub fn new(tli: u32, segno: u64, seg_size: u64) -> Segment {
        Segment {
            tli,
            segno,
            seg_size,
            data: Vec::new(),
        }
    }

    /// The segment's file name.
    pub fn name(&self) -> String {
        segment_name(self.tli, self.segno, self.seg_size)
    }

    /// The position of its first byte.
    pub fn start(&self) -> u64 {
        self.segno * self.seg_size
    }

    /// The position of the next byte expected.
    pub fn end(&self) -> u64 {
        self.start() + self.data.len() as u64
    }

    /// Whether all of the segment is here.
    pub fn is_full(&self) -> bool {
        self.data.len() as u64 == self.seg_size
    }

    /// Appends the bytes streamed at `pos`, as far as this segment goes; returns how many
    /// were taken (the rest belongs to the next segment). Bytes already held are skipped.
    pub fn append(&mut self, pos: u64, bytes: &[u8]) -> Result<usize, Discontinuity> {
        let end = self.end();
        if pos > end {
            return Err(Discontinuity {
                expected: end,
                got: pos,
            });
        }
        let skip = ((end - pos) as usize).min(bytes.len());
        let room = (self.seg_size - self.data.len() as u64) as usize;
        let take = (bytes.len() - skip).min(room);
        self.data.extend_from_slice(&bytes[skip..skip + take]);
        Ok(skip + take)
    }

    /// The segment that follows this full one, on the same timeline.
    pub fn next(&self) -> Segment {
        Segment::new(self.tli, self.segno + 1, self.seg_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_the_segment_end_and_refuses_gaps() {
        let mut s = Segment::new(1, 2, 16);
        assert_eq!(s.name(), "000000010000000000000002");
        assert_eq!(s.append(32, &[1; 10]), Ok(10));
        // A resent overlap is skipped.
        assert_eq!(s.append(40, &[2; 4]), Ok(4));
        assert_eq!(s.end(), 44);
        assert_eq!(s.append(42, &[3; 20]), Ok(6));
        assert!(s.is_full());
        assert_eq!(&s.data[10..], &[2, 2, 3, 3, 3, 3]);
        let mut n = s.next();
        assert_eq!(
            n.append(50, &[0]),
            Err(Discontinuity {
                expected: 48,
                got: 50
            })
        );
    }
}
