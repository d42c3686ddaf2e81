//! The single-file backend: the whole artifact in one file on a local file system.
//!
//! # Durability
//!
//! A committed file is `header | metadata | records | tail`, where the tail is provenance,
//! index and trailer. An append overwrites the tail, so before touching the file it saves
//! the committed tail to a rollback journal beside it (`<file>-journal`):
//!
//! 1. write the journal (old tail and where it starts), `fsync` it, `fsync` the directory;
//! 2. write the new records where the old tail began (a writer thread takes them through a
//!    queue of two, so hashing and signing the next record overlaps writing this one), then
//!    the new tail after them;
//! 3. `fsync` the file (and truncate it if it shrank);
//! 4. delete the journal, `fsync` the directory. Only now does the append return.
//!
//! A crash before step 4 leaves a journal, and the journal always describes the last state
//! that was committed: readers then see that state (records from the file, tail from the
//! journal) without writing anything, and the next writer rolls the file back to it before
//! appending. A crash during step 1 leaves a torn journal (its CRC fails) over an untouched
//! file, and it is ignored. So a crash at any moment loses at most the append in flight.
//!
//! Writers take an exclusive lock on the file for the whole append; readers take a shared
//! lock while they read the tail, so they never observe a half-written tail. Committed record
//! bytes are never modified, which is what makes handing out slices of a memory map sound.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use async_trait::async_trait;
use bytes::Bytes;

use super::{AppendSession, BlockStore, Genesis, Head, HeadParts, StoreError, Tail};
use crate::format::file_header::FILE_HEADER_LEN;
use crate::format::journal::Journal;
use crate::format::{FileHeader, FormatError, IndexEntry, TRAILER_LEN, Trailer, layout};

/// An artifact stored as one file.
#[derive(Debug)]
pub struct FileStore {
    path: PathBuf,
    /// The most recent memory map of the file, shared by every read.
    mapping: Mutex<Option<Bytes>>,
    /// A read handle for large reads.
    reader: Mutex<Option<Arc<File>>>,
}

/// Reads at least this long are copied with `pread` instead of sliced from the map.
const PREAD_MIN: u64 = 64 * 1024;

