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

/// The unchanged rebuild of `original`, for the digests and offsets a test needs.
fn plain(original: &[u8]) -> Rebuilt {
    rebuild(original, |_| {})
}

fn digest_at(rebuilt: &Rebuilt, position: usize) -> [u8; 32] {
    rebuilt.layout.digests[position]
}

// ---------------------------------------------------------------------------------------
// 12.3, the chain of commits.

#[test]
fn predecessor_commit_has_the_digest_its_successor_names() {
    let r = rebuild(standard(), |s| {
        if let Stage::Header { commit: 5, header } = s {
            header.previous_commit = [7; 32];
        }
    });
    full(
        &r,
        &[want(
            "commit",
            seg(&r, 4),
            format!(
                "commit 4 at byte {} is not the predecessor commit 5 names: it was altered",
                seg(&r, 4)
            ),
        )],
    );
    // The link names another commit's segment: the one there is not the predecessor.
    let at3 = plain(standard()).layout.segments[3];
    let r = rebuild(standard(), |s| {
        if let Stage::Header { commit: 5, header } = s {
            header.previous_segment_offset = at3;
        }
    });
    full(&r, &[want("commit", at3, "commit 4 at byte")]);
}

#[test]
fn each_commit_names_the_chain_seed() {
    let r = rebuild(standard(), |s| {
        if let Stage::Header { commit: 2, header } = s {
            header.genesis = [9; 32];
        }
    });
    full(
        &r,
        &[want(
            "commit",
            seg(&r, 2),
            "commit 2 names another artifact's header and metadata",
        )],
    );
    let r = rebuild(standard(), |s| {
        if let Stage::Header { commit: 5, header } = s {
            header.genesis = [9; 32];
        }
    });
    let wanted = [want(
        "commit",
        seg(&r, 5),
        "commit 5 names another artifact's header and metadata",
    )];
    full(&r, &wanted);
    quick(&r, &wanted);
}

#[test]
fn each_commit_signature_verifies() {
    // A signature by the right key, over another digest.
    for commit in [3usize, 5] {
        let r = rebuild(standard(), |s| {
            if let Stage::CommitSignature {
                commit: c,
                signature,
                ..
            } = s
                && c == commit
            {
                *signature =
                    test_key().sign(maif_store::format::digest::SignedKind::Commit, &[0x11; 32]);
            }
        });
        let wanted = [want(
            "commit",
            seg(&r, commit),
            format!("commit {commit}: the commit signature does not verify"),
        )];
        full(&r, &wanted);
        if commit == 5 {
            quick(&r, &wanted);
        }
    }
}

#[test]
fn each_trailer_is_the_one_its_segment_implies() {
    for commit in [2usize, 5] {
        let r = rebuild(standard(), |s| {
            if let Stage::Trailer { commit: c, trailer } = s
                && c == commit
            {
                trailer.merkle_root = [5; 32];
            }
        });
        let wanted = [want(
            "trailer",
            r.layout.trailers[commit],
            format!(
                "commit {commit}'s trailer does not locate its segment or carries another Merkle root"
            ),
        )];
        full(&r, &wanted);
        if commit == 5 {
            quick(&r, &wanted);
        }
    }
    // A trailer (with a correct CRC) that names another segment length.
    let r = rebuild(standard(), |s| {
        if let Stage::Trailer { commit: 2, trailer } = s {
            trailer.segment_len += 1;
        }
    });
    full(
        &r,
        &[want(
            "trailer",
            r.layout.trailers[2],
            "commit 2's trailer: ",
        )],
    );
}

#[test]
fn each_commit_number_is_one_more_than_the_previous() {
    let r = rebuild(standard(), |s| {
        if let Stage::Header { commit: 5, header } = s {
            header.seq = 6;
            if let Some(run) = &mut header.newest_run {
                run.seq = 6;
            }
        }
    });
    full(
        &r,
        &[want(
            "commit",
            seg(&r, 5),
            "commit 6: is number 6 where 5 was expected",
        )],
    );
}

#[test]
fn each_commit_records_start_where_the_previous_commit_ends() {
    let mut a = Artifact::read(standard());
    a.commits[5].records[0].pad_before = vec![0; 7];
    let r = rebuild_model(&a, |s| {
        if let Stage::Header { commit: 5, header } = s {
            header.records_start += 7;
        }
    });
    full(
        &r,
        &[want(
            "commit",
            seg(&r, 5),
            format!(
                "commit 5: says its records start at {} but the previous commit ends at {}",
                r.layout.records[5][0],
                r.layout.records[5][0] - 7
            ),
        )],
    );
}

