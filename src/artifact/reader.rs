//! The verifying reader: opens an artifact only if its commit verifies, and checks each record
//! it returns against the committed digest.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{self, StreamExt};
use serde_json::{Map, Value};

use super::{format_id, verify::check_commit};
use crate::error::{Error, Result};
use crate::format::compression::decompress;
use crate::format::{BlockHeader, FourCC, IndexEntry, ProvenanceSection, RecordView};
use crate::keys::PublicKey;
use crate::store::{BlockStore, Head};

/// A block as listed: its index entry and its version number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockInfo {
    /// Position in record order.
    pub position: usize,
    /// 1 for the first record of this id, 2 for the next, ...
    pub version: u32,
    pub entry: IndexEntry,
}

impl BlockInfo {
    pub fn id(&self) -> String {
        format_id(&self.entry.block_id)
    }
}

/// A block as read.
#[derive(Debug, Clone)]
pub struct Block {
    pub info: BlockInfo,
    pub header: BlockHeader,
    /// Exact metadata bytes.
    pub metadata_bytes: Bytes,
    /// Decompressed data (the typed payload, framing included).
    pub data: Bytes,
}

impl Block {
    pub fn metadata(&self) -> Result<Map<String, Value>> {
        crate::format::block::parse_block_metadata(&self.metadata_bytes)
            .map_err(Error::format(format!("block {} metadata", self.info.id())))
    }
}

/// Reads an artifact from any store.
#[derive(Debug)]
pub struct ArtifactReader {
    store: Arc<dyn BlockStore>,
    head: Head,
    key: PublicKey,
    blocks: Vec<BlockInfo>,
    by_id: HashMap<[u8; 16], Vec<usize>>,
    check_digests: bool,
}

impl ArtifactReader {
    /// Opens the committed state after checking its Merkle root and commit signature.
    pub async fn open(store: Arc<dyn BlockStore>) -> Result<Self> {
        let head = store.head().await?;
        let key = check_commit(&head)?;
        let mut by_id: HashMap<[u8; 16], Vec<usize>> = HashMap::new();
        let mut blocks = Vec::with_capacity(head.index.entries.len());
        for (position, entry) in head.index.entries.iter().enumerate() {
            let versions = by_id.entry(entry.block_id).or_default();
            versions.push(position);
            blocks.push(BlockInfo {
                position,
                version: versions.len() as u32,
                entry: *entry,
            });
        }
        Ok(Self {
            store,
            head,
            key,
            blocks,
            by_id,
            check_digests: true,
        })
    }

    /// Skips re-hashing each record on read (the commit was still verified at open). For
    /// trusted local media where read throughput matters more than detecting later damage.
    pub fn trust_records(mut self) -> Self {
        self.check_digests = false;
        self
    }

    pub fn head(&self) -> &Head {
        &self.head
    }

    pub fn public_key(&self) -> PublicKey {
        self.key
    }

    pub fn store(&self) -> &Arc<dyn BlockStore> {
        &self.store
    }

    /// Every record in order.
    pub fn blocks(&self) -> &[BlockInfo] {
        &self.blocks
    }

    /// The latest version of every block id, in order of first appearance.
    pub fn latest_blocks(&self) -> Vec<BlockInfo> {
        let mut latest: Vec<(usize, BlockInfo)> = self
            .by_id
            .values()
            .filter_map(|positions| Some((*positions.first()?, self.blocks[*positions.last()?])))
            .collect();
        latest.sort_by_key(|(first, _)| *first);
        latest.into_iter().map(|(_, info)| info).collect()
    }

    /// Every version of `block_id`, oldest first.
    pub fn versions(&self, block_id: &[u8; 16]) -> Vec<BlockInfo> {
        self.by_id
            .get(block_id)
            .map(|positions| positions.iter().map(|p| self.blocks[*p]).collect())
            .unwrap_or_default()
    }

    /// Version `version` (1-based) of `block_id`, or the latest when `None`.
    pub fn find(&self, block_id: &[u8; 16], version: Option<u32>) -> Result<BlockInfo> {
        let positions = self
            .by_id
            .get(block_id)
            .ok_or_else(|| Error::UnknownBlock {
                block_id: format_id(block_id),
            })?;
        let latest = positions.len() as u32;
        let wanted = version.unwrap_or(latest);
        if wanted == 0 || wanted > latest {
            return Err(Error::NoSuchVersion {
                block_id: format_id(block_id),
                version: wanted,
                latest,
            });
        }
        Ok(self.blocks[positions[(wanted - 1) as usize]])
    }

