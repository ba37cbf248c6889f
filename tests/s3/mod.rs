//! Test fixtures for the S3 back end: a moto server, an admin S3 client that talks to it
//! directly, and a fault-injecting HTTP proxy to put in between.
//!
//! Nothing skips: a missing `moto_server` panics with a message saying how to install it.

#![allow(dead_code)]

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

pub use crate::common::moto::{aws_env, Moto, ACCESS_KEY, SECRET_KEY};

/// A plain S3 client straight to a server, for what the back end does not do.
pub struct Admin {
    rt: tokio::runtime::Runtime,
    client: aws_sdk_s3::Client,
}

impl Admin {
    pub fn new(endpoint: &str) -> Admin {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(endpoint)
            .force_path_style(true)
            .credentials_provider(Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test"))
            .http_client(http)
            .build();
        Admin {
            rt,
            client: aws_sdk_s3::Client::from_conf(conf),
        }
    }

    pub fn create_bucket(&self, bucket: &str) {
        self.rt
            .block_on(self.client.create_bucket().bucket(bucket).send())
            .unwrap_or_else(|e| panic!("create bucket {bucket}: {e:?}"));
    }

    /// Keys of the multipart uploads in progress in `bucket`.
    pub fn multipart_uploads(&self, bucket: &str) -> Vec<String> {
        let out = self
            .rt
            .block_on(self.client.list_multipart_uploads().bucket(bucket).send())
            .unwrap_or_else(|e| panic!("list multipart uploads: {e:?}"));
        out.uploads()
            .iter()
            .map(|u| u.key().unwrap_or("?").to_string())
            .collect()
    }

    /// Every key in `bucket`, sorted.
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut token = None;
        loop {
            let out = self
                .rt
                .block_on(
                    self.client
                        .list_objects_v2()
                        .bucket(bucket)
                        .set_continuation_token(token)
                        .send(),
                )
                .unwrap_or_else(|e| panic!("list {bucket}: {e:?}"));
            keys.extend(
                out.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string)),
            );
            token = out.next_continuation_token;
            if token.is_none() {
                return keys;
            }
        }
    }
}

/// What the proxy does with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Forward,
    /// Answers 503 SlowDown itself.
    Fail503,
    /// Resets the connection (RST) instead of answering.
    Reset,
    /// Forwards (so the server acts on it), then resets instead of answering.
    ForwardThenReset,
    /// Forwards, then sends only half of the answer and resets.
    Truncate,
}

/// One request as the proxy saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub index: usize,
    pub method: String,
    /// Path and query.
    pub target: String,
    pub action: Action,
}

impl Seen {
    /// The value of query parameter `name`.
    pub fn query(&self, name: &str) -> Option<&str> {
        let q = self.target.split_once('?')?.1;
        q.split('&').find_map(|p| match p.split_once('=') {
            Some((k, v)) if k == name => Some(v),
            None if p == name => Some(""),
            _ => None,
        })
    }

    pub fn part_number(&self) -> Option<u32> {
        self.query("partNumber")?.parse().ok()
    }
}

type Rule = Box<dyn FnMut(&Seen) -> Action + Send>;

struct Shared {
    rule: Mutex<Rule>,
    seen: Mutex<Vec<Seen>>,
    next: AtomicUsize,
    upstream: SocketAddr,
}

