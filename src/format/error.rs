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
        structure: &'static str,
        field: &'static str,
        offset: u64,
        needed: u64,
        available: u64,
    },
    /// The structure ended but input remained (codecs never ignore trailing bytes).
    #[error("{structure}: {extra} unexpected trailing bytes at byte {offset}")]
    TrailingBytes {
        structure: &'static str,
        offset: u64,
        extra: u64,
    },
    /// A magic number did not match.
    #[error("{structure}: bad magic {found} at byte {offset}, expected {expected}")]
    BadMagic {
        structure: &'static str,
        offset: u64,
        found: String,
        expected: String,
    },
    /// The file header names a version this build cannot read.
    #[error("unsupported MAIF version {major}.{minor}: {}", version_hint(*major, *minor))]
    UnsupportedVersion { major: u8, minor: u8 },
    /// A field holds a value the format forbids.
    #[error("{structure}: field `{field}` at byte {offset}: {reason}")]
    InvalidField {
        structure: &'static str,
        field: &'static str,
        offset: u64,
        reason: String,
    },
    /// A block uses a compression code this build does not implement.
    #[error(
        "unsupported compression code {code} ({name}); this build implements 0 (none) and 2 (zstd)"
    )]
    UnsupportedCompression { code: u8, name: &'static str },
    /// A block uses an encryption code this build does not implement.
    #[error(
        "unsupported encryption code {code}: this build reads only unencrypted blocks (code 0)"
    )]
    UnsupportedEncryption { code: u8 },
    /// A block's data does not decompress to its declared size.
    #[error("decompression failed: {reason}")]
    Decompression { reason: String },
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
