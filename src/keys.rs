//! Ed25519 keys: generation, PKCS#8 PEM files, signing and (batch) verification.
//!
//! Secret material never reaches a log or an error message: [`SigningKey`]'s `Debug` prints
//! only the public key, and key-file errors name the path, never the contents.

use std::fmt;
use std::path::Path;

use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{Signature, VerifyingKey};

use crate::format::digest::{Digest, SignedKind, signed_message, signed_message_array};

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
///
/// It keeps the expanded secret (RFC 8032 5.1.5: the clamped scalar and the nonce prefix,
/// from one SHA-512 of the seed) so that each signature does not hash the seed again; a
/// writer signs once per block, and that hash is a twentieth of a signature's cost. Both
/// halves are wiped when the key is dropped.
pub struct SigningKey {
    key: ed25519_dalek::SigningKey,
    expanded: ed25519_dalek::hazmat::ExpandedSecretKey,
    verifying: VerifyingKey,
}

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
        Self::from_dalek(ed25519_dalek::SigningKey::from_bytes(seed))
    }

    fn from_dalek(key: ed25519_dalek::SigningKey) -> Self {
        let expanded = ed25519_dalek::hazmat::ExpandedSecretKey::from(key.as_bytes());
        let verifying = key.verifying_key();
        Self {
            key,
            expanded,
            verifying,
        }
    }

    /// A second handle on the same key (for a task that signs on its own).
    pub(crate) fn clone_key(&self) -> Self {
        Self::from_dalek(self.key.clone())
    }

    /// The 32-byte public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.verifying.to_bytes()
    }

    /// Signs `digest` as a `kind` signature (the signing tag keeps kinds apart).
    pub fn sign(&self, kind: SignedKind, digest: &Digest) -> [u8; 64] {
        let (message, len) = signed_message_array(kind, digest);
        self.sign_message(&message[..len])
    }

    /// The Ed25519 signature of `message` (RFC 8032 5.1.6), from the expanded secret.
    fn sign_message(&self, message: &[u8]) -> [u8; 64] {
        ed25519_dalek::hazmat::raw_sign::<sha2::Sha512>(&self.expanded, message, &self.verifying)
            .to_bytes()
    }

    /// Signs each of `digests` as a `kind` signature: the very signatures [`Self::sign`]
    /// makes one at a time (Ed25519 signing is deterministic), for about a fifth less work
    /// (14 µs a signature against 17.6 µs on the 2-core machine of the README's figures,
    /// in chunks of 16).
    ///
    /// Why it is cheaper: a signature's `R` is the point `r·B` written in its compressed
    /// form, and compressing a point divides by its projective `Z` coordinate, a field
    /// inversion that is about a sixth of a signature's cost. Here the points of the whole slice
    /// are compressed together, with one inversion for all of them (Montgomery's trick, in
    /// `curve25519-dalek`'s constant-time `compress_batch_alloc`), so each signature costs
    /// three field multiplications where it cost an inversion. The writer signs its blocks
    /// in chunks of 16 this way.
    pub fn sign_all(&self, kind: SignedKind, digests: &[Digest]) -> Vec<[u8; 64]> {
        let messages: Vec<([u8; 64], usize)> = digests
            .iter()
            .map(|digest| signed_message_array(kind, digest))
            .collect();
        let messages: Vec<&[u8]> = messages.iter().map(|(m, len)| &m[..*len]).collect();
        self.sign_messages(&messages)
    }

    /// RFC 8032 5.1.6 for each of `messages`, the points `R` compressed together.
    fn sign_messages(&self, messages: &[&[u8]]) -> Vec<[u8; 64]> {
        use curve25519_dalek::{EdwardsPoint, Scalar};
        use sha2::{Digest as _, Sha512};
        // Steps 2 and 3: the secret nonce `r = SHA-512(prefix | M) mod L` and `r·B`.
        let nonces: zeroize::Zeroizing<Vec<Scalar>> = zeroize::Zeroizing::new(
            messages
                .iter()
                .map(|message| {
                    let hash = Sha512::new()
                        .chain_update(self.expanded.hash_prefix)
                        .chain_update(message)
                        .finalize();
                    Scalar::from_bytes_mod_order_wide(&hash.into())
                })
                .collect(),
        );
        let points: Vec<EdwardsPoint> = nonces.iter().map(EdwardsPoint::mul_base).collect();
        let commitments = EdwardsPoint::compress_batch_alloc(&points);
        // Steps 4 to 6: `k = SHA-512(R | A | M) mod L` and `S = (r + k·s) mod L`.
        messages
            .iter()
            .zip(nonces.iter())
            .zip(&commitments)
            .map(|((message, nonce), commitment)| {
                let hash = Sha512::new()
                    .chain_update(commitment.as_bytes())
                    .chain_update(self.verifying.as_bytes())
                    .chain_update(message)
                    .finalize();
                let challenge = Scalar::from_bytes_mod_order_wide(&hash.into());
                let s = challenge * self.expanded.scalar + nonce;
                let mut signature = [0u8; 64];
                signature[..32].copy_from_slice(commitment.as_bytes());
                signature[32..].copy_from_slice(s.as_bytes());
                signature
            })
            .collect()
    }

    /// PKCS#8 v1 PEM text of the key (RFC 5208, the private key alone), the form OpenSSL
    /// writes and every tool reads; OpenSSL 3.0 and Python's `cryptography` refuse the v2
    /// form with the public key included ("extra data"). Both forms are read.
    pub(crate) fn to_pem(&self) -> Result<zeroize::Zeroizing<String>, KeyError> {
        ed25519_dalek::pkcs8::KeypairBytes {
            secret_key: self.key.to_bytes(),
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
            .map(Self::from_dalek)
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

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::Signer as _;

    fn unhex<const N: usize>(text: &str) -> [u8; N] {
        let bytes = hex::decode(text).expect("hex");
        bytes.try_into().expect("length")
    }

    /// RFC 8032 section 7.1, TEST 1 to 3: secret key, public key, message, signature.
    const RFC_8032: [(&str, &str, &str, &str); 3] = [
        (
            "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
            "",
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
        ),
        (
            "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
            "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
            "72",
            "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
        ),
        (
            "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
            "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
            "af82",
            "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
        ),
    ];

    #[test]
    fn signatures_from_the_expanded_secret_match_rfc_8032() {
        for (secret, public, message, signature) in RFC_8032 {
            let key = SigningKey::from_seed(&unhex(secret));
            assert_eq!(key.public_key(), unhex::<32>(public));
            let message = hex::decode(message).expect("hex");
            assert_eq!(key.sign_message(&message), unhex::<64>(signature));
        }
    }

    #[test]
    fn signatures_made_together_match_rfc_8032_wherever_they_sit_in_the_batch() {
        let others: Vec<Vec<u8>> = (0u8..20).map(|n| vec![n; usize::from(n)]).collect();
        for (secret, _, message, signature) in RFC_8032 {
            let key = SigningKey::from_seed(&unhex(secret));
            let message = hex::decode(message).expect("hex");
            for position in [0, 1, 7, 20] {
                let mut batch: Vec<&[u8]> = others.iter().map(Vec::as_slice).collect();
                batch.insert(position, &message);
                let signatures = key.sign_messages(&batch);
                assert_eq!(signatures.len(), batch.len());
                assert_eq!(
                    signatures[position],
                    unhex::<64>(signature),
                    "at {position}"
                );
            }
        }
    }

    #[test]
    fn sign_all_makes_ed25519_dalek_s_signatures_for_every_batch_length() {
        let seed = [0x37u8; 32];
        let key = SigningKey::from_seed(&seed);
        let reference = ed25519_dalek::SigningKey::from_bytes(&seed);
        let public = PublicKey::from_bytes(&key.public_key()).expect("public key");
        for kind in [SignedKind::Block, SignedKind::Commit] {
            for len in [0usize, 1, 2, 3, 15, 16, 17, 100] {
                let digests: Vec<Digest> = (0..len)
                    .map(|n| crate::format::digest::sha256(&(len * 1000 + n).to_le_bytes()))
                    .collect();
                let signatures = key.sign_all(kind, &digests);
                assert_eq!(signatures.len(), len);
                for (digest, signature) in digests.iter().zip(&signatures) {
                    let expected = reference.sign(&signed_message(kind, digest)).to_bytes();
                    assert_eq!(*signature, expected, "{kind:?}, {len} digests");
                    assert!(public.verify_strict(kind, digest, signature));
                }
            }
        }
    }

    #[test]
    fn record_and_commit_signatures_are_the_library_signer_s_and_verify() {
        for seed in [[1u8; 32], [0x5a; 32], [0xff; 32]] {
            let key = SigningKey::from_seed(&seed);
            let reference = ed25519_dalek::SigningKey::from_bytes(&seed);
            let public = PublicKey::from_bytes(&key.public_key()).expect("public key");
            for kind in [SignedKind::Block, SignedKind::Commit] {
                let digest = crate::format::digest::sha256(&seed);
                let signature = key.sign(kind, &digest);
                let expected = reference.sign(&signed_message(kind, &digest)).to_bytes();
                assert_eq!(signature, expected);
                assert!(public.verify_strict(kind, &digest, &signature));
                assert_eq!(key.clone_key().sign(kind, &digest), signature);
            }
        }
    }
}
