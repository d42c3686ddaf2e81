//! The append-only commit layout's promises: a torn write anywhere in a commit leaves the
//! commit before it; bytes grow linearly with single-block commits; file -> objects -> file is
//! byte-identical after every commit; a stale writer never discards a commit it did not see;
//! the requests a single-block append and a lookup make on an object store.

mod common;

use std::sync::Arc;

use common::counting::CountingStore;
use maif_store::artifact::{
    ArtifactReader, ArtifactWriter, ConvertOptions, NewBlock, RecoveryMode, VerifyOptions, convert,
    recover_file, verify,
};
use maif_store::format::FourCC;
use maif_store::store::{BlockStore, ListingOrder, ObjectBackend};
use object_store::path::Path as ObjectPath;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// An artifact of three commits whose last adds two blocks; returns its bytes and where the
/// last commit begins (the end of the commit before it).
fn three_commits(path: &std::path::Path) -> (Vec<u8>, usize) {
    three_commits_sized(path, 3000)
}

fn three_commits_sized(path: &std::path::Path, payload: usize) -> (Vec<u8>, usize) {
    runtime().block_on(async {
        let mut writer = common::write_small_artifact(path).await;
        let before = writer.last_commit().end() as usize;
        writer
            .add(NewBlock::new(FourCC::BINA, vec![7u8; payload]))
            .await
            .expect("add");
        writer
            .add(NewBlock::new(FourCC::TEXT, b"\0\0\0last".to_vec()))
            .await
            .expect("add");
        writer.commit().await.expect("commit");
        (std::fs::read(path).expect("read"), before)
    })
}

/// A write torn at any byte of a commit (the file cut there), or at any sector of it (the
/// rest reads as zeros: sectors the disk never wrote), leaves the commit before it readable
/// with no write from the reader, and `maif recover` restores that commit byte for byte
/// without a key.
#[test]
fn a_torn_write_at_every_offset_of_a_commit_leaves_the_commit_before_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (bytes, before) = three_commits(&dir.path().join("full.maif"));
    let runtime = runtime();
    let torn = dir.path().join("torn.maif");
    let segment_end = bytes.len() - maif_store::format::TRAILER_LEN;
    for cut in before..bytes.len() {
        let zero_fill: &[bool] = if cut % 512 == 0 {
            &[false, true]
        } else {
            &[false]
        };
        for &zeros in zero_fill {
            let mut image = bytes[..cut].to_vec();
            if zeros {
                image.resize(bytes.len(), 0);
            }
            std::fs::write(&torn, &image).expect("write");
            let store = common::file_store(&torn);
            let reader = runtime
                .block_on(ArtifactReader::open(store.clone()))
                .unwrap_or_else(|e| panic!("cut at {cut} (zeros {zeros}): {e}"));
            // Once the whole segment is there, the commit is complete and signed: only its
            // trailer was lost, and readers use it.
            let complete = cut >= segment_end;
            let expected = if complete { bytes.len() } else { before };
            assert_eq!(
                reader.commit().end() as usize,
                expected,
                "cut at {cut} (zeros {zeros})"
            );
            assert_eq!(std::fs::read(&torn).expect("read"), image, "a reader wrote");
            let report = runtime
                .block_on(verify(store, VerifyOptions::default()))
                .expect("verify");
            assert!(
                report.valid,
                "cut at {cut} (zeros {zeros}): {:?}",
                report.problems
            );
            let out = dir.path().join("recovered.maif");
            let recovered = runtime
                .block_on(recover_file(&torn, &out, None))
                .unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
            assert_eq!(recovered.mode, RecoveryMode::CommittedState);
            assert_eq!(
                std::fs::read(&out).expect("read"),
                bytes[..expected],
                "cut at {cut} (zeros {zeros}): recovery must give the commit byte for byte"
            );
            std::fs::remove_file(&out).expect("cleanup");
        }
    }
}

