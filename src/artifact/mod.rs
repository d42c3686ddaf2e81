//! Artifacts: the signing writer, the verifying reader, versions and provenance, proofs,
//! verification, recovery and conversion, on top of any
//! [`BlockStore`](crate::store::BlockStore).

mod commit;
mod convert;
mod gc;
mod index;
mod proof;
mod reader;
mod recover;
mod verify;
mod writer;

pub use commit::{Commit, Identity};
pub use convert::{ConvertOptions, ConvertReport, convert};
pub use gc::{DEFAULT_GC_GRACE, GcOptions, GcReport, collect_garbage};
pub use proof::{PROOF_VERSION, ProofCheck, prove_consistency, prove_inclusion, verify_proof};
pub use reader::{ArtifactReader, Block, BlockInfo};
pub use recover::{RecoverReport, RecoveryMode, recover_file};
pub use verify::{Problem, VerifyOptions, VerifyReport, verify};
pub use writer::{
    ArtifactWriter, BlockRef, CreateOptions, DEFAULT_MAX_RETRIES, NewBlock, REUPLOAD_PENDING_AFTER,
};

use crate::error::{Error, Result};

/// Microseconds since the Unix epoch, now.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Formats a 16-byte id as a hyphenated UUID.
pub fn format_id(id: &[u8; 16]) -> String {
    uuid::Uuid::from_bytes(*id).hyphenated().to_string()
}

/// Parses a UUID (hyphenated or not).
pub fn parse_id(text: &str) -> Result<[u8; 16]> {
    uuid::Uuid::parse_str(text)
        .map(|u| *u.as_bytes())
        .map_err(|_| Error::InvalidBlockId { text: text.into() })
}

/// Formats microseconds since the epoch as RFC 3339 UTC with microseconds.
pub fn format_time(us: u64) -> String {
    let secs = us / 1_000_000;
    let micros = us % 1_000_000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (hour, minute, second) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil-from-days (Howard Hinnant's algorithm), valid for every u64 day count we can see.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{micros:06}Z")
}
