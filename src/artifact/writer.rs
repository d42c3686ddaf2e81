//! The signing writer.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::{format_id, format_time, now_us};
use crate::error::{Error, Result};
use crate::format::block::{UnsignedRecord, encode_record};
use crate::format::compression::{COMPRESSION_NONE, COMPRESSION_ZSTD, zstd_compress};
use crate::format::digest::{
    Digest, SignedKind, chain_link, commit_digest, genesis_digest, record_digest,
};
use crate::format::merkle::merkle_root;
use crate::format::metadata::SIGNATURE_ALGORITHM;
use crate::format::provenance::ProvenanceEntry;
use crate::format::{
    Action, ArtifactMetadata, FILE_HEADER_LEN, FileHeader, FourCC, IndexEntry, IndexSection,
    MetadataSection, ProvenanceSection, SIGNATURE_LEN, Trailer,
};
use crate::keys::SigningKey;
use crate::store::{AppendSession, BlockStore, Genesis, Head, HeadParts, Tail};

/// What `create` puts in the header and metadata section.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub agent_id: String,
    pub content_type: String,
    pub schema_version: String,
    pub custom: BTreeMap<String, String>,
    /// Creation time; now when `None`.
    pub created_us: Option<u64>,
    /// Artifact id; random when `None`.
    pub artifact_id: Option<[u8; 16]>,
}

/// A block to append.
#[derive(Debug, Clone)]
pub struct NewBlock {
    pub block_type: FourCC,
    /// Payload bytes, uncompressed (typed framings already applied).
    pub data: Vec<u8>,
    /// Exact block metadata bytes (empty, or a JSON object).
    pub metadata: Vec<u8>,
    /// zstd level when the block is to be compressed.
    pub zstd_level: Option<i32>,
    /// Block id; random for a new block when `None`.
    pub block_id: Option<[u8; 16]>,
    /// Record timestamp; the writer's clock when `None`.
    pub timestamp_us: Option<u64>,
}

impl NewBlock {
    pub fn new(block_type: FourCC, data: Vec<u8>) -> Self {
        Self {
            block_type,
            data,
            metadata: Vec::new(),
            zstd_level: None,
            block_id: None,
            timestamp_us: None,
        }
    }

    /// Sets the metadata from a JSON object (serialised once, keys sorted).
    pub fn with_metadata(mut self, metadata: &Map<String, Value>) -> Self {
        self.metadata = if metadata.is_empty() {
            Vec::new()
        } else {
            let sorted: BTreeMap<&String, &Value> = metadata.iter().collect();
            serde_json::to_vec(&sorted).unwrap_or_default()
        };
        self
    }

    pub fn with_zstd(mut self, level: i32) -> Self {
        self.zstd_level = Some(level);
        self
    }

    pub fn with_id(mut self, id: [u8; 16]) -> Self {
        self.block_id = Some(id);
        self
    }

    pub fn with_timestamp(mut self, timestamp_us: u64) -> Self {
        self.timestamp_us = Some(timestamp_us);
        self
    }
}

/// Where an appended block landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRef {
    pub block_id: [u8; 16],
    pub version: u32,
    pub position: usize,
    pub offset: u64,
    pub digest: Digest,
}

type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Appends signed blocks to an artifact. Records go to the store as they are added; nothing
/// becomes visible to readers until [`ArtifactWriter::commit`].
pub struct ArtifactWriter {
    store: Arc<dyn BlockStore>,
    key: SigningKey,
    agent_id: String,
    clock: Clock,
    head: Head,
    /// Bytes of the committed provenance entries (the section without its 16-byte prefix).
    provenance_entries: Vec<u8>,
    provenance_count: u64,
    provenance_head: Digest,
    entries: Vec<IndexEntry>,
    versions: HashMap<[u8; 16], u32>,
    last_digest: Digest,
    pending_provenance: Vec<ProvenanceEntry>,
    session: Option<Box<dyn AppendSession>>,
    finalized: bool,
}

impl std::fmt::Debug for ArtifactWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArtifactWriter")
            .field("store", &self.store.location())
            .field("records", &self.entries.len())
            .finish_non_exhaustive()
    }
}

fn details(value: Value) -> Vec<u8> {
    // serde_json maps are sorted (no preserve_order feature), so this is deterministic.
    serde_json::to_vec(&value).unwrap_or_default()
}

fn sign_entry(key: &SigningKey, mut entry: ProvenanceEntry) -> Result<ProvenanceEntry> {
    let digest = entry.digest().map_err(Error::format("provenance entry"))?;
    entry.signature = key.sign(SignedKind::Provenance, &digest);
    Ok(entry)
}

