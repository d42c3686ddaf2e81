//! `maif-migrate`: legacy MAIF (S3 layouts, local files, Python SDK files) into canonical MAIF.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use maif_migrate::hmac::LegacyKey;
use maif_migrate::migrate::{MigrateOptions, migrate};
use maif_migrate::model::SourceKind;
use maif_migrate::{MigrateError, source};
use maif_store::SigningKey;
use maif_store::location::{Location, S3Settings};

/// Migrate a legacy MAIF artifact into canonical MAIF (3.1).
///
/// SOURCE is a legacy local file (binary_format, block_storage, unified, or Python SDK 2.1;
/// detected from its bytes) or an object-store prefix holding a legacy S3 layout
/// (s3://bucket/prefix/). DESTINATION is any maif location: a file path, s3://bucket/prefix,
/// file:///dir or memory://name/prefix. The source is never written. Re-running a migration
/// into the same destination resumes it.
///
/// Exit status: 0 everything migrated and verified (or unverifiable for want of a key),
/// 1 something lost, dangling, or failed verification, 2 usage or I/O error.
#[derive(Debug, Parser)]
#[command(name = "maif-migrate", version, about, long_about)]
struct Cli {
    /// The legacy artifact.
    source: String,
    /// Where to write the canonical artifact (not needed with --dry-run).
    destination: Option<String>,
    /// Signing key (PEM) for the migrated artifact (`maif keygen` makes one).
    #[arg(long)]
    key: Option<PathBuf>,
    /// A legacy HMAC key, repeatable: LABEL=PATH (32 raw bytes). Every key is tried on every
    /// signature, since legacy writers label every session key "default".
    #[arg(long = "legacy-key", value_name = "LABEL=PATH")]
    legacy_keys: Vec<String>,
    /// Pin the Ed25519 public key (64 hex chars) a Python SDK file must be signed by.
    #[arg(long, value_name = "HEX")]
    public_key: Option<String>,
    /// Force the input kind instead of detecting it.
    #[arg(long = "from", value_enum)]
    from: Option<SourceKind>,
    /// Write the full per-block report (JSON) here.
    #[arg(long, value_name = "PATH")]
    report: Option<PathBuf>,
    /// Read and check everything, write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the report as JSON on stdout instead of the summary.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
    /// Agent id of the migrated artifact.
    #[arg(long, default_value = "maif-migrate")]
    agent_id: String,
    /// S3 endpoint URL (default: AWS_ENDPOINT_URL, else AWS).
    #[arg(long, value_name = "URL")]
    endpoint: Option<String>,
    /// S3 region (default: AWS_REGION, else us-east-1).
    #[arg(long)]
    region: Option<String>,
    /// Use virtual-hosted-style S3 requests instead of path style.
    #[arg(long)]
    virtual_hosted_style: bool,
    /// Object requests in flight.
    #[arg(long, value_name = "N", default_value_t = 16)]
    concurrency: usize,
}

fn legacy_key(spec: &str) -> Result<LegacyKey, MigrateError> {
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

fn public_key(text: &str) -> Result<[u8; 32], MigrateError> {
    hex::decode(text.trim())
        .ok()
        .and_then(|bytes| <[u8; 32]>::try_from(bytes.as_slice()).ok())
        .ok_or_else(|| {
            MigrateError::Usage(format!("--public-key {text:?}: expected 64 hex characters"))
        })
}

fn bar(quiet: bool, message: &'static str) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{msg:>10} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(message);
    bar
}

async fn run(cli: Cli) -> Result<i32, MigrateError> {
    let settings = S3Settings {
        endpoint: cli.endpoint.clone(),
        region: cli.region.clone(),
        virtual_hosted_style: cli.virtual_hosted_style,
        concurrency: Some(cli.concurrency),
    };
    let legacy_keys = cli
        .legacy_keys
        .iter()
        .map(|spec| legacy_key(spec))
        .collect::<Result<Vec<_>, _>>()?;
    let pinned = cli.public_key.as_deref().map(public_key).transpose()?;
    let key = match (&cli.key, cli.dry_run) {
        (Some(path), _) => {
            Some(SigningKey::read_pem_file(path).map_err(|e| MigrateError::Usage(e.to_string()))?)
        }
        (None, true) => None,
        (None, false) => {
            return Err(MigrateError::Usage(
                "--key is required to sign the migrated artifact (or use --dry-run)".into(),
            ));
        }
    };
    let destination = match (&cli.destination, cli.dry_run) {
        (Some(text), false) => {
            refuse_inside_source(&cli.source, text)?;
            Some(Location::parse(text)?.store_with(&settings)?)
        }
        (None, false) => {
            return Err(MigrateError::Usage(
                "a DESTINATION is required (or use --dry-run)".into(),
            ));
        }
        (_, true) => None,
    };

    let source = source::open(&cli.source, &settings).await?;
    let scan = bar(cli.quiet || cli.json, "metadata");
    if source::prefix(&source).is_some() {
        scan.set_length(0);
    }
    let scan_tick = scan.clone();
    let artifact = source::read(&source, cli.from, pinned, &move |n| {
        scan_tick.inc_length(n);
        scan_tick.inc(n);
    })
    .await?;
    scan.finish_and_clear();

    let progress = bar(cli.quiet || cli.json, "blocks");
    progress.set_length(artifact.blocks.len() as u64);
    let tick = progress.clone();
    let options = MigrateOptions {
        key,
        legacy_keys,
        dry_run: cli.dry_run,
        concurrency: cli.concurrency,
        agent_id: cli.agent_id.clone(),
        progress: Box::new(move |n| tick.inc(n)),
    };
    let report = migrate(artifact, source::prefix(&source), destination, options).await?;
    progress.finish_and_clear();

    if let Some(path) = &cli.report {
        let json = serde_json::to_vec_pretty(&report)
            .map_err(|e| MigrateError::Usage(format!("report: {e}")))?;
        std::fs::write(path, json).map_err(|source| MigrateError::Io {
            path: path.display().to_string(),
            source,
        })?;
    }
    if cli.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print!("{}", report.summary());
    }
    Ok(report.exit_code())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("MAIF_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("maif-migrate: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("maif-migrate: {e}");
            if matches!(
                &e,
                maif_migrate::MigrateError::Store(maif_store::Error::Store(
                    maif_store::store::StoreError::Unknown { .. }
                ))
            ) {
                // A re-run resumes, so it is also the command that settles the outcome.
                eprintln!(
                    "maif-migrate: the last commit may or may not have landed; run the same command again: it resumes and reports the outcome"
                );
                return ExitCode::from(3);
            }
            ExitCode::from(2)
        }
    }
}
