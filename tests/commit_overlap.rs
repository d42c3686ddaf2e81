//! Overlapped commits (`ArtifactWriter::start_commit`) and background signing: they change
//! when the work is done, never what is written. The oracle is the sequential writer: the
//! same blocks, ids, times and commit points give the same file, byte for byte.

mod common;

use std::path::Path;
use std::sync::Arc;

use maif_store::artifact::{
    ArtifactReader, ArtifactWriter, CommitTicket, CreateOptions, NewBlock, VerifyOptions, verify,
};
use maif_store::format::{Action, FourCC};
use serde_json::Map;

/// What to do between blocks, as a user would.
enum Step {
    /// Add these blocks (ids from `first`) in one batch.
    Batch { first: u32, count: u32, len: usize },
    /// Update block `id` with new bytes.
    Update { id: u32 },
    /// Record an artifact-level event.
    Event,
    /// Commit (sequentially, or started and left in flight).
    Commit,
}

fn id(n: u32) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[12..].copy_from_slice(&n.to_be_bytes());
    // A valid UUID v4 layout, as fresh ids have.
    id[6] = 0x40;
    id[8] = 0x80;
    id
}

fn block(n: u32, len: usize, salt: u8) -> NewBlock {
    NewBlock::new(FourCC::BINA, vec![(n as u8) ^ salt; len])
        .with_id(id(n))
        .with_timestamp(1_700_000_000_000_000 + u64::from(n))
}

/// Batches of 1 and 3 blocks are signed at once, larger ones in the background; events stop
/// the staging of provenance entries; updates take versions.
fn steps() -> Vec<Step> {
    use Step::*;
    vec![
        Batch {
            first: 1,
            count: 1,
            len: 100,
        },
        Batch {
            first: 2,
            count: 3,
            len: 2_000,
        },
        Commit,
        Batch {
            first: 10,
            count: 700,
            len: 1_024,
        },
        Batch {
            first: 800,
            count: 40,
            len: 70_000,
        },
        Commit,
        Batch {
            first: 2_000,
            count: 1_024,
            len: 512,
        },
        Event,
        Batch {
            first: 4_000,
            count: 20,
            len: 300,
        },
        Update { id: 11 },
        Commit,
        Batch {
            first: 5_000,
            count: 9,
            len: 64,
        },
        Commit,
        Update { id: 5_001 },
        Batch {
            first: 6_000,
            count: 2_000,
            len: 256,
        },
        Commit,
    ]
}

async fn write(path: &Path, overlap: bool) {
    let options = CreateOptions {
        agent_id: "overlap".into(),
        created_us: Some(1_700_000_000_000_000),
        artifact_id: Some([7; 16]),
        ..CreateOptions::default()
    };
    let mut writer = ArtifactWriter::create(common::file_store(path), common::test_key(), options)
        .await
        .expect("create");
    writer.set_clock(|| 1_700_000_100_000_000);
    let mut in_flight: Option<CommitTicket> = None;
    for step in steps() {
        match step {
            Step::Batch { first, count, len } => {
                writer
                    .add_batch((first..first + count).map(|n| block(n, len, 0)).collect())
                    .await
                    .expect("add_batch");
            }
            Step::Update { id: n } => {
                writer
                    .update(id(n), block(n, 33, 0x5a).with_id(id(n)))
                    .await
                    .expect("update");
            }
            Step::Event => writer
                .record_event(Action::Migrate, Map::new())
                .await
                .expect("event"),
            Step::Commit if overlap => {
                let started = writer.start_commit().await.expect("start_commit");
                if let Some(previous) = in_flight.replace(started) {
                    previous.durable().await.expect("durable");
                }
            }
            Step::Commit => writer.commit().await.expect("commit"),
        }
    }
    if let Some(last) = in_flight {
        last.durable().await.expect("durable");
    }
}

