//! `pgsnapfs check`

use super::{human, print_json, progress};
use crate::check::{self, CheckOptions, Report, Subset};
use crate::error::Result;
use crate::lock::Lease;
use crate::store::{Repository, StoreError};
use std::fmt::Write as _;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Also read every blob of every pack and every archived WAL file and summary, and check
    /// their checksums.
    #[arg(long)]
    pub read_data: bool,
    /// Like --read-data, for one part of the repository: N/M is the N-th of M fixed slices
    /// (run 1/7 … 7/7 on successive days), P% a random P percent.
    #[arg(long, value_name = "N/M|P%", value_parser = Subset::parse)]
    pub read_data_subset: Option<Subset>,
    /// Read again what an earlier check verified (otherwise skipped for 30 days).
    #[arg(long)]
    pub full: bool,
    /// Where to keep the record of verified objects [default: $XDG_STATE_HOME/pgsnapfs, else
    /// ~/.local/state/pgsnapfs].
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(repo: &Repository, a: Args) -> Result<()> {
    // A shared lease: gc must not delete packs while check reads them and reports them missing.
    let _lease = Lease::shared(repo, "check")?;
    let read_data = a.read_data || a.read_data_subset.is_some();
    let record = check::record_path(a.state_dir.clone(), &repo.config.id);
    if read_data && record.is_none() {
        tracing::warn!(
            "no state directory (set --state-dir, XDG_STATE_HOME or HOME): everything is read, \
             nothing recorded"
        );
    }
    let bar = progress(None, "checking");
    let tick = bar.clone();
    let report = check::check(
        repo,
        CheckOptions {
            read_data,
            subset: a.read_data_subset.unwrap_or(Subset::All),
            full: a.full,
            record,
            progress: Box::new(move |n| tick.inc(n)),
        },
    )?;
    bar.finish_and_clear();
    if a.json {
        print_json(&report);
    } else {
        out!("{}", render(&report));
    }
    if report.ok {
        Ok(())
    } else {
        Err(StoreError::corrupt(
            format!("repository {}", repo.backend().location()),
            format!(
                "check found {} problems (listed above); other backups are unaffected",
                report.problems.len()
            ),
        )
        .into())
    }
}

/// Files listed per problem for people; `--json` lists them all.
const FILES_SHOWN: usize = 10;

/// The report for people.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "checked {} backup{} ({} tree and list blobs), {} packs",
        r.snapshots,
        if r.snapshots == 1 { "" } else { "s" },
        r.trees,
        r.packs
    );
    if r.read_data {
        let _ = write!(
            out,
            " ({} read, {} blobs re-hashed; {} verified by an earlier check)",
            r.packs_read, r.blobs_checked, r.packs_verified_earlier
        );
    }
    let _ = write!(out, ", {} WAL objects", r.wal_objects);
    if r.read_data {
        let _ = write!(out, " ({} read)", r.wal_objects_read);
    }
    let _ = writeln!(out, "; {} read", human(r.bytes_read));
    if r.packs_unreferenced > 0 {
        let _ = writeln!(
            out,
            "{} packs are referenced by no backup (gc removes them)",
            r.packs_unreferenced
        );
    }
    for (sysid, done) in &r.wal_index {
        for d in done
            .iter()
            .filter(|d| d.outcome != crate::walindex::Outcome::UpToDate)
        {
            let _ = writeln!(out, "WAL index of system {sysid}, {d}");
        }
    }
    for (sysid, why) in &r.wal_index_failed {
        let _ = writeln!(
            out,
            "WAL index of system {sysid} not rewritten ({why}): planning lists the archive instead"
        );
    }
    if r.problems.is_empty() {
        let _ = writeln!(out, "no problems found");
    }
    for w in &r.warnings {
        let kind = serde_json::to_value(w.kind).expect("serializes");
        let _ = writeln!(
            out,
            "WARNING {}: {}: {}",
            kind.as_str().unwrap_or_default(),
            w.object,
            w.detail
        );
    }
    for p in &r.problems {
        let kind = serde_json::to_value(p.kind).expect("serializes");
        let _ = writeln!(
            out,
            "PROBLEM {}: {}: {}",
            kind.as_str().unwrap_or_default(),
            p.object,
            p.detail
        );
        if !p.backups.is_empty() {
            let b: Vec<&str> = p.backups.iter().map(String::as_str).collect();
            let _ = writeln!(out, "  backups: {}", b.join(", "));
        }
        if !p.files.is_empty() {
            let f: Vec<&str> = p
                .files
                .iter()
                .take(FILES_SHOWN)
                .map(String::as_str)
                .collect();
            let more = p.files.len().saturating_sub(FILES_SHOWN);
            let _ = write!(out, "  files: {}", f.join(", "));
            if more > 0 {
                let _ = write!(out, " and {more} more (--json lists all)");
            }
            let _ = writeln!(out);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{Problem, ProblemKind};

    #[test]
    fn report_for_people_and_machines() {
        let mut r = Report {
            snapshots: 2,
            packs: 3,
            read_data: true,
            packs_read: 3,
            blobs_checked: 40,
            bytes_read: 2048,
            ..Report::default()
        };
        r.ok = true;
        let text = render(&r);
        assert!(text.contains("checked 2 backups"), "{text}");
        assert!(text.contains("40 blobs re-hashed"), "{text}");
        assert!(text.ends_with("no problems found\n"), "{text}");

        let p = Problem {
            kind: ProblemKind::BlobCorrupt,
            object: "packs/ab/ab12".into(),
            detail: "blob 1234: checksum mismatch".into(),
            backups: ["B2".to_string(), "B3".to_string()].into(),
            files: (0..12).map(|i| format!("base/5/{i}")).collect(),
        };
        r.ok = false;
        r.problems.push(p);
        let text = render(&r);
        assert!(
            text.contains("PROBLEM blob_corrupt: packs/ab/ab12: blob 1234: checksum mismatch"),
            "{text}"
        );
        assert!(text.contains("  backups: B2, B3\n"), "{text}");
        assert!(text.contains("and 2 more"), "{text}");
        assert!(!text.contains("no problems"), "{text}");

        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["ok"], false);
        assert_eq!(json["problems"][0]["kind"], "blob_corrupt");
        assert_eq!(json["problems"][0]["backups"][1], "B3");
        assert_eq!(json["problems"][0]["files"].as_array().unwrap().len(), 12);
        assert_eq!(json["bytes_read"], 2048);
    }
}
