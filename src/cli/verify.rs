//! `pgsnapfs verify`

use super::{print_json, GoalArgs};
use crate::error::{io, Error, Result};
use crate::store::Repository;
use crate::verify::{self, VerifyOptions};
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
    /// The user the test server runs as (and the role it connects as).
    #[arg(long, default_value = "postgres")]
    pub user: String,
    /// Directory of the PostgreSQL server binaries [default: /usr/lib/postgresql/MAJOR/bin].
    #[arg(long)]
    pub pg_bin: Option<PathBuf>,
    #[command(flatten)]
    pub cache: super::CacheArgs,
    /// The cluster, when the repository holds several.
    #[arg(long)]
    pub system: Option<u64>,
    #[arg(long, help = super::JSON_HELP)]
    pub json: bool,
}

pub fn run(
    repo: Repository,
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
    let opts = VerifyOptions {
        repo_spec: repo_spec.to_string(),
        passphrase: pass.source(),
        goal: a.goal.goal()?,
        system: a.system,
        cache: a.cache.options(),
        user: a.user,
        pg_bin: a.pg_bin,
        assertions,
    };
    let report = verify::run(repo, &opts, &|plan| {
        eprintln!(
            "verifying backup {} (recovering to {})",
            plan.snapshot.id,
            plan.describe()
        )
    })?;
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
        if let (Some(r), Some(c)) = (&report.requests, &report.disk_cache) {
            outln!(
                "S3: {} requests; disk cache: {} chunks served locally, {} fetched",
                r.total(),
                c.hits,
                c.misses
            );
        }
        for problem in &report.problems {
            outln!("problem: {problem}");
        }
    }
    if report.ok {
        Ok(())
    } else {
        Err(Error::VerifyFailed {
            backup: report.backup.clone(),
            problems: report.problems.clone(),
        })
    }
}
