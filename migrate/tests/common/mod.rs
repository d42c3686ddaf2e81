//! Shared helpers for the migrator's tests.
#![allow(dead_code)]

#[path = "../../../tests/common/s3.rs"]
pub mod s3;

#[path = "../../../tests/common/fault_proxy.rs"]
pub mod fault_proxy;

#[path = "../../../tests/common/legacy_s3.rs"]
pub mod legacy_s3;

#[path = "../../../tests/common/counting.rs"]
pub mod counting;

pub mod legacy_gen;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use maif_store::SigningKey;
use serde_json::Value;

/// `../shared/fixtures` beside the checkout.
pub fn fixtures() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures");
    assert!(
        dir.is_dir(),
        "the legacy fixtures are expected at {} (../shared beside the checkout)",
        dir.display()
    );
    dir
}

pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(future)
}

/// A fresh signing key written as PEM in `dir`.
pub fn key_file(dir: &Path) -> PathBuf {
    let path = dir.join("migrator.pem");
    if !path.exists() {
        SigningKey::generate()
            .expect("key")
            .write_pem_file(&path)
            .expect("write key");
    }
    path
}

/// Runs `maif-migrate` with `args` (plus the S3 test environment when `s3`).
pub fn migrate_cli(args: &[&str], s3: bool) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_maif-migrate"));
    command.args(args);
    if s3 {
        for (k, v) in s3::cli_env() {
            command.env(k, v);
        }
    }
    command.output().expect("run maif-migrate")
}

