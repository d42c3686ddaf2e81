//! Legacy local files: detection and the three binary formats.
//!
//! `.maif` names three different layouts, so the kind is decided from the bytes alone
//! (docs/legacy-inputs.md §1.1). Each reader walks its records with every length checked
//! against the bytes that remain, returns the readable prefix of a damaged file with a
//! finding, and refuses only a file of which nothing at all can be read.

pub mod binary_format;
pub mod block_storage;
pub mod unified;

use std::collections::HashMap;

use bytes::Bytes;
use serde_json::json;

use crate::codec::Reader;
use crate::model::{
    BlockStatus, Body, BodyChecks, LegacyArtifact, LegacyBlock, Severity, SourceKind, sha256_hex,
};
use crate::{MigrateError, Result};

/// The magic every local format but block_storage starts with.
const MAGIC: &[u8; 4] = b"MAIF";
/// What detection names a file by: the magic and the four bytes after it.
const DETECTION_LEN: usize = 8;
/// The version major byte of a canonical MAIF 3.x file (FORMAT.md).
const CANONICAL_MAJOR: u8 = 3;

/// Which local legacy format `data` is, decided from bytes (never from the extension),
/// with the confirmations of docs/legacy-inputs.md §1.1.
pub fn detect(source: &str, data: &[u8]) -> Result<SourceKind> {
    let unrecognized = |reason: String| MigrateError::Unrecognized {
        source_name: source.to_owned(),
        reason,
    };
    let first8 = hex::encode(data.get(..DETECTION_LEN).unwrap_or(data));
    let mut reader = Reader::new(data, "legacy file start");
    if reader.magic(MAGIC, "magic").is_ok() {
        // Canonical files are named by their major and minor bytes alone.
        if let Ok([CANONICAL_MAJOR, minor]) = reader.clone().array::<2>("canonical version") {
            return Err(unrecognized(format!(
                "already a canonical MAIF 3.{minor} file; use `maif convert` to copy it"
            )));
        }
        return match reader.array::<4>("variant") {
            // The SDK reader checks the footer and header itself and reports damage as
            // failed checks, so a tampered SDK file is read rather than refused here.
            Ok([0, 2, 0, 1]) if crate::sdk::looks_like(data) => Ok(SourceKind::PythonSdk),
            Ok([0, 1, 0, 0]) => binary_format::confirm(data)
                .map(|()| SourceKind::BinaryFormat)
                .map_err(|why| {
                    unrecognized(format!(
                        "first 8 bytes {first8}: binary_format.py magic (MAIF 1.0), but {why}"
                    ))
                }),
            Ok([0, 0, 0, 1]) => unified::confirm(data)
                .map(|()| SourceKind::UnifiedLocal)
                .map_err(|why| {
                    unrecognized(format!(
                        "first 8 bytes {first8}: unified_block_format.py magic (record version 1), \
                         but {why}"
                    ))
                }),
            Ok(variant) => Err(unrecognized(format!(
                "first 8 bytes {first8}: unknown MAIF variant {} (known: 00020001 Python SDK 2.1, \
                 00010000 binary_format.py, 00000001 unified local, 03xx canonical MAIF 3.x)",
                hex::encode(variant)
            ))),
            Err(_) => Err(unrecognized(format!(
                "first bytes {first8}: `MAIF` followed by fewer than 4 bytes, no known format is that short"
            ))),
        };
    }
    block_storage::confirm(data)
        .map(|()| SourceKind::BlockStorage)
        .map_err(|why| {
            unrecognized(format!(
                "first 8 bytes {first8}: not a known legacy format. No `MAIF` magic at byte 0, so \
                 not binary-format, unified-local, Python SDK 2.1 or canonical MAIF; not block-storage \
                 (no magic, records checked one by one): {why}"
            ))
        })
}

/// A length field as `usize`; a value no address space holds saturates, so that the
/// bounds check that follows refuses it.
pub(crate) fn to_usize(length: u64) -> usize {
    usize::try_from(length).unwrap_or(usize::MAX)
}

/// Hyphenated lower-case uuid text of 16 raw bytes.
pub(crate) fn uuid_text(bytes: [u8; 16]) -> String {
    uuid::Uuid::from_bytes(bytes).hyphenated().to_string()
}

/// The names of the set bits of a legacy `flags` word; unnamed bits as `0x...`.
pub(crate) fn flag_names(flags: u32, names: &[(u32, &str)]) -> Vec<String> {
    (0..32)
        .map(|bit| 1u32 << bit)
        .filter(|mask| flags & mask != 0)
        .map(|mask| {
            names
                .iter()
                .find(|(named, _)| *named == mask)
                .map_or_else(|| format!("0x{mask:08x}"), |(_, name)| (*name).to_owned())
        })
        .collect()
}

