//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod conformance;
pub mod counting;
pub mod fault_proxy;
pub mod faulty;
pub mod legacy_s3;
pub mod parity;
pub mod resign;
pub mod s3;
pub mod worked_example;

use std::path::Path;
use std::sync::Arc;

use maif_store::SigningKey;
use maif_store::artifact::{ArtifactWriter, CreateOptions, NewBlock};
use maif_store::format::digest::sha256;
use maif_store::format::payload::{EmbeddingPayload, ImagePayload, TextPayload};
use maif_store::format::{Codec, FourCC};
use maif_store::store::{BlockStore, FileStore};
use serde_json::{Map, Value};

/// The fixed test-only key of the golden vectors: seed = SHA-256("maif-store test key").
pub fn test_key() -> SigningKey {
    SigningKey::from_seed(&sha256(b"maif-store test key"))
}

pub const CREATED_US: u64 = 1_700_000_000_000_000;

pub fn file_store(path: &Path) -> Arc<dyn BlockStore> {
    Arc::new(FileStore::new(path))
}

pub fn meta(pairs: &[(&str, &str)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
        .collect()
}

/// Writes the small deterministic artifact of the golden vectors: TEXT, EMBD, IMAG, an
/// unknown type, and a second version of the TEXT block, with fixed ids and timestamps.
pub async fn write_small_artifact(path: &Path) -> ArtifactWriter {
    write_small_artifact_to(file_store(path)).await
}

/// [`write_small_artifact`] into any store.
pub async fn write_small_artifact_to(store: Arc<dyn BlockStore>) -> ArtifactWriter {
    let options = CreateOptions {
        agent_id: "golden-agent".into(),
        custom: [("purpose".to_string(), "golden vector".to_string())].into(),
        created_us: Some(CREATED_US),
        artifact_id: Some([0xa1; 16]),
        ..CreateOptions::default()
    };
    let mut writer = ArtifactWriter::create(store, test_key(), options)
        .await
        .expect("create");
    let blocks = [
        NewBlock::new(
            FourCC::TEXT,
            TextPayload::utf8("hello, MAIF", Some(*b"en")).to_bytes(),
        )
        .with_metadata(&meta(&[("source", "golden")])),
        NewBlock::new(
            FourCC::EMBD,
            EmbeddingPayload::from_f32(&[vec![0.25, -1.5, 3.0], vec![1.0, 2.0, 4.0]])
                .expect("embedding")
                .to_bytes(),
        ),
        NewBlock::new(
            FourCC::IMAG,
            ImagePayload::sniff(
                b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x10\0\0\0\x08\x08\x06\0\0\0".to_vec(),
            )
            .to_bytes(),
        ),
        NewBlock::new(
            FourCC(*b"XyZ1"),
            b"opaque bytes of a type nobody defined".to_vec(),
        ),
    ];
    for (n, block) in blocks.into_iter().enumerate() {
        let n = n as u8 + 1;
        writer
            .add(
                block
                    .with_id([n; 16])
                    .with_timestamp(CREATED_US + u64::from(n) * 1_000),
            )
            .await
            .expect("add");
    }
    writer.commit().await.expect("commit");
    writer
        .update(
            [1; 16],
            NewBlock::new(
                FourCC::TEXT,
                TextPayload::utf8("hello again", Some(*b"en")).to_bytes(),
            )
            .with_timestamp(CREATED_US + 9_000),
        )
        .await
        .expect("update");
    writer.commit().await.expect("commit");
    writer
}

/// Every value of an artifact that the golden vectors record.
pub async fn describe(path: &Path) -> serde_json::Value {
    use maif_store::artifact::ArtifactReader;
    use maif_store::format::RecordView;
    let bytes = std::fs::read(path).expect("read");
    let reader = ArtifactReader::open(file_store(path)).await.expect("open");
    let mut records = Vec::new();
    for info in reader.blocks().await.expect("list").iter() {
        let e = info.entry;
        let record =
            RecordView::decode(&bytes[e.offset as usize..(e.offset + e.record_len) as usize])
                .expect("record");
        records.push(serde_json::json!({
            "offset": e.offset,
            "length": e.record_len,
            "block_id": hex::encode(e.block_id),
            "type": e.block_type.to_string(),
            "version": info.version,
            "content_digest": hex::encode(record.content_digest()),
            "digest": hex::encode(record.digest()),
            "signature": hex::encode(record.signature),
        }));
    }
    let commits: Vec<serde_json::Value> = reader
        .commits()
        .await
        .expect("commits")
        .iter()
        .map(|c| {
            serde_json::json!({
                "seq": c.seq(),
                "segment_offset": c.header().segment_offset,
                "segment_len": c.header().segment_len,
                "record_count": c.record_count(),
                "merkle_root": hex::encode(c.header().merkle_root),
                "provenance_head": hex::encode(c.header().provenance_head),
                "digest": hex::encode(c.digest),
                "signature": hex::encode(c.head.signature),
            })
        })
        .collect();
    let provenance: Vec<serde_json::Value> = reader
        .provenance()
        .await
        .expect("provenance")
        .iter()
        .map(|p| {
            serde_json::json!({
                "action": p.action.name(),
                "digest": hex::encode(p.digest().expect("digest")),
            })
        })
        .collect();
    serde_json::json!({
        "file_len": bytes.len(),
        "sha256": hex::encode(sha256(&bytes)),
        "public_key": hex::encode(test_key().public_key()),
        "genesis_digest": hex::encode(reader.identity().genesis),
        "records": records,
        "commits": commits,
        "provenance": provenance,
        "merkle_root": hex::encode(reader.commit().header().merkle_root),
    })
}

/// Runs a future to completion on a fresh single-threaded runtime.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(future)
}

/// The small artifact of [`write_small_artifact`] in a temporary folder (kept alive here), with
/// its bytes, its records and every commit: what the damage and allocation tests cut up.
pub struct SmallArtifact {
    pub dir: tempfile::TempDir,
    pub bytes: Vec<u8>,
    pub records: Vec<maif_store::artifact::BlockInfo>,
    pub commits: Vec<maif_store::artifact::Commit>,
}

/// Writes and reads back a [`SmallArtifact`].
pub fn small_artifact() -> SmallArtifact {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("small.maif");
    block_on(write_small_artifact(&path));
    let bytes = std::fs::read(&path).expect("read");
    let (records, commits) = block_on(async {
        let reader = maif_store::artifact::ArtifactReader::open(file_store(&path))
            .await
            .expect("open");
        (
            reader.blocks().await.expect("list").to_vec(),
            reader.commits().await.expect("commits"),
        )
    });
    SmallArtifact {
        dir,
        bytes,
        records,
        commits,
    }
}
