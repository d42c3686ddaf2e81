//! The object-store backend: one artifact = one prefix, over any `object_store`
//! implementation (S3, a local folder, memory).
//!
//! ```text
//! <prefix>/blocks/<record digest, 64 hex>      one object per record, its exact bytes     create-only
//! <prefix>/commits/<u64::MAX - seq, 20 digits> one object per commit: segment + trailer   create-only
//!                                              (commit 0's starts with header + metadata)
//! <prefix>/latest                              hint: newest commit number (local folders only)
//! ```
//!
//! # Commit strategy
//!
//! A commit uploads its records (create-only and named by digest, so a repeated upload is
//! harmless and a resumed copy is safe), then creates the next commit object with
//! `PutMode::Create`. That create is the commit point: of two writers that built on the same
//! commit, exactly one creates the next number and the other gets
//! [`StoreError::Conflict`]. Commit objects are never deleted, so a writer that stalls after
//! reading commit `n` can never re-create `n + 1` after others went on (the create fails, its
//! blocks stay invisible, and it retries on top of the newest commit), and every commit names
//! its predecessor's digest. When a create fails in a way that leaves open whether the store
//! acted (a dropped connection, or `AlreadyExists` from the client's own retry), the writer
//! reads the object back: the same bytes mean the commit landed.
//!
//! Finding the newest commit: on stores that list keys in lexicographic order (S3, memory)
//! the inverted, zero-padded names make the newest commit the first key of one LIST. Local
//! folders list in no order, so the backend keeps a best-effort hint (`latest`, written after
//! each commit; it may lag, never lead) and walks forward from it with HEADs, listing every
//! commit only when the hint is missing.
//!
//! A single-block append costs four requests on S3 and memory: the LIST, a GET of the newest
//! segment's head, the record PUT and the commit PUT. On local folders finding the newest
//! commit takes the hint's GET and two HEADs instead of the LIST, and the hint is written
//! after the commit. A commit whose run absorbs older runs not in the newest segment also
//! reads them (see `artifact::index`).

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::list::{PaginatedListOptions, PaginatedListStore};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::file::SEGMENT_PREFIX_READ;
use super::{
    AppendBase, AppendSession, AuditFinding, Base, BlockStore, CommitRef, ImportSession, Latest,
    RecordBytes, StoreError, StoredRecord,
};
use crate::format::file_header::FILE_HEADER_LEN;
use crate::format::layout::{
    COMMITS_DIR, LATEST_HINT, RECORDS_DIR, commit_object_name, commit_object_start,
    parse_commit_object_name, parse_record_object_name, record_object_name,
};
use crate::format::metadata::MAX_METADATA_LEN;
use crate::format::{Digest, IndexEntry, MetadataSection, TRAILER_LEN};

/// Object requests in flight per operation (an append, a conversion, a migration, an export)
/// when none is asked for: the one default every command and library entry point uses.
pub const DEFAULT_CONCURRENCY: usize = 16;
/// Records at least this large are uploaded in parts.
pub const MULTIPART_THRESHOLD: usize = 32 << 20;
/// Size of each part of a multipart upload.
pub(crate) const PART_SIZE: usize = 16 << 20;
/// Attempts at a create-only upload that fails on the way (object_store does not retry
/// `PutMode::Create` after a dropped connection; repeating it is safe because the key
/// names the content or the outcome is read back).
const PUT_ATTEMPTS: u32 = 4;
/// Attempts at a read (GET, HEAD, LIST) whose request or body failed on the way: the
/// client retries a failed request, not a body cut short or a listing that breaks off.
const READ_ATTEMPTS: u32 = 4;

/// How a store lists keys, which decides how the newest commit is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListingOrder {
    /// Keys come back in lexicographic order (S3, memory): one LIST finds the newest commit.
    Lexicographic,
    /// No order is promised (local folders): a hint and HEAD probes find it.
    Unordered,
}

