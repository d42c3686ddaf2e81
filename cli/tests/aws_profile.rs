//! S3 settings from the AWS shared configuration, the way the AWS CLI reads them: a `maif`
//! child with a temporary HOME, no AWS variables but `AWS_PROFILE`, against LocalStack.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::{Command, Output};

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
