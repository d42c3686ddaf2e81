//! JSON as the legacy Python code wrote it.
//!
//! Legacy hashes and signatures cover JSON *text* (number tokens, key order, escapes), and
//! the Python SDK writes bare `NaN` and `Infinity`. This parser keeps every number as its
//! source token and every object in source order, so nothing is re-formatted before it is
//! hashed; [`PyJson::dumps_sorted`] reproduces `json.dumps(v, sort_keys=True)` for the one
//! pre-image that is not stored as bytes (the SDK's provenance entry hash).

use std::fmt::Write as _;

use serde_json::{Map, Value};

/// Nesting deeper than this is refused (the recursion is bounded by it).
const MAX_DEPTH: usize = 128;

/// A parsed JSON value that remembers how its numbers were spelled.
#[derive(Debug, Clone, PartialEq)]
pub enum PyJson {
    Null,
    Bool(bool),
    /// The number token exactly as written (`1e-05`, `NaN`, `-Infinity`, `18446744073709551617`).
    Number(String),
    String(String),
    Array(Vec<PyJson>),
    /// Members in source order.
    Object(Vec<(String, PyJson)>),
}

/// Where and why a JSON text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid JSON at byte {offset}: {reason}")]
pub struct PyJsonError {
    pub offset: usize,
    pub reason: String,
}

impl PyJson {
    /// Parses one JSON value; trailing non-whitespace is an error.
    pub fn parse(text: &[u8]) -> Result<PyJson, PyJsonError> {
        let mut parser = Parser { text, pos: 0 };
        parser.skip_ws();
        let value = parser.value(0)?;
        parser.skip_ws();
        if parser.pos != text.len() {
            return Err(parser.error("trailing bytes after the JSON value"));
        }
        Ok(value)
    }

    /// The member `key` of an object (the first, if repeated).
    pub fn get(&self, key: &str) -> Option<&PyJson> {
        match self {
            PyJson::Object(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            PyJson::String(s) => Some(s),
            _ => None,
        }
    }

    /// The number token, as written.
    pub fn as_token(&self) -> Option<&str> {
        match self {
            PyJson::Number(t) => Some(t),
            _ => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        self.as_token().and_then(|t| t.parse().ok())
    }

    pub fn as_f64(&self) -> Option<f64> {
        self.as_token().and_then(|t| t.parse().ok())
    }

    pub fn is_empty_object(&self) -> bool {
        matches!(self, PyJson::Object(m) if m.is_empty())
    }

    /// `json.dumps(self, sort_keys=True)` with Python's default separators and `ensure_ascii`.
    /// Number tokens are written as parsed, which is exact for what Python itself wrote.
    pub fn dumps_sorted(&self) -> String {
        let mut out = String::new();
        self.write_python(&mut out, true);
        out
    }

    /// `json.dumps(self)`: members in source order. For JSON that Python wrote with default
    /// options this reproduces the source text exactly.
    pub fn dumps(&self) -> String {
        let mut out = String::new();
        self.write_python(&mut out, false);
        out
    }

    fn write_python(&self, out: &mut String, sort_keys: bool) {
        match self {
            PyJson::Null => out.push_str("null"),
            PyJson::Bool(true) => out.push_str("true"),
            PyJson::Bool(false) => out.push_str("false"),
            PyJson::Number(token) => out.push_str(token),
            PyJson::String(s) => write_python_string(s, out),
            PyJson::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    item.write_python(out, sort_keys);
                }
                out.push(']');
            }
            PyJson::Object(members) => {
                let mut sorted: Vec<&(String, PyJson)> = members.iter().collect();
                if sort_keys {
                    // Python sorts str keys by code point; UTF-8 byte order is the same.
                    sorted.sort_by(|a, b| a.0.cmp(&b.0));
                }
                out.push('{');
                for (i, (key, value)) in sorted.into_iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    write_python_string(key, out);
                    out.push_str(": ");
                    value.write_python(out, sort_keys);
                }
                out.push('}');
            }
        }
    }

    /// The value as standard JSON when that loses nothing: strings, booleans, null, and
    /// numbers that serde_json keeps exactly (integers in i64/u64 range). `None` for NaN,
    /// infinities, big integers and floats, whose exact spelling only the raw bytes keep.
    pub fn to_exact_value(&self) -> Option<Value> {
        Some(match self {
            PyJson::Null => Value::Null,
            PyJson::Bool(b) => Value::Bool(*b),
            PyJson::Number(token) => {
                if let Ok(n) = token.parse::<i64>() {
                    Value::from(n)
                } else if let Ok(n) = token.parse::<u64>() {
                    Value::from(n)
                } else {
                    return None;
                }
            }
            PyJson::String(s) => Value::String(s.clone()),
            PyJson::Array(items) => Value::Array(
                items
                    .iter()
                    .map(PyJson::to_exact_value)
                    .collect::<Option<Vec<_>>>()?,
            ),
            PyJson::Object(members) => {
                let mut map = Map::new();
                for (k, v) in members {
                    map.insert(k.clone(), v.to_exact_value()?);
                }
                Value::Object(map)
            }
        })
    }
}

