//! `metrics --listen`: a minimal HTTP/1.1 server of one page, for a Prometheus scrape. One
//! request at a time, each answered with freshly gathered metrics and the connection closed:
//! a scrape every 15 s or more needs no more. SIGINT or SIGTERM stop it between requests.

use super::exposition::CONTENT_TYPE;
use crate::error::{io, Result};
use crate::session::lifecycle::Signals;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The longest request head read (a scrape sends a few hundred bytes).
const MAX_HEAD: usize = 16 * 1024;
/// How long a client may take to send its request or read the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// An answer: status line, content type, body.
#[derive(Debug, PartialEq)]
pub struct Answer {
    /// Status code and reason, e.g. `200 OK`.
    pub status: &'static str,
    /// The body's content type.
    pub content_type: &'static str,
    /// The body.
    pub body: String,
    /// Whether to send the body (not for HEAD).
    pub with_body: bool,
}

/// The answer to a request line (`GET /metrics HTTP/1.1`): the page at `/metrics` (and `/`),
/// from `page`, or its error as a 500, which Prometheus records as a failed scrape.
pub fn answer(request_line: &str, page: &dyn Fn() -> Result<String>) -> Answer {
    let text = |status, body: String| Answer {
        status,
        content_type: "text/plain; charset=utf-8",
        body,
        with_body: true,
    };
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    if method != "GET" && method != "HEAD" {
        return text("405 Method Not Allowed", "only GET and HEAD\n".into());
    }
    if path != "/metrics" && path != "/" {
        return text("404 Not Found", "the metrics are at /metrics\n".into());
    }
    match page() {
        Ok(body) => Answer {
            status: "200 OK",
            content_type: CONTENT_TYPE,
            body,
            with_body: method == "GET",
        },
        Err(e) => text(
            "500 Internal Server Error",
            format!("pgsnapfs metrics: {e}\n"),
        ),
    }
}

/// Serves `page` on `addr` until SIGINT or SIGTERM (blocked by the caller, before any
/// thread started); `bound` hears the address actually bound (for port 0).
pub fn serve(
    addr: &str,
    signals: Signals,
    bound: &dyn Fn(SocketAddr),
    page: &dyn Fn() -> Result<String>,
) -> Result<()> {
    let listener = TcpListener::bind(addr).map_err(io(format!("listen on {addr}")))?;
    let local = listener
        .local_addr()
        .map_err(io(format!("listen on {addr}")))?;
    let stop = Arc::new(AtomicBool::new(false));
    let stopper = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let sig = signals.wait();
            tracing::info!("signal {sig}: stopping");
            stop.store(true, Ordering::SeqCst);
            // Wakes the accept below; it then sees `stop`.
            let _ = TcpStream::connect_timeout(&local, Duration::from_secs(5));
        })
    };
    bound(local);
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        match stream {
            Ok(s) => {
                if let Err(e) = handle(s, page) {
                    tracing::warn!("metrics request: {e}");
                }
            }
            Err(e) => tracing::warn!("accepting a connection on {local}: {e}"),
        }
    }
    let _ = stopper.join();
    Ok(())
}

fn handle(stream: TcpStream, page: &dyn Fn() -> Result<String>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let mut reader = BufReader::new(&stream);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // The rest of the head, up to the empty line: nothing in it changes the answer.
    let mut read = request_line.len();
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line)?;
        read += n;
        if n == 0 || line == "\r\n" || line == "\n" || read > MAX_HEAD {
            break;
        }
    }
    let a = answer(&request_line, page);
    let mut out = &stream;
    write!(
        out,
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        a.status,
        a.content_type,
        a.body.len()
    )?;
    if a.with_body {
        out.write_all(a.body.as_bytes())?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    fn page() -> Result<String> {
        Ok("pgsnapfs_x 1\n".into())
    }

    #[test]
    fn answers() {
        let a = answer("GET /metrics HTTP/1.1\r\n", &page);
        assert_eq!((a.status, a.body.as_str()), ("200 OK", "pgsnapfs_x 1\n"));
        assert_eq!(a.content_type, CONTENT_TYPE);
        assert_eq!(answer("GET /?x=1 HTTP/1.0", &page).status, "200 OK");
        assert!(!answer("HEAD /metrics HTTP/1.1", &page).with_body);
        assert_eq!(answer("GET /x HTTP/1.1", &page).status, "404 Not Found");
        assert_eq!(
            answer("POST /metrics HTTP/1.1", &page).status,
            "405 Method Not Allowed"
        );
        assert_eq!(answer("", &page).status, "405 Method Not Allowed");
        let failing = || -> Result<String> { Err(Error::NotFound("no repository".into())) };
        let a = answer("GET /metrics HTTP/1.1", &failing);
        assert_eq!(a.status, "500 Internal Server Error");
        assert!(a.body.contains("no repository"), "{}", a.body);
    }
}
