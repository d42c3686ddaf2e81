//! Commits as the artifact layer sees them: reading the newest one, checking it, and
//! completing one whose trailer was lost.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;

use super::index::Index;
use crate::error::{Error, Result};
use crate::format::digest::{Digest, SignedKind, chain_link, genesis_digest};
use crate::format::metadata::MetadataSection;
use crate::format::provenance::decode_entries;
use crate::format::segment::{SEGMENT_HEADER_LEN, SEGMENT_MAGIC};
use crate::format::{Codec, FixedCodec};
use crate::format::{FileHeader, Frontier, RecordView, SegmentHead, SegmentHeader, Trailer};
use crate::keys::PublicKey;
use crate::store::{AppendBase, Base, BlockStore, CommitRef, StoreError};

/// One commit: its segment head (header, signature, frontier) and its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// The segment head as stored: header (and its exact bytes), commit signature and Merkle frontier.
    pub head: SegmentHead,
    /// The digest the commit signature covers (and the next commit names).
    pub digest: Digest,
}

impl Commit {
    /// Decodes a commit from the leading bytes of its segment.
    pub fn decode(prefix: &[u8]) -> std::result::Result<Self, crate::format::FormatError> {
        let head = SegmentHead::decode_prefix(prefix)?;
        let digest = head.commit_digest();
        Ok(Self { head, digest })
    }

    /// The decoded segment header (counts, offsets, Merkle root, index and provenance references).
    pub fn header(&self) -> &SegmentHeader {
        &self.head.header
    }

    /// The commit's sequence number (0 for the first commit, one more for each commit after it).
    pub fn seq(&self) -> u64 {
        self.head.header.seq
    }

    /// Number of records committed up to and including this commit.
    pub fn record_count(&self) -> u64 {
        self.head.header.record_count
    }

    /// How a store addresses this commit: its sequence number and segment offset.
    pub fn reference(&self) -> CommitRef {
        CommitRef {
            seq: self.head.header.seq,
            segment_offset: self.head.header.segment_offset,
        }
    }

    /// The trailer that ends this commit (a function of the segment).
    pub fn trailer(&self) -> Trailer {
        Trailer {
            segment_offset: self.head.header.segment_offset,
            segment_len: self.head.header.segment_len,
            merkle_root: self.head.header.merkle_root,
        }
    }

    /// What an append on top of this commit tells the store, having examined the image up to
    /// `examined_len`.
    pub(crate) fn append_base(&self, examined_len: u64) -> AppendBase {
        AppendBase {
            commit: self.reference(),
            segment_len: self.head.header.segment_len,
            trailer: self.trailer().to_array(),
            segment_header: self.head.header_bytes,
            examined_len,
        }
    }

    /// Image offset one past this commit's trailer.
    pub fn end(&self) -> u64 {
        self.head.header.end()
    }

    /// The Merkle frontier over every record up to this commit (the roots of its perfect subtrees).
    pub fn frontier(&self) -> &Frontier {
        &self.head.frontier
    }

    /// Whether the commit signature verifies under `key`.
    pub(crate) fn signed_by(&self, key: &PublicKey) -> bool {
        key.verify_strict(SignedKind::Commit, &self.digest, &self.head.signature)
    }

    /// Human description: "commit 7 at byte 1234".
    pub fn describe(&self) -> String {
        format!(
            "commit {} at byte {}",
            self.head.header.seq, self.head.header.segment_offset
        )
    }
}

/// The artifact's base, decoded: its exact bytes, its key and chain seed.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The exact bytes of the file header and metadata section, as the store holds them.
    pub base: Base,
    /// The decoded file header (version, creation time, artifact id).
    pub header: FileHeader,
    /// The metadata section, its JSON bytes kept verbatim.
    pub metadata: MetadataSection,
    /// The Ed25519 key every signature in the artifact must verify under (from the metadata).
    pub key: PublicKey,
    /// The chain seed derived from the base bytes: the first record and provenance entry link to it.
    pub genesis: Digest,
}

