//! The one way this crate spreads CPU work over cores: hashing and signing records in the
//! writer, hashing records and checking signatures in verification. Threads take small
//! chunks from a shared queue (so a thread that gets less CPU does not hold the others up),
//! and nothing is started for work that one thread does alone (a single signature check on
//! open stays on the caller's thread).
//!
//! Two forms:
//!
//! * [`parallel_map`], for work the caller waits for: scoped threads, the calling thread
//!   working too.
//! * [`map_in_background`], for work the caller goes on beside (the writer's signing, while
//!   it links and stages the next batch): one pool of threads per process, as many as there
//!   are cores, started on first use, taking jobs first in, first out. A job's chunks are all
//!   handed out before the next job's, so the jobs queued behind the running one stay whole:
//!   when a writer waits for its oldest batch, the rest of its signing is still there to keep
//!   the cores busy while it commits. (Jobs on threads of their own would share the cores
//!   and all finish late together, starving the caller's own thread of CPU meanwhile.)

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};

/// Threads to use for CPU-heavy work when the caller does not say: the cores available,
/// asked once per process (the writer asks per batch, and asking reads the cgroup's files:
/// about 0.6 % of a bulk import's CPU time).
pub(crate) fn available_threads() -> usize {
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *THREADS.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from))
}

/// At most this many items are taken from a queue at a time.
const CHUNK: usize = 16;

/// Items per chunk and chunks for `len` items on `threads` threads: chunks small enough
/// that every thread gets several, at most [`CHUNK`] items.
fn chunking(len: usize, threads: usize) -> (usize, usize) {
    let per_chunk = (len / (threads.max(1) * 4)).clamp(1, CHUNK);
    (per_chunk, len.div_ceil(per_chunk))
}

/// Runs `work` over `items` on up to `threads` threads (the calling thread included) and
/// returns the results in the order of `items`.
pub(crate) fn parallel_map<T: Sync, U: Send>(
    items: &[T],
    threads: usize,
    work: impl Fn(&T) -> U + Sync,
) -> Vec<U> {
    let threads = threads.max(1);
    let (per_chunk, chunks) = chunking(items.len(), threads);
    let threads = threads.min(chunks);
    if threads <= 1 {
        return items.iter().map(&work).collect();
    }
    let next = AtomicUsize::new(0);
    let run = || {
        let mut done = Vec::new();
        loop {
            let chunk = next.fetch_add(1, Ordering::Relaxed);
            if chunk >= chunks {
                return done;
            }
            let start = chunk * per_chunk;
            let end = (start + per_chunk).min(items.len());
            done.push((
                chunk,
                items[start..end].iter().map(&work).collect::<Vec<U>>(),
            ));
        }
    };
    let mut done = std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads).map(|_| scope.spawn(run)).collect();
        let mut done = run();
        for helper in helpers {
            done.extend(
                helper
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            );
        }
        done
    });
    done.sort_unstable_by_key(|(chunk, _)| *chunk);
    done.into_iter().flat_map(|(_, results)| results).collect()
}

/// Work split in chunks that the background pool's threads take in order.
trait Chunked: Send + Sync {
    /// Runs the next chunk nobody has taken; `false` once every chunk is taken.
    fn run_next(&self) -> bool;
    /// Gives up on the job: a chunk failed (panicked), so its result never comes.
    fn abandon(&self);
}

/// A [`map_in_background`] job: `work` over `items`, in chunks.
struct MapJob<T, U, F> {
    items: Vec<T>,
    per_chunk: usize,
    chunks: usize,
    next: AtomicUsize,
    work: F,
    /// Each finished chunk's results, by chunk number.
    done: Mutex<Vec<(usize, Vec<U>)>>,
    reply: Mutex<Option<tokio::sync::oneshot::Sender<Vec<U>>>>,
}

impl<T, U, F> MapJob<T, U, F> {
    /// Whether the caller no longer waits for the results.
    fn given_up(&self) -> bool {
        self.reply
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_none_or(tokio::sync::oneshot::Sender::is_closed)
    }
}

impl<T, U, F> Chunked for MapJob<T, U, F>
where
    T: Send + Sync,
    U: Send,
    F: Fn(&[T]) -> Vec<U> + Send + Sync,
{
    fn run_next(&self) -> bool {
        let chunk = self.next.fetch_add(1, Ordering::Relaxed);
        if chunk >= self.chunks {
            return false;
        }
        if self.given_up() {
            // Nobody waits for the results (a writer dropped its batches to re-link them):
            // the chunks not yet taken are skipped.
            self.next.store(self.chunks, Ordering::Relaxed);
            return false;
        }
        let start = chunk * self.per_chunk;
        let end = (start + self.per_chunk).min(self.items.len());
        let results: Vec<U> = (self.work)(&self.items[start..end]);
        if results.len() != end - start {
            // Not one result per item: the job cannot give a result for every item.
            self.abandon();
            return true;
        }
        let mut done = self.done.lock().unwrap_or_else(PoisonError::into_inner);
        done.push((chunk, results));
        if done.len() == self.chunks {
            let mut all = std::mem::take(&mut *done);
            drop(done);
            all.sort_unstable_by_key(|(chunk, _)| *chunk);
            let results = all.into_iter().flat_map(|(_, results)| results).collect();
            if let Some(reply) = self
                .reply
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
            {
                // The caller may have stopped waiting (a writer dropped): nothing to do.
                let _ = reply.send(results);
            }
        }
        true
    }

    fn abandon(&self) {
        // Dropping the sender tells the waiting caller the results will not come.
        self.reply
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }
}