impl FileStore {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            mapping: Mutex::new(None),
            reader: Mutex::new(None),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn reader(&self) -> Result<Arc<File>, StoreError> {
        let mut reader = self.reader.lock().map_err(|_| StoreError::Corrupt {
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
    /// bytes past any committed state without loading the file into memory).
    pub fn image(&self) -> Result<Bytes, StoreError> {
        self.map(&self.open_existing(false)?)
    }

    /// Path of the rollback journal of `path`.
    pub fn journal_path(path: &Path) -> PathBuf {
        let mut name = path.as_os_str().to_owned();
        name.push("-journal");
        PathBuf::from(name)
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn io(&self, action: impl Into<String>) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
        let action = action.into();
        move |source| StoreError::Io {
            location: self.location(),
            action,
            source,
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
                    StoreError::Io {
                        location: self.location(),
                        action: "opening".into(),
                        source,
                    }
                }
            })
    }

    /// Maps the whole file and caches the map for reads.
    fn map(&self, file: &File) -> Result<Bytes, StoreError> {
        let len = file.metadata().map_err(self.io("reading metadata"))?.len();
        let bytes = if len == 0 {
            Bytes::new()
        } else {
            // SAFETY: the map is read-only. This library never modifies bytes of a committed
            // record and only rewrites the tail under an exclusive lock; readers copy what
            // they need of the tail while holding a shared lock. Another program truncating
            // the file under us is outside what any memory-mapped reader can defend against.
            #[allow(unsafe_code)]
            let map = unsafe { memmap2::Mmap::map(file) }.map_err(self.io("memory-mapping"))?;
            Bytes::from_owner(map)
        };
        if let Ok(mut cached) = self.mapping.lock() {
            *cached = Some(bytes.clone());
        }
        Ok(bytes)
    }

    /// The rollback journal, if one exists and is intact (a torn journal is `None`).
    pub fn read_journal(&self) -> Result<Option<Journal>, StoreError> {
        let journal_path = Self::journal_path(&self.path);
        match std::fs::read(&journal_path) {
            Ok(bytes) => match Journal::decode(&bytes) {
                Ok(journal) => Ok(Some(journal)),
                // Torn while being written: the file was not touched yet.
                Err(_) => Ok(None),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StoreError::Io {
                location: journal_path.display().to_string(),
                action: "reading the rollback journal".into(),
                source,
            }),
        }
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

    /// The committed state of the image `prefix | tail`, where `tail` starts at
    /// `prefix.len()` and ends with the trailer.
    fn parse_head(&self, prefix: Bytes, tail: Bytes) -> Result<Head, StoreError> {
        let torn = |reason: String| StoreError::Torn {
            location: self.location(),
            reason,
        };
        let image_len = (prefix.len() + tail.len()) as u64;
        if image_len < (FILE_HEADER_LEN + 4 + TRAILER_LEN) as u64 {
            if prefix.len() + tail.len() >= 4
                && !prefix.starts_with(b"MAIF")
                && !tail.starts_with(b"MAIF")
            {
                return Err(StoreError::Corrupt {
                    location: self.location(),
                    reason: "not a MAIF file (no MAIF magic at byte 0)".into(),
                });
            }
            return Err(torn(format!(
                "{image_len} bytes is shorter than the smallest artifact"
            )));
        }
        let header_bytes = if prefix.len() >= FILE_HEADER_LEN {
            prefix.slice(..FILE_HEADER_LEN)
        } else {
            return Err(torn("the file header is incomplete".into()));
        };
        FileHeader::decode(&header_bytes).map_err(self.format_err("file header at byte 0"))?;
        let trailer_bytes = tail.slice(tail.len().saturating_sub(TRAILER_LEN)..);
        let trailer = Trailer::decode(&trailer_bytes)
            .map_err(|e| torn(format!("no valid trailer at the end: {e}")))?;
        let sections = layout::sections(&trailer, image_len).map_err(|e| torn(e.to_string()))?;
        if sections.provenance.start < prefix.len() as u64 {
            return Err(torn(
                "the trailer places the tail inside the records".into(),
            ));
        }
        let tail_base = prefix.len() as u64;
        let from_tail = |range: &Range<u64>| -> Result<Bytes, StoreError> {
            if range.start < tail_base {
                return Err(torn("a tail section starts before the tail".into()));
            }
            Ok(tail.slice((range.start - tail_base) as usize..(range.end - tail_base) as usize))
        };
        let parts = HeadParts {
            file_header: header_bytes,
            metadata_section: prefix
                .slice(sections.metadata.start as usize..sections.metadata.end as usize),
            provenance_section: from_tail(&sections.provenance)?,
            index_section: from_tail(&sections.index)?,
            trailer: trailer_bytes,
        };
        Head::from_parts(parts).map_err(|(context, source)| StoreError::Format {
            location: self.location(),
            context,
            source,
        })
    }

    /// Reads the committed state; the caller holds at least a shared lock on `file`.
    fn head_locked(&self, file: &File) -> Result<Head, StoreError> {
        let image = self.map(file)?;
        // Say what the file is before blaming a missing trailer.
        if image.len() >= 4 && !image.starts_with(b"MAIF") {
            return Err(StoreError::Corrupt {
                location: self.location(),
                reason: "not a MAIF file (no MAIF magic at byte 0)".into(),
            });
        }
        if let Some(header) = image.get(..FILE_HEADER_LEN) {
            FileHeader::decode(header).map_err(self.format_err("file header at byte 0"))?;
        }
        if let Some(journal) = self.read_journal()? {
            let end = usize::try_from(journal.records_end)
                .ok()
                .filter(|end| *end <= image.len())
                .ok_or_else(|| StoreError::Corrupt {
                    location: self.location(),
                    reason: format!(
                        "the rollback journal says records end at {} but the file has {} bytes",
                        journal.records_end,
                        image.len()
                    ),
                })?;
            return self.parse_head(image.slice(..end), Bytes::from(journal.tail));
        }
        // Split at the trailer's provenance offset so the tail slices come from `tail`.
        let split = image
            .len()
            .checked_sub(TRAILER_LEN)
            .and_then(|at| Trailer::decode(&image[at..]).ok())
            .and_then(|t| usize::try_from(t.provenance_offset).ok())
            .filter(|at| *at <= image.len());
        match split {
            Some(split) => self.parse_head(image.slice(..split), image.slice(split..)),
            // No usable trailer: let the tail parser name the exact trailer error.
            None => self.parse_head(
                image.slice(..image.len().saturating_sub(TRAILER_LEN)),
                image.slice(image.len().saturating_sub(TRAILER_LEN)..),
            ),
        }
    }

    /// Restores the last committed state from the journal, if there is one. The caller holds
    /// the exclusive lock.
    fn roll_back(&self, file: &File) -> Result<bool, StoreError> {
        let journal_path = Self::journal_path(&self.path);
        let Some(journal) = self.read_journal()? else {
            if journal_path.exists() {
                remove_durably(&journal_path)
                    .map_err(self.io("removing a torn rollback journal"))?;
            }
            return Ok(false);
        };
        tracing::warn!(path = %self.location(), "rolling back an interrupted append");
        file.set_len(journal.records_end)
            .map_err(self.io("truncating for rollback"))?;
        file.write_all_at(&journal.tail, journal.records_end)
            .map_err(self.io("restoring the committed tail"))?;
        file.sync_all().map_err(self.io("syncing the rollback"))?;
        remove_durably(&journal_path).map_err(self.io("removing the rollback journal"))?;
        Ok(true)
    }

    fn lock(&self, file: &File, exclusive: bool) -> Result<(), StoreError> {
        let result = if exclusive {
            file.lock()
        } else {
            file.lock_shared()
        };
        result.map_err(self.io("locking"))
    }
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

#[async_trait]
impl BlockStore for FileStore {
    fn location(&self) -> String {
        FileStore::location(self)
    }

    async fn head(&self) -> Result<Head, StoreError> {
        let file = self.open_existing(false)?;
        self.lock(&file, false)?;
        let head = self.head_locked(&file);
        let _ = file.unlock();
        head
    }

    async fn read_record(&self, entry: &IndexEntry) -> Result<Bytes, StoreError> {
        self.read_record_range(entry, 0..entry.record_len).await
    }

    async fn read_record_range(
        &self,
        entry: &IndexEntry,
        range: Range<u64>,
    ) -> Result<Bytes, StoreError> {
        let location = self.location();
        let Range { start, end } = super::image_range(&location, entry, &range)?;
        let out_of_range = || StoreError::OutOfRange {
            location: location.clone(),
            what: format!("bytes {range:?} of the record at offset {}", entry.offset),
        };
        if end - start >= PREAD_MIN {
            // Large reads are copied out with pread: slices of the map would keep every page a
            // full pass touches resident in this process, so converting or verifying a
            // multi-GiB file would show its whole size as RSS.
            let file = self.reader()?;
            let mut buffer = vec![0u8; (end - start) as usize];
            file.read_exact_at(&mut buffer, start).map_err(|e| {
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    out_of_range()
                } else {
                    StoreError::Io {
                        location: self.location(),
                        action: format!("reading the record at offset {}", entry.offset),
                        source: e,
                    }
                }
            })?;
            return Ok(Bytes::from(buffer));
        }
        let cached = self.mapping.lock().ok().and_then(|m| m.clone());
        let image = match cached {
            Some(image) if end <= image.len() as u64 => image,
            _ => self.map(&self.open_existing(false)?)?,
        };
        if end > image.len() as u64 {
            return Err(out_of_range());
        }
        Ok(image.slice(start as usize..end as usize))
    }

    async fn create(&self, genesis: Genesis) -> Result<(), StoreError> {
        if self.path.exists() {
            return Err(StoreError::AlreadyExists {
                location: self.location(),
            });
        }
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
        let temp = PathBuf::from(name);
        let result = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&temp)?;
            file.write_all(&genesis.file_header)?;
            file.write_all(&genesis.metadata_section)?;
            file.write_all(&genesis.tail.provenance_section)?;
            file.write_all(&genesis.tail.index_section)?;
            file.write_all(&genesis.tail.trailer)?;
            file.sync_all()?;
            // A hard link never replaces an existing file, so two creators cannot clobber
            // each other; the loser sees AlreadyExists.
            std::fs::hard_link(&temp, &self.path)
        })();
        let _ = std::fs::remove_file(&temp);
        match result {
            Ok(()) => sync_dir(&self.path).map_err(self.io("syncing the directory")),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(StoreError::AlreadyExists {
                    location: self.location(),
                })
            }
            Err(source) => Err(StoreError::Io {
                location: self.location(),
                action: "creating".into(),
                source,
            }),
        }
    }

    async fn begin_import(
        &self,
        prefix: super::ImportPrefix,
    ) -> Result<Box<dyn AppendSession>, StoreError> {
        Ok(Box::new(self.begin_import_sync(prefix)?))
    }

    async fn begin_append(&self, base: &Head) -> Result<Box<dyn AppendSession>, StoreError> {
        let file = self.open_existing(true)?;
        self.lock(&file, true)?;
        self.roll_back(&file)?;
        let current = self.head_locked(&file)?;
        if current.trailer != base.trailer {
            let _ = file.unlock();
            return Err(StoreError::Conflict {
                location: self.location(),
                reason: format!(
                    "another writer committed since this append began ({} records now, {} expected)",
                    current.trailer.record_count, base.trailer.record_count
                ),
            });
        }
        let mut old_tail = Vec::with_capacity(
            current.provenance_section.len() + current.index_section.len() + TRAILER_LEN,
        );
        old_tail.extend_from_slice(&current.provenance_section);
        old_tail.extend_from_slice(&current.index_section);
        old_tail.extend_from_slice(&current.trailer.to_bytes());
        Ok(Box::new(FileAppend {
            path: self.path.clone(),
            file: Some(Arc::new(file)),
            pipeline: None,
            journal: Journal {
                records_end: current.trailer.provenance_offset,
                tail: old_tail,
            },
            journal_written: false,
            next_offset: current.trailer.provenance_offset,
        }))
    }
}

