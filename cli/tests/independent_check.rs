//! `docs/worked_example_check.py` is a second reader of MAIF 3.1, written from FORMAT.md
//! alone in Python (hashlib, its own CRC32C table, the `cryptography` package for Ed25519).
//! It shares no code with the crate, so agreement with it is evidence that the bytes are what
//! the document says, not merely what this crate writes. Here it checks artifacts built the
//! way a user builds them, through the CLI, and must refuse a damaged copy.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    // The workspace root: this package lives in `cli/`.
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn has_cryptography(python: &Path) -> bool {
    Command::new(python)
        .args([
            "-c",
            "import cryptography.hazmat.primitives.asymmetric.ed25519",
        ])
        .output()
        .is_ok_and(|out| out.status.success())
}

/// A Python with `cryptography`: the system one if it has it, else LocalStack's venv (which
/// `localstack/start.sh` creates from pinned requirements that include it).
fn python() -> PathBuf {
    let venv = repo().join("localstack/.venv/bin/python");
    let candidates = [PathBuf::from("python3"), venv.clone()];
    if let Some(found) = candidates.iter().find(|p| has_cryptography(p)) {
        return found.clone();
    }
    // Installs the venv on first use (the S3 tests need it anyway).
    common::s3::endpoint();
    assert!(
        has_cryptography(&venv),
        "no Python with the `cryptography` package: neither python3 nor {}",
        venv.display()
    );
    venv
}

fn independent_check(file: &Path, public_key: &str) -> Output {
    Command::new(python())
        .arg(repo().join("docs/worked_example_check.py"))
        .arg(file)
        .arg(public_key)
        .output()
        .expect("run docs/worked_example_check.py")
}

fn maif(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_maif"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run maif");
    assert!(
        out.status.success(),
        "maif {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn assert_agrees(file: &Path, public_key: &str) {
    let out = independent_check(file, public_key);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("all checks passed"),
        "the independent checker refused {}:\n{stdout}\n{}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_golden_vector_passes_the_independent_checker() {
    let expected: serde_json::Value = serde_json::from_slice(
        &std::fs::read(repo().join("tests/vectors/small.json")).expect("small.json"),
    )
    .expect("json");
    let key = expected["public_key"].as_str().expect("public_key");
    assert_agrees(&repo().join("tests/vectors/small.maif"), key);
}

#[test]
fn artifacts_built_through_the_cli_pass_the_independent_checker_and_damage_fails_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let key = maif(dir, &["keygen", "k.pem"]).trim().to_string();
    maif(
        dir,
        &["create", "a.maif", "--key", "k.pem", "--agent", "checker"],
    );
    // Forty single-block commits: enough for index runs to be merged across tiers, so the
    // checker sees runs that summarise records of many earlier commits.
    let mut first_id = String::new();
    for n in 0..40 {
        let out = maif(
            dir,
            &[
                "add",
                "a.maif",
                "--key",
                "k.pem",
                "--type",
                "TEXT",
                "--text",
                &format!("event {n}"),
            ],
        );
        if n == 0 {
            // `maif add` prints "<block id> v<version>".
            first_id = out
                .split_whitespace()
                .next()
                .expect("add prints the block id")
                .to_string();
        }
    }
    maif(
        dir,
        &[
            "add",
            "a.maif",
            "--key",
            "k.pem",
            "--type",
            "TEXT",
            "--text",
            "event 0, v2",
            "--update",
            &first_id,
        ],
    );
    let mut lines = String::new();
    for n in 0..300 {
        lines.push_str(&format!("{{\"type\":\"TEXT\",\"text\":\"line {n}\"}}\n"));
    }
    std::fs::write(dir.join("events.jsonl"), lines).expect("write");
    maif(
        dir,
        &[
            "import",
            "a.maif",
            "--key",
            "k.pem",
            "--jsonl",
            "events.jsonl",
            "--commit-every",
            "64",
            "--no-compact",
        ],
    );
    assert_agrees(&dir.join("a.maif"), &key);

    maif(dir, &["compact", "a.maif", "--key", "k.pem"]);
    maif(dir, &["finalize", "a.maif", "--key", "k.pem"]);
    assert_agrees(&dir.join("a.maif"), &key);

    // Through a local-folder object layout and back: still the same bytes, still agreed on.
    let folder = format!("file://{}", dir.join("folder").display());
    maif(dir, &["convert", "a.maif", &folder, "--quiet"]);
    maif(dir, &["convert", &folder, "back.maif", "--quiet"]);
    assert_eq!(
        std::fs::read(dir.join("back.maif")).expect("read"),
        std::fs::read(dir.join("a.maif")).expect("read")
    );
    assert_agrees(&dir.join("back.maif"), &key);

    // The checker is not a rubber stamp: one changed payload byte, or the wrong key, fails it.
    let image = std::fs::read(dir.join("a.maif")).expect("read");
    let needle = b"line 150";
    let at = image
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("payload of line 150");
    let mut damaged = image.clone();
    damaged[at + 5] ^= 0x01;
    std::fs::write(dir.join("damaged.maif"), &damaged).expect("write");
    let out = independent_check(&dir.join("damaged.maif"), &key);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a flipped payload byte must fail the checker:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let other = maif(dir, &["keygen", "other.pem"]).trim().to_string();
    assert_eq!(
        independent_check(&dir.join("a.maif"), &other).status.code(),
        Some(1)
    );
}

