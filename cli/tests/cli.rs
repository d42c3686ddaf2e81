//! The `maif` command line, end to end: every documented capability and exit code.

use std::path::Path;
use std::process::{Command, Output, Stdio};

fn maif(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_maif"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run maif")
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = maif(dir, args);
    assert!(
        out.status.success(),
        "maif {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn json(dir: &Path, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&ok(dir, args)).expect("json output")
}

#[test]
fn every_command_works_and_exit_codes_mean_what_they_say() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let public = ok(dir, &["keygen", "agent.pem"]);
    assert_eq!(public.trim().len(), 64, "keygen prints the hex public key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("agent.pem"))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "private key file must be 0600");
    }
    assert_eq!(
        maif(dir, &["keygen", "agent.pem"]).status.code(),
        Some(2),
        "keygen never overwrites"
    );
    let pem = std::fs::read_to_string(dir.join("agent.pem")).expect("pem");
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));

    ok(
        dir,
        &[
            "create",
            "notes.maif",
            "--key",
            "agent.pem",
            "--agent",
            "agent-1",
            "--meta",
            "project=alpha",
        ],
    );
    assert_eq!(
        maif(
            dir,
            &["create", "notes.maif", "--key", "agent.pem", "--agent", "x"]
        )
        .status
        .code(),
        Some(2)
    );

    let text = json(
        dir,
        &[
            "add",
            "notes.maif",
            "--key",
            "agent.pem",
            "--type",
            "TEXT",
            "--text",
            "hello",
            "--lang",
            "en",
            "--meta",
            "src=cli",
            "--json",
        ],
    );
    let text_id = text["block_id"].as_str().expect("id").to_string();
    assert_eq!(text["version"], 1);

    // Every FourCC of the spec, plus an unknown one, from stdin.
    for block_type in [
        "EMBD", "IMAG", "AUDI", "VIDE", "KGRF", "BINA", "META", "LIFE", "Q9z!",
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_maif"))
            .current_dir(dir)
            .args([
                "add",
                "notes.maif",
                "--key",
                "agent.pem",
                "--type",
                block_type,
                "--file",
                "-",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn");
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(&[0u8, 0, 128, 63, 0, 0, 0, 64])
            .expect("write");
        assert!(
            child.wait().expect("wait").success(),
            "add {block_type} from stdin"
        );
    }
    let big = "zstd compressible text ".repeat(500);
    let compressed = json(
        dir,
        &[
            "add",
            "notes.maif",
            "--key",
            "agent.pem",
            "--type",
            "TEXT",
            "--text",
            &big,
            "--zstd",
            "--json",
        ],
    );
    let v2 = json(
        dir,
        &[
            "add",
            "notes.maif",
            "--key",
            "agent.pem",
            "--type",
            "TEXT",
            "--text",
            "hello v2",
            "--update",
            &text_id,
            "--json",
        ],
    );
    assert_eq!(v2["block_id"].as_str(), Some(text_id.as_str()));
    assert_eq!(v2["version"], 2);

    let listing = json(dir, &["ls", "notes.maif", "--json"]);
    assert_eq!(listing.as_array().expect("array").len(), 12);
    let texts = json(
        dir,
        &["ls", "notes.maif", "--type", "TEXT", "--latest", "--json"],
    );
    assert_eq!(texts.as_array().expect("array").len(), 2);
    let by_meta = json(dir, &["ls", "notes.maif", "--meta", "src=cli", "--json"]);
    assert_eq!(by_meta.as_array().expect("array").len(), 1);
    assert_eq!(by_meta[0]["metadata"]["src"], "cli");
    assert!(
        ok(dir, &["ls", "notes.maif"]).contains("Q9z!"),
        "unknown types are listed"
    );

    assert_eq!(ok(dir, &["cat", "notes.maif", &text_id]), "hello v2");
    assert_eq!(
        ok(dir, &["cat", "notes.maif", &text_id, "--version", "1"]),
        "hello"
    );
    assert_eq!(
        ok(
            dir,
            &[
                "cat",
                "notes.maif",
                compressed["block_id"].as_str().expect("id")
            ]
        ),
        big
    );
    assert_eq!(
        maif(dir, &["cat", "notes.maif", &text_id, "--version", "3"])
            .status
            .code(),
        Some(2)
    );

    let inspect = json(dir, &["inspect", "notes.maif", "--json"]);
    assert_eq!(inspect["file_header"]["version"], "3.1");
    assert_eq!(inspect["blocks"].as_array().expect("blocks").len(), 12);
    assert_eq!(inspect["provenance"][0]["action"], "create");

    let report = json(dir, &["verify", "notes.maif", "--json"]);
    assert_eq!(report["valid"], true);
    assert_eq!(report["record_count"], 12);
    assert_eq!(
        json(dir, &["verify", "notes.maif", "--quick", "--json"])["valid"],
        true
    );
    assert_eq!(
        json(dir, &["verify", "notes.maif", "--strict", "--json"])["valid"],
        true
    );

    // Tamper with the second record's data: exit 1, and the block is named.
    let mut bytes = std::fs::read(dir.join("notes.maif")).expect("read");
    let second = &inspect["blocks"][1];
    let at = second["data_at"].as_u64().expect("data_at") as usize;
    bytes[at] ^= 0xff;
    std::fs::write(dir.join("tampered.maif"), &bytes).expect("write");
    let out = maif(dir, &["verify", "tampered.maif"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("block #1") && stdout.contains(second["block_id"].as_str().expect("id")),
        "{stdout}"
    );
    assert_eq!(
        maif(dir, &["verify", "missing.maif"]).status.code(),
        Some(2),
        "I/O error is exit 2"
    );
    assert_eq!(
        maif(dir, &["verify"]).status.code(),
        Some(2),
        "usage error is exit 2"
    );

    // Torn copies. Cut inside the last trailer: the last commit's segment and records are
    // whole and signed, so it still counts (with a warning) and recovery writes its trailer
    // back, giving the original file. Cut inside its segment: the file holds the commit
    // before it, and recovery copies that commit byte for byte. Neither needs a key.
    let full = std::fs::read(dir.join("notes.maif")).expect("read");
    std::fs::write(dir.join("torn.maif"), &full[..full.len() - 30]).expect("write");
    let torn = json(dir, &["verify", "torn.maif", "--json"]);
    assert_eq!(torn["valid"], true, "{torn}");
    assert_eq!(torn["record_count"], 12);
    assert!(
        torn["warnings"][0]["reason"]
            .as_str()
            .expect("warning")
            .contains("no complete trailer")
    );
    assert_eq!(ok(dir, &["cat", "torn.maif", &text_id]), "hello v2");
    let recovered = json(dir, &["recover", "torn.maif", "fixed.maif", "--json"]);
    assert_eq!(recovered["trailer_restored"], true);
    assert_eq!(std::fs::read(dir.join("fixed.maif")).expect("read"), full);
    std::fs::write(dir.join("torn2.maif"), &full[..full.len() - 200]).expect("write");
    let torn = json(dir, &["verify", "torn2.maif", "--json"]);
    assert_eq!(torn["valid"], true, "{torn}");
    assert_eq!(torn["record_count"], 11);
    assert_eq!(torn["warnings"].as_array().expect("warnings").len(), 1);
    let recovered = json(dir, &["recover", "torn2.maif", "fixed1.maif", "--json"]);
    assert_eq!(recovered["records_recovered"], 11);
    assert_eq!(recovered["mode"], "committed_state");
    assert_eq!(
        json(dir, &["verify", "fixed1.maif", "--json"])["valid"],
        true
    );
    // A damaged segment in the middle: recover needs the key to keep the records after it.
    let mut damaged = full.clone();
    let commits = inspect["commits"].as_array().expect("commits");
    let middle = commits[commits.len() / 2]["segment_offset"]
        .as_u64()
        .expect("offset") as usize;
    damaged[middle + 100] ^= 0x20;
    std::fs::write(dir.join("damaged.maif"), &damaged).expect("write");
    assert_eq!(
        maif(dir, &["verify", "damaged.maif"]).status.code(),
        Some(1)
    );
    let out = maif(dir, &["recover", "damaged.maif", "fixed2.maif"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--key"));
    let resigned = json(
        dir,
        &[
            "recover",
            "damaged.maif",
            "fixed2.maif",
            "--key",
            "agent.pem",
            "--json",
        ],
    );
    assert_eq!(resigned["mode"], "resigned");
    assert_eq!(resigned["records_recovered"], 12);
    assert_eq!(
        json(dir, &["verify", "fixed2.maif", "--json"])["valid"],
        true
    );

    // Finalize seals; a different key is refused.
    ok(dir, &["keygen", "other.pem"]);
    assert_eq!(
        maif(
            dir,
            &[
                "add",
                "notes.maif",
                "--key",
                "other.pem",
                "--type",
                "TEXT",
                "--text",
                "x"
            ]
        )
        .status
        .code(),
        Some(2)
    );
    ok(dir, &["finalize", "notes.maif", "--key", "agent.pem"]);
    let out = maif(
        dir,
        &[
            "add",
            "notes.maif",
            "--key",
            "agent.pem",
            "--type",
            "TEXT",
            "--text",
            "x",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("finalized"));
    assert_eq!(
        json(dir, &["verify", "notes.maif", "--json"])["valid"],
        true
    );
    // Private key material never appears in output.
    let secret_line = pem.lines().nth(1).expect("pem body");
    for args in [
        &["inspect", "notes.maif"][..],
        &["verify", "notes.maif"][..],
    ] {
        assert!(!ok(dir, args).contains(secret_line));
    }
}

#[test]
fn batch_add_import_and_proofs_work_from_the_command_line() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let public = ok(dir, &["keygen", "k.pem"]).trim().to_string();
    ok(
        dir,
        &["create", "a.maif", "--key", "k.pem", "--agent", "batch"],
    );
    std::fs::write(dir.join("x.bin"), b"first file").expect("write");
    std::fs::write(dir.join("y.bin"), b"second file").expect("write");
    let added = json(
        dir,
        &[
            "add", "a.maif", "--key", "k.pem", "--type", "BINA", "--file", "x.bin", "--file",
            "y.bin", "--json",
        ],
    );
    let added = added.as_array().expect("one row per block");
    assert_eq!(added.len(), 2);
    let inspect = json(dir, &["inspect", "a.maif", "--json"]);
    assert_eq!(
        inspect["commits"].as_array().expect("commits").len(),
        2,
        "two files, one commit"
    );
    let second = added[1]["block_id"].as_str().expect("id").to_string();
    assert_eq!(ok(dir, &["cat", "a.maif", &second]), "second file");

    let mut lines = String::new();
    for n in 0..250 {
        lines.push_str(&format!(
            "{{\"type\":\"TEXT\",\"text\":\"event {n}\",\"meta\":{{\"n\":{n}}}}}\n"
        ));
    }
    lines.push_str(&format!(
        "{{\"type\":\"BINA\",\"base64\":\"aGVsbG8=\",\"update\":\"{second}\"}}\n"
    ));
    std::fs::write(dir.join("events.jsonl"), &lines).expect("write");
    let summary = json(
        dir,
        &[
            "import",
            "a.maif",
            "--key",
            "k.pem",
            "--jsonl",
            "events.jsonl",
            "--commit-every",
            "100",
            "--json",
        ],
    );
    assert_eq!(summary["blocks"], 251);
    // Three commits of blocks, then one that merges the index runs (the import added most of
    // the artifact).
    assert_eq!(summary["commits"], 4);
    assert_eq!(summary["compacted"], true);
    assert_eq!(summary["records"], 253);
    let after = json(dir, &["inspect", "a.maif", "--json"]);
    assert_eq!(after["live_runs"].as_array().expect("runs").len(), 1);
    assert_eq!(
        after["provenance"]
            .as_array()
            .expect("p")
            .last()
            .expect("last")["action"],
        "compact"
    );
    assert_eq!(ok(dir, &["cat", "a.maif", &second]), "hello");
    assert_eq!(
        ok(dir, &["cat", "a.maif", &second, "--version", "1"]),
        "second file"
    );
    std::fs::write(dir.join("bad.jsonl"), "{\"type\":\"TEXT\",\"txt\":\"x\"}\n").expect("write");
    let out = maif(
        dir,
        &["import", "a.maif", "--key", "k.pem", "--jsonl", "bad.jsonl"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 1"));

    // Proofs, offline.
    let proof = ok(dir, &["prove", "a.maif", &second]);
    std::fs::write(dir.join("p.json"), &proof).expect("write");
    let checked = json(
        dir,
        &["verify-proof", "p.json", "--public-key", &public, "--json"],
    );
    assert_eq!(checked["kind"], "inclusion");
    assert_eq!(checked["block_id"], second.as_str());
    assert_eq!(checked["tree_size"], 253);
    let consistency = ok(dir, &["prove", "a.maif", "--consistency", "1", "4"]);
    std::fs::write(dir.join("c.json"), &consistency).expect("write");
    assert_eq!(
        json(dir, &["verify-proof", "c.json", "--json"])["old_tree_size"],
        2
    );
    let wrong_key = "00".repeat(32);
    assert_eq!(
        maif(dir, &["verify-proof", "p.json", "--public-key", &wrong_key])
            .status
            .code(),
        Some(1)
    );
    let mut flipped = proof.into_bytes();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x01;
    std::fs::write(dir.join("bad.json"), &flipped).expect("write");
    assert_eq!(
        maif(dir, &["verify-proof", "bad.json"]).status.code(),
        Some(1)
    );
    assert_eq!(
        maif(dir, &["verify-proof", "missing.json"]).status.code(),
        Some(2)
    );
}

#[test]
fn demo_runs_under_a_local_folder() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = ok(tmp.path(), &["demo", "--dir", "demo-out"]);
    assert!(out.contains("verify   valid"), "{out}");
    assert!(tmp.path().join("demo-out/demo.maif").exists());
}

#[test]
fn compact_merges_the_live_runs_and_lookups_still_find_every_version() {
    let tmp = keyed_folder();
    let dir = tmp.path();
    ok(dir, &["create", "c.maif", "--key", "k.pem", "--agent", "c"]);
    let mut ids = Vec::new();
    for n in 0..9 {
        let out = ok(
            dir,
            &[
                "add",
                "c.maif",
                "--key",
                "k.pem",
                "--type",
                "TEXT",
                "--text",
                &format!("note {n}"),
            ],
        );
        ids.push(out.split_whitespace().next().expect("id").to_string());
    }
    ok(
        dir,
        &[
            "add",
            "c.maif",
            "--key",
            "k.pem",
            "--type",
            "TEXT",
            "--text",
            "note 0 v2",
            "--update",
            &ids[0],
        ],
    );
    let before = json(dir, &["inspect", "c.maif", "--json"]);
    let runs_before = before["live_runs"].as_array().expect("runs").len();
    assert!(runs_before > 1, "{}", before["live_runs"]);
    let summary = json(dir, &["compact", "c.maif", "--key", "k.pem", "--json"]);
    assert_eq!(summary["runs_before"], runs_before);
    assert_eq!(summary["runs_after"], 1);
    assert_eq!(summary["compacted"], true);
    let after = json(dir, &["inspect", "c.maif", "--json"]);
    assert_eq!(after["live_runs"].as_array().expect("runs").len(), 1);
    assert_eq!(
        after["provenance"]
            .as_array()
            .expect("provenance")
            .last()
            .expect("last")["action"],
        "compact"
    );
    for (n, id) in ids.iter().enumerate().skip(1) {
        assert_eq!(ok(dir, &["cat", "c.maif", id]), format!("note {n}"));
    }
    assert_eq!(ok(dir, &["cat", "c.maif", &ids[0]]), "note 0 v2");
    assert_eq!(
        ok(dir, &["cat", "c.maif", &ids[0], "--version", "1"]),
        "note 0"
    );
    assert_eq!(maif(dir, &["verify", "c.maif"]).status.code(), Some(0));
    // Nothing left to merge: no commit.
    let again = json(dir, &["compact", "c.maif", "--key", "k.pem", "--json"]);
    assert_eq!(again["compacted"], false);
    let commits = json(dir, &["inspect", "c.maif", "--json"])["commits"]
        .as_array()
        .expect("commits")
        .len();
    assert_eq!(commits, after["commits"].as_array().expect("commits").len());
}

#[test]
fn a_file_of_another_version_is_a_usage_error_naming_the_version() {
    let tmp = keyed_folder();
    let dir = tmp.path();
    ok(dir, &["create", "v.maif", "--key", "k.pem", "--agent", "v"]);
    let mut bytes = std::fs::read(dir.join("v.maif")).expect("read");
    // The pre-release 3.0 layout: version bytes at 4 (major) and 5 (minor).
    bytes[5] = 0;
    std::fs::write(dir.join("old.maif"), &bytes).expect("write");
    // Reading it is a usage error (exit 2); verifying it finds it not valid (exit 1).
    for (args, code) in [
        (&["verify", "old.maif"][..], 1),
        (&["ls", "old.maif"], 2),
        (&["inspect", "old.maif"], 2),
        (
            &["cat", "old.maif", "00000000-0000-0000-0000-000000000000"],
            2,
        ),
    ] {
        let out = maif(dir, args);
        assert_eq!(out.status.code(), Some(code), "maif {args:?}");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            said.contains("unsupported MAIF version 3.0"),
            "maif {args:?}: {said}"
        );
    }
}

/// A temporary folder holding the key `k.pem`.
fn keyed_folder() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("tempdir");
    ok(tmp.path(), &["keygen", "k.pem"]);
    tmp
}

/// `maif add --id` makes a re-run safe: the same id and content is reported as done with the
/// committed block, nothing is added twice, and other content under the id is refused.
#[test]
fn an_add_re_run_with_its_id_is_done_once() {
    let tmp = keyed_folder();
    let dir = tmp.path();
    for location in ["a.maif", &format!("file://{}/objects", dir.display())] {
        ok(dir, &["create", location, "--key", "k.pem", "--agent", "a"]);
        let id = "7d1f5c2e-8a4b-4c3d-9e6f-0a1b2c3d4e5f";
        let add = |text: &str| {
            maif(
                dir,
                &[
                    "add", location, "--key", "k.pem", "--type", "TEXT", "--text", text, "--id",
                    id, "--json",
                ],
            )
        };
        let first = add("event 1");
        assert!(first.status.success(), "{first:?}");
        let again = add("event 1");
        assert!(again.status.success(), "a re-run is done: {again:?}");
        assert_eq!(
            first.stdout, again.stdout,
            "the re-run reports the committed block"
        );
        let listing = json(dir, &["ls", location, "--json"]);
        let rows = listing.as_array().expect("ls rows");
        assert_eq!(
            rows.iter().filter(|r| r["id"] == id).count(),
            1,
            "{location}: one block under the id: {listing}"
        );
        let other = add("event 2");
        assert_eq!(other.status.code(), Some(2), "{other:?}");
        assert!(
            String::from_utf8_lossy(&other.stderr).contains("other content"),
            "{other:?}"
        );
        assert_eq!(ok(dir, &["cat", location, id]), "event 1");
        // One --id per block.
        let mismatch = maif(
            dir,
            &[
                "add", location, "--key", "k.pem", "--type", "BINA", "--text", "x", "--id", id,
                "--id", id,
            ],
        );
        assert_eq!(mismatch.status.code(), Some(2), "{mismatch:?}");
    }
}

/// `maif gc` through the command line: a clean object layout has nothing to collect, a single
/// file is refused with a reason, and a bad grace period is a usage error.
#[test]
fn gc_from_the_command_line() {
    let tmp = keyed_folder();
    let dir = tmp.path();
    let objects = format!("file://{}/objects", dir.display());
    ok(dir, &["create", &objects, "--key", "k.pem", "--agent", "a"]);
    ok(
        dir,
        &[
            "add", &objects, "--key", "k.pem", "--type", "BINA", "--text", "x",
        ],
    );
    let report = json(
        dir,
        &["gc", &objects, "--older-than", "0", "--dry-run", "--json"],
    );
    assert_eq!(report["deleted"], serde_json::json!([]), "{report}");
    assert_eq!(report["referenced"], 1, "{report}");
    ok(dir, &["create", "a.maif", "--key", "k.pem", "--agent", "a"]);
    let refused = maif(dir, &["gc", "a.maif"]);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("object layout"),
        "{refused:?}"
    );
    for bad in ["7", "7w", "-1d", "é", "99999999999999999d"] {
        let out = maif(dir, &["gc", &objects, "--older-than", bad]);
        assert_eq!(out.status.code(), Some(2), "--older-than {bad}: {out:?}");
    }
}

/// A failed import says which lines are committed, and lines that name their "id" make the
/// re-run skip what is committed instead of adding it twice.
#[test]
fn an_import_that_fails_midway_says_what_is_committed_and_ids_make_the_re_run_safe() {
    let tmp = keyed_folder();
    let dir = tmp.path();
    ok(dir, &["create", "a.maif", "--key", "k.pem", "--agent", "a"]);
    let line = |n: u32| {
        format!(
            "{{\"type\":\"TEXT\",\"text\":\"event {n}\",\"id\":\"00000000-0000-4000-8000-{n:012}\"}}\n"
        )
    };
    let good: String = (1..=10).map(line).collect();
    std::fs::write(
        dir.join("events.jsonl"),
        format!("{good}{{\"type\":\"TEXT\"}}\n"),
    )
    .expect("write");
    let import = |file: &str| {
        maif(
            dir,
            &[
                "import",
                "a.maif",
                "--key",
                "k.pem",
                "--jsonl",
                file,
                "--commit-every",
                "4",
                "--no-compact",
            ],
        )
    };
    let failed = import("events.jsonl");
    let said = String::from_utf8_lossy(&failed.stderr);
    assert_eq!(failed.status.code(), Some(2), "{said}");
    assert!(
        said.contains("line 11") && said.contains("lines 1-8 of") && said.contains("tail -n +9"),
        "{said}"
    );
    assert_eq!(
        json(dir, &["ls", "a.maif", "--json"])
            .as_array()
            .expect("rows")
            .len(),
        8
    );
    std::fs::write(dir.join("events.jsonl"), &good).expect("write");
    let again = import("events.jsonl");
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let rows = json(dir, &["ls", "a.maif", "--json"]);
    assert_eq!(
        rows.as_array().expect("rows").len(),
        10,
        "no line twice: {rows}"
    );
    assert_eq!(
        ok(
            dir,
            &["cat", "a.maif", "00000000-0000-4000-8000-000000000010"]
        ),
        "event 10"
    );
}

/// `maif keygen` writes PKCS#8 v1 (RFC 5208; the encoding RFC 8410 section 10.3 shows), which
/// OpenSSL and Python's `cryptography` load; `maif` reads keys OpenSSL made.
#[test]
fn keygen_writes_keys_other_tools_read_and_reads_theirs() {
    use base64::Engine as _;
    let tmp = keyed_folder();
    let dir = tmp.path();
    let pem = std::fs::read_to_string(dir.join("k.pem")).expect("pem");
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .expect("base64");
    // SEQUENCE { INTEGER 0, SEQUENCE { OID 1.3.101.112 }, OCTET STRING { OCTET STRING (32) } }
    let prefix = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    assert_eq!(der.len(), 48, "{der:02x?}");
    assert_eq!(der[..16], prefix, "{der:02x?}");
    match Command::new("openssl")
        .args(["pkey", "-in", "k.pem", "-noout", "-text"])
        .current_dir(dir)
        .output()
    {
        Ok(out) => {
            assert!(
                out.status.success(),
                "openssl pkey refused the key: {out:?}"
            );
            let made = Command::new("openssl")
                .args(["genpkey", "-algorithm", "ed25519", "-out", "openssl.pem"])
                .current_dir(dir)
                .output()
                .expect("openssl genpkey");
            assert!(made.status.success(), "{made:?}");
            ok(
                dir,
                &["create", "o.maif", "--key", "openssl.pem", "--agent", "o"],
            );
        }
        Err(e) => eprintln!("SKIPPED the OpenSSL part: no openssl binary here ({e})"),
    }
}

/// Every lookup the legacy block guide offered, through the command line: by record or
/// payload digest, by time range, by agent, by index, and a block's version history.
#[test]
fn lookups_by_digest_time_agent_index_and_history() {
    let tmp = keyed_folder();
    let dir = tmp.path();
    ok(
        dir,
        &["create", "a.maif", "--key", "k.pem", "--agent", "agent-7"],
    );
    let add = |args: &[&str]| -> serde_json::Value {
        let mut all = vec!["add", "a.maif", "--key", "k.pem", "--json"];
        all.extend_from_slice(args);
        json(dir, &all)
    };
    let first = add(&["--type", "TEXT", "--text", "first"]);
    let id = first["block_id"].as_str().expect("id").to_string();
    std::thread::sleep(std::time::Duration::from_millis(5));
    let middle = add(&[
        "--type",
        "BINA",
        "--text",
        "middle",
        "--meta",
        "agent_id=other",
    ]);
    std::thread::sleep(std::time::Duration::from_millis(5));
    add(&["--type", "TEXT", "--text", "second", "--update", &id]);
    let rows = json(dir, &["ls", "a.maif", "--json"]);
    let rows = rows.as_array().expect("rows");
    assert_eq!(rows.len(), 3);
    let digest_of = |n: usize| rows[n]["digest"].as_str().expect("digest").to_string();
    let ids = |value: serde_json::Value| -> Vec<(String, u64)> {
        value
            .as_array()
            .expect("rows")
            .iter()
            .map(|r| {
                (
                    r["id"].as_str().expect("id").to_string(),
                    r["version"].as_u64().expect("v"),
                )
            })
            .collect()
    };

    // By record digest, and by the SHA-256 of the payload `cat` prints.
    let by_record = ids(json(
        dir,
        &["ls", "a.maif", "--digest", &digest_of(1), "--json"],
    ));
    assert_eq!(
        by_record,
        vec![(middle["block_id"].as_str().expect("id").to_string(), 1)]
    );
    let payload_sha = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(b"second"))
    };
    let by_payload = ids(json(
        dir,
        &["ls", "a.maif", "--digest", &payload_sha, "--json"],
    ));
    assert_eq!(by_payload, vec![(id.clone(), 2)]);

    // By time: since the middle block's time, and until just before it.
    let middle_time = rows[1]["timestamp"].as_str().expect("time").to_string();
    let since = ids(json(
        dir,
        &["ls", "a.maif", "--since", &middle_time, "--json"],
    ));
    assert_eq!(since.len(), 2, "{since:?}");
    let until = ids(json(
        dir,
        &["ls", "a.maif", "--until", &middle_time, "--json"],
    ));
    assert_eq!(until.len(), 2, "{until:?}");
    let before = rows[0]["timestamp"].as_str().expect("time").to_string();
    let only_first = ids(json(dir, &["ls", "a.maif", "--until", &before, "--json"]));
    assert_eq!(only_first, vec![(id.clone(), 1)]);

    // By agent: the block's own agent_id, else the artifact's.
    assert_eq!(
        ids(json(dir, &["ls", "a.maif", "--agent", "other", "--json"])).len(),
        1
    );
    assert_eq!(
        ids(json(dir, &["ls", "a.maif", "--agent", "agent-7", "--json"])).len(),
        2
    );

    // By index, and the history of a block.
    assert_eq!(ok(dir, &["cat", "a.maif", "--index", "1"]), "middle");
    assert_eq!(ok(dir, &["cat", "a.maif", "--index", "2"]), "second");
    assert_eq!(
        maif(dir, &["cat", "a.maif", "--index", "3"]).status.code(),
        Some(2)
    );
    let history = json(dir, &["history", "a.maif", &id, "--json"]);
    let history = history.as_array().expect("versions");
    assert_eq!(history.len(), 2);
    assert_eq!(history[1]["payload_sha256"], payload_sha);
    assert_eq!(history[0]["position"], 0);
    assert_eq!(history[1]["digest"].as_str(), Some(digest_of(2).as_str()));
    for bad in [["--since", "yesterday"], ["--digest", "abc"]] {
        let out = maif(dir, &["ls", "a.maif", bad[0], bad[1]]);
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
    }
}