/// An artifact stored under a prefix of an object store.
///
/// Any [`ObjectStore`] works: S3 (`object_store::aws`), a local folder
/// (`object_store::local`) or memory (`object_store::memory`).
///
/// # Example
///
/// An artifact in memory (what the `memory://` locations use):
///
/// ```
/// use std::sync::Arc;
/// use maif_store::store::{BlockStore, ListingOrder, ObjectBackend};
/// use maif_store::{ArtifactReader, ArtifactWriter, CreateOptions, NewBlock, SigningKey};
/// use maif_store::format::FourCC;
/// use object_store::memory::InMemory;
/// use object_store::path::Path;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> maif_store::Result<()> {
/// let objects = Arc::new(InMemory::new());
/// let backend = ObjectBackend::new(objects, Path::from("agents/a1"), "memory://test/agents/a1")
///     .with_listing_order(ListingOrder::Lexicographic); // memory lists keys in order
/// let store: Arc<dyn BlockStore> = Arc::new(backend);
///
/// let key = SigningKey::generate()?;
/// let mut writer = ArtifactWriter::create(store.clone(), key, CreateOptions::default()).await?;
/// writer.add(NewBlock::new(FourCC::BINA, b"payload".to_vec())).await?;
/// writer.commit().await?;
/// assert_eq!(ArtifactReader::open(store).await?.record_count(), 1);
/// # Ok(()) }
/// ```
///
/// On S3 (credentials and region from the environment):
///
/// ```no_run
/// use std::sync::Arc;
/// use maif_store::store::{BlockStore, ListingOrder, ObjectBackend};
/// use object_store::aws::AmazonS3Builder;
/// use object_store::path::Path;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let s3 = AmazonS3Builder::from_env().with_bucket_name("my-bucket").build()?;
/// let store: Arc<dyn BlockStore> = Arc::new(
///     ObjectBackend::new(Arc::new(s3), Path::from("agents/a1"), "s3://my-bucket/agents/a1")
///         .with_listing_order(ListingOrder::Lexicographic),
/// );
/// # let _ = store;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ObjectBackend {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    url: String,
    concurrency: usize,
    listing: ListingOrder,
    /// Lists one key per request (S3's `max-keys=1`), where the store can.
    first_key: Option<FirstKeyLister>,
    /// The file header and metadata, once read (they never change).
    base: Arc<OnceLock<Base>>,
}

/// A store's paginated listing (it has no `Debug` of its own).
#[derive(Clone)]
struct FirstKeyLister(Arc<dyn PaginatedListStore>);

impl std::fmt::Debug for FirstKeyLister {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FirstKeyLister")
    }
}

fn object_error(url: &str, key: &Path, action: &str, source: object_store::Error) -> StoreError {
    match source {
        object_store::Error::NotFound { .. } => StoreError::NotFound {
            location: format!("{url} (object {key})"),
        },
        source => StoreError::Object {
            location: url.to_string(),
            key: key.to_string(),
            action: action.to_string(),
            source: Box::new(source),
        },
    }
}

fn create_only() -> PutOptions {
    PutOptions {
        mode: PutMode::Create,
        ..PutOptions::default()
    }
}

fn is_already_there(error: &object_store::Error) -> bool {
    matches!(
        error,
        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }
    )
}

/// Errors that mean the store refused a request outright, so nothing was written and
/// repeating it will not help (as opposed to a dropped connection or a server error, after
/// which the write may or may not have happened).
fn is_definite_failure(error: &object_store::Error) -> bool {
    matches!(
        error,
        object_store::Error::NotFound { .. }
            | object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. }
            | object_store::Error::NotSupported { .. }
            | object_store::Error::NotImplemented { .. }
            | object_store::Error::InvalidPath { .. }
    )
}

/// Errors after which repeating a read may succeed: anything but a definite answer.
pub(super) fn is_transient(error: &object_store::Error) -> bool {
    !is_definite_failure(error)
        && !is_already_there(error)
        && !matches!(error, object_store::Error::NotModified { .. })
}

/// Runs an idempotent read, again after a pause when it fails on the way.
pub(super) async fn retry_read<T, F, Fut>(
    what: &Path,
    mut read: F,
) -> Result<T, object_store::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, object_store::Error>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match read().await {
            Err(e) if attempt < READ_ATTEMPTS && is_transient(&e) => {
                tracing::info!(key = %what, attempt, error = %e, "retrying a read");
                tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
            }
            other => return other,
        }
    }
}

/// Runs `read` again, up to [`READ_ATTEMPTS`] times in all, while its answer holds other
/// than `expected` bytes (`len` gives `None` for an answer without bytes, which is final): a
/// body can end early without an error, so a short answer is not believed at once. Returns
/// the last answer; the caller decides what a still-short one means.
pub(super) async fn reread_short<T, E, F, Fut>(
    key: &Path,
    expected: u64,
    len: impl Fn(&T) -> Option<usize>,
    mut read: F,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut attempt = 1;
    loop {
        let answer = read().await?;
        match len(&answer) {
            Some(got) if got as u64 != expected && attempt < READ_ATTEMPTS => {
                tracing::info!(%key, attempt, got, expected, "re-reading a short answer");
                attempt += 1;
            }
            _ => return Ok(answer),
        }
    }
}

