//! The one way this crate spreads CPU work over cores: hashing and signing records in the
//! writer, hashing records and checking signatures in verification. Scoped threads take
//! small chunks from a shared queue (so a thread that gets less CPU does not hold the others
//! up), the calling thread works too, and nothing is started for work that one thread does
//! alone (a single signature check on open stays on the caller's thread).

use std::sync::atomic::{AtomicUsize, Ordering};

/// Threads to use for CPU-heavy work when the caller does not say: the cores available,
/// asked once per process (the writer asks per batch, and asking reads the cgroup's files:
/// about 0.6 % of a bulk import's CPU time).
pub(crate) fn available_threads() -> usize {
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *THREADS.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from))
}

/// At most this many items are taken from [`parallel_map`]'s queue at a time.
const CHUNK: usize = 16;

/// Runs `work` over `items` on up to `threads` threads (the calling thread included) and
/// returns the results in the order of `items`.
pub(crate) fn parallel_map<T: Sync, U: Send>(
    items: &[T],
    threads: usize,
    work: impl Fn(&T) -> U + Sync,
) -> Vec<U> {
    // Chunks small enough that every thread gets several, at most CHUNK items.
    let threads = threads.max(1);
    let per_chunk = (items.len() / (threads * 4)).clamp(1, CHUNK);
    let chunks = items.len().div_ceil(per_chunk);
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
