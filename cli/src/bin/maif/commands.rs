//! The subcommands.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use maif_store::artifact::{
    self, ArtifactReader, ArtifactWriter, BlockRef, CreateOptions, NewBlock, VerifyOptions,
    format_id, parse_id, recover_file,
};
use maif_store::format::FourCC;
use maif_store::format::digest::sha256;
use maif_store::format::payload::content_of;
use maif_store::location::{Location, S3Settings};
use maif_store::store::BlockStore;
use maif_store::{Error, SigningKey};
use serde_json::{Map, Value, json};

use maif_migrate::cli::{Unit, progress_bar};

use super::{AddArgs, Command, output};

/// 1 for "the bytes are not what they claim to be", 2 for everything else (a version this
/// build does not read is not damage).
pub fn exit_code(error: &Error) -> u8 {
    if error.is_unsupported_version() {
        return 2;
    }
    match error {
        Error::Store(maif_store::store::StoreError::Unknown { .. }) => 3,
        Error::Verification(_)
        | Error::Format { .. }
        | Error::Store(
            maif_store::store::StoreError::Corrupt { .. }
            | maif_store::store::StoreError::Torn { .. }
            | maif_store::store::StoreError::Format { .. },
        ) => 1,
        _ => 2,
    }
}

pub fn store_at(location: &str, settings: &S3Settings) -> Result<Arc<dyn BlockStore>, Error> {
    Location::parse(location)?.store_with(settings)
}

pub fn read_key(path: &Path) -> Result<SigningKey, Error> {
    Ok(SigningKey::read_pem_file(path)?)
}

fn parse_pairs(pairs: &[String]) -> Result<BTreeMap<String, String>, Error> {
    pairs
        .iter()
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| Error::Invalid(format!("metadata {pair:?}: expected KEY=VALUE")))
        })
        .collect()
}

/// The payload of `block` as `cat` prints it: without its typed framing.
fn payload_of(block: &maif_store::artifact::Block) -> Result<Vec<u8>, Error> {
    content_of(block.header.block_type, &block.data).map_err(|e| Error::Format {
        context: format!("block {} payload", block.info.id()),
        source: e,
    })
}

/// A duration argument: a whole number and a unit, `s`, `m`, `h` or `d` (`0` alone is zero).
fn parse_duration(text: &str) -> Result<std::time::Duration, Error> {
    let bad = || {
        Error::Invalid(format!(
            "duration {text:?}: expected a whole number and a unit (s, m, h or d), e.g. 36h"
        ))
    };
    if text == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    let split = text.len().checked_sub(1).ok_or_else(bad)?;
    let (number, unit) = text.split_at_checked(split).ok_or_else(bad)?;
    let number: u64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    number
        .checked_mul(seconds)
        .map(std::time::Duration::from_secs)
        .ok_or_else(bad)
}

/// The exit status for a failed migration-library command: what the store error means
/// ([`exit_code`]), 1 for a legacy source or migrated artifact that is damaged, else 2.
pub fn migrate_exit_code(error: &maif_migrate::MigrateError) -> u8 {
    use maif_migrate::MigrateError;
    match error {
        MigrateError::Store(e) => exit_code(e),
        MigrateError::Malformed { .. } => 1,
        _ => 2,
    }
}

/// `maif export MIGRATED DESTINATION --original`.
pub async fn export(
    migrated: &str,
    destination: &str,
    original: bool,
    overwrite: bool,
    json: bool,
    settings: &S3Settings,
) -> Result<(), maif_migrate::MigrateError> {
    if !original {
        return Err(maif_migrate::MigrateError::Usage(
            "maif export re-creates the legacy original of a migrated artifact: pass --original \
             (to copy a canonical artifact, use maif convert)"
                .into(),
        ));
    }
    let options = maif_migrate::export::ExportOptions {
        overwrite,
        concurrency: settings
            .concurrency
            .unwrap_or(maif_migrate::cli::DEFAULT_CONCURRENCY),
    };
    let summary = maif_migrate::export::export_original(
        store_at(migrated, settings)?,
        destination,
        settings,
        &options,
    )
    .await?;
    if json {
        print_json(&json!(summary));
    } else {
        println!("{summary}");
    }
    Ok(())
}

