//! Produce/consume throughput benchmark against a running broker, driven by librdkafka.
//!
//! ```text
//! bench --bootstrap HOST:PORT --topic-prefix P --size BYTES --acks 1|-1|all \
//!       --partitions N --messages M [--window W] \
//!       [--fetch-max-bytes B] [--partition-fetch-max-bytes B]
//! bench create-topic --bootstrap HOST:PORT --topic T --partitions N [--config K=V]...
//! bench alter-topic --bootstrap HOST:PORT --topic T [--config K=V]...
//! bench delete-topic --bootstrap HOST:PORT --topic T
//! ```
//!
//! The two subcommands are for `scripts/bench.sh`'s runs of librdkafka's `rdkafka_performance`,
//! which produces to and consumes from a topic but cannot create one with N partitions; deleting
//! each run's topic keeps the matrix from filling the disk.
//!
//! Build it with `cargo build --workspace --all-targets` (it is `target/debug/examples/bench`);
//! `scripts/bench.sh` runs the whole matrix against a fresh broker.
//!
//! Creates a fresh topic (replication 1), produces M messages of BYTES random bytes each (no key,
//! partitions round-robin) with a `FutureProducer`, keeping up to W sends in flight, and records
//! each message's latency from `send` to its delivery report. Then reads every message back from
//! offset 0 with `assign()` (no consumer group: the broker has no group APIs yet) and times that;
//! the consumer's fetch limits default to 50 MiB per fetch and 10 MiB per partition.
//! Prints one `key=value` line; MB means 10^6 bytes of payload (keys, headers and framing are not
//! counted).

use std::error::Error;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::task::JoinSet;

type BenchResult<T> = Result<T, Box<dyn Error + Send + Sync>>;

/// How long the consumer may go without receiving anything before the run is declared failed.
const CONSUME_STALL: Duration = Duration::from_secs(30);
/// How long to wait for a new topic to show all its partitions with a leader.
const TOPIC_READY: Duration = Duration::from_secs(30);
/// Payload bytes kept in flight by default: enough that the broker sees several large batches
/// per partition at once (so acks=-1 can share fsyncs), small enough to keep latency readable.
const DEFAULT_WINDOW_BYTES: usize = 16 << 20;

const USAGE: &str = "usage: bench --bootstrap HOST:PORT --topic-prefix P --size BYTES \
                     --acks 1|-1|all --partitions N --messages M [--window W] \
                     [--fetch-max-bytes B] [--partition-fetch-max-bytes B] \
                     [--idempotence true|false]\n       \
                     bench create-topic --bootstrap HOST:PORT --topic T --partitions N [--config K=V]...\n       \
                     bench alter-topic --bootstrap HOST:PORT --topic T [--config K=V]...\n       \
                     bench delete-topic --bootstrap HOST:PORT --topic T";

struct Args {
    bootstrap: String,
    topic_prefix: String,
    size: usize,
    /// As librdkafka spells it: "1" or "all".
    acks: &'static str,
    partitions: i32,
    messages: usize,
    /// Most sends awaiting their delivery report at once.
    window: usize,
    fetch: FetchLimits,
    /// enable.idempotence of the producer (off by default, for the base matrix).
    idempotence: bool,
}

/// The consumer's fetch.max.bytes and max.partition.fetch.bytes.
#[derive(Clone, Copy)]
struct FetchLimits {
    max_bytes: usize,
    partition_max_bytes: usize,
}

