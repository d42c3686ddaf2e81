//! `unified_block_format.py` / `UnifiedStorage` local files: `[228-byte BE header][metadata
//! JSON][data]` records, the first one a `HDER` file-header record. The reference code says
//! (and reads) 224 bytes, so it never finds a record of its own files; the struct it packs
//! is 228 bytes, which is what is on disk.

use std::collections::HashMap;
use std::ops::Range;

use bytes::Bytes;
use maif_store::format::FormatError;
use serde_json::{Map, Value, json};

use super::{
    COMPRESSED, DELETED, DELTA_COMPRESSED, ENCRYPTED, SIGNED, flag_names, mark_deleted, to_usize,
    trailing_bytes, withhold_encrypted,
};
use crate::codec::{Reader, ReaderExt as _, reader_at};
use crate::model::{
    BlockStatus, Body, BodyChecks, Check, LegacyArtifact, LegacyBlock, Severity, SourceKind,
    block_id_for, canonical_type, sha256_hex, type_text,
};
use crate::pyjson::PyJson;
use crate::{MigrateError, Result};

/// The record header, packed `'>4sIQ4s36sQ64s64sII28s'` (legacy-formats.md §4.3).
const HEADER: usize = 228;
const MAGIC: &[u8; 4] = b"MAIF";
const HEADER_TYPE: &[u8; 4] = b"HDER";
/// Where the block type and the uuid text are in a record header (§4.3), for messages.
const BLOCK_TYPE_AT: usize = 16;
const UUID_AT: usize = 20;
const UUID_TEXT_LEN: usize = 36;
const HASH_TEXT_LEN: usize = 64;
const RESERVED_LEN: usize = 28;
/// The positions of the hyphens in hyphenated uuid text.
const UUID_HYPHENS: [usize; 4] = [8, 13, 18, 23];

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

/// The fields of a 228-byte record header.
struct RecordHeader {
    version: u32,
    size: u64,
    block_type: [u8; 4],
    uuid: [u8; UUID_TEXT_LEN],
    timestamp: u64,
    previous_hash: [u8; HASH_TEXT_LEN],
    block_hash: [u8; HASH_TEXT_LEN],
    flags: u32,
    metadata_size: u32,
}

impl RecordHeader {
    /// Reads a header, magic to reserved bytes, from a reader at its first byte.
    fn read(reader: &mut Reader<'_>) -> Result<Self, FormatError> {
        reader.magic(MAGIC, "magic")?;
        let header = RecordHeader {
            version: reader.u32_be("version")?,
            size: reader.u64_be("size")?,
            block_type: reader.array("block_type")?,
            uuid: reader.array("uuid")?,
            timestamp: reader.u64_be("timestamp")?,
            previous_hash: reader.array("previous_hash")?,
            block_hash: reader.array("block_hash")?,
            flags: reader.u32_be("flags")?,
            metadata_size: reader.u32_be("metadata_size")?,
        };
        reader.bytes(RESERVED_LEN, "reserved")?;
        Ok(header)
    }
}

struct Record<'a> {
    offset: usize,
    end: usize,
    version: u32,
    size: u64,
    block_type: [u8; 4],
    uuid: [u8; UUID_TEXT_LEN],
    timestamp: u64,
    previous_hash: [u8; HASH_TEXT_LEN],
    block_hash: [u8; HASH_TEXT_LEN],
    flags: u32,
    metadata_size: u32,
    /// The 228 header bytes as stored.
    header: &'a [u8],
    metadata: &'a [u8],
    data: Range<usize>,
    data_bytes: &'a [u8],
}

impl Record<'_> {
    fn uuid_text(&self) -> Option<String> {
        let text = std::str::from_utf8(&self.uuid).ok()?;
        let id = uuid::Uuid::try_parse(text).ok()?;
        Some(id.hyphenated().to_string())
    }

    /// The id as the record spells it: uuid text, or the raw field when it is not one.
    fn legacy_id(&self) -> String {
        self.uuid_text().unwrap_or_else(|| type_text(&self.uuid))
    }

    fn ascii_field(field: &[u8; HASH_TEXT_LEN]) -> Value {
        if field.iter().all(|byte| *byte == 0) {
            Value::Null
        } else {
            json!(type_text(field))
        }
    }

    fn block_hash_text(&self) -> String {
        type_text(&self.block_hash)
    }

    fn metadata_text(&self) -> Option<String> {
        std::str::from_utf8(self.metadata).ok().map(str::to_owned)
    }
}

fn is_uuid_text(field: &[u8; UUID_TEXT_LEN]) -> bool {
    field.iter().enumerate().all(|(at, byte)| {
        if UUID_HYPHENS.contains(&at) {
            *byte == b'-'
        } else {
            byte.is_ascii_digit() || (b'a'..=b'f').contains(byte)
        }
    })
}

fn is_hex64(field: &[u8; HASH_TEXT_LEN]) -> bool {
    field
        .iter()
        .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(byte))
}

