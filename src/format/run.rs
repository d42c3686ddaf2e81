//! Index runs: the sorted, paged tables through which a reader finds a block by id.
//!
//! A run holds the index entries of a set of positions, each with its position and version,
//! sorted by `(block_id, position)`, in pages of [`RUN_PAGE_ENTRIES`] entries. A small
//! directory (the first key and the digest of every page) follows the run header, so a
//! lookup reads the head (header and directory), then the one page that can hold the id.
//!
//! ```text
//! run part = header (112) | directory (56 per page) | page 0 | page 1 | ...
//!            |<------ the run's head: one digest ------>|  each page: its own digest
//! ```
//!
//! Runs form a chain from the newest to the oldest (each header names the next older run),
//! and together the live runs hold every position exactly once. The policy that decides
//! when runs merge lives with the writer; this module only encodes and checks the bytes.

use super::FormatError;
use super::codec::{Codec, FixedCodec, Reader, Writer, read_counted};
use super::digest::{Digest, run_head_digest, run_page_digest};
use super::index::{INDEX_ENTRY_LEN, IndexEntry};

/// Magic at the start of every run.
pub const RUN_MAGIC: [u8; 8] = *b"MAIFRUNS";
/// Encoded size of a run reference.
pub(crate) const RUN_REF_LEN: usize = 80;
/// Encoded size of a run header.
pub const RUN_HEADER_LEN: usize = RUN_MAGIC.len() + 8 + 8 + 8 + RUN_REF_LEN;
/// Encoded size of one run entry: an index entry, its position and its version.
pub(crate) const RUN_ENTRY_LEN: usize = INDEX_ENTRY_LEN + 8 + 4;
/// Entries per page (the last page may hold fewer).
pub const RUN_PAGE_ENTRIES: usize = 512;
/// Bytes of a full page.
pub(crate) const RUN_PAGE_LEN: usize = RUN_PAGE_ENTRIES * RUN_ENTRY_LEN;
/// Encoded size of one directory entry: first block id, first position, page digest.
pub const DIRECTORY_ENTRY_LEN: usize = 16 + 8 + 32;

// Field offsets within a run header, each derived from the one before it.
const ENTRY_COUNT_AT: u64 = RUN_MAGIC.len() as u64;
const PAGE_COUNT_AT: u64 = ENTRY_COUNT_AT + 8;
const TIER_AT: u64 = PAGE_COUNT_AT + 8;
const STREAK_AT: u64 = TIER_AT + 1;
const RESERVED_AT: u64 = STREAK_AT + 1;
const OLDER_AT: u64 = RESERVED_AT + 6;
const _: () = assert!(OLDER_AT as usize + RUN_REF_LEN == RUN_HEADER_LEN);

// Field offsets within a run reference.
const REF_PART_OFFSET_AT: u64 = 16;
const REF_HEAD_LEN_AT: u64 = REF_PART_OFFSET_AT + 8;
const REF_HEAD_DIGEST_AT: u64 = REF_HEAD_LEN_AT + 8;
const REF_ENTRY_COUNT_AT: u64 = REF_HEAD_DIGEST_AT + 32;
const REF_TIER_AT: u64 = REF_ENTRY_COUNT_AT + 8;
const REF_STREAK_AT: u64 = REF_TIER_AT + 1;
const REF_RESERVED_AT: u64 = REF_STREAK_AT + 1;
const _: () = assert!(REF_RESERVED_AT as usize + 6 == RUN_REF_LEN);

/// Offset of a run entry's version within the entry.
const VERSION_AT: u64 = INDEX_ENTRY_LEN as u64 + 8;
const _: () = assert!(VERSION_AT as usize + 4 == RUN_ENTRY_LEN);

/// The tier of a run of `count` entries: `floor(log4(count))` (runs of 1 to 3 entries are
/// tier 0, 4 to 15 tier 1, ...). The merge policy keeps at most three runs per tier.
pub fn tier_of(count: u64) -> u8 {
    if count == 0 {
        return 0;
    }
    ((63 - count.leading_zeros()) / 2) as u8
}

