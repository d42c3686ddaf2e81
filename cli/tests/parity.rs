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

/// The exit code of a `maif` stopped by its `MAIF_TEST_CONVERT_STOP_AFTER_RECORDS` test hook
/// (`src/artifact/convert.rs`).
const TEST_STOP_EXIT_CODE: i32 = 86;

#[test]
fn a_killed_conversion_resumes_to_an_identical_result() {
    const RECORDS: u64 = 300;
    // Where the first run of each direction stops: a third of the way through the copy.
    const STOP_AT: u64 = 100;
    // Writes still in flight when it stops may or may not land, as with a kill: at most the
    // 2 uploads of `--concurrency 2`, or the file writer's queue (8) and the record it
    // writes, plus the record just handed over.
    const IN_FLIGHT: u64 = 12;
    let dir = tempfile::tempdir().expect("tempdir");
    let source = dir.path().join("big.maif");
    common::block_on(async {
        let store = common::file_store(&source);
        let mut writer =
            ArtifactWriter::create(store, common::test_key(), CreateOptions::default())
                .await
                .expect("create");
        for n in 0..RECORDS as u32 {
            writer
                .add(NewBlock::new(FourCC::BINA, vec![n as u8; 256 << 10]))
                .await
                .expect("add");
        }
        writer.commit().await.expect("commit");
    });
    let objects = dir.path().join("objects");
    let folder = format!("file://{}", objects.display());
    let back = dir.path().join("back.maif");
    let partial = dir.path().join("back.maif.maif-partial");
    let maif = env!("CARGO_BIN_EXE_maif");
    for (from, to) in [
        (source.display().to_string(), folder.clone()),
        (folder.clone(), back.display().to_string()),
    ] {
        // A first run, stopped by the test hook right after it handed over record STOP_AT.
        let stopped = std::process::Command::new(maif)
            .args(["convert", &from, &to, "--quiet", "--concurrency", "2"])
            .env("MAIF_TEST_CONVERT_STOP_AFTER_RECORDS", STOP_AT.to_string())
            .output()
            .expect("first run");
        let said = String::from_utf8_lossy(&stopped.stderr);
        assert_eq!(
            stopped.status.code(),
            Some(TEST_STOP_EXIT_CODE),
            "{from} -> {to}: the first run was not stopped by the test hook: {said}"
        );
        // What it left: no finished destination, only what a resumed run can reuse.
        if to == folder {
            let commits: Vec<String> = std::fs::read_dir(objects.join("commits"))
                .expect("commits")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect();
            assert_eq!(
                commits,
                ["18446744073709551615"],
                "only commit 0 (no records) may have landed"
            );
        } else {
            assert!(
                !back.exists(),
                "a stopped copy published {}",
                back.display()
            );
            assert!(partial.exists(), "the stopped copy left no partial file");
        }
        // The same command again finishes it, reusing what the first run stored.
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
        println!("{from} -> {to}: stopped after {STOP_AT} records, rerun {report}");
        assert_eq!(report["records"], RECORDS);
        assert_eq!(report["already_converted"], false);
        let resumed = report["records_resumed"].as_u64().expect("resumed");
        assert!(
            (STOP_AT - IN_FLIGHT..=STOP_AT).contains(&resumed),
            "{from} -> {to}: the rerun reused {resumed} records of the {STOP_AT} the first run handed over"
        );
        assert_eq!(report["records_copied"], RECORDS - resumed);
    }
    assert!(!partial.exists(), "the partial file was left behind");
    assert!(
        std::fs::read(&source).expect("read") == std::fs::read(&back).expect("read"),
        "resumed conversion is not byte-identical"
    );
}