#[tokio::test]
async fn overlapped_commits_write_exactly_what_sequential_commits_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sequential = dir.path().join("sequential.maif");
    let overlapped = dir.path().join("overlapped.maif");
    write(&sequential, false).await;
    write(&overlapped, true).await;
    let (a, b) = (
        std::fs::read(&sequential).expect("read"),
        std::fs::read(&overlapped).expect("read"),
    );
    assert_eq!(a.len(), b.len(), "the files differ in length");
    assert!(a == b, "the overlapped writer wrote other bytes");
    let report = verify(common::file_store(&overlapped), VerifyOptions::default())
        .await
        .expect("verify");
    assert!(report.valid && report.warnings.is_empty(), "{report:?}");
    let reader = ArtifactReader::open(common::file_store(&overlapped))
        .await
        .expect("open");
    assert_eq!(reader.commit().seq(), 5);
}

/// A started commit is the store's: dropping the writer does not undo it, and the ticket
/// still tells when it is durable. Blocks added after it and never committed are cut off.
#[tokio::test]
async fn a_started_commit_outlives_its_writer_and_later_blocks_do_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("a.maif");
    let (mut writer, before, ticket) = small_artifact_with_started_commit(&path, 1..=500, 1).await;
    assert_eq!(ticket.seq(), writer.last_commit().seq());
    writer
        .add_batch((501..=900).map(|n| block(n, 1_024, 1)).collect())
        .await
        .expect("add after");
    drop(writer);
    let seq = ticket.seq();
    ticket.durable().await.expect("durable");
    let newest = holds_verifies_and_takes_more(&path, before + 500, block(901, 10, 1)).await;
    assert_eq!(newest, seq);
}

/// A writer on the small test artifact at `path`, the records it held, and the ticket of
/// the commit it started of blocks `ids` (1 KiB each, bytes salted with `salt`).
async fn small_artifact_with_started_commit(
    path: &Path,
    ids: std::ops::RangeInclusive<u32>,
    salt: u8,
) -> (ArtifactWriter, u64, CommitTicket) {
    let mut writer = common::write_small_artifact(path).await;
    let before = writer.record_count();
    writer
        .add_batch(ids.map(|n| block(n, 1_024, salt)).collect())
        .await
        .expect("add");
    let ticket = writer.start_commit().await.expect("start the commit");
    (writer, before, ticket)
}

/// The artifact at `path` holds `records` records and verifies without a warning, and a new
/// writer appends `next` after them. Returns the newest commit's number before that append.
async fn holds_verifies_and_takes_more(path: &Path, records: u64, next: NewBlock) -> u64 {
    let reader = ArtifactReader::open(common::file_store(path))
        .await
        .expect("open");
    assert_eq!(reader.record_count(), records);
    let report = verify(common::file_store(path), VerifyOptions::default())
        .await
        .expect("verify");
    assert!(report.valid && report.warnings.is_empty(), "{report:?}");
    let mut writer = ArtifactWriter::open(common::file_store(path), common::test_key())
        .await
        .expect("reopen");
    writer.add(next).await.expect("add");
    writer.commit().await.expect("commit");
    assert_eq!(writer.record_count(), records + 1);
    reader.commit().seq()
}

/// From a writer's second commit on a single file, `start_commit` hands the commit over in
/// the background (the records of its last batches follow their signatures), so the caller
/// goes on at once. The hand-over needs nothing more from the writer: its ticket becomes
/// durable with the writer idle, and with the writer dropped; blocks added after it and
/// never committed are cut off; the artifact verifies and the next writer appends after it.
#[tokio::test]
async fn a_commit_handed_over_in_the_background_needs_nothing_more_from_its_writer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("a.maif");
    // The first commit of this session: handed to the store before start_commit returns.
    let (mut writer, before, first) = small_artifact_with_started_commit(&path, 1..=300, 3).await;
    // The second: in the background, its last batches still being signed when it returns.
    writer
        .add_batch((301..=2_300).map(|n| block(n, 1_024, 3)).collect())
        .await
        .expect("add");
    let second = writer.start_commit().await.expect("start the second");
    assert_eq!(second.seq(), first.seq() + 1);
    // Awaited with the writer idle: nothing else drives the hand-over.
    first.durable().await.expect("first durable");
    second.durable().await.expect("second durable");
    let reader = ArtifactReader::open(common::file_store(&path))
        .await
        .expect("open");
    assert_eq!(reader.record_count(), before + 2_300);
    // A third, left to finish after the writer is dropped, with blocks added after it.
    writer
        .add_batch((2_301..=3_300).map(|n| block(n, 1_024, 3)).collect())
        .await
        .expect("add");
    let third = writer.start_commit().await.expect("start the third");
    let third_seq = third.seq();
    // Adding a block of that commit again, same id and content, finds it committed: its
    // record is read back while the commit may still be on its way to the file.
    let again = writer
        .add(block(3_300, 1_024, 3))
        .await
        .expect("add a committed block again");
    assert_eq!((again.version, again.position), (1, before + 3_299));
    writer
        .add_batch((3_301..=3_700).map(|n| block(n, 1_024, 3)).collect())
        .await
        .expect("add after");
    drop(writer);
    third.durable().await.expect("third durable");
    let newest = holds_verifies_and_takes_more(&path, before + 3_300, block(3_701, 10, 3)).await;
    assert_eq!(newest, third_seq);
}

