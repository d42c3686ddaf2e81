//! `binary_format.py` (MAIFBinaryWriter): `[144-byte file header][blocks][index]`, all
//! big-endian; each block is an 80-byte header whose `size` counts the header too.

use std::collections::HashMap;
use std::io::Read as _;

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};

use super::{
    COMPRESSED, DELETED, DELTA_COMPRESSED, ENCRYPTED, SIGNED, array, flag_names, mark_deleted,
    to_usize, trailing_bytes, u16_be, u32_be, u64_be, uuid_text, withhold_encrypted,
};
use crate::model::{
    Body, BodyChecks, Check, LegacyArtifact, LegacyBlock, Severity, SourceKind, block_id_for,
    canonical_type, sha256, sha256_hex, type_text,
};
use crate::{MigrateError, Result};

const FILE_HEADER: usize = 144;
const BLOCK_HEADER: usize = 80;
const INDEX_ENTRY: usize = 16;
/// The checksum field: 80..112. The writer's bug zeroes 96..128 instead (see `checksum`).
const CHECKSUM_AT: usize = 80;

const FLAG_NAMES: &[(u32, &str)] = &[
    (COMPRESSED, "compressed"),
    (ENCRYPTED, "encrypted"),
    (SIGNED, "signed"),
    (DELETED, "deleted"),
    (DELTA_COMPRESSED, "delta_compressed"),
    (0x20, "semantic_indexed"),
    (0x40, "watermarked"),
    (0x80, "reserved"),
];

/// A zlib body may inflate to at most this many times its stored size...
const INFLATE_RATIO: u64 = 64;
/// ...and never beyond this.
const INFLATE_MAX: u64 = 1 << 30;

struct FileHeader {
    version_major: u16,
    version_minor: u16,
    flags: u32,
    created: u64,
    modified: u64,
    creator_id: [u8; 16],
    file_id: [u8; 16],
    block_count: u32,
    index_offset: u64,
    metadata_offset: u64,
    checksum: [u8; 32],
    reserved: [u8; 32],
}

fn file_header(d: &[u8]) -> Option<FileHeader> {
    if d.len() < FILE_HEADER {
        return None;
    }
    Some(FileHeader {
        version_major: u16_be(d, 4)?,
        version_minor: u16_be(d, 6)?,
        flags: u32_be(d, 8)?,
        created: u64_be(d, 12)?,
        modified: u64_be(d, 20)?,
        creator_id: array(d, 28)?,
        file_id: array(d, 44)?,
        block_count: u32_be(d, 60)?,
        index_offset: u64_be(d, 64)?,
        metadata_offset: u64_be(d, 72)?,
        checksum: array(d, CHECKSUM_AT)?,
        reserved: array(d, 112)?,
    })
}

impl FileHeader {
    fn index_len(&self) -> u64 {
        // u32 × 16 always fits in u64.
        u64::from(self.block_count) * INDEX_ENTRY as u64
    }

    fn fields(&self) -> Map<String, Value> {
        let value = json!({
            "magic": "MAIF",
            "version_major": self.version_major,
            "version_minor": self.version_minor,
            "flags": self.flags,
            "created_us": self.created,
            "modified_us": self.modified,
            "creator_id": uuid_text(self.creator_id),
            "file_id": uuid_text(self.file_id),
            "block_count": self.block_count,
            "index_offset": self.index_offset,
            "metadata_offset": self.metadata_offset,
            "checksum_hex": hex::encode(self.checksum),
            "reserved_hex": hex::encode(self.reserved),
        });
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }
}

struct BlockHeader {
    size: u32,
    block_type: [u8; 4],
    version: u32,
    flags: u32,
    timestamp: u64,
    block_id: [u8; 16],
    previous_hash: [u8; 32],
}

fn block_header(d: &[u8], at: usize) -> Option<BlockHeader> {
    Some(BlockHeader {
        size: u32_be(d, at)?,
        block_type: array(d, at.checked_add(4)?)?,
        version: u32_be(d, at.checked_add(8)?)?,
        flags: u32_be(d, at.checked_add(12)?)?,
        timestamp: u64_be(d, at.checked_add(16)?)?,
        block_id: array(d, at.checked_add(24)?)?,
        previous_hash: array(d, at.checked_add(40)?)?,
    })
}

