//! The `BlockStore` conformance suite: small named cases, each run on every backend that
//! supports it (see `tests/conformance.rs` and `tests/s3.rs`). A failure names its case.

use std::sync::Arc;

use maif_store::artifact::{ArtifactReader, ArtifactWriter, NewBlock, VerifyOptions, verify};
use maif_store::format::FourCC;
use maif_store::store::{BlockStore, StoreError};

use super as common;

/// What a backend can do.
#[derive(Debug, Clone, Copy)]
pub struct Capabilities {
    /// Appends (a single file stored as one object cannot be appended to).
    pub append: bool,
    /// Records are objects of their own (the object layout), so garbage collection applies.
    pub records_as_objects: bool,
}

/// A location with no artifact yet, and a second handle on it.
pub type Fresh = (Arc<dyn BlockStore>, Arc<dyn BlockStore>);

/// Runs every case `capabilities` allows, each on a fresh location from `fresh`.
pub async fn run_all(mut fresh: impl FnMut(&str) -> Fresh, capabilities: Capabilities) {
    empty_store_says_not_found(fresh("empty")).await;
    if capabilities.append {
        create_then_refuse_a_second_create(fresh("create")).await;
        written_blocks_read_back_through_two_handles(fresh("read-back")).await;
        ranges_outside_a_record_are_refused(fresh("ranges")).await;
        an_abandoned_append_changes_nothing(fresh("abandoned")).await;
        two_writers_from_one_state_conflict_without_retries(fresh("conflict")).await;
        a_stale_writer_rebases_and_loses_nothing(fresh("stale")).await;
        writers_racing_in_one_process_all_land(fresh("racing")).await;
        large_and_small_records_round_trip(fresh("sizes")).await;
        an_add_repeated_under_its_id_lands_once(fresh("idempotent")).await;
        if capabilities.records_as_objects {
            garbage_collection_takes_only_old_unreferenced_records(fresh("gc")).await;
        } else {
            garbage_collection_is_refused_clearly(fresh("gc")).await;
        }
    }
}

pub async fn empty_store_says_not_found((store, _): Fresh) {
    assert!(
        matches!(store.latest().await, Err(StoreError::NotFound { .. })),
        "empty_store_says_not_found: an empty location must say NotFound"
    );
    assert!(
        ArtifactReader::open(store).await.is_err(),
        "empty_store_says_not_found: opening nothing must fail"
    );
}

pub async fn create_then_refuse_a_second_create((store, _): Fresh) {
    common::write_small_artifact_to(store.clone()).await;
    let again = ArtifactWriter::create(store.clone(), common::test_key(), Default::default()).await;
    assert!(
        matches!(
            again,
            Err(maif_store::Error::Store(StoreError::AlreadyExists { .. }))
        ),
        "create_then_refuse_a_second_create: {again:?}"
    );
}

pub async fn written_blocks_read_back_through_two_handles((store, other): Fresh) {
    common::write_small_artifact_to(store.clone()).await;
    for handle in [&store, &other] {
        let reader = ArtifactReader::open(handle.clone()).await.expect("open");
        assert_eq!(reader.blocks().await.expect("list").len(), 5);
        let v1 = reader.get(&[1; 16], Some(1)).await.expect("v1");
        let v2 = reader.get(&[1; 16], None).await.expect("latest");
        assert_eq!(&v1.data[3..], b"hello, MAIF");
        assert_eq!(&v2.data[3..], b"hello again");
        assert_eq!(v2.info.version, 2);
        assert_eq!(
            reader.by_type(FourCC(*b"XyZ1")).await.expect("type").len(),
            1
        );
        let first = reader.blocks().await.expect("list")[0];
        let (header, metadata) = reader.read_metadata(&first).await.expect("prefix");
        assert_eq!(header.block_id, [1; 16]);
        assert_eq!(metadata["source"], "golden");
        assert!(matches!(
            reader.get(&[9; 16], None).await,
            Err(maif_store::Error::UnknownBlock { .. })
        ));
        assert!(matches!(
            reader.get(&[1; 16], Some(3)).await,
            Err(maif_store::Error::NoSuchVersion { latest: 2, .. })
        ));
        let report = verify(handle.clone(), VerifyOptions::default())
            .await
            .expect("verify");
        assert!(
            report.valid,
            "written_blocks_read_back_through_two_handles: {:?}",
            report.problems
        );
    }
}

