//! Property tests: for every structure, decode(encode(x)) == x and encode(decode(b)) == b;
//! trailing and missing bytes are rejected. Merkle roots and proofs against an independent
//! recursive implementation of RFC 9162.

use maif_store::format::block::{BlockHeader, RecordView, encode_record};
use maif_store::format::digest::Digest;
use maif_store::format::journal::Journal;
use maif_store::format::merkle::{
    consistency_proof, inclusion_proof, merkle_root, verify_consistency, verify_inclusion,
};
use maif_store::format::payload::{
    EmbeddingDtype, EmbeddingPayload, ImageFormat, ImagePayload, TextPayload,
};
use maif_store::format::provenance::ProvenanceEntry;
use maif_store::format::{
    Action, FileHeader, FourCC, IndexEntry, IndexSection, MetadataSection, ProvenanceSection,
    TRAILER_LEN, Trailer,
};
use proptest::prelude::*;
use sha2::{Digest as _, Sha256};

fn digest() -> impl Strategy<Value = Digest> {
    any::<[u8; 32]>()
}

fn file_header() -> impl Strategy<Value = FileHeader> {
    (any::<u8>(), any::<u16>(), any::<u64>(), any::<[u8; 16]>()).prop_map(
        |(minor, flags, created_us, artifact_id)| FileHeader {
            major: 3,
            minor,
            flags,
            created_us,
            artifact_id,
        },
    )
}

fn block_header() -> impl Strategy<Value = BlockHeader> {
    (
        any::<[u8; 16]>(),
        any::<[u8; 4]>(),
        any::<u16>(),
        0u32..5000,
        any::<u8>(),
        any::<u64>(),
        any::<u64>(),
        any::<[u8; 8]>(),
        any::<bool>(),
    )
        .prop_map(
            |(
                block_id,
                code,
                flags,
                metadata_len,
                encryption,
                size,
                timestamp_us,
                prev_link,
                compressed,
            )| {
                BlockHeader {
                    block_id,
                    block_type: FourCC(code),
                    flags,
                    compression: if compressed { 2 } else { 0 },
                    encryption,
                    metadata_len,
                    data_offset: 64 + metadata_len,
                    data_size: size,
                    uncompressed_size: if compressed {
                        size.rotate_left(7)
                    } else {
                        size
                    },
                    timestamp_us,
                    prev_link,
                }
            },
        )
}

fn provenance_entry() -> impl Strategy<Value = ProvenanceEntry> {
    (
        1u8..12,
        any::<u8>(),
        any::<u64>(),
        digest(),
        digest(),
        proptest::collection::vec(any::<u8>(), 0..200),
        any::<[u8; 64]>(),
    )
        .prop_map(
            |(action, flags, timestamp_us, previous, subject, details, signature)| {
                ProvenanceEntry {
                    action: Action::from_code(action),
                    flags,
                    timestamp_us,
                    previous,
                    subject,
                    details,
                    signature,
                }
            },
        )
}

fn index_entry() -> impl Strategy<Value = IndexEntry> {
    (
        any::<u64>(),
        any::<u64>(),
        any::<[u8; 16]>(),
        any::<[u8; 4]>(),
        any::<u32>(),
        any::<u64>(),
        digest(),
    )
        .prop_map(
            |(offset, record_len, block_id, code, metadata_len, timestamp_us, digest)| IndexEntry {
                offset,
                record_len,
                block_id,
                block_type: FourCC(code),
                metadata_len,
                timestamp_us,
                digest,
            },
        )
}

fn trailer() -> impl Strategy<Value = Trailer> {
    (
        36u64..1 << 40,
        0u64..1 << 40,
        0u64..1 << 40,
        0u64..1 << 40,
        any::<u64>(),
        any::<u64>(),
        digest(),
        any::<[u8; 64]>(),
        digest(),
    )
        .prop_map(
            |(
                records_offset,
                records_len,
                provenance_len,
                index_len,
                record_count,
                committed_us,
                head,
                signature,
                root,
            )| {
                Trailer {
                    records_offset,
                    provenance_offset: records_offset + records_len,
                    provenance_len,
                    index_offset: records_offset + records_len + provenance_len,
                    index_len,
                    record_count,
                    committed_us,
                    provenance_head: head,
                    commit_signature: signature,
                    merkle_root: root,
                }
            },
        )
}

