//! The index object of the object-store layout: one JSON document per committed generation.
//!
//! It carries the exact bytes of everything in a single file that is not a record (file
//! header, metadata section, provenance section, index section, trailer), base64-encoded, so
//! the single file can be rebuilt byte for byte from it and the record objects. A few fields
//! repeat values for people and tools reading the JSON; decoding checks they agree with the
//! bytes.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use super::{FormatError, Trailer};

/// The layout version this build writes and reads.
pub const OBJECT_LAYOUT_VERSION: u32 = 1;

/// The index object's JSON, field by field (see `docs/OBJECT-LAYOUT.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct IndexDocument {
    maif_object_layout: u32,
    generation: u64,
    record_count: u64,
    merkle_root: String,
    file_header: String,
    metadata_section: String,
    provenance_section: String,
    index_section: String,
    trailer: String,
}

/// A decoded index object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexObject {
    /// Commit number: 1 for the creation, +1 per commit.
    pub generation: u64,
    pub file_header: Vec<u8>,
    pub metadata_section: Vec<u8>,
    pub provenance_section: Vec<u8>,
    pub index_section: Vec<u8>,
    pub trailer: Vec<u8>,
}

fn invalid(field: &'static str, reason: String) -> FormatError {
    FormatError::InvalidField {
        structure: "index object",
        field,
        offset: 0,
        reason,
    }
}

impl IndexObject {
    pub fn to_bytes(&self) -> Result<Vec<u8>, FormatError> {
        let trailer = Trailer::decode(&self.trailer)?;
        let document = IndexDocument {
            maif_object_layout: OBJECT_LAYOUT_VERSION,
            generation: self.generation,
            record_count: trailer.record_count,
            merkle_root: hex::encode(trailer.merkle_root),
            file_header: STANDARD.encode(&self.file_header),
            metadata_section: STANDARD.encode(&self.metadata_section),
            provenance_section: STANDARD.encode(&self.provenance_section),
            index_section: STANDARD.encode(&self.index_section),
            trailer: STANDARD.encode(&self.trailer),
        };
        serde_json::to_vec_pretty(&document).map_err(|e| invalid("json", e.to_string()))
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let document: IndexDocument = serde_json::from_slice(bytes)
            .map_err(|e| invalid("json", format!("not a valid index object: {e}")))?;
        if document.maif_object_layout != OBJECT_LAYOUT_VERSION {
            return Err(invalid(
                "maif_object_layout",
                format!(
                    "layout version {} is not supported (this build reads {OBJECT_LAYOUT_VERSION})",
                    document.maif_object_layout
                ),
            ));
        }
        let decode = |field: &'static str, text: &str| {
            STANDARD
                .decode(text)
                .map_err(|e| invalid(field, format!("not base64: {e}")))
        };
        let object = IndexObject {
            generation: document.generation,
            file_header: decode("file_header", &document.file_header)?,
            metadata_section: decode("metadata_section", &document.metadata_section)?,
            provenance_section: decode("provenance_section", &document.provenance_section)?,
            index_section: decode("index_section", &document.index_section)?,
            trailer: decode("trailer", &document.trailer)?,
        };
        let trailer = Trailer::decode(&object.trailer)?;
        if trailer.record_count != document.record_count {
            return Err(invalid(
                "record_count",
                format!(
                    "{} but the trailer counts {}",
                    document.record_count, trailer.record_count
                ),
            ));
        }
        if hex::encode(trailer.merkle_root) != document.merkle_root {
            return Err(invalid(
                "merkle_root",
                "differs from the trailer's Merkle root".into(),
            ));
        }
        Ok(object)
    }
}

/// Name of the index object of `generation` (zero-padded so names sort by generation).
pub fn index_object_name(generation: u64) -> String {
    format!("{generation:020}.json")
}

/// Parses an index object name back to its generation.
pub fn parse_index_object_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".json")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// Name of a record object: the hex of its digest.
pub fn record_object_name(digest: &super::Digest) -> String {
    hex::encode(digest)
}