/// Stores that cannot overlap commits (every object store) make the commit durable before
/// `start_commit` returns; the ticket is ready and the result is the same artifact.
#[tokio::test]
async fn on_an_object_store_a_started_commit_is_durable_at_once() {
    let store: Arc<dyn maif_store::store::BlockStore> =
        Arc::new(maif_store::store::ObjectBackend::new(
            Arc::new(object_store::memory::InMemory::new()),
            object_store::path::Path::from("overlap"),
            "memory://test/overlap",
        ));
    let mut writer = common::write_small_artifact_to(store.clone()).await;
    let before = writer.record_count();
    writer
        .add_batch((1..=50).map(|n| block(n, 100, 2)).collect())
        .await
        .expect("add");
    let ticket = writer.start_commit().await.expect("start");
    let reader = ArtifactReader::open(store.clone()).await.expect("open");
    assert_eq!(reader.record_count(), before + 50, "not durable at once");
    ticket.durable().await.expect("durable");
}

/// A commit whose `fdatasync` fails on the file's writer thread (`MAIF_TEST_FAIL_AT`,
/// src/store/mod.rs) is not taken for committed by a later add of one of its blocks (same
/// id and content): the add waits for the records to be readable, hears of the failure and
/// reports it, instead of finding the record on disk and answering that the block is
/// committed. The ticket reports the failure too, and a reader finds the artifact as it was.
///
/// The hook is process-wide, so the test runs itself again in a child process with it set.
#[tokio::test]
async fn re_adding_a_block_of_a_commit_that_failed_reports_the_failure() {
    const NAME: &str = "re_adding_a_block_of_a_commit_that_failed_reports_the_failure";
    if std::env::var_os("MAIF_TEST_FAIL_AT").is_none() {
        let child = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", NAME, "--nocapture"])
            // The third commit's first-phase sync (the small artifact makes two): the
            // commit of blocks 1-300.
            .env("MAIF_TEST_FAIL_AT", "append:phase-1-sync@3")
            .output()
            .expect("run the test in a child process");
        let out = String::from_utf8_lossy(&child.stdout);
        assert!(
            child.status.success() && out.contains("1 passed"),
            "child: {}\n{out}\n{}",
            child.status,
            String::from_utf8_lossy(&child.stderr)
        );
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("a.maif");
    let (mut writer, before, failing) = small_artifact_with_started_commit(&path, 1..=300, 5).await;
    let again = writer.add(block(300, 1_024, 5)).await;
    let error = again.expect_err("a block of a failed commit taken for committed");
    assert!(
        error.to_string().contains("MAIF_TEST_FAIL_AT"),
        "the add does not say why: {error}"
    );
    let durable = failing.durable().await;
    assert!(
        durable
            .as_ref()
            .is_err_and(|e| e.to_string().contains("MAIF_TEST_FAIL_AT")),
        "{durable:?}"
    );
    drop(writer);
    holds_verifies_and_takes_more(&path, before, block(1, 10, 5)).await;
}
