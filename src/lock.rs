//! Leases: records in the repository (`locks/<id>`) of the commands using it, so they work
//! across hosts on S3 as well as locally.
//!
//! Every command that reads packs or snapshots holds a shared lease while it runs; gc, expire
//! and backup-keep hold an exclusive one, which excludes each other but never readers or
//! writers. A heartbeat thread refreshes the lease every `REFRESH`; a lease not refreshed
//! within its TTL, or whose process is dead on this very machine, is stale and counts as gone.
//! "Not refreshed" is judged with a clock the reader can trust: the holder's own timestamp
//! where the holder runs on the reader's kernel (one clock), and otherwise the reader's
//! monotonic clock, watching the record not change (`Watch`), since another machine's clock
//! may be off by any amount. The store's own timestamps would do too, but the back ends do
//! not expose them alike (S3 `LastModified` against a local file's mtime, written by each
//! writer's kernel), while a changed record means the same on both.
//! gc never waits for leases: it records which were alive when it condemned packs and deletes
//! them only once all of those are gone (docs/repository-format.md, "Deleting").
//!
//! Leases fail closed: one that cannot be read is held by someone unknown, using unknown
//! backups, so expire and gc stop rather than guess.
//!
//! A persistent lease ([`take_persistent`]) belongs to a clone, not to a process: it pins the
//! clone's backup until `clone destroy` releases it, and never goes stale. It reads nothing
//! itself (the clone's mount takes a lease of its own), so gc does not wait for it.

use crate::error::{Error, Result};
use crate::store::crypto::Sealer;
use crate::store::{keys, random_id, Backend, Repository, StoreError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long a lease stays live without a refresh.
pub const TTL: Duration = Duration::from_secs(300);
/// How often the holder refreshes it. The holder gives its lease up as lost once
/// `TTL - REFRESH` has passed without a successful refresh, well before a reader that saw its
/// record unchanged for `TTL` takes the lease over.
const REFRESH: Duration = Duration::from_secs(60);
/// How often a command that must wait for an expire looks again.
const POLL: Duration = Duration::from_secs(1);

/// The lease object: sealed JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// A random id of 16 hex digits; the object's key is `locks/<id>`.
    pub id: String,
    /// The command holding it, such as `backup`, `mount` or `gc`.
    pub command: String,
    /// Whether it is the exclusive lease of gc, expire or backup-keep.
    pub exclusive: bool,
    /// The holder's host name, as it reports it.
    pub host: String,
    /// The holder's process id, in its own PID namespace.
    pub pid: u32,
    /// The holder's boot and PID namespace: where it equals ours, a dead PID is a dead holder.
    pub instance: String,
    /// The holder's start time (clock ticks after boot, from /proc): a live process of the
    /// same PID but another start time took over a dead holder's PID. Absent in old leases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<u64>,
    /// When the lease was taken, by the holder's clock.
    pub created: DateTime<Utc>,
    /// When the holder last refreshed it, by the holder's clock (comparable with ours only
    /// where [`LeaseRecord::shares_clock`]).
    pub refreshed: DateTime<Utc>,
    /// Seconds the lease stays live without a refresh ([`TTL`] when written).
    pub ttl_s: u64,
    /// Backups this command uses, which expire keeps while the lease is live.
    #[serde(default)]
    pub pins: Vec<String>,
    /// Held by a clone until it is destroyed, not by a process: never stale. Written with
    /// an empty `instance` and a TTL of a century, so builds that predate the field take it
    /// for a live lease of another machine.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub persistent: bool,
}

/// This process's host and instance, to judge leases held on the same machine.
#[derive(Debug, Clone)]
pub struct Here {
    /// The host name (`unknown` if it cannot be read).
    pub host: String,
    /// `<boot id>/<PID namespace>`: equal for processes on one kernel and in one PID
    /// namespace, so one can check the other's PID.
    pub instance: String,
}

