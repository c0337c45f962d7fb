//! The one table of supported APIs. ApiVersions advertises exactly these entries and dispatch
//! routes through them, so an API cannot be advertised without a handler or handled without
//! being advertised.

use std::future::Future;
use std::sync::Arc;

use bytes::{BufMut, Bytes};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, HeaderVersion, Request};
use tracing::Instrument;

use super::frame::{Frame, SplicingBuf};
use crate::api::{self, BoxFuture, Reply, RequestContext};

/// A handler's reply, encoded as a response frame (size prefix and header included).
pub enum EncodedReply {
    Ready(Frame),
    Deferred(tokio::task::JoinHandle<Result<Frame, String>>),
    Nothing,
}

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("cannot decode {api:?} v{version} request: {reason}")]
    Malformed {
        api: ApiKey,
        version: i16,
        reason: String,
    },
    /// A broker bug: the handler built a response its version cannot carry. The connection
    /// is closed so the client retries at once instead of waiting for a timeout.
    #[error("cannot encode the {api:?} v{version} response: {reason}")]
    Unencodable {
        api: ApiKey,
        version: i16,
        reason: String,
    },
}

type Handler = fn(Arc<RequestContext>, Bytes) -> BoxFuture<Result<EncodedReply, DispatchError>>;
type Decoder = fn(Bytes, i16) -> Result<(), String>;

pub struct ApiEntry {
    pub key: ApiKey,
    pub min_version: i16,
    pub max_version: i16,
    handle: Handler,
    /// The decoding half of `handle` alone, for the request fuzzer.
    decode: Decoder,
}

macro_rules! api {
    ($key:ident, $min:literal ..= $max:literal, $req:ty, $handler:path) => {
        ApiEntry {
            key: ApiKey::$key,
            min_version: $min,
            max_version: $max,
            handle: |ctx, body| Box::pin(invoke::<$req, _, _>(ctx, body, $handler)),
            decode: |mut body, version| {
                <$req as kafka_protocol::protocol::Decodable>::decode(&mut body, version)
                    .map(drop)
                    .map_err(|e| e.to_string())
            },
        }
    };
}

/// Version floors follow Kafka 4.x (KIP-896), ceilings Kafka 4.1.
pub static SUPPORTED_APIS: &[ApiEntry] = &[
    api!(Produce, 3..=13, ProduceRequest, api::produce::handle),
    api!(Fetch, 4..=18, FetchRequest, api::fetch::handle),
    api!(
        ListOffsets,
        1..=10,
        ListOffsetsRequest,
        api::offsets::list_offsets
    ),
    api!(Metadata, 0..=13, MetadataRequest, api::metadata::handle),
    api!(
        FindCoordinator,
        0..=6,
        FindCoordinatorRequest,
        api::coordinator::find_coordinator
    ),
    api!(
        OffsetCommit,
        2..=9,
        OffsetCommitRequest,
        api::groups::offset_commit
    ),
    api!(OffsetFetch, 1..=9, OffsetFetchRequest, api::groups::offset_fetch),
    api!(JoinGroup, 0..=9, JoinGroupRequest, api::groups::join_group),
    api!(Heartbeat, 0..=4, HeartbeatRequest, api::groups::heartbeat),
    api!(LeaveGroup, 0..=5, LeaveGroupRequest, api::groups::leave_group),
    api!(SyncGroup, 0..=5, SyncGroupRequest, api::groups::sync_group),
    api!(
        DescribeGroups,
        0..=6,
        DescribeGroupsRequest,
        api::groups::describe_groups
    ),
    api!(ListGroups, 0..=5, ListGroupsRequest, api::groups::list_groups),
    api!(
        ApiVersions,
        0..=4,
        ApiVersionsRequest,
        super::api_versions::handle
    ),
    api!(
        CreateTopics,
        2..=7,
        CreateTopicsRequest,
        api::topics::create_topics
    ),
    api!(
        DeleteTopics,
        1..=6,
        DeleteTopicsRequest,
        api::topics::delete_topics
    ),
    api!(
        InitProducerId,
        0..=5,
        InitProducerIdRequest,
        api::producers::init_producer_id
    ),
    // Transaction version 1 (the transaction.version feature is not advertised): EndTxn and
    // TxnOffsetCommit before v5 (their transaction version 2 forms). AddPartitionsToTxn v4-5
    // (batched, verify-only) is served as Kafka answers a broker.
    api!(
        AddPartitionsToTxn,
        0..=5,
        AddPartitionsToTxnRequest,
        api::transactions::add_partitions_to_txn
    ),
    api!(
        AddOffsetsToTxn,
        0..=4,
        AddOffsetsToTxnRequest,
        api::transactions::add_offsets_to_txn
    ),
    api!(EndTxn, 0..=4, EndTxnRequest, api::transactions::end_txn),
    api!(
        TxnOffsetCommit,
        0..=4,
        TxnOffsetCommitRequest,
        api::transactions::txn_offset_commit
    ),
    api!(
        DescribeProducers,
        0..=0,
        DescribeProducersRequest,
        api::producers::describe_producers
    ),
    api!(
        DescribeTransactions,
        0..=0,
        DescribeTransactionsRequest,
        api::transactions::describe_transactions
    ),
    // v2 (a transactional id pattern, KIP-1152) is not served.
    api!(
        ListTransactions,
        0..=1,
        ListTransactionsRequest,
        api::transactions::list_transactions
    ),
    api!(
        DeleteRecords,
        0..=2,
        DeleteRecordsRequest,
        api::delete_records::handle
    ),
    api!(
        OffsetForLeaderEpoch,
        2..=4,
        OffsetForLeaderEpochRequest,
        api::offsets::offset_for_leader_epoch
    ),
    api!(
        DescribeConfigs,
        1..=4,
        DescribeConfigsRequest,
        api::configs::describe_configs
    ),
    api!(
        AlterConfigs,
        0..=2,
        AlterConfigsRequest,
        api::configs::alter_configs
    ),
    api!(
        CreatePartitions,
        0..=3,
        CreatePartitionsRequest,
        api::topics::create_partitions
    ),
    api!(
        IncrementalAlterConfigs,
        0..=1,
        IncrementalAlterConfigsRequest,
        api::configs::incremental_alter_configs
    ),
    api!(
        DeleteGroups,
        0..=2,
        DeleteGroupsRequest,
        api::groups::delete_groups
    ),
    api!(
        OffsetDelete,
        0..=0,
        OffsetDeleteRequest,
        api::groups::offset_delete
    ),
    api!(
        DescribeCluster,
        0..=2,
        DescribeClusterRequest,
        api::metadata::describe_cluster
    ),
    api!(
        DescribeTopicPartitions,
        0..=0,
        DescribeTopicPartitionsRequest,
        api::metadata::describe_topic_partitions
    ),
    api!(
        ConsumerGroupHeartbeat,
        0..=1,
        ConsumerGroupHeartbeatRequest,
        api::consumer_group::consumer_group_heartbeat
    ),
    api!(
        ConsumerGroupDescribe,
        0..=1,
        ConsumerGroupDescribeRequest,
        api::consumer_group::consumer_group_describe
    ),
];

