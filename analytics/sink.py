"""The sink's loop: metrics, redacted logs, tenant states and the audit trail into the warehouse, exactly once.

Kafka-free: records come from a `SinkSource` (the confluent adapter is
`shredline.streams.reporting.feed.KafkaSinkSource`). The consumed positions live in the
warehouse, written in the same transaction as the rows; on start the source seeks to them, so
Kafka's committed offsets are never trusted for correctness (and never written).
"""

from __future__ import annotations

import datetime as dt
import logging
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from shredline.analytics.warehouse import Warehouse
from shredline.processors.roles import Role
from shredline.schemas.codec import DecodeError, decode

log = logging.getLogger("shredline.sink")

#: What the sink reads, and the schema each role's records are written in.
SINK_INPUTS: Mapping[Role, str] = {
    Role.METRICS_USAGE: "usage_metric",
    Role.LOGS_EXECUTIONS: "redacted_log",
    Role.CONTROL_TENANTS: "tenant_control",
    Role.AUDIT_EVENTS: "audit_event",
}

Position = tuple[str, int]  # (topic, partition)


@dataclass(frozen=True)
class SinkRecord:
    """One record as the sink needs it: which input, where it was (topic, partition, offset), its bytes."""

    role: Role
    topic: str
    partition: int
    offset: int
    value: bytes


class SinkSource(Protocol):
    """Where the sink's records come from (a Kafka consumer in production)."""

    def start(self, stored: Mapping[Position, int]) -> None:
        """Begin reading every partition of every input at its stored next offset (else the beginning)."""

    def poll(self, max_records: int, timeout_s: float) -> Sequence[SinkRecord]:
        """Up to `max_records` records, waiting at most `timeout_s` seconds for the first."""

    def caught_up(self, stored: Mapping[Position, int]) -> bool:
        """Is the stored next offset of every partition at that partition's end?"""

    def close(self) -> None: ...


@dataclass
class SinkStats:
    facts: int = 0
    duplicates: int = 0
    logs: int = 0
    skipped: int = 0
    batches: int = 0


def run_sink(
    source: SinkSource,
    warehouse: Warehouse,
    *,
    batch_size: int = 5000,
    until_idle_s: float | None = None,
    progress: Callable[[str], None] = lambda _m: None,
) -> SinkStats:
    """Load batches until SIGTERM or, with `until_idle_s`, until caught up and idle that long (seconds).

    Each batch's rows and positions are one warehouse transaction. Records that do not decode
    are skipped and counted (logged by position and reason only). Closes `source`.
    """
    stored = warehouse.offsets()
    stop = {"now": False}
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    source.start(stored)
    stats = SinkStats()
    idle_since = time.monotonic()
    try:
        while not stop["now"]:
            records = source.poll(batch_size, 1.0)
            facts: list[dict[str, Any]] = []
            lines: list[dict[str, Any]] = []
            states: list[dict[str, Any]] = []
            trail: list[dict[str, Any]] = []
            positions: dict[Position, int] = {}
            for rec in records:
                positions[(rec.topic, rec.partition)] = rec.offset + 1
                try:
                    _r, value = decode(rec.value, expect=SINK_INPUTS[rec.role])
                except DecodeError as exc:
                    stats.skipped += 1
                    log.warning("sink: skipped %s[%d]@%d: %s", rec.topic, rec.partition, rec.offset, exc.reason)
                    continue
                if rec.role == Role.CONTROL_TENANTS:
                    if value["kind"] in {"PROVISIONED", "TERMINATED"}:
                        states.append(value)
                elif rec.role == Role.AUDIT_EVENTS:
                    trail.append(value)
                else:
                    (facts if rec.role == Role.METRICS_USAGE else lines).append(value)
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
                if source.caught_up(stored):
                    break
                idle_since = time.monotonic()
        warehouse.purge_dedup(dt.datetime.now(dt.UTC).date())
    finally:
        signal.signal(signal.SIGTERM, previous)
        source.close()
    return stats
