//! `backup.manifest`: what one pgBackRest backup holds and where each file's bytes are.

use super::compress::Compress;
use super::ini::{decode, Ini};
use super::Error;
use crate::pg::lsn::Lsn;
use serde::Deserialize;

/// A backup's manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The backup's label (its directory).
    pub label: String,
    /// `full`, `diff` or `incr`.
    pub kind: String,
    /// The backup a diff or incr was taken against.
    pub prior: Option<String>,
    /// The backups its files may be in, this one last: block maps number them from 0.
    pub references: Vec<String>,
    /// Where replay starts (pg_backup_start's LSN).
    pub lsn_start: Lsn,
    /// Where the backup is consistent (pg_backup_stop's LSN).
    pub lsn_stop: Lsn,
    /// The WAL segment holding `lsn_start`.
    pub archive_start: String,
    /// The WAL segment holding `lsn_stop`.
    pub archive_stop: String,
    /// Start and stop, in seconds since the epoch.
    pub timestamp_start: i64,
    /// See `timestamp_start`.
    pub timestamp_stop: i64,
    /// The cluster's system identifier.
    pub system_id: u64,
    /// Its PostgreSQL version, as pgBackRest spells it ("15").
    pub pg_version: String,
    /// The stanza's db id of the cluster (its WAL's archive id is `<version>-<db id>`).
    pub db_id: u32,
    /// How this backup's own files are compressed.
    pub compress: Compress,
    /// The passphrase of this backup's files, in an encrypted repository.
    pub cipher_pass: Option<String>,
    /// Whether files in bundles are in the "raw" format (backups with block incremental).
    pub bundle_raw: bool,
    /// Tablespaces: OID and location on the backed-up host.
    pub tablespaces: Vec<(u32, String)>,
    /// The files, in manifest (path) order.
    pub files: Vec<File>,
    /// The directories, with their modes.
    pub paths: Vec<(String, u32)>,
}

/// How a backup stores its files: the compression, and the passphrase if encrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Storage {
    /// The compression of every file.
    pub compress: Compress,
    /// The passphrase of every file, in an encrypted repository.
    pub cipher_pass: Option<String>,
    /// Whether bundled files are in the "raw" format (see [`Compress::raw_decoder`]).
    pub bundle_raw: bool,
}

/// One file of a backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    /// Its manifest name: `pg_data/...` or `pg_tblspc/<oid>/...`.
    pub name: String,
    /// Its length.
    pub size: u64,
    /// The SHA-1 of its content (absent for an empty file, which has no repository object).
    pub checksum: Option<String>,
    /// The earlier backup that holds it; `None`: this one.
    pub reference: Option<String>,
    /// In a bundle: the bundle's id and the offset in it.
    pub bundle: Option<(u64, u64)>,
    /// Its stored (compressed) length.
    pub repo_size: u64,
    /// Its mtime.
    pub timestamp: i64,
    /// Its permission bits.
    pub mode: u32,
    /// Stored block-incrementally (`repo-block=y`): its block map's shape.
    pub block_incremental: Option<BlockIncr>,
}

/// How a block-incremental file is stored: blocks of `block_size` bytes grouped in super
/// blocks, some in this backup, some in earlier ones, found through the block map stored at
/// the end of the file's own object (its last `map_size` bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockIncr {
    /// Bytes per block.
    pub block_size: u64,
    /// Bytes of each block's checksum in the map.
    pub checksum_size: usize,
    /// Bytes of the map.
    pub map_size: u64,
}

/// The largest block size accepted (pgBackRest's largest is 56 KiB): a bigger one is damage.
const BLOCK_INCR_SIZE_MAX: u64 = 1 << 20;
/// The largest block checksum accepted (pgBackRest's are at most a SHA-1's 20 bytes).
const BLOCK_INCR_CHECKSUM_SIZE_MAX: usize = 20;

/// A block-incremental file's shape from its `bi`, `bic` and `bim` fields, checked: a block
/// size of 0 or a checksum of no bytes would make reading it loop or divide by zero.
fn block_incr(
    bi: u64,
    bic: Option<usize>,
    bim: u64,
    name: &str,
    object: &str,
) -> Result<BlockIncr, Error> {
    let checksum_size = bic.unwrap_or(BLOCK_INCR_CHECKSUM_SIZE_MIN);
    let block_size = bi
        .checked_mul(BLOCK_INCR_SIZE_FACTOR)
        .filter(|b| (1..=BLOCK_INCR_SIZE_MAX).contains(b));
    match block_size {
        Some(block_size) if (1..=BLOCK_INCR_CHECKSUM_SIZE_MAX).contains(&checksum_size) => {
            Ok(BlockIncr {
                block_size,
                checksum_size,
                map_size: bim,
            })
        }
        _ => Err(Error::corrupt(
            object,
            format!("{name}: block size \"bi\" {bi} or checksum size \"bic\" {checksum_size}"),
        )),
    }
}

