//! `block_storage.py` (BlockStorage): a bare run of `[72-byte LE header][data]` records with
//! no magic, no file header and no index, so every record header is checked on its own.

use std::collections::HashMap;
use std::ops::Range;

use bytes::Bytes;
use maif_store::format::FormatError;
use serde_json::{Map, Value, json};

use super::{to_usize, trailing_bytes, uuid_text};
use crate::codec::{ReaderExt as _, reader_at};
use crate::model::{
    BlockStatus, Body, BodyChecks, Check, LegacyArtifact, LegacyBlock, Severity, SourceKind,
    block_id_for, canonical_type, sha256_hex, type_text,
};
use crate::{MigrateError, Result};

/// The record header, `H72` of legacy-formats.md §1.3 and §4.2 (all little-endian).
const HEADER: usize = 72;
/// previous_hash keeps the first 32 hex characters of its predecessor's SHA-256 (§4.2).
const PREVIOUS_HASH_HEX_LEN: usize = 32;
/// In this format flag 0x01 marks an update record; nothing here is ever compressed.
const UPDATE: u32 = 0x01;
/// The uuid byte holding the version nibble, and the byte holding the variant bits (RFC 4122).
const UUID_VERSION_BYTE: usize = 6;
const UUID_VARIANT_BYTE: usize = 8;

struct Record<'a> {
    offset: usize,
    end: usize,
    size: u32,
    block_type: [u8; 4],
    version: u32,
    timestamp: u64,
    uuid: [u8; 16],
    previous_hash: [u8; 32],
    flags: u32,
    /// The 72 header bytes as stored.
    header: &'a [u8],
    /// The whole record, header and data: what a successor's previous_hash hashes.
    bytes: &'a [u8],
    /// Where the data lies in the file.
    data: Range<usize>,
}

impl Record<'_> {
    /// The stored previous_hash, or `None` for the NUL of a chain root.
    fn previous_hash(&self) -> Option<&[u8; 32]> {
        (self.previous_hash != [0; 32]).then_some(&self.previous_hash)
    }
}

/// The §1.1 heuristic, applied to one record header (there is no magic to go by).
fn check_header(
    block_type: &[u8; 4],
    uuid: &[u8; 16],
    previous_hash: &[u8; 32],
    version: u32,
    flags: u32,
) -> Result<(), String> {
    let name_len = block_type
        .iter()
        .position(|byte| *byte == 0)
        .unwrap_or(block_type.len());
    let (name, padding) = block_type.split_at(name_len);
    if name.is_empty()
        || !name.iter().all(|byte| (0x20..0x7f).contains(byte))
        || padding.iter().any(|byte| *byte != 0)
    {
        return Err(format!(
            "block type {} is not 1 to 4 printable ASCII bytes padded with NUL",
            hex::encode(block_type)
        ));
    }
    if uuid[UUID_VERSION_BYTE] & 0xf0 != 0x40 || uuid[UUID_VARIANT_BYTE] & 0xc0 != 0x80 {
        return Err(format!(
            "uuid bytes {} are not a version-4 RFC 4122 uuid",
            hex::encode(uuid)
        ));
    }
    let nul = previous_hash.iter().all(|byte| *byte == 0);
    let hex = previous_hash
        .iter()
        .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(byte));
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
    // The fields in order fill the 72 bytes exactly (4 + 4 + 4 + 8 + 16 + 32 + 4).
    let fields: [&[u8]; 7] = [
        &size.to_le_bytes(),
        &block_type,
        &version.to_le_bytes(),
        &timestamp_us.to_le_bytes(),
        &uuid,
        &previous_hash,
        &flags.to_le_bytes(),
    ];
    let mut out = [0u8; HEADER];
    for (slot, byte) in out.iter_mut().zip(fields.into_iter().flatten()) {
        *slot = *byte;
    }
    out
}

/// One record at `offset`, or why there is none.
fn record(data: &[u8], offset: usize) -> Result<Record<'_>, String> {
    let remain = data.len().saturating_sub(offset);
    let fragment = |error: FormatError| {
        format!("a {remain}-byte fragment, shorter than a {HEADER}-byte record header: {error}")
    };
    let mut reader = reader_at(data, offset, "block_storage record header").map_err(fragment)?;
    let start = reader.clone();
    let fields = (|| {
        Ok::<_, FormatError>((
            reader.u32("size")?,
            reader.array("block_type")?,
            reader.u32("version")?,
            reader.u64("timestamp")?,
            reader.array("uuid")?,
            reader.array("previous_hash")?,
            reader.u32("flags")?,
        ))
    })();
    let (size, block_type, version, timestamp, uuid, previous_hash, flags) =
        fields.map_err(fragment)?;
    let header = reader.since(&start).map_err(fragment)?;
    check_header(&block_type, &uuid, &previous_hash, version, flags)
        .map_err(|why| format!("not a record header: {why}"))?;
    let data_len = to_usize(u64::from(size));
    let data_start = reader.offset();
    reader.bytes(data_len, "data").map_err(|error| {
        format!(
            "a record of {HEADER} + {data_len} bytes runs past the end of the file ({remain} bytes remain): {error}"
        )
    })?;
    let end = reader.offset();
    let bytes = reader.since(&start).map_err(|error| error.to_string())?;
    Ok(Record {
        offset,
        end,
        size,
        block_type,
        version,
        timestamp,
        uuid,
        previous_hash,
        flags,
        header,
        bytes,
        data: data_start..end,
    })
}

