//! S3 through a fault-injecting proxy (`tests/common/fault_proxy.rs`) in front of LocalStack:
//! the proxy itself is transparent when told to be, each fault kind does to a real S3 client
//! what it claims, and `maif convert` file -> S3 -> file stays byte-identical under 20 % mixed
//! faults on every request, in one run each way.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fault_proxy::{Fault, FaultProxy, Filter, Policy};
use common::s3;
use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{BackoffConfig, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};

const MIB: usize = 1024 * 1024;

/// Incompressible, position-dependent bytes, so that a shifted or mixed-up copy never matches.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// An S3 client for `bucket` that talks to `endpoint`, retrying at most `max_retries` times
/// with short backoffs (so that a test about one fault sees that fault, not its retries).
fn client_at(endpoint: &str, bucket: &str, max_retries: usize) -> Arc<AmazonS3> {
    Arc::new(
        AmazonS3Builder::new()
            .with_endpoint(endpoint)
            .with_bucket_name(bucket)
            .with_region("us-east-1")
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .with_allow_http(true)
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(10),
                    max_backoff: Duration::from_millis(100),
                    base: 2.0,
                },
                max_retries,
                retry_timeout: Duration::from_secs(30),
            })
            .build()
            .expect("S3 client"),
    )
}

async fn get_all(store: &AmazonS3, key: &str) -> object_store::Result<Vec<u8>> {
    Ok(store
        .get(&ObjectPath::from(key))
        .await?
        .bytes()
        .await?
        .to_vec())
}

async fn list_keys(store: &AmazonS3, prefix: &str) -> Vec<String> {
    let mut keys: Vec<String> = store
        .list(Some(&ObjectPath::from(prefix)))
        .map_ok(|meta| meta.location.to_string())
        .try_collect()
        .await
        .expect("list");
    keys.sort();
    keys
}

/// Compares without printing megabytes: lengths and the first differing offset.
fn assert_same_bytes(actual: &[u8], expected: &[u8], what: &str) {
    if actual != expected {
        let first_difference = actual
            .iter()
            .zip(expected)
            .position(|(a, e)| a != e)
            .unwrap_or(actual.len().min(expected.len()));
        panic!(
            "{what}: {} bytes, expected {}; first difference at offset {first_difference}",
            actual.len(),
            expected.len()
        );
    }
}

#[test]
fn proxy_passes_requests_through_unchanged() {
    let bucket = s3::bucket("proxy-pass");
    let proxy = FaultProxy::start(&s3::endpoint(), Policy::none());
    let via_proxy = client_at(&proxy.endpoint(), &bucket, 0);
    let direct = s3::client(&bucket);
    let small = pattern(1000, 1);
    let big = pattern(20 * MIB, 2);
    let parts = [pattern(5 * MIB, 3), pattern(5 * MIB, 4), pattern(MIB, 5)];
    let multipart: Vec<u8> = parts.concat();
    common::block_on(async {
        via_proxy
            .put(&ObjectPath::from("pass/small"), small.clone().into())
            .await
            .expect("put small");
        via_proxy
            .put(&ObjectPath::from("pass/empty"), PutPayload::new())
            .await
            .expect("put empty");
        via_proxy
            .put(&ObjectPath::from("pass/big"), big.clone().into())
            .await
            .expect("put 20 MiB");
        let mut upload = via_proxy
            .put_multipart(&ObjectPath::from("pass/multipart"))
            .await
            .expect("start multipart upload");
        for part in &parts {
            upload
                .put_part(part.clone().into())
                .await
                .expect("upload part");
        }
        upload.complete().await.expect("complete multipart upload");

        for (key, expected) in [
            ("pass/small", &small),
            ("pass/empty", &Vec::new()),
            ("pass/big", &big),
            ("pass/multipart", &multipart),
        ] {
            let through_proxy = get_all(&via_proxy, key).await.expect("get via proxy");
            assert_same_bytes(&through_proxy, expected, &format!("{key} via the proxy"));
            // What the proxy wrote is what S3 holds.
            let stored = get_all(&direct, key).await.expect("get direct");
            assert_same_bytes(&stored, expected, &format!("{key} as stored"));
            let meta = via_proxy.head(&ObjectPath::from(key)).await.expect("head");
            assert_eq!(meta.size, expected.len() as u64, "{key}: HEAD size");
        }
        for range in [
            0..1,
            5..MIB as u64 + 7,
            20 * MIB as u64 - 100..20 * MIB as u64,
        ] {
            let got = via_proxy
                .get_range(&ObjectPath::from("pass/big"), range.clone())
                .await
                .expect("ranged get");
            assert_same_bytes(
                &got,
                &big[range.start as usize..range.end as usize],
                &format!("pass/big range {range:?}"),
            );
        }
        assert_eq!(
            list_keys(&via_proxy, "pass").await,
            ["pass/big", "pass/empty", "pass/multipart", "pass/small"]
        );
        for key in ["pass/small", "pass/empty", "pass/big", "pass/multipart"] {
            via_proxy
                .delete(&ObjectPath::from(key))
                .await
                .expect("delete");
        }
        assert!(list_keys(&via_proxy, "pass").await.is_empty());
        assert!(list_keys(&direct, "pass").await.is_empty());
    });
    let stats = proxy.stats();
    assert_eq!(stats.total_faults(), 0, "{stats:?}");
    // 3 puts, 5 multipart requests, 4 gets, 4 heads, 3 ranged gets, 4 deletes and 2 lists all
    // went through the proxy (the gets for comparison went around it).
    assert_eq!(stats.requests, 25, "{stats:?}\n{}", proxy.log_tail(40));
    // The client reused its connections: keep-alive works through the proxy.
    assert!(stats.connections < stats.requests / 2, "{stats:?}");
}

