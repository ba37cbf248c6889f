//! `pgsnapfs wal-push` and `pgsnapfs wal-fetch`

use crate::archive::{self, Pushed};
use crate::error::Result;
use crate::store::backend::RequestCounts;
use crate::store::Repository;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct PushArgs {
    /// The WAL file (%p).
    pub path: PathBuf,
    /// Print what was done (and the requests it took, on S3) as JSON on stdout.
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
    if archive::push(repo, &a.path)? == Pushed::AlreadyArchived {
        tracing::info!(
            "{} was already archived with identical content",
            a.path.display()
        );
    }
    if a.json {
        #[derive(serde::Serialize)]
        struct Out {
            file: String,
            #[serde(skip_serializing_if = "Option::is_none")]
            requests: Option<RequestCounts>,
        }
        super::print_json(&Out {
            file: a.path.display().to_string(),
            requests: repo.backend().stats(),
        });
    }
    Ok(())
}

pub fn fetch(repo: &Repository, a: FetchArgs) -> Result<()> {
    archive::fetch(repo, a.system, &a.name, &a.dest)
}
