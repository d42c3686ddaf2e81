//! Keyed rule tests: each test breaks one rule of `docs/FORMAT.md`'s verification (12.1,
//! 12.2, 12.3, the provenance rules of 9.2, the segment checks of 6.3, the run checks of
//! 8.3) in an artifact that is otherwise signed correctly with the RIGHT key, so no CRC,
//! digest or signature check fires first: only the rule under test can catch it. Each test
//! asserts the exact list of problems (and, for 12.1, warnings) verification reports (area,
//! offset or block, reason).
//!
//! The artifacts come from the real writer, cut or patched byte by byte at offsets taken
//! from the parsed structures, and re-signed by `common::resign` where a case needs a valid
//! signature over changed content. `the_rules_of_section_12_3_each_have_a_test` and its
//! neighbours (at the end) parse the rule lists of the document and fail when a rule has no
//! test here, or a test named for it is deleted.

mod common;

use std::sync::{Arc, OnceLock};

use common::resign::{Artifact, Rebuilt, Stage};
use common::{CREATED_US, block_on, file_store, meta, test_key};
use maif_store::artifact::{
    ArtifactReader, ArtifactWriter, CreateOptions, NewBlock, VerifyOptions, VerifyReport,
    format_id, verify,
};
use maif_store::format::Action;
use maif_store::format::FourCC;
use maif_store::format::file_header::{FILE_MAGIC, MAJOR_VERSION, MINOR_VERSION};
use maif_store::format::metadata::{MAX_METADATA_LEN, MetadataSection};
use maif_store::format::payload::TextPayload;
use maif_store::format::segment::SEGMENT_HEADER_LEN;
use maif_store::format::trailer::TRAILER_MAGIC;
use maif_store::format::{BLOCK_HEADER_LEN, FILE_HEADER_LEN, SegmentHead, TRAILER_LEN};
use maif_store::format::{Codec, Compression, Encryption, FixedCodec};
use maif_store::keys::{KeyError, PublicKey};
use maif_store::store::{
    AppendBase, AppendSession, Base, BlockStore, CommitRef, ImportSession, Latest, StoreError,
};

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
#[derive(Debug, Clone)]
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
    assert_findings(report, wanted, &[]);
}

/// Asserts that `report` holds exactly the `problems` and the `warnings` wanted, each in any
/// order, and is valid exactly when no problem is wanted.
fn assert_findings(report: &VerifyReport, problems: &[Want], warnings: &[Want]) {
    let context = || {
        format!(
            "{} verification reported problems {:#?}\nwarnings {:#?}\nwanted problems {problems:#?}\nwanted warnings {warnings:#?}",
            report.mode, report.problems, report.warnings
        )
    };
    for (found, wanted, kind) in [
        (&report.problems, problems, "problem"),
        (&report.warnings, warnings, "warning"),
    ] {
        assert_eq!(found.len(), wanted.len(), "{kind}s: {}", context());
        let mut unmatched: Vec<_> = found.iter().collect();
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
                None => panic!("no {kind} matches {w:?}\n{}", context()),
            }
        }
    }
    assert_eq!(report.valid, problems.is_empty(), "{}", context());
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

// ---------------------------------------------------------------------------------------
// 9.2, provenance (12.3 "Provenance").

#[test]
fn each_entry_links_to_the_previous_entry() {
    // Within the newest commit: quick verification sees it too.
    let mut a = Artifact::read(standard());
    a.commits.truncate(5);
    let r = rebuild_model(&a, |s| {
        if let Stage::ProvenanceEntry {
            commit: 4,
            entry: 1,
            value,
        } = s
        {
            value.previous = [1; 32];
        }
    });
    full(
        &r,
        &[want(
            "provenance",
            entry_at(&r, 4, 1),
            "entry #8 (add_block): does not link to the previous entry",
        )],
    );
    quick(&r, &[want("commit", seg(&r, 4), "commit 4 at byte")]);
    // A commit's first entry that does not link to the previous commit's head.
    let r = rebuild(standard(), |s| {
        if let Stage::ProvenanceEntry {
            commit: 5,
            entry: 0,
            value,
        } = s
        {
            value.previous = [1; 32];
        }
    });
    full(
        &r,
        &[want(
            "provenance",
            entry_at(&r, 5, 0),
            "entry #10 (add_block): does not link to the previous entry",
        )],
    );
}

#[test]
fn entry_details_are_a_json_object() {
    let mut a = Artifact::read(standard());
    a.commits[2].provenance[1].details = br#"["not", "an object"]"#.to_vec();
    let r = rebuild_model(&a, |_| {});
    full(
        &r,
        &[want(
            "provenance",
            entry_at(&r, 2, 1),
            "entry #5 (add_block): details are not a JSON object",
        )],
    );
}

#[test]
fn the_first_entry_is_create() {
    let mut a = Artifact::read(standard());
    a.commits[0].provenance[0].action = Action::Unknown(9);
    let r = rebuild_model(&a, |_| {});
    full(
        &r,
        &[want(
            "provenance",
            entry_at(&r, 0, 0),
            "entry #0 (unknown(9)): the first entry must be create",
        )],
    );
}

#[test]
fn create_is_only_the_first_entry() {
    let mut a = Artifact::read(standard());
    a.commits[3].provenance[0].action = Action::Create;
    let r = rebuild_model(&a, |_| {});
    full(
        &r,
        &[want(
            "provenance",
            entry_at(&r, 3, 0),
            "entry #6 (create): create must be the first entry, and only the first",
        )],
    );
}

#[test]
fn create_names_the_chain_seed() {
    let r = rebuild(standard(), |s| {
        if let Stage::ProvenanceEntry {
            commit: 0,
            entry: 0,
            value,
        } = s
        {
            value.subject = [2; 32];
        }
    });
    full(
        &r,
        &[want(
            "provenance",
            entry_at(&r, 0, 0),
            "entry #0 (create): does not name this artifact's header and metadata",
        )],
    );
}

#[test]
fn no_entry_follows_a_finalize_entry_in_its_commit() {
    // A finalize followed by an add in the same commit.
    let r = rebuild(sealed(), |s| {
        if let Stage::Provenance { commit: 2, entries } = s {
            entries.swap(0, 1);
        }
    });
    full(
        &r,
        &[want(
            "provenance",
            entry_at(&r, 2, 1),
            "entry #3 (add_block): follows the finalize entry",
        )],
    );
}

#[test]
fn add_and_update_entries_name_the_commits_records_in_order() {
    let p = plain(standard());
    let (d0, d1) = (digest_at(&p, 0), digest_at(&p, 1));
    // Two entries out of order.
    let r = rebuild(standard(), |s| {
        if let Stage::ProvenanceEntry {
            commit: 1,
            entry,
            value,
        } = s
        {
            match entry {
                0 => value.subject = d1,
                1 => value.subject = d0,
                _ => {}
            }
        }
    });
    full(
        &r,
        &[
            want(
                "provenance",
                entry_at(&r, 1, 0),
                format!(
                    "entry #1 (add_block): names digest {} but record #0 has {}",
                    hex::encode(d1),
                    hex::encode(d0)
                ),
            ),
            want(
                "provenance",
                entry_at(&r, 1, 1),
                format!(
                    "entry #2 (add_block): names digest {} but record #1 has {}",
                    hex::encode(d0),
                    hex::encode(d1)
                ),
            ),
        ],
    );
}

#[test]
fn an_add_entry_names_a_record_its_commit_adds() {
    let r = rebuild(standard(), |s| {
        if let Stage::Provenance { commit: 5, entries } = s {
            let extra = entries[0].clone();
            entries.push(extra);
        }
    });
    full(
        &r,
        &[want(
            "provenance",
            entry_at(&r, 5, 1),
            "entry #11 (add_block): names a record this commit does not add",
        )],
    );
}

#[test]
fn every_record_a_commit_adds_has_an_add_or_update_entry() {
    let r = rebuild(standard(), |s| {
        if let Stage::Provenance { commit: 2, entries } = s {
            entries.pop();
        }
    });
    full(
        &r,
        &[want(
            "provenance",
            entry_at(&r, 2, 0),
            "commit 2: 1 of the records it adds have no add_block or update entry",
        )],
    );
}

#[test]
fn add_block_names_version_1_of_its_id() {
    let mut a = Artifact::read(standard());
    a.commits[4].provenance[0].action = Action::AddBlock;
    let r = rebuild_model(&a, |_| {});
    full(
        &r,
        &[want(
            "provenance",
            entry_at(&r, 4, 0),
            format!(
                "entry #7 (add_block): adds block {} which already exists",
                format_id(&id(1))
            ),
        )],
    );
}

#[test]
fn update_names_version_2_or_later_of_its_id() {
    // An update naming an id that does not exist.
    let mut a = Artifact::read(standard());
    a.commits[4].provenance[1].action = Action::Update;
    let r = rebuild_model(&a, |_| {});
    full(
        &r,
        &[want(
            "provenance",
            entry_at(&r, 4, 1),
            format!(
                "entry #8 (update): updates block {} which did not exist",
                format_id(&id(6))
            ),
        )],
    );
}

#[test]
fn an_event_names_the_merkle_root_of_the_records_before_it() {
    // The migrate entry of commit 4 comes after the commit's two records: the root of the
    // records before the commit (5 records, not 7) is the wrong subject.
    let p = plain(standard());
    let mut before_commit = maif_store::format::Frontier::new();
    for d in &p.layout.digests[..5] {
        before_commit.append(d);
    }
    let root = before_commit.root();
    let r = rebuild(standard(), |s| {
        if let Stage::ProvenanceEntry {
            commit: 4,
            entry: 2,
            value,
        } = s
        {
            value.subject = root;
        }
    });
    full(
        &r,
        &[want(
            "provenance",
            entry_at(&r, 4, 2),
            "entry #9 (migrate): does not name the Merkle root of the records before it",
        )],
    );
    // Every event action has the rule: convert, finalize.
    let r = rebuild(standard(), |s| {
        if let Stage::ProvenanceEntry {
            commit: 3,
            entry: 0,
            value,
        } = s
        {
            value.subject = [3; 32];
        }
    });
    full(
        &r,
        &[want(
            "provenance",
            entry_at(&r, 3, 0),
            "entry #6 (convert): does not name the Merkle root of the records before it",
        )],
    );
    let r = rebuild(sealed(), |s| {
        if let Stage::ProvenanceEntry {
            commit: 2,
            entry: 1,
            value,
        } = s
        {
            value.subject = [3; 32];
        }
    });
    full(
        &r,
        &[want(
            "provenance",
            entry_at(&r, 2, 1),
            "entry #3 (finalize): does not name the Merkle root of the records before it",
        )],
    );
}

