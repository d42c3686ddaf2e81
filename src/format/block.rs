//! The block record: `header (64) | metadata JSON | data | signature (64)`.
//!
//! A record is relocatable: nothing in it depends on where it is stored, so the same bytes
//! are valid inside a single file and as an object in a bucket.

use super::FormatError;
use super::codec::{Codec, FixedCodec, Reader, Writer, wire_code};
use super::compression::Compression;
use super::digest::{Digest, content_digest, record_digest};
use super::fourcc::FourCC;

/// Encoded size of a block header.
pub const BLOCK_HEADER_LEN: usize = 64;
/// Size of the Ed25519 signature that ends every record.
pub const SIGNATURE_LEN: usize = 64;
/// Largest block metadata JSON, in bytes.
pub(crate) const MAX_BLOCK_METADATA_LEN: u32 = 16 * 1024 * 1024;

wire_code! {
    /// Encryption code of a block's data. Only "none" is defined; a reader refuses any other
    /// (FORMAT.md 4.4), but the code is kept and shown as stored.
    pub struct Encryption(pub u8) {
        /// Data stored in the clear.
        NONE = 0 => "none",
    }
}

/// The fixed 64-byte header at the start of every record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockHeader {
    /// Logical block id (a UUID). All versions of a block share it.
    pub block_id: [u8; 16],
    /// The block type code (unknown codes are kept and listed).
    pub block_type: FourCC,
    /// Reserved; writers store 0, readers ignore unknown bits.
    pub flags: u16,
    /// Compression code of `data` (none or zstd).
    pub compression: Compression,
    /// Encryption code of `data` (none; nothing else is defined yet).
    pub encryption: Encryption,
    /// Length of the block metadata JSON that follows the header.
    pub metadata_len: u32,
    /// Offset of the data from the start of the record; always `64 + metadata_len`.
    pub data_offset: u32,
    /// Length of the stored (possibly compressed) data.
    pub data_size: u64,
    /// Length of the data once decompressed; equals `data_size` when uncompressed.
    pub uncompressed_size: u64,
    /// Microseconds since the Unix epoch.
    pub timestamp_us: u64,
    /// First 8 bytes of the previous record's digest (of the chain seed for the first record).
    pub prev_link: [u8; 8],
}

// Field offsets within the header, each derived from the one before it.
const BLOCK_TYPE_AT: usize = 16;
const FLAGS_AT: usize = BLOCK_TYPE_AT + 4;
const COMPRESSION_AT: usize = FLAGS_AT + 2;
const ENCRYPTION_AT: usize = COMPRESSION_AT + 1;
const METADATA_LEN_AT: usize = ENCRYPTION_AT + 1;
const DATA_OFFSET_AT: usize = METADATA_LEN_AT + 4;
const DATA_SIZE_AT: usize = DATA_OFFSET_AT + 4;
const UNCOMPRESSED_SIZE_AT: usize = DATA_SIZE_AT + 8;
const TIMESTAMP_AT: usize = UNCOMPRESSED_SIZE_AT + 8;
const PREV_LINK_AT: usize = TIMESTAMP_AT + 8;
const _: () = assert!(PREV_LINK_AT + 8 == BLOCK_HEADER_LEN);

impl Codec for BlockHeader {
    const STRUCTURE: &'static str = "block header";

    fn encode(&self, out: &mut impl Writer) {
        out.put_bytes(&self.block_id);
        out.put_bytes(&self.block_type.0);
        out.put_u16(self.flags);
        out.put_u8(self.compression.0);
        out.put_u8(self.encryption.0);
        out.put_u32(self.metadata_len);
        out.put_u32(self.data_offset);
        out.put_u64(self.data_size);
        out.put_u64(self.uncompressed_size);
        out.put_u64(self.timestamp_us);
        out.put_bytes(&self.prev_link);
    }

    /// Reads the 64 bytes and checks the fields agree with each other.
    fn read(r: &mut Reader<'_>) -> Result<Self, FormatError> {
        let start = r.position();
        let header = BlockHeader {
            block_id: r.array("block_id")?,
            block_type: FourCC(r.array("block_type")?),
            flags: r.u16("flags")?,
            compression: Compression(r.u8("compression")?),
            encryption: Encryption(r.u8("encryption")?),
            metadata_len: r.u32("metadata_len")?,
            data_offset: r.u32("data_offset")?,
            data_size: r.u64("data_size")?,
            uncompressed_size: r.u64("uncompressed_size")?,
            timestamp_us: r.u64("timestamp")?,
            prev_link: r.array("prev_link")?,
        };
        let invalid =
            |field, at: usize, reason: String| r.invalid_at(field, start + at as u64, reason);
        if header.metadata_len > MAX_BLOCK_METADATA_LEN {
            return Err(invalid(
                "metadata_len",
                METADATA_LEN_AT,
                format!(
                    "{} exceeds the {MAX_BLOCK_METADATA_LEN}-byte limit",
                    header.metadata_len
                ),
            ));
        }
        if u64::from(header.data_offset) != prefix_len(header.metadata_len) {
            return Err(invalid(
                "data_offset",
                DATA_OFFSET_AT,
                format!(
                    "{} but 64 + metadata_len is {}",
                    header.data_offset,
                    prefix_len(header.metadata_len)
                ),
            ));
        }
        if header.compression == Compression::NONE && header.uncompressed_size != header.data_size {
            return Err(invalid(
                "uncompressed_size",
                UNCOMPRESSED_SIZE_AT,
                format!(
                    "{} differs from data_size {} on an uncompressed block",
                    header.uncompressed_size, header.data_size
                ),
            ));
        }
        Ok(header)
    }
}

