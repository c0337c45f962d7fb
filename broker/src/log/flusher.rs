//! Group commit, pipelined per log: a log has at most one fsync in flight, and the flush
//! requests that arrive while it runs wait together for the next one, so concurrent producers
//! share fsyncs; logs never wait for each other's fsyncs (no global rounds). acks=-1 produces
//! wait for their fsync; other appends ask for a background fsync within an interval, after
//! which (with `log.flush.before.visible`) consumers can read them.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, Notify};
use tracing::Instrument;

use super::{LogError, PartitionLog};
use crate::storage_task;

type Waiter = oneshot::Sender<Result<(), LogError>>;

/// One log's flush requests: those waiting for the next fsync, the offset a background flush
/// is to reach, and whether a driver task is running for this log (it takes the waiters,
/// fsyncs, answers them, and repeats until nothing is left). Lives in the `PartitionLog` it
/// belongs to.
#[derive(Default)]
pub(crate) struct FlushQueue {
    state: Mutex<QueueState>,
    /// Cuts a driver's background wait short when a producer starts waiting.
    waiter_arrived: Notify,
}

#[derive(Default)]
struct QueueState {
    driving: bool,
    /// Exclusive: the highest offset a waiter or a background request needs durable.
    target: i64,
    waiters: Vec<Waiter>,
    /// When the oldest background request not yet taken by a pass arrived: the pass that
    /// covers it is due one background interval later.
    background_since: Option<tokio::time::Instant>,
}

impl FlushQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Handle to the flushes. Cloneable; holds no task of its own: each log's driver runs only
/// while that log has something to make durable.
#[derive(Clone, Debug)]
pub struct Flusher {
    flushes: Arc<AtomicU64>,
    /// How long a background request may wait, so that one fsync covers what comes meanwhile.
    background_interval: Duration,
}

fn stopped() -> LogError {
    LogError::Closed("the log flusher has stopped".into())
}

impl Flusher {
    pub fn new(background_interval: Duration) -> Flusher {
        Flusher {
            flushes: Arc::default(),
            background_interval,
        }
    }

