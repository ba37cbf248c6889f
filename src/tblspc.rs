//! The tablespace creations a view's replay meets, and keeping their redo off this host.
//!
//! PostgreSQL's redo of CREATE TABLESPACE works on the location the record names, on the host
//! that replays it: chmod 0700, `PG_<major>_<catversion>` there made or, if it exists, taken
//! over (older releases remove it; 15 writes over the files in it), and a link from
//! pg_tblspc. A view replays archived WAL on whatever host runs it, the production host
//! included, so before its server starts pgsnapfs knows which creations the replay meets
//! ([`replayed`], from the segment summaries), and:
//! - a server pgsnapfs starts itself (`verify`, `dump`, `backup --from-archive`:
//!   [`Policy::Cover`]) runs in a private mount namespace where each location is covered by an
//!   empty directory of the view's own ([`plan_covers`], `crate::namespace`); `backup
//!   --from-archive` then stores the covers as the new tablespaces ([`relink_to_covers`]);
//! - a server someone else starts (`mount`) is refused ([`Policy::Refuse`], [`refusal`]);
//! - a restored server (`restore`, `restore --delta`) is refused where a version directory
//!   exists at a location ([`on_host`], [`restore_check`]), unless overridden;
//! - `wal-fetch` serving a view hands over no segment with a creation that is not covered
//!   ([`Guard`]): the last line of defence, and the check of segments whose summary predates
//!   the creations.
//!
//! Decision: a creation counts when replay may carry it out: it starts at or after the
//! backup's start, and (for a replay that ends at an LSN) the record before it starts before
//! that end, since an inclusive `recovery_target_lsn` also replays the first record at or past
//! the target. An in-place tablespace (empty location) lives inside the data directory.

use crate::archive::{self, SummaryCache};
use crate::error::{io, Error, Result};
use crate::pg::lsn::Lsn;
use crate::pg::target::Target;
use crate::pg::wal::{SegmentHeader, WalFile, DEFAULT_SEG_SIZE};
use crate::pg::walscan::{tablespace_creations, TablespaceCreation};
use crate::pitr::Plan;
use crate::store::Repository;
use crate::view::Owner;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

/// What a view does about the tablespace creations its replay meets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// pgsnapfs starts the server itself: in a private mount namespace, each location
    /// covered.
    Cover,
    /// Someone else starts the server (`mount`): refused before anything is mounted.
    Refuse,
}

/// Where the replay of a plan ends, if at a known position: the target LSN, or the backup's
/// end for a backup as it was taken; never before the backup's end, which replay always
/// reaches. `None`: through the plan's last segment.
pub fn replay_end(plan: &Plan) -> Option<Lsn> {
    let stop = plan.snapshot.stop_lsn;
    match &plan.target {
        Some(Target::Lsn(l)) => Some((*l).max(stop)),
        Some(Target::Immediate) => Some(stop),
        _ => None,
    }
}

/// Whether a replay from `start` to `end` (see [`replay_end`]) may carry out `c` on a host
/// directory.
pub fn replays(c: &TablespaceCreation, start: Lsn, end: Option<Lsn>) -> bool {
    c.lsn >= start && end.is_none_or(|e| c.prev < e) && c.location.as_deref() != Some("")
}

/// The creations the replay of `plan` may carry out on host directories, in WAL order, as the
/// segment summaries tell. Segments whose summary predates the creations are left to the
/// view's `wal-fetch` ([`Guard`]), which reads each as it serves it.
pub fn replayed(repo: &Repository, plan: &Plan) -> Result<Vec<TablespaceCreation>> {
    let seg_size = archive::segment_size(&plan.system);
    let mut sums =
        SummaryCache::new(repo, plan.system.sysid(), seg_size, true).with_catalog(&plan.catalog);
    let (start, end) = (plan.snapshot.start_lsn, replay_end(plan));
    sums.prefetch(&plan.path)?;
    let mut found = Vec::new();
    let mut unknown = 0;
    for &(tli, segno) in &plan.path {
        match sums.get(tli, segno)?.and_then(|s| s.tablespaces.as_ref()) {
            Some(made) => found.extend(made.iter().filter(|c| replays(c, start, end)).cloned()),
            None => unknown += 1,
        }
    }
    if unknown > 0 {
        tracing::info!(
            "{unknown} of the {} WAL segments to replay have no record of the tablespaces they \
             create (archived by an older pgsnapfs): wal-fetch checks them as it serves them",
            plan.path.len()
        );
    }
    Ok(found)
}

