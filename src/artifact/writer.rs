//! The signing writer.
//!
//! A writer holds the newest commit's head (a few hundred bytes, whatever the artifact's
//! size) and appends on top of it: each block becomes a signed record sent to the store at
//! once, and [`ArtifactWriter::commit`] appends one segment (the new provenance entries, the
//! new index run, the Merkle frontier) signed once. Nothing committed is ever rewritten.
//!
//! A bulk write keeps every core signing: a batch's records are signed in the background
//! while the calling thread sends the previous batch, chains this batch's provenance entries
//! and prepares the next; [`ArtifactWriter::start_commit`] hands a commit to the store and
//! returns, and the store makes it durable while the next blocks are signed. From a single
//! file session's second commit on (the session holds the file's lock, so no conflict can
//! come), the hand-over itself runs in the background: the commit's last records follow
//! their signatures there, and the calling thread goes on to the next blocks at once.
//!
//! If another writer committed first, the store refuses the commit; the writer then reads
//! the newest commit, re-links its pending blocks on top of it (their content digests and
//! compressed bytes are kept; only headers, record digests and signatures are redone) and
//! tries again, up to [`ArtifactWriter::with_max_retries`] times.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::commit::{Commit, Identity, Settled, find_latest, settle};
use super::index::{Index, plan_run};
use super::provenance_rules::ProvenanceRules;
use super::{format_id, format_time, now_us};
use crate::error::{Error, Result};
use crate::format::block::{BLOCK_HEADER_LEN, BlockHeader, MAX_BLOCK_METADATA_LEN};
use crate::format::compression::{COMPRESSION_NONE, COMPRESSION_ZSTD, zstd_compress};
use crate::format::digest::{
    Digest, SignedKind, chain_link, commit_digest, content_digest, genesis_digest, record_digest,
};
use crate::format::merkle::empty_root;
use crate::format::metadata::SIGNATURE_ALGORITHM;
use crate::format::provenance::{ProvenanceEntry, encode_entries};
use crate::format::run::{RunEntry, encode_run_into, run_part_len};
use crate::format::segment::{FLAG_SEALED, FRONTIER_AT, SegmentBuffer, SegmentHeader};
use crate::format::{
    Action, ArtifactMetadata, FileHeader, FourCC, Frontier, IndexEntry, MetadataSection,
    RecordView, SIGNATURE_LEN, Trailer,
};
use crate::format::{Codec, FixedCodec};
use crate::keys::{PublicKey, SigningKey};
use crate::parallel::{InBackground, available_threads, map_in_background, parallel_map};
use crate::store::{
    AppendSession, Base, BlockStore, Continued, Durable, RecordBytes, SMALL_RECORD_LEN,
    SmallRecord, StoreError,
};

/// What `create` puts in the header and metadata section.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// Who or what creates the artifact (free text, stored in the metadata section).
    pub agent_id: String,
    /// MIME type of the artifact's content; empty when unspecified.
    pub content_type: String,
    /// Version of the creator's schema for the content; empty when unspecified.
    pub schema_version: String,
    /// Free string pairs stored in the metadata section's `custom` object.
    pub custom: BTreeMap<String, String>,
    /// Creation time; now when `None`.
    pub created_us: Option<u64>,
    /// Artifact id; random when `None`.
    pub artifact_id: Option<[u8; 16]>,
}

/// A block to append.
#[derive(Debug, Clone)]
pub struct NewBlock {
    /// The block type; TEXT, EMBD and IMAG data must carry their typed framing.
    pub block_type: FourCC,
    /// Payload bytes, uncompressed (typed framings already applied).
    pub data: Bytes,
    /// Exact block metadata bytes (empty, or a JSON object).
    pub metadata: Bytes,
    /// zstd level when the block is to be compressed.
    pub zstd_level: Option<i32>,
    /// Block id; random for a new block when `None`.
    pub block_id: Option<[u8; 16]>,
    /// Record timestamp; the writer's clock when `None`.
    pub timestamp_us: Option<u64>,
}

impl NewBlock {
    /// A block of type `block_type` holding `data` (uncompressed, typed framing applied),
    /// with no metadata, no compression, a fresh id and the writer's clock.
    pub fn new(block_type: FourCC, data: impl Into<Bytes>) -> Self {
        Self {
            block_type,
            data: data.into(),
            metadata: Bytes::new(),
            zstd_level: None,
            block_id: None,
            timestamp_us: None,
        }
    }

    /// Sets the metadata from a JSON object (serialised once, keys sorted).
    pub fn with_metadata(mut self, metadata: &Map<String, Value>) -> Self {
        self.metadata = if metadata.is_empty() {
            Bytes::new()
        } else {
            let sorted: BTreeMap<&String, &Value> = metadata.iter().collect();
            Bytes::from(serde_json::to_vec(&sorted).unwrap_or_default())
        };
        self
    }

    /// Sets the exact metadata bytes (empty, or a JSON object).
    pub fn with_metadata_bytes(mut self, metadata: impl Into<Bytes>) -> Self {
        self.metadata = metadata.into();
        self
    }

    /// Stores the data compressed with zstd at `level` (readers see the same bytes).
    pub fn with_zstd(mut self, level: i32) -> Self {
        self.zstd_level = Some(level);
        self
    }

    /// Uses block id `id` instead of a fresh one (see [`ArtifactWriter::add`] for what adding
    /// under an existing id does).
    pub fn with_id(mut self, id: [u8; 16]) -> Self {
        self.block_id = Some(id);
        self
    }

    /// Sets the record timestamp, microseconds since the Unix epoch.
    pub fn with_timestamp(mut self, timestamp_us: u64) -> Self {
        self.timestamp_us = Some(timestamp_us);
        self
    }
}

/// Where an appended block landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRef {
    /// The block id (a UUID).
    pub block_id: [u8; 16],
    /// 1 for the first record of this id, 2 for the next, ...
    pub version: u32,
    /// Position in record order (its Merkle leaf index).
    pub position: u64,
    /// Offset in the single-file image.
    pub offset: u64,
    /// The record digest (what the Merkle leaf and the next record's link are made from).
    pub digest: Digest,
}

type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// A block after the work that does not depend on where it lands: compression, metadata
/// check and content digest.
#[derive(Debug, Clone)]
struct PreparedBlock {
    block_id: [u8; 16],
    block_type: FourCC,
    compression: crate::format::Compression,
    /// The header's flags and encryption code: zero for blocks this writer makes; a signed
    /// record added as is keeps its own.
    flags: u16,
    encryption: crate::format::Encryption,
    uncompressed_size: u64,
    timestamp_us: u64,
    metadata: Bytes,
    /// Stored bytes (compressed when `compression != 0`).
    data: Bytes,
    content: Digest,
    /// The caller named the id (so it must be checked against the index).
    explicit_id: bool,
    action: Action,
}

/// Where a block being added goes.
enum Slot {
    /// A new record with this version.
    New(u32),
    /// The id is committed already with the same type and content: nothing to add (a re-run
    /// of an add that landed).
    AlreadyCommitted(BlockRef),
}

/// Pending records uploaded longer ago than this are uploaded again before the commit that
/// names them, so that garbage collection (which spares unreferenced objects younger than
/// its grace period, seven days by default) cannot have taken one while the writer waited.
pub const REUPLOAD_PENDING_AFTER: Duration = Duration::from_secs(3600);

/// A pending block once linked onto the chain.
#[derive(Debug, Clone, Copy)]
struct Placed {
    entry: IndexEntry,
    position: u64,
    version: u32,
}

#[derive(Debug, Clone)]
enum Pending {
    Block(Box<PreparedBlock>),
    Event {
        action: Action,
        details: Map<String, Value>,
    },
}

/// The provenance entries and Merkle frontier of the first `blocks` pending blocks, built
/// while their records are signed (on the calling thread, beside the signing threads: see
/// [`ArtifactWriter::place`]), so that a commit does not chain them one by one while the
/// other cores wait. Staging stops at the first pending event, whose entry needs the
/// commit's time; the commit chains the rest.
struct Staged {
    /// The commit the entries chain from.
    base: Digest,
    /// How many pending items (all blocks) are staged.
    blocks: usize,
    /// The record digest of the last staged block: the record chain makes it stand for all
    /// of them, so a commit can check that the staged blocks are still the placed ones.
    last_record: Option<Digest>,
    frontier: Frontier,
    head: Digest,
    /// The staged entries, encoded as the segment's provenance part holds them.
    provenance: Vec<u8>,
    /// Merkle node hashes computed (see [`ArtifactWriter::merkle_hashes`]).
    hashes: u64,
    /// Scratch space for one entry's details.
    details: Vec<u8>,
}

impl Staged {
    /// Nothing staged yet on top of `commit`; the entries go into `buffer` (emptied first).
    fn after(commit: &Commit, mut buffer: Vec<u8>) -> Self {
        buffer.clear();
        Self {
            base: commit.digest,
            blocks: 0,
            last_record: None,
            frontier: commit.frontier().clone(),
            head: commit.header().provenance_head,
            provenance: buffer,
            hashes: 0,
            details: Vec::new(),
        }
    }

    /// Whether this is still a prefix of what `pending` and `placed` hold on `commit`.
    fn still_holds(&self, commit: &Commit, pending: &[Pending], placed: &[Placed]) -> bool {
        self.base == commit.digest
            && self.blocks <= placed.len()
            && self.blocks <= pending.len()
            && self.last_record == self.blocks.checked_sub(1).map(|i| placed[i].entry.digest)
            && pending[..self.blocks]
                .iter()
                .all(|p| matches!(p, Pending::Block(_)))
    }

