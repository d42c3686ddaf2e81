//! Conversion to and from S3 (LocalStack), each figure as a ratio to raw `object_store`
//! requests for the same objects at the same concurrency, measured in the same run.
//!
//! `cargo bench --bench s3_convert` (finds or starts LocalStack like the tests do).
//! `MAIF_BENCH_QUICK=1` uses 1,000 records instead of 10,000. The 8 MiB case (about a
//! second a run) is the best of three runs of each side, alternating.

#[allow(dead_code)]
#[path = "../tests/common/s3.rs"]
mod s3;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt, TryStreamExt};
use maif_store::SigningKey;
use maif_store::artifact::{
    ArtifactReader, ArtifactWriter, ConvertOptions, CreateOptions, NewBlock, convert,
};
use maif_store::format::FourCC;
use maif_store::format::digest::sha256;
use maif_store::store::{BlockStore, FileStore, ListingOrder, ObjectBackend};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

async fn make_artifact(path: &std::path::Path, count: usize, len: usize) {
    let key = SigningKey::from_seed(&sha256(b"maif-store s3 bench"));
    let store: Arc<dyn BlockStore> = Arc::new(FileStore::new(path));
    let mut writer = ArtifactWriter::create(store, key, CreateOptions::default())
        .await
        .expect("create");
    for n in 0..count {
        let mut payload = vec![(n % 251) as u8; len];
        payload[..8].copy_from_slice(&(n as u64).to_le_bytes());
        writer
            .add(NewBlock::new(FourCC::BINA, payload))
            .await
            .expect("add");
    }
    writer.commit().await.expect("commit");
}

