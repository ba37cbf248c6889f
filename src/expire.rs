//! `expire`: deletes the backups a retention policy does not keep, and the WAL no kept backup
//! needs. Packs are left to gc.
//!
//! A backup disappears atomically with its manifest. WAL is cut per cluster below the start
//! of its oldest kept backup: recovery only moves forward, so nothing before that point can be
//! replayed by any kept backup, on any timeline. History files are always kept (they are
//! tiny, and recovery to a later timeline reads all of them). Backups marked with
//! `backup-keep`, and backups pinned by a running mount, verify or restore, are kept.

use crate::error::{Error, Result};
use crate::lock::{self, Lease};
use crate::pg::wal::{segment_of, segment_start, WalFile};
use crate::retention::{self, Candidate, Policy, Reason};
use crate::store::{keys, Repository, StoreError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};

#[derive(Debug, Serialize)]
pub struct Verdict {
    pub id: String,
    pub system_identifier: String,
    pub stop_time: DateTime<Utc>,
    pub keep: bool,
    /// Why it is kept; empty for a backup that goes.
    pub reasons: Vec<Reason>,
}

#[derive(Debug, Serialize)]
pub struct WalCut {
    pub system_identifier: String,
    /// WAL from this location on is kept, on every timeline.
    pub keep_from: String,
    pub files_removed: u64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub dry_run: bool,
    pub backups: Vec<Verdict>,
    pub wal: Vec<WalCut>,
    /// Manifests that could not be read: never expired, and while any exists no WAL is
    /// removed, since their needs are unknown.
    pub unreadable: Vec<String>,
}

/// `keep/<backup>`: the mark set by `pgsnapfs backup-keep`.
#[derive(Debug, Serialize, Deserialize)]
struct Mark {
    backup: String,
    marked: DateTime<Utc>,
}

/// Marks a backup so expire never deletes it, or (`on == false`) removes the mark.
pub fn mark(repo: &Repository, id: &str, on: bool) -> Result<()> {
    let key = keys::keep(id);
    if !on {
        if !repo.backend().exists(&key)? {
            return Err(Error::NotFound(format!(
                "backup {id} is not marked to keep"
            )));
        }
        return Ok(repo.backend().delete(&key)?);
    }
    repo.load_snapshot(id)?;
    if repo.backend().exists(&key)? {
        return Ok(());
    }
    let json = serde_json::to_vec_pretty(&Mark {
        backup: id.to_string(),
        marked: Utc::now(),
    })
    .expect("mark serializes");
    Ok(repo.put_sealed(&key, &json)?)
}

pub fn marks(repo: &Repository) -> Result<HashSet<String>> {
    Ok(repo
        .backend()
        .list(keys::KEEP)?
        .into_iter()
        .map(|k| k.trim_start_matches(keys::KEEP).to_string())
        .collect())
}

/// Backups pinned by live leases, with who pins them; an unreadable lease stops expire.
fn pins(repo: &Repository) -> Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    for r in lock::live(repo)? {
        for id in &r.pins {
            out.insert(id.clone(), format!("{} (lease {})", r.command, r.id));
        }
    }
    Ok(out)
}

