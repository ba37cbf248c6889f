//! Kill points, a test aid for tests/crash_injection.rs: with `PGSNAPFS_KILL_AT=put:N` the
//! process sends itself SIGKILL just before its N-th `put` starts, with `put-done:N` just
//! after it published its object (likewise `replace`, `delete`; each kind counted on its
//! own, as a lease's timed refresh replaces but never puts or deletes; `file:N` after the N-th
//! local file a command wrote, see [`file_written`]). A real SIGKILL, so
//! nothing is flushed or cleaned up. `PGSNAPFS_KILL_AT=count` prints each point passed, as
//! `kill point put:N KEY`, so a test can enumerate every point of a command. Unset, `wrap`
//! returns the back end untouched. Release builds ignore the variable (with a warning), so a
//! stray setting cannot kill a production run; the tests run the debug binary.

use super::{Backend, RequestCounts, Result};
use crate::store::StoreError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const ENV: &str = "PGSNAPFS_KILL_AT";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Count,
    /// Die on passing this point: `put:3` is `("put", 3)`.
    Kill(&'static str, u64),
}

/// The points, in the spelling `PGSNAPFS_KILL_AT` takes.
const POINTS: [&str; 7] = [
    "put",
    "put-done",
    "replace",
    "replace-done",
    "delete",
    "delete-done",
    "file",
];

fn parse(value: &str) -> Option<Mode> {
    if value == "count" {
        return Some(Mode::Count);
    }
    let (point, n) = value.split_once(':')?;
    let point = POINTS.into_iter().find(|p| *p == point)?;
    Some(Mode::Kill(point, n.parse().ok().filter(|n| *n > 0)?))
}

/// Puts, replaces and deletes of the whole process (a command may open its back end more than once).
static PUTS: AtomicU64 = AtomicU64::new(0);
static REPLACES: AtomicU64 = AtomicU64::new(0);
static DELETES: AtomicU64 = AtomicU64::new(0);
/// Local files written (`file`: `restore --delta`, after each file it changed).
static FILES: AtomicU64 = AtomicU64::new(0);

/// Point `file:N`: a command has just written its N-th local file, `path`.
pub fn file_written(path: &std::path::Path) {
    static MODE: std::sync::OnceLock<Option<Mode>> = std::sync::OnceLock::new();
    let mode = MODE.get_or_init(|| {
        let value = std::env::var_os(ENV).map(|v| v.to_string_lossy().into_owned());
        setting(value.as_deref(), cfg!(debug_assertions))
            .ok()
            .flatten()
    });
    if let Some(mode) = mode {
        let n = FILES.fetch_add(1, Ordering::SeqCst) + 1;
        pass(*mode, "file", n, &path.display().to_string());
    }
}

fn pass(mode: Mode, point: &'static str, n: u64, key: &str) {
    match mode {
        Mode::Count => eprintln!("kill point {point}:{n} {key}"),
        Mode::Kill(p, at) if p == point && at == n => {
            // SAFETY: kill(2) on our own pid has no memory-safety preconditions.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        }
        Mode::Kill(..) => {}
    }
}

/// What a build does with `PGSNAPFS_KILL_AT=value`: a value it cannot use is an error, so a
/// mistyped test does not silently test nothing; a release build has no kill points.
fn setting(value: Option<&str>, debug_build: bool) -> std::result::Result<Option<Mode>, String> {
    match value {
        None => Ok(None),
        Some(value) if !debug_build => Err(format!(
            "{ENV}={value:?} ignored: kill points exist in debug builds only"
        )),
        Some(value) => parse(value).map(Some).ok_or_else(|| {
            format!(
                "{ENV}={value:?}: expected count, or one of {POINTS:?}, ':' and a number from 1"
            )
        }),
    }
}

/// `backend` with kill points if `PGSNAPFS_KILL_AT` is set (debug builds only).
pub fn wrap(backend: Arc<dyn Backend>) -> std::result::Result<Arc<dyn Backend>, StoreError> {
    let value = std::env::var_os(ENV).map(|v| v.to_string_lossy().into_owned());
    let debug_build = cfg!(debug_assertions);
    let mode = match setting(value.as_deref(), debug_build) {
        Ok(None) => return Ok(backend),
        Ok(Some(mode)) => mode,
        Err(message) if !debug_build => {
            tracing::warn!("{message}");
            return Ok(backend);
        }
        Err(message) => return Err(StoreError::BadSetting(message)),
    };
    Ok(Arc::new(KillPoints {
        inner: backend,
        mode,
    }))
}

struct KillPoints {
    inner: Arc<dyn Backend>,
    mode: Mode,
}

impl KillPoints {
    fn pass(&self, point: &'static str, n: u64, key: &str) {
        pass(self.mode, point, n, key)
    }

    /// Runs `op` as the next operation counted by `counter`, between its two points.
    fn around<T>(
        &self,
        counter: &AtomicU64,
        [before, done]: [&'static str; 2],
        key: &str,
        op: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        self.pass(before, n, key);
        let out = op()?;
        self.pass(done, n, key);
        Ok(out)
    }
}

impl Backend for KillPoints {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn get(&self, key: &str) -> Result<Vec<u8>> {
        self.inner.get(key)
    }
    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.inner.get_range(key, offset, len)
    }
    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        self.around(&PUTS, ["put", "put-done"], key, || {
            self.inner.put(key, data)
        })
    }
    fn put_new(&self, key: &str, data: &[u8]) -> Result<bool> {
        self.around(&PUTS, ["put", "put-done"], key, || {
            self.inner.put_new(key, data)
        })
    }
    fn replace(&self, key: &str, data: &[u8]) -> Result<()> {
        self.around(&REPLACES, ["replace", "replace-done"], key, || {
            self.inner.replace(key, data)
        })
    }
    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        self.inner.list(prefix)
    }
    fn list_after(&self, prefix: &str, start_after: &str) -> Result<Vec<String>> {
        self.inner.list_after(prefix, start_after)
    }
    fn delete(&self, key: &str) -> Result<()> {
        self.around(&DELETES, ["delete", "delete-done"], key, || {
            self.inner.delete(key)
        })
    }
    fn exists(&self, key: &str) -> Result<bool> {
        self.inner.exists(key)
    }
    fn size(&self, key: &str) -> Result<u64> {
        self.inner.size(key)
    }
    fn stats(&self) -> Option<RequestCounts> {
        self.inner.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values() {
        assert_eq!(parse("count"), Some(Mode::Count));
        assert_eq!(parse("put:3"), Some(Mode::Kill("put", 3)));
        assert_eq!(parse("delete-done:12"), Some(Mode::Kill("delete-done", 12)));
        assert_eq!(parse("replace:2"), Some(Mode::Kill("replace", 2)));
        for bad in ["", "put", "put:0", "put:x", "get:1", "put-done", "count:1"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn settings_by_build() {
        assert_eq!(setting(None, true), Ok(None));
        assert_eq!(setting(None, false), Ok(None));
        assert_eq!(setting(Some("put:2"), true), Ok(Some(Mode::Kill("put", 2))));
        let bad = setting(Some("put:zero"), true).unwrap_err();
        assert!(bad.contains("\"put:zero\": expected count"), "{bad}");
        let release = setting(Some("put:2"), false).unwrap_err();
        assert!(release.contains("debug builds only"), "{release}");
    }
}
