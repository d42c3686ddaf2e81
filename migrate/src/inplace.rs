//! Reading every MAIF variant in place, read-only: which variant a location holds, and a
//! view of a legacy source that `maif ls`, `cat`, `inspect` and `verify` can show as they
//! show a canonical artifact.
//!
//! [`detect`] decides from content, never from a name: a local file or single object that
//! starts with the canonical magic and a non-zero major version is canonical MAIF (the
//! store then reads it, or names the version it does not read), every legacy local format
//! is recognised by the same rules the migrator uses, and a prefix holding canonical commit
//! objects is the canonical object layout; any other prefix is checked for legacy S3 layouts
//! A and B.
//!
//! [`open_legacy`] reads a legacy source with the migrator's own readers and checks: it is a
//! dry run of [`crate::migrate::migrate`], so every block's id, type, status, checks, verdict
//! and metadata are exactly those the migration would give it and write, and
//! [`LegacyView::verify`] says what the migration report says. Nothing is ever written to
//! the source.

use bytes::Bytes;
use futures::StreamExt as _;
use maif_store::artifact::{format_id, format_time};
use maif_store::format::FourCC;
use maif_store::format::layout::{COMMITS_DIR, parse_commit_object_name};
use maif_store::location::{Location, S3Settings, open_object_store};
use maif_store::store::BlockStore;
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::error::{MigrateError, Result};
use crate::framing::Framing;
use crate::hmac::LegacyKey;
use crate::local;
use crate::migrate::{MigrateOptions, block_metadata, migrate};
use crate::model::{
    BlockStatus, Body, Check, Finding, LegacyArtifact, Outcome, Severity, SourceKind, sha256_hex,
};
use crate::report::{Counts, Report, Verdict};
use crate::s3::S3Source;
use crate::source::{self, Source};

/// At most this many keys are looked at under `commits/` to decide whether a prefix holds a
/// canonical artifact (one LIST page).
const COMMIT_PROBE_KEYS: usize = 1000;

/// Which MAIF variant a location holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "variant", content = "kind")]
pub enum Variant {
    /// Canonical MAIF (any version: the store reads 3.1 and names any other version).
    Canonical,
    /// A legacy source, read in place through [`open_legacy`].
    Legacy(SourceKind),
}

impl Variant {
    /// A short name: `canonical`, or the legacy kind (`python-sdk`, `s3-layout-a`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Variant::Canonical => "canonical",
            Variant::Legacy(kind) => kind.as_str(),
        }
    }

    /// What the variant is, for people.
    pub fn description(self) -> &'static str {
        match self {
            Variant::Canonical => "canonical MAIF",
            Variant::Legacy(kind) => kind_description(kind),
        }
    }
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.description())
    }
}

/// What each legacy kind is, for people.
pub fn kind_description(kind: SourceKind) -> &'static str {
    match kind {
        SourceKind::PythonSdk => "Python SDK 2.1 file",
        SourceKind::BinaryFormat => {
            "legacy binary_format.py file (80-byte big-endian block headers)"
        }
        SourceKind::BlockStorage => {
            "legacy block_storage.py file (72-byte little-endian block records)"
        }
        SourceKind::UnifiedLocal => "legacy unified_block_format.py file (228-byte block records)",
        SourceKind::S3LayoutA => "legacy S3BlockStorage prefix (layout A)",
        SourceKind::S3LayoutB => "legacy UnifiedStorage S3 prefix (layout B)",
    }
}

/// Whether `data` starts like a canonical MAIF file: the magic, then a non-zero major
/// version. Every legacy variant that shares the magic has major byte 0 (`MAIF 00 ..`).
fn canonical_magic(data: &[u8]) -> bool {
    data.starts_with(b"MAIF") && data.get(4).is_some_and(|major| *major != 0)
}

