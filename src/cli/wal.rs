//! `pgsnapfs wal-push` and `pgsnapfs wal-fetch`

use crate::archive::{self, PushOutcome, Pushed};
use crate::error::Result;
use crate::store::backend::RequestCounts;
use crate::store::Repository;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct PushArgs {
    /// The WAL file (%p).
    pub path: PathBuf,
    /// Print what was done as JSON on stdout: the object key, the size, the outcome (`stored`
    /// or `already_archived`), and on S3 the requests it took.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct FetchArgs {
    /// The WAL file name wanted (%f).
    pub name: String,
    /// Where to write it (%p).
    pub dest: PathBuf,
    /// The cluster, when the repository holds several.
    #[arg(long)]
    pub system: Option<u64>,
}

pub fn push(repo: &Repository, a: PushArgs) -> Result<()> {
    let pushed = archive::push(repo, &a.path)?;
    if pushed.outcome == PushOutcome::AlreadyArchived {
        tracing::info!(
            "{} was already archived with identical content",
            a.path.display()
        );
    }
    if a.json {
        #[derive(serde::Serialize)]
        struct Out {
            file: String,
            #[serde(flatten)]
            pushed: Pushed,
            #[serde(skip_serializing_if = "Option::is_none")]
            requests: Option<RequestCounts>,
        }
        super::print_json(&Out {
            file: a.path.display().to_string(),
            pushed,
            requests: repo.backend().stats(),
        });
    }
    Ok(())
}

pub fn fetch(repo: &Repository, a: FetchArgs) -> Result<()> {
    archive::fetch(repo, a.system, &a.name, &a.dest)
}
