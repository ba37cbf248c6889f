//! The live server: libpq-style connection options and the backup start/stop calls.
//!
//! Everything here works as a non-superuser role with `pg_read_all_settings` (for
//! `current_setting('data_directory')`) and EXECUTE on `pg_backup_start`/`pg_backup_stop`;
//! `pg_control_system()` and `pg_settings` are public (docs/operations.md, "A backup role").
//!
//! A non-exclusive backup must start and stop on one session, so `Server` holds that session
//! for the whole backup while the files are read directly from PGDATA.

use crate::error::{Error, Result};
use crate::pg::lsn::Lsn;
use crate::pg::pgpass;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use tokio_postgres::config::Host;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls};

/// Connection options, as libpq takes them: `--dbname` may be a conninfo string or a URI;
/// the other flags and then PGHOST, PGPORT, PGUSER, PGDATABASE and PGPASSWORD fill the gaps,
/// and the password file (PGPASSFILE, else ~/.pgpass) gives a password none of them did.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConnOpts {
    /// Connection string or URI (as `psql -d`).
    #[arg(short = 'd', long)]
    pub dbname: Option<String>,
    /// Server host or socket directory [env: PGHOST].
    #[arg(short = 'h', long)]
    pub host: Option<String>,
    /// Server port [env: PGPORT].
    #[arg(short = 'p', long)]
    pub port: Option<u16>,
    /// User name [env: PGUSER].
    #[arg(short = 'U', long)]
    pub username: Option<String>,
}

/// Where the password came from, for the error when the server refuses it or asks for one.
#[derive(Debug, Clone)]
enum Password {
    /// The conninfo string or PGPASSWORD.
    Given,
    /// A password file's line.
    File(PathBuf),
    /// Nowhere: the password file's path and why it gave none (None: no home directory).
    Missing(Option<(PathBuf, pgpass::Miss)>),
}

impl ConnOpts {
    /// The connection settings, the password file's included (for wal-receive's own
    /// replication connection).
    pub(crate) fn settings(&self) -> Result<Config> {
        Ok(self.config()?.0)
    }

    fn config(&self) -> Result<(Config, Password)> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let mut cfg = match &self.dbname {
            Some(s) if s.contains('=') || s.contains("://") => Config::from_str(s)
                .map_err(|e| Error::BadInput(format!("invalid connection string: {e}")))?,
            Some(db) => {
                let mut c = Config::new();
                c.dbname(db);
                c
            }
            None => Config::new(),
        };
        if cfg.get_hosts().is_empty() {
            let host = self
                .host
                .clone()
                .or_else(|| env("PGHOST"))
                .unwrap_or_else(|| pgpass::DEFAULT_SOCKET_DIR.into());
            for h in host.split(',') {
                cfg.host(h);
            }
        }
        if cfg.get_ports().is_empty() {
            let port = match (self.port, env("PGPORT")) {
                (Some(p), _) => p,
                (None, Some(p)) => p
                    .parse()
                    .map_err(|_| Error::BadInput(format!("PGPORT {p:?} is not a port")))?,
                (None, None) => 5432,
            };
            cfg.port(port);
        }
        if cfg.get_user().is_none() {
            let user = self
                .username
                .clone()
                .or_else(|| env("PGUSER"))
                .unwrap_or_else(os_user);
            cfg.user(&user);
        }
        if cfg.get_dbname().is_none() {
            cfg.dbname(env("PGDATABASE").as_deref().unwrap_or("postgres"));
        }
        if cfg.get_password().is_none() {
            if let Some(pw) = env("PGPASSWORD") {
                cfg.password(pw);
            }
        }
        let password = if cfg.get_password().is_some() {
            Password::Given
        } else {
            match env("PGPASSFILE")
                .map(PathBuf::from)
                .or_else(|| home_dir().map(|h| h.join(".pgpass")))
            {
                Some(file) => match password_from_file(&cfg, &file) {
                    Ok(pw) => {
                        cfg.password(pw);
                        Password::File(file)
                    }
                    Err(miss) => Password::Missing(Some((file, miss))),
                },
                None => Password::Missing(None),
            }
        };
        cfg.application_name("pgsnapfs");
        Ok((cfg, password))
    }
}

