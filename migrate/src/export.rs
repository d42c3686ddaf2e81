//! `export original`: re-creates the exact legacy source from a migrated artifact.
//!
//! The migrator keeps, beside the blocks, the evidence that puts the source back together
//! (docs/MIGRATION.md, "Exporting the original"):
//!
//! * a legacy **file** is kept as a layout (`original_file.json`): the file in order, as
//!   pieces that are either a block's payload (the exact legacy bytes, what `maif cat`
//!   prints), the exact stored bytes of a block the migration decoded (binary_format zlib:
//!   `legacy.stored_base64`), one of the source sections the migration keeps anyway
//!   (headers, indexes, SDK sections), or a run of the remaining bytes (record headers,
//!   metadata JSON, anything not migrated), which are kept once, in `original_file_gaps`;
//! * a legacy **S3 prefix** is kept as its object list (`original_objects.json`): every key
//!   under the prefix, relative to it, with where its body comes from (a block's payload,
//!   an index kept as a section, an empty deletion record, or the object kept verbatim as a
//!   section) and its user metadata (inline, or the block's verbatim
//!   `legacy.object_metadata`).
//!
//! Both live in the migration's source-sections block (`LGCY`). Export reads them, and every
//! block it splices in, through [`ArtifactReader`], which checks each record against the
//! signed commit, and it checks the rebuilt file against the length and SHA-256 the layout
//! recorded before anything appears at the destination.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _};
use maif_store::artifact::{ArtifactReader, format_id, parse_id};
use maif_store::format::payload::content_of;
use maif_store::format::provenance::Action;
use maif_store::location::{Location, ObjectStoreName, S3Settings, open_object_store};
use maif_store::store::BlockStore;
use object_store::path::Path as ObjectPath;
use object_store::{
    Attribute, Attributes, ObjectStore, ObjectStoreExt as _, PutMode, PutOptions, PutPayload,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

use crate::error::{MigrateError, Result};
use crate::model::{Body, LegacyArtifact, Severity, SourceKind, sha256_hex};
use crate::s3::{ListedObject, S3Source};

/// The section holding a legacy file's layout.
pub const FILE_LAYOUT_SECTION: &str = "original_file.json";
/// The section holding the file's bytes that no block, decoded block or section holds.
pub const FILE_GAPS_SECTION: &str = "original_file_gaps";
/// The section holding a legacy prefix's object list.
pub const OBJECTS_SECTION: &str = "original_objects.json";
/// Objects under a legacy prefix that are not migrated blocks are kept as sections named
/// this followed by their key relative to the prefix.
pub const KEPT_OBJECT_PREFIX: &str = "original_object:";
/// At most this many bytes of objects that are not blocks (stray objects, encrypted bodies,
/// `data/` objects without block metadata) are kept per prefix; beyond it they are listed
/// as not kept, and exporting the original is refused.
pub const MAX_KEPT_OBJECT_BYTES: u64 = 64 << 20;
/// A rebuilt single file up to this size is uploaded in one request; above, in parts.
const SINGLE_PUT_BYTES: u64 = 64 << 20;
const PART_BYTES: usize = 16 << 20;
/// Layout version written and understood.
const EVIDENCE_VERSION: u32 = 1;

// ---------------------------------------------------------------------------------------
// Evidence kept by the migrator
// ---------------------------------------------------------------------------------------

/// One piece of a legacy file, in file order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Piece {
    /// The next `n` bytes of the gaps section.
    Gap(u64),
    /// A whole source section, by name.
    Section(String),
    /// The payload of block `id` at `version`, `length` bytes (framing removed).
    Block(String, u32, u64),
    /// The stored bytes of block `id` at `version` (`legacy.stored_base64`), `length` bytes.
    Stored(String, u32, u64),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FileLayout {
    version: u32,
    length: u64,
    sha256: String,
    pieces: Vec<Piece>,
}

/// Where an object's body comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ObjectBody {
    /// The payload of block `id` at `version`.
    Block(String, u32),
    /// A whole source section (an index, or an object kept verbatim).
    Section(String),
    /// Zero bytes (a layout-B deletion record).
    Empty,
    /// Not kept, and why: exporting the original is refused.
    NotKept(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ObjectEntry {
    /// The key relative to the prefix.
    key: String,
    size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    etag: Option<String>,
    /// User metadata; absent when it is the block's `legacy.object_metadata`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    metadata: Option<BTreeMap<String, String>>,
    body: ObjectBody,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ObjectsManifest {
    version: u32,
    prefix: String,
    objects: Vec<ObjectEntry>,
}

/// Where `part` lies inside `whole`, when it is a view of those bytes (the local readers
/// slice their payloads and sections out of the mapped file).
fn view_offset(whole: &Bytes, part: &Bytes) -> Option<usize> {
    if part.is_empty() {
        return None;
    }
    let offset = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    (offset.checked_add(part.len())? <= whole.len()).then_some(offset)
}

/// A decoded block's exact stored bytes and where they lie in the file: the evidence's
/// `stored_base64`, found right after the block header (`offset` + `header_hex`) and
/// equal to the file's bytes there.
fn stored_bytes_at(block: &crate::model::LegacyBlock, data: &[u8]) -> Option<(usize, usize)> {
    let stored = block.evidence.get("stored_base64")?.as_str()?;
    let stored = base64::engine::general_purpose::STANDARD
        .decode(stored)
        .ok()?;
    let offset = usize::try_from(block.evidence.get("offset")?.as_u64()?).ok()?;
    let header = block.evidence.get("header_hex")?.as_str()?.len() / 2;
    let at = offset.checked_add(header)?;
    let end = at.checked_add(stored.len())?;
    (!stored.is_empty() && data.get(at..end)? == stored.as_slice()).then_some((at, stored.len()))
}

/// Adds the layout of the legacy file `data` (and the bytes no block or section holds) to
/// `art.sections`, so that the migrated artifact can give the file back byte for byte.
pub(crate) fn keep_file_layout(art: &mut LegacyArtifact, data: &Bytes) {
    let mut names: HashMap<&str, usize> = HashMap::new();
    for (name, _) in &art.sections {
        *names.entry(name.as_str()).or_insert(0) += 1;
    }
    // (offset, length, piece) for every run of the file something in the artifact holds.
    let mut held: Vec<(usize, usize, Piece)> = Vec::new();
    for (name, bytes) in &art.sections {
        if names.get(name.as_str()) == Some(&1)
            && let Some(at) = view_offset(data, bytes)
        {
            held.push((at, bytes.len(), Piece::Section(name.clone())));
        }
    }
    for (block, version) in art.blocks.iter().zip(art.migrated_versions()) {
        let Some(version) = version else { continue };
        let id = format_id(&block.block_id);
        let payload = match &block.body {
            Body::Inline(bytes) => view_offset(data, bytes).map(|at| (at, bytes.len())),
            _ => None,
        };
        if let Some((at, len)) = payload {
            held.push((at, len, Piece::Block(id, version, len as u64)));
        } else if let Some((at, len)) = stored_bytes_at(block, data) {
            held.push((at, len, Piece::Stored(id, version, len as u64)));
        }
    }
    held.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    let mut pieces = Vec::with_capacity(held.len() * 2 + 1);
    let mut gaps = Vec::new();
    let mut cursor = 0usize;
    for (at, len, piece) in held {
        if at < cursor {
            continue; // overlaps a piece already taken: its bytes are covered
        }
        if at > cursor {
            gaps.extend_from_slice(&data[cursor..at]);
            pieces.push(Piece::Gap((at - cursor) as u64));
        }
        pieces.push(piece);
        cursor = at + len;
    }
    if cursor < data.len() {
        gaps.extend_from_slice(&data[cursor..]);
        pieces.push(Piece::Gap((data.len() - cursor) as u64));
    }
    let layout = FileLayout {
        version: EVIDENCE_VERSION,
        length: data.len() as u64,
        sha256: sha256_hex(data),
        pieces,
    };
    match serde_json::to_vec(&layout) {
        Ok(json) => {
            art.sections
                .push((FILE_GAPS_SECTION.into(), Bytes::from(gaps)));
            art.sections
                .push((FILE_LAYOUT_SECTION.into(), Bytes::from(json)));
        }
        Err(e) => art.finding(
            Severity::Warning,
            "export_evidence",
            art.source.clone(),
            format!("the file layout could not be recorded ({e}); the original cannot be exported"),
        ),
    }
}

/// The key of `key` relative to the source prefix.
fn relative_key<'k>(source: &S3Source, key: &'k str) -> &'k str {
    if source.prefix.is_empty() {
        key
    } else {
        key.strip_prefix(source.prefix.as_str())
            .and_then(|k| k.strip_prefix('/'))
            .unwrap_or(key)
    }
}

/// Adds the object list of the legacy prefix to `art.sections`: every listed object, with
/// where its body and user metadata are kept. Objects that are neither blocks, indexes nor
/// deletion records are fetched and kept verbatim, up to [`MAX_KEPT_OBJECT_BYTES`].
pub(crate) async fn keep_object_list(
    art: &mut LegacyArtifact,
    source: &S3Source,
    mut objects: Vec<ListedObject>,
) -> Result<()> {
    objects.sort_by(|a, b| a.key.cmp(&b.key));
    objects.dedup_by(|a, b| a.key == b.key);
    // Block objects, by key, with the version the migrator writes them as.
    let mut blocks: HashMap<String, (String, u32)> = HashMap::new();
    let mut deletion_records: HashMap<String, BTreeMap<String, String>> = HashMap::new();
    for (block, version) in art.blocks.iter().zip(art.migrated_versions()) {
        if let Some(Value::Array(records)) = block.evidence.get("deletion_records") {
            for record in records {
                if let (Some(key), Some(Value::Object(metadata))) = (
                    record.get("key").and_then(Value::as_str),
                    record.get("object_metadata"),
                ) {
                    let metadata = metadata
                        .iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                        .collect();
                    deletion_records.insert(key.to_owned(), metadata);
                }
            }
        }
        let Some(version) = version else { continue };
        if let Body::Object { key, .. } = &block.body {
            blocks.insert(key.clone(), (format_id(&block.block_id), version));
        }
    }
    let sections: HashMap<String, String> = art
        .sections
        .iter()
        .map(|(name, _)| (source.key(name), name.clone()))
        .collect();

    let mut entries = Vec::with_capacity(objects.len());
    let mut keep = Vec::new();
    for object in &objects {
        let key = relative_key(source, &object.key).to_owned();
        let mut entry = ObjectEntry {
            key: key.clone(),
            size: object.size,
            etag: object.etag.clone(),
            metadata: None,
            body: ObjectBody::Empty,
        };
        if let Some((id, version)) = blocks.get(&object.key) {
            entry.body = ObjectBody::Block(id.clone(), *version);
        } else if let (Some(metadata), 0) = (deletion_records.get(&object.key), object.size) {
            entry.metadata = Some(metadata.clone());
        } else {
            entry.body = match sections.get(&object.key) {
                Some(name) => ObjectBody::Section(name.clone()),
                None => ObjectBody::NotKept(String::new()),
            };
            keep.push(entries.len());
        }
        entries.push(entry);
    }
    // HEAD (user metadata) and, for objects kept verbatim, GET, with bounded concurrency.
    let heads: Vec<(usize, crate::s3::ObjectHead)> = futures::stream::iter(keep.iter().copied())
        .map(|i| {
            let key = objects[i].key.clone();
            async move { source.head(&key).await.map(|head| (i, head)) }
        })
        .buffered(source.concurrency.max(1))
        .try_collect()
        .await?;
    let mut budget = MAX_KEPT_OBJECT_BYTES;
    for (i, head) in heads {
        let object = &objects[i];
        let entry = &mut entries[i];
        if head.etag.is_some() && object.etag.is_some() && head.etag != object.etag {
            return Err(MigrateError::Usage(format!(
                "object {} changed while the prefix was read (ETag {:?}, then {:?}); run again",
                object.key, object.etag, head.etag
            )));
        }
        entry.metadata = Some(head.metadata);
        if !matches!(entry.body, ObjectBody::NotKept(_)) {
            continue;
        }
        if head.size > budget {
            let why = format!(
                "{} bytes: over the {MAX_KEPT_OBJECT_BYTES}-byte budget for objects that are not blocks",
                head.size
            );
            art.finding(
                Severity::Warning,
                "original_object_not_kept",
                &object.key,
                format!("not kept for export of the original ({why})"),
            );
            entry.body = ObjectBody::NotKept(why);
            continue;
        }
        let body = source.fetch(&object.key, object.etag.as_deref()).await?;
        budget = budget.saturating_sub(body.len() as u64);
        entry.size = body.len() as u64;
        let name = format!("{KEPT_OBJECT_PREFIX}{}", entry.key);
        entry.body = ObjectBody::Section(name.clone());
        art.sections.push((name, body));
    }
    let manifest = ObjectsManifest {
        version: EVIDENCE_VERSION,
        prefix: source.prefix.clone(),
        objects: entries,
    };
    let json = serde_json::to_vec(&manifest)
        .map_err(|e| MigrateError::Usage(format!("recording the object list: {e}")))?;
    art.sections
        .push((OBJECTS_SECTION.into(), Bytes::from(json)));
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Export
// ---------------------------------------------------------------------------------------

/// How to export.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Replace destination files or objects that already exist (refused otherwise).
    pub overwrite: bool,
    /// Object requests in flight.
    pub concurrency: usize,
}

impl Default for ExportOptions {
    fn default() -> Self {
        Self {
            overwrite: false,
            concurrency: maif_store::store::DEFAULT_CONCURRENCY,
        }
    }
}

/// What an export wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ExportSummary {
    /// The legacy format re-created.
    pub kind: SourceKind,
    /// The legacy source the artifact was migrated from (`migrated_from`).
    pub source: String,
    pub destination: String,
    /// Files or objects the original has (all of them are at the destination now).
    pub objects: u64,
    /// Body bytes of those files or objects.
    pub bytes: u64,
    /// Of `objects`, those found at the destination already, holding exactly what the export
    /// writes (left by an interrupted or earlier export of the same original) and kept.
    pub already_there: u64,
}

