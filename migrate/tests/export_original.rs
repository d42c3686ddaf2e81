//! `export original`: every legacy fixture, migrated through the library, must come back
//! exactly. Files byte for byte; S3 prefixes (uploaded to a real S3, LocalStack, with their
//! user metadata as `objects.json` records it) object by object: the same keys relative to
//! the prefix, the same bodies, the same user metadata. An artifact that is not a migration,
//! lacks the evidence, or was altered is refused, and nothing is written.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::legacy_s3::{Objects, objects_under, put_object as put, upload};
use common::s3;
use maif_migrate::MigrateError;
use maif_migrate::export::{Destination, ExportOptions, export_original, export_original_to};
use maif_migrate::migrate::{MigrateOptions, migrate};
use maif_migrate::model::{LegacyArtifact, SourceKind};
use maif_migrate::s3::S3Source;
use maif_migrate::source;
use maif_store::format::provenance::Action;
use maif_store::location::{Location, ObjectStoreName, S3Settings, open_object_store};
use maif_store::store::BlockStore;
use maif_store::{ArtifactWriter, CreateOptions, NewBlock, SigningKey};
use object_store::path::Path as ObjectPath;
use object_store::{Attribute, Attributes, GetOptions, ObjectStore, ObjectStoreExt as _};
use serde_json::Value;

