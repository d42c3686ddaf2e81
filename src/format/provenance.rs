//! Provenance entries: a hash chain of events (create, add_block, update, finalize, ...).
//!
//! Entries carry no signature of their own. Each commit's segment holds the entries that
//! commit added, and the commit signature covers the chain's head, so one signature per
//! commit authenticates every entry (FORMAT.md explains the trade-off).

use super::FormatError;
use super::codec::{Codec, FixedCodec, Reader, Writer, len_u32, read_counted};
use super::digest::{Digest, provenance_digest};

/// Encoded size of an entry header.
pub(crate) const ENTRY_HEADER_LEN: usize = 80;
/// Largest details JSON of one entry.
pub const MAX_DETAILS_LEN: u32 = 1024 * 1024;
/// Smallest encoded entry (a header with empty details).
pub(crate) const MIN_ENTRY_LEN: usize = ENTRY_HEADER_LEN;
/// Offset of `details_len` within an entry header.
const DETAILS_LEN_AT: u64 = 4;

/// What a provenance entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// The artifact was created. Subject: the chain seed.
    Create,
    /// A new block was appended. Subject: the record digest.
    AddBlock,
    /// A new version of an existing block was appended. Subject: the record digest.
    Update,
    /// The artifact was sealed; writers refuse to append after this. Subject: Merkle root.
    Finalize,
    /// The artifact was copied between locations. Subject: Merkle root.
    Convert,
    /// The artifact was produced by migrating a legacy source. Subject: Merkle root.
    Migrate,
    /// The artifact was rebuilt from the intact prefix of a damaged file. Subject: Merkle root.
    Recover,
    /// Every live index run was merged into one (a full checkpoint). Subject: Merkle root.
    Compact,
    /// A code this build does not know; kept and verified (chain, signature) as is.
    Unknown(u8),
}

impl Action {
    /// The action's one-byte code as stored.
    pub fn code(self) -> u8 {
        match self {
            Action::Create => 1,
            Action::AddBlock => 2,
            Action::Update => 3,
            Action::Finalize => 4,
            Action::Convert => 5,
            Action::Migrate => 6,
            Action::Recover => 7,
            Action::Compact => 8,
            Action::Unknown(code) => code,
        }
    }

    /// The action a stored code names; unknown codes become [`Action::Unknown`].
    pub fn from_code(code: u8) -> Self {
        match code {
            1 => Action::Create,
            2 => Action::AddBlock,
            3 => Action::Update,
            4 => Action::Finalize,
            5 => Action::Convert,
            6 => Action::Migrate,
            7 => Action::Recover,
            8 => Action::Compact,
            other => Action::Unknown(other),
        }
    }

    /// Lowercase name for output (`add_block`, `unknown(9)`, ...).
    pub fn name(self) -> String {
        match self {
            Action::Create => "create".into(),
            Action::AddBlock => "add_block".into(),
            Action::Update => "update".into(),
            Action::Finalize => "finalize".into(),
            Action::Convert => "convert".into(),
            Action::Migrate => "migrate".into(),
            Action::Recover => "recover".into(),
            Action::Compact => "compact".into(),
            Action::Unknown(code) => format!("unknown({code})"),
        }
    }
}

/// One provenance entry: `header (80) | details JSON (details_len)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvenanceEntry {
    /// What happened.
    pub action: Action,
    /// Reserved; writers store 0.
    pub flags: u8,
    /// When, microseconds since the Unix epoch.
    pub timestamp_us: u64,
    /// Digest of the previous entry; zero for the first.
    pub previous: Digest,
    /// What the action applies to (see [`Action`]).
    pub subject: Digest,
    /// UTF-8 JSON object: block id, source, counts...
    pub details: Vec<u8>,
}

/// The fixed 80-byte header of a provenance entry:
/// `action | flags | reserved (2) | details_len | timestamp | previous | subject`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryHeader {
    /// What happened.
    pub action: Action,
    /// Reserved; writers store 0.
    pub flags: u8,
    /// Length of the details JSON that follows (at most [`MAX_DETAILS_LEN`]).
    pub details_len: u32,
    /// When, microseconds since the Unix epoch.
    pub timestamp_us: u64,
    /// Digest of the previous entry; zero for the first.
    pub previous: Digest,
    /// What the action applies to (see [`Action`]).
    pub subject: Digest,
}

impl Codec for EntryHeader {
    const STRUCTURE: &'static str = "provenance entry";

