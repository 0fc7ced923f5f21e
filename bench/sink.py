"""Sink throughput (rows/s into the encrypted warehouse, exactly once) against a bare confluent
consumer reading the same topic, in the same run, interleaved over rounds: the best round of each
(the machine is shared; the best round is the one least slowed by others), and the CPU time of
this process (all threads: librdkafka's, DuckDB's, the sink's writer) per row, median of rounds.

    python -m bench.sink [--rows 200000] [--rounds 3] [--batch-size 20000]

Each figure counts all the work and nothing else: the bare consumer from `assign` until it has
received every row; the sink from `run_sink`'s start (seek, fetch, decode, de-dup, Arrow insert,
daily MERGE, offsets, commit) until the transaction holding the last row has committed, measured
by the warehouse itself. The sink's end-of-run check (idle wait and `caught_up`) is timed apart.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from bench.results import Figure, save
from shredline.analytics.sink import BATCH_WINDOW_S, run_sink
from shredline.analytics.warehouse import Loaded, Warehouse
from shredline.processors.roles import Role
from shredline.schemas.codec import encode
from shredline.streams.catalog import topic_name
from shredline.streams.kafka.admin import apply_catalog
from shredline.streams.kafka.connection import Connection
from shredline.streams.launcher.broker import connect_or_launch
from shredline.streams.reporting.feed import KafkaSinkSource
from shredline.streams.settings import load_settings

IDLE_S = 1.0


class TimedWarehouse(Warehouse):
    """A warehouse that notes when each load transaction has committed (perf_counter seconds)."""

    committed_at = 0.0

    def load(self, *args: Any, **kwargs: Any) -> Loaded:
        loaded = super().load(*args, **kwargs)
        self.committed_at = time.perf_counter()
        return loaded


def produce_facts(conn: Connection, topic: str, rows: int) -> None:
    minute = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    producer = Producer(conn.confluent(**{"linger.ms": 20, "compression.type": "lz4", "log_level": 3}))
    for i in range(rows):
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


def bare_consumer(conn: Connection, topic: str, rows: int, group: str) -> float:
    """Seconds for a bare confluent consumer to receive `rows` records of `topic` from the start
    (its CPU seconds are counted by the caller), timed as the sink is: from creating its consumer."""
    start, seen = time.perf_counter(), 0
    consumer = Consumer(conn.confluent(**{"group.id": group, "enable.auto.commit": False, "log_level": 3}))
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    while seen < rows:
        # Never ask for more than are left: consume(n) waits out its timeout for n records.
        seen += sum(1 for m in consumer.consume(min(10_000, rows - seen), timeout=1.0) if m.error() is None)
    elapsed = time.perf_counter() - start
    consumer.close()
    return elapsed


def sink_once(conn: Connection, prefix: str, rows: int, batch_size: int) -> tuple[float, float, int]:
    """(seconds to the commit of the last row, seconds from then to the end of `run_sink`, batches)."""
    with tempfile.TemporaryDirectory() as tmp:
        warehouse = TimedWarehouse(Path(tmp) / "bench.duckdb", secrets.token_bytes(32))
        start = time.perf_counter()
        stats = run_sink(KafkaSinkSource(conn, prefix), warehouse, batch_size=batch_size, until_idle_s=IDLE_S)
        ended = time.perf_counter()
        warehouse.close()
    assert stats.facts == rows, stats
    return warehouse.committed_at - start, ended - warehouse.committed_at, stats.batches


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=20_000, help="the sink's maximum rows per transaction")
    args = parser.parse_args()
    settings = load_settings(os.environ)
    conn = connect_or_launch(settings, lambda m: print(m, file=sys.stderr))
    prefix = f"benchsink{int(time.time())}"
    apply_catalog(conn, prefix, 1)
    topic = topic_name(prefix, Role.METRICS_USAGE)
    produce_facts(conn, topic, args.rows)

    bare_s, sink_s, check_s, batches = [], [], [], 0
    cpu_us: dict[str, list[float]] = {"bare": [], "sink": []}
    for n in range(args.rounds):  # alternate, so drift on the shared machine hits both alike
        cpu = time.process_time()
        bare_s.append(bare_consumer(conn, topic, args.rows, f"{prefix}-bare{n}"))
        cpu_us["bare"].append((time.process_time() - cpu) / args.rows * 1e6)
        cpu = time.process_time()
        load_s, end_s, batches = sink_once(conn, prefix, args.rows, args.batch_size)
        cpu_us["sink"].append((time.process_time() - cpu) / args.rows * 1e6)
        sink_s.append(load_s)
        check_s.append(end_s)
    bare = args.rows / min(bare_s)
    sink = args.rows / min(sink_s)
    cpu_bare, cpu_sink = statistics.median(cpu_us["bare"]), statistics.median(cpu_us["sink"])

    print(f"{'measure':<52}{'rows/s':>10}{'ratio':>8}")
    print(f"{'bare confluent consumer (baseline)':<52}{bare:>10,.0f}{1:>8.2f}")
    print(f"{'shredline sink (fetch, decode, de-dup, load, commit)':<52}{sink:>10,.0f}{sink / bare:>8.2f}")
    print(f"{'CPU per row (us), bare consumer / sink':<52}{cpu_bare:>10.1f}{cpu_sink:>8.1f}")
    print(
        f"{args.rounds} rounds of {args.rows:,} rows in {batches} transactions each (at most {args.batch_size:,} rows "
        f"or {BATCH_WINDOW_S} s); not counted: last commit to exit (the {IDLE_S:.0f} s idle wait, caught_up, purge) "
        f"{statistics.median(check_s) * 1e3:.0f} ms"
    )
    save(
        "sink",
        [
            Figure(
                "sink into encrypted DuckDB, exactly once", sink, "bare confluent consumer, same topic", bare, "rows/s"
            ),
            Figure("sink CPU per row (all threads)", cpu_sink, "bare confluent consumer", cpu_bare, "us"),
        ],
        **{
            "rows": args.rows,
            "rounds": args.rounds,
            "batch_size": args.batch_size,
            "transactions": batches,
            "bare_rows_per_s": round(bare),
            "sink_rows_per_s": round(sink),
            "sink_vs_bare": round(sink / bare, 3),
            "bare_s": [round(s, 3) for s in bare_s],
            "cpu_us_per_row": {k: [round(u, 2) for u in v] for k, v in cpu_us.items()},
            "sink_s": [round(s, 3) for s in sink_s],
            "last_commit_to_exit_ms": round(statistics.median(check_s) * 1e3),
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
