//! Layout A (`S3BlockStorage`): `block_index.json` plus one raw-payload object per block
//! under `data/`, described by its user metadata (v0 and v1 writer generations).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::chain::{self, ChainHeader, Link, Seconds};
use super::{
    ListedObject, Listing, S3Source, block_evidence, caller_metadata, python_us, read_signature,
    string_map,
};
use crate::error::Result;
use crate::model::{
    BlockStatus, Body, BodyChecks, Check, LegacyArtifact, LegacyBlock, Severity, SourceKind,
    block_id_for, canonical_type, type_text,
};
use crate::pyjson::PyJson;

/// One entry of `block_index.json`'s `blocks` list.
struct IndexEntry {
    position: usize,
    header: PyJson,
    s3_key: Option<String>,
}

struct ParsedIndex {
    entries: BTreeMap<String, IndexEntry>,
    signatures: BTreeMap<String, PyJson>,
}

fn parse_index(artifact: &mut LegacyArtifact, source: &S3Source, index: &PyJson) -> ParsedIndex {
    let mut parsed = ParsedIndex {
        entries: BTreeMap::new(),
        signatures: BTreeMap::new(),
    };
    let Some(PyJson::Array(blocks)) = index.get("blocks") else {
        artifact.finding(
            Severity::Error,
            "index_unreadable",
            source.key("block_index.json"),
            "block_index.json has no `blocks` list; every data/ object is treated as unindexed",
        );
        return parsed;
    };
    let positions = match index.get("block_index") {
        Some(PyJson::Object(members)) => members.clone(),
        _ => Vec::new(),
    };
    let mut positions_ok = true;
    let mut keys_ok = true;
    for (position, entry) in blocks.iter().enumerate() {
        let header = entry.get("header").cloned().unwrap_or(PyJson::Null);
        let Some(uuid) = header
            .get("uuid")
            .and_then(PyJson::as_str)
            .map(str::to_owned)
        else {
            artifact.finding(
                Severity::Error,
                "index_entry_unreadable",
                format!("{} blocks[{position}]", source.key("block_index.json")),
                "index entry has no header.uuid; skipped (its object, if any, is migrated as an orphan)",
            );
            continue;
        };
        let declared = positions
            .iter()
            .find(|(listed, _)| *listed == uuid)
            .and_then(|(_, declared)| declared.as_u64());
        if declared != Some(position as u64) {
            positions_ok = false;
        }
        let s3_key = entry
            .get("s3_key")
            .and_then(PyJson::as_str)
            .map(str::to_owned);
        if s3_key.as_deref() != Some(source.key(&format!("data/{uuid}")).as_str()) {
            keys_ok = false;
        }
        parsed.entries.insert(
            uuid,
            IndexEntry {
                position,
                header,
                s3_key,
            },
        );
    }
    artifact.checks.push(Check::expect(
        "index_positions",
        positions_ok && positions.len() == blocks.len(),
        || "block_index positions do not match the order of the blocks list".into(),
    ));
    artifact
        .checks
        .push(Check::expect("index_keys", keys_ok, || {
            "some s3_key values are not <prefix>/data/<uuid>".into()
        }));
    if let Some(PyJson::Object(signatures)) = index.get("block_signatures") {
        parsed.signatures = signatures.iter().cloned().collect();
    }
    parsed
}

/// The uuid a `data/` key names: its last segment, up to the first `.`.
fn key_uuid(key: &str) -> &str {
    let segment = key.rsplit('/').next().unwrap_or(key);
    segment.split('.').next().unwrap_or(segment)
}

/// What a text field of a header says: the object metadata, else the index header.
fn field(
    metadata: Option<&BTreeMap<String, String>>,
    index: Option<&PyJson>,
    name: &str,
) -> Option<String> {
    metadata
        .and_then(|from_object| from_object.get(name).cloned())
        .or_else(|| match index.and_then(|header| header.get(name)) {
            Some(PyJson::String(text)) => Some(text.clone()),
            Some(PyJson::Number(token)) => Some(token.clone()),
            _ => None,
        })
}