/// The block flag bits binary_format and the unified format share (0x80 differs).
pub(crate) const COMPRESSED: u32 = 0x01;
pub(crate) const ENCRYPTED: u32 = 0x02;
pub(crate) const SIGNED: u32 = 0x04;
pub(crate) const DELETED: u32 = 0x08;
pub(crate) const DELTA_COMPRESSED: u32 = 0x10;

/// The encrypted flag: no key or algorithm exists anywhere in these formats, so the body is
/// withheld (never migrated as plaintext); its size and hash stay as evidence.
pub(crate) fn withhold_encrypted(
    block: &mut LegacyBlock,
    stored: &Bytes,
    art: &mut LegacyArtifact,
) {
    block.status = BlockStatus::Encrypted;
    block.body = Body::Absent;
    block.body_checks = BodyChecks::default();
    block
        .evidence
        .insert("stored_size".into(), json!(stored.len()));
    block
        .evidence
        .insert("stored_sha256".into(), json!(sha256_hex(stored)));
    art.finding(
        Severity::Error,
        "encrypted",
        block.legacy_id.clone(),
        "encrypted flag set and no key or algorithm exists in this format; not migrated",
    );
}

/// The deleted flag: the data is still there, so it is migrated and marked.
pub(crate) fn mark_deleted(block: &mut LegacyBlock, art: &mut LegacyArtifact) {
    block.status = BlockStatus::SoftDeleted;
    art.finding(
        Severity::Info,
        "deleted_flag",
        block.legacy_id.clone(),
        "deleted flag set; the data is present and migrated",
    );
}

/// Reports the unreadable tail of a file, which is left out of the migration.
pub(crate) fn trailing_bytes(artifact: &mut LegacyArtifact, offset: usize, end: usize, why: &str) {
    let count = end.saturating_sub(offset);
    artifact.finding(
        Severity::Error,
        "trailing_bytes",
        format!("offset {offset}"),
        format!("trailing bytes at offset {offset} not migrated ({count} bytes): {why}"),
    );
}

