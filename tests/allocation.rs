//! Hostile length fields never allocate beyond the input. This test has a binary of its own
//! so that nothing else runs in its process while it measures: the allocator below counts
//! every allocation of every thread (a decoder that handed work to another thread would be
//! counted too), which would also count whatever another test allocated meanwhile.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use maif_store::format::Codec;
use maif_store::format::provenance::decode_entries;
use maif_store::format::run::RunHead;
use maif_store::format::{MetadataSection, RecordView, SegmentHead, SegmentHeader};

/// Records the largest single allocation made in this process while `TRACKING` is set.
struct PeakAllocator;
static TRACKING: AtomicBool = AtomicBool::new(false);
static LARGEST: AtomicUsize = AtomicUsize::new(0);

fn note_allocation(size: usize) {
    if TRACKING.load(Ordering::SeqCst) {
        LARGEST.fetch_max(size, Ordering::SeqCst);
    }
}

unsafe impl GlobalAlloc for PeakAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: PeakAllocator = PeakAllocator;

fn largest_allocation_during(f: impl FnOnce()) -> usize {
    LARGEST.store(0, Ordering::SeqCst);
    TRACKING.store(true, Ordering::SeqCst);
    f();
    TRACKING.store(false, Ordering::SeqCst);
    LARGEST.load(Ordering::SeqCst)
}

use common::small_artifact;

#[test]
fn hostile_length_fields_never_allocate_more_than_the_input() {
    // What makes the measurements below trustworthy: an allocation on another thread counts.
    let peak = largest_allocation_during(|| {
        std::thread::spawn(|| std::hint::black_box(vec![0u8; 1 << 20]).len())
            .join()
            .expect("thread");
    });
    assert!(
        peak >= 1 << 20,
        "a 1 MiB allocation on another thread was not seen: {peak}"
    );

    // Provenance entries claiming 2^40 entries in 100 bytes.
    let entries = vec![0u8; 100];
    let peak = largest_allocation_during(|| assert!(decode_entries(&entries, 1 << 40).is_err()));
    assert!(peak <= 4096, "provenance decode allocated {peak} bytes");

    // An entry whose details claim 1 MiB in a short input.
    let mut entry = vec![2u8, 0, 0, 0];
    entry.extend_from_slice(&(1u32 << 20).to_le_bytes());
    entry.resize(80, 0);
    let peak = largest_allocation_during(|| assert!(decode_entries(&entry, 1).is_err()));
    assert!(peak <= 4096, "entry decode allocated {peak} bytes");

    // A run head claiming 2^50 pages.
    let small = small_artifact();
    let newest = small.commits.last().expect("commits");
    let run = newest.header().newest_run.expect("run");
    let at = (run.segment_offset + run.part_offset) as usize;
    let mut head = small.bytes[at..at + run.head_len as usize].to_vec();
    head[8..16].copy_from_slice(&(1u64 << 50).to_le_bytes());
    head[16..24].copy_from_slice(&(1u64 << 41).to_le_bytes());
    let peak = largest_allocation_during(|| assert!(RunHead::decode(&head).is_err()));
    assert!(peak <= 4096, "run head decode allocated {peak} bytes");

    // A segment header claiming a 2^62-byte provenance part and 2^62 records.
    let offset = newest.header().segment_offset as usize;
    let mut segment = small.bytes[offset..newest.end() as usize].to_vec();
    segment[48..56].copy_from_slice(&(1u64 << 62).to_le_bytes());
    segment[80..88].copy_from_slice(&(1u64 << 62).to_le_bytes());
    let peak = largest_allocation_during(|| {
        assert!(SegmentHeader::decode(&segment[..352]).is_err());
        assert!(SegmentHead::decode_prefix(&segment).is_err());
    });
    assert!(peak <= 4096, "segment decode allocated {peak} bytes");

    // Metadata section claiming 4 GiB.
    let mut metadata = u32::MAX.to_le_bytes().to_vec();
    metadata.extend_from_slice(b"{}");
    let peak = largest_allocation_during(|| assert!(MetadataSection::decode(&metadata).is_err()));
    assert!(peak <= 4096, "metadata decode allocated {peak} bytes");

    // A record header claiming a 2^62-byte payload.
    let first = small.records[0].entry;
    let mut record =
        small.bytes[first.offset as usize..(first.offset + first.record_len) as usize].to_vec();
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