/// Sends one bare request through the proxy and returns the status code it answered, or
/// the I/O error if it answered nothing.
fn raw_status(endpoint: &str, method: &str, target: &str) -> std::io::Result<u16> {
    use std::io::{Read, Write};
    let authority = endpoint.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(authority)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "{method} {target} HTTP/1.1\r\nHost: {authority}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    String::from_utf8_lossy(&response)
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status in {response:?}")))
}

#[test]
fn each_fault_kind_is_injected_and_observed() {
    let bucket = s3::bucket("proxy-faults");
    let proxy = FaultProxy::start(&s3::endpoint(), Policy::none());
    let no_retries = client_at(&proxy.endpoint(), &bucket, 0);
    let two_retries = client_at(&proxy.endpoint(), &bucket, 2);
    // The truth about what S3 holds, from a client that bypasses the proxy.
    let direct = s3::client(&bucket);
    let body = pattern(MIB, 10);
    let put = |key: &str| Filter::new(&["PUT"], &[key]);
    let get = |key: &str| Filter::new(&["GET"], &[key]);
    let context = |proxy: &FaultProxy| format!("{:?}\n{}", proxy.stats(), proxy.log_tail(20));

    common::block_on(async {
        // ServerError: not forwarded, so nothing is stored; object_store retries 5xx answers.
        proxy.set_policy(Policy::always(put("f/server"), Fault::ServerError(503)));
        let error = no_retries
            .put(&ObjectPath::from("f/server"), body.clone().into())
            .await
            .expect_err("a 503 is an error");
        assert!(error.to_string().contains("503"), "{error}");
        assert_eq!(
            proxy.stats().injected("ServerError"),
            1,
            "{}",
            context(&proxy)
        );
        two_retries
            .put(&ObjectPath::from("f/server"), body.clone().into())
            .await
            .expect_err("every attempt gets a 503");
        assert_eq!(
            proxy.stats().injected("ServerError"),
            4,
            "{}",
            context(&proxy)
        );
        assert!(
            get_all(&direct, "f/server").await.is_err(),
            "nothing stored"
        );

        // ResetBeforeForward: an error, and nothing stored.
        proxy.set_policy(Policy::always(
            put("f/reset-before"),
            Fault::ResetBeforeForward,
        ));
        let error = no_retries
            .put(&ObjectPath::from("f/reset-before"), body.clone().into())
            .await
            .expect_err("a reset is an error");
        eprintln!("ResetBeforeForward on PUT: {error}");
        assert_eq!(proxy.stats().injected("ResetBeforeForward"), 1);
        assert!(
            get_all(&direct, "f/reset-before").await.is_err(),
            "nothing stored"
        );

        // The dangerous pair: the client hears an error, yet the object is stored.
        for (key, fault) in [
            ("f/reset-after", Fault::ResetAfterForward),
            ("f/close", Fault::CloseWithoutResponse),
        ] {
            proxy.set_policy(Policy::always(put(key), fault));
            let error = no_retries
                .put(&ObjectPath::from(key), body.clone().into())
                .await
                .expect_err("no response is an error");
            eprintln!("{fault:?} on PUT: {error}");
            assert_eq!(
                proxy.stats().injected(fault.kind()),
                1,
                "{}",
                context(&proxy)
            );
            let stored = get_all(&direct, key)
                .await
                .expect("stored despite the error");
            assert_same_bytes(&stored, &body, key);
        }

        // TruncatedBody: a short GET body is an error, never a silently short object; a HEAD
        // has no body, so its head is cut instead.
        direct
            .put(&ObjectPath::from("f/truncated"), body.clone().into())
            .await
            .expect("put");
        proxy.set_policy(Policy::always(
            Filter::new(&["GET", "HEAD"], &["f/truncated"]),
            Fault::TruncatedBody,
        ));
        match get_all(&no_retries, "f/truncated").await {
            Err(error) => eprintln!("TruncatedBody on GET: {error}"),
            Ok(got) => panic!(
                "a truncated GET returned {} of {} bytes without an error",
                got.len(),
                body.len()
            ),
        }
        no_retries
            .head(&ObjectPath::from("f/truncated"))
            .await
            .expect_err("a truncated HEAD response is an error");
        assert_eq!(
            proxy.stats().injected("TruncatedBody"),
            2,
            "{}",
            context(&proxy)
        );
        // Requests the filter does not match pass untouched meanwhile.
        proxy.set_policy(Policy::always(get("f/truncated"), Fault::TruncatedBody));
        let meta = no_retries
            .head(&ObjectPath::from("f/truncated"))
            .await
            .expect("a HEAD does not match a GET filter");
        assert_eq!(meta.size, body.len() as u64);

        // Latency: late, and otherwise normal.
        let delay = Duration::from_millis(400);
        proxy.set_policy(Policy::always(get("f/truncated"), Fault::Latency(delay)));
        let started = Instant::now();
        let got = get_all(&no_retries, "f/truncated").await.expect("slow get");
        assert!(
            started.elapsed() >= delay,
            "took only {:?}",
            started.elapsed()
        );
        assert_same_bytes(&got, &body, "delayed GET");
        assert_eq!(proxy.stats().injected("Latency"), 1);
    });

    // LocalStack's health checks are never faulted, whatever the policy.
    proxy.set_policy(Policy::always(Filter::any(), Fault::ServerError(503)));
    assert_eq!(
        raw_status(&proxy.endpoint(), "GET", "/_localstack/health").expect("health"),
        200
    );
    assert_eq!(
        raw_status(&proxy.endpoint(), "GET", &format!("/{bucket}/f/close")).expect("get"),
        503
    );
    // ... and a reset is a reset on the wire, not a response.
    proxy.set_policy(Policy::always(Filter::any(), Fault::ResetBeforeForward));
    let reset = raw_status(&proxy.endpoint(), "GET", &format!("/{bucket}/f/close"));
    assert!(reset.is_err(), "{reset:?}");
    eprintln!("raw client after ResetBeforeForward: {reset:?}");

    let stats = proxy.stats();
    for kind in [
        "ServerError",
        "ResetBeforeForward",
        "ResetAfterForward",
        "CloseWithoutResponse",
        "TruncatedBody",
        "Latency",
    ] {
        assert!(
            stats.injected(kind) >= 1,
            "{kind} never injected: {stats:?}"
        );
    }
}

