//! The verifying reader: opens an artifact only if its newest commit verifies, finds blocks
//! through the index runs, and checks each record it returns against the committed digest.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::stream::{self, StreamExt};
use serde_json::{Map, Value};

use super::commit::{Commit, Identity, check_commit, find_latest, read_parts, settle};
use super::format_id;
use super::index::Index;
use crate::error::{Error, Result};
use crate::format::Codec;
use crate::format::compression::decompress;
use crate::format::run::RunEntry;
use crate::format::segment::SEGMENT_HEADER_LEN;
use crate::format::{
    ArtifactMetadata, BlockHeader, FourCC, IndexEntry, ProvenanceEntry, RecordView, SegmentHeader,
};
use crate::keys::PublicKey;
use crate::store::{BlockStore, CommitRef};

/// Records fetched at once by full verification and by metadata scans.
pub(crate) const READ_CONCURRENCY: usize = 16;

/// Records up to this long have their metadata checked when it is read on its own
/// ([`ArtifactReader::read_metadata`]): the whole record is read for it, which costs little
/// below this size and saves nothing worth an unchecked answer.
pub const CHECKED_METADATA_MAX: u64 = 4 << 20;

/// A block as listed: its index entry, position and version number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockInfo {
    /// Position in record order (its Merkle leaf index).
    pub position: u64,
    /// 1 for the first record of this id, 2 for the next, ...
    pub version: u32,
    /// The block's index entry: where its record is in the image, its length, type and digest.
    pub entry: IndexEntry,
}

impl BlockInfo {
    /// The block id as a UUID string (`123e4567-e89b-12d3-a456-426614174000`).
    pub fn id(&self) -> String {
        format_id(&self.entry.block_id)
    }

    fn context(&self) -> String {
        format!(
            "block #{} {} at offset {}",
            self.position,
            self.id(),
            self.entry.offset
        )
    }
}

impl From<RunEntry> for BlockInfo {
    fn from(entry: RunEntry) -> Self {
        Self {
            position: entry.position,
            version: entry.version,
            entry: entry.entry,
        }
    }
}

/// A block as read.
#[derive(Debug, Clone)]
pub struct Block {
    /// Where the block is and which version it is.
    pub info: BlockInfo,
    /// The record's decoded 64-byte header.
    pub header: BlockHeader,
    /// Exact metadata bytes.
    pub metadata_bytes: Bytes,
    /// Decompressed data (the typed payload, framing included).
    pub data: Bytes,
}

impl Block {
    /// The block metadata as a JSON object (empty when the record has none).
    ///
    /// # Errors
    ///
    /// [`Error::Format`] if the metadata bytes are not a JSON object.
    pub fn metadata(&self) -> Result<Map<String, Value>> {
        crate::format::block::parse_block_metadata(&self.metadata_bytes)
            .map_err(Error::format(format!("block {} metadata", self.info.id())))
    }
}

/// Reads an artifact from any store.
#[derive(Debug)]
pub struct ArtifactReader {
    store: Arc<dyn BlockStore>,
    index: Index,
    identity: Identity,
    commit: Commit,
    /// Set when the newest commit was found complete past the newest intact trailer.
    completed_from_uncommitted: bool,
    check_digests: bool,
    listing: Mutex<Option<Arc<Vec<BlockInfo>>>>,
}

