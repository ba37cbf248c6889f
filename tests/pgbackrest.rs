//! `import --from pgbackrest:PATH` (issue 21) with Debian's pgBackRest 2.45 and a real
//! PostgreSQL 15. One source cluster archives into three pgBackRest repositories, each with
//! its own stanza: `plain` (no compression, one full backup), `chain` (a full backup in gz, a
//! diff in lz4 and an incr in bz2: references across compression types) and `bundle` (zst,
//! `repo1-bundle=y`, encrypted with `repo1-cipher-type=aes-256-cbc`, full + diff + incr) and
//! `block` (gz, bundles, block incremental: `repo1-block=y`, beta in 2.45; encrypted too, so
//! its bundles and super blocks are in pgBackRest's "raw" formats; full + incr).
//! The cluster has a tablespace. Everything is imported into one pgsnapfs repository;
//! then, in sequence: every imported backup restores to exactly the source's rows at that
//! backup; the stanza imported last stores little (the chunks are the same); `verify` passes
//! on an imported backup; a rerun stores nothing; `list` and `info` read a pgBackRest
//! repository as it is and `gc` refuses it; straight from the pgBackRest repositories (through
//! a cache repository), a view of the chain's diff backup, `verify` of the encrypted bundle
//! stanza and `restore` of the block-incremental full backup see the source's rows; an
//! import SIGKILLed at a sample of its kill
//! points (`PGSNAPFS_KILL_AT`) leaves no partial backup and a rerun completes it; a damaged
//! file (plain, and in a bundle) fails the import, and `verify` straight from the pgBackRest
//! repository, with exit 3 naming the pgBackRest object, and no backup is stored.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};

/// The test tables' rows, summed up: `t`, and `ts_t` in a tablespace.
const ROWS: &str = "SELECT count(*) || ':' || sum(i) || ':' || sum(length(s)) || ':' || \
     (SELECT count(*) FROM ts_t) FROM t";

/// The passphrase of the encrypted stanza.
const CIPHER_PASS: &str = "correct horse battery staple";

/// One pgBackRest repository with one stanza.
struct Stanza {
    name: &'static str,
    conf: PathBuf,
    repo: PathBuf,
    /// For an encrypted one: a file holding its passphrase.
    pass_file: Option<PathBuf>,
}

impl Stanza {
    fn new(dir: &TestDir, name: &'static str, cluster: &Cluster, extra: &str) -> Stanza {
        let base = dir.subdir(name, 0o755);
        for sub in ["repo", "log", "lock", "spool"] {
            mkdir_for_postgres(&base.join(sub), 0o750);
        }
        let conf = base.join("pgbackrest.conf");
        fs::write(
            &conf,
            format!(
                "[global]\nrepo1-path={repo}\nrepo1-retention-full=99\nlog-path={b}/log\n\
                 lock-path={b}/lock\nspool-path={b}/spool\nlog-level-console=warn\n\
                 log-level-file=off\nstart-fast=y\narchive-async=n\n{extra}\n\n\
                 [{name}]\npg1-path={data}\npg1-socket-path={sock}\npg1-port={port}\n",
                repo = base.join("repo").display(),
                b = base.display(),
                data = cluster.data.display(),
                sock = cluster.sock.display(),
                port = cluster.port,
            ),
        )
        .unwrap();
        fs::set_permissions(&conf, fs::Permissions::from_mode(0o644)).unwrap();
        let pass_file = extra.contains("cipher-pass").then(|| {
            let f = base.join("passphrase");
            fs::write(&f, CIPHER_PASS).unwrap();
            chown_to_postgres(&f);
            f
        });
        Stanza {
            name,
            conf,
            repo: base.join("repo"),
            pass_file,
        }
    }

    fn run(&self, args: &[&str]) -> Run {
        let mut cmd = postgres_command("pgbackrest");
        cmd.arg(format!("--config={}", self.conf.display()))
            .arg(format!("--stanza={}", self.name))
            .args(args);
        run_command(&mut cmd)
    }

    fn backup(&self, kind: &str, extra: &[&str]) {
        let mut args = vec!["backup", kind];
        args.extend_from_slice(extra);
        self.run(&args).assert_ok();
    }

    fn from(&self) -> String {
        format!("pgbackrest:{}", self.repo.display())
    }

