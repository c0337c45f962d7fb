"""aiokafka (asyncio, pure Python, independent of librdkafka and kafka-python's producer) with
enable_idempotence=True against a Keel broker.

Usage: aiokafka_idempotent.py BOOTSTRAP

Produces records to three partitions of a new topic, with several batches in flight, then reads
every partition back and checks each record arrived exactly once, in order. Exits non-zero on
the first difference.
"""

import asyncio
import sys

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

TOPIC = "aiokafka-idempotent"
PARTITIONS = 3
PER_PARTITION = 400


def fail(message):
    print(f"FAIL: {message}", flush=True)
    sys.exit(1)


async def main(bootstrap):
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(TOPIC, num_partitions=PARTITIONS, replication_factor=1)])
    await admin.close()

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True,
                                linger_ms=5, max_batch_size=2048)
    await producer.start()
    futures = []
    for i in range(PER_PARTITION):
        for p in range(PARTITIONS):
            futures.append(await producer.send(TOPIC, f"{p}:{i}".encode(), partition=p))
    offsets = {}
    for f in futures:
        md = await f
        offsets.setdefault(md.partition, []).append(md.offset)
    producer_id = producer._txn_manager.producer_id if producer._txn_manager else -1
    await producer.stop()
    if producer_id < 0:
        fail("the producer did not run idempotently")
    for p, got in offsets.items():
        if got != list(range(PER_PARTITION)):
            fail(f"partition {p} acknowledged offsets {got[:10]}..., expected 0..{PER_PARTITION}")
    print(f"produced {PARTITIONS * PER_PARTITION} records idempotently as producer {producer_id}",
          flush=True)

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    consumer.assign([TopicPartition(TOPIC, p) for p in range(PARTITIONS)])
    seen = {p: [] for p in range(PARTITIONS)}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while sum(map(len, seen.values())) < PARTITIONS * PER_PARTITION and loop.time() < deadline:
        batches = await consumer.getmany(timeout_ms=1000)
        for tp, records in batches.items():
            seen[tp.partition].extend(r.value.decode() for r in records)
    await consumer.stop()
    for p in range(PARTITIONS):
        expected = [f"{p}:{i}" for i in range(PER_PARTITION)]
        if seen[p] != expected:
            fail(f"partition {p}: consumed {len(seen[p])} records, not exactly the {PER_PARTITION} sent in order")
    print(f"aiokafka idempotent ok: {PARTITIONS * PER_PARTITION} records", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