/// The background pool: jobs in the order they came, and threads waiting for them.
struct Pool {
    jobs: Mutex<VecDeque<Arc<dyn Chunked>>>,
    arrived: Condvar,
}

impl Pool {
    /// The process's pool, its threads started on first use; `None` if no thread could be
    /// started (then the caller does the work itself).
    fn get() -> Option<&'static Pool> {
        static POOL: OnceLock<Option<&'static Pool>> = OnceLock::new();
        *POOL.get_or_init(|| {
            let pool: &'static Pool = Box::leak(Box::new(Pool {
                jobs: Mutex::new(VecDeque::new()),
                arrived: Condvar::new(),
            }));
            let started = (0..available_threads())
                .filter(|n| {
                    std::thread::Builder::new()
                        .name(format!("maif-worker-{n}"))
                        .spawn(move || pool.work())
                        .is_ok()
                })
                .count();
            (started > 0).then_some(pool)
        })
    }

    fn submit(&self, job: Arc<dyn Chunked>) {
        self.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(job);
        self.arrived.notify_all();
    }

    /// A pool thread: runs the oldest job's chunks, forever.
    fn work(&self) {
        loop {
            let job = {
                let mut jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
                loop {
                    match jobs.front() {
                        Some(job) => break job.clone(),
                        None => {
                            jobs = self
                                .arrived
                                .wait(jobs)
                                .unwrap_or_else(PoisonError::into_inner)
                        }
                    }
                }
            };
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run_next())) {
                Ok(true) => {}
                Ok(false) => {
                    // Every chunk is taken: the next job's turn (unless another thread saw
                    // this first and removed it already).
                    let mut jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
                    if jobs.front().is_some_and(|front| Arc::ptr_eq(front, &job)) {
                        jobs.pop_front();
                    }
                }
                Err(_) => job.abandon(),
            }
        }
    }
}

/// Results of [`map_in_background`]. Dropping them unread gives the work up: the pool
/// skips the chunks no thread has taken yet.
pub(crate) enum InBackground<U> {
    /// Worked out already (no items, or no pool thread could be started).
    Ready(Vec<U>),
    /// On their way from the pool.
    Coming(tokio::sync::oneshot::Receiver<Vec<U>>),
}

impl<U> InBackground<U> {
    /// Whether the work is over (done, or failed), so [`Self::wait`] returns at once.
    pub(crate) fn is_over(&mut self) -> bool {
        match self {
            Self::Ready(_) => true,
            Self::Coming(receiver) => match receiver.try_recv() {
                Ok(results) => {
                    *self = Self::Ready(results);
                    true
                }
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => false,
                Err(tokio::sync::oneshot::error::TryRecvError::Closed) => true,
            },
        }
    }

    /// The results in the order of the items, or `None` if the work panicked.
    pub(crate) async fn wait(self) -> Option<Vec<U>> {
        match self {
            Self::Ready(results) => Some(results),
            Self::Coming(receiver) => receiver.await.ok(),
        }
    }
}

