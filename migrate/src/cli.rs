//! Command-line pieces shared by `maif` and `maif-migrate`: the S3 flags, key and public-key
//! parsing, progress bars, logging, and the migration command itself (`maif migrate` and
//! `maif-migrate` take the same arguments and run the same code).
//!
//! They live in this library, not in either binary, because `maif` (package `maif-cli`)
//! depends on this crate and `maif-migrate` is built from it, so this is the one place both
//! can reach.

use std::io::IsTerminal as _;
use std::path::PathBuf;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use maif_store::SigningKey;
use maif_store::location::{Location, S3Settings};

use crate::error::MigrateError;
use crate::hmac::LegacyKey;
use crate::migrate::{MigrateOptions, migrate};
use crate::model::SourceKind;
use crate::source;

pub use maif_store::store::DEFAULT_CONCURRENCY;

/// Where a location names S3 (`s3://bucket/prefix`): settings that override the standard AWS
/// environment variables and profiles.
#[derive(Debug, Args, Clone, Default)]
pub struct S3Args {
    /// S3 endpoint URL (default: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, the profile, else AWS).
    #[arg(long, global = true, value_name = "URL")]
    pub endpoint: Option<String>,
    /// S3 region (default: AWS_REGION, the profile, else us-east-1).
    #[arg(long, global = true)]
    pub region: Option<String>,
    /// Use virtual-hosted-style S3 requests instead of path style.
    #[arg(long, global = true)]
    pub virtual_hosted_style: bool,
    /// Object requests in flight per operation (default 16).
    #[arg(long, global = true, value_name = "N")]
    pub concurrency: Option<usize>,
}

impl S3Args {
    pub fn settings(&self) -> S3Settings {
        S3Settings {
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            virtual_hosted_style: self.virtual_hosted_style,
            concurrency: self.concurrency,
        }
    }
}

/// Logs to standard error, filtered by `MAIF_LOG` (default: warnings and errors).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MAIF_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
}

/// What a progress bar counts.
#[derive(Debug, Clone, Copy)]
pub enum Unit {
    Bytes,
    Items,
}

/// A progress bar on standard error, or a hidden one when `quiet` or when standard error is
/// not a terminal (so scripts and logs never see bar redraws). `len` 0 grows as work is
/// found.
pub fn progress_bar(quiet: bool, len: u64, unit: Unit, message: &'static str) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let template = match unit {
        Unit::Bytes => "{msg:>10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        Unit::Items => "{msg:>10} [{bar:30}] {pos}/{len} {per_sec} eta {eta}",
    };
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(message);
    bar
}

/// A `--public-key` argument: 64 hex digits (surrounding whitespace ignored).
pub fn parse_public_key(text: &str) -> Result<[u8; 32], String> {
    hex::decode(text.trim())
        .ok()
        .and_then(|bytes| <[u8; 32]>::try_from(bytes.as_slice()).ok())
        .ok_or_else(|| format!("--public-key {text:?}: expected 64 hex digits"))
}

/// A signing key file (PKCS#8 PEM, as `maif keygen` or `openssl genpkey -algorithm ed25519`
/// writes it).
pub fn read_signing_key(path: &std::path::Path) -> Result<SigningKey, MigrateError> {
    SigningKey::read_pem_file(path).map_err(|e| MigrateError::Usage(e.to_string()))
}

/// The arguments of `maif migrate` and `maif-migrate`.
#[derive(Debug, Args, Clone)]
pub struct MigrateArgs {
    /// The legacy artifact: a local file (binary_format, block_storage, unified, or Python
    /// SDK 2.1; detected from its bytes) or an object-store prefix holding a legacy S3
    /// layout (s3://bucket/prefix/).
    pub source: String,
    /// Where to write the canonical artifact (not needed with --dry-run): a file path,
    /// s3://bucket/prefix, file:///dir or memory://name/prefix.
    pub destination: Option<String>,
    /// Signing key (PEM) for the migrated artifact (`maif keygen` makes one).
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// A legacy HMAC key, repeatable: LABEL=PATH (32 raw bytes). Every key is tried on every
    /// signature, since legacy writers label every session key "default".
    #[arg(long = "legacy-key", value_name = "LABEL=PATH")]
    pub legacy_keys: Vec<String>,
    /// Pin the Ed25519 public key (64 hex digits) a Python SDK file must be signed by.
    #[arg(long, value_name = "HEX")]
    pub public_key: Option<String>,
    /// Force the input kind instead of detecting it.
    #[arg(long = "from", value_enum)]
    pub from: Option<SourceKind>,
    /// Write the full per-block report (JSON) here.
    #[arg(long, value_name = "PATH")]
    pub report: Option<PathBuf>,
    /// Read and check everything, write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as JSON on stdout instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    /// Agent id of the migrated artifact.
    #[arg(long, default_value = "maif-migrate")]
    pub agent_id: String,
}

