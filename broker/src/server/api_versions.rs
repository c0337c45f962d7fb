//! ApiVersions: advertises exactly the API table.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};

use super::api_table::{encode_response, SUPPORTED_APIS};
use super::frame::Frame;
use crate::api::{Reply, RequestContext};

fn response() -> ApiVersionsResponse {
    let api_keys = SUPPORTED_APIS
        .iter()
        .map(|e| {
            ApiVersion::default()
                .with_api_key(e.key as i16)
                .with_min_version(e.min_version)
                .with_max_version(e.max_version)
        })
        .collect();
    ApiVersionsResponse::default()
        .with_api_keys(api_keys)
        .with_finalized_features_epoch(-1)
}

pub async fn handle(_ctx: Arc<RequestContext>, _req: ApiVersionsRequest) -> Reply<ApiVersionsResponse> {
    Reply::Ready(response())
}

/// The KIP-511 answer to an ApiVersions version we do not support: a v0 response carrying
/// UNSUPPORTED_VERSION and our table, so the client can retry with a version we know.
pub fn unsupported_version_reply(correlation_id: i32) -> Frame {
    let r = response().with_error_code(ResponseError::UnsupportedVersion.code());
    // Encoding a default-built v0 ApiVersionsResponse cannot fail.
    encode_response(correlation_id, 0, &r).unwrap_or_default()
}
