//! The packer: groups blobs into packs of about `target` bytes and writes each when full.

use super::pack::{BlobType, PackWriter};
use super::tree::Loc;
use super::{keys, BlobId, PackId, Repository, StoreError};

/// Collects blobs into packs of about `target` bytes and writes each pack once full (or at [`Packer::flush`]); a blob's location is known as soon as it is added, durable once its pack is written.
pub struct Packer<'a> {
    repo: &'a Repository,
    target: usize,
    current: Option<(PackId, PackWriter)>,
    /// Bytes of packs written so far, the "newly stored" figure of a backup.
    pub bytes_written: u64,
    /// Number of packs written so far.
    pub packs_written: u64,
}

/// 32 random bytes, as an id: for names that must not collide (repositories, leases).
pub fn random_id() -> BlobId {
    BlobId(PackId::random().0)
}

impl<'a> Packer<'a> {
    /// A packer writing to `repo`, closing packs at about `target` bytes.
    pub fn new(repo: &'a Repository, target: usize) -> Packer<'a> {
        Packer {
            repo,
            target,
            current: None,
            bytes_written: 0,
            packs_written: 0,
        }
    }

    /// Adds an encoded blob (see `Crypto::encode_blob`) and returns where it will be.
    pub fn add(
        &mut self,
        id: BlobId,
        kind: BlobType,
        stored: &[u8],
        len: u32,
    ) -> Result<Loc, StoreError> {
        let (pack, writer) = self
            .current
            .get_or_insert_with(|| (PackId::random(), PackWriter::new()));
        let e = writer.add(id, kind, stored, len);
        let loc = Loc {
            pack: *pack,
            offset: e.offset,
            stored_len: e.stored_len,
        };
        if writer.size() >= self.target {
            self.flush()?;
        }
        Ok(loc)
    }

    /// Encodes and adds a blob.
    pub fn add_blob(
        &mut self,
        kind: BlobType,
        data: &[u8],
    ) -> Result<super::tree::BlobRef, StoreError> {
        let crypto = self.repo.crypto();
        let id = crypto.id(data);
        let stored = crypto.encode_blob(&id, data, self.repo.config.compression_level);
        let loc = self.add(id, kind, &stored, data.len() as u32)?;
        Ok(super::tree::BlobRef {
            id,
            loc,
            len: data.len() as u32,
        })
    }

    /// Writes the open pack, if any. After this every returned `Loc` is durable.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        if let Some((id, writer)) = self.current.take() {
            let key = keys::pack(&id);
            let (bytes, _) = writer.finish(|t| self.repo.crypto().seal_table(&key, t));
            self.repo.backend().put(&key, &bytes)?;
            self.bytes_written += bytes.len() as u64;
            self.packs_written += 1;
        }
        Ok(())
    }
}
