//! The Python SDK's signed single file, "secure format" 2.1 (`maif/core/secure_format.py`).
//!
//! Layout, pre-images and traps: `docs/legacy-inputs.md` §3 and `shared/docs/python-sdk-format.md`.
//! The SDK's own verifier trusts the block SIGNED flag and never looks at the file signature,
//! provenance, index or footer (a keyless forgery passes it), so everything is checked here and
//! nothing is gated on a flag. The structure is walked, every length bounded by the bytes that
//! remain, before anything is hashed: a truncated or hostile file fails fast and allocates nothing
//! it does not back with bytes. Every field is read through the bounded [`Reader`], so a short
//! file is an error naming the structure, field and offset, never a field of zeros. Hashes
//! cover the stored bytes; JSON is only re-serialised for the one pre-image the file does not
//! store (the provenance entry hash).

use std::ops::Range;

use base64::Engine as _;
use bytes::Bytes;
use ed25519_dalek::{Signature, VerifyingKey};
use maif_store::format::FormatError;
use serde_json::{Map, Value, json};

use crate::codec::{Reader, ReaderExt as _, malformed, prefix, reader_at};
use crate::error::MigrateError;
use crate::model::{
    self, BlockStatus, Body, BodyChecks, Check, LegacyArtifact, LegacyBlock, Severity, SourceKind,
};
use crate::pyjson::PyJson;

// Sizes and offsets of python-sdk-format.md §1-§4.
const MAGIC: &[u8; 4] = b"MAIF";
/// version_major 2, version_minor 1, as the two big-endian u16 at bytes 4..8.
const VERSION_2_1: [u8; 4] = [0, 2, 0, 1];
/// Magic and version: what detection looks at.
const DETECTION_LEN: usize = MAGIC.len() + VERSION_2_1.len();
const FILE_HEADER_LEN: usize = 444;
/// Where the header flags are (§2).
const FLAGS_AT: usize = 8;
/// Where the 64-byte agent DID is (§2).
const AGENT_DID_AT: usize = 60;
const AGENT_DID_LEN: usize = 64;
/// `"ED25519:" ‖ signature[64] ‖ 184 zero bytes` (§4).
const SIGNATURE_MARKER: &[u8; 8] = b"ED25519:";
const SIGNATURE_LEN: usize = 64;
const SIGNATURE_PADDING_LEN: usize = 184;
const FILE_RESERVED_LEN: usize = 4;
const BLOCK_HEADER_LEN: usize = 372;
const BLOCK_RESERVED_LEN: usize = 8;
const INDEX_RECORD_LEN: usize = 24;
const FOOTER_LEN: usize = 48;
const FOOTER_MAGIC: &[u8; 4] = b"FIAM";
const FOOTER_RESERVED_LEN: usize = 4;
/// SIGNED | FINALIZED | HAS_PROVENANCE: what every SDK file carries.
const FILE_FLAGS: u32 = 7;
/// SIGNED | IMMUTABLE.
const BLOCK_FLAGS: u32 = 3;
/// Status bits the SDK strips before signing: clearing SIGNED changes no signed byte.
const STATUS_MASK: u32 = 0x33;
/// Every entry's members in the SDK's order; `entry_hash` and `signature` are not hashed.
const ENTRY_MEMBERS: &str = "timestamp agent_id agent_did action block_hash entry_hash \
                             previous_entry_hash signature chain_position metadata";

type Key = Result<VerifyingKey, String>;

/// Whether `data` starts like an SDK v2.1 file (magic "MAIF" then 00 02 00 01).
pub fn looks_like(data: &[u8]) -> bool {
    let mut reader = Reader::new(data, "sdk file header");
    reader.magic(MAGIC, "magic").is_ok()
        && reader
            .array::<{ VERSION_2_1.len() }>("version")
            .is_ok_and(|version| version == VERSION_2_1)
}

/// Reads and fully verifies an SDK v2.1 file. `source` is the path text for messages.
/// `expected_key`: an Ed25519 public key the caller pins (32 bytes); when given, the
/// embedded key must equal it (a check named "public_key_pinned"), else that check is
/// Unverifiable("embedded key is anchored to nothing; pass --public-key").
pub fn read(
    source: &str,
    data: &Bytes,
    expected_key: Option<[u8; 32]>,
) -> crate::Result<LegacyArtifact> {
    if !looks_like(data) {
        let start = hex::encode(data.get(..DETECTION_LEN).unwrap_or(data));
        let reason = format!("not a Python SDK 2.1 file (starts {start}, not 4d41494600020001)");
        return Err(MigrateError::Unrecognized {
            source_name: source.to_owned(),
            reason,
        });
    }
    let layout = walk(source, data)?;
    let header = &layout.header;
    let mut art = LegacyArtifact::new(SourceKind::PythonSdk, source);
    art.created_us = Some(header.created);
    art.artifact_id = Some(header.file_id);
    let mut sections = vec![
        ("sdk_file_header", 0..FILE_HEADER_LEN),
        ("sdk_provenance", layout.provenance.range.clone()),
        ("sdk_security", layout.security.range.clone()),
        ("sdk_block_index", layout.index.clone()),
        ("sdk_footer", layout.footer.range.clone()),
    ];
    if !layout.trailing.is_empty() {
        sections.push(("sdk_trailing", layout.trailing.clone()));
        let why = format!(
            "{} bytes follow the footer (kept as sdk_trailing)",
            layout.trailing.len()
        );
        art.finding(
            Severity::Warning,
            "trailing_bytes",
            at(layout.trailing.start),
            why,
        );
    }
    art.sections = sections
        .into_iter()
        .map(|(name, range)| (name.to_owned(), data.slice(range)))
        .collect();

    // The security section supplies the key, so it is read before any signature. A pinned
    // key is what proves authorship, so signatures are verified under it when there is one.
    let security = Security::parse(layout.security.json);
    let chosen = match expected_key {
        Some(pinned) => Some((pinned, "pinned")),
        None => security.public_key.map(|embedded| (embedded, "embedded")),
    };
    let key: Key = match chosen {
        Some((bytes, whose)) => VerifyingKey::from_bytes(&bytes)
            .map_err(|_| format!("the {whose} public key is not a valid Ed25519 key")),
        None => Err("the security section names no usable public key; pass --public-key".into()),
    };
    let did = String::from_utf8_lossy(header.did_bytes()).into_owned();
    art.agent_id = (security.text("signer_id").map(str::to_owned))
        .or_else(|| did.strip_prefix("did:maif:").map(str::to_owned));
    art.file_level = file_level(&layout, data.len(), &security, &did);
    header_findings(&mut art, header, &security);

    read_blocks(&mut art, data, &layout, &key);

    let checks = &mut art.checks;
    let flags = header.flags;
    checks.push(Check::expect("header_flags", flags == FILE_FLAGS, || {
        format!("header flags are 0x{flags:x}; the SDK always writes 0x7")
    }));
    checks.push(reserved_zero(&layout));
    checks.push(signature_check(
        "file_signature",
        &key,
        &header.signature,
        &[header.signed],
    ));
    let leaves: Vec<[u8; 32]> = layout
        .blocks
        .iter()
        .map(|block| block.content_hash)
        .collect();
    checks.push(hash_check(
        "merkle_root",
        header.merkle_root,
        merkle_root(&leaves),
    ));
    checks.push(section_offsets(&layout, data.len()));
    checks.push(block_count(&layout, data.len()));
    for (position, (record, block)) in layout.index_records.iter().zip(&layout.blocks).enumerate() {
        checks.push(index_record(record, position, block));
    }
    let footer = &layout.footer;
    let magic = footer.magic;
    checks.push(Check::expect(
        "footer_magic",
        &magic == FOOTER_MAGIC,
        || format!("the footer starts {} instead of FIAM", hex::encode(magic)),
    ));
    let length = footer.file_length;
    checks.push(Check::expect(
        "footer_length",
        length == data.len() as u64,
        || {
            format!(
                "the footer says {length} bytes; the file has {}",
                data.len()
            )
        },
    ));
    checks.push(hash_check(
        "footer_hash",
        footer.checksum,
        model::sha256(footer.checksummed),
    ));
    checks.push(security.check.clone());
    checks.push(match (expected_key, security.public_key) {
        (None, _) => Check::unverifiable(
            "public_key_pinned",
            "embedded key is anchored to nothing; pass --public-key",
        ),
        (Some(pinned), Some(embedded)) => {
            Check::expect("public_key_pinned", pinned == embedded, || {
                format!(
                    "the file embeds {} but {} was pinned",
                    hex::encode(embedded),
                    hex::encode(pinned)
                )
            })
        }
        (Some(_), None) => Check::fail("public_key_pinned", "the file embeds no readable key"),
    });
    provenance_checks(checks, layout.provenance.json, header, &layout.blocks, &key);
    Ok(art)
}