#[test]
fn the_last_entry_is_the_provenance_head() {
    let r = rebuild(standard(), |s| {
        if let Stage::Header { commit: 3, header } = s {
            header.provenance_head = [4; 32];
        }
    });
    full(
        &r,
        &[want(
            "commit",
            seg(&r, 3),
            "commit 3: its provenance head is not the digest of its last entry",
        )],
    );
    let r = rebuild(standard(), |s| {
        if let Stage::Header { commit: 5, header } = s {
            header.provenance_head = [4; 32];
        }
    });
    full(
        &r,
        &[want(
            "commit",
            seg(&r, 5),
            "commit 5: its provenance head is not the digest of its last entry",
        )],
    );
    quick(
        &r,
        &[want(
            "commit",
            seg(&r, 5),
            "its provenance entries do not end at the head its header names",
        )],
    );
}

#[test]
fn a_finalize_entry_requires_the_sealed_flag() {
    let mut a = Artifact::read(sealed());
    a.commits[2].header.flags = 0;
    let r = rebuild_model(&a, |_| {});
    full(
        &r,
        &[want(
            "commit",
            seg(&r, 2),
            "commit 2: has a finalize entry but is not marked sealed",
        )],
    );
}

#[test]
fn the_sealed_flag_requires_a_finalize_entry() {
    let mut a = Artifact::read(standard());
    a.commits[5].header.flags = 1;
    let r = rebuild_model(&a, |_| {});
    full(
        &r,
        &[want(
            "commit",
            seg(&r, 5),
            "commit 5: is marked sealed without a finalize entry",
        )],
    );
}

// ---------------------------------------------------------------------------------------
// 12.3, the Merkle frontier.

#[test]
fn each_commits_frontier_is_the_tree_of_its_records() {
    for commit in [2usize, 5] {
        let r = rebuild(standard(), |s| {
            if let Stage::Frontier {
                commit: c,
                frontier,
            } = s
                && c == commit
            {
                let mut other = maif_store::format::Frontier::new();
                for n in 0..frontier.size() {
                    other.append(&[n as u8; 32]);
                }
                *frontier = other;
            }
        });
        full(
            &r,
            &[want(
                "commit",
                seg(&r, commit),
                format!(
                    "commit {commit}: its Merkle frontier is not the tree of the records so far"
                ),
            )],
        );
    }
}

// ---------------------------------------------------------------------------------------
// 12.3, the records.

#[test]
fn a_record_can_be_read() {
    // The index entry names bytes past the end of the file.
    let r = rebuild(standard(), |s| {
        if let Stage::Entry {
            commit: 2,
            record: 1,
            entry,
        } = s
        {
            entry.entry.offset = 1 << 40;
        }
    });
    // In a single file the only way a record cannot be read is an entry that names bytes
    // elsewhere, which the tiling rule (a commit rule) also reports.
    let (seg2, end) = (seg(&r, 2), r.layout.records[2][1]);
    full(
        &r,
        &[
            want_record(&r, 4, "(bytes 1099511627776..1099511627914) out of range"),
            want(
                "commit",
                seg2,
                format!(
                    "commit 2: record #4 is indexed at 1099511627776 but the previous record ends at {end}"
                ),
            ),
            want(
                "commit",
                seg2,
                format!(
                    "commit 2: its records end at 1099511627914 but its segment starts at {seg2}"
                ),
            ),
        ],
    );
}

#[test]
fn a_record_decodes_from_exactly_record_len_bytes() {
    let mut a = Artifact::read(standard());
    a.commits[5].records[0].trailing = vec![0];
    let r = rebuild_model(&a, |_| {});
    full(&r, &[want_record(&r, 7, "block record")]);
}

#[test]
fn a_records_header_passes_the_block_header_rules() {
    let r = rebuild(standard(), |s| {
        if let Stage::Record {
            commit: 5,
            record: 0,
            header,
        } = s
        {
            header.data_offset += 1;
        }
    });
    full(&r, &[want_record(&r, 7, "data_offset")]);
    let r = rebuild(standard(), |s| {
        if let Stage::Record {
            commit: 5,
            record: 0,
            header,
        } = s
        {
            header.uncompressed_size += 1;
        }
    });
    full(&r, &[want_record(&r, 7, "uncompressed_size")]);
}

fn entry_field_rule(edit: impl Fn(&mut maif_store::format::IndexEntry), reason: &str) {
    let r = rebuild(standard(), |s| {
        if let Stage::Entry {
            commit: 2,
            record: 1,
            entry,
        } = s
        {
            edit(&mut entry.entry);
        }
    });
    full(&r, &[want_record(&r, 4, reason)]);
}

#[test]
fn index_entry_block_id_equals_the_record_header() {
    entry_field_rule(
        |e| e.block_id = id(99),
        &format!(
            "index entry says block id {} but the record header says {}",
            format_id(&id(99)),
            format_id(&id(5))
        ),
    );
}

#[test]
fn index_entry_block_type_equals_the_record_header() {
    entry_field_rule(
        |e| e.block_type = FourCC::BINA,
        "index entry says type BINA but the record header says TEXT",
    );
}

#[test]
fn index_entry_metadata_len_equals_the_record_header() {
    entry_field_rule(
        |e| e.metadata_len += 1,
        "index entry says metadata length 1 but the record header says 0",
    );
}

#[test]
fn index_entry_timestamp_equals_the_record_header() {
    let ts = CREATED_US + 5_000;
    entry_field_rule(
        |e| e.timestamp_us += 1,
        &format!(
            "index entry says timestamp {} but the record header says {ts}",
            ts + 1
        ),
    );
}

#[test]
fn record_metadata_is_empty_or_a_json_object() {
    let mut a = Artifact::read(standard());
    a.commits[2].records[1].metadata = b"[1]".to_vec();
    let r = rebuild_model(&a, |_| {});
    full(&r, &[want_record(&r, 4, "not a JSON object")]);
}

#[test]
fn a_records_digest_equals_its_indexed_digest() {
    // Everything downstream (the next link, the Merkle leaves, the add_block subject, the
    // last record digest) names the indexed digest; the record is not the one indexed.
    let r = rebuild(standard(), |s| {
        if let Stage::Entry {
            commit: 2,
            record: 1,
            entry,
        } = s
        {
            entry.entry.digest = [5; 32];
        }
    });
    full(
        &r,
        &[want_record(
            &r,
            4,
            format!(
                "content digest {} does not match the indexed digest {}: the record was altered",
                hex::encode(r.layout.digests[4]),
                hex::encode([5u8; 32])
            ),
        )],
    );
}

#[test]
fn a_records_prev_link_is_the_previous_indexed_digest() {
    // A chain link to the wrong record.
    let p = plain(standard());
    let link = maif_store::format::digest::chain_link(&digest_at(&p, 3));
    let r = rebuild(standard(), |s| {
        if let Stage::Record {
            commit: 4,
            record: 1,
            header,
        } = s
        {
            header.prev_link = link;
        }
    });
    full(
        &r,
        &[want_record(
            &r,
            6,
            format!(
                "hash chain broken: the header links to {} but the previous record digest starts {}",
                hex::encode(link),
                hex::encode(&r.layout.digests[5][..8])
            ),
        )],
    );
    // The first record links to something other than the chain seed.
    let r = rebuild(standard(), |s| {
        if let Stage::Record {
            commit: 1,
            record: 0,
            header,
        } = s
        {
            header.prev_link = [0; 8];
        }
    });
    full(
        &r,
        &[want_record(
            &r,
            0,
            format!(
                "hash chain broken: the header links to 0000000000000000 but the previous chain seed starts {}",
                hex::encode(&r.layout.genesis[..8])
            ),
        )],
    );
}

#[test]
fn a_block_signature_verifies() {
    let p = plain(standard());
    let other = digest_at(&p, 0);
    let r = rebuild(standard(), |s| {
        if let Stage::BlockSignature {
            commit: 2,
            record: 1,
            signature,
            ..
        } = s
        {
            *signature = test_key().sign(maif_store::format::digest::SignedKind::Block, &other);
        }
    });
    full(&r, &[want_record(&r, 4, "block signature does not verify")]);
}

#[test]
fn an_encrypted_record_is_not_readable() {
    let mut a = Artifact::read(standard());
    a.commits[2].records[1].header.encryption = Encryption(1);
    let r = rebuild_model(&a, |_| {});
    full(
        &r,
        &[want_record(
            &r,
            4,
            "encryption code 1 is not supported: the block cannot be read",
        )],
    );
}

#[test]
fn a_record_that_does_not_decompress_is_not_readable() {
    let mut a = Artifact::read(standard());
    let record = &mut a.commits[2].records[1];
    record.header.compression = Compression(2);
    record.header.uncompressed_size = record.data.len() as u64;
    let r = rebuild_model(&a, |_| {});
    full(&r, &[want_record(&r, 4, "data at record byte 64: ")]);
}

#[test]
fn a_typed_payload_that_does_not_parse_is_not_readable() {
    let mut a = Artifact::read(standard());
    a.commits[2].records[1].data[0] = 9;
    let r = rebuild_model(&a, |_| {});
    full(
        &r,
        &[want_record(
            &r,
            4,
            "payload (the data from record byte 64, decompressed): ",
        )],
    );
}

// ---------------------------------------------------------------------------------------
// 12.2, quick verification.

#[test]
fn a_pinned_key_must_sign_the_artifact() {
    let other = maif_store::SigningKey::from_seed(&[7; 32]).public_key();
    let p = plain(standard());
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("a.maif");
    std::fs::write(&path, &p.bytes).expect("write");
    for quick in [false, true] {
        let report = block_on(verify(
            file_store(&path),
            VerifyOptions {
                quick,
                threads: 1,
                expected_key: Some(other),
                ..VerifyOptions::default()
            },
        ))
        .expect("verify");
        assert_problems(
            &report,
            &[want(
                "metadata section",
                32,
                format!(
                    "signed by {}, but the expected key is {}",
                    hex::encode(test_key().public_key()),
                    hex::encode(other)
                ),
            )],
        );
    }
}

// ---------------------------------------------------------------------------------------
// 6.3, what `SegmentHeader::decode` checks, re-signed: commit `commit`'s header breaks the
// rule, and the next commit names its (altered) digest, so the walk back from the newest
// commit reaches it and its decode is what fails (verification stops there).

fn segment_rule(commit: usize, edit: impl Fn(&mut maif_store::format::SegmentHeader), field: &str) {
    let r = rebuild(standard(), |s| {
        if let Stage::Header { commit: c, header } = s
            && c == commit
        {
            edit(header);
        }
    });
    segment_rule_reported(&r, commit, field);
}