impl std::fmt::Display for ExportSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "re-created the {} source {} at {}: {} {}, {} bytes",
            self.kind.as_str(),
            self.source,
            self.destination,
            self.objects,
            if self.kind.is_s3() { "objects" } else { "file" },
            self.bytes
        )?;
        if self.already_there > 0 {
            write!(
                f,
                " ({} already there with the same bytes and metadata)",
                self.already_there
            )?;
        }
        Ok(())
    }
}

/// Where the original goes.
pub enum Destination {
    /// A local file (file sources).
    File(PathBuf),
    /// An object store: for an S3 source, the prefix the objects are re-created under; for
    /// a file source, the key of the one object that receives the file.
    Objects {
        store: Arc<dyn ObjectStore>,
        /// Prefix or key, without leading or trailing `/`.
        path: String,
        /// The location as the user named it, for messages.
        name: String,
        /// Whether the store keeps user metadata (`x-amz-meta-*`): S3 and memory do, a
        /// local folder does not.
        user_metadata: bool,
    },
}

impl Destination {
    /// A destination named like any `maif` location: a file path, `s3://bucket/prefix`,
    /// `memory://name/prefix`, `file:///dir` (objects without user metadata only), or a URL
    /// ending in `.maif` (one object).
    pub fn parse(text: &str, settings: &S3Settings) -> Result<Self> {
        let (store, path) = match Location::parse(text)? {
            Location::File(path) => return Ok(Destination::File(path)),
            Location::Objects { store, prefix } => (store, prefix),
            Location::ObjectFile { store, key } => (store, key),
        };
        let user_metadata = !matches!(store, ObjectStoreName::Folder(_));
        Ok(Destination::Objects {
            store: open_object_store(&store, settings)?,
            path: path.trim_matches('/').to_owned(),
            name: text.to_owned(),
            user_metadata,
        })
    }