/// Every part of the file, as the structural walk read it.
struct Layout<'a> {
    header: FileHeader<'a>,
    blocks: Vec<RawBlock<'a>>,
    provenance: Section<'a>,
    security: Section<'a>,
    index: Range<usize>,
    /// One per block, in file order (the walk bounds their number by the bytes present).
    index_records: Vec<IndexRecord>,
    footer: Footer<'a>,
    trailing: Range<usize>,
}

/// Bytes read as one field, with where they start in the file.
struct Span<'a> {
    at: usize,
    bytes: &'a [u8],
}

impl<'a> Span<'a> {
    fn read(reader: &mut Reader<'a>, len: usize, field: &'static str) -> Result<Self, FormatError> {
        let at = reader.offset();
        let bytes = reader.bytes(len, field)?;
        Ok(Span { at, bytes })
    }

    fn range(&self) -> Range<usize> {
        self.at..self.at + self.bytes.len()
    }
}

/// The 256-byte signature field of the file header and of every block header (§4).
struct SignatureField<'a> {
    marker: [u8; SIGNATURE_MARKER.len()],
    signature: [u8; SIGNATURE_LEN],
    padding: Span<'a>,
}

impl<'a> SignatureField<'a> {
    fn read(reader: &mut Reader<'a>) -> Result<Self, FormatError> {
        Ok(SignatureField {
            marker: reader.array("signature marker")?,
            signature: reader.array("signature")?,
            padding: Span::read(reader, SIGNATURE_PADDING_LEN, "signature padding")?,
        })
    }
}

/// The 444-byte file header (§2).
struct FileHeader<'a> {
    version: (u16, u16),
    flags: u32,
    created: u64,
    modified: u64,
    file_id: [u8; 16],
    creator_id: [u8; 16],
    did: [u8; AGENT_DID_LEN],
    block_count: u32,
    provenance_offset: u64,
    security_offset: u64,
    index_offset: u64,
    merkle_root: [u8; 32],
    /// Bytes 0..184, everything before the signature field: what the file signature covers.
    signed: &'a [u8],
    signature: SignatureField<'a>,
    reserved: Span<'a>,
}

impl<'a> FileHeader<'a> {
    /// Reads the header from a reader at byte 0.
    fn read(reader: &mut Reader<'a>) -> Result<Self, FormatError> {
        let start = reader.clone();
        reader.magic(MAGIC, "magic")?;
        let version = (
            reader.u16_be("version_major")?,
            reader.u16_be("version_minor")?,
        );
        let flags = reader.u32_be("flags")?;
        let created = reader.u64_be("created")?;
        let modified = reader.u64_be("modified")?;
        let file_id = reader.array("file_id")?;
        let creator_id = reader.array("creator_id")?;
        let did = reader.array("agent_did")?;
        let block_count = reader.u32_be("block_count")?;
        let provenance_offset = reader.u64_be("provenance_offset")?;
        let security_offset = reader.u64_be("security_offset")?;
        let index_offset = reader.u64_be("index_offset")?;
        let merkle_root = reader.array("merkle_root")?;
        let signed = reader.since(&start)?;
        Ok(FileHeader {
            version,
            flags,
            created,
            modified,
            file_id,
            creator_id,
            did,
            block_count,
            provenance_offset,
            security_offset,
            index_offset,
            merkle_root,
            signed,
            signature: SignatureField::read(reader)?,
            reserved: Span::read(reader, FILE_RESERVED_LEN, "reserved")?,
        })
    }

    /// The DID without its NUL padding; it may end inside a UTF-8 character (cut by bytes).
    fn did_bytes(&self) -> &[u8] {
        let end = self
            .did
            .iter()
            .rposition(|byte| *byte != 0)
            .map_or(0, |last| last + 1);
        self.did.get(..end).unwrap_or_default()
    }
}

/// One block: the 372-byte header (§3), its payload and its metadata JSON.
struct RawBlock<'a> {
    offset: usize,
    size: u32,
    block_type: [u8; 4],
    flags: u32,
    version: u32,
    timestamp: u64,
    block_id: [u8; 16],
    previous_hash: [u8; 32],
    /// As stored: the chain, Merkle root and provenance all use the stored value.
    content_hash: [u8; 32],
    signature: SignatureField<'a>,
    metadata_size: u32,
    reserved: Span<'a>,
    /// The whole 372-byte header, as stored.
    header: &'a [u8],
    payload: Span<'a>,
    metadata: &'a [u8],
}