impl Identity {
    pub(crate) fn decode(base: Base) -> Result<Self> {
        let header = FileHeader::decode(&base.file_header).map_err(Error::format("file header"))?;
        let metadata =
            MetadataSection::decode(&base.metadata_section).map_err(|e| Error::Format {
                context: "metadata section".into(),
                source: e.at(crate::format::FILE_HEADER_LEN as u64),
            })?;
        let key_bytes = metadata
            .public_key()
            .map_err(Error::format("metadata section"))?;
        let key = PublicKey::from_bytes(&key_bytes)?;
        let genesis = genesis_digest(&base.file_header, &base.metadata_section);
        Ok(Self {
            base,
            header,
            metadata,
            key,
            genesis,
        })
    }

    pub(crate) async fn read(store: &dyn BlockStore) -> Result<Self> {
        Self::decode(store.base().await?)
    }
}

/// The newest commit as found in a store, before any signature is checked.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    pub commit: Commit,
    pub prefix: Bytes,
    pub uncommitted: Option<Range<u64>>,
}

fn segment_error(origin: &str, at: u64) -> impl FnOnce(crate::format::FormatError) -> Error {
    let location = origin.to_string();
    move |e| {
        Error::Store(StoreError::Format {
            location,
            context: format!("segment at byte {at}"),
            source: e.at(at),
        })
    }
}

/// Reads the head of the newest commit (and more of its segment if the store's first read
/// did not cover the head).
pub(crate) async fn find_latest(store: &dyn BlockStore) -> Result<Found> {
    let latest = store.latest().await?;
    let header_bytes = latest
        .segment_prefix
        .get(..SEGMENT_HEADER_LEN)
        .ok_or_else(|| {
            Error::Store(StoreError::Corrupt {
                location: latest.origin.clone(),
                reason: format!(
                    "commit {}'s segment is shorter than a segment header",
                    latest.seq
                ),
            })
        })?;
    let header = SegmentHeader::decode(header_bytes).map_err(segment_error(&latest.origin, 0))?;
    let at = header.segment_offset;
    let prefix = if (latest.segment_prefix.len() as u64) < header.head_len() {
        store
            .read_segment(
                CommitRef {
                    seq: header.seq,
                    segment_offset: header.segment_offset,
                },
                0..header.head_len(),
            )
            .await?
    } else {
        latest.segment_prefix
    };
    let commit = Commit::decode(&prefix).map_err(segment_error(&latest.origin, at))?;
    if commit.seq() != latest.seq {
        return Err(Error::Store(StoreError::Corrupt {
            location: store.location(),
            reason: format!(
                "the object of commit {} holds commit {}",
                latest.seq,
                commit.seq()
            ),
        }));
    }
    Ok(Found {
        commit,
        prefix,
        uncommitted: latest.uncommitted,
    })
}

/// Checks that `commit` belongs to the artifact `identity` and is signed by its key.
pub(crate) fn check_commit(commit: &Commit, identity: &Identity) -> Result<()> {
    if commit.header().genesis != identity.genesis {
        return Err(Error::Verification(format!(
            "{} names another artifact's header and metadata (chain seed {}, this artifact's is {})",
            commit.describe(),
            hex::encode(commit.header().genesis),
            hex::encode(identity.genesis)
        )));
    }
    if !commit.signed_by(&identity.key) {
        return Err(Error::Verification(format!(
            "{}: the commit signature does not verify: the segment was altered or signed by another key",
            commit.describe()
        )));
    }
    Ok(())
}

/// Looks for complete, signed commits in `uncommitted` (bytes past the newest intact trailer
/// of a single file) that follow `from`, and returns the newest such commit and the leading
/// bytes of its segment. A commit counts only if its signature verifies under `key`, every
/// part of its segment matches the digests its header names, and every record it adds is
/// intact: then only its trailer was lost (an append interrupted after its data was written,
/// or a damaged trailer), and the trailer, a function of the segment, can be written back.
pub(crate) async fn complete_commits(
    store: &Arc<dyn BlockStore>,
    from: &Commit,
    uncommitted: Range<u64>,
    key: &PublicKey,
) -> Result<Option<(Commit, Bytes)>> {
    let mut newest: Option<(Commit, Bytes)> = None;
    let mut base = from.clone();
    loop {
        let start = base.end();
        if start >= uncommitted.end {
            break;
        }
        match find_complete_commit(store, &base, start..uncommitted.end, key).await? {
            Some((commit, prefix)) => {
                base = commit.clone();
                newest = Some((commit, prefix));
            }
            None => break,
        }
    }
    Ok(newest)
}

