"""kafka-python (independent of librdkafka) reads a whole partition back.

Usage: read_partition.py BOOTSTRAP TOPIC

Reads partition 0 of TOPIC from its first offset to its high watermark with an assigned
consumer (no group) and prints one line per record: `<offset> <key> <value>`, the value `-` for
a tombstone (null). Then `end <count>`.
"""

import sys

from kafka import KafkaConsumer, TopicPartition

bootstrap, topic = sys.argv[1], sys.argv[2]
tp = TopicPartition(topic, 0)
consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=10000)
consumer.assign([tp])
end = consumer.end_offsets([tp])[tp]
consumer.seek_to_beginning(tp)
count = 0
while consumer.position(tp) < end:
    batch = consumer.poll(timeout_ms=5000)
    if not batch:
        print(f"FAIL: nothing read at offset {consumer.position(tp)} of {end}", flush=True)
        sys.exit(1)
    for records in batch.values():
        for r in records:
            value = "-" if r.value is None else r.value.decode()
            print(f"{r.offset} {r.key.decode()} {value}")
            count += 1
print(f"end {count}", flush=True)
