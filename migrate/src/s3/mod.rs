//! Legacy S3 layouts: listing, object metadata, layout detection.
//!
//! One legacy artifact is one prefix. Everything under it is listed (object_store pages
//! through ListObjectsV2 continuation tokens), every candidate block object gets a HEAD for
//! its user metadata, and bodies are fetched later, in migration order, pinned by ETag to
//! the version whose metadata was read. Nothing is ever written to the source.

pub mod chain;
pub mod layout_a;
pub mod layout_b;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _};
use object_store::path::Path;
use object_store::{Attribute, GetOptions, ObjectStore};

use crate::error::{MigrateError, Result};
use crate::model::{LegacyArtifact, SourceKind};
use crate::pyjson::PyJson;

/// An index object larger than this is refused rather than read into memory.
const MAX_INDEX_BYTES: u64 = 1 << 30;

/// A legacy prefix in an object store.
#[derive(Debug, Clone)]
pub struct S3Source {
    pub store: Arc<dyn ObjectStore>,
    /// The prefix without a trailing slash ("" for the bucket root).
    pub prefix: String,
    /// The location as the user gave it, for messages and provenance.
    pub url: String,
    /// Requests in flight.
    pub concurrency: usize,
}

/// One listed object with the user metadata from its HEAD.
#[derive(Debug, Clone)]
pub struct ListedObject {
    pub key: String,
    pub size: u64,
    pub etag: Option<String>,
    /// `x-amz-meta-*` as S3 returns them (names lower-cased), verbatim.
    pub metadata: BTreeMap<String, String>,
}

/// What a HEAD request tells about an object.
#[derive(Debug, Clone)]
pub struct ObjectHead {
    /// `x-amz-meta-*`, names lower-cased by S3, values verbatim.
    pub metadata: BTreeMap<String, String>,
    pub etag: Option<String>,
    pub size: u64,
}

/// The keys under a prefix, sorted into what each layout uses.
#[derive(Debug, Default)]
pub struct Listing {
    pub block_index: Option<ListedObject>,
    pub unified_index: Option<ListedObject>,
    /// Direct children of `data/` (layout A), by uuid segment.
    pub data: Vec<ListedObject>,
    /// Direct children of `blocks/` (layout B).
    pub blocks: Vec<ListedObject>,
    /// Anything else under the prefix.
    pub stray: Vec<ListedObject>,
    /// Total objects listed.
    pub listed: usize,
}

impl S3Source {
    pub fn key(&self, relative: &str) -> String {
        if self.prefix.is_empty() {
            relative.to_owned()
        } else {
            format!("{}/{relative}", self.prefix)
        }
    }

    fn relative<'k>(&self, key: &'k str) -> &'k str {
        if self.prefix.is_empty() {
            key
        } else {
            key.strip_prefix(&self.prefix)
                .and_then(|k| k.strip_prefix('/'))
                .unwrap_or(key)
        }
    }

    fn object_error(key: &str) -> impl FnOnce(object_store::Error) -> MigrateError + '_ {
        move |source| MigrateError::Object {
            key: key.to_owned(),
            source,
        }
    }

    /// Lists every object under the prefix and sorts the keys by role. Only direct
    /// children of `data/` and `blocks/` can be blocks: a layout-A artifact at `blocks/`
    /// seen from its parent has keys `blocks/data/<uuid>`, which are not `blocks/<seg>`.
    pub async fn list(&self) -> Result<Listing> {
        let prefix = (!self.prefix.is_empty())
            .then(|| object_path(&self.prefix))
            .transpose()?;
        let objects: Vec<object_store::ObjectMeta> = self
            .store
            .list(prefix.as_ref())
            .try_collect()
            .await
            .map_err(Self::object_error(&self.prefix))?;
        let mut listing = Listing {
            listed: objects.len(),
            ..Listing::default()
        };
        for meta in objects {
            let key = meta.location.to_string();
            let object = ListedObject {
                size: meta.size,
                etag: meta.e_tag,
                metadata: BTreeMap::new(),
                key: key.clone(),
            };
            let relative = self.relative(&key);
            match relative.split_once('/') {
                None if relative == "block_index.json" => listing.block_index = Some(object),
                None if relative == "unified_index.json" => listing.unified_index = Some(object),
                Some(("data", seg)) if !seg.is_empty() && !seg.contains('/') => {
                    listing.data.push(object)
                }
                Some(("blocks", seg)) if !seg.is_empty() && !seg.contains('/') => {
                    listing.blocks.push(object)
                }
                _ => listing.stray.push(object),
            }
        }
        Ok(listing)
    }

    /// HEADs every object (bounded concurrency) and fills in its user metadata and ETag.
    pub async fn head_all(
        &self,
        objects: &mut [ListedObject],
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<()> {
        let heads: Vec<(usize, ObjectHead)> = futures::stream::iter(objects.iter().enumerate())
            .map(|(i, object)| async move {
                let head = self.head(&object.key).await?;
                progress(1);
                Ok::<_, MigrateError>((i, head))
            })
            .buffer_unordered(self.concurrency.max(1))
            .try_collect()
            .await?;
        for (i, head) in heads {
            let object = &mut objects[i];
            object.metadata = head.metadata;
            object.etag = head.etag.or(object.etag.take());
            object.size = head.size;
        }
        Ok(())
    }

    /// User metadata, ETag and size of one object (a HEAD request).
    pub async fn head(&self, key: &str) -> Result<ObjectHead> {
        let options = GetOptions {
            head: true,
            ..GetOptions::default()
        };
        let result = self
            .store
            .get_opts(&object_path(key)?, options)
            .await
            .map_err(Self::object_error(key))?;
        Ok(ObjectHead {
            metadata: user_metadata(&result.attributes),
            etag: result.meta.e_tag.clone(),
            size: result.meta.size,
        })
    }

    /// The body of `key`, refusing a different version than `etag` names (the object was
    /// overwritten between HEAD and GET: its metadata would not describe this body).
    pub async fn fetch(&self, key: &str, etag: Option<&str>) -> Result<Bytes> {
        let options = GetOptions {
            if_match: etag.map(str::to_owned),
            ..GetOptions::default()
        };
        let path = object_path(key)?;
        let result = self
            .store
            .get_opts(&path, options)
            .await
            .map_err(Self::object_error(key))?;
        result.bytes().await.map_err(Self::object_error(key))
    }

    /// A small JSON object (an index), parsed with its number tokens kept.
    pub async fn fetch_index(&self, object: &ListedObject) -> Result<(Bytes, Result<PyJson>)> {
        if object.size > MAX_INDEX_BYTES {
            return Err(MigrateError::malformed(
                &self.url,
                format!("index object {}", object.key),
                0,
                format!(
                    "{} bytes is over the {MAX_INDEX_BYTES}-byte limit",
                    object.size
                ),
            ));
        }
        let body = self.fetch(&object.key, object.etag.as_deref()).await?;
        let parsed = PyJson::parse(&body).map_err(|e| {
            MigrateError::malformed(
                &self.url,
                format!("index object {}", object.key),
                e.offset as u64,
                e.reason,
            )
        });
        Ok((body, parsed))
    }
}