/// A trailer that straddles a sector boundary can be torn by a power loss with either sector
/// written and the other not (zeros). That is an interrupted append, not damage: readers use
/// the complete, signed commit, `verify` warns but passes, the next writer writes the trailer
/// back, and recovery restores the commit. A trailer byte that is neither right nor zero is
/// damage.
#[test]
fn a_trailer_torn_at_a_sector_boundary_is_an_interrupted_append() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = runtime();
    let path = dir.path().join("t.maif");
    let trailer_len = maif_store::format::TRAILER_LEN;
    // Grow the last block until its commit's trailer straddles a 512-byte boundary.
    let (bytes, boundary) = (3000..3600)
        .find_map(|payload| {
            let _ = std::fs::remove_file(&path);
            let (bytes, _) = three_commits_sized(&path, payload);
            let start = bytes.len() - trailer_len;
            let boundary = start.div_ceil(512) * 512;
            (boundary > start + 8 && boundary < bytes.len() - 8).then_some((bytes, boundary))
        })
        .expect("a payload size whose trailer straddles a sector");
    let start = bytes.len() - trailer_len;
    for zeroed in [start..boundary, boundary..bytes.len()] {
        let mut image = bytes.clone();
        image[zeroed.clone()].fill(0);
        std::fs::write(&path, &image).expect("write");
        let store = common::file_store(&path);
        let reader = runtime
            .block_on(ArtifactReader::open(store.clone()))
            .unwrap_or_else(|e| panic!("zeroed {zeroed:?}: {e}"));
        assert_eq!(reader.commit().end() as usize, bytes.len());
        let report = runtime
            .block_on(verify(store.clone(), VerifyOptions::default()))
            .expect("verify");
        assert!(report.valid, "zeroed {zeroed:?}: {:?}", report.problems);
        assert!(
            report
                .warnings
                .iter()
                .any(|w| w.reason.contains("no complete trailer")),
            "{:?}",
            report.warnings
        );
        let out = dir.path().join("recovered.maif");
        runtime
            .block_on(recover_file(&path, &out, None))
            .unwrap_or_else(|e| panic!("zeroed {zeroed:?}: {e}"));
        assert_eq!(std::fs::read(&out).expect("read"), bytes);
        std::fs::remove_file(&out).expect("cleanup");
        runtime.block_on(async {
            let mut writer = ArtifactWriter::open(store.clone(), common::test_key())
                .await
                .expect("open writer");
            writer
                .add(NewBlock::new(FourCC::TEXT, b"\0\0\0next".to_vec()))
                .await
                .expect("add");
            writer.commit().await.expect("commit");
        });
        let after = std::fs::read(&path).expect("read");
        assert_eq!(
            after[..bytes.len()],
            bytes[..],
            "the trailer was written back"
        );
        let report = runtime
            .block_on(verify(store, VerifyOptions::default()))
            .expect("verify");
        assert!(report.valid && report.warnings.is_empty(), "{report:?}");
    }
    // A trailer byte that is neither what belongs there nor zero: damage.
    let mut image = bytes.clone();
    image[start..boundary].fill(0);
    image[boundary + 2] ^= 0x40;
    std::fs::write(&path, &image).expect("write");
    let report = runtime
        .block_on(verify(common::file_store(&path), VerifyOptions::default()))
        .expect("verify");
    assert!(!report.valid, "{report:?}");
}

