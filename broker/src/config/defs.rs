//! Every broker setting Keel knows, defined once: Kafka name, type, default, doc line.
//!
//! The loader, `--override` validation, DescribeConfigs and docs/configuration.md all read this
//! table, so a setting cannot exist in one place and be missing from another.

/// The type of a setting's value, as Kafka's ConfigDef names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Int,
    Long,
    Short,
    Bool,
    Double,
    Str,
    List,
}

impl Kind {
    /// The name DescribeConfigs v3+ reports (Kafka's `ConfigType`).
    pub fn describe_type(self) -> i8 {
        match self {
            Kind::Bool => 1,
            Kind::Str => 2,
            Kind::Int => 3,
            Kind::Short => 4,
            Kind::Long => 5,
            Kind::Double => 6,
            Kind::List => 7,
        }
    }

    /// Checks that `value` parses as this kind; the message names what was expected.
    pub fn check(self, value: &str) -> Result<(), String> {
        let ok = match self {
            Kind::Int => value.trim().parse::<i32>().is_ok(),
            Kind::Short => value.trim().parse::<i16>().is_ok(),
            Kind::Long => value.trim().parse::<i64>().is_ok(),
            Kind::Double => value.trim().parse::<f64>().is_ok(),
            Kind::Bool => matches!(value.trim().to_ascii_lowercase().as_str(), "true" | "false"),
            Kind::Str | Kind::List => true,
        };
        if ok {
            Ok(())
        } else {
            Err(format!("expected {self:?} but got {value:?}"))
        }
    }
}

/// Whether a setting may be changed while the broker runs (Kafka's KIP-226 dynamic broker
/// configs: AlterConfigs on a BROKER resource), and at which level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Update {
    /// Read-only while running: set in server.properties, `KAFKA_*` or `--override`.
    Static,
    /// Settable for this broker (resource name = its node id) or as the cluster-wide default
    /// (empty resource name).
    ClusterWide,
    /// Settable for this broker only (Kafka's listener and security settings).
    PerBroker,
}

/// One setting.
#[derive(Debug)]
pub struct ConfigDef {
    pub name: &'static str,
    pub kind: Kind,
    /// `None` means "no default" (Kafka's null), reported as a null value.
    pub default: Option<&'static str>,
    /// Allowed values for enumerations, compared case-sensitively as Kafka does.
    pub valid: &'static [&'static str],
    /// Accepted so compose files written for apache/kafka start unchanged, but Keel has no use
    /// for it (KRaft quorum, JVM thread pools, replication of a single node, SASL until Keel serves it).
    pub inert: bool,
    /// Whether AlterConfigs may change it at run time, as Kafka allows for the same name.
    pub update: Update,
    /// The smallest value allowed (Kafka's `atLeast`), for numbers; checked at start-up and when
    /// the setting is changed at run time.
    pub min: Option<i64>,
    pub doc: &'static str,
}

impl ConfigDef {
    /// Marks a setting Kafka lets AlterConfigs change for one broker or the cluster default.
    const fn cluster_wide(self) -> ConfigDef {
        ConfigDef {
            update: Update::ClusterWide,
            ..self
        }
    }

    /// Marks a setting Kafka lets AlterConfigs change for one broker only.
    const fn per_broker(self) -> ConfigDef {
        ConfigDef {
            update: Update::PerBroker,
            ..self
        }
    }

    /// Gives a numeric setting its smallest allowed value.
    const fn at_least(self, min: i64) -> ConfigDef {
        ConfigDef {
            min: Some(min),
            ..self
        }
    }

    pub fn validate(&self, value: &str) -> Result<(), String> {
        self.kind.check(value)?;
        if !self.valid.is_empty() && !self.valid.contains(&value.trim()) {
            return Err(format!("{value:?} is not one of {:?}", self.valid));
        }
        if let (Some(min), Ok(v)) = (self.min, value.trim().parse::<i64>()) {
            if v < min {
                return Err(format!("Value must be at least {min}, got {v}"));
            }
        }
        Ok(())
    }
}

const fn def(name: &'static str, kind: Kind, default: &'static str, doc: &'static str) -> ConfigDef {
    ConfigDef {
        name,
        kind,
        default: Some(default),
        valid: &[],
        inert: false,
        update: Update::Static,
        min: None,
        doc,
    }
}

