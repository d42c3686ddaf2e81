//! "Valid" means readable: full verification decodes every block the way `maif cat` does.
//! Each case is an artifact signed correctly with its own key, holding one block that only
//! decoding can catch (a bad TEXT, EMBD or IMAG framing, a malformed zstd stream, a wrong
//! declared size, an unknown compression or encryption code), so that the one rule is what
//! fails it; `maif verify` exits 1 naming the block and the field, and `maif cat` fails too.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::Command;

use bytes::Bytes;
use maif_store::artifact::{ArtifactWriter, NewBlock, VerifyOptions, format_id, verify};
use maif_store::format::block::encode_record;
use maif_store::format::digest::{SignedKind, chain_link, content_digest, record_digest};
use maif_store::format::{BLOCK_HEADER_LEN, BlockHeader, Codec, FourCC};

const ID: [u8; 16] = [0x5a; 16];

/// A record of `block_type` with exactly these header codes and stored bytes, signed with
/// the test key and linked after `previous`.
fn crafted_record(
    previous: &maif_store::format::Digest,
    block_type: FourCC,
    compression: u8,
    encryption: u8,
    stored: &[u8],
    uncompressed_size: u64,
) -> Bytes {
    let header = BlockHeader {
        block_id: ID,
        block_type,
        flags: 0,
        compression: compression.into(),
        encryption: encryption.into(),
        metadata_len: 0,
        data_offset: BLOCK_HEADER_LEN as u32,
        data_size: stored.len() as u64,
        uncompressed_size,
        timestamp_us: common::CREATED_US,
        prev_link: chain_link(previous),
    };
    let header_bytes = header.to_bytes();
    let digest = record_digest(&header_bytes, &content_digest(&[], stored));
    let signature = common::test_key().sign(SignedKind::Block, &digest);
    Bytes::from(encode_record(&header, &[], stored, &signature))
}

enum Case {
    /// Uncompressed data of a typed block: the writer refuses it, so it is crafted.
    Data(FourCC, Vec<u8>),
    /// A crafted record: type, compression, encryption, stored bytes, declared size.
    Record(FourCC, u8, u8, Vec<u8>, u64),
}

/// An artifact at `path` with the small golden blocks plus the case's block, one commit.
async fn artifact_with(path: &Path, case: &Case) {
    common::write_small_artifact(path).await;
    let mut writer = ArtifactWriter::open(common::file_store(path), common::test_key())
        .await
        .expect("open");
    let (block_type, compression, encryption, stored, size) = match case {
        Case::Data(block_type, data) => {
            // The writer writes only what reads back.
            let refused = writer
                .add(NewBlock::new(*block_type, data.clone()).with_id(ID))
                .await;
            assert!(
                matches!(refused, Err(maif_store::Error::Format { .. })),
                "the writer refuses an unreadable {block_type} block: {refused:?}"
            );
            (*block_type, 0, 0, data, data.len() as u64)
        }
        Case::Record(block_type, compression, encryption, stored, size) => {
            (*block_type, *compression, *encryption, stored, *size)
        }
    };
    let previous = writer.last_commit().header().last_record_digest;
    let record = crafted_record(&previous, block_type, compression, encryption, stored, size);
    writer.add_signed_record(record).await.expect("add record");
    writer.commit().await.expect("commit");
}

