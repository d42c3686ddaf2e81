//! Block data compression codes. Pure in-memory transforms.

use std::io::Read;

use super::FormatError;

/// Data stored as is.
pub const COMPRESSION_NONE: u8 = 0;
/// Data stored as one zstd frame.
pub const COMPRESSION_ZSTD: u8 = 2;

/// Human name of a compression code, for messages.
pub fn compression_name(code: u8) -> &'static str {
    match code {
        COMPRESSION_NONE => "none",
        1 => "zlib",
        COMPRESSION_ZSTD => "zstd",
        3 => "lz4",
        _ => "unassigned",
    }
}

/// Compresses `data` with zstd at `level`.
pub fn zstd_compress(data: &[u8], level: i32) -> Result<Vec<u8>, FormatError> {
    zstd::bulk::compress(data, level).map_err(|e| FormatError::Decompression {
        reason: format!("zstd compression failed: {e}"),
    })
}

/// Decodes stored block data to exactly `uncompressed_size` bytes.
///
/// Output is grown as the decoder produces it, never pre-allocated from the declared size, and
/// decoding stops with an error as soon as it would exceed that size, so a hostile header
/// cannot make us allocate more than the data really expands to, nor more than it declares.
pub fn decompress(code: u8, stored: &[u8], uncompressed_size: u64) -> Result<Vec<u8>, FormatError> {
    match code {
        COMPRESSION_NONE => {
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
        COMPRESSION_ZSTD => {
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
            code,
            name: compression_name(code),
        }),
    }
}