    fn name(&self) -> String {
        match self {
            Destination::File(path) => path.display().to_string(),
            Destination::Objects { name, .. } => name.clone(),
        }
    }
}

/// Re-creates the legacy source of the migrated artifact in `artifact` at `destination`
/// (a location string, see [`Destination::parse`]).
pub async fn export_original(
    artifact: Arc<dyn BlockStore>,
    destination: &str,
    settings: &S3Settings,
    options: &ExportOptions,
) -> Result<ExportSummary> {
    let destination = Destination::parse(destination, settings)?;
    export_original_to(artifact, destination, options).await
}

/// [`export_original`] to an already opened destination.
pub async fn export_original_to(
    artifact: Arc<dyn BlockStore>,
    destination: Destination,
    options: &ExportOptions,
) -> Result<ExportSummary> {
    let location = artifact.location().to_owned();
    let reader = ArtifactReader::open(artifact).await?;
    let origin = Origin::read(&reader, &location).await?;
    if origin.kind.is_s3() {
        export_objects(&reader, &origin, destination, options).await
    } else {
        export_file(&reader, &origin, destination, options).await
    }
}

fn refuse(artifact: &str, reason: impl Into<String>) -> MigrateError {
    MigrateError::Export {
        artifact: artifact.to_owned(),
        reason: reason.into(),
    }
}

