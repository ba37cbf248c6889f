//! S3 back end: `s3://bucket/prefix[?endpoint=URL&region=NAME&path_style=true|false]`; with
//! no query, the standard AWS chain (env, profile, instance role); path-style with an endpoint.
//! Create-only puts send `If-None-Match: *`; on 412 the stored bytes are compared, so a retried put
//! of the same object succeeds. The sync, shared trait runs on a current-thread runtime owned by a
//! dedicated I/O thread (as in `reqwest::blocking`): callers spawn onto it and wait on a channel,
//! which works from any thread and keeps one connection pool. No credentials in URLs or messages.

use super::{Backend, BackendError, Result};
use aws_config::BehaviorVersion;
use aws_sdk_s3::config::interceptors::{
    BeforeSerializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
};
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{ConfigBag, Intercept, Region, RuntimeComponents};
use aws_sdk_s3::error::{BoxError, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use bytes::Bytes;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::Duration;

/// Tunables; the defaults suit AWS S3 and MinIO.
#[derive(Debug, Clone)]
pub struct S3Settings {
    /// HTTP attempts per request, the first included (SDK standard retry mode).
    pub max_attempts: u32,
    /// Base of the exponential backoff; each wait is random in [0, base · 2^n], at most 20 s.
    pub initial_backoff: Duration,
    /// Objects larger than this go up as a multipart upload.
    pub multipart_threshold: usize,
    /// Part size of a multipart upload (S3's minimum is 5 MiB).
    pub part_size: usize,
    /// Parts of one upload in flight at once.
    pub part_concurrency: usize,
}

impl Default for S3Settings {
    fn default() -> S3Settings {
        S3Settings {
            max_attempts: 5,
            initial_backoff: Duration::from_secs(1),
            multipart_threshold: 16 << 20,
            part_size: 8 << 20,
            part_concurrency: 4,
        }
    }
}

/// HTTP requests sent, by kind; retried attempts count again (they are billed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct RequestCounts {
    pub get: u64,
    pub put: u64,
    pub head: u64,
    pub list: u64,
    pub delete: u64,
    pub upload_part: u64,
    /// Create, complete, abort and list of multipart uploads.
    pub multipart_other: u64,
    pub other: u64,
    /// Attempts beyond the first of each request (included in the counts above).
    pub retries: u64,
}

impl RequestCounts {
    pub fn total(&self) -> u64 {
        self.get
            + self.put
            + self.head
            + self.list
            + self.delete
            + self.upload_part
            + self.multipart_other
            + self.other
    }
}

/// Why an `s3://` URL or the client set-up was refused. Never echoes query values.
#[derive(Debug, thiserror::Error)]
pub enum S3ConfigError {
    #[error("invalid S3 repository URL: {0}")]
    BadUrl(String),
    #[error("cannot start the S3 I/O thread: {0}")]
    Runtime(#[source] std::io::Error),
}

/// A parsed `s3://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
struct S3Url {
    bucket: String,
    /// Empty, or ends with `/`.
    prefix: String,
    endpoint: Option<String>,
    region: Option<String>,
    path_style: Option<bool>,
}

fn percent_decode(s: &str) -> std::result::Result<String, S3ConfigError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| S3ConfigError::BadUrl("bad %-escape in a query value".into()))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| S3ConfigError::BadUrl("query value is not UTF-8".into()))
}

