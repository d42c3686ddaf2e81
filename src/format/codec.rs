//! The codec every byte layout of the format is written and read through, modelled on
//! rustls' `msgs/codec.rs`:
//!
//! - [`Codec`]: a structure encodes itself into a [`Writer`] (infallibly: lengths that may not
//!   fit are checked where values are made, never while encoding) and reads itself from a
//!   bounded [`Reader`]. Whole-buffer decoding and the trailing-byte check are written once,
//!   in the trait ([`Codec::decode`], through [`Reader::all`]).
//! - [`FixedCodec`]: a structure of a fixed length encodes straight into an array.
//! - `read_counted` (crate-internal): a count, then that many items, read in one place.
//! - `wire_code!` (crate-internal): one-byte codes from stored bytes as newtypes with named
//!   constants, so an unknown value stays representable.

use super::FormatError;

/// A cursor over borrowed bytes that never reads past the end and reports the byte offset of
/// every failure.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
    /// Where the field taken last starts (what [`Reader::invalid`] reports).
    field_start: usize,
    structure: &'static str,
}

impl<'a> Reader<'a> {
    /// Starts reading `bytes` as the structure called `structure` (used in error messages).
    pub fn new(bytes: &'a [u8], structure: &'static str) -> Self {
        Self {
            bytes,
            position: 0,
            field_start: 0,
            structure,
        }
    }