/// Records waiting for the writer thread; bounds the memory an append holds.
const PIPELINE_DEPTH: usize = 2;
/// Records smaller than this are written inline rather than through the writer thread.
const PIPELINE_MIN_RECORD: usize = 64 * 1024;

/// A thread that writes records while the caller hashes and signs the next ones.
struct Pipeline {
    sender: SyncSender<(u64, Bytes)>,
    worker: JoinHandle<std::io::Result<()>>,
}

impl Pipeline {
    fn start(file: Arc<File>) -> Self {
        let (sender, receiver) = sync_channel::<(u64, Bytes)>(PIPELINE_DEPTH);
        let worker = std::thread::spawn(move || {
            for (offset, record) in receiver {
                file.write_all_at(&record, offset)?;
            }
            Ok(())
        });
        Self { sender, worker }
    }

    /// Waits for every queued record to be written.
    fn finish(self) -> std::io::Result<()> {
        drop(self.sender);
        self.worker
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the record writer thread panicked")))
    }
}

/// An append to a single file; see the module documentation for the write order.
struct FileAppend {
    path: PathBuf,
    file: Option<Arc<File>>,
    pipeline: Option<Pipeline>,
    journal: Journal,
    journal_written: bool,
    next_offset: u64,
}

impl FileAppend {
    fn io(&self, action: &str) -> impl FnOnce(std::io::Error) -> StoreError {
        let location = self.path.display().to_string();
        let action = action.to_string();
        move |source| StoreError::Io {
            location,
            action,
            source,
        }
    }

