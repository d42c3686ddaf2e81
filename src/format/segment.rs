//! The commit segment: what one commit appends after its records.
//!
//! ```text
//! segment = header (352) | commit signature (64) | Merkle frontier (32 per subtree)
//!         | index run (optional) | provenance entries
//! ```
//!
//! The header names every count and offset, the chain seed, the previous commit's digest,
//! the provenance head, the Merkle root and the newest index run; the commit signature is
//! over `SHA-256("MAIF-3.1/commit\0" | header | frontier)`. The run's head and pages and the
//! provenance entries are reached through digests the header names, so the one signature
//! covers every byte of the segment. The header, signature and frontier (the segment's
//! "head") are what opening an artifact reads: a few hundred bytes whatever the artifact's
//! size.

use super::FormatError;
use super::block::SIGNATURE_LEN;
use super::codec::{Codec, FixedCodec, Reader, Writer};
use super::digest::{Digest, commit_digest};
use super::merkle::Frontier;
use super::run::{RunRef, run_part_len};

/// Magic at the start of every segment.
pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"MAIFSEGM";
/// Encoded size of a segment header.
pub const SEGMENT_HEADER_LEN: usize = 352;
/// Where the commit signature starts within the segment.
pub(crate) const SIGNATURE_AT: usize = SEGMENT_HEADER_LEN;
/// Where the Merkle frontier starts within the segment.
pub const FRONTIER_AT: usize = SIGNATURE_AT + SIGNATURE_LEN;

/// Flag: the commit finalizes the artifact; nothing may be committed after it.
pub const FLAG_SEALED: u32 = 1;
const KNOWN_FLAGS: u32 = FLAG_SEALED;

// Field offsets within the header, each derived from the one before it.
const SEQ_AT: u64 = SEGMENT_MAGIC.len() as u64;
const COMMITTED_AT: u64 = SEQ_AT + 8;
const SEGMENT_OFFSET_AT: u64 = COMMITTED_AT + 8;
const SEGMENT_LEN_AT: u64 = SEGMENT_OFFSET_AT + 8;
const RECORDS_START_AT: u64 = SEGMENT_LEN_AT + 8;
const RECORD_COUNT_AT: u64 = RECORDS_START_AT + 8;
const RECORDS_ADDED_AT: u64 = RECORD_COUNT_AT + 8;
const PROVENANCE_COUNT_AT: u64 = RECORDS_ADDED_AT + 8;
const PROVENANCE_ADDED_AT: u64 = PROVENANCE_COUNT_AT + 8;
const PROVENANCE_LEN_AT: u64 = PROVENANCE_ADDED_AT + 8;
const RUN_LEN_AT: u64 = PROVENANCE_LEN_AT + 8;
const FLAGS_AT: u64 = RUN_LEN_AT + 8;
const GENESIS_AT: u64 = FLAGS_AT + 8;
const PREVIOUS_COMMIT_AT: u64 = GENESIS_AT + 32;
const PREVIOUS_SEGMENT_AT: u64 = PREVIOUS_COMMIT_AT + 32;
const LAST_RECORD_AT: u64 = PREVIOUS_SEGMENT_AT + 8;
const PROVENANCE_HEAD_AT: u64 = LAST_RECORD_AT + 32;
const ROOT_AT: u64 = PROVENANCE_HEAD_AT + 32;
const NEWEST_RUN_AT: u64 = ROOT_AT + 32;
const _: () = assert!(NEWEST_RUN_AT as usize + super::run::RUN_REF_LEN == SEGMENT_HEADER_LEN);

/// The fixed header of a commit segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Commit sequence number: 0 for the creation, +1 per commit.
    pub seq: u64,
    /// When the commit was made, microseconds since the Unix epoch.
    pub committed_us: u64,
    /// Offset of this segment in the single-file image.
    pub segment_offset: u64,
    /// Length of this segment (its trailer follows it).
    pub segment_len: u64,
    /// Image offset of this commit's first record (its records end at `segment_offset`).
    pub records_start: u64,
    /// Records in the artifact after this commit.
    pub record_count: u64,
    /// Records this commit added.
    pub records_added: u64,
    /// Provenance entries in the artifact after this commit.
    pub provenance_count: u64,
    /// Provenance entries this commit added (they are this segment's provenance part).
    pub provenance_added: u64,
    /// Bytes of the provenance part.
    pub provenance_len: u64,
    /// Bytes of the index run this segment holds (0: none).
    pub run_len: u64,
    /// [`FLAG_SEALED`] or 0.
    pub flags: u32,
    /// The chain seed: binds the commit to the artifact's header and metadata (public key).
    pub genesis: Digest,
    /// Digest of the previous commit (zero for commit 0).
    pub previous_commit: Digest,
    /// Image offset of the previous commit's segment (0 for commit 0).
    pub previous_segment_offset: u64,
    /// Digest of the last record (the chain seed while there are none): what the next record
    /// links to.
    pub last_record_digest: Digest,
    /// Digest of the last provenance entry.
    pub provenance_head: Digest,
    /// RFC 9162 root of every record digest so far.
    pub merkle_root: Digest,
    /// The newest live index run (in this segment when `run_len > 0`).
    pub newest_run: Option<RunRef>,
}