    fn encode(&self, out: &mut impl Writer) {
        out.put_u8(self.action.code());
        out.put_u8(self.flags);
        out.put_u16(0);
        out.put_u32(self.details_len);
        out.put_u64(self.timestamp_us);
        out.put_bytes(&self.previous);
        out.put_bytes(&self.subject);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, FormatError> {
        let action = Action::from_code(r.u8("action")?);
        let flags = r.u8("flags")?;
        let reserved = r.u16("reserved")?;
        if reserved != 0 {
            return Err(r.invalid("reserved", format!("must be zero, found {reserved}")));
        }
        let details_len = r.u32("details_len")?;
        if details_len > MAX_DETAILS_LEN {
            return Err(r.invalid(
                "details_len",
                format!("{details_len} exceeds the {MAX_DETAILS_LEN}-byte limit"),
            ));
        }
        Ok(Self {
            action,
            flags,
            details_len,
            timestamp_us: r.u64("timestamp")?,
            previous: r.array("previous")?,
            subject: r.array("subject")?,
        })
    }
}

impl FixedCodec<ENTRY_HEADER_LEN> for EntryHeader {}

impl ProvenanceEntry {
    /// The entry's header, once its details are checked to fit: the one fallible step of
    /// encoding an entry (its fields are public, so the details length is checked here).
    pub fn header(&self) -> Result<EntryHeader, FormatError> {
        let details_len = len_u32(self.details.len(), "provenance entry", "details_len")?;
        if details_len > MAX_DETAILS_LEN {
            return Err(FormatError::InvalidField {
                structure: "provenance entry",
                field: "details_len",
                offset: DETAILS_LEN_AT,
                reason: format!("{details_len} exceeds the {MAX_DETAILS_LEN}-byte limit"),
            });
        }
        Ok(EntryHeader {
            action: self.action,
            flags: self.flags,
            details_len,
            timestamp_us: self.timestamp_us,
            previous: self.previous,
            subject: self.subject,
        })
    }

    /// The 80 header bytes (part of the digest).
    pub(crate) fn header_bytes(&self) -> Result<[u8; ENTRY_HEADER_LEN], FormatError> {
        Ok(self.header()?.to_array())
    }

    /// The entry digest (header and details).
    pub fn digest(&self) -> Result<Digest, FormatError> {
        Ok(provenance_digest(&self.header_bytes()?, &self.details))
    }

    /// Encoded length in bytes: the 80-byte header plus the details.
    pub fn encoded_len(&self) -> usize {
        ENTRY_HEADER_LEN + self.details.len()
    }

    /// Appends the entry; fails only if its details are too long (see [`Self::header`]).
    pub fn encode(&self, out: &mut impl Writer) -> Result<(), FormatError> {
        self.header()?.encode(out);
        out.put_bytes(&self.details);
        Ok(())
    }

    /// Appends the entry and returns its digest, hashed from the bytes just written (a
    /// writer chains thousands of entries per commit: one header, no second encoding).
    pub fn encode_with_digest(&self, out: &mut Vec<u8>) -> Result<Digest, FormatError> {
        let start = out.len();
        self.encode(out)?;
        let (header, details) = out[start..].split_at(ENTRY_HEADER_LEN);
        Ok(provenance_digest(header, details))
    }

    /// Reads one entry from the cursor.
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, FormatError> {
        let header = EntryHeader::read(r)?;
        let details = r.take(u64::from(header.details_len), "details")?.to_vec();
        Ok(Self {
            action: header.action,
            flags: header.flags,
            timestamp_us: header.timestamp_us,
            previous: header.previous,
            subject: header.subject,
            details,
        })
    }

    /// Parses the details JSON.
    pub(crate) fn details_json(
        &self,
    ) -> Result<serde_json::Map<String, serde_json::Value>, FormatError> {
        match serde_json::from_slice(&self.details) {
            Ok(serde_json::Value::Object(map)) => Ok(map),
            _ => Err(FormatError::InvalidField {
                structure: "provenance entry",
                field: "details",
                offset: ENTRY_HEADER_LEN as u64,
                reason: "not a JSON object".into(),
            }),
        }
    }
}

/// Encodes `entries` back to back (the provenance part of a segment).
pub fn encode_entries(entries: &[ProvenanceEntry]) -> Result<Vec<u8>, FormatError> {
    let mut out = Vec::with_capacity(entries.iter().map(ProvenanceEntry::encoded_len).sum());
    for entry in entries {
        entry.encode(&mut out)?;
    }
    Ok(out)
}

/// Decodes exactly `count` entries from `bytes`, with nothing left over. A count the bytes
/// cannot hold is rejected before anything is reserved.
pub fn decode_entries(bytes: &[u8], count: u64) -> Result<Vec<ProvenanceEntry>, FormatError> {
    // The cursor spans the whole part, so errors already carry part offsets.
    Reader::new(bytes, "provenance part").all(|r| {
        read_counted(
            r,
            count,
            MIN_ENTRY_LEN,
            |remaining| FormatError::InvalidField {
                structure: "provenance part",
                field: "entry count",
                offset: 0,
                reason: format!("{count} entries cannot fit in {remaining} bytes"),
            },
            ProvenanceEntry::read,
        )
    })
}