impl Args {
    fn parse(mut argv: impl Iterator<Item = String>) -> BenchResult<Args> {
        let (mut bootstrap, mut topic_prefix, mut size, mut acks) = (None, None, None, None);
        let (mut partitions, mut messages, mut window) = (None, None, None);
        let (mut fetch_max, mut partition_fetch_max) = (None, None);
        let mut idempotence = false;
        while let Some(flag) = argv.next() {
            if flag == "-h" || flag == "--help" {
                return Err(USAGE.into());
            }
            let value = argv
                .next()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
            match flag.as_str() {
                "--bootstrap" => bootstrap = Some(value),
                "--topic-prefix" => topic_prefix = Some(value),
                "--size" => size = Some(number(&flag, &value)?),
                "--acks" => {
                    acks = Some(match value.as_str() {
                        "1" => "1",
                        "-1" | "all" => "all",
                        _ => return Err(format!("--acks must be 1, -1 or all, not {value}").into()),
                    })
                }
                "--partitions" => partitions = Some(number(&flag, &value)?),
                "--messages" => messages = Some(number(&flag, &value)?),
                "--window" => window = Some(number(&flag, &value)?),
                "--fetch-max-bytes" => fetch_max = Some(number(&flag, &value)?),
                "--partition-fetch-max-bytes" => partition_fetch_max = Some(number(&flag, &value)?),
                "--idempotence" => {
                    idempotence = match value.as_str() {
                        "true" => true,
                        "false" => false,
                        _ => return Err(format!("--idempotence must be true or false, not {value}").into()),
                    }
                }
                _ => return Err(format!("unknown argument {flag}\n{USAGE}").into()),
            }
        }
        let missing = |name: &str| format!("{name} is required\n{USAGE}");
        let size: usize = size.ok_or_else(|| missing("--size"))?;
        let args = Args {
            bootstrap: bootstrap.ok_or_else(|| missing("--bootstrap"))?,
            topic_prefix: topic_prefix.ok_or_else(|| missing("--topic-prefix"))?,
            size,
            acks: acks.ok_or_else(|| missing("--acks"))?,
            partitions: partitions.ok_or_else(|| missing("--partitions"))?,
            messages: messages.ok_or_else(|| missing("--messages"))?,
            window: window.unwrap_or((DEFAULT_WINDOW_BYTES / size.max(1)).clamp(1_000, 100_000)),
            fetch: FetchLimits {
                max_bytes: fetch_max.unwrap_or(50 << 20),
                partition_max_bytes: partition_fetch_max.unwrap_or(10 << 20),
            },
            idempotence,
        };
        if args.partitions < 1 || args.messages < 1 || args.window < 1 {
            return Err("--partitions, --messages and --window must be at least 1".into());
        }
        Ok(args)
    }

    /// acks as Kafka numbers it, for the report.
    fn acks_number(&self) -> &'static str {
        if self.acks == "all" {
            "-1"
        } else {
            self.acks
        }
    }
}

fn number<T: std::str::FromStr>(flag: &str, value: &str) -> BenchResult<T> {
    value
        .parse()
        .map_err(|_| format!("{flag}: not a valid number: {value}").into())
}

struct ProduceFigures {
    elapsed: Duration,
    /// Send-to-delivery-report latency of every message, sorted.
    latencies: Vec<Duration>,
}