/// The records from offset 0, and where and why the walk stopped short of EOF.
fn walk(data: &[u8]) -> (Vec<Record<'_>>, Option<(usize, String)>) {
    let mut records = Vec::new();
    let mut offset = 0;
    while offset < data.len() {
        match record(data, offset) {
            Ok(found) => {
                offset = found.end;
                records.push(found);
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
    let (records, stop) = walk(data);
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
        .map(|record| sha256_hex(record.bytes))
        .collect();
    let mut by_prefix: HashMap<&[u8], usize> = HashMap::new();
    let mut parent: Vec<Option<usize>> = Vec::with_capacity(records.len());
    let mut blocks: Vec<LegacyBlock> = Vec::with_capacity(records.len());
    for (position, rec) in records.iter().enumerate() {
        let legacy_id = uuid_text(rec.uuid);
        let (link, meaning, check) = match rec.previous_hash() {
            None => {
                if position > 0 {
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
                Some(&parent_position) => {
                    let target = &blocks[parent_position].legacy_id;
                    (
                        Some(parent_position),
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
        evidence.insert("header_hex".into(), json!(hex::encode(rec.header)));
        evidence.insert("size".into(), json!(rec.size));
        evidence.insert("version".into(), json!(rec.version));
        evidence.insert("flags".into(), json!(rec.flags));
        evidence.insert("timestamp_us".into(), json!(rec.timestamp));
        evidence.insert(
            "previous_hash".into(),
            match rec.previous_hash() {
                Some(previous) => json!(String::from_utf8_lossy(previous)),
                None => Value::Null,
            },
        );
        evidence.insert("previous_hash_meaning".into(), json!(meaning));
        evidence.insert("record_sha256".into(), json!(full[position]));

        // The writer pads the type with NUL; the name it was given is what precedes them.
        let name_len = rec
            .block_type
            .iter()
            .position(|byte| *byte == 0)
            .unwrap_or(rec.block_type.len());
        let (type_name, _padding) = rec.block_type.split_at(name_len);
        blocks.push(LegacyBlock {
            legacy_id: legacy_id.clone(),
            block_id: block_id_for(&legacy_id),
            legacy_type: type_text(type_name),
            block_type: canonical_type(&rec.block_type),
            timestamp_us: rec.timestamp,
            status: BlockStatus::Live,
            evidence,
            user_metadata: Map::new(),
            body: Body::Inline(data.slice(rec.data.clone())),
            checks: vec![check],
            body_checks: BodyChecks {
                declared_size: Some(u64::from(rec.size)),
                ..BodyChecks::default()
            },
        });
        if let Some(prefix) = full[position].as_bytes().get(..PREVIOUS_HASH_HEX_LEN) {
            by_prefix.entry(prefix).or_insert(position);
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
                data.len(),
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
    for (position, rec) in records.iter().enumerate() {
        if rec.flags & UPDATE == 0 {
            continue;
        }
        let target = parent.get(position).copied().flatten();
        let Some(target_position) = target.filter(|_| rec.version > 1) else {
            let id = blocks
                .get(position)
                .map(|block| block.legacy_id.clone())
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
            blocks
                .get(target_position)
                .map(|block| block.legacy_id.clone()),
            blocks.get(position).map(|block| block.legacy_id.clone()),
        ) else {
            continue;
        };
        if let Some(update) = blocks.get_mut(position) {
            update.status = BlockStatus::UpdateRecord;
            update.evidence.insert("updates".into(), json!(target_id));
        }
        if let Some(old) = blocks.get_mut(target_position) {
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
    for (child, parent_of_child) in parent.iter().enumerate() {
        if let Some(kids) = parent_of_child.and_then(|at| children.get_mut(at)) {
            kids.push(child);
        }
    }
    for (parent_position, kids) in children.iter().enumerate() {
        if kids.len() < 2 {
            continue;
        }
        let (Some(parent_block), names) = (
            blocks.get(parent_position),
            kids.iter()
                .filter_map(|kid| blocks.get(*kid))
                .map(|block| format!("{} ({:?})", block.legacy_id, block.status))
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
    use crate::local::tests::{assert_cuts_name_the_field, expected, fixture};
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

    /// A file cut short at a field boundary is an error, or a finding, naming the structure,
    /// the field and its offset: no field is ever read as zeros.
    #[test]
    fn a_cut_at_a_field_boundary_names_that_field() {
        let data = fixture("block-storage-a.blk");
        assert_cuts_name_the_field(read, &data, &[(20, "uuid", 20), (72 + 5, "data", 72)]);
        // Record 1 ends before its previous_hash: record 0 is kept.
        let art = read("cut", &data.slice(..104 + 36)).unwrap();
        assert_eq!(art.blocks.len(), 1);
        let stop = art
            .findings
            .iter()
            .find(|f| f.kind == "trailing_bytes")
            .unwrap();
        assert!(
            stop.message.contains("block_storage record header")
                && stop
                    .message
                    .contains("truncated at byte 140: field `previous_hash`"),
            "{}",
            stop.message
        );
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