#[test]
fn every_block_verify_passes_is_readable_by_cat() {
    let zstd = |data: &[u8]| zstd::bulk::compress(data, 3).expect("zstd");
    let text = |prefix: &[u8], body: &str| [prefix, body.as_bytes()].concat();
    let cases: Vec<(&str, Case, &str)> = vec![
        (
            "TEXT language",
            Case::Data(FourCC::TEXT, text(&[0, b' ', b'm'], "hello")),
            "language",
        ),
        (
            "TEXT encoding",
            Case::Data(FourCC::TEXT, text(&[9, b'e', b'n'], "hello")),
            "encoding",
        ),
        (
            "TEXT not UTF-8",
            Case::Data(FourCC::TEXT, vec![0, b'e', b'n', 0xff, 0xfe]),
            "UTF-8",
        ),
        (
            "EMBD dtype",
            Case::Data(FourCC::EMBD, {
                let mut d = vec![1, 0, 0, 0, 1, 0, 0, 0, 175, 0, 0, 0];
                d.extend_from_slice(&1.0f32.to_le_bytes());
                d
            }),
            "dtype",
        ),
        (
            "EMBD shape",
            Case::Data(FourCC::EMBD, {
                let mut d = vec![4, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0];
                d.extend_from_slice(&1.0f32.to_le_bytes());
                d
            }),
            "values",
        ),
        (
            "IMAG reserved",
            Case::Data(FourCC::IMAG, vec![1, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x89]),
            "reserved",
        ),
        (
            "malformed zstd",
            Case::Record(FourCC::BINA, 2, 0, b"this is not a zstd frame".to_vec(), 10),
            "zstd",
        ),
        (
            "zstd shorter than declared",
            Case::Record(FourCC::BINA, 2, 0, zstd(b"hello world"), 20),
            "declares 20",
        ),
        (
            "zstd longer than declared",
            Case::Record(FourCC::BINA, 2, 0, zstd(b"hello world"), 5),
            "beyond the declared 5",
        ),
        (
            "zstd of a bad TEXT framing",
            Case::Record(FourCC::TEXT, 2, 0, zstd(&[7, b'e', b'n', b'x']), 4),
            "encoding",
        ),
        (
            "unknown compression",
            Case::Record(FourCC::BINA, 7, 0, b"data".to_vec(), 4),
            "compression",
        ),
        (
            "encryption",
            Case::Record(FourCC::BINA, 0, 1, b"data".to_vec(), 4),
            "encryption",
        ),
    ];
    let tmp = tempfile::tempdir().expect("tempdir");
    let id = format_id(&ID);
    for (n, (name, case, field)) in cases.iter().enumerate() {
        let path = tmp.path().join(format!("case-{n}.maif"));
        common::block_on(artifact_with(&path, case));
        let report = common::block_on(verify(common::file_store(&path), VerifyOptions::default()))
            .expect("verify");
        assert!(!report.valid, "{name}: verify must fail");
        assert_eq!(
            report.problems.len(),
            1,
            "{name}: only decoding fails: {:?}",
            report.problems
        );
        let problem = &report.problems[0];
        assert_eq!(
            problem.block_id.as_deref(),
            Some(id.as_str()),
            "{name}: {problem:?}"
        );
        assert!(problem.offset.is_some(), "{name}: names the offset");
        assert!(
            problem.reason.contains(field),
            "{name}: the problem names {field:?}: {}",
            problem.reason
        );
        let cli = |args: &[&str]| {
            Command::new(env!("CARGO_BIN_EXE_maif"))
                .args(args)
                .output()
                .expect("run maif")
        };
        let location = path.to_str().expect("path");
        let verified = cli(&["verify", location]);
        assert_eq!(verified.status.code(), Some(1), "{name}: {verified:?}");
        assert!(
            String::from_utf8_lossy(&verified.stdout).contains(&id)
                || String::from_utf8_lossy(&verified.stderr).contains(&id),
            "{name}: {verified:?}"
        );
        let cat = cli(&["cat", location, &id]);
        assert!(
            !cat.status.success(),
            "{name}: cat must fail where verify fails: {cat:?}"
        );
    }

    // Well-formed blocks of each kind, compressed or not, verify and read.
    let path = tmp.path().join("good.maif");
    common::block_on(async {
        common::write_small_artifact(&path).await;
        let mut writer = ArtifactWriter::open(common::file_store(&path), common::test_key())
            .await
            .expect("open");
        writer
            .add(NewBlock::new(FourCC::TEXT, text(&[0, b'e', b'n'], "zstd text")).with_zstd(3))
            .await
            .expect("add");
        writer.commit().await.expect("commit");
    });
    let report = common::block_on(verify(common::file_store(&path), VerifyOptions::default()))
        .expect("verify");
    assert!(report.valid, "{:?}", report.problems);
}
