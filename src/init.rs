//! Creating a repository: for a local one, its top directory first, with its owner and mode.

use crate::error::{Error, Result};
use crate::store::backend::user_name;
use crate::store::{open_backend, Repository};
use crate::view::Owner;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use zeroize::Zeroizing;

/// How to create a repository.
pub struct InitOptions {
    /// Chunk size in bytes (a multiple of 8 KiB; others are refused).
    pub chunk_size: u64,
    /// zstd level for new packs.
    pub compression_level: i32,
    /// The user who owns a local repository (only root may name another user).
    pub owner: Option<String>,
    /// Encrypts the repository under this passphrase.
    pub passphrase: Option<Zeroizing<Vec<u8>>>,
}

/// A repository just created.
pub struct Created {
    /// The repository, open.
    pub repo: Repository,
    /// The owner of a local repository's top directory (mode 0700).
    pub owner: Option<String>,
}

/// Creates the repository at `spec`.
pub fn create(spec: &str, o: &InitOptions) -> Result<Created> {
    let path = Path::new(spec);
    let mut owned_by = None;
    if !spec.contains("://") {
        let owner = match &o.owner {
            Some(name) => Some(Owner::lookup(name)?),
            None => None,
        };
        if let Some((who, name)) = owner.zip(o.owner.as_deref()) {
            if who.uid != Owner::me().uid && Owner::me().uid != 0 {
                return Err(Error::BadInput(format!(
                    "only root can create a repository for another user: run init as {name}"
                )));
            }
        }
        owned_by = Some(user_name(create_top(path, owner)?));
    } else if o.owner.is_some() {
        return Err(Error::BadInput(
            "--owner is for a local repository; an S3 repository's access is the bucket's".into(),
        ));
    }
    let chunk_size = crate::catalog::chunk_size(o.chunk_size)?;
    let backend = open_backend(spec)?;
    let repo = match &o.passphrase {
        Some(p) => Repository::init_encrypted(backend, chunk_size, o.compression_level, p)?,
        None => Repository::init(backend, chunk_size, o.compression_level)?,
    };
    Ok(Created {
        repo,
        owner: owned_by,
    })
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