    /// Chains the pending blocks after the staged ones, up to the first event or the first
    /// block not placed yet.
    fn advance(&mut self, pending: &[Pending], placed: &[Placed]) -> Result<()> {
        for item in &pending[self.blocks.min(pending.len())..] {
            let Pending::Block(block) = item else {
                return Ok(());
            };
            let Some(p) = placed.get(self.blocks) else {
                return Ok(());
            };
            self.hashes += u64::from(self.frontier.append(&p.entry.digest));
            let details = std::mem::take(&mut self.details);
            let entry = block_entry(block, p, self.head, details);
            self.head = entry
                .encode_with_digest(&mut self.provenance)
                .map_err(Error::format("provenance entry"))?;
            // The details buffer serves the next entry: no allocation per block.
            self.details = entry.details;
            self.blocks += 1;
            self.last_record = Some(p.entry.digest);
        }
        Ok(())
    }
}

/// The provenance entry of a pending block once placed, chained to `previous`, with its
/// details written into `details` (cleared first; a buffer to reuse, or a new one).
fn block_entry(
    block: &PreparedBlock,
    placed: &Placed,
    previous: Digest,
    mut details: Vec<u8>,
) -> ProvenanceEntry {
    details.clear();
    block_details(
        &mut details,
        &block.block_id,
        block.block_type,
        placed.version,
    );
    ProvenanceEntry {
        action: block.action,
        flags: 0,
        timestamp_us: block.timestamp_us,
        previous,
        subject: placed.entry.digest,
        details,
    }
}

/// Appends signed blocks to an artifact. Records go to the store as they are added; nothing
/// becomes visible to readers until [`ArtifactWriter::commit`].
pub struct ArtifactWriter {
    store: Arc<dyn BlockStore>,
    key: Arc<SigningKey>,
    public: PublicKey,
    index: Index,
    clock: Clock,
    max_retries: u32,
    /// The newest commit this writer builds on.
    commit: Commit,
    /// The image length examined when `commit` was read (see `AppendBase::examined_len`).
    examined_len: u64,
    agent_id: Option<String>,
    pending: Vec<Pending>,
    /// The pending blocks as linked onto `commit` (one per `Pending::Block`, in order).
    placed: Vec<Placed>,
    /// Versions the pending blocks give their ids.
    pending_versions: HashMap<[u8; 16], u32>,
    /// The provenance rules (FORMAT.md 9.2) of the commit being built: the newest commit,
    /// then the pending events. Reset whenever `commit` changes or `pending` is cleared.
    rules: ProvenanceRules,
    session: Option<Box<dyn AppendSession>>,
    /// `session` goes on from a commit this writer handed over (`commit_and_continue`), so
    /// it holds the store's lock since: no other writer can commit before its next commit.
    session_continues: bool,
    /// A commit being handed to the store in the background ([`hand_over`]); the session
    /// comes back from it.
    handover: Option<HandOver>,
    /// The last batches placed, oldest first, while their records are signed; sent to the
    /// session by a later batch or the commit.
    signing: VecDeque<Signing>,
    /// The pending blocks' provenance entries and frontier, as far as built (see [`Staged`]).
    staged: Option<Staged>,
    merkle_hashes: u64,
    /// The pending commit merges every live run into one.
    compacting: bool,
    /// The pending blocks are not linked onto the newest commit (re-linking them failed):
    /// the next add or commit re-links them first.
    stale: bool,
    /// Blocks added since the last commit that turned out to be committed already (same id,
    /// type and content), so the commit has nothing to add for them.
    already_committed: Vec<BlockRef>,
    /// What the last successful commit made durable (see [`ArtifactWriter::last_committed_blocks`]).
    last_committed: Vec<BlockRef>,
    /// When the pending records were sent to the store (see [`REUPLOAD_PENDING_AFTER`]).
    placed_at: Option<std::time::Instant>,
    /// Pending records older than this are uploaded again before their commit.
    reupload_after: Duration,
    /// The last commit's provenance buffer, for the next one's entries: a fresh one would
    /// grow by copying and touch new pages, for every commit of a bulk import.
    provenance_buffer: Vec<u8>,
}

/// A provenance buffer larger than this is freed after its commit, not kept for the next.
const KEEP_PROVENANCE_BUFFER: usize = 16 << 20;

impl std::fmt::Debug for ArtifactWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArtifactWriter")
            .field("store", &self.store.location())
            .field("commit", &self.commit.seq())
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

fn details(value: Value) -> Vec<u8> {
    // serde_json maps are sorted (no preserve_order feature), so this is deterministic.
    serde_json::to_vec(&value).unwrap_or_default()
}

/// Appends the details of a block's provenance entry,
/// `{"block_id":…,"block_type":…,"version":N}`: the bytes [`details`] writes for that map,
/// without building the map (this runs once per block of every commit).
fn block_details(out: &mut Vec<u8>, block_id: &[u8; 16], block_type: FourCC, version: u32) {
    use std::io::Write as _;
    out.extend_from_slice(b"{\"block_id\":\"");
    let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
    out.extend_from_slice(
        uuid::Uuid::from_bytes(*block_id)
            .hyphenated()
            .encode_lower(&mut id)
            .as_bytes(),
    );
    out.extend_from_slice(b"\",\"block_type\":");
    let code = block_type.0;
    if code
        .iter()
        .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\\'))
    {
        // The common case: four printable characters, which JSON writes as they are.
        out.push(b'"');
        out.extend_from_slice(&code);
        out.push(b'"');
    } else {
        // Serializing a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, &block_type.to_string());
    }
    // Writing into a Vec cannot fail.
    let _ = write!(out, ",\"version\":{version}}}");
}

/// Jittered exponential backoff before retry `attempt` (1-based).
fn backoff(attempt: u32) -> Duration {
    let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0]);
    Duration::from_millis((5u64 << attempt.min(7)) + jitter)
}

/// Default number of times a commit is retried after another writer committed first.
pub const DEFAULT_MAX_RETRIES: u32 = 40;