/// A creation for people: oid, location and LSN.
fn describe(c: &TablespaceCreation) -> String {
    match &c.location {
        Some(l) => format!("tablespace oid {} at '{l}' (WAL position {})", c.oid, c.lsn),
        None => format!(
            "a tablespace (WAL position {}; its record goes on into the next segment, so its \
             oid and location are not known)",
            c.lsn
        ),
    }
}

/// Whether the location exists on this host, in words.
fn on_this_host(c: &TablespaceCreation) -> &'static str {
    match &c.location {
        Some(l) if Path::new(l).exists() => "that directory exists on this host",
        Some(_) => "that directory does not exist on this host, and must not be made for it",
        None => "its directory may exist on this host",
    }
}

/// The refusal of a view whose replay meets `c`, for a server its user starts (`mount`).
pub fn refusal(c: &TablespaceCreation) -> Error {
    Error::BadInput(format!(
        "the WAL this view replays creates {}. PostgreSQL's replay of that record works on \
         that directory of the host the server runs on (chmod, removes its PG_* directory, \
         writes into it), and you start the server on a mount yourself, where pgsnapfs cannot \
         keep it off ({}). Mount a point before it with --target-lsn {} (or earlier), or use \
         `pgsnapfs verify` or `pgsnapfs dump`, which run their server in a private mount \
         namespace where an empty directory of the view's own stands in for that one",
        describe(c),
        on_this_host(c),
        c.prev
    ))
}

/// What the replay of one creation does to this host, for a restored server (`restore`,
/// `restore --delta`), which runs unconfined on the host it is restored on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnHost {
    /// The location holds the version directory: replay takes it over (older releases
    /// remove it, current ones create their files in it and write over those there).
    Destroys(PathBuf),
    /// The location is the restored directory's own tablespace (`restore --delta` over the
    /// cluster that made it): replay replaces it, as it should.
    Own,
    /// The location exists without the version directory: replay sets its mode to 0700 and
    /// creates the version directory in it.
    Writes,
    /// The location does not exist here: replay stops at the record until it is made.
    Missing,
    /// The record's location is not known (it goes on into the next segment).
    Unknown,
}

/// What the replay of `c` does to this host (`version_dir`: the backup's
/// `PG_<major>_<catversion>`; `own`: whether a location is the restored directory's own
/// tablespace of that oid).
pub fn on_host(
    c: &TablespaceCreation,
    version_dir: &str,
    own: impl Fn(u32, &Path) -> bool,
) -> OnHost {
    let Some(location) = c.location.as_deref().map(Path::new) else {
        return OnHost::Unknown;
    };
    let version = location.join(version_dir);
    if std::fs::symlink_metadata(&version).is_ok() {
        match own(c.oid, location) {
            true => OnHost::Own,
            false => OnHost::Destroys(version),
        }
    } else if location.exists() {
        OnHost::Writes
    } else {
        OnHost::Missing
    }
}

/// The option that lets a restore's server replay creations over existing directories.
pub const OVERWRITE_OPTION: &str = "--overwrite-tablespaces";

