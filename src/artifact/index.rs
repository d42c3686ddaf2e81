//! Reading the index runs, and the policy that decides when runs merge.
//!
//! Every commit's new index entries go into a run (a sorted, paged table; see
//! `format::run`). Runs are chained from the newest to the oldest, and the live runs hold
//! every position exactly once. A lookup by id walks the chain from the newest run and reads,
//! in each, the head and the one page that can hold the id; the first run that holds the id
//! holds its latest version (newer runs hold newer positions), and every entry carries its
//! version number, so a lookup of the latest version stops there.
//!
//! # The merge policy
//!
//! Runs have tiers by size (`floor(log4(entries))`). A commit's new entries form a run `N`,
//! which then absorbs, while it can:
//!
//! * the newest run when that run's tier is lower than `N`'s;
//! * the newest run when both are tier 0 (so the newest tier-0 run, 1 to 3 entries, is
//!   always in the newest segment, where the next writer already has it);
//! * the newest three runs when they and `N` share a tier (four of a kind make one run of the
//!   next tier).
//!
//! A writer may also merge every live run into one in a commit of its own (`compact`, which
//! `maif import` does after loading most of an artifact): a full checkpoint, after which a
//! lookup reads one run.
//!
//! So tiers never grow towards the newest run, there are at most three runs per tier (one of
//! tier 0), and every time an entry is copied its run's tier grows (tier 0 excepted, where it
//! is copied at most three times). An artifact of `n` records thus has at most
//! `1 + 3 floor(log4 n)` live runs, and each entry is written at most `3 + floor(log4 n)`
//! times: at a million records, 28 runs and 12 copies of 92 bytes, whatever the commit
//! sizes. A commit with no new entries rewrites the newest run only if it is tier 0 (at most
//! 3 entries), so it stays in the newest segment.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::format_id;
use crate::error::{Error, Result};
use crate::format::run::{RUN_PAGE_ENTRIES, RunEntry, RunHead, RunRef, check_head_digest, tier_of};
use crate::store::{BlockStore, CommitRef};

/// Runs' bytes and heads already read, shared by the lookups of one reader or writer.
#[derive(Debug)]
pub(crate) struct Index {
    store: Arc<dyn BlockStore>,
    /// Leading bytes of segments already in hand, by commit.
    segments: Mutex<HashMap<u64, (CommitRef, Bytes)>>,
    heads: Mutex<HashMap<(u64, u64), Arc<RunHead>>>,
    /// Pages already read and checked, by run (commit, part offset) and page number: lookups
    /// of many ids (a batch naming its ids) read and hash each page once.
    pages: Mutex<HashMap<PageKey, Arc<Vec<RunEntry>>>>,
    /// Runs this writer wrote itself, kept decoded so a later merge takes their entries from
    /// memory instead of reading back and re-hashing bytes it has just written.
    written: Mutex<WrittenRuns>,
}

/// Runs a writer wrote, by run (commit, part offset): the run each goes on top of, and its
/// entries. At most [`WRITTEN_RUN_ENTRIES`] entries in all; the oldest go first.
#[derive(Debug, Default)]
struct WrittenRuns {
    runs: HashMap<(u64, u64), (Option<RunRef>, Vec<RunEntry>)>,
    entries: usize,
}

/// Entries kept by [`Index::remember_written_run`]: 92 bytes each on disk, about 100 in
/// memory, so about 25 MiB, which covers every merge of runs up to tier 8 (the bulk of the
/// merge work; larger merges are rare and read their runs back).
const WRITTEN_RUN_ENTRIES: usize = 1 << 18;

/// A page of a run: the run's commit, its part offset, the page number.
type PageKey = (u64, u64, usize);

/// Pages kept decoded: at most 512 entries of 92 bytes each, so about 25 MiB at the most.
const CACHED_PAGES: usize = 256;

fn run_context(run: &RunRef) -> String {
    format!(
        "index run of commit {} at byte {}",
        run.seq,
        run.segment_offset.saturating_add(run.part_offset)
    )
}