fn segment_bytes_rule(commit: usize, edit: impl Fn(&mut [u8; 352]), field: &str) {
    let r = rebuild(standard(), |s| {
        if let Stage::HeaderBytes { commit: c, bytes } = s
            && c == commit
        {
            edit(bytes);
        }
    });
    segment_rule_reported(&r, commit, field);
}

fn segment_rule_reported(r: &Rebuilt, commit: usize, field: &str) {
    full(
        r,
        &[want("commit", seg(r, commit), format!("commit {commit}: "))],
    );
    let report = verify_bytes(&r.bytes, false);
    assert!(
        report.problems[0].reason.contains(field),
        "{field}: {:#?}",
        report.problems
    );
}

#[test]
fn segment_1_magic() {
    segment_bytes_rule(2, |b| b[0] = b'X', "magic");
}

#[test]
fn segment_2_reserved_is_zero() {
    segment_bytes_rule(2, |b| b[100] = 1, "reserved");
}

#[test]
fn segment_3_newest_run_reference_decodes() {
    segment_bytes_rule(2, |b| b[272 + 74] = 1, "run.reserved");
    segment_rule(
        2,
        |h| {
            if let Some(run) = &mut h.newest_run {
                run.tier = 3;
            }
        },
        "run.tier",
    );
    segment_rule(
        2,
        |h| {
            if let Some(run) = &mut h.newest_run {
                run.streak = 4;
            }
        },
        "run.streak",
    );
    segment_rule(
        2,
        |h| {
            if let Some(run) = &mut h.newest_run {
                run.head_len += 1;
            }
        },
        "run.head_len",
    );
    segment_rule(
        2,
        |h| {
            if let Some(run) = &mut h.newest_run {
                run.segment_offset = u64::MAX;
            }
        },
        "run.part_offset",
    );
    // A reference with no entries that is not all zeros.
    segment_bytes_rule(2, |b| b[272 + 64..272 + 72].fill(0), "run.entry_count");
}

#[test]
fn segment_5_no_unknown_flag() {
    segment_rule(2, |h| h.flags = 2, "unknown bits 0x00000002");
}

#[test]
fn segment_6_segment_len_is_the_sum_of_its_parts() {
    segment_rule(2, |h| h.segment_len += 1, "segment_len");
}

#[test]
fn segment_7_segment_end_does_not_overflow() {
    segment_rule(
        2,
        |h| {
            h.segment_offset = u64::MAX - h.segment_len + 1;
        },
        "the segment's end overflows a 64-bit offset",
    );
}

#[test]
fn segment_8_records_start_is_not_past_the_segment() {
    segment_rule(
        2,
        |h| h.records_start = h.segment_offset + 1,
        "is past the segment",
    );
}

#[test]
fn segment_9_records_added_is_at_most_record_count() {
    segment_rule(
        2,
        |h| h.records_added = h.record_count + 1,
        "exceeds the record count",
    );
}

#[test]
fn segment_10_every_commit_adds_a_provenance_entry() {
    segment_rule(
        2,
        |h| h.provenance_added = 0,
        "every commit adds at least one provenance entry",
    );
    segment_rule(
        2,
        |h| h.provenance_added = h.provenance_count + 1,
        "every commit adds at least one provenance entry",
    );
}

#[test]
fn segment_11_provenance_entries_fit_their_part() {
    segment_rule(
        2,
        |h| {
            h.provenance_added = 100;
            h.provenance_count = 200;
        },
        "entries cannot fit in the",
    );
}

#[test]
fn segment_12_commit_0_has_no_predecessor_and_no_records() {
    segment_rule(
        0,
        |h| h.previous_segment_offset = 5,
        "commit 0 (the creation) has no predecessor and no records",
    );
}

#[test]
fn segment_13_previous_segment_precedes_the_records() {
    segment_rule(
        2,
        |h| h.previous_segment_offset = h.records_start,
        "does not precede this commit's records",
    );
}

#[test]
fn segment_14_newest_run_describes_the_run_the_segment_holds() {
    segment_rule(
        2,
        |h| {
            if let Some(run) = &mut h.newest_run {
                run.seq = 1;
            }
        },
        "does not describe the",
    );
    segment_rule(
        3,
        |h| {
            if let Some(run) = &mut h.newest_run {
                run.seq = 3;
            }
        },
        "names commit 3 but this segment holds no run and is commit 3",
    );
    segment_rule(
        2,
        |h| h.newest_run = None,
        "the segment holds a run but names none",
    );
}

#[test]
fn segment_15_newest_run_holds_at_most_record_count_entries() {
    segment_rule(
        3,
        |h| {
            if let Some(run) = &mut h.newest_run {
                run.entry_count = 100;
                run.tier = 3;
            }
        },
        "holds 100 entries but the artifact has 5 records",
    );
}

#[test]
fn segment_16_records_need_a_newest_run() {
    segment_rule(
        3,
        |h| h.newest_run = None,
        "the artifact has 5 records but no index run",
    );
}

#[test]
fn segment_17_the_frontier_folds_to_the_merkle_root() {
    segment_rule(
        2,
        |h| h.merkle_root = [1; 32],
        "differs from the root of the frontier that follows the header",
    );
}

// ---------------------------------------------------------------------------------------
// 8.3, what `RunHead::decode` and `RunHead::decode_page` check, and the head's agreement
// with the reference to it, re-signed. Full verification stops at the commit whose run
// breaks a rule; quick verification reads the newest run's head (not its pages).

fn run_rule(original: &[u8], commit: usize, hook: impl FnMut(Stage<'_>), reason: &str, head: bool) {
    let r = rebuild(original, hook);
    let wanted = [want("commit", seg(&r, commit), reason)];
    full(&r, &wanted);
    if head {
        quick(&r, &wanted);
    } else {
        quick(&r, &[]);
    }
}

/// Commit 5's run head, edited; the reference keeps naming the run as the writer made it
/// (entry count, tier, streak), so the head's own rule is what fails.
fn run_head_rule(edit: impl Fn(&mut Vec<u8>), reason: &str) {
    run_rule(
        standard(),
        5,
        |s| match s {
            Stage::RunHead { commit: 5, head } => edit(head),
            Stage::Header { commit: 5, header } => {
                if let Some(run) = &mut header.newest_run {
                    (run.entry_count, run.tier, run.streak) = (3, 0, 1);
                }
            }
            _ => {}
        },
        reason,
        true,
    );
}

#[test]
fn run_head_magic() {
    run_head_rule(|h| h[0] = b'X', "magic");
}

#[test]
fn run_head_reserved_is_zero() {
    run_head_rule(|h| h[26] = 1, "reserved");
}

#[test]
fn run_head_older_reference_decodes() {
    run_head_rule(|h| h[32 + 74] = 1, "run.reserved");
}

#[test]
fn run_head_holds_an_entry() {
    run_head_rule(|h| h[8..16].fill(0), "a run holds at least one entry");
}

#[test]
fn run_head_page_count() {
    run_head_rule(|h| h[16] = 2, "but 3 entries fill 1 pages");
}

#[test]
fn run_head_tier() {
    run_head_rule(|h| h[24] = 1, "but a run of 3 entries is tier 0");
}

#[test]
fn run_head_streak() {
    run_head_rule(|h| h[25] = 2, "2 but the runs before it make it 1");
}

#[test]
fn run_head_tiers_never_grow_towards_the_newest_run() {
    // Commit 2's run (tier 1) written on top of commit 1's (tier 0).
    run_rule(
        standard(),
        2,
        |s| {
            if let Stage::Run {
                commit: 2,
                older,
                runs,
                ..
            } = s
            {
                *older = Some(runs[&1]);
            }
        },
        "tiers never grow towards the newest run",
        false,
    );
}

#[test]
fn run_head_agrees_with_its_reference() {
    run_rule(
        standard(),
        5,
        |s| {
            if let Stage::Header { commit: 5, header } = s
                && let Some(run) = &mut header.newest_run
            {
                run.streak = 2;
            }
        },
        "its head disagrees with the reference to it",
        true,
    );
}

#[test]
fn run_directory_keys_strictly_increase() {
    run_rule(
        two_pages(),
        1,
        |s| {
            if let Stage::RunHead { commit: 1, head } = s {
                let first = head[112..112 + 24].to_vec();
                head[112 + 56..112 + 56 + 24].copy_from_slice(&first);
            }
        },
        "page 1 does not start after page 0",
        true,
    );
}

#[test]
fn run_page_starts_with_its_directory_key() {
    run_rule(
        two_pages(),
        1,
        |s| {
            if let Stage::RunHead { commit: 1, head } = s {
                let at = 112 + 56 + 16;
                let position = u64::from_le_bytes(head[at..at + 8].try_into().unwrap()) + 1;
                head[at..at + 8].copy_from_slice(&position.to_le_bytes());
            }
        },
        "page 1 does not start with the key its directory entry names",
        false,
    );
}

#[test]
fn run_page_entries_strictly_increase() {
    run_rule(
        standard(),
        5,
        |s| {
            if let Stage::RunPages { commit: 5, pages } = s {
                let page = &mut pages[0];
                let (a, b) = page.split_at_mut(92);
                a.swap_with_slice(&mut b[..92]);
            }
        },
        "entry 1 of page 0 is not in (block id, position) order",
        false,
    );
}

#[test]
fn run_page_versions_start_at_1() {
    run_rule(
        standard(),
        5,
        |s| {
            if let Stage::Entry {
                commit: 5,
                record: 0,
                entry,
            } = s
            {
                entry.version = 0;
            }
        },
        "versions start at 1",
        false,
    );
}

#[test]
fn every_event_action_names_the_root_of_the_records_before_it() {
    for action in [
        Action::Convert,
        Action::Migrate,
        Action::Recover,
        Action::Compact,
    ] {
        let mut a = Artifact::read(standard());
        a.commits[3].provenance[0].action = action;
        // With the subject derived, the action alone is fine.
        full(&rebuild_model(&a, |_| {}), &[]);
        let r = rebuild_model(&a, |s| {
            if let Stage::ProvenanceEntry {
                commit: 3,
                entry: 0,
                value,
            } = s
            {
                value.subject = [3; 32];
            }
        });
        full(
            &r,
            &[want(
                "provenance",
                entry_at(&r, 3, 0),
                format!(
                    "entry #6 ({}): does not name the Merkle root of the records before it",
                    action.name()
                ),
            )],
        );
    }
}

#[test]
fn an_unknown_action_is_kept_and_only_the_rules_for_every_entry_apply() {
    let mut a = Artifact::read(standard());
    a.commits[3].provenance[0].action = Action::Unknown(200);
    let r = rebuild_model(&a, |s| {
        if let Stage::ProvenanceEntry {
            commit: 3,
            entry: 0,
            value,
        } = s
        {
            value.subject = [3; 32];
        }
    });
    full(&r, &[]);
    a.commits[3].provenance[0].details = b"42".to_vec();
    let r = rebuild_model(&a, |_| {});
    full(
        &r,
        &[want(
            "provenance",
            entry_at(&r, 3, 0),
            "entry #6 (unknown(200)): details are not a JSON object",
        )],
    );
}

#[test]
fn commit_0_records_start_at_the_end_of_the_base() {
    let mut a = Artifact::read(standard());
    a.commits[0].pad_after_records = vec![0; 4];
    let base = a.base.len() as u64;
    let r = rebuild_model(&a, |s| {
        if let Stage::Header { commit: 0, header } = s {
            header.records_start += 4;
        }
    });
    full(
        &r,
        &[want(
            "commit",
            seg(&r, 0),
            format!(
                "commit 0: says its records start at {} but the previous commit ends at {base}",
                base + 4
            ),
        )],
    );
}

#[test]
fn a_broken_link_from_an_unsigned_commit_is_that_commits_signature_problem() {
    // The link to the predecessor is not signed when the commit's signature fails: the
    // break is reported as the newer commit's signature problem (12.3, first rule).
    let r = rebuild(standard(), |s| match s {
        Stage::Header { commit: 5, header } => header.previous_commit = [7; 32],
        Stage::CommitSignature {
            commit: 5,
            signature,
            ..
        } => *signature = test_key().sign(maif_store::format::digest::SignedKind::Commit, &[1; 32]),
        _ => {}
    });
    full(
        &r,
        &[want(
            "commit",
            seg(&r, 5),
            "commit 5: the commit signature does not verify: its segment was altered",
        )],
    );
}

// ---------------------------------------------------------------------------------------
// 12.1, before either mode: the base, the newest commit, a complete commit whose trailer was
// lost, and the bytes after the commit used. Each case is checked in quick and in full
// verification (the same findings), and against what readers do with the same bytes.

/// The sector a power loss tears writes at (FORMAT.md 11.5, 12.1, 13.4).
const SECTOR: u64 = 512;

/// How many bytes of the newest trailer of [`straddling`] lie before a sector boundary.
const SPLIT: u64 = 20;

/// A TEXT block whose text is `pad` bytes longer than [`text`]'s.
fn padded(n: u32, pad: usize) -> NewBlock {
    NewBlock::new(
        FourCC::TEXT,
        TextPayload::utf8(&format!("block {n}{}", "-".repeat(pad)), Some(*b"en")).to_bytes(),
    )
    .with_id(id(n))
    .with_timestamp(CREATED_US + u64::from(n) * 1_000)
}

fn write_straddling(pad: usize) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("straddling.maif");
    block_on(async {
        let mut w = create(&path).await;
        w.add(text(1)).await.expect("add");
        w.commit().await.expect("commit 1");
        w.add(padded(2, pad)).await.expect("add");
        w.commit().await.expect("commit 2");
    });
    std::fs::read(&path).expect("read")
}

