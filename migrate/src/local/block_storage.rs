//! `block_storage.py` (BlockStorage): a bare run of `[72-byte LE header][data]` records with
//! no magic, no file header and no index, so every record header is checked on its own.

use std::collections::HashMap;

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::{array, to_usize, trailing_bytes, u32_le, u64_le, uuid_text};
use crate::model::{
    BlockStatus, Body, BodyChecks, Check, LegacyArtifact, LegacyBlock, Severity, SourceKind,
    block_id_for, canonical_type, sha256_hex, type_text,
};
use crate::{MigrateError, Result};

const HEADER: usize = 72;
/// In this format flag 0x01 marks an update record; nothing here is ever compressed.
const UPDATE: u32 = 0x01;

struct Record {
    offset: usize,
    end: usize,
    size: u32,
    block_type: [u8; 4],
    version: u32,
    timestamp: u64,
    uuid: [u8; 16],
    previous_hash: [u8; 32],
    flags: u32,
}

impl Record {
    fn data_start(&self) -> usize {
        self.offset + HEADER
    }

    /// The stored previous_hash, or `None` for the NUL of a chain root.
    fn previous_hash(&self) -> Option<&[u8; 32]> {
        (self.previous_hash != [0; 32]).then_some(&self.previous_hash)
    }
}

/// The §1.1 heuristic, applied to one record header (there is no magic to go by).
fn check_header(
    block_type: &[u8; 4],
    uuid: &[u8; 16],
    prev: &[u8; 32],
    version: u32,
    flags: u32,
) -> Result<(), String> {
    let name_len = block_type.iter().position(|b| *b == 0).unwrap_or(4);
    let (name, padding) = block_type.split_at(name_len);
    if name.is_empty()
        || !name.iter().all(|b| (0x20..0x7f).contains(b))
        || padding.iter().any(|b| *b != 0)
    {
        return Err(format!(
            "block type {} is not 1 to 4 printable ASCII bytes padded with NUL",
            hex::encode(block_type)
        ));
    }
    if uuid[6] & 0xf0 != 0x40 || uuid[8] & 0xc0 != 0x80 {
        return Err(format!(
            "uuid bytes {} are not a version-4 RFC 4122 uuid",
            hex::encode(uuid)
        ));
    }
    let nul = prev.iter().all(|b| *b == 0);
    let hex = prev
        .iter()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b));
    if !nul && !hex {
        return Err("previous_hash is neither 32 NUL bytes nor 32 lower-case hex digits".into());
    }
    if version == 0 {
        return Err("version 0 (the writer starts at 1)".into());
    }
    if flags > UPDATE {
        return Err(format!("flags 0x{flags:08x} (the writer sets only 0 or 1)"));
    }
    Ok(())
}

/// The 72-byte little-endian record header. The S3 layout-A hash chain hashes these same
/// bytes (with no payload), so this is the one place they are written.
pub(crate) fn encode_header(
    size: u32,
    block_type: [u8; 4],
    version: u32,
    timestamp_us: u64,
    uuid: [u8; 16],
    previous_hash: [u8; 32],
    flags: u32,
) -> [u8; HEADER] {
    let mut out = [0u8; HEADER];
    out[0..4].copy_from_slice(&size.to_le_bytes());
    out[4..8].copy_from_slice(&block_type);
    out[8..12].copy_from_slice(&version.to_le_bytes());
    out[12..20].copy_from_slice(&timestamp_us.to_le_bytes());
    out[20..36].copy_from_slice(&uuid);
    out[36..68].copy_from_slice(&previous_hash);
    out[68..72].copy_from_slice(&flags.to_le_bytes());
    out
}