/// Splits a commit-0 object (or any prefix of one that holds the whole base) into the base
/// and what follows it.
fn split_base(bytes: &Bytes) -> Option<(Base, Bytes)> {
    let metadata_len = MetadataSection::peek_len(bytes.get(FILE_HEADER_LEN..)?).ok()?;
    let base_len = FILE_HEADER_LEN + metadata_len;
    if bytes.len() < base_len {
        return None;
    }
    Some((
        Base {
            file_header: bytes.slice(..FILE_HEADER_LEN),
            metadata_section: bytes.slice(FILE_HEADER_LEN..base_len),
        },
        bytes.slice(base_len..),
    ))
}

impl ObjectBackend {
    /// The artifact under `prefix` of `store`; `url` names it in messages. The newest commit
    /// is found as on a store that lists in no particular order; use
    /// [`with_listing_order`](Self::with_listing_order) for S3 and memory.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: Path, url: impl Into<String>) -> Self {
        Self {
            store,
            prefix,
            url: url.into(),
            concurrency: DEFAULT_CONCURRENCY,
            listing: ListingOrder::Unordered,
            first_key: None,
            base: Arc::new(OnceLock::new()),
        }
    }

    /// Sets how many object requests an append keeps in flight (at least 1).
    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    /// Declares how the store lists keys.
    pub fn with_listing_order(mut self, listing: ListingOrder) -> Self {
        self.listing = listing;
        self
    }

    /// Finds the newest commit with a LIST that asks for one key (`max-keys=1` on S3),
    /// through `lister`, the same bucket as the store. Without it a LIST answers with up to
    /// 1,000 keys: about 250 KB once an artifact has 800 commits, where one key is 700 bytes.
    pub fn with_first_key_listing(mut self, lister: Arc<dyn PaginatedListStore>) -> Self {
        self.first_key = Some(FirstKeyLister(lister));
        self
    }

    /// Key of the record object with digest `digest`.
    pub(crate) fn record_key(&self, digest: &Digest) -> Path {
        self.prefix
            .clone()
            .join(RECORDS_DIR)
            .join(record_object_name(digest))
    }

    /// Key of commit `seq`'s object.
    pub(crate) fn commit_key(&self, seq: u64) -> Path {
        self.prefix
            .clone()
            .join(COMMITS_DIR)
            .join(commit_object_name(seq))
    }

    fn hint_key(&self) -> Path {
        self.prefix.clone().join(LATEST_HINT)
    }

    fn err(&self, key: &Path, action: &str) -> impl FnOnce(object_store::Error) -> StoreError + '_ {
        let key = key.clone();
        let action = action.to_string();
        move |source| object_error(&self.url, &key, &action, source)
    }

    fn missing(&self, key: &Path, what: &str) -> StoreError {
        StoreError::Corrupt {
            location: self.url.clone(),
            reason: format!("{what} object {key} is missing"),
        }
    }

    async fn exists(&self, key: &Path) -> Result<bool, StoreError> {
        match retry_read(key, || self.store.head(key)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.err(key, "checking")(e)),
        }
    }

    async fn get(
        &self,
        key: &Path,
        range: Option<Range<u64>>,
    ) -> Result<Option<Bytes>, StoreError> {
        // The body is read inside the retried call: a body cut short is read again.
        let result = retry_read(key, || async {
            match &range {
                Some(range) => self.store.get_range(key, range.clone()).await,
                None => self.store.get(key).await?.bytes().await,
            }
        })
        .await;
        match result {
            Ok(bytes) => Ok(Some(bytes)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err(key, "reading")(e)),
        }
    }

    /// [`Self::get`] of bytes whose length is known: a short answer is read again before it
    /// is believed (a proxy or a dropped connection can end a body early without an error).
    async fn get_exact(
        &self,
        key: &Path,
        range: Option<Range<u64>>,
        expected_len: u64,
    ) -> Result<Option<Bytes>, StoreError> {
        reread_short(
            key,
            expected_len,
            |answer: &Option<Bytes>| answer.as_ref().map(Bytes::len),
            || self.get(key, range.clone()),
        )
        .await
    }

    /// Every commit number present (one full LIST of `commits/`).
    async fn list_commits(&self) -> Result<Vec<u64>, StoreError> {
        let dir = self.prefix.clone().join(COMMITS_DIR);
        let objects: Vec<_> = retry_read(&dir, || self.store.list(Some(&dir)).try_collect())
            .await
            .map_err(self.err(&dir, "listing"))?;
        Ok(objects
            .iter()
            .filter_map(|meta| meta.location.filename().and_then(parse_commit_object_name))
            .collect())
    }

    /// The newest commit number, or `None` when there is no artifact.
    async fn newest_seq(&self) -> Result<Option<u64>, StoreError> {
        match self.listing {
            ListingOrder::Lexicographic => {
                let dir = self.prefix.clone().join(COMMITS_DIR);
                if let Some(FirstKeyLister(lister)) = &self.first_key {
                    // A paginated listing takes the prefix as is: end it with the delimiter.
                    let prefix = format!("{dir}{}", object_store::path::DELIMITER);
                    let page = retry_read(&dir, || {
                        lister.list_paginated(
                            Some(&prefix),
                            PaginatedListOptions {
                                max_keys: Some(1),
                                ..PaginatedListOptions::default()
                            },
                        )
                    })
                    .await
                    .map_err(self.err(&dir, "listing"))?;
                    if let Some(meta) = page.result.objects.first() {
                        if let Some(seq) =
                            meta.location.filename().and_then(parse_commit_object_name)
                        {
                            return Ok(Some(seq));
                        }
                    } else if page.page_token.is_none() {
                        return Ok(None);
                    }
                    // Something other than a commit object sorts first: list them all.
                }
                // Only the first page is fetched: the newest commit sorts first.
                let first = retry_read(&dir, || async {
                    let mut listing = self.store.list(Some(&dir));
                    while let Some(meta) = listing.next().await {
                        if let Some(seq) =
                            meta?.location.filename().and_then(parse_commit_object_name)
                        {
                            return Ok(Some(seq));
                        }
                    }
                    Ok(None)
                })
                .await
                .map_err(self.err(&dir, "listing"))?;
                Ok(first)
            }
            ListingOrder::Unordered => {
                let hint = self
                    .get(&self.hint_key(), None)
                    .await?
                    .and_then(|bytes| std::str::from_utf8(&bytes).ok()?.trim().parse::<u64>().ok());
                let mut seq = match hint {
                    Some(seq) if self.exists(&self.commit_key(seq)).await? => seq,
                    _ => match self.list_commits().await?.into_iter().max() {
                        Some(seq) => seq,
                        None => return Ok(None),
                    },
                };
                // The hint is written after the commit, so it may lag: walk forward.
                while self.exists(&self.commit_key(seq + 1)).await? {
                    seq += 1;
                }
                Ok(Some(seq))
            }
        }
    }

    async fn write_hint(&self, seq: u64) {
        if self.listing == ListingOrder::Unordered
            && let Err(e) = self
                .store
                .put(&self.hint_key(), PutPayload::from(seq.to_string()))
                .await
        {
            tracing::warn!(location = %self.url, error = %e, "could not update the newest-commit hint");
        }
    }

    /// Creates commit `seq`'s object, create-only, and settles every outcome: `Ok` when the
    /// object holds `bytes` (whoever wrote it), `Conflict` when it holds other bytes.
    async fn create_commit(&self, seq: u64, bytes: Bytes) -> Result<(), StoreError> {
        let key = self.commit_key(seq);
        let mut last_error = None;
        for attempt in 1..=PUT_ATTEMPTS {
            let outcome = self
                .store
                .put_opts(&key, PutPayload::from(bytes.clone()), create_only())
                .await;
            match outcome {
                Ok(_) => return Ok(()),
                Err(e) if is_definite_failure(&e) => {
                    // The store refused the request itself: nothing was written.
                    return Err(object_error(&self.url, &key, "committing", e));
                }
                Err(e) => {
                    let already_there = is_already_there(&e);
                    // The create failed, or failed to report: the object decides. An object
                    // with our bytes is our commit (the client may have retried a create the
                    // server had already performed).
                    match self.get(&key, None).await {
                        Ok(Some(stored)) if stored == bytes => return Ok(()),
                        Ok(Some(_)) => {
                            return Err(StoreError::Conflict {
                                location: self.url.clone(),
                                reason: format!("commit {seq} was made by another writer"),
                            });
                        }
                        Ok(None) if already_there => {
                            // A 412 for a key that does not exist: a conflicting request was
                            // in flight. Try again.
                        }
                        Ok(None) => {}
                        Err(read_error) => {
                            tracing::warn!(location = %self.url, %read_error, "reading back a commit");
                        }
                    }
                    tracing::info!(location = %self.url, attempt, error = %e, "retrying a commit");
                    last_error = Some(e.to_string());
                }
            }
        }
        Err(StoreError::Unknown {
            location: self.url.clone(),
            what: format!("creating commit {seq} ({key})"),
            reason: last_error.unwrap_or_default(),
            how_to_check: format!(
                "`maif verify {}` shows whether commit {seq} landed",
                self.url
            ),
        })
    }

    /// Every object under the prefix (for verification's accounting).
    pub(crate) async fn list_all(&self) -> Result<Vec<object_store::ObjectMeta>, StoreError> {
        retry_read(&self.prefix, || {
            self.store.list(Some(&self.prefix)).try_collect()
        })
        .await
        .map_err(self.err(&self.prefix, "listing"))
    }

    fn uploader(&self) -> Uploader {
        Uploader {
            backend: self.clone(),
            uploads: JoinSet::new(),
            permits: Arc::new(Semaphore::new(self.concurrency)),
        }
    }
}

