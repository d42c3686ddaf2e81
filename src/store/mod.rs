//! Where artifacts live. A [`BlockStore`] moves opaque bytes: records, commit segments and
//! trailers, the file header and metadata. It never parses a signature nor re-encodes a
//! record; the artifact layer (`crate::artifact`) does all decoding, signing and
//! verification on top of this one contract.
//!
//! Every byte has one address in the single-file image (see `format::layout`), and every
//! store serves the same image: a single file holds it contiguously, the object layout holds
//! one object per record and one per commit, and a single file stored as one object holds
//! it whole. Commits are append-only everywhere: nothing once committed is ever rewritten.

use std::collections::HashSet;
use std::fmt;
use std::ops::Range;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;

use crate::format::{Digest, FormatError, IndexEntry, TRAILER_LEN};

pub mod file;
pub mod object;
pub mod object_file;

pub use file::FileStore;
pub use object::{DEFAULT_CONCURRENCY, ListingOrder, ObjectBackend};
pub use object_file::ObjectFile;

/// Runs blocking file work (locks, `pread`, `pwrite`, `fsync`) on one of the runtime's
/// blocking threads when called from a Tokio runtime, as `object_store`'s local store does,
/// so a slow disk never stalls the other tasks of the runtime; outside a runtime it runs
/// inline.
pub(crate) async fn run_blocking<T: Send + 'static>(
    location: &str,
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime
                .spawn_blocking(work)
                .await
                .map_err(|failure| StoreError::Internal {
                    location: location.to_string(),
                    reason: format!("a blocking file task failed: {failure}"),
                })?
        }
        Err(_) => work(),
    }
}

/// Test hook for the deterministic crash tests, inert in normal use: with the environment
/// variable `MAIF_TEST_CRASH_AT=POINT` (or `POINT@N`), the process aborts the first (or Nth)
/// time it reaches the crash point named `POINT`, leaving its files exactly as a crash
/// there would (every write that returned is in the page cache). The points are the steps
/// of the commit protocol that FORMAT.md's crash table (13.3) lists; `tests/crash.rs`
/// stops a writer at each of them and checks the state the table describes.
pub(crate) fn crash_point(point: &str) {
    static TARGET: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static REACHED: AtomicU64 = AtomicU64::new(0);
    if hook_fires("MAIF_TEST_CRASH_AT", &TARGET, &REACHED, point) {
        eprintln!("MAIF_TEST_CRASH_AT: aborting at {point}");
        std::process::abort();
    }
}

/// Test hook for the failure tests, inert in normal use: with `MAIF_TEST_FAIL_AT=POINT` (or
/// `POINT@N`), the first (or Nth) time the store reaches the failure point `POINT` it fails
/// as the system call there would (an I/O error), so tests can check that the failure is
/// reported truthfully and nothing is lost. The one point today is
/// `append:phase-1-sync` (the `fdatasync` of a commit's first phase, FORMAT.md 13.2).
pub(crate) fn fail_point(point: &str) -> std::io::Result<()> {
    static TARGET: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static REACHED: AtomicU64 = AtomicU64::new(0);
    if hook_fires("MAIF_TEST_FAIL_AT", &TARGET, &REACHED, point) {
        return Err(std::io::Error::other(format!(
            "failure injected at {point} (MAIF_TEST_FAIL_AT)"
        )));
    }
    Ok(())
}

/// Whether the test hook variable `variable` (`POINT` or `POINT@N`) names `point` and this
/// is the Nth time it is reached.
fn hook_fires(
    variable: &str,
    target: &OnceLock<Option<(String, u64)>>,
    reached: &AtomicU64,
    point: &str,
) -> bool {
    let target = target.get_or_init(|| {
        let wanted = std::env::var(variable).ok()?;
        Some(match wanted.split_once('@') {
            Some((name, nth)) => (name.to_string(), nth.parse().unwrap_or(1)),
            None => (wanted, 1),
        })
    });
    matches!(target, Some((name, nth))
        if name == point && reached.fetch_add(1, Ordering::SeqCst) + 1 == *nth)
}

