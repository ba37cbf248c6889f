//! Leases: records in the repository (`locks/<id>`) of the commands using it, so they work
//! across hosts on S3 as well as locally.
//!
//! Every command that reads packs or snapshots holds a shared lease while it runs; gc, expire
//! and backup-keep hold an exclusive one, which excludes each other but never readers or
//! writers. A heartbeat thread refreshes the lease every `REFRESH`; a lease not refreshed
//! within its TTL, or whose process is dead on this very machine, is stale and counts as gone.
//! gc never waits for leases: it records which were alive when it condemned packs and deletes
//! them only once all of those are gone (docs/repository-format.md, "Deleting").
//!
//! Leases fail closed: one that cannot be read is held by someone unknown, using unknown
//! backups, so expire and gc stop rather than guess.

use crate::error::{Error, Result};
use crate::store::crypto::Sealer;
use crate::store::{keys, random_id, Backend, Repository, StoreError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// How long a lease stays live without a refresh.
pub const TTL: Duration = Duration::from_secs(300);
/// How often the holder refreshes it. The holder gives its lease up as lost once
/// `TTL - REFRESH` has passed without a successful refresh, so clocks may disagree by up to
/// `REFRESH` before another host could take a lease over too early.
const REFRESH: Duration = Duration::from_secs(60);
/// How often a command that must wait for an expire looks again.
const POLL: Duration = Duration::from_secs(1);

/// The lease object: sealed JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub id: String,
    pub command: String,
    pub exclusive: bool,
    pub host: String,
    pub pid: u32,
    /// The holder's boot and PID namespace: where it equals ours, a dead PID is a dead holder.
    pub instance: String,
    /// The holder's start time (clock ticks after boot, from /proc): a live process of the
    /// same PID but another start time took over a dead holder's PID. Absent in old leases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<u64>,
    pub created: DateTime<Utc>,
    pub refreshed: DateTime<Utc>,
    pub ttl_s: u64,
    /// Backups this command uses, which expire keeps while the lease is live.
    #[serde(default)]
    pub pins: Vec<String>,
}

/// This process's host and instance, to judge leases held on the same machine.
#[derive(Debug, Clone)]
pub struct Here {
    pub host: String,
    pub instance: String,
}

impl Here {
    pub fn current() -> Here {
        let mut buf = [0u8; 256];
        // SAFETY: buf is writable for its length; gethostname NUL-terminates on success.
        let host = if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0 {
            let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
            String::from_utf8_lossy(&buf[..end]).into_owned()
        } else {
            "unknown".into()
        };
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
        let pidns = std::fs::read_link("/proc/self/ns/pid")
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        Here {
            host,
            instance: format!("{}/{pidns}", boot.trim()),
        }
    }
}

/// A process's state and start time from the text of `/proc/PID/stat`: the fields after
/// the command name, which is in parentheses and may hold anything, parentheses included.
fn parse_stat(stat: &str) -> Option<(char, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // After the state, starttime is the 19th field (field 22 of the whole line).
    let started = fields.nth(18)?.parse().ok()?;
    Some((state, started))
}

fn proc_stat(pid: u32) -> std::io::Result<Option<(char, u64)>> {
    Ok(parse_stat(&std::fs::read_to_string(format!(
        "/proc/{pid}/stat"
    ))?))
}

/// This process's start time, recorded in its leases.
fn own_start_time() -> Option<u64> {
    proc_stat(std::process::id()).ok().flatten().map(|s| s.1)
}

/// Whether the holder of a lease of this PID namespace still runs: its PID exists, is not a
/// zombie (killed but not yet reaped), and, where the lease recorded it, started when the
/// holder did.
pub fn holder_alive(pid: u32, started: Option<u64>) -> bool {
    match proc_stat(pid) {
        Ok(Some((state, start))) => {
            !matches!(state, 'Z' | 'X') && started.is_none_or(|s| s == start)
        }
        // No /proc entry to read (none, or hidden with hidepid): whether the PID exists is
        // all there is.
        _ => {
            // SAFETY: signal 0 only checks for existence and permission.
            let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
            r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
        }
    }
}

impl LeaseRecord {
    /// Whether the holder is certainly gone: not refreshed within its TTL, or a process that
    /// no longer runs on this machine (`alive` judges its PID and start time).
    pub fn is_stale(
        &self,
        now: DateTime<Utc>,
        here: &Here,
        alive: impl Fn(u32, Option<u64>) -> bool,
    ) -> bool {
        let ttl = chrono::Duration::seconds(self.ttl_s as i64);
        self.refreshed + ttl < now || (self.is_local(here) && !alive(self.pid, self.started))
    }