/// Checks the creations a restore's replay carries out (`found`, with what each does to this
/// host) before anything is written: refuses (exit 2) one that would remove a directory of
/// this host's, or whose location is unknown, unless `overwrite`; otherwise says, one line
/// each, what recovery will do.
pub fn restore_check(
    found: &[(TablespaceCreation, OnHost)],
    overwrite: bool,
) -> Result<Vec<String>> {
    let mut said = Vec::new();
    for (c, host) in found {
        let what = describe(c);
        let before = format!("--target-lsn {} (or earlier)", c.prev);
        let line = match host {
            OnHost::Destroys(version) if !overwrite => {
                return Err(Error::BadInput(format!(
                    "the WAL this restore replays creates {what}. The restored server's \
                     replay of that record takes over {}, which exists on this host (another \
                     cluster's tablespace, perhaps production's): it writes its files over \
                     those there (older releases remove the directory first); \
                     --tablespace-map does not move it. Restore on another host, stop \
                     before it with {before}, or, if that directory may be destroyed, give \
                     {OVERWRITE_OPTION}",
                    version.display()
                )))
            }
            OnHost::Unknown if !overwrite => {
                return Err(Error::BadInput(format!(
                    "the WAL this restore replays creates {what}, so pgsnapfs cannot check \
                     what its replay would remove on this host. Stop before it with \
                     {before}, or give {OVERWRITE_OPTION} if any directory it names may be \
                     destroyed"
                )))
            }
            OnHost::Destroys(version) => format!(
                "replaying {what}, recovery takes over {} and writes over the files there \
                 ({OVERWRITE_OPTION})",
                version.display()
            ),
            OnHost::Unknown => format!(
                "replaying {what}, recovery may take over a directory of this host \
                 ({OVERWRITE_OPTION})"
            ),
            OnHost::Own => format!(
                "replaying {what}, recovery replaces this data directory's own tablespace \
                 there"
            ),
            OnHost::Writes => format!(
                "replaying {what}, recovery sets that directory's mode to 0700 and creates \
                 the tablespace in it"
            ),
            OnHost::Missing => format!(
                "replaying {what}: that directory does not exist on this host, and recovery \
                 stops at that record (\"directory does not exist\") until it is created, \
                 empty and owned by the server's user; then start the server again"
            ),
        };
        said.push(line);
    }
    Ok(said)
}

/// A host directory hidden from a view's server behind an empty one of the view's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cover {
    /// The tablespace location, as the record names it.
    pub location: PathBuf,
    /// The view's directory mounted over it in the server's mount namespace.
    pub dir: PathBuf,
}

/// The view's directory of covers, below its scratch directory: `wal-fetch` finds the covers
/// there.
pub fn covers_dir(scratch: &Path) -> PathBuf {
    scratch.join("tablespaces")
}

/// One cover per location the replay creates a tablespace in, below `base`. Refuses when the
/// server could not run in a mount namespace of its own (`root`: the one privilege it takes),
/// when a location is not a directory here (`resolve` gives its canonical path if it is one),
/// since a mount point for it could not be made without touching the host, and when it holds
/// the view's `mountpoint` (canonical), which the cover would hide from the server.
pub fn plan_covers(
    found: &[TablespaceCreation],
    root: bool,
    resolve: impl Fn(&Path) -> Option<PathBuf>,
    mountpoint: &Path,
    base: &Path,
) -> Result<Vec<Cover>> {
    let mut covers: Vec<Cover> = Vec::new();
    for c in found {
        let what = describe(c);
        let before = format!("--target-lsn {} (or earlier)", c.prev);
        if !root {
            return Err(Error::BadInput(format!(
                "the WAL to replay creates {what}, whose replay works on that directory of \
                 this host; pgsnapfs runs the server in a private mount namespace, with an \
                 empty directory over it, only as root. Run as root, or stop before it with \
                 {before}"
            )));
        }
        let Some(location) = c.location.as_deref().map(PathBuf::from) else {
            return Err(Error::BadInput(format!(
                "the WAL to replay creates {what}, so pgsnapfs cannot cover its directory: \
                 stop before it with {before}"
            )));
        };
        let Some(resolved) = resolve(&location) else {
            return Err(Error::BadInput(format!(
                "the WAL to replay creates {what}, which is not a directory on this host: \
                 PostgreSQL's replay needs it, and pgsnapfs will not make it here. Stop \
                 before it with {before}, or run this on a host where that directory exists \
                 (it is left untouched)"
            )));
        };
        if mountpoint.starts_with(&resolved) {
            return Err(Error::BadInput(format!(
                "the WAL to replay creates {what}, which holds this view's mount point {}: \
                 covering it would hide the view from its server. Put the view elsewhere \
                 (TMPDIR for verify and dump, --work-dir for backup --from-archive), or stop \
                 before it with {before}",
                mountpoint.display()
            )));
        }
        if !covers.iter().any(|k| k.location == location) {
            let dir = base.join(covers.len().to_string());
            covers.push(Cover { location, dir });
        }
    }
    Ok(covers)
}

/// Makes the covers' directories, empty and owned by the server's user.
pub fn make_covers(covers: &[Cover], base: &Path, owner: Owner) -> Result<()> {
    for dir in std::iter::once(base).chain(covers.iter().map(|c| c.dir.as_path())) {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(dir)
            .map_err(io(format!("create {}", dir.display())))?;
        std::os::unix::fs::chown(dir, Some(owner.uid), Some(owner.gid))
            .map_err(io(format!("chown {}", dir.display())))?;
    }
    Ok(())
}