    /// `pgsnapfs import` of this stanza into `repo`, with `--json`.
    fn import(&self, repo: &Repo, args: &[&str]) -> Run {
        let from = self.from();
        let mut all = vec!["--from", &from, "--stanza", self.name, "--json"];
        let pass = self.pass_file.as_ref().map(|f| f.display().to_string());
        if let Some(f) = &pass {
            all.extend(["--from-passphrase-file", f]);
        }
        all.extend_from_slice(args);
        repo.run("import", &all)
    }

    /// The objects of backup `label` in this repository (files and bundles).
    fn backup_dir(&self, label: &str) -> PathBuf {
        self.repo.join("backup").join(self.name).join(label)
    }
}

/// The labels of `import --json`'s imported backups, with their ids.
fn imported(report: &serde_json::Value) -> Vec<(String, String)> {
    report["imported"]
        .as_array()
        .unwrap_or_else(|| panic!("no \"imported\" in {report}"))
        .iter()
        .map(|b| (json_str(b, "label"), json_str(b, "id")))
        .collect()
}

/// The largest regular file below `dir`.
fn largest_file(dir: &Path) -> PathBuf {
    let mut best: Option<(u64, PathBuf)> = None;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                stack.push(e.path());
            } else if best.as_ref().is_none_or(|(len, _)| meta.len() > *len) {
                best = Some((meta.len(), e.path()));
            }
        }
    }
    best.expect("a file").1
}

