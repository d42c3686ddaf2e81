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

pub use block::{BLOCK_HEADER_LEN, BlockHeader, Encryption, RecordView, SIGNATURE_LEN};
pub use codec::{Codec, FixedCodec};
pub use compression::Compression;
pub use digest::Digest;
pub use error::FormatError;
pub use file_header::{FILE_HEADER_LEN, FileHeader};
pub use fourcc::FourCC;
pub use index::IndexEntry;
pub use merkle::Frontier;
pub use metadata::{ArtifactMetadata, MetadataSection};
pub use provenance::{Action, EntryHeader, ProvenanceEntry};
pub use run::{RunEntry, RunHead, RunRef};
pub use segment::{SegmentHead, SegmentHeader};
pub use trailer::{TRAILER_LEN, Trailer};

#[cfg(test)]
mod fixed_length_tests {
    use super::*;

    /// Each fixed structure's encoding is exactly its declared length (`to_array` relies on
    /// it), checked against the growable encoding of the same value.
    fn check<const LEN: usize, T: FixedCodec<LEN>>(value: &T) {
        let bytes = value.to_bytes();
        assert_eq!(bytes.len(), LEN, "{}", T::STRUCTURE);
        assert_eq!(value.to_array()[..], bytes[..], "{}", T::STRUCTURE);
        assert!(T::decode(&bytes).is_ok(), "{}", T::STRUCTURE);
    }

    #[test]
    fn fixed_encodings_have_their_declared_length() {
        let entry = IndexEntry {
            offset: 1,
            record_len: 2,
            block_id: [3; 16],
            block_type: FourCC::BINA,
            metadata_len: 4,
            timestamp_us: 5,
            digest: [6; 32],
        };
        let run = run::encode_run(
            &[RunEntry {
                entry,
                position: 7,
                version: 1,
            }],
            None,
        )
        .expect("run")
        .1
        .reference(1, 8, 9);
        check(&FileHeader::new(1, [2; 16]));
        check(&BlockHeader {
            block_id: [1; 16],
            block_type: FourCC::BINA,
            flags: 0,
            compression: Compression::NONE,
            encryption: Encryption::NONE,
            metadata_len: 0,
            data_offset: BLOCK_HEADER_LEN as u32,
            data_size: 3,
            uncompressed_size: 3,
            timestamp_us: 4,
            prev_link: [5; 8],
        });
        check(&entry);
        check(&RunEntry {
            entry,
            position: 7,
            version: 1,
        });
        check(&Some(run));
        check(&run::RunHeader {
            entry_count: 1,
            page_count: 1,
            tier: 0,
            streak: 1,
            older: None,
        });
        check::<{ run::RUN_REF_LEN }, Option<RunRef>>(&None);
        check(&run::DirectoryEntry {
            first_id: [1; 16],
            first_position: 2,
            page_digest: [3; 32],
        });
        check(&EntryHeader {
            action: Action::Create,
            flags: 0,
            details_len: 2,
            timestamp_us: 3,
            previous: [4; 32],
            subject: [5; 32],
        });
        check(&Trailer {
            segment_offset: 1,
            segment_len: 2,
            merkle_root: [3; 32],
        });
        assert_eq!(
            SegmentHeader::STRUCTURE,
            "segment header",
            "checked by the codec round-trip tests, which build valid headers"
        );
    }
}
