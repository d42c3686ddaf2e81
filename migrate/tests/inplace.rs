//! Reading every MAIF variant in place (`maif_migrate::inplace`): every legacy fixture, on
//! disk and (for the S3 layouts) uploaded to a real S3 (LocalStack), is detected by content,
//! and its in-place view must say exactly what the migration says of the same source:
//! the same blocks, ids, types, sizes, statuses, checks and verdicts as `maif-migrate
//! --dry-run --report` (the CLI), the same metadata, versions and payloads as the blocks of
//! an actual migration read back with `maif_store`, each payload's SHA-256 as the fixture
//! records it, and the same exit code. Canonical files and prefixes are detected as
//! canonical; garbage gets a clear error; the source is never written.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};

use common::s3;
use futures::TryStreamExt as _;
use maif_migrate::inplace::{
    LegacyOptions, LegacyView, Opened, Variant, detect, open, open_legacy,
};
use maif_migrate::model::SourceKind;
use maif_migrate::report::Verdict;
use maif_store::artifact::{ArtifactReader, ConvertOptions, convert};
use maif_store::format::payload::content_of;
use maif_store::location::{Location, S3Settings};
use maif_store::store::BlockStore;
use object_store::path::Path as ObjectPath;
use object_store::{Attribute, Attributes, ObjectStore, ObjectStoreExt as _, PutOptions};
use serde_json::{Map, Value};

