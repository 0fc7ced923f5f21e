"""`publish_lines` logic with an in-memory sink: what is published, what is reported, how."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from shredline.processors.validation import ValidEvent, validate
from shredline.streams.ingest.publish import publish_lines

NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)
GOOD = {
    "type": "contact",
    "event_id": "e1",
    "tenant": "acme",
    "occurred_at": "2026-11-28T10:00:00Z",
    "op": "UPSERT",
    "contact_id": "c1",
    "phone": "+12015550123",
    "name": "Joan Canary",
}


class MemorySink:
    def __init__(self) -> None:
        self.events: list[ValidEvent] = []
        self.flushed = False

    def publish(self, event: object) -> ValidEvent:
        valid = validate(event, NOW)
        self.events.append(valid)
        return valid

    def flush(self) -> None:
        self.flushed = True


def _line(obj: Any) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def test_valid_lines_are_published_invalid_ones_reported_by_line_and_field() -> None:
    lines = [
        _line(GOOD),
        _line({**GOOD, "phone": "+1 201 555 0123", "name": "Joan Canary"}),
        b"\n",
        b"{not json\n",
        b"\xff\xfeJoan\n",
        _line({**GOOD, "event_id": "e2"}),
    ]
    sink, rejected, progress = MemorySink(), [], []
    summary = publish_lines(lines, sink, rejected.append, progress.append)
    assert [e.value["event_id"] for e in sink.events] == ["e1", "e2"]
    assert sink.flushed
    assert (summary.published, summary.rejected) == (2, 3)
    assert rejected == [
        "line 2: phone: not E.164 (+ then 2-15 digits, no spaces)",
        "line 4: line: not valid JSON (column 2)",
        "line 5: line: not valid UTF-8",
    ]
    assert not any("Joan" in r or "555" in r for r in rejected)


def test_deep_nesting_and_huge_lines_are_rejected_not_crashed() -> None:
    rejected: list[str] = []
    deep = b"[" * 100_000 + b"]" * 100_000 + b"\n"
    huge = b'{"type":"message","body":"' + b"x" * (1 << 20) + b'"}\n'
    summary = publish_lines([deep, huge], MemorySink(), rejected.append, lambda _m: None)
    assert summary.rejected == 2
    assert rejected == ["line 1: line: JSON nested too deeply", "line 2: line: longer than 1 MiB"]


def test_progress_is_reported_on_long_runs() -> None:
    ticks = iter(range(0, 1000))
    progress: list[str] = []
    publish_lines(
        [_line({**GOOD, "event_id": f"e{i}"}) for i in range(5)],
        MemorySink(),
        print,
        progress.append,
        clock=lambda: float(next(ticks)),
    )
    assert progress and progress[0].startswith("... ") and "published" in progress[0]