/// The shape checks of `detect`: `metadata_offset` is EOF and the index ends the file.
pub(super) fn confirm(data: &[u8]) -> Result<(), String> {
    let header = file_header(data).ok_or_else(|| {
        format!(
            "only {} bytes, a binary_format file header needs {FILE_HEADER}",
            data.len()
        )
    })?;
    let len = data.len() as u64;
    if header.metadata_offset != len {
        return Err(format!(
            "metadata_offset {} is not the file size {len}",
            header.metadata_offset
        ));
    }
    if len.checked_sub(header.index_len()) != Some(header.index_offset) {
        return Err(format!(
            "index_offset {} is not the file size {len} minus 16 x block_count {}",
            header.index_offset, header.block_count
        ));
    }
    Ok(())
}

/// Reads a `binary_format.py` file.
pub fn read(source: &str, data: &Bytes) -> Result<LegacyArtifact> {
    let d: &[u8] = data;
    let len = d.len();
    if !d.starts_with(b"MAIF") {
        return Err(MigrateError::malformed(
            source,
            "file header",
            0,
            "no `MAIF` magic at byte 0",
        ));
    }
    let header = file_header(d).ok_or_else(|| {
        MigrateError::malformed(
            source,
            "file header",
            0,
            format!("{len} bytes, a binary_format file header needs {FILE_HEADER}"),
        )
    })?;

    let mut art = LegacyArtifact::new(SourceKind::BinaryFormat, source);
    art.created_us = Some(header.created);
    art.artifact_id = Some(header.file_id);
    art.file_level = header.fields();
    art.sections.push((
        "binary_format_file_header".into(),
        data.slice(..FILE_HEADER),
    ));
    if (header.version_major, header.version_minor) != (1, 0) {
        art.finding(
            Severity::Warning,
            "version",
            "file header",
            format!(
                "version {}.{}; the only known writer produces 1.0",
                header.version_major, header.version_minor
            ),
        );
    }

    let len64 = len as u64;
    let index_end = header.index_offset.checked_add(header.index_len());
    art.checks.push(Check::expect(
        "index_offset",
        header.index_offset >= FILE_HEADER as u64 && index_end == Some(len64),
        || {
            format!(
                "index_offset {} + 16 x {} entries does not end at the file size {len}",
                header.index_offset, header.block_count
            )
        },
    ));
    art.checks.push(Check::expect(
        "metadata_offset",
        header.metadata_offset == len64 && index_end == Some(header.metadata_offset),
        || {
            format!(
                "metadata_offset {} is not both the end of the index and the file size {len}",
                header.metadata_offset
            )
        },
    ));

    // Blocks fill 144..index_offset. With no usable index_offset, walk as far as the data goes.
    let index_start = usize::try_from(header.index_offset)
        .ok()
        .filter(|at| (FILE_HEADER..=len).contains(at));
    let limit = index_start.unwrap_or(len);
    let boundary = if index_start.is_some() {
        "the index"
    } else {
        "the end of the file"
    };

    let mut walked: Vec<(usize, usize)> = Vec::new();
    let mut hashes: HashMap<[u8; 32], String> = HashMap::new();
    let mut stop: Option<String> = None;
    let mut off = FILE_HEADER;
    while off < limit {
        let what = format!("block {} header", walked.len());
        let remain = limit - off;
        let head = match block_header(d, off) {
            Some(head) if remain >= BLOCK_HEADER => head,
            _ => {
                stop = Some(format!(
                    "{what}: {remain} bytes remain before {boundary}, a block header needs {BLOCK_HEADER}"
                ));
                break;
            }
        };
        let size = to_usize(u64::from(head.size));
        if size < BLOCK_HEADER {
            stop = Some(format!(
                "{what}: size {size} is less than the {BLOCK_HEADER}-byte header it includes"
            ));
            break;
        }
        let Some(end) = off.checked_add(size).filter(|end| *end <= limit) else {
            stop = Some(format!(
                "{what}: a block of {size} bytes runs past {boundary} at {limit}"
            ));
            break;
        };
        let block = block(data, off, end, &head, &hashes, &mut art);
        hashes
            .entry(sha256(d.get(off..end).unwrap_or_default()))
            .or_insert_with(|| block.legacy_id.clone());
        art.blocks.push(block);
        walked.push((off, size));
        off = end;
    }

    if let Some(why) = &stop {
        if walked.is_empty() {
            return Err(MigrateError::malformed(
                source,
                "block 0 header",
                off as u64,
                why.clone(),
            ));
        }
        trailing_bytes(&mut art, off, limit, why);
    }
    art.checks.push(match (&stop, index_start) {
        (None, Some(_)) => Check::pass("walk_ends_at_index"),
        (Some(why), _) => Check::fail(
            "walk_ends_at_index",
            format!("the walk stopped at offset {off}: {why}"),
        ),
        (None, None) => Check::fail(
            "walk_ends_at_index",
            format!(
                "index_offset {} is outside the file; the blocks walk to {off}",
                header.index_offset
            ),
        ),
    });

    index_checks(data, &header, index_start, &walked, &mut art);
    checksum_check(d, &header, index_start, &mut art);
    super::note_duplicate_ids(&mut art);
    Ok(art)
}

