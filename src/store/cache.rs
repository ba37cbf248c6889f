//! A bounded LRU of decoded objects by id, where concurrent misses of one id share one fetch.
//!
//! The file reader keeps what is read whole and read again in it: chunk lists, and sealed
//! objects (archived WAL) that a reader takes in 1 MiB pieces. Chunk contents are never kept
//! here: the kernel's page cache holds file pages (see `reader`).
//! Memory: at most `capacity` bytes of values (by [`Weigh`]) plus about 80 bytes per entry.

use super::BlobId;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

/// What a cached value costs in memory, in bytes.
pub trait Weigh {
    /// Bytes held.
    fn weight(&self) -> usize;
}

impl<T> Weigh for Vec<T> {
    fn weight(&self) -> usize {
        self.len() * std::mem::size_of::<T>()
    }
}

type Flight<V, E> = Arc<OnceLock<Result<Arc<V>, E>>>;

struct Lru<V> {
    map: HashMap<BlobId, (Arc<V>, u64)>,
    order: BTreeMap<u64, BlobId>,
    tick: u64,
    bytes: usize,
}

/// Its locks recover from poisoning: a mount serves on after a request panicked, and no
/// update under them can panic halfway.
pub struct BlobCache<V, E> {
    capacity: usize,
    lru: Mutex<Lru<V>>,
    inflight: Mutex<HashMap<BlobId, Flight<V, E>>>,
}

impl<V: Weigh, E: Clone> BlobCache<V, E> {
    /// An empty cache holding at most `capacity` bytes of values; a larger one is never kept.
    pub fn new(capacity: usize) -> Self {
        BlobCache {
            capacity,
            lru: Mutex::new(Lru {
                map: HashMap::new(),
                order: BTreeMap::new(),
                tick: 0,
                bytes: 0,
            }),
            inflight: Mutex::new(HashMap::new()),
        }
    }

    /// The cached blob, marked most recently used; `None` on a miss (nothing is fetched).
    pub fn get(&self, id: &BlobId) -> Option<Arc<V>> {
        let mut lru = self.lru.lock().unwrap_or_else(PoisonError::into_inner);
        let lru = &mut *lru;
        lru.tick += 1;
        let tick = lru.tick;
        let (data, old) = lru.map.get_mut(id)?;
        lru.order.remove(old);
        *old = tick;
        lru.order.insert(tick, *id);
        Some(data.clone())
    }

    /// Bytes of values held now (never above the capacity).
    pub fn bytes(&self) -> usize {
        self.lru
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .bytes
    }

    fn insert(&self, id: BlobId, data: Arc<V>) {
        let mut lru = self.lru.lock().unwrap_or_else(PoisonError::into_inner);
        let lru = &mut *lru;
        if lru.map.contains_key(&id) || data.weight() > self.capacity {
            return;
        }
        lru.tick += 1;
        lru.bytes += data.weight();
        lru.order.insert(lru.tick, id);
        lru.map.insert(id, (data, lru.tick));
        while lru.bytes > self.capacity {
            let Some((_, victim)) = lru.order.pop_first() else {
                break;
            };
            if let Some((d, _)) = lru.map.remove(&victim) {
                lru.bytes -= d.weight();
            }
        }
    }

    /// The cached blob, or the result of `fetch`, run once however many threads ask at once.
    /// Errors are not cached: the next caller tries again.
    pub fn get_or_fetch(
        &self,
        id: &BlobId,
        fetch: impl FnOnce() -> Result<V, E>,
    ) -> Result<Arc<V>, E> {
        if let Some(hit) = self.get(id) {
            return Ok(hit);
        }
        let flight = self
            .inflight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(*id)
            .or_default()
            .clone();
        let result = flight.get_or_init(|| fetch().map(Arc::new)).clone();
        // Cache before retiring the flight, so a late caller finds one or the other.
        if let Ok(data) = &result {
            self.insert(*id, data.clone());
        }
        let mut inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
        if inflight.get(id).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
            inflight.remove(id);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn evicts_least_recently_used_within_capacity() {
        let c: BlobCache<Vec<u8>, ()> = BlobCache::new(10);
        let (a, b, d) = (BlobId::of(b"a"), BlobId::of(b"b"), BlobId::of(b"d"));
        c.get_or_fetch(&a, || Ok(vec![0; 4])).unwrap();
        c.get_or_fetch(&b, || Ok(vec![0; 4])).unwrap();
        assert!(c.get(&a).is_some()); // a is now the most recent
        c.get_or_fetch(&d, || Ok(vec![0; 4])).unwrap();
        assert!(c.get(&b).is_none(), "b was least recently used");
        assert!(c.get(&a).is_some() && c.get(&d).is_some());
        assert_eq!(c.bytes(), 8);
        c.get_or_fetch(&BlobId::of(b"big"), || Ok(vec![0; 11]))
            .unwrap();
        assert_eq!(c.bytes(), 8, "a value above the capacity is not kept");
    }

    #[test]
    fn concurrent_misses_share_one_fetch_and_errors_are_not_cached() {
        let c: Arc<BlobCache<Vec<u8>, String>> = Arc::new(BlobCache::new(1 << 20));
        let calls = Arc::new(AtomicUsize::new(0));
        let id = BlobId::of(b"x");
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (c, calls) = (c.clone(), calls.clone());
                std::thread::spawn(move || {
                    c.get_or_fetch(&id, || {
                        calls.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(50));
                        Ok(vec![1; 100])
                    })
                    .unwrap()
                })
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap().len(), 100);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let bad = BlobId::of(b"bad");
        assert!(c.get_or_fetch(&bad, || Err("boom".to_string())).is_err());
        assert!(
            c.get_or_fetch(&bad, || Ok(vec![2])).is_ok(),
            "an error must not stick"
        );
    }
}
