//! The `BlockStore` conformance suite, shared by every backend's tests.

use std::sync::Arc;

use maif_store::artifact::{ArtifactReader, ArtifactWriter, NewBlock, VerifyOptions, verify};
use maif_store::format::FourCC;
use maif_store::store::{BlockStore, StoreError};

use super as common;

/// Everything every backend must do, on a store that holds no artifact yet.
pub async fn conformance(store: Arc<dyn BlockStore>, other_handle: Arc<dyn BlockStore>) {
    // Nothing there yet.
    assert!(
        matches!(store.head().await, Err(StoreError::NotFound { .. })),
        "empty store must say NotFound"
    );

    // Create, then refuse to create twice.
    let mut writer = common::write_small_artifact_to(store.clone()).await;
    let again = ArtifactWriter::create(store.clone(), common::test_key(), Default::default()).await;
    assert!(
        matches!(
            again,
            Err(maif_store::Error::Store(StoreError::AlreadyExists { .. }))
        ),
        "second create must fail with AlreadyExists: {again:?}"
    );

    // What was written reads back, through a second handle on the same location too.
    for handle in [&store, &other_handle] {
        let reader = ArtifactReader::open(handle.clone()).await.expect("open");
        assert_eq!(reader.blocks().len(), 5);
        let v1 = reader.get(&[1; 16], Some(1)).await.expect("v1");
        let v2 = reader.get(&[1; 16], None).await.expect("latest");
        assert_eq!(&v1.data[3..], b"hello, MAIF");
        assert_eq!(&v2.data[3..], b"hello again");
        assert_eq!(reader.by_type(FourCC(*b"XyZ1")).len(), 1);
        let (header, metadata) = reader
            .read_metadata(&reader.blocks()[0])
            .await
            .expect("prefix");
        assert_eq!(header.block_id, [1; 16]);
        assert_eq!(metadata["source"], "golden");
        let report = verify(handle.clone(), VerifyOptions::default())
            .await
            .expect("verify");
        assert!(report.valid, "{:?}", report.problems);
    }

    // Ranges outside a record are refused.
    let head = store.head().await.expect("head");
    let entry = head.index.entries[0];
    assert!(
        store
            .read_record_range(&entry, 0..entry.record_len + 1)
            .await
            .is_err()
    );
    assert_eq!(
        store.read_record(&entry).await.expect("record").len() as u64,
        entry.record_len
    );

    // An append abandoned before commit changes nothing.
    writer
        .add(NewBlock::new(FourCC::BINA, vec![9; 100]))
        .await
        .expect("add");
    drop(writer);
    let after = store.head().await.expect("head");
    assert_eq!(
        after.trailer, head.trailer,
        "an uncommitted append became visible"
    );
    assert!(
        verify(store.clone(), VerifyOptions::default())
            .await
            .expect("verify")
            .valid
    );

    // Two writers from the same state: the first commit wins, the second gets a conflict and
    // succeeds after reopening.
    let mut first = ArtifactWriter::open(store.clone(), common::test_key())
        .await
        .expect("open 1");
    let mut second = ArtifactWriter::open(other_handle.clone(), common::test_key())
        .await
        .expect("open 2");
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
        "the second writer must see a conflict: {lost:?}"
    );
    drop(second);
    let mut retry = ArtifactWriter::open(other_handle.clone(), common::test_key())
        .await
        .expect("reopen");
    retry
        .add(NewBlock::new(FourCC::TEXT, vec![0, 0, 0, b'b']))
        .await
        .expect("add 2");
    retry.commit().await.expect("commit 2");
    let reader = ArtifactReader::open(store.clone()).await.expect("open");
    assert_eq!(reader.blocks().len(), 7, "both writers' blocks are there");
    let report = verify(store.clone(), VerifyOptions::default())
        .await
        .expect("verify");
    assert!(report.valid, "{:?}", report.problems);
}
