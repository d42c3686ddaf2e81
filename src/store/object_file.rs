//! A single-file MAIF stored as one object (`s3://bucket/archive/notes.maif`).
//!
//! Opening takes one suffix ranged GET, which brings the newest trailer, usually the whole
//! newest segment, and the object's size; the header and metadata at the front cost one more
//! ranged GET. Every record, and every page of an index run, is then one ranged GET. Objects
//! cannot be appended to, so this store is read-only except for imports (`maif convert` into
//! it), which stream the image through a multipart upload.

use std::ops::Range;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, WriteMultipart};

use super::object::{reread_short, retry_read};
use super::{
    AppendBase, AppendSession, Base, BlockStore, CommitRef, ImportSession, Latest, StoreError,
};
use crate::format::Codec;
use crate::format::file_header::FILE_HEADER_LEN;
use crate::format::layout::commit_object_start;
use crate::format::metadata::MAX_METADATA_LEN;
use crate::format::segment::SEGMENT_HEADER_LEN;
use crate::format::{IndexEntry, MetadataSection, SegmentHeader, TRAILER_LEN, Trailer};

/// Bytes fetched from the end of the object to open it.
pub const SUFFIX_READ: u64 = 256 << 10;

/// A single-file image held in one object.
#[derive(Debug, Clone)]
pub struct ObjectFile {
    store: Arc<dyn ObjectStore>,
    key: Path,
    url: String,
    base: Arc<Mutex<Option<Base>>>,
}

impl ObjectFile {
    /// An image held in object `key` of `store`; `url` names it in messages.
    pub fn new(store: Arc<dyn ObjectStore>, key: Path, url: impl Into<String>) -> Self {
        Self {
            store,
            key,
            url: url.into(),
            base: Arc::new(Mutex::new(None)),
        }
    }

    fn err(&self, action: &'static str) -> impl FnOnce(object_store::Error) -> StoreError + '_ {
        move |source| match source {
            object_store::Error::NotFound { .. } => StoreError::NotFound {
                location: self.url.clone(),
            },
            source => StoreError::Object {
                location: self.url.clone(),
                key: self.key.to_string(),
                action: action.into(),
                source: Box::new(source),
            },
        }
    }

    async fn range(&self, range: Range<u64>) -> Result<Bytes, StoreError> {
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        let expected = range.end - range.start;
        let bytes = reread_short(
            &self.key,
            expected,
            |b: &Bytes| Some(b.len()),
            || async {
                retry_read(&self.key, || self.store.get_range(&self.key, range.clone()))
                    .await
                    .map_err(self.err("reading"))
            },
        )
        .await?;
        if bytes.len() as u64 != expected {
            return Err(StoreError::OutOfRange {
                location: self.url.clone(),
                what: format!("bytes {range:?}"),
            });
        }
        Ok(bytes)
    }

    fn unsupported(&self, operation: &str) -> StoreError {
        StoreError::Unsupported {
            location: self.url.clone(),
            reason: format!(
                "{operation}: a single file stored as one object cannot be changed in place; \
                 convert it to the object layout (drop the .maif suffix) or to a local file"
            ),
        }
    }

    fn torn(&self, reason: String) -> StoreError {
        StoreError::Torn {
            location: self.url.clone(),
            reason,
        }
    }
}

#[async_trait]
impl BlockStore for ObjectFile {
    fn location(&self) -> String {
        self.url.clone()
    }

