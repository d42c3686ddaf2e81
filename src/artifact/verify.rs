//! Verification: quick (trailer, stored digests, Merkle root, commit signature) and full
//! (every record re-hashed, every signature, every chain link, the provenance).

use std::collections::HashSet;
use std::sync::Arc;

use futures::stream::{self, StreamExt};
use serde::Serialize;

/// Records fetched at once by full verification and by metadata scans.
pub(crate) const READ_CONCURRENCY: usize = 16;

use super::format_id;
use crate::error::{Error, Result};
use crate::format::digest::{Digest, SignedKind, chain_link, commit_digest, genesis_digest};
use crate::format::merkle::merkle_root;
use crate::format::{
    Action, FileHeader, IndexEntry, MetadataSection, ProvenanceSection, RecordView,
};
use crate::keys::{PublicKey, SignatureCheck, verify_many};
use crate::store::{AuditFinding, BlockStore, Head, StoreError};

/// How thoroughly to verify.
#[derive(Debug, Clone, Copy)]
pub struct VerifyOptions {
    /// Only the trailer, stored digests, Merkle root and commit signature; no record is read.
    pub quick: bool,
    /// Check every signature individually with strict semantics instead of in batches.
    pub strict: bool,
    /// Worker threads for hashing and signature checks.
    pub threads: usize,
    /// The public key the artifact must be signed by. The key in the metadata proves only
    /// that the artifact is self-consistent; pinning the key known from elsewhere is what
    /// detects an artifact re-signed wholesale under another key.
    pub expected_key: Option<[u8; 32]>,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self {
            quick: false,
            strict: false,
            threads: std::thread::available_parallelism().map_or(1, usize::from),
            expected_key: None,
        }
    }
}

/// One thing that is wrong, located as precisely as possible.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Position of the record in record order, when the problem is about a record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block_id: Option<String>,
    /// Byte offset (in the single-file image) of the structure at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// Which part of the artifact: `record`, `provenance`, `commit`, `trailer`, ...
    pub area: String,
    pub reason: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(record) = self.record {
            write!(f, "block #{record}")?;
            if let Some(id) = &self.block_id {
                write!(f, " {id}")?;
            }
            if let Some(offset) = self.offset {
                write!(f, " at offset {offset}")?;
            }
            write!(f, ": {}", self.reason)
        } else if let Some(offset) = self.offset {
            write!(f, "{} at offset {offset}: {}", self.area, self.reason)
        } else {
            write!(f, "{}: {}", self.area, self.reason)
        }
    }
}

/// What verification found.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub location: String,
    pub valid: bool,
    pub mode: &'static str,
    pub record_count: u64,
    pub provenance_entries: u64,
    pub signatures_checked: u64,
    pub bytes_hashed: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merkle_root: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    pub problems: Vec<Problem>,
    /// Findings that do not make the artifact invalid (e.g. orphaned record objects).
    pub warnings: Vec<Problem>,
}

fn problem(area: &str, offset: Option<u64>, reason: impl Into<String>) -> Problem {
    Problem {
        record: None,
        block_id: None,
        offset,
        area: area.into(),
        reason: reason.into(),
    }
}

fn record_problem(position: usize, entry: &IndexEntry, reason: impl Into<String>) -> Problem {
    Problem {
        record: Some(position),
        block_id: Some(format_id(&entry.block_id)),
        offset: Some(entry.offset),
        area: "record".into(),
        reason: reason.into(),
    }
}

/// The public key the metadata names, checked for validity.
pub(crate) fn artifact_key(head: &Head) -> Result<PublicKey> {
    let metadata = MetadataSection::decode(&head.metadata_section)
        .map_err(Error::format("metadata section"))?;
    let bytes = metadata
        .public_key()
        .map_err(Error::format("metadata section"))?;
    Ok(PublicKey::from_bytes(&bytes)?)
}

fn commit_digest_of(head: &Head) -> Digest {
    commit_digest(
        &head.file_header,
        &head.metadata_section,
        &head.provenance_section,
        &head.index_section,
        &head.trailer.signed_fields(),
        &head.trailer.merkle_root,
    )
}

/// The quick checks, returning every problem found (empty when the commit is sound).
fn quick_problems(head: &Head, key: &PublicKey, strict: bool) -> Vec<Problem> {
    let mut problems = Vec::new();
    let root = merkle_root(&head.index.digests());
    if root != head.trailer.merkle_root {
        problems.push(problem(
            "trailer",
            None,
            format!(
                "Merkle root {} does not match the stored record digests (they give {})",
                hex::encode(head.trailer.merkle_root),
                hex::encode(root)
            ),
        ));
    }
    let digest = commit_digest_of(head);
    let signature_ok = if strict {
        key.verify_strict(SignedKind::Commit, &digest, &head.trailer.commit_signature)
    } else {
        verify_many(
            key,
            &[SignatureCheck {
                kind: SignedKind::Commit,
                digest,
                signature: head.trailer.commit_signature,
            }],
            1,
            false,
        )
        .is_empty()
    };
    if !signature_ok {
        problems.push(problem(
            "commit",
            None,
            "the artifact signature does not verify: header, metadata, provenance, index or trailer were altered",
        ));
    }
    problems
}

