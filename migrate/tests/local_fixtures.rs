//! Every legacy local file and every Python SDK file in `../shared/fixtures`, migrated from
//! disk with the CLI: the blocks, order, payloads, statuses and verdicts must match the
//! fixture's expected contents, `maif cat` (the CLI) must print every block's exact legacy
//! payload, the output must verify and survive file -> S3 -> file byte for byte, and the
//! source file must be unchanged.

mod common;

use std::path::{Path, PathBuf};

use serde_json::Value;

fn load_json(path: &Path) -> Value {
    serde_json::from_slice(
        &std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One expected migrated block: (legacy id, FourCC, payload sha256, status).
type Want = (String, String, String, &'static str);

/// Migrates `file` and checks the report against `want`; returns the report.
fn migrate(file: &Path, extra: &[&str], exit: i32, want: &[Want], bucket: &str) -> Value {
    let work = tempfile::tempdir().unwrap();
    let source_bytes = std::fs::read(file).unwrap();
    let out = work.path().join("out.maif");
    let key = common::key_file(work.path());
    let mut args = vec![
        file.to_str().unwrap(),
        out.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let report = common::migrate_with_report(work.path(), &args, false, exit);
    let name = file.display();
    let blocks = report["blocks"].as_array().expect("blocks");
    assert_eq!(blocks.len(), want.len(), "{name}: blocks {report}");
    for (block, (id, fourcc, sha, status)) in blocks.iter().zip(want) {
        assert_eq!(
            block["legacy_id"].as_str(),
            Some(id.as_str()),
            "{name}: order"
        );
        assert_eq!(
            block["block_type"].as_str(),
            Some(fourcc.as_str()),
            "{name} {id}: type"
        );
        assert_eq!(
            block["sha256"].as_str(),
            Some(sha.as_str()),
            "{name} {id}: payload"
        );
        assert_eq!(
            block["status"].as_str(),
            Some(*status),
            "{name} {id}: status"
        );
        assert_eq!(block["migrated"], true, "{name} {id}");
    }
    let shas: Vec<&str> = want.iter().map(|w| w.2.as_str()).collect();
    let framed = common::assert_maif_cat_returns_the_legacy_payloads(&out, &report, &shas);
    eprintln!("{name}: framing {framed:?}");
    common::verify_and_round_trip(&out, bucket);
    assert!(
        std::fs::read(file).unwrap() == source_bytes,
        "{name}: the source changed"
    );
    report
}

/// Legacy embeddings whose file gives no shape, element type or byte order (binary_format
/// and block_storage store no metadata): kept byte for byte as `BINA`.
const UNFRAMED_EMBEDDINGS: [(&str, &str); 2] = [
    (
        "binary-format-a.maif",
        "d9bf8c7f-63d4-4093-ba17-15cdac7f945c",
    ),
    (
        "block-storage-b.blk",
        "9a894a41-5e38-4dcc-8392-dd174d70cebe",
    ),
];

/// The type a legacy local block is written under.
fn written_type(file: &str, id: &str, legacy: &str) -> String {
    if UNFRAMED_EMBEDDINGS.contains(&(file, id)) {
        "BINA".into()
    } else {
        legacy.into()
    }
}

#[test]
fn legacy_local_files() {
    let bucket = common::s3::bucket("local-fixtures");
    let dir = common::fixtures().join("legacy-local");
    let expected = load_json(&dir.join("expected.json"));
    for file in expected.as_array().expect("list") {
        let name = file["file"].as_str().unwrap();
        let status = |id: &str| match (name, id) {
            ("block-storage-b.blk", "816ee182-70ec-48c1-b210-082b8768d2d9") => "superseded",
            ("block-storage-b.blk", "ca099ce2-04bc-4cc1-a56b-011da4fc178d") => "update_record",
            _ => "live",
        };
        let mut want: Vec<Want> = if let Some(records) = file["records_on_disk"]
            .as_array()
            .filter(|_| name.starts_with("unified"))
        {
            // The HDER record is the file header, not a block.
            records
                .iter()
                .filter(|r| r["block_type"] != "HDER")
                .map(|r| {
                    let id = r["uuid"].as_str().unwrap();
                    (
                        id.to_owned(),
                        written_type(name, id, r["block_type"].as_str().unwrap()),
                        r["data_sha256"].as_str().unwrap().to_owned(),
                        status(id),
                    )
                })
                .collect()
        } else {
            file["blocks"]
                .as_array()
                .expect("blocks")
                .iter()
                .map(|b| {
                    // binary_format: zlib blocks migrate as their decoded text.
                    let sha =
                        if b["fourcc"].is_string() && b["flags"].as_u64().unwrap_or(0) & 1 != 0 {
                            common::sha256_hex(b["text"].as_str().unwrap().as_bytes())
                        } else {
                            b["data_sha256"].as_str().unwrap().to_owned()
                        };
                    let id = b["block_id"].as_str().or(b["uuid"].as_str()).unwrap();
                    let fourcc = b["fourcc"].as_str().or(b["block_type"].as_str()).unwrap();
                    (
                        id.to_owned(),
                        written_type(name, id, fourcc),
                        sha,
                        status(id),
                    )
                })
                .collect()
        };
        // block_storage's failed update_block() still appended its record.
        if let Some(update) = file["update_block"].as_object() {
            let id = update["new_uuid"].as_str().unwrap();
            want.push((
                id.to_owned(),
                "TEXT".into(),
                update["new_data_sha256"].as_str().unwrap().to_owned(),
                status(id),
            ));
        }
        let report = migrate(&dir.join(name), &[], 0, &want, &bucket);
        let unframed = UNFRAMED_EMBEDDINGS
            .iter()
            .filter(|(f, _)| *f == name)
            .count();
        assert_eq!(report["counts"]["kept_unframed"], unframed, "{name}");
        for block in report["blocks"].as_array().unwrap() {
            assert!(
                common::checks_with(block, "fail").is_empty(),
                "{name}: {block}"
            );
        }
        assert!(
            report["source_checks"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c["result"] == "pass"),
            "{name}: {}",
            report["source_checks"]
        );
    }
}

/// A typed legacy payload the evidence cannot frame is migrated as docs/MIGRATION.md says:
/// under `BINA`, byte for byte, with the legacy type in `legacy.type`, the reason in
/// `legacy.framing` and the report, a warning naming the block, and the legacy checks run
/// over the exact bytes as for any block.
#[test]
fn legacy_embeddings_without_a_known_shape_are_kept_verbatim_as_bina() {
    let dir = common::fixtures().join("legacy-local");
    let expected = load_json(&dir.join("expected.json"));
    for (file, id) in UNFRAMED_EMBEDDINGS {
        let work = tempfile::tempdir().unwrap();
        let out = work.path().join("out.maif");
        let key = common::key_file(work.path());
        let source = dir.join(file);
        let args = [
            source.to_str().unwrap(),
            out.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ];
        let report = common::migrate_with_report(work.path(), &args, false, 0);
        assert_eq!(report["output_verified"], true, "{file}");
        let block = report["blocks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["legacy_id"] == id)
            .unwrap_or_else(|| panic!("{file}: {id} migrated"));
        assert_eq!(block["legacy_type"], "EMBD", "{file}");
        assert_eq!(block["block_type"], "BINA", "{file}");
        assert_eq!(block["framing"]["framing"], "unframed", "{file}");
        let reason = block["framing"]["reason"].as_str().unwrap();
        for unknown in [
            "element type unknown",
            "byte order unknown",
            "shape unknown",
        ] {
            assert!(reason.contains(unknown), "{file}: {reason}");
        }
        assert!(
            common::checks_with(block, "fail").is_empty(),
            "{file}: {block}"
        );
        assert_eq!(report["counts"]["kept_unframed"], 1, "{file}");
        let warning = report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["kind"] == "typed_payload_unframed")
            .unwrap_or_else(|| panic!("{file}: no warning in {}", report["findings"]));
        assert_eq!(warning["subject"], id);
        assert_eq!(warning["severity"], "warning");

        // `maif cat` and `--raw` both print the exact legacy bytes: nothing framed.
        let data_sha256 = expected
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["file"] == file)
            .and_then(|f| {
                f["blocks"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|b| b["block_id"] == id || b["uuid"] == id)
            })
            .and_then(|b| b["data_sha256"].as_str())
            .unwrap()
            .to_owned();
        let block_id = block["block_id"].as_str().unwrap();
        for raw in [false, true] {
            let bytes = common::maif_cat(&out, block_id, 1, raw);
            assert_eq!(common::sha256_hex(&bytes), data_sha256, "{file} raw={raw}");
        }

        // The migrated block's own metadata says what it was and why it is unframed.
        let metadata = common::block_on(async {
            let store = maif_store::location::Location::parse(out.to_str().unwrap())
                .unwrap()
                .store()
                .unwrap();
            let reader = maif_store::artifact::ArtifactReader::open(store)
                .await
                .unwrap();
            let info = reader
                .blocks()
                .await
                .unwrap()
                .iter()
                .find(|b| b.id() == id)
                .cloned()
                .unwrap();
            reader.read(&info).await.unwrap().metadata().unwrap()
        });
        assert_eq!(metadata["legacy"]["type"], "EMBD", "{file}");
        assert_eq!(metadata["legacy"]["framing"]["stored_as"], "BINA", "{file}");
        assert_eq!(metadata["legacy"]["framing"]["withheld_type"], "EMBD");
    }
}

fn sdk_files() -> Vec<PathBuf> {
    let dir = common::fixtures().join("python-sdk");
    let mut files: Vec<PathBuf> = [dir.clone(), dir.join("edge")]
        .iter()
        .flat_map(|d| std::fs::read_dir(d).unwrap().map(|e| e.unwrap().path()))
        .filter(|p| p.extension().is_some_and(|e| e == "maif"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 12, "python-sdk fixtures");
    files
}

#[test]
fn python_sdk_files() {
    let bucket = common::s3::bucket("sdk-fixtures");
    for file in sdk_files() {
        let stem = file.file_stem().unwrap().to_str().unwrap().to_owned();
        let expected = load_json(&file.with_file_name(format!("{stem}.expected.json")));
        let inputs = file.with_file_name(format!("{stem}.inputs.json"));
        let pin = inputs.exists().then(|| {
            load_json(&inputs)["public_key_hex"]
                .as_str()
                .unwrap()
                .to_owned()
        });
        let want: Vec<Want> = expected["blocks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                (
                    b["block_id"].as_str().unwrap().to_owned(),
                    b["type"].as_str().unwrap().to_owned(),
                    b["data_sha256"].as_str().unwrap().to_owned(),
                    "live",
                )
            })
            .collect();
        let failing: Vec<String> = expected["checks_failed"]
            .as_array()
            .map(|c| c.iter().map(|v| v.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default();
        let mut extra = Vec::new();
        if let Some(pin) = &pin {
            extra.extend(["--public-key", pin.as_str()]);
        }
        let exit = if failing.is_empty() { 0 } else { 1 };
        let report = migrate(&file, &extra, exit, &want, &bucket);
        // Every SDK TEXT, EMBD and IMAG block has what its framing needs.
        assert_eq!(report["counts"]["kept_unframed"], 0, "{stem}");
        if stem == "sdk_multimodal" {
            // The blocks of the issue: TEXT with its language, EMBD with its SDK shape,
            // IMAG with the PNG's own size.
            let framing = |id: &str| {
                report["blocks"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|b| b["legacy_id"] == id)
                    .map(|b| b["framing"].clone())
                    .unwrap()
            };
            assert_eq!(
                framing("ad9cd5f9dc3c4aef868a6ecdfeba5888"),
                serde_json::json!({"framing": "text", "language": "en"})
            );
            assert_eq!(
                framing("423e534babff4b51bf5819e058807b3d"),
                serde_json::json!({"framing": "embedding", "dimension": 384, "count": 32,
                    "dtype": "float32", "shape_from": "metadata",
                    "dtype_from": "metadata element type, python-sdk byte order"})
            );
            assert_eq!(
                framing("0c0aab3d8b9e4aada3fcccf17971bb2b"),
                serde_json::json!({"framing": "image", "format": "png", "width": 512,
                    "height": 512})
            );
        }
        // Exactly the expected failures, all on block 0 of the SDK-bug fixture.
        let mut failed = Vec::new();
        for (i, block) in report["blocks"].as_array().unwrap().iter().enumerate() {
            for check in common::checks_with(block, "fail") {
                failed.push(format!("block[{i}].{check}"));
            }
        }
        for check in report["source_checks"].as_array().unwrap() {
            if check["result"] == "fail" {
                failed.push(check["check"].as_str().unwrap().to_owned());
            }
        }
        let want_failed: Vec<String> = failing
            .iter()
            .map(|f| {
                f.replace(".content_hash", ".sdk_content_hash")
                    .replace(".signature_valid", ".sdk_signature")
            })
            .collect();
        assert_eq!(failed, want_failed, "{stem}");
        // Without a pinned key the embedded key proves consistency, not authorship.
        let pinned = report["source_checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["check"] == "public_key_pinned")
            .expect("public_key_pinned check");
        assert_eq!(
            pinned["result"],
            if pin.is_some() {
                "pass"
            } else {
                "unverifiable"
            },
            "{stem}"
        );
    }
}

#[test]
fn keyless_forgery_of_an_sdk_file_is_refused() {
    // sample_text with its text changed, content hash and Merkle root recomputed, and the
    // SIGNED flag cleared: the Python SDK accepts it.
    use sha2::Digest as _;
    let original = std::fs::read(common::fixtures().join("python-sdk/sample_text.maif")).unwrap();
    let mut forged = original.clone();
    let block = 444;
    let size = u32::from_be_bytes(forged[block..block + 4].try_into().unwrap()) as usize;
    let metadata_len =
        u32::from_be_bytes(forged[block + 360..block + 364].try_into().unwrap()) as usize;
    let payload = block + 372..block + size - metadata_len;
    forged[payload.start] ^= 0x20;
    let data_hash = sha2::Sha256::digest(&forged[payload.clone()]);
    let mut h = sha2::Sha256::new();
    h.update(data_hash);
    h.update(&forged[payload.end..block + size]);
    let content_hash: [u8; 32] = h.finalize().into();
    forged[block + 72..block + 104].copy_from_slice(&content_hash);
    forged[block + 11] &= !1;
    forged[152..184].copy_from_slice(&content_hash); // one leaf: the root is the leaf
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("forged.maif");
    std::fs::write(&path, &forged).unwrap();
    let report = common::migrate_with_report(
        work.path(),
        &[path.to_str().unwrap(), "--dry-run"],
        false,
        1,
    );
    let block = &report["blocks"][0];
    assert_eq!(block["verdict"], "failed");
    assert!(
        common::checks_with(block, "fail").contains(&"sdk_signature".to_owned()),
        "{block}"
    );
    let failed_source: Vec<&str> = report["source_checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["result"] == "fail")
        .map(|c| c["check"].as_str().unwrap())
        .collect();
    for check in ["file_signature", "footer_hash"] {
        assert!(
            failed_source.contains(&check),
            "{check} should fail: {failed_source:?}"
        );
    }
}

#[test]
fn bad_inputs_give_clear_errors() {
    let work = tempfile::tempdir().unwrap();
    let key = common::key_file(work.path());
    let out = work.path().join("out.maif");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", Vec::new(), "empty.bin"),
        (
            "random",
            (0..4096u32)
                .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                .collect(),
            "random.bin",
        ),
        (
            "truncated sdk",
            std::fs::read(common::fixtures().join("python-sdk/sample_text.maif")).unwrap()[..600]
                .to_vec(),
            "cut.maif",
        ),
    ];
    for (what, bytes, file) in cases {
        let path = work.path().join(file);
        std::fs::write(&path, bytes).unwrap();
        let output = common::migrate_cli(
            &[
                path.to_str().unwrap(),
                out.to_str().unwrap(),
                "--key",
                key.to_str().unwrap(),
            ],
            false,
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{what}: {stderr}");
        assert!(
            stderr.contains(file),
            "{what}: the error names the file: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
        assert!(!out.exists(), "{what}: nothing written");
    }
    // The source is never a destination, and a legacy key must be the 32 raw bytes.
    let source = work.path().join("source.maif");
    std::fs::copy(
        common::fixtures().join("legacy-local/binary-format-a.maif"),
        &source,
    )
    .unwrap();
    let before = std::fs::read(&source).unwrap();
    let same = common::migrate_cli(
        &[
            source.to_str().unwrap(),
            source.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
        false,
    );
    let stderr = String::from_utf8_lossy(&same.stderr);
    assert_eq!(same.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("inside the source"), "{stderr}");
    assert!(std::fs::read(&source).unwrap() == before);
    let hex_key = work.path().join("hex.key");
    std::fs::write(&hex_key, format!("{}\n", "ab".repeat(32))).unwrap();
    let spec = format!("s1={}", hex_key.display());
    let bad_key = common::migrate_cli(
        &[source.to_str().unwrap(), "--dry-run", "--legacy-key", &spec],
        false,
    );
    let stderr = String::from_utf8_lossy(&bad_key.stderr);
    assert_eq!(bad_key.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("32 raw bytes") && stderr.contains("hex text"),
        "{stderr}"
    );

    // An existing artifact that is not a migration of this source is never added to.
    let other = common::fixtures().join("legacy-local/binary-format-a.maif");
    let first = common::migrate_cli(
        &[
            other.to_str().unwrap(),
            out.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
        false,
    );
    assert_eq!(first.status.code(), Some(0));
    let again = common::migrate_cli(
        &[
            common::fixtures()
                .join("legacy-local/binary-format-b.maif")
                .to_str()
                .unwrap(),
            out.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
        false,
    );
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert_eq!(again.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not a migration of"), "{stderr}");
}

/// A re-run after an interrupted migration makes the same records byte for byte, so every
/// record the interrupted run uploaded is reused: none is made twice and none is left behind.
/// The interruption is made exact by removing the migration's final commit object from a
/// finished run (its records stay, as after a run killed just before its final commit).
#[test]
fn a_re_run_after_an_interrupted_migration_reuses_every_uploaded_record() {
    let source = common::fixtures().join("python-sdk/sdk_multimodal.maif");
    let work = tempfile::tempdir().unwrap();
    let key = common::key_file(work.path());
    let dest_dir = work.path().join("dest");
    let dest = format!("file://{}", dest_dir.display());
    let args = [
        source.to_str().unwrap(),
        dest.as_str(),
        "--key",
        key.to_str().unwrap(),
    ];
    common::migrate_with_report(work.path(), &args, false, 0);
    let objects = |dir: &str| -> std::collections::BTreeSet<String> {
        match std::fs::read_dir(dest_dir.join(dir)) {
            Ok(entries) => entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Default::default(),
        }
    };
    let records = objects("blocks");
    let commits = objects("commits");
    assert!(
        commits.len() >= 2,
        "the migration made a creation commit and a final one: {commits:?}"
    );
    // Commit names sort newest first; drop the newest and the newest-commit hint.
    let newest = commits.iter().next().unwrap().clone();
    std::fs::remove_file(dest_dir.join("commits").join(&newest)).unwrap();
    let _ = std::fs::remove_file(dest_dir.join("latest"));

    let resumed = common::migrate_with_report(work.path(), &args, false, 0);
    assert_eq!(resumed["output_verified"], true, "{resumed}");
    assert_eq!(
        objects("blocks"),
        records,
        "the re-run made exactly the records the interrupted run had uploaded"
    );
    assert_eq!(objects("commits"), commits, "and the same commits");
    let store = maif_store::location::Location::parse(&dest)
        .unwrap()
        .store()
        .unwrap();
    let report = common::block_on(maif_store::artifact::verify(
        store,
        maif_store::artifact::VerifyOptions::default(),
    ))
    .unwrap();
    assert!(report.valid, "{:?}", report.problems);
    assert!(
        report.warnings.is_empty(),
        "no orphaned record or other warning: {:?}",
        report.warnings
    );
}