fn rejects_truncation_and_trailing<T: std::fmt::Debug>(
    bytes: &[u8],
    decode: impl Fn(&[u8]) -> Result<T, maif_store::format::FormatError>,
) {
    assert!(
        decode(&bytes[..bytes.len() - 1]).is_err(),
        "accepted a short input"
    );
    let mut longer = bytes.to_vec();
    longer.push(0);
    assert!(decode(&longer).is_err(), "accepted a trailing byte");
}

proptest! {
    #[test]
    fn file_header_roundtrips(header in file_header()) {
        let bytes = header.to_bytes();
        prop_assert_eq!(FileHeader::decode(&bytes).unwrap(), header);
        prop_assert_eq!(FileHeader::decode(&bytes).unwrap().to_bytes(), bytes);
        rejects_truncation_and_trailing(&bytes, FileHeader::decode);
    }

    #[test]
    fn block_header_roundtrips(header in block_header()) {
        let bytes = header.to_bytes();
        prop_assert_eq!(BlockHeader::decode(&bytes).unwrap(), header);
        rejects_truncation_and_trailing(&bytes, BlockHeader::decode);
    }

    #[test]
    fn block_header_bytes_roundtrip(bytes in any::<[u8; 64]>()) {
        // Any 64 bytes that decode re-encode to themselves.
        if let Ok(header) = BlockHeader::decode(&bytes) {
            prop_assert_eq!(header.to_bytes(), bytes);
        }
    }

    #[test]
    fn record_roundtrips(
        id in any::<[u8; 16]>(),
        metadata in proptest::collection::vec(any::<u8>(), 0..300),
        data in proptest::collection::vec(any::<u8>(), 0..3000),
        signature in any::<[u8; 64]>(),
        link in any::<[u8; 8]>(),
    ) {
        let header = BlockHeader {
            block_id: id, block_type: FourCC::BINA, flags: 0, compression: 0, encryption: 0,
            metadata_len: metadata.len() as u32, data_offset: 64 + metadata.len() as u32,
            data_size: data.len() as u64, uncompressed_size: data.len() as u64, timestamp_us: 7, prev_link: link,
        };
        let bytes = encode_record(&header, &metadata, &data, &signature);
        let view = RecordView::decode(&bytes).unwrap();
        prop_assert_eq!(view.header, header);
        prop_assert_eq!(view.metadata, &metadata[..]);
        prop_assert_eq!(view.data, &data[..]);
        prop_assert_eq!(view.signature, &signature);
        prop_assert_eq!(encode_record(&view.header, view.metadata, view.data, view.signature), bytes.clone());
        rejects_truncation_and_trailing(&bytes, |b| RecordView::decode(b).map(|v| v.header));
    }

    #[test]
    fn metadata_section_roundtrips(custom in proptest::collection::btree_map("[a-z]{1,8}", ".{0,20}", 0..6)) {
        let json = serde_json::to_vec(&serde_json::json!({"agent_id": "a", "custom": custom})).unwrap();
        let section = MetadataSection { json };
        let bytes = section.to_bytes().unwrap();
        prop_assert_eq!(MetadataSection::decode(&bytes).unwrap(), section.clone());
        prop_assert_eq!(MetadataSection::decode(&bytes).unwrap().to_bytes().unwrap(), bytes.clone());
        rejects_truncation_and_trailing(&bytes, MetadataSection::decode);
    }

    #[test]
    fn provenance_section_roundtrips(entries in proptest::collection::vec(provenance_entry(), 0..6)) {
        let section = ProvenanceSection { entries };
        let bytes = section.to_bytes().unwrap();
        prop_assert_eq!(ProvenanceSection::decode(&bytes).unwrap(), section.clone());
        prop_assert_eq!(ProvenanceSection::decode(&bytes).unwrap().to_bytes().unwrap(), bytes.clone());
        rejects_truncation_and_trailing(&bytes, ProvenanceSection::decode);
    }

    #[test]
    fn index_section_roundtrips(entries in proptest::collection::vec(index_entry(), 0..20)) {
        let section = IndexSection { entries };
        let bytes = section.to_bytes();
        prop_assert_eq!(IndexSection::decode(&bytes).unwrap(), section.clone());
        prop_assert_eq!(IndexSection::decode(&bytes).unwrap().to_bytes(), bytes.clone());
        rejects_truncation_and_trailing(&bytes, IndexSection::decode);
    }

    #[test]
    fn trailer_roundtrips(trailer in trailer()) {
        let bytes = trailer.to_bytes();
        prop_assert_eq!(Trailer::decode(&bytes).unwrap(), trailer);
        prop_assert_eq!(Trailer::decode(&bytes).unwrap().to_bytes(), bytes);
        rejects_truncation_and_trailing(&bytes, Trailer::decode);
    }

    #[test]
    fn trailer_crc_catches_every_single_byte_flip(trailer in trailer(), at in 0usize..TRAILER_LEN, mask in 1u8..=255) {
        let mut bytes = trailer.to_bytes();
        bytes[at] ^= mask;
        prop_assert!(Trailer::decode(&bytes).is_err());
    }

    #[test]
    fn journal_roundtrips(records_end in any::<u64>(), tail in proptest::collection::vec(any::<u8>(), 0..500)) {
        let journal = Journal { records_end, tail };
        let bytes = journal.to_bytes();
        prop_assert_eq!(Journal::decode(&bytes).unwrap(), journal);
        rejects_truncation_and_trailing(&bytes, Journal::decode);
    }

    #[test]
    fn text_payload_roundtrips(text in ".{0,100}", lang in proptest::option::of("[a-z]{2}")) {
        let language = lang.map(|l| { let b = l.as_bytes(); [b[0], b[1]] });
        let payload = TextPayload::utf8(&text, language);
        let bytes = payload.to_bytes();
        prop_assert_eq!(TextPayload::decode(&bytes).unwrap(), payload.clone());
        prop_assert_eq!(TextPayload::decode(&bytes).unwrap().as_string().unwrap(), text);
    }

    #[test]
    fn embedding_payload_roundtrips(dimension in 0u32..16, count in 0u32..6, half in any::<bool>(), fill in any::<u8>()) {
        let dtype = if half { EmbeddingDtype::Float16 } else { EmbeddingDtype::Float32 };
        let element = if half { 2 } else { 4 };
        let payload = EmbeddingPayload { dimension, count, dtype, values: vec![fill; (dimension * count) as usize * element] };
        let bytes = payload.to_bytes();
        prop_assert_eq!(EmbeddingPayload::decode(&bytes).unwrap(), payload);
        rejects_truncation_and_trailing(&bytes, EmbeddingPayload::decode);
    }

    #[test]
    fn image_payload_roundtrips(format in 0u8..10, width in any::<u32>(), height in any::<u32>(), image in proptest::collection::vec(any::<u8>(), 0..100)) {
        let payload = ImagePayload { format: match format { 1 => ImageFormat::Png, 2 => ImageFormat::Jpeg, 0 => ImageFormat::Unknown, 3 => ImageFormat::Gif, 4 => ImageFormat::Webp, n => ImageFormat::Other(n) }, width, height, image };
        let bytes = payload.to_bytes();
        prop_assert_eq!(ImagePayload::decode(&bytes).unwrap(), payload);
    }

    #[test]
    fn decoders_never_panic_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = FileHeader::decode(&bytes);
        let _ = BlockHeader::decode(&bytes);
        let _ = RecordView::decode(&bytes);
        let _ = MetadataSection::decode(&bytes);
        let _ = ProvenanceSection::decode(&bytes);
        let _ = IndexSection::decode(&bytes);
        let _ = Trailer::decode(&bytes);
        let _ = Journal::decode(&bytes);
        let _ = TextPayload::decode(&bytes);
        let _ = EmbeddingPayload::decode(&bytes);
        let _ = ImagePayload::decode(&bytes);
    }
}

