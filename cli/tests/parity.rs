//! Parity between backends: file -> object layout -> file is byte-identical, and reading
//! through either backend gives the same blocks, versions, metadata and verification report.
//! (The same checks against S3 are in `tests/s3.rs`.)

#[path = "../../tests/common/mod.rs"]
mod common;

use common::parity::{SHAPES, round_trip, write_shape};
use maif_store::artifact::{ArtifactWriter, ConvertOptions, CreateOptions, NewBlock, convert};
use maif_store::format::FourCC;
use maif_store::location::Location;

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
