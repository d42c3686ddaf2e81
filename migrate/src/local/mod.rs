//! Legacy local files: detection and the three binary formats.

pub mod binary_format;
pub mod block_storage;
pub mod unified;
