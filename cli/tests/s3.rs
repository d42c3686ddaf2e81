//! The object layout on a real S3 (LocalStack; see `tests/common/s3.rs` for how it is found):
//! the conformance suite, byte-exact parity, concurrent writers and bad input.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;

use common::s3;
use maif_store::artifact::{
    ArtifactReader, ArtifactWriter, ConvertOptions, VerifyOptions, convert, verify,
};
use maif_store::location::Location;
use maif_store::store::{BlockStore, StoreError};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};

fn listing(store: &Arc<dyn ObjectStore>) -> BTreeMap<String, (u64, Option<String>)> {
    use futures::TryStreamExt;
    common::block_on(store.list(None).try_collect::<Vec<_>>())
        .expect("list")
        .into_iter()
        .map(|m| (m.location.to_string(), (m.size, m.e_tag)))
        .collect()
}

#[test]
fn s3_backend_conforms() {
    let bucket = s3::bucket("conformance");
    common::block_on(common::conformance::run_all(
        |name| {
            let prefix = format!("agents/{name}");
            (
                s3::backend(&bucket, &prefix) as Arc<dyn BlockStore>,
                s3::backend(&bucket, &prefix) as Arc<dyn BlockStore>,
            )
        },
        common::conformance::Capabilities {
            append: true,
            records_as_objects: true,
        },
    ));
}

#[test]
fn every_shape_round_trips_through_s3_byte_for_byte() {
    let bucket = s3::bucket("parity");
    let dir = tempfile::tempdir().expect("tempdir");
    for shape in common::parity::SHAPES {
        // file -> S3 -> file
        let direct: Arc<dyn BlockStore> = s3::backend(&bucket, &format!("direct/{shape}"));
        common::block_on(common::parity::round_trip(dir.path(), shape, &[direct]));
        // file -> local folder -> S3 -> file
        let folder = Location::parse(&format!("file://{}/{shape}-folder", dir.path().display()))
            .expect("location")
            .store()
            .expect("store");
        let via: Arc<dyn BlockStore> = s3::backend(&bucket, &format!("via-folder/{shape}"));
        let sub = dir.path().join(format!("via-{shape}"));
        std::fs::create_dir_all(&sub).expect("dir");
        common::block_on(common::parity::round_trip(&sub, shape, &[folder, via]));
    }
}

