//! The subcommands.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use maif_store::artifact::{
    self, ArtifactReader, ArtifactWriter, CreateOptions, NewBlock, VerifyOptions, format_id,
    parse_id, recover_file,
};
use maif_store::format::FourCC;
use maif_store::format::payload::{
    EmbeddingDtype, EmbeddingPayload, ImagePayload, TextPayload, content_of,
};
use maif_store::location::{Location, S3Settings};
use maif_store::store::BlockStore;
use maif_store::{Error, SigningKey};
use serde_json::{Map, Value, json};

use super::{AddArgs, Command, output};

/// 1 for "the bytes are not what they claim to be", 2 for everything else.
pub fn exit_code(error: &Error) -> u8 {
    match error {
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

fn store_at(location: &str, settings: &S3Settings) -> Result<Arc<dyn BlockStore>, Error> {
    Location::parse(location)?.store_with(settings)
}

fn read_key(path: &Path) -> Result<SigningKey, Error> {
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

fn print_json(value: &Value) {
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
            json,
        } => {
            let reader = ArtifactReader::open(store_at(&location, settings)?).await?;
            let mut blocks = if latest {
                reader.latest_blocks()
            } else {
                reader.blocks().to_vec()
            };
            if let Some(block_type) = block_type {
                let wanted = FourCC::parse(&block_type).map_err(Error::Invalid)?;
                blocks.retain(|b| b.entry.block_type == wanted);
            }
            if let Some(meta) = meta {
                let (key, value) = meta.split_once('=').ok_or_else(|| {
                    Error::Invalid(format!("--meta {meta:?}: expected KEY=VALUE"))
                })?;
                let matching: Vec<usize> = reader
                    .find_by_metadata(key, value)
                    .await?
                    .iter()
                    .map(|b| b.position)
                    .collect();
                blocks.retain(|b| matching.contains(&b.position));
            }
            output::list(&reader, &blocks, json).await?;
        }
        Command::Cat {
            location,
            block_id,
            version,
            raw,
        } => {
            let reader = ArtifactReader::open(store_at(&location, settings)?).await?;
            let block = reader.get(&parse_id(&block_id)?, version).await?;
            let bytes = if raw {
                block.data.to_vec()
            } else {
                content_of(block.header.block_type, &block.data).map_err(|e| Error::Format {
                    context: format!("block {block_id} payload"),
                    source: e,
                })?
            };
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(&bytes)
                .and_then(|()| stdout.flush())
                .map_err(|e| Error::Invalid(format!("writing to stdout: {e}")))?;
        }
        Command::Inspect { location, json } => {
            output::inspect(store_at(&location, settings)?, json).await?
        }
        Command::Verify {
            location,
            quick,
            strict,
            public_key,
            json,
        } => {
            let expected_key = public_key
                .map(|text| {
                    hex::decode(&text)
                        .ok()
                        .and_then(|bytes| <[u8; 32]>::try_from(bytes.as_slice()).ok())
                        .ok_or_else(|| {
                            Error::Invalid(format!("--public-key {text:?}: expected 64 hex digits"))
                        })
                })
                .transpose()?;
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
                    "recovered {} records into {} ({}; {} provenance entries kept, {} bytes discarded{})",
                    report.records_recovered,
                    output.display(),
                    match report.mode {
                        artifact::RecoveryMode::CommittedState =>
                            "last committed state, byte for byte",
                        artifact::RecoveryMode::Resigned => "intact prefix, new commit signed",
                    },
                    report.provenance_salvaged,
                    report.bytes_discarded,
                    if report.used_journal {
                        ", rollback journal used"
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
            let total: u64 = source_store
                .head()
                .await?
                .index
                .entries
                .iter()
                .map(|e| e.record_len)
                .sum();
            let bar = if quiet || json {
                indicatif::ProgressBar::hidden()
            } else {
                let bar = indicatif::ProgressBar::new(total);
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                bar
            };
            let progress_bar = bar.clone();
            let options = artifact::ConvertOptions {
                concurrency: settings.concurrency.unwrap_or(16),
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
        Command::Finalize { location, key } => {
            let mut writer =
                ArtifactWriter::open(store_at(&location, settings)?, read_key(&key)?).await?;
            writer.finalize().await?;
            println!("finalized {location}");
        }
        Command::Demo { dir } => super::demo::run(&dir).await?,
    }
    Ok(ExitCode::SUCCESS)
}

fn read_input(args: &AddArgs) -> Result<Vec<u8>, Error> {
    match (&args.text, &args.file) {
        (Some(text), None) => Ok(text.as_bytes().to_vec()),
        (None, Some(path)) if path.as_os_str() == "-" => {
            let mut buffer = Vec::new();
            std::io::stdin()
                .lock()
                .read_to_end(&mut buffer)
                .map_err(|e| Error::Invalid(format!("reading standard input: {e}")))?;
            Ok(buffer)
        }
        (None, Some(path)) => std::fs::read(path)
            .map_err(|e| Error::Invalid(format!("reading {}: {e}", path.display()))),
        _ => Err(Error::Invalid(
            "give the payload with --text or --file (--file - reads stdin)".into(),
        )),
    }
}

/// Applies the typed framing of `block_type` to raw input.
pub fn frame_payload(
    block_type: FourCC,
    input: Vec<u8>,
    lang: Option<&str>,
    dim: Option<u32>,
) -> Result<Vec<u8>, Error> {
    match block_type {
        FourCC::TEXT => {
            let text = String::from_utf8(input).map_err(|e| {
                Error::Invalid(format!(
                    "TEXT input is not UTF-8 (first bad byte at offset {})",
                    e.utf8_error().valid_up_to()
                ))
            })?;
            let language = lang
                .map(TextPayload::parse_language)
                .transpose()
                .map_err(Error::Invalid)?;
            Ok(TextPayload::utf8(&text, language).to_bytes())
        }
        FourCC::IMAG => Ok(ImagePayload::sniff(input).to_bytes()),
        FourCC::EMBD => {
            if !input.len().is_multiple_of(4) {
                return Err(Error::Invalid(format!(
                    "EMBD input is {} bytes, not a whole number of little-endian float32 values",
                    input.len()
                )));
            }
            let elements = (input.len() / 4) as u32;
            let dimension = dim.unwrap_or(elements);
            if dimension == 0 || !elements.is_multiple_of(dimension) {
                return Err(Error::Invalid(format!(
                    "EMBD input holds {elements} values, which is not a multiple of --dim {dimension}"
                )));
            }
            Ok(EmbeddingPayload {
                dimension,
                count: elements / dimension,
                dtype: EmbeddingDtype::Float32,
                values: input,
            }
            .to_bytes())
        }
        _ => Ok(input),
    }
}

async fn add(args: AddArgs, settings: &S3Settings) -> Result<(), Error> {
    let block_type = FourCC::parse(&args.block_type).map_err(Error::Invalid)?;
    if args.lang.is_some() && block_type != FourCC::TEXT {
        return Err(Error::Invalid("--lang applies to TEXT blocks only".into()));
    }
    let data = frame_payload(
        block_type,
        read_input(&args)?,
        args.lang.as_deref(),
        args.dim,
    )?;
    let metadata: Map<String, Value> = parse_pairs(&args.meta)?
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    let mut block = NewBlock::new(block_type, data).with_metadata(&metadata);
    if args.zstd {
        block = block.with_zstd(args.zstd_level);
    }
    let store = store_at(&args.location, settings)?;
    let update = args.update.as_deref().map(parse_id).transpose()?;
    if update.is_none() {
        // One id for every attempt below.
        block = block.with_id(*uuid::Uuid::new_v4().as_bytes());
    }
    // Another writer may commit between our read of the head and our commit; the commit then
    // fails with a conflict and nothing of ours is visible. Re-read and try again.
    const ATTEMPTS: u32 = 40;
    let mut attempt = 0;
    let placed = loop {
        attempt += 1;
        let result = async {
            let mut writer = ArtifactWriter::open(store.clone(), read_key(&args.key)?).await?;
            let placed = match update {
                Some(id) => writer.update(id, block.clone()).await?,
                None => writer.add(block.clone()).await?,
            };
            writer.commit().await?;
            Ok::<_, Error>(placed)
        }
        .await;
        match result {
            Err(Error::Store(maif_store::store::StoreError::Conflict { reason, .. }))
                if attempt < ATTEMPTS =>
            {
                let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0]);
                let wait = std::time::Duration::from_millis((5u64 << attempt.min(5)) + jitter);
                tracing::info!(attempt, %reason, "commit conflict; retrying in {wait:?}");
                tokio::time::sleep(wait).await;
            }
            other => break other?,
        }
    };
    if args.json {
        print_json(&json!({
            "block_id": format_id(&placed.block_id),
            "version": placed.version,
            "offset": placed.offset,
            "digest": hex::encode(placed.digest),
        }));
    } else {
        println!("{} v{}", format_id(&placed.block_id), placed.version);
    }
    Ok(())
}