    /// Whether the holder runs in this machine's PID namespace, where its PID can be checked.
    pub fn is_local(&self, here: &Here) -> bool {
        self.host == here.host && !self.instance.is_empty() && self.instance == here.instance
    }

    pub fn describe(&self) -> String {
        format!(
            "{} lease {} ({} on {}, pid {}, since {})",
            if self.exclusive {
                "exclusive"
            } else {
                "shared"
            },
            self.id,
            self.command,
            self.host,
            self.pid,
            self.created
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
    }
}

/// A lease as found in the repository.
#[derive(Debug, Clone)]
pub struct Found {
    pub key: String,
    /// The lease, or why it could not be read: such a lease counts as held, since its holder
    /// and what it uses are unknown.
    pub record: std::result::Result<LeaseRecord, String>,
    pub stale: bool,
}

/// Why a command cannot go on under the repository's leases.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error(
        "cannot read {}: a command may hold it and use backups that nothing else shows, so \
         nothing is deleted. Once it can be read this command goes on; if its holder is gone, \
         remove it with `pgsnapfs locks --remove {}`",
        what.join(", "),
        ids.join("` and `pgsnapfs locks --remove ")
    )]
    Unreadable { what: Vec<String>, ids: Vec<String> },
    #[error(
        "the repository is busy: {holder} holds it exclusively; try again when it finishes, or \
         if that process is gone, remove the lease with `pgsnapfs locks --remove {id}`"
    )]
    Busy { holder: String, id: String },
    #[error(
        "lost the repository lease {id}: {why}; nothing more is written, run the command again"
    )]
    Lost { id: String, why: String },
    #[error(
        "could not refresh the repository lease {id} for {secs}s; nothing more is written, run \
         the command again"
    )]
    Unrefreshed { id: String, secs: u64 },
}

/// Every lease in the repository, judged at `now`.
pub fn list(repo: &Repository) -> Result<Vec<Found>> {
    let here = Here::current();
    let now = Utc::now();
    let mut out = Vec::new();
    for key in repo.lease_keys()? {
        let record = match repo.get_sealed(&key) {
            Ok(p) => serde_json::from_slice::<LeaseRecord>(&p)
                .map_err(|e| format!("{key} is not a lease record: {e}")),
            // Released between the listing and the read.
            Err(StoreError::Backend(e)) if e.is_not_found() => continue,
            Err(e) => Err(e.to_string()),
        };
        let stale = record
            .as_ref()
            .is_ok_and(|r| r.is_stale(now, &here, holder_alive));
        out.push(Found { key, record, stale });
    }
    Ok(out)
}

impl Found {
    pub fn id(&self) -> &str {
        self.key.trim_start_matches(keys::LOCKS)
    }

    /// An unreadable lease counts as live but not as exclusive: it blocks no other command
    /// from starting, and stops expire and gc (`live`).
    fn is_live_exclusive(&self, command: Option<&str>) -> bool {
        !self.stale
            && self
                .record
                .as_ref()
                .is_ok_and(|r| r.exclusive && command.is_none_or(|c| c == r.command))
    }
}

/// The leases live now, for a command about to delete: one that cannot be read fails it,
/// naming the lease, why, and what to do, since what its holder uses is unknown.
pub fn live(repo: &Repository) -> Result<Vec<LeaseRecord>> {
    let mut live = Vec::new();
    let mut unreadable = Vec::new();
    for found in list(repo)?.into_iter().filter(|f| !f.stale) {
        match found.record {
            Ok(r) => live.push(r),
            Err(why) => {
                unreadable.push((found.key.trim_start_matches(keys::LOCKS).to_string(), why))
            }
        }
    }
    if !unreadable.is_empty() {
        let what: Vec<String> = unreadable
            .iter()
            .map(|(id, why)| format!("lease {id} ({why})"))
            .collect();
        let ids: Vec<String> = unreadable.into_iter().map(|(id, _)| id).collect();
        return Err(LeaseError::Unreadable { what, ids }.into());
    }
    Ok(live)
}

/// The ids of the leases that are live now; fails on an unreadable one, like `live`.
pub fn live_ids(repo: &Repository) -> Result<Vec<String>> {
    Ok(live(repo)?.into_iter().map(|r| r.id).collect())
}

