//! Log sequence numbers: byte positions in the WAL stream.
//! Key type: `Lsn`, shown and parsed as PostgreSQL does ("16/B374D848").
//! Decision: serde uses that same text form, so stored JSON reads like
//! PostgreSQL output and survives any JSON number precision limits.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Error;

/// A WAL position (XLogRecPtr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl FromStr for Lsn {
    type Err = Error;

    /// Accepts what pg_lsn_in accepts: 1–8 hex digits, '/', 1–8 hex digits.
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::Lsn(s.to_string());
        let (hi, lo) = s.split_once('/').ok_or_else(bad)?;
        let part = |p: &str| {
            if p.is_empty() || p.len() > 8 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            u64::from_str_radix(p, 16).map_err(|_| bad())
        };
        Ok(Lsn(part(hi)? << 32 | part(lo)?))
    }
}

impl Serialize for Lsn {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Lsn {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_matches_postgres() {
        assert_eq!(Lsn(0x16_B374_D848).to_string(), "16/B374D848");
        assert_eq!(Lsn(0x200_0028).to_string(), "0/2000028");
        assert_eq!(Lsn(0).to_string(), "0/0");
        assert_eq!(Lsn(u64::MAX).to_string(), "FFFFFFFF/FFFFFFFF");
    }

    #[test]
    fn parse_roundtrip_and_case() {
        assert_eq!("16/B374D848".parse::<Lsn>().unwrap(), Lsn(0x16_B374_D848));
        assert_eq!("16/b374d848".parse::<Lsn>().unwrap(), Lsn(0x16_B374_D848));
        assert_eq!("0/02000028".parse::<Lsn>().unwrap(), Lsn(0x200_0028));
        for v in [0u64, 1, 0x1_0000_0000, u64::MAX, 0xDEAD_BEEF_0000_0001] {
            assert_eq!(Lsn(v).to_string().parse::<Lsn>().unwrap(), Lsn(v));
        }
    }

    #[test]
    fn parse_rejects_malformed() {
        for s in [
            "",
            "/",
            "1/",
            "/1",
            "1",
            "1/2/3",
            "123456789/0",
            "0/123456789",
            " 1/2",
            "1/2 ",
            "g/1",
            "+1/2",
            "1/-2",
        ] {
            assert_eq!(s.parse::<Lsn>(), Err(Error::Lsn(s.to_string())), "{s:?}");
        }
    }

    #[test]
    fn ordering_follows_position() {
        assert!(Lsn(0xFFFF_FFFF) < Lsn(0x1_0000_0000));
    }

    #[test]
    fn serde_as_string() {
        let json = serde_json::to_string(&Lsn(0x16_B374_D848)).unwrap();
        assert_eq!(json, "\"16/B374D848\"");
        assert_eq!(
            serde_json::from_str::<Lsn>("\"16/b374d848\"").unwrap(),
            Lsn(0x16_B374_D848)
        );
        assert!(serde_json::from_str::<Lsn>("\"zz\"").is_err());
        assert!(serde_json::from_str::<Lsn>("12").is_err());
    }
}