impl Index {
    pub(crate) fn new(store: Arc<dyn BlockStore>) -> Self {
        Self {
            store,
            segments: Mutex::new(HashMap::new()),
            heads: Mutex::new(HashMap::new()),
            pages: Mutex::new(HashMap::new()),
            written: Mutex::new(WrittenRuns::default()),
        }
    }

    /// Keeps the entries of a run this writer has just committed (`run`, on top of `older`),
    /// for [`plan_run`] to merge without reading them back.
    pub(crate) fn remember_written_run(
        &self,
        run: RunRef,
        older: Option<RunRef>,
        entries: Vec<RunEntry>,
    ) {
        let Ok(mut written) = self.written.lock() else {
            return;
        };
        if entries.len() > WRITTEN_RUN_ENTRIES || entries.len() as u64 != run.entry_count {
            return;
        }
        while written.entries + entries.len() > WRITTEN_RUN_ENTRIES {
            let Some(oldest) = written.runs.keys().min().copied() else {
                break;
            };
            if let Some((_, dropped)) = written.runs.remove(&oldest) {
                written.entries -= dropped.len();
            }
        }
        written.entries += entries.len();
        written
            .runs
            .insert((run.seq, run.part_offset), (older, entries));
    }

    /// The run `run` goes on top of, and its entries, for a merge that absorbs it: from the
    /// runs this writer wrote if it is one of them (it is dropped from there, since once
    /// merged it is no longer live), read and checked otherwise.
    async fn take_entries(&self, run: &RunRef) -> Result<(Option<RunRef>, Vec<RunEntry>)> {
        let kept = self.written.lock().ok().and_then(|mut written| {
            let taken = written.runs.remove(&(run.seq, run.part_offset))?;
            written.entries -= taken.1.len();
            Some(taken)
        });
        if let Some(taken) = kept {
            return Ok(taken);
        }
        let (head, entries) = self.entries(run).await?;
        Ok((head.older, entries))
    }

    fn cached_page(&self, run: &RunRef, page: usize) -> Option<Arc<Vec<RunEntry>>> {
        let pages = self.pages.lock().ok()?;
        pages.get(&(run.seq, run.part_offset, page)).cloned()
    }

    fn remember_page(&self, run: &RunRef, page: usize, entries: Arc<Vec<RunEntry>>) {
        if let Ok(mut pages) = self.pages.lock() {
            if pages.len() >= CACHED_PAGES {
                pages.clear();
            }
            pages.insert((run.seq, run.part_offset, page), entries);
        }
    }

    /// Keeps the leading bytes of a segment (read while opening, or just written) so runs in
    /// them are read without another request.
    pub(crate) fn remember_segment(&self, commit: CommitRef, prefix: Bytes) {
        if let Ok(mut segments) = self.segments.lock() {
            // Only the newest few matter; a bound keeps a long-lived writer's memory flat.
            if segments.len() >= 64 {
                let oldest = segments.keys().min().copied();
                if let Some(oldest) = oldest {
                    segments.remove(&oldest);
                }
            }
            segments.insert(commit.seq, (commit, prefix));
        }
    }

    pub(crate) async fn read_segment(
        &self,
        commit: CommitRef,
        range: std::ops::Range<u64>,
    ) -> Result<Bytes> {
        let cached = self
            .segments
            .lock()
            .ok()
            .and_then(|segments| segments.get(&commit.seq).cloned());
        if let Some((known, bytes)) = cached
            && known == commit
            && range.end <= bytes.len() as u64
        {
            return Ok(bytes.slice(range.start as usize..range.end as usize));
        }
        Ok(self.store.read_segment(commit, range).await?)
    }

    fn segment_of(run: &RunRef) -> CommitRef {
        CommitRef {
            seq: run.seq,
            segment_offset: run.segment_offset,
        }
    }