async fn raw_puts(
    store: &Arc<dyn ObjectStore>,
    prefix: &str,
    records: &[bytes::Bytes],
    concurrency: usize,
    mode: PutMode,
) -> Duration {
    let start = Instant::now();
    stream::iter(records.iter().enumerate())
        .map(|(i, body)| {
            let store = store.clone();
            let key = ObjectPath::from(format!("{prefix}/{i:08}"));
            let body = body.clone();
            let options = PutOptions {
                mode: mode.clone(),
                ..PutOptions::default()
            };
            async move { store.put_opts(&key, PutPayload::from(body), options).await }
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<_>>()
        .await
        .expect("raw put");
    start.elapsed()
}

async fn raw_gets(
    store: &Arc<dyn ObjectStore>,
    prefix: &str,
    count: usize,
    concurrency: usize,
) -> Duration {
    let start = Instant::now();
    stream::iter(0..count)
        .map(|i| {
            let store = store.clone();
            let key = ObjectPath::from(format!("{prefix}/{i:08}"));
            async move { store.get(&key).await?.bytes().await }
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<_>>()
        .await
        .expect("raw get");
    start.elapsed()
}

fn main() {
    let quick = std::env::var_os("MAIF_BENCH_QUICK").is_some();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let small_count = if quick { 1_000 } else { 10_000 };
    let mut cases: Vec<(&str, usize, usize, Vec<usize>)> = vec![
        ("4 KiB records", small_count, 4 << 10, vec![1, 8, 32]),
        ("8 MiB records (256 MiB)", 32, 8 << 20, vec![8]),
    ];
    if std::env::var_os("MAIF_BENCH_LARGE_ONLY").is_some() {
        cases.remove(0);
    }
    println!(
        "{:<26} {:>4} {:<24} {:>10} {:>10} {:>7}",
        "artifact", "conc", "direction", "convert s", "raw s", "ratio"
    );
    let mut rows = Vec::new();
    for (label, count, len, concurrencies) in cases {
        // A bucket per case: LocalStack lists a prefix by scanning the whole bucket (real S3
        // does not), so the objects of earlier cases would slow this case's LISTs.
        let bucket = s3::bucket(&format!("bench-{count}x{len}"));
        let store = s3::store(&bucket);
        let source = dir.path().join(format!("{count}x{len}.maif"));
        runtime.block_on(make_artifact(&source, count, len));
        let file: Arc<dyn BlockStore> = Arc::new(FileStore::new(&source));
        let blocks = runtime
            .block_on(async { ArtifactReader::open(file.clone()).await?.blocks().await })
            .expect("list");
        let records: Vec<bytes::Bytes> = blocks
            .iter()
            .map(|b| {
                runtime
                    .block_on(file.read_record(&b.entry))
                    .expect("record")
            })
            .collect();
        for concurrency in concurrencies {
            // Short runs are noisy (LocalStack shares the two cores): the 8 MiB case is run
            // three times, alternating conversion and raw requests, and each figure is the
            // best of its runs.
            let runs = if len >= 1 << 20 { 3 } else { 1 };
            let (mut to_s3, mut raw_put, mut raw_create, mut from_s3, mut raw_get) = (
                Duration::MAX,
                Duration::MAX,
                Duration::MAX,
                Duration::MAX,
                Duration::MAX,
            );
            for run in 0..runs {
                let prefix = format!("{count}x{len}-c{concurrency}-r{run}");
                let backend: Arc<dyn BlockStore> = Arc::new(
                    ObjectBackend::new(
                        store.clone(),
                        ObjectPath::from(prefix.as_str()),
                        format!("s3://{bucket}/{prefix}"),
                    )
                    .with_concurrency(concurrency)
                    .with_listing_order(ListingOrder::Lexicographic),
                );
                let options = ConvertOptions {
                    concurrency,
                    ..ConvertOptions::default()
                };
                let start = Instant::now();
                runtime
                    .block_on(convert(file.clone(), backend.clone(), options.clone()))
                    .expect("convert to s3");
                to_s3 = to_s3.min(start.elapsed());
                raw_put = raw_put.min(runtime.block_on(raw_puts(
                    &store,
                    &format!("raw-{prefix}"),
                    &records,
                    concurrency,
                    PutMode::Overwrite,
                )));
                // The converter writes create-only (If-None-Match: *): the same raw requests.
                raw_create = raw_create.min(runtime.block_on(raw_puts(
                    &store,
                    &format!("rawc-{prefix}"),
                    &records,
                    concurrency,
                    PutMode::Create,
                )));
                let back = dir.path().join(format!("back-{prefix}.maif"));
                let start = Instant::now();
                runtime
                    .block_on(convert(backend, Arc::new(FileStore::new(&back)), options))
                    .expect("convert from s3");
                from_s3 = from_s3.min(start.elapsed());
                raw_get = raw_get.min(runtime.block_on(raw_gets(
                    &store,
                    &format!("raw-{prefix}"),
                    records.len(),
                    concurrency,
                )));
                assert!(
                    std::fs::read(&back).expect("back") == std::fs::read(&source).expect("source")
                );
                let _ = std::fs::remove_file(&back);
            }
            for (direction, convert_time, raw_time) in [
                ("file->s3", to_s3, raw_put),
                ("file->s3 vs create-only", to_s3, raw_create),
                ("s3->file", from_s3, raw_get),
            ] {
                let ratio = raw_time.as_secs_f64() / convert_time.as_secs_f64();
                println!(
                    "{label:<26} {concurrency:>4} {direction:<24} {:>10.2} {:>10.2} {ratio:>7.3}",
                    convert_time.as_secs_f64(),
                    raw_time.as_secs_f64()
                );
                rows.push(serde_json::json!({
                    "artifact": label, "records": count, "record_len": len, "concurrency": concurrency,
                    "direction": direction, "convert_seconds": convert_time.as_secs_f64(),
                    "raw_seconds": raw_time.as_secs_f64(), "ratio": ratio, "target": 0.8,
                }));
            }
        }
    }
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-s3-convert.json");
    let _ = std::fs::write(out, serde_json::to_string_pretty(&rows).unwrap_or_default());
}
