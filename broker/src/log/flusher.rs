//! Group commit for acks=-1: concurrent flush requests are batched into rounds, and each round
//! fsyncs every distinct log once, so producers share fsyncs instead of queueing for their own.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use std::future::Future;

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{LogError, PartitionLog};
use crate::storage_task;

/// Upper bound on requests gathered into one round, to bound the round's latency.
const MAX_ROUND: usize = 4096;

struct Request {
    log: Arc<PartitionLog>,
    /// Exclusive, as `PartitionLog::flush_until` takes it.
    offset: i64,
    done: oneshot::Sender<Result<(), LogError>>,
}

/// Handle to the flusher task. Cloneable; the task stops once every handle is dropped.
#[derive(Clone, Debug)]
pub struct Flusher {
    tx: mpsc::UnboundedSender<Request>,
    rounds: Arc<AtomicU64>,
}

fn stopped() -> LogError {
    LogError::Closed("the log flusher has stopped".into())
}

impl Flusher {
    /// Starts the flusher task on the current tokio runtime (panics outside one). At
    /// `shutdown` it keeps serving for `DRAIN`, the longest the connections may still drain
    /// (their acks=-1 produces need their fsyncs), then stops; the final flush of every log at
    /// shutdown covers whatever comes later.
    pub fn spawn(shutdown: CancellationToken) -> Flusher {
        let (tx, rx) = mpsc::unbounded_channel();
        let rounds = Arc::new(AtomicU64::new(0));
        tokio::spawn(
            flusher_task(rx, Arc::clone(&rounds), shutdown).instrument(tracing::info_span!("log_flusher")),
        );
        Flusher { tx, rounds }
    }

    /// Resolves once every offset up to and including `last_offset` in `log` is durable (or the
    /// fsync that was to make it so failed; then all waiters of that round get the error).
    /// Inclusive, because callers hold an appended batch's last offset: the one offset that
    /// must be durable before its producer hears so. The request is queued at once, before the
    /// returned future is polled, so a caller can queue several partitions into one round and
    /// then wait for each.
    pub fn flush_through(
        &self,
        log: Arc<PartitionLog>,
        last_offset: i64,
    ) -> impl Future<Output = Result<(), LogError>> + Send + 'static {
        let offset = last_offset + 1;
        let queued = if offset <= log.recovery_point() {
            None
        } else {
            let (done, wait) = oneshot::channel();
            Some(
                self.tx
                    .send(Request { log, offset, done })
                    .map(|()| wait)
                    .map_err(|_| stopped()),
            )
        };
        async move {
            match queued {
                None => Ok(()),
                Some(Err(e)) => Err(e),
                Some(Ok(wait)) => wait.await.map_err(|_| stopped())?,
            }
        }
    }

    /// Rounds completed so far (each round fsyncs each log in it at most once).
    pub fn rounds(&self) -> u64 {
        self.rounds.load(Ordering::Acquire)
    }
}

/// One log's share of a round.
struct Group {
    log: Arc<PartitionLog>,
    /// Exclusive: every offset below it is to be made durable.
    offset: i64,
    waiters: Vec<oneshot::Sender<Result<(), LogError>>>,
}

/// Merges a round's requests per log (by identity), keeping the highest offset asked for.
fn group(requests: impl Iterator<Item = Request>) -> Vec<Group> {
    let mut groups: HashMap<*const PartitionLog, Group> = HashMap::new();
    for req in requests {
        let group = groups.entry(Arc::as_ptr(&req.log)).or_insert_with(|| Group {
            log: Arc::clone(&req.log),
            offset: req.offset,
            waiters: Vec::new(),
        });
        group.offset = group.offset.max(req.offset);
        group.waiters.push(req.done);
    }
    groups.into_values().collect()
}

/// How long the flusher serves after shutdown: longer than the server's drain of connections.
const DRAIN: Duration = Duration::from_secs(15);

