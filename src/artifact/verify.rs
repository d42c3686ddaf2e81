//! Verification.
//!
//! Quick verification checks the newest commit: it belongs to this artifact (its chain
//! seed), its signature verifies, its frontier gives its Merkle root, and its trailer is the
//! one its segment implies. It reads a few hundred bytes, whatever the artifact's size.
//!
//! Full verification checks everything back to the creation: every commit's signature,
//! link to its predecessor, trailer and counts; every provenance entry (chain and meaning);
//! every index run against the entries it summarises (the records its commit added and the
//! runs it absorbed); the Merkle frontier of every commit, grown leaf by leaf; and every
//! record (re-hashed, its chain link, its signature). Records are hashed and signatures
//! checked on every core, and the signatures (most of the work) in the background while the
//! next commit's chain is checked and the next records are read and hashed. A verification
//! that stops early (a commit it cannot read) leaves those checks to finish on their own;
//! their results are dropped.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{self, StreamExt};
use serde::Serialize;

use super::commit::{
    Commit, Identity, Uncommitted, classify_uncommitted, complete_commits, find_latest, read_parts,
    torn_write_of,
};
use super::format_id;
use super::index::Index;
use super::provenance_rules::{ProvenanceRules, Subjects};
use super::reader::{READ_CONCURRENCY, read_commit};
use crate::error::Result;
use crate::format::Codec;
use crate::format::digest::{Digest, SignedKind, chain_link};
use crate::format::run::{RunEntry, RunRef};
use crate::format::{FourCC, Frontier, IndexEntry, RecordView, TRAILER_LEN, Trailer};
use crate::keys::{PublicKey, SignatureCheck, verify_many};
use crate::store::{AuditFinding, BlockStore, StoreError};

/// How thoroughly to verify.
#[derive(Debug, Clone, Copy)]
pub struct VerifyOptions {
    /// Only the newest commit: its signature, chain seed, Merkle frontier and trailer.
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
            threads: crate::parallel::available_threads(),
            expected_key: None,
        }
    }
}

/// One thing that is wrong, located as precisely as possible.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Position of the record in record order, when the problem is about a record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<u64>,
    /// The block id of that record, as a UUID string, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block_id: Option<String>,
    /// Byte offset (in the single-file image) of the structure at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// Which part of the artifact: `record`, `commit`, `provenance`, `index`, `trailer`, ...
    pub area: String,
    /// What is wrong, in words.
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
    /// The location verified, as given.
    pub location: String,
    /// Whether the artifact is valid: true exactly when `problems` is empty.
    pub valid: bool,
    /// `"full"` (every record, commit and provenance entry) or `"quick"` (the newest commit only).
    pub mode: &'static str,
    /// Records in the newest commit.
    pub record_count: u64,
    /// Commits checked (every commit in full mode, the newest in quick mode).
    pub commits_checked: u64,
    /// Sequence number of the newest commit, when one could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub newest_commit: Option<u64>,
    /// Provenance entries checked.
    pub provenance_entries: u64,
    /// Ed25519 signatures checked (records, provenance entries and commits).
    pub signatures_checked: u64,
    /// Bytes read and hashed to check digests.
    pub bytes_hashed: u64,
    /// Hex of the newest commit's Merkle root, when one could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merkle_root: Option<String>,
    /// Hex of the artifact's Ed25519 public key, when the metadata could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// Everything that makes the artifact invalid, each with its place.
    pub problems: Vec<Problem>,
    /// Findings that do not make the artifact invalid (orphaned record objects, bytes after
    /// the newest commit).
    pub warnings: Vec<Problem>,
}

pub(crate) fn problem(area: &str, offset: Option<u64>, reason: impl Into<String>) -> Problem {
    Problem {
        record: None,
        block_id: None,
        offset,
        area: area.into(),
        reason: reason.into(),
    }
}

fn record_problem(position: u64, entry: &IndexEntry, reason: impl Into<String>) -> Problem {
    Problem {
        record: Some(position),
        block_id: Some(format_id(&entry.block_id)),
        offset: Some(entry.offset),
        area: "record".into(),
        reason: reason.into(),
    }
}

/// Whether a store error means "the bytes are not what they claim" (a problem to report)
/// rather than a failure to read (an error to return).
fn is_bad_bytes(error: &StoreError) -> bool {
    matches!(
        error,
        StoreError::Torn { .. }
            | StoreError::Corrupt { .. }
            | StoreError::Format { .. }
            | StoreError::OutOfRange { .. }
    )
}

fn bad_bytes(error: &crate::Error) -> bool {
    match error {
        crate::Error::Store(e) => is_bad_bytes(e),
        crate::Error::Verification(_) | crate::Error::Format { .. } | crate::Error::Key(_) => true,
        _ => false,
    }
}

impl VerifyReport {
    /// A report of nothing checked yet (not valid until a verification says so).
    pub(crate) fn empty(location: String, mode: &'static str) -> Self {
        Self {
            location,
            valid: false,
            mode,
            record_count: 0,
            commits_checked: 0,
            newest_commit: None,
            provenance_entries: 0,
            signatures_checked: 0,
            bytes_hashed: 0,
            merkle_root: None,
            public_key: None,
            problems: Vec::new(),
            warnings: Vec::new(),
        }
    }
}