/// One entry of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunEntry {
    /// The record's index entry.
    pub entry: IndexEntry,
    /// Position of the record in record order (its Merkle leaf index).
    pub position: u64,
    /// 1 for the first record of this block id, 2 for the next, ...
    pub version: u32,
}

impl RunEntry {
    /// The sort key of a run: block id, then position.
    pub fn key(&self) -> ([u8; 16], u64) {
        (self.entry.block_id, self.position)
    }
}

impl Codec for RunEntry {
    const STRUCTURE: &'static str = "run entry";

    fn encode(&self, out: &mut impl Writer) {
        self.entry.encode(out);
        out.put_u64(self.position);
        out.put_u32(self.version);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, FormatError> {
        Ok(Self {
            entry: IndexEntry::read(r)?,
            position: r.u64("position")?,
            version: r.u32("version")?,
        })
    }
}

impl FixedCodec<RUN_ENTRY_LEN> for RunEntry {}

/// Where a run is: the commit whose segment holds it, and its head's digest and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunRef {
    /// Commit sequence number of the segment holding the run.
    pub seq: u64,
    /// Offset of that segment in the single-file image.
    pub segment_offset: u64,
    /// Offset of the run within its segment.
    pub part_offset: u64,
    /// Length of the run's head (header and directory).
    pub head_len: u64,
    /// Digest of the run's head.
    pub head_digest: Digest,
    /// Entries in the run.
    pub entry_count: u64,
    /// The run's tier (see [`tier_of`]).
    pub tier: u8,
    /// How many runs of this tier end with this one (this one included).
    pub streak: u8,
}

impl RunRef {
    /// Image offset of the run's first byte.
    pub(crate) fn offset(&self) -> Option<u64> {
        self.segment_offset.checked_add(self.part_offset)
    }

    fn zeroed() -> RunRef {
        RunRef {
            seq: 0,
            segment_offset: 0,
            part_offset: 0,
            head_len: 0,
            head_digest: [0u8; 32],
            entry_count: 0,
            tier: 0,
            streak: 0,
        }
    }
}

/// A run reference as stored: all zeros is "no run".
impl Codec for Option<RunRef> {
    const STRUCTURE: &'static str = "run reference";

    fn encode(&self, out: &mut impl Writer) {
        let run = self.unwrap_or_else(RunRef::zeroed);
        out.put_u64(run.seq);
        out.put_u64(run.segment_offset);
        out.put_u64(run.part_offset);
        out.put_u64(run.head_len);
        out.put_bytes(&run.head_digest);
        out.put_u64(run.entry_count);
        out.put_u8(run.tier);
        out.put_u8(run.streak);
        out.put_bytes(&[0u8; 6]);
    }

    /// Reads a reference and checks it describes a run that can exist; all zeros is `None`.
    fn read(r: &mut Reader<'_>) -> Result<Self, FormatError> {
        let start = r.position();
        let run = RunRef {
            seq: r.u64("run.seq")?,
            segment_offset: r.u64("run.segment_offset")?,
            part_offset: r.u64("run.part_offset")?,
            head_len: r.u64("run.head_len")?,
            head_digest: r.array("run.head_digest")?,
            entry_count: r.u64("run.entry_count")?,
            tier: r.u8("run.tier")?,
            streak: r.u8("run.streak")?,
        };
        let reserved: [u8; 6] = r.array("run.reserved")?;
        if reserved != [0u8; 6] {
            return Err(r.invalid("run.reserved", "must be zero"));
        }
        let invalid = |field, at: u64, reason: String| r.invalid_at(field, start + at, reason);
        if run.entry_count == 0 {
            if run != RunRef::zeroed() {
                return Err(invalid(
                    "run.entry_count",
                    REF_ENTRY_COUNT_AT,
                    "a run reference with no entries must be all zeros".into(),
                ));
            }
            return Ok(None);
        }
        if run.tier != tier_of(run.entry_count) {
            return Err(invalid(
                "run.tier",
                REF_TIER_AT,
                format!(
                    "{} but a run of {} entries is tier {}",
                    run.tier,
                    run.entry_count,
                    tier_of(run.entry_count)
                ),
            ));
        }
        if run.streak == 0 || run.streak > 3 {
            return Err(invalid(
                "run.streak",
                REF_STREAK_AT,
                format!("{} is not between 1 and 3", run.streak),
            ));
        }
        if run.head_len != expected_head_len(run.entry_count) {
            return Err(invalid(
                "run.head_len",
                REF_HEAD_LEN_AT,
                format!(
                    "{} but a run of {} entries has a {}-byte head",
                    run.head_len,
                    run.entry_count,
                    expected_head_len(run.entry_count)
                ),
            ));
        }
        if run.offset().is_none() {
            return Err(invalid(
                "run.part_offset",
                REF_PART_OFFSET_AT,
                "overflows a 64-bit offset".into(),
            ));
        }
        Ok(Some(run))
    }
}