/// A `--public-key` argument: 64 hex digits.
pub fn parse_public_key(text: &str) -> Result<[u8; 32], Error> {
    maif_migrate::cli::parse_public_key(text).map_err(Error::Invalid)
}

pub fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

pub async fn run(command: Command, settings: &S3Settings) -> Result<ExitCode, Error> {
    match command {
        Command::Keygen { path, json } => {
            let key = SigningKey::generate()?;
            key.write_pem_file(&path)?;
            let public = hex::encode(key.public_key());
            if json {
                print_json(&json!({"path": path.display().to_string(), "public_key": public}));
            } else {
                println!("{public}");
            }
        }
        Command::Create {
            location,
            key,
            agent,
            meta,
            content_type,
            json,
        } => {
            let store = store_at(&location, settings)?;
            let options = CreateOptions {
                agent_id: agent,
                content_type,
                custom: parse_pairs(&meta)?,
                ..CreateOptions::default()
            };
            let key = read_key(&key)?;
            let public = hex::encode(key.public_key());
            ArtifactWriter::create(store, key, options).await?;
            if json {
                print_json(&json!({"location": location, "public_key": public}));
            } else {
                println!("created {location}");
            }
        }
        Command::Add(args) => add(args, settings).await?,
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
            let reader = ArtifactReader::open(store_at(&location, settings)?).await?;
            let mut blocks = if latest {
                reader.latest_blocks().await?
            } else {
                reader.blocks().await?.to_vec()
            };
            if let Some(block_type) = block_type {
                let wanted = FourCC::parse(&block_type).map_err(Error::Invalid)?;
                blocks.retain(|b| b.entry.block_type == wanted);
            }
            if let Some(meta) = meta {
                let (key, value) = meta.split_once('=').ok_or_else(|| {
                    Error::Invalid(format!("--meta {meta:?}: expected KEY=VALUE"))
                })?;
                let matching: std::collections::HashSet<u64> = reader
                    .find_by_metadata(key, value)
                    .await?
                    .iter()
                    .map(|b| b.position)
                    .collect();
                blocks.retain(|b| matching.contains(&b.position));
            }
            let since = since.as_deref().map(artifact::parse_time).transpose()?;
            let until = until.as_deref().map(artifact::parse_time).transpose()?;
            blocks.retain(|b| {
                since.is_none_or(|t| b.entry.timestamp_us >= t)
                    && until.is_none_or(|t| b.entry.timestamp_us <= t)
            });
            if let Some(agent) = agent {
                let artifact_agent = reader.metadata().map(|m| m.agent_id).unwrap_or_default();
                let metadata = reader.read_metadata_many(&blocks).await?;
                let keep: Vec<bool> = metadata
                    .iter()
                    .map(|(_, m)| match m.get("agent_id") {
                        Some(Value::String(own)) => *own == agent,
                        _ => artifact_agent == agent,
                    })
                    .collect();
                let mut keep = keep.into_iter();
                blocks.retain(|_| keep.next().unwrap_or(false));
            }
            if let Some(digest) = digest {
                let wanted = hex::decode(digest.trim())
                    .ok()
                    .filter(|d| d.len() == 32)
                    .ok_or_else(|| {
                        Error::Invalid(format!("--digest {digest:?}: expected 64 hex digits"))
                    })?;
                let mut matching = Vec::new();
                for info in blocks {
                    // The record digest needs no read; the payload digest reads the block.
                    if info.entry.digest[..] == wanted[..]
                        || sha256(&payload_of(&reader.read(&info).await?)?)[..] == wanted[..]
                    {
                        matching.push(info);
                    }
                }
                blocks = matching;
            }
            output::list(&reader, &blocks, json).await?;
        }
        Command::Cat {
            location,
            block_id,
            index,
            version,
            raw,
        } => {
            let reader = ArtifactReader::open(store_at(&location, settings)?).await?;
            let block = match (block_id, index) {
                (Some(id), _) => reader.get(&parse_id(&id)?, version).await?,
                (None, Some(position)) => {
                    let blocks = reader.blocks().await?;
                    let info = blocks.get(position as usize).ok_or_else(|| {
                        Error::Invalid(format!(
                            "--index {position}: the artifact holds {} records (0 to {})",
                            blocks.len(),
                            blocks.len().saturating_sub(1)
                        ))
                    })?;
                    reader.read(info).await?
                }
                (None, None) => {
                    return Err(Error::Invalid("give a block id or --index N".into()));
                }
            };
            let bytes = if raw {
                block.data.to_vec()
            } else {
                payload_of(&block)?
            };
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(&bytes)
                .and_then(|()| stdout.flush())
                .map_err(|e| Error::Invalid(format!("writing to stdout: {e}")))?;
        }
        Command::History {
            location,
            block_id,
            json,
        } => {
            let reader = ArtifactReader::open(store_at(&location, settings)?).await?;
            let id = parse_id(&block_id)?;
            let mut rows = Vec::new();
            for info in reader.versions(&id).await? {
                let block = reader.read(&info).await?;
                rows.push(json!({
                    "version": info.version,
                    "timestamp": artifact::format_time(info.entry.timestamp_us),
                    "size": block.data.len(),
                    "digest": hex::encode(info.entry.digest),
                    "payload_sha256": hex::encode(sha256(&payload_of(&block)?)),
                    "position": info.position,
                }));
            }
            if json {
                print_json(&Value::Array(rows));
            } else {
                println!(
                    "{:>3}  {:<27}  {:>10}  {:<64}  POSITION",
                    "VER", "TIMESTAMP", "SIZE", "RECORD DIGEST"
                );
                for row in rows {
                    println!(
                        "{:>3}  {:<27}  {:>10}  {:<64}  {}",
                        row["version"],
                        row["timestamp"].as_str().unwrap_or(""),
                        row["size"],
                        row["digest"].as_str().unwrap_or(""),
                        row["position"]
                    );
                }
            }
        }
        Command::Inspect { location, json } => {
            output::inspect(store_at(&location, settings)?, json).await?
        }
        Command::Verify {
            location,
            quick,
            strict,
            public_key,
            legacy_keys,
            json,
        } => {
            if !legacy_keys.is_empty() {
                return Err(Error::Invalid(format!(
                    "{location} is canonical MAIF: --legacy-key applies only to legacy sources"
                )));
            }
            let expected_key = public_key.as_deref().map(parse_public_key).transpose()?;
            let options = VerifyOptions {
                quick,
                strict,
                expected_key,
                ..VerifyOptions::default()
            };
            let report = artifact::verify(store_at(&location, settings)?, options).await?;
            if json {
                print_json(&serde_json::to_value(&report).unwrap_or_default());
            } else {
                output::verify_summary(&report);
            }
            return Ok(if report.valid {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
        Command::Recover {
            damaged,
            output,
            key,
            json,
        } => {
            let key = key.as_deref().map(read_key).transpose()?;
            let report = recover_file(&damaged, &output, key.as_ref()).await?;
            if json {
                print_json(&serde_json::to_value(&report).unwrap_or_default());
            } else {
                println!(
                    "recovered {} records into {} ({}; {} commits kept byte for byte, {} records salvaged, {} bytes discarded{})",
                    report.records_recovered,
                    output.display(),
                    match report.mode {
                        artifact::RecoveryMode::CommittedState =>
                            "newest valid commit, byte for byte",
                        artifact::RecoveryMode::Resigned =>
                            "intact records after the newest valid commit, new commit signed",
                    },
                    report.commits_kept,
                    report.records_salvaged,
                    report.bytes_discarded,
                    if report.trailer_restored {
                        ", a lost trailer restored"
                    } else {
                        ""
                    }
                );
            }
        }
        Command::Convert {
            source,
            destination,
            quiet,
            json,
        } => {
            let source_store = store_at(&source, settings)?;
            let destination_store = store_at(&destination, settings)?;
            let total: u64 = ArtifactReader::open(source_store.clone())
                .await?
                .blocks()
                .await?
                .iter()
                .map(|b| b.entry.record_len)
                .sum();
            let bar = progress_bar(quiet || json, total, Unit::Bytes, "copying");
            let progress_bar = bar.clone();
            let options = artifact::ConvertOptions {
                concurrency: settings
                    .concurrency
                    .unwrap_or(maif_store::store::DEFAULT_CONCURRENCY),
                on_progress: Some(Arc::new(move |bytes| progress_bar.inc(bytes))),
                ..artifact::ConvertOptions::default()
            };
            let report = artifact::convert(source_store, destination_store, options).await;
            bar.finish_and_clear();
            let report = report?;
            if json {
                print_json(&serde_json::to_value(&report).unwrap_or_default());
            } else if report.already_converted {
                println!(
                    "{destination} already holds this artifact ({} records); nothing to do",
                    report.records
                );
            } else {
                println!(
                    "converted {source} -> {destination}: {} records, {} copied ({} bytes), {} already there, {:.2}s",
                    report.records,
                    report.records_copied,
                    report.bytes_copied,
                    report.records_resumed,
                    report.seconds
                );
            }
        }
        Command::Compact {
            location,
            key,
            json,
        } => {
            let mut writer =
                ArtifactWriter::open(store_at(&location, settings)?, read_key(&key)?).await?;
            let runs_before = writer.live_runs().await?;
            writer.compact().await?;
            let runs_after = writer.live_runs().await?;
            if json {
                print_json(&json!({
                    "location": location,
                    "runs_before": runs_before,
                    "runs_after": runs_after,
                    "compacted": runs_before > runs_after,
                }));
            } else if runs_before > runs_after {
                println!("compacted {location}: {runs_before} index runs merged into {runs_after}");
            } else {
                println!("{location} already has {runs_after} index run; nothing to merge");
            }
        }
        Command::Gc {
            location,
            older_than,
            dry_run,
            json,
        } => {
            let options = artifact::GcOptions {
                older_than: parse_duration(&older_than)?,
                dry_run,
            };
            let report = artifact::collect_garbage(store_at(&location, settings)?, options).await?;
            if json {
                print_json(&serde_json::to_value(&report).unwrap_or(Value::Null));
            } else {
                let verb = if dry_run { "would delete" } else { "deleted" };
                for key in &report.deleted {
                    println!("{verb} {key}");
                }
                println!(
                    "{location}: {verb} {} unreferenced record objects ({} bytes); kept {} referenced by commit {} and {} unreferenced younger than {older_than}",
                    report.deleted.len(),
                    report.deleted_bytes,
                    report.referenced,
                    report.newest_commit,
                    report.young_orphans
                );
            }
        }
        Command::Finalize { location, key } => {
            let mut writer =
                ArtifactWriter::open(store_at(&location, settings)?, read_key(&key)?).await?;
            writer.finalize().await?;
            println!("finalized {location}");
        }
        Command::Import(args) => super::import::run(args, settings).await?,
        Command::Prove {
            location,
            block_id,
            version,
            consistency,
        } => {
            let reader = ArtifactReader::open(store_at(&location, settings)?).await?;
            let proof = match (consistency.as_deref(), block_id) {
                (Some([old, new]), _) => artifact::prove_consistency(&reader, *old, *new).await?,
                (_, Some(block_id)) => {
                    artifact::prove_inclusion(&reader, &parse_id(&block_id)?, version).await?
                }
                _ => {
                    return Err(Error::Invalid(
                        "give a BLOCK_ID, or --consistency OLD NEW".into(),
                    ));
                }
            };
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(proof.as_bytes())
                .and_then(|()| stdout.flush())
                .map_err(|e| Error::Invalid(format!("writing to stdout: {e}")))?;
        }
        Command::VerifyProof {
            proof,
            public_key,
            json,
        } => {
            let expected = public_key.as_deref().map(parse_public_key).transpose()?;
            let text = if proof.as_os_str() == "-" {
                let mut text = String::new();
                std::io::stdin()
                    .lock()
                    .read_to_string(&mut text)
                    .map_err(|e| Error::Invalid(format!("reading standard input: {e}")))?;
                text
            } else {
                std::fs::read_to_string(&proof)
                    .map_err(|e| Error::Invalid(format!("reading {}: {e}", proof.display())))?
            };
            match artifact::verify_proof(&text, expected) {
                Ok(check) => {
                    if json {
                        print_json(&serde_json::to_value(&check).unwrap_or_default());
                    } else if check.kind == "inclusion" {
                        println!(
                            "valid: block {} ({}) is record #{} of commit {} ({} records, Merkle root {}), signed by {}",
                            check.block_id.as_deref().unwrap_or("-"),
                            check.block_type.as_deref().unwrap_or("-"),
                            check.position.unwrap_or(0),
                            check.commit,
                            check.tree_size,
                            check.merkle_root,
                            check.public_key
                        );
                    } else {
                        println!(
                            "valid: commit {} ({} records) extends commit {} ({} records) without changing it, signed by {}",
                            check.commit,
                            check.tree_size,
                            check.old_commit.unwrap_or(0),
                            check.old_tree_size.unwrap_or(0),
                            check.public_key
                        );
                    }
                }
                Err(Error::Verification(reason)) => {
                    if json {
                        print_json(&json!({"valid": false, "reason": reason}));
                    } else {
                        println!("INVALID: {reason}");
                    }
                    return Ok(ExitCode::from(1));
                }
                Err(e) => return Err(e),
            }
        }
        Command::Demo { dir } => super::demo::run(&dir).await?,
        // Run by `main` on a runtime of its own.
        Command::Migrate(_) | Command::Export { .. } => {
            return Err(Error::Invalid(format!(
                "internal: {command:?} is run by main"
            )));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn read_file_or_stdin(path: &Path) -> Result<Vec<u8>, Error> {
    if path.as_os_str() == "-" {
        let mut buffer = Vec::new();
        std::io::stdin()
            .lock()
            .read_to_end(&mut buffer)
            .map_err(|e| Error::Invalid(format!("reading standard input: {e}")))?;
        return Ok(buffer);
    }
    std::fs::read(path).map_err(|e| Error::Invalid(format!("reading {}: {e}", path.display())))
}

fn read_inputs(args: &AddArgs) -> Result<Vec<Vec<u8>>, Error> {
    match (&args.text, args.file.as_slice()) {
        (Some(text), []) => Ok(vec![text.as_bytes().to_vec()]),
        (None, files) if !files.is_empty() => {
            if files.iter().filter(|f| f.as_os_str() == "-").count() > 1 {
                return Err(Error::Invalid(
                    "--file - (standard input) can be given once".into(),
                ));
            }
            files.iter().map(|f| read_file_or_stdin(f)).collect()
        }
        _ => Err(Error::Invalid(
            "give the payload with --text or --file (repeatable; --file - reads stdin)".into(),
        )),
    }
}

/// Applies the typed framing of `block_type` to raw input
/// ([`maif_store::format::payload::frame_content`]).
pub fn frame_payload(
    block_type: FourCC,
    input: Vec<u8>,
    lang: Option<&str>,
    dim: Option<u32>,
) -> Result<Vec<u8>, Error> {
    maif_store::format::payload::frame_content(block_type, input, lang, dim).map_err(Error::Invalid)
}

async fn add(args: AddArgs, settings: &S3Settings) -> Result<(), Error> {
    let block_type = FourCC::parse(&args.block_type).map_err(Error::Invalid)?;
    if args.lang.is_some() && block_type != FourCC::TEXT {
        return Err(Error::Invalid("--lang applies to TEXT blocks only".into()));
    }
    let inputs = read_inputs(&args)?;
    let update = args.update.as_deref().map(parse_id).transpose()?;
    if update.is_some() && inputs.len() > 1 {
        return Err(Error::Invalid(
            "--update makes one new version: give one --file or --text".into(),
        ));
    }
    let ids = args
        .id
        .iter()
        .map(|id| parse_id(id))
        .collect::<Result<Vec<_>, _>>()?;
    if !ids.is_empty() && ids.len() != inputs.len() {
        return Err(Error::Invalid(format!(
            "{} --id for {} blocks: give one --id per --file (or one with --text)",
            ids.len(),
            inputs.len()
        )));
    }
    let metadata: Map<String, Value> = parse_pairs(&args.meta)?
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    let mut blocks = Vec::with_capacity(inputs.len());
    for (n, input) in inputs.into_iter().enumerate() {
        let data = frame_payload(block_type, input, args.lang.as_deref(), args.dim)?;
        let mut block = NewBlock::new(block_type, data).with_metadata(&metadata);
        if args.zstd {
            block = block.with_zstd(args.zstd_level);
        }
        if let Some(id) = ids.get(n) {
            block = block.with_id(*id);
        }
        blocks.push(block);
    }
    let store = store_at(&args.location, settings)?;
    // The writer retries a commit another writer beat, re-linking these blocks on top of it.
    let mut writer = ArtifactWriter::open(store, read_key(&args.key)?).await?;
    let added = match update {
        Some(id) => vec![writer.update(id, blocks.remove(0)).await?],
        None => writer.add_batch(blocks).await?,
    };
    if let Err(e) = writer.commit().await {
        if matches!(
            &e,
            Error::Store(maif_store::store::StoreError::Unknown { .. })
        ) {
            match update {
                Some(id) => eprintln!(
                    "maif: the update may or may not have landed: `maif ls {}` shows whether block {} has version {}",
                    args.location,
                    format_id(&id),
                    added[0].version
                ),
                None => eprintln!(
                    "maif: the add may or may not have landed; to settle it, run the same command again with {} \
                     (a block already committed under its id with the same content counts as done)",
                    added
                        .iter()
                        .map(|b| format!("--id {}", format_id(&b.block_id)))
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
            }
        }
        return Err(e);
    }
    // Where each block finally landed (another writer's commit can move them), in the
    // order they were given.
    let committed: std::collections::HashMap<[u8; 16], BlockRef> = writer
        .last_committed_blocks()
        .iter()
        .map(|b| (b.block_id, *b))
        .collect();
    let placed: Vec<BlockRef> = added
        .iter()
        .map(|b| committed.get(&b.block_id).copied().unwrap_or(*b))
        .collect();
    if args.json {
        let rows: Vec<Value> = placed
            .iter()
            .map(|p| {
                json!({
                    "block_id": format_id(&p.block_id),
                    "version": p.version,
                    "position": p.position,
                    "offset": p.offset,
                    "digest": hex::encode(p.digest),
                })
            })
            .collect();
        print_json(&if rows.len() == 1 {
            rows[0].clone()
        } else {
            Value::Array(rows)
        });
    } else {
        for p in &placed {
            println!("{} v{}", format_id(&p.block_id), p.version);
        }
    }
    Ok(())
}