impl ArtifactReader {
    /// Opens the newest commit after checking it belongs to this artifact and its signature
    /// verifies. This reads the header, the metadata and the newest segment's head: a few
    /// small reads whatever the artifact's size.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`](crate::store::StoreError::NotFound) (inside
    /// [`Error::Store`]) if there is no artifact; [`Error::Verification`] if the newest commit
    /// does not verify; [`StoreError::Torn`](crate::store::StoreError::Torn) if an
    /// interrupted write left no commit to open.
    ///
    /// # Example
    ///
    /// ```
    /// use std::sync::Arc;
    /// use maif_store::store::{BlockStore, FileStore};
    /// use maif_store::{ArtifactReader, ArtifactWriter, CreateOptions, NewBlock, SigningKey};
    /// use maif_store::format::FourCC;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> maif_store::Result<()> {
    /// let dir = tempfile::tempdir().unwrap();
    /// let store: Arc<dyn BlockStore> = Arc::new(FileStore::new(dir.path().join("a.maif")));
    /// assert!(ArtifactReader::open(store.clone()).await.is_err()); // nothing there yet
    ///
    /// let key = SigningKey::generate()?;
    /// let mut writer = ArtifactWriter::create(store.clone(), key, CreateOptions::default()).await?;
    /// writer.add(NewBlock::new(FourCC::BINA, b"one".to_vec())).await?;
    /// writer.add(NewBlock::new(FourCC::BINA, b"two".to_vec())).await?;
    /// writer.commit().await?;
    ///
    /// let reader = ArtifactReader::open(store).await?;
    /// assert_eq!(reader.record_count(), 2);
    /// assert_eq!(reader.blocks().await?.len(), 2);
    /// # Ok(()) }
    /// ```
    pub async fn open(store: Arc<dyn BlockStore>) -> Result<Self> {
        // The newest commit first: a store that reads from the end gets the base with it.
        let found = find_latest(store.as_ref()).await?;
        let identity = Identity::read(store.as_ref()).await?;
        check_commit(&found.commit, &identity)?;
        let index = Index::new(store.clone());
        let settled = settle(&store, found, &identity.key).await?;
        let (commit, prefix, completed) = (settled.commit, settled.prefix, settled.completed);
        index.remember_segment(commit.reference(), prefix);
        Ok(Self {
            store,
            index,
            identity,
            commit,
            completed_from_uncommitted: completed,
            check_digests: true,
            listing: Mutex::new(None),
        })
    }

    /// Skips re-hashing each record on read (the commit was still verified at open). For
    /// trusted local media where read throughput matters more than detecting later damage.
    pub fn trust_records(mut self) -> Self {
        self.check_digests = false;
        self
    }

    /// The newest commit.
    pub fn commit(&self) -> &Commit {
        &self.commit
    }

    /// Whether the newest commit lost its trailer (an append interrupted after its data was
    /// durable, or a damaged trailer) and was found complete and signed in the bytes after
    /// the newest intact trailer. The next append writes its trailer back.
    pub fn completed_from_uncommitted(&self) -> bool {
        self.completed_from_uncommitted
    }

    /// The file header, metadata, key and chain seed.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The metadata section's fields.
    pub fn metadata(&self) -> Result<ArtifactMetadata> {
        self.identity
            .metadata
            .metadata()
            .map_err(Error::format("metadata section"))
    }

    /// The Ed25519 key the artifact is signed with (from its metadata section).
    pub fn public_key(&self) -> PublicKey {
        self.identity.key
    }

    /// The store the artifact is read from.
    pub(crate) fn store(&self) -> &Arc<dyn BlockStore> {
        &self.store
    }

    /// Number of records.
    pub fn record_count(&self) -> u64 {
        self.commit.record_count()
    }

    /// Every record in order. This reads every live index run (once; later calls reuse it).
    pub async fn blocks(&self) -> Result<Arc<Vec<BlockInfo>>> {
        if let Some(listing) = self.listing.lock().ok().and_then(|l| l.clone()) {
            return Ok(listing);
        }
        let entries = self
            .index
            .list(self.commit.header().newest_run, self.commit.record_count())
            .await?;
        let listing: Arc<Vec<BlockInfo>> =
            Arc::new(entries.into_iter().map(BlockInfo::from).collect());
        if let Ok(mut cached) = self.listing.lock() {
            *cached = Some(listing.clone());
        }
        Ok(listing)
    }

