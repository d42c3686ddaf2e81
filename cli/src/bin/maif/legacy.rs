//! `ls`, `cat`, `history`, `inspect` and `verify` on a legacy source read in place
//! (Python SDK 2.1 files, the three legacy local formats, S3 layouts A and B), through
//! `maif_migrate::inplace`: the same readers and checks as `maif migrate`, nothing written.
//!
//! The variant is decided by content. A local file is looked at before it is opened (its
//! first bytes are enough); an object-store location is opened as canonical MAIF first and
//! only looked at for a legacy layout when that fails, so a canonical `cat` on S3 costs no
//! extra request.

use std::io::Write as _;
use std::process::ExitCode;

use maif_migrate::MigrateError;
use maif_migrate::cli::legacy_key;
use maif_migrate::inplace::{LegacyBlockInfo, LegacyOptions, LegacyView, Variant, detect};
use maif_migrate::report::Verdict;
use maif_store::artifact::{format_time, parse_id, parse_time};
use maif_store::format::FourCC;
use maif_store::location::{Location, S3Settings};
use serde_json::{Map, Value, json};

use super::Command;
use super::commands::print_json;

/// The location a read command names, or `None` for a command that is not a read.
fn read_location(command: &Command) -> Option<&str> {
    match command {
        Command::Ls { location, .. }
        | Command::Cat { location, .. }
        | Command::History { location, .. }
        | Command::Inspect { location, .. }
        | Command::Verify { location, .. } => Some(location),
        _ => None,
    }
}

/// Whether `command` reads a local file that holds a legacy variant (decided from its
/// bytes before anything else opens it).
pub async fn is_legacy_file(command: &Command, settings: &S3Settings) -> bool {
    let Some(location) = read_location(command) else {
        return false;
    };
    matches!(Location::parse(location), Ok(Location::File(_)))
        && matches!(detect(location, settings).await, Ok(Variant::Legacy(_)))
}

/// Whether `command` reads an object-store location that holds a legacy layout: asked only
/// after opening it as canonical MAIF failed.
pub async fn is_legacy_objects(command: &Command, settings: &S3Settings) -> bool {
    let Some(location) = read_location(command) else {
        return false;
    };
    !matches!(Location::parse(location), Ok(Location::File(_)))
        && matches!(detect(location, settings).await, Ok(Variant::Legacy(_)))
}

/// The exit status of a failed legacy read: 1 when the source is damaged, else 2.
pub fn exit_code(error: &MigrateError) -> u8 {
    super::commands::migrate_exit_code(error)
}

fn usage(text: String) -> MigrateError {
    MigrateError::Usage(text)
}

fn store_error(error: maif_store::Error) -> MigrateError {
    MigrateError::Store(error)
}

/// Prints a note on standard error that the source is legacy, so scripts reading standard
/// output see the same shape as for a canonical artifact.
fn note(view: &LegacyView) {
    eprintln!(
        "maif: {} is a {}, read in place (nothing written); verdicts are the legacy checks'. `maif migrate` makes it canonical.",
        view.source(),
        maif_migrate::inplace::kind_description(view.kind())
    );
}

