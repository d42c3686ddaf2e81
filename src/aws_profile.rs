//! AWS shared configuration, read the way the AWS CLI reads it: the profile named by
//! `AWS_PROFILE` (else `default`) in the config file (`AWS_CONFIG_FILE`, else
//! `~/.aws/config`, sections `[profile NAME]` and `[default]`) and the credentials file
//! (`AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`, sections `[NAME]`, whose keys win).
//!
//! | profile key | effect |
//! |---|---|
//! | `region` | the region, unless `AWS_REGION`/`AWS_DEFAULT_REGION` or `--region` set one |
//! | `endpoint_url`, or `endpoint_url` under `s3 =` in the profile's `[services NAME]` section | the endpoint, unless `AWS_ENDPOINT_URL` or `--endpoint` set one |
//! | `aws_access_key_id`, `aws_secret_access_key`, `aws_session_token` | static credentials |
//! | `credential_process` | a command printing credentials as JSON (the AWS CLI's process format), run again every few minutes |
//! | `role_arn` (assume-role) or `sso_session` / `sso_start_url` (IAM Identity Center) | resolved by the AWS CLI: `aws configure export-credentials --profile NAME --format process` is run as the credential process |
//!
//! Credentials in the environment (`AWS_ACCESS_KEY_ID`, ...) win over the profile's, as with
//! the AWS CLI; with neither, the client's own chain (web identity, container and instance
//! metadata) applies. Assume-role and SSO profiles are handed to the AWS CLI instead of being
//! re-implemented: it is what `aws sso login` needs anyway, and it keeps its token cache and
//! role chaining exactly as AWS maintains them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use object_store::CredentialProvider;
use object_store::aws::AwsCredential;
use tokio::sync::Mutex;

use crate::error::{Error, Result};

/// What the selected profile says about S3 access.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfileSettings {
    /// The profile's name (`AWS_PROFILE`, or `default`).
    pub name: String,
    /// The profile's `region`, if set.
    pub region: Option<String>,
    /// The endpoint the profile names (`services` section `s3.endpoint_url`, or `endpoint_url`), if any.
    pub endpoint_url: Option<String>,
    /// Where the profile's credentials come from, if it names any.
    pub credentials: Option<ProfileCredentials>,
}

/// Where the profile's credentials come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProfileCredentials {
    /// Keys written in the credentials or config file.
    Static {
        /// `aws_access_key_id`.
        key_id: String,
        /// `aws_secret_access_key`.
        secret_key: String,
        /// `aws_session_token`, for temporary credentials.
        token: Option<String>,
    },
    /// A command printing `{"Version": 1, "AccessKeyId": ..., "SecretAccessKey": ...,
    /// "SessionToken": ...}`.
    Process(String),
}

type Sections = HashMap<String, HashMap<String, String>>;

/// Parses an AWS shared configuration file: `[section]` headers, `key = value` lines, `#` and
/// `;` comments, and indented `key = value` lines under a `name =` line (a sub-section, kept
/// as `name.key`).
fn parse(text: &str) -> Sections {
    let mut sections: Sections = HashMap::new();
    let mut current: Option<String> = None;
    let mut parent: Option<String> = None;
    for raw in text.lines() {
        let line = raw.trim_end();
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        if let Some(header) = trimmed
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
        {
            let name = header.split_whitespace().collect::<Vec<_>>().join(" ");
            sections.entry(name.clone()).or_default();
            current = Some(name);
            parent = None;
            continue;
        }
        let (Some(section), Some((key, value))) = (&current, trimmed.split_once('=')) else {
            continue;
        };
        let (key, value) = (key.trim().to_string(), value.trim().to_string());
        let indented = line.starts_with(' ') || line.starts_with('\t');
        let entries = sections.entry(section.clone()).or_default();
        match (&parent, indented) {
            (Some(parent), true) => {
                entries.insert(format!("{parent}.{key}"), value);
            }
            _ if value.is_empty() => parent = Some(key),
            _ => {
                parent = None;
                entries.insert(key, value);
            }
        }
    }
    sections
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .or_else(|| std::env::var_os("USERPROFILE"))
        .map(PathBuf::from)
}

fn file_from(variable: &str, default: &str) -> Option<PathBuf> {
    std::env::var_os(variable)
        .map(PathBuf::from)
        .or_else(|| home().map(|h| h.join(".aws").join(default)))
}

