//! The bounded cursor every decoder reads through, and the little-endian writers every
//! encoder writes through. Modelled on rustls' codec: each structure has an `encode` into a
//! buffer and a `decode` that consumes exactly its bytes and rejects anything left over.

use super::FormatError;

/// A cursor over borrowed bytes that never reads past the end and reports the byte offset of
/// every failure.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
    structure: &'static str,
}

impl<'a> Reader<'a> {
    /// Starts reading `bytes` as the structure called `structure` (used in error messages).
    pub fn new(bytes: &'a [u8], structure: &'static str) -> Self {
        Self {
            bytes,
            position: 0,
            structure,
        }
    }

    /// Name of the structure being read.
    pub fn structure(&self) -> &'static str {
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

    pub fn u8(&mut self, field: &'static str) -> Result<u8, FormatError> {
        Ok(self.array::<1>(field)?[0])
    }

    pub fn u16(&mut self, field: &'static str) -> Result<u16, FormatError> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }

    pub fn u32(&mut self, field: &'static str) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

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

    /// Fails unless every byte was consumed.
    pub fn finish(self) -> Result<(), FormatError> {
        if self.remaining() != 0 {
            return Err(FormatError::TrailingBytes {
                structure: self.structure,
                offset: self.position(),
                extra: self.remaining() as u64,
            });
        }
        Ok(())
    }

    /// An [`FormatError::InvalidField`] for the field that ends at the cursor.
    pub fn invalid(
        &self,
        field: &'static str,
        field_len: u64,
        reason: impl Into<String>,
    ) -> FormatError {
        FormatError::InvalidField {
            structure: self.structure,
            field,
            offset: self.position().saturating_sub(field_len),
            reason: reason.into(),
        }
    }
}

/// Renders bytes for an error message: ASCII when printable, hex otherwise.
pub fn printable(bytes: &[u8]) -> String {
    if bytes.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        format!("{:?}", String::from_utf8_lossy(bytes))
    } else {
        format!("0x{}", hex::encode(bytes))
    }
}

/// Little-endian writers over a growable buffer.
pub trait Writer {
    fn put_u8(&mut self, value: u8);
    fn put_u16(&mut self, value: u16);
    fn put_u32(&mut self, value: u32);
    fn put_u64(&mut self, value: u64);
    fn put_bytes(&mut self, bytes: &[u8]);
}

impl Writer for Vec<u8> {
    fn put_u8(&mut self, value: u8) {
        self.push(value);
    }
    fn put_u16(&mut self, value: u16) {
        self.extend_from_slice(&value.to_le_bytes());
    }
    fn put_u32(&mut self, value: u32) {
        self.extend_from_slice(&value.to_le_bytes());
    }
    fn put_u64(&mut self, value: u64) {
        self.extend_from_slice(&value.to_le_bytes());
    }
    fn put_bytes(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// Converts a length that the format stores as `u32` after checking it fits.
pub fn len_u32(
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
