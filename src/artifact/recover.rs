//! Recovery of a damaged single file into a new, valid artifact.

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use serde_json::json;

use super::format_id;
use super::writer::{TailInputs, build_tail};
use crate::error::{Error, Result};
use crate::format::codec::Reader;
use crate::format::digest::{Digest, SignedKind, chain_link, genesis_digest};
use crate::format::merkle::merkle_root;
use crate::format::provenance::ProvenanceEntry;
use crate::format::{
    Action, BLOCK_HEADER_LEN, BlockHeader, FILE_HEADER_LEN, FileHeader, IndexEntry,
    MetadataSection, ProvenanceSection, RecordView, SIGNATURE_LEN,
};
use crate::keys::{PublicKey, SigningKey};
use crate::store::{BlockStore, FileStore, Genesis, Tail};

/// How the recovered artifact was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecoveryMode {
    /// The source's last committed state was intact (possibly via its rollback journal) and
    /// was copied byte for byte; no key was needed.
    CommittedState,
    /// No committed state survived: the intact prefix of records was kept byte for byte and
    /// a new commit was signed with the artifact's key.
    Resigned,
}

/// What recovery did.
#[derive(Debug, Clone, Serialize)]
pub struct RecoverReport {
    pub mode: RecoveryMode,
    pub records_recovered: u64,
    /// Provenance entries kept from the source.
    pub provenance_salvaged: u64,
    /// Bytes of the source past the recovered prefix.
    pub bytes_discarded: u64,
    pub used_journal: bool,
}

/// Rebuilds a valid artifact at `destination` (which must not exist) from the file at
/// `source`, which is never modified.
///
/// If the source's last committed state is intact, it is copied exactly. Otherwise the
/// longest prefix of records whose digests, chain links and signatures hold is kept, and a
/// new commit (with the surviving provenance and a `recover` entry) is signed with `key`,
/// which must be the artifact's own key.
pub async fn recover_file(
    source: &Path,
    destination: &Path,
    key: Option<&SigningKey>,
) -> Result<RecoverReport> {
    let source_store: Arc<dyn BlockStore> = Arc::new(FileStore::new(source));
    let image = FileStore::new(source).image()?;
    let used_journal = FileStore::new(source).read_journal()?.is_some();
    if let Ok(head) = source_store.head().await {
        let report = super::verify(source_store.clone(), super::VerifyOptions::default()).await?;
        if report.valid {
            let committed_len = head.trailer.provenance_offset;
            let genesis = Genesis {
                file_header: head.file_header.to_vec(),
                metadata_section: head.metadata_section.to_vec(),
                tail: Tail {
                    provenance_section: head.provenance_section.to_vec(),
                    index_section: head.index_section.to_vec(),
                    trailer: head.trailer.to_bytes().to_vec(),
                },
            };
            let records = &image[head.trailer.records_offset as usize..committed_len as usize];
            write_image(destination, &genesis, records)?;
            let full_len = head.trailer.file_len().unwrap_or(0);
            return Ok(RecoverReport {
                mode: RecoveryMode::CommittedState,
                records_recovered: head.trailer.record_count,
                provenance_salvaged: ProvenanceSection::decode(&head.provenance_section)
                    .map_or(0, |p| p.entries.len() as u64),
                bytes_discarded: (image.len() as u64).saturating_sub(full_len),
                used_journal,
            });
        }
    }
    salvage(source, destination, &image, key, used_journal)
}

fn write_image(destination: &Path, genesis: &Genesis, records: &[u8]) -> Result<()> {
    use std::io::Write;
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(destination)?;
        file.write_all(&genesis.file_header)?;
        file.write_all(&genesis.metadata_section)?;
        file.write_all(records)?;
        file.write_all(&genesis.tail.provenance_section)?;
        file.write_all(&genesis.tail.index_section)?;
        file.write_all(&genesis.tail.trailer)?;
        file.sync_all()?;
        crate::store::file::sync_dir(destination)
    };
    write().map_err(|e| {
        Error::Store(crate::store::StoreError::Io {
            location: destination.display().to_string(),
            action: "writing the recovered artifact".into(),
            source: e,
        })
    })
}