impl S3Url {
    fn parse(spec: &str) -> std::result::Result<S3Url, S3ConfigError> {
        let bad = |m: &str| S3ConfigError::BadUrl(m.to_string());
        let rest = spec
            .strip_prefix("s3://")
            .ok_or_else(|| bad("it must start with s3://"))?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
        if bucket.contains('@') || bucket.contains(':') {
            return Err(bad(
                "credentials or ports do not go in the URL; use AWS_ACCESS_KEY_ID and \
                 AWS_SECRET_ACCESS_KEY (or a profile), and ?endpoint=",
            ));
        }
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !bucket_ok {
            return Err(bad(
                "the bucket name must be 3-63 characters: lower-case letters, digits, '-' and '.'",
            ));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|s| s == "." || s == "..") || prefix.contains("//") {
            return Err(bad(
                "the prefix must not contain empty, '.' or '..' segments",
            ));
        }
        let mut url = S3Url {
            bucket: bucket.to_string(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
            endpoint: None,
            region: None,
            path_style: None,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value)?;
            match name {
                "endpoint" => {
                    let authority = value
                        .strip_prefix("http://")
                        .or_else(|| value.strip_prefix("https://"))
                        .ok_or_else(|| bad("endpoint must start with http:// or https://"))?;
                    if authority.split('/').next().unwrap_or("").contains('@') {
                        return Err(bad("credentials do not go in the endpoint URL"));
                    }
                    url.endpoint = Some(value);
                }
                "region" if !value.is_empty() => url.region = Some(value),
                "path_style" => {
                    url.path_style = Some(match value.as_str() {
                        "true" | "1" | "" => true,
                        "false" | "0" => false,
                        _ => return Err(bad("path_style must be true or false")),
                    })
                }
                // Only the parameter's name: its value might be a secret pasted by mistake.
                _ => {
                    return Err(S3ConfigError::BadUrl(format!(
                        "unknown query parameter {name:?}; known: endpoint, region, path_style"
                    )))
                }
            }
        }
        Ok(url)
    }

    fn location(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix.trim_end_matches('/'))
            .trim_end_matches('/')
            .to_string()
    }
}

/// Tells the I/O thread to stop, waking it if it is waiting.
#[derive(Default)]
struct Stop {
    done: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Stop {
    fn waker(&self) -> std::sync::MutexGuard<'_, Option<Waker>> {
        self.waker.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self) {
        self.done.store(true, Ordering::SeqCst);
        if let Some(w) = self.waker().take() {
            w.wake();
        }
    }

    async fn wait(&self) {
        std::future::poll_fn(|cx| {
            if self.done.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            *self.waker() = Some(cx.waker().clone());
            // Checked again: `set` may have run between the first check and storing the waker.
            match self.done.load(Ordering::SeqCst) {
                true => Poll::Ready(()),
                false => Poll::Pending,
            }
        })
        .await
    }
}

/// A current-thread runtime driven by one dedicated thread for the back end's lifetime.
struct IoThread {
    handle: tokio::runtime::Handle,
    stop: Arc<Stop>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl IoThread {
    fn start() -> std::io::Result<IoThread> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = rt.handle().clone();
        let stop = Arc::new(Stop::default());
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("pgsnapfs-s3".into())
            .spawn(move || rt.block_on(s.wait()))?;
        Ok(IoThread {
            handle,
            stop,
            thread: Some(thread),
        })
    }

    /// Runs `fut` on the I/O thread and waits for it; `None` if the task died (a panic).
    fn run<T: Send + 'static>(&self, fut: impl Future<Output = T> + Send + 'static) -> Option<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv().ok()
    }
}

impl Drop for IoThread {
    fn drop(&mut self) {
        self.stop.set();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    get: AtomicU64,
    put: AtomicU64,
    head: AtomicU64,
    list: AtomicU64,
    delete: AtomicU64,
    upload_part: AtomicU64,
    multipart_other: AtomicU64,
    other: AtomicU64,
    operations: AtomicU64,
    attempts: AtomicU64,
}

impl Counters {
    /// Classifies a request by method and query, as S3 bills it.
    fn count(&self, method: &str, uri: &str) {
        let query = uri.split_once('?').map(|(_, q)| q).unwrap_or("");
        let has = |name: &str| {
            query
                .split('&')
                .any(|p| p.split_once('=').map(|(k, _)| k).unwrap_or(p) == name)
        };
        let c = match method {
            "GET" if has("list-type") => &self.list,
            "GET" if has("uploads") || has("uploadId") => &self.multipart_other,
            "GET" => &self.get,
            "PUT" if has("partNumber") => &self.upload_part,
            "PUT" => &self.put,
            "HEAD" => &self.head,
            "DELETE" if has("uploadId") => &self.multipart_other,
            "DELETE" => &self.delete,
            "POST" if has("uploads") || has("uploadId") => &self.multipart_other,
            "POST" if has("delete") => &self.delete,
            _ => &self.other,
        };
        c.fetch_add(1, Ordering::Relaxed);
        self.attempts.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> RequestCounts {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RequestCounts {
            get: l(&self.get),
            put: l(&self.put),
            head: l(&self.head),
            list: l(&self.list),
            delete: l(&self.delete),
            upload_part: l(&self.upload_part),
            multipart_other: l(&self.multipart_other),
            other: l(&self.other),
            retries: l(&self.attempts).saturating_sub(l(&self.operations)),
        }
    }
}

/// Counts every attempt that goes on the wire, retries included.
#[derive(Debug)]
struct CountRequests(Arc<Counters>);

impl Intercept for CountRequests {
    fn name(&self) -> &'static str {
        "pgsnapfs::CountRequests"
    }

