//! The Python SDK's signed single file, "secure format" 2.1 (`maif/core/secure_format.py`).
//!
//! Layout, pre-images and traps: `docs/legacy-inputs.md` §3 and `shared/docs/python-sdk-format.md`.
//! The SDK's own verifier trusts the block SIGNED flag and never looks at the file signature,
//! provenance, index or footer (a keyless forgery passes it), so everything is checked here and
//! nothing is gated on a flag. The structure is walked, every length bounded by the bytes that
//! remain, before anything is hashed: a truncated or hostile file fails fast and allocates nothing
//! it does not back with bytes. Hashes cover the stored bytes; JSON is only re-serialised for the
//! one pre-image the file does not store (the provenance entry hash).

use std::ops::Range;

use base64::Engine as _;
use bytes::Bytes;
use ed25519_dalek::{Signature, VerifyingKey};
use serde_json::{Map, Value, json};

use crate::error::MigrateError;
use crate::model::{
    self, BlockStatus, Body, BodyChecks, Check, LegacyArtifact, LegacyBlock, Severity, SourceKind,
};
use crate::pyjson::PyJson;

const FILE_HEADER: usize = 444;
const BLOCK_HEADER: usize = 372;
const INDEX_RECORD: usize = 24;
const FOOTER: usize = 48;
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
    data.len() >= 8 && data[..4] == *b"MAIF" && data[4..8] == [0, 2, 0, 1]
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
        let start = hex::encode(data.get(..8).unwrap_or(data));
        let reason = format!("not a Python SDK 2.1 file (starts {start}, not 4d41494600020001)");
        return Err(MigrateError::Unrecognized {
            source_name: source.to_owned(),
            reason,
        });
    }
    let layout = walk(source, data)?;
    let d: &[u8] = data;
    let header = Header::parse(d);
    let mut art = LegacyArtifact::new(SourceKind::PythonSdk, source);
    art.created_us = Some(header.created);
    art.artifact_id = Some(header.file_id);
    let mut sections = vec![
        ("sdk_file_header", 0..FILE_HEADER),
        ("sdk_provenance", layout.provenance.clone()),
        ("sdk_security", layout.security.clone()),
        ("sdk_block_index", layout.index.clone()),
        ("sdk_footer", layout.footer.clone()),
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
        .map(|(n, r)| (n.to_owned(), data.slice(r)))
        .collect();

    // The security section supplies the key, so it is read before any signature. A pinned
    // key is what proves authorship, so signatures are verified under it when there is one.
    let security = Security::parse(section_body(d, &layout.security));
    let chosen = match expected_key {
        Some(k) => Some((k, "pinned")),
        None => security.public_key.map(|k| (k, "embedded")),
    };
    let key: Key = match chosen {
        Some((k, whose)) => VerifyingKey::from_bytes(&k)
            .map_err(|_| format!("the {whose} public key is not a valid Ed25519 key")),
        None => Err("the security section names no usable public key; pass --public-key".into()),
    };
    let did = String::from_utf8_lossy(header.did_bytes()).into_owned();
    art.agent_id = (security.text("signer_id").map(str::to_owned))
        .or_else(|| did.strip_prefix("did:maif:").map(str::to_owned));
    art.file_level = file_level(&header, &layout, d, &security, &did);
    header_findings(&mut art, &header, &security);

    read_blocks(&mut art, data, &layout, &key);

    let c = &mut art.checks;
    let flags = header.flags;
    c.push(Check::expect("header_flags", flags == FILE_FLAGS, || {
        format!("header flags are 0x{flags:x}; the SDK always writes 0x7")
    }));
    c.push(reserved_zero(d, &layout));
    c.push(signature_check(
        "file_signature",
        &key,
        &d[184..440],
        &[&d[..184]],
    ));
    let leaves: Vec<[u8; 32]> = layout.blocks.iter().map(|b| b.content_hash).collect();
    c.push(hash_check(
        "merkle_root",
        header.merkle_root,
        merkle_root(&leaves),
    ));
    c.push(section_offsets(&header, &layout, d.len()));
    c.push(block_count(&header, &layout, d.len()));
    for (i, raw) in layout.blocks.iter().enumerate() {
        c.push(index_record(
            d,
            layout.index.start + i * INDEX_RECORD,
            i,
            raw,
        ));
    }
    let f = layout.footer.start;
    let magic: [u8; 4] = take(d, f);
    c.push(Check::expect("footer_magic", &magic == b"FIAM", || {
        format!("the footer starts {} instead of FIAM", hex::encode(magic))
    }));
    let length = be64(d, f + 4);
    c.push(Check::expect(
        "footer_length",
        length == d.len() as u64,
        || format!("the footer says {length} bytes; the file has {}", d.len()),
    ));
    c.push(hash_check(
        "footer_hash",
        take(d, f + 12),
        model::sha256(&d[..f]),
    ));
    c.push(security.check.clone());
    c.push(match (expected_key, security.public_key) {
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
    let provenance = section_body(d, &layout.provenance);
    provenance_checks(c, provenance, &header, &layout.blocks, &key);
    Ok(art)
}

/// Where every part of the file is, according to the structural walk.
struct Layout {
    blocks: Vec<RawBlock>,
    provenance: Range<usize>,
    security: Range<usize>,
    index: Range<usize>,
    footer: Range<usize>,
    trailing: Range<usize>,
}

struct RawBlock {
    offset: usize,
    size: u32,
    block_type: [u8; 4],
    flags: u32,
    block_id: [u8; 16],
    /// As stored: the chain, Merkle root and provenance all use the stored value.
    content_hash: [u8; 32],
    header: Range<usize>,
    payload: Range<usize>,
    metadata: Range<usize>,
}

/// Walks blocks and sections from byte 444, as the SDK reads them. Only breakage that leaves
/// nothing to walk is an error; disagreement with the header's offsets is a check.
fn walk(source: &str, d: &[u8]) -> crate::Result<Layout> {
    let bad = |what: &str, offset: usize, why: String| {
        MigrateError::malformed(source, what, offset as u64, why)
    };
    if d.len() < FILE_HEADER + FOOTER {
        let why = format!("{} bytes; an SDK 2.1 file has at least 492", d.len());
        return Err(bad("file header", 0, why));
    }
    // Every section must leave room for the footer.
    let limit = d.len() - FOOTER;
    let count = be32(d, 124);
    let mut blocks = Vec::new();
    let mut pos = FILE_HEADER;
    for i in 0..count {
        let (what, room) = (format!("block {i}"), limit - pos);
        if room < BLOCK_HEADER {
            let why = format!("{count} blocks declared, {room} bytes remain before the footer");
            return Err(bad(&what, pos, why));
        }
        let (size, meta_len) = (be32(d, pos) as usize, be32(d, pos + 360) as usize);
        if size > room {
            let why = format!("size field {size} runs past the footer ({room} bytes remain)");
            return Err(bad(&what, pos, why));
        }
        // L = size - 372 - M: the SDK never checks it and reads negative lengths.
        let Some(payload_len) = size
            .checked_sub(BLOCK_HEADER)
            .and_then(|r| r.checked_sub(meta_len))
        else {
            let why = format!("size {size} < 372 + metadata_size {meta_len}: negative payload");
            return Err(bad(&what, pos, why));
        };
        let (payload, end) = (pos + BLOCK_HEADER, pos + size);
        blocks.push(RawBlock {
            offset: pos,
            size: be32(d, pos),
            block_type: take(d, pos + 4),
            flags: be32(d, pos + 8),
            block_id: take(d, pos + 24),
            content_hash: take(d, pos + 72),
            header: pos..payload,
            payload: payload..payload + payload_len,
            metadata: payload + payload_len..end,
        });
        pos = end;
    }
    let prefixed = |what: &str, at: usize| {
        let (room, len) = (limit.saturating_sub(at), be32(d, at) as usize);
        if room < 4 || len > room - 4 {
            return Err(bad(
                what,
                at,
                format!("needs 4 + {len} bytes, {room} remain before the footer"),
            ));
        }
        Ok(at..at + 4 + len)
    };
    let provenance = prefixed("provenance section", pos)?;
    let security = prefixed("security section", provenance.end)?;
    let index_len = (count as usize)
        .checked_mul(INDEX_RECORD)
        .filter(|n| *n <= limit - security.end);
    let Some(index_len) = index_len else {
        let why = format!("{count} records of 24 bytes run past the footer");
        return Err(bad("block index", security.end, why));
    };
    let index = security.end..security.end + index_len;
    let footer = index.end..index.end + FOOTER;
    let trailing = footer.end..d.len();
    Ok(Layout {
        blocks,
        provenance,
        security,
        index,
        footer,
        trailing,
    })
}

fn section_body<'a>(d: &'a [u8], section: &Range<usize>) -> &'a [u8] {
    d.get(section.start.saturating_add(4)..section.end)
        .unwrap_or_default()
}

