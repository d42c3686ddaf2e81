//! Damage matrices: every single-byte flip is detected and located; every truncation leaves
//! the newest commit it still holds (or a clear error). Hostile length fields are in
//! `allocation.rs`, a binary of its own.

mod common;

use maif_store::artifact::{ArtifactReader, RecoveryMode, VerifyOptions, recover_file, verify};

use common::small_artifact;

#[test]
fn every_single_byte_flip_is_detected_and_located() {
    let small = small_artifact();
    let path = small.dir.path().join("tampered.maif");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let options = VerifyOptions {
        threads: 1,
        ..VerifyOptions::default()
    };
    let mut undetected = Vec::new();
    let mut misattributed = Vec::new();
    for offset in 0..small.bytes.len() {
        let mut bytes = small.bytes.clone();
        bytes[offset] ^= 0x5a;
        std::fs::write(&path, &bytes).expect("write");
        let report = runtime
            .block_on(verify(common::file_store(&path), options))
            .expect("verify must report, not fail");
        if report.valid {
            undetected.push(offset);
            continue;
        }
        // A flip inside a record must be blamed on that record.
        if let Some(info) = small.records.iter().find(|b| {
            (b.entry.offset..b.entry.offset + b.entry.record_len).contains(&(offset as u64))
        }) {
            let named = report
                .problems
                .iter()
                .any(|p| p.record == Some(info.position) && p.offset == Some(info.entry.offset));
            if !named {
                misattributed.push((offset, info.position, report.problems.clone()));
            }
        }
        // A flip inside a commit's segment or trailer must be blamed on that commit.
        if let Some(commit) = small
            .commits
            .iter()
            .find(|c| (c.header().segment_offset..c.end()).contains(&(offset as u64)))
        {
            let start = commit.header().segment_offset;
            let named = report.problems.iter().any(|p| {
                p.offset
                    .is_some_and(|at| (start..commit.end()).contains(&at))
            });
            if !named {
                misattributed.push((offset, commit.seq(), report.problems.clone()));
            }
        }
    }
    assert!(
        undetected.is_empty(),
        "flips not detected at offsets {undetected:?}"
    );
    assert!(
        misattributed.is_empty(),
        "{} flips were not attributed to their record or commit; first: {:?}",
        misattributed.len(),
        misattributed.first()
    );
}

/// Quick verification reads the base and the newest commit (its head, trailer, provenance
/// and run head), and detects every flip there; older commits need full verification.
#[test]
fn quick_verification_detects_flips_in_what_it_reads() {
    let small = small_artifact();
    let path = small.dir.path().join("tampered.maif");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let quick = VerifyOptions {
        quick: true,
        threads: 1,
        ..VerifyOptions::default()
    };
    let newest = small.commits.last().expect("commits");
    let header = newest.header();
    // The run's pages are not read by quick verification: stop at the run's head.
    let run_pages = match (&header.newest_run, header.run_len) {
        (Some(run), len) if len > 0 => {
            let start = header.segment_offset + run.part_offset + run.head_len;
            start..header.segment_offset + run.part_offset + len
        }
        _ => 0..0,
    };
    let base_len = small.commits[0].header().records_start as usize;
    let read = (0..base_len).chain(
        (header.segment_offset as usize..newest.end() as usize)
            .filter(|o| !run_pages.contains(&(*o as u64))),
    );
    for offset in read {
        let mut bytes = small.bytes.clone();
        bytes[offset] ^= 0x01;
        std::fs::write(&path, &bytes).expect("write");
        let report = runtime
            .block_on(verify(common::file_store(&path), quick))
            .expect("verify");
        assert!(
            !report.valid,
            "quick verification missed a flip at offset {offset}"
        );
    }
}

