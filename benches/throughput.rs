//! Throughput figures, each beside the physical bound it is judged against, measured in the
//! same run (absolute times vary between machines; the ratios are what to compare).
//!
//! `cargo bench --bench throughput` prints a table and writes `target/bench-throughput.json`.
//! Set `MAIF_BENCH_QUICK=1` for a smaller, faster run, and `MAIF_BENCH_ONLY=write,verify`
//! (any of `write`, `write-1k`, `write-1m`, `verify`, `read`, `merkle`) to run only those groups, e.g. under a
//! profiler.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::{Signature, Signer, SigningKey as DalekKey};
use maif_store::SigningKey;
use maif_store::artifact::{
    ArtifactReader, ArtifactWriter, CommitTicket, CreateOptions, NewBlock, VerifyOptions, verify,
};
use maif_store::format::FourCC;
use maif_store::format::digest::{SignedKind, sha256, signed_message};
use maif_store::format::merkle::merkle_root;
use maif_store::store::{BlockStore, FileStore};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

fn best_of<T>(runs: usize, f: impl FnMut() -> T) -> (Duration, T) {
    best_of_after(runs, || {}, f)
}

/// [`best_of`], running `setup` untimed before each run: deleting the last run's output,
/// which for a 200 MB file costs the kernel tens of milliseconds that are no part of what is
/// measured.
fn best_of_after<T>(
    runs: usize,
    mut setup: impl FnMut(),
    mut f: impl FnMut() -> T,
) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut last = None;
    for _ in 0..runs {
        setup();
        let start = Instant::now();
        let out = f();
        best = best.min(start.elapsed());
        last = Some(out);
    }
    (best, last.expect("at least one run"))
}

/// CPU time this process has used so far, all threads (user + system), from
/// `/proc/self/stat` (in clock ticks of 10 ms, Linux's `USER_HZ`); `None` elsewhere.
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// The least CPU time `f` takes over `runs` runs, `setup` running untimed before each.
fn least_cpu_of(runs: usize, mut setup: impl FnMut(), mut f: impl FnMut()) -> Option<Duration> {
    let mut least: Option<Duration> = None;
    for _ in 0..runs {
        setup();
        let before = process_cpu()?;
        f();
        let used = process_cpu()?.saturating_sub(before);
        least = Some(least.map_or(used, |l| l.min(used)));
    }
    least
}

fn rate(count: f64, time: Duration) -> f64 {
    count / time.as_secs_f64()
}

struct Figure {
    name: String,
    value: f64,
    unit: &'static str,
    bound_name: String,
    bound: f64,
    target: Option<f64>,
}