/// Runs the CLI with `--report`, asserts the exit code, and returns the parsed report.
pub fn migrate_with_report(dir: &Path, args: &[&str], s3: bool, exit: i32) -> Value {
    let report = dir.join(format!("report-{}.json", uuid::Uuid::new_v4().simple()));
    let mut all: Vec<&str> = args.to_vec();
    let report_text = report.display().to_string();
    all.extend(["--report", &report_text, "--quiet"]);
    let output = migrate_cli(&all, s3);
    assert_eq!(
        output.status.code(),
        Some(exit),
        "maif-migrate {args:?}\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&std::fs::read(&report).expect("report written")).expect("report JSON")
}

/// The `maif` CLI (the other package's binary), which `cargo test` and `cargo build` at
/// the workspace root build beside `maif-migrate`.
pub fn maif_bin() -> PathBuf {
    let migrate = Path::new(env!("CARGO_BIN_EXE_maif-migrate"));
    let maif = migrate.with_file_name(format!("maif{}", std::env::consts::EXE_SUFFIX));
    assert!(
        maif.is_file(),
        "the `maif` CLI is not at {}: these tests read migrated blocks back with it. Run \
         `cargo test` at the workspace root (it builds both packages), or `cargo build --bin \
         maif` before `cargo test -p maif-migrate`",
        maif.display()
    );
    maif
}

/// What `maif cat LOCATION BLOCK_ID --version VERSION [--raw]` prints; panics with its
/// stderr if it fails.
pub fn maif_cat(location: &Path, block_id: &str, version: u32, raw: bool) -> Vec<u8> {
    let mut command = Command::new(maif_bin());
    command.arg("cat").arg(location).arg(block_id);
    command.args(["--version", &version.to_string()]);
    if raw {
        command.arg("--raw");
    }
    let output = command.output().expect("run maif cat");
    assert!(
        output.status.success(),
        "maif cat {} {block_id} --version {version}{}: {}\n{}",
        location.display(),
        if raw { " --raw" } else { "" },
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// The framing a written FourCC carries (FORMAT.md 4.8): the report's name for it and the
/// length of its prefix.
fn typed_framing(fourcc: &str) -> Option<(&'static str, usize)> {
    match fourcc {
        "TEXT" => Some(("text", 3)),
        "EMBD" => Some(("embedding", 12)),
        "IMAG" => Some(("image", 12)),
        _ => None,
    }
}

/// Reads every migrated block of `report` back from `out` with the `maif` CLI: `maif cat`
/// must print exactly the legacy payload (`want_sha256[i]` is block i's SHA-256), a block
/// written under TEXT, EMBD or IMAG must carry that framing (`--raw` is longer by its
/// prefix), and a legacy TEXT, EMBD or IMAG block written under another type must be
/// reported as kept unframed. Returns how many blocks were framed, by report framing name.
pub fn assert_maif_cat_returns_the_legacy_payloads(
    out: &Path,
    report: &Value,
    want_sha256: &[&str],
) -> std::collections::BTreeMap<String, usize> {
    let blocks = report["blocks"].as_array().expect("blocks");
    assert_eq!(blocks.len(), want_sha256.len(), "{}: blocks", out.display());
    let mut versions: std::collections::HashMap<&str, u32> = Default::default();
    let mut framings = std::collections::BTreeMap::new();
    for (block, want) in blocks.iter().zip(want_sha256) {
        if block["migrated"] != true {
            continue;
        }
        let id = block["block_id"].as_str().expect("block_id");
        // A source that repeats an id is migrated as versions of one block, in order.
        let version = versions.entry(id).or_insert(0);
        *version += 1;
        let content = maif_cat(out, id, *version, false);
        assert_eq!(
            sha256_hex(&content),
            *want,
            "{}: `maif cat {id}` is not the legacy payload: {block}",
            out.display()
        );
        let written = block["block_type"].as_str().expect("block_type");
        let raw = maif_cat(out, id, *version, true);
        let framing = block["framing"]["framing"].as_str();
        match typed_framing(written) {
            Some((name, prefix)) => {
                assert_eq!(raw.len(), content.len() + prefix, "{id}: {written} framing");
                assert_eq!(framing, Some(name), "{id}: {block}");
            }
            None => {
                assert_eq!(raw, content, "{id}: {written} is stored unframed");
                let legacy_type = block["legacy_type"].as_str().unwrap_or_default();
                if typed_framing(legacy_type).is_some() {
                    assert_eq!(framing, Some("unframed"), "{id}: {block}");
                    assert_eq!(written, "BINA", "{id}");
                } else {
                    assert_eq!(framing, None, "{id}: {block}");
                }
            }
        }
        if let Some(framing) = framing {
            *framings.entry(framing.to_owned()).or_insert(0) += 1;
        }
    }
    framings
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(data))
}

/// The report's blocks as (legacy id, status, verdict, sha256).
pub fn report_blocks(report: &Value) -> Vec<(String, String, String, Option<String>)> {
    report["blocks"]
        .as_array()
        .expect("blocks")
        .iter()
        .map(|b| {
            (
                b["legacy_id"].as_str().unwrap_or_default().to_owned(),
                b["status"].as_str().unwrap_or_default().to_owned(),
                b["verdict"].as_str().unwrap_or_default().to_owned(),
                b["sha256"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

/// Names of the checks of one report block that have `result`.
pub fn checks_with(block: &Value, result: &str) -> Vec<String> {
    block["checks"]
        .as_array()
        .map(|checks| {
            checks
                .iter()
                .filter(|c| c["result"] == result)
                .map(|c| c["check"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Converts the file `out` to the object layout on the test S3 and back, and asserts the
/// copy is byte-identical; also checks the file passes a full verify.
pub fn verify_and_round_trip(out: &Path, bucket: &str) {
    use maif_store::artifact::{ConvertOptions, VerifyOptions, convert, verify};
    use maif_store::location::Location;
    let back = out.with_extension("back.maif");
    block_on(async {
        let file = Location::parse(&out.display().to_string())
            .unwrap()
            .store()
            .unwrap();
        let report = verify(file.clone(), VerifyOptions::default())
            .await
            .expect("verify");
        assert!(report.valid, "{}: {:?}", out.display(), report.problems);
        let prefix = format!("converted/{}", uuid::Uuid::new_v4().simple());
        let objects: std::sync::Arc<dyn maif_store::store::BlockStore> =
            s3::backend(bucket, &prefix);
        convert(file, objects.clone(), ConvertOptions::default())
            .await
            .expect("file -> S3");
        let back_store = Location::parse(&back.display().to_string())
            .unwrap()
            .store()
            .unwrap();
        convert(objects, back_store, ConvertOptions::default())
            .await
            .expect("S3 -> file");
    });
    assert!(
        std::fs::read(out).unwrap() == std::fs::read(&back).unwrap(),
        "{}: file -> S3 -> file is not byte-identical",
        out.display()
    );
}