/// Three commits (0; 1 adds block 1; 2 adds block 2), written by the real writer with block
/// 2's text padded so that commit 2's trailer straddles a sector boundary: its first
/// [`SPLIT`] bytes are in one sector, the rest in the next. A power loss can then leave
/// either share written and the other not.
fn straddling() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let first = write_straddling(0);
        let at = (first.len() - TRAILER_LEN) as u64;
        let pad = (2 * SECTOR - SPLIT - at % SECTOR) % SECTOR;
        let bytes = write_straddling(pad as usize);
        let at = (bytes.len() - TRAILER_LEN) as u64;
        assert_eq!(
            at % SECTOR,
            SECTOR - SPLIT,
            "the newest trailer (at {at}) does not straddle a sector boundary"
        );
        bytes
    })
}

/// The data `padded`/`text` gave block `n` in the fixture `original`, read back from the
/// writer's file (so the comparison does not depend on the reader under test).
fn written_data(original: &[u8], n: u32) -> Vec<u8> {
    let a = Artifact::read(original);
    let record = a
        .commits
        .iter()
        .flat_map(|c| c.records.iter())
        .rfind(|r| r.header.block_id == id(n))
        .expect("the block was written");
    record.data.clone()
}

fn want_at(area: &'static str, offset: Option<u64>, reason: impl Into<String>) -> Want {
    Want {
        area,
        record: None,
        offset,
        reason: reason.into(),
    }
}

/// Quick and full verification of `bytes` each report exactly `problems` and `warnings`.
fn before_either_mode(bytes: &[u8], problems: &[Want], warnings: &[Want]) -> [VerifyReport; 2] {
    [false, true].map(|quick| {
        let report = verify_bytes(bytes, quick);
        assert_findings(&report, problems, warnings);
        report
    })
}

/// 12.1 steps 1 and 2: `wanted` is the only finding of either mode, and nothing more was
/// checked: no commit, no signature, no byte hashed, no newest commit named. Readers refuse
/// the file.
fn only_finding(bytes: &[u8], wanted: Want) {
    for report in before_either_mode(bytes, std::slice::from_ref(&wanted), &[]) {
        assert_eq!(
            (
                report.commits_checked,
                report.signatures_checked,
                report.bytes_hashed,
                report.newest_commit
            ),
            (0, 0, 0, None),
            "{} verification checked more after {wanted:?}",
            report.mode
        );
    }
    let refused = open_with_reader(bytes).expect_err("a reader opens the file");
    assert!(!refused.is_empty());
}

/// What a reader makes of `bytes`: the commit it uses, whether it completed that commit from
/// the bytes after the newest intact trailer, and the latest version of every block, read
/// (each read re-hashes the record against its committed digest).
#[derive(Debug)]
struct ReaderView {
    seq: u64,
    completed: bool,
    blocks: Vec<([u8; 16], Vec<u8>)>,
}

fn open_with_reader(bytes: &[u8]) -> Result<ReaderView, String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("a.maif");
    std::fs::write(&path, bytes).expect("write");
    let view = block_on(async {
        let reader = ArtifactReader::open(file_store(&path))
            .await
            .map_err(|e| e.to_string())?;
        let mut blocks = Vec::new();
        for info in reader.latest_blocks().await.map_err(|e| e.to_string())? {
            let block = reader.read(&info).await.map_err(|e| e.to_string())?;
            blocks.push((info.entry.block_id, block.data.to_vec()));
        }
        Ok(ReaderView {
            seq: reader.commit().seq(),
            completed: reader.completed_from_uncommitted(),
            blocks,
        })
    });
    // Readers never write.
    assert!(
        std::fs::read(&path).expect("read") == bytes,
        "a reader changed the file"
    );
    view
}

/// A reader uses commit `seq` (completed from the bytes after the newest intact trailer or
/// not, as `completed` says), and block `n` reads back with the data its writer gave it.
fn reader_uses(bytes: &[u8], seq: u64, completed: bool, n: u32, data: &[u8]) {
    let view = open_with_reader(bytes).unwrap_or_else(|e| panic!("a reader refuses it: {e}"));
    assert_eq!((view.seq, view.completed), (seq, completed));
    let block = view
        .blocks
        .iter()
        .find(|(block, _)| *block == id(n))
        .unwrap_or_else(|| panic!("block {n} is not listed"));
    assert!(block.1 == data, "block {n} reads back other data");
}

/// The finding of 12.1 step 3 for commit `seq`, whose trailer belongs at `at`.
fn lost_trailer(seq: usize, at: u64, damaged: bool) -> Want {
    want(
        "trailer",
        at,
        format!(
            "commit {seq} {}, but its segment is complete and signed and every record it adds is intact; readers use it, and the next append or `maif recover` writes its trailer back",
            if damaged {
                "has a damaged trailer"
            } else {
                "has no complete trailer (an append was interrupted after its data was written)"
            }
        ),
    )
}

/// The finding of 12.1 step 4 for an interrupted append: the bytes `at..end`.
fn interrupted(at: u64, end: u64) -> Want {
    want(
        "storage",
        at,
        format!(
            "{} bytes after the newest commit are not committed (an interrupted append); the next append discards them",
            end - at
        ),
    )
}

/// The finding of 12.1 step 4 for damage found at `at` after commit `seq`.
fn damage(seq: usize, at: u64, reason: &str) -> Want {
    want(
        "structure",
        at,
        format!(
            "the file continues after commit {seq} with {reason}: bytes were removed, inserted or altered after they were committed"
        ),
    )
}

/// A byte that is neither `right` nor zero.
fn neither(right: u8) -> u8 {
    if right ^ 0x80 != 0 { right ^ 0x80 } else { 1 }
}

/// The end of commit `commit` (its trailer's end) in `r`.
fn end_of(r: &Rebuilt, commit: usize) -> u64 {
    r.layout.trailers[commit] + TRAILER_LEN as u64
}

fn cut(bytes: &[u8], end: u64) -> Vec<u8> {
    bytes[..end as usize].to_vec()
}

// 12.1 step 1: the base.

/// The standard artifact rebuilt on the base `base` and signed with the right key: every
/// commit names that base's chain seed, so only the base itself can be wrong.
fn on_base(base: Vec<u8>) -> Vec<u8> {
    let mut a = Artifact::read(standard());
    a.base = base;
    let mut bytes = rebuild_model(&a, |_| {}).bytes;
    // An interrupted append after the newest commit, which 12.1 step 4 would report (a
    // storage warning) were anything checked after the base.
    bytes.extend_from_slice(&[0; SECTOR as usize]);
    bytes
}

fn file_header() -> Vec<u8> {
    standard()[..FILE_HEADER_LEN].to_vec()
}

fn metadata_json() -> serde_json::Map<String, serde_json::Value> {
    let base = &Artifact::read(standard()).base;
    let section = MetadataSection::decode(&base[FILE_HEADER_LEN..]).expect("metadata");
    serde_json::from_slice(&section.json).expect("json")
}

/// The writer's file header followed by a metadata section holding `json`.
fn base_with_json(json: &[u8]) -> Vec<u8> {
    let mut base = file_header();
    base.extend_from_slice(
        &MetadataSection {
            json: json.to_vec(),
        }
        .to_bytes()
        .expect("metadata section"),
    );
    base
}

fn base_with_metadata(
    edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
) -> Vec<u8> {
    let mut json = metadata_json();
    edit(&mut json);
    base_with_json(&serde_json::to_vec(&json).expect("json"))
}

fn base_problem(reason: impl Into<String>) -> Want {
    want("structure", 0, reason)
}

