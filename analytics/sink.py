"""`shredline sink`: metrics, redacted logs, tenant states and the audit trail into the warehouse, exactly once.

The consumed positions live in the warehouse, written in the same transaction as the rows;
on start the consumer seeks to them, so Kafka's committed offsets are never trusted for
correctness (and never written).
"""

from __future__ import annotations

import datetime as dt
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from analytics.warehouse import Warehouse
from streams.catalog import AUDIT_EVENTS, CONTROL_TENANTS, LOGS_EXECUTIONS, METRICS_USAGE, topic_name
from streams.codec import DecodeError, decode
from streams.kafka.connection import Connection

log = logging.getLogger("shredline.sink")


@dataclass
class SinkStats:
    facts: int = 0
    duplicates: int = 0
    logs: int = 0
    skipped: int = 0
    batches: int = 0


def run_sink(
    conn: Connection,
    prefix: str,
    warehouse: Warehouse,
    *,
    batch_size: int = 5000,
    until_idle_s: float | None = None,
    progress: Callable[[str], None] = lambda _m: None,
) -> SinkStats:
    metrics, logs = topic_name(prefix, METRICS_USAGE), topic_name(prefix, LOGS_EXECUTIONS)
    control, audit = topic_name(prefix, CONTROL_TENANTS), topic_name(prefix, AUDIT_EVENTS)
    schema_of = {metrics: "usage_metric", logs: "redacted_log", control: "tenant_control", audit: "audit_event"}
    consumer = Consumer(
        conn.confluent(
            **{
                "group.id": topic_name(prefix, "shredline-sink"),
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "log_level": 3,
            }
        )
    )
    stored = warehouse.offsets()

    # The warehouse has a single writer, so the sink assigns every partition itself: no group
    # rebalancing, and a restart resumes at once from the offsets stored with the rows.
    assigned = [
        TopicPartition(topic, p, stored.get((topic, p), OFFSET_BEGINNING))
        for topic in (metrics, logs, control, audit)
        for p in consumer.list_topics(topic, timeout=30).topics[topic].partitions
    ]

    def caught_up() -> bool:
        """Is the stored position of every partition at its end?"""
        for tp in assigned:
            _low, high = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=10)
            if stored.get((tp.topic, tp.partition), 0) < high:
                return False
        return True

    stop = {"now": False}
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    consumer.assign(assigned)
    stats = SinkStats()
    idle_since = time.monotonic()
    try:
        while not stop["now"]:
            messages = consumer.consume(batch_size, timeout=1.0)
            facts: list[dict[str, Any]] = []
            lines: list[dict[str, Any]] = []
            states: list[dict[str, Any]] = []
            trail: list[dict[str, Any]] = []
            positions: dict[tuple[str, int], int] = {}
            for msg in messages:
                if msg.error() is not None:
                    continue
                topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
                positions[(topic, partition)] = offset + 1
                try:
                    _r, value = decode(msg.value() or b"", expect=schema_of[topic])
                except DecodeError as exc:
                    stats.skipped += 1
                    log.warning("sink: skipped %s[%d]@%d: %s", topic, partition, offset, exc.reason)
                    continue
                if topic == control:
                    if value["kind"] in {"PROVISIONED", "TERMINATED"}:
                        states.append(value)
                elif topic == audit:
                    trail.append(value)
                else:
                    (facts if topic == metrics else lines).append(value)
            if positions:
                loaded = warehouse.load(facts, lines, positions, tenant_events=states, audit=trail)
                stored.update(positions)
                stats.facts += loaded.facts
                stats.duplicates += loaded.duplicates
                stats.logs += loaded.logs
                stats.batches += 1
                idle_since = time.monotonic()
                progress(f"loaded {stats.facts} facts ({stats.duplicates} duplicates skipped), {stats.logs} log lines")
            elif until_idle_s is not None and time.monotonic() - idle_since >= until_idle_s:
                if caught_up():
                    break
                idle_since = time.monotonic()
        warehouse.purge_dedup(dt.datetime.now(dt.UTC).date())
    finally:
        signal.signal(signal.SIGTERM, previous)
        consumer.close()
    return stats