/// Whether a prefix holds canonical commit objects (the object layout).
async fn has_canonical_commits(prefix: &S3Source) -> Result<bool> {
    let dir = prefix.key(COMMITS_DIR);
    let path = ObjectPath::parse(&dir)
        .map_err(|e| MigrateError::Usage(format!("object key {dir:?}: {e}")))?;
    let mut listing = prefix.store.list(Some(&path)).take(COMMIT_PROBE_KEYS);
    while let Some(meta) = listing.next().await {
        let meta = meta.map_err(|source| MigrateError::Object {
            key: dir.clone(),
            source,
        })?;
        if meta
            .location
            .filename()
            .and_then(parse_commit_object_name)
            .is_some()
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The first bytes of a single object (`s3://bucket/name.maif`), enough to tell canonical
/// from legacy without fetching the whole object.
async fn object_front(source: &S3Source, key: &str) -> Result<Bytes> {
    let head = source.head(key).await?;
    if head.size == 0 {
        return Ok(Bytes::new());
    }
    let path = ObjectPath::parse(key)
        .map_err(|e| MigrateError::Usage(format!("object key {key:?}: {e}")))?;
    let options = GetOptions {
        range: Some(GetRange::Bounded(0..head.size.min(8))),
        if_match: head.etag.clone(),
        ..GetOptions::default()
    };
    let object_error = |source| MigrateError::Object {
        key: key.to_owned(),
        source,
    };
    let result = source
        .store
        .get_opts(&path, options)
        .await
        .map_err(object_error)?;
    result.bytes().await.map_err(object_error)
}

/// Which MAIF variant `location` holds, decided by content (never by a file extension):
///
/// * a local file or single object starting with `MAIF` and a non-zero major version is
///   [`Variant::Canonical`], whatever its version (opening it with the store then reads
///   3.1, or says which version it does not read);
/// * a local file or single object starting otherwise is detected as the migrator detects
///   legacy files (Python SDK 2.1, binary_format, block_storage, unified local); anything
///   else is an [`MigrateError::Unrecognized`] error naming its first bytes;
/// * a prefix holding canonical commit objects is [`Variant::Canonical`] (the object
///   layout); otherwise it is listed and checked for legacy S3 layouts A and B, and a prefix
///   with neither is an error.
pub async fn detect(location: &str, settings: &S3Settings) -> Result<Variant> {
    match Location::parse(location)? {
        Location::File(_) => {
            let Source::File { name, data } = source::open(location, settings).await? else {
                return Err(MigrateError::Usage(format!(
                    "{location}: expected a local file"
                )));
            };
            detect_bytes(&name, &data)
        }
        Location::ObjectFile { store, key } => {
            let object = S3Source {
                store: open_object_store(&store, settings)?,
                prefix: String::new(),
                url: location.to_owned(),
                concurrency: 1,
            };
            if canonical_magic(&object_front(&object, &key).await?) {
                return Ok(Variant::Canonical);
            }
            let data = object.fetch(&key, None).await?;
            detect_bytes(location, &data)
        }
        Location::Objects { .. } => {
            let Source::Prefix(prefix) = source::open(location, settings).await? else {
                return Err(MigrateError::Usage(format!(
                    "{location}: expected an object-store prefix"
                )));
            };
            detect_prefix(&prefix).await
        }
    }
}

/// The variant of a whole local file (or single object) held in memory.
pub fn detect_bytes(name: &str, data: &[u8]) -> Result<Variant> {
    if canonical_magic(data) {
        return Ok(Variant::Canonical);
    }
    local::detect(name, data).map(Variant::Legacy)
}

/// The variant of an object-store prefix.
pub async fn detect_prefix(prefix: &S3Source) -> Result<Variant> {
    if has_canonical_commits(prefix).await? {
        return Ok(Variant::Canonical);
    }
    let mut listing = prefix.list().await?;
    prefix.head_all(&mut listing.data, &|_| {}).await?;
    prefix.head_all(&mut listing.blocks, &|_| {}).await?;
    crate::s3::detect(prefix, &listing)
        .map(Variant::Legacy)
        .map_err(|e| match e {
            MigrateError::Unrecognized {
                source_name,
                reason,
            } if reason.starts_with("no legacy MAIF artifact") => MigrateError::Unrecognized {
                source_name,
                reason: format!(
                    "no canonical MAIF artifact (no commit objects under {COMMITS_DIR}/) and {reason}"
                ),
            },
            other => other,
        })
}

/// How a legacy source is read: the keys and pins its checks may use.
#[derive(Debug, Clone, Default)]
pub struct LegacyOptions {
    /// Legacy HMAC keys; every key is tried on every signature (as `--legacy-key`).
    pub legacy_keys: Vec<LegacyKey>,
    /// Pins the signer of a Python SDK file (as `--public-key`).
    pub public_key: Option<[u8; 32]>,
    /// Reads the source as this kind instead of detecting it (as `--from`).
    pub force: Option<SourceKind>,
}

/// One legacy block as `maif ls` shows a canonical block, with the legacy checks.
#[derive(Debug, Clone, Serialize)]
pub struct LegacyBlockInfo {
    /// Position in the source's (the migration's) block order, from 0.
    pub position: usize,
    /// The id the migration gives the block: the legacy uuid's 16 bytes (serialized as
    /// `id`, in `maif`'s uuid form).
    #[serde(rename = "id", serialize_with = "serialize_id")]
    pub block_id: [u8; 16],
    /// The id as the source spells it.
    pub legacy_id: String,
    /// The type the migration writes: the mapped FourCC, or `BINA` for a typed payload the
    /// evidence cannot frame.
    #[serde(serialize_with = "serialize_fourcc")]
    pub block_type: FourCC,
    /// The type exactly as the source has it.
    pub legacy_type: String,
    /// The version the migrated block gets (1 for the first block of an id, 2 for the next,
    /// ...), or `None` for a block that has no payload to migrate (dangling, encrypted).
    pub version: Option<u32>,
    /// Length of the legacy payload (what `payload` returns), when known.
    pub size: Option<u64>,
    /// Hex SHA-256 of the legacy payload, when it was read.
    pub sha256: Option<String>,
    pub timestamp_us: u64,
    pub status: BlockStatus,
    pub verdict: Verdict,
    pub checks: Vec<Check>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub framing: Option<Framing>,
    /// The metadata the migrated block carries: the caller's keys at the top level and the
    /// evidence, checks and verdict under `legacy`.
    pub metadata: Map<String, Value>,
}

fn serialize_id<S: serde::Serializer>(id: &[u8; 16], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_id(id))
}

fn serialize_fourcc<S: serde::Serializer>(code: &FourCC, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&code.to_string())
}

