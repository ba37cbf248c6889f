//! `pgsnapfs init`

use crate::error::Result;
use crate::init::InitOptions;

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
    /// The user who owns a local repository (root may give it to another user, such as
    /// postgres): every command then writes as this user, root on its behalf. Defaults to
    /// the owner of an existing empty directory, else the user running init.
    #[arg(long, value_name = "USER")]
    pub owner: Option<String>,
}

pub fn run(spec: &str, a: Args, pass: &super::key::PassphraseArgs) -> Result<()> {
    // Read before anything is created: a missing passphrase leaves no empty directory.
    let passphrase = if a.encryption {
        Some(pass.read(spec)?)
    } else {
        None
    };
    let created = crate::init::create(
        spec,
        &InitOptions {
            chunk_size: a.chunk_size,
            compression_level: a.compression_level,
            owner: a.owner,
            passphrase,
        },
    )?;
    let repo = &created.repo;
    outln!(
        "created {}repository {spec} (format {}, {} KiB chunks, zstd level {}){}",
        if repo.crypto().is_encrypted() {
            "encrypted "
        } else {
            ""
        },
        repo.config.version,
        repo.config.chunk_size / 1024,
        repo.config.compression_level,
        created
            .owner
            .map(|name| format!(", owned by {name}, mode 0700"))
            .unwrap_or_default()
    );
    Ok(())
}
