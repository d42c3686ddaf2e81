//! Re-signing with the right key: decode an artifact written by the real writer into the
//! crate's own format types, let a test change one thing, and re-encode and re-sign every
//! byte that depends on it, exactly as `docs/FORMAT.md` (sections 5 to 10) derives it.
//!
//! The point is tests that break the *meaning* of an artifact while every digest, chain
//! link, signature and CRC is correct under the artifact's own key, so that one verification
//! rule, and only that rule, can catch the change (`tests/keyed_rules.rs`).
//!
//! # Model
//!
//! [`Artifact::read`] decodes a file into its base (file header and metadata section, kept
//! verbatim) and its commits, oldest first. Each [`CommitModel`] holds its records, its
//! segment header, its run (only *whether* it has one and which run it is written on top
//! of), its provenance entries, and optional junk bytes (`pad_*`) that a test can place
//! between structures. The fields of the model are the **sources**: block ids, types,
//! metadata, data, timestamps, compression and encryption codes, segment flags and
//! `committed_us`, provenance actions, flags, timestamps and details.
//!
//! # Rebuilding
//!
//! [`Artifact::rebuild`] lays the commits out again and **derives** every other field, in
//! dependency order, commit by commit:
//!
//! 1. each record: `prev_link` from the previous *indexed* digest (the chain seed for record
//!    0), the sizes from the metadata and data, then its record digest and block signature;
//! 2. its index entry (offset, length, id, type, metadata length, timestamp, digest,
//!    position, version);
//! 3. the commit's stored Merkle frontier: the previous one plus the new indexed digests;
//! 4. its run: the new entries plus the entries of the live runs it absorbs (the ones above
//!    the run it is written on top of), sorted; pages, directory (first keys and page
//!    digests), header (count, pages, tier, streak, `older`), head digest, and the reference;
//! 5. its provenance entries: `previous` from the running head, the subject from the action
//!    (the chain seed for `create`, the next new record's indexed digest for `add_block` and
//!    `update`, the root of the records before it for the events);
//! 6. its segment header: every count, offset and digest (`seq`, `segment_offset`,
//!    `segment_len`, `records_start`, counts, lengths, chain seed, previous commit digest and
//!    offset (where that segment really is), last record digest, provenance head, Merkle
//!    root, newest run);
//! 7. the commit digest and the commit signature;
//! 8. the trailer (with its CRC).
//!
//! After each derivation the test's hook sees the value as a [`Stage`] and may change it.
//! Whatever the hook leaves is final for that value, and everything derived later is
//! derived from it: so a hook that pins one value produces an artifact whose every other
//! byte is what an honest writer would have written around that value, signed with the
//! right key. With a hook that changes nothing, the rebuild reproduces the writer's file
//! byte for byte (Ed25519 is deterministic); `keyed_rules.rs` checks that first.
//!
//! Everything is built from the crate's public format types and encoders
//! (the `Codec` encoders of `BlockHeader`, `RunEntry`, `Option<RunRef>`, `SegmentHeader` and
//! `Trailer`, `encode_record`, `ProvenanceEntry::encode`, `Frontier`,
//! the digest functions of `format::digest`); no accessor was added to the library. The run
//! encoder here is written out (rather than `format::run::encode_run`) only because that
//! one refuses to write the malformed runs some tests need.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};

use maif_store::SigningKey;
use maif_store::format::block::encode_record;
use maif_store::format::digest::{
    Digest, SignedKind, chain_link, commit_digest, content_digest, genesis_digest, record_digest,
    run_head_digest, run_page_digest,
};
use maif_store::format::metadata::MetadataSection;
use maif_store::format::provenance::decode_entries;
use maif_store::format::run::{
    DIRECTORY_ENTRY_LEN, RUN_HEADER_LEN, RUN_MAGIC, RUN_PAGE_ENTRIES, tier_of,
};
use maif_store::format::segment::FRONTIER_AT;
use maif_store::format::{
    Action, BLOCK_HEADER_LEN, BlockHeader, FILE_HEADER_LEN, Frontier, IndexEntry, ProvenanceEntry,
    RecordView, RunEntry, RunHead, RunRef, SIGNATURE_LEN, SegmentHead, SegmentHeader, TRAILER_LEN,
    Trailer,
};
use maif_store::format::{Codec, FixedCodec};