/// Uploads one record object, create-only: an existing object of that name already holds
/// these bytes (the name is their digest), so `AlreadyExists` is success.
async fn upload(
    store: Arc<dyn ObjectStore>,
    key: Path,
    record: RecordBytes,
) -> Result<(), object_store::Error> {
    let len = record.len();
    if len >= MULTIPART_THRESHOLD as u64 {
        let bytes = record.to_bytes();
        let mut attempt = 0;
        loop {
            attempt += 1;
            // An object of the right name and size is this record (the name is its
            // digest): an earlier attempt, or an earlier run, completed it.
            match retry_read(&key, || store.head(&key)).await {
                Ok(meta) if meta.size == len => return Ok(()),
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
            match upload_in_parts(&store, &key, &bytes).await {
                Ok(()) => return Ok(()),
                // A part or the completion failed on the way (the completion may even have
                // happened): the HEAD above decides, then the upload starts over.
                Err(e) if attempt < PUT_ATTEMPTS && !is_definite_failure(&e) => {
                    tracing::info!(%key, attempt, error = %e, "retrying a multipart record upload");
                }
                Err(e) => return Err(e),
            }
        }
    }
    let payload: PutPayload = record.parts.into_iter().collect();
    let mut attempt = 0;
    loop {
        attempt += 1;
        match store.put_opts(&key, payload.clone(), create_only()).await {
            Ok(_) => return Ok(()),
            Err(e) if is_already_there(&e) => return Ok(()),
            Err(e) if attempt < PUT_ATTEMPTS && !is_definite_failure(&e) => {
                tracing::info!(%key, attempt, error = %e, "retrying a record upload");
            }
            Err(e) => return Err(e),
        }
    }
}

/// One multipart upload of `bytes` to `key`, aborted if a part fails.
async fn upload_in_parts(
    store: &Arc<dyn ObjectStore>,
    key: &Path,
    bytes: &Bytes,
) -> Result<(), object_store::Error> {
    let mut upload = store.put_multipart(key).await?;
    let mut parts = Vec::new();
    for start in (0..bytes.len()).step_by(PART_SIZE) {
        let end = (start + PART_SIZE).min(bytes.len());
        parts.push(upload.put_part(PutPayload::from(bytes.slice(start..end))));
    }
    if let Err(e) = futures::future::try_join_all(parts).await {
        let _ = upload.abort().await;
        return Err(e);
    }
    upload.complete().await?;
    Ok(())
}

/// Record uploads in flight, bounded by the backend's concurrency.
struct Uploader {
    backend: ObjectBackend,
    uploads: JoinSet<Result<(), StoreError>>,
    permits: Arc<Semaphore>,
}

impl Uploader {
    async fn put(&mut self, digest: &Digest, record: RecordBytes) -> Result<(), StoreError> {
        while let Some(done) = self.uploads.try_join_next() {
            flatten(&self.backend.url, done)?;
        }
        // Waiting for a permit bounds the records held in memory to the concurrency.
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| StoreError::Io {
                location: self.backend.url.clone(),
                action: "waiting to upload a record".into(),
                source: std::io::Error::other(e),
            })?;
        let key = self.backend.record_key(digest);
        let store = self.backend.store.clone();
        let url = self.backend.url.clone();
        self.uploads.spawn(async move {
            let result = upload(store, key.clone(), record).await;
            drop(permit);
            result.map_err(|e| object_error(&url, &key, "uploading a record", e))
        });
        Ok(())
    }

    /// Waits for every upload.
    async fn drain(&mut self) -> Result<(), StoreError> {
        while let Some(done) = self.uploads.join_next().await {
            flatten(&self.backend.url, done)?;
        }
        Ok(())
    }
}