/// `maif` with `args` in `dir`, environment `env`, killed if it runs past `limit`. Returns
/// the exit status (None if killed) and its stderr.
fn run_maif(
    dir: &Path,
    args: &[&str],
    env: &[(&str, String)],
    limit: Duration,
) -> (Option<ExitStatus>, String) {
    let (status, _, stderr) = run_maif_capturing(dir, args, env, limit);
    (status, stderr)
}

/// [`run_maif`], also returning standard output.
fn run_maif_capturing(
    dir: &Path,
    args: &[&str],
    env: &[(&str, String)],
    limit: Duration,
) -> (Option<ExitStatus>, String, String) {
    let unique = uuid::Uuid::new_v4().simple();
    let stderr_path = dir.join(format!("stderr-{unique}.log"));
    let stdout_path = dir.join(format!("stdout-{unique}.log"));
    let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
    let stdout = std::fs::File::create(&stdout_path).expect("stdout file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_maif"))
        .args(args)
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("spawn maif");
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for maif") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let stdout = std::fs::read_to_string(&stdout_path).unwrap_or_default();
    (status, stdout, stderr)
}

/// The test S3 environment for a `maif` child, with requests going through `proxy`.
fn proxied_env(proxy: &FaultProxy) -> Vec<(&'static str, String)> {
    s3::cli_env()
        .into_iter()
        .map(|(name, value)| match name {
            "AWS_ENDPOINT_URL" => (name, proxy.endpoint()),
            _ => (name, value),
        })
        .chain([("MAIF_LOG", "info".to_string())])
        .collect()
}