/// One record at `offset`, or why there is none.
fn record(d: &[u8], offset: usize) -> Result<Record, String> {
    let remain = d.len().saturating_sub(offset);
    if remain < HEADER {
        return Err(format!(
            "a {remain}-byte fragment, shorter than a {HEADER}-byte record header"
        ));
    }
    let field = |at: usize| offset.checked_add(at).ok_or("offset overflow");
    let parsed = (|| {
        Some(Record {
            offset,
            end: 0,
            size: u32_le(d, field(0).ok()?)?,
            block_type: array(d, field(4).ok()?)?,
            version: u32_le(d, field(8).ok()?)?,
            timestamp: u64_le(d, field(12).ok()?)?,
            uuid: array(d, field(20).ok()?)?,
            previous_hash: array(d, field(36).ok()?)?,
            flags: u32_le(d, field(68).ok()?)?,
        })
    })();
    let mut rec = parsed.ok_or("record header out of range")?;
    check_header(
        &rec.block_type,
        &rec.uuid,
        &rec.previous_hash,
        rec.version,
        rec.flags,
    )
    .map_err(|why| format!("not a record header: {why}"))?;
    let size = to_usize(u64::from(rec.size));
    rec.end = offset
        .checked_add(HEADER)
        .and_then(|at| at.checked_add(size))
        .filter(|end| *end <= d.len())
        .ok_or_else(|| {
            format!(
                "a record of {HEADER} + {size} bytes runs past the end of the file ({remain} bytes remain)"
            )
        })?;
    Ok(rec)
}

/// The records from offset 0, and where and why the walk stopped short of EOF.
fn walk(d: &[u8]) -> (Vec<Record>, Option<(usize, String)>) {
    let mut records = Vec::new();
    let mut offset = 0;
    while offset < d.len() {
        match record(d, offset) {
            Ok(rec) => {
                offset = rec.end;
                records.push(rec);
            }
            Err(why) => return (records, Some((offset, why))),
        }
    }
    (records, None)
}

/// The shape check of `detect`: every record passes the heuristic and the walk ends at EOF.
pub(super) fn confirm(data: &[u8]) -> Result<(), String> {
    if data.is_empty() {
        return Err("the file is empty".into());
    }
    match walk(data) {
        (_, None) => Ok(()),
        (records, Some((offset, why))) => Err(format!(
            "{} valid records, then at offset {offset}: {why}",
            records.len()
        )),
    }
}

