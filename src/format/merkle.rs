//! The Merkle tree over record digests: RFC 9162 (Certificate Transparency v2), section 2.1.
//!
//! `leaf = SHA-256(0x00 | digest)`, `node = SHA-256(0x01 | left | right)`; a tree of `n > 1`
//! leaves splits at the largest power of two below `n`. An odd node is promoted, never
//! duplicated (duplicating is CVE-2012-2459). The empty tree's root is SHA-256 of nothing.

use sha2::{Digest as _, Sha256};

use super::FormatError;
use super::digest::Digest;

/// Root of the empty tree: SHA-256 of nothing.
pub(crate) fn empty_root() -> Digest {
    Sha256::digest([]).into()
}

/// The Merkle frontier of a tree of `size` leaves (RFC 9162's compact range `[0, size)`): the
/// roots of the perfect subtrees the tree decomposes into, largest (leftmost) first, one for
/// each set bit of `size`. It is all a writer needs to append leaves and compute the root, and
/// it is what every commit stores: at most 64 hashes, 7 at a million leaves.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Frontier {
    size: u64,
    hashes: Vec<Digest>,
}

impl Frontier {
    /// The frontier of the empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The subtree roots, largest first.
    pub fn hashes(&self) -> &[Digest] {
        &self.hashes
    }

    /// Encoded length of the frontier of a tree of `size` leaves.
    pub fn encoded_len(size: u64) -> u64 {
        32 * u64::from(size.count_ones())
    }

    /// Appends the leaf for `record_digest` and returns how many SHA-256 computations that
    /// took: one leaf hash plus one node hash per subtree it completes (on average under two,
    /// at most `1 + log2(size)`).
    pub fn append(&mut self, record_digest: &Digest) -> u32 {
        let mut hash = leaf_hash(record_digest);
        let mut hashes_computed = 1;
        let mut size = self.size;
        while size & 1 == 1 {
            // The lowest set bit of `size` is a subtree of the size the new one just reached.
            let Some(left) = self.hashes.pop() else { break };
            hash = node_hash(&left, &hash);
            hashes_computed += 1;
            size >>= 1;
        }
        self.hashes.push(hash);
        self.size += 1;
        hashes_computed
    }

    /// The RFC 9162 root of the tree (a right fold of the subtree roots).
    pub fn root(&self) -> Digest {
        self.root_counting().0
    }

    /// The root and the number of node hashes computed for it (`popcount(size) - 1`).
    pub(crate) fn root_counting(&self) -> (Digest, u32) {
        let Some((last, rest)) = self.hashes.split_last() else {
            return (empty_root(), 0);
        };
        let mut root = *last;
        let mut computed = 0;
        for left in rest.iter().rev() {
            root = node_hash(left, &root);
            computed += 1;
        }
        (root, computed)
    }

    /// Appends the frontier's hashes, left to right, 32 bytes each.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        for hash in &self.hashes {
            out.extend_from_slice(hash);
        }
    }

    /// The encoded frontier: `32 * popcount(size)` bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.hashes.len() * 32);
        self.encode(&mut out);
        out
    }

    /// Decodes the frontier of a tree of `size` leaves from exactly `32 * popcount(size)`
    /// bytes.
    pub fn decode(size: u64, bytes: &[u8]) -> Result<Self, FormatError> {
        let expected = Self::encoded_len(size);
        if bytes.len() as u64 != expected {
            return Err(FormatError::InvalidField {
                structure: "merkle frontier",
                field: "hashes",
                offset: 0,
                reason: format!(
                    "a tree of {size} leaves has a {expected}-byte frontier, found {} bytes",
                    bytes.len()
                ),
            });
        }
        let hashes = bytes
            .chunks_exact(32)
            .map(|chunk| {
                let mut hash = [0u8; 32];
                hash.copy_from_slice(chunk);
                hash
            })
            .collect();
        Ok(Self { size, hashes })
    }
}

/// Hash of a leaf for the record whose digest is `record_digest`.
pub(crate) fn leaf_hash(record_digest: &Digest) -> Digest {
    let mut hasher = Sha256::new();
    hasher.update([0x00]);
    hasher.update(record_digest);
    hasher.finalize().into()
}