fn key() -> SigningKey {
    SigningKey::from_seed(&sha256(b"maif-store bench key"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
}

/// A bulk import, as `maif import` does it: blocks in batches of 1,024 (hashed and signed on
/// every core, while the previous batch is sent), a commit every 10,000 blocks or 64 MiB,
/// each made durable while the next blocks are signed (one commit in flight, waited for
/// before the next starts), and every commit durable at the end.
async fn write_artifact(path: &std::path::Path, block_len: usize, count: usize) {
    let store: Arc<dyn BlockStore> = Arc::new(FileStore::new(path));
    let options = CreateOptions {
        agent_id: "bench".into(),
        ..CreateOptions::default()
    };
    let mut writer = ArtifactWriter::create(store, key(), options)
        .await
        .expect("create");
    // One payload shared by every block: the import copies nothing it does not have to.
    let payload = bytes::Bytes::from(vec![0x5au8; block_len]);
    let per_commit = (10_000usize).min((64 << 20) / block_len).max(1);
    let mut since_commit = 0;
    let mut in_flight = None;
    let mut left = count;
    while left > 0 {
        let batch = left.min(1024).min(per_commit - since_commit);
        writer
            .add_batch(
                (0..batch)
                    .map(|_| NewBlock::new(FourCC::BINA, payload.clone()))
                    .collect(),
            )
            .await
            .expect("add");
        left -= batch;
        since_commit += batch;
        if since_commit == per_commit {
            let started = writer.start_commit().await.expect("commit");
            if let Some(previous) = in_flight.replace(started) {
                CommitTicket::durable(previous).await.expect("durable");
            }
            since_commit = 0;
        }
    }
    writer.commit().await.expect("commit");
    if let Some(previous) = in_flight {
        previous.durable().await.expect("durable");
    }
}

/// The 1 KiB import's figures: `import` (after an untimed `setup`) against two bounds on
/// every core, each one Ed25519 signature per block:
///
/// * raw signing, the target's bound: signatures made one at a time, as ed25519-dalek makes
///   them from the cached expanded secret (which saves a SHA-512 per signature over its
///   `sign`, so the import is credited nothing for its signer skipping that hash);
/// * the library's own signer, `SigningKey::sign_all` on chunks of 16 as the writer calls
///   it: the same signatures for about a fifth less work (one field inversion per chunk, not
///   per signature). The import against this one is what the format's own work per block
///   (hashing, index, writes) costs over signing alone.
///
/// The runs are interleaved, each round the import and then the bounds, and the best of
/// each is kept: on a shared virtual machine whose speed drifts by 10 % over seconds, a slow
/// spell then slows the import and its bounds alike instead of one of them.
fn import_1k_figures(
    threads: usize,
    count: usize,
    mut import: impl FnMut(),
    mut setup: impl FnMut(),
) -> Vec<Figure> {
    let signer = key();
    let digests: Vec<[u8; 32]> = (0..count)
        .map(|i| sha256(&(i as u64).to_le_bytes()))
        .collect();
    let sign = |part: &[[u8; 32]]| {
        for d in part {
            black_box(signer.sign(SignedKind::Block, d));
        }
    };
    let sign_batched = |part: &[[u8; 32]]| {
        for chunk in part.chunks(16) {
            black_box(signer.sign_all(SignedKind::Block, chunk));
        }
    };
    let (mut import_wall, mut sign_wall, mut batched_wall) =
        (Duration::MAX, Duration::MAX, Duration::MAX);
    let (mut import_cpu, mut sign_cpu) = (None::<Duration>, None::<Duration>);
    let least = |best: Option<Duration>, new: Option<Duration>| match (best, new) {
        (Some(b), Some(n)) => Some(b.min(n)),
        (b, n) => b.or(n),
    };
    for _ in 0..3 {
        setup();
        let (start, cpu) = (Instant::now(), process_cpu());
        import();
        import_wall = import_wall.min(start.elapsed());
        import_cpu = least(import_cpu, cpu_since(cpu));
        // On every core, by wall time, in chunks of 64 (see `on_every_core`).
        let chunks: Vec<&[[u8; 32]]> = digests.chunks(64).collect();
        let start = Instant::now();
        on_every_core(&chunks, threads, |part| sign(part));
        sign_wall = sign_wall.min(start.elapsed());
        let start = Instant::now();
        on_every_core(&chunks, threads, |part| sign_batched(part));
        batched_wall = batched_wall.min(start.elapsed());
        // On one core, by CPU time.
        let cpu = process_cpu();
        sign(&digests);
        sign_cpu = least(sign_cpu, cpu_since(cpu));
    }
    let mut figures = vec![
        Figure {
            name: "bulk import of 1 KiB blocks".into(),
            value: rate(count as f64, import_wall),
            unit: "blocks/s",
            bound_name: format!("raw Ed25519 signing, one signature per block, {threads} threads"),
            bound: rate(count as f64, sign_wall),
            target: Some(0.8),
        },
        Figure {
            name: "bulk import of 1 KiB blocks, against its own signer".into(),
            value: rate(count as f64, import_wall),
            unit: "blocks/s",
            bound_name: format!(
                "the library's batched Ed25519 signing (sign_all, 16 at a time), {threads} threads"
            ),
            bound: rate(count as f64, batched_wall),
            target: None,
        },
    ];
    // By CPU time, all threads: what the work costs, whatever the overlap (the wall-time
    // ratio is this one times how well the cores were kept busy).
    if let (Some(import_cpu), Some(sign_cpu)) = (import_cpu, sign_cpu) {
        figures.push(Figure {
            name: "bulk import of 1 KiB blocks, per CPU second".into(),
            value: rate(count as f64, import_cpu),
            unit: "blocks/cpu-s",
            bound_name: "raw Ed25519 signing, per CPU second".into(),
            bound: rate(count as f64, sign_cpu),
            target: None,
        });
    }
    figures
}

/// Runs `work` on every item on `threads` threads, each taking the next item from a shared
/// counter (as the library's own threads do): a fixed share per thread would wait for
/// whichever core the host slows.
fn on_every_core<T: Sync>(items: &[T], threads: usize, work: impl Fn(&T) + Sync) {
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                while let Some(item) =
                    items.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
                {
                    work(item);
                }
            });
        }
    });
}

