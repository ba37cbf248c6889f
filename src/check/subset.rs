//! Which objects `--read-data` reads this time: all, a percentage, or a slice.

use super::*;

/// Which objects `--read-data` reads this time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Subset {
    /// Everything.
    All,
    /// The `n`-th (1-based) of `m` fixed slices, by the SHA-256 of the object's key: running
    /// 1/m … m/m on successive days reads everything once.
    Slice {
        /// Which slice, from 1.
        n: u64,
        /// Into how many slices.
        m: u64,
    },
    /// A random share, in hundredths of a percent, drawn anew each run.
    Percent {
        /// The share, in hundredths of a percent (10000 is everything).
        hundredths: u32,
    },
}

impl Subset {
    /// Parses `N/M` or `P%` (`2.5%` allowed).
    pub fn parse(s: &str) -> std::result::Result<Subset, String> {
        let bad = || format!("{s:?} is not a subset such as 1/10 or 10%");
        if let Some(p) = s.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| bad())?;
            if !(p > 0.0 && p <= 100.0) {
                return Err(format!(
                    "{s:?}: the percentage must be above 0 and at most 100"
                ));
            }
            return Ok(Subset::Percent {
                hundredths: (p * 100.0).round().max(1.0) as u32,
            });
        }
        let (n, m) = s.split_once('/').ok_or_else(bad)?;
        let (n, m): (u64, u64) = (
            n.trim().parse().map_err(|_| bad())?,
            m.trim().parse().map_err(|_| bad())?,
        );
        if m == 0 || n == 0 || n > m {
            return Err(format!("{s:?}: N/M needs 1 <= N <= M"));
        }
        Ok(Subset::Slice { n, m })
    }

    /// Whether `key` is in the subset; `seed` varies the random share between runs.
    pub fn selects(&self, key: &str, seed: u64) -> bool {
        let h = |salt: &[u8]| {
            let mut buf = salt.to_vec();
            buf.extend_from_slice(key.as_bytes());
            u64::from_be_bytes(BlobId::of(&buf).0[..8].try_into().expect("8 bytes")) as u128
        };
        match *self {
            Subset::All => true,
            Subset::Slice { n, m } => (h(b"") * m as u128) >> 64 == (n - 1) as u128,
            Subset::Percent { hundredths } => {
                (h(&seed.to_le_bytes()) * 10_000) >> 64 < hundredths as u128
            }
        }
    }
}
