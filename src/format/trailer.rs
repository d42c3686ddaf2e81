//! The fixed-size trailer that ends every commit: a locator for the commit's segment.
//!
//! ```text
//! 0          8                 16               24        28                        60
//! +----------+-----------------+----------------+---------+-------------------------+
//! |"MAIFTRLR"| segment_offset  | segment_len    | crc32c  | merkle_root (32)        |
//! +----------+-----------------+----------------+---------+-------------------------+
//! ```
//!
//! The trailer holds nothing that is not in the signed segment it locates: every field is a
//! function of that segment, so anyone can recompute a trailer that was torn or damaged, and
//! a forged trailer can only point at a segment whose own signature then has to hold. Its
//! CRC tells a torn or damaged trailer from a complete one before any field is trusted, and
//! `segment_offset + segment_len` must equal the trailer's own offset, so a trailer copied
//! anywhere else does not count. The last 32 bytes of every committed file are the Merkle
//! root, as in MAIF 3.0.

use super::FormatError;
use super::codec::{Codec, FixedCodec, Reader, Writer};
use super::digest::Digest;

/// Magic at the start of the trailer.
pub const TRAILER_MAGIC: [u8; 8] = *b"MAIFTRLR";
/// Encoded size of the trailer.
pub const TRAILER_LEN: usize = 60;
const SEGMENT_OFFSET_AT: usize = TRAILER_MAGIC.len();
const SEGMENT_LEN_AT: usize = SEGMENT_OFFSET_AT + 8;
const CRC_AT: usize = SEGMENT_LEN_AT + 8;
const ROOT_AT: usize = CRC_AT + 4;
const _: () = assert!(ROOT_AT + 32 == TRAILER_LEN);

/// Where the segment of the commit this trailer ends starts, and how long it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailer {
    /// Offset of the segment in the single-file image.
    pub segment_offset: u64,
    /// Length of the segment (header through its last part; the trailer follows it).
    pub segment_len: u64,
    /// Merkle root after this commit (a copy of the segment header's).
    pub merkle_root: Digest,
}

impl Trailer {
    /// Offset of the trailer itself: one past the segment.
    pub(crate) fn trailer_offset(&self) -> Option<u64> {
        self.segment_offset.checked_add(self.segment_len)
    }

    /// Offset one past the trailer: the length of the image this trailer ends.
    pub(crate) fn end(&self) -> Option<u64> {
        self.trailer_offset()?.checked_add(TRAILER_LEN as u64)
    }

    /// The CRC32C of every byte of the trailer but the CRC itself, computed from the fields
    /// (so encoding needs no second pass and decoding no copy of the bytes).
    fn crc(&self) -> u32 {
        let crc = crc32c::crc32c(&TRAILER_MAGIC);
        let crc = crc32c::crc32c_append(crc, &self.segment_offset.to_le_bytes());
        let crc = crc32c::crc32c_append(crc, &self.segment_len.to_le_bytes());
        crc32c::crc32c_append(crc, &self.merkle_root)
    }

    /// Decodes the trailer at image offset `at` and checks that it locates the segment that
    /// ends exactly where the trailer begins.
    pub fn decode_at(bytes: &[u8], at: u64) -> Result<Self, FormatError> {
        let trailer = Self::decode(bytes).map_err(|e| e.at(at))?;
        if trailer.trailer_offset() != Some(at) {
            return Err(FormatError::InvalidField {
                structure: "trailer",
                field: "segment_offset",
                offset: at + SEGMENT_OFFSET_AT as u64,
                reason: format!(
                    "locates a segment at {} of {} bytes, which does not end at the trailer's offset {at}",
                    trailer.segment_offset, trailer.segment_len
                ),
            });
        }
        Ok(trailer)
    }
}

impl Codec for Trailer {
    const STRUCTURE: &'static str = "trailer";

    fn encode(&self, out: &mut impl Writer) {
        out.put_bytes(&TRAILER_MAGIC);
        out.put_u64(self.segment_offset);
        out.put_u64(self.segment_len);
        out.put_u32(self.crc());
        out.put_bytes(&self.merkle_root);
    }

    /// Reads the 60 bytes, checking the magic, then that all 60 are there, then the CRC32C,
    /// before trusting any field.
    fn read(r: &mut Reader<'_>) -> Result<Self, FormatError> {
        let start = r.position();
        r.magic(&TRAILER_MAGIC, "magic")?;
        let rest = (TRAILER_LEN - SEGMENT_OFFSET_AT) as u64;
        if (r.remaining() as u64) < rest {
            return Err(FormatError::Truncated {
                structure: r.structure(),
                field: "trailer",
                offset: start,
                needed: TRAILER_LEN as u64,
                available: SEGMENT_OFFSET_AT as u64 + r.remaining() as u64,
            });
        }
        let segment_offset = r.u64("segment_offset")?;
        let segment_len = r.u64("segment_len")?;
        let stored_crc = r.u32("crc32c")?;
        let merkle_root = r.array("merkle_root")?;
        let trailer = Trailer {
            segment_offset,
            segment_len,
            merkle_root,
        };
        let computed = trailer.crc();
        if stored_crc != computed {
            return Err(r.invalid_at(
                "crc32c",
                start + CRC_AT as u64,
                format!(
                    "stored 0x{stored_crc:08x}, computed 0x{computed:08x}: the trailer is damaged or torn"
                ),
            ));
        }
        if trailer.end().is_none() {
            return Err(r.invalid_at(
                "segment_len",
                start + SEGMENT_LEN_AT as u64,
                "the segment's end overflows a 64-bit offset",
            ));
        }
        Ok(trailer)
    }
}

impl FixedCodec<TRAILER_LEN> for Trailer {}