impl FixedCodec<RUN_REF_LEN> for Option<RunRef> {}

/// Number of pages of a run of `count` entries.
pub(crate) fn page_count(count: u64) -> u64 {
    count.div_ceil(RUN_PAGE_ENTRIES as u64)
}

/// Length of the head (header and directory) of a run of `count` entries.
pub fn expected_head_len(count: u64) -> u64 {
    RUN_HEADER_LEN as u64 + page_count(count) * DIRECTORY_ENTRY_LEN as u64
}

/// Length of the whole run part of a run of `count` entries.
pub fn run_part_len(count: u64) -> u64 {
    expected_head_len(count) + count * RUN_ENTRY_LEN as u64
}

/// One page's entry in the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectoryEntry {
    /// Block id of the page's first entry (entries are sorted by id, then position).
    pub first_id: [u8; 16],
    /// Record position of the page's first entry.
    pub first_position: u64,
    /// Digest of the page's entries, checked when the page is read.
    pub page_digest: Digest,
}

impl Codec for DirectoryEntry {
    const STRUCTURE: &'static str = "run directory entry";

    fn encode(&self, out: &mut impl Writer) {
        out.put_bytes(&self.first_id);
        out.put_u64(self.first_position);
        out.put_bytes(&self.page_digest);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, FormatError> {
        Ok(Self {
            first_id: r.array("directory.first_id")?,
            first_position: r.u64("directory.first_position")?,
            page_digest: r.array("directory.page_digest")?,
        })
    }
}

impl FixedCodec<DIRECTORY_ENTRY_LEN> for DirectoryEntry {}

/// The fixed header of a run: what it holds and the next older live run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RunHeader {
    /// Entries in the run.
    pub entry_count: u64,
    /// Pages the entries are split into (one directory entry each).
    pub page_count: u64,
    /// The run's tier (see [`tier_of`]).
    pub tier: u8,
    /// How many runs of this tier end with this one (this one included).
    pub streak: u8,
    /// The next older live run when this run was written.
    pub older: Option<RunRef>,
}

impl Codec for RunHeader {
    const STRUCTURE: &'static str = "index run";

    fn encode(&self, out: &mut impl Writer) {
        out.put_bytes(&RUN_MAGIC);
        out.put_u64(self.entry_count);
        out.put_u64(self.page_count);
        out.put_u8(self.tier);
        out.put_u8(self.streak);
        out.put_bytes(&[0u8; 6]);
        self.older.encode(out);
    }