/// Errors from a store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No artifact exists at the location.
    #[error("no artifact at {location}")]
    NotFound {
        /// The location, as given.
        location: String,
    },
    /// `create` found an artifact already there.
    #[error("an artifact already exists at {location}")]
    AlreadyExists {
        /// The location, as given.
        location: String,
    },
    /// The committed state changed since the append began (another writer committed).
    #[error("commit conflict at {location}: {reason}")]
    Conflict {
        /// The location, as given.
        location: String,
        /// What changed.
        reason: String,
    },
    /// The stored bytes are not a readable committed artifact. Only damage: never misuse,
    /// a failed worker or transport trouble, so exit code 1 and a verify problem always
    /// mean "the bytes are not what they claim".
    #[error("{location}: {reason}")]
    Corrupt {
        /// The location, as given.
        location: String,
        /// What is damaged, and where.
        reason: String,
    },
    /// The store was used against its contract (a record put out of order, a session used
    /// after it ended): a bug in the caller, not damage.
    #[error("{location}: used out of contract: {reason}")]
    Misuse {
        /// The location, as given.
        location: String,
        /// Which contract was broken.
        reason: String,
    },
    /// A worker of the store failed (a writer thread stopped, a lock holder panicked):
    /// trouble on this side, not damage.
    #[error("{location}: {reason}")]
    Internal {
        /// The location, as given.
        location: String,
        /// What failed.
        reason: String,
    },
    /// The artifact was torn by an interrupted write and has no committed state to open.
    #[error(
        "{location} is torn ({reason}); run `maif recover` to rebuild it from its intact prefix"
    )]
    Torn {
        /// The location, as given.
        location: String,
        /// What was found instead of a commit.
        reason: String,
    },
    /// A structure failed to decode.
    #[error("{location}: {context}: {source}")]
    Format {
        /// The location, as given.
        location: String,
        /// What was being decoded, and where.
        context: String,
        /// The decoding failure.
        source: FormatError,
    },
    /// A read asked for bytes the store does not hold.
    #[error("{location}: {what} out of range")]
    OutOfRange {
        /// The location, as given.
        location: String,
        /// The bytes asked for.
        what: String,
    },
    /// The store cannot do this by its nature.
    #[error("{location}: {reason}")]
    Unsupported {
        /// The location, as given.
        location: String,
        /// What was asked, and why the store cannot do it.
        reason: String,
    },
    /// The outcome of a write is unknown: the request failed in a way that leaves open
    /// whether the store acted, and reading back did not settle it.
    #[error("{location}: {what}: the outcome is unknown ({reason}); {how_to_check}")]
    Unknown {
        /// The location, as given.
        location: String,
        /// The write whose outcome is unknown.
        what: String,
        /// How the request failed.
        reason: String,
        /// What the user can run or look at to find out.
        how_to_check: String,
    },
    /// An object-store request failed (after the store's own retries).
    #[error("{location}: {action} object {key}: {source}")]
    Object {
        /// The location, as given.
        location: String,
        /// The object's key.
        key: String,
        /// What the request was doing (`"get"`, `"put"`, ...).
        action: String,
        /// The object store's error.
        source: Box<object_store::Error>,
    },
    /// A file-system call failed.
    #[error("{location}: I/O error {action}: {source}")]
    Io {
        /// The location, as given.
        location: String,
        /// What the call was doing.
        action: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// One commit, as a store addresses it: its sequence number and where its segment lies in
/// the single-file image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CommitRef {
    /// The commit's sequence number (0 for the first).
    pub seq: u64,
    /// Image offset of the commit's segment.
    pub segment_offset: u64,
}

/// The newest commit a store holds, as found by [`BlockStore::latest`].
#[derive(Debug, Clone)]
pub struct Latest {
    /// The newest commit's sequence number.
    pub seq: u64,
    /// The first bytes of its segment: at least the segment head whenever the store holds
    /// that much (more is read on demand).
    pub segment_prefix: Bytes,
    /// Single files only: bytes after the newest intact trailer. They are an append that was
    /// interrupted, or a commit whose trailer was damaged; the artifact layer decides which.
    pub uncommitted: Option<Range<u64>>,
    /// Where the segment's bytes came from, for messages (a path, or a URL and object key).
    pub origin: String,
}

/// The fixed prefix of every artifact: its file header and metadata section, exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base {
    /// The encoded file header.
    pub file_header: Bytes,
    /// The encoded metadata section (length prefix and JSON).
    pub metadata_section: Bytes,
}

impl Base {
    /// Length of the base in bytes: the image offset of the first record.
    pub fn len(&self) -> u64 {
        (self.file_header.len() + self.metadata_section.len()) as u64
    }

    /// Whether both parts are empty (never for a real artifact).
    pub fn is_empty(&self) -> bool {
        self.file_header.is_empty() && self.metadata_section.is_empty()
    }

    /// The base as one buffer: the file header, then the metadata section.
    pub(crate) fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len() as usize);
        out.extend_from_slice(&self.file_header);
        out.extend_from_slice(&self.metadata_section);
        out
    }
}