/// The bytes of FORMAT.md's worked example, rebuilt from the `xxd` dump in section 18.8
/// (offsets checked to be contiguous), with the public key and digests its table gives.
fn worked_example() -> (Vec<u8>, std::collections::HashMap<String, String>) {
    let doc = std::fs::read_to_string(repo().join("docs/FORMAT.md")).expect("FORMAT.md");
    let bytes = common::worked_example::worked_example_bytes(&doc);
    // The table of 18: "| item | `value` |" rows.
    let table = doc
        .split("## 18. Worked example")
        .nth(1)
        .expect("section 18");
    let values = table
        .lines()
        .take_while(|l| !l.starts_with("### "))
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (cells.len() >= 3)
                .then(|| (cells[1].to_string(), cells[2].trim_matches('`').to_string()))
        })
        .collect();
    (bytes, values)
}

/// The worked example printed in FORMAT.md is a valid artifact to both readers: the
/// independent Python checker (written from the document alone) and `maif verify` pinned to
/// the key the document names, and its digests are the ones the document's table gives. A
/// byte flipped in its record fails both. So the document and the code cannot drift apart.
#[test]
fn the_worked_example_in_format_md_checks_out_in_both_readers() {
    let (bytes, values) = worked_example();
    let length: usize = values["file length"]
        .replace(' ', "")
        .parse()
        .expect("file length");
    assert_eq!(bytes.len(), length, "18.8 holds the whole file");
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("small.maif");
    std::fs::write(&path, &bytes).expect("write");
    let key = values["public key"].as_str();
    assert_eq!(key.len(), 64, "public key {key}");
    assert_agrees(&path, key);
    let checked = String::from_utf8(independent_check(&path, key).stdout).expect("utf-8");
    assert!(
        checked.contains(&format!("chain seed {}", values["chain seed (genesis)"])),
        "the independent checker derives another chain seed than the document gives:\n{checked}"
    );
    let path_text = path.display().to_string();
    let report: serde_json::Value = serde_json::from_str(&maif(
        tmp.path(),
        &["verify", &path_text, "--public-key", key, "--json"],
    ))
    .expect("verify JSON");
    assert_eq!(report["valid"], true, "{report}");
    let inspected = maif(tmp.path(), &["inspect", &path_text, "--json"]);
    for item in ["chain seed (genesis)", "commit 0 digest", "record 0 digest"] {
        let value = values
            .get(item)
            .unwrap_or_else(|| panic!("the table of 18 names the {item}"));
        assert!(
            inspected.contains(value.as_str()),
            "maif inspect does not show the {item} {value} the document gives"
        );
    }
    // A flipped byte in the record's text ("hi", inside the record's range that the
    // heading of 18.3 gives) fails both.
    let doc = std::fs::read_to_string(repo().join("docs/FORMAT.md")).expect("FORMAT.md");
    let range = doc
        .split("### 18.3 The record (")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|r| r.split_once(".."))
        .and_then(|(a, b)| Some(a.parse::<usize>().ok()?..b.parse::<usize>().ok()?))
        .expect("18.3 names the record's byte range");
    let record_at = range.start
        + bytes[range.clone()]
            .windows(2)
            .rposition(|w| w == b"hi")
            .expect("the record's text");
    let mut damaged = bytes.clone();
    damaged[record_at] ^= 0x01;
    let bad = tmp.path().join("damaged.maif");
    std::fs::write(&bad, &damaged).expect("write");
    assert!(!independent_check(&bad, key).status.success());
    let out = Command::new(env!("CARGO_BIN_EXE_maif"))
        .args(["verify", bad.to_str().expect("path"), "--public-key", key])
        .output()
        .expect("run maif");
    assert_eq!(
        out.status.code(),
        Some(1),
        "maif verify of the damaged example"
    );
}