    fn read_before_execution(
        &self,
        _: &BeforeSerializationInterceptorContextRef<'_>,
        _: &mut ConfigBag,
    ) -> std::result::Result<(), BoxError> {
        self.0.operations.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn read_before_transmit(
        &self,
        ctx: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> std::result::Result<(), BoxError> {
        let req = ctx.request();
        self.0.count(req.method(), req.uri());
        Ok(())
    }
}

/// What a failed request means to the back end.
#[derive(Debug)]
enum Failure {
    NotFound,
    /// 412: a conditional write found the key taken.
    Taken,
    /// 409 ConditionalRequestConflict: a concurrent conditional write; try again.
    Busy,
    /// 416: a range starting at or past the end.
    BadRange,
    /// 501: e.g. a store without conditional CompleteMultipartUpload.
    NotImplemented,
    /// No answer in time, a lost connection, or a 5xx/SlowDown answer after the SDK's retries.
    Unavailable(String),
    Other(String),
}

/// Whether an S3 answer says the store is failing or overloaded, not that the request is wrong.
fn unavailable_answer(status: Option<u16>, code: Option<&str>) -> bool {
    matches!(status, Some(500 | 502 | 503 | 504))
        || matches!(
            code,
            Some("SlowDown" | "ServiceUnavailable" | "InternalError" | "RequestTimeout")
        )
}

impl Failure {
    fn of<E>(err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Failure
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let status = err.raw_response().map(|r| r.status().as_u16());
        let unavailable = unavailable_answer(status, err.code())
            || match &err {
                SdkError::TimeoutError(_) => true,
                SdkError::DispatchFailure(d) => d.is_io() || d.is_timeout(),
                _ => false,
            };
        let failure = match (status, err.code()) {
            (_, Some("NoSuchKey")) | (Some(404), None | Some("NotFound")) => Failure::NotFound,
            (Some(412), _) | (_, Some("PreconditionFailed")) => Failure::Taken,
            (Some(409), Some("ConditionalRequestConflict")) => Failure::Busy,
            (Some(416), _) | (_, Some("InvalidRange")) => Failure::BadRange,
            (Some(501), _) | (_, Some("NotImplemented")) => Failure::NotImplemented,
            (status, Some(code)) => {
                let mut m = format!("{code}: {}", err.message().unwrap_or("no message"));
                if let Some(s) = status {
                    m.push_str(&format!(" (HTTP {s})"));
                }
                if status == Some(403) {
                    m.push_str("; check the credentials and their permissions on the bucket");
                }
                Failure::Other(m)
            }
            // No S3 error code: a connection or timeout failure, or a bare status (HEAD).
            (Some(403), None) => Failure::Other(
                "HTTP 403 Forbidden: the credentials may not read this key (S3 also answers \
                 403 for a missing key when they may not list the bucket)"
                    .into(),
            ),
            (status, None) => Failure::Other(match status {
                Some(s) => format!("HTTP {s}: {}", chain(&err)),
                None => chain(&err),
            }),
        };
        match failure {
            Failure::Other(m) if unavailable => Failure::Unavailable(m),
            f => f,
        }
    }

    fn message(self) -> String {
        match self {
            Failure::NotFound => "404 Not Found".into(),
            Failure::Taken => "unexpected 412 Precondition Failed".into(),
            Failure::Busy => "a concurrent conditional write kept conflicting (409)".into(),
            Failure::BadRange => "unexpected 416 Range Not Satisfiable".into(),
            Failure::NotImplemented => "501 Not Implemented: pgsnapfs needs a store with \
                conditional writes (If-None-Match)"
                .into(),
            Failure::Unavailable(m) | Failure::Other(m) => m,
        }
    }

    fn into_error(self, op: &'static str, key: &str) -> BackendError {
        let key = key.to_string();
        match self {
            Failure::NotFound => BackendError::NotFound { key },
            Failure::Unavailable(_) | Failure::Busy => BackendError::Unavailable {
                op,
                key,
                message: self.message(),
            },
            f => BackendError::Refused {
                op,
                key,
                message: f.message(),
            },
        }
    }
}

/// An error and its causes, by `Display` only: SDK `Debug` output would dump whole responses.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// Full-jitter exponential backoff: random in [0, base · 2^(attempt-1)], capped at 20 s.
fn backoff(base: Duration, attempt: u32) -> Duration {
    let cap = base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(Duration::from_secs(20));
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(attempt);
    let frac = (h.finish() >> 11) as f64 / (1u64 << 53) as f64;
    cap.mul_f64(frac)
}

/// What a stored object holds compared with the bytes being put.
enum Stored {
    Same,
    Different,
    Missing,
}

/// Everything a request needs, owned, so requests can run as `'static` tasks.
struct Inner {
    client: Client,
    bucket: String,
    prefix: String,
    settings: S3Settings,
}

impl Inner {
    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// GETs an object or a range. `Ok(None)`: the range starts past the end, or (with
    /// `want_len`) the object's length differs, so its body was not read.
    async fn fetch(
        &self,
        key: &str,
        range: Option<(u64, u64)>,
        want_len: Option<usize>,
    ) -> std::result::Result<Option<Vec<u8>>, Failure> {
        let mut attempt = 1;
        loop {
            let resp = self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(self.full(key))
                .set_range(range.map(|(a, b)| format!("bytes={a}-{b}")))
                .send()
                .await;
            let resp = match resp.map_err(Failure::of) {
                Ok(r) => r,
                Err(Failure::BadRange) => return Ok(None),
                Err(f) => return Err(f),
            };
            let length = resp.content_length();
            if want_len.is_some_and(|n| length.is_some_and(|l| l != n as i64)) {
                return Ok(None);
            }
            let whole_object = range.is_some() && resp.content_range().is_none();
            // The SDK retries requests, not the reading of bodies: a body cut off is read again.
            match resp.body.collect().await {
                Ok(b) => {
                    let mut data: Vec<u8> = b.into_bytes().into();
                    // A server that ignored Range sent the whole object: cut the range out.
                    if let (true, Some((a, b))) = (whole_object, range) {
                        let end = (b.saturating_add(1)).min(data.len() as u64) as usize;
                        data = data.get(a as usize..end).unwrap_or_default().to_vec();
                    }
                    return Ok(Some(data));
                }
                Err(e) if attempt < self.settings.max_attempts => {
                    tracing::debug!(key, attempt, "S3 GET body failed, retrying: {e}");
                    tokio::time::sleep(backoff(self.settings.initial_backoff, attempt)).await;
                    attempt += 1;
                }
                Err(e) => {
                    return Err(Failure::Unavailable(format!(
                        "reading the response body: {}",
                        chain(&e)
                    )))
                }
            }
        }
    }

    async fn compare(&self, key: &str, data: &[u8]) -> std::result::Result<Stored, Failure> {
        match self.fetch(key, None, Some(data.len())).await {
            Ok(Some(stored)) if stored == data => Ok(Stored::Same),
            Ok(_) => Ok(Stored::Different),
            Err(Failure::NotFound) => Ok(Stored::Missing),
            Err(f) => Err(f),
        }
    }

    async fn head(&self, key: &str) -> std::result::Result<bool, Failure> {
        Ok(self.size(key).await?.is_some())
    }

    /// The object's size, or `None` if it does not exist.
    async fn size(&self, key: &str) -> std::result::Result<Option<u64>, Failure> {
        let resp = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .send()
            .await;
        match resp.map_err(Failure::of) {
            Ok(out) => Ok(Some(out.content_length().unwrap_or(0).max(0) as u64)),
            Err(Failure::NotFound) => Ok(None),
            Err(f) => Err(f),
        }
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        let conflict = || BackendError::Conflict {
            key: key.to_string(),
        };
        let mut busy = 0;
        // Twice at most: a 412 whose object is gone when read back (deleted meanwhile).
        for _ in 0..2 {
            let taken = if data.len() > self.settings.multipart_threshold {
                self.put_multipart(key, data.clone()).await?
            } else {
                let resp = self
                    .client
                    .put_object()
                    .bucket(&self.bucket)
                    .key(self.full(key))
                    .if_none_match("*")
                    .body(ByteStream::from(data.clone()))
                    .send()
                    .await;
                match resp.map_err(Failure::of) {
                    Ok(_) => return Ok(()),
                    Err(Failure::Taken) => true,
                    Err(Failure::Busy) if busy + 1 < self.settings.max_attempts => {
                        busy += 1;
                        tokio::time::sleep(backoff(self.settings.initial_backoff, busy)).await;
                        continue;
                    }
                    Err(f) => return Err(f.into_error("put", key)),
                }
            };
            if !taken {
                return Ok(());
            }
            // Taken: by this very object when an earlier attempt's answer was lost, or by
            // a concurrent writer of the same object, or by different content.
            match self.compare(key, &data).await {
                Ok(Stored::Same) => return Ok(()),
                Ok(Stored::Different) => return Err(conflict()),
                Ok(Stored::Missing) => continue,
                Err(f) => return Err(f.into_error("compare", key)),
            }
        }
        Err(Failure::Other("object kept appearing and disappearing".into()).into_error("put", key))
    }

    /// A plain PUT: S3 replaces an object atomically. Only small records are replaced.
    async fn replace(&self, key: &str, data: Bytes) -> std::result::Result<(), Failure> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .body(ByteStream::from(data))
            .send()
            .await
            .map(|_| ())
            .map_err(Failure::of)
    }

    /// Uploads in parts and completes with `If-None-Match: *`. `Ok(true)`: the key is taken.
    /// A failed upload is aborted, so no parts linger (and bill) in the bucket.
    async fn put_multipart(&self, key: &str, data: Bytes) -> Result<bool> {
        // Checked first so that re-putting an existing pack does not upload it again.
        if self
            .head(key)
            .await
            .map_err(|f| f.into_error("head", key))?
        {
            return Ok(true);
        }
        let full = self.full(key);
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&full)
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .send()
            .await
            .map_err(|e| Failure::of(e).into_error("start multipart upload of", key))?;
        let upload_id = created.upload_id().unwrap_or_default().to_string();
        if upload_id.is_empty() {
            return Err(Failure::Other("no upload id in the answer".into())
                .into_error("start multipart upload of", key));
        }
        let result = self.upload_parts(key, &upload_id, data).await;
        let failure = match result {
            Ok(()) => return Ok(false),
            Err(Failure::Taken) => None,
            Err(f) => Some(f),
        };
        let aborted = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(&full)
            .upload_id(&upload_id)
            .send()
            .await;
        // NoSuchUpload: already aborted or completed; either way nothing lingers.
        let aborted = match aborted {
            Err(e) if e.code() == Some("NoSuchUpload") => Ok(()),
            other => other.map(|_| ()).map_err(Failure::of),
        };
        match (failure, aborted) {
            (None, _) => Ok(true),
            (Some(f), Ok(())) | (Some(f), Err(Failure::NotFound)) => {
                Err(f.into_error("multipart upload of", key))
            }
            (Some(f), Err(abort)) => {
                let a = abort.message();
                tracing::warn!(key, "could not abort multipart upload: {a}");
                Err(Failure::Other(format!(
                    "{}; aborting the upload failed too ({a}): a lifecycle rule \
                     AbortIncompleteMultipartUpload cleans it up",
                    f.message()
                ))
                .into_error("multipart upload of", key))
            }
        }
    }

