//! `GET /metrics` on `metrics.listener`: Prometheus' text format, with the consumer-group and
//! partition gauges computed from the coordinator's committed offsets and the logs' high
//! watermarks at each scrape, so a scrape never shows a stale lag.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::broker::Broker;
use crate::metrics::{
    CONSUMERGROUP_CURRENT_OFFSET, CONSUMERGROUP_LAG, CONSUMERGROUP_LAG_SUM, CONSUMERGROUP_MEMBERS,
    TOPIC_PARTITION_CURRENT_OFFSET, TOPIC_PARTITION_OLDEST_OFFSET,
};

/// Per group, topic and partition: (committed offset, lag), and members per group.
pub struct GroupLag {
    pub partitions: Vec<(String, String, i32, i64, i64)>,
    pub members: Vec<(String, usize)>,
}

/// Lag as kafka_exporter defines it: high watermark minus committed offset, never negative.
pub fn group_lag(broker: &Broker) -> GroupLag {
    let mut partitions = Vec::new();
    for (group, topic, partition, committed) in broker.groups.committed_offsets() {
        let Ok(log) = broker.logs.partition(&topic, partition) else {
            continue;
        };
        let lag = (log.high_watermark() - committed).max(0);
        partitions.push((group, topic, partition, committed, lag));
    }
    GroupLag {
        partitions,
        members: broker.groups.member_counts(),
    }
}

/// Sets every gauge from the broker's current state.
fn refresh(broker: &Broker) {
    for topic in broker.logs.topics() {
        for (p, log) in topic.partitions.iter().enumerate() {
            let labels = [("topic", topic.name.clone()), ("partition", p.to_string())];
            metrics::gauge!(TOPIC_PARTITION_CURRENT_OFFSET, &labels).set(log.high_watermark() as f64);
            metrics::gauge!(TOPIC_PARTITION_OLDEST_OFFSET, &labels).set(log.log_start_offset() as f64);
        }
    }
    let lag = group_lag(broker);
    let mut sums: HashMap<(String, String), i64> = HashMap::new();
    for (group, topic, partition, committed, partition_lag) in lag.partitions {
        let labels = [
            ("consumergroup", group.clone()),
            ("topic", topic.clone()),
            ("partition", partition.to_string()),
        ];
        metrics::gauge!(CONSUMERGROUP_CURRENT_OFFSET, &labels).set(committed as f64);
        metrics::gauge!(CONSUMERGROUP_LAG, &labels).set(partition_lag as f64);
        *sums.entry((group, topic)).or_default() += partition_lag;
    }
    for ((group, topic), sum) in sums {
        metrics::gauge!(CONSUMERGROUP_LAG_SUM, "consumergroup" => group, "topic" => topic).set(sum as f64);
    }
    for (group, members) in lag.members {
        metrics::gauge!(CONSUMERGROUP_MEMBERS, "consumergroup" => group).set(members as f64);
    }
}

/// Serves `GET /metrics` in Prometheus' text format until shutdown. A deliberately small
/// HTTP/1.1 responder: one request per connection, bounded request size.
pub async fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
) {
    loop {
        let (mut stream, _) = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let handle = handle.clone();
        let broker = broker.clone();
        let shutdown = shutdown.clone();
        let scrape = async move {
            let mut buf = vec![0u8; 8192];
            let mut n = 0;
            while n < buf.len() && !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf[n..])).await {
                    Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
                    Ok(Ok(k)) => n += k,
                }
            }
            let response = if buf[..n].starts_with(b"GET /metrics ") {
                refresh(&broker);
                handle.run_upkeep();
                let body = handle.render();
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
            };
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        };
        tokio::spawn(
            async move {
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    () = scrape => {}
                }
            }
            .instrument(tracing::Span::current()),
        );
    }
}
