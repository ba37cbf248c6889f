//! The status objects `pgsnapfs metrics` reads: what the last run of each watched command did
//! (docs/repository-format.md, "Status"). One object per command and cluster, replaced whole
//! by each run, so two commands never overwrite each other's facts; two runs of the same
//! command leave the one that finished last.
//!
//! Writing one is best effort: a backup that worked is not failed because its status could
//! not be written (a warning says so, and the metrics then show the run before).

use crate::catalog::{keys, Source};
use crate::store::backend::Backend;
use crate::store::crypto::Sealer;
use crate::store::{Repository, StoreError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The format of the status objects this build writes and reads.
pub const FORMAT: u32 = 1;

/// A command whose last run is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watched {
    /// `backup` (from a running server) or `backup --from-archive`, of one cluster.
    Backup(Source),
    /// `verify` of one cluster.
    Verify,
    /// `check` of the whole repository.
    Check,
    /// `gc` of the whole repository (with `--dry-run` too).
    Gc,
}

impl Watched {
    /// The last part of its key.
    pub fn name(self) -> &'static str {
        match self {
            Watched::Backup(Source::Server) => "backup",
            Watched::Backup(Source::Archive) => "backup-archive",
            Watched::Verify => "verify",
            Watched::Check => "check",
            Watched::Gc => "gc",
        }
    }

    /// The object's key: per cluster for backups and verifies, per repository otherwise
    /// (`sysid` is then ignored).
    pub fn key(self, sysid: u64) -> String {
        match self {
            Watched::Backup(_) | Watched::Verify => keys::status_of_system(sysid, self.name()),
            Watched::Check | Watched::Gc => keys::status_of_repository(self.name()),
        }
    }
}

/// What one run did; the fields after `error` are those of its command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// [`FORMAT`].
    pub format: u32,
    /// When the run started.
    pub started: DateTime<Utc>,
    /// When it ended.
    pub finished: DateTime<Utc>,
    /// Whether it succeeded: a backup stored (or nothing new to store), a verify or check
    /// that found no problem, a gc that completed.
    pub ok: bool,
    /// Why not, in one sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The backup made (backup) or tested (verify).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
    /// verify: seconds from the start of the run until the recovered server answered its
    /// first query (the view mounted, the server started and recovery ended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_query_s: Option<f64>,
    /// check: the problems found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problems: Option<u64>,
    /// check: `none`, `subset` or `all`: which pack data it read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_data: Option<String>,
    /// gc: the bytes of packs in the repository when it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packs_bytes: Option<u64>,
    /// gc: the bytes of packs no backup uses that are still there when it ended (condemned,
    /// waiting for running commands; with `--dry-run`, all it would delete or repack).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reclaimable_bytes: Option<u64>,
}

impl Run {
    /// A run that started at `started`, ended now, and did or did not succeed.
    pub fn ended(started: DateTime<Utc>, ok: bool) -> Run {
        Run {
            format: FORMAT,
            started,
            finished: Utc::now(),
            ok,
            error: None,
            backup: None,
            first_query_s: None,
            problems: None,
            read_data: None,
            packs_bytes: None,
            reclaimable_bytes: None,
        }
    }

    /// A run that failed with `error`.
    pub fn failed(started: DateTime<Utc>, error: &impl std::fmt::Display) -> Run {
        Run {
            error: Some(error.to_string()),
            ..Run::ended(started, false)
        }
    }

    /// Its duration in seconds (0 if the clock went back).
    pub fn duration_s(&self) -> f64 {
        (self.finished - self.started)
            .to_std()
            .map_or(0.0, |d| d.as_secs_f64())
    }
}

/// Writes status objects; made from a repository before a command hands it on.
#[derive(Clone)]
pub struct Recorder {
    backend: Arc<dyn Backend>,
    sealer: Sealer,
}

impl Recorder {
    /// Writes to `repo`.
    pub fn of(repo: &Repository) -> Recorder {
        Recorder {
            backend: repo.backend_arc(),
            sealer: repo.sealer(),
        }
    }