pub async fn build(source: &S3Source, listing: Listing) -> Result<LegacyArtifact> {
    let mut artifact = LegacyArtifact::new(SourceKind::S3LayoutA, source.url.clone());
    let index_key = source.key("block_index.json");
    artifact
        .file_level
        .insert("index_key".into(), json!(index_key));
    let index = match &listing.block_index {
        Some(object) => {
            let (body, parsed) = source.fetch_index(object).await?;
            artifact.sections.push(("block_index.json".into(), body));
            artifact
                .file_level
                .insert("index_etag".into(), json!(object.etag));
            artifact.file_level.insert(
                "index_object_metadata".into(),
                Value::Object(string_map(source.head(&object.key).await?.metadata.iter())),
            );
            match parsed {
                Ok(value) => Some(parse_index(&mut artifact, source, &value)),
                Err(error) => {
                    artifact.finding(
                        Severity::Error,
                        "index_unreadable",
                        &index_key,
                        error.to_string(),
                    );
                    None
                }
            }
        }
        None => {
            artifact.finding(
                Severity::Warning,
                "index_missing",
                &index_key,
                "block_index.json is missing: every data/ object with block metadata is migrated, ordered by hash chain and time",
            );
            None
        }
    };
    artifact
        .file_level
        .insert("index_present".into(), json!(index.is_some()));

    let mut objects: BTreeMap<String, &ListedObject> = BTreeMap::new();
    for object in &listing.data {
        if let Some(first) = objects.insert(key_uuid(&object.key).to_owned(), object) {
            artifact.finding(
                Severity::Error,
                "uuid_collision",
                &first.key,
                format!(
                    "{} names the same legacy uuid; only {} is migrated",
                    first.key, object.key
                ),
            );
        }
    }
    let indexed: BTreeSet<String> = index
        .as_ref()
        .map(|parsed| parsed.entries.keys().cloned().collect())
        .unwrap_or_default();
    let mut uuids: BTreeSet<String> = indexed.clone();
    for (uuid, object) in &objects {
        let is_block =
            object.metadata.contains_key("block_type") && object.metadata.contains_key("size");
        if is_block || indexed.contains(uuid) {
            uuids.insert(uuid.clone());
        } else {
            artifact.finding(
                Severity::Warning,
                "stray_object",
                &object.key,
                "data/ object without block metadata and not in the index: not a block, not migrated",
            );
        }
    }
    for object in &listing.stray {
        artifact.finding(
            Severity::Warning,
            "stray_object",
            &object.key,
            "not part of layout A (not block_index.json or a direct child of data/): not migrated",
        );
    }
    if let Some(index) = &index {
        for uuid in index.signatures.keys() {
            if !uuids.contains(uuid) {
                artifact.finding(
                    Severity::Warning,
                    "orphan_signature",
                    uuid,
                    "block_signatures names a block that has neither an index entry nor an object (a failed add); no block is created from it",
                );
            }
        }
    }

    let mut blocks = Vec::new();
    let mut headers = Vec::new();
    let mut times = Vec::new();
    for uuid in &uuids {
        let object = objects.get(uuid).copied();
        let entry = index.as_ref().and_then(|parsed| parsed.entries.get(uuid));
        let metadata = object.map(|found| &found.metadata);
        let index_header = entry.map(|indexed| &indexed.header);
        let key = object
            .map(|found| found.key.clone())
            .or_else(|| entry.and_then(|indexed| indexed.s3_key.clone()))
            .unwrap_or_else(|| source.key(&format!("data/{uuid}")));
        let v1 = metadata.is_some_and(|user| {
            user.get("format_version").is_some_and(|value| value == "1")
                && user.get("magic").is_some_and(|value| value == "MAIF")
        });
        let block_type = field(metadata, index_header, "block_type").unwrap_or_default();
        let size_text = field(metadata, index_header, "size");
        let timestamp_token = field(metadata, index_header, "timestamp").unwrap_or_default();
        let previous_hash = field(metadata, index_header, "previous_hash");
        let version = field(metadata, index_header, "version");
        let flags = field(metadata, index_header, "flags");
        let timestamp_us = python_us(&timestamp_token).unwrap_or(0);
        let block_id = block_id_for(uuid);

        let mut checks = super::header_value_checks(&timestamp_token, size_text.as_deref());
        let mut status = match (object, entry, index.is_some()) {
            (Some(_), Some(_), _) | (Some(_), None, false) => BlockStatus::Live,
            (Some(_), None, true) => BlockStatus::Orphan,
            (None, _, _) => BlockStatus::Dangling,
        };
        if let (Some(metadata), Some(header)) = (metadata, index_header) {
            let mut differences = Vec::new();
            for name in ["size", "version", "timestamp", "previous_hash", "flags"] {
                let in_index = match header.get(name) {
                    Some(PyJson::Number(token)) => Some(token.clone()),
                    Some(PyJson::String(text)) => Some(text.clone()),
                    _ => None,
                };
                let in_object = metadata.get(name).cloned();
                let defaulted = match name {
                    "version" => Some("1".to_owned()),
                    "flags" => Some("0".to_owned()),
                    _ => None,
                };
                if in_object.clone().or(defaulted) != in_index {
                    differences.push(format!("{name}: object {in_object:?}, index {in_index:?}"));
                }
            }
            let index_type = header
                .get("block_type")
                .and_then(PyJson::as_str)
                .unwrap_or("");
            // v1 indexes pad short types with spaces; the object keeps the type as passed.
            if index_type.trim_end_matches(' ') != block_type.trim_end_matches(' ') {
                differences.push(format!(
                    "block_type: object {block_type:?}, index {index_type:?}"
                ));
            }
            checks.push(Check::expect(
                "index_header",
                differences.is_empty(),
                || {
                    format!(
                        "object metadata and block_index.json disagree: {}",
                        differences.join("; ")
                    )
                },
            ));
        }
        if v1 {
            let named = metadata
                .and_then(|user| user.get("uuid"))
                .cloned()
                .unwrap_or_default();
            checks.push(Check::expect("uuid_metadata", &named == uuid, || {
                format!("metadata uuid {named:?} differs from the key's {uuid:?}")
            }));
        }
        let object_signature = metadata.and_then(|user| user.get("signature")).cloned();
        let index_signature = index
            .as_ref()
            .and_then(|parsed| parsed.signatures.get(uuid))
            .map(PyJson::dumps);
        if let (Some(in_object), Some(in_index)) = (&object_signature, &index_signature)
            && in_object != in_index
        {
            checks.push(Check::fail(
                "index_signature",
                "the signature in block_index.json differs from the object's signature metadata",
            ));
        }
        let (signature_text, signature_source) = match (&object_signature, &index_signature) {
            (Some(text), _) => (Some(text.clone()), "object_metadata"),
            (None, Some(text)) => (Some(text.clone()), "block_index.json"),
            (None, None) => (None, "none"),
        };
        let hmac = read_signature(signature_text.as_deref(), &mut checks);
        let encrypted = metadata.is_some_and(|user| {
            user.get("encrypted")
                .or_else(|| user.get("user_encrypted"))
                .is_some_and(|value| value.eq_ignore_ascii_case("true"))
                || user.contains_key("encryption_method")
        });
        let body = match (object, encrypted) {
            (Some(_), true) => {
                status = BlockStatus::Encrypted;
                artifact.finding(
                    Severity::Error,
                    "encrypted",
                    &key,
                    "the body is ciphertext and no key or algorithm is available: not migrated (never as plaintext)",
                );
                Body::Absent
            }
            (Some(object), false) => Body::Object {
                key: key.clone(),
                etag: object.etag.clone(),
                size: object.size,
            },
            (None, _) => {
                artifact.finding(
                    Severity::Error,
                    "dangling",
                    &key,
                    "indexed in block_index.json but the object is missing: header and signature kept in the report",
                );
                Body::Absent
            }
        };
        if status == BlockStatus::Orphan {
            artifact.finding(
                Severity::Warning,
                "orphan_object",
                &key,
                "object present but not in block_index.json (e.g. a second writer's block): migrated and flagged",
            );
        }

        let mut evidence = block_evidence(
            "s3-layout-a",
            &key,
            uuid,
            object,
            entry.map(|indexed| (indexed.position, &indexed.header)),
        );
        evidence.insert("generation".into(), json!(if v1 { "v1" } else { "v0" }));
        evidence.insert("timestamp".into(), json!(timestamp_token));
        evidence.insert("previous_hash".into(), json!(previous_hash));
        evidence.insert("signature".into(), json!(signature_text));
        evidence.insert("signature_source".into(), json!(signature_source));
        if !v1 && object.is_some() {
            evidence.insert(
                "note".into(),
                json!("v0 object: no content hash was written; only the size can be checked"),
            );
        }
        let user_metadata = caller_metadata(metadata, "user_", &mut evidence);
        let declared_sha256 = if v1 {
            metadata
                .and_then(|user| user.get("block_hash"))
                .map(|hash| ("block_hash metadata".to_owned(), hash.clone()))
        } else {
            None
        };
        headers.push(ChainHeader {
            size: size_text
                .as_deref()
                .and_then(|text| text.parse().ok())
                .unwrap_or(0),
            block_type: block_type.clone(),
            version: version
                .as_deref()
                .and_then(|text| text.parse().ok())
                .unwrap_or(1),
            timestamp_us,
            uuid: block_id,
            previous_hash: previous_hash.clone(),
            flags: flags
                .as_deref()
                .and_then(|text| text.parse().ok())
                .unwrap_or(0),
        });
        times.push((
            Seconds(timestamp_token.parse().unwrap_or(f64::NAN)),
            key.clone(),
        ));
        blocks.push(LegacyBlock {
            legacy_id: uuid.clone(),
            block_id,
            legacy_type: type_text(block_type.as_bytes()),
            block_type: canonical_type(block_type.as_bytes()),
            timestamp_us,
            status,
            evidence,
            user_metadata,
            body,
            checks,
            body_checks: BodyChecks {
                declared_size: size_text.as_deref().and_then(|text| text.parse().ok()),
                declared_sha256,
                signature_expected: hmac.is_some() || signature_text.is_none(),
                hmac,
            },
        });
    }
    apply_chain(&mut artifact, blocks, &headers, &times);
    artifact.created_us = artifact.blocks.iter().map(|block| block.timestamp_us).min();
    Ok(artifact)
}