/// What bytes past the newest commit are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Uncommitted {
    /// What an interrupted append leaves: whole records, then part of the next commit's
    /// records or segment (or bytes never written: zeros).
    Interrupted,
    /// Anything else: bytes were removed, inserted or altered after they were committed.
    Damaged { at: u64, reason: String },
}

/// Walks the bytes past `from` the way an interrupted append of the next commit would have
/// laid them out, and says whether they can be that.
///
/// A crash can leave whole records, a record or segment cut short, bytes never written
/// (zeros, possibly before bytes that were: the disk writes pages back in any order), and the
/// next commit's segment with no trailer or part of one. It cannot leave a segment at an
/// offset or with a number other than the next commit's, a trailer after a segment that is
/// not complete and signed, or an intact trailer at any other place: such evidence means the
/// file was altered. Readers must not then silently fall back to an older state, nor writers
/// truncate committed data.
pub(crate) async fn classify_uncommitted(
    store: &dyn BlockStore,
    from: &Commit,
    range: Range<u64>,
) -> Result<Uncommitted> {
    let damaged = |at: u64, reason: String| Ok(Uncommitted::Damaged { at, reason });
    let read = |range: Range<u64>| async move {
        // A writer may cut these bytes at any moment; what is gone was uncommitted.
        match store.read_uncommitted(range).await {
            Err(StoreError::OutOfRange { .. }) => Ok(Bytes::new()),
            other => other,
        }
    };
    let mut at = range.start;
    while at < range.end {
        let head = read(at..(at + SEGMENT_HEADER_LEN as u64).min(range.end)).await?;
        if head.starts_with(&SEGMENT_MAGIC) {
            if head.len() < SEGMENT_HEADER_LEN {
                // The next commit's segment header, cut short.
                return Ok(Uncommitted::Interrupted);
            }
            let Ok(header) = SegmentHeader::decode(&head) else {
                // A write torn by a power loss leaves whole sectors unwritten (zeros); a header
                // that fails for any other reason was altered.
                if torn_at_a_sector(at, &head) {
                    return Ok(Uncommitted::Interrupted);
                }
                return damaged(at, "a segment header that does not decode".into());
            };
            if header.segment_offset != at || header.seq != from.seq() + 1 {
                return damaged(
                    at,
                    format!(
                        "a segment of commit {} that belongs at byte {}",
                        header.seq, header.segment_offset
                    ),
                );
            }
            let end = at.saturating_add(header.segment_len);
            if range.end > end.saturating_add(crate::format::TRAILER_LEN as u64) {
                return damaged(
                    end,
                    "bytes after the next commit's segment and trailer".into(),
                );
            }
            // Any trailer byte written means the segment and records were durable first:
            // a commit that is then not complete and signed was altered.
            let after = read(end.min(range.end)..range.end).await?;
            if after.iter().any(|b| *b != 0) {
                return damaged(
                    at,
                    format!(
                        "commit {} with its trailer begun but its segment or records not matching its signature",
                        header.seq
                    ),
                );
            }
            return Ok(Uncommitted::Interrupted);
        }
        if let Some(header) = head
            .get(..crate::format::block::BLOCK_HEADER_LEN)
            .and_then(|b| crate::format::BlockHeader::decode(b).ok())
        {
            match header.record_len() {
                Ok(len) if at.saturating_add(len) <= range.end => {
                    at += len;
                    continue;
                }
                // A record cut short: the interrupted append's last write.
                _ => return Ok(Uncommitted::Interrupted),
            }
        }
        // Neither a record nor a segment: what a crash leaves mid-write, unless a misplaced
        // segment or trailer follows.
        return misplaced_structure(store, from, at..range.end).await;
    }
    Ok(Uncommitted::Interrupted)
}

