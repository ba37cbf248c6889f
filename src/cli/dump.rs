//! `pgsnapfs dump`

use super::{print_json, GoalArgs};
use crate::dump::{self, DumpOptions, Format, Stage};
use crate::error::Result;
use crate::session::lifecycle::Signals;
use crate::store::Repository;
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub goal: GoalArgs,
    /// The database to dump.
    #[arg(long)]
    pub dbname: String,
    /// Dump only this table (a pg_dump pattern; repeatable). Each must match.
    #[arg(short = 't', long)]
    pub table: Vec<String>,
    /// Dump only this schema (a pg_dump pattern; repeatable). Each must match.
    #[arg(short = 'n', long)]
    pub schema: Vec<String>,
    /// pg_dump's output format.
    #[arg(short = 'F', long, value_enum, default_value = "plain")]
    pub format: Format,
    /// The output file (a directory for --format directory); stdout when absent.
    #[arg(short = 'f', long)]
    pub file: Option<PathBuf>,
    /// Print a JSON summary on stdout (only with -f: without it stdout is the dump).
    #[arg(long, requires = "file")]
    pub json: bool,
    /// Restore the tables (--table) straight into this live database (a libpq connection
    /// string or URI) under new names, in one transaction; refused if a new name exists.
    #[arg(long, conflicts_with_all = ["file", "json"])]
    pub into: Option<String>,
    /// The suffix of the restored tables', indexes' and sequences' names with --into
    /// [default: _at_HHMM of the target time, UTC].
    #[arg(long, requires = "into")]
    pub rename_suffix: Option<String>,
    /// More pg_dump options, after `--`.
    #[arg(last = true)]
    pub extra: Vec<String>,
    #[command(flatten)]
    pub server: super::ServerArgs,
}

/// `signals`: SIGINT and SIGTERM, blocked before the repository was opened, which interrupt
/// the dump cleanly.
pub fn run(
    repo: Repository,
    signals: Signals,
    repo_spec: &str,
    pass: &super::key::PassphraseArgs,
    a: Args,
) -> Result<()> {
    let terminal = std::io::stderr().is_terminal();
    let opts = DumpOptions {
        server: a.server.view_server(repo_spec, pass, a.goal.goal()?),
        dbname: a.dbname,
        tables: a.table,
        schemas: a.schema,
        format: a.format,
        file: a.file,
        extra: a.extra,
        into: a.into.map(|conninfo| dump::Into {
            conninfo,
            suffix: a.rename_suffix,
        }),
        stage: Box::new(move |stage| {
            if terminal {
                eprintln!("{}", stage_line(&stage));
            }
        }),
    };
    let report = dump::run(repo, &opts, signals)?;
    if a.json {
        print_json(&report);
    } else if let Some(names) = &report.restored {
        eprintln!(
            "restored from backup {} ({}) into the live database: {}",
            report.backup,
            report.target,
            names.join(", ")
        );
    } else if let Some(f) = &report.file {
        eprintln!(
            "dumped database {} from backup {} ({}) to {} in {:.1}s",
            report.database,
            report.backup,
            report.target,
            f.display(),
            report.recovery_s + report.dump_s
        );
    }
    Ok(())
}

fn stage_line(stage: &Stage) -> String {
    match stage {
        Stage::Planned(plan) => format!(
            "mounting backup {} (PostgreSQL {}), recovering to {}",
            plan.snapshot.id,
            plan.snapshot.pg_major,
            plan.describe()
        ),
        Stage::Recovering => "starting the server on the view and replaying WAL".into(),
        Stage::Dumping => "running pg_dump".into(),
        Stage::Restoring => "restoring into the live database (one transaction)".into(),
    }
}
