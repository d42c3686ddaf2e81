//! Typed payload framings for TEXT, EMBD and IMAG blocks.
//!
//! The framing is part of the block data (after decompression). Other block types carry
//! their payload unframed.

use super::FormatError;
use super::codec::{Codec, Reader, Writer};
use super::fourcc::FourCC;

/// Text encoding codes of a TEXT payload.
pub const TEXT_ENCODING_UTF8: u8 = 0;
/// UTF-16, little-endian.
pub const TEXT_ENCODING_UTF16LE: u8 = 1;

/// Offset of a TEXT payload's encoding code.
const TEXT_ENCODING_AT: u64 = 0;

/// A TEXT payload: `encoding (u8) | language (2 ASCII bytes, or two zero bytes) | text`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextPayload {
    /// How `text` is encoded: [`TEXT_ENCODING_UTF8`] or [`TEXT_ENCODING_UTF16LE`] (other codes are kept as read).
    pub encoding: u8,
    /// ISO 639-1 code, or `None` when unspecified.
    pub language: Option<[u8; 2]>,
    /// The text bytes, in `encoding`.
    pub text: Vec<u8>,
}

impl TextPayload {
    /// Length of the framing before the text, in bytes.
    pub(crate) const PREFIX_LEN: usize = 3;

    /// Frames UTF-8 text, with an optional ISO 639-1 language code (two lowercase ASCII letters).
    pub fn utf8(text: &str, language: Option<[u8; 2]>) -> Self {
        Self {
            encoding: TEXT_ENCODING_UTF8,
            language,
            text: text.as_bytes().to_vec(),
        }
    }

    /// Parses a language argument such as `en`.
    pub(crate) fn parse_language(text: &str) -> Result<[u8; 2], String> {
        let bytes = text.as_bytes();
        if bytes.len() == 2 && bytes.iter().all(u8::is_ascii_lowercase) {
            Ok([bytes[0], bytes[1]])
        } else {
            Err(format!(
                "language {text:?}: expected a two-letter lowercase ISO 639-1 code such as `en`"
            ))
        }
    }

    /// The text as a Rust string.
    pub fn as_string(&self) -> Result<String, FormatError> {
        let invalid = |reason: &str| FormatError::InvalidField {
            structure: "TEXT payload",
            field: "text",
            offset: Self::PREFIX_LEN as u64,
            reason: reason.into(),
        };
        match self.encoding {
            TEXT_ENCODING_UTF8 => {
                String::from_utf8(self.text.clone()).map_err(|_| invalid("invalid UTF-8"))
            }
            TEXT_ENCODING_UTF16LE => {
                let units: Vec<u16> = self
                    .text
                    .chunks_exact(2)
                    .map(|pair| u16::from_le_bytes([pair[0], pair[1]]))
                    .collect();
                String::from_utf16(&units).map_err(|_| invalid("invalid UTF-16"))
            }
            _ => Err(invalid("unknown encoding")),
        }
    }
}

impl Codec for TextPayload {
    const STRUCTURE: &'static str = "TEXT payload";

    fn encode(&self, out: &mut impl Writer) {
        out.put_u8(self.encoding);
        out.put_bytes(&self.language.unwrap_or([0, 0]));
        out.put_bytes(&self.text);
    }

    fn encoded_len_hint(&self) -> usize {
        Self::PREFIX_LEN + self.text.len()
    }

    /// Reads the framing and the text, which runs to the end of the input.
    fn read(r: &mut Reader<'_>) -> Result<Self, FormatError> {
        let start = r.position();
        let encoding = r.u8("encoding")?;
        let language_bytes: [u8; 2] = r.array("language")?;
        let language = match language_bytes {
            [0, 0] => None,
            code if code.iter().all(u8::is_ascii_alphabetic) => Some(code),
            other => {
                return Err(r.invalid(
                    "language",
                    format!("0x{} is not an ASCII language code", hex::encode(other)),
                ));
            }
        };
        let text_at = r.position();
        let text = r.take(r.remaining() as u64, "text")?;
        match encoding {
            TEXT_ENCODING_UTF8 => {
                if let Err(e) = std::str::from_utf8(text) {
                    return Err(r.invalid_at(
                        "text",
                        text_at + e.valid_up_to() as u64,
                        "invalid UTF-8",
                    ));
                }
            }
            TEXT_ENCODING_UTF16LE => {
                if text.len() % 2 != 0 {
                    return Err(r.invalid_at(
                        "text",
                        text_at,
                        "UTF-16 text has an odd number of bytes",
                    ));
                }
            }
            other => {
                return Err(r.invalid_at(
                    "encoding",
                    start + TEXT_ENCODING_AT,
                    format!("unknown text encoding code {other}"),
                ));
            }
        }
        Ok(Self {
            encoding,
            language,
            text: text.to_vec(),
        })
    }
}

