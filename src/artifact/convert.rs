//! Byte-exact conversion between any two stores: the base, every record and every commit's
//! segment and trailer are copied as they are, commit by commit, so the destination holds
//! the same artifact (same signatures, chain, Merkle roots, index runs) and the single-file
//! image rebuilt from it is the same bytes.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};
use serde::Serialize;

use super::commit::{Commit, find_latest, read_parts};
use super::reader::{ArtifactReader, walk_commits};
use crate::error::{Error, Result};
use crate::format::layout::commit_object_start;
use crate::format::{IndexEntry, RecordView, TRAILER_LEN};
use crate::store::{BlockStore, StoreError};

/// TEST HOOK, for tests only; inert unless the variable is set. With
/// `MAIF_TEST_CONVERT_STOP_AFTER_RECORDS=N` (read once per process) a conversion exits the
/// process at once, with [`TEST_STOP_EXIT_CODE`] and no cleanup (as a kill would), right after
/// it has handed the Nth record it copies to the destination. Writes still in flight then
/// (uploads, up to the concurrency; queued file writes) may or may not land, as with a kill.
/// Tests use it to interrupt a conversion at a chosen record instead of racing a kill.
const TEST_STOP_AFTER_RECORDS: &str = "MAIF_TEST_CONVERT_STOP_AFTER_RECORDS";
/// The exit code of a process stopped by [`TEST_STOP_AFTER_RECORDS`] (test hook only).
const TEST_STOP_EXIT_CODE: i32 = 86;

/// The [`TEST_STOP_AFTER_RECORDS`] test hook: exits once `copied` records were handed over.
fn test_stop_after(copied: u64) {
    static AT: OnceLock<Option<u64>> = OnceLock::new();
    let at = *AT.get_or_init(|| {
        std::env::var(TEST_STOP_AFTER_RECORDS)
            .ok()
            .and_then(|v| v.trim().parse().ok())
    });
    if at == Some(copied) {
        eprintln!(
            "maif convert: test hook {TEST_STOP_AFTER_RECORDS}: stopping after {copied} records"
        );
        std::process::exit(TEST_STOP_EXIT_CODE);
    }
}

/// How a conversion runs.
#[derive(Clone)]
pub struct ConvertOptions {
    /// Records read (and written, where the destination allows) concurrently.
    pub concurrency: usize,
    /// Upper bound on the record bytes held in flight.
    pub max_in_flight_bytes: u64,
    /// Called with the bytes of each record as it is stored (or found already stored).
    pub on_progress: Option<Arc<dyn Fn(u64) + Send + Sync>>,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        Self {
            concurrency: crate::store::DEFAULT_CONCURRENCY,
            max_in_flight_bytes: 256 << 20,
            on_progress: None,
        }
    }
}

impl std::fmt::Debug for ConvertOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConvertOptions")
            .field("concurrency", &self.concurrency)
            .field("max_in_flight_bytes", &self.max_in_flight_bytes)
            .finish_non_exhaustive()
    }
}

/// What a conversion did.
#[derive(Debug, Clone, Serialize)]
pub struct ConvertReport {
    /// The source location, as given.
    pub source: String,
    /// The destination location, as given.
    pub destination: String,
    /// Records in the converted artifact (the source's newest commit).
    pub records: u64,
    /// Commits in the converted artifact, every one kept from the source.
    pub commits: u64,
    /// Records copied in this run.
    pub records_copied: u64,
    /// Records an interrupted earlier run had already stored.
    pub records_resumed: u64,
    /// Bytes written to the destination in this run.
    pub bytes_copied: u64,
    /// The destination already held this exact artifact; nothing was written.
    pub already_converted: bool,
    /// Hex of the newest commit's Merkle root (equal in source and destination).
    pub merkle_root: String,
    /// Wall-clock duration of the conversion, in seconds.
    pub seconds: f64,
}