    /// The latest version of every block id, in order of first appearance.
    pub async fn latest_blocks(&self) -> Result<Vec<BlockInfo>> {
        let blocks = self.blocks().await?;
        let mut latest: std::collections::HashMap<[u8; 16], (u64, BlockInfo)> =
            std::collections::HashMap::new();
        for info in blocks.iter() {
            latest
                .entry(info.entry.block_id)
                .and_modify(|(_, newest)| *newest = *info)
                .or_insert((info.position, *info));
        }
        let mut out: Vec<(u64, BlockInfo)> = latest.into_values().collect();
        out.sort_by_key(|(first, _)| *first);
        Ok(out.into_iter().map(|(_, info)| info).collect())
    }

    /// Version `version` (1-based) of `block_id`, or the latest when `None`, found through
    /// the index runs without listing them.
    pub async fn find(&self, block_id: &[u8; 16], version: Option<u32>) -> Result<BlockInfo> {
        let newest = self.commit.header().newest_run;
        if let Some(entry) = self.index.find(newest, block_id, version).await? {
            return Ok(entry.into());
        }
        let latest = self.index.find(newest, block_id, None).await?;
        match (latest, version) {
            (Some(latest), Some(wanted)) => Err(Error::NoSuchVersion {
                block_id: format_id(block_id),
                version: wanted,
                latest: latest.version,
            }),
            _ => Err(Error::UnknownBlock {
                block_id: format_id(block_id),
            }),
        }
    }

    /// Every version of `block_id`, oldest first, found through the index runs without
    /// listing them (a few reads per version). An id the artifact does not hold is
    /// [`Error::UnknownBlock`].
    pub async fn versions(&self, block_id: &[u8; 16]) -> Result<Vec<BlockInfo>> {
        let latest = self.find(block_id, None).await?;
        let mut versions = Vec::with_capacity(latest.version as usize);
        for version in 1..latest.version {
            versions.push(self.find(block_id, Some(version)).await?);
        }
        versions.push(latest);
        Ok(versions)
    }

    /// Records of type `block_type`, in order.
    pub async fn by_type(&self, block_type: FourCC) -> Result<Vec<BlockInfo>> {
        Ok(self
            .blocks()
            .await?
            .iter()
            .filter(|b| b.entry.block_type == block_type)
            .copied()
            .collect())
    }

    /// Whether [`Self::read_metadata`] checks this record's metadata against the committed
    /// digest: it does for records of at most [`CHECKED_METADATA_MAX`] bytes (unless
    /// [`trust_records`](Self::trust_records) was called).
    pub fn metadata_checked(&self, info: &BlockInfo) -> bool {
        self.check_digests && info.entry.record_len <= CHECKED_METADATA_MAX
    }

    /// The header and metadata of a record. The record digest covers metadata and data
    /// together (FORMAT.md 5.2), so the metadata can be checked only with the data: a record
    /// of at most [`CHECKED_METADATA_MAX`] bytes is read whole and checked like
    /// [`Self::read`] (an altered record is an error); a longer one is read as its header and
    /// metadata alone (one ranged read), which are checked against the index entry but not
    /// the digest ([`Self::metadata_checked`] says which).
    pub async fn read_metadata(
        &self,
        info: &BlockInfo,
    ) -> Result<(BlockHeader, Map<String, Value>)> {
        if self.metadata_checked(info) {
            let block = self.read_checked_record(info).await?;
            let metadata = crate::format::block::parse_block_metadata(&block.metadata_bytes)
                .map_err(|e| Error::format(info.context())(e.at(info.entry.offset)))?;
            return Ok((block.header, metadata));
        }
        let len = crate::format::block::prefix_len(info.entry.metadata_len);
        let bytes = self.store.read_record_range(&info.entry, 0..len).await?;
        let (header, metadata) = crate::format::block::decode_prefix(&bytes)
            .map_err(|e| Error::format(info.context())(e.at(info.entry.offset)))?;
        if header.block_id != info.entry.block_id || header.block_type != info.entry.block_type {
            return Err(Error::Verification(format!(
                "{}: the record does not match its index entry",
                info.context()
            )));
        }
        let metadata = crate::format::block::parse_block_metadata(metadata)
            .map_err(|e| Error::format(info.context())(e.at(info.entry.offset)))?;
        Ok((header, metadata))
    }