#[test]
fn f16_widening_matches_known_values() {
    use maif_store::format::payload::f16_to_f32;
    assert_eq!(f16_to_f32(0x3c00), 1.0);
    assert_eq!(f16_to_f32(0xc000), -2.0);
    assert_eq!(f16_to_f32(0x7bff), 65504.0);
    assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
    assert_eq!(f16_to_f32(0x0400), 2f32.powi(-14));
    assert!(f16_to_f32(0x7c00).is_infinite());
    assert!(f16_to_f32(0x7e00).is_nan());
    assert_eq!(f16_to_f32(0x8000).to_bits(), (-0.0f32).to_bits());
}

#[test]
fn unknown_major_version_is_rejected_clearly() {
    let mut bytes = FileHeader::new(1, [0; 16]).to_bytes();
    bytes[4] = 4;
    let error = FileHeader::decode(&bytes).unwrap_err().to_string();
    assert!(error.contains("unsupported MAIF version 4.0"), "{error}");
}

// --- Merkle: an independent, literal transcription of RFC 9162 section 2.1.1 ---

fn reference_mth(leaves: &[Digest]) -> Digest {
    match leaves.len() {
        0 => Sha256::digest([]).into(),
        1 => {
            let mut h = Sha256::new();
            h.update([0u8]);
            h.update(leaves[0]);
            h.finalize().into()
        }
        n => {
            let mut k = 1;
            while k * 2 < n {
                k *= 2;
            }
            let mut h = Sha256::new();
            h.update([1u8]);
            h.update(reference_mth(&leaves[..k]));
            h.update(reference_mth(&leaves[k..]));
            h.finalize().into()
        }
    }
}