/// The index section, each entry against the walk, and anything after the index.
fn index_checks(
    data: &Bytes,
    header: &FileHeader,
    index_start: Option<usize>,
    walked: &[(usize, usize)],
    art: &mut LegacyArtifact,
) {
    let d: &[u8] = data;
    let count = to_usize(u64::from(header.block_count));
    art.checks
        .push(Check::expect("block_count", count == walked.len(), || {
            format!(
                "the header says {count} blocks, the walk found {}",
                walked.len()
            )
        }));
    let Some(start) = index_start else {
        return;
    };
    let wanted_end = start.saturating_add(count.saturating_mul(INDEX_ENTRY));
    let end = wanted_end.min(d.len());
    art.sections
        .push(("binary_format_index".into(), data.slice(start..end)));
    if wanted_end < d.len() {
        trailing_bytes(
            art,
            wanted_end,
            d.len(),
            "nothing follows the index in this format",
        );
    }
    let present = (end - start) / INDEX_ENTRY;
    // One check per block the walk found; the rest of a corrupt index goes in one check,
    // so a forged block_count cannot make the report huge.
    for (i, (offset, size)) in walked.iter().enumerate() {
        let at = start + i * INDEX_ENTRY;
        let name = format!("block_index[{i}]");
        let entry = u64_be(d, at).zip(u64_be(d, at + 8)).filter(|_| i < present);
        art.checks.push(match entry {
            Some((o, s)) => Check::expect(name, o == *offset as u64 && s == *size as u64, || {
                format!(
                    "index says offset {o} size {s}, the walk found offset {offset} size {size}"
                )
            }),
            None => Check::fail(name, "the index has no entry for this block"),
        });
    }
    if present > walked.len() {
        art.checks.push(Check::fail(
            "block_index",
            format!(
                "entries {}..{present} name blocks the walk did not find",
                walked.len()
            ),
        ));
    }
    if count > present {
        art.checks.push(Check::fail(
            "block_index",
            format!("block_count {count} but the file holds only {present} index entries"),
        ));
    }
}

/// The writer hashes the file with `P[0..16)` at 80..96 and zeros at 96..128, where
/// `P = SHA-256(block bytes)` is the placeholder it packed first.
fn checksum_check(
    d: &[u8],
    header: &FileHeader,
    index_start: Option<usize>,
    art: &mut LegacyArtifact,
) {
    let parts = index_start.and_then(|start| {
        Some((
            d.get(FILE_HEADER..start)?,
            d.get(..CHECKSUM_AT)?,
            d.get(128..)?,
        ))
    });
    let Some((blocks, head, rest)) = parts else {
        art.checks.push(Check::fail(
            "file_checksum",
            format!(
                "cannot be recomputed: index_offset {} is outside the file",
                header.index_offset
            ),
        ));
        return;
    };
    let placeholder = sha256(blocks);
    let mut hasher = Sha256::new();
    hasher.update(head);
    hasher.update(&placeholder[..16]);
    hasher.update([0u8; 32]);
    hasher.update(rest);
    let computed: [u8; 32] = hasher.finalize().into();
    art.checks.push(Check::expect(
        "file_checksum",
        computed == header.checksum,
        || {
            format!(
                "stored {}, the writer's rule gives {}",
                hex::encode(header.checksum),
                hex::encode(computed)
            )
        },
    ));
    art.finding(
        Severity::Info,
        "reference_bug",
        "file checksum",
        format!(
            "reference verify_file_integrity() rejects every file; checked with the writer's \
             actual rule (placeholder P = SHA-256 of the block bytes = {}, P[0..16) at 80..96, \
             zeros at 96..128)",
            hex::encode(placeholder)
        ),
    );
}