fn load_json(path: &Path) -> Value {
    serde_json::from_slice(
        &std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every legacy file fixture: the local formats and every Python SDK file (edge cases too).
fn fixture_files() -> Vec<PathBuf> {
    let root = common::fixtures();
    let mut files = Vec::new();
    for dir in ["legacy-local", "python-sdk", "python-sdk/edge"] {
        for entry in std::fs::read_dir(root.join(dir)).expect("fixture dir") {
            let path = entry.expect("entry").path();
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
            if path.is_file() && (ext == "maif" || ext == "blk") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn file_store(path: &Path) -> Arc<dyn BlockStore> {
    Location::parse(&path.display().to_string())
        .expect("location")
        .store()
        .expect("store")
}

fn options() -> MigrateOptions {
    MigrateOptions {
        key: Some(SigningKey::generate().expect("key")),
        ..MigrateOptions::default()
    }
}

/// Migrates a local legacy file through the library into the canonical file `out`.
async fn migrate_file(file: &Path, out: &Path) {
    let src = source::open(&file.display().to_string(), &S3Settings::default())
        .await
        .expect("open source");
    let artifact = source::read(&src, None, None, &|_| {})
        .await
        .expect("read source");
    let report = migrate(
        artifact,
        source::prefix(&src),
        Some(file_store(out)),
        options(),
    )
    .await
    .expect("migrate");
    assert_eq!(
        report.output_verified,
        Some(true),
        "{}: {:?}",
        file.display(),
        report.output_problems
    );
}

fn export_file_to(out: &Path, destination: &Path, overwrite: bool) -> Result<(), MigrateError> {
    common::block_on(export_original(
        file_store(out),
        &destination.display().to_string(),
        &S3Settings::default(),
        &ExportOptions {
            overwrite,
            ..ExportOptions::default()
        },
    ))
    .map(|summary| {
        assert_eq!(summary.objects, 1);
        assert_eq!(
            Some(summary.bytes),
            std::fs::metadata(destination).ok().map(|m| m.len())
        );
    })
}

#[test]
fn every_legacy_file_comes_back_byte_for_byte() {
    let files = fixture_files();
    assert!(files.len() >= 17, "{files:?}");
    for file in &files {
        let work = tempfile::tempdir().expect("tempdir");
        let out = work.path().join("migrated.maif");
        common::block_on(migrate_file(file, &out));
        let original = std::fs::read(file).expect("fixture");
        let restored = work.path().join("restored.bin");
        let summary = common::block_on(export_original(
            file_store(&out),
            &restored.display().to_string(),
            &S3Settings::default(),
            &ExportOptions::default(),
        ))
        .unwrap_or_else(|e| panic!("{}: export: {e}", file.display()));
        assert_eq!(summary.source, file.display().to_string());
        assert!(!summary.kind.is_s3());
        assert_eq!(summary.bytes, original.len() as u64);
        let back = std::fs::read(&restored).expect("restored");
        assert!(
            back == original,
            "{}: the exported file differs from the fixture ({} vs {} bytes)",
            file.display(),
            back.len(),
            original.len()
        );
        // The evidence is compact: the bytes kept beside the blocks are the file minus
        // every payload the blocks hold (headers, indexes and metadata JSON).
        let (gaps, payloads) = common::block_on(kept_bytes(&out));
        assert_eq!(
            gaps + payloads,
            original.len() as u64,
            "{}: gaps {gaps} + payloads {payloads}",
            file.display()
        );
        eprintln!(
            "{}: {} bytes: {payloads} in blocks and sections, {gaps} kept as gaps",
            file.display(),
            original.len()
        );
    }
}

/// From the migrated artifact's layout: the bytes kept as gaps, and those spliced in from
/// blocks and sections.
async fn kept_bytes(out: &Path) -> (u64, u64) {
    let reader = maif_store::ArtifactReader::open(file_store(out))
        .await
        .expect("open");
    for info in reader.blocks().await.expect("blocks").iter() {
        if &info.entry.block_type.0 != b"LGCY" {
            continue;
        }
        let block = reader.read(info).await.expect("read");
        let metadata = block.metadata().expect("metadata");
        if metadata["legacy"]["kind"] != "source-sections" {
            continue;
        }
        let section = |name: &str| {
            let entry = metadata["legacy"]["sections"]
                .as_array()
                .expect("sections")
                .iter()
                .find(|s| s["name"] == name)
                .unwrap_or_else(|| panic!("no section {name}"))
                .clone();
            let offset = entry["offset"].as_u64().expect("offset") as usize;
            let length = entry["length"].as_u64().expect("length") as usize;
            block.data.slice(offset..offset + length)
        };
        let layout: Value = serde_json::from_slice(&section("original_file.json")).expect("json");
        let gaps = section("original_file_gaps").len() as u64;
        let mut spliced = 0;
        for piece in layout["pieces"].as_array().expect("pieces") {
            let (kind, value) = piece
                .as_object()
                .expect("piece")
                .iter()
                .next()
                .expect("kind");
            match kind.as_str() {
                "gap" => {}
                "section" => {
                    spliced += section(value.as_str().expect("name")).len() as u64;
                }
                _ => spliced += value[2].as_u64().expect("length"),
            }
        }
        return (gaps, spliced);
    }
    panic!("{}: no source-sections block", out.display())
}

/// Bytes the migration does not migrate (an encrypted block's stored body, a tail after
/// the index) are kept as gap bytes, so even a damaged file comes back exactly.
#[test]
fn bytes_that_are_not_migrated_still_come_back() {
    let work = tempfile::tempdir().expect("tempdir");
    let mut data = std::fs::read(common::fixtures().join("legacy-local/binary-format-a.maif"))
        .expect("fixture");
    // Block 0 (at 144) gets the ENCRYPTED flag; four bytes follow the index.
    data[144 + 15] |= 0x02;
    data.extend_from_slice(b"tail");
    let file = work.path().join("damaged.maif");
    std::fs::write(&file, &data).expect("write");
    let out = work.path().join("migrated.maif");
    common::block_on(async {
        let src = source::open(&file.display().to_string(), &S3Settings::default())
            .await
            .expect("open");
        let artifact = source::read(&src, Some(SourceKind::BinaryFormat), None, &|_| {})
            .await
            .expect("read");
        let report = migrate(artifact, None, Some(file_store(&out)), options())
            .await
            .expect("migrate");
        let statuses: Vec<String> = report
            .blocks
            .iter()
            .map(|b| format!("{:?}/{}", b.status, b.migrated))
            .collect();
        assert_eq!(
            statuses,
            ["Encrypted/false", "Live/true", "Live/true"],
            "{statuses:?}"
        );
    });
    let restored = work.path().join("restored.maif");
    export_file_to(&out, &restored, false).expect("export");
    assert!(std::fs::read(&restored).expect("restored") == data);
}

#[test]
fn an_existing_destination_is_never_overwritten_silently() {
    let file = common::fixtures().join("legacy-local/binary-format-b.maif");
    let work = tempfile::tempdir().expect("tempdir");
    let out = work.path().join("migrated.maif");
    common::block_on(migrate_file(&file, &out));
    let restored = work.path().join("restored.maif");
    std::fs::write(&restored, b"someone else's file").expect("write");
    let err = export_file_to(&out, &restored, false).expect_err("must refuse");
    assert!(err.to_string().contains("already exists"), "{err}");
    assert_eq!(
        std::fs::read(&restored).expect("kept"),
        b"someone else's file"
    );
    // Nothing half-written is left beside it.
    let names: Vec<String> = std::fs::read_dir(work.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains("partial")), "{names:?}");
    export_file_to(&out, &restored, true).expect("overwrite when asked");
    assert_eq!(
        std::fs::read(&restored).expect("restored"),
        std::fs::read(&file).expect("fixture")
    );
}

#[test]
fn a_legacy_file_can_be_exported_as_one_object() {
    let file = common::fixtures().join("python-sdk/sdk_multimodal.maif");
    let work = tempfile::tempdir().expect("tempdir");
    let out = work.path().join("migrated.maif");
    common::block_on(migrate_file(&file, &out));
    let name = format!("export-{}", uuid::Uuid::new_v4().simple());
    let destination = format!("memory://{name}/restored/sdk_multimodal.maif");
    let settings = S3Settings::default();
    let summary = common::block_on(export_original(
        file_store(&out),
        &destination,
        &settings,
        &ExportOptions::default(),
    ))
    .expect("export to memory");
    assert_eq!(summary.destination, destination);
    let store =
        open_object_store(&ObjectStoreName::Memory { name }, &settings).expect("memory store");
    let body = common::block_on(async {
        store
            .get_opts(
                &ObjectPath::from("restored/sdk_multimodal.maif"),
                GetOptions::default(),
            )
            .await
            .expect("get")
            .bytes()
            .await
            .expect("body")
    });
    assert!(body.as_ref() == std::fs::read(&file).expect("fixture").as_slice());
    let again = common::block_on(export_original(
        file_store(&out),
        &destination,
        &settings,
        &ExportOptions::default(),
    ))
    .expect_err("the object exists");
    assert!(again.to_string().contains("already exists"), "{again}");
}

#[test]
fn a_canonical_artifact_that_is_not_a_migration_is_refused() {
    let work = tempfile::tempdir().expect("tempdir");
    let out = work.path().join("plain.maif");
    common::block_on(async {
        let mut writer = ArtifactWriter::create(
            file_store(&out),
            SigningKey::generate().expect("key"),
            CreateOptions {
                agent_id: "someone".into(),
                ..CreateOptions::default()
            },
        )
        .await
        .expect("create");
        writer
            .add(NewBlock::new(
                maif_store::format::FourCC(*b"BINA"),
                b"hello".to_vec(),
            ))
            .await
            .expect("add");
        writer.commit().await.expect("commit");
    });
    let restored = work.path().join("restored.bin");
    let err = export_file_to(&out, &restored, false).expect_err("not a migration");
    let text = err.to_string();
    assert!(
        matches!(err, MigrateError::Export { .. }) && text.contains("not a migrated artifact"),
        "{text}"
    );
    assert!(text.contains("migrated_from"), "{text}");
    assert!(!restored.exists());
}

/// A migration whose artifact lacks the export evidence (as one written before it was
/// kept): the error names the block, then the section, that is missing.
#[test]
fn a_migration_without_the_evidence_is_refused_naming_what_is_missing() {
    let file = common::fixtures().join("legacy-local/block-storage-a.blk");
    let work = tempfile::tempdir().expect("tempdir");

    // 1. No source-sections block at all.
    let bare = work.path().join("bare.maif");
    common::block_on(async {
        let mut custom = BTreeMap::new();
        custom.insert("migrated_from".into(), file.display().to_string());
        custom.insert("legacy_format".into(), "block-storage".into());
        let mut writer = ArtifactWriter::create(
            file_store(&bare),
            SigningKey::generate().expect("key"),
            CreateOptions {
                agent_id: "maif-migrate".into(),
                custom,
                ..CreateOptions::default()
            },
        )
        .await
        .expect("create");
        writer
            .record_event(Action::Migrate, serde_json::Map::new())
            .await
            .expect("event");
        writer.commit().await.expect("commit");
    });
    let err = export_file_to(&bare, &work.path().join("r1"), false).expect_err("no block");
    let text = err.to_string();
    assert!(
        text.contains("source-sections block") && text.contains("is missing"),
        "{text}"
    );

    // 2. The sections block without the file layout: read the file with the reader alone.
    let old = work.path().join("old.maif");
    let data = bytes::Bytes::from(std::fs::read(&file).expect("fixture"));
    let artifact: LegacyArtifact =
        maif_migrate::local::block_storage::read(&file.display().to_string(), &data).expect("read");
    assert_eq!(artifact.kind, SourceKind::BlockStorage);
    common::block_on(async {
        migrate(artifact, None, Some(file_store(&old)), options())
            .await
            .expect("migrate");
    });
    let err = export_file_to(&old, &work.path().join("r2"), false).expect_err("no layout");
    let text = err.to_string();
    assert!(text.contains("has no section original_file.json"), "{text}");
    assert!(!work.path().join("r2").exists());
}

#[test]
fn a_tampered_migrated_artifact_is_refused_not_exported_wrong() {
    let file = common::fixtures().join("legacy-local/block-storage-a.blk");
    let original = std::fs::read(&file).expect("fixture");
    let work = tempfile::tempdir().expect("tempdir");
    let out = work.path().join("migrated.maif");
    common::block_on(migrate_file(&file, &out));
    // Record 0's payload (bytes 72..104 of the legacy file) is in the artifact once: in its
    // block. The export evidence holds only the bytes around it.
    let payload = &original[72..104];
    let mut migrated = std::fs::read(&out).expect("migrated");
    let at: Vec<usize> = migrated
        .windows(payload.len())
        .enumerate()
        .filter(|(_, w)| *w == payload)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(at.len(), 1, "the payload appears once in the artifact");
    migrated[at[0] + 3] ^= 0x20;
    std::fs::write(&out, &migrated).expect("tamper");
    let restored = work.path().join("restored.blk");
    let err = export_file_to(&out, &restored, false).expect_err("altered record");
    let text = err.to_string();
    assert!(
        matches!(err, MigrateError::Store(_)) && text.contains("altered"),
        "{text}"
    );
    assert!(!restored.exists(), "nothing is written");
    let names: Vec<String> = std::fs::read_dir(work.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains("partial")), "{names:?}");
}

// ------------------------------------------------------------------------------------
// S3
// ------------------------------------------------------------------------------------

const S3_FIXTURES: [&str; 6] = [
    "text-only",
    "mixed",
    "unsigned",
    "v0-pre-unified",
    "two-writers",
    "unified-storage",
];

fn s3_fixture_dir(name: &str) -> PathBuf {
    common::fixtures().join("legacy-s3").join(name)
}

/// Migrates the legacy prefix through the library into the canonical file `out`.
async fn migrate_prefix(store: Arc<dyn ObjectStore>, bucket: &str, prefix: &str, out: &Path) {
    let src = S3Source {
        store,
        prefix: prefix.to_owned(),
        url: format!("s3://{bucket}/{prefix}"),
        concurrency: 8,
    };
    let artifact = maif_migrate::s3::read(&src, None, &|_| {})
        .await
        .expect("read prefix");
    let report = migrate(artifact, Some(&src), Some(file_store(out)), options())
        .await
        .expect("migrate");
    assert_eq!(report.output_verified, Some(true), "{prefix}");
}

fn assert_same_objects(fixture: &str, source: &Objects, exported: &Objects) {
    let source_keys: Vec<&String> = source.keys().collect();
    let exported_keys: Vec<&String> = exported.keys().collect();
    assert_eq!(source_keys, exported_keys, "{fixture}: key set");
    for (key, (body, metadata)) in source {
        let (got_body, got_metadata) = &exported[key];
        assert!(got_body == body, "{fixture} {key}: body differs");
        assert_eq!(got_metadata, metadata, "{fixture} {key}: user metadata");
    }
}

#[test]
fn every_legacy_s3_prefix_comes_back_object_for_object() {
    for fixture in S3_FIXTURES {
        let work = tempfile::tempdir().expect("tempdir");
        let bucket = s3::bucket(fixture);
        let store = s3::store(&bucket);
        let expected = load_json(&s3_fixture_dir(fixture).join("expected.json"));
        let prefix = expected["prefix"]
            .as_str()
            .expect("prefix")
            .trim_matches('/')
            .to_owned();
        let out = work.path().join("migrated.maif");
        common::block_on(async {
            upload(&store, fixture).await;
            migrate_prefix(store.clone(), &bucket, &prefix, &out).await;
            let source = objects_under(&store, &prefix).await;
            // What was uploaded is what objects.json lists, metadata and all.
            let listed = load_json(&s3_fixture_dir(fixture).join("objects.json"));
            let listed = listed.as_array().expect("list");
            assert_eq!(source.len(), listed.len(), "{fixture}");
            for object in listed {
                let key = object["key"].as_str().expect("key");
                let relative = &key[prefix.len() + 1..];
                let want: BTreeMap<String, String> = object["metadata"]
                    .as_object()
                    .expect("metadata")
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().expect("string").to_owned()))
                    .collect();
                assert!(!want.is_empty(), "{fixture} {key}: fixture metadata");
                assert_eq!(
                    source[relative].1, want,
                    "{fixture} {key}: uploaded metadata"
                );
            }

            let exported_prefix = format!("exported/{fixture}");
            let summary = export_original_to(
                file_store(&out),
                Destination::Objects {
                    store: store.clone(),
                    path: exported_prefix.clone(),
                    name: format!("s3://{bucket}/{exported_prefix}"),
                    user_metadata: true,
                },
                &ExportOptions::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("{fixture}: export: {e}"));
            assert!(summary.kind.is_s3(), "{fixture}");
            assert_eq!(summary.objects, source.len() as u64, "{fixture}");
            assert_eq!(
                summary.bytes,
                source.values().map(|(b, _)| b.len() as u64).sum::<u64>()
            );
            let exported = objects_under(&store, &exported_prefix).await;
            assert_same_objects(fixture, &source, &exported);

            // Again to the same prefix: every object is there with exactly its bytes and
            // metadata, so nothing is written and nothing changes.
            let again = export_original_to(
                file_store(&out),
                Destination::Objects {
                    store: store.clone(),
                    path: exported_prefix.clone(),
                    name: format!("s3://{bucket}/{exported_prefix}"),
                    user_metadata: true,
                },
                &ExportOptions::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("{fixture}: export again: {e}"));
            assert_eq!(again.already_there, source.len() as u64, "{fixture}");
            assert_same_objects(
                fixture,
                &source,
                &objects_under(&store, &exported_prefix).await,
            );

            // To a memory store, through the location string.
            let name = format!("export-{}", uuid::Uuid::new_v4().simple());
            export_original(
                file_store(&out),
                &format!("memory://{name}/copy"),
                &S3Settings::default(),
                &ExportOptions::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("{fixture}: export to memory: {e}"));
            let memory =
                open_object_store(&ObjectStoreName::Memory { name }, &S3Settings::default())
                    .expect("memory");
            assert_same_objects(fixture, &source, &objects_under(&memory, "copy").await);
        });
        eprintln!("{fixture}: exported object for object");
    }
}

/// An object under the prefix that is no block (a stray) is kept verbatim and comes back;
/// a local folder cannot hold user metadata, and saying so writes nothing.
#[test]
fn stray_objects_come_back_and_a_folder_without_metadata_is_refused() {
    let fixture = "text-only";
    let work = tempfile::tempdir().expect("tempdir");
    let bucket = s3::bucket("stray");
    let store = s3::store(&bucket);
    let out = work.path().join("migrated.maif");
    common::block_on(async {
        upload(&store, fixture).await;
        let mut attributes = Attributes::new();
        attributes.insert(Attribute::Metadata("owner".into()), "ops team".into());
        put(
            &store,
            "blocks/notes/readme.txt",
            b"not a block".to_vec(),
            attributes,
        )
        .await;
        migrate_prefix(store.clone(), &bucket, "blocks", &out).await;
        let source = objects_under(&store, "blocks").await;
        assert!(source.contains_key("notes/readme.txt"));
        export_original_to(
            file_store(&out),
            Destination::Objects {
                store: store.clone(),
                path: "restored".into(),
                name: format!("s3://{bucket}/restored"),
                user_metadata: true,
            },
            &ExportOptions::default(),
        )
        .await
        .expect("export");
        assert_same_objects(fixture, &source, &objects_under(&store, "restored").await);

        let folder = work.path().join("folder");
        let err = export_original(
            file_store(&out),
            &format!("file://{}", folder.display()),
            &S3Settings::default(),
            &ExportOptions::default(),
        )
        .await
        .expect_err("a folder keeps no user metadata");
        let text = err.to_string();
        assert!(
            text.contains("cannot hold user metadata") && text.contains("local folder"),
            "{text}"
        );
        let left: Vec<_> = walk(&folder);
        assert!(left.is_empty(), "nothing written: {left:?}");
    });
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// The export to a prefix under faults and interruptions, as OBJECT-LAYOUT.md's rules for
/// create-only writes ask: a write whose answer is lost after S3 acted is settled by reading
/// the object back (the export succeeds, nothing is written twice); a re-run after an
/// interrupted export keeps the objects already there with exactly the right bytes and
/// metadata and writes the rest; an object with other content is refused before anything
/// is written, and never replaced.
#[test]
fn an_export_to_a_prefix_survives_lost_answers_and_interruptions_and_never_replaces_other_content()
{
    use common::fault_proxy::{Fault, FaultProxy, Filter, Policy};
    let fixture = "mixed";
    let work = tempfile::tempdir().expect("tempdir");
    let bucket = s3::bucket("export-faults");
    let store = s3::store(&bucket);
    let expected = load_json(&s3_fixture_dir(fixture).join("expected.json"));
    let prefix = expected["prefix"]
        .as_str()
        .expect("prefix")
        .trim_matches('/')
        .to_owned();
    let out = work.path().join("migrated.maif");
    // Every PUT reaches S3, and its answer is lost: the client sees a reset.
    let proxy = FaultProxy::start(
        &s3::endpoint(),
        Policy::always(
            Filter::new(&["PUT"], &["/exported"]),
            Fault::ResetAfterForward,
        ),
    );
    let through_proxy: Arc<dyn ObjectStore> = s3::client_at(&bucket, &proxy.endpoint());
    let options = ExportOptions::default();
    let export_to = |store: Arc<dyn ObjectStore>, path: &str| {
        export_original_to(
            file_store(&out),
            Destination::Objects {
                store,
                path: path.to_owned(),
                name: format!("s3://{bucket}/{path}"),
                user_metadata: true,
            },
            &options,
        )
    };
    common::block_on(async {
        upload(&store, fixture).await;
        migrate_prefix(store.clone(), &bucket, &prefix, &out).await;
        let source = objects_under(&store, &prefix).await;

        let summary = export_to(through_proxy.clone(), "exported/lost-answers")
            .await
            .unwrap_or_else(|e| panic!("every lost answer is settled by reading back: {e}"));
        let resets = proxy.stats().injected("ResetAfterForward");
        assert!(
            resets >= source.len() as u64,
            "every PUT lost its answer ({resets} resets for {} objects)",
            source.len()
        );
        assert_eq!(summary.objects, source.len() as u64);
        assert_same_objects(
            fixture,
            &source,
            &objects_under(&store, "exported/lost-answers").await,
        );

        // An interrupted export: only some objects made it. The re-run keeps them and
        // writes the rest.
        let exported = objects_under(&store, "exported/lost-answers").await;
        let keys: Vec<&String> = exported.keys().collect();
        assert!(keys.len() >= 4, "{keys:?}");
        for key in keys.iter().step_by(2) {
            store
                .delete(&ObjectPath::from(format!("exported/lost-answers/{key}")))
                .await
                .expect("delete");
        }
        let removed = keys.len().div_ceil(2) as u64;
        let resumed = export_to(store.clone(), "exported/lost-answers")
            .await
            .unwrap_or_else(|e| panic!("a re-run completes an interrupted export: {e}"));
        assert_eq!(resumed.already_there, source.len() as u64 - removed);
        assert_same_objects(
            fixture,
            &source,
            &objects_under(&store, "exported/lost-answers").await,
        );

        // Another object at one of the keys (other bytes, or the same bytes with other
        // metadata): refused before anything is written, and left as it is.
        let (first_key, (first_body, _)) = source.iter().next().expect("an object");
        let (last_key, _) = source.iter().last().expect("an object");
        for (n, (body, metadata)) in [
            (b"someone else's object".to_vec(), BTreeMap::new()),
            (
                first_body.clone(),
                BTreeMap::from([("other".to_string(), "x".to_string())]),
            ),
        ]
        .into_iter()
        .enumerate()
        {
            let path = format!("exported/other-{n}");
            let mut attributes = Attributes::new();
            for (k, v) in &metadata {
                attributes.insert(Attribute::Metadata(k.clone().into()), v.clone().into());
            }
            put(
                &store,
                &format!("{path}/{first_key}"),
                body.clone(),
                attributes,
            )
            .await;
            let refused = export_to(store.clone(), &path)
                .await
                .expect_err("other content at a key");
            let message = refused.to_string();
            assert!(
                message.contains("already exists with other content")
                    && message.contains(first_key.as_str()),
                "{message}"
            );
            let left = objects_under(&store, &path).await;
            assert_eq!(left.len(), 1, "nothing written: {:?}", left.keys());
            assert!(
                left[first_key].0 == body,
                "the other object is left as it was"
            );
            assert!(!left.contains_key(last_key));
        }
    });
}