/// The commit an append builds on: where its segment is and its trailer's exact bytes. A
/// single file whose newest commit lost its trailer (an append interrupted after its data was
/// durable, or a damaged trailer) gets it written back when an append builds on that commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendBase {
    /// The base commit.
    pub commit: CommitRef,
    /// Length of the base commit's segment, in bytes.
    pub segment_len: u64,
    /// The exact bytes of the base commit's trailer.
    pub trailer: [u8; TRAILER_LEN],
    /// The exact bytes of the base commit's segment header, as the caller checked them.
    pub segment_header: [u8; crate::format::segment::SEGMENT_HEADER_LEN],
    /// The image length the caller examined: the base's end, or the end of the bytes after it
    /// that the caller judged to be an interrupted append. An append refuses to go on (with a
    /// conflict) if the image has changed since, so it never discards bytes nobody examined.
    pub examined_len: u64,
}

impl AppendBase {
    /// Image offset one past the base commit's trailer, where the next commit's records go.
    pub(crate) fn end(&self) -> u64 {
        self.commit.segment_offset + self.segment_len + TRAILER_LEN as u64
    }
}

/// Records shorter than this are small: a writer sends them as borrowed pieces
/// ([`AppendSession::put_small_records`]), and the single file gathers them into large
/// writes (copying them once, whichever way they come); longer ones go as shared buffers
/// ([`AppendSession::put_record`]) and are never copied on the way.
pub(crate) const SMALL_RECORD_LEN: u64 = 64 * 1024;

/// A small record for [`AppendSession::put_small_records`]: its index entry, and its bytes
/// as borrowed pieces whose concatenation is the record.
#[derive(Debug, Clone, Copy)]
pub struct SmallRecord<'a> {
    /// The record's index entry.
    pub entry: &'a IndexEntry,
    /// The record's bytes, in order.
    pub parts: &'a [&'a [u8]],
}

impl SmallRecord<'_> {
    /// Length of the record in bytes.
    pub fn len(&self) -> u64 {
        self.parts.iter().map(|p| p.len() as u64).sum()
    }

    /// Whether the record has no bytes.
    pub fn is_empty(&self) -> bool {
        self.parts.iter().all(|p| p.is_empty())
    }
}

/// A record to store, as the pieces it is written from (so a large payload is never copied
/// into a contiguous buffer just to be written).
#[derive(Debug, Clone, Default)]
pub struct RecordBytes {
    /// The record's bytes, in order; their concatenation is the record.
    pub parts: Vec<Bytes>,
}

impl RecordBytes {
    /// Length of the record in bytes.
    pub fn len(&self) -> u64 {
        self.parts.iter().map(|p| p.len() as u64).sum()
    }

    /// Whether the record has no bytes.
    pub fn is_empty(&self) -> bool {
        self.parts.iter().all(Bytes::is_empty)
    }

    /// The record as one buffer (copies unless it is one part already).
    pub(crate) fn to_bytes(&self) -> Bytes {
        match self.parts.as_slice() {
            [one] => one.clone(),
            parts => {
                let mut out = Vec::with_capacity(self.len() as usize);
                for part in parts {
                    out.extend_from_slice(part);
                }
                Bytes::from(out)
            }
        }
    }
}

impl From<Bytes> for RecordBytes {
    fn from(bytes: Bytes) -> Self {
        Self { parts: vec![bytes] }
    }
}

/// The image offsets of `range` within commit `commit`'s segment (for backends that hold the
/// image as one sequence of bytes), or [`StoreError::OutOfRange`] if they overflow.
pub(crate) fn segment_image_range(
    location: &str,
    commit: CommitRef,
    range: &Range<u64>,
) -> Result<Range<u64>, StoreError> {
    let start = commit.segment_offset.checked_add(range.start);
    let end = commit.segment_offset.checked_add(range.end);
    match (start, end) {
        (Some(start), Some(end)) if start <= end => Ok(start..end),
        _ => Err(StoreError::OutOfRange {
            location: location.to_string(),
            what: format!("bytes {range:?} of commit {}'s segment", commit.seq),
        }),
    }
}

