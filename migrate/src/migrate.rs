//! Writes a read legacy artifact as canonical MAIF, block by block, and reports.
//!
//! Each migrated block keeps its legacy id, type, timestamp and exact payload (TEXT, EMBD
//! and IMAG payloads inside their canonical framing, see [`crate::framing`]); its metadata
//! holds the caller's metadata at the top level and, under `legacy`, everything the source
//! said about it (verbatim) plus the checks and the verdict. Source bytes that belong to no
//! block (headers, indexes, sections) go into one `LGCY` block first. The run commits
//! every few hundred blocks, so an interrupted migration resumes where it stopped: blocks
//! whose id the destination already holds are skipped.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _};
use maif_store::artifact::{ArtifactReader, VerifyOptions, format_id, verify};
use maif_store::format::FourCC;
use maif_store::format::provenance::Action;
use maif_store::store::{BlockStore, StoreError};
use maif_store::{ArtifactWriter, CreateOptions, NewBlock, SigningKey};
use serde_json::{Map, Value, json};

use crate::error::{MigrateError, Result};
use crate::framing::{Framed, Framing, frame};
use crate::hmac::{LegacyKey, run_body_checks};
use crate::model::{
    Body, Check, Finding, LegacyArtifact, LegacyBlock, Outcome, Severity, sha256_hex,
};
use crate::report::{BlockReport, Counts, Report, Verdict};
use crate::s3::S3Source;

/// The type of the block holding source bytes that belong to no legacy block.
pub const SOURCE_SECTIONS_TYPE: FourCC = FourCC(*b"LGCY");
/// Commit after this many blocks or bytes, so an interrupted run loses little.
const COMMIT_EVERY_BLOCKS: usize = 500;
const COMMIT_EVERY_BYTES: u64 = 256 << 20;
/// Bodies fetched ahead of the writer, by bytes (at least one block is always in flight).
const FETCH_WINDOW_BYTES: u64 = 256 << 20;
/// Provenance details above this size list their blocks in an `LGCY` block instead.
const MAX_INLINE_DETAILS: usize = 768 * 1024;

/// TEST HOOK, for tests only; inert unless the variable is set. With
/// `MAIF_TEST_STOP_AFTER_UPLOADS=N` (read once per process) a migration exits the process at
/// once, with [`TEST_STOP_EXIT_CODE`] and no cleanup (as a kill would), right after its writer
/// has taken the Nth record of this run (the `LGCY` blocks count) and started uploading it.
/// Uploads still in flight then (at most `--concurrency`) may or may not land, as with a kill;
/// the commits that landed are exactly those made before the Nth record. Tests use it to
/// interrupt a migration at a chosen point instead of racing a kill against the run.
pub const TEST_STOP_AFTER_UPLOADS: &str = "MAIF_TEST_STOP_AFTER_UPLOADS";
/// The exit code of a process stopped by [`TEST_STOP_AFTER_UPLOADS`] (test hook only).
pub const TEST_STOP_EXIT_CODE: i32 = 86;

/// Counts the records a migration hands to its writer, for the [`TEST_STOP_AFTER_UPLOADS`]
/// test hook.
struct TestStop {
    at: Option<u64>,
    records: u64,
}

impl TestStop {
    fn from_env() -> Self {
        static AT: OnceLock<Option<u64>> = OnceLock::new();
        let at = *AT.get_or_init(|| {
            std::env::var(TEST_STOP_AFTER_UPLOADS)
                .ok()
                .and_then(|v| v.trim().parse().ok())
        });
        TestStop { at, records: 0 }
    }

    /// Called after each record the writer took.
    fn record_taken(&mut self) {
        self.records += 1;
        if self.at == Some(self.records) {
            eprintln!(
                "maif-migrate: test hook {TEST_STOP_AFTER_UPLOADS}: stopping after {} records",
                self.records
            );
            std::process::exit(TEST_STOP_EXIT_CODE);
        }
    }
}

pub struct MigrateOptions {
    /// Signs the migrated artifact; `None` only for a dry run.
    pub key: Option<SigningKey>,
    pub legacy_keys: Vec<LegacyKey>,
    pub dry_run: bool,
    /// Object requests in flight.
    pub concurrency: usize,
    /// The migrated artifact's agent id.
    pub agent_id: String,
    /// Called with the number of blocks just handled.
    pub progress: Box<dyn Fn(u64) + Send + Sync>,
}

