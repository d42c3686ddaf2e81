//! The object-store backend: one artifact = one prefix, made of record objects and index
//! objects, over any `object_store` implementation (S3, a local folder, memory).
//!
//! ```text
//! <prefix>/blocks/<record digest hex>          one object per record, its exact bytes; create-only
//! <prefix>/index/<generation, 20 digits>.json  one object per commit; create-only
//! <prefix>/index/latest                        hint: the newest generation (may lag, never leads)
//! ```
//!
//! A commit writes the records (create-only; an existing object of the same name already
//! holds the same bytes, so re-uploads are idempotent and a resumed copy is safe), then the
//! next generation's index object with create-only semantics. Two writers racing for the same
//! generation cannot both succeed: the loser gets [`StoreError::Conflict`], re-reads the head
//! and retries. A crash anywhere leaves the last committed generation readable; records it
//! uploaded without committing are orphans that `verify` reports.
//!
//! Create-only writes work on S3 (`If-None-Match: *`), on local folders (hard links) and in
//! memory. Overwrite-with-`If-Match` would need one mutable index object, but the local
//! folder store does not implement it, so every commit is a new object instead; the two
//! generations before the newest are deleted after each commit.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::{
    AppendSession, AuditFinding, BlockStore, Genesis, Head, HeadParts, ImportPrefix, StoreError,
    Tail,
};
use crate::format::IndexEntry;
use crate::format::object_index::{
    IndexObject, index_object_name, parse_index_object_name, record_object_name,
};

/// Default number of object requests in flight per append.
pub const DEFAULT_CONCURRENCY: usize = 16;
/// Records at least this large are uploaded in parts.
pub const MULTIPART_THRESHOLD: usize = 32 << 20;
/// Size of each part of a multipart upload.
pub const PART_SIZE: usize = 16 << 20;

/// An artifact stored under a prefix of an object store.
#[derive(Debug, Clone)]
pub struct ObjectBackend {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    url: String,
    concurrency: usize,
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

impl ObjectBackend {
    /// The artifact under `prefix` of `store`; `url` names it in messages.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: Path, url: impl Into<String>) -> Self {
        Self {
            store,
            prefix,
            url: url.into(),
            concurrency: DEFAULT_CONCURRENCY,
        }
    }

    /// Sets how many object requests an append keeps in flight (at least 1).
    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    pub fn prefix(&self) -> &Path {
        &self.prefix
    }

    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Key of the record object with digest `digest`.
    pub fn record_key(&self, digest: &crate::format::Digest) -> Path {
        self.prefix
            .clone()
            .join("blocks")
            .join(record_object_name(digest))
    }

    fn index_key(&self, generation: u64) -> Path {
        self.prefix
            .clone()
            .join("index")
            .join(index_object_name(generation))
    }

    fn latest_key(&self) -> Path {
        self.prefix.clone().join("index").join("latest")
    }

