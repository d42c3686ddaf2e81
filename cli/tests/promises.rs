//! One test per documented promise that had none (issue 12.3), run the way a user works:
//! through the `maif` binary. Each test names the statement it checks (file and line of
//! README.md or docs/*.md); expected values come from those statements, not from running
//! the code.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn maif(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_maif"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run maif")
}

fn said(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = maif(dir, args);
    assert!(out.status.success(), "maif {args:?} failed: {}", said(&out));
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn json(dir: &Path, args: &[&str]) -> serde_json::Value {
    let text = ok(dir, args);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("maif {args:?}: {e}: {text}"))
}

fn sha(path: &Path) -> String {
    hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        std::fs::read(path).expect("read"),
    ))
}

/// A temporary folder holding a key `k.pem` and the artifact `a.maif`: commit 0 (create),
/// then one commit per text, each adding one TEXT block. Returns the block ids in order.
fn artifact_with(dir: &Path, location: &str, texts: &[&str]) -> Vec<String> {
    if !dir.join("k.pem").exists() {
        ok(dir, &["keygen", "k.pem"]);
    }
    ok(dir, &["create", location, "--key", "k.pem", "--agent", "a"]);
    texts
        .iter()
        .map(|text| {
            let added = json(
                dir,
                &[
                    "add", location, "--key", "k.pem", "--type", "TEXT", "--text", text, "--json",
                ],
            );
            added["block_id"].as_str().expect("block_id").to_string()
        })
        .collect()
}

fn ids_listed(dir: &Path, location: &str) -> Vec<String> {
    let listing = json(dir, &["ls", location, "--json"]);
    listing
        .as_array()
        .expect("ls rows")
        .iter()
        .map(|row| row["id"].as_str().expect("id").to_string())
        .collect()
}

/// Flips one byte of `path` at `at`.
fn flip(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).expect("read");
    bytes[at] ^= 0x01;
    std::fs::write(path, bytes).expect("write");
}

/// The file offset of the first payload byte of block `n` (as `inspect` lists blocks).
fn data_at(dir: &Path, location: &str, n: usize) -> usize {
    json(dir, &["inspect", location, "--json"])["blocks"][n]["data_at"]
        .as_u64()
        .expect("data_at") as usize
}

/// README.md:174-177 (exit 1 "also when `ls`/`cat` refuse a tampered artifact") and
/// README.md:19 ("verification that names what is wrong"): `cat` of a block whose record
/// was altered exits 1 and prints none of the altered payload.
#[test]
fn cat_of_an_altered_record_exits_1_and_prints_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let ids = artifact_with(dir, "a.maif", &["first text", "second text"]);
    flip(&dir.join("a.maif"), data_at(dir, "a.maif", 0) + 4);
    for args in [
        &["cat", "a.maif", ids[0].as_str()][..],
        &["cat", "a.maif", ids[0].as_str(), "--raw"][..],
        &["cat", "a.maif", "--index", "0"][..],
    ] {
        let out = maif(dir, args);
        assert_eq!(out.status.code(), Some(1), "maif {args:?}: {}", said(&out));
        assert!(
            out.stdout.is_empty(),
            "maif {args:?} printed altered bytes: {}",
            said(&out)
        );
    }
    let out = maif(dir, &["verify", "a.maif"]);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
}

/// README.md:174-177 (exit 1 when `ls`/`cat` refuse a tampered artifact) and
/// README.md:224-226 (damage: "Readers and writers refuse the file rather than fall back
/// to an older state or truncate committed bytes"): a byte changed inside the newest
/// commit's segment makes `ls` and `cat` exit 1, and an append is refused without touching
/// a byte of the file.
#[test]
fn ls_cat_and_add_refuse_an_artifact_whose_newest_commit_was_altered() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let ids = artifact_with(dir, "a.maif", &["first text", "second text"]);
    let newest = json(dir, &["inspect", "a.maif", "--json"])["commits"]
        .as_array()
        .expect("commits")
        .last()
        .expect("newest commit")["segment_offset"]
        .as_u64()
        .expect("segment_offset") as usize;
    // Inside the 352-byte segment header (FORMAT.md 6.2), which the commit signature covers.
    flip(&dir.join("a.maif"), newest + 200);
    let before = std::fs::read(dir.join("a.maif")).expect("read");
    for args in [
        &["ls", "a.maif"][..],
        &["ls", "a.maif", "--json"][..],
        &["cat", "a.maif", ids[0].as_str()][..],
        &["cat", "a.maif", ids[1].as_str()][..],
        &["verify", "a.maif"][..],
    ] {
        let out = maif(dir, args);
        assert_eq!(out.status.code(), Some(1), "maif {args:?}: {}", said(&out));
    }
    let add = maif(
        dir,
        &[
            "add", "a.maif", "--key", "k.pem", "--type", "TEXT", "--text", "third",
        ],
    );
    assert!(
        !add.status.success(),
        "an append to a damaged file succeeded: {}",
        said(&add)
    );
    assert!(
        std::fs::read(dir.join("a.maif")).expect("read") == before,
        "the refused append changed the file"
    );
}

/// docs/OBJECT-LAYOUT.md:316-319 (convert re-hashes every record; "A record that does not
/// match is not copied"), :326-328 (an interrupted conversion to the object layout never
/// leaves "a commit whose records are missing"), :333-338 (a file is published only at the
/// end) and README.md:174-177 (exit 1 for an artifact that fails verification): converting
/// a source with an altered record fails with exit 1, publishes no file, and leaves no
/// commit in a folder that names the altered record.
#[test]
fn convert_refuses_a_source_with_an_altered_record() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    artifact_with(dir, "a.maif", &["first text", "second text"]);
    let good_digest = json(dir, &["ls", "a.maif", "--json"])[1]["digest"]
        .as_str()
        .expect("digest")
        .to_string();
    flip(&dir.join("a.maif"), data_at(dir, "a.maif", 1) + 2);
    let source_sha = sha(&dir.join("a.maif"));

    let out = maif(dir, &["convert", "a.maif", "b.maif"]);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    assert!(!dir.join("b.maif").exists(), "a file was published");

    let folder = format!("file://{}/objects", dir.display());
    let out = maif(dir, &["convert", "a.maif", &folder]);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    // The altered record is not under the committed digest's name, nor under any name.
    let altered: Vec<u8> = {
        let bytes = std::fs::read(dir.join("a.maif")).expect("read");
        let block = &json(dir, &["inspect", "a.maif", "--json"])["blocks"][1];
        let at = block["offset"].as_u64().expect("offset") as usize;
        let len = block["record_len"].as_u64().expect("record_len") as usize;
        bytes[at..at + len].to_vec()
    };
    let blocks = dir.join("objects/blocks");
    if blocks.is_dir() {
        for entry in std::fs::read_dir(&blocks).expect("blocks") {
            let path = entry.expect("entry").path();
            assert!(
                std::fs::read(&path).expect("read") != altered,
                "the altered record was copied to {}",
                path.display()
            );
            assert!(
                !path.ends_with(&good_digest),
                "an object holds the altered record's committed name"
            );
        }
    }
    // Whatever landed is an earlier commit of the source, complete and valid.
    if dir.join("objects/commits").is_dir() {
        let report = json(dir, &["verify", &folder, "--json"]);
        assert_eq!(report["valid"], true, "{report}");
        assert!(
            report["record_count"].as_u64().expect("record_count") < 2,
            "{report}"
        );
    }
    assert_eq!(
        sha(&dir.join("a.maif")),
        source_sha,
        "convert wrote to its source"
    );
}