/// Builds the signed tail for the given committed state.
pub(crate) struct TailInputs<'a> {
    pub file_header: &'a [u8],
    pub metadata_section: &'a [u8],
    pub provenance_entries: &'a [u8],
    pub provenance_count: u64,
    pub provenance_head: Digest,
    pub entries: &'a [IndexEntry],
    pub committed_us: u64,
}

pub(crate) fn build_tail(key: &SigningKey, inputs: TailInputs<'_>) -> Tail {
    let mut provenance_section =
        Vec::with_capacity(ProvenanceSection::PREFIX_LEN + inputs.provenance_entries.len());
    provenance_section.extend_from_slice(&crate::format::provenance::PROVENANCE_MAGIC);
    provenance_section.extend_from_slice(&inputs.provenance_count.to_le_bytes());
    provenance_section.extend_from_slice(inputs.provenance_entries);
    let index = IndexSection {
        entries: inputs.entries.to_vec(),
    };
    let index_section = index.to_bytes();
    let records_offset = (inputs.file_header.len() + inputs.metadata_section.len()) as u64;
    let provenance_offset = inputs
        .entries
        .last()
        .map_or(records_offset, |e| e.offset + e.record_len);
    let digests = index.digests();
    let mut trailer = Trailer {
        records_offset,
        provenance_offset,
        provenance_len: provenance_section.len() as u64,
        index_offset: provenance_offset + provenance_section.len() as u64,
        index_len: index_section.len() as u64,
        record_count: inputs.entries.len() as u64,
        committed_us: inputs.committed_us,
        provenance_head: inputs.provenance_head,
        commit_signature: [0u8; SIGNATURE_LEN],
        merkle_root: merkle_root(&digests),
    };
    let digest = commit_digest(
        inputs.file_header,
        inputs.metadata_section,
        &provenance_section,
        &index_section,
        &trailer.signed_fields(),
        &trailer.merkle_root,
    );
    trailer.commit_signature = key.sign(SignedKind::Commit, &digest);
    Tail {
        provenance_section,
        index_section,
        trailer: trailer.to_bytes().to_vec(),
    }
}

impl ArtifactWriter {
    /// Creates a new artifact at `store`, signed by `key`, and opens it for appending.
    pub async fn create(
        store: Arc<dyn BlockStore>,
        key: SigningKey,
        options: CreateOptions,
    ) -> Result<Self> {
        let created_us = options.created_us.unwrap_or_else(now_us);
        let artifact_id = options
            .artifact_id
            .unwrap_or_else(|| *uuid::Uuid::new_v4().as_bytes());
        let header = FileHeader::new(created_us, artifact_id).to_bytes();
        let metadata = ArtifactMetadata {
            format_version: "3.0".into(),
            agent_id: options.agent_id.clone(),
            created_at: format_time(created_us),
            content_type: options.content_type,
            schema_version: options.schema_version,
            custom: options.custom,
            signature_algorithm: SIGNATURE_ALGORITHM.into(),
            public_key: hex::encode(key.public_key()),
            extra: BTreeMap::new(),
        };
        let metadata_section = MetadataSection::from_metadata(&metadata)
            .and_then(|m| m.to_bytes())
            .map_err(Error::format("metadata section"))?;
        let genesis = genesis_digest(&header, &metadata_section);
        let create = sign_entry(
            &key,
            ProvenanceEntry {
                action: Action::Create,
                flags: 0,
                timestamp_us: created_us,
                previous: [0u8; 32],
                subject: genesis,
                details: details(json!({
                    "agent": options.agent_id,
                    "artifact_id": format_id(&artifact_id),
                })),
                signature: [0u8; SIGNATURE_LEN],
            },
        )?;
        let mut entry_bytes = Vec::new();
        create
            .encode(&mut entry_bytes)
            .map_err(Error::format("provenance entry"))?;
        let tail = build_tail(
            &key,
            TailInputs {
                file_header: &header,
                metadata_section: &metadata_section,
                provenance_entries: &entry_bytes,
                provenance_count: 1,
                provenance_head: create.digest().map_err(Error::format("provenance entry"))?,
                entries: &[],
                committed_us: created_us,
            },
        );
        store
            .create(Genesis {
                file_header: header.to_vec(),
                metadata_section,
                tail,
            })
            .await?;
        let mut writer = Self::open(store, key).await?;
        if let Some(fixed) = options.created_us {
            writer.set_clock(move || fixed);
        }
        Ok(writer)
    }