/// One record at `offset`, or why there is none.
fn record(data: &[u8], offset: usize) -> Result<Record<'_>, String> {
    let remain = data.len().saturating_sub(offset);
    let unreadable = |error: FormatError| match error {
        FormatError::BadMagic { .. } => format!("no `MAIF` magic at the record start: {error}"),
        _ => {
            format!("a {remain}-byte fragment, shorter than a {HEADER}-byte record header: {error}")
        }
    };
    let mut reader = reader_at(data, offset, "unified record header").map_err(unreadable)?;
    let start = reader.clone();
    let fields = RecordHeader::read(&mut reader).map_err(unreadable)?;
    let header = reader.since(&start).map_err(unreadable)?;
    let RecordHeader {
        version,
        size,
        block_type,
        uuid,
        timestamp,
        previous_hash,
        block_hash,
        flags,
        metadata_size,
    } = fields;
    let runs_past = |error: FormatError| {
        format!(
            "a record of {HEADER} + {metadata_size} metadata + {size} data bytes runs past the \
             end of the file ({remain} bytes remain): {error}"
        )
    };
    let metadata = reader
        .bytes(to_usize(u64::from(metadata_size)), "metadata")
        .map_err(runs_past)?;
    let data_start = reader.offset();
    let data_bytes = reader.bytes(to_usize(size), "data").map_err(runs_past)?;
    let end = reader.offset();
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
        header,
        metadata,
        data: data_start..end,
        data_bytes,
    })
}

/// The shape checks of `detect` on the first record.
pub(super) fn confirm(data: &[u8]) -> Result<(), String> {
    let header =
        RecordHeader::read(&mut Reader::new(data, "unified record header")).map_err(|error| {
            format!(
                "only {} bytes, a unified record header needs {HEADER}: {error}",
                data.len()
            )
        })?;
    let block_type = header.block_type;
    if !block_type.iter().all(|byte| (0x20..0x7f).contains(byte)) {
        return Err(format!(
            "bytes {BLOCK_TYPE_AT}..{} ({}) are not a printable block type",
            BLOCK_TYPE_AT + block_type.len(),
            hex::encode(block_type)
        ));
    }
    if !is_uuid_text(&header.uuid) {
        return Err(format!(
            "bytes {UUID_AT}..{} are not a lower-case hyphenated uuid",
            UUID_AT + UUID_TEXT_LEN
        ));
    }
    Ok(())
}

/// Reads a `UnifiedStorage` local file.
pub fn read(source: &str, data: &Bytes) -> Result<LegacyArtifact> {
    let mut records = Vec::new();
    let mut stop = None;
    let mut offset = 0;
    while offset < data.len() {
        match record(data, offset) {
            Ok(found) => {
                offset = found.end;
                records.push(found);
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
    for (position, rec) in records.iter().enumerate() {
        let computed = sha256_hex(rec.data_bytes);
        if &rec.block_type == HEADER_TYPE {
            header_record(data, rec, position, &computed, &mut art);
        } else {
            if position == 0 {
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
            trailing_bytes(&mut art, *offset, data.len(), why);
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
    let metadata = rec.metadata_text();
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
    match metadata
        .as_deref()
        .map(|text| PyJson::parse(text.as_bytes()))
    {
        Some(Ok(PyJson::Object(_))) => {}
        Some(Ok(_)) => problems.push("its metadata is not a JSON object".into()),
        Some(Err(error)) => problems.push(format!("its metadata is not JSON: {error}")),
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
            json!(hex::encode(rec.metadata)),
        ),
    };
}

fn block(
    data: &Bytes,
    rec: &Record,
    earlier: &HashMap<String, String>,
    art: &mut LegacyArtifact,
) -> LegacyBlock {
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

    let (meaning, previous_check) = if rec.previous_hash.iter().all(|byte| *byte == 0) {
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
    evidence.insert("header_hex".into(), json!(hex::encode(rec.header)));
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
    match rec.metadata_text() {
        Some(text) => {
            user_metadata = parse_metadata(&text, &legacy_id, art);
            evidence.insert("metadata_json".into(), json!(text));
        }
        None => {
            evidence.insert("metadata_hex".into(), json!(hex::encode(rec.metadata)));
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
                    Some(exact) => {
                        out.insert(key, exact);
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
        Err(error) => art.finding(
            Severity::Warning,
            "metadata",
            id.to_owned(),
            format!("metadata is not JSON ({error}); kept in metadata_json only"),
        ),
    }
    out
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

    /// A file cut short at a field boundary is an error, or a finding, naming the structure,
    /// the field and its offset: no field is ever read as zeros.
    #[test]
    fn a_cut_at_a_field_boundary_names_that_field() {
        let data = fixture("unified-local-a.maif");
        assert_cuts_name_the_field(
            read,
            &data,
            &[(56, "timestamp", 56), (228 + 5, "metadata", 228)],
        );
        // The TEXT record at 330 ends before its flags: the HDER record is kept.
        let art = read("cut", &data.slice(..330 + 192)).unwrap();
        assert_eq!(art.sections.len(), 1);
        assert!(art.blocks.is_empty());
        let stop = art
            .findings
            .iter()
            .find(|f| f.kind == "trailing_bytes")
            .unwrap();
        assert!(
            stop.message.contains("unified record header")
                && stop
                    .message
                    .contains("truncated at byte 522: field `flags`"),
            "{}",
            stop.message
        );
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
