//! Keyed rule tests: each test breaks one rule of `docs/FORMAT.md`'s verification (12.2,
//! 12.3, the provenance rules of 9.2, the segment checks of 6.3, the run checks of 8.3)
//! in an artifact that is otherwise signed correctly with the RIGHT key, so no CRC, digest
//! or signature check fires first: only the rule under test can catch it. Each test asserts
//! the exact list of problems verification reports (area, offset or block, reason).
//!
//! The artifacts come from the real writer and are re-signed by `common::resign`.
//! `the_rules_of_section_12_3_each_have_a_test` (at the end) parses the rule lists of the
//! document and fails when a rule has no test here, or a test named for it is deleted.

mod common;

use std::sync::OnceLock;

use common::resign::{Artifact, Rebuilt, Stage};
use common::{CREATED_US, block_on, file_store, meta, test_key};
use maif_store::artifact::{
    ArtifactWriter, CreateOptions, NewBlock, VerifyOptions, VerifyReport, format_id, verify,
};
use maif_store::format::Action;
use maif_store::format::FourCC;
use maif_store::format::payload::TextPayload;

// ---------------------------------------------------------------------------------------
// Fixtures, written once per test binary by the real writer.

fn text(n: u32) -> NewBlock {
    let mut id = [0u8; 16];
    id[..4].copy_from_slice(&n.to_be_bytes());
    id[15] = 0x5a;
    NewBlock::new(
        FourCC::TEXT,
        TextPayload::utf8(&format!("block {n}"), Some(*b"en")).to_bytes(),
    )
    .with_id(id)
    .with_timestamp(CREATED_US + u64::from(n) * 1_000)
}

fn id(n: u32) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..4].copy_from_slice(&n.to_be_bytes());
    id[15] = 0x5a;
    id
}

async fn create(path: &std::path::Path) -> ArtifactWriter {
    let options = CreateOptions {
        agent_id: "keyed-agent".into(),
        created_us: Some(CREATED_US),
        artifact_id: Some([0xc3; 16]),
        ..CreateOptions::default()
    };
    let mut writer = ArtifactWriter::create(file_store(path), test_key(), options)
        .await
        .expect("create");
    let clock = std::sync::atomic::AtomicU64::new(CREATED_US);
    writer.set_clock(move || {
        clock.fetch_add(1_000_000, std::sync::atomic::Ordering::Relaxed) + 1_000_000
    });
    writer
}

/// The standard artifact: six commits.
///
/// | commit | adds | entries | run |
/// |---|---|---|---|
/// | 0 | – | create | – |
/// | 1 | blocks 1, 2, 3 | 3 add_block | run of 3 (tier 0) |
/// | 2 | blocks 4, 5 | 2 add_block | run of 5 absorbing commit 1's (tier 1) |
/// | 3 | – | convert | none: names commit 2's run |
/// | 4 | block 1 v2, block 6 | update, add_block, migrate | run of 2 on top of commit 2's |
/// | 5 | block 7 | add_block | run of 3 absorbing commit 4's, on top of commit 2's |
fn standard() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("standard.maif");
        block_on(async {
            let mut w = create(&path).await;
            for n in 1..=3 {
                w.add(text(n)).await.expect("add");
            }
            w.commit().await.expect("commit 1");
            for n in 4..=5 {
                w.add(text(n)).await.expect("add");
            }
            w.commit().await.expect("commit 2");
            w.record_event(Action::Convert, meta(&[("source", "keyed")]))
                .await
                .expect("event");
            w.commit().await.expect("commit 3");
            w.update(id(1), text(8)).await.expect("update");
            w.add(text(6)).await.expect("add");
            w.record_event(Action::Migrate, meta(&[("from", "3.0")]))
                .await
                .expect("event");
            w.commit().await.expect("commit 4");
            w.add(text(7)).await.expect("add");
            w.commit().await.expect("commit 5");
        });
        std::fs::read(&path).expect("read")
    })
}

/// A finalized artifact: commit 1 adds block 1; commit 2 adds block 2 and finalizes.
fn sealed() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sealed.maif");
        block_on(async {
            let mut w = create(&path).await;
            w.add(text(1)).await.expect("add");
            w.commit().await.expect("commit 1");
            w.add(text(2)).await.expect("add");
            w.finalize().await.expect("finalize");
        });
        std::fs::read(&path).expect("read")
    })
}

/// One commit of 513 blocks: a run of two pages.
fn two_pages() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pages.maif");
        block_on(async {
            let mut w = create(&path).await;
            w.add_batch((1..=513).map(text).collect())
                .await
                .expect("add");
            w.commit().await.expect("commit 1");
        });
        std::fs::read(&path).expect("read")
    })
}

