//! Every hash pre-image and every signed message of the format, in one place.
//!
//! Each pre-image starts with its own domain tag, so a digest of one kind can never equal a
//! digest of another kind, and each signed message starts with a signing tag, so a signature
//! made for one purpose can never be replayed for another.

use sha2::{Digest as _, Sha256};

/// A SHA-256 output.
pub type Digest = [u8; 32];

/// Pre-image tag of a block record digest.
pub const BLOCK_DOMAIN: &[u8] = b"MAIF-3.0/block\0";
/// Pre-image tag of the chain seed (the link of the first record).
pub const GENESIS_DOMAIN: &[u8] = b"MAIF-3.0/genesis\0";
/// Pre-image tag of a provenance entry digest.
pub const PROVENANCE_DOMAIN: &[u8] = b"MAIF-3.0/provenance\0";
/// Pre-image tag of the artifact commit digest.
pub const COMMIT_DOMAIN: &[u8] = b"MAIF-3.0/commit\0";

/// Signed-message tag of a block signature.
pub const SIGN_BLOCK: &[u8] = b"MAIF-3.0/sign/block\0";
/// Signed-message tag of a provenance entry signature.
pub const SIGN_PROVENANCE: &[u8] = b"MAIF-3.0/sign/provenance\0";
/// Signed-message tag of the artifact commit signature.
pub const SIGN_COMMIT: &[u8] = b"MAIF-3.0/sign/commit\0";

/// What a signature vouches for; selects the signing tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignedKind {
    Block,
    Provenance,
    Commit,
}

impl SignedKind {
    fn tag(self) -> &'static [u8] {
        match self {
            SignedKind::Block => SIGN_BLOCK,
            SignedKind::Provenance => SIGN_PROVENANCE,
            SignedKind::Commit => SIGN_COMMIT,
        }
    }
}

/// The exact message an Ed25519 signature of `kind` covers: the signing tag, then the digest.
pub fn signed_message(kind: SignedKind, digest: &Digest) -> Vec<u8> {
    let tag = kind.tag();
    let mut message = Vec::with_capacity(tag.len() + digest.len());
    message.extend_from_slice(tag);
    message.extend_from_slice(digest);
    message
}

/// SHA-256 of the concatenation of `parts`.
pub fn sha256_parts(parts: &[&[u8]]) -> Digest {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> Digest {
    Sha256::digest(bytes).into()
}

/// Digest of a block record: `SHA-256(BLOCK_DOMAIN | header | metadata | data)`.
/// The signature that follows the data is not part of it.
pub fn record_digest(header: &[u8], metadata: &[u8], data: &[u8]) -> Digest {
    sha256_parts(&[BLOCK_DOMAIN, header, metadata, data])
}

/// The chain seed: `SHA-256(GENESIS_DOMAIN | file header | metadata section)`. The first
/// record links to it, which binds every block to this artifact's identity and public key.
pub fn genesis_digest(file_header: &[u8], metadata_section: &[u8]) -> Digest {
    sha256_parts(&[GENESIS_DOMAIN, file_header, metadata_section])
}

/// The 8-byte chain link a record header carries: the first 8 bytes of the previous digest.
pub fn chain_link(previous: &Digest) -> [u8; 8] {
    let mut link = [0u8; 8];
    link.copy_from_slice(&previous[..8]);
    link
}

/// Digest of a provenance entry: `SHA-256(PROVENANCE_DOMAIN | entry header | details)`.
pub fn provenance_digest(entry_header: &[u8], details: &[u8]) -> Digest {
    sha256_parts(&[PROVENANCE_DOMAIN, entry_header, details])
}

/// Digest of a commit, the message the artifact signature covers:
/// `SHA-256(COMMIT_DOMAIN | file header | SHA-256(metadata section) | SHA-256(provenance
/// section) | SHA-256(index section) | trailer bytes 0..96 | Merkle root)`.
///
/// The trailer bytes cover every offset and count, the commit time and the provenance head,
/// so truncation, reordering, removal, and replacing the metadata (and so the key) all change
/// this digest.
pub fn commit_digest(
    file_header: &[u8],
    metadata_section: &[u8],
    provenance_section: &[u8],
    index_section: &[u8],
    trailer_signed_fields: &[u8],
    merkle_root: &Digest,
) -> Digest {
    sha256_parts(&[
        COMMIT_DOMAIN,
        file_header,
        &sha256(metadata_section),
        &sha256(provenance_section),
        &sha256(index_section),
        trailer_signed_fields,
        merkle_root,
    ])
}
