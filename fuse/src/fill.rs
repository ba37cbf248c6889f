//! Hydration of a writable layer: copying every byte of a file the layer shows into its
//! data file, so that the file no longer needs the source. Blocks written before are kept;
//! the others get the source's bytes. In a durable layer the filled blocks are journaled
//! as written blocks (synced as they go), so a crash or a remount keeps what was filled
//! and a later pass copies only the rest.

use std::path::Path;
use std::sync::{Arc, PoisonError};

use crate::cow::Overlay;
use crate::Error;

/// Bytes copied per step: the file's lock is held for one step at a time.
const STEP: u64 = 1 << 20;
/// Bytes filled between syncs of a durable layer: what a crash may make a later pass copy
/// again.
const SYNC_EVERY: u64 = 64 << 20;

/// Fills files of a mounted writable layer (see [`crate::MountHandle::filler`]).
#[derive(Clone)]
pub struct Filler {
    pub(crate) overlay: Arc<Overlay>,
}

/// What one [`Filler::fill`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Filled {
    /// Bytes copied from the source in this pass.
    pub copied: u64,
    /// Every byte of the file is now in the layer (or the path is no regular file).
    pub complete: bool,
}

impl Filler {
    /// Runs `step` unless the layer is closed, holding it open meanwhile.
    fn gated<T>(&self, step: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
        let closed = self
            .overlay
            .closed
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        if *closed {
            return Err(Error::new(libc::ESHUTDOWN, "unmounted"));
        }
        step()
    }

    /// Fills the regular file at `path` (relative to the root). `pace` hears of the bytes
    /// copied after each step and answers whether to go on; when it says no, the pass
    /// stops (synced) with `complete` false.
    pub fn fill(&self, path: &Path, pace: &mut dyn FnMut(u64) -> bool) -> Result<Filled, Error> {
        let Some(file) = self.overlay.file_at(path)? else {
            return Ok(Filled {
                copied: 0,
                complete: true,
            });
        };
        let blocks = (STEP / u64::from(self.overlay.block_size()).max(1)).max(1);
        let (mut next, mut copied, mut unsynced) = (Some(0), 0, 0);
        while let Some(from) = next {
            let bytes = self.gated(|| {
                let (after, bytes) = file.fill(self.overlay.source(), from, blocks)?;
                next = after;
                unsynced += bytes;
                if next.is_none() || unsynced >= SYNC_EVERY {
                    file.sync(true)?;
                    unsynced = 0;
                }
                Ok(bytes)
            })?;
            copied += bytes;
            // Paced outside the gate: a wait for the rate never holds up an unmount.
            if !pace(bytes) && next.is_some() {
                self.gated(|| file.sync(true))?;
                return Ok(Filled {
                    copied,
                    complete: false,
                });
            }
        }
        if copied == 0 {
            // Nothing to fill; still, what was filled before must be on disk.
            self.gated(|| file.sync(true))?;
        }
        Ok(Filled {
            copied,
            complete: true,
        })
    }
}
