//! The single-file backend's own promises: an append writes only its own bytes (nothing
//! committed is rewritten), and readers never write.

mod common;

use maif_store::artifact::{ArtifactWriter, NewBlock};
use maif_store::format::FourCC;

#[test]
fn an_append_leaves_every_committed_byte_as_it_was() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("grow.maif");
    common::block_on(async {
        let mut writer = ArtifactWriter::create(
            common::file_store(&path),
            common::test_key(),
            Default::default(),
        )
        .await
        .expect("create");
        let mut previous = std::fs::read(&path).expect("read");
        for n in 0..50u32 {
            writer
                .add(NewBlock::new(
                    FourCC::BINA,
                    n.to_le_bytes().repeat(n as usize + 1),
                ))
                .await
                .expect("add");
            writer.commit().await.expect("commit");
            let now = std::fs::read(&path).expect("read");
            assert!(
                now.len() > previous.len() && now[..previous.len()] == previous[..],
                "commit {n} rewrote committed bytes"
            );
            previous = now;
        }
        let reader = maif_store::ArtifactReader::open(common::file_store(&path))
            .await
            .expect("open");
        assert_eq!(reader.record_count(), 50);
        assert_eq!(
            std::fs::read(&path).expect("read"),
            previous,
            "reading wrote"
        );
    });
}
