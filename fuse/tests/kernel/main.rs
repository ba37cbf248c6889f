//! Tests through a real kernel mount. They need root and /dev/fuse, and fail (never
//! skip) without them; the copy-on-write semantics themselves are unit-tested in `cow`.

// Request sizes; the page cache kept across opens and coherent with writes.
mod cache;
// Mounting a `MemSource` in a fresh temporary directory.
mod common;
// std::fs on the mount behaves like a local disk; read-only mode, allow_other, unmounting.
mod mount;
// FUSE passthrough to local copies: read-only, and adopted as copy-on-write copies.
mod passthrough;
// PostgreSQL 15 initdb, workload, checkpoint and restart on a writable mount.
mod postgres;