const fn inert(name: &'static str, kind: Kind, default: &'static str) -> ConfigDef {
    ConfigDef {
        name,
        kind,
        default: Some(default),
        valid: &[],
        inert: true,
        update: Update::Static,
        min: None,
        doc: "Accepted for compatibility with apache/kafka configurations; no effect in Keel.",
    }
}

const fn opt(name: &'static str, kind: Kind, doc: &'static str) -> ConfigDef {
    ConfigDef {
        name,
        kind,
        default: None,
        valid: &[],
        inert: false,
        update: Update::Static,
        min: None,
        doc,
    }
}

pub const TIMESTAMP_TYPES: &[&str] = &["CreateTime", "LogAppendTime"];
pub const CLEANUP_POLICIES: &[&str] = &["delete", "compact", "compact,delete", "delete,compact"];
pub const COMPRESSION_TYPES: &[&str] = &["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"];

pub static BROKER_CONFIGS: &[ConfigDef] = &[
    def("node.id", Kind::Int, "1", "The id of this broker, reported in Metadata and persisted in meta.properties.").at_least(0),
    opt("listeners", Kind::List, "Comma-separated NAME://host:port to bind. Derived from advertised.listeners (host 0.0.0.0) when unset; PLAINTEXT://0.0.0.0:9092 when both are unset. Port 0 binds an ephemeral port."),
    opt("advertised.listeners", Kind::List, "Comma-separated NAME://host:port that clients are told to connect to, per listener name. Defaults to listeners, with 0.0.0.0 replaced by localhost."),
    def("listener.security.protocol.map", Kind::List, "PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT", "Listener name to security protocol. Keel serves PLAINTEXT only for now."),
    def("log.dirs", Kind::List, "./data", "Data directory (segment files, RocksDB metadata, meta.properties). Only the first entry is used."),
    opt("log.dir", Kind::Str, "Single data directory; used when log.dirs is not set."),
    def("num.partitions", Kind::Int, "1", "Partitions of an auto-created topic, and of CreateTopics without a count.").at_least(1),
    def("default.replication.factor", Kind::Short, "1", "Replication factor of auto-created topics; a single node only accepts 1.").at_least(1),
    def("auto.create.topics.enable", Kind::Bool, "true", "Create a topic when Metadata or Produce names one that does not exist."),
    def("delete.topic.enable", Kind::Bool, "true", "Allow DeleteTopics."),
    def("message.max.bytes", Kind::Int, "1048588", "Largest record batch accepted (topic: max.message.bytes).").cluster_wide().at_least(0),
    def("connections.max.idle.ms", Kind::Long, "600000", "A connection that sent no whole request and has no reply outstanding for this long is closed (a request trickled in more slowly than this is cut off).").at_least(1),
    def("socket.request.max.bytes", Kind::Int, "104857600", "Largest request frame; a larger size prefix closes the connection before anything is allocated.").at_least(1),
    def("socket.response.max.queued.bytes", Kind::Long, "104857600", "Keel's cap on the reply bytes one connection may have queued and not yet written (a fetch counts its maximum size from the moment it starts): past it the connection reads no further request until the client takes its replies, so a client that never reads cannot make the broker buffer without bound. One reply larger than the cap is still served, alone.").at_least(1),
    def("max.incremental.fetch.session.cache.slots", Kind::Int, "1000", "Incremental fetch sessions (KIP-227) the broker keeps; 0 turns them off.").at_least(0),
    def("fetch.max.bytes", Kind::Int, "57671680", "Largest Fetch response, whatever the request's max_bytes (the first batch of the first partition is returned whole even if larger, as in Kafka).").at_least(0),
    opt("metrics.listener", Kind::Str, "host:port of the Prometheus endpoint (GET /metrics, kafka_exporter's consumer-group names); unset serves none. Port 0 binds an ephemeral port."),
    def("max.connections", Kind::Int, "10000", "Connections served at once; further ones wait to be accepted. Lowering it at run time closes no connection: places are retired as connections end.").at_least(1).cluster_wide(),
    def("log.segment.bytes", Kind::Int, "1073741824", "Segment size at which the log rolls (topic: segment.bytes).").cluster_wide().at_least(14),
    opt("log.roll.ms", Kind::Long, "Segment age at which the log rolls (topic: segment.ms); log.roll.hours when unset.").cluster_wide().at_least(1),
    def("log.roll.hours", Kind::Int, "168", "Segment age in hours at which the log rolls.").at_least(1),
    opt("log.roll.jitter.ms", Kind::Long, "Largest random amount taken off each segment's roll age, so that partitions do not all roll at once (topic: segment.jitter.ms); log.roll.jitter.hours when unset.").cluster_wide().at_least(0),
    def("log.roll.jitter.hours", Kind::Int, "0", "log.roll.jitter.ms in hours.").at_least(0),
    opt("log.retention.ms", Kind::Long, "Retention time (topic: retention.ms); log.retention.minutes, then log.retention.hours when unset.").cluster_wide(),
    opt("log.retention.minutes", Kind::Int, "Retention time in minutes."),
    def("log.retention.hours", Kind::Int, "168", "Retention time in hours."),
    def("log.retention.bytes", Kind::Long, "-1", "Retention size per partition (topic: retention.bytes); -1 is unbounded.").cluster_wide(),
    def("log.retention.check.interval.ms", Kind::Long, "300000", "How often retention (retention.ms, retention.bytes) is applied to every log.").at_least(1),
    def("log.segment.delete.delay.ms", Kind::Long, "60000", "How long a segment deleted by retention keeps its files, renamed .deleted, for fetches still reading it (topic: file.delete.delay.ms).").cluster_wide().at_least(0),
    def("log.cleaner.enable", Kind::Bool, "true", "Run the log cleaner, which compacts topics whose cleanup.policy includes compact."),
    def("log.cleaner.threads", Kind::Int, "1", "Log cleaner threads (fixed at start in Keel).").at_least(0),
    def("log.cleaner.backoff.ms", Kind::Long, "15000", "How long a cleaner thread sleeps when no log needs cleaning.").cluster_wide().at_least(0),
    def("log.cleaner.dedupe.buffer.size", Kind::Long, "134217728", "Memory of the cleaners' offset maps, shared among the threads (24 bytes a key; the map grows to it as needed).").cluster_wide().at_least(1_048_576),
    def("log.cleaner.io.buffer.size", Kind::Int, "524288", "Bytes a cleaner thread reads at a time, shared among the threads.").cluster_wide().at_least(0),
    def("log.cleaner.io.buffer.load.factor", Kind::Double, "0.9", "How full a cleaner's offset map is filled.").cluster_wide(),
    def("log.cleaner.io.max.bytes.per.second", Kind::Double, "1.7976931348623157E308", "The cleaners' I/O budget: bytes read and written per second, all threads together.").cluster_wide(),
    def("log.cleaner.min.cleanable.ratio", Kind::Double, "0.5", "Dirty ratio above which a compacted log is cleaned (topic: min.cleanable.dirty.ratio).").cluster_wide(),
    def("log.cleaner.delete.retention.ms", Kind::Long, "86400000", "How long tombstones and transaction markers stay after the first cleaning that kept them (topic: delete.retention.ms).").cluster_wide().at_least(0),
    def("log.cleaner.min.compaction.lag.ms", Kind::Long, "0", "Records younger than this are not compacted (topic: min.compaction.lag.ms).").cluster_wide().at_least(0),
    def("log.cleaner.max.compaction.lag.ms", Kind::Long, "9223372036854775807", "Dirty records older than this are compacted whatever the dirty ratio, and a compacted log's active segment rolls after at most this long (topic: max.compaction.lag.ms).").cluster_wide().at_least(1),
    def("keel.log.dirs.max.bytes", Kind::Long, "-1", "Keel's broker-wide budget for all logs together: above it, the oldest closed segments of topics whose cleanup.policy includes delete are deleted first, oldest first across all topics, at each retention check. -1 is no budget: Keel cannot tell how much of a shared filesystem is its own, so the operator sets it (typically 70-80 % of a dedicated disk).").cluster_wide(),
    def("keel.disk.pressure.soft.ratio", Kind::Double, "0.85", "Used fraction of the log directory's filesystem (df's Use%) above which produce to topics not marked keel.priority=critical is refused with a retriable error and a throttle time.").cluster_wide(),
    def("keel.disk.pressure.hard.ratio", Kind::Double, "0.95", "Used fraction of the log directory's filesystem above which every produce is refused with a retriable error, critical topics included.").cluster_wide(),
    def("keel.disk.check.interval.ms", Kind::Long, "1000", "How often the log directory's filesystem usage is checked against the disk pressure thresholds.").at_least(1),
    def("keel.disk.pressure.throttle.ms", Kind::Int, "1000", "The throttle time a produce refused for disk pressure carries, so that clients back off.").cluster_wide().at_least(0),
    def("log.index.interval.bytes", Kind::Int, "4096", "Bytes between offset index entries (topic: index.interval.bytes).").cluster_wide().at_least(0),
    ConfigDef { name: "log.message.timestamp.type", kind: Kind::Str, default: Some("CreateTime"), valid: TIMESTAMP_TYPES, inert: false, update: Update::Static, min: None, doc: "CreateTime keeps the producer's timestamps; LogAppendTime stamps batches with the broker's clock (topic: message.timestamp.type)." }.cluster_wide(),
    ConfigDef { name: "log.cleanup.policy", kind: Kind::List, default: Some("delete"), valid: CLEANUP_POLICIES, inert: false, update: Update::Static, min: None, doc: "Default cleanup.policy of topics." }.cluster_wide(),
    ConfigDef { name: "compression.type", kind: Kind::Str, default: Some("producer"), valid: COMPRESSION_TYPES, inert: false, update: Update::Static, min: None, doc: "Default compression.type of topics. Keel stores batches as produced." }.cluster_wide(),
    def("min.insync.replicas", Kind::Int, "1", "Default min.insync.replicas of topics.").cluster_wide().at_least(1),
    def("log.flush.acks.all", Kind::Bool, "true", "Keel's durability policy: true answers acks=-1 produces only after their data is fsynced (shared group-commit fsyncs); false answers once the data reaches the OS, as Kafka does by default."),
    def("log.flush.before.visible", Kind::Bool, "true", "Keel's visibility policy: true lets consumers read only records on stable storage (the high watermark and the last stable offset never pass the fsynced offset; acks=0 and acks=1 records are fsynced by a background flush within log.flush.background.interval.ms), so a power loss never takes back a record a consumer has read; false makes records readable once they reach the OS, as Kafka does (fsync left to the OS)."),
    def("log.flush.offset.checkpoint.interval.ms", Kind::Int, "60000", "How often each partition's recovery point is written to recovery-point-offset-checkpoint, so a start after a crash scans only the segments after it (a clean shutdown writes it too, with .kafka_cleanshutdown, and the next start scans nothing).").at_least(1),
    def("log.flush.background.interval.ms", Kind::Long, "2", "With log.flush.before.visible: the longest an appended record not yet fsynced waits for its background fsync (and so to become readable); fsyncs of one partition are shared by everything appended meanwhile.").at_least(1),
    def("group.initial.rebalance.delay.ms", Kind::Int, "3000", "Delay of the first rebalance of a new classic group, so members starting together join one generation.").at_least(0),
    def("group.min.session.timeout.ms", Kind::Int, "6000", "Smallest session timeout a group member may ask for.").at_least(0),
    def("group.max.session.timeout.ms", Kind::Int, "1800000", "Largest session timeout a group member may ask for.").at_least(0),
    def("group.consumer.session.timeout.ms", Kind::Int, "45000", "KIP-848 consumer groups: a member that sends no ConsumerGroupHeartbeat for this long is fenced and its partitions reassigned.").at_least(1),
    def("group.consumer.heartbeat.interval.ms", Kind::Int, "5000", "KIP-848 consumer groups: the heartbeat interval the coordinator tells members to use.").at_least(1),
    def("group.consumer.min.session.timeout.ms", Kind::Int, "45000", "Smallest KIP-848 session timeout: the floor of group.consumer.session.timeout.ms and of a group's consumer.session.timeout.ms.").at_least(1),
    def("group.consumer.max.session.timeout.ms", Kind::Int, "60000", "Largest KIP-848 session timeout: the ceiling of group.consumer.session.timeout.ms and of a group's consumer.session.timeout.ms.").at_least(1),
    def("group.consumer.min.heartbeat.interval.ms", Kind::Int, "5000", "Smallest KIP-848 heartbeat interval: the floor of group.consumer.heartbeat.interval.ms and of a group's consumer.heartbeat.interval.ms.").at_least(1),
    def("group.consumer.max.heartbeat.interval.ms", Kind::Int, "15000", "Largest KIP-848 heartbeat interval: the ceiling of group.consumer.heartbeat.interval.ms and of a group's consumer.heartbeat.interval.ms.").at_least(1),
    def("group.consumer.assignors", Kind::List, "uniform,range", "KIP-848 server-side assignors members may choose (server_assignor); the first is the default."),
    def("group.consumer.max.size", Kind::Int, "2147483647", "Most members a KIP-848 consumer group may have; a further join gets GROUP_MAX_SIZE_REACHED.").at_least(1),
    def("producer.id.expiration.ms", Kind::Int, "86400000", "An idempotent producer's state in a partition (its sequences, for duplicate detection) is dropped this long after the timestamp of its last batch there, unless a transaction of it is open.").at_least(1),
    def("producer.id.expiration.check.interval.ms", Kind::Int, "600000", "How often expired producer state is looked for.").at_least(1),
    def("transaction.max.timeout.ms", Kind::Int, "900000", "Largest transaction.timeout.ms a transactional producer may ask for; a larger one gets INVALID_TRANSACTION_TIMEOUT.").at_least(1),
    def("transactional.id.expiration.ms", Kind::Int, "604800000", "A transactional id with no transaction open is forgotten after this long without a request.").at_least(1),
    def("transaction.abort.timed.out.transaction.cleanup.interval.ms", Kind::Int, "10000", "How often transactions open longer than their timeout are looked for and aborted.").at_least(1),
    def("transaction.remove.expired.transaction.cleanup.interval.ms", Kind::Int, "3600000", "How often expired transactional ids are removed.").at_least(1),
    def("offsets.retention.minutes", Kind::Int, "10080", "How long an empty group's committed offsets are kept.").at_least(1),
    def("offset.metadata.max.bytes", Kind::Int, "4096", "Largest metadata string of a committed offset.").at_least(0),
    inert("process.roles", Kind::List, "broker,controller"),
    inert("controller.quorum.voters", Kind::List, ""),
    inert("controller.quorum.bootstrap.servers", Kind::List, ""),
    inert("controller.listener.names", Kind::List, "CONTROLLER"),
    inert("inter.broker.listener.name", Kind::Str, "PLAINTEXT"),
    inert("offsets.topic.replication.factor", Kind::Short, "1"),
    inert("transaction.state.log.replication.factor", Kind::Short, "1"),
    inert("transaction.state.log.min.isr", Kind::Int, "1"),
    inert("num.network.threads", Kind::Int, "3").cluster_wide().at_least(1),
    inert("num.io.threads", Kind::Int, "8").cluster_wide().at_least(1),
    inert("num.recovery.threads.per.data.dir", Kind::Int, "1").cluster_wide().at_least(1),
    inert("socket.send.buffer.bytes", Kind::Int, "102400"),
    inert("socket.receive.buffer.bytes", Kind::Int, "102400"),
    inert("broker.id", Kind::Int, "-1"),
    inert("background.threads", Kind::Int, "10").cluster_wide().at_least(1),
    // Kafka's per-listener SASL settings (dynamic per broker); Keel serves no SASL yet.
    ConfigDef { default: None, ..inert("sasl.kerberos.service.name", Kind::Str, "") }.per_broker(),
    inert("sasl.kerberos.kinit.cmd", Kind::Str, "/usr/bin/kinit").per_broker(),
    inert("sasl.kerberos.min.time.before.relogin", Kind::Long, "60000").per_broker(),
    inert("sasl.kerberos.ticket.renew.jitter", Kind::Double, "0.05").per_broker(),
    inert("sasl.kerberos.ticket.renew.window.factor", Kind::Double, "0.8").per_broker(),
    inert("sasl.login.refresh.buffer.seconds", Kind::Short, "300").per_broker(),
    inert("sasl.login.refresh.min.period.seconds", Kind::Short, "60").per_broker(),
    inert("sasl.login.refresh.window.factor", Kind::Double, "0.8").per_broker(),
    inert("sasl.login.refresh.window.jitter", Kind::Double, "0.05").per_broker(),
];

/// Looks a setting up by its Kafka name.
pub fn broker_def(name: &str) -> Option<&'static ConfigDef> {
    BROKER_CONFIGS.iter().find(|d| d.name == name)
}
