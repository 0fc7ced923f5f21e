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
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from shredline.analytics.warehouse import Loaded, Warehouse
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

#: A batch closes at `batch_size` records or this many seconds after the poll began, whichever first.
BATCH_WINDOW_S = 1.0


class SinkRecord(NamedTuple):
    """One record as the sink needs it: which input, where it was (topic, partition, offset), its bytes.

    A named tuple, not a dataclass: one is made per consumed record, and a tuple is made ~3x faster.
    """

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
    batch_size: int = 20_000,
    until_idle_s: float | None = None,
    progress: Callable[[str], None] = lambda _m: None,
) -> SinkStats:
    """Load batches until SIGTERM or, with `until_idle_s`, until caught up and idle that long (seconds).

    A batch is at most `batch_size` records, or what arrived within `BATCH_WINDOW_S`. Each
    batch's rows and positions are one warehouse transaction, run on one writer thread while
    this one fetches and decodes the next batch (DuckDB releases the GIL, so the two use both
    cores); a batch is handed over only once the previous one has committed, so transactions
    stay in order and a crash loses at most uncommitted work, which is read again from the
    stored positions. Records that do not decode are skipped and counted (logged by position
    and reason only). Closes `source`.
    """
    stored = warehouse.offsets()
    stop = {"now": False}
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    source.start(stored)
    stats = SinkStats()
    idle_since = time.monotonic()
    pending: tuple[Future[Loaded], dict[Position, int]] | None = None

    def committed() -> None:  # wait for the batch in flight, if any, and count it
        nonlocal pending
        if pending is None:
            return
        loading, positions = pending
        pending = None
        loaded = loading.result()
        stored.update(positions)
        stats.facts += loaded.facts
        stats.duplicates += loaded.duplicates
        stats.logs += loaded.logs
        stats.batches += 1
        progress(f"loaded {stats.facts} facts ({stats.duplicates} duplicates skipped), {stats.logs} log lines")

    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sink-writer") as writer:
            while not stop["now"]:
                records = source.poll(batch_size, BATCH_WINDOW_S)
                rows: dict[Role, list[dict[str, Any]]] = {role: [] for role in SINK_INPUTS}
                positions: dict[Position, int] = {}
                for rec in records:
                    positions[(rec.topic, rec.partition)] = rec.offset + 1
                    try:
                        _r, value = decode(rec.value, expect=SINK_INPUTS[rec.role])
                    except DecodeError as exc:
                        stats.skipped += 1
                        log.warning("sink: skipped %s[%d]@%d: %s", rec.topic, rec.partition, rec.offset, exc.reason)
                        continue
                    rows[rec.role].append(value)
                if positions:
                    states = [v for v in rows[Role.CONTROL_TENANTS] if v["kind"] in {"PROVISIONED", "TERMINATED"}]
                    committed()
                    loading = writer.submit(
                        warehouse.load,
                        rows[Role.METRICS_USAGE],
                        rows[Role.LOGS_EXECUTIONS],
                        positions,
                        tenant_events=states,
                        audit=rows[Role.AUDIT_EVENTS],
                    )
                    pending = (loading, positions)
                    idle_since = time.monotonic()
                    continue
                committed()
                if until_idle_s is not None and time.monotonic() - idle_since >= until_idle_s:
                    if source.caught_up(stored):
                        break
                    idle_since = time.monotonic()
            committed()
        warehouse.purge_dedup(dt.datetime.now(dt.UTC).date())
    finally:
        signal.signal(signal.SIGTERM, previous)
        source.close()
    return stats
