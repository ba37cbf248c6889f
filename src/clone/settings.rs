//! A clone's own record, `clone.json` in its directory: which repository, backup and point
//! in time it is of, and how its data directory is mounted. Written once, at create.

use crate::error::{io, Error, Result};
use crate::pg::target::Target;
use crate::pitr::{Goal, Point};
use crate::walpath::TimelineChoice;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

/// The record's format version.
pub const VERSION: u32 = 1;

/// The point a clone is of, as chosen at create: later mounts recover to exactly it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum StoredPoint {
    /// The backup as it ended.
    Backup(String),
    /// recovery_target_time, RFC 3339.
    Time(String),
    /// recovery_target_lsn.
    Lsn(String),
    /// recovery_target_name.
    Name(String),
    /// recovery_target_xid.
    Xid(u32),
}

impl StoredPoint {
    /// The point `goal` names, with `backup` the id a `latest` resolved to. `None`: the goal
    /// names no fixed point (the latest state moves as WAL arrives).
    pub fn of(point: &Point, backup: &str) -> Option<StoredPoint> {
        Some(match point {
            Point::Backup(_) => StoredPoint::Backup(backup.to_string()),
            Point::Latest => return None,
            Point::Target(Target::Immediate) => StoredPoint::Backup(backup.to_string()),
            Point::Target(Target::Time(t)) => StoredPoint::Time(t.to_rfc3339()),
            Point::Target(Target::Lsn(l)) => StoredPoint::Lsn(l.to_string()),
            Point::Target(Target::Name(n)) => StoredPoint::Name(n.clone()),
            Point::Target(Target::Xid(x)) => StoredPoint::Xid(*x),
        })
    }

    fn point(&self, record: &Path) -> Result<Point> {
        let bad = |what: &str| {
            Error::BadInput(format!(
                "{}: {what} is not a recovery target; the record was edited or damaged",
                record.display()
            ))
        };
        Ok(match self {
            StoredPoint::Backup(id) => Point::Backup(id.clone()),
            StoredPoint::Time(t) => Point::Target(Target::Time(
                DateTime::parse_from_rfc3339(t).map_err(|_| bad(t))?,
            )),
            StoredPoint::Lsn(l) => Point::Target(Target::Lsn(l.parse().map_err(|_| bad(l))?)),
            StoredPoint::Name(n) => Point::Target(Target::Name(n.clone())),
            StoredPoint::Xid(x) => Point::Target(Target::Xid(*x)),
        })
    }

    /// For people: "backup B", "time T", ...
    pub fn describe(&self) -> String {
        match self {
            StoredPoint::Backup(id) => format!("backup {id}"),
            StoredPoint::Time(t) => format!("time {t}"),
            StoredPoint::Lsn(l) => format!("LSN {l}"),
            StoredPoint::Name(n) => format!("restore point {n}"),
            StoredPoint::Xid(x) => format!("transaction {x}"),
        }
    }
}

/// `clone.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    /// [`VERSION`].
    pub version: u32,
    /// The clone's name (its directory's).
    pub name: String,
    /// The repository, as given (local paths absolute).
    pub repo: String,
    /// The repository's id: a clone is never mounted from another repository.
    pub repo_id: String,
    /// The cluster (system identifier).
    pub system: u64,
    /// The backup the clone starts from.
    pub backup: String,
    /// The point in time.
    pub point: StoredPoint,
    /// The timeline recovery follows.
    pub timeline: u32,
    /// A follower: its server is a standby replaying the archived WAL as it comes, from
    /// `backup`, until `clone promote`.
    #[serde(default)]
    pub follow: bool,
    /// Hydrated: every mount copies what is left of the clone's files to local disk in the
    /// background (see [`super::hydration`]).
    #[serde(default)]
    pub hydrate: bool,
    /// The most hydration copies per second (None: no limit).
    #[serde(default)]
    pub hydrate_rate: Option<u64>,
    /// The persistent repository lease pinning `backup` (`locks/<id>`).
    pub lease: String,
    /// The user the server runs as, who owns the files.
    pub owner: String,
    /// shared_buffers of the clone's server.
    pub shared_buffers: String,
    /// When it was created.
    pub created: DateTime<Utc>,
}

impl Settings {
    /// The goal every mount recovers to: the point, along the timeline chosen at create.
    pub fn goal(&self, record: &Path) -> Result<Goal> {
        Ok(Goal {
            to: self.point.point(record)?,
            timeline: TimelineChoice::BlobId(self.timeline),
        })
    }

    /// Reads `path`.
    pub fn load(path: &Path) -> Result<Settings> {
        let bytes = std::fs::read(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound(format!(
                "{} is missing: not a clone; `pgsnapfs clone list` lists them",
                path.display()
            )),
            _ => io(format!("read {}", path.display()))(e),
        })?;
        let settings: Settings = serde_json::from_slice(&bytes).map_err(|e| {
            Error::BadInput(format!("{} is not a clone record: {e}", path.display()))
        })?;
        if settings.version != VERSION {
            return Err(Error::BadInput(format!(
                "{} has format version {}; this pgsnapfs reads {VERSION}",
                path.display(),
                settings.version
            )));
        }
        Ok(settings)
    }

    /// Writes `path` atomically: a temporary file, synced, renamed over it.
    pub fn save(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(self).expect("settings serialize");
        let mut f = std::fs::File::create(&tmp).map_err(io(format!("create {}", tmp.display())))?;
        f.write_all(&bytes)
            .and_then(|()| f.sync_all())
            .map_err(io(format!("write {}", tmp.display())))?;
        std::fs::rename(&tmp, path).map_err(io(format!("rename to {}", path.display())))?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io(format!("sync {}", dir.display())))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_round_trip() {
        let record = Path::new("clone.json");
        let time = crate::pg::target::parse_time("2026-11-20 14:30:00+00").unwrap();
        for (point, stored) in [
            (
                Point::Backup("latest".into()),
                StoredPoint::Backup("B1".into()),
            ),
            (
                Point::Target(Target::Time(time)),
                StoredPoint::Time(time.to_rfc3339()),
            ),
            (
                Point::Target(Target::Lsn("0/3000060".parse().unwrap())),
                StoredPoint::Lsn("0/3000060".into()),
            ),
            (Point::Target(Target::Xid(7)), StoredPoint::Xid(7)),
        ] {
            let s = StoredPoint::of(&point, "B1").unwrap();
            assert_eq!(s, stored);
            let json = serde_json::to_string(&s).unwrap();
            let back: StoredPoint = serde_json::from_str(&json).unwrap();
            assert_eq!(
                format!("{:?}", back.point(record).unwrap()),
                format!(
                    "{:?}",
                    match point {
                        Point::Backup(_) => Point::Backup("B1".into()),
                        p => p,
                    }
                )
            );
        }
        assert!(StoredPoint::of(&Point::Latest, "B1").is_none());
        assert!(StoredPoint::Time("yesterday".into()).point(record).is_err());
    }
}
