//! `ArtifactWriter::add_batch`: a batch is all or nothing, however it is split for writing
//! (large batches go to the store in slices of a few MiB, so one slice is written while the
//! next is hashed), and what it returns is where the blocks are.

mod common;

use maif_store::artifact::{ArtifactReader, NewBlock, VerifyOptions, verify};
use maif_store::format::FourCC;

fn big(n: u8) -> NewBlock {
    NewBlock::new(FourCC::BINA, vec![n; 768 * 1024])
}

#[tokio::test]
async fn a_batch_of_many_slices_reads_back_where_add_batch_said() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("b.maif");
    let mut writer = common::write_small_artifact(&path).await;
    // 30 blocks of 768 KiB: 22.5 MiB, several slices.
    let refs = writer
        .add_batch((0..30).map(big).collect())
        .await
        .expect("add_batch");
    writer.commit().await.expect("commit");
    let reader = ArtifactReader::open(common::file_store(&path))
        .await
        .expect("open");
    assert_eq!(reader.record_count(), 5 + 30);
    for (n, r) in refs.iter().enumerate() {
        assert_eq!(r.position, 5 + n as u64);
        let block = reader.get(&r.block_id, None).await.expect("get");
        assert_eq!(block.info.entry.offset, r.offset);
        assert!(block.data.iter().all(|b| *b == n as u8));
    }
    let report = verify(common::file_store(&path), VerifyOptions::default())
        .await
        .expect("verify");
    assert!(report.valid, "{:?}", report.problems);
}

/// A block refused in a late slice refuses the whole batch, whether it is caught before
/// anything is placed (bad metadata) or after earlier slices went to the store (an id that
/// already exists), for batches of large blocks and of small ones; blocks added before the
/// batch are still committed, once.
#[tokio::test]
async fn a_refused_block_in_a_late_slice_refuses_the_whole_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("r.maif");
    let mut writer = common::write_small_artifact(&path).await;
    let before = writer
        .add(NewBlock::new(FourCC::TEXT, b"\0\0\0before".to_vec()))
        .await
        .expect("add");

    let mut bad_metadata: Vec<NewBlock> = (0..20).map(big).collect();
    bad_metadata.push(NewBlock::new(FourCC::TEXT, b"x".to_vec()).with_metadata_bytes("not json"));
    assert!(writer.add_batch(bad_metadata).await.is_err());

    let mut existing_id: Vec<NewBlock> = (0..20).map(big).collect();
    existing_id.push(NewBlock::new(FourCC::TEXT, b"\0\0\0x".to_vec()).with_id(before.block_id));
    let refused = writer.add_batch(existing_id).await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("already exists")),
        "{refused:?}"
    );

    // One slice of small blocks, placed in growing parts (128 on their own, as nothing is
    // being signed yet, then 256, 768 and the rest, each at most twice what is being
    // signed): refused whole just the same, for either reason, in its last part.
    let small = || -> Vec<NewBlock> {
        (0..2_000)
            .map(|n| NewBlock::new(FourCC::BINA, vec![n as u8; 100]))
            .collect()
    };
    let mut small_bad_metadata = small();
    small_bad_metadata
        .push(NewBlock::new(FourCC::TEXT, b"x".to_vec()).with_metadata_bytes("not json"));
    assert!(writer.add_batch(small_bad_metadata).await.is_err());
    let mut small_existing_id = small();
    small_existing_id
        .push(NewBlock::new(FourCC::TEXT, b"\0\0\0x".to_vec()).with_id(before.block_id));
    let refused = writer.add_batch(small_existing_id).await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("already exists")),
        "{refused:?}"
    );

    let after = writer
        .add(NewBlock::new(FourCC::TEXT, b"\0\0\0after".to_vec()))
        .await
        .expect("add after the refused batches");
    assert_eq!(after.position, 6, "right after `before`");
    writer.commit().await.expect("commit");
    let reader = ArtifactReader::open(common::file_store(&path))
        .await
        .expect("open");
    assert_eq!(
        reader.record_count(),
        5 + 2,
        "only the blocks outside the batches"
    );
    assert_eq!(
        &reader.get(&before.block_id, None).await.expect("get").data[3..],
        b"before"
    );
    assert_eq!(
        &reader.get(&after.block_id, None).await.expect("get").data[3..],
        b"after"
    );
    let report = verify(common::file_store(&path), VerifyOptions::default())
        .await
        .expect("verify");
    assert!(report.valid, "{:?}", report.problems);
    // The file holds the committed artifact and nothing of the refused batches.
    let len = std::fs::metadata(&path).expect("metadata").len();
    assert!(
        len < 1 << 20,
        "{len} bytes: records of a refused batch were left"
    );
}

/// OBJECT-LAYOUT.md's garbage-collection rule 4: a writer whose pending records are older
/// than `REUPLOAD_PENDING_AFTER` uploads them again before its commit, so a record that
/// garbage collection took while the writer waited is stored again before the commit names
/// it. The record object is deleted between the add and the commit (what `gc` does to an
/// unreferenced object past its grace period); with the threshold passed the commit is
/// readable and valid, and with it not passed the same deletion leaves a commit naming a
/// missing record (so the test sees the difference).
#[tokio::test]
async fn pending_records_older_than_the_reupload_threshold_are_uploaded_again_before_the_commit() {
    use std::sync::Arc;
    use std::time::Duration;

    use maif_store::ArtifactWriter;
    use maif_store::artifact::CreateOptions;
    use maif_store::format::layout::{RECORDS_DIR, record_object_name};
    use maif_store::store::{BlockStore, ObjectBackend};
    use object_store::path::Path as ObjectPath;
    use object_store::{ObjectStore, ObjectStoreExt as _};

    for reupload in [true, false] {
        let memory: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let store: Arc<dyn BlockStore> = Arc::new(ObjectBackend::new(
            memory.clone(),
            ObjectPath::from("a"),
            "memory://reupload/a",
        ));
        let options = CreateOptions {
            agent_id: "reupload".into(),
            ..CreateOptions::default()
        };
        let writer = ArtifactWriter::create(store.clone(), common::test_key(), options)
            .await
            .expect("create");
        let mut writer = if reupload {
            // Every pending record counts as older than the threshold.
            writer.with_reupload_after(Duration::ZERO)
        } else {
            writer
        };
        let placed = writer
            .add(NewBlock::new(
                FourCC::BINA,
                b"kept while the writer waited".to_vec(),
            ))
            .await
            .expect("add");
        let record = ObjectPath::from(format!(
            "a/{RECORDS_DIR}/{}",
            record_object_name(&placed.digest)
        ));
        // Records are uploaded in the background after `add`; wait until this one is stored.
        let mut uploaded = false;
        for _ in 0..5_000 {
            if memory.head(&record).await.is_ok() {
                uploaded = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(uploaded, "the record was uploaded after add");
        memory.delete(&record).await.expect("collected");
        writer.commit().await.expect("commit");
        let present = memory.head(&record).await.is_ok();
        let report = verify(store.clone(), VerifyOptions::default())
            .await
            .expect("verify");
        if reupload {
            assert!(present, "the record was uploaded again before the commit");
            assert!(report.valid, "{:?}", report.problems);
            let reader = ArtifactReader::open(store).await.expect("open");
            let block = reader.get(&placed.block_id, None).await.expect("read back");
            assert_eq!(&block.data[..], b"kept while the writer waited");
        } else {
            assert!(!present, "below the threshold the record is not sent again");
            assert!(!report.valid, "a commit naming a missing record is invalid");
        }
    }
}
