//! Provenance entries: a hash chain of events (create, add_block, update, finalize, ...).
//!
//! Entries carry no signature of their own. Each commit's segment holds the entries that
//! commit added, and the commit signature covers the chain's head, so one signature per
//! commit authenticates every entry (FORMAT.md explains the trade-off).

use super::FormatError;
use super::codec::{Reader, Writer, len_u32};
use super::digest::{Digest, provenance_digest};

/// Encoded size of an entry header.
pub const ENTRY_HEADER_LEN: usize = 80;
/// Largest details JSON of one entry.
pub const MAX_DETAILS_LEN: u32 = 1024 * 1024;
/// Smallest encoded entry (a header with empty details).
pub const MIN_ENTRY_LEN: usize = ENTRY_HEADER_LEN;

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
    pub action: Action,
    /// Reserved; writers store 0.
    pub flags: u8,
    pub timestamp_us: u64,
    /// Digest of the previous entry; zero for the first.
    pub previous: Digest,
    /// What the action applies to (see [`Action`]).
    pub subject: Digest,
    /// UTF-8 JSON object: block id, source, counts...
    pub details: Vec<u8>,
}

impl ProvenanceEntry {
    /// The 80 header bytes (part of the digest).
    pub fn header_bytes(&self) -> Result<[u8; ENTRY_HEADER_LEN], FormatError> {
        let details_len = len_u32(self.details.len(), "provenance entry", "details_len")?;
        if details_len > MAX_DETAILS_LEN {
            return Err(FormatError::InvalidField {
                structure: "provenance entry",
                field: "details_len",
                offset: 4,
                reason: format!("{details_len} exceeds the {MAX_DETAILS_LEN}-byte limit"),
            });
        }
        let mut out = Vec::with_capacity(ENTRY_HEADER_LEN);
        out.put_u8(self.action.code());
        out.put_u8(self.flags);
        out.put_u16(0);
        out.put_u32(details_len);
        out.put_u64(self.timestamp_us);
        out.put_bytes(&self.previous);
        out.put_bytes(&self.subject);
        let mut header = [0u8; ENTRY_HEADER_LEN];
        header.copy_from_slice(&out);
        Ok(header)
    }

    /// The entry digest (header and details).
    pub fn digest(&self) -> Result<Digest, FormatError> {
        Ok(provenance_digest(&self.header_bytes()?, &self.details))
    }

    pub fn encoded_len(&self) -> usize {
        ENTRY_HEADER_LEN + self.details.len()
    }

    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), FormatError> {
        out.put_bytes(&self.header_bytes()?);
        out.put_bytes(&self.details);
        Ok(())
    }

    /// Reads one entry from the cursor.
    pub fn read(r: &mut Reader<'_>) -> Result<Self, FormatError> {
        let action = Action::from_code(r.u8("action")?);
        let flags = r.u8("flags")?;
        let reserved = r.u16("reserved")?;
        if reserved != 0 {
            return Err(r.invalid("reserved", 2, format!("must be zero, found {reserved}")));
        }
        let details_len = r.u32("details_len")?;
        if details_len > MAX_DETAILS_LEN {
            return Err(r.invalid(
                "details_len",
                4,
                format!("{details_len} exceeds the {MAX_DETAILS_LEN}-byte limit"),
            ));
        }
        let timestamp_us = r.u64("timestamp")?;
        let previous = r.array("previous")?;
        let subject = r.array("subject")?;
        let details = r.take(u64::from(details_len), "details")?.to_vec();
        Ok(Self {
            action,
            flags,
            timestamp_us,
            previous,
            subject,
            details,
        })
    }

    /// Parses the details JSON.
    pub fn details_json(&self) -> Result<serde_json::Map<String, serde_json::Value>, FormatError> {
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
    let mut r = Reader::new(bytes, "provenance part");
    if count > (bytes.len() / MIN_ENTRY_LEN) as u64 {
        return Err(FormatError::InvalidField {
            structure: "provenance part",
            field: "entry count",
            offset: 0,
            reason: format!("{count} entries cannot fit in {} bytes", bytes.len()),
        });
    }
    let mut entries = Vec::with_capacity(count as usize);
    for _ in 0..count {
        // The cursor spans the whole part, so errors already carry part offsets.
        entries.push(ProvenanceEntry::read(&mut r)?);
    }
    r.finish()?;
    Ok(entries)
}

/// Digest of the last of `entries`, chained from `previous_head` (the head before them).
pub fn chain_head(
    previous_head: Digest,
    entries: &[ProvenanceEntry],
) -> Result<Digest, FormatError> {
    let mut head = previous_head;
    for entry in entries {
        head = entry.digest()?;
    }
    Ok(head)
}
