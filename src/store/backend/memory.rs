//! An in-memory back end for unit tests.

use super::{Backend, BackendError, Result};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Objects in a map, lost when dropped; counts ranged reads so tests can see how an object was read.
#[derive(Default)]
pub struct MemoryBackend {
    objects: Mutex<BTreeMap<String, Vec<u8>>>,
    ranged: AtomicUsize,
}

impl MemoryBackend {
    /// `get_range` calls so far, for tests of request economy.
    pub fn ranged_reads(&self) -> usize {
        self.ranged.load(Ordering::Relaxed)
    }

    /// Replaces an object's bytes, as a corruption would.
    pub fn tamper(&self, key: &str, f: impl FnOnce(&mut Vec<u8>)) {
        f(self
            .objects
            .lock()
            .unwrap()
            .get_mut(key)
            .expect("object exists"));
    }
}

impl Backend for MemoryBackend {
    fn location(&self) -> String {
        "memory".into()
    }

    fn get(&self, key: &str) -> Result<Vec<u8>> {
        let objects = self.objects.lock().unwrap();
        objects
            .get(key)
            .cloned()
            .ok_or_else(|| BackendError::NotFound { key: key.into() })
    }

    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.ranged.fetch_add(1, Ordering::Relaxed);
        let data = self.get(key)?;
        let start = (offset as usize).min(data.len());
        let end = (start + len as usize).min(data.len());
        Ok(data[start..end].to_vec())
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        let mut objects = self.objects.lock().unwrap();
        match objects.get(key) {
            Some(existing) if existing == data => Ok(()),
            Some(_) => Err(BackendError::Conflict { key: key.into() }),
            None => {
                objects.insert(key.into(), data.to_vec());
                Ok(())
            }
        }
    }

    fn replace(&self, key: &str, data: &[u8]) -> Result<()> {
        self.objects
            .lock()
            .unwrap()
            .insert(key.into(), data.to_vec());
        Ok(())
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let objects = self.objects.lock().unwrap();
        Ok(objects
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect())
    }

    fn list_after(&self, prefix: &str, start_after: &str) -> Result<Vec<String>> {
        use std::ops::Bound::{Excluded, Unbounded};
        let objects = self.objects.lock().unwrap();
        Ok(objects
            .range::<str, _>((Excluded(start_after), Unbounded))
            .map(|(k, _)| k)
            .skip_while(|k| k.as_str() < prefix)
            .take_while(|k| k.starts_with(prefix))
            .cloned()
            .collect())
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.objects.lock().unwrap().remove(key);
        Ok(())
    }

    fn exists(&self, key: &str) -> Result<bool> {
        Ok(self.objects.lock().unwrap().contains_key(key))
    }

    fn size(&self, key: &str) -> Result<u64> {
        Ok(self.get(key)?.len() as u64)
    }
}
