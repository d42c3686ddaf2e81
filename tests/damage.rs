//! Damage matrices: every single-byte flip is detected and located; every truncation gives a
//! clear error or a recovered prefix; hostile length fields never allocate beyond the input.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use maif_store::artifact::{RecoveryMode, VerifyOptions, recover_file, verify};
use maif_store::format::{IndexSection, MetadataSection, ProvenanceSection, RecordView};

/// Records the largest single allocation made while `TRACKING` is set.
struct PeakAllocator;
static TRACKING: AtomicBool = AtomicBool::new(false);
static LARGEST: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for PeakAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if TRACKING.load(Ordering::Relaxed) {
            LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if TRACKING.load(Ordering::Relaxed) {
            LARGEST.fetch_max(new_size, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: PeakAllocator = PeakAllocator;

fn small_artifact() -> (tempfile::TempDir, Vec<u8>, maif_store::store::Head) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("small.maif");
    common::block_on(common::write_small_artifact(&path));
    let bytes = std::fs::read(&path).expect("read");
    let head = common::block_on(common::file_store(&path).head()).expect("head");
    (dir, bytes, head)
}

#[test]
fn every_single_byte_flip_is_detected_and_located() {
    let (dir, original, head) = small_artifact();
    let path = dir.path().join("tampered.maif");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let options = VerifyOptions {
        threads: 1,
        ..VerifyOptions::default()
    };
    let mut undetected = Vec::new();
    let mut misattributed = Vec::new();
    for offset in 0..original.len() {
        let mut bytes = original.clone();
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
        if let Some((position, entry)) = head
            .index
            .entries
            .iter()
            .enumerate()
            .find(|(_, e)| (e.offset..e.offset + e.record_len).contains(&(offset as u64)))
        {
            let named = report
                .problems
                .iter()
                .any(|p| p.record == Some(position) && p.offset == Some(entry.offset));
            if !named {
                misattributed.push((offset, position, report.problems.clone()));
            }
        }
    }
    assert!(
        undetected.is_empty(),
        "flips not detected at offsets {undetected:?}"
    );
    assert!(
        misattributed.is_empty(),
        "{} flips inside records were not attributed to their block; first: {:?}",
        misattributed.len(),
        misattributed.first()
    );
}

#[test]
fn quick_verification_detects_flips_outside_the_records() {
    let (dir, original, head) = small_artifact();
    let path = dir.path().join("tampered.maif");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let quick = VerifyOptions {
        quick: true,
        threads: 1,
        ..VerifyOptions::default()
    };
    let records = head.trailer.records_offset as usize..head.trailer.provenance_offset as usize;
    for offset in (0..original.len()).filter(|o| !records.contains(o)) {
        let mut bytes = original.clone();
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
fn every_truncation_gives_a_clear_error_or_a_verified_prefix() {
    let (dir, original, head) = small_artifact();
    let key = common::test_key();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let truncated = dir.path().join("truncated.maif");
    let mut recovered_counts = Vec::new();
    for len in 0..original.len() {
        std::fs::write(&truncated, &original[..len]).expect("write");
        let store = common::file_store(&truncated);
        let error = runtime
            .block_on(store.head())
            .expect_err("a truncated file has no committed state");
        assert!(!error.to_string().is_empty());
        let report = runtime
            .block_on(verify(store, VerifyOptions::default()))
            .expect("verify reports");
        assert!(!report.valid, "truncation to {len} bytes verified");
        let out = dir.path().join(format!("recovered-{len}.maif"));
        match runtime.block_on(recover_file(&truncated, &out, Some(&key))) {
            Ok(recovered) => {
                assert_eq!(recovered.mode, RecoveryMode::Resigned);
                let check = runtime
                    .block_on(verify(common::file_store(&out), VerifyOptions::default()))
                    .expect("verify");
                assert!(
                    check.valid,
                    "recovered prefix of {len} bytes does not verify: {:?}",
                    check.problems
                );
                // Exactly the records that fit entirely in the prefix survive, byte for byte.
                let complete = head
                    .index
                    .entries
                    .iter()
                    .filter(|e| e.offset + e.record_len <= len as u64)
                    .count();
                assert_eq!(
                    recovered.records_recovered as usize, complete,
                    "prefix of {len} bytes"
                );
                let out_bytes = std::fs::read(&out).expect("read");
                let records_end = head
                    .index
                    .entries
                    .get(complete.wrapping_sub(1))
                    .map_or(head.trailer.records_offset, |e| e.offset + e.record_len)
                    as usize;
                assert_eq!(&out_bytes[..records_end], &original[..records_end]);
                recovered_counts.push(complete);
                std::fs::remove_file(&out).expect("cleanup");
            }
            Err(e) => {
                // Only a prefix without an intact header and metadata section is unrecoverable.
                assert!(
                    (len as u64) < head.trailer.records_offset,
                    "prefix of {len} bytes not recovered: {e}"
                );
                assert!(!e.to_string().is_empty());
            }
        }
    }
    assert_eq!(
        recovered_counts.iter().max().copied(),
        Some(head.index.entries.len())
    );
}

#[test]
fn recovery_without_a_key_names_what_it_needs() {
    let (dir, original, _) = small_artifact();
    let truncated = dir.path().join("cut.maif");
    std::fs::write(&truncated, &original[..original.len() - 10]).expect("write");
    let error = common::block_on(recover_file(&truncated, &dir.path().join("out.maif"), None))
        .expect_err("needs a key");
    let message = error.to_string();
    assert!(
        message.contains("--key") && message.contains("intact records"),
        "{message}"
    );
}

fn largest_allocation_during(f: impl FnOnce()) -> usize {
    LARGEST.store(0, Ordering::SeqCst);
    TRACKING.store(true, Ordering::SeqCst);
    f();
    TRACKING.store(false, Ordering::SeqCst);
    LARGEST.load(Ordering::SeqCst)
}

#[test]
fn hostile_length_fields_never_allocate_more_than_the_input() {
    // Index section claiming 2^40 entries in 100 bytes.
    let mut index = b"MAIFINDX".to_vec();
    index.extend_from_slice(&(1u64 << 40).to_le_bytes());
    index.resize(100, 0);
    let peak = largest_allocation_during(|| assert!(IndexSection::decode(&index).is_err()));
    assert!(peak <= 4096, "index decode allocated {peak} bytes");

    // Provenance section claiming u64::MAX entries.
    let mut provenance = b"MAIFPROV".to_vec();
    provenance.extend_from_slice(&u64::MAX.to_le_bytes());
    provenance.resize(300, 0);
    let peak =
        largest_allocation_during(|| assert!(ProvenanceSection::decode(&provenance).is_err()));
    assert!(peak <= 4096, "provenance decode allocated {peak} bytes");

    // A provenance entry whose details claim 1 MiB in a short input.
    let mut entry = b"MAIFPROV".to_vec();
    entry.extend_from_slice(&1u64.to_le_bytes());
    let mut header = vec![2u8, 0, 0, 0];
    header.extend_from_slice(&(1u32 << 20).to_le_bytes());
    header.resize(80, 0);
    entry.extend_from_slice(&header);
    entry.resize(entry.len() + 64, 0);
    let peak = largest_allocation_during(|| assert!(ProvenanceSection::decode(&entry).is_err()));
    assert!(peak <= 4096, "entry decode allocated {peak} bytes");

    // Metadata section claiming 4 GiB.
    let mut metadata = u32::MAX.to_le_bytes().to_vec();
    metadata.extend_from_slice(b"{}");
    let peak = largest_allocation_during(|| assert!(MetadataSection::decode(&metadata).is_err()));
    assert!(peak <= 4096, "metadata decode allocated {peak} bytes");

    // A record header claiming a 2^62-byte payload.
    let (_dir, original, head) = small_artifact();
    let first = head.index.entries[0];
    let mut record =
        original[first.offset as usize..(first.offset + first.record_len) as usize].to_vec();
    record[32..40].copy_from_slice(&(1u64 << 62).to_le_bytes());
    let peak = largest_allocation_during(|| assert!(RecordView::decode(&record).is_err()));
    assert!(peak <= 4096, "record decode allocated {peak} bytes");

    // A zstd block that declares a huge uncompressed size but holds a few bytes.
    let compressed = zstd::bulk::compress(b"tiny", 3).expect("zstd");
    let peak = largest_allocation_during(|| {
        assert!(maif_store::format::compression::decompress(2, &compressed, 1 << 40).is_err())
    });
    assert!(
        peak <= 4 << 20,
        "decompression allocated {peak} bytes for a 4-byte payload"
    );

    // And a zstd bomb that expands past its declared size stops at the declared size.
    let bomb = zstd::bulk::compress(&vec![0u8; 64 << 20], 19).expect("zstd");
    let peak = largest_allocation_during(|| {
        let error =
            maif_store::format::compression::decompress(2, &bomb, 1 << 20).expect_err("bomb");
        assert!(error.to_string().contains("beyond the declared"), "{error}");
    });
    assert!(
        peak <= 8 << 20,
        "bomb decompression allocated {peak} bytes with a 1 MiB bound"
    );
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
    let error = common::block_on(common::file_store(&path).head()).expect_err("not MAIF");
    assert!(error.to_string().contains("not a MAIF file"), "{error}");

    let (_keep, mut bytes, _) = small_artifact();
    bytes[4] = 4; // major version 4
    let len = bytes.len();
    bytes[len - 40] ^= 1; // and a damaged trailer: the version must still be what is reported
    std::fs::write(&path, &bytes).expect("write");
    let error = common::block_on(common::file_store(&path).head()).expect_err("version 4");
    assert!(
        error.to_string().contains("unsupported MAIF version 4.0"),
        "{error}"
    );
}

#[test]
fn an_encrypted_record_is_never_returned_as_plaintext() {
    let (dir, mut bytes, head) = small_artifact();
    let first = head.index.entries[0];
    bytes[first.offset as usize + 23] = 1; // encryption code of block 0
    let path = dir.path().join("encrypted.maif");
    std::fs::write(&path, &bytes).expect("write");
    // Even a reader that skips per-read digests refuses it.
    let reader = common::block_on(maif_store::ArtifactReader::open(common::file_store(&path)))
        .expect("open: the commit covers the index, not record bytes")
        .trust_records();
    let error = common::block_on(reader.read(&reader.blocks()[0])).expect_err("encrypted");
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
    let bytes = std::fs::read(&path).expect("read");
    let cut = dir.path().join("cut.maif");
    std::fs::write(&cut, &bytes[..bytes.len() - 10]).expect("write");
    let out = dir.path().join("recovered.maif");
    let report =
        common::block_on(recover_file(&cut, &out, Some(&common::test_key()))).expect("recover");
    assert_eq!(report.mode, RecoveryMode::Resigned);
    let check = common::block_on(verify(common::file_store(&out), VerifyOptions::default()))
        .expect("verify");
    assert!(check.valid, "{:?}", check.problems);
    let reopened = common::block_on(maif_store::ArtifactWriter::open(
        common::file_store(&out),
        common::test_key(),
    ));
    let mut reopened = reopened.expect("open");
    let refused = common::block_on(reopened.add(maif_store::NewBlock::new(
        maif_store::format::FourCC::TEXT,
        vec![0, 0, 0],
    )));
    assert!(
        matches!(refused, Err(maif_store::Error::Finalized)),
        "{refused:?}"
    );
}
