//! A pgBackRest repository (`--repo pgbackrest:PATH --stanza NAME`), read-only: `list` and
//! `info` read it; mount, verify, restore and dump read its cache repository
//! ([`crate::foreign`]); the other commands refuse it.

use super::info::{InfoArgs, ListArgs};
use super::key::PassphraseArgs;
use super::progress::set_total;
use super::{human, print_json, progress};
use crate::error::{Error, Result};
use crate::pgbackrest::info::{DbHistory, InfoBackup};
use crate::pgbackrest::wal::ArchiveSummary;
use crate::pgbackrest::PgbrRepo;
use crate::timelines::fmt_time;
use chrono::{TimeZone, Utc};
use serde::Serialize;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The prefix of a pgBackRest repository's `--repo`.
const PREFIX: &str = "pgbackrest:";

/// The directory of `--repo pgbackrest:PATH`, if the repository is pgBackRest's.
pub fn foreign(spec: &str) -> Option<PathBuf> {
    spec.strip_prefix(PREFIX).map(PathBuf::from)
}

/// Why a command that writes cannot use a pgBackRest repository.
pub fn refuse(spec: &str) -> Error {
    Error::BadInput(format!(
        "{spec} is a pgBackRest repository, which pgsnapfs only reads: `list`, `info`, \
         `mount`, `verify`, `restore` and `dump` work on it (with --stanza), and nothing is \
         written to it. To keep its backups in a pgsnapfs repository, import them: pgsnapfs \
         import --repo DIR --from {spec} --stanza NAME"
    ))
}

/// A pgBackRest repository as the command line names it.
pub struct Source<'a> {
    /// `pgbackrest:PATH`.
    pub spec: &'a str,
    /// PATH.
    pub path: &'a Path,
    /// `--stanza`.
    pub stanza: Option<&'a str>,
    /// `--pgbackrest-cache`.
    pub cache: Option<&'a Path>,
    /// Where its passphrase comes from: as for a pgsnapfs repository, then
    /// PGBACKREST_REPO1_CIPHER_PASS.
    pub pass: &'a PassphraseArgs,
}

impl Source<'_> {
    fn stanza(&self) -> Result<&str> {
        self.stanza
            .ok_or_else(|| Error::BadInput("a pgBackRest repository needs --stanza NAME".into()))
    }

    fn secret(&self) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>> {
        let source = self.pass.source();
        let secret = crate::passphrase::read_secret(
            source.file.as_deref(),
            source.command.as_deref(),
            crate::passphrase::ENV,
        )?;
        Ok(match secret {
            Some(s) => Some(s),
            None => crate::passphrase::read_secret(None, None, super::import::PGBACKREST_PASS_ENV)?,
        })
    }

    fn open(&self) -> Result<PgbrRepo> {
        let secret = self.secret()?;
        Ok(PgbrRepo::open(
            self.path,
            self.stanza()?,
            secret.as_deref().map(|s| &s[..]),
        )?)
    }

    /// Imports what `goal` needs into the stanza's cache repository and returns that
    /// repository's location, with `goal` naming its backup id where it named a pgBackRest
    /// label (or `latest`).
    pub fn cache(&self, goal: &mut super::GoalArgs) -> Result<String> {
        let secret = self.secret()?;
        // The cache repository is encrypted under the same passphrase; the command (and a
        // view's wal-fetch) then reads it from PGSNAPFS_PASSPHRASE when it came from
        // pgBackRest's variable.
        if let Some(s) = &secret {
            let source = self.pass.source();
            if source.file.is_none()
                && source.command.is_none()
                && std::env::var_os(crate::passphrase::ENV).is_none()
            {
                std::env::set_var(crate::passphrase::ENV, std::ffi::OsStr::from_bytes(&s[..]));
            }
        }
        // SAFETY: a plain id query.
        let root = unsafe { libc::geteuid() } == 0;
        let cache_root = match self.cache {
            Some(dir) => dir.to_path_buf(),
            None if root => PathBuf::from("/var/cache/pgsnapfs"),
            None => crate::session::user_cache()?,
        }
        .join("pgbackrest");
        let bar = progress(None, "importing into the cache");
        let (tick, sized) = (bar.clone(), bar.clone());
        let cache = crate::foreign::prepare(
            crate::foreign::Options {
                from: self.path.to_path_buf(),
                stanza: self.stanza()?.to_string(),
                passphrase: secret,
                cache_root,
                // The view's server reads it through its restore_command.
                owner: root.then(|| "postgres".to_string()),
                total: Box::new(move |total| set_total(&sized, total)),
                progress: Box::new(move |n| tick.inc(n)),
            },
            &goal.goal()?.to,
        )?;
        bar.finish_and_clear();
        let imported = &cache.summary.imported;
        if !imported.is_empty() {
            eprintln!(
                "imported {} of {} into the cache repository {} ({} read and checked)",
                imported
                    .iter()
                    .map(|i| i.label.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                self.spec,
                cache.spec,
                human(imported.iter().map(|i| i.bytes_read).sum())
            );
        }
        if let Some(id) = cache.backup {
            goal.point.backup = Some(id);
        }
        Ok(cache.spec)
    }
}

