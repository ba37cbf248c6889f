//! Test repositories on both back ends ([`Store`], [`Repo`]) and JSON helpers for their output.

use super::*;

/// Which back end a test repository lives on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Store {
    /// A directory.
    Local,
    /// A bucket on a moto S3 server of its own, started for the repository.
    S3,
}

/// Declares `#[test]`s `NAME::local` and `NAME::s3` for each `fn NAME(store: Store)`, so one
/// test body runs on both back ends.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn local() {
                super::$name($crate::common::Store::Local)
            }
            #[test]
            fn s3() {
                super::$name($crate::common::Store::S3)
            }
        }
    )*};
}

/// A pgsnapfs repository inside its own [`TestDir`]. [`Repo::new`] only picks the location;
/// [`Repo::init`] also runs `pgsnapfs init`. On S3, `path` is a local directory for the test's
/// own files and `spec` the `s3://` URL.
pub struct Repo {
    pub path: PathBuf,
    /// The `--repo` value.
    pub spec: String,
    pub store: Store,
    /// For an encrypted repository: the passphrase file (owned by postgres, 0600) every
    /// command of [`Repo::run`] gets.
    pub passphrase_file: Option<PathBuf>,
    /// Declared before the dir: the server stops first.
    moto: Option<moto::Moto>,
    _dir: TestDir,
}

impl Repo {
    pub fn new() -> Repo {
        Repo::new_on(Store::Local)
    }

    pub fn init() -> Repo {
        Repo::init_on(Store::Local)
    }

    pub fn new_on(store: Store) -> Repo {
        let dir = TestDir::new("repo");
        let path = dir.join("repo");
        let (spec, moto) = match store {
            Store::Local => (path.display().to_string(), None),
            Store::S3 => {
                let moto = moto::Moto::start();
                moto.create_bucket("pgsnapfs");
                let spec = format!("s3://pgsnapfs/repo?endpoint={}", moto.endpoint());
                fs::create_dir(&path).expect("create the test's local dir");
                chown_to_postgres(&path);
                (spec, Some(moto))
            }
        };
        Repo {
            path,
            spec,
            store,
            passphrase_file: None,
            moto,
            _dir: dir,
        }
    }

    pub fn init_on(store: Store) -> Repo {
        let repo = Repo::new_on(store);
        repo.run("init", &[]).assert_ok();
        repo
    }

