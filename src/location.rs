//! Turning a user's location string into a store.
//!
//! | form | store |
//! |---|---|
//! | `notes.maif`, `/data/notes.maif` | a single file on the local file system |
//! | `file:///data/notes` | the object layout in a local folder |
//! | `s3://bucket/prefix` | the object layout under an S3 prefix |
//! | `memory://name/prefix` | the object layout in a named in-process memory store (tests) |
//! | `s3://bucket/archive/notes.maif` (any URL ending in `.maif`) | a single file stored as one object: read by ranged GETs, written only by `convert` |
//!
//! S3 settings come from the standard AWS environment variables (`AWS_ENDPOINT_URL`,
//! `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, ...),
//! then from the AWS shared configuration files and `AWS_PROFILE` as the AWS CLI reads them
//! (see [`crate::aws_profile`]); [`S3Settings`] overrides both.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::list::PaginatedListStore;
use object_store::path::Path as ObjectPath;
use object_store::{BackoffConfig, ObjectStore, RetryConfig};

use crate::error::{Error, Result};
use crate::store::object::{DEFAULT_CONCURRENCY, memory_store};
use crate::store::{BlockStore, FileStore, ListingOrder, ObjectBackend, ObjectFile, StoreError};

/// Where an artifact lives, as the user named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A single file on the local file system.
    File(PathBuf),
    /// The object layout under `prefix` of an object store.
    Objects {
        /// The store holding the objects.
        store: ObjectStoreName,
        /// The key prefix under which the layout's objects live.
        prefix: String,
    },
    /// A single-file image held in one object (a URL ending in `.maif`).
    ObjectFile {
        /// The store holding the object.
        store: ObjectStoreName,
        /// The object's key.
        key: String,
    },
}

/// Which object store a URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectStoreName {
    /// A local folder (`file:///dir`).
    Folder(PathBuf),
    /// An S3 bucket (`s3://bucket`).
    S3 {
        /// The bucket name.
        bucket: String,
    },
    /// A named in-process memory store (`memory://name`).
    Memory {
        /// The store's name: every location naming it in this process shares one store.
        name: String,
    },
}

/// Overrides for S3 settings that otherwise come from the environment.
#[derive(Debug, Clone, Default)]
pub struct S3Settings {
    /// The S3 endpoint URL (for S3-compatible services); beats `AWS_ENDPOINT_URL_S3` and the profile.
    pub endpoint: Option<String>,
    /// The AWS region; beats `AWS_REGION` and the profile.
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
        let (store, path) = match scheme {
            "file" => {
                if !rest.starts_with('/') {
                    return Err(Error::Invalid(format!(
                        "location {text:?}: file:// needs an absolute path (file:///dir)"
                    )));
                }
                match rest
                    .strip_suffix(".maif")
                    .map(|_| std::path::Path::new(rest))
                {
                    // file:///dir/a.maif: the object a.maif in the folder /dir.
                    Some(file) => {
                        let folder = file
                            .parent()
                            .unwrap_or(std::path::Path::new("/"))
                            .to_path_buf();
                        let name = file
                            .file_name()
                            .map(|n| n.to_string_lossy().to_string())
                            .unwrap_or_default();
                        (ObjectStoreName::Folder(folder), name)
                    }
                    None => (ObjectStoreName::Folder(PathBuf::from(rest)), String::new()),
                }
            }
            "s3" => {
                let (bucket, prefix) = split_bucket(rest, text)?;
                (ObjectStoreName::S3 { bucket }, prefix)
            }
            "memory" => {
                let (name, prefix) = split_bucket(rest, text)?;
                (ObjectStoreName::Memory { name }, prefix)
            }
            other => {
                return Err(Error::Invalid(format!(
                    "location {text:?}: unknown scheme {other}:// (use a file path, file:///dir, s3://bucket/prefix or memory://name/prefix)"
                )));
            }
        };
        if path.ends_with(".maif") {
            Ok(Location::ObjectFile { store, key: path })
        } else {
            Ok(Location::Objects {
                store,
                prefix: path,
            })
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
            Location::Objects { store, prefix } => {
                let (objects, first_key) = match store {
                    // One S3 client serves both: as an object store, and to list one key at a
                    // time when finding the newest commit.
                    ObjectStoreName::S3 { bucket } => {
                        let client = s3_client(bucket, s3)?;
                        let lister: Arc<dyn PaginatedListStore> = client.clone();
                        (client as Arc<dyn ObjectStore>, Some(lister))
                    }
                    other => (open_object_store(other, s3)?, None),
                };
                let backend = ObjectBackend::new(
                    objects,
                    ObjectPath::from(prefix.as_str()),
                    self.to_string(),
                )
                .with_concurrency(concurrency)
                .with_listing_order(listing_order(store));
                Ok(Arc::new(match first_key {
                    Some(lister) => backend.with_first_key_listing(lister),
                    None => backend,
                }))
            }
            Location::ObjectFile { store, key } => Ok(Arc::new(ObjectFile::new(
                open_object_store(store, s3)?,
                ObjectPath::from(key.as_str()),
                self.to_string(),
            ))),
        }
    }
}