/// Runs `work` over `items` on the process's background pool (module documentation) and
/// returns at once; the results come in the order of `items`. `work` takes a chunk of at
/// most [`CHUNK`] items at a time (work done once per chunk, such as the signer's one field
/// inversion for all its signatures, is shared by the chunk's items) and returns one result
/// per item, in order; if it returns another number, the job fails as if it had panicked.
///
/// It needs no async runtime (the results come on a channel any executor can wait on); if
/// no pool thread could be started, the work runs here.
pub(crate) fn map_in_background<T, U, F>(items: Vec<T>, work: F) -> InBackground<U>
where
    T: Send + Sync + 'static,
    U: Send + 'static,
    F: Fn(&[T]) -> Vec<U> + Send + Sync + 'static,
{
    let Some(pool) = Pool::get() else {
        let (per_chunk, _) = chunking(items.len(), 1);
        let results: Vec<U> = items.chunks(per_chunk).flat_map(&work).collect();
        if results.len() != items.len() {
            // Failed, as on the pool: a receiver whose sender is gone.
            return InBackground::Coming(tokio::sync::oneshot::channel().1);
        }
        return InBackground::Ready(results);
    };
    if items.is_empty() {
        return InBackground::Ready(Vec::new());
    }
    let (per_chunk, chunks) = chunking(items.len(), available_threads());
    let (reply, receiver) = tokio::sync::oneshot::channel();
    pool.submit(Arc::new(MapJob {
        items,
        per_chunk,
        chunks,
        next: AtomicUsize::new(0),
        work,
        done: Mutex::new(Vec::with_capacity(chunks)),
        reply: Mutex::new(Some(reply)),
    }));
    InBackground::Coming(receiver)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Chunk work that does `work` to each item.
    fn each<T, U>(work: impl Fn(&T) -> U) -> impl Fn(&[T]) -> Vec<U> {
        move |chunk| chunk.iter().map(&work).collect()
    }

    #[test]
    fn results_keep_the_order_of_the_items_whatever_the_threads() {
        let items: Vec<u64> = (0..1000).collect();
        for threads in [0, 1, 2, 3, 8] {
            let doubled = parallel_map(&items, threads, |n| n * 2);
            assert_eq!(doubled, items.iter().map(|n| n * 2).collect::<Vec<_>>());
        }
        assert!(parallel_map(&[] as &[u64], 4, |n| *n).is_empty());
    }

    #[test]
    fn one_item_runs_on_the_calling_thread() {
        let caller = std::thread::current().id();
        let ran_on = parallel_map(&[1u8], 8, |_| std::thread::current().id());
        assert_eq!(ran_on, [caller]);
    }

    #[tokio::test]
    async fn background_jobs_keep_their_order_and_run_first_in_first_out() {
        let items: Vec<u64> = (0..10_000).collect();
        // Every item's start, in the order they started.
        let started = Arc::new(Mutex::new(Vec::new()));
        let jobs: Vec<_> = (0..4u64)
            .map(|job| {
                let started = started.clone();
                map_in_background(
                    items.clone(),
                    each(move |n: &u64| {
                        started.lock().expect("lock").push((job, *n));
                        n * 3 + job
                    }),
                )
            })
            .collect();
        for (job, results) in (0u64..).zip(jobs) {
            let results = results.wait().await.expect("no panic");
            assert_eq!(
                results,
                items.iter().map(|n| n * 3 + job).collect::<Vec<_>>()
            );
        }
        // A job's chunks are all handed out before the next job's, so when the next job's
        // first item starts, at most one chunk per other pool thread (taken, not yet begun)
        // of the job before it has not started.
        {
            let started = started.lock().expect("lock");
            let threads = available_threads();
            let per_chunk = chunking(items.len(), threads).0 as u64;
            for job in 0..3u64 {
                let next_began = started
                    .iter()
                    .position(|(j, _)| *j == job + 1)
                    .expect("every job ran");
                let chunks_begun_later = started[next_began..]
                    .iter()
                    .filter(|(j, n)| *j == job && n % per_chunk == 0)
                    .count();
                assert!(
                    chunks_begun_later < threads,
                    "job {job}: {chunks_begun_later} chunks began after the next job did"
                );
            }
        }
        assert!(
            map_in_background(Vec::<u8>::new(), each(|n: &u8| *n))
                .wait()
                .await
                .expect("empty")
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_panicking_background_job_is_reported_and_the_pool_goes_on() {
        let failed = map_in_background(
            (0..100u32).collect(),
            each(|n: &u32| {
                assert!(*n != 57, "the work fails on 57");
                *n
            }),
        );
        assert_eq!(failed.wait().await, None);
        // A chunk's work that does not give one result per item fails the job the same way.
        let short = map_in_background((0..100u32).collect(), |chunk: &[u32]| {
            chunk.iter().filter(|n| **n != 57).copied().collect()
        });
        assert_eq!(short.wait().await, None);
        let after = map_in_background((0..100u32).collect(), each(|n: &u32| n + 1));
        assert_eq!(
            after.wait().await.expect("no panic"),
            (1..101).collect::<Vec<_>>()
        );
    }

    #[tokio::test]
    async fn background_work_given_up_is_skipped() {
        let ran = Arc::new(AtomicUsize::new(0));
        let counted = ran.clone();
        // Half a second of work on two threads, were it all done.
        let given_up = map_in_background(
            (0..10_000u32).collect(),
            each(move |n: &u32| {
                counted.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(std::time::Duration::from_micros(100));
                *n
            }),
        );
        drop(given_up);
        // The pool takes jobs in order, so this one's results mean the one before it is out
        // of the way: only its chunks already under way ran.
        let after = map_in_background(vec![1u8, 2, 3], each(|n: &u8| *n))
            .wait()
            .await;
        assert_eq!(after, Some(vec![1, 2, 3]));
        let ran = ran.load(Ordering::Relaxed);
        assert!(
            ran < 1_000,
            "{ran} of 10,000 items ran after their results were given up"
        );
    }
}