impl Default for MigrateOptions {
    fn default() -> Self {
        Self {
            key: None,
            legacy_keys: Vec::new(),
            dry_run: false,
            concurrency: maif_store::store::DEFAULT_CONCURRENCY,
            agent_id: "maif-migrate".into(),
            progress: Box::new(|_| {}),
        }
    }
}

/// The id of the source-sections block: stable per source, so a resumed run finds it.
fn sections_block_id(artifact: &LegacyArtifact) -> [u8; 16] {
    sections_block_id_for(artifact.kind, &artifact.source)
}

/// The source-sections block id of a migration of `source` (as `migrated_from` names it).
pub(crate) fn sections_block_id_for(kind: crate::model::SourceKind, source: &str) -> [u8; 16] {
    let mut id = [0u8; 16];
    let digest = crate::model::sha256(
        format!("maif-migrate:source-sections:{}:{source}", kind.as_str()).as_bytes(),
    );
    id.copy_from_slice(&digest[..16]);
    id
}

fn sections_block(artifact: &LegacyArtifact) -> Option<NewBlock> {
    if artifact.sections.is_empty()
        && artifact.file_level.is_empty()
        && artifact.findings.is_empty()
    {
        return None;
    }
    // Checks and findings can be many (one per stray key); they go in the payload, where
    // no metadata size limit applies.
    let source_report = serde_json::to_vec(&json!({
        "checks": artifact.checks,
        "findings": artifact.findings,
    }))
    .unwrap_or_default();
    let mut payload = Vec::with_capacity(
        artifact
            .sections
            .iter()
            .map(|(_, b)| b.len())
            .sum::<usize>()
            + source_report.len(),
    );
    let mut sections = Vec::new();
    let named: Vec<(&str, &[u8])> = artifact
        .sections
        .iter()
        .map(|(name, bytes)| (name.as_str(), bytes.as_ref()))
        .chain(std::iter::once((
            "migration_source_report.json",
            source_report.as_slice(),
        )))
        .collect();
    for (name, bytes) in named {
        sections.push(json!({
            "name": name,
            "offset": payload.len(),
            "length": bytes.len(),
            "sha256": sha256_hex(bytes),
        }));
        payload.extend_from_slice(bytes);
    }
    let legacy = json!({
        "kind": "source-sections",
        "format": artifact.kind.as_str(),
        "source": artifact.source,
        "file_level": artifact.file_level,
        "sections": sections,
        "failed_checks": artifact.checks.iter().filter(|c| matches!(c.outcome, Outcome::Fail(_))).count(),
        "findings": artifact.findings.len(),
    });
    let mut metadata = Map::new();
    metadata.insert("legacy".into(), legacy);
    Some(
        NewBlock::new(SOURCE_SECTIONS_TYPE, payload)
            .with_id(sections_block_id(artifact))
            .with_timestamp(source_timestamp_us(artifact))
            .with_metadata(&metadata),
    )
}

/// The timestamp of the blocks the migration itself makes, taken from the source (its
/// creation time, else its earliest block, else zero) rather than the clock: a re-run then
/// makes the same records, byte for byte, and reuses those an interrupted run uploaded.
fn source_timestamp_us(artifact: &LegacyArtifact) -> u64 {
    artifact
        .created_us
        .or_else(|| artifact.blocks.iter().map(|b| b.timestamp_us).min())
        .unwrap_or(0)
}

/// The migrated block's metadata: the caller's keys at the top level, the evidence under
/// `legacy` (with how the payload was framed). A caller key named `legacy` stays inside
/// `legacy.user_metadata` only.
pub fn block_metadata(
    block: &LegacyBlock,
    checks: &[Check],
    verdict: Verdict,
    framing: Option<&Framing>,
) -> Map<String, Value> {
    let mut metadata: Map<String, Value> = block
        .user_metadata
        .iter()
        .filter(|(k, _)| k.as_str() != "legacy")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut legacy = block.evidence.clone();
    legacy.insert("id".into(), json!(block.legacy_id));
    legacy.insert("type".into(), json!(block.legacy_type));
    legacy.insert("status".into(), json!(block.status));
    legacy.insert("timestamp_us".into(), json!(block.timestamp_us));
    if !block.user_metadata.is_empty() {
        legacy.insert(
            "user_metadata".into(),
            Value::Object(block.user_metadata.clone()),
        );
    }
    legacy.insert("checks".into(), json!(checks));
    legacy.insert("verdict".into(), json!(verdict));
    if let Some(framing) = framing {
        legacy.insert("framing".into(), json!(framing));
    }
    metadata.insert("legacy".into(), Value::Object(legacy));
    metadata
}

