//! An object store wrapper that injects faults into chosen requests: a connection reset
//! before the store acts, a reset after it acted (the dangerous case: the write happened but
//! the writer hears an error), an outright refusal, or a delay.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

/// Which requests a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Put,
    /// GETs, not HEADs.
    Get,
}

/// What happens to a request a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The connection drops before the store sees the request.
    ResetBefore,
    /// The store performs the request, then the connection drops before the answer.
    ResetAfter,
    /// The store refuses the request (403): nothing happens.
    Refuse,
    /// The request is held this long, then performed normally.
    Delay(Duration),
    /// The store answers, but one byte of the body arrives flipped (damage on the way; the
    /// stored object is intact). GETs only.
    Garble,
}

#[derive(Debug)]
struct Rule {
    request: Request,
    key_contains: String,
    fault: Fault,
    remaining: usize,
}

#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    rules: Mutex<Vec<Rule>>,
    /// Faults injected so far.
    injected: Mutex<Vec<(Request, String, Fault)>>,
}

fn reset(path: &Path) -> object_store::Error {
    object_store::Error::Generic {
        store: "faulty",
        source: format!("connection reset while requesting {path}").into(),
    }
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            rules: Mutex::new(Vec::new()),
            injected: Mutex::new(Vec::new()),
        })
    }

    /// The next `times` requests of kind `request` whose key contains `key_contains` meet
    /// `fault`. Rules apply in the order they were added.
    pub fn inject(&self, request: Request, key_contains: &str, fault: Fault, times: usize) {
        self.rules.lock().expect("rules").push(Rule {
            request,
            key_contains: key_contains.to_string(),
            fault,
            remaining: times,
        });
    }

    /// The faults injected so far, oldest first.
    pub fn injected(&self) -> Vec<(Request, String, Fault)> {
        self.injected.lock().expect("injected").clone()
    }

    /// Rules not yet used up.
    pub fn pending_rules(&self) -> usize {
        self.rules
            .lock()
            .expect("rules")
            .iter()
            .filter(|r| r.remaining > 0)
            .count()
    }

    fn fault_for(&self, request: Request, path: &Path) -> Option<Fault> {
        let mut rules = self.rules.lock().expect("rules");
        let rule = rules.iter_mut().find(|r| {
            r.remaining > 0 && r.request == request && path.as_ref().contains(&r.key_contains)
        })?;
        rule.remaining -= 1;
        let fault = rule.fault;
        self.injected
            .lock()
            .expect("injected")
            .push((request, path.to_string(), fault));
        Some(fault)
    }
}

impl std::fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Faulty({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        match self.fault_for(Request::Put, location) {
            None => self.inner.put_opts(location, payload, opts).await,
            Some(Fault::ResetBefore) => Err(reset(location)),
            Some(Fault::ResetAfter) => {
                self.inner.put_opts(location, payload, opts).await?;
                Err(reset(location))
            }
            Some(Fault::Refuse) => Err(object_store::Error::PermissionDenied {
                path: location.to_string(),
                source: "403 Forbidden (injected)".into(),
            }),
            Some(Fault::Delay(wait)) => {
                tokio::time::sleep(wait).await;
                self.inner.put_opts(location, payload, opts).await
            }
            Some(Fault::Garble) => self.inner.put_opts(location, payload, opts).await,
        }
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        if options.head {
            return self.inner.get_opts(location, options).await;
        }
        match self.fault_for(Request::Get, location) {
            None => self.inner.get_opts(location, options).await,
            Some(Fault::ResetBefore | Fault::ResetAfter) => Err(reset(location)),
            Some(Fault::Refuse) => Err(object_store::Error::PermissionDenied {
                path: location.to_string(),
                source: "403 Forbidden (injected)".into(),
            }),
            Some(Fault::Delay(wait)) => {
                tokio::time::sleep(wait).await;
                self.inner.get_opts(location, options).await
            }
            Some(Fault::Garble) => {
                let answer = self.inner.get_opts(location, options).await?;
                let (meta, range, attributes, extensions) = (
                    answer.meta.clone(),
                    answer.range.clone(),
                    answer.attributes.clone(),
                    answer.extensions.clone(),
                );
                let mut bytes = answer.bytes().await?.to_vec();
                let half = bytes.len() / 2;
                if let Some(middle) = bytes.get_mut(half) {
                    *middle ^= 0x01;
                }
                let body = bytes::Bytes::from(bytes);
                Ok(GetResult {
                    payload: GetResultPayload::Stream(
                        futures::stream::once(async move { Ok(body) }).boxed(),
                    ),
                    meta,
                    range,
                    attributes,
                    extensions,
                })
            }
        }
    }
    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}