impl LegacyBlockInfo {
    /// The block id as `maif` prints ids.
    pub fn id(&self) -> String {
        format_id(&self.block_id)
    }

    /// A `maif ls --json` row: the canonical fields, plus the legacy status and verdict.
    pub fn ls_row(&self) -> Value {
        json!({
            "id": self.id(),
            "type": self.block_type.to_string(),
            "version": self.version,
            "size": self.size,
            "timestamp": format_time(self.timestamp_us),
            "metadata": self.metadata,
            "position": self.position,
            "status": self.status,
            "verdict": self.verdict,
            "legacy_id": self.legacy_id,
            "legacy_type": self.legacy_type,
            "sha256": self.sha256,
        })
    }
}

/// One block's verdict, as the migration report gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlockVerdict {
    pub legacy_id: String,
    pub block_id: String,
    pub status: BlockStatus,
    pub verdict: Verdict,
    pub checks: Vec<Check>,
}

/// The legacy checks of a whole source, as `maif verify` reports them.
#[derive(Debug, Clone, Serialize)]
pub struct LegacyVerification {
    pub source: String,
    pub kind: SourceKind,
    /// `failed` when the exit code is 1; else `unverifiable` when any block or source check
    /// could not be checked; else `verified`.
    pub verdict: Verdict,
    pub blocks: Vec<BlockVerdict>,
    pub counts: Counts,
    pub source_checks: Vec<Check>,
    pub findings: Vec<Finding>,
    /// Why the verdict is `failed`, one line each: failed checks, blocks that cannot be
    /// read, error findings.
    pub problems: Vec<String>,
    /// Exactly maif-migrate's exit code for this source: 0 nothing failed and nothing is
    /// lost (unverifiable blocks, orphans and chain gaps included), 1 otherwise.
    pub exit_code: u8,
}