/// `../shared/fixtures` beside the checkout (this package lives in `cli/`).
fn fixtures() -> std::path::PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures");
    assert!(
        dir.is_dir(),
        "the legacy fixtures are expected at {} (../shared beside the checkout)",
        dir.display()
    );
    dir
}

/// Every legacy file fixture (legacy local formats and Python SDK files), in name order.
fn legacy_fixture_files() -> Vec<std::path::PathBuf> {
    let mut files: Vec<std::path::PathBuf> = ["legacy-local", "python-sdk"]
        .iter()
        .flat_map(|sub| std::fs::read_dir(fixtures().join(sub)).expect("fixture dir"))
        .map(|entry| entry.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "maif" || e == "blk"))
        .collect();
    files.sort();
    files
}

/// `maif migrate` is the migration command (the same as `maif-migrate`): a Python SDK file
/// migrated by it reads back through `maif cat` as the fixture's expected payloads, written
/// by the Python code, and a second run resumes with nothing to do.
#[test]
fn maif_migrate_then_cat_gives_the_payloads_the_python_code_wrote() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    ok(d, &["keygen", "k.pem"]);
    for name in ["sdk_text_3blocks", "sdk_multimodal"] {
        let source = fixtures().join(format!("python-sdk/{name}.maif"));
        let expected: serde_json::Value = serde_json::from_slice(
            &std::fs::read(fixtures().join(format!("python-sdk/{name}.expected.json")))
                .expect("expected.json"),
        )
        .expect("expected JSON");
        let out = format!("{name}.maif");
        let source_text = source.display().to_string();
        let report = json(
            d,
            &["migrate", &source_text, &out, "--key", "k.pem", "--json"],
        );
        let blocks = expected["blocks"].as_array().expect("blocks");
        assert_eq!(
            report["counts"]["migrated"].as_u64(),
            Some(blocks.len() as u64),
            "{name}: {report}"
        );
        for block in blocks {
            let id = block["block_id"].as_str().expect("block_id");
            let payload = maif(d, &["cat", &out, id]);
            assert!(
                payload.status.success(),
                "maif cat {out} {id}: {}",
                String::from_utf8_lossy(&payload.stderr)
            );
            let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&payload.stdout));
            assert_eq!(
                Some(digest.as_str()),
                block["data_sha256"].as_str(),
                "{name}: block {id}"
            );
        }
        ok(d, &["verify", &out]);
        // A second run finds every block committed already.
        let again = json(
            d,
            &["migrate", &source_text, &out, "--key", "k.pem", "--json"],
        );
        assert_eq!(
            again["counts"]["already_present"].as_u64(),
            Some(blocks.len() as u64),
            "{name}: resumed run: {again}"
        );
    }
}