impl Codec for SegmentHeader {
    const STRUCTURE: &'static str = "segment header";

    fn encode(&self, out: &mut impl Writer) {
        out.put_bytes(&SEGMENT_MAGIC);
        out.put_u64(self.seq);
        out.put_u64(self.committed_us);
        out.put_u64(self.segment_offset);
        out.put_u64(self.segment_len);
        out.put_u64(self.records_start);
        out.put_u64(self.record_count);
        out.put_u64(self.records_added);
        out.put_u64(self.provenance_count);
        out.put_u64(self.provenance_added);
        out.put_u64(self.provenance_len);
        out.put_u64(self.run_len);
        out.put_u32(self.flags);
        out.put_u32(0);
        out.put_bytes(&self.genesis);
        out.put_bytes(&self.previous_commit);
        out.put_u64(self.previous_segment_offset);
        out.put_bytes(&self.last_record_digest);
        out.put_bytes(&self.provenance_head);
        out.put_bytes(&self.merkle_root);
        self.newest_run.encode(out);
    }

    /// Reads the 352 bytes and checks the fields agree with each other.
    fn read(r: &mut Reader<'_>) -> Result<Self, FormatError> {
        r.magic(&SEGMENT_MAGIC, "magic")?;
        let header = SegmentHeader {
            seq: r.u64("seq")?,
            committed_us: r.u64("committed")?,
            segment_offset: r.u64("segment_offset")?,
            segment_len: r.u64("segment_len")?,
            records_start: r.u64("records_start")?,
            record_count: r.u64("record_count")?,
            records_added: r.u64("records_added")?,
            provenance_count: r.u64("provenance_count")?,
            provenance_added: r.u64("provenance_added")?,
            provenance_len: r.u64("provenance_len")?,
            run_len: r.u64("run_len")?,
            flags: r.u32("flags")?,
            genesis: {
                let reserved = r.u32("reserved")?;
                if reserved != 0 {
                    return Err(r.invalid("reserved", "must be zero"));
                }
                r.array("genesis")?
            },
            previous_commit: r.array("previous_commit")?,
            previous_segment_offset: r.u64("previous_segment_offset")?,
            last_record_digest: r.array("last_record_digest")?,
            provenance_head: r.array("provenance_head")?,
            merkle_root: r.array("merkle_root")?,
            newest_run: Option::<RunRef>::read(r)?,
        };
        header.check()?;
        Ok(header)
    }
}

impl FixedCodec<SEGMENT_HEADER_LEN> for SegmentHeader {}

impl SegmentHeader {
    /// Whether the segment carries [`FLAG_SEALED`]: the artifact was finalized at this commit.
    pub fn is_sealed(&self) -> bool {
        self.flags & FLAG_SEALED != 0
    }

    /// Length of the frontier that follows the signature.
    pub(crate) fn frontier_len(&self) -> u64 {
        Frontier::encoded_len(self.record_count)
    }

    /// Length of the segment's head: header, signature and frontier.
    pub(crate) fn head_len(&self) -> u64 {
        FRONTIER_AT as u64 + self.frontier_len()
    }

    /// Where the run part starts within the segment.
    pub fn run_at(&self) -> u64 {
        self.head_len()
    }

    /// Where the provenance part starts within the segment.
    pub fn provenance_at(&self) -> u64 {
        self.run_at() + self.run_len
    }

    /// Image offset one past this commit's trailer.
    pub(crate) fn end(&self) -> u64 {
        self.segment_offset + self.segment_len + super::TRAILER_LEN as u64
    }