    /// Replaces the object of `what` (atomically: rename, or one PUT), warning on failure.
    pub fn record(&self, what: Watched, sysid: u64, run: &Run) {
        let key = what.key(sysid);
        let payload = serde_json::to_vec(run).expect("a status serializes");
        if let Err(e) = self
            .backend
            .replace(&key, &self.sealer.seal(&key, &payload))
        {
            tracing::warn!(
                "cannot record this run in {key} ({e}): `pgsnapfs metrics` shows the run before"
            );
        }
    }
}

/// The last recorded run of `what`; `None` if there is none. An object of another format is
/// skipped (`None`, with a warning); a damaged one is an error naming it.
pub fn load(repo: &Repository, what: Watched, sysid: u64) -> Result<Option<Run>, StoreError> {
    let key = what.key(sysid);
    let bytes = match repo.get_sealed(&key) {
        Ok(b) => b,
        Err(StoreError::Backend(e)) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e),
    };
    #[derive(Deserialize)]
    struct Versioned {
        format: u32,
    }
    let version: Versioned =
        serde_json::from_slice(&bytes).map_err(|e| StoreError::corrupt(&key, e.to_string()))?;
    if version.format != FORMAT {
        tracing::warn!(
            "{key} has status format {}, this build reads {FORMAT}: ignored",
            version.format
        );
        return Ok(None);
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| StoreError::corrupt(&key, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::backend::memory::MemoryBackend;

    fn repo() -> Repository {
        Repository::init(Arc::new(MemoryBackend::default()), 65536, 3).unwrap()
    }

    #[test]
    fn keys_per_cluster_and_per_repository() {
        assert_eq!(
            Watched::Backup(Source::Server).key(7),
            "status/system/7/backup"
        );
        assert_eq!(
            Watched::Backup(Source::Archive).key(7),
            "status/system/7/backup-archive"
        );
        assert_eq!(Watched::Verify.key(7), "status/system/7/verify");
        assert_eq!(Watched::Check.key(7), "status/repository/check");
        assert_eq!(Watched::Gc.key(0), "status/repository/gc");
    }

    #[test]
    fn runs_are_replaced_and_read_back_per_command() {
        let repo = repo();
        let rec = Recorder::of(&repo);
        assert_eq!(load(&repo, Watched::Verify, 7).unwrap(), None);
        let started = Utc::now() - chrono::Duration::seconds(5);
        let mut ok = Run::ended(started, true);
        ok.first_query_s = Some(1.5);
        rec.record(Watched::Verify, 7, &ok);
        let failed = Run::failed(started, &"the server did not start");
        rec.record(Watched::Backup(Source::Server), 7, &failed);
        assert_eq!(load(&repo, Watched::Verify, 7).unwrap(), Some(ok.clone()));
        assert_eq!(
            load(&repo, Watched::Backup(Source::Server), 7).unwrap(),
            Some(failed)
        );
        // Another cluster's verify is its own object.
        assert_eq!(load(&repo, Watched::Verify, 8).unwrap(), None);
        let again = Run::ended(started, false);
        rec.record(Watched::Verify, 7, &again);
        assert_eq!(load(&repo, Watched::Verify, 7).unwrap(), Some(again));
        assert!(ok.duration_s() >= 5.0);
    }

    #[test]
    fn other_formats_are_skipped_and_damage_is_named() {
        let repo = repo();
        let key = Watched::Check.key(0);
        repo.replace_sealed(&key, br#"{"format": 2, "whatever": true}"#)
            .unwrap();
        assert_eq!(load(&repo, Watched::Check, 0).unwrap(), None);
        repo.replace_sealed(&key, br#"{"format": 1}"#).unwrap();
        let e = load(&repo, Watched::Check, 0).unwrap_err().to_string();
        assert!(e.contains("status/repository/check"), "{e}");
    }
}