/// An HTTP/1.1 proxy on 127.0.0.1 that applies a rule to each request. One request per
/// connection (it answers `Connection: close`), which keeps framing trivial.
pub struct FaultProxy {
    pub port: u16,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FaultProxy {
    pub fn start(upstream_port: u16) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let shared = Arc::new(Shared {
            rule: Mutex::new(Box::new(|_| Action::Forward)),
            seen: Mutex::new(Vec::new()),
            next: AtomicUsize::new(0),
            upstream: SocketAddr::from(([127, 0, 0, 1], upstream_port)),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (shared.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(conn) = conn {
                    let s = s.clone();
                    std::thread::spawn(move || {
                        let _ = handle(conn, &s);
                    });
                }
            }
        });
        FaultProxy {
            port,
            shared,
            stop,
            thread: Some(thread),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn set_rule(&self, rule: impl FnMut(&Seen) -> Action + Send + 'static) {
        *self.shared.rule.lock().unwrap() = Box::new(rule);
    }

    /// Every request so far, in arrival order.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    pub fn clear_seen(&self) {
        self.shared.seen.lock().unwrap().clear();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A rule that applies `action` once to each distinct request for which `pick` is true.
pub fn once_each(
    pick: impl Fn(&Seen) -> bool + Send + 'static,
    action: Action,
) -> impl FnMut(&Seen) -> Action + Send + 'static {
    let mut done = HashSet::new();
    move |s| {
        if pick(s) && done.insert((s.method.clone(), s.target.clone())) {
            action
        } else {
            Action::Forward
        }
    }
}

/// Closes with RST rather than FIN, as a crashed peer or middlebox would.
fn reset(stream: TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a correctly sized option value.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(stream);
}

fn read_line(r: &mut impl BufRead, out: &mut Vec<u8>) -> std::io::Result<usize> {
    let n = r.read_until(b'\n', out)?;
    if n == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(n)
}

/// Reads a header block; returns its lines without the final empty one.
fn read_head(r: &mut impl BufRead) -> std::io::Result<Vec<String>> {
    let mut lines = Vec::new();
    loop {
        let mut line = Vec::new();
        read_line(r, &mut line)?;
        let line = String::from_utf8_lossy(&line).trim_end().to_string();
        if line.is_empty() {
            return Ok(lines);
        }
        lines.push(line);
    }
}

fn header<'a>(lines: &'a [String], name: &str) -> Option<&'a str> {
    lines[1..].iter().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The head with `Connection: close` instead of any connection-management headers.
fn rewrite_head(lines: &[String]) -> Vec<u8> {
    let mut out = String::new();
    for (i, l) in lines.iter().enumerate() {
        let name = l
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if i > 0 && matches!(name.as_str(), "connection" | "keep-alive" | "expect") {
            continue;
        }
        out.push_str(l);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    out.into_bytes()
}

fn read_body(r: &mut impl BufRead, head: &[String]) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    if header(head, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        // Kept raw (it is forwarded as is), so only the framing is parsed.
        loop {
            let start = body.len();
            read_line(r, &mut body)?;
            let size_line = String::from_utf8_lossy(&body[start..]).to_string();
            let size =
                usize::from_str_radix(size_line.trim().split(';').next().unwrap_or("").trim(), 16)
                    .map_err(|_| std::io::Error::other("bad chunk size"))?;
            if size == 0 {
                // Trailers, then an empty line.
                loop {
                    let at = body.len();
                    read_line(r, &mut body)?;
                    if body[at..].trim_ascii().is_empty() {
                        return Ok(body);
                    }
                }
            }
            let at = body.len();
            body.resize(at + size + 2, 0);
            r.read_exact(&mut body[at..])?;
        }
    }
    let len: usize = header(head, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    body.resize(len, 0);
    r.read_exact(&mut body)?;
    Ok(body)
}

fn handle(client: TcpStream, shared: &Shared) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let mut writer = client.try_clone()?;
    let head = match read_head(&mut reader) {
        Ok(h) if !h.is_empty() => h,
        // An idle connection closed by the client, or the shutdown poke.
        _ => return Ok(()),
    };
    if header(&head, "expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let body = read_body(&mut reader, &head)?;
    let mut parts = head[0].split_whitespace();
    let mut seen = Seen {
        index: shared.next.fetch_add(1, Ordering::SeqCst),
        method: parts.next().unwrap_or("").to_string(),
        target: parts.next().unwrap_or("").to_string(),
        action: Action::Forward,
    };
    seen.action = (shared.rule.lock().unwrap())(&seen);
    shared.seen.lock().unwrap().push(seen.clone());
    match seen.action {
        Action::Fail503 => {
            let xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>\
                       <Message>Please reduce your request rate (injected).</Message></Error>";
            let body = if seen.method == "HEAD" { "" } else { xml };
            write!(
                writer,
                "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )?;
            writer.flush()?;
            let _ = client.shutdown(Shutdown::Both);
        }
        Action::Reset => reset(client),
        Action::Forward | Action::ForwardThenReset | Action::Truncate => {
            let mut up = TcpStream::connect(shared.upstream)?;
            up.set_read_timeout(Some(Duration::from_secs(60)))?;
            up.write_all(&rewrite_head(&head))?;
            up.write_all(&body)?;
            let mut up_reader = BufReader::new(up);
            let resp_head = read_head(&mut up_reader)?;
            let mut resp_body = Vec::new();
            up_reader.read_to_end(&mut resp_body)?;
            match seen.action {
                Action::ForwardThenReset => reset(client),
                Action::Truncate => {
                    writer.write_all(&rewrite_head(&resp_head))?;
                    writer.write_all(&resp_body[..resp_body.len() / 2])?;
                    writer.flush()?;
                    reset(client);
                }
                _ => {
                    writer.write_all(&rewrite_head(&resp_head))?;
                    writer.write_all(&resp_body)?;
                    writer.flush()?;
                    let _ = client.shutdown(Shutdown::Both);
                }
            }
        }
    }
    Ok(())
}