impl ArtifactWriter {
    /// Creates a new artifact at `store`, signed by `key`, and opens it for appending.
    ///
    /// The artifact exists, with its first commit (no records), when this returns.
    ///
    /// # Errors
    ///
    /// [`StoreError::AlreadyExists`] (inside [`Error::Store`]) if `store` already holds an
    /// artifact; store errors if it cannot be written.
    ///
    /// # Example
    ///
    /// ```
    /// use std::sync::Arc;
    /// use maif_store::store::{BlockStore, FileStore};
    /// use maif_store::{ArtifactWriter, CreateOptions, SigningKey};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> maif_store::Result<()> {
    /// let dir = tempfile::tempdir().unwrap();
    /// let store: Arc<dyn BlockStore> = Arc::new(FileStore::new(dir.path().join("notes.maif")));
    /// let key = SigningKey::generate()?;
    /// let options = CreateOptions {
    ///     agent_id: "agent-1".into(),
    ///     ..Default::default()
    /// };
    /// let writer = ArtifactWriter::create(store.clone(), key, options.clone()).await?;
    /// assert_eq!(writer.record_count(), 0);
    ///
    /// // A second create at the same place is refused.
    /// let other_key = SigningKey::generate()?;
    /// assert!(ArtifactWriter::create(store, other_key, options).await.is_err());
    /// # Ok(()) }
    /// ```
    pub async fn create(
        store: Arc<dyn BlockStore>,
        key: SigningKey,
        options: CreateOptions,
    ) -> Result<Self> {
        let created_us = options.created_us.unwrap_or_else(now_us);
        let artifact_id = options
            .artifact_id
            .unwrap_or_else(|| *uuid::Uuid::new_v4().as_bytes());
        let file_header = FileHeader::new(created_us, artifact_id).to_bytes();
        let metadata = ArtifactMetadata {
            format_version: format!(
                "{}.{}",
                crate::format::file_header::MAJOR_VERSION,
                crate::format::file_header::MINOR_VERSION
            ),
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
        let base = Base {
            file_header: Bytes::copy_from_slice(&file_header),
            metadata_section: Bytes::from(metadata_section),
        };
        let create_details = json!({
            "agent": options.agent_id,
            "artifact_id": format_id(&artifact_id),
        });
        let mut writer =
            Self::create_commit_zero(store, key, &base, created_us, create_details).await?;
        writer.agent_id = Some(options.agent_id);
        if let Some(fixed) = options.created_us {
            writer.set_clock(move || fixed);
        }
        Ok(writer)
    }

    /// Creates an artifact on an existing file header and metadata section (their exact
    /// bytes), as recovery does when not even the creation commit survived.
    pub(crate) async fn create_on_base(
        store: Arc<dyn BlockStore>,
        key: SigningKey,
        base: &Base,
    ) -> Result<Self> {
        let header = FileHeader::decode(&base.file_header).map_err(Error::format("file header"))?;
        let agent = MetadataSection::decode(&base.metadata_section)
            .and_then(|m| m.metadata())
            .map(|m| m.agent_id)
            .unwrap_or_default();
        let details = json!({"agent": agent, "recovered": true});
        Self::create_commit_zero(store, key, base, header.created_us, details).await
    }

    async fn create_commit_zero(
        store: Arc<dyn BlockStore>,
        key: SigningKey,
        base: &Base,
        created_us: u64,
        create_details: Value,
    ) -> Result<Self> {
        let genesis = genesis_digest(&base.file_header, &base.metadata_section);
        // Commit 0 holds the create entry alone.
        ProvenanceRules::new().create()?;
        let create = ProvenanceEntry {
            action: Action::Create,
            flags: 0,
            timestamp_us: created_us,
            previous: [0u8; 32],
            subject: genesis,
            details: details(create_details),
        };
        let provenance = encode_entries(std::slice::from_ref(&create))
            .map_err(Error::format("provenance entry"))?;
        let base_len = base.len();
        let frontier = Frontier::new();
        let header = SegmentHeader {
            seq: 0,
            committed_us: created_us,
            segment_offset: base_len,
            segment_len: FRONTIER_AT as u64 + provenance.len() as u64,
            records_start: base_len,
            record_count: 0,
            records_added: 0,
            provenance_count: 1,
            provenance_added: 1,
            provenance_len: provenance.len() as u64,
            run_len: 0,
            flags: 0,
            genesis,
            previous_commit: [0u8; 32],
            previous_segment_offset: 0,
            last_record_digest: genesis,
            provenance_head: create.digest().map_err(Error::format("provenance entry"))?,
            merkle_root: empty_root(),
            newest_run: None,
        };
        let header_bytes = header.to_bytes();
        let digest = commit_digest(&header_bytes, &[]);
        let signature = key.sign(SignedKind::Commit, &digest);
        let mut built = SegmentBuffer::new(0, provenance.len());
        built.body().extend_from_slice(&provenance);
        let segment = built
            .finish(&header, &signature, &frontier)
            .map_err(Error::format("the first commit"))?;
        let trailer = Trailer {
            segment_offset: header.segment_offset,
            segment_len: header.segment_len,
            merkle_root: header.merkle_root,
        };
        let mut genesis_bytes = base.to_vec();
        genesis_bytes.extend_from_slice(&segment);
        genesis_bytes.extend_from_slice(&trailer.to_bytes());
        store.create(Bytes::from(genesis_bytes)).await?;
        let commit = Commit::decode(&segment).map_err(Error::format("the commit just made"))?;
        let public = PublicKey::from_bytes(&key.public_key())?;
        let examined_len = commit.end();
        Ok(Self::with_commit(
            store,
            key,
            public,
            Settled {
                commit,
                prefix: Bytes::from(segment),
                completed: false,
                examined_len,
            },
        ))
    }

    fn with_commit(
        store: Arc<dyn BlockStore>,
        key: SigningKey,
        public: PublicKey,
        settled: Settled,
    ) -> Self {
        let index = Index::new(store.clone());
        index.remember_segment(settled.commit.reference(), settled.prefix);
        let commit = settled.commit;
        let rules = ProvenanceRules::writing_after(commit.header());
        Self {
            examined_len: settled.examined_len,
            store,
            key: Arc::new(key),
            public,
            index,
            clock: Arc::new(now_us),
            max_retries: DEFAULT_MAX_RETRIES,
            commit,
            agent_id: None,
            pending: Vec::new(),
            placed: Vec::new(),
            pending_versions: HashMap::new(),
            rules,
            session: None,
            session_continues: false,
            handover: None,
            signing: VecDeque::new(),
            staged: None,
            merkle_hashes: 0,
            compacting: false,
            stale: false,
            already_committed: Vec::new(),
            last_committed: Vec::new(),
            placed_at: None,
            reupload_after: REUPLOAD_PENDING_AFTER,
            provenance_buffer: Vec::new(),
        }
    }

    /// Opens an existing artifact for appending. The newest commit must be signed by `key`
    /// (a writer never extends a commit its key did not make); its chain seed, which every
    /// new commit carries on, is checked against the header and metadata by readers and by
    /// verification, not here. Opening reads the newest commit's head only, whatever the
    /// artifact's size: on an object store, one LIST and one GET.
    pub async fn open(store: Arc<dyn BlockStore>, key: SigningKey) -> Result<Self> {
        let public = PublicKey::from_bytes(&key.public_key())?;
        let settled = Self::load_newest(&store, &public).await?;
        Ok(Self::with_commit(store, key, public, settled))
    }

    /// The newest commit, checked under `public`, completed first if it lost its trailer.
    async fn load_newest(store: &Arc<dyn BlockStore>, public: &PublicKey) -> Result<Settled> {
        let found = find_latest(store.as_ref()).await?;
        if !found.commit.signed_by(public) {
            // Tell a wrong key from a damaged commit.
            let identity = Identity::read(store.as_ref()).await?;
            if identity.key.to_bytes() != public.to_bytes() {
                return Err(Error::KeyMismatch {
                    artifact: hex::encode(identity.key.to_bytes()),
                    given: hex::encode(public.to_bytes()),
                });
            }
            return Err(Error::Verification(format!(
                "{}: the commit signature does not verify: the segment was altered",
                found.commit.describe()
            )));
        }
        settle(store, found, public).await
    }

    /// Replaces the clock used for record, provenance and commit timestamps (for
    /// reproducible files).
    pub fn set_clock(&mut self, clock: impl Fn() -> u64 + Send + Sync + 'static) {
        self.clock = Arc::new(clock);
    }

    /// Pending records uploaded longer ago than this are uploaded again before the commit
    /// that names them (default [`REUPLOAD_PENDING_AFTER`]); a deployment whose garbage
    /// collection uses a shorter grace period than seven days sets a shorter time here.
    pub fn with_reupload_after(mut self, after: Duration) -> Self {
        self.reupload_after = after;
        self
    }

    /// How many times a commit is retried when another writer committed first (default
    /// [`DEFAULT_MAX_RETRIES`]).
    pub fn with_max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = max_retries;
        self
    }

    /// The newest commit this writer builds on.
    pub fn last_commit(&self) -> &Commit {
        &self.commit
    }

    /// Records committed so far plus those pending.
    pub fn record_count(&self) -> u64 {
        self.commit.record_count() + self.placed.len() as u64
    }

    /// SHA-256 computations spent on the Merkle tree by this writer's commits so far.
    pub fn merkle_hashes(&self) -> u64 {
        self.merkle_hashes
    }

    /// May blocks be added? Not after a finalize entry, pending or committed
    /// ([`Error::Finalized`]).
    fn check_open(&self) -> Result<()> {
        Ok(self.rules.entry_allowed()?)
    }

    /// The blocks the last successful [`Self::commit`] made durable, where they finally
    /// landed (re-linking after another writer's commit moves them), followed by any added
    /// block that was found committed already (see [`Self::add`]).
    pub fn last_committed_blocks(&self) -> &[BlockRef] {
        &self.last_committed
    }

    /// Appends a new block (a fresh id unless `block.block_id` names one).
    ///
    /// Adding under an id that is already committed with the same block type and content
    /// (metadata and stored data; the timestamp may differ) adds nothing and returns the
    /// committed block: re-running an add whose outcome was unknown is safe when it names its
    /// id. The same id with other content is refused.
    ///
    /// The block is pending until [`Self::commit`]: a crash before then loses it.
    ///
    /// # Example
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use maif_store::store::{BlockStore, FileStore};
    /// # use maif_store::{ArtifactWriter, CreateOptions, SigningKey};
    /// use maif_store::NewBlock;
    /// use maif_store::format::payload::TextPayload;
    /// use maif_store::format::{Codec, FourCC};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> maif_store::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let store: Arc<dyn BlockStore> = Arc::new(FileStore::new(dir.path().join("a.maif")));
    /// # let key = SigningKey::generate()?;
    /// let mut writer = ArtifactWriter::create(store, key, CreateOptions::default()).await?;
    /// let text = TextPayload::utf8("hello", Some(*b"en")).to_bytes();
    /// let first = writer.add(NewBlock::new(FourCC::TEXT, text.clone())).await?;
    /// assert_eq!((first.position, first.version), (0, 1));
    ///
    /// // A new version of the same block.
    /// let second = writer.update(first.block_id, NewBlock::new(FourCC::TEXT, text)).await?;
    /// assert_eq!((second.position, second.version), (1, 2));
    /// writer.commit().await?;
    /// # Ok(()) }
    /// ```
    pub async fn add(&mut self, block: NewBlock) -> Result<BlockRef> {
        Ok(self.add_all(vec![(block, Action::AddBlock)]).await?[0])
    }

    /// Appends a new version of the existing block `block_id`.
    pub async fn update(&mut self, block_id: [u8; 16], block: NewBlock) -> Result<BlockRef> {
        Ok(self
            .add_all(vec![(block.with_id(block_id), Action::Update)])
            .await?[0])
    }

    /// Appends several new blocks at once: their compression, hashing and signing run on
    /// every core.
    pub async fn add_batch(&mut self, blocks: Vec<NewBlock>) -> Result<Vec<BlockRef>> {
        self.add_all(blocks.into_iter().map(|b| (b, Action::AddBlock)).collect())
            .await
    }

    /// Appends a record that is already signed, byte for byte (recovery keeps salvaged
    /// records exactly; tools can copy records between artifacts of one key). It must link to
    /// the chain where it lands and carry a valid signature under this writer's key; it
    /// becomes a new version if its id exists. Its payload is not decoded: full
    /// verification reports one that a reader could not decode.
    pub async fn add_signed_record(&mut self, record: Bytes) -> Result<BlockRef> {
        self.check_open()?;
        let view = RecordView::decode(&record).map_err(Error::format("salvaged record"))?;
        let previous = self
            .placed
            .last()
            .map_or(self.commit.header().last_record_digest, |p| p.entry.digest);
        let digest = view.digest();
        if view.header.prev_link != chain_link(&previous)
            || !self
                .public
                .verify_strict(SignedKind::Block, &digest, view.signature)
        {
            return Err(Error::Verification(format!(
                "record of block {} does not link to the chain here or is not signed by this key",
                format_id(&view.header.block_id)
            )));
        }
        let id = view.header.block_id;
        let existing = match self.pending_versions.get(&id) {
            Some(version) => Some(*version),
            None => self
                .index
                .find(self.commit.header().newest_run, &id, None)
                .await?
                .map(|e| e.version),
        };
        let action = ProvenanceRules::block_action(existing);
        let version = ProvenanceRules::block_version(action, &id, existing)?;
        let prepared = PreparedBlock {
            block_id: id,
            block_type: view.header.block_type,
            compression: view.header.compression,
            flags: view.header.flags,
            encryption: view.header.encryption,
            uncompressed_size: view.header.uncompressed_size,
            timestamp_us: view.header.timestamp_us,
            metadata: record.slice(view.metadata_range()),
            data: record.slice(view.data_range()),
            content: view.content_digest(),
            explicit_id: true,
            action,
        };
        self.pending_versions.insert(id, version);
        let first = self.pending.len();
        self.pending.push(Pending::Block(Box::new(prepared)));
        match self.place(first, vec![version], true).await {
            Ok(refs) if refs.first().is_some_and(|r| r.digest == digest) => Ok(refs[0]),
            Ok(_) => Err(Error::Invalid(
                "internal: a salvaged record did not keep its bytes".into(),
            )),
            Err(e) => {
                self.pending.truncate(first);
                self.staged = None;
                self.pending_versions.remove(&id);
                Err(e)
            }
        }
    }