/// docs/OBJECT-LAYOUT.md:320-322 (a destination holding the newest commit: nothing is done;
/// an earlier commit of the same artifact: the conversion resumes; another artifact:
/// `already exists`) and :338-340 (a file destination that exists is refused, even one
/// holding an earlier commit, unless it holds the newest).
#[test]
fn convert_into_an_existing_destination_resumes_does_nothing_or_refuses_as_documented() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    artifact_with(dir, "a.maif", &["one"]);
    let folder = format!("file://{}/objects", dir.display());
    ok(dir, &["convert", "a.maif", &folder, "--quiet"]);
    ok(dir, &["convert", "a.maif", "b.maif", "--quiet"]);
    let b_sha = sha(&dir.join("b.maif"));

    // The same source again: nothing to do, for both kinds of destination.
    for dest in [folder.as_str(), "b.maif"] {
        let again = json(dir, &["convert", "a.maif", dest, "--json"]);
        assert_eq!(again["already_converted"], true, "{dest}: {again}");
        assert_eq!(again["records_copied"], 0, "{dest}: {again}");
    }
    assert_eq!(sha(&dir.join("b.maif")), b_sha);

    // The source grows by one commit: the folder resumes and copies only the new record;
    // the file, which holds an earlier commit, is refused and left as it was.
    ok(
        dir,
        &[
            "add", "a.maif", "--key", "k.pem", "--type", "TEXT", "--text", "two",
        ],
    );
    let resumed = json(dir, &["convert", "a.maif", &folder, "--json"]);
    assert_eq!(resumed["already_converted"], false, "{resumed}");
    assert_eq!(resumed["records_copied"], 1, "{resumed}");
    ok(dir, &["convert", &folder, "back.maif", "--quiet"]);
    assert_eq!(sha(&dir.join("back.maif")), sha(&dir.join("a.maif")));

    let refused = maif(dir, &["convert", "a.maif", "b.maif"]);
    assert_eq!(refused.status.code(), Some(2), "{}", said(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("already exists"),
        "{}",
        said(&refused)
    );
    assert_eq!(
        sha(&dir.join("b.maif")),
        b_sha,
        "the refusal changed b.maif"
    );

    // Another artifact into the folder: `already exists`, and the folder is unchanged.
    artifact_with(dir, "other.maif", &["other"]);
    let before = ids_listed(dir, &folder);
    let refused = maif(dir, &["convert", "other.maif", &folder]);
    assert!(!refused.status.success(), "{}", said(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("already exists"),
        "{}",
        said(&refused)
    );
    assert_eq!(ids_listed(dir, &folder), before);
}

/// docs/OBJECT-LAYOUT.md:360-362: a single file stored as one object cannot be created or
/// appended to, with the message the document quotes; it can be read.
#[test]
fn a_single_file_stored_as_one_object_refuses_create_and_add() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let ids = artifact_with(dir, "a.maif", &["kept"]);
    std::fs::create_dir(dir.join("store")).expect("dir");
    let one = format!("file://{}/store/one.maif", dir.display());
    ok(dir, &["convert", "a.maif", &one, "--quiet"]);
    assert_eq!(ok(dir, &["cat", &one, &ids[0]]), "kept");
    let message = "a single file stored as one object cannot be changed in place";
    let stored = std::fs::read(dir.join("store/one.maif")).expect("read");
    let add = maif(
        dir,
        &[
            "add", &one, "--key", "k.pem", "--type", "TEXT", "--text", "more",
        ],
    );
    assert_eq!(add.status.code(), Some(2), "{}", said(&add));
    assert!(
        String::from_utf8_lossy(&add.stderr).contains(message),
        "{}",
        said(&add)
    );
    assert!(std::fs::read(dir.join("store/one.maif")).expect("read") == stored);
    let fresh = format!("file://{}/store/new.maif", dir.display());
    let create = maif(dir, &["create", &fresh, "--key", "k.pem", "--agent", "a"]);
    assert_eq!(create.status.code(), Some(2), "{}", said(&create));
    assert!(
        String::from_utf8_lossy(&create.stderr).contains(message),
        "{}",
        said(&create)
    );
    assert!(!dir.join("store/new.maif").exists());
}

/// The newest commit of a folder, by the `latest` hint.
fn hint(objects: &Path) -> String {
    std::fs::read_to_string(objects.join("latest")).expect("latest hint")
}

/// docs/OBJECT-LAYOUT.md:16-17 and :76-82 (the `latest` hint holds the newest commit number
/// in decimal, is written after every commit on a local folder, may lag and is trusted only
/// as a starting point), :91 (a hint that does not parse or names no commit: LIST all of
/// `commits/`; then HEAD forward while commits exist), :208 (a hint naming an older commit:
/// readers HEAD forward; the next writer appends after the new commit and writes the hint)
/// and :279 (`latest` is expected and not reported by verify).
#[test]
fn a_folder_is_read_right_whatever_its_latest_hint_says() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let objects = dir.join("objects");
    let folder = format!("file://{}", objects.display());
    let mut ids = artifact_with(dir, &folder, &["one", "two", "three"]);
    // create is commit 0, then one commit per add.
    assert_eq!(hint(&objects), "3");
    let clean = json(dir, &["verify", &folder, "--json"]);
    assert_eq!(clean["valid"], true, "{clean}");
    assert!(
        !clean.to_string().contains("latest"),
        "verify reported the hint: {clean}"
    );

    for (next, (what, hint_bytes)) in (4u64..).zip([
        ("lagging", Some("1")),
        ("lagging to commit 0", Some("0")),
        ("ahead of every commit", Some("9")),
        ("not a number", Some("newest")),
        ("empty", Some("")),
        ("missing", None),
    ]) {
        match hint_bytes {
            Some(text) => std::fs::write(objects.join("latest"), text).expect("write hint"),
            None => std::fs::remove_file(objects.join("latest")).expect("remove hint"),
        }
        assert_eq!(ids_listed(dir, &folder), ids, "hint {what}: ls");
        assert_eq!(ok(dir, &["cat", &folder, &ids[0]]), "one", "hint {what}");
        let report = json(dir, &["verify", &folder, "--json"]);
        assert_eq!(report["valid"], true, "hint {what}: {report}");
        assert_eq!(
            report["record_count"],
            ids.len() as u64,
            "hint {what}: {report}"
        );
        // The next writer appends after the newest commit and writes the hint.
        let added = json(
            dir,
            &[
                "add", &folder, "--key", "k.pem", "--type", "TEXT", "--text", what, "--json",
            ],
        );
        ids.push(added["block_id"].as_str().expect("id").to_string());
        assert_eq!(hint(&objects), next.to_string(), "hint {what}");
        assert!(
            objects
                .join(format!("commits/{:020}", u64::MAX - next))
                .is_file(),
            "hint {what}: commit {next} is not where the layout puts it"
        );
        assert_eq!(ids_listed(dir, &folder), ids, "hint {what}: after the add");
    }
}

