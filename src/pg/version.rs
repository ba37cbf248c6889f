//! Everything that differs between the supported PostgreSQL majors (13–18).
//! Key type: `Major`, one row per major in `MAJORS`.
//! Decision: version knowledge is data in one table, looked up by the other
//! modules, so supporting a new major means adding one row here.

/// Facts about one PostgreSQL major version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Major {
    /// The major version number (15 for 15.4).
    pub major: u32,
    /// XLOG_PAGE_MAGIC (access/xlog_internal.h).
    pub wal_magic: u16,
    /// PG_CONTROL_VERSION (catalog/pg_control.h).
    pub control_version: u32,
    /// CATALOG_VERSION_NO of the release (catalog/catversion.h).
    pub catalog_version: u32,
    /// offsetof(ControlFileData, crc) on 64-bit builds; depends only on
    /// `control_version`.
    pub control_crc_offset: usize,
    /// bimg_info bits meaning "page image is compressed" (access/xlogrecord.h):
    /// BKPIMAGE_IS_COMPRESSED before 15, BKPIMAGE_COMPRESS_{PGLZ,LZ4,ZSTD} after.
    pub bimg_compressed_mask: u8,
    /// sizeof(xl_xact_stats_item) (access/xact.h); 0 before it existed.
    pub xact_stats_item_size: usize,
    /// Whether the `summarize_wal` setting exists.
    pub has_summarize_wal: bool,
}

const COMPRESSED_13: u8 = 0x02;
const COMPRESSED_15: u8 = 0x04 | 0x08 | 0x10;

/// Supported majors, oldest first.
pub const MAJORS: [Major; 6] = [
    Major {
        major: 13,
        wal_magic: 0xD106,
        control_version: 1300,
        catalog_version: 202007201,
        control_crc_offset: 288,
        bimg_compressed_mask: COMPRESSED_13,
        xact_stats_item_size: 0,
        has_summarize_wal: false,
    },
    Major {
        major: 14,
        wal_magic: 0xD10D,
        control_version: 1300,
        catalog_version: 202107181,
        control_crc_offset: 288,
        bimg_compressed_mask: COMPRESSED_13,
        xact_stats_item_size: 0,
        has_summarize_wal: false,
    },
    Major {
        major: 15,
        wal_magic: 0xD110,
        control_version: 1300,
        catalog_version: 202209061,
        control_crc_offset: 288,
        bimg_compressed_mask: COMPRESSED_15,
        xact_stats_item_size: 12,
        has_summarize_wal: false,
    },
    Major {
        major: 16,
        wal_magic: 0xD113,
        control_version: 1300,
        catalog_version: 202307071,
        control_crc_offset: 288,
        bimg_compressed_mask: COMPRESSED_15,
        xact_stats_item_size: 12,
        has_summarize_wal: false,
    },
    // 17 added CheckPoint.wal_level into existing padding: the crc stays at 288.
    Major {
        major: 17,
        wal_magic: 0xD116,
        control_version: 1700,
        catalog_version: 202406281,
        control_crc_offset: 288,
        bimg_compressed_mask: COMPRESSED_15,
        xact_stats_item_size: 12,
        has_summarize_wal: true,
    },
    // 18 added default_char_signedness and widened stats item object ids to 64 bits.
    Major {
        major: 18,
        wal_magic: 0xD118,
        control_version: 1800,
        catalog_version: 202506291,
        control_crc_offset: 292,
        bimg_compressed_mask: COMPRESSED_15,
        xact_stats_item_size: 16,
        has_summarize_wal: true,
    },
];

/// The facts of a supported major, or None.
pub fn major(major: u32) -> Option<&'static Major> {
    MAJORS.iter().find(|m| m.major == major)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_ordered_and_unique() {
        let majors: Vec<u32> = MAJORS.iter().map(|m| m.major).collect();
        assert_eq!(majors, vec![13, 14, 15, 16, 17, 18]);
        for pair in MAJORS.windows(2) {
            assert!(pair[0].wal_magic < pair[1].wal_magic);
            assert!(pair[0].catalog_version < pair[1].catalog_version);
            assert!(pair[0].control_version <= pair[1].control_version);
        }
    }

    #[test]
    fn crc_offset_depends_only_on_control_version() {
        for a in &MAJORS {
            for b in &MAJORS {
                if a.control_version == b.control_version {
                    assert_eq!(a.control_crc_offset, b.control_crc_offset);
                }
            }
        }
    }

    #[test]
    fn lookup() {
        assert_eq!(major(15).unwrap().wal_magic, 0xD110);
        assert!(major(12).is_none());
        assert!(major(19).is_none());
    }
}
