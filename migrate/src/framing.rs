//! The canonical typed framing (FORMAT.md 4.8) of migrated TEXT, EMBD and IMAG blocks.
//!
//! Legacy writers stored these payloads raw and described them, if at all, in metadata.
//! Canonical readers expect the framing inside the data, so each typed block is framed from
//! the legacy evidence alone, and the framed data must decode back to exactly the legacy
//! bytes (what `maif cat` prints). Where the evidence does not support a framing (text that
//! is not UTF-8, an embedding whose element type, byte order or shape is unknown or
//! contradicts its size) nothing is guessed: the block keeps its exact bytes under
//! [`UNFRAMED_TYPE`], `legacy.type` keeps the legacy type, `legacy.framing` and a report
//! warning say why. docs/MIGRATION.md ("Typed payloads") states the rules.

use bytes::Bytes;
use maif_store::format::payload::{
    EmbeddingDtype, EmbeddingPayload, ImagePayload, TEXT_ENCODING_UTF8, TextPayload, content_of,
};
use maif_store::format::{Codec, FourCC};
use serde::Serialize;
use serde_json::Value;

use crate::model::{LegacyBlock, SourceKind};
use crate::pyjson::PyJson;

/// Where a typed legacy payload that cannot be framed honestly goes: the standard raw
/// binary type, which every reader returns unframed.
pub const UNFRAMED_TYPE: FourCC = FourCC::BINA;

/// Metadata names that declare each fact. Only names legacy writers or their callers are
/// known to use (docs/legacy-inputs.md, the shared fixtures) or that say it unmistakably.
const LANGUAGE_KEYS: &[&str] = &["language"];
const TEXT_ENCODING_KEYS: &[&str] = &["encoding"];
const DIMENSION_KEYS: &[&str] = &["dimensions", "dimension", "dims"];
const COUNT_KEYS: &[&str] = &["count"];
const DTYPE_KEYS: &[&str] = &["dtype", "data_type"];
const BYTE_ORDER_KEYS: &[&str] = &["byte_order", "byteorder", "endianness", "endian"];

/// How a migrated block's data was framed; stored as `legacy.framing` and in the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "framing", rename_all = "snake_case")]
pub enum Framing {
    /// TEXT framing, encoding 0 (UTF-8).
    Text {
        /// The ISO 639-1 code carried in the framing; `None` is "unspecified".
        language: Option<String>,
    },
    /// EMBD framing.
    Embedding {
        dimension: u32,
        count: u32,
        dtype: &'static str,
        /// Which evidence fixed the shape.
        shape_from: &'static str,
        /// Which evidence fixed the element type and byte order.
        dtype_from: String,
    },
    /// IMAG framing, with format and size read from the image bytes.
    Image {
        format: &'static str,
        width: u32,
        height: u32,
    },
    /// A typed legacy payload the evidence cannot frame: kept verbatim as `stored_as`.
    Unframed {
        withheld_type: String,
        stored_as: String,
        reason: String,
    },
}

impl Framing {
    pub fn is_unframed(&self) -> bool {
        matches!(self, Framing::Unframed { .. })
    }
}

/// A block's data as it is written: the type, the (possibly framed) bytes, and how.
#[derive(Debug, Clone)]
pub struct Framed {
    pub block_type: FourCC,
    pub data: Bytes,
    /// `None` for types that carry no framing.
    pub framing: Option<Framing>,
}

/// Frames `payload` (the exact legacy bytes) for the canonical type of `block`.
pub fn frame(kind: SourceKind, block: &LegacyBlock, payload: &Bytes) -> Framed {
    let block_type = block.block_type;
    let attempt = match block_type {
        FourCC::TEXT => frame_text(block, payload),
        FourCC::EMBD => frame_embedding(kind, block, payload),
        FourCC::IMAG => Ok(frame_image(payload)),
        _ => {
            return Framed {
                block_type,
                data: payload.clone(),
                framing: None,
            };
        }
    };
    // Whatever the rules above decided, only a framing that reads back as exactly the
    // legacy bytes is written: anything else would change what readers see.
    let checked = attempt.and_then(|(data, framing)| match content_of(block_type, &data) {
        Ok(content) if content == payload.as_ref() => Ok((data, framing)),
        Ok(_) => Err("the framed data does not read back as the legacy bytes".to_owned()),
        Err(e) => Err(format!("the framed data does not decode: {e}")),
    });
    match checked {
        Ok((data, framing)) => Framed {
            block_type,
            data: Bytes::from(data),
            framing: Some(framing),
        },
        Err(reason) => Framed {
            block_type: UNFRAMED_TYPE,
            data: payload.clone(),
            framing: Some(Framing::Unframed {
                withheld_type: block_type.to_string(),
                stored_as: UNFRAMED_TYPE.to_string(),
                reason,
            }),
        },
    }
}

