"""`shredline publish`: JSON lines in, validated Avro records out, one clear line per rejection.

Whatever a line holds, it is either published or rejected with ``line N: field: reason``, and
the next lines go on. A line is one JSON text (RFC 8259) in UTF-8, at most 1 MiB without its
line ending (LF or CRLF); a leading byte order mark is ignored (files joined with `cat` carry
one per file). Beyond what Python's parser accepts, a line is rejected for: a duplicate key
(RFC 8259 leaves its meaning open; we do not guess), ``NaN``/``Infinity`` (not JSON), and
nesting deeper than the parser's recursion limit. A number with more than 20 digits, or one
that overflows a float, reaches validation as `TooLargeNumber`, which names its field
(``attachment_count: number too large``). Lone surrogates (``"\ud800"``) are rejected by
validation as not valid Unicode; invalid UTF-8 bytes reject the line. A line's problems are
reported one per output line, at most `MAX_PROBLEMS_SHOWN` of them and then how many more (a
1 MiB line of 60,000 unknown keys is 11 lines on stderr, not 60,000).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any, Protocol

from shredline.processors.validation import InvalidEvent, TooLargeNumber, ValidEvent, field_label

MAX_LINE_BYTES = 1 << 20
MAX_NUMBER_DIGITS = 20
MAX_PROBLEMS_SHOWN = 10
PROGRESS_EVERY_S = 2.0
_BOM = b"\xef\xbb\xbf"


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


def read_lines(stream: IO[bytes]) -> Iterator[bytes]:
    """The lines of a binary stream, each read with bounded memory: a line longer than
    `MAX_LINE_BYTES` is cut there (and so rejected), its rest skipped, not held in memory."""
    while True:
        line = stream.readline(MAX_LINE_BYTES + 3)  # room for CRLF and one byte over
        if not line:
            return
        if len(line) > MAX_LINE_BYTES + 2 and not line.endswith(b"\n"):
            while (rest := stream.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                pass
        yield line


class _Reject(Exception):
    """A JSON text the parser accepts but we do not: carries `field: reason`, never the value."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field, self.reason = field, reason


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _Reject(field_label(key), "duplicate key")
        obj[key] = value
    return obj


def _integer(digits: str) -> int | TooLargeNumber:
    return TooLargeNumber() if len(digits.lstrip("-")) > MAX_NUMBER_DIGITS else int(digits)


def _float(text: str) -> float | TooLargeNumber:
    value = float(text)
    return value if math.isfinite(value) else TooLargeNumber()


def _constant(_name: str) -> Any:
    raise _Reject("line", "NaN and Infinity are not JSON")


def parse_line(line: bytes) -> object:
    """One JSON value, or `InvalidEvent` naming what is wrong with the line (never its content)."""
    line = line.removeprefix(_BOM).rstrip(b"\r\n")
    if len(line) > MAX_LINE_BYTES:
        raise InvalidEvent.one("line", "longer than 1 MiB")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidEvent.one("line", "not valid UTF-8") from None
    try:
        return json.loads(
            text, object_pairs_hook=_object, parse_int=_integer, parse_float=_float, parse_constant=_constant
        )
    except _Reject as reject:
        raise InvalidEvent.one(reject.field, reject.reason) from None
    except RecursionError:
        raise InvalidEvent.one("line", "JSON nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise InvalidEvent.one("line", f"not valid JSON (column {exc.colno})") from None
    except ValueError:  # anything else the parser refuses
        raise InvalidEvent.one("line", "not valid JSON") from None


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
        if not line.removeprefix(_BOM).strip():
            continue
        try:
            publisher.publish(parse_line(line))
            summary.published += 1
        except InvalidEvent as invalid:
            summary.rejected += 1
            for error in invalid.errors[:MAX_PROBLEMS_SHOWN]:
                reject(f"line {number}: {error}")
            if len(invalid.errors) > MAX_PROBLEMS_SHOWN:
                reject(f"line {number}: line: {len(invalid.errors) - MAX_PROBLEMS_SHOWN} more problems")
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