/// One record: its sources, and junk bytes a test may place before it.
#[derive(Debug, Clone)]
pub struct RecordModel {
    /// Bytes written just before the record (not part of any record: a gap in the tiling).
    pub pad_before: Vec<u8>,
    /// The header as decoded. Sources: `block_id`, `block_type`, `flags`, `compression`,
    /// `encryption`, `timestamp_us`, and `uncompressed_size` of a compressed record. The
    /// rest (`metadata_len`, `data_offset`, `data_size`, `prev_link`) is derived.
    pub header: BlockHeader,
    pub metadata: Vec<u8>,
    pub data: Vec<u8>,
    /// Bytes written just after the record's signature, counted in its index entry's
    /// `record_len` (so the record no longer decodes from exactly `record_len` bytes).
    pub trailing: Vec<u8>,
}

/// One commit's run: only whether the segment holds one and what it is written on top of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunModel {
    /// The commit (`seq` in the original file, which is its index here) whose run this one
    /// is written on top of; the runs above it are absorbed.
    pub older: Option<usize>,
}

/// One commit's sources.
#[derive(Debug, Clone)]
pub struct CommitModel {
    pub records: Vec<RecordModel>,
    /// Bytes written between the last record and the segment.
    pub pad_after_records: Vec<u8>,
    /// The header as decoded. Sources: `flags`, `committed_us`; the rest is derived.
    pub header: SegmentHeader,
    pub run: Option<RunModel>,
    /// Sources: `action`, `flags`, `timestamp_us`, `details`, and the subject of an unknown
    /// action or of an `add_block`/`update` entry with no record left to name.
    pub provenance: Vec<ProvenanceEntry>,
}

/// A decoded artifact.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// File header and metadata section, verbatim.
    pub base: Vec<u8>,
    pub commits: Vec<CommitModel>,
}

/// A derived value, offered to the test's hook before anything that depends on it.
pub enum Stage<'a> {
    /// A record's header after its derivation (sizes, `prev_link`), before it is hashed.
    Record {
        commit: usize,
        record: usize,
        header: &'a mut BlockHeader,
    },
    /// A record's block signature, made over `digest` with the right key.
    BlockSignature {
        commit: usize,
        record: usize,
        digest: Digest,
        signature: &'a mut [u8; SIGNATURE_LEN],
    },
    /// A new record's index (run) entry.
    Entry {
        commit: usize,
        record: usize,
        entry: &'a mut RunEntry,
    },
    /// The Merkle frontier the commit stores (its root becomes `merkle_root`).
    Frontier {
        commit: usize,
        frontier: &'a mut Frontier,
    },
    /// The run's sorted entries and the run it is written on top of; `runs` holds the
    /// references of the runs rebuilt so far, by commit.
    Run {
        commit: usize,
        older: &'a mut Option<RunRef>,
        entries: &'a mut Vec<RunEntry>,
        runs: &'a BTreeMap<usize, RunRef>,
    },
    /// The run's pages, encoded; the directory is derived from them afterwards.
    RunPages {
        commit: usize,
        pages: &'a mut Vec<Vec<u8>>,
    },
    /// The run's head (header and directory), encoded; its digest is derived afterwards,
    /// and the reference's `entry_count`, `tier` and `streak` are read from it.
    RunHead {
        commit: usize,
        head: &'a mut Vec<u8>,
    },
    /// The commit's provenance entries before their derivation: reorder, insert, remove,
    /// change actions or details here.
    Provenance {
        commit: usize,
        entries: &'a mut Vec<ProvenanceEntry>,
    },
    /// One provenance entry after its derivation (`previous`, `subject`), before its digest.
    ProvenanceEntry {
        commit: usize,
        entry: usize,
        value: &'a mut ProvenanceEntry,
    },
    /// The segment header after its derivation.
    Header {
        commit: usize,
        header: &'a mut SegmentHeader,
    },
    /// The segment header's 352 bytes, before the commit digest.
    HeaderBytes {
        commit: usize,
        bytes: &'a mut [u8; 352],
    },
    /// The commit signature, made over `digest` with the right key.
    CommitSignature {
        commit: usize,
        digest: Digest,
        signature: &'a mut [u8; SIGNATURE_LEN],
    },
    /// The trailer (its CRC is computed when it is encoded).
    Trailer {
        commit: usize,
        trailer: &'a mut Trailer,
    },
}

/// Where the rebuilt structures are, for precise assertions.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    /// Image offset of each commit's segment.
    pub segments: Vec<u64>,
    /// Image offset of each commit's trailer.
    pub trailers: Vec<u64>,
    /// Image offset of each record, by commit.
    pub records: Vec<Vec<u64>>,
    /// Position (in record order) of each commit's first record.
    pub first_position: Vec<u64>,
    /// Image offset of each provenance entry, by commit.
    pub entries: Vec<Vec<u64>>,
    /// Number (in the artifact's chain) of each commit's first provenance entry.
    pub first_entry: Vec<u64>,
    /// Index (run) entry of every record, by position.
    pub index: Vec<RunEntry>,
    /// Record digests the records really have, by position.
    pub digests: Vec<Digest>,
    /// The chain seed.
    pub genesis: Digest,
}