    /// Records whose metadata has `key` equal to `value` (a string value, or the JSON text of
    /// any other value).
    pub async fn find_by_metadata(&self, key: &str, value: &str) -> Result<Vec<BlockInfo>> {
        let blocks = self.blocks().await?;
        let candidates: Vec<BlockInfo> = blocks
            .iter()
            .filter(|info| info.entry.metadata_len > 0)
            .copied()
            .collect();
        let read = self.read_metadata_many(&candidates).await?;
        Ok(candidates
            .into_iter()
            .zip(read)
            .filter(|(_, (_, metadata))| match metadata.get(key) {
                Some(Value::String(s)) => s == value,
                Some(other) => *other == value,
                None => false,
            })
            .map(|(info, _)| info)
            .collect())
    }

    /// The header and metadata of each of `infos`, in order, fetched concurrently.
    pub async fn read_metadata_many(
        &self,
        infos: &[BlockInfo],
    ) -> Result<Vec<(BlockHeader, Map<String, Value>)>> {
        stream::iter(infos)
            .map(|info| self.read_metadata(info))
            .buffered(READ_CONCURRENCY)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect()
    }

    /// Reads a record whole, checks it against the index (and its digest unless
    /// [`trust_records`](Self::trust_records)), and decompresses its data.
    ///
    /// # Errors
    ///
    /// [`Error::Verification`] or [`Error::Format`] if the stored record is not the one the
    /// index and the commit name (it was altered); store errors if it cannot be read.
    ///
    /// # Example
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use maif_store::store::{BlockStore, FileStore};
    /// # use maif_store::{ArtifactReader, ArtifactWriter, CreateOptions, NewBlock, SigningKey};
    /// # use maif_store::format::FourCC;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> maif_store::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let store: Arc<dyn BlockStore> = Arc::new(FileStore::new(dir.path().join("a.maif")));
    /// # let key = SigningKey::generate()?;
    /// let mut writer = ArtifactWriter::create(store.clone(), key, CreateOptions::default()).await?;
    /// let data = vec![7u8; 4096];
    /// let added = writer
    ///     .add(NewBlock::new(FourCC::BINA, data.clone()).with_zstd(3))
    ///     .await?;
    /// writer.commit().await?;
    ///
    /// let reader = ArtifactReader::open(store).await?;
    /// let info = reader.find(&added.block_id, None).await?; // the newest version
    /// let block = reader.read(&info).await?;
    /// assert_eq!(block.data, data); // decompressed
    /// assert!(block.metadata()?.is_empty());
    /// # Ok(()) }
    /// ```
    pub async fn read(&self, info: &BlockInfo) -> Result<Block> {
        let block = self.read_checked_record(info).await?;
        if block.header.encryption != 0 {
            return Err(Error::format(info.context())(
                crate::format::FormatError::UnsupportedEncryption {
                    code: block.header.encryption.0,
                },
            ));
        }
        let data = if block.header.compression == 0 {
            block.data
        } else {
            Bytes::from(
                decompress(
                    block.header.compression,
                    &block.data,
                    block.header.uncompressed_size,
                )
                .map_err(|e| Error::format(info.context())(e))?,
            )
        };
        Ok(Block { data, ..block })
    }

    /// A record read whole and checked against the index (and its digest unless
    /// [`trust_records`](Self::trust_records)), its data as stored (still compressed).
    async fn read_checked_record(&self, info: &BlockInfo) -> Result<Block> {
        match self.read_once(info).await {
            // Bytes from a remote store can be damaged on the way: read them once more
            // before calling the stored record altered (a local file answers the same).
            Err(Error::Verification(_) | Error::Format { .. }) => self.read_once(info).await,
            other => other,
        }
    }