/// Single-block commits write the record, a segment of a few hundred bytes and, amortized,
/// the index runs: the file grows linearly, never by rewriting what is there.
#[test]
fn two_thousand_single_block_commits_grow_the_file_linearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("linear.maif");
    const COMMITS: usize = 2000;
    const PAYLOAD: usize = 1024;
    let sizes = runtime().block_on(async {
        let mut writer = ArtifactWriter::create(
            common::file_store(&path),
            common::test_key(),
            Default::default(),
        )
        .await
        .expect("create");
        let mut sizes = vec![std::fs::metadata(&path).expect("size").len()];
        for n in 0..COMMITS {
            writer
                .add(NewBlock::new(FourCC::BINA, vec![(n % 251) as u8; PAYLOAD]))
                .await
                .expect("add");
            writer.commit().await.expect("commit");
            sizes.push(std::fs::metadata(&path).expect("size").len());
        }
        sizes
    });
    let record = (64 + PAYLOAD + 64) as u64;
    let growth: Vec<u64> = sizes.windows(2).map(|w| w[1] - w[0]).collect();
    // Every commit adds its record and at least a segment: nothing is rewritten in place.
    assert!(growth.iter().all(|g| *g > record));
    // Linear: the first and the last thousand commits cost the same to within the merges the
    // run policy makes, and the average stays within the record plus 2 KiB.
    let first: u64 = growth[..COMMITS / 2].iter().sum();
    let last: u64 = growth[COMMITS / 2..].iter().sum();
    let per_commit = |total: u64| total as f64 / (COMMITS / 2) as f64 - record as f64;
    println!(
        "overhead per single-block commit: {:.0} bytes (first 1000), {:.0} bytes (last 1000)",
        per_commit(first),
        per_commit(last)
    );
    assert!(
        per_commit(first) <= 2048.0 && per_commit(last) <= 2048.0,
        "more than the record plus 2 KiB per commit: {:.0} and {:.0}",
        per_commit(first),
        per_commit(last)
    );
    assert!(
        (last as f64) < 1.25 * first as f64,
        "the second thousand commits wrote {last} bytes, the first {first}: not linear"
    );
    let report = runtime()
        .block_on(verify(common::file_store(&path), VerifyOptions::default()))
        .expect("verify");
    assert!(report.valid, "{:?}", report.problems);
    assert_eq!(report.record_count, COMMITS as u64);
}

/// The object layout mirrors the file one to one: converting to objects and back gives the
/// same bytes after every commit, and each conversion copies only what is new.
#[test]
fn file_to_objects_to_file_is_byte_identical_after_each_of_fifty_commits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("grow.maif");
    let memory = Arc::new(object_store::memory::InMemory::new());
    let objects: Arc<dyn BlockStore> = Arc::new(
        ObjectBackend::new(memory, ObjectPath::from("mirror"), "memory://test/mirror")
            .with_listing_order(ListingOrder::Lexicographic),
    );
    runtime().block_on(async {
        let mut writer = common::write_small_artifact(&path).await;
        for n in 0..50u32 {
            let blocks = 1 + (n % 4) as usize;
            for b in 0..blocks {
                let block = NewBlock::new(FourCC::BINA, vec![(n + b as u32) as u8; 100 + 37 * b]);
                if n % 7 == 3 && b == 0 {
                    writer.update([2; 16], block).await.expect("update");
                } else {
                    writer.add(block).await.expect("add");
                }
            }
            writer.commit().await.expect("commit");
            let report = convert(
                common::file_store(&path),
                objects.clone(),
                ConvertOptions::default(),
            )
            .await
            .expect("to objects");
            assert!(
                n == 0 || report.records_copied == blocks as u64,
                "commit {n}: copied {} records, {blocks} are new",
                report.records_copied
            );
            let back = dir.path().join(format!("back-{n}.maif"));
            convert(
                objects.clone(),
                common::file_store(&back),
                ConvertOptions::default(),
            )
            .await
            .expect("back");
            assert!(
                std::fs::read(&path).expect("read") == std::fs::read(&back).expect("read"),
                "commit {n}: file -> objects -> file differs"
            );
            std::fs::remove_file(&back).expect("cleanup");
        }
    });
}

/// A writer that read the file before another writer's commit lost its trailer (the other
/// writer crashed between its two syncs) must not discard that commit: it rebases on it.
#[test]
fn a_stale_writer_never_discards_a_commit_whose_trailer_was_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("shared.maif");
    let runtime = runtime();
    runtime.block_on(common::write_small_artifact(&path));
    let mut stale = runtime
        .block_on(ArtifactWriter::open(
            common::file_store(&path),
            common::test_key(),
        ))
        .expect("open stale");
    let lost = runtime.block_on(async {
        let mut other = ArtifactWriter::open(common::file_store(&path), common::test_key())
            .await
            .expect("open");
        let placed = other
            .add(NewBlock::new(FourCC::TEXT, b"\0\0\0other".to_vec()))
            .await
            .expect("add");
        other.commit().await.expect("commit");
        placed
    });
    // The other writer's trailer never reached the disk.
    let bytes = std::fs::read(&path).expect("read");
    std::fs::write(
        &path,
        &bytes[..bytes.len() - maif_store::format::TRAILER_LEN],
    )
    .expect("cut");
    let mine = runtime.block_on(async {
        let placed = stale
            .add(NewBlock::new(FourCC::TEXT, b"\0\0\0stale".to_vec()))
            .await
            .expect("add");
        stale.commit().await.expect("commit");
        placed
    });
    let reader = runtime
        .block_on(ArtifactReader::open(common::file_store(&path)))
        .expect("open");
    for block in [lost.block_id, mine.block_id] {
        runtime
            .block_on(reader.get(&block, None))
            .expect("both writers' blocks are there");
    }
    let report = runtime
        .block_on(verify(common::file_store(&path), VerifyOptions::default()))
        .expect("verify");
    assert!(report.valid && report.warnings.is_empty(), "{report:?}");
}

