//! One client connection: Kafka framing (4-byte size prefix), request headers, and responses
//! written strictly in request order.
//!
//! The reader applies requests one at a time, in order, as Kafka does for a connection (so a
//! client's pipelined produces land in the order sent); a reply that must wait (an fsync, a
//! long poll) is handed to the writer as a pending task, so the reader can go on with the next
//! request while the writer sends replies in order.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::Decodable;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::api_table::{self, EncodedReply};
use super::api_versions;
use super::frame::Frame;
use crate::api::{Endpoint, ReplyBudget, RequestContext};
use crate::broker::Broker;

/// Requests in flight on one connection (replies queued for the writer); when full the reader
/// stops reading, which pushes back on a client that pipelines faster than it is answered.
/// The bytes of those replies are bounded apart, by `socket.response.max.queued.bytes`.
const MAX_QUEUED_REPLIES: usize = 64;

/// A request's frame grows as its bytes arrive, at most this much ahead of them, so a size
/// prefix that promises much and delivers little (slowloris) costs only what was delivered.
const READ_CHUNK: usize = 64 * 1024;

/// A reply on its way to the writer, with the part of the connection's reply budget it holds.
struct QueuedReply {
    reply: EncodedReply,
    reserved: usize,
}

pub struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    endpoint: Arc<Endpoint>,
    broker: Arc<Broker>,
}

/// Why the connection stops reading.
enum Stop {
    /// Clean end of stream or shutdown.
    Done,
    /// The client broke the protocol; the connection is closed after the replies already due.
    Violation(String),
}

impl Connection {
    pub fn new(
        stream: TcpStream,
        peer: SocketAddr,
        endpoint: Arc<Endpoint>,
        broker: Arc<Broker>,
    ) -> Connection {
        Connection {
            stream,
            peer,
            endpoint,
            broker,
        }
    }

    pub async fn serve(self, shutdown: CancellationToken) {
        let span = tracing::info_span!("connection", peer = %self.peer, listener = %self.endpoint.listener);
        async move {
            tracing::debug!("connection opened");
            let open = metrics::gauge!(crate::metrics::CONNECTIONS_OPEN);
            open.increment(1.0);
            let Connection {
                stream,
                peer,
                endpoint,
                broker,
            } = self;
            let (reader, writer) = stream.into_split();
            let (tx, rx) = mpsc::channel(MAX_QUEUED_REPLIES);
            let budget = Arc::new(ReplyBudget::new(broker.config.socket_response_max_queued_bytes));
            // The writer cancels this when the peer stops accepting replies, so the reader
            // does not keep applying requests nobody will hear about.
            let writer_gone = CancellationToken::new();
            // Requests read whose replies are not yet written (or dropped, for acks=0).
            let outstanding = Arc::new(AtomicUsize::new(0));
            let write_task = tokio::spawn(
                write_replies(
                    writer,
                    rx,
                    writer_gone.clone(),
                    outstanding.clone(),
                    budget.clone(),
                )
                .instrument(tracing::Span::current()),
            );
            let replies = Replies {
                tx,
                outstanding,
                budget,
            };
            let stop = read_requests(reader, replies, peer, endpoint, broker, &shutdown, &writer_gone).await;
            // The reader dropped its sender: the writer sends what is queued, then finishes.
            let _ = write_task.await;
            open.decrement(1.0);
            match stop {
                Stop::Done => tracing::debug!("connection closed"),
                Stop::Violation(reason) => tracing::warn!(%reason, "closing connection"),
            }
        }
        .instrument(span)
        .await
    }
}

/// The reader's end of the reply queue, counting the replies not yet written and the bytes
/// they hold of the connection's budget.
struct Replies {
    tx: mpsc::Sender<QueuedReply>,
    outstanding: Arc<AtomicUsize>,
    budget: Arc<ReplyBudget>,
}

