//! Turning a user's location string into a store.
//!
//! | form | store |
//! |---|---|
//! | `notes.maif`, `/data/notes.maif` | a single file on the local file system |
//! | `file:///data/notes` | the object layout in a local folder |
//! | `s3://bucket/prefix` | the object layout under an S3 prefix |
//! | `memory://name/prefix` | the object layout in a named in-process memory store (tests) |
//!
//! S3 settings come from the standard AWS environment variables (`AWS_ENDPOINT_URL`,
//! `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, ...);
//! [`S3Settings`] overrides them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{BackoffConfig, ObjectStore, RetryConfig};

use crate::error::{Error, Result};
use crate::store::object::{DEFAULT_CONCURRENCY, memory_store};
use crate::store::{BlockStore, FileStore, ObjectBackend};

/// Where an artifact lives, as the user named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A single file on the local file system.
    File(PathBuf),
    /// The object layout in a local folder.
    Folder(PathBuf),
    /// The object layout under an S3 prefix.
    S3 { bucket: String, prefix: String },
    /// The object layout in a named in-process memory store.
    Memory { name: String, prefix: String },
}

/// Overrides for S3 settings that otherwise come from the environment.
#[derive(Debug, Clone, Default)]
pub struct S3Settings {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Use virtual-hosted-style requests (`bucket.host`) instead of path style.
    pub virtual_hosted_style: bool,
    /// Object requests in flight per operation.
    pub concurrency: Option<usize>,
}

fn split_bucket(rest: &str, text: &str) -> Result<(String, String)> {
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(Error::Invalid(format!(
            "location {text:?}: no bucket or store name after the scheme"
        )));
    }
    Ok((bucket.to_string(), prefix.trim_matches('/').to_string()))
}

impl Location {
    /// Parses a location (see the module documentation for the forms).
    pub fn parse(text: &str) -> Result<Self> {
        if text.is_empty() {
            return Err(Error::Invalid("empty location".into()));
        }
        let Some((scheme, rest)) = text.split_once("://") else {
            return Ok(Location::File(PathBuf::from(text)));
        };
        match scheme {
            "file" => {
                if !rest.starts_with('/') {
                    return Err(Error::Invalid(format!(
                        "location {text:?}: file:// needs an absolute path (file:///dir)"
                    )));
                }
                Ok(Location::Folder(PathBuf::from(rest)))
            }
            "s3" => {
                let (bucket, prefix) = split_bucket(rest, text)?;
                Ok(Location::S3 { bucket, prefix })
            }
            "memory" => {
                let (name, prefix) = split_bucket(rest, text)?;
                Ok(Location::Memory { name, prefix })
            }
            other => Err(Error::Invalid(format!(
                "location {text:?}: unknown scheme {other}:// (use a file path, file:///dir, s3://bucket/prefix or memory://name/prefix)"
            ))),
        }
    }

    /// Opens the store behind the location with S3 settings from the environment.
    pub fn store(&self) -> Result<Arc<dyn BlockStore>> {
        self.store_with(&S3Settings::default())
    }

    /// Opens the store behind the location.
    pub fn store_with(&self, s3: &S3Settings) -> Result<Arc<dyn BlockStore>> {
        let concurrency = s3.concurrency.unwrap_or(DEFAULT_CONCURRENCY);
        match self {
            Location::File(path) => Ok(Arc::new(FileStore::new(path.clone()))),
            Location::Folder(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| {
                    Error::Invalid(format!("creating folder {}: {e}", dir.display()))
                })?;
                let store =
                    object_store::local::LocalFileSystem::new_with_prefix(dir).map_err(|e| {
                        Error::Invalid(format!("opening folder {}: {e}", dir.display()))
                    })?;
                Ok(Arc::new(
                    ObjectBackend::new(Arc::new(store), ObjectPath::from(""), self.to_string())
                        .with_concurrency(concurrency),
                ))
            }
            Location::S3 { bucket, prefix } => {
                let store = s3_store(bucket, s3)?;
                Ok(Arc::new(
                    ObjectBackend::new(store, ObjectPath::from(prefix.as_str()), self.to_string())
                        .with_concurrency(concurrency),
                ))
            }
            Location::Memory { name, prefix } => Ok(Arc::new(
                ObjectBackend::new(
                    memory_store(name),
                    ObjectPath::from(prefix.as_str()),
                    self.to_string(),
                )
                .with_concurrency(concurrency),
            )),
        }
    }
}

/// An S3 client for `bucket`: settings from the environment, path-style requests, plain
/// HTTP allowed for local endpoints, and retries with exponential backoff on server errors,
/// throttling and dropped connections.
pub fn s3_store(bucket: &str, settings: &S3Settings) -> Result<Arc<dyn ObjectStore>> {
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_allow_http(true)
        .with_virtual_hosted_style_request(settings.virtual_hosted_style)
        .with_retry(RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(10),
                base: 2.0,
            },
            max_retries: 8,
            retry_timeout: Duration::from_secs(120),
        });
    if std::env::var_os("AWS_REGION").is_none() && std::env::var_os("AWS_DEFAULT_REGION").is_none()
    {
        builder = builder.with_region("us-east-1");
    }
    if let Some(endpoint) = &settings.endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    if let Some(region) = &settings.region {
        builder = builder.with_region(region);
    }
    let store = builder
        .build()
        .map_err(|e| Error::Invalid(format!("s3://{bucket}: cannot configure S3: {e}")))?;
    Ok(Arc::new(store))
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::File(path) => write!(f, "{}", path.display()),
            Location::Folder(dir) => write!(f, "file://{}", dir.display()),
            Location::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            Location::Memory { name, prefix } => write!(f, "memory://{name}/{prefix}"),
        }
    }
}
