//! `pgsnapfs verify`

use super::progress::{progress, set_total};
use super::{human, print_json, GoalArgs};
use crate::error::{io, Error, Result};
use crate::session::lifecycle::Signals;
use crate::store::{Repository, StoreError};
use crate::verify::{self, Progress, Skipped, VerifyOptions};
use indicatif::ProgressBar;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub goal: GoalArgs,
    /// SQL assertions, `;`-terminated; each must return true. A `\connect DB` line runs the
    /// statements after it in database DB.
    #[arg(long)]
    pub sql: Option<PathBuf>,
    /// The database the assertions run in, until a `\connect` line in the file.
    #[arg(long, default_value = "postgres")]
    pub dbname: String,
    /// Read every relation, even those whose chunks an earlier verify of this cluster
    /// already read (by default only relations changed since are read).
    #[arg(long)]
    pub full: bool,
    #[arg(long, help = super::JSON_HELP)]
    pub json: bool,
    #[command(flatten)]
    pub server: super::ServerArgs,
}

/// `signals`: SIGINT and SIGTERM, blocked before the repository was opened (see
/// `lifecycle::block_signals`), which interrupt the verify cleanly.
pub fn run(
    repo: Repository,
    signals: Signals,
    repo_spec: &str,
    pass: &super::key::PassphraseArgs,
    a: Args,
) -> Result<()> {
    let assertions = match &a.sql {
        Some(path) => verify::parse_assertions(
            &std::fs::read_to_string(path).map_err(io(format!("read {}", path.display())))?,
            &a.dbname,
        )
        .map_err(|e| Error::BadInput(format!("{}: {e}", path.display())))?,
        None => Vec::new(),
    };
    let bar = progress(None, "verifying");
    let opts = VerifyOptions {
        server: a.server.view_server(repo_spec, pass, a.goal.goal()?),
        assertions,
        full: a.full,
        progress: shown_on(bar.clone()),
    };
    let result = verify::run(repo, &opts, signals, &|plan| {
        bar.suspend(|| {
            eprintln!(
                "verifying backup {} (recovering to {})",
                plan.snapshot.id,
                plan.describe()
            )
        })
    });
    bar.finish_and_clear();
    let report = result?;
    if a.json {
        print_json(&report);
    } else {
        let p = &report.phases;
        outln!(
            "backup {}: {} ({} databases, {} tables read, {} indexes checked{}, {} assertions)",
            report.backup,
            if report.ok { "OK" } else { "FAILED" },
            report.databases,
            report.tables,
            report.indexes_checked,
            if report.amcheck {
                " with amcheck"
            } else {
                ", amcheck not available"
            },
            report.assertions
        );
        outln!(
            "phases: mount {:.2}s, start {:.2}s, recovery {:.2}s, checks {:.2}s",
            p.mount_s,
            p.start_s,
            p.recovery_s,
            p.checks_s
        );
        if let Some(r) = &report.requests {
            let cache = report.disk_cache.map_or(String::new(), |c| {
                format!(
                    "; disk cache: {} chunks served locally, {} fetched",
                    c.hits, c.misses
                )
            });
            outln!("S3: {} requests, {} GETs{cache}", r.total(), r.get);
        }
        if report.full {
            outln!("read every relation: {}", human(report.bytes_read));
        } else {
            outln!(
                "incremental since backup {}: read {} of changed relations; skipped {} tables \
                 and {} indexes ({}) whose chunks were verified before, in backup {}",
                report.since.as_deref().unwrap_or("?"),
                human(report.bytes_read),
                report.tables_skipped,
                report.indexes_skipped,
                human(report.bytes_skipped),
                verified_in(&report.skipped)
            );
        }
        for note in &report.notes {
            outln!("note: {note}");
        }
        for problem in &report.problems {
            outln!("problem: {problem}");
        }
    }
    if report.ok {
        Ok(())
    } else if report.corrupt {
        Err(Error::Store(StoreError::corrupt(
            format!("backup {}", report.backup),
            format!("failed verification: {}", report.problems.join("; ")),
        )))
    } else {
        Err(Error::VerifyFailed {
            backup: report.backup.clone(),
            problems: report.problems.clone(),
        })
    }
}

/// The backups the skipped relations were verified in, for the summary line.
fn verified_in(skipped: &[Skipped]) -> String {
    let mut backups: Vec<&str> = skipped.iter().map(|s| s.verified_in.as_str()).collect();
    backups.sort_unstable();
    backups.dedup();
    match backups.as_slice() {
        [] => "none".into(),
        [one] => one.to_string(),
        many => many.join(", "),
    }
}

/// The bar shows the bytes of the relations to read out of their total, and the tables and
/// indexes checked out of theirs.
fn shown_on(bar: ProgressBar) -> Box<dyn Fn(Progress)> {
    // (tables done, tables, indexes done, indexes)
    let counts = std::cell::Cell::new((0usize, 0usize, 0usize, 0usize));
    Box::new(move |p| match p {
        Progress::Planned(plan) => {
            set_total(&bar, plan.bytes);
            counts.set((0, plan.tables, 0, plan.indexes));
            if plan.skipped_tables + plan.skipped_indexes > 0 {
                bar.println(format!(
                    "skipping {} tables and {} indexes ({}) verified before",
                    plan.skipped_tables,
                    plan.skipped_indexes,
                    human(plan.skipped_bytes)
                ));
            }
            bar.set_message(format!(
                "tables 0/{}, indexes 0/{}",
                plan.tables, plan.indexes
            ));
        }
        Progress::Checking { relation } => {
            let (t, tables, i, indexes) = counts.get();
            bar.set_message(format!(
                "tables {t}/{tables}, indexes {i}/{indexes}, reading {relation}"
            ));
        }
        Progress::Checked { index, bytes } => {
            let (mut t, tables, mut i, indexes) = counts.get();
            if index {
                i += 1;
            } else {
                t += 1;
            }
            counts.set((t, tables, i, indexes));
            bar.inc(bytes);
        }
    })
}
