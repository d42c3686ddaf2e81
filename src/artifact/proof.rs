//! Self-contained proofs: that a block belongs to a signed commit (inclusion), and that one
//! signed commit extends another (consistency), checkable offline with nothing but the proof.
//!
//! A proof carries the artifact's file header and metadata section (so the verifier derives
//! the public key and the chain seed itself), each commit's segment header, Merkle frontier
//! and signature (so it recomputes the commit digest and checks the signature), and the RFC
//! 9162 audit or consistency path. Every field is checked, and the JSON must be exactly as
//! `maif prove` writes it (hex in lowercase, pretty-printed), so no byte of a valid proof can
//! change without the proof failing.

use serde::{Deserialize, Serialize};

use super::commit::{Commit, Identity};
use super::reader::{ArtifactReader, walk_commits};
use crate::error::{Error, Result};
use crate::format::Codec;
use crate::format::block::{BLOCK_HEADER_LEN, BlockHeader};
use crate::format::digest::{Digest, record_digest};
use crate::format::merkle::{
    consistency_proof, inclusion_proof, verify_consistency, verify_inclusion,
};
use crate::format::segment::SEGMENT_HEADER_LEN;
use crate::format::{RecordView, SegmentHead, SegmentHeader};
use crate::store::Base;

/// The proof format version this build writes and reads.
pub const PROOF_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProofBase {
    file_header: String,
    metadata_section: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProofCommit {
    segment_header: String,
    frontier: String,
    signature: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProofLeaf {
    position: u64,
    record_header: String,
    content_digest: String,
}

/// A proof as written: JSON, in one of two kinds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum ProofDocument {
    Inclusion {
        maif_proof: u32,
        base: ProofBase,
        commit: ProofCommit,
        leaf: ProofLeaf,
        audit_path: Vec<String>,
    },
    Consistency {
        maif_proof: u32,
        base: ProofBase,
        old_commit: ProofCommit,
        new_commit: ProofCommit,
        consistency_path: Vec<String>,
    },
}

/// What a checked proof establishes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProofCheck {
    /// `"inclusion"` or `"consistency"`: which kind of proof was checked.
    pub kind: &'static str,
    /// Hex of the artifact's Ed25519 public key, which signed the commits named.
    pub public_key: String,
    /// The artifact id from the file header, as a UUID string.
    pub artifact_id: String,
    /// The commit the proof is against (the newer one for consistency).
    pub commit: u64,
    /// Number of records (Merkle leaves) at `commit`.
    pub tree_size: u64,
    /// Hex of `commit`'s Merkle root.
    pub merkle_root: String,
    /// Consistency proofs only: the older commit's sequence number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_commit: Option<u64>,
    /// Consistency proofs only: the number of records at the older commit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_tree_size: Option<u64>,
    /// Inclusion proofs only: the proven block's id, as a UUID string.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block_id: Option<String>,
    /// Inclusion proofs only: the proven block's type code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block_type: Option<String>,
    /// Inclusion proofs only: the record's position in record order (its leaf index).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
    /// Inclusion proofs only: hex of the proven record's digest (the Merkle leaf).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_digest: Option<String>,
}

fn proof_base(base: &Base) -> ProofBase {
    ProofBase {
        file_header: hex::encode(&base.file_header),
        metadata_section: hex::encode(&base.metadata_section),
    }
}

fn proof_commit(commit: &Commit) -> ProofCommit {
    ProofCommit {
        segment_header: hex::encode(commit.head.header_bytes),
        frontier: hex::encode(&commit.head.frontier_bytes),
        signature: hex::encode(commit.head.signature),
    }
}

fn render(document: &ProofDocument) -> Result<String> {
    serde_json::to_string_pretty(document)
        .map(|text| text + "\n")
        .map_err(|e| Error::Invalid(format!("writing the proof: {e}")))
}

/// Finds the commit numbered `seq` of the artifact.
async fn commit_at(reader: &ArtifactReader, seq: u64) -> Result<Commit> {
    if seq == reader.commit().seq() {
        return Ok(reader.commit().clone());
    }
    if seq > reader.commit().seq() {
        return Err(Error::Invalid(format!(
            "there is no commit {seq}: the newest is {}",
            reader.commit().seq()
        )));
    }
    let chain = walk_commits(reader.index(), reader.commit()).await?;
    chain
        .get(seq as usize)
        .cloned()
        .ok_or_else(|| Error::Invalid(format!("there is no commit {seq}")))
}

/// The record digests of the first `size` records, in order.
async fn leaves(reader: &ArtifactReader, size: u64) -> Result<Vec<Digest>> {
    Ok(reader
        .blocks()
        .await?
        .iter()
        .take(size as usize)
        .map(|b| b.entry.digest)
        .collect())
}