/// The bytes `range` of the record `entry` as a range of the single-file image, or
/// [`StoreError::OutOfRange`] if they are not inside the record.
pub(crate) fn image_range(
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

    /// The newest commit, or [`StoreError::NotFound`].
    async fn latest(&self) -> Result<Latest, StoreError>;

    /// The file header and metadata section.
    async fn base(&self) -> Result<Base, StoreError>;

    /// Bytes `range` of commit `commit`'s segment, counted from the segment's first byte
    /// (the range may run into the trailer that follows it).
    async fn read_segment(&self, commit: CommitRef, range: Range<u64>)
    -> Result<Bytes, StoreError>;

    /// A byte range within one record (e.g. header and metadata only).
    async fn read_record_range(
        &self,
        entry: &IndexEntry,
        range: Range<u64>,
    ) -> Result<Bytes, StoreError>;

    /// The bytes of one record, as described by its index entry.
    async fn read_record(&self, entry: &IndexEntry) -> Result<Bytes, StoreError> {
        self.read_record_range(entry, 0..entry.record_len).await
    }

    /// Bytes of the single-file image that no commit accounts for (see
    /// [`Latest::uncommitted`]). Only stores that hold an image in one piece have any.
    async fn read_uncommitted(&self, range: Range<u64>) -> Result<Bytes, StoreError> {
        let _ = range;
        Err(StoreError::Unsupported {
            location: self.location(),
            reason: "this store holds no uncommitted bytes".into(),
        })
    }

    /// Creates the artifact from its first commit: the base, commit 0's segment and its
    /// trailer, in image order. Fails with [`StoreError::AlreadyExists`] if there is one.
    async fn create(&self, genesis: Bytes) -> Result<(), StoreError>;

    /// Starts an append on top of `base`. The session's commit lands only if `base` is still
    /// the newest commit; otherwise it fails with [`StoreError::Conflict`] and nothing of it
    /// is visible.
    async fn begin_append(&self, base: &AppendBase) -> Result<Box<dyn AppendSession>, StoreError>;

    /// Starts copying an existing artifact here, commit by commit, in image order: each
    /// commit's records, then its commit bytes. Fails with [`StoreError::AlreadyExists`] if a
    /// different artifact is here. A new import of the same source resumes an interrupted
    /// one (see [`ImportSession::present`]).
    async fn begin_import(&self, base: &Base) -> Result<Box<dyn ImportSession>, StoreError>;

    /// Store-specific findings beyond the bytes: for the object layout, record objects that
    /// are missing or that no commit references, and keys outside the layout. `records` are
    /// the digests of every committed record; `commits` is the newest commit's number.
    async fn audit(
        &self,
        records: &HashSet<Digest>,
        newest_commit: u64,
    ) -> Result<Vec<AuditFinding>, StoreError> {
        let _ = (records, newest_commit);
        Ok(Vec::new())
    }

    /// Every record object with its size and age, for garbage collection. Only the object
    /// layout stores records as objects of their own.
    async fn stored_records(&self) -> Result<Vec<StoredRecord>, StoreError> {
        Err(StoreError::Unsupported {
            location: self.location(),
            reason: "only the object layout keeps records as objects of their own; a single file has nothing to collect".into(),
        })
    }

    /// Deletes one record object found by [`Self::stored_records`].
    async fn delete_record(&self, record: &StoredRecord) -> Result<(), StoreError> {
        let _ = record;
        Err(StoreError::Unsupported {
            location: self.location(),
            reason: "only the object layout keeps records as objects of their own".into(),
        })
    }
}

/// A record object as listed by [`BlockStore::stored_records`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// The object's key.
    pub key: String,
    /// The record digest its name gives.
    pub digest: Digest,
    /// The object's size in bytes.
    pub size: u64,
    /// When the store last wrote the object.
    pub last_modified: std::time::SystemTime,
}

/// One finding of [`BlockStore::audit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditFinding {
    /// A committed record has no object (the artifact is damaged).
    MissingRecord {
        /// The digest of the missing record.
        digest: Digest,
        /// The key its object should have.
        key: String,
    },
    /// A record object no commit references (left by an interrupted append or import).
    Orphan {
        /// The object's key.
        key: String,
        /// The object's size in bytes.
        size: u64,
    },
    /// An object under the prefix that is not part of the layout.
    Unexpected {
        /// The object's key.
        key: String,
    },
}

/// An append in progress. Dropping it without `commit` leaves the last committed state.
#[async_trait]
pub trait AppendSession: Send {
    /// Stores one record; `entry` is its index entry (offset in the single-file image,
    /// length, digest). Records must be put in order.
    async fn put_record(
        &mut self,
        entry: &IndexEntry,
        record: RecordBytes,
    ) -> Result<(), StoreError>;

