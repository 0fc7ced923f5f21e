"""End-to-end latency at a steady rate: from publishing a message until its fact is committed in
the DuckDB warehouse by a running worker and sink, against a bare confluent produce -> consume
round trip on the same broker in the same run.

The sink reports its cumulative loaded facts after each committed batch; the k-th message
published is taken as loaded when that count first reaches k (partitions interleave, so this is
exact for the distribution, not for each message).

    python -m bench.latency [--rate 20] [--seconds 30]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from bench.results import Figure, save
from bench.timing import percentile, wait
from shredline.streams.acl import default_principals
from shredline.streams.ingest.sdk import Publisher
from shredline.streams.kafka.acls import apply_acls
from shredline.streams.kafka.admin import apply_catalog
from shredline.streams.kafka.connection import Connection, client_environment
from shredline.streams.key_store import open_keys
from shredline.streams.launcher.broker import connect_or_launch
from shredline.streams.operations.audit import Trail
from shredline.streams.operations.tenants import provision
from shredline.streams.settings import load_settings

LOADED = re.compile(rb"loaded (\d+) facts")


class SinkProgress(threading.Thread):
    """When the sink's committed fact count reached each value."""

    def __init__(self, stream: object) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.reached: list[tuple[int, float]] = []

    def run(self) -> None:
        for line in iter(self.stream.readline, b""):  # type: ignore[attr-defined]
            match = LOADED.search(line)
            if match:
                self.reached.append((int(match.group(1)), time.monotonic()))

    def count(self) -> int:
        return self.reached[-1][0] if self.reached else 0

    def time_of(self, n: int) -> float:
        return next(t for c, t in self.reached if c >= n)


def message(i: int) -> dict[str, object]:
    return {
        "type": "message",
        "event_id": f"lat-{i}",
        "tenant": "latency",
        "occurred_at": dt.datetime.now(dt.UTC).isoformat(),
        "channel": "SMS",
        "direction": "INBOUND",
        "conversation_id": f"c{i % 20}",
        "contact_phone": "+5511900000000",
        "body": "ping",
    }


def bare_round_trips(conn: Connection, topic: str, count: int, interval: float) -> list[float]:
    admin = AdminClient(conn.confluent(log_level=3))  # referenced until the future completes
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result()
    producer = Producer(conn.confluent(**{"acks": "all", "linger.ms": 0, "log_level": 3}))
    consumer = Consumer(conn.confluent(**{"group.id": topic, "fetch.wait.max.ms": 5, "log_level": 3}))
    consumer.assign([TopicPartition(topic, 0, 0)])
    lags = []
    for i in range(count):
        sent = time.monotonic()
        producer.produce(topic, value=str(i).encode())
        producer.flush()
        while (msg := consumer.poll(5.0)) is None or msg.error() is not None:
            pass
        lags.append(time.monotonic() - sent)
        time.sleep(interval)
    consumer.close()
    return lags


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=20.0, help="messages per second")
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    base = load_settings(os.environ)
    conn = connect_or_launch(base, lambda m: print(m, file=sys.stderr))
    count, interval = int(args.rate * args.seconds), 1 / args.rate
    with tempfile.TemporaryDirectory() as tmp:
        settings = replace(
            base, topic_prefix=f"benchlat{int(time.time())}", data_dir=Path(tmp), key_store=None, master_key_file=None
        )
        apply_catalog(conn, settings.topic_prefix, 1)
        apply_acls(conn, settings.topic_prefix, default_principals())  # the children run as their roles
        keys = open_keys(settings, actor="bench")
        provision(keys, conn, Trail(conn, keys, settings), "latency", 86_400)
        env = client_environment(conn, settings.data_dir, settings.topic_prefix, os.environ)
        cli = [sys.executable, "-m", "shredline.streams.cli"]
        worker = subprocess.Popen([*cli, "worker", "--loglevel", "warning"], env=env, stderr=subprocess.DEVNULL)
        sink = subprocess.Popen([*cli, "sink", "--batch-size", "500"], env=env, stderr=subprocess.PIPE)
        progress = SinkProgress(sink.stderr)
        progress.start()
        sent: list[float] = []
        try:
            with Publisher(conn, settings.topic_prefix) as publisher:
                for i in range(20):  # warm-up: the worker's group has joined and the sink is loading
                    publisher.publish(message(-1 - i))
                publisher.flush()
                wait(lambda: progress.count() >= 20, "the warm-up to reach the warehouse", 180)
                print(f"steady {args.rate:g} messages/s for {args.seconds:g} s...", flush=True)
                for i in range(count):
                    publisher.publish(message(i))
                    publisher.flush()
                    sent.append(time.monotonic())
                    time.sleep(interval)
                wait(lambda: progress.count() >= 20 + count, "every message to reach the warehouse", 180)
        finally:
            worker.terminate()
            sink.terminate()
            worker.wait(timeout=60)
            sink.wait(timeout=60)
        e2e = [progress.time_of(20 + k + 1) - sent[k] for k in range(count)]
        bare = bare_round_trips(conn, f"{settings.topic_prefix}.bare-latency", min(count, 200), interval)
    figures = [
        Figure(
            "publish -> fact in DuckDB, p50",
            percentile(e2e, 0.5),
            "bare produce->consume p50",
            percentile(bare, 0.5),
            "s",
        ),
        Figure(
            "publish -> fact in DuckDB, p99",
            percentile(e2e, 0.99),
            "bare produce->consume p99",
            percentile(bare, 0.99),
            "s",
        ),
    ]
    for f in figures:
        print(
            f"{f.what:<36} {f.value * 1000:>8.0f} ms   {f.baseline:<28} {f.baseline_value * 1000:>6.1f} ms  "
            f"{f.ratio:>6.0f}x"
        )
    save("latency", figures, rate=args.rate, messages=count)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