    async fn latest(&self) -> Result<Latest, StoreError> {
        let options = GetOptions {
            range: Some(GetRange::Suffix(SUFFIX_READ)),
            ..GetOptions::default()
        };
        let result = self
            .store
            .get_opts(&self.key, options)
            .await
            .map_err(self.err("reading"))?;
        let size = result.meta.size;
        let suffix_start = result.range.start;
        let suffix = result.bytes().await.map_err(self.err("reading"))?;
        if suffix.len() < TRAILER_LEN {
            return Err(self.torn(format!(
                "{size} bytes is shorter than the smallest artifact"
            )));
        }
        let at = size - TRAILER_LEN as u64;
        let trailer =
            Trailer::decode_at(&suffix[suffix.len() - TRAILER_LEN..], at).map_err(|e| {
                self.torn(format!(
                    "no intact trailer at the end ({e}); download it and run `maif recover`"
                ))
            })?;
        let prefix_end = at.min(trailer.segment_offset + super::file::SEGMENT_PREFIX_READ);
        let prefix = if trailer.segment_offset >= suffix_start {
            let start = (trailer.segment_offset - suffix_start) as usize;
            suffix.slice(start..(prefix_end - suffix_start) as usize)
        } else {
            self.range(trailer.segment_offset..prefix_end).await?
        };
        let header = SegmentHeader::decode(prefix.get(..SEGMENT_HEADER_LEN).unwrap_or(&prefix))
            .map_err(|e| StoreError::Format {
                location: self.url.clone(),
                context: format!("segment at byte {}", trailer.segment_offset),
                source: e.at(trailer.segment_offset),
            })?;
        if suffix_start == 0
            && let Ok(mut cached) = self.base.lock()
            && cached.is_none()
            && let Some(base) = split_front(&suffix)
        {
            *cached = Some(base);
        }
        Ok(Latest {
            seq: header.seq,
            segment_prefix: prefix,
            uncommitted: None,
            origin: self.url.clone(),
        })
    }

    async fn base(&self) -> Result<Base, StoreError> {
        if let Some(base) = self.base.lock().ok().and_then(|b| b.clone()) {
            return Ok(base);
        }
        let most = FILE_HEADER_LEN as u64 + 4 + u64::from(MAX_METADATA_LEN);
        let front = retry_read(&self.key, || self.store.get_range(&self.key, 0..most))
            .await
            .map_err(self.err("reading"))?;
        let base = split_front(&front).ok_or_else(|| StoreError::Corrupt {
            location: self.url.clone(),
            reason: "the object does not start with a file header and metadata section".into(),
        })?;
        if let Ok(mut cached) = self.base.lock() {
            *cached = Some(base.clone());
        }
        Ok(base)
    }

    async fn read_segment(
        &self,
        commit: CommitRef,
        range: Range<u64>,
    ) -> Result<Bytes, StoreError> {
        let image = super::segment_image_range(&self.url, commit, &range)?;
        self.range(image).await
    }

    async fn read_record_range(
        &self,
        entry: &IndexEntry,
        range: Range<u64>,
    ) -> Result<Bytes, StoreError> {
        let image = super::image_range(&self.url, entry, &range)?;
        self.range(image).await
    }

    async fn create(&self, _genesis: Bytes) -> Result<(), StoreError> {
        Err(self.unsupported("create"))
    }

    async fn begin_append(&self, _base: &AppendBase) -> Result<Box<dyn AppendSession>, StoreError> {
        Err(self.unsupported("append"))
    }