/// CPU time used since `before` (a [`process_cpu`] reading).
fn cpu_since(before: Option<Duration>) -> Option<Duration> {
    Some(process_cpu()?.saturating_sub(before?))
}

fn write_figures(
    dir: &std::path::Path,
    quick: bool,
    wanted: &dyn Fn(&str) -> bool,
    figures: &mut Vec<Figure>,
) {
    let rt = runtime();
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    for (block_len, count) in [
        (1usize << 10, if quick { 20_000 } else { 200_000 }),
        (1 << 20, if quick { 50 } else { 500 }),
    ] {
        let total = (block_len * count) as f64;
        let label = if block_len == 1024 { "1 KiB" } else { "1 MiB" };
        let group = if block_len == 1024 {
            "write-1k"
        } else {
            "write-1m"
        };
        if !wanted("write") && !wanted(group) {
            continue;
        }
        let path = dir.join(format!("write-{block_len}.maif"));
        let remove_last = || {
            let _ = std::fs::remove_file(&path);
        };
        if block_len == 1024 {
            figures.extend(import_1k_figures(
                threads,
                count,
                || {
                    rt.block_on(write_artifact(&path, block_len, count));
                },
                remove_last,
            ));
            let _ = std::fs::remove_file(&path);
        } else {
            let (time, ()) = best_of_after(3, remove_last, || {
                rt.block_on(write_artifact(&path, block_len, count));
            });
            // The same import by CPU time, all threads: what the work costs, whatever the
            // overlap (wall time above is this divided by how well the cores were kept busy).
            let import_cpu = least_cpu_of(2, remove_last, || {
                rt.block_on(write_artifact(&path, block_len, count));
            });
            let _ = std::fs::remove_file(&path);
            let payload = vec![0x5au8; block_len];
            // Bound: SHA-256 over the same bytes on one core.
            let (sha_time, _) = best_of(3, || {
                for _ in 0..count {
                    black_box(Sha256::digest(black_box(&payload)));
                }
            });
            figures.push(Figure {
                name: format!("bulk import of {label} blocks"),
                value: rate(total, time) / 1e6,
                unit: "MB/s",
                bound_name: "raw SHA-256 of the same bytes, 1 core".into(),
                bound: rate(total, sha_time) / 1e6,
                target: Some(0.8),
            });
            if let Some(import_cpu) = import_cpu {
                figures.push(Figure {
                    name: format!("bulk import of {label} blocks, per CPU second"),
                    value: rate(total, import_cpu) / 1e6,
                    unit: "MB/cpu-s",
                    bound_name: "raw SHA-256 of the same bytes, per CPU second".into(),
                    bound: rate(total, sha_time) / 1e6,
                    target: None,
                });
            }
            // The other bound: making the same bytes durable at all (1 MiB writes, an
            // fdatasync every 64 MiB as the import commits), which no import can beat.
            let raw = dir.join("raw-write.bin");
            let remove_raw = || {
                let _ = std::fs::remove_file(&raw);
            };
            let (write_time, _) = best_of_after(3, remove_raw, || {
                use std::io::Write as _;
                let mut file = std::fs::File::create(&raw).expect("create");
                for n in 0..count {
                    file.write_all(&payload).expect("write");
                    if (n + 1) % 64 == 0 {
                        file.sync_data().expect("sync");
                    }
                }
                file.sync_data().expect("sync");
            });
            let _ = std::fs::remove_file(&raw);
            figures.push(Figure {
                name: format!("bulk import of {label} blocks"),
                value: rate(total, time) / 1e6,
                unit: "MB/s",
                bound_name: "raw write + fdatasync of the same bytes (the disk)".into(),
                bound: rate(total, write_time) / 1e6,
                target: None,
            });
        }
    }
}