fn flatten(
    url: &str,
    done: Result<Result<(), StoreError>, tokio::task::JoinError>,
) -> Result<(), StoreError> {
    // A failed task is trouble on this side, not bad stored bytes: not `Corrupt`.
    done.map_err(|e| StoreError::Io {
        location: url.to_string(),
        action: "uploading a record".into(),
        source: std::io::Error::other(e),
    })?
}

#[async_trait]
impl BlockStore for ObjectBackend {
    fn location(&self) -> String {
        self.url.clone()
    }

    async fn latest(&self) -> Result<Latest, StoreError> {
        let Some(seq) = self.newest_seq().await? else {
            return Err(StoreError::NotFound {
                location: self.url.clone(),
            });
        };
        let key = self.commit_key(seq);
        let range = if seq == 0 {
            // Commit 0's object starts with the base (at most 64 KiB of metadata).
            0..(FILE_HEADER_LEN as u64 + 4 + u64::from(MAX_METADATA_LEN) + SEGMENT_PREFIX_READ)
        } else {
            0..SEGMENT_PREFIX_READ
        };
        let bytes = self
            .get(&key, Some(range))
            .await?
            .ok_or_else(|| self.missing(&key, "commit"))?;
        let segment_prefix = if seq == 0 {
            let (base, rest) = split_base(&bytes).ok_or_else(|| StoreError::Corrupt {
                location: format!("{} (object {key})", self.url),
                reason: "commit 0 does not start with a file header and metadata section".into(),
            })?;
            let _ = self.base.set(base);
            rest
        } else {
            bytes
        };
        Ok(Latest {
            seq,
            segment_prefix,
            uncommitted: None,
            origin: format!("{} (object {key})", self.url),
        })
    }

