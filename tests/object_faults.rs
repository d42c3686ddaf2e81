//! Commits on an object store under injected faults: every outcome a writer reports is the
//! truth, nothing acknowledged is lost, and nothing is added twice. The dangerous case is a
//! connection reset after the store acted: the commit object exists, the writer heard an
//! error, and only reading the object back tells the two apart.
//!
//! (The same protocol against a real S3 server runs in `tests/s3.rs`.)

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::faulty::{Fault, FaultyStore, Request};
use maif_store::Error;
use maif_store::artifact::{ArtifactReader, ArtifactWriter, NewBlock, VerifyOptions, verify};
use maif_store::format::FourCC;
use maif_store::store::{BlockStore, ListingOrder, ObjectBackend, StoreError};
use object_store::ObjectStore;
use object_store::path::Path as ObjectPath;

/// A fresh in-memory bucket, and a backend on it seen through `faulty`.
fn bucket() -> (Arc<dyn ObjectStore>, Arc<FaultyStore>) {
    let inner: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    (inner.clone(), FaultyStore::new(inner))
}

fn backend(store: Arc<dyn ObjectStore>) -> Arc<dyn BlockStore> {
    Arc::new(
        ObjectBackend::new(store, ObjectPath::from("art"), "memory://faults/art")
            .with_listing_order(ListingOrder::Lexicographic),
    )
}

fn text(n: u8) -> NewBlock {
    NewBlock::new(FourCC::TEXT, vec![0, 0, 0, b'f', n])
}

/// What the artifact holds, read by a fresh reader with no faults; checks it verifies.
async fn records_and_texts(store: Arc<dyn ObjectStore>) -> (u64, Vec<Vec<u8>>) {
    let reader = ArtifactReader::open(backend(store.clone()))
        .await
        .expect("open");
    let mut texts = Vec::new();
    for info in reader.blocks().await.expect("list").iter() {
        texts.push(reader.read(info).await.expect("read").data[3..].to_vec());
    }
    let report = verify(backend(store), VerifyOptions::default())
        .await
        .expect("verify");
    assert!(report.valid, "{:?}", report.problems);
    (reader.record_count(), texts)
}

/// The small artifact's 5 records, then one writer on `faulty`.
async fn artifact_and_writer(
    inner: &Arc<dyn ObjectStore>,
    faulty: &Arc<FaultyStore>,
) -> ArtifactWriter {
    common::write_small_artifact_to(backend(inner.clone())).await;
    ArtifactWriter::open(backend(faulty.clone()), common::test_key())
        .await
        .expect("open")
}

#[tokio::test]
async fn a_commit_whose_answer_was_lost_after_the_store_acted_is_reported_made() {
    let (inner, faulty) = bucket();
    let mut writer = artifact_and_writer(&inner, &faulty).await;
    faulty.inject(Request::Put, "/commits/", Fault::ResetAfter, 1);
    writer.add(text(1)).await.expect("add");
    writer
        .commit()
        .await
        .expect("the commit object holds our bytes: the commit was made");
    assert_eq!(faulty.pending_rules(), 0, "the fault was injected");
    writer.add(text(2)).await.expect("add");
    writer.commit().await.expect("the next commit");
    let (records, texts) = records_and_texts(inner).await;
    assert_eq!(records, 7, "each block once");
    assert_eq!(texts[5..], [b"f\x01".to_vec(), b"f\x02".to_vec()]);
}

#[tokio::test]
async fn a_commit_reset_before_the_store_acted_is_made_by_a_retry() {
    let (inner, faulty) = bucket();
    let mut writer = artifact_and_writer(&inner, &faulty).await;
    faulty.inject(Request::Put, "/commits/", Fault::ResetBefore, 2);
    writer.add(text(1)).await.expect("add");
    writer.commit().await.expect("made on the third attempt");
    assert_eq!(faulty.pending_rules(), 0);
    assert_eq!(records_and_texts(inner).await.0, 6);
}

#[tokio::test]
async fn record_uploads_are_retried_after_resets_before_and_after_the_store_acted() {
    let (inner, faulty) = bucket();
    let mut writer = artifact_and_writer(&inner, &faulty).await;
    faulty.inject(Request::Put, "/blocks/", Fault::ResetAfter, 1);
    faulty.inject(Request::Put, "/blocks/", Fault::ResetBefore, 1);
    writer.add(text(1)).await.expect("add");
    writer.add(text(2)).await.expect("add");
    writer.commit().await.expect("commit");
    assert_eq!(faulty.pending_rules(), 0);
    assert_eq!(records_and_texts(inner).await.0, 7);
}

