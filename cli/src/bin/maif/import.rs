//! `maif import`: one block per line of a JSON Lines file, committed in batches.

use std::io::{BufRead, BufReader, Read};
use std::time::Instant;

use base64::Engine as _;
use maif_migrate::cli::{Unit, progress_bar};
use maif_store::Error;
use maif_store::artifact::{ArtifactWriter, NewBlock, parse_id};
use maif_store::format::FourCC;
use maif_store::location::S3Settings;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::ImportArgs;
use super::commands::{frame_payload, print_json, read_key, store_at};

/// One line of the input.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    #[serde(rename = "type")]
    block_type: String,
    text: Option<String>,
    base64: Option<String>,
    #[serde(default)]
    meta: Map<String, Value>,
    update: Option<String>,
    /// The new block's id: makes a re-run skip the line once it is committed.
    id: Option<String>,
    lang: Option<String>,
    dim: Option<u32>,
}

fn block_of(line: Line, number: u64) -> Result<(NewBlock, Option<[u8; 16]>), Error> {
    let at = |reason: String| Error::Invalid(format!("line {number}: {reason}"));
    let block_type = FourCC::parse(&line.block_type).map_err(at)?;
    let input = match (line.text, line.base64) {
        (Some(text), None) => text.into_bytes(),
        (None, Some(encoded)) => base64::engine::general_purpose::STANDARD
            .decode(encoded.as_bytes())
            .map_err(|e| at(format!("\"base64\" is not base64: {e}")))?,
        _ => return Err(at("give exactly one of \"text\" and \"base64\"".into())),
    };
    if line.lang.is_some() && block_type != FourCC::TEXT {
        return Err(at("\"lang\" applies to TEXT blocks only".into()));
    }
    let data = frame_payload(block_type, input, line.lang.as_deref(), line.dim)
        .map_err(|e| at(e.to_string()))?;
    let update = line
        .update
        .as_deref()
        .map(parse_id)
        .transpose()
        .map_err(|e| at(e.to_string()))?;
    let mut block = NewBlock::new(block_type, data).with_metadata(&line.meta);
    match (line.id.as_deref().map(parse_id).transpose(), update) {
        (Ok(Some(_)), Some(_)) => {
            return Err(at(
                "give \"id\" for a new block or \"update\", not both".into()
            ));
        }
        (Ok(Some(id)), None) => block = block.with_id(id),
        (Ok(None), _) => {}
        (Err(e), _) => return Err(at(e.to_string())),
    }
    Ok((block, update))
}

