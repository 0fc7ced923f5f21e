"""`shredline publish`: JSON lines in, validated Avro records out, one clear line per rejection."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from shredline.processors.validation import InvalidEvent, ValidEvent

MAX_LINE_BYTES = 1 << 20
PROGRESS_EVERY_S = 2.0


class EventSink(Protocol):
    """What `publish_lines` needs of a publisher (`shredline.streams.ingest.sdk.Publisher` in production)."""

    def publish(self, event: object) -> ValidEvent: ...

    def flush(self) -> None: ...


@dataclass
class Summary:
    published: int = 0
    rejected: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.published / self.seconds if self.seconds > 0 else 0.0


def _parse(line: bytes) -> object:
    """One JSON value, or `InvalidEvent` naming what is wrong with the line (never its content)."""
    if len(line) > MAX_LINE_BYTES:
        raise InvalidEvent.one("line", "longer than 1 MiB")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidEvent.one("line", "not valid UTF-8") from None
    try:
        return json.loads(text)
    except RecursionError:
        raise InvalidEvent.one("line", "JSON nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise InvalidEvent.one("line", f"not valid JSON (column {exc.colno})") from None


def publish_lines(
    lines: Iterable[bytes],
    publisher: EventSink,
    reject: Callable[[str], None],
    progress: Callable[[str], None],
    clock: Callable[[], float] = time.monotonic,
) -> Summary:
    """Publish every valid line, report every invalid one, flush, and say how it went."""
    summary = Summary()
    started = last_report = clock()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            publisher.publish(_parse(line))
            summary.published += 1
        except InvalidEvent as invalid:
            summary.rejected += 1
            for error in invalid.errors:
                reject(f"line {number}: {error}")
        now = clock()
        if now - last_report >= PROGRESS_EVERY_S:
            last_report = now
            progress(
                f"... {summary.published} published, {summary.rejected} rejected "
                f"({summary.published / (now - started):.0f} events/s)"
            )
    publisher.flush()
    summary.seconds = clock() - started
    return summary