async fn read_requests(
    mut reader: OwnedReadHalf,
    replies: Replies,
    peer: SocketAddr,
    endpoint: Arc<Endpoint>,
    broker: Arc<Broker>,
    shutdown: &CancellationToken,
    writer_gone: &CancellationToken,
) -> Stop {
    let max_size = broker.config.socket_request_max_bytes;
    let max_idle = Duration::from_millis(broker.config.connections_max_idle_ms);
    loop {
        let frame = tokio::select! {
            _ = shutdown.cancelled() => return Stop::Done,
            _ = writer_gone.cancelled() => return Stop::Done,
            f = read_frame(&mut reader, max_size) => f,
            // Kafka's connections.max.idle.ms: no whole request and no reply outstanding for
            // that long. Unlike Kafka, bytes of a request that trickles in (slowloris) do not
            // count as activity: a request must arrive whole within the limit.
            _ = idle(&replies.outstanding, max_idle) => {
                tracing::debug!(idle_ms = max_idle.as_millis() as u64, "closing idle connection");
                return Stop::Done;
            }
        };
        let frame = match frame {
            Ok(Some(f)) => f,
            Ok(None) => return Stop::Done,
            Err(stop) => return stop,
        };
        let (reply, mut reserved, mute_ms) =
            match handle_frame(frame, peer, &endpoint, &broker, &replies.budget).await {
                Ok(reply) => reply,
                Err(reason) => return Stop::Violation(reason),
            };
        if let EncodedReply::Ready(frame) = &reply {
            // A reply already made holds its size until written; waiting for that room here
            // is what stops a client that does not read from being read.
            reserved += replies.budget.reserve(frame.len()).await;
        }
        replies.outstanding.fetch_add(1, Ordering::AcqRel);
        if replies.tx.send(QueuedReply { reply, reserved }).await.is_err() {
            return Stop::Done;
        }
        if mute_ms > 0 {
            // A throttled client (KIP-219): its reply goes out now, its next request waits.
            tokio::time::sleep(Duration::from_millis(u64::from(mute_ms))).await;
        }
    }
}

/// Resolves once the connection has had no reply outstanding for `max_idle` in a row. Its
/// caller drops it whenever a frame arrives, which starts the count again.
async fn idle(outstanding: &AtomicUsize, max_idle: Duration) {
    loop {
        tokio::time::sleep(max_idle).await;
        if outstanding.load(Ordering::Acquire) == 0 {
            return;
        }
    }
}

/// Reads one size-prefixed frame. The size is checked before anything is allocated, so a
/// hostile 2 GiB prefix costs nothing.
async fn read_frame(reader: &mut OwnedReadHalf, max_size: i32) -> Result<Option<Bytes>, Stop> {
    let size = match reader.read_i32().await {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => {
            tracing::debug!(error = %e, "read failed");
            return Ok(None);
        }
    };
    if size < 0 || size > max_size {
        return Err(Stop::Violation(format!(
            "request size {size} outside 0..={max_size} (socket.request.max.bytes)"
        )));
    }
    let size = size as usize;
    let mut buf = BytesMut::with_capacity(size.min(READ_CHUNK));
    while buf.len() < size {
        buf.reserve((size - buf.len()).min(READ_CHUNK));
        let want = size - buf.len();
        match (&mut *reader).take(want as u64).read_buf(&mut buf).await {
            Ok(0) => {
                return Err(Stop::Violation(format!(
                    "connection ended after {} bytes of a {size}-byte request",
                    buf.len()
                )))
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "read failed");
                return Ok(None);
            }
        }
    }
    Ok(Some(buf.freeze()))
}

/// A request frame's header, parsed and checked against the API table.
pub enum ParsedRequest {
    /// ApiVersions at a version we do not serve: answered with v0 (KIP-511).
    UnsupportedApiVersions { correlation_id: i32 },
    Request {
        entry: &'static api_table::ApiEntry,
        version: i16,
        correlation_id: i32,
        header: RequestHeader,
        /// The request body after the header.
        body: Bytes,
    },
}

/// Parses a request frame's header (without its size prefix). An error is a protocol
/// violation that closes the connection.
pub fn parse_request(mut frame: Bytes) -> Result<ParsedRequest, String> {
    if frame.len() < 8 {
        return Err(format!(
            "request of {} bytes is shorter than a request header",
            frame.len()
        ));
    }
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let Ok(key) = ApiKey::try_from(raw_key) else {
        return Err(format!("unknown API key {raw_key}"));
    };
    let Some(entry) = api_table::lookup(key) else {
        return Err(format!("unsupported API {key:?} (key {raw_key})"));
    };
    if !entry.supports(version) {
        if key == ApiKey::ApiVersions {
            return Ok(ParsedRequest::UnsupportedApiVersions { correlation_id });
        }
        return Err(format!(
            "unsupported version {version} of {key:?} (supported {}..={})",
            entry.min_version, entry.max_version
        ));
    }
    let header = RequestHeader::decode(&mut frame, key.request_header_version(version))
        .map_err(|e| format!("malformed {key:?} v{version} request header: {e}"))?;
    Ok(ParsedRequest::Request {
        entry,
        version,
        correlation_id,
        header,
        body: frame,
    })
}