/// pgBackRest records block sizes in units of 8 KiB.
const BLOCK_INCR_SIZE_FACTOR: u64 = 8192;
/// The checksum size when a manifest records none.
const BLOCK_INCR_CHECKSUM_SIZE_MIN: usize = 6;

#[derive(Deserialize)]
struct FileJson {
    size: u64,
    checksum: Option<String>,
    reference: Option<String>,
    bni: Option<u64>,
    bno: Option<u64>,
    #[serde(rename = "repo-size")]
    repo_size: Option<u64>,
    timestamp: i64,
    mode: Option<String>,
    /// The block size of a block-incremental file, in 8 KiB units.
    bi: Option<u64>,
    /// Its block checksum size.
    bic: Option<usize>,
    /// Its block map's size.
    bim: Option<u64>,
}

#[derive(Deserialize)]
struct PathJson {
    mode: Option<String>,
}

#[derive(Deserialize)]
struct TargetJson {
    #[serde(rename = "type")]
    kind: String,
    path: String,
    #[serde(rename = "tablespace-id")]
    tablespace_id: Option<String>,
}

fn mode(text: &str, what: &str, object: &str) -> Result<u32, Error> {
    u32::from_str_radix(text, 8)
        .map_err(|_| Error::corrupt(object, format!("{what}: mode {text:?} is not octal")))
}

impl Manifest {
    /// Parses a manifest (`object` names it in errors).
    pub fn parse(ini: &Ini, object: &str) -> Result<Manifest, Error> {
        // An offline backup (pg_ctl stop, then a copy) has no backup_label and no WAL range.
        if ini.get::<bool>("backup:option", "option-online", object)? == Some(false) {
            return Err(Error::Unsupported(format!(
                "{object}: an offline backup (--no-online), which pgsnapfs does not import yet"
            )));
        }
        let lsn = |key: &str| -> Result<Lsn, Error> {
            let text: String = ini.need("backup", key, object)?;
            text.parse().map_err(|_| {
                Error::corrupt(object, format!("[backup] {key} {text:?} is not an LSN"))
            })
        };
        let kind: Option<String> = ini.get("backup:option", "option-compress-type", object)?;
        let compress = Compress::from_option(
            kind.as_deref(),
            ini.get("backup:option", "option-compress", object)?,
        )
        .ok_or_else(|| {
            Error::Unsupported(format!(
                "{object}: compression type {kind:?} is not one pgsnapfs reads (none, gz, zst, \
                 lz4, bz2)"
            ))
        })?;
        let default_file_mode: String = ini
            .get("target:file:default", "mode", object)?
            .unwrap_or_else(|| "0600".into());
        let default_file_mode = mode(&default_file_mode, "[target:file:default]", object)?;
        let default_path_mode: String = ini
            .get("target:path:default", "mode", object)?
            .unwrap_or_else(|| "0700".into());
        let default_path_mode = mode(&default_path_mode, "[target:path:default]", object)?;

        let mut tablespaces = Vec::new();
        for (name, value) in ini.section("backup:target") {
            let t: TargetJson = decode(value, &format!("[backup:target] {name}"), object)?;
            if t.kind != "link" {
                continue;
            }
            let Some(oid) = t.tablespace_id else {
                return Err(Error::Unsupported(format!(
                    "{object}: {name} is a link to {}; pgsnapfs imports tablespaces but no \
                     other links in the data directory",
                    t.path
                )));
            };
            let oid = oid
                .parse()
                .map_err(|_| Error::corrupt(object, format!("tablespace id {oid:?}")))?;
            tablespaces.push((oid, t.path));
        }

        let mut files = Vec::new();
        for (name, value) in ini.section("target:file") {
            let f: FileJson = decode(value, name, object)?;
            files.push(File {
                name: name.clone(),
                size: f.size,
                checksum: f.checksum,
                reference: f.reference,
                bundle: f.bni.map(|id| (id, f.bno.unwrap_or(0))),
                repo_size: f.repo_size.unwrap_or(f.size),
                timestamp: f.timestamp,
                mode: match f.mode {
                    Some(m) => mode(&m, name, object)?,
                    None => default_file_mode,
                },
                block_incremental: match (f.bi, f.bim) {
                    (Some(bi), Some(bim)) => Some(block_incr(bi, f.bic, bim, name, object)?),
                    (Some(_), None) => {
                        return Err(Error::corrupt(
                            object,
                            format!("{name}: \"bi\" without \"bim\""),
                        ))
                    }
                    _ => None,
                },
            });
        }
        let mut paths = Vec::new();
        for (name, value) in ini.section("target:path") {
            let p: PathJson = decode(value, name, object)?;
            let m = match p.mode {
                Some(m) => mode(&m, name, object)?,
                None => default_path_mode,
            };
            paths.push((name.clone(), m));
        }
        Ok(Manifest {
            label: ini.need("backup", "backup-label", object)?,
            kind: ini.need("backup", "backup-type", object)?,
            prior: ini.get("backup", "backup-prior", object)?,
            references: ini
                .get::<String>("backup", "backup-reference", object)?
                .map(|r| r.split(',').map(str::to_string).collect())
                .unwrap_or_default(),
            lsn_start: lsn("backup-lsn-start")?,
            lsn_stop: lsn("backup-lsn-stop")?,
            archive_start: ini.need("backup", "backup-archive-start", object)?,
            archive_stop: ini.need("backup", "backup-archive-stop", object)?,
            timestamp_start: ini.need("backup", "backup-timestamp-start", object)?,
            timestamp_stop: ini.need("backup", "backup-timestamp-stop", object)?,
            system_id: ini.need("backup:db", "db-system-id", object)?,
            pg_version: ini.need("backup:db", "db-version", object)?,
            db_id: ini.need("backup:db", "db-id", object)?,
            compress,
            cipher_pass: ini.get("cipher", "cipher-pass", object)?,
            bundle_raw: ini
                .get("backup", "backup-bundle-raw", object)?
                .unwrap_or(false),
            tablespaces,
            files,
            paths,
        })
    }