    /// The head of `run`, checked against the digest its reference names.
    pub(crate) async fn head(&self, run: &RunRef) -> Result<Arc<RunHead>> {
        let key = (run.seq, run.part_offset);
        if let Some(head) = self.heads.lock().ok().and_then(|h| h.get(&key).cloned()) {
            return Ok(head);
        }
        let bytes = self
            .read_segment(
                Self::segment_of(run),
                run.part_offset..run.part_offset + run.head_len,
            )
            .await?;
        let head = Arc::new(decode_head(run, &bytes)?);
        self.remember_head(run, head.clone());
        Ok(head)
    }

    fn remember_head(&self, run: &RunRef, head: Arc<RunHead>) {
        if let Ok(mut heads) = self.heads.lock() {
            if heads.len() >= 4096 {
                heads.clear();
            }
            heads.insert((run.seq, run.part_offset), head);
        }
    }

    /// Page `page` of `run`, checked against its directory.
    pub(crate) async fn page(
        &self,
        run: &RunRef,
        head: &RunHead,
        page: usize,
    ) -> Result<Arc<Vec<RunEntry>>> {
        if let Some(entries) = self.cached_page(run, page) {
            return Ok(entries);
        }
        let range = head.page_range(page);
        let bytes = self
            .read_segment(
                Self::segment_of(run),
                run.part_offset + range.start..run.part_offset + range.end,
            )
            .await?;
        let entries = Arc::new(
            head.decode_page(page, &bytes)
                .map_err(Error::format(run_context(run)))?,
        );
        self.remember_page(run, page, entries.clone());
        Ok(entries)
    }

    /// Every entry of `run`, read in one request and checked page by page.
    pub(crate) async fn entries(&self, run: &RunRef) -> Result<(Arc<RunHead>, Vec<RunEntry>)> {
        let len = crate::format::run::run_part_len(run.entry_count);
        let bytes = self
            .read_segment(
                Self::segment_of(run),
                run.part_offset..run.part_offset + len,
            )
            .await?;
        let head_bytes = bytes.slice(..run.head_len as usize);
        let head = Arc::new(decode_head(run, &head_bytes)?);
        let mut entries = Vec::with_capacity(run.entry_count as usize);
        for page in 0..head.directory.len() {
            let range = head.page_range(page);
            entries.extend(
                head.decode_page(page, &bytes[range.start as usize..range.end as usize])
                    .map_err(Error::format(run_context(run)))?,
            );
        }
        Ok((head, entries))
    }

    /// The live runs, newest first.
    pub(crate) async fn live_runs(&self, newest: Option<RunRef>) -> Result<Vec<RunRef>> {
        let mut runs = Vec::new();
        let mut next = newest;
        while let Some(run) = next {
            if runs.len() > 64 * 3 {
                return Err(Error::Verification(format!(
                    "the chain of index runs from commit {} does not end: more live runs than any artifact can have",
                    run.seq
                )));
            }
            next = self.head(&run).await?.older;
            runs.push(run);
        }
        Ok(runs)
    }

    /// The entries of `block_id` in the newest run that holds it, with the run's older
    /// chain continued while `wanted` (a version) is not among them. Returns every entry of
    /// the id found, newest run first.
    pub(crate) async fn find(
        &self,
        newest: Option<RunRef>,
        block_id: &[u8; 16],
        version: Option<u32>,
    ) -> Result<Option<RunEntry>> {
        let mut next = newest;
        while let Some(run) = next {
            let mut found: Vec<RunEntry> = Vec::new();
            let cached_head = self
                .heads
                .lock()
                .ok()
                .and_then(|h| h.get(&(run.seq, run.part_offset)).cloned());
            let head = match cached_head {
                Some(head) => head,
                None if run.entry_count <= RUN_PAGE_ENTRIES as u64 => {
                    // A run of one page: its head and page in one read, both kept.
                    let (head, entries) = self.entries(&run).await?;
                    self.remember_head(&run, head.clone());
                    self.remember_page(&run, 0, Arc::new(entries));
                    head
                }
                None => self.head(&run).await?,
            };
            for page in head.pages_for(block_id) {
                found.extend(
                    self.page(&run, &head, page)
                        .await?
                        .iter()
                        .filter(|e| e.entry.block_id == *block_id),
                );
            }
            let hit = match version {
                None => found.iter().max_by_key(|e| e.position).copied(),
                Some(wanted) => found.iter().find(|e| e.version == wanted).copied(),
            };
            if hit.is_some() {
                return Ok(hit);
            }
            if version.is_some_and(|wanted| found.iter().any(|e| e.version < wanted)) {
                // Older runs hold older versions only.
                return Ok(None);
            }
            next = head.older;
        }
        Ok(None)
    }