/// A legacy source read in place, with the migrator's checks run over every block.
#[derive(Debug)]
pub struct LegacyView {
    artifact: LegacyArtifact,
    report: Report,
    blocks: Vec<LegacyBlockInfo>,
    /// The object store holding the bodies of an S3 source.
    prefix: Option<S3Source>,
}

/// Opens a legacy source in place, read-only: detects its kind (unless `options.force`
/// names one), reads it with the migrator's reader, and runs every check the migration
/// runs, fetching each body once (S3 bodies in windows of at most 256 MiB, pinned by ETag).
/// A canonical location is refused: read it with `maif_store`.
pub async fn open_legacy(
    location: &str,
    settings: &S3Settings,
    options: LegacyOptions,
) -> Result<LegacyView> {
    let source = source::open(location, settings).await?;
    let canonical = match &source {
        Source::File { data, .. } => canonical_magic(data),
        Source::Prefix(prefix) => has_canonical_commits(prefix).await?,
    };
    if canonical {
        return Err(MigrateError::Usage(format!(
            "{location} is canonical MAIF, not a legacy source: read it with maif_store (ArtifactReader)"
        )));
    }
    let artifact = source::read(&source, options.force, options.public_key, &|_| {}).await?;
    let concurrency = settings
        .concurrency
        .unwrap_or(maif_store::store::DEFAULT_CONCURRENCY);
    let prefix = source::prefix(&source).cloned();
    LegacyView::check(artifact, prefix, options.legacy_keys, concurrency).await
}

impl LegacyView {
    /// Runs the migration's checks over `artifact` (a dry run: nothing is written) and keeps
    /// what `ls`, `inspect` and `verify` show. Bodies of an S3 source come from `prefix`.
    pub async fn check(
        artifact: LegacyArtifact,
        prefix: Option<S3Source>,
        legacy_keys: Vec<LegacyKey>,
        concurrency: usize,
    ) -> Result<LegacyView> {
        let report = migrate(
            artifact.clone(),
            prefix.as_ref(),
            None,
            MigrateOptions {
                legacy_keys,
                dry_run: true,
                concurrency,
                ..MigrateOptions::default()
            },
        )
        .await?;
        if report.blocks.len() != artifact.blocks.len() {
            return Err(MigrateError::Usage(format!(
                "{}: the checks covered {} blocks of {}",
                artifact.source,
                report.blocks.len(),
                artifact.blocks.len()
            )));
        }
        let versions = artifact.migrated_versions();
        let blocks = artifact
            .blocks
            .iter()
            .zip(&report.blocks)
            .zip(versions)
            .enumerate()
            .map(|(position, ((block, checked), version))| LegacyBlockInfo {
                position,
                block_id: block.block_id,
                legacy_id: block.legacy_id.clone(),
                block_type: FourCC::parse(&checked.block_type).unwrap_or(block.block_type),
                legacy_type: block.legacy_type.clone(),
                version,
                size: checked.size,
                sha256: checked.sha256.clone(),
                timestamp_us: block.timestamp_us,
                status: block.status,
                verdict: checked.verdict,
                checks: checked.checks.clone(),
                framing: checked.framing.clone(),
                metadata: block_metadata(
                    block,
                    &checked.checks,
                    checked.verdict,
                    checked.framing.as_ref(),
                ),
            })
            .collect();
        Ok(LegacyView {
            artifact,
            report,
            blocks,
            prefix,
        })
    }

    pub fn kind(&self) -> SourceKind {
        self.artifact.kind
    }

    /// The source as it was named.
    pub fn source(&self) -> &str {
        &self.artifact.source
    }

    /// Every legacy block in migration order, including those with no payload (dangling,
    /// encrypted), which have no `version`.
    pub fn blocks(&self) -> &[LegacyBlockInfo] {
        &self.blocks
    }

    /// What the migration report of this source says (a dry run's report).
    pub fn report(&self) -> &Report {
        &self.report
    }

    /// The source read by the migrator's reader.
    pub fn artifact(&self) -> &LegacyArtifact {
        &self.artifact
    }