/// docs/OBJECT-LAYOUT.md:63-65 ("A name counts as a commit only if it is exactly 20 ASCII
/// digits") and :276 (any other key under the prefix is a `storage` warning, `object KEY is
/// not part of the artifact layout`): stray names under `commits/` of a folder do not
/// change which commit is the newest, even when the hint is gone and the folder is listed.
#[test]
fn names_under_commits_that_are_not_20_digits_are_not_commits() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let objects = dir.join("objects");
    let folder = format!("file://{}", objects.display());
    let ids = artifact_with(dir, &folder, &["one", "two"]);
    let strays = [
        "1",
        "0000000000000000000",
        "000000000000000000000",
        "1844674407370955161x",
        "18446744073709551613.tmp",
    ];
    for name in strays {
        std::fs::write(objects.join("commits").join(name), b"not a commit").expect("stray");
    }
    for hint_present in [true, false] {
        if !hint_present {
            std::fs::remove_file(objects.join("latest")).expect("remove hint");
        }
        assert_eq!(
            ids_listed(dir, &folder),
            ids,
            "hint present: {hint_present}"
        );
        assert_strays_are_warnings(&json(dir, &["verify", &folder, "--json"]), &strays);
    }
    let added = json(
        dir,
        &[
            "add", &folder, "--key", "k.pem", "--type", "TEXT", "--text", "three", "--json",
        ],
    );
    assert!(
        objects
            .join(format!("commits/{:020}", u64::MAX - 3))
            .is_file(),
        "the append did not make commit 3: {added}"
    );
}

/// docs/OBJECT-LAYOUT.md:206 (a crash while records upload, before the commit create:
/// "some record objects of the append"; readers see the last commit; `verify` warns about
/// each as an orphan, `no commit references it`; the next writer appends after the last
/// commit), :276 (the orphan is a warning, not a problem) and :288-300 (`maif gc` deletes
/// record objects no commit references, only those older than the grace period; younger
/// ones are kept as `young_orphans`). The crash state is made exactly: the record object an
/// append uploaded, without the commit object that would have named it.
#[test]
fn the_records_of_an_append_that_never_committed_are_orphans_until_gc() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let objects = dir.join("objects");
    let folder = format!("file://{}", objects.display());
    let ids = artifact_with(dir, &folder, &["one"]);
    // The same folder with one more append, made in a copy: its new record object is what
    // a crash before the commit create leaves behind.
    let copy = dir.join("copy");
    copy_dir(&objects, &copy);
    let copy_url = format!("file://{}", copy.display());
    ok(
        dir,
        &[
            "add", &copy_url, "--key", "k.pem", "--type", "TEXT", "--text", "lost",
        ],
    );
    let before: Vec<_> = names(&objects.join("blocks"));
    let orphans: Vec<String> = names(&copy.join("blocks"))
        .into_iter()
        .filter(|name| !before.contains(name))
        .collect();
    assert_eq!(orphans.len(), 1, "{orphans:?}");
    let orphan = &orphans[0];
    std::fs::copy(
        copy.join("blocks").join(orphan),
        objects.join("blocks").join(orphan),
    )
    .expect("copy record");

    assert_eq!(ids_listed(dir, &folder), ids, "readers see the last commit");
    let report = json(dir, &["verify", &folder, "--json"]);
    assert_eq!(
        report["valid"], true,
        "an orphan is only a warning: {report}"
    );
    assert!(
        report["warnings"]
            .as_array()
            .expect("warnings")
            .iter()
            .any(|w| {
                let text = w.to_string();
                text.contains(orphan.as_str()) && text.contains("no commit references it")
            }),
        "{report}"
    );

    // The next writer appends after the last commit.
    let added = json(
        dir,
        &[
            "add", &folder, "--key", "k.pem", "--type", "TEXT", "--text", "two", "--json",
        ],
    );
    let mut expected = ids.clone();
    expected.push(added["block_id"].as_str().expect("id").to_string());
    assert_eq!(ids_listed(dir, &folder), expected);
    assert!(
        objects
            .join(format!("commits/{:020}", u64::MAX - 2))
            .is_file()
    );

    // gc: within the default grace period of 7 days the orphan is young and kept; with no
    // grace period it is deleted, and nothing any commit references is.
    let kept = json(dir, &["gc", &folder, "--json"]);
    assert_eq!(kept["young_orphans"], 1, "{kept}");
    assert!(objects.join("blocks").join(orphan).is_file());
    let dry = json(
        dir,
        &["gc", &folder, "--older-than", "0", "--dry-run", "--json"],
    );
    assert!(dry.to_string().contains(orphan.as_str()), "{dry}");
    assert!(
        objects.join("blocks").join(orphan).is_file(),
        "--dry-run deleted"
    );
    let collected = json(dir, &["gc", &folder, "--older-than", "0", "--json"]);
    assert!(
        collected.to_string().contains(orphan.as_str()),
        "{collected}"
    );
    assert!(!objects.join("blocks").join(orphan).exists());
    let after = json(dir, &["verify", &folder, "--json"]);
    assert_eq!(after["valid"], true, "{after}");
    assert_eq!(after["warnings"], serde_json::json!([]), "{after}");
    assert_eq!(ids_listed(dir, &folder), expected);
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target: PathBuf = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

/// README.md:228 ("`maif recover DAMAGED OUT` never modifies its source"), in both modes.
#[test]
fn recover_never_modifies_its_source() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    artifact_with(dir, "a.maif", &["one", "two", "three"]);
    let full = std::fs::read(dir.join("a.maif")).expect("read");
    // Torn inside the last segment: committed-state mode, no key.
    std::fs::write(dir.join("torn.maif"), &full[..full.len() - 200]).expect("write");
    let torn_sha = sha(&dir.join("torn.maif"));
    ok(dir, &["recover", "torn.maif", "fixed.maif"]);
    assert_eq!(sha(&dir.join("torn.maif")), torn_sha);
    // A damaged middle segment: re-signed mode, with the key.
    let commits = json(dir, &["inspect", "a.maif", "--json"])["commits"].clone();
    let middle = commits[2]["segment_offset"].as_u64().expect("offset") as usize;
    let mut damaged = full.clone();
    damaged[middle + 100] ^= 0x20;
    std::fs::write(dir.join("damaged.maif"), &damaged).expect("write");
    let refused = maif(dir, &["recover", "damaged.maif", "nokey.maif"]);
    assert_eq!(refused.status.code(), Some(2), "{}", said(&refused));
    assert!(std::fs::read(dir.join("damaged.maif")).expect("read") == damaged);
    ok(
        dir,
        &["recover", "damaged.maif", "fixed2.maif", "--key", "k.pem"],
    );
    assert!(std::fs::read(dir.join("damaged.maif")).expect("read") == damaged);
    assert_eq!(
        json(dir, &["verify", "fixed2.maif", "--json"])["valid"],
        true
    );
}

/// README.md:166-169 (`compact`: "With one run or none it does nothing"): a fresh artifact
/// and one already compacted are left byte for byte as they were.
#[test]
fn compact_with_one_run_or_none_does_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    artifact_with(dir, "a.maif", &[]);
    let empty = sha(&dir.join("a.maif"));
    ok(dir, &["compact", "a.maif", "--key", "k.pem"]);
    assert_eq!(sha(&dir.join("a.maif")), empty, "no run: nothing to do");

    artifact_with(dir, "b.maif", &["one"]);
    let one_run = sha(&dir.join("b.maif"));
    ok(dir, &["compact", "b.maif", "--key", "k.pem"]);
    assert_eq!(sha(&dir.join("b.maif")), one_run, "one run: nothing to do");
}

/// README.md:152-154 (`--file -` at most once; `--update` takes one `--text` or one
/// `--file`) and :174-179 (usage errors are exit 2; a write that exits 2 did not land).
#[test]
fn add_usage_rules_are_exit_2_and_write_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let ids = artifact_with(dir, "a.maif", &["one"]);
    std::fs::write(dir.join("x.bin"), b"x").expect("write");
    std::fs::write(dir.join("y.bin"), b"y").expect("write");
    let before = sha(&dir.join("a.maif"));
    let base = ["add", "a.maif", "--key", "k.pem", "--type", "BINA"];
    for extra in [
        &["--file", "-", "--file", "-"][..],
        &[
            "--update",
            ids[0].as_str(),
            "--file",
            "x.bin",
            "--file",
            "y.bin",
        ][..],
    ] {
        let args: Vec<&str> = base.iter().copied().chain(extra.iter().copied()).collect();
        let out = maif(dir, &args);
        assert_eq!(out.status.code(), Some(2), "maif {args:?}: {}", said(&out));
        assert_eq!(sha(&dir.join("a.maif")), before, "maif {args:?} wrote");
    }
}

