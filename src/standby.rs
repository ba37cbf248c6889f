//! Backups that read a streaming standby's files while the primary starts and stops them
//! (`backup --from-standby`, as pgBackRest's `backup-standby`): docs/architecture.md,
//! "Backups from a standby".
//!
//! The primary runs pg_backup_start/stop and archives the WAL; the standby must be a standby
//! of that very primary, must have replayed past the start LSN and flushed what it replayed
//! (a restartpoint at the backup's start checkpoint) before a file is read, and must have
//! received the WAL up to the stop LSN before the segments are looked for in its pg_wal.

use crate::error::{Error, Result};
use crate::pg::lsn::Lsn;
use crate::server::{Server, ServerInfo};
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// How long the standby may take to replay to the start LSN or receive to the stop LSN.
pub const CATCH_UP_WAIT: Duration = Duration::from_secs(300);

/// Whether the server is in recovery: a standby, or a server being restored.
pub fn in_recovery(server: &Server) -> Result<bool> {
    server.query_bool("SELECT pg_is_in_recovery()")
}

/// Refuses a "standby" that is not a standby of `primary`'s cluster, of the same major, or
/// whose data directory is not `pgdata` (canonical). Each refusal is bad input: nothing was
/// started yet.
pub fn check(
    primary: &ServerInfo,
    standby: &Server,
    info: &ServerInfo,
    pgdata_canonical: &Path,
) -> Result<()> {
    if info.system_identifier != primary.system_identifier {
        return Err(Error::BadInput(format!(
            "the standby at {} is another cluster: its system identifier is {}, the primary's \
             {}; give --standby-host/--standby-port of a standby of this primary",
            standby.target(),
            info.system_identifier,
            primary.system_identifier
        )));
    }
    if !in_recovery(standby)? {
        return Err(Error::BadInput(format!(
            "the server at {} is not in recovery, so it is not a standby (promoted?); back up \
             from the primary, or name a standby",
            standby.target()
        )));
    }
    if info.major() != primary.major() {
        return Err(Error::BadInput(format!(
            "the standby at {} runs PostgreSQL {}, the primary {}",
            standby.target(),
            info.major(),
            primary.major()
        )));
    }
    let dir = std::fs::canonicalize(&info.data_directory)
        .map_err(crate::error::io(format!("resolve {}", info.data_directory)))?;
    if dir != pgdata_canonical {
        return Err(Error::BadInput(format!(
            "--standby-pgdata {} is not the data directory of the standby at {} (it uses {})",
            pgdata_canonical.display(),
            standby.target(),
            info.data_directory
        )));
    }
    Ok(())
}

/// Waits until the standby has replayed the backup's start checkpoint record (at
/// `checkpoint`, whose redo point is `start`), then has it write a restartpoint there: a page
/// the standby replayed but kept in its buffers must be on disk before the backup reads it,
/// since replay of the backup begins at `start`. Checks the restartpoint's redo is `start` or
/// later, on the primary's timeline `tli`, so the standby follows this primary.
pub fn ready_at(
    standby: &Server,
    start: Lsn,
    checkpoint: Lsn,
    tli: u32,
    wait: Duration,
) -> Result<()> {
    // A restartpoint can only be made at a checkpoint record replayed in full: past its start.
    let past = Lsn(checkpoint.0 + 1);
    wait_for(standby, "pg_last_wal_replay_lsn()", "replayed", past, wait)?;
    standby.execute("CHECKPOINT")?;
    let row = one(
        standby,
        "SELECT redo_lsn::text, timeline_id FROM pg_control_checkpoint()",
    )?;
    let (redo, restart_tli) = (lsn(&row[0])?, row[1].parse::<u32>().ok());
    if restart_tli != Some(tli) {
        return Err(Error::BadInput(format!(
            "the standby at {} is on timeline {}, the primary's backup on {tli}: it does not \
             follow this primary",
            standby.target(),
            row[1]
        )));
    }
    if redo < start {
        return Err(Error::BadAnswer(format!(
            "at {}: the standby's restartpoint is at {redo}, before the backup's start {start}; \
             run the backup again",
            standby.target()
        )));
    }
    Ok(())
}

/// Waits until the standby has received (and flushed) the WAL through `end`, so that the
/// segments up to it are whole in its pg_wal.
pub fn received(standby: &Server, end: Lsn, wait: Duration) -> Result<()> {
    wait_for(standby, "pg_last_wal_receive_lsn()", "received", end, wait)
}

fn wait_for(standby: &Server, func: &str, verb: &str, target: Lsn, wait: Duration) -> Result<()> {
    let began = Instant::now();
    loop {
        let row = one(standby, &format!("SELECT coalesce({func}::text, '')"))?;
        let at = if row[0].is_empty() {
            None
        } else {
            Some(lsn(&row[0])?)
        };
        if at.is_some_and(|at| at >= target) {
            return Ok(());
        }
        if began.elapsed() > wait {
            return Err(Error::BadAnswer(format!(
                "at {}: the standby has {verb} only up to {} after {} s, not {target}; is it \
                 streaming from this primary (pg_stat_wal_receiver)?",
                standby.target(),
                at.map_or("nothing".to_string(), |a| a.to_string()),
                wait.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn one(server: &Server, sql: &str) -> Result<Vec<String>> {
    server
        .query_rows(sql)?
        .pop()
        .ok_or_else(|| Error::BadAnswer(format!("returned no row for {sql:?}")))
}

fn lsn(s: &str) -> Result<Lsn> {
    Lsn::from_str(s).map_err(|_| Error::BadAnswer(format!("returned a bad LSN {s:?}")))
}

/// The end of the WAL segment holding `lsn`: the standby has a segment whole once it has
/// received that far (pg_backup_stop switches segments, so the stop segment is complete).
pub fn segment_end(lsn: Lsn, seg_size: u64) -> Lsn {
    Lsn((lsn.0 / seg_size + 1) * seg_size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_end_is_the_next_boundary() {
        let seg = 16 << 20;
        assert_eq!(segment_end(Lsn(0x300_0060), seg), Lsn(0x400_0000));
        assert_eq!(segment_end(Lsn(0x400_0000), seg), Lsn(0x500_0000));
    }
}