/// After a covered replay, as `backup --from-archive` stores the view: points each link of
/// `pg_tblspc` (in the view) that replay made to a covered location at that location's cover,
/// so that reading the view reads what replay wrote there, never the host's directory.
/// Returns the tablespaces relinked, as (oid, location).
pub fn relink_to_covers(pg_tblspc: &Path, covers: &[Cover]) -> Result<Vec<(u32, String)>> {
    let mut relinked = Vec::new();
    if covers.is_empty() {
        return Ok(relinked);
    }
    let entries =
        std::fs::read_dir(pg_tblspc).map_err(io(format!("list {}", pg_tblspc.display())))?;
    for entry in entries {
        let entry = entry.map_err(io(format!("list {}", pg_tblspc.display())))?;
        let Ok(oid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        if let Some(cover) = covers.iter().find(|c| c.location == target) {
            let link = entry.path();
            std::fs::remove_file(&link).map_err(io(format!("remove {}", link.display())))?;
            std::os::unix::fs::symlink(&cover.dir, &link)
                .map_err(io(format!("link {}", link.display())))?;
            relinked.push((oid, target.display().to_string()));
        }
    }
    relinked.sort();
    Ok(relinked)
}

/// The `wal-fetch` options of a view's restore_command that turn its [`Guard`] on.
pub fn guard_options(covers: &Path, start: Lsn, end: Option<Lsn>) -> String {
    let mut o = format!(
        " --view-tablespaces {} --replay-from {start}",
        crate::walfetch::sh_quote(&covers.display().to_string())
    );
    if let Some(end) = end {
        o += &format!(" --replay-until {end}");
    }
    o
}

/// What `wal-fetch` serving a view checks before it hands over a segment: every creation the
/// replay may carry out ([`replays`]) is at a location covered for this server, i.e. that
/// directory is one of the view's covers, as it is in the mount namespace pgsnapfs runs the
/// server in, and never outside it.
#[derive(Debug, Clone)]
pub struct Guard {
    /// The view's directory of covers.
    pub covers: PathBuf,
    /// Where replay starts.
    pub start: Lsn,
    /// Where replay ends, if known.
    pub end: Option<Lsn>,
}

impl Guard {
    /// Fails, saying why, when segment `name` (bytes `data`) creates a tablespace that is not
    /// covered; history files pass.
    pub fn check(&self, name: &str, data: &[u8]) -> Result<()> {
        if !matches!(
            WalFile::parse(name, DEFAULT_SEG_SIZE),
            Some(WalFile::Segment { .. } | WalFile::Partial { .. })
        ) {
            return Ok(());
        }
        let header = SegmentHeader::parse(data)?;
        let found = tablespace_creations(data, &header)?;
        for c in found.iter().filter(|c| replays(c, self.start, self.end)) {
            if !c
                .location
                .as_deref()
                .is_some_and(|l| self.covered(Path::new(l)))
            {
                return Err(Error::BadInput(format!(
                    "refusing to hand {name} to this view's server: it creates {}, and \
                     PostgreSQL's replay of that record would work on that directory of this \
                     host. Recovery stops here; choose a point before it, or use `pgsnapfs \
                     verify` or `pgsnapfs dump`, which keep the host's directory out of reach",
                    describe(c)
                )));
            }
        }
        Ok(())
    }

    /// Whether `location` is one of the covers (the same directory), as it is in the
    /// server's mount namespace.
    fn covered(&self, location: &Path) -> bool {
        let Ok(at) = std::fs::metadata(location) else {
            return false;
        };
        let Ok(entries) = std::fs::read_dir(&self.covers) else {
            return false;
        };
        entries.flatten().any(|e| {
            std::fs::metadata(e.path()).is_ok_and(|m| m.dev() == at.dev() && m.ino() == at.ino())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn made(lsn: u64, prev: u64, oid: u32, location: Option<&str>) -> TablespaceCreation {
        TablespaceCreation {
            lsn: Lsn(lsn),
            prev: Lsn(prev),
            oid,
            location: location.map(String::from),
        }
    }

    #[test]
    fn a_creation_counts_when_replay_may_carry_it_out() {
        let c = made(1000, 900, 5, Some("/srv/ts"));
        assert!(replays(&c, Lsn(0), None));
        assert!(replays(&c, Lsn(1000), None));
        assert!(!replays(&c, Lsn(1001), None), "before the backup's start");
        // An inclusive target replays the first record at or past it.
        assert!(replays(&c, Lsn(0), Some(Lsn(901))));
        assert!(replays(&c, Lsn(0), Some(Lsn(1000))));
        assert!(!replays(&c, Lsn(0), Some(Lsn(900))));
        assert!(
            !replays(&made(1000, 900, 5, Some("")), Lsn(0), None),
            "in place"
        );
        assert!(
            replays(&made(1000, 900, 5, None), Lsn(0), None),
            "unknown location"
        );
    }

    #[test]
    fn refusals_name_the_creation_and_the_way_out() {
        let c = made(
            0x3000148,
            0x3000110,
            16385,
            Some("/nonexistent/pgsnapfs/ts"),
        );
        let m = refusal(&c).to_string();
        for part in [
            "oid 16385",
            "'/nonexistent/pgsnapfs/ts'",
            "0/3000148",
            "--target-lsn 0/3000110",
            "pgsnapfs verify",
            "does not exist on this host",
        ] {
            assert!(m.contains(part), "{part}: {m}");
        }
        assert_eq!(refusal(&c).exit_code(), 2);
    }

    #[test]
    fn a_restore_is_refused_where_replay_takes_over_a_directory_of_this_host() {
        let tmp = tempfile::tempdir().unwrap();
        let (taken, empty) = (tmp.path().join("taken"), tmp.path().join("empty"));
        std::fs::create_dir_all(taken.join("PG_15_202209061")).unwrap();
        std::fs::create_dir(&empty).unwrap();
        let at = |p: &Path| made(0x3000148, 0x3000110, 16385, Some(p.to_str().unwrap()));
        let host = |c: &TablespaceCreation, own: bool| on_host(c, "PG_15_202209061", |_, _| own);
        let missing = tmp.path().join("missing");
        assert_eq!(
            host(&at(&taken), false),
            OnHost::Destroys(taken.join("PG_15_202209061"))
        );
        assert_eq!(host(&at(&taken), true), OnHost::Own);
        assert_eq!(host(&at(&empty), false), OnHost::Writes);
        assert_eq!(host(&at(&missing), false), OnHost::Missing);
        assert_eq!(host(&made(1, 0, 1, None), false), OnHost::Unknown);

        let destroys = (at(&taken), host(&at(&taken), false));
        let e = restore_check(std::slice::from_ref(&destroys), false).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let m = e.to_string();
        for part in [
            "oid 16385",
            "0/3000148",
            "PG_15_202209061",
            "--target-lsn 0/3000110",
            "another host",
            OVERWRITE_OPTION,
        ] {
            assert!(m.contains(part), "{part}: {m}");
        }
        let unknown = (made(1, 0, 1, None), OnHost::Unknown);
        assert!(restore_check(std::slice::from_ref(&unknown), false).is_err());
        let fine = [
            (at(&empty), OnHost::Writes),
            (at(&missing), OnHost::Missing),
            (at(&taken), OnHost::Own),
        ];
        let said = restore_check(&fine, false).unwrap();
        assert!(said[0].contains("mode to 0700"), "{said:?}");
        assert!(said[1].contains("does not exist on this host"), "{said:?}");
        assert!(said[2].contains("own tablespace"), "{said:?}");
        let said = restore_check(&[destroys, unknown], true).unwrap();
        assert_eq!(said.len(), 2, "overridden: {said:?}");
    }

    #[test]
    fn covers_one_directory_per_location_as_root_only() {
        let base = Path::new("/s/tablespaces");
        let found = [
            made(10, 5, 1, Some("/a")),
            made(20, 15, 2, Some("/b")),
            made(30, 25, 3, Some("/a")),
        ];
        let dir = |p: &Path| Some(p.to_path_buf());
        let view = Path::new("/tmp/v/data");
        let covers = plan_covers(&found, true, dir, view, base).unwrap();
        assert_eq!(
            covers,
            vec![
                Cover {
                    location: "/a".into(),
                    dir: "/s/tablespaces/0".into()
                },
                Cover {
                    location: "/b".into(),
                    dir: "/s/tablespaces/1".into()
                },
            ]
        );
        assert!(plan_covers(&[], false, |_| None, view, base)
            .unwrap()
            .is_empty());
        let m = plan_covers(&found, false, dir, view, base)
            .unwrap_err()
            .to_string();
        assert!(
            m.contains("only as root") && m.contains("--target-lsn 0/5"),
            "{m}"
        );
        let m = plan_covers(
            &found,
            true,
            |p| (p != Path::new("/b")).then(|| p.to_path_buf()),
            view,
            base,
        )
        .unwrap_err()
        .to_string();
        assert!(
            m.contains("oid 2 at '/b'") && m.contains("not a directory"),
            "{m}"
        );
        let m = plan_covers(&[made(10, 5, 0, None)], true, dir, view, base)
            .unwrap_err()
            .to_string();
        assert!(m.contains("cannot cover"), "{m}");
        // A location (here through a link) holding the view's mount point.
        let m = plan_covers(
            &[made(10, 5, 7, Some("/scratch-link"))],
            true,
            |_| Some("/tmp".into()),
            view,
            base,
        )
        .unwrap_err()
        .to_string();
        assert!(
            m.contains("holds this view's mount point /tmp/v/data"),
            "{m}"
        );
    }

    #[test]
    fn the_guard_knows_a_cover_by_the_directory_itself() {
        let tmp = tempfile::tempdir().unwrap();
        let covers = tmp.path().join("tablespaces");
        let (cover, other) = (covers.join("0"), tmp.path().join("other"));
        for d in [&cover, &other] {
            std::fs::create_dir_all(d).unwrap();
        }
        // As the namespace's bind mount makes it, a location that is the cover itself.
        let location = tmp.path().join("location");
        std::os::unix::fs::symlink(&cover, &location).unwrap();
        let guard = Guard {
            covers: covers.clone(),
            start: Lsn(0),
            end: None,
        };
        assert!(guard.covered(&location));
        assert!(
            !guard.covered(&other),
            "a directory of the same name elsewhere"
        );
        assert!(!guard.covered(&tmp.path().join("missing")));
        let elsewhere = Guard {
            covers: tmp.path().join("none"),
            ..guard.clone()
        };
        assert!(!elsewhere.covered(&location), "no covers: nothing covered");
        // A segment that creates no tablespace, and a history file, pass.
        let segment = include_bytes!("pg/testdata/pg15_wal_000000010000000000000002.prefix");
        guard.check("000000010000000000000002", segment).unwrap();
        guard
            .check("00000002.history", b"1\t0/3000000\tno recovery target\n")
            .unwrap();
        assert!(guard.check("000000010000000000000002", b"not WAL").is_err());
    }

    #[test]
    fn links_to_covered_locations_point_at_the_covers() {
        let tmp = tempfile::tempdir().unwrap();
        let tblspc = tmp.path().join("pg_tblspc");
        std::fs::create_dir(&tblspc).unwrap();
        let cover = Cover {
            location: "/srv/ts".into(),
            dir: tmp.path().join("covers/0"),
        };
        std::os::unix::fs::symlink("/srv/ts", tblspc.join("16387")).unwrap();
        std::os::unix::fs::symlink("/view/.pgsnapfs-tablespaces/16390", tblspc.join("16390"))
            .unwrap();
        assert!(relink_to_covers(&tblspc, &[]).unwrap().is_empty());
        assert_eq!(
            relink_to_covers(&tblspc, std::slice::from_ref(&cover)).unwrap(),
            vec![(16387, "/srv/ts".to_string())]
        );
        assert_eq!(std::fs::read_link(tblspc.join("16387")).unwrap(), cover.dir);
        assert_eq!(
            std::fs::read_link(tblspc.join("16390")).unwrap(),
            Path::new("/view/.pgsnapfs-tablespaces/16390"),
            "a tablespace of the backup stays"
        );
    }

    #[test]
    fn guard_options_quote_the_directory() {
        assert_eq!(
            guard_options(Path::new("/s/it's"), Lsn(0x100), Some(Lsn(0x200))),
            r" --view-tablespaces '/s/it'\''s' --replay-from 0/100 --replay-until 0/200"
        );
        assert_eq!(
            guard_options(Path::new("/s"), Lsn(0x100), None),
            " --view-tablespaces '/s' --replay-from 0/100"
        );
    }
}