    /// Every entry of every live run, in position order, after checking that they hold
    /// positions `0..record_count` exactly once.
    pub(crate) async fn list(
        &self,
        newest: Option<RunRef>,
        record_count: u64,
    ) -> Result<Vec<RunEntry>> {
        let mut all = Vec::with_capacity(record_count as usize);
        for run in self.live_runs(newest).await? {
            all.extend(self.entries(&run).await?.1);
        }
        all.sort_unstable_by_key(|e| e.position);
        for (expected, entry) in all.iter().enumerate() {
            if entry.position != expected as u64 {
                return Err(Error::Verification(format!(
                    "the index runs do not hold each position once: position {expected} is {} (block {})",
                    if entry.position > expected as u64 {
                        "missing"
                    } else {
                        "held twice"
                    },
                    format_id(&entry.entry.block_id)
                )));
            }
        }
        if all.len() as u64 != record_count {
            return Err(Error::Verification(format!(
                "the index runs hold {} records but the commit counts {record_count}",
                all.len()
            )));
        }
        Ok(all)
    }
}

fn decode_head(run: &RunRef, bytes: &[u8]) -> Result<RunHead> {
    check_head_digest(run, bytes).map_err(Error::format(run_context(run)))?;
    let head = RunHead::decode(bytes).map_err(Error::format(run_context(run)))?;
    if head.entry_count != run.entry_count || head.tier != run.tier || head.streak != run.streak {
        return Err(Error::Verification(format!(
            "{}: its head disagrees with the reference to it",
            run_context(run)
        )));
    }
    Ok(head)
}

/// The run a commit writes: its entries (sorted) and the live run it goes on top of.
#[derive(Debug)]
pub(crate) struct PlannedRun {
    pub entries: Vec<RunEntry>,
    pub older: Option<RunRef>,
}

/// Applies the merge policy (module documentation) to a commit's `new_entries` on top of
/// the live run `newest`; with `merge_all`, the run absorbs every live run (a full
/// checkpoint). `None` means the commit writes no run.
pub(crate) async fn plan_run(
    index: &Index,
    newest: Option<RunRef>,
    mut new_entries: Vec<RunEntry>,
    merge_all: bool,
) -> Result<Option<PlannedRun>> {
    new_entries.sort_unstable_by_key(RunEntry::key);
    let mut top = newest;
    if merge_all {
        let mut runs = vec![new_entries];
        while let Some(t) = top {
            let (older, entries) = index.take_entries(&t).await?;
            runs.push(entries);
            top = older;
        }
        let run = merge_runs(runs);
        return Ok((!run.is_empty()).then_some(PlannedRun {
            entries: run,
            older: None,
        }));
    }
    if new_entries.is_empty() {
        match top {
            // Keep the newest tier-0 run in the newest segment.
            Some(t) if t.tier == 0 => {
                let (older, entries) = index.take_entries(&t).await?;
                return Ok(Some(PlannedRun { entries, older }));
            }
            _ => return Ok(None),
        }
    }
    // Which runs the new one absorbs depends only on entry counts (merging keeps every
    // entry), so they are all found first and merged in one pass: a merge that absorbs
    // three runs and then three larger ones moves each entry once, not up to six times.
    let mut count = new_entries.len() as u64;
    let mut runs = vec![new_entries];
    while let Some(t) = top {
        let tier = tier_of(count);
        let absorb = if t.tier < tier || (t.tier == 0 && tier == 0) {
            1
        } else if t.tier == tier && t.streak >= 3 {
            3
        } else {
            break;
        };
        for _ in 0..absorb {
            let Some(next) = top else { break };
            let (older, entries) = index.take_entries(&next).await?;
            count += entries.len() as u64;
            runs.push(entries);
            top = older;
        }
    }
    Ok(Some(PlannedRun {
        entries: merge_runs(runs),
        older: top,
    }))
}

