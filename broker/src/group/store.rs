//! The group coordinator's durable state, behind a narrow trait so the state machines can be
//! tested without RocksDB, and the one writer that group-commits it.
//!
//! Every change of group state or committed offsets is handed, in the order the coordinator
//! decided it (under its lock, as a channel send), to the `GroupCommitter`: one thread that
//! takes every change queued since its last write and stores them as one synced write, then
//! runs each change's completion in order. So commits of many groups share one fsync, no lock
//! that other groups need is held while the disk works, and a reply that depends on a change is
//! sent from its completion: after the change is durable, or with an error when it is not.

use std::collections::BTreeMap;
use std::sync::{mpsc, Arc};

use crate::meta::{ConfigEntity, GroupWrite, MetaError, MetaStore};

/// Upper bound on changes stored by one write, to bound a write's latency.
const MAX_CHANGES_PER_WRITE: usize = 4096;

/// Where the coordinator's state is stored.
pub trait GroupStore: Send + Sync + 'static {
    /// Stores `writes` in order as one synced, atomic write.
    fn write(&self, writes: &[GroupWrite]) -> Result<(), MetaError>;
    /// Stores a group's settings (its overrides; none removes them), synced.
    fn put_group_config(&self, group: &str, overrides: &BTreeMap<String, String>) -> Result<(), MetaError>;
}

impl GroupStore for MetaStore {
    fn write(&self, writes: &[GroupWrite]) -> Result<(), MetaError> {
        self.write_group_changes(writes)
    }

    fn put_group_config(&self, group: &str, overrides: &BTreeMap<String, String>) -> Result<(), MetaError> {
        self.put_dynamic_configs(&ConfigEntity::Group(group.to_string()), overrides)
    }
}

/// What runs once a change was stored (or failed to be).
type Completion = Box<dyn FnOnce(Result<(), MetaError>) + Send>;

struct Change {
    writes: Vec<GroupWrite>,
    done: Completion,
}

/// Handle to the writer thread; the thread ends when the last handle is dropped, after storing
/// what was queued.
pub struct GroupCommitter {
    /// `None` only while dropping.
    tx: Option<mpsc::Sender<Change>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GroupCommitter {
    pub fn start(store: Arc<dyn GroupStore>) -> std::io::Result<GroupCommitter> {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("keel-group-writer".into())
            .spawn(move || tracing::info_span!("group_writer").in_scope(|| write_loop(&*store, &rx)))?;
        Ok(GroupCommitter {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Queues `writes`; `done` runs on the writer thread, after the write that stored them, in
    /// the order changes were submitted. Never blocks: callers hold the coordinator's lock.
    pub fn submit(&self, writes: Vec<GroupWrite>, done: impl FnOnce(Result<(), MetaError>) + Send + 'static) {
        let change = Change {
            writes,
            done: Box::new(done),
        };
        let sent = match &self.tx {
            Some(tx) => tx.send(change),
            None => Err(mpsc::SendError(change)),
        };
        if let Err(mpsc::SendError(change)) = sent {
            // The writer thread is gone (it only ends with its last handle, so this is a bug):
            // say so to whoever waits rather than leave them hanging.
            (change.done)(Err(MetaError::Closed));
        }
    }

    /// Resolves once everything submitted before it is stored (or failed).
    pub async fn sync(&self) -> Result<(), MetaError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(Vec::new(), move |r| {
            let _ = tx.send(r);
        });
        rx.await.unwrap_or(Err(MetaError::Closed))
    }
}

impl Drop for GroupCommitter {
    /// Stores what is queued and stops the writer, so that the store is released (and RocksDB
    /// closed) when the coordinator goes. Not when the last handle goes on the writer thread
    /// itself (a completion held it): that thread ends by itself once its queue is done.
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

fn write_loop(store: &dyn GroupStore, rx: &mpsc::Receiver<Change>) {
    while let Ok(first) = rx.recv() {
        let mut changes = vec![first];
        // Everything queued meanwhile joins this write: the group commit.
        while changes.len() < MAX_CHANGES_PER_WRITE {
            match rx.try_recv() {
                Ok(change) => changes.push(change),
                Err(_) => break,
            }
        }
        let batch: Vec<GroupWrite> = changes
            .iter_mut()
            .flat_map(|c| std::mem::take(&mut c.writes))
            .collect();
        let result = if batch.is_empty() {
            Ok(())
        } else {
            let r = store.write(&batch);
            metrics::counter!(crate::metrics::GROUP_STORE_WRITES).increment(1);
            match &r {
                Err(e) if e.is_no_space() => {
                    tracing::warn!(changes = changes.len(), error = %e, "cannot store group state: the filesystem is full; answered retriably")
                }
                Err(e) => tracing::error!(changes = changes.len(), error = %e, "cannot store group state"),
                Ok(()) => {}
            }
            r
        };
        for change in changes {
            let done = change.done;
            let result = result.clone();
            // A completion is the coordinator's code; if it panics (a bug), the writer must go
            // on storing everyone else's changes.
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || done(result))).is_err() {
                tracing::error!("a group state completion panicked");
            }
        }
    }
}

/// A store in memory, for the coordinator's tests: it records each write, can be made slow or
/// failing, and never touches a disk.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct MemoryStore {
    pub(crate) written: std::sync::Mutex<Vec<Vec<GroupWrite>>>,
    pub(crate) delay: std::sync::Mutex<std::time::Duration>,
    pub(crate) failing: std::sync::atomic::AtomicBool,
}

#[cfg(test)]
impl GroupStore for MemoryStore {
    fn write(&self, writes: &[GroupWrite]) -> Result<(), MetaError> {
        let delay = *self.delay.lock().unwrap();
        std::thread::sleep(delay);
        if self.failing.load(std::sync::atomic::Ordering::Acquire) {
            return Err(MetaError::Closed);
        }
        self.written.lock().unwrap().push(writes.to_vec());
        Ok(())
    }