// ---------------------------------------------------------------------------------------
// Rebuilding and verifying.

fn rebuild(original: &[u8], hook: impl FnMut(Stage<'_>)) -> Rebuilt {
    Artifact::read(original).rebuild(&test_key(), hook)
}

/// Rebuilds `artifact` (a model the test changed) with `hook`.
fn rebuild_model(artifact: &Artifact, hook: impl FnMut(Stage<'_>)) -> Rebuilt {
    artifact.rebuild(&test_key(), hook)
}

fn verify_bytes(bytes: &[u8], quick: bool) -> VerifyReport {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("a.maif");
    std::fs::write(&path, bytes).expect("write");
    block_on(verify(
        file_store(&path),
        VerifyOptions {
            quick,
            threads: 1,
            ..VerifyOptions::default()
        },
    ))
    .expect("verify reads the file")
}

/// One expected problem: its area, where it is (an image offset, and the record's position
/// for a record problem) and a fragment of its reason.
#[derive(Debug)]
struct Want {
    area: &'static str,
    record: Option<u64>,
    offset: Option<u64>,
    reason: String,
}

fn want(area: &'static str, offset: u64, reason: impl Into<String>) -> Want {
    Want {
        area,
        record: None,
        offset: Some(offset),
        reason: reason.into(),
    }
}

fn want_record(rebuilt: &Rebuilt, position: u64, reason: impl Into<String>) -> Want {
    let entry = rebuilt.layout.index[position as usize].entry;
    Want {
        area: "record",
        record: Some(position),
        offset: Some(entry.offset),
        reason: reason.into(),
    }
}

/// Asserts that `report` holds exactly the `wanted` problems, in any order, and no warning.
fn assert_problems(report: &VerifyReport, wanted: &[Want]) {
    let context = || {
        format!(
            "{} verification reported {:#?}\nwanted {wanted:#?}",
            report.mode, report.problems
        )
    };
    assert!(report.warnings.is_empty(), "{}", context());
    assert_eq!(report.problems.len(), wanted.len(), "{}", context());
    let mut unmatched: Vec<_> = report.problems.iter().collect();
    for w in wanted {
        let found = unmatched.iter().position(|p| {
            p.area == w.area
                && p.offset == w.offset
                && p.record == w.record
                && p.reason.contains(&w.reason)
        });
        match found {
            Some(n) => {
                unmatched.remove(n);
            }
            None => panic!("no problem matches {w:?}\n{}", context()),
        }
    }
    assert_eq!(report.valid, wanted.is_empty(), "{}", context());
}

/// Full verification reports exactly `full`.
fn full(rebuilt: &Rebuilt, wanted: &[Want]) {
    assert_problems(&verify_bytes(&rebuilt.bytes, false), wanted);
}

/// Quick verification reports exactly `wanted`.
fn quick(rebuilt: &Rebuilt, wanted: &[Want]) {
    assert_problems(&verify_bytes(&rebuilt.bytes, true), wanted);
}

fn seg(rebuilt: &Rebuilt, commit: usize) -> u64 {
    rebuilt.layout.segments[commit]
}

fn entry_at(rebuilt: &Rebuilt, commit: usize, entry: usize) -> u64 {
    rebuilt.layout.entries[commit][entry]
}

// ---------------------------------------------------------------------------------------
// The helper itself.

#[test]
fn resigning_without_a_change_reproduces_the_writers_bytes() {
    for original in [standard(), sealed(), two_pages()] {
        let rebuilt = rebuild(original, |_| {});
        assert!(
            rebuilt.bytes == original,
            "the rebuild differs from the writer's file"
        );
        full(&rebuilt, &[]);
        quick(&rebuilt, &[]);
    }
}

#[test]
fn the_standard_fixture_has_the_shape_the_tests_rely_on() {
    let a = Artifact::read(standard());
    let shape: Vec<(usize, Option<Option<usize>>, Vec<Action>)> = a
        .commits
        .iter()
        .map(|c| {
            (
                c.records.len(),
                c.run.map(|r| r.older),
                c.provenance.iter().map(|e| e.action).collect(),
            )
        })
        .collect();
    use Action::*;
    assert_eq!(
        shape,
        vec![
            (0, None, vec![Create]),
            (3, Some(None), vec![AddBlock, AddBlock, AddBlock]),
            (2, Some(None), vec![AddBlock, AddBlock]),
            (0, None, vec![Convert]),
            (2, Some(Some(2)), vec![Update, AddBlock, Migrate]),
            (1, Some(Some(2)), vec![AddBlock]),
        ]
    );
    let _ = format_id(&id(1));
}
