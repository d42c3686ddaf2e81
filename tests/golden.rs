//! Golden vectors: a small artifact written with a fixed key, ids and timestamps must come
//! out byte for byte as stored in `tests/vectors/`, with the digests, Merkle root and
//! signatures recorded beside it.
//!
//! To regenerate after an intentional format change: `MAIF_REGENERATE_VECTORS=1 cargo test --test golden`.

mod common;

use std::path::PathBuf;

use maif_store::format::digest::{SignedKind, genesis_digest};
use maif_store::format::merkle::merkle_root;
use maif_store::format::{ProvenanceSection, RecordView};
use maif_store::keys::PublicKey;
use serde_json::{Value, json};

fn vectors() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

fn describe(bytes: &[u8], head: &maif_store::store::Head) -> Value {
    let records: Vec<Value> = head
        .index
        .entries
        .iter()
        .map(|e| {
            let record =
                RecordView::decode(&bytes[e.offset as usize..(e.offset + e.record_len) as usize])
                    .expect("record");
            json!({
                "offset": e.offset,
                "length": e.record_len,
                "block_id": hex::encode(e.block_id),
                "type": e.block_type.to_string(),
                "digest": hex::encode(record.digest()),
                "signature": hex::encode(record.signature),
            })
        })
        .collect();
    let provenance = ProvenanceSection::decode(&head.provenance_section).expect("provenance");
    json!({
        "file_len": bytes.len(),
        "sha256": hex::encode(maif_store::format::digest::sha256(bytes)),
        "public_key": hex::encode(common::test_key().public_key()),
        "genesis_digest": hex::encode(genesis_digest(&head.file_header, &head.metadata_section)),
        "records": records,
        "provenance": provenance.entries.iter().map(|p| json!({
            "action": p.action.name(),
            "digest": hex::encode(p.digest().expect("digest")),
            "signature": hex::encode(p.signature),
        })).collect::<Vec<_>>(),
        "merkle_root": hex::encode(head.trailer.merkle_root),
        "commit_signature": hex::encode(head.trailer.commit_signature),
    })
}

#[test]
fn writer_reproduces_the_golden_artifact_byte_for_byte() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("small.maif");
    common::block_on(common::write_small_artifact(&path));
    let written = std::fs::read(&path).expect("read");
    let head = common::block_on(common::file_store(&path).head()).expect("head");
    let description = describe(&written, &head);

    let golden_file = vectors().join("small.maif");
    let golden_json = vectors().join("small.json");
    if std::env::var_os("MAIF_REGENERATE_VECTORS").is_some() {
        std::fs::write(&golden_file, &written).expect("write vector");
        std::fs::write(
            &golden_json,
            serde_json::to_string_pretty(&description).expect("json") + "\n",
        )
        .expect("write json");
    }
    let golden = std::fs::read(&golden_file).expect("tests/vectors/small.maif is missing");
    let first_difference = written.iter().zip(&golden).position(|(a, b)| a != b);
    assert!(
        written == golden,
        "written artifact differs from the golden vector (lengths {} vs {}, first difference at byte {:?})",
        written.len(),
        golden.len(),
        first_difference
    );
    let expected: Value =
        serde_json::from_slice(&std::fs::read(&golden_json).expect("small.json")).expect("json");
    assert_eq!(description, expected);
}

#[test]
fn golden_values_check_out_independently() {
    // Recompute every recorded value from the stored bytes with the primitives alone.
    let bytes = std::fs::read(vectors().join("small.maif")).expect("vector");
    let expected: Value =
        serde_json::from_slice(&std::fs::read(vectors().join("small.json")).expect("json"))
            .expect("json");
    let key_bytes: [u8; 32] = hex::decode(expected["public_key"].as_str().expect("key"))
        .expect("hex")
        .try_into()
        .expect("32 bytes");
    let key = PublicKey::from_bytes(&key_bytes).expect("key");
    let mut digests = Vec::new();
    for record in expected["records"].as_array().expect("records") {
        let offset = record["offset"].as_u64().expect("offset") as usize;
        let length = record["length"].as_u64().expect("length") as usize;
        let view = RecordView::decode(&bytes[offset..offset + length]).expect("record");
        let digest = view.digest();
        assert_eq!(
            hex::encode(digest),
            record["digest"].as_str().expect("digest")
        );
        assert!(key.verify_strict(SignedKind::Block, &digest, view.signature));
        digests.push(digest);
    }
    assert_eq!(
        hex::encode(merkle_root(&digests)),
        expected["merkle_root"].as_str().expect("root")
    );
    // The last 32 bytes of the file are the Merkle root.
    assert_eq!(
        hex::encode(&bytes[bytes.len() - 32..]),
        expected["merkle_root"].as_str().expect("root")
    );
}