/// Runs `maif` and fails the test unless it succeeds (local commands, no proxy involved).
fn maif_ok(dir: &Path, args: &[&str]) {
    let (status, stderr) = run_maif(dir, args, &[], Duration::from_secs(60));
    assert!(
        status.is_some_and(|s| s.success()),
        "maif {args:?}: {status:?}\n{stderr}"
    );
}

/// A file artifact of 30 blocks in 3 commits: in each, three of ~1 MiB and seven small.
fn thirty_block_artifact(dir: &Path) -> PathBuf {
    maif_ok(dir, &["keygen", "key.pem"]);
    maif_ok(
        dir,
        &[
            "create",
            "a.maif",
            "--key",
            "key.pem",
            "--agent",
            "fault-proxy-test",
        ],
    );
    for commit in 0..3u64 {
        let mut args: Vec<String> = ["add", "a.maif", "--key", "key.pem", "--type", "BINA"]
            .map(String::from)
            .to_vec();
        for block in 0..10u64 {
            let len = if block < 3 {
                MIB - 1000 * block as usize
            } else {
                100 + 1500 * block as usize
            };
            let name = format!("payload-{commit}-{block}.bin");
            std::fs::write(dir.join(&name), pattern(len, 100 + commit * 10 + block))
                .expect("payload");
            args.extend(["--file".to_string(), name]);
        }
        maif_ok(dir, &args.iter().map(String::as_str).collect::<Vec<_>>());
    }
    dir.join("a.maif")
}

