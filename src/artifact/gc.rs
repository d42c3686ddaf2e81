//! Garbage collection for the object layout: deleting record objects that no commit
//! references.
//!
//! Such objects are left by appends that never committed (a writer that crashed, lost a race
//! and was abandoned, or an interrupted import). They are harmless but cost storage.
//!
//! # Why it is safe
//!
//! * The record objects are listed *before* the newest commit is read. A record committed
//!   before the listing is referenced by that commit or a later one, so it is kept; a record
//!   uploaded after the listing is not in it, so it cannot be deleted.
//! * What remains unreferenced is either an orphan or a record a live writer uploaded and has
//!   not committed yet. Only objects older than the grace period (`older_than`, default seven
//!   days) are deleted, and [`ArtifactWriter`](super::ArtifactWriter) uploads its pending
//!   records again before committing when they are older than an hour
//!   ([`REUPLOAD_PENDING_AFTER`](super::REUPLOAD_PENDING_AFTER)), so a record collected
//!   while its writer waited is stored again before the commit names it. One window remains
//!   and is accepted: a writer that held records for longer than the whole grace period,
//!   re-uploads them (finding them still there) and commits in the very seconds a collection
//!   that listed them before deletes them. Stores offer no conditional delete to close it.
//! * The referenced set comes from the signed index of the newest commit, and must account
//!   for every record the commit's Merkle tree counts; otherwise nothing is deleted.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::ArtifactReader;
use crate::error::{Error, Result};
use crate::store::{BlockStore, StoredRecord};

/// The default grace period: far longer than any append takes, so a record a live writer
/// uploaded is never collected before its commit.
pub const DEFAULT_GC_GRACE: Duration = Duration::from_secs(7 * 24 * 3600);

/// What [`collect_garbage`] may delete.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Only unreferenced objects at least this old are deleted.
    pub older_than: Duration,
    /// Report what would be deleted; delete nothing.
    pub dry_run: bool,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            older_than: DEFAULT_GC_GRACE,
            dry_run: false,
        }
    }
}

/// What [`collect_garbage`] found and did.
#[derive(Debug, Clone, Serialize)]
pub struct GcReport {
    /// The artifact collected, as given.
    pub location: String,
    /// The commit whose index decided what is referenced.
    pub newest_commit: u64,
    /// Record objects a commit references (kept).
    pub referenced: u64,
    /// Unreferenced record objects younger than the grace period (kept: a live writer may
    /// still commit them).
    pub young_orphans: u64,
    /// Unreferenced record objects deleted (or, with `dry_run`, that would be).
    pub deleted: Vec<String>,
    /// Total size in bytes of the objects in `deleted`.
    pub deleted_bytes: u64,
    /// Whether this was a dry run (nothing was deleted).
    pub dry_run: bool,
}

/// Deletes the record objects of the artifact at `store` that no commit references and that
/// are older than `options.older_than`.
pub async fn collect_garbage(store: Arc<dyn BlockStore>, options: GcOptions) -> Result<GcReport> {
    // List first: see the module documentation.
    let stored = store.stored_records().await?;
    let reader = ArtifactReader::open(store.clone()).await?;
    let blocks = reader.blocks().await?;
    if blocks.len() as u64 != reader.record_count() {
        return Err(Error::Verification(format!(
            "{}: the index lists {} records but commit {} counts {}; collecting nothing",
            store.location(),
            blocks.len(),
            reader.commit().seq(),
            reader.record_count()
        )));
    }
    let referenced: HashSet<_> = blocks.iter().map(|b| b.entry.digest).collect();
    let now = SystemTime::now();
    let mut report = GcReport {
        location: store.location(),
        newest_commit: reader.commit().seq(),
        referenced: 0,
        young_orphans: 0,
        deleted: Vec::new(),
        deleted_bytes: 0,
        dry_run: options.dry_run,
    };
    let mut doomed: Vec<StoredRecord> = Vec::new();
    for record in stored {
        if referenced.contains(&record.digest) {
            report.referenced += 1;
        } else if now
            .duration_since(record.last_modified)
            .is_ok_and(|age| age >= options.older_than)
        {
            doomed.push(record);
        } else {
            report.young_orphans += 1;
        }
    }
    for record in doomed {
        if !options.dry_run {
            store.delete_record(&record).await?;
        }
        report.deleted_bytes += record.size;
        report.deleted.push(record.key);
    }
    Ok(report)
}
