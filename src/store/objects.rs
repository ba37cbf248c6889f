//! Typed operations on the store's own objects (packs, snapshots, keep marks, trash records,
//! leases), so commands neither spell keys nor parse listings: the layout stays in `keys`.

use super::pack::{self, Entry};
use super::{keys, PackId, Repository, StoreError};

/// A listing of `packs/`: the packs, in key order, and how many keys there name no pack.
#[derive(Debug, Default)]
pub struct PackListing {
    /// The packs' ids, in key order.
    pub ids: Vec<PackId>,
    /// How many keys under `packs/` are not a pack name (left there by something else).
    pub strays: usize,
}

impl Repository {
    /// Every pack in the repository.
    pub fn packs(&self) -> Result<PackListing, StoreError> {
        let mut out = PackListing::default();
        for key in self.backend().list(keys::PACKS)? {
            match key.rsplit('/').next().and_then(PackId::from_hex) {
                Some(id) => out.ids.push(id),
                None => out.strays += 1,
            }
        }
        Ok(out)
    }

    /// A pack's size in bytes.
    pub fn pack_size(&self, id: &PackId) -> Result<u64, StoreError> {
        Ok(self.backend().size(&keys::pack(id))?)
    }

    /// A pack's entry table (what it holds), read from its end without its blobs.
    pub fn pack_entries(&self, id: &PackId) -> Result<Vec<Entry>, StoreError> {
        let key = keys::pack(id);
        let size = self.backend().size(&key)?;
        if size < (pack::MAGIC.len() + pack::TAIL_LEN) as u64 {
            return Err(StoreError::corrupt(key, "pack too short"));
        }
        let tail_at = size - pack::TAIL_LEN as u64;
        let tail = self
            .backend()
            .get_range(&key, tail_at, pack::TAIL_LEN as u64)?;
        let count = pack::parse_tail(&tail, &key)?;
        let start = pack::table_start(size, count, self.crypto().table_overhead(), &key)?;
        let stored = self.backend().get_range(&key, start, tail_at - start)?;
        let table = self.crypto().open_table(&key, &stored)?;
        pack::parse_entries(&table, start, &key)
    }

    /// A whole pack, as stored.
    pub fn read_pack(&self, id: &PackId) -> Result<Vec<u8>, StoreError> {
        Ok(self.backend().get(&keys::pack(id))?)
    }

    /// Deletes a pack; one already gone is deleted too.
    pub fn delete_pack(&self, id: &PackId) -> Result<(), StoreError> {
        match self.backend().delete(&keys::pack(id)) {
            Err(e) if !e.is_not_found() => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Whether the manifest of snapshot `id` exists.
    pub fn snapshot_exists(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.backend().exists(&keys::snapshot(id))?)
    }

    /// Deletes a snapshot's manifest: the snapshot disappears at once.
    pub fn delete_snapshot(&self, id: &str) -> Result<(), StoreError> {
        Ok(self.backend().delete(&keys::snapshot(id))?)
    }

    /// The snapshots marked to keep.
    pub fn keep_marks(&self) -> Result<Vec<String>, StoreError> {
        Ok(self
            .backend()
            .list(keys::KEEP)?
            .into_iter()
            .map(|k| k.trim_start_matches(keys::KEEP).to_string())
            .collect())
    }

    /// Whether snapshot `id` carries a keep mark.
    pub fn has_keep_mark(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.backend().exists(&keys::keep(id))?)
    }

    /// Writes the mark that keeps snapshot `id`, with `payload` as its record.
    pub fn put_keep_mark(&self, id: &str, payload: &[u8]) -> Result<(), StoreError> {
        self.put_sealed(&keys::keep(id), payload)
    }

    /// Deletes the keep mark of snapshot `id`, letting expiry consider it again.
    pub fn delete_keep_mark(&self, id: &str) -> Result<(), StoreError> {
        Ok(self.backend().delete(&keys::keep(id))?)
    }

    /// The keys of every trash record.
    pub fn trash_records(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.backend().list(keys::TRASH)?)
    }

    /// Deletes the trash record of gc run `run`.
    pub fn delete_trash(&self, run: &str) -> Result<(), StoreError> {
        Ok(self.backend().delete(&keys::trash(run))?)
    }

    /// The keys of every lease.
    pub fn lease_keys(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.backend().list(keys::LOCKS)?)
    }

    /// Deletes a lease by its key; one already gone is deleted too.
    pub fn delete_lease(&self, key: &str) -> Result<(), StoreError> {
        match self.backend().delete(key) {
            Err(e) if !e.is_not_found() => Err(e.into()),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::backend::memory::MemoryBackend;
    use super::super::pack::BlobType;
    use super::super::{Backend, Packer};
    use super::*;
    use std::sync::Arc;

    #[test]
    fn packs_listed_with_strays_counted_and_deleted_twice() {
        let mem = Arc::new(MemoryBackend::default());
        let repo = Repository::init(mem.clone(), 65536, 3).unwrap();
        let mut packer = Packer::new(&repo, 1 << 20);
        let r = packer.add_blob(BlobType::Data, &[3u8; 1000]).unwrap();
        packer.flush().unwrap();
        mem.put("packs/zz/not-a-pack", b"x").unwrap();
        let listed = repo.packs().unwrap();
        assert_eq!(listed.ids, vec![r.loc.pack]);
        assert_eq!(listed.strays, 1);
        assert_eq!(
            repo.pack_size(&r.loc.pack).unwrap(),
            repo.read_pack(&r.loc.pack).unwrap().len() as u64
        );
        repo.delete_pack(&r.loc.pack).unwrap();
        repo.delete_pack(&r.loc.pack).unwrap();
        assert!(repo.packs().unwrap().ids.is_empty());
    }

    #[test]
    fn keep_marks_round_trip() {
        let repo = Repository::init(Arc::new(MemoryBackend::default()), 65536, 3).unwrap();
        assert!(!repo.has_keep_mark("b1").unwrap());
        repo.put_keep_mark("b1", b"{}").unwrap();
        assert!(repo.has_keep_mark("b1").unwrap());
        assert_eq!(repo.keep_marks().unwrap(), vec!["b1"]);
        repo.delete_keep_mark("b1").unwrap();
        assert!(repo.keep_marks().unwrap().is_empty());
    }
}
