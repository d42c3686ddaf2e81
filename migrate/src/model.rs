//! What every legacy reader hands to the migrator: one shape, whatever the source format.

use bytes::Bytes;
use maif_store::format::FourCC;
use serde::Serialize;
use serde_json::{Map, Value};

/// The legacy input formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    /// S3 `block_index.json` + `data/<uuid>` (S3BlockStorage), v0 and v1 metadata.
    S3LayoutA,
    /// S3 `unified_index.json` + `blocks/<uuid>` (UnifiedStorage on AWS).
    S3LayoutB,
    /// `binary_format.py`: 144-byte big-endian file header, 80-byte block headers.
    BinaryFormat,
    /// `block_storage.py`: a bare run of 72-byte little-endian records.
    BlockStorage,
    /// `unified_block_format.py`: 228-byte big-endian records.
    UnifiedLocal,
    /// The Python SDK's signed single file, format 2.1.
    PythonSdk,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::S3LayoutA => "s3-layout-a",
            SourceKind::S3LayoutB => "s3-layout-b",
            SourceKind::BinaryFormat => "binary-format",
            SourceKind::BlockStorage => "block-storage",
            SourceKind::UnifiedLocal => "unified-local",
            SourceKind::PythonSdk => "python-sdk",
        }
    }

    pub fn is_s3(self) -> bool {
        matches!(self, SourceKind::S3LayoutA | SourceKind::S3LayoutB)
    }
}

/// The result of one named check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", content = "detail", rename_all = "snake_case")]
pub enum Outcome {
    Pass,
    /// The evidence contradicts the data: tampering, corruption or a writer bug.
    Fail(String),
    /// Nothing to check against (no key, no signature, no stored hash). Never a failure.
    Unverifiable(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub check: String,
    #[serde(flatten)]
    pub outcome: Outcome,
}

impl Check {
    pub fn pass(check: impl Into<String>) -> Self {
        Self {
            check: check.into(),
            outcome: Outcome::Pass,
        }
    }

    pub fn fail(check: impl Into<String>, why: impl Into<String>) -> Self {
        Self {
            check: check.into(),
            outcome: Outcome::Fail(why.into()),
        }
    }

    pub fn unverifiable(check: impl Into<String>, why: impl Into<String>) -> Self {
        Self {
            check: check.into(),
            outcome: Outcome::Unverifiable(why.into()),
        }
    }

    /// Pass when `ok`, else a failure saying why.
    pub fn expect(check: impl Into<String>, ok: bool, why: impl FnOnce() -> String) -> Self {
        if ok {
            Self::pass(check)
        } else {
            Self::fail(check, why())
        }
    }
}

/// What a block was in its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockStatus {
    /// Present and referenced by the legacy index (or the format has no index).
    Live,
    /// Present but not in the legacy index (e.g. a second writer's block). Migrated, flagged.
    Orphan,
    /// In the legacy index, object missing. Reported; its header is carried as evidence.
    Dangling,
    /// Marked deleted by a later deletion record; the data is still there and is migrated.
    SoftDeleted,
    /// Rewritten in place by a legacy update: only the current payload exists.
    OverwrittenInPlace,
    /// A later update record supersedes it.
    Superseded,
    /// An update record (a new version of another block).
    UpdateRecord,
    /// A legacy deletion record with no surviving target.
    DeletionRecord,
    /// The stored body is ciphertext with no key anywhere: never migrated as plaintext.
    Encrypted,
}

/// Where a block's payload comes from.
#[derive(Debug, Clone)]
pub enum Body {
    /// Already in memory (local files are mapped and sliced).
    Inline(Bytes),
    /// An object still to be fetched; `etag` pins the version whose metadata was read.
    Object {
        key: String,
        etag: Option<String>,
        size: u64,
    },
    /// There is no payload to migrate (dangling, encrypted).
    Absent,
}

/// A legacy HMAC-SHA256 signature, kept exactly as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyHmac {
    /// The signature JSON text verbatim.
    pub json_text: String,
    pub algorithm: String,
    pub key_id: String,
    /// The timestamp token as it appears in the JSON text (signed as text).
    pub timestamp_token: String,
    pub nonce: String,
    pub signature_b64: String,
}

/// Checks that need the payload, run when the body is at hand.
#[derive(Debug, Clone, Default)]
pub struct BodyChecks {
    /// Size the source declares for the payload.
    pub declared_size: Option<u64>,
    /// Hex SHA-256 the source declares for the payload, and where it says so.
    pub declared_sha256: Option<(String, String)>,
    pub hmac: Option<LegacyHmac>,
    /// Whether the format signs blocks (so a missing signature is worth reporting).
    pub signature_expected: bool,
}

