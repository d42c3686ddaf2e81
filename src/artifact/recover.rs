//! Recovery of a damaged single file into a new, valid artifact.
//!
//! 1. **Committed state** (no key needed): the newest commit that verifies in full, back to
//!    the creation, is copied byte for byte. That is the newest commit with an intact
//!    trailer, or a complete, signed commit whose trailer alone was lost (its trailer is
//!    written after it). Bytes past it are discarded and counted.
//! 2. **Re-signed** (the artifact's key needed): when the newest commit is damaged, the
//!    newest commit that verifies is kept byte for byte, then every intact record after it
//!    that still chains and verifies is kept byte for byte too, and one new commit (with a
//!    `recover` provenance entry) is signed over them. If not even the creation survives but
//!    the header and metadata do, the creation is signed anew.
//!
//! The source is never modified, and the output appears only once complete.
//!
//! Recovery writes no provenance entry itself: the new commit is made by the writer, so its
//! entries (an add_block or update per salvaged record, then the `recover` event) pass the
//! provenance rules of `provenance_rules.rs`, and a kept commit is one that full
//! verification, which applies the same rules, finds nothing wrong with.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::commit::{Commit, Identity, complete_commits, find_latest};
use super::verify::{VerifyOptions, VerifyReport, verify_target};
use super::writer::ArtifactWriter;
use crate::error::{Error, Result};
use crate::format::Codec;
use crate::format::block::BLOCK_HEADER_LEN;
use crate::format::digest::{SignedKind, chain_link};
use crate::format::segment::{SEGMENT_HEADER_LEN, SEGMENT_MAGIC};
use crate::format::trailer::TRAILER_MAGIC;
use crate::format::{Action, BlockHeader, RecordView, SegmentHeader, TRAILER_LEN, Trailer};
use crate::keys::SigningKey;
use crate::store::file::publish_new_file;
use crate::store::{BlockStore, FileStore, StoreError};

/// How the recovered artifact was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecoveryMode {
    /// The newest commit that verifies was copied byte for byte; no key was needed.
    CommittedState,
    /// Intact records after the newest valid commit were kept byte for byte and a new commit
    /// was signed with the artifact's key.
    Resigned,
}

/// What recovery did.
#[derive(Debug, Clone, Serialize)]
pub struct RecoverReport {
    /// Whether the committed state was copied as is or intact records were re-signed.
    pub mode: RecoveryMode,
    /// Records in the recovered artifact.
    pub records_recovered: u64,
    /// Commits kept byte for byte from the source.
    pub commits_kept: u64,
    /// Records kept after the newest valid commit and committed anew.
    pub records_salvaged: u64,
    /// Bytes of the source not in the output.
    pub bytes_discarded: u64,
    /// The newest commit had lost its trailer, which was written after it.
    pub trailer_restored: bool,
}

/// How many older commits recovery tries when the newest ones do not verify.
const OLDER_COMMITS_TRIED: usize = 16;