type Attempt = Result<(Vec<u8>, Framing), String>;

fn frame_text(block: &LegacyBlock, payload: &[u8]) -> Attempt {
    let declared = Declared::of(block);
    if let Some((name, value)) = declared.one(TEXT_ENCODING_KEYS)? {
        let declared_encoding = value
            .as_text()
            .map(|text| text.to_ascii_lowercase().replace('_', "-"));
        match declared_encoding.as_deref() {
            Some("utf-8" | "utf8") => {}
            Some("ascii" | "us-ascii") if payload.is_ascii() => {}
            Some("ascii" | "us-ascii") => {
                return Err(format!(
                    "the metadata declares {name} = {}, but the text has non-ASCII bytes",
                    value.describe()
                ));
            }
            _ => {
                return Err(format!(
                    "the metadata declares {name} = {}, not UTF-8",
                    value.describe()
                ));
            }
        }
    }
    if let Err(e) = std::str::from_utf8(payload) {
        return Err(format!(
            "the text is not valid UTF-8 (invalid bytes at offset {})",
            e.valid_up_to()
        ));
    }
    // A language that is not a two-letter code (`mul`, `en-US`) stays in the metadata only.
    let language = declared
        .one(LANGUAGE_KEYS)
        .ok()
        .flatten()
        .and_then(|(_, value)| value.as_text())
        .and_then(|code| <[u8; 2]>::try_from(code.as_bytes()).ok())
        .filter(|code| code.iter().all(u8::is_ascii_alphabetic));
    let prefix = TextPayload {
        encoding: TEXT_ENCODING_UTF8,
        language,
        text: Vec::new(),
    };
    let data = with_prefix(prefix.to_bytes(), payload);
    let language = language.map(|code| String::from_utf8_lossy(&code).into_owned());
    Ok((data, Framing::Text { language }))
}