/// Element type of an embedding payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbeddingDtype {
    /// IEEE 754 binary32, little-endian (code 0).
    Float32,
    /// IEEE 754 binary16, little-endian (code 1).
    Float16,
    /// IEEE 754 binary32, big-endian (code 2): legacy payloads kept byte for byte.
    Float32BigEndian,
}

impl EmbeddingDtype {
    /// The element type a stored code names, if it names one.
    fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(EmbeddingDtype::Float32),
            1 => Some(EmbeddingDtype::Float16),
            2 => Some(EmbeddingDtype::Float32BigEndian),
            _ => None,
        }
    }
    fn code(self) -> u8 {
        match self {
            EmbeddingDtype::Float32 => 0,
            EmbeddingDtype::Float16 => 1,
            EmbeddingDtype::Float32BigEndian => 2,
        }
    }
    fn element_len(self) -> u64 {
        match self {
            EmbeddingDtype::Float32 | EmbeddingDtype::Float32BigEndian => 4,
            EmbeddingDtype::Float16 => 2,
        }
    }
}

/// An EMBD payload: `dimension (u32) | count (u32) | dtype (u8) | 3 zero bytes | values`,
/// `count` vectors of `dimension` elements each, in the byte order `dtype` names.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingPayload {
    /// Elements per vector.
    pub dimension: u32,
    /// Number of vectors.
    pub count: u32,
    /// Element type and byte order.
    pub dtype: EmbeddingDtype,
    /// Raw element bytes, in the byte order `dtype` names.
    pub values: Vec<u8>,
}

impl EmbeddingPayload {
    /// Length of the framing before the values, in bytes.
    pub(crate) const PREFIX_LEN: usize = 12;

    /// Frames `vectors` (all of the same length) as float32.
    pub fn from_f32(vectors: &[Vec<f32>]) -> Result<Self, String> {
        let dimension = vectors.first().map_or(0, Vec::len);
        if vectors.iter().any(|v| v.len() != dimension) {
            return Err("embedding vectors differ in length".into());
        }
        let mut values = Vec::with_capacity(dimension * vectors.len() * 4);
        for value in vectors.iter().flatten() {
            values.extend_from_slice(&value.to_le_bytes());
        }
        Ok(Self {
            dimension: u32::try_from(dimension).map_err(|_| "dimension too large")?,
            count: u32::try_from(vectors.len()).map_err(|_| "too many vectors")?,
            dtype: EmbeddingDtype::Float32,
            values,
        })
    }

    /// The vectors as float32 (float16 elements are widened exactly).
    pub fn vectors(&self) -> Vec<Vec<f32>> {
        let elements: Vec<f32> = match self.dtype {
            EmbeddingDtype::Float32 => self
                .values
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            EmbeddingDtype::Float16 => self
                .values
                .chunks_exact(2)
                .map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]])))
                .collect(),
            EmbeddingDtype::Float32BigEndian => self
                .values
                .chunks_exact(4)
                .map(|b| f32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        };
        if self.dimension == 0 {
            // Zero-length vectors carry no data; never allocate `count` of them from input.
            return Vec::new();
        }
        elements
            .chunks(self.dimension as usize)
            .map(<[f32]>::to_vec)
            .collect()
    }
}

impl Codec for EmbeddingPayload {
    const STRUCTURE: &'static str = "EMBD payload";

    fn encode(&self, out: &mut impl Writer) {
        out.put_u32(self.dimension);
        out.put_u32(self.count);
        out.put_u8(self.dtype.code());
        out.put_bytes(&[0, 0, 0]);
        out.put_bytes(&self.values);
    }

    fn encoded_len_hint(&self) -> usize {
        Self::PREFIX_LEN + self.values.len()
    }