/// Why `locks --remove` without `--force` keeps a lease: its holder may be using the
/// repository. `None` if the lease may go.
pub fn keep_reason(found: &Found, here: &Here) -> Option<String> {
    let r = found.record.as_ref().ok()?;
    if found.stale {
        return None;
    }
    Some(if r.is_local(here) {
        format!(
            "its holder, {} (pid {}), is still running on this host: stop it instead",
            r.command, r.pid
        )
    } else {
        format!(
            "its holder, {} on {}, refreshed it at {} and its process cannot be checked from \
             here: make sure it is gone",
            r.command,
            r.host,
            r.refreshed
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
    })
}

/// Removes a lease by id (`pgsnapfs locks --remove`). A lease whose holder may be alive is
/// kept unless `force`: removing it would let expire and gc delete what that command uses.
pub fn remove(repo: &Repository, id: &str, force: bool) -> Result<()> {
    let key = keys::lock(id);
    let Some(found) = list(repo)?.into_iter().find(|f| f.key == key) else {
        return Err(Error::NotFound(format!(
            "no lease {id}; `pgsnapfs locks` lists them"
        )));
    };
    if let Some(why) = keep_reason(&found, &Here::current()).filter(|_| !force) {
        return Err(Error::BadInput(format!(
            "lease {id} is not removed: {why}. `--force` removes it anyway; expire and gc may \
             then delete what that command uses"
        )));
    }
    repo.delete_lease(&key)?;
    Ok(())
}

struct State {
    record: LeaseRecord,
    last_ok: std::time::Instant,
    lost: Option<String>,
    stop: bool,
}

/// A lease this process holds. Dropping it stops the heartbeat and removes the lease.
pub struct Lease {
    backend: Arc<dyn Backend>,
    sealer: Sealer,
    key: String,
    state: Arc<(Mutex<State>, Condvar)>,
    heartbeat: Option<std::thread::JoinHandle<()>>,
}

impl Lease {
    /// Takes a shared lease for `command`.
    pub fn shared(repo: &Repository, command: &str) -> Result<Lease> {
        Lease::take(repo, command, false)
    }

    /// Takes the exclusive lease for `command`, failing if another gc, expire or
    /// backup-keep holds one. Stale leases found on the way are removed.
    pub fn exclusive(repo: &Repository, command: &str) -> Result<Lease> {
        let lease = Lease::take(repo, command, true)?;
        // Written before listing: of two commands starting together, at least one sees the
        // other (both may, and both give up).
        for found in list(repo)? {
            if found.key == lease.key {
                continue;
            }
            if found.stale {
                let what = found.record.as_ref().map(LeaseRecord::describe);
                tracing::info!("removing stale {}", what.unwrap_or(found.key.clone()));
                repo.delete_lease(&found.key)?;
            } else if let Some(r) = found
                .record
                .as_ref()
                .ok()
                .filter(|_| found.is_live_exclusive(None))
            {
                return Err(LeaseError::Busy {
                    holder: r.describe(),
                    id: found.id().to_string(),
                }
                .into());
            }
        }
        Ok(lease)
    }

    fn take(repo: &Repository, command: &str, exclusive: bool) -> Result<Lease> {
        let here = Here::current();
        let now = Utc::now();
        let record = LeaseRecord {
            id: random_id().to_hex()[..16].to_string(),
            command: command.into(),
            exclusive,
            host: here.host,
            pid: std::process::id(),
            instance: here.instance,
            started: own_start_time(),
            created: now,
            refreshed: now,
            ttl_s: TTL.as_secs(),
            pins: Vec::new(),
        };
        let key = keys::lock(&record.id);
        let backend = repo.backend_arc();
        let sealer = repo.sealer();
        backend.put(&key, &seal(&record, &sealer, &key))?;
        let state = Arc::new((
            Mutex::new(State {
                record,
                last_ok: std::time::Instant::now(),
                lost: None,
                stop: false,
            }),
            Condvar::new(),
        ));
        let heartbeat = {
            let (backend, key, state) = (backend.clone(), key.clone(), state.clone());
            let sealer = sealer.clone();
            std::thread::spawn(move || heartbeat(backend.as_ref(), &key, &sealer, &state))
        };
        Ok(Lease {
            backend,
            sealer,
            key,
            state,
            heartbeat: Some(heartbeat),
        })
    }

    pub fn id(&self) -> String {
        self.state.0.lock().expect("lease state").record.id.clone()
    }

    /// Fails if the lease may have been lost (refreshes failed for too long, or it was
    /// removed): a command checks this before a step that relies on it, such as publishing
    /// a backup or deleting packs.
    pub fn ensure_held(&self) -> Result<()> {
        let s = self.state.0.lock().expect("lease state");
        if let Some(why) = &s.lost {
            return Err(LeaseError::Lost {
                id: s.record.id.clone(),
                why: why.clone(),
            }
            .into());
        }
        if s.last_ok.elapsed() > TTL - REFRESH {
            return Err(LeaseError::Unrefreshed {
                id: s.record.id.clone(),
                secs: s.last_ok.elapsed().as_secs(),
            }
            .into());
        }
        Ok(())
    }

    /// Records the backups this command uses, so expire keeps them (and their WAL) while it
    /// runs. If an expire was running when the pins were written, it may have missed them:
    /// this waits for it to end and returns true, and the caller must check its backups
    /// still exist.
    pub fn pin(&self, repo: &Repository, backups: &[String]) -> Result<bool> {
        {
            let mut s = self.state.0.lock().expect("lease state");
            s.record.pins = backups.to_vec();
            s.record.refreshed = Utc::now();
            self.backend
                .replace(&self.key, &seal(&s.record, &self.sealer, &self.key))?;
        }
        let mut waited = false;
        loop {
            let expiring: Vec<Found> = list(repo)?
                .into_iter()
                .filter(|f| f.key != self.key && f.is_live_exclusive(Some("expire")))
                .collect();
            let Some(first) = expiring.first() else {
                return Ok(waited);
            };
            if !waited {
                tracing::warn!("waiting for a running expire ({}) to finish", first.id());
            }
            waited = true;
            std::thread::sleep(POLL);
        }
    }
}

fn seal(record: &LeaseRecord, sealer: &Sealer, key: &str) -> Vec<u8> {
    sealer.seal(
        key,
        &serde_json::to_vec_pretty(record).expect("lease serializes"),
    )
}

fn heartbeat(backend: &dyn Backend, key: &str, sealer: &Sealer, state: &(Mutex<State>, Condvar)) {
    let (lock, wake) = state;
    let mut s = lock.lock().expect("lease state");
    loop {
        s = wake
            .wait_timeout_while(s, REFRESH, |s| !s.stop)
            .expect("lease state")
            .0;
        if s.stop {
            return;
        }
        s.record.refreshed = Utc::now();
        let bytes = seal(&s.record, sealer, key);
        // Someone removed it (judged stale, or `locks --remove`): writing it back would claim
        // a protection that others have stopped honouring.
        let result = backend.exists(key).and_then(|there| {
            if there {
                backend.replace(key, &bytes).map(|_| true)
            } else {
                Ok(false)
            }
        });
        match result {
            Ok(true) => s.last_ok = std::time::Instant::now(),
            Ok(false) => {
                tracing::error!("repository lease {key} was removed by another process");
                s.lost = Some("another process removed it as stale".into());
                return;
            }
            Err(e) => tracing::warn!("cannot refresh repository lease {key}: {e}"),
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.state.0.lock().expect("lease state").stop = true;
        self.state.1.notify_all();
        if let Some(t) = self.heartbeat.take() {
            let _ = t.join();
        }
        if let Err(e) = self.backend.delete(&self.key) {
            if !e.is_not_found() {
                tracing::warn!(
                    "cannot remove repository lease {}: {e}; it goes stale in {}s",
                    self.key,
                    TTL.as_secs()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::backend::memory::MemoryBackend;

    fn repo() -> Repository {
        Repository::init(Arc::new(MemoryBackend::default()), 65536, 3).unwrap()
    }

    fn record(host: &str, instance: &str, refreshed: DateTime<Utc>) -> LeaseRecord {
        LeaseRecord {
            id: "a".into(),
            command: "backup".into(),
            exclusive: false,
            host: host.into(),
            pid: 42,
            instance: instance.into(),
            started: Some(7),
            created: refreshed,
            refreshed,
            ttl_s: 300,
            pins: vec![],
        }
    }

    #[test]
    fn staleness() {
        let here = Here {
            host: "h".into(),
            instance: "boot/ns".into(),
        };
        let now = Utc::now();
        let fresh = record("h", "boot/ns", now - chrono::Duration::seconds(299));
        assert!(!fresh.is_stale(now, &here, |_, _| true));
        // Same machine, dead process: stale at once.
        assert!(fresh.is_stale(now, &here, |_, _| false));
        // Another host's process cannot be checked: only the TTL counts.
        let remote = record("other", "boot/ns", now - chrono::Duration::seconds(299));
        assert!(!remote.is_stale(now, &here, |_, _| false));
        let old = record("other", "x", now - chrono::Duration::seconds(301));
        assert!(old.is_stale(now, &here, |_, _| true));
        // Another PID namespace on the same host (a container): only the TTL counts.
        let container = record("h", "boot/other-ns", now);
        assert!(!container.is_stale(now, &here, |_, _| false));
    }

    #[test]
    fn holder_liveness_from_proc() {
        let line = "4242 (a) b (c)) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 9876 20 21";
        assert_eq!(parse_stat(line), Some(('S', 9876)));
        assert_eq!(parse_stat("garbage"), None);
        let me = std::process::id();
        let started = own_start_time();
        assert!(started.is_some());
        assert!(holder_alive(me, started));
        // The same PID started at another time is another process: the holder is gone.
        assert!(!holder_alive(me, started.map(|s| s + 1)));
        // A child killed but not yet reaped (a zombie) is gone too.
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let pid = child.id();
        let started = proc_stat(pid).unwrap().map(|s| s.1);
        assert!(holder_alive(pid, started));
        child.kill().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while proc_stat(pid).unwrap().map(|s| s.0) != Some('Z') {
            assert!(std::time::Instant::now() < deadline, "child never died");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!holder_alive(pid, started));
        child.wait().unwrap();
        assert!(!holder_alive(pid, started));
    }

    #[test]
    fn an_unreadable_lease_stops_deletion_and_a_live_one_is_not_removed() {
        let repo = repo();
        let mount = Lease::shared(&repo, "mount").unwrap();
        // This process holds it: removing it needs --force.
        let err = remove(&repo, &mount.id(), false).unwrap_err();
        assert!(err.to_string().contains("still running"), "{err}");
        assert_eq!(live_ids(&repo).unwrap(), vec![mount.id()]);
        repo.backend()
            .put(&keys::lock("garbled"), b"not a lease")
            .unwrap();
        let err = live(&repo).unwrap_err().to_string();
        assert!(
            err.contains("lease garbled") && err.contains("nothing is deleted"),
            "{err}"
        );
        assert!(live_ids(&repo).is_err());
        // The unreadable one may be removed by hand (its holder is unknown).
        remove(&repo, "garbled", false).unwrap();
        remove(&repo, &mount.id(), true).unwrap();
        assert!(live(&repo).unwrap().is_empty());
    }

    #[test]
    fn exclusive_excludes_exclusive_not_shared() {
        let repo = repo();
        let shared = Lease::shared(&repo, "backup").unwrap();
        let gc = Lease::exclusive(&repo, "gc").unwrap();
        let err = Lease::exclusive(&repo, "expire").err().unwrap();
        assert!(err.to_string().contains("busy"), "{err}");
        // The refused attempt left no lease behind.
        assert_eq!(live_ids(&repo).unwrap().len(), 2);
        drop(gc);
        let expire = Lease::exclusive(&repo, "expire").unwrap();
        assert_eq!(live_ids(&repo).unwrap(), {
            let mut v = vec![shared.id(), expire.id()];
            v.sort();
            v
        });
        drop((shared, expire));
        assert!(repo.backend().list(keys::LOCKS).unwrap().is_empty());
    }

    #[test]
    fn stale_exclusive_lease_is_taken_over() {
        let repo = repo();
        let now = Utc::now();
        let mut dead = record("elsewhere", "x", now - chrono::Duration::seconds(3600));
        dead.exclusive = true;
        dead.command = "gc".into();
        repo.backend()
            .put(
                &keys::lock("a"),
                &seal(&dead, &repo.sealer(), &keys::lock("a")),
            )
            .unwrap();
        let found = list(&repo).unwrap();
        assert!(found[0].stale);
        let gc = Lease::exclusive(&repo, "gc").unwrap();
        assert_eq!(live_ids(&repo).unwrap(), vec![gc.id()]);
    }

    #[test]
    fn pins_are_visible_and_lost_lease_is_reported() {
        let repo = repo();
        let mount = Lease::shared(&repo, "mount").unwrap();
        assert!(!mount.pin(&repo, &["b1".into()]).unwrap());
        let found = list(&repo).unwrap();
        assert_eq!(
            found[0].record.as_ref().unwrap().pins,
            vec!["b1".to_string()]
        );
        mount.ensure_held().unwrap();
        mount.state.0.lock().unwrap().lost = Some("test".into());
        assert!(mount.ensure_held().is_err());
    }
}