/// Reads a `block_storage.py` file.
pub fn read(source: &str, data: &Bytes) -> Result<LegacyArtifact> {
    let d: &[u8] = data;
    let (records, stop) = walk(d);
    if records.is_empty() {
        let (offset, why) = stop.unwrap_or((0, "the file is empty: no records".into()));
        return Err(MigrateError::malformed(
            source,
            "record 0 header",
            offset as u64,
            why,
        ));
    }
    let mut art = LegacyArtifact::new(SourceKind::BlockStorage, source);

    // The 32-hex prefix of SHA-256(header ‖ data) of each record: what a successor stores.
    let full: Vec<String> = records
        .iter()
        .map(|r| sha256_hex(d.get(r.offset..r.end).unwrap_or_default()))
        .collect();
    let mut by_prefix: HashMap<&[u8], usize> = HashMap::new();
    let mut parent: Vec<Option<usize>> = Vec::with_capacity(records.len());
    let mut blocks: Vec<LegacyBlock> = Vec::with_capacity(records.len());
    for (i, rec) in records.iter().enumerate() {
        let legacy_id = uuid_text(rec.uuid);
        let (link, meaning, check) = match rec.previous_hash() {
            None => {
                if i > 0 {
                    art.finding(
                        Severity::Info,
                        "chain_root",
                        legacy_id.clone(),
                        format!(
                            "the record at offset {} starts a new chain (previous_hash is NUL): \
                             a new writer session",
                            rec.offset
                        ),
                    );
                }
                (None, "none".to_owned(), Check::pass("chain_link"))
            }
            Some(prefix) => match by_prefix.get(&prefix[..]) {
                Some(&j) => {
                    let target = &blocks[j].legacy_id;
                    (
                        Some(j),
                        format!("links to {target}"),
                        Check::pass("chain_link"),
                    )
                }
                None => {
                    art.finding(
                        Severity::Warning,
                        "gap",
                        legacy_id.clone(),
                        format!(
                            "previous_hash {} of the record at offset {} matches no earlier \
                             record: its predecessor is not in this file",
                            String::from_utf8_lossy(prefix),
                            rec.offset
                        ),
                    );
                    (
                        None,
                        "no match".to_owned(),
                        Check::unverifiable("chain_link", "predecessor not in this file"),
                    )
                }
            },
        };
        parent.push(link);

        let mut evidence = Map::new();
        evidence.insert("format".into(), json!("block-storage"));
        evidence.insert("offset".into(), json!(rec.offset));
        evidence.insert(
            "header_hex".into(),
            json!(hex::encode(
                d.get(rec.offset..rec.data_start()).unwrap_or_default()
            )),
        );
        evidence.insert("size".into(), json!(rec.size));
        evidence.insert("version".into(), json!(rec.version));
        evidence.insert("flags".into(), json!(rec.flags));
        evidence.insert("timestamp_us".into(), json!(rec.timestamp));
        evidence.insert(
            "previous_hash".into(),
            match rec.previous_hash() {
                Some(p) => json!(String::from_utf8_lossy(p)),
                None => Value::Null,
            },
        );
        evidence.insert("previous_hash_meaning".into(), json!(meaning));
        evidence.insert("record_sha256".into(), json!(full[i]));

        // The writer pads the type with NUL; the name it was given is what precedes them.
        let name_len = rec.block_type.iter().position(|b| *b == 0).unwrap_or(4);
        let type_name = rec.block_type.get(..name_len).unwrap_or_default();
        blocks.push(LegacyBlock {
            legacy_id: legacy_id.clone(),
            block_id: block_id_for(&legacy_id),
            legacy_type: type_text(type_name),
            block_type: canonical_type(&rec.block_type),
            timestamp_us: rec.timestamp,
            status: BlockStatus::Live,
            evidence,
            user_metadata: Map::new(),
            body: Body::Inline(data.slice(rec.data_start()..rec.end)),
            checks: vec![check],
            body_checks: BodyChecks {
                declared_size: Some(u64::from(rec.size)),
                ..BodyChecks::default()
            },
        });
        if let Some(prefix) = full[i].as_bytes().get(..32) {
            by_prefix.entry(prefix).or_insert(i);
        }
    }

    mark_updates(&records, &parent, &mut blocks, &mut art);
    report_forks(&parent, &blocks, &mut art);
    art.blocks = blocks;

    match &stop {
        None => art.checks.push(Check::pass("walk_ends_at_eof")),
        Some((offset, why)) => {
            art.checks.push(Check::fail(
                "walk_ends_at_eof",
                format!("the walk stopped at offset {offset}: {why}"),
            ));
            trailing_bytes(
                &mut art,
                *offset,
                d.len(),
                &format!(
                    "{why} (a file reopened by the reference writer keeps the old tail as garbage)"
                ),
            );
        }
    }
    art.finding(
        Severity::Info,
        "not_in_file",
        "file",
        "block_storage.py keeps caller metadata and signatures in memory only; the file has none",
    );
    super::note_duplicate_ids(&mut art);
    Ok(art)
}

/// `update_block` appends a record with version+1, flags|0x01 and the previous_hash of its
/// *target*; the target's uuid is stored nowhere else.
fn mark_updates(
    records: &[Record],
    parent: &[Option<usize>],
    blocks: &mut [LegacyBlock],
    art: &mut LegacyArtifact,
) {
    for (i, rec) in records.iter().enumerate() {
        if rec.flags & UPDATE == 0 {
            continue;
        }
        let target = parent.get(i).copied().flatten();
        let Some(j) = target.filter(|_| rec.version > 1) else {
            let id = blocks
                .get(i)
                .map(|b| b.legacy_id.clone())
                .unwrap_or_default();
            art.finding(
                Severity::Warning,
                "update_flag",
                id,
                format!(
                    "flags 0x01 (update record) with version {} and {}: no update target \
                     found, kept as a live block",
                    rec.version,
                    if target.is_some() {
                        "a predecessor"
                    } else {
                        "no predecessor in this file"
                    }
                ),
            );
            continue;
        };
        let (Some(target_id), Some(update_id)) = (
            blocks.get(j).map(|b| b.legacy_id.clone()),
            blocks.get(i).map(|b| b.legacy_id.clone()),
        ) else {
            continue;
        };
        if let Some(update) = blocks.get_mut(i) {
            update.status = BlockStatus::UpdateRecord;
            update.evidence.insert("updates".into(), json!(target_id));
        }
        if let Some(old) = blocks.get_mut(j) {
            if let Some(Value::String(earlier)) = old.evidence.get("superseded_by") {
                art.finding(
                    Severity::Info,
                    "updated_twice",
                    target_id.clone(),
                    format!("updated by {earlier} and again by {update_id}"),
                );
            }
            old.status = BlockStatus::Superseded;
            old.evidence
                .insert("superseded_by".into(), json!(update_id));
        }
    }
}