#[test]
fn every_truncation_leaves_the_newest_commit_it_holds_or_a_clear_error() {
    let small = small_artifact();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let truncated = small.dir.path().join("truncated.maif");
    let creation_end = small.commits[0].end() as usize;
    for len in 0..small.bytes.len() {
        std::fs::write(&truncated, &small.bytes[..len]).expect("write");
        let report = runtime
            .block_on(verify(
                common::file_store(&truncated),
                VerifyOptions::default(),
            ))
            .expect("verify reports");
        let out = small.dir.path().join(format!("recovered-{len}.maif"));
        if len < creation_end {
            assert!(!report.valid, "truncation to {len} bytes verified");
            let recovered =
                runtime.block_on(recover_file(&truncated, &out, Some(&common::test_key())));
            match recovered {
                Ok(r) => {
                    assert_eq!(r.mode, RecoveryMode::Resigned);
                    assert_eq!(r.records_recovered, 0);
                    let check = runtime
                        .block_on(verify(common::file_store(&out), VerifyOptions::default()))
                        .expect("verify");
                    assert!(check.valid, "{len}: {:?}", check.problems);
                    std::fs::remove_file(&out).expect("cleanup");
                }
                Err(e) => {
                    // Only a prefix without an intact header and metadata section is lost.
                    assert!(
                        len < small.commits[0].header().records_start as usize,
                        "prefix of {len} bytes not recovered: {e}"
                    );
                }
            }
            continue;
        }
        // The newest commit whose segment is whole within the prefix is what the file holds
        // (a commit that lost only its trailer is complete and signed).
        let held = small
            .commits
            .iter()
            .rev()
            .find(|c| (c.header().segment_offset + c.header().segment_len) as usize <= len)
            .expect("commit 0 fits");
        assert!(report.valid, "{len}: {:?}", report.problems);
        assert_eq!(report.newest_commit, Some(held.seq()), "{len}");
        assert_eq!(report.record_count, held.record_count(), "{len}");
        assert_eq!(
            report.warnings.is_empty(),
            held.end() as usize == len,
            "{len}: bytes past the newest commit are reported, and only they: {:?}",
            report.warnings
        );
        let recovered = runtime
            .block_on(recover_file(&truncated, &out, None))
            .expect("recover needs no key");
        assert_eq!(recovered.mode, RecoveryMode::CommittedState);
        assert_eq!(
            recovered.trailer_restored,
            (held.end() as usize) > len,
            "{len}"
        );
        assert_eq!(
            std::fs::read(&out).expect("read"),
            small.bytes[..held.end() as usize],
            "{len}: recovery must give the held commit byte for byte"
        );
        std::fs::remove_file(&out).expect("cleanup");
    }
}

#[test]
fn recovery_without_a_key_names_what_it_needs() {
    let small = small_artifact();
    // Damage the last record of the newest commit that adds records: its predecessor is the
    // newest commit that verifies, and the intact records of the damaged one can be saved.
    let damaged = small.dir.path().join("damaged.maif");
    let mut bytes = small.bytes.clone();
    let last = small.records.last().expect("records");
    bytes[(last.entry.offset + last.entry.record_len - 70) as usize] ^= 1;
    std::fs::write(&damaged, &bytes).expect("write");
    let error = common::block_on(recover_file(
        &damaged,
        &small.dir.path().join("out.maif"),
        None,
    ));
    // The newest commit adds one record, and it is the damaged one: nothing after the
    // commit before it can be saved, so no key is needed.
    let recovered = error.expect("no key needed when nothing can be salvaged");
    assert_eq!(recovered.mode, RecoveryMode::CommittedState);
    assert_eq!(recovered.records_recovered, small.records.len() as u64 - 1);

    // Damage the first commit's segment instead: the records after it can be saved, with the
    // key only.
    let first = &small.commits[1];
    let mut bytes = small.bytes.clone();
    bytes[(first.header().segment_offset + 10) as usize] ^= 1;
    std::fs::write(&damaged, &bytes).expect("write");
    let out = small.dir.path().join("out2.maif");
    let error = common::block_on(recover_file(&damaged, &out, None)).expect_err("needs a key");
    let message = error.to_string();
    assert!(
        message.contains("--key") && message.contains("intact records"),
        "{message}"
    );
    let recovered =
        common::block_on(recover_file(&damaged, &out, Some(&common::test_key()))).expect("recover");
    assert_eq!(recovered.mode, RecoveryMode::Resigned);
    assert_eq!(recovered.records_salvaged, small.records.len() as u64);
    let check = common::block_on(verify(common::file_store(&out), VerifyOptions::default()))
        .expect("verify");
    assert!(check.valid, "{:?}", check.problems);
}

#[test]
fn unsupported_compression_is_a_clear_error() {
    let error = maif_store::format::compression::decompress(1, b"x", 1)
        .expect_err("zlib is not implemented");
    assert!(
        error.to_string().contains("unsupported compression code 1"),
        "{error}"
    );
}

#[test]
fn a_file_that_is_not_maif_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("random.bin");
    std::fs::write(&path, vec![0x42u8; 2000]).expect("write");
    let error =
        common::block_on(ArtifactReader::open(common::file_store(&path))).expect_err("not MAIF");
    assert!(error.to_string().contains("not a MAIF file"), "{error}");

    let small = small_artifact();
    let mut bytes = small.bytes.clone();
    bytes[4] = 4; // major version 4
    let len = bytes.len();
    bytes[len - 40] ^= 1; // and a damaged trailer: the version must still be what is reported
    std::fs::write(&path, &bytes).expect("write");
    let error =
        common::block_on(ArtifactReader::open(common::file_store(&path))).expect_err("version 4");
    assert!(
        error.to_string().contains("unsupported MAIF version 4.1"),
        "{error}"
    );
}