/// The caller's metadata of a legacy block, without the `legacy` evidence (shown by
/// `--json` and `inspect`).
fn caller_metadata(block: &LegacyBlockInfo) -> Map<String, Value> {
    block
        .metadata
        .iter()
        .filter(|(k, _)| k.as_str() != "legacy")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn metadata_matches(block: &LegacyBlockInfo, key: &str, value: &str) -> bool {
    match block.metadata.get(key) {
        Some(Value::String(s)) => s == value,
        Some(other) => serde_json::to_string(other).is_ok_and(|text| text == value),
        None => false,
    }
}

/// Runs a read command on a legacy source.
pub async fn run(command: Command, settings: &S3Settings) -> Result<ExitCode, MigrateError> {
    let open = |location: String, options: LegacyOptions| async move {
        let view = maif_migrate::inplace::open_legacy(&location, settings, options).await?;
        note(&view);
        Ok::<_, MigrateError>(view)
    };
    match command {
        Command::Ls {
            location,
            block_type,
            meta,
            latest,
            digest,
            since,
            until,
            agent,
            json,
        } => {
            let view = open(location, LegacyOptions::default()).await?;
            let mut blocks: Vec<&LegacyBlockInfo> = view.blocks().iter().collect();
            if latest {
                let newest: std::collections::HashMap<[u8; 16], u32> =
                    blocks.iter().fold(Default::default(), |mut m, b| {
                        let v = b.version.unwrap_or(0);
                        let e = m.entry(b.block_id).or_insert(v);
                        *e = (*e).max(v);
                        m
                    });
                blocks.retain(|b| newest.get(&b.block_id) == Some(&b.version.unwrap_or(0)));
            }
            if let Some(block_type) = block_type {
                let wanted = FourCC::parse(&block_type).map_err(usage)?;
                blocks.retain(|b| b.block_type == wanted);
            }
            if let Some(meta) = meta {
                let (key, value) = meta
                    .split_once('=')
                    .ok_or_else(|| usage(format!("--meta {meta:?}: expected KEY=VALUE")))?;
                blocks.retain(|b| metadata_matches(b, key, value));
            }
            let since = since
                .as_deref()
                .map(parse_time)
                .transpose()
                .map_err(store_error)?;
            let until = until
                .as_deref()
                .map(parse_time)
                .transpose()
                .map_err(store_error)?;
            blocks.retain(|b| {
                since.is_none_or(|t| b.timestamp_us >= t)
                    && until.is_none_or(|t| b.timestamp_us <= t)
            });
            if let Some(agent) = agent {
                // As for a canonical artifact: the block's own `agent_id`, else the source's
                // agent (the SDK file's agent id; legacy files without one have none).
                let source_agent = view.artifact().agent_id.clone();
                blocks.retain(|b| match b.metadata.get("agent_id") {
                    Some(_) => metadata_matches(b, "agent_id", &agent),
                    None => source_agent.as_deref() == Some(agent.as_str()),
                });
            }
            if let Some(digest) = digest {
                let wanted = digest.trim().to_ascii_lowercase();
                if wanted.len() != 64 || !wanted.bytes().all(|c| c.is_ascii_hexdigit()) {
                    return Err(usage(format!(
                        "--digest {digest:?}: expected 64 hex digits"
                    )));
                }
                blocks.retain(|b| b.sha256.as_deref() == Some(wanted.as_str()));
            }
            if json {
                print_json(&Value::Array(blocks.iter().map(|b| b.ls_row()).collect()));
            } else {
                println!(
                    "{:<36}  {:<4}  {:>3}  {:>10}  {:<27}  {:<12}  {:<20}  METADATA",
                    "ID", "TYPE", "VER", "SIZE", "TIMESTAMP", "VERDICT", "STATUS"
                );
                for b in blocks {
                    let metadata = Value::Object(caller_metadata(b)).to_string();
                    println!(
                        "{:<36}  {:<4}  {:>3}  {:>10}  {:<27}  {:<12}  {:<20}  {}",
                        b.id(),
                        b.block_type.to_string(),
                        b.version.map_or("-".to_string(), |v| v.to_string()),
                        b.size.map_or("-".to_string(), |s| s.to_string()),
                        format_time(b.timestamp_us),
                        json!(b.verdict).as_str().unwrap_or(""),
                        json!(b.status).as_str().unwrap_or(""),
                        if metadata == "{}" { "" } else { &metadata }
                    );
                }
            }
        }
        Command::Cat {
            location,
            block_id,
            index,
            version,
            raw: _,
        } => {
            // A legacy payload has no canonical framing: --raw prints the same bytes.
            let view = open(location, LegacyOptions::default()).await?;
            let (id, version) = match (block_id, index) {
                (Some(id), _) => (parse_id(&id).map_err(store_error)?, version),
                (None, Some(position)) => {
                    let blocks = view.blocks();
                    let block = blocks.get(position as usize).ok_or_else(|| {
                        usage(format!(
                            "--index {position}: the source holds {} blocks (0 to {})",
                            blocks.len(),
                            blocks.len().saturating_sub(1)
                        ))
                    })?;
                    let version = block.version.ok_or_else(|| {
                        usage(format!(
                            "--index {position}: block {} has no payload to read ({})",
                            block.id(),
                            json!(block.status).as_str().unwrap_or("")
                        ))
                    })?;
                    (block.block_id, Some(version))
                }
                (None, None) => return Err(usage("give a block id or --index N".into())),
            };
            let payload = view.payload(&id, version).await?;
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(&payload)
                .and_then(|()| stdout.flush())
                .map_err(|source| MigrateError::Io {
                    path: "standard output".into(),
                    source,
                })?;
        }
        Command::History {
            location,
            block_id,
            json,
        } => {
            let view = open(location, LegacyOptions::default()).await?;
            let id = parse_id(&block_id).map_err(store_error)?;
            let rows: Vec<Value> = view
                .blocks()
                .iter()
                .filter(|b| b.block_id == id)
                .map(|b| {
                    json!({
                        "version": b.version,
                        "timestamp": format_time(b.timestamp_us),
                        "size": b.size,
                        "payload_sha256": b.sha256,
                        "position": b.position,
                        "status": b.status,
                        "verdict": b.verdict,
                    })
                })
                .collect();
            if rows.is_empty() {
                return Err(MigrateError::Store(maif_store::Error::UnknownBlock {
                    block_id,
                }));
            }
            if json {
                print_json(&Value::Array(rows));
            } else {
                println!(
                    "{:>3}  {:<27}  {:>10}  {:<64}  {:<12}  POSITION",
                    "VER", "TIMESTAMP", "SIZE", "PAYLOAD SHA-256", "VERDICT"
                );
                for row in rows {
                    println!(
                        "{:>3}  {:<27}  {:>10}  {:<64}  {:<12}  {}",
                        row["version"],
                        row["timestamp"].as_str().unwrap_or(""),
                        row["size"],
                        row["payload_sha256"].as_str().unwrap_or("-"),
                        row["verdict"].as_str().unwrap_or(""),
                        row["position"]
                    );
                }
            }
        }
        Command::Inspect { location, json: _ } => {
            // The description is a structure; it prints as JSON either way.
            let view = open(location, LegacyOptions::default()).await?;
            print_json(&view.inspect());
        }
        Command::Verify {
            location,
            quick: _,
            strict: _,
            public_key,
            legacy_keys,
            json,
        } => {
            let options = LegacyOptions {
                legacy_keys: legacy_keys
                    .iter()
                    .map(|spec| legacy_key(spec))
                    .collect::<Result<_, _>>()?,
                public_key: public_key
                    .as_deref()
                    .map(maif_migrate::cli::parse_public_key)
                    .transpose()
                    .map_err(usage)?,
                ..LegacyOptions::default()
            };
            let view = open(location, options).await?;
            let verification = view.verify();
            if json {
                print_json(&serde_json::to_value(&verification).unwrap_or_default());
            } else {
                let c = &verification.counts;
                let verdict = match verification.verdict {
                    Verdict::Verified => "verified",
                    Verdict::Unverifiable => "unverifiable",
                    Verdict::Failed => "FAILED",
                };
                println!(
                    "{verdict} ({}, legacy checks): {} blocks: {} verified, {} unverifiable, {} failed",
                    maif_migrate::inplace::kind_description(verification.kind),
                    verification.blocks.len(),
                    c.verified,
                    c.unverifiable,
                    c.failed
                );
                for problem in &verification.problems {
                    println!("  {problem}");
                }
                // What kept a source without failures from being verified.
                for check in &verification.source_checks {
                    if let maif_migrate::model::Outcome::Unverifiable(why) = &check.outcome {
                        println!("  unverifiable: {}: {why}", check.check);
                    }
                }
                let unverifiable_blocks = verification
                    .blocks
                    .iter()
                    .filter(|b| b.verdict == Verdict::Unverifiable)
                    .count();
                if unverifiable_blocks > 0 {
                    println!(
                        "  {unverifiable_blocks} block(s) unverifiable: `maif ls` lists each block's verdict, `--json` its checks"
                    );
                }
            }
            return Ok(ExitCode::from(verification.exit_code));
        }
        other => {
            return Err(usage(format!("internal: {other:?} is not a read command")));
        }
    }
    Ok(ExitCode::SUCCESS)
}
