"""`publish_lines` logic with an in-memory sink: what is published, what is reported, how."""

from __future__ import annotations

import datetime as dt
import io
import json
from typing import Any

from shredline.processors.validation import ValidEvent, validate
from shredline.streams.ingest.publish import MAX_LINE_BYTES, publish_lines, read_lines
from tests.unit.streams.ingest.hostile import CANARY, hostile_lines

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


def test_a_line_with_thousands_of_problems_is_reported_in_a_few_lines() -> None:
    """Issue 15 review: 60,000 unknown keys in one line were 60,000 lines on stderr."""
    many = {**GOOD, **{f"k{i}": 1 for i in range(60_000)}}
    rejected: list[str] = []
    summary = publish_lines([_line(many), _line(GOOD)], MemorySink(), rejected.append, lambda _m: None)
    assert (summary.published, summary.rejected) == (1, 1)
    assert rejected == [f"line 1: k{i}: unknown field" for i in range(10)] + ["line 1: line: 59990 more problems"]


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


def test_every_hostile_line_is_published_or_rejected_in_one_line_and_the_next_lines_go_on() -> None:
    valid = {
        "type": "message",
        "event_id": "h",
        "tenant": "acme",
        "occurred_at": "2026-11-28T10:00:00Z",
        "channel": "WHATSAPP",
        "direction": "INBOUND",
        "conversation_id": "conv-1",
        "contact_phone": "+5511987654321",
        "body": "oi",
    }
    cases = hostile_lines(valid)
    sink, rejected = MemorySink(), []
    lines = [line + b"\n" for line, _expected in cases]
    summary = publish_lines(read_lines(io.BytesIO(b"".join(lines))), sink, rejected.append, lambda _m: None)
    expected_published = [n for n, (_l, why) in enumerate(cases, start=1) if why is None]
    assert [int(e.value["event_id"].split("-")[1]) for e in sink.events] == [
        int(json.loads(cases[n - 1][0].removeprefix(b"\xef\xbb\xbf"))["event_id"].split("-")[1])
        for n in expected_published
    ]
    assert (summary.published, summary.rejected) == (len(expected_published), len(cases) - len(expected_published))
    expected = [f"line {n}: {why}" for n, (_l, why) in enumerate(cases, start=1) if why is not None]
    assert len(rejected) == len(expected)
    for got, want in zip(rejected, expected, strict=True):
        assert got.startswith(want), (got, want)
    assert not any(CANARY in r or "1111" in r for r in rejected)


def test_overlong_lines_are_read_with_bounded_memory_and_cut_at_their_end() -> None:
    stream = io.BytesIO(b"x" * (5 * MAX_LINE_BYTES) + b"\n" + _line(GOOD))
    lines = list(read_lines(stream))
    assert len(lines) == 2 and len(lines[0]) == MAX_LINE_BYTES + 3 and json.loads(lines[1])["event_id"] == "e1"
