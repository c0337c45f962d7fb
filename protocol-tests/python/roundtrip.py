"""kafka-python (a pure-Python client, independent of librdkafka) against a Keel broker.

Usage: roundtrip.py BOOTSTRAP

Creates and deletes topics with KafkaAdminClient, produces records with keys, headers and
explicit timestamps (plain and gzip) with kafka-python's default, idempotent producer, reads them back with an assigned consumer (no group) and
compares every field. Prints one line per check; exits non-zero on the first difference.
"""

import sys
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType

TOPIC = "python-roundtrip"
DOOMED = "python-deleted"
PARTITIONS = 2
RECORDS_PER_PRODUCER = 500


def fail(message):
    print(f"FAIL: {message}", flush=True)
    sys.exit(1)


def wait_for(predicate, what, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            fail(f"timed out waiting for {what}")
        time.sleep(0.2)


def admin_checks(bootstrap):
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="keel-python-admin")
    admin.create_topics({TOPIC: {"num_partitions": PARTITIONS, "replication_factor": 1},
                         DOOMED: {"num_partitions": 1, "replication_factor": 1}})
    wait_for(lambda: {TOPIC, DOOMED} <= set(admin.list_topics()), "created topics in metadata")
    described = {t["name"]: t for t in admin.describe_topics([TOPIC])}
    partitions = len(described[TOPIC]["partitions"])
    if partitions != PARTITIONS:
        fail(f"{TOPIC} has {partitions} partitions, expected {PARTITIONS}")
    print(f"created {TOPIC} with {partitions} partitions", flush=True)

    admin.delete_topics([DOOMED])
    wait_for(lambda: DOOMED not in set(admin.list_topics()), "deleted topic to leave metadata")
    print(f"deleted {DOOMED}", flush=True)

    # A dynamic broker setting (KIP-226) on broker 1 (the test broker's node.id), read back
    # with its source.
    broker = ConfigResource(ConfigResourceType.BROKER, "1", configs={"log.retention.ms": "3600000"})
    altered = admin.alter_configs([broker])
    if altered != {"broker": {"1": "OK"}}:
        fail(f"AlterConfigs on broker 1 answered {altered}")
    described = admin.describe_configs(
        [ConfigResource(ConfigResourceType.BROKER, "1", configs=["log.retention.ms"])])
    entry = described["broker"]["1"]["log.retention.ms"]
    if (entry["value"], entry["config_source"]) != ("3600000", "DYNAMIC_BROKER_CONFIG"):
        fail(f"log.retention.ms described as {entry}")
    print("altered broker 1's log.retention.ms dynamically", flush=True)
    admin.close()


def produce(bootstrap, compression, first_index, base_timestamp):
    # kafka-python 3's default producer is idempotent: it asks for a producer id
    # (InitProducerId) before its first batch and numbers every batch.
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all",
                             compression_type=compression, linger_ms=5)
    sent = []
    for i in range(first_index, first_index + RECORDS_PER_PRODUCER):
        record = {
            "partition": i % PARTITIONS,
            "key": f"key-{i}".encode(),
            "value": (f"value-{i}-" * (1 + i % 5)).encode(),
            "headers": [("idx", str(i).encode()), ("codec", (compression or "none").encode())],
            "timestamp": base_timestamp + i,
        }
        future = producer.send(TOPIC, key=record["key"], value=record["value"],
                               headers=record["headers"], partition=record["partition"],
                               timestamp_ms=record["timestamp"])
        sent.append((record, future))
    producer.flush(timeout=60)
    for record, future in sent:
        metadata = future.get(timeout=60)
        if metadata.partition != record["partition"]:
            fail(f"record went to partition {metadata.partition}, asked {record['partition']}")
        record["offset"] = metadata.offset
    manager = producer._transaction_manager
    producer_id = manager.producer_id_and_epoch.producer_id if manager else -1
    if producer_id < 0:
        fail("the default producer did not run idempotently")
    producer.close()
    print(f"produced {len(sent)} records with compression={compression}, idempotently "
          f"as producer {producer_id}", flush=True)
    return [record for record, _ in sent]


def consume(bootstrap, expected):
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             enable_auto_commit=False, auto_offset_reset="earliest")
    consumer.assign([TopicPartition(TOPIC, p) for p in range(PARTITIONS)])
    consumer.seek_to_beginning()
    received = []
    deadline = time.monotonic() + 60
    while len(received) < expected and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=1000).values():
            received.extend(records)
    consumer.close()
    return received


def main():
    bootstrap = sys.argv[1]
    admin_checks(bootstrap)
    base_timestamp = int(time.time() * 1000) - 3_600_000
    sent = produce(bootstrap, None, 0, base_timestamp)
    sent += produce(bootstrap, "gzip", RECORDS_PER_PRODUCER, base_timestamp)

    received = consume(bootstrap, len(sent))
    if len(received) != len(sent):
        fail(f"consumed {len(received)} records, produced {len(sent)}")
    by_position = {(r["partition"], r["offset"]): r for r in sent}
    for message in received:
        record = by_position.get((message.partition, message.offset))
        if record is None:
            fail(f"consumed unknown record at {message.partition}/{message.offset}")
        got = (message.key, message.value, list(message.headers), message.timestamp)
        want = (record["key"], record["value"], record["headers"], record["timestamp"])
        if got != want:
            fail(f"record {message.partition}/{message.offset}: got {got}, want {want}")
    for partition in range(PARTITIONS):
        offsets = [m.offset for m in received if m.partition == partition]
        if offsets != list(range(len(offsets))):
            fail(f"partition {partition} offsets are not 0..n in order")
    print(f"kafka-python roundtrip ok: {len(received)} records", flush=True)


if __name__ == "__main__":
    main()