    async fn add_all(&mut self, blocks: Vec<(NewBlock, Action)>) -> Result<Vec<BlockRef>> {
        self.check_open()?;
        let total = blocks.len();
        let groups = slices_by_payload(blocks);
        // A batch placed in parts (by payload, or in growing parts from FIRST_SIGNED blocks
        // on: see `add_slices`) refuses a bad block before any part is placed.
        if groups.len() > 1 || total >= 2 * FIRST_SIGNED {
            // Refuse a bad block before any of the batch is placed.
            for (block, _) in groups.iter().flatten() {
                crate::format::block::parse_block_metadata(&block.metadata)
                    .map_err(Error::format("block metadata"))?;
            }
        }
        let first = self.pending.len();
        // What these blocks change in `pending_versions`, to undo if they are refused (a
        // copy of the map would cost O(pending) per add).
        let mut replaced = Vec::with_capacity(total);
        let already_before = self.already_committed.len();
        match self.add_slices(groups, &mut replaced).await {
            Ok(slots) => {
                // Re-linking after a conflict can find some of these blocks committed
                // already, so they are matched by id, not by count: among the newest placed
                // (a later version of an id wins), then among those found committed.
                let newest = &self.placed[self.placed.len().saturating_sub(slots.len())..];
                // The common case: every block placed, in order, nothing re-linked.
                if newest.len() == slots.len()
                    && slots
                        .iter()
                        .zip(newest)
                        .all(|((id, slot), p)| slot.is_none() && p.entry.block_id == *id)
                {
                    return Ok(newest.iter().map(|p| self.block_ref(p)).collect());
                }
                let placed: HashMap<[u8; 16], &Placed> =
                    newest.iter().map(|p| (p.entry.block_id, p)).collect();
                slots
                    .into_iter()
                    .map(|(id, slot)| match (slot, placed.get(&id)) {
                        (Some(existing), _) => Ok(existing),
                        (None, Some(p)) => Ok(self.block_ref(p)),
                        (None, None) => self
                            .already_committed
                            .iter()
                            .find(|b| b.block_id == id)
                            .copied()
                            .ok_or_else(|| {
                                Error::Invalid(format!(
                                    "internal: block {} was neither placed nor found committed",
                                    format_id(&id)
                                ))
                            }),
                    })
                    .collect()
            }
            Err(e) => {
                self.already_committed.truncate(already_before);
                let placed_any = self.pending.len() > first;
                self.pending.truncate(first);
                self.staged = None;
                self.undo_versions(replaced);
                if placed_any {
                    // The session holds some of these records: the blocks pending before
                    // them are placed again on a fresh one.
                    if self.pending.is_empty() {
                        self.abandon();
                    } else if let Err(again) = self.rebase().await {
                        // They stay pending; the next add or commit links them again.
                        tracing::warn!(error = %again, "could not re-link the pending blocks");
                    }
                }
                Err(e)
            }
        }
    }