fn frame_image(payload: &[u8]) -> (Vec<u8>, Framing) {
    let sniffed = ImagePayload::sniff(payload.to_vec());
    let framing = Framing::Image {
        format: sniffed.format.name(),
        width: sniffed.width,
        height: sniffed.height,
    };
    (sniffed.to_bytes(), framing)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Element {
    Float32,
    Float16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ByteOrder {
    Little,
    Big,
}

/// What a source format itself fixes about embedding payloads when a block's metadata is
/// silent. Legacy writers stored whatever bytes the caller packed, so only the formats whose
/// documentation says how embeddings are packed contribute anything:
/// * the Python SDK's `add_embeddings_block` packs float32 in native order, which is
///   little-endian on every platform the SDK runs on (python-sdk-format.md §6, §11.7);
/// * the S3 layouts' embeddings are little-endian (docs/legacy-inputs.md §5, item 36);
///   their element type is whatever the metadata declares.
///
/// binary_format's one embedding fixture is big-endian by its caller's choice, so that
/// format (and block_storage and the unified local format) fixes nothing.
fn format_convention(kind: SourceKind) -> (Option<Element>, Option<ByteOrder>) {
    match kind {
        SourceKind::PythonSdk => (Some(Element::Float32), Some(ByteOrder::Little)),
        SourceKind::S3LayoutA | SourceKind::S3LayoutB => (None, Some(ByteOrder::Little)),
        SourceKind::BinaryFormat | SourceKind::BlockStorage | SourceKind::UnifiedLocal => {
            (None, None)
        }
    }
}

fn frame_embedding(kind: SourceKind, block: &LegacyBlock, payload: &[u8]) -> Attempt {
    let declared = Declared::of(block);
    // Every missing or contradicting fact is named, not only the first.
    let (dtype, shape) = match (embedding_dtype(kind, &declared), declared_shape(&declared)) {
        (Ok(dtype), Ok(shape)) => (dtype, shape),
        (dtype, shape) => {
            let mut problems = Vec::new();
            if let Err(problem) = dtype {
                problems.push(problem);
            }
            match shape {
                Err(problem) => problems.push(problem),
                Ok((None, None)) => problems.push(SHAPE_UNKNOWN.to_owned()),
                Ok(_) => {}
            }
            return Err(problems.join("; "));
        }
    };
    let (dtype, element_len, dtype_from) = dtype;
    let (dimension, count, shape_from) =
        embedding_shape(payload.len() as u64, element_len, shape.0, shape.1)?;
    let prefix = EmbeddingPayload {
        dimension,
        count,
        dtype,
        values: Vec::new(),
    };
    let data = with_prefix(prefix.to_bytes(), payload);
    let framing = Framing::Embedding {
        dimension,
        count,
        dtype: dtype_name(dtype),
        shape_from,
        dtype_from,
    };
    Ok((data, framing))
}

const SHAPE_UNKNOWN: &str = "shape unknown: the metadata declares neither dimensions nor a \
                             count, and the payload length alone does not decide them";

/// The canonical dtype, its element length, and which evidence fixed it.
fn embedding_dtype(
    kind: SourceKind,
    declared: &Declared,
) -> Result<(EmbeddingDtype, u64, String), String> {
    let (convention_element, convention_order) = format_convention(kind);
    let (declared_element, order_in_dtype) = match declared.one(DTYPE_KEYS)? {
        Some((name, value)) => {
            let (element, order) = parse_dtype(name, value)?;
            (Some(element), order)
        }
        None => (None, None),
    };
    let order_key = match declared.one(BYTE_ORDER_KEYS)? {
        Some((name, value)) => Some(parse_byte_order(name, value)?),
        None => None,
    };
    let declared_order = match (order_in_dtype, order_key) {
        (Some(a), Some(b)) if a != b => {
            return Err("the metadata's dtype and byte order contradict each other".into());
        }
        (a, b) => a.or(b),
    };
    let format = kind.as_str();
    let (element, order) = match (
        declared_element.or(convention_element),
        declared_order.or(convention_order),
    ) {
        (Some(element), Some(order)) => (element, order),
        (element, order) => {
            let mut unknown = Vec::new();
            if element.is_none() {
                unknown.push(format!(
                    "element type unknown: the metadata declares no dtype, and {format} does \
                     not fix one"
                ));
            }
            if order.is_none() {
                unknown.push(format!(
                    "byte order unknown: the metadata declares none, and {format} stores \
                     whatever byte order its caller packed"
                ));
            }
            return Err(unknown.join("; "));
        }
    };
    let dtype_from = match (declared_element.is_some(), declared_order.is_some()) {
        (true, true) => "metadata".to_owned(),
        (true, false) => format!("metadata element type, {format} byte order"),
        (false, true) => format!("{format} element type, metadata byte order"),
        (false, false) => format!("{format} convention"),
    };
    match (element, order) {
        (Element::Float32, ByteOrder::Little) => Ok((EmbeddingDtype::Float32, 4, dtype_from)),
        (Element::Float32, ByteOrder::Big) => Ok((EmbeddingDtype::Float32BigEndian, 4, dtype_from)),
        (Element::Float16, ByteOrder::Little) => Ok((EmbeddingDtype::Float16, 2, dtype_from)),
        (Element::Float16, ByteOrder::Big) => {
            Err("big-endian float16 has no canonical EMBD dtype".into())
        }
    }
}

/// The dimension and count the metadata declares (either may be absent).
fn declared_shape(declared: &Declared) -> Result<(Option<u32>, Option<u32>), String> {
    let dimension = declared
        .one(DIMENSION_KEYS)?
        .map(|(name, value)| whole_number(name, value))
        .transpose()?;
    let count = declared
        .one(COUNT_KEYS)?
        .map(|(name, value)| whole_number(name, value))
        .transpose()?;
    Ok((dimension, count))
}

fn dtype_name(dtype: EmbeddingDtype) -> &'static str {
    match dtype {
        EmbeddingDtype::Float32 => "float32",
        EmbeddingDtype::Float16 => "float16",
        EmbeddingDtype::Float32BigEndian => "float32-big-endian",
    }
}

/// The (dimension, count) of `len` bytes of `element_len`-byte elements, from what the
/// metadata declares. One declared value fixes the other only when it divides the payload
/// exactly; with neither, the shape is unknown (any factorisation would be a guess).
fn embedding_shape(
    len: u64,
    element_len: u64,
    dimension: Option<u32>,
    count: Option<u32>,
) -> Result<(u32, u32, &'static str), String> {
    // `len` split into parts of `declared` elements each (vectors for a dimension, the
    // elements of each vector for a count): the number of parts.
    let parts = |declared: u32, what: &str| -> Result<u32, String> {
        let part = u64::from(declared) * element_len;
        if part == 0 {
            return Err(format!(
                "shape unknown: a declared {what} of 0 leaves the rest of the shape open"
            ));
        }
        if !len.is_multiple_of(part) {
            return Err(format!(
                "{len} bytes do not divide by the declared {what} {declared} \
                 ({element_len}-byte elements)"
            ));
        }
        u32::try_from(len / part).map_err(|_| format!("{len} bytes hold too many elements"))
    };
    match (dimension, count) {
        (Some(dimension), Some(count)) => {
            let needed = u64::from(dimension)
                .checked_mul(u64::from(count))
                .and_then(|n| n.checked_mul(element_len));
            if needed == Some(len) {
                Ok((dimension, count, "metadata"))
            } else {
                Err(format!(
                    "{len} bytes contradict the declared shape: {count} vectors x {dimension} \
                     elements x {element_len} bytes = {}",
                    needed.map_or("more than 2^64".to_owned(), |n| n.to_string())
                ))
            }
        }
        (Some(dimension), None) => Ok((
            dimension,
            parts(dimension, "dimension")?,
            "metadata dimension; count from the payload length",
        )),
        (None, Some(count)) => Ok((
            parts(count, "count")?,
            count,
            "metadata count; dimension from the payload length",
        )),
        (None, None) => Err(SHAPE_UNKNOWN.into()),
    }
}

fn parse_dtype(name: &str, value: &Spelling) -> Result<(Element, Option<ByteOrder>), String> {
    let unknown = || {
        format!(
            "the metadata declares {name} = {}, which no canonical EMBD dtype represents",
            value.describe()
        )
    };
    let text = value.as_text().ok_or_else(unknown)?.to_ascii_lowercase();
    Ok(match text.as_str() {
        "float32" | "f32" | "fp32" | "f4" | "=f4" => (Element::Float32, None),
        "<f4" => (Element::Float32, Some(ByteOrder::Little)),
        ">f4" => (Element::Float32, Some(ByteOrder::Big)),
        "float16" | "f16" | "fp16" | "half" | "f2" | "=f2" => (Element::Float16, None),
        "<f2" => (Element::Float16, Some(ByteOrder::Little)),
        ">f2" => (Element::Float16, Some(ByteOrder::Big)),
        _ => return Err(unknown()),
    })
}

fn parse_byte_order(name: &str, value: &Spelling) -> Result<ByteOrder, String> {
    let text = value.as_text().map(str::to_ascii_lowercase);
    match text.as_deref() {
        Some("little" | "le" | "little-endian" | "<") => Ok(ByteOrder::Little),
        Some("big" | "be" | "big-endian" | ">") => Ok(ByteOrder::Big),
        _ => Err(format!(
            "the metadata declares {name} = {}, which is not a byte order",
            value.describe()
        )),
    }
}

/// A declared count or dimension: decimal digits only, within u32.
fn whole_number(name: &str, value: &Spelling) -> Result<u32, String> {
    value
        .as_text()
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|t| t.parse::<u32>().ok())
        .ok_or_else(|| {
            format!(
                "the metadata declares {name} = {}, which is not a whole number below 2^32",
                value.describe()
            )
        })
}

