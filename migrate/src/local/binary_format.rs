//! `binary_format.py` (MAIFBinaryWriter): `[144-byte file header][blocks][index]`, all
//! big-endian; each block is an 80-byte header whose `size` counts the header too.

use std::collections::HashMap;
use std::io::Read as _;
use std::ops::Range;

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};

use maif_store::format::FormatError;

use super::{
    COMPRESSED, DELETED, DELTA_COMPRESSED, ENCRYPTED, SIGNED, flag_names, mark_deleted, to_usize,
    trailing_bytes, uuid_text, withhold_encrypted,
};
use crate::codec::{Reader, ReaderExt as _, malformed, prefix, reader_at};
use crate::model::{
    Body, BodyChecks, Check, LegacyArtifact, LegacyBlock, Severity, SourceKind, block_id_for,
    canonical_type, sha256, sha256_hex, type_text,
};
use crate::{MigrateError, Result};

// Sizes and offsets of legacy-formats.md §4.1.
const MAGIC: &[u8; 4] = b"MAIF";
const FILE_HEADER: usize = 144;
const BLOCK_HEADER: usize = 80;
const BLOCK_RESERVED_LEN: usize = 8;
const INDEX_ENTRY: usize = 16;
/// The checksum field: 80..112. The writer's bug zeroes 96..128 instead (see `checksum_check`).
const CHECKSUM_AT: usize = 80;
/// What the writer hashes in place of the checksum field: the first half of the placeholder...
const PLACEHOLDER_PREFIX_LEN: usize = 16;
/// ...then 32 zero bytes, up to byte 128.
const ZEROED_LEN: usize = 32;
const ZEROED_END: usize = CHECKSUM_AT + PLACEHOLDER_PREFIX_LEN + ZEROED_LEN;

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

