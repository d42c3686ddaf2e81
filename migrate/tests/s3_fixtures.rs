//! Every legacy S3 fixture, uploaded to a real S3 (LocalStack) with its user metadata exactly
//! as `objects.json` records it, then migrated with the CLI. The output must hold the
//! expected blocks in the expected order with the expected payloads and verdicts (`maif cat`,
//! the CLI, prints each exact legacy payload; TEXT, EMBD and IMAG carry their canonical
//! framing), pass a full verify, and survive file -> S3 -> file byte for byte; the source
//! must be untouched.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::s3;
use futures::TryStreamExt as _;
use maif_store::artifact::{ArtifactReader, VerifyOptions, verify};
use maif_store::format::payload::content_of;
use maif_store::location::Location;
use object_store::ObjectStore;
use serde_json::Value;

fn fixture_dir(name: &str) -> PathBuf {
    common::fixtures().join("legacy-s3").join(name)
}

fn load_json(path: &Path) -> Value {
    serde_json::from_slice(
        &std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Uploads a fixture's objects with their user metadata; returns the store.
fn upload(bucket: &str, fixture: &str) -> Arc<dyn ObjectStore> {
    let store = s3::store(bucket);
    common::block_on(common::legacy_s3::upload(&store, fixture));
    store
}

/// Every key with its ETag and size.
fn snapshot(store: &Arc<dyn ObjectStore>) -> BTreeMap<String, (u64, Option<String>)> {
    common::block_on(store.list(None).try_collect::<Vec<_>>())
        .expect("list")
        .into_iter()
        .map(|m| (m.location.to_string(), (m.size, m.e_tag)))
        .collect()
}

fn legacy_key_args(fixture: &str) -> Vec<String> {
    let keys = fixture_dir(fixture).join("keys/keys.json");
    if !keys.exists() {
        return Vec::new();
    }
    load_json(&keys)
        .as_array()
        .expect("keys.json")
        .iter()
        .flat_map(|k| {
            let label = k["label"].as_str().expect("label");
            let file = fixture_dir(fixture).join(k["file"].as_str().expect("file"));
            [
                "--legacy-key".to_owned(),
                format!("{label}={}", file.display()),
            ]
        })
        .collect()
}

/// What one present block of a fixture must become: (uuid, status, sha256, key label).
fn expected_blocks(fixture: &str) -> Vec<(String, String, String, Option<String>)> {
    let expected = load_json(&fixture_dir(fixture).join("expected.json"));
    let mut blocks: Vec<&Value> = expected["blocks"]
        .as_array()
        .expect("blocks")
        .iter()
        .collect();
    blocks.sort_by_key(|b| b["order"].as_u64().unwrap_or(0));
    blocks
        .into_iter()
        .filter(|b| b["object_present"].as_bool().unwrap_or(true))
        .map(|b| {
            let status = match b["status"].as_str().unwrap_or_default() {
                "orphan_object" => "orphan",
                other => other,
            };
            let sha = b["current_sha256"]
                .as_str()
                .or(b["sha256"].as_str())
                .unwrap_or_default();
            let signed_now = b["current_signed"]
                .as_bool()
                .or(b["signed"].as_bool())
                .unwrap_or(b["signed_when_written"].as_bool().unwrap_or(false));
            let key = if signed_now {
                b["hmac_key"]
                    .as_str()
                    .map(str::to_owned)
                    .or(Some("session-1".into()))
            } else {
                None
            };
            (
                b["uuid"].as_str().unwrap_or_default().to_owned(),
                status.to_owned(),
                sha.to_owned(),
                key,
            )
        })
        .collect()
}

fn endpoint_args() -> Vec<String> {
    vec!["--endpoint".into(), s3::endpoint()]
}

/// Migrates one fixture and checks everything the issue asks of it.
fn migrate_fixture(fixture: &str) {
    let work = tempfile::tempdir().expect("tempdir");
    let bucket = s3::bucket(fixture);
    let store = upload(&bucket, fixture);
    let before = snapshot(&store);
    let expected = load_json(&fixture_dir(fixture).join("expected.json"));
    let prefix = expected["prefix"].as_str().expect("prefix");
    let source = format!("s3://{bucket}/{prefix}");
    let out = work.path().join("out.maif");
    let key = common::key_file(work.path());

    let mut args = vec![
        source.clone(),
        out.display().to_string(),
        "--key".into(),
        key.display().to_string(),
    ];
    args.extend(legacy_key_args(fixture));
    args.extend(endpoint_args());
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let report = common::migrate_with_report(work.path(), &argv, true, 0);

    // Blocks, order, statuses, payloads, verdicts.
    let want = expected_blocks(fixture);
    let got = common::report_blocks(&report);
    let got_ids: Vec<&str> = got.iter().map(|b| b.0.as_str()).collect();
    let want_ids: Vec<&str> = want.iter().map(|b| b.0.as_str()).collect();
    assert_eq!(got_ids, want_ids, "{fixture}: block order");
    for ((id, status, verdict, sha), (_, want_status, want_sha, key)) in got.iter().zip(&want) {
        assert_eq!(status, want_status, "{fixture} {id}: status");
        assert_eq!(
            sha.as_deref(),
            Some(want_sha.as_str()),
            "{fixture} {id}: payload sha256"
        );
        // 6202d9ba follows a block its writer deleted: the link cannot be checked.
        let gap = fixture == "two-writers" && id.starts_with("6202d9ba");
        let want_verdict = if key.is_some() && !gap {
            "verified"
        } else {
            "unverifiable"
        };
        assert_eq!(verdict, want_verdict, "{fixture} {id}: verdict");
    }
    if fixture == "two-writers" {
        let block = &report["blocks"][3];
        assert_eq!(
            common::checks_with(block, "unverifiable"),
            vec!["chain_link".to_owned()]
        );
        let findings = report["findings"].to_string();
        assert!(
            findings.contains("chain_gap") && findings.contains("orphan_object"),
            "{findings}"
        );
    }
    for (block, (_, _, _, key)) in report["blocks"]
        .as_array()
        .expect("blocks")
        .iter()
        .zip(&want)
    {
        assert!(
            common::checks_with(block, "fail").is_empty(),
            "{fixture}: {block}"
        );
        if let Some(label) = key {
            let passed = common::checks_with(block, "pass");
            assert!(
                passed.contains(&format!("hmac_signature[{label}]")),
                "{fixture}: {passed:?} lacks key {label}"
            );
        }
    }
    if let Some(live) = expected["live_block_count"].as_u64() {
        assert_eq!(
            report["counts"]["live"].as_u64(),
            Some(live),
            "{fixture}: live count"
        );
    }

    // The output verifies and holds the payloads and metadata.
    common::block_on(async {
        let store = Location::parse(&out.display().to_string())
            .unwrap()
            .store()
            .unwrap();
        let verified = verify(store.clone(), VerifyOptions::default())
            .await
            .expect("verify");
        assert!(verified.valid, "{fixture}: {:?}", verified.problems);
        let reader = ArtifactReader::open(store).await.expect("open output");
        let mut blocks = Vec::new();
        for info in reader.blocks().await.expect("list").iter() {
            let block = reader.read(info).await.expect("read block");
            let metadata = block.metadata().expect("metadata");
            if &info.entry.block_type.0 == b"LGCY" {
                continue;
            }
            // What a reader shows: the payload without its typed framing.
            let content = content_of(info.entry.block_type, &block.data).expect("payload");
            blocks.push((info.id(), common::sha256_hex(&content), metadata));
        }
        assert_eq!(
            blocks.len(),
            want.len(),
            "{fixture}: migrated content blocks"
        );
        for ((id, sha, metadata), (want_id, _, want_sha, _)) in blocks.iter().zip(&want) {
            assert_eq!(id, want_id, "{fixture}");
            assert_eq!(sha, want_sha, "{fixture} {id}");
            assert_eq!(metadata["legacy"]["id"], Value::String(want_id.clone()));
        }
        if fixture == "mixed" {
            let (_, _, metadata) = blocks
                .iter()
                .find(|b| b.0 == "c250959a-74e9-49bd-98e9-925b518901c9")
                .expect("c250959a migrated");
            assert_eq!(metadata["reviewed"], "True");
            assert_eq!(metadata["bigint"], "18446744073709551617");
            assert_eq!(metadata["huge"], "1e+22");
            assert_eq!(metadata["title"], "padded title");
        }
    });

    // The `maif` CLI prints every exact legacy payload, and every typed block is framed:
    // each legacy TEXT, EMBD and IMAG block here declares what its framing needs.
    let shas: Vec<&str> = want.iter().map(|w| w.2.as_str()).collect();
    let framed = common::assert_maif_cat_returns_the_legacy_payloads(&out, &report, &shas);
    eprintln!("{fixture}: framing {framed:?}");
    assert_eq!(report["counts"]["kept_unframed"], 0, "{fixture}");
    let framing_of = |id: &str| {
        report["blocks"]
            .as_array()
            .expect("blocks")
            .iter()
            .find(|b| b["legacy_id"] == id)
            .map(|b| b["framing"].clone())
            .unwrap_or_else(|| panic!("{fixture}: {id} in the report"))
    };
    let check_framing = |id: &str, want: Value| {
        assert_eq!(framing_of(id), want, "{fixture} {id}: framing");
    };
    match fixture {
        "text-only" => check_framing(
            "9d74f8ac-7ab4-4cd8-bff4-6a2105b81e01",
            serde_json::json!({"framing": "text", "language": "de"}),
        ),
        "mixed" => {
            // `mul` is not a two-letter code: the framing leaves the language unspecified.
            check_framing(
                "c250959a-74e9-49bd-98e9-925b518901c9",
                serde_json::json!({"framing": "text", "language": null}),
            );
            check_framing(
                "f3895fcd-b0a8-4ece-ae2f-f5a0e220aea1",
                serde_json::json!({"framing": "embedding", "dimension": 384, "count": 8,
                    "dtype": "float32", "shape_from": "metadata",
                    "dtype_from": "metadata element type, s3-layout-a byte order"}),
            );
            assert_eq!(
                framing_of("fcb273cf-39b4-4ded-90b0-0b9e14bcafa0")["format"],
                "png"
            );
        }
        "unified-storage" => check_framing(
            "e5e8abc8-eb30-402b-88d5-b4a050b8a11f",
            serde_json::json!({"framing": "embedding", "dimension": 8, "count": 1,
                "dtype": "float32",
                "shape_from": "metadata dimension; count from the payload length",
                "dtype_from": "metadata element type, s3-layout-b byte order"}),
        ),
        _ => {}
    }

    // file -> S3 -> file is byte-identical.
    common::verify_and_round_trip(&out, &bucket);

    // The source is untouched (the converted copy lives under another prefix).
    let after: BTreeMap<_, _> = snapshot(&store)
        .into_iter()
        .filter(|(k, _)| !k.starts_with("converted/"))
        .collect();
    assert_eq!(before, after, "{fixture}: source objects or ETags changed");

    // Without legacy keys nothing is called tampered: signatures are unverifiable.
    let mut args = vec![source, "--dry-run".to_owned()];
    args.extend(endpoint_args());
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let dry = common::migrate_with_report(work.path(), &argv, true, 0);
    for (id, _, verdict, _) in common::report_blocks(&dry) {
        assert_eq!(verdict, "unverifiable", "{fixture} {id} without keys");
    }
    assert_eq!(
        snapshot(&store).len(),
        before.len()
            + snapshot(&store)
                .keys()
                .filter(|k| k.starts_with("converted/"))
                .count()
    );
}

#[test]
fn text_only() {
    migrate_fixture("text-only");
}

#[test]
fn mixed() {
    migrate_fixture("mixed");
}

#[test]
fn unsigned() {
    migrate_fixture("unsigned");
}

#[test]
fn v0_pre_unified() {
    migrate_fixture("v0-pre-unified");
}

#[test]
fn two_writers() {
    migrate_fixture("two-writers");
}

#[test]
fn unified_storage() {
    migrate_fixture("unified-storage");
}

/// The blocks of a migrated artifact as a reader sees them: id, version, type, payload
/// SHA-256 and metadata (everything but the chain links and signatures, which depend on the
/// destination's creation).
fn migrated_blocks(bucket: &str, prefix: &str) -> Vec<(String, u32, String, String, Value)> {
    common::block_on(async {
        let store = s3::backend(bucket, prefix);
        let reader = ArtifactReader::open(store).await.expect("open output");
        let mut blocks = Vec::new();
        for info in reader.blocks().await.expect("list").iter() {
            let block = reader.read(info).await.expect("read block");
            blocks.push((
                info.id(),
                info.version,
                info.entry.block_type.to_string(),
                common::sha256_hex(&block.data),
                Value::Object(block.metadata().expect("metadata")),
            ));
        }
        blocks
    })
}

/// A migration from S3 to S3 with 20 % (and 50 %) of all requests, source reads and
/// destination writes, faulted completes (re-running it after any run that fails, as the
/// documentation says; measured: none has needed one since reads and uploads are retried),
/// makes each record once (no orphan is left), and equals the fault-free migration block for
/// block. Re-runs that reuse an interrupted run's records are tested exactly in
/// `local_fixtures.rs`.
#[test]
fn a_migration_under_faults_completes_by_re_running_and_equals_the_fault_free_one() {
    use common::fault_proxy::{FaultProxy, Policy};
    let fixture = "mixed";
    let work = tempfile::tempdir().expect("tempdir");
    let bucket = s3::bucket("migrate-faults");
    upload(&bucket, fixture);
    let expected = load_json(&fixture_dir(fixture).join("expected.json"));
    let prefix = expected["prefix"].as_str().expect("prefix");
    let source = format!("s3://{bucket}/{prefix}");
    let key = common::key_file(work.path());
    let args_for = |destination: &str, endpoint: &str| -> Vec<String> {
        let mut args = vec![
            source.clone(),
            destination.to_owned(),
            "--key".into(),
            key.display().to_string(),
            "--quiet".into(),
            "--endpoint".into(),
            endpoint.to_owned(),
        ];
        args.extend(legacy_key_args(fixture));
        args
    };
    let clean = format!("s3://{bucket}/migrated/clean");
    let run = |args: &[String]| {
        common::migrate_cli(&args.iter().map(String::as_str).collect::<Vec<_>>(), true)
    };
    let out = run(&args_for(&clean, &s3::endpoint()));
    assert!(out.status.success(), "fault-free: {out:?}");

    let clean_blocks = migrated_blocks(&bucket, "migrated/clean");
    // 20 % as the issue asks, and 50 %, which makes runs fail and exercises the re-runs.
    for (rate, seed) in [(0.2, 11u64), (0.5, 12)] {
        let proxy = FaultProxy::start(&s3::endpoint(), Policy::mixed(seed, rate));
        let prefix = format!("migrated/faulty-{seed}");
        let faulty = format!("s3://{bucket}/{prefix}");
        let mut runs = Vec::new();
        loop {
            let out = run(&args_for(&faulty, &proxy.endpoint()));
            let code = out.status.code();
            runs.push(code);
            match code {
                Some(0) => break,
                // Not done or unknown: the documented answer to both is to run it again.
                Some(2 | 3) if runs.len() < 30 => {}
                _ => panic!(
                    "{rate}: run {} ended {code:?}: {}\n{}",
                    runs.len(),
                    String::from_utf8_lossy(&out.stderr),
                    proxy.log_tail(20)
                ),
            }
        }
        let stats = proxy.stats();
        drop(proxy);
        eprintln!("{rate}: runs {runs:?}; proxy: {stats:?}");
        assert!(stats.total_faults() >= 5, "faults were injected: {stats:?}");
        assert_eq!(
            migrated_blocks(&bucket, &prefix),
            clean_blocks,
            "{rate}: the migration under faults equals the fault-free one"
        );
        common::block_on(async {
            let report = verify(s3::backend(&bucket, &prefix), VerifyOptions::default())
                .await
                .expect("verify");
            assert!(report.valid, "{rate}: {:?}", report.problems);
            assert!(
                report.warnings.is_empty(),
                "{rate}: each record was made once, none left orphaned: {:?}",
                report.warnings
            );
        });
    }
}
