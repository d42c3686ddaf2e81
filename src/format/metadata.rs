//! The metadata section: `u32` length, then a UTF-8 JSON object of at most 64 KiB.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::FormatError;
use super::codec::{Reader, Writer, len_u32};

/// Largest metadata JSON the format allows, in bytes.
pub const MAX_METADATA_LEN: u32 = 64 * 1024;
/// Signature algorithm named in the metadata section.
pub(crate) const SIGNATURE_ALGORITHM: &str = "ed25519";
/// Offset of the length prefix, and of the JSON that follows it.
const LENGTH_AT: u64 = 0;
const JSON_AT: u64 = LENGTH_AT + 4;

/// The metadata section as stored: the exact JSON bytes (never re-serialised once written,
/// because they are covered by the chain seed and the commit signature).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataSection {
    /// The exact JSON bytes, never re-serialised.
    pub json: Vec<u8>,
}

/// The fields a canonical writer puts in the metadata JSON. Unknown fields written by a newer
/// writer are kept in `extra` and ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactMetadata {
    /// The format version, `"3.1"` for artifacts this build writes.
    pub format_version: String,
    /// Who or what created the artifact (free text chosen by the creator).
    pub agent_id: String,
    /// RFC 3339 creation time, for humans; the file header's `created` is authoritative.
    pub created_at: String,
    /// The MIME type of the artifact's content, if the creator named one (empty otherwise).
    #[serde(default)]
    pub content_type: String,
    /// The version of the creator's schema for the content, if any (empty otherwise).
    #[serde(default)]
    pub schema_version: String,
    /// Free string pairs chosen by the creator.
    #[serde(default)]
    pub custom: BTreeMap<String, String>,
    /// The signature algorithm: `"Ed25519"`, the only one this build accepts.
    pub signature_algorithm: String,
    /// Hex of the 32-byte Ed25519 public key every signature in the artifact verifies under.
    pub public_key: String,
    /// Fields this build does not know, kept as they were read.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl MetadataSection {
    /// Serialises `metadata` once; these bytes are then kept verbatim forever.
    pub(crate) fn from_metadata(metadata: &ArtifactMetadata) -> Result<Self, FormatError> {
        let json = serde_json::to_vec(metadata).map_err(|e| FormatError::InvalidField {
            structure: "metadata section",
            field: "json",
            offset: JSON_AT,
            reason: e.to_string(),
        })?;
        let section = Self { json };
        section.check_len()?;
        Ok(section)
    }

    fn check_len(&self) -> Result<u32, FormatError> {
        let len = len_u32(self.json.len(), "metadata section", "length")?;
        if len > MAX_METADATA_LEN {
            return Err(FormatError::InvalidField {
                structure: "metadata section",
                field: "length",
                offset: LENGTH_AT,
                reason: format!("{len} bytes exceeds the {MAX_METADATA_LEN}-byte limit"),
            });
        }
        Ok(len)
    }

    /// Encoded length: 4-byte prefix plus JSON.
    pub fn encoded_len(&self) -> usize {
        JSON_AT as usize + self.json.len()
    }

    /// Appends the section: a `u32` length and the JSON.
    ///
    /// # Errors
    ///
    /// [`FormatError::InvalidField`] if the JSON exceeds [`MAX_METADATA_LEN`].
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), FormatError> {
        let len = self.check_len()?;
        out.put_u32(len);
        out.put_bytes(&self.json);
        Ok(())
    }

    /// The encoded section (see [`Self::encode`] for its one error).
    pub fn to_bytes(&self) -> Result<Vec<u8>, FormatError> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode(&mut out)?;
        Ok(out)
    }

    /// Reads the length prefix at the start of `bytes` and returns the section's total length
    /// (so a caller holding a file prefix knows where the records begin).
    pub fn peek_len(bytes: &[u8]) -> Result<usize, FormatError> {
        let mut r = Reader::new(bytes, "metadata section");
        let len = r.u32("length")?;
        if len > MAX_METADATA_LEN {
            return Err(r.invalid(
                "length",
                format!("{len} bytes exceeds the {MAX_METADATA_LEN}-byte limit"),
            ));
        }
        Ok(JSON_AT as usize + len as usize)
    }

    /// Decodes exactly one section and checks the JSON is an object.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let total = Self::peek_len(bytes)?;
        let mut r = Reader::new(bytes, "metadata section");
        r.take(JSON_AT, "length")?;
        let json = r.take(total as u64 - JSON_AT, "json")?;
        r.finish()?;
        match serde_json::from_slice::<serde_json::Value>(json) {
            Ok(serde_json::Value::Object(_)) => {}
            Ok(_) => {
                return Err(FormatError::InvalidField {
                    structure: "metadata section",
                    field: "json",
                    offset: JSON_AT,
                    reason: "not a JSON object".into(),
                });
            }
            Err(e) => {
                return Err(FormatError::InvalidField {
                    structure: "metadata section",
                    field: "json",
                    offset: JSON_AT,
                    reason: format!("invalid JSON: {e}"),
                });
            }
        }
        Ok(Self {
            json: json.to_vec(),
        })
    }

    /// The typed view of the JSON.
    pub(crate) fn metadata(&self) -> Result<ArtifactMetadata, FormatError> {
        serde_json::from_slice(&self.json).map_err(|e| FormatError::InvalidField {
            structure: "metadata section",
            field: "json",
            offset: JSON_AT,
            reason: format!("not canonical artifact metadata: {e}"),
        })
    }

    /// The 32-byte public key named in the metadata.
    pub(crate) fn public_key(&self) -> Result<[u8; 32], FormatError> {
        let metadata = self.metadata()?;
        let invalid = |reason: String| FormatError::InvalidField {
            structure: "metadata section",
            field: "public_key",
            offset: JSON_AT,
            reason,
        };
        if metadata.signature_algorithm != SIGNATURE_ALGORITHM {
            return Err(invalid(format!(
                "signature algorithm {:?} is not supported (expected {SIGNATURE_ALGORITHM:?})",
                metadata.signature_algorithm
            )));
        }
        let bytes =
            hex::decode(&metadata.public_key).map_err(|e| invalid(format!("not hex: {e}")))?;
        <[u8; 32]>::try_from(bytes.as_slice())
            .map_err(|_| invalid(format!("{} bytes, expected 32", bytes.len())))
    }
}