    async fn begin_import(&self, base: &Base) -> Result<Box<dyn ImportSession>, StoreError> {
        match retry_read(&self.key, || self.store.head(&self.key)).await {
            Ok(_) => {
                return Err(StoreError::AlreadyExists {
                    location: self.url.clone(),
                });
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(self.err("checking")(e)),
        }
        let upload = self
            .store
            .put_multipart(&self.key)
            .await
            .map_err(self.err("starting an upload"))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, 8 << 20);
        writer.write(&base.file_header);
        writer.write(&base.metadata_section);
        Ok(Box::new(ObjectFileImport {
            store: self.clone(),
            writer: Some(writer),
            next_offset: base.len(),
            last_trailer: None,
        }))
    }
}

fn split_front(bytes: &Bytes) -> Option<Base> {
    let metadata_len = MetadataSection::peek_len(bytes.get(FILE_HEADER_LEN..)?).ok()?;
    let base_len = FILE_HEADER_LEN + metadata_len;
    (bytes.len() >= base_len).then(|| Base {
        file_header: bytes.slice(..FILE_HEADER_LEN),
        metadata_section: bytes.slice(FILE_HEADER_LEN..base_len),
    })
}

/// An import streamed into one object; bytes must arrive in image order.
struct ObjectFileImport {
    store: ObjectFile,
    writer: Option<WriteMultipart>,
    next_offset: u64,
    /// The trailer that ends the image (the last commit's), to recognise the finished
    /// object when the answer to the completion is lost.
    last_trailer: Option<Bytes>,
}

impl ObjectFileImport {
    async fn write_at(&mut self, offset: u64, bytes: Bytes, skip: u64) -> Result<(), StoreError> {
        if offset != self.next_offset {
            return Err(StoreError::Misuse {
                location: self.store.url.clone(),
                reason: format!(
                    "bytes for offset {offset} arrived out of order (next is {})",
                    self.next_offset
                ),
            });
        }
        let url = self.store.url.clone();
        let key = self.store.key.to_string();
        let writer = self.writer.as_mut().ok_or_else(|| StoreError::Misuse {
            location: url.clone(),
            reason: "the upload already ended".into(),
        })?;
        // Bounded memory: wait while more than a few parts are in flight.
        writer
            .wait_for_capacity(4)
            .await
            .map_err(|source| StoreError::Object {
                location: url,
                key,
                action: "uploading".into(),
                source: Box::new(source),
            })?;
        let len = bytes.len() as u64;
        writer.put(bytes.slice(skip as usize..));
        self.next_offset += len - skip;
        Ok(())
    }
}

#[async_trait]
impl ImportSession for ObjectFileImport {
    async fn present(&mut self, entries: &[IndexEntry]) -> Result<Vec<bool>, StoreError> {
        Ok(vec![false; entries.len()])
    }

    async fn put_record(&mut self, entry: &IndexEntry, record: Bytes) -> Result<(), StoreError> {
        self.write_at(entry.offset, record, 0).await
    }

    async fn put_commit(&mut self, commit: CommitRef, bytes: Bytes) -> Result<(), StoreError> {
        let start = commit_object_start(commit.seq, commit.segment_offset);
        // Commit 0's bytes start with the base, which `begin_import` already wrote.
        let skip = if commit.seq == 0 { self.next_offset } else { 0 };
        if bytes.len() >= TRAILER_LEN {
            self.last_trailer = Some(bytes.slice(bytes.len() - TRAILER_LEN..));
        }
        self.write_at(start + skip, bytes, skip).await
    }

    async fn finish(mut self: Box<Self>) -> Result<(), StoreError> {
        let writer = self.writer.take().ok_or_else(|| StoreError::Misuse {
            location: self.store.url.clone(),
            reason: "the upload already ended".into(),
        })?;
        let Err(error) = writer.finish().await else {
            return Ok(());
        };
        // The completion may have happened and only its answer been lost (a retried
        // completion then finds its upload gone): the object decides. It did not exist when
        // the import began, so one of this image's length ending in this image's trailer is
        // this upload.
        let landed = match (
            &self.last_trailer,
            self.next_offset.checked_sub(TRAILER_LEN as u64),
        ) {
            (Some(trailer), Some(start)) => {
                match retry_read(&self.store.key, || self.store.store.head(&self.store.key)).await {
                    Ok(meta) if meta.size == self.next_offset => self
                        .store
                        .range(start..self.next_offset)
                        .await
                        .is_ok_and(|stored| stored == *trailer),
                    _ => false,
                }
            }
            _ => false,
        };
        if landed {
            tracing::info!(location = %self.store.url, %error, "the upload completed although its answer was lost");
            return Ok(());
        }
        Err(self.store.err("completing the upload")(error))
    }
}

impl Drop for ObjectFileImport {
    fn drop(&mut self) {
        if let Some(writer) = self.writer.take() {
            // An abandoned import must not leave a half object behind: abort the upload.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = writer.abort().await;
                });
            }
        }
    }
}