    async fn base(&self) -> Result<Base, StoreError> {
        if let Some(base) = self.base.get() {
            return Ok(base.clone());
        }
        let key = self.commit_key(0);
        let bytes = self
            .get(
                &key,
                Some(0..(FILE_HEADER_LEN as u64 + 4 + u64::from(MAX_METADATA_LEN))),
            )
            .await?
            .ok_or_else(|| StoreError::NotFound {
                location: self.url.clone(),
            })?;
        let (base, _) = split_base(&bytes).ok_or_else(|| StoreError::Corrupt {
            location: format!("{} (object {key})", self.url),
            reason: "commit 0 does not start with a file header and metadata section".into(),
        })?;
        let _ = self.base.set(base.clone());
        Ok(base)
    }

    async fn read_segment(
        &self,
        commit: CommitRef,
        range: Range<u64>,
    ) -> Result<Bytes, StoreError> {
        let key = self.commit_key(commit.seq);
        let shift = commit.segment_offset - commit_object_start(commit.seq, commit.segment_offset);
        let out_of_range = || StoreError::OutOfRange {
            location: self.url.clone(),
            what: format!("bytes {range:?} of commit {}'s segment", commit.seq),
        };
        let start = range.start.checked_add(shift).ok_or_else(out_of_range)?;
        let end = range.end.checked_add(shift).ok_or_else(out_of_range)?;
        if start >= end {
            return Ok(Bytes::new());
        }
        let bytes = self
            .get_exact(&key, Some(start..end), end - start)
            .await?
            .ok_or_else(|| self.missing(&key, "commit"))?;
        if bytes.len() as u64 != end - start {
            return Err(out_of_range());
        }
        Ok(bytes)
    }