fn take<const N: usize>(d: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = d.get(at..).and_then(|rest| rest.get(..N)) {
        out.copy_from_slice(src);
    }
    out
}

fn be32(d: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(take(d, at))
}

fn be64(d: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(take(d, at))
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

struct Header {
    version: (u16, u16),
    flags: u32,
    created: u64,
    modified: u64,
    file_id: [u8; 16],
    creator_id: [u8; 16],
    did: [u8; 64],
    block_count: u32,
    provenance_offset: u64,
    security_offset: u64,
    index_offset: u64,
    merkle_root: [u8; 32],
}

impl Header {
    fn parse(d: &[u8]) -> Self {
        Header {
            version: (
                u16::from_be_bytes(take(d, 4)),
                u16::from_be_bytes(take(d, 6)),
            ),
            flags: be32(d, 8),
            created: be64(d, 12),
            modified: be64(d, 20),
            file_id: take(d, 28),
            creator_id: take(d, 44),
            did: take(d, 60),
            block_count: be32(d, 124),
            provenance_offset: be64(d, 128),
            security_offset: be64(d, 136),
            index_offset: be64(d, 144),
            merkle_root: take(d, 152),
        }
    }

    /// The DID without its NUL padding; it may end inside a UTF-8 character (cut by bytes).
    fn did_bytes(&self) -> &[u8] {
        let end = self.did.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
        &self.did[..end]
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
            Err(e) => {
                let (check, value, public_key) =
                    (Check::fail("security_json", e.to_string()), None, None);
                return Security {
                    check,
                    value,
                    public_key,
                };
            }
        };
        let string = |name: &str| value.get(name).and_then(PyJson::as_str);
        let public_key = string("public_key").and_then(|s| {
            let mut key = [0u8; 32];
            hex::decode_to_slice(s, &mut key).ok().map(|()| key)
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
        if public_key.is_none_or(|k| VerifyingKey::from_bytes(&k).is_err()) {
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
        let member = self.value.as_ref().and_then(|v| v.get(name));
        member
            .and_then(PyJson::to_exact_value)
            .unwrap_or(Value::Null)
    }
}

fn file_level(
    h: &Header,
    layout: &Layout,
    d: &[u8],
    sec: &Security,
    did: &str,
) -> Map<String, Value> {
    let f = layout.footer.start;
    object(json!({
        "format": "python-sdk-2.1",
        "version": format!("{}.{}", h.version.0, h.version.1),
        "flags": h.flags,
        "created": h.created,
        "modified": h.modified,
        "file_id": hex::encode(h.file_id),
        "creator_id": hex::encode(h.creator_id),
        "agent_did": did,
        "agent_did_hex": hex::encode(h.did),
        "block_count": h.block_count,
        "provenance_offset": h.provenance_offset,
        "security_offset": h.security_offset,
        "index_offset": h.index_offset,
        "footer_offset": f,
        "file_length": d.len(),
        "merkle_root": hex::encode(h.merkle_root),
        "file_signature": hex::encode(&d[192..256]),
        "footer_checksum": hex::encode(take::<32>(d, f + 12)),
        "signer_id": sec.exact("signer_id"),
        "signer_did": sec.exact("signer_did"),
        "public_key": sec.exact("public_key"),
        "signed_at": sec.exact("signed_at"),
    }))
}

fn header_findings(art: &mut LegacyArtifact, header: &Header, security: &Security) {
    if header.flags != FILE_FLAGS {
        let why = format!("header flags 0x{:x}; the SDK writes 0x7", header.flags);
        art.finding(Severity::Warning, "header_flags", at(8), why);
    }
    if std::str::from_utf8(header.did_bytes()).is_err() {
        let why = "the 64-byte header DID ends inside a UTF-8 character (the SDK cuts by bytes); \
                   agent_did_hex keeps it raw, the security section has it whole";
        art.finding(Severity::Info, "did_not_utf8", at(60), why);
    }
    if let Some(signer) = security.text("signer_id") {
        let mut expected = format!("did:maif:{signer}").into_bytes();
        expected.resize(64, 0);
        if expected != header.did {
            let why = format!("the header DID is not did:maif:{signer} (the signer_id)");
            art.finding(Severity::Warning, "did_mismatch", at(60), why);
        }
    }
}

fn read_blocks(art: &mut LegacyArtifact, data: &Bytes, layout: &Layout, key: &Key) {
    let d: &[u8] = data;
    let mut chain = [0u8; 32];
    for (i, raw) in layout.blocks.iter().enumerate() {
        let (hdr, payload, meta) = (
            &d[raw.header.clone()],
            &d[raw.payload.clone()],
            &d[raw.metadata.clone()],
        );
        let (block_type, flags, block_id) = (raw.block_type, raw.flags, raw.block_id);
        let (previous, stored): ([u8; 32], [u8; 32]) = (take(hdr, 40), raw.content_hash);
        let parsed = PyJson::parse(meta);

        // `{}` is left out of the content hash but stays in the signed bytes.
        let digest = model::sha256(payload);
        let content_hash = match &parsed {
            Ok(value) if value.is_empty_object() => digest,
            _ => model::sha256_parts(&[&digest[..], meta]),
        };
        let masked = (flags & !STATUS_MASK).to_be_bytes();
        let signed: [&[u8]; 6] = [
            &hdr[..8],
            &masked,
            &hdr[12..104],
            &hdr[360..364],
            payload,
            meta,
        ];
        // The chain links stored content hashes, whatever the payloads hash to.
        let chain_expected = std::mem::replace(&mut chain, stored);
        let checks = vec![
            hash_check("sdk_content_hash", stored, content_hash),
            signature_check("sdk_signature", key, &hdr[104..360], &signed),
            hash_check("sdk_chain_link", previous, chain_expected),
            Check::expect("block_flags", flags == BLOCK_FLAGS, || {
                format!("block flags 0x{flags:x}; the SDK always writes 0x3")
            }),
            match &parsed {
                Ok(PyJson::Object(_)) => Check::pass("metadata_json"),
                Ok(_) => Check::fail("metadata_json", "the metadata is not a JSON object"),
                Err(e) => Check::fail("metadata_json", e.to_string()),
            },
        ];

        let legacy_id = hex::encode(block_id);
        let subject = format!("block {i} ({legacy_id})");
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
            "header_hex": hex::encode(hdr),
            "size_field": raw.size,
            "flags": flags,
            "version": be32(hdr, 12),
            "metadata_size": meta.len(),
            "content_hash": hex::encode(stored),
            "previous_hash": hex::encode(previous),
            "signature": hex::encode(&hdr[112..176]),
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
            timestamp_us: be64(hdr, 16),
            status: BlockStatus::Live,
            evidence,
            user_metadata,
            body: Body::Inline(data.slice(raw.payload.clone())),
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
    let (s, e) = (hex::encode(stored), hex::encode(expected));
    Check::expect(name, stored == expected, || {
        format!("stored {s} but expected {e}")
    })
}

/// Verifies a 256-byte field `"ED25519:" ‖ sig[64] ‖ 184 zero bytes` over `message`.
fn signature_check(name: impl Into<String>, key: &Key, field: &[u8], message: &[&[u8]]) -> Check {
    if !field.starts_with(b"ED25519:") {
        return Check::fail(name, "the signature field does not start with \"ED25519:\"");
    }
    verify(name, key, &message.concat(), &take(field, 8))
}

fn verify(name: impl Into<String>, key: &Key, message: &[u8], signature: &[u8; 64]) -> Check {
    match key {
        Err(why) => Check::unverifiable(name, why.clone()),
        Ok(key) => {
            let ok = key.verify_strict(message, &Signature::from_bytes(signature));
            let k = hex::encode(key.as_bytes());
            Check::expect(name, ok.is_ok(), || {
                format!("does not verify under key {k}")
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
            .map(|p| model::sha256_parts(&[&p[0], &p[1]]))
            .collect();
    }
    level.first().copied().unwrap_or([0; 32])
}

/// Reserved bytes and signature padding are covered by no signature, only by the unkeyed
/// footer checksum, so they are checked on their own.
fn reserved_zero(d: &[u8], layout: &Layout) -> Check {
    let mut regions = vec![("file signature padding".to_owned(), 256..440)];
    regions.push(("file header reserved".to_owned(), 440..444));
    for (i, raw) in layout.blocks.iter().enumerate() {
        let o = raw.offset;
        regions.push((format!("block {i} signature padding"), o + 176..o + 360));
        regions.push((format!("block {i} reserved"), o + 364..o + 372));
    }
    regions.push((
        "footer reserved".to_owned(),
        layout.footer.start + 44..layout.footer.end,
    ));
    let dirty = regions
        .into_iter()
        .filter(|(_, r)| d.get(r.clone()).is_none_or(|b| b.iter().any(|x| *x != 0)))
        .map(|(name, r)| format!("{name} (bytes {}..{})", r.start, r.end));
    verdict("reserved_zero", dirty.collect())
}

fn section_offsets(h: &Header, layout: &Layout, len: usize) -> Check {
    let mut problems = Vec::new();
    let (prov, sec, index) = (&layout.provenance, &layout.security, &layout.index);
    for (name, stored, walked) in [
        ("provenance", h.provenance_offset, prov.start),
        ("security", h.security_offset, sec.start),
        ("index", h.index_offset, index.start),
    ] {
        if stored != walked as u64 {
            problems.push(format!("{name}_offset is {stored}, the walk says {walked}"));
        }
    }
    let end = layout.footer.end;
    if end != len {
        problems.push(format!("the footer ends at {end}, the file at {len}"));
    }
    verdict("section_offsets", problems)
}

/// Whether the header's block_count fills exactly the regions its own offsets bound.
fn block_count(h: &Header, layout: &Layout, len: usize) -> Check {
    let n = u64::from(h.block_count);
    let walked_end = layout.provenance.start as u64;
    let index_len = ((len - FOOTER) as u64).checked_sub(h.index_offset);
    let ok = walked_end == h.provenance_offset && index_len == Some(n * INDEX_RECORD as u64);
    Check::expect("block_count", ok, || {
        format!(
            "{n} blocks end at {walked_end} (provenance_offset {}); index_offset {} leaves {index_len:?} \
             bytes before the footer for {n} records",
            h.provenance_offset, h.index_offset
        )
    })
}

fn index_record(d: &[u8], at: usize, i: usize, raw: &RawBlock) -> Check {
    let stored = [
        be64(d, at),
        be64(d, at + 8),
        be32(d, at + 16).into(),
        be32(d, at + 20).into(),
    ];
    let block_type = u32::from_be_bytes(raw.block_type).into();
    let walked = [
        raw.offset as u64,
        raw.size.into(),
        block_type,
        raw.flags.into(),
    ];
    Check::expect(format!("block_index[{i}]"), stored == walked, || {
        format!("(offset, size, type, flags) are {stored:?} in the index, {walked:?} in the block")
    })
}

fn provenance_checks(c: &mut Vec<Check>, text: &[u8], h: &Header, blocks: &[RawBlock], key: &Key) {
    let parsed = PyJson::parse(text);
    let entries: &[PyJson] = match &parsed {
        Ok(PyJson::Array(items)) => items,
        _ => &[],
    };
    c.push(match &parsed {
        Err(e) => Check::fail("provenance_json", e.to_string()),
        Ok(PyJson::Array(_)) => {
            let mut problems = Vec::new();
            for (i, entry) in entries.iter().enumerate() {
                for name in ENTRY_MEMBERS.split_whitespace() {
                    let ok = entry.get(name).is_some_and(|v| match name {
                        "timestamp" | "chain_position" => v.as_u64().is_some(),
                        "metadata" => matches!(v, PyJson::Object(_)),
                        _ => v.as_str().is_some(),
                    });
                    if !ok {
                        problems.push(format!("entry {i}: {name:?} is missing or mistyped"));
                    }
                }
            }
            verdict("provenance_json", problems)
        }
        Ok(_) => Check::fail("provenance_json", "not a JSON array"),
    });
    let n = blocks.len();
    let count = entries.len();
    c.push(Check::expect("provenance_count", count == n + 2, || {
        format!("{count} entries for {n} blocks; the SDK writes n + 2")
    }));
    let mut previous_entry_hash = "";
    for (i, entry) in entries.iter().enumerate() {
        let text = |name: &str| entry.get(name).and_then(PyJson::as_str);
        let stored = text("entry_hash");

        // Python's json.dumps(sort_keys=True) of the hashed members: not stored as bytes.
        let hashed = ENTRY_MEMBERS
            .split_whitespace()
            .filter(|m| !matches!(*m, "entry_hash" | "signature"));
        let members: Option<Vec<(String, PyJson)>> = hashed
            .map(|m| entry.get(m).map(|v| (m.to_owned(), v.clone())))
            .collect();
        let name = format!("provenance[{i}].entry_hash");
        c.push(match (members, stored) {
            (Some(members), Some(stored)) => {
                let actual = model::sha256_hex(PyJson::Object(members).dumps_sorted().as_bytes());
                Check::expect(name, actual == stored, || {
                    format!("stored {stored} but computed {actual}")
                })
            }
            _ => Check::fail(name, "the entry lacks entry_hash or a hashed member"),
        });

        // Signed over the 64 hex characters, not the 32-byte digest.
        let name = format!("provenance[{i}].signature");
        let mut signature = [0u8; 64];
        let decoded =
            text("signature").is_some_and(|s| hex::decode_to_slice(s, &mut signature).is_ok());
        c.push(match stored {
            Some(hash) if decoded => verify(name, key, hash.as_bytes(), &signature),
            _ => Check::fail(name, "no entry_hash, or no 128-hex-digit signature"),
        });

        let position = entry.get("chain_position").and_then(PyJson::as_u64);
        let link = text("previous_entry_hash");
        let linked = link == Some(previous_entry_hash) && position == Some(i as u64);
        let want = previous_entry_hash;
        c.push(Check::expect(
            format!("provenance[{i}].link"),
            linked,
            || format!("previous_entry_hash {link:?} (want {want:?}), chain_position {position:?}"),
        ));
        previous_entry_hash = stored.unwrap_or_default();
        let problems = entry_semantics(entry, i, entries.len(), h, blocks);
        c.push(verdict(format!("provenance[{i}].semantics"), problems));
    }
}

/// The genesis / add / finalize rules; returns what is wrong with the entry.
fn entry_semantics(
    entry: &PyJson,
    i: usize,
    n: usize,
    h: &Header,
    blocks: &[RawBlock],
) -> Vec<String> {
    let text = |name: &str| entry.get(name).and_then(PyJson::as_str);
    let member = |name: &str, value: PyJson| (name.to_owned(), value);
    let string = |s: &str| PyJson::String(s.to_owned());
    let number = |n: usize| PyJson::Number(n.to_string());
    let (action, block_hash, metadata) = if i == 0 {
        let agent = text("agent_id").unwrap_or_default();
        let seed = format!("genesis:{agent}:{}", h.created);
        let metadata = vec![
            member("file_id", string(&hex::encode(h.file_id))),
            member("creator_id", string(&hex::encode(h.creator_id))),
            member("format_version", string("2.1")),
            member("key_algorithm", string("Ed25519")),
        ];
        let hash = model::sha256_hex(seed.as_bytes());
        ("genesis".to_owned(), hash, metadata)
    } else if i + 1 == n {
        let metadata = vec![member("block_count", number(blocks.len()))];
        ("finalize".to_owned(), hex::encode(h.merkle_root), metadata)
    } else {
        let Some(block) = blocks.get(i - 1) else {
            return vec![format!("an add entry with no block {} to describe", i - 1)];
        };
        let metadata = vec![
            member("block_id", string(&hex::encode(block.block_id))),
            member("size", number(block.payload.len())),
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
    let created = h.created;
    if i == 0 && entry.get("timestamp").and_then(PyJson::as_u64) != Some(created) {
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
