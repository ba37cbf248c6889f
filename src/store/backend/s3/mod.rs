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

mod metrics;
mod multipart;
mod ops;
mod retry;
mod runtime;
mod url;

pub use metrics::RequestCounts;
use metrics::*;
use ops::*;
use retry::*;
use runtime::*;
use url::*;

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

/// Why an `s3://` URL or the client set-up was refused. Never echoes query values.
#[derive(Debug, thiserror::Error)]
pub enum S3ConfigError {
    /// The URL is malformed or lacks a bucket; says what is wrong, never a query value.
    #[error("invalid S3 repository URL: {0}")]
    BadUrl(String),
    /// The thread that runs the S3 client could not be started.
    #[error("cannot start the S3 I/O thread: {0}")]
    Runtime(#[source] std::io::Error),
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

    /// Opens `s3://bucket/prefix` with `settings` (retries, backoff, multipart sizes). Nothing is sent yet.
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
        self.run("put", key, |inner| async move {
            inner.put(&k, data).await.map(drop)
        })
    }

    /// One conditional PUT: a 412 whose stored bytes are the same means "already there".
    fn put_new(&self, key: &str, data: &[u8]) -> Result<bool> {
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
            inner
                .list_after(&p, None)
                .await
                .map_err(|f| f.into_error("list", &p))
        })
    }

    fn list_after(&self, prefix: &str, start_after: &str) -> Result<Vec<String>> {
        let (p, a) = (prefix.to_string(), start_after.to_string());
        self.run("list", prefix, |inner| async move {
            inner
                .list_after(&p, Some(&a))
                .await
                .map_err(|f| f.into_error("list", &p))
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
