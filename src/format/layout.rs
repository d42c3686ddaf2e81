//! How a single-file image is laid out, and how the object layout names its objects.
//!
//! ```text
//! | file header (32) | metadata section | segment 0 | trailer 0 |        <- commit 0 (creation)
//! | record ... record | segment 1 | trailer 1 |                         <- commit 1
//! | record ... record | segment 2 | trailer 2 | ...                     <- every later commit
//! ```
//!
//! Nothing is ever rewritten: a commit appends its records, its segment and its trailer. The
//! object layout holds the same bytes: one object per record (named by its digest) and one
//! object per commit holding that commit's segment and trailer (commit 0's object also holds
//! the file header and metadata section), so the file is the concatenation, in commit order,
//! of each commit's records and its commit object.

use super::digest::Digest;
use super::file_header::FILE_HEADER_LEN;

/// Smallest possible metadata section: the 4-byte length of an empty JSON.
pub const MIN_METADATA_SECTION_LEN: usize = 4;
/// The shortest prefix that can hold a file header and a metadata length.
pub const MIN_BASE_LEN: u64 = (FILE_HEADER_LEN + MIN_METADATA_SECTION_LEN) as u64;

/// Directory of record objects under an artifact's prefix.
pub const RECORDS_DIR: &str = "blocks";
/// Directory of commit objects under an artifact's prefix.
pub const COMMITS_DIR: &str = "commits";
/// The best-effort hint naming the newest commit, kept only on stores that do not list in
/// lexicographic order (local folders).
pub(crate) const LATEST_HINT: &str = "latest";

/// Name of the record object of the record whose digest is `digest`.
pub fn record_object_name(digest: &Digest) -> String {
    hex::encode(digest)
}

/// The digest a record object's name gives, if it is one (64 lower-case hex digits).
pub(crate) fn parse_record_object_name(name: &str) -> Option<Digest> {
    if name.len() != 64 || name.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    <Digest>::try_from(hex::decode(name).ok()?.as_slice()).ok()
}

/// Name of the object of commit `seq`: `u64::MAX - seq` zero-padded to 20 digits, so that
/// the newest commit is the first name a lexicographic listing returns.
pub fn commit_object_name(seq: u64) -> String {
    format!("{:020}", u64::MAX - seq)
}

/// The commit sequence number a commit object's name encodes, if it is one.
pub fn parse_commit_object_name(name: &str) -> Option<u64> {
    (name.len() == 20 && name.bytes().all(|b| b.is_ascii_digit()))
        .then(|| name.parse::<u64>().ok())
        .flatten()
        .map(|inverted| u64::MAX - inverted)
}

/// Image offset of the first byte of commit `seq`'s object: commit 0's object starts with the
/// file header; every later one starts with its segment.
pub(crate) fn commit_object_start(seq: u64, segment_offset: u64) -> u64 {
    if seq == 0 { 0 } else { segment_offset }
}
