//! The command blocks of docs/operations.md, pasted as written: every fenced `sh` block after
//! a `<!-- test: NAME -->` marker runs in `bash -euo pipefail` as root, with only the shell
//! variables of the guide's "Conventions" (`REPO`, `PGDATA`, `PGBIN`, `PGHOST`, `PGPORT`,
//! `VIEWS`) set to a throw-away cluster's values and the example target time replaced by a
//! real one. One cluster goes through the guide's story: a repository, the restart for
//! archiving, a backup, an accidental DELETE taken back by table recovery, a backup copied out
//! of the catalogue mount, the repository checked, then the server lost and brought back by
//! the disaster runbook, and retention run on the result. The guide's examples are of
//! PostgreSQL 15 (Debian's psql and pg_dump are the clients), so the test names 15 whatever
//! `PGSNAPFS_TEST_PG_MAJOR` says.

mod common;

use common::{
    pg_tool, pgsnapfs, pgsnapfs_bin, postgres_command, run_command, server_bin, Cluster,
    ClusterOptions, Run, TestDir,
};
use std::path::{Path, PathBuf};
use std::process::Command;

const GUIDE: &str = include_str!("../docs/operations.md");

/// The major of the guide's examples.
const MAJOR: u32 = 15;

/// The example target time of the table-recovery block; the test puts the real moment there.
const EXAMPLE_TIME: &str = "2026-11-20 14:29:00+00";

/// The `sh` blocks marked `<!-- test: NAME -->`, in order, each with its list indentation
/// removed.
fn blocks(name: &str) -> Vec<String> {
    let marker = format!("<!-- test: {name} -->");
    let mut out = Vec::new();
    let mut lines = GUIDE.lines();
    while let Some(line) = lines.next() {
        if line.trim() != marker {
            continue;
        }
        let fence = lines.next().unwrap_or_default();
        assert_eq!(
            fence.trim(),
            "```sh",
            "the marker {marker} must be followed by a ```sh fence"
        );
        let indent = fence.len() - fence.trim_start().len();
        let mut block = String::new();
        for line in lines.by_ref() {
            if line.trim() == "```" {
                break;
            }
            block.push_str(line.get(indent..).unwrap_or(line.trim_start()));
            block.push('\n');
        }
        out.push(block);
    }
    out
}

/// Where the guide's shell variables point in this test.
struct Env {
    repo: PathBuf,
    pgdata: PathBuf,
    pghost: PathBuf,
    pgport: u16,
    views: PathBuf,
    work: PathBuf,
    /// Holds `pgsnapfs`, first on PATH (the harness may run a copy with another name).
    bin: PathBuf,
}

impl Env {
    /// Runs the blocks named `name` (there must be `count` of them) in one bash, in `work`.
    #[track_caller]
    fn run(&self, name: &str, count: usize, substitute: &[(&str, &str)]) -> Run {
        let found = blocks(name);
        assert_eq!(
            found.len(),
            count,
            "docs/operations.md should have {count} blocks marked `test: {name}`"
        );
        let mut script = found.concat();
        for (from, to) in substitute {
            assert!(
                script.contains(from),
                "the {name} blocks no longer hold {from:?}"
            );
            script = script.replace(from, to);
        }
        let path = format!(
            "{}:{}",
            self.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = Command::new("timeout");
        // Nothing from the test's own environment (PG*, PGSNAPFS_*) reaches the blocks.
        cmd.args(["300", "bash", "-euo", "pipefail", "-c", &script])
            .current_dir(&self.work)
            .env_clear()
            .env("PATH", path)
            .env("HOME", &self.work)
            .env("REPO", &self.repo)
            .env("PGDATA", &self.pgdata)
            .env("PGBIN", server_bin(MAJOR))
            .env("PGHOST", &self.pghost)
            .env("PGPORT", self.pgport.to_string())
            .env("VIEWS", &self.views)
            // check's record and the disk cache stay in the test's directory.
            .env("XDG_STATE_HOME", self.work.join("state"))
            .env("XDG_CACHE_HOME", self.work.join("cache"));
        let run = run_command(&mut cmd);
        assert!(
            run.status.success(),
            "the {name} blocks failed as pasted\n--- script ---\n{script}\n{}",
            run.report()
        );
        run
    }

    /// psql as postgres against the production server (PGHOST, PGPORT).
    #[track_caller]
    fn sql(&self, db: &str, sql: &str) -> String {
        let run = run_command(
            postgres_command(pg_tool("psql"))
                .arg("-h")
                .arg(&self.pghost)
                .args(["-p", &self.pgport.to_string(), "-U", "postgres", "-d", db])
                .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql]),
        )
        .assert_ok();
        run.stdout_str().trim().to_string()
    }
}

/// Stops whatever server runs on a data directory the guide's commands started.
struct StopOnDrop(PathBuf);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if self.0.join("postmaster.pid").exists() {
            let _ = postgres_command(server_bin(MAJOR).join("pg_ctl"))
                .arg("-D")
                .arg(&self.0)
                .args(["-m", "immediate", "-w", "stop"])
                .output();
        }
    }
}

fn is_mount_point(p: &Path) -> bool {
    common::mount_points().iter().any(|m| m == p)
}