    async fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        data: Bytes,
    ) -> std::result::Result<(), Failure> {
        let full = &self.full(key);
        let size = self.settings.part_size.max(1);
        let count = data.len().div_ceil(size);
        let mut tasks = tokio::task::JoinSet::new();
        let mut parts = Vec::with_capacity(count);
        let mut next = 0;
        while next < count || !tasks.is_empty() {
            while next < count && tasks.len() < self.settings.part_concurrency.max(1) {
                let number = next as i32 + 1;
                let body = data.slice(next * size..((next + 1) * size).min(data.len()));
                let request = self
                    .client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(full)
                    .upload_id(upload_id)
                    .part_number(number)
                    .checksum_algorithm(ChecksumAlgorithm::Crc32)
                    .body(ByteStream::from(body));
                tasks.spawn(async move { (number, request.send().await) });
                next += 1;
            }
            let done = match tasks.join_next().await {
                Some(Ok((number, Ok(out)))) => Ok(CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(out.e_tag)
                    .set_checksum_crc32(out.checksum_crc32)
                    .build()),
                Some(Ok((number, Err(e)))) => Err(match Failure::of(e) {
                    Failure::Other(m) => Failure::Other(format!("part {number}: {m}")),
                    Failure::Unavailable(m) => Failure::Unavailable(format!("part {number}: {m}")),
                    f => f,
                }),
                Some(Err(e)) => Err(Failure::Other(format!("part upload task failed: {e}"))),
                None => break,
            };
            match done {
                Ok(part) => parts.push(part),
                Err(f) => {
                    // No part may still be in flight when the caller aborts the upload.
                    tasks.shutdown().await;
                    return Err(f);
                }
            }
        }
        parts.sort_by_key(|p| p.part_number);
        let complete = |conditional: bool| {
            self.client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(full)
                .upload_id(upload_id)
                .set_if_none_match(conditional.then(|| "*".to_string()))
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts.clone()))
                        .build(),
                )
                .send()
        };
        let err = match complete(true).await {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        // 200 and no error code: an answer the SDK could not read, not a 200-with-<Error>.
        let unreadable_ok = err.code().is_none()
            && err
                .raw_response()
                .is_some_and(|r| r.status().as_u16() == 200);
        match Failure::of(err) {
            // Stores without conditional completion: the HEAD before the upload has to do.
            Failure::NotImplemented => complete(false).await.map(|_| ()).map_err(Failure::of),
            // 200 with a body the SDK cannot read (moto names the root element differently):
            // done if the object is there with the right size.
            Failure::Other(m) if unreadable_ok => match self.size(key).await? {
                Some(n) if n == data.len() as u64 => {
                    tracing::debug!(key, "unreadable CompleteMultipartUpload answer: {m}");
                    Ok(())
                }
                _ => Err(Failure::Other(m)),
            },
            f => Err(f),
        }
    }

    async fn list(&self, prefix: &str) -> std::result::Result<Vec<String>, Failure> {
        let mut keys = Vec::new();
        let mut token = None;
        loop {
            let out = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(self.full(prefix))
                .set_continuation_token(token)
                .send()
                .await
                .map_err(Failure::of)?;
            keys.extend(
                out.contents()
                    .iter()
                    .filter_map(|o| o.key()?.strip_prefix(&self.prefix))
                    .map(str::to_string),
            );
            match (out.is_truncated(), out.next_continuation_token) {
                (Some(true), Some(t)) => token = Some(t),
                (Some(true), None) => {
                    return Err(Failure::Other(
                        "truncated listing without a continuation token".into(),
                    ))
                }
                _ => break,
            }
        }
        keys.sort();
        Ok(keys)
    }

    async fn delete(&self, key: &str) -> std::result::Result<(), Failure> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .send()
            .await
            .map(|_| ())
            .map_err(Failure::of)
    }
}

