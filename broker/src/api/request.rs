//! What every handler is given and gives back: the request's context and its reply. They sit
//! here, below the server that builds contexts and routes replies, so that handlers never
//! import the server.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use kafka_protocol::messages::ApiKey;

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