/// A damaged trailer over a commit whose records were also altered is damage, not an
/// interrupted append: readers refuse rather than show the older state, and writers refuse
/// rather than truncate the acknowledged commit.
#[test]
fn a_damaged_trailer_over_an_altered_commit_is_refused_not_rolled_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("d.maif");
    let (mut bytes, _) = three_commits(&path);
    let len = bytes.len();
    bytes[len - 40] ^= 0x10; // the trailer
    let reader = runtime()
        .block_on(ArtifactReader::open(common::file_store(&path)))
        .expect("open");
    let last = runtime().block_on(reader.blocks()).expect("list")[6].entry;
    bytes[(last.offset + 70) as usize] ^= 0x10; // a record of the same commit
    std::fs::write(&path, &bytes).expect("write");
    let store = common::file_store(&path);
    assert!(
        runtime()
            .block_on(ArtifactReader::open(store.clone()))
            .is_err()
    );
    assert!(
        runtime()
            .block_on(ArtifactWriter::open(store.clone(), common::test_key()))
            .is_err()
    );
    let report = runtime()
        .block_on(verify(store, VerifyOptions::default()))
        .expect("verify");
    assert!(!report.valid);
    assert_eq!(
        std::fs::read(&path).expect("read"),
        bytes,
        "nothing was truncated"
    );
}

/// Blocks cannot follow a finalize entry, not even in the commit that finalizes.
#[test]
fn nothing_follows_a_finalize_in_its_own_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("f.maif");
    runtime().block_on(async {
        let mut writer = common::write_small_artifact(&path).await;
        writer
            .record_event(maif_store::format::Action::Finalize, Default::default())
            .await
            .expect("event");
        let refused = writer.add(NewBlock::new(FourCC::TEXT, vec![0, 0, 0])).await;
        assert!(
            matches!(refused, Err(maif_store::Error::Finalized)),
            "{refused:?}"
        );
        writer.commit().await.expect("commit");
        let report = verify(common::file_store(&path), VerifyOptions::default())
            .await
            .expect("verify");
        assert!(report.valid, "{:?}", report.problems);
    });
}

/// Writes the small artifact through `backend`, then makes `adds` single-block commits, each
/// by a writer of its own (as `maif add` does), and returns each one's requests.
fn requests_per_single_block_add(
    runtime: &tokio::runtime::Runtime,
    counting: &CountingStore,
    backend: &dyn Fn() -> Arc<dyn BlockStore>,
    adds: u8,
) -> Vec<common::counting::Requests> {
    runtime.block_on(common::write_small_artifact_to(backend()));
    let mut per_add = Vec::new();
    for n in 0..adds {
        counting.take();
        runtime.block_on(async {
            let mut writer = ArtifactWriter::open(backend(), common::test_key())
                .await
                .expect("open");
            writer
                .add(NewBlock::new(FourCC::TEXT, vec![0, 0, 0, n]))
                .await
                .expect("add");
            writer.commit().await.expect("commit");
        });
        per_add.push(counting.take());
    }
    per_add
}

