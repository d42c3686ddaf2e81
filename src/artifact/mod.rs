//! Artifacts: the signing writer, the verifying reader, versions and provenance, proofs,
//! verification, recovery and conversion, on top of any
//! [`BlockStore`](crate::store::BlockStore).

mod commit;
mod convert;
mod gc;
mod index;
mod proof;
mod provenance_rules;
mod reader;
mod recover;
mod verify;
mod writer;

pub use commit::{Commit, Identity};
pub use convert::{ConvertOptions, ConvertReport, convert};
pub use gc::{DEFAULT_GC_GRACE, GcOptions, GcReport, collect_garbage};
pub use proof::{PROOF_VERSION, ProofCheck, prove_consistency, prove_inclusion, verify_proof};
pub use reader::{ArtifactReader, Block, BlockInfo, CHECKED_METADATA_MAX};
pub use recover::{RecoverReport, RecoveryMode, recover_file};
pub use verify::{Problem, VerifyOptions, VerifyReport, verify};
pub use writer::{
    ArtifactWriter, BlockRef, CommitTicket, CreateOptions, DEFAULT_MAX_RETRIES, NewBlock,
    REUPLOAD_PENDING_AFTER,
};

use crate::error::{Error, Result};

/// Microseconds since the Unix epoch, now.
pub(crate) fn now_us() -> u64 {
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

/// Parses a time as [`format_time`] writes it (RFC 3339 in UTC: `2026-11-30T15:00:00Z`, with
/// up to six fraction digits), or a whole number of microseconds since the Unix epoch.
pub fn parse_time(text: &str) -> Result<u64> {
    let bad = || {
        Error::Invalid(format!(
            "time {text:?}: expected RFC 3339 in UTC such as 2026-11-30T15:00:00Z, or microseconds since 1970"
        ))
    };
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().map_err(|_| bad());
    }
    let rest = text.strip_suffix('Z').ok_or_else(bad)?;
    let (date, clock) = rest.split_once('T').ok_or_else(bad)?;
    let numbers = |part: &str, count: usize| -> Option<Vec<i64>> {
        let fields: Vec<i64> = part
            .split(['-', ':'])
            .map(|f| f.parse().ok())
            .collect::<Option<_>>()?;
        (fields.len() == count).then_some(fields)
    };
    let (clock, fraction) = clock.split_once('.').unwrap_or((clock, ""));
    let (Some(ymd), Some(hms)) = (numbers(date, 3), numbers(clock, 3)) else {
        return Err(bad());
    };
    let (year, month, day) = (ymd[0], ymd[1], ymd[2]);
    let (hour, minute, second) = (hms[0], hms[1], hms[2]);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || !(0..24).contains(&hour)
        || !(0..60).contains(&minute)
        || !(0..61).contains(&second)
        || fraction.len() > 6
        || !fraction.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let micros: i64 = format!("{fraction:0<6}").parse().map_err(|_| bad())?;
    // Days-from-civil (Howard Hinnant's algorithm), the inverse of `format_time`'s.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second;
    u64::try_from(seconds)
        .ok()
        .and_then(|s| s.checked_mul(1_000_000))
        .and_then(|us| us.checked_add(micros as u64))
        .ok_or_else(bad)
}

#[cfg(test)]
mod time_tests {
    use super::*;

    #[test]
    fn parse_time_inverts_format_time() {
        for us in [
            0,
            1,
            1_700_000_000_123_456,
            951_782_400_000_000,
            4_102_444_800_999_999,
        ] {
            assert_eq!(parse_time(&format_time(us)).expect("parse"), us, "{us}");
        }
        assert_eq!(
            parse_time("2026-11-30T15:00:00Z").expect("parse"),
            1_796_050_800_000_000
        );
        assert_eq!(
            parse_time("1796050800000000").expect("parse"),
            1_796_050_800_000_000
        );
        for bad in [
            "",
            "2026-11-30",
            "2026-13-01T00:00:00Z",
            "2026-11-30T15:00:00+01:00",
            "1969-12-31T23:59:59Z",
            "x",
        ] {
            assert!(parse_time(bad).is_err(), "{bad:?}");
        }
    }
}