/// A proof that version `version` (latest when `None`) of block `block_id` is included in the
/// artifact's newest commit.
pub async fn prove_inclusion(
    reader: &ArtifactReader,
    block_id: &[u8; 16],
    version: Option<u32>,
) -> Result<String> {
    let info = reader.find(block_id, version).await?;
    let commit = reader.commit();
    let digests = leaves(reader, commit.record_count()).await?;
    let path = inclusion_proof(&digests, info.position as usize)
        .ok_or_else(|| Error::Invalid(format!("position {} is outside the tree", info.position)))?;
    let bytes = reader.store().read_record(&info.entry).await?;
    let record = RecordView::decode(&bytes).map_err(Error::format(format!(
        "block {} at offset {}",
        info.id(),
        info.entry.offset
    )))?;
    if record.digest() != info.entry.digest {
        return Err(Error::Verification(format!(
            "block {}: the record does not match its committed digest",
            info.id()
        )));
    }
    render(&ProofDocument::Inclusion {
        maif_proof: PROOF_VERSION,
        base: proof_base(&reader.identity().base),
        commit: proof_commit(commit),
        leaf: ProofLeaf {
            position: info.position,
            record_header: hex::encode(record.header_bytes),
            content_digest: hex::encode(record.content_digest()),
        },
        audit_path: path.iter().map(hex::encode).collect(),
    })
}

/// A proof that commit `new` extends commit `old` (every record of `old` is the start of
/// `new`'s tree, unchanged).
pub async fn prove_consistency(reader: &ArtifactReader, old: u64, new: u64) -> Result<String> {
    if old > new {
        return Err(Error::Invalid(format!(
            "commit {old} is newer than commit {new}: give the older one first"
        )));
    }
    let old_commit = commit_at(reader, old).await?;
    let new_commit = commit_at(reader, new).await?;
    let digests = leaves(reader, new_commit.record_count()).await?;
    let path =
        consistency_proof(&digests, old_commit.record_count() as usize).ok_or_else(|| {
            Error::Invalid("the older commit holds more records than the newer".into())
        })?;
    render(&ProofDocument::Consistency {
        maif_proof: PROOF_VERSION,
        base: proof_base(&reader.identity().base),
        old_commit: proof_commit(&old_commit),
        new_commit: proof_commit(&new_commit),
        consistency_path: path.iter().map(hex::encode).collect(),
    })
}

fn invalid(reason: impl Into<String>) -> Error {
    Error::Verification(format!("the proof does not hold: {}", reason.into()))
}

/// Lowercase hex only, so a field has exactly one spelling.
fn unhex(field: &str, text: &str) -> Result<Vec<u8>> {
    let bytes = hex::decode(text).map_err(|e| invalid(format!("{field} is not hex: {e}")))?;
    if hex::encode(&bytes) != text {
        return Err(invalid(format!("{field} is not lowercase hex")));
    }
    Ok(bytes)
}

fn unhex_digest(field: &str, text: &str) -> Result<Digest> {
    unhex(field, text)?
        .try_into()
        .map_err(|_| invalid(format!("{field} is not 32 bytes")))
}

/// A commit of a proof, checked: it belongs to `identity` and its signature verifies.
fn check_commit(name: &str, commit: &ProofCommit, identity: &Identity) -> Result<Commit> {
    let header_bytes = unhex(&format!("{name}.segment_header"), &commit.segment_header)?;
    if header_bytes.len() != SEGMENT_HEADER_LEN {
        return Err(invalid(format!(
            "{name}.segment_header is not {SEGMENT_HEADER_LEN} bytes"
        )));
    }
    let header = SegmentHeader::decode(&header_bytes)
        .map_err(|e| invalid(format!("{name}.segment_header: {e}")))?;
    let frontier_bytes = unhex(&format!("{name}.frontier"), &commit.frontier)?;
    let signature: [u8; 64] = unhex(&format!("{name}.signature"), &commit.signature)?
        .try_into()
        .map_err(|_| invalid(format!("{name}.signature is not 64 bytes")))?;
    let mut prefix = header_bytes;
    prefix.extend_from_slice(&signature);
    prefix.extend_from_slice(&frontier_bytes);
    let head = SegmentHead::decode_prefix(&prefix).map_err(|e| invalid(format!("{name}: {e}")))?;
    if head.frontier_bytes.len() != frontier_bytes.len() {
        return Err(invalid(format!(
            "{name}.frontier has bytes its tree does not need"
        )));
    }
    let commit = Commit {
        digest: head.commit_digest(),
        head,
    };
    if header.genesis != identity.genesis {
        return Err(invalid(format!("{name} belongs to another artifact")));
    }
    if !commit.signed_by(&identity.key) {
        return Err(invalid(format!(
            "{name}'s signature does not verify under the artifact's key"
        )));
    }
    Ok(commit)
}

