//! Incremental fetch sessions (KIP-227; Kafka's FetchManager and FetchSessionCache): a consumer
//! that fetches many partitions sends only what changed, and hears only about partitions with
//! news (records, a moved high watermark or log start, an error).
//!
//! The rules are Kafka 4.1's (`FetchSession.scala`); what differs, and why:
//! - One cache of `max.incremental.fetch.session.cache.slots` sessions. Kafka splits its slots
//!   over 8 shards with session ids ranging per shard, which changes nothing a client sees
//!   except at fewer than 8 slots (Kafka then has none).
//! - A session id Kafka's shard lookup cannot place (negative) makes Kafka fail with
//!   UNKNOWN_SERVER_ERROR; here it is an id not found, FETCH_SESSION_ID_NOT_FOUND.
//! - One node has no followers, so no session is privileged.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// `session_id` of a request or response with no session.
pub const INVALID_SESSION_ID: i32 = 0;
/// `session_epoch` of a full fetch that asks for a new session.
pub const INITIAL_EPOCH: i32 = 0;
/// `session_epoch` of a full fetch that wants no session (and closes the one named).
pub const FINAL_EPOCH: i32 = -1;

/// Kafka's MIN_INCREMENTAL_FETCH_SESSION_EVICTION_MS: a session unused this long may be
/// evicted for any new one; younger sessions only for a larger one.
const EVICTION_MS: i64 = 120_000;

/// The epoch after `epoch`: from `i32::MAX` back to 1, never 0 (which means a full fetch).
pub fn next_epoch(epoch: i32) -> i32 {
    match epoch {
        e if e < 0 => FINAL_EPOCH,
        i32::MAX => 1,
        e => e + 1,
    }
}

/// A topic as a session names it: by id from Fetch v13 on, by name before.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SessionTopic {
    Name(String),
    Id(uuid::Uuid),
}

/// A partition as a session keys it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionPartition {
    pub topic: SessionTopic,
    pub partition: i32,
}

/// What a fetch request asks of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchParams {
    pub fetch_offset: i64,
    pub partition_max_bytes: i32,
    pub log_start_offset: i64,
    pub current_leader_epoch: i32,
    pub last_fetched_epoch: i32,
}

/// What the read of one partition gave, as far as a session cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOutcome {
    pub record_bytes: usize,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub error_code: i16,
}

/// A session error: answered at the top level, with session id 0 and no partitions, and the
/// session left as it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FetchSessionError {
    #[error("fetch session not found")]
    NotFound,
    #[error("fetch session epoch out of order")]
    InvalidEpoch,
    /// A session started with topic names continued with ids, or the reverse.
    #[error("fetch session used topic names and ids inconsistently")]
    TopicIdMismatch,
}

/// How a fetch request is served (Kafka's FetchContext).
#[derive(Debug, PartialEq)]
pub enum FetchContext {
    /// The request's partitions, every one in the response, no session.
    Sessionless,
    /// The request's partitions, every one in the response; a session caching them is created
    /// with the response if there is room (`FetchSessionCache::create`).
    Full,
    /// The session's partitions in its order, the request's changes applied; the response
    /// holds only those with news (`FetchSessionCache::complete`).
    Incremental {
        session_id: i32,
        partitions: Vec<(SessionPartition, FetchParams)>,
    },
    Error(FetchSessionError),
}

struct CachedPartition {
    params: FetchParams,
    high_watermark: i64,
    log_start_offset: i64,
}

struct Session {
    epoch: i32,
    uses_topic_ids: bool,
    created_ms: i64,
    last_used_ms: i64,
    /// The partitions in session order (the key is a sequence number: moving a partition to
    /// the end takes a new one).
    order: BTreeMap<u64, SessionPartition>,
    partitions: HashMap<SessionPartition, (u64, CachedPartition)>,
    next_seq: u64,
}

