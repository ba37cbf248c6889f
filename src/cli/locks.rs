//! `pgsnapfs locks`

use super::print_json;
use crate::error::Result;
use crate::lock;
use crate::store::Repository;
use serde::Serialize;

#[derive(clap::Args)]
pub struct Args {
    /// Remove this lease, if it is stale or its holder is on another host and gone.
    #[arg(long, value_name = "ID")]
    pub remove: Option<String>,
    /// With --remove: remove the lease even if its holder may still be running.
    #[arg(long, requires = "remove")]
    pub force: bool,
    #[arg(long, help = super::JSON_HELP)]
    pub json: bool,
}

#[derive(Serialize)]
struct LockRow {
    #[serde(flatten)]
    record: Option<lock::LeaseRecord>,
    stale: bool,
    /// Held on another machine and not refreshed within its TTL by this host's clock: its
    /// holder may be gone, or its clock behind ours; gc, expire and backup-keep watch its
    /// heartbeat before taking it over.
    overdue: bool,
    /// The id of a lease that cannot be read (it counts as live).
    #[serde(skip_serializing_if = "Option::is_none")]
    unreadable: Option<String>,
    /// Why it cannot be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

pub fn run(repo: &Repository, a: Args) -> Result<()> {
    if let Some(id) = &a.remove {
        lock::remove(repo, id, a.force)?;
        outln!("removed lease {id}");
        return Ok(());
    }
    let rows: Vec<LockRow> = lock::list(repo)?
        .into_iter()
        .map(|f| LockRow {
            unreadable: f.record.is_err().then(|| f.id().to_string()),
            stale: f.stale,
            overdue: f.overdue,
            error: f.record.as_ref().err().cloned(),
            record: f.record.ok(),
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
                match (row.stale, row.overdue) {
                    (true, _) => " STALE",
                    (_, true) => " OVERDUE (by this host's clock; another machine's lease)",
                    _ => "",
                },
                r.refreshed
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                if r.pins.is_empty() {
                    String::new()
                } else {
                    format!(", using {}", r.pins.join(", "))
                }
            ),
            None => outln!(
                "lease {} unreadable, counts as held: {}",
                row.unreadable.as_deref().unwrap_or_default(),
                row.error.as_deref().unwrap_or_default()
            ),
        }
    }
    Ok(())
}
