//! Golden vectors: a small artifact written with a fixed key, ids and timestamps must come
//! out byte for byte as stored in `tests/vectors/`, with the digests, Merkle roots and
//! signatures recorded beside it. Regenerating them after an intentional format change is
//! its own command, never a mode of this test:
//! `cargo run --example regenerate_vectors`.

mod common;

use std::path::PathBuf;

use maif_store::format::digest::SignedKind;
use maif_store::format::merkle::merkle_root;
use maif_store::format::{RecordView, TRAILER_LEN};
use maif_store::keys::PublicKey;
use serde_json::Value;

fn vectors() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

#[test]
fn writer_reproduces_the_golden_artifact_byte_for_byte() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("small.maif");
    common::block_on(common::write_small_artifact(&path));
    let written = std::fs::read(&path).expect("read");
    let description = common::block_on(common::describe(&path));
    let golden = std::fs::read(vectors().join("small.maif")).expect("tests/vectors/small.maif");
    let first_difference = written.iter().zip(&golden).position(|(a, b)| a != b);
    assert!(
        written == golden,
        "written artifact differs from the golden vector (lengths {} vs {}, first difference at byte {:?})",
        written.len(),
        golden.len(),
        first_difference
    );
    let expected: Value =
        serde_json::from_slice(&std::fs::read(vectors().join("small.json")).expect("small.json"))
            .expect("json");
    assert_eq!(description, expected);
}

#[test]
fn golden_values_check_out_from_the_stored_bytes() {
    // Recompute recorded values from the stored bytes with the primitives alone.
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
    // The last 32 bytes of the file are the Merkle root, and the file ends with a trailer.
    assert_eq!(
        hex::encode(&bytes[bytes.len() - 32..]),
        expected["merkle_root"].as_str().expect("root")
    );
    assert_eq!(
        &bytes[bytes.len() - TRAILER_LEN..bytes.len() - TRAILER_LEN + 8],
        b"MAIFTRLR"
    );
    for commit in expected["commits"].as_array().expect("commits") {
        let digest: [u8; 32] = hex::decode(commit["digest"].as_str().expect("digest"))
            .expect("hex")
            .try_into()
            .expect("32");
        let signature: [u8; 64] = hex::decode(commit["signature"].as_str().expect("sig"))
            .expect("hex")
            .try_into()
            .expect("64");
        assert!(key.verify_strict(SignedKind::Commit, &digest, &signature));
    }
}