impl Session {
    fn push(&mut self, key: SessionPartition, cached: CachedPartition) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.insert(seq, key.clone());
        self.partitions.insert(key, (seq, cached));
    }

    fn remove(&mut self, key: &SessionPartition) {
        if let Some((seq, _)) = self.partitions.remove(key) {
            self.order.remove(&seq);
        }
    }

    fn move_to_end(&mut self, key: &SessionPartition) {
        if let Some((seq, _)) = self.partitions.get(key) {
            let old = *seq;
            let new = self.next_seq;
            self.next_seq += 1;
            self.order.remove(&old);
            self.order.insert(new, key.clone());
            if let Some(entry) = self.partitions.get_mut(key) {
                entry.0 = new;
            }
        }
    }

    /// Kafka's session.update: new partitions join at the end, known ones take the request's
    /// parameters in place, then the forgotten ones leave.
    fn update(&mut self, requested: &[(SessionPartition, FetchParams)], forgotten: &[SessionPartition]) {
        for (key, params) in requested {
            match self.partitions.get_mut(key) {
                Some((_, cached)) => cached.params = *params,
                None => self.push(
                    key.clone(),
                    CachedPartition {
                        params: *params,
                        high_watermark: -1,
                        log_start_offset: -1,
                    },
                ),
            }
        }
        for key in forgotten {
            self.remove(key);
        }
    }

    fn in_order(&self) -> Vec<(SessionPartition, FetchParams)> {
        self.order
            .values()
            .map(|key| (key.clone(), self.partitions[key].1.params))
            .collect()
    }

    /// Kafka's evictableByAll: the session had lived over two minutes when last used.
    fn old_enough(&self) -> bool {
        self.last_used_ms - self.created_ms > EVICTION_MS
    }
}

#[derive(Default)]
struct Sessions {
    by_id: HashMap<i32, Session>,
}

/// The broker's fetch sessions.
pub struct FetchSessionCache {
    max_sessions: usize,
    sessions: Mutex<Sessions>,
}

