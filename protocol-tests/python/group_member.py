"""kafka-python (no librdkafka) as one member of a consumer group that other clients share.

Usage: group_member.py BOOTSTRAP TOPIC GROUP STOP_FILE

Subscribes to TOPIC in GROUP, commits after processing each poll, and prints one line per event,
flushed, for the test to follow:
  assigned <p>,<p>,...   whenever the assignment changes (empty after "assigned ")
  record <partition> <offset> <value>
  closed                 after leaving the group, once STOP_FILE exists
Exits non-zero on any error.
"""

import os
import sys
import time

from kafka import KafkaConsumer
from kafka.errors import CommitFailedError


def main():
    bootstrap, topic, group, stop_file = sys.argv[1:5]
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        client_id="kafka-python-member",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=300,
        max_poll_interval_ms=30000,
        fetch_max_wait_ms=100,
    )
    assigned = None
    deadline = time.monotonic() + 120
    while not os.path.exists(stop_file):
        if time.monotonic() > deadline:
            print("FAIL: never told to stop", flush=True)
            sys.exit(1)
        batches = consumer.poll(timeout_ms=200)
        for records in batches.values():
            for record in records:
                value = record.value.decode()
                print(f"record {record.partition} {record.offset} {value}", flush=True)
        if batches:
            try:
                consumer.commit()  # synchronous: everything polled so far is processed
            except CommitFailedError as e:
                # A rebalance took the partitions away; their new owner re-reads (at least once).
                print(f"commit-failed {e}", flush=True)
        now = sorted(tp.partition for tp in consumer.assignment())
        if now != assigned:
            assigned = now
            print("assigned " + ",".join(str(p) for p in now), flush=True)
    consumer.close()  # sends LeaveGroup
    print("closed", flush=True)


if __name__ == "__main__":
    main()