/// Hash of an interior node.
pub(crate) fn node_hash(left: &Digest, right: &Digest) -> Digest {
    let mut hasher = Sha256::new();
    hasher.update([0x01]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// Root of the tree whose leaves are `record_digests`, in order.
///
/// Bottom-up, pairing neighbours and carrying a lone last node up unchanged; this yields the
/// same root as RFC 9162's recursive split because the split point is always a power of two.
pub fn merkle_root(record_digests: &[Digest]) -> Digest {
    if record_digests.is_empty() {
        return empty_root();
    }
    // The leaf level is never stored: each pair of leaves is hashed straight into its parent,
    // which halves the memory traffic of the largest level.
    let mut level: Vec<Digest> = record_digests
        .chunks(2)
        .map(|pair| {
            // `chunks` never yields an empty slice.
            let left = leaf_hash(&pair[0]);
            pair.get(1)
                .map_or(left, |right| node_hash(&left, &leaf_hash(right)))
        })
        .collect();
    while level.len() > 1 {
        let pairs = level.len() / 2;
        for i in 0..pairs {
            level[i] = node_hash(&level[2 * i], &level[2 * i + 1]);
        }
        if level.len() % 2 == 1 {
            level[pairs] = level[level.len() - 1];
            level.truncate(pairs + 1);
        } else {
            level.truncate(pairs);
        }
    }
    level[0]
}

fn largest_power_of_two_below(n: usize) -> usize {
    debug_assert!(n > 1);
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

fn subtree_root(leaves: &[Digest]) -> Digest {
    // `leaves` are leaf hashes here.
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = largest_power_of_two_below(n);
            node_hash(&subtree_root(&leaves[..k]), &subtree_root(&leaves[k..]))
        }
    }
}

/// Audit path proving that leaf `index` belongs to the tree of `record_digests`
/// (RFC 9162 section 2.1.3.1). `None` if `index` is out of range.
pub fn inclusion_proof(record_digests: &[Digest], index: usize) -> Option<Vec<Digest>> {
    if index >= record_digests.len() {
        return None;
    }
    let leaves: Vec<Digest> = record_digests.iter().map(leaf_hash).collect();
    let mut proof = Vec::new();
    path(&leaves, index, &mut proof);
    Some(proof)
}

fn path(leaves: &[Digest], index: usize, proof: &mut Vec<Digest>) {
    let n = leaves.len();
    if n <= 1 {
        return;
    }
    let k = largest_power_of_two_below(n);
    if index < k {
        path(&leaves[..k], index, proof);
        proof.push(subtree_root(&leaves[k..]));
    } else {
        path(&leaves[k..], index - k, proof);
        proof.push(subtree_root(&leaves[..k]));
    }
}

/// Checks an inclusion proof (RFC 9162 section 2.1.3.2).
pub fn verify_inclusion(
    record_digest: &Digest,
    index: u64,
    tree_size: u64,
    proof: &[Digest],
    root: &Digest,
) -> bool {
    if index >= tree_size {
        return false;
    }
    let (mut fnode, mut snode) = (index, tree_size - 1);
    let mut hash = leaf_hash(record_digest);
    for sibling in proof {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            hash = node_hash(sibling, &hash);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            hash = node_hash(&hash, sibling);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    snode == 0 && hash == *root
}

/// Proof that the tree of the first `old_size` digests is a prefix of the tree of all
/// `record_digests` (RFC 9162 section 2.1.4.1). `None` if `old_size` exceeds the tree.
pub fn consistency_proof(record_digests: &[Digest], old_size: usize) -> Option<Vec<Digest>> {
    if old_size > record_digests.len() {
        return None;
    }
    let leaves: Vec<Digest> = record_digests.iter().map(leaf_hash).collect();
    let mut proof = Vec::new();
    if old_size > 0 && old_size < leaves.len() {
        subproof(old_size, &leaves, true, &mut proof);
    }
    Some(proof)
}

fn subproof(m: usize, leaves: &[Digest], complete: bool, proof: &mut Vec<Digest>) {
    let n = leaves.len();
    if m == n {
        if !complete {
            proof.push(subtree_root(leaves));
        }
        return;
    }
    let k = largest_power_of_two_below(n);
    if m <= k {
        subproof(m, &leaves[..k], complete, proof);
        proof.push(subtree_root(&leaves[k..]));
    } else {
        subproof(m - k, &leaves[k..], false, proof);
        proof.push(subtree_root(&leaves[..k]));
    }
}

/// Checks a consistency proof (RFC 9162 section 2.1.4.2).
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Digest,
    new_root: &Digest,
    proof: &[Digest],
) -> bool {
    if old_size > new_size {
        return false;
    }
    if old_size == new_size {
        return proof.is_empty() && old_root == new_root;
    }
    if old_size == 0 {
        return proof.is_empty();
    }
    let mut path: Vec<Digest> = proof.to_vec();
    if old_size.is_power_of_two() {
        path.insert(0, *old_root);
    }
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    let (mut fnode, mut snode) = (old_size - 1, new_size - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    snode == 0 && fr == *old_root && sr == *new_root
}