/// Verifies the artifact at `store`.
///
/// Returns `Err` only for failures to read (I/O, missing artifact); everything wrong with the
/// bytes themselves is a [`Problem`] in the report.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use maif_store::artifact::{VerifyOptions, verify};
/// use maif_store::store::{BlockStore, FileStore};
/// use maif_store::{ArtifactWriter, CreateOptions, NewBlock, SigningKey};
/// use maif_store::format::FourCC;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> maif_store::Result<()> {
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("a.maif");
/// let store: Arc<dyn BlockStore> = Arc::new(FileStore::new(&path));
/// let key = SigningKey::generate()?;
/// let public_key = key.public_key();
/// let mut writer = ArtifactWriter::create(store.clone(), key, CreateOptions::default()).await?;
/// writer.add(NewBlock::new(FourCC::BINA, b"payload".to_vec())).await?;
/// writer.commit().await?;
///
/// // Pin the key known from elsewhere, not just the one the artifact names.
/// let options = VerifyOptions {
///     expected_key: Some(public_key),
///     ..Default::default()
/// };
/// let report = verify(store, options).await?;
/// assert!(report.valid, "{:?}", report.problems);
/// assert_eq!(report.record_count, 1);
///
/// // Damage is a problem in the report, not an error.
/// let mut bytes = std::fs::read(&path).unwrap();
/// let at = bytes.windows(7).position(|w| w == b"payload").unwrap();
/// bytes[at] ^= 1;
/// std::fs::write(&path, bytes).unwrap();
/// let store: Arc<dyn BlockStore> = Arc::new(FileStore::new(&path));
/// let report = verify(store, VerifyOptions::default()).await?;
/// assert!(!report.valid);
/// # Ok(()) }
/// ```
pub async fn verify(store: Arc<dyn BlockStore>, options: VerifyOptions) -> Result<VerifyReport> {
    let mut report = VerifyReport::empty(
        store.location(),
        if options.quick { "quick" } else { "full" },
    );
    let identity = match Identity::read(store.as_ref()).await {
        Ok(identity) => identity,
        Err(e) if bad_bytes(&e) => {
            report
                .problems
                .push(problem("structure", Some(0), e.to_string()));
            return Ok(report);
        }
        Err(e) => return Err(e),
    };
    report.public_key = Some(hex::encode(identity.key.to_bytes()));
    let found = match find_latest(store.as_ref()).await {
        Ok(found) => found,
        Err(e) if bad_bytes(&e) => {
            let offset = match &e {
                crate::Error::Store(StoreError::Format { source, .. })
                | crate::Error::Format { source, .. } => source.offset(),
                _ => None,
            };
            report
                .problems
                .push(problem("structure", offset, e.to_string()));
            return Ok(report);
        }
        Err(e) => return Err(e),
    };
    let mut target = found.commit;
    let mut completed = false;
    let mut found_uncommitted = found.uncommitted.clone();
    if let Some(range) = found.uncommitted {
        match complete_commits(&store, &target, range.clone(), &identity.key).await {
            Ok(Some((commit, _))) => {
                let at = commit.header().segment_offset + commit.header().segment_len;
                // A trailer that is missing, cut short or torn (sectors never written: zeros)
                // is what an interrupted append leaves; any other bytes there are a damaged
                // trailer.
                let present = match store
                    .read_uncommitted(at..(at + TRAILER_LEN as u64).min(range.end))
                    .await
                {
                    // Cut meanwhile by a writer: no trailer there.
                    Err(StoreError::OutOfRange { .. }) => Bytes::new(),
                    other => other?,
                };
                let damaged = !torn_write_of(at, &present, &commit.trailer().to_bytes());
                let finding = problem(
                    "trailer",
                    Some(at),
                    format!(
                        "commit {} {}, but its segment is complete and signed and every record it adds is intact; readers use it, and the next append or `maif recover` writes its trailer back",
                        commit.seq(),
                        if damaged {
                            "has a damaged trailer"
                        } else {
                            "has no complete trailer (an append was interrupted after its data was written)"
                        }
                    ),
                );
                if damaged {
                    report.problems.push(finding);
                } else {
                    report.warnings.push(finding);
                }
                target = commit;
                completed = true;
            }
            Ok(None) => {}
            Err(e) if bad_bytes(&e) => {
                report.warnings.push(problem(
                    "storage",
                    Some(range.start),
                    format!("bytes after the newest commit could not be examined: {e}"),
                ));
                // One finding for these bytes: classifying them would read them again.
                found_uncommitted = None;
            }
            Err(e) => return Err(e),
        }
    }
    if let Some(range) = found_uncommitted {
        let rest = target.end().min(range.end)..range.end;
        if !rest.is_empty() {
            match classify_uncommitted(store.as_ref(), &target, rest.clone()).await {
                Ok(Uncommitted::Interrupted) => report.warnings.push(problem(
                    "storage",
                    Some(rest.start),
                    format!(
                        "{} bytes after the newest commit are not committed (an interrupted append); the next append discards them",
                        rest.end - rest.start
                    ),
                )),
                Ok(Uncommitted::Damaged { at, reason }) => report.problems.push(problem(
                    "structure",
                    Some(at),
                    format!(
                        "the file continues after commit {} with {reason}: bytes were removed, inserted or altered after they were committed",
                        target.seq()
                    ),
                )),
                Err(e) if bad_bytes(&e) => report.warnings.push(problem(
                    "storage",
                    Some(rest.start),
                    format!("bytes after the newest commit could not be examined: {e}"),
                )),
                Err(e) => return Err(e),
            }
        }
    }
    verify_target(store, &identity, &target, completed, options, &mut report).await?;
    report.valid = report.problems.is_empty();
    Ok(report)
}