#[test]
fn two_processes_appending_at_once_both_succeed() {
    let bucket = s3::bucket("writers");
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("key.pem");
    common::test_key().write_pem_file(&key).expect("key");
    let location = format!("s3://{bucket}/agents/shared");
    let maif = env!("CARGO_BIN_EXE_maif");
    let run = |args: &[&str]| {
        let out = Command::new(maif)
            .args(args)
            .envs(s3::cli_env())
            .output()
            .expect("maif");
        assert!(
            out.status.success(),
            "maif {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "create",
        &location,
        "--key",
        key.to_str().expect("path"),
        "--agent",
        "shared",
    ]);
    const PER_WRITER: usize = 50;
    // Each writer logs at info level to its own file: a writer that loses the race for a
    // commit says "commit conflict; retrying" (ArtifactWriter::commit) before it re-links.
    let logs: Vec<std::path::PathBuf> = ["a", "b"]
        .iter()
        .map(|writer| dir.path().join(format!("{writer}.log")))
        .collect();
    let writers: Vec<_> = ["a", "b"]
        .into_iter()
        .zip(&logs)
        .map(|(writer, log)| {
            let script = format!(
                "for i in $(seq 1 {PER_WRITER}); do \"{maif}\" add {location} --key {} --type TEXT --text \"{writer} $i\" || exit 1; done",
                key.display()
            );
            Command::new("bash")
                .args(["-c", &script])
                .envs(s3::cli_env())
                .env("MAIF_LOG", "info")
                .stdout(std::process::Stdio::null())
                .stderr(std::fs::File::create(log).expect("log file"))
                .spawn()
                .expect("spawn writer")
        })
        .collect();
    for (mut writer, log) in writers.into_iter().zip(&logs) {
        let status = writer.wait().expect("wait");
        assert!(
            status.success(),
            "a writer failed: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
    // The race was run: some commits conflicted and were retried on top of the other
    // writer's (a test in which the two loops never overlapped would prove nothing).
    let conflicts: usize = logs
        .iter()
        .map(|log| {
            std::fs::read_to_string(log)
                .expect("log")
                .matches("commit conflict; retrying")
                .count()
        })
        .sum();
    println!("{conflicts} commit conflicts in {} appends", 2 * PER_WRITER);
    assert!(
        conflicts > 0,
        "the two writers never conflicted: the race this test is about did not happen"
    );
    let backend: Arc<dyn BlockStore> = s3::backend(&bucket, "agents/shared");
    let report =
        common::block_on(verify(backend.clone(), VerifyOptions::default())).expect("verify");
    assert!(report.valid, "{:?}", report.problems);
    assert_eq!(
        report.record_count,
        2 * PER_WRITER as u64,
        "every append of both writers is there"
    );
    let reader = common::block_on(ArtifactReader::open(backend)).expect("open");
    let texts: std::collections::HashSet<String> = common::block_on(reader.blocks())
        .expect("list")
        .iter()
        .map(|info| {
            let block = common::block_on(reader.read(info)).expect("read");
            String::from_utf8_lossy(&block.data[3..]).to_string()
        })
        .collect();
    for writer in ["a", "b"] {
        for i in 1..=PER_WRITER {
            assert!(
                texts.contains(&format!("{writer} {i}")),
                "lost {writer} {i}"
            );
        }
    }
}

#[test]
fn verify_reports_missing_wrong_orphaned_and_stray_objects() {
    let bucket = s3::bucket("audit");
    let store = s3::store(&bucket);
    let backend: Arc<dyn BlockStore> = s3::backend(&bucket, "art");
    common::block_on(common::write_small_artifact_to(backend.clone()));
    let blocks = common::block_on(async {
        ArtifactReader::open(backend.clone())
            .await
            .expect("open")
            .blocks()
            .await
            .expect("list")
    });
    let record = |n: usize| {
        ObjectPath::from(format!(
            "art/blocks/{}",
            hex::encode(blocks[n].entry.digest)
        ))
    };
    common::block_on(async {
        store.delete(&record(1)).await.expect("delete");
        let mut bytes = store
            .get(&record(2))
            .await
            .expect("get")
            .bytes()
            .await
            .expect("bytes")
            .to_vec();
        let last = bytes.len() - 70;
        bytes[last] ^= 1;
        store.put(&record(2), bytes.into()).await.expect("put");
        store
            .put(
                &ObjectPath::from("art/blocks/deadbeef"),
                vec![1u8, 2, 3].into(),
            )
            .await
            .expect("put");
        store
            .put(&ObjectPath::from("art/notes.txt"), b"hello".to_vec().into())
            .await
            .expect("put");
    });
    let report = common::block_on(verify(backend, VerifyOptions::default())).expect("verify");
    assert!(!report.valid);
    let text = format!("{:?} {:?}", report.problems, report.warnings);
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.record == Some(1) && p.reason.contains("missing")),
        "{text}"
    );
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.record == Some(2) && p.reason.contains("digest")),
        "{text}"
    );
    assert!(
        report.warnings.iter().any(|w| w
            .reason
            .contains("orphaned record object art/blocks/deadbeef")),
        "{text}"
    );
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.reason.contains("art/notes.txt")),
        "{text}"
    );
}

