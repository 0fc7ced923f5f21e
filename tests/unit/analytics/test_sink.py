"""The sink's loop without Kafka: group-committed batches, positions with the rows, undecodable records skipped."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from pathlib import Path

from shredline.analytics.sink import Position, SinkRecord, run_sink
from shredline.analytics.warehouse import Warehouse
from shredline.processors.roles import Role
from shredline.schemas.codec import encode
from tests.unit.analytics.test_warehouse import KEY, fact

TOPIC = "t.metrics.usage"


#: Today's: the sink forgets de-dup tokens of days older than DEDUP_KEEP_DAYS, by the wall clock.
RECENT = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)


def metric(n: int) -> bytes:
    return encode("usage_metric", {**fact(n.to_bytes(16, "big")), "minute": RECENT})


class ListSource:
    """One partition of `values`, read from the stored position; polls hand out what is asked."""

    def __init__(self, values: list[bytes]) -> None:
        self.values, self.next, self.polls = values, 0, 0

    def start(self, stored: Mapping[Position, int]) -> None:
        self.next = stored.get((TOPIC, 0), 0)

    def poll(self, max_records: int, timeout_s: float) -> Sequence[SinkRecord]:
        self.polls += 1
        got = [
            SinkRecord(Role.METRICS_USAGE, TOPIC, 0, offset, self.values[offset])
            for offset in range(self.next, min(len(self.values), self.next + max_records))
        ]
        self.next += len(got)
        return got

    def caught_up(self, stored: Mapping[Position, int]) -> bool:
        return stored.get((TOPIC, 0), 0) >= len(self.values)

    def close(self) -> None:
        pass


def test_every_record_loads_once_in_bounded_batches_and_the_garbage_is_skipped(tmp_path: Path) -> None:
    values = [metric(n) for n in range(25)] + [b"not avro"] + [metric(n) for n in range(25, 30)]
    warehouse = Warehouse(tmp_path / "w.duckdb", KEY)
    stats = run_sink(ListSource(values), warehouse, batch_size=10, until_idle_s=0.0)
    assert (stats.facts, stats.duplicates, stats.skipped) == (30, 0, 1)
    assert stats.batches >= 4  # never more than 10 records in one transaction
    assert warehouse.offsets() == {(TOPIC, 0): 31}

    again = run_sink(ListSource([*values, metric(3), metric(30)]), warehouse, batch_size=10, until_idle_s=0.0)
    assert (again.facts, again.duplicates) == (1, 1)  # resumed at the stored position; a replay counts once
    assert warehouse.offsets() == {(TOPIC, 0): 33}
    warehouse.close()
