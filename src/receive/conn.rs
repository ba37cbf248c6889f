//! A replication connection: just enough of the PostgreSQL wire protocol for
//! `IDENTIFY_SYSTEM`, slot creation, `TIMELINE_HISTORY` and physical `START_REPLICATION`
//! (tokio-postgres has no CopyBoth). Authentication: trust, password, md5 and SCRAM-SHA-256;
//! no TLS, as the rest of pgsnapfs.

use crate::error::{Error, Result};
use postgres_protocol::authentication::{md5_hash, sasl};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};
use tokio_postgres::config::Host;
use tokio_postgres::Config;

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;

enum Sock {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Sock {
    fn set_read_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        match self {
            Sock::Unix(s) => s.set_read_timeout(t),
            Sock::Tcp(s) => s.set_read_timeout(t),
        }
    }
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Sock::Unix(s) => s.read(buf),
            Sock::Tcp(s) => s.read(buf),
        }
    }
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            Sock::Unix(s) => s.write_all(buf),
            Sock::Tcp(s) => s.write_all(buf),
        }
    }
}

/// One backend message: its type byte and body.
#[derive(Debug)]
pub struct Msg {
    /// The message type ('d' CopyData, 'E' error, ...).
    pub tag: u8,
    /// The body, without type and length.
    pub body: Vec<u8>,
}

/// What the server sends inside the replication stream.
#[derive(Debug, PartialEq, Eq)]
pub enum StreamMsg {
    /// WAL bytes starting at `start`.
    Data {
        /// The position of the first byte.
        start: u64,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// A keepalive; `reply` asks for a status update at once.
    Keepalive {
        /// Whether the server asks for an immediate reply.
        reply: bool,
    },
    /// The server ended the stream: the timeline ended (a switch follows) or it shuts down.
    End,
    /// The server ended the stream with an error.
    Failed(QueryError),
}

/// An open replication connection.
pub struct ReplConn {
    sock: Sock,
    buf: Vec<u8>,
    /// "host port as user", for messages.
    pub target: String,
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// The fields of an ErrorResponse: (SQLSTATE, "SEVERITY: message").
fn error_fields(body: &[u8]) -> (String, String) {
    let (mut code, mut sev, mut msg) = (String::new(), String::new(), String::new());
    for field in body.split(|&b| b == 0) {
        if let Some((&t, v)) = field.split_first() {
            let v = String::from_utf8_lossy(v).into_owned();
            match t {
                b'C' => code = v,
                b'S' => sev = v,
                b'M' => msg = v,
                _ => {}
            }
        }
    }
    (code, format!("{sev}: {msg}"))
}

fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(tag);
    out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// A server error answer to a query: its SQLSTATE and message.
#[derive(Debug, PartialEq, Eq)]
pub struct QueryError {
    /// The SQLSTATE.
    pub code: String,
    /// "SEVERITY: message".
    pub message: String,
}

impl ReplConn {
    /// Connects in physical replication mode to the first host of `cfg` that answers.
    pub fn connect(cfg: &Config, application_name: &str) -> Result<ReplConn> {
        let user = cfg.get_user().unwrap_or("postgres").to_string();
        let ports = cfg.get_ports();
        let mut last = String::from("no host given");
        for (i, host) in cfg.get_hosts().iter().enumerate() {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            let (sock, target) = match host {
                Host::Unix(dir) => {
                    let path = dir.join(format!(".s.PGSQL.{port}"));
                    let t = format!("{} as {user}", path.display());
                    (UnixStream::connect(&path).map(Sock::Unix), t)
                }
                Host::Tcp(name) => {
                    let t = format!("{name}:{port} as {user}");
                    (TcpStream::connect((name.as_str(), port)).map(Sock::Tcp), t)
                }
            };
            match sock {
                Ok(sock) => {
                    let mut c = ReplConn {
                        sock,
                        buf: Vec::new(),
                        target: target.clone(),
                    };
                    c.startup(cfg, &user, application_name)
                        .map_err(|reason| Error::Connect { target, reason })?;
                    return Ok(c);
                }
                Err(e) => last = format!("{target}: {e}"),
            }
        }
        Err(Error::Connect {
            target: format!("{:?} port {:?}", cfg.get_hosts(), ports),
            reason: format!(
                "{last}; is the server running? (set --dbname, -h/-p/-U or PGHOST/PGPORT/PGUSER)"
            ),
        })
    }

    fn send(&mut self, bytes: &[u8]) -> std::result::Result<(), String> {
        self.sock.write_all(bytes).map_err(|e| e.to_string())
    }