    fn file(&self) -> Result<&Arc<File>, StoreError> {
        self.file.as_ref().ok_or_else(|| StoreError::Corrupt {
            location: self.path.display().to_string(),
            reason: "append session used after it ended".into(),
        })
    }

    fn write_journal(&mut self) -> Result<(), StoreError> {
        if self.journal_written {
            return Ok(());
        }
        let journal_path = FileStore::journal_path(&self.path);
        let write = || -> std::io::Result<()> {
            let mut journal = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&journal_path)?;
            journal.write_all(&self.journal.to_bytes())?;
            journal.sync_all()?;
            sync_dir(&journal_path)
        };
        write().map_err(self.io("writing the rollback journal"))?;
        self.journal_written = true;
        Ok(())
    }
}

#[async_trait]
impl AppendSession for FileAppend {
    async fn put_record(&mut self, entry: &IndexEntry, record: Bytes) -> Result<(), StoreError> {
        if entry.offset != self.next_offset || entry.record_len != record.len() as u64 {
            return Err(StoreError::Corrupt {
                location: self.path.display().to_string(),
                reason: format!(
                    "record for offset {} ({} bytes) put out of order: the next record goes at {}",
                    entry.offset,
                    record.len(),
                    self.next_offset
                ),
            });
        }
        self.write_journal()?;
        let len = record.len() as u64;
        if record.len() < PIPELINE_MIN_RECORD {
            // A hand-off to the writer thread costs more than writing a small record here.
            // Writes go to distinct offsets and only the commit's fsync makes any durable, so
            // the two paths need no ordering between them.
            self.file()?
                .write_all_at(&record, self.next_offset)
                .map_err(self.io("writing a record"))?;
            self.next_offset += len;
            return Ok(());
        }
        if self.pipeline.is_none() {
            self.pipeline = Some(Pipeline::start(self.file()?.clone()));
        }
        let queued = self
            .pipeline
            .as_ref()
            .map(|p| p.sender.send((self.next_offset, record)).is_ok());
        if queued != Some(true) {
            // The writer stopped on an error: report it.
            let result = self.pipeline.take().map_or(Ok(()), Pipeline::finish);
            result.map_err(self.io("writing a record"))?;
            return Err(StoreError::Corrupt {
                location: self.path.display().to_string(),
                reason: "the record writer stopped".into(),
            });
        }
        self.next_offset += len;
        Ok(())
    }

