//! The fixed-size trailer that ends every single file.

use super::FormatError;
use super::block::SIGNATURE_LEN;
use super::codec::{Reader, Writer};
use super::digest::Digest;

/// Magic at the start of the trailer.
pub const TRAILER_MAGIC: [u8; 8] = *b"MAIFTRLR";
/// Encoded size of the trailer.
pub const TRAILER_LEN: usize = 196;
/// Bytes 0..96 of the trailer: the fields the commit digest covers directly.
pub const TRAILER_SIGNED_LEN: usize = 96;
const CRC_OFFSET: usize = 160;
const ROOT_OFFSET: usize = 164;

/// Locates everything after the header and seals the commit.
///
/// The last 32 bytes of a file are the Merkle root, as in MAIF 3.0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailer {
    /// Offset of the first record (`32 + metadata section length`).
    pub records_offset: u64,
    /// Offset of the provenance section, one past the last record.
    pub provenance_offset: u64,
    pub provenance_len: u64,
    pub index_offset: u64,
    pub index_len: u64,
    pub record_count: u64,
    /// When this state was committed, microseconds since the Unix epoch.
    pub committed_us: u64,
    /// Digest of the last provenance entry.
    pub provenance_head: Digest,
    /// Ed25519 signature over the commit digest.
    pub commit_signature: [u8; SIGNATURE_LEN],
    pub merkle_root: Digest,
}

impl Trailer {
    /// Offset of the trailer itself (one past the index).
    pub fn trailer_offset(&self) -> Option<u64> {
        self.index_offset.checked_add(self.index_len)
    }

    /// Length of the whole file this trailer ends.
    pub fn file_len(&self) -> Option<u64> {
        self.trailer_offset()?.checked_add(TRAILER_LEN as u64)
    }

    /// The 96 bytes the commit digest covers.
    pub fn signed_fields(&self) -> [u8; TRAILER_SIGNED_LEN] {
        let mut out = Vec::with_capacity(TRAILER_SIGNED_LEN);
        out.put_bytes(&TRAILER_MAGIC);
        out.put_u64(self.records_offset);
        out.put_u64(self.provenance_offset);
        out.put_u64(self.provenance_len);
        out.put_u64(self.index_offset);
        out.put_u64(self.index_len);
        out.put_u64(self.record_count);
        out.put_u64(self.committed_us);
        out.put_bytes(&self.provenance_head);
        let mut fields = [0u8; TRAILER_SIGNED_LEN];
        fields.copy_from_slice(&out);
        fields
    }

    fn crc(bytes: &[u8; TRAILER_LEN]) -> u32 {
        let crc = crc32c::crc32c(&bytes[..CRC_OFFSET]);
        crc32c::crc32c_append(crc, &bytes[ROOT_OFFSET..])
    }

    pub fn to_bytes(&self) -> [u8; TRAILER_LEN] {
        let mut out = Vec::with_capacity(TRAILER_LEN);
        out.put_bytes(&self.signed_fields());
        out.put_bytes(&self.commit_signature);
        out.put_u32(0);
        out.put_bytes(&self.merkle_root);
        let mut bytes = [0u8; TRAILER_LEN];
        bytes.copy_from_slice(&out);
        let crc = Self::crc(&bytes);
        bytes[CRC_OFFSET..ROOT_OFFSET].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.put_bytes(&self.to_bytes());
    }

    /// Decodes exactly 196 bytes, checking magic and CRC32C before trusting any field.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let mut r = Reader::new(bytes, "trailer");
        r.magic(&TRAILER_MAGIC, "magic")?;
        let fixed: &[u8; TRAILER_LEN] = bytes.try_into().map_err(|_| {
            if bytes.len() < TRAILER_LEN {
                FormatError::Truncated {
                    structure: "trailer",
                    field: "trailer",
                    offset: 0,
                    needed: TRAILER_LEN as u64,
                    available: bytes.len() as u64,
                }
            } else {
                FormatError::TrailingBytes {
                    structure: "trailer",
                    offset: TRAILER_LEN as u64,
                    extra: (bytes.len() - TRAILER_LEN) as u64,
                }
            }
        })?;
        let trailer = Trailer {
            records_offset: r.u64("records_offset")?,
            provenance_offset: r.u64("provenance_offset")?,
            provenance_len: r.u64("provenance_len")?,
            index_offset: r.u64("index_offset")?,
            index_len: r.u64("index_len")?,
            record_count: r.u64("record_count")?,
            committed_us: r.u64("committed")?,
            provenance_head: r.array("provenance_head")?,
            commit_signature: r.array("commit_signature")?,
            merkle_root: {
                let stored_crc = r.u32("crc32c")?;
                let computed = Self::crc(fixed);
                if stored_crc != computed {
                    return Err(r.invalid(
                        "crc32c",
                        4,
                        format!("stored 0x{stored_crc:08x}, computed 0x{computed:08x}: the trailer is damaged or torn"),
                    ));
                }
                r.array("merkle_root")?
            },
        };
        r.finish()?;
        let invalid = |field, offset, reason: &str| FormatError::InvalidField {
            structure: "trailer",
            field,
            offset,
            reason: reason.into(),
        };
        if trailer.provenance_offset < trailer.records_offset {
            return Err(invalid("provenance_offset", 16, "precedes records_offset"));
        }
        if trailer
            .provenance_offset
            .checked_add(trailer.provenance_len)
            != Some(trailer.index_offset)
        {
            return Err(invalid(
                "index_offset",
                32,
                "does not follow the provenance section",
            ));
        }
        if trailer.file_len().is_none() {
            return Err(invalid("index_len", 40, "overflows the file length"));
        }
        Ok(trailer)
    }
}
