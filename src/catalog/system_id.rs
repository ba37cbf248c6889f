//! System identifiers: which PostgreSQL cluster (initdb) a backup or WAL file belongs to.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// A cluster's system identifier. Stored as a decimal string: JSON readers lose precision on
/// 64-bit integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SystemId(pub u64);

/// A system identifier that is not a number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("system identifier {0:?} is not a number")]
pub struct BadSystemId(pub String);

impl SystemId {
    /// The identifier as a number.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for SystemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for SystemId {
    type Err = BadSystemId;
    fn from_str(s: &str) -> Result<SystemId, BadSystemId> {
        s.parse()
            .map(SystemId)
            .map_err(|_| BadSystemId(s.to_string()))
    }
}

impl Serialize for SystemId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SystemId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<SystemId, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_string_in_json_and_nothing_else() {
        let id = SystemId(7439421817328571234);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"7439421817328571234\"");
        assert_eq!(serde_json::from_str::<SystemId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<SystemId>("\"x\"").is_err());
        assert!(serde_json::from_str::<SystemId>("7").is_err());
        assert_eq!("42".parse::<SystemId>().unwrap(), SystemId(42));
        assert_eq!(
            "-1".parse::<SystemId>().unwrap_err().to_string(),
            "system identifier \"-1\" is not a number"
        );
    }
}
