//! pgBackRest's encryption (`repo-cipher-type=aes-256-cbc`): OpenSSL's salted format,
//! `Salted__`, an 8-byte salt, then AES-256-CBC with PKCS#7 padding, the key and IV derived
//! from the passphrase and salt by `EVP_BytesToKey` (SHA-1, one round). The user's passphrase
//! opens `backup.info` and `archive.info`; each holds the passphrase of what it lists
//! (`[cipher] cipher-pass`): manifests, and archived WAL. A manifest holds the passphrase of
//! its backup's files. A file is compressed, then encrypted.

use aes::cipher::{BlockDecryptMut, KeyIvInit};
use sha1::{Digest, Sha1};
use std::io::{self, ErrorKind, Read};

const MAGIC: &[u8; 8] = b"Salted__";
const HEADER: usize = 16;
const SALT: usize = 8;
const BLOCK: usize = 16;

type Decryptor = cbc::Decryptor<aes::Aes256>;

/// Whether `data` starts as an encrypted file does.
pub fn is_encrypted(data: &[u8]) -> bool {
    data.starts_with(MAGIC)
}

/// The key and IV `EVP_BytesToKey(aes-256-cbc, sha1, salt, pass, count 1)` derives.
fn key_iv(pass: &[u8], salt: &[u8]) -> ([u8; 32], [u8; 16]) {
    let mut out = Vec::with_capacity(60);
    let mut prev: Vec<u8> = Vec::new();
    while out.len() < 48 {
        let mut h = Sha1::new();
        h.update(&prev);
        h.update(pass);
        h.update(salt);
        prev = h.finalize().to_vec();
        out.extend_from_slice(&prev);
    }
    let mut key = [0u8; 32];
    let mut iv = [0u8; 16];
    key.copy_from_slice(&out[..32]);
    iv.copy_from_slice(&out[32..48]);
    (key, iv)
}

/// A reader of the plaintext of an encrypted stream. A wrong passphrase or a damaged stream
/// shows as bad padding at its end (`InvalidData`), or as content that fails its checksum.
pub struct Decrypting<R> {
    inner: R,
    pass: Vec<u8>,
    cipher: Option<Decryptor>,
    /// Decrypted bytes not yet returned.
    out: Vec<u8>,
    out_at: usize,
    /// Ciphertext read but not yet decrypted (the last block waits for the end: padding).
    pending: Vec<u8>,
    eof: bool,
    /// No `Salted__` before the salt (block-incremental maps and super blocks).
    raw: bool,
}

impl<R: Read> Decrypting<R> {
    /// Decrypts `inner` with passphrase `pass`.
    pub fn new(inner: R, pass: &[u8]) -> Decrypting<R> {
        Decrypting {
            inner,
            pass: pass.to_vec(),
            cipher: None,
            out: Vec::new(),
            out_at: 0,
            pending: Vec::new(),
            eof: false,
            raw: false,
        }
    }

    /// Decrypts `inner`, which starts with the salt alone (pgBackRest's "raw" mode).
    pub fn new_raw(inner: R, pass: &[u8]) -> Decrypting<R> {
        Decrypting {
            raw: true,
            ..Decrypting::new(inner, pass)
        }
    }

    fn bad(why: &str) -> io::Error {
        io::Error::new(ErrorKind::InvalidData, why.to_string())
    }

    /// Reads more ciphertext and decrypts what can be; false at the end.
    fn fill(&mut self) -> io::Result<bool> {
        if self.eof {
            return Ok(false);
        }
        let mut buf = vec![0u8; 64 * 1024];
        let n = loop {
            match self.inner.read(&mut buf) {
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        self.pending.extend_from_slice(&buf[..n]);
        if self.cipher.is_none() {
            let header = if self.raw { SALT } else { HEADER };
            if self.pending.len() < header {
                if n == 0 {
                    return Err(Self::bad("shorter than the cipher header"));
                }
                return Ok(true);
            }
            if !self.raw && !is_encrypted(&self.pending) {
                return Err(Self::bad("no cipher header (Salted__): not encrypted"));
            }
            let (key, iv) = key_iv(&self.pass, &self.pending[header - SALT..header]);
            self.cipher = Some(Decryptor::new(&key.into(), &iv.into()));
            self.pending.drain(..header);
        }
        let cipher = self.cipher.as_mut().expect("set above");
        // Keep the last whole block back until the end: it holds the padding.
        let keep = if n == 0 {
            0
        } else {
            BLOCK.max(self.pending.len() % BLOCK)
        };
        let ready = self.pending.len().saturating_sub(keep) / BLOCK * BLOCK;
        let mut blocks: Vec<u8> = self.pending.drain(..ready).collect();
        for block in blocks.chunks_exact_mut(BLOCK) {
            cipher.decrypt_block_mut(block.into());
        }
        self.out = blocks;
        self.out_at = 0;
        if n == 0 {
            self.eof = true;
            if !self.pending.is_empty() {
                return Err(Self::bad("its length is not a whole number of blocks"));
            }
            let pad = self.out.last().copied().unwrap_or(0) as usize;
            let valid = (1..=BLOCK).contains(&pad)
                && self.out.len() >= pad
                && self.out[self.out.len() - pad..]
                    .iter()
                    .all(|b| *b as usize == pad);
            if !valid {
                return Err(Self::bad("bad padding: wrong passphrase, or damaged"));
            }
            self.out.truncate(self.out.len() - pad);
        }
        Ok(true)
    }
}

impl<R: Read> Read for Decrypting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.out_at == self.out.len() {
            if !self.fill()? {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.out.len() - self.out_at);
        buf[..n].copy_from_slice(&self.out[self.out_at..self.out_at + n]);
        self.out_at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `printf 'pgsnapfs reads pgBackRest\n' | openssl enc -aes-256-cbc -md sha1
    /// -pass pass:secret` (a random salt), as pgBackRest writes.
    const SAMPLE: &str = include_str!("testdata/openssl-aes-256-cbc.hex");

    #[test]
    fn decrypts_what_openssl_encrypted() {
        let data = hex::decode(SAMPLE.trim()).unwrap();
        assert!(is_encrypted(&data));
        let mut out = String::new();
        // One byte at a time too: the header and blocks arrive in pieces.
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = buf.len().min(self.0.len()).min(1);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        Decrypting::new(Trickle(&data), b"secret")
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "pgsnapfs reads pgBackRest\n");
        let mut whole = Vec::new();
        Decrypting::new(&data[..], b"secret")
            .read_to_end(&mut whole)
            .unwrap();
        assert_eq!(whole, out.as_bytes());
        // Raw: the same without the magic.
        let mut raw = Vec::new();
        Decrypting::new_raw(&data[8..], b"secret")
            .read_to_end(&mut raw)
            .unwrap();
        assert_eq!(raw, out.as_bytes());
        let wrong = Decrypting::new(&data[..], b"wrong").read_to_end(&mut Vec::new());
        assert_eq!(wrong.unwrap_err().kind(), ErrorKind::InvalidData);
    }
}