fn salvage(
    source: &Path,
    destination: &Path,
    image: &[u8],
    key: Option<&SigningKey>,
    used_journal: bool,
) -> Result<RecoverReport> {
    let name = source.display().to_string();
    let header_bytes = image.get(..FILE_HEADER_LEN).ok_or_else(|| {
        Error::Invalid(format!(
            "{name}: {} bytes hold no complete file header: nothing to recover",
            image.len()
        ))
    })?;
    FileHeader::decode(header_bytes).map_err(Error::format(format!("{name}: file header")))?;
    let metadata_len = MetadataSection::peek_len(&image[FILE_HEADER_LEN..])
        .map_err(Error::format(format!("{name}: metadata section")))?;
    let records_offset = FILE_HEADER_LEN + metadata_len;
    let metadata_bytes = image.get(FILE_HEADER_LEN..records_offset).ok_or_else(|| {
        Error::Invalid(format!(
            "{name}: the metadata section is cut off: nothing to recover"
        ))
    })?;
    let metadata = MetadataSection::decode(metadata_bytes)
        .map_err(Error::format(format!("{name}: metadata section")))?;
    let public = PublicKey::from_bytes(
        &metadata
            .public_key()
            .map_err(Error::format(format!("{name}: metadata section")))?,
    )?;
    let genesis = genesis_digest(header_bytes, metadata_bytes);

    // Forward scan: keep records while each decodes, links to its predecessor and is signed.
    let mut entries: Vec<IndexEntry> = Vec::new();
    let mut at = records_offset;
    let mut previous = genesis;
    while let Some(header_bytes) = image.get(at..at + BLOCK_HEADER_LEN) {
        let Ok(header) = BlockHeader::decode(header_bytes) else {
            break;
        };
        let Ok(len) = header.record_len() else { break };
        let Some(bytes) = usize::try_from(len)
            .ok()
            .and_then(|len| image.get(at..at.checked_add(len)?))
        else {
            break;
        };
        let Ok(record) = RecordView::decode(bytes) else {
            break;
        };
        let digest = record.digest();
        if header.prev_link != chain_link(&previous)
            || record.metadata_json().is_err()
            || !public.verify_strict(SignedKind::Block, &digest, record.signature)
        {
            break;
        }
        entries.push(IndexEntry {
            offset: at as u64,
            record_len: len,
            block_id: header.block_id,
            block_type: header.block_type,
            metadata_len: header.metadata_len,
            timestamp_us: header.timestamp_us,
            digest,
        });
        previous = digest;
        at += bytes.len();
    }
    let records_end = at;

    // Salvage provenance entries that follow, while they chain, verify and agree with the
    // recovered records.
    let mut kept: Vec<ProvenanceEntry> = Vec::new();
    let mut matched = 0usize;
    if let Some(rest) = image.get(records_end..) {
        let mut r = Reader::new(rest, "provenance section");
        if r.magic(&crate::format::provenance::PROVENANCE_MAGIC, "magic")
            .is_ok()
            && r.u64("entry_count").is_ok()
        {
            let mut link = [0u8; 32];
            while let Ok(entry) = ProvenanceEntry::read(&mut r) {
                let Ok(digest) = entry.digest() else { break };
                if entry.previous != link
                    || !public.verify_strict(SignedKind::Provenance, &digest, &entry.signature)
                {
                    break;
                }
                match entry.action {
                    Action::Create if kept.is_empty() && entry.subject == genesis => {}
                    Action::AddBlock | Action::Update if !kept.is_empty() => {
                        if entries.get(matched).map(|e| e.digest) != Some(entry.subject) {
                            break;
                        }
                        matched += 1;
                    }
                    // A sealed artifact stays sealed through recovery.
                    Action::Finalize if !kept.is_empty() && matched == entries.len() => {}
                    Action::Create | Action::AddBlock | Action::Update | Action::Finalize => break,
                    _ if !kept.is_empty() => {}
                    _ => break,
                }
                link = digest;
                kept.push(entry);
            }
        }
    }

    let Some(key) = key else {
        return Err(Error::Invalid(format!(
            "{name}: no committed state survives; {} intact records ({} bytes) can be recovered, \
             but the new commit must be signed: pass --key with the artifact's key ({})",
            entries.len(),
            records_end - records_offset,
            hex::encode(public.to_bytes())
        )));
    };
    if key.public_key() != public.to_bytes() {
        return Err(Error::KeyMismatch {
            artifact: hex::encode(public.to_bytes()),
            given: hex::encode(key.public_key()),
        });
    }

    let sign = |mut entry: ProvenanceEntry| -> Result<ProvenanceEntry> {
        let digest = entry.digest().map_err(Error::format("provenance entry"))?;
        entry.signature = key.sign(SignedKind::Provenance, &digest);
        Ok(entry)
    };
    let salvaged = kept.len() as u64;
    let now = super::now_us();
    let agent = metadata.metadata().map(|m| m.agent_id).unwrap_or_default();
    let mut head: Digest = match kept.last() {
        Some(entry) => entry.digest().map_err(Error::format("provenance entry"))?,
        None => {
            let create = sign(ProvenanceEntry {
                action: Action::Create,
                flags: 0,
                timestamp_us: FileHeader::decode(header_bytes)
                    .map(|h| h.created_us)
                    .unwrap_or(now),
                previous: [0u8; 32],
                subject: genesis,
                details: serde_json::to_vec(&json!({"agent": agent, "recovered": true}))
                    .unwrap_or_default(),
                signature: [0u8; SIGNATURE_LEN],
            })?;
            let digest = create.digest().map_err(Error::format("provenance entry"))?;
            kept.push(create);
            digest
        }
    };
    // Records whose provenance entries were lost get entries rebuilt from the records.
    let mut seen = std::collections::HashSet::new();
    for entry in &entries[..matched] {
        seen.insert(entry.block_id);
    }
    for entry in &entries[matched..] {
        let action = if seen.insert(entry.block_id) {
            Action::AddBlock
        } else {
            Action::Update
        };
        let rebuilt = sign(ProvenanceEntry {
            action,
            flags: 0,
            timestamp_us: entry.timestamp_us,
            previous: head,
            subject: entry.digest,
            details: serde_json::to_vec(&json!({
                "agent": agent,
                "block_id": format_id(&entry.block_id),
                "block_type": entry.block_type.to_string(),
                "rebuilt_by_recovery": true,
            }))
            .unwrap_or_default(),
            signature: [0u8; SIGNATURE_LEN],
        })?;
        head = rebuilt
            .digest()
            .map_err(Error::format("provenance entry"))?;
        kept.push(rebuilt);
    }
    let discarded = (image.len() - records_end) as u64;
    let recover = sign(ProvenanceEntry {
        action: Action::Recover,
        flags: 0,
        timestamp_us: now,
        previous: head,
        subject: merkle_root(&entries.iter().map(|e| e.digest).collect::<Vec<_>>()),
        details: serde_json::to_vec(&json!({
            "agent": agent,
            "source": name,
            "records_recovered": entries.len(),
            "provenance_salvaged": salvaged,
            "bytes_discarded": discarded,
        }))
        .unwrap_or_default(),
        signature: [0u8; SIGNATURE_LEN],
    })?;
    head = recover
        .digest()
        .map_err(Error::format("provenance entry"))?;
    kept.push(recover);
    let mut provenance_entries = Vec::new();
    for entry in &kept {
        entry
            .encode(&mut provenance_entries)
            .map_err(Error::format("provenance entry"))?;
    }
    let tail = build_tail(
        key,
        TailInputs {
            file_header: header_bytes,
            metadata_section: metadata_bytes,
            provenance_entries: &provenance_entries,
            provenance_count: kept.len() as u64,
            provenance_head: head,
            entries: &entries,
            committed_us: now,
        },
    );
    let genesis = Genesis {
        file_header: header_bytes.to_vec(),
        metadata_section: metadata_bytes.to_vec(),
        tail,
    };
    write_image(destination, &genesis, &image[records_offset..records_end])?;
    Ok(RecoverReport {
        mode: RecoveryMode::Resigned,
        records_recovered: entries.len() as u64,
        provenance_salvaged: salvaged,
        bytes_discarded: discarded,
        used_journal,
    })
}