pub async fn run(args: ImportArgs, settings: &S3Settings) -> Result<(), Error> {
    let started = Instant::now();
    let input: Box<dyn Read> = if args.jsonl.as_os_str() == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(
            std::fs::File::open(&args.jsonl)
                .map_err(|e| Error::Invalid(format!("opening {}: {e}", args.jsonl.display())))?,
        )
    };
    let total = std::fs::metadata(&args.jsonl).map(|m| m.len()).ok();
    let quiet = args.quiet || args.json;
    let bar = match total.filter(|_| args.jsonl.as_os_str() != "-") {
        Some(total) => progress_bar(quiet, total, Unit::Bytes, "importing"),
        None if quiet || !std::io::IsTerminal::is_terminal(&std::io::stderr()) => {
            indicatif::ProgressBar::hidden()
        }
        None => indicatif::ProgressBar::new_spinner(),
    };
    let store = store_at(&args.location, settings)?;
    let mut writer = ArtifactWriter::open(store, read_key(&args.key)?).await?;
    let mut batch: Vec<NewBlock> = Vec::new();
    let (mut blocks, mut commits, mut payload_bytes, mut batch_bytes) = (0u64, 0u64, 0u64, 0u64);
    let mut number = 0u64;
    // Lines up to this one are committed (durably): what a failed run tells the user.
    let mut committed_through = 0u64;
    // The commit being made durable while the next lines are signed, with the last line it
    // holds; waited for before the next commit starts, so at most one is in flight.
    let mut in_flight: Option<(maif_store::artifact::CommitTicket, u64)> = None;
    let outcome = async {
        for line in BufReader::new(input).lines() {
            number += 1;
            let line = line.map_err(|e| Error::Invalid(format!("reading line {number}: {e}")))?;
            bar.inc(line.len() as u64 + 1);
            if line.trim().is_empty() {
                continue;
            }
            let parsed: Line = serde_json::from_str(&line)
                .map_err(|e| Error::Invalid(format!("line {number}: {e}")))?;
            let (block, update) = block_of(parsed, number)?;
            batch_bytes += block.data.len() as u64;
            match update {
                // An update names an existing block: place what is batched first, in order.
                Some(id) => {
                    writer.add_batch(std::mem::take(&mut batch)).await?;
                    writer.update(id, block).await?;
                }
                None => batch.push(block),
            }
            blocks += 1;
            if batch.len() >= 1024 {
                writer.add_batch(std::mem::take(&mut batch)).await?;
            }
            if blocks % args.commit_every.max(1) as u64 == 0 || batch_bytes >= args.commit_bytes {
                writer.add_batch(std::mem::take(&mut batch)).await?;
                let started = writer.start_commit().await?;
                if let Some((previous, through)) = in_flight.replace((started, number)) {
                    previous.durable().await?;
                    committed_through = through;
                    commits += 1;
                }
                payload_bytes += batch_bytes;
                batch_bytes = 0;
                bar.set_message(format!("{blocks} blocks, {commits} commits"));
            }
        }
        writer.add_batch(std::mem::take(&mut batch)).await?;
        if let Some((previous, through)) = in_flight.take() {
            previous.durable().await?;
            committed_through = through;
            commits += 1;
        }
        if batch_bytes > 0 || writer.record_count() > writer.last_commit().record_count() {
            writer.commit().await?;
            commits += 1;
            payload_bytes += batch_bytes;
        }
        committed_through = number;
        Ok::<(), Error>(())
    }
    .await;
    if let Err(e) = outcome {
        // A commit still in flight may yet become durable: say so only once it has.
        if let Some((previous, through)) = in_flight.take()
            && previous.durable().await.is_ok()
        {
            committed_through = through;
            commits += 1;
        }
        bar.finish_and_clear();
        // A re-run adds every line again unless it names its id: say what is committed.
        let unknown = matches!(
            &e,
            Error::Store(maif_store::store::StoreError::Unknown { .. })
        );
        let file = args.jsonl.display();
        let next = committed_through + 1;
        if unknown {
            eprintln!(
                "maif: lines 1-{committed_through} of {file} are committed ({commits} commits); \
                 whether lines {next}-{number} landed is unknown. Give every line an \"id\" and \
                 run the import again: it skips every line already committed."
            );
        } else {
            eprintln!(
                "maif: lines 1-{committed_through} of {file} are committed ({commits} commits); \
                 the lines after them are not. Import those (`tail -n +{next} FILE`), or give \
                 every line an \"id\" so that a re-run skips the lines already committed."
            );
        }
        return Err(e);
    }
    // After loading most of the artifact, merge its index runs into one (a full checkpoint):
    // this writes each index entry once more, at most four per block imported, and makes a
    // lookup read one run.
    let compacted =
        !args.no_compact && writer.record_count() <= 4 * blocks && writer.live_runs().await? > 1;
    if compacted {
        bar.set_message("merging the index runs");
        writer.compact().await?;
        commits += 1;
    }
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let summary = json!({
        "location": args.location,
        "blocks": blocks,
        "commits": commits,
        "payload_bytes": payload_bytes,
        "records": writer.record_count(),
        "compacted": compacted,
        "seconds": seconds,
        "blocks_per_second": if seconds > 0.0 { blocks as f64 / seconds } else { 0.0 },
    });
    if args.json {
        print_json(&summary);
    } else {
        println!(
            "imported {blocks} blocks into {} in {commits} commits ({payload_bytes} payload bytes, {:.2}s)",
            args.location, seconds
        );
    }
    Ok(())
}
