//! Proofs: inclusion for every leaf and consistency for every pair of commits of a
//! 40-commit artifact, each checked twice: by `verify_proof`, and by an independent
//! reference written here from RFC 9162 section 2.1 and docs/FORMAT.md, which shares no code
//! with the crate (its own JSON reading, SHA-256 from `sha2`, Ed25519 from `ed25519-dalek`).
//! And any byte changed anywhere in a proof makes it fail.

mod common;

use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use maif_store::artifact::{
    ArtifactReader, ArtifactWriter, CreateOptions, NewBlock, prove_consistency, prove_inclusion,
    verify_proof,
};
use maif_store::format::FourCC;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

type Hash = [u8; 32];

fn sha(parts: &[&[u8]]) -> Hash {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn unhex(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("hex string")).expect("hex")
}

fn hash(v: &Value) -> Hash {
    unhex(v).try_into().expect("32 bytes")
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// The reference's reading of a proof's base: the public key from the metadata JSON and the
/// chain seed.
fn reference_base(proof: &Value) -> (VerifyingKey, Hash) {
    let header = unhex(&proof["base"]["file_header"]);
    let metadata = unhex(&proof["base"]["metadata_section"]);
    let json: Value = serde_json::from_slice(&metadata[4..]).expect("metadata JSON");
    let key: [u8; 32] = hex::decode(json["public_key"].as_str().expect("key"))
        .expect("hex")
        .try_into()
        .expect("32");
    let seed = sha(&[b"MAIF-3.1/genesis\0", &header, &metadata]);
    (VerifyingKey::from_bytes(&key).expect("key"), seed)
}

/// The reference's check of a commit: the signature over SHA-256(tag | header | frontier),
/// the chain seed at header bytes 104..136, and the root at 240..272 folded from the
/// frontier. Returns (record count, root).
fn reference_commit(commit: &Value, key: &VerifyingKey, seed: &Hash) -> (u64, Hash) {
    let header = unhex(&commit["segment_header"]);
    let frontier = unhex(&commit["frontier"]);
    let signature: [u8; 64] = unhex(&commit["signature"]).try_into().expect("64");
    let digest = sha(&[b"MAIF-3.1/commit\0", &header, &frontier]);
    let mut message = b"MAIF-3.1/sign/commit\0".to_vec();
    message.extend_from_slice(&digest);
    key.verify(&message, &Signature::from_bytes(&signature))
        .expect("commit signature");
    assert_eq!(&header[104..136], seed, "chain seed");
    let count = u64_at(&header, 48);
    let hashes: Vec<Hash> = frontier
        .chunks(32)
        .map(|c| c.try_into().expect("32"))
        .collect();
    assert_eq!(hashes.len() as u32, count.count_ones());
    let root = match hashes.split_last() {
        None => sha(&[]),
        Some((last, rest)) => rest
            .iter()
            .rev()
            .fold(*last, |acc, left| sha(&[&[1], left, &acc])),
    };
    assert_eq!(&header[240..272], &root, "root");
    (count, root)
}

/// RFC 9162 2.1.3.2, transcribed.
fn reference_inclusion(leaf: &Hash, index: u64, size: u64, path: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = sha(&[&[0], leaf]);
    for p in path {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = sha(&[&[1], p, &r]);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            r = sha(&[&[1], &r, p]);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    sn == 0 && r == *root
}

/// RFC 9162 2.1.4.2, transcribed.
fn reference_consistency(m: u64, n: u64, old: &Hash, new: &Hash, proof: &[Hash]) -> bool {
    if m == n {
        return proof.is_empty() && old == new;
    }
    if m == 0 {
        return proof.is_empty();
    }
    let mut path = proof.to_vec();
    if m.is_power_of_two() {
        path.insert(0, *old);
    }
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    let (mut fn_, mut sn) = (m - 1, n - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = sha(&[&[1], c, &fr]);
            sr = sha(&[&[1], c, &sr]);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            sr = sha(&[&[1], &sr, c]);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    sn == 0 && fr == *old && sr == *new
}

fn forty_commits(path: &std::path::Path) {
    common::block_on(async {
        let options = CreateOptions {
            agent_id: "proofs".into(),
            ..CreateOptions::default()
        };
        let mut writer =
            ArtifactWriter::create(common::file_store(path), common::test_key(), options)
                .await
                .expect("create");
        for commit in 1..=40u32 {
            for b in 0..commit % 5 {
                writer
                    .add(NewBlock::new(
                        FourCC::BINA,
                        vec![(commit * 7 + b) as u8; 50],
                    ))
                    .await
                    .expect("add");
            }
            if commit % 5 == 0 {
                // A commit that adds no record (an event): consistency with it is trivial.
                writer
                    .record_event(maif_store::format::Action::Convert, Default::default())
                    .await
                    .expect("event");
            }
            writer.commit().await.expect("commit");
        }
    });
}

#[test]
fn every_leaf_and_every_pair_of_commits_proves_and_checks_independently() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("forty.maif");
    forty_commits(&path);
    let reader = common::block_on(ArtifactReader::open(common::file_store(&path))).expect("open");
    assert_eq!(reader.commit().seq(), 40);
    let blocks = common::block_on(reader.blocks()).expect("list");
    for info in blocks.iter() {
        let proof =
            common::block_on(prove_inclusion(&reader, &info.entry.block_id, None)).expect("prove");
        let checked = verify_proof(&proof, Some(common::test_key().public_key())).expect("valid");
        assert_eq!(checked.position, Some(info.position));
        // The reference.
        let proof: Value = serde_json::from_str(&proof).expect("json");
        let (key, seed) = reference_base(&proof);
        let (size, root) = reference_commit(&proof["commit"], &key, &seed);
        let header = unhex(&proof["leaf"]["record_header"]);
        assert_eq!(&header[..16], &info.entry.block_id, "the leaf is the block");
        let content = hash(&proof["leaf"]["content_digest"]);
        let leaf = sha(&[b"MAIF-3.1/block\0", &header, &content]);
        assert_eq!(leaf, info.entry.digest);
        let path: Vec<Hash> = proof["audit_path"]
            .as_array()
            .expect("path")
            .iter()
            .map(hash)
            .collect();
        let index = proof["leaf"]["position"].as_u64().expect("position");
        assert!(
            reference_inclusion(&leaf, index, size, &path, &root),
            "leaf {index}"
        );
    }
    let mut pairs = 0;
    for old in 0..=40u64 {
        for new in old..=40u64 {
            let proof = common::block_on(prove_consistency(&reader, old, new)).expect("prove");
            let checked = verify_proof(&proof, None).expect("valid");
            assert_eq!((checked.old_commit, checked.commit), (Some(old), new));
            let proof: Value = serde_json::from_str(&proof).expect("json");
            let (key, seed) = reference_base(&proof);
            let (m, old_root) = reference_commit(&proof["old_commit"], &key, &seed);
            let (n, new_root) = reference_commit(&proof["new_commit"], &key, &seed);
            let path: Vec<Hash> = proof["consistency_path"]
                .as_array()
                .expect("path")
                .iter()
                .map(hash)
                .collect();
            assert!(
                reference_consistency(m, n, &old_root, &new_root, &path),
                "commits {old} -> {new}"
            );
            pairs += 1;
        }
    }
    assert_eq!(pairs, 41 * 42 / 2);
    assert!(
        common::block_on(prove_consistency(&reader, 30, 20)).is_err(),
        "the older commit comes first"
    );
}

#[test]
fn any_changed_byte_in_a_proof_makes_it_fail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("forty.maif");
    forty_commits(&path);
    let reader = common::block_on(ArtifactReader::open(common::file_store(&path))).expect("open");
    let block = common::block_on(reader.blocks()).expect("list")[17]
        .entry
        .block_id;
    let proofs = [
        common::block_on(prove_inclusion(&reader, &block, None)).expect("prove"),
        common::block_on(prove_consistency(&reader, 13, 37)).expect("prove"),
    ];
    for proof in &proofs {
        assert!(verify_proof(proof, None).is_ok());
        let bytes = proof.as_bytes();
        for at in 0..bytes.len() {
            for mask in [0x01u8, 0x20, 0x80] {
                let mut changed = bytes.to_vec();
                changed[at] ^= mask;
                let accepted = std::str::from_utf8(&changed)
                    .ok()
                    .is_some_and(|text| verify_proof(text, None).is_ok());
                assert!(
                    !accepted,
                    "byte {at} ^ {mask:#04x} ({:?}) still verifies",
                    bytes[at] as char
                );
            }
        }
        // Dropping or adding a byte fails too.
        assert!(verify_proof(&proof[..proof.len() - 2], None).is_err());
        assert!(verify_proof(&format!("{proof} "), None).is_err());
    }
}