impl Here {
    /// This process's host and instance, read from the kernel.
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
    /// Whether one look shows the holder is certainly gone: a holder on this kernel not
    /// refreshed within its TTL, or a process that no longer runs on this machine (`alive`
    /// judges its PID and start time). A holder on another machine is never stale at one
    /// look: its `refreshed` is by its own clock, and only a `Watch` can tell.
    pub fn is_stale(
        &self,
        now: DateTime<Utc>,
        here: &Here,
        alive: impl Fn(u32, Option<u64>) -> bool,
    ) -> bool {
        !self.persistent
            && self.shares_clock(here)
            && (self.is_overdue(now) || (self.is_local(here) && !alive(self.pid, self.started)))
    }

    /// Whether `refreshed + ttl_s` is before `now`: meaningful only on one clock, and for a
    /// holder on another machine a hint that it may be silent, worth watching.
    pub fn is_overdue(&self, now: DateTime<Utc>) -> bool {
        let ttl = chrono::Duration::seconds(self.ttl_s.min(i64::MAX as u64) as i64);
        self.refreshed + ttl < now
    }

    /// Whether the holder runs on the reader's kernel (same boot id, any PID namespace), so
    /// its wall clock is the reader's.
    pub fn shares_clock(&self, here: &Here) -> bool {
        let boot = |instance: &str| instance.split('/').next().unwrap_or_default().to_string();
        !boot(&self.instance).is_empty() && boot(&self.instance) == boot(&here.instance)
    }

    /// Whether the holder runs in this machine's PID namespace, where its PID can be checked.
    pub fn is_local(&self, here: &Here) -> bool {
        self.host == here.host && !self.instance.is_empty() && self.instance == here.instance
    }

    /// One line naming the lease for messages: kind, id, command, host, PID and since when.
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
    /// Its object's key, `locks/<id>`.
    pub key: String,
    /// The lease, or why it could not be read: such a lease counts as held, since its holder
    /// and what it uses are unknown.
    pub record: std::result::Result<LeaseRecord, String>,
    /// Certainly given up at the time of listing (see [`LeaseRecord::is_stale`]); never set
    /// for an unreadable lease.
    pub stale: bool,
    /// Held on another machine, and overdue by the reader's clock: maybe silent, maybe on a
    /// clock behind ours. An exclusive command watches it (`Watch`).
    pub overdue: bool,
}

/// What watching a lease on another machine has shown so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard {
    /// Its record changed while watched: its holder refreshes it.
    Beating,
    /// Its record stayed the same for its TTL: its holder is gone.
    Silent,
    /// Not watched long enough to tell.
    Undecided,
}

struct Seen {
    record: LeaseRecord,
    since: Instant,
    changed: bool,
}

/// The reader's own record of when it last saw each lease change, by its monotonic clock:
/// the holder gives its lease up after `TTL - REFRESH` without a refresh by its own
/// monotonic clock, so a record unchanged for `TTL` here is a lease given up, whatever either
/// machine's wall clock says.
#[derive(Default)]
pub struct Watch(HashMap<String, Seen>);

impl Watch {
    /// Notes `record`, read from `key` at `now`, and says what watching it has shown.
    pub fn look(&mut self, key: &str, record: &LeaseRecord, now: Instant) -> Heard {
        let seen = self.0.entry(key.to_string()).or_insert_with(|| Seen {
            record: record.clone(),
            since: now,
            changed: false,
        });
        if seen.record != *record {
            *seen = Seen {
                record: record.clone(),
                since: now,
                changed: true,
            };
        }
        if now.saturating_duration_since(seen.since) >= Duration::from_secs(record.ttl_s) {
            Heard::Silent
        } else if seen.changed {
            Heard::Beating
        } else {
            Heard::Undecided
        }
    }
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
    /// Leases that cannot be read: their holders may use backups nothing else shows.
    Unreadable {
        /// Each unreadable lease, and why it cannot be read.
        what: Vec<String>,
        /// Their ids, for `pgsnapfs locks --remove`.
        ids: Vec<String>,
    },
    #[error(
        "the repository is busy: {holder} holds it exclusively; try again when it finishes, or \
         if that process is gone, remove the lease with `pgsnapfs locks --remove {id}`"
    )]
    /// Another exclusive lease is live.
    Busy {
        /// The holding lease, described (see [`LeaseRecord::describe`]).
        holder: String,
        /// Its id.
        id: String,
    },
    #[error(
        "lost the repository lease {id}: {why}; nothing more is written, run the command again"
    )]
    /// Another process removed this process's lease (judged it stale, or `locks --remove`).
    Lost {
        /// The lease's id.
        id: String,
        /// What the heartbeat found.
        why: String,
    },
    #[error(
        "could not refresh the repository lease {id} for {secs}s; nothing more is written, run \
         the command again"
    )]
    /// This process's lease was not refreshed for so long that others may count it gone.
    Unrefreshed {
        /// The lease's id.
        id: String,
        /// Seconds since the last successful refresh.
        secs: u64,
    },
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
        let overdue = record
            .as_ref()
            .is_ok_and(|r| !r.shares_clock(&here) && r.is_overdue(now));
        out.push(Found {
            key,
            record,
            stale,
            overdue,
        });
    }
    Ok(out)
}