fn with_prefix(mut prefix: Vec<u8>, payload: &[u8]) -> Vec<u8> {
    prefix.reserve_exact(payload.len());
    prefix.extend_from_slice(payload);
    prefix
}

/// One metadata value as the legacy source spelled it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Spelling {
    /// A string, or a number's token exactly as written (`384`, `384.0`, `1e3`).
    Text(String),
    /// Anything else, named for messages.
    Other(&'static str),
}

impl Spelling {
    fn as_text(&self) -> Option<&str> {
        match self {
            Spelling::Text(text) => Some(text),
            Spelling::Other(_) => None,
        }
    }

    fn describe(&self) -> String {
        match self {
            Spelling::Text(text) => format!("{text:?}"),
            Spelling::Other(kind) => (*kind).to_owned(),
        }
    }

    fn from_pyjson(value: &PyJson) -> Self {
        match value {
            PyJson::String(s) => Spelling::Text(s.clone()),
            PyJson::Number(token) => Spelling::Text(token.clone()),
            PyJson::Null => Spelling::Other("null"),
            PyJson::Bool(_) => Spelling::Other("a boolean"),
            PyJson::Array(_) => Spelling::Other("an array"),
            PyJson::Object(_) => Spelling::Other("an object"),
        }
    }

    fn from_json(value: &Value) -> Self {
        match value {
            Value::String(s) => Spelling::Text(s.clone()),
            Value::Number(n) => Spelling::Text(n.to_string()),
            Value::Null => Spelling::Other("null"),
            Value::Bool(_) => Spelling::Other("a boolean"),
            Value::Array(_) => Spelling::Other("an array"),
            Value::Object(_) => Spelling::Other("an object"),
        }
    }
}

