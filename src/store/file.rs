//! The single-file backend: the whole artifact in one file on a local file system.
//!
//! # Commit protocol (two-phase, append-only)
//!
//! A committed file is `base | segment 0 | trailer 0 | records | segment 1 | trailer 1 | ...`
//! and nothing in it is ever rewritten. An append, under an exclusive lock on the file:
//!
//! 1. writes its records and its segment after the base commit's trailer (records go through
//!    a writer thread, small ones gathered into large writes, so hashing and signing the next
//!    records overlaps writing these; the thread `fdatasync`s every few MiB so the disk works
//!    meanwhile), then `fdatasync`s;
//! 2. writes the commit's trailer right after the segment and `fdatasync`s again. Only now
//!    does the commit count as made.
//!
//! Both phases run on the writer thread, in the queue with the records
//! (`Pipeline`), so a writer can hand a commit over and send the next records at once
//! ([`AppendSession::commit_and_continue`]) while the file still goes through the states of
//! the sequential protocol: no record sent after a commit is written before that commit is
//! durable.
//!
//! The trailer is the commit point, and it is written only once everything it commits is
//! durable, so a reader that finds an intact trailer at the end of the file trusts it without
//! re-reading the commit: two `fdatasync`s per commit, and opening costs a few small reads
//! whatever the file's size. (One `fdatasync` would do only if readers re-hashed the newest
//! commit on every open; FORMAT.md discusses the choice.)
//!
//! A crash leaves the file ending in bytes past the newest intact trailer. Readers find that
//! trailer by scanning back over those bytes (which needs no lock in the common case of an
//! intact end, and a shared lock otherwise, so they never scan bytes a writer is changing),
//! and report the bytes as uncommitted; they never write. The artifact layer decides whether
//! those bytes hold a complete, signed commit whose trailer alone is missing or damaged (then
//! readers use it and the next append writes its trailer back) or an interrupted append (the
//! next append truncates it). Nothing outside the file is ever consulted.
//!
//! Writers take an exclusive lock on the file for the whole append. Committed bytes never
//! change, which is what makes handing out slices of a memory map sound.
//!
//! # Blocking work
//!
//! Every lock wait, `pread`, `pwrite`, `fdatasync` and link runs on the runtime's blocking
//! threads (`run_blocking`), as `object_store`'s local store does, so a slow disk or a lock
//! held by another process never stalls the other tasks of the caller's runtime; records
//! reach the writer thread through a bounded async queue. The one exception is a short read
//! of committed bytes, served as a slice of the shared memory map without a system call.
//!
//! # Crash points
//!
//! Each step of the protocol above is named by a `crash_point` (a test hook, inert unless
//! `MAIF_TEST_CRASH_AT` is set), so `tests/crash.rs` can stop a writer exactly there and
//! check the state FORMAT.md's crash table describes.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    AppendBase, AppendSession, Base, BlockStore, CommitRef, Continued, Durable, ImportSession,
    Latest, RecordBytes, SMALL_RECORD_LEN, SmallRecord, StoreError, crash_point, fail_point,
    run_blocking,
};
use crate::format::Codec;
use crate::format::file_header::FILE_HEADER_LEN;
use crate::format::layout::commit_object_start;
use crate::format::segment::SEGMENT_HEADER_LEN;
use crate::format::trailer::TRAILER_MAGIC;
use crate::format::{
    FileHeader, FormatError, IndexEntry, MetadataSection, SegmentHeader, TRAILER_LEN, Trailer,
};

/// An artifact stored as one file.
///
/// Cloning gives another handle on the same file sharing the same read caches (which is how
/// the blocking work below owns what it needs on a blocking thread).
#[derive(Debug, Clone)]
pub struct FileStore {
    path: PathBuf,
    cache: Arc<ReadCache>,
}

/// What reads of one file share.
#[derive(Debug, Default)]
struct ReadCache {
    /// The most recent memory map of the file, shared by every read of committed bytes.
    mapping: Mutex<Option<Bytes>>,
    /// A read handle for `pread`s.
    reader: Mutex<Option<Arc<File>>>,
    /// One past the newest trailer this handle has seen intact: bytes below it never change.
    committed_end: Mutex<u64>,
}

/// Reads at least this long are copied with `pread` instead of sliced from the map.
const PREAD_MIN: u64 = 64 * 1024;
/// How much of the newest segment `latest` reads (the head, and a small run, fit).
pub(crate) const SEGMENT_PREFIX_READ: u64 = 64 * 1024;
/// Chunk size of the backward scan for the newest intact trailer.
const SCAN_CHUNK: u64 = 1 << 20;

fn io_error(location: &str, action: &str, source: std::io::Error) -> StoreError {
    StoreError::Io {
        location: location.to_string(),
        action: action.to_string(),
        source,
    }
}