fn verify_figures(dir: &std::path::Path, quick: bool, figures: &mut Vec<Figure>) {
    let rt = runtime();
    let count = if quick { 2_000 } else { 20_000 };
    let path = dir.join("verify.maif");
    let _ = std::fs::remove_file(&path);
    rt.block_on(write_artifact(&path, 1024, count));
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let options = VerifyOptions {
        threads,
        ..VerifyOptions::default()
    };
    let run_verify = || {
        rt.block_on(verify(Arc::new(FileStore::new(&path)), options))
            .expect("verify")
    };
    let report = run_verify();
    assert!(report.valid);
    let signatures = report.signatures_checked as f64;
    // Bound: ed25519-dalek's verify_batch on the same number of signatures, batches of 256
    // on every core (see `on_every_core`).
    let dalek = DalekKey::from_bytes(&[9u8; 32]);
    let public = dalek.verifying_key();
    let messages: Vec<Vec<u8>> = (0..report.signatures_checked as usize)
        .map(|i| signed_message(SignedKind::Block, &sha256(&(i as u64).to_le_bytes())))
        .collect();
    let sigs: Vec<Signature> = messages.iter().map(|m| dalek.sign(m)).collect();
    let batches: Vec<(&[Vec<u8>], &[Signature])> =
        messages.chunks(256).zip(sigs.chunks(256)).collect();
    let raw_verify = || {
        on_every_core(&batches, threads, |(m, sg)| {
            let refs: Vec<&[u8]> = m.iter().map(Vec::as_slice).collect();
            ed25519_dalek::verify_batch(&refs, sg, &vec![public; sg.len()]).expect("valid batch");
        });
    };
    // Interleaved, best of three each: a slow spell of the machine slows both alike.
    let (mut time, mut raw_time) = (Duration::MAX, Duration::MAX);
    for _ in 0..3 {
        let start = Instant::now();
        black_box(run_verify());
        time = time.min(start.elapsed());
        let start = Instant::now();
        raw_verify();
        raw_time = raw_time.min(start.elapsed());
    }
    figures.push(Figure {
        name: format!(
            "full verify, 1 KiB blocks ({count} blocks, {} signatures)",
            report.signatures_checked
        ),
        value: rate(signatures, time),
        unit: "signatures/s",
        bound_name: format!("raw verify_batch, {threads} threads"),
        bound: rate(signatures, raw_time),
        target: Some(0.7),
    });
    figures.push(Figure {
        name: "full verify, 1 KiB blocks".into(),
        value: rate(count as f64, time),
        unit: "blocks/s",
        bound_name: format!(
            "raw verify_batch of {:.3} signatures per block, {threads} threads",
            signatures / count as f64
        ),
        bound: rate(signatures, raw_time) * count as f64 / signatures,
        target: None,
    });
}

fn read_figures(dir: &std::path::Path, quick: bool, figures: &mut Vec<Figure>) {
    let rt = runtime();
    let count = if quick { 2_000 } else { 20_000 };
    let path = dir.join("read.maif");
    let _ = std::fs::remove_file(&path);
    rt.block_on(write_artifact(&path, 1024, count));
    let reads = if quick { 200_000 } else { 2_000_000 };
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let order: Vec<usize> = (0..reads)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % count as u64) as usize
        })
        .collect();
    for (label, trusted) in [
        ("checked (digest per read)", false),
        ("trusted (commit checked at open)", true),
    ] {
        let reader = rt
            .block_on(ArtifactReader::open(Arc::new(FileStore::new(&path))))
            .expect("open");
        let reader = if trusted {
            reader.trust_records()
        } else {
            reader
        };
        let blocks = rt.block_on(reader.blocks()).expect("list").to_vec();
        let (time, bytes) = best_of(3, || {
            rt.block_on(async {
                let mut bytes = 0usize;
                for &i in &order {
                    bytes += reader.read(&blocks[i]).await.expect("read").data.len();
                }
                bytes
            })
        });
        black_box(bytes);
        // Bound: copying the same 1 KiB payloads out of the same memory map.
        let image = std::fs::read(&path).expect("read file");
        let (raw_time, _) = best_of(3, || {
            let mut sink = [0u8; 1024];
            for &i in &order {
                let e = &blocks[i].entry;
                let start = (e.offset + 64) as usize;
                sink.copy_from_slice(&image[start..start + 1024]);
                black_box(&sink);
            }
        });
        figures.push(Figure {
            name: format!("random 1 KiB block read, {label}"),
            value: rate(reads as f64, time),
            unit: "reads/s",
            bound_name: "raw 1 KiB copies from memory at the same offsets".into(),
            bound: rate(reads as f64, raw_time),
            target: None,
        });
    }
}