/// The rebuilt file and where everything is in it.
pub struct Rebuilt {
    pub bytes: Vec<u8>,
    pub layout: Layout,
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

impl Artifact {
    /// Decodes an artifact written by the real writer (every structure must decode).
    pub fn read(bytes: &[u8]) -> Artifact {
        let base_len =
            FILE_HEADER_LEN + MetadataSection::peek_len(&bytes[FILE_HEADER_LEN..]).expect("base");
        // The segments, from the last trailer back to commit 0.
        let mut heads = Vec::new();
        let mut trailer_at = bytes.len() - TRAILER_LEN;
        loop {
            let trailer = Trailer::decode_at(
                &bytes[trailer_at..trailer_at + TRAILER_LEN],
                trailer_at as u64,
            )
            .expect("trailer");
            let head = SegmentHead::decode_prefix(&bytes[trailer.segment_offset as usize..])
                .expect("segment head");
            let done = head.header.seq == 0;
            let records_start = head.header.records_start as usize;
            heads.push(head);
            if done {
                break;
            }
            trailer_at = records_start - TRAILER_LEN;
        }
        heads.reverse();
        let commits = heads
            .into_iter()
            .map(|head| {
                let header = head.header;
                let mut records = Vec::new();
                let mut at = header.records_start as usize;
                while at < header.segment_offset as usize {
                    let block = BlockHeader::decode(&bytes[at..at + BLOCK_HEADER_LEN])
                        .expect("block header");
                    let len = block.record_len().expect("record length") as usize;
                    let view = RecordView::decode(&bytes[at..at + len]).expect("record");
                    records.push(RecordModel {
                        pad_before: Vec::new(),
                        header: view.header,
                        metadata: view.metadata.to_vec(),
                        data: view.data.to_vec(),
                        trailing: Vec::new(),
                    });
                    at += len;
                }
                let segment = header.segment_offset as usize;
                let run = match (header.run_len, &header.newest_run) {
                    (0, _) | (_, None) => None,
                    (_, Some(run)) => {
                        let start = segment + header.run_at() as usize;
                        let head = RunHead::decode(&bytes[start..start + run.head_len as usize])
                            .expect("run head");
                        Some(RunModel {
                            older: head.older.map(|older| older.seq as usize),
                        })
                    }
                };
                let start = segment + header.provenance_at() as usize;
                let provenance = decode_entries(
                    &bytes[start..start + header.provenance_len as usize],
                    header.provenance_added,
                )
                .expect("provenance");
                CommitModel {
                    records,
                    pad_after_records: Vec::new(),
                    header,
                    run,
                    provenance,
                }
            })
            .collect();
        Artifact {
            base: bytes[..base_len].to_vec(),
            commits,
        }
    }

