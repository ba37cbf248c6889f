//! The requests: get, put (conditional), replace, head, list, delete.

use super::*;

/// What a stored object holds compared with the bytes being put.
pub(super) enum Stored {
    Same,
    Different,
    Missing,
}

/// Everything a request needs, owned, so requests can run as `'static` tasks.
pub(super) struct Inner {
    pub(super) client: Client,
    pub(super) bucket: String,
    pub(super) prefix: String,
    pub(super) settings: S3Settings,
}

impl Inner {
    pub(super) fn full(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// GETs an object or a range. `Ok(None)`: the range starts past the end, or (with
    /// `want_len`) the object's length differs, so its body was not read.
    pub(super) async fn fetch(
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

    pub(super) async fn compare(
        &self,
        key: &str,
        data: &[u8],
    ) -> std::result::Result<Stored, Failure> {
        match self.fetch(key, None, Some(data.len())).await {
            Ok(Some(stored)) if stored == data => Ok(Stored::Same),
            Ok(_) => Ok(Stored::Different),
            Err(Failure::NotFound) => Ok(Stored::Missing),
            Err(f) => Err(f),
        }
    }

    pub(super) async fn head(&self, key: &str) -> std::result::Result<bool, Failure> {
        Ok(self.size(key).await?.is_some())
    }

    /// The object's size, or `None` if it does not exist.
    pub(super) async fn size(&self, key: &str) -> std::result::Result<Option<u64>, Failure> {
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

    /// A create-only PUT; `Ok(false)` when an identical object was already there.
    pub(super) async fn put(&self, key: &str, data: Bytes) -> Result<bool> {
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
                    Ok(_) => return Ok(true),
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
                return Ok(true);
            }
            // Taken: by this very object when an earlier attempt's answer was lost, or by
            // a concurrent writer of the same object, or by different content.
            match self.compare(key, &data).await {
                Ok(Stored::Same) => return Ok(false),
                Ok(Stored::Different) => return Err(conflict()),
                Ok(Stored::Missing) => continue,
                Err(f) => return Err(f.into_error("compare", key)),
            }
        }
        Err(Failure::Other("object kept appearing and disappearing".into()).into_error("put", key))
    }

    /// A plain PUT: S3 replaces an object atomically. Only small records are replaced.
    pub(super) async fn replace(&self, key: &str, data: Bytes) -> std::result::Result<(), Failure> {
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

    /// The keys under `prefix`, after `start_after` if given, sorted.
    pub(super) async fn list_after(
        &self,
        prefix: &str,
        start_after: Option<&str>,
    ) -> std::result::Result<Vec<String>, Failure> {
        let mut keys = Vec::new();
        let mut token = None;
        loop {
            let out = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(self.full(prefix))
                .set_start_after(start_after.map(|a| self.full(a)))
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

    pub(super) async fn delete(&self, key: &str) -> std::result::Result<(), Failure> {
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
