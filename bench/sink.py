"""Sink throughput (rows/s into the encrypted warehouse, exactly once) against a bare confluent
consumer reading the same topic, in the same run.

    python -m bench.sink [--rows 200000] [--batch-size 5000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from bench.results import Figure, save
from shredline.analytics.sink import run_sink
from shredline.analytics.warehouse import Warehouse
from shredline.processors.roles import Role
from shredline.schemas.codec import encode
from shredline.streams.catalog import topic_name
from shredline.streams.kafka.admin import apply_catalog
from shredline.streams.launcher.broker import connect_or_launch
from shredline.streams.reporting.feed import KafkaSinkSource
from shredline.streams.settings import load_settings

IDLE_S = 2.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=5000)
    args = parser.parse_args()
    settings = load_settings(os.environ)
    conn = connect_or_launch(settings, lambda m: print(m, file=sys.stderr))
    prefix = f"benchsink{int(time.time())}"
    apply_catalog(conn, prefix, 1)
    topic = topic_name(prefix, Role.METRICS_USAGE)

    minute = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    producer = Producer(conn.confluent(**{"linger.ms": 20, "compression.type": "lz4", "log_level": 3}))
    for i in range(args.rows):
        tenant = f"tenant-{i % 7}"
        fact = {
            "tenant": tenant,
            "kind": "MESSAGE",
            "minute": minute - dt.timedelta(minutes=i % 1440),
            "channel": "WHATSAPP" if i % 3 else "SMS",
            "direction": "INBOUND" if i % 2 else "OUTBOUND",
            "workflow_id": f"workflow-{i % 5}",
            "feature_id": None,
            "status": None,
            "duration_bucket": None,
            "length_bucket": "1-64",
            "dedup": secrets.token_bytes(16),
        }
        while True:
            try:
                producer.produce(topic, value=encode("usage_metric", fact), key=tenant.encode())
                break
            except BufferError:
                producer.poll(0.2)
    assert producer.flush(120) == 0

    consumer = Consumer(conn.confluent(**{"group.id": f"{prefix}-bare", "enable.auto.commit": False, "log_level": 3}))
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    start, seen = time.perf_counter(), 0
    while seen < args.rows:
        seen += sum(1 for m in consumer.consume(args.batch_size, timeout=1.0) if m.error() is None)
    bare = seen / (time.perf_counter() - start)
    consumer.close()

    with tempfile.TemporaryDirectory() as tmp:
        warehouse = Warehouse(Path(tmp) / "bench.duckdb", secrets.token_bytes(32))
        start = time.perf_counter()
        stats = run_sink(KafkaSinkSource(conn, prefix), warehouse, batch_size=args.batch_size, until_idle_s=IDLE_S)
        elapsed = time.perf_counter() - start - IDLE_S
        warehouse.close()
    assert stats.facts == args.rows, stats
    sink = stats.facts / elapsed

    print(f"{'measure':<46}{'rows/s':>10}{'ratio':>8}")
    print(f"{'bare confluent consumer (baseline)':<46}{bare:>10,.0f}{1:>8.2f}")
    print(f"{'shredline sink (decode, de-dup, load, commit)':<46}{sink:>10,.0f}{sink / bare:>8.2f}")
    save(
        "sink",
        [
            Figure(
                "sink into encrypted DuckDB, exactly once", sink, "bare confluent consumer, same topic", bare, "rows/s"
            )
        ],
        **{
            "rows": args.rows,
            "batch_size": args.batch_size,
            "bare_rows_per_s": round(bare),
            "sink_rows_per_s": round(sink),
            "sink_vs_bare": round(sink / bare, 3),
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