#[test]
fn convert_round_trip_under_mixed_faults_is_byte_identical() {
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path();
    let original = std::fs::read(thirty_block_artifact(dir)).expect("read artifact");
    let bucket = s3::bucket("proxy-convert");
    let mut failures = Vec::new();
    // Three seeds by default; MAIF_TEST_FAULT_SEEDS=1,2,...,50 explores more.
    let seeds: Vec<u64> = std::env::var("MAIF_TEST_FAULT_SEEDS")
        .map(|list| {
            list.split(',')
                .map(|seed| seed.trim().parse().expect("MAIF_TEST_FAULT_SEEDS: numbers"))
                .collect()
        })
        .unwrap_or_else(|_| vec![1, 2, 3]);
    for seed in seeds {
        let proxy = FaultProxy::start(&s3::endpoint(), Policy::mixed(seed, 0.2));
        let env = proxied_env(&proxy);
        let location = format!("s3://{bucket}/seed-{seed}");
        let copy = format!("copy-{seed}.maif");
        let mut failed = false;
        for (direction, args) in [
            (
                "file -> S3",
                ["convert", "--quiet", "a.maif", location.as_str()],
            ),
            (
                "S3 -> file",
                ["convert", "--quiet", location.as_str(), copy.as_str()],
            ),
        ] {
            let started = Instant::now();
            let logged_before = proxy.log().len();
            let (status, stderr) = run_maif(dir, &args, &env, Duration::from_secs(120));
            let log = proxy.log();
            let faulted: Vec<&String> = log[logged_before..]
                .iter()
                .filter(|line| !line.contains(" [-] "))
                .collect();
            eprintln!(
                "seed {seed}, {direction}: {status:?} in {:.1?}, {} requests, {} faulted:",
                started.elapsed(),
                log.len() - logged_before,
                faulted.len(),
            );
            for line in faulted {
                eprintln!("    {line}");
            }
            if !status.is_some_and(|s| s.success()) {
                let stderr_tail: Vec<&str> = stderr.lines().rev().take(30).collect();
                failures.push(format!(
                    "seed {seed}, {direction}: maif {args:?} ended with {status:?} \
                     (None = killed after 120 s)\n--- stderr (last 30 lines) ---\n{}\n\
                     --- proxy log (last 30 requests) ---\n{}",
                    stderr_tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
                    proxy.log_tail(30)
                ));
                failed = true;
                break;
            }
        }
        if failed {
            continue;
        }
        let round_tripped = std::fs::read(dir.join(&copy)).expect("read copy");
        if round_tripped != original {
            let first_difference = round_tripped
                .iter()
                .zip(&original)
                .position(|(a, b)| a != b)
                .unwrap_or(round_tripped.len().min(original.len()));
            failures.push(format!(
                "seed {seed}: the round trip is {} bytes, the original {}; first difference at \
                 offset {first_difference}",
                round_tripped.len(),
                original.len()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "maif convert under 20 % mixed faults:\n\n{}",
        failures.join("\n\n")
    );
}

/// What one `maif add` reported, settled the documented way: done (exit 0, with the block id
/// it printed), not done (exit 2), or unknown (exit 3), which is settled by running the same
/// command again with the `--id` the message names until it says done or not done.
enum AddOutcome {
    Done(String),
    NotDone,
}

/// Unknown outcomes seen by [`add_settled`] (for the tests' summaries).
static UNKNOWN_OUTCOMES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn add_settled(dir: &Path, location: &str, text: &str, env: &[(&str, String)]) -> AddOutcome {
    let mut args: Vec<String> = [
        "add", location, "--key", "key.pem", "--type", "TEXT", "--text", text, "--json",
    ]
    .map(String::from)
    .to_vec();
    for _attempt in 0..10 {
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let (status, stdout, stderr) =
            run_maif_capturing(dir, &argv, env, Duration::from_secs(120));
        match status.and_then(|s| s.code()) {
            Some(0) => {
                let row: serde_json::Value = serde_json::from_str(&stdout)
                    .unwrap_or_else(|e| panic!("add printed no JSON ({e}): {stdout}\n{stderr}"));
                return AddOutcome::Done(row["block_id"].as_str().expect("block_id").to_string());
            }
            Some(2) => return AddOutcome::NotDone,
            Some(3) => {
                UNKNOWN_OUTCOMES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // The message names the re-run: `... again with --id <UUID> ...`.
                let id = stderr
                    .split("--id ")
                    .nth(1)
                    .and_then(|rest| rest.split_whitespace().next())
                    .unwrap_or_else(|| panic!("an unknown outcome names no --id: {stderr}"))
                    .to_string();
                if !args.contains(&"--id".to_string()) {
                    args.extend(["--id".to_string(), id]);
                }
            }
            other => panic!("maif add {text}: exit {other:?}\n{stderr}"),
        }
    }
    panic!("maif add {text}: still unknown after 10 re-runs")
}

/// The blocks of an artifact as `maif ls --json` lists them: (id, text) per block, read
/// without faults.
fn listed_texts(dir: &Path, location: &str) -> Vec<(String, String)> {
    let (status, stdout, stderr) = run_maif_capturing(
        dir,
        &["ls", location, "--json"],
        &s3::cli_env(),
        Duration::from_secs(60),
    );
    assert!(status.is_some_and(|s| s.success()), "ls: {stderr}");
    let rows: serde_json::Value = serde_json::from_str(&stdout).expect("ls JSON");
    rows.as_array()
        .expect("rows")
        .iter()
        .map(|row| {
            let id = row["id"].as_str().expect("id").to_string();
            let (status, text, stderr) = run_maif_capturing(
                dir,
                &[
                    "cat",
                    location,
                    &id,
                    "--version",
                    &row["version"].to_string(),
                ],
                &s3::cli_env(),
                Duration::from_secs(60),
            );
            assert!(status.is_some_and(|s| s.success()), "cat {id}: {stderr}");
            (id, text)
        })
        .collect()
}

fn verify_clean(dir: &Path, location: &str) -> String {
    let (status, stdout, stderr) = run_maif_capturing(
        dir,
        &["verify", location, "--json"],
        &s3::cli_env(),
        Duration::from_secs(120),
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "verify {location}: {stdout}\n{stderr}"
    );
    stdout
}

fn new_s3_artifact(dir: &Path, bucket: &str, prefix: &str) -> String {
    if !dir.join("key.pem").exists() {
        maif_ok(dir, &["keygen", "key.pem"]);
    }
    let location = format!("s3://{bucket}/{prefix}");
    let (status, stderr) = run_maif(
        dir,
        &["create", &location, "--key", "key.pem", "--agent", "faults"],
        &s3::cli_env(),
        Duration::from_secs(60),
    );
    assert!(status.is_some_and(|s| s.success()), "create: {stderr}");
    location
}

/// A work folder holding `key.pem`, and a new artifact at `s3://<fresh bucket>/prefix`.
fn fresh_s3_artifact(bucket_name: &str, prefix: &str) -> (tempfile::TempDir, String) {
    let work = tempfile::tempdir().expect("tempdir");
    let bucket = s3::bucket(bucket_name);
    let location = new_s3_artifact(work.path(), &bucket, prefix);
    (work, location)
}

/// Two processes appending 50 blocks each through 20 % mixed faults: the artifact ends with
/// exactly the blocks whose adds reported done (unknowns settled by the documented re-run),
/// each once, and verifies.
#[test]
fn two_writers_under_mixed_faults_keep_exactly_the_acknowledged_blocks() {
    const ADDS: usize = 50;
    let (work, location) = fresh_s3_artifact("proxy-adds", "agents/a1");
    let dir = work.path();
    let proxy = FaultProxy::start(&s3::endpoint(), Policy::mixed(7, 0.2));
    let env = proxied_env(&proxy);
    let outcomes: Vec<(String, AddOutcome)> = std::thread::scope(|scope| {
        let writers: Vec<_> = (0..2)
            .map(|w| {
                let (env, location) = (&env, &location);
                scope.spawn(move || {
                    (0..ADDS)
                        .map(|n| {
                            let text = format!("writer {w} event {n}");
                            let outcome = add_settled(dir, location, &text, env);
                            (text, outcome)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        writers
            .into_iter()
            .flat_map(|w| w.join().expect("writer thread"))
            .collect()
    });
    let stats = proxy.stats();
    drop(proxy);
    let listed = listed_texts(dir, &location);
    let mut done = 0;
    for (text, outcome) in &outcomes {
        let copies: Vec<&(String, String)> = listed.iter().filter(|(_, t)| t == text).collect();
        match outcome {
            AddOutcome::Done(id) => {
                done += 1;
                assert_eq!(
                    copies.len(),
                    1,
                    "{text:?} reported done must be there once: {copies:?}"
                );
                assert_eq!(&copies[0].0, id, "{text:?} under the id reported");
            }
            AddOutcome::NotDone => assert!(
                copies.is_empty(),
                "{text:?} reported not done, yet it is there: {copies:?}"
            ),
        }
    }
    eprintln!(
        "{} adds: {done} done, {} not done, {} unknown outcomes settled by a re-run; proxy: {stats:?}",
        2 * ADDS,
        2 * ADDS - done,
        UNKNOWN_OUTCOMES.load(std::sync::atomic::Ordering::Relaxed)
    );
    assert_eq!(
        listed.len(),
        done,
        "nothing else is in the artifact: {listed:?}"
    );
    assert!(
        done >= ADDS,
        "most adds should get through 20 % faults (done {done} of {}); proxy: {stats:?}",
        2 * ADDS
    );
    assert!(
        stats.total_faults() >= 20,
        "faults were injected: {stats:?}"
    );
    verify_clean(dir, &location);
}

/// `maif add --update` whose commit PUT reaches S3 but whose response is lost makes exactly
/// one new version and reports done.
#[test]
fn an_update_whose_commit_response_is_lost_makes_one_version() {
    let (work, location) = fresh_s3_artifact("proxy-update", "agents/u");
    let dir = work.path();
    let first = add_settled(dir, &location, "version 1", &s3::cli_env());
    let AddOutcome::Done(id) = first else {
        panic!("a fault-free add failed")
    };
    for fault in [Fault::CloseWithoutResponse, Fault::ResetAfterForward] {
        let proxy = FaultProxy::start(
            &s3::endpoint(),
            Policy::always(Filter::new(&["PUT"], &["/commits/"]), fault),
        );
        let (status, stdout, stderr) = run_maif_capturing(
            dir,
            &[
                "add", &location, "--key", "key.pem", "--type", "TEXT", "--text", "next",
                "--update", &id, "--json",
            ],
            &proxied_env(&proxy),
            Duration::from_secs(120),
        );
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(0),
            "{fault:?}: the update landed, so it is done\n{stdout}\n{stderr}\n{}",
            proxy.log_tail(20)
        );
        assert!(proxy.stats().total_faults() >= 1, "{fault:?} was injected");
    }
    let versions: Vec<String> = listed_texts(dir, &location)
        .into_iter()
        .filter(|(block, _)| *block == id)
        .map(|(_, text)| text)
        .collect();
    assert_eq!(
        versions.len(),
        3,
        "one new version per update, no more: {versions:?}"
    );
    verify_clean(dir, &location);
}

/// A writer whose record upload is held for seconds while another writer commits 3 and then
/// 5 times: the stale writer's commit cannot land on a state it did not read; it re-links on
/// top and every acknowledged block stays.
#[test]
fn a_stalled_writer_loses_nothing_while_another_commits() {
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path();
    let bucket = s3::bucket("proxy-stale");
    for (round, fast_commits) in [(0, 3usize), (1, 5)] {
        let location = new_s3_artifact(dir, &bucket, &format!("agents/s{round}"));
        let proxy = FaultProxy::start(
            &s3::endpoint(),
            Policy::always(
                Filter::new(&["PUT"], &["/blocks/"]),
                Fault::Latency(Duration::from_secs(4)),
            ),
        );
        let slow_env = proxied_env(&proxy);
        let (slow, fast) = std::thread::scope(|scope| {
            let slow = scope.spawn(|| add_settled(dir, &location, "slow", &slow_env));
            // Let the slow writer read the newest commit and start its upload first.
            std::thread::sleep(Duration::from_millis(1500));
            let fast: Vec<AddOutcome> = (0..fast_commits)
                .map(|n| add_settled(dir, &location, &format!("fast {n}"), &s3::cli_env()))
                .collect();
            (slow.join().expect("slow writer"), fast)
        });
        let listed = listed_texts(dir, &location);
        let mut expected: Vec<String> = (0..fast_commits).map(|n| format!("fast {n}")).collect();
        expected.push("slow".into());
        for (text, outcome) in expected.iter().zip(fast.iter().chain([&slow])) {
            assert!(
                matches!(outcome, AddOutcome::Done(_)),
                "{text}: fault-free apart from latency, so done"
            );
            assert_eq!(
                listed.iter().filter(|(_, t)| t == text).count(),
                1,
                "round {round}: {text:?} is there once: {listed:?}"
            );
        }
        assert_eq!(listed.len(), expected.len(), "{listed:?}");
        assert!(
            proxy.stats().injected("Latency") >= 1,
            "the slow writer's upload was held"
        );
        verify_clean(dir, &location);
    }
}

/// An add whose commit PUT reaches S3 while every answer about the new commit is lost (the
/// PUT's connection is reset, every read-back of it is cut short) cannot tell whether it
/// landed: it exits 3 and names the re-run, and that re-run reports done without adding the
/// block a second time.
#[test]
fn an_unknown_add_outcome_is_reported_and_the_named_re_run_settles_it() {
    use common::fault_proxy::Rule;
    let (work, location) = fresh_s3_artifact("proxy-unknown", "agents/q");
    let dir = work.path();
    // Commit 1's object key, named where the layout is defined.
    let commit_1 = format!(
        "/{}/{}",
        maif_store::format::layout::COMMITS_DIR,
        maif_store::format::layout::commit_object_name(1)
    );
    let rule = |method: &str, fault: Fault| Rule {
        filter: Filter::new(&[method], &[&commit_1]),
        probability: 1.0,
        faults: vec![fault],
    };
    let proxy = FaultProxy::start(
        &s3::endpoint(),
        Policy {
            seed: 0,
            rules: vec![
                rule("PUT", Fault::ResetAfterForward),
                rule("GET", Fault::TruncatedBody),
            ],
        },
    );
    let (status, _, stderr) = run_maif_capturing(
        dir,
        &[
            "add", &location, "--key", "key.pem", "--type", "TEXT", "--text", "event", "--json",
        ],
        &proxied_env(&proxy),
        Duration::from_secs(120),
    );
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(3),
        "the outcome is unknown: {stderr}\n{}",
        proxy.log_tail(20)
    );
    drop(proxy);
    let id = stderr
        .split("--id ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("the message names the re-run: {stderr}"))
        .to_string();
    let (status, stdout, stderr) = run_maif_capturing(
        dir,
        &[
            "add", &location, "--key", "key.pem", "--type", "TEXT", "--text", "event", "--id", &id,
            "--json",
        ],
        &s3::cli_env(),
        Duration::from_secs(60),
    );
    assert!(status.is_some_and(|s| s.success()), "the re-run: {stderr}");
    assert!(stdout.contains(&id), "{stdout}");
    let listed = listed_texts(dir, &location);
    assert_eq!(
        listed,
        vec![(id, "event".to_string())],
        "the block is there once"
    );
    verify_clean(dir, &location);
}

/// A record large enough to be uploaded in parts, with part uploads failing on the way and
/// every completion's answer lost after S3 completed it: the add is done, once, and the
/// block reads back byte for byte.
#[test]
fn a_multipart_record_upload_survives_failed_parts_and_a_lost_completion() {
    use common::fault_proxy::Rule;
    let (work, location) = fresh_s3_artifact("proxy-multipart", "agents/m");
    let dir = work.path();
    let payload = pattern(40 * MIB + 123, 77);
    std::fs::write(dir.join("big.bin"), &payload).expect("payload");
    let proxy = FaultProxy::start(
        &s3::endpoint(),
        Policy {
            seed: 5,
            rules: vec![
                Rule {
                    filter: Filter::new(&["PUT"], &["partNumber="]),
                    probability: 0.3,
                    faults: vec![
                        Fault::ResetBeforeForward,
                        Fault::ResetAfterForward,
                        Fault::ServerError(503),
                    ],
                },
                Rule {
                    filter: Filter::new(&["POST"], &["uploadId="]),
                    probability: 1.0,
                    faults: vec![Fault::ResetAfterForward],
                },
            ],
        },
    );
    let (status, stdout, stderr) = run_maif_capturing(
        dir,
        &[
            "add", &location, "--key", "key.pem", "--type", "BINA", "--file", "big.bin", "--json",
        ],
        &proxied_env(&proxy),
        Duration::from_secs(300),
    );
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "{stdout}\n{stderr}\n{}",
        proxy.log_tail(30)
    );
    let stats = proxy.stats();
    assert!(
        stats.injected("ResetAfterForward") >= 1,
        "a completion's answer was lost: {stats:?}"
    );
    drop(proxy);
    let row: serde_json::Value = serde_json::from_str(&stdout).expect("add JSON");
    let id = row["block_id"].as_str().expect("block id");
    let out = Command::new(env!("CARGO_BIN_EXE_maif"))
        .args(["cat", &location, id])
        .envs(s3::cli_env())
        .output()
        .expect("cat");
    assert!(out.status.success(), "{out:?}");
    assert_same_bytes(&out.stdout, &payload, "the large block");
    let report = verify_clean(dir, &location);
    assert!(!report.contains("orphan"), "{report}");
}

/// `create` and `convert` whose every commit PUT reaches S3 but loses its answer report done
/// (the commit they read back is theirs), never "an artifact already exists".
#[test]
fn create_and_convert_whose_commit_answers_are_lost_are_done() {
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path();
    let bucket = s3::bucket("proxy-lost-answers");
    let source = thirty_block_artifact(dir);
    let proxy = FaultProxy::start(
        &s3::endpoint(),
        Policy::always(
            Filter::new(&["PUT"], &["/commits/"]),
            Fault::CloseWithoutResponse,
        ),
    );
    let env = proxied_env(&proxy);
    let created = format!("s3://{bucket}/created");
    let converted = format!("s3://{bucket}/converted");
    for args in [
        vec!["create", &created, "--key", "key.pem", "--agent", "lost"],
        vec![
            "convert",
            "--quiet",
            source.to_str().expect("path"),
            &converted,
        ],
    ] {
        let (status, _, stderr) = run_maif_capturing(dir, &args, &env, Duration::from_secs(120));
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(0),
            "maif {args:?}: {stderr}\n{}",
            proxy.log_tail(10)
        );
    }
    assert!(
        proxy.stats().injected("CloseWithoutResponse") >= 4,
        "{:?}",
        proxy.stats()
    );
    drop(proxy);
    verify_clean(dir, &created);
    verify_clean(dir, &converted);
    let (status, _, stderr) = run_maif_capturing(
        dir,
        &["convert", "--quiet", &converted, "back.maif"],
        &s3::cli_env(),
        Duration::from_secs(120),
    );
    assert!(status.is_some_and(|s| s.success()), "{stderr}");
    assert!(
        std::fs::read(dir.join("back.maif")).expect("back")
            == std::fs::read(&source).expect("source"),
        "the converted artifact is the source, byte for byte"
    );
}

/// `convert` into a single object (`….maif`) whose multipart completion reaches S3 but loses
/// its answer reports done, and the object is the source byte for byte.
#[test]
fn a_convert_to_one_object_whose_completion_answer_is_lost_is_done() {
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path();
    let bucket = s3::bucket("proxy-one-object");
    let source = thirty_block_artifact(dir);
    let proxy = FaultProxy::start(
        &s3::endpoint(),
        Policy::always(
            Filter::new(&["POST"], &["uploadId="]),
            Fault::CloseWithoutResponse,
        ),
    );
    let object = format!("s3://{bucket}/archive/a.maif");
    let (status, _, stderr) = run_maif_capturing(
        dir,
        &[
            "convert",
            "--quiet",
            source.to_str().expect("path"),
            &object,
        ],
        &proxied_env(&proxy),
        Duration::from_secs(120),
    );
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "{stderr}\n{}",
        proxy.log_tail(10)
    );
    assert!(
        proxy.stats().injected("CloseWithoutResponse") >= 1,
        "{:?}",
        proxy.stats()
    );
    drop(proxy);
    let (status, _, stderr) = run_maif_capturing(
        dir,
        &["convert", "--quiet", &object, "back.maif"],
        &s3::cli_env(),
        Duration::from_secs(120),
    );
    assert!(status.is_some_and(|s| s.success()), "{stderr}");
    assert!(
        std::fs::read(dir.join("back.maif")).expect("back")
            == std::fs::read(&source).expect("source"),
        "the object is the source, byte for byte"
    );
}