impl<'a> RawBlock<'a> {
    /// Reads block `position` (of `count` declared) from a reader at its first byte; the
    /// reader ends where the footer starts, so no block can run into it.
    fn read(reader: &mut Reader<'a>, position: u32, count: u32) -> Result<Self, String> {
        let offset = reader.offset();
        let room = reader.remaining();
        let start = reader.clone();
        let fields = (|| {
            Ok::<_, FormatError>((
                reader.u32_be("size")?,
                reader.array("block_type")?,
                reader.u32_be("flags")?,
                reader.u32_be("version")?,
                reader.u64_be("timestamp")?,
                reader.array("block_id")?,
                reader.array("previous_hash")?,
                reader.array("content_hash")?,
                SignatureField::read(reader)?,
                reader.u32_be("metadata_size")?,
                Span::read(reader, BLOCK_RESERVED_LEN, "reserved")?,
            ))
        })();
        let declared = |error: FormatError| {
            format!(
                "{count} blocks declared, block {position} does not fit before the footer: {error}"
            )
        };
        let (
            size,
            block_type,
            flags,
            version,
            timestamp,
            block_id,
            previous_hash,
            content_hash,
            signature,
            metadata_size,
            reserved,
        ) = fields.map_err(declared)?;
        let header = reader.since(&start).map_err(|error| error.to_string())?;
        let (total, meta_len) = (size as usize, metadata_size as usize);
        // L = size - 372 - M: the SDK never checks it and reads negative lengths.
        let Some(payload_len) = total
            .checked_sub(BLOCK_HEADER_LEN)
            .and_then(|rest| rest.checked_sub(meta_len))
        else {
            return Err(format!(
                "size {total} < {BLOCK_HEADER_LEN} + metadata_size {meta_len}: negative payload"
            ));
        };
        let runs_past = |error: FormatError| {
            format!("size field {total} runs past the footer ({room} bytes remain): {error}")
        };
        let payload = Span::read(reader, payload_len, "payload").map_err(runs_past)?;
        let metadata = reader.bytes(meta_len, "metadata").map_err(runs_past)?;
        Ok(RawBlock {
            offset,
            size,
            block_type,
            flags,
            version,
            timestamp,
            block_id,
            previous_hash,
            content_hash,
            signature,
            metadata_size,
            reserved,
            header,
            payload,
            metadata,
        })
    }

    /// The 108 header bytes the block signature covers, rebuilt from the fields in order
    /// with the status bits of the flags cleared (§5.2).
    fn signed_header(&self) -> Vec<u8> {
        let masked = self.flags & !STATUS_MASK;
        [
            &self.size.to_be_bytes()[..],
            &self.block_type,
            &masked.to_be_bytes(),
            &self.version.to_be_bytes(),
            &self.timestamp.to_be_bytes(),
            &self.block_id,
            &self.previous_hash,
            &self.content_hash,
            &self.metadata_size.to_be_bytes(),
        ]
        .concat()
    }
}

/// The provenance or security section: a big-endian u32 length, then that much JSON.
struct Section<'a> {
    range: Range<usize>,
    json: &'a [u8],
}

impl<'a> Section<'a> {
    fn read(reader: &mut Reader<'a>) -> Result<Self, FormatError> {
        let start = reader.offset();
        let length = reader.u32_be("length")?;
        let json = reader.bytes(length as usize, "json")?;
        Ok(Section {
            range: start..reader.offset(),
            json,
        })
    }
}

/// One 24-byte block index record (§1): where the walk should have found the block.
struct IndexRecord {
    offset: u64,
    size: u64,
    block_type: u32,
    flags: u32,
}

impl IndexRecord {
    fn read(reader: &mut Reader<'_>) -> Result<Self, FormatError> {
        Ok(IndexRecord {
            offset: reader.u64_be("offset")?,
            size: reader.u64_be("size")?,
            block_type: reader.u32_be("block_type")?,
            flags: reader.u32_be("flags")?,
        })
    }
}

/// The 48-byte footer: "FIAM", the file length, SHA-256 of everything before it, reserved.
struct Footer<'a> {
    range: Range<usize>,
    magic: [u8; FOOTER_MAGIC.len()],
    file_length: u64,
    checksum: [u8; 32],
    reserved: Span<'a>,
    /// Every byte before the footer: what the checksum covers.
    checksummed: &'a [u8],
}

impl<'a> Footer<'a> {
    /// Reads the footer at `offset` of the whole file.
    fn read(data: &'a [u8], offset: usize) -> Result<(Self, Range<usize>), FormatError> {
        let mut reader = reader_at(data, offset, "sdk footer")?;
        let magic = reader.array("magic")?;
        let file_length = reader.u64_be("file_length")?;
        let checksum = reader.array("checksum")?;
        let reserved = Span::read(&mut reader, FOOTER_RESERVED_LEN, "reserved")?;
        let end = reader.offset();
        let trailing_len = reader.remaining();
        let trailing = Span::read(&mut reader, trailing_len, "trailing bytes")?;
        let footer = Footer {
            range: offset..end,
            magic,
            file_length,
            checksum,
            reserved,
            checksummed: prefix(data, offset, "sdk footer checksum input")?,
        };
        Ok((footer, trailing.range()))
    }
}

/// Walks blocks and sections from byte 444, as the SDK reads them. Only breakage that leaves
/// nothing to walk is an error; disagreement with the header's offsets is a check.
fn walk<'a>(source: &str, data: &'a [u8]) -> crate::Result<Layout<'a>> {
    let bad = |what: &str, offset: usize, why: String| {
        MigrateError::malformed(source, what, offset as u64, why)
    };
    if data.len() < FILE_HEADER_LEN + FOOTER_LEN {
        let why = format!(
            "{} bytes; an SDK 2.1 file has at least {}",
            data.len(),
            FILE_HEADER_LEN + FOOTER_LEN
        );
        return Err(bad("file header", 0, why));
    }
    // Every section must leave room for the footer, so they are read from what precedes it.
    let footer_limit = data.len() - FOOTER_LEN;
    let before_footer = prefix(data, footer_limit, "sdk file")
        .map_err(|error| malformed(source, "file", 0, &error))?;
    let mut reader = Reader::new(before_footer, "sdk file header");
    let header = FileHeader::read(&mut reader)
        .map_err(|error| malformed(source, "file header", 0, &error))?;
    let count = header.block_count;
    // Every block holds at least its 372-byte header, so the blocks pushed are backed by bytes.
    let mut blocks = Vec::new();
    let mut offset = reader.offset();
    for position in 0..count {
        let mut block_reader = reader_at(before_footer, offset, "sdk block")
            .map_err(|error| malformed(source, format!("block {position}"), offset, &error))?;
        let block = RawBlock::read(&mut block_reader, position, count)
            .map_err(|why| bad(&format!("block {position}"), offset, why))?;
        blocks.push(block);
        offset = block_reader.offset();
    }
    let section = |what: &str, structure: &'static str, offset: usize| {
        reader_at(before_footer, offset, structure)
            .and_then(|mut reader| Section::read(&mut reader))
            .map_err(|error| malformed(source, what, offset, &error))
    };
    let provenance = section("provenance section", "sdk provenance section", offset)?;
    let security = section(
        "security section",
        "sdk security section",
        provenance.range.end,
    )?;
    // One 24-byte record per block; `count` blocks were read, so the records are too.
    let index_start = security.range.end;
    let index_error = |error: FormatError| {
        let why =
            format!("{count} records of {INDEX_RECORD_LEN} bytes run past the footer: {error}");
        bad("block index", index_start, why)
    };
    let mut index_reader =
        reader_at(before_footer, index_start, "sdk block index").map_err(index_error)?;
    let mut index_records = Vec::with_capacity(blocks.len());
    for _ in 0..count {
        index_records.push(IndexRecord::read(&mut index_reader).map_err(index_error)?);
    }
    let index = index_start..index_reader.offset();
    let (footer, trailing) = Footer::read(data, index.end)
        .map_err(|error| malformed(source, "footer", index.end, &error))?;
    Ok(Layout {
        header,
        blocks,
        provenance,
        security,
        index,
        index_records,
        footer,
        trailing,
    })
}