/// The password file's entry for the first host that has one. tokio-postgres takes one
/// password for all hosts, where libpq keeps one per host: with several hosts whose entries
/// differ, the first host's is used for all of them.
fn password_from_file(cfg: &Config, file: &Path) -> std::result::Result<String, pgpass::Miss> {
    let hosts: Vec<String> = match cfg.get_hosts() {
        [] => cfg.get_hostaddrs().iter().map(|a| a.to_string()).collect(),
        hosts => hosts
            .iter()
            .map(|h| match h {
                Host::Tcp(name) => name.clone(),
                Host::Unix(dir) => dir.to_string_lossy().into_owned(),
            })
            .collect(),
    };
    let ports = cfg.get_ports();
    let mut miss = pgpass::Miss::NoMatch;
    for (i, host) in hosts.iter().enumerate() {
        let key = pgpass::Key {
            host,
            // One port serves every host when only one is given (as libpq and tokio-postgres).
            port: ports.get(i).or(ports.first()).copied().unwrap_or(5432),
            dbname: cfg.get_dbname().unwrap_or_default(),
            user: cfg.get_user().unwrap_or_default(),
        };
        match pgpass::read(file, key) {
            Ok(pw) => return Ok(pw),
            // An absent or ignored file is the same for every host (and warned about once).
            Err(
                m @ (pgpass::Miss::Absent | pgpass::Miss::NotAFile | pgpass::Miss::Insecure { .. }),
            ) => return Err(m),
            Err(m) => miss = m,
        }
    }
    Err(miss)
}

/// $HOME, else the user's home from the password database (libpq's order).
fn home_dir() -> Option<PathBuf> {
    if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        return Some(home.into());
    }
    // SAFETY: getpwuid returns a pointer into static storage or null; read immediately.
    unsafe {
        let pw = libc::getpwuid(libc::geteuid());
        if pw.is_null() || (*pw).pw_dir.is_null() {
            return None;
        }
        let dir = std::ffi::CStr::from_ptr((*pw).pw_dir);
        Some(PathBuf::from(std::ffi::OsStr::from_bytes(dir.to_bytes())))
    }
}

fn os_user() -> String {
    // SAFETY: getpwuid returns a pointer into static storage or null; read immediately.
    unsafe {
        let pw = libc::getpwuid(libc::geteuid());
        if pw.is_null() {
            return "postgres".into();
        }
        std::ffi::CStr::from_ptr((*pw).pw_name)
            .to_string_lossy()
            .into_owned()
    }
}

/// What the server says about itself.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// The data directory, as the server reports it.
    pub data_directory: String,
    /// server_version_num (150004 for 15.4).
    pub version_num: u32,
    /// server_version, as text.
    pub version: String,
    /// The cluster's system identifier.
    pub system_identifier: u64,
    /// wal_segment_size, in bytes.
    pub wal_segment_size: u64,
    /// archive_mode (`off`, `on` or `always`).
    pub archive_mode: String,
}

impl ServerInfo {
    /// The major version (15 for 15.4).
    pub fn major(&self) -> u32 {
        self.version_num / 10000
    }
}

/// The result of stopping a backup.
pub struct BackupStop {
    /// The backup's end position (the LSN the server returns from pg_backup_stop).
    pub lsn: Lsn,
    /// The backup_label file the server returned, to store in the backup.
    pub label_file: String,
    /// The tablespace_map file, if the cluster has tablespaces.
    pub tablespace_map: Option<String>,
}

/// A connection to a PostgreSQL server, with its own single-threaded runtime so callers stay synchronous.
pub struct Server {
    rt: tokio::runtime::Runtime,
    client: Client,
    target: String,
}