impl FileStore {
    /// The single-file artifact at `path`. Nothing is opened or created until the store is
    /// used: [`ArtifactWriter::create`](crate::ArtifactWriter::create) creates the file (and
    /// refuses one that exists), readers and writers open it.
    ///
    /// # Example
    ///
    /// ```
    /// use std::sync::Arc;
    /// use maif_store::store::{BlockStore, FileStore};
    /// use maif_store::{ArtifactReader, ArtifactWriter, CreateOptions, SigningKey};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> maif_store::Result<()> {
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("notes.maif");
    /// let store: Arc<dyn BlockStore> = Arc::new(FileStore::new(&path));
    /// assert!(!path.exists());
    ///
    /// ArtifactWriter::create(store.clone(), SigningKey::generate()?, CreateOptions::default())
    ///     .await?;
    /// assert!(path.exists());
    /// assert_eq!(ArtifactReader::open(store).await?.record_count(), 0);
    /// # Ok(()) }
    /// ```
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            cache: Arc::default(),
        }
    }

    /// The artifact's path, as given to [`Self::new`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn io(&self, action: impl Into<String>) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
        let action = action.into();
        move |source| io_error(&self.location(), &action, source)
    }

    fn format_err(
        &self,
        context: impl Into<String>,
    ) -> impl FnOnce(FormatError) -> StoreError + '_ {
        let context = context.into();
        move |source| StoreError::Format {
            location: self.location(),
            context,
            source,
        }
    }

    fn torn(&self, reason: impl Into<String>) -> StoreError {
        StoreError::Torn {
            location: self.location(),
            reason: reason.into(),
        }
    }

    fn open_existing(&self, write: bool) -> Result<File, StoreError> {
        OpenOptions::new()
            .read(true)
            .write(write)
            .open(&self.path)
            .map_err(|source| {
                if source.kind() == std::io::ErrorKind::NotFound {
                    StoreError::NotFound {
                        location: self.location(),
                    }
                } else {
                    io_error(&self.location(), "opening", source)
                }
            })
    }

    fn reader(&self) -> Result<Arc<File>, StoreError> {
        let mut reader = self.cache.reader.lock().map_err(|_| StoreError::Internal {
            location: self.location(),
            reason: "a reader thread panicked".into(),
        })?;
        if let Some(file) = reader.as_ref() {
            return Ok(file.clone());
        }
        let file = Arc::new(self.open_existing(false)?);
        *reader = Some(file.clone());
        Ok(file)
    }

    /// The file's current bytes as a read-only memory map (for recovery, which must look at
    /// every byte without loading the file into memory).
    pub(crate) fn image(&self) -> Result<Bytes, StoreError> {
        map(&self.open_existing(false)?, &self.location())
    }

    /// Reads `range` of the file with `pread`; fails with `OutOfRange` if the file is shorter.
    fn pread(&self, file: &File, range: Range<u64>, what: &str) -> Result<Vec<u8>, StoreError> {
        let mut buffer = vec![0u8; (range.end - range.start) as usize];
        file.read_exact_at(&mut buffer, range.start).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                StoreError::OutOfRange {
                    location: self.location(),
                    what: format!("{what} (bytes {range:?})"),
                }
            } else {
                io_error(&self.location(), &format!("reading {what}"), e)
            }
        })?;
        Ok(buffer)
    }

    /// The base's length, after checking the file starts like a MAIF file of this version.
    fn base_len(&self, file: &File, len: u64) -> Result<u64, StoreError> {
        let prefix = self.pread(
            file,
            0..len.min((FILE_HEADER_LEN + 4) as u64),
            "the file header",
        )?;
        if prefix.len() >= 4 && !prefix.starts_with(b"MAIF") {
            return Err(StoreError::Corrupt {
                location: self.location(),
                reason: "not a MAIF file (no MAIF magic at byte 0)".into(),
            });
        }
        if prefix.len() < FILE_HEADER_LEN + 4 {
            return Err(self.torn(format!("{len} bytes is shorter than the smallest artifact")));
        }
        FileHeader::decode(&prefix[..FILE_HEADER_LEN])
            .map_err(self.format_err("file header at byte 0"))?;
        let metadata_len = MetadataSection::peek_len(&prefix[FILE_HEADER_LEN..]).map_err(|e| {
            StoreError::Format {
                location: self.location(),
                context: "metadata section".into(),
                source: e.at(FILE_HEADER_LEN as u64),
            }
        })?;
        let base_len = (FILE_HEADER_LEN + metadata_len) as u64;
        if base_len > len {
            return Err(self.torn(format!(
                "the metadata section ends at {base_len} but the file has {len} bytes"
            )));
        }
        Ok(base_len)
    }

    /// The newest trailer that is intact at its own position, and where it is. The caller
    /// holds at least a shared lock unless it only takes the fast path (an intact end).
    fn newest_trailer(
        &self,
        file: &File,
        len: u64,
        base_len: u64,
        scan: bool,
    ) -> Result<Option<(Trailer, u64)>, StoreError> {
        let valid = |bytes: &[u8], at: u64| {
            Trailer::decode_at(bytes, at)
                .ok()
                .filter(|t| t.segment_offset >= base_len)
        };
        if len >= base_len + TRAILER_LEN as u64 {
            let at = len - TRAILER_LEN as u64;
            let bytes = self.pread(file, at..len, "the trailer")?;
            if let Some(trailer) = valid(&bytes, at) {
                return Ok(Some((trailer, at)));
            }
        }
        if !scan {
            return Ok(None);
        }
        // Scan back chunk by chunk; chunks overlap by a trailer so none is split unseen.
        let mut end = len;
        while end > base_len {
            let start = end.saturating_sub(SCAN_CHUNK).max(base_len);
            let chunk_end = (end + TRAILER_LEN as u64 - 1).min(len);
            let chunk = self.pread(
                file,
                start..chunk_end,
                "the file while looking for the newest commit",
            )?;
            let mut at = chunk.len();
            while let Some(found) = chunk[..at]
                .windows(TRAILER_MAGIC.len())
                .rposition(|w| w == TRAILER_MAGIC)
            {
                let offset = start + found as u64;
                if let Some(bytes) = chunk.get(found..found + TRAILER_LEN)
                    && let Some(trailer) = valid(bytes, offset)
                {
                    return Ok(Some((trailer, offset)));
                }
                at = found;
            }
            end = start;
        }
        Ok(None)
    }

    /// The newest commit: the file's length, the newest intact trailer and its position. With
    /// `scan` false only an intact end counts (`None` otherwise); with `scan` true the caller
    /// holds a lock and the bytes past the newest trailer are scanned over.
    fn find_latest(
        &self,
        file: &File,
        scan: bool,
    ) -> Result<Option<(u64, Trailer, u64)>, StoreError> {
        let len = file.metadata().map_err(self.io("reading metadata"))?.len();
        let base_len = self.base_len(file, len)?;
        match self.newest_trailer(file, len, base_len, scan)? {
            Some((trailer, at)) => Ok(Some((len, trailer, at))),
            None if !scan => Ok(None),
            None => Err(self.torn("no intact trailer: not even the creation was committed")),
        }
    }

    fn latest_from(&self, file: &File, scan: bool) -> Result<Option<Latest>, StoreError> {
        let Some((len, trailer, at)) = self.find_latest(file, scan)? else {
            return Ok(None);
        };
        let end = at + TRAILER_LEN as u64;
        if let Ok(mut committed) = self.cache.committed_end.lock() {
            *committed = (*committed).max(end);
        }
        let prefix_end = at.min(trailer.segment_offset + SEGMENT_PREFIX_READ);
        let prefix = self.pread(
            file,
            trailer.segment_offset..prefix_end,
            "the newest segment",
        )?;
        let header = SegmentHeader::decode(prefix.get(..SEGMENT_HEADER_LEN).unwrap_or(&prefix))
            .map_err(|e| StoreError::Format {
                location: self.location(),
                context: format!("segment at byte {}", trailer.segment_offset),
                source: e.at(trailer.segment_offset),
            })?;
        Ok(Some(Latest {
            seq: header.seq,
            segment_prefix: Bytes::from(prefix),
            uncommitted: (len > end).then_some(end..len),
            origin: self.location(),
        }))
    }

    /// Locks `file` (shared for readers of uncommitted bytes, exclusive for an append),
    /// waiting for it; only ever called on a blocking thread (see [`run_blocking`]), since
    /// the holder may be a writer on this very runtime, which must be able to finish.
    fn lock(&self, file: File, exclusive: bool) -> Result<File, StoreError> {
        let locked = if exclusive {
            file.lock()
        } else {
            file.lock_shared()
        };
        locked.map(|()| file).map_err(self.io("locking"))
    }

    /// The committed bytes of `range` from the shared memory map, if a map covering them is
    /// at hand or can be made: no read happens here (only the caller's first touch of the
    /// bytes can fault a page in), so this stays on the async side.
    fn mapped(&self, range: &Range<u64>) -> Result<Option<Bytes>, StoreError> {
        let committed_end = self.cache.committed_end.lock().map_or(0, |end| *end);
        if range.end - range.start >= PREAD_MIN || range.end > committed_end {
            return Ok(None);
        }
        let cached = self.cache.mapping.lock().ok().and_then(|m| m.clone());
        let image = match cached {
            Some(image) if range.end <= image.len() as u64 => image,
            _ => {
                let image = map(&self.open_existing(false)?, &self.location())?;
                if let Ok(mut cached) = self.cache.mapping.lock() {
                    *cached = Some(image.clone());
                }
                image
            }
        };
        Ok((range.end <= image.len() as u64)
            .then(|| image.slice(range.start as usize..range.end as usize)))
    }

    /// Reads committed bytes: a slice of the memory map when short and below the committed
    /// end this handle has seen, a `pread` on a blocking thread otherwise.
    async fn read_committed(&self, range: Range<u64>, what: String) -> Result<Bytes, StoreError> {
        if let Some(bytes) = self.mapped(&range)? {
            return Ok(bytes);
        }
        // Long reads are copied out with pread: slices of the map would keep every page a
        // full pass touches resident in this process. Bytes past the committed end may be
        // truncated by a writer at any time, and a map would fault on them.
        let store = self.clone();
        run_blocking(&self.location(), move || {
            Ok(Bytes::from(store.pread(&*store.reader()?, range, &what)?))
        })
        .await
    }

    fn latest_blocking(&self) -> Result<Latest, StoreError> {
        let file = self.open_existing(false)?;
        // An intact end needs no lock: committed bytes never change, and a trailer at the end
        // is only ever written after everything it commits.
        if let Some(latest) = self.latest_from(&file, false)? {
            return Ok(latest);
        }
        // Otherwise look again under a shared lock, so that no writer is mid-append while the
        // bytes past the newest trailer are scanned and reported.
        let file = self.lock(file, false)?;
        let latest = self.latest_from(&file, true);
        let _ = file.unlock();
        latest?.ok_or_else(|| self.torn("no intact trailer"))
    }

    fn base_blocking(&self) -> Result<Base, StoreError> {
        let file = self.reader()?;
        let len = file.metadata().map_err(self.io("reading metadata"))?.len();
        let base_len = self.base_len(&file, len)?;
        let bytes = Bytes::from(self.pread(&file, 0..base_len, "the file header and metadata")?);
        Ok(Base {
            file_header: bytes.slice(..FILE_HEADER_LEN),
            metadata_section: bytes.slice(FILE_HEADER_LEN..),
        })
    }

    fn create_blocking(&self, genesis: &[u8]) -> Result<(), StoreError> {
        if self.path.exists() {
            return Err(StoreError::AlreadyExists {
                location: self.location(),
            });
        }
        match publish_new_file(&self.path, &[genesis]) {
            Ok(true) => Ok(()),
            Ok(false) => Err(StoreError::AlreadyExists {
                location: self.location(),
            }),
            Err(source) => Err(io_error(&self.location(), "creating", source)),
        }
    }
}