fn read_sections(path: Option<&Path>) -> Result<Option<Sections>> {
    let Some(path) = path else { return Ok(None) };
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(parse(&text))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Invalid(format!(
            "AWS shared configuration {}: {e}",
            path.display()
        ))),
    }
}

/// The selected profile, or `None` when there is no shared configuration and no
/// `AWS_PROFILE`. A profile named by `AWS_PROFILE` that no file defines is an error.
pub(crate) fn load() -> Result<Option<ProfileSettings>> {
    let named = std::env::var("AWS_PROFILE").ok().filter(|p| !p.is_empty());
    let config_path = file_from("AWS_CONFIG_FILE", "config");
    let credentials_path = file_from("AWS_SHARED_CREDENTIALS_FILE", "credentials");
    let config = read_sections(config_path.as_deref())?;
    let credentials = read_sections(credentials_path.as_deref())?;
    let name = named.clone().unwrap_or_else(|| "default".into());
    let config_section = if name == "default" {
        "default".to_string()
    } else {
        format!("profile {name}")
    };
    let from_config = config.as_ref().and_then(|c| c.get(&config_section));
    let from_credentials = credentials.as_ref().and_then(|c| c.get(&name));
    if from_config.is_none() && from_credentials.is_none() {
        if named.is_some() {
            let files: Vec<String> = [config_path, credentials_path]
                .into_iter()
                .flatten()
                .map(|p| p.display().to_string())
                .collect();
            return Err(Error::Invalid(format!(
                "AWS_PROFILE={name}: no such profile in {}",
                files.join(" or ")
            )));
        }
        return Ok(None);
    }
    // The credentials file wins for the keys both define.
    let mut profile = from_config.cloned().unwrap_or_default();
    profile.extend(from_credentials.cloned().unwrap_or_default());
    let get = |key: &str| profile.get(key).filter(|v| !v.is_empty()).cloned();
    let services_endpoint = get("services").and_then(|services| {
        config
            .as_ref()?
            .get(&format!("services {services}"))?
            .get("s3.endpoint_url")
            .cloned()
    });
    let credentials = match (
        get("aws_access_key_id"),
        get("aws_secret_access_key"),
        get("credential_process"),
    ) {
        (Some(key_id), Some(secret_key), _) => Some(ProfileCredentials::Static {
            key_id,
            secret_key,
            token: get("aws_session_token"),
        }),
        (_, _, Some(command)) => Some(ProfileCredentials::Process(command)),
        _ if ["role_arn", "sso_session", "sso_start_url"]
            .iter()
            .any(|key| get(key).is_some()) =>
        {
            Some(ProfileCredentials::Process(format!(
                "aws configure export-credentials --profile {name} --format process"
            )))
        }
        _ => None,
    };
    Ok(Some(ProfileSettings {
        region: get("region"),
        endpoint_url: services_endpoint.or_else(|| get("endpoint_url")),
        credentials,
        name,
    }))
}

/// How long credentials from a process are reused before it is run again: shorter than any
/// credentials AWS issues (assumed roles last at least 15 minutes).
const PROCESS_CREDENTIALS_REUSED_FOR: Duration = Duration::from_secs(300);

/// Credentials from a `credential_process` command, cached briefly.
#[derive(Debug)]
pub struct ProcessCredentials {
    command: String,
    profile: String,
    reuse_for: Duration,
    cached: Mutex<Option<(Instant, Arc<AwsCredential>)>>,
}

impl ProcessCredentials {
    /// Runs `command` for credentials, reusing its answer for five minutes.
    pub(crate) fn new(command: String, profile: String) -> Self {
        ProcessCredentials {
            command,
            profile,
            reuse_for: PROCESS_CREDENTIALS_REUSED_FOR,
            cached: Mutex::new(None),
        }
    }

    /// The same, reusing the answer for `reuse_for` instead (tests set a window that has
    /// already passed).
    #[cfg(test)]
    fn reusing_for(mut self, reuse_for: Duration) -> Self {
        self.reuse_for = reuse_for;
        self
    }

