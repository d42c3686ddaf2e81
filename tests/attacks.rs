//! Attacks without the key: reordering, removing, splicing and substituting must all be
//! detected; re-signing everything under another key is caught by pinning the key; cutting
//! the file at a commit boundary gives that earlier, genuinely signed state (the documented
//! limit), which a consistency proof against a remembered commit exposes.

mod common;

use maif_store::SigningKey;
use maif_store::artifact::{
    ArtifactReader, ArtifactWriter, CreateOptions, NewBlock, VerifyOptions, VerifyReport, verify,
};
use maif_store::format::{Codec, FourCC};

fn check(bytes: &[u8], options: VerifyOptions) -> VerifyReport {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("attacked.maif");
    std::fs::write(&path, bytes).expect("write");
    common::block_on(verify(common::file_store(&path), options)).expect("verify reports")
}

struct Original {
    _dir: tempfile::TempDir,
    bytes: Vec<u8>,
    records: Vec<maif_store::artifact::BlockInfo>,
    commits: Vec<maif_store::artifact::Commit>,
}

fn original() -> Original {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("small.maif");
    common::block_on(common::write_small_artifact(&path));
    let (records, commits) = common::block_on(async {
        let reader = ArtifactReader::open(common::file_store(&path))
            .await
            .expect("open");
        (
            reader.blocks().await.expect("list").to_vec(),
            reader.commits().await.expect("commits"),
        )
    });
    Original {
        bytes: std::fs::read(&path).expect("read"),
        _dir: dir,
        records,
        commits,
    }
}

fn record_bytes(o: &Original, n: usize) -> &[u8] {
    let e = o.records[n].entry;
    &o.bytes[e.offset as usize..(e.offset + e.record_len) as usize]
}

#[test]
fn the_original_verifies() {
    let o = original();
    assert!(check(&o.bytes, VerifyOptions::default()).valid);
}

#[test]
fn swapping_two_records_is_detected() {
    let o = original();
    // Records 1 and 2 have equal length in the small artifact? Swap the first two of equal
    // size, or any two and shift: both break the chain and the committed digests.
    let (a, b) = (0, 1);
    let mut bytes = o.bytes[..o.records[a].entry.offset as usize].to_vec();
    bytes.extend_from_slice(record_bytes(&o, b));
    bytes.extend_from_slice(record_bytes(&o, a));
    bytes.extend_from_slice(&o.bytes[o.records[b].entry.end().expect("end") as usize..]);
    assert_eq!(bytes.len(), o.bytes.len());
    let report = check(&bytes, VerifyOptions::default());
    assert!(!report.valid);
    assert!(
        report.problems.iter().any(|p| p.record == Some(0)),
        "{:?}",
        report.problems
    );
}

#[test]
fn removing_a_record_is_detected() {
    let o = original();
    let victim = o.records[2].entry;
    let mut bytes = o.bytes[..victim.offset as usize].to_vec();
    bytes.extend_from_slice(&o.bytes[victim.end().expect("end") as usize..]);
    let report = check(&bytes, VerifyOptions::default());
    assert!(!report.valid, "removing a record went unnoticed");
}

#[test]
fn substituting_the_key_without_re_signing_is_detected() {
    let o = original();
    let attacker = SigningKey::from_seed(&[7; 32]);
    let ours = hex::encode(common::test_key().public_key());
    let theirs = hex::encode(attacker.public_key());
    let text = String::from_utf8_lossy(&o.bytes[..o.commits[0].header().records_start as usize])
        .to_string();
    assert!(text.contains(&ours));
    let at = o
        .bytes
        .windows(64)
        .position(|w| w == ours.as_bytes())
        .expect("key in metadata");
    let mut bytes = o.bytes.clone();
    bytes[at..at + 64].copy_from_slice(theirs.as_bytes());
    let report = check(&bytes, VerifyOptions::default());
    assert!(!report.valid, "a swapped public key went unnoticed");
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.reason.contains("another artifact") || p.reason.contains("signature")),
        "{:?}",
        report.problems
    );
}