fn map(file: &File, location: &str) -> Result<Bytes, StoreError> {
    let len = file
        .metadata()
        .map_err(|e| io_error(location, "reading metadata", e))?
        .len();
    if len == 0 {
        return Ok(Bytes::new());
    }
    // SAFETY: the map is read-only, and this library never modifies committed bytes: appends
    // only add bytes at the end, and the only truncation is of bytes past the newest intact
    // trailer, which readers take from `pread`, never from a map. Another program truncating
    // the file under us is outside what any memory-mapped reader can defend against.
    #[allow(unsafe_code)]
    let map =
        unsafe { memmap2::Mmap::map(file) }.map_err(|e| io_error(location, "memory-mapping", e))?;
    Ok(Bytes::from_owner(map))
}

/// `fsync`s the directory holding `path`, so a created, renamed or removed entry is durable.
pub(crate) fn sync_dir(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

fn remove_durably(path: &Path) -> std::io::Result<()> {
    std::fs::remove_file(path)?;
    sync_dir(path)
}

/// Writes `bytes` to a new temporary file beside `path`, makes it durable and links it to
/// `path` (a hard link never replaces an existing file, so the loser of two creators gets
/// `AlreadyExists`). Returns `Ok(false)` if `path` exists.
pub(crate) fn publish_new_file(path: &Path, bytes: &[&[u8]]) -> std::io::Result<bool> {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
    let temp = PathBuf::from(name);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)?;
        for part in bytes {
            file.write_all(part)?;
        }
        file.sync_all()?;
        crash_point("create:temporary-written");
        std::fs::hard_link(&temp, path)
    })();
    let _ = std::fs::remove_file(&temp);
    match result {
        Ok(()) => {
            crash_point("create:linked");
            sync_dir(path).map(|()| true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

#[async_trait]
impl BlockStore for FileStore {
    fn location(&self) -> String {
        FileStore::location(self)
    }

    async fn latest(&self) -> Result<Latest, StoreError> {
        let store = self.clone();
        run_blocking(&self.location(), move || store.latest_blocking()).await
    }

    async fn base(&self) -> Result<Base, StoreError> {
        let store = self.clone();
        run_blocking(&self.location(), move || store.base_blocking()).await
    }

    async fn read_segment(
        &self,
        commit: CommitRef,
        range: Range<u64>,
    ) -> Result<Bytes, StoreError> {
        let image = super::segment_image_range(&self.location(), commit, &range)?;
        self.read_committed(image, format!("commit {}'s segment", commit.seq))
            .await
    }

    async fn read_record_range(
        &self,
        entry: &IndexEntry,
        range: Range<u64>,
    ) -> Result<Bytes, StoreError> {
        let image = super::image_range(&self.location(), entry, &range)?;
        self.read_committed(image, format!("the record at offset {}", entry.offset))
            .await
    }

    async fn read_uncommitted(&self, range: Range<u64>) -> Result<Bytes, StoreError> {
        let store = self.clone();
        run_blocking(&self.location(), move || {
            let file = store.lock(store.open_existing(false)?, false)?;
            let bytes = store.pread(&file, range, "bytes past the newest commit");
            let _ = file.unlock();
            Ok(Bytes::from(bytes?))
        })
        .await
    }

    async fn create(&self, genesis: Bytes) -> Result<(), StoreError> {
        let store = self.clone();
        run_blocking(&self.location(), move || store.create_blocking(&genesis)).await
    }

    async fn begin_append(&self, base: &AppendBase) -> Result<Box<dyn AppendSession>, StoreError> {
        let store = self.clone();
        let base = *base;
        let append =
            run_blocking(&self.location(), move || store.begin_append_blocking(&base)).await?;
        Ok(Box::new(append))
    }

    async fn begin_import(&self, base: &Base) -> Result<Box<dyn ImportSession>, StoreError> {
        let store = self.clone();
        let base = base.clone();
        let import = run_blocking(&self.location(), move || store.begin_import_sync(&base)).await?;
        Ok(Box::new(import))
    }
}

impl FileStore {
    /// Begins an append (13.2 of FORMAT.md): locks the file, checks it is still what the
    /// caller examined, writes back a lost trailer of the base and cuts an interrupted
    /// append.
    fn begin_append_blocking(&self, base: &AppendBase) -> Result<FileAppend, StoreError> {
        let file = self.lock(self.open_existing(true)?, true)?;
        let unlock_on_error = |e: StoreError| {
            let _ = file.unlock();
            e
        };
        let (len, _, at) = self
            .find_latest(&file, true)
            .map_err(unlock_on_error)?
            .ok_or_else(|| unlock_on_error(self.torn("no intact trailer")))?;
        crash_point("begin:examined");
        let committed_end = at + TRAILER_LEN as u64;
        let base_trailer_at = base.commit.segment_offset + base.segment_len;
        let conflict = |reason: String| StoreError::Conflict {
            location: self.location(),
            reason,
        };
        if len != base.examined_len {
            let _ = file.unlock();
            return Err(conflict(format!(
                "the file changed since this writer read it ({len} bytes, {} examined)",
                base.examined_len
            )));
        }
        if base_trailer_at == at {
            // The base is the newest intact commit: whatever follows it is an interrupted
            // append, which the caller has judged not to be a complete commit.
        } else if base_trailer_at >= committed_end && base_trailer_at <= len {
            // The base is a complete, signed commit after the newest intact trailer (checked
            // by the caller); restore its trailer, provided its bytes are still the ones the
            // caller checked.
            let header = self
                .pread(
                    &file,
                    base.commit.segment_offset
                        ..base.commit.segment_offset + SEGMENT_HEADER_LEN as u64,
                    "the commit to complete",
                )
                .map_err(unlock_on_error)?;
            if header != base.segment_header {
                let _ = file.unlock();
                return Err(conflict("the commit being completed changed".into()));
            }
            tracing::warn!(path = %self.location(), seq = base.commit.seq, "writing back the trailer of a complete commit whose trailer was missing or damaged");
            file.write_all_at(&base.trailer, base_trailer_at)
                .map_err(|e| {
                    unlock_on_error(io_error(&self.location(), "writing back a trailer", e))
                })?;
            crash_point("begin:trailer-written-back");
        } else {
            let _ = file.unlock();
            return Err(conflict(format!(
                "another writer committed since this append began (the newest commit now ends at byte {committed_end})"
            )));
        }
        if len > base.end() {
            tracing::warn!(path = %self.location(), bytes = len - base.end(), "discarding an interrupted append");
        }
        file.set_len(base.end()).map_err(|e| {
            unlock_on_error(io_error(
                &self.location(),
                "truncating an interrupted append",
                e,
            ))
        })?;
        if base_trailer_at != at {
            file.sync_data().map_err(|e| {
                unlock_on_error(io_error(&self.location(), "syncing a restored trailer", e))
            })?;
        }
        Ok(FileAppend {
            path: self.path.clone(),
            file: Some(Arc::new(file)),
            pipeline: None,
            buffer: Vec::new(),
            buffer_at: base.end(),
            base_end: base.end(),
            next_offset: base.end(),
        })
    }
}

/// Records waiting for the writer thread; bounds the memory an append holds.
const PIPELINE_DEPTH: usize = 8;
/// Small records are written once this many bytes have gathered.
const WRITE_BUFFER: usize = 1 << 20;
/// Room for a gathered write: the record that fills it past [`WRITE_BUFFER`] is smaller
/// than [`SMALL_RECORD_LEN`], so the buffer never grows (growing copies it and touches
/// fresh pages).
const GATHERED_CAPACITY: usize = WRITE_BUFFER + SMALL_RECORD_LEN as usize;
/// Written gathered buffers kept for reuse, so a long append does not fault in fresh
/// pages for every megabyte it writes.
const SPARE_BUFFERS: usize = 4;
/// The record writer makes what it wrote durable after this many bytes.
const BACKGROUND_SYNC: u64 = 8 << 20;

/// A thread that writes records while the caller hashes and signs the next ones, and, for
/// an append, makes its commits durable in order.
///
/// For an append it also makes what it wrote durable as it goes (an `fdatasync` started on
/// a thread of its own after every `sync_every` bytes, [`BACKGROUND_SYNC`], while writing
/// goes on: [`BackgroundFlush`]), so the disk works while the caller does, and the phase-1
/// `fdatasync` of the commit finds little left to write. (An import flushes on
/// threads of its own and passes `None`.) This changes nothing about what is
/// committed: only the trailer, written after phase 1, commits anything.
///
/// Commits are jobs in the same queue as the records ([`Job::Commit`]): the thread writes a
/// commit's segment and trailer, with their two `fdatasync`s, only after every record sent
/// before it, and writes no record sent after it until the commit is durable. So the bytes
/// in the file go through exactly the states of the sequential protocol (13.2 and 13.3 of
/// FORMAT.md), whether or not the caller waits for one commit before sending the next
/// records ([`AppendSession::commit_and_continue`]).
///
/// The queue is an async channel: a caller ahead of the disk waits on the runtime for room,
/// never blocking a runtime thread.
struct Pipeline {
    sender: tokio::sync::mpsc::Sender<Job>,
    worker: JoinHandle<std::io::Result<()>>,
    /// Gathered buffers the thread has written, emptied, for the next gathered writes.
    spare: Arc<SpareBuffers>,
}

/// Emptied buffers handed from the writer thread back to the caller, at most
/// [`SPARE_BUFFERS`].
#[derive(Default)]
struct SpareBuffers(std::sync::Mutex<Vec<Vec<u8>>>);

impl SpareBuffers {
    fn give_back(&self, mut buffer: Vec<u8>) {
        buffer.clear();
        if let Ok(mut spare) = self.0.lock()
            && spare.len() < SPARE_BUFFERS
        {
            spare.push(buffer);
        }
    }

    fn take(&self) -> Option<Vec<u8>> {
        self.0.lock().ok()?.pop()
    }
}

/// What the writer thread is asked to do, in order.
enum Job {
    /// Write a record at this offset.
    Write(u64, RecordBytes),
    /// Write small records gathered into one buffer at this offset, then hand the buffer
    /// back for reuse.
    Gathered(u64, Vec<u8>),
    /// The two phases of commit `seq`, whose segment goes at `at`, right after the records
    /// sent before it; the outcome goes to `done`.
    Commit {
        seq: u64,
        at: u64,
        segment: Bytes,
        trailer: [u8; TRAILER_LEN],
        done: tokio::sync::oneshot::Sender<Result<(), StoreError>>,
    },
    /// Say on `done` that every job before this one is done: `Ok`, or the first failure,
    /// after which records were no longer written.
    Written(tokio::sync::oneshot::Sender<Result<(), String>>),
}

/// What the writer thread of an append keeps about the commits it made.
struct Commits {
    location: String,
    /// Where the newest commit made durable ends (the base's end at first): the file is cut
    /// back here when the append stops with bytes after it.
    durable_end: u64,
    /// Whether bytes past `durable_end` may have been written.
    dirty: bool,
    /// The first failure; every later commit of this append fails with it.
    failure: Option<String>,
}

impl Pipeline {
    /// Starts the writer thread. `base_end` is where an append's base commit ends (the file
    /// is cut back there, or to the end of the newest commit the thread made durable, when
    /// the append stops); an import passes `None` and is never cut.
    fn start(file: Arc<File>, sync_every: Option<u64>, append: Option<(String, u64)>) -> Self {
        let (sender, mut receiver) = tokio::sync::mpsc::channel::<Job>(PIPELINE_DEPTH);
        let spare = Arc::new(SpareBuffers::default());
        let give_back = spare.clone();
        let worker = std::thread::spawn(move || {
            let mut writer = RecordWriter {
                file,
                sync_every,
                commits: append.map(|(location, base_end)| Commits {
                    location,
                    durable_end: base_end,
                    dirty: false,
                    failure: None,
                }),
                unsynced: 0,
                flush: BackgroundFlush(None),
                write_error: None,
            };
            while let Some(job) = receiver.blocking_recv() {
                match job {
                    Job::Write(offset, record) => writer.write(offset, &record.parts),
                    Job::Gathered(offset, buffer) => {
                        writer.write(offset, &[&buffer[..]]);
                        give_back.give_back(buffer);
                    }
                    Job::Commit {
                        seq,
                        at,
                        segment,
                        trailer,
                        done,
                    } => {
                        // The caller may have stopped waiting; the commit stands either way.
                        let _ = done.send(writer.commit(seq, at, &segment, &trailer));
                    }
                    Job::Written(done) => {
                        let _ = done.send(writer.first_failure());
                    }
                }
            }
            writer.finish()
        });
        Self {
            sender,
            worker,
            spare,
        }
    }

    /// Queues `job`; `false` if the writer has stopped (which [`Self::finish`] explains).
    async fn send(&self, job: Job) -> bool {
        self.sender.send(job).await.is_ok()
    }

    /// Waits for every queued job to be done (blocking: called on a blocking thread, or
    /// once the writer has stopped). Returns the first write error, or the failure to cut
    /// back an append that stopped with bytes after its newest commit.
    fn finish(self) -> std::io::Result<()> {
        drop(self.sender);
        self.worker
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the record writer thread panicked")))
    }
}

/// The state of a [`Pipeline`]'s thread.
struct RecordWriter {
    file: Arc<File>,
    sync_every: Option<u64>,
    /// For an append, the commits made (`None` for an import).
    commits: Option<Commits>,
    /// Bytes written since the last flush started.
    unsynced: u64,
    flush: BackgroundFlush,
    /// The first write that failed.
    write_error: Option<std::io::Error>,
}

impl RecordWriter {
    /// `Err` describing the first failure if one stopped the writing.
    fn first_failure(&self) -> Result<(), String> {
        if let Some(failure) = self.commits.as_ref().and_then(|c| c.failure.as_ref()) {
            return Err(failure.clone());
        }
        self.write_error
            .as_ref()
            .map_or(Ok(()), |e| Err(format!("writing a record: {e}")))
    }

    /// Writes `parts`, one after another, at `offset`.
    fn write(&mut self, offset: u64, parts: &[impl AsRef<[u8]>]) {
        // After a failure nothing more is written: the commits these records are for fail
        // anyway.
        if self.write_error.is_some() || self.commits.as_ref().is_some_and(|c| c.failure.is_some())
        {
            return;
        }
        if let Some(commits) = self.commits.as_mut() {
            commits.dirty = true;
        }
        let written = write_parts(&self.file, offset, parts).and_then(|len| {
            self.unsynced += len;
            if self.sync_every.is_some_and(|every| self.unsynced >= every)
                && self.flush.start(&self.file)?
            {
                self.unsynced = 0;
            }
            Ok(())
        });
        if let Err(e) = written {
            if let Some(commits) = self.commits.as_mut() {
                commits
                    .failure
                    .get_or_insert_with(|| format!("writing a record: {e}"));
            }
            self.write_error = Some(e);
        }
    }

    /// Commit `seq`, after every record sent before it.
    fn commit(
        &mut self,
        seq: u64,
        at: u64,
        segment: &[u8],
        trailer: &[u8; TRAILER_LEN],
    ) -> Result<(), StoreError> {
        self.unsynced = 0;
        match self.commits.as_mut() {
            Some(commits) => {
                if let Err(e) = self.flush.wait() {
                    commits
                        .failure
                        .get_or_insert_with(|| format!("flushing records: {e}"));
                }
                commits.commit(&self.file, seq, at, segment, trailer)
            }
            None => Err(StoreError::Misuse {
                location: String::new(),
                reason: "a commit sent to an import's writer".into(),
            }),
        }
    }

    /// Once every job is done: waits for the running flush and, if the append ended with
    /// bytes after its newest durable commit, cuts them back.
    fn finish(mut self) -> std::io::Result<()> {
        if let Err(e) = self.flush.wait() {
            self.write_error.get_or_insert(e);
        }
        if let Some(commits) = self.commits.as_mut()
            && commits.dirty
        {
            crash_point("rollback:before-cut");
            if let Err(e) = self.file.set_len(commits.durable_end) {
                tracing::error!(path = %commits.location, error = %e, "could not cut back an abandoned append");
                self.write_error.get_or_insert(e);
            }
        }
        self.write_error.map_or(Ok(()), Err)
    }
}

/// An `fdatasync` running beside the record writer, so writing goes on while the disk
/// flushes what was written before.
struct BackgroundFlush(Option<JoinHandle<std::io::Result<()>>>);

impl BackgroundFlush {
    /// Starts a flush of `file`, unless one is still running (then `false`: what was
    /// written since waits for the next one).
    fn start(&mut self, file: &Arc<File>) -> std::io::Result<bool> {
        if self
            .0
            .as_ref()
            .is_some_and(|running| !running.is_finished())
        {
            return Ok(false);
        }
        self.wait()?;
        let file = file.clone();
        self.0 = Some(std::thread::spawn(move || file.sync_data()));
        Ok(true)
    }

    /// Waits for the running flush. Its error is the append's: the kernel reports a failed
    /// writeback to one `fdatasync` only, so the commit's own could miss it.
    fn wait(&mut self) -> std::io::Result<()> {
        match self.0.take() {
            Some(running) => running
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("a flush thread panicked"))),
            None => Ok(()),
        }
    }
}

/// Writes `parts` one after another at `offset`; returns how many bytes that was.
fn write_parts(file: &File, offset: u64, parts: &[impl AsRef<[u8]>]) -> std::io::Result<u64> {
    let mut at = offset;
    for part in parts {
        file.write_all_at(part.as_ref(), at)?;
        at += part.as_ref().len() as u64;
    }
    Ok(at - offset)
}

impl Commits {
    /// Commit `seq`: its two phases after every record before it (13.2 of FORMAT.md), or,
    /// when they fail, the file cut back to the newest durable commit.
    fn commit(
        &mut self,
        file: &File,
        seq: u64,
        at: u64,
        segment: &[u8],
        trailer: &[u8; TRAILER_LEN],
    ) -> Result<(), StoreError> {
        if let Some(failure) = &self.failure {
            return Err(StoreError::Internal {
                location: self.location.clone(),
                reason: format!(
                    "commit {seq} was not written: this append failed earlier ({failure})"
                ),
            });
        }
        self.dirty = true;
        match self.write_and_sync(file, at, segment, trailer) {
            Ok(()) => {
                self.durable_end = at + segment.len() as u64 + TRAILER_LEN as u64;
                self.dirty = false;
                Ok(())
            }
            Err(failure) => {
                self.failure = Some(failure.to_string());
                Err(self.cut_back(file, seq, at + segment.len() as u64, failure))
            }
        }
    }

    /// The two phases of a commit (module documentation). Each write is split in two
    /// around a crash point so the crash tests can tear it.
    fn write_and_sync(
        &self,
        file: &File,
        at: u64,
        segment: &[u8],
        trailer: &[u8],
    ) -> Result<(), StoreError> {
        crash_point("append:records-written");
        let io = |what: &str| {
            let location = self.location.clone();
            let what = what.to_string();
            move |source| io_error(&location, &what, source)
        };
        let write_in_halves = |bytes: &[u8], at: u64, torn_point: &str, what: &str| {
            let half = bytes.len() / 2;
            file.write_all_at(&bytes[..half], at).map_err(io(what))?;
            crash_point(torn_point);
            file.write_all_at(&bytes[half..], at + half as u64)
                .map_err(io(what))
        };
        write_in_halves(
            segment,
            at,
            "append:segment-half-written",
            "writing the commit segment",
        )?;
        crash_point("append:segment-written");
        // Phase 1: every record and the segment are durable before the trailer exists.
        file.sync_data()
            .and_then(|()| fail_point("append:phase-1-sync"))
            .map_err(io("syncing the commit"))?;
        crash_point("append:phase-1-synced");
        write_in_halves(
            trailer,
            at + segment.len() as u64,
            "append:trailer-half-written",
            "writing the trailer",
        )?;
        crash_point("append:trailer-written");
        // Phase 2: the trailer, and with it the commit, is durable.
        file.sync_data().map_err(io("syncing the trailer"))?;
        crash_point("append:phase-2-synced");
        Ok(())
    }

    /// Cuts the file back to the newest durable commit after commit `seq` failed, so no
    /// reader or later writer sees its bytes. Once the whole segment is in the file, readers
    /// take the commit as made (its trailer is only a pointer): if the file cannot be cut,
    /// the outcome is unknown, since saying it failed would invite the caller to add its
    /// blocks again.
    fn cut_back(
        &mut self,
        file: &File,
        seq: u64,
        segment_end: u64,
        failure: StoreError,
    ) -> StoreError {
        let segment_in_file = file.metadata().map_or(true, |m| m.len() >= segment_end);
        crash_point("rollback:before-cut");
        self.dirty = false;
        match file.set_len(self.durable_end) {
            Ok(()) => failure,
            Err(cut) => {
                tracing::error!(path = %self.location, error = %cut, "could not cut back a failed commit");
                if segment_in_file {
                    StoreError::Unknown {
                        location: self.location.clone(),
                        what: format!("commit {seq}"),
                        reason: format!("{failure}, then cutting the file back failed: {cut}"),
                        how_to_check:
                            "open the artifact: if the commit is there, its blocks were added"
                                .into(),
                    }
                } else {
                    failure
                }
            }
        }
    }
}

/// An append to a single file; see the module documentation for the write order.
struct FileAppend {
    path: PathBuf,
    file: Option<Arc<File>>,
    pipeline: Option<Pipeline>,
    /// Small records gathered for one write at `buffer_at`.
    buffer: Vec<u8>,
    buffer_at: u64,
    /// Where the commit this append builds on ends (the base, then each commit handed on).
    base_end: u64,
    next_offset: u64,
}

impl FileAppend {
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn file(&self) -> Result<&Arc<File>, StoreError> {
        self.file.as_ref().ok_or_else(|| StoreError::Misuse {
            location: self.location(),
            reason: "append session used after it ended".into(),
        })
    }

    /// Sends the gathered small records to the record writer.
    async fn flush_buffer(&mut self) -> Result<(), StoreError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let gathered = std::mem::take(&mut self.buffer);
        let at = self.buffer_at;
        self.buffer_at += gathered.len() as u64;
        self.send(Job::Gathered(at, gathered)).await?;
        self.buffer = self
            .pipeline
            .as_ref()
            .and_then(|pipeline| pipeline.spare.take())
            .unwrap_or_default();
        Ok(())
    }

    /// Queues `job` for the record writer, starting it if need be.
    async fn send(&mut self, job: Job) -> Result<(), StoreError> {
        if self.pipeline.is_none() {
            self.pipeline = Some(Pipeline::start(
                self.file()?.clone(),
                Some(BACKGROUND_SYNC),
                Some((self.location(), self.base_end)),
            ));
        }
        let queued = match self.pipeline.as_ref() {
            Some(pipeline) => pipeline.send(job).await,
            None => false,
        };
        if !queued {
            // The writer stopped (it only does when it panics): report how.
            let result = self.pipeline.take().map_or(Ok(()), Pipeline::finish);
            result.map_err(|e| io_error(&self.location(), "writing records", e))?;
            return Err(StoreError::Internal {
                location: self.location(),
                reason: "the record writer stopped".into(),
            });
        }
        Ok(())
    }

    /// Checks that a record of `len` bytes for `entry` is the next one.
    fn check_next(&self, entry: &IndexEntry, len: u64) -> Result<(), StoreError> {
        if entry.offset != self.next_offset || entry.record_len != len {
            return Err(StoreError::Misuse {
                location: self.location(),
                reason: format!(
                    "record for offset {} ({len} bytes) put out of order: the next record goes at {}",
                    entry.offset, self.next_offset
                ),
            });
        }
        Ok(())
    }

    /// Adds a small record (`parts`, `len` bytes in all) to the write being gathered;
    /// returns whether that write is now large enough to flush.
    fn gather<'a>(&mut self, len: u64, parts: impl IntoIterator<Item = &'a [u8]>) -> bool {
        if self.buffer.is_empty() {
            self.buffer_at = self.next_offset;
            self.buffer
                .reserve_exact(GATHERED_CAPACITY.saturating_sub(self.buffer.capacity()));
        }
        for part in parts {
            self.buffer.extend_from_slice(part);
        }
        self.next_offset += len;
        self.buffer.len() >= WRITE_BUFFER
    }

    /// Ends the append (blocking): waits for the writer thread, which cuts back whatever
    /// follows the newest durable commit, then releases the lock.
    fn close(&mut self) {
        if let Some(pipeline) = self.pipeline.take() {
            // Nothing more can be done here; the thread logged a failed cut, and the next
            // writer examines and discards what an unfinished append left.
            let _ = pipeline.finish();
        }
        if let Some(file) = self.file.take() {
            let _ = file.unlock();
        }
    }
}