/// Merges runs' entries, each run sorted by key, into one sorted run in one pass (linear in
/// the entries, where sorting the concatenation would cost a large merge a sort of
/// everything, and merging two at a time would move the first runs' entries again at
/// every step).
fn merge_runs(mut runs: Vec<Vec<RunEntry>>) -> Vec<RunEntry> {
    runs.retain(|run| !run.is_empty());
    if runs.len() <= 1 {
        return runs.pop().unwrap_or_default();
    }
    let total = runs.iter().map(Vec::len).sum();
    let mut merged = Vec::with_capacity(total);
    let mut heads: Vec<std::vec::IntoIter<RunEntry>> =
        runs.into_iter().map(Vec::into_iter).collect();
    // Each run's next entry, kept out of its iterator so the scan for the least compares
    // keys only. A merge absorbs at most seven runs (a full compaction one per live run,
    // at most 28 at a million records), where a heap gains nothing.
    let mut next: Vec<Option<RunEntry>> = heads.iter_mut().map(Iterator::next).collect();
    loop {
        let mut least: Option<(usize, ([u8; 16], u64))> = None;
        for (n, entry) in next.iter().enumerate() {
            if let Some(entry) = entry {
                let key = entry.key();
                if least.is_none_or(|(_, k)| key < k) {
                    least = Some((n, key));
                }
            }
        }
        let Some((n, _)) = least else {
            break;
        };
        let following = heads[n].next();
        merged.extend(std::mem::replace(&mut next[n], following));
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{FourCC, IndexEntry};

    fn entry(id: u8, position: u64) -> RunEntry {
        RunEntry {
            entry: IndexEntry {
                offset: position * 100,
                record_len: 100,
                block_id: [id; 16],
                block_type: FourCC::TEXT,
                metadata_len: 0,
                timestamp_us: 0,
                digest: [id; 32],
            },
            position,
            version: 1,
        }
    }

    #[test]
    fn merging_sorted_runs_gives_what_sorting_their_concatenation_gives() {
        let run = |pairs: &[(u8, u64)]| -> Vec<RunEntry> {
            pairs.iter().map(|&(i, p)| entry(i, p)).collect()
        };
        let a = run(&[(1, 9), (3, 2), (3, 7), (8, 1)]);
        let b = run(&[(0, 4), (3, 5), (9, 0)]);
        let c = run(&[(2, 3), (3, 6), (3, 8), (9, 1), (9, 2)]);
        let keys = |v: &[RunEntry]| v.iter().map(RunEntry::key).collect::<Vec<_>>();
        let sorted = |runs: &[&Vec<RunEntry>]| {
            let mut all: Vec<RunEntry> = runs.iter().flat_map(|r| r.iter().copied()).collect();
            all.sort_unstable_by_key(RunEntry::key);
            keys(&all)
        };
        for runs in [
            vec![&a, &b],
            vec![&b, &a],
            vec![&a, &b, &c],
            vec![&c, &b, &a],
            vec![&c],
        ] {
            let owned = runs.iter().map(|r| (*r).clone()).collect();
            assert_eq!(keys(&merge_runs(owned)), sorted(&runs));
        }
        assert!(merge_runs(Vec::new()).is_empty());
        assert!(merge_runs(vec![Vec::new(), Vec::new()]).is_empty());
        assert_eq!(keys(&merge_runs(vec![Vec::new(), b.clone()])), keys(&b));
    }
}
