//! What a session mounts and how, decided from the request alone before anything is touched.

use crate::error::{Error, Result};
use crate::pg::recovery::RecoverySettings;
use crate::pg::target::TargetAction;
use crate::pitr::{self, Goal, Point};
use crate::view::Owner;
use crate::walpath::TimelineChoice;
use std::path::{Path, PathBuf};

/// What a goal that names no backup and no target means to the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Latest {
    /// The catalogue of every backup and all archived WAL (`mount`).
    Catalogue,
    /// The newest backup as it was taken (`verify`).
    NewestBackup,
}

/// What is mounted.
#[derive(Debug)]
pub enum Subject {
    /// The read-only catalogue; with a scratch directory for `--hydrate`'s local copies.
    Catalogue {
        /// Where local copies go.
        scratch: Option<PathBuf>,
    },
    /// A writable view of one point in time, its server's writes going to `scratch`.
    View {
        /// The point in time.
        goal: Goal,
        /// Where the server's writes go.
        scratch: PathBuf,
    },
}

/// Chooses what to mount, refusing options that do not fit it. `hydrate`: local copies are
/// wanted, which need a scratch directory.
pub fn subject(
    goal: Goal,
    latest: Latest,
    scratch: Option<PathBuf>,
    hydrate: bool,
) -> Result<Subject> {
    if hydrate && scratch.is_none() {
        return Err(Error::BadInput(
            "--hydrate copies files to local disk: give it a place with --scratch DIR".into(),
        ));
    }
    let goal = match (&goal.to, latest) {
        (Point::Latest, Latest::Catalogue) => {
            if goal.timeline != TimelineChoice::Auto {
                return Err(Error::BadInput(
                    "--target-timeline chooses the timeline of a point-in-time view: give it \
                     with --backup or a --target-* option"
                        .into(),
                ));
            }
            if scratch.is_some() && !hydrate {
                return Err(Error::BadInput(
                    "--scratch is for a point-in-time mount or --hydrate: add --backup, a \
                     --target-*, or --hydrate"
                        .into(),
                ));
            }
            return Ok(Subject::Catalogue { scratch });
        }
        (Point::Latest, Latest::NewestBackup) => Goal {
            to: Point::Backup("latest".into()),
            ..goal
        },
        _ => goal,
    };
    let scratch = scratch.ok_or_else(|| {
        Error::BadInput("a point-in-time mount needs --scratch DIR for the server's writes".into())
    })?;
    Ok(Subject::View { goal, scratch })
}

/// The recovery settings of a view of `plan`; a `standby` follows every timeline to its
/// end, with no target.
pub fn settings(
    plan: &pitr::Plan,
    restore_command: String,
    action: TargetAction,
    standby: bool,
) -> RecoverySettings {
    RecoverySettings {
        restore_command,
        target: if standby { None } else { plan.target.clone() },
        action,
        timeline: Some(match standby {
            true => "latest".to_string(),
            false => plan.timeline.to_string(),
        }),
    }
}

/// Where a view keeps the passphrase for its server's `wal-fetch`.
pub fn key_file(scratch: &Path) -> PathBuf {
    scratch.join("passphrase")
}

/// The mount's source in /proc/mounts: `pgsnapfs[-COMMAND][:BACKUP]@PID`, from which
/// `umount` finds the process serving it.
pub fn fsname(command: &str, backup: Option<&str>, pid: u32) -> String {
    let mut name = match command {
        "mount" => "pgsnapfs".to_string(),
        other => format!("pgsnapfs-{other}"),
    };
    if let Some(id) = backup {
        name += &format!(":{id}");
    }
    format!("{name}@{pid}")
}