    /// Reads the framing and the values, which must fill the rest of the input exactly.
    fn read(r: &mut Reader<'_>) -> Result<Self, FormatError> {
        let dimension = r.u32("dimension")?;
        let count = r.u32("count")?;
        let code = r.u8("dtype")?;
        let Some(dtype) = EmbeddingDtype::from_code(code) else {
            return Err(r.invalid("dtype", format!("unknown element type code {code}")));
        };
        if r.take(3, "reserved")? != [0, 0, 0] {
            return Err(r.invalid("reserved", "must be zero"));
        }
        let expected = u64::from(dimension)
            .checked_mul(u64::from(count))
            .and_then(|n| n.checked_mul(dtype.element_len()));
        let Some(expected) = expected.filter(|n| *n == r.remaining() as u64) else {
            return Err(r.invalid_at(
                "values",
                r.position(),
                format!(
                    "{count} vectors x {dimension} dimensions do not fill the {} bytes present",
                    r.remaining()
                ),
            ));
        };
        let values = r.take(expected, "values")?.to_vec();
        Ok(Self {
            dimension,
            count,
            dtype,
            values,
        })
    }
}

/// Widens an IEEE 754 binary16 value to binary32 (exact for every input).
pub fn f16_to_f32(bits: u16) -> f32 {
    let sign = u32::from(bits >> 15) << 31;
    let exponent = u32::from((bits >> 10) & 0x1f);
    let mantissa = u32::from(bits & 0x3ff);
    let magnitude = match (exponent, mantissa) {
        (0, 0) => 0,
        (0, m) => {
            // Subnormal: normalise the mantissa.
            let shift = m.leading_zeros() - 21;
            let m = (m << shift) & 0x3ff;
            ((127 - 15 + 1 - shift) << 23) | (m << 13)
        }
        (0x1f, m) => 0x7f80_0000 | (m << 13),
        (e, m) => ((e + 127 - 15) << 23) | (m << 13),
    };
    f32::from_bits(sign | magnitude)
}

/// Image container formats of an IMAG payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// Code 0: the writer did not say.
    Unknown,
    /// Code 1: PNG.
    Png,
    /// Code 2: JPEG.
    Jpeg,
    /// Code 3: GIF.
    Gif,
    /// Code 4: WebP.
    Webp,
    /// Any other code, kept as read.
    Other(u8),
}

impl ImageFormat {
    fn code(self) -> u8 {
        match self {
            ImageFormat::Unknown => 0,
            ImageFormat::Png => 1,
            ImageFormat::Jpeg => 2,
            ImageFormat::Gif => 3,
            ImageFormat::Webp => 4,
            ImageFormat::Other(code) => code,
        }
    }
    fn from_code(code: u8) -> Self {
        match code {
            0 => ImageFormat::Unknown,
            1 => ImageFormat::Png,
            2 => ImageFormat::Jpeg,
            3 => ImageFormat::Gif,
            4 => ImageFormat::Webp,
            other => ImageFormat::Other(other),
        }
    }
    /// Lowercase name for output: `png`, `jpeg`, `gif`, `webp`, `unknown` or `other`.
    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Unknown => "unknown",
            ImageFormat::Png => "png",
            ImageFormat::Jpeg => "jpeg",
            ImageFormat::Gif => "gif",
            ImageFormat::Webp => "webp",
            ImageFormat::Other(_) => "other",
        }
    }
}

/// An IMAG payload: `format (u8) | 3 zero bytes | width (u32) | height (u32) | image bytes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePayload {
    /// The image container format.
    pub format: ImageFormat,
    /// Width in pixels (0 when unknown).
    pub width: u32,
    /// Height in pixels (0 when unknown).
    pub height: u32,
    /// The encoded image bytes, as given.
    pub image: Vec<u8>,
}

impl ImagePayload {
    /// Length of the framing before the image bytes, in bytes.
    pub(crate) const PREFIX_LEN: usize = 12;

    /// Frames encoded image bytes, reading format and size from the PNG, GIF, JPEG or WebP
    /// header when there is one (0 x 0 and `Unknown` otherwise).
    pub fn sniff(image: Vec<u8>) -> Self {
        let (format, width, height) = sniff_image(&image);
        Self {
            format,
            width,
            height,
            image,
        }
    }
}