#[test]
fn no_commit_follows_a_sealed_commit() {
    let mut a = Artifact::read(standard());
    a.commits.truncate(5);
    a.commits[3].provenance[0].action = Action::Finalize;
    a.commits[3].header.flags = 1;
    let r = rebuild_model(&a, |_| {});
    full(
        &r,
        &[want(
            "commit",
            seg(&r, 4),
            "commit 4: follows commit 3, which finalized the artifact",
        )],
    );
}

#[test]
fn record_count_is_the_previous_count_plus_records_added() {
    // The count is also what the index run's new positions are checked against, so the
    // positions rule sees the same lie: both report it.
    let r = rebuild(standard(), |s| {
        if let Stage::Header { commit: 5, header } = s {
            header.records_added = 0;
        }
    });
    full(
        &r,
        &[
            want(
                "commit",
                seg(&r, 5),
                "commit 5: counts 8 records after adding 0 to 7",
            ),
            want(
                "commit",
                seg(&r, 5),
                "commit 5: adds 0 records but its index run holds 1 new entries",
            ),
        ],
    );
}

#[test]
fn provenance_count_is_the_previous_count_plus_provenance_added() {
    let r = rebuild(standard(), |s| {
        if let Stage::Header { commit: 5, header } = s {
            header.provenance_count += 1;
        }
    });
    full(
        &r,
        &[want(
            "commit",
            seg(&r, 5),
            "commit 5: counts 12 provenance entries after adding 1 to 10",
        )],
    );
}

#[test]
fn a_run_head_matches_the_digest_its_reference_names() {
    let r = rebuild(standard(), |s| {
        if let Stage::Header { commit: 5, header } = s
            && let Some(run) = &mut header.newest_run
        {
            run.head_digest = [3; 32];
        }
    });
    let wanted = [want(
        "commit",
        seg(&r, 5),
        "does not match the digest its reference names",
    )];
    full(&r, &wanted);
    quick(&r, &wanted);
}

#[test]
fn run_pages_match_their_directory_digests() {
    let r = rebuild(standard(), |s| {
        if let Stage::RunHead { commit: 5, head } = s {
            head[112 + 24..112 + 56].copy_from_slice(&[4; 32]);
        }
    });
    full(
        &r,
        &[want(
            "commit",
            seg(&r, 5),
            "page 0 does not match the digest in the run's directory",
        )],
    );
    // Quick verification reads no run page (12.2).
    quick(&r, &[]);
}

#[test]
fn the_provenance_part_holds_exactly_provenance_added_entries() {
    let r = rebuild(standard(), |s| {
        if let Stage::Header { commit: 4, header } = s {
            header.provenance_added -= 1;
            header.provenance_count -= 1;
        }
    });
    full(
        &r,
        &[want("commit", seg(&r, 4), "commit 4: commit 4 at byte")],
    );
    let r = rebuild(standard(), |s| match s {
        Stage::Provenance { commit: 5, entries } => {
            let extra = entries[0].clone();
            entries.push(extra);
        }
        Stage::Header { commit: 5, header } => {
            header.provenance_added -= 1;
            header.provenance_count -= 1;
        }
        _ => {}
    });
    let wanted = [want("commit", seg(&r, 5), "provenance entries")];
    full(&r, &wanted);
    quick(&r, &wanted);
}

// ---------------------------------------------------------------------------------------
// 12.3, the index runs.

#[test]
fn a_run_holds_exactly_the_entries_of_the_runs_it_replaces() {
    let r = rebuild(standard(), |s| {
        if let Stage::Run {
            commit: 5, entries, ..
        } = s
            && let Some(old) = entries.iter_mut().find(|e| e.position == 5)
        {
            old.entry.timestamp_us += 1;
        }
    });
    full(
        &r,
        &[want(
            "commit",
            seg(&r, 5),
            "commit 5: its index run does not hold exactly the 2 entries of the runs it replaces (2 found)",
        )],
    );
    let r = rebuild(standard(), |s| {
        if let Stage::Run {
            commit: 5, entries, ..
        } = s
        {
            entries.retain(|e| e.position != 6);
        }
    });
    full(
        &r,
        &[want(
            "commit",
            seg(&r, 5),
            "commit 5: its index run does not hold exactly the 2 entries of the runs it replaces (1 found)",
        )],
    );
}

