//! The storage threads: every file and RocksDB operation a request or a background task needs
//! runs here, never on a tokio worker, so a slow disk delays only the requests that wait for it
//! and never the connections, heartbeats and timers sharing the workers.
//!
//! The threads are tokio's blocking pool (bounded by the runtime's `max_blocking_threads`). It
//! keeps no order between tasks: what must happen in order is ordered by its owner (a
//! partition's appends by its writer lock, and a connection's requests by the reader, which
//! waits for a produce's append before it reads the next request).
//!
//! A task runs inside the caller's tracing span, counts in `keel_storage_tasks_total` and
//! `keel_storage_tasks_running` (by task name), and a task that panics becomes `TaskFailed`,
//! which the services map to a Kafka error: never an empty success.

use std::future::Future;
use std::sync::Arc;

use crate::metrics::{STORAGE_TASKS, STORAGE_TASKS_RUNNING};

/// A storage task that did not return (it panicked, or the runtime is shutting down).
#[derive(Debug, Clone, thiserror::Error)]
#[error("storage task {task} failed: {reason}")]
pub struct TaskFailed {
    pub task: &'static str,
    pub reason: Arc<str>,
}

/// Starts `f` on a storage thread at once (before the returned future is polled, so a caller
/// can start several and then wait for each) and resolves with its result.
pub fn run<T, F>(task: &'static str, f: F) -> impl Future<Output = Result<T, TaskFailed>> + Send + 'static
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let span = tracing::Span::current();
    metrics::counter!(STORAGE_TASKS, "task" => task).increment(1);
    let running = Running::start(task);
    let handle = tokio::task::spawn_blocking(move || {
        let _running = running;
        span.in_scope(f)
    });
    async move {
        handle.await.map_err(|e| {
            let reason: Arc<str> = if e.is_panic() {
                "panicked".into()
            } else {
                "cancelled".into()
            };
            tracing::error!(task, %reason, "storage task failed");
            TaskFailed { task, reason }
        })
    }
}

/// Counts a task in `keel_storage_tasks_running` from its start until it ends, panic or not.
struct Running(metrics::Gauge);

impl Running {
    fn start(task: &'static str) -> Running {
        let gauge = metrics::gauge!(STORAGE_TASKS_RUNNING, "task" => task);
        gauge.increment(1.0);
        Running(gauge)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Runs a fallible `f` on a storage thread; a task that did not return becomes the caller's
/// error type (for the services, `BrokerError`, which answers UNKNOWN_SERVER_ERROR).
pub async fn try_run<T, E, F>(task: &'static str, f: F) -> Result<T, E>
where
    T: Send + 'static,
    E: From<TaskFailed> + Send + 'static,
    F: FnOnce() -> Result<T, E> + Send + 'static,
{
    run(task, f).await.map_err(E::from)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_task_runs_off_the_async_workers() {
        let worker = std::thread::current().id();
        let thread = run("test", || std::thread::current().id()).await.unwrap();
        assert_ne!(worker, thread);
    }

    #[tokio::test]
    async fn a_panicking_task_is_an_error_not_a_default() {
        let failed = run("exploding", || -> Vec<u8> { panic!("boom") })
            .await
            .unwrap_err();
        assert_eq!(failed.task, "exploding");
        assert_eq!(&*failed.reason, "panicked");
    }

    #[derive(Debug, PartialEq)]
    enum Failure {
        Task(&'static str),
        Own,
    }

    impl From<TaskFailed> for Failure {
        fn from(e: TaskFailed) -> Failure {
            Failure::Task(e.task)
        }
    }

    #[tokio::test]
    async fn try_run_keeps_the_tasks_own_error_and_maps_a_panic() {
        assert_eq!(
            try_run("t", || Err::<(), _>(Failure::Own)).await,
            Err(Failure::Own)
        );
        assert_eq!(try_run("t", || Ok::<_, Failure>(7)).await, Ok(7));
        let panicked = try_run("boom", || -> Result<(), Failure> { panic!("boom") }).await;
        assert_eq!(panicked, Err(Failure::Task("boom")));
    }
}