/// README.md:174-179 ("a file of a MAIF version this build does not read" is exit 2) and
/// docs/MIGRATION.md:40-42 (a file starting with `MAIF 03` is already canonical and
/// `maif migrate` refuses it, naming `maif convert`).
#[test]
fn migrate_refuses_a_canonical_file_and_names_convert() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    artifact_with(dir, "a.maif", &["one"]);
    let before = sha(&dir.join("a.maif"));
    let out = maif(dir, &["migrate", "a.maif", "out.maif", "--key", "k.pem"]);
    assert_eq!(out.status.code(), Some(2), "{}", said(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("already a canonical MAIF 3.") && stderr.contains("maif convert"),
        "{}",
        said(&out)
    );
    assert!(!dir.join("out.maif").exists());
    assert_eq!(sha(&dir.join("a.maif")), before);
}

/// README.md:174-177 read with README.md:63 ("`ls` … metadata"): `ls` prints each block's
/// metadata from its record. When that record was altered, `ls` should refuse the
/// artifact (exit 1) rather than print the altered metadata as committed.
#[test]
fn ls_refuses_a_record_whose_metadata_was_altered() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    ok(dir, &["keygen", "k.pem"]);
    ok(dir, &["create", "a.maif", "--key", "k.pem", "--agent", "a"]);
    ok(
        dir,
        &[
            "add",
            "a.maif",
            "--key",
            "k.pem",
            "--type",
            "TEXT",
            "--text",
            "hello",
            "--meta",
            "owner=alice",
        ],
    );
    let mut bytes = std::fs::read(dir.join("a.maif")).expect("read");
    let at = bytes
        .windows(5)
        .position(|w| w == b"alice")
        .expect("metadata in the record");
    bytes[at..at + 5].copy_from_slice(b"mallo");
    std::fs::write(dir.join("a.maif"), &bytes).expect("write");
    for args in [
        &["ls", "a.maif"][..],
        &["ls", "a.maif", "--json"][..],
        &["ls", "a.maif", "--meta", "owner=mallo"][..],
    ] {
        let out = maif(dir, args);
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("mallo"),
            "maif {args:?} printed the altered metadata as committed: {}",
            said(&out)
        );
        assert_eq!(out.status.code(), Some(1), "maif {args:?}: {}", said(&out));
    }
    assert_eq!(maif(dir, &["verify", "a.maif"]).status.code(), Some(1));

    // Above CHECKED_METADATA_MAX (4 MiB) a record's metadata is read on its own: `ls` says
    // which blocks it could not check, on stderr and per row in --json, and checks the rest.
    ok(dir, &["create", "b.maif", "--key", "k.pem", "--agent", "a"]);
    std::fs::write(dir.join("big.bin"), vec![7u8; 5 << 20]).expect("write");
    for (file, owner) in [("big.bin", "big"), ("k.pem", "small")] {
        ok(
            dir,
            &[
                "add",
                "b.maif",
                "--key",
                "k.pem",
                "--type",
                "BINA",
                "--file",
                file,
                "--meta",
                &format!("owner={owner}"),
            ],
        );
    }
    let out = maif(dir, &["ls", "b.maif", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let checked: Vec<(String, bool)> = rows
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r["metadata"]["owner"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                r["metadata_checked"].as_bool().expect("metadata_checked"),
            )
        })
        .collect();
    assert_eq!(
        checked,
        [("big".to_string(), false), ("small".to_string(), true)]
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("1 block(s) larger than 4 MiB"),
        "{}",
        said(&out)
    );
}

/// README.md:13-14 ("every `add` is durable when it returns; a crash at any moment leaves
/// the append in flight either absent or whole"), :216-223 (what a crash leaves after the
/// newest commit: a complete signed commit whose trailer was lost is used, `verify` warns
/// and the next append writes its trailer back; an interrupted append is ignored, `verify`
/// warns and the next append discards it) and :61 (`add --id` is safe to re-run), through
/// the binary: `maif add` is aborted at each step of a single-file commit
/// (`MAIF_TEST_CRASH_AT`, src/store/mod.rs).
#[test]
fn a_maif_add_crashed_at_any_step_leaves_its_block_absent_or_whole() {
    // (crash point, whether the commit is whole when the process stops there)
    let points = [
        ("begin:examined", false),
        ("append:records-written", false),
        ("append:segment-half-written", false),
        // From here the records and the whole signed segment are written: only the trailer
        // may be missing or torn, which readers complete (README.md:218-220).
        ("append:segment-written", true),
        ("append:phase-1-synced", true),
        ("append:trailer-half-written", true),
        ("append:trailer-written", true),
        ("append:phase-2-synced", true),
    ];
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let id = "3f2b1c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d";
    for (n, (point, whole)) in points.into_iter().enumerate() {
        let file = format!("crash-{n}.maif");
        let first = artifact_with(dir, &file, &["before the crash"]);
        let committed = std::fs::read(dir.join(&file)).expect("read");
        let crashed = Command::new(env!("CARGO_BIN_EXE_maif"))
            .current_dir(dir)
            .env("MAIF_TEST_CRASH_AT", point)
            .args([
                "add",
                &file,
                "--key",
                "k.pem",
                "--type",
                "TEXT",
                "--text",
                "in flight",
                "--id",
                id,
            ])
            .output()
            .expect("run maif");
        assert!(
            !crashed.status.success()
                && String::from_utf8_lossy(&crashed.stderr).contains("MAIF_TEST_CRASH_AT"),
            "{point}: the add was not stopped there: {}",
            said(&crashed)
        );
        let after = std::fs::read(dir.join(&file)).expect("read");
        assert!(
            after.starts_with(&committed),
            "{point}: committed bytes changed"
        );

        let listed = ids_listed(dir, &file);
        let mut expected = first.clone();
        if whole {
            expected.push(id.to_string());
            assert_eq!(ok(dir, &["cat", &file, id]), "in flight", "{point}");
        }
        assert_eq!(
            listed, expected,
            "{point}: the block is not absent or whole"
        );
        let report = json(dir, &["verify", &file, "--json"]);
        assert_eq!(report["valid"], true, "{point}: {report}");
        // Once the whole trailer is written the commit is complete: nothing follows it.
        let leftovers = after.len() > committed.len()
            && !matches!(point, "append:trailer-written" | "append:phase-2-synced");
        assert_eq!(
            report["warnings"].as_array().expect("warnings").is_empty(),
            !leftovers,
            "{point}: verify warns exactly when bytes follow the newest commit: {report}"
        );

        // The re-run with the same id is done once; the next append leaves a clean file.
        ok(
            dir,
            &[
                "add",
                &file,
                "--key",
                "k.pem",
                "--type",
                "TEXT",
                "--text",
                "in flight",
                "--id",
                id,
            ],
        );
        let next = json(
            dir,
            &[
                "add", &file, "--key", "k.pem", "--type", "TEXT", "--text", "next", "--json",
            ],
        );
        let mut expected = first;
        expected.push(id.to_string());
        expected.push(next["block_id"].as_str().expect("id").to_string());
        assert_eq!(
            ids_listed(dir, &file),
            expected,
            "{point}: after the re-run"
        );
        assert_eq!(ok(dir, &["cat", &file, id]), "in flight", "{point}");
        let report = json(dir, &["verify", &file, "--json"]);
        assert_eq!(report["valid"], true, "{point}: {report}");
        assert_eq!(
            report["warnings"],
            serde_json::json!([]),
            "{point}: leftovers survived the next append: {report}"
        );
        let fixed = std::fs::read(dir.join(&file)).expect("read");
        if whole {
            // README.md:10 and :204: nothing written is ever rewritten.
            assert!(
                fixed.starts_with(&after),
                "{point}: the completed commit was rewritten"
            );
        }
    }
}

