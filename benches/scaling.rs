//! How the cost of a commit and of a lookup grows with the artifact: single-block commits and
//! `open + cat` of one block on artifacts of 1k, 10k, 100k and 1M blocks of 1 KiB, on a
//! single file and on the object layout in a local folder (and on S3 through LocalStack, with
//! every request counted), each size compared with the smallest in the same run.
//!
//! `cargo bench --bench scaling` prints tables and writes `target/bench-scaling.json`.
//! `MAIF_SCALING_SIZES=1000,10000` picks the sizes; `MAIF_SCALING_S3=1000,100000` adds S3
//! runs at those sizes (LocalStack is found or started as the tests do);
//! `MAIF_SCALING_COMMITS` (default 200) is the number of commits measured per case.

#[allow(dead_code)]
#[path = "../tests/common/counting.rs"]
mod counting;
#[allow(dead_code)]
#[path = "../tests/common/s3.rs"]
mod s3;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use counting::CountingStore;
use maif_store::SigningKey;
use maif_store::artifact::{ArtifactReader, ArtifactWriter, ConvertOptions, NewBlock, convert};
use maif_store::format::FourCC;
use maif_store::format::digest::sha256;
use maif_store::store::{BlockStore, FileStore, ListingOrder, ObjectBackend};
use object_store::ObjectStore;
use object_store::list::{PaginatedListOptions, PaginatedListStore};
use object_store::path::Path as ObjectPath;
use serde_json::{Value, json};

const PAYLOAD: usize = 1024;
/// A record: header, payload, signature.
const RECORD: u64 = (64 + PAYLOAD + 64) as u64;

fn key() -> SigningKey {
    SigningKey::from_seed(&sha256(b"maif-store scaling bench"))
}

fn sizes(var: &str, default: &str) -> Vec<usize> {
    std::env::var(var)
        .unwrap_or_else(|_| default.to_string())
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().expect("a size"))
        .collect()
}

