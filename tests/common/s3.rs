//! Real S3 for the tests, obtained in this order:
//! 1. `MAIF_TEST_S3_ENDPOINT`, if set;
//! 2. a LocalStack container (`localstack/localstack:4.13.1`) when a Docker daemon answers;
//! 3. LocalStack in host mode, started by `localstack/start.sh` (installs itself on first use).
//!
//! If none works the test fails with the reason; an S3 test never passes without S3.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use maif_store::store::ObjectBackend;
use object_store::ObjectStore;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;

pub const LOCALSTACK_IMAGE: &str = "localstack/localstack:4.13.1";

/// The workspace root (this file is also used by the `migrate` crate's tests).
fn repo() -> std::path::PathBuf {
    let manifest = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .find(|dir| dir.join("localstack/start.sh").exists())
        .map_or(manifest.clone(), std::path::Path::to_path_buf)
}

fn docker_endpoint() -> Option<Result<String, String>> {
    let daemon = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .ok()?;
    if !daemon.status.success() {
        return None;
    }
    let run = Command::new("docker")
        .args([
            "run",
            "-d",
            "--rm",
            "-p",
            "127.0.0.1::4566",
            "-e",
            "SERVICES=s3",
            "--label",
            "maif-store-tests=1",
            LOCALSTACK_IMAGE,
        ])
        .output();
    let id = match run {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_string(),
        Ok(out) => {
            return Some(Err(format!(
                "docker run {LOCALSTACK_IMAGE} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Err(e) => return Some(Err(format!("docker run failed: {e}"))),
    };
    let port = Command::new("docker")
        .args(["port", &id, "4566/tcp"])
        .output()
        .ok()?;
    let mapping = String::from_utf8_lossy(&port.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    let endpoint = format!("http://{mapping}");
    Some(wait_healthy(&endpoint).map(|()| endpoint))
}

fn host_mode_endpoint() -> Result<String, String> {
    let out = Command::new("bash")
        .arg(repo().join("localstack/start.sh"))
        .output()
        .map_err(|e| format!("cannot run localstack/start.sh: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "localstack/start.sh failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let endpoint = String::from_utf8_lossy(&out.stdout).trim().to_string();
    wait_healthy(&endpoint).map(|()| endpoint)
}

fn http(endpoint: &str, method: &str, path: &str) -> Result<u16, String> {
    let authority = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = TcpStream::connect(authority).map_err(|e| format!("{endpoint}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("{endpoint}: no HTTP status in {response:?}"))
}

fn wait_healthy(endpoint: &str) -> Result<(), String> {
    let mut last = String::new();
    for _ in 0..240 {
        match http(endpoint, "GET", "/_localstack/health") {
            Ok(200) => return Ok(()),
            Ok(code) => last = format!("health answered {code}"),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Err(format!("S3 at {endpoint} did not become healthy: {last}"))
}

/// The S3 endpoint for this test run (resolved once per test binary).
pub fn endpoint() -> String {
    static ENDPOINT: OnceLock<Result<String, String>> = OnceLock::new();
    let resolved = ENDPOINT.get_or_init(|| {
        if let Ok(endpoint) = std::env::var("MAIF_TEST_S3_ENDPOINT") {
            return wait_healthy(&endpoint).map(|()| endpoint);
        }
        if let Some(result) = docker_endpoint() {
            return result;
        }
        host_mode_endpoint()
    });
    match resolved {
        Ok(endpoint) => endpoint.clone(),
        Err(reason) => panic!(
            "this test needs S3 and none could be obtained{}: {reason}",
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                " in CI"
            } else {
                ""
            }
        ),
    }
}

/// Creates a fresh bucket and returns its name.
pub fn bucket(name: &str) -> String {
    let endpoint = endpoint();
    let unique = format!("{name}-{}", uuid::Uuid::new_v4().simple()).to_lowercase();
    let bucket: String = unique.chars().take(63).collect();
    match http(&endpoint, "PUT", &format!("/{bucket}")) {
        Ok(200) => bucket,
        other => panic!("creating bucket {bucket} at {endpoint}: {other:?}"),
    }
}

/// An S3 client for `bucket` on the test endpoint, with LocalStack's test credentials.
pub fn client(bucket: &str) -> Arc<AmazonS3> {
    client_at(bucket, &endpoint())
}

/// An S3 client for `bucket` at `endpoint` (the test endpoint, or a fault proxy in front of
/// it), with LocalStack's test credentials.
pub fn client_at(bucket: &str, endpoint: &str) -> Arc<AmazonS3> {
    Arc::new(
        AmazonS3Builder::new()
            .with_endpoint(endpoint)
            .with_bucket_name(bucket)
            .with_region("us-east-1")
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .with_allow_http(true)
            .build()
            .expect("S3 client"),
    )
}

/// [`client`] as an object store.
pub fn store(bucket: &str) -> Arc<dyn ObjectStore> {
    client(bucket)
}

/// The object-layout backend for `s3://bucket/prefix` on the test endpoint, as `maif` builds
/// it (finding the newest commit with a one-key LIST).
pub fn backend(bucket: &str, prefix: &str) -> Arc<ObjectBackend> {
    let client = client(bucket);
    Arc::new(
        Arc::unwrap_or_clone(backend_on(client.clone(), bucket, prefix))
            .with_first_key_listing(client),
    )
}

/// The object-layout backend for `s3://bucket/prefix` over `store` (e.g. a counting store).
pub fn backend_on(store: Arc<dyn ObjectStore>, bucket: &str, prefix: &str) -> Arc<ObjectBackend> {
    Arc::new(
        ObjectBackend::new(
            store,
            ObjectPath::from(prefix),
            format!("s3://{bucket}/{prefix}"),
        )
        .with_listing_order(maif_store::store::ListingOrder::Lexicographic),
    )
}

/// Environment for a `maif` child process talking to the test endpoint.
pub fn cli_env() -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", endpoint()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
    ]
}