    fn err(&self, key: &Path, action: &str) -> impl FnOnce(object_store::Error) -> StoreError + '_ {
        let key = key.clone();
        let action = action.to_string();
        move |source| object_error(&self.url, &key, &action, source)
    }

    fn missing_record(&self, key: &Path) -> StoreError {
        StoreError::Corrupt {
            location: self.url.clone(),
            reason: format!("record object {key} is missing"),
        }
    }

    async fn exists(&self, key: &Path) -> Result<bool, StoreError> {
        match self.store.head(key).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.err(key, "checking")(e)),
        }
    }

    /// The newest committed generation, or `None` when there is no artifact.
    async fn latest_generation(&self) -> Result<Option<u64>, StoreError> {
        let hint = match self.store.get(&self.latest_key()).await {
            Ok(result) => {
                let bytes = result
                    .bytes()
                    .await
                    .map_err(self.err(&self.latest_key(), "reading"))?;
                std::str::from_utf8(&bytes)
                    .ok()
                    .and_then(|t| t.trim().parse::<u64>().ok())
            }
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => return Err(self.err(&self.latest_key(), "reading")(e)),
        };
        let mut generation = match hint {
            Some(g) if self.exists(&self.index_key(g)).await? => g,
            _ => match self.list_generations().await?.into_iter().max() {
                Some(g) => g,
                None => return Ok(None),
            },
        };
        // The hint is written after the commit, so it may lag: walk forward.
        while self.exists(&self.index_key(generation + 1)).await? {
            generation += 1;
        }
        Ok(Some(generation))
    }

    async fn list_generations(&self) -> Result<Vec<u64>, StoreError> {
        let prefix = self.prefix.clone().join("index");
        let objects: Vec<_> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(self.err(&prefix, "listing"))?;
        Ok(objects
            .iter()
            .filter_map(|meta| meta.location.filename().and_then(parse_index_object_name))
            .collect())
    }

    async fn read_index(&self, generation: u64) -> Result<Head, StoreError> {
        let key = self.index_key(generation);
        let bytes = self
            .store
            .get(&key)
            .await
            .map_err(self.err(&key, "reading"))?
            .bytes()
            .await
            .map_err(self.err(&key, "reading"))?;
        let format_error = |context: String, source| StoreError::Format {
            location: format!("{} (object {key})", self.url),
            context,
            source,
        };
        let object =
            IndexObject::decode(&bytes).map_err(|e| format_error("index object".into(), e))?;
        if object.generation != generation {
            return Err(StoreError::Corrupt {
                location: format!("{} (object {key})", self.url),
                reason: format!("the index object says generation {}", object.generation),
            });
        }
        Head::from_parts(HeadParts {
            file_header: object.file_header.into(),
            metadata_section: object.metadata_section.into(),
            provenance_section: object.provenance_section.into(),
            index_section: object.index_section.into(),
            trailer: object.trailer.into(),
        })
        .map_err(|(context, source)| format_error(context, source))
    }

    async fn head_with_generation(&self) -> Result<(Head, u64), StoreError> {
        // A generation can be deleted between finding it and reading it (two commits landed
        // meanwhile); look again a few times before giving up.
        let mut last_error = None;
        for _ in 0..5 {
            let Some(generation) = self.latest_generation().await? else {
                return Err(StoreError::NotFound {
                    location: self.url.clone(),
                });
            };
            match self.read_index(generation).await {
                Ok(head) => return Ok((head, generation)),
                Err(e @ StoreError::NotFound { .. }) => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or(StoreError::NotFound {
            location: self.url.clone(),
        }))
    }

    async fn write_index(&self, generation: u64, object: IndexObject) -> Result<(), StoreError> {
        let key = self.index_key(generation);
        let bytes = object.to_bytes().map_err(|source| StoreError::Format {
            location: self.url.clone(),
            context: "index object".into(),
            source,
        })?;
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(&key, PutPayload::from(bytes), options)
            .await
        {
            Ok(_) => {}
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => {
                return Err(StoreError::Conflict {
                    location: self.url.clone(),
                    reason: format!("generation {generation} was committed by another writer"),
                });
            }
            Err(e) => return Err(self.err(&key, "committing")(e)),
        }
        // Best effort from here: the commit is durable already.
        let latest = self.latest_key();
        if let Err(e) = self
            .store
            .put(&latest, PutPayload::from(generation.to_string()))
            .await
        {
            tracing::warn!(location = %self.url, error = %e, "could not update the latest-generation hint");
        }
        for old in generation.saturating_sub(3)..generation.saturating_sub(1) {
            if old >= 1 {
                let _ = self.store.delete(&self.index_key(old)).await;
            }
        }
        Ok(())
    }

    /// Every object under the prefix (for verification's accounting).
    pub async fn list_all(&self) -> Result<Vec<object_store::ObjectMeta>, StoreError> {
        self.store
            .list(Some(&self.prefix))
            .try_collect()
            .await
            .map_err(self.err(&self.prefix, "listing"))
    }
}

async fn upload(
    store: Arc<dyn ObjectStore>,
    key: Path,
    record: Bytes,
) -> Result<(), object_store::Error> {
    if record.len() >= MULTIPART_THRESHOLD {
        // Content-addressed: an object that exists already holds these bytes.
        match store.head(&key).await {
            Ok(meta) if meta.size == record.len() as u64 => return Ok(()),
            Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        let mut upload = store.put_multipart(&key).await?;
        let mut parts = Vec::new();
        for start in (0..record.len()).step_by(PART_SIZE) {
            let end = (start + PART_SIZE).min(record.len());
            parts.push(upload.put_part(PutPayload::from(record.slice(start..end))));
        }
        let sent = futures::future::try_join_all(parts).await;
        if let Err(e) = sent {
            let _ = upload.abort().await;
            return Err(e);
        }
        upload.complete().await?;
        return Ok(());
    }
    let options = PutOptions {
        mode: PutMode::Create,
        ..PutOptions::default()
    };
    match store
        .put_opts(&key, PutPayload::from(record), options)
        .await
    {
        Ok(_)
        | Err(
            object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. },
        ) => Ok(()),
        Err(e) => Err(e),
    }
}