    async fn read_once(&self, info: &BlockInfo) -> Result<Block> {
        let bytes = self.store.read_record(&info.entry).await?;
        let record = RecordView::decode(&bytes)
            .map_err(|e| Error::format(info.context())(e.at(info.entry.offset)))?;
        if record.header.block_id != info.entry.block_id
            || record.header.block_type != info.entry.block_type
        {
            return Err(Error::Verification(format!(
                "{}: the record does not match its index entry",
                info.context()
            )));
        }
        if self.check_digests && record.digest() != info.entry.digest {
            return Err(Error::Verification(format!(
                "{}: content digest does not match the committed digest: the record was altered",
                info.context()
            )));
        }
        Ok(Block {
            info: *info,
            header: record.header,
            metadata_bytes: bytes.slice(record.metadata_range()),
            data: bytes.slice(record.data_range()),
        })
    }

    /// Convenience: the block `block_id` at `version` (latest when `None`).
    pub async fn get(&self, block_id: &[u8; 16], version: Option<u32>) -> Result<Block> {
        let info = self.find(block_id, version).await?;
        self.read(&info).await
    }

    /// Every commit from the creation to the newest, oldest first, each checked to name its
    /// predecessor. This reads every commit's head.
    pub async fn commits(&self) -> Result<Vec<Commit>> {
        walk_commits(&self.index, &self.commit).await
    }

    /// Every provenance entry, oldest first (this reads every commit's segment).
    pub async fn provenance(&self) -> Result<Vec<ProvenanceEntry>> {
        let mut entries = Vec::new();
        for commit in self.commits().await? {
            let prefix = self
                .index
                .read_segment(commit.reference(), 0..commit.header().head_len())
                .await?;
            entries.extend(read_parts(&self.index, &commit, &prefix).await?.provenance);
        }
        Ok(entries)
    }

    /// The live index runs, newest first.
    pub async fn live_runs(&self) -> Result<Vec<crate::format::RunRef>> {
        self.index.live_runs(self.commit.header().newest_run).await
    }

    pub(crate) fn index(&self) -> &Index {
        &self.index
    }
}

/// Reads the head of commit `commit` of a chain.
pub(crate) async fn read_commit(index: &Index, commit: CommitRef) -> Result<Commit> {
    let header_bytes = index
        .read_segment(commit, 0..SEGMENT_HEADER_LEN as u64)
        .await?;
    let context = format!("commit {} at byte {}", commit.seq, commit.segment_offset);
    let header = SegmentHeader::decode(&header_bytes).map_err(|e| Error::Format {
        context: context.clone(),
        source: e.at(commit.segment_offset),
    })?;
    let prefix = index.read_segment(commit, 0..header.head_len()).await?;
    Commit::decode(&prefix).map_err(|e| Error::Format {
        context,
        source: e.at(commit.segment_offset),
    })
}

/// Every commit from 0 to `newest`, oldest first, following each commit's link to its
/// predecessor and checking the link's digest.
pub(crate) async fn walk_commits(index: &Index, newest: &Commit) -> Result<Vec<Commit>> {
    let mut chain = vec![newest.clone()];
    while let Some(current) = chain.last() {
        let header = current.header();
        if header.seq == 0 {
            break;
        }
        let previous = read_commit(
            index,
            CommitRef {
                seq: header.seq - 1,
                segment_offset: header.previous_segment_offset,
            },
        )
        .await?;
        if previous.digest != header.previous_commit || previous.seq() != header.seq - 1 {
            return Err(Error::Verification(format!(
                "{} names a predecessor that is not commit {} at byte {}",
                current.describe(),
                header.seq - 1,
                header.previous_segment_offset
            )));
        }
        chain.push(previous);
    }
    chain.reverse();
    Ok(chain)
}