/// Objects in an S3 bucket under a prefix. See the module documentation.
pub struct S3Backend {
    inner: Arc<Inner>,
    counters: Arc<Counters>,
    location: String,
    // Last: dropped after the client, which it drives.
    io: IoThread,
}

async fn build_client(url: S3Url, settings: S3Settings, counters: Arc<Counters>) -> Client {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let retry = RetryConfig::standard()
        .with_max_attempts(settings.max_attempts.max(1))
        .with_initial_backoff(settings.initial_backoff);
    // First byte of the answer: counts from the start of the upload of up to a part or a WAL
    // file, so it is generous; stalled transfers are caught by stalled-stream protection.
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(300))
        .build();
    // The loader's own chain (env, profile, instance metadata) unless the URL names a region;
    // it must use our HTTP client, as the crate's default client is not compiled in.
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .retry_config(retry)
        .timeout_config(timeouts);
    if let Some(region) = &url.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(endpoint) = &url.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    let sdk = loader.load().await;
    let custom_endpoint = sdk.endpoint_url().is_some()
        || std::env::var("AWS_ENDPOINT_URL_S3").is_ok_and(|v| !v.is_empty());
    let path_style = url.path_style.unwrap_or(custom_endpoint);
    tracing::debug!(
        bucket = %url.bucket,
        prefix = %url.prefix,
        endpoint = sdk.endpoint_url().unwrap_or("AWS"),
        region = sdk.region().map(|r| r.as_ref()).unwrap_or("us-east-1 (default)"),
        path_style,
        "S3 back end"
    );
    // S3 needs some region to sign with; MinIO and Ceph accept us-east-1.
    let region = sdk
        .region()
        .cloned()
        .unwrap_or(Region::from_static("us-east-1"));
    let conf = aws_sdk_s3::config::Builder::from(&sdk)
        .region(region)
        .force_path_style(path_style)
        .interceptor(CountRequests(counters))
        .build();
    Client::from_conf(conf)
}