pub async fn ranges_outside_a_record_are_refused((store, _): Fresh) {
    common::write_small_artifact_to(store.clone()).await;
    let reader = ArtifactReader::open(store.clone()).await.expect("open");
    let entry = reader.blocks().await.expect("list")[0].entry;
    assert!(
        store
            .read_record_range(&entry, 0..entry.record_len + 1)
            .await
            .is_err(),
        "ranges_outside_a_record_are_refused"
    );
    assert_eq!(
        store.read_record(&entry).await.expect("record").len() as u64,
        entry.record_len
    );
}

pub async fn an_abandoned_append_changes_nothing((store, _): Fresh) {
    let mut writer = common::write_small_artifact_to(store.clone()).await;
    let before = ArtifactReader::open(store.clone())
        .await
        .expect("open")
        .commit()
        .clone();
    writer
        .add(NewBlock::new(FourCC::BINA, vec![9; 100]))
        .await
        .expect("add");
    drop(writer);
    let after = ArtifactReader::open(store.clone()).await.expect("open");
    assert_eq!(
        *after.commit(),
        before,
        "an_abandoned_append_changes_nothing: an uncommitted append became visible"
    );
    assert!(
        verify(store.clone(), VerifyOptions::default())
            .await
            .expect("verify")
            .valid
    );
}

pub async fn two_writers_from_one_state_conflict_without_retries((store, other): Fresh) {
    common::write_small_artifact_to(store.clone()).await;
    let mut first = ArtifactWriter::open(store.clone(), common::test_key())
        .await
        .expect("open 1");
    let mut second = ArtifactWriter::open(other.clone(), common::test_key())
        .await
        .expect("open 2")
        .with_max_retries(0);
    first
        .add(NewBlock::new(FourCC::TEXT, vec![0, 0, 0, b'a']))
        .await
        .expect("add 1");
    first.commit().await.expect("commit 1");
    let lost = async {
        second
            .add(NewBlock::new(FourCC::TEXT, vec![0, 0, 0, b'b']))
            .await?;
        second.commit().await
    }
    .await;
    assert!(
        matches!(
            lost,
            Err(maif_store::Error::Store(StoreError::Conflict { .. }))
        ),
        "two_writers_from_one_state_conflict_without_retries: the second writer must see a conflict: {lost:?}"
    );
    let reader = ArtifactReader::open(store.clone()).await.expect("open");
    assert_eq!(
        reader.record_count(),
        6,
        "only the first writer's block landed"
    );
}

/// A writer that opened before others committed several times rebases on its commit: its
/// blocks and all of theirs are there, and nothing committed is lost.
pub async fn a_stale_writer_rebases_and_loses_nothing((store, other): Fresh) {
    common::write_small_artifact_to(store.clone()).await;
    let mut stale = ArtifactWriter::open(other.clone(), common::test_key())
        .await
        .expect("open stale");
    let mut fast = ArtifactWriter::open(store.clone(), common::test_key())
        .await
        .expect("open fast");
    for n in 0..3u8 {
        if n == 1 {
            fast.update([1; 16], NewBlock::new(FourCC::TEXT, vec![0, 0, 0, b'v']))
                .await
                .expect("update");
        } else {
            fast.add(NewBlock::new(FourCC::TEXT, vec![0, 0, 0, b'f', n]))
                .await
                .expect("add");
        }
        fast.commit().await.expect("commit");
    }
    let stale_block = async {
        let placed = stale
            .add(NewBlock::new(FourCC::TEXT, vec![0, 0, 0, b's']))
            .await?;
        stale
            .update([1; 16], NewBlock::new(FourCC::TEXT, vec![0, 0, 0, b'u']))
            .await?;
        stale.commit().await?;
        Ok::<_, maif_store::Error>(placed)
    }
    .await
    .expect("the stale writer commits after rebasing");
    let reader = ArtifactReader::open(store.clone()).await.expect("open");
    assert_eq!(reader.record_count(), 5 + 3 + 2);
    let found = reader
        .get(&stale_block.block_id, None)
        .await
        .expect("stale block");
    assert_eq!(&found.data[3..], b"s");
    let updated = reader.get(&[1; 16], None).await.expect("updated");
    assert_eq!(
        updated.info.version, 4,
        "the update counted the versions committed meanwhile"
    );
    let report = verify(store.clone(), VerifyOptions::default())
        .await
        .expect("verify");
    assert!(
        report.valid,
        "a_stale_writer_rebases_and_loses_nothing: {:?}",
        report.problems
    );
}