#[test]
fn bad_input_gives_clear_errors_and_reads_never_write() {
    let bucket = s3::bucket("badinput");
    let store = s3::store(&bucket);
    let backend: Arc<dyn BlockStore> = s3::backend(&bucket, "art");
    common::block_on(common::write_small_artifact_to(backend.clone()));
    let before = listing(&store);

    // Reading and verifying change nothing in the bucket.
    common::block_on(async {
        ArtifactReader::open(backend.clone()).await.expect("open");
        assert!(
            verify(backend.clone(), VerifyOptions::default())
                .await
                .expect("verify")
                .valid
        );
    });
    assert_eq!(listing(&store), before, "a read path wrote to the bucket");

    // Nothing there: not found, naming the location.
    let empty: Arc<dyn BlockStore> = s3::backend(&bucket, "nothing-here");
    let error = common::block_on(empty.latest()).expect_err("no artifact");
    assert!(
        matches!(error, StoreError::NotFound { .. }) && error.to_string().contains("nothing-here"),
        "{error}"
    );

    // A damaged newest commit object: an error naming the object, and nothing falls back.
    let newest_key = before
        .keys()
        .filter(|k| k.contains("/commits/"))
        .min()
        .expect("commit object")
        .clone();
    common::block_on(store.put(
        &ObjectPath::from(newest_key.as_str()),
        b"not a segment".to_vec().into(),
    ))
    .expect("put");
    let error = common::block_on(ArtifactReader::open(backend.clone())).expect_err("damaged");
    assert!(
        error.to_string().contains(&newest_key) && error.to_string().contains("segment"),
        "{error}"
    );
    let report =
        common::block_on(verify(backend.clone(), VerifyOptions::default())).expect("verify");
    assert!(!report.valid);

    // Wrong credentials and a missing bucket: clear errors, not panics.
    let env = |k: &str, v: &str| (k.to_string(), v.to_string());
    let maif = env!("CARGO_BIN_EXE_maif");
    let out = Command::new(maif)
        .args(["ls", "s3://no-such-bucket-maif/x"])
        .envs(s3::cli_env())
        .output()
        .expect("maif");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no-such-bucket-maif"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut wrong = s3::cli_env()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect::<Vec<_>>();
    wrong.push(env("AWS_SECRET_ACCESS_KEY", "wrong"));
    wrong.push(env("AWS_ACCESS_KEY_ID", "AKIAWRONG"));
    let out = Command::new(maif)
        .args(["ls", &format!("s3://{bucket}/art")])
        .envs(wrong)
        .output()
        .expect("maif");
    // LocalStack accepts any credentials by default, so this read may succeed; it must never
    // crash, and on real S3 it fails with exit 2 and the service's message.
    assert!(matches!(out.status.code(), Some(0..=2)), "{out:?}");
}

