//! The canonical MAIF 3.1 byte layout (MAIF 3.0 made rigorous, with append-only commits). Pure and synchronous: bytes in, structures out, and
//! back. Every byte layout of the project is written and parsed here and nowhere else.
//!
//! See `docs/FORMAT.md` for the specification these codecs implement.

pub mod block;
pub mod codec;
pub mod compression;
pub mod digest;
mod error;
pub mod file_header;
pub mod fourcc;
pub mod index;
pub mod layout;
pub mod merkle;
pub mod metadata;
pub mod payload;
pub mod provenance;
pub mod run;
pub mod segment;
pub mod trailer;

pub use block::{BLOCK_HEADER_LEN, BlockHeader, RecordView, SIGNATURE_LEN, UnsignedRecord};
pub use digest::Digest;
pub use error::FormatError;
pub use file_header::{FILE_HEADER_LEN, FileHeader};
pub use fourcc::FourCC;
pub use index::IndexEntry;
pub use merkle::Frontier;
pub use metadata::{ArtifactMetadata, MetadataSection};
pub use provenance::{Action, ProvenanceEntry};
pub use run::{RunEntry, RunHead, RunRef};
pub use segment::{SegmentHead, SegmentHeader};
pub use trailer::{TRAILER_LEN, Trailer};
