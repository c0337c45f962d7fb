//! The log cleaner's scheduling (Kafka's LogCleaner and LogCleanerManager): `log.cleaner.threads`
//! threads of their own (`keel-log-cleaner-<n>`, never the async workers or the storage pool,
//! since a round can take minutes), each taking the filthiest compacted log whose dirty ratio
//! is above its `min.cleanable.dirty.ratio` (or whose dirty data is older than
//! `max.compaction.lag.ms`), cleaning it (`log::clean`) and recording the new first dirty offset
//! in `cleaner-offset-checkpoint` (Kafka's file and format). With nothing to clean, a thread
//! sleeps `log.cleaner.backoff.ms`. All threads share one I/O budget,
//! `log.cleaner.io.max.bytes.per.second`, and split `log.cleaner.dedupe.buffer.size`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use crate::broker::Broker;
use crate::log::{clean, cleanable, CleanOptions, DeletedSegments, OffsetMap, PartitionLog};

/// Kafka's file of each compacted partition's first dirty offset.
pub const CLEANER_CHECKPOINT: &str = "cleaner-offset-checkpoint";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Kafka's Throttler: the cleaners' bytes read and written, all threads together, kept under a
/// rate by sleeping, checked every 300 ms of work.
struct Throttler {
    window: Mutex<(Instant, u64)>,
}

const THROTTLE_CHECK: Duration = Duration::from_millis(300);

impl Throttler {
    fn maybe_throttle(&self, bytes: u64, rate: f64) {
        if rate >= 1e15 || rate.is_nan() || bytes == 0 {
            return;
        }
        // A rate below 1 KB/s is taken as 1 KB/s, and one sleep lasts at most a second, so a
        // stop is never held up for long.
        let rate = rate.max(1024.0);
        let mut window = lock(&self.window);
        window.1 += bytes;
        let elapsed = window.0.elapsed();
        if elapsed < THROTTLE_CHECK {
            return;
        }
        let due = Duration::from_secs_f64(window.1 as f64 / rate);
        if due > elapsed {
            // Held while sleeping: the other threads wait their turn, as in Kafka.
            std::thread::sleep((due - elapsed).min(Duration::from_secs(1)));
        }
        *window = (Instant::now(), 0);
    }
}

struct Shared {
    dir: PathBuf,
    /// Logs a thread is cleaning now, by topic id and partition.
    in_progress: Mutex<HashSet<(uuid::Uuid, i32)>>,
    /// Logs a round failed on: left alone until restart, as Kafka's uncleanable partitions.
    uncleanable: Mutex<HashSet<(uuid::Uuid, i32)>>,
    /// The topic id each checkpointed name had when last seen: a topic deleted and created
    /// again under its name starts with no checkpoint, as Kafka removes the entry on deletion.
    ids: Mutex<HashMap<String, uuid::Uuid>>,
    /// Serialises reading and rewriting the checkpoint file.
    checkpoint: Mutex<()>,
    /// Segments replaced by cleaning, their files to remove after `file.delete.delay.ms`.
    deleted: Mutex<Vec<(Instant, DeletedSegments)>>,
    stop: AtomicBool,
    /// Wakes sleeping threads at shutdown.
    wake: (Mutex<()>, Condvar),
    throttle: Throttler,
}