/// A record with two or more successors: an update record links to its target, not to the
/// last record, so the chain forks.
fn report_forks(parent: &[Option<usize>], blocks: &[LegacyBlock], art: &mut LegacyArtifact) {
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); blocks.len()];
    for (child, p) in parent.iter().enumerate() {
        if let Some(kids) = p.and_then(|p| children.get_mut(p)) {
            kids.push(child);
        }
    }
    for (p, kids) in children.iter().enumerate() {
        if kids.len() < 2 {
            continue;
        }
        let (Some(parent_block), names) = (
            blocks.get(p),
            kids.iter()
                .filter_map(|k| blocks.get(*k))
                .map(|b| format!("{} ({:?})", b.legacy_id, b.status))
                .collect::<Vec<_>>(),
        ) else {
            continue;
        };
        art.finding(
            Severity::Info,
            "fork",
            parent_block.legacy_id.clone(),
            format!(
                "the chain forks at {}: {} records link to it: {}",
                parent_block.legacy_id,
                kids.len(),
                names.join(", ")
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::tests::{expected, fixture};
    use crate::model::Outcome;

    fn body(block: &LegacyBlock) -> &[u8] {
        match &block.body {
            Body::Inline(b) => b,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn encode_header_reproduces_every_stored_header() {
        for name in ["block-storage-a.blk", "block-storage-b.blk"] {
            let data = fixture(name);
            let (records, stop) = walk(&data);
            assert!(stop.is_none() && records.len() == 3);
            for r in records {
                let encoded = encode_header(
                    r.size,
                    r.block_type,
                    r.version,
                    r.timestamp,
                    r.uuid,
                    r.previous_hash,
                    r.flags,
                );
                assert_eq!(&encoded[..], &data[r.offset..r.offset + HEADER], "{name}");
            }
        }
    }

    fn compare_with_expected(name: &str) -> LegacyArtifact {
        let data = fixture(name);
        let exp = expected(name);
        let art = read(name, &data).unwrap();
        assert!(art.sections.is_empty());
        assert_eq!(art.checks, vec![Check::pass("walk_ends_at_eof")]);
        let records = exp["records_on_disk"].as_array().unwrap();
        assert_eq!(art.blocks.len(), records.len());
        let mut root_hashes = Vec::new();
        for (got, want) in art.blocks.iter().zip(records) {
            assert_eq!(got.legacy_id, want["uuid"].as_str().unwrap());
            assert_eq!(got.block_id, block_id_for(&got.legacy_id));
            assert_eq!(got.legacy_type, want["type"].as_str().unwrap());
            assert_eq!(got.evidence["offset"], want["offset"]);
            assert_eq!(got.evidence["size"], want["size"]);
            assert_eq!(got.evidence["version"], want["version"]);
            assert_eq!(got.evidence["flags"], want["flags"]);
            assert_eq!(got.evidence["previous_hash"], want["previous_hash_on_disk"]);
            assert_eq!(got.body_checks.declared_size, want["size"].as_u64());
            assert_eq!(got.checks, vec![Check::pass("chain_link")]);
            root_hashes.push(got.evidence["record_sha256"].clone());
        }
        // Timestamps, payload hashes and texts of the blocks expected.json details.
        for want in exp["blocks"].as_array().unwrap() {
            let got = art
                .blocks
                .iter()
                .find(|b| b.legacy_id == want["uuid"].as_str().unwrap())
                .unwrap();
            assert_eq!(got.timestamp_us, want["timestamp_us"].as_u64().unwrap());
            assert_eq!(sha256_hex(body(got)), want["data_sha256"].as_str().unwrap());
            if let Some(text) = want["text"].as_str() {
                assert_eq!(std::str::from_utf8(body(got)).unwrap(), text);
            }
            if let Some(full) = want["previous_hash_full"].as_str() {
                assert!(root_hashes.contains(&json!(full)), "{full}");
            }
        }
        assert!(art.findings.iter().all(|f| f.severity != Severity::Error));
        art
    }

    #[test]
    fn fixture_a_linear_chain() {
        let art = compare_with_expected("block-storage-a.blk");
        let ids: Vec<&str> = art.blocks.iter().map(|b| b.legacy_id.as_str()).collect();
        assert_eq!(art.blocks[0].evidence["previous_hash_meaning"], "none");
        assert_eq!(
            art.blocks[1].evidence["previous_hash_meaning"],
            format!("links to {}", ids[0])
        );
        assert_eq!(
            art.blocks[2].evidence["previous_hash_meaning"],
            format!("links to {}", ids[1])
        );
        assert!(art.blocks.iter().all(|b| b.status == BlockStatus::Live));
        assert_eq!(art.blocks[2].legacy_type, "BDAT");
        assert!(
            !art.findings
                .iter()
                .any(|f| f.kind == "fork" || f.kind == "gap")
        );
    }

    #[test]
    fn fixture_b_update_record_and_fork() {
        let art = compare_with_expected("block-storage-b.blk");
        let exp = expected("block-storage-b.blk");
        let [original, embd, update] = &art.blocks[..] else {
            panic!("three records")
        };
        assert_eq!(original.status, BlockStatus::Superseded);
        assert_eq!(embd.status, BlockStatus::Live);
        assert_eq!(update.status, BlockStatus::UpdateRecord);
        assert_eq!(
            update.evidence["updates"],
            exp["update_block"]["target_uuid"]
        );
        assert_eq!(original.evidence["superseded_by"], json!(update.legacy_id));
        assert_eq!(
            sha256_hex(body(update)),
            exp["update_block"]["new_data_sha256"].as_str().unwrap()
        );
        assert_eq!(
            std::str::from_utf8(body(update)).unwrap(),
            exp["update_block"]["text"].as_str().unwrap()
        );
        // Flag 0x01 is "update record" here: the payload is plain text, not zlib.
        assert_eq!(update.evidence["flags"], 1);
        let fork = art.findings.iter().find(|f| f.kind == "fork").unwrap();
        assert_eq!(fork.subject, original.legacy_id);
        assert!(fork.message.contains(&embd.legacy_id) && fork.message.contains(&update.legacy_id));
    }

    #[test]
    fn a_gap_is_unverifiable_and_trailing_garbage_is_reported() {
        // Drop record 0: record 1's predecessor is no longer in the file.
        let data = fixture("block-storage-a.blk").slice(104..);
        let art = read("gap", &data).unwrap();
        assert_eq!(art.blocks.len(), 2);
        assert_eq!(
            art.blocks[0].checks,
            vec![Check::unverifiable(
                "chain_link",
                "predecessor not in this file"
            )]
        );
        assert!(
            art.findings
                .iter()
                .any(|f| f.kind == "gap" && f.severity == Severity::Warning)
        );
        assert_eq!(art.blocks[1].checks, vec![Check::pass("chain_link")]);

        let mut d = fixture("block-storage-a.blk").to_vec();
        d.extend_from_slice(&[0x55; 100]);
        let art = read("tail", &Bytes::from(d)).unwrap();
        assert_eq!(art.blocks.len(), 3);
        assert!(matches!(art.checks[0].outcome, Outcome::Fail(_)));
        assert!(art.findings.iter().any(|f| {
            f.severity == Severity::Error
                && f.message
                    .starts_with("trailing bytes at offset 552 not migrated (100 bytes)")
        }));

        let truncated = fixture("block-storage-a.blk").slice(..500);
        let art = read("trunc", &truncated).unwrap();
        assert_eq!(art.blocks.len(), 2);
        assert!(art.findings.iter().any(|f| {
            f.message
                .starts_with("trailing bytes at offset 224 not migrated (276 bytes)")
        }));
        assert!(matches!(
            read("short", &fixture("block-storage-a.blk").slice(..100)),
            Err(MigrateError::Malformed { offset: 0, .. })
        ));
    }
}