#[test]
fn conversion_to_and_from_s3_with_the_cli_is_byte_identical() {
    let bucket = s3::bucket("cli");
    let dir = tempfile::tempdir().expect("tempdir");
    let source = dir.path().join("notes.maif");
    common::block_on(common::write_small_artifact(&source));
    let maif = env!("CARGO_BIN_EXE_maif");
    let back = dir.path().join("back.maif");
    let location = format!("s3://{bucket}/agents/notes");
    for args in [
        vec!["convert", source.to_str().expect("p"), &location, "--quiet"],
        vec!["convert", &location, back.to_str().expect("p"), "--quiet"],
        vec!["verify", &location],
        vec!["ls", &location],
    ] {
        let out = Command::new(maif)
            .args(&args)
            .envs(s3::cli_env())
            .output()
            .expect("maif");
        assert!(
            out.status.success(),
            "maif {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(std::fs::read(&source).expect("read") == std::fs::read(&back).expect("read"));
    let report = common::block_on(convert(
        common::file_store(&source),
        s3::backend(&bucket, "agents/notes"),
        ConvertOptions::default(),
    ))
    .expect("reconvert");
    assert!(report.already_converted);
}

#[test]
fn a_single_file_stored_as_one_object_opens_with_one_suffix_read() {
    use maif_store::store::ObjectFile;
    let bucket = s3::bucket("objectfile");
    let dir = tempfile::tempdir().expect("tempdir");
    // (name, blocks, block length, GETs to open): within the suffix; larger than the suffix
    // with a short tail; with a tail longer than the suffix.
    for (name, blocks, block_len, expected_gets) in [
        ("small", 5usize, 100usize, 1usize),
        ("big-blocks", 5, 200_000, 2),
        ("long-tail", 2000, 300, 3),
    ] {
        let source = dir.path().join(format!("{name}.maif"));
        common::block_on(async {
            let mut writer = maif_store::ArtifactWriter::create(
                common::file_store(&source),
                common::test_key(),
                Default::default(),
            )
            .await
            .expect("create");
            for n in 0..blocks {
                writer
                    .add(maif_store::NewBlock::new(
                        maif_store::format::FourCC::BINA,
                        vec![n as u8; block_len],
                    ))
                    .await
                    .expect("add");
            }
            writer.commit().await.expect("commit");
        });
        let counting = common::counting::CountingStore::new(s3::store(&bucket));
        let key = format!("archive/{name}.maif");
        let object: Arc<dyn BlockStore> = Arc::new(ObjectFile::new(
            counting.clone(),
            ObjectPath::from(key.as_str()),
            format!("s3://{bucket}/{key}"),
        ));
        common::block_on(convert(
            common::file_store(&source),
            object.clone(),
            ConvertOptions::default(),
        ))
        .expect("convert");
        // The object is the file, byte for byte.
        let stored = common::block_on(async {
            s3::store(&bucket)
                .get(&ObjectPath::from(key.as_str()))
                .await?
                .bytes()
                .await
        })
        .expect("get");
        assert!(
            stored.as_ref() == std::fs::read(&source).expect("read").as_slice(),
            "{name}: object differs from the file"
        );
        counting.take_gets();
        let reader = common::block_on(ArtifactReader::open(object.clone())).expect("open");
        let opened_with = counting.take_gets();
        // One suffix GET, plus one for the front if the suffix misses it, plus one for the
        // start of the newest segment if the suffix misses that.
        let file_len = stored.len() as u64;
        let suffix_start = file_len.saturating_sub(maif_store::store::object_file::SUFFIX_READ);
        let segment = reader.commit().header().segment_offset;
        let expected = 1 + usize::from(suffix_start > 0) + usize::from(segment < suffix_start);
        assert_eq!(
            opened_with, expected,
            "{name}: {file_len} bytes, newest segment at {segment}"
        );
        assert_eq!(
            expected, expected_gets,
            "{name}: the shape does not exercise what it should"
        );
        let listing = common::block_on(reader.blocks()).expect("list");
        counting.take_gets();
        for info in listing.iter().take(20) {
            common::block_on(object.read_record(&info.entry)).expect("read");
        }
        assert_eq!(
            counting.take_gets(),
            20.min(blocks),
            "{name}: one ranged GET per block"
        );
        let report =
            common::block_on(verify(object.clone(), VerifyOptions::default())).expect("verify");
        assert!(report.valid, "{:?}", report.problems);
        let refused =
            common::block_on(maif_store::ArtifactWriter::open(object, common::test_key()));
        let mut writer = refused.expect("open for append");
        let result = common::block_on(async {
            writer
                .add(maif_store::NewBlock::new(
                    maif_store::format::FourCC::BINA,
                    vec![1],
                ))
                .await?;
            writer.commit().await
        });
        assert!(
            matches!(
                result,
                Err(maif_store::Error::Store(StoreError::Unsupported { .. }))
            ),
            "{name}: appending to a single object must be refused: {result:?}"
        );
    }
}

#[test]
fn records_above_the_multipart_threshold_round_trip_through_s3() {
    let bucket = s3::bucket("multipart");
    let dir = tempfile::tempdir().expect("tempdir");
    let source = dir.path().join("big.maif");
    let len = maif_store::store::object::MULTIPART_THRESHOLD + 5_000_000;
    common::block_on(async {
        let mut writer = maif_store::ArtifactWriter::create(
            common::file_store(&source),
            common::test_key(),
            Default::default(),
        )
        .await
        .expect("create");
        let payload: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
        writer
            .add(maif_store::NewBlock::new(
                maif_store::format::FourCC::VIDE,
                payload,
            ))
            .await
            .expect("add");
        writer
            .add(maif_store::NewBlock::new(
                maif_store::format::FourCC::TEXT,
                b"\0\0\0after".to_vec(),
            ))
            .await
            .expect("add");
        writer.commit().await.expect("commit");
    });
    let remote: Arc<dyn BlockStore> = s3::backend(&bucket, "big");
    let back = dir.path().join("back.maif");
    common::block_on(async {
        convert(
            common::file_store(&source),
            remote.clone(),
            ConvertOptions::default(),
        )
        .await
        .expect("to s3");
        // Uploading again is a no-op, and the multipart object is the record, byte for byte.
        let entry = ArtifactReader::open(remote.clone())
            .await
            .expect("open")
            .blocks()
            .await
            .expect("list")[0]
            .entry;
        let stored = s3::store(&bucket)
            .head(&ObjectPath::from(format!(
                "big/blocks/{}",
                hex::encode(entry.digest)
            )))
            .await
            .expect("record object");
        assert_eq!(stored.size, entry.record_len);
        convert(
            remote.clone(),
            common::file_store(&back),
            ConvertOptions::default(),
        )
        .await
        .expect("from s3");
        assert!(
            verify(remote, VerifyOptions::default())
                .await
                .expect("verify")
                .valid
        );
    });
    assert!(std::fs::read(&source).expect("read") == std::fs::read(&back).expect("read"));
}

/// On a real S3: a single-block append by a fresh writer (what `maif add` does) is a LIST
/// that asks for one key, a ranged GET of the newest commit, the record PUT and the commit
/// PUT, unless it merges index runs that are not in the newest commit; and the newest commit
/// is the one found, after every append.
#[test]
fn a_single_block_append_to_s3_makes_four_requests() {
    let bucket = s3::bucket("requests");
    let counting = common::counting::CountingStore::new_paginated(s3::client(&bucket));
    let lister: Arc<dyn object_store::list::PaginatedListStore> = counting.clone();
    let backend = || -> Arc<dyn BlockStore> {
        Arc::new(
            Arc::unwrap_or_clone(s3::backend_on(counting.clone(), &bucket, "art"))
                .with_first_key_listing(lister.clone()),
        )
    };
    common::block_on(common::write_small_artifact_to(backend()));
    let mut four = 0;
    for n in 0..24u8 {
        counting.take();
        let seq = common::block_on(async {
            let mut writer = ArtifactWriter::open(backend(), common::test_key()).await?;
            writer
                .add(maif_store::NewBlock::new(
                    maif_store::format::FourCC::TEXT,
                    vec![0, 0, 0, n],
                ))
                .await?;
            writer.commit().await?;
            Ok::<_, maif_store::Error>(writer.last_commit().seq())
        })
        .expect("append");
        let r = counting.take();
        assert!(r.lists == 1 && r.puts == 2 && r.heads == 0, "{r:?}");
        four += usize::from(r.total() == 4);
        let reader = common::block_on(ArtifactReader::open(backend())).expect("open");
        assert_eq!(reader.commit().seq(), seq, "the newest commit is found");
    }
    assert!(four >= 18, "only {four} of 24 appends made 4 requests");
}

/// The way a user moves off the legacy S3 layouts: `maif migrate s3://… out.maif`, then
/// `maif export out.maif s3://…/restored --original` puts every legacy object back (same
/// keys under the new prefix, same bodies, same user metadata), for both layouts (A:
/// `mixed`, B: `unified-storage`), all through the CLI against LocalStack.
#[test]
fn maif_migrate_then_export_original_puts_every_legacy_object_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("key.pem");
    common::test_key().write_pem_file(&key).expect("key");
    let maif = env!("CARGO_BIN_EXE_maif");
    for fixture in ["mixed", "unified-storage"] {
        let (bucket, store, prefix) = common::legacy_s3::in_fresh_bucket(fixture);
        let migrated = dir.path().join(format!("{fixture}.maif"));
        let migrated_text = migrated.display().to_string();
        let out = Command::new(maif)
            .args([
                "migrate",
                &format!("s3://{bucket}/{prefix}"),
                &migrated_text,
            ])
            .args(["--key", key.to_str().expect("path"), "--quiet"])
            .envs(s3::cli_env())
            .output()
            .expect("maif migrate");
        assert!(
            out.status.code().is_some_and(|c| c <= 1) && migrated.exists(),
            "maif migrate {fixture}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = Command::new(maif)
            .args(["export", &migrated_text, &format!("s3://{bucket}/restored")])
            .args(["--original", "--json"])
            .envs(s3::cli_env())
            .output()
            .expect("maif export");
        assert!(
            out.status.success(),
            "maif export {fixture}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (source, restored) = common::block_on(async {
            (
                common::legacy_s3::objects_under(&store, &prefix).await,
                common::legacy_s3::objects_under(&store, "restored").await,
            )
        });
        assert_eq!(
            source.len(),
            common::legacy_s3::fixture_keys(fixture).len(),
            "{fixture}: every fixture object is under {prefix}"
        );
        assert_eq!(
            source.keys().collect::<Vec<_>>(),
            restored.keys().collect::<Vec<_>>(),
            "{fixture}: keys"
        );
        for (key, (body, metadata)) in &source {
            let (got_body, got_metadata) = &restored[key];
            assert!(body == got_body, "{fixture} {key}: body differs");
            assert_eq!(metadata, got_metadata, "{fixture} {key}: user metadata");
        }

        // An interrupted export (one object never made it): the same command again keeps
        // what is there and writes the rest.
        let first = restored.keys().next().expect("an object").clone();
        common::block_on(async {
            use object_store::ObjectStoreExt as _;
            store
                .delete(&object_store::path::Path::from(format!("restored/{first}")))
                .await
                .expect("delete");
        });
        let out = Command::new(maif)
            .args(["export", &migrated_text, &format!("s3://{bucket}/restored")])
            .args(["--original", "--json"])
            .envs(s3::cli_env())
            .output()
            .expect("maif export again");
        assert!(
            out.status.success(),
            "maif export {fixture} again: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let summary: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("export --json");
        assert_eq!(
            summary["already_there"],
            source.len() as u64 - 1,
            "{fixture}: {summary}"
        );
        let again = common::block_on(common::legacy_s3::objects_under(&store, "restored"));
        assert!(
            again == restored,
            "{fixture}: the re-run restored every object"
        );
    }
}

/// One `maif` reads the legacy S3 layouts in place on a real S3: `ls`, `cat`, `history`,
/// `inspect` and `verify` on every legacy-s3 fixture prefix give the blocks, payloads and
/// verdicts `maif migrate --dry-run` reports for it, and its exit code; a canonical
/// artifact beside them still reads the canonical way.
#[test]
fn maif_reads_every_legacy_s3_prefix_in_place_as_the_migration_reports_it() {
    let maif = env!("CARGO_BIN_EXE_maif");
    let run = |args: &[&str]| {
        Command::new(maif)
            .args(args)
            .envs(s3::cli_env())
            .output()
            .expect("run maif")
    };
    for fixture in [
        "text-only",
        "mixed",
        "unsigned",
        "v0-pre-unified",
        "two-writers",
        "unified-storage",
    ] {
        let (bucket, _store, prefix) = common::legacy_s3::in_fresh_bucket(fixture);
        let location = format!("s3://{bucket}/{prefix}");
        let dry = run(&["migrate", &location, "--dry-run", "--json", "--quiet"]);
        let report: serde_json::Value = serde_json::from_slice(&dry.stdout).unwrap_or_else(|e| {
            panic!(
                "{fixture}: migration report: {e}\n{}",
                String::from_utf8_lossy(&dry.stderr)
            )
        });
        let listed = run(&["ls", &location, "--json"]);
        assert!(
            listed.status.success(),
            "{fixture}: ls: {}",
            String::from_utf8_lossy(&listed.stderr)
        );
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&listed.stdout).expect("ls JSON");
        let reported = report["blocks"].as_array().expect("report blocks");
        assert_eq!(rows.len(), reported.len(), "{fixture}: blocks");
        for (row, block) in rows.iter().zip(reported) {
            for (ours, theirs) in [
                ("id", "block_id"),
                ("type", "block_type"),
                ("status", "status"),
                ("verdict", "verdict"),
                ("size", "size"),
            ] {
                assert_eq!(row[ours], block[theirs], "{fixture}: {ours} of {row}");
            }
            let (Some(id), Some(version)) = (row["id"].as_str(), row["version"].as_u64()) else {
                continue;
            };
            let payload = run(&["cat", &location, id, "--version", &version.to_string()]);
            assert!(
                payload.status.success(),
                "{fixture}: cat {id}: {}",
                String::from_utf8_lossy(&payload.stderr)
            );
            let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&payload.stdout));
            assert_eq!(
                Some(digest.as_str()),
                block["sha256"].as_str(),
                "{fixture}: {id}"
            );
            let history = run(&["history", &location, id, "--json"]);
            assert!(history.status.success(), "{fixture}: history {id}");
        }
        let inspected = run(&["inspect", &location]);
        assert!(inspected.status.success(), "{fixture}: inspect");
        let verified = run(&["verify", &location]);
        assert_eq!(
            verified.status.code(),
            dry.status.code(),
            "{fixture}: verify exit code is the migration's: {}",
            String::from_utf8_lossy(&verified.stdout)
        );
    }
}