#[async_trait]
impl BlockStore for ObjectBackend {
    fn location(&self) -> String {
        self.url.clone()
    }

    async fn head(&self) -> Result<Head, StoreError> {
        Ok(self.head_with_generation().await?.0)
    }

    async fn read_record(&self, entry: &IndexEntry) -> Result<Bytes, StoreError> {
        let key = self.record_key(&entry.digest);
        let bytes = match self.store.get(&key).await {
            Ok(result) => result.bytes().await.map_err(self.err(&key, "reading"))?,
            Err(object_store::Error::NotFound { .. }) => return Err(self.missing_record(&key)),
            Err(e) => return Err(self.err(&key, "reading")(e)),
        };
        if bytes.len() as u64 != entry.record_len {
            return Err(StoreError::Corrupt {
                location: format!("{} (object {key})", self.url),
                reason: format!(
                    "the record object has {} bytes, the index says {}",
                    bytes.len(),
                    entry.record_len
                ),
            });
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
        match self.store.get_range(&key, range).await {
            Ok(bytes) => Ok(bytes),
            Err(object_store::Error::NotFound { .. }) => Err(self.missing_record(&key)),
            Err(e) => Err(self.err(&key, "reading")(e)),
        }
    }

    async fn create(&self, genesis: Genesis) -> Result<(), StoreError> {
        if self.latest_generation().await?.is_some() {
            return Err(StoreError::AlreadyExists {
                location: self.url.clone(),
            });
        }
        let object = IndexObject {
            generation: 1,
            file_header: genesis.file_header,
            metadata_section: genesis.metadata_section,
            provenance_section: genesis.tail.provenance_section,
            index_section: genesis.tail.index_section,
            trailer: genesis.tail.trailer,
        };
        match self.write_index(1, object).await {
            Err(StoreError::Conflict { .. }) => Err(StoreError::AlreadyExists {
                location: self.url.clone(),
            }),
            other => other,
        }
    }

    async fn begin_append(&self, base: &Head) -> Result<Box<dyn AppendSession>, StoreError> {
        let (current, generation) = self.head_with_generation().await?;
        if current.trailer != base.trailer {
            return Err(StoreError::Conflict {
                location: self.url.clone(),
                reason: format!(
                    "another writer committed since this append began ({} records now, {} expected)",
                    current.trailer.record_count, base.trailer.record_count
                ),
            });
        }
        Ok(Box::new(ObjectAppend {
            backend: self.clone(),
            file_header: current.file_header.to_vec(),
            metadata_section: current.metadata_section.to_vec(),
            next_generation: generation + 1,
            existing: HashMap::new(),
            uploads: JoinSet::new(),
            permits: Arc::new(Semaphore::new(self.concurrency)),
        }))
    }

    async fn audit(&self, head: &Head) -> Result<Vec<AuditFinding>, StoreError> {
        let objects = self.list_all().await?;
        let blocks = self.prefix.clone().join("blocks");
        let index = self.prefix.clone().join("index");
        let referenced: HashMap<String, usize> = head
            .index
            .entries
            .iter()
            .enumerate()
            .map(|(position, e)| (record_object_name(&e.digest), position))
            .collect();
        let mut seen = std::collections::HashSet::new();
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
                    seen.insert(name);
                } else {
                    findings.push(AuditFinding::Orphan {
                        key,
                        size: meta.size,
                    });
                }
            } else if !(parent_is(&index)
                && (name == "latest" || parse_index_object_name(&name).is_some()))
            {
                findings.push(AuditFinding::Unexpected { key });
            }
        }
        for (name, position) in &referenced {
            if !seen.contains(name) {
                findings.push(AuditFinding::MissingRecord {
                    position: *position,
                    key: blocks.clone().join(name.as_str()).to_string(),
                });
            }
        }
        findings.sort_by_key(|f| format!("{f:?}"));
        Ok(findings)
    }

    async fn begin_import(
        &self,
        prefix: ImportPrefix,
    ) -> Result<Box<dyn AppendSession>, StoreError> {
        if self.latest_generation().await?.is_some() {
            return Err(StoreError::AlreadyExists {
                location: self.url.clone(),
            });
        }
        // One listing tells which records an interrupted import already stored.
        let blocks = self.prefix.clone().join("blocks");
        let existing = self
            .store
            .list(Some(&blocks))
            .map_ok(|meta| {
                (
                    meta.location.filename().unwrap_or_default().to_string(),
                    meta.size,
                )
            })
            .try_collect::<HashMap<String, u64>>()
            .await
            .map_err(self.err(&blocks, "listing"))?;
        Ok(Box::new(ObjectAppend {
            backend: self.clone(),
            file_header: prefix.file_header,
            metadata_section: prefix.metadata_section,
            next_generation: 1,
            existing,
            uploads: JoinSet::new(),
            permits: Arc::new(Semaphore::new(self.concurrency)),
        }))
    }
}