#[async_trait]
impl AppendSession for FileAppend {
    async fn wait_readable(&mut self) -> Result<(), StoreError> {
        if self.pipeline.is_none() && self.buffer.is_empty() {
            // Nothing was ever handed to a writer thread.
            return Ok(());
        }
        self.flush_buffer().await?;
        let (done, written) = tokio::sync::oneshot::channel();
        self.send(Job::Written(done)).await?;
        // The writer thread answers once the jobs before are done.
        let failure = match written.await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(failure)) => failure,
            Err(_) => "the record writer stopped".into(),
        };
        Err(StoreError::Internal {
            location: self.location(),
            reason: format!("the records sent cannot be read back: {failure}"),
        })
    }

    async fn put_record(
        &mut self,
        entry: &IndexEntry,
        record: RecordBytes,
    ) -> Result<(), StoreError> {
        let len = record.len();
        self.check_next(entry, len)?;
        if len < SMALL_RECORD_LEN {
            if self.gather(len, record.parts.iter().map(|p| &p[..])) {
                self.flush_buffer().await?;
            }
            return Ok(());
        }
        self.flush_buffer().await?;
        self.send(Job::Write(self.next_offset, record)).await?;
        self.next_offset += len;
        self.buffer_at = self.next_offset;
        Ok(())
    }

    async fn put_small_records(&mut self, records: &[SmallRecord<'_>]) -> Result<(), StoreError> {
        for record in records {
            let len = record.len();
            self.check_next(record.entry, len)?;
            if len >= SMALL_RECORD_LEN {
                let parts = record
                    .parts
                    .iter()
                    .map(|p| Bytes::copy_from_slice(p))
                    .collect();
                self.put_record(record.entry, RecordBytes { parts }).await?;
            } else if self.gather(len, record.parts.iter().copied()) {
                self.flush_buffer().await?;
            }
        }
        Ok(())
    }

    async fn commit(
        self: Box<Self>,
        seq: u64,
        segment: Bytes,
        trailer: [u8; TRAILER_LEN],
    ) -> Result<(), StoreError> {
        let location = self.location();
        let Continued { durable, next } = self.commit_and_continue(seq, segment, trailer).await?;
        let result = durable.wait().await;
        if let Some(next) = next {
            // Ending the session joins the writer thread (which has nothing left to do) and
            // releases the lock.
            run_blocking(&location, move || {
                drop(next);
                Ok(())
            })
            .await?;
        }
        result
    }

    async fn commit_and_continue(
        mut self: Box<Self>,
        seq: u64,
        segment: Bytes,
        trailer: [u8; TRAILER_LEN],
    ) -> Result<Continued, StoreError> {
        self.file()?;
        self.flush_buffer().await?;
        let (done, outcome) = tokio::sync::oneshot::channel();
        let at = self.next_offset;
        let end = at + segment.len() as u64 + TRAILER_LEN as u64;
        self.send(Job::Commit {
            seq,
            at,
            segment,
            trailer,
            done,
        })
        .await?;
        self.base_end = end;
        self.next_offset = end;
        self.buffer_at = end;
        Ok(Continued {
            durable: Durable::pending(self.location(), seq, outcome),
            next: Some(self),
        })
    }
}

