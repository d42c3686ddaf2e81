//! Human and JSON renderings.

use std::sync::Arc;

use maif_store::Error;
use maif_store::artifact::{ArtifactReader, BlockInfo, VerifyReport, format_id, format_time};
use maif_store::format::RecordView;
use maif_store::format::compression::compression_name;
use maif_store::store::BlockStore;
use serde_json::{Value, json};

pub async fn list(
    reader: &ArtifactReader,
    blocks: &[BlockInfo],
    as_json: bool,
) -> Result<(), Error> {
    let mut rows = Vec::with_capacity(blocks.len());
    let unchecked = blocks
        .iter()
        .filter(|info| !reader.metadata_checked(info))
        .count();
    if unchecked > 0 {
        eprintln!(
            "maif: the metadata of {unchecked} block(s) larger than {} MiB is shown as stored, \
             not checked against the committed digest (reading it whole would be needed); \
             `maif verify` or `maif cat` checks it",
            maif_store::artifact::CHECKED_METADATA_MAX >> 20
        );
    }
    for (info, (header, metadata)) in blocks.iter().zip(reader.read_metadata_many(blocks).await?) {
        rows.push(json!({
            "metadata_checked": reader.metadata_checked(info),
            "id": info.id(),
            "type": info.entry.block_type.to_string(),
            "version": info.version,
            "size": header.uncompressed_size,
            "stored_size": header.data_size,
            "compression": compression_name(header.compression),
            "timestamp": format_time(header.timestamp_us),
            "metadata": metadata,
            "position": info.position,
            "digest": hex::encode(info.entry.digest),
        }));
    }
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
        return Ok(());
    }
    println!(
        "{:<36}  {:<4}  {:>3}  {:>10}  {:<27}  METADATA",
        "ID", "TYPE", "VER", "SIZE", "TIMESTAMP"
    );
    for row in rows {
        let metadata = row["metadata"].to_string();
        println!(
            "{:<36}  {:<4}  {:>3}  {:>10}  {:<27}  {}",
            row["id"].as_str().unwrap_or(""),
            row["type"].as_str().unwrap_or(""),
            row["version"].as_u64().unwrap_or(0),
            row["size"].as_u64().unwrap_or(0),
            row["timestamp"].as_str().unwrap_or(""),
            if metadata == "{}" { "" } else { &metadata }
        );
    }
    Ok(())
}

fn run_json(run: &maif_store::format::RunRef) -> Value {
    json!({
        "commit": run.seq,
        "offset": run.segment_offset + run.part_offset,
        "entries": run.entry_count,
        "tier": run.tier,
        "streak": run.streak,
    })
}

