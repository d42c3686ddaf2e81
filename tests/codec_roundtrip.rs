//! Property tests: for every structure, decode(encode(x)) == x and encode(decode(b)) == b;
//! trailing and missing bytes are rejected. Merkle roots and proofs against an independent
//! recursive implementation of RFC 9162.

use maif_store::format::block::{BlockHeader, Encryption, RecordView, encode_record};
use maif_store::format::compression::Compression;
use maif_store::format::digest::Digest;
use maif_store::format::merkle::{
    Frontier, consistency_proof, inclusion_proof, merkle_root, verify_consistency, verify_inclusion,
};
use maif_store::format::payload::{
    EmbeddingDtype, EmbeddingPayload, ImageFormat, ImagePayload, TextPayload,
};
use maif_store::format::provenance::{ProvenanceEntry, decode_entries, encode_entries};
use maif_store::format::run::{RunEntry, RunHead, RunRef, encode_run, tier_of};
use maif_store::format::segment::SegmentHeader;
use maif_store::format::{
    Action, FileHeader, FourCC, IndexEntry, MetadataSection, TRAILER_LEN, Trailer,
};
use maif_store::format::{Codec, FixedCodec};
use proptest::prelude::*;
use sha2::{Digest as _, Sha256};

fn digest() -> impl Strategy<Value = Digest> {
    any::<[u8; 32]>()
}