#[test]
fn table_recovery_and_runbook_as_pasted() {
    // The guide's view server listens on /tmp/.s.PGSQL.5433.
    assert!(
        !Path::new("/tmp/.s.PGSQL.5433").exists(),
        "a server already listens on /tmp port 5433, which the guide's view server uses"
    );
    let dir = TestDir::new("docs");
    let work = dir.subdir("work", 0o755);
    let bin = dir.subdir("bin", 0o755);
    std::os::unix::fs::symlink(pgsnapfs_bin(), bin.join("pgsnapfs")).expect("link pgsnapfs");
    let repo = dir.join("repo");
    let mut cluster = Cluster::new(ClusterOptions {
        server_bin: Some(server_bin(MAJOR)),
        ..ClusterOptions::archiving_to(&repo)
    });
    let _stop = StopOnDrop(cluster.data.clone());
    cluster.start();
    let env = Env {
        repo: repo.clone(),
        pgdata: cluster.data.clone(),
        pghost: cluster.sock.clone(),
        pgport: cluster.port,
        views: dir.join("views"),
        work,
        bin,
    };

    // Sections 1 to 3: a repository owned by postgres, the restart for archiving, a backup.
    env.run("setup", 1, &[]);
    env.run("archiving", 1, &[]);
    env.sql("postgres", "CREATE DATABASE appdb");
    env.sql(
        "appdb",
        "CREATE TABLE orders (id serial PRIMARY KEY, created_at timestamptz DEFAULT now(), \
         item text); INSERT INTO orders (item) SELECT 'item ' || g FROM generate_series(1, 1500) g",
    );
    env.run("backup", 1, &[]);

    // The moment to recover to; new orders after it (which move the sequence on), then the
    // accident deletes the old ones.
    let before = env.sql("postgres", "SELECT now()");
    env.sql(
        "appdb",
        "INSERT INTO orders (item) SELECT 'new ' || g FROM generate_series(1, 10) g",
    );
    let seq_before = env.sql("appdb", "SELECT last_value FROM orders_id_seq");
    env.sql("appdb", "DELETE FROM orders WHERE id <= 1500");
    cluster.switch_wal_and_wait_archived();

    // Section 6: the rows come back, and production's sequence stays where it was (the
    // dump's setval would set it back to 1500).
    let quoted = format!("'{before}'");
    let run = env.run(
        "table-recovery",
        2,
        &[(&format!("'{EXAMPLE_TIME}'"), &quoted)],
    );
    assert!(
        run.stdout_str().contains("1500"),
        "the view's count(*) should show the 1500 rows before the DELETE\n{}",
        run.report()
    );
    assert_eq!(
        env.sql("appdb", "SELECT count(*), min(id), max(id) FROM orders"),
        "1510|1|1510"
    );
    assert_eq!(
        env.sql("appdb", "SELECT last_value FROM orders_id_seq"),
        seq_before,
        "loading the dump moved production's sequence"
    );
    assert!(!is_mount_point(&env.views.join("before")));
    assert!(!env.views.join("before.scratch").exists());

    // Section 6, the catalogue: the latest backup copied out whole.
    env.run("catalogue", 1, &[]);
    let copy = env.work.join("backup-copy");
    // pg_control starts with the system identifier.
    let system_id = |data: &Path| {
        let control = std::fs::read(data.join("global/pg_control"))
            .unwrap_or_else(|e| panic!("read pg_control in {}: {e}", data.display()));
        u64::from_le_bytes(control[..8].try_into().unwrap())
    };
    assert_eq!(
        system_id(&copy).to_string(),
        cluster.system_identifier(),
        "the copied backup should be of this cluster"
    );
    assert!(!is_mount_point(&env.views.join("catalogue")));

    // Section 8: every check passes.
    env.run("check", 1, &[]);

    // Section 12: the last committed row is archived, then the server is lost.
    env.sql(
        "appdb",
        "INSERT INTO orders (item) VALUES ('last committed')",
    );
    cluster.switch_wal_and_wait_archived();
    cluster.stop_mode("immediate");
    env.run("runbook", 5, &[]);
    assert_eq!(
        env.sql(
            "appdb",
            "SELECT count(*), bool_or(item = 'last committed'), pg_is_in_recovery() FROM orders"
        ),
        "1511|t|f",
        "the restored server should hold every archived commit and be promoted"
    );
    // Step 5's backup is of the new timeline.
    let list = pgsnapfs(&["list", "--repo", repo.to_str().unwrap(), "--json"])
        .assert_ok()
        .json();
    let last = list["backups"]
        .as_array()
        .and_then(|b| b.last())
        .unwrap_or_else(|| panic!("no backups listed: {list}"));
    assert_eq!(last["timeline"], 2, "the runbook's backup: {last}");

    // Section 9: of one day's backups, keep-daily keeps the newest: the runbook's.
    env.run("retention", 1, &[]);
    let list = pgsnapfs(&["list", "--repo", repo.to_str().unwrap(), "--json"])
        .assert_ok()
        .json();
    let ids: Vec<&serde_json::Value> = list["backups"].as_array().unwrap().iter().collect();
    assert_eq!(ids.len(), 1, "after expire: {list}");
    assert_eq!(ids[0]["id"], last["id"], "after expire: {list}");
}