impl Drop for FileAppend {
    fn drop(&mut self) {
        self.close();
    }
}

/// Path of the partial file an import builds before publishing it.
pub(crate) fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".maif-partial");
    PathBuf::from(name)
}

/// An import into a single file: the image is built in `<file>.maif-partial` and published
/// with a hard link (create-only) when finished. A partial left by an interrupted import is
/// reused: the records it holds intact are kept and not sent again.
struct FileImport {
    path: PathBuf,
    partial: PathBuf,
    file: Arc<File>,
    /// The partial's bytes when the import began (what `present` checks against).
    existing: Bytes,
    /// Writes large records on a writer thread, as appends do.
    pipeline: Option<Pipeline>,
    /// Bytes written since the last background flush was started.
    unflushed: u64,
    /// Background `fdatasync`s, so the disk works while the copy goes on rather than all at
    /// the final sync.
    flushes: Vec<JoinHandle<std::io::Result<()>>>,
    written: u64,
}

/// An import starts a background flush after this many bytes.
const IMPORT_FLUSH_EVERY: u64 = 64 << 20;

impl FileStore {
    fn begin_import_sync(&self, base: &Base) -> Result<FileImport, StoreError> {
        if self.path.exists() {
            return Err(StoreError::AlreadyExists {
                location: self.location(),
            });
        }
        let partial = partial_path(&self.path);
        let location = partial.display().to_string();
        let io = |action: &'static str| {
            let location = location.clone();
            move |source| io_error(&location, action, source)
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&partial)
            .map_err(io("opening the partial file"))?;
        file.try_lock().map_err(|_| StoreError::Conflict {
            location: self.location(),
            reason: format!("another import is writing {}", partial.display()),
        })?;
        let fixed = base.to_vec();
        let existing = std::fs::read(&partial).map_err(io("reading the partial file"))?;
        let existing = if existing.starts_with(&fixed) {
            Bytes::from(existing)
        } else {
            // Another artifact's leftovers, or nothing: start over.
            file.set_len(0).map_err(io("truncating the partial file"))?;
            file.write_all_at(&fixed, 0)
                .map_err(io("writing the partial file"))?;
            Bytes::from(fixed.clone())
        };
        Ok(FileImport {
            path: self.path.clone(),
            partial,
            file: Arc::new(file),
            existing,
            pipeline: None,
            unflushed: 0,
            flushes: Vec::new(),
            written: fixed.len() as u64,
        })
    }
}