    fn check(&self) -> Result<(), FormatError> {
        let invalid = |field, offset, reason: String| FormatError::InvalidField {
            structure: "segment header",
            field,
            offset,
            reason,
        };
        if self.flags & !KNOWN_FLAGS != 0 {
            return Err(invalid(
                "flags",
                FLAGS_AT,
                format!("unknown bits 0x{:08x}", self.flags & !KNOWN_FLAGS),
            ));
        }
        let expected_len = (FRONTIER_AT as u64)
            .checked_add(self.frontier_len())
            .and_then(|n| n.checked_add(self.run_len))
            .and_then(|n| n.checked_add(self.provenance_len));
        if expected_len != Some(self.segment_len) {
            return Err(invalid(
                "segment_len",
                SEGMENT_LEN_AT,
                format!(
                    "{} but its parts (header, signature, frontier, run of {} bytes, provenance of {} bytes) add up to {}",
                    self.segment_len,
                    self.run_len,
                    self.provenance_len,
                    expected_len.map_or("more than 2^64".into(), |n| n.to_string())
                ),
            ));
        }
        if self
            .segment_offset
            .checked_add(self.segment_len)
            .and_then(|n| n.checked_add(super::TRAILER_LEN as u64))
            .is_none()
        {
            return Err(invalid(
                "segment_len",
                SEGMENT_LEN_AT,
                "the segment's end overflows a 64-bit offset".into(),
            ));
        }
        if self.records_start > self.segment_offset {
            return Err(invalid(
                "records_start",
                RECORDS_START_AT,
                format!(
                    "{} is past the segment at {}",
                    self.records_start, self.segment_offset
                ),
            ));
        }
        if self.records_added > self.record_count {
            return Err(invalid(
                "records_added",
                RECORDS_ADDED_AT,
                format!(
                    "{} exceeds the record count {}",
                    self.records_added, self.record_count
                ),
            ));
        }
        if self.provenance_added > self.provenance_count || self.provenance_added == 0 {
            return Err(invalid(
                "provenance_added",
                PROVENANCE_ADDED_AT,
                format!(
                    "{} (of {}): every commit adds at least one provenance entry",
                    self.provenance_added, self.provenance_count
                ),
            ));
        }
        if self.provenance_added > self.provenance_len / super::provenance::MIN_ENTRY_LEN as u64 {
            return Err(invalid(
                "provenance_added",
                PROVENANCE_ADDED_AT,
                format!(
                    "{} entries cannot fit in the {}-byte provenance part",
                    self.provenance_added, self.provenance_len
                ),
            ));
        }
        if self.seq == 0
            && (self.previous_commit != [0u8; 32]
                || self.previous_segment_offset != 0
                || self.record_count != 0)
        {
            return Err(invalid(
                "seq",
                SEQ_AT,
                "commit 0 (the creation) has no predecessor and no records".into(),
            ));
        }
        if self.seq > 0 && self.previous_segment_offset >= self.records_start {
            return Err(invalid(
                "previous_segment_offset",
                PREVIOUS_SEGMENT_AT,
                format!(
                    "{} does not precede this commit's records at {}",
                    self.previous_segment_offset, self.records_start
                ),
            ));
        }
        match &self.newest_run {
            Some(run)
                if self.run_len > 0
                    && (run.seq != self.seq
                        || run.segment_offset != self.segment_offset
                        || run.part_offset != self.run_at()
                        || run_part_len(run.entry_count) != self.run_len) =>
            {
                return Err(invalid(
                    "newest_run",
                    NEWEST_RUN_AT,
                    format!(
                        "does not describe the {}-byte run this segment holds at {}",
                        self.run_len,
                        self.run_at()
                    ),
                ));
            }
            Some(_) if self.run_len > 0 => {}
            Some(run) if run.seq >= self.seq || run.segment_offset >= self.segment_offset => {
                return Err(invalid(
                    "newest_run",
                    NEWEST_RUN_AT,
                    format!(
                        "names commit {} but this segment holds no run and is commit {}",
                        run.seq, self.seq
                    ),
                ));
            }
            Some(_) => {}
            None if self.run_len > 0 => {
                return Err(invalid(
                    "run_len",
                    RUN_LEN_AT,
                    "the segment holds a run but names none".into(),
                ));
            }
            None => {}
        }
        if let Some(run) = &self.newest_run
            && run.entry_count > self.record_count
        {
            return Err(invalid(
                "newest_run",
                NEWEST_RUN_AT,
                format!(
                    "holds {} entries but the artifact has {} records",
                    run.entry_count, self.record_count
                ),
            ));
        }
        if self.newest_run.is_none() && self.record_count > 0 {
            return Err(invalid(
                "newest_run",
                NEWEST_RUN_AT,
                format!(
                    "the artifact has {} records but no index run",
                    self.record_count
                ),
            ));
        }
        Ok(())
    }
}

