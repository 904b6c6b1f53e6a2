#!/usr/bin/env python3
"""An independent downstream reader: checks the `accruals` topic with the
confluent-kafka client (librdkafka 2.12+), reading read_committed as a bank's
downstream system would, without any of the engine's code.

Checks, given the engine's transaction journal (`accrual inspect
transactions --state-dir DIR` for each instance) and optionally a reference
(the NDJSON `accrual simulate` writes for the same input):

- every record carries the `accrual.txn` header naming its transaction;
- the records of committed transactions hold each accrual exactly once (and,
  with a reference, are exactly the reference);
- every other copy comes from a transaction that never committed (on a
  broker that filters aborted transactions there are none).

Usage:
  verify_accruals.py --brokers 127.0.0.1:9092 --topic accruals \
      --journal journal.txt [--journal more.txt] [--reference acc.ndjson]
Exit status 0 when every check passes.
"""
import argparse
import collections
import json
import sys
import time

from confluent_kafka import Consumer, KafkaError, TopicPartition


def read_topic(brokers, topic, idle_seconds=5.0):
    consumer = Consumer({
        "bootstrap.servers": brokers,
        "group.id": f"verify-accruals-{time.time_ns()}",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
        "enable.partition.eof": True,
    })
    metadata = consumer.list_topics(topic, timeout=10)
    partitions = sorted(metadata.topics[topic].partitions)
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    done, records, last = set(), [], time.time()
    while len(done) < len(partitions) and time.time() - last < idle_seconds:
        msg = consumer.poll(0.2)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                done.add(msg.partition())
                continue
            raise RuntimeError(msg.error())
        last = time.time()
        headers = {k: (v or b"").decode() for k, v in (msg.headers() or [])}
        records.append((msg.value().decode(), headers))
    consumer.close()
    return records


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--topic", default="accruals")
    parser.add_argument("--journal", action="append", required=True, help="output of `accrual inspect transactions`")
    parser.add_argument("--reference", help="NDJSON written by `accrual simulate` for the same input")
    args = parser.parse_args()

    status = {}
    for path in args.journal:
        with open(path) as f:
            for line in f:
                if line.strip():
                    txn, outcome = line.split()
                    status[txn] = outcome
    records = read_topic(args.brokers, args.topic)
    committed, extra, problems = [], collections.Counter(), []
    for payload, headers in records:
        txn = headers.get("accrual.txn")
        outcome = status.get(txn)
        if outcome == "committed":
            committed.append(payload)
        elif outcome == "aborted":
            extra[txn] += 1
        else:
            problems.append(f"record from transaction {txn!r} with outcome {outcome!r}")
    ids = collections.Counter(json.loads(p)["accrual_id"] for p in committed)
    doubled = [i for i, n in ids.items() if n > 1]
    if doubled:
        problems.append(f"{len(doubled)} accruals committed more than once, e.g. {doubled[0]}")
    if args.reference:
        with open(args.reference) as f:
            expected = sorted(line.rstrip("\n") for line in f if line.strip())
        if sorted(committed) != expected:
            missing = len(set(expected) - set(committed))
            problems.append(f"committed records differ from the reference ({missing} missing)")
    print(f"read {len(records)} records (read_committed): {len(committed)} from committed transactions, "
          f"{sum(extra.values())} extra copies from {len(extra)} transactions that never committed")
    for p in problems:
        print(f"FAIL: {p}")
    if not problems:
        print("OK: every accrual exactly once among committed transactions"
              + (", equal to the reference" if args.reference else ""))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
