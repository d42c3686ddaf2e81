//! S3 settings from the AWS shared configuration, the way the AWS CLI reads them: a `maif`
//! child with a temporary HOME, no AWS variables but `AWS_PROFILE`, against LocalStack.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::s3;

/// `maif args` with only PATH, HOME and `extra` in its environment.
fn maif(home: &Path, path: &str, extra: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_maif"))
        .current_dir(home)
        .env_clear()
        .env("PATH", path)
        .env("HOME", home)
        .envs(extra.iter().copied())
        .args(args)
        .output()
        .expect("run maif")
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

#[cfg(unix)]
fn executable(path: &Path, script: &str) {
    use std::os::unix::fs::PermissionsExt;
    write(path, script);
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

#[test]
#[cfg(unix)]
fn profiles_give_region_endpoint_and_credentials_like_the_aws_cli() {
    let endpoint = s3::endpoint();
    let bucket = s3::bucket("profiles");
    let tmp = tempfile::tempdir().expect("tempdir");
    let home = tmp.path();
    let bin = home.join("bin");
    let system_path = std::env::var("PATH").unwrap_or_default();
    let path = format!("{}:{system_path}", bin.display());
    // A stand-in for the AWS CLI: records how it was asked, answers in the process format.
    executable(
        &bin.join("aws"),
        &format!(
            "#!/bin/sh\necho \"$@\" >> {}\necho '{{\"Version\": 1, \"AccessKeyId\": \"test\", \"SecretAccessKey\": \"test\", \"SessionToken\": \"t\"}}'\n",
            home.join("aws-calls.log").display()
        ),
    );
    executable(
        &home.join("creds.sh"),
        "#!/bin/sh\necho '{\"Version\": 1, \"AccessKeyId\": \"test\", \"SecretAccessKey\": \"test\"}'\n",
    );
    executable(
        &home.join("broken.sh"),
        "#!/bin/sh\necho nope >&2\nexit 3\n",
    );
    write(
        &home.join(".aws/config"),
        &format!(
            "[default]\nregion = us-east-1\n\n\
             [profile keys]\nregion = us-east-1\nendpoint_url = {endpoint}\n\n\
             [profile process]\nregion = us-east-1\nservices = local\ncredential_process = {}\n\n\
             [profile role]\nrole_arn = arn:aws:iam::000000000000:role/maif\nsource_profile = keys\n\
             region = us-east-1\nendpoint_url = {endpoint}\n\n\
             [profile broken]\nregion = us-east-1\nendpoint_url = {endpoint}\ncredential_process = {}\n\n\
             [services local]\ns3 =\n  endpoint_url = {endpoint}\n",
            home.join("creds.sh").display(),
            home.join("broken.sh").display()
        ),
    );
    write(
        &home.join(".aws/credentials"),
        "[keys]\naws_access_key_id = test\naws_secret_access_key = test\n",
    );
    let ok = |profile: &str, args: &[&str]| {
        let out = maif(home, &path, &[("AWS_PROFILE", profile)], args);
        assert!(
            out.status.success(),
            "AWS_PROFILE={profile} maif {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    ok("keys", &["keygen", "k.pem"]);
    for profile in ["keys", "process", "role"] {
        let location = format!("s3://{bucket}/{profile}");
        ok(
            profile,
            &["create", &location, "--key", "k.pem", "--agent", profile],
        );
        ok(
            profile,
            &[
                "add", &location, "--key", "k.pem", "--type", "TEXT", "--text", profile,
            ],
        );
        let listing = ok(profile, &["ls", &location]);
        assert!(listing.contains("TEXT"), "{profile}: {listing}");
    }
    let calls = std::fs::read_to_string(home.join("aws-calls.log")).expect("the AWS CLI was asked");
    assert!(
        calls
            .lines()
            .all(|l| l == "configure export-credentials --profile role --format process"),
        "{calls}"
    );

    // A failing credential process and an unknown profile are clear errors.
    let location = format!("s3://{bucket}/keys");
    let broken = maif(
        home,
        &path,
        &[("AWS_PROFILE", "broken")],
        &["ls", &location],
    );
    let said = String::from_utf8_lossy(&broken.stderr);
    assert_eq!(broken.status.code(), Some(2), "{said}");
    assert!(said.contains("broken") && said.contains("nope"), "{said}");
    let missing = maif(
        home,
        &path,
        &[("AWS_PROFILE", "nosuch")],
        &["ls", &location],
    );
    let said = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(missing.status.code(), Some(2), "{said}");
    assert!(
        said.contains("AWS_PROFILE=nosuch") && said.contains(".aws/config"),
        "{said}"
    );

    // Variables win over the profile: wrong keys in the environment are used (and LocalStack
    // accepts any), the endpoint from AWS_ENDPOINT_URL beats the profile's unreachable one.
    write(
        &home.join(".aws/config"),
        "[profile far]\nregion = us-east-1\nendpoint_url = http://127.0.0.1:9\n",
    );
    let out = maif(
        home,
        &path,
        &[
            ("AWS_PROFILE", "far"),
            ("AWS_ENDPOINT_URL", endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
        ],
        &["ls", &location],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A stand-in S3 endpoint that `maif` must not use: it answers every request 403 (which the
/// client does not retry) and counts the requests it got.
fn decoy() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            counted.fetch_add(1, Ordering::SeqCst);
            let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(5)));
            let mut request = Vec::new();
            let mut buffer = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buffer[..n]),
                }
            }
            let _ = stream.write_all(
                b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    (format!("http://{address}"), hits)
}

#[test]
#[cfg(unix)]
fn aws_endpoint_url_s3_wins_over_aws_endpoint_url_and_the_profile() {
    let endpoint = s3::endpoint();
    let bucket = s3::bucket("endpoints");
    let tmp = tempfile::tempdir().expect("tempdir");
    let home = tmp.path();
    let path = std::env::var("PATH").unwrap_or_default();
    let (decoy, hits) = decoy();
    // A profile whose endpoint is the decoy; keys come from the environment.
    write(
        &home.join(".aws/config"),
        &format!("[profile far]\nregion = us-east-1\nendpoint_url = {decoy}\n"),
    );
    let keys = [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
    ];
    let location = format!("s3://{bucket}/a");
    let with = |vars: &[(&str, &str)], args: &[&str]| {
        let mut all = keys.to_vec();
        all.extend_from_slice(vars);
        maif(home, &path, &all, args)
    };
    let ok = |vars: &[(&str, &str)], args: &[&str]| {
        let before = hits.load(Ordering::SeqCst);
        let out = with(vars, args);
        assert!(
            out.status.success(),
            "{vars:?} maif {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            hits.load(Ordering::SeqCst),
            before,
            "{vars:?} maif {args:?} sent requests to the decoy endpoint"
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let refused = |vars: &[(&str, &str)], args: &[&str]| {
        let before = hits.load(Ordering::SeqCst);
        let out = with(vars, args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{vars:?} maif {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            hits.load(Ordering::SeqCst) > before,
            "{vars:?} maif {args:?} did not ask the decoy"
        );
    };
    let s3_var = ("AWS_ENDPOINT_URL_S3", endpoint.as_str());
    let general = ("AWS_ENDPOINT_URL", decoy.as_str());
    let profile = ("AWS_PROFILE", "far");
    ok(&[], &["keygen", "k.pem"]);

    // AWS_ENDPOINT_URL_S3 beats AWS_ENDPOINT_URL, the profile's endpoint_url, and both.
    ok(
        &[s3_var, general],
        &["create", &location, "--key", "k.pem", "--agent", "a"],
    );
    ok(
        &[s3_var, profile],
        &[
            "add", &location, "--key", "k.pem", "--type", "TEXT", "--text", "hi",
        ],
    );
    let listing = ok(&[s3_var, general, profile], &["ls", &location]);
    assert!(listing.contains("TEXT"), "{listing}");

    // The decoy is noticed when it is used: without AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL or
    // the profile sends the request there...
    refused(&[general], &["ls", &location]);
    refused(&[profile], &["ls", &location]);
    // ...and AWS_ENDPOINT_URL_S3 is used even when AWS_ENDPOINT_URL would have worked.
    refused(
        &[
            ("AWS_ENDPOINT_URL_S3", decoy.as_str()),
            ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ],
        &["ls", &location],
    );
    // The --endpoint flag beats them all.
    ok(
        &[("AWS_ENDPOINT_URL_S3", decoy.as_str()), general, profile],
        &["ls", &location, "--endpoint", &endpoint],
    );
}

#[test]
#[cfg(unix)]
fn a_credential_process_runs_once_for_the_many_requests_of_a_command() {
    let endpoint = s3::endpoint();
    let bucket = s3::bucket("credprocess");
    let tmp = tempfile::tempdir().expect("tempdir");
    let home = tmp.path();
    let path = std::env::var("PATH").unwrap_or_default();
    let calls = home.join("calls");
    executable(
        &home.join("creds.sh"),
        &format!(
            "#!/bin/sh\necho run >> {}\necho '{{\"Version\": 1, \"AccessKeyId\": \"test\", \"SecretAccessKey\": \"test\"}}'\n",
            calls.display()
        ),
    );
    write(
        &home.join(".aws/config"),
        &format!(
            "[profile process]\nregion = us-east-1\nendpoint_url = {endpoint}\ncredential_process = {}\n",
            home.join("creds.sh").display()
        ),
    );
    let location = format!("s3://{bucket}/a");
    let runs = || std::fs::read_to_string(&calls).map_or(0, |text| text.lines().count());
    let ok = |args: &[&str]| {
        let out = maif(home, &path, &[("AWS_PROFILE", "process")], args);
        assert!(
            out.status.success(),
            "maif {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ok(&["keygen", "k.pem"]);
    assert_eq!(runs(), 0, "keygen makes no S3 request");
    // Each command makes several signed requests (an add: a LIST, a GET, two PUTs; see
    // docs/OBJECT-LAYOUT.md), all within a few seconds: one run of the process each.
    ok(&["create", &location, "--key", "k.pem", "--agent", "a"]);
    assert_eq!(runs(), 1);
    ok(&[
        "add", &location, "--key", "k.pem", "--type", "TEXT", "--text", "one",
    ]);
    assert_eq!(runs(), 2);
    ok(&["verify", &location]);
    assert_eq!(runs(), 3);
}