    /// Reads the 112 bytes and checks the counts, tier and streak agree with each other and
    /// with the older run.
    fn read(r: &mut Reader<'_>) -> Result<Self, FormatError> {
        let start = r.position();
        r.magic(&RUN_MAGIC, "magic")?;
        let entry_count = r.u64("entry_count")?;
        let pages = r.u64("page_count")?;
        let tier = r.u8("tier")?;
        let streak = r.u8("streak")?;
        let reserved: [u8; 6] = r.array("reserved")?;
        if reserved != [0u8; 6] {
            return Err(r.invalid("reserved", "must be zero"));
        }
        let older = Option::<RunRef>::read(r)?;
        let invalid = |field, at: u64, reason: String| r.invalid_at(field, start + at, reason);
        if entry_count == 0 {
            return Err(invalid(
                "entry_count",
                ENTRY_COUNT_AT,
                "a run holds at least one entry".into(),
            ));
        }
        if pages != page_count(entry_count) {
            return Err(invalid(
                "page_count",
                PAGE_COUNT_AT,
                format!(
                    "{pages} but {entry_count} entries fill {} pages",
                    page_count(entry_count)
                ),
            ));
        }
        if tier != tier_of(entry_count) {
            return Err(invalid(
                "tier",
                TIER_AT,
                format!(
                    "{tier} but a run of {entry_count} entries is tier {}",
                    tier_of(entry_count)
                ),
            ));
        }
        let expected_streak = match &older {
            Some(older) if older.tier < tier => {
                return Err(invalid(
                    "older",
                    OLDER_AT,
                    format!(
                        "names a run of tier {} older than this tier-{tier} run: tiers never grow towards the newest run",
                        older.tier
                    ),
                ));
            }
            Some(older) if older.tier == tier => older.streak.saturating_add(1),
            _ => 1,
        };
        if streak != expected_streak || streak > 3 {
            return Err(invalid(
                "streak",
                STREAK_AT,
                format!("{streak} but the runs before it make it {expected_streak}"),
            ));
        }
        Ok(Self {
            entry_count,
            page_count: pages,
            tier,
            streak,
            older,
        })
    }
}

impl FixedCodec<RUN_HEADER_LEN> for RunHeader {}

/// A run's head: what it holds and where each page's keys start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunHead {
    /// Entries in the run.
    pub entry_count: u64,
    /// The run's tier (see [`tier_of`]).
    pub tier: u8,
    /// How many runs of this tier end with this one (this one included).
    pub streak: u8,
    /// The next older live run when this run was written.
    pub older: Option<RunRef>,
    /// One entry per page, in page order.
    pub directory: Vec<DirectoryEntry>,
}

impl RunHead {
    /// Byte range of page `page` within the run part.
    pub fn page_range(&self, page: usize) -> std::ops::Range<u64> {
        let start = expected_head_len(self.entry_count) + (page * RUN_PAGE_LEN) as u64;
        start..start + self.page_entries(page) as u64 * RUN_ENTRY_LEN as u64
    }

    /// Entries on page `page`.
    pub(crate) fn page_entries(&self, page: usize) -> usize {
        let before = (page * RUN_PAGE_ENTRIES) as u64;
        (self.entry_count.saturating_sub(before)).min(RUN_PAGE_ENTRIES as u64) as usize
    }

    /// The pages that can hold entries of `block_id` (usually one).
    pub fn pages_for(&self, block_id: &[u8; 16]) -> std::ops::Range<usize> {
        // Page i holds the keys from its first key up to (not including) page i + 1's.
        let last = self
            .directory
            .partition_point(|d| d.first_id <= *block_id)
            .saturating_sub(1);
        let first = self
            .directory
            .partition_point(|d| (d.first_id, d.first_position) < (*block_id, 0))
            .saturating_sub(1);
        if self.directory.is_empty() {
            return 0..0;
        }
        first..last + 1
    }