fn pg(what: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> Error {
    let what = what.into();
    move |source| {
        let message = match source.as_db_error() {
            Some(db) => match db.detail() {
                Some(detail) => format!("{}: {} ({detail})", db.severity(), db.message()),
                None => format!("{}: {}", db.severity(), db.message()),
            },
            None => source.to_string(),
        };
        Error::Postgres {
            what,
            message,
            source,
        }
    }
}

impl Server {
    /// Connects, taking the password from the options, the environment or the password file (PGPASSFILE, else ~/.pgpass); the error says why a connection failed and what to do.
    pub fn connect(opts: &ConnOpts) -> Result<Server> {
        let (cfg, password) = opts.config()?;
        let user = cfg.get_user().unwrap_or("?").to_string();
        let target = format!("{:?} port {:?} as {user}", cfg.get_hosts(), cfg.get_ports(),);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(crate::error::io("start async runtime"))?;
        let (client, conn) = rt
            .block_on(cfg.connect(NoTls))
            .map_err(|source| connect_error(&source, &target, &user, &password))?;
        rt.spawn(async move {
            if let Err(e) = conn.await {
                tracing::warn!("PostgreSQL connection ended: {e}");
            }
        });
        Ok(Server { rt, client, target })
    }

    /// The connection target (host, port, database), for messages.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Asks the server who it is: data directory, version, system identifier, segment size, archive mode.
    pub fn info(&self) -> Result<ServerInfo> {
        let row = self
            .rt
            .block_on(self.client.query_one(
                "SELECT current_setting('data_directory'), current_setting('server_version_num')::int, \
                 current_setting('server_version'), (SELECT system_identifier FROM pg_control_system())::text, \
                 (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'), \
                 current_setting('archive_mode')",
                &[],
            ))
            .map_err(pg("read server settings"))?;
        Ok(ServerInfo {
            data_directory: row.get(0),
            version_num: row.get::<_, i32>(1) as u32,
            version: row.get(2),
            system_identifier: row
                .get::<_, String>(3)
                .parse()
                .map_err(|_| Error::BadAnswer("reported a bad system identifier".into()))?,
            wal_segment_size: row.get::<_, i64>(4) as u64,
            archive_mode: row.get(5),
        })
    }

    /// Starts a non-exclusive backup with an immediate checkpoint.
    pub fn backup_start(&self, label: &str, major: u32) -> Result<Lsn> {
        let sql = if major >= 15 {
            "SELECT pg_backup_start($1, true)::text"
        } else {
            "SELECT pg_start_backup($1, true, false)::text"
        };
        let row = self
            .rt
            .block_on(self.client.query_one(sql, &[&label]))
            .map_err(pg("start the backup"))?;
        parse_lsn(&row.get::<_, String>(0))
    }

    /// Stops the backup without waiting for the archiver: the caller makes sure the WAL it
    /// needs is in the repository (from the archive, or from pg_wal), so a broken
    /// archive_command cannot hang a backup.
    pub fn backup_stop(&self, major: u32) -> Result<BackupStop> {
        let sql = if major >= 15 {
            "SELECT lsn::text, labelfile, spcmapfile FROM pg_backup_stop(false)"
        } else {
            "SELECT lsn::text, labelfile, spcmapfile FROM pg_stop_backup(false, false)"
        };
        let row = self
            .rt
            .block_on(self.client.query_one(sql, &[]))
            .map_err(pg("stop the backup"))?;
        let map: Option<String> = row.get(2);
        Ok(BackupStop {
            lsn: parse_lsn(&row.get::<_, String>(0))?,
            label_file: row.get(1),
            tablespace_map: map.filter(|m| !m.is_empty()),
        })
    }
}

impl Server {
    /// Runs a statement, ignoring its rows.
    pub fn execute(&self, sql: &str) -> Result<()> {
        self.rt
            .block_on(self.client.batch_execute(sql))
            .map_err(pg(sql.to_string()))
    }

    /// Every row, each column as text (NULL as "").
    pub fn query_rows(&self, sql: &str) -> Result<Vec<Vec<String>>> {
        let rows = self
            .rt
            .block_on(self.client.simple_query(sql))
            .map_err(pg(sql.to_string()))?;
        Ok(rows
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                    (0..r.len())
                        .map(|i| r.get(i).unwrap_or_default().to_string())
                        .collect(),
                ),
                _ => None,
            })
            .collect())
    }

    /// The first column of every row, as text.
    pub fn query_strings(&self, sql: &str) -> Result<Vec<String>> {
        Ok(self
            .query_rows(sql)?
            .into_iter()
            .map(|row| row.into_iter().next().unwrap_or_default())
            .collect())
    }

    /// A query that must return exactly one row holding a boolean.
    pub fn query_bool(&self, sql: &str) -> Result<bool> {
        match self.query_strings(sql)?.as_slice() {
            [v] if v == "t" => Ok(true),
            [v] if v == "f" => Ok(false),
            other => Err(Error::BadInput(format!(
                "expected one boolean from {sql:?}, got {other:?}"
            ))),
        }
    }

    /// Whether a function called `name` exists in the server's catalog (pg_proc).
    pub fn has_function(&self, name: &str) -> Result<bool> {
        let sql = format!(
            "SELECT count(*) > 0 FROM pg_proc WHERE proname = '{}'",
            name.replace('\'', "''")
        );
        self.query_bool(&sql)
    }
}

