//! Ed25519 keys: generation, PKCS#8 PEM files, signing and (batch) verification.
//!
//! Secret material never reaches a log or an error message: [`SigningKey`]'s `Debug` prints
//! only the public key, and key-file errors name the path, never the contents.

use std::fmt;
use std::path::Path;

use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{Signature, Signer, VerifyingKey};

use crate::format::digest::{Digest, SignedKind, signed_message};

/// Errors about keys and key files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// A key file could not be read.
    #[error("cannot read key file {path}: {source}")]
    Read {
        /// The key file's path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A key file could not be written (key files are never overwritten).
    #[error("cannot write key file {path}: {source}")]
    Write {
        /// The key file's path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A key file is not an Ed25519 PKCS#8 PEM private key.
    #[error("key file {path} is not an Ed25519 PKCS#8 PEM private key ({reason})")]
    Parse {
        /// The key file's path.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No randomness was available to generate a key; the message is the system's.
    #[error("the operating system could not supply randomness for a new key: {0}")]
    Randomness(String),
    /// Hex of 32 bytes that are not a valid Ed25519 point.
    #[error("public key {0} is not a valid Ed25519 point")]
    InvalidPublicKey(String),
    /// Hex of a small-order Ed25519 point, refused because any signature verifies under it.
    #[error("public key {0} has small order: signatures under it prove nothing")]
    WeakPublicKey(String),
}

/// An Ed25519 signing key.
pub struct SigningKey(ed25519_dalek::SigningKey);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey(public {})", hex::encode(self.public_key()))
    }
}

impl SigningKey {
    /// A new key from the operating system's randomness.
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = zeroize::Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut()).map_err(|e| KeyError::Randomness(e.to_string()))?;
        Ok(Self::from_seed(&seed))
    }

    /// The key whose 32-byte secret seed is `seed` (for tests and golden vectors).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self(ed25519_dalek::SigningKey::from_bytes(seed))
    }

    /// A second handle on the same key (for a task that signs on its own).
    pub(crate) fn clone_key(&self) -> Self {
        Self(self.0.clone())
    }

    /// The 32-byte public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.0.verifying_key().to_bytes()
    }

    /// Signs `digest` as a `kind` signature (the signing tag keeps kinds apart).
    pub fn sign(&self, kind: SignedKind, digest: &Digest) -> [u8; 64] {
        self.0.sign(&signed_message(kind, digest)).to_bytes()
    }

    /// PKCS#8 v1 PEM text of the key (RFC 5208, the private key alone), the form OpenSSL
    /// writes and every tool reads; OpenSSL 3.0 and Python's `cryptography` refuse the v2
    /// form with the public key included ("extra data"). Both forms are read.
    pub(crate) fn to_pem(&self) -> Result<zeroize::Zeroizing<String>, KeyError> {
        ed25519_dalek::pkcs8::KeypairBytes {
            secret_key: self.0.to_bytes(),
            public_key: None,
        }
        .to_pkcs8_pem(Default::default())
        .map(|pem| zeroize::Zeroizing::new(pem.to_string()))
        .map_err(|e| KeyError::Parse {
            path: "<memory>".into(),
            reason: e.to_string(),
        })
    }

    /// Parses PKCS#8 PEM text; `origin` names the source in errors.
    pub(crate) fn from_pem(pem: &str, origin: &str) -> Result<Self, KeyError> {
        ed25519_dalek::SigningKey::from_pkcs8_pem(pem)
            .map(Self)
            .map_err(|e| KeyError::Parse {
                path: origin.into(),
                reason: e.to_string(),
            })
    }

    /// Reads a PKCS#8 PEM key file.
    pub fn read_pem_file(path: &Path) -> Result<Self, KeyError> {
        let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|source| {
            KeyError::Read {
                path: path.display().to_string(),
                source,
            }
        })?);
        Self::from_pem(&text, &path.display().to_string())
    }

    /// Writes the key as PKCS#8 PEM to a new file with mode 0600. Never overwrites.
    pub fn write_pem_file(&self, path: &Path) -> Result<(), KeyError> {
        use std::io::Write;
        let pem = self.to_pem()?;
        let write_err = |source| KeyError::Write {
            path: path.display().to_string(),
            source,
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(write_err)?;
        file.write_all(pem.as_bytes()).map_err(write_err)?;
        file.sync_all().map_err(write_err)?;
        Ok(())
    }
}

/// A public key checked once for validity and weakness, ready to verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Accepts a valid key that does not have small order.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, KeyError> {
        let key = VerifyingKey::from_bytes(bytes)
            .map_err(|_| KeyError::InvalidPublicKey(hex::encode(bytes)))?;
        if key.is_weak() {
            return Err(KeyError::WeakPublicKey(hex::encode(bytes)));
        }
        Ok(Self(key))
    }

    /// The 32-byte compressed Edwards point, as stored in the metadata (hex) and in proofs.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// Strict single verification (rejects non-canonical and small-order components).
    pub fn verify_strict(&self, kind: SignedKind, digest: &Digest, signature: &[u8; 64]) -> bool {
        let signature = Signature::from_bytes(signature);
        self.0
            .verify_strict(&signed_message(kind, digest), &signature)
            .is_ok()
    }
}

/// One signature to check.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SignatureCheck {
    /// What was signed (record, provenance entry or commit), which selects the signing tag.
    pub kind: SignedKind,
    /// The digest signed.
    pub digest: Digest,
    /// The Ed25519 signature to check.
    pub signature: [u8; 64],
}

/// Verifies many signatures under one key and returns the positions of those that fail.
///
/// Signatures are checked in batches, split across `threads` worker threads. A batch that
/// fails is re-checked signature by signature with strict verification, so the result names
/// exactly the bad ones. With `strict`, every signature is checked individually and strictly
/// (batch verification uses the cofactorless batch equation, which can accept a signature
/// that its own signer deliberately built with a torsion component; strict mode rejects it).
pub(crate) fn verify_many(
    key: &PublicKey,
    checks: &[SignatureCheck],
    threads: usize,
    strict: bool,
) -> Vec<usize> {
    const BATCH: usize = 256;
    let threads = threads.max(1);
    if checks.is_empty() {
        return Vec::new();
    }
    let batches: Vec<(usize, &[SignatureCheck])> = checks
        .chunks(BATCH)
        .enumerate()
        .map(|(n, batch)| (n * BATCH, batch))
        .collect();
    let mut failures: Vec<usize> =
        crate::parallel::parallel_map(&batches, threads, |(start, batch)| {
            let mut bad = Vec::new();
            if strict || !batch_ok(key, batch) {
                for (i, check) in batch.iter().enumerate() {
                    if !key.verify_strict(check.kind, &check.digest, &check.signature) {
                        bad.push(start + i);
                    }
                }
            }
            bad
        })
        .into_iter()
        .flatten()
        .collect();
    failures.sort_unstable();
    failures
}

fn batch_ok(key: &PublicKey, batch: &[SignatureCheck]) -> bool {
    let messages: Vec<Vec<u8>> = batch
        .iter()
        .map(|c| signed_message(c.kind, &c.digest))
        .collect();
    let message_refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
    let signatures: Vec<Signature> = batch
        .iter()
        .map(|c| Signature::from_bytes(&c.signature))
        .collect();
    let keys = vec![key.0; batch.len()];
    ed25519_dalek::verify_batch(&message_refs, &signatures, &keys).is_ok()
}