/// Records every block's link, the gaps, forks and segments, and puts the blocks in chain
/// order.
fn apply_chain(
    artifact: &mut LegacyArtifact,
    mut blocks: Vec<LegacyBlock>,
    headers: &[ChainHeader],
    times: &[(Seconds, String)],
) {
    let analysis = chain::analyse(headers, times);
    let ids: Vec<String> = blocks.iter().map(|block| block.legacy_id.clone()).collect();
    for (position, link) in analysis.links.iter().enumerate() {
        let block = &mut blocks[position];
        let (check, described) = match link {
            Link::Root => (Check::pass("chain_link"), "root".to_owned()),
            Link::Parent(parent) => (
                Check::pass("chain_link"),
                format!("follows {}", ids[*parent]),
            ),
            Link::Gap(hash) => {
                artifact.finding(
                    Severity::Warning,
                    "chain_gap",
                    &block.legacy_id,
                    format!("previous_hash {hash} matches no block here: its predecessor was deleted or never listed"),
                );
                (
                    Check::unverifiable(
                        "chain_link",
                        format!("predecessor {hash} is not in the source"),
                    ),
                    format!("gap: predecessor {hash} not found"),
                )
            }
        };
        block.checks.push(check);
        block.evidence.insert("chain".into(), json!(described));
    }
    for (parent, children) in &analysis.forks {
        let names: Vec<&str> = children.iter().map(|child| ids[*child].as_str()).collect();
        artifact.finding(
            Severity::Info,
            "chain_fork",
            &ids[*parent],
            format!(
                "{} blocks name it as their predecessor: {}",
                children.len(),
                names.join(", ")
            ),
        );
    }
    if analysis.segments > 1 {
        artifact.finding(
            Severity::Info,
            "chain_segments",
            "",
            format!("{} chain segments (several roots or gaps); independent segments are ordered by time", analysis.segments),
        );
    }
    artifact
        .file_level
        .insert("chain_segments".into(), json!(analysis.segments));
    let mut slots: Vec<Option<LegacyBlock>> = blocks.into_iter().map(Some).collect();
    artifact.blocks = analysis
        .order
        .iter()
        .filter_map(|&position| slots.get_mut(position).and_then(Option::take))
        .collect();
}
