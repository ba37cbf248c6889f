//! Which files of a data directory belong in a base backup, following
//! pg_basebackup (backup/basebackup.c: excludeDirContents, excludeFiles,
//! temporary files and relations, unlogged relations).
//! Key type: `Entry`, the verdict for one path.
//! Decision: names are matched at any depth, as sendDir does, and relation
//! file naming is decided in this one module (`is_relation_file`).

use std::collections::HashSet;

/// What a base backup does with one file or directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// Store it.
    Keep,
    /// Keep the directory itself (its permissions matter) but not what it
    /// holds: every entry in it classifies as `Skip`, except
    /// pg_wal/archive_status (and pg_wal/summaries on 17+), kept empty too.
    SkipContents,
    /// Leave it out of the backup.
    Skip,
}

/// Directories whose contents the server removes or rebuilds at start.
const EXCLUDE_DIR_CONTENTS: [&str; 7] = [
    "pg_stat_tmp",
    "pg_replslot",
    "pg_dynshmem",
    "pg_notify",
    "pg_serial",
    "pg_snapshots",
    "pg_subtrans",
];

/// Files never copied; the bool asks for a prefix match.
const EXCLUDE_FILES: [(&str, bool); 8] = [
    ("postgresql.auto.conf.tmp", false),
    ("current_logfiles.tmp", false),
    // The relcache init file and its temporary files are rebuilt at start.
    ("pg_internal.init", true),
    // The backup gets the ones returned by pg_backup_stop().
    ("backup_label", false),
    ("tablespace_map", false),
    ("backup_manifest", false),
    ("postmaster.pid", false),
    ("postmaster.opts", false),
];

/// PG_TEMP_FILE_PREFIX: temporary files and directories (pgsql_tmp).
const TEMP_FILE_PREFIX: &str = "pgsql_tmp";

/// Directories under pg_wal that a backup keeps, empty: archive_status, and
/// summaries on 17+ (absent before, so never asked about).
const WAL_SUBDIRS_KEPT: [&str; 2] = ["archive_status", "summaries"];

/// Classifies a path relative to PGDATA ("/"-separated, e.g.
/// "base/5/pg_internal.init"); `is_dir` is false for files and symlinks.
/// Unlogged relations need the whole directory: see `unlogged_skips`.
/// global/pg_control is kept; copy it last, as pg_basebackup does, so that
/// it is not older than the rest.
pub fn classify(rel_path: &str, is_dir: bool) -> Entry {
    let parts: Vec<&str> = rel_path.split('/').collect();
    let (name, parents) = parts.split_last().expect("split yields one part");
    for (depth, dir) in parents.iter().enumerate() {
        if EXCLUDE_DIR_CONTENTS.contains(dir) || dir.starts_with(TEMP_FILE_PREFIX) {
            return Entry::Skip;
        }
        if depth == 0 && *dir == "pg_wal" {
            let kept = parents.len() == 1 && is_dir && WAL_SUBDIRS_KEPT.contains(name);
            return if kept {
                Entry::SkipContents
            } else {
                Entry::Skip
            };
        }
    }
    if name.starts_with(TEMP_FILE_PREFIX) {
        return Entry::Skip;
    }
    let excluded = EXCLUDE_FILES.iter().any(|&(f, prefix)| {
        if prefix {
            name.starts_with(f)
        } else {
            *name == f
        }
    });
    if excluded {
        return Entry::Skip;
    }
    if is_database_dir(&parents.join("/")) && is_temp_relation_file(name) {
        return Entry::Skip;
    }
    // Like pg_basebackup, a symlink here becomes an empty directory.
    if EXCLUDE_DIR_CONTENTS.contains(name) || rel_path == "pg_wal" {
        return Entry::SkipContents;
    }
    Entry::Keep
}

/// Whether a directory (relative to PGDATA) holds a database's relations:
/// `base/<oid>` or `pg_tblspc/<oid>/<version dir>/<oid>`.
pub fn is_database_dir(rel_dir: &str) -> bool {
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match rel_dir.split('/').collect::<Vec<_>>()[..] {
        ["base", db] => all_digits(db),
        ["pg_tblspc", spc, version, db] => {
            all_digits(spc) && version.starts_with("PG_") && all_digits(db)
        }
        _ => false,
    }
}

