//! Human and JSON renderings.

use std::sync::Arc;

use maif_store::Error;
use maif_store::artifact::{ArtifactReader, BlockInfo, VerifyReport, format_id, format_time};
use maif_store::format::compression::compression_name;
use maif_store::format::{FileHeader, MetadataSection, ProvenanceSection, RecordView};
use maif_store::store::BlockStore;
use serde_json::{Value, json};

pub async fn list(
    reader: &ArtifactReader,
    blocks: &[BlockInfo],
    as_json: bool,
) -> Result<(), Error> {
    let mut rows = Vec::with_capacity(blocks.len());
    for (info, (header, metadata)) in blocks.iter().zip(reader.read_metadata_many(blocks).await?) {
        rows.push(json!({
            "id": info.id(),
            "type": info.entry.block_type.to_string(),
            "version": info.version,
            "size": header.uncompressed_size,
            "stored_size": header.data_size,
            "compression": compression_name(header.compression),
            "timestamp": format_time(header.timestamp_us),
            "metadata": metadata,
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

pub async fn inspect(store: Arc<dyn BlockStore>, as_json: bool) -> Result<(), Error> {
    let head = store.head().await?;
    let header = FileHeader::decode(&head.file_header).map_err(|e| Error::Format {
        context: "file header".into(),
        source: e,
    })?;
    let metadata = MetadataSection::decode(&head.metadata_section).map_err(|e| Error::Format {
        context: "metadata section".into(),
        source: e,
    })?;
    let metadata_json: Value = serde_json::from_slice(&metadata.json).unwrap_or(Value::Null);
    let t = &head.trailer;
    let mut blocks = Vec::new();
    let mut versions = std::collections::HashMap::new();
    for (position, entry) in head.index.entries.iter().enumerate() {
        let version = {
            let v = versions.entry(entry.block_id).or_insert(0u32);
            *v += 1;
            *v
        };
        let bytes = store.read_record(entry).await?;
        let record = RecordView::decode(&bytes).map_err(|e| Error::Format {
            context: format!("block #{position} at offset {}", entry.offset),
            source: e.at(entry.offset),
        })?;
        let h = record.header;
        blocks.push(json!({
            "position": position,
            "offset": entry.offset,
            "record_len": entry.record_len,
            "block_id": format_id(&h.block_id),
            "version": version,
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
    let provenance = ProvenanceSection::decode(&head.provenance_section)
        .map(|p| {
            p.entries
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
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
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
        "metadata_section": {"length": metadata.json.len(), "json": metadata_json},
        "trailer": {
            "records_offset": t.records_offset,
            "provenance_offset": t.provenance_offset,
            "provenance_len": t.provenance_len,
            "index_offset": t.index_offset,
            "index_len": t.index_len,
            "record_count": t.record_count,
            "committed": format_time(t.committed_us),
            "provenance_head": hex::encode(t.provenance_head),
            "commit_signature": hex::encode(t.commit_signature),
            "merkle_root": hex::encode(t.merkle_root),
            "file_len": t.file_len(),
        },
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
        metadata.json.len(),
        metadata_json
    );
    println!(
        "trailer       {} records, records at {}, provenance at {} ({} bytes), index at {} ({} bytes), file {} bytes",
        t.record_count,
        t.records_offset,
        t.provenance_offset,
        t.provenance_len,
        t.index_offset,
        t.index_len,
        t.file_len().unwrap_or(0)
    );
    println!("merkle root   {}", hex::encode(t.merkle_root));
    println!("committed     {}", format_time(t.committed_us));
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
            "valid ({} verification): {} records, {} provenance entries, {} signatures, {} bytes hashed, Merkle root {}",
            report.mode,
            report.record_count,
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
