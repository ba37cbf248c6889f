//! The spool of asynchronous archiving: WAL files copied out of pg_wal and fsynced, waiting
//! for the pusher ([`crate::archiver`]) to send them to the repository.
//!
//! It is laid out like a data directory, so the pusher archives `<spool>/pg_wal/<file>` with
//! the same [`crate::archive::push`] as `wal-push`, which finds the cluster's identity in
//! `<spool>/global/pg_control`:
//!
//! ```text
//! <spool>/pg_wal/<file>           queued, complete and fsynced (renamed in from tmp/)
//! <spool>/global/pg_control       a copy of the cluster's, written when the queue is empty
//! <spool>/tmp/                    copies being written; left-overs are removed by the pusher
//! <spool>/dropped/<file>.json     a file dropped by --queue-max, until the repository has the marker
//! <spool>/status.json             the pusher's state, last error, counts (see [`Status`])
//! <spool>/pusher.lock             flock()ed by the one running pusher; holds its pid
//! <spool>/pusher.log              the log of a pusher started by `wal-push --async`
//! <spool>/wake                    a push asks a pusher waiting after a failure to retry now
//! ```
//!
//! Files are copied, never hard-linked: PostgreSQL recycles segment files by renaming and
//! overwriting them.

use crate::error::{io, Error, Result};
use crate::pg::control::ControlData;
use crate::pg::wal::{SegmentHeader, WalFile, DEFAULT_SEG_SIZE};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// One cluster's spool directory.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
}

/// A file waiting in the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// Its name, as in pg_wal.
    pub name: String,
    /// Its path in the spool.
    pub path: PathBuf,
    /// Its length.
    pub bytes: u64,
}

/// What the spool does with a file that would take it over its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Refuse it, so PostgreSQL keeps it in pg_wal and tries again (the default).
    Block(u64),
    /// Drop it, with a marker reported as a gap (`--queue-max`).
    Drop(u64),
}

/// What `enqueue` did with a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Enqueued {
    /// Copied into the queue and fsynced.
    Queued,
    /// The same bytes were already queued.
    AlreadyQueued,
    /// Over `--queue-max`: not queued, a drop marker written instead.
    Dropped,
}

/// A WAL file the spool dropped, as the marker in the spool and in the repository records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropMarker {
    /// The cluster, from the segment's header or pg_control; 0 when neither was readable.
    pub system_identifier: u64,
    /// The file's name.
    pub name: String,
    /// Its length.
    pub bytes: u64,
    /// When it was dropped.
    pub dropped_at: DateTime<Utc>,
    /// The `--queue-max` in force, and what the queue held then.
    pub queue_max: u64,
    /// Bytes queued when it was dropped.
    pub queued_bytes: u64,
}

/// The pusher's state as it last wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The pusher's process id.
    pub pid: u32,
    /// When it wrote this.
    pub updated: DateTime<Utc>,
    /// Since when its pushes have failed without a success; `None` while they succeed.
    pub failing_since: Option<DateTime<Utc>>,
    /// The error of its last failed push, kept after a later success for the record.
    pub last_error: Option<String>,
    /// When that error happened.
    pub last_error_at: Option<DateTime<Utc>>,
    /// The last file it archived.
    pub last_archived: Option<String>,
    /// When.
    pub last_archived_at: Option<DateTime<Utc>>,
    /// Files and bytes it archived since it started.
    pub archived_files: u64,
    /// Bytes of those.
    pub archived_bytes: u64,
}