    /// Records of type `block_type`, in order.
    pub fn by_type(&self, block_type: FourCC) -> Vec<BlockInfo> {
        self.blocks
            .iter()
            .filter(|b| b.entry.block_type == block_type)
            .copied()
            .collect()
    }

    /// The header and metadata of a record, without its data (one ranged read).
    pub async fn read_metadata(
        &self,
        info: &BlockInfo,
    ) -> Result<(BlockHeader, Map<String, Value>)> {
        let len = crate::format::block::prefix_len(info.entry.metadata_len);
        let bytes = self.store.read_record_range(&info.entry, 0..len).await?;
        let context = || {
            format!(
                "block #{} {} at offset {}",
                info.position,
                info.id(),
                info.entry.offset
            )
        };
        let (header, metadata) = crate::format::block::decode_prefix(&bytes)
            .map_err(|e| Error::format(context())(e.at(info.entry.offset)))?;
        let metadata = crate::format::block::parse_block_metadata(metadata)
            .map_err(|e| Error::format(context())(e.at(info.entry.offset)))?;
        Ok((header, metadata))
    }

    /// Records whose metadata has `key` equal to `value` (a string value, or the JSON text of
    /// any other value).
    pub async fn find_by_metadata(&self, key: &str, value: &str) -> Result<Vec<BlockInfo>> {
        let candidates = self
            .blocks
            .iter()
            .filter(|info| info.entry.metadata_len > 0);
        let read: Vec<_> = stream::iter(candidates)
            .map(|info| async move {
                self.read_metadata(info)
                    .await
                    .map(|(_, metadata)| (*info, metadata))
            })
            .buffered(super::verify::READ_CONCURRENCY)
            .collect()
            .await;
        let mut out = Vec::new();
        for result in read {
            let (info, metadata) = result?;
            let matches = match metadata.get(key) {
                Some(Value::String(s)) => s == value,
                Some(other) => *other == value,
                None => false,
            };
            if matches {
                out.push(info);
            }
        }
        Ok(out)
    }

    /// The header and metadata of each of `infos`, in order, fetched concurrently.
    pub async fn read_metadata_many(
        &self,
        infos: &[BlockInfo],
    ) -> Result<Vec<(BlockHeader, Map<String, Value>)>> {
        stream::iter(infos)
            .map(|info| self.read_metadata(info))
            .buffered(super::verify::READ_CONCURRENCY)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect()
    }

    /// Reads a record whole, checks it against the index (and its digest unless
    /// [`trust_records`](Self::trust_records)), and decompresses its data.
    pub async fn read(&self, info: &BlockInfo) -> Result<Block> {
        let bytes = self.store.read_record(&info.entry).await?;
        let context = || {
            format!(
                "block #{} {} at offset {}",
                info.position,
                info.id(),
                info.entry.offset
            )
        };
        let record = RecordView::decode(&bytes)
            .map_err(|e| Error::format(context())(e.at(info.entry.offset)))?;
        if record.header.block_id != info.entry.block_id
            || record.header.block_type != info.entry.block_type
        {
            return Err(Error::Verification(format!(
                "{}: the record does not match its index entry",
                context()
            )));
        }
        if self.check_digests && record.digest() != info.entry.digest {
            return Err(Error::Verification(format!(
                "{}: content digest does not match the committed digest: the record was altered",
                context()
            )));
        }
        if record.header.encryption != 0 {
            return Err(Error::format(context())(
                crate::format::FormatError::UnsupportedEncryption {
                    code: record.header.encryption,
                },
            ));
        }
        let data = if record.header.compression == 0 {
            bytes.slice(record.data_range())
        } else {
            Bytes::from(
                decompress(
                    record.header.compression,
                    record.data,
                    record.header.uncompressed_size,
                )
                .map_err(|e| Error::format(context())(e))?,
            )
        };
        let metadata_bytes = bytes.slice(record.metadata_range());
        Ok(Block {
            info: *info,
            header: record.header,
            metadata_bytes,
            data,
        })
    }

    /// Convenience: the block `block_id` at `version` (latest when `None`).
    pub async fn get(&self, block_id: &[u8; 16], version: Option<u32>) -> Result<Block> {
        let info = self.find(block_id, version)?;
        self.read(&info).await
    }

    /// The provenance entries.
    pub fn provenance(&self) -> Result<ProvenanceSection> {
        ProvenanceSection::decode(&self.head.provenance_section)
            .map_err(Error::format("provenance section"))
    }
}
