//! Snapshot manifests: one sealed JSON object per finished snapshot, written last.
//!
//! A manifest's existence is what makes a snapshot visible, so it is the final write of a
//! backup, after every pack it references is durable. The store knows the envelope (the root
//! tree, the parent, times and sizes); what the snapshot means to its writer is the metadata
//! `M`, supplied from above and stored in the same JSON object (`catalog::BackupMeta` for a
//! PostgreSQL base backup).

use super::backend::RequestCounts;
use super::tree::BlobRef;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::ops::{Deref, DerefMut};

/// The manifest format written by this version.
pub const FORMAT: u32 = 1;

/// A snapshot manifest: one stored tree plus its writer's metadata `M`, written last so its existence means everything it references is durable.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot<M> {
    /// The manifest format version ([`FORMAT`] when written by this version).
    pub format: u32,
    /// The snapshot's id, also the last part of its key.
    pub id: String,
    /// The writer's metadata: its fields sit beside the store's in the manifest.
    #[serde(flatten)]
    pub meta: M,
    /// When the writer began reading the source tree.
    pub start_time: DateTime<Utc>,
    /// When the writer finished; the snapshot is as of this moment.
    pub stop_time: DateTime<Utc>,
    /// Free text given by the user (empty if none).
    pub label: String,
    /// Bytes of all files in the snapshot.
    pub size_logical: u64,
    /// Bytes this snapshot added to the repository (compressed, including tree blobs).
    pub size_stored_new: u64,
    /// Number of regular files in the tree.
    pub files: u64,
    /// The chunk size files were cut into, in bytes.
    pub chunk_size: u32,
    /// The snapshot whose tree was compared against to reuse unchanged chunks.
    pub parent: Option<String>,
    /// The root directory's tree blob.
    pub root: BlobRef,
    /// Permission bits and mtime of the root directory itself.
    pub root_mode: u32,
    /// Seconds since the Unix epoch.
    pub root_mtime: i64,
    /// Requests the writer sent to an S3 repository, up to (not including) this manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<Requests>,
}

/// A snapshot reads as its metadata too: `backup.timeline` for `backup.meta.timeline`.
impl<M> Deref for Snapshot<M> {
    type Target = M;
    fn deref(&self) -> &M {
        &self.meta
    }
}

impl<M> DerefMut for Snapshot<M> {
    fn deref_mut(&mut self) -> &mut M {
        &mut self.meta
    }
}

/// The manifest's `requests`: HTTP requests sent, by kind. A format type of its own, so the
/// S3 back end's counters can change without changing manifests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Requests {
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

impl From<RequestCounts> for Requests {
    fn from(c: RequestCounts) -> Requests {
        Requests {
            get: c.get,
            put: c.put,
            head: c.head,
            list: c.list,
            delete: c.delete,
            upload_part: c.upload_part,
            multipart_other: c.multipart_other,
            other: c.other,
            retries: c.retries,
        }
    }
}

impl From<Requests> for RequestCounts {
    fn from(r: Requests) -> RequestCounts {
        RequestCounts {
            get: r.get,
            put: r.put,
            head: r.head,
            list: r.list,
            delete: r.delete,
            upload_part: r.upload_part,
            multipart_other: r.multipart_other,
            other: r.other,
            retries: r.retries,
        }
    }
}

/// A snapshot id from its start time: sortable, readable, and safe as a file name.
pub fn id_for(time: DateTime<Utc>) -> String {
    time.format("%Y%m%dT%H%M%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn ids_sort_by_time() {
        let a = id_for(Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap());
        let b = id_for(Utc.with_ymd_and_hms(2026, 11, 2, 3, 4, 5).unwrap());
        assert_eq!(a, "20260102T030405Z");
        assert!(a < b);
    }

    #[test]
    fn metadata_shares_the_manifest_object() {
        #[derive(Debug, Serialize, Deserialize, PartialEq)]
        struct Meta {
            kind: String,
        }
        let json = serde_json::json!({
            "format": FORMAT, "id": "s1", "kind": "test",
            "start_time": "2026-01-01T00:00:00Z", "stop_time": "2026-01-01T00:00:01Z",
            "label": "", "size_logical": 0, "size_stored_new": 0, "files": 1,
            "chunk_size": 65536, "parent": null,
            "root": {"id": "00".repeat(32), "pack": "11".repeat(32), "offset": 8,
                     "stored_len": 10, "len": 20},
            "root_mode": 448, "root_mtime": 0,
            "requests": {"get": 3, "retries": 1}
        });
        let s: Snapshot<Meta> = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(s.kind, "test");
        assert_eq!(s.requests.unwrap().get, 3);
        let mut again = serde_json::to_value(&s).unwrap();
        let requests = again["requests"].take();
        assert_eq!(requests["retries"], 1);
        assert_eq!(again["kind"], "test");
        assert_eq!(again["root"], json["root"]);
    }
}
