//! docs/configuration.md, generated from the setting tables so it cannot drift from them.

use std::fmt::Write;

use super::defs::{Update, BROKER_CONFIGS};
use super::group::GROUP_CONFIGS;
use super::topic::TOPIC_CONFIGS;

pub fn markdown() -> String {
    let mut out = String::from(
        "# Configuration reference\n\n\
         Generated from `broker/src/config/` by `keel --print-config-reference`; a unit test keeps \
         this file equal to that output.\n\n\
         Keel reads settings as Kafka does, lowest layer first: defaults, a `server.properties` file \
         given as the first argument, `KAFKA_*` environment variables (the apache/kafka image's \
         convention: `KAFKA_LOG_DIRS` is `log.dirs`; `_` is `.`, `__` is `_`, `___` is `-`), then \
         `--override key=value` flags. `CLUSTER_ID` in the environment sets the cluster id on first \
         start. An invalid value stops the broker with a message naming the key; an unknown key is \
         logged as a warning.\n\n\
         Settings marked *cluster-wide* or *per-broker* in the Dynamic column can also be changed while \
         the broker runs, as in Kafka (KIP-226): AlterConfigs or IncrementalAlterConfigs on the BROKER \
         resource named by the node id (`kafka-configs --entity-type brokers --entity-name 1`), or on \
         the empty name for the cluster-wide default (`--entity-default`; *per-broker* settings cannot \
         be set there). Such values are kept in RocksDB, survive restarts, and take precedence over the \
         static layers: this broker's value, then the cluster default, then the static value. A name \
         Keel does not know is kept as a custom setting without effect, as Kafka does; a *read-only* \
         one is refused with INVALID_REQUEST.\n\n\
         ## Durability and visibility\n\n\
         By default Keel answers an acks=-1 produce only after its records are fsynced \
         (`log.flush.acks.all`), and lets consumers read only fsynced records \
         (`log.flush.before.visible`): the high watermark and the last stable offset stop at the \
         offset below which the log is on stable storage, and records produced with acks=0 or \
         acks=1 are fsynced by a background flush within `log.flush.background.interval.ms` (2 ms) \
         of their append (an fsync \
         in flight on the partition comes first), then become readable; this costs consumers the \
         fsync's time in end-to-end latency (docs/benchmarks.md). So a consumer never reads, processes and commits a \
         record that a power loss then takes back (and whose offset the log would then give to a \
         different record). fsyncs are shared: each partition has at most one in flight, and it \
         covers everything appended before it started. To behave as Kafka does (records readable \
         once written, fsync left to the OS), set both to false.\n\n\
         ## Broker settings\n\n| Setting | Type | Default | Dynamic | Description |\n|---|---|---|---|---|\n",
    );
    for d in BROKER_CONFIGS {
        let _ = writeln!(
            out,
            "| `{}` | {:?} | {} | {} | {} |",
            d.name,
            d.kind,
            d.default
                .map(|v| format!("`{v}`"))
                .unwrap_or_else(|| "(none)".into()),
            match d.update {
                Update::Static => "read-only",
                Update::ClusterWide => "cluster-wide",
                Update::PerBroker => "per-broker",
            },
            d.doc
        );
    }
    out.push_str(
        "\n## Topic settings\n\nSet with CreateTopics, AlterConfigs or IncrementalAlterConfigs and kept in RocksDB. \
         A topic without an override takes the broker setting named in the second column, else the default.\n\n\
         | Setting | Broker setting | Type | Default | Description |\n|---|---|---|---|---|\n",
    );
    for d in TOPIC_CONFIGS {
        let _ = writeln!(
            out,
            "| `{}` | {} | {:?} | `{}` | {} |",
            d.name,
            d.synonym.map(|s| format!("`{s}`")).unwrap_or_else(|| "-".into()),
            d.kind,
            d.fixed_default,
            d.doc
        );
    }
    out.push_str(
        "\n## Group settings\n\nKIP-848 consumer groups can be given their own values with IncrementalAlterConfigs or \
         AlterConfigs on a GROUP resource (`kafka-configs --entity-type groups --entity-name <group>`), kept \
         in RocksDB; a group without one uses the broker setting in the second column. A group need not \
         exist to be configured. Values must lie within the broker's `group.consumer.min.*`/`max.*` \
         bounds, and the session timeout must exceed the heartbeat interval; otherwise INVALID_CONFIG.\n\n\
         | Setting | Broker setting | Type | Description |\n|---|---|---|---|\n",
    );
    for d in GROUP_CONFIGS {
        let _ = writeln!(out, "| `{}` | `{}` | Int | {} |", d.name, d.broker_default, d.doc);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn docs_configuration_md_matches_the_tables() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md");
        let on_disk = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            on_disk == super::markdown(),
            "docs/configuration.md is stale: regenerate it with `keel --print-config-reference > docs/configuration.md`"
        );
    }
}