/// Copies the artifact at `source` to `destination`, which must not hold another artifact.
///
/// The source's newest commit is verified first and every commit's link to its predecessor
/// is checked (a tampered artifact is not copied), and each record is re-hashed as it passes.
/// Re-running an interrupted conversion finishes it without copying again what is already
/// there. Commits land in order, each after its records, so an interrupted conversion to the
/// object layout leaves nothing or an earlier commit of the same artifact, never a commit
/// whose records are missing; a single-file destination appears only when complete.
///
/// # Example
///
/// A single file copied to the object layout (in memory here):
///
/// ```
/// use std::sync::Arc;
/// use maif_store::artifact::{ConvertOptions, convert};
/// use maif_store::store::{BlockStore, FileStore, ListingOrder, ObjectBackend};
/// use maif_store::{ArtifactReader, ArtifactWriter, CreateOptions, NewBlock, SigningKey};
/// use maif_store::format::FourCC;
/// use object_store::memory::InMemory;
/// use object_store::path::Path;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> maif_store::Result<()> {
/// let dir = tempfile::tempdir().unwrap();
/// let file: Arc<dyn BlockStore> = Arc::new(FileStore::new(dir.path().join("a.maif")));
/// let key = SigningKey::generate()?;
/// let mut writer = ArtifactWriter::create(file.clone(), key, CreateOptions::default()).await?;
/// writer.add(NewBlock::new(FourCC::BINA, b"payload".to_vec())).await?;
/// writer.commit().await?;
///
/// let objects: Arc<dyn BlockStore> = Arc::new(
///     ObjectBackend::new(Arc::new(InMemory::new()), Path::from("a"), "memory://test/a")
///         .with_listing_order(ListingOrder::Lexicographic),
/// );
/// let report = convert(file, objects.clone(), ConvertOptions::default()).await?;
/// assert_eq!(report.records, 1);
/// assert_eq!(ArtifactReader::open(objects).await?.record_count(), 1);
/// # Ok(()) }
/// ```
pub async fn convert(
    source: Arc<dyn BlockStore>,
    destination: Arc<dyn BlockStore>,
    options: ConvertOptions,
) -> Result<ConvertReport> {
    let started = Instant::now();
    let reader = ArtifactReader::open(source.clone()).await?;
    let newest = reader.commit().clone();
    let mut report = ConvertReport {
        source: source.location(),
        destination: destination.location(),
        records: newest.record_count(),
        commits: newest.seq() + 1,
        records_copied: 0,
        records_resumed: 0,
        bytes_copied: 0,
        already_converted: false,
        merkle_root: hex::encode(newest.header().merkle_root),
        seconds: 0.0,
    };
    let commits = walk_commits(reader.index(), &newest).await?;
    match find_latest(destination.as_ref()).await {
        Ok(existing) => {
            let matching = commits
                .get(existing.commit.seq() as usize)
                .is_some_and(|c| c.digest == existing.commit.digest);
            if existing.commit.digest == newest.digest {
                report.already_converted = true;
                report.seconds = started.elapsed().as_secs_f64();
                return Ok(report);
            }
            if !matching {
                return Err(Error::Store(StoreError::AlreadyExists {
                    location: destination.location(),
                }));
            }
            // An earlier commit of this very artifact: an interrupted conversion; resume.
        }
        Err(Error::Store(StoreError::NotFound { .. })) => {}
        Err(e) => return Err(e),
    }
    let base = source.base().await?;
    let mut session = destination.begin_import(&base).await?;
    let done_commits = session.present_commits().await?;
    let progress = options.on_progress.clone();
    let mut previous_count = 0;
    for commit in &commits {
        let header = commit.header();
        let prefix = reader
            .index()
            .read_segment(commit.reference(), 0..header.head_len())
            .await?;
        let parts = read_parts(reader.index(), commit, &prefix).await?;
        let entries: Vec<IndexEntry> = parts
            .new_entries(previous_count)
            .into_iter()
            .map(|e| e.entry)
            .collect();
        previous_count = header.record_count;
        let present = session.present(&entries).await?;
        let mut missing = Vec::new();
        for (entry, here) in entries.iter().zip(&present) {
            if *here {
                report.records_resumed += 1;
                if let Some(progress) = &progress {
                    progress(entry.record_len);
                }
            } else {
                missing.push(*entry);
            }
        }
        copy_records(&source, &missing, &options, session.as_mut(), &mut report).await?;
        if !done_commits.contains(&header.seq) {
            let bytes = commit_bytes(source.as_ref(), commit, &base).await?;
            session.put_commit(commit.reference(), bytes).await?;
        }
    }
    session.finish().await?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// A commit's bytes as a commit object holds them: its segment and trailer, after the base
/// for commit 0.
pub(crate) async fn commit_bytes(
    store: &dyn BlockStore,
    commit: &Commit,
    base: &crate::store::Base,
) -> Result<Bytes> {
    let header = commit.header();
    let segment = store
        .read_segment(
            commit.reference(),
            0..header.segment_len + TRAILER_LEN as u64,
        )
        .await?;
    if commit_object_start(header.seq, header.segment_offset) == 0 {
        let mut out = base.to_vec();
        out.extend_from_slice(&segment);
        return Ok(Bytes::from(out));
    }
    Ok(segment)
}

async fn copy_records(
    source: &Arc<dyn BlockStore>,
    missing: &[IndexEntry],
    options: &ConvertOptions,
    session: &mut dyn crate::store::ImportSession,
    report: &mut ConvertReport,
) -> Result<()> {
    let largest = missing
        .iter()
        .map(|e| e.record_len)
        .max()
        .unwrap_or(1)
        .max(1);
    let in_flight = (options.max_in_flight_bytes / largest)
        .clamp(1, options.concurrency.max(1) as u64) as usize;
    // Each fetch runs as its own task, so transfers keep going while this loop writes.
    let mut records = stream::iter(missing.iter().copied().map(|entry| {
        let source = source.clone();
        let location = source.location();
        let fetch = async move {
            let bytes = source.read_record(&entry).await?;
            // Hash on a blocking thread: records are re-hashed in parallel and the runtime
            // keeps other transfers moving meanwhile.
            let (digest_ok, bytes) = tokio::task::spawn_blocking(move || {
                let ok = RecordView::decode(&bytes).is_ok_and(|r| r.digest() == entry.digest);
                (ok, bytes)
            })
            .await
            .map_err(|e| StoreError::Internal {
                location: source.location(),
                reason: format!(
                    "the task hashing the record at offset {}: {e}",
                    entry.offset
                ),
            })?;
            if !digest_ok {
                return Err(Error::Verification(format!(
                    "{}: the record at offset {} does not match its committed digest; not copied",
                    source.location(),
                    entry.offset
                )));
            }
            Ok::<_, Error>((entry, bytes))
        };
        async move {
            tokio::spawn(fetch)
                .await
                .map_err(|e| StoreError::Internal {
                    location,
                    reason: format!("the task fetching a record: {e}"),
                })?
        }
    }))
    .buffered(in_flight);
    while let Some((entry, bytes)) = records.try_next().await? {
        session.put_record(&entry, bytes).await?;
        report.records_copied += 1;
        report.bytes_copied += entry.record_len;
        if let Some(progress) = &options.on_progress {
            progress(entry.record_len);
        }
        test_stop_after(report.records_copied);
    }
    Ok(())
}
