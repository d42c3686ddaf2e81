//! The layout-A hash chain and the migration order it implies.
//!
//! `previous_hash(n) = hex(SHA-256(H72(header of the block before n)))`, where H72 is the
//! 72-byte little-endian header of `block_storage.py` hashed with *no* payload. The legacy
//! index can be stale, rebuilt in uuid order, or missing, so the order comes from the chain:
//! parents before children, independent segments by time.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap, HashMap};

use crate::model::sha256_hex;

/// The fields of a legacy header that H72 covers.
#[derive(Debug, Clone)]
pub struct ChainHeader {
    pub size: u64,
    /// The block type as the source spells it (v1 index: space-padded; metadata: as passed).
    pub block_type: String,
    pub version: u32,
    pub timestamp_us: u64,
    pub uuid: [u8; 16],
    pub previous_hash: Option<String>,
    pub flags: u32,
}

/// H72 with the type padded by `pad` (v1 writers pad with spaces, v0 with NULs).
/// The writers packed `size` as a u32 (`struct.pack('<I')`), so only its low 32 bits count;
/// `previous_hash` keeps its first 32 characters.
pub fn h72(header: &ChainHeader, pad: u8) -> [u8; 72] {
    let mut block_type = [pad; 4];
    for (slot, byte) in block_type.iter_mut().zip(header.block_type.bytes()) {
        *slot = byte;
    }
    let mut previous = [0u8; 32];
    if let Some(text) = &header.previous_hash {
        for (slot, byte) in previous.iter_mut().zip(text.bytes()) {
            *slot = byte;
        }
    }
    crate::local::block_storage::encode_header(
        header.size as u32,
        block_type,
        header.version,
        header.timestamp_us,
        header.uuid,
        previous,
        header.flags,
    )
}

/// How one block's `previous_hash` resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    Root,
    /// The index of the parent in the input slice.
    Parent(usize),
    /// Names a header that is not here (deleted, or never listed).
    Gap(String),
}

/// What the chain says about a set of blocks.
#[derive(Debug, Clone)]
pub struct ChainAnalysis {
    pub links: Vec<Link>,
    /// Indices in migration order.
    pub order: Vec<usize>,
    /// Parents with more than one child: (parent, children).
    pub forks: Vec<(usize, Vec<usize>)>,
    /// Number of independent segments (roots plus gaps).
    pub segments: usize,
}

/// A float seconds value usable as a sort key (NaN sorts first).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Seconds(pub f64);

impl Eq for Seconds {}

impl PartialOrd for Seconds {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Seconds {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Resolves every block's link against the H72 hashes of all blocks (both paddings), then
/// orders them topologically: a parent before its children, and among blocks that are
/// ready, the earliest `(time, key)` first. A cycle (only possible with forged hashes) is
/// broken by time.
pub fn analyse(headers: &[ChainHeader], times: &[(Seconds, String)]) -> ChainAnalysis {
    let mut by_hash: HashMap<String, usize> = HashMap::new();
    for (position, header) in headers.iter().enumerate() {
        for pad in [b' ', 0u8] {
            by_hash
                .entry(sha256_hex(&h72(header, pad)))
                .or_insert(position);
        }
    }
    let links: Vec<Link> = headers
        .iter()
        .enumerate()
        .map(|(position, header)| match &header.previous_hash {
            None => Link::Root,
            Some(previous) => match by_hash.get(&previous.to_ascii_lowercase()) {
                Some(&parent) if parent != position => Link::Parent(parent),
                _ => Link::Gap(previous.clone()),
            },
        })
        .collect();
    let mut children: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (position, link) in links.iter().enumerate() {
        if let Link::Parent(parent) = link {
            children.entry(*parent).or_default().push(position);
        }
    }
    let forks = children
        .iter()
        .filter(|(_, kids)| kids.len() > 1)
        .map(|(parent, kids)| (*parent, kids.clone()))
        .collect();
    let segments = links
        .iter()
        .filter(|link| !matches!(link, Link::Parent(_)))
        .count();

    let mut waiting: Vec<usize> = links
        .iter()
        .map(|link| usize::from(matches!(link, Link::Parent(_))))
        .collect();
    let key = |position: usize| Reverse((times[position].0, times[position].1.clone(), position));
    let mut ready: BinaryHeap<_> = (0..headers.len())
        .filter(|&position| waiting[position] == 0)
        .map(key)
        .collect();
    let mut order = Vec::with_capacity(headers.len());
    let mut placed = vec![false; headers.len()];
    while order.len() < headers.len() {
        let next = match ready.pop() {
            Some(Reverse((_, _, position))) => position,
            // Only a cycle leaves blocks waiting: release the earliest of them.
            None => match (0..headers.len())
                .filter(|&position| !placed[position])
                .min_by(|&left, &right| {
                    (times[left].0, &times[left].1).cmp(&(times[right].0, &times[right].1))
                }) {
                Some(position) => position,
                None => break,
            },
        };
        if placed[next] {
            continue;
        }
        placed[next] = true;
        order.push(next);
        for &child in children.get(&next).map(Vec::as_slice).unwrap_or(&[]) {
            waiting[child] = waiting[child].saturating_sub(1);
            if waiting[child] == 0 && !placed[child] {
                ready.push(key(child));
            }
        }
    }
    ChainAnalysis {
        links,
        order,
        forks,
        segments,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worked_example_from_text_only() {
        let header = ChainHeader {
            size: 0x26,
            block_type: "TEXT".into(),
            version: 1,
            timestamp_us: crate::s3::python_us("1795241185.1240911").unwrap(),
            uuid: *uuid::Uuid::parse_str("b40bff30-a9cd-4755-8668-3d8414aab594")
                .unwrap()
                .as_bytes(),
            previous_hash: None,
            flags: 0,
        };
        assert_eq!(
            sha256_hex(&h72(&header, b' ')),
            "11f09e341977f1f85d97fcf4fe8411725234a0a7b55704d3cbf26687575a96b2"
        );
    }

    #[test]
    fn orders_by_chain_not_by_time() {
        let mut a = ChainHeader {
            size: 1,
            block_type: "TEXT".into(),
            version: 1,
            timestamp_us: 10,
            uuid: [1; 16],
            previous_hash: None,
            flags: 0,
        };
        let b = ChainHeader {
            uuid: [2; 16],
            previous_hash: Some(sha256_hex(&h72(&a, b' '))),
            timestamp_us: 5,
            ..a.clone()
        };
        a.timestamp_us = 10;
        let times = vec![(Seconds(10.0), "a".into()), (Seconds(5.0), "b".into())];
        let analysis = analyse(&[a, b], &times);
        assert_eq!(analysis.order, vec![0, 1]);
        assert_eq!(analysis.links[1], Link::Parent(0));
        assert_eq!(analysis.segments, 1);
    }
}
