//! `maif demo`: a real artifact made, read, verified and repaired under a local folder.

use std::path::Path;
use std::sync::Arc;

use maif_store::artifact::{
    self, ArtifactReader, ArtifactWriter, CreateOptions, NewBlock, VerifyOptions, format_id,
    recover_file,
};
use maif_store::format::payload::{EmbeddingPayload, ImagePayload, TextPayload};
use maif_store::format::{Codec, FourCC};
use maif_store::location::Location;
use maif_store::store::{BlockStore, FileStore};
use maif_store::{Error, SigningKey};
use serde_json::{Map, Value, json};

fn io(context: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::Invalid(format!("{context}: {e}"))
}

pub async fn run(dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(io("creating the demo folder"))?;
    let artifact_path = dir.join("demo.maif");
    let key_path = dir.join("demo-key.pem");
    let recovered_path = dir.join("demo-recovered.maif");
    for path in [&artifact_path, &key_path, &recovered_path] {
        if path.exists() {
            std::fs::remove_file(path).map_err(io("clearing an earlier demo"))?;
        }
    }
    let key = SigningKey::generate()?;
    key.write_pem_file(&key_path)?;
    println!(
        "1. key      {} (public {})",
        key_path.display(),
        hex::encode(key.public_key())
    );

    let store: Arc<dyn BlockStore> = Arc::new(FileStore::new(&artifact_path));
    let options = CreateOptions {
        agent_id: "demo-agent".into(),
        custom: [("purpose".to_string(), "demo".to_string())].into(),
        ..CreateOptions::default()
    };
    let mut writer = ArtifactWriter::create(
        store.clone(),
        SigningKey::read_pem_file(&key_path)?,
        options,
    )
    .await?;
    let meta = |pairs: &[(&str, &str)]| -> Map<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect()
    };
    let text = writer
        .add(
            NewBlock::new(
                FourCC::TEXT,
                TextPayload::utf8("Hello from maif-store.", Some(*b"en")).to_bytes(),
            )
            .with_metadata(&meta(&[("source", "demo")])),
        )
        .await?;
    let vectors = vec![vec![0.1f32, 0.2, 0.3, 0.4], vec![0.5, 0.6, 0.7, 0.8]];
    writer
        .add(
            NewBlock::new(
                FourCC::EMBD,
                EmbeddingPayload::from_f32(&vectors)
                    .map_err(Error::Invalid)?
                    .to_bytes(),
            )
            .with_metadata(&meta(&[("model", "toy-4d")])),
        )
        .await?;
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x02\0\0\0\x03\x08\x06\0\0\0".to_vec();
    writer
        .add(NewBlock::new(
            FourCC::IMAG,
            ImagePayload::sniff(png).to_bytes(),
        ))
        .await?;
    writer
        .add(
            NewBlock::new(
                FourCC::KGRF,
                br#"{"triples":[["maif","is","a format"]]}"#.repeat(50),
            )
            .with_zstd(3),
        )
        .await?;
    writer.commit().await?;
    writer
        .update(
            text.block_id,
            NewBlock::new(
                FourCC::TEXT,
                TextPayload::utf8("Hello again: version 2.", Some(*b"en")).to_bytes(),
            ),
        )
        .await?;
    writer.commit().await?;
    println!(
        "2. write    {} with 5 records (TEXT, EMBD, IMAG, zstd KGRF, TEXT v2)",
        artifact_path.display()
    );

    let reader = ArtifactReader::open(store.clone()).await?;
    for info in reader.blocks().await?.iter() {
        let block = reader.read(info).await?;
        let shown = match info.entry.block_type {
            FourCC::TEXT => format!(
                "{:?}",
                TextPayload::decode(&block.data)
                    .and_then(|t| t.as_string())
                    .unwrap_or_default()
            ),
            FourCC::EMBD => format!(
                "{:?}",
                EmbeddingPayload::decode(&block.data)
                    .map(|e| e.vectors())
                    .unwrap_or_default()
            ),
            FourCC::IMAG => ImagePayload::decode(&block.data)
                .map(|i| format!("{} {}x{}", i.format.name(), i.width, i.height))
                .unwrap_or_default(),
            _ => format!(
                "{} bytes ({} stored)",
                block.data.len(),
                block.header.data_size
            ),
        };
        println!(
            "3. read     {} v{} {} {}",
            info.id(),
            info.version,
            info.entry.block_type,
            shown
        );
    }
    let v1 = reader.get(&text.block_id, Some(1)).await?;
    println!(
        "            version 1 of {} is still there: {:?}",
        format_id(&text.block_id),
        TextPayload::decode(&v1.data)
            .and_then(|t| t.as_string())
            .unwrap_or_default()
    );

    let report = artifact::verify(store.clone(), VerifyOptions::default()).await?;
    println!(
        "4. verify   {}: {} records, {} signatures, Merkle root {}",
        if report.valid { "valid" } else { "INVALID" },
        report.record_count,
        report.signatures_checked,
        report.merkle_root.as_deref().unwrap_or("-")
    );
    if !report.valid {
        return Err(Error::Verification(format!("{:?}", report.problems)));
    }

    // The same artifact in the object layout (one object per record) in a local folder, and
    // back to a single file: byte for byte the same file.
    let objects_dir =
        std::path::absolute(dir.join("demo-objects")).map_err(io("resolving the demo folder"))?;
    let roundtrip_path = dir.join("demo-roundtrip.maif");
    if objects_dir.exists() {
        std::fs::remove_dir_all(&objects_dir).map_err(io("clearing an earlier demo"))?;
    }
    if roundtrip_path.exists() {
        std::fs::remove_file(&roundtrip_path).map_err(io("clearing an earlier demo"))?;
    }
    let objects = Location::parse(&format!("file://{}", objects_dir.display()))?.store()?;
    let there = artifact::convert(
        store.clone(),
        objects.clone(),
        artifact::ConvertOptions::default(),
    )
    .await?;
    artifact::convert(
        objects,
        Arc::new(FileStore::new(&roundtrip_path)),
        artifact::ConvertOptions::default(),
    )
    .await?;
    let identical = std::fs::read(&artifact_path).map_err(io("reading the artifact"))?
        == std::fs::read(&roundtrip_path).map_err(io("reading the round trip"))?;
    println!(
        "5. convert  {} -> file://{} ({} record objects) -> {}: {}",
        artifact_path.display(),
        objects_dir.display(),
        there.records,
        roundtrip_path.display(),
        if identical {
            "byte-for-byte identical"
        } else {
            "DIFFERENT"
        }
    );
    if !identical {
        return Err(Error::Verification(
            "the object-layout round trip changed the artifact".into(),
        ));
    }

    // Simulate a crash in the middle of the last append: cut the file inside its last
    // commit's segment. The commit before it is what remains committed.
    let torn_path = dir.join("demo-torn.maif");
    let bytes = std::fs::read(&artifact_path).map_err(io("reading the artifact"))?;
    let cut = bytes.len() - 100;
    std::fs::write(&torn_path, &bytes[..cut]).map_err(io("writing the torn copy"))?;
    let torn_report = artifact::verify(
        Arc::new(FileStore::new(&torn_path)),
        VerifyOptions::default(),
    )
    .await?;
    let recovered = recover_file(
        &torn_path,
        &recovered_path,
        Some(&SigningKey::read_pem_file(&key_path)?),
    )
    .await?;
    let recovered_report = artifact::verify(
        Arc::new(FileStore::new(&recovered_path)),
        VerifyOptions::default(),
    )
    .await?;
    std::fs::remove_file(&torn_path).map_err(io("removing the torn copy"))?;
    println!(
        "6. recover  a copy cut at byte {cut} (inside the last append) opens at its previous commit: {} records, {} ({} warning); recovery kept {} records -> {} ({})",
        torn_report.record_count,
        if torn_report.valid {
            "valid"
        } else {
            "INVALID"
        },
        torn_report.warnings.len(),
        recovered.records_recovered,
        recovered_path.display(),
        if recovered_report.valid {
            "valid"
        } else {
            "INVALID"
        }
    );
    if !torn_report.valid
        || torn_report.record_count != 4
        || torn_report.warnings.is_empty()
        || !recovered_report.valid
        || recovered.records_recovered != 4
    {
        return Err(Error::Verification(
            "the recovery step did not behave as expected".into(),
        ));
    }
    println!(
        "{}",
        json!({"artifact": artifact_path.display().to_string(), "valid": true})
    );
    Ok(())
}