    /// Prepares and places the blocks of `slices` one slice after another, so the store
    /// writes one slice while the next is hashed. Returns, per block in order, its id and,
    /// for one found committed already, the committed block.
    async fn add_slices(
        &mut self,
        slices: Vec<Vec<(NewBlock, Action)>>,
        replaced: &mut Vec<([u8; 16], Option<u32>)>,
    ) -> Result<Vec<([u8; 16], Option<BlockRef>)>> {
        let clock = self.clock.clone();
        let mut slots = Vec::new();
        let mut slices: VecDeque<_> = slices.into();
        while let Some(mut slice) = slices.pop_front() {
            // Little is being signed (the first batch, or the first after a commit): a small
            // first part starts the cores signing while the next is prepared, each part at
            // most twice what is being signed, so the cores never wait for this thread.
            let signing: usize = self.signing.iter().map(|b| b.records.len()).sum();
            let part = (2 * signing).max(FIRST_SIGNED);
            if slice.len() >= 2 * part {
                let rest = slice.split_off(part);
                slices.push_front(rest);
            }
            let all = prepare_all(slice, &*clock)?;
            let mut versions = Vec::with_capacity(all.len());
            let mut prepared = Vec::with_capacity(all.len());
            for block in all {
                let before = self.pending_versions.get(&block.block_id).copied();
                match self.version_for(&block).await? {
                    Slot::New(version) => {
                        versions.push(version);
                        replaced.push((block.block_id, before));
                        slots.push((block.block_id, None));
                        prepared.push(block);
                    }
                    Slot::AlreadyCommitted(existing) => {
                        self.already_committed.push(existing);
                        slots.push((existing.block_id, Some(existing)));
                    }
                }
            }
            if prepared.is_empty() {
                continue;
            }
            let first = self.pending.len();
            self.pending
                .extend(prepared.into_iter().map(|b| Pending::Block(Box::new(b))));
            if self.stale {
                self.rebase_retrying().await?;
                continue;
            }
            match self.place(first, versions, true).await {
                Ok(_) => {}
                Err(Error::Store(StoreError::Conflict { reason, .. })) if self.max_retries > 0 => {
                    tracing::info!(%reason, "the artifact changed before this append began; rebasing");
                    self.rebase_retrying().await?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(slots)
    }

    /// Restores `pending_versions` to what it was before the versions in `replaced` (id,
    /// previous value; oldest first) were given.
    fn undo_versions(&mut self, replaced: Vec<([u8; 16], Option<u32>)>) {
        for (id, before) in replaced.into_iter().rev() {
            match before {
                Some(version) => self.pending_versions.insert(id, version),
                None => self.pending_versions.remove(&id),
            };
        }
    }

    /// [`Self::rebase`], again after a pause while other writers keep committing first.
    async fn rebase_retrying(&mut self) -> Result<()> {
        let mut attempt = 0;
        loop {
            match self.rebase().await {
                Err(Error::Store(StoreError::Conflict { reason, .. }))
                    if attempt < self.max_retries =>
                {
                    attempt += 1;
                    let wait = backoff(attempt);
                    tracing::info!(attempt, %reason, "conflict while re-linking; retrying in {wait:?}");
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
    }

    fn block_ref(&self, placed: &Placed) -> BlockRef {
        BlockRef {
            block_id: placed.entry.block_id,
            version: placed.version,
            position: placed.position,
            offset: placed.entry.offset,
            digest: placed.entry.digest,
        }
    }

    /// The version a pending block gets on top of the newest commit and the blocks pending
    /// before it (checking that an added id is new and an updated one exists), or the
    /// committed block an add repeats.
    async fn version_for(&mut self, block: &PreparedBlock) -> Result<Slot> {
        let id = block.block_id;
        let pending = self.pending_versions.get(&id).copied();
        let existing = match pending {
            Some(version) => Some(version),
            None if block.explicit_id || block.action == Action::Update => self
                .index
                .find(self.commit.header().newest_run, &id, None)
                .await?
                .map(|e| e.version),
            // A fresh random id (122 random bits) is new.
            None => None,
        };
        if block.action == Action::AddBlock
            && pending.is_none()
            && existing.is_some()
            && let Some(committed) = self.committed_copy(block).await?
        {
            return Ok(Slot::AlreadyCommitted(committed));
        }
        // An update of an id that does not exist is `Error::UnknownBlock`; an add of one that
        // does (with other content: same content was answered above) is refused.
        let version = ProvenanceRules::block_version(block.action, &id, existing)?;
        self.pending_versions.insert(id, version);
        Ok(Slot::New(version))
    }

    /// The committed first version of `block`'s id, when it has the same type and content.
    /// (`&mut self` although it only reads: the writer is `Send` but not `Sync`, and a
    /// future holding `&self` across an await would not be `Send`.)
    async fn committed_copy(&mut self, block: &PreparedBlock) -> Result<Option<BlockRef>> {
        // The record read below may belong to a commit still on its way to the store (handed
        // over in the background, or queued for the single file's writer thread).
        self.settle_handover().await?;
        if let Some(session) = self.session.as_mut() {
            session.wait_readable().await?;
        }
        let Some(first) = self
            .index
            .find(self.commit.header().newest_run, &block.block_id, Some(1))
            .await?
        else {
            return Ok(None);
        };
        let entry = first.entry;
        if entry.block_type != block.block_type
            || u64::try_from(block.metadata.len()).ok() != Some(u64::from(entry.metadata_len))
        {
            return Ok(None);
        }
        let record = self
            .store
            .read_record_range(&entry, 0..entry.record_len)
            .await?;
        let view = RecordView::decode(&record).map_err(Error::format("committed record"))?;
        let same = view.header.compression == block.compression
            && view.header.uncompressed_size == block.uncompressed_size
            && view.content_digest() == block.content;
        Ok(same.then_some(BlockRef {
            block_id: entry.block_id,
            version: first.version,
            position: first.position,
            offset: entry.offset,
            digest: entry.digest,
        }))
    }

    /// Links the pending blocks from `first` on (with the given versions) onto the chain,
    /// signs them on every core and sends them to the store.
    async fn place(
        &mut self,
        first: usize,
        versions: Vec<u32>,
        stage: bool,
    ) -> Result<Vec<BlockRef>> {
        if first == 0 || self.placed_at.is_none() {
            // The oldest upload among the pending records starts now.
            self.placed_at = Some(std::time::Instant::now());
        }
        let blocks: Vec<PreparedBlock> = self.pending[first..]
            .iter()
            .filter_map(|p| match p {
                Pending::Block(b) => Some((**b).clone()),
                Pending::Event { .. } => None,
            })
            .collect();
        if blocks.is_empty() {
            return Ok(Vec::new());
        }
        if self.session.is_none() && self.handover.is_none() {
            self.session = Some(
                self.store
                    .begin_append(&self.commit.append_base(self.examined_len))
                    .await?,
            );
            self.session_continues = false;
        }
        let mut previous = self
            .placed
            .last()
            .map_or(self.commit.header().last_record_digest, |p| p.entry.digest);
        let mut offset = self
            .placed
            .last()
            .map_or(self.commit.end(), |p| p.entry.offset + p.entry.record_len);
        // Sequential: each header links to the previous record digest (a small hash).
        let mut linked = Vec::with_capacity(blocks.len());
        for (position, (block, version)) in
            (self.record_count()..).zip(blocks.iter().zip(&versions))
        {
            let header = block_header(block, chain_link(&previous))?;
            let header_bytes = header.to_array();
            let digest = record_digest(&header_bytes, &block.content);
            let record_len = header.record_len().map_err(Error::format("block header"))?;
            let entry = IndexEntry {
                offset,
                record_len,
                block_id: block.block_id,
                block_type: block.block_type,
                metadata_len: header.metadata_len,
                timestamp_us: block.timestamp_us,
                digest,
            };
            linked.push((
                header_bytes,
                Placed {
                    entry,
                    position,
                    version: *version,
                },
            ));
            previous = digest;
            offset += record_len;
        }
        // Parallel, in the background: one Ed25519 signature per record. Meanwhile this
        // thread sends the records of the previous batch, whose signing is done, and chains
        // the provenance entries and Merkle leaves of this one (the commit's sequential
        // work), then returns to prepare the next batch: the cores sign all the time.
        let digests: Vec<Digest> = linked.iter().map(|(_, p)| p.entry.digest).collect();
        let signing = Signatures::start(&self.key, digests);
        let mut records = Vec::with_capacity(linked.len());
        let mut refs = Vec::with_capacity(linked.len());
        for (block, (header, placed)) in blocks.into_iter().zip(linked) {
            records.push(UnsignedRecord {
                entry: placed.entry,
                header,
                metadata: block.metadata,
                data: block.data,
            });
            refs.push(self.block_ref(&placed));
            self.placed.push(placed);
        }
        // Records go to the store in order: the oldest batches first, once signed, with at
        // most SIGNING_DEPTH batches being signed (so a commit finds its last batches still
        // signing, and builds its segment meanwhile). A batch signed at once (a
        // single `add`) is sent now when nothing is ahead of it.
        self.signing.push_back(Signing { signing, records });
        while self.signing.len() > SIGNING_DEPTH
            || self
                .signing
                .front()
                .is_some_and(|b| matches!(b.signing, Signatures::Ready(_)))
        {
            if let Some(oldest) = self.signing.pop_front() {
                self.send_signed(oldest).await?;
            }
        }
        if stage {
            let mut staged = self
                .staged
                .take()
                .filter(|s| s.still_holds(&self.commit, &self.pending, &self.placed))
                .unwrap_or_else(|| {
                    Staged::after(&self.commit, std::mem::take(&mut self.provenance_buffer))
                });
            // A block the commit cannot chain is reported by the commit, which chains it
            // again.
            if staged.advance(&self.pending, &self.placed).is_ok() {
                self.staged = Some(staged);
            }
        }
        Ok(refs)
    }

    /// Sends the records of `batch` to the store once they are signed.
    async fn send_signed(&mut self, batch: Signing) -> Result<()> {
        self.settle_handover().await?;
        let session = self.session.as_mut().ok_or_else(|| {
            Error::Invalid("internal: no append session for a pending block".into())
        })?;
        send_batch(session.as_mut(), batch).await
    }

    /// Takes the session back from a commit being handed over, once it is (an error if the
    /// hand-over failed: its ticket reports it too, and the pending blocks, linked onto that
    /// commit, are linked again onto the newest one by the next add or commit).
    async fn settle_handover(&mut self) -> Result<()> {
        let Some(handover) = self.handover.take() else {
            return Ok(());
        };
        let failure = match handover.await {
            Ok(Ok(next)) => {
                self.session_continues = next.is_some();
                self.session = next;
                return Ok(());
            }
            Ok(Err(failure)) => failure,
            Err(e) => format!("the task stopped: {e}"),
        };
        self.session = None;
        self.session_continues = false;
        self.stale = true;
        Err(Error::Store(StoreError::Internal {
            location: self.store.location(),
            reason: format!(
                "commit {} was not handed to the store: {failure}",
                self.commit.seq()
            ),
        }))
    }

    /// Sends every placed record still being signed to the store.
    async fn send_all_signed(&mut self) -> Result<()> {
        while let Some(oldest) = self.signing.pop_front() {
            self.send_signed(oldest).await?;
        }
        Ok(())
    }

    /// Drops everything pending: the writer is back at its newest commit.
    fn abandon(&mut self) {
        // A commit being handed over is the store's already (its ticket was given out):
        // it goes on in the background, and a new session waits for its lock.
        self.handover = None;
        self.session = None;
        self.session_continues = false;
        self.signing.clear();
        self.placed_at = None;
        self.already_committed.clear();
        self.stale = false;
        self.pending.clear();
        self.staged = None;
        self.placed.clear();
        self.pending_versions.clear();
        self.rules = ProvenanceRules::writing_after(self.commit.header());
    }

    /// Reads the newest commit and links every pending item onto it again.
    async fn rebase(&mut self) -> Result<()> {
        // The newest commit is read below, so one being handed over must be settled first;
        // if it failed, its ticket says so, and reading the store is what follows anyway.
        if let Err(e) = self.settle_handover().await {
            tracing::warn!(error = %e, "re-linking after a failed hand-over");
        }
        self.session = None;
        self.session_continues = false;
        self.signing.clear();
        self.staged = None;
        self.stale = true;
        let settled = Self::load_newest(&self.store, &self.public).await?;
        self.index = Index::new(self.store.clone());
        self.index
            .remember_segment(settled.commit.reference(), settled.prefix);
        self.commit = settled.commit;
        self.examined_len = settled.examined_len;
        // Nothing follows a sealed commit (`Error::Finalized`); the pending events were
        // allowed after the old commit, so they are after this one.
        self.rules = ProvenanceRules::writing_after(self.commit.header());
        self.rules.commit_allowed()?;
        for item in &self.pending {
            if let Pending::Event { action, .. } = item {
                self.rules.event(*action)?;
            }
        }
        self.placed.clear();
        self.pending_versions.clear();
        let candidates: Vec<PreparedBlock> = self
            .pending
            .iter()
            .filter_map(|p| match p {
                Pending::Block(b) => Some((**b).clone()),
                Pending::Event { .. } => None,
            })
            .collect();
        let mut versions = Vec::with_capacity(candidates.len());
        let mut blocks = Vec::with_capacity(candidates.len());
        let mut landed = Vec::new();
        for block in candidates {
            match self.version_for(&block).await? {
                Slot::New(version) => {
                    versions.push(version);
                    blocks.push(block);
                }
                // Another writer (or an earlier run of this one whose outcome was unknown)
                // committed this very block meanwhile.
                Slot::AlreadyCommitted(existing) => landed.push(existing),
            }
        }
        if !landed.is_empty() {
            let ids: HashSet<[u8; 16]> = landed.iter().map(|b| b.block_id).collect();
            self.pending.retain(
                |p| !matches!(p, Pending::Block(b) if b.action == Action::AddBlock && ids.contains(&b.block_id)),
            );
            self.already_committed.extend(landed);
        }
        let blocks_only: Vec<Pending> = blocks
            .into_iter()
            .map(|b| Pending::Block(Box::new(b)))
            .collect();
        // `place` reads blocks from `pending`; give it the blocks alone, then restore.
        let all = std::mem::replace(&mut self.pending, blocks_only);
        let result = self.place(0, versions, false).await;
        self.pending = all;
        result?;
        self.stale = false;
        Ok(())
    }

    /// Records an artifact-level provenance event (convert, migrate, ...) with `details`
    /// merged into the entry's JSON; the subject is the Merkle root at that point.
    ///
    /// `action` must be an event (not create, add_block or update), and nothing may follow
    /// a finalize entry ([`Error::Finalized`]).
    pub async fn record_event(&mut self, action: Action, detail: Map<String, Value>) -> Result<()> {
        self.rules.check_event(action)?;
        if self.agent_id.is_none() {
            let identity = Identity::read(self.store.as_ref()).await?;
            self.agent_id = Some(
                identity
                    .metadata
                    .metadata()
                    .map(|m| m.agent_id)
                    .unwrap_or_default(),
            );
        }
        let mut detail = detail;
        detail.insert(
            "agent".into(),
            Value::String(self.agent_id.clone().unwrap_or_default()),
        );
        self.rules.event(action)?;
        self.pending.push(Pending::Event {
            action,
            details: detail,
        });
        Ok(())
    }

    /// The number of live index runs (how many runs a lookup of an old block reads).
    pub async fn live_runs(&self) -> Result<usize> {
        Ok(self
            .index
            .live_runs(self.commit.header().newest_run)
            .await?
            .len())
    }

    /// Merges every live index run into one, in a commit of its own with a `compact`
    /// provenance entry: a full checkpoint, after which a lookup reads one run. It writes
    /// every index entry once (92 bytes per record), so it is worth it after loading most
    /// of an artifact at once, not after every commit. Pending blocks are committed first.
    pub async fn compact(&mut self) -> Result<()> {
        self.commit().await?;
        let runs = self.live_runs().await?;
        if runs <= 1 {
            return Ok(());
        }
        let mut details = Map::new();
        details.insert("runs_merged".into(), json!(runs));
        self.record_event(Action::Compact, details).await?;
        self.compacting = true;
        let result = self.commit().await;
        self.compacting = false;
        result
    }

    /// Seals the artifact: a finalize entry, committed; later appends are refused.
    pub async fn finalize(&mut self) -> Result<()> {
        self.record_event(Action::Finalize, Map::new()).await?;
        self.commit().await
    }

    /// Makes everything added since the last commit durable and visible. When this returns,
    /// a crash can no longer lose those blocks. If another writer committed first, the
    /// pending blocks are re-linked on top of its commit and the commit is tried again.
    ///
    /// # Errors
    ///
    /// [`StoreError::Conflict`] (inside [`Error::Store`]) once the retries
    /// ([`Self::with_max_retries`]) are used up; [`StoreError::Unknown`] when a request failed
    /// in a way that leaves open whether the commit landed.
    ///
    /// # Example
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use maif_store::store::{BlockStore, FileStore};
    /// # use maif_store::{ArtifactWriter, CreateOptions, SigningKey};
    /// use maif_store::{ArtifactReader, NewBlock};
    /// use maif_store::format::FourCC;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> maif_store::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let store: Arc<dyn BlockStore> = Arc::new(FileStore::new(dir.path().join("a.maif")));
    /// # let key = SigningKey::generate()?;
    /// let mut writer = ArtifactWriter::create(store.clone(), key, CreateOptions::default()).await?;
    /// writer.add(NewBlock::new(FourCC::BINA, b"raw bytes".to_vec())).await?;
    /// // Readers see the committed state only.
    /// assert_eq!(ArtifactReader::open(store.clone()).await?.record_count(), 0);
    ///
    /// writer.commit().await?;
    /// assert_eq!(ArtifactReader::open(store).await?.record_count(), 1);
    /// # Ok(()) }
    /// ```
    pub async fn commit(&mut self) -> Result<()> {
        self.commit_handing_over(false).await.map(|_| ())
    }

    /// Starts a commit of everything added since the last one and returns before it is
    /// durable where the store can overlap commits (a single file), so the next blocks can
    /// be hashed and signed while the disk makes this commit durable. Until the returned
    /// ticket's [`CommitTicket::durable`] returns `Ok`, a crash can lose the commit; a bulk
    /// import acknowledges its input only then.
    ///
    /// Where this writer's session holds the store's lock since its previous commit (a
    /// single file, from the second commit of a session on), the commit cannot meet another
    /// writer's: it is built, and the records of its last batches, still being signed, and
    /// the commit itself go to the store in the background (on the caller's runtime), so
    /// this returns without waiting for those signatures. Otherwise it returns once the
    /// store has the commit.
    ///
    /// The writer goes on from the new commit at once: blocks added next are linked onto it
    /// and land after it in the store, and the store makes commits durable in order, so a
    /// commit never becomes durable before the ones it follows. If one fails, every later
    /// one fails too (the next add, [`Self::commit`] or ticket reports it, and the writer
    /// re-reads the artifact, re-linking its pending blocks, as after any failed commit).
    /// Stores that cannot overlap commits (the object layout) make the commit durable
    /// before this returns, and the ticket is ready at once.
    ///
    /// # Errors
    ///
    /// As [`Self::commit`], for what goes wrong before the commit is handed over.
    pub async fn start_commit(&mut self) -> Result<CommitTicket> {
        let seq = self.commit.seq() + 1;
        let durable = self.commit_handing_over(true).await?;
        Ok(CommitTicket { seq, durable })
    }

    /// [`Self::commit`], or, with `overlap`, [`Self::start_commit`].
    async fn commit_handing_over(&mut self, overlap: bool) -> Result<Option<Handed>> {
        if self.pending.is_empty() && self.already_committed.is_empty() {
            return Ok(None);
        }
        let mut attempt = 0;
        // Records sent long ago are sent again (re-linking places every pending record).
        let mut rebase_first = self.stale
            || self
                .placed_at
                .is_some_and(|at| at.elapsed() >= self.reupload_after);
        loop {
            // Re-linking onto the newest commit can itself meet a commit made meanwhile (a
            // single file's append session checks the file's length): that is one more
            // conflict to retry, not the end of the retries.
            let result = if rebase_first {
                match self.rebase().await {
                    Ok(()) => self.try_commit(overlap).await,
                    Err(e) => Err(e),
                }
            } else {
                self.try_commit(overlap).await
            };
            match result {
                Ok(durable) => return Ok(durable),
                Err(Error::Store(StoreError::Conflict { reason, .. }))
                    if attempt < self.max_retries =>
                {
                    attempt += 1;
                    let wait = backoff(attempt);
                    tracing::info!(attempt, %reason, "commit conflict; retrying in {wait:?}");
                    tokio::time::sleep(wait).await;
                    rebase_first = true;
                }
                Err(e @ Error::Store(StoreError::Unknown { .. })) => {
                    // The commit may have landed: re-linking the blocks could add them twice.
                    self.abandon();
                    return Err(e);
                }
                Err(e) => {
                    // The failed session took its records with it; place them again so a
                    // later commit is complete (if that fails too, the next add or commit
                    // tries again: nothing pending is dropped).
                    if let Err(again) = self.rebase().await {
                        tracing::warn!(error = %again, "could not re-link the pending blocks");
                    }
                    return Err(e);
                }
            }
        }
    }

    /// One attempt at a commit; with `overlap`, it returns once the store has it (see
    /// [`Self::start_commit`]) with what tells when it is durable.
    async fn try_commit(&mut self, overlap: bool) -> Result<Option<Handed>> {
        self.settle_handover().await?;
        if self.pending.is_empty() {
            // Every pending block turned out to be committed already: nothing to write.
            self.session = None;
            self.signing.clear();
            self.last_committed = std::mem::take(&mut self.already_committed);
            return Ok(None);
        }
        self.rules.commit_allowed()?;
        if self.session.is_none() {
            self.session = Some(
                self.store
                    .begin_append(&self.commit.append_base(self.examined_len))
                    .await?,
            );
            self.session_continues = false;
        }
        let base = self.commit.header();
        let seq = base.seq + 1;
        let committed_us = (self.clock)();
        // Provenance entries, in order, chained from the newest head: those staged while
        // the blocks were signed, then the rest.
        let staged = self
            .staged
            .take()
            .filter(|s| s.still_holds(&self.commit, &self.pending, &self.placed))
            .unwrap_or_else(|| {
                Staged::after(&self.commit, std::mem::take(&mut self.provenance_buffer))
            });
        let Staged {
            blocks: staged_blocks,
            mut frontier,
            mut hashes,
            mut provenance,
            mut head,
            ..
        } = staged;
        let mut added = staged_blocks as u64;
        let mut placed = self.placed[staged_blocks..].iter();
        for item in &self.pending[staged_blocks..] {
            let entry = match item {
                Pending::Block(block) => {
                    let p = placed.next().ok_or_else(|| {
                        Error::Invalid("internal: a pending block was not placed".into())
                    })?;
                    hashes += u64::from(frontier.append(&p.entry.digest));
                    block_entry(block, p, head, Vec::new())
                }
                Pending::Event { action, details: d } => {
                    let (root, computed) = frontier.root_counting();
                    hashes += u64::from(computed);
                    let mut d = d.clone();
                    d.insert("record_count".into(), json!(frontier.size()));
                    ProvenanceEntry {
                        action: *action,
                        flags: 0,
                        timestamp_us: committed_us,
                        previous: head,
                        subject: root,
                        details: details(Value::Object(d)),
                    }
                }
            };
            head = entry
                .encode_with_digest(&mut provenance)
                .map_err(Error::format("provenance entry"))?;
            added += 1;
        }
        let new_entries: Vec<RunEntry> = self
            .placed
            .iter()
            .map(|p| RunEntry {
                entry: p.entry,
                position: p.position,
                version: p.version,
            })
            .collect();
        let run = plan_run(&self.index, base.newest_run, new_entries, self.compacting).await?;
        let (root, computed) = frontier.root_counting();
        hashes += u64::from(computed);
        let segment_offset = self
            .placed
            .last()
            .map_or(self.commit.end(), |p| p.entry.offset + p.entry.record_len);
        // The run is encoded straight into the segment, the provenance entries after it.
        let run_len = run
            .as_ref()
            .map_or(0, |run| run_part_len(run.entries.len() as u64));
        let mut built = SegmentBuffer::new(frontier.size(), run_len as usize + provenance.len());
        let run_at = built.run_at();
        let encoded = run
            .as_ref()
            .map(|run| encode_run_into(&run.entries, run.older.as_ref(), built.body()))
            .transpose()
            .map_err(Error::format("index run"))?;
        let run_len = built.body_len();
        built.body().extend_from_slice(&provenance);
        let header = SegmentHeader {
            seq,
            committed_us,
            segment_offset,
            segment_len: run_at + built.body_len(),
            records_start: self.commit.end(),
            record_count: frontier.size(),
            records_added: self.placed.len() as u64,
            provenance_count: base.provenance_count + added,
            provenance_added: added,
            provenance_len: provenance.len() as u64,
            run_len,
            flags: if self.rules.sealed_flag() {
                FLAG_SEALED
            } else {
                0
            },
            genesis: base.genesis,
            previous_commit: self.commit.digest,
            previous_segment_offset: base.segment_offset,
            last_record_digest: self
                .placed
                .last()
                .map_or(base.last_record_digest, |p| p.entry.digest),
            provenance_head: head,
            merkle_root: root,
            newest_run: match &encoded {
                Some(e) => Some(e.reference(seq, segment_offset, run_at)),
                None => base.newest_run,
            },
        };
        if provenance.capacity() <= KEEP_PROVENANCE_BUFFER {
            self.provenance_buffer = provenance;
        }
        let header_bytes = header.to_bytes();
        let digest = commit_digest(&header_bytes, &frontier.to_bytes());
        let signature = self.key.sign(SignedKind::Commit, &digest);
        let segment = Bytes::from(
            built
                .finish(&header, &signature, &frontier)
                .map_err(Error::format("the commit being made"))?,
        );
        let trailer = Trailer {
            segment_offset,
            segment_len: header.segment_len,
            merkle_root: root,
        };
        // What the writer holds once the commit is made, worked out before the wait for the
        // last signatures below, while the cores are still busy with them (afterwards, until
        // the next batch is placed, a core would idle meanwhile). The committed state is what
        // was just built; no need to read it back.
        let commit = Commit::decode(&segment).map_err(Error::format("the commit just made"))?;
        let mut last_committed: Vec<BlockRef> =
            self.placed.iter().map(|p| self.block_ref(p)).collect();
        let still_signing = self.signing.iter_mut().any(|b| !b.signing.is_over());
        // The session holds the store's lock since this writer's last commit, so this one
        // cannot meet a conflict: it is handed over in the background, where the records of
        // its last batches follow their signatures, and the calling thread goes on to the
        // next blocks at once (while the cores sign these; waiting here instead left a core
        // idle after every commit until the next batch was placed). With every signature
        // made (large blocks: a few per batch), nothing would be waited for, and sending the
        // records now keeps the store's writer busy while the next blocks are hashed (the
        // task runs only when this thread awaits).
        let in_background = (overlap && self.session_continues && still_signing)
            .then(tokio::runtime::Handle::try_current)
            .and_then(std::result::Result::ok);
        if in_background.is_none() {
            // The records of the last batch go before the segment: their signing overlapped
            // building it.
            self.send_all_signed().await?;
        }
        let session = self
            .session
            .take()
            .ok_or_else(|| Error::Invalid("internal: no append session".into()))?;
        let commit_parts = (seq, segment.clone(), trailer.to_array());
        let durable = if let Some(runtime) = in_background {
            let (report, outcome) = tokio::sync::oneshot::channel();
            let batches = std::mem::take(&mut self.signing);
            self.handover = Some(runtime.spawn(hand_over(session, batches, commit_parts, report)));
            Some(Handed::InBackground {
                location: self.store.location(),
                outcome,
            })
        } else if overlap {
            let (seq, segment, trailer) = commit_parts;
            let Continued { durable, next } =
                session.commit_and_continue(seq, segment, trailer).await?;
            self.session_continues = next.is_some();
            self.session = next;
            Some(Handed::Store(durable))
        } else {
            let (seq, segment, trailer) = commit_parts;
            session.commit(seq, segment, trailer).await?;
            None
        };
        self.index.remember_segment(commit.reference(), segment);
        if let (Some(run), Some(written)) = (run, encoded.as_ref().and(header.newest_run)) {
            self.index
                .remember_written_run(written, run.older, run.entries);
        }
        self.examined_len = commit.end();
        self.commit = commit;
        self.rules = ProvenanceRules::writing_after(self.commit.header());
        self.merkle_hashes += hashes;
        last_committed.append(&mut self.already_committed);
        self.last_committed = last_committed;
        self.placed_at = None;
        // The committed blocks (thousands of boxes and buffers in a bulk write) are freed on
        // a blocking thread, while this one goes on to the next batch.
        retire(std::mem::take(&mut self.pending));
        self.staged = None;
        self.placed.clear();
        self.pending_versions.clear();
        Ok(durable)
    }
}

/// A commit started by [`ArtifactWriter::start_commit`].
#[derive(Debug)]
#[must_use = "a started commit is not durable until its ticket says so"]
pub struct CommitTicket {
    seq: u64,
    durable: Option<Handed>,
}

/// How a started commit's outcome comes.
#[derive(Debug)]
enum Handed {
    /// The store has the commit, and tells when it is durable.
    Store(Durable),
    /// The commit is being handed to the store in the background ([`hand_over`]).
    InBackground {
        location: String,
        outcome: tokio::sync::oneshot::Receiver<Result<Durable>>,
    },
}

impl CommitTicket {
    /// The commit's sequence number.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Waits until the commit is durable (a crash can no longer lose it), or returns why it
    /// is not: an error means the commit and every later one of this writer did not land,
    /// except [`StoreError::Unknown`], which leaves open whether this one did.
    pub async fn durable(self) -> Result<()> {
        let durable = match self.durable {
            None => return Ok(()),
            Some(Handed::Store(durable)) => durable,
            Some(Handed::InBackground { location, outcome }) => match outcome.await {
                Ok(handed) => handed?,
                // The task was dropped unfinished (its runtime shut down): the commit may
                // or may not have reached the store.
                Err(_) => {
                    return Err(Error::Store(StoreError::Unknown {
                        location,
                        what: format!("commit {}", self.seq),
                        reason: "the task handing it to the store stopped before reporting".into(),
                        how_to_check:
                            "open the artifact: if the commit is there, its blocks were added"
                                .into(),
                    }));
                }
            },
        };
        durable.wait().await.map_err(Error::Store)
    }
}

/// The header of `block`'s record once linked to `prev_link`.
fn block_header(block: &PreparedBlock, prev_link: [u8; 8]) -> Result<BlockHeader> {
    let metadata_len = u32::try_from(block.metadata.len())
        .ok()
        .filter(|len| *len <= MAX_BLOCK_METADATA_LEN)
        .ok_or_else(|| {
            Error::Invalid(format!(
                "block {}: metadata of {} bytes exceeds the {MAX_BLOCK_METADATA_LEN}-byte limit",
                format_id(&block.block_id),
                block.metadata.len()
            ))
        })?;
    Ok(BlockHeader {
        block_id: block.block_id,
        block_type: block.block_type,
        flags: block.flags,
        compression: block.compression,
        encryption: block.encryption,
        metadata_len,
        data_offset: BLOCK_HEADER_LEN as u32 + metadata_len,
        data_size: block.data.len() as u64,
        uncompressed_size: block.uncompressed_size,
        timestamp_us: block.timestamp_us,
        prev_link,
    })
}

/// Payload bytes per slice of a batch (see [`ArtifactWriter::add_slices`]).
const SLICE_BYTES: usize = 8 << 20;

/// Splits a batch into slices of about [`SLICE_BYTES`] of payload (a batch of small blocks
/// stays one slice).
fn slices_by_payload(blocks: Vec<(NewBlock, Action)>) -> Vec<Vec<(NewBlock, Action)>> {
    let mut slices = Vec::new();
    let mut slice = Vec::new();
    let mut bytes = 0usize;
    for item in blocks {
        bytes += item.0.data.len();
        slice.push(item);
        if bytes >= SLICE_BYTES {
            slices.push(std::mem::take(&mut slice));
            bytes = 0;
        }
    }
    if !slice.is_empty() || slices.is_empty() {
        slices.push(slice);
    }
    slices
}

fn prepare_all(
    blocks: Vec<(NewBlock, Action)>,
    clock: &(dyn Fn() -> u64 + Send + Sync),
) -> Result<Vec<PreparedBlock>> {
    let now = clock();
    // Fresh ids (UUID v4) for the blocks that name none, from one draw of randomness for
    // the whole batch rather than a system call per block.
    let unnamed = blocks.iter().filter(|(b, _)| b.block_id.is_none()).count();
    let mut random = vec![0u8; 16 * unnamed];
    getrandom::fill(&mut random)
        .map_err(|e| Error::Invalid(format!("no randomness for new block ids: {e}")))?;
    let mut fresh_ids = random.chunks_exact(16).map(|bytes| {
        let mut id = [0u8; 16];
        id.copy_from_slice(bytes);
        *uuid::Builder::from_random_bytes(id).as_uuid().as_bytes()
    });
    let blocks: Vec<((NewBlock, Action), [u8; 16])> = blocks
        .into_iter()
        .map(|(block, action)| {
            let id = match block.block_id {
                Some(id) => id,
                None => fresh_ids.next().unwrap_or_default(),
            };
            ((block, action), id)
        })
        .collect();
    let work =
        |((block, action), block_id): &((NewBlock, Action), [u8; 16])| -> Result<PreparedBlock> {
            crate::format::block::parse_block_metadata(&block.metadata)
                .map_err(Error::format("block metadata"))?;
            // Write only what reads back: a typed block's data must parse as its framing, as
            // full verification requires (FORMAT.md 4.8, 12.3).
            if [FourCC::TEXT, FourCC::EMBD, FourCC::IMAG].contains(&block.block_type) {
                crate::format::payload::content_of(block.block_type, &block.data).map_err(
                    Error::format(match block.block_type {
                        FourCC::TEXT => {
                            "TEXT block data (it must start with the TEXT framing, FORMAT.md 4.8.1)"
                        }
                        FourCC::EMBD => {
                            "EMBD block data (it must start with the EMBD framing, FORMAT.md 4.8.2)"
                        }
                        _ => {
                            "IMAG block data (it must start with the IMAG framing, FORMAT.md 4.8.3)"
                        }
                    }),
                )?;
            }
            let (compression, data) = match block.zstd_level {
                Some(level) => (
                    COMPRESSION_ZSTD,
                    Bytes::from(
                        zstd_compress(&block.data, level)
                            .map_err(Error::format("compressing block data"))?,
                    ),
                ),
                None => (COMPRESSION_NONE, block.data.clone()),
            };
            Ok(PreparedBlock {
                block_id: *block_id,
                block_type: block.block_type,
                compression,
                flags: 0,
                encryption: crate::format::Encryption::NONE,
                uncompressed_size: block.data.len() as u64,
                timestamp_us: block.timestamp_us.unwrap_or(now),
                content: content_digest(&block.metadata, &data),
                metadata: block.metadata.clone(),
                data,
                explicit_id: block.block_id.is_some(),
                action: *action,
            })
        };
    // Below a few hundred KiB, starting a helper thread costs about what it saves (the first
    // 128 blocks of a batch of small ones, hashed while the cores wait to sign them).
    let worth_threads = blocks.len() > 1
        && blocks.iter().map(|((b, _), _)| b.data.len()).sum::<usize>() > 256 * 1024;
    if worth_threads {
        parallel_map(&blocks, available_threads(), work)
            .into_iter()
            .collect()
    } else {
        blocks.iter().map(work).collect()
    }
}

/// Frees the blocks a commit made durable: thousands of boxes and buffers after a bulk
/// commit, freed on a blocking thread so that this one goes on placing blocks to sign (a
/// few blocks, or outside a runtime, here).
fn retire(blocks: Vec<Pending>) {
    if blocks.len() < SIGN_IN_BACKGROUND_FROM {
        return;
    }
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        drop(runtime.spawn_blocking(move || drop(blocks)));
    }
}

/// How many blocks a batch places first when nothing is being signed (see
/// [`ArtifactWriter::add_slices`]).
const FIRST_SIGNED: usize = 128;

/// At most this many placed batches wait for their signatures (the one just placed
/// included); an older one is sent to the store first.
///
/// Four rather than two: a commit's segment build (3 ms for 10,000 blocks, up to 50 ms when
/// its index run absorbs others) then finds about twice the signing still to do beside it,
/// so the cores wait for it less (traced: the time with nothing being signed in an import
/// of 200,000 blocks fell from 106-156 ms to 87-109 ms). The pool signs the batches first
/// in, first out, so the three behind the oldest are still whole when the writer waits for
/// it: deeper queues bought nothing more (8 measured the same). The cost is memory: four
/// batches' records held until signed, about twice that across a commit handed over in the
/// background (its last batches, and the first of the next).
const SIGNING_DEPTH: usize = 4;

/// Batches of at least this many records are signed in the background; smaller ones (a
/// single `add`) at once, where a thread hand-over would cost more than it saves.
const SIGN_IN_BACKGROUND_FROM: usize = 8;

/// A commit being handed to the store in the background: its session comes back, or why
/// the hand-over failed.
type HandOver =
    tokio::task::JoinHandle<std::result::Result<Option<Box<dyn AppendSession>>, String>>;

/// Sends the records of `batch` to `session` once they are signed.
async fn send_batch(session: &mut dyn AppendSession, batch: Signing) -> Result<()> {
    let signatures = batch.signing.wait().await?;
    let records = batch.records;
    if signatures.len() != records.len() {
        return Err(Error::Invalid(format!(
            "internal: {} signatures for {} records",
            signatures.len(),
            records.len()
        )));
    }
    // Small records go as borrowed pieces, a run of them per call; a larger one as shared
    // buffers, never copied (see `SMALL_RECORD_LEN`).
    let pieces: Vec<[&[u8]; 4]> = records
        .iter()
        .zip(&signatures)
        .map(|(r, signature)| [&r.header[..], &r.metadata[..], &r.data[..], &signature[..]])
        .collect();
    let mut start = 0;
    while start < records.len() {
        let end = records[start..]
            .iter()
            .position(|r| r.entry.record_len >= SMALL_RECORD_LEN)
            .map_or(records.len(), |n| start + n);
        if end > start {
            let small: Vec<SmallRecord<'_>> = (start..end)
                .map(|n| SmallRecord {
                    entry: &records[n].entry,
                    parts: &pieces[n],
                })
                .collect();
            session.put_small_records(&small).await?;
        }
        if let (Some(record), Some(signature)) = (records.get(end), signatures.get(end)) {
            let bytes = RecordBytes {
                parts: vec![
                    Bytes::copy_from_slice(&record.header),
                    record.metadata.clone(),
                    record.data.clone(),
                    Bytes::copy_from_slice(signature),
                ],
            };
            session.put_record(&record.entry, bytes).await?;
        }
        start = end + 1;
    }
    Ok(())
}

/// Hands commit `seq` to the store in the background (see [`ArtifactWriter::start_commit`]):
/// sends the records of its last `batches` once signed, then the commit, and reports the
/// outcome to the commit's ticket on `report`. Returns the session that goes on after the
/// commit.
async fn hand_over(
    mut session: Box<dyn AppendSession>,
    batches: VecDeque<Signing>,
    commit: (u64, Bytes, [u8; crate::format::TRAILER_LEN]),
    report: tokio::sync::oneshot::Sender<Result<Durable>>,
) -> std::result::Result<Option<Box<dyn AppendSession>>, String> {
    let (seq, segment, trailer) = commit;
    let mut sent = Ok(());
    for batch in batches {
        sent = send_batch(session.as_mut(), batch).await;
        if sent.is_err() {
            break;
        }
    }
    let handed = match sent {
        Ok(()) => session
            .commit_and_continue(seq, segment, trailer)
            .await
            .map_err(Error::Store),
        Err(e) => Err(e),
    };
    match handed {
        Ok(Continued { durable, next }) => {
            // The ticket may be gone (not waited for): the commit is made all the same.
            let _ = report.send(Ok(durable));
            Ok(next)
        }
        Err(e) => {
            let failure = e.to_string();
            let _ = report.send(Err(e));
            Err(failure)
        }
    }
}

/// The signatures of a batch of records, being made.
enum Signatures {
    Ready(Vec<[u8; SIGNATURE_LEN]>),
    Signing(InBackground<[u8; SIGNATURE_LEN]>),
}

impl Signatures {
    /// Starts signing `digests`: a batch on the background pool (every core, batches first
    /// in, first out; see `parallel`), a few records here, where handing them over would
    /// cost more than it saves.
    fn start(key: &Arc<SigningKey>, digests: Vec<Digest>) -> Self {
        if digests.len() < SIGN_IN_BACKGROUND_FROM {
            return Self::Ready(key.sign_all(SignedKind::Block, &digests));
        }
        let key = key.clone();
        Self::Signing(map_in_background(digests, move |chunk| {
            key.sign_all(SignedKind::Block, chunk)
        }))
    }

    /// Whether every signature is made (or signing failed), so [`Self::wait`] returns at
    /// once.
    fn is_over(&mut self) -> bool {
        match self {
            Self::Ready(_) => true,
            Self::Signing(signing) => signing.is_over(),
        }
    }

    async fn wait(self) -> Result<Vec<[u8; SIGNATURE_LEN]>> {
        match self {
            Self::Ready(signatures) => Ok(signatures),
            Self::Signing(signing) => signing
                .wait()
                .await
                .ok_or_else(|| Error::Invalid("internal: signing records failed".into())),
        }
    }
}

/// A batch of placed records whose signatures are being made.
struct Signing {
    signing: Signatures,
    records: Vec<UnsignedRecord>,
}

/// A placed record but for its signature.
struct UnsignedRecord {
    entry: IndexEntry,
    header: [u8; BLOCK_HEADER_LEN],
    metadata: Bytes,
    data: Bytes,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The writer refuses what the provenance rules refuse, with its documented errors, and
    /// seals the commit that holds the finalize entry.
    #[tokio::test]
    async fn the_writer_appends_only_what_the_provenance_rules_allow() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("rules.maif");
        let store: Arc<dyn BlockStore> = Arc::new(crate::store::FileStore::new(&path));
        let key = SigningKey::from_seed(&[3; 32]);
        let mut writer = ArtifactWriter::create(store.clone(), key, CreateOptions::default())
            .await
            .expect("create");
        // Create, add_block and update are not events.
        for action in [Action::Create, Action::AddBlock, Action::Update] {
            let refused = writer.record_event(action, Map::new()).await;
            assert!(
                matches!(&refused, Err(Error::Invalid(m)) if m.starts_with("provenance: ")),
                "{action:?}: {refused:?}"
            );
        }
        let id = [0x42; 16];
        let first = writer
            .add(NewBlock::new(FourCC::BINA, vec![1u8]).with_id(id))
            .await
            .expect("add");
        assert_eq!(first.version, 1);
        let missing = writer
            .update([0x43; 16], NewBlock::new(FourCC::BINA, vec![2u8]))
            .await;
        assert!(
            matches!(&missing, Err(Error::UnknownBlock { block_id }) if *block_id == format_id(&[0x43; 16])),
            "{missing:?}"
        );
        let again = writer
            .add(NewBlock::new(FourCC::BINA, vec![3u8]).with_id(id))
            .await
            .expect_err("an add of an existing id with other content");
        assert!(
            again
                .to_string()
                .contains("already exists with other content; use update"),
            "{again}"
        );
        let second = writer
            .update(id, NewBlock::new(FourCC::BINA, vec![4u8]))
            .await
            .expect("update");
        assert_eq!(second.version, 2);
        writer
            .record_event(Action::Convert, Map::new())
            .await
            .expect("convert");
        writer
            .record_event(Action::Unknown(9), Map::new())
            .await
            .expect("an unknown action is an event");
        writer
            .record_event(Action::Finalize, Map::new())
            .await
            .expect("finalize");
        // Nothing after the finalize entry, pending or committed.
        let after = writer.add(NewBlock::new(FourCC::BINA, vec![5u8])).await;
        assert!(matches!(after, Err(Error::Finalized)), "{after:?}");
        let after = writer.record_event(Action::Migrate, Map::new()).await;
        assert!(matches!(after, Err(Error::Finalized)), "{after:?}");
        writer.commit().await.expect("commit");
        assert!(writer.last_commit().header().is_sealed());
        let after = writer.add(NewBlock::new(FourCC::BINA, vec![6u8])).await;
        assert!(matches!(after, Err(Error::Finalized)), "{after:?}");
        let mut reopened = ArtifactWriter::open(store.clone(), SigningKey::from_seed(&[3; 32]))
            .await
            .expect("open");
        let after = reopened.record_event(Action::Convert, Map::new()).await;
        assert!(matches!(after, Err(Error::Finalized)), "{after:?}");
        let report = super::super::verify::verify(store, Default::default())
            .await
            .expect("verify");
        assert!(report.valid, "{:?}", report.problems);
        assert_eq!(report.provenance_entries, 6);
    }

    #[test]
    fn block_details_are_the_bytes_serde_json_writes_for_the_map() {
        for (block_type, version) in [
            (FourCC::TEXT, 1),
            (FourCC(*b"a\"b\\"), 7),
            (FourCC([0, 1, 0xff, b'x']), u32::MAX),
        ] {
            let id = [0xa5; 16];
            let expected = details(json!({
                "block_id": format_id(&id),
                "block_type": block_type.to_string(),
                "version": version,
            }));
            // Appended after what the buffer holds, as the writer's reused buffer is used.
            let mut out = b"kept".to_vec();
            block_details(&mut out, &id, block_type, version);
            assert_eq!(&out[..4], b"kept");
            assert_eq!(out[4..], expected[..]);
        }
    }
}