pub async fn inspect(store: Arc<dyn BlockStore>, as_json: bool) -> Result<(), Error> {
    let reader = ArtifactReader::open(store.clone()).await?;
    let identity = reader.identity();
    let header = identity.header;
    let metadata_json: Value =
        serde_json::from_slice(&identity.metadata.json).unwrap_or(Value::Null);
    let commits = reader.commits().await?;
    let commits_json: Vec<Value> = commits
        .iter()
        .map(|c| {
            let h = c.header();
            json!({
                "seq": h.seq,
                "segment_offset": h.segment_offset,
                "segment_len": h.segment_len,
                "end": c.end(),
                "records_start": h.records_start,
                "records_added": h.records_added,
                "record_count": h.record_count,
                "provenance_added": h.provenance_added,
                "provenance_count": h.provenance_count,
                "run": if h.run_len > 0 { h.newest_run.as_ref().map(run_json) } else { None },
                "sealed": h.is_sealed(),
                "committed": format_time(h.committed_us),
                "merkle_root": hex::encode(h.merkle_root),
                "digest": hex::encode(c.digest),
                "signature": hex::encode(c.head.signature),
                "frontier": c.frontier().hashes().iter().map(hex::encode).collect::<Vec<_>>(),
            })
        })
        .collect();
    let live_runs: Vec<Value> = reader.live_runs().await?.iter().map(run_json).collect();
    let provenance: Vec<Value> = reader
        .provenance()
        .await?
        .iter()
        .map(|e| {
            json!({
                "action": e.action.name(),
                "timestamp": format_time(e.timestamp_us),
                "previous": hex::encode(e.previous),
                "subject": hex::encode(e.subject),
                "details": serde_json::from_slice::<Value>(&e.details).unwrap_or(Value::Null),
            })
        })
        .collect();
    let mut blocks = Vec::new();
    for info in reader.blocks().await?.iter() {
        let entry = &info.entry;
        let bytes = store.read_record(entry).await?;
        let record = RecordView::decode(&bytes).map_err(|e| Error::Format {
            context: format!("block #{} at offset {}", info.position, entry.offset),
            source: e.at(entry.offset),
        })?;
        let h = record.header;
        blocks.push(json!({
            "position": info.position,
            "offset": entry.offset,
            "record_len": entry.record_len,
            "block_id": format_id(&h.block_id),
            "version": info.version,
            "type": h.block_type.to_string(),
            "flags": h.flags,
            "compression": h.compression,
            "encryption": h.encryption,
            "metadata_len": h.metadata_len,
            "data_offset": h.data_offset,
            "data_size": h.data_size,
            "uncompressed_size": h.uncompressed_size,
            "timestamp_us": h.timestamp_us,
            "timestamp": format_time(h.timestamp_us),
            "prev_link": hex::encode(h.prev_link),
            "digest": hex::encode(entry.digest),
            "signature": hex::encode(record.signature),
            "data_at": entry.offset + u64::from(h.data_offset),
        }));
    }
    let newest = reader.commit();
    let value = json!({
        "location": store.location(),
        "file_header": {
            "magic": "MAIF",
            "version": format!("{}.{}", header.major, header.minor),
            "flags": header.flags,
            "created_us": header.created_us,
            "created": format_time(header.created_us),
            "artifact_id": format_id(&header.artifact_id),
        },
        "metadata_section": {"length": identity.metadata.json.len(), "json": metadata_json},
        "chain_seed": hex::encode(identity.genesis),
        "newest_commit": newest.seq(),
        "completed_from_uncommitted": reader.completed_from_uncommitted(),
        "record_count": newest.record_count(),
        "merkle_root": hex::encode(newest.header().merkle_root),
        "image_len": newest.end(),
        "commits": commits_json,
        "live_runs": live_runs,
        "provenance": provenance,
        "blocks": blocks,
    });
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
        return Ok(());
    }
    let fh = &value["file_header"];
    println!(
        "file header   MAIF {} created {} artifact {}",
        fh["version"].as_str().unwrap_or(""),
        fh["created"].as_str().unwrap_or(""),
        fh["artifact_id"].as_str().unwrap_or("")
    );
    println!(
        "metadata      {} bytes {}",
        identity.metadata.json.len(),
        metadata_json
    );
    println!(
        "newest        commit {} of {} records, image {} bytes, Merkle root {}{}",
        newest.seq(),
        newest.record_count(),
        newest.end(),
        hex::encode(newest.header().merkle_root),
        if reader.completed_from_uncommitted() {
            " (its trailer was lost; the next append writes it back)"
        } else {
            ""
        }
    );
    println!("commits       {}", commits.len());
    for c in &commits {
        let h = c.header();
        println!(
            "  #{:<4} @{:<10} +{} records (total {}), +{} provenance, segment {} bytes{}{} {}",
            h.seq,
            h.segment_offset,
            h.records_added,
            h.record_count,
            h.provenance_added,
            h.segment_len,
            match (&h.newest_run, h.run_len) {
                (Some(run), len) if len > 0 =>
                    format!(", run of {} (tier {})", run.entry_count, run.tier),
                _ => String::new(),
            },
            if h.is_sealed() { ", sealed" } else { "" },
            format_time(h.committed_us)
        );
    }
    println!("live runs     {}", live_runs.len());
    for run in &live_runs {
        println!(
            "  commit {:<4} {} entries (tier {}) at {}",
            run["commit"], run["entries"], run["tier"], run["offset"]
        );
    }
    println!("provenance    {} entries", provenance.len());
    for (n, entry) in provenance.iter().enumerate() {
        println!(
            "  #{n:<3} {:<10} {} {}",
            entry["action"].as_str().unwrap_or(""),
            entry["timestamp"].as_str().unwrap_or(""),
            entry["details"]
        );
    }
    println!("blocks");
    for b in &blocks {
        println!(
            "  #{:<3} @{:<8} {} v{} {} meta {} data {} ({}{}) {} link {} digest {}",
            b["position"],
            b["offset"],
            b["block_id"].as_str().unwrap_or(""),
            b["version"],
            b["type"].as_str().unwrap_or(""),
            b["metadata_len"],
            b["data_size"],
            compression_name(b["compression"].as_u64().unwrap_or(0) as u8),
            if b["compression"] != 0 {
                format!(", {} uncompressed", b["uncompressed_size"])
            } else {
                String::new()
            },
            b["timestamp"].as_str().unwrap_or(""),
            b["prev_link"].as_str().unwrap_or(""),
            b["digest"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

pub fn verify_summary(report: &VerifyReport) {
    for warning in &report.warnings {
        println!("warning: {warning}");
    }
    if report.valid {
        println!(
            "valid ({} verification): {} records, {} commits checked, {} provenance entries, {} signatures, {} bytes hashed, Merkle root {}",
            report.mode,
            report.record_count,
            report.commits_checked,
            report.provenance_entries,
            report.signatures_checked,
            report.bytes_hashed,
            report.merkle_root.as_deref().unwrap_or("-")
        );
    } else {
        println!(
            "INVALID ({} verification): {} problem(s) in {}",
            report.mode,
            report.problems.len(),
            report.location
        );
        for problem in &report.problems {
            println!("  {problem}");
        }
    }
}
