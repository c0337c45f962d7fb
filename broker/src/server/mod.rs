//! The network side: listeners, the accept loop, shutdown, connections (framing, in-order
//! replies), the API table and ApiVersions, and the metrics endpoint. Knows framing and
//! dispatch, nothing of storage.

pub mod api_table;
mod api_versions;
mod connection;
mod frame;
pub use connection::{parse_request, ParsedRequest};
pub mod metrics_endpoint;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::api::Endpoint;
use crate::broker::Broker;
use crate::config::ListenerSpec;

/// How long shutdown waits for connections to finish the requests they already read.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A bound listener and the endpoint clients connecting through it are told to use.
pub struct BoundListener {
    pub name: String,
    pub socket: TcpListener,
    pub advertised_host: String,
    pub advertised_port: u16,
}

/// Binds every configured listener. A port of 0 binds an ephemeral port, and the advertised
/// endpoint of that listener then carries the port actually bound.
pub async fn bind(
    listeners: &[ListenerSpec],
    advertised: &[ListenerSpec],
) -> std::io::Result<Vec<BoundListener>> {
    let mut bound = Vec::new();
    for spec in listeners {
        let socket = TcpListener::bind((spec.bind_host(), spec.port))
            .await
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot bind listener {spec}: {e}")))?;
        let local = socket.local_addr()?;
        let (advertised_host, advertised_port) = match advertised.iter().find(|a| a.name == spec.name) {
            Some(a) if a.port == 0 || (spec.port == 0 && a.port == spec.port) => {
                (a.host.clone(), local.port())
            }
            Some(a) => (a.host.clone(), a.port),
            None => (spec.bind_host().to_string(), local.port()),
        };
        tracing::info!(
            listener = %spec.name,
            bound = %local,
            advertised = %format!("{advertised_host}:{advertised_port}"),
            "listener bound"
        );
        bound.push(BoundListener {
            name: spec.name.clone(),
            socket,
            advertised_host,
            advertised_port,
        });
    }
    Ok(bound)
}

/// Serves every listener until `shutdown` is cancelled, then stops accepting, lets each
/// connection finish the requests it has read (bounded by DRAIN_TIMEOUT) and returns.
pub async fn run(listeners: Vec<BoundListener>, broker: Arc<Broker>, shutdown: CancellationToken) {
    let tracker = TaskTracker::new();
    for listener in listeners {
        let endpoint = Arc::new(Endpoint {
            listener: listener.name.clone(),
            host: listener.advertised_host.clone(),
            port: listener.advertised_port,
        });
        let span = tracing::info_span!("listener", name = %listener.name);
        tracker.spawn(
            accept_loop(
                listener.socket,
                endpoint,
                broker.clone(),
                shutdown.clone(),
                tracker.clone(),
            )
            .instrument(span),
        );
    }
    shutdown.cancelled().await;
    tracker.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait()).await.is_err() {
        tracing::warn!("connections still busy after {DRAIN_TIMEOUT:?}; closing them");
    }
}

async fn accept_loop(
    socket: TcpListener,
    endpoint: Arc<Endpoint>,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        // Waiting for a permit before accepting applies max.connections as backpressure:
        // excess clients queue in the kernel's backlog instead of being refused.
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return,
            p = broker.connection_limit.acquire() => match p { Some(p) => p, None => return },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = socket.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Typically EMFILE: back off briefly rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // The permit was taken before the accept; if max.connections was lowered meanwhile it
        // may be one the new limit no longer has room for: wait for another.
        let permit = match permit.revalidate() {
            Some(p) => p,
            None => tokio::select! {
                _ = shutdown.cancelled() => return,
                p = broker.connection_limit.acquire() => match p { Some(p) => p, None => return },
            },
        };
        let _ = stream.set_nodelay(true);
        let conn = connection::Connection::new(stream, peer, endpoint.clone(), broker.clone());
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            conn.serve(shutdown).await;
            drop(permit);
        });
    }
}