async fn flusher_task(
    mut rx: mpsc::UnboundedReceiver<Request>,
    rounds: Arc<AtomicU64>,
    shutdown: CancellationToken,
) {
    let mut batch = Vec::new();
    let drained = async {
        shutdown.cancelled().await;
        tokio::time::sleep(DRAIN).await;
    };
    tokio::pin!(drained);
    // Requests arriving while a round's fsyncs run queue up and form the next round.
    loop {
        let received = tokio::select! {
            n = rx.recv_many(&mut batch, MAX_ROUND) => n,
            () = &mut drained => {
                tracing::debug!("log flusher stopped after the shutdown drain");
                return;
            }
        };
        if received == 0 {
            return;
        }
        let syncs: Vec<_> = group(batch.drain(..))
            .into_iter()
            .map(|g| {
                let (log, offset) = (Arc::clone(&g.log), g.offset);
                let sync = storage_task::run("log_flush", move || log.flush_until(offset));
                (sync, g.waiters)
            })
            .collect();
        for (sync, waiters) in syncs {
            let result = sync.await.unwrap_or_else(|e| {
                Err(LogError::Io(Arc::new(std::io::Error::other(format!(
                    "flush task failed: {e}"
                )))))
            });
            for waiter in waiters {
                // A producer that gave up waiting is no concern of ours.
                let _ = waiter.send(result.clone());
            }
        }
        rounds.fetch_add(1, Ordering::AcqRel);
        metrics::counter!(crate::metrics::LOG_FLUSH_ROUNDS).increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::testutil::batch;
    use crate::log::LogConfig;

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
        let flusher = Flusher::spawn(CancellationToken::new());
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
        assert_eq!(
            produce_durably(&Flusher::spawn(CancellationToken::new()), &log, 1).await,
            1
        );
    }

    #[tokio::test]
    async fn the_first_batch_after_a_roll_is_fsynced() {
        let config = LogConfig {
            segment_bytes: 1,
            ..LogConfig::default()
        };
        let (_dir, log) = open(config);
        let flusher = Flusher::spawn(CancellationToken::new());
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
    async fn concurrent_flushes_share_rounds() {
        let (_dir, log) = log_with(0);
        let flusher = Flusher::spawn(CancellationToken::new());
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
        let rounds = flusher.rounds();
        // On one thread all 200 requests queue before the flusher runs: one shared fsync.
        assert!((1..=2).contains(&rounds), "{rounds} rounds for 200 flushes");
        assert!(
            (1..=2).contains(&log.data_syncs()),
            "{} fsyncs for 200 flushes",
            log.data_syncs()
        );
        // Already durable: answered without a round.
        flusher.flush_through(Arc::clone(&log), 199).await.unwrap();
        assert_eq!(flusher.rounds(), rounds);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_produces_on_threads_share_fsyncs() {
        let (_dir, log) = log_with(0);
        let flusher = Flusher::spawn(CancellationToken::new());
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
        // Group commit: a round's fsync covers every append made before it started.
        assert!(
            log.data_syncs() < 400,
            "{} fsyncs for 400 produces",
            log.data_syncs()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rounds_cover_several_logs() {
        let (_d1, a) = log_with(3);
        let (_d2, b) = log_with(5);
        let flusher = Flusher::spawn(CancellationToken::new());
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
        let flusher = Flusher::spawn(CancellationToken::new());
        let waits: Vec<_> = (0..5)
            .map(|_| tokio::spawn(flusher.flush_through(Arc::clone(&log), 0)))
            .collect();
        for w in waits {
            assert!(matches!(w.await.unwrap(), Err(LogError::Closed(_))));
        }
    }

    #[tokio::test]
    async fn after_shutdown_the_drain_is_still_flushed() {
        let (_dir, log) = log_with(0);
        let shutdown = CancellationToken::new();
        let flusher = Flusher::spawn(shutdown.clone());
        shutdown.cancel();
        tokio::task::yield_now().await;
        let info = log.append(&batch(1), 0).unwrap();
        flusher
            .flush_through(Arc::clone(&log), info.last_offset)
            .await
            .unwrap();
        assert_eq!(log.recovery_point(), 1);
    }
}