impl Spool {
    /// The spool at `dir`, created (0700) with its subdirectories if missing.
    pub fn open(dir: &Path) -> Result<Spool> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = std::path::absolute(dir).map_err(io(format!("resolve {}", dir.display())))?;
        for sub in ["pg_wal", "global", "tmp", "dropped"] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir.join(sub))
                .map_err(io(format!(
                    "create spool directory {}",
                    dir.join(sub).display()
                )))?;
        }
        Ok(Spool { dir })
    }

    /// The spool's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn wal_dir(&self) -> PathBuf {
        self.dir.join("pg_wal")
    }

    /// The lock file the running pusher holds.
    pub fn lock_path(&self) -> PathBuf {
        self.dir.join("pusher.lock")
    }

    /// The log of an automatically started pusher.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("pusher.log")
    }

    /// The queued files, in the order recovery needs them (see [`need_order`]).
    pub fn queued(&self) -> Result<Vec<Queued>> {
        let dir = self.wal_dir();
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io(format!("list {}", dir.display())))? {
            let entry = entry.map_err(io(format!("list {}", dir.display())))?;
            let Some(name) = entry.file_name().to_str().map(String::from) else {
                continue;
            };
            // Taken by the pusher between the listing and the stat: no longer queued.
            let Ok(meta) = entry.metadata() else { continue };
            out.push(Queued {
                path: entry.path(),
                name,
                bytes: meta.len(),
            });
        }
        out.sort_by_key(|q| need_order(&q.name));
        Ok(out)
    }

    /// Copies WAL file `src` (in a data directory's pg_wal) into the queue, durably: copy,
    /// fsync, rename, fsync the directory. Over `limit`, refuses it or drops it.
    pub fn enqueue(&self, src: &Path, limit: Limit) -> Result<Enqueued> {
        let name = src
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| WalFile::parse(n, DEFAULT_SEG_SIZE).is_some())
            .ok_or_else(|| {
                Error::BadInput(format!(
                    "{} is not a WAL segment, history or backup file name",
                    src.display()
                ))
            })?;
        let data = std::fs::read(src).map_err(io(format!("read {}", src.display())))?;
        let header = SegmentHeader::parse(&data).ok();
        let pgdata = src
            .parent()
            .and_then(Path::parent)
            .unwrap_or(Path::new("."));
        let control = std::fs::read(pgdata.join("global/pg_control")).ok();
        let sysid = header
            .as_ref()
            .filter(|_| is_segment(name))
            .map(|h| h.system_identifier)
            .or_else(|| {
                let c = control.as_deref()?;
                ControlData::parse(c).ok().map(|c| c.system_identifier)
            });
        let queue = self.queued()?;
        let dest = self.wal_dir().join(name);
        if let Some(q) = queue.iter().find(|q| q.name == name) {
            if q.bytes == data.len() as u64 && std::fs::read(&q.path).ok().as_ref() == Some(&data) {
                return Ok(Enqueued::AlreadyQueued);
            }
        }
        let queued_bytes: u64 = queue
            .iter()
            .filter(|q| q.name != name)
            .map(|q| q.bytes)
            .sum();
        self.check_cluster(sysid, queue.is_empty())?;
        match limit {
            Limit::Block(max) if queued_bytes + data.len() as u64 > max => {
                return Err(Error::ArchiveQueue(format!(
                    "the spool {} holds {queued_bytes} bytes, over its limit of {max} \
                     (--spool-max): {name} stays in pg_wal and PostgreSQL will try again. The \
                     pusher is not keeping up or cannot reach the repository: see `pgsnapfs \
                     archive-status --spool {}`",
                    self.dir.display(),
                    self.dir.display()
                )))
            }
            Limit::Drop(max) if queued_bytes + data.len() as u64 > max => {
                let marker = DropMarker {
                    system_identifier: sysid.unwrap_or(0),
                    name: name.to_string(),
                    bytes: data.len() as u64,
                    dropped_at: Utc::now(),
                    queue_max: max,
                    queued_bytes,
                };
                let json = serde_json::to_vec_pretty(&marker).expect("marker serializes");
                self.write_durably(
                    &self.dir.join("dropped").join(format!("{name}.json")),
                    &json,
                )?;
                return Ok(Enqueued::Dropped);
            }
            _ => {}
        }
        if let Some(c) = control.filter(|_| queue.is_empty()) {
            self.write_durably(&self.dir.join("global/pg_control"), &c)?;
        }
        self.write_durably(&dest, &data)?;
        Ok(Enqueued::Queued)
    }

    /// Refuses a file of another cluster than the spool's, unless the queue is empty (then
    /// the spool's pg_control is replaced by this cluster's).
    fn check_cluster(&self, sysid: Option<u64>, queue_empty: bool) -> Result<()> {
        if queue_empty {
            return Ok(());
        }
        let theirs = std::fs::read(self.dir.join("global/pg_control"))
            .ok()
            .and_then(|b| ControlData::parse(&b).ok())
            .map(|c| c.system_identifier);
        match (sysid, theirs) {
            (Some(ours), Some(theirs)) if ours != theirs => Err(Error::BadInput(format!(
                "the spool {} holds WAL of the cluster with system identifier {theirs}, not of \
                 this one ({ours}); give each cluster a spool of its own",
                self.dir.display()
            ))),
            _ => Ok(()),
        }
    }

    /// Writes `path` atomically and durably: a temporary file in tmp/, fsync, rename, fsync
    /// of the directory.
    fn write_durably(&self, path: &Path, data: &[u8]) -> Result<()> {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
        let tmp = self
            .dir
            .join("tmp")
            .join(format!("{name}.{}", std::process::id()));
        let mut f = File::create(&tmp).map_err(io(format!("create {}", tmp.display())))?;
        f.write_all(data)
            .and_then(|()| f.sync_all())
            .map_err(io(format!("write {}", tmp.display())))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(io(format!("rename to {}", path.display())))?;
        let parent = path.parent().unwrap_or(&self.dir);
        File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(io(format!("fsync {}", parent.display())))
    }

    /// Removes a queued file once the repository has it, unless it was replaced meanwhile
    /// (`ino` is the inode that was archived).
    pub fn remove(&self, q: &Queued, ino: u64) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        match std::fs::metadata(&q.path) {
            Ok(m) if m.ino() == ino => {
                std::fs::remove_file(&q.path).map_err(io(format!("remove {}", q.path.display())))
            }
            _ => Ok(()),
        }
    }

    /// Removes copies that a killed push left in tmp/ (only the pusher, which runs alone,
    /// calls this; a push in progress renames its copy within milliseconds, so only files
    /// older than a minute go).
    pub fn clean_tmp(&self) {
        let Ok(entries) = std::fs::read_dir(self.dir.join("tmp")) else {
            return;
        };
        for e in entries.flatten() {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age.as_secs() > 60);
            if old {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// The drop markers waiting to be written to the repository.
    pub fn drops(&self) -> Result<Vec<(PathBuf, DropMarker)>> {
        let dir = self.dir.join("dropped");
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io(format!("list {}", dir.display())))? {
            let path = entry.map_err(io(format!("list {}", dir.display())))?.path();
            let bytes = std::fs::read(&path).map_err(io(format!("read {}", path.display())))?;
            let marker: DropMarker = serde_json::from_slice(&bytes).map_err(|e| {
                Error::BadInput(format!(
                    "drop marker {} is unreadable ({e}); remove it once you have noted the gap",
                    path.display()
                ))
            })?;
            out.push((path, marker));
        }
        out.sort_by(|a, b| a.1.name.cmp(&b.1.name));
        Ok(out)
    }

    /// The pusher's last status, if it wrote one.
    pub fn status(&self) -> Option<Status> {
        let bytes = std::fs::read(self.dir.join("status.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Replaces the status (atomically; not fsynced: it is rewritten often and a lost one only
    /// delays a report).
    pub fn write_status(&self, s: &Status) -> Result<()> {
        let tmp = self.dir.join("tmp/status.json");
        let json = serde_json::to_vec_pretty(s).expect("status serializes");
        std::fs::write(&tmp, json).map_err(io(format!("write {}", tmp.display())))?;
        let path = self.dir.join("status.json");
        std::fs::rename(&tmp, &path).map_err(io(format!("rename to {}", path.display())))
    }

    /// Asks a pusher waiting after a failure to try again now.
    pub fn wake(&self) {
        let _ = File::create(self.dir.join("wake"));
    }

    /// Whether a push asked for a new attempt since the last call.
    pub fn take_wake(&self) -> bool {
        std::fs::remove_file(self.dir.join("wake")).is_ok()
    }

    /// The pusher's lock: `Some` (held, pid written) if no pusher runs on this spool.
    pub fn try_lock(&self) -> Result<Option<File>> {
        let path = self.lock_path();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io(format!("open {}", path.display())))?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Ok(None);
        }
        f.set_len(0)
            .and_then(|()| writeln!(f, "{}", std::process::id()))
            .map_err(io(format!("write {}", path.display())))?;
        Ok(Some(f))
    }

    /// The pid of the running pusher, if one runs.
    pub fn pusher_pid(&self) -> Option<u32> {
        let path = self.lock_path();
        let f = File::open(&path).ok()?;
        // SAFETY: flock on a descriptor this function owns.
        let free = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } == 0;
        if free {
            return None;
        }
        std::fs::read_to_string(&path).ok()?.trim().parse().ok()
    }
}