fn merkle_figures(quick: bool, figures: &mut Vec<Figure>) {
    let sizes: &[usize] = if quick {
        &[10_000, 100_000]
    } else {
        &[10_000, 1_000_000]
    };
    for &n in sizes {
        let leaves: Vec<[u8; 32]> = (0..n).map(|i| sha256(&(i as u64).to_le_bytes())).collect();
        let (time, root) = best_of(5, || merkle_root(black_box(&leaves)));
        black_box(root);
        // Bound: the same number of SHA-256 calls over inputs of the same sizes (n leaf
        // hashes of 33 bytes, n - 1 node hashes of 65 bytes), with no tree around them.
        let (raw_time, _) = best_of(5, || {
            let mut acc = [0u8; 32];
            for leaf in &leaves {
                let mut h = Sha256::new();
                h.update([0u8]);
                h.update(leaf);
                acc = h.finalize().into();
            }
            for leaf in leaves.iter().skip(1) {
                let mut h = Sha256::new();
                h.update([1u8]);
                h.update(acc);
                h.update(leaf);
                acc = h.finalize().into();
            }
            black_box(acc)
        });
        figures.push(Figure {
            name: format!("Merkle root of {n} leaves"),
            value: rate((2 * n - 1) as f64, time),
            unit: "hashes/s",
            bound_name: "raw SHA-256 of the same 2n-1 inputs".into(),
            bound: rate((2 * n - 1) as f64, raw_time),
            target: Some(1.0 / 1.2),
        });
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing: both just run.
    let quick = std::env::var_os("MAIF_BENCH_QUICK").is_some();
    let dir = tempfile::tempdir().expect("tempdir");
    let only = std::env::var("MAIF_BENCH_ONLY").ok();
    let wanted = |group: &str| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|g| g == group))
    };
    let mut figures = Vec::new();
    write_figures(dir.path(), quick, &wanted, &mut figures);
    if wanted("verify") {
        verify_figures(dir.path(), quick, &mut figures);
    }
    if wanted("read") {
        read_figures(dir.path(), quick, &mut figures);
    }
    if wanted("merkle") {
        merkle_figures(quick, &mut figures);
    }

    println!(
        "{:<62} {:>14} {:<13} {:>14}  {:>6}  {:<8} bound",
        "figure", "value", "unit", "bound", "ratio", "target"
    );
    let mut rows: Vec<Value> = Vec::new();
    for f in &figures {
        let ratio = f.value / f.bound;
        let target = f.target.map_or("-".to_string(), |t| format!(">= {t:.2}"));
        println!(
            "{:<62} {:>14.0} {:<13} {:>14.0}  {:>6.3}  {:<8} {}",
            f.name, f.value, f.unit, f.bound, ratio, target, f.bound_name
        );
        rows.push(json!({
            "figure": f.name, "value": f.value, "unit": f.unit, "bound": f.bound,
            "bound_name": f.bound_name, "ratio": ratio, "target_ratio": f.target,
        }));
    }
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-throughput.json");
    if let Err(e) = std::fs::write(
        &out,
        serde_json::to_string_pretty(&rows).unwrap_or_default(),
    ) {
        eprintln!("could not write {}: {e}", out.display());
    }
}
