//! The index entry: where a record is and what it is, 80 bytes. Index runs hold them.

use super::FormatError;
use super::codec::{Codec, FixedCodec, Reader, Writer};
use super::digest::Digest;
use super::fourcc::FourCC;

/// Encoded size of one entry.
pub(crate) const INDEX_ENTRY_LEN: usize = 80;

/// Where a record is and what it is, so readers can list and find blocks without reading
/// them. Every field repeats the record's own header, and full verification checks that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// Offset of the record in the single-file image.
    pub offset: u64,
    /// Length of the whole record in bytes (header, metadata, data and signature).
    pub record_len: u64,
    /// The record's block id (a UUID).
    pub block_id: [u8; 16],
    /// The record's block type code.
    pub block_type: FourCC,
    /// Length of the record's metadata in bytes.
    pub metadata_len: u32,
    /// The record's timestamp, microseconds since the Unix epoch.
    pub timestamp_us: u64,
    /// Full record digest (the header carries only 8 bytes of the previous one).
    pub digest: Digest,
}

impl Codec for IndexEntry {
    const STRUCTURE: &'static str = "index entry";

    fn encode(&self, out: &mut impl Writer) {
        out.put_u64(self.offset);
        out.put_u64(self.record_len);
        out.put_bytes(&self.block_id);
        out.put_bytes(&self.block_type.0);
        out.put_u32(self.metadata_len);
        out.put_u64(self.timestamp_us);
        out.put_bytes(&self.digest);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, FormatError> {
        Ok(Self {
            offset: r.u64("offset")?,
            record_len: r.u64("record_len")?,
            block_id: r.array("block_id")?,
            block_type: FourCC(r.array("block_type")?),
            metadata_len: r.u32("metadata_len")?,
            timestamp_us: r.u64("timestamp")?,
            digest: r.array("digest")?,
        })
    }
}

impl FixedCodec<INDEX_ENTRY_LEN> for IndexEntry {}

impl IndexEntry {
    /// Offset one past the record's last byte.
    pub fn end(&self) -> Option<u64> {
        self.offset.checked_add(self.record_len)
    }
}