/// Fetches bodies ahead of the writer in order, with at most `concurrency` requests and
/// about `FETCH_WINDOW_BYTES` in flight.
async fn fetch_window(
    source: Option<&S3Source>,
    blocks: &[&LegacyBlock],
    concurrency: usize,
) -> Result<Vec<Option<Bytes>>> {
    futures::stream::iter(blocks.iter().map(|block| async move {
        match &block.body {
            Body::Inline(bytes) => Ok(Some(bytes.clone())),
            Body::Absent => Ok(None),
            Body::Object { key, etag, .. } => match source {
                Some(source) => source.fetch(key, etag.as_deref()).await.map(Some),
                None => Err(MigrateError::Usage(format!(
                    "block {} lives in an object store, but no object store was given",
                    block.legacy_id
                ))),
            },
        }
    }))
    .buffered(concurrency.max(1))
    .try_collect()
    .await
}

fn body_size(block: &LegacyBlock) -> u64 {
    match &block.body {
        Body::Inline(bytes) => bytes.len() as u64,
        Body::Object { size, .. } => *size,
        Body::Absent => 0,
    }
}

/// What the destination already holds of this migration.
struct Existing {
    writer: Option<ArtifactWriter>,
    /// Versions the destination already holds, per block id.
    present: HashMap<[u8; 16], u32>,
    migrate_recorded: bool,
}

async fn open_destination(
    artifact: &LegacyArtifact,
    store: Arc<dyn BlockStore>,
    key: SigningKey,
    agent_id: &str,
) -> Result<Existing> {
    match store.latest().await {
        Ok(_) => {}
        Err(StoreError::NotFound { .. }) => {
            let mut custom = std::collections::BTreeMap::new();
            custom.insert("migrated_from".into(), artifact.source.clone());
            custom.insert("legacy_format".into(), artifact.kind.as_str().to_owned());
            if let Some(created) = artifact.created_us {
                custom.insert("legacy_created_us".into(), created.to_string());
            }
            let writer = ArtifactWriter::create(
                store,
                key,
                CreateOptions {
                    agent_id: agent_id.to_owned(),
                    content_type: "application/x-maif-migrated".into(),
                    schema_version: "maif-migrate/1".into(),
                    custom,
                    created_us: None,
                    artifact_id: artifact.artifact_id,
                },
            )
            .await?;
            return Ok(Existing {
                writer: Some(writer),
                present: HashMap::new(),
                migrate_recorded: false,
            });
        }
        Err(e) => return Err(maif_store::Error::from(e).into()),
    }
    // Something is there: resume only a migration of this very source.
    let reader = ArtifactReader::open(store.clone()).await?;
    let metadata = reader.metadata().map_err(|e| {
        MigrateError::Usage(format!("{}: unreadable metadata: {e}", store.location()))
    })?;
    let from = metadata.custom.get("migrated_from");
    if from != Some(&artifact.source) {
        return Err(MigrateError::Usage(format!(
            "{} already holds an artifact that is not a migration of {} (migrated_from: {}); refusing to add to it",
            store.location(),
            artifact.source,
            from.map_or("none", String::as_str)
        )));
    }
    let mut present = HashMap::new();
    for block in reader.blocks().await?.iter() {
        *present.entry(block.entry.block_id).or_insert(0u32) += 1;
    }
    let migrate_recorded = reader
        .provenance()
        .await?
        .iter()
        .any(|e| e.action == Action::Migrate);
    let writer = if migrate_recorded {
        None
    } else {
        Some(ArtifactWriter::open(store, key).await?)
    };
    Ok(Existing {
        writer,
        present,
        migrate_recorded,
    })
}