    fn startup(&mut self, cfg: &Config, user: &str, app: &str) -> std::result::Result<(), String> {
        let mut body = 196608u32.to_be_bytes().to_vec();
        for (k, v) in [
            ("user", user),
            ("replication", "true"),
            ("application_name", app),
        ] {
            body.extend_from_slice(k.as_bytes());
            body.push(0);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut msg = (body.len() as u32 + 4).to_be_bytes().to_vec();
        msg.extend_from_slice(&body);
        self.send(&msg)?;
        let password = cfg.get_password();
        let need_pw = || {
            password.ok_or_else(|| {
                "the server asks for a password: give it with PGPASSWORD or ~/.pgpass (PGPASSFILE)"
                    .to_string()
            })
        };
        let mut scram: Option<sasl::ScramSha256> = None;
        loop {
            let m = self.recv_blocking().map_err(|e| e.to_string())?;
            match m.tag {
                b'R' if m.body.len() < 4 || (be_u32(&m.body) == 5 && m.body.len() < 8) => {
                    return Err("malformed authentication request".into())
                }
                b'R' => match be_u32(&m.body) {
                    0 => {}
                    3 => {
                        let mut pw = need_pw()?.to_vec();
                        pw.push(0);
                        self.send(&frame(b'p', &pw))?;
                    }
                    5 => {
                        let salt = [m.body[4], m.body[5], m.body[6], m.body[7]];
                        let mut h = md5_hash(user.as_bytes(), need_pw()?, salt).into_bytes();
                        h.push(0);
                        self.send(&frame(b'p', &h))?;
                    }
                    10 => {
                        let s =
                            sasl::ScramSha256::new(need_pw()?, sasl::ChannelBinding::unsupported());
                        let mut b = b"SCRAM-SHA-256\0".to_vec();
                        b.extend_from_slice(&(s.message().len() as u32).to_be_bytes());
                        b.extend_from_slice(s.message());
                        self.send(&frame(b'p', &b))?;
                        scram = Some(s);
                    }
                    11 => {
                        let s = scram.as_mut().ok_or("unexpected SASL continue")?;
                        s.update(&m.body[4..]).map_err(|e| e.to_string())?;
                        let reply = s.message().to_vec();
                        self.send(&frame(b'p', &reply))?;
                    }
                    12 => {
                        let mut s = scram.take().ok_or("unexpected SASL final")?;
                        s.finish(&m.body[4..]).map_err(|e| e.to_string())?;
                    }
                    n => return Err(format!("unsupported authentication method {n}")),
                },
                b'E' => return Err(error_fields(&m.body).1),
                b'Z' => return Ok(()),
                _ => {}
            }
        }
    }

    /// The next message, waiting at most `timeout`; `None` when none arrived in time.
    pub fn recv(&mut self, timeout: Duration) -> Result<Option<Msg>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(m) = self.take_buffered() {
                return Ok(Some(m));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.sock
                .set_read_timeout(Some(left))
                .map_err(crate::error::io("set socket timeout"))?;
            let mut tmp = [0u8; 64 * 1024];
            match self.sock.read(&mut tmp) {
                Ok(0) => {
                    return Err(Error::BadAnswer(format!(
                        "{} closed the connection",
                        self.target
                    )))
                }
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                // A stop signal: the caller looks at its flag.
                Err(e) if e.kind() == ErrorKind::Interrupted => return Ok(None),
                Err(e) => {
                    return Err(crate::error::io(format!("read from {}", self.target))(e));
                }
            }
        }
    }

    fn recv_blocking(&mut self) -> Result<Msg> {
        loop {
            if let Some(m) = self.recv(Duration::from_secs(3600))? {
                return Ok(m);
            }
        }
    }

    /// Whether a whole message is already buffered (more of the stream is waiting).
    pub fn has_buffered(&self) -> bool {
        self.buf.len() >= 5 && self.buf.len() > be_u32(&self.buf[1..5]) as usize
    }

    fn take_buffered(&mut self) -> Option<Msg> {
        if !self.has_buffered() {
            return None;
        }
        let len = be_u32(&self.buf[1..5]) as usize;
        let tag = self.buf[0];
        let body = self.buf[5..1 + len].to_vec();
        self.buf.drain(..1 + len);
        Some(Msg { tag, body })
    }

    /// Runs a replication command; its rows as text (NULL as None), or the server's error.
    pub fn query(
        &mut self,
        sql: &str,
    ) -> Result<std::result::Result<Vec<Vec<Option<String>>>, QueryError>> {
        let mut q = sql.as_bytes().to_vec();
        q.push(0);
        self.send(&frame(b'Q', &q))
            .map_err(|e| Error::BadAnswer(format!("{}: {e}", self.target)))?;
        self.collect_rows()
    }

