//! How far a follower is behind the archive, without connecting to its server: the segment
//! its startup process replays or waits for (its process title), against the newest
//! archived segment of that timeline, and the newest commit time each one holds (from the
//! segments' summaries). Segment granularity: a follower waiting for the next segment is
//! caught up with what was archived.

use crate::archive::{self, SummaryCache};
use crate::error::Result;
use crate::pg::wal::{segment_name, WalFile};
use crate::store::Repository;
use serde::Serialize;

/// A follower's lag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lag {
    /// The segment the follower replays, or waits for.
    pub segment: String,
    /// Whether it waits for that segment (replayed everything before it).
    pub waiting: bool,
    /// The newest archived segment of its timeline.
    pub newest_archived: Option<String>,
    /// Archived segments not replayed yet.
    pub segments_behind: u64,
    /// Seconds between the newest commit it replayed and the newest archived commit, as far
    /// as the segments' summaries tell.
    pub seconds_behind: Option<i64>,
}

/// What the startup process's title says: the segment, and whether it waits for it.
/// `postgres: [cluster: ]startup recovering 000000010000000000000005` or `... waiting for ...`.
pub fn parse_title(title: &str) -> Option<(String, bool)> {
    let rest = &title[title.find("startup ")? + "startup ".len()..];
    let waiting = rest.starts_with("waiting for ");
    if !waiting && !rest.starts_with("recovering ") {
        return None;
    }
    let segment = rest.split_whitespace().last()?;
    (segment.len() == 24 && segment.chars().all(|c| c.is_ascii_hexdigit()))
        .then(|| (segment.to_string(), waiting))
}

/// The title of the startup process among the children of `postmaster`.
fn startup_title(postmaster: u32) -> Option<String> {
    let parent = postmaster.to_string();
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|st| {
                st.rsplit(')')
                    .next()
                    .and_then(|r| r.split_whitespace().nth(1))
                    == Some(parent.as_str())
            })
        })
        .filter_map(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).ok())
        .map(|c| {
            String::from_utf8_lossy(&c)
                .replace('\0', " ")
                .trim()
                .to_string()
        })
        .find(|title| parse_title(title).is_some())
}

/// The lag of the follower whose postmaster is `postmaster`, of cluster `sysid`; None when
/// its startup process says nothing (not in recovery, or titles turned off).
pub fn lag(repo: &Repository, sysid: u64, postmaster: u32) -> Result<Option<Lag>> {
    let Some((segment, waiting)) = startup_title(postmaster).as_deref().and_then(parse_title)
    else {
        return Ok(None);
    };
    let Some(system) = archive::load_system(repo, sysid)? else {
        return Ok(None);
    };
    let seg_size = archive::segment_size(&system);
    let Some(WalFile::Segment { tli, segno }) = WalFile::parse(&segment, seg_size) else {
        return Ok(None);
    };
    let catalog = archive::catalog(repo, &system)?;
    let newest = catalog
        .iter()
        .find(|t| t.timeline == tli)
        .and_then(|t| t.segnos.last().copied());
    // Waiting for a segment: every one before it is replayed.
    let replayed = if waiting {
        segno.checked_sub(1)
    } else {
        Some(segno)
    };
    let behind = match (newest, replayed) {
        (Some(n), Some(r)) => n.saturating_sub(r),
        (Some(n), None) => n + 1,
        (None, _) => 0,
    };
    let mut sums = SummaryCache::new(repo, sysid, seg_size, true).with_catalog(&catalog);
    let mut last_commit = |upto: u64| -> Result<Option<i64>> {
        // The newest segment at or below `upto` with a commit, within a few segments.
        for s in (upto.saturating_sub(16)..=upto).rev() {
            if let Some(t) = sums.get(tli, s)?.and_then(|s| s.last_commit_time) {
                return Ok(Some(t));
            }
        }
        Ok(None)
    };
    let seconds_behind = match (newest, replayed) {
        (Some(n), Some(r)) if n > r => match (last_commit(n)?, last_commit(r)?) {
            (Some(a), Some(b)) => Some((a - b).max(0) / 1_000_000),
            _ => None,
        },
        (Some(_), Some(_)) => Some(0),
        _ => None,
    };
    Ok(Some(Lag {
        segment,
        waiting,
        newest_archived: newest.map(|n| segment_name(tli, n, seg_size)),
        segments_behind: behind,
        seconds_behind,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_titles() {
        assert_eq!(
            parse_title("postgres: startup recovering 000000010000000000000005"),
            Some(("000000010000000000000005".into(), false))
        );
        assert_eq!(
            parse_title("postgres: main: startup waiting for 00000002000000000000000A"),
            Some(("00000002000000000000000A".into(), true))
        );
        assert_eq!(parse_title("postgres: checkpointer"), None);
        assert_eq!(parse_title("postgres: startup recovering"), None);
        assert_eq!(parse_title("postgres: startup "), None);
    }
}
