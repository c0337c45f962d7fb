//! FindCoordinator: this single node coordinates every consumer group and transactional id.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::str_bytes;
use super::{Reply, RequestContext};

const GROUP: i8 = 0;
const TRANSACTION: i8 = 1;

/// The answer for one key: Ok(()) means "this node", else the error and its message.
fn coordinate(key_type: i8, key: &str) -> Result<(), (ResponseError, String)> {
    match key_type {
        GROUP if key.is_empty() => Err((
            ResponseError::InvalidRequest,
            "The group id must not be empty".into(),
        )),
        GROUP => Ok(()),
        TRANSACTION if key.is_empty() => Err((
            ResponseError::InvalidRequest,
            "The transactional id must not be empty".into(),
        )),
        TRANSACTION => Ok(()),
        other => Err((
            ResponseError::InvalidRequest,
            format!("Unsupported key type {other}"),
        )),
    }
}

pub async fn find_coordinator(
    ctx: Arc<RequestContext>,
    req: FindCoordinatorRequest,
) -> Reply<FindCoordinatorResponse> {
    let node = BrokerId(ctx.broker.node_id);
    let host = str_bytes(ctx.endpoint.host.clone());
    let port = ctx.endpoint.port as i32;
    let response = FindCoordinatorResponse::default();
    // v4 batches keys (KIP-699); earlier versions ask for one key and get one answer.
    if ctx.api_version >= 4 {
        let coordinators = req
            .coordinator_keys
            .iter()
            .map(|key: &StrBytes| {
                let c = Coordinator::default().with_key(key.clone());
                match coordinate(req.key_type, key.as_str()) {
                    Ok(()) => c.with_node_id(node).with_host(host.clone()).with_port(port),
                    Err((e, msg)) => c
                        .with_node_id(BrokerId(-1))
                        .with_port(-1)
                        .with_error_code(e.code())
                        .with_error_message(Some(str_bytes(msg))),
                }
            })
            .collect();
        return Reply::Ready(response.with_coordinators(coordinators));
    }
    Reply::Ready(match coordinate(req.key_type, req.key.as_str()) {
        Ok(()) => response.with_node_id(node).with_host(host).with_port(port),
        Err((e, msg)) => {
            let r = response
                .with_node_id(BrokerId(-1))
                .with_port(-1)
                .with_error_code(e.code());
            // error_message exists from v1.
            if ctx.api_version >= 1 {
                r.with_error_message(Some(str_bytes(msg)))
            } else {
                r
            }
        }
    })
}