    /// Decodes and checks a run head (header and directory) from exactly its bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let mut r = Reader::new(bytes, RunHeader::STRUCTURE);
        let RunHeader {
            entry_count,
            page_count: pages,
            tier,
            streak,
            older,
        } = RunHeader::read(&mut r)?;
        let directory = read_counted(
            &mut r,
            pages,
            DIRECTORY_ENTRY_LEN,
            |remaining| FormatError::InvalidField {
                structure: RunHeader::STRUCTURE,
                field: "page_count",
                offset: PAGE_COUNT_AT,
                reason: format!("{pages} directory entries cannot fit in {remaining} bytes"),
            },
            DirectoryEntry::read,
        )?;
        for (page, pair) in (1u64..).zip(directory.windows(2)) {
            if (pair[0].first_id, pair[0].first_position)
                >= (pair[1].first_id, pair[1].first_position)
            {
                return Err(FormatError::InvalidField {
                    structure: RunHeader::STRUCTURE,
                    field: "directory",
                    offset: RUN_HEADER_LEN as u64 + page * DIRECTORY_ENTRY_LEN as u64,
                    reason: format!("page {page} does not start after page {}", page - 1),
                });
            }
        }
        r.finish()?;
        Ok(Self {
            entry_count,
            tier,
            streak,
            older,
            directory,
        })
    }

    /// Decodes page `page` from exactly its bytes and checks its digest, order and first key
    /// against the directory.
    pub fn decode_page(&self, page: usize, bytes: &[u8]) -> Result<Vec<RunEntry>, FormatError> {
        let Some(expected) = self.directory.get(page) else {
            return Err(FormatError::InvalidField {
                structure: "index run page",
                field: "page",
                offset: 0,
                reason: format!(
                    "page {page} does not exist (the run has {})",
                    self.directory.len()
                ),
            });
        };
        let invalid = |field, offset, reason: String| FormatError::InvalidField {
            structure: "index run page",
            field,
            offset,
            reason,
        };
        if run_page_digest(bytes) != expected.page_digest {
            return Err(invalid(
                "digest",
                0,
                format!("page {page} does not match the digest in the run's directory"),
            ));
        }
        let count = self.page_entries(page);
        if bytes.len() != count * RUN_ENTRY_LEN {
            return Err(invalid(
                "entries",
                0,
                format!(
                    "page {page} holds {} bytes, {count} entries need {}",
                    bytes.len(),
                    count * RUN_ENTRY_LEN
                ),
            ));
        }
        let mut r = Reader::new(bytes, "index run page");
        let entries = read_counted(
            &mut r,
            count as u64,
            RUN_ENTRY_LEN,
            |remaining| {
                invalid(
                    "entries",
                    0,
                    format!("page {page} holds {remaining} bytes, {count} entries need more"),
                )
            },
            RunEntry::read,
        )?;
        for (n, entry) in entries.iter().enumerate() {
            let at = (n * RUN_ENTRY_LEN) as u64;
            if n == 0
                && (entry.entry.block_id, entry.position)
                    != (expected.first_id, expected.first_position)
            {
                return Err(invalid(
                    "first key",
                    at,
                    format!("page {page} does not start with the key its directory entry names"),
                ));
            }
            if let Some(previous) = n.checked_sub(1).and_then(|p| entries.get(p))
                && previous.key() >= entry.key()
            {
                return Err(invalid(
                    "order",
                    at,
                    format!("entry {n} of page {page} is not in (block id, position) order"),
                ));
            }
            if entry.version == 0 {
                return Err(invalid(
                    "version",
                    at + VERSION_AT,
                    "versions start at 1".into(),
                ));
            }
        }
        r.finish()?;
        Ok(entries)
    }
}

/// A run once encoded: what a reference to it needs (its bytes went where the encoder was
/// told to put them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodedRun {
    /// Length of the head (header and directory), which the pages follow.
    pub head_len: u64,
    /// Digest of the head, which a [`RunRef`] names.
    pub head_digest: Digest,
    /// Entries in the run.
    pub entry_count: u64,
    /// The run's tier (see [`tier_of`]).
    pub tier: u8,
    /// How many runs of this tier end with this one (this one included).
    pub streak: u8,
}

impl EncodedRun {
    /// The reference to this run once it is placed at `part_offset` of commit `seq`'s
    /// segment at `segment_offset`.
    pub(crate) fn reference(&self, seq: u64, segment_offset: u64, part_offset: u64) -> RunRef {
        RunRef {
            seq,
            segment_offset,
            part_offset,
            head_len: self.head_len,
            head_digest: self.head_digest,
            entry_count: self.entry_count,
            tier: self.tier,
            streak: self.streak,
        }
    }
}