/// Applies `policy`. `lease` is expire's exclusive lease (none for a dry run).
pub fn run(
    repo: &Repository,
    policy: &Policy,
    dry_run: bool,
    lease: Option<&Lease>,
) -> Result<Report> {
    let mut backups = Vec::new();
    let mut unreadable = Vec::new();
    for id in repo.snapshot_ids()? {
        match repo.load_snapshot(&id) {
            Ok(s) => backups.push(s),
            Err(StoreError::NoSuchBackup(_)) => {}
            Err(e) => {
                tracing::warn!("backup {id} is unreadable and is left alone: {e}");
                unreadable.push(id);
            }
        }
    }
    let candidates: Vec<Candidate> = backups
        .iter()
        .map(|s| Candidate {
            id: s.id.clone(),
            system: s.sysid(),
            stop_time: s.stop_time,
        })
        .collect();
    let verdicts = retention::decide(&candidates, policy, Utc::now(), &marks(repo)?, &pins(repo)?);
    backups.sort_by(|a, b| (a.stop_time, &a.id).cmp(&(b.stop_time, &b.id)));
    let doomed: Vec<String> = backups
        .iter()
        .filter(|s| verdicts[&s.id].is_empty())
        .map(|s| s.id.clone())
        .collect();
    let held = || lease.map_or(Ok(()), Lease::ensure_held);
    if !dry_run && !doomed.is_empty() {
        held()?;
        crate::gc::void_trash(repo, &doomed)?;
        for id in &doomed {
            held()?;
            repo.backend().delete(&keys::snapshot(id))?;
            tracing::info!(backup = %id, "expired");
        }
    }

    // WAL: below the oldest kept backup of each cluster.
    let mut cut_at: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for s in backups.iter().filter(|s| !verdicts[&s.id].is_empty()) {
        let seg = segment_of(s.start_lsn, s.wal_segment_size);
        let e = cut_at.entry(s.sysid()).or_insert((seg, s.wal_segment_size));
        e.0 = e.0.min(seg);
    }
    let mut wal = Vec::new();
    if unreadable.is_empty() {
        for (sysid, (first, seg_size)) in cut_at {
            let removed = cut_wal(repo, sysid, first, seg_size, dry_run, &held)?;
            wal.push(WalCut {
                system_identifier: sysid.to_string(),
                keep_from: segment_start(first, seg_size).to_string(),
                files_removed: removed,
            });
        }
    }
    Ok(Report {
        dry_run,
        backups: backups
            .iter()
            .map(|s| Verdict {
                id: s.id.clone(),
                system_identifier: s.system_identifier.clone(),
                stop_time: s.stop_time,
                keep: !verdicts[&s.id].is_empty(),
                reasons: verdicts[&s.id].clone(),
            })
            .collect(),
        wal,
        unreadable,
    })
}

