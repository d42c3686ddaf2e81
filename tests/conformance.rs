//! One conformance suite for `BlockStore`, run against every backend: the single file, the
//! object layout in memory and in a local folder (and on S3 in `tests/s3.rs`), and a single
//! file stored as one object (its read cases, on memory).

mod common;

use std::sync::Arc;

use common::conformance::{Capabilities, run_all};
use maif_store::artifact::{ArtifactReader, ConvertOptions, VerifyOptions, convert, verify};
use maif_store::store::{BlockStore, FileStore, ListingOrder, ObjectBackend, ObjectFile};
use object_store::path::Path as ObjectPath;

const FILE: Capabilities = Capabilities {
    append: true,
    records_as_objects: false,
};
const OBJECTS: Capabilities = Capabilities {
    append: true,
    records_as_objects: true,
};

#[test]
fn single_file_backend_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    common::block_on(run_all(
        |name| {
            let path = dir.path().join(format!("{name}.maif"));
            (
                Arc::new(FileStore::new(&path)) as Arc<dyn BlockStore>,
                Arc::new(FileStore::new(&path)) as Arc<dyn BlockStore>,
            )
        },
        FILE,
    ));
}

#[test]
fn memory_object_backend_conforms() {
    let store = Arc::new(object_store::memory::InMemory::new());
    common::block_on(run_all(
        |name| {
            let backend = || -> Arc<dyn BlockStore> {
                Arc::new(
                    ObjectBackend::new(
                        store.clone(),
                        ObjectPath::from(format!("agents/{name}")),
                        format!("memory://conformance/agents/{name}"),
                    )
                    .with_listing_order(ListingOrder::Lexicographic),
                )
            };
            (backend(), backend())
        },
        OBJECTS,
    ));
}

#[test]
fn local_folder_object_backend_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    common::block_on(run_all(
        |name| {
            let backend = || -> Arc<dyn BlockStore> {
                let store = object_store::local::LocalFileSystem::new_with_prefix(dir.path())
                    .expect("local store");
                Arc::new(
                    ObjectBackend::new(
                        Arc::new(store),
                        ObjectPath::from(name),
                        format!("file://conformance/{name}"),
                    )
                    .with_concurrency(3),
                )
            };
            (backend(), backend())
        },
        OBJECTS,
    ));
}

/// A single file stored as one object is read-only: it runs the read cases, on an artifact
/// imported into it, offline on memory.
#[test]
fn single_object_file_conforms_for_reads() {
    let memory = Arc::new(object_store::memory::InMemory::new());
    let object = |name: &str| -> Arc<dyn BlockStore> {
        Arc::new(ObjectFile::new(
            memory.clone(),
            ObjectPath::from(format!("archive/{name}.maif")),
            format!("memory://conformance/archive/{name}.maif"),
        ))
    };
    common::block_on(run_all(
        |name| (object(name), object(name)),
        Capabilities {
            append: false,
            records_as_objects: false,
        },
    ));
    let dir = tempfile::tempdir().expect("tempdir");
    let source = dir.path().join("small.maif");
    common::block_on(async {
        common::write_small_artifact(&source).await;
        let target = object("small");
        convert(
            common::file_store(&source),
            target.clone(),
            ConvertOptions::default(),
        )
        .await
        .expect("import");
        let reader = ArtifactReader::open(target.clone()).await.expect("open");
        assert_eq!(reader.blocks().await.expect("list").len(), 5);
        assert_eq!(
            &reader.get(&[1; 16], None).await.expect("latest").data[3..],
            b"hello again"
        );
        let report = verify(target.clone(), VerifyOptions::default())
            .await
            .expect("verify");
        assert!(report.valid, "{:?}", report.problems);
        let back = dir.path().join("back.maif");
        convert(target, common::file_store(&back), ConvertOptions::default())
            .await
            .expect("export");
        assert!(std::fs::read(&source).expect("read") == std::fs::read(&back).expect("read"));
    });
}