/// An append (or import) to the object layout: records upload concurrently, the index
/// commits last.
struct ObjectAppend {
    backend: ObjectBackend,
    file_header: Vec<u8>,
    metadata_section: Vec<u8>,
    next_generation: u64,
    /// Record objects already stored (name to size), for imports.
    existing: HashMap<String, u64>,
    uploads: JoinSet<Result<(), StoreError>>,
    permits: Arc<Semaphore>,
}

impl ObjectAppend {
    fn collect_finished(&mut self) -> Result<(), StoreError> {
        while let Some(done) = self.uploads.try_join_next() {
            flatten(done)?;
        }
        Ok(())
    }
}

fn flatten(done: Result<Result<(), StoreError>, tokio::task::JoinError>) -> Result<(), StoreError> {
    done.map_err(|e| StoreError::Corrupt {
        location: "upload task".into(),
        reason: e.to_string(),
    })?
}

#[async_trait]
impl AppendSession for ObjectAppend {
    async fn present(&mut self, entries: &[IndexEntry]) -> Result<Vec<bool>, StoreError> {
        // Record objects are named by digest and written create-only, so an object of the
        // right name and size holds the right bytes; verification re-hashes them anyway.
        Ok(entries
            .iter()
            .map(|e| self.existing.get(&record_object_name(&e.digest)) == Some(&e.record_len))
            .collect())
    }

    async fn put_record(&mut self, entry: &IndexEntry, record: Bytes) -> Result<(), StoreError> {
        self.collect_finished()?;
        // Waiting for a permit bounds the records held in memory to the concurrency.
        let permit =
            self.permits
                .clone()
                .acquire_owned()
                .await
                .map_err(|e| StoreError::Corrupt {
                    location: self.backend.url.clone(),
                    reason: e.to_string(),
                })?;
        let key = self.backend.record_key(&entry.digest);
        let store = self.backend.store.clone();
        let url = self.backend.url.clone();
        self.uploads.spawn(async move {
            let result = upload(store, key.clone(), record).await;
            drop(permit);
            result.map_err(|e| object_error(&url, &key, "uploading a record", e))
        });
        Ok(())
    }

    async fn commit(mut self: Box<Self>, tail: Tail) -> Result<(), StoreError> {
        while let Some(done) = self.uploads.join_next().await {
            flatten(done)?;
        }
        let generation = self.next_generation;
        let object = IndexObject {
            generation,
            file_header: std::mem::take(&mut self.file_header),
            metadata_section: std::mem::take(&mut self.metadata_section),
            provenance_section: tail.provenance_section,
            index_section: tail.index_section,
            trailer: tail.trailer,
        };
        match self.backend.write_index(generation, object).await {
            Err(StoreError::Conflict { .. }) if generation == 1 => Err(StoreError::AlreadyExists {
                location: self.backend.url.clone(),
            }),
            other => other,
        }
    }
}

/// Named in-memory stores shared within a process, for `memory://NAME` locations.
pub fn memory_store(name: &str) -> Arc<dyn ObjectStore> {
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
