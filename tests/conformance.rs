//! One conformance suite for `BlockStore`, run against every backend: the single file, the
//! object layout in memory and on a local folder (and on S3 in `tests/s3.rs`).

mod common;

use std::sync::Arc;

use common::conformance::conformance;
use maif_store::store::{BlockStore, FileStore, ObjectBackend};
use object_store::path::Path as ObjectPath;

#[test]
fn single_file_backend_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("a.maif");
    common::block_on(conformance(
        Arc::new(FileStore::new(&path)),
        Arc::new(FileStore::new(&path)),
    ));
}

#[test]
fn memory_object_backend_conforms() {
    let store = Arc::new(object_store::memory::InMemory::new());
    let backend = |_: ()| -> Arc<dyn BlockStore> {
        Arc::new(ObjectBackend::new(
            store.clone(),
            ObjectPath::from("agents/a1"),
            "memory://conformance/agents/a1",
        ))
    };
    common::block_on(conformance(backend(()), backend(())));
}

#[test]
fn local_folder_object_backend_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = || -> Arc<dyn BlockStore> {
        let store =
            object_store::local::LocalFileSystem::new_with_prefix(dir.path()).expect("local store");
        Arc::new(
            ObjectBackend::new(
                Arc::new(store),
                ObjectPath::from("notes"),
                "file://conformance/notes",
            )
            .with_concurrency(3),
        )
    };
    common::block_on(conformance(backend(), backend()));
}
