//! Every hash pre-image and every signed message of the format, in one place.
//!
//! Each pre-image starts with its own domain tag, so a digest of one kind can never equal a
//! digest of another kind, and each signed message starts with a signing tag, so a signature
//! made for one purpose can never be replayed for another.

use sha2::{Digest as _, Sha256};

/// A SHA-256 output.
pub type Digest = [u8; 32];

/// Pre-image tag of a record's content digest (its metadata and data).
pub(crate) const CONTENT_DOMAIN: &[u8] = b"MAIF-3.1/content\0";
/// Pre-image tag of a block record digest (its header and content digest).
pub(crate) const BLOCK_DOMAIN: &[u8] = b"MAIF-3.1/block\0";
/// Pre-image tag of the chain seed (the link of the first record).
pub(crate) const GENESIS_DOMAIN: &[u8] = b"MAIF-3.1/genesis\0";
/// Pre-image tag of a provenance entry digest.
pub(crate) const PROVENANCE_DOMAIN: &[u8] = b"MAIF-3.1/provenance\0";
/// Pre-image tag of a commit digest (a segment header and its Merkle frontier).
pub(crate) const COMMIT_DOMAIN: &[u8] = b"MAIF-3.1/commit\0";
/// Pre-image tag of an index run's head (its header and page directory).
pub(crate) const RUN_DOMAIN: &[u8] = b"MAIF-3.1/run\0";
/// Pre-image tag of one page of an index run.
pub(crate) const RUN_PAGE_DOMAIN: &[u8] = b"MAIF-3.1/run-page\0";

/// Signed-message tag of a block signature.
pub(crate) const SIGN_BLOCK: &[u8] = b"MAIF-3.1/sign/block\0";
/// Signed-message tag of a commit signature.
pub(crate) const SIGN_COMMIT: &[u8] = b"MAIF-3.1/sign/commit\0";

/// What a signature vouches for; selects the signing tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignedKind {
    /// A block record (its record digest).
    Block,
    /// A commit (its commit digest), which authenticates everything else.
    Commit,
}

impl SignedKind {
    fn tag(self) -> &'static [u8] {
        match self {
            SignedKind::Block => SIGN_BLOCK,
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

/// [`signed_message`] in a buffer on the stack (the message, then its length), for signing
/// once per record without an allocation.
pub(crate) fn signed_message_array(kind: SignedKind, digest: &Digest) -> ([u8; 64], usize) {
    let tag = kind.tag();
    let mut message = [0u8; 64];
    message[..tag.len()].copy_from_slice(tag);
    message[tag.len()..tag.len() + digest.len()].copy_from_slice(digest);
    (message, tag.len() + digest.len())
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

/// The content digest of a record: `SHA-256(CONTENT_DOMAIN | metadata | data)`. It does not
/// depend on the chain, so writers and verifiers hash the bulk of every record in parallel.
pub fn content_digest(metadata: &[u8], data: &[u8]) -> Digest {
    sha256_parts(&[CONTENT_DOMAIN, metadata, data])
}

/// Digest of a block record: `SHA-256(BLOCK_DOMAIN | header | content digest)`. The header
/// carries the lengths that split the content, and the chain link, so this small hash is the
/// only sequential step of writing a chain of records.
pub fn record_digest(header: &[u8], content: &Digest) -> Digest {
    sha256_parts(&[BLOCK_DOMAIN, header, content])
}

/// The chain seed: `SHA-256(GENESIS_DOMAIN | file header | metadata section)`. The first
/// record links to it, and every commit names it, which binds every block and every commit to
/// this artifact's identity and public key.
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
pub(crate) fn provenance_digest(entry_header: &[u8], details: &[u8]) -> Digest {
    sha256_parts(&[PROVENANCE_DOMAIN, entry_header, details])
}

/// Digest of a commit, the message the commit signature covers:
/// `SHA-256(COMMIT_DOMAIN | segment header | Merkle frontier)`.
///
/// The header names the chain seed, the previous commit's digest, every count and offset, the
/// provenance head, the Merkle root and the head hash of the newest index run, so this one
/// digest authenticates every byte a reader relies on.
pub fn commit_digest(segment_header: &[u8], frontier: &[u8]) -> Digest {
    sha256_parts(&[COMMIT_DOMAIN, segment_header, frontier])
}

/// Digest of an index run's head: `SHA-256(RUN_DOMAIN | run header | directory)`.
pub fn run_head_digest(run_header: &[u8], directory: &[u8]) -> Digest {
    sha256_parts(&[RUN_DOMAIN, run_header, directory])
}

/// Digest of one page of an index run: `SHA-256(RUN_PAGE_DOMAIN | page)`.
pub fn run_page_digest(page: &[u8]) -> Digest {
    sha256_parts(&[RUN_PAGE_DOMAIN, page])
}
