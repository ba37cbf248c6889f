//! A pgBackRest repository where a pgsnapfs one is expected: `mount`, `verify`, `restore` and
//! `dump` with `--repo pgbackrest:PATH --stanza NAME`. The backup the goal needs (and, for a
//! recovery target, the archived WAL) is imported on first use into a cache repository, a
//! local pgsnapfs repository of its own; the command then runs on that, unchanged.
//! pgBackRest's repository is only read.
//!
//! Decision: a cache repository, not pgBackRest's files read in place. Those files are whole
//! compressed (and maybe encrypted) streams: a read in the middle needs everything before it,
//! and a file's SHA-1 can only be checked once all of it was read, so no byte of it may be
//! served before one full pass. The import is that pass. It leaves the data checked,
//! deduplicated and addressable by page, so the next command on the same backup starts at
//! once, and every native command (and its crash safety) applies as it is. Cost: the first
//! use of a backup reads it whole, as a pgBackRest restore would.

use crate::error::{Error, Result};
use crate::import::{self, Summary};
use crate::init::{self, InitOptions};
use crate::pg::target::Target;
use crate::pgbackrest::info::InfoBackup;
use crate::pgbackrest::PgbrRepo;
use crate::pitr::Point;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// The chunk size and zstd level of a cache repository: the defaults of `init`.
const CHUNK_SIZE: u64 = 64 << 10;
const COMPRESSION_LEVEL: i32 = 3;

/// What a cache repository is made from, and where.
pub struct Options {
    /// The pgBackRest repository's directory (its `repo1-path`).
    pub from: PathBuf,
    /// Its stanza.
    pub stanza: String,
    /// Its passphrase, if it is encrypted: the cache repository is encrypted under it too.
    pub passphrase: Option<Zeroizing<Vec<u8>>>,
    /// The directory holding cache repositories, one per stanza and cluster.
    pub cache_root: PathBuf,
    /// The user who owns a new cache repository (root: the server's user, so that its
    /// restore_command can read it).
    pub owner: Option<String>,
    /// Told the bytes to import, then each number of bytes done.
    pub total: Box<dyn Fn(u64)>,
    /// Told each number of bytes done as the import goes on.
    pub progress: Box<dyn Fn(u64)>,
}

/// The cache repository, ready for the command.
pub struct Cache {
    /// Its location, for the command's `--repo`.
    pub spec: String,
    /// For a goal naming a pgBackRest backup (or `latest`): that backup's id in the cache.
    pub backup: Option<String>,
    /// What the import did.
    pub summary: Summary,
}

/// Which pgBackRest backup `point` needs imported: `Some(label)`, or `None` for all of them
/// (a restore point or a transaction id may be anywhere).
pub fn needed(backups: &[InfoBackup], point: &Point) -> Result<Option<String>> {
    let newest = |fits: &dyn Fn(&InfoBackup) -> bool| {
        backups
            .iter()
            .filter(|b| fits(b))
            .max_by_key(|b| b.timestamp_stop)
            .map(|b| b.label.clone())
    };
    let found = match point {
        Point::Backup(label) if label == "latest" => newest(&|_| true),
        Point::Backup(label) => backups
            .iter()
            .find(|b| &b.label == label)
            .map(|b| b.label.clone()),
        Point::Latest | Point::Target(Target::Immediate) => newest(&|_| true),
        Point::Target(Target::Time(t)) => newest(&|b| b.timestamp_stop <= t.timestamp()),
        Point::Target(Target::Lsn(l)) => newest(&|b| {
            b.lsn_stop
                .as_deref()
                .and_then(|s| s.parse::<crate::pg::lsn::Lsn>().ok())
                .is_some_and(|stop| stop <= *l)
        }),
        Point::Target(Target::Name(_) | Target::Xid(_)) => return Ok(None),
    };
    match found {
        Some(label) => Ok(Some(label)),
        None => Err(Error::BadInput(match point {
            Point::Backup(label) if label != "latest" => format!(
                "the pgBackRest stanza has no backup {label}: `pgsnapfs list` with the same \
                 --repo and --stanza lists them"
            ),
            _ => "no backup of the pgBackRest stanza ends before that target: choose a later \
                  one (`pgsnapfs list` with the same --repo and --stanza lists the backups)"
                .into(),
        })),
    }
}

/// The cache repository of a stanza's cluster, below `root`.
pub fn cache_dir(root: &Path, stanza: &str, system_id: u64) -> PathBuf {
    root.join(format!("{stanza}-{system_id}"))
}