    /// The file called `name`, found by binary search (the manifest is sorted by name).
    pub fn file(&self, name: &str) -> Option<&File> {
        self.files
            .binary_search_by(|f| f.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.files[i])
    }

    /// How this backup stores its files.
    pub fn storage(&self) -> Storage {
        Storage {
            compress: self.compress,
            cipher_pass: self.cipher_pass.clone(),
            bundle_raw: self.bundle_raw,
        }
    }

    /// The label of the backup whose directory holds `file`.
    pub fn holder<'a>(&'a self, file: &'a File) -> &'a str {
        file.reference.as_deref().unwrap_or(&self.label)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// An incr backup's manifest with bundles, as pgBackRest 2.45 keeps it in backup.history.
    fn incr() -> Manifest {
        let path = format!(
            "{}/src/pgbackrest/testdata/incr-bundle.manifest.gz",
            env!("CARGO_MANIFEST_DIR")
        );
        let gz = std::fs::read(path).unwrap();
        let mut text = String::new();
        Compress::Gz
            .decoder(&gz[..])
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        let ini = Ini::parse(&text, "backup.manifest").unwrap();
        Manifest::parse(&ini, "backup.manifest").unwrap()
    }

    #[test]
    fn block_shapes_that_would_loop_or_divide_by_zero_are_corrupt() {
        let ok = block_incr(1, None, 100, "f", "m").unwrap();
        assert_eq!((ok.block_size, ok.checksum_size), (8192, 6));
        for (bi, bic) in [(0, None), (1, Some(0)), (u64::MAX, None), (1, Some(1000))] {
            let e = block_incr(bi, bic, 100, "f", "m").unwrap_err();
            assert_eq!(e.exit_code(), 3, "{bi} {bic:?}: {e}");
        }
    }

    #[test]
    fn an_incremental_manifest_references_its_chain() {
        let m = incr();
        assert_eq!(m.label, "20261204-220215F_20261204-220226I");
        assert_eq!(m.kind, "incr");
        assert_eq!(
            m.prior.as_deref(),
            Some("20261204-220215F_20261204-220220D")
        );
        assert_eq!(m.lsn_start, Lsn(0x1300_0028));
        assert_eq!(m.archive_stop, "000000010000000000000014");
        assert_eq!(m.compress, Compress::Zst);
        assert_eq!(m.system_id, 7715572398002760392);
        let version = m.file("pg_data/PG_VERSION").unwrap();
        assert_eq!(version.reference.as_deref(), Some("20261204-220215F"));
        assert_eq!(version.bundle, Some((1, 2601334)));
        assert_eq!(version.size, 3);
        assert_eq!(version.mode, 0o600);
        assert_eq!(m.holder(version), "20261204-220215F");
        // A file at the start of its bundle has no "bno".
        assert_eq!(m.file("pg_data/base/1/1249").unwrap().bundle, Some((2, 0)));
        // backup_label is this backup's own, outside any bundle.
        let label = m.file("pg_data/backup_label").unwrap();
        assert_eq!((label.reference.as_ref(), label.bundle), (None, None));
        // An empty file has no object and no checksum.
        assert_eq!(m.file("pg_data/base/1/13394").unwrap().checksum, None);
        assert!(m.paths.contains(&("pg_data/pg_wal".to_string(), 0o700)));
        assert!(m.tablespaces.is_empty());
    }
}
