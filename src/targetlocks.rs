//! The AccessExclusiveLocks a paused recovery still holds at its target, and how to release
//! them.
//!
//! A hot standby takes the AccessExclusiveLocks the primary logged (XLOG_STANDBY_LOCK) and
//! releases them at the transaction's commit or abort. A recovery that pauses at a target
//! inside a transaction that took one (a DROP TABLE, a TRUNCATE) keeps it until it is
//! promoted, and a query on the relation waits for ever. `mount` and `restore` leave such a
//! paused server, so they name the locks ([`held`]) and the ways out ([`describe`]).
//!
//! Decision: the scan is bounded, never all the WAL of a long range. Every standby snapshot
//! (at each checkpoint, and every 15 s of activity from the background writer) logs all the
//! AccessExclusiveLocks held, then an XLOG_RUNNING_XACTS record; a lock held at the target
//! was therefore logged after the last snapshot before it, or by that snapshot. So the scan
//! reads back from the end of the replay to the last segment before the target's that holds
//! an XLOG_RUNNING_XACTS record, and starts one segment earlier, where that snapshot's lock
//! record may lie; it goes no further back than the backup's first segment, whose checkpoint
//! logged a snapshot. The work is the WAL of one snapshot interval (15 s of writes at most,
//! or one checkpoint interval of a quiet cluster) plus a segment, whatever the range
//! replayed, and at most two segments are held in memory. A record that spans two segments is not read (the scanner reads whole
//! records of one segment); lock and transaction-end records are small.

use crate::archive;
use crate::error::{Error, Result};
use crate::pg::pgclass::{mapped_filenode, relname, PG_CLASS_OID};
use crate::pg::target::Target;
use crate::pg::wal::{segment_name, SegmentHeader};
use crate::pg::walscan::{
    has_standby_snapshot, unix_micros_to_pg_time, LockReplay, ReplayStop, StandbyLock,
};
use crate::pitr::Plan;
use crate::store::Repository;
use std::collections::HashMap;

/// Where the replay of `plan` stops; `None` when it replays all the archived WAL and ends
/// recovery, holding nothing.
pub fn replay_stop(plan: &Plan) -> Option<ReplayStop> {
    Some(match plan.target.as_ref()? {
        Target::Immediate => ReplayStop::Consistent(plan.snapshot.stop_lsn),
        Target::Lsn(l) => ReplayStop::Lsn(*l),
        Target::Time(t) => ReplayStop::Time(unix_micros_to_pg_time(t.timestamp_micros())),
        Target::Xid(x) => ReplayStop::Xid(*x),
        Target::Name(n) => ReplayStop::Name(n.clone()),
    })
}

/// The AccessExclusiveLocks the replay of `plan` holds where it stops, read from the archived
/// WAL before the target (see the module's decision).
pub fn held(repo: &Repository, plan: &Plan) -> Result<Vec<StandbyLock>> {
    let Some(stop) = replay_stop(plan) else {
        return Ok(Vec::new());
    };
    let seg_size = archive::segment_size(&plan.system);
    let sysid = plan.system.sysid();
    let read = |&(tli, segno): &(u32, u64)| -> Result<(Vec<u8>, SegmentHeader)> {
        let name = segment_name(tli, segno, seg_size);
        let data = archive::segment_data(repo, sysid, tli, &name, seg_size)?
            .ok_or_else(|| Error::NotFound(format!("WAL segment {name} is not in the archive")))?;
        let header = SegmentHeader::parse(&data)?;
        Ok((data, header))
    };
    let path = &plan.path;
    // The last two segments read back (the snapshot's and the one after it), kept for the
    // replay; memory stays at two segments however far back the snapshot lies.
    let mut read_back: Vec<(usize, Vec<u8>, SegmentHeader)> = Vec::new();
    let mut first = 0;
    for (i, seg) in path.iter().enumerate().rev().skip(1) {
        let (data, header) = read(seg)?;
        let snapshot = has_standby_snapshot(&data, &header)?;
        if read_back.len() == 2 {
            read_back.remove(0);
        }
        read_back.push((i, data, header));
        if snapshot {
            first = i.saturating_sub(1);
            break;
        }
    }
    let mut replay = LockReplay::new(stop);
    for (i, seg) in path.iter().enumerate().skip(first) {
        if replay.stopped() {
            break;
        }
        let (data, header) = match read_back.iter().position(|(at, ..)| *at == i) {
            Some(k) => {
                let (_, data, header) = read_back.swap_remove(k);
                (data, header)
            }
            None => read(seg)?,
        };
        replay.feed(&data, &header)?;
    }
    Ok(replay.held().to_vec())
}