/// Verifies the artifact up to commit `target` (the newest, or an older one when recovery
/// looks for the newest commit that holds).
pub(crate) async fn verify_target(
    store: Arc<dyn BlockStore>,
    identity: &Identity,
    target: &Commit,
    completed: bool,
    options: VerifyOptions,
    report: &mut VerifyReport,
) -> Result<()> {
    let header = target.header();
    report.record_count = header.record_count;
    report.newest_commit = Some(header.seq);
    report.merkle_root = Some(hex::encode(header.merkle_root));
    report.provenance_entries = header.provenance_count;
    if let Some(expected) = options.expected_key
        && expected != identity.key.to_bytes()
    {
        report.problems.push(problem(
            "metadata section",
            Some(crate::format::FILE_HEADER_LEN as u64),
            format!(
                "signed by {}, but the expected key is {}",
                hex::encode(identity.key.to_bytes()),
                hex::encode(expected)
            ),
        ));
    }
    let index = Index::new(store.clone());
    if options.quick {
        report.commits_checked = 1;
        report.signatures_checked = 1;
        check_commit_identity(target, identity, report);
        if !commit_signature_ok(target, identity, options.strict) {
            report.problems.push(signature_problem(target));
        }
        if !completed {
            check_trailer(&index, target, report).await?;
        }
        check_newest_parts(&index, target, report).await?;
        return Ok(());
    }
    // The chain of commits back to the creation; a break is reported at the commit that
    // could not be read or does not match its successor's link.
    let mut commits = vec![target.clone()];
    while let Some(current) = commits.last() {
        let header = *current.header();
        if header.seq == 0 {
            break;
        }
        let previous_ref = crate::store::CommitRef {
            seq: header.seq - 1,
            segment_offset: header.previous_segment_offset,
        };
        match read_commit(&index, previous_ref).await {
            Ok(previous) if previous.digest == header.previous_commit => commits.push(previous),
            Ok(_) if !current.signed_by(&identity.key) => {
                // The link itself is not signed: the newer commit was altered.
                report.problems.push(signature_problem(current));
                return Ok(());
            }
            Ok(_) => {
                report.problems.push(problem(
                    "commit",
                    Some(header.previous_segment_offset),
                    format!(
                        "commit {} at byte {} is not the predecessor commit {} names: it was altered",
                        header.seq - 1,
                        header.previous_segment_offset,
                        header.seq
                    ),
                ));
                return Ok(());
            }
            Err(e) if bad_bytes(&e) => {
                report.problems.push(if current.signed_by(&identity.key) {
                    problem(
                        "commit",
                        Some(header.previous_segment_offset),
                        format!("commit {}: {e}", header.seq - 1),
                    )
                } else {
                    signature_problem(current)
                });
                return Ok(());
            }
            Err(e) => return Err(e),
        }
    }
    commits.reverse();
    let mut chain = ChainCheck::new(identity);
    // Signatures are checked on blocking threads as they become known: the commits' first,
    // then each commit's records once read and hashed, which happens right after that
    // commit's chain check. So the cores verify signatures (most of the work) while this
    // thread checks the next commit's chain and hashes the next records. What the records
    // show is reported only if every commit's chain holds, as when they were checked after.
    let mut signatures = SignatureJobs::new(identity.key, options);
    let mut owners = Vec::with_capacity(header.record_count as usize + commits.len());
    let commit_checks = commits
        .iter()
        .map(|commit| SignatureCheck {
            kind: SignedKind::Commit,
            digest: commit.digest,
            signature: commit.head.signature,
        })
        .collect();
    signatures.submit(commit_checks).await?;
    owners.extend((0..commits.len()).map(SignatureOwner::Commit));
    let mut records = RecordFindings {
        previous_digest: identity.genesis,
        problems: Vec::new(),
        bytes_hashed: 0,
    };
    for commit in &commits {
        report.commits_checked += 1;
        check_commit_identity(commit, identity, report);
        if !(completed && commit.seq() == target.seq()) {
            check_trailer(&index, commit, report).await?;
        }
        let checked = chain.entries.len();
        match chain.check(&index, commit, report).await {
            Ok(()) => {}
            Err(e) if bad_bytes(&e) => {
                report.problems.push(problem(
                    "commit",
                    Some(commit.header().segment_offset),
                    format!("commit {}: {e}", commit.seq()),
                ));
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        check_records(
            store.as_ref(),
            &chain.entries,
            checked,
            options,
            &mut signatures,
            &mut owners,
            &mut records,
        )
        .await?;
    }
    report.problems.append(&mut records.problems);
    report.bytes_hashed += records.bytes_hashed;
    report.signatures_checked += signatures.submitted as u64;
    for failure in signatures.failures().await? {
        if let Some(owner) = owners.get(failure) {
            report.problems.push(match owner {
                SignatureOwner::Commit(n) => signature_problem(&commits[*n]),
                SignatureOwner::Record(n) => {
                    let (position, entry) = &chain.entries[*n];
                    record_problem(*position, entry, "block signature does not verify")
                }
            });
        }
    }
    let digests: HashSet<Digest> = chain.entries.iter().map(|(_, e)| e.digest).collect();
    let findings = store.audit(&digests, header.seq).await?;
    if let Some(problem) = commits_beyond_a_gap(&findings, header.seq) {
        report.problems.push(problem);
    }
    for finding in findings {
        match finding {
            AuditFinding::MissingRecord { digest, key } => {
                if let Some((position, entry)) =
                    chain.entries.iter().find(|(_, e)| e.digest == digest)
                    && !report.problems.iter().any(|p| p.record == Some(*position))
                {
                    report.problems.push(record_problem(
                        *position,
                        entry,
                        format!("record object {key} is missing"),
                    ));
                }
            }
            AuditFinding::Orphan { key, size } => report.warnings.push(problem(
                "storage",
                None,
                format!(
                    "orphaned record object {key} ({size} bytes): no commit references it (an append or import that never committed left it; `maif gc` deletes it once it is older than the grace period)"
                ),
            )),
            AuditFinding::Unexpected { key } => report.warnings.push(problem(
                "storage",
                None,
                format!("object {key} is not part of the artifact layout"),
            )),
        }
    }
    report
        .problems
        .sort_by_key(|p| (p.record.is_none(), p.record, p.offset));
    report.problems.dedup();
    Ok(())
}

/// Commit objects numbered above the newest commit readers reach are what a writer that is
/// committing right now leaves (`newest + 1`, `newest + 2`, ... all present: a warning each).
/// But commits are created in order and never deleted, so one above a missing number proves
/// that commit objects were removed, and with them the way to everything committed after
/// `newest`: a problem.
fn commits_beyond_a_gap(findings: &[AuditFinding], newest: u64) -> Option<Problem> {
    let above: std::collections::BTreeSet<u64> = findings
        .iter()
        .filter_map(|finding| match finding {
            AuditFinding::Unexpected { key } => {
                let (dir, name) = key.rsplit_once('/')?;
                (dir.rsplit('/').next() == Some(crate::format::layout::COMMITS_DIR))
                    .then(|| crate::format::layout::parse_commit_object_name(name))
                    .flatten()
            }
            _ => None,
        })
        .filter(|seq| *seq > newest)
        .collect();
    let highest = *above.last()?;
    let missing: Vec<u64> = (newest + 1..highest)
        .filter(|seq| !above.contains(seq))
        .take(3)
        .collect();
    let first_missing = *missing.first()?;
    Some(problem(
        "storage",
        None,
        format!(
            "commit objects up to commit {highest} exist but commit {first_missing} has none: commit objects were removed, so readers stop at commit {newest} and cannot reach what commits {}..={highest} committed",
            newest + 1
        ),
    ))
}

/// Quick verification also reads the newest segment's own parts (its provenance entries and
/// its run's head; not the run's pages, which can be large), which its signature covers.
async fn check_newest_parts(
    index: &Index,
    commit: &Commit,
    report: &mut VerifyReport,
) -> Result<()> {
    let header = commit.header();
    let checked = async {
        if let (Some(run), len) = (&header.newest_run, header.run_len)
            && len > 0
        {
            index.head(run).await?;
        }
        let range = header.provenance_at()..header.segment_len;
        let bytes = index
            .read_segment(commit.reference(), range.clone())
            .await?;
        let entries = crate::format::provenance::decode_entries(&bytes, header.provenance_added)
            .map_err(|e| crate::Error::Format {
                context: format!("{}: provenance entries", commit.describe()),
                source: e.at(header.segment_offset + range.start),
            })?;
        let mut head = entries.first().map_or([0u8; 32], |e| e.previous);
        for entry in &entries {
            if entry.previous != head {
                return Err(crate::Error::Verification(format!(
                    "{}: its provenance entries do not chain",
                    commit.describe()
                )));
            }
            head = entry
                .digest()
                .map_err(crate::Error::format("provenance entry"))?;
        }
        if head != header.provenance_head {
            return Err(crate::Error::Verification(format!(
                "{}: its provenance entries do not end at the head its header names",
                commit.describe()
            )));
        }
        Ok::<_, crate::Error>(())
    }
    .await;
    match checked {
        Ok(()) => Ok(()),
        Err(e) if bad_bytes(&e) => {
            report.problems.push(problem(
                "commit",
                Some(header.segment_offset),
                e.to_string(),
            ));
            Ok(())
        }
        Err(e) => Err(e),
    }
}

fn signature_problem(commit: &Commit) -> Problem {
    problem(
        "commit",
        Some(commit.header().segment_offset),
        format!(
            "commit {}: the commit signature does not verify: its segment was altered",
            commit.seq()
        ),
    )
}

fn commit_signature_ok(commit: &Commit, identity: &Identity, strict: bool) -> bool {
    if strict {
        return commit.signed_by(&identity.key);
    }
    verify_many(
        &identity.key,
        &[SignatureCheck {
            kind: SignedKind::Commit,
            digest: commit.digest,
            signature: commit.head.signature,
        }],
        1,
        false,
    )
    .is_empty()
}

fn check_commit_identity(commit: &Commit, identity: &Identity, report: &mut VerifyReport) {
    if commit.header().genesis != identity.genesis {
        report.problems.push(problem(
            "commit",
            Some(commit.header().segment_offset),
            format!(
                "commit {} names another artifact's header and metadata (chain seed {})",
                commit.seq(),
                hex::encode(commit.header().genesis)
            ),
        ));
    }
}

/// The trailer after `commit`'s segment must be the one its segment implies.
async fn check_trailer(index: &Index, commit: &Commit, report: &mut VerifyReport) -> Result<()> {
    let header = commit.header();
    let at = header.segment_offset + header.segment_len;
    let bytes = match index
        .read_segment(
            commit.reference(),
            header.segment_len..header.segment_len + TRAILER_LEN as u64,
        )
        .await
    {
        Ok(bytes) => bytes,
        Err(e) if bad_bytes(&e) => {
            report.problems.push(problem(
                "trailer",
                Some(at),
                format!("commit {}'s trailer cannot be read: {e}", commit.seq()),
            ));
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    match Trailer::decode_at(&bytes, at) {
        Ok(trailer) if trailer == commit.trailer() => {}
        Ok(_) => report.problems.push(problem(
            "trailer",
            Some(at),
            format!(
                "commit {}'s trailer does not locate its segment or carries another Merkle root",
                commit.seq()
            ),
        )),
        Err(e) => report.problems.push(problem(
            "trailer",
            Some(at),
            format!("commit {}'s trailer: {e}", commit.seq()),
        )),
    }
    Ok(())
}

/// State carried from commit to commit by full verification.
struct ChainCheck<'a> {
    identity: &'a Identity,
    previous: Option<Commit>,
    frontier: Frontier,
    provenance_head: Digest,
    provenance_count: u64,
    /// Versions so far, by block id.
    versions: HashMap<[u8; 16], u32>,
    /// The live runs, oldest first, with their entries.
    live: Vec<(RunRef, Vec<RunEntry>)>,
    /// Every record's index entry, in position order.
    entries: Vec<(u64, IndexEntry)>,
    /// The provenance rules of FORMAT.md 9.2, fed every commit and entry.
    rules: ProvenanceRules,
}

impl<'a> ChainCheck<'a> {
    fn new(identity: &'a Identity) -> Self {
        Self {
            identity,
            previous: None,
            frontier: Frontier::new(),
            provenance_head: [0u8; 32],
            provenance_count: 0,
            versions: HashMap::new(),
            live: Vec::new(),
            entries: Vec::new(),
            rules: ProvenanceRules::new(),
        }
    }

    async fn check(
        &mut self,
        index: &Index,
        commit: &Commit,
        report: &mut VerifyReport,
    ) -> Result<()> {
        let header = *commit.header();
        let at = Some(header.segment_offset);
        // Problems gathered here and reported at the end, so the checks can share them.
        let mut problems: Vec<Problem> = Vec::new();
        let mut flag = |reason: String| {
            problems.push(problem(
                "commit",
                at,
                format!("commit {}: {reason}", header.seq),
            ));
        };
        let expected_seq = self.previous.as_ref().map_or(0, |p| p.seq() + 1);
        if header.seq != expected_seq {
            flag(format!(
                "is number {} where {expected_seq} was expected",
                header.seq
            ));
        }
        let records_start = self
            .previous
            .as_ref()
            .map_or(self.identity.base.len(), Commit::end);
        if header.records_start != records_start {
            flag(format!(
                "says its records start at {} but the previous commit ends at {records_start}",
                header.records_start
            ));
        }
        if let Err(refusal) = self.rules.begin_commit(self.provenance_count) {
            flag(refusal.to_string());
        }
        let previous_count = self.frontier.size();
        if header.record_count != previous_count + header.records_added {
            flag(format!(
                "counts {} records after adding {} to {previous_count}",
                header.record_count, header.records_added
            ));
        }
        if header.provenance_count != self.provenance_count + header.provenance_added {
            flag(format!(
                "counts {} provenance entries after adding {} to {}",
                header.provenance_count, header.provenance_added, self.provenance_count
            ));
        }
        let prefix = index
            .read_segment(commit.reference(), 0..header.segment_len)
            .await?;
        let parts = read_parts(index, commit, &prefix).await?;
        report.bytes_hashed += header.segment_len;

        // The index run: this commit's new entries and the runs it absorbed, exactly.
        let new_entries = parts.new_entries(previous_count);
        match (&parts.run, &header.newest_run) {
            (Some((run_head, run_entries)), Some(run_ref)) => {
                let mut absorbed: Vec<RunEntry> = Vec::new();
                loop {
                    let top = self.live.last().map(|(r, _)| *r);
                    if top == run_head.older {
                        break;
                    }
                    match self.live.pop() {
                        Some((_, entries)) => absorbed.extend(entries),
                        None => {
                            flag("its index run names an older run that is not live".into());
                            break;
                        }
                    }
                }
                let mut old: Vec<RunEntry> = run_entries
                    .iter()
                    .filter(|e| e.position < previous_count)
                    .copied()
                    .collect();
                absorbed.sort_unstable_by_key(RunEntry::key);
                old.sort_unstable_by_key(RunEntry::key);
                if old != absorbed {
                    flag(format!(
                        "its index run does not hold exactly the {} entries of the runs it replaces ({} found)",
                        absorbed.len(),
                        old.len()
                    ));
                }
                self.live.push((*run_ref, run_entries.clone()));
            }
            (None, newest) => {
                if *newest != self.live.last().map(|(r, _)| *r) {
                    flag("names a newest index run that is not the newest live run".into());
                }
            }
            (Some(_), None) => flag("holds an index run but names none".into()),
        }
        let positions_ok = new_entries
            .iter()
            .enumerate()
            .all(|(n, e)| e.position == previous_count + n as u64);
        if new_entries.len() as u64 != header.records_added || !positions_ok {
            flag(format!(
                "adds {} records but its index run holds {} new entries, or not positions {previous_count}..{}",
                header.records_added,
                new_entries.len(),
                header.record_count
            ));
        }
        let mut offset = header.records_start;
        for e in &new_entries {
            if e.entry.offset != offset {
                flag(format!(
                    "record #{} is indexed at {} but the previous record ends at {offset}",
                    e.position, e.entry.offset
                ));
            }
            offset = e.entry.offset.saturating_add(e.entry.record_len);
            let expected_version = self.versions.get(&e.entry.block_id).map_or(1, |v| v + 1);
            if e.version != expected_version {
                flag(format!(
                    "record #{} ({}) is indexed as version {} but is version {expected_version}",
                    e.position,
                    format_id(&e.entry.block_id),
                    e.version
                ));
            }
            self.versions.insert(e.entry.block_id, expected_version);
            self.entries.push((e.position, e.entry));
        }
        if offset != header.segment_offset {
            flag(format!(
                "its records end at {offset} but its segment starts at {}",
                header.segment_offset
            ));
        }
        let last_record = new_entries.last().map_or_else(
            || {
                self.previous
                    .as_ref()
                    .map_or(self.identity.genesis, |p| p.header().last_record_digest)
            },
            |e| e.entry.digest,
        );
        if header.last_record_digest != last_record {
            flag("names a last record digest that is not its last record's".into());
        }

        // Provenance: the chain, and what each entry says.
        let provenance_at = header.segment_offset + header.provenance_at();
        let mut entry_at = provenance_at;
        let mut subjects = CommitSubjects {
            genesis: self.identity.genesis,
            frontier: &mut self.frontier,
            records: new_entries.iter(),
        };
        for (n, entry) in parts.provenance.iter().enumerate() {
            let number = self.provenance_count + n as u64;
            let mut pflag = |reason: String| {
                problems.push(problem(
                    "provenance",
                    Some(entry_at),
                    format!("entry #{number} ({}): {reason}", entry.action.name()),
                ));
            };
            let digest = match entry.digest() {
                Ok(d) => d,
                Err(e) => {
                    pflag(e.to_string());
                    break;
                }
            };
            if entry.previous != self.provenance_head {
                pflag("does not link to the previous entry".into());
            }
            if entry.details_json().is_err() {
                pflag("details are not a JSON object".into());
            }
            self.rules
                .entry(entry.action, &entry.subject, &mut subjects, |refusal| {
                    pflag(refusal.to_string())
                });
            self.provenance_head = digest;
            entry_at += entry.encoded_len() as u64;
        }
        // Records no entry named still count for the tree.
        let unnamed = subjects.records;
        if let Err(refusal) = self.rules.records_left(unnamed.len()) {
            problems.push(problem(
                "provenance",
                Some(provenance_at),
                format!("commit {}: {refusal}", header.seq),
            ));
        }
        for record in unnamed {
            self.frontier.append(&record.entry.digest);
        }
        self.provenance_count += parts.provenance.len() as u64;
        let mut flag = |reason: String| {
            problems.push(problem(
                "commit",
                at,
                format!("commit {}: {reason}", header.seq),
            ));
        };
        if self.provenance_head != header.provenance_head {
            flag("its provenance head is not the digest of its last entry".into());
        }
        if let Err(refusal) = self.rules.end_commit(header.seq, header.is_sealed()) {
            flag(refusal.to_string());
        }
        if self.frontier != *commit.frontier() {
            flag("its Merkle frontier is not the tree of the records so far".into());
            // Carry on from what the commit says, so later problems are its own.
            self.frontier = commit.frontier().clone();
        }
        self.previous = Some(commit.clone());
        report.problems.extend(problems);
        Ok(())
    }
}

/// What a commit's provenance entries can name, as full verification has it: the records
/// the commit adds, in order, each added to the tree as an entry takes it.
struct CommitSubjects<'f, 'r> {
    genesis: Digest,
    frontier: &'f mut Frontier,
    records: std::slice::Iter<'r, RunEntry>,
}

impl Subjects for CommitSubjects<'_, '_> {
    fn genesis(&self) -> Digest {
        self.genesis
    }

    fn next_record(&mut self) -> Option<RunEntry> {
        let record = self.records.next()?;
        self.frontier.append(&record.entry.digest);
        Some(*record)
    }

    fn root(&mut self) -> Digest {
        self.frontier.root()
    }
}

/// One record's findings, computed on a worker thread.
#[derive(Default)]
struct RecordCheck {
    prev_link: Option<[u8; 8]>,
    digest: Option<Digest>,
    signature: Option<[u8; 64]>,
    problems: Vec<Problem>,
}

fn check_record(position: u64, entry: &IndexEntry, bytes: &[u8]) -> RecordCheck {
    let mut out = RecordCheck::default();
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
    if let Some(reason) = unreadable(&record) {
        out.problems.push(record_problem(position, entry, reason));
    }
    out.prev_link = Some(record.header.prev_link);
    out.digest = Some(digest);
    out.signature = Some(*record.signature);
    out
}

/// Why `cat` could not read this record's payload, if it could not: "valid" means readable.
/// The data is decoded exactly as a reader decodes it (encryption, then compression to the
/// declared size, then the TEXT, EMBD or IMAG framing).
fn unreadable(record: &RecordView) -> Option<String> {
    let header = &record.header;
    let data_at = u64::from(header.data_offset);
    if header.encryption != 0 {
        return Some(format!(
            "encryption code {} is not supported: the block cannot be read",
            header.encryption
        ));
    }
    let decompressed;
    let data: &[u8] = if header.compression == crate::format::compression::COMPRESSION_NONE
        && record.data.len() as u64 == header.uncompressed_size
    {
        // Nothing to decode: no copy.
        record.data
    } else {
        match crate::format::compression::decompress(
            header.compression,
            record.data,
            header.uncompressed_size,
        ) {
            Ok(bytes) => {
                decompressed = bytes;
                &decompressed
            }
            Err(e) => return Some(format!("data at record byte {data_at}: {e}")),
        }
    };
    let framed = [FourCC::TEXT, FourCC::EMBD, FourCC::IMAG].contains(&header.block_type);
    match framed.then(|| crate::format::payload::content_of(header.block_type, data)) {
        Some(Err(e)) => Some(format!(
            "payload (the data from record byte {data_at}, decompressed): {e}"
        )),
        _ => None,
    }
}

/// Whose signature a [`SignatureCheck`] is, to name it if it fails.
enum SignatureOwner {
    /// The commit at this index of the commits checked, oldest first.
    Commit(usize),
    /// The record at this index of the chain's entries.
    Record(usize),
}

/// Signature checks started on blocking threads as their digests become known (see
/// [`verify_target`]); the failures come back as positions in the order of submission.
struct SignatureJobs {
    key: PublicKey,
    threads: usize,
    strict: bool,
    submitted: usize,
    running: Vec<(usize, SignatureJob)>,
}

/// The failures among a run of signature checks, or the task finding them.
enum SignatureJob {
    Done(Vec<usize>),
    Running(tokio::task::JoinHandle<Vec<usize>>),
}

impl SignatureJob {
    /// Whether the task is still checking.
    fn is_running(&self) -> bool {
        matches!(self, Self::Running(task) if !task.is_finished())
    }

    /// Waits for the task, if it is running.
    async fn finish(&mut self) -> Result<()> {
        if let Self::Running(task) = self {
            let failed = task.await.map_err(|e| {
                crate::Error::Invalid(format!("internal: checking signatures failed: {e}"))
            })?;
            *self = Self::Done(failed);
        }
        Ok(())
    }
}

/// Signature jobs running at once. Each uses every core, so more would only queue threads
/// (one job is a blocking thread and its helpers) and hold their checks in memory while
/// this thread reads ahead: a million records would start 245 jobs.
const SIGNATURE_JOBS_IN_FLIGHT: usize = 2;

impl SignatureJobs {
    fn new(key: PublicKey, options: VerifyOptions) -> Self {
        Self {
            key,
            threads: options.threads,
            strict: options.strict,
            submitted: 0,
            running: Vec::new(),
        }
    }

    /// Starts checking `checks`, which come after every check submitted before, once fewer
    /// than [`SIGNATURE_JOBS_IN_FLIGHT`] jobs are running (waiting for the oldest first).
    async fn submit(&mut self, checks: Vec<SignatureCheck>) -> Result<()> {
        if checks.is_empty() {
            return Ok(());
        }
        while self.in_flight() >= SIGNATURE_JOBS_IN_FLIGHT {
            let Some((_, oldest)) = self.running.iter_mut().find(|(_, job)| job.is_running())
            else {
                break;
            };
            oldest.finish().await?;
        }
        let first = self.submitted;
        self.submitted += checks.len();
        let (key, threads, strict) = (self.key, self.threads, self.strict);
        let job = match tokio::runtime::Handle::try_current() {
            Ok(runtime) => SignatureJob::Running(
                runtime.spawn_blocking(move || verify_many(&key, &checks, threads, strict)),
            ),
            // Outside a Tokio runtime, at once.
            Err(_) => SignatureJob::Done(verify_many(&key, &checks, threads, strict)),
        };
        self.running.push((first, job));
        Ok(())
    }

    /// How many jobs are still running.
    fn in_flight(&self) -> usize {
        self.running
            .iter()
            .filter(|(_, job)| job.is_running())
            .count()
    }

    /// The positions (in submission order) of the signatures that do not verify.
    async fn failures(self) -> Result<Vec<usize>> {
        let mut failures = Vec::new();
        for (first, mut job) in self.running {
            job.finish().await?;
            if let SignatureJob::Done(failed) = job {
                failures.extend(failed.into_iter().map(|n| first + n));
            }
        }
        Ok(failures)
    }
}

/// What checking the records found so far, and the digest the next record links to.
struct RecordFindings {
    previous_digest: Digest,
    problems: Vec<Problem>,
    bytes_hashed: u64,
}

/// Reads and hashes `entries[from..]`, checks their chain links, and submits their
/// signatures to `signatures`.
async fn check_records(
    store: &dyn BlockStore,
    entries: &[(u64, IndexEntry)],
    from: usize,
    options: VerifyOptions,
    signatures: &mut SignatureJobs,
    owners: &mut Vec<SignatureOwner>,
    found: &mut RecordFindings,
) -> Result<()> {
    // Records are read in chunks of bounded total size and count, hashed on worker threads,
    // and their signatures checked in the background while the next chunk is read.
    const CHUNK_BYTES: u64 = 64 << 20;
    const CHUNK_RECORDS: usize = 4096;
    let mut start = from;
    while start < entries.len() {
        let mut end = start;
        let mut chunk_bytes = 0u64;
        while end < entries.len()
            && (end == start || (chunk_bytes < CHUNK_BYTES && end - start < CHUNK_RECORDS))
        {
            chunk_bytes += entries[end].1.record_len;
            end += 1;
        }
        // Fetched concurrently: on an object store each read is a round trip.
        let fetched: Vec<_> = stream::iter(&entries[start..end])
            .map(|(_, entry)| store.read_record(entry))
            .buffered(READ_CONCURRENCY)
            .collect()
            .await;
        let mut chunk = Vec::with_capacity(fetched.len());
        for (i, result) in fetched.into_iter().enumerate() {
            let (position, entry) = &entries[start + i];
            chunk.push(match result {
                Ok(bytes) => Some(bytes),
                Err(e) if is_bad_bytes(&e) || matches!(e, StoreError::NotFound { .. }) => {
                    found
                        .problems
                        .push(record_problem(*position, entry, e.to_string()));
                    None
                }
                Err(e) => return Err(e.into()),
            });
        }
        let mut results = hash_chunk(&entries[start..end], &chunk, options.threads);
        // Bytes from a remote store can be damaged on the way: a record that fails its checks
        // is read and checked once more before the problem is reported (a local file answers
        // the same bytes again).
        for (i, result) in results.iter_mut().enumerate() {
            if result.problems.is_empty() || chunk[i].is_none() {
                continue;
            }
            let single = &entries[start + i..start + i + 1];
            if let Ok(bytes) = store.read_record(&single[0].1).await {
                let again = Some(bytes);
                if let Some(recheck) = hash_chunk(single, std::slice::from_ref(&again), 1).pop() {
                    *result = recheck;
                    chunk[i] = again;
                }
            }
        }
        let mut checks = Vec::with_capacity(results.len());
        for (i, result) in results.into_iter().enumerate() {
            let (position, entry) = &entries[start + i];
            found.bytes_hashed += chunk[i].as_ref().map_or(0, |b| b.len() as u64);
            found.problems.extend(result.problems);
            let previous_digest = found.previous_digest;
            if let Some(link) = result.prev_link
                && link != chain_link(&previous_digest)
            {
                found.problems.push(record_problem(
                    *position,
                    entry,
                    format!(
                        "hash chain broken: the header links to {} but the previous {} starts {}",
                        hex::encode(link),
                        if *position == 0 {
                            "chain seed"
                        } else {
                            "record digest"
                        },
                        hex::encode(chain_link(&previous_digest))
                    ),
                ));
            }
            if let (Some(digest), Some(signature)) = (result.digest, result.signature) {
                checks.push(SignatureCheck {
                    kind: SignedKind::Block,
                    digest,
                    signature,
                });
                owners.push(SignatureOwner::Record(start + i));
            }
            // The indexed digest is what the Merkle root and the next link commit to.
            found.previous_digest = entry.digest;
        }
        signatures.submit(checks).await?;
        start = end;
    }
    Ok(())
}

fn hash_chunk(
    entries: &[(u64, IndexEntry)],
    chunk: &[Option<Bytes>],
    threads: usize,
) -> Vec<RecordCheck> {
    let pairs: Vec<(&(u64, IndexEntry), &Option<Bytes>)> = entries.iter().zip(chunk).collect();
    crate::parallel::parallel_map(&pairs, threads, |((position, entry), bytes)| match bytes {
        Some(bytes) => check_record(*position, entry, bytes),
        None => RecordCheck::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::digest::sha256;

    /// Signature checks submitted chunk by chunk run at most `SIGNATURE_JOBS_IN_FLIGHT` at a
    /// time (a large artifact would otherwise start a job per chunk at once), and each bad
    /// signature is still named at its position, whichever chunk it is in.
    #[tokio::test]
    async fn signature_jobs_are_bounded_and_name_every_failure() {
        let key = crate::keys::SigningKey::from_seed(&[5; 32]);
        let public = PublicKey::from_bytes(&key.public_key()).expect("public key");
        let options = VerifyOptions {
            threads: 2,
            ..VerifyOptions::default()
        };
        let mut jobs = SignatureJobs::new(public, options);
        let (chunks, per_chunk) = (8usize, 300usize);
        let bad = [0usize, 299, 301, 1_111, chunks * per_chunk - 1];
        for chunk in 0..chunks {
            let checks = (0..per_chunk)
                .map(|i| {
                    let n = chunk * per_chunk + i;
                    let digest = sha256(&(n as u64).to_le_bytes());
                    let mut signature = key.sign(SignedKind::Block, &digest);
                    if bad.contains(&n) {
                        signature[7] ^= 1;
                    }
                    SignatureCheck {
                        kind: SignedKind::Block,
                        digest,
                        signature,
                    }
                })
                .collect();
            jobs.submit(checks).await.expect("submit");
            assert!(jobs.in_flight() <= SIGNATURE_JOBS_IN_FLIGHT);
        }
        assert_eq!(jobs.submitted, chunks * per_chunk);
        let mut failures = jobs.failures().await.expect("failures");
        failures.sort_unstable();
        assert_eq!(failures, bad);
    }
}
