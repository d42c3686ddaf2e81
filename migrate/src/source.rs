//! Opening a legacy source named by the user: a local file (any local format, detected
//! from its bytes) or an object-store prefix (either S3 layout).

use std::path::Path;

use bytes::Bytes;
use maif_store::location::{Location, S3Settings, open_object_store};

use crate::error::{MigrateError, Result};
use crate::model::{LegacyArtifact, SourceKind};
use crate::s3::S3Source;
use crate::{local, sdk};

/// A legacy source, opened but not yet read.
pub enum Source {
    /// A whole local file (memory-mapped).
    File { name: String, data: Bytes },
    /// A prefix in an object store.
    Prefix(S3Source),
}

/// Opens `text`: a path is a local file; `s3://bucket/prefix`, `file:///dir` and
/// `memory://name/prefix` are object-store prefixes; a URL ending in `.maif` is a single
/// legacy file stored as one object.
pub async fn open(text: &str, settings: &S3Settings) -> Result<Source> {
    let concurrency = settings
        .concurrency
        .unwrap_or(maif_store::store::DEFAULT_CONCURRENCY);
    match Location::parse(text)? {
        Location::File(path) => Ok(Source::File {
            name: text.to_owned(),
            data: map_file(&path)?,
        }),
        Location::Objects { store, prefix } => Ok(Source::Prefix(S3Source {
            store: open_object_store(&store, settings)?,
            prefix: prefix.trim_matches('/').to_owned(),
            url: text.to_owned(),
            concurrency,
        })),
        Location::ObjectFile { store, key } => {
            let source = S3Source {
                store: open_object_store(&store, settings)?,
                prefix: String::new(),
                url: text.to_owned(),
                concurrency,
            };
            let data = source.fetch(&key, None).await?;
            Ok(Source::File {
                name: text.to_owned(),
                data,
            })
        }
    }
}

fn map_file(path: &Path) -> Result<Bytes> {
    let io = |source| MigrateError::Io {
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let metadata = file.metadata().map_err(io)?;
    if metadata.is_dir() {
        return Err(MigrateError::Usage(format!(
            "{} is a directory; a legacy S3 layout is read from its bucket (s3://bucket/prefix)",
            path.display()
        )));
    }
    if metadata.len() == 0 {
        return Ok(Bytes::new());
    }
    // SAFETY: the source is opened read-only and never written by this process; a
    // concurrent writer truncating it is outside what any reader can defend against.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
    Ok(Bytes::from_owner(map))
}

/// Reads a local legacy file: its format is detected from its bytes unless `force` names
/// one. `public_key` pins the signer of a Python SDK file.
pub fn read_file(
    name: &str,
    data: &Bytes,
    force: Option<SourceKind>,
    public_key: Option<[u8; 32]>,
) -> Result<LegacyArtifact> {
    let kind = match force {
        Some(kind) if kind.is_s3() => {
            return Err(MigrateError::Usage(format!(
                "--from {} names an S3 layout; {name} is a local file",
                kind.as_str()
            )));
        }
        Some(kind) => kind,
        None => local::detect(name, data)?,
    };
    let mut artifact = match kind {
        SourceKind::PythonSdk => sdk::read(name, data, public_key),
        SourceKind::BinaryFormat => local::binary_format::read(name, data),
        SourceKind::BlockStorage => local::block_storage::read(name, data),
        SourceKind::UnifiedLocal => local::unified::read(name, data),
        SourceKind::S3LayoutA | SourceKind::S3LayoutB => Err(MigrateError::Usage(format!(
            "{name}: an S3 layout cannot be read from a local file"
        ))),
    }?;
    // What re-creates the file byte for byte (`export original`).
    crate::export::keep_file_layout(&mut artifact, data);
    Ok(artifact)
}

/// Reads any opened source.
pub async fn read(
    source: &Source,
    force: Option<SourceKind>,
    public_key: Option<[u8; 32]>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<LegacyArtifact> {
    match source {
        Source::File { name, data } => read_file(name, data, force, public_key),
        Source::Prefix(prefix) => crate::s3::read(prefix, force, progress).await,
    }
}

/// The object store of a prefix source, for fetching bodies.
pub fn prefix(source: &Source) -> Option<&S3Source> {
    match source {
        Source::Prefix(prefix) => Some(prefix),
        Source::File { .. } => None,
    }
}