/// Rebuilds a valid artifact at `destination` (which must not exist) from the file at
/// `source`, which is never modified. See the module documentation for the two modes.
pub async fn recover_file(
    source: &Path,
    destination: &Path,
    key: Option<&SigningKey>,
) -> Result<RecoverReport> {
    if destination.exists() {
        return Err(Error::Store(StoreError::AlreadyExists {
            location: destination.display().to_string(),
        }));
    }
    let name = source.display().to_string();
    let file_store = Arc::new(FileStore::new(source));
    let image = file_store.image()?;
    let store: Arc<dyn BlockStore> = file_store;
    let identity = Identity::read(store.as_ref()).await.map_err(|e| {
        Error::Invalid(format!(
            "{name}: the file header or metadata section is damaged, so nothing can be recovered: {e}"
        ))
    })?;

    // Candidates, newest first: a complete commit whose trailer was lost (if any), then every
    // commit an intact trailer locates, found by scanning the file from its end (so a
    // damaged newest segment or a broken link does not hide the commits before it).
    let mut candidates: Vec<(Commit, bool)> = Vec::new();
    if let Ok(found) = find_latest(store.as_ref()).await
        && let Some(range) = found.uncommitted.clone()
        && let Ok(Some((commit, _))) =
            complete_commits(&store, &found.commit, range, &identity.key).await
    {
        candidates.push((commit, true));
    }
    for commit in commits_by_trailer(&image, identity.base.len()) {
        if candidates.len() >= OLDER_COMMITS_TRIED {
            break;
        }
        if !candidates.iter().any(|(c, _)| c.digest == commit.digest) {
            candidates.push((commit, false));
        }
    }
    let newest = candidates.first().map(|(c, _)| c.digest);
    let mut valid: Option<(Commit, bool)> = None;
    for (commit, completed) in candidates {
        let mut report = VerifyReport::empty(name.clone(), "full");
        let checked = verify_target(
            store.clone(),
            &identity,
            &commit,
            completed,
            VerifyOptions::default(),
            &mut report,
        )
        .await;
        if checked.is_ok() && report.problems.is_empty() {
            valid = Some((commit, completed));
            break;
        }
    }

    // The newest commit verifying means nothing committed is lost: bytes after it were
    // never committed. Otherwise, without a key, an older commit is the answer only when
    // nothing after it could be saved anyway.
    let newest_is_valid = valid.as_ref().map(|(c, _)| c.digest) == newest;
    if let Some((commit, completed)) = &valid
        && (newest_is_valid
            || key.is_none()
                && salvage_records(&image, &identity, Some(commit))
                    .records
                    .is_empty())
    {
        write_prefix(destination, &image, commit, *completed)?;
        return Ok(RecoverReport {
            mode: RecoveryMode::CommittedState,
            records_recovered: commit.record_count(),
            commits_kept: commit.seq() + 1,
            records_salvaged: 0,
            bytes_discarded: (image.len() as u64).saturating_sub(commit.end()),
            trailer_restored: *completed,
        });
    }

    let salvage = salvage_records(&image, &identity, valid.as_ref().map(|(c, _)| c));
    let Some(key) = key else {
        return Err(Error::Invalid(format!(
            "{name}: {}; {} intact records ({} bytes) after it can be recovered, but the new \
             commit must be signed: pass --key with the artifact's key ({})",
            match &valid {
                Some((commit, _)) => format!(
                    "the newest commits are damaged, and commit {} ({} records) is the newest that verifies",
                    commit.seq(),
                    commit.record_count()
                ),
                None => "no commit verifies".into(),
            },
            salvage.records.len(),
            salvage.records.iter().map(|r| r.len() as u64).sum::<u64>(),
            hex::encode(identity.key.to_bytes())
        )));
    };
    if key.public_key() != identity.key.to_bytes() {
        return Err(Error::KeyMismatch {
            artifact: hex::encode(identity.key.to_bytes()),
            given: hex::encode(key.public_key()),
        });
    }
    resign(destination, &image, &identity, valid, salvage, key, &name).await
}

/// Every commit located by a trailer intact at its own offset, newest first.
fn commits_by_trailer(image: &[u8], base_len: u64) -> Vec<Commit> {
    let mut commits = Vec::new();
    let mut end = image.len();
    while let Some(found) = image[..end]
        .windows(TRAILER_MAGIC.len())
        .rposition(|w| w == TRAILER_MAGIC)
    {
        end = found;
        let Some(trailer) = image
            .get(found..found + TRAILER_LEN)
            .and_then(|b| Trailer::decode_at(b, found as u64).ok())
            .filter(|t| t.segment_offset >= base_len)
        else {
            continue;
        };
        if let Some(commit) = image
            .get(trailer.segment_offset as usize..found)
            .and_then(|segment| Commit::decode(segment).ok())
            .filter(|c| c.header().segment_offset == trailer.segment_offset)
        {
            commits.push(commit);
        }
    }
    commits
}

/// Writes `image[..commit.end()]` (with the commit's trailer when it had lost it) to
/// `destination`, which appears only once complete.
fn write_prefix(destination: &Path, image: &[u8], commit: &Commit, completed: bool) -> Result<()> {
    let end = commit.end() as usize;
    let trailer_at = end - TRAILER_LEN;
    let trailer = commit.trailer().to_bytes();
    let parts: Vec<&[u8]> = if completed {
        vec![&image[..trailer_at], &trailer]
    } else {
        vec![&image[..end]]
    };
    match publish_new_file(destination, &parts) {
        Ok(true) => Ok(()),
        Ok(false) => Err(Error::Store(StoreError::AlreadyExists {
            location: destination.display().to_string(),
        })),
        Err(source) => Err(Error::Store(StoreError::Io {
            location: destination.display().to_string(),
            action: "writing the recovered artifact".into(),
            source,
        })),
    }
}

/// Records after the newest valid commit that still chain and verify.
struct Salvage {
    records: Vec<Bytes>,
}