/// The migration's identity and its source-sections block, read and checked.
struct Origin {
    location: String,
    kind: SourceKind,
    source: String,
    sections_id: String,
    payload: Bytes,
    /// name -> (offset, length, sha256)
    sections: HashMap<String, (usize, usize, String)>,
}

impl Origin {
    async fn read(reader: &ArtifactReader, location: &str) -> Result<Self> {
        let metadata = reader.metadata()?;
        let Some(source) = metadata.custom.get("migrated_from").cloned() else {
            return Err(refuse(
                location,
                "it is not a migrated artifact: its metadata has no `migrated_from` (only an \
                 artifact written by maif-migrate has an original to export)",
            ));
        };
        let format = metadata
            .custom
            .get("legacy_format")
            .cloned()
            .unwrap_or_default();
        let kinds = [
            SourceKind::S3LayoutA,
            SourceKind::S3LayoutB,
            SourceKind::BinaryFormat,
            SourceKind::BlockStorage,
            SourceKind::UnifiedLocal,
            SourceKind::PythonSdk,
        ];
        let Some(kind) = kinds.into_iter().find(|k| k.as_str() == format) else {
            return Err(refuse(
                location,
                format!(
                    "its metadata names the legacy format {format:?}, which is not one this tool writes"
                ),
            ));
        };
        if !reader
            .provenance()
            .await?
            .iter()
            .any(|e| e.action == Action::Migrate)
        {
            return Err(refuse(
                location,
                format!(
                    "the migration of {source} is not complete (no `migrate` provenance entry); \
                     run the migration again to finish it"
                ),
            ));
        }
        let id = crate::migrate::sections_block_id_for(kind, &source);
        let sections_id = format_id(&id);
        let block = match reader.get(&id, None).await {
            Ok(block) => block,
            Err(maif_store::Error::UnknownBlock { .. }) => {
                return Err(refuse(
                    location,
                    format!(
                        "the source-sections block {sections_id} (LGCY), which keeps what \
                         re-creates {source}, is missing"
                    ),
                ));
            }
            Err(e) => return Err(e.into()),
        };
        let fields = block.metadata()?;
        let legacy = fields.get("legacy").and_then(Value::as_object);
        if block.info.entry.block_type != crate::migrate::SOURCE_SECTIONS_TYPE
            || legacy.and_then(|l| l.get("kind")).and_then(Value::as_str) != Some("source-sections")
        {
            return Err(refuse(
                location,
                format!("block {sections_id} is not the migration's source-sections block"),
            ));
        }
        let payload = block.data;
        let mut sections = HashMap::new();
        for section in legacy
            .and_then(|l| l.get("sections"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = section.get("name").and_then(Value::as_str);
            let offset = section.get("offset").and_then(Value::as_u64);
            let length = section.get("length").and_then(Value::as_u64);
            let sha = section.get("sha256").and_then(Value::as_str);
            let (Some(name), Some(offset), Some(length), Some(sha)) = (name, offset, length, sha)
            else {
                return Err(refuse(
                    location,
                    format!("block {sections_id}: a section entry is unreadable: {section}"),
                ));
            };
            let range = usize::try_from(offset)
                .ok()
                .zip(usize::try_from(length).ok())
                .filter(|(o, l)| o.checked_add(*l).is_some_and(|end| end <= payload.len()));
            let Some((offset, length)) = range else {
                return Err(refuse(
                    location,
                    format!(
                        "block {sections_id}: section {name} ({offset}+{length}) runs past the \
                         {}-byte payload",
                        payload.len()
                    ),
                ));
            };
            sections.insert(name.to_owned(), (offset, length, sha.to_owned()));
        }
        Ok(Self {
            location: location.to_owned(),
            kind,
            source,
            sections_id,
            payload,
            sections,
        })
    }

    /// A section's bytes, checked against the SHA-256 its entry records.
    fn section(&self, name: &str) -> Result<Bytes> {
        let Some((offset, length, sha)) = self.sections.get(name) else {
            return Err(refuse(
                &self.location,
                format!(
                    "the source-sections block {} has no section {name}: the artifact was \
                     migrated before the evidence that re-creates the original was kept; \
                     migrate {} again to export it",
                    self.sections_id, self.source
                ),
            ));
        };
        let bytes = self.payload.slice(*offset..*offset + *length);
        if sha256_hex(&bytes) != *sha {
            return Err(refuse(
                &self.location,
                format!(
                    "section {name} of block {} does not match its recorded SHA-256",
                    self.sections_id
                ),
            ));
        }
        Ok(bytes)
    }

    fn json<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<T> {
        let bytes = self.section(name)?;
        serde_json::from_slice(&bytes).map_err(|e| {
            refuse(
                &self.location,
                format!(
                    "section {name} of block {} is unreadable: {e}",
                    self.sections_id
                ),
            )
        })
    }
}

/// The bytes a block contributes: its payload as a reader shows it (framing removed), or
/// its exact stored bytes (`legacy.stored_base64`), read and verified; with its metadata.
async fn block_bytes(
    reader: &ArtifactReader,
    origin: &Origin,
    id: &str,
    version: u32,
    stored: bool,
) -> Result<(Bytes, Map<String, Value>)> {
    let block_id = parse_id(id).map_err(|_| {
        refuse(
            &origin.location,
            format!("the recorded layout names an invalid block id {id:?}"),
        )
    })?;
    let info = match reader.find(&block_id, Some(version)).await {
        Ok(info) => info,
        Err(maif_store::Error::UnknownBlock { .. } | maif_store::Error::NoSuchVersion { .. }) => {
            return Err(refuse(
                &origin.location,
                format!(
                    "block {id} version {version}, which holds part of the original, is missing"
                ),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let block = reader.read(&info).await?;
    let metadata = block.metadata()?;
    let bytes = if stored {
        let text = metadata
            .get("legacy")
            .and_then(|l| l.get("stored_base64"))
            .and_then(Value::as_str)
            .ok_or_else(|| {
                refuse(
                    &origin.location,
                    format!("block {id} version {version} has no legacy.stored_base64 (its stored bytes)"),
                )
            })?;
        Bytes::from(
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|e| {
                    refuse(
                        &origin.location,
                        format!(
                            "block {id} version {version}: legacy.stored_base64 is not base64: {e}"
                        ),
                    )
                })?,
        )
    } else {
        Bytes::from(content_of(info.entry.block_type, &block.data).map_err(|e| {
            refuse(
                &origin.location,
                format!("block {id} version {version}: its payload does not decode: {e}"),
            )
        })?)
    };
    Ok((bytes, metadata))
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> MigrateError + '_ {
    move |source| MigrateError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Removes a temporary file when dropped (an export that fails leaves nothing behind).
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn export_file(
    reader: &ArtifactReader,
    origin: &Origin,
    destination: Destination,
    options: &ExportOptions,
) -> Result<ExportSummary> {
    let layout: FileLayout = origin.json(FILE_LAYOUT_SECTION)?;
    if layout.version != EVIDENCE_VERSION {
        return Err(refuse(
            &origin.location,
            format!(
                "file layout version {} is not {EVIDENCE_VERSION}",
                layout.version
            ),
        ));
    }
    let gaps = origin.section(FILE_GAPS_SECTION)?;
    let destination_name = destination.name();
    // Refuse an existing destination before doing any work (checked again when committing).
    match &destination {
        Destination::File(path) if !options.overwrite && path.exists() => {
            return Err(refuse(
                &origin.location,
                format!(
                    "{} already exists; refusing to overwrite it",
                    path.display()
                ),
            ));
        }
        Destination::Objects { path, name, .. } if path.is_empty() => {
            return Err(MigrateError::Usage(format!(
                "{name}: a legacy file is re-created as one object; name its key (s3://bucket/dir/name)"
            )));
        }
        _ => {}
    }
    let temp = match &destination {
        Destination::File(path) => {
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            dir.join(format!(
                ".{name}.maif-export-{}.partial",
                uuid::Uuid::new_v4().simple()
            ))
        }
        Destination::Objects { .. } => std::env::temp_dir().join(format!(
            "maif-export-{}.partial",
            uuid::Uuid::new_v4().simple()
        )),
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)
        .map_err(io_error(&temp))?;
    let temp = TempFile(temp);
    let mut hasher = Sha256::new();
    let mut written = 0u64;
    let mut gap_at = 0usize;
    for piece in &layout.pieces {
        let bytes = match piece {
            Piece::Gap(n) => {
                let n = usize::try_from(*n).unwrap_or(usize::MAX);
                let Some(end) = gap_at.checked_add(n).filter(|end| *end <= gaps.len()) else {
                    return Err(refuse(
                        &origin.location,
                        format!(
                            "the file layout takes more gap bytes than {FILE_GAPS_SECTION} holds ({})",
                            gaps.len()
                        ),
                    ));
                };
                let bytes = gaps.slice(gap_at..end);
                gap_at = end;
                bytes
            }
            Piece::Section(name) => origin.section(name)?,
            Piece::Block(id, version, length) | Piece::Stored(id, version, length) => {
                let stored = matches!(piece, Piece::Stored(..));
                let (bytes, _) = block_bytes(reader, origin, id, *version, stored).await?;
                if bytes.len() as u64 != *length {
                    return Err(refuse(
                        &origin.location,
                        format!(
                            "block {id} version {version} gives {} bytes where the original \
                             holds {length}",
                            bytes.len()
                        ),
                    ));
                }
                bytes
            }
        };
        written += bytes.len() as u64;
        if written > layout.length {
            return Err(refuse(
                &origin.location,
                format!("the pieces run past the original's {} bytes", layout.length),
            ));
        }
        hasher.update(&bytes);
        file.write_all(&bytes).map_err(io_error(&temp.0))?;
    }
    let sha = hex::encode(hasher.finalize());
    if written != layout.length || gap_at != gaps.len() || sha != layout.sha256 {
        return Err(refuse(
            &origin.location,
            format!(
                "the rebuilt file ({written} bytes, SHA-256 {sha}) is not the original \
                 ({} bytes, SHA-256 {}); nothing was written",
                layout.length, layout.sha256
            ),
        ));
    }
    file.sync_all().map_err(io_error(&temp.0))?;
    drop(file);
    match destination {
        Destination::File(path) => {
            if options.overwrite {
                std::fs::rename(&temp.0, &path).map_err(io_error(&path))?;
            } else {
                // A hard link never replaces an existing name.
                std::fs::hard_link(&temp.0, &path).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::AlreadyExists {
                        refuse(
                            &origin.location,
                            format!(
                                "{} already exists; refusing to overwrite it",
                                path.display()
                            ),
                        )
                    } else {
                        io_error(&path)(e)
                    }
                })?;
            }
        }
        Destination::Objects {
            store, path, name, ..
        } => upload_file(&store, &path, &name, &temp.0, written, options).await?,
    }
    Ok(ExportSummary {
        kind: origin.kind,
        source: origin.source.clone(),
        destination: destination_name,
        objects: 1,
        bytes: written,
        already_there: 0,
    })
}

fn object_path(key: &str) -> Result<ObjectPath> {
    ObjectPath::parse(key).map_err(|e| MigrateError::Usage(format!("object key {key:?}: {e}")))
}

fn put_error(name: &str, key: &str) -> impl FnOnce(object_store::Error) -> MigrateError {
    let (name, key) = (name.to_owned(), key.to_owned());
    move |source| match source {
        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. } => {
            MigrateError::Usage(format!(
                "{name}: object {key} already exists; refusing to overwrite it"
            ))
        }
        object_store::Error::NotImplemented { .. } => MigrateError::Usage(format!(
            "{name}: this store cannot write object {key} as the original needs it (user \
             metadata or create-only writes are not supported): {source}"
        )),
        source => MigrateError::Object { key, source },
    }
}

async fn upload_file(
    store: &Arc<dyn ObjectStore>,
    key: &str,
    name: &str,
    file: &Path,
    length: u64,
    options: &ExportOptions,
) -> Result<()> {
    let path = object_path(key)?;
    // One object is one destination, like a file: if it exists, the export is refused
    // (the create-only write below guards against a writer racing this check).
    if !options.overwrite {
        match store.head(&path).await {
            Ok(_) => return Err(put_error(name, key)(already_exists(key))),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(put_error(name, key)(e)),
        }
    }
    let mut source = std::fs::File::open(file).map_err(io_error(file))?;
    if length <= SINGLE_PUT_BYTES {
        let mut body = Vec::with_capacity(usize::try_from(length).unwrap_or(0));
        source.read_to_end(&mut body).map_err(io_error(file))?;
        if options.overwrite {
            store
                .put_opts(&path, PutPayload::from(body), PutMode::Overwrite.into())
                .await
                .map_err(put_error(name, key))?;
        } else {
            put_create_only(store, key, name, Bytes::from(body), &BTreeMap::new()).await?;
        }
        return Ok(());
    }
    // Multipart uploads cannot be create-only: the HEAD above is the check (documented as
    // not atomic).
    let upload = store
        .put_multipart(&path)
        .await
        .map_err(put_error(name, key))?;
    let mut writer = object_store::WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
    let mut buffer = vec![0u8; PART_BYTES];
    loop {
        let n = source.read(&mut buffer).map_err(io_error(file))?;
        if n == 0 {
            break;
        }
        writer
            .wait_for_capacity(4)
            .await
            .map_err(put_error(name, key))?;
        writer.write(&buffer[..n]);
    }
    writer.finish().await.map_err(put_error(name, key))?;
    Ok(())
}

fn already_exists(key: &str) -> object_store::Error {
    object_store::Error::AlreadyExists {
        path: key.to_owned(),
        source: "exists".into(),
    }
}

/// Whether the object at `path` holds exactly `body` with the user metadata `metadata`;
/// `None` if there is no object.
async fn holds_exactly(
    store: &Arc<dyn ObjectStore>,
    path: &ObjectPath,
    body: &[u8],
    metadata: &BTreeMap<String, String>,
) -> std::result::Result<Option<bool>, object_store::Error> {
    let found = match store.get(path).await {
        Ok(found) => found,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    if found.meta.size != body.len() as u64 {
        return Ok(Some(false));
    }
    let found_metadata = crate::s3::user_metadata(&found.attributes);
    let found_body = found.bytes().await?;
    Ok(Some(found_body == body && found_metadata == *metadata))
}

/// Writes one object create-only, settling every outcome that leaves open whether it was
/// written by reading it back: a write whose answer was lost (a reset or timeout after the
/// store acted) and a create-only write that finds the key taken (by this very write,
/// retried by the client, or by an export of the same original) both succeed when the object
/// holds exactly `body` and `metadata`. Anything else at the key is refused, never replaced.
async fn put_create_only(
    store: &Arc<dyn ObjectStore>,
    key: &str,
    name: &str,
    body: Bytes,
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let path = object_path(key)?;
    let mut attributes = Attributes::new();
    for (k, v) in metadata {
        attributes.insert(Attribute::Metadata(k.clone().into()), v.clone().into());
    }
    let written = store
        .put_opts(
            &path,
            PutPayload::from(body.clone()),
            PutOptions {
                mode: PutMode::Create,
                attributes,
                ..PutOptions::default()
            },
        )
        .await;
    let failure = match written {
        Ok(_) => return Ok(()),
        Err(e @ object_store::Error::NotImplemented { .. }) => return Err(put_error(name, key)(e)),
        Err(failure) => failure,
    };
    match holds_exactly(store, &path, &body, metadata).await {
        Ok(Some(true)) => {
            tracing::info!(key, error = %failure, "the object holds what was written: done");
            Ok(())
        }
        Ok(Some(false)) => Err(MigrateError::Usage(format!(
            "{name}: object {key} already exists with other content; refusing to overwrite it"
        ))),
        // Not there: the write did not happen, and running the export again is safe.
        Ok(None) => Err(put_error(name, key)(failure)),
        Err(reading) => Err(MigrateError::Object {
            key: key.to_owned(),
            source: object_store::Error::Generic {
                store: "export",
                source: format!(
                    "writing failed ({failure}) and reading the object back to see whether \
                     the write happened failed too ({reading}); run the export again: it \
                     keeps what is already written"
                )
                .into(),
            },
        }),
    }
}

async fn export_objects(
    reader: &ArtifactReader,
    origin: &Origin,
    destination: Destination,
    options: &ExportOptions,
) -> Result<ExportSummary> {
    let manifest: ObjectsManifest = origin.json(OBJECTS_SECTION)?;
    if manifest.version != EVIDENCE_VERSION {
        return Err(refuse(
            &origin.location,
            format!(
                "object list version {} is not {EVIDENCE_VERSION}",
                manifest.version
            ),
        ));
    }
    let Destination::Objects {
        store,
        path: prefix,
        name,
        user_metadata,
    } = destination
    else {
        return Err(MigrateError::Usage(format!(
            "{}: the original of {} is a set of objects under a prefix; name an object-store \
             prefix (s3://bucket/prefix, memory://name/prefix)",
            destination.name(),
            origin.source
        )));
    };
    let not_kept: Vec<&ObjectEntry> = manifest
        .objects
        .iter()
        .filter(|o| matches!(o.body, ObjectBody::NotKept(_)))
        .collect();
    if let Some(first) = not_kept.first() {
        let why = match &first.body {
            ObjectBody::NotKept(why) => why.as_str(),
            _ => "",
        };
        return Err(refuse(
            &origin.location,
            format!(
                "{} object(s) of {} were not kept by the migration, so the original cannot be \
                 re-created whole; the first is {} ({why})",
                not_kept.len(),
                origin.source,
                first.key
            ),
        ));
    }
    let target = |key: &str| -> String {
        if prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{prefix}/{key}")
        }
    };
    // Every key must be a valid object path; what is there already is checked below.
    let mut keys = BTreeSet::new();
    let mut already_there: BTreeSet<&str> = BTreeSet::new();
    for object in &manifest.objects {
        if object.key.is_empty() || !keys.insert(object.key.as_str()) {
            return Err(refuse(
                &origin.location,
                format!(
                    "the object list names the key {:?} twice or empty",
                    object.key
                ),
            ));
        }
        object_path(&target(&object.key))?;
    }
    if !options.overwrite {
        let listed: Vec<object_store::ObjectMeta> = store
            .list(
                (!prefix.is_empty())
                    .then(|| ObjectPath::from(prefix.as_str()))
                    .as_ref(),
            )
            .try_collect()
            .await
            .map_err(|source| MigrateError::Object {
                key: prefix.clone(),
                source,
            })?;
        let existing: BTreeSet<String> =
            listed.into_iter().map(|m| m.location.to_string()).collect();
        // An object already there is kept when it holds exactly what the export writes (an
        // interrupted or earlier export of this original left it); anything else there is
        // refused before the first write.
        for object in &manifest.objects {
            let key = target(&object.key);
            if !existing.contains(&key) {
                continue;
            }
            let (body, metadata) = object_content(reader, origin, object).await?;
            let same = holds_exactly(&store, &object_path(&key)?, &body, &metadata)
                .await
                .map_err(|source| MigrateError::Object {
                    key: key.clone(),
                    source,
                })?;
            match same {
                Some(true) => {
                    already_there.insert(object.key.as_str());
                }
                Some(false) => {
                    return Err(MigrateError::Usage(format!(
                        "{name}: object {key} already exists with other content; refusing \
                         to overwrite it"
                    )));
                }
                // Listed a moment ago, gone now: written below.
                None => {}
            }
        }
    }
    // Resolve and check everything before the first write, so that a refusal (a store that
    // cannot hold user metadata, a missing or altered block) leaves the destination empty.
    // Bodies are read again when written, so at most `concurrency` of them are held at once.
    if !user_metadata {
        for object in &manifest.objects {
            let metadata = object_metadata(reader, origin, object).await?;
            if !metadata.is_empty() {
                return Err(MigrateError::Usage(format!(
                    "{name}: this store (a local folder) cannot hold user metadata \
                     (x-amz-meta-*), and object {} has {} entries; export to s3:// or \
                     memory:// instead",
                    object.key,
                    metadata.len()
                )));
            }
        }
    }
    let overwrite = options.overwrite;
    let written: Vec<u64> = futures::stream::iter(
        manifest
            .objects
            .iter()
            .filter(|o| !already_there.contains(o.key.as_str())),
    )
    .map(|object| {
        let store = store.clone();
        let key = target(&object.key);
        let name = name.clone();
        async move {
            let (body, metadata) = object_content(reader, origin, object).await?;
            let length = body.len() as u64;
            if overwrite {
                let mut attributes = Attributes::new();
                for (k, v) in metadata {
                    attributes.insert(Attribute::Metadata(k.into()), v.into());
                }
                store
                    .put_opts(
                        &object_path(&key)?,
                        PutPayload::from(body),
                        PutOptions {
                            mode: PutMode::Overwrite,
                            attributes,
                            ..PutOptions::default()
                        },
                    )
                    .await
                    .map_err(put_error(&name, &key))?;
            } else {
                put_create_only(&store, &key, &name, body, &metadata).await?;
            }
            Ok::<_, MigrateError>(length)
        }
    })
    .buffer_unordered(options.concurrency.max(1))
    .try_collect()
    .await?;
    let kept_bytes: u64 = manifest
        .objects
        .iter()
        .filter(|o| already_there.contains(o.key.as_str()))
        .map(|o| o.size)
        .sum();
    Ok(ExportSummary {
        kind: origin.kind,
        source: origin.source.clone(),
        destination: name,
        objects: written.len() as u64 + already_there.len() as u64,
        bytes: written.iter().sum::<u64>() + kept_bytes,
        already_there: already_there.len() as u64,
    })
}

/// The user metadata of a block object: the block's verbatim `legacy.object_metadata`.
fn block_object_metadata(
    origin: &Origin,
    object: &ObjectEntry,
    metadata: &Map<String, Value>,
) -> Result<BTreeMap<String, String>> {
    let Some(Value::Object(map)) = metadata
        .get("legacy")
        .and_then(|l| l.get("object_metadata"))
    else {
        return Err(refuse(
            &origin.location,
            format!(
                "the block of object {} has no legacy.object_metadata",
                object.key
            ),
        ));
    };
    map.iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k.clone(), s.clone())),
            other => Err(refuse(
                &origin.location,
                format!(
                    "object {}: metadata {k} is not a string: {other}",
                    object.key
                ),
            )),
        })
        .collect()
}