    async fn read_record_range(
        &self,
        entry: &IndexEntry,
        range: Range<u64>,
    ) -> Result<Bytes, StoreError> {
        if range.start > range.end || range.end > entry.record_len {
            return Err(StoreError::OutOfRange {
                location: self.url.clone(),
                what: format!("bytes {range:?} of a {}-byte record", entry.record_len),
            });
        }
        let key = self.record_key(&entry.digest);
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        let whole = range == (0..entry.record_len);
        let bytes = self
            .get_exact(
                &key,
                (!whole).then_some(range.clone()),
                range.end - range.start,
            )
            .await?
            .ok_or_else(|| self.missing(&key, "record"))?;
        if bytes.len() as u64 != range.end - range.start {
            return Err(StoreError::Corrupt {
                location: format!("{} (object {key})", self.url),
                reason: format!(
                    "the record object holds {} of the {} bytes its index entry promises",
                    bytes.len(),
                    range.end - range.start
                ),
            });
        }
        Ok(bytes)
    }

    async fn create(&self, genesis: Bytes) -> Result<(), StoreError> {
        match self.create_commit(0, genesis).await {
            Err(StoreError::Conflict { .. }) => Err(StoreError::AlreadyExists {
                location: self.url.clone(),
            }),
            Err(e) => Err(e),
            Ok(()) => {
                self.write_hint(0).await;
                Ok(())
            }
        }
    }

    async fn begin_append(&self, base: &AppendBase) -> Result<Box<dyn AppendSession>, StoreError> {
        // No request here: the create-only commit is what detects a conflict.
        Ok(Box::new(ObjectAppend {
            uploader: self.uploader(),
            base_seq: base.commit.seq,
        }))
    }

    async fn begin_import(&self, base: &Base) -> Result<Box<dyn ImportSession>, StoreError> {
        if let Ok(existing) = self.base().await
            && existing != *base
        {
            return Err(StoreError::AlreadyExists {
                location: self.url.clone(),
            });
        }
        // One listing tells which records and commits an interrupted import already stored.
        let blocks = self.prefix.clone().join(RECORDS_DIR);
        let existing = retry_read(&blocks, || {
            self.store
                .list(Some(&blocks))
                .map_ok(|meta| {
                    (
                        meta.location.filename().unwrap_or_default().to_string(),
                        meta.size,
                    )
                })
                .try_collect::<HashMap<String, u64>>()
        })
        .await
        .map_err(self.err(&blocks, "listing"))?;
        let commits = self.list_commits().await?.into_iter().collect();
        Ok(Box::new(ObjectImport {
            uploader: self.uploader(),
            existing,
            commits,
            newest: None,
        }))
    }

    async fn audit(
        &self,
        records: &HashSet<Digest>,
        newest_commit: u64,
    ) -> Result<Vec<AuditFinding>, StoreError> {
        let objects = self.list_all().await?;
        let blocks = self.prefix.clone().join(RECORDS_DIR);
        let commits = self.prefix.clone().join(COMMITS_DIR);
        let referenced: HashMap<String, Digest> = records
            .iter()
            .map(|digest| (record_object_name(digest), *digest))
            .collect();
        let mut seen_records = HashSet::new();
        let mut findings = Vec::new();
        for meta in objects {
            let key = meta.location.to_string();
            let name = meta.location.filename().unwrap_or_default().to_string();
            let parent_is = |dir: &Path| {
                meta.location
                    .prefix_match(dir)
                    .is_some_and(|mut rest| rest.next().is_some() && rest.next().is_none())
            };
            if parent_is(&blocks) {
                if referenced.contains_key(&name) {
                    seen_records.insert(name);
                } else {
                    findings.push(AuditFinding::Orphan {
                        key,
                        size: meta.size,
                    });
                }
            } else if parent_is(&commits)
                && parse_commit_object_name(&name).is_some_and(|seq| seq <= newest_commit)
            {
                // Commits are checked by following their chain, which names each one.
            } else if !(parent_is(&self.prefix) && name == LATEST_HINT) {
                findings.push(AuditFinding::Unexpected { key });
            }
        }
        for (name, digest) in &referenced {
            if !seen_records.contains(name) {
                findings.push(AuditFinding::MissingRecord {
                    digest: *digest,
                    key: blocks.clone().join(name.as_str()).to_string(),
                });
            }
        }
        findings.sort_by_key(|f| format!("{f:?}"));
        Ok(findings)
    }

    async fn stored_records(&self) -> Result<Vec<StoredRecord>, StoreError> {
        let blocks = self.prefix.clone().join(RECORDS_DIR);
        let objects: Vec<object_store::ObjectMeta> =
            retry_read(&blocks, || self.store.list(Some(&blocks)).try_collect())
                .await
                .map_err(self.err(&blocks, "listing"))?;
        Ok(objects
            .into_iter()
            .filter_map(|meta| {
                let digest = parse_record_object_name(meta.location.filename()?)?;
                let millis = u64::try_from(meta.last_modified.timestamp_millis()).unwrap_or(0);
                Some(StoredRecord {
                    key: meta.location.to_string(),
                    digest,
                    size: meta.size,
                    last_modified: std::time::UNIX_EPOCH + std::time::Duration::from_millis(millis),
                })
            })
            .collect())
    }