/// Three writers in one process, on two handles, each making single-block commits as fast as
/// it can: every commit conflicts with the others' at some point, and each retries until it
/// lands. No writer may block the others (a file lock waited for on the runtime's thread
/// would deadlock here), and every acknowledged block is there.
pub async fn writers_racing_in_one_process_all_land((store, other): Fresh) {
    const COMMITS: u8 = 12;
    common::write_small_artifact_to(store.clone()).await;
    let writers = (0..3u8).map(|w| {
        let handle = if w % 2 == 0 {
            store.clone()
        } else {
            other.clone()
        };
        async move {
            let mut writer = ArtifactWriter::open(handle, common::test_key()).await?;
            let mut ids = Vec::new();
            for n in 0..COMMITS {
                let placed = writer
                    .add(NewBlock::new(FourCC::TEXT, vec![0, 0, 0, b'w', w, n]))
                    .await?;
                // Mid-append (a single file is locked for it): let the others try to begin.
                tokio::task::yield_now().await;
                writer.commit().await?;
                ids.push((placed.block_id, vec![b'w', w, n]));
                // Let the others in between commits.
                tokio::task::yield_now().await;
            }
            Ok::<_, maif_store::Error>(ids)
        }
    });
    let acknowledged: Vec<_> = futures::future::join_all(writers)
        .await
        .into_iter()
        .map(|r| r.expect("writers_racing_in_one_process_all_land: a writer failed"))
        .collect();
    let reader = ArtifactReader::open(store.clone()).await.expect("open");
    assert_eq!(reader.record_count(), 5 + 3 * u64::from(COMMITS));
    for (id, text) in acknowledged.into_iter().flatten() {
        let block = reader
            .get(&id, None)
            .await
            .expect("writers_racing_in_one_process_all_land: an acknowledged block is missing");
        assert_eq!(&block.data[3..], text.as_slice());
    }
    let report = verify(store, VerifyOptions::default())
        .await
        .expect("verify");
    assert!(
        report.valid,
        "writers_racing_in_one_process_all_land: {:?}",
        report.problems
    );
}

pub async fn large_and_small_records_round_trip((store, _): Fresh) {
    let payload =
        |n: usize, len: usize| -> Vec<u8> { (0..len).map(|i| (i * 31 + n) as u8).collect() };
    let sizes = [3 << 20, 10, 200_000, 65_536, 65_535, 1 << 20, 0, 5];
    let mut writer = ArtifactWriter::create(store.clone(), common::test_key(), Default::default())
        .await
        .expect("create");
    for (n, len) in sizes.iter().enumerate() {
        writer
            .add(NewBlock::new(FourCC::BINA, payload(n, *len)))
            .await
            .expect("add");
        if n == 3 {
            writer.commit().await.expect("commit");
        }
    }
    writer.commit().await.expect("commit");
    let reader = ArtifactReader::open(store.clone()).await.expect("open");
    let blocks = reader.blocks().await.expect("list");
    assert_eq!(blocks.len(), sizes.len());
    for (n, info) in blocks.iter().enumerate() {
        let block = reader.read(info).await.expect("read");
        assert_eq!(
            block.data.as_ref(),
            payload(n, sizes[n]).as_slice(),
            "large_and_small_records_round_trip: block {n}"
        );
    }
    let report = verify(store, VerifyOptions::default())
        .await
        .expect("verify");
    assert!(report.valid, "{:?}", report.problems);
}