fn load_json(path: &Path) -> Value {
    serde_json::from_slice(
        &std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn text(path: &Path) -> String {
    path.to_str().expect("utf-8 path").to_owned()
}

// ---------------------------------------------------------------------------------------
// S3 plumbing
// ---------------------------------------------------------------------------------------

/// S3 settings for the test endpoint. The library reads credentials from the environment
/// as every AWS tool does; they are set once, before any request of this test binary.
fn s3_settings() -> S3Settings {
    static CREDENTIALS: Once = Once::new();
    let endpoint = s3::endpoint();
    CREDENTIALS.call_once(|| {
        // SAFETY: every test that talks to S3 calls this function before doing anything
        // else, and `Once` makes them wait until it returns, so no thread of this binary
        // is reading the environment for an S3 request while it is written.
        unsafe {
            std::env::set_var("AWS_ACCESS_KEY_ID", "test");
            std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
            std::env::set_var("AWS_REGION", "us-east-1");
        }
    });
    S3Settings {
        endpoint: Some(endpoint),
        region: Some("us-east-1".into()),
        virtual_hosted_style: false,
        concurrency: Some(4),
    }
}

fn s3_fixture_dir(name: &str) -> PathBuf {
    common::fixtures().join("legacy-s3").join(name)
}

fn put(store: &Arc<dyn ObjectStore>, key: &str, body: Vec<u8>, metadata: &Map<String, Value>) {
    let mut attributes = Attributes::new();
    for (name, value) in metadata {
        attributes.insert(
            Attribute::Metadata(name.clone().into()),
            value
                .as_str()
                .expect("metadata values are strings")
                .to_owned()
                .into(),
        );
    }
    common::block_on(store.put_opts(
        &ObjectPath::from(key),
        body.into(),
        PutOptions {
            attributes,
            ..PutOptions::default()
        },
    ))
    .unwrap_or_else(|e| panic!("upload {key}: {e}"));
}

/// Uploads a fixture's objects with their user metadata exactly as `objects.json` has them.
fn upload(bucket: &str, fixture: &str) -> Arc<dyn ObjectStore> {
    let store = s3::store(bucket);
    let dir = s3_fixture_dir(fixture);
    for object in load_json(&dir.join("objects.json"))
        .as_array()
        .expect("objects.json is a list")
    {
        let key = object["key"].as_str().expect("key");
        let body = std::fs::read(dir.join("objects").join(key)).expect("fixture body");
        assert_eq!(
            common::sha256_hex(&body),
            object["sha256"].as_str().unwrap_or_default()
        );
        put(
            &store,
            key,
            body,
            object["metadata"].as_object().expect("metadata"),
        );
    }
    store
}

/// Every key with its size and ETag.
fn snapshot(store: &Arc<dyn ObjectStore>) -> BTreeMap<String, (u64, Option<String>)> {
    common::block_on(store.list(None).try_collect::<Vec<_>>())
        .expect("list")
        .into_iter()
        .map(|m| (m.location.to_string(), (m.size, m.e_tag)))
        .collect()
}

/// The fixture's legacy keys, as library keys and as CLI arguments.
fn legacy_keys(fixture: &str) -> (Vec<maif_migrate::hmac::LegacyKey>, Vec<String>) {
    let keys = s3_fixture_dir(fixture).join("keys/keys.json");
    if !keys.exists() {
        return (Vec::new(), Vec::new());
    }
    let mut library = Vec::new();
    let mut args = Vec::new();
    for k in load_json(&keys).as_array().expect("keys.json") {
        let label = k["label"].as_str().expect("label");
        let file = s3_fixture_dir(fixture).join(k["file"].as_str().expect("file"));
        library.push(maif_migrate::hmac::LegacyKey {
            label: label.to_owned(),
            key: std::fs::read(&file).expect("key file"),
        });
        args.extend([
            "--legacy-key".to_owned(),
            format!("{label}={}", file.display()),
        ]);
    }
    (library, args)
}

// ---------------------------------------------------------------------------------------
// The reference: what the migration says and writes
// ---------------------------------------------------------------------------------------

/// `maif-migrate SOURCE --dry-run --report` (the CLI): its report, asserting `exit`.
fn dry_run_report(work: &Path, source: &str, extra: &[String], s3: bool, exit: i32) -> Value {
    let mut args = vec![source.to_owned(), "--dry-run".to_owned()];
    args.extend_from_slice(extra);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    common::migrate_with_report(work, &argv, s3, exit)
}

/// A migrated block read back with `maif_store`: id, version, type, timestamp, metadata
/// and what `maif cat` prints (the payload without its typed framing).
struct Migrated {
    id: String,
    version: u32,
    block_type: String,
    timestamp_us: u64,
    metadata: Map<String, Value>,
    content: Vec<u8>,
}

/// Migrates `source` for real into a file and reads every block the legacy source gave
/// back (not the blocks the migration makes itself: source sections, verdict listings).
fn migrate_and_read_back(work: &Path, source: &str, extra: &[String], s3: bool) -> Vec<Migrated> {
    let out = work.join(format!("migrated-{}.maif", uuid::Uuid::new_v4().simple()));
    let key = common::key_file(work);
    let mut args = vec![
        source.to_owned(),
        text(&out),
        "--key".to_owned(),
        text(&key),
        "--quiet".to_owned(),
    ];
    args.extend_from_slice(extra);
    let output = common::migrate_cli(&args.iter().map(String::as_str).collect::<Vec<_>>(), s3);
    assert!(
        matches!(output.status.code(), Some(0 | 1)),
        "maif-migrate {args:?}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    common::block_on(async {
        let store = Location::parse(&text(&out)).unwrap().store().unwrap();
        let reader = ArtifactReader::open(store)
            .await
            .expect("open the migration");
        let mut blocks = Vec::new();
        for info in reader.blocks().await.expect("list").iter() {
            let block = reader.read(info).await.expect("read block");
            let metadata = block.metadata().expect("metadata");
            let own = metadata["legacy"]["kind"]
                .as_str()
                .is_some_and(|k| k == "source-sections" || k == "migration-verdicts");
            if own {
                continue;
            }
            blocks.push(Migrated {
                id: info.id(),
                version: info.version,
                block_type: info.entry.block_type.to_string(),
                timestamp_us: info.entry.timestamp_us,
                content: content_of(info.entry.block_type, &block.data).expect("payload"),
                metadata,
            });
        }
        blocks
    })
}

/// Checks a view against the migration of the same source: the dry-run `report` (exit
/// `exit`), the blocks an actual migration wrote (`migrated`), and the fixture's own payload
/// hashes (`want_sha256`, in block order).
fn assert_view_matches_the_migration(
    name: &str,
    view: &LegacyView,
    report: &Value,
    exit: i32,
    migrated: &[Migrated],
    want_sha256: &[&str],
) {
    let blocks = report["blocks"].as_array().expect("report blocks");
    assert_eq!(view.blocks().len(), blocks.len(), "{name}: block count");
    assert_eq!(
        view.kind().as_str(),
        report["kind"].as_str().unwrap_or_default(),
        "{name}: kind"
    );
    let readable: Vec<_> = view
        .blocks()
        .iter()
        .filter(|b| b.version.is_some())
        .collect();
    assert_eq!(readable.len(), want_sha256.len(), "{name}: payload count");
    assert_eq!(readable.len(), migrated.len(), "{name}: migrated blocks");

    for (info, want) in view.blocks().iter().zip(blocks) {
        let id = &info.legacy_id;
        assert_eq!(
            Some(id.as_str()),
            want["legacy_id"].as_str(),
            "{name}: order"
        );
        assert_eq!(
            Some(info.id().as_str()),
            want["block_id"].as_str(),
            "{name} {id}"
        );
        assert_eq!(
            Some(info.block_type.to_string().as_str()),
            want["block_type"].as_str(),
            "{name} {id}: type"
        );
        assert_eq!(
            Some(info.legacy_type.as_str()),
            want["legacy_type"].as_str(),
            "{name} {id}: legacy type"
        );
        assert_eq!(info.size, want["size"].as_u64(), "{name} {id}: size");
        assert_eq!(
            info.sha256.as_deref(),
            want["sha256"].as_str(),
            "{name} {id}: sha256"
        );
        assert_eq!(
            serde_json::to_value(info.status).unwrap(),
            want["status"],
            "{name} {id}: status"
        );
        assert_eq!(
            serde_json::to_value(info.verdict).unwrap(),
            want["verdict"],
            "{name} {id}: verdict"
        );
        assert_eq!(
            serde_json::to_value(&info.checks).unwrap(),
            want["checks"],
            "{name} {id}: checks"
        );
        assert_eq!(
            serde_json::to_value(&info.framing).unwrap(),
            want.get("framing").cloned().unwrap_or(Value::Null),
            "{name} {id}: framing"
        );
        assert_eq!(
            info.version.is_some(),
            want["migrated"] == true,
            "{name} {id}"
        );
        // The evidence the block carries names its checks and verdict.
        let legacy = &info.metadata["legacy"];
        assert_eq!(legacy["id"], want["legacy_id"], "{name} {id}");
        assert_eq!(legacy["verdict"], want["verdict"], "{name} {id}");
        assert_eq!(legacy["checks"], want["checks"], "{name} {id}");
        let serialized = serde_json::to_value(info).unwrap();
        assert_eq!(
            serialized["id"], want["block_id"],
            "{name} {id}: serialized"
        );
        assert_eq!(serialized["block_type"], want["block_type"], "{name} {id}");
        let row = info.ls_row();
        assert_eq!(row["id"], want["block_id"], "{name} {id}: ls row");
        assert_eq!(row["verdict"], want["verdict"], "{name} {id}: ls row");
    }

    // What an actual migration wrote: same ids, versions, types, timestamps, metadata, and
    // `maif cat` prints what `payload` returns, whose SHA-256 the fixture records.
    for ((info, written), want) in readable.iter().zip(migrated).zip(want_sha256) {
        let id = &info.legacy_id;
        assert_eq!(info.id(), written.id, "{name} {id}: id");
        assert_eq!(info.version, Some(written.version), "{name} {id}: version");
        assert_eq!(
            info.block_type.to_string(),
            written.block_type,
            "{name} {id}"
        );
        assert_eq!(
            info.timestamp_us, written.timestamp_us,
            "{name} {id}: timestamp"
        );
        assert_eq!(info.metadata, written.metadata, "{name} {id}: metadata");
        let payload = common::block_on(view.payload(&info.block_id, info.version))
            .unwrap_or_else(|e| panic!("{name} {id}: payload: {e}"));
        assert_eq!(common::sha256_hex(&payload), *want, "{name} {id}: payload");
        assert!(payload[..] == written.content[..], "{name} {id}: maif cat");
        assert_eq!(Some(payload.len() as u64), info.size, "{name} {id}: size");
    }
    // The latest version is what `payload(id, None)` gives, as `maif cat` without --version.
    for info in &readable {
        let latest = readable
            .iter()
            .rfind(|b| b.block_id == info.block_id)
            .unwrap();
        let payload = common::block_on(view.payload(&info.block_id, None)).unwrap();
        assert_eq!(
            Some(common::sha256_hex(&payload)),
            latest.sha256,
            "{name} {}: latest",
            info.legacy_id
        );
    }

    // verify(): the report's verdicts and exit code.
    let verification = view.verify();
    assert_eq!(i32::from(verification.exit_code), exit, "{name}: exit code");
    assert_eq!(verification.blocks.len(), blocks.len());
    for (block, want) in verification.blocks.iter().zip(blocks) {
        assert_eq!(Some(block.legacy_id.as_str()), want["legacy_id"].as_str());
        assert_eq!(
            serde_json::to_value(block.verdict).unwrap(),
            want["verdict"]
        );
        assert_eq!(serde_json::to_value(&block.checks).unwrap(), want["checks"]);
    }
    assert_eq!(
        serde_json::to_value(&verification.counts).unwrap(),
        report["counts"],
        "{name}: counts"
    );
    assert_eq!(
        serde_json::to_value(&verification.source_checks).unwrap(),
        report["source_checks"],
        "{name}: source checks"
    );
    assert_eq!(
        serde_json::to_value(&verification.findings).unwrap(),
        report["findings"],
        "{name}: findings"
    );
    let any = |verdict: &str| blocks.iter().any(|b| b["verdict"] == verdict);
    let source_open = report["source_checks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["result"] == "unverifiable");
    let want_overall = if exit == 1 {
        Verdict::Failed
    } else if any("unverifiable")
        || source_open
        || !(any("verified") || report["source_checks"].to_string().contains("\"pass\""))
    {
        Verdict::Unverifiable
    } else {
        Verdict::Verified
    };
    assert_eq!(
        verification.verdict, want_overall,
        "{name}: overall verdict"
    );
    assert_eq!(
        verification.problems.is_empty(),
        exit == 0,
        "{name}: problems {:?}",
        verification.problems
    );

    // inspect(): the kind, counts and findings of the source.
    let inspect = view.inspect();
    assert_eq!(inspect["kind"], report["kind"], "{name}: inspect");
    assert_eq!(
        inspect["counts"], report["counts"],
        "{name}: inspect counts"
    );
    assert_eq!(
        inspect["findings"], report["findings"],
        "{name}: inspect findings"
    );
    assert_eq!(inspect["exit_code"], exit, "{name}: inspect exit code");
}

// ---------------------------------------------------------------------------------------
// Local fixtures
// ---------------------------------------------------------------------------------------

/// Each legacy-local fixture's payload SHA-256s in migration order (as local_fixtures.rs
/// derives them from expected.json: binary_format zlib blocks as their decoded text,
/// block_storage's failed update appended last).
fn legacy_local_payloads(file: &Value) -> Vec<String> {
    let name = file["file"].as_str().unwrap();
    let mut want: Vec<String> = match file["records_on_disk"]
        .as_array()
        .filter(|_| name.starts_with("unified"))
    {
        Some(records) => records
            .iter()
            .filter(|r| r["block_type"] != "HDER")
            .map(|r| r["data_sha256"].as_str().unwrap().to_owned())
            .collect(),
        None => file["blocks"]
            .as_array()
            .expect("blocks")
            .iter()
            .map(|b| {
                if b["fourcc"].is_string() && b["flags"].as_u64().unwrap_or(0) & 1 != 0 {
                    common::sha256_hex(b["text"].as_str().unwrap().as_bytes())
                } else {
                    b["data_sha256"].as_str().unwrap().to_owned()
                }
            })
            .collect(),
    };
    if let Some(update) = file["update_block"].as_object() {
        want.push(update["new_data_sha256"].as_str().unwrap().to_owned());
    }
    want
}

fn local_kind(name: &str) -> SourceKind {
    if name.starts_with("binary-format") {
        SourceKind::BinaryFormat
    } else if name.starts_with("block-storage") {
        SourceKind::BlockStorage
    } else if name.starts_with("unified-local") {
        SourceKind::UnifiedLocal
    } else {
        panic!("unknown legacy-local fixture {name}")
    }
}

/// Detects, opens and checks one local file in place against its migration.
fn local_file_in_place(
    path: &Path,
    kind: SourceKind,
    options: LegacyOptions,
    extra: &[String],
    exit: i32,
    want_sha256: &[&str],
) -> LegacyView {
    let work = tempfile::tempdir().unwrap();
    let name = text(path);
    let before = std::fs::read(path).unwrap();
    let settings = S3Settings::default();
    let variant = common::block_on(detect(&name, &settings)).expect("detect");
    assert_eq!(variant, Variant::Legacy(kind), "{name}");
    let view = common::block_on(open_legacy(&name, &settings, options)).expect("open_legacy");
    let report = dry_run_report(work.path(), &name, extra, false, exit);
    let migrated = migrate_and_read_back(work.path(), &name, extra, false);
    assert_view_matches_the_migration(&name, &view, &report, exit, &migrated, want_sha256);
    assert!(
        std::fs::read(path).unwrap() == before,
        "{name}: the source changed"
    );
    view
}

#[test]
fn legacy_local_files_read_in_place_as_the_migration_reads_them() {
    let dir = common::fixtures().join("legacy-local");
    let expected = load_json(&dir.join("expected.json"));
    let files = expected.as_array().expect("list");
    assert_eq!(files.len(), 5, "legacy-local fixtures");
    for file in files {
        let name = file["file"].as_str().unwrap();
        let want = legacy_local_payloads(file);
        let want: Vec<&str> = want.iter().map(String::as_str).collect();
        let view = local_file_in_place(
            &dir.join(name),
            local_kind(name),
            LegacyOptions::default(),
            &[],
            0,
            &want,
        );
        // Nothing in these files contradicts its evidence.
        assert_ne!(view.verify().verdict, Verdict::Failed, "{name}");
        if name == "block-storage-b.blk" {
            let statuses: Vec<String> = view
                .blocks()
                .iter()
                .map(|b| {
                    serde_json::to_value(b.status)
                        .unwrap()
                        .as_str()
                        .unwrap()
                        .to_owned()
                })
                .collect();
            assert!(
                statuses.contains(&"superseded".to_owned())
                    && statuses.contains(&"update_record".to_owned()),
                "{statuses:?}"
            );
        }
        // The sections the migration keeps in its LGCY block are there to inspect.
        let inspect = view.inspect();
        assert_eq!(inspect["kind"], local_kind(name).as_str());
        for section in inspect["sections"].as_array().unwrap() {
            let bytes = view
                .section(section["name"].as_str().unwrap())
                .expect("named section");
            assert_eq!(
                section["sha256"].as_str(),
                Some(common::sha256_hex(bytes).as_str())
            );
        }
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
fn python_sdk_files_read_in_place_as_the_migration_reads_them() {
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
        let want: Vec<&str> = expected["blocks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["data_sha256"].as_str().unwrap())
            .collect();
        let failing = expected["checks_failed"]
            .as_array()
            .is_some_and(|c| !c.is_empty());
        let exit = i32::from(failing);
        let mut extra = Vec::new();
        let mut options = LegacyOptions::default();
        if let Some(pin) = &pin {
            extra.extend(["--public-key".to_owned(), pin.clone()]);
            let bytes: [u8; 32] = hex::decode(pin).unwrap().try_into().unwrap();
            options.public_key = Some(bytes);
        }
        let view = local_file_in_place(&file, SourceKind::PythonSdk, options, &extra, exit, &want);
        let verification = view.verify();
        if failing {
            assert_eq!(verification.verdict, Verdict::Failed, "{stem}");
            assert!(!verification.problems.is_empty(), "{stem}");
        } else {
            assert_ne!(verification.verdict, Verdict::Failed, "{stem}");
        }
        if pin.is_none() {
            // The embedded key proves consistency, not authorship.
            assert_eq!(
                verification.verdict,
                if failing {
                    Verdict::Failed
                } else {
                    Verdict::Unverifiable
                },
                "{stem}"
            );
        }
    }
}

/// The file the Python SDK wrote is named as such, where the canonical reader alone says
/// "unsupported MAIF version 0.2".
#[test]
fn an_sdk_file_is_named_as_a_python_sdk_file() {
    let file = common::fixtures().join("python-sdk/sample_text.maif");
    let settings = S3Settings::default();
    let variant = common::block_on(detect(&text(&file), &settings)).expect("detect");
    assert_eq!(variant, Variant::Legacy(SourceKind::PythonSdk));
    assert_eq!(variant.name(), "python-sdk");
    assert!(
        variant.description().contains("Python SDK 2.1"),
        "{variant}"
    );
    let canonical = common::block_on(async {
        ArtifactReader::open(Location::parse(&text(&file)).unwrap().store().unwrap())
            .await
            .map(|_| ())
    });
    let said = canonical
        .expect_err("the canonical reader does not read SDK files")
        .to_string();
    assert!(said.contains("unsupported MAIF version 0.2"), "{said}");
    match common::block_on(open(&text(&file), &settings, LegacyOptions::default())) {
        Ok(Opened::Legacy(view)) => assert_eq!(view.kind(), SourceKind::PythonSdk),
        Ok(Opened::Canonical(_)) => panic!("an SDK file opened as canonical"),
        Err(e) => panic!("open: {e}"),
    }
}

// ---------------------------------------------------------------------------------------
// Canonical locations
// ---------------------------------------------------------------------------------------

/// A small canonical artifact (a migration of a legacy fixture) in a file.
fn canonical_file(work: &Path) -> PathBuf {
    let source = common::fixtures().join("legacy-local/unified-local-a.maif");
    let out = work.join("canonical.maif");
    let key = common::key_file(work);
    let output = common::migrate_cli(
        &[&text(&source), &text(&out), "--key", &text(&key), "--quiet"],
        false,
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    out
}

fn assert_canonical(location: &str, settings: &S3Settings) {
    let variant = common::block_on(detect(location, settings))
        .unwrap_or_else(|e| panic!("detect {location}: {e}"));
    assert_eq!(variant, Variant::Canonical, "{location}");
    let refused = common::block_on(open_legacy(location, settings, LegacyOptions::default()))
        .expect_err("a canonical location is not opened as legacy");
    assert!(
        refused.to_string().contains("is canonical MAIF"),
        "{refused}"
    );
    match common::block_on(open(location, settings, LegacyOptions::default())) {
        Ok(Opened::Canonical(store)) => {
            let reader = common::block_on(ArtifactReader::open(store)).expect("canonical opens");
            assert!(!common::block_on(reader.blocks()).unwrap().is_empty());
        }
        Ok(Opened::Legacy(_)) => panic!("{location}: opened as legacy"),
        Err(e) => panic!("{location}: {e}"),
    }
}

#[test]
fn canonical_files_are_detected_as_canonical_and_keep_the_stores_version_error() {
    let work = tempfile::tempdir().unwrap();
    let file = canonical_file(work.path());
    assert_canonical(&text(&file), &S3Settings::default());

    // Another major version is still canonical MAIF: the store says which version it is.
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[4] = 4;
    bytes[5] = 0;
    let future = work.path().join("future.maif");
    std::fs::write(&future, &bytes).unwrap();
    let variant = common::block_on(detect(&text(&future), &S3Settings::default())).unwrap();
    assert_eq!(variant, Variant::Canonical);
    let error = match common::block_on(open(
        &text(&future),
        &S3Settings::default(),
        LegacyOptions::default(),
    )) {
        Ok(Opened::Canonical(store)) => common::block_on(ArtifactReader::open(store))
            .map(|_| ())
            .expect_err("version 4.0 is not read"),
        Ok(Opened::Legacy(_)) => panic!("a version 4 file opened as legacy"),
        Err(e) => panic!("open: {e}"),
    };
    assert!(error.is_unsupported_version(), "{error}");
    assert!(
        error.to_string().contains("unsupported MAIF version 4.0"),
        "{error}"
    );

    // The object layout in a local folder.
    let folder = work.path().join("layout");
    let folder_url = format!("file://{}", folder.display());
    common::block_on(async {
        let from = Location::parse(&text(&file)).unwrap().store().unwrap();
        let to = Location::parse(&folder_url).unwrap().store().unwrap();
        convert(from, to, ConvertOptions::default())
            .await
            .expect("convert");
    });
    assert_canonical(&folder_url, &S3Settings::default());
}

#[test]
fn canonical_prefixes_and_objects_on_s3_are_detected_as_canonical() {
    let settings = s3_settings();
    let work = tempfile::tempdir().unwrap();
    let file = canonical_file(work.path());
    let bucket = s3::bucket("inplace-canonical");
    common::block_on(async {
        let from: Arc<dyn BlockStore> = Location::parse(&text(&file)).unwrap().store().unwrap();
        let prefix = Location::parse(&format!("s3://{bucket}/agents/a1"))
            .unwrap()
            .store_with(&settings)
            .unwrap();
        convert(from.clone(), prefix, ConvertOptions::default())
            .await
            .expect("to the object layout");
        let object = Location::parse(&format!("s3://{bucket}/archive/a1.maif"))
            .unwrap()
            .store_with(&settings)
            .unwrap();
        convert(from, object, ConvertOptions::default())
            .await
            .expect("to one object");
    });
    assert_canonical(&format!("s3://{bucket}/agents/a1"), &settings);
    assert_canonical(&format!("s3://{bucket}/archive/a1.maif"), &settings);
}

// ---------------------------------------------------------------------------------------
// S3 fixtures
// ---------------------------------------------------------------------------------------

/// The fixture's present blocks' payload SHA-256s, in migration order.
fn s3_payloads(fixture: &str) -> Vec<String> {
    let expected = load_json(&s3_fixture_dir(fixture).join("expected.json"));
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
            b["current_sha256"]
                .as_str()
                .or(b["sha256"].as_str())
                .expect("sha256")
                .to_owned()
        })
        .collect()
}

fn s3_fixture_in_place(fixture: &str, kind: SourceKind) {
    let settings = s3_settings();
    let work = tempfile::tempdir().unwrap();
    let bucket = s3::bucket(fixture);
    let store = upload(&bucket, fixture);
    let before = snapshot(&store);
    let expected = load_json(&s3_fixture_dir(fixture).join("expected.json"));
    let prefix = expected["prefix"].as_str().expect("prefix");
    let source = format!("s3://{bucket}/{prefix}");
    let (keys, key_args) = legacy_keys(fixture);
    let mut extra = key_args;
    extra.extend(["--endpoint".to_owned(), s3::endpoint()]);

    let variant = common::block_on(detect(&source, &settings)).expect("detect");
    assert_eq!(variant, Variant::Legacy(kind), "{fixture}");
    let options = LegacyOptions {
        legacy_keys: keys,
        ..LegacyOptions::default()
    };
    let view = common::block_on(open_legacy(&source, &settings, options.clone()))
        .unwrap_or_else(|e| panic!("{fixture}: open_legacy: {e}"));
    let report = dry_run_report(work.path(), &source, &extra, true, 0);
    let migrated = migrate_and_read_back(work.path(), &source, &extra, true);
    let want = s3_payloads(fixture);
    let want: Vec<&str> = want.iter().map(String::as_str).collect();
    assert_view_matches_the_migration(fixture, &view, &report, 0, &migrated, &want);
    assert_eq!(
        view.inspect()["file_level"]["prefix"],
        prefix.trim_matches('/')
    );

    // Without the keys the signatures are unverifiable, never failed, as in the migration.
    let keyless = common::block_on(open_legacy(&source, &settings, LegacyOptions::default()))
        .expect("open without keys");
    let keyless_report = dry_run_report(
        work.path(),
        &source,
        &["--endpoint".to_owned(), s3::endpoint()],
        true,
        0,
    );
    for (info, want) in keyless
        .blocks()
        .iter()
        .zip(keyless_report["blocks"].as_array().unwrap())
    {
        assert_eq!(
            info.verdict,
            Verdict::Unverifiable,
            "{fixture} {}",
            info.legacy_id
        );
        assert_eq!(serde_json::to_value(info.verdict).unwrap(), want["verdict"]);
    }
    assert_eq!(keyless.verify().exit_code, 0);
    assert_eq!(keyless.verify().verdict, Verdict::Unverifiable);

    // Read in place means read only: no object was added, removed or rewritten.
    assert_eq!(snapshot(&store), before, "{fixture}: the source changed");
}

#[test]
fn s3_text_only_in_place() {
    s3_fixture_in_place("text-only", SourceKind::S3LayoutA);
}

#[test]
fn s3_mixed_in_place() {
    s3_fixture_in_place("mixed", SourceKind::S3LayoutA);
}

#[test]
fn s3_unsigned_in_place() {
    s3_fixture_in_place("unsigned", SourceKind::S3LayoutA);
}

#[test]
fn s3_v0_pre_unified_in_place() {
    s3_fixture_in_place("v0-pre-unified", SourceKind::S3LayoutA);
}

#[test]
fn s3_two_writers_in_place() {
    s3_fixture_in_place("two-writers", SourceKind::S3LayoutA);
}

#[test]
fn s3_unified_storage_in_place() {
    s3_fixture_in_place("unified-storage", SourceKind::S3LayoutB);
}

/// A tampered body fails its check and a deleted object is dangling: both are exit 1 in
/// place as in the migration, and the dangling block is listed but has no payload.
#[test]
fn s3_tampered_and_missing_objects_fail_in_place_as_in_the_migration() {
    let settings = s3_settings();
    let work = tempfile::tempdir().unwrap();
    let fixture = "mixed";
    let bucket = s3::bucket("inplace-tampered");
    let store = upload(&bucket, fixture);
    let expected = load_json(&s3_fixture_dir(fixture).join("expected.json"));
    let prefix = expected["prefix"]
        .as_str()
        .expect("prefix")
        .trim_matches('/');
    let objects = load_json(&s3_fixture_dir(fixture).join("objects.json"));
    let data: Vec<&Value> = objects
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| {
            o["key"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{prefix}/data/"))
        })
        .collect();
    assert!(data.len() >= 2, "mixed has several data objects");
    // One body changed under its old metadata; one object deleted.
    let tampered = data[0];
    let tampered_key = tampered["key"].as_str().unwrap();
    let mut body =
        std::fs::read(s3_fixture_dir(fixture).join("objects").join(tampered_key)).unwrap();
    body[0] ^= 0x01;
    put(
        &store,
        tampered_key,
        body,
        tampered["metadata"].as_object().unwrap(),
    );
    let missing_key = data[1]["key"].as_str().unwrap();
    common::block_on(store.delete(&ObjectPath::from(missing_key))).expect("delete");
    let tampered_id = tampered_key.rsplit('/').next().unwrap();
    let missing_id = missing_key.rsplit('/').next().unwrap();

    let source = format!("s3://{bucket}/{prefix}");
    let (keys, mut extra) = legacy_keys(fixture);
    extra.extend(["--endpoint".to_owned(), s3::endpoint()]);
    let view = common::block_on(open_legacy(
        &source,
        &settings,
        LegacyOptions {
            legacy_keys: keys,
            ..LegacyOptions::default()
        },
    ))
    .expect("open_legacy");
    let report = dry_run_report(work.path(), &source, &extra, true, 1);
    let migrated = migrate_and_read_back(work.path(), &source, &extra, true);
    let want: Vec<String> = view
        .blocks()
        .iter()
        .filter(|b| b.version.is_some())
        .map(|b| b.sha256.clone().unwrap())
        .collect();
    let want: Vec<&str> = want.iter().map(String::as_str).collect();
    assert_view_matches_the_migration("tampered mixed", &view, &report, 1, &migrated, &want);

    let find = |legacy: &str| {
        view.blocks()
            .iter()
            .find(|b| b.legacy_id.contains(legacy))
            .unwrap_or_else(|| panic!("{legacy} listed"))
    };
    let bad = find(tampered_id);
    assert_eq!(bad.verdict, Verdict::Failed);
    let dangling = find(missing_id);
    assert_eq!(serde_json::to_value(dangling.status).unwrap(), "dangling");
    assert_eq!(dangling.version, None);
    let refused = common::block_on(view.payload(&dangling.block_id, None))
        .expect_err("a dangling block has no payload");
    assert!(refused.to_string().contains("dangling"), "{refused}");
    let verification = view.verify();
    assert_eq!(verification.verdict, Verdict::Failed);
    assert_eq!(verification.exit_code, 1);
    let problems = verification.problems.join("\n");
    assert!(
        problems.contains(tampered_id) && problems.contains(missing_id),
        "{problems}"
    );
}

/// A legacy file stored as one object (`s3://bucket/name.maif`) is read in place too.
#[test]
fn a_legacy_file_stored_as_one_object_is_read_in_place() {
    let settings = s3_settings();
    let bucket = s3::bucket("inplace-object");
    let store = s3::store(&bucket);
    for (file, kind) in [
        ("python-sdk/sdk_multimodal.maif", SourceKind::PythonSdk),
        (
            "legacy-local/binary-format-b.maif",
            SourceKind::BinaryFormat,
        ),
    ] {
        let path = common::fixtures().join(file);
        let bytes = std::fs::read(&path).unwrap();
        let key = format!("archive/{}", path.file_name().unwrap().to_str().unwrap());
        put(&store, &key, bytes, &Map::new());
        let url = format!("s3://{bucket}/{key}");
        assert_eq!(
            common::block_on(detect(&url, &settings)).expect("detect"),
            Variant::Legacy(kind),
            "{url}"
        );
        let remote = common::block_on(open_legacy(&url, &settings, LegacyOptions::default()))
            .expect("open the object");
        let local = common::block_on(open_legacy(
            &text(&path),
            &S3Settings::default(),
            LegacyOptions::default(),
        ))
        .expect("open the file");
        assert_eq!(remote.blocks().len(), local.blocks().len(), "{url}");
        for (r, l) in remote.blocks().iter().zip(local.blocks()) {
            assert_eq!(
                (r.id(), r.sha256.clone(), r.verdict),
                (l.id(), l.sha256.clone(), l.verdict)
            );
            let payload = common::block_on(remote.payload(&r.block_id, r.version)).unwrap();
            assert_eq!(Some(common::sha256_hex(&payload)), l.sha256, "{url}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Garbage
// ---------------------------------------------------------------------------------------

#[test]
fn garbage_gets_a_clear_error() {
    let work = tempfile::tempdir().unwrap();
    let sdk = std::fs::read(common::fixtures().join("python-sdk/sample_text.maif")).unwrap();
    let random: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let cases: Vec<(&str, Vec<u8>, &[&str])> = vec![
        ("empty.maif", Vec::new(), &["not a known legacy format"]),
        (
            "random.maif",
            random,
            &["not a known legacy format", "first 8 bytes"],
        ),
        (
            "text.maif",
            b"just some text, not MAIF at all\n".to_vec(),
            &["not a known legacy format"],
        ),
        (
            "variant.maif",
            b"MAIF\x00\x07\x00\x00rest of a file".to_vec(),
            &["unknown MAIF variant 00070000"],
        ),
        (
            "binary.maif",
            b"MAIF\x00\x01\x00\x00 too short for binary_format".to_vec(),
            &["binary_format.py magic"],
        ),
    ];
    let settings = S3Settings::default();
    for (name, bytes, says) in cases {
        let path = work.path().join(name);
        std::fs::write(&path, &bytes).unwrap();
        let error = common::block_on(detect(&text(&path), &settings))
            .expect_err("garbage is not detected as anything")
            .to_string();
        assert!(
            error.contains(&text(&path)),
            "{name}: the error names the file: {error}"
        );
        for said in says {
            assert!(error.contains(said), "{name}: {error}");
        }
        let opened = common::block_on(open_legacy(
            &text(&path),
            &settings,
            LegacyOptions::default(),
        ));
        assert!(opened.is_err(), "{name}: opened");
    }
    // The SDK's magic names the kind; a file cut in half is refused when it is read.
    let truncated = work.path().join("truncated-sdk.maif");
    std::fs::write(&truncated, &sdk[..sdk.len() / 2]).unwrap();
    assert_eq!(
        common::block_on(detect(&text(&truncated), &settings)).expect("detect"),
        Variant::Legacy(SourceKind::PythonSdk)
    );
    let error = common::block_on(open_legacy(
        &text(&truncated),
        &settings,
        LegacyOptions::default(),
    ))
    .expect_err("half an SDK file is not read")
    .to_string();
    assert!(error.contains("truncated-sdk.maif"), "{error}");
    eprintln!("truncated SDK file: {error}");
    let missing = work.path().join("missing.maif");
    let error = common::block_on(detect(&text(&missing), &settings))
        .expect_err("no such file")
        .to_string();
    assert!(error.contains("missing.maif"), "{error}");
    let error = common::block_on(detect(&text(work.path()), &settings))
        .expect_err("a directory")
        .to_string();
    assert!(error.contains("is a directory"), "{error}");
}

#[test]
fn a_prefix_without_any_maif_artifact_gets_a_clear_error() {
    let settings = s3_settings();
    let bucket = s3::bucket("inplace-garbage");
    let store = s3::store(&bucket);
    put(&store, "junk/readme.txt", b"hello".to_vec(), &Map::new());
    put(&store, "junk/data/not-a-block", b"x".to_vec(), &Map::new());
    for location in [
        format!("s3://{bucket}/junk"),
        format!("s3://{bucket}/nothing-here"),
    ] {
        let error = common::block_on(detect(&location, &settings))
            .expect_err("no artifact")
            .to_string();
        assert!(
            error.contains("no canonical MAIF artifact")
                && error.contains("no legacy MAIF artifact"),
            "{location}: {error}"
        );
        assert!(error.contains(&location), "{location}: {error}");
        assert!(
            common::block_on(open_legacy(&location, &settings, LegacyOptions::default())).is_err()
        );
    }
}