impl Codec for ImagePayload {
    const STRUCTURE: &'static str = "IMAG payload";

    fn encode(&self, out: &mut impl Writer) {
        out.put_u8(self.format.code());
        out.put_bytes(&[0, 0, 0]);
        out.put_u32(self.width);
        out.put_u32(self.height);
        out.put_bytes(&self.image);
    }

    fn encoded_len_hint(&self) -> usize {
        Self::PREFIX_LEN + self.image.len()
    }

    /// Reads the framing and the image bytes, which run to the end of the input.
    fn read(r: &mut Reader<'_>) -> Result<Self, FormatError> {
        let format = ImageFormat::from_code(r.u8("format")?);
        if r.take(3, "reserved")? != [0, 0, 0] {
            return Err(r.invalid("reserved", "must be zero"));
        }
        let width = r.u32("width")?;
        let height = r.u32("height")?;
        let image = r.take(r.remaining() as u64, "image")?.to_vec();
        Ok(Self {
            format,
            width,
            height,
            image,
        })
    }
}

fn sniff_image(bytes: &[u8]) -> (ImageFormat, u32, u32) {
    let be32 = |at: usize| {
        bytes
            .get(at..at + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let le16 = |at: usize| {
        bytes
            .get(at..at + 2)
            .map(|b| u32::from(u16::from_le_bytes([b[0], b[1]])))
    };
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n")
        && bytes.get(12..16) == Some(b"IHDR")
        && let (Some(w), Some(h)) = (be32(16), be32(20))
    {
        return (ImageFormat::Png, w, h);
    }
    if (bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a"))
        && let (Some(w), Some(h)) = (le16(6), le16(8))
    {
        return (ImageFormat::Gif, w, h);
    }
    if bytes.starts_with(b"RIFF") && bytes.get(8..12) == Some(b"WEBP") {
        return (ImageFormat::Webp, 0, 0);
    }
    if bytes.starts_with(&[0xff, 0xd8]) {
        return (ImageFormat::Jpeg, jpeg_size(bytes).0, jpeg_size(bytes).1);
    }
    (ImageFormat::Unknown, 0, 0)
}

/// Walks JPEG markers to the first start-of-frame; (0, 0) when there is none.
fn jpeg_size(bytes: &[u8]) -> (u32, u32) {
    let mut at = 2usize;
    while at + 4 <= bytes.len() {
        if bytes[at] != 0xff {
            return (0, 0);
        }
        let marker = bytes[at + 1];
        let segment_len = usize::from(u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]));
        let is_sof = matches!(marker, 0xc0..=0xcf) && !matches!(marker, 0xc4 | 0xc8 | 0xcc);
        if is_sof {
            if let Some(sof) = bytes.get(at + 5..at + 9) {
                let height = u32::from(u16::from_be_bytes([sof[0], sof[1]]));
                let width = u32::from(u16::from_be_bytes([sof[2], sof[3]]));
                return (width, height);
            }
            return (0, 0);
        }
        at += 2 + segment_len;
    }
    (0, 0)
}

/// The payload a reader shows for `block_type`: the text, vector bytes or image bytes without
/// their framing; other types unchanged.
pub fn content_of(block_type: FourCC, data: &[u8]) -> Result<Vec<u8>, FormatError> {
    match block_type {
        FourCC::TEXT => Ok(TextPayload::decode(data)?.text),
        FourCC::IMAG => Ok(ImagePayload::decode(data)?.image),
        FourCC::EMBD => Ok(EmbeddingPayload::decode(data)?.values),
        _ => Ok(data.to_vec()),
    }
}

/// The stored data for `content` under `block_type`: `content` inside the typed framing
/// of TEXT (UTF-8, with an optional ISO 639-1 `language`), EMBD (little-endian float32
/// values, `dimension` per vector, one vector by default) or IMAG (format and size sniffed
/// from the image bytes); other types unchanged. The inverse of [`content_of`]. The error
/// says what is wrong with the input, in the words of the parameters.
pub fn frame_content(
    block_type: FourCC,
    content: Vec<u8>,
    language: Option<&str>,
    dimension: Option<u32>,
) -> Result<Vec<u8>, String> {
    if language.is_some() && block_type != FourCC::TEXT {
        return Err("a language applies to TEXT blocks only".into());
    }
    if dimension.is_some() && block_type != FourCC::EMBD {
        return Err("a dimension applies to EMBD blocks only".into());
    }
    match block_type {
        FourCC::TEXT => {
            let text = String::from_utf8(content).map_err(|e| {
                format!(
                    "TEXT input is not UTF-8 (first bad byte at offset {})",
                    e.utf8_error().valid_up_to()
                )
            })?;
            let language = language.map(TextPayload::parse_language).transpose()?;
            Ok(TextPayload::utf8(&text, language).to_bytes())
        }
        FourCC::IMAG => Ok(ImagePayload::sniff(content).to_bytes()),
        FourCC::EMBD => {
            if !content.len().is_multiple_of(4) {
                return Err(format!(
                    "EMBD input is {} bytes, not a whole number of little-endian float32 values",
                    content.len()
                ));
            }
            let elements = u32::try_from(content.len() / 4)
                .map_err(|_| format!("EMBD input of {} bytes is too large", content.len()))?;
            let dimension = dimension.unwrap_or(elements);
            if dimension == 0 || !elements.is_multiple_of(dimension) {
                return Err(format!(
                    "EMBD input holds {elements} values, which is not a multiple of the dimension {dimension}"
                ));
            }
            Ok(EmbeddingPayload {
                dimension,
                count: elements / dimension,
                dtype: EmbeddingDtype::Float32,
                values: content,
            }
            .to_bytes())
        }
        _ => Ok(content),
    }
}

#[cfg(test)]
mod framing_tests {
    use super::*;

    #[test]
    fn framed_content_reads_back_as_the_same_content() {
        let png = [
            &b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"[..],
            &[0, 0, 0, 3, 0, 0, 0, 2],
        ]
        .concat();
        let vectors: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        for (block_type, content, language, dimension) in [
            (FourCC::TEXT, "héllo".as_bytes().to_vec(), Some("en"), None),
            (FourCC::TEXT, b"no language".to_vec(), None, None),
            (FourCC::EMBD, vectors.clone(), None, Some(2)),
            (FourCC::EMBD, vectors, None, None),
            (FourCC::IMAG, png, None, None),
            (FourCC::BINA, vec![0, 1, 2], None, None),
        ] {
            let framed =
                frame_content(block_type, content.clone(), language, dimension).expect("frames");
            assert_eq!(content_of(block_type, &framed).expect("reads"), content);
        }
    }

    #[test]
    fn input_that_cannot_be_framed_is_refused_saying_why() {
        let refused = |t, c: &[u8], l, d| frame_content(t, c.to_vec(), l, d).expect_err("refused");
        assert!(refused(FourCC::TEXT, &[0xff, 0xfe], None, None).contains("not UTF-8"));
        assert!(refused(FourCC::EMBD, &[0; 6], None, None).contains("float32"));
        assert!(refused(FourCC::EMBD, &[0; 12], None, Some(2)).contains("multiple"));
        assert!(refused(FourCC::EMBD, &[0; 8], None, Some(0)).contains("multiple"));
        assert!(refused(FourCC::BINA, &[0], Some("en"), None).contains("TEXT blocks only"));
        assert!(refused(FourCC::TEXT, b"x", None, Some(2)).contains("EMBD blocks only"));
    }
}

#[cfg(test)]
mod big_endian_tests {
    use super::*;

    #[test]
    fn big_endian_float32_embeddings_keep_their_bytes_and_read_correctly() {
        let values: Vec<u8> = [1.0f32, -2.5, 0.25, 8.0]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect();
        let payload = EmbeddingPayload {
            dimension: 2,
            count: 2,
            dtype: EmbeddingDtype::Float32BigEndian,
            values: values.clone(),
        };
        let bytes = payload.to_bytes();
        assert_eq!(bytes[8], 2, "dtype code");
        let decoded = EmbeddingPayload::decode(&bytes).expect("decode");
        assert_eq!(decoded.values, values, "the bytes are kept");
        assert_eq!(decoded.vectors(), vec![vec![1.0, -2.5], vec![0.25, 8.0]]);
        assert_eq!(content_of(FourCC::EMBD, &bytes).expect("content"), values);
    }
}
