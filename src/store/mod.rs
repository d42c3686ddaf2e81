//! Where artifacts live. A [`BlockStore`] moves opaque record bytes and the committed tail;
//! it never parses a signature nor re-encodes a record. The artifact layer (`crate::artifact`)
//! does all signing and verification on top of this one contract.

use std::fmt;
use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;

use crate::format::{FormatError, IndexEntry, IndexSection, Trailer};

pub mod file;
pub mod object;
pub mod object_file;

pub use file::FileStore;
pub use object::ObjectBackend;
pub use object_file::ObjectFile;

/// Errors from a store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No artifact exists at the location.
    #[error("no artifact at {location}")]
    NotFound { location: String },
    /// `create` found an artifact already there.
    #[error("an artifact already exists at {location}")]
    AlreadyExists { location: String },
    /// The committed state changed since the append began (another writer committed).
    #[error("commit conflict at {location}: {reason}")]
    Conflict { location: String, reason: String },
    /// The stored bytes are not a readable committed artifact.
    #[error("{location}: {reason}")]
    Corrupt { location: String, reason: String },
    /// The artifact was torn by an interrupted write and has no committed state to open.
    #[error(
        "{location} is torn ({reason}); run `maif recover` to rebuild it from its intact prefix"
    )]
    Torn { location: String, reason: String },
    /// A structure failed to decode.
    #[error("{location}: {context}: {source}")]
    Format {
        location: String,
        context: String,
        source: FormatError,
    },
    /// A read asked for bytes the store does not hold.
    #[error("{location}: {what} out of range")]
    OutOfRange { location: String, what: String },
    /// The store cannot do this by its nature.
    #[error("{location}: {reason}")]
    Unsupported { location: String, reason: String },
    /// An object-store request failed (after the store's own retries).
    #[error("{location}: {action} object {key}: {source}")]
    Object {
        location: String,
        key: String,
        action: String,
        source: Box<object_store::Error>,
    },
    #[error("{location}: I/O error {action}: {source}")]
    Io {
        location: String,
        action: String,
        source: std::io::Error,
    },
}

/// The committed state of an artifact: everything except the records' bytes, each part
/// exactly as stored.
#[derive(Clone)]
pub struct Head {
    pub file_header: Bytes,
    pub metadata_section: Bytes,
    pub provenance_section: Bytes,
    pub index_section: Bytes,
    pub index: IndexSection,
    pub trailer: Trailer,
}

impl fmt::Debug for Head {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Head")
            .field("records", &self.index.entries.len())
            .field("trailer", &self.trailer)
            .finish_non_exhaustive()
    }
}

/// The stored parts of a committed state, before they are checked.
#[derive(Debug, Clone)]
pub struct HeadParts {
    pub file_header: Bytes,
    pub metadata_section: Bytes,
    pub provenance_section: Bytes,
    pub index_section: Bytes,
    pub trailer: Bytes,
}

impl Head {
    /// Decodes the parts and checks they agree: each section decodes exactly, the trailer's
    /// offsets and lengths match the parts, and the index tiles the records. An error names
    /// the section and its offset in the single-file image. Every backend opens through this.
    pub fn from_parts(parts: HeadParts) -> Result<Head, (String, FormatError)> {
        use crate::format::file_header::FILE_HEADER_LEN;
        use crate::format::{FileHeader, MetadataSection, ProvenanceSection, layout};
        fn at(
            what: &'static str,
            offset: u64,
        ) -> impl FnOnce(FormatError) -> (String, FormatError) {
            move |e| (format!("{what} at byte {offset}"), e.at(offset))
        }
        FileHeader::decode(&parts.file_header).map_err(at("file header", 0))?;
        MetadataSection::decode(&parts.metadata_section)
            .map_err(at("metadata section", FILE_HEADER_LEN as u64))?;
        let trailer = Trailer::decode(&parts.trailer).map_err(|e| ("trailer".to_string(), e))?;
        let mismatch = |field: &'static str, reason: String| {
            (
                "trailer".to_string(),
                FormatError::InvalidField {
                    structure: "trailer",
                    field,
                    offset: 0,
                    reason,
                },
            )
        };
        let records_offset = (FILE_HEADER_LEN + parts.metadata_section.len()) as u64;
        if trailer.records_offset != records_offset {
            return Err(mismatch(
                "records_offset",
                format!(
                    "{} but the metadata section ends at {records_offset}",
                    trailer.records_offset
                ),
            ));
        }
        if trailer.provenance_len != parts.provenance_section.len() as u64 {
            return Err(mismatch(
                "provenance_len",
                format!(
                    "{} but the provenance section has {} bytes",
                    trailer.provenance_len,
                    parts.provenance_section.len()
                ),
            ));
        }
        if trailer.index_len != parts.index_section.len() as u64 {
            return Err(mismatch(
                "index_len",
                format!(
                    "{} but the index section has {} bytes",
                    trailer.index_len,
                    parts.index_section.len()
                ),
            ));
        }
        ProvenanceSection::decode(&parts.provenance_section)
            .map_err(at("provenance section", trailer.provenance_offset))?;
        let index = IndexSection::decode(&parts.index_section)
            .map_err(at("index section", trailer.index_offset))?;
        layout::check_index(&trailer, &index).map_err(|e| ("index".to_string(), e))?;
        Ok(Head {
            file_header: parts.file_header,
            metadata_section: parts.metadata_section,
            provenance_section: parts.provenance_section,
            index_section: parts.index_section,
            index,
            trailer,
        })
    }
}