/// The id line `line` of [`write_thirty_lines`] names.
fn line_id(line: usize) -> String {
    format!("00000000-0000-4000-8000-{line:012x}")
}

/// Writes `lines.jsonl` in `dir`: 30 TEXT lines (`line N`), each naming its id.
fn write_thirty_lines(dir: &Path) {
    let lines: String = (1..=30)
        .map(|n| {
            format!(
                "{{\"type\":\"TEXT\",\"text\":\"line {n}\",\"id\":\"{}\"}}\n",
                line_id(n)
            )
        })
        .collect();
    std::fs::write(dir.join("lines.jsonl"), lines).expect("write lines");
}

/// `maif import FILE` of `lines.jsonl`, a commit every 10 lines, with the test hook
/// `(variable, value)` set if given.
fn import_lines(dir: &Path, file: &str, hook: Option<(&str, String)>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_maif"));
    command.current_dir(dir).args([
        "import",
        file,
        "--key",
        "k.pem",
        "--jsonl",
        "lines.jsonl",
        "--commit-every",
        "10",
        "--quiet",
    ]);
    if let Some((variable, value)) = hook {
        command.env(variable, value);
    }
    command.output().expect("run maif")
}

/// `maif import` makes each commit durable while it signs the next lines (one commit in
/// flight, `ArtifactWriter::start_commit`), and promises that the bytes in the file still go
/// through the states of the sequential protocol (FORMAT.md 13.2): the records of the next
/// commit reach the file only once the commit before them is durable. Stopped at each step
/// of its second commit, the file ends where that step leaves it, with none of the later
/// lines in it: the second commit is absent or whole, the first is there, `verify` warns only
/// about the commit in flight, and a re-run (every line names its id) imports the rest once.
#[test]
fn a_maif_import_stopped_in_an_overlapped_commit_holds_no_line_after_it() {
    // (crash point, whether the second commit is whole there, the warning verify gives)
    let points = [
        (
            "append:records-written",
            false,
            Some("after the newest commit are not committed"),
        ),
        ("append:segment-written", true, Some("no complete trailer")),
        ("append:phase-1-synced", true, Some("no complete trailer")),
        ("append:trailer-written", true, None),
        ("append:phase-2-synced", true, None),
    ];
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let id = line_id;
    write_thirty_lines(dir);
    let import = |file: &str, crash_at: Option<&str>| {
        import_lines(
            dir,
            file,
            crash_at.map(|point| ("MAIF_TEST_CRASH_AT", format!("{point}@2"))),
        )
    };
    for (n, (point, whole, warning)) in points.into_iter().enumerate() {
        let file = format!("import-{n}.maif");
        let before = artifact_with(dir, &file, &["before the import"]);
        let crashed = import(&file, Some(point));
        assert!(
            !crashed.status.success()
                && String::from_utf8_lossy(&crashed.stderr).contains("MAIF_TEST_CRASH_AT"),
            "{point}: the import was not stopped there: {}",
            said(&crashed)
        );
        let mut expected = before.clone();
        expected.extend((1..=if whole { 20 } else { 10 }).map(id));
        assert_eq!(ids_listed(dir, &file), expected, "{point}: lines listed");
        let report = json(dir, &["verify", &file, "--json"]);
        assert_eq!(report["valid"], true, "{point}: {report}");
        let warnings = report["warnings"].as_array().expect("warnings");
        match warning {
            // One warning, about the commit in flight: no bytes of a later line follow it.
            Some(expected) => assert!(
                warnings.len() == 1 && warnings[0].to_string().contains(expected),
                "{point}: expected only a warning saying {expected:?}: {report}"
            ),
            None => assert!(warnings.is_empty(), "{point}: {report}"),
        }

        let rerun = import(&file, None);
        assert!(rerun.status.success(), "{point}: re-run: {}", said(&rerun));
        let mut expected = before;
        expected.extend((1..=30).map(id));
        assert_eq!(
            ids_listed(dir, &file),
            expected,
            "{point}: after the re-run"
        );
        assert_eq!(ok(dir, &["cat", &file, &id(30)]), "line 30", "{point}");
        let report = json(dir, &["verify", &file, "--json"]);
        assert_eq!(report["valid"], true, "{point}: {report}");
        assert_eq!(
            report["warnings"],
            serde_json::json!([]),
            "{point}: {report}"
        );
    }
}

/// The truthful-outcome promise of `maif import` (README: "lines count as committed only once
/// their commit is durable: a failure reports exactly those") when a commit fails while the
/// next one is already handed over: the second commit's phase-1 `fdatasync` fails
/// (`MAIF_TEST_FAIL_AT`, src/store/mod.rs). The import names lines 1-10 as committed and
/// exits 2 (an I/O error, not damage); the file holds exactly the first commit (the failed one and the one after it cut
/// or never written); a re-run imports the rest once.
#[test]
fn a_maif_import_whose_commit_fails_reports_exactly_the_durable_lines() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let id = line_id;
    write_thirty_lines(dir);
    let before = artifact_with(dir, "fail.maif", &["before the import"]);
    let import = |fail: bool| {
        import_lines(
            dir,
            "fail.maif",
            fail.then(|| ("MAIF_TEST_FAIL_AT", "append:phase-1-sync@2".to_string())),
        )
    };
    let failed = import(true);
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert_eq!(failed.status.code(), Some(2), "{}", said(&failed));
    assert!(
        stderr.contains("lines 1-10 of lines.jsonl are committed (1 commits)")
            && stderr.contains("MAIF_TEST_FAIL_AT"),
        "{}",
        said(&failed)
    );
    let mut expected = before.clone();
    expected.extend((1..=10).map(id));
    assert_eq!(ids_listed(dir, "fail.maif"), expected);
    let report = json(dir, &["verify", "fail.maif", "--json"]);
    assert_eq!(report["valid"], true, "{report}");
    assert_eq!(report["warnings"], serde_json::json!([]), "{report}");

    let rerun = import(false);
    assert!(rerun.status.success(), "re-run: {}", said(&rerun));
    let mut expected = before;
    expected.extend((1..=30).map(id));
    assert_eq!(ids_listed(dir, "fail.maif"), expected, "after the re-run");
    let report = json(dir, &["verify", "fail.maif", "--json"]);
    assert_eq!(report["valid"], true, "{report}");
    assert_eq!(report["warnings"], serde_json::json!([]), "{report}");
}