/// The FUSE options of a session: files owned by the server's user, which root lets in
/// with allow_other; writable through a copy-on-write layer for a view, `durable` for a
/// clone. With `passthrough`
/// (local copies from `--hydrate`), the kernel's writeback cache is off: it would turn
/// passthrough off.
pub fn fuse_options(
    fsname: String,
    owner: Owner,
    is_root: bool,
    writable: Option<PathBuf>,
    durable: bool,
    passthrough: bool,
) -> pgsnapfs_fuse::MountOptions {
    pgsnapfs_fuse::MountOptions {
        fsname,
        uid: owner.uid,
        gid: owner.gid,
        allow_other: is_root,
        writable,
        durable,
        block_size: crate::pg::PAGE_SIZE as u32,
        threads: 4,
        writeback_cache: !passthrough,
        passthrough,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::target::Target;

    fn goal(to: Point, timeline: TimelineChoice) -> Goal {
        Goal { to, timeline }
    }

    fn bad(r: Result<Subject>) -> String {
        match r {
            Err(Error::BadInput(m)) => m,
            other => panic!("expected bad input, got {other:?}"),
        }
    }

    #[test]
    fn nothing_named_mounts_the_catalogue_or_verifies_the_newest_backup() {
        let latest = || goal(Point::Latest, TimelineChoice::Auto);
        assert!(matches!(
            subject(latest(), Latest::Catalogue, None, false),
            Ok(Subject::Catalogue { scratch: None })
        ));
        let scratch = PathBuf::from("/s");
        match subject(latest(), Latest::NewestBackup, Some(scratch.clone()), false) {
            Ok(Subject::View { goal, scratch: s }) => {
                assert!(matches!(goal.to, Point::Backup(ref b) if b == "latest"));
                assert_eq!(s, scratch);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn options_that_do_not_fit_what_is_mounted_are_refused() {
        let m = bad(subject(
            goal(Point::Latest, TimelineChoice::BlobId(2)),
            Latest::Catalogue,
            None,
            false,
        ));
        assert!(m.contains("--target-timeline"), "{m}");
        let m = bad(subject(
            goal(Point::Latest, TimelineChoice::Auto),
            Latest::Catalogue,
            Some("/s".into()),
            false,
        ));
        assert!(m.contains("--scratch is for a point-in-time mount"), "{m}");
        let m = bad(subject(
            goal(
                Point::Target(Target::Name("before".into())),
                TimelineChoice::Auto,
            ),
            Latest::Catalogue,
            None,
            false,
        ));
        assert!(m.contains("needs --scratch"), "{m}");
        let m = bad(subject(
            goal(Point::Latest, TimelineChoice::Auto),
            Latest::Catalogue,
            None,
            true,
        ));
        assert!(m.contains("--hydrate copies files"), "{m}");
    }

    #[test]
    fn hydrating_the_catalogue_takes_a_scratch_directory_and_passthrough_no_writeback() {
        let s = subject(
            goal(Point::Latest, TimelineChoice::Auto),
            Latest::Catalogue,
            Some("/s".into()),
            true,
        );
        assert!(
            matches!(s, Ok(Subject::Catalogue { scratch: Some(ref d) }) if d == Path::new("/s"))
        );
        let owner = Owner { uid: 5, gid: 6 };
        let o = fuse_options("n".into(), owner, true, Some("/s/cow".into()), false, true);
        assert!(o.passthrough && !o.writeback_cache);
    }

    #[test]
    fn file_system_names_lead_back_to_the_process() {
        assert_eq!(fsname("mount", None, 42), "pgsnapfs@42");
        assert_eq!(fsname("mount", Some("B1"), 42), "pgsnapfs:B1@42");
        assert_eq!(fsname("verify", Some("B1"), 7), "pgsnapfs-verify:B1@7");
    }

    #[test]
    fn a_view_is_writable_through_its_scratch_directory() {
        let owner = Owner { uid: 5, gid: 6 };
        let o = fuse_options("n".into(), owner, true, Some("/s/cow".into()), true, false);
        assert_eq!((o.uid, o.gid, o.allow_other), (5, 6, true));
        assert_eq!(o.writable.as_deref(), Some(Path::new("/s/cow")));
        assert_eq!(o.block_size, 8192);
        assert_eq!(key_file(Path::new("/s")), Path::new("/s/passphrase"));
    }
}