/// The block's caller metadata, member by member, as the source spelled it.
struct Declared {
    members: Vec<(String, Spelling)>,
}

impl Declared {
    fn of(block: &LegacyBlock) -> Self {
        // The metadata JSON text, where a source keeps one (SDK, unified local), spells every
        // number exactly; the parsed user metadata drops values such as `384.0`.
        if let Some(Value::String(text)) = block.evidence.get("metadata_json")
            && let Ok(PyJson::Object(members)) = PyJson::parse(text.as_bytes())
        {
            return Self {
                members: members
                    .iter()
                    .map(|(k, v)| (k.clone(), Spelling::from_pyjson(v)))
                    .collect(),
            };
        }
        Self {
            members: block
                .user_metadata
                .iter()
                .map(|(k, v)| (k.clone(), Spelling::from_json(v)))
                .collect(),
        }
    }

    /// The value declared under any of `names`, if any; an error when they disagree.
    fn one(&self, names: &[&str]) -> Result<Option<(&str, &Spelling)>, String> {
        let mut found: Option<(&str, &Spelling)> = None;
        for (name, value) in &self.members {
            if !names.contains(&name.as_str()) {
                continue;
            }
            match found {
                Some((first, earlier)) if earlier != value => {
                    return Err(format!(
                        "the metadata contradicts itself: {first} = {} but {name} = {}",
                        earlier.describe(),
                        value.describe()
                    ));
                }
                Some(_) => {}
                None => found = Some((name.as_str(), value)),
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BlockStatus, Body, BodyChecks};
    use serde_json::{Map, json};

    fn block(block_type: &[u8; 4], user_metadata: Value) -> LegacyBlock {
        LegacyBlock {
            legacy_id: "b".into(),
            block_id: [7; 16],
            legacy_type: String::from_utf8_lossy(block_type).into_owned(),
            block_type: FourCC(*block_type),
            timestamp_us: 1,
            status: BlockStatus::Live,
            evidence: Map::new(),
            user_metadata: user_metadata.as_object().cloned().unwrap_or_default(),
            body: Body::Absent,
            checks: Vec::new(),
            body_checks: BodyChecks::default(),
        }
    }

    fn sdk_block(block_type: &[u8; 4], metadata_json: &str) -> LegacyBlock {
        let mut b = block(block_type, json!({}));
        b.evidence
            .insert("metadata_json".into(), metadata_json.into());
        b
    }

    fn floats_le(values: &[f32]) -> Bytes {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    fn unframed_reason(framed: &Framed) -> &str {
        match &framed.framing {
            Some(Framing::Unframed { reason, .. }) => reason,
            other => panic!("expected unframed, got {other:?}"),
        }
    }

    /// The framed data reads back as exactly `payload` under the written type.
    fn reads_back(framed: &Framed, payload: &[u8]) {
        assert_eq!(
            content_of(framed.block_type, &framed.data).expect("decodes"),
            payload
        );
    }

    #[test]
    fn text_is_framed_utf8_with_a_two_letter_language_only() {
        let payload = Bytes::from_static("Grüße, 東京".as_bytes());
        let framed = frame(
            SourceKind::S3LayoutA,
            &block(b"TEXT", json!({"language": "de"})),
            &payload,
        );
        assert_eq!(framed.block_type, FourCC::TEXT);
        assert_eq!(&framed.data[..3], b"\x00de");
        reads_back(&framed, &payload);
        for language in [json!("mul"), json!("en-US"), json!("e1"), json!(12)] {
            let framed = frame(
                SourceKind::S3LayoutA,
                &block(b"TEXT", json!({ "language": language })),
                &payload,
            );
            assert_eq!(&framed.data[..3], b"\x00\x00\x00", "{language}");
            assert_eq!(framed.framing, Some(Framing::Text { language: None }));
        }
    }

    #[test]
    fn text_that_looks_framed_keeps_every_byte() {
        // A raw legacy text whose first bytes happen to parse as a TEXT framing.
        let payload = Bytes::from_static(b"\x00en: starts like a framing");
        let framed = frame(
            SourceKind::BlockStorage,
            &block(b"TEXT", json!({})),
            &payload,
        );
        assert_eq!(framed.data.len(), payload.len() + 3);
        reads_back(&framed, &payload);
    }

    #[test]
    fn text_that_is_not_utf8_is_kept_verbatim_as_bina() {
        let payload = Bytes::from_static(b"caf\xe9 latin-1");
        let framed = frame(
            SourceKind::UnifiedLocal,
            &block(b"TEXT", json!({})),
            &payload,
        );
        assert_eq!(framed.block_type, FourCC::BINA);
        assert_eq!(framed.data, payload, "exact bytes, no framing");
        assert!(unframed_reason(&framed).contains("not valid UTF-8"));
        match &framed.framing {
            Some(Framing::Unframed {
                withheld_type,
                stored_as,
                ..
            }) => assert_eq!(
                (withheld_type.as_str(), stored_as.as_str()),
                ("TEXT", "BINA")
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn text_declared_in_another_encoding_is_not_framed_as_utf8() {
        let payload = Bytes::from_static(b"caf\xc3\xa9");
        let framed = frame(
            SourceKind::S3LayoutA,
            &block(b"TEXT", json!({"encoding": "latin-1"})),
            &payload,
        );
        assert_eq!(framed.block_type, FourCC::BINA);
        assert!(unframed_reason(&framed).contains("latin-1"));
        let framed = frame(
            SourceKind::S3LayoutA,
            &block(b"TEXT", json!({"encoding": "utf-8"})),
            &payload,
        );
        assert_eq!(framed.block_type, FourCC::TEXT);
    }

    #[test]
    fn sdk_embeddings_take_their_shape_from_the_metadata() {
        let payload = floats_le(&[0.5; 12]);
        let framed = frame(
            SourceKind::PythonSdk,
            &sdk_block(
                b"EMBD",
                r#"{"count": 3, "dimensions": 4, "dtype": "float32"}"#,
            ),
            &payload,
        );
        let decoded = EmbeddingPayload::decode(&framed.data).expect("EMBD");
        assert_eq!((decoded.dimension, decoded.count), (4, 3));
        assert_eq!(decoded.dtype, EmbeddingDtype::Float32);
        reads_back(&framed, &payload);
        // The sample files have no count: it follows from the dimension exactly.
        let framed = frame(
            SourceKind::PythonSdk,
            &sdk_block(b"EMBD", r#"{"dimensions": 6, "model": "m"}"#),
            &payload,
        );
        let decoded = EmbeddingPayload::decode(&framed.data).expect("EMBD");
        assert_eq!((decoded.dimension, decoded.count), (6, 2));
        match framed.framing {
            Some(Framing::Embedding {
                shape_from,
                dtype_from,
                ..
            }) => {
                assert!(shape_from.contains("count from the payload length"));
                assert_eq!(dtype_from, "python-sdk convention");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_embedding_whose_size_contradicts_its_shape_is_kept_verbatim() {
        let payload = floats_le(&[1.0; 10]);
        for (metadata, why) in [
            (
                json!({"dimensions": "4", "count": "3", "data_type": "float32"}),
                "contradict",
            ),
            (
                json!({"dimensions": "4", "data_type": "float32"}),
                "do not divide",
            ),
            (
                json!({"count": "3", "data_type": "float32"}),
                "do not divide",
            ),
            (
                json!({"dims": "4.0", "dtype": "float32"}),
                "not a whole number",
            ),
            (
                json!({"dims": "-4", "dtype": "float32"}),
                "not a whole number",
            ),
            (
                json!({"dims": "5", "dimensions": "10", "dtype": "float32"}),
                "contradicts itself",
            ),
            (json!({"dims": "0", "dtype": "float32"}), "shape unknown"),
        ] {
            let framed = frame(
                SourceKind::S3LayoutA,
                &block(b"EMBD", metadata.clone()),
                &payload,
            );
            assert_eq!(framed.block_type, FourCC::BINA, "{metadata}");
            assert_eq!(framed.data, payload, "{metadata}");
            assert!(
                unframed_reason(&framed).contains(why),
                "{metadata}: {}",
                unframed_reason(&framed)
            );
        }
    }

    #[test]
    fn an_embedding_without_a_shape_element_type_or_byte_order_is_kept_verbatim() {
        let payload = floats_le(&[1.0; 8]);
        let cases = [
            // binary_format and block_storage store no metadata at all.
            (SourceKind::BinaryFormat, json!({}), "element type unknown"),
            (
                SourceKind::BlockStorage,
                json!({"dtype": "float32", "dims": "8"}),
                "byte order unknown",
            ),
            (
                SourceKind::UnifiedLocal,
                json!({"dtype": "float32", "dims": "8"}),
                "byte order unknown",
            ),
            (
                SourceKind::S3LayoutB,
                json!({"dims": "8"}),
                "element type unknown",
            ),
            (
                SourceKind::S3LayoutB,
                json!({"dtype": "float32"}),
                "shape unknown",
            ),
            (
                SourceKind::S3LayoutB,
                json!({"dtype": "float64", "dims": "4"}),
                "no canonical EMBD dtype",
            ),
            (
                SourceKind::S3LayoutB,
                json!({"dtype": ">f2", "dims": "4"}),
                "big-endian float16",
            ),
            (
                SourceKind::S3LayoutB,
                json!({"dtype": ">f4", "byte_order": "little", "dims": "8"}),
                "contradict",
            ),
            (
                SourceKind::S3LayoutB,
                json!({"dtype": "float32", "byte_order": "middle", "dims": "8"}),
                "not a byte order",
            ),
        ];
        for (kind, metadata, why) in cases {
            let framed = frame(kind, &block(b"EMBD", metadata.clone()), &payload);
            assert_eq!(framed.block_type, FourCC::BINA, "{kind:?} {metadata}");
            assert_eq!(framed.data, payload);
            assert!(
                unframed_reason(&framed).contains(why),
                "{kind:?} {metadata}: {}",
                unframed_reason(&framed)
            );
        }
    }

    #[test]
    fn a_declared_big_endian_embedding_keeps_its_bytes_as_dtype_2() {
        let payload: Bytes = [0.5f32, -0.25, 1.0, 0.0]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect();
        for metadata in [
            json!({"dtype": ">f4", "dimensions": "2"}),
            json!({"dtype": "float32", "byte_order": "big", "count": "2"}),
        ] {
            let framed = frame(
                SourceKind::UnifiedLocal,
                &block(b"EMBD", metadata.clone()),
                &payload,
            );
            assert_eq!(framed.block_type, FourCC::EMBD, "{metadata}");
            let decoded = EmbeddingPayload::decode(&framed.data).expect("EMBD");
            assert_eq!(decoded.dtype, EmbeddingDtype::Float32BigEndian);
            assert_eq!(decoded.vectors(), vec![vec![0.5, -0.25], vec![1.0, 0.0]]);
            reads_back(&framed, &payload);
        }
        // The SDK's convention is little-endian, but a declaration says otherwise.
        let framed = frame(
            SourceKind::PythonSdk,
            &sdk_block(b"EMBD", r#"{"byteorder": "big", "dimensions": 4}"#),
            &payload,
        );
        let decoded = EmbeddingPayload::decode(&framed.data).expect("EMBD");
        assert_eq!(decoded.dtype, EmbeddingDtype::Float32BigEndian);
    }

    #[test]
    fn sdk_metadata_numbers_are_read_as_spelled() {
        // `384.0` is not a whole number as written, though it parses as one.
        let payload = floats_le(&[0.0; 4]);
        let framed = frame(
            SourceKind::PythonSdk,
            &sdk_block(b"EMBD", r#"{"dimensions": 4.0}"#),
            &payload,
        );
        assert!(unframed_reason(&framed).contains("\"4.0\""));
    }

    #[test]
    fn float16_little_endian_is_dtype_1() {
        let payload = Bytes::from_static(&[0x00, 0x3c, 0x00, 0xc0]); // 1.0, -2.0
        let framed = frame(
            SourceKind::S3LayoutA,
            &block(b"EMBD", json!({"data_type": "float16", "dimensions": "2"})),
            &payload,
        );
        let decoded = EmbeddingPayload::decode(&framed.data).expect("EMBD");
        assert_eq!(decoded.dtype, EmbeddingDtype::Float16);
        assert_eq!(decoded.vectors(), vec![vec![1.0, -2.0]]);
    }

    #[test]
    fn images_are_framed_from_their_own_bytes() {
        let mut png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR".to_vec();
        png.extend_from_slice(&640u32.to_be_bytes());
        png.extend_from_slice(&480u32.to_be_bytes());
        png.extend_from_slice(b"rest");
        let payload = Bytes::from(png);
        let framed = frame(SourceKind::S3LayoutA, &block(b"IMAG", json!({})), &payload);
        assert_eq!(
            framed.framing,
            Some(Framing::Image {
                format: "png",
                width: 640,
                height: 480
            })
        );
        reads_back(&framed, &payload);
        let unknown = Bytes::from_static(b"\x01\x02\x03");
        let framed = frame(SourceKind::S3LayoutA, &block(b"IMAG", json!({})), &unknown);
        assert_eq!(
            framed.framing,
            Some(Framing::Image {
                format: "unknown",
                width: 0,
                height: 0
            })
        );
        reads_back(&framed, &unknown);
    }

    #[test]
    fn other_types_are_stored_as_they_are() {
        let payload = Bytes::from_static(b"\x00\x01 anything");
        for code in [b"BINA", b"KNOW", b"LGCY", b"text"] {
            let framed = frame(SourceKind::S3LayoutA, &block(code, json!({})), &payload);
            assert_eq!(framed.block_type, FourCC(*code));
            assert_eq!(framed.data, payload);
            assert_eq!(framed.framing, None);
        }
    }

    #[test]
    fn empty_payloads_frame_when_the_evidence_allows() {
        let empty = Bytes::new();
        let text = frame(SourceKind::S3LayoutA, &block(b"TEXT", json!({})), &empty);
        assert_eq!(text.block_type, FourCC::TEXT);
        let embedding = frame(
            SourceKind::S3LayoutA,
            &block(b"EMBD", json!({"dtype": "float32", "dimensions": "384"})),
            &empty,
        );
        assert_eq!(embedding.block_type, FourCC::EMBD);
        reads_back(&embedding, &empty);
    }
}