/// Scans forward from the end of `valid` (or the base), keeping records while each decodes,
/// links to its predecessor and carries a valid signature, and stepping over the segments and
/// trailers of the damaged commits between them.
fn salvage_records(image: &Bytes, identity: &Identity, valid: Option<&Commit>) -> Salvage {
    let mut at = valid.map_or(identity.base.len(), Commit::end) as usize;
    let mut previous = valid.map_or(identity.genesis, |c| c.header().last_record_digest);
    let mut records = Vec::new();
    while at < image.len() {
        if image[at..].starts_with(&SEGMENT_MAGIC) {
            if let Some(end) = segment_end(image, at) {
                at = end;
                continue;
            }
            break;
        }
        let Some(header) = image
            .get(at..at + BLOCK_HEADER_LEN)
            .and_then(|b| BlockHeader::decode(b).ok())
        else {
            break;
        };
        let Some(bytes) = header
            .record_len()
            .ok()
            .and_then(|len| usize::try_from(len).ok())
            .and_then(|len| {
                Some(image.slice(at..at.checked_add(len).filter(|e| *e <= image.len())?))
            })
        else {
            break;
        };
        let Ok(record) = RecordView::decode(&bytes) else {
            break;
        };
        let digest = record.digest();
        if header.prev_link != chain_link(&previous)
            || record.metadata_json().is_err()
            || !identity
                .key
                .verify_strict(SignedKind::Block, &digest, record.signature)
        {
            break;
        }
        previous = digest;
        at += bytes.len();
        records.push(bytes);
    }
    Salvage { records }
}

/// Where the commit whose segment starts at `at` ends (past its trailer): from its header
/// when that decodes, else from the first intact trailer after it that locates it.
fn segment_end(image: &[u8], at: usize) -> Option<usize> {
    if let Some(header) = image
        .get(at..at + SEGMENT_HEADER_LEN)
        .and_then(|b| SegmentHeader::decode(b).ok())
        && header.segment_offset == at as u64
    {
        return usize::try_from(header.segment_len + TRAILER_LEN as u64)
            .ok()
            .and_then(|len| at.checked_add(len));
    }
    let mut from = at + SEGMENT_MAGIC.len();
    while let Some(found) = image
        .get(from..)?
        .windows(TRAILER_MAGIC.len())
        .position(|w| w == TRAILER_MAGIC)
    {
        let offset = from + found;
        if let Some(trailer) = image
            .get(offset..offset + TRAILER_LEN)
            .and_then(|b| Trailer::decode_at(b, offset as u64).ok())
            && trailer.segment_offset == at as u64
        {
            return Some(offset + TRAILER_LEN);
        }
        from = offset + 1;
    }
    None
}

async fn resign(
    destination: &Path,
    image: &Bytes,
    identity: &Identity,
    valid: Option<(Commit, bool)>,
    salvage: Salvage,
    key: &SigningKey,
    name: &str,
) -> Result<RecoverReport> {
    // Build beside the destination, then link it into place.
    let mut temp_name = destination.as_os_str().to_owned();
    temp_name.push(format!(".recover-{}", uuid::Uuid::new_v4().simple()));
    let temp = PathBuf::from(temp_name);
    let result = async {
        let store: Arc<dyn BlockStore> = Arc::new(FileStore::new(&temp));
        let (mut writer, commits_kept) = match &valid {
            Some((commit, completed)) => {
                write_prefix(&temp, image, commit, *completed)?;
                (
                    ArtifactWriter::open(store.clone(), key.clone_key()).await?,
                    commit.seq() + 1,
                )
            }
            None => (
                ArtifactWriter::create_on_base(store.clone(), key.clone_key(), &identity.base)
                    .await?,
                0,
            ),
        };
        let kept = valid.as_ref().map_or(identity.base.len(), |(c, _)| c.end());
        let salvaged = salvage.records.len() as u64;
        let salvaged_bytes: u64 = salvage.records.iter().map(|r| r.len() as u64).sum();
        for record in salvage.records {
            writer.add_signed_record(record).await?;
        }
        let mut details = Map::new();
        details.insert("source".into(), Value::String(name.to_string()));
        details.insert("records_salvaged".into(), json!(salvaged));
        details.insert("commits_kept".into(), json!(commits_kept));
        writer.record_event(Action::Recover, details).await?;
        writer.commit().await?;
        let records = writer.record_count();
        Ok::<_, Error>(RecoverReport {
            mode: RecoveryMode::Resigned,
            records_recovered: records,
            commits_kept,
            records_salvaged: salvaged,
            bytes_discarded: (image.len() as u64).saturating_sub(kept + salvaged_bytes),
            trailer_restored: valid.as_ref().is_some_and(|(_, completed)| *completed),
        })
    }
    .await;
    let result = result.and_then(|report| {
        std::fs::hard_link(&temp, destination).map_err(|source| {
            Error::Store(StoreError::Io {
                location: destination.display().to_string(),
                action: "publishing the recovered artifact".into(),
                source,
            })
        })?;
        crate::store::file::sync_dir(destination).map_err(|source| {
            Error::Store(StoreError::Io {
                location: destination.display().to_string(),
                action: "publishing the recovered artifact".into(),
                source,
            })
        })?;
        Ok(report)
    });
    let _ = std::fs::remove_file(&temp);
    result
}