/// Parses the request header and routes the body through the API table. Returns the reply and
/// what its handler reserved of the connection's reply budget.
async fn handle_frame(
    frame: Bytes,
    peer: SocketAddr,
    endpoint: &Arc<Endpoint>,
    broker: &Arc<Broker>,
    budget: &Arc<ReplyBudget>,
) -> Result<(EncodedReply, usize, u32), String> {
    let (entry, version, correlation_id, header, body) = match parse_request(frame)? {
        ParsedRequest::UnsupportedApiVersions { correlation_id } => {
            // KIP-511: a client newer than us learns our versions from a v0 answer.
            tracing::debug!("ApiVersions version unsupported; answering with v0");
            return Ok((
                EncodedReply::Ready(api_versions::unsupported_version_reply(correlation_id)),
                0,
                0,
            ));
        }
        ParsedRequest::Request {
            entry,
            version,
            correlation_id,
            header,
            body,
        } => (entry, version, correlation_id, header, body),
    };
    let key = entry.key;
    let ctx = Arc::new(RequestContext::new(
        broker.clone(),
        key,
        version,
        correlation_id,
        header.client_id.map(|c| c.to_string()),
        endpoint.clone(),
        peer,
        budget.clone(),
    ));
    let span = tracing::debug_span!("request", api = ?key, version, correlation_id);
    let reply = entry
        .dispatch(ctx.clone(), body)
        .instrument(span)
        .await
        .map_err(|e| e.to_string())?;
    Ok((reply, ctx.reserved_reply_bytes(), ctx.muted_ms()))
}

async fn write_replies(
    writer: OwnedWriteHalf,
    mut rx: mpsc::Receiver<QueuedReply>,
    writer_gone: CancellationToken,
    outstanding: Arc<AtomicUsize>,
    budget: Arc<ReplyBudget>,
) {
    let mut writer = BufWriter::with_capacity(64 * 1024, writer);
    while let Some(QueuedReply { reply, reserved }) = rx.recv().await {
        let frame = match reply {
            EncodedReply::Ready(frame) => Some(frame),
            EncodedReply::Deferred(task) => {
                // Replies already buffered must not wait behind one that is still pending.
                if !task.is_finished() && writer.flush().await.is_err() {
                    writer_gone.cancel();
                    return;
                }
                match task.await {
                    Ok(Ok(frame)) => Some(frame),
                    Ok(Err(_)) | Err(_) => {
                        // Already logged where it failed; the client must not wait for a
                        // reply that will never come.
                        writer_gone.cancel();
                        return;
                    }
                }
            }
            EncodedReply::Nothing => None,
        };
        if let Some(frame) = frame {
            let mut ok = write_frame(&mut writer, frame).await.is_ok();
            // Flush when nothing else is queued, so pipelined replies share a syscall.
            if ok && rx.is_empty() {
                ok = writer.flush().await.is_ok();
            }
            if !ok {
                writer_gone.cancel();
                return;
            }
        }
        budget.release(reserved);
        outstanding.fetch_sub(1, Ordering::AcqRel);
    }
    let _ = writer.flush().await;
    let _ = writer.shutdown().await;
}

/// At most this many parts go to one `writev` (Linux takes 1024).
const MAX_IOVECS: usize = 64;

/// Writes a frame's parts in order. Small frames gather in the buffer, so pipelined replies
/// share a syscall; a large one (a fetch's) goes to the socket as `writev`s of its parts, which
/// the buffer passes through, so record data is not copied on its way out.
async fn write_frame(writer: &mut BufWriter<OwnedWriteHalf>, frame: Frame) -> std::io::Result<()> {
    let mut parts = frame.into_parts();
    let mut first = 0;
    loop {
        while parts.get(first).is_some_and(Bytes::is_empty) {
            first += 1;
        }
        if first == parts.len() {
            return Ok(());
        }
        let mut written = {
            let slices: Vec<std::io::IoSlice<'_>> = parts[first..]
                .iter()
                .take(MAX_IOVECS)
                .map(|p| std::io::IoSlice::new(p))
                .collect();
            writer.write_vectored(&slices).await?
        };
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while written > 0 {
            let part = &mut parts[first];
            let n = written.min(part.len());
            part.advance(n);
            written -= n;
            if part.is_empty() {
                first += 1;
            }
        }
    }
}