    async fn commit(mut self: Box<Self>, tail: Tail) -> Result<(), StoreError> {
        self.write_journal()?;
        if let Some(pipeline) = self.pipeline.take() {
            pipeline.finish().map_err(self.io("writing a record"))?;
        }
        let file = self.file()?;
        let mut offset = self.next_offset;
        for part in [&tail.provenance_section, &tail.index_section, &tail.trailer] {
            file.write_all_at(part, offset)
                .map_err(self.io("writing the tail"))?;
            offset += part.len() as u64;
        }
        file.set_len(offset)
            .map_err(self.io("setting the file length"))?;
        file.sync_all().map_err(self.io("syncing the file"))?;
        remove_durably(&FileStore::journal_path(&self.path))
            .map_err(self.io("removing the rollback journal"))?;
        self.journal_written = false;
        if let Some(file) = self.file.take() {
            let _ = file.unlock();
        }
        Ok(())
    }
}

impl Drop for FileAppend {
    fn drop(&mut self) {
        if let Some(pipeline) = self.pipeline.take() {
            let _ = pipeline.finish();
        }
        // An append abandoned after it touched the file: restore the committed tail now
        // rather than leaving it to the next writer.
        if self.journal_written
            && let Some(file) = self.file.as_ref()
            && let Err(e) = FileStore::new(self.path.clone()).roll_back(file)
        {
            tracing::error!(path = %self.path.display(), error = %e, "rollback of an abandoned append failed; the journal remains and the next open uses it");
        }
        if let Some(file) = self.file.take() {
            let _ = file.unlock();
        }
    }
}

/// Path of the partial file an import builds before publishing it.
pub fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".maif-partial");
    PathBuf::from(name)
}