pub fn lookup(key: ApiKey) -> Option<&'static ApiEntry> {
    SUPPORTED_APIS.iter().find(|e| e.key == key)
}

impl ApiEntry {
    pub fn supports(&self, version: i16) -> bool {
        (self.min_version..=self.max_version).contains(&version)
    }

    /// Decodes a request body of this API as `dispatch` would, without handling it.
    pub fn decode_only(&self, body: Bytes, version: i16) -> Result<(), String> {
        (self.decode)(body, version)
    }

    pub fn dispatch(
        &'static self,
        ctx: Arc<RequestContext>,
        body: Bytes,
    ) -> BoxFuture<Result<EncodedReply, DispatchError>> {
        (self.handle)(ctx, body)
    }
}

async fn invoke<Req, F, Fut>(
    ctx: Arc<RequestContext>,
    mut body: Bytes,
    handler: F,
) -> Result<EncodedReply, DispatchError>
where
    Req: Request + Send + 'static,
    Req::Response: Send + 'static,
    F: FnOnce(Arc<RequestContext>, Req) -> Fut,
    Fut: Future<Output = Reply<Req::Response>>,
{
    let version = ctx.api_version;
    let api = ctx.api_key;
    let request = Req::decode(&mut body, version).map_err(|e| DispatchError::Malformed {
        api,
        version,
        reason: e.to_string(),
    })?;
    let correlation_id = ctx.correlation_id;
    Ok(match handler(ctx, request).await {
        Reply::Ready(response) => EncodedReply::Ready(
            encode_response(correlation_id, version, &response)
                .map_err(|reason| DispatchError::Unencodable { api, version, reason })?,
        ),
        // The deferred reply runs as a task of its own, inside the request's span.
        Reply::Deferred(future) => EncodedReply::Deferred(tokio::spawn(
            async move {
                let response = future.await;
                encode_response(correlation_id, version, &response)
            }
            .instrument(tracing::Span::current()),
        )),
        Reply::Nothing => EncodedReply::Nothing,
    })
}

/// Encodes a response frame: size prefix, response header (v0 or v1 by the API's rules), body.
/// A fetch's record sets are referenced, not copied (`SplicingBuf`).
pub fn encode_response<R: Encodable + HeaderVersion + 'static>(
    correlation_id: i32,
    version: i16,
    response: &R,
) -> Result<Frame, String> {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let header_version = R::header_version(version);
    let result = (|| -> Result<Frame, String> {
        let size = header.compute_size(header_version).map_err(|e| e.to_string())?
            + response.compute_size(version).map_err(|e| e.to_string())?;
        let mut buf = SplicingBuf::new(4 + size, record_sets(response));
        buf.put_slice(&(size as i32).to_be_bytes());
        header
            .encode(&mut buf, header_version)
            .map_err(|e| e.to_string())?;
        response.encode(&mut buf, version).map_err(|e| e.to_string())?;
        Ok(buf.finish())
    })();
    if let Err(e) = &result {
        tracing::error!(error = %e, version, "failed to encode a response");
    }
    result
}

/// The record sets of a fetch response, in the order they are encoded: the bytes worth
/// referencing rather than copying. Every other response is small.
fn record_sets(response: &dyn std::any::Any) -> Vec<Bytes> {
    let Some(fetch) = response.downcast_ref::<FetchResponse>() else {
        return Vec::new();
    };
    fetch
        .responses
        .iter()
        .flat_map(|t| &t.partitions)
        .filter_map(|p| p.records.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_within_the_protocol_crate_ranges_and_unique() {
        for (i, e) in SUPPORTED_APIS.iter().enumerate() {
            let known = e.key.valid_versions();
            assert!(
                e.min_version >= known.min && e.max_version <= known.max,
                "{:?}",
                e.key
            );
            assert!(
                SUPPORTED_APIS[..i].iter().all(|o| o.key != e.key),
                "{:?} twice",
                e.key
            );
        }
    }
}
