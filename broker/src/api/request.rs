//! What every handler is given and gives back: the request's context and its reply. They sit
//! here, below the server that builds contexts and routes replies, so that handlers never
//! import the server.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

use kafka_protocol::messages::ApiKey;
use tokio::sync::Semaphore;

use crate::broker::Broker;

/// The endpoint a connection's listener advertises (Metadata, DescribeCluster answer with it,
/// so clients inside and outside a compose network each get an address they can reach).
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub listener: String,
    pub host: String,
    pub port: u16,
}

/// What a handler knows about the request it serves.
pub struct RequestContext {
    pub broker: Arc<Broker>,
    pub api_key: ApiKey,
    pub api_version: i16,
    pub correlation_id: i32,
    pub client_id: Option<String>,
    pub endpoint: Arc<Endpoint>,
    pub peer: SocketAddr,
    /// The connection's budget of queued reply bytes (`socket.response.max.queued.bytes`).
    pub reply_budget: Arc<ReplyBudget>,
    /// What this request reserved of the budget; the connection gives it back once the reply
    /// is written.
    reserved: AtomicUsize,
    /// How long the connection stops reading after this request (KIP-219's muting of a
    /// throttled client, which librdkafka relies on: it does not wait out a throttle itself).
    mute_ms: AtomicU32,
}

impl RequestContext {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        broker: Arc<Broker>,
        api_key: ApiKey,
        api_version: i16,
        correlation_id: i32,
        client_id: Option<String>,
        endpoint: Arc<Endpoint>,
        peer: SocketAddr,
        reply_budget: Arc<ReplyBudget>,
    ) -> RequestContext {
        RequestContext {
            broker,
            api_key,
            api_version,
            correlation_id,
            client_id,
            endpoint,
            peer,
            reply_budget,
            reserved: AtomicUsize::new(0),
            mute_ms: AtomicU32::new(0),
        }
    }

    /// Reserves room for a reply of up to `bytes` before starting work whose reply only exists
    /// later (a fetch): waits while the connection's queued replies fill its budget, which
    /// stops the connection reading further requests meanwhile.
    pub async fn reserve_reply_bytes(&self, bytes: usize) {
        let reserved = self.reply_budget.reserve(bytes).await;
        self.reserved.fetch_add(reserved, Ordering::AcqRel);
    }

    /// What this request has reserved so far.
    pub fn reserved_reply_bytes(&self) -> usize {
        self.reserved.load(Ordering::Acquire)
    }

    /// Throttles the client: once this request's reply is queued, the connection reads
    /// nothing more for `ms`.
    pub fn mute_connection(&self, ms: u32) {
        self.mute_ms.fetch_max(ms, Ordering::AcqRel);
    }

    /// How long the connection is to stop reading after this request.
    pub fn muted_ms(&self) -> u32 {
        self.mute_ms.load(Ordering::Acquire)
    }
}

/// The bytes of replies a connection may hold queued and unwritten. Replies reserve their
/// size before they are queued and give it back once written, so a client that stops reading
/// stops the connection reading its requests instead of growing the broker's memory.
pub struct ReplyBudget {
    permits: Semaphore,
    capacity: usize,
}

impl ReplyBudget {
    pub fn new(capacity: usize) -> ReplyBudget {
        // Semaphore permits are taken in u32 counts; 4 GiB is far beyond any useful budget.
        let capacity = capacity.clamp(1, u32::MAX as usize);
        ReplyBudget {
            permits: Semaphore::new(capacity),
            capacity,
        }
    }

    /// Waits for `bytes` of room and takes it; a reply larger than the whole budget takes all
    /// of it (served alone rather than never). Returns what was taken.
    pub async fn reserve(&self, bytes: usize) -> usize {
        let take = bytes.min(self.capacity);
        if take > 0 {
            self.permits
                .acquire_many(take as u32)
                .await
                .expect("the reply budget is never closed")
                .forget();
        }
        take
    }

    /// Gives back what a written (or dropped) reply had reserved.
    pub fn release(&self, bytes: usize) {
        if bytes > 0 {
            self.permits.add_permits(bytes);
        }
    }

    /// Room left now.
    pub fn available(&self) -> usize {
        self.permits.available_permits()
    }
}

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What a handler gives back.
pub enum Reply<R> {
    /// The response, ready now.
    Ready(R),
    /// A response that completes later (a produce waiting for its fsync, a fetch waiting for
    /// data). The connection reads and applies later requests meanwhile; responses still go
    /// out in request order.
    Deferred(BoxFuture<R>),
    /// No response at all (produce with acks=0).
    Nothing,
}
