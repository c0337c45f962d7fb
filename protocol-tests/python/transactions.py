"""Transactional producers of two pure-Python clients (kafka-python and aiokafka, neither built
on librdkafka) against a Keel broker.

Usage: transactions.py BOOTSTRAP

Each client commits one transaction and aborts another on its own topic; a read_committed
consumer must see exactly the committed records, and a read_uncommitted one both. Exits non-zero
on the first difference.
"""

import asyncio
import sys
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

N = 20


def fail(message):
    print(f"FAIL: {message}", flush=True)
    sys.exit(1)


def expected(prefix):
    return sorted(f"{prefix}-{i:02}" for i in range(N))


def read(bootstrap, topic, isolation):
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest", isolation_level=isolation)
    consumer.assign([TopicPartition(topic, 0)])
    consumer.seek_to_beginning()
    seen = []
    idle_until = time.monotonic() + 3
    while time.monotonic() < idle_until:
        for records in consumer.poll(timeout_ms=500).values():
            seen.extend(r.value.decode() for r in records)
            idle_until = time.monotonic() + 3
    consumer.close()
    return sorted(seen)


def check(bootstrap, topic, client):
    committed = read(bootstrap, topic, "read_committed")
    if committed != expected("committed"):
        fail(f"{client}: read_committed saw {committed}")
    everything = read(bootstrap, topic, "read_uncommitted")
    if everything != sorted(expected("committed") + expected("aborted")):
        fail(f"{client}: read_uncommitted saw {len(everything)} records")
    print(f"{client} transactions ok: {N} committed, {N} aborted", flush=True)


def kafka_python(bootstrap, topic):
    producer = KafkaProducer(bootstrap_servers=bootstrap, transactional_id="kafka-python-txn")
    producer.init_transactions()
    for prefix, commit in (("committed", True), ("aborted", False)):
        producer.begin_transaction()
        for i in range(N):
            producer.send(topic, f"{prefix}-{i:02}".encode(), partition=0)
        producer.flush()
        if commit:
            producer.commit_transaction()
        else:
            producer.abort_transaction()
    producer.close()
    check(bootstrap, topic, "kafka-python")


async def aiokafka(bootstrap, topic):
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id="aiokafka-txn")
    await producer.start()
    async with producer.transaction():
        for i in range(N):
            await producer.send(topic, f"committed-{i:02}".encode(), partition=0)
    await producer.begin_transaction()
    for i in range(N):
        await producer.send(topic, f"aborted-{i:02}".encode(), partition=0)
    await producer.abort_transaction()
    await producer.stop()
    # aiokafka's own read_committed consumer as well.
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", isolation_level="read_committed")
    await consumer.start()
    consumer.assign([TopicPartition(topic, 0)])
    seen = []
    for _ in range(6):
        for records in (await consumer.getmany(timeout_ms=500)).values():
            seen.extend(r.value.decode() for r in records)
    await consumer.stop()
    if sorted(seen) != expected("committed"):
        fail(f"aiokafka read_committed consumer saw {sorted(seen)}")
    check(bootstrap, topic, "aiokafka")


def main():
    bootstrap = sys.argv[1]
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic("py-txn-kp", 1, 1), NewTopic("py-txn-aio", 1, 1)])
    admin.close()
    kafka_python(bootstrap, "py-txn-kp")
    asyncio.run(aiokafka(bootstrap, "py-txn-aio"))


if __name__ == "__main__":
    main()