fn at(offset: usize) -> String {
    format!("byte {offset}")
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// The security section, as far as it could be read.
struct Security {
    check: Check,
    value: Option<PyJson>,
    public_key: Option<[u8; 32]>,
}

impl Security {
    fn parse(text: &[u8]) -> Self {
        let value = match PyJson::parse(text) {
            Ok(value) => value,
            Err(error) => {
                let (check, value, public_key) =
                    (Check::fail("security_json", error.to_string()), None, None);
                return Security {
                    check,
                    value,
                    public_key,
                };
            }
        };
        let string = |name: &str| value.get(name).and_then(PyJson::as_str);
        let public_key = string("public_key").and_then(|text| {
            let mut key = [0u8; 32];
            hex::decode_to_slice(text, &mut key).ok().map(|()| key)
        });
        let mut problems = Vec::new();
        if !matches!(value, PyJson::Object(_)) {
            problems.push("not a JSON object".to_owned());
        }
        for name in ["signer_id", "signer_did"] {
            if string(name).is_none() {
                problems.push(format!("no string {name:?}"));
            }
        }
        if public_key.is_none_or(|key| VerifyingKey::from_bytes(&key).is_err()) {
            problems.push("\"public_key\" is not 64 hex digits of an Ed25519 key".to_owned());
        }
        for name in ["key_algorithm", "signature_algorithm"] {
            if string(name) != Some("Ed25519") {
                problems.push(format!("{name:?} is not \"Ed25519\""));
            }
        }
        if value.get("signed_at").and_then(PyJson::as_u64).is_none() {
            problems.push("\"signed_at\" is not an integer".to_owned());
        }
        let (check, value) = (verdict("security_json", problems), Some(value));
        Security {
            check,
            value,
            public_key,
        }
    }

    fn text(&self, name: &str) -> Option<&str> {
        self.value.as_ref()?.get(name)?.as_str()
    }

    fn exact(&self, name: &str) -> Value {
        let member = self.value.as_ref().and_then(|value| value.get(name));
        member
            .and_then(PyJson::to_exact_value)
            .unwrap_or(Value::Null)
    }
}

fn file_level(
    layout: &Layout,
    file_length: usize,
    security: &Security,
    did: &str,
) -> Map<String, Value> {
    let header = &layout.header;
    object(json!({
        "format": "python-sdk-2.1",
        "version": format!("{}.{}", header.version.0, header.version.1),
        "flags": header.flags,
        "created": header.created,
        "modified": header.modified,
        "file_id": hex::encode(header.file_id),
        "creator_id": hex::encode(header.creator_id),
        "agent_did": did,
        "agent_did_hex": hex::encode(header.did),
        "block_count": header.block_count,
        "provenance_offset": header.provenance_offset,
        "security_offset": header.security_offset,
        "index_offset": header.index_offset,
        "footer_offset": layout.footer.range.start,
        "file_length": file_length,
        "merkle_root": hex::encode(header.merkle_root),
        "file_signature": hex::encode(header.signature.signature),
        "footer_checksum": hex::encode(layout.footer.checksum),
        "signer_id": security.exact("signer_id"),
        "signer_did": security.exact("signer_did"),
        "public_key": security.exact("public_key"),
        "signed_at": security.exact("signed_at"),
    }))
}

fn header_findings(art: &mut LegacyArtifact, header: &FileHeader, security: &Security) {
    if header.flags != FILE_FLAGS {
        let why = format!("header flags 0x{:x}; the SDK writes 0x7", header.flags);
        art.finding(Severity::Warning, "header_flags", at(FLAGS_AT), why);
    }
    if std::str::from_utf8(header.did_bytes()).is_err() {
        let why = "the 64-byte header DID ends inside a UTF-8 character (the SDK cuts by bytes); \
                   agent_did_hex keeps it raw, the security section has it whole";
        art.finding(Severity::Info, "did_not_utf8", at(AGENT_DID_AT), why);
    }
    if let Some(signer) = security.text("signer_id") {
        let mut expected = format!("did:maif:{signer}").into_bytes();
        expected.resize(AGENT_DID_LEN, 0);
        if expected != header.did {
            let why = format!("the header DID is not did:maif:{signer} (the signer_id)");
            art.finding(Severity::Warning, "did_mismatch", at(AGENT_DID_AT), why);
        }
    }
}

fn read_blocks(art: &mut LegacyArtifact, data: &Bytes, layout: &Layout, key: &Key) {
    let mut chain = [0u8; 32];
    for (position, raw) in layout.blocks.iter().enumerate() {
        let (payload, meta) = (raw.payload.bytes, raw.metadata);
        let (block_type, flags, block_id) = (raw.block_type, raw.flags, raw.block_id);
        let (previous, stored) = (raw.previous_hash, raw.content_hash);
        let parsed = PyJson::parse(meta);

        // `{}` is left out of the content hash but stays in the signed bytes.
        let digest = model::sha256(payload);
        let content_hash = match &parsed {
            Ok(value) if value.is_empty_object() => digest,
            _ => model::sha256_parts(&[&digest[..], meta]),
        };
        let signed_header = raw.signed_header();
        let signed: [&[u8]; 3] = [&signed_header, payload, meta];
        // The chain links stored content hashes, whatever the payloads hash to.
        let chain_expected = std::mem::replace(&mut chain, stored);
        let checks = vec![
            hash_check("sdk_content_hash", stored, content_hash),
            signature_check("sdk_signature", key, &raw.signature, &signed),
            hash_check("sdk_chain_link", previous, chain_expected),
            Check::expect("block_flags", flags == BLOCK_FLAGS, || {
                format!("block flags 0x{flags:x}; the SDK always writes 0x3")
            }),
            match &parsed {
                Ok(PyJson::Object(_)) => Check::pass("metadata_json"),
                Ok(_) => Check::fail("metadata_json", "the metadata is not a JSON object"),
                Err(error) => Check::fail("metadata_json", error.to_string()),
            },
        ];

        let legacy_id = hex::encode(block_id);
        let subject = format!("block {position} ({legacy_id})");
        if flags != BLOCK_FLAGS {
            let why = format!("block flags 0x{flags:x}; its signature is verified regardless");
            art.finding(Severity::Warning, "block_flags", subject.clone(), why);
        }
        if content_hash != stored {
            let why = "payload or metadata differ from what was hashed and signed; migrated as \
                       stored (the SDK writes this when a caller mutates a metadata dict after \
                       adding the block)";
            art.finding(
                Severity::Error,
                "legacy_integrity_failed",
                subject.clone(),
                why,
            );
        }
        let block_type_code = model::canonical_type(&block_type);
        if block_type_code.0 == *b"LGCY" {
            let why = format!("block type 0x{} is not a FourCC", hex::encode(block_type));
            art.finding(Severity::Info, "unknown_block_type", subject, why);
        }

        let mut evidence = object(json!({
            "format": "python-sdk-2.1",
            "offset": raw.offset,
            "header_hex": hex::encode(raw.header),
            "size_field": raw.size,
            "flags": flags,
            "version": raw.version,
            "metadata_size": meta.len(),
            "content_hash": hex::encode(stored),
            "previous_hash": hex::encode(previous),
            "signature": hex::encode(raw.signature.signature),
        }));
        match std::str::from_utf8(meta) {
            Ok(text) => evidence.insert("metadata_json".into(), text.into()),
            Err(_) => {
                let b64 = base64::engine::general_purpose::STANDARD.encode(meta);
                evidence.insert("metadata_base64".into(), b64.into())
            }
        };
        // NaN, floats and big integers only keep their spelling in `metadata_json`.
        let mut user_metadata = Map::new();
        if let Ok(PyJson::Object(members)) = &parsed {
            for (name, value) in members {
                if let Some(value) = value.to_exact_value() {
                    user_metadata.insert(name.clone(), value);
                }
            }
        }
        art.blocks.push(LegacyBlock {
            legacy_id,
            block_id,
            legacy_type: model::type_text(&block_type),
            block_type: block_type_code,
            timestamp_us: raw.timestamp,
            status: BlockStatus::Live,
            evidence,
            user_metadata,
            body: Body::Inline(data.slice(raw.payload.range())),
            checks,
            body_checks: BodyChecks::default(),
        });
    }
}

/// Pass when nothing is wrong, else a failure listing what is.
fn verdict(name: impl Into<String>, problems: Vec<String>) -> Check {
    Check::expect(name, problems.is_empty(), || problems.join("; "))
}

fn hash_check(name: &str, stored: [u8; 32], expected: [u8; 32]) -> Check {
    let (stored_hex, expected_hex) = (hex::encode(stored), hex::encode(expected));
    Check::expect(name, stored == expected, || {
        format!("stored {stored_hex} but expected {expected_hex}")
    })
}

/// Verifies a 256-byte field `"ED25519:" ‖ sig[64] ‖ 184 zero bytes` over `message`.
fn signature_check(
    name: impl Into<String>,
    key: &Key,
    field: &SignatureField,
    message: &[&[u8]],
) -> Check {
    if field.marker != *SIGNATURE_MARKER {
        return Check::fail(name, "the signature field does not start with \"ED25519:\"");
    }
    verify(name, key, &message.concat(), &field.signature)
}

fn verify(name: impl Into<String>, key: &Key, message: &[u8], signature: &[u8; 64]) -> Check {
    match key {
        Err(why) => Check::unverifiable(name, why.clone()),
        Ok(key) => {
            let ok = key.verify_strict(message, &Signature::from_bytes(signature));
            let key_hex = hex::encode(key.as_bytes());
            Check::expect(name, ok.is_ok(), || {
                format!("does not verify under key {key_hex}")
            })
        }
    }
}

/// The SDK's tree: duplicate the last node of an odd level (not RFC 9162's promotion).
fn merkle_root(leaves: &[[u8; 32]]) -> [u8; 32] {
    let mut level = leaves.to_vec();
    while level.len() > 1 {
        if let Some(&last) = level.last()
            && level.len() % 2 == 1
        {
            level.push(last);
        }
        level = level
            .chunks_exact(2)
            .map(|pair| model::sha256_parts(&[&pair[0], &pair[1]]))
            .collect();
    }
    level.first().copied().unwrap_or([0; 32])
}

/// Reserved bytes and signature padding are covered by no signature, only by the unkeyed
/// footer checksum, so they are checked on their own.
fn reserved_zero(layout: &Layout) -> Check {
    let header = &layout.header;
    let mut regions = vec![
        (
            "file signature padding".to_owned(),
            &header.signature.padding,
        ),
        ("file header reserved".to_owned(), &header.reserved),
    ];
    for (position, raw) in layout.blocks.iter().enumerate() {
        regions.push((
            format!("block {position} signature padding"),
            &raw.signature.padding,
        ));
        regions.push((format!("block {position} reserved"), &raw.reserved));
    }
    regions.push(("footer reserved".to_owned(), &layout.footer.reserved));
    let dirty = regions
        .into_iter()
        .filter(|(_, span)| span.bytes.iter().any(|byte| *byte != 0))
        .map(|(name, span)| {
            let range = span.range();
            format!("{name} (bytes {}..{})", range.start, range.end)
        });
    verdict("reserved_zero", dirty.collect())
}

fn section_offsets(layout: &Layout, file_length: usize) -> Check {
    let header = &layout.header;
    let mut problems = Vec::new();
    for (name, stored, walked) in [
        (
            "provenance",
            header.provenance_offset,
            layout.provenance.range.start,
        ),
        (
            "security",
            header.security_offset,
            layout.security.range.start,
        ),
        ("index", header.index_offset, layout.index.start),
    ] {
        if stored != walked as u64 {
            problems.push(format!("{name}_offset is {stored}, the walk says {walked}"));
        }
    }
    let end = layout.footer.range.end;
    if end != file_length {
        problems.push(format!(
            "the footer ends at {end}, the file at {file_length}"
        ));
    }
    verdict("section_offsets", problems)
}

/// Whether the header's block_count fills exactly the regions its own offsets bound.
fn block_count(layout: &Layout, file_length: usize) -> Check {
    let header = &layout.header;
    let count = u64::from(header.block_count);
    let walked_end = layout.provenance.range.start as u64;
    let index_len = ((file_length - FOOTER_LEN) as u64).checked_sub(header.index_offset);
    let ok = walked_end == header.provenance_offset
        && index_len == Some(count * INDEX_RECORD_LEN as u64);
    Check::expect("block_count", ok, || {
        format!(
            "{count} blocks end at {walked_end} (provenance_offset {}); index_offset {} leaves {index_len:?} \
             bytes before the footer for {count} records",
            header.provenance_offset, header.index_offset
        )
    })
}

fn index_record(record: &IndexRecord, position: usize, raw: &RawBlock) -> Check {
    let stored = [
        record.offset,
        record.size,
        record.block_type.into(),
        record.flags.into(),
    ];
    let block_type = u32::from_be_bytes(raw.block_type).into();
    let walked = [
        raw.offset as u64,
        raw.size.into(),
        block_type,
        raw.flags.into(),
    ];
    Check::expect(format!("block_index[{position}]"), stored == walked, || {
        format!("(offset, size, type, flags) are {stored:?} in the index, {walked:?} in the block")
    })
}

fn provenance_checks(
    checks: &mut Vec<Check>,
    text: &[u8],
    header: &FileHeader,
    blocks: &[RawBlock],
    key: &Key,
) {
    let parsed = PyJson::parse(text);
    let entries: &[PyJson] = match &parsed {
        Ok(PyJson::Array(items)) => items,
        _ => &[],
    };
    checks.push(match &parsed {
        Err(error) => Check::fail("provenance_json", error.to_string()),
        Ok(PyJson::Array(_)) => {
            let mut problems = Vec::new();
            for (position, entry) in entries.iter().enumerate() {
                for name in ENTRY_MEMBERS.split_whitespace() {
                    let ok = entry.get(name).is_some_and(|value| match name {
                        "timestamp" | "chain_position" => value.as_u64().is_some(),
                        "metadata" => matches!(value, PyJson::Object(_)),
                        _ => value.as_str().is_some(),
                    });
                    if !ok {
                        problems.push(format!("entry {position}: {name:?} is missing or mistyped"));
                    }
                }
            }
            verdict("provenance_json", problems)
        }
        Ok(_) => Check::fail("provenance_json", "not a JSON array"),
    });
    let block_total = blocks.len();
    let count = entries.len();
    checks.push(Check::expect(
        "provenance_count",
        count == block_total + 2,
        || format!("{count} entries for {block_total} blocks; the SDK writes n + 2"),
    ));
    let mut previous_entry_hash = "";
    for (position, entry) in entries.iter().enumerate() {
        let text = |name: &str| entry.get(name).and_then(PyJson::as_str);
        let stored = text("entry_hash");

        // Python's json.dumps(sort_keys=True) of the hashed members: not stored as bytes.
        let hashed = ENTRY_MEMBERS
            .split_whitespace()
            .filter(|member| !matches!(*member, "entry_hash" | "signature"));
        let members: Option<Vec<(String, PyJson)>> = hashed
            .map(|member| {
                entry
                    .get(member)
                    .map(|value| (member.to_owned(), value.clone()))
            })
            .collect();
        let name = format!("provenance[{position}].entry_hash");
        checks.push(match (members, stored) {
            (Some(members), Some(stored)) => {
                let actual = model::sha256_hex(PyJson::Object(members).dumps_sorted().as_bytes());
                Check::expect(name, actual == stored, || {
                    format!("stored {stored} but computed {actual}")
                })
            }
            _ => Check::fail(name, "the entry lacks entry_hash or a hashed member"),
        });

        // Signed over the 64 hex characters, not the 32-byte digest.
        let name = format!("provenance[{position}].signature");
        let mut signature = [0u8; 64];
        let decoded = text("signature")
            .is_some_and(|hex_text| hex::decode_to_slice(hex_text, &mut signature).is_ok());
        checks.push(match stored {
            Some(hash) if decoded => verify(name, key, hash.as_bytes(), &signature),
            _ => Check::fail(name, "no entry_hash, or no 128-hex-digit signature"),
        });

        let chain_position = entry.get("chain_position").and_then(PyJson::as_u64);
        let link = text("previous_entry_hash");
        let linked = link == Some(previous_entry_hash) && chain_position == Some(position as u64);
        let want = previous_entry_hash;
        checks.push(Check::expect(
            format!("provenance[{position}].link"),
            linked,
            || {
                format!(
                    "previous_entry_hash {link:?} (want {want:?}), chain_position {chain_position:?}"
                )
            },
        ));
        previous_entry_hash = stored.unwrap_or_default();
        let problems = entry_semantics(entry, position, entries.len(), header, blocks);
        checks.push(verdict(
            format!("provenance[{position}].semantics"),
            problems,
        ));
    }
}

/// The genesis / add / finalize rules; returns what is wrong with the entry.
fn entry_semantics(
    entry: &PyJson,
    position: usize,
    entry_count: usize,
    header: &FileHeader,
    blocks: &[RawBlock],
) -> Vec<String> {
    let text = |name: &str| entry.get(name).and_then(PyJson::as_str);
    let member = |name: &str, value: PyJson| (name.to_owned(), value);
    let string = |text: &str| PyJson::String(text.to_owned());
    let number = |value: usize| PyJson::Number(value.to_string());
    let (action, block_hash, metadata) = if position == 0 {
        let agent = text("agent_id").unwrap_or_default();
        let seed = format!("genesis:{agent}:{}", header.created);
        let metadata = vec![
            member("file_id", string(&hex::encode(header.file_id))),
            member("creator_id", string(&hex::encode(header.creator_id))),
            member("format_version", string("2.1")),
            member("key_algorithm", string("Ed25519")),
        ];
        let hash = model::sha256_hex(seed.as_bytes());
        ("genesis".to_owned(), hash, metadata)
    } else if position + 1 == entry_count {
        let metadata = vec![member("block_count", number(blocks.len()))];
        (
            "finalize".to_owned(),
            hex::encode(header.merkle_root),
            metadata,
        )
    } else {
        let Some(block) = blocks.get(position - 1) else {
            return vec![format!(
                "an add entry with no block {} to describe",
                position - 1
            )];
        };
        let metadata = vec![
            member("block_id", string(&hex::encode(block.block_id))),
            member("size", number(block.payload.bytes.len())),
        ];
        let action = format!("add_{}_block", block_kind(&block.block_type));
        (action, hex::encode(block.content_hash), metadata)
    };
    let mut problems = Vec::new();
    if text("action") != Some(action.as_str()) {
        problems.push(format!("action {:?}, expected {action:?}", text("action")));
    }
    let stored = text("block_hash");
    if stored != Some(block_hash.as_str()) {
        problems.push(format!("block_hash {stored:?}, expected {block_hash}"));
    }
    // Key order in the section is not significant (entry_hash sorts), so compare sorted.
    let expected = PyJson::Object(metadata).dumps_sorted();
    let actual = entry.get("metadata").map(PyJson::dumps_sorted);
    if actual.as_deref() != Some(expected.as_str()) {
        problems.push(format!("metadata {actual:?}, expected {expected}"));
    }
    let created = header.created;
    if position == 0 && entry.get("timestamp").and_then(PyJson::as_u64) != Some(created) {
        problems.push(format!("timestamp is not the header's created {created}"));
    }
    problems
}

/// The provenance action's name for a block type (`add_<kind>_block`).
fn block_kind(block_type: &[u8; 4]) -> &'static str {
    match block_type {
        b"TEXT" => "text",
        b"EMBD" => "embeddings",
        b"IMAG" => "image",
        b"AUDI" => "audio",
        b"VIDE" => "video",
        b"KNOW" => "knowledge",
        b"BINA" => "binary",
        b"META" => "metadata",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::model::Outcome;

    const DIR: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures/python-sdk/"
    );

    const FIXTURES: [&str; 12] = [
        "sample_text",
        "sample_audio",
        "sample_video",
        "sample_image",
        "sample_embeddings",
        "sample_multimodal",
        "sdk_text_3blocks",
        "sdk_multimodal",
        "edge/edge_empty_0blocks",
        "edge/edge_nan_metadata",
        "edge/edge_did_truncated",
        "edge/sdkbug_mutated_metadata",
    ];

    fn load(name: &str) -> Bytes {
        Bytes::from(std::fs::read(format!("{DIR}{name}.maif")).unwrap())
    }

    fn companion(name: &str, kind: &str) -> Option<Value> {
        let text = std::fs::read(format!("{DIR}{name}.{kind}.json")).ok()?;
        Some(serde_json::from_slice(&text).unwrap())
    }

    fn pinned_key(name: &str) -> Option<[u8; 32]> {
        let inputs = companion(name, "inputs")?;
        let mut key = [0u8; 32];
        hex::decode_to_slice(inputs["public_key_hex"].as_str().unwrap(), &mut key).unwrap();
        Some(key)
    }

    /// Every check, block checks prefixed `block[i].`.
    fn outcomes(art: &LegacyArtifact) -> Vec<(String, Outcome)> {
        let mut all: Vec<(String, Outcome)> = art
            .checks
            .iter()
            .map(|c| (c.check.clone(), c.outcome.clone()))
            .collect();
        for (i, block) in art.blocks.iter().enumerate() {
            for c in &block.checks {
                all.push((format!("block[{i}].{}", c.check), c.outcome.clone()));
            }
        }
        all
    }

    fn named(art: &LegacyArtifact, keep: fn(&Outcome) -> bool) -> BTreeSet<String> {
        outcomes(art)
            .into_iter()
            .filter(|(_, o)| keep(o))
            .map(|(n, _)| n)
            .collect()
    }

    fn failing(art: &LegacyArtifact) -> BTreeSet<String> {
        named(art, |o| matches!(o, Outcome::Fail(_)))
    }

    fn unverifiable(art: &LegacyArtifact) -> BTreeSet<String> {
        named(art, |o| matches!(o, Outcome::Unverifiable(_)))
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn every_fixture_matches_its_expected_json() {
        for name in FIXTURES {
            let data = load(name);
            let expected = companion(name, "expected").unwrap();
            let key = pinned_key(name);
            let art = read(name, &data, key).unwrap();
            let blocks = expected["blocks"].as_array().unwrap();
            assert_eq!(art.blocks.len(), blocks.len(), "{name}");
            for (block, want) in art.blocks.iter().zip(blocks) {
                let Body::Inline(payload) = &block.body else {
                    panic!("{name}: body not inline")
                };
                assert_eq!(
                    block.legacy_id,
                    want["block_id"].as_str().unwrap(),
                    "{name}"
                );
                assert_eq!(block.legacy_type, want["type"].as_str().unwrap(), "{name}");
                assert_eq!(
                    block.block_type.0,
                    want["type"].as_str().unwrap().as_bytes()
                );
                assert_eq!(payload.len() as u64, want["data_len"].as_u64().unwrap());
                assert_eq!(
                    model::sha256_hex(payload),
                    want["data_sha256"].as_str().unwrap(),
                    "{name}"
                );
                assert_eq!(block.timestamp_us, want["timestamp"].as_u64().unwrap());
                assert_eq!(
                    block.evidence["metadata_json"].as_str().unwrap(),
                    want["metadata_raw"].as_str().unwrap()
                );
                assert_eq!(
                    block.evidence["content_hash"].as_str().unwrap(),
                    want["content_hash"].as_str().unwrap()
                );
                assert_eq!(block.status, BlockStatus::Live);
                assert!(block.body_checks.declared_sha256.is_none());
            }
            for field in [
                "created",
                "modified",
                "block_count",
                "provenance_offset",
                "security_offset",
                "index_offset",
                "footer_offset",
                "file_id",
                "creator_id",
                "merkle_root",
                "public_key",
                "flags",
                "version",
            ] {
                assert_eq!(art.file_level[field], expected[field], "{name}: {field}");
            }
            assert_eq!(art.created_us, expected["created"].as_u64());
            assert_eq!(
                art.agent_id.as_deref(),
                expected["security"]["signer_id"].as_str()
            );
            let sizes: Vec<(&str, usize)> = art
                .sections
                .iter()
                .map(|(n, b)| (n.as_str(), b.len()))
                .collect();
            assert_eq!(sizes[0], ("sdk_file_header", 444));
            assert_eq!(sizes[4], ("sdk_footer", 48));
            assert_eq!(sizes.len(), 5, "{name}");

            let fails = failing(&art);
            if name.ends_with("sdkbug_mutated_metadata") {
                assert_eq!(
                    fails,
                    set(&["block[0].sdk_content_hash", "block[0].sdk_signature"])
                );
            } else {
                assert!(fails.is_empty(), "{name}: {fails:?}");
            }
            let unknown = unverifiable(&art);
            if key.is_none() {
                assert!(name.starts_with("sample_"));
                assert_eq!(unknown, set(&["public_key_pinned"]), "{name}");
            } else {
                assert!(unknown.is_empty(), "{name}: {unknown:?}");
            }
            let all = outcomes(&art);
            eprintln!(
                "{name}: {} checks, {} pass, {} fail, {} unverifiable, {} findings",
                all.len(),
                all.len() - fails.len() - unknown.len(),
                fails.len(),
                unknown.len(),
                art.findings.len()
            );
        }
    }

    #[test]
    fn edge_cases_keep_what_they_should() {
        let art = read("e", &load("edge/edge_empty_0blocks"), None).unwrap();
        assert!(art.blocks.is_empty());
        assert_eq!(art.file_level["merkle_root"], hex::encode([0u8; 32]));
        assert_eq!(art.sections[3].1.len(), 0);

        let art = read("d", &load("edge/edge_did_truncated"), None).unwrap();
        assert_eq!(art.agent_id.as_deref(), Some("ü".repeat(40).as_str()));
        let did_hex = art.file_level["agent_did_hex"].as_str().unwrap();
        assert!(did_hex.ends_with("c3"), "{did_hex}");
        assert!(art.findings.iter().any(|f| f.kind == "did_not_utf8"));

        let art = read("n", &load("edge/edge_nan_metadata"), None).unwrap();
        assert!(art.blocks[0].user_metadata.is_empty());

        let art = read("t", &load("sdk_text_3blocks"), None).unwrap();
        let meta = &art.blocks[2].user_metadata;
        assert_eq!(meta.get("a_first"), Some(&Value::Null));
        assert_eq!(meta.get("z_last"), Some(&Value::Bool(true)));
        assert!(!meta.contains_key("score") && !meta.contains_key("nested"));
        assert_eq!(art.blocks[1].user_metadata["line_count"], 2);

        let art = read("m", &load("sdk_multimodal"), None).unwrap();
        // 20-digit integers fit u64 and are kept exactly.
        assert_eq!(
            art.blocks[1].user_metadata["big_int"],
            Value::from(12345678901234567890u64)
        );
    }

    #[test]
    fn a_different_pinned_key_fails_every_signature() {
        let art = read("x", &load("sdk_text_3blocks"), Some([7u8; 32])).unwrap();
        let fails = failing(&art);
        assert!(fails.contains("public_key_pinned"), "{fails:?}");
        // [7; 32] may not even be a valid point; either way nothing verifies.
        assert!(
            !outcomes(&art)
                .iter()
                .any(|(n, o)| n.contains("signature") && *o == Outcome::Pass)
        );
        let good = pinned_key("edge/edge_nan_metadata");
        let art = read("x", &load("sdk_text_3blocks"), good).unwrap();
        let fails = failing(&art);
        assert!(fails.contains("public_key_pinned"));
        assert!(fails.contains("file_signature") && fails.contains("block[2].sdk_signature"));
        assert!(fails.contains("provenance[4].signature"));
    }

    /// §3.7: the SDK calls this file valid; it must not pass here.
    #[test]
    fn keyless_forgery_is_caught() {
        let mut d = load("sample_text").to_vec();
        let (hdr, payload_len, meta_len) = (444, 463, 51);
        let payload = hdr + 372;
        d[payload..payload + 4].copy_from_slice(b"That");
        let meta = d[payload + payload_len..payload + payload_len + meta_len].to_vec();
        let digest = model::sha256(&d[payload..payload + payload_len]);
        let content = model::sha256(&[&digest[..], &meta].concat());
        d[hdr + 72..hdr + 104].copy_from_slice(&content);
        d[hdr + 11] &= !1;
        d[152..184].copy_from_slice(&content);
        let art = read("forged", &Bytes::from(d), None).unwrap();
        assert_eq!(
            failing(&art),
            set(&[
                "block[0].sdk_signature",
                "block[0].block_flags",
                "file_signature",
                "footer_hash",
                "block_index[0]",
                "provenance[1].semantics",
                "provenance[2].semantics",
            ])
        );
        assert!(art.findings.iter().any(|f| f.kind == "block_flags"));
    }

    #[test]
    fn truncation_never_panics() {
        let data = load("sample_text");
        for len in 0..data.len() {
            assert!(read("t", &data.slice(..len), None).is_err(), "{len}");
        }
        for name in FIXTURES {
            let data = load(name);
            let step = (data.len() / 97).max(1);
            let lens = (0..data.len())
                .step_by(step)
                .chain(data.len() - 60..data.len());
            for len in lens {
                let _ = read(name, &data.slice(..len), None);
            }
        }
    }

    #[test]
    fn hostile_lengths_are_errors_or_checks() {
        let base = load("sdk_text_3blocks").to_vec();
        // (offset, bytes, whether the walk must refuse the file)
        let patches: [(usize, [u8; 4], bool); 9] = [
            (444, [0xff; 4], true),          // block 0 size past EOF
            (444, [0, 0, 1, 0x70], true),    // size < 372 + M: negative payload
            (444, [0; 4], true),             // size 0
            (444 + 360, [0xff; 4], true),    // metadata_size huge
            (444 + 360, [0, 0, 1, 0], true), // metadata_size > size - 372
            (124, [0xff; 4], true),          // block_count huge
            (124, [0, 0, 0, 2], true),       // block_count short: sections misread
            (1798, [0xff; 4], true),         // provenance length huge
            (4943, [0, 0, 0, 0], false),     // security length zero: gap before the footer
        ];
        for (at, bytes, refused) in patches {
            let mut d = base.clone();
            d[at..at + 4].copy_from_slice(&bytes);
            match read("h", &Bytes::from(d), None) {
                Err(MigrateError::Malformed { .. }) => assert!(refused, "patch at {at}"),
                Err(e) => panic!("patch at {at}: {e}"),
                Ok(art) => {
                    assert!(!refused, "patch at {at} was read");
                    let fails = failing(&art);
                    assert!(fails.contains("security_json") && fails.contains("section_offsets"));
                    assert!(art.sections.iter().any(|(n, _)| n == "sdk_trailing"));
                }
            }
        }
        // Flipping any byte must never pass everything, and must never panic.
        let data = load("sample_text").to_vec();
        for at in 0..data.len() {
            let mut d = data.clone();
            d[at] ^= 0x01;
            if let Ok(art) = read("f", &Bytes::from(d), None) {
                assert!(!failing(&art).is_empty(), "flip at {at} passed");
            }
        }
    }

    /// A file cut short at a field boundary is refused with an error naming the structure, the
    /// field and its offset: no field is ever read as zeros. The walk takes the last 48 bytes
    /// as the footer, so `kept` is what precedes them.
    #[test]
    fn a_cut_at_a_field_boundary_names_that_field() {
        let data = load("sample_text");
        // (bytes kept before the footer, structure named, field, the field's offset)
        let cases = [
            (444 + 40, "block 0", "previous_hash", 484),
            (444 + 360, "block 0", "metadata_size", 804),
            (444 + 372 + 100, "block 0", "payload", 816),
            (1330 + 2, "provenance section", "length", 1330),
            (3202 + 4 + 10, "security section", "json", 3206),
            (3459 + 8, "block index", "size", 3467),
        ];
        for (kept, named, field, offset) in cases {
            let cut = data.slice(..kept + FOOTER_LEN);
            match read("cut", &cut, None) {
                Err(MigrateError::Malformed { what, reason, .. }) => {
                    assert_eq!(what, named, "{reason}");
                    assert!(reason.contains(&format!("field `{field}`")), "{reason}");
                    let at = format!("truncated at byte {offset}");
                    assert!(reason.contains(&at), "{reason}");
                }
                Err(other) => panic!("cut at {kept}: {other}"),
                Ok(_) => panic!("cut at {kept} was read"),
            }
        }
    }

    #[test]
    fn detection_and_merkle() {
        assert!(looks_like(b"MAIF\x00\x02\x00\x01"));
        assert!(!looks_like(b"MAIF\x00\x01\x00\x00"));
        assert!(!looks_like(b"MAIF\x00\x02"));
        assert!(matches!(
            read("u", &Bytes::from_static(b"MAIF\x00\x01\x00\x00rest"), None),
            Err(MigrateError::Unrecognized { .. })
        ));
        let (a, b, c) = ([1u8; 32], [2u8; 32], [3u8; 32]);
        let h = |l: [u8; 32], r: [u8; 32]| model::sha256(&[l, r].concat());
        assert_eq!(merkle_root(&[]), [0u8; 32]);
        assert_eq!(merkle_root(&[a]), a);
        assert_eq!(merkle_root(&[a, b, c]), h(h(a, b), h(c, c)));
    }
}