enum Inflated {
    Done { body: Vec<u8>, consumed: u64 },
    TooLarge(u64),
    Failed(String),
}

fn inflate(stored: &[u8]) -> Inflated {
    let limit = (stored.len() as u64)
        .saturating_mul(INFLATE_RATIO)
        .min(INFLATE_MAX);
    let mut decoder = flate2::read::ZlibDecoder::new(stored);
    let mut body = Vec::new();
    if let Err(e) = (&mut decoder).take(limit + 1).read_to_end(&mut body) {
        return Inflated::Failed(e.to_string());
    }
    if body.len() as u64 > limit {
        return Inflated::TooLarge(limit);
    }
    Inflated::Done {
        body,
        consumed: decoder.total_in(),
    }
}

fn block(
    data: &Bytes,
    off: usize,
    end: usize,
    head: &BlockHeader,
    earlier: &HashMap<[u8; 32], String>,
    art: &mut LegacyArtifact,
) -> LegacyBlock {
    let d: &[u8] = data;
    let legacy_id = uuid_text(head.block_id);
    let data_start = off + BLOCK_HEADER;
    let stored = data.slice(data_start..end);

    let (meaning, previous_check) = if head.previous_hash == [0; 32] {
        ("none".to_owned(), Check::pass("previous_hash"))
    } else if let Some(parent) = earlier.get(&head.previous_hash) {
        (format!("links to {parent}"), Check::pass("previous_hash"))
    } else {
        (
            "caller-supplied, not verifiable".to_owned(),
            Check::unverifiable(
                "previous_hash",
                "caller-supplied: it is the SHA-256 of no earlier block of this file, and the \
                 format gives it no other meaning",
            ),
        )
    };

    let mut evidence = Map::new();
    evidence.insert("format".into(), json!("binary-format"));
    evidence.insert("offset".into(), json!(off));
    evidence.insert(
        "header_hex".into(),
        json!(hex::encode(d.get(off..data_start).unwrap_or_default())),
    );
    evidence.insert("size".into(), json!(head.size));
    evidence.insert("data_size".into(), json!(stored.len()));
    evidence.insert(
        "block_type_u32".into(),
        json!(format!("0x{:08X}", u32::from_be_bytes(head.block_type))),
    );
    evidence.insert("version".into(), json!(head.version));
    evidence.insert("flags".into(), json!(head.flags));
    evidence.insert(
        "flag_names".into(),
        json!(flag_names(head.flags, FLAG_NAMES)),
    );
    evidence.insert("timestamp_us".into(), json!(head.timestamp));
    evidence.insert(
        "previous_hash".into(),
        json!(hex::encode(head.previous_hash)),
    );
    evidence.insert("previous_hash_meaning".into(), json!(meaning));

    let mut block = LegacyBlock {
        legacy_id: legacy_id.clone(),
        block_id: block_id_for(&legacy_id),
        legacy_type: type_text(&head.block_type),
        block_type: canonical_type(&head.block_type),
        timestamp_us: head.timestamp,
        status: crate::model::BlockStatus::Live,
        evidence,
        user_metadata: Map::new(),
        body: Body::Inline(stored.clone()),
        checks: vec![previous_check],
        body_checks: BodyChecks {
            declared_size: Some(stored.len() as u64),
            ..BodyChecks::default()
        },
    };

    if head.flags & SIGNED != 0 {
        art.finding(
            Severity::Info,
            "signed_flag",
            legacy_id.clone(),
            "signed flag set, but this format stores no signature",
        );
    }
    if head.flags & ENCRYPTED != 0 {
        withhold_encrypted(&mut block, &stored, art);
        return block;
    }
    if head.flags & DELETED != 0 {
        mark_deleted(&mut block, art);
    }
    if head.flags & DELTA_COMPRESSED != 0 {
        art.finding(
            Severity::Warning,
            "delta_flag",
            legacy_id.clone(),
            "delta-compressed flag set, but the format names no base or codec; the payload is \
             migrated as stored",
        );
    }
    if head.flags & COMPRESSED != 0 {
        decode_zlib(&mut block, &stored, art);
    }
    block
}

