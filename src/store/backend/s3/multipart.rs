//! Multipart uploads of large objects, completed conditionally, aborted on failure.

use super::*;

impl Inner {
    /// Uploads in parts and completes with `If-None-Match: *`. `Ok(true)`: the key is taken.
    /// A failed upload is aborted, so no parts linger (and bill) in the bucket.
    pub(super) async fn put_multipart(&self, key: &str, data: Bytes) -> Result<bool> {
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

    pub(super) async fn upload_parts(
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
}