impl FileImport {
    fn location(&self) -> String {
        self.partial.display().to_string()
    }

    /// Queues `bytes` for the writer thread (every write goes there, so the runtime never
    /// waits on the disk).
    async fn write_at(&mut self, offset: u64, bytes: Bytes) -> Result<(), StoreError> {
        let len = bytes.len() as u64;
        let file = self.file.clone();
        let queued = self
            .pipeline
            .get_or_insert_with(|| Pipeline::start(file, None, None))
            .send(Job::Write(offset, RecordBytes::from(bytes)))
            .await;
        if !queued {
            let result = self.pipeline.take().map_or(Ok(()), Pipeline::finish);
            result.map_err(|e| io_error(&self.location(), "writing", e))?;
            return Err(StoreError::Internal {
                location: self.location(),
                reason: "the record writer stopped".into(),
            });
        }
        self.written = self.written.max(offset + len);
        self.unflushed += len;
        if self.unflushed >= IMPORT_FLUSH_EVERY {
            self.unflushed = 0;
            let file = self.file.clone();
            self.flushes.retain(|f| !f.is_finished());
            self.flushes
                .push(std::thread::spawn(move || file.sync_data()));
        }
        Ok(())
    }
}

#[async_trait]
impl ImportSession for FileImport {
    async fn present(&mut self, entries: &[IndexEntry]) -> Result<Vec<bool>, StoreError> {
        Ok(entries
            .iter()
            .map(|entry| {
                let range = usize::try_from(entry.offset)
                    .ok()
                    .zip(entry.end().and_then(|e| usize::try_from(e).ok()));
                range
                    .and_then(|(start, end)| self.existing.get(start..end))
                    .is_some_and(|bytes| {
                        crate::format::RecordView::decode(bytes)
                            .is_ok_and(|record| record.digest() == entry.digest)
                    })
            })
            .collect())
    }

