//! The block index: one fixed-size entry per record, in record order.

use super::FormatError;
use super::codec::{Reader, Writer};
use super::digest::Digest;
use super::fourcc::FourCC;

/// Magic at the start of the index section.
pub const INDEX_MAGIC: [u8; 8] = *b"MAIFINDX";
/// Encoded size of one entry.
pub const INDEX_ENTRY_LEN: usize = 80;

/// Where a record is and what it is, so readers can list and find blocks without reading
/// them. Every field repeats the record's own header, and full verification checks that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// Offset of the record in the single-file image.
    pub offset: u64,
    pub record_len: u64,
    pub block_id: [u8; 16],
    pub block_type: FourCC,
    pub metadata_len: u32,
    pub timestamp_us: u64,
    /// Full record digest (the header carries only 8 bytes of the previous one).
    pub digest: Digest,
}

impl IndexEntry {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.put_u64(self.offset);
        out.put_u64(self.record_len);
        out.put_bytes(&self.block_id);
        out.put_bytes(&self.block_type.0);
        out.put_u32(self.metadata_len);
        out.put_u64(self.timestamp_us);
        out.put_bytes(&self.digest);
    }

    pub fn read(r: &mut Reader<'_>) -> Result<Self, FormatError> {
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

    /// Offset one past the record's last byte.
    pub fn end(&self) -> Option<u64> {
        self.offset.checked_add(self.record_len)
    }
}

/// The index section: `magic (8) | entry count (u64) | entries (80 bytes each)`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IndexSection {
    pub entries: Vec<IndexEntry>,
}

impl IndexSection {
    pub const PREFIX_LEN: usize = 16;

    pub fn encoded_len(count: usize) -> usize {
        Self::PREFIX_LEN + count * INDEX_ENTRY_LEN
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.put_bytes(&INDEX_MAGIC);
        out.put_u64(self.entries.len() as u64);
        for entry in &self.entries {
            entry.encode(out);
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::encoded_len(self.entries.len()));
        self.encode(&mut out);
        out
    }

    /// Decodes exactly one section.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let mut r = Reader::new(bytes, "index section");
        let section = Self::read(&mut r)?;
        r.finish()?;
        Ok(section)
    }

    pub fn read(r: &mut Reader<'_>) -> Result<Self, FormatError> {
        r.magic(&INDEX_MAGIC, "magic")?;
        let count = r.u64("entry_count")?;
        if count > (r.remaining() / INDEX_ENTRY_LEN) as u64 {
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
            entries.push(IndexEntry::read(r)?);
        }
        Ok(Self { entries })
    }

    /// The record digests in order (the Merkle leaves).
    pub fn digests(&self) -> Vec<Digest> {
        self.entries.iter().map(|e| e.digest).collect()
    }
}