#[test]
fn splicing_a_commit_from_another_artifact_is_detected() {
    // A second artifact with the same key and a commit of the same shape.
    let dir = tempfile::tempdir().expect("tempdir");
    let other = dir.path().join("other.maif");
    common::block_on(async {
        let options = CreateOptions {
            agent_id: "golden-agent".into(),
            created_us: Some(common::CREATED_US + 1),
            ..CreateOptions::default()
        };
        let mut writer =
            ArtifactWriter::create(common::file_store(&other), common::test_key(), options)
                .await
                .expect("create");
        writer
            .add(NewBlock::new(FourCC::TEXT, b"\0\0\0spliced".to_vec()))
            .await
            .expect("add");
        writer.commit().await.expect("commit");
    });
    let o = original();
    let theirs = std::fs::read(&other).expect("read");
    let their_commits = common::block_on(async {
        ArtifactReader::open(common::file_store(&other))
            .await
            .expect("open")
            .commits()
            .await
            .expect("commits")
    });
    // Append their commit 1 (records, segment, trailer) after ours.
    let start = their_commits[0].end() as usize;
    let mut bytes = o.bytes.clone();
    bytes.extend_from_slice(&theirs[start..]);
    let report = check(&bytes, VerifyOptions::default());
    // Their segment is at the wrong offset for our file: it is not a commit of ours, our
    // newest commit stays the newest, and the file is reported as altered.
    assert_eq!(
        report.newest_commit,
        Some(o.commits.last().expect("c").seq())
    );
    assert!(!report.valid, "the spliced bytes must be reported");
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.area == "structure" && p.reason.contains("belongs at byte")),
        "{:?}",
        report.problems
    );
    // And no reader or writer silently takes the older state.
    let dir = tempfile::tempdir().expect("tempdir");
    let spliced = dir.path().join("spliced.maif");
    std::fs::write(&spliced, &bytes).expect("write");
    assert!(common::block_on(ArtifactReader::open(common::file_store(&spliced))).is_err());
    assert!(
        common::block_on(ArtifactWriter::open(
            common::file_store(&spliced),
            common::test_key()
        ))
        .is_err()
    );
}

#[test]
fn an_old_trailer_replayed_at_the_end_is_reported_and_changes_nothing() {
    let o = original();
    let old = &o.commits[1];
    let mut bytes = o.bytes.clone();
    bytes.extend_from_slice(&old.trailer().to_bytes());
    let report = check(&bytes, VerifyOptions::default());
    assert_eq!(
        report.newest_commit,
        Some(o.commits.last().expect("c").seq()),
        "a trailer counts only at its own offset"
    );
    // No crash leaves an intact trailer out of place: the file was altered.
    assert!(!report.valid);
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.reason.contains("intact trailer out of place")),
        "{:?}",
        report.problems
    );
}

#[test]
fn cutting_at_a_commit_boundary_gives_that_signed_state_which_a_consistency_proof_exposes() {
    let o = original();
    let earlier = &o.commits[1];
    let cut = &o.bytes[..earlier.end() as usize];
    let report = check(cut, VerifyOptions::default());
    assert!(report.valid, "an earlier commit is a genuine, signed state");
    assert_eq!(report.newest_commit, Some(earlier.seq()));
    assert!(report.warnings.is_empty());
    // Whoever remembered the newer commit holds a consistency proof the cut file cannot
    // reproduce: it has no commit that size.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cut.maif");
    std::fs::write(&path, cut).expect("write");
    let reader = common::block_on(ArtifactReader::open(common::file_store(&path))).expect("open");
    let newest = o.commits.last().expect("c").seq();
    assert!(
        common::block_on(maif_store::artifact::prove_consistency(&reader, 1, newest)).is_err(),
        "the cut artifact cannot prove it extends to the remembered commit"
    );
}

#[test]
fn re_signing_everything_under_another_key_needs_a_pinned_key_to_catch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("forged.maif");
    common::block_on(async {
        let forger = SigningKey::from_seed(&[9; 32]);
        let mut writer =
            ArtifactWriter::create(common::file_store(&path), forger, Default::default())
                .await
                .expect("create");
        writer
            .add(NewBlock::new(FourCC::TEXT, b"\0\0\0forged".to_vec()))
            .await
            .expect("add");
        writer.commit().await.expect("commit");
    });
    let bytes = std::fs::read(&path).expect("read");
    assert!(
        check(&bytes, VerifyOptions::default()).valid,
        "self-consistent without a pin"
    );
    let pinned = VerifyOptions {
        expected_key: Some(common::test_key().public_key()),
        ..VerifyOptions::default()
    };
    let report = check(&bytes, pinned);
    assert!(!report.valid);
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.reason.contains("expected key")),
        "{:?}",
        report.problems
    );
}