/// TABLESPACE_VERSION_DIRECTORY: the directory a server of this major and
/// catalog version uses inside each tablespace, e.g. "PG_15_202209061".
/// Other version directories (left by pg_upgrade) are not part of a backup.
pub fn tablespace_version_dir(major: u32, catalog_version: u32) -> String {
    format!("PG_{major}_{catalog_version}")
}

/// The names in one database directory that are forks of unlogged relations
/// (they have an `_init` fork) and so are skipped; the `_init` forks are kept
/// because recovery recreates the relations from them.
pub fn unlogged_skips(dir_file_names: &[&str]) -> HashSet<String> {
    let inits: HashSet<&str> = dir_file_names
        .iter()
        .filter_map(|n| relation_file(n))
        .filter(|r| r.fork == Fork::Init)
        .map(|r| r.number)
        .collect();
    dir_file_names
        .iter()
        .filter(|n| {
            relation_file(n).is_some_and(|r| r.fork != Fork::Init && inits.contains(r.number))
        })
        .map(|n| n.to_string())
        .collect()
}

/// Whether a file name is a (non-temporary) relation file: "16384",
/// "16384.1", "16384_fsm", "16384_vm", "16384_init", "16384_vm.2".
pub fn is_relation_file(name: &str) -> bool {
    relation_file(name).is_some()
}

/// A relation fork, numbered as ForkNumber is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fork {
    /// The relation's data.
    Main = 0,
    /// The free space map (`_fsm`).
    Fsm = 1,
    /// The visibility map (`_vm`).
    VisibilityMap = 2,
    /// The init fork of an unlogged relation (`_init`).
    Init = 3,
}

struct RelationFile<'a> {
    number: &'a str,
    fork: Fork,
    segment: u32,
}

/// DEFAULTTABLESPACE_OID and GLOBALTABLESPACE_OID: the tablespaces of base/ and global/.
pub const DEFAULT_TABLESPACE: u32 = 1663;
/// GLOBALTABLESPACE_OID, the tablespace of global/.
pub const GLOBAL_TABLESPACE: u32 = 1664;

/// Which relation segment a file of a data directory holds, as WAL names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelationPath {
    /// The tablespace's OID (base/ is [`DEFAULT_TABLESPACE`], global/ [`GLOBAL_TABLESPACE`]).
    pub tablespace: u32,
    /// 0 for the shared relations in global/.
    pub database: u32,
    /// The relation's file node number (the file name's leading digits).
    pub relfilenode: u32,
    /// Which fork the file holds.
    pub fork: Fork,
    /// The 1 GiB segment: ".1" is 1.
    pub segment: u32,
}

/// Parses `base/<db>/<file>`, `global/<file>` or `pg_tblspc/<spc>/<version dir>/<db>/<file>`
/// (relative to PGDATA); None for anything that is not a relation file.
pub fn relation_path(rel_path: &str) -> Option<RelationPath> {
    let (dir, name) = rel_path.rsplit_once('/')?;
    // Digits only: u32's parser would take "+5".
    let oid = |s: &str| -> Option<u32> {
        Some(s)
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))?
            .parse()
            .ok()
    };
    let (tablespace, database) = match dir.split('/').collect::<Vec<_>>()[..] {
        ["global"] => (GLOBAL_TABLESPACE, 0),
        ["base", db] => (DEFAULT_TABLESPACE, oid(db)?),
        ["pg_tblspc", spc, version, db] if version.starts_with("PG_") => (oid(spc)?, oid(db)?),
        _ => return None,
    };
    let file = relation_file(name)?;
    Some(RelationPath {
        tablespace,
        database,
        relfilenode: file.number.parse().ok()?,
        fork: file.fork,
        segment: file.segment,
    })
}

/// OIDCHARS: the most digits a relation number has.
const OID_CHARS: usize = 10;