    /// An encrypted repository (`init --encryption`) whose passphrase is `passphrase`.
    pub fn init_encrypted_on(store: Store, passphrase: &str) -> Repo {
        let mut repo = Repo::new_on(store);
        let file = repo._dir.join("passphrase");
        fs::write(&file, passphrase).expect("write the passphrase file");
        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).expect("chmod");
        chown_to_postgres(&file);
        repo.passphrase_file = Some(file);
        repo.run("init", &["--encryption"]).assert_ok();
        repo
    }

    /// `pgsnapfs SUBCOMMAND --repo PATH ARGS...` as postgres.
    pub fn run(&self, subcommand: &str, args: &[&str]) -> Run {
        pgsnapfs(&self.args(subcommand, args))
    }

    /// The argument list `SUBCOMMAND --repo SPEC ARGS...`; on S3, mount and verify keep their
    /// disk cache in the test's own dir.
    pub fn args(&self, subcommand: &str, args: &[&str]) -> Vec<String> {
        let mut v = vec![
            subcommand.to_string(),
            "--repo".to_string(),
            self.spec.clone(),
        ];
        if let Some(f) = &self.passphrase_file {
            v.push("--passphrase-file".into());
            v.push(f.display().to_string());
        }
        if self.store == Store::S3 && matches!(subcommand, "mount" | "verify") {
            v.push("--cache-dir".into());
            v.push(self.path.join("cache").display().to_string());
        }
        // verify finds Debian's server of the backup's major by itself (tested on 15); the
        // npm builds of the other majors are elsewhere.
        if subcommand == "verify" && test_major() != 15 && !args.contains(&"--pg-bin") {
            v.push("--pg-bin".into());
            v.push(test_server_bin().display().to_string());
        }
        v.extend(args.iter().map(|s| s.to_string()));
        v
    }

    /// `pgsnapfs backup --json` of a running cluster; asserts success and returns the JSON.
    #[track_caller]
    pub fn backup(&self, cluster: &Cluster) -> serde_json::Value {
        let mut args = vec!["--json".to_string()];
        args.extend(cluster.backup_args());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run("backup", &args).assert_ok().json()
    }

    /// `pgsnapfs list --json`'s backups.
    #[track_caller]
    pub fn list(&self) -> Vec<serde_json::Value> {
        let v = self.run("list", &["--json"]).assert_ok().json();
        v["backups"]
            .as_array()
            .unwrap_or_else(|| panic!("list --json has no \"backups\" array: {v}"))
            .clone()
    }

    /// `pgsnapfs restore --to DIR ARGS...`; returns the run without asserting.
    pub fn restore(&self, to: &Path, args: &[&str]) -> Run {
        let mut v = vec!["--to", to.to_str().expect("utf-8 path")];
        v.extend_from_slice(args);
        self.run("restore", &v)
    }

    /// The keys of the objects under `prefix`.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        self.objects(prefix).into_iter().map(|(k, _)| k).collect()
    }

    /// The keys under `prefix` and their sizes, through the library's back end (either store).
    pub fn objects(&self, prefix: &str) -> Vec<(String, u64)> {
        let backend = pgsnapfs::store::open_backend(&self.spec).expect("open the repository");
        backend
            .list(prefix)
            .expect("list the repository")
            .into_iter()
            .map(|k| {
                let size = backend.size(&k).expect("size of an object");
                (k, size)
            })
            .collect()
    }

    /// A fingerprint of every object in the repository (and, locally, every file and its
    /// mode), to check a command changed nothing.
    pub fn digest(&self) -> BTreeMap<String, String> {
        match self.store {
            Store::Local => tree_digest(&self.path),
            Store::S3 => {
                let backend = pgsnapfs::store::open_backend(&self.spec).expect("open S3 repo");
                let keys = backend.list("").expect("list the S3 repository");
                keys.into_iter()
                    .map(|k| {
                        let mut h = std::collections::hash_map::DefaultHasher::new();
                        h.write(&backend.get(&k).expect("read an S3 object"));
                        (k, format!("{:x}", h.finish()))
                    })
                    .collect()
            }
        }
    }
}

/// The `problems` of a command's JSON report, as strings.
pub fn problems(report: &serde_json::Value) -> Vec<String> {
    report["problems"]
        .as_array()
        .unwrap_or_else(|| panic!("no \"problems\" array in {report}"))
        .iter()
        .map(|p| p.as_str().unwrap_or_default().to_string())
        .collect()
}

/// The string field `key` of a backup JSON object.
#[track_caller]
pub fn json_str(v: &serde_json::Value, key: &str) -> String {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("field {key:?} missing or not a string in {v}"))
        .to_string()
}

/// The unsigned integer field `key` of a JSON object.
#[track_caller]
pub fn json_u64(v: &serde_json::Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("field {key:?} missing or not an unsigned integer in {v}"))
}

/// The requests in a `"requests"` object of pgsnapfs's JSON (retries are already in the
/// per-kind counts).
#[track_caller]
pub fn requests_total(r: &serde_json::Value) -> u64 {
    let kinds = r
        .as_object()
        .unwrap_or_else(|| panic!("\"requests\" is not an object: {r}"));
    kinds
        .iter()
        .filter(|(k, _)| k.as_str() != "retries")
        .map(|(_, v)| v.as_u64().unwrap_or_else(|| panic!("bad count in {r}")))
        .sum()
}