/// Every legacy file fixture (written by the Python code), migrated with `maif migrate` and
/// exported with `maif export --original`, comes back byte for byte; the export refuses to
/// overwrite, and `--original` is required.
#[test]
fn maif_export_original_gives_back_every_legacy_file_byte_for_byte() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    ok(d, &["keygen", "k.pem"]);
    let files = legacy_fixture_files();
    assert!(files.len() >= 12, "fixture files: {files:?}");
    for (n, source) in files.iter().enumerate() {
        let source_text = source.display().to_string();
        let migrated = format!("migrated-{n}.maif");
        let out = maif(
            d,
            &[
                "migrate",
                &source_text,
                &migrated,
                "--key",
                "k.pem",
                "--quiet",
            ],
        );
        assert!(
            out.status.code().is_some_and(|c| c <= 1) && d.join(&migrated).exists(),
            "maif migrate {source_text}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let exported = format!("exported-{n}");
        let summary = json(d, &["export", &migrated, &exported, "--original", "--json"]);
        assert_eq!(
            std::fs::read(d.join(&exported)).expect("exported file"),
            std::fs::read(source).expect("fixture"),
            "{source_text}: exported bytes differ ({summary})"
        );
        // An existing destination is never replaced silently.
        let again = maif(d, &["export", &migrated, &exported, "--original"]);
        assert_eq!(again.status.code(), Some(2), "{source_text}: second export");
        ok(
            d,
            &["export", &migrated, &exported, "--original", "--overwrite"],
        );
    }
    let no_flag = maif(d, &["export", "migrated-0.maif", "x"]);
    assert_eq!(no_flag.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&no_flag.stderr).contains("--original"));
}