/// Re-running an add that names its id (after an unknown outcome) is safe: a block committed
/// under that id with the same content counts as done, whether the writer sees it when adding
/// or only when re-linking after another writer committed it; other content is refused.
pub async fn an_add_repeated_under_its_id_lands_once((store, other): Fresh) {
    const CASE: &str = "an_add_repeated_under_its_id_lands_once";
    common::write_small_artifact_to(store.clone()).await;
    let id = [0x42; 16];
    let block = || {
        NewBlock::new(FourCC::BINA, b"event 1".to_vec()).with_metadata(&common::meta(&[("k", "v")]))
    };
    let mut first = ArtifactWriter::open(store.clone(), common::test_key())
        .await
        .expect("open");
    let landed = first.add(block().with_id(id)).await.expect("add");
    first.commit().await.expect("commit");

    // Seen when adding: nothing new is written.
    let mut again = ArtifactWriter::open(other.clone(), common::test_key())
        .await
        .expect("open again");
    let before = again.record_count();
    let repeated = again.add(block().with_id(id)).await.expect("repeat");
    again.commit().await.expect("commit repeat");
    assert_eq!(
        repeated.digest, landed.digest,
        "{CASE}: the committed block is returned"
    );
    assert_eq!(again.record_count(), before, "{CASE}: nothing was added");
    assert_eq!(again.last_committed_blocks(), &[repeated], "{CASE}");

    // Seen only when re-linking: a writer that opened before the first commit.
    let id2 = [0x43; 16];
    let mut early = ArtifactWriter::open(other.clone(), common::test_key())
        .await
        .expect("open early");
    let mut racer = ArtifactWriter::open(store.clone(), common::test_key())
        .await
        .expect("open racer");
    racer.add(block().with_id(id2)).await.expect("racer add");
    racer.commit().await.expect("racer commit");
    early.add(block().with_id(id2)).await.expect("early add");
    early
        .add(NewBlock::new(FourCC::BINA, b"other".to_vec()))
        .await
        .expect("early second add");
    early.commit().await.expect("early commit re-links");
    let reader = ArtifactReader::open(store.clone())
        .await
        .expect("open reader");
    let blocks = reader.blocks().await.expect("blocks");
    for wanted in [id, id2] {
        assert_eq!(
            blocks.iter().filter(|b| b.entry.block_id == wanted).count(),
            1,
            "{CASE}: block {wanted:02x?} is there exactly once"
        );
    }
    assert_eq!(
        early.last_committed_blocks().len(),
        2,
        "{CASE}: the re-linked commit reports both blocks"
    );

    // The same id with other content is refused.
    let mut different = ArtifactWriter::open(store.clone(), common::test_key())
        .await
        .expect("open");
    let refused = different
        .add(NewBlock::new(FourCC::BINA, b"event 2".to_vec()).with_id(id))
        .await;
    assert!(
        matches!(&refused, Err(maif_store::Error::Invalid(m)) if m.contains("other content")),
        "{CASE}: {refused:?}"
    );
    let report = verify(store, VerifyOptions::default())
        .await
        .expect("verify");
    assert!(report.valid, "{CASE}: {:?}", report.problems);
}

/// An orphaned record: a writer that loses a race (no retries) has uploaded its record, and
/// re-links it after the failure, uploading it again under a new chain link.
async fn make_orphans(store: &Arc<dyn BlockStore>, other: &Arc<dyn BlockStore>, tag: u8) {
    let mut loser = ArtifactWriter::open(other.clone(), common::test_key())
        .await
        .expect("open loser")
        .with_max_retries(0);
    let mut winner = ArtifactWriter::open(store.clone(), common::test_key())
        .await
        .expect("open winner");
    winner
        .add(NewBlock::new(FourCC::BINA, vec![tag, 1]))
        .await
        .expect("winner add");
    winner.commit().await.expect("winner commit");
    loser
        .add(NewBlock::new(FourCC::BINA, vec![tag, 2]))
        .await
        .expect("loser add");
    assert!(
        loser.commit().await.is_err(),
        "the loser's commit conflicts"
    );
}

