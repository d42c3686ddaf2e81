//! How legacy bytes are read: through `maif_store::format::codec::Reader`, the one bounded
//! cursor the canonical decoders use. The legacy layouts are mostly big-endian while the
//! cursor's integers are little-endian, so the big-endian reads are added here, once, on top
//! of it. A read past the end is a [`FormatError::Truncated`] naming the structure, the field
//! and the byte offset; nothing is ever filled with zeros or defaults.
//!
//! Readers are positioned with [`reader_at`], so the offset in every error counts from the
//! start of the input (the file), not from the start of the structure.

use maif_store::format::FormatError;
pub use maif_store::format::codec::Reader;

use crate::MigrateError;

/// The field named when a structure is asked to start past the end of its input.
const START_FIELD: &str = "start of the structure";

/// Big-endian integers, and a little more, on top of [`Reader`].
pub trait ReaderExt<'a> {
    /// A big-endian `u16`.
    fn u16_be(&mut self, field: &'static str) -> Result<u16, FormatError>;
    /// A big-endian `u32`.
    fn u32_be(&mut self, field: &'static str) -> Result<u32, FormatError>;
    /// A big-endian `u64`.
    fn u64_be(&mut self, field: &'static str) -> Result<u64, FormatError>;
    /// The next `len` bytes; `len` is checked against what remains before anything is sliced.
    fn bytes(&mut self, len: usize, field: &'static str) -> Result<&'a [u8], FormatError>;
    /// Everything not yet read.
    fn rest(&mut self, field: &'static str) -> Result<&'a [u8], FormatError>;
    /// The offset of the next unread byte, as an index into the input.
    fn offset(&self) -> usize;
    /// The bytes read since the reader was at `start` (a clone taken before reading).
    fn since(&self, start: &Reader<'a>) -> Result<&'a [u8], FormatError>;
}

impl<'a> ReaderExt<'a> for Reader<'a> {
    fn u16_be(&mut self, field: &'static str) -> Result<u16, FormatError> {
        self.array(field).map(u16::from_be_bytes)
    }

    fn u32_be(&mut self, field: &'static str) -> Result<u32, FormatError> {
        self.array(field).map(u32::from_be_bytes)
    }

    fn u64_be(&mut self, field: &'static str) -> Result<u64, FormatError> {
        self.array(field).map(u64::from_be_bytes)
    }

    fn bytes(&mut self, len: usize, field: &'static str) -> Result<&'a [u8], FormatError> {
        // usize is at most 64 bits wide on every target this builds for.
        self.take(len as u64, field)
    }

    fn rest(&mut self, field: &'static str) -> Result<&'a [u8], FormatError> {
        let remaining = self.remaining();
        self.bytes(remaining, field)
    }

    fn offset(&self) -> usize {
        // The position is a usize inside the reader, widened to u64 by `position`.
        self.position() as usize
    }

    fn since(&self, start: &Reader<'a>) -> Result<&'a [u8], FormatError> {
        let mut from = start.clone();
        from.take(
            self.position().saturating_sub(start.position()),
            "bytes read",
        )
    }
}

/// A reader named `structure` over `input`, positioned at `offset`, so that its errors name
/// offsets into `input`. An `offset` past the end is an error naming the structure.
pub fn reader_at<'a>(
    input: &'a [u8],
    offset: usize,
    structure: &'static str,
) -> Result<Reader<'a>, FormatError> {
    let mut reader = Reader::new(input, structure);
    reader.bytes(offset, START_FIELD)?;
    Ok(reader)
}

/// `input` up to `end`, or an error naming `structure` when `input` is shorter.
pub fn prefix<'a>(
    input: &'a [u8],
    end: usize,
    structure: &'static str,
) -> Result<&'a [u8], FormatError> {
    Reader::new(input, structure).bytes(end, "bytes before the end of the structure")
}

/// The migrator's error for a structure that could not be read: `what` (which structure, e.g.
/// "block 3 header") at `offset` (where it starts), with the reader's error (which field, at
/// which byte) as the reason.
pub fn malformed(
    source: &str,
    what: impl Into<String>,
    offset: usize,
    error: &FormatError,
) -> MigrateError {
    MigrateError::malformed(source, what, offset as u64, error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_endian_reads_and_truncation_name_the_field() {
        let input = [0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3, 9];
        let mut reader = Reader::new(&input, "test structure");
        assert_eq!(reader.u16_be("short"), Ok(1));
        assert_eq!(reader.u32_be("word"), Ok(2));
        assert_eq!(reader.u64_be("long"), Ok(3));
        assert_eq!(reader.offset(), 14);
        let error = reader.u32_be("past the end").unwrap_err();
        assert_eq!(
            error,
            FormatError::Truncated {
                structure: "test structure",
                field: "past the end",
                offset: 14,
                needed: 4,
                available: 1,
            }
        );
        // A failed read consumes nothing.
        assert_eq!(reader.rest("rest"), Ok(&[9u8][..]));
    }

    #[test]
    fn positioned_readers_name_input_offsets() {
        let input = [7u8; 10];
        let mut reader = reader_at(&input, 8, "s").unwrap();
        let start = reader.clone();
        assert_eq!(reader.bytes(2, "two"), Ok(&[7u8, 7][..]));
        assert_eq!(reader.since(&start), Ok(&[7u8, 7][..]));
        let error = reader_at(&input, 8, "s")
            .unwrap()
            .u64_be("field")
            .unwrap_err();
        assert_eq!(error.offset(), Some(8));
        assert!(error.to_string().contains("`field`"), "{error}");
        let error = reader_at(&input, 11, "late").unwrap_err();
        assert!(error.to_string().starts_with("late: truncated"), "{error}");
        assert_eq!(prefix(&input, 4, "p"), Ok(&input[..4]));
        assert!(prefix(&input, 11, "p").is_err());
    }
}
