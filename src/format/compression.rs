//! Block data compression codes. Pure in-memory transforms.

use std::io::Read;

use super::FormatError;
use super::codec::wire_code;

wire_code! {
    /// Compression code of a block's data. This build implements none and zstd; the other
    /// named codes are assigned by MAIF 3.0 and refused by name.
    pub struct Compression(pub u8) {
        /// Data stored as is.
        NONE = 0 => "none",
        /// Data stored as one zlib stream (assigned, not implemented).
        ZLIB = 1 => "zlib",
        /// Data stored as one zstd frame.
        ZSTD = 2 => "zstd",
        /// Data stored as one lz4 frame (assigned, not implemented).
        LZ4 = 3 => "lz4",
    }
}

/// Data stored as is (the same as [`Compression::NONE`]).
pub(crate) const COMPRESSION_NONE: Compression = Compression::NONE;
/// Data stored as one zstd frame (the same as [`Compression::ZSTD`]).
pub(crate) const COMPRESSION_ZSTD: Compression = Compression::ZSTD;

/// Human name of a compression code (or of its stored byte), for messages.
pub fn compression_name(code: impl Into<Compression>) -> &'static str {
    code.into().name()
}

/// Compresses `data` with zstd at `level`.
pub(crate) fn zstd_compress(data: &[u8], level: i32) -> Result<Vec<u8>, FormatError> {
    zstd::bulk::compress(data, level).map_err(|e| FormatError::Decompression {
        reason: format!("zstd compression failed: {e}"),
    })
}

/// Decodes stored block data to exactly `uncompressed_size` bytes.
///
/// Output is grown as the decoder produces it, never pre-allocated from the declared size, and
/// decoding stops with an error as soon as it would exceed that size, so a hostile header
/// cannot make us allocate more than the data really expands to, nor more than it declares.
pub fn decompress(
    code: impl Into<Compression>,
    stored: &[u8],
    uncompressed_size: u64,
) -> Result<Vec<u8>, FormatError> {
    match code.into() {
        Compression::NONE => {
            if stored.len() as u64 != uncompressed_size {
                return Err(FormatError::Decompression {
                    reason: format!(
                        "uncompressed block holds {} bytes but declares {uncompressed_size}",
                        stored.len()
                    ),
                });
            }
            Ok(stored.to_vec())
        }
        Compression::ZSTD => {
            let decoder = zstd::stream::read::Decoder::with_buffer(stored).map_err(|e| {
                FormatError::Decompression {
                    reason: format!("zstd: {e}"),
                }
            })?;
            let mut out = Vec::with_capacity(stored.len().min(1 << 20));
            // Read one byte past the declared size so an over-long stream is detected.
            let limit = uncompressed_size.saturating_add(1);
            decoder
                .take(limit)
                .read_to_end(&mut out)
                .map_err(|e| FormatError::Decompression {
                    reason: format!("zstd: {e}"),
                })?;
            if out.len() as u64 != uncompressed_size {
                return Err(FormatError::Decompression {
                    reason: if out.len() as u64 > uncompressed_size {
                        format!("zstd data expands beyond the declared {uncompressed_size} bytes")
                    } else {
                        format!(
                            "zstd data expands to {} bytes but the header declares {uncompressed_size}",
                            out.len()
                        )
                    },
                });
            }
            Ok(out)
        }
        code => Err(FormatError::UnsupportedCompression {
            code: code.0,
            name: code.name(),
        }),
    }
}