/// README (import): "The import holds the file's write lock until its last commit, so a
/// `maif add` run meanwhile waits, then appends after it", as a user meets it: an import of
/// 20,000 lines (a commit every 1,000, each overlapped with the next lines) in one process
/// and, once it has begun writing, `maif add` in another. Both succeed, and the file holds
/// every line and the added block, once each, and verifies.
#[test]
fn a_maif_add_during_an_import_waits_and_loses_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let first = artifact_with(dir, "busy.maif", &["first"]);
    let lines: String = (1..=20_000)
        .map(|n| format!("{{\"type\":\"TEXT\",\"text\":\"line {n}\"}}\n"))
        .collect();
    std::fs::write(dir.join("big.jsonl"), lines).expect("write lines");
    let size_before = std::fs::metadata(dir.join("busy.maif"))
        .expect("metadata")
        .len();
    let import = Command::new(env!("CARGO_BIN_EXE_maif"))
        .current_dir(dir)
        .args([
            "import",
            "busy.maif",
            "--key",
            "k.pem",
            "--jsonl",
            "big.jsonl",
            "--commit-every",
            "1000",
            "--quiet",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the import");
    // Once the file grows, the import holds the lock.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::fs::metadata(dir.join("busy.maif")).map_or(0, |m| m.len()) == size_before
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let added = json(
        dir,
        &[
            "add",
            "busy.maif",
            "--key",
            "k.pem",
            "--type",
            "TEXT",
            "--text",
            "meanwhile",
            "--json",
        ],
    );
    let added_id = added["block_id"].as_str().expect("block_id").to_string();
    let imported = import.wait_with_output().expect("wait for the import");
    assert!(imported.status.success(), "import: {}", said(&imported));

    let listed = ids_listed(dir, "busy.maif");
    assert_eq!(listed.len(), first.len() + 20_000 + 1, "blocks listed");
    assert_eq!(listed[0], first[0]);
    assert_eq!(
        listed.iter().filter(|id| **id == added_id).count(),
        1,
        "the added block, once"
    );
    assert_eq!(
        listed.last(),
        Some(&added_id),
        "the add waited for the import's last commit and appended after it"
    );
    assert_eq!(ok(dir, &["cat", "busy.maif", &added_id]), "meanwhile");
    let report = json(dir, &["verify", "busy.maif", "--json"]);
    assert_eq!(report["valid"], true, "{report}");
    assert_eq!(report["warnings"], serde_json::json!([]), "{report}");
}

/// Every key under `prefix` in `bucket`, relative to the prefix.
fn s3_keys(bucket: &str, prefix: &str) -> Vec<String> {
    use futures::TryStreamExt;
    use object_store::ObjectStore;
    let store = common::s3::store(bucket);
    let path = object_store::path::Path::from(prefix);
    let mut keys: Vec<String> = common::block_on(store.list(Some(&path)).try_collect::<Vec<_>>())
        .expect("list")
        .into_iter()
        .map(|m| {
            m.location
                .to_string()
                .strip_prefix(&format!("{prefix}/"))
                .expect("under the prefix")
                .to_string()
        })
        .collect();
    keys.sort();
    keys
}

fn maif_s3(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_maif"))
        .current_dir(dir)
        .envs(common::s3::cli_env())
        .args(args)
        .output()
        .expect("run maif")
}

fn ok_s3(dir: &Path, args: &[&str]) -> serde_json::Value {
    let out = maif_s3(dir, args);
    assert!(out.status.success(), "maif {args:?}: {}", said(&out));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("maif {args:?}: {e}: {}", said(&out)))
}

/// README.md:124-128 and docs/OBJECT-LAYOUT.md:11-17, :58-65 and :97-100 (on S3 each record
/// is `blocks/<record digest>`, each commit `commits/<u64::MAX − seq>` in 20 digits, and
/// only local folders get a `latest` hint), through the binary on a real S3 (LocalStack).
#[test]
fn an_s3_artifact_holds_exactly_the_documented_keys_and_no_hint() {
    let bucket = common::s3::bucket("promisekeys");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    ok(dir, &["keygen", "k.pem"]);
    let url = format!("s3://{bucket}/agents/a1");
    let out = maif_s3(dir, &["create", &url, "--key", "k.pem", "--agent", "a1"]);
    assert!(out.status.success(), "{}", said(&out));
    for text in ["one", "two"] {
        ok_s3(
            dir,
            &[
                "add", &url, "--key", "k.pem", "--type", "TEXT", "--text", text, "--json",
            ],
        );
    }
    let listing = ok_s3(dir, &["ls", &url, "--json"]);
    let mut expected: Vec<String> = listing
        .as_array()
        .expect("rows")
        .iter()
        .map(|row| format!("blocks/{}", row["digest"].as_str().expect("digest")))
        .collect();
    // Commits 0, 1 and 2: u64::MAX, u64::MAX − 1, u64::MAX − 2.
    expected.extend(
        [
            "18446744073709551615",
            "18446744073709551614",
            "18446744073709551613",
        ]
        .map(|name| format!("commits/{name}")),
    );
    expected.sort();
    assert_eq!(s3_keys(&bucket, "agents/a1"), expected);
}

/// docs/OBJECT-LAYOUT.md:63-65 ("A name counts as a commit only if it is exactly 20 ASCII
/// digits"), :90 (on S3 "the first key that parses as a commit name is the newest") and
/// :276 (other keys are reported as not part of the layout), on a real S3: keys under
/// `commits/` that sort before every commit name do not hide the newest commit from `ls`,
/// `verify` or the next `add`.
#[test]
fn on_s3_keys_under_commits_that_sort_first_do_not_hide_the_newest_commit() {
    use object_store::ObjectStoreExt;
    let bucket = common::s3::bucket("promisestray");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    ok(dir, &["keygen", "k.pem"]);
    let url = format!("s3://{bucket}/art");
    let out = maif_s3(dir, &["create", &url, "--key", "k.pem", "--agent", "a"]);
    assert!(out.status.success(), "{}", said(&out));
    let mut ids: Vec<String> = ["one", "two"]
        .iter()
        .map(|text| {
            ok_s3(
                dir,
                &[
                    "add", &url, "--key", "k.pem", "--type", "TEXT", "--text", text, "--json",
                ],
            )["block_id"]
                .as_str()
                .expect("id")
                .to_string()
        })
        .collect();
    // Each sorts before "18446744073709551613", the newest commit's name.
    let strays = [
        "0",
        "0000000000000000000",
        "1-notes",
        "00000000000000000000.tmp",
    ];
    let store = common::s3::store(&bucket);
    for name in strays {
        common::block_on(store.put(
            &object_path(&format!("art/commits/{name}")),
            b"not a commit".to_vec().into(),
        ))
        .expect("put stray");
    }
    let listed = |dir: &Path| -> Vec<String> {
        ok_s3(dir, &["ls", &url, "--json"])
            .as_array()
            .expect("rows")
            .iter()
            .map(|row| row["id"].as_str().expect("id").to_string())
            .collect()
    };
    assert_eq!(listed(dir), ids);
    assert_strays_are_warnings(&ok_s3(dir, &["verify", &url, "--json"]), &strays);
    let added = ok_s3(
        dir,
        &[
            "add", &url, "--key", "k.pem", "--type", "TEXT", "--text", "three", "--json",
        ],
    );
    ids.push(added["block_id"].as_str().expect("id").to_string());
    assert_eq!(listed(dir), ids);
    assert!(
        s3_keys(&bucket, "art").contains(&"commits/18446744073709551612".to_string()),
        "the add did not make commit 3"
    );
}

fn object_path(key: &str) -> object_store::path::Path {
    object_store::path::Path::from(key)
}

/// docs/OBJECT-LAYOUT.md:333-334 ("The image is built in `<file>.maif-partial`, under an
/// exclusive lock (a second import of the same file gets a conflict)"): while another
/// holder has the partial file locked, `convert` into that file is refused and publishes
/// nothing. The lock is held by this test, so no timing is involved.
#[test]
fn a_second_conversion_into_the_same_file_gets_a_conflict() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    artifact_with(dir, "a.maif", &["one"]);
    let partial = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join("b.maif.maif-partial"))
        .expect("partial");
    partial.lock().expect("lock the partial file");
    let out = maif(dir, &["convert", "a.maif", "b.maif"]);
    assert_eq!(out.status.code(), Some(2), "{}", said(&out));
    assert!(!dir.join("b.maif").exists(), "a file was published");
    partial.unlock().expect("unlock");
    drop(partial);
    ok(dir, &["convert", "a.maif", "b.maif", "--quiet"]);
    assert_eq!(sha(&dir.join("b.maif")), sha(&dir.join("a.maif")));
}