#[test]
fn base_1_a_file_header_that_does_not_decode_is_the_only_finding() {
    let metadata = Artifact::read(standard()).base[FILE_HEADER_LEN..].to_vec();
    let with_header = |edit: &dyn Fn(&mut Vec<u8>)| {
        let mut base = file_header();
        edit(&mut base);
        base.extend_from_slice(&metadata);
        on_base(base)
    };
    let magic = FILE_MAGIC.len();
    only_finding(
        &with_header(&|h| h[magic - 1] = b'X'),
        base_problem("not a MAIF file (no MAIF magic at byte 0)"),
    );
    // The version bytes follow the magic: major, then minor.
    let (major, minor) = (magic, magic + 1);
    assert_eq!(
        (file_header()[major], file_header()[minor]),
        (MAJOR_VERSION, MINOR_VERSION)
    );
    only_finding(
        &with_header(&|h| h[minor] = MINOR_VERSION + 1),
        base_problem(format!(
            "unsupported MAIF version {MAJOR_VERSION}.{}: this build reads MAIF 3.1 only",
            MINOR_VERSION + 1
        )),
    );
    only_finding(
        &with_header(&|h| h[minor] = 0),
        base_problem(
            "unsupported MAIF version 3.0: 3.0 is the pre-release layout that rewrote its tail on every commit",
        ),
    );
    only_finding(
        &with_header(&|h| h[major] = MAJOR_VERSION + 1),
        base_problem("this build reads MAIF 3.1 only"),
    );
    // A file cut inside its header.
    let short = FILE_HEADER_LEN as u64 - 1;
    only_finding(
        &cut(standard(), short),
        base_problem(format!(
            "{short} bytes is shorter than the smallest artifact"
        )),
    );
}

#[test]
fn base_1_a_metadata_section_that_does_not_decode_is_the_only_finding() {
    // Where the JSON starts: after the file header and the section's length prefix.
    let json_at = FILE_HEADER_LEN + MetadataSection { json: Vec::new() }.encoded_len();
    only_finding(
        &on_base(base_with_json(b"[\"not\", \"an object\"]")),
        base_problem(format!(
            "metadata section: field `json` at byte {json_at}: not a JSON object"
        )),
    );
    only_finding(
        &on_base(base_with_json(b"{\"format_version\": ")),
        base_problem(format!(
            "metadata section: field `json` at byte {json_at}: invalid JSON"
        )),
    );
    only_finding(
        &on_base(base_with_metadata(|m| {
            m.remove("agent_id").expect("agent_id");
        })),
        base_problem("not canonical artifact metadata: missing field `agent_id`"),
    );
    // A length over the limit, before anything else is read.
    let mut base = Artifact::read(standard()).base;
    base[FILE_HEADER_LEN..FILE_HEADER_LEN + 4]
        .copy_from_slice(&(MAX_METADATA_LEN + 1).to_le_bytes());
    only_finding(
        &on_base(base),
        base_problem(format!(
            "{} bytes exceeds the {MAX_METADATA_LEN}-byte limit",
            MAX_METADATA_LEN + 1
        )),
    );
    // A file cut inside its metadata section: the base is torn.
    let base_len = Artifact::read(standard()).base.len() as u64;
    only_finding(
        &cut(standard(), base_len - 1),
        base_problem(format!(
            "the metadata section ends at {base_len} but the file has {} bytes",
            base_len - 1
        )),
    );
}

#[test]
fn base_1_a_key_that_does_not_decode_is_the_only_finding() {
    let key_is = |value: &str| {
        let value = value.to_string();
        on_base(base_with_metadata(move |m| {
            m.insert("public_key".into(), serde_json::Value::String(value));
        }))
    };
    only_finding(&key_is("not hex"), base_problem("field `public_key`"));
    only_finding(
        &key_is(&hex::encode(&test_key().public_key()[..31])),
        base_problem("31 bytes, expected 32"),
    );
    only_finding(
        &on_base(base_with_metadata(|m| {
            m.insert(
                "signature_algorithm".into(),
                serde_json::Value::String("rsa".into()),
            );
        })),
        base_problem("signature algorithm \"rsa\" is not supported"),
    );
    // The identity point: a valid point of small order.
    let mut weak = [0u8; 32];
    weak[0] = 1;
    only_finding(
        &key_is(&hex::encode(weak)),
        base_problem(format!("public key {} has small order", hex::encode(weak))),
    );
    // The first encoding (y = 2, 3, ...) that is not a point of the curve.
    let invalid = (2u8..=255)
        .map(|y| {
            let mut key = [0u8; 32];
            key[0] = y;
            key
        })
        .find(|key| {
            matches!(
                PublicKey::from_bytes(key),
                Err(KeyError::InvalidPublicKey(_))
            )
        })
        .expect("an encoding off the curve");
    only_finding(
        &key_is(&hex::encode(invalid)),
        base_problem(format!(
            "public key {} is not a valid Ed25519 point",
            hex::encode(invalid)
        )),
    );
}

// 12.1 step 2: the newest commit.

#[test]
fn newest_commit_2_no_intact_trailer_is_the_only_finding() {
    let no_intact_trailer = || {
        want_at(
            "structure",
            None,
            "is torn (no intact trailer: not even the creation was committed)",
        )
    };
    // The creation's segment without its trailer.
    let p = plain(standard());
    only_finding(&cut(standard(), p.layout.trailers[0]), no_intact_trailer());
    // Every trailer has a correct CRC but names another segment length, so none is intact
    // at its own position; the segments are all complete and signed.
    let r = rebuild(standard(), |s| {
        if let Stage::Trailer { trailer, .. } = s {
            trailer.segment_len += 1;
        }
    });
    only_finding(&r.bytes, no_intact_trailer());
}

/// The offset in a segment header of the first byte that changes when `edit` is applied.
fn header_field_at(edit: impl Fn(&mut maif_store::format::SegmentHeader)) -> u64 {
    let head =
        SegmentHead::decode_prefix(&standard()[plain(standard()).layout.segments[1] as usize..])
            .expect("segment head");
    let before = head.header.to_array();
    let mut header = head.header;
    edit(&mut header);
    let after = header.to_array();
    before
        .iter()
        .zip(after.iter())
        .position(|(a, b)| a != b)
        .expect("the edit changes the header") as u64
}

#[test]
fn newest_commit_2_a_head_that_does_not_decode_is_the_only_finding() {
    // The newest segment's header has an unknown flag bit. It is signed with the right key,
    // and its trailer, a function of the header, is intact at its position.
    let flags_at = header_field_at(|h| h.flags = 2);
    let r = rebuild(standard(), |s| {
        if let Stage::Header { commit: 5, header } = s {
            header.flags = 2;
        }
    });
    let s5 = seg(&r, 5);
    let wanted = want(
        "structure",
        s5 + flags_at,
        format!(
            "segment at byte {s5}: segment header: field `flags` at byte {}",
            s5 + flags_at
        ),
    );
    only_finding(&r.bytes, wanted.clone());
    // Bytes after it, which step 4 would report, are not examined either.
    let mut bytes = r.bytes.clone();
    bytes.extend_from_slice(&[0; SECTOR as usize]);
    only_finding(&bytes, wanted);
    // The header decodes, but the frontier after it does not fold to its Merkle root.
    let root_at = header_field_at(|h| h.merkle_root[0] ^= 1);
    let r = rebuild(standard(), |s| {
        if let Stage::Header { commit: 5, header } = s {
            header.merkle_root = [1; 32];
        }
    });
    let s5 = seg(&r, 5);
    only_finding(
        &r.bytes,
        want(
            "structure",
            s5 + root_at,
            "differs from the root of the frontier that follows the header",
        ),
    );
}

// 12.1 step 3: a complete commit in the bytes after the newest intact trailer.

#[test]
fn uncommitted_3_a_complete_commit_after_the_newest_trailer_is_verified_as_the_newest() {
    // Commit 5 is complete and signed with the right key, but its first provenance entry
    // breaks a rule of 9.2 that 11.4 does not check; its trailer was never written.
    let mut a = Artifact::read(standard());
    a.commits[5].provenance[0].details = br#"["not", "an object"]"#.to_vec();
    let r = rebuild_model(&a, |_| {});
    let bytes = cut(&r.bytes, r.layout.trailers[5]);
    let lost = lost_trailer(5, r.layout.trailers[5], false);
    // Full verification checks commit 5 as the newest commit: its entry's problem is found.
    let full_report = verify_bytes(&bytes, false);
    assert_findings(
        &full_report,
        &[want(
            "provenance",
            entry_at(&r, 5, 0),
            "entry #10 (add_block): details are not a JSON object",
        )],
        std::slice::from_ref(&lost),
    );
    // Quick verification checks commit 5 too (its provenance part chains).
    let quick_report = verify_bytes(&bytes, true);
    assert_findings(&quick_report, &[], std::slice::from_ref(&lost));
    let stored = SegmentHead::decode_prefix(&bytes[seg(&r, 5) as usize..]).expect("head");
    for report in [&full_report, &quick_report] {
        assert_eq!(report.newest_commit, Some(5), "{}", report.mode);
        assert_eq!(
            report.record_count, stored.header.record_count,
            "{}",
            report.mode
        );
        assert_eq!(
            report.merkle_root,
            Some(hex::encode(stored.header.merkle_root)),
            "{}",
            report.mode
        );
    }
    assert_eq!(full_report.commits_checked, 6);
    reader_uses(&bytes, 5, true, 7, &written_data(standard(), 7));
}

#[test]
fn uncommitted_3_fewer_than_60_trailer_bytes_after_a_complete_commit_are_a_trailer_warning() {
    let p = plain(straddling());
    let n = p.layout.trailers.len() - 1;
    let at = p.layout.trailers[n];
    let data = written_data(straddling(), 2);
    for kept in [0, 1, SPLIT, TRAILER_LEN as u64 - 1] {
        let bytes = cut(straddling(), at + kept);
        before_either_mode(&bytes, &[], &[lost_trailer(n, at, false)]);
        reader_uses(&bytes, n as u64, true, 2, &data);
    }
}

#[test]
fn uncommitted_3_a_trailer_torn_at_a_sector_after_a_complete_commit_is_a_trailer_warning() {
    let p = plain(straddling());
    let n = p.layout.trailers.len() - 1;
    let at = p.layout.trailers[n];
    let split = (at + SPLIT) as usize;
    let end = (at + TRAILER_LEN as u64) as usize;
    assert_eq!((at + SPLIT) % SECTOR, 0);
    let data = written_data(straddling(), 2);
    // Each sector's share written in full or not at all.
    for (first, second) in [(true, false), (false, true), (false, false)] {
        let mut bytes = straddling().to_vec();
        if !first {
            bytes[at as usize..split].fill(0);
        }
        if !second {
            bytes[split..end].fill(0);
        }
        before_either_mode(&bytes, &[], &[lost_trailer(n, at, false)]);
        reader_uses(&bytes, n as u64, true, 2, &data);
    }
}