/// An import into a single file: the image is built in `<file>.maif-partial` and published
/// with a hard link (create-only) on commit. A partial left by an interrupted import is
/// reused: the records it holds intact are kept and not sent again.
struct FileImport {
    path: PathBuf,
    partial: PathBuf,
    file: Arc<File>,
    /// The partial's bytes when the import began (what `present` checks against).
    existing: Bytes,
    next_offset: u64,
    /// Writes large records on a writer thread, as appends do.
    pipeline: Option<Pipeline>,
    /// Bytes written since the last background flush was started.
    unflushed: u64,
    /// Background `fdatasync`s, so the disk works while the copy goes on rather than all at
    /// the final sync.
    flushes: Vec<JoinHandle<std::io::Result<()>>>,
}

/// An import starts a background flush after this many bytes.
const IMPORT_FLUSH_EVERY: u64 = 64 << 20;

impl FileStore {
    fn begin_import_sync(&self, prefix: super::ImportPrefix) -> Result<FileImport, StoreError> {
        if self.path.exists() {
            return Err(StoreError::AlreadyExists {
                location: self.location(),
            });
        }
        let partial = partial_path(&self.path);
        let io = |action: &'static str| {
            let location = partial.display().to_string();
            move |source| StoreError::Io {
                location,
                action: action.into(),
                source,
            }
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
        let mut fixed = prefix.file_header.clone();
        fixed.extend_from_slice(&prefix.metadata_section);
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
            next_offset: fixed.len() as u64,
            pipeline: None,
            unflushed: 0,
            flushes: Vec::new(),
        })
    }
}

#[async_trait]
impl AppendSession for FileImport {
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
        let location = self.partial.display().to_string();
        if entry.record_len != record.len() as u64 {
            return Err(StoreError::Corrupt {
                location,
                reason: format!(
                    "record for offset {} has {} bytes, its entry says {}",
                    entry.offset,
                    record.len(),
                    entry.record_len
                ),
            });
        }
        let io_error = |source| StoreError::Io {
            location: location.clone(),
            action: "writing a record".into(),
            source,
        };
        if record.len() < PIPELINE_MIN_RECORD {
            self.file
                .write_all_at(&record, entry.offset)
                .map_err(io_error)?;
        } else {
            let file = self.file.clone();
            let pipeline = self.pipeline.get_or_insert_with(|| Pipeline::start(file));
            if pipeline.sender.send((entry.offset, record)).is_err() {
                let result = self.pipeline.take().map_or(Ok(()), Pipeline::finish);
                result.map_err(io_error)?;
                return Err(StoreError::Corrupt {
                    location,
                    reason: "the record writer stopped".into(),
                });
            }
        }
        self.next_offset = self.next_offset.max(entry.offset + entry.record_len);
        self.unflushed += entry.record_len;
        if self.unflushed >= IMPORT_FLUSH_EVERY {
            self.unflushed = 0;
            let file = self.file.clone();
            self.flushes.retain(|f| !f.is_finished());
            self.flushes
                .push(std::thread::spawn(move || file.sync_data()));
        }
        Ok(())
    }

    async fn commit(mut self: Box<Self>, tail: Tail) -> Result<(), StoreError> {
        let trailer =
            crate::format::Trailer::decode(&tail.trailer).map_err(|source| StoreError::Format {
                location: self.partial.display().to_string(),
                context: "imported trailer".into(),
                source,
            })?;
        let io = |action: &'static str| {
            let location = self.partial.display().to_string();
            move |source| StoreError::Io {
                location,
                action: action.into(),
                source,
            }
        };
        // Every record must be on disk before the tail that commits them.
        if let Some(pipeline) = self.pipeline.take() {
            pipeline.finish().map_err(io("writing a record"))?;
        }
        for flush in std::mem::take(&mut self.flushes) {
            flush
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("a flush thread panicked")))
                .map_err(io("flushing"))?;
        }
        let mut offset = trailer.provenance_offset;
        for part in [&tail.provenance_section, &tail.index_section, &tail.trailer] {
            self.file
                .write_all_at(part, offset)
                .map_err(io("writing the tail"))?;
            offset += part.len() as u64;
        }
        self.file
            .set_len(offset)
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
                return Err(StoreError::Io {
                    location: self.path.display().to_string(),
                    action: "publishing the imported file".into(),
                    source,
                });
            }
        }
        remove_durably(&self.partial).map_err(io("removing the partial file"))?;
        Ok(())
    }
}
