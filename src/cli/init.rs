//! `pgsnapfs init`

use crate::error::{Error, Result};
use crate::store::{open_backend, Repository};

#[derive(clap::Args)]
pub struct Args {
    /// Chunk size: a multiple of 8K, such as 64K or 1M.
    #[arg(long, default_value = "64K", value_parser = super::parse_size)]
    pub chunk_size: u64,
    /// zstd compression level (1–22).
    #[arg(long, default_value_t = 3)]
    pub compression_level: i32,
}

pub fn run(spec: &str, a: Args) -> Result<()> {
    let path = std::path::Path::new(spec);
    if !spec.contains("://") {
        std::fs::create_dir_all(path).map_err(|e| {
            Error::BadInput(format!("cannot create repository directory {spec}: {e}"))
        })?;
    }
    let repo = Repository::init(
        open_backend(spec)?,
        // Out of range is refused by init.
        u32::try_from(a.chunk_size).unwrap_or(u32::MAX),
        a.compression_level,
    )?;
    println!(
        "created repository {spec} (format {}, {} KiB chunks, zstd level {})",
        repo.config.version,
        repo.config.chunk_size / 1024,
        repo.config.compression_level
    );
    Ok(())
}