/// Requests on an object store that lists in order (S3, memory), counted: a single-block
/// append is a LIST, a GET of the newest segment's head, the record PUT and the commit PUT;
/// a writer that stays open makes only the two PUTs; opening and reading one block is a LIST
/// and a few GETs.
#[test]
fn requests_of_an_append_and_of_a_lookup_on_an_object_store() {
    let counting = CountingStore::new(Arc::new(object_store::memory::InMemory::new()));
    let backend = || -> Arc<dyn BlockStore> {
        Arc::new(
            ObjectBackend::new(counting.clone(), ObjectPath::from("a"), "memory://count/a")
                .with_listing_order(ListingOrder::Lexicographic),
        )
    };
    let runtime = runtime();
    let per_add = requests_per_single_block_add(&runtime, &counting, &backend, 64);
    let plain = per_add
        .iter()
        .filter(|r| r.lists == 1 && r.gets == 1 && r.puts == 2 && r.heads == 0 && r.deletes == 0)
        .count();
    let mean = per_add.iter().map(|r| r.total()).sum::<usize>() as f64 / per_add.len() as f64;
    println!("64 single-block adds: {plain} made exactly 4 requests; mean {mean:.2}");
    // Only the adds whose run absorbs runs outside the newest segment read more: one GET
    // per absorbed run. Four of a kind happen every 4^k-th append for tier k >= 1.
    for r in &per_add {
        assert!(
            r.lists == 1 && r.puts == 2 && r.heads == 0 && r.deletes == 0 && r.gets >= 1,
            "{r:?}"
        );
    }
    assert!(plain >= 48, "only {plain} of 64 adds made 4 requests");
    assert!(mean <= 4.5, "mean {mean:.2} requests per add");

    // A long-lived writer: two PUTs per commit, reads only when it absorbs runs it did not
    // write itself.
    let mut writer = runtime
        .block_on(ArtifactWriter::open(backend(), common::test_key()))
        .expect("open");
    counting.take();
    let mut long_lived = Vec::new();
    for n in 0..64u8 {
        runtime.block_on(async {
            writer
                .add(NewBlock::new(FourCC::TEXT, vec![0, 0, 0, n]))
                .await
                .expect("add");
            writer.commit().await.expect("commit");
        });
        long_lived.push(counting.take());
    }
    let two = long_lived
        .iter()
        .filter(|r| r.total() == 2 && r.puts == 2)
        .count();
    println!("64 commits of a long-lived writer: {two} made exactly 2 requests");
    assert!(two >= 60, "{long_lived:?}");

    // Open and read one block of the first commit (the oldest run): a LIST and a handful of
    // GETs, a few kilobytes.
    counting.take();
    runtime.block_on(async {
        let reader = ArtifactReader::open(backend()).await.expect("open");
        let block = reader.get(&[3; 16], None).await.expect("get");
        assert_eq!(block.info.version, 1);
    });
    let lookup = counting.take();
    let runs = runtime
        .block_on(async { ArtifactReader::open(backend()).await?.live_runs().await })
        .expect("runs")
        .len();
    println!("open + cat: {lookup:?} with {runs} live runs");
    assert_eq!(lookup.lists, 1);
    // The newest segment's head, the base, then at most a head and a page per live run, and
    // the record.
    assert!(lookup.gets <= 3 + 2 * runs, "{lookup:?}");
}

/// A local folder lists in no order, so the newest commit is found from a hint object and
/// HEAD probes: a single-block add is 7 requests (GET hint, HEAD the hinted commit, HEAD the
/// next number, GET the newest commit, PUT the record, PUT the commit, PUT the hint), as
/// OBJECT-LAYOUT.md says, except when runs outside the newest segment are merged.
#[test]
fn requests_of_an_append_on_a_local_folder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let folder = object_store::local::LocalFileSystem::new_with_prefix(dir.path()).expect("folder");
    let counting = CountingStore::new(Arc::new(folder));
    let backend = || -> Arc<dyn BlockStore> {
        Arc::new(
            ObjectBackend::new(counting.clone(), ObjectPath::from("a"), "file:///count/a")
                .with_listing_order(ListingOrder::Unordered),
        )
    };
    let runtime = runtime();
    let per_add = requests_per_single_block_add(&runtime, &counting, &backend, 32);
    let seven = per_add
        .iter()
        .filter(|r| r.gets == 2 && r.heads == 2 && r.puts == 3 && r.lists == 0)
        .count();
    println!("32 single-block adds on a folder: {seven} made exactly 7 requests");
    for r in &per_add {
        assert!(
            r.lists == 0 && r.heads == 2 && r.puts == 3 && r.deletes == 0,
            "{r:?}"
        );
    }
    assert!(seven >= 24, "{per_add:?}");
}