/// Sector size below which a torn write can leave part of a sector: writes tear at sector
/// boundaries.
const SECTOR: u64 = 512;

/// Whether `bytes` (at image offset `at`) are zeros from some sector boundary on: what a torn
/// write leaves.
fn torn_at_a_sector(at: u64, bytes: &[u8]) -> bool {
    let first_boundary = at.div_ceil(SECTOR) * SECTOR;
    (first_boundary..at + bytes.len() as u64)
        .step_by(SECTOR as usize)
        .any(|boundary| bytes[(boundary - at) as usize..].iter().all(|b| *b == 0))
}

/// Whether `present` (read at image offset `at` where `expected` belongs) is what a write of
/// `expected` torn by a power loss leaves: each sector's share is either written in full or
/// not at all (zeros), in any combination, since the disk writes sectors back in any order.
pub(crate) fn torn_write_of(at: u64, present: &[u8], expected: &[u8]) -> bool {
    if present.len() > expected.len() {
        return false;
    }
    let mut start = 0usize;
    while start < present.len() {
        let absolute = at + start as u64;
        let sector_end = ((absolute / SECTOR + 1) * SECTOR - at) as usize;
        let end = sector_end.min(present.len());
        let piece = &present[start..end];
        if piece != &expected[start..end] && piece.iter().any(|b| *b != 0) {
            return false;
        }
        start = end;
    }
    true
}

/// Looks in `range` (bytes an interrupted append could have left) for a segment header or an
/// intact trailer that decodes: one there cannot come from a crash.
async fn misplaced_structure(
    store: &dyn BlockStore,
    from: &Commit,
    range: Range<u64>,
) -> Result<Uncommitted> {
    let mut start = range.start;
    while start < range.end {
        let end = (start + SCAN_CHUNK).min(range.end);
        let chunk_end = (end + SEGMENT_HEADER_LEN as u64).min(range.end);
        let chunk = match store.read_uncommitted(start..chunk_end).await {
            Err(StoreError::OutOfRange { .. }) => return Ok(Uncommitted::Interrupted),
            other => other?,
        };
        let limit = (end - start) as usize;
        for (n, window) in chunk.windows(8).enumerate().take(limit) {
            let at = start + n as u64;
            if window == SEGMENT_MAGIC
                && let Some(header) = chunk
                    .get(n..n + SEGMENT_HEADER_LEN)
                    .and_then(|b| SegmentHeader::decode(b).ok())
                && !(header.segment_offset == at && header.seq == from.seq() + 1)
            {
                return Ok(Uncommitted::Damaged {
                    at,
                    reason: format!(
                        "a segment of commit {} that belongs at byte {}",
                        header.seq, header.segment_offset
                    ),
                });
            }
            if window == crate::format::trailer::TRAILER_MAGIC
                && chunk
                    .get(n..n + crate::format::TRAILER_LEN)
                    .is_some_and(|b| Trailer::decode(b).is_ok())
            {
                return Ok(Uncommitted::Damaged {
                    at,
                    reason: "an intact trailer out of place".into(),
                });
            }
        }
        start = end;
    }
    Ok(Uncommitted::Interrupted)
}

/// The newest commit a store holds once bytes past its newest intact trailer are accounted
/// for (for stores that hold no such bytes, the newest commit): a complete, signed commit there is taken (its trailer alone was lost); bytes an
/// interrupted append leaves are ignored; anything else is an error naming where the file
/// was altered, so that no reader silently falls back to an older state and no writer
/// truncates committed data.
pub(crate) async fn settle(
    store: &Arc<dyn BlockStore>,
    found: Found,
    key: &PublicKey,
) -> Result<Settled> {
    let Some(range) = found.uncommitted else {
        let examined_len = found.commit.end();
        return Ok(Settled {
            commit: found.commit,
            prefix: found.prefix,
            completed: false,
            examined_len,
        });
    };
    let (commit, prefix, completed) =
        match complete_commits(store, &found.commit, range.clone(), key).await? {
            Some((commit, prefix)) => (commit, prefix, true),
            None => (found.commit, found.prefix, false),
        };
    let rest = commit.end().min(range.end)..range.end;
    if !rest.is_empty()
        && let Uncommitted::Damaged { at, reason } =
            classify_uncommitted(store.as_ref(), &commit, rest).await?
    {
        return Err(Error::Verification(format!(
            "{}: the file continues after {} with {reason} at byte {at}: it was altered after it was committed; `maif verify` reports it and `maif recover` rebuilds what is intact",
            store.location(),
            commit.describe()
        )));
    }
    Ok(Settled {
        commit,
        prefix,
        completed,
        examined_len: range.end,
    })
}

