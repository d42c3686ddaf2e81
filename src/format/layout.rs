//! How the sections of a single file fit together, checked without trusting any one field.
//!
//! ```text
//! | file header (32) | metadata section | record 0 | ... | record n-1 | provenance | index | trailer (196) |
//! 0                  32                 records_offset               provenance_offset       file_len
//! ```

use super::FormatError;
use super::file_header::FILE_HEADER_LEN;
use super::index::IndexSection;
use super::trailer::{TRAILER_LEN, Trailer};

/// Byte ranges of each section of a committed file image of `image_len` bytes, as the trailer
/// locates them, after checking they tile the image exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sections {
    pub metadata: std::ops::Range<u64>,
    pub records: std::ops::Range<u64>,
    pub provenance: std::ops::Range<u64>,
    pub index: std::ops::Range<u64>,
    pub trailer: std::ops::Range<u64>,
}

fn invalid(field: &'static str, reason: String) -> FormatError {
    FormatError::InvalidField {
        structure: "file layout",
        field,
        offset: 0,
        reason,
    }
}

/// Checks that `trailer` describes an image of exactly `image_len` bytes.
pub fn sections(trailer: &Trailer, image_len: u64) -> Result<Sections, FormatError> {
    let min_records_offset = FILE_HEADER_LEN as u64 + 4;
    if trailer.records_offset < min_records_offset {
        return Err(invalid(
            "records_offset",
            format!(
                "{} is inside the file header and metadata length",
                trailer.records_offset
            ),
        ));
    }
    let file_len = trailer
        .file_len()
        .ok_or_else(|| invalid("index_len", "the sections overflow a 64-bit length".into()))?;
    if file_len != image_len {
        return Err(invalid(
            "file_len",
            format!("the trailer describes a file of {file_len} bytes but it has {image_len}"),
        ));
    }
    let trailer_offset = file_len - TRAILER_LEN as u64;
    Ok(Sections {
        metadata: FILE_HEADER_LEN as u64..trailer.records_offset,
        records: trailer.records_offset..trailer.provenance_offset,
        provenance: trailer.provenance_offset..trailer.index_offset,
        index: trailer.index_offset..trailer_offset,
        trailer: trailer_offset..file_len,
    })
}

/// Checks that the index entries tile the records region in order, one per record the
/// trailer counts.
pub fn check_index(trailer: &Trailer, index: &IndexSection) -> Result<(), FormatError> {
    if index.entries.len() as u64 != trailer.record_count {
        return Err(invalid(
            "record_count",
            format!(
                "the trailer counts {} records but the index holds {}",
                trailer.record_count,
                index.entries.len()
            ),
        ));
    }
    let mut expected = trailer.records_offset;
    for (position, entry) in index.entries.iter().enumerate() {
        if entry.offset != expected {
            return Err(invalid(
                "index",
                format!(
                    "entry {position} starts at {} but the previous record ends at {expected}",
                    entry.offset
                ),
            ));
        }
        expected = entry.end().ok_or_else(|| {
            invalid(
                "index",
                format!("entry {position}: offset + length overflows"),
            )
        })?;
    }
    if expected != trailer.provenance_offset {
        return Err(invalid(
            "index",
            format!(
                "records end at {expected} but the provenance section starts at {}",
                trailer.provenance_offset
            ),
        ));
    }
    Ok(())
}