/// parse_filename_for_nontemp_relation: digits, then "_<fork>", then ".<segment>".
fn relation_file(name: &str) -> Option<RelationFile<'_>> {
    let digits = name.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || digits > OID_CHARS {
        return None;
    }
    let (number, rest) = name.split_at(digits);
    let (fork, rest) = fork_suffix(rest)?;
    let segment = segment_suffix(rest)?;
    Some(RelationFile {
        number,
        fork,
        segment,
    })
}

/// An optional "_fsm", "_vm" or "_init" (there is no "_main").
fn fork_suffix(rest: &str) -> Option<(Fork, &str)> {
    let Some(after) = rest.strip_prefix('_') else {
        return Some((Fork::Main, rest));
    };
    [
        ("fsm", Fork::Fsm),
        ("vm", Fork::VisibilityMap),
        ("init", Fork::Init),
    ]
    .into_iter()
    .find_map(|(suffix, fork)| after.strip_prefix(suffix).map(|r| (fork, r)))
}

/// Nothing (segment 0), or "." and the segment number.
fn segment_suffix(rest: &str) -> Option<u32> {
    match rest.strip_prefix('.') {
        None => rest.is_empty().then_some(0),
        Some(seg) if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) => seg.parse().ok(),
        Some(_) => None,
    }
}