/// Removes a cluster's WAL files (segments, partial and backup files) before segment
/// `first`, on every timeline. Summaries go first, the reverse of the order wal-push writes
/// them: a killed run leaves at most segments without summaries, removed by the next run.
fn cut_wal(
    repo: &Repository,
    sysid: u64,
    first: u64,
    seg_size: u64,
    dry_run: bool,
    held: &dyn Fn() -> Result<()>,
) -> Result<u64> {
    let before = |key: &str| match WalFile::parse(key.rsplit('/').next().unwrap_or(""), seg_size) {
        Some(WalFile::Segment { segno, .. })
        | Some(WalFile::Partial { segno, .. })
        | Some(WalFile::Backup { segno, .. }) => segno < first,
        Some(WalFile::History { .. }) | None => false,
    };
    let summaries = repo.backend().list(&keys::wal_summaries(sysid))?;
    let files = repo.backend().list(&keys::wal_system(sysid))?;
    let mut removed = 0;
    for key in summaries.iter().chain(&files).filter(|k| before(k)) {
        if !dry_run {
            held()?;
            repo.backend().delete(key)?;
        }
        if key.starts_with(keys::WAL) {
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::lsn::Lsn;
    use crate::store::backend::memory::MemoryBackend;
    use crate::store::snapshot::{self, Snapshot};
    use crate::store::tree::{BlobRef, Loc};
    use crate::store::{Backend, Id};
    use std::sync::Arc;

    const SEG: u64 = 16 << 20;

    /// Backups starting in segments 2, 5 and 8, a day apart; WAL segments 1–9 on timeline 1
    /// with summaries, and a history file.
    fn setup() -> (Arc<MemoryBackend>, Repository) {
        let mem = Arc::new(MemoryBackend::default());
        let repo = Repository::init(mem.clone(), 65536, 3).unwrap();
        let root = BlobRef {
            id: Id::of(b"root"),
            loc: Loc {
                pack: Id::of(b"pack"),
                offset: 8,
                stored_len: 1,
            },
            len: 1,
        };
        for (day, seg) in [(1, 2), (2, 5), (3, 8)] {
            let base = snapshot::sample(&format!("b{seg}"), root);
            repo.save_snapshot(&Snapshot {
                start_lsn: Lsn(seg * SEG + 40),
                stop_time: base.stop_time + chrono::Duration::days(day),
                ..base
            })
            .unwrap();
        }
        for segno in 1..10 {
            let name = WalFile::Segment { tli: 1, segno }.name(SEG);
            repo.put_sealed(&keys::wal_file(7, 1, &name), b"wal")
                .unwrap();
            repo.put_sealed(&format!("{}00000001/{name}", keys::wal_summaries(7)), b"{}")
                .unwrap();
        }
        repo.put_sealed(&keys::wal_file(7, 2, "00000002.history"), b"h")
            .unwrap();
        (mem, repo)
    }

    fn last(n: u32) -> Policy {
        Policy {
            last: n,
            ..Policy::default()
        }
    }

    fn wal_names(mem: &MemoryBackend) -> Vec<String> {
        mem.list("wal/7/")
            .unwrap()
            .iter()
            .map(|k| k.rsplit('/').next().unwrap()[16..].to_string())
            .collect()
    }

    #[test]
    fn expires_backups_and_the_wal_before_the_oldest_kept() {
        let (mem, repo) = setup();
        let before = mem.list("").unwrap();
        let dry = run(&repo, &last(2), true, None).unwrap();
        assert_eq!(
            mem.list("").unwrap(),
            before,
            "a dry run changed the repository"
        );
        assert_eq!(dry.wal[0].files_removed, 4);
        let lease = Lease::exclusive(&repo, "expire").unwrap();
        let report = run(&repo, &last(2), false, Some(&lease)).unwrap();
        let kept: Vec<_> = report
            .backups
            .iter()
            .map(|v| (v.id.as_str(), v.keep))
            .collect();
        assert_eq!(kept, vec![("b2", false), ("b5", true), ("b8", true)]);
        assert_eq!(repo.snapshot_ids().unwrap(), vec!["b5", "b8"]);
        assert_eq!(report.wal[0].keep_from, "0/5000000");
        // Segment 5 on is kept, and the history file (its name is shorter than a segment's).
        assert_eq!(
            wal_names(&mem),
            vec!["00000005", "00000006", "00000007", "00000008", "00000009", ""]
        );
        assert_eq!(mem.list(&keys::wal_summaries(7)).unwrap().len(), 5);
    }

    #[test]
    fn marked_and_pinned_backups_stay() {
        let (_mem, repo) = setup();
        mark(&repo, "b2", true).unwrap();
        let mount = Lease::shared(&repo, "mount").unwrap();
        mount.pin(&repo, &["b5".into()]).unwrap();
        let lease = Lease::exclusive(&repo, "expire").unwrap();
        let report = run(&repo, &last(1), false, Some(&lease)).unwrap();
        assert_eq!(repo.snapshot_ids().unwrap(), vec!["b2", "b5", "b8"]);
        assert_eq!(report.backups[0].reasons, vec![Reason::Marked]);
        assert!(
            matches!(&report.backups[1].reasons[0], Reason::Pinned(by) if by.starts_with("mount"))
        );
        assert_eq!(report.wal[0].files_removed, 1);
        mark(&repo, "b2", false).unwrap();
        drop(mount);
        run(&repo, &last(1), false, Some(&lease)).unwrap();
        assert_eq!(repo.snapshot_ids().unwrap(), vec!["b8"]);
        assert!(
            mark(&repo, "b2", true).is_err(),
            "marked a backup that is gone"
        );
        assert!(matches!(mark(&repo, "b2", false), Err(Error::NotFound(_))));
    }
}