/// Every fixture's expected payload digests by block id, as the Python code recorded them
/// (`data_sha256` in the fixtures' expected JSON), where the fixture gives one.
fn expected_payload_digests() -> std::collections::HashMap<String, String> {
    let mut out = std::collections::HashMap::new();
    let mut visit = |value: &serde_json::Value| {
        fn walk(v: &serde_json::Value, out: &mut std::collections::HashMap<String, String>) {
            match v {
                serde_json::Value::Object(map) => {
                    let id = map
                        .get("block_id")
                        .or_else(|| map.get("uuid"))
                        .and_then(|v| v.as_str());
                    // A compressed legacy block records the digest of its stored
                    // (compressed) bytes and its text: what `cat` prints is the text.
                    let payload = match map.get("text").and_then(|v| v.as_str()) {
                        Some(text) => Some(hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
                            text.as_bytes(),
                        ))),
                        None => map
                            .get("data_sha256")
                            .and_then(|v| v.as_str())
                            .map(str::to_owned),
                    };
                    if let (Some(id), Some(sha)) = (id, payload) {
                        out.insert(id.replace('-', ""), sha);
                    }
                    map.values().for_each(|v| walk(v, out));
                }
                serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
                _ => {}
            }
        }
        walk(value, &mut out);
    };
    for path in [
        fixtures().join("legacy-local/expected.json"),
        fixtures().join("python-sdk/sdk_text_3blocks.expected.json"),
        fixtures().join("python-sdk/sdk_multimodal.expected.json"),
    ] {
        visit(&serde_json::from_slice(&std::fs::read(path).expect("expected")).expect("JSON"));
    }
    out
}

