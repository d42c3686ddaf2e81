//! Generates legacy layout-A (v1) prefixes as `S3BlockStorage` wrote them
//! (docs/legacy-inputs.md §4): raw payload objects with their user metadata, the header hash
//! chain, HMAC signatures, and `block_index.json`. Used by the tests and the benchmark.

use std::sync::Arc;

use base64::Engine as _;
use futures::{StreamExt as _, TryStreamExt as _};
use maif_migrate::hmac::hmac_sha256;
use object_store::path::Path as ObjectPath;
use object_store::{Attribute, Attributes, ObjectStore, ObjectStoreExt as _, PutOptions};

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(data))
}

pub const HMAC_KEY: [u8; 32] = [7u8; 32];

/// One generated legacy block.
pub struct Generated {
    pub uuid: uuid::Uuid,
    pub payload: Vec<u8>,
    pub timestamp: String,
    pub previous_hash: Option<String>,
    pub signature: String,
}

/// The 72-byte little-endian header the legacy chain hashes (no payload).
pub fn h72(block: &Generated) -> [u8; 72] {
    let mut out = [0u8; 72];
    out[0..4].copy_from_slice(&(block.payload.len() as u32).to_le_bytes());
    out[4..8].copy_from_slice(b"TEXT");
    out[8..12].copy_from_slice(&1u32.to_le_bytes());
    let seconds: f64 = block.timestamp.parse().unwrap();
    out[12..20].copy_from_slice(&((seconds * 1_000_000.0).trunc() as u64).to_le_bytes());
    out[20..36].copy_from_slice(block.uuid.as_bytes());
    if let Some(previous) = &block.previous_hash {
        out[36..68].copy_from_slice(&previous.as_bytes()[..32]);
    }
    out
}

/// A linear chain of `n` blocks, in write order.
pub fn generate(n: usize, payload_len: Option<usize>) -> Vec<Generated> {
    let mut blocks: Vec<Generated> = Vec::with_capacity(n);
    for i in 0..n {
        let mut payload = format!("generated legacy block {i} {}", "x".repeat(i % 97)).into_bytes();
        if let Some(len) = payload_len {
            payload.resize(len, (i % 251) as u8);
        }
        let timestamp = format!("1800000000.{:06}", i * 10 + 3);
        let previous_hash = blocks.last().map(|b| sha256_hex(&h72(b)));
        let nonce = format!("{:032x}", i);
        let sig_ts = format!("1800000000.{:06}", i * 10 + 5);
        let mac = hmac_sha256(
            &HMAC_KEY,
            &[&payload, b"default", sig_ts.as_bytes(), nonce.as_bytes()],
        );
        let signature = format!(
            r#"{{"algorithm": "hmac-sha256", "key_id": "default", "timestamp": {sig_ts}, "nonce": "{nonce}", "signature": "{}"}}"#,
            base64::engine::general_purpose::STANDARD.encode(mac)
        );
        blocks.push(Generated {
            uuid: uuid::Uuid::new_v4(),
            payload,
            timestamp,
            previous_hash,
            signature,
        });
    }
    blocks
}

pub fn metadata(block: &Generated, i: usize) -> Attributes {
    let mut pairs: Vec<(&str, String)> = vec![
        ("block_type", "TEXT".into()),
        ("size", block.payload.len().to_string()),
        ("version", "1".into()),
        ("timestamp", block.timestamp.clone()),
        ("content_type", "application/octet-stream".into()),
        ("magic", "MAIF".into()),
        ("block_hash", sha256_hex(&block.payload)),
        ("uuid", block.uuid.to_string()),
        ("flags", "0".into()),
        ("metadata_size", "12".into()),
        ("format_version", "1".into()),
        ("signature", block.signature.clone()),
        ("user_n", i.to_string()),
    ];
    if let Some(previous) = &block.previous_hash {
        pairs.push(("previous_hash", previous.clone()));
    }
    let mut attributes = Attributes::new();
    for (k, v) in pairs {
        attributes.insert(Attribute::Metadata(k.into()), v.into());
    }
    attributes
}

/// `block_index.json` naming `indexed` (in the given order) plus `dangling` entries whose
/// objects do not exist.
pub fn index_json(prefix: &str, indexed: &[&Generated], dangling: &[&Generated]) -> String {
    let all: Vec<&&Generated> = indexed.iter().chain(dangling).collect();
    let positions: Vec<String> = all
        .iter()
        .enumerate()
        .map(|(i, b)| format!("\"{}\": {i}", b.uuid))
        .collect();
    let headers: Vec<String> = all
        .iter()
        .map(|b| {
            let previous = b.previous_hash.as_ref().map_or("null".to_owned(), |p| format!("\"{p}\""));
            format!(
                r#"{{"header": {{"size": {}, "block_type": "TEXT", "version": 1, "uuid": "{}", "timestamp": {}, "previous_hash": {previous}, "flags": 0}}, "s3_key": "{prefix}/data/{}"}}"#,
                b.payload.len(),
                b.uuid,
                b.timestamp,
                b.uuid
            )
        })
        .collect();
    let signatures: Vec<String> = all
        .iter()
        .map(|b| format!("\"{}\": {}", b.uuid, b.signature))
        .collect();
    format!(
        r#"{{"block_index": {{{}}}, "blocks": [{}], "block_signatures": {{{}}}, "updated_at": 1800000999.5}}"#,
        positions.join(", "),
        headers.join(", "),
        signatures.join(", ")
    )
}

pub fn upload(
    store: &Arc<dyn ObjectStore>,
    prefix: &str,
    blocks: &[Generated],
    index: Option<String>,
) {
    crate::common::block_on(async {
        futures::stream::iter(blocks.iter().enumerate())
            .map(|(i, block)| {
                let store = store.clone();
                async move {
                    store
                        .put_opts(
                            &ObjectPath::from(format!("{prefix}/data/{}", block.uuid)),
                            block.payload.clone().into(),
                            PutOptions {
                                attributes: metadata(block, i),
                                ..PutOptions::default()
                            },
                        )
                        .await
                }
            })
            .buffer_unordered(32)
            .try_collect::<Vec<_>>()
            .await
            .expect("upload legacy blocks");
        if let Some(index) = index {
            store
                .put(
                    &ObjectPath::from(format!("{prefix}/block_index.json")),
                    index.into_bytes().into(),
                )
                .await
                .expect("upload index");
        }
    });
}