    fn run(command: &str, profile: &str) -> Result<AwsCredential, String> {
        let shell = if cfg!(windows) {
            ("cmd", "/C")
        } else {
            ("sh", "-c")
        };
        let output = std::process::Command::new(shell.0)
            .args([shell.1, command])
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("cannot run it: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "it exited with {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        let json: serde_json::Value = serde_json::from_slice(&output.stdout)
            .map_err(|e| format!("its output is not JSON: {e}"))?;
        let field = |name: &str| json.get(name).and_then(|v| v.as_str()).map(str::to_string);
        if json.get("Version").and_then(|v| v.as_u64()) != Some(1) {
            return Err("its output lacks \"Version\": 1".into());
        }
        match (field("AccessKeyId"), field("SecretAccessKey")) {
            (Some(key_id), Some(secret_key)) => Ok(AwsCredential {
                key_id,
                secret_key,
                token: field("SessionToken"),
            }),
            _ => Err(format!(
                "its output for profile {profile} lacks AccessKeyId or SecretAccessKey"
            )),
        }
    }
}

#[async_trait]
impl CredentialProvider for ProcessCredentials {
    type Credential = AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        let mut cached = self.cached.lock().await;
        if let Some((at, credential)) = cached.as_ref()
            && at.elapsed() < self.reuse_for
        {
            return Ok(credential.clone());
        }
        let (command, profile) = (self.command.clone(), self.profile.clone());
        // The command may take a while (an SSO refresh): off the async threads.
        let result = tokio::task::spawn_blocking(move || Self::run(&command, &profile))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r);
        match result {
            Ok(credential) => {
                let credential = Arc::new(credential);
                *cached = Some((Instant::now(), credential.clone()));
                Ok(credential)
            }
            Err(reason) => Err(object_store::Error::Generic {
                store: "S3",
                source: format!(
                    "AWS profile {}: credential process `{}`: {reason}",
                    self.profile, self.command
                )
                .into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_keys_comments_and_sub_sections_parse() {
        let text = "# comment\n[default]\nregion = eu-west-1\n\n[profile dev]\n\
                    region=us-east-2 \n; note\nservices = local\n[services local]\ns3 =\n  \
                    endpoint_url = http://localhost:4566\n";
        let sections = parse(text);
        assert_eq!(sections["default"]["region"], "eu-west-1");
        assert_eq!(sections["profile dev"]["region"], "us-east-2");
        assert_eq!(
            sections["services local"]["s3.endpoint_url"],
            "http://localhost:4566"
        );
    }

    /// A credential process that appends a line to `calls` each time it runs.
    #[cfg(unix)]
    fn counting_process(dir: &Path) -> (String, PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        let calls = dir.join("calls");
        let script = dir.join("creds.sh");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho run >> '{}'\n\
                 echo '{{\"Version\": 1, \"AccessKeyId\": \"AKIDTEST\", \"SecretAccessKey\": \"s\"}}'\n",
                calls.display()
            ),
        )
        .expect("script");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        (script.display().to_string(), calls)
    }

    #[cfg(unix)]
    fn runs(calls: &Path) -> usize {
        std::fs::read_to_string(calls).map_or(0, |text| text.lines().count())
    }

    /// README: "Process credentials are reused for five minutes."
    #[cfg(unix)]
    #[tokio::test]
    async fn process_credentials_are_reused_for_five_minutes_then_fetched_again() {
        assert_eq!(PROCESS_CREDENTIALS_REUSED_FOR, Duration::from_secs(5 * 60));
        let dir = tempfile::tempdir().expect("tempdir");
        let (command, calls) = counting_process(dir.path());

        // Two requests within the window (a test takes far less than five minutes): the
        // process runs once and both get its credentials.
        let provider = ProcessCredentials::new(command.clone(), "p".into());
        let first = provider.get_credential().await.expect("first");
        let second = provider.get_credential().await.expect("second");
        assert_eq!(first.key_id, "AKIDTEST");
        assert!(
            Arc::ptr_eq(&first, &second),
            "the second request ran it again"
        );
        assert_eq!(runs(&calls), 1);

        // Once the window has passed (here: a window of zero), each request runs it again:
        // the count above is this cache's doing, not something else caching.
        let expired = ProcessCredentials::new(command, "p".into()).reusing_for(Duration::ZERO);
        expired.get_credential().await.expect("third");
        expired.get_credential().await.expect("fourth");
        assert_eq!(runs(&calls), 3);
    }
}