/// Checks a proof written by [`prove_inclusion`] or [`prove_consistency`], offline. With
/// `expected_key`, the artifact must be signed by that key.
pub fn verify_proof(text: &str, expected_key: Option<[u8; 32]>) -> Result<ProofCheck> {
    let document: ProofDocument =
        serde_json::from_str(text).map_err(|e| invalid(format!("not a MAIF proof: {e}")))?;
    if render(&document)? != text {
        return Err(invalid(
            "it is not exactly as `maif prove` writes it (a byte was changed, added or removed)",
        ));
    }
    let (version, base) = match &document {
        ProofDocument::Inclusion {
            maif_proof, base, ..
        }
        | ProofDocument::Consistency {
            maif_proof, base, ..
        } => (*maif_proof, base),
    };
    if version != PROOF_VERSION {
        return Err(invalid(format!(
            "proof format {version}; this build reads {PROOF_VERSION}"
        )));
    }
    let identity = Identity::decode(Base {
        file_header: unhex("base.file_header", &base.file_header)?.into(),
        metadata_section: unhex("base.metadata_section", &base.metadata_section)?.into(),
    })
    .map_err(|e| invalid(format!("base: {e}")))?;
    if let Some(expected) = expected_key
        && expected != identity.key.to_bytes()
    {
        return Err(invalid(format!(
            "the artifact is signed by {}, not by the expected key {}",
            hex::encode(identity.key.to_bytes()),
            hex::encode(expected)
        )));
    }
    let mut check = ProofCheck {
        kind: "",
        public_key: hex::encode(identity.key.to_bytes()),
        artifact_id: super::format_id(&identity.header.artifact_id),
        commit: 0,
        tree_size: 0,
        merkle_root: String::new(),
        old_commit: None,
        old_tree_size: None,
        block_id: None,
        block_type: None,
        position: None,
        record_digest: None,
    };
    match &document {
        ProofDocument::Inclusion {
            commit,
            leaf,
            audit_path,
            ..
        } => {
            let commit = check_commit("commit", commit, &identity)?;
            let header_bytes = unhex("leaf.record_header", &leaf.record_header)?;
            if header_bytes.len() != BLOCK_HEADER_LEN {
                return Err(invalid(format!(
                    "leaf.record_header is not {BLOCK_HEADER_LEN} bytes"
                )));
            }
            let block = BlockHeader::decode(&header_bytes)
                .map_err(|e| invalid(format!("leaf.record_header: {e}")))?;
            let content = unhex_digest("leaf.content_digest", &leaf.content_digest)?;
            let digest = record_digest(&header_bytes, &content);
            let path = audit_path
                .iter()
                .enumerate()
                .map(|(n, h)| unhex_digest(&format!("audit_path[{n}]"), h))
                .collect::<Result<Vec<_>>>()?;
            let header = commit.header();
            if !verify_inclusion(
                &digest,
                leaf.position,
                header.record_count,
                &path,
                &header.merkle_root,
            ) {
                return Err(invalid(format!(
                    "the record is not leaf {} of commit {}'s tree",
                    leaf.position, header.seq
                )));
            }
            check.kind = "inclusion";
            check.commit = header.seq;
            check.tree_size = header.record_count;
            check.merkle_root = hex::encode(header.merkle_root);
            check.block_id = Some(super::format_id(&block.block_id));
            check.block_type = Some(block.block_type.to_string());
            check.position = Some(leaf.position);
            check.record_digest = Some(hex::encode(digest));
        }
        ProofDocument::Consistency {
            old_commit,
            new_commit,
            consistency_path,
            ..
        } => {
            let old = check_commit("old_commit", old_commit, &identity)?;
            let new = check_commit("new_commit", new_commit, &identity)?;
            let path = consistency_path
                .iter()
                .enumerate()
                .map(|(n, h)| unhex_digest(&format!("consistency_path[{n}]"), h))
                .collect::<Result<Vec<_>>>()?;
            let (o, n) = (old.header(), new.header());
            if o.seq > n.seq {
                return Err(invalid("the old commit is newer than the new one"));
            }
            if o.seq == n.seq && old.digest != new.digest {
                return Err(invalid("two different commits with one number"));
            }
            if !verify_consistency(
                o.record_count,
                n.record_count,
                &o.merkle_root,
                &n.merkle_root,
                &path,
            ) {
                return Err(invalid(format!(
                    "commit {}'s tree ({} records) is not a prefix of commit {}'s ({} records)",
                    o.seq, o.record_count, n.seq, n.record_count
                )));
            }
            check.kind = "consistency";
            check.commit = n.seq;
            check.tree_size = n.record_count;
            check.merkle_root = hex::encode(n.merkle_root);
            check.old_commit = Some(o.seq);
            check.old_tree_size = Some(o.record_count);
        }
    }
    Ok(check)
}
