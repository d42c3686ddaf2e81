//! Legacy HMAC-SHA256 block signatures and the checks that need a block's payload.

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

use crate::model::{BodyChecks, Check, LegacyHmac, Outcome};
use crate::pyjson::PyJson;

/// A legacy signing key given with `--legacy-key LABEL=PATH`.
///
/// The legacy writers use `key_id "default"` for every session key, so the id in a
/// signature does not pick the key: every key is tried, and the label of the one that
/// verifies is reported.
#[derive(Clone)]
pub struct LegacyKey {
    pub label: String,
    pub key: Vec<u8>,
}

impl std::fmt::Debug for LegacyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LegacyKey")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

/// HMAC-SHA256 (RFC 2104).
pub fn hmac_sha256(key: &[u8], message: &[&[u8]]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block_key = [0u8; BLOCK];
    if key.len() > BLOCK {
        block_key[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block_key[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block_key.map(|b| b ^ 0x36));
    for part in message {
        inner.update(part);
    }
    let inner = inner.finalize();
    let mut outer = Sha256::new();
    outer.update(block_key.map(|b| b ^ 0x5c));
    outer.update(inner);
    outer.finalize().into()
}

/// Parses a legacy signature JSON text, keeping the timestamp token as written.
pub fn parse_signature(json_text: &str) -> Result<LegacyHmac, String> {
    let value = PyJson::parse(json_text.as_bytes()).map_err(|e| e.to_string())?;
    let text = |name: &str| {
        value
            .get(name)
            .and_then(PyJson::as_str)
            .map(str::to_owned)
            .ok_or_else(|| format!("signature has no string member {name:?}"))
    };
    let timestamp_token = match value.get("timestamp") {
        Some(PyJson::Number(token)) => token.clone(),
        Some(PyJson::String(s)) => s.clone(),
        _ => return Err("signature has no timestamp".into()),
    };
    Ok(LegacyHmac {
        json_text: json_text.to_owned(),
        algorithm: text("algorithm")?,
        key_id: text("key_id")?,
        timestamp_token,
        nonce: text("nonce")?,
        signature_b64: text("signature")?,
    })
}

/// Verifies a legacy signature over `payload` with every key; "no key" is never a failure.
pub fn verify_hmac(signature: &LegacyHmac, payload: &[u8], keys: &[LegacyKey]) -> Outcome {
    if signature.algorithm != "hmac-sha256" {
        return Outcome::Unverifiable(format!(
            "unknown signature algorithm {:?}",
            signature.algorithm
        ));
    }
    let Ok(expected) = base64::engine::general_purpose::STANDARD.decode(&signature.signature_b64)
    else {
        return Outcome::Fail(format!(
            "signature {:?} is not base64",
            signature.signature_b64
        ));
    };
    if keys.is_empty() {
        return Outcome::Unverifiable("no legacy key supplied (--legacy-key)".into());
    }
    let message: [&[u8]; 4] = [
        payload,
        signature.key_id.as_bytes(),
        signature.timestamp_token.as_bytes(),
        signature.nonce.as_bytes(),
    ];
    for key in keys {
        if hmac_sha256(&key.key, &message).as_slice() == expected.as_slice() {
            return Outcome::Pass;
        }
    }
    let labels: Vec<&str> = keys.iter().map(|k| k.label.as_str()).collect();
    Outcome::Unverifiable(format!(
        "no supplied key verifies it (tried {}); a different session key signed it, or the payload changed",
        labels.join(", ")
    ))
}

/// Which supplied key verifies, for the report.
pub fn verifying_key<'a>(
    signature: &LegacyHmac,
    payload: &[u8],
    keys: &'a [LegacyKey],
) -> Option<&'a str> {
    keys.iter()
        .find(|key| verify_hmac(signature, payload, std::slice::from_ref(key)) == Outcome::Pass)
        .map(|k| k.label.as_str())
}

/// Runs the payload checks a reader deferred: declared size, declared SHA-256, signature.
pub fn run_body_checks(checks: &BodyChecks, payload: &[u8], keys: &[LegacyKey]) -> Vec<Check> {
    let mut out = Vec::new();
    if let Some(size) = checks.declared_size {
        out.push(Check::expect("size", size == payload.len() as u64, || {
            format!("declared {size} bytes, payload has {}", payload.len())
        }));
    }
    match &checks.declared_sha256 {
        Some((source, declared)) => {
            let actual = crate::model::sha256_hex(payload);
            out.push(Check::expect(
                "content_hash",
                actual.eq_ignore_ascii_case(declared),
                || format!("{source} says {declared}, payload hashes to {actual}"),
            ));
        }
        // A reader that declares nothing has checked the payload itself (SDK files).
        None if checks.declared_size.is_some() || checks.signature_expected => {
            out.push(Check::unverifiable(
                "content_hash",
                "the source stores no content hash for this block",
            ))
        }
        None => {}
    }
    match &checks.hmac {
        Some(signature) => {
            let outcome = verify_hmac(signature, payload, keys);
            let name = match (&outcome, verifying_key(signature, payload, keys)) {
                (Outcome::Pass, Some(label)) => format!("hmac_signature[{label}]"),
                _ => "hmac_signature".to_owned(),
            };
            out.push(Check {
                check: name,
                outcome,
            });
        }
        None if checks.signature_expected => out.push(Check::unverifiable(
            "hmac_signature",
            "unsigned: the block carries no signature",
        )),
        None => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4231_case_2() {
        let mac = hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn long_keys_are_hashed_first() {
        // RFC 4231 test case 6.
        let key = [0xaau8; 131];
        let mac = hmac_sha256(
            &key,
            &[b"Test Using Larger Than Block-Size Key - Hash Key First"],
        );
        assert_eq!(
            hex::encode(mac),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn no_key_is_unverifiable_not_invalid() {
        let sig = parse_signature(
            r#"{"algorithm": "hmac-sha256", "key_id": "default", "timestamp": 1795241185.1241584, "nonce": "36e740105c4f636fd8e7f2e4df3d1130", "signature": "8fH8Lbr6VxHzHlB8yd46trpIJpOnxMIjft+zYoO5rY8="}"#,
        )
        .unwrap();
        assert_eq!(sig.timestamp_token, "1795241185.1241584");
        assert!(matches!(
            verify_hmac(&sig, b"x", &[]),
            Outcome::Unverifiable(_)
        ));
    }
}
