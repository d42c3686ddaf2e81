//! A single-file MAIF stored as one object (`s3://bucket/archive/notes.maif`).
//!
//! Opening takes one suffix ranged GET, which brings the trailer, usually the whole tail, and
//! the object's size; the header and metadata at the front, or a tail longer than the suffix,
//! cost one more ranged GET each. Every record is then one ranged GET. Objects cannot be
//! appended to, so this store is read-only except for imports (`maif convert` into it), which
//! stream the image through a multipart upload.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, WriteMultipart};

use super::{AppendSession, BlockStore, Genesis, Head, HeadParts, ImportPrefix, StoreError, Tail};
use crate::format::file_header::FILE_HEADER_LEN;
use crate::format::{IndexEntry, TRAILER_LEN, Trailer, layout};

/// Bytes fetched from the end of the object to open it.
pub const SUFFIX_READ: u64 = 256 << 10;

/// A single-file image held in one object.
#[derive(Debug, Clone)]
pub struct ObjectFile {
    store: Arc<dyn ObjectStore>,
    key: Path,
    url: String,
}

impl ObjectFile {
    pub fn new(store: Arc<dyn ObjectStore>, key: Path, url: impl Into<String>) -> Self {
        Self {
            store,
            key,
            url: url.into(),
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
        self.store
            .get_range(&self.key, range)
            .await
            .map_err(self.err("reading"))
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
}

#[async_trait]
impl BlockStore for ObjectFile {
    fn location(&self) -> String {
        self.url.clone()
    }

    async fn head(&self) -> Result<Head, StoreError> {
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
        let torn = |reason: String| StoreError::Torn {
            location: self.url.clone(),
            reason,
        };
        if suffix.len() < TRAILER_LEN {
            return Err(torn(format!(
                "{size} bytes is shorter than the smallest artifact"
            )));
        }
        let trailer_bytes = suffix.slice(suffix.len() - TRAILER_LEN..);
        let trailer = Trailer::decode(&trailer_bytes)
            .map_err(|e| torn(format!("no valid trailer at the end: {e}")))?;
        let sections = layout::sections(&trailer, size).map_err(|e| torn(e.to_string()))?;
        // Whatever the suffix does not cover is fetched with one more ranged GET.
        let fetch = |range: Range<u64>| {
            let suffix = suffix.clone();
            async move {
                if range.start >= suffix_start {
                    let start = (range.start - suffix_start) as usize;
                    let end = (range.end - suffix_start) as usize;
                    Ok(suffix.slice(start..end))
                } else {
                    self.range(range).await
                }
            }
        };
        let front = fetch(0..sections.metadata.end).await?;
        let tail = fetch(sections.provenance.start..sections.trailer.start).await?;
        let split = (sections.provenance.end - sections.provenance.start) as usize;
        Head::from_parts(HeadParts {
            file_header: front.slice(..FILE_HEADER_LEN.min(front.len())),
            metadata_section: front.slice(FILE_HEADER_LEN.min(front.len())..),
            provenance_section: tail.slice(..split),
            index_section: tail.slice(split..),
            trailer: trailer_bytes,
        })
        .map_err(|(context, source)| StoreError::Format {
            location: self.url.clone(),
            context,
            source,
        })
    }

    async fn read_record(&self, entry: &IndexEntry) -> Result<Bytes, StoreError> {
        self.read_record_range(entry, 0..entry.record_len).await
    }

    async fn read_record_range(
        &self,
        entry: &IndexEntry,
        range: Range<u64>,
    ) -> Result<Bytes, StoreError> {
        let location = self.url.clone();
        let Range { start, end } = super::image_range(&location, entry, &range)?;
        let out_of_range = || StoreError::OutOfRange {
            location: location.clone(),
            what: format!("bytes {range:?} of the record at offset {}", entry.offset),
        };
        let bytes = self.range(start..end).await?;
        if bytes.len() as u64 != end - start {
            return Err(out_of_range());
        }
        Ok(bytes)
    }

    async fn create(&self, _genesis: Genesis) -> Result<(), StoreError> {
        Err(self.unsupported("create"))
    }

    async fn begin_import(
        &self,
        prefix: ImportPrefix,
    ) -> Result<Box<dyn AppendSession>, StoreError> {
        match self.store.head(&self.key).await {
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
        writer.write(&prefix.file_header);
        writer.write(&prefix.metadata_section);
        Ok(Box::new(ObjectFileImport {
            store: self.clone(),
            writer: Some(writer),
            next_offset: (prefix.file_header.len() + prefix.metadata_section.len()) as u64,
        }))
    }

    async fn begin_append(&self, _base: &Head) -> Result<Box<dyn AppendSession>, StoreError> {
        Err(self.unsupported("append"))
    }
}

/// An import streamed into one object; records must arrive in order.
struct ObjectFileImport {
    store: ObjectFile,
    writer: Option<WriteMultipart>,
    next_offset: u64,
}

impl ObjectFileImport {
    fn writer(&mut self) -> Result<&mut WriteMultipart, StoreError> {
        self.writer.as_mut().ok_or_else(|| StoreError::Corrupt {
            location: self.store.url.clone(),
            reason: "the upload already ended".into(),
        })
    }
}

#[async_trait]
impl AppendSession for ObjectFileImport {
    async fn put_record(&mut self, entry: &IndexEntry, record: Bytes) -> Result<(), StoreError> {
        if entry.offset != self.next_offset || entry.record_len != record.len() as u64 {
            return Err(StoreError::Corrupt {
                location: self.store.url.clone(),
                reason: format!(
                    "record for offset {} arrived out of order (next is {})",
                    entry.offset, self.next_offset
                ),
            });
        }
        let url = self.store.url.clone();
        let key = self.store.key.to_string();
        let writer = self.writer()?;
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
        writer.put(record);
        self.next_offset += entry.record_len;
        Ok(())
    }

    async fn commit(mut self: Box<Self>, tail: Tail) -> Result<(), StoreError> {
        let mut writer = self.writer.take().ok_or_else(|| StoreError::Corrupt {
            location: self.store.url.clone(),
            reason: "the upload already ended".into(),
        })?;
        writer.write(&tail.provenance_section);
        writer.write(&tail.index_section);
        writer.write(&tail.trailer);
        writer
            .finish()
            .await
            .map_err(self.store.err("completing the upload"))?;
        Ok(())
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