    /// Re-encodes and re-signs the artifact with `key`, offering each derived value to
    /// `hook` (see the module documentation).
    pub fn rebuild(&self, key: &SigningKey, mut hook: impl FnMut(Stage<'_>)) -> Rebuilt {
        let genesis = genesis_digest(&self.base[..FILE_HEADER_LEN], &self.base[FILE_HEADER_LEN..]);
        let mut out = self.base.clone();
        let mut layout = Layout {
            genesis,
            ..Layout::default()
        };
        let mut previous: Option<(SegmentHeader, Digest)> = None;
        let mut indexed_previous = genesis;
        let mut frontier = Frontier::new();
        let mut id_counts: HashMap<[u8; 16], u32> = HashMap::new();
        let mut record_count = 0u64;
        let mut provenance_count = 0u64;
        let mut provenance_head = [0u8; 32];
        // The live runs, oldest first: (commit, reference, entries).
        let mut live: Vec<(usize, RunRef, Vec<RunEntry>)> = Vec::new();
        let mut runs: BTreeMap<usize, RunRef> = BTreeMap::new();

        for (ci, commit) in self.commits.iter().enumerate() {
            let records_start = out.len() as u64;
            let seq = previous.as_ref().map_or(0, |(h, _)| h.seq + 1);
            layout.first_position.push(record_count);
            let mut record_offsets = Vec::new();

            // 1, 2: records and their index entries.
            let mut new_entries: Vec<RunEntry> = Vec::new();
            for (ri, record) in commit.records.iter().enumerate() {
                out.extend_from_slice(&record.pad_before);
                let mut header = record.header;
                header.metadata_len = record.metadata.len() as u32;
                header.data_offset = (BLOCK_HEADER_LEN + record.metadata.len()) as u32;
                header.data_size = record.data.len() as u64;
                if header.compression == 0 {
                    header.uncompressed_size = header.data_size;
                }
                header.prev_link = chain_link(&indexed_previous);
                hook(Stage::Record {
                    commit: ci,
                    record: ri,
                    header: &mut header,
                });
                let header_bytes = header.to_array();
                let digest = record_digest(
                    &header_bytes,
                    &content_digest(&record.metadata, &record.data),
                );
                let mut signature = key.sign(SignedKind::Block, &digest);
                hook(Stage::BlockSignature {
                    commit: ci,
                    record: ri,
                    digest,
                    signature: &mut signature,
                });
                let offset = out.len() as u64;
                let mut bytes = encode_record(&header, &record.metadata, &record.data, &signature);
                bytes.extend_from_slice(&record.trailing);
                out.extend_from_slice(&bytes);
                record_offsets.push(offset);
                let mut entry = RunEntry {
                    entry: IndexEntry {
                        offset,
                        record_len: bytes.len() as u64,
                        block_id: header.block_id,
                        block_type: header.block_type,
                        metadata_len: header.metadata_len,
                        timestamp_us: header.timestamp_us,
                        digest,
                    },
                    position: record_count,
                    version: id_counts.get(&header.block_id).copied().unwrap_or(0) + 1,
                };
                hook(Stage::Entry {
                    commit: ci,
                    record: ri,
                    entry: &mut entry,
                });
                *id_counts.entry(entry.entry.block_id).or_insert(0) += 1;
                indexed_previous = entry.entry.digest;
                layout.digests.push(digest);
                layout.index.push(entry);
                new_entries.push(entry);
                record_count += 1;
            }
            out.extend_from_slice(&commit.pad_after_records);
            let segment_offset = out.len() as u64;
            layout.records.push(record_offsets);
            layout.segments.push(segment_offset);

            // 3: the stored frontier.
            let frontier_before = frontier.clone();
            let mut stored = frontier.clone();
            for e in &new_entries {
                stored.append(&e.entry.digest);
            }
            hook(Stage::Frontier {
                commit: ci,
                frontier: &mut stored,
            });
            let run_at = FRONTIER_AT as u64 + Frontier::encoded_len(stored.size());

            // 4: the run, or the newest live run's reference.
            let (run_bytes, newest_run) = match commit.run {
                Some(model) => {
                    let mut entries = new_entries.clone();
                    let mut older = model.older.map(|o| *runs.get(&o).expect("older run"));
                    while let Some((top, _, _)) = live.last() {
                        if Some(*top) == model.older {
                            break;
                        }
                        let (_, _, absorbed) = live.pop().expect("live run");
                        entries.extend(absorbed);
                    }
                    entries.sort_by_key(RunEntry::key);
                    hook(Stage::Run {
                        commit: ci,
                        older: &mut older,
                        entries: &mut entries,
                        runs: &runs,
                    });
                    let mut pages: Vec<Vec<u8>> = entries
                        .chunks(RUN_PAGE_ENTRIES)
                        .map(|page| {
                            let mut bytes = Vec::new();
                            for e in page {
                                e.encode(&mut bytes);
                            }
                            bytes
                        })
                        .collect();
                    hook(Stage::RunPages {
                        commit: ci,
                        pages: &mut pages,
                    });
                    let count = entries.len() as u64;
                    let tier = tier_of(count);
                    let streak = match &older {
                        Some(o) if o.tier == tier => o.streak + 1,
                        _ => 1,
                    };
                    let mut head = Vec::new();
                    head.extend_from_slice(&RUN_MAGIC);
                    head.extend_from_slice(&count.to_le_bytes());
                    head.extend_from_slice(&(pages.len() as u64).to_le_bytes());
                    head.push(tier);
                    head.push(streak);
                    head.extend_from_slice(&[0u8; 6]);
                    older.encode(&mut head);
                    for page in &pages {
                        head.extend_from_slice(&page[16..32]);
                        head.extend_from_slice(&page[80..88]);
                        head.extend_from_slice(&run_page_digest(page));
                    }
                    debug_assert_eq!(
                        head.len(),
                        RUN_HEADER_LEN + pages.len() * DIRECTORY_ENTRY_LEN
                    );
                    hook(Stage::RunHead {
                        commit: ci,
                        head: &mut head,
                    });
                    let split = RUN_HEADER_LEN.min(head.len());
                    let reference = RunRef {
                        seq,
                        segment_offset,
                        part_offset: run_at,
                        head_len: head.len() as u64,
                        head_digest: run_head_digest(&head[..split], &head[split..]),
                        entry_count: u64_at(&head, 8),
                        tier: head[24],
                        streak: head[25],
                    };
                    let mut bytes = head;
                    for page in &pages {
                        bytes.extend_from_slice(page);
                    }
                    runs.insert(ci, reference);
                    live.push((ci, reference, entries));
                    (bytes, Some(reference))
                }
                None => (Vec::new(), live.last().map(|(_, r, _)| *r)),
            };

            // 5: provenance.
            let mut entries = commit.provenance.clone();
            hook(Stage::Provenance {
                commit: ci,
                entries: &mut entries,
            });
            let provenance_at = run_at + run_bytes.len() as u64;
            let mut local = frontier_before.clone();
            let mut next_new = new_entries.iter();
            let mut entry_offsets = Vec::new();
            let mut entry_at = segment_offset + provenance_at;
            layout.first_entry.push(provenance_count);
            let mut provenance_bytes = Vec::new();
            for (n, entry) in entries.iter_mut().enumerate() {
                entry.previous = provenance_head;
                match entry.action {
                    Action::Create => entry.subject = genesis,
                    Action::AddBlock | Action::Update => {
                        if let Some(e) = next_new.next() {
                            entry.subject = e.entry.digest;
                            local.append(&e.entry.digest);
                        }
                    }
                    Action::Finalize
                    | Action::Convert
                    | Action::Migrate
                    | Action::Recover
                    | Action::Compact => entry.subject = local.root(),
                    Action::Unknown(_) => {}
                }
                hook(Stage::ProvenanceEntry {
                    commit: ci,
                    entry: n,
                    value: entry,
                });
                provenance_head = entry.digest().expect("provenance digest");
                entry
                    .encode(&mut provenance_bytes)
                    .expect("provenance entry");
                entry_offsets.push(entry_at);
                entry_at += entry.encoded_len() as u64;
            }
            provenance_count += entries.len() as u64;
            layout.entries.push(entry_offsets);

            // 6: the segment header.
            let mut header = commit.header;
            header.seq = seq;
            header.segment_offset = segment_offset;
            header.segment_len = provenance_at + provenance_bytes.len() as u64;
            header.records_start = records_start;
            header.record_count = record_count;
            header.records_added = new_entries.len() as u64;
            header.provenance_count = provenance_count;
            header.provenance_added = entries.len() as u64;
            header.provenance_len = provenance_bytes.len() as u64;
            header.run_len = run_bytes.len() as u64;
            header.genesis = genesis;
            header.previous_commit = previous.as_ref().map_or([0u8; 32], |(_, d)| *d);
            // Where the previous segment is, whatever its header says.
            header.previous_segment_offset = match ci {
                0 => 0,
                _ => layout.segments[ci - 1],
            };
            header.last_record_digest = new_entries.last().map_or_else(
                || {
                    previous
                        .as_ref()
                        .map_or(genesis, |(h, _)| h.last_record_digest)
                },
                |e| e.entry.digest,
            );
            header.provenance_head = provenance_head;
            header.merkle_root = stored.root();
            header.newest_run = newest_run;
            hook(Stage::Header {
                commit: ci,
                header: &mut header,
            });

            // 7: the commit digest and signature.
            let mut header_bytes = header.to_array();
            hook(Stage::HeaderBytes {
                commit: ci,
                bytes: &mut header_bytes,
            });
            let frontier_bytes = stored.to_bytes();
            let digest = commit_digest(&header_bytes, &frontier_bytes);
            let mut signature = key.sign(SignedKind::Commit, &digest);
            hook(Stage::CommitSignature {
                commit: ci,
                digest,
                signature: &mut signature,
            });
            out.extend_from_slice(&header_bytes);
            out.extend_from_slice(&signature);
            out.extend_from_slice(&frontier_bytes);
            out.extend_from_slice(&run_bytes);
            out.extend_from_slice(&provenance_bytes);

            // 8: the trailer.
            let mut trailer = Trailer {
                segment_offset: header.segment_offset,
                segment_len: header.segment_len,
                merkle_root: header.merkle_root,
            };
            hook(Stage::Trailer {
                commit: ci,
                trailer: &mut trailer,
            });
            layout.trailers.push(out.len() as u64);
            out.extend_from_slice(&trailer.to_bytes());

            frontier = stored;
            previous = Some((header, digest));
        }
        Rebuilt { bytes: out, layout }
    }
}