#[test]
fn a_runs_older_run_is_live() {
    // Commit 5's run absorbs every live run (all 8 entries, as it must once its `older` is
    // no live run) but names as `older` a run that is not live: commit 2's run with another
    // head digest.
    let mut a = Artifact::read(standard());
    a.commits[5].run = Some(common::resign::RunModel { older: None });
    let r = rebuild_model(&a, |s| {
        if let Stage::Run {
            commit: 5,
            older,
            runs,
            ..
        } = s
        {
            let mut forged = runs[&2];
            forged.head_digest = [6; 32];
            *older = Some(forged);
        }
    });
    full(
        &r,
        &[want(
            "commit",
            seg(&r, 5),
            "commit 5: its index run names an older run that is not live",
        )],
    );
}

#[test]
fn a_commit_without_a_run_names_the_newest_live_run() {
    let r = rebuild(standard(), |s| {
        if let Stage::Header { commit: 3, header } = s
            && let Some(run) = &mut header.newest_run
        {
            run.head_digest = [6; 32];
        }
    });
    full(
        &r,
        &[want(
            "commit",
            seg(&r, 3),
            "commit 3: names a newest index run that is not the newest live run",
        )],
    );
}

#[test]
fn new_entries_are_the_positions_after_the_previous_count() {
    let r = rebuild(standard(), |s| {
        if let Stage::Entry {
            commit: 5,
            record: 0,
            entry,
        } = s
        {
            entry.position = 8;
        }
    });
    full(
        &r,
        &[want(
            "commit",
            seg(&r, 5),
            "commit 5: adds 1 records but its index run holds 1 new entries, or not positions 7..8",
        )],
    );
}

#[test]
fn new_entries_tile_the_records_up_to_the_segment() {
    // Bytes before a record that no entry covers.
    let mut a = Artifact::read(standard());
    a.commits[4].records[1].pad_before = vec![0; 3];
    let r = rebuild_model(&a, |_| {});
    full(
        &r,
        &[want(
            "commit",
            seg(&r, 4),
            format!(
                "commit 4: record #6 is indexed at {} but the previous record ends at {}",
                r.layout.records[4][1],
                r.layout.records[4][1] - 3
            ),
        )],
    );
    // Bytes between the last record and the segment.
    let mut a = Artifact::read(standard());
    a.commits[5].pad_after_records = vec![0; 5];
    let r = rebuild_model(&a, |_| {});
    full(
        &r,
        &[want(
            "commit",
            seg(&r, 5),
            format!(
                "commit 5: its records end at {} but its segment starts at {}",
                seg(&r, 5) - 5,
                seg(&r, 5)
            ),
        )],
    );
}

#[test]
fn each_new_entrys_version_counts_the_earlier_records_of_its_id() {
    // A version that skips: block 1's second record indexed as version 3.
    let r = rebuild(standard(), |s| {
        if let Stage::Entry {
            commit: 4,
            record: 0,
            entry,
        } = s
        {
            entry.version = 3;
        }
    });
    full(
        &r,
        &[want(
            "commit",
            seg(&r, 4),
            format!(
                "commit 4: record #5 ({}) is indexed as version 3 but is version 2",
                format_id(&id(1))
            ),
        )],
    );
    // A new block indexed as version 2, with an update entry that agrees with the index.
    let mut a = Artifact::read(standard());
    a.commits[5].provenance[0].action = Action::Update;
    let r = rebuild_model(&a, |s| {
        if let Stage::Entry {
            commit: 5,
            record: 0,
            entry,
        } = s
        {
            entry.version = 2;
        }
    });
    full(
        &r,
        &[want(
            "commit",
            seg(&r, 5),
            format!(
                "commit 5: record #7 ({}) is indexed as version 2 but is version 1",
                format_id(&id(7))
            ),
        )],
    );
}

#[test]
fn last_record_digest_is_the_last_new_records() {
    for commit in [3usize, 5] {
        let r = rebuild(standard(), |s| {
            if let Stage::Header { commit: c, header } = s
                && c == commit
            {
                header.last_record_digest = [8; 32];
            }
        });
        full(
            &r,
            &[want(
                "commit",
                seg(&r, commit),
                format!(
                    "commit {commit}: names a last record digest that is not its last record's"
                ),
            )],
        );
    }
}