    fn put_group_config(&self, _group: &str, _overrides: &BTreeMap<String, String>) -> Result<(), MetaError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;

    fn delete(group: &str) -> GroupWrite {
        GroupWrite::DeleteGroup(group.to_string())
    }

    #[test]
    fn changes_queued_during_a_write_share_the_next_one() {
        let store = Arc::new(MemoryStore::default());
        *store.delay.lock().unwrap() = Duration::from_millis(20);
        let committer = Arc::new(GroupCommitter::start(store.clone()).unwrap());
        let threads: Vec<_> = (0..64)
            .map(|i| {
                let committer = Arc::clone(&committer);
                std::thread::spawn(move || {
                    let (tx, rx) = mpsc::channel();
                    committer.submit(vec![delete(&format!("g{i}"))], move |r| tx.send(r).unwrap());
                    rx.recv().unwrap().unwrap();
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let written = store.written.lock().unwrap();
        assert_eq!(
            written.iter().map(Vec::len).sum::<usize>(),
            64,
            "every change stored once"
        );
        assert!(
            written.len() < 16,
            "{} synced writes for 64 changes",
            written.len()
        );
    }

    #[test]
    fn completions_run_in_submission_order_after_their_write() {
        let store = Arc::new(MemoryStore::default());
        let committer = GroupCommitter::start(store.clone()).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        for i in 0..200 {
            let (seen, store, tx) = (Arc::clone(&seen), Arc::clone(&store), tx.clone());
            committer.submit(vec![delete(&format!("g{i}"))], move |r| {
                r.unwrap();
                let stored = store
                    .written
                    .lock()
                    .unwrap()
                    .iter()
                    .flatten()
                    .any(|w| *w == delete(&format!("g{i}")));
                assert!(stored, "change {i} completed before it was stored");
                seen.lock().unwrap().push(i);
                tx.send(()).unwrap();
            });
        }
        for _ in 0..200 {
            rx.recv().unwrap();
        }
        assert_eq!(*seen.lock().unwrap(), (0..200).collect::<Vec<_>>());
    }

    #[test]
    fn a_failed_write_fails_every_change_in_it() {
        let store = Arc::new(MemoryStore::default());
        store.failing.store(true, std::sync::atomic::Ordering::Release);
        let committer = GroupCommitter::start(store.clone()).unwrap();
        let (tx, rx) = mpsc::channel();
        for i in 0..10 {
            let tx = tx.clone();
            committer.submit(vec![delete(&format!("g{i}"))], move |r| {
                tx.send(r.is_err()).unwrap()
            });
        }
        assert!((0..10).all(|_| rx.recv().unwrap()));
        assert!(store.written.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn sync_waits_for_what_was_submitted_before_it() {
        let store = Arc::new(MemoryStore::default());
        *store.delay.lock().unwrap() = Duration::from_millis(10);
        let committer = GroupCommitter::start(store.clone()).unwrap();
        for i in 0..5 {
            committer.submit(vec![delete(&format!("g{i}"))], |_| {});
        }
        committer.sync().await.unwrap();
        assert_eq!(
            store.written.lock().unwrap().iter().map(Vec::len).sum::<usize>(),
            5
        );
    }
}