#[tokio::test]
async fn an_outcome_nothing_settles_is_reported_unknown_and_never_repeated() {
    let (inner, faulty) = bucket();
    let mut writer = artifact_and_writer(&inner, &faulty).await;
    // The create lands but its answer is lost, and every read-back fails too.
    faulty.inject(Request::Put, "/commits/", Fault::ResetAfter, 1);
    faulty.inject(Request::Get, "/commits/", Fault::ResetBefore, 100);
    writer.add(text(1)).await.expect("add");
    let outcome = writer.commit().await;
    assert!(
        matches!(outcome, Err(Error::Store(StoreError::Unknown { .. }))),
        "{outcome:?}"
    );
    let message = outcome.expect_err("unknown").to_string();
    assert!(message.contains("unknown"), "{message}");
    // The blocks were not kept for another attempt: the commit did land, and adding them
    // again would store them twice.
    let (inner_records, texts) = records_and_texts(inner.clone()).await;
    assert_eq!(inner_records, 6);
    assert_eq!(texts.iter().filter(|t| *t == b"f\x01").count(), 1);
    // Once the store answers again, the same writer carries on from the commit it made.
    let mut writer = ArtifactWriter::open(backend(inner.clone()), common::test_key())
        .await
        .expect("open");
    writer.add(text(2)).await.expect("add");
    writer.commit().await.expect("commit");
    assert_eq!(records_and_texts(inner).await.0, 7);
}

#[tokio::test]
async fn a_refused_commit_is_a_definite_failure_and_its_blocks_stay_pending() {
    let (inner, faulty) = bucket();
    let mut writer = artifact_and_writer(&inner, &faulty).await;
    faulty.inject(Request::Put, "/commits/", Fault::Refuse, 1);
    writer.add(text(1)).await.expect("add");
    let outcome = writer.commit().await;
    assert!(
        matches!(outcome, Err(Error::Store(StoreError::Object { .. }))),
        "a 403 is not an unknown outcome: {outcome:?}"
    );
    assert_eq!(
        records_and_texts(inner.clone()).await.0,
        5,
        "nothing landed"
    );
    // The refusal wrote nothing, so the pending block is still there to commit.
    writer
        .commit()
        .await
        .expect("commit once the store accepts");
    assert_eq!(records_and_texts(inner).await.0, 6);
}

/// The adversarial case of the lessons: one writer's commit PUT is held up while another
/// writer commits several times. The slow writer must not overwrite, hide or drop any of the
/// fast writer's commits, and its own block must land once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_writer_loses_no_commit_of_a_fast_one() {
    let (inner, faulty) = bucket();
    let mut slow = artifact_and_writer(&inner, &faulty).await;
    faulty.inject(
        Request::Put,
        "/commits/",
        Fault::Delay(Duration::from_millis(400)),
        1,
    );
    slow.add(text(100)).await.expect("add");
    let slow_commit = tokio::spawn(async move {
        slow.commit().await?;
        Ok::<_, Error>(slow)
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut fast = ArtifactWriter::open(backend(inner.clone()), common::test_key())
        .await
        .expect("open fast");
    for n in 0..5 {
        fast.add(text(n)).await.expect("add");
        fast.commit().await.expect("fast commit");
    }
    let mut slow = slow_commit
        .await
        .expect("join")
        .expect("the stalled writer rebases and commits");
    slow.add(text(101)).await.expect("add");
    slow.commit().await.expect("commit");
    let (records, texts) = records_and_texts(inner).await;
    assert_eq!(records, 5 + 5 + 2);
    assert_eq!(
        texts[5..10],
        (0..5).map(|n| vec![b'f', n]).collect::<Vec<_>>(),
        "the fast writer committed while the slow one was held up"
    );
    for n in [0, 1, 2, 3, 4, 100, 101] {
        assert_eq!(
            texts.iter().filter(|t| **t == [b'f', n]).count(),
            1,
            "block {n}"
        );
    }
}

/// Bytes damaged on the way from the store (the object is intact) are read again before
/// anything is called altered: `read` and a full `verify` both succeed. Bytes that stay wrong
/// are still reported.
#[tokio::test]
async fn a_record_damaged_on_the_way_is_read_again_before_it_is_called_altered() {
    let (inner, faulty) = bucket();
    common::write_small_artifact_to(backend(inner.clone())).await;
    let reader = ArtifactReader::open(backend(faulty.clone()))
        .await
        .expect("open");
    let blocks = reader.blocks().await.expect("list");
    let first = blocks[0];
    faulty.inject(Request::Get, "/blocks/", Fault::Garble, 1);
    let block = reader
        .read(&first)
        .await
        .expect("a second read gets intact bytes");
    assert_eq!(faulty.pending_rules(), 0, "the garbling was injected");
    assert_eq!(block.info.entry.digest, first.entry.digest);

    faulty.inject(Request::Get, "/blocks/", Fault::Garble, 1);
    let report = verify(backend(faulty.clone()), VerifyOptions::default())
        .await
        .expect("verify");
    assert_eq!(faulty.pending_rules(), 0, "the garbling was injected");
    assert!(report.valid, "{:?}", report.problems);

    // Wrong on every read: the record is reported (reader: twice; verify: twice).
    let key = hex::encode(first.entry.digest);
    faulty.inject(Request::Get, &key, Fault::Garble, 2);
    assert!(
        matches!(
            reader.read(&first).await,
            Err(Error::Verification(_) | Error::Format { .. })
        ),
        "bytes wrong on every read are reported"
    );
    faulty.inject(Request::Get, &key, Fault::Garble, 2);
    let report = verify(backend(faulty.clone()), VerifyOptions::default())
        .await
        .expect("verify");
    assert!(!report.valid, "bytes wrong on every read fail verification");
}