impl S3Backend {
    /// Opens `s3://bucket/prefix` with the default settings. Nothing is sent yet.
    pub fn open(spec: &str) -> std::result::Result<S3Backend, S3ConfigError> {
        S3Backend::open_with(spec, S3Settings::default())
    }

    pub fn open_with(
        spec: &str,
        settings: S3Settings,
    ) -> std::result::Result<S3Backend, S3ConfigError> {
        let url = S3Url::parse(spec)?;
        let io = IoThread::start().map_err(S3ConfigError::Runtime)?;
        let counters = Arc::new(Counters::default());
        let client = io
            .run(build_client(
                url.clone(),
                settings.clone(),
                counters.clone(),
            ))
            .ok_or_else(|| {
                S3ConfigError::Runtime(std::io::Error::other("S3 client set-up panicked"))
            })?;
        Ok(S3Backend {
            inner: Arc::new(Inner {
                client,
                bucket: url.bucket.clone(),
                prefix: url.prefix.clone(),
                settings,
            }),
            counters,
            location: url.location(),
            io,
        })
    }

    /// Requests sent so far, by kind.
    pub fn request_counts(&self) -> RequestCounts {
        self.counters.snapshot()
    }

    /// Runs one operation on the I/O thread.
    fn run<T: Send + 'static, F: Future<Output = Result<T>> + Send + 'static>(
        &self,
        op: &'static str,
        key: &str,
        f: impl FnOnce(Arc<Inner>) -> F,
    ) -> Result<T> {
        self.io.run(f(self.inner.clone())).unwrap_or_else(|| {
            Err(Failure::Other("the S3 I/O task panicked".into()).into_error(op, key))
        })
    }
}