    async fn put_record(&mut self, entry: &IndexEntry, record: Bytes) -> Result<(), StoreError> {
        if entry.record_len != record.len() as u64 {
            return Err(StoreError::Misuse {
                location: self.location(),
                reason: format!(
                    "record for offset {} has {} bytes, its entry says {}",
                    entry.offset,
                    record.len(),
                    entry.record_len
                ),
            });
        }
        self.write_at(entry.offset, record).await
    }

    async fn put_commit(&mut self, commit: CommitRef, bytes: Bytes) -> Result<(), StoreError> {
        self.write_at(
            commit_object_start(commit.seq, commit.segment_offset),
            bytes,
        )
        .await
    }

    async fn finish(self: Box<Self>) -> Result<(), StoreError> {
        let location = self.location();
        run_blocking(&location, move || (*self).finish_blocking()).await
    }
}

impl FileImport {
    /// Makes every byte durable and publishes the file (blocking).
    fn finish_blocking(mut self) -> Result<(), StoreError> {
        let location = self.location();
        let io = |action: &'static str| {
            let location = location.clone();
            move |source| io_error(&location, action, source)
        };
        // Every byte must be on disk before the file is published.
        if let Some(pipeline) = self.pipeline.take() {
            pipeline.finish().map_err(io("writing"))?;
        }
        for flush in std::mem::take(&mut self.flushes) {
            flush
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("a flush thread panicked")))
                .map_err(io("flushing"))?;
        }
        self.file
            .set_len(self.written)
            .map_err(io("setting the length"))?;
        self.file.sync_all().map_err(io("syncing"))?;
        match std::fs::hard_link(&self.partial, &self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(StoreError::AlreadyExists {
                    location: self.path.display().to_string(),
                });
            }
            Err(source) => {
                return Err(io_error(
                    &self.path.display().to_string(),
                    "publishing the imported file",
                    source,
                ));
            }
        }
        remove_durably(&self.partial).map_err(io("removing the partial file"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(path: &Path) -> FileAppend {
        let file = File::create(path).expect("create");
        FileAppend {
            path: path.to_path_buf(),
            file: Some(Arc::new(file)),
            pipeline: None,
            buffer: Vec::new(),
            buffer_at: 100,
            base_end: 100,
            next_offset: 100,
        }
    }

    fn entry(offset: u64, record_len: u64) -> IndexEntry {
        IndexEntry {
            offset,
            record_len,
            block_id: [1; 16],
            block_type: crate::format::FourCC::BINA,
            metadata_len: 0,
            timestamp_us: 0,
            digest: [2; 32],
        }
    }

    /// Misuse by the caller is `Misuse` (exit 2), never `Corrupt` (exit 1, "the bytes are
    /// not what they claim"): nothing stored is wrong.
    #[tokio::test]
    async fn records_put_out_of_order_or_after_the_end_are_misuse_not_corruption() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut append = session(&dir.path().join("a.maif"));
        let record = || RecordBytes {
            parts: vec![Bytes::from_static(b"0123456789")],
        };
        let out_of_order = append
            .put_record(&entry(104, 10), record())
            .await
            .expect_err("wrong offset");
        assert!(
            matches!(out_of_order, StoreError::Misuse { .. }),
            "{out_of_order:?}"
        );
        let wrong_length = append
            .put_record(&entry(100, 11), record())
            .await
            .expect_err("wrong length");
        assert!(
            matches!(wrong_length, StoreError::Misuse { .. }),
            "{wrong_length:?}"
        );
        for (at, pieces) in [
            (104, [&b"01234"[..], &b"56789"[..]]),
            (100, [&b"01234"[..], &b"567890"[..]]),
        ] {
            let entry = entry(at, 10);
            let record = SmallRecord {
                entry: &entry,
                parts: &pieces,
            };
            let refused = append
                .put_small_records(&[record])
                .await
                .expect_err("wrong offset or length");
            assert!(matches!(refused, StoreError::Misuse { .. }), "{refused:?}");
        }
        append.file = None;
        let ended = append.file().map(|_| ()).expect_err("ended");
        assert!(matches!(ended, StoreError::Misuse { .. }), "{ended:?}");
    }

    /// Records sent as pieces (a batch with a large one in it) and as buffers land in order,
    /// each where its entry says.
    #[tokio::test]
    async fn small_records_as_pieces_and_buffers_land_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.maif");
        let mut append = session(&path);
        let records: Vec<Vec<u8>> = (0..6u8)
            .map(|n| match n {
                2 => vec![7u8; SMALL_RECORD_LEN as usize],
                _ => vec![n; 10 + usize::from(n)],
            })
            .collect();
        let mut entries = Vec::new();
        let mut at = 100;
        for record in &records {
            entries.push(entry(at, record.len() as u64));
            at += record.len() as u64;
        }
        let split: Vec<[&[u8]; 2]> = records
            .iter()
            .map(|r| {
                let (head, tail) = r.split_at(3);
                [head, tail]
            })
            .collect();
        let pieces = |n: usize| SmallRecord {
            entry: &entries[n],
            parts: &split[n],
        };
        append
            .put_small_records(&[pieces(0), pieces(1), pieces(2), pieces(3)])
            .await
            .expect("pieces");
        let parts = vec![Bytes::from(records[4].clone())];
        append
            .put_record(&entries[4], RecordBytes { parts })
            .await
            .expect("buffer");
        append
            .put_small_records(&[pieces(5)])
            .await
            .expect("pieces");
        let mut expected = vec![0u8; 100];
        expected.extend(records.iter().flatten());
        // The commit writes them, then the segment and trailer (whatever their bytes: the
        // store moves them as they are).
        Box::new(append)
            .commit(1, Bytes::from_static(b"segment"), [9; TRAILER_LEN])
            .await
            .expect("commit");
        let written = std::fs::read(&path).expect("read");
        let records = expected.len();
        assert_eq!(written.len(), records + 7 + TRAILER_LEN);
        assert!(
            written[100..records] == expected[100..],
            "the records differ"
        );
        assert_eq!(&written[records..records + 7], b"segment");
    }

    /// A gathered write's buffer has room for the record that fills it, so gathering never
    /// reallocates (which copied a megabyte and touched fresh pages for every write), and
    /// written buffers come back emptied, at most `SPARE_BUFFERS` of them.
    #[test]
    fn gathered_buffers_never_grow_and_come_back_emptied() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut append = session(&dir.path().join("a.maif"));
        let record = vec![5u8; SMALL_RECORD_LEN as usize - 1];
        assert!(!append.gather(record.len() as u64, [&record[..]]));
        let (buffer, room) = (append.buffer.as_ptr(), append.buffer.capacity());
        assert!(room >= GATHERED_CAPACITY, "{room}");
        let mut full = false;
        while !full {
            full = append.gather(record.len() as u64, [&record[..]]);
            assert_eq!(
                (append.buffer.as_ptr(), append.buffer.capacity()),
                (buffer, room)
            );
        }
        assert!(append.buffer.len() >= WRITE_BUFFER);

        let spare = SpareBuffers::default();
        for _ in 0..SPARE_BUFFERS + 2 {
            spare.give_back(vec![1u8; 1000]);
        }
        let mut back = 0;
        while let Some(buffer) = spare.take() {
            assert!(buffer.is_empty() && buffer.capacity() >= 1000);
            back += 1;
        }
        assert_eq!(back, SPARE_BUFFERS);
    }
}
