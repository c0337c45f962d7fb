#!/usr/bin/env bash
# Keel's stand-in for Apache Kafka's bin/kafka-topics.sh, for the librdkafka tests that shell out
# to it ($KAFKA_PATH/bin/kafka-topics.sh). Only the subset those tests use; see kafka_topics.py.
here="$(dirname "${BASH_SOURCE[0]}")"
py="${KEEL_PYTHON:-${KEEL_CACHE:-$HOME/.cache/keel}/venv/bin/python}"
exec "$py" "$here/kafka_topics.py" "$@"