/// A key exactly as listed (`Path::from` would percent-encode characters such as `~`).
fn object_path(key: &str) -> Result<Path> {
    Path::parse(key).map_err(|e| MigrateError::Usage(format!("object key {key:?}: {e}")))
}

/// The `x-amz-meta-*` attributes of a GET/HEAD response.
pub(crate) fn user_metadata(attributes: &object_store::Attributes) -> BTreeMap<String, String> {
    attributes
        .iter()
        .filter_map(|(attribute, value)| match attribute {
            Attribute::Metadata(name) => Some((name.to_string(), value.to_string())),
            _ => None,
        })
        .collect()
}

/// Decides the layout from the listing and the candidates' metadata.
pub fn detect(source: &S3Source, listing: &Listing) -> Result<SourceKind> {
    let looks_like_layout_a = listing.block_index.is_some()
        || listing.data.iter().any(|object| {
            object.metadata.contains_key("block_type") && object.metadata.contains_key("size")
        });
    let looks_like_layout_b = listing.unified_index.is_some()
        || listing.blocks.iter().any(|object| {
            object
                .metadata
                .get("maif_magic")
                .is_some_and(|magic| magic == "MAIF")
        });
    match (looks_like_layout_a, looks_like_layout_b) {
        (true, true) => Err(MigrateError::Unrecognized {
            source_name: source.url.clone(),
            reason: "two legacy layouts under one prefix (block_index.json/data/ and unified_index.json/blocks/); migrate each with --from".into(),
        }),
        (true, false) => Ok(SourceKind::S3LayoutA),
        (false, true) => Ok(SourceKind::S3LayoutB),
        (false, false) => Err(MigrateError::Unrecognized {
            source_name: source.url.clone(),
            reason: format!(
                "no legacy MAIF artifact under this prefix ({} objects listed; expected block_index.json + data/<uuid> or unified_index.json + blocks/<uuid> directly under it)",
                listing.listed
            ),
        }),
    }
}

