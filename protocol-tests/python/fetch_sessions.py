"""kafka-python's consumer uses incremental fetch sessions (KIP-227) by default: against Keel it
must read every record of many partitions, both the backlog and what arrives while it polls.

Usage: fetch_sessions.py BOOTSTRAP

Produces BACKLOG records over PARTITIONS partitions, reads them all with an assigned consumer,
then produces LIVE more one partition at a time while the consumer keeps polling (its
incremental fetches must bring each partition's news) and checks every record arrived exactly
once. Prints one line per check; exits non-zero on the first difference.
"""

import sys
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

TOPIC = "python-fetch-sessions"
PARTITIONS = 12
BACKLOG = 1200
LIVE = 240


def fail(message):
    print(f"FAIL: {message}", flush=True)
    sys.exit(1)


def main(bootstrap):
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics({TOPIC: {"num_partitions": PARTITIONS, "replication_factor": 1}})
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    for i in range(BACKLOG):
        producer.send(TOPIC, value=f"b{i}".encode(), partition=i % PARTITIONS)
    producer.flush()

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             fetch_max_wait_ms=100, consumer_timeout_ms=1000)
    partitions = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    seen = {}

    def poll_once():
        for records in consumer.poll(timeout_ms=200).values():
            for r in records:
                value = r.value.decode()
                if value in seen:
                    fail(f"{value} read twice (offsets {seen[value]} and {r.offset})")
                seen[value] = r.offset

    def poll_until(count, what, timeout=60.0):
        deadline = time.monotonic() + timeout
        while len(seen) < count:
            if time.monotonic() > deadline:
                fail(f"{what}: {len(seen)} of {count} records after {timeout} s")
            poll_once()

    poll_until(BACKLOG, "backlog")
    print(f"read the backlog: {BACKLOG} records", flush=True)

    for i in range(LIVE):
        producer.send(TOPIC, value=f"l{i}".encode(), partition=(i * 5) % PARTITIONS)
        if i % 20 == 19:
            producer.flush()
            poll_once()
    producer.flush()
    poll_until(BACKLOG + LIVE, "live records")
    missing = [f"b{i}" for i in range(BACKLOG) if f"b{i}" not in seen]
    missing += [f"l{i}" for i in range(LIVE) if f"l{i}" not in seen]
    if missing:
        fail(f"missing {missing[:5]}")
    print(f"kafka-python fetch sessions ok: {len(seen)} records", flush=True)
    consumer.close()
    producer.close()


if __name__ == "__main__":
    main(sys.argv[1])