    /// Name of the structure being read.
    pub(crate) fn structure(&self) -> &'static str {
        self.structure
    }

    /// Offset of the next unread byte.
    pub fn position(&self) -> u64 {
        self.position as u64
    }

    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.position
    }

    /// Takes the next `count` bytes, or fails naming `field` if fewer remain. The count is
    /// checked before anything is sliced, so a hostile length never allocates.
    pub fn take(&mut self, count: u64, field: &'static str) -> Result<&'a [u8], FormatError> {
        let available = self.remaining() as u64;
        if count > available {
            return Err(FormatError::Truncated {
                structure: self.structure,
                field,
                offset: self.position(),
                needed: count,
                available,
            });
        }
        // `count <= remaining <= usize::MAX`, so the cast is lossless.
        let end = self.position + count as usize;
        let taken = &self.bytes[self.position..end];
        self.field_start = self.position;
        self.position = end;
        Ok(taken)
    }

    /// Takes exactly `N` bytes as an array.
    pub fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], FormatError> {
        let slice = self.take(N as u64, field)?;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }

    /// Takes one byte.
    pub fn u8(&mut self, field: &'static str) -> Result<u8, FormatError> {
        Ok(self.array::<1>(field)?[0])
    }

    /// Takes a little-endian `u16`.
    pub fn u16(&mut self, field: &'static str) -> Result<u16, FormatError> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }

    /// Takes a little-endian `u32`.
    pub fn u32(&mut self, field: &'static str) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    /// Takes a little-endian `u64`.
    pub fn u64(&mut self, field: &'static str) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    /// Checks a fixed magic number at the cursor.
    pub fn magic(&mut self, expected: &[u8], field: &'static str) -> Result<(), FormatError> {
        let offset = self.position();
        let found = self.take(expected.len() as u64, field)?;
        if found != expected {
            return Err(FormatError::BadMagic {
                structure: self.structure,
                offset,
                found: printable(found),
                expected: printable(expected),
            });
        }
        Ok(())
    }

    /// Fails unless every byte was consumed. The one place trailing bytes are rejected.
    pub(crate) fn finish(self) -> Result<(), FormatError> {
        if self.remaining() != 0 {
            return Err(FormatError::TrailingBytes {
                structure: self.structure,
                offset: self.position(),
                extra: self.remaining() as u64,
            });
        }
        Ok(())
    }

    /// Reads one value with `read`, then fails unless every byte was consumed.
    pub fn all<T>(
        mut self,
        read: impl FnOnce(&mut Self) -> Result<T, FormatError>,
    ) -> Result<T, FormatError> {
        let value = read(&mut self)?;
        self.finish()?;
        Ok(value)
    }

    /// An [`FormatError::InvalidField`] for `field`, the field taken last.
    pub(crate) fn invalid(&self, field: &'static str, reason: impl Into<String>) -> FormatError {
        self.invalid_at(field, self.field_start as u64, reason)
    }

    /// An [`FormatError::InvalidField`] for `field` at `offset` of this reader's input.
    pub(crate) fn invalid_at(
        &self,
        field: &'static str,
        offset: u64,
        reason: impl Into<String>,
    ) -> FormatError {
        FormatError::InvalidField {
            structure: self.structure,
            field,
            offset,
            reason: reason.into(),
        }
    }
}

/// Renders bytes for an error message: ASCII when printable, hex otherwise.
pub(crate) fn printable(bytes: &[u8]) -> String {
    if bytes.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        format!("{:?}", String::from_utf8_lossy(bytes))
    } else {
        format!("0x{}", hex::encode(bytes))
    }
}

/// Little-endian writers over a buffer: a growable `Vec<u8>`, or the fixed array a
/// [`FixedCodec`] encodes into.
pub trait Writer {
    /// Appends bytes as they are.
    fn put_bytes(&mut self, bytes: &[u8]);
    /// Appends one byte.
    fn put_u8(&mut self, value: u8) {
        self.put_bytes(&[value]);
    }
    /// Appends a `u16`, little-endian.
    fn put_u16(&mut self, value: u16) {
        self.put_bytes(&value.to_le_bytes());
    }
    /// Appends a `u32`, little-endian.
    fn put_u32(&mut self, value: u32) {
        self.put_bytes(&value.to_le_bytes());
    }
    /// Appends a `u64`, little-endian.
    fn put_u64(&mut self, value: u64) {
        self.put_bytes(&value.to_le_bytes());
    }
}

impl Writer for Vec<u8> {
    fn put_bytes(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// A structure of the format: how it is written, and how it is read back.
///
/// `encode` cannot fail: every length a structure stores is checked when the value is made.
/// `read` consumes exactly the structure's bytes from a cursor that may hold more (the
/// structure is part of a larger one); [`Codec::decode`] reads a whole buffer and rejects
/// anything left over.
pub trait Codec: Sized {
    /// Name of the structure in error messages of [`Codec::decode`].
    const STRUCTURE: &'static str;

    /// Appends the structure's bytes to `out`.
    fn encode(&self, out: &mut impl Writer);

    /// Reads the structure at the cursor and checks its fields.
    fn read(r: &mut Reader<'_>) -> Result<Self, FormatError>;

    /// Bytes the encoding will take, to size the buffer of [`Codec::to_bytes`] (a hint).
    fn encoded_len_hint(&self) -> usize {
        0
    }

    /// The structure's bytes.
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len_hint());
        self.encode(&mut out);
        out
    }

    /// Decodes exactly one structure from `bytes`: short and trailing input are rejected.
    fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        Reader::new(bytes, Self::STRUCTURE).all(Self::read)
    }
}

/// A structure whose encoding is always `LEN` bytes; it encodes straight into an array.
pub trait FixedCodec<const LEN: usize>: Codec {
    /// The structure's `LEN` bytes.
    fn to_array(&self) -> [u8; LEN] {
        let mut out = ArrayWriter {
            bytes: [0u8; LEN],
            len: 0,
        };
        self.encode(&mut out);
        out.bytes
    }
}

/// Writes into a fixed array. Every [`FixedCodec`] writes exactly `LEN` bytes (the unit
/// tests of each structure check it), so nothing is ever dropped here; were an encoding
/// longer, the excess would be dropped rather than panic.
struct ArrayWriter<const LEN: usize> {
    bytes: [u8; LEN],
    len: usize,
}

impl<const LEN: usize> Writer for ArrayWriter<LEN> {
    fn put_bytes(&mut self, bytes: &[u8]) {
        let end = self.len.saturating_add(bytes.len());
        if let Some(slot) = self.bytes.get_mut(self.len..end) {
            slot.copy_from_slice(bytes);
        }
        self.len = end;
    }
}

/// Reads a counted section: `count` items of at least `item_len` bytes each, read by `read`.
/// A count the remaining bytes cannot hold is refused with `too_many(remaining)` before
/// anything is reserved, so a hostile count never allocates.
pub(crate) fn read_counted<'a, T>(
    r: &mut Reader<'a>,
    count: u64,
    item_len: usize,
    too_many: impl FnOnce(usize) -> FormatError,
    mut read: impl FnMut(&mut Reader<'a>) -> Result<T, FormatError>,
) -> Result<Vec<T>, FormatError> {
    let remaining = r.remaining();
    if count > (remaining / item_len.max(1)) as u64 {
        return Err(too_many(remaining));
    }
    // `count <= remaining`, so the cast is lossless and the reservation bounded by the input.
    let mut items = Vec::with_capacity(count as usize);
    for _ in 0..count {
        items.push(read(r)?);
    }
    Ok(items)
}

/// Converts a length that the format stores as `u32` after checking it fits.
pub(crate) fn len_u32(
    len: usize,
    structure: &'static str,
    field: &'static str,
) -> Result<u32, FormatError> {
    u32::try_from(len).map_err(|_| FormatError::InvalidField {
        structure,
        field,
        offset: 0,
        reason: format!("length {len} does not fit in 32 bits"),
    })
}

/// Declares a one-byte code read from stored bytes as a newtype with named constants
/// (rustls' `enum_builder!`): every byte value is representable, the named ones have a name,
/// and `Display` and serialisation show the number.
macro_rules! wire_code {
    (
        $(#[$meta:meta])*
        pub struct $name:ident(pub u8) {
            $( $(#[$const_meta:meta])* $constant:ident = $value:literal => $text:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(pub u8);

        impl $name {
            $( $(#[$const_meta])* pub const $constant: Self = Self($value); )*

            /// Human name of the code, for messages; `unassigned` for a code with no name.
            pub fn name(self) -> &'static str {
                match self.0 {
                    $( $value => $text, )*
                    _ => "unassigned",
                }
            }
        }

        /// Compares with a stored byte, as the code's own byte.
        impl PartialEq<u8> for $name {
            fn eq(&self, code: &u8) -> bool {
                self.0 == *code
            }
        }

        impl From<u8> for $name {
            fn from(code: u8) -> Self {
                Self(code)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                std::fmt::Display::fmt(&self.0, f)
            }
        }
    };
}
pub(crate) use wire_code;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_sections_refuse_a_count_the_bytes_cannot_hold_before_reserving() {
        let bytes = [0u8; 10];
        let mut r = Reader::new(&bytes, "test");
        let too_many = |remaining| FormatError::Decompression {
            reason: format!("{remaining} bytes"),
        };
        let error =
            read_counted(&mut r, u64::MAX, 4, too_many, |r| r.u32("item")).expect_err("refused");
        assert_eq!(error.to_string(), "decompression failed: 10 bytes");
        let items = read_counted(&mut r, 2, 4, too_many, |r| r.u32("item")).expect("two");
        assert_eq!(items, vec![0, 0]);
        assert_eq!(r.remaining(), 2);
    }

    #[test]
    fn invalid_names_the_offset_of_the_field_taken_last() {
        let bytes = [1u8, 2, 3, 4, 5, 6, 7];
        let mut r = Reader::new(&bytes, "test");
        r.u8("a").expect("a");
        r.u32("b").expect("b");
        assert_eq!(r.invalid("b", "bad").offset(), Some(1));
        assert_eq!(r.invalid_at("c", 6, "bad").offset(), Some(6));
    }

    #[test]
    fn all_rejects_trailing_bytes() {
        let error = Reader::new(&[0u8; 3], "test")
            .all(|r| r.u16("x"))
            .expect_err("trailing");
        assert_eq!(
            error,
            FormatError::TrailingBytes {
                structure: "test",
                offset: 2,
                extra: 1
            }
        );
    }
}