/// Reads the 144-byte file header at the start of `data`.
fn file_header(data: &[u8]) -> Result<FileHeader, FormatError> {
    let mut reader = Reader::new(data, "binary_format file header");
    reader.magic(MAGIC, "magic")?;
    Ok(FileHeader {
        version_major: reader.u16_be("version_major")?,
        version_minor: reader.u16_be("version_minor")?,
        flags: reader.u32_be("flags")?,
        created: reader.u64_be("created")?,
        modified: reader.u64_be("modified")?,
        creator_id: reader.array("creator_id")?,
        file_id: reader.array("file_id")?,
        block_count: reader.u32_be("block_count")?,
        index_offset: reader.u64_be("index_offset")?,
        metadata_offset: reader.u64_be("metadata_offset")?,
        checksum: reader.array("checksum")?,
        reserved: reader.array("reserved")?,
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

/// Reads an 80-byte block header, reserved bytes included, from a reader at its first byte.
fn block_header(reader: &mut Reader<'_>) -> Result<BlockHeader, FormatError> {
    let header = BlockHeader {
        size: reader.u32_be("size")?,
        block_type: reader.array("block_type")?,
        version: reader.u32_be("version")?,
        flags: reader.u32_be("flags")?,
        timestamp: reader.u64_be("timestamp")?,
        block_id: reader.array("block_id")?,
        previous_hash: reader.array("previous_hash")?,
    };
    reader.bytes(BLOCK_RESERVED_LEN, "reserved")?;
    Ok(header)
}

/// One block as the walk found it.
struct FoundBlock<'a> {
    offset: usize,
    end: usize,
    header: BlockHeader,
    /// The 80 header bytes as stored.
    header_bytes: &'a [u8],
    /// Header and data: what a later block's caller-supplied previous_hash may name.
    bytes: &'a [u8],
    /// Where the stored data lies in the file.
    stored: Range<usize>,
}

/// Why no block could be read at an offset.
enum BlockRead {
    /// The 80-byte header does not fit.
    Header(FormatError),
    /// The size field is smaller than the header it includes.
    Undersized(usize),
    /// The data the size field declares does not fit.
    PastEnd(usize, FormatError),
}

impl BlockRead {
    /// The block at `offset` of `region`, the bytes before the index.
    fn at(region: &[u8], offset: usize) -> Result<FoundBlock<'_>, BlockRead> {
        let mut reader =
            reader_at(region, offset, "binary_format block header").map_err(BlockRead::Header)?;
        let start = reader.clone();
        let header = block_header(&mut reader).map_err(BlockRead::Header)?;
        let header_bytes = reader.since(&start).map_err(BlockRead::Header)?;
        let size = to_usize(u64::from(header.size));
        let Some(data_len) = size.checked_sub(BLOCK_HEADER) else {
            return Err(BlockRead::Undersized(size));
        };
        let data_start = reader.offset();
        reader
            .bytes(data_len, "data")
            .map_err(|error| BlockRead::PastEnd(size, error))?;
        let end = reader.offset();
        let bytes = reader.since(&start).map_err(BlockRead::Header)?;
        Ok(FoundBlock {
            offset,
            end,
            header,
            header_bytes,
            bytes,
            stored: data_start..end,
        })
    }
}

/// The shape checks of `detect`: `metadata_offset` is EOF and the index ends the file.
pub(super) fn confirm(data: &[u8]) -> Result<(), String> {
    let header = file_header(data).map_err(|error| {
        format!(
            "only {} bytes, a binary_format file header needs {FILE_HEADER}: {error}",
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
    let len = data.len();
    let header = file_header(data).map_err(|error| malformed(source, "file header", 0, &error))?;

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

    // Blocks are read from the bytes before the index alone, so none can run into it.
    let blocks_region = prefix(data, limit, "binary_format blocks")
        .map_err(|error| malformed(source, "blocks", FILE_HEADER, &error))?;
    let mut walked: Vec<(usize, usize)> = Vec::new();
    let mut hashes: HashMap<[u8; 32], String> = HashMap::new();
    let mut stop: Option<String> = None;
    let mut offset = FILE_HEADER;
    while offset < limit {
        let what = format!("block {} header", walked.len());
        let remain = limit - offset;
        let read = BlockRead::at(blocks_region, offset).map_err(|problem| match problem {
            BlockRead::Header(error) => format!(
                "{what}: {remain} bytes remain before {boundary}, a block header needs \
                 {BLOCK_HEADER}: {error}"
            ),
            BlockRead::Undersized(size) => format!(
                "{what}: size {size} is less than the {BLOCK_HEADER}-byte header it includes"
            ),
            BlockRead::PastEnd(size, error) => {
                format!("{what}: a block of {size} bytes runs past {boundary} at {limit}: {error}")
            }
        });
        let found = match read {
            Ok(found) => found,
            Err(why) => {
                stop = Some(why);
                break;
            }
        };
        let block = block(data, &found, &hashes, &mut art);
        hashes
            .entry(sha256(found.bytes))
            .or_insert_with(|| block.legacy_id.clone());
        art.blocks.push(block);
        walked.push((offset, found.bytes.len()));
        offset = found.end;
    }

    if let Some(why) = &stop {
        if walked.is_empty() {
            return Err(MigrateError::malformed(
                source,
                "block 0 header",
                offset as u64,
                why.clone(),
            ));
        }
        trailing_bytes(&mut art, offset, limit, why);
    }
    art.checks.push(match (&stop, index_start) {
        (None, Some(_)) => Check::pass("walk_ends_at_index"),
        (Some(why), _) => Check::fail(
            "walk_ends_at_index",
            format!("the walk stopped at offset {offset}: {why}"),
        ),
        (None, None) => Check::fail(
            "walk_ends_at_index",
            format!(
                "index_offset {} is outside the file; the blocks walk to {offset}",
                header.index_offset
            ),
        ),
    });

    index_checks(data, &header, index_start, &walked, &mut art);
    checksum_check(data, &header, index_start, &mut art);
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
    let end = wanted_end.min(data.len());
    art.sections
        .push(("binary_format_index".into(), data.slice(start..end)));
    if wanted_end < data.len() {
        trailing_bytes(
            art,
            wanted_end,
            data.len(),
            "nothing follows the index in this format",
        );
    }
    let present = (end - start) / INDEX_ENTRY;
    // The entries block_count declares, and no further: the entries after them are trailing bytes.
    let index_region = prefix(data, end, "binary_format index");
    let mut entries = index_region
        .and_then(|region| reader_at(region, start, "binary_format index"))
        .ok();
    // One check per block the walk found; the rest of a corrupt index goes in one check,
    // so a forged block_count cannot make the report huge.
    for (position, (offset, size)) in walked.iter().enumerate() {
        let name = format!("block_index[{position}]");
        let entry = entries
            .as_mut()
            .map(|reader| Ok::<_, FormatError>((reader.u64_be("offset")?, reader.u64_be("size")?)));
        art.checks.push(match entry {
            Some(Ok((index_offset, index_size))) => Check::expect(
                name,
                index_offset == *offset as u64 && index_size == *size as u64,
                || {
                    format!(
                        "index says offset {index_offset} size {index_size}, the walk found \
                         offset {offset} size {size}"
                    )
                },
            ),
            Some(Err(_)) | None => Check::fail(name, "the index has no entry for this block"),
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
    data: &[u8],
    header: &FileHeader,
    index_start: Option<usize>,
    art: &mut LegacyArtifact,
) {
    let parts = index_start.and_then(|start| {
        let blocks_len = start.checked_sub(FILE_HEADER)?;
        let blocks = reader_at(data, FILE_HEADER, "binary_format blocks")
            .and_then(|mut reader| reader.bytes(blocks_len, "blocks"));
        let mut reader = Reader::new(data, "binary_format checksum input");
        let head = reader.bytes(CHECKSUM_AT, "bytes before the checksum");
        let zeroed = reader.bytes(ZEROED_END - CHECKSUM_AT, "checksum and reserved");
        let rest = reader.rest("bytes after the zeroed range");
        Some((blocks.ok()?, head.ok()?, zeroed.and(rest).ok()?))
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
    hasher.update(&placeholder[..PLACEHOLDER_PREFIX_LEN]);
    hasher.update([0u8; ZEROED_LEN]);
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
    found: &FoundBlock,
    earlier: &HashMap<[u8; 32], String>,
    art: &mut LegacyArtifact,
) -> LegacyBlock {
    let head = &found.header;
    let legacy_id = uuid_text(head.block_id);
    let stored = data.slice(found.stored.clone());

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
    evidence.insert("offset".into(), json!(found.offset));
    evidence.insert("header_hex".into(), json!(hex::encode(found.header_bytes)));
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
    use crate::local::tests::{expected, fixture, malformed_parts};
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

    /// A file cut short at a field boundary is an error, or a finding, naming the structure,
    /// the field and its offset: no field is ever read as zeros.
    #[test]
    fn a_cut_at_a_field_boundary_names_that_field() {
        let data = fixture("binary-format-a.maif");
        let (what, offset, reason) = malformed_parts(read("cut", &data.slice(..60)));
        assert_eq!((what.as_str(), offset), ("file header", 0));
        assert!(reason.contains("binary_format file header"), "{reason}");
        assert!(
            reason.contains("truncated at byte 60: field `block_count`"),
            "{reason}"
        );

        // Block 0's header ends before previous_hash, or its data before the size says.
        let (what, offset, reason) = malformed_parts(read("cut", &data.slice(..184)));
        assert_eq!((what.as_str(), offset), ("block 0 header", 144));
        assert!(
            reason.contains("truncated at byte 184: field `previous_hash`"),
            "{reason}"
        );
        let (_, offset, reason) = malformed_parts(read("cut", &data.slice(..234)));
        assert_eq!(offset, 144);
        assert!(
            reason.contains("truncated at byte 224: field `data`"),
            "{reason}"
        );

        // Block 2's header ends before its timestamp: blocks 0 and 1 are kept.
        let art = read("cut", &data.slice(..386)).unwrap();
        assert_eq!(art.blocks.len(), 2);
        let finding = art
            .findings
            .iter()
            .find(|f| f.kind == "trailing_bytes")
            .unwrap();
        assert!(
            finding
                .message
                .contains("truncated at byte 386: field `timestamp`"),
            "{}",
            finding.message
        );
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
