//! Attacks without the key: reordering, removing and substituting must all be detected.

mod common;

use maif_store::SigningKey;
use maif_store::artifact::{
    ArtifactWriter, CreateOptions, NewBlock, VerifyOptions, VerifyReport, verify,
};
use maif_store::format::merkle::merkle_root;
use maif_store::format::{FourCC, IndexEntry, IndexSection, Trailer};
use maif_store::store::Head;

/// Re-lays the artifact with `order` (positions into the original records), rebuilding the
/// index, offsets and Merkle root consistently, as an attacker without the key can.
fn relayout(original: &[u8], head: &Head, order: &[usize]) -> Vec<u8> {
    let records_offset = head.trailer.records_offset as usize;
    let mut out = original[..records_offset].to_vec();
    let mut entries: Vec<IndexEntry> = Vec::new();
    for &position in order {
        let entry = head.index.entries[position];
        let bytes = &original[entry.offset as usize..(entry.offset + entry.record_len) as usize];
        entries.push(IndexEntry {
            offset: out.len() as u64,
            ..entry
        });
        out.extend_from_slice(bytes);
    }
    let provenance_offset = out.len() as u64;
    out.extend_from_slice(&head.provenance_section);
    let index = IndexSection { entries }.to_bytes();
    let index_offset = out.len() as u64;
    out.extend_from_slice(&index);
    let digests: Vec<_> = order
        .iter()
        .map(|p| head.index.entries[*p].digest)
        .collect();
    let trailer = Trailer {
        provenance_offset,
        index_offset,
        index_len: index.len() as u64,
        record_count: order.len() as u64,
        merkle_root: merkle_root(&digests),
        ..head.trailer
    };
    out.extend_from_slice(&trailer.to_bytes());
    out
}

fn check(bytes: &[u8], options: VerifyOptions) -> VerifyReport {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("attacked.maif");
    std::fs::write(&path, bytes).expect("write");
    common::block_on(verify(common::file_store(&path), options)).expect("verify reports")
}

fn original() -> (tempfile::TempDir, Vec<u8>, Head) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("small.maif");
    common::block_on(common::write_small_artifact(&path));
    let head = common::block_on(common::file_store(&path).head()).expect("head");
    (dir, std::fs::read(&path).expect("read"), head)
}

#[test]
fn an_unchanged_relayout_still_verifies() {
    // Guards the helper: with the original order it must rebuild the file exactly.
    let (_dir, bytes, head) = original();
    let order: Vec<usize> = (0..head.index.entries.len()).collect();
    assert_eq!(relayout(&bytes, &head, &order), bytes);
    assert!(check(&bytes, VerifyOptions::default()).valid);
}

#[test]
fn reordering_blocks_is_detected() {
    let (_dir, bytes, head) = original();
    let report = check(
        &relayout(&bytes, &head, &[0, 2, 1, 3, 4]),
        VerifyOptions::default(),
    );
    assert!(!report.valid);
    assert!(
        report.problems.iter().any(|p| p.area == "commit"),
        "{:?}",
        report.problems
    );
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.reason.contains("hash chain broken")),
        "{:?}",
        report.problems
    );
}

#[test]
fn removing_a_block_is_detected() {
    let (_dir, bytes, head) = original();
    for removed in 0..head.index.entries.len() {
        let order: Vec<usize> = (0..head.index.entries.len())
            .filter(|p| *p != removed)
            .collect();
        let report = check(&relayout(&bytes, &head, &order), VerifyOptions::default());
        assert!(!report.valid, "removing block {removed} went unnoticed");
        let quick = check(
            &relayout(&bytes, &head, &order),
            VerifyOptions {
                quick: true,
                ..VerifyOptions::default()
            },
        );
        assert!(
            !quick.valid,
            "quick verification missed the removal of block {removed}"
        );
    }
    // Dropping the newest block and rolling the trailer back is also caught.
    let report = check(
        &relayout(&bytes, &head, &[0, 1, 2, 3]),
        VerifyOptions::default(),
    );
    assert!(!report.valid);
}

#[test]
fn substituting_the_public_key_is_detected() {
    let (_dir, bytes, head) = original();
    let attacker = SigningKey::from_seed(&[0x66; 32]);
    let ours = hex::encode(common::test_key().public_key());
    let theirs = hex::encode(attacker.public_key());
    // Swapping the key in the metadata (same length) breaks the commit and the chain seed.
    let at = bytes
        .windows(ours.len())
        .position(|w| w == ours.as_bytes())
        .expect("the metadata names the key");
    assert!(
        at < head.trailer.records_offset as usize,
        "found inside the metadata section"
    );
    let mut swapped = bytes.clone();
    swapped[at..at + theirs.len()].copy_from_slice(theirs.as_bytes());
    let report = check(&swapped, VerifyOptions::default());
    assert!(!report.valid);
    assert!(
        report.problems.iter().any(|p| p.area == "commit"),
        "{:?}",
        report.problems
    );
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.reason.contains("hash chain broken") && p.record == Some(0))
    );

    // An artifact re-signed wholesale under another key is self-consistent: only pinning the
    // expected key catches it.
    let dir = tempfile::tempdir().expect("tempdir");
    let forged = dir.path().join("forged.maif");
    common::block_on(async {
        let mut writer = ArtifactWriter::create(
            common::file_store(&forged),
            attacker,
            CreateOptions {
                agent_id: "golden-agent".into(),
                ..CreateOptions::default()
            },
        )
        .await
        .expect("create");
        writer
            .add(NewBlock::new(FourCC::TEXT, vec![0, b'e', b'n', b'x']))
            .await
            .expect("add");
        writer.commit().await.expect("commit");
    });
    let forged_bytes = std::fs::read(&forged).expect("read");
    assert!(check(&forged_bytes, VerifyOptions::default()).valid);
    let pinned = VerifyOptions {
        expected_key: Some(common::test_key().public_key()),
        ..VerifyOptions::default()
    };
    let report = check(&forged_bytes, pinned);
    assert!(!report.valid);
    assert!(
        report.problems[0].reason.contains("expected key"),
        "{:?}",
        report.problems
    );
    assert!(
        check(&bytes, pinned).valid,
        "the genuine artifact passes with its key pinned"
    );
}