    /// Opens an existing artifact for appending. The key must be the artifact's own, and the
    /// committed state must verify (a writer never extends a tampered artifact).
    pub async fn open(store: Arc<dyn BlockStore>, key: SigningKey) -> Result<Self> {
        let head = store.head().await?;
        let public_key = super::verify::check_commit(&head)?;
        if public_key.to_bytes() != key.public_key() {
            return Err(Error::KeyMismatch {
                artifact: hex::encode(public_key.to_bytes()),
                given: hex::encode(key.public_key()),
            });
        }
        let provenance = ProvenanceSection::decode(&head.provenance_section)
            .map_err(Error::format("provenance section"))?;
        let finalized = provenance
            .entries
            .iter()
            .any(|e| e.action == Action::Finalize);
        let metadata = MetadataSection::decode(&head.metadata_section)
            .and_then(|m| m.metadata())
            .map_err(Error::format("metadata section"))?;
        let mut versions = HashMap::new();
        for entry in &head.index.entries {
            *versions.entry(entry.block_id).or_insert(0u32) += 1;
        }
        let last_digest = head.index.entries.last().map_or_else(
            || genesis_digest(&head.file_header, &head.metadata_section),
            |e| e.digest,
        );
        Ok(Self {
            store,
            key,
            agent_id: metadata.agent_id,
            clock: Arc::new(now_us),
            provenance_entries: head.provenance_section[ProvenanceSection::PREFIX_LEN..].to_vec(),
            provenance_count: provenance.entries.len() as u64,
            provenance_head: head.trailer.provenance_head,
            entries: head.index.entries.clone(),
            versions,
            last_digest,
            pending_provenance: Vec::new(),
            session: None,
            finalized,
            head,
        })
    }

    /// Replaces the clock used for record and provenance timestamps (for reproducible files).
    pub fn set_clock(&mut self, clock: impl Fn() -> u64 + Send + Sync + 'static) {
        self.clock = Arc::new(clock);
    }

    /// Records committed so far plus those pending.
    pub fn record_count(&self) -> usize {
        self.entries.len()
    }

    /// Appends a new block (a fresh id unless `block.block_id` names one not yet used).
    pub async fn add(&mut self, block: NewBlock) -> Result<BlockRef> {
        if let Some(id) = block.block_id
            && self.versions.contains_key(&id)
        {
            return Err(Error::Invalid(format!(
                "block {} already exists; use update to add a new version",
                format_id(&id)
            )));
        }
        self.append(block, Action::AddBlock).await
    }

    /// Appends a new version of the existing block `block_id`.
    pub async fn update(&mut self, block_id: [u8; 16], block: NewBlock) -> Result<BlockRef> {
        if !self.versions.contains_key(&block_id) {
            return Err(Error::UnknownBlock {
                block_id: format_id(&block_id),
            });
        }
        self.append(block.with_id(block_id), Action::Update).await
    }

    async fn append(&mut self, block: NewBlock, action: Action) -> Result<BlockRef> {
        if self.finalized {
            return Err(Error::Finalized);
        }
        let block_id = block
            .block_id
            .unwrap_or_else(|| *uuid::Uuid::new_v4().as_bytes());
        let timestamp_us = block.timestamp_us.unwrap_or_else(|| (self.clock)());
        let uncompressed_size = block.data.len() as u64;
        let (compression, data) = match block.zstd_level {
            Some(level) => (
                COMPRESSION_ZSTD,
                zstd_compress(&block.data, level)
                    .map_err(Error::format("compressing block data"))?,
            ),
            None => (COMPRESSION_NONE, block.data),
        };
        crate::format::block::parse_block_metadata(&block.metadata)
            .map_err(Error::format("block metadata"))?;
        let unsigned = UnsignedRecord {
            block_id,
            block_type: block.block_type,
            compression,
            uncompressed_size,
            timestamp_us,
            metadata: block.metadata,
            data,
        };
        let header = unsigned
            .header(chain_link(&self.last_digest))
            .map_err(Error::format("block header"))?;
        let header_bytes = header.to_bytes();
        let digest = record_digest(&header_bytes, &unsigned.metadata, &unsigned.data);
        let signature = self.key.sign(SignedKind::Block, &digest);
        let record = encode_record(&header, &unsigned.metadata, &unsigned.data, &signature);
        let offset = self
            .entries
            .last()
            .map_or(self.head.trailer.records_offset, |e| {
                e.offset + e.record_len
            });
        let entry = IndexEntry {
            offset,
            record_len: record.len() as u64,
            block_id,
            block_type: block.block_type,
            metadata_len: header.metadata_len,
            timestamp_us,
            digest,
        };
        if self.session.is_none() {
            self.session = Some(self.store.begin_append(&self.head).await?);
        }
        if let Some(session) = self.session.as_mut() {
            session.put_record(&entry, Bytes::from(record)).await?;
        }
        let version = {
            let count = self.versions.entry(block_id).or_insert(0);
            *count += 1;
            *count
        };
        self.entries.push(entry);
        self.last_digest = digest;
        self.push_provenance(
            action,
            timestamp_us,
            digest,
            json!({
                "agent": self.agent_id,
                "block_id": format_id(&block_id),
                "block_type": block.block_type.to_string(),
                "version": version,
            }),
        )?;
        Ok(BlockRef {
            block_id,
            version,
            position: self.entries.len() - 1,
            offset,
            digest,
        })
    }