/// The cleaner threads; stopped by `shutdown` (or when the broker is gone).
pub struct LogCleaner {
    shared: Arc<Shared>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl LogCleaner {
    /// The cleaner of the log directory `dir`, not started.
    pub fn new(dir: &Path) -> LogCleaner {
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            in_progress: Mutex::new(HashSet::new()),
            uncleanable: Mutex::new(HashSet::new()),
            ids: Mutex::new(HashMap::new()),
            checkpoint: Mutex::new(()),
            deleted: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            wake: (Mutex::new(()), Condvar::new()),
            throttle: Throttler {
                window: Mutex::new((Instant::now(), 0)),
            },
        });
        LogCleaner {
            shared,
            threads: Mutex::new(Vec::new()),
        }
    }

    /// Starts `threads` threads (none unless `enabled`, Kafka's `log.cleaner.enable`).
    pub fn start(&self, broker: Weak<Broker>, enabled: bool, threads: usize) {
        let count = if enabled { threads } else { 0 };
        let mut handles = lock(&self.threads);
        for n in 0..count {
            let (broker, shared) = (broker.clone(), Arc::clone(&self.shared));
            match std::thread::Builder::new()
                .name(format!("keel-log-cleaner-{n}"))
                .spawn(move || run(broker, shared, n, count))
            {
                Ok(h) => handles.push(h),
                Err(e) => tracing::error!(error = %e, "cannot start a log cleaner thread"),
            }
        }
    }

    /// Stops the threads: a round in progress is abandoned (its output discarded), and the
    /// segments waiting for their delayed removal are removed now.
    pub fn shutdown(&self) {
        self.shared.stop.store(true, Ordering::Release);
        {
            let _guard = lock(&self.shared.wake.0);
            self.shared.wake.1.notify_all();
        }
        for handle in std::mem::take(&mut *lock(&self.threads)) {
            if handle.join().is_err() {
                tracing::error!("a log cleaner thread panicked");
            }
        }
        remove_deleted(&self.shared, true);
    }
}

fn setting<T: std::str::FromStr>(broker: &Broker, key: &str, default: T) -> T {
    broker
        .dynamic_config
        .value(key)
        .and_then(|(v, _)| v.trim().parse::<T>().ok())
        .unwrap_or(default)
}

/// The scheduling priority of the cleaner threads (a nice value). Cleaning is background
/// work that may take a whole core for seconds; at nice 10 a busy cleaner gets about a tenth of
/// the CPU that produce and fetch threads get when both want it, and all of an idle machine.
const CLEANER_NICE: libc::c_int = 10;

/// Linux's IOPRIO_CLASS_IDLE, shifted into place (IOPRIO_CLASS_SHIFT is 13): the thread's
/// reads and writes are served when the disk has nothing else to do.
const IOPRIO_IDLE: libc::c_int = 3 << 13;
/// IOPRIO_WHO_PROCESS: the target of ioprio_set is a thread id.
const IOPRIO_WHO_PROCESS: libc::c_int = 1;

/// Lowers the calling thread's CPU priority to `CLEANER_NICE` and its I/O priority to the idle
/// class (Linux applies both per thread). A cleaner reading a cold log at the disk's full speed
/// otherwise queues the producers' fsyncs behind its reads: produce p99 went from 45 to 200 ms
/// on this project's test machine. The idle class holds where the block scheduler honours
/// priorities (mq-deadline, bfq); the I/O budget (`log.cleaner.io.max.bytes.per.second`) bounds
/// the cleaner everywhere. A failure is logged and cleaning goes on at normal priority.
#[allow(unsafe_code)]
fn lower_priority() {
    // SAFETY: gettid, setpriority and ioprio_set take no pointers; they change only this
    // thread's priorities.
    let (nice, io) = unsafe {
        let tid = libc::gettid();
        (
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, CLEANER_NICE),
            libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, tid, IOPRIO_IDLE),
        )
    };
    if nice != 0 || io != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot lower the log cleaner's priority");
    }
}

fn run(broker: Weak<Broker>, shared: Arc<Shared>, n: usize, threads: usize) {
    let _span = tracing::info_span!("log_cleaner", thread = n).entered();
    lower_priority();
    let mut map: Option<(usize, f64, OffsetMap)> = None;
    while !shared.stop.load(Ordering::Acquire) {
        let Some(b) = broker.upgrade() else { return };
        let memory = (setting::<u64>(&b, "log.cleaner.dedupe.buffer.size", 128 << 20) / threads.max(1) as u64)
            .min(i32::MAX as u64) as usize;
        let load_factor = setting(&b, "log.cleaner.io.buffer.load.factor", 0.9f64);
        if map
            .as_ref()
            .is_none_or(|(m, f, _)| *m != memory || *f != load_factor)
        {
            map = Some((memory, load_factor, OffsetMap::new(memory, load_factor)));
        }
        let cleaned = map
            .as_mut()
            .is_some_and(|(_, _, map)| clean_filthiest(&b, &shared, map, threads));
        remove_deleted(&shared, false);
        let backoff = Duration::from_millis(setting::<u64>(&b, "log.cleaner.backoff.ms", 15_000));
        drop(b);
        if !cleaned {
            let guard = lock(&shared.wake.0);
            if !shared.stop.load(Ordering::Acquire) {
                let _ = shared.wake.1.wait_timeout(guard, backoff);
            }
        }
    }
}

