//! Layout B (`UnifiedStorage` on AWS): `unified_index.json` plus one raw-payload object per
//! block under `blocks/`, described by `maif_*` user metadata.
//!
//! There is no chain between distinct blocks. Updates overwrite the object in place (only
//! the old payload's hash survives), and a soft delete writes a 0-byte `LIFE` deletion
//! record while the target's data stays. The index order (first insertion) is the order.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use super::chain::Seconds;
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

const DELETED: u64 = 0x08;

fn is_deletion_record(metadata: &BTreeMap<String, String>, size: u64) -> bool {
    size == 0
        && metadata
            .get("maif_block_type")
            .is_some_and(|block_type| block_type.trim() == "LIFE")
        && metadata
            .get("maif_meta_action")
            .is_some_and(|action| action == "delete")
        && metadata.contains_key("maif_meta_target_uuid")
}

pub async fn build(source: &S3Source, listing: Listing) -> Result<LegacyArtifact> {
    let mut artifact = LegacyArtifact::new(SourceKind::S3LayoutB, source.url.clone());
    let index_key = source.key("unified_index.json");
    artifact
        .file_level
        .insert("index_key".into(), json!(index_key));
    let mut index_order: Vec<(String, PyJson)> = Vec::new();
    match &listing.unified_index {
        Some(object) => {
            let (body, parsed) = source.fetch_index(object).await?;
            artifact.sections.push(("unified_index.json".into(), body));
            artifact.file_level.insert("index_etag".into(), json!(object.etag));
            match parsed {
                Ok(index) => match index.get("blocks") {
                    Some(PyJson::Array(headers)) => {
                        for (position, header) in headers.iter().enumerate() {
                            match header.get("uuid").and_then(PyJson::as_str) {
                                Some(uuid) => index_order.push((uuid.to_owned(), header.clone())),
                                None => artifact.finding(
                                    Severity::Error,
                                    "index_entry_unreadable",
                                    format!("{index_key} blocks[{position}]"),
                                    "index entry has no uuid; skipped",
                                ),
                            }
                        }
                    }
                    _ => artifact.finding(
                        Severity::Error,
                        "index_unreadable",
                        &index_key,
                        "unified_index.json has no `blocks` list",
                    ),
                },
                Err(error) => artifact.finding(Severity::Error, "index_unreadable", &index_key, error.to_string()),
            }
        }
        None => artifact.finding(
            Severity::Warning,
            "index_missing",
            &index_key,
            "unified_index.json is missing: blocks are ordered by timestamp, which is lossy (an in-place update moves a block's timestamp)",
        ),
    }
    let index_present = listing.unified_index.is_some();
    artifact
        .file_level
        .insert("index_present".into(), json!(index_present));
    for object in &listing.stray {
        artifact.finding(
            Severity::Warning,
            "stray_object",
            &object.key,
            "not part of layout B (not unified_index.json or a direct child of blocks/): not migrated",
        );
    }

    let objects: BTreeMap<String, &ListedObject> = listing
        .blocks
        .iter()
        .map(|listed| {
            (
                listed
                    .key
                    .rsplit('/')
                    .next()
                    .unwrap_or(&listed.key)
                    .to_owned(),
                listed,
            )
        })
        .collect();
    let index_headers: BTreeMap<&str, (usize, &PyJson)> = index_order
        .iter()
        .enumerate()
        .map(|(position, (uuid, header))| (uuid.as_str(), (position, header)))
        .collect();

    // Deletion records fold into their target's evidence when the target is here.
    let mut deletions: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut folded: BTreeSet<String> = BTreeSet::new();
    for (uuid, object) in &objects {
        if is_deletion_record(&object.metadata, object.size)
            && let Some(target) = object.metadata.get("maif_meta_target_uuid")
            && objects.contains_key(target)
            && !objects.get(target).is_some_and(|target_object| {
                is_deletion_record(&target_object.metadata, target_object.size)
            })
        {
            let mut record = Map::new();
            record.insert("uuid".into(), json!(uuid));
            record.insert("key".into(), json!(object.key));
            record.insert("etag".into(), json!(object.etag));
            record.insert(
                "object_metadata".into(),
                Value::Object(string_map(object.metadata.iter())),
            );
            let empty_hash = crate::model::sha256_hex(b"");
            record.insert(
                "block_hash_matches_empty_body".into(),
                json!(object.metadata.get("maif_block_hash") == Some(&empty_hash)),
            );
            deletions
                .entry(target.clone())
                .or_default()
                .push(Value::Object(record));
            folded.insert(uuid.clone());
        }
    }

    // Index order first, then unindexed objects by time.
    let mut order: Vec<String> = index_order.iter().map(|(uuid, _)| uuid.clone()).collect();
    let mut rest: Vec<(Seconds, String)> = objects
        .iter()
        .filter(|(uuid, _)| !index_headers.contains_key(uuid.as_str()))
        .map(|(uuid, listed)| {
            let seconds = listed
                .metadata
                .get("maif_timestamp")
                .and_then(|token| token.parse().ok())
                .unwrap_or(f64::NAN);
            (Seconds(seconds), uuid.clone())
        })
        .collect();
    rest.sort();
    order.extend(rest.into_iter().map(|(_, uuid)| uuid));

    let mut seen = BTreeSet::new();
    for uuid in order {
        if !seen.insert(uuid.clone()) {
            continue;
        }
        let object = objects.get(&uuid).copied();
        let header = index_headers
            .get(uuid.as_str())
            .map(|(_, indexed)| *indexed);
        let position = index_headers.get(uuid.as_str()).map(|(at, _)| *at);
        if folded.contains(&uuid) {
            artifact.finding(
                Severity::Info,
                "deletion_record",
                &uuid,
                "LIFE deletion record: kept in its target's evidence, not migrated as content",
            );
            continue;
        }
        let metadata = object.map(|found| &found.metadata);
        let text = |name: &str, index_name: &str| -> Option<String> {
            metadata
                .and_then(|user| user.get(name).cloned())
                .or_else(
                    || match header.and_then(|indexed| indexed.get(index_name)) {
                        Some(PyJson::String(text)) => Some(text.clone()),
                        Some(PyJson::Number(token)) => Some(token.clone()),
                        _ => None,
                    },
                )
        };
        let key = object
            .map(|found| found.key.clone())
            .unwrap_or_else(|| source.key(&format!("blocks/{uuid}")));
        let block_type = text("maif_block_type", "block_type").unwrap_or_default();
        let timestamp_token = text("maif_timestamp", "timestamp").unwrap_or_default();
        let version: u64 = text("maif_version", "version")
            .and_then(|text| text.parse().ok())
            .unwrap_or(1);
        let previous_hash = text("maif_previous_hash", "previous_hash");
        let index_flags = header
            .and_then(|indexed| indexed.get("flags"))
            .and_then(PyJson::as_u64)
            .unwrap_or(0);
        let mut checks = super::header_value_checks(
            &timestamp_token,
            metadata
                .and_then(|user| user.get("maif_size"))
                .map(String::as_str),
        );
        let mut status = match (object, header) {
            (Some(_), Some(_)) => BlockStatus::Live,
            (Some(_), None) if index_present => BlockStatus::Orphan,
            (Some(_), None) => BlockStatus::Live,
            (None, _) => BlockStatus::Dangling,
        };
        if let Some(metadata) = metadata {
            if is_deletion_record(metadata, object.map_or(0, |found| found.size)) {
                status = BlockStatus::DeletionRecord;
            } else if version > 1 && previous_hash.is_some() {
                status = BlockStatus::OverwrittenInPlace;
                artifact.finding(
                    Severity::Info,
                    "overwritten_in_place",
                    &uuid,
                    format!(
                        "updated in place to version {version}: only the current payload exists; the previous payload's SHA-256 was {}",
                        previous_hash.as_deref().unwrap_or("?")
                    ),
                );
            }
        }
        if index_flags & DELETED != 0 && status != BlockStatus::Dangling {
            status = BlockStatus::SoftDeleted;
        }
        if let (Some(metadata), Some(header)) = (metadata, header) {
            let index_hash = header.get("block_hash").and_then(PyJson::as_str);
            let object_hash = metadata.get("maif_block_hash").map(String::as_str);
            checks.push(Check::expect("index_block_hash", index_hash == object_hash, || {
                format!("unified_index.json says {index_hash:?}, object metadata says {object_hash:?}")
            }));
        }
        let hmac = read_signature(
            metadata
                .and_then(|user| user.get("maif_signature"))
                .map(String::as_str),
            &mut checks,
        );
        let signature_unreadable =
            hmac.is_none() && metadata.is_some_and(|user| user.contains_key("maif_signature"));
        let body = match object {
            Some(object) => Body::Object {
                key: key.clone(),
                etag: object.etag.clone(),
                size: object.size,
            },
            None => {
                artifact.finding(
                    Severity::Error,
                    "dangling",
                    &key,
                    "indexed in unified_index.json but the object is missing: header kept in the report",
                );
                Body::Absent
            }
        };
        if status == BlockStatus::Orphan {
            artifact.finding(
                Severity::Warning,
                "orphan_object",
                &key,
                "object present but not in unified_index.json: migrated and flagged",
            );
        }
        let mut evidence = block_evidence("s3-layout-b", &key, &uuid, object, position.zip(header));
        evidence.insert("timestamp".into(), json!(timestamp_token));
        evidence.insert("previous_hash".into(), json!(previous_hash));
        evidence.insert("version".into(), json!(version));
        if let Some(records) = deletions.remove(&uuid) {
            // A deletion record says so even where the index does not (stale or missing).
            if status != BlockStatus::Dangling {
                status = BlockStatus::SoftDeleted;
            }
            evidence.insert("deletion_records".into(), Value::Array(records));
        }
        if status == BlockStatus::OverwrittenInPlace {
            evidence.insert("previous_version_sha256".into(), json!(previous_hash));
            evidence.insert(
                "note".into(),
                json!("updated in place: the timestamp is the update time; the creation time and the old payload are lost in the source"),
            );
        }
        let user_metadata = caller_metadata(metadata, "maif_meta_", &mut evidence);
        let timestamp_us = python_us(&timestamp_token).unwrap_or(0);
        let block_id = block_id_for(&uuid);
        artifact.blocks.push(LegacyBlock {
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
                // The index `size` is 0 after an in-place update (a reference bug): trust
                // the object's own metadata and body.
                declared_size: metadata
                    .and_then(|user| user.get("maif_size"))
                    .and_then(|text| text.parse().ok()),
                declared_sha256: metadata
                    .and_then(|user| user.get("maif_block_hash"))
                    .map(|hash| ("maif_block_hash metadata".to_owned(), hash.clone())),
                hmac,
                signature_expected: !signature_unreadable,
            },
        });
    }
    artifact.created_us = artifact.blocks.iter().map(|block| block.timestamp_us).min();
    Ok(artifact)
}