async fn object_metadata(
    reader: &ArtifactReader,
    origin: &Origin,
    object: &ObjectEntry,
) -> Result<BTreeMap<String, String>> {
    match (&object.metadata, &object.body) {
        (Some(metadata), _) => Ok(metadata.clone()),
        (None, ObjectBody::Block(id, version)) => {
            let (_, metadata) = block_bytes(reader, origin, id, *version, false).await?;
            block_object_metadata(origin, object, &metadata)
        }
        (None, _) => Ok(BTreeMap::new()),
    }
}

/// An object's body and user metadata, from the verified artifact.
async fn object_content(
    reader: &ArtifactReader,
    origin: &Origin,
    object: &ObjectEntry,
) -> Result<(Bytes, BTreeMap<String, String>)> {
    let (body, metadata) = match &object.body {
        ObjectBody::Block(id, version) => {
            let (body, fields) = block_bytes(reader, origin, id, *version, false).await?;
            let metadata = match &object.metadata {
                Some(metadata) => metadata.clone(),
                None => block_object_metadata(origin, object, &fields)?,
            };
            (body, metadata)
        }
        ObjectBody::Section(name) => (
            origin.section(name)?,
            object.metadata.clone().unwrap_or_default(),
        ),
        ObjectBody::Empty => (Bytes::new(), object.metadata.clone().unwrap_or_default()),
        ObjectBody::NotKept(why) => {
            return Err(refuse(
                &origin.location,
                format!("object {} was not kept: {why}", object.key),
            ));
        }
    };
    if body.len() as u64 != object.size {
        return Err(refuse(
            &origin.location,
            format!(
                "object {}: the artifact gives {} bytes where the original had {}",
                object.key,
                body.len(),
                object.size
            ),
        ));
    }
    Ok((body, metadata))
}
