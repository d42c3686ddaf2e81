//! Block type codes.

use std::fmt;

/// A four-character block type code, stored as its four bytes in file order.
///
/// Unknown codes are valid: readers preserve, list and skip them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FourCC(pub [u8; 4]);

impl FourCC {
    /// Text, framed as a [`TextPayload`](crate::format::payload::TextPayload).
    pub const TEXT: FourCC = FourCC(*b"TEXT");
    /// Embedding vectors, framed as an [`EmbeddingPayload`](crate::format::payload::EmbeddingPayload).
    pub const EMBD: FourCC = FourCC(*b"EMBD");
    /// An image, framed as an [`ImagePayload`](crate::format::payload::ImagePayload).
    pub const IMAG: FourCC = FourCC(*b"IMAG");
    /// Audio bytes, unframed.
    pub const AUDI: FourCC = FourCC(*b"AUDI");
    /// Video bytes, unframed.
    pub const VIDE: FourCC = FourCC(*b"VIDE");
    /// A knowledge graph, unframed.
    pub const KGRF: FourCC = FourCC(*b"KGRF");
    /// Opaque binary data, unframed.
    pub const BINA: FourCC = FourCC(*b"BINA");
    /// Metadata carried as a block, unframed.
    pub const META: FourCC = FourCC(*b"META");
    /// Lifecycle information, unframed.
    pub const LIFE: FourCC = FourCC(*b"LIFE");

    /// Every type the MAIF 3.0 specification defines.
    pub const KNOWN: [FourCC; 9] = [
        Self::TEXT,
        Self::EMBD,
        Self::IMAG,
        Self::AUDI,
        Self::VIDE,
        Self::KGRF,
        Self::BINA,
        Self::META,
        Self::LIFE,
    ];

    /// Parses a code given as exactly four ASCII characters, or as `0x` and eight hex digits
    /// for codes that are not printable.
    pub fn parse(text: &str) -> Result<FourCC, String> {
        if let Some(hex_digits) = text.strip_prefix("0x") {
            let bytes = hex::decode(hex_digits).map_err(|e| format!("block type {text:?}: {e}"))?;
            return <[u8; 4]>::try_from(bytes.as_slice())
                .map(FourCC)
                .map_err(|_| format!("block type {text:?}: 0x form needs exactly 8 hex digits"));
        }
        let bytes = text.as_bytes();
        if bytes.len() != 4 || !bytes.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
            return Err(format!(
                "block type {text:?}: expected exactly four printable ASCII characters (e.g. TEXT) or 0xXXXXXXXX"
            ));
        }
        let mut code = [0u8; 4];
        code.copy_from_slice(bytes);
        Ok(FourCC(code))
    }
}

impl fmt::Display for FourCC {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
            // Printable ASCII is valid UTF-8 byte for byte.
            for b in self.0 {
                write!(f, "{}", b as char)?;
            }
            Ok(())
        } else {
            write!(f, "0x{}", hex::encode(self.0))
        }
    }
}

impl fmt::Debug for FourCC {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FourCC({self})")
    }
}