impl Found {
    /// The lease's id: its key without `locks/`.
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

/// The ids of the leases of running commands live now (not the persistent ones of clones,
/// which read nothing); fails on an unreadable one, like `live`.
pub fn live_ids(repo: &Repository) -> Result<Vec<String>> {
    Ok(live(repo)?
        .into_iter()
        .filter(|r| !r.persistent)
        .map(|r| r.id)
        .collect())
}

/// The TTL written in a persistent lease: a century.
const PERSISTENT_TTL_S: u64 = 100 * 365 * 24 * 3600;

/// Takes a persistent lease for `command` (such as `clone NAME`) pinning `backups`, and
/// returns its id. Like [`Lease::pin`], waits for an expire running as it was written and
/// then returns true: the caller must check its backups still exist.
pub fn take_persistent(
    repo: &Repository,
    command: &str,
    backups: &[String],
) -> Result<(String, bool)> {
    let now = Utc::now();
    let record = LeaseRecord {
        id: random_id().to_hex()[..16].to_string(),
        command: command.into(),
        exclusive: false,
        host: Here::current().host,
        pid: 0,
        instance: String::new(),
        started: None,
        created: now,
        refreshed: now,
        ttl_s: PERSISTENT_TTL_S,
        pins: backups.to_vec(),
        persistent: true,
    };
    let key = keys::lock(&record.id);
    repo.backend()
        .put(&key, &seal(&record, &repo.sealer(), &key))?;
    let waited = wait_for_expire(repo, &key)?;
    Ok((record.id, waited))
}

/// Re-points persistent lease `id` at `backups` (after an expire removed the first choice).
pub fn repin_persistent(repo: &Repository, id: &str, backups: &[String]) -> Result<bool> {
    let key = keys::lock(id);
    let mut record: LeaseRecord = serde_json::from_slice(&repo.get_sealed(&key)?)
        .map_err(|e| StoreError::corrupt(&key, format!("not a lease record: {e}")))?;
    record.pins = backups.to_vec();
    repo.backend()
        .replace(&key, &seal(&record, &repo.sealer(), &key))?;
    wait_for_expire(repo, &key)
}

/// Releases persistent lease `id`; one already gone is fine.
pub fn release_persistent(repo: &Repository, id: &str) -> Result<()> {
    match repo.delete_lease(&keys::lock(id)) {
        Err(StoreError::Backend(e)) if e.is_not_found() => Ok(()),
        other => Ok(other?),
    }
}

/// Waits for the expires live now (other than lease `own`) to end; true if there was one.
fn wait_for_expire(repo: &Repository, own: &str) -> Result<bool> {
    let here = Here::current();
    let mut watch = Watch::default();
    let mut waited = false;
    loop {
        // An expire on another machine counts as gone once watched silent for its TTL.
        let expiring: Vec<Found> = list(repo)?
            .into_iter()
            .filter(|f| f.key != own && f.is_live_exclusive(Some("expire")))
            .filter(|f| {
                f.record.as_ref().map_or(true, |r| {
                    r.shares_clock(&here) || watch.look(&f.key, r, Instant::now()) != Heard::Silent
                })
            })
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

/// Why `locks --remove` without `--force` keeps a lease: its holder may be using the
/// repository. `None` if the lease may go.
pub fn keep_reason(found: &Found, here: &Here) -> Option<String> {
    let r = found.record.as_ref().ok()?;
    if found.stale {
        return None;
    }
    if r.persistent {
        return Some(format!(
            "it pins the backup of {} for as long as that exists: `pgsnapfs clone destroy` \
             releases it",
            r.command
        ));
    }
    Some(if r.is_local(here) {
        format!(
            "its holder, {} (pid {}), is still running on this host: stop it instead",
            r.command, r.pid
        )
    } else {
        format!(
            "its holder, {} on {}, refreshed it at {} by its own clock and its process cannot \
             be checked from here: make sure it is gone",
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
    last_ok: Instant,
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
    /// backup-keep holds one. Stale leases found on the way are removed. An exclusive lease
    /// held on another machine, or any lease there overdue by our clock, is watched for up
    /// to its TTL: taken over if its record does not change, and an exclusive one whose
    /// record changes makes the repository busy.
    pub fn exclusive(repo: &Repository, command: &str) -> Result<Lease> {
        let lease = Lease::take(repo, command, true)?;
        let here = Here::current();
        let mut watch = Watch::default();
        let mut told = false;
        // Written before listing: of two commands starting together, at least one sees the
        // other (both may, and both give up).
        loop {
            let mut waiting = None;
            for found in list(repo)? {
                if found.key == lease.key {
                    continue;
                }
                let foreign = found
                    .record
                    .as_ref()
                    .ok()
                    .filter(|r| !found.stale && !r.shares_clock(&here))
                    .filter(|r| r.exclusive || found.overdue);
                let heard = foreign.map(|r| watch.look(&found.key, r, Instant::now()));
                if found.stale || heard == Some(Heard::Silent) {
                    let what = found.record.as_ref().map(LeaseRecord::describe);
                    let what = what.unwrap_or(found.key.clone());
                    match heard {
                        Some(_) => tracing::warn!(
                            "taking over {what}: its record did not change for its TTL, so \
                             its holder is gone"
                        ),
                        None => tracing::info!("removing stale {what}"),
                    }
                    repo.delete_lease(&found.key)?;
                } else if heard == Some(Heard::Undecided) {
                    waiting = foreign.map(LeaseRecord::describe);
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
            let Some(what) = waiting else {
                return Ok(lease);
            };
            if !told {
                tracing::warn!(
                    "waiting for the heartbeat of {what}, held on another machine: taken over \
                     if it stays silent for its TTL"
                );
                told = true;
            }
            std::thread::sleep(POLL);
        }
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
            persistent: false,
        };
        let key = keys::lock(&record.id);
        let backend = repo.backend_arc();
        let sealer = repo.sealer();
        backend.put(&key, &seal(&record, &sealer, &key))?;
        let state = Arc::new((
            Mutex::new(State {
                record,
                last_ok: Instant::now(),
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

    /// The lease's id, as `pgsnapfs locks` shows it.
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
        wait_for_expire(repo, &self.key)
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
            Ok(true) => s.last_ok = Instant::now(),
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
            persistent: false,
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
        // Another PID namespace on this kernel (a container): its process cannot be
        // checked, but its clock is ours, so the TTL counts.
        let container = record("h", "boot/other-ns", now);
        assert!(!container.is_stale(now, &here, |_, _| false));
        let old = record("h2", "boot/other-ns", now - chrono::Duration::seconds(301));
        assert!(old.is_stale(now, &here, |_, _| true));
        // Another machine: its timestamp is by its clock, so one look never makes it stale,
        // whichever way that clock is off; it is only flagged overdue, to be watched.
        let behind = record("other", "b2/ns", now - chrono::Duration::days(365));
        assert!(!behind.is_stale(now, &here, |_, _| false));
        assert!(behind.is_overdue(now) && !behind.shares_clock(&here));
        let ahead = record("other", "b2/ns", now + chrono::Duration::days(365));
        assert!(!ahead.is_stale(now, &here, |_, _| false));
        assert!(!ahead.is_overdue(now));
        // A lease without an instance (an old version) shares no clock.
        assert!(!record("h", "", now).shares_clock(&here));
    }

    #[test]
    fn a_persistent_lease_pins_until_released_and_gc_does_not_wait_for_it() {
        let repo = repo();
        let (id, waited) = take_persistent(&repo, "clone dev", &["B1".into()]).unwrap();
        assert!(!waited);
        let found = list(&repo).unwrap();
        assert_eq!(found.len(), 1);
        assert!(!found[0].stale && !found[0].overdue);
        let pinned = live(&repo).unwrap();
        assert_eq!(
            (pinned[0].id.as_str(), pinned[0].pins.as_slice()),
            (id.as_str(), &["B1".to_string()][..])
        );
        assert!(live_ids(&repo).unwrap().is_empty(), "gc waits for no clone");
        let why = keep_reason(&found[0], &Here::current()).unwrap();
        assert!(
            why.contains("clone dev") && why.contains("clone destroy"),
            "{why}"
        );
        // Never stale, however old; and a build without the flag sees a lease of another
        // machine that is not overdue for a century.
        let mut old = pinned[0].clone();
        old.refreshed = Utc::now() - chrono::Duration::days(3650);
        assert!(!old.is_stale(Utc::now(), &Here::current(), |_, _| false));
        old.persistent = false;
        assert!(!old.is_stale(Utc::now(), &Here::current(), |_, _| false));
        assert!(!old.is_overdue(Utc::now()));
        assert!(repin_persistent(&repo, &id, &["B2".into()]).is_ok());
        assert_eq!(live(&repo).unwrap()[0].pins, ["B2"]);
        release_persistent(&repo, &id).unwrap();
        release_persistent(&repo, &id).unwrap();
        assert!(list(&repo).unwrap().is_empty());
    }

    #[test]
    fn watching_a_heartbeat_ignores_the_holders_clock() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let wall = Utc::now();
        for skew in [-chrono::Duration::days(365), chrono::Duration::days(365)] {
            // A live holder whose clock is a year off either way: it refreshes every 60 s
            // and is never silent, however long it is watched.
            let mut watch = Watch::default();
            let mut r = record("other", "b2/ns", wall + skew);
            assert_eq!(watch.look("k", &r, at(0)), Heard::Undecided);
            assert_eq!(watch.look("k", &r, at(59)), Heard::Undecided);
            for beat in 1..20 {
                r.refreshed += chrono::Duration::seconds(60);
                assert_eq!(watch.look("k", &r, at(beat * 60)), Heard::Beating);
                assert_eq!(watch.look("k", &r, at(beat * 60 + 59)), Heard::Beating);
            }
            // It stops: silent once unchanged for its TTL since the last change seen.
            assert_eq!(watch.look("k", &r, at(19 * 60 + 299)), Heard::Beating);
            assert_eq!(watch.look("k", &r, at(19 * 60 + 300)), Heard::Silent);
            // A holder that never beats while watched: silent after the TTL from the first
            // look, whatever its timestamp says.
            let mut watch = Watch::default();
            let dead = record("other", "b2/ns", wall + skew);
            assert_eq!(watch.look("d", &dead, at(1000)), Heard::Undecided);
            assert_eq!(watch.look("d", &dead, at(1299)), Heard::Undecided);
            assert_eq!(watch.look("d", &dead, at(1300)), Heard::Silent);
            // Each key is watched on its own.
            assert_eq!(watch.look("e", &dead, at(1300)), Heard::Undecided);
        }
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
        let deadline = Instant::now() + Duration::from_secs(10);
        while proc_stat(pid).unwrap().map(|s| s.0) != Some('Z') {
            assert!(Instant::now() < deadline, "child never died");
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
        let mut dead = record("elsewhere", "", now - chrono::Duration::seconds(3600));
        dead.ttl_s = 0;
        dead.exclusive = true;
        dead.command = "gc".into();
        repo.backend()
            .put(
                &keys::lock("a"),
                &seal(&dead, &repo.sealer(), &keys::lock("a")),
            )
            .unwrap();
        // On another machine: not stale at one look, only overdue; with a TTL of 0 the
        // watch finds it silent at once.
        let found = list(&repo).unwrap();
        assert!(!found[0].stale && found[0].overdue);
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
