//! Parity between backends: file -> object layout -> file is byte-identical, and reading
//! through either backend gives the same blocks, versions, metadata and verification report.
//! (The same checks against S3 are in `tests/s3.rs`.)

mod common;

use std::path::Path;
use std::sync::Arc;

use maif_store::artifact::{
    ArtifactReader, ArtifactWriter, ConvertOptions, CreateOptions, NewBlock, VerifyOptions,
    convert, verify,
};
use maif_store::format::FourCC;
use maif_store::location::Location;
use maif_store::store::BlockStore;

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
                writer
                    .add(NewBlock::new(*block_type, vec![n as u8; len]))
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
    for info in reader.blocks() {
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
            report.records as usize,
            source.head().await.expect("head").index.entries.len()
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

#[test]
fn every_shape_round_trips_through_memory_and_a_local_folder() {
    let dir = tempfile::tempdir().expect("tempdir");
    for shape in SHAPES {
        let folder = Location::parse(&format!("file://{}/{shape}-objects", dir.path().display()))
            .expect("location")
            .store()
            .expect("store");
        let memory = Location::parse(&format!("memory://parity/{shape}"))
            .expect("location")
            .store()
            .expect("store");
        common::block_on(round_trip(dir.path(), shape, &[folder, memory]));
    }
}

#[test]
fn converting_twice_is_a_no_op_and_a_different_artifact_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    common::block_on(async {
        let a = common::file_store(&dir.path().join("a.maif"));
        let b = common::file_store(&dir.path().join("b.maif"));
        write_shape(a.clone(), "one").await;
        write_shape(b.clone(), "zstd").await;
        let target = Location::parse("memory://twice/x")
            .expect("loc")
            .store()
            .expect("store");
        assert_eq!(
            convert(a.clone(), target.clone(), ConvertOptions::default())
                .await
                .expect("first")
                .records_copied,
            1
        );
        let again = convert(a, target.clone(), ConvertOptions::default())
            .await
            .expect("second");
        assert!(again.already_converted && again.records_copied == 0);
        let other = convert(b, target, ConvertOptions::default()).await;
        assert!(
            matches!(
                other,
                Err(maif_store::Error::Store(
                    maif_store::store::StoreError::AlreadyExists { .. }
                ))
            ),
            "{other:?}"
        );
    });
}

#[test]
fn a_killed_conversion_resumes_to_an_identical_result() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = dir.path().join("big.maif");
    common::block_on(async {
        let store = common::file_store(&source);
        let mut writer =
            ArtifactWriter::create(store, common::test_key(), CreateOptions::default())
                .await
                .expect("create");
        for n in 0..300u32 {
            writer
                .add(NewBlock::new(FourCC::BINA, vec![n as u8; 256 << 10]))
                .await
                .expect("add");
        }
        writer.commit().await.expect("commit");
    });
    let folder = format!("file://{}/objects", dir.path().display());
    let back = dir.path().join("back.maif");
    let maif = env!("CARGO_BIN_EXE_maif");
    for (from, to) in [
        (source.display().to_string(), folder.clone()),
        (folder.clone(), back.display().to_string()),
    ] {
        // Kill a first attempt partway (trying other delays until one lands mid-copy), then run
        // it again to completion.
        let mut landed = false;
        for delay_ms in [120u64, 60, 250, 30, 500, 15, 1000] {
            let mut child = std::process::Command::new(maif)
                .args(["convert", &from, &to, "--quiet", "--concurrency", "2"])
                .spawn()
                .expect("spawn");
            std::thread::sleep(std::time::Duration::from_millis(delay_ms));
            let _ = child.kill();
            let status = child.wait().expect("wait");
            let out = std::process::Command::new(maif)
                .args(["convert", &from, &to, "--json"])
                .output()
                .expect("rerun");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
            println!("{from} -> {to}: kill after {delay_ms} ms ({status}), rerun {report}");
            assert_eq!(report["records"], 300);
            let resumed = report["records_resumed"].as_u64().expect("resumed");
            if resumed > 0 && resumed < 300 && status.code().is_none() {
                landed = true;
                break;
            }
            // The kill missed the copy: start this direction over.
            let _ = std::fs::remove_dir_all(dir.path().join("objects"));
            let _ = std::fs::remove_file(&back);
            if to == folder {
                let _ = std::fs::create_dir_all(dir.path().join("objects"));
            }
            if to != folder && from == folder {
                // The folder is the source here and must stay; rebuild it.
                convert_blocking(&source, &folder);
            }
        }
        assert!(
            landed,
            "no kill landed in the middle of the {from} -> {to} copy"
        );
    }
    assert!(
        std::fs::read(&source).expect("read") == std::fs::read(&back).expect("read"),
        "resumed conversion is not byte-identical"
    );
}

fn convert_blocking(source: &std::path::Path, folder: &str) {
    common::block_on(async {
        let target = Location::parse(folder)
            .expect("loc")
            .store()
            .expect("store");
        convert(
            common::file_store(source),
            target,
            ConvertOptions::default(),
        )
        .await
        .expect("convert");
    });
}