/// looks_like_temp_rel_name: "t<backend>_<relnumber>" plus optional fork and
/// segment suffixes.
fn is_temp_relation_file(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('t') else {
        return false;
    };
    let Some((backend, rel)) = rest.split_once('_') else {
        return false;
    };
    let digits = rel.bytes().take_while(u8::is_ascii_digit).count();
    if backend.is_empty() || !backend.bytes().all(|b| b.is_ascii_digit()) || digits == 0 {
        return false;
    }
    fork_suffix(&rel[digits..]).is_some_and(|(_, rest)| segment_suffix(rest).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pg_wal_is_kept_empty_with_its_status_directory() {
        assert_eq!(classify("pg_wal", true), Entry::SkipContents);
        assert_eq!(classify("pg_wal/archive_status", true), Entry::SkipContents);
        assert_eq!(classify("pg_wal/summaries", true), Entry::SkipContents);
        assert_eq!(
            classify("pg_wal/000000010000000000000001", false),
            Entry::Skip
        );
        assert_eq!(classify("pg_wal/00000002.history", false), Entry::Skip);
        assert_eq!(
            classify("pg_wal/archive_status/000000010000000000000001.done", false),
            Entry::Skip
        );
        assert_eq!(classify("pg_wal/archive_status", false), Entry::Skip);
        assert_eq!(classify("pg_wal/other", true), Entry::Skip);
        // Only the top-level pg_wal is special.
        assert_eq!(classify("base/pg_wal", true), Entry::Keep);
    }

    #[test]
    fn excluded_directory_contents() {
        for dir in EXCLUDE_DIR_CONTENTS {
            assert_eq!(classify(dir, true), Entry::SkipContents, "{dir}");
            assert_eq!(classify(&format!("{dir}/x"), false), Entry::Skip, "{dir}");
            assert_eq!(classify(&format!("{dir}/x/y"), true), Entry::Skip, "{dir}");
        }
        assert_eq!(classify("pg_replslot/slot1/state", false), Entry::Skip);
        // Symlinks (e.g. pg_stat_tmp on tmpfs) become empty directories.
        assert_eq!(classify("pg_stat_tmp", false), Entry::SkipContents);
        assert_eq!(classify("pg_wal", false), Entry::SkipContents);
    }

    #[test]
    fn excluded_files_at_any_depth() {
        for path in [
            "postmaster.pid",
            "postmaster.opts",
            "backup_label",
            "tablespace_map",
            "backup_manifest",
            "postgresql.auto.conf.tmp",
            "current_logfiles.tmp",
            "global/pg_internal.init",
            "base/5/pg_internal.init",
            "base/5/pg_internal.init.12345",
        ] {
            assert_eq!(classify(path, false), Entry::Skip, "{path}");
        }
        for path in [
            "postgresql.auto.conf",
            "postgresql.conf",
            "current_logfiles",
            "backup_label.old",
            "PG_VERSION",
            "global/pg_control",
            "global/pg_filenode.map",
            "base/5/16384",
            "pg_xact/0000",
            "pg_tblspc/16400",
        ] {
            assert_eq!(classify(path, false), Entry::Keep, "{path}");
        }
    }

    #[test]
    fn temporary_files_and_relations() {
        assert_eq!(classify("base/pgsql_tmp", true), Entry::Skip);
        assert_eq!(
            classify("base/pgsql_tmp/pgsql_tmp123.0", false),
            Entry::Skip
        );
        assert_eq!(
            classify("pg_tblspc/16400/PG_15_202209061/pgsql_tmp", true),
            Entry::Skip
        );
        assert_eq!(classify("base/5/t3_16384", false), Entry::Skip);
        assert_eq!(classify("base/5/t3_16384_fsm.1", false), Entry::Skip);
        assert_eq!(
            classify("pg_tblspc/16400/PG_15_202209061/5/t12_16390", false),
            Entry::Skip
        );
        // Temporary relation names matter only in database directories.
        assert_eq!(classify("t3_16384", false), Entry::Keep);
        assert_eq!(classify("base/5/t3_x", false), Entry::Keep);
    }

    #[test]
    fn database_directories() {
        assert!(is_database_dir("base/5"));
        assert!(is_database_dir("base/16384"));
        assert!(is_database_dir("pg_tblspc/16400/PG_15_202209061/16384"));
        for dir in [
            "base",
            "base/",
            "base/5a",
            "global",
            "pg_tblspc/16400/PG_15_202209061",
            "pg_tblspc/16400/x/5",
            "x/base/5",
        ] {
            assert!(!is_database_dir(dir), "{dir}");
        }
    }

    #[test]
    fn version_directory_name() {
        assert_eq!(tablespace_version_dir(15, 202209061), "PG_15_202209061");
    }

    #[test]
    fn relation_file_names() {
        for name in [
            "16384",
            "16384.1",
            "16384_fsm",
            "16384_vm",
            "16384_init",
            "16384_vm.2",
            "1234567890",
        ] {
            assert!(is_relation_file(name), "{name}");
        }
        for name in [
            "",
            "16384.",
            "16384_",
            "16384_main",
            "16384_fsmx",
            "16384.1a",
            "12345678901",
            "t3_16384",
            "PG_VERSION",
            "pg_filenode.map",
            "16384.1_fsm",
            "_fsm",
        ] {
            assert!(!is_relation_file(name), "{name}");
        }
    }

    #[test]
    fn relation_paths_name_what_wal_names() {
        let p = relation_path("base/5/16384_vm.2").unwrap();
        assert_eq!(
            (p.tablespace, p.database, p.relfilenode, p.fork, p.segment),
            (DEFAULT_TABLESPACE, 5, 16384, Fork::VisibilityMap, 2)
        );
        let p = relation_path("global/1262").unwrap();
        assert_eq!(
            (p.tablespace, p.database, p.fork, p.segment),
            (GLOBAL_TABLESPACE, 0, Fork::Main, 0)
        );
        let p = relation_path("pg_tblspc/16400/PG_17_202406281/16384/16401.3").unwrap();
        assert_eq!((p.tablespace, p.database, p.segment), (16400, 16384, 3));
        for path in [
            "base/5/pg_filenode.map",
            "base/5/t3_16384",
            "base/x/16384",
            "global/pg_control",
            "pg_xact/0000",
            "16384",
            "base/5/sub/16384",
            "pg_tblspc/16400/x/16384/16401",
        ] {
            assert_eq!(relation_path(path), None, "{path}");
        }
    }

    #[test]
    fn unlogged_relations_keep_only_their_init_fork() {
        let names = [
            "16384",
            "16384.1",
            "16384_fsm",
            "16384_vm",
            "16384_init",
            "16390",
            "16390_fsm",
            "163840",
            "PG_VERSION",
            "pg_filenode.map",
        ];
        let skips = unlogged_skips(&names);
        let mut skips: Vec<&str> = skips.iter().map(String::as_str).collect();
        skips.sort();
        assert_eq!(skips, vec!["16384", "16384.1", "16384_fsm", "16384_vm"]);
        assert!(unlogged_skips(&["16390", "16390_fsm"]).is_empty());
    }
}
