//! The provenance section: a hash-chained list of signed entries.

use super::FormatError;
use super::block::SIGNATURE_LEN;
use super::codec::{Reader, Writer, len_u32};
use super::digest::{Digest, provenance_digest};

/// Magic at the start of the provenance section.
pub const PROVENANCE_MAGIC: [u8; 8] = *b"MAIFPROV";
/// Encoded size of an entry header.
pub const ENTRY_HEADER_LEN: usize = 80;
/// Largest details JSON of one entry.
pub const MAX_DETAILS_LEN: u32 = 1024 * 1024;
/// Smallest encoded entry (header and signature, empty details).
pub const MIN_ENTRY_LEN: usize = ENTRY_HEADER_LEN + SIGNATURE_LEN;

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
            Action::Unknown(code) => format!("unknown({code})"),
        }
    }
}

/// One provenance entry:
/// `header (80) | details JSON (details_len) | signature (64)`.
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
    /// UTF-8 JSON object: agent, block id, source, counts...
    pub details: Vec<u8>,
    pub signature: [u8; SIGNATURE_LEN],
}

impl ProvenanceEntry {
    /// The 80 header bytes (part of the digest).
    pub fn header_bytes(&self) -> Result<Vec<u8>, FormatError> {
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
        Ok(out)
    }

    /// The entry digest (header and details; not the signature).
    pub fn digest(&self) -> Result<Digest, FormatError> {
        Ok(provenance_digest(&self.header_bytes()?, &self.details))
    }

    pub fn encoded_len(&self) -> usize {
        ENTRY_HEADER_LEN + self.details.len() + SIGNATURE_LEN
    }

    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), FormatError> {
        out.put_bytes(&self.header_bytes()?);
        out.put_bytes(&self.details);
        out.put_bytes(&self.signature);
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
        let signature = r.array("signature")?;
        Ok(Self {
            action,
            flags,
            timestamp_us,
            previous,
            subject,
            details,
            signature,
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

/// The provenance section: `magic (8) | entry count (u64) | entries`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProvenanceSection {
    pub entries: Vec<ProvenanceEntry>,
}

impl ProvenanceSection {
    pub const PREFIX_LEN: usize = 16;

    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), FormatError> {
        out.put_bytes(&PROVENANCE_MAGIC);
        out.put_u64(self.entries.len() as u64);
        for entry in &self.entries {
            entry.encode(out)?;
        }
        Ok(())
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>, FormatError> {
        let mut out = Vec::with_capacity(
            Self::PREFIX_LEN
                + self
                    .entries
                    .iter()
                    .map(ProvenanceEntry::encoded_len)
                    .sum::<usize>(),
        );
        self.encode(&mut out)?;
        Ok(out)
    }

    /// Decodes exactly one section.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let mut r = Reader::new(bytes, "provenance section");
        let section = Self::read(&mut r)?;
        r.finish()?;
        Ok(section)
    }

    /// Reads one section from the cursor (used by the forward scan, which does not know the
    /// section's length in advance).
    pub fn read(r: &mut Reader<'_>) -> Result<Self, FormatError> {
        r.magic(&PROVENANCE_MAGIC, "magic")?;
        let count = r.u64("entry_count")?;
        // Each entry takes at least MIN_ENTRY_LEN bytes: reject counts the input cannot hold
        // before reserving anything.
        if count > (r.remaining() / MIN_ENTRY_LEN) as u64 {
            return Err(r.invalid(
                "entry_count",
                8,
                format!(
                    "{count} entries cannot fit in the {} bytes that remain",
                    r.remaining()
                ),
            ));
        }
        let mut entries = Vec::with_capacity(count as usize);
        for _ in 0..count {
            entries.push(ProvenanceEntry::read(r)?);
        }
        Ok(Self { entries })
    }

    /// Digest of the last entry, or zero if there is none.
    pub fn head(&self) -> Result<Digest, FormatError> {
        self.entries
            .last()
            .map_or(Ok([0u8; 32]), ProvenanceEntry::digest)
    }
}
