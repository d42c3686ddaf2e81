//! An object store wrapper that counts requests by kind and bytes returned by GETs, to check
//! how many a reader or writer makes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::list::{PaginatedListOptions, PaginatedListResult, PaginatedListStore};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

/// Requests made through a [`CountingStore`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requests {
    pub gets: usize,
    pub heads: usize,
    pub puts: usize,
    /// LIST requests: pages fetched, not calls made.
    pub lists: usize,
    pub deletes: usize,
    /// Bytes of GET bodies requested (the ranges asked for, clamped to the object).
    pub get_bytes: u64,
    /// Bytes of PUT bodies sent (single PUTs; multipart parts are not counted).
    pub put_bytes: u64,
}

impl Requests {
    pub fn total(&self) -> usize {
        self.gets + self.heads + self.puts + self.lists + self.deletes
    }
}

pub struct CountingStore {
    inner: Arc<dyn ObjectStore>,
    /// The same store's paginated listing, where it has one (S3).
    paginated: Option<Arc<dyn PaginatedListStore>>,
    pub gets: AtomicUsize,
    heads: AtomicUsize,
    puts: AtomicUsize,
    lists: Arc<AtomicUsize>,
    deletes: AtomicUsize,
    get_bytes: AtomicU64,
    put_bytes: AtomicU64,
    /// An object to overwrite in the inner store right before the next GET of it (what a
    /// concurrent writer does between a reader's HEAD and its GET).
    overwrite_before_get: std::sync::Mutex<Option<(Path, PutPayload)>>,
}

impl CountingStore {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            paginated: None,
            gets: AtomicUsize::new(0),
            heads: AtomicUsize::new(0),
            puts: AtomicUsize::new(0),
            lists: Arc::new(AtomicUsize::new(0)),
            deletes: AtomicUsize::new(0),
            get_bytes: AtomicU64::new(0),
            put_bytes: AtomicU64::new(0),
            overwrite_before_get: std::sync::Mutex::new(None),
        })
    }

    /// Counts the requests to `inner`, including its paginated LISTs (S3's `max-keys`).
    pub fn new_paginated<S: ObjectStore + PaginatedListStore>(inner: Arc<S>) -> Arc<Self> {
        let paginated: Arc<dyn PaginatedListStore> = inner.clone();
        let mut counting = Self::new(inner);
        if let Some(counting) = Arc::get_mut(&mut counting) {
            counting.paginated = Some(paginated);
        }
        counting
    }

    /// GETs since the last call.
    pub fn take_gets(&self) -> usize {
        self.gets.swap(0, Ordering::SeqCst)
    }

    /// Overwrites `location` with `body` in the inner store right before the next GET of it
    /// (not a HEAD) goes through: the GET then meets the new version.
    pub fn overwrite_before_next_get(&self, location: Path, body: PutPayload) {
        if let Ok(mut pending) = self.overwrite_before_get.lock() {
            *pending = Some((location, body));
        }
    }

    /// Whether an overwrite set by [`Self::overwrite_before_next_get`] is still waiting for
    /// its GET.
    pub fn overwrite_pending(&self) -> bool {
        self.overwrite_before_get
            .lock()
            .is_ok_and(|pending| pending.is_some())
    }

    /// Every request since the last call.
    pub fn take(&self) -> Requests {
        Requests {
            gets: self.gets.swap(0, Ordering::SeqCst),
            heads: self.heads.swap(0, Ordering::SeqCst),
            puts: self.puts.swap(0, Ordering::SeqCst),
            lists: self.lists.swap(0, Ordering::SeqCst),
            deletes: self.deletes.swap(0, Ordering::SeqCst),
            get_bytes: self.get_bytes.swap(0, Ordering::SeqCst),
            put_bytes: self.put_bytes.swap(0, Ordering::SeqCst),
        }
    }
}

impl std::fmt::Debug for CountingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Counting({:?})", self.inner)
    }
}

#[async_trait]
impl PaginatedListStore for CountingStore {
    async fn list_paginated(
        &self,
        prefix: Option<&str>,
        opts: PaginatedListOptions,
    ) -> Result<PaginatedListResult> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        match &self.paginated {
            Some(paginated) => paginated.list_paginated(prefix, opts).await,
            None => Err(object_store::Error::NotImplemented {
                operation: "list_paginated".into(),
                implementer: "CountingStore".into(),
            }),
        }
    }
}

impl std::fmt::Display for CountingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Counting({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for CountingStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.puts.fetch_add(1, Ordering::SeqCst);
        self.put_bytes
            .fetch_add(payload.content_length() as u64, Ordering::SeqCst);
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.puts.fetch_add(1, Ordering::SeqCst);
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let head = options.head;
        let overwrite = if head {
            None
        } else {
            self.overwrite_before_get
                .lock()
                .ok()
                .and_then(|mut pending| {
                    pending
                        .take_if(|(path, _)| path == location)
                        .map(|(_, body)| body)
                })
        };
        if let Some(body) = overwrite {
            self.inner
                .put_opts(location, body, PutOptions::default())
                .await?;
        }
        if head {
            self.heads.fetch_add(1, Ordering::SeqCst);
        } else {
            self.gets.fetch_add(1, Ordering::SeqCst);
        }
        let result = self.inner.get_opts(location, options).await?;
        if !head {
            self.get_bytes
                .fetch_add(result.range.end - result.range.start, Ordering::SeqCst);
        }
        Ok(result)
    }
    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.deletes.fetch_add(1, Ordering::SeqCst);
        self.inner.delete_stream(locations)
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        // One request per page of up to 1000 keys (what S3 returns), fetched as the stream
        // is read.
        let lists = self.lists.clone();
        lists.fetch_add(1, Ordering::SeqCst);
        let mut seen = 0usize;
        self.inner
            .list(prefix)
            .map(move |item| {
                if seen > 0 && seen.is_multiple_of(1000) {
                    lists.fetch_add(1, Ordering::SeqCst);
                }
                seen += 1;
                item
            })
            .boxed()
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}
