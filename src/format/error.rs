//! Errors raised while decoding canonical MAIF bytes.

/// A decoding failure. Every variant names the structure, and where it can, the byte offset of
/// the offending field counted from the start of the input the caller handed to the decoder
/// (callers that know a file offset add it with [`FormatError::at`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// The input ended before the structure did.
    #[error(
        "{structure}: truncated at byte {offset}: field `{field}` needs {needed} bytes, {available} remain"
    )]
    Truncated {
        /// The structure being decoded.
        structure: &'static str,
        /// The field that did not fit.
        field: &'static str,
        /// Offset of that field in the decoder's input.
        offset: u64,
        /// Bytes the field needs.
        needed: u64,
        /// Bytes left in the input at that offset.
        available: u64,
    },
    /// The structure ended but input remained (codecs never ignore trailing bytes).
    #[error("{structure}: {extra} unexpected trailing bytes at byte {offset}")]
    TrailingBytes {
        /// The structure decoded.
        structure: &'static str,
        /// Offset of the first unexpected byte in the decoder's input.
        offset: u64,
        /// Number of unexpected bytes.
        extra: u64,
    },
    /// A magic number did not match.
    #[error("{structure}: bad magic {found} at byte {offset}, expected {expected}")]
    BadMagic {
        /// The structure whose magic it is.
        structure: &'static str,
        /// Offset of the magic in the decoder's input.
        offset: u64,
        /// The bytes found, printable (ASCII when printable, hex otherwise).
        found: String,
        /// The magic expected, printable.
        expected: String,
    },
    /// The file header names a version this build cannot read.
    #[error("unsupported MAIF version {major}.{minor}: {}", version_hint(*major, *minor))]
    UnsupportedVersion {
        /// Major version in the file header.
        major: u8,
        /// Minor version in the file header.
        minor: u8,
    },
    /// A field holds a value the format forbids.
    #[error("{structure}: field `{field}` at byte {offset}: {reason}")]
    InvalidField {
        /// The structure being decoded.
        structure: &'static str,
        /// The field at fault.
        field: &'static str,
        /// Offset of the field in the decoder's input.
        offset: u64,
        /// Why the value is refused.
        reason: String,
    },
    /// A block uses a compression code this build does not implement.
    #[error(
        "unsupported compression code {code} ({name}); this build implements 0 (none) and 2 (zstd)"
    )]
    UnsupportedCompression {
        /// The compression code stored.
        code: u8,
        /// The code's name in the MAIF 3.0 text (`"lz4"`, `"unknown"`, ...).
        name: &'static str,
    },
    /// A block uses an encryption code this build does not implement.
    #[error(
        "unsupported encryption code {code}: this build reads only unencrypted blocks (code 0)"
    )]
    UnsupportedEncryption {
        /// The encryption code stored.
        code: u8,
    },
    /// A block's data does not decompress to its declared size.
    #[error("decompression failed: {reason}")]
    Decompression {
        /// What the decompressor reported, or how the sizes differ.
        reason: String,
    },
}

fn version_hint(major: u8, minor: u8) -> &'static str {
    if (major, minor) == (3, 0) {
        "3.0 is the pre-release layout that rewrote its tail on every commit; this build reads \
         the append-only 3.1 layout only"
    } else {
        "this build reads MAIF 3.1 only"
    }
}

impl FormatError {
    /// The byte offset the error names, if it names one.
    pub fn offset(&self) -> Option<u64> {
        match self {
            FormatError::Truncated { offset, .. }
            | FormatError::TrailingBytes { offset, .. }
            | FormatError::BadMagic { offset, .. }
            | FormatError::InvalidField { offset, .. } => Some(*offset),
            FormatError::UnsupportedVersion { .. } => Some(0),
            FormatError::UnsupportedCompression { .. }
            | FormatError::UnsupportedEncryption { .. }
            | FormatError::Decompression { .. } => None,
        }
    }

    /// Shifts every offset in the error by `base`, for errors raised on a slice that starts at
    /// `base` in a larger input (a record inside a file, an entry inside a section).
    #[must_use]
    pub fn at(mut self, base: u64) -> Self {
        match &mut self {
            FormatError::Truncated { offset, .. }
            | FormatError::TrailingBytes { offset, .. }
            | FormatError::BadMagic { offset, .. }
            | FormatError::InvalidField { offset, .. } => *offset = offset.saturating_add(base),
            FormatError::UnsupportedVersion { .. }
            | FormatError::UnsupportedCompression { .. }
            | FormatError::UnsupportedEncryption { .. }
            | FormatError::Decompression { .. } => {}
        }
        self
    }
}