/// One `maif` reads every variant: `ls`, `cat`, `history`, `inspect` and `verify` work in
/// place on every legacy file fixture (Python SDK 2.1, binary_format, block_storage,
/// unified), with the blocks, payloads and verdicts `maif migrate` reports for the same
/// source, the payload digests the Python code recorded, and the migration's exit code.
#[test]
fn maif_reads_every_legacy_file_in_place_as_the_migration_reports_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let expected_digests = expected_payload_digests();
    let files = legacy_fixture_files();
    let mut checked_against_python = 0;
    for source in &files {
        let f = source.display().to_string();
        let dry = maif(d, &["migrate", &f, "--dry-run", "--json", "--quiet"]);
        let report: serde_json::Value =
            serde_json::from_slice(&dry.stdout).expect("migration report");
        let listed = json(d, &["ls", &f, "--json"]);
        let rows = listed.as_array().expect("rows");
        let reported = report["blocks"].as_array().expect("report blocks");
        assert_eq!(rows.len(), reported.len(), "{f}: blocks");
        for (row, block) in rows.iter().zip(reported) {
            assert_eq!(row["id"], block["block_id"], "{f}: id");
            assert_eq!(row["type"], block["block_type"], "{f}: type");
            assert_eq!(row["status"], block["status"], "{f}: status");
            assert_eq!(row["verdict"], block["verdict"], "{f}: verdict");
            assert_eq!(row["size"], block["size"], "{f}: size");
            let (Some(id), Some(version)) = (row["id"].as_str(), row["version"].as_u64()) else {
                continue;
            };
            let payload = maif(d, &["cat", &f, id, "--version", &version.to_string()]);
            assert!(payload.status.success(), "{f}: cat {id}");
            let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&payload.stdout));
            assert_eq!(Some(digest.as_str()), block["sha256"].as_str(), "{f}: {id}");
            if let Some(python) = expected_digests.get(&id.replace('-', "")) {
                // The newest version carries the recorded digest in update fixtures.
                if row["version"] == 1 || *python == digest {
                    assert_eq!(*python, digest, "{f}: {id}: the Python code's digest");
                    checked_against_python += 1;
                }
            }
        }
        if let Some(first) = rows.iter().find(|r| r["version"].is_u64()) {
            let id = first["id"].as_str().expect("id");
            let history = json(d, &["history", &f, id, "--json"]);
            assert!(
                !history.as_array().expect("rows").is_empty(),
                "{f}: history"
            );
            let position = first["position"].as_u64().expect("position").to_string();
            let by_index = maif(d, &["cat", &f, "--index", &position]);
            let by_id = maif(d, &["cat", &f, id, "--version", "1"]);
            assert_eq!(by_index.stdout, by_id.stdout, "{f}: cat --index");
        }
        let inspected = json(d, &["inspect", &f]);
        assert!(inspected.is_object(), "{f}: inspect");
        let verified = maif(d, &["verify", &f, "--json"]);
        assert_eq!(
            verified.status.code(),
            dry.status.code(),
            "{f}: verify exit code is the migration's: {}",
            String::from_utf8_lossy(&verified.stdout)
        );
        let verdicts: serde_json::Value =
            serde_json::from_slice(&verified.stdout).expect("verify JSON");
        assert_eq!(
            verdicts["counts"]["failed"], report["counts"]["failed"],
            "{f}"
        );
        assert_eq!(
            verdicts["counts"]["verified"], report["counts"]["verified"],
            "{f}"
        );
    }
    assert!(
        checked_against_python >= 10,
        "payloads checked against the Python code's digests: {checked_against_python}"
    );
    // A canonical artifact still goes the canonical way, and garbage is refused clearly.
    std::fs::write(d.join("garbage.bin"), b"not any kind of MAIF at all").expect("write");
    let garbage = maif(d, &["ls", "garbage.bin"]);
    assert_eq!(garbage.status.code(), Some(1), "garbage: ls");
}

