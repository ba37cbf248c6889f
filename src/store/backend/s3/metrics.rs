//! Request counts, by kind, as S3 bills them.

use super::*;

/// HTTP requests sent, by kind; retried attempts count again (they are billed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct RequestCounts {
    /// GET requests.
    pub get: u64,
    /// PUT requests (single-part uploads).
    pub put: u64,
    /// HEAD requests.
    pub head: u64,
    /// LIST requests.
    pub list: u64,
    /// DELETE requests.
    pub delete: u64,
    /// Parts of multipart uploads.
    pub upload_part: u64,
    /// Create, complete, abort and list of multipart uploads.
    pub multipart_other: u64,
    /// Any other request.
    pub other: u64,
    /// Attempts beyond the first of each request (included in the counts above).
    pub retries: u64,
}

impl RequestCounts {
    /// All requests sent, retries included.
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

#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) get: AtomicU64,
    pub(super) put: AtomicU64,
    pub(super) head: AtomicU64,
    pub(super) list: AtomicU64,
    pub(super) delete: AtomicU64,
    pub(super) upload_part: AtomicU64,
    pub(super) multipart_other: AtomicU64,
    pub(super) other: AtomicU64,
    pub(super) operations: AtomicU64,
    pub(super) attempts: AtomicU64,
}

impl Counters {
    /// Classifies a request by method and query, as S3 bills it.
    pub(super) fn count(&self, method: &str, uri: &str) {
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

    pub(super) fn snapshot(&self) -> RequestCounts {
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
pub(super) struct CountRequests(pub(super) Arc<Counters>);

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
