//! The compression of a pgBackRest repository's files: each file (or bundled file) is one
//! stream of the type its backup's `option-compress-type` names, with that extension.

use std::io::{self, Read};

/// A compression type pgBackRest writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compress {
    /// Stored as is.
    None,
    /// gzip (`.gz`), the only type before pgBackRest 2.27 (`option-compress=true`).
    Gz,
    /// zstd (`.zst`).
    Zst,
    /// LZ4 frames (`.lz4`).
    Lz4,
    /// bzip2 (`.bz2`).
    Bz2,
}

impl Compress {
    /// The type a manifest names: `option-compress-type`, or for older manifests
    /// `option-compress` (gzip or none). `None` for a name this reader does not know.
    pub fn from_option(kind: Option<&str>, compress: Option<bool>) -> Option<Compress> {
        Some(match (kind, compress) {
            (Some("none"), _) | (None, Some(false) | None) => Compress::None,
            (Some("gz"), _) | (None, Some(true)) => Compress::Gz,
            (Some("zst"), _) => Compress::Zst,
            (Some("lz4"), _) => Compress::Lz4,
            (Some("bz2"), _) => Compress::Bz2,
            (Some(_), _) => return None,
        })
    }

    /// The extension of a file of this type, with its dot ("" for none).
    pub fn ext(self) -> &'static str {
        match self {
            Compress::None => "",
            Compress::Gz => ".gz",
            Compress::Zst => ".zst",
            Compress::Lz4 => ".lz4",
            Compress::Bz2 => ".bz2",
        }
    }

    /// The type whose extension ends `name`, and the name without it.
    pub fn from_name(name: &str) -> (Compress, &str) {
        for c in [Compress::Gz, Compress::Zst, Compress::Lz4, Compress::Bz2] {
            if let Some(stem) = name.strip_suffix(c.ext()) {
                return (c, stem);
            }
        }
        (Compress::None, name)
    }

    /// A reader of a decompressed stream in pgBackRest's "raw" format (bundles of backups
    /// with block incremental, and super blocks): gz as zlib (no gzip header), the others as
    /// usual.
    pub fn raw_decoder<'a>(self, r: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
        match self {
            Compress::Gz => Ok(Box::new(flate2::read::ZlibDecoder::new(r))),
            other => other.decoder(r),
        }
    }

    /// A reader of the decompressed stream.
    pub fn decoder<'a>(self, r: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
        Ok(match self {
            Compress::None => Box::new(r),
            Compress::Gz => Box::new(flate2::read::MultiGzDecoder::new(r)),
            Compress::Zst => Box::new(zstd::stream::read::Decoder::new(r)?),
            Compress::Lz4 => Box::new(lz4_flex::frame::FrameDecoder::new(r)),
            Compress::Bz2 => Box::new(bzip2::read::MultiBzDecoder::new(r)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PG_VERSION ("15\n") as pgBackRest 2.45 stored it with each compression type.
    #[test]
    fn each_type_decodes_a_file_pgbackrest_wrote() {
        for c in [Compress::Gz, Compress::Zst, Compress::Lz4, Compress::Bz2] {
            let path = format!(
                "{}/src/pgbackrest/testdata/PG_VERSION{}",
                env!("CARGO_MANIFEST_DIR"),
                c.ext()
            );
            let data = std::fs::read(&path).unwrap();
            let mut out = String::new();
            c.decoder(&data[..])
                .unwrap()
                .read_to_string(&mut out)
                .unwrap();
            assert_eq!(out, "15\n", "{path}");
            assert_eq!(
                Compress::from_name(&format!("PG_VERSION{}", c.ext())),
                (c, "PG_VERSION")
            );
        }
        assert_eq!(Compress::from_option(None, Some(true)), Some(Compress::Gz));
        assert_eq!(Compress::from_option(Some("xz"), None), None);
    }
}