/// The names the backup's `pg_class` gives the locked relations, one per lock; `None` where
/// it has none (a relation created after the backup, a shared relation) or cannot be read.
pub fn names(repo: &Repository, plan: &Plan, locks: &[StandbyLock]) -> Vec<Option<String>> {
    let mut classes: HashMap<u32, Option<Vec<u8>>> = HashMap::new();
    locks
        .iter()
        .map(|l| {
            let heap = classes
                .entry(l.db_oid)
                .or_insert_with(|| pg_class(repo, plan, l.db_oid));
            relname(heap.as_deref()?, l.rel_oid)
        })
        .collect()
}

/// The first segment of database `db`'s pg_class in the backup.
fn pg_class(repo: &Repository, plan: &Plan, db: u32) -> Option<Vec<u8>> {
    if db == 0 {
        return None;
    }
    let root = &plan.snapshot.root;
    let read = |path: String| {
        crate::view::read_file(repo, root, &path)
            .inspect_err(|e| tracing::info!("cannot read {path} of the backup: {e}"))
            .ok()
            .flatten()
    };
    let map = read(format!("base/{db}/pg_filenode.map"))?;
    read(format!(
        "base/{db}/{}",
        mapped_filenode(&map, PG_CLASS_OID)?
    ))
}

/// What to tell whoever starts a server that pauses holding `locks`, named as `names` says
/// (one per lock, see [`names`]), in one paragraph; `None` if it holds none.
pub fn describe(locks: &[StandbyLock], names: &[Option<String>], mount: bool) -> Option<String> {
    let first = locks.first()?;
    let list = locks
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let name = match names.get(i) {
                Some(Some(n)) => format!("{n:?} (in the backup), "),
                _ => String::new(),
            };
            format!(
                "relation {name}oid {} in database oid {} (transaction {})",
                l.rel_oid, l.db_oid, l.xid
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    // The earliest lock record: a point before it is before every lock listed.
    let earliest = locks.iter().min_by_key(|l| l.lsn).unwrap_or(first);
    let before = if earliest.from_snapshot {
        format!(
            "a point before the transaction took it, earlier than WAL position {} (the lock \
             was logged there by a standby snapshot, after it was taken)",
            earliest.lsn
        )
    } else {
        format!(
            "--target-lsn {} (just before its lock record at {})",
            earliest.prev, earliest.lsn
        )
    };
    let rel = first.rel_oid;
    Some(format!(
        "warning: at the target, recovery still holds the AccessExclusiveLocks (logged by \
         XLOG_STANDBY_LOCK records) of transactions open there: {list}. A query on such a \
         relation waits until they are released. To release them, end recovery at the \
         target (SELECT pg_wal_replay_resume(), which rolls those transactions back and \
         promotes the server, on every supported version), or \
         {verb} {before}. To name a relation, connect to its database (SELECT datname FROM \
         pg_database WHERE oid = {db}) and run SELECT {rel}::regclass (it takes no lock on \
         the relation)",
        verb = if mount { "mount" } else { "restore" },
        db = first.db_oid,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::lsn::Lsn;

    fn lock(xid: u32, rel_oid: u32, lsn: u64, from_snapshot: bool) -> StandbyLock {
        StandbyLock {
            xid,
            db_oid: 5,
            rel_oid,
            lsn: Lsn(lsn),
            prev: Lsn(lsn - 0x40),
            from_snapshot,
        }
    }

    #[test]
    fn nothing_held_says_nothing() {
        assert_eq!(describe(&[], &[], true), None);
    }

    #[test]
    fn names_every_lock_and_the_point_before_the_earliest() {
        let text = describe(
            &[
                lock(800, 16_390, 0x0300_0100, false),
                lock(750, 16_384, 0x0300_0080, false),
            ],
            &[None, Some("t".into())],
            true,
        )
        .unwrap();
        assert!(text.contains("relation oid 16390 in database oid 5 (transaction 800)"));
        assert!(
            text.contains(
                "relation \"t\" (in the backup), oid 16384 in database oid 5 (transaction 750)"
            ),
            "{text}"
        );
        assert!(text.contains("SELECT pg_wal_replay_resume()"));
        assert!(text.contains("mount --target-lsn 0/3000040"), "{text}");
        assert!(text.contains("SELECT 16390::regclass"));
        let text = describe(&[lock(600, 1, 0x0300_0100, true)], &[], false).unwrap();
        assert!(
            text.contains("restore a point before the transaction took it"),
            "{text}"
        );
        assert!(
            text.contains("earlier than WAL position 0/3000100"),
            "{text}"
        );
    }
}