/// Flag 0x01: the stored bytes are a zlib stream. The body becomes the inflated bytes and
/// the stored stream stays in the evidence, exactly.
fn decode_zlib(block: &mut LegacyBlock, stored: &Bytes, art: &mut LegacyArtifact) {
    let evidence = &mut block.evidence;
    evidence.insert("stored_encoding".into(), json!("zlib"));
    evidence.insert("stored_size".into(), json!(stored.len()));
    evidence.insert("stored_sha256".into(), json!(sha256_hex(stored)));
    match inflate(stored) {
        Inflated::Done { body, consumed } => {
            evidence.insert(
                "stored_base64".into(),
                json!(base64::engine::general_purpose::STANDARD.encode(stored)),
            );
            evidence.insert("decoded_size".into(), json!(body.len()));
            let after = (stored.len() as u64).saturating_sub(consumed);
            if after > 0 {
                evidence.insert("stored_bytes_after_zlib_stream".into(), json!(after));
                art.finding(
                    Severity::Warning,
                    "zlib_trailing_bytes",
                    block.legacy_id.clone(),
                    format!(
                        "{after} stored bytes follow the end of the zlib stream; they are kept in \
                         the evidence (stored_base64) only"
                    ),
                );
            }
            block.checks.push(Check::pass("zlib_decode"));
            // The declared size is the stored one; the body is now the decoded bytes.
            block.body_checks.declared_size = None;
            block.body = Body::Inline(Bytes::from(body));
        }
        Inflated::TooLarge(limit) => {
            block.checks.push(Check::unverifiable(
                "zlib_decode",
                format!(
                    "not inflated: it would exceed {limit} bytes (64 x stored size, at most 1 GiB)"
                ),
            ));
            art.finding(
                Severity::Warning,
                "zlib_not_inflated",
                block.legacy_id.clone(),
                format!(
                    "the zlib body would inflate beyond {limit} bytes; migrated as the stored \
                     zlib stream"
                ),
            );
        }
        Inflated::Failed(why) => {
            block.checks.push(Check::fail(
                "zlib_decode",
                format!("compressed flag set, but the stored bytes are not a valid zlib stream: {why}; migrated as stored"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::tests::{expected, fixture};
    use crate::model::{BlockStatus, Outcome};

    fn no_fail(art: &LegacyArtifact) {
        for check in art
            .checks
            .iter()
            .chain(art.blocks.iter().flat_map(|b| &b.checks))
        {
            assert!(!matches!(check.outcome, Outcome::Fail(_)), "{check:?}");
        }
    }

    fn check<'a>(checks: &'a [Check], name: &str) -> &'a Outcome {
        &checks
            .iter()
            .find(|c| c.check == name)
            .unwrap_or_else(|| panic!("no check {name} in {checks:?}"))
            .outcome
    }

    fn body(block: &LegacyBlock) -> &[u8] {
        match &block.body {
            Body::Inline(b) => b,
            other => panic!("{other:?}"),
        }
    }

    fn compare_with_expected(name: &str) -> LegacyArtifact {
        let data = fixture(name);
        let exp = expected(name);
        let art = read(name, &data).unwrap();
        let fh = &exp["file_header"];
        for key in [
            "version_major",
            "version_minor",
            "flags",
            "created_us",
            "modified_us",
            "creator_id",
            "file_id",
            "block_count",
            "index_offset",
            "metadata_offset",
            "checksum_hex",
        ] {
            assert_eq!(art.file_level[key], fh[key], "{name} {key}");
        }
        assert_eq!(art.created_us, fh["created_us"].as_u64());
        assert_eq!(
            art.artifact_id,
            Some(block_id_for(fh["file_id"].as_str().unwrap()))
        );
        assert_eq!(art.sections[0].0, "binary_format_file_header");
        assert_eq!(art.sections[0].1, data.slice(..144));
        let index_offset = fh["index_offset"].as_u64().unwrap() as usize;
        assert_eq!(art.sections[1].0, "binary_format_index");
        assert_eq!(art.sections[1].1, data.slice(index_offset..));
        assert_eq!(check(&art.checks, "file_checksum"), &Outcome::Pass);
        assert_eq!(check(&art.checks, "walk_ends_at_index"), &Outcome::Pass);
        assert!(art.findings.iter().any(|f| {
            f.kind == "reference_bug"
                && f.message
                    .contains(fh["placeholder_checksum_hex"].as_str().unwrap())
        }));

        let blocks = exp["blocks"].as_array().unwrap();
        assert_eq!(art.blocks.len(), blocks.len());
        for (i, (got, want)) in art.blocks.iter().zip(blocks).enumerate() {
            assert_eq!(
                check(&art.checks, &format!("block_index[{i}]")),
                &Outcome::Pass
            );
            assert_eq!(got.legacy_id, want["block_id"].as_str().unwrap());
            assert_eq!(got.block_id, block_id_for(&got.legacy_id));
            assert_eq!(got.legacy_type, want["fourcc"].as_str().unwrap());
            assert_eq!(got.block_type.0, got.legacy_type.as_bytes());
            assert_eq!(got.timestamp_us, want["timestamp_us"].as_u64().unwrap());
            assert_eq!(got.evidence["flags"], want["flags"]);
            assert_eq!(got.evidence["size"], want["header_size_field"]);
            assert_eq!(got.evidence["block_type_u32"], want["block_type_u32"]);
            assert_eq!(got.evidence["previous_hash"], want["previous_hash_hex"]);
            assert_eq!(got.evidence["format"], "binary-format");
            assert_eq!(got.evidence["header_hex"].as_str().unwrap().len(), 160);
            assert_eq!(check(&got.checks, "previous_hash"), &Outcome::Pass);
            let stored_sha = if got.evidence.contains_key("stored_sha256") {
                got.evidence["stored_sha256"].as_str().unwrap().to_owned()
            } else {
                sha256_hex(body(got))
            };
            assert_eq!(stored_sha, want["data_sha256"].as_str().unwrap());
            if let Some(text) = want["text"].as_str() {
                assert_eq!(std::str::from_utf8(body(got)).unwrap(), text);
            }
        }
        no_fail(&art);
        assert!(art.findings.iter().all(|f| f.severity != Severity::Error));
        art
    }

    #[test]
    fn fixture_a() {
        let art = compare_with_expected("binary-format-a.maif");
        for block in &art.blocks {
            assert_eq!(block.status, BlockStatus::Live);
            assert_eq!(block.evidence["previous_hash_meaning"], "none");
            assert_eq!(
                block.body_checks.declared_size,
                Some(body(block).len() as u64)
            );
        }
        // EMBD stays opaque: the big-endian floats as stored.
        assert_eq!(&body(&art.blocks[1])[..4], &0.5f32.to_be_bytes());
    }

    #[test]
    fn fixture_b_zlib_and_signed_flag() {
        let art = compare_with_expected("binary-format-b.maif");
        let text = &art.blocks[0];
        assert_eq!(text.evidence["stored_encoding"], "zlib");
        assert_eq!(text.evidence["stored_size"], 68);
        let stored = base64::engine::general_purpose::STANDARD
            .decode(text.evidence["stored_base64"].as_str().unwrap())
            .unwrap();
        assert_eq!(stored, fixture("binary-format-b.maif")[224..292]);
        assert_eq!(check(&text.checks, "zlib_decode"), &Outcome::Pass);
        let secu = &art.blocks[1];
        assert_eq!(secu.legacy_type, "SECU");
        assert_eq!(secu.evidence["flag_names"], json!(["signed"]));
        assert_eq!(
            secu.evidence["previous_hash_meaning"],
            format!("links to {}", text.legacy_id)
        );
        assert!(art.findings.iter().any(|f| f.kind == "signed_flag"
            && f.subject == secu.legacy_id
            && f.message.contains("stores no signature")));
    }

    /// Rewrites one block header field of fixture a, and the checksum with it.
    fn with_flags(flags: u32, block_data: Option<&[u8]>) -> Bytes {
        let mut d = fixture("binary-format-a.maif").to_vec();
        d[144 + 12..144 + 16].copy_from_slice(&flags.to_be_bytes());
        if let Some(new) = block_data {
            d[144 + 80..144 + 80 + new.len()].copy_from_slice(new);
        }
        Bytes::from(d)
    }

    #[test]
    fn encrypted_blocks_are_never_migrated_as_plaintext() {
        let art = read("enc", &with_flags(ENCRYPTED | COMPRESSED, None)).unwrap();
        let block = &art.blocks[0];
        assert_eq!(block.status, BlockStatus::Encrypted);
        assert!(matches!(block.body, Body::Absent));
        assert_eq!(block.evidence["stored_size"], 34);
        assert!(block.evidence.contains_key("stored_sha256"));
        assert!(art.findings.iter().any(|f| f.severity == Severity::Error
            && f.kind == "encrypted"
            && f.message.contains("not migrated")));
    }

    #[test]
    fn a_bad_zlib_stream_is_migrated_as_stored_with_a_failure() {
        let data = with_flags(COMPRESSED, None);
        let art = read("z", &data).unwrap();
        let block = &art.blocks[0];
        assert!(matches!(
            check(&block.checks, "zlib_decode"),
            Outcome::Fail(_)
        ));
        assert_eq!(body(block), &data[224..258]);
    }

    #[test]
    fn inflation_is_bounded() {
        // 34 bytes of zlib that inflate to far more than 64 x 34.
        use std::io::Write as _;
        let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&[0u8; 10_000]).unwrap();
        let z = enc.finish().unwrap();
        assert!(z.len() <= 34, "{}", z.len());
        let mut padded = z.clone();
        padded.resize(34, 0);
        let art = read("bomb", &with_flags(COMPRESSED, Some(&padded))).unwrap();
        let block = &art.blocks[0];
        assert!(matches!(
            check(&block.checks, "zlib_decode"),
            Outcome::Unverifiable(_)
        ));
        assert_eq!(body(block).len(), 34);
    }

    #[test]
    fn truncated_or_empty_zlib_streams_fail() {
        let stored = &fixture("binary-format-b.maif")[224..292];
        assert!(matches!(
            inflate(stored),
            Inflated::Done { consumed: 68, .. }
        ));
        for cut in [0, 1, 2, 10, 67] {
            assert!(
                matches!(inflate(&stored[..cut]), Inflated::Failed(_)),
                "cut at {cut}"
            );
        }
        let mut longer = stored.to_vec();
        longer.extend_from_slice(b"xyz");
        assert!(matches!(
            inflate(&longer),
            Inflated::Done { consumed: 68, .. }
        ));
    }

    #[test]
    fn caller_supplied_previous_hash_is_unverifiable_not_tampering() {
        let mut d = fixture("binary-format-a.maif").to_vec();
        d[144 + 40] = 1;
        let art = read("p", &Bytes::from(d)).unwrap();
        let block = &art.blocks[0];
        assert!(matches!(
            check(&block.checks, "previous_hash"),
            Outcome::Unverifiable(_)
        ));
        assert_eq!(
            block.evidence["previous_hash_meaning"],
            "caller-supplied, not verifiable"
        );
        assert!(matches!(
            check(&art.checks, "file_checksum"),
            Outcome::Fail(_)
        ));
    }

    #[test]
    fn a_truncated_file_keeps_its_readable_prefix() {
        let data = fixture("binary-format-a.maif").slice(..400);
        let art = read("t", &data).unwrap();
        assert_eq!(art.blocks.len(), 2);
        assert!(art.findings.iter().any(|f| {
            f.severity == Severity::Error
                && f.message
                    .starts_with("trailing bytes at offset 370 not migrated (30 bytes)")
        }));
        assert!(matches!(
            check(&art.checks, "walk_ends_at_index"),
            Outcome::Fail(_)
        ));
        let err = read("t", &fixture("binary-format-a.maif").slice(..200)).unwrap_err();
        assert!(
            matches!(err, MigrateError::Malformed { offset: 144, .. }),
            "{err}"
        );
        assert!(read("t", &fixture("binary-format-a.maif").slice(..143)).is_err());
    }

    #[test]
    fn appended_bytes_are_reported() {
        let mut d = fixture("binary-format-b.maif").to_vec();
        d.extend_from_slice(b"tail");
        let art = read("x", &Bytes::from(d)).unwrap();
        assert_eq!(art.blocks.len(), 2);
        assert!(art.findings.iter().any(|f| {
            f.message
                .starts_with("trailing bytes at offset 418 not migrated (4 bytes)")
        }));
    }
}