fn leaves(n: usize) -> Vec<Digest> {
    (0..n)
        .map(|i| Sha256::digest((i as u64).to_le_bytes()).into())
        .collect()
}

#[test]
fn merkle_root_matches_the_rfc_9162_reference() {
    for n in (0..=65).chain([1000]) {
        let leaves = leaves(n);
        assert_eq!(merkle_root(&leaves), reference_mth(&leaves), "size {n}");
    }
}

#[test]
fn merkle_root_differs_from_duplicate_last_node_trees() {
    // CVE-2012-2459: with duplication, [a, b, c] and [a, b, c, c] share a root. Not here.
    let three = leaves(3);
    let mut four = three.clone();
    four.push(three[2]);
    assert_ne!(merkle_root(&three), merkle_root(&four));
}

#[test]
fn inclusion_proofs_verify_and_reject_wrong_leaves() {
    for n in [1usize, 2, 3, 5, 6, 7, 9, 33, 1000] {
        let leaves = leaves(n);
        let root = merkle_root(&leaves);
        for index in (0..n).step_by((n / 17).max(1)) {
            let proof = inclusion_proof(&leaves, index).unwrap();
            assert!(
                verify_inclusion(&leaves[index], index as u64, n as u64, &proof, &root),
                "n={n} i={index}"
            );
            let other = leaves[(index + 1) % n];
            if other != leaves[index] {
                assert!(
                    !verify_inclusion(&other, index as u64, n as u64, &proof, &root),
                    "n={n} i={index} wrong leaf"
                );
            }
        }
        assert!(inclusion_proof(&leaves, n).is_none());
    }
}

#[test]
fn consistency_proofs_verify_and_reject_forks() {
    let all = leaves(70);
    for new_size in [1usize, 2, 3, 5, 8, 9, 33, 70] {
        let new_root = merkle_root(&all[..new_size]);
        for old_size in 0..=new_size {
            let old_root = merkle_root(&all[..old_size]);
            let proof = consistency_proof(&all[..new_size], old_size).unwrap();
            assert!(
                verify_consistency(
                    old_size as u64,
                    new_size as u64,
                    &old_root,
                    &new_root,
                    &proof
                ),
                "{old_size} -> {new_size}"
            );
            if old_size > 0 && old_size < new_size {
                let mut forked = all[..old_size].to_vec();
                forked[0][0] ^= 1;
                assert!(!verify_consistency(
                    old_size as u64,
                    new_size as u64,
                    &merkle_root(&forked),
                    &new_root,
                    &proof
                ));
            }
        }
    }
}