/// Two blocks with one id would collide in the migrated artifact; say so up front.
pub(crate) fn note_duplicate_ids(artifact: &mut LegacyArtifact) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut duplicates = Vec::new();
    for (position, block) in artifact.blocks.iter().enumerate() {
        if let Some(first) = seen.insert(&block.legacy_id, position) {
            duplicates.push((block.legacy_id.clone(), first, position));
        }
    }
    for (id, first, again) in duplicates {
        artifact.finding(
            Severity::Warning,
            "duplicate_id",
            id.clone(),
            format!("blocks {first} and {again} of the file both have the id {id}"),
        );
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bytes::Bytes;
    use serde_json::Value;

    pub(crate) const FIXTURES: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures/legacy-local/"
    );

    /// What a `Malformed` error names (structure, offset, reason); panics on anything else.
    pub(crate) fn malformed_parts(
        result: crate::error::Result<crate::model::LegacyArtifact>,
    ) -> (String, u64, String) {
        match result {
            Err(crate::error::MigrateError::Malformed {
                what,
                offset,
                reason,
                ..
            }) => (what, offset, reason),
            Err(other) => panic!("{other}"),
            Ok(_) => panic!("a cut file was read"),
        }
    }

    /// Reading `data` cut at each `(cut, field, offset)` fails naming record 0's header and
    /// the field cut short at its offset.
    pub(crate) fn assert_cuts_name_the_field(
        read: impl Fn(&str, &Bytes) -> crate::error::Result<crate::model::LegacyArtifact>,
        data: &Bytes,
        cases: &[(usize, &str, u64)],
    ) {
        for (cut, field, offset) in cases {
            let (what, at, reason) = malformed_parts(read("cut", &data.slice(..*cut)));
            assert_eq!((what.as_str(), at), ("record 0 header", 0), "cut at {cut}");
            let named = format!("truncated at byte {offset}: field `{field}`");
            assert!(reason.contains(&named), "cut at {cut}: {reason}");
        }
    }

    pub(crate) fn fixture(name: &str) -> Bytes {
        let path = format!("{FIXTURES}{name}");
        Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
    }

    /// The `expected.json` entry of one fixture file.
    pub(crate) fn expected(name: &str) -> Value {
        let path = format!("{FIXTURES}expected.json");
        let all: Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
                .unwrap();
        all.as_array()
            .unwrap()
            .iter()
            .find(|entry| entry["file"] == name)
            .unwrap_or_else(|| panic!("{name} not in expected.json"))
            .clone()
    }

    fn read_as(kind: SourceKind, data: &Bytes) -> Result<LegacyArtifact> {
        match kind {
            SourceKind::BinaryFormat => binary_format::read("fuzz", data),
            SourceKind::BlockStorage => block_storage::read("fuzz", data),
            SourceKind::UnifiedLocal => unified::read("fuzz", data),
            other => panic!("not a local kind: {other:?}"),
        }
    }

    const LOCAL: [(&str, SourceKind); 5] = [
        ("binary-format-a.maif", SourceKind::BinaryFormat),
        ("binary-format-b.maif", SourceKind::BinaryFormat),
        ("block-storage-a.blk", SourceKind::BlockStorage),
        ("block-storage-b.blk", SourceKind::BlockStorage),
        ("unified-local-a.maif", SourceKind::UnifiedLocal),
    ];

    #[test]
    fn detects_every_fixture_from_bytes() {
        for (name, kind) in LOCAL {
            let data = fixture(name);
            assert_eq!(detect(name, &data).unwrap(), kind, "{name}");
        }
    }

    #[test]
    fn detects_python_sdk_files() {
        let sdk = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/fixtures/python-sdk/"
        );
        let mut seen = 0;
        for dir in [sdk.to_owned(), format!("{sdk}edge/")] {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e == "maif") {
                    let data = std::fs::read(&path).unwrap();
                    assert_eq!(
                        detect("sdk", &data).unwrap(),
                        SourceKind::PythonSdk,
                        "{path:?}"
                    );
                    seen += 1;
                }
            }
        }
        assert!(seen >= 12, "{seen}");
    }

    /// Payloads are arbitrary bytes: none of the S3 fixtures' objects may pass for a local file.
    #[test]
    fn s3_object_bodies_are_not_local_files() {
        fn visit(dir: &std::path::Path, seen: &mut usize) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    visit(&path, seen);
                } else if path.to_string_lossy().contains("/objects/") {
                    let data = std::fs::read(&path).unwrap();
                    assert!(detect("s3", &data).is_err(), "{path:?}");
                    *seen += 1;
                }
            }
        }
        let mut seen = 0;
        visit(
            std::path::Path::new(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../shared/fixtures/legacy-s3/"
            )),
            &mut seen,
        );
        assert!(seen > 20, "{seen}");
    }

    #[test]
    fn detection_refuses_canonical_unknown_and_near_misses() {
        let canonical = b"MAIF\x03\x00\x00\x00rest of a canonical file";
        match detect("c", canonical) {
            Err(MigrateError::Unrecognized { reason, .. }) => {
                assert!(reason.contains("already a canonical MAIF 3."), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        match detect("u", b"MAIF\x00\x09\x00\x00zzzz") {
            Err(MigrateError::Unrecognized { reason, .. }) => {
                assert!(reason.contains("4d41494600090000"), "{reason}");
                assert!(reason.contains("00090000"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        match detect("x", b"hello, world, this is text") {
            Err(MigrateError::Unrecognized { reason, .. }) => {
                assert!(reason.contains("68656c6c6f2c2077"), "{reason}");
                assert!(reason.contains("block-storage"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert!(detect("empty", b"").is_err());
        // A binary_format file with one byte appended no longer has metadata_offset = EOF.
        let mut longer = fixture("binary-format-a.maif").to_vec();
        longer.push(0);
        assert!(detect("longer", &longer).is_err());
        // A block_storage file whose walk does not end at EOF is not confirmed.
        let mut tail = fixture("block-storage-a.blk").to_vec();
        tail.extend_from_slice(b"garbage");
        assert!(detect("tail", &tail).is_err());
        // The SDK magic goes to the SDK reader.
        let mut sdk = b"MAIF\0\x02\0\x01".to_vec();
        sdk.resize(600, 0);
        assert_eq!(detect("sdk", &sdk).unwrap(), SourceKind::PythonSdk);
    }

    /// Every prefix of every fixture, plain and with one byte flipped at a few positions:
    /// detection and the reader must answer, never panic.
    #[test]
    fn truncated_and_flipped_fixtures_never_panic() {
        for (name, kind) in LOCAL {
            let full = fixture(name).to_vec();
            let positions = |len: usize| {
                [
                    0,
                    4,
                    8,
                    17,
                    40,
                    60,
                    64,
                    72,
                    100,
                    150,
                    200,
                    230,
                    len / 2,
                    len.saturating_sub(1),
                ]
                .into_iter()
                .filter(move |p| *p < len)
            };
            for len in 0..=full.len() {
                let prefix = &full[..len];
                let _ = detect(name, prefix);
                let _ = read_as(kind, &Bytes::copy_from_slice(prefix));
                for pos in positions(len) {
                    for mask in [0x01u8, 0x80, 0xff] {
                        let mut bad = prefix.to_vec();
                        bad[pos] ^= mask;
                        let _ = detect(name, &bad);
                        let _ = read_as(kind, &Bytes::from(bad));
                    }
                }
            }
            // A flip anywhere in the complete file.
            for pos in 0..full.len() {
                let mut bad = full.clone();
                bad[pos] ^= 0x55;
                let _ = detect(name, &bad);
                let _ = read_as(kind, &Bytes::from(bad));
            }
        }
    }

    #[test]
    fn readers_on_the_wrong_format_do_not_panic() {
        for (name, _) in LOCAL {
            let data = fixture(name);
            for (_, kind) in LOCAL {
                let _ = read_as(kind, &data);
            }
        }
    }
}
