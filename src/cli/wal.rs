//! `pgsnapfs wal-push` and `pgsnapfs wal-fetch`

use crate::archive::{self, Pushed};
use crate::error::Result;
use crate::store::Repository;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct PushArgs {
    /// The WAL file (%p).
    pub path: PathBuf,
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
    Ok(())
}

pub fn fetch(repo: &Repository, a: FetchArgs) -> Result<()> {
    archive::fetch(repo, a.system, &a.name, &a.dest)
}
