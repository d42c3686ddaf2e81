//! Migrating legacy layout-A blocks from S3 (LocalStack), as blocks/s and as a ratio to the
//! raw HeadObject+GetObject rate for the same objects at the same concurrency, measured in
//! the same run (raw before and after each migration; the mean is the bound).
//!
//! `cargo bench -p maif-migrate --bench migrate_s3` (finds or starts LocalStack like the
//! tests). `MAIF_BENCH_QUICK=1` uses 1,000 blocks instead of 10,000.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::Instant;

use futures::{StreamExt as _, TryStreamExt as _};
use maif_migrate::hmac::LegacyKey;
use maif_migrate::migrate::{MigrateOptions, migrate};
use maif_migrate::s3::S3Source;
use maif_store::SigningKey;
use maif_store::store::{BlockStore, FileStore};
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, ObjectStore};

use common::legacy_gen::{HMAC_KEY, generate, index_json, upload};
use common::s3;

/// HEAD then GET every key, `concurrency` objects at a time.
async fn raw_head_get(store: &Arc<dyn ObjectStore>, keys: &[String], concurrency: usize) -> f64 {
    let started = Instant::now();
    futures::stream::iter(keys)
        .map(|key| async move {
            let path = ObjectPath::from(key.as_str());
            let head = store
                .get_opts(
                    &path,
                    GetOptions {
                        head: true,
                        ..GetOptions::default()
                    },
                )
                .await?;
            let body = store
                .get_opts(
                    &path,
                    GetOptions {
                        if_match: head.meta.e_tag.clone(),
                        ..GetOptions::default()
                    },
                )
                .await?
                .bytes()
                .await?;
            Ok::<_, object_store::Error>(body.len())
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<_>>()
        .await
        .expect("raw HEAD+GET");
    started.elapsed().as_secs_f64()
}

async fn migrate_once(
    store: Arc<dyn ObjectStore>,
    out: &std::path::Path,
    concurrency: usize,
) -> (f64, usize) {
    let started = Instant::now();
    let source = S3Source {
        store,
        prefix: "legacy".into(),
        url: "s3://bench/legacy".into(),
        concurrency,
    };
    let artifact = maif_migrate::s3::read(&source, None, &|_| {})
        .await
        .expect("read");
    let destination: Arc<dyn BlockStore> = Arc::new(FileStore::new(out));
    let report = migrate(
        artifact,
        Some(&source),
        Some(destination),
        MigrateOptions {
            key: Some(SigningKey::from_seed(&[9u8; 32])),
            legacy_keys: vec![LegacyKey {
                label: "bench".into(),
                key: HMAC_KEY.to_vec(),
            }],
            concurrency,
            ..MigrateOptions::default()
        },
    )
    .await
    .expect("migrate");
    assert_eq!(report.exit_code(), 0);
    (started.elapsed().as_secs_f64(), report.counts.verified)
}

fn main() {
    let count = if std::env::var_os("MAIF_BENCH_QUICK").is_some() {
        1_000
    } else {
        10_000
    };
    let bucket = s3::bucket("migrate-bench");
    let store = s3::store(&bucket);
    let blocks = generate(count, Some(4096));
    let indexed: Vec<_> = blocks.iter().collect();
    upload(
        &store,
        "legacy",
        &blocks,
        Some(index_json("legacy", &indexed, &[])),
    );
    let keys: Vec<String> = blocks
        .iter()
        .map(|b| format!("legacy/data/{}", b.uuid))
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    println!("{count} legacy blocks of 4 KiB (layout A v1, chained, HMAC-signed) from LocalStack");
    println!(
        "{:>4} {:>10} {:>10} {:>11} {:>11} {:>7}",
        "conc", "migrate s", "blocks/s", "raw HEAD+GET s", "raw obj/s", "ratio"
    );
    for concurrency in [8usize, 16, 32] {
        let before = runtime.block_on(raw_head_get(&store, &keys, concurrency));
        let out = dir.path().join(format!("out-{concurrency}.maif"));
        let (seconds, verified) = runtime.block_on(migrate_once(store.clone(), &out, concurrency));
        assert_eq!(verified, count);
        let after = runtime.block_on(raw_head_get(&store, &keys, concurrency));
        let raw = (before + after) / 2.0;
        println!(
            "{concurrency:>4} {seconds:>10.2} {:>10.0} {raw:>14.2} {:>11.0} {:>7.2}",
            count as f64 / seconds,
            count as f64 / raw,
            raw / seconds
        );
    }
}