/// Every lookup `maif` offers works on a legacy file read in place as on a canonical
/// artifact: by payload digest, by time range, by agent, by type, by position, and the
/// version history.
#[test]
fn every_lookup_works_on_a_legacy_file_in_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let sdk = fixtures().join("python-sdk/sdk_multimodal.maif");
    let f = sdk.display().to_string();
    let expected: serde_json::Value = serde_json::from_slice(
        &std::fs::read(fixtures().join("python-sdk/sdk_multimodal.expected.json"))
            .expect("expected"),
    )
    .expect("JSON");
    let ids = |rows: &serde_json::Value| -> Vec<String> {
        rows.as_array()
            .expect("rows")
            .iter()
            .map(|r| r["id"].as_str().expect("id").replace('-', ""))
            .collect()
    };
    let blocks = expected["blocks"].as_array().expect("blocks");
    let all = json(d, &["ls", &f, "--json"]);
    assert_eq!(ids(&all).len(), blocks.len());
    // By the payload digest the Python code recorded.
    let third = &blocks[2];
    let found = json(
        d,
        &[
            "ls",
            &f,
            "--json",
            "--digest",
            third["data_sha256"].as_str().expect("sha"),
        ],
    );
    assert_eq!(ids(&found), [third["block_id"].as_str().expect("id")]);
    // By type.
    let texts = json(d, &["ls", &f, "--json", "--type", "TEXT"]);
    let expected_texts: Vec<&str> = blocks
        .iter()
        .filter(|b| b["type"] == "TEXT")
        .map(|b| b["block_id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids(&texts), expected_texts);
    // By time: the Python code's timestamps (µs) bound exactly the blocks between them.
    let times: Vec<u64> = blocks
        .iter()
        .map(|b| b["timestamp"].as_u64().expect("timestamp"))
        .collect();
    let window = json(
        d,
        &[
            "ls",
            &f,
            "--json",
            "--since",
            &times[1].to_string(),
            "--until",
            &times[3].to_string(),
        ],
    );
    let in_window: Vec<&str> = blocks
        .iter()
        .filter(|b| (times[1]..=times[3]).contains(&b["timestamp"].as_u64().expect("t")))
        .map(|b| b["block_id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids(&window), in_window);
    // By agent: the file's agent id, as the SDK wrote it.
    let agent = expected["agent_did"]
        .as_str()
        .and_then(|did| did.strip_prefix("did:maif:"))
        .expect("agent did");
    let by_agent = json(d, &["ls", &f, "--json", "--agent", agent]);
    assert_eq!(ids(&by_agent).len(), blocks.len(), "agent {agent}");
    let nobody = json(d, &["ls", &f, "--json", "--agent", "someone-else"]);
    assert!(ids(&nobody).is_empty());
    // By position, and the history of one id.
    let second = maif(d, &["cat", &f, "--index", "1"]);
    assert_eq!(
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&second.stdout)),
        blocks[1]["data_sha256"].as_str().expect("sha")
    );
    let id = all[0]["id"].as_str().expect("id");
    let history = json(d, &["history", &f, id, "--json"]);
    assert_eq!(history.as_array().expect("rows").len(), 1);
    assert_eq!(history[0]["payload_sha256"], blocks[0]["data_sha256"]);
}

/// `maif inspect … | head -c 1` (a reader that closes its end early) ends `maif` as other
/// Unix tools end, by SIGPIPE or quietly, never with a Rust panic (exit 101) on stderr.
#[test]
fn a_closed_pipe_ends_maif_quietly() {
    use std::os::unix::process::ExitStatusExt as _;
    let sdk = fixtures().join("python-sdk/sdk_multimodal.maif");
    let mut child = Command::new(env!("CARGO_BIN_EXE_maif"))
        .args(["inspect", sdk.to_str().expect("path")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn maif");
    // Close the reading end before maif writes its output.
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked") && out.status.code() != Some(101),
        "status {:?} (signal {:?}): {stderr}",
        out.status.code(),
        out.status.signal()
    );
}