struct ConsumeFigures {
    elapsed: Duration,
    bytes: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut argv = std::env::args().skip(1).peekable();
    let subcommand = match argv.peek().map(String::as_str) {
        Some(name @ ("create-topic" | "delete-topic" | "alter-topic")) => Some(name.to_string()),
        _ => None,
    };
    if let Some(name) = subcommand {
        argv.next();
        return match topic_command(&name, argv).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bench {name} failed: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let args = match Args::parse(argv) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench failed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> BenchResult<String> {
    let millis = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
    let topic = format!(
        "{}-{}b-acks{}-{}p-{millis}",
        args.topic_prefix,
        args.size,
        args.acks_number().replace('-', "m"),
        args.partitions
    );
    create_topic(&args.bootstrap, &topic, args.partitions, &[]).await?;

    let produced = produce(&args, &topic).await?;
    let consumed = {
        let (bootstrap, topic) = (args.bootstrap.clone(), topic.clone());
        let (partitions, messages, fetch) = (args.partitions, args.messages, args.fetch);
        tokio::task::spawn_blocking(move || consume(&bootstrap, &topic, partitions, messages, fetch))
            .await??
    };
    let expected = (args.size * args.messages) as u64;
    if consumed.bytes != expected {
        return Err(format!("consumed {} payload bytes, produced {expected}", consumed.bytes).into());
    }

    let bytes = expected as f64;
    let produce_s = produced.elapsed.as_secs_f64();
    let consume_s = consumed.elapsed.as_secs_f64();
    let ms = |q: f64| percentile(&produced.latencies, q).as_secs_f64() * 1e3;
    Ok(format!(
        "size={} acks={} partitions={} idempotence={} messages={} window={} \
         fetch_max_bytes={} partition_fetch_max_bytes={} \
         produce_s={produce_s:.2} produce_msgs_s={:.0} produce_mb_s={:.1} \
         p50_ms={:.2} p99_ms={:.2} max_ms={:.2} \
         consume_s={consume_s:.2} consume_msgs_s={:.0} consume_mb_s={:.1}",
        args.size,
        args.acks_number(),
        args.partitions,
        args.idempotence,
        args.messages,
        args.window,
        args.fetch.max_bytes,
        args.fetch.partition_max_bytes,
        args.messages as f64 / produce_s,
        bytes / produce_s / 1e6,
        ms(0.50),
        ms(0.99),
        ms(1.0),
        args.messages as f64 / consume_s,
        bytes / consume_s / 1e6,
    ))
}

/// `create-topic` / `delete-topic` / `alter-topic`: `--bootstrap`, `--topic`, (to create)
/// `--partitions`, and (to create or alter) `--config key=value`, repeatable. `alter-topic`
/// is AlterConfigs: the topic's settings become exactly those named.
async fn topic_command(name: &str, mut argv: impl Iterator<Item = String>) -> BenchResult<()> {
    let (mut bootstrap, mut topic, mut partitions) = (None, None, None);
    let mut configs: Vec<(String, String)> = Vec::new();
    while let Some(flag) = argv.next() {
        let value = argv.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--bootstrap" => bootstrap = Some(value),
            "--topic" => topic = Some(value),
            "--partitions" => partitions = Some(number::<i32>(&flag, &value)?),
            "--config" => {
                let (k, v) = value
                    .split_once('=')
                    .ok_or_else(|| format!("--config wants key=value, not {value}"))?;
                configs.push((k.to_string(), v.to_string()));
            }
            _ => return Err(format!("unknown argument {flag} for {name}").into()),
        }
    }
    let missing = |flag: &str| format!("{flag} is required for {name}");
    let bootstrap = bootstrap.ok_or_else(|| missing("--bootstrap"))?;
    let topic = topic.ok_or_else(|| missing("--topic"))?;
    if name == "create-topic" {
        let partitions = partitions.ok_or_else(|| missing("--partitions"))?;
        return create_topic(&bootstrap, &topic, partitions, &configs).await;
    }
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()?;
    let options = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(30)));
    if name == "alter-topic" {
        let mut alter = AlterConfig::new(ResourceSpecifier::Topic(&topic));
        for (k, v) in &configs {
            alter = alter.set(k, v);
        }
        for result in admin.alter_configs(&[alter], &options).await? {
            result.map_err(|(resource, code)| format!("AlterConfigs {resource:?}: {code}"))?;
        }
        return Ok(());
    }
    for result in admin.delete_topics(&[topic.as_str()], &options).await? {
        result.map_err(|(name, code)| format!("DeleteTopics {name}: {code}"))?;
    }
    Ok(())
}

/// Creates `topic` with replication factor 1, then waits until every partition has a leader, so
/// the timed produce does not start with metadata retries.
async fn create_topic(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    configs: &[(String, String)],
) -> BenchResult<()> {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", bootstrap).create()?;
    let options = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(15)));
    let mut new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        new_topic = new_topic.set(k, v);
    }
    for result in admin.create_topics(&[new_topic], &options).await? {
        result.map_err(|(name, code)| format!("CreateTopics {name}: {code}"))?;
    }

    let deadline = Instant::now() + TOPIC_READY;
    loop {
        let metadata = admin
            .inner()
            .fetch_metadata(Some(topic), Duration::from_secs(5))?;
        let ready = metadata.topics().iter().any(|t| {
            t.name() == topic
                && t.error().is_none()
                && t.partitions().len() == partitions as usize
                && t.partitions().iter().all(|p| p.leader() >= 0)
        });
        if ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("topic {topic} has no leader for every partition").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn producer(args: &Args) -> BenchResult<FutureProducer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap)
        .set("acks", args.acks)
        .set(
            "enable.idempotence",
            if args.idempotence { "true" } else { "false" },
        )
        .set("compression.type", "none")
        .set("linger.ms", "5")
        .set("batch.size", "1000000")
        // Let batch.size, not the message count, close a batch of small messages.
        .set("batch.num.messages", "1000000")
        .set("queue.buffering.max.messages", "2000000")
        .set("queue.buffering.max.kbytes", "2097151")
        .set("message.timeout.ms", "120000")
        .create()?)
}

