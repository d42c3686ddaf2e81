//! The legacy S3 fixtures (`../shared/fixtures/legacy-s3/<name>`, dumped from buckets the
//! Python code wrote): uploaded to a real S3 with their user metadata, and read back object
//! by object for comparison.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use futures::TryStreamExt as _;
use object_store::path::Path as ObjectPath;
use object_store::{Attribute, Attributes, GetOptions, ObjectStore, PutOptions};

/// `../shared/fixtures/legacy-s3/<name>` beside the checkout.
pub fn fixture_dir(name: &str) -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let shared = manifest
        .ancestors()
        .map(|dir| dir.join("../shared/fixtures/legacy-s3"))
        .find(|dir| dir.is_dir())
        .unwrap_or_else(|| {
            panic!(
                "../shared/fixtures/legacy-s3 beside the checkout of {}",
                manifest.display()
            )
        });
    shared.join(name)
}

/// Uploads a fixture's objects, bodies and user metadata as its `objects.json` lists them,
/// under their original keys.
pub async fn upload(store: &Arc<dyn ObjectStore>, name: &str) {
    let dir = fixture_dir(name);
    let listing: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("objects.json")).expect("objects.json"))
            .expect("objects.json is JSON");
    for object in listing.as_array().expect("objects.json is a list") {
        let key = object["key"].as_str().expect("key");
        let body = std::fs::read(dir.join("objects").join(key)).expect("fixture body");
        if let Some(sha256) = object["sha256"].as_str() {
            let digest = <sha2::Sha256 as sha2::Digest>::digest(&body);
            assert_eq!(hex::encode(digest), sha256, "{key}: the fixture body");
        }
        let mut attributes = Attributes::new();
        for (name, value) in object["metadata"].as_object().expect("metadata") {
            attributes.insert(
                Attribute::Metadata(name.clone().into()),
                value.as_str().expect("string metadata").to_owned().into(),
            );
        }
        put_object(store, key, body, attributes).await;
    }
}

/// Puts one object with `attributes` (user metadata), panicking on failure.
pub async fn put_object(
    store: &Arc<dyn ObjectStore>,
    key: &str,
    body: Vec<u8>,
    attributes: Attributes,
) {
    store
        .put_opts(
            &ObjectPath::from(key),
            body.into(),
            PutOptions {
                attributes,
                ..PutOptions::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("upload {key}: {e}"));
}

/// The keys a fixture's `objects.json` lists.
pub fn fixture_keys(name: &str) -> Vec<String> {
    let listing: serde_json::Value = serde_json::from_slice(
        &std::fs::read(fixture_dir(name).join("objects.json")).expect("objects.json"),
    )
    .expect("objects.json is JSON");
    listing
        .as_array()
        .expect("a list")
        .iter()
        .map(|o| o["key"].as_str().expect("key").to_owned())
        .collect()
}

/// Every object under `prefix`: key relative to it -> (body, user metadata).
pub type Objects = BTreeMap<String, (Vec<u8>, BTreeMap<String, String>)>;

pub async fn objects_under(store: &Arc<dyn ObjectStore>, prefix: &str) -> Objects {
    let listed: Vec<object_store::ObjectMeta> = store
        .list(Some(&ObjectPath::from(prefix)))
        .try_collect()
        .await
        .expect("list");
    let mut out = BTreeMap::new();
    for meta in listed {
        let result = store
            .get_opts(&meta.location, GetOptions::default())
            .await
            .expect("get");
        let metadata: BTreeMap<String, String> = result
            .attributes
            .iter()
            .filter_map(|(a, v)| match a {
                Attribute::Metadata(k) => Some((k.to_string(), v.to_string())),
                _ => None,
            })
            .collect();
        let body = result.bytes().await.expect("body").to_vec();
        let key = meta.location.to_string();
        let relative = key
            .strip_prefix(prefix.trim_end_matches('/'))
            .map(|k| k.trim_start_matches('/'))
            .expect("under the prefix")
            .to_owned();
        out.insert(relative, (body, metadata));
    }
    out
}

/// A fresh bucket on the test S3 holding the fixture `name`: the bucket, its store, and the
/// artifact prefix the fixture's `expected.json` names (without a trailing `/`).
pub fn in_fresh_bucket(name: &str) -> (String, Arc<dyn ObjectStore>, String) {
    let bucket = super::s3::bucket(&format!("legacy-{name}"));
    let store = super::s3::store(&bucket);
    super::block_on(upload(&store, name));
    let expected: serde_json::Value = serde_json::from_slice(
        &std::fs::read(fixture_dir(name).join("expected.json")).expect("expected.json"),
    )
    .expect("expected JSON");
    let prefix = expected["prefix"]
        .as_str()
        .expect("prefix")
        .trim_end_matches('/')
        .to_owned();
    (bucket, store, prefix)
}