/// Quick verification of a committed head, as done on every open: fails unless the commit
/// signature and Merkle root hold. Returns the artifact's key.
pub(crate) fn check_commit(head: &Head) -> Result<PublicKey> {
    FileHeader::decode(&head.file_header).map_err(Error::format("file header"))?;
    let key = artifact_key(head)?;
    let problems = quick_problems(head, &key, false);
    if let Some(first) = problems.first() {
        return Err(Error::Verification(first.to_string()));
    }
    Ok(key)
}

/// Verifies the artifact at `store`.
///
/// Returns `Err` only for failures to read (I/O, missing artifact); everything wrong with the
/// bytes themselves is a [`Problem`] in the report.
pub async fn verify(store: Arc<dyn BlockStore>, options: VerifyOptions) -> Result<VerifyReport> {
    let mut report = VerifyReport {
        location: store.location(),
        valid: false,
        mode: if options.quick { "quick" } else { "full" },
        record_count: 0,
        provenance_entries: 0,
        signatures_checked: 0,
        bytes_hashed: 0,
        merkle_root: None,
        public_key: None,
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    let head = match store.head().await {
        Ok(head) => head,
        Err(
            e @ (StoreError::Torn { .. } | StoreError::Corrupt { .. } | StoreError::Format { .. }),
        ) => {
            report
                .problems
                .push(problem("structure", None, e.to_string()));
            return Ok(report);
        }
        Err(e) => return Err(e.into()),
    };
    report.record_count = head.trailer.record_count;
    report.merkle_root = Some(hex::encode(head.trailer.merkle_root));
    if let Err(e) = FileHeader::decode(&head.file_header) {
        report
            .problems
            .push(problem("file header", Some(0), e.to_string()));
        return Ok(report);
    }
    let key = match artifact_key(&head) {
        Ok(key) => key,
        Err(e) => {
            report
                .problems
                .push(problem("metadata section", Some(32), e.to_string()));
            return Ok(report);
        }
    };
    report.public_key = Some(hex::encode(key.to_bytes()));
    if let Some(expected) = options.expected_key
        && expected != key.to_bytes()
    {
        report.problems.push(problem(
            "metadata section",
            Some(32),
            format!(
                "signed by {}, but the expected key is {}",
                hex::encode(key.to_bytes()),
                hex::encode(expected)
            ),
        ));
    }
    report
        .problems
        .extend(quick_problems(&head, &key, options.strict));
    report.signatures_checked = 1;
    if !options.quick {
        full_checks(store.as_ref(), &head, &key, options, &mut report).await?;
    }
    // Listing every object is a full-verification cost; quick verification reads no records.
    let findings = if options.quick {
        Vec::new()
    } else {
        store.audit(&head).await?
    };
    for finding in findings {
        match finding {
            AuditFinding::MissingRecord { position, key } => {
                if let Some(entry) = head.index.entries.get(position) {
                    let missing = record_problem(position, entry, format!("record object {key} is missing"));
                    if !report.problems.iter().any(|p| p.record == Some(position)) {
                        report.problems.push(missing);
                    }
                }
            }
            AuditFinding::Orphan { key, size } => report.warnings.push(problem(
                "storage",
                None,
                format!(
                    "orphaned record object {key} ({size} bytes): no commit references it (an interrupted append or import left it)"
                ),
            )),
            AuditFinding::Unexpected { key } => report.warnings.push(problem(
                "storage",
                None,
                format!("object {key} is not part of the artifact layout"),
            )),
        }
    }
    report.valid = report.problems.is_empty();
    Ok(report)
}

/// One record's findings, computed on a worker thread.
struct RecordCheck {
    prev_link: Option<[u8; 8]>,
    digest: Option<Digest>,
    signature: Option<[u8; 64]>,
    problems: Vec<Problem>,
}

fn check_record(position: usize, entry: &IndexEntry, bytes: &[u8]) -> RecordCheck {
    let mut out = RecordCheck {
        prev_link: None,
        digest: None,
        signature: None,
        problems: Vec::new(),
    };
    let record = match RecordView::decode(bytes) {
        Ok(record) => record,
        Err(e) => {
            out.problems.push(record_problem(
                position,
                entry,
                e.at(entry.offset).to_string(),
            ));
            return out;
        }
    };
    let header = &record.header;
    let mut mismatch = |field: &str, index: String, record: String| {
        out.problems.push(record_problem(
            position,
            entry,
            format!("index entry says {field} {index} but the record header says {record}"),
        ));
    };
    if header.block_id != entry.block_id {
        mismatch(
            "block id",
            format_id(&entry.block_id),
            format_id(&header.block_id),
        );
    }
    if header.block_type != entry.block_type {
        mismatch(
            "type",
            entry.block_type.to_string(),
            header.block_type.to_string(),
        );
    }
    if header.metadata_len != entry.metadata_len {
        mismatch(
            "metadata length",
            entry.metadata_len.to_string(),
            header.metadata_len.to_string(),
        );
    }
    if header.timestamp_us != entry.timestamp_us {
        mismatch(
            "timestamp",
            entry.timestamp_us.to_string(),
            header.timestamp_us.to_string(),
        );
    }
    if let Err(e) = record.metadata_json() {
        out.problems.push(record_problem(
            position,
            entry,
            e.at(entry.offset).to_string(),
        ));
    }
    let digest = record.digest();
    if digest != entry.digest {
        out.problems.push(record_problem(
            position,
            entry,
            format!(
                "content digest {} does not match the indexed digest {}: the record was altered",
                hex::encode(digest),
                hex::encode(entry.digest)
            ),
        ));
    }
    out.prev_link = Some(record.header.prev_link);
    out.digest = Some(digest);
    out.signature = Some(*record.signature);
    out
}

async fn full_checks(
    store: &dyn BlockStore,
    head: &Head,
    key: &PublicKey,
    options: VerifyOptions,
    report: &mut VerifyReport,
) -> Result<()> {
    let entries = &head.index.entries;
    let genesis = genesis_digest(&head.file_header, &head.metadata_section);
    let mut signatures: Vec<SignatureCheck> = Vec::with_capacity(entries.len() * 2);
    // What each signature belongs to, for naming failures.
    let mut owners: Vec<Problem> = Vec::with_capacity(entries.len() * 2);
    let mut previous_digest = genesis;
    // Records are read in chunks of bounded total size and hashed on worker threads.
    const CHUNK_BYTES: u64 = 64 << 20;
    let mut position = 0usize;
    while position < entries.len() {
        let mut end = position;
        let mut chunk_bytes = 0u64;
        while end < entries.len() && (end == position || chunk_bytes < CHUNK_BYTES) {
            chunk_bytes += entries[end].record_len;
            end += 1;
        }
        // Fetched concurrently: on an object store each read is a round trip.
        let fetched: Vec<_> = stream::iter(&entries[position..end])
            .map(|entry| store.read_record(entry))
            .buffered(READ_CONCURRENCY)
            .collect()
            .await;
        let mut chunk = Vec::with_capacity(fetched.len());
        for (i, result) in fetched.into_iter().enumerate() {
            chunk.push(match result {
                Ok(bytes) => Some(bytes),
                Err(
                    e @ (StoreError::OutOfRange { .. }
                    | StoreError::NotFound { .. }
                    | StoreError::Corrupt { .. }),
                ) => {
                    report.problems.push(record_problem(
                        position + i,
                        &entries[position + i],
                        e.to_string(),
                    ));
                    None
                }
                Err(e) => return Err(e.into()),
            });
        }
        let results = hash_chunk(
            position,
            &entries[position..position + chunk.len()],
            &chunk,
            options.threads,
        );
        for (i, result) in results.into_iter().enumerate() {
            let at = position + i;
            let entry = &entries[at];
            report.bytes_hashed += chunk[i].as_ref().map_or(0, |b| b.len() as u64);
            report.problems.extend(result.problems);
            if let Some(link) = result.prev_link
                && link != chain_link(&previous_digest)
            {
                report.problems.push(record_problem(
                    at,
                    entry,
                    format!(
                        "hash chain broken: the header links to {} but the previous {} starts {}",
                        hex::encode(link),
                        if at == 0 {
                            "chain seed"
                        } else {
                            "record digest"
                        },
                        hex::encode(chain_link(&previous_digest))
                    ),
                ));
            }
            if let (Some(digest), Some(signature)) = (result.digest, result.signature) {
                signatures.push(SignatureCheck {
                    kind: SignedKind::Block,
                    digest,
                    signature,
                });
                owners.push(record_problem(at, entry, "block signature does not verify"));
            }
            // The index digest is what the Merkle root and the next link commit to.
            previous_digest = entry.digest;
        }
        position += chunk.len();
    }

    check_provenance(head, genesis, &mut signatures, &mut owners, report);

    let failures = verify_many(key, &signatures, options.threads, options.strict);
    report.signatures_checked += signatures.len() as u64;
    for failure in failures {
        report.problems.push(owners[failure].clone());
    }
    report
        .problems
        .sort_by_key(|p| (p.record.is_none(), p.record, p.offset));
    report.problems.dedup();
    Ok(())
}

fn hash_chunk(
    base: usize,
    entries: &[IndexEntry],
    chunk: &[Option<bytes::Bytes>],
    threads: usize,
) -> Vec<RecordCheck> {
    let threads = threads.clamp(1, chunk.len().max(1));
    let per_thread = chunk.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = chunk
            .chunks(per_thread)
            .zip(entries.chunks(per_thread))
            .enumerate()
            .map(|(t, (bytes_part, entry_part))| {
                scope.spawn(move || {
                    bytes_part
                        .iter()
                        .zip(entry_part)
                        .enumerate()
                        .map(|(i, (bytes, entry))| match bytes {
                            Some(bytes) => check_record(base + t * per_thread + i, entry, bytes),
                            None => RecordCheck {
                                prev_link: None,
                                digest: None,
                                signature: None,
                                problems: Vec::new(),
                            },
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| {
                w.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

fn check_provenance(
    head: &Head,
    genesis: Digest,
    signatures: &mut Vec<SignatureCheck>,
    owners: &mut Vec<Problem>,
    report: &mut VerifyReport,
) {
    let base = head.trailer.provenance_offset;
    let section = match ProvenanceSection::decode(&head.provenance_section) {
        Ok(section) => section,
        Err(e) => {
            report
                .problems
                .push(problem("provenance", Some(base), e.at(base).to_string()));
            return;
        }
    };
    report.provenance_entries = section.entries.len() as u64;
    let mut offset = base + ProvenanceSection::PREFIX_LEN as u64;
    let mut previous = [0u8; 32];
    let mut record_at = 0usize;
    let mut seen_ids: HashSet<[u8; 16]> = HashSet::new();
    let entries = &head.index.entries;
    let mut finalized = false;
    for (n, entry) in section.entries.iter().enumerate() {
        let here = Some(offset);
        let mut flag = |reason: String| {
            report.problems.push(problem(
                "provenance",
                here,
                format!("entry #{n} ({}): {reason}", entry.action.name()),
            ));
        };
        let digest = match entry.digest() {
            Ok(d) => d,
            Err(e) => {
                flag(e.to_string());
                offset += entry.encoded_len() as u64;
                continue;
            }
        };
        if entry.previous != previous {
            flag("does not link to the previous entry".into());
        }
        if finalized && entry.action != Action::Recover {
            flag("follows the finalize entry".into());
        }
        if entry.details_json().is_err() {
            flag("details are not a JSON object".into());
        }
        match entry.action {
            Action::Create => {
                if n != 0 {
                    flag("create must be the first entry".into());
                } else if entry.subject != genesis {
                    flag("does not name this artifact's header and metadata".into());
                }
            }
            Action::AddBlock | Action::Update => match entries.get(record_at) {
                Some(record) if record.digest == entry.subject => {
                    let known = !seen_ids.insert(record.block_id);
                    if entry.action == Action::AddBlock && known {
                        flag(format!(
                            "adds block {} which already exists",
                            format_id(&record.block_id)
                        ));
                    }
                    if entry.action == Action::Update && !known {
                        flag(format!(
                            "updates block {} which did not exist",
                            format_id(&record.block_id)
                        ));
                    }
                    record_at += 1;
                }
                Some(record) => {
                    flag(format!(
                        "names digest {} but record #{record_at} has {}",
                        hex::encode(entry.subject),
                        hex::encode(record.digest)
                    ));
                    record_at += 1;
                }
                None => flag("names a record the artifact does not hold".into()),
            },
            Action::Finalize => finalized = true,
            _ => {}
        }
        if n == 0 && entry.action != Action::Create {
            flag("the first entry must be create".into());
        }
        signatures.push(SignatureCheck {
            kind: SignedKind::Provenance,
            digest,
            signature: entry.signature,
        });
        owners.push(problem(
            "provenance",
            here,
            format!(
                "entry #{n} ({}): signature does not verify",
                entry.action.name()
            ),
        ));
        previous = digest;
        offset += entry.encoded_len() as u64;
    }
    if section.entries.is_empty() {
        report
            .problems
            .push(problem("provenance", Some(base), "no create entry"));
    }
    if record_at < entries.len() {
        report.problems.push(problem(
            "provenance",
            Some(base),
            format!(
                "records #{record_at}..#{} have no add_block or update entry",
                entries.len() - 1
            ),
        ));
    }
    if previous != head.trailer.provenance_head && !section.entries.is_empty() {
        report.problems.push(problem(
            "trailer",
            None,
            "the provenance head in the trailer is not the digest of the last entry",
        ));
    }
}
