//! The read path through a catalogue mount (store::reader), on both stores: bytes read
//! sequentially (read-ahead and the hand-off) and at random offsets (on S3, read-around)
//! equal the source's; a corrupted chunk gives EIO on both paths, never wrong bytes, while
//! its neighbours still read.

// This file uses only part of the harness's re-exports.
#[allow(unused_imports)]
mod common;

use common::mount::{mountpoint, Mount};
use common::*;
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Read;

fn chunk_size(repo: &Repo) -> u64 {
    let backend = pgsnapfs::store::open_backend(&repo.spec).unwrap();
    let config: serde_json::Value =
        serde_json::from_slice(&backend.get("config").unwrap()).unwrap();
    json_u64(&config, "chunk_size")
}

/// Flips a byte in the middle of the stored chunk with content `chunk`, in place on either
/// store: on S3 the packs are copied to a local directory to find it, then the pack is
/// written back changed.
fn corrupt_chunk(repo: &Repo, chunk: &[u8]) {
    let id = Sha256::digest(chunk);
    if repo.store == Store::Local {
        let places = find_blob(&repo.path, &id);
        assert_eq!(places.len(), 1);
        return flip_byte(&places[0].pack, places[0].offset + places[0].stored_len / 2);
    }
    let backend = pgsnapfs::store::open_backend(&repo.spec).unwrap();
    let copy = repo.path.join("copy");
    for (key, _) in repo.objects("packs/") {
        let path = copy.join(&key);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, backend.get(&key).unwrap()).unwrap();
    }
    let places = find_blob(&copy, &id);
    assert_eq!(places.len(), 1);
    let p = &places[0];
    flip_byte(&p.pack, p.offset + p.stored_len / 2);
    let key = p.pack.strip_prefix(&copy).unwrap().to_str().unwrap();
    backend.replace(key, &fs::read(&p.pack).unwrap()).unwrap();
}

fn reads_equal_the_source_and_a_corrupt_chunk_is_eio(store: Store) {
    let repo = Repo::init_on(store);
    let mut source = Cluster::archiving_to(&repo.spec);
    source.psql(
        "CREATE TABLE big(id int PRIMARY KEY, v text);
         INSERT INTO big SELECT g, md5(g::text) || md5((g * 7)::text)
           FROM generate_series(1, 60000) g;
         CHECKPOINT;",
    );
    let rel = source.psql("SELECT pg_relation_filepath('big')");
    let id = json_str(&repo.backup(&source), "id");
    source.stop();
    // The server is stopped, so the file is as the backup read it after its checkpoint.
    let want = fs::read(source.data.join(&rel)).unwrap();
    let cs = chunk_size(&repo);
    assert!(want.len() as u64 > 16 * cs, "{} bytes", want.len());

    let work = TestDir::new("read-path");
    let file = |m: &Mount| m.dir.join("backups").join(&id).join(&rel);
    {
        let m = Mount::start(&repo, &mountpoint(&work, "mnt"), &[]);
        assert_eq!(fs::read(file(&m)).unwrap(), want, "sequential read");
        for (off, len) in [(0, 8192), (cs * 5 + 100, 3 * cs as usize), (cs - 10, 20)] {
            let end = (off as usize + len).min(want.len());
            assert_eq!(
                pread(&file(&m), off, len).unwrap(),
                want[off as usize..end],
                "read at {off}"
            );
        }
    }

    // Corrupt chunk 9 where it is stored, then read again through a fresh mount (on S3
    // without a disk cache, which would hold the good chunk).
    let victim = 9u64;
    corrupt_chunk(
        &repo,
        &want[(victim * cs) as usize..((victim + 1) * cs) as usize],
    );
    let m = Mount::start(
        &repo,
        &mountpoint(&work, "mnt2"),
        &["--disk-cache-size", "0"],
    );
    let eio = |r: std::io::Result<Vec<u8>>| match r {
        Err(e) => e.raw_os_error() == Some(libc::EIO),
        Ok(_) => false,
    };
    assert!(eio(pread(&file(&m), victim * cs + 10, 100)), "random read");
    assert_eq!(
        pread(&file(&m), (victim + 1) * cs, 100).unwrap(),
        want[((victim + 1) * cs) as usize..((victim + 1) * cs) as usize + 100],
        "the neighbour still reads"
    );
    // Sequentially, in 4 KiB reads (read-ahead runs): every byte before the chunk is right,
    // and the read stops with EIO at the chunk.
    let stops_at_the_victim = |m: &Mount| {
        let mut f = fs::File::open(file(m)).unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0; 4096];
        let err = loop {
            match f.read(&mut buf) {
                Ok(0) => panic!("the whole file was read despite the corrupt chunk"),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => break e,
            }
        };
        assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
        assert!(got.len() as u64 <= victim * cs, "{} bytes", got.len());
        assert_eq!(got, want[..got.len()]);
    };
    stops_at_the_victim(&m);
    drop(m);

    // On S3 with an empty disk cache, a miss reads its window of the pack around (the corrupt
    // chunk and the good ones beside it, found in the pack's entry table) into the cache
    // unchecked: each is checked when taken, so the same EIO, and good bytes beside it.
    if store == Store::S3 {
        // The harness's cache directory for this repository, emptied.
        let cache = repo.path.join("cache");
        let _ = fs::remove_dir_all(&cache);
        let m = Mount::start(&repo, &mountpoint(&work, "mnt3"), &[]);
        // A chunk k whose predecessor lies in the same 4 MiB window of the same pack (the
        // packs as copied by corrupt_chunk): reading k alone brings k - 1 into the disk cache,
        // which neither the kernel's readahead nor the reader's (both forward) would read.
        let chunks: Vec<&[u8]> = want.chunks(cs as usize).collect();
        let place = |k: usize| {
            let p = find_blob(&repo.path.join("copy"), &Sha256::digest(chunks[k]));
            assert_eq!(p.len(), 1, "chunk {k}");
            (p[0].pack.clone(), p[0].offset >> 22)
        };
        let k = (victim as usize + 2..chunks.len())
            .find(|&k| place(k) == place(k - 1))
            .expect("two neighbouring chunks in one window");
        let at = k * cs as usize;
        assert_eq!(
            pread(&file(&m), at as u64, 100).unwrap(),
            want[at..at + 100],
            "chunk {k} reads"
        );
        // One directory per repository (its id) in the cache directory.
        let dirs: Vec<_> = fs::read_dir(&cache).unwrap().flatten().collect();
        assert_eq!(dirs.len(), 1, "{}", cache.display());
        let hex = hex::encode(Sha256::digest(chunks[k - 1]));
        assert!(
            dirs[0].path().join(&hex[..2]).join(&hex).exists(),
            "chunk {} is not in the disk cache after a read of chunk {k}",
            k - 1
        );
        assert!(eio(pread(&file(&m), victim * cs + 10, 100)), "random read");
        stops_at_the_victim(&m);
    }
}

on_both_stores!(reads_equal_the_source_and_a_corrupt_chunk_is_eio);
