//! The record of verified objects, kept on the machine that runs `check`.

use super::*;

/// The record of verified objects for repository `repo_id`, if a state directory is known:
/// the one given, else `$XDG_STATE_HOME/pgsnapfs`, else `~/.local/state/pgsnapfs`.
pub fn record_path(state_dir: Option<PathBuf>, repo_id: &str) -> Option<PathBuf> {
    let dir = state_dir.or_else(|| {
        let env = |k| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        env("XDG_STATE_HOME")
            .or_else(|| env("HOME").map(|h| h.join(".local/state")))
            .map(|d| d.join("pgsnapfs"))
    })?;
    Some(dir.join(repo_id).join("verified"))
}

/// Seconds since the Unix epoch.
pub(super) fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Objects an earlier run read and found intact, as `key size unix-seconds` lines, on the
/// machine that ran the check rather than in the repository: the record must not live in the
/// thing it vouches for, and `check` stays read-only (read-only credentials suffice). A lost
/// record only costs a re-read. An entry counts only while the object still has the recorded
/// size and for `REVERIFY_AFTER_SECS`.
pub(super) struct Record {
    path: PathBuf,
    verified: HashMap<String, (u64, i64)>,
    append: Option<std::fs::File>,
}

impl Record {
    pub(super) fn load(path: &Path) -> Result<Record> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io(format!("read {}", path.display()))(e)),
        };
        Ok(Record {
            path: path.to_path_buf(),
            verified: parse_record(&text),
            append: None,
        })
    }

    pub(super) fn is_fresh(&self, key: &str, size: u64, now: i64) -> bool {
        self.verified
            .get(key)
            .is_some_and(|&(s, t)| s == size && now - t < REVERIFY_AFTER_SECS)
    }

    /// Appends at once, so an interrupted check keeps what it verified.
    pub(super) fn add(&mut self, key: &str, size: u64, now: i64) -> Result<()> {
        let what = || format!("write {}", self.path.display());
        if self.append.is_none() {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir).map_err(io(what()))?;
            }
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(io(what()))?;
            self.append = Some(f);
        }
        let f = self.append.as_mut().expect("opened above");
        writeln!(f, "{key} {size} {now}").map_err(io(what()))?;
        self.verified.insert(key.to_string(), (size, now));
        Ok(())
    }

    /// Rewrites the record without expired entries (which also drops deleted objects).
    pub(super) fn compact(self, now: i64) -> Result<()> {
        let mut text = String::new();
        let mut keys: Vec<_> = self.verified.iter().collect();
        keys.sort();
        for (key, (size, t)) in keys {
            if now - t < REVERIFY_AFTER_SECS {
                text.push_str(&format!("{key} {size} {t}\n"));
            }
        }
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, text).map_err(io(format!("write {}", tmp.display())))?;
        std::fs::rename(&tmp, &self.path).map_err(io(format!("rename {}", tmp.display())))
    }
}

/// Later lines win; malformed lines are ignored (the object is then simply read again).
pub(super) fn parse_record(text: &str) -> HashMap<String, (u64, i64)> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            let (key, size, t) = (f.next()?, f.next()?.parse().ok()?, f.next()?.parse().ok()?);
            Some((key.to_string(), (size, t)))
        })
        .collect()
}
