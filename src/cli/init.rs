//! `pgsnapfs init`

use crate::error::{Error, Result};
use crate::store::{open_backend, Repository};

#[derive(clap::Args)]
pub struct Args {
    /// Chunk size: a multiple of 8K, such as 64K or 1M.
    #[arg(long, default_value = "64K", value_parser = parse_size)]
    pub chunk_size: u32,
    /// zstd compression level (1–22).
    #[arg(long, default_value_t = 3)]
    pub compression_level: i32,
}

pub fn parse_size(s: &str) -> std::result::Result<u32, String> {
    let (num, mult) = match s
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        n if n.ends_with('K') => (n[..n.len() - 1].to_string(), 1024),
        n if n.ends_with('M') => (n[..n.len() - 1].to_string(), 1024 * 1024),
        n => (n.to_string(), 1),
    };
    num.parse::<u32>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("{s:?} is not a size such as 64K"))
}

pub fn run(spec: &str, a: Args) -> Result<()> {
    let path = std::path::Path::new(spec);
    if !spec.contains("://") {
        std::fs::create_dir_all(path).map_err(|e| {
            Error::BadInput(format!("cannot create repository directory {spec}: {e}"))
        })?;
    }
    let repo = Repository::init(open_backend(spec)?, a.chunk_size, a.compression_level)?;
    println!(
        "created repository {spec} (format {}, {} KiB chunks, zstd level {})",
        repo.config.version,
        repo.config.chunk_size / 1024,
        repo.config.compression_level
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes() {
        assert_eq!(super::parse_size("64K"), Ok(65536));
        assert_eq!(super::parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(super::parse_size("8192"), Ok(8192));
        assert!(super::parse_size("lots").is_err());
    }
}
