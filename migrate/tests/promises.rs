//! One test per promise of docs/MIGRATION.md that had none (issue 12.3), through the
//! `maif-migrate` binary. Expected values come from the guide's statements and from the
//! fixture's `expected.json`, written by the Python code.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

fn fixture() -> PathBuf {
    common::fixtures().join("python-sdk/sdk_text_3blocks.maif")
}

fn expected() -> Value {
    let path = common::fixtures().join("python-sdk/sdk_text_3blocks.expected.json");
    serde_json::from_slice(&std::fs::read(path).expect("expected.json")).expect("JSON")
}

fn said(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn run(args: &[&str]) -> Output {
    common::migrate_cli(args, false)
}

fn report(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", said(out)))
}

fn text(path: &Path) -> String {
    path.display().to_string()
}

/// docs/MIGRATION.md:224-234 (the run ends with a human summary: counts by status;
/// verified, unverifiable and failed blocks; how many TEXT, EMBD and IMAG payloads were
/// framed and how many kept unframed; whether the output passed a full verify) and :242
/// (exit 0 when everything was migrated and nothing failed). The fixture holds three TEXT
/// blocks, live, signed by the key its expected.json names.
#[test]
fn the_human_summary_says_what_the_guide_lists() {
    let work = tempfile::tempdir().expect("tempdir");
    let key = common::key_file(work.path());
    let out_file = work.path().join("out.maif");
    let public_key = expected()["public_key"]
        .as_str()
        .expect("public_key")
        .to_string();
    let out = run(&[
        &text(&fixture()),
        &text(&out_file),
        "--key",
        &text(&key),
        "--public-key",
        &public_key,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    let summary = String::from_utf8_lossy(&out.stdout).to_lowercase();
    for wanted in [
        "3 live",
        "3 verified",
        "0 unverifiable",
        "0 failed",
        "3 text",
        "0 embd",
        "0 imag",
        "unframed",
    ] {
        assert!(summary.contains(wanted), "no {wanted:?} in: {}", said(&out));
    }
    assert!(
        summary
            .lines()
            .any(|line| line.contains("output") && line.contains("verif")),
        "the summary does not say whether the output verified: {}",
        said(&out)
    );
}

/// docs/MIGRATION.md:236-238 (`--json` gives every block with its status, verdict, checks,
/// framing, size and SHA-256 of the legacy payload, plus every finding), :198 (the SDK
/// checks by name), :220-222 (without `--public-key`, `public_key_pinned` says the signer
/// is unknown) and :302/:242 (an unpinned SDK key is unverifiable, which does not fail the
/// run).
#[test]
fn the_json_report_gives_every_block_as_the_guide_lists() {
    let work = tempfile::tempdir().expect("tempdir");
    let key = common::key_file(work.path());
    let out_file = work.path().join("out.maif");
    let out = run(&[
        &text(&fixture()),
        &text(&out_file),
        "--key",
        &text(&key),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    let report = report(&out);
    let expected = expected();
    let blocks = report["blocks"].as_array().expect("blocks");
    let wanted = expected["blocks"].as_array().expect("expected blocks");
    assert_eq!(blocks.len(), wanted.len(), "{report}");
    for (block, want) in blocks.iter().zip(wanted) {
        assert_eq!(block["legacy_id"], want["block_id"], "{block}");
        assert_eq!(block["status"], "live", "{block}");
        assert_eq!(block["size"], want["data_len"], "{block}");
        assert_eq!(block["sha256"], want["data_sha256"], "{block}");
        assert!(block["framing"].is_object(), "{block}");
        assert!(block["verdict"].is_string(), "{block}");
        let checks: Vec<&str> = block["checks"]
            .as_array()
            .expect("checks")
            .iter()
            .map(|c| c["check"].as_str().expect("check name"))
            .collect();
        for name in ["sdk_content_hash", "sdk_signature", "sdk_chain_link"] {
            assert!(checks.contains(&name), "no {name} in {block}");
        }
    }
    assert!(report["findings"].is_array(), "{report}");
    let pinned: Vec<&Value> = report["source_checks"]
        .as_array()
        .expect("source_checks")
        .iter()
        .filter(|c| c["check"] == "public_key_pinned")
        .collect();
    assert_eq!(pinned.len(), 1, "{report}");
    assert_eq!(pinned[0]["result"], "unverifiable", "{report}");
}

/// docs/MIGRATION.md:208-210 (a block whose check failed "is still migrated, with its
/// failure recorded"), :224-232 (the summary lists every failed check) and :243 (exit 1
/// when legacy evidence contradicts the data): one payload byte of the SDK fixture changed.
#[test]
fn a_block_whose_legacy_hash_fails_is_migrated_flagged_and_exits_1() {
    let work = tempfile::tempdir().expect("tempdir");
    let key = common::key_file(work.path());
    let expected = expected();
    let first_text = expected["blocks"][0]["text"].as_str().expect("text");
    let mut bytes = std::fs::read(fixture()).expect("fixture");
    let at = bytes
        .windows(first_text.len())
        .position(|w| w == first_text.as_bytes())
        .expect("payload in the file");
    bytes[at] ^= 0x20; // "Hello" -> "hello"
    let source = work.path().join("tampered.maif");
    std::fs::write(&source, &bytes).expect("write");
    let out_file = work.path().join("out.maif");
    let args = [text(&source), text(&out_file), "--key".into(), text(&key)];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&args);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("sdk_content_hash"),
        "the summary does not name the failed check: {}",
        said(&out)
    );
    let mut with_json = args.clone();
    with_json.push("--json");
    let again = run(&with_json);
    assert_eq!(again.status.code(), Some(1), "{}", said(&again));
    let report = report(&again);
    let block = &report["blocks"][0];
    assert_eq!(block["verdict"], "failed", "{block}");
    assert_eq!(block["migrated"], true, "{block}");
    assert!(
        block["checks"]
            .as_array()
            .expect("checks")
            .iter()
            .any(|c| c["check"] == "sdk_content_hash" && c["result"] == "fail"),
        "{block}"
    );
    assert_eq!(
        report["counts"]["migrated"],
        expected["blocks"].as_array().expect("blocks").len(),
        "{report}"
    );
    // Migrated: `maif cat` prints the legacy payload as it is in the file.
    let id = block["block_id"].as_str().expect("block_id");
    let payload = common::maif_cat(&out_file, id, 1, false);
    let mut altered = first_text.as_bytes().to_vec();
    altered[0] ^= 0x20;
    assert_eq!(payload, altered);
}

/// docs/MIGRATION.md:313-317 (a re-run into the same destination: when the `migrate` entry
/// is there it only re-checks and reports `already_complete` and writes nothing; a
/// destination holding anything else is refused) and :21 (`--dry-run` checks only).
#[test]
fn a_finished_migration_is_not_repeated_and_other_destinations_are_refused() {
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path();
    let key = common::key_file(dir);
    let out_file = dir.join("out.maif");
    let args = [
        text(&fixture()),
        text(&out_file),
        "--key".into(),
        text(&key),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let first = run(&args);
    assert_eq!(first.status.code(), Some(0), "{}", said(&first));
    let written = std::fs::read(&out_file).expect("read");

    let mut with_json = args.clone();
    with_json.push("--json");
    let again = run(&with_json);
    assert_eq!(again.status.code(), Some(0), "{}", said(&again));
    assert_eq!(report(&again)["already_complete"], true, "{}", said(&again));
    assert!(
        std::fs::read(&out_file).expect("read") == written,
        "the re-run wrote"
    );

    // A canonical artifact that is not this source's migration.
    let maif = common::maif_bin();
    let other = dir.join("other.maif");
    let created = std::process::Command::new(&maif)
        .args([
            "create",
            &text(&other),
            "--key",
            &text(&key),
            "--agent",
            "x",
        ])
        .output()
        .expect("maif create");
    assert!(created.status.success(), "{}", said(&created));
    let before = std::fs::read(&other).expect("read");
    let refused = run(&[&text(&fixture()), &text(&other), "--key", &text(&key)]);
    assert_eq!(refused.status.code(), Some(2), "{}", said(&refused));
    assert!(std::fs::read(&other).expect("read") == before);

    // The migration of another source.
    let other_source = common::fixtures().join("python-sdk/sdk_multimodal.maif");
    let refused = run(&[&text(&other_source), &text(&out_file), "--key", &text(&key)]);
    assert_eq!(refused.status.code(), Some(2), "{}", said(&refused));
    assert!(std::fs::read(&out_file).expect("read") == written);

    // --dry-run writes nothing anywhere.
    let empty = tempfile::tempdir().expect("tempdir");
    let dry = std::process::Command::new(env!("CARGO_BIN_EXE_maif-migrate"))
        .current_dir(empty.path())
        .args([&text(&fixture()), "--dry-run"])
        .output()
        .expect("dry run");
    assert_eq!(dry.status.code(), Some(0), "{}", said(&dry));
    assert_eq!(
        std::fs::read_dir(empty.path()).expect("read_dir").count(),
        0,
        "--dry-run wrote a file"
    );
}

/// docs/MIGRATION.md, step 4 of reading a legacy prefix: "Each GET carries `If-Match: <ETag
/// from the HEAD>`. A body that changed since its metadata was read is refused, because
/// layout B overwrites objects in place." A layout-B block object is overwritten between the
/// migrator's HEAD and its GET (a store wrapper does it right before the GET goes out, on
/// LocalStack): the migration fails naming the object, and the changed body is in no
/// committed block.
#[test]
fn a_legacy_object_overwritten_between_head_and_get_is_refused() {
    use std::sync::Arc;

    use common::counting::CountingStore;
    use maif_migrate::s3::S3Source;
    use maif_store::store::{BlockStore, FileStore};
    use object_store::ObjectStore;
    use object_store::path::Path as ObjectPath;

    let fixture = "unified-storage";
    let bucket = common::s3::bucket("if-match");
    let s3: Arc<dyn ObjectStore> = common::s3::store(&bucket);
    let keys = common::legacy_s3::fixture_keys(fixture);
    // The live BDAT block of the fixture (its body is migrated as content).
    let block = keys
        .iter()
        .find(|k| k.ends_with("/blocks/fa8afb19-6c85-4e6c-b29d-10029863c333"))
        .expect("the fixture's live block object")
        .clone();
    let work = tempfile::tempdir().expect("tempdir");
    let out = work.path().join("migrated.maif");
    common::block_on(async {
        common::legacy_s3::upload(&s3, fixture).await;
        let counting = CountingStore::new(s3.clone());
        counting.overwrite_before_next_get(
            ObjectPath::from(block.as_str()),
            b"overwritten in place after its HEAD".to_vec().into(),
        );
        let source = S3Source {
            store: counting.clone(),
            prefix: "unified/maif".into(),
            url: format!("s3://{bucket}/unified/maif"),
            concurrency: 4,
        };
        let outcome = async {
            let artifact = maif_migrate::s3::read(&source, None, &|_| {}).await?;
            let destination: Arc<dyn BlockStore> = Arc::new(FileStore::new(&out));
            maif_migrate::migrate::migrate(
                artifact,
                Some(&source),
                Some(destination),
                maif_migrate::migrate::MigrateOptions {
                    key: Some(maif_store::SigningKey::generate().expect("key")),
                    ..maif_migrate::migrate::MigrateOptions::default()
                },
            )
            .await
        }
        .await;
        assert!(
            !counting.overwrite_pending(),
            "the migrator never sent the GET of {block}"
        );
        let error = outcome.expect_err("a body that changed after its HEAD is refused");
        let message = error.to_string();
        assert!(message.contains(&block), "names the object: {message}");
        assert!(
            message.to_lowercase().contains("precondition"),
            "says the version changed: {message}"
        );
        if out.exists() {
            let reader = maif_store::ArtifactReader::open(Arc::new(FileStore::new(&out)))
                .await
                .expect("open what the failed run committed");
            for info in reader.blocks().await.expect("list").iter() {
                let block = reader.read(info).await.expect("read");
                assert!(
                    &block.data[..] != b"overwritten in place after its HEAD",
                    "the changed body was migrated"
                );
            }
        }
    });
}
