//! Byte-exact conversion between any two stores: the records and the committed tail are
//! copied as they are, so the destination holds the same artifact (same signatures, same
//! chain, same Merkle root) and rebuilding a single file from it gives the same bytes.

use std::sync::Arc;
use std::time::Instant;

use futures::stream::{self, StreamExt, TryStreamExt};
use serde::Serialize;

use super::verify::check_commit;
use crate::error::{Error, Result};
use crate::format::{IndexEntry, RecordView};
use crate::store::{BlockStore, ImportPrefix, StoreError, Tail};

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
            concurrency: 16,
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
    pub source: String,
    pub destination: String,
    pub records: u64,
    /// Records copied in this run.
    pub records_copied: u64,
    /// Records an interrupted earlier run had already stored.
    pub records_resumed: u64,
    pub bytes_copied: u64,
    /// The destination already held this exact artifact; nothing was written.
    pub already_converted: bool,
    pub merkle_root: String,
    pub seconds: f64,
}

/// Copies the artifact at `source` to `destination`, which must not hold another artifact.
///
/// The source's commit is verified first (a tampered artifact is not copied), and each record
/// is re-hashed as it passes. Re-running an interrupted conversion finishes it without
/// copying again what is already there.
pub async fn convert(
    source: Arc<dyn BlockStore>,
    destination: Arc<dyn BlockStore>,
    options: ConvertOptions,
) -> Result<ConvertReport> {
    let started = Instant::now();
    let head = source.head().await?;
    check_commit(&head)?;
    let mut report = ConvertReport {
        source: source.location(),
        destination: destination.location(),
        records: head.trailer.record_count,
        records_copied: 0,
        records_resumed: 0,
        bytes_copied: 0,
        already_converted: false,
        merkle_root: hex::encode(head.trailer.merkle_root),
        seconds: 0.0,
    };
    match destination.head().await {
        Ok(existing) => {
            if existing.trailer == head.trailer
                && existing.file_header == head.file_header
                && existing.metadata_section == head.metadata_section
            {
                report.already_converted = true;
                report.seconds = started.elapsed().as_secs_f64();
                return Ok(report);
            }
            return Err(Error::Store(StoreError::AlreadyExists {
                location: destination.location(),
            }));
        }
        Err(StoreError::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let mut session = destination
        .begin_import(ImportPrefix {
            file_header: head.file_header.to_vec(),
            metadata_section: head.metadata_section.to_vec(),
        })
        .await?;
    let entries = &head.index.entries;
    let present = session.present(entries).await?;
    let progress = options.on_progress.clone();
    let mut missing: Vec<IndexEntry> = Vec::new();
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
    let largest = missing
        .iter()
        .map(|e| e.record_len)
        .max()
        .unwrap_or(1)
        .max(1);
    let in_flight = (options.max_in_flight_bytes / largest)
        .clamp(1, options.concurrency.max(1) as u64) as usize;
    let source_ref = source.clone();
    // Each fetch runs as its own task, so transfers keep going while this loop writes.
    let mut records = stream::iter(missing.into_iter().map(move |entry| {
        let source = source_ref.clone();
        let fetch = async move {
            let bytes = source.read_record(&entry).await?;
            // Hash on a blocking thread: records are re-hashed in parallel and the runtime
            // keeps other transfers moving meanwhile.
            let (digest_ok, bytes) = tokio::task::spawn_blocking(move || {
                let ok = RecordView::decode(&bytes).is_ok_and(|r| r.digest() == entry.digest);
                (ok, bytes)
            })
            .await
            .map_err(|e| Error::Invalid(format!("hashing a record: {e}")))?;
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
                .map_err(|e| Error::Invalid(format!("fetching a record: {e}")))?
        }
    }))
    .buffered(in_flight);
    while let Some((entry, bytes)) = records.try_next().await? {
        session.put_record(&entry, bytes).await?;
        report.records_copied += 1;
        report.bytes_copied += entry.record_len;
        if let Some(progress) = &progress {
            progress(entry.record_len);
        }
    }
    session
        .commit(Tail {
            provenance_section: head.provenance_section.to_vec(),
            index_section: head.index_section.to_vec(),
            trailer: head.trailer.to_bytes().to_vec(),
        })
        .await?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Writes the single-file image of the artifact at `source` to `out`, streaming record by
/// record (the bytes `maif convert` would produce for a `.maif` destination).
pub async fn write_image(
    source: &dyn BlockStore,
    out: &mut (dyn std::io::Write + Send),
) -> Result<u64> {
    let head = source.head().await?;
    let io = |e: std::io::Error| Error::Invalid(format!("writing the image: {e}"));
    out.write_all(&head.file_header).map_err(io)?;
    out.write_all(&head.metadata_section).map_err(io)?;
    let mut written = (head.file_header.len() + head.metadata_section.len()) as u64;
    for entry in &head.index.entries {
        let bytes = source.read_record(entry).await?;
        out.write_all(&bytes).map_err(io)?;
        written += bytes.len() as u64;
    }
    for part in [
        &head.provenance_section[..],
        &head.index_section[..],
        &head.trailer.to_bytes()[..],
    ] {
        out.write_all(part).map_err(io)?;
        written += part.len() as u64;
    }
    Ok(written)
}