/// A `--legacy-key LABEL=PATH` argument.
pub fn legacy_key(spec: &str) -> Result<LegacyKey, MigrateError> {
    let (label, path) = spec.split_once('=').ok_or_else(|| {
        MigrateError::Usage(format!("--legacy-key {spec:?}: expected LABEL=PATH"))
    })?;
    let key = std::fs::read(path).map_err(|source| MigrateError::Io {
        path: path.to_owned(),
        source,
    })?;
    if key.len() != 32 {
        let hint = if key
            .iter()
            .all(|b| b.is_ascii_hexdigit() || b.is_ascii_whitespace())
        {
            " (it looks like hex text: legacy session keys are 32 raw bytes; decode it first, e.g. `xxd -r -p`)"
        } else {
            ""
        };
        return Err(MigrateError::Usage(format!(
            "--legacy-key {label}: {path} holds {} bytes, expected the 32 raw bytes of an HMAC-SHA256 session key{hint}",
            key.len()
        )));
    }
    Ok(LegacyKey {
        label: label.to_owned(),
        key,
    })
}

/// Migration never writes to its source: a destination at or under the source prefix (or
/// the source file itself) is refused.
fn refuse_inside_source(source: &str, destination: &str) -> Result<(), MigrateError> {
    let (Ok(source_location), Ok(destination_location)) =
        (Location::parse(source), Location::parse(destination))
    else {
        return Ok(());
    };
    let inside = match (&source_location, &destination_location) {
        (Location::File(a), Location::File(b)) => {
            a == b
                || std::fs::canonicalize(a)
                    .ok()
                    .zip(std::fs::canonicalize(b).ok())
                    .is_some_and(|(a, b)| a == b)
        }
        (
            Location::Objects {
                store: a,
                prefix: pa,
            },
            Location::Objects {
                store: b,
                prefix: pb,
            }
            | Location::ObjectFile { store: b, key: pb },
        ) => a == b && (pa.is_empty() || pb == pa || pb.starts_with(&format!("{pa}/"))),
        _ => false,
    };
    if inside {
        return Err(MigrateError::Usage(format!(
            "destination {destination} is inside the source {source}; migration never writes to its source"
        )));
    }
    Ok(())
}

/// Runs a migration as the command line asks and prints its summary (or report). Returns
/// the exit status: 0 everything migrated and verified (or unverifiable for want of a key),
/// 1 something lost, dangling, or failed verification.
pub async fn run_migrate(args: &MigrateArgs, settings: &S3Settings) -> Result<u8, MigrateError> {
    let concurrency = settings.concurrency.unwrap_or(DEFAULT_CONCURRENCY);
    let settings = S3Settings {
        concurrency: Some(concurrency),
        ..settings.clone()
    };
    let legacy_keys = args
        .legacy_keys
        .iter()
        .map(|spec| legacy_key(spec))
        .collect::<Result<Vec<_>, _>>()?;
    let pinned = args
        .public_key
        .as_deref()
        .map(parse_public_key)
        .transpose()
        .map_err(MigrateError::Usage)?;
    let key = match (&args.key, args.dry_run) {
        (Some(path), _) => Some(read_signing_key(path)?),
        (None, true) => None,
        (None, false) => {
            return Err(MigrateError::Usage(
                "--key is required to sign the migrated artifact (or use --dry-run)".into(),
            ));
        }
    };
    let destination = match (&args.destination, args.dry_run) {
        (Some(text), false) => {
            refuse_inside_source(&args.source, text)?;
            Some(Location::parse(text)?.store_with(&settings)?)
        }
        (None, false) => {
            return Err(MigrateError::Usage(
                "a DESTINATION is required (or use --dry-run)".into(),
            ));
        }
        (_, true) => None,
    };

    let quiet = args.quiet || args.json;
    let source = source::open(&args.source, &settings).await?;
    let scan = progress_bar(quiet, 0, Unit::Items, "metadata");
    let scan_tick = scan.clone();
    let artifact = source::read(&source, args.from, pinned, &move |n| {
        scan_tick.inc_length(n);
        scan_tick.inc(n);
    })
    .await?;
    scan.finish_and_clear();

    let progress = progress_bar(quiet, artifact.blocks.len() as u64, Unit::Items, "blocks");
    let tick = progress.clone();
    let options = MigrateOptions {
        key,
        legacy_keys,
        dry_run: args.dry_run,
        concurrency,
        agent_id: args.agent_id.clone(),
        progress: Box::new(move |n| tick.inc(n)),
    };
    let report = migrate(artifact, source::prefix(&source), destination, options).await?;
    progress.finish_and_clear();

    if let Some(path) = &args.report {
        let json = serde_json::to_vec_pretty(&report)
            .map_err(|e| MigrateError::Usage(format!("report: {e}")))?;
        std::fs::write(path, json).map_err(|source| MigrateError::Io {
            path: path.display().to_string(),
            source,
        })?;
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print!("{}", report.summary());
    }
    Ok(u8::try_from(report.exit_code()).unwrap_or(1))
}

/// Prints a failed migration's error (as `program`) and returns its exit status: 3 when the
/// last commit's outcome is unknown (re-running resumes and settles it), else 2.
pub fn migrate_failed(program: &str, error: &MigrateError) -> u8 {
    eprintln!("{program}: {error}");
    if matches!(
        error,
        MigrateError::Store(maif_store::Error::Store(
            maif_store::store::StoreError::Unknown { .. }
        ))
    ) {
        // A re-run resumes, so it is also the command that settles the outcome.
        eprintln!(
            "{program}: the last commit may or may not have landed; run the same command again: it resumes and reports the outcome"
        );
        return 3;
    }
    2
}
