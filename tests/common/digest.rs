//! Digests of file trees, and file, LSN and mount-point helpers.

use super::*;

/// Path → "kind size hash" for every entry below `root` (std's SipHash: enough to see a
/// change). A missing root gives an empty map.
pub fn tree_digest(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if root.symlink_metadata().is_ok() {
        digest_into(root, root, &mut out);
    }
    out
}

fn digest_into(root: &Path, p: &Path, out: &mut BTreeMap<String, String>) {
    let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
    let meta = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("stat {}: {e}", p.display()));
    if meta.file_type().is_symlink() {
        let target = fs::read_link(p).unwrap();
        out.insert(rel, format!("symlink {}", target.display()));
    } else if meta.is_dir() {
        out.insert(rel, "dir".to_string());
        let mut entries: Vec<PathBuf> = fs::read_dir(p)
            .unwrap_or_else(|e| panic!("read_dir {}: {e}", p.display()))
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for e in entries {
            digest_into(root, &e, out);
        }
    } else {
        let mut f = fs::File::open(p).unwrap_or_else(|e| panic!("open {}: {e}", p.display()));
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = f.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            h.write(&buf[..n]);
        }
        out.insert(rel, format!("file {} {:016x}", meta.len(), h.finish()));
    }
}

/// Asserts two [`tree_digest`]s are equal, listing the paths that differ.
#[track_caller]
pub fn assert_same_tree(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
    what: &str,
) {
    if before == after {
        return;
    }
    let mut diff = String::new();
    for (k, v) in before {
        match after.get(k) {
            None => writeln!(diff, "  removed: {k} ({v})").unwrap(),
            Some(w) if w != v => writeln!(diff, "  changed: {k} ({v} -> {w})").unwrap(),
            _ => {}
        }
    }
    for (k, v) in after {
        if !before.contains_key(k) {
            writeln!(diff, "  added:   {k} ({v})").unwrap();
        }
    }
    panic!("{what} changed:\n{diff}");
}

/// The SHA-256 of a file, as hex.
pub fn sha256_file(p: &Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    let mut f = fs::File::open(p)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Relative path → sha256 of every regular file below `root` (symbolic links not followed).
/// Every listed file must be readable: this is for mounts and copies, which hold still.
#[track_caller]
pub fn sha_tree(root: &Path) -> BTreeMap<String, String> {
    files_below(root)
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let h = sha256_file(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
            (rel, h)
        })
        .collect()
}

/// [`sha_tree`] of a running server's data directory. A file the server removes between the
/// listing and the read (the WAL summarizer's `temp.summary`, a temporary stats file) is left
/// out: it has no stable content to compare.
#[track_caller]
pub fn sha_tree_live(root: &Path) -> BTreeMap<String, String> {
    files_below(root)
        .into_iter()
        .filter_map(|p| {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            match sha256_file(&p) {
                Ok(h) => Some((rel, h)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => panic!("read {}: {e}", p.display()),
            }
        })
        .collect()
}

/// All regular files below `root`, sorted.
pub fn files_below(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// True if `dir` does not exist or has no entries.
pub fn is_absent_or_empty(dir: &Path) -> bool {
    match fs::read_dir(dir) {
        Ok(mut rd) => rd.next().is_none(),
        Err(_) => !dir.exists(),
    }
}

/// Parses a PostgreSQL LSN such as `0/3000060` into a byte position.
#[track_caller]
pub fn parse_lsn(s: &str) -> u64 {
    let (hi, lo) = s
        .trim()
        .split_once('/')
        .unwrap_or_else(|| panic!("{s:?} is not an LSN"));
    let hi = u64::from_str_radix(hi, 16).unwrap_or_else(|_| panic!("{s:?} is not an LSN"));
    let lo = u64::from_str_radix(lo, 16).unwrap_or_else(|_| panic!("{s:?} is not an LSN"));
    (hi << 32) | lo
}

/// Mount points currently in /proc/self/mounts, which escapes space, tab, newline and
/// backslash as octal.
pub fn mount_points() -> Vec<PathBuf> {
    fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .map(|p| {
            PathBuf::from(
                p.replace("\\040", " ")
                    .replace("\\011", "\t")
                    .replace("\\012", "\n")
                    .replace("\\134", "\\"),
            )
        })
        .collect()
}

/// Up to `len` bytes of `path` from `offset`, in one read (one request through a mount).
pub fn pread(path: &Path, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    use std::io::{Seek, SeekFrom};
    let mut f = fs::File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = vec![0; len];
    let n = f.read(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}