/// Migrates `artifact` into `destination` (or only checks it when `options.dry_run`).
/// Bodies of object-store blocks come from `source`.
pub async fn migrate(
    artifact: LegacyArtifact,
    source: Option<&S3Source>,
    destination: Option<Arc<dyn BlockStore>>,
    mut options: MigrateOptions,
) -> Result<Report> {
    let started = Instant::now();
    let destination_name = destination.as_ref().map(|d| d.location().to_owned());
    let mut existing = match (&destination, options.dry_run, options.key.take()) {
        (_, true, _) | (None, _, _) => Existing {
            writer: None,
            present: HashMap::new(),
            migrate_recorded: false,
        },
        (Some(store), false, Some(key)) => {
            open_destination(&artifact, store.clone(), key, &options.agent_id).await?
        }
        (Some(_), false, None) => {
            return Err(MigrateError::Usage(
                "a signing key (--key) is needed to write the migrated artifact".into(),
            ));
        }
    };
    let resumed = !existing.present.is_empty();
    let already_complete = existing.migrate_recorded;
    let mut test_stop = TestStop::from_env();

    if let Some(writer) = existing.writer.as_mut()
        && !existing.present.contains_key(&sections_block_id(&artifact))
        && let Some(block) = sections_block(&artifact)
    {
        writer.add(block).await?;
        test_stop.record_taken();
    }

    let mut reports = Vec::with_capacity(artifact.blocks.len());
    // Typed payloads kept unframed: reported with the source's findings.
    let mut framing_findings = Vec::new();
    let mut since_commit = (0usize, 0u64);
    let mut written_ids: HashSet<[u8; 16]> = existing.present.keys().copied().collect();
    let mut start = 0;
    while start < artifact.blocks.len() {
        // The next window: consecutive blocks up to the byte budget (at least one).
        let mut end = start;
        let mut bytes = 0u64;
        while end < artifact.blocks.len()
            && (end == start
                || bytes.saturating_add(body_size(&artifact.blocks[end])) <= FETCH_WINDOW_BYTES)
        {
            bytes = bytes.saturating_add(body_size(&artifact.blocks[end]));
            end += 1;
        }
        let window: Vec<&LegacyBlock> = artifact.blocks[start..end].iter().collect();
        // Blocks an earlier run already wrote are fetched and checked again too, so that
        // their verdicts (and the provenance lists) are the same as in an uninterrupted run.
        let bodies = fetch_window(source, &window, options.concurrency).await?;
        for (block, body) in window.into_iter().zip(bodies) {
            // A source may repeat an id (written as versions): skip only as many
            // occurrences as the destination already holds.
            let already_present = match existing.present.get_mut(&block.block_id) {
                Some(versions) if *versions > 0 => {
                    *versions -= 1;
                    true
                }
                _ => false,
            };
            let mut checks = block.checks.clone();
            if let Some(body) = &body {
                checks.extend(run_body_checks(
                    &block.body_checks,
                    body,
                    &options.legacy_keys,
                ));
            }
            let verdict = Verdict::of(&checks);
            // The checks above ran over the exact legacy bytes; only what is written is framed.
            let framed = body.as_ref().map(|body| frame(artifact.kind, block, body));
            if let Some(Framing::Unframed {
                withheld_type,
                stored_as,
                reason,
            }) = framed.as_ref().and_then(|f| f.framing.as_ref())
            {
                framing_findings.push(Finding::new(
                    Severity::Warning,
                    "typed_payload_unframed",
                    block.legacy_id.clone(),
                    format!(
                        "{withheld_type} payload kept byte for byte as {stored_as}: {reason} \
                         (legacy.type keeps {:?})",
                        block.legacy_type
                    ),
                ));
            }
            let mut migrated = already_present;
            if let (Some(writer), Some(framed), false) =
                (existing.writer.as_mut(), &framed, already_present)
            {
                let new_block = NewBlock::new(framed.block_type, framed.data.clone())
                    .with_timestamp(block.timestamp_us)
                    .with_metadata(&block_metadata(
                        block,
                        &checks,
                        verdict,
                        framed.framing.as_ref(),
                    ));
                if written_ids.insert(block.block_id) {
                    writer.add(new_block.with_id(block.block_id)).await?;
                } else {
                    // The source repeats an id: keep both, as versions of one block.
                    writer.update(block.block_id, new_block).await?;
                }
                test_stop.record_taken();
                migrated = true;
                since_commit.0 += 1;
                since_commit.1 += framed.data.len() as u64;
                if since_commit.0 >= COMMIT_EVERY_BLOCKS || since_commit.1 >= COMMIT_EVERY_BYTES {
                    writer.commit().await?;
                    since_commit = (0, 0);
                }
            } else if options.dry_run && body.is_some() {
                migrated = false;
            }
            let (written_type, framing) = match framed {
                Some(Framed {
                    block_type,
                    framing,
                    ..
                }) => (block_type, framing),
                None => (block.block_type, None),
            };
            reports.push(BlockReport {
                legacy_id: block.legacy_id.clone(),
                block_id: format_id(&block.block_id),
                legacy_type: block.legacy_type.clone(),
                block_type: written_type.to_string(),
                framing,
                status: block.status,
                migrated: migrated || (options.dry_run && body.is_some()),
                already_present,
                size: body.as_ref().map(|b| b.len() as u64).or(match &block.body {
                    Body::Object { size, .. } => Some(*size),
                    _ => None,
                }),
                sha256: body.as_ref().map(|b| sha256_hex(b)),
                verdict,
                checks,
            });
            (options.progress)(1);
        }
        start = end;
    }

    let mut report = Report {
        source: artifact.source.clone(),
        kind: artifact.kind,
        destination: destination_name,
        dry_run: options.dry_run,
        resumed,
        already_complete,
        counts: Counts::default(),
        source_checks: artifact.checks.clone(),
        findings: artifact
            .findings
            .iter()
            .cloned()
            .chain(framing_findings)
            .collect(),
        blocks: reports,
        output_verified: None,
        output_problems: Vec::new(),
        elapsed_seconds: 0.0,
    };
    report.count();

    if let Some(mut writer) = existing.writer.take() {
        let details = migrate_details(&artifact, &report);
        let details = if serde_json::to_vec(&details).map_or(0, |d| d.len()) > MAX_INLINE_DETAILS {
            // Too many blocks to list in one provenance entry: list them in a signed block.
            let listing = serde_json::to_vec(&details).unwrap_or_default();
            let id = crate::model::sha256(&listing);
            let mut block_id = [0u8; 16];
            block_id.copy_from_slice(&id[..16]);
            let mut metadata = Map::new();
            metadata.insert(
                "legacy".into(),
                json!({"kind": "migration-verdicts", "source": artifact.source}),
            );
            writer
                .add(
                    NewBlock::new(SOURCE_SECTIONS_TYPE, listing.clone())
                        .with_id(block_id)
                        .with_timestamp(source_timestamp_us(&artifact))
                        .with_metadata(&metadata),
                )
                .await?;
            test_stop.record_taken();
            let mut summary = Map::new();
            summary.insert("source".into(), json!(artifact.source));
            summary.insert("legacy_format".into(), json!(artifact.kind.as_str()));
            summary.insert("counts".into(), json!(report.counts));
            summary.insert("block_lists_in_block".into(), json!(format_id(&block_id)));
            summary.insert("block_lists_sha256".into(), json!(sha256_hex(&listing)));
            summary
        } else {
            details
        };
        writer.record_event(Action::Migrate, details).await?;
        writer.commit().await?;
    }
    if let (Some(store), false) = (&destination, options.dry_run) {
        let verified = verify(
            store.clone(),
            VerifyOptions {
                quick: false,
                ..VerifyOptions::default()
            },
        )
        .await?;
        report.output_verified = Some(verified.valid);
        report.output_problems = verified.problems.iter().map(|p| p.to_string()).collect();
    }
    report.elapsed_seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The provenance details of the migrate entry: where from, how many of what, and every
/// block that could not be verified, failed, or was not migrated.
fn migrate_details(artifact: &LegacyArtifact, report: &Report) -> Map<String, Value> {
    let ids = |pred: &dyn Fn(&BlockReport) -> bool| -> Vec<&str> {
        report
            .blocks
            .iter()
            .filter(|b| pred(b))
            .map(|b| b.legacy_id.as_str())
            .collect()
    };
    let mut details = Map::new();
    details.insert("source".into(), json!(artifact.source));
    details.insert("legacy_format".into(), json!(artifact.kind.as_str()));
    details.insert("counts".into(), json!(report.counts));
    details.insert(
        "unverifiable".into(),
        json!(ids(&|b| b.verdict == Verdict::Unverifiable)),
    );
    details.insert(
        "failed".into(),
        json!(ids(&|b| b.verdict == Verdict::Failed)),
    );
    details.insert("not_migrated".into(), json!(ids(&|b| !b.migrated)));
    let kept_unframed = ids(&|b| b.framing.as_ref().is_some_and(Framing::is_unframed));
    details.insert("kept_unframed".into(), json!(kept_unframed));
    let failed_source_checks: Vec<&Check> = artifact
        .checks
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::Fail(_)))
        .collect();
    details.insert("failed_source_checks".into(), json!(failed_source_checks));
    details.insert("findings".into(), json!(artifact.findings.len()));
    details
}