#[test]
fn an_encrypted_record_is_never_returned_as_plaintext() {
    let small = small_artifact();
    let first = small.records[0].entry;
    let mut bytes = small.bytes.clone();
    bytes[first.offset as usize + 23] = 1; // encryption code of block 0
    let path = small.dir.path().join("encrypted.maif");
    std::fs::write(&path, &bytes).expect("write");
    // Even a reader that skips per-read digests refuses it.
    let reader = common::block_on(ArtifactReader::open(common::file_store(&path)))
        .expect("open: the commit covers the index, not record bytes")
        .trust_records();
    let info = common::block_on(reader.blocks()).expect("list")[0];
    let error = common::block_on(reader.read(&info)).expect_err("encrypted");
    assert!(
        error.to_string().contains("unsupported encryption code 1"),
        "{error}"
    );
}

#[test]
fn a_recovered_finalized_artifact_stays_sealed_and_valid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sealed.maif");
    let mut writer = common::block_on(common::write_small_artifact(&path));
    common::block_on(writer.finalize()).expect("finalize");
    // An append that never completed left bytes after the sealed commit.
    let mut bytes = std::fs::read(&path).expect("read");
    bytes.extend_from_slice(&[0x42; 500]);
    let torn = dir.path().join("torn.maif");
    std::fs::write(&torn, &bytes).expect("write");
    let out = dir.path().join("recovered.maif");
    let report = common::block_on(recover_file(&torn, &out, None)).expect("recover");
    assert_eq!(report.mode, RecoveryMode::CommittedState);
    assert_eq!(report.bytes_discarded, 500);
    let check = common::block_on(verify(common::file_store(&out), VerifyOptions::default()))
        .expect("verify");
    assert!(check.valid, "{:?}", check.problems);
    let mut reopened = common::block_on(maif_store::ArtifactWriter::open(
        common::file_store(&out),
        common::test_key(),
    ))
    .expect("open");
    let refused = common::block_on(reopened.add(maif_store::NewBlock::new(
        maif_store::format::FourCC::TEXT,
        vec![0, 0, 0],
    )));
    assert!(
        matches!(refused, Err(maif_store::Error::Finalized)),
        "{refused:?}"
    );
}

/// Full verification checks signatures in the background, a chunk of records at a time and
/// per commit: a bad signature in any chunk (here the first record, one in the second
/// chunk of the second commit and the last one, over three commits of 5,000 blocks) is
/// still named at its record, and nothing else is reported.
#[test]
fn bad_signatures_are_named_at_their_records_whatever_chunk_they_are_in() {
    use maif_store::artifact::{ArtifactWriter, CreateOptions, NewBlock};
    use maif_store::format::FourCC;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("many.maif");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let placed = runtime.block_on(async {
        let store = common::file_store(&path);
        let mut writer =
            ArtifactWriter::create(store, common::test_key(), CreateOptions::default())
                .await
                .expect("create");
        let mut placed = Vec::new();
        for commit in 0..3u32 {
            let blocks = (0..5_000u32)
                .map(|n| NewBlock::new(FourCC::BINA, (commit * 5_000 + n).to_le_bytes().to_vec()))
                .collect();
            placed.extend(writer.add_batch(blocks).await.expect("add"));
            writer.commit().await.expect("commit");
        }
        placed
    });
    let mut bytes = std::fs::read(&path).expect("read");
    let bad = [0usize, 5_000 + 4_500, placed.len() - 1];
    for &n in &bad {
        let block = placed[n];
        // The signature is the record's last 64 bytes: nothing else covers it.
        let record_len = placed
            .get(n + 1)
            .map_or(0, |next| next.offset - block.offset);
        let end = if record_len > 0 {
            block.offset + record_len
        } else {
            // The last record ends where the next commit's segment starts.
            runtime
                .block_on(ArtifactReader::open(common::file_store(&path)))
                .expect("open")
                .commit()
                .header()
                .segment_offset
        };
        bytes[end as usize - 10] ^= 0x01;
    }
    std::fs::write(&path, &bytes).expect("write");
    for threads in [1, 2] {
        let options = VerifyOptions {
            threads,
            ..VerifyOptions::default()
        };
        let report = runtime
            .block_on(verify(common::file_store(&path), options))
            .expect("verify");
        assert!(!report.valid);
        let named: Vec<u64> = report.problems.iter().filter_map(|p| p.record).collect();
        let expected: Vec<u64> = bad.iter().map(|&n| placed[n].position).collect();
        assert_eq!(named, expected, "{:?}", report.problems);
        assert!(
            report
                .problems
                .iter()
                .all(|p| p.reason == "block signature does not verify"),
            "{:?}",
            report.problems
        );
        assert_eq!(report.signatures_checked, 15_000 + 4);
    }
}
