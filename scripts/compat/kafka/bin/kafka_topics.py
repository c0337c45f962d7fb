"""A small kafka-topics.sh replacement built on kafka-python's admin client.

Implements what librdkafka's test suite calls:
  --bootstrap-server HOST:PORT
  --create --topic T [--partitions N] [--replication-factor R] [--config k=v ...]
  --alter  --topic T --partitions N
  --delete --topic T
  --describe [--topic T]
  --list
Exit status 0 on success, 1 with the broker's error on stderr otherwise, as the real tool.
"""

import argparse
import sys

from kafka.admin import KafkaAdminClient
from kafka.admin import NewPartitions, NewTopic  # deprecated in 3.x, but in 2.x and 3.x alike


def parse(argv):
    p = argparse.ArgumentParser(prog="kafka-topics.sh")
    p.add_argument("--bootstrap-server", required=True)
    action = p.add_mutually_exclusive_group(required=True)
    for a in ("create", "alter", "delete", "describe", "list"):
        action.add_argument("--" + a, action="store_true")
    p.add_argument("--topic")
    p.add_argument("--partitions", type=int, default=-1)
    p.add_argument("--replication-factor", type=int, default=-1)
    p.add_argument("--config", action="append", default=[])
    p.add_argument("--if-not-exists", action="store_true")
    p.add_argument("--if-exists", action="store_true")
    return p.parse_args(argv)


def main(argv):
    args = parse(argv)
    if not (args.list or args.describe) and not args.topic:
        sys.exit("kafka-topics.sh: --topic is required")
    admin = KafkaAdminClient(bootstrap_servers=args.bootstrap_server,
                             client_id="keel-kafka-topics", request_timeout_ms=30000)
    try:
        if args.create:
            configs = dict(c.split("=", 1) for c in args.config)
            admin.create_topics([NewTopic(args.topic, args.partitions,
                                          args.replication_factor, topic_configs=configs)])
            print(f"Created topic {args.topic}.")
        elif args.alter:
            admin.create_partitions({args.topic: NewPartitions(args.partitions)})
        elif args.delete:
            admin.delete_topics([args.topic])
        elif args.list:
            for t in sorted(admin.list_topics()):
                print(t)
        else:
            for t in admin.describe_topics([args.topic] if args.topic else None):
                name = t.get("name", t.get("topic"))
                parts = t.get("partitions", [])
                print(f"Topic: {name}\tPartitionCount: {len(parts)}\tError: {t.get('error_code', 0)}")
                for part in sorted(parts, key=lambda q: q.get("partition_index", q.get("partition", 0))):
                    print(f"\tTopic: {name}\tPartition: "
                          f"{part.get('partition_index', part.get('partition'))}\t"
                          f"Leader: {part.get('leader_id', part.get('leader'))}")
    except Exception as e:  # the real tool prints the error and exits 1
        print(f"Error while executing topic command : {e}", file=sys.stderr)
        return 1
    finally:
        admin.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