    /// Resolves once every offset up to and including `last_offset` in `log` is durable (or the
    /// fsync that was to make it so failed; then all waiters of that fsync get the error).
    /// Inclusive, because callers hold an appended batch's last offset: the one offset that
    /// must be durable before its producer hears so. The request is queued at once, before the
    /// returned future is polled, so a caller can queue several partitions and then wait for
    /// each. Must be called inside a tokio runtime (the log's driver is a task).
    pub fn flush_through(
        &self,
        log: Arc<PartitionLog>,
        last_offset: i64,
    ) -> impl Future<Output = Result<(), LogError>> + Send + 'static {
        let offset = last_offset + 1;
        let wait = if offset <= log.recovery_point() {
            None
        } else {
            let (done, wait) = oneshot::channel();
            self.enqueue(log, offset, Some(done));
            Some(wait)
        };
        async move {
            match wait {
                None => Ok(()),
                Some(wait) => wait.await.map_err(|_| stopped())?,
            }
        }
    }

    /// Asks for every offset up to and including `last_offset` in `log` to be made durable
    /// within the background interval, without waiting (acks=0 and acks=1 appends).
    pub fn flush_in_background(&self, log: Arc<PartitionLog>, last_offset: i64) {
        let offset = last_offset + 1;
        if offset > log.recovery_point() {
            self.enqueue(log, offset, None);
        }
    }

    fn enqueue(&self, log: Arc<PartitionLog>, offset: i64, waiter: Option<Waiter>) {
        let queue = log.flush_queue();
        let start_driver = {
            let mut state = queue.lock();
            state.target = state.target.max(offset);
            if let Some(waiter) = waiter {
                state.waiters.push(waiter);
                queue.waiter_arrived.notify_one();
            } else {
                state
                    .background_since
                    .get_or_insert_with(tokio::time::Instant::now);
            }
            !std::mem::replace(&mut state.driving, true)
        };
        if start_driver {
            let flusher = self.clone();
            tokio::spawn(flusher.drive(log).instrument(tracing::info_span!("log_flusher")));
        }
    }

    /// A log's driver: while the log has something to make durable, takes every waiter and the
    /// highest offset asked for, makes it durable with one storage task, and answers the
    /// waiters. With no producer waiting, a pass starts once the oldest background request
    /// has waited the background interval, so that it covers what is appended meanwhile;
    /// under steady load the passes run back to back. Requests queued during an fsync form
    /// the next pass.
    async fn drive(self, log: Arc<PartitionLog>) {
        let queue = log.flush_queue();
        let mut failed = false;
        loop {
            let due = {
                let state = queue.lock();
                match state.background_since {
                    Some(since) if state.waiters.is_empty() => Some(since + self.background_interval),
                    _ => None,
                }
            };
            if let Some(due) = due {
                tokio::select! {
                    () = tokio::time::sleep_until(due) => {}
                    () = queue.waiter_arrived.notified() => {}
                }
            }
            let (target, waiters) = {
                let mut state = queue.lock();
                // After a failed pass only waiters are served: a background request would
                // retry the failing fsync forever. A target past the log end was truncated away.
                let reached =
                    failed || state.target <= log.recovery_point() || state.target > log.log_end_offset();
                if state.waiters.is_empty() && reached {
                    state.driving = false;
                    return;
                }
                state.background_since = None;
                (state.target, std::mem::take(&mut state.waiters))
            };
            let flushed = Arc::clone(&log);
            let result = storage_task::run("log_flush", move || flushed.flush_until(target))
                .await
                .unwrap_or_else(|e| {
                    Err(LogError::Io(Arc::new(std::io::Error::other(format!(
                        "flush task failed: {e}"
                    )))))
                });
            failed = result.is_err();
            if let Err(e) = &result {
                if waiters.is_empty() {
                    tracing::error!(dir = %log.dir().display(), error = %e, "background flush failed");
                }
            }
            for waiter in waiters {
                // A producer that gave up waiting is no concern of ours.
                let _ = waiter.send(result.clone());
            }
            self.flushes.fetch_add(1, Ordering::AcqRel);
            metrics::counter!(crate::metrics::LOG_FLUSHES).increment(1);
        }
    }

    /// fsync passes made so far, over all logs (each covers every waiter of its log queued
    /// before it started).
    pub fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::log::testutil::batch;
    use crate::log::LogConfig;

    fn flusher() -> Flusher {
        Flusher::new(Duration::from_millis(5))
    }

    fn open(config: LogConfig) -> (tempfile::TempDir, Arc<PartitionLog>) {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(PartitionLog::open(&dir.path().join("t-0"), config).unwrap());
        (dir, log)
    }

    fn log_with(n: usize) -> (tempfile::TempDir, Arc<PartitionLog>) {
        let (dir, log) = open(LogConfig::default());
        for _ in 0..n {
            log.append(&batch(1), 0).unwrap();
        }
        (dir, log)
    }

    /// Appends a batch of `n` records and waits, as an acks=-1 produce does, until it is durable;
    /// returns how many fsyncs of segment data that took.
    async fn produce_durably(flusher: &Flusher, log: &Arc<PartitionLog>, n: usize) -> u64 {
        let before = log.data_syncs();
        let info = log.append(&batch(n), 0).unwrap();
        flusher
            .flush_through(Arc::clone(log), info.last_offset)
            .await
            .unwrap();
        assert_eq!(
            log.recovery_point(),
            info.last_offset + 1,
            "batch ending at {} not durable",
            info.last_offset
        );
        log.data_syncs() - before
    }

    #[tokio::test]
    async fn a_single_record_batch_is_fsynced_before_it_is_acknowledged() {
        let (_dir, log) = open(LogConfig::default());
        let flusher = flusher();
        // Open sets the recovery point to the log end, 0: the first batch ends exactly there.
        assert_eq!(
            produce_durably(&flusher, &log, 1).await,
            1,
            "first batch of a new log"
        );
        // Right after an fsync the recovery point equals the next batch's only offset.
        assert_eq!(
            produce_durably(&flusher, &log, 1).await,
            1,
            "one record after an fsync"
        );
        assert_eq!(produce_durably(&flusher, &log, 3).await, 1, "several records");
        // Asking again for what is durable costs nothing.
        let syncs = log.data_syncs();
        flusher.flush_through(Arc::clone(&log), 4).await.unwrap();
        assert_eq!(log.data_syncs(), syncs);
    }

    #[tokio::test]
    async fn the_first_batch_after_a_reopen_is_fsynced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t-0");
        {
            let log = PartitionLog::open(&path, LogConfig::default()).unwrap();
            log.append(&batch(2), 0).unwrap();
        }
        let log = Arc::new(PartitionLog::open(&path, LogConfig::default()).unwrap());
        assert_eq!(log.recovery_point(), 2);
        assert_eq!(produce_durably(&flusher(), &log, 1).await, 1);
    }

    #[tokio::test]
    async fn the_first_batch_after_a_roll_is_fsynced() {
        let config = LogConfig {
            segment_bytes: 1,
            ..LogConfig::default()
        };
        let (_dir, log) = open(config);
        let flusher = flusher();
        produce_durably(&flusher, &log, 1).await;
        // This append rolls. The old segment was durable already; the new batch, the first of
        // the new segment, is fsynced before it is acknowledged.
        let syncs = produce_durably(&flusher, &log, 1).await;
        assert_eq!(log.recovery_point(), 2);
        assert_eq!(syncs, 1, "the new batch's fsync");
        // Rolled without a flush of the sealed segment: the flusher covers it too.
        log.append(&batch(1), 0).unwrap();
        let info = log.append(&batch(1), 0).unwrap();
        assert!(info.rolled);
        let syncs = log.data_syncs();
        flusher
            .flush_through(Arc::clone(&log), info.last_offset)
            .await
            .unwrap();
        assert_eq!(log.recovery_point(), info.last_offset + 1);
        assert_eq!(
            log.data_syncs() - syncs,
            2,
            "the sealed segment's data and the new batch's"
        );
    }

    #[tokio::test]
    async fn concurrent_flushes_share_fsyncs() {
        let (_dir, log) = log_with(0);
        let flusher = flusher();
        let mut tasks = Vec::new();
        for _ in 0..200 {
            let (flusher, log) = (flusher.clone(), Arc::clone(&log));
            tasks.push(tokio::spawn(async move {
                let info = log.append(&batch(1), 0).unwrap();
                flusher.flush_through(log, info.last_offset).await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(log.recovery_point(), 200);
        let passes = flusher.flushes();
        // On one thread all 200 requests queue before the flusher runs: one shared fsync.
        assert!((1..=2).contains(&passes), "{passes} fsync passes for 200 flushes");
        assert!(
            (1..=2).contains(&log.data_syncs()),
            "{} fsyncs for 200 flushes",
            log.data_syncs()
        );
        // Already durable: answered without a pass.
        flusher.flush_through(Arc::clone(&log), 199).await.unwrap();
        assert_eq!(flusher.flushes(), passes);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_produces_on_threads_share_fsyncs() {
        let (_dir, log) = log_with(0);
        let flusher = flusher();
        let tasks: Vec<_> = (0..400)
            .map(|_| {
                let (flusher, log) = (flusher.clone(), Arc::clone(&log));
                tokio::spawn(async move {
                    let info = log.append(&batch(1), 0).unwrap();
                    flusher
                        .flush_through(Arc::clone(&log), info.last_offset)
                        .await
                        .unwrap();
                    assert!(log.recovery_point() > info.last_offset);
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(log.recovery_point(), 400);
        // Group commit: a pass's fsync covers every append made before it started.
        assert!(
            log.data_syncs() < 400,
            "{} fsyncs for 400 produces",
            log.data_syncs()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn several_logs_flush_at_once() {
        let (_d1, a) = log_with(3);
        let (_d2, b) = log_with(5);
        let flusher = flusher();
        a.append(&batch(1), 0).unwrap();
        b.append(&batch(1), 0).unwrap();
        let (ra, rb) = tokio::join!(
            flusher.flush_through(Arc::clone(&a), 3),
            flusher.flush_through(Arc::clone(&b), 5)
        );
        ra.unwrap();
        rb.unwrap();
        assert_eq!((a.recovery_point(), b.recovery_point()), (4, 6));
    }

    #[tokio::test]
    async fn errors_reach_every_waiter() {
        let (_dir, log) = log_with(0);
        log.append(&batch(1), 0).unwrap();
        log.delete().unwrap();
        let flusher = flusher();
        let waits: Vec<_> = (0..5)
            .map(|_| tokio::spawn(flusher.flush_through(Arc::clone(&log), 0)))
            .collect();
        for w in waits {
            assert!(matches!(w.await.unwrap(), Err(LogError::Closed(_))));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_fsync_of_one_log_does_not_hold_back_another() {
        let (_d1, slow) = log_with(0);
        let (_d2, fast) = log_with(0);
        slow.make_fsync_slow(Duration::from_secs(3));
        let flusher = flusher();
        let s = slow.append(&batch(1), 0).unwrap();
        let f = fast.append(&batch(1), 0).unwrap();
        let slow_wait = tokio::spawn(flusher.flush_through(Arc::clone(&slow), s.last_offset));
        let started = std::time::Instant::now();
        flusher
            .flush_through(Arc::clone(&fast), f.last_offset)
            .await
            .unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the fast log waited {:?} for the slow one",
            started.elapsed()
        );
        assert_eq!(fast.recovery_point(), 1);
        assert!(!slow_wait.is_finished(), "the slow log's fsync is still running");
        slow_wait.await.unwrap().unwrap();
        assert_eq!(slow.recovery_point(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_queued_during_an_fsync_share_the_next_one() {
        let (_dir, log) = log_with(0);
        log.make_fsync_slow(Duration::from_millis(500));
        let flusher = flusher();
        let first = log.append(&batch(1), 0).unwrap();
        let first_wait = tokio::spawn(flusher.flush_through(Arc::clone(&log), first.last_offset));
        // Let the first fsync start, then queue ten more behind it.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let later: Vec<_> = (0..10)
            .map(|_| {
                let info = log.append(&batch(1), 0).unwrap();
                tokio::spawn(flusher.flush_through(Arc::clone(&log), info.last_offset))
            })
            .collect();
        first_wait.await.unwrap().unwrap();
        for wait in later {
            wait.await.unwrap().unwrap();
        }
        assert_eq!(log.recovery_point(), 11);
        assert_eq!(
            flusher.flushes(),
            2,
            "one pass for the first, one shared by the ten"
        );
        assert_eq!(log.data_syncs(), 2);
    }

    #[tokio::test]
    async fn a_background_flush_makes_records_durable_and_visible_then_wakes_readers() {
        let (_dir, log) = open(LogConfig {
            flush_before_visible: true,
            ..LogConfig::default()
        });
        let flusher = Flusher::new(Duration::from_millis(20));
        // With flush-before-visible the fsync is what moves the high watermark, and so what
        // wakes this partition's readers.
        let woken = log.progressed();
        tokio::pin!(woken);
        woken.as_mut().enable();
        for _ in 0..5 {
            let info = log.append(&batch(2), 0).unwrap();
            flusher.flush_in_background(Arc::clone(&log), info.last_offset);
        }
        assert_eq!(log.high_watermark(), 0, "not durable, not visible");
        tokio::time::timeout(Duration::from_secs(5), woken)
            .await
            .expect("readers woken after the background fsync");
        assert_eq!((log.recovery_point(), log.high_watermark()), (10, 10));
        // Readers are woken from inside the pass; the flusher counts it once the pass returns.
        tokio::time::timeout(Duration::from_secs(5), async {
            while flusher.flushes() == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the pass ends");
        assert_eq!(
            (flusher.flushes(), log.data_syncs()),
            (1, 1),
            "one fsync for the five appends"
        );
    }

    #[tokio::test]
    async fn a_producer_waiting_cuts_the_background_wait_short() {
        let (_dir, log) = log_with(0);
        let flusher = Flusher::new(Duration::from_secs(60));
        let first = log.append(&batch(1), 0).unwrap();
        flusher.flush_in_background(Arc::clone(&log), first.last_offset);
        tokio::task::yield_now().await;
        let second = log.append(&batch(1), 0).unwrap();
        tokio::time::timeout(
            Duration::from_secs(5),
            flusher.flush_through(Arc::clone(&log), second.last_offset),
        )
        .await
        .expect("an acks=-1 produce does not wait for the background interval")
        .unwrap();
        assert_eq!(log.recovery_point(), 2);
    }
}
