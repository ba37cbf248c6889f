//! What a failed request means (transient or not), and the backoff between attempts.

use super::*;

/// What a failed request means to the back end.
#[derive(Debug)]
pub(super) enum Failure {
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
pub(super) fn unavailable_answer(status: Option<u16>, code: Option<&str>) -> bool {
    matches!(status, Some(500 | 502 | 503 | 504))
        || matches!(
            code,
            Some("SlowDown" | "ServiceUnavailable" | "InternalError" | "RequestTimeout")
        )
}

impl Failure {
    pub(super) fn of<E>(err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Failure
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

    pub(super) fn message(self) -> String {
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

    pub(super) fn into_error(self, op: &'static str, key: &str) -> BackendError {
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
pub(super) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
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
pub(super) fn backoff(base: Duration, attempt: u32) -> Duration {
    let cap = base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(Duration::from_secs(20));
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(attempt);
    let frac = (h.finish() >> 11) as f64 / (1u64 << 53) as f64;
    cap.mul_f64(frac)
}