    fn push_provenance(
        &mut self,
        action: Action,
        timestamp_us: u64,
        subject: Digest,
        detail: Value,
    ) -> Result<()> {
        let previous = self
            .pending_provenance
            .last()
            .map(|e| e.digest().map_err(Error::format("provenance entry")))
            .transpose()?
            .unwrap_or(self.provenance_head);
        let entry = sign_entry(
            &self.key,
            ProvenanceEntry {
                action,
                flags: 0,
                timestamp_us,
                previous,
                subject,
                details: details(detail),
                signature: [0u8; SIGNATURE_LEN],
            },
        )?;
        self.pending_provenance.push(entry);
        Ok(())
    }

    /// Records an artifact-level provenance event (convert, migrate, ...) with `details`
    /// merged into the entry's JSON; the subject is the Merkle root at that point.
    pub fn record_event(&mut self, action: Action, detail: Map<String, Value>) -> Result<()> {
        if self.finalized {
            return Err(Error::Finalized);
        }
        let root = merkle_root(&self.entries.iter().map(|e| e.digest).collect::<Vec<_>>());
        let mut detail = detail;
        detail.insert("agent".into(), Value::String(self.agent_id.clone()));
        detail.insert("record_count".into(), json!(self.entries.len()));
        let now = (self.clock)();
        self.push_provenance(action, now, root, Value::Object(detail))
    }

    /// Seals the artifact: a finalize entry, committed; later appends are refused.
    pub async fn finalize(&mut self) -> Result<()> {
        self.record_event(Action::Finalize, Map::new())?;
        self.commit().await?;
        self.finalized = true;
        Ok(())
    }

    /// Makes everything added since the last commit durable and visible. When this returns,
    /// a crash can no longer lose those blocks.
    pub async fn commit(&mut self) -> Result<()> {
        if self.pending_provenance.is_empty() {
            return Ok(());
        }
        let mut provenance_entries = self.provenance_entries.clone();
        for entry in &self.pending_provenance {
            entry
                .encode(&mut provenance_entries)
                .map_err(Error::format("provenance entry"))?;
        }
        let new_count = self.provenance_count + self.pending_provenance.len() as u64;
        let new_head = self
            .pending_provenance
            .last()
            .map(|e| e.digest().map_err(Error::format("provenance entry")))
            .transpose()?
            .unwrap_or(self.provenance_head);
        let tail = build_tail(
            &self.key,
            TailInputs {
                file_header: &self.head.file_header,
                metadata_section: &self.head.metadata_section,
                provenance_entries: &provenance_entries,
                provenance_count: new_count,
                provenance_head: new_head,
                entries: &self.entries,
                committed_us: (self.clock)(),
            },
        );
        let session = match self.session.take() {
            Some(session) => session,
            None => self.store.begin_append(&self.head).await?,
        };
        let committed = HeadParts {
            file_header: self.head.file_header.clone(),
            metadata_section: self.head.metadata_section.clone(),
            provenance_section: tail.provenance_section.clone().into(),
            index_section: tail.index_section.clone().into(),
            trailer: tail.trailer.clone().into(),
        };
        session.commit(tail).await?;
        self.provenance_entries = provenance_entries;
        self.provenance_count = new_count;
        self.provenance_head = new_head;
        self.pending_provenance.clear();
        // The committed state is what was just written; no need to read it back.
        self.head = Head::from_parts(committed)
            .map_err(|(context, source)| Error::Format { context, source })?;
        Ok(())
    }

    /// The artifact's first record offset (for callers computing layouts).
    pub fn records_offset(&self) -> u64 {
        (FILE_HEADER_LEN + self.head.metadata_section.len()) as u64
    }
}