/// Produces every message, at most `args.window` awaiting delivery at once, and returns the
/// total time from the first send to the last delivery report plus each message's latency.
async fn produce(args: &Args, topic: &str) -> BenchResult<ProduceFigures> {
    let producer = producer(args)?;
    // Connect and learn the leaders before the clock starts.
    producer
        .client()
        .fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let payload = random_payload(args.size);

    let mut in_flight: JoinSet<BenchResult<Duration>> = JoinSet::new();
    let mut latencies = Vec::with_capacity(args.messages);
    let start = Instant::now();
    for i in 0..args.messages {
        while in_flight.len() >= args.window {
            latencies.push(next_report(&mut in_flight).await?);
        }
        let partition = (i % args.partitions as usize) as i32;
        let mut record = FutureRecord::<(), [u8]>::to(topic)
            .partition(partition)
            .payload(payload.as_slice());
        loop {
            let sent = Instant::now();
            match producer.send_result(record) {
                Ok(delivery) => {
                    in_flight.spawn(async move {
                        match delivery.await {
                            Ok(Ok(_)) => Ok(sent.elapsed()),
                            Ok(Err((e, _))) => Err(format!("delivery failed: {e}").into()),
                            Err(_) => Err("producer dropped a delivery report".into()),
                        }
                    });
                    break;
                }
                // The window is below librdkafka's queue limits, so this only happens if those
                // are lowered; wait for a report instead of failing.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    record = returned;
                    latencies.push(next_report(&mut in_flight).await?);
                }
                Err((e, _)) => return Err(format!("enqueue to {topic}/{partition}: {e}").into()),
            }
        }
    }
    while !in_flight.is_empty() {
        latencies.push(next_report(&mut in_flight).await?);
    }
    let elapsed = start.elapsed();
    latencies.sort_unstable();
    Ok(ProduceFigures { elapsed, latencies })
}

/// Waits for the next delivery report of a message in flight.
async fn next_report(in_flight: &mut JoinSet<BenchResult<Duration>>) -> BenchResult<Duration> {
    in_flight
        .join_next()
        .await
        .ok_or("waited for a delivery report with nothing in flight")??
}

/// Nearest-rank percentile of sorted `values`; `q` in 0..=1.
fn percentile(values: &[Duration], q: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((values.len() as f64 * q).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

/// Reads `messages` messages back from offset 0 of every partition, timing from the first poll
/// to the last message.
fn consume(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    messages: usize,
    fetch: FetchLimits,
) -> BenchResult<ConsumeFigures> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        // Required by librdkafka, never used: no subscribe, no commits.
        .set("group.id", "keel-bench-unused")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.max.bytes", fetch.max_bytes.to_string())
        .set("max.partition.fetch.bytes", fetch.partition_max_bytes.to_string())
        // librdkafka wants room for a whole response plus its framing.
        .set(
            "receive.message.max.bytes",
            (fetch.max_bytes + (1 << 20)).to_string(),
        )
        .set("queued.max.messages.kbytes", "262144")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment.add_partition_offset(topic, partition, Offset::Offset(0))?;
    }
    consumer.assign(&assignment)?;

    let (mut count, mut bytes) = (0usize, 0u64);
    // Each partition must come back as 0, 1, 2, ...: no gap, no duplicate.
    let mut next_offset = vec![0i64; partitions as usize];
    let start = Instant::now();
    let mut last_progress = start;
    while count < messages {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                let next = usize::try_from(message.partition())
                    .ok()
                    .and_then(|p| next_offset.get_mut(p))
                    .ok_or_else(|| format!("message from unknown partition {}", message.partition()))?;
                if message.offset() != *next {
                    return Err(format!(
                        "{topic}/{}: got offset {}, expected {next}",
                        message.partition(),
                        message.offset()
                    )
                    .into());
                }
                *next += 1;
                count += 1;
                bytes += message.payload_len() as u64;
                last_progress = Instant::now();
            }
            Some(Err(e)) => return Err(format!("consume from {topic}: {e}").into()),
            None if last_progress.elapsed() > CONSUME_STALL => {
                return Err(format!(
                    "consumed {count} of {messages} messages, then nothing for {CONSUME_STALL:?}"
                )
                .into())
            }
            None => {}
        }
    }
    Ok(ConsumeFigures {
        elapsed: start.elapsed(),
        bytes,
    })
}

fn random_payload(size: usize) -> Vec<u8> {
    // xorshift64: incompressible bytes, in case anything on the path compresses.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}