/// A new committed tail: what an append or a creation writes after the records.
#[derive(Debug, Clone)]
pub struct Tail {
    pub provenance_section: Vec<u8>,
    pub index_section: Vec<u8>,
    pub trailer: Vec<u8>,
}

/// A brand-new artifact's fixed prefix and first tail.
#[derive(Debug, Clone)]
pub struct Genesis {
    pub file_header: Vec<u8>,
    pub metadata_section: Vec<u8>,
    pub tail: Tail,
}

/// The bytes `range` of the record `entry` as a range of the single-file image, or
/// [`StoreError::OutOfRange`] if they are not inside the record.
pub fn image_range(
    location: &str,
    entry: &IndexEntry,
    range: &Range<u64>,
) -> Result<Range<u64>, StoreError> {
    let out_of_range = || StoreError::OutOfRange {
        location: location.to_string(),
        what: format!("bytes {range:?} of the record at offset {}", entry.offset),
    };
    if range.start > range.end || range.end > entry.record_len {
        return Err(out_of_range());
    }
    let start = entry
        .offset
        .checked_add(range.start)
        .ok_or_else(out_of_range)?;
    let end = entry
        .offset
        .checked_add(range.end)
        .ok_or_else(out_of_range)?;
    Ok(start..end)
}

/// The storage contract every backend implements.
#[async_trait]
pub trait BlockStore: Send + Sync + fmt::Debug {
    /// Human-readable location (path or URL) for messages.
    fn location(&self) -> String;

    /// The committed state, or [`StoreError::NotFound`].
    async fn head(&self) -> Result<Head, StoreError>;

    /// The bytes of one record, as described by its index entry.
    async fn read_record(&self, entry: &IndexEntry) -> Result<Bytes, StoreError>;

    /// A byte range within one record (e.g. header and metadata only).
    async fn read_record_range(
        &self,
        entry: &IndexEntry,
        range: Range<u64>,
    ) -> Result<Bytes, StoreError>;

    /// Creates the artifact; fails with [`StoreError::AlreadyExists`] if there is one.
    async fn create(&self, genesis: Genesis) -> Result<(), StoreError>;

    /// Starts copying an existing artifact here: records go in with
    /// [`AppendSession::put_record`], and [`AppendSession::commit`] with the source's tail
    /// creates the artifact, atomically, with exactly `prefix`'s header and metadata. Fails
    /// with [`StoreError::AlreadyExists`] if an artifact is already here. An interrupted
    /// import leaves no artifact, and a new import of the same source resumes from what the
    /// interrupted one stored (see [`AppendSession::present`]).
    async fn begin_import(
        &self,
        prefix: ImportPrefix,
    ) -> Result<Box<dyn AppendSession>, StoreError>;

    /// Store-specific findings about `head` beyond its bytes: record objects that are missing,
    /// left over by interrupted appends, or keys that do not belong to the layout. Stores
    /// with nothing to add return nothing.
    async fn audit(&self, head: &Head) -> Result<Vec<AuditFinding>, StoreError> {
        let _ = head;
        Ok(Vec::new())
    }

    /// Starts appending records on top of `base`. The returned session commits only if the
    /// store's committed state is still `base` (otherwise [`StoreError::Conflict`]).
    async fn begin_append(&self, base: &Head) -> Result<Box<dyn AppendSession>, StoreError>;
}

/// One finding of [`BlockStore::audit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditFinding {
    /// The index names a record whose object does not exist (the artifact is damaged).
    MissingRecord { position: usize, key: String },
    /// A record object no commit references (left by an interrupted append or import).
    Orphan { key: String, size: u64 },
    /// An object under the prefix that is not part of the layout.
    Unexpected { key: String },
}

/// The fixed prefix of an artifact being imported: its exact header and metadata bytes.
#[derive(Debug, Clone)]
pub struct ImportPrefix {
    pub file_header: Vec<u8>,
    pub metadata_section: Vec<u8>,
}

/// An append in progress. Dropping it without `commit` leaves the last committed state.
#[async_trait]
pub trait AppendSession: Send {
    /// Which of `entries` this session already holds intact (left by an interrupted import),
    /// so a copy can skip reading and sending them. Appends hold nothing in advance.
    async fn present(&mut self, entries: &[IndexEntry]) -> Result<Vec<bool>, StoreError> {
        Ok(vec![false; entries.len()])
    }

    /// Stores one record; `entry` is its index entry (offset in the single-file image,
    /// length, digest). Records must be put in order.
    async fn put_record(&mut self, entry: &IndexEntry, record: Bytes) -> Result<(), StoreError>;

    /// Makes the appended records and `tail` the committed state, durably.
    async fn commit(self: Box<Self>, tail: Tail) -> Result<(), StoreError>;
}
