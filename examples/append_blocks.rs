//! Appends blocks to an artifact one commit at a time, printing `committed <block id>` once
//! each commit is durable. Used by the crash test, which kills it at random moments; also a
//! minimal example of the writer API.
//!
//! ```text
//! cargo run --example append_blocks -- artifact.maif key.pem 100
//! ```
//!
//! With a fourth argument `abandon`, it then adds one more block and exits without
//! committing it (a large block, so it reaches the file; dropping the writer mid-append
//! cuts the file back).

use std::io::Write;
use std::sync::Arc;

use maif_store::SigningKey;
use maif_store::artifact::{ArtifactWriter, CreateOptions, NewBlock, format_id};
use maif_store::format::payload::TextPayload;
use maif_store::format::{Codec, FourCC};
use maif_store::store::{BlockStore, FileStore};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (path, key_path, count, abandon) = match args.as_slice() {
        [_, path, key_path, count] => (path, key_path, count, false),
        [_, path, key_path, count, last] if last == "abandon" => (path, key_path, count, true),
        _ => return Err("usage: append_blocks ARTIFACT KEY.pem COUNT [abandon]".into()),
    };
    let count: usize = count.parse()?;
    let store: Arc<dyn BlockStore> = Arc::new(FileStore::new(path));
    let key = SigningKey::read_pem_file(key_path.as_ref())?;
    let mut writer =
        match ArtifactWriter::open(store.clone(), SigningKey::read_pem_file(key_path.as_ref())?)
            .await
        {
            Ok(writer) => writer,
            Err(maif_store::Error::Store(maif_store::store::StoreError::NotFound { .. })) => {
                let options = CreateOptions {
                    agent_id: "crash-test".into(),
                    ..CreateOptions::default()
                };
                ArtifactWriter::create(store, key, options).await?
            }
            Err(e) => return Err(e.into()),
        };
    let mut stdout = std::io::stdout();
    for n in 0..count {
        // Mixed sizes so kills land in small and large writes alike.
        // Every fifth block is large enough to go through the single-file writer thread.
        let repeats = if n % 5 == 4 {
            20_000
        } else {
            1 + (n * 37) % 3000
        };
        let body = format!("block {n} ").repeat(repeats);
        let placed = writer
            .add(NewBlock::new(
                FourCC::TEXT,
                TextPayload::utf8(&body, None).to_bytes(),
            ))
            .await?;
        writer.commit().await?;
        writeln!(stdout, "committed {}", format_id(&placed.block_id))?;
        stdout.flush()?;
    }
    if abandon {
        let body = TextPayload::utf8(&"never committed ".repeat(5_000), None).to_bytes();
        writer.add(NewBlock::new(FourCC::TEXT, body)).await?;
        drop(writer);
    }
    Ok(())
}
