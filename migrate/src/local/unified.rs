//! `unified_block_format.py` / `UnifiedStorage` local files: `[228-byte BE header][metadata
//! JSON][data]` records, the first one a `HDER` file-header record. The reference code says
//! (and reads) 224 bytes, so it never finds a record of its own files; the struct it packs
//! is 228 bytes, which is what is on disk.

use std::collections::HashMap;
use std::ops::Range;

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::{
    COMPRESSED, DELETED, DELTA_COMPRESSED, ENCRYPTED, SIGNED, array, flag_names, mark_deleted,
    to_usize, trailing_bytes, u32_be, u64_be, withhold_encrypted,
};
use crate::model::{
    BlockStatus, Body, BodyChecks, Check, LegacyArtifact, LegacyBlock, Severity, SourceKind,
    block_id_for, canonical_type, sha256_hex, type_text,
};
use crate::pyjson::PyJson;
use crate::{MigrateError, Result};

const HEADER: usize = 228;
const HEADER_TYPE: &[u8; 4] = b"HDER";

const FLAG_NAMES: &[(u32, &str)] = &[
    (COMPRESSED, "compressed"),
    (ENCRYPTED, "encrypted"),
    (SIGNED, "signed"),
    (DELETED, "deleted"),
    (DELTA_COMPRESSED, "delta_compressed"),
    (0x20, "semantic_indexed"),
    (0x40, "watermarked"),
    (0x80, "has_metadata"),
];

struct Record {
    offset: usize,
    end: usize,
    version: u32,
    size: u64,
    block_type: [u8; 4],
    uuid: [u8; 36],
    timestamp: u64,
    previous_hash: [u8; 64],
    block_hash: [u8; 64],
    flags: u32,
    metadata_size: u32,
    metadata: Range<usize>,
    data: Range<usize>,
}

impl Record {
    fn header_range(&self) -> Range<usize> {
        self.offset..self.offset + HEADER
    }

    fn uuid_text(&self) -> Option<String> {
        let text = std::str::from_utf8(&self.uuid).ok()?;
        let id = uuid::Uuid::try_parse(text).ok()?;
        Some(id.hyphenated().to_string())
    }

    /// The id as the record spells it: uuid text, or the raw field when it is not one.
    fn legacy_id(&self) -> String {
        self.uuid_text().unwrap_or_else(|| type_text(&self.uuid))
    }

    fn ascii_field(field: &[u8; 64]) -> Value {
        if field.iter().all(|b| *b == 0) {
            Value::Null
        } else {
            json!(type_text(field))
        }
    }

    fn block_hash_text(&self) -> String {
        type_text(&self.block_hash)
    }

    fn metadata_text(&self, d: &[u8]) -> Option<String> {
        d.get(self.metadata.clone())
            .and_then(|m| std::str::from_utf8(m).ok())
            .map(str::to_owned)
    }
}

fn is_uuid_text(field: &[u8]) -> bool {
    field.len() == 36
        && field.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(b),
        })
}