    /// [`Self::put_record`] for small records given as borrowed pieces, in order, for the
    /// store to copy: a writer sends its records of a few KiB this way, a batch at a time,
    /// without a buffer and a reference count per piece or a call per record. The single
    /// file, which gathers small records into large writes, copies the pieces straight into
    /// the gathered write; the default copies each record into one buffer for
    /// [`Self::put_record`].
    async fn put_small_records(&mut self, records: &[SmallRecord<'_>]) -> Result<(), StoreError> {
        for record in records {
            let mut bytes = Vec::with_capacity(record.len() as usize);
            for part in record.parts {
                bytes.extend_from_slice(part);
            }
            let parts = vec![Bytes::from(bytes)];
            self.put_record(record.entry, RecordBytes { parts }).await?;
        }
        Ok(())
    }

    /// Waits until every record and commit sent to this session so far can be read back
    /// from the store (not necessarily durably): the single file's writer thread writes them
    /// after the calls return; other stores have them once put. An error if writing them
    /// failed meanwhile (the single file then cuts its failed commit back off), so the
    /// caller does not take them for there.
    async fn wait_readable(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Makes the appended records and commit `seq` the committed state, durably. `segment`
    /// is the commit's segment (which starts right after the last record) and `trailer` its
    /// trailer.
    async fn commit(
        self: Box<Self>,
        seq: u64,
        segment: Bytes,
        trailer: [u8; TRAILER_LEN],
    ) -> Result<(), StoreError>;

    /// Hands commit `seq` to the store like [`Self::commit`], but may return before it is
    /// durable, with a session that appends after it: the caller can sign and send the next
    /// records while this commit is made durable, and learns its outcome from
    /// [`Continued::durable`]. The store makes the commits of one session durable in order,
    /// and one that fails fails every later one; nothing a later commit names becomes
    /// committed before it. A store that cannot overlap commits makes this one durable
    /// first and returns no session (the caller begins a new one).
    async fn commit_and_continue(
        self: Box<Self>,
        seq: u64,
        segment: Bytes,
        trailer: [u8; TRAILER_LEN],
    ) -> Result<Continued, StoreError> {
        self.commit(seq, segment, trailer).await?;
        Ok(Continued {
            durable: Durable::done(),
            next: None,
        })
    }
}

/// A commit handed to the store by [`AppendSession::commit_and_continue`].
pub struct Continued {
    /// Resolves once the commit is durable, or with why it is not.
    pub durable: Durable,
    /// The session that appends after the commit, if the store keeps one open.
    pub next: Option<Box<dyn AppendSession>>,
}

/// The outcome of a commit that may still be in progress.
#[derive(Debug)]
pub struct Durable {
    waiting: Option<InFlight>,
}

/// A commit being made durable: where, which, and the channel its outcome comes on.
#[derive(Debug)]
struct InFlight {
    location: String,
    seq: u64,
    outcome: tokio::sync::oneshot::Receiver<Result<(), StoreError>>,
}

impl Durable {
    /// A commit already durable.
    pub(crate) fn done() -> Self {
        Self { waiting: None }
    }

    /// Commit `seq` at `location`, whose outcome `outcome` will carry.
    pub(crate) fn pending(
        location: String,
        seq: u64,
        outcome: tokio::sync::oneshot::Receiver<Result<(), StoreError>>,
    ) -> Self {
        Self {
            waiting: Some(InFlight {
                location,
                seq,
                outcome,
            }),
        }
    }

    /// Waits until the commit is durable, or returns why it is not.
    pub async fn wait(self) -> Result<(), StoreError> {
        match self.waiting {
            None => Ok(()),
            Some(InFlight {
                location,
                seq,
                outcome,
            }) => {
                outcome.await.unwrap_or_else(|_| {
                    // The writer went away without an answer: whether the commit is in the
                    // file depends on how far it got.
                    Err(StoreError::Unknown {
                        location,
                        what: format!("commit {seq}"),
                        reason: "the writer thread stopped before reporting the commit".into(),
                        how_to_check:
                            "open the artifact: if the commit is there, its blocks were added"
                                .into(),
                    })
                })
            }
        }
    }
}

/// A copy in progress ([`BlockStore::begin_import`]).
#[async_trait]
pub trait ImportSession: Send {
    /// Which of `entries` this destination already holds intact (left by an interrupted
    /// import), so a copy can skip reading and sending them.
    async fn present(&mut self, entries: &[IndexEntry]) -> Result<Vec<bool>, StoreError>;

    /// Which commits this destination already holds (by sequence number).
    async fn present_commits(&mut self) -> Result<HashSet<u64>, StoreError> {
        Ok(HashSet::new())
    }

    /// Stores one record.
    async fn put_record(&mut self, entry: &IndexEntry, record: Bytes) -> Result<(), StoreError>;

    /// Stores commit `commit`'s bytes: its segment and trailer (commit 0's also start with
    /// the base). Every record of the commit has been put before.
    async fn put_commit(&mut self, commit: CommitRef, bytes: Bytes) -> Result<(), StoreError>;

    /// Publishes the copy, durably.
    async fn finish(self: Box<Self>) -> Result<(), StoreError>;
}
