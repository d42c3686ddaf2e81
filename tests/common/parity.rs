//! Artifact shapes and byte-exact round trips, shared by the parity tests of every backend.

use std::path::Path;
use std::sync::Arc;

use maif_store::artifact::{
    ArtifactReader, ArtifactWriter, ConvertOptions, CreateOptions, NewBlock, VerifyOptions,
    convert, verify,
};
use maif_store::format::payload::{EmbeddingDtype, EmbeddingPayload, ImagePayload};
use maif_store::format::{Codec, FourCC};
use maif_store::store::BlockStore;

use super as common;

/// The artifact shapes every backend must carry exactly.
pub async fn write_shape(store: Arc<dyn BlockStore>, shape: &str) {
    let options = CreateOptions {
        agent_id: format!("parity-{shape}"),
        ..CreateOptions::default()
    };
    let mut writer = ArtifactWriter::create(store, common::test_key(), options)
        .await
        .expect("create");
    match shape {
        "empty" => {}
        "one" => {
            writer
                .add(NewBlock::new(FourCC::TEXT, b"\0en one block".to_vec()))
                .await
                .expect("add");
        }
        "many-small" => {
            for n in 0..1000u32 {
                writer
                    .add(
                        NewBlock::new(FourCC::BINA, n.to_le_bytes().repeat(8))
                            .with_metadata(&common::meta(&[("n", &n.to_string())])),
                    )
                    .await
                    .expect("add");
            }
        }
        "mixed-large" => {
            for (n, block_type) in FourCC::KNOWN.iter().enumerate() {
                let len = if n % 3 == 0 { 8 << 20 } else { 1000 + n };
                let filler = vec![n as u8; len];
                // Typed blocks carry their framing (FORMAT.md 4.8); the others are raw.
                let data = match *block_type {
                    FourCC::TEXT => [&[0, b'e', b'n'][..], &vec![b'a' + n as u8; len]].concat(),
                    FourCC::EMBD => EmbeddingPayload {
                        dimension: 4,
                        count: (len / 16) as u32,
                        dtype: EmbeddingDtype::Float32,
                        values: filler[..len / 16 * 16].to_vec(),
                    }
                    .to_bytes(),
                    FourCC::IMAG => ImagePayload::sniff(filler).to_bytes(),
                    _ => filler,
                };
                writer
                    .add(NewBlock::new(*block_type, data))
                    .await
                    .expect("add");
            }
        }
        "zstd" => {
            for n in 0..20 {
                writer
                    .add(
                        NewBlock::new(
                            FourCC::TEXT,
                            format!("\0\0\0compressible {n} ").repeat(500).into_bytes(),
                        )
                        .with_zstd(3),
                    )
                    .await
                    .expect("add");
            }
        }
        "versions" => {
            let first = writer
                .add(NewBlock::new(FourCC::TEXT, b"\0env1".to_vec()))
                .await
                .expect("add");
            writer.commit().await.expect("commit");
            for v in 2..=5 {
                writer
                    .update(
                        first.block_id,
                        NewBlock::new(FourCC::TEXT, format!("\0env{v}").into_bytes()),
                    )
                    .await
                    .expect("update");
                writer.commit().await.expect("commit");
            }
        }
        other => panic!("unknown shape {other}"),
    }
    writer.commit().await.expect("commit");
}

pub const SHAPES: [&str; 6] = [
    "empty",
    "one",
    "many-small",
    "mixed-large",
    "zstd",
    "versions",
];

/// Everything a reader can observe, for comparison across backends.
pub async fn observe(store: Arc<dyn BlockStore>) -> serde_json::Value {
    let reader = ArtifactReader::open(store.clone()).await.expect("open");
    let mut blocks = Vec::new();
    for info in reader.blocks().await.expect("list").iter() {
        let block = reader.read(info).await.expect("read");
        blocks.push(serde_json::json!({
            "id": info.id(), "version": info.version, "type": info.entry.block_type.to_string(),
            "metadata": block.metadata().expect("metadata"),
            "data": hex::encode(maif_store::format::digest::sha256(&block.data)),
        }));
    }
    let mut report = serde_json::to_value(
        verify(store, VerifyOptions::default())
            .await
            .expect("verify"),
    )
    .expect("json");
    report.as_object_mut().expect("object").remove("location");
    serde_json::json!({"blocks": blocks, "verify": report})
}

/// file -> `middle` (one or more object-layout locations, in turn) -> file, byte for byte.
pub async fn round_trip(dir: &Path, shape: &str, middles: &[Arc<dyn BlockStore>]) {
    let source_path = dir.join(format!("{shape}.maif"));
    let source: Arc<dyn BlockStore> = common::file_store(&source_path);
    write_shape(source.clone(), shape).await;
    let mut from = source.clone();
    for middle in middles {
        let report = convert(from.clone(), middle.clone(), ConvertOptions::default())
            .await
            .expect("convert");
        assert_eq!(
            report.records,
            ArtifactReader::open(source.clone())
                .await
                .expect("open")
                .record_count()
        );
        from = middle.clone();
    }
    let back_path = dir.join(format!("{shape}-back.maif"));
    convert(
        from.clone(),
        common::file_store(&back_path),
        ConvertOptions::default(),
    )
    .await
    .expect("convert back");
    let original = std::fs::read(&source_path).expect("read");
    let back = std::fs::read(&back_path).expect("read");
    assert!(
        original == back,
        "{shape}: file -> object layout -> file is not byte-identical"
    );
    let through_file = observe(source).await;
    assert_eq!(through_file["verify"]["valid"], true, "{shape}");
    for middle in middles {
        assert_eq!(
            observe(middle.clone()).await,
            through_file,
            "{shape}: reading through {} differs",
            middle.location()
        );
    }
}