#[derive(Serialize)]
struct Listing<'a> {
    repository: String,
    stanza: &'a str,
    clusters: &'a [DbHistory],
    backups: &'a [InfoBackup],
    #[serde(skip_serializing_if = "Option::is_none")]
    archive: Option<Vec<ArchiveSummary>>,
}

fn time(secs: i64) -> String {
    Utc.timestamp_opt(secs, 0)
        .single()
        .map(fmt_time)
        .unwrap_or_else(|| secs.to_string())
}

fn print_backups(backups: &[InfoBackup]) {
    if backups.is_empty() {
        outln!("no backups");
        return;
    }
    outln!(
        "{:<34} {:<5} {:<20} {:>12} {:>12} {:>10} {:>10}",
        "label",
        "type",
        "finished (UTC)",
        "start LSN",
        "stop LSN",
        "size",
        "stored"
    );
    for b in backups {
        outln!(
            "{:<34} {:<5} {:<20} {:>12} {:>12} {:>10} {:>10}",
            b.label,
            b.kind,
            time(b.timestamp_stop),
            b.lsn_start.as_deref().unwrap_or("?"),
            b.lsn_stop.as_deref().unwrap_or("?"),
            human(b.size),
            human(b.repo_size_delta)
        );
    }
}

/// `list --repo pgbackrest:PATH --stanza NAME`.
pub fn list(source: &Source, a: ListArgs) -> Result<()> {
    let (spec, repo) = (source.spec, source.open()?);
    let info = repo.backup_info();
    if a.json {
        print_json(&Listing {
            repository: spec.to_string(),
            stanza: repo.stanza(),
            clusters: &info.history,
            backups: &info.backups,
            archive: None,
        });
    } else {
        print_backups(&info.backups);
    }
    Ok(())
}

/// `info --repo pgbackrest:PATH --stanza NAME`: the backups and the archived WAL.
pub fn info(source: &Source, a: InfoArgs) -> Result<()> {
    let (spec, repo) = (source.spec, source.open()?);
    let info = repo.backup_info();
    let archive = repo.archive_summary()?;
    if a.json {
        print_json(&Listing {
            repository: spec.to_string(),
            stanza: repo.stanza(),
            clusters: &info.history,
            backups: &info.backups,
            archive: Some(archive),
        });
        return Ok(());
    }
    outln!(
        "pgBackRest repository {spec}, stanza {} (read-only)",
        repo.stanza()
    );
    for db in &info.history {
        outln!(
            "cluster {}: system identifier {}, PostgreSQL {}",
            db.id,
            db.system_id,
            db.version
        );
    }
    outln!();
    print_backups(&info.backups);
    outln!();
    for a in &archive {
        outln!(
            "archived WAL {} (system {}): {} files, {} – {}",
            a.archive_id,
            a.system_identifier,
            a.files,
            a.first.as_deref().unwrap_or("none"),
            a.last.as_deref().unwrap_or("none")
        );
    }
    Ok(())
}