/// The newest commit once bytes past the newest intact trailer are accounted for.
#[derive(Debug, Clone)]
pub(crate) struct Settled {
    pub commit: Commit,
    /// The leading bytes of its segment.
    pub prefix: Bytes,
    /// It was found complete past the newest intact trailer (its trailer was lost).
    pub completed: bool,
    /// The image length examined (see [`AppendBase::examined_len`]).
    pub examined_len: u64,
}

/// Reads uncommitted bytes; `None` if they are gone (a writer may cut them at any moment, and
/// then they were not a commit).
async fn read_if_there(store: &dyn BlockStore, range: Range<u64>) -> Result<Option<Bytes>> {
    match store.read_uncommitted(range).await {
        Ok(bytes) => Ok(Some(bytes)),
        Err(StoreError::OutOfRange { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Chunk size for scanning uncommitted bytes.
const SCAN_CHUNK: u64 = 1 << 20;

async fn find_complete_commit(
    store: &Arc<dyn BlockStore>,
    base: &Commit,
    range: Range<u64>,
    key: &PublicKey,
) -> Result<Option<(Commit, Bytes)>> {
    // The segment ends the commit, so look for its header from the end backwards.
    let mut end = range.end;
    while end > range.start {
        let start = end.saturating_sub(SCAN_CHUNK).max(range.start);
        let chunk_end = (end + SEGMENT_MAGIC.len() as u64 - 1).min(range.end);
        let Some(chunk) = read_if_there(store.as_ref(), start..chunk_end).await? else {
            return Ok(None);
        };
        let mut at = chunk.len();
        while let Some(found) = chunk[..at]
            .windows(SEGMENT_MAGIC.len())
            .rposition(|w| w == SEGMENT_MAGIC)
        {
            let offset = start + found as u64;
            if let Some(candidate) = check_candidate(store, base, offset, range.end, key).await? {
                return Ok(Some(candidate));
            }
            at = found;
        }
        end = start;
    }
    Ok(None)
}

/// Whether a segment at `offset` is the complete successor of `base`.
async fn check_candidate(
    store: &Arc<dyn BlockStore>,
    base: &Commit,
    offset: u64,
    limit: u64,
    key: &PublicKey,
) -> Result<Option<(Commit, Bytes)>> {
    let Some(header_end) = offset.checked_add(SEGMENT_HEADER_LEN as u64) else {
        return Ok(None);
    };
    if header_end > limit {
        return Ok(None);
    }
    let Some(head) = read_if_there(store.as_ref(), offset..header_end).await? else {
        return Ok(None);
    };
    let Ok(header) = SegmentHeader::decode(&head) else {
        return Ok(None);
    };
    let b = base.header();
    let successor = header.seq == b.seq + 1
        && header.segment_offset == offset
        && header.records_start == base.end()
        && header.previous_commit == base.digest
        && header.previous_segment_offset == b.segment_offset
        && header.genesis == b.genesis
        && header.record_count == b.record_count + header.records_added
        && header.provenance_count == b.provenance_count + header.provenance_added
        && offset + header.segment_len <= limit;
    // Nothing follows a sealed commit: the provenance rules say so, in one place.
    let follows_a_seal = super::provenance_rules::ProvenanceRules::writing_after(b)
        .commit_allowed()
        .is_err();
    if !successor || follows_a_seal {
        return Ok(None);
    }
    let Some(segment) = read_if_there(store.as_ref(), offset..offset + header.segment_len).await?
    else {
        return Ok(None);
    };
    let Ok(commit) = Commit::decode(&segment) else {
        return Ok(None);
    };
    if !commit.signed_by(key) {
        return Ok(None);
    }
    // Signed by the artifact's key: now make sure every byte the commit covers is intact.
    let scratch: Arc<dyn BlockStore> = store.clone();
    let index = Index::new(scratch);
    index.remember_segment(commit.reference(), segment.clone());
    let parts = match read_parts(&index, &commit, &segment).await {
        Ok(parts) => parts,
        Err(_) => return Ok(None),
    };
    if parts
        .provenance_head(b.provenance_head)
        .is_none_or(|head| head != header.provenance_head)
    {
        return Ok(None);
    }
    let new_entries = parts.new_entries(b.record_count);
    let mut frontier = base.frontier().clone();
    for entry in &new_entries {
        frontier.append(&entry.entry.digest);
    }
    if frontier != *commit.frontier() {
        return Ok(None);
    }
    let Some(records) = read_if_there(store.as_ref(), base.end()..header.segment_offset).await?
    else {
        return Ok(None);
    };
    let mut at = 0usize;
    let mut previous = b.last_record_digest;
    for entry in &new_entries {
        let Some(bytes) = records.get(at..at + entry.entry.record_len as usize) else {
            return Ok(None);
        };
        let intact = entry.entry.offset == base.end() + at as u64
            && RecordView::decode(bytes).is_ok_and(|record| {
                record.digest() == entry.entry.digest
                    && record.header.prev_link == chain_link(&previous)
                    && key.verify_strict(SignedKind::Block, &entry.entry.digest, record.signature)
            });
        if !intact {
            return Ok(None);
        }
        previous = entry.entry.digest;
        at += bytes.len();
    }
    if at != records.len() || previous != header.last_record_digest {
        return Ok(None);
    }
    Ok(Some((commit, segment)))
}

/// The parts of a segment beyond its head, checked against the digests its header names.
#[derive(Debug)]
pub(crate) struct SegmentParts {
    /// The run this segment holds, if any.
    pub run: Option<(crate::format::run::RunHead, Vec<crate::format::RunEntry>)>,
    pub provenance: Vec<crate::format::ProvenanceEntry>,
}

impl SegmentParts {
    /// The run entries of positions from `first` on: the records this commit added.
    pub fn new_entries(&self, first: u64) -> Vec<crate::format::RunEntry> {
        let mut entries: Vec<_> = self
            .run
            .iter()
            .flat_map(|(_, entries)| entries.iter())
            .filter(|e| e.position >= first)
            .copied()
            .collect();
        entries.sort_unstable_by_key(|e| e.position);
        entries
    }

    /// The provenance head after this segment's entries, chained from `previous`; `None`
    /// when an entry does not name its predecessor.
    pub fn provenance_head(&self, previous: Digest) -> Option<Digest> {
        let mut head = previous;
        for entry in &self.provenance {
            if entry.previous != head {
                return None;
            }
            head = entry.digest().ok()?;
        }
        Some(head)
    }
}

/// Reads the run and provenance parts of `commit`'s segment (from `prefix` where it covers
/// them) and checks the run against the digests the header names.
pub(crate) async fn read_parts(
    index: &Index,
    commit: &Commit,
    prefix: &Bytes,
) -> Result<SegmentParts> {
    let header = commit.header();
    let run = match (&header.newest_run, header.run_len) {
        (Some(run), len) if len > 0 => Some(
            index
                .entries(run)
                .await
                .map(|(head, entries)| (Arc::unwrap_or_clone(head), entries))?,
        ),
        _ => None,
    };
    let range = header.provenance_at()..header.segment_len;
    let bytes = if range.end <= prefix.len() as u64 {
        prefix.slice(range.start as usize..range.end as usize)
    } else {
        index
            .read_segment(commit.reference(), range.clone())
            .await?
    };
    let provenance =
        decode_entries(&bytes, header.provenance_added).map_err(|e| Error::Format {
            context: format!("{}: provenance entries", commit.describe()),
            source: e.at(header.segment_offset + range.start),
        })?;
    Ok(SegmentParts { run, provenance })
}
