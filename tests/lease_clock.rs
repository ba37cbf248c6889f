//! Leases held on another machine are judged by their heartbeat, not by that machine's clock
//! (src/lock.rs, `Watch`). The test poses as a holder on another machine by writing its lease
//! record (another host and boot id) into the repository, with a 3 s TTL.

// This file uses only part of the harness's re-exports.
#[allow(unused_imports)]
mod common;

use chrono::{DateTime, TimeZone, Utc};
use common::*;
use pgsnapfs::lock::LeaseRecord;
use pgsnapfs::store::{keys, open_backend, Backend, Repository};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A lease holder on another machine, whose clock is wherever `refreshed` says.
struct Remote {
    repo: Repository,
    backend: Arc<dyn Backend>,
}

impl Remote {
    fn new(repo: &Repo) -> Remote {
        let backend = open_backend(&repo.spec).expect("open the repository");
        Remote {
            repo: Repository::open(backend.clone()).expect("open the repository"),
            backend,
        }
    }

    fn record(id: &str, refreshed: DateTime<Utc>) -> LeaseRecord {
        LeaseRecord {
            id: id.into(),
            command: "gc".into(),
            exclusive: true,
            host: "db2-elsewhere".into(),
            pid: 4242,
            instance: "another-boot-id/pid:[4026531836]".into(),
            started: Some(1),
            created: refreshed,
            refreshed,
            ttl_s: 3,
            pins: vec![],
            persistent: false,
        }
    }

    fn write(&self, r: &LeaseRecord) {
        let key = keys::lock(&r.id);
        let payload = serde_json::to_vec(r).expect("lease serializes");
        self.backend
            .replace(&key, &self.repo.sealer().seal(&key, &payload))
            .expect("write the remote lease");
    }

    fn exists(&self, id: &str) -> bool {
        self.backend
            .exists(&keys::lock(id))
            .expect("look for the lease")
    }
}

fn remote_leases_by_heartbeat(store: Store) {
    let repo = Repo::init_on(store);
    let remote = Arc::new(Remote::new(&repo));

    // A live holder whose clock is 25 years behind: it refreshes every 200 ms.
    let behind = Utc.with_ymd_and_hms(2001, 1, 1, 0, 0, 0).unwrap();
    let mut live = Remote::record("00000000behind00", behind);
    remote.write(&live);
    let stop = Arc::new(AtomicBool::new(false));
    let beating = {
        let (remote, stop, mut live) = (remote.clone(), stop.clone(), live.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(200));
                live.refreshed += chrono::Duration::seconds(1);
                remote.write(&live);
            }
            live
        })
    };

    let locks = repo.run("locks", &["--json"]).assert_ok().json();
    let row = &locks.as_array().expect("a list")[0];
    assert_eq!(row["id"], "00000000behind00", "{locks:#}");
    assert_eq!(row["stale"], false, "{locks:#}");
    assert_eq!(row["overdue"], true, "{locks:#}");

    // gc sees the record change: the repository is busy, and the lease stays.
    let run = repo.run("gc", &[]).assert_exit(1);
    let err = run.stderr_str();
    assert!(
        err.contains("busy") && err.contains("00000000behind00"),
        "{}",
        run.report()
    );
    assert!(remote.exists("00000000behind00"));

    // The holder stops; another, whose clock is a year ahead, never beat at all.
    stop.store(true, Ordering::SeqCst);
    live = beating.join().expect("the heartbeat thread");
    assert!(live.refreshed > behind);
    let ahead = Remote::record("000000000ahead00", Utc::now() + chrono::Duration::days(365));
    remote.write(&ahead);

    // gc waits for both to stay silent for their TTL, then takes them over.
    let started = Instant::now();
    let run = repo.run("gc", &[]).assert_ok();
    let err = run.stderr_str();
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "{}",
        run.report()
    );
    for id in ["00000000behind00", "000000000ahead00"] {
        assert!(
            err.contains(&format!("taking over exclusive lease {id}")),
            "{}",
            run.report()
        );
        assert!(!remote.exists(id), "{id} is still there");
    }
    assert!(
        err.contains("waiting for the heartbeat"),
        "{}",
        run.report()
    );
    let locks = repo.run("locks", &["--json"]).assert_ok().json();
    assert_eq!(locks, serde_json::json!([]));
}

on_both_stores!(remote_leases_by_heartbeat);