/// Builds an artifact of `n` blocks the way `maif import` does.
async fn build(store: Arc<dyn BlockStore>, n: usize) -> Vec<[u8; 16]> {
    let mut writer = ArtifactWriter::create(store, key(), Default::default())
        .await
        .expect("create");
    let mut ids = Vec::with_capacity(n);
    let mut left = n;
    let mut since_commit = 0;
    while left > 0 {
        let batch = left.min(1024);
        let blocks = (0..batch)
            .map(|i| {
                let mut payload = vec![0u8; PAYLOAD];
                payload[..8].copy_from_slice(&((n - left + i) as u64).to_le_bytes());
                NewBlock::new(FourCC::BINA, payload)
            })
            .collect();
        ids.extend(
            writer
                .add_batch(blocks)
                .await
                .expect("add")
                .iter()
                .map(|b| b.block_id),
        );
        left -= batch;
        since_commit += batch;
        if since_commit >= 10_000 {
            writer.commit().await.expect("commit");
            since_commit = 0;
        }
    }
    writer.commit().await.expect("commit");
    // As `maif import` does after loading an artifact: one run, a full checkpoint.
    writer.compact().await.expect("compact");
    ids
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn mean(times: &[Duration]) -> Duration {
    times.iter().sum::<Duration>() / times.len().max(1) as u32
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// How many bytes the store holds, measured by its own means.
type Size = Box<dyn Fn() -> u64>;

struct Case {
    layout: &'static str,
    n: usize,
    /// Open, add one block, commit, as `maif add` does (a new writer each time).
    add: Vec<Duration>,
    add_bytes: u64,
    /// A writer that stays open: one block per commit.
    commit: Vec<Duration>,
    commit_bytes: u64,
    merkle_hashes: u64,
    /// A new reader each time, then one block read.
    cat: Vec<Duration>,
}

async fn measure(
    layout: &'static str,
    n: usize,
    ids: &[[u8; 16]],
    store: &dyn Fn() -> Arc<dyn BlockStore>,
    size: &Size,
    commits: usize,
) -> Case {
    let payload = Bytes::from(vec![0xabu8; PAYLOAD]);
    let mut add = Vec::with_capacity(commits);
    let before = size();
    for _ in 0..commits / 2 {
        let start = Instant::now();
        let mut writer = ArtifactWriter::open(store(), key()).await.expect("open");
        writer
            .add(NewBlock::new(FourCC::BINA, payload.clone()))
            .await
            .expect("add");
        writer.commit().await.expect("commit");
        add.push(start.elapsed());
    }
    let add_bytes = size() - before;
    let mut writer = ArtifactWriter::open(store(), key()).await.expect("open");
    let hashes_before = writer.merkle_hashes();
    let before = size();
    let mut commit = Vec::with_capacity(commits);
    for _ in 0..commits {
        let start = Instant::now();
        writer
            .add(NewBlock::new(FourCC::BINA, payload.clone()))
            .await
            .expect("add");
        writer.commit().await.expect("commit");
        commit.push(start.elapsed());
    }
    let commit_bytes = size() - before;
    let merkle_hashes = writer.merkle_hashes() - hashes_before;
    let mut cat = Vec::new();
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ n as u64;
    for _ in 0..50 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let id = ids[(state % ids.len() as u64) as usize];
        let start = Instant::now();
        let reader = ArtifactReader::open(store()).await.expect("open");
        let block = reader.get(&id, None).await.expect("cat");
        std::hint::black_box(block.data.len());
        cat.push(start.elapsed());
    }
    Case {
        layout,
        n,
        add,
        add_bytes,
        commit,
        commit_bytes,
        merkle_hashes,
        cat,
    }
}

fn folder_size(dir: &std::path::Path) -> u64 {
    fn walk(dir: &std::path::Path) -> u64 {
        std::fs::read_dir(dir).map_or(0, |entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => walk(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
    }
    walk(dir)
}

fn report(cases: &[Case], commits: usize) -> Vec<Value> {
    println!(
        "{:<8} {:>9} | {:>11} {:>9} {:>10} | {:>11} {:>9} {:>10} {:>7} | {:>10} {:>9}",
        "layout",
        "blocks",
        "add med ms",
        "mean ms",
        "bytes-rec",
        "commit med",
        "mean ms",
        "bytes-rec",
        "hashes",
        "cat med ms",
        "mean ms"
    );
    let mut rows = Vec::new();
    for c in cases {
        let adds = c.add.len().max(1) as u64;
        let add_overhead = c.add_bytes as f64 / adds as f64 - RECORD as f64;
        let commit_overhead = c.commit_bytes as f64 / commits as f64 - RECORD as f64;
        println!(
            "{:<8} {:>9} | {:>11.2} {:>9.2} {:>10.0} | {:>11.2} {:>9.2} {:>10.0} {:>7.2} | {:>10.2} {:>9.2}",
            c.layout,
            c.n,
            ms(median(c.add.clone())),
            ms(mean(&c.add)),
            add_overhead,
            ms(median(c.commit.clone())),
            ms(mean(&c.commit)),
            commit_overhead,
            c.merkle_hashes as f64 / commits as f64,
            ms(median(c.cat.clone())),
            ms(mean(&c.cat)),
        );
        rows.push(json!({
            "layout": c.layout, "blocks": c.n,
            "add_median_ms": ms(median(c.add.clone())), "add_mean_ms": ms(mean(&c.add)),
            "add_bytes_beyond_record": add_overhead,
            "commit_median_ms": ms(median(c.commit.clone())), "commit_mean_ms": ms(mean(&c.commit)),
            "commit_bytes_beyond_record": commit_overhead,
            "merkle_hashes_per_commit": c.merkle_hashes as f64 / commits as f64,
            "cat_median_ms": ms(median(c.cat.clone())), "cat_mean_ms": ms(mean(&c.cat)),
        }));
    }
    // Each size against the smallest of its layout, measured in this run.
    for layout in ["file", "folder"] {
        let of: Vec<&Case> = cases.iter().filter(|c| c.layout == layout).collect();
        if let (Some(first), Some(last)) = (of.first(), of.last())
            && first.n != last.n
        {
            println!(
                "{layout}: commit mean at {} / at {}: {:.2} (target <= 1.5); add mean: {:.2}; cat median: {:.2}",
                last.n,
                first.n,
                mean(&last.commit).as_secs_f64() / mean(&first.commit).as_secs_f64(),
                mean(&last.add).as_secs_f64() / mean(&first.add).as_secs_f64(),
                median(last.cat.clone()).as_secs_f64() / median(first.cat.clone()).as_secs_f64(),
            );
        }
    }
    rows
}

/// Requests on S3 for an artifact of `n` blocks: `maif add`-style appends, a long-lived
/// writer, and open + cat, each counted, beside raw request rates in the same run.
async fn s3_case(bucket: &str, n: usize, file: Arc<dyn BlockStore>, ids: &[[u8; 16]]) -> Value {
    let counting = CountingStore::new_paginated(s3::client(bucket));
    let prefix = format!("scaling-{n}");
    let counted: Arc<dyn ObjectStore> = counting.clone();
    let lister: Arc<dyn PaginatedListStore> = counting.clone();
    // As `maif` builds it: the newest commit found with a one-key LIST.
    let backend = || -> Arc<dyn BlockStore> {
        Arc::new(
            ObjectBackend::new(
                counted.clone(),
                ObjectPath::from(prefix.as_str()),
                format!("s3://{bucket}/{prefix}"),
            )
            .with_listing_order(ListingOrder::Lexicographic)
            .with_first_key_listing(lister.clone()),
        )
    };
    let start = Instant::now();
    convert(file, backend(), ConvertOptions::default())
        .await
        .expect("to s3");
    let convert_seconds = start.elapsed().as_secs_f64();
    // Open + cat on the artifact as the import left it (one index run).
    let fresh_cats = cats(&backend, ids, &counting).await;
    counting.take();
    let payload = Bytes::from(vec![0xcdu8; 4096]);
    let adds = 100;
    let mut per_add = Vec::new();
    let start = Instant::now();
    for _ in 0..adds {
        let mut writer = ArtifactWriter::open(backend(), key()).await.expect("open");
        writer
            .add(NewBlock::new(FourCC::BINA, payload.clone()))
            .await
            .expect("add");
        writer.commit().await.expect("commit");
        per_add.push(counting.take());
    }
    let add_seconds = start.elapsed().as_secs_f64();
    let mut writer = ArtifactWriter::open(backend(), key()).await.expect("open");
    counting.take();
    let mut long_lived = Vec::new();
    for _ in 0..adds {
        writer
            .add(NewBlock::new(FourCC::BINA, payload.clone()))
            .await
            .expect("add");
        writer.commit().await.expect("commit");
        long_lived.push(counting.take());
    }
    let cats = cats(&backend, ids, &counting).await;
    // Raw requests one at a time, as `maif add` makes them, for the rate bound: a LIST of
    // the commits, a ranged GET of one, and two PUTs.
    let raw = s3::client(bucket);
    let commits_dir = format!("{prefix}/commits/");
    let start = Instant::now();
    for i in 0..adds {
        let page = raw
            .list_paginated(
                Some(&commits_dir),
                PaginatedListOptions {
                    max_keys: Some(1),
                    ..PaginatedListOptions::default()
                },
            )
            .await
            .expect("list");
        let newest = page.result.objects.first().expect("a commit");
        object_store::ObjectStoreExt::get_range(&*raw, &newest.location, 0..65536)
            .await
            .expect("raw get");
        for part in ["record", "commit"] {
            let key = ObjectPath::from(format!("raw-{n}/{i}-{part}"));
            object_store::ObjectStoreExt::put(
                &raw,
                &key,
                object_store::PutPayload::from(payload.clone()),
            )
            .await
            .expect("raw put");
        }
    }
    let raw_add_seconds = start.elapsed().as_secs_f64();
    let four = per_add.iter().filter(|r| r.total() <= 4).count();
    let add_requests: usize = per_add.iter().map(counting::Requests::total).sum();
    let two = long_lived.iter().filter(|r| r.total() == 2).count();
    let summary = |cats: &[counting::Requests]| {
        (
            cats.iter().map(|r| r.gets).max().unwrap_or(0),
            cats.iter().map(|r| r.get_bytes).max().unwrap_or(0),
            cats.iter().map(|r| r.lists).max().unwrap_or(0),
        )
    };
    let (fresh_gets, fresh_bytes, fresh_lists) = summary(&fresh_cats);
    let (later_gets, later_bytes, later_lists) = summary(&cats);
    println!(
        "s3 {n:>8}: convert {convert_seconds:.1}s; {adds} `maif add`s {:.1}/s against raw LIST+GET+2 PUT {:.1}/s (ratio {:.2}); {four}/{adds} adds with <= 4 requests, mean {:.2}; long-lived writer: {two}/{adds} commits with 2 requests; open + cat as imported: <= {fresh_gets} GETs, <= {fresh_bytes} bytes, {fresh_lists} LIST; after the {} commits: <= {later_gets} GETs, <= {later_bytes} bytes, {later_lists} LIST",
        adds as f64 / add_seconds,
        adds as f64 / raw_add_seconds,
        raw_add_seconds / add_seconds,
        add_requests as f64 / adds as f64,
        2 * adds,
    );
    json!({
        "layout": "s3", "blocks": n, "convert_seconds": convert_seconds,
        "adds_per_second": adds as f64 / add_seconds,
        "raw_add_requests_per_second": adds as f64 / raw_add_seconds,
        "add_ratio_to_raw": raw_add_seconds / add_seconds,
        "adds_with_at_most_4_requests": four, "adds": adds,
        "mean_requests_per_add": add_requests as f64 / adds as f64,
        "max_requests_per_add": per_add.iter().map(counting::Requests::total).max(),
        "long_lived_commits_with_2_requests": two,
        "cat_as_imported_gets_max": fresh_gets, "cat_as_imported_bytes_max": fresh_bytes,
        "cat_after_commits_gets_max": later_gets, "cat_after_commits_bytes_max": later_bytes,
    })
}

/// Open + cat of 20 blocks spread over the artifact, each counted.
async fn cats(
    backend: &dyn Fn() -> Arc<dyn BlockStore>,
    ids: &[[u8; 16]],
    counting: &CountingStore,
) -> Vec<counting::Requests> {
    let mut out = Vec::new();
    for id in ids.iter().step_by((ids.len() / 20).max(1)).take(20) {
        counting.take();
        let reader = ArtifactReader::open(backend()).await.expect("open");
        reader.get(id, None).await.expect("cat");
        out.push(counting.take());
    }
    out
}

fn main() {
    let commits: usize = std::env::var("MAIF_SCALING_COMMITS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(200);
    let quick = std::env::var_os("MAIF_BENCH_QUICK").is_some();
    let default_sizes = if quick {
        "1000,10000"
    } else {
        "1000,10000,100000,1000000"
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let mut cases = Vec::new();
    let mut rows = Vec::new();
    let s3_sizes = sizes("MAIF_SCALING_S3", "");
    let bucket = (!s3_sizes.is_empty()).then(|| s3::bucket("scaling"));
    for n in sizes("MAIF_SCALING_SIZES", default_sizes) {
        let path = dir.path().join(format!("{n}.maif"));
        let file = || -> Arc<dyn BlockStore> { Arc::new(FileStore::new(&path)) };
        let start = Instant::now();
        let ids = runtime.block_on(build(file(), n));
        eprintln!("built {n} blocks in {:.1}s", start.elapsed().as_secs_f64());
        let folder = dir.path().join(format!("{n}-objects"));
        std::fs::create_dir_all(&folder).expect("folder");
        let objects = || -> Arc<dyn BlockStore> {
            let local = object_store::local::LocalFileSystem::new_with_prefix(&folder)
                .expect("folder store");
            Arc::new(ObjectBackend::new(
                Arc::new(local),
                ObjectPath::from("a"),
                format!("file://{}", folder.display()),
            ))
        };
        let start = Instant::now();
        runtime
            .block_on(convert(file(), objects(), ConvertOptions::default()))
            .expect("to folder");
        eprintln!(
            "converted {n} blocks to a folder in {:.1}s",
            start.elapsed().as_secs_f64()
        );
        // Building leaves gigabytes of dirty pages; flush them so the first measured fsyncs
        // do not pay for the build.
        let _ = std::process::Command::new("sync").status();
        if let (Some(bucket), true) = (&bucket, s3_sizes.contains(&n)) {
            rows.push(runtime.block_on(s3_case(bucket, n, file(), &ids)));
        }
        let file_size: Size = {
            let path = path.clone();
            Box::new(move || std::fs::metadata(&path).map_or(0, |m| m.len()))
        };
        cases.push(runtime.block_on(measure("file", n, &ids, &file, &file_size, commits)));
        let folder_bytes: Size = {
            let folder = folder.clone();
            Box::new(move || folder_size(&folder))
        };
        cases.push(runtime.block_on(measure("folder", n, &ids, &objects, &folder_bytes, commits)));
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_dir_all(&folder);
    }
    cases.sort_by_key(|c| (c.layout, c.n));
    rows.extend(report(&cases, commits));
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-scaling.json");
    if let Err(e) = std::fs::write(
        &out,
        serde_json::to_string_pretty(&rows).unwrap_or_default(),
    ) {
        eprintln!("could not write {}: {e}", out.display());
    }
}
