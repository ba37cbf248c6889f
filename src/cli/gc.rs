//! `pgsnapfs gc`

use super::{human, print_json};
use crate::error::Result;
use crate::gc::{self, GcOptions};
use crate::lock::Lease;
use crate::store::Repository;

#[derive(clap::Args)]
pub struct Args {
    /// Repack a pack when at least this share of its bytes is garbage (e.g. 50%).
    #[arg(long, default_value = "50%", value_parser = parse_percent)]
    pub repack_threshold: f64,
    /// Show what would be deleted and repacked; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long, help = super::JSON_HELP)]
    pub json: bool,
}

fn parse_percent(s: &str) -> std::result::Result<f64, String> {
    match s.trim_end_matches('%').parse::<f64>() {
        Ok(p) if p > 0.0 && p <= 100.0 => Ok(p / 100.0),
        _ => Err(format!(
            "{s:?} is not a percentage between 0 and 100, such as 50%"
        )),
    }
}

pub fn run(repo: &Repository, a: Args) -> Result<()> {
    // A dry run writes nothing, not even a lease.
    let lease = match a.dry_run {
        true => None,
        false => Some(Lease::exclusive(repo, "gc")?),
    };
    let opts = GcOptions {
        repack_threshold: a.repack_threshold,
        dry_run: a.dry_run,
    };
    let r = gc::run(repo, &opts, lease.as_ref())?;
    if a.json {
        print_json(&r);
        return Ok(());
    }
    let (would, deleted) = match a.dry_run {
        true => ("would ", "delete"),
        false => ("", "deleted"),
    };
    outln!(
        "{} packs ({}) before gc",
        r.packs_before,
        human(r.bytes_before)
    );
    if r.repacked_packs > 0 {
        outln!(
            "{would}repack {} packs ({}): live blobs {}copied ({}{}), {} backups rewritten",
            r.repacked_packs,
            human(r.repacked_bytes),
            if a.dry_run { "would be " } else { "" },
            if a.dry_run { "about " } else { "" },
            human(r.written_bytes),
            r.rewritten_backups.len()
        );
    }
    outln!(
        "{would}{deleted} {} packs, freeing {}",
        r.deleted_packs,
        human(r.freed_bytes)
    );
    if r.condemned_packs > 0 {
        outln!(
            "{} packs ({}) are unused but may still be read by running commands ({}); \
             the next gc after they finish deletes them",
            r.condemned_packs,
            human(r.condemned_bytes),
            r.waiting_for.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn percentages() {
        assert_eq!(super::parse_percent("50%"), Ok(0.5));
        assert_eq!(super::parse_percent("100"), Ok(1.0));
        for bad in ["0%", "101%", "half"] {
            assert!(super::parse_percent(bad).is_err(), "{bad}");
        }
    }
}