/// A string as Python's `json.dumps` (ensure_ascii) writes it.
pub fn write_python_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
}

struct Parser<'a> {
    text: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn error(&self, reason: impl Into<String>) -> PyJsonError {
        PyJsonError {
            offset: self.pos,
            reason: reason.into(),
        }
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.text.get(self.pos) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, literal: &str) -> bool {
        if self.text[self.pos..].starts_with(literal.as_bytes()) {
            self.pos += literal.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> Result<PyJson, PyJsonError> {
        if depth > MAX_DEPTH {
            return Err(self.error(format!("nested deeper than {MAX_DEPTH} levels")));
        }
        match self.text.get(self.pos) {
            None => Err(self.error("unexpected end of input")),
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => self.string().map(PyJson::String),
            Some(b't') if self.eat("true") => Ok(PyJson::Bool(true)),
            Some(b'f') if self.eat("false") => Ok(PyJson::Bool(false)),
            Some(b'n') if self.eat("null") => Ok(PyJson::Null),
            Some(b'N') if self.eat("NaN") => Ok(PyJson::Number("NaN".into())),
            Some(b'I') if self.eat("Infinity") => Ok(PyJson::Number("Infinity".into())),
            Some(b'-') if self.eat("-Infinity") => Ok(PyJson::Number("-Infinity".into())),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(other) => Err(self.error(format!("unexpected byte 0x{other:02x}"))),
        }
    }

    fn number(&mut self) -> Result<PyJson, PyJsonError> {
        let start = self.pos;
        if self.text.get(self.pos) == Some(&b'-') {
            self.pos += 1;
        }
        let digits = |p: &mut Self| {
            let from = p.pos;
            while matches!(p.text.get(p.pos), Some(b'0'..=b'9')) {
                p.pos += 1;
            }
            p.pos - from
        };
        if digits(self) == 0 {
            return Err(self.error("a number needs digits"));
        }
        if self.text.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            if digits(self) == 0 {
                return Err(self.error("a fraction needs digits"));
            }
        }
        if matches!(self.text.get(self.pos), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.text.get(self.pos), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if digits(self) == 0 {
                return Err(self.error("an exponent needs digits"));
            }
        }
        // Only ASCII bytes were consumed.
        let token = String::from_utf8_lossy(&self.text[start..self.pos]).into_owned();
        Ok(PyJson::Number(token))
    }

    fn string(&mut self) -> Result<String, PyJsonError> {
        self.pos += 1;
        let mut out: Vec<u8> = Vec::new();
        loop {
            let Some(&byte) = self.text.get(self.pos) else {
                return Err(self.error("unterminated string"));
            };
            self.pos += 1;
            match byte {
                b'"' => break,
                b'\\' => {
                    let Some(&escape) = self.text.get(self.pos) else {
                        return Err(self.error("unterminated escape"));
                    };
                    self.pos += 1;
                    let c = match escape {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => self.unicode_escape()?,
                        other => {
                            return Err(self.error(format!("unknown escape \\{}", other as char)));
                        }
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                0x00..=0x1f => return Err(self.error("control character inside a string")),
                _ => out.push(byte),
            }
        }
        String::from_utf8(out).map_err(|_| self.error("string is not valid UTF-8"))
    }

    fn hex4(&mut self) -> Result<u16, PyJsonError> {
        let digits = self
            .text
            .get(self.pos..self.pos + 4)
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u16::from_str_radix(d, 16).ok())
            .ok_or_else(|| self.error("\\u needs four hex digits"))?;
        self.pos += 4;
        Ok(digits)
    }

    fn unicode_escape(&mut self) -> Result<char, PyJsonError> {
        let first = self.hex4()?;
        if (0xD800..0xDC00).contains(&first) && self.text[self.pos..].starts_with(b"\\u") {
            let save = self.pos;
            self.pos += 2;
            let second = self.hex4()?;
            if (0xDC00..0xE000).contains(&second) {
                let code =
                    0x10000 + ((u32::from(first) - 0xD800) << 10) + (u32::from(second) - 0xDC00);
                return char::from_u32(code).ok_or_else(|| self.error("invalid surrogate pair"));
            }
            self.pos = save;
        }
        // A lone surrogate (Python writes them) has no UTF-8 form; keep it visible.
        Ok(char::from_u32(u32::from(first)).unwrap_or(char::REPLACEMENT_CHARACTER))
    }

    fn array(&mut self, depth: usize) -> Result<PyJson, PyJsonError> {
        self.pos += 1;
        let mut items = Vec::new();
        self.skip_ws();
        if self.eat("]") {
            return Ok(PyJson::Array(items));
        }
        loop {
            self.skip_ws();
            items.push(self.value(depth + 1)?);
            self.skip_ws();
            if self.eat(",") {
                continue;
            }
            if self.eat("]") {
                return Ok(PyJson::Array(items));
            }
            return Err(self.error("expected ',' or ']'"));
        }
    }

    fn object(&mut self, depth: usize) -> Result<PyJson, PyJsonError> {
        self.pos += 1;
        let mut members = Vec::new();
        self.skip_ws();
        if self.eat("}") {
            return Ok(PyJson::Object(members));
        }
        loop {
            self.skip_ws();
            if self.text.get(self.pos) != Some(&b'"') {
                return Err(self.error("expected a string key"));
            }
            let key = self.string()?;
            self.skip_ws();
            if !self.eat(":") {
                return Err(self.error("expected ':'"));
            }
            self.skip_ws();
            let value = self.value(depth + 1)?;
            members.push((key, value));
            self.skip_ws();
            if self.eat(",") {
                continue;
            }
            if self.eat("}") {
                return Ok(PyJson::Object(members));
            }
            return Err(self.error("expected ',' or '}'"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_number_tokens_and_python_specials() {
        let v = PyJson::parse(br#"{"inf": Infinity, "nan": NaN, "ninf": -Infinity, "t": 1e-05, "b": 18446744073709551617}"#).unwrap();
        assert_eq!(v.get("nan").and_then(PyJson::as_token), Some("NaN"));
        assert_eq!(v.get("ninf").and_then(PyJson::as_token), Some("-Infinity"));
        assert_eq!(v.get("t").and_then(PyJson::as_token), Some("1e-05"));
        assert_eq!(v.get("b").and_then(PyJson::to_exact_value), None);
    }

    #[test]
    fn dumps_like_python() {
        let v = PyJson::parse(
            "{\"z\": 1, \"a\": [\"\u{fc}\u{1F642}\\u007f/\", null, true]}".as_bytes(),
        )
        .unwrap();
        assert_eq!(
            v.dumps_sorted(),
            r#"{"a": ["\u00fc\ud83d\ude42\u007f/", null, true], "z": 1}"#
        );
    }

    #[test]
    fn refuses_bad_input_with_offsets() {
        for bad in [
            &b"{"[..],
            b"[1,]",
            b"\"abc",
            b"{\"a\" 1}",
            b"1 2",
            b"-",
            b"1.",
            b"\"\x01\"",
        ] {
            let err = PyJson::parse(bad).unwrap_err();
            assert!(err.offset <= bad.len(), "{bad:?}: {err}");
        }
        let deep = "[".repeat(10_000);
        assert!(PyJson::parse(deep.as_bytes()).is_err());
    }
}