/// Makes the directory of cache repositories, if missing, owned by `owner`: root's commands
/// and the server's user's then share it.
fn make_root(root: &Path, owner: Option<&str>) -> Result<()> {
    if root.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(root)
        .map_err(crate::error::io(format!("create {}", root.display())))?;
    if let Some(name) = owner {
        let who = crate::view::Owner::lookup(name)?;
        std::os::unix::fs::chown(root, Some(who.uid), Some(who.gid))
            .map_err(crate::error::io(format!("chown {}", root.display())))?;
    }
    Ok(())
}

/// Imports what `point` needs into the stanza's cache repository (made on first use), and
/// says where it is.
pub fn prepare(opts: Options, point: &Point) -> Result<Cache> {
    let pgbr = PgbrRepo::open(
        &opts.from,
        &opts.stanza,
        opts.passphrase.as_deref().map(|p| &p[..]),
    )?;
    let info = pgbr.backup_info();
    let system_id = info
        .history
        .iter()
        .max_by_key(|h| h.id)
        .map(|h| h.system_id)
        .ok_or_else(|| {
            Error::BadInput(format!(
                "the pgBackRest stanza {} lists no cluster in its backup.info",
                opts.stanza
            ))
        })?;
    let label = needed(&info.backups, point)?;
    let dir = cache_dir(&opts.cache_root, &opts.stanza, system_id);
    let spec = dir.display().to_string();
    let repo = if dir.is_dir() {
        crate::store::Repository::open_with(crate::store::open_backend(&spec)?, &|| {
            opts.passphrase
                .clone()
                .ok_or_else(|| crate::store::StoreError::NeedKey(spec.clone()))
        })?
    } else {
        make_root(&opts.cache_root, opts.owner.as_deref())?;
        tracing::info!("making the cache repository {spec}");
        init::create(
            &spec,
            &InitOptions {
                chunk_size: CHUNK_SIZE,
                compression_level: COMPRESSION_LEVEL,
                owner: opts.owner.clone(),
                passphrase: opts.passphrase.clone(),
            },
        )?
        .repo
    };
    let summary = import::run(
        &repo,
        &import::Options {
            from: opts.from,
            stanza: opts.stanza,
            passphrase: opts.passphrase,
            backup: label.clone(),
            // A backup as it ended needs only its own WAL, which every import brings.
            wal: !matches!(point, Point::Backup(_)),
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            total: opts.total,
            progress: opts.progress,
        },
    )?;
    let backup = match point {
        Point::Backup(_) => label.and_then(|label| {
            let imported = summary.imported.iter().map(|i| (&i.label, &i.id));
            let skipped = summary.skipped.iter().map(|(l, id)| (l, id));
            imported
                .chain(skipped)
                .find(|(l, _)| **l == label)
                .map(|(_, id)| id.clone())
        }),
        _ => None,
    };
    Ok(Cache {
        spec,
        backup,
        summary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup(label: &str, stop: i64, lsn_stop: &str) -> InfoBackup {
        InfoBackup {
            label: label.into(),
            kind: "full".into(),
            db_id: 1,
            references: Vec::new(),
            timestamp_start: stop - 10,
            timestamp_stop: stop,
            lsn_start: None,
            lsn_stop: Some(lsn_stop.into()),
            prior: None,
            size: 0,
            repo_size_delta: 0,
        }
    }

    #[test]
    fn the_backup_a_goal_needs() {
        let backups = [
            backup("A", 1000, "0/3000000"),
            backup("B", 2000, "0/5000000"),
        ];
        let time = |s: i64| {
            Point::Target(Target::Time(
                chrono::DateTime::from_timestamp(s, 0).unwrap().into(),
            ))
        };
        let lsn = |s: &str| Point::Target(Target::Lsn(s.parse().unwrap()));
        let pick = |p: &Point| needed(&backups, p).unwrap();
        assert_eq!(pick(&Point::Latest), Some("B".into()));
        assert_eq!(pick(&Point::Backup("latest".into())), Some("B".into()));
        assert_eq!(pick(&Point::Backup("A".into())), Some("A".into()));
        assert_eq!(pick(&time(1500)), Some("A".into()));
        assert_eq!(pick(&time(2000)), Some("B".into()));
        assert_eq!(pick(&lsn("0/4000000")), Some("A".into()));
        assert_eq!(pick(&Point::Target(Target::Xid(5))), None, "all of them");
        for bad in [Point::Backup("C".into()), time(999), lsn("0/1000000")] {
            assert_eq!(needed(&backups, &bad).unwrap_err().exit_code(), 2);
        }
    }
}