/// docs/OBJECT-LAYOUT.md:352-355 (a single file stored as one object: "The end must be an
/// intact trailer at its own position … Otherwise the object is torn (`download it and run
/// maif recover`)") and README.md:174-177 (exit 1 for an artifact that fails).
#[test]
fn a_torn_single_object_is_refused_naming_maif_recover() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let ids = artifact_with(dir, "a.maif", &["one", "two"]);
    std::fs::create_dir(dir.join("store")).expect("dir");
    let one = format!("file://{}/store/one.maif", dir.display());
    ok(dir, &["convert", "a.maif", &one, "--quiet"]);
    let bytes = std::fs::read(dir.join("store/one.maif")).expect("read");
    // Cut inside the last trailer: a file would still be read (README.md:218-220), one object
    // is not.
    std::fs::write(dir.join("store/one.maif"), &bytes[..bytes.len() - 30]).expect("write");
    for args in [
        &["ls", one.as_str()][..],
        &["cat", one.as_str(), &ids[0]][..],
    ] {
        let out = maif(dir, args);
        assert_eq!(out.status.code(), Some(1), "maif {args:?}: {}", said(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("maif recover"),
            "maif {args:?}: {}",
            said(&out)
        );
    }
}

/// docs/OBJECT-LAYOUT.md:270-271 (a record a commit names has no object: problem, `record
/// object KEY is missing`; a commit object between commit 0 and the newest is missing:
/// problem, `commit N: URL: commit object KEY is missing`) and :43 (an object shorter than
/// its index entry says is reported as corrupt), through `maif verify` and `maif cat` on a
/// local folder.
#[test]
fn missing_and_short_objects_in_a_folder_are_named_problems() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    ok(dir, &["keygen", "k.pem"]);
    let layouts: Vec<(PathBuf, String, Vec<String>)> =
        ["missing-record", "short-record", "missing-commit"]
            .iter()
            .map(|name| {
                let objects = dir.join(name);
                let url = format!("file://{}", objects.display());
                let ids = artifact_with(dir, &url, &["one", "two", "three"]);
                (objects, url, ids)
            })
            .collect();
    let digest = |url: &str, n: usize| -> String {
        json(dir, &["ls", url, "--json"])[n]["digest"]
            .as_str()
            .expect("digest")
            .to_string()
    };

    // A record object deleted.
    let (objects, url, ids) = &layouts[0];
    let key = format!("blocks/{}", digest(url, 1));
    std::fs::remove_file(objects.join(&key)).expect("delete record");
    let out = maif(dir, &["verify", url]);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    let text = said(&out);
    assert!(
        text.contains(&format!("record object {}", key_under(objects, &key)))
            || (text.contains(&key) && text.contains("is missing")),
        "{text}"
    );
    let out = maif(dir, &["cat", url, &ids[1]]);
    assert_ne!(out.status.code(), Some(0), "{}", said(&out));
    assert!(out.stdout.is_empty(), "{}", said(&out));

    // A record object cut short.
    let (objects, url, ids) = &layouts[1];
    let key = format!("blocks/{}", digest(url, 1));
    let bytes = std::fs::read(objects.join(&key)).expect("read");
    std::fs::write(objects.join(&key), &bytes[..bytes.len() - 10]).expect("write");
    let out = maif(dir, &["cat", url, &ids[1]]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "corrupt is exit 1: {}",
        said(&out)
    );
    assert!(out.stdout.is_empty(), "{}", said(&out));
    assert_eq!(maif(dir, &["verify", url]).status.code(), Some(1));

    // Commit 1's object deleted, commits 0, 2 and 3 remaining.
    let (objects, url, _) = &layouts[2];
    let key = format!("commits/{:020}", u64::MAX - 1);
    std::fs::remove_file(objects.join(&key)).expect("delete commit");
    let out = maif(dir, &["verify", url]);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    let text = said(&out);
    assert!(
        text.contains("commit 1") && text.contains(&key) && text.contains("is missing"),
        "{text}"
    );
}

/// The name a store error uses for `key` of the folder `objects` (the document writes KEY).
fn key_under(objects: &Path, key: &str) -> String {
    format!("{}/{key}", objects.display())
}

/// The worked example of FORMAT.md 18.8, rebuilt from its xxd dump.
fn worked_example_file() -> Vec<u8> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let doc = std::fs::read_to_string(root.join("docs/FORMAT.md")).expect("FORMAT.md");
    common::worked_example::worked_example_bytes(&doc)
}

/// docs/OBJECT-LAYOUT.md:20-28: the worked example of FORMAT.md 18, converted with `maif
/// convert small.maif file:///…`, is exactly the objects of the document's table (key,
/// size, the image bytes each holds, and the hint), and OBJECT-LAYOUT.md:7-8 / README.md:80
/// (converting back changes nothing).
#[test]
fn the_worked_example_converts_to_the_objects_the_document_lists() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let image = worked_example_file();
    std::fs::write(dir.join("small.maif"), &image).expect("write");
    let objects = dir.join("obj");
    let folder = format!("file://{}", objects.display());
    ok(dir, &["convert", "small.maif", &folder, "--quiet"]);

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let doc = std::fs::read_to_string(root.join("docs/OBJECT-LAYOUT.md")).expect("doc");
    let table: Vec<Vec<String>> = doc
        .split("| key | size | holds | image bytes |")
        .nth(1)
        .expect("the table")
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            l.split('|')
                .map(|c| c.trim().trim_matches('`').to_string())
                .collect()
        })
        .collect();
    assert_eq!(table.len(), 4, "{table:?}");
    let mut listed: Vec<String> = Vec::new();
    for row in &table {
        let (key, size, holds, range) = (&row[1], &row[2], &row[3], &row[4]);
        listed.push(key.clone());
        let body = std::fs::read(objects.join(key)).unwrap_or_else(|e| panic!("{key}: {e}"));
        assert_eq!(body.len().to_string(), *size, "{key}");
        if key == "latest" {
            assert_eq!(&String::from_utf8_lossy(&body), holds.trim_matches('`'));
            continue;
        }
        let (from, to) = range.split_once("..").expect("a byte range");
        let (from, to): (usize, usize) = (from.parse().expect("from"), to.parse().expect("to"));
        assert!(body == image[from..to], "{key} is not image bytes {range}");
    }
    // Nothing else is in the folder.
    let mut present: Vec<String> = ["blocks", "commits"]
        .iter()
        .flat_map(|sub| {
            names(&objects.join(sub))
                .into_iter()
                .map(move |n| format!("{sub}/{n}"))
        })
        .collect();
    present.push("latest".into());
    present.sort();
    listed.sort();
    assert_eq!(present, listed);
    assert_eq!(names(&objects), ["blocks", "commits", "latest"]);

    ok(dir, &["convert", &folder, "back.maif", "--quiet"]);
    assert!(std::fs::read(dir.join("back.maif")).expect("read") == image);
}

fn cat_bytes(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = maif(dir, args);
    assert!(out.status.success(), "maif {args:?}: {}", said(&out));
    out.stdout
}