#[test]
fn uncommitted_3_a_damaged_trailer_after_a_complete_commit_is_a_trailer_problem() {
    let p = plain(straddling());
    let n = p.layout.trailers.len() - 1;
    let at = p.layout.trailers[n];
    let split = (at + SPLIT) as usize;
    let end = (at + TRAILER_LEN as u64) as usize;
    let data = written_data(straddling(), 2);
    let check = |bytes: &[u8]| {
        before_either_mode(bytes, &[lost_trailer(n, at, true)], &[]);
        reader_uses(bytes, n as u64, true, 2, &data);
    };
    // One byte neither right nor zero, in a share that is otherwise right (the other share
    // not written), in the first share and in the second.
    for (byte, zeroed) in [
        (at as usize + 3, split..end),
        (split + 3, at as usize..split),
    ] {
        let mut bytes = straddling().to_vec();
        bytes[zeroed].fill(0);
        bytes[byte] = neither(bytes[byte]);
        check(&bytes);
    }
    // A trailer cut short whose bytes are not all right.
    let mut bytes = cut(straddling(), at + SPLIT);
    bytes[at as usize + 1] = neither(bytes[at as usize + 1]);
    check(&bytes);
    // A trailer with a correct CRC that names another segment length: not intact at its
    // position, and not the trailer the segment implies.
    let r = rebuild(straddling(), |s| {
        if let Stage::Trailer { commit, trailer } = s
            && commit == n
        {
            trailer.segment_len += 1;
        }
    });
    check(&r.bytes);
}

// 12.1 step 4: the bytes after the commit used.

#[test]
fn after_4_an_interrupted_append_after_the_newest_commit_is_a_storage_warning() {
    let p = plain(standard());
    let end4 = end_of(&p, 4);
    let s5 = seg(&p, 5);
    let segment_end = p.layout.trailers[5];
    let first = p.layout.index[p.layout.first_position[5] as usize].entry;
    assert_eq!(first.offset, end4);
    let data = written_data(standard(), 6);
    // The interrupted append of commit 5 (whose first record starts where commit 4 ends).
    let mut cases = vec![
        // A record header cut short, a record cut short, whole records.
        cut(standard(), end4 + BLOCK_HEADER_LEN as u64 / 2),
        cut(standard(), end4 + first.record_len - 1),
        cut(standard(), s5),
        // The segment header cut short, the segment cut short.
        cut(standard(), s5 + SEGMENT_HEADER_LEN as u64 / 2),
        cut(standard(), segment_end - 1),
    ];
    // Bytes never written (zeros): the record after its header, with the whole segment
    // and no trailer, or a trailer never written.
    for end in [segment_end, segment_end + TRAILER_LEN as u64] {
        let mut bytes = cut(standard(), segment_end);
        bytes[(end4 as usize + BLOCK_HEADER_LEN)..s5 as usize].fill(0);
        bytes.resize(end as usize, 0);
        cases.push(bytes);
    }
    for bytes in cases {
        before_either_mode(&bytes, &[], &[interrupted(end4, bytes.len() as u64)]);
        reader_uses(&bytes, 4, false, 6, &data);
    }
}

/// `bytes` with `byte` inserted at `at`.
fn inserted(bytes: &[u8], at: u64, byte: u8) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out.insert(at as usize, byte);
    out
}

#[test]
fn after_4_damage_after_the_newest_commit_is_a_structure_problem_at_the_damage() {
    let p = plain(standard());
    let end4 = end_of(&p, 4);
    let (s3, s5) = (seg(&p, 3), seg(&p, 5));
    let t5 = p.layout.trailers[5];
    let s4 = seg(&p, 4);
    let check = |bytes: &[u8], at: u64, reason: String| {
        before_either_mode(bytes, &[damage(4, at, &reason)], &[]);
        // Readers refuse the file (11.5), naming the commit (by its segment) and the damage.
        let refused = open_with_reader(bytes).expect_err("a reader opens the damaged file");
        assert!(
            refused.contains(&format!(
                "the file continues after commit 4 at byte {s4} with {reason} at byte {at}: it was altered after it was committed"
            )),
            "{refused}"
        );
    };
    // A byte inserted before commit 5's records: its segment is one byte late.
    check(
        &inserted(standard(), end4, 0xa5),
        s5 + 1,
        format!("a segment of commit 5 that belongs at byte {s5}"),
    );
    // Commit 3's segment again after commit 4.
    let mut bytes = cut(standard(), end4);
    bytes.extend_from_slice(&standard()[s3 as usize..p.layout.trailers[3] as usize]);
    check(
        &bytes,
        end4,
        format!("a segment of commit 3 that belongs at byte {s3}"),
    );
    // Commit 4's trailer again, after zeros.
    let mut bytes = cut(standard(), end4);
    bytes.resize(bytes.len() + 100, 0);
    bytes.extend_from_slice(&standard()[p.layout.trailers[4] as usize..end4 as usize]);
    check(&bytes, end4 + 100, "an intact trailer out of place".into());
    // Commit 5's segment header altered (an unknown flag), its trailer not written.
    let mut bytes = cut(standard(), t5);
    let mut header = SegmentHead::decode_prefix(&bytes[s5 as usize..])
        .expect("head")
        .header;
    header.flags = 2;
    bytes[s5 as usize..s5 as usize + SEGMENT_HEADER_LEN].copy_from_slice(&header.to_array());
    check(&bytes, s5, "a segment header that does not decode".into());
    // Commit 5's record altered (the last byte of its signature) after its trailer was
    // begun, or with bytes after the place of its trailer.
    let mut altered = standard().to_vec();
    altered[s5 as usize - 1] = neither(altered[s5 as usize - 1]);
    check(
        &cut(&altered, t5 + TRAILER_MAGIC.len() as u64),
        s5,
        "commit 5 with its trailer begun but its segment or records not matching its signature"
            .into(),
    );
    let mut bytes = cut(&altered, t5);
    bytes.resize(bytes.len() + TRAILER_LEN + 1, 0);
    check(
        &bytes,
        t5,
        "bytes after the next commit's segment and trailer".into(),
    );
}

#[test]
fn after_4_bytes_after_a_completed_commit_are_classified_after_it() {
    // Commit 4's trailer was lost (zeros) and commit 5's append was interrupted: commit 4 is
    // completed (step 3) and the bytes after it are an interrupted append (step 4).
    let p = plain(standard());
    let t4 = p.layout.trailers[4];
    let end4 = end_of(&p, 4);
    let s5 = seg(&p, 5);
    let mut lost = standard().to_vec();
    lost[t4 as usize..end4 as usize].fill(0);
    let bytes = cut(&lost, s5 + SEGMENT_HEADER_LEN as u64 / 2);
    before_either_mode(
        &bytes,
        &[],
        &[
            lost_trailer(4, t4, false),
            interrupted(end4, bytes.len() as u64),
        ],
    );
    reader_uses(&bytes, 4, true, 6, &written_data(standard(), 6));
    // The same with a byte inserted before commit 5's records: damage after commit 4.
    let bytes = inserted(&lost, end4, 0xa5);
    before_either_mode(
        &bytes,
        &[damage(
            4,
            s5 + 1,
            &format!("a segment of commit 5 that belongs at byte {s5}"),
        )],
        &[lost_trailer(4, t4, false)],
    );
    assert!(open_with_reader(&bytes).is_err());
}

/// A single file whose bytes after the newest commit cannot be read: every read of them
/// fails, with an I/O error (`io`) or with the store reporting them damaged.
#[derive(Debug)]
struct UnreadableTail {
    inner: Arc<dyn BlockStore>,
    io: bool,
}

#[async_trait::async_trait]
impl BlockStore for UnreadableTail {
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn latest(&self) -> Result<Latest, StoreError> {
        self.inner.latest().await
    }
    async fn base(&self) -> Result<Base, StoreError> {
        self.inner.base().await
    }
    async fn read_segment(
        &self,
        commit: CommitRef,
        range: std::ops::Range<u64>,
    ) -> Result<bytes::Bytes, StoreError> {
        self.inner.read_segment(commit, range).await
    }
    async fn read_record_range(
        &self,
        entry: &maif_store::format::IndexEntry,
        range: std::ops::Range<u64>,
    ) -> Result<bytes::Bytes, StoreError> {
        self.inner.read_record_range(entry, range).await
    }
    async fn read_uncommitted(
        &self,
        range: std::ops::Range<u64>,
    ) -> Result<bytes::Bytes, StoreError> {
        Err(if self.io {
            StoreError::Io {
                location: self.location(),
                action: format!("reading bytes {range:?}"),
                source: std::io::Error::other("injected: the device reports a read error"),
            }
        } else {
            StoreError::Corrupt {
                location: self.location(),
                reason: format!("injected: bytes {range:?} cannot be read back"),
            }
        })
    }
    async fn create(&self, genesis: bytes::Bytes) -> Result<(), StoreError> {
        self.inner.create(genesis).await
    }
    async fn begin_append(&self, base: &AppendBase) -> Result<Box<dyn AppendSession>, StoreError> {
        self.inner.begin_append(base).await
    }
    async fn begin_import(&self, base: &Base) -> Result<Box<dyn ImportSession>, StoreError> {
        self.inner.begin_import(base).await
    }
}