/// One block of a legacy artifact.
#[derive(Debug, Clone)]
pub struct LegacyBlock {
    /// The id as the source spells it (uuid text, or hex for 16 raw bytes).
    pub legacy_id: String,
    /// The canonical block id (the legacy id's 16 bytes).
    pub block_id: [u8; 16],
    /// The type exactly as the source has it (e.g. `BIN`, `BIN `, or `0x0000abcd`).
    pub legacy_type: String,
    pub block_type: FourCC,
    pub timestamp_us: u64,
    pub status: BlockStatus,
    /// Everything the source says about the block, verbatim; stored under `legacy`.
    pub evidence: Map<String, Value>,
    /// The caller's metadata, exactly as the source kept it (strings stay strings).
    pub user_metadata: Map<String, Value>,
    pub body: Body,
    pub checks: Vec<Check>,
    pub body_checks: BodyChecks,
}

impl LegacyBlock {
    /// Whether this block's payload goes into the migrated artifact.
    pub fn migrates(&self) -> bool {
        !matches!(self.body, Body::Absent)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    /// Something was lost or contradicts the evidence.
    Error,
}

/// A finding about the source as a whole (orphans, gaps, forks, stray keys, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    pub kind: String,
    /// What it is about: a block id, object key, or byte offset.
    pub subject: String,
    pub message: String,
}

impl Finding {
    pub fn new(
        severity: Severity,
        kind: &str,
        subject: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            severity,
            kind: kind.into(),
            subject: subject.into(),
            message: message.into(),
        }
    }
}

/// A legacy artifact, read and checked, with its blocks in migration order.
#[derive(Debug, Clone)]
pub struct LegacyArtifact {
    pub kind: SourceKind,
    /// The source location as the user gave it.
    pub source: String,
    pub created_us: Option<u64>,
    pub artifact_id: Option<[u8; 16]>,
    pub agent_id: Option<String>,
    /// Artifact-level facts (header fields, index keys, ...), verbatim.
    pub file_level: Map<String, Value>,
    /// Source bytes that belong to no block (headers, indexes, sections), kept exactly.
    pub sections: Vec<(String, Bytes)>,
    pub blocks: Vec<LegacyBlock>,
    /// Checks of the source as a whole (file signature, checksums, footer, index).
    pub checks: Vec<Check>,
    pub findings: Vec<Finding>,
}

impl LegacyArtifact {
    /// Per block, in order: the version the migration writes it as (1 for the first block
    /// of an id, 2 for the next, ...), or `None` for a block whose payload is not migrated
    /// (dangling, encrypted). The one place this numbering is decided; migration, in-place
    /// reads and export all follow it.
    pub fn migrated_versions(&self) -> Vec<Option<u32>> {
        let mut counts: std::collections::HashMap<[u8; 16], u32> = std::collections::HashMap::new();
        self.blocks
            .iter()
            .map(|block| {
                block.migrates().then(|| {
                    let count = counts.entry(block.block_id).or_insert(0);
                    *count = count.saturating_add(1);
                    *count
                })
            })
            .collect()
    }

    pub fn new(kind: SourceKind, source: impl Into<String>) -> Self {
        Self {
            kind,
            source: source.into(),
            created_us: None,
            artifact_id: None,
            agent_id: None,
            file_level: Map::new(),
            sections: Vec::new(),
            blocks: Vec::new(),
            checks: Vec::new(),
            findings: Vec::new(),
        }
    }

    pub fn finding(
        &mut self,
        severity: Severity,
        kind: &str,
        subject: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.findings
            .push(Finding::new(severity, kind, subject, message));
    }
}

/// The canonical type for a legacy type: four printable bytes are kept, shorter ones are
/// space-padded (`BIN` -> `BIN `), anything else becomes `LGCY` (the verbatim type is kept
/// in the evidence either way).
pub fn canonical_type(raw: &[u8]) -> FourCC {
    let trimmed: &[u8] = {
        let end = raw.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
        &raw[..end]
    };
    let printable = |b: &u8| b.is_ascii_graphic() || *b == b' ';
    if !trimmed.is_empty() && trimmed.len() <= 4 && trimmed.iter().all(printable) {
        let mut code = [b' '; 4];
        code[..trimmed.len()].copy_from_slice(trimmed);
        FourCC(code)
    } else {
        FourCC(*b"LGCY")
    }
}

/// A legacy type as text: printable ASCII as is, anything else as `0x` + hex.
pub fn type_text(raw: &[u8]) -> String {
    if !raw.is_empty()
        && raw
            .iter()
            .all(|b| b.is_ascii_graphic() || *b == b' ' || *b == 0)
    {
        String::from_utf8_lossy(raw).into_owned()
    } else {
        format!("0x{}", hex::encode(raw))
    }
}

/// The canonical id for a legacy id: its uuid bytes, or (for ids that are not uuids) the
/// first 16 bytes of SHA-256 of the id text, so that the mapping is stable across runs.
pub fn block_id_for(legacy_id: &str) -> [u8; 16] {
    match uuid::Uuid::parse_str(legacy_id) {
        Ok(id) => *id.as_bytes(),
        Err(_) => {
            let digest = sha256(legacy_id.as_bytes());
            let mut id = [0u8; 16];
            id.copy_from_slice(&digest[..16]);
            id
        }
    }
}

pub use maif_store::format::digest::{sha256, sha256_parts};

/// Hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(sha256(data))
}