/// README.md:144-148 and FORMAT.md 4.8 (TEXT, EMBD and IMAG get the typed framing laid out
/// in 4.8.1-4.8.3; `maif cat` prints the content without it, `maif cat --raw` the framed
/// data; other types have none) and FORMAT.md 4.8.1 ("The CLI's `--lang` accepts only two
/// lowercase letters"). The framed bytes are built here from the document's tables.
#[test]
fn cat_strips_the_typed_framing_and_cat_raw_prints_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    artifact_with(dir, "a.maif", &[]);
    let add = |args: &[&str]| -> String {
        let mut all = vec!["add", "a.maif", "--key", "k.pem"];
        all.extend_from_slice(args);
        all.push("--json");
        json(dir, &all)["block_id"]
            .as_str()
            .expect("id")
            .to_string()
    };
    let u32le = |n: u32| n.to_le_bytes().to_vec();

    // TEXT: encoding 0 (UTF-8), the language, the text.
    let text = add(&["--type", "TEXT", "--text", "héllo", "--lang", "en"]);
    let plain = add(&["--type", "TEXT", "--text", "plain"]);
    // EMBD: dimension, count, dtype 0 (float32 LE), 3 reserved zero bytes, the values.
    let values: Vec<u8> = [1.0f32, -2.5, 3.25, 0.5, 8.0, -0.125]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    std::fs::write(dir.join("v.f32"), &values).expect("write");
    let embd = add(&["--type", "EMBD", "--file", "v.f32", "--dim", "3"]);
    // IMAG: format 1 (PNG), 3 reserved zero bytes, width, height (from the IHDR), the file.
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x10\0\0\0\x08\x08\x06\0\0\0".to_vec();
    std::fs::write(dir.join("p.png"), &png).expect("write");
    let imag = add(&["--type", "IMAG", "--file", "p.png"]);
    let bina = add(&["--type", "BINA", "--file", "p.png"]);

    let cases: Vec<(&str, Vec<u8>, Vec<u8>)> = vec![
        (
            &text,
            "héllo".as_bytes().to_vec(),
            [&[0u8, b'e', b'n'][..], "héllo".as_bytes()].concat(),
        ),
        (&plain, b"plain".to_vec(), b"\0\0\0plain".to_vec()),
        (
            &embd,
            values.clone(),
            [u32le(3), u32le(2), vec![0, 0, 0, 0], values.clone()].concat(),
        ),
        (
            &imag,
            png.clone(),
            [vec![1, 0, 0, 0], u32le(16), u32le(8), png.clone()].concat(),
        ),
        (&bina, png.clone(), png.clone()),
    ];
    for (id, content, framed) in cases {
        assert_eq!(cat_bytes(dir, &["cat", "a.maif", id]), content, "cat {id}");
        assert_eq!(
            cat_bytes(dir, &["cat", "a.maif", id, "--raw"]),
            framed,
            "cat --raw {id}"
        );
    }
    let before = sha(&dir.join("a.maif"));
    for lang in ["EN", "e", "eng", "é1"] {
        let out = maif(
            dir,
            &[
                "add", "a.maif", "--key", "k.pem", "--type", "TEXT", "--text", "x", "--lang", lang,
            ],
        );
        assert_eq!(out.status.code(), Some(2), "--lang {lang}: {}", said(&out));
    }
    assert_eq!(sha(&dir.join("a.maif")), before);
}

/// docs/OBJECT-LAYOUT.md:91 (a folder: the hint, then HEAD `commits/<n + 1>` while it
/// exists) and :276 (commit objects numbered above the newest found are a `storage`
/// warning, `object KEY is not part of the artifact layout`): with commit 2's object gone
/// and the hint at 1, the newest commit found is 1 and commit 3's object is reported.
#[test]
fn a_commit_object_above_the_newest_found_is_a_storage_warning_and_above_a_gap_a_problem() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let objects = dir.join("objects");
    let folder = format!("file://{}", objects.display());
    let ids = artifact_with(dir, &folder, &["one", "two", "three"]);
    std::fs::remove_file(objects.join(format!("commits/{:020}", u64::MAX - 2))).expect("rm");
    std::fs::write(objects.join("latest"), "1").expect("hint");
    let out = maif(dir, &["verify", &folder, "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json report");
    assert_eq!(report["newest_commit"], 1, "{report}");
    assert_eq!(report["record_count"], 1, "{report}");
    let above = format!(
        "object commits/{:020} is not part of the artifact layout",
        u64::MAX - 3
    );
    assert!(
        report["warnings"]
            .as_array()
            .expect("warnings")
            .iter()
            .any(|w| w["area"] == "storage"
                && w["reason"].as_str().is_some_and(|r| r.contains(&above))),
        "{report}"
    );
    assert_eq!(ids_listed(dir, &folder), ids[..1]);
    // Commit 3 above the missing commit 2 proves commit objects were removed: verification
    // fails, naming the gap (readers still open commit 1, the newest they can reach).
    assert_eq!(report["valid"], false, "{report}");
    let gap = "commit objects up to commit 3 exist but commit 2 has none";
    assert!(
        report["problems"].as_array().expect("problems").iter().any(
            |p| p["area"] == "storage" && p["reason"].as_str().is_some_and(|r| r.contains(gap))
        ),
        "{report}"
    );
}

/// `report` (of `verify --json`) is valid, counts two records, and warns about each key
/// `commits/NAME` of `strays` as not part of the layout.
fn assert_strays_are_warnings(report: &serde_json::Value, strays: &[&str]) {
    assert_eq!(report["valid"], true, "{report}");
    assert_eq!(report["record_count"], 2, "{report}");
    let warnings = report["warnings"].to_string();
    for name in strays {
        assert!(
            warnings.contains(&format!("commits/{name}"))
                && warnings.contains("not part of the artifact layout"),
            "stray commits/{name} not reported: {report}"
        );
    }
}

/// README.md, `import`: blocks are "committed every `--commit-every` blocks (10,000) or
/// `--commit-bytes` payload bytes (64 MiB)". Ten 100-byte blocks with `--commit-bytes 250`
/// commit once 250 bytes have gathered (after blocks 3, 6 and 9) and once at the end: four
/// commits; with `--commit-every 4`, after blocks 4 and 8 and at the end: three. The commit
/// count is read back from the artifact's history, not only from the summary.
#[test]
fn import_commits_every_n_blocks_or_every_n_payload_bytes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    ok(dir, &["keygen", "k.pem"]);
    // "QUFB…" is base64 of 100 bytes of 'A' (75 bytes of text per 100 bytes of payload).
    let payload = "QUFB".repeat(33) + "QQ==";
    let lines: String = (0..10)
        .map(|_| format!("{{\"type\": \"BINA\", \"base64\": \"{payload}\"}}\n"))
        .collect();
    std::fs::write(dir.join("lines.jsonl"), lines).expect("write");
    for (name, flags, commits) in [
        ("bytes.maif", ["--commit-bytes", "250"], 4),
        ("blocks.maif", ["--commit-every", "4"], 3),
    ] {
        ok(dir, &["create", name, "--key", "k.pem", "--agent", "a"]);
        let mut args = vec![
            "import",
            name,
            "--key",
            "k.pem",
            "--jsonl",
            "lines.jsonl",
            "--no-compact",
            "--json",
        ];
        args.extend(flags);
        let summary = json(dir, &args);
        assert_eq!(summary["blocks"], 10, "{summary}");
        assert_eq!(summary["commits"], commits, "{name}: {summary}");
        let report = json(dir, &["verify", name, "--json"]);
        // Commit 0 is the creation.
        assert_eq!(report["newest_commit"], commits, "{name}: {report}");
        assert_eq!(report["record_count"], 10, "{name}: {report}");
    }
}
