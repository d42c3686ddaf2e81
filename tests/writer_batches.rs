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
/// already exists); blocks added before the batch are still committed, once.
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
