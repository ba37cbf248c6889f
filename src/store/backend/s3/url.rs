//! Parsing `s3://bucket/prefix?...` URLs. Never echoes query values.

use super::*;

/// A parsed `s3://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct S3Url {
    pub(super) bucket: String,
    /// Empty, or ends with `/`.
    pub(super) prefix: String,
    pub(super) endpoint: Option<String>,
    pub(super) region: Option<String>,
    pub(super) path_style: Option<bool>,
}

pub(super) fn percent_decode(s: &str) -> std::result::Result<String, S3ConfigError> {
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
    pub(super) fn parse(spec: &str) -> std::result::Result<S3Url, S3ConfigError> {
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

    pub(super) fn location(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix.trim_end_matches('/'))
            .trim_end_matches('/')
            .to_string()
    }
}
