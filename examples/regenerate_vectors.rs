//! Rewrites `tests/vectors/small.{maif,json}` after an intentional format change. The golden
//! test never does this itself; run `cargo run --example regenerate_vectors` and review the
//! diff.

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::path::PathBuf;

fn main() {
    let vectors = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("small.maif");
    common::block_on(common::write_small_artifact(&path));
    let description = common::block_on(common::describe(&path));
    std::fs::copy(&path, vectors.join("small.maif")).expect("write small.maif");
    std::fs::write(
        vectors.join("small.json"),
        serde_json::to_string_pretty(&description).expect("json") + "\n",
    )
    .expect("write small.json");
    println!("rewrote {}", vectors.display());
}