fn file_header() -> impl Strategy<Value = FileHeader> {
    (any::<u8>(), any::<u16>(), any::<u64>(), any::<[u8; 16]>()).prop_map(
        |(_minor, flags, created_us, artifact_id)| FileHeader {
            major: 3,
            minor: 1,
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
                    compression: Compression(if compressed { 2 } else { 0 }),
                    encryption: Encryption(encryption),
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
    )
        .prop_map(
            |(action, flags, timestamp_us, previous, subject, details)| ProvenanceEntry {
                action: Action::from_code(action),
                flags,
                timestamp_us,
                previous,
                subject,
                details,
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
    (0u64..1 << 60, 0u64..1 << 60, digest()).prop_map(
        |(segment_offset, segment_len, merkle_root)| Trailer {
            segment_offset,
            segment_len,
            merkle_root,
        },
    )
}

fn run_ref() -> impl Strategy<Value = RunRef> {
    (
        any::<u64>(),
        0u64..1 << 50,
        0u64..1 << 20,
        1u64..100_000,
        digest(),
        1u8..=3,
    )
        .prop_map(
            |(seq, segment_offset, part_offset, entry_count, head_digest, streak)| RunRef {
                seq,
                segment_offset,
                part_offset,
                head_len: maif_store::format::run::expected_head_len(entry_count),
                head_digest,
                entry_count,
                tier: tier_of(entry_count),
                streak,
            },
        )
}

fn segment_header() -> impl Strategy<Value = SegmentHeader> {
    (
        (1u64..1000, any::<u64>(), 1000u64..1 << 40, 0u64..1 << 40),
        (0u64..1000, 1u64..50, 0u64..100_000, 0u64..10_000),
        (digest(), digest(), digest(), digest(), digest()),
        (any::<bool>(), proptest::option::of(run_ref())),
    )
        .prop_map(
            |(
                (seq, committed_us, records_start, records_len),
                (records_added, provenance_added, previous_records, run_entries),
                (genesis, previous_commit, last_record_digest, provenance_head, merkle_root),
                (sealed, older_run),
            )| {
                let record_count = previous_records + records_added;
                let segment_offset = records_start + records_len;
                let provenance_len = provenance_added * 100;
                let frontier = Frontier::encoded_len(record_count);
                let run_at = maif_store::format::segment::FRONTIER_AT as u64 + frontier;
                // Either a run in this segment, or (when there are records) an older one.
                let (run_len, newest_run) =
                    if run_entries > 0 && run_entries <= record_count.max(1) && record_count > 0 {
                        let entries = run_entries.min(record_count);
                        let run = RunRef {
                            seq,
                            segment_offset,
                            part_offset: run_at,
                            head_len: maif_store::format::run::expected_head_len(entries),
                            head_digest: genesis,
                            entry_count: entries,
                            tier: tier_of(entries),
                            streak: 1,
                        };
                        (maif_store::format::run::run_part_len(entries), Some(run))
                    } else if record_count > 0 {
                        let mut older = older_run.unwrap_or(RunRef {
                            seq: 0,
                            segment_offset: 0,
                            part_offset: 0,
                            head_len: 0,
                            head_digest: [0; 32],
                            entry_count: 1,
                            tier: 0,
                            streak: 1,
                        });
                        older.seq = seq - 1;
                        older.segment_offset = records_start / 2;
                        older.entry_count = older.entry_count.min(record_count);
                        older.tier = tier_of(older.entry_count);
                        older.head_len =
                            maif_store::format::run::expected_head_len(older.entry_count);
                        (0, Some(older))
                    } else {
                        (0, None)
                    };
                SegmentHeader {
                    seq,
                    committed_us,
                    segment_offset,
                    segment_len: run_at + run_len + provenance_len,
                    records_start,
                    record_count,
                    records_added,
                    provenance_count: provenance_added + 7,
                    provenance_added,
                    provenance_len,
                    run_len,
                    flags: u32::from(sealed),
                    genesis,
                    previous_commit,
                    previous_segment_offset: records_start - 1,
                    last_record_digest,
                    provenance_head,
                    merkle_root,
                    newest_run,
                }
            },
        )
}

fn run_entries() -> impl Strategy<Value = Vec<RunEntry>> {
    proptest::collection::vec((index_entry(), 1u32..5), 1..1200).prop_map(|entries| {
        let mut out: Vec<RunEntry> = entries
            .into_iter()
            .enumerate()
            .map(|(position, (entry, version))| RunEntry {
                entry,
                position: position as u64,
                version,
            })
            .collect();
        out.sort_by_key(RunEntry::key);
        out
    })
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
        let bytes = header.to_array();
        prop_assert_eq!(FileHeader::decode(&bytes).unwrap(), header);
        prop_assert_eq!(FileHeader::decode(&bytes).unwrap().to_array(), bytes);
        rejects_truncation_and_trailing(&bytes, FileHeader::decode);
    }

    #[test]
    fn block_header_roundtrips(header in block_header()) {
        let bytes = header.to_array();
        prop_assert_eq!(BlockHeader::decode(&bytes).unwrap(), header);
        rejects_truncation_and_trailing(&bytes, BlockHeader::decode);
    }

    #[test]
    fn block_header_bytes_roundtrip(bytes in any::<[u8; 64]>()) {
        // Any 64 bytes that decode re-encode to themselves.
        if let Ok(header) = BlockHeader::decode(&bytes) {
            prop_assert_eq!(header.to_array(), bytes);
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
            block_id: id, block_type: FourCC::BINA, flags: 0, compression: Compression(0), encryption: Encryption(0),
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
    fn provenance_entries_roundtrip(entries in proptest::collection::vec(provenance_entry(), 0..6)) {
        let bytes = encode_entries(&entries).unwrap();
        let count = entries.len() as u64;
        prop_assert_eq!(decode_entries(&bytes, count).unwrap(), entries.clone());
        prop_assert_eq!(encode_entries(&decode_entries(&bytes, count).unwrap()).unwrap(), bytes.clone());
        if !bytes.is_empty() {
            rejects_truncation_and_trailing(&bytes, |b| decode_entries(b, count));
        }
    }

    #[test]
    fn trailer_roundtrips(trailer in trailer()) {
        let bytes = trailer.to_array();
        prop_assert_eq!(Trailer::decode(&bytes).unwrap(), trailer);
        prop_assert_eq!(Trailer::decode(&bytes).unwrap().to_array(), bytes);
        rejects_truncation_and_trailing(&bytes, Trailer::decode);
        let at = trailer.segment_offset + trailer.segment_len;
        prop_assert_eq!(Trailer::decode_at(&bytes, at).unwrap(), trailer);
        prop_assert!(Trailer::decode_at(&bytes, at + 1).is_err(), "a trailer counts only at its own offset");
    }

    #[test]
    fn trailer_crc_catches_every_single_byte_flip(trailer in trailer(), at in 0usize..TRAILER_LEN, mask in 1u8..=255) {
        let mut bytes = trailer.to_array();
        bytes[at] ^= mask;
        prop_assert!(Trailer::decode(&bytes).is_err());
    }

    #[test]
    fn segment_header_roundtrips(header in segment_header()) {
        let bytes = header.to_array();
        prop_assert_eq!(SegmentHeader::decode(&bytes).unwrap(), header);
        prop_assert_eq!(SegmentHeader::decode(&bytes).unwrap().to_array(), bytes);
        rejects_truncation_and_trailing(&bytes, SegmentHeader::decode);
    }

    #[test]
    fn runs_roundtrip_page_by_page(entries in run_entries()) {
        let (bytes, run) = encode_run(&entries, None).unwrap();
        prop_assert_eq!(bytes.len() as u64, maif_store::format::run::run_part_len(entries.len() as u64));
        let head = RunHead::decode(&bytes[..run.head_len as usize]).unwrap();
        prop_assert_eq!(head.entry_count, entries.len() as u64);
        let mut decoded = Vec::new();
        for page in 0..head.directory.len() {
            let range = head.page_range(page);
            decoded.extend(head.decode_page(page, &bytes[range.start as usize..range.end as usize]).unwrap());
        }
        prop_assert_eq!(&decoded, &entries);
        prop_assert_eq!(head.page_range(head.directory.len() - 1).end, bytes.len() as u64);
        // Every id's entries are in the pages the directory points a lookup to.
        for entry in entries.iter().step_by(37) {
            let pages = head.pages_for(&entry.entry.block_id);
            let page = (entries.iter().position(|e| e == entry).unwrap()) / maif_store::format::run::RUN_PAGE_ENTRIES;
            prop_assert!(pages.contains(&page), "page {} not in {:?}", page, pages);
        }
        rejects_truncation_and_trailing(&bytes[..run.head_len as usize], RunHead::decode);
    }

    #[test]
    fn run_pages_catch_every_flip(entries in run_entries(), at in any::<prop::sample::Index>(), mask in 1u8..=255) {
        let (bytes, run) = encode_run(&entries, None).unwrap();
        let head = RunHead::decode(&bytes[..run.head_len as usize]).unwrap();
        let range = head.page_range(0);
        let mut page = bytes[range.start as usize..range.end as usize].to_vec();
        let at = at.index(page.len());
        page[at] ^= mask;
        prop_assert!(head.decode_page(0, &page).is_err());
    }

    #[test]
    fn frontier_matches_the_reference_root_and_counts_hashes(n in 0usize..300) {
        let digests = leaves(n);
        let mut frontier = Frontier::new();
        let mut hashes = 0u64;
        for (i, d) in digests.iter().enumerate() {
            let used = frontier.append(d);
            prop_assert!(u64::from(used) <= 1 + 64 - (i as u64 + 1).leading_zeros() as u64);
            hashes += u64::from(used);
        }
        prop_assert_eq!(frontier.root(), reference_mth(&digests));
        prop_assert_eq!(frontier.hashes().len() as u32, (n as u64).count_ones());
        // Appending n leaves costs n leaf hashes and n - popcount(n) node hashes.
        prop_assert_eq!(hashes, 2 * n as u64 - u64::from((n as u64).count_ones()));
        let decoded = Frontier::decode(n as u64, &frontier.to_bytes()).unwrap();
        prop_assert_eq!(decoded, frontier);
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
        let _ = decode_entries(&bytes, 3);
        let _ = Trailer::decode(&bytes);
        let _ = SegmentHeader::decode(&bytes);
        let _ = RunHead::decode(&bytes);
        let _ = maif_store::format::SegmentHead::decode_prefix(&bytes);
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
fn other_versions_are_rejected_clearly() {
    let mut bytes = FileHeader::new(1, [0; 16]).to_array();
    bytes[4] = 4;
    let error = FileHeader::decode(&bytes).unwrap_err().to_string();
    assert!(error.contains("unsupported MAIF version 4.1"), "{error}");
    bytes[4] = 3;
    bytes[5] = 0;
    let error = FileHeader::decode(&bytes).unwrap_err().to_string();
    assert!(
        error.contains("unsupported MAIF version 3.0") && error.contains("pre-release"),
        "{error}"
    );
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
