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

#: A batch is loaded at most this many seconds after its first record (see `run_sink`).
BATCH_WINDOW_S = 1.0
#: The longest one poll waits for records, in seconds.
POLL_S = 0.1


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


class _Batch:
    """Decoded rows by input and the next offset per partition, gathered over one or more polls."""

    def __init__(self) -> None:
        self.rows: dict[Role, list[dict[str, Any]]] = {role: [] for role in SINK_INPUTS}
        self.positions: dict[Position, int] = {}
        self.records = 0
        self.started = 0.0  # time.monotonic() of its first record

    def add(self, records: Sequence[SinkRecord], stats: SinkStats) -> None:
        """Decode `records` into the batch; undecodable ones are counted in `stats` and logged by position."""
        if records and not self.records:
            self.started = time.monotonic()
        self.records += len(records)
        for rec in records:
            self.positions[(rec.topic, rec.partition)] = rec.offset + 1
            try:
                _r, value = decode(rec.value, expect=SINK_INPUTS[rec.role])
            except DecodeError as exc:
                stats.skipped += 1
                log.warning("sink: skipped %s[%d]@%d: %s", rec.topic, rec.partition, rec.offset, exc.reason)
                continue
            self.rows[rec.role].append(value)

    def load(self, warehouse: Warehouse) -> Loaded:
        """One transaction: the rows and the positions."""
        states = [v for v in self.rows[Role.CONTROL_TENANTS] if v["kind"] in {"PROVISIONED", "TERMINATED"}]
        return warehouse.load(
            self.rows[Role.METRICS_USAGE],
            self.rows[Role.LOGS_EXECUTIONS],
            self.positions,
            tenant_events=states,
            audit=self.rows[Role.AUDIT_EVENTS],
        )


def run_sink(
    source: SinkSource,
    warehouse: Warehouse,
    *,
    batch_size: int = 20_000,
    until_idle_s: float | None = None,
    progress: Callable[[str], None] = lambda _m: None,
) -> SinkStats:
    """Load batches until SIGTERM or, with `until_idle_s`, until caught up and idle that long (seconds).

    Batches are group commits: each batch's rows and positions are one warehouse transaction,
    run on one writer thread while this one fetches and decodes the next (DuckDB releases the
    GIL, so the two use both cores). A batch is handed over once the previous one has committed
    and nothing more is ready to read, or at `batch_size` records, or `BATCH_WINDOW_S` after its
    first record: it grows while the writer is busy and a backlog is read in large transactions,
    while a trickle is loaded within about one poll (`POLL_S`). Transactions stay in order, one
    in flight, so a crash loses at most uncommitted work, read again from the stored positions.
    Records that do not decode are skipped and counted (logged by position and reason only).
    Closes `source`.
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
            batch = _Batch()
            while not stop["now"]:
                ask = batch_size - batch.records
                records = source.poll(ask, POLL_S)
                batch.add(records, stats)
                if batch.positions and (
                    batch.records >= batch_size
                    or time.monotonic() - batch.started >= BATCH_WINDOW_S
                    or (len(records) < ask and (pending is None or pending[0].done()))
                ):
                    committed()
                    pending = (writer.submit(batch.load, warehouse), batch.positions)
                    batch = _Batch()
                    idle_since = time.monotonic()
                elif not batch.positions:
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