fn is_segment(name: &str) -> bool {
    matches!(
        WalFile::parse(name, DEFAULT_SEG_SIZE),
        Some(WalFile::Segment { .. } | WalFile::Partial { .. })
    )
}

/// The order in which recovery needs files: history files first (a timeline's history before
/// any segment of it), then by position in the WAL (segment number, then timeline), so the
/// oldest WAL reaches the repository first.
pub fn need_order(name: &str) -> (u8, String) {
    match WalFile::parse(name, DEFAULT_SEG_SIZE) {
        Some(WalFile::History { .. }) => (0, name.to_string()),
        _ if name.len() >= 24 => (1, format!("{}{}{}", &name[8..24], &name[..8], &name[24..])),
        _ => (2, name.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_first_then_oldest_position() {
        let mut names = vec![
            "000000020000000000000005",
            "000000010000000000000004.00000028.backup",
            "000000010000000000000005.partial",
            "00000002.history",
            "000000010000000000000004",
            "000000010000000000000003",
        ];
        names.sort_by_key(|n| need_order(n));
        assert_eq!(
            names,
            [
                "00000002.history",
                "000000010000000000000003",
                "000000010000000000000004",
                "000000010000000000000004.00000028.backup",
                "000000010000000000000005.partial",
                "000000020000000000000005",
            ]
        );
    }

    fn segment(tli: u32, segno: u64) -> Vec<u8> {
        // A long page header of PostgreSQL 15 (magic 0xD110) for a 16 MiB segment.
        let mut d = vec![0u8; 16 << 20];
        d[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
        d[2..4].copy_from_slice(&2u16.to_le_bytes()); // XLP_LONG_HEADER
        d[4..8].copy_from_slice(&tli.to_le_bytes());
        d[8..16].copy_from_slice(&(segno * (16 << 20)).to_le_bytes());
        d[24..32].copy_from_slice(&7u64.to_le_bytes());
        d[32..36].copy_from_slice(&(16u32 << 20).to_le_bytes());
        d[36..40].copy_from_slice(&8192u32.to_le_bytes());
        d
    }

    #[test]
    fn enqueue_copies_dedups_blocks_and_drops() {
        let t = std::env::temp_dir().join(format!("pgsnapfs-spool-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&t);
        let pg_wal = t.join("data/pg_wal");
        std::fs::create_dir_all(&pg_wal).unwrap();
        let spool = Spool::open(&t.join("spool")).unwrap();
        let (a, b) = (
            pg_wal.join("000000010000000000000003"),
            pg_wal.join("000000010000000000000004"),
        );
        std::fs::write(&a, segment(1, 3)).unwrap();
        std::fs::write(&b, segment(1, 4)).unwrap();
        let max = 20 << 20;
        assert_eq!(
            spool.enqueue(&a, Limit::Block(max)).unwrap(),
            Enqueued::Queued
        );
        assert_eq!(
            spool.enqueue(&a, Limit::Block(max)).unwrap(),
            Enqueued::AlreadyQueued
        );
        // The queued copy is independent of pg_wal's file, which PostgreSQL will recycle.
        std::fs::write(&a, b"recycled").unwrap();
        assert_eq!(spool.queued().unwrap()[0].bytes, 16 << 20);
        assert!(matches!(
            spool.enqueue(&b, Limit::Block(max)),
            Err(Error::ArchiveQueue(_))
        ));
        assert_eq!(
            spool.enqueue(&b, Limit::Drop(max)).unwrap(),
            Enqueued::Dropped
        );
        let drops = spool.drops().unwrap();
        assert_eq!(drops.len(), 1);
        assert_eq!(drops[0].1.name, "000000010000000000000004");
        assert_eq!(drops[0].1.system_identifier, 7);
        assert_eq!(spool.queued().unwrap().len(), 1);
        assert!(spool
            .enqueue(&pg_wal.join("junk"), Limit::Block(max))
            .is_err());
        std::fs::remove_dir_all(&t).unwrap();
    }
}
