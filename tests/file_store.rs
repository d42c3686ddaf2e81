//! The single-file backend with records large enough for its writer thread, mixed with small
//! ones written inline, in one append and across several.

mod common;

use maif_store::artifact::{
    ArtifactReader, ArtifactWriter, CreateOptions, NewBlock, VerifyOptions, verify,
};
use maif_store::format::FourCC;

#[test]
fn large_and_small_records_round_trip_through_both_write_paths() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("mixed.maif");
    let payload =
        |n: usize, len: usize| -> Vec<u8> { (0..len).map(|i| (i * 31 + n) as u8).collect() };
    let sizes = [3 << 20, 10, 200_000, 65_536, 65_535, 1 << 20, 0, 5];
    common::block_on(async {
        let options = CreateOptions {
            agent_id: "mixed".into(),
            ..CreateOptions::default()
        };
        let mut writer =
            ArtifactWriter::create(common::file_store(&path), common::test_key(), options)
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

        let reader = ArtifactReader::open(common::file_store(&path))
            .await
            .expect("open");
        assert_eq!(reader.blocks().len(), sizes.len());
        for (n, info) in reader.blocks().iter().enumerate() {
            let block = reader.read(info).await.expect("read");
            assert_eq!(
                block.data.as_ref(),
                payload(n, sizes[n]).as_slice(),
                "block {n}"
            );
        }
        let report = verify(common::file_store(&path), VerifyOptions::default())
            .await
            .expect("verify");
        assert!(report.valid, "{:?}", report.problems);
        assert!(
            !maif_store::store::FileStore::journal_path(&path).exists(),
            "journal left behind"
        );
    });
}
