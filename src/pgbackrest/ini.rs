//! pgBackRest's info files (`backup.info`, `archive.info`, `backup.manifest`): INI sections
//! whose values are JSON, sealed by `[backrest] backrest-checksum`, the SHA-1 of the whole
//! content rendered as one JSON object (sections and keys in file order, the checksum left
//! out). A file whose checksum does not match is corrupt.

use super::Error;
use serde::de::DeserializeOwned;
use sha1::{Digest, Sha1};

/// A parsed info file: its sections in file order, each with its keys and raw JSON values.
#[derive(Debug, Clone, Default)]
pub struct Ini {
    sections: Vec<(String, Vec<(String, String)>)>,
}

const BACKREST: &str = "backrest";
const CHECKSUM: &str = "backrest-checksum";

impl Ini {
    /// Parses `text` and checks its checksum; `object` names the file in errors.
    pub fn parse(text: &str, object: &str) -> Result<Ini, Error> {
        let bad = |reason: String| Error::corrupt(object, reason);
        let mut ini = Ini::default();
        let mut checksum = None;
        let mut current: Option<usize> = None;
        for (n, line) in text.lines().enumerate() {
            if line.is_empty() {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                // The checksum comes in a second [backrest] section at the end.
                current = Some(match ini.sections.iter().position(|(s, _)| s == name) {
                    Some(i) => i,
                    None => {
                        ini.sections.push((name.to_string(), Vec::new()));
                        ini.sections.len() - 1
                    }
                });
                continue;
            }
            let (key, value) = line
                .split_once('=')
                .ok_or_else(|| bad(format!("line {} is neither a section nor a key", n + 1)))?;
            let i =
                current.ok_or_else(|| bad(format!("line {} comes before any section", n + 1)))?;
            let (section, entries) = &mut ini.sections[i];
            if section == BACKREST && key == CHECKSUM {
                checksum = Some(value.to_string());
                continue;
            }
            entries.push((key.to_string(), value.to_string()));
        }
        let recorded: String = match checksum {
            Some(c) => serde_json::from_str(&c).map_err(|e| bad(format!("{CHECKSUM}: {e}")))?,
            None => return Err(bad(format!("no {CHECKSUM}: the file is truncated"))),
        };
        let actual = ini.checksum();
        if recorded != actual {
            return Err(bad(format!(
                "checksum {actual} does not match the recorded {recorded}"
            )));
        }
        Ok(ini)
    }

    /// The SHA-1 pgBackRest seals the file with.
    fn checksum(&self) -> String {
        let json = |s: &str| serde_json::to_string(s).expect("a string serializes");
        let mut out = String::from("{");
        for (i, (section, entries)) in self.sections.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&json(section));
            out.push_str(":{");
            for (j, (key, value)) in entries.iter().enumerate() {
                if j > 0 {
                    out.push(',');
                }
                out.push_str(&json(key));
                out.push(':');
                out.push_str(value);
            }
            out.push('}');
        }
        out.push('}');
        hex::encode(Sha1::digest(out.as_bytes()))
    }

    /// The keys and raw values of `section` (empty if it is absent).
    pub fn section(&self, section: &str) -> &[(String, String)] {
        self.sections
            .iter()
            .find(|(s, _)| s == section)
            .map(|(_, e)| e.as_slice())
            .unwrap_or(&[])
    }

    /// The raw JSON of `section`'s `key`.
    pub fn raw(&self, section: &str, key: &str) -> Option<&str> {
        self.section(section)
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `section`'s `key` decoded; `Ok(None)` if absent.
    pub fn get<T: DeserializeOwned>(
        &self,
        section: &str,
        key: &str,
        object: &str,
    ) -> Result<Option<T>, Error> {
        self.raw(section, key)
            .map(|v| decode(v, &format!("[{section}] {key}"), object))
            .transpose()
    }

    /// `section`'s `key` decoded; an absent key is corruption.
    pub fn need<T: DeserializeOwned>(
        &self,
        section: &str,
        key: &str,
        object: &str,
    ) -> Result<T, Error> {
        self.get(section, key, object)?
            .ok_or_else(|| Error::corrupt(object, format!("no [{section}] {key}")))
    }
}

/// Decodes one JSON value; `what` names it in the error.
pub fn decode<T: DeserializeOwned>(value: &str, what: &str, object: &str) -> Result<T, Error> {
    serde_json::from_str(value).map_err(|e| Error::corrupt(object, format!("{what}: {e}")))
}