#[test]
fn pgbackrest_backups_import_as_native_backups() {
    let dir = TestDir::new("pgbackrest");
    let push = dir.join("pgbackrest-push");
    let mut source = Cluster::new(ClusterOptions {
        settings: vec![
            ("archive_mode".into(), "on".into()),
            // pgBackRest checks that archive_command names it.
            ("archive_command".into(), format!("'{} %p'", push.display())),
        ],
        ..ClusterOptions::default()
    });
    let plain = Stanza::new(&dir, "plain", &source, "compress-type=none");
    let chain = Stanza::new(&dir, "chain", &source, "compress-type=gz");
    let bundle = Stanza::new(
        &dir,
        "bundle",
        &source,
        &format!(
            "compress-type=zst\nrepo1-bundle=y\nrepo1-cipher-type=aes-256-cbc\n\
             repo1-cipher-pass={CIPHER_PASS}"
        ),
    );
    let block = Stanza::new(
        &dir,
        "block",
        &source,
        &format!(
            "compress-type=gz\nrepo1-bundle=y\nrepo1-block=y\nbeta=y\n\
             repo1-cipher-type=aes-256-cbc\nrepo1-cipher-pass={CIPHER_PASS}"
        ),
    );
    let stanzas = [&plain, &chain, &bundle, &block];
    let script: String = stanzas
        .iter()
        .map(|s| {
            format!(
                "pgbackrest --config={} --stanza={} archive-push \"$1\" || exit 1\n",
                s.conf.display(),
                s.name
            )
        })
        .collect();
    fs::write(&push, format!("#!/bin/sh\n{script}")).unwrap();
    fs::set_permissions(&push, fs::Permissions::from_mode(0o755)).unwrap();
    source.start();
    for s in stanzas {
        s.run(&["stanza-create"]).assert_ok();
    }

    let ts_dir = dir.subdir("ts", 0o700);
    source.psql(&format!(
        "CREATE TABLESPACE ts LOCATION '{}'; CREATE TABLE ts_t(i int) TABLESPACE ts;
         INSERT INTO ts_t SELECT generate_series(1, 3000);",
        ts_dir.display()
    ));
    let ts_oid = source.psql("SELECT oid FROM pg_tablespace WHERE spcname = 'ts'");
    source.psql(
        "CREATE TABLE t(i int, s text);
         INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 20000) g;",
    );
    let want_full = source.psql(ROWS);
    plain.backup("--type=full", &[]);
    chain.backup("--type=full", &[]);
    bundle.backup("--type=full", &[]);
    block.backup("--type=full", &[]);
    source.psql(
        "INSERT INTO t SELECT g, 'diff' FROM generate_series(20001, 25000) g;
         UPDATE t SET s = 'changed' WHERE i % 100 = 0;",
    );
    let want_diff = source.psql(ROWS);
    chain.backup("--type=diff", &["--compress-type=lz4"]);
    bundle.backup("--type=diff", &[]);
    source.psql(
        "INSERT INTO ts_t SELECT generate_series(1, 500);
         INSERT INTO t SELECT g, 'incr' FROM generate_series(25001, 27000) g;
         DELETE FROM t WHERE i % 7 = 0;",
    );
    let want_incr = source.psql(ROWS);
    chain.backup("--type=incr", &["--compress-type=bz2"]);
    bundle.backup("--type=incr", &[]);
    block.backup("--type=incr", &[]);
    assert_ne!(want_full, want_diff);
    assert_ne!(want_diff, want_incr);

    // Import: each stanza's backups, oldest first. The encrypted one needs its passphrase.
    let repo = Repo::init();
    let wrong = dir.join("wrong-passphrase");
    fs::write(&wrong, "not it").unwrap();
    chown_to_postgres(&wrong);
    let from = bundle.from();
    let run = repo.run(
        "import",
        &[
            "--from",
            &from,
            "--stanza",
            "bundle",
            "--from-passphrase-file",
            wrong.to_str().unwrap(),
        ],
    );
    assert!(run.assert_exit(2).stderr_str().contains("cannot decrypt"));
    let mut wanted = Vec::new();
    let mut stored_full = Vec::new();
    for (s, wants) in [
        (&plain, vec![&want_full]),
        (&chain, vec![&want_full, &want_diff, &want_incr]),
        (&bundle, vec![&want_full, &want_diff, &want_incr]),
        (&block, vec![&want_full, &want_incr]),
    ] {
        let report = s.import(&repo, &[]).assert_ok().json();
        let done = imported(&report);
        assert_eq!(done.len(), wants.len(), "stanza {}: {report}", s.name);
        stored_full.push(json_u64(&report["imported"][0], "stored_new"));
        for ((label, id), want) in done.into_iter().zip(wants) {
            wanted.push((s.name, label, id, want.clone()));
        }
    }
    // Same cluster, same rows: the second and third stanzas' full backups add little.
    assert!(
        stored_full[2] * 4 < stored_full[0],
        "bundle's full backup stored {} bytes, plain's {}",
        stored_full[2],
        stored_full[0]
    );
    let listed: Vec<serde_json::Value> = repo.list();
    assert_eq!(listed.len(), wanted.len(), "{listed:?}");
    assert!(
        listed
            .iter()
            .all(|b| b["imported"]["stanza"].is_string() && json_str(b, "source") == "server"),
        "{listed:?}"
    );

    // list and info read a pgBackRest repository as it is; other commands refuse it.
    let foreign = chain.from();
    let listed = pgsnapfs(&["list", "--repo", &foreign, "--stanza", "chain", "--json"])
        .assert_ok()
        .json();
    let labels: Vec<String> = listed["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| json_str(b, "label"))
        .collect();
    let chain_labels: Vec<String> = wanted
        .iter()
        .filter(|w| w.0 == "chain")
        .map(|w| w.1.clone())
        .collect();
    assert_eq!(labels, chain_labels, "{listed}");
    let info = pgsnapfs(&["info", "--repo", &foreign, "--stanza", "chain", "--json"])
        .assert_ok()
        .json();
    assert!(json_u64(&info["archive"][0], "files") > 0, "{info}");
    let run = pgsnapfs(&["gc", "--repo", &foreign, "--stanza", "chain"]);
    assert!(run.assert_exit(2).stderr_str().contains("only reads"));

    // mount, verify and restore straight from the pgBackRest repositories, through a cache
    // repository made on first use (one for root's commands, one for postgres's).
    let cache = dir.join("cache");
    mkdir_for_postgres(&cache, 0o755);
    let direct = |s: &Stanza, command: &str, args: &[&str]| {
        let mut v = vec![command.to_string(), "--repo".into(), s.from()];
        v.extend(["--stanza".into(), s.name.into()]);
        v.extend(["--pgbackrest-cache".into(), cache.display().to_string()]);
        if let Some(f) = &s.pass_file {
            v.extend(["--passphrase-file".into(), f.display().to_string()]);
        }
        v.extend(args.iter().map(|a| a.to_string()));
        v
    };
    let label_of = |stanza: &str, i: usize| {
        wanted
            .iter()
            .filter(|w| w.0 == stanza)
            .nth(i)
            .map(|w| w.1.clone())
            .unwrap()
    };
    // A view of the chain's diff backup (gz full, lz4 diff), named by its pgBackRest label.
    let work = TestDir::new("direct");
    let mp = common::mount::mountpoint(&work, "diff");
    let scratch = work.join("scratch");
    let diff = label_of("chain", 1);
    let args = direct(&chain, "mount", &[]);
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.push(mp.to_str().unwrap());
    args.extend(common::mount::view_args(&scratch, &["--backup", &diff]));
    let mut view = common::mount::Mount::spawn(common::mount::root_cmd(&args), &mp)
        .unwrap_or_else(|e| panic!("{e}"));
    view.start_server().wait_until_paused_or_ready();
    assert_eq!(view.server().psql(ROWS), want_diff, "a view of {diff}");
    drop(view);
    // verify of the encrypted bundle stanza's latest backup (its cache is encrypted too).
    let sql = dir.join("direct-rows.sql");
    fs::write(&sql, format!("SELECT ({ROWS}) = '{want_incr}';\n")).unwrap();
    let run = pgsnapfs_as_root(&direct(
        &bundle,
        "verify",
        &[
            "--json",
            "--backup",
            "latest",
            "--sql",
            sql.to_str().unwrap(),
        ],
    ))
    .assert_ok();
    assert_eq!(run.json()["assertions"], 1, "{}", run.report());
    // restore, as postgres, of the block-incremental stanza's full backup.
    let out = TestDir::new("direct-restore");
    let to = out.join("data");
    let ts_map = format!("{ts_oid}={}", out.subdir("ts", 0o700).display());
    let full = label_of("block", 0);
    pgsnapfs(&direct(
        &block,
        "restore",
        &[
            "--to",
            to.to_str().unwrap(),
            "--backup",
            &full,
            "--tablespace-map",
            &ts_map,
        ],
    ))
    .assert_ok();
    let restored = Cluster::start_on(&to);
    assert_ne!(
        restored.wait_until_paused_or_ready(),
        RecoveryState::ShutDown
    );
    assert_eq!(restored.psql(ROWS), want_full, "restore of {full}");
    drop(restored);

    // Every imported backup restores to the source's rows at that backup.
    for (stanza, label, id, want) in &wanted {
        let out = TestDir::new("restore");
        let to = out.join("data");
        // The tablespace's own location is the source's, in use: restore it elsewhere.
        let ts_map = format!("{ts_oid}={}", out.subdir("ts", 0o700).display());
        repo.restore(&to, &["--backup", id, "--tablespace-map", &ts_map])
            .assert_ok();
        let restored = Cluster::start_on(&to);
        let state = restored.wait_until_paused_or_ready();
        assert_ne!(
            state,
            RecoveryState::ShutDown,
            "{stanza} {label}\n{}",
            restored.log_tail(30)
        );
        assert_eq!(
            &restored.psql(ROWS),
            want,
            "{stanza} backup {label} as {id}"
        );
    }

    // verify (a view, a server, every table read) on the incr imported from bundles.
    let (_, label, id, want) = &wanted[6];
    let sql = dir.join("rows.sql");
    fs::write(&sql, format!("SELECT ({ROWS}) = '{want}';\n")).unwrap();
    let mut args = repo.args("verify", &["--json", "--backup", id, "--sql"]);
    args.push(sql.display().to_string());
    let run = pgsnapfs_as_root(&args).assert_ok();
    assert_eq!(
        run.json()["ok"],
        true,
        "verify of {label}: {}",
        run.report()
    );

    // A rerun finds everything imported and stores nothing.
    let before = repo.objects("");
    for s in stanzas {
        let report = s.import(&repo, &["--wal"]).assert_ok().json();
        assert!(imported(&report).is_empty(), "{report}");
        assert_eq!(
            report["skipped"].as_array().map(Vec::len),
            Some(match s.name {
                "plain" => 1,
                "block" => 2,
                _ => 3,
            }),
            "{report}"
        );
        // --wal: the WAL outside the backups is archived once, and found present afterwards.
        if s.name != "plain" {
            assert_eq!(json_u64(&report, "wal_stored"), 0, "{report}");
        }
    }
    let after = repo.objects("");
    let packs = |o: &[(String, u64)]| -> Vec<(String, u64)> {
        o.iter()
            .filter(|(k, _)| k.starts_with("packs/"))
            .cloned()
            .collect()
    };
    assert_eq!(packs(&before), packs(&after), "a rerun stored packs");

    // Killed: the chain's import with its WAL (without, `check` finds the WAL between the
    // backups missing), into new repositories, at its first write, its first pack, its first
    // WAL segment, the second backup's manifest (just before and just after) and its last
    // write.
    let args = |repo: &Repo| {
        repo.args(
            "import",
            &[
                "--from",
                &chain.from(),
                "--stanza",
                "chain",
                "--wal",
                "--json",
            ],
        )
    };
    let counting = Repo::init();
    let counted = run_command(pgsnapfs_command(&args(&counting)).env("PGSNAPFS_KILL_AT", "count"))
        .assert_ok();
    let points: Vec<(String, String)> = counted
        .stderr_str()
        .lines()
        .filter_map(|l| l.strip_prefix("kill point "))
        .filter_map(|l| l.split_once(' '))
        .map(|(p, k)| (p.to_string(), k.to_string()))
        .collect();
    let first = |prefix: &str| {
        points
            .iter()
            .position(|(p, k)| p.starts_with("put:") && k.starts_with(prefix))
            .unwrap_or_else(|| panic!("no put of {prefix}: {points:?}"))
    };
    let mut sample = vec![0, first("packs/"), first("wal/"), points.len() - 1];
    // The second backup's manifest: just before it is stored, and just after.
    let manifests: Vec<usize> = points
        .iter()
        .enumerate()
        .filter(|(_, (p, k))| k.starts_with("snapshots/") && p.starts_with("put"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(manifests.len(), 6, "{points:?}");
    sample.extend_from_slice(&manifests[2..4]);
    sample.sort();
    sample.dedup();
    let state = TestDir::new("check-state");
    for i in sample {
        let (point, key) = &points[i];
        let killed_repo = Repo::init();
        let run = run_command(pgsnapfs_command(&args(&killed_repo)).env("PGSNAPFS_KILL_AT", point));
        assert_eq!(
            run.status.signal(),
            Some(libc::SIGKILL),
            "expected SIGKILL at {point} ({key})\n{}",
            run.report()
        );
        // A kill at put-done comes just after the object was published.
        let manifests_done = points[..=i]
            .iter()
            .filter(|(p, k)| p.starts_with("put-done:") && k.starts_with("snapshots/"))
            .count();
        let listed = killed_repo.list();
        assert_eq!(
            listed.len(),
            manifests_done,
            "killed at {point} ({key}): {listed:?}"
        );
        let report = args(&killed_repo);
        let rerun = pgsnapfs(&report).assert_ok().json();
        assert_eq!(
            imported(&rerun).len(),
            3 - manifests_done,
            "rerun after a kill at {point} ({key}): {rerun}"
        );
        let check = killed_repo.run(
            "check",
            &[
                "--read-data",
                "--full",
                "--json",
                "--state-dir",
                state.path().to_str().unwrap(),
            ],
        );
        assert_eq!(
            check.code(),
            Some(0),
            "check after a kill at {point}\n{}",
            check.report()
        );
    }

    // Damage: a file stored as is (SHA-1 mismatch), then a bundle (zstd frame or SHA-1).
    for (s, object) in [
        (
            &plain,
            largest_file(&plain.backup_dir(&wanted[0].1).join("pg_data")),
        ),
        (
            &bundle,
            largest_file(&bundle.backup_dir(&wanted[4].1).join("bundle")),
        ),
    ] {
        let bad = Repo::init();
        let len = fs::metadata(&object).unwrap().len();
        flip_byte(&object, len / 2);
        let run = s.import(&bad, &[]).assert_exit(3);
        let rel = object.strip_prefix(&s.repo).unwrap().display().to_string();
        assert!(run.stderr_str().contains(&rel), "{rel}: {}", run.report());
        // verify straight from the pgBackRest repository fails too, naming it.
        let fresh = TestDir::new("fresh-cache");
        let label = match s.name {
            "bundle" => &wanted[4].1,
            _ => &wanted[0].1,
        };
        let mut args = vec!["verify".to_string(), "--repo".into(), s.from()];
        args.extend(["--stanza".into(), s.name.into(), "--backup".into()]);
        args.extend([label.clone(), "--pgbackrest-cache".into()]);
        args.push(fresh.path().display().to_string());
        if let Some(f) = &s.pass_file {
            args.extend(["--passphrase-file".into(), f.display().to_string()]);
        }
        let run = pgsnapfs_as_root(&args).assert_exit(3);
        assert!(run.stderr_str().contains(&rel), "{rel}: {}", run.report());
        assert!(
            bad.list().is_empty(),
            "a backup was stored from a damaged one"
        );
        flip_byte(&object, len / 2);
    }
}