    /// The block `block_id` at `version` (1-based), or its latest version when `None`.
    pub fn find(&self, block_id: &[u8; 16], version: Option<u32>) -> Result<&LegacyBlockInfo> {
        let all: Vec<&LegacyBlockInfo> = self
            .blocks
            .iter()
            .filter(|b| b.block_id == *block_id)
            .collect();
        let Some(first) = all.first() else {
            return Err(maif_store::Error::UnknownBlock {
                block_id: format_id(block_id),
            }
            .into());
        };
        let readable: Vec<&LegacyBlockInfo> = all
            .iter()
            .copied()
            .filter(|b| b.version.is_some())
            .collect();
        let Some(latest) = readable.last() else {
            return Err(MigrateError::Usage(format!(
                "{}: block {} ({}) is {}: it has no payload to read",
                self.source(),
                first.id(),
                first.legacy_id,
                status_text(first.status)
            )));
        };
        match version {
            None => Ok(latest),
            Some(wanted) => readable
                .iter()
                .copied()
                .find(|b| b.version == Some(wanted))
                .ok_or_else(|| {
                    maif_store::Error::NoSuchVersion {
                        block_id: format_id(block_id),
                        version: wanted,
                        latest: latest.version.unwrap_or(0),
                    }
                    .into()
                }),
        }
    }

    /// Exactly what `maif cat` prints for the migrated block: the legacy payload bytes (a
    /// zlib-compressed binary_format block decoded, as it is migrated). An S3 body is fetched
    /// again, pinned to the version that was checked, and refused if its bytes changed.
    pub async fn payload(&self, block_id: &[u8; 16], version: Option<u32>) -> Result<Bytes> {
        let info = self.find(block_id, version)?;
        let block = self.artifact.blocks.get(info.position).ok_or_else(|| {
            MigrateError::Usage(format!(
                "{}: block position {} out of range",
                self.source(),
                info.position
            ))
        })?;
        let bytes = match &block.body {
            Body::Inline(bytes) => bytes.clone(),
            Body::Object { key, etag, .. } => {
                let prefix = self.prefix.as_ref().ok_or_else(|| {
                    MigrateError::Usage(format!(
                        "block {} lives in an object store, but the view has none",
                        block.legacy_id
                    ))
                })?;
                prefix.fetch(key, etag.as_deref()).await?
            }
            Body::Absent => {
                return Err(MigrateError::Usage(format!(
                    "{}: block {} has no payload ({})",
                    self.source(),
                    block.legacy_id,
                    status_text(block.status)
                )));
            }
        };
        if let Some(want) = &info.sha256
            && sha256_hex(&bytes) != *want
        {
            return Err(MigrateError::Unrecognized {
                source_name: self.source().to_owned(),
                reason: format!(
                    "block {}: its payload changed since it was checked (SHA-256 {want} when checked)",
                    block.legacy_id
                ),
            });
        }
        Ok(bytes)
    }