pub async fn garbage_collection_takes_only_old_unreferenced_records((store, other): Fresh) {
    const CASE: &str = "garbage_collection_takes_only_old_unreferenced_records";
    use maif_store::artifact::{GcOptions, collect_garbage};
    use std::time::Duration;
    common::write_small_artifact_to(store.clone()).await;
    make_orphans(&store, &other, 1).await;
    let grace = Duration::from_secs(2);
    let young = collect_garbage(
        store.clone(),
        GcOptions {
            older_than: grace,
            dry_run: false,
        },
    )
    .await
    .expect("gc");
    assert!(
        young.deleted.is_empty(),
        "{CASE}: young orphans are spared: {young:?}"
    );
    assert!(young.young_orphans >= 1, "{CASE}: {young:?}");
    let committed = ArtifactReader::open(store.clone())
        .await
        .expect("open")
        .record_count();
    assert_eq!(
        young.referenced, committed,
        "{CASE}: every committed record is referenced"
    );
    tokio::time::sleep(grace + Duration::from_millis(1100)).await;
    let dry = collect_garbage(
        store.clone(),
        GcOptions {
            older_than: grace,
            dry_run: true,
        },
    )
    .await
    .expect("dry run");
    assert_eq!(
        dry.deleted.len() as u64,
        young.young_orphans,
        "{CASE}: {dry:?}"
    );
    let warnings = |report: &maif_store::artifact::VerifyReport| {
        report
            .warnings
            .iter()
            .filter(|w| w.to_string().contains("orphan"))
            .count()
    };
    let before = verify(store.clone(), VerifyOptions::default())
        .await
        .expect("verify");
    assert_eq!(
        warnings(&before),
        dry.deleted.len(),
        "{CASE}: a dry run deletes nothing"
    );

    // Collect while a writer keeps committing: its records are younger than the grace
    // period, the old orphans are not.
    let mut writer = ArtifactWriter::open(other.clone(), common::test_key())
        .await
        .expect("open writer");
    let appends = async {
        for n in 0..10u8 {
            writer
                .add(NewBlock::new(FourCC::BINA, vec![9, n]))
                .await
                .expect("add");
            writer.commit().await.expect("commit");
        }
    };
    let collect = async {
        let mut deleted = Vec::new();
        for _ in 0..5 {
            let report = collect_garbage(
                store.clone(),
                GcOptions {
                    older_than: grace,
                    dry_run: false,
                },
            )
            .await
            .expect("gc during appends");
            deleted.extend(report.deleted);
            tokio::task::yield_now().await;
        }
        deleted
    };
    let ((), deleted) = tokio::join!(appends, collect);
    let mut expected = dry.deleted.clone();
    expected.sort();
    let mut deleted = deleted;
    deleted.sort();
    assert_eq!(
        deleted, expected,
        "{CASE}: exactly the old orphans were deleted"
    );
    let after = verify(store.clone(), VerifyOptions::default())
        .await
        .expect("verify");
    assert!(after.valid, "{CASE}: {:?}", after.problems);
    assert_eq!(warnings(&after), 0, "{CASE}: {:?}", after.warnings);
    let reader = ArtifactReader::open(store.clone()).await.expect("open");
    for block in reader.blocks().await.expect("blocks").iter() {
        reader
            .get(&block.entry.block_id, Some(block.version))
            .await
            .unwrap_or_else(|e| panic!("{CASE}: a committed block is readable: {e}"));
    }
}

pub async fn garbage_collection_is_refused_clearly((store, _): Fresh) {
    common::write_small_artifact_to(store.clone()).await;
    let refused = maif_store::artifact::collect_garbage(store, Default::default()).await;
    assert!(
        matches!(
            &refused,
            Err(maif_store::Error::Store(StoreError::Unsupported { .. }))
        ),
        "garbage_collection_is_refused_clearly: {refused:?}"
    );
}
