//! The rollback journal of the single-file backend: a copy of the last committed tail, kept
//! beside the file while an append overwrites that tail.

use super::FormatError;
use super::codec::{Reader, Writer};

/// Magic at the start of a journal.
pub const JOURNAL_MAGIC: [u8; 8] = *b"MAIFJRNL";

/// `magic (8) | records_end (u64) | tail_len (u64) | tail | crc32c (u32)`; the CRC covers
/// every byte before it, so a journal torn while being written is recognised and ignored
/// (the file itself was not touched yet in that case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Journal {
    /// Offset where the committed tail starts (one past the last committed record).
    pub records_end: u64,
    /// The committed tail: provenance section, index section, trailer.
    pub tail: Vec<u8>,
}

impl Journal {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(28 + self.tail.len());
        out.put_bytes(&JOURNAL_MAGIC);
        out.put_u64(self.records_end);
        out.put_u64(self.tail.len() as u64);
        out.put_bytes(&self.tail);
        let crc = crc32c::crc32c(&out);
        out.put_u32(crc);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let mut r = Reader::new(bytes, "journal");
        r.magic(&JOURNAL_MAGIC, "magic")?;
        let records_end = r.u64("records_end")?;
        let tail_len = r.u64("tail_len")?;
        let tail = r.take(tail_len, "tail")?.to_vec();
        let covered = r.position() as usize;
        let stored = r.u32("crc32c")?;
        r.finish()?;
        let computed = crc32c::crc32c(&bytes[..covered]);
        if stored != computed {
            return Err(FormatError::InvalidField {
                structure: "journal",
                field: "crc32c",
                offset: covered as u64,
                reason: format!(
                    "stored 0x{stored:08x}, computed 0x{computed:08x}: the journal is torn"
                ),
            });
        }
        Ok(Self { records_end, tail })
    }
}