    /// Raw bytes of a named source section (headers, indexes, the SDK's sections): what
    /// the migration keeps in its `LGCY` source-sections block.
    pub fn section(&self, name: &str) -> Option<&Bytes> {
        self.artifact
            .sections
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, bytes)| bytes)
    }

    /// A description of the source for `maif inspect`: its kind, header and file-level
    /// fields, sections, counts, source checks, stray objects and every finding.
    pub fn inspect(&self) -> Value {
        let a = &self.artifact;
        let sections: Vec<Value> = a
            .sections
            .iter()
            .map(|(name, bytes)| {
                json!({"name": name, "length": bytes.len(), "sha256": sha256_hex(bytes)})
            })
            .collect();
        let stray: Vec<Value> = self
            .report
            .findings
            .iter()
            .filter(|f| f.kind == "stray_object")
            .map(|f| json!({"key": f.subject, "message": f.message}))
            .collect();
        let verification = self.verify();
        json!({
            "variant": "legacy",
            "kind": a.kind.as_str(),
            "description": kind_description(a.kind),
            "source": a.source,
            "created": a.created_us.map(format_time),
            "created_us": a.created_us,
            "artifact_id": a.artifact_id.as_ref().map(format_id),
            "agent_id": a.agent_id,
            "file_level": a.file_level,
            "sections": sections,
            "counts": self.report.counts,
            "source_checks": a.checks,
            "stray_objects": stray,
            "findings": self.report.findings,
            "verdict": verification.verdict,
            "exit_code": verification.exit_code,
        })
    }

    /// The legacy checks' verdicts, per block and overall, as the migration report gives
    /// them, and the exit code maif-migrate would end with.
    pub fn verify(&self) -> LegacyVerification {
        let report = &self.report;
        let exit_code = u8::try_from(report.exit_code()).unwrap_or(1);
        let mut problems = Vec::new();
        for check in &report.source_checks {
            if let Outcome::Fail(why) = &check.outcome {
                problems.push(format!("source check {} failed: {why}", check.check));
            }
        }
        for block in &report.blocks {
            for check in &block.checks {
                if let Outcome::Fail(why) = &check.outcome {
                    problems.push(format!(
                        "block {} check {} failed: {why}",
                        block.legacy_id, check.check
                    ));
                }
            }
            if !block.migrated {
                problems.push(format!(
                    "block {} is {}: its payload cannot be read",
                    block.legacy_id,
                    status_text(block.status)
                ));
            }
        }
        for finding in report
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
        {
            problems.push(format!(
                "{} {}: {}",
                finding.kind, finding.subject, finding.message
            ));
        }
        let open = report
            .blocks
            .iter()
            .any(|b| b.verdict == Verdict::Unverifiable)
            || report
                .source_checks
                .iter()
                .any(|c| matches!(c.outcome, Outcome::Unverifiable(_)));
        let anything_passed = report.blocks.iter().any(|b| b.verdict == Verdict::Verified)
            || report
                .source_checks
                .iter()
                .any(|c| c.outcome == Outcome::Pass);
        let verdict = if exit_code != 0 {
            Verdict::Failed
        } else if open || !anything_passed {
            Verdict::Unverifiable
        } else {
            Verdict::Verified
        };
        LegacyVerification {
            source: report.source.clone(),
            kind: report.kind,
            verdict,
            blocks: report
                .blocks
                .iter()
                .map(|b| BlockVerdict {
                    legacy_id: b.legacy_id.clone(),
                    block_id: b.block_id.clone(),
                    status: b.status,
                    verdict: b.verdict,
                    checks: b.checks.clone(),
                })
                .collect(),
            counts: report.counts.clone(),
            source_checks: report.source_checks.clone(),
            findings: report.findings.clone(),
            problems,
            exit_code,
        }
    }
}

fn status_text(status: BlockStatus) -> &'static str {
    match status {
        BlockStatus::Live => "live",
        BlockStatus::Orphan => "orphan (not in the legacy index)",
        BlockStatus::Dangling => "dangling (in the legacy index, object missing)",
        BlockStatus::SoftDeleted => "soft-deleted",
        BlockStatus::OverwrittenInPlace => "overwritten in place",
        BlockStatus::Superseded => "superseded",
        BlockStatus::UpdateRecord => "an update record",
        BlockStatus::DeletionRecord => "a deletion record",
        BlockStatus::Encrypted => "encrypted, with no key anywhere",
    }
}

/// A location opened for reading, whichever variant it holds.
pub enum Opened {
    /// Canonical MAIF: the store, for `maif_store`'s reader (which names an unsupported
    /// version itself).
    Canonical(std::sync::Arc<dyn BlockStore>),
    /// A legacy source, checked.
    Legacy(Box<LegacyView>),
}

/// Detects `location`'s variant and opens it: canonical MAIF as a store, a legacy source as
/// a checked [`LegacyView`].
pub async fn open(location: &str, settings: &S3Settings, options: LegacyOptions) -> Result<Opened> {
    match detect(location, settings).await? {
        Variant::Canonical => Ok(Opened::Canonical(
            Location::parse(location)?.store_with(settings)?,
        )),
        Variant::Legacy(kind) => {
            let options = LegacyOptions {
                force: options.force.or(Some(kind)),
                ..options
            };
            open_legacy(location, settings, options)
                .await
                .map(|view| Opened::Legacy(Box::new(view)))
        }
    }
}
