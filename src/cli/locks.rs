//! `pgsnapfs locks`

use super::print_json;
use crate::error::Result;
use crate::lock;
use crate::store::Repository;
use serde::Serialize;

#[derive(clap::Args)]
pub struct Args {
    /// Remove this lease: for a command that is gone but whose lease is not stale yet.
    #[arg(long, value_name = "ID")]
    pub remove: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct LockRow {
    #[serde(flatten)]
    record: Option<lock::LeaseRecord>,
    stale: bool,
    /// The id of a lease that cannot be read (it counts as live).
    #[serde(skip_serializing_if = "Option::is_none")]
    unreadable: Option<String>,
}

pub fn run(repo: &Repository, a: Args) -> Result<()> {
    if let Some(id) = &a.remove {
        lock::remove(repo, id)?;
        outln!("removed lease {id}");
        return Ok(());
    }
    let rows: Vec<LockRow> = lock::list(repo)?
        .into_iter()
        .map(|f| LockRow {
            unreadable: f.record.is_none().then(|| f.id().to_string()),
            stale: f.stale,
            record: f.record,
        })
        .collect();
    if a.json {
        print_json(&rows);
        return Ok(());
    }
    if rows.is_empty() {
        outln!("no leases: nothing is using the repository");
    }
    for row in &rows {
        match &row.record {
            Some(r) => outln!(
                "{}{} refreshed {}{}",
                r.describe(),
                if row.stale { " STALE" } else { "" },
                r.refreshed
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                if r.pins.is_empty() {
                    String::new()
                } else {
                    format!(", using {}", r.pins.join(", "))
                }
            ),
            None => outln!(
                "lease {} unreadable (counts as live)",
                row.unreadable.as_deref().unwrap_or_default()
            ),
        }
    }
    Ok(())
}