impl FixedCodec<BLOCK_HEADER_LEN> for BlockHeader {}

impl BlockHeader {
    /// Total record length this header announces, or an error if it overflows.
    pub fn record_len(&self) -> Result<u64, FormatError> {
        (BLOCK_HEADER_LEN as u64 + SIGNATURE_LEN as u64)
            .checked_add(u64::from(self.metadata_len))
            .and_then(|n| n.checked_add(self.data_size))
            .ok_or_else(|| FormatError::InvalidField {
                structure: "block header",
                field: "data_size",
                offset: DATA_SIZE_AT as u64,
                reason: format!("{} overflows the record length", self.data_size),
            })
    }
}

/// A decoded record borrowing the bytes it was decoded from.
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    /// The decoded record header.
    pub header: BlockHeader,
    /// The exact 64 header bytes (what the digest covers, not a re-encoding).
    pub header_bytes: &'a [u8],
    /// The exact block metadata bytes (empty, or a JSON object).
    pub metadata: &'a [u8],
    /// The stored data bytes (compressed when the header says so).
    pub data: &'a [u8],
    /// The record's Ed25519 signature.
    pub signature: &'a [u8; SIGNATURE_LEN],
}

impl<'a> RecordView<'a> {
    /// Decodes exactly one record; rejects short and trailing input.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, FormatError> {
        let mut r = Reader::new(bytes, "block record");
        let header_bytes = r.take(BLOCK_HEADER_LEN as u64, "header")?;
        let header = BlockHeader::decode(header_bytes)?;
        let metadata = r.take(u64::from(header.metadata_len), "metadata")?;
        let data = r.take(header.data_size, "data")?;
        let signature: &[u8; SIGNATURE_LEN] = r
            .take(SIGNATURE_LEN as u64, "signature")?
            .try_into()
            .map_err(|_| r.invalid("signature", "wrong length"))?;
        r.finish()?;
        Ok(Self {
            header,
            header_bytes,
            metadata,
            data,
            signature,
        })
    }

    /// Where the metadata lies within the record's bytes.
    pub(crate) fn metadata_range(&self) -> std::ops::Range<usize> {
        BLOCK_HEADER_LEN..BLOCK_HEADER_LEN + self.metadata.len()
    }

    /// Where the stored data lies within the record's bytes.
    pub(crate) fn data_range(&self) -> std::ops::Range<usize> {
        let start = BLOCK_HEADER_LEN + self.metadata.len();
        start..start + self.data.len()
    }

    /// The content digest (metadata and data).
    pub fn content_digest(&self) -> Digest {
        content_digest(self.metadata, self.data)
    }

    /// The record digest (header and content digest; not the signature).
    pub fn digest(&self) -> Digest {
        record_digest(self.header_bytes, &self.content_digest())
    }

    /// Parses the metadata JSON; empty metadata is an empty object.
    pub(crate) fn metadata_json(
        &self,
    ) -> Result<serde_json::Map<String, serde_json::Value>, FormatError> {
        parse_block_metadata(self.metadata)
    }
}

/// Length of a record's header and metadata, the prefix that lists a block without its data.
pub(crate) fn prefix_len(metadata_len: u32) -> u64 {
    BLOCK_HEADER_LEN as u64 + u64::from(metadata_len)
}

/// Decodes exactly a record's prefix: the header, then the metadata it announces.
pub(crate) fn decode_prefix(bytes: &[u8]) -> Result<(BlockHeader, &[u8]), FormatError> {
    let mut r = Reader::new(bytes, "block record prefix");
    let header = BlockHeader::decode(r.take(BLOCK_HEADER_LEN as u64, "header")?)?;
    let metadata = r.take(u64::from(header.metadata_len), "metadata")?;
    r.finish()?;
    Ok((header, metadata))
}

/// Parses block metadata bytes: empty, or a JSON object.
pub(crate) fn parse_block_metadata(
    bytes: &[u8],
) -> Result<serde_json::Map<String, serde_json::Value>, FormatError> {
    if bytes.is_empty() {
        return Ok(serde_json::Map::new());
    }
    let invalid = |reason: String| FormatError::InvalidField {
        structure: "block record",
        field: "metadata",
        offset: BLOCK_HEADER_LEN as u64,
        reason,
    };
    match serde_json::from_slice(bytes) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err(invalid("not a JSON object".into())),
        Err(e) => Err(invalid(format!("invalid JSON: {e}"))),
    }
}

/// Encodes a full record from its parts.
pub fn encode_record(
    header: &BlockHeader,
    metadata: &[u8],
    data: &[u8],
    signature: &[u8; SIGNATURE_LEN],
) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(BLOCK_HEADER_LEN + metadata.len() + data.len() + SIGNATURE_LEN);
    header.encode(&mut out);
    out.put_bytes(metadata);
    out.put_bytes(data);
    out.put_bytes(signature);
    out
}