/// How the store a location names lists keys: S3 and memory in lexicographic order, so one
/// LIST finds the newest commit; a local folder in no order.
pub(crate) fn listing_order(name: &ObjectStoreName) -> ListingOrder {
    match name {
        ObjectStoreName::S3 { .. } | ObjectStoreName::Memory { .. } => ListingOrder::Lexicographic,
        ObjectStoreName::Folder(_) => ListingOrder::Unordered,
    }
}

/// The object store a location names (a folder, an S3 bucket or a memory store).
pub fn open_object_store(name: &ObjectStoreName, s3: &S3Settings) -> Result<Arc<dyn ObjectStore>> {
    match name {
        ObjectStoreName::Folder(dir) => {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
                location: dir.display().to_string(),
                action: "creating the folder".into(),
                source,
            })?;
            // Durable when a write returns, as S3 is: each object and its directory entry are
            // synced before the put reports success.
            let store = object_store::local::LocalFileSystem::new_with_prefix(dir)
                .map_err(|e| StoreError::Object {
                    location: dir.display().to_string(),
                    key: String::new(),
                    action: "opening the folder for".into(),
                    source: Box::new(e),
                })?
                .with_fsync(true);
            Ok(Arc::new(store))
        }
        ObjectStoreName::S3 { bucket } => s3_store(bucket, s3),
        ObjectStoreName::Memory { name } => Ok(memory_store(name)),
    }
}

/// An S3 client for `bucket`: settings from the environment, path-style requests, plain
/// HTTP allowed for local endpoints, and retries with exponential backoff on server errors,
/// throttling and dropped connections.
pub(crate) fn s3_store(bucket: &str, settings: &S3Settings) -> Result<Arc<dyn ObjectStore>> {
    Ok(s3_client(bucket, settings)?)
}

/// [`s3_store`] as its own type, which can also list a page of a chosen size.
pub(crate) fn s3_client(
    bucket: &str,
    settings: &S3Settings,
) -> Result<Arc<object_store::aws::AmazonS3>> {
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
    let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    // The service-specific variable wins over the general one, as with the AWS CLI.
    if let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL_S3")
        && !endpoint.is_empty()
    {
        builder = builder.with_endpoint(endpoint);
    }
    let profile = crate::aws_profile::load()?;
    let env_region = set("AWS_REGION") || set("AWS_DEFAULT_REGION");
    match profile.as_ref().and_then(|p| p.region.as_ref()) {
        Some(region) if !env_region => builder = builder.with_region(region),
        None if !env_region => builder = builder.with_region("us-east-1"),
        _ => {}
    }
    if let Some(profile) = &profile {
        if let Some(endpoint) = &profile.endpoint_url
            && !set("AWS_ENDPOINT_URL")
            && !set("AWS_ENDPOINT_URL_S3")
        {
            builder = builder.with_endpoint(endpoint);
        }
        // Credentials in the environment win, as with the AWS CLI.
        if !set("AWS_ACCESS_KEY_ID") {
            match &profile.credentials {
                Some(crate::aws_profile::ProfileCredentials::Static {
                    key_id,
                    secret_key,
                    token,
                }) => {
                    builder = builder
                        .with_access_key_id(key_id)
                        .with_secret_access_key(secret_key);
                    if let Some(token) = token {
                        builder = builder.with_token(token);
                    }
                }
                Some(crate::aws_profile::ProfileCredentials::Process(command)) => {
                    builder = builder.with_credentials(Arc::new(
                        crate::aws_profile::ProcessCredentials::new(
                            command.clone(),
                            profile.name.clone(),
                        ),
                    ));
                }
                None => {}
            }
        }
    }
    if let Some(endpoint) = &settings.endpoint {
        // `from_env` keeps AWS_ENDPOINT_URL_S3 as the service endpoint, which the builder
        // prefers to `with_endpoint`: the flag sets both, or the variable would beat it.
        builder = builder
            .with_config(AmazonS3ConfigKey::S3Endpoint, endpoint)
            .with_endpoint(endpoint);
    }
    if let Some(region) = &settings.region {
        builder = builder.with_region(region);
    }
    let store = builder.build().map_err(|e| StoreError::Object {
        location: format!("s3://{bucket}"),
        key: String::new(),
        action: "configuring S3 for".into(),
        source: Box::new(e),
    })?;
    Ok(Arc::new(store))
}

impl std::fmt::Display for ObjectStoreName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ObjectStoreName::Folder(dir) => write!(f, "file://{}", dir.display()),
            ObjectStoreName::S3 { bucket } => write!(f, "s3://{bucket}"),
            ObjectStoreName::Memory { name } => write!(f, "memory://{name}"),
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::File(path) => write!(f, "{}", path.display()),
            Location::Objects {
                store: ObjectStoreName::Folder(dir),
                prefix,
            } if prefix.is_empty() => {
                write!(f, "file://{}", dir.display())
            }
            Location::Objects { store, prefix } => write!(f, "{store}/{prefix}"),
            Location::ObjectFile { store, key } => write!(f, "{store}/{key}"),
        }
    }
}