#[test]
fn after_4_bytes_after_the_newest_commit_that_cannot_be_read_are_a_storage_warning_or_an_io_error()
{
    let p = plain(standard());
    let end4 = end_of(&p, 4);
    // Commit 5's records, after commit 4: readable, they would be an interrupted append.
    let bytes = cut(standard(), seg(&p, 5));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("a.maif");
    std::fs::write(&path, &bytes).expect("write");
    for io in [true, false] {
        for quick in [false, true] {
            let store: Arc<dyn BlockStore> = Arc::new(UnreadableTail {
                inner: file_store(&path),
                io,
            });
            let verified = block_on(verify(
                store,
                VerifyOptions {
                    quick,
                    threads: 1,
                    ..VerifyOptions::default()
                },
            ));
            if io {
                // A failure to read is an error, never a valid artifact.
                let error = verified.expect_err("an I/O error fails verification");
                assert!(
                    error
                        .to_string()
                        .contains("the device reports a read error"),
                    "{error}"
                );
                continue;
            }
            let report = verified.unwrap_or_else(|e| {
                panic!("bytes that are not readable as stored are a warning: {e}")
            });
            assert_findings(
                &report,
                &[],
                &[want(
                    "storage",
                    end4,
                    "bytes after the newest commit could not be examined",
                )],
            );
            assert_eq!(report.newest_commit, Some(4));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Every rule of the document has a test here (or, named, elsewhere).

const FORMAT_MD: &str = include_str!("../docs/FORMAT.md");
const THIS_FILE: &str = include_str!("keyed_rules.rs");

/// The text of the section that starts with the line `start` and ends before `end`.
fn section<'a>(start: &str, end: &str) -> &'a str {
    let from = FORMAT_MD
        .find(&format!("\n{start}"))
        .unwrap_or_else(|| panic!("FORMAT.md has no heading {start:?}"));
    let rest = &FORMAT_MD[from + 1..];
    let to = rest
        .find(&format!("\n{end}"))
        .unwrap_or_else(|| panic!("FORMAT.md has no heading {end:?} after {start:?}"));
    &rest[..to]
}

fn normalize(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The top-level bullets of `text` ("* " at the start of a line, continued by indented
/// lines), and its paragraphs that start in bold and do not introduce a list (they end in
/// a colon when they do): each one rule.
fn rule_items(text: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut current: Option<String> = None;
    let mut paragraph: Option<String> = None;
    let flush = |current: &mut Option<String>, items: &mut Vec<String>| {
        if let Some(item) = current.take() {
            items.push(normalize(&item));
        }
    };
    for line in text.lines() {
        if let Some(bullet) = line.strip_prefix("* ") {
            flush(&mut current, &mut items);
            paragraph = None;
            current = Some(bullet.to_string());
        } else if line.starts_with("  ") && current.is_some() {
            if let Some(item) = &mut current {
                item.push(' ');
                item.push_str(line);
            }
        } else if line.trim().is_empty() {
            flush(&mut current, &mut items);
            if let Some(p) = paragraph.take() {
                let p = normalize(&p);
                if is_rule_paragraph(&p) {
                    items.push(p);
                }
            }
        } else {
            flush(&mut current, &mut items);
            match &mut paragraph {
                Some(p) => {
                    p.push(' ');
                    p.push_str(line);
                }
                None => paragraph = Some(line.to_string()),
            }
        }
    }
    flush(&mut current, &mut items);
    if let Some(p) = paragraph {
        let p = normalize(&p);
        if is_rule_paragraph(&p) {
            items.push(p);
        }
    }
    items
}

/// A paragraph that starts in bold states a rule, unless it is only a bold heading or
/// introduces a list (it then ends in a colon).
fn is_rule_paragraph(p: &str) -> bool {
    let heading =
        p.starts_with("**") && p.ends_with("**") && p[2..p.len() - 2].find("**").is_none();
    p.starts_with("**") && !p.ends_with(':') && !heading
}

/// Checks that each rule is matched by exactly one fragment of `table`, that each fragment
/// matches exactly one rule, and that each test it names exists (a name `path::test`
/// names a test in another file of the workspace; an empty list is an exemption, which must
/// say why in `reason`).
fn check_coverage(name: &str, rules: &[String], table: &[(&str, &[&str])]) {
    let mut failures = Vec::new();
    for rule in rules {
        let matches: Vec<_> = table.iter().filter(|(f, _)| rule.contains(f)).collect();
        if matches.len() != 1 {
            failures.push(format!(
                "{name}: rule {rule:?} is matched by {} entries of the table, not 1",
                matches.len()
            ));
        }
    }
    for (fragment, tests) in table {
        let count = rules.iter().filter(|r| r.contains(fragment)).count();
        if count != 1 {
            failures.push(format!(
                "{name}: table entry {fragment:?} matches {count} rules of the document, not 1"
            ));
        }
        if tests.is_empty() {
            failures.push(format!("{name}: rule {fragment:?} has no test"));
        }
        for test in *tests {
            let (source, test) = match test.split_once("::") {
                None => (THIS_FILE.to_string(), *test),
                Some((path, test)) => (
                    std::fs::read_to_string(
                        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path),
                    )
                    .unwrap_or_else(|e| panic!("{path}: {e}")),
                    test,
                ),
            };
            if !source.contains(&format!("fn {test}(")) {
                failures.push(format!(
                    "{name}: rule {fragment:?} names the test {test}, which does not exist"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

const PROVENANCE_TESTS: &[&str] = &[
    "each_entry_links_to_the_previous_entry",
    "entry_details_are_a_json_object",
    "the_first_entry_is_create",
    "create_is_only_the_first_entry",
    "create_names_the_chain_seed",
    "no_entry_follows_a_finalize_entry_in_its_commit",
    "add_and_update_entries_name_the_commits_records_in_order",
    "an_add_entry_names_a_record_its_commit_adds",
    "every_record_a_commit_adds_has_an_add_or_update_entry",
    "add_block_names_version_1_of_its_id",
    "update_names_version_2_or_later_of_its_id",
    "an_event_names_the_merkle_root_of_the_records_before_it",
    "every_event_action_names_the_root_of_the_records_before_it",
    "an_unknown_action_is_kept_and_only_the_rules_for_every_entry_apply",
    "the_last_entry_is_the_provenance_head",
    "a_finalize_entry_requires_the_sealed_flag",
    "the_sealed_flag_requires_a_finalize_entry",
    "no_commit_follows_a_sealed_commit",
];

#[test]
fn the_rules_of_section_12_3_each_have_a_test() {
    let rules = rule_items(section("### 12.3", "## 13."));
    let table: &[(&str, &[&str])] = &[
        (
            "Walking back from the newest commit",
            &[
                "predecessor_commit_has_the_digest_its_successor_names",
                "a_broken_link_from_an_unsigned_commit_is_that_commits_signature_problem",
            ],
        ),
        (
            "Each commit names this artifact's chain seed",
            &["each_commit_names_the_chain_seed"],
        ),
        (
            "Each commit signature verifies",
            &["each_commit_signature_verifies"],
        ),
        (
            "Each commit's trailer is intact",
            &["each_trailer_is_the_one_its_segment_implies"],
        ),
        (
            "Each commit's `seq` is the previous one's plus 1",
            &["each_commit_number_is_one_more_than_the_previous"],
        ),
        (
            "Each commit's `records_start` is the previous commit's end",
            &[
                "each_commit_records_start_where_the_previous_commit_ends",
                "commit_0_records_start_at_the_end_of_the_base",
            ],
        ),
        (
            "No commit follows a sealed commit",
            &["no_commit_follows_a_sealed_commit"],
        ),
        (
            "`record_count` = the previous `record_count`",
            &["record_count_is_the_previous_count_plus_records_added"],
        ),
        (
            "`provenance_count` = the previous `provenance_count`",
            &["provenance_count_is_the_previous_count_plus_provenance_added"],
        ),
        (
            "The segment's parts decode",
            &[
                "a_run_head_matches_the_digest_its_reference_names",
                "run_pages_match_their_directory_digests",
                "the_provenance_part_holds_exactly_provenance_added_entries",
            ],
        ),
        (
            "A commit that holds a run: the run's entries for positions below",
            &[
                "a_run_holds_exactly_the_entries_of_the_runs_it_replaces",
                "a_runs_older_run_is_live",
            ],
        ),
        (
            "A commit that holds no run names the newest live run",
            &["a_commit_without_a_run_names_the_newest_live_run"],
        ),
        (
            "The run's entries for new positions number `records_added`",
            &["new_entries_are_the_positions_after_the_previous_count"],
        ),
        (
            "The new entries tile",
            &["new_entries_tile_the_records_up_to_the_segment"],
        ),
        (
            "Each new entry's `version` is one more",
            &["each_new_entrys_version_counts_the_earlier_records_of_its_id"],
        ),
        (
            "`last_record_digest` is the digest of the commit's last new record",
            &["last_record_digest_is_the_last_new_records"],
        ),
        ("**Provenance.**", PROVENANCE_TESTS),
        (
            "**The Merkle frontier.**",
            &[
                "each_commits_frontier_is_the_tree_of_its_records",
                "an_event_names_the_merkle_root_of_the_records_before_it",
            ],
        ),
        ("it can be read", &["a_record_can_be_read"]),
        (
            "it decodes from exactly `record_len` bytes",
            &[
                "a_record_decodes_from_exactly_record_len_bytes",
                "a_records_header_passes_the_block_header_rules",
            ],
        ),
        (
            "the index entry's `block_id`, `block_type`, `metadata_len` and `timestamp_us`",
            &[
                "index_entry_block_id_equals_the_record_header",
                "index_entry_block_type_equals_the_record_header",
                "index_entry_metadata_len_equals_the_record_header",
                "index_entry_timestamp_equals_the_record_header",
            ],
        ),
        (
            "its metadata is empty or a JSON object",
            &["record_metadata_is_empty_or_a_json_object"],
        ),
        (
            "its recomputed record digest",
            &["a_records_digest_equals_its_indexed_digest"],
        ),
        (
            "its `prev_link` is the first 8 bytes",
            &["a_records_prev_link_is_the_previous_indexed_digest"],
        ),
        (
            "its block signature verifies",
            &["a_block_signature_verifies"],
        ),
        (
            "**Signatures.**",
            &[
                "each_commit_signature_verifies",
                "a_block_signature_verifies",
            ],
        ),
        (
            // Object layout only: tested against a bucket with the CLI.
            "**Storage**",
            &["cli/tests/s3.rs::verify_reports_missing_wrong_orphaned_and_stray_objects"],
        ),
        (
            "an encryption code other than 0",
            &["an_encrypted_record_is_not_readable"],
        ),
        (
            "the data is decompressed",
            &["a_record_that_does_not_decompress_is_not_readable"],
        ),
        (
            "the data of a TEXT, EMBD or IMAG block must parse",
            &["a_typed_payload_that_does_not_parse_is_not_readable"],
        ),
    ];
    assert!(rules.len() >= 25, "too few rules parsed: {rules:#?}");
    check_coverage("12.3", &rules, table);
}

#[test]
fn the_quick_rules_of_section_12_2_each_have_a_test() {
    let rules = rule_items(section("### 12.2", "### 12.3"));
    let table: &[(&str, &[&str])] = &[
        ("the pinned key", &["a_pinned_key_must_sign_the_artifact"]),
        (
            "the commit's `genesis` equals the chain seed",
            &["each_commit_names_the_chain_seed"],
        ),
        (
            "the commit signature: one signature",
            &["each_commit_signature_verifies"],
        ),
        (
            "the trailer after the segment is intact",
            &["each_trailer_is_the_one_its_segment_implies"],
        ),
        (
            "the segment's run head, if it holds a run",
            &[
                "a_run_head_matches_the_digest_its_reference_names",
                "run_head_agrees_with_its_reference",
                "run_head_magic",
            ],
        ),
        (
            "the segment's provenance part decodes",
            &[
                "the_provenance_part_holds_exactly_provenance_added_entries",
                "each_entry_links_to_the_previous_entry",
                "the_last_entry_is_the_provenance_head",
            ],
        ),
    ];
    check_coverage("12.2", &rules, table);
}

/// The numbered steps of `text` ("N. " at the start of a line, continued by lines indented
/// by three spaces), the bullets inside a step ("   * ", continued by deeper lines), and the
/// paragraphs inside a step that follow a blank line: each one rule. A step's own text ends
/// where its first bullet starts, so that a fragment of a bullet matches only the bullet.
fn numbered_rule_items(text: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut current: Option<String> = None;
    let mut in_step = false;
    let flush = |current: &mut Option<String>, items: &mut Vec<String>| {
        if let Some(item) = current.take() {
            items.push(normalize(&item));
        }
    };
    for line in text.lines() {
        let numbered = line
            .split_once(". ")
            .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if numbered {
            flush(&mut current, &mut items);
            in_step = true;
            current = Some(line.to_string());
        } else if in_step && line.starts_with("   * ") {
            flush(&mut current, &mut items);
            current = Some(line.trim_start().to_string());
        } else if line.trim().is_empty() {
            flush(&mut current, &mut items);
        } else if in_step && line.starts_with("   ") {
            match &mut current {
                Some(item) => {
                    item.push(' ');
                    item.push_str(line);
                }
                None => current = Some(line.to_string()),
            }
        } else {
            flush(&mut current, &mut items);
            in_step = false;
        }
    }
    flush(&mut current, &mut items);
    items
}

#[test]
fn the_steps_of_section_12_1_each_have_a_test() {
    let rules = numbered_rule_items(section("### 12.1", "### 12.2"));
    let steps: Vec<u32> = rules
        .iter()
        .filter_map(|r| r.split_once(". ").and_then(|(n, _)| n.parse().ok()))
        .collect();
    assert_eq!(steps, [1, 2, 3, 4], "{rules:#?}");
    // Four steps, the two bullets of step 3, the two bullets and the closing paragraph of
    // step 4.
    assert_eq!(rules.len(), 9, "{rules:#?}");
    let table: &[(&str, &[&str])] = &[
        (
            "1. **Base.**",
            &[
                "base_1_a_file_header_that_does_not_decode_is_the_only_finding",
                "base_1_a_metadata_section_that_does_not_decode_is_the_only_finding",
                "base_1_a_key_that_does_not_decode_is_the_only_finding",
            ],
        ),
        (
            "2. **Newest commit.**",
            &[
                "newest_commit_2_no_intact_trailer_is_the_only_finding",
                "newest_commit_2_a_head_that_does_not_decode_is_the_only_finding",
            ],
        ),
        (
            "3. **Uncommitted bytes**",
            &["uncommitted_3_a_complete_commit_after_the_newest_trailer_is_verified_as_the_newest"],
        ),
        (
            "* fewer than 60 bytes, or a trailer torn",
            &[
                "uncommitted_3_fewer_than_60_trailer_bytes_after_a_complete_commit_are_a_trailer_warning",
                "uncommitted_3_a_trailer_torn_at_a_sector_after_a_complete_commit_is_a_trailer_warning",
            ],
        ),
        (
            "* any trailer byte that is neither",
            &["uncommitted_3_a_damaged_trailer_after_a_complete_commit_is_a_trailer_problem"],
        ),
        (
            "4. **Bytes after the commit used.**",
            &[
                "after_4_an_interrupted_append_after_the_newest_commit_is_a_storage_warning",
                "after_4_bytes_after_a_completed_commit_are_classified_after_it",
            ],
        ),
        (
            "* an interrupted append: a `storage` **warning**",
            &["after_4_an_interrupted_append_after_the_newest_commit_is_a_storage_warning"],
        ),
        (
            "* damage: a `structure` **problem**",
            &[
                "after_4_damage_after_the_newest_commit_is_a_structure_problem_at_the_damage",
                "after_4_bytes_after_a_completed_commit_are_classified_after_it",
            ],
        ),
        (
            "If these bytes cannot be read",
            &[
                "after_4_bytes_after_the_newest_commit_that_cannot_be_read_are_a_storage_warning_or_an_io_error",
            ],
        ),
    ];
    check_coverage("12.1", &rules, table);
}

#[test]
fn the_provenance_rules_of_section_9_2_each_have_a_test() {
    let text = section("### 9.2", "### 9.3");
    let mut rules = rule_items(text);
    // The table's rows: one rule per action code.
    rules.extend(
        text.lines()
            .filter(|l| l.starts_with("| ") && l[2..].starts_with(|c: char| c.is_ascii_digit()))
            .map(normalize),
    );
    let table: &[(&str, &[&str])] = &[
        (
            "| 1 | `create`",
            &[
                "the_first_entry_is_create",
                "create_is_only_the_first_entry",
                "create_names_the_chain_seed",
            ],
        ),
        (
            "| 2 | `add_block`",
            &[
                "add_and_update_entries_name_the_commits_records_in_order",
                "add_block_names_version_1_of_its_id",
            ],
        ),
        (
            "| 3 | `update`",
            &["update_names_version_2_or_later_of_its_id"],
        ),
        (
            "| 4 | `finalize`",
            &[
                "an_event_names_the_merkle_root_of_the_records_before_it",
                "a_finalize_entry_requires_the_sealed_flag",
            ],
        ),
        (
            "| 5 | `convert`",
            &["every_event_action_names_the_root_of_the_records_before_it"],
        ),
        (
            "| 6 | `migrate`",
            &["every_event_action_names_the_root_of_the_records_before_it"],
        ),
        (
            "| 7 | `recover`",
            &["every_event_action_names_the_root_of_the_records_before_it"],
        ),
        (
            "| 8 | `compact`",
            &["every_event_action_names_the_root_of_the_records_before_it"],
        ),
        (
            "| 0, 9–255 |",
            &["an_unknown_action_is_kept_and_only_the_rules_for_every_entry_apply"],
        ),
        (
            "`previous` equals the digest of the entry before",
            &["each_entry_links_to_the_previous_entry"],
        ),
        (
            "the details are a JSON object",
            &["entry_details_are_a_json_object"],
        ),
        ("entry #0 is `create`", &["the_first_entry_is_create"]),
        (
            "no entry follows a `finalize` entry in its commit",
            &["no_entry_follows_a_finalize_entry_in_its_commit"],
        ),
        (
            "**Subject rule for",
            &[
                "an_event_names_the_merkle_root_of_the_records_before_it",
                "every_event_action_names_the_root_of_the_records_before_it",
            ],
        ),
        (
            "entries name its new records one to one",
            &[
                "add_and_update_entries_name_the_commits_records_in_order",
                "an_add_entry_names_a_record_its_commit_adds",
                "every_record_a_commit_adds_has_an_add_or_update_entry",
            ],
        ),
        (
            "the digest of the commit's last entry equals its `provenance_head`",
            &["the_last_entry_is_the_provenance_head"],
        ),
        (
            "the commit has a `finalize` entry if and only if its sealed flag is set",
            &[
                "a_finalize_entry_requires_the_sealed_flag",
                "the_sealed_flag_requires_a_finalize_entry",
            ],
        ),
        (
            "no commit follows a sealed commit",
            &["no_commit_follows_a_sealed_commit"],
        ),
    ];
    check_coverage("9.2", &rules, table);
}

#[test]
fn the_segment_checks_of_section_6_3_each_have_a_test() {
    let text = section("### 6.3", "### 6.4");
    // The numbered checks, and the frontier check of `decode_prefix` as number 17.
    let mut numbers: Vec<u32> = text
        .lines()
        .filter_map(|l| l.split_once(". ").and_then(|(n, _)| n.parse().ok()))
        .collect();
    assert_eq!(numbers, (1..=16).collect::<Vec<_>>(), "{text}");
    assert!(text.contains("requires the root folded from the frontier"));
    numbers.push(17);
    for n in numbers {
        // Check 4 ("exactly 352 bytes were consumed") cannot fail: the header is read from
        // exactly 352 bytes.
        if n == 4 {
            continue;
        }
        assert!(
            THIS_FILE.contains(&format!("fn segment_{n}_")),
            "6.3 check {n} has no test named segment_{n}_…"
        );
    }
}

#[test]
fn the_run_checks_of_section_8_3_each_have_a_test() {
    let text = section("### 8.3", "### 8.4");
    // The checks of the paragraph that starts with `start`: separated by semicolons, the
    // last sentence's clauses by ", and ".
    let checks = |start: &str| -> Vec<String> {
        let paragraph = text
            .split("\n\n")
            .map(normalize)
            .find(|p| p.starts_with(start))
            .unwrap_or_else(|| panic!("8.3 has no paragraph {start:?}"));
        paragraph[start.len()..]
            .split("; ")
            .flat_map(|c| c.split(". "))
            .flat_map(|c| c.split(", and "))
            .map(|c| {
                c.trim()
                    .trim_start_matches("and ")
                    .trim_end_matches('.')
                    .to_string()
            })
            .filter(|c| !c.is_empty())
            .collect()
    };
    let mut rules = checks("`RunHead::decode` checks, in order:");
    rules.extend(checks("`RunHead::decode_page` checks a page:"));
    let table: &[(&str, &[&str])] = &[
        ("the magic", &["run_head_magic"]),
        ("`reserved` is zero", &["run_head_reserved_is_zero"]),
        (
            "`older` decodes as a `RunRef`",
            &["run_head_older_reference_decodes"],
        ),
        ("`entry_count ≥ 1`", &["run_head_holds_an_entry"]),
        ("`page_count = ceil", &["run_head_page_count"]),
        ("`tier = tier_of(entry_count)`", &["run_head_tier"]),
        (
            "`older.tier ≥ tier`",
            &["run_head_tiers_never_grow_towards_the_newest_run"],
        ),
        ("`streak` as above", &["run_head_streak"]),
        // Not reachable once the reference's `head_len` and the page count agree: the
        // directory is exactly the rest of the head.
        ("the directory fits in the bytes", &["run_head_page_count"]),
        (
            "strictly increase (112",
            &["run_directory_keys_strictly_increase"],
        ),
        // Not reachable: the head is read as exactly the reference's `head_len` bytes.
        (
            "exactly the head's bytes were consumed",
            &["run_head_agrees_with_its_reference"],
        ),
        (
            "checks the head's bytes against the digest in the reference",
            &["a_run_head_matches_the_digest_its_reference_names"],
        ),
        (
            "equal the reference's",
            &["run_head_agrees_with_its_reference"],
        ),
        (
            "its digest equals the directory's",
            &["run_pages_match_their_directory_digests"],
        ),
        // Not reachable: a page is read as exactly the bytes its entry count needs.
        (
            "its length is `92 ×`",
            &["run_pages_match_their_directory_digests"],
        ),
        (
            "its first key equals the directory's",
            &["run_page_starts_with_its_directory_key"],
        ),
        (
            "keys strictly increase",
            &["run_page_entries_strictly_increase"],
        ),
        (
            "every `version` is at least 1",
            &["run_page_versions_start_at_1"],
        ),
    ];
    check_coverage("8.3", &rules, table);
}