impl Backend for S3Backend {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn get(&self, key: &str) -> Result<Vec<u8>> {
        let k = key.to_string();
        self.run("get", key, |inner| async move {
            match inner.fetch(&k, None, None).await {
                Ok(Some(data)) => Ok(data),
                Ok(None) => Err(Failure::BadRange.into_error("get", &k)),
                Err(f) => Err(f.into_error("get", &k)),
            }
        })
    }

    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let k = key.to_string();
        self.run("get range of", key, |inner| async move {
            if len == 0 {
                // An empty Range is invalid; only existence is left to report.
                return match inner.head(&k).await {
                    Ok(true) => Ok(Vec::new()),
                    Ok(false) => Err(BackendError::NotFound { key: k }),
                    Err(f) => Err(f.into_error("get range of", &k)),
                };
            }
            let last = offset.saturating_add(len - 1);
            match inner.fetch(&k, Some((offset, last)), None).await {
                Ok(data) => Ok(data.unwrap_or_default()),
                Err(f) => Err(f.into_error("get range of", &k)),
            }
        })
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        let k = key.to_string();
        let data = Bytes::copy_from_slice(data);
        self.run("put", key, |inner| async move { inner.put(&k, data).await })
    }

    fn replace(&self, key: &str, data: &[u8]) -> Result<()> {
        let k = key.to_string();
        let data = Bytes::copy_from_slice(data);
        self.run("replace", key, |inner| async move {
            inner
                .replace(&k, data)
                .await
                .map_err(|f| f.into_error("replace", &k))
        })
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let p = prefix.to_string();
        self.run("list", prefix, |inner| async move {
            inner.list(&p).await.map_err(|f| f.into_error("list", &p))
        })
    }

    /// Deleting a missing key succeeds, as in S3 (the local back end says NotFound).
    fn delete(&self, key: &str) -> Result<()> {
        let k = key.to_string();
        self.run("delete", key, |inner| async move {
            inner
                .delete(&k)
                .await
                .map_err(|f| f.into_error("delete", &k))
        })
    }

    fn exists(&self, key: &str) -> Result<bool> {
        let k = key.to_string();
        self.run("stat", key, |inner| async move {
            inner.head(&k).await.map_err(|f| f.into_error("stat", &k))
        })
    }

    fn size(&self, key: &str) -> Result<u64> {
        let k = key.to_string();
        self.run("stat", key, |inner| async move {
            match inner.size(&k).await {
                Ok(Some(n)) => Ok(n),
                Ok(None) => Err(BackendError::NotFound { key: k }),
                Err(f) => Err(f.into_error("stat", &k)),
            }
        })
    }

    fn stats(&self) -> Option<RequestCounts> {
        Some(self.counters.snapshot())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failing_or_busy_answers_are_unavailable() {
        for (status, code) in [
            (Some(503), Some("SlowDown")),
            (Some(500), Some("InternalError")),
            (Some(502), None),
            (Some(504), None),
            (Some(400), Some("RequestTimeout")),
        ] {
            assert!(unavailable_answer(status, code), "{status:?} {code:?}");
        }
        for (status, code) in [
            (Some(403), Some("AccessDenied")),
            (Some(404), Some("NoSuchBucket")),
            (Some(400), Some("InvalidArgument")),
            (None, None),
        ] {
            assert!(!unavailable_answer(status, code), "{status:?} {code:?}");
        }
        let busy = Failure::Busy.into_error("put", "k");
        assert!(busy.is_transient(), "{busy}");
        assert!(!Failure::Other("x".into())
            .into_error("get", "k")
            .is_transient());
    }

    #[test]
    fn urls() {
        let u = S3Url::parse("s3://my-bucket/a/b/").unwrap();
        assert_eq!(u.bucket, "my-bucket");
        assert_eq!(u.prefix, "a/b/");
        assert_eq!(u.location(), "s3://my-bucket/a/b");
        let u = S3Url::parse("s3://my-bucket").unwrap();
        assert_eq!(u.prefix, "");
        assert_eq!(u.location(), "s3://my-bucket");
        let u = S3Url::parse(
            "s3://b.example/p?endpoint=http%3A%2F%2F127.0.0.1:9000&region=eu-west-3\
             &path_style=false",
        )
        .unwrap();
        assert_eq!(u.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(u.region.as_deref(), Some("eu-west-3"));
        assert_eq!(u.path_style, Some(false));
        assert_eq!(u.location(), "s3://b.example/p");
        for bad in [
            "s3://",
            "s3://AB",
            "s3://bucket/a//b",
            "s3://bucket/../x",
            "s3://bucket/p?endpoint=ftp://x",
            "s3://bucket/p?path_style=maybe",
        ] {
            assert!(S3Url::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn url_errors_never_echo_secrets() {
        for spec in [
            "s3://AKIAEXAMPLE:hunter2secret@bucket/p",
            "s3://bucket/p?secret_key=hunter2secret",
            "s3://bucket/p?endpoint=https://user:hunter2secret@host",
        ] {
            let e = S3Url::parse(spec).unwrap_err().to_string();
            assert!(!e.contains("hunter2secret"), "{e}");
        }
    }

    #[test]
    fn requests_are_classified_like_s3_bills_them() {
        let c = Counters::default();
        c.count("GET", "/b/k?list-type=2&prefix=x");
        c.count("GET", "/b/k");
        c.count("PUT", "/b/k?partNumber=1&uploadId=u");
        c.count("POST", "/b/k?uploads");
        c.count("POST", "/b/k?uploadId=u");
        c.count("DELETE", "/b/k?uploadId=u");
        c.count("HEAD", "/b/k");
        c.operations.store(6, Ordering::Relaxed);
        let r = c.snapshot();
        assert_eq!(
            (r.list, r.get, r.upload_part, r.multipart_other, r.head),
            (1, 1, 1, 3, 1)
        );
        assert_eq!((r.total(), r.retries), (7, 1));
    }

    #[test]
    fn backoff_is_bounded() {
        let base = Duration::from_millis(100);
        for attempt in 1..40 {
            let cap = base
                .saturating_mul(1 << (attempt - 1).min(16))
                .min(Duration::from_secs(20));
            assert!(backoff(base, attempt) <= cap, "attempt {attempt}");
        }
    }
}