fn is_hex64(field: &[u8; 64]) -> bool {
    field
        .iter()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

/// One record at `offset`, or why there is none.
fn record(d: &[u8], offset: usize) -> Result<Record, String> {
    let remain = d.len().saturating_sub(offset);
    if remain < HEADER {
        return Err(format!(
            "a {remain}-byte fragment, shorter than a {HEADER}-byte record header"
        ));
    }
    if d.get(offset..offset + 4) != Some(b"MAIF") {
        return Err("no `MAIF` magic at the record start".into());
    }
    let at = |n: usize| offset + n;
    let fields = (|| {
        Some((
            u32_be(d, at(4))?,
            u64_be(d, at(8))?,
            array::<4>(d, at(16))?,
            array::<36>(d, at(20))?,
            u64_be(d, at(56))?,
            array::<64>(d, at(64))?,
            array::<64>(d, at(128))?,
            u32_be(d, at(192))?,
            u32_be(d, at(196))?,
        ))
    })();
    let Some((
        version,
        size,
        block_type,
        uuid,
        timestamp,
        previous_hash,
        block_hash,
        flags,
        metadata_size,
    )) = fields
    else {
        return Err("record header out of range".into());
    };
    let meta_start = offset + HEADER;
    let ranges = meta_start
        .checked_add(to_usize(u64::from(metadata_size)))
        .and_then(|meta_end| {
            let end = meta_end.checked_add(to_usize(size))?;
            (end <= d.len()).then_some((meta_end, end))
        });
    let Some((meta_end, end)) = ranges else {
        return Err(format!(
            "a record of {HEADER} + {metadata_size} metadata + {size} data bytes runs past the \
             end of the file ({remain} bytes remain)"
        ));
    };
    Ok(Record {
        offset,
        end,
        version,
        size,
        block_type,
        uuid,
        timestamp,
        previous_hash,
        block_hash,
        flags,
        metadata_size,
        metadata: meta_start..meta_end,
        data: meta_end..end,
    })
}

/// The shape checks of `detect` on the first record.
pub(super) fn confirm(data: &[u8]) -> Result<(), String> {
    if data.len() < HEADER {
        return Err(format!(
            "only {} bytes, a unified record header needs {HEADER}",
            data.len()
        ));
    }
    let block_type = data.get(16..20).unwrap_or_default();
    if !block_type.iter().all(|b| (0x20..0x7f).contains(b)) {
        return Err(format!(
            "bytes 16..20 ({}) are not a printable block type",
            hex::encode(block_type)
        ));
    }
    if !is_uuid_text(data.get(20..56).unwrap_or_default()) {
        return Err("bytes 20..56 are not a lower-case hyphenated uuid".into());
    }
    Ok(())
}

/// Reads a `UnifiedStorage` local file.
pub fn read(source: &str, data: &Bytes) -> Result<LegacyArtifact> {
    let d: &[u8] = data;
    let mut records = Vec::new();
    let mut stop = None;
    let mut offset = 0;
    while offset < d.len() {
        match record(d, offset) {
            Ok(rec) => {
                offset = rec.end;
                records.push(rec);
            }
            Err(why) => {
                stop = Some((offset, why));
                break;
            }
        }
    }
    if records.is_empty() {
        let (offset, why) = stop.unwrap_or((0, "the file is empty: no records".into()));
        return Err(MigrateError::malformed(
            source,
            "record 0 header",
            offset as u64,
            why,
        ));
    }

    let mut art = LegacyArtifact::new(SourceKind::UnifiedLocal, source);
    // Both what a record stored as its block_hash and what its data hashes to: a
    // previous_hash naming either identifies the record.
    let mut by_hash: HashMap<String, String> = HashMap::new();
    for (i, rec) in records.iter().enumerate() {
        let computed = sha256_hex(d.get(rec.data.clone()).unwrap_or_default());
        if &rec.block_type == HEADER_TYPE {
            header_record(data, rec, i, &computed, &mut art);
        } else {
            if i == 0 {
                art.checks.push(Check::fail(
                    "header_record",
                    format!(
                        "the first record is {:?}, not the HDER file-header record every \
                         UnifiedStorage file starts with",
                        type_text(&rec.block_type)
                    ),
                ));
            }
            let block = block(data, rec, &by_hash, &mut art);
            art.blocks.push(block);
        }
        let id = rec.legacy_id();
        by_hash
            .entry(rec.block_hash_text())
            .or_insert_with(|| id.clone());
        by_hash.entry(computed).or_insert(id);
    }

    match &stop {
        None => art.checks.push(Check::pass("walk_ends_at_eof")),
        Some((offset, why)) => {
            art.checks.push(Check::fail(
                "walk_ends_at_eof",
                format!("the walk stopped at offset {offset}: {why}"),
            ));
            trailing_bytes(&mut art, *offset, d.len(), why);
        }
    }
    art.finding(
        Severity::Info,
        "not_in_file",
        "file",
        "UnifiedStorage does not write signatures to the local file",
    );
    super::note_duplicate_ids(&mut art);
    Ok(art)
}

/// The `HDER` record is the file's header, not content: its fields go to `file_level` and
/// its bytes to a section.
fn header_record(
    data: &Bytes,
    rec: &Record,
    index: usize,
    computed: &str,
    art: &mut LegacyArtifact,
) {
    let whole = data.slice(rec.offset..rec.end);
    if index > 0 {
        art.sections
            .push((format!("unified_header_record@{}", rec.offset), whole));
        art.finding(
            Severity::Warning,
            "extra_header_record",
            rec.legacy_id(),
            format!(
                "a second HDER record at offset {}: kept as a section, not migrated as content",
                rec.offset
            ),
        );
        return;
    }
    art.sections.push(("unified_header_record".into(), whole));
    art.created_us = Some(rec.timestamp);
    let d: &[u8] = data;
    let metadata = rec.metadata_text(d);
    let mut problems = Vec::new();
    if rec.size != 0 {
        problems.push(format!(
            "it has {} data bytes, a header record has none",
            rec.size
        ));
    }
    if rec.block_hash_text() != computed {
        problems.push(format!(
            "block_hash {} is not the SHA-256 of its data {computed}",
            rec.block_hash_text()
        ));
    }
    match metadata.as_deref().map(|m| PyJson::parse(m.as_bytes())) {
        Some(Ok(PyJson::Object(_))) => {}
        Some(Ok(_)) => problems.push("its metadata is not a JSON object".into()),
        Some(Err(e)) => problems.push(format!("its metadata is not JSON: {e}")),
        None => problems.push("its metadata is not UTF-8".into()),
    }
    art.checks.push(if problems.is_empty() {
        Check::pass("header_record")
    } else {
        Check::fail("header_record", problems.join("; "))
    });

    let fields = &mut art.file_level;
    fields.insert("magic".into(), json!("MAIF"));
    fields.insert("version".into(), json!(rec.version));
    fields.insert("size".into(), json!(rec.size));
    fields.insert("block_type".into(), json!(type_text(&rec.block_type)));
    fields.insert("uuid".into(), json!(rec.legacy_id()));
    fields.insert("timestamp_us".into(), json!(rec.timestamp));
    fields.insert(
        "previous_hash".into(),
        Record::ascii_field(&rec.previous_hash),
    );
    fields.insert("block_hash".into(), json!(rec.block_hash_text()));
    fields.insert("flags".into(), json!(rec.flags));
    fields.insert("metadata_size".into(), json!(rec.metadata_size));
    match metadata {
        Some(text) => fields.insert("header_metadata_json".into(), json!(text)),
        None => fields.insert(
            "header_metadata_hex".into(),
            json!(hex::encode(d.get(rec.metadata.clone()).unwrap_or_default())),
        ),
    };
}

fn block(
    data: &Bytes,
    rec: &Record,
    earlier: &HashMap<String, String>,
    art: &mut LegacyArtifact,
) -> LegacyBlock {
    let d: &[u8] = data;
    let legacy_id = rec.legacy_id();
    if rec.uuid_text().is_none() {
        art.finding(
            Severity::Warning,
            "id_not_uuid",
            legacy_id.clone(),
            format!(
                "the record at offset {} has no uuid text in its id field; the canonical id is \
                 derived from the field's text",
                rec.offset
            ),
        );
    }

    let (meaning, previous_check) = if rec.previous_hash.iter().all(|b| *b == 0) {
        ("none".to_owned(), Check::pass("previous_hash"))
    } else if !is_hex64(&rec.previous_hash) {
        (
            "malformed".to_owned(),
            Check::fail(
                "previous_hash",
                "neither 64 lower-case hex digits nor 64 NUL bytes",
            ),
        )
    } else {
        let text = type_text(&rec.previous_hash);
        match earlier.get(&text) {
            Some(target) => (format!("links to {target}"), Check::pass("previous_hash")),
            None => (
                "no match".to_owned(),
                Check::unverifiable(
                    "previous_hash",
                    "names no earlier record of this file (neither its block_hash nor the hash of its data)",
                ),
            ),
        }
    };

    let mut evidence = Map::new();
    evidence.insert("format".into(), json!("unified-local"));
    evidence.insert("offset".into(), json!(rec.offset));
    evidence.insert(
        "header_hex".into(),
        json!(hex::encode(d.get(rec.header_range()).unwrap_or_default())),
    );
    evidence.insert("version".into(), json!(rec.version));
    evidence.insert("size".into(), json!(rec.size));
    evidence.insert("flags".into(), json!(rec.flags));
    evidence.insert(
        "flag_names".into(),
        json!(flag_names(rec.flags, FLAG_NAMES)),
    );
    evidence.insert("timestamp_us".into(), json!(rec.timestamp));
    evidence.insert(
        "previous_hash".into(),
        Record::ascii_field(&rec.previous_hash),
    );
    evidence.insert("previous_hash_meaning".into(), json!(meaning));
    evidence.insert("block_hash".into(), json!(rec.block_hash_text()));
    evidence.insert("metadata_size".into(), json!(rec.metadata_size));

    let mut user_metadata = Map::new();
    match rec.metadata_text(d) {
        Some(text) => {
            user_metadata = parse_metadata(&text, &legacy_id, art);
            evidence.insert("metadata_json".into(), json!(text));
        }
        None => {
            evidence.insert(
                "metadata_hex".into(),
                json!(hex::encode(d.get(rec.metadata.clone()).unwrap_or_default())),
            );
            art.finding(
                Severity::Warning,
                "metadata",
                legacy_id.clone(),
                "metadata is not UTF-8; kept as hex in the evidence only",
            );
        }
    }

    let stored = data.slice(rec.data.clone());
    let mut block = LegacyBlock {
        legacy_id: legacy_id.clone(),
        block_id: block_id_for(&legacy_id),
        legacy_type: type_text(&rec.block_type),
        block_type: canonical_type(&rec.block_type),
        timestamp_us: rec.timestamp,
        status: BlockStatus::Live,
        evidence,
        user_metadata,
        body: Body::Inline(stored.clone()),
        checks: vec![previous_check],
        body_checks: BodyChecks {
            declared_size: Some(rec.size),
            declared_sha256: Some(("block_hash".into(), rec.block_hash_text())),
            ..BodyChecks::default()
        },
    };
    if rec.flags & ENCRYPTED != 0 {
        withhold_encrypted(&mut block, &stored, art);
        return block;
    }
    if rec.flags & DELETED != 0 {
        mark_deleted(&mut block, art);
    }
    if rec.flags & COMPRESSED != 0 {
        art.finding(
            Severity::Warning,
            "compressed_flag",
            legacy_id,
            "compressed flag set, but this format names no codec; the payload is migrated as stored",
        );
    }
    block
}

/// The caller's metadata, members that JSON values keep exactly; the exact text stays in
/// the evidence (`metadata_json`) for the rest.
fn parse_metadata(text: &str, id: &str, art: &mut LegacyArtifact) -> Map<String, Value> {
    let mut out = Map::new();
    match PyJson::parse(text.as_bytes()) {
        Ok(PyJson::Object(members)) => {
            for (key, value) in members {
                match value.to_exact_value() {
                    Some(v) => {
                        out.insert(key, v);
                    }
                    None => art.finding(
                        Severity::Info,
                        "metadata",
                        id.to_owned(),
                        format!(
                            "metadata member {key:?} has no exact JSON value form; it is kept in \
                             metadata_json only"
                        ),
                    ),
                }
            }
        }
        Ok(_) => art.finding(
            Severity::Warning,
            "metadata",
            id.to_owned(),
            "metadata is not a JSON object; kept in metadata_json only",
        ),
        Err(e) => art.finding(
            Severity::Warning,
            "metadata",
            id.to_owned(),
            format!("metadata is not JSON ({e}); kept in metadata_json only"),
        ),
    }
    out
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
    fn fixture_a() {
        let name = "unified-local-a.maif";
        let data = fixture(name);
        let exp = expected(name);
        let art = read(name, &data).unwrap();
        let records = exp["records_on_disk"].as_array().unwrap();
        assert_eq!(records.len(), 4);

        // The HDER record is the file header, not a block.
        let hder = &records[0];
        assert_eq!(art.file_level["block_type"], "HDER");
        assert_eq!(art.file_level["uuid"], hder["uuid"]);
        assert_eq!(art.file_level["timestamp_us"], hder["timestamp_us"]);
        assert_eq!(art.file_level["block_hash"], hder["block_hash"]);
        assert_eq!(art.file_level["metadata_size"], hder["metadata_size"]);
        assert_eq!(art.file_level["previous_hash"], Value::Null);
        assert_eq!(
            art.file_level["header_metadata_json"],
            r#"{"format_version":"2.0","created_by":"unified_storage","features":["unified_format","aws_compatible"]}"#
        );
        assert_eq!(art.created_us, hder["timestamp_us"].as_u64());
        assert_eq!(art.sections.len(), 1);
        assert_eq!(art.sections[0].0, "unified_header_record");
        assert_eq!(art.sections[0].1, data.slice(0..330));
        assert_eq!(
            art.checks,
            vec![
                Check::pass("header_record"),
                Check::pass("walk_ends_at_eof")
            ]
        );

        assert_eq!(art.blocks.len(), 3);
        for (got, want) in art.blocks.iter().zip(&records[1..]) {
            assert_eq!(got.legacy_id, want["uuid"].as_str().unwrap());
            assert_eq!(got.block_id, block_id_for(&got.legacy_id));
            assert_eq!(got.legacy_type, want["block_type"].as_str().unwrap());
            assert_eq!(got.block_type.0, got.legacy_type.as_bytes());
            assert_eq!(got.timestamp_us, want["timestamp_us"].as_u64().unwrap());
            assert_eq!(got.status, BlockStatus::Live);
            assert_eq!(got.evidence["offset"], want["offset"]);
            assert_eq!(got.evidence["flags"], want["flags"]);
            assert_eq!(got.evidence["block_hash"], want["block_hash"]);
            assert_eq!(got.evidence["previous_hash"], Value::Null);
            assert_eq!(got.evidence["previous_hash_meaning"], "none");
            assert_eq!(got.evidence["header_hex"].as_str().unwrap().len(), 456);
            assert_eq!(got.checks, vec![Check::pass("previous_hash")]);
            assert_eq!(sha256_hex(body(got)), want["data_sha256"].as_str().unwrap());
            assert_eq!(got.user_metadata, *want["metadata"].as_object().unwrap());
            let metadata_json = got.evidence["metadata_json"].as_str().unwrap();
            assert_eq!(
                metadata_json.len() as u64,
                want["metadata_size"].as_u64().unwrap()
            );
            assert!(
                !metadata_json.contains(": "),
                "compact as stored: {metadata_json}"
            );
            assert_eq!(got.body_checks.declared_size, want["size"].as_u64());
            assert_eq!(
                got.body_checks.declared_sha256,
                Some((
                    "block_hash".to_owned(),
                    want["block_hash"].as_str().unwrap().to_owned()
                ))
            );
            if let Some(text) = want["text"].as_str() {
                assert_eq!(std::str::from_utf8(body(got)).unwrap(), text);
            }
            // The deferred body checks pass too.
            for check in crate::hmac::run_body_checks(&got.body_checks, body(got), &[]) {
                assert!(!matches!(check.outcome, Outcome::Fail(_)), "{check:?}");
            }
        }
        assert_eq!(art.blocks[2].legacy_type, "BIN ");
        assert_eq!(
            art.blocks[0].evidence["metadata_json"],
            r#"{"language":"en"}"#
        );
        assert!(art.findings.iter().all(|f| f.severity < Severity::Warning));
    }

    #[test]
    fn the_header_is_228_bytes_not_224() {
        // A reader using 224 would look for the next record at 326, which is not a record.
        let data = fixture("unified-local-a.maif");
        assert!(record(&data, 326).is_err());
        assert_eq!(record(&data, 0).unwrap().end, 330);
    }

    #[test]
    fn previous_hash_links_and_damage() {
        let mut d = fixture("unified-local-a.maif").to_vec();
        // Point the BDAT record (603) at the TEXT record's block_hash.
        let text_hash = d[330 + 128..330 + 192].to_vec();
        d[603 + 64..603 + 128].copy_from_slice(&text_hash);
        // And the BIN record (873) at an unknown hash.
        d[873 + 64..873 + 128].copy_from_slice(&[b'a'; 64]);
        d.extend_from_slice(b"MAIF junk");
        let art = read("p", &Bytes::from(d)).unwrap();
        assert_eq!(
            art.blocks[1].evidence["previous_hash_meaning"],
            "links to 455191c2-f94c-48a9-95c9-93cb008c3d15"
        );
        assert_eq!(art.blocks[1].checks, vec![Check::pass("previous_hash")]);
        assert_eq!(art.blocks[2].evidence["previous_hash_meaning"], "no match");
        assert!(matches!(
            art.blocks[2].checks[0].outcome,
            Outcome::Unverifiable(_)
        ));
        assert!(art.findings.iter().any(|f| {
            f.severity == Severity::Error
                && f.message
                    .starts_with("trailing bytes at offset 1139 not migrated (9 bytes)")
        }));

        let err = read("short", &fixture("unified-local-a.maif").slice(..300)).unwrap_err();
        assert!(
            matches!(err, MigrateError::Malformed { offset: 0, .. }),
            "{err}"
        );
    }
}
