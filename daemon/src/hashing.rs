//! Content hashing with every algorithm of DESIGN.md section 3.
//!
//! Names follow Python's `hashlib` (`sha3_256`, `blake2b` = BLAKE2b-512, `blake2s` =
//! BLAKE2s-256) plus `blake3`, so a digest computed here equals one computed by Python
//! borgstore for the same algorithm name.

use borgstore_ipc::{Error, Result};
use digest::DynDigest;
use std::fmt;
use std::str::FromStr;

/// A supported hash algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashAlgorithm {
    /// `md5`: 128-bit MD5, for compatibility, not for security.
    Md5,
    /// `sha1`: 160-bit SHA-1, for compatibility, not for security.
    Sha1,
    /// `sha224`: SHA-2 with a 224-bit digest.
    Sha224,
    /// `sha256`: SHA-2 with a 256-bit digest.
    Sha256,
    /// `sha384`: SHA-2 with a 384-bit digest.
    Sha384,
    /// `sha512`: SHA-2 with a 512-bit digest.
    Sha512,
    /// `sha3_224`: SHA-3 with a 224-bit digest.
    Sha3_224,
    /// `sha3_256`: SHA-3 with a 256-bit digest.
    Sha3_256,
    /// `sha3_384`: SHA-3 with a 384-bit digest.
    Sha3_384,
    /// `sha3_512`: SHA-3 with a 512-bit digest.
    Sha3_512,
    /// `blake2b`: BLAKE2b with a 512-bit digest, as Python's `hashlib.blake2b()`.
    Blake2b,
    /// `blake2s`: BLAKE2s with a 256-bit digest, as Python's `hashlib.blake2s()`.
    Blake2s,
    /// `blake3`: BLAKE3 with its default 256-bit digest.
    Blake3,
}

impl HashAlgorithm {
    /// Every supported algorithm; a name parses to one of these or is refused.
    pub const ALL: [HashAlgorithm; 13] = [
        HashAlgorithm::Md5,
        HashAlgorithm::Sha1,
        HashAlgorithm::Sha224,
        HashAlgorithm::Sha256,
        HashAlgorithm::Sha384,
        HashAlgorithm::Sha512,
        HashAlgorithm::Sha3_224,
        HashAlgorithm::Sha3_256,
        HashAlgorithm::Sha3_384,
        HashAlgorithm::Sha3_512,
        HashAlgorithm::Blake2b,
        HashAlgorithm::Blake2s,
        HashAlgorithm::Blake3,
    ];

    /// The `hashlib`-style name clients use, lowercase (parsing also takes other cases).
    pub fn as_str(self) -> &'static str {
        match self {
            HashAlgorithm::Md5 => "md5",
            HashAlgorithm::Sha1 => "sha1",
            HashAlgorithm::Sha224 => "sha224",
            HashAlgorithm::Sha256 => "sha256",
            HashAlgorithm::Sha384 => "sha384",
            HashAlgorithm::Sha512 => "sha512",
            HashAlgorithm::Sha3_224 => "sha3_224",
            HashAlgorithm::Sha3_256 => "sha3_256",
            HashAlgorithm::Sha3_384 => "sha3_384",
            HashAlgorithm::Sha3_512 => "sha3_512",
            HashAlgorithm::Blake2b => "blake2b",
            HashAlgorithm::Blake2s => "blake2s",
            HashAlgorithm::Blake3 => "blake3",
        }
    }

    /// A fresh incremental hasher.
    pub fn hasher(self) -> Hasher {
        let d: Box<dyn DynDigest + Send> = match self {
            HashAlgorithm::Md5 => Box::new(md5::Md5::default()),
            HashAlgorithm::Sha1 => Box::new(sha1::Sha1::default()),
            HashAlgorithm::Sha224 => Box::new(sha2::Sha224::default()),
            HashAlgorithm::Sha256 => Box::new(sha2::Sha256::default()),
            HashAlgorithm::Sha384 => Box::new(sha2::Sha384::default()),
            HashAlgorithm::Sha512 => Box::new(sha2::Sha512::default()),
            HashAlgorithm::Sha3_224 => Box::new(sha3::Sha3_224::default()),
            HashAlgorithm::Sha3_256 => Box::new(sha3::Sha3_256::default()),
            HashAlgorithm::Sha3_384 => Box::new(sha3::Sha3_384::default()),
            HashAlgorithm::Sha3_512 => Box::new(sha3::Sha3_512::default()),
            HashAlgorithm::Blake2b => Box::new(blake2::Blake2b512::default()),
            HashAlgorithm::Blake2s => Box::new(blake2::Blake2s256::default()),
            HashAlgorithm::Blake3 => return Hasher::Blake3(Box::new(blake3::Hasher::new())),
        };
        Hasher::Digest(d)
    }

    /// Hex digest of `data` in one call.
    pub fn hex_digest(self, data: &[u8]) -> String {
        let mut h = self.hasher();
        h.update(data);
        h.finalize_hex()
    }
}

impl FromStr for HashAlgorithm {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let lower = s.to_ascii_lowercase();
        HashAlgorithm::ALL
            .into_iter()
            .find(|a| a.as_str() == lower)
            .ok_or_else(|| Error::invalid(format!("Unsupported hash algorithm: {}", crate::names::quoted(s))))
    }
}

impl fmt::Display for HashAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An incremental hasher for any [`HashAlgorithm`].
pub enum Hasher {
    /// Any RustCrypto algorithm (MD5, SHA-1, SHA-2, SHA-3, BLAKE2).
    Digest(Box<dyn DynDigest + Send>),
    /// BLAKE3, through its own crate.
    Blake3(Box<blake3::Hasher>),
}

impl Hasher {
    /// Feed the next bytes of the content.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Digest(d) => d.update(data),
            Hasher::Blake3(h) => {
                h.update(data);
            }
        }
    }

    /// The digest of everything fed so far, as lowercase hex.
    pub fn finalize_hex(self) -> String {
        match self {
            Hasher::Digest(d) => hex::encode(d.finalize()),
            Hasher::Blake3(h) => h.finalize().to_hex().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests() {
        assert_eq!(HashAlgorithm::Md5.hex_digest(b"abc"), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(
            HashAlgorithm::Sha256.hex_digest(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            HashAlgorithm::Blake3.hex_digest(b""),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
        assert_eq!("SHA3_256".parse::<HashAlgorithm>().unwrap(), HashAlgorithm::Sha3_256);
        assert!("sha-256".parse::<HashAlgorithm>().is_err());
    }
}
