//! `list` and `info` on a pgBackRest repository (`--repo pgbackrest:PATH --stanza NAME`),
//! read-only; the other commands refuse it.

use super::info::{InfoArgs, ListArgs};
use super::key::PassphraseArgs;
use super::{human, print_json};
use crate::error::{Error, Result};
use crate::pgbackrest::info::{DbHistory, InfoBackup};
use crate::pgbackrest::wal::ArchiveSummary;
use crate::pgbackrest::PgbrRepo;
use crate::timelines::fmt_time;
use chrono::{TimeZone, Utc};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The prefix of a pgBackRest repository's `--repo`.
const PREFIX: &str = "pgbackrest:";

/// The directory of `--repo pgbackrest:PATH`, if the repository is pgBackRest's.
pub fn foreign(spec: &str) -> Option<PathBuf> {
    spec.strip_prefix(PREFIX).map(PathBuf::from)
}

/// Why a command other than `list` and `info` cannot use a pgBackRest repository.
pub fn refuse(spec: &str) -> Error {
    Error::BadInput(format!(
        "{spec} is a pgBackRest repository, which pgsnapfs only reads: only `list` and `info` \
         work on it (with --stanza), and nothing is written to it. To restore, mount or verify \
         its backups, import them into a pgsnapfs repository first: pgsnapfs import --repo DIR \
         --from {spec} --stanza NAME"
    ))
}

fn open(path: &Path, stanza: Option<&str>, pass: &PassphraseArgs) -> Result<PgbrRepo> {
    let stanza = stanza
        .ok_or_else(|| Error::BadInput("a pgBackRest repository needs --stanza NAME".into()))?;
    let source = pass.source();
    let secret = crate::passphrase::read_secret(
        source.file.as_deref(),
        source.command.as_deref(),
        crate::passphrase::ENV,
    )?;
    let secret = match secret {
        Some(s) => Some(s),
        None => crate::passphrase::read_secret(None, None, super::import::PGBACKREST_PASS_ENV)?,
    };
    Ok(PgbrRepo::open(
        path,
        stanza,
        secret.as_deref().map(|s| &s[..]),
    )?)
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
pub fn list(spec: &str, path: &Path, pass: &PassphraseArgs, a: ListArgs) -> Result<()> {
    let repo = open(path, a.stanza.as_deref(), pass)?;
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
pub fn info(spec: &str, path: &Path, pass: &PassphraseArgs, a: InfoArgs) -> Result<()> {
    let repo = open(path, a.stanza.as_deref(), pass)?;
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
