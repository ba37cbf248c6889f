//! A file's bytes mapped read-only from the page cache.
//!
//! `wal-push` reads a 16 MiB segment PostgreSQL has just written, so it is in the page cache.
//! Reading it copies it into fresh memory, one page fault per 4 KiB page; mapping it with
//! `MAP_POPULATE` maps the cached pages in one call and copies nothing.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

/// A read-only, private mapping of a whole file. The file must not shrink while mapped (a
/// read past its new end would fault): PostgreSQL never changes a finished segment, and the
/// spool's files belong to pgsnapfs.
pub struct Mapped {
    ptr: *mut libc::c_void,
    len: usize,
}

// The mapping is read-only and owned: sharing it between threads is sharing a `&[u8]`.
unsafe impl Send for Mapped {}
unsafe impl Sync for Mapped {}

impl Mapped {
    /// Maps the file at `path`.
    pub fn open(path: &Path) -> std::io::Result<Mapped> {
        let file = File::open(path)?;
        let len = usize::try_from(file.metadata()?.len())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::FileTooLarge))?;
        if len == 0 {
            // mmap refuses an empty length; an empty slice needs no mapping.
            return Ok(Mapped {
                ptr: std::ptr::null_mut(),
                len: 0,
            });
        }
        // SAFETY: a fresh private read-only mapping of an open file; checked for failure.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_POPULATE,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Mapped { ptr, len })
    }
}

impl std::ops::Deref for Mapped {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `ptr` maps `len` readable bytes until `drop`.
        unsafe { std::slice::from_raw_parts(self.ptr.cast(), self.len) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: unmaps exactly the mapping made in `open`.
            unsafe { libc::munmap(self.ptr, self.len) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_a_file_and_an_empty_one() {
        let dir = std::env::temp_dir().join(format!("pgsnapfs-mapped-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bytes: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        std::fs::write(dir.join("a"), &bytes).unwrap();
        std::fs::write(dir.join("empty"), b"").unwrap();
        assert_eq!(&*Mapped::open(&dir.join("a")).unwrap(), bytes.as_slice());
        assert!(Mapped::open(&dir.join("empty")).unwrap().is_empty());
        assert!(Mapped::open(&dir.join("missing")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