/// Encodes a run of `entries`, which must be non-empty and sorted by `(block_id, position)`,
/// written on top of the live run `older`: its bytes (head, then pages) and what a
/// reference to it needs.
pub fn encode_run(
    entries: &[RunEntry],
    older: Option<&RunRef>,
) -> Result<(Vec<u8>, EncodedRun), FormatError> {
    let mut bytes = Vec::with_capacity(run_part_len(entries.len() as u64) as usize);
    let run = encode_run_into(entries, older, &mut bytes)?;
    Ok((bytes, run))
}

/// [`encode_run`], appending the run's bytes ([`run_part_len`] of them) to `out`: a commit
/// writes its run straight into its segment, with no copy of the run in between (a merge
/// commit's run can be megabytes).
pub fn encode_run_into(
    entries: &[RunEntry],
    older: Option<&RunRef>,
    out: &mut Vec<u8>,
) -> Result<EncodedRun, FormatError> {
    let invalid = |reason: String| FormatError::InvalidField {
        structure: "index run",
        field: "entries",
        offset: 0,
        reason,
    };
    if entries.is_empty() {
        return Err(invalid("a run holds at least one entry".into()));
    }
    if let Some(n) = entries.windows(2).position(|w| w[0].key() >= w[1].key()) {
        return Err(invalid(format!(
            "entries {n} and {} are not in (block id, position) order",
            n + 1
        )));
    }
    let count = entries.len() as u64;
    let tier = tier_of(count);
    let streak = match older {
        Some(older) if older.tier == tier => older.streak + 1,
        Some(older) if older.tier < tier => {
            return Err(invalid(format!(
                "a tier-{tier} run cannot be written on top of a tier-{} run",
                older.tier
            )));
        }
        _ => 1,
    };
    if streak > 3 {
        return Err(invalid(
            "a fourth run of one tier must be merged, not written".into(),
        ));
    }
    // The head's length is fixed by the count: reserve it, write the pages after it, then
    // fill it in once the pages' digests are known.
    let head_len = expected_head_len(count);
    let start = out.len();
    out.reserve(run_part_len(count) as usize);
    out.resize(start + head_len as usize, 0);
    let mut head = Vec::with_capacity(head_len as usize);
    RunHeader {
        entry_count: count,
        page_count: page_count(count),
        tier,
        streak,
        older: older.copied(),
    }
    .encode(&mut head);
    for page in entries.chunks(RUN_PAGE_ENTRIES) {
        let page_start = out.len();
        for entry in page {
            entry.encode(out);
        }
        DirectoryEntry {
            first_id: page[0].entry.block_id,
            first_position: page[0].position,
            page_digest: run_page_digest(&out[page_start..]),
        }
        .encode(&mut head);
    }
    if head.len() as u64 != head_len {
        // The room reserved for the head is what FORMAT.md gives for this count; a head of
        // another length would overwrite the first page.
        return Err(invalid(format!(
            "the head encoded to {} bytes where {head_len} were reserved",
            head.len()
        )));
    }
    let head_digest = run_head_digest(&head[..RUN_HEADER_LEN], &head[RUN_HEADER_LEN..]);
    out[start..start + head.len()].copy_from_slice(&head);
    Ok(EncodedRun {
        head_len,
        head_digest,
        entry_count: count,
        tier,
        streak,
    })
}

/// Checks that a head's bytes hash to the digest its reference names.
pub(crate) fn check_head_digest(run: &RunRef, head: &[u8]) -> Result<(), FormatError> {
    let split = RUN_HEADER_LEN.min(head.len());
    if run_head_digest(&head[..split], &head[split..]) != run.head_digest {
        return Err(FormatError::InvalidField {
            structure: "index run",
            field: "head",
            offset: 0,
            reason: format!(
                "the head of the run in commit {} does not match the digest its reference names",
                run.seq
            ),
        });
    }
    Ok(())
}