/// Reads a legacy S3 artifact: list, HEAD every candidate, detect (or use `force`), and
/// build the blocks in migration order. Bodies are not fetched here.
pub async fn read(
    source: &S3Source,
    force: Option<SourceKind>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<LegacyArtifact> {
    let mut listing = source.list().await?;
    let mut candidates = std::mem::take(&mut listing.data);
    candidates.append(&mut listing.blocks);
    source.head_all(&mut candidates, progress).await?;
    // Every listed object, for the evidence that re-creates the prefix (`export original`).
    let listed: Vec<ListedObject> = candidates
        .iter()
        .chain(listing.block_index.iter())
        .chain(listing.unified_index.iter())
        .chain(listing.stray.iter())
        .cloned()
        .collect();
    let (blocks, data): (Vec<_>, Vec<_>) = candidates
        .into_iter()
        .partition(|o| source.relative(&o.key).starts_with("blocks/"));
    listing.data = data;
    listing.blocks = blocks;
    let kind = match force {
        Some(kind) if kind.is_s3() => kind,
        Some(kind) => {
            return Err(MigrateError::Usage(format!(
                "--from {} is a local format; {} is an object-store prefix",
                kind.as_str(),
                source.url
            )));
        }
        None => detect(source, &listing)?,
    };
    // What belongs to the other layout is reported, never silently ignored.
    let foreign: Vec<ListedObject> = match kind {
        SourceKind::S3LayoutA => std::mem::take(&mut listing.blocks)
            .into_iter()
            .chain(listing.unified_index.take())
            .collect(),
        _ => std::mem::take(&mut listing.data)
            .into_iter()
            .chain(listing.block_index.take())
            .collect(),
    };
    listing.stray.extend(foreign);
    let mut artifact = match kind {
        SourceKind::S3LayoutA => layout_a::build(source, listing).await?,
        _ => layout_b::build(source, listing).await?,
    };
    artifact.file_level.insert(
        "prefix".into(),
        serde_json::Value::String(source.prefix.clone()),
    );
    crate::export::keep_object_list(&mut artifact, source, listed).await?;
    Ok(artifact)
}

/// `trunc(ts_f64 * 1e6)`: how the legacy writers turned float seconds into microseconds
/// (an f64 multiply then truncation; parsing the decimal text gives a different answer).
pub fn python_us(token: &str) -> Option<u64> {
    let seconds: f64 = token.trim().parse().ok()?;
    let us = (seconds * 1_000_000.0).trunc();
    (us.is_finite() && us >= 0.0 && us < u64::MAX as f64).then_some(us as u64)
}

/// Header values that must parse: an unreadable timestamp or size is reported, never
/// silently read as 0.
pub fn header_value_checks(timestamp_token: &str, size: Option<&str>) -> Vec<crate::model::Check> {
    use crate::model::Check;
    vec![
        Check::expect("timestamp", python_us(timestamp_token).is_some(), || {
            format!("timestamp {timestamp_token:?} is not a number of seconds; recorded as 0")
        }),
        Check::expect(
            "size_metadata",
            size.is_some_and(|s| s.trim().parse::<u64>().is_ok()),
            || format!("size {size:?} is not a byte count"),
        ),
    ]
}

/// The evidence every S3 layout keeps for a block, verbatim: where it lives, what its object
/// said, and its entry in the legacy index (as JSON text, numbers as written).
pub fn block_evidence(
    format: &str,
    key: &str,
    uuid: &str,
    object: Option<&ListedObject>,
    index_entry: Option<(usize, &PyJson)>,
) -> serde_json::Map<String, serde_json::Value> {
    use serde_json::json;
    let mut evidence = serde_json::Map::new();
    evidence.insert("format".into(), json!(format));
    evidence.insert("key".into(), json!(key));
    evidence.insert("uuid".into(), json!(uuid));
    if let Some(object) = object {
        evidence.insert("etag".into(), json!(object.etag));
        evidence.insert("content_length".into(), json!(object.size));
        evidence.insert(
            "object_metadata".into(),
            serde_json::Value::Object(string_map(object.metadata.iter())),
        );
    }
    if let Some((position, header)) = index_entry {
        evidence.insert("index_position".into(), json!(position));
        evidence.insert("index_header_json".into(), json!(header.dumps()));
    }
    evidence
}

/// The caller's metadata: the object metadata named `<prefix><key>`, prefix stripped,
/// values the exact strings S3 returned (S3 lower-cased the keys; the evidence says so).
pub fn caller_metadata(
    metadata: Option<&BTreeMap<String, String>>,
    prefix: &str,
    evidence: &mut serde_json::Map<String, serde_json::Value>,
) -> serde_json::Map<String, serde_json::Value> {
    let caller: serde_json::Map<String, serde_json::Value> = metadata
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| {
            k.strip_prefix(prefix)
                .map(|k| (k.to_owned(), serde_json::Value::String(v.clone())))
        })
        .collect();
    if !caller.is_empty() {
        evidence.insert(
            "user_metadata_keys".into(),
            serde_json::json!("lower-cased by S3; values are the exact strings stored"),
        );
    }
    caller
}

/// Reads a legacy signature JSON text; an unreadable one is reported as unverifiable.
pub fn read_signature(
    text: Option<&str>,
    checks: &mut Vec<crate::model::Check>,
) -> Option<crate::model::LegacyHmac> {
    match crate::hmac::parse_signature(text?) {
        Ok(signature) => Some(signature),
        Err(reason) => {
            checks.push(crate::model::Check::unverifiable(
                "hmac_signature",
                format!("signature JSON unreadable: {reason}"),
            ));
            None
        }
    }
}

/// Metadata strings as a JSON object (strings stay strings).
pub fn string_map<'a>(
    pairs: impl Iterator<Item = (&'a String, &'a String)>,
) -> serde_json::Map<String, serde_json::Value> {
    pairs
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect()
}