/// Says why a connection failed and what to do: a refused or missing password is not a
/// server that is down.
fn connect_error(
    source: &tokio_postgres::Error,
    target: &str,
    user: &str,
    password: &Password,
) -> Error {
    let db = source.as_db_error();
    if db.is_some_and(|d| *d.code() == SqlState::INVALID_PASSWORD) {
        let from = match password {
            Password::File(file) => format!(" (the password came from {})", file.display()),
            _ => String::new(),
        };
        return Error::Connect {
            target: target.to_string(),
            reason: format!(
                "password authentication failed for user {user}{from}: give it with PGPASSWORD \
                 or ~/.pgpass (PGPASSFILE)"
            ),
        };
    }
    // tokio-postgres reports the server's password request without a password as an
    // "invalid configuration" whose cause says "password missing".
    let asked = db.is_none()
        && std::error::Error::source(source).is_some_and(|c| c.to_string() == "password missing");
    if asked {
        let looked = match password {
            Password::Missing(Some((file, miss))) => {
                format!("--dbname, PGPASSWORD and {} ({miss})", file.display())
            }
            _ => "--dbname and PGPASSWORD (no home directory for ~/.pgpass)".to_string(),
        };
        return Error::Connect {
            target: target.to_string(),
            reason: format!(
                "the server asks for a password for user {user} and none was found: pgsnapfs \
                 looked in {looked}; give it with PGPASSWORD or ~/.pgpass (PGPASSFILE)"
            ),
        };
    }
    let message = match (db, std::error::Error::source(source)) {
        // The server answered: its own words say what is wrong (no pg_hba.conf entry, ...).
        (Some(d), _) => {
            return Error::Connect {
                target: target.to_string(),
                reason: format!("{}: {}", d.severity(), d.message()),
            }
        }
        (None, Some(cause)) => format!("{source}: {cause}"),
        (None, None) => source.to_string(),
    };
    Error::Connect {
        target: target.to_string(),
        reason: format!(
            "{message}; is the server running? (set --dbname, -h/-p/-U or PGHOST/PGPORT/PGUSER)"
        ),
    }
}

fn parse_lsn(s: &str) -> Result<Lsn> {
    Lsn::from_str(s).map_err(|_| Error::BadAnswer(format!("returned a bad LSN {s:?}")))
}