/// The head of a segment: its header (and exact bytes), the commit signature and the Merkle
/// frontier. This is what opening an artifact reads and checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentHead {
    /// The decoded segment header.
    pub header: SegmentHeader,
    /// The header's exact bytes (what the commit digest covers).
    pub header_bytes: [u8; SEGMENT_HEADER_LEN],
    /// The commit signature over the commit digest.
    pub signature: [u8; SIGNATURE_LEN],
    /// The decoded Merkle frontier.
    pub frontier: Frontier,
    /// The frontier's exact bytes (what the commit digest covers).
    pub frontier_bytes: Vec<u8>,
}

impl SegmentHead {
    /// Decodes the head from the first bytes of a segment (`bytes` may run past the head;
    /// the rest is ignored). Checks that the frontier gives the header's Merkle root.
    pub fn decode_prefix(bytes: &[u8]) -> Result<Self, FormatError> {
        let header_bytes: [u8; SEGMENT_HEADER_LEN] = bytes
            .get(..SEGMENT_HEADER_LEN)
            .and_then(|b| b.try_into().ok())
            .ok_or(FormatError::Truncated {
                structure: "segment",
                field: "header",
                offset: 0,
                needed: SEGMENT_HEADER_LEN as u64,
                available: bytes.len() as u64,
            })?;
        let header = SegmentHeader::decode(&header_bytes)?;
        let mut r = Reader::new(bytes, "segment");
        r.take(SEGMENT_HEADER_LEN as u64, "header")?;
        let signature = r.array("commit_signature")?;
        let frontier_bytes = r.take(header.frontier_len(), "frontier")?.to_vec();
        let frontier = Frontier::decode(header.record_count, &frontier_bytes)
            .map_err(|e| e.at(FRONTIER_AT as u64))?;
        if frontier.root() != header.merkle_root {
            return Err(FormatError::InvalidField {
                structure: "segment header",
                field: "merkle_root",
                offset: ROOT_AT,
                reason: "differs from the root of the frontier that follows the header".into(),
            });
        }
        Ok(Self {
            header,
            header_bytes,
            signature,
            frontier,
            frontier_bytes,
        })
    }

    /// The digest the commit signature covers.
    pub fn commit_digest(&self) -> Digest {
        commit_digest(&self.header_bytes, &self.frontier_bytes)
    }
}

/// A segment built in one buffer: room for the header, the signature and the frontier,
/// then the index run and the provenance entries appended in place, then the front filled
/// in once the header (which names the run's head digest and every length) is signed. A
/// merge commit's run can be megabytes; it is written once, where it stays.
#[derive(Debug)]
pub(crate) struct SegmentBuffer {
    bytes: Vec<u8>,
    run_at: usize,
}

impl SegmentBuffer {
    /// Room for the front of a segment whose frontier covers `record_count` leaves, and
    /// for `body_capacity` bytes of run and provenance entries after it.
    pub(crate) fn new(record_count: u64, body_capacity: usize) -> Self {
        let run_at = FRONTIER_AT + Frontier::encoded_len(record_count) as usize;
        let mut bytes = Vec::with_capacity(run_at + body_capacity);
        bytes.resize(run_at, 0);
        Self { bytes, run_at }
    }

    /// Where the run part starts, from the segment's first byte.
    pub(crate) fn run_at(&self) -> u64 {
        self.run_at as u64
    }

    /// The body: the run part, then the provenance part, are appended to it.
    pub(crate) fn body(&mut self) -> &mut Vec<u8> {
        &mut self.bytes
    }

    /// Bytes appended to the body so far.
    pub(crate) fn body_len(&self) -> u64 {
        (self.bytes.len() - self.run_at) as u64
    }

    /// Writes the header, signature and frontier in front of the body: the whole segment.
    pub(crate) fn finish(
        mut self,
        header: &SegmentHeader,
        signature: &[u8; SIGNATURE_LEN],
        frontier: &Frontier,
    ) -> Result<Vec<u8>, FormatError> {
        let frontier_bytes = frontier.to_bytes();
        if FRONTIER_AT + frontier_bytes.len() != self.run_at
            || header.segment_len != self.bytes.len() as u64
        {
            return Err(FormatError::InvalidField {
                structure: "segment header",
                field: "segment_len",
                offset: 0,
                reason: format!(
                    "{} bytes with a frontier of {} hashes, but the segment built holds {} \
                     with room for {}",
                    header.segment_len,
                    frontier_bytes.len() / 32,
                    self.bytes.len(),
                    (self.run_at - FRONTIER_AT) / 32
                ),
            });
        }
        self.bytes[..SIGNATURE_AT].copy_from_slice(&header.to_array());
        self.bytes[SIGNATURE_AT..FRONTIER_AT].copy_from_slice(signature);
        self.bytes[FRONTIER_AT..self.run_at].copy_from_slice(&frontier_bytes);
        Ok(self.bytes)
    }
}
