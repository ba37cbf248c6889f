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
    /// Encrypt the repository (XChaCha20-Poly1305, keyed chunk ids); the passphrase comes
    /// from PGSNAPFS_PASSPHRASE, --passphrase-file or --passphrase-command.
    #[arg(long)]
    pub encryption: bool,
}

pub fn run(spec: &str, a: Args, pass: &super::key::PassphraseArgs) -> Result<()> {
    // Read before anything is created: a missing passphrase leaves no empty directory.
    let passphrase = if a.encryption {
        Some(pass.read(spec)?)
    } else {
        None
    };
    let path = std::path::Path::new(spec);
    if !spec.contains("://") {
        std::fs::create_dir_all(path).map_err(|e| {
            Error::BadInput(format!("cannot create repository directory {spec}: {e}"))
        })?;
    }
    // Out of range is refused by init.
    let chunk_size = u32::try_from(a.chunk_size).unwrap_or(u32::MAX);
    let backend = open_backend(spec)?;
    let repo = match &passphrase {
        Some(p) => Repository::init_encrypted(backend, chunk_size, a.compression_level, p)?,
        None => Repository::init(backend, chunk_size, a.compression_level)?,
    };
    outln!(
        "created {}repository {spec} (format {}, {} KiB chunks, zstd level {})",
        if passphrase.is_some() {
            "encrypted "
        } else {
            ""
        },
        repo.config.version,
        repo.config.chunk_size / 1024,
        repo.config.compression_level
    );
    Ok(())
}