/// Removes the files of replaced segments whose delay has passed (all of them with `all`).
fn remove_deleted(shared: &Shared, all: bool) {
    let due: Vec<DeletedSegments> = {
        let mut deleted = lock(&shared.deleted);
        let now = Instant::now();
        let (due, waiting) = std::mem::take(&mut *deleted)
            .into_iter()
            .partition(|(at, _)| all || *at <= now);
        *deleted = waiting;
        due.into_iter().map(|(_, d)| d).collect()
    };
    for d in due {
        if let Err(e) = d.remove() {
            tracing::warn!(error = %e, "cannot remove a cleaned segment's old files");
        }
    }
}

/// One pass of a thread: measures every compacted log, publishes the backlog, and cleans the
/// filthiest that is due. True when a round ran.
fn clean_filthiest(broker: &Broker, shared: &Shared, map: &mut OffsetMap, threads: usize) -> bool {
    let now = crate::clock::now_ms();
    let mut checkpoints = {
        let _guard = lock(&shared.checkpoint);
        crate::log::read_offset_checkpoint(&shared.dir, CLEANER_CHECKPOINT)
    };
    let topics = broker.logs.topics();
    let logs: Vec<(String, i32, Arc<PartitionLog>)> = topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .enumerate()
                .map(|(p, log)| (t.name.clone(), p as i32, Arc::clone(log)))
        })
        .filter(|(_, _, log)| log.config().compact)
        .collect();
    let id_of: HashMap<&str, uuid::Uuid> = topics.iter().map(|t| (t.name.as_str(), t.id)).collect();
    let mut resets: Vec<(String, i32, Option<i64>)> = Vec::new();
    {
        // A name now held by another topic than the one checkpointed: its entries go.
        let mut ids = lock(&shared.ids);
        for (name, id) in &id_of {
            if ids.insert((*name).to_string(), *id).is_some_and(|was| was != *id) {
                let stale: Vec<(String, i32)> =
                    checkpoints.keys().filter(|(t, _)| t == name).cloned().collect();
                for key in stale {
                    checkpoints.remove(&key);
                    resets.push((key.0, key.1, None));
                }
            }
        }
    }
    let uncleanable = lock(&shared.uncleanable).clone();
    let (mut backlog, mut max_ratio, mut max_delay) = (0u64, 0f64, 0i64);
    let mut best: Option<(f64, usize)> = None;
    let key_of = |topic: &str, partition: i32| (id_of.get(topic).copied().unwrap_or_default(), partition);
    for (i, (topic, partition, log)) in logs.iter().enumerate() {
        let key = key_of(topic, *partition);
        if uncleanable.contains(&key) {
            continue;
        }
        let range = cleanable(log, checkpoints.get(&(topic.clone(), *partition)).copied(), now);
        if range.reset_checkpoint {
            checkpoints.insert((topic.clone(), *partition), range.first_dirty);
            resets.push((topic.clone(), *partition, Some(range.first_dirty)));
        }
        if range.clean_bytes + range.dirty_bytes == 0 {
            continue;
        }
        backlog += range.dirty_bytes;
        max_ratio = max_ratio.max(range.dirty_ratio());
        max_delay = max_delay.max(range.compaction_delay_ms);
        if range.is_due(log.config().min_cleanable_dirty_ratio)
            && !lock(&shared.in_progress).contains(&key)
            && best.is_none_or(|(r, _)| range.dirty_ratio() > r)
        {
            best = Some((range.dirty_ratio(), i));
        }
    }
    metrics::gauge!(crate::metrics::LOG_CLEANER_DIRTY_BYTES).set(backlog as f64);
    metrics::gauge!(crate::metrics::LOG_CLEANER_MAX_DIRTY_RATIO).set(max_ratio);
    metrics::gauge!(crate::metrics::LOG_CLEANER_MAX_COMPACTION_DELAY).set(max_delay as f64 / 1000.0);
    metrics::gauge!(crate::metrics::LOG_CLEANER_UNCLEANABLE).set(uncleanable.len() as f64);
    if !resets.is_empty() {
        // Only the entries reset here: other threads' rounds may have moved others meanwhile.
        write_checkpoint(shared, &logs, |c| {
            for (topic, partition, offset) in resets {
                match offset {
                    Some(o) => c.insert((topic, partition), o),
                    None => c.remove(&(topic, partition)),
                };
            }
        });
    }
    let Some((_, i)) = best else { return false };
    let (topic, partition, log) = &logs[i];
    let key = key_of(topic, *partition);
    if !lock(&shared.in_progress).insert(key) {
        return false;
    }
    // Measured again now that the log is ours.
    let range = cleanable(log, checkpoints.get(&(topic.clone(), *partition)).copied(), now);
    let io_buffer = (setting::<usize>(broker, "log.cleaner.io.buffer.size", 512 << 10) / threads.max(1) / 2)
        .max(64 << 10);
    let rate = setting(broker, "log.cleaner.io.max.bytes.per.second", f64::MAX);
    let throttle = |bytes: u64| shared.throttle.maybe_throttle(bytes, rate);
    let opts = CleanOptions {
        now_ms: now,
        io_buffer,
        throttle: &throttle,
        abort: &shared.stop,
    };
    let started = Instant::now();
    let mut deleted = Vec::new();
    let outcome = clean(log, &range, map, &opts, &mut deleted);
    {
        let mut waiting = lock(&shared.deleted);
        for d in deleted {
            waiting.push((Instant::now() + Duration::from_millis(d.delay_ms()), d));
        }
    }
    let ran = match outcome {
        Ok(Some(stats)) => {
            write_checkpoint(shared, &logs, |c| {
                c.insert((topic.clone(), *partition), stats.end_offset);
            });
            let seconds = started.elapsed().as_secs_f64();
            metrics::counter!(crate::metrics::LOG_CLEANER_ROUNDS).increment(1);
            metrics::counter!(crate::metrics::LOG_CLEANER_BYTES_READ).increment(stats.bytes_read);
            metrics::counter!(crate::metrics::LOG_CLEANER_BYTES_WRITTEN).increment(stats.bytes_written);
            metrics::counter!(crate::metrics::LOG_CLEANER_MILLISECONDS)
                .increment(started.elapsed().as_millis() as u64);
            tracing::info!(
                partition = %format!("{topic}-{partition}"),
                end_offset = stats.end_offset,
                bytes_read = stats.bytes_read,
                bytes_written = stats.bytes_written,
                records_kept = stats.records_kept,
                records_read = stats.records_read,
                seconds,
                "cleaned log"
            );
            true
        }
        Ok(None) => false,
        // A full filesystem: the round is undone and tried again later.
        Err(e @ crate::log::LogError::NoSpace(_)) => {
            tracing::warn!(partition = %format!("{topic}-{partition}"), error = %e, "log cleaning stopped: no space");
            false
        }
        Err(e) => {
            tracing::error!(partition = %format!("{topic}-{partition}"), error = %e, "log cleaning failed: the partition is not cleaned again until restart");
            lock(&shared.uncleanable).insert(key);
            false
        }
    };
    lock(&shared.in_progress).remove(&key);
    ran
}

/// Rewrites the checkpoint with `change` applied, keeping only partitions that still exist.
fn write_checkpoint(
    shared: &Shared,
    logs: &[(String, i32, Arc<PartitionLog>)],
    change: impl FnOnce(&mut HashMap<(String, i32), i64>),
) {
    let _guard = lock(&shared.checkpoint);
    let mut entries = crate::log::read_offset_checkpoint(&shared.dir, CLEANER_CHECKPOINT);
    change(&mut entries);
    let live: HashSet<(&str, i32)> = logs.iter().map(|(t, p, _)| (t.as_str(), *p)).collect();
    let mut rows: Vec<(String, i32, i64)> = entries
        .into_iter()
        .filter(|((t, p), _)| live.contains(&(t.as_str(), *p)))
        .map(|((t, p), o)| (t, p, o))
        .collect();
    rows.sort();
    if let Err(e) = crate::log::write_offset_checkpoint(&shared.dir, CLEANER_CHECKPOINT, &rows) {
        tracing::warn!(error = %e, "cannot write the cleaner checkpoint");
    }
}