impl FetchSessionCache {
    /// A cache of `max_sessions` sessions (`max.incremental.fetch.session.cache.slots`); 0
    /// turns sessions off: full fetches then get session id 0 and clients stay sessionless.
    pub fn new(max_sessions: usize) -> FetchSessionCache {
        FetchSessionCache {
            max_sessions,
            sessions: Mutex::new(Sessions::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Sessions> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Kafka's FetchManager.newContext: how to serve a request with this session id and epoch.
    /// An incremental request's changes are applied to its session and its epoch advanced now,
    /// before the read, as Kafka does.
    pub fn new_context(
        &self,
        session_id: i32,
        epoch: i32,
        uses_topic_ids: bool,
        requested: &[(SessionPartition, FetchParams)],
        forgotten: &[SessionPartition],
        now_ms: i64,
    ) -> FetchContext {
        let mut sessions = self.lock();
        if epoch == INITIAL_EPOCH || epoch == FINAL_EPOCH {
            if session_id != INVALID_SESSION_ID {
                // A full request closes the session it names; naming an unknown one is no error.
                sessions.by_id.remove(&session_id);
            }
            self.publish(&sessions);
            return if epoch == FINAL_EPOCH {
                FetchContext::Sessionless
            } else {
                FetchContext::Full
            };
        }
        let Some(session) = sessions.by_id.get_mut(&session_id) else {
            return FetchContext::Error(FetchSessionError::NotFound);
        };
        if session.epoch != epoch {
            return FetchContext::Error(FetchSessionError::InvalidEpoch);
        }
        if session.uses_topic_ids != uses_topic_ids {
            return FetchContext::Error(FetchSessionError::TopicIdMismatch);
        }
        session.update(requested, forgotten);
        if session.partitions.is_empty() {
            // Nothing left to fetch: the session ends and the (empty) request is served alone.
            sessions.by_id.remove(&session_id);
            self.publish(&sessions);
            return FetchContext::Sessionless;
        }
        session.last_used_ms = now_ms;
        session.epoch = next_epoch(session.epoch);
        let partitions = session.in_order();
        self.publish(&sessions);
        metrics::counter!(crate::metrics::FETCH_INCREMENTAL).increment(1);
        FetchContext::Incremental {
            session_id,
            partitions,
        }
    }

    /// After a full fetch: a session caching every partition of its response, in response
    /// order, if there is room (a free slot, or one Kafka's eviction rules free). Returns its
    /// id, or 0 when none was made.
    pub fn create(
        &self,
        uses_topic_ids: bool,
        partitions: Vec<(SessionPartition, FetchParams, PartitionOutcome)>,
        now_ms: i64,
    ) -> i32 {
        if self.max_sessions == 0 {
            return INVALID_SESSION_ID;
        }
        let mut sessions = self.lock();
        if sessions.by_id.len() >= self.max_sessions
            && !Self::evict_one(&mut sessions, partitions.len(), now_ms)
        {
            return INVALID_SESSION_ID;
        }
        let id = loop {
            // Random, so a client cannot guess another's session (Kafka draws them the same way).
            let id = (uuid::Uuid::new_v4().as_u128() as u32 & 0x7fff_ffff) as i32;
            if id != INVALID_SESSION_ID && !sessions.by_id.contains_key(&id) {
                break id;
            }
        };
        let mut session = Session {
            epoch: next_epoch(INITIAL_EPOCH),
            uses_topic_ids,
            created_ms: now_ms,
            last_used_ms: now_ms,
            order: BTreeMap::new(),
            partitions: HashMap::with_capacity(partitions.len()),
            next_seq: 0,
        };
        for (key, params, outcome) in partitions {
            session.push(
                key,
                CachedPartition {
                    params,
                    high_watermark: if outcome.error_code != 0 {
                        -1
                    } else {
                        outcome.high_watermark
                    },
                    log_start_offset: outcome.log_start_offset,
                },
            );
        }
        sessions.by_id.insert(id, session);
        self.publish(&sessions);
        metrics::counter!(crate::metrics::FETCH_SESSIONS_CREATED).increment(1);
        id
    }

    /// Kafka's tryEvict, for a new session of `size` partitions: the least recently used
    /// session if unused for over two minutes, else the smallest session created over two
    /// minutes before its last use, if smaller than the new one.
    fn evict_one(sessions: &mut Sessions, size: usize, now_ms: i64) -> bool {
        let stale = sessions
            .by_id
            .iter()
            .min_by_key(|(id, s)| (s.last_used_ms, **id))
            .filter(|(_, s)| now_ms - s.last_used_ms > EVICTION_MS)
            .map(|(id, _)| *id);
        let victim = stale.or_else(|| {
            sessions
                .by_id
                .iter()
                .filter(|(_, s)| s.old_enough())
                .min_by_key(|(id, s)| (s.partitions.len(), **id))
                .filter(|(_, s)| size > s.partitions.len())
                .map(|(id, _)| *id)
        });
        match victim {
            Some(id) => {
                sessions.by_id.remove(&id);
                metrics::counter!(crate::metrics::FETCH_SESSION_EVICTIONS).increment(1);
                true
            }
            None => false,
        }
    }

    /// After an incremental fetch's read (`outcomes` in the order of the context's
    /// partitions): which partitions the response carries — those with records, a high
    /// watermark or log start the client has not heard, or an error — with the cache updated
    /// to what it now knows and the partitions that returned records moved to the end, so
    /// the next fetch starts with the others. An epoch moved meanwhile (a retried request) is
    /// INVALID_FETCH_SESSION_EPOCH.
    pub fn complete(
        &self,
        session_id: i32,
        request_epoch: i32,
        partitions: &[(SessionPartition, FetchParams)],
        outcomes: &[PartitionOutcome],
    ) -> Result<Vec<bool>, FetchSessionError> {
        let mut sessions = self.lock();
        let Some(session) = sessions.by_id.get_mut(&session_id) else {
            return Err(FetchSessionError::NotFound);
        };
        if session.epoch != next_epoch(request_epoch) {
            return Err(FetchSessionError::InvalidEpoch);
        }
        let mut included = Vec::with_capacity(outcomes.len());
        for ((key, _), outcome) in partitions.iter().zip(outcomes) {
            let Some((_, cached)) = session.partitions.get_mut(key) else {
                // Forgotten by a later request meanwhile: nothing to tell.
                included.push(false);
                continue;
            };
            let include = outcome.record_bytes > 0
                || cached.high_watermark != outcome.high_watermark
                || cached.log_start_offset != outcome.log_start_offset
                || outcome.error_code != 0;
            if include {
                cached.high_watermark = outcome.high_watermark;
                cached.log_start_offset = outcome.log_start_offset;
                if outcome.error_code != 0 {
                    // Sent again once the error clears.
                    cached.high_watermark = -1;
                }
                if outcome.record_bytes > 0 {
                    session.move_to_end(key);
                }
            }
            included.push(include);
        }
        Ok(included)
    }

    /// Kafka's NumIncrementalFetchSessions and NumIncrementalFetchPartitionsCached.
    fn publish(&self, sessions: &Sessions) {
        metrics::gauge!(crate::metrics::FETCH_SESSIONS).set(sessions.by_id.len() as f64);
        let cached: usize = sessions.by_id.values().map(|s| s.partitions.len()).sum();
        metrics::gauge!(crate::metrics::FETCH_SESSION_PARTITIONS).set(cached as f64);
    }

    #[cfg(test)]
    fn session_order(&self, id: i32) -> Vec<SessionPartition> {
        self.lock().by_id[&id].order.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests;