    /// Reads a command's answer up to ReadyForQuery.
    fn collect_rows(
        &mut self,
    ) -> Result<std::result::Result<Vec<Vec<Option<String>>>, QueryError>> {
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let m = self.recv_blocking()?;
            match m.tag {
                b'D' => rows.push(data_row(&m.body)),
                b'E' => {
                    let (code, message) = error_fields(&m.body);
                    error = Some(QueryError { code, message });
                }
                b'Z' => return Ok(error.map_or(Ok(rows), Err)),
                _ => {}
            }
        }
    }

    /// Sends START_REPLICATION and waits for the stream to begin.
    pub fn start_replication(&mut self, sql: &str) -> Result<std::result::Result<(), QueryError>> {
        let mut q = sql.as_bytes().to_vec();
        q.push(0);
        self.send(&frame(b'Q', &q))
            .map_err(|e| Error::BadAnswer(format!("{}: {e}", self.target)))?;
        loop {
            let m = self.recv_blocking()?;
            match m.tag {
                b'W' => return Ok(Ok(())),
                b'E' => {
                    let (code, message) = error_fields(&m.body);
                    // ReadyForQuery follows the error.
                    while self.recv_blocking()?.tag != b'Z' {}
                    return Ok(Err(QueryError { code, message }));
                }
                _ => {}
            }
        }
    }

    /// The next message of the stream, waiting at most `timeout`.
    pub fn next_stream(&mut self, timeout: Duration) -> Result<Option<StreamMsg>> {
        let Some(m) = self.recv(timeout)? else {
            return Ok(None);
        };
        let bad = |what: &str| Error::BadAnswer(format!("sent a malformed {what}"));
        match m.tag {
            b'd' => match m.body.first() {
                Some(b'w') if m.body.len() >= 25 => Ok(Some(StreamMsg::Data {
                    start: be_u64(&m.body[1..]),
                    bytes: m.body[25..].to_vec(),
                })),
                Some(b'k') if m.body.len() >= 18 => Ok(Some(StreamMsg::Keepalive {
                    reply: m.body[17] != 0,
                })),
                _ => Err(bad("replication message")),
            },
            b'c' => Ok(Some(StreamMsg::End)),
            b'E' => {
                let (code, message) = error_fields(&m.body);
                Ok(Some(StreamMsg::Failed(QueryError { code, message })))
            }
            _ => Ok(Some(StreamMsg::Keepalive { reply: false })),
        }
    }

    /// After the server's CopyDone: answers it and reads the end-of-timeline result, the next
    /// timeline and where it starts (None when the server simply stopped).
    pub fn end_stream(&mut self) -> Result<Option<(u32, u64)>> {
        self.send(&frame(b'c', &[]))
            .map_err(|e| Error::BadAnswer(format!("{}: {e}", self.target)))?;
        let rows = self.collect_rows()?.map_err(|e| {
            Error::BadAnswer(format!("{} ended replication: {}", self.target, e.message))
        })?;
        Ok(rows.first().and_then(|r| {
            let tli = r.first()?.as_ref()?.parse().ok()?;
            let pos: crate::pg::lsn::Lsn = r.get(1)?.as_ref()?.parse().ok()?;
            Some((tli, pos.0))
        }))
    }

    /// Reports how far WAL is received (`write`) and durably stored (`flush`).
    pub fn status(&mut self, write: u64, flush: u64) -> Result<()> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64)
            - PG_EPOCH_OFFSET_US;
        let mut b = vec![b'r'];
        b.extend_from_slice(&write.to_be_bytes());
        b.extend_from_slice(&flush.to_be_bytes());
        b.extend_from_slice(&0u64.to_be_bytes());
        b.extend_from_slice(&now.to_be_bytes());
        b.push(0);
        self.send(&frame(b'd', &b))
            .map_err(|e| Error::BadAnswer(format!("{}: {e}", self.target)))
    }
}

fn data_row(body: &[u8]) -> Vec<Option<String>> {
    let mut out = Vec::new();
    if body.len() < 2 {
        return out;
    }
    let n = u16::from_be_bytes([body[0], body[1]]) as usize;
    let mut at = 2;
    for _ in 0..n {
        if at + 4 > body.len() {
            break;
        }
        let len = be_u32(&body[at..]) as i32;
        at += 4;
        if len < 0 {
            out.push(None);
        } else {
            let end = (at + len as usize).min(body.len());
            out.push(Some(String::from_utf8_lossy(&body[at..end]).into_owned()));
            at = end;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rows_and_errors() {
        let mut row = 2u16.to_be_bytes().to_vec();
        row.extend_from_slice(&2u32.to_be_bytes());
        row.extend_from_slice(b"16");
        row.extend_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(data_row(&row), vec![Some("16".into()), None]);
        let (code, msg) = error_fields(b"SERROR\0C42710\0Mslot exists\0\0");
        assert_eq!(
            (code.as_str(), msg.as_str()),
            ("42710", "ERROR: slot exists")
        );
    }
}