    async fn delete_record(&self, record: &StoredRecord) -> Result<(), StoreError> {
        let key = self.record_key(&record.digest);
        if key.as_ref() != record.key {
            return Err(StoreError::Unsupported {
                location: self.url.clone(),
                reason: format!("{} is not a record object of this artifact", record.key),
            });
        }
        match self.store.delete(&key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(object_error(&self.url, &key, "deleting", e)),
        }
    }
}

/// An append to the object layout: records upload concurrently, the commit object last.
struct ObjectAppend {
    uploader: Uploader,
    base_seq: u64,
}

#[async_trait]
impl AppendSession for ObjectAppend {
    async fn put_record(
        &mut self,
        entry: &IndexEntry,
        record: RecordBytes,
    ) -> Result<(), StoreError> {
        self.uploader.put(&entry.digest, record).await
    }

    async fn commit(
        mut self: Box<Self>,
        seq: u64,
        segment: Bytes,
        trailer: [u8; TRAILER_LEN],
    ) -> Result<(), StoreError> {
        if seq != self.base_seq + 1 {
            return Err(StoreError::Misuse {
                location: self.uploader.backend.url.clone(),
                reason: format!("commit {seq} does not follow commit {}", self.base_seq),
            });
        }
        // Every record is stored before the commit that makes it visible.
        self.uploader.drain().await?;
        let mut bytes = Vec::with_capacity(segment.len() + TRAILER_LEN);
        bytes.extend_from_slice(&segment);
        bytes.extend_from_slice(&trailer);
        let backend = self.uploader.backend.clone();
        backend.create_commit(seq, Bytes::from(bytes)).await?;
        backend.write_hint(seq).await;
        Ok(())
    }
}

/// A copy into the object layout.
struct ObjectImport {
    uploader: Uploader,
    /// Record objects already stored (name to size).
    existing: HashMap<String, u64>,
    /// Commit objects already stored.
    commits: HashSet<u64>,
    newest: Option<u64>,
}

#[async_trait]
impl ImportSession for ObjectImport {
    async fn present(&mut self, entries: &[IndexEntry]) -> Result<Vec<bool>, StoreError> {
        // Record objects are named by digest and written create-only, so an object of the
        // right name and size holds the right bytes; verification re-hashes them anyway.
        Ok(entries
            .iter()
            .map(|e| self.existing.get(&record_object_name(&e.digest)) == Some(&e.record_len))
            .collect())
    }

    async fn present_commits(&mut self) -> Result<HashSet<u64>, StoreError> {
        Ok(self.commits.clone())
    }

    async fn put_record(&mut self, entry: &IndexEntry, record: Bytes) -> Result<(), StoreError> {
        self.uploader
            .put(&entry.digest, RecordBytes::from(record))
            .await
    }

    async fn put_commit(&mut self, commit: CommitRef, bytes: Bytes) -> Result<(), StoreError> {
        // A commit becomes visible only once every record before it is stored.
        self.uploader.drain().await?;
        let backend = self.uploader.backend.clone();
        match backend.create_commit(commit.seq, bytes).await {
            Err(StoreError::Conflict { .. }) => Err(StoreError::AlreadyExists {
                location: backend.url.clone(),
            }),
            other => {
                self.newest = Some(commit.seq);
                other
            }
        }
    }

    async fn finish(mut self: Box<Self>) -> Result<(), StoreError> {
        self.uploader.drain().await?;
        if let Some(seq) = self.newest {
            self.uploader.backend.write_hint(seq).await;
        }
        Ok(())
    }
}

/// Named in-memory stores shared within a process, for `memory://NAME` locations.
pub(crate) fn memory_store(name: &str) -> Arc<dyn ObjectStore> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<dyn ObjectStore>>>> = OnceLock::new();
    let stores = STORES.get_or_init(|| Mutex::new(HashMap::new()));
    let mut stores = match stores.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    };
    stores
        .entry(name.to_string())
        .or_insert_with(|| Arc::new(object_store::memory::InMemory::new()))
        .clone()
}
