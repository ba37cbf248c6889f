//! `pgsnapfs init`

use crate::error::{Error, Result};
use crate::store::backend::user_name;
use crate::store::{open_backend, Repository};
use crate::view::Owner;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

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
    let path = std::path::Path::new(spec);
    let mut owned_by = String::new();
    if !spec.contains("://") {
        let owner = match &a.owner {
            Some(name) => Some(Owner::lookup(name)?),
            None => None,
        };
        if let Some((o, name)) = owner.zip(a.owner.as_deref()) {
            if o.uid != Owner::me().uid && Owner::me().uid != 0 {
                return Err(Error::BadInput(format!(
                    "only root can create a repository for another user: run init as {name}"
                )));
            }
        }
        owned_by = format!(
            ", owned by {}, mode 0700",
            user_name(create_top(path, owner)?)
        );
    } else if a.owner.is_some() {
        return Err(Error::BadInput(
            "--owner is for a local repository; an S3 repository's access is the bucket's".into(),
        ));
    }
    let chunk_size = crate::catalog::chunk_size(a.chunk_size)?;
    let backend = open_backend(spec)?;
    let repo = match &passphrase {
        Some(p) => Repository::init_encrypted(backend, chunk_size, a.compression_level, p)?,
        None => Repository::init(backend, chunk_size, a.compression_level)?,
    };
    outln!(
        "created {}repository {spec} (format {}, {} KiB chunks, zstd level {}){owned_by}",
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

/// Creates the top directory of a local repository (or takes an empty one) with mode 0700,
/// owned by `owner` if given, else by the user running init for a new directory and by its
/// owner for an existing one (prepared for postgres, say). Everything written below it
/// follows its owner and mode; group access is granted by changing them after init.
/// Returns the owner's uid.
fn create_top(path: &Path, owner: Option<Owner>) -> Result<u32> {
    let bad = |what: &str, e: std::io::Error| {
        Error::BadInput(format!(
            "cannot {what} repository directory {}: {e}",
            path.display()
        ))
    };
    let owner = match (owner, path.exists()) {
        (Some(o), _) => Some(o),
        (None, true) => None,
        (None, false) => Some(Owner::me()),
    };
    std::fs::create_dir_all(path).map_err(|e| bad("create", e))?;
    // An existing directory that is not empty is refused by Repository::init, before this
    // would change it.
    let empty = std::fs::read_dir(path)
        .map_err(|e| bad("read", e))?
        .next()
        .is_none();
    if empty {
        if let Some(o) = owner {
            std::os::unix::fs::chown(path, Some(o.uid), Some(o.gid))
                .map_err(|e| bad("give the", e))?;
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| bad("set the mode of the", e))?;
    }
    Ok(std::fs::metadata(path).map_err(|e| bad("read", e))?.uid())
}
