"""JSON lines that have broken `shredline publish`, or could: each with the one rejection it must
get (or None: it must be published). Shared by the unit test and the broker test."""

from __future__ import annotations

import json
from typing import Any

from shredline.streams.ingest.publish import MAX_LINE_BYTES

CANARY = "Zq9canary"


def _dump(event: dict[str, Any]) -> bytes:
    return json.dumps(event, ensure_ascii=False).encode()


def hostile_lines(valid: dict[str, Any]) -> list[tuple[bytes, str | None]]:
    """(line without its newline, expected `field: reason` or None) for a valid message `valid`."""
    valid = {k: v for k, v in valid.items() if k != "attachment_count"}  # the lines add their own
    body = json.dumps(valid)[1:-1]  # the fields, to build lines by hand

    def event(n: int, extra: str = "") -> bytes:
        pair = f'"event_id": "{valid["event_id"]}"'
        return ("{" + body.replace(pair, f'"event_id": "{valid["event_id"]}-{n}"') + extra + "}").encode()

    padded = event(90)
    padded = padded[:-1] + b" " * (MAX_LINE_BYTES - len(padded)) + b"}"
    return [
        (event(1, ', "attachment_count": ' + "1" * 5000), "attachment_count: number too large"),
        (event(2), None),
        (event(3, f', "event_id": "{CANARY}"'), "event_id: duplicate key"),
        (event(4, ', "duration": NaN'), "line: NaN and Infinity are not JSON"),
        (event(5, ', "x": -Infinity'), "line: NaN and Infinity are not JSON"),
        (event(6, ', "attachment_count": 1e999'), "attachment_count: number too large"),
        (event(7).replace(b'"body": "', b'"body": "\\ud800'), "body: not valid Unicode (lone surrogate)"),
        (event(8).replace(b'"body": "', b'"body": "\xed\xa0\x80'), "line: not valid UTF-8"),
        (event(9, ', "\\udc00' + CANARY + '": 1'), "(an unknown field): unknown field"),
        (b"[" * 100_000 + b"]" * 100_000, "line: JSON nested too deeply"),
        (event(10).replace(b'"body": "', b'"body": "' + b"x" * MAX_LINE_BYTES), "line: longer than 1 MiB"),
        (b"\xef\xbb\xbf" + event(11), None),  # a byte order mark: ignored
        (event(12) + b"\r", None),  # CRLF
        (padded, None),  # exactly 1 MiB: still a line
        (b"1" * 5000, "event: expected a JSON object"),
        (b'"' + CANARY.encode() + b'"', "event: expected a JSON object"),
        (event(13).replace(b'"body": "', b'"body": "a\\u0000'), "body: contains a NUL character"),
        (event(14, ', "attachment_count": 2.0'), "attachment_count: expected an integer"),
        (event(15)[:-20], "line: not valid JSON (column"),  # cut short; column varies
        ("\ufeff".encode("utf-16") + event(16), "line: not valid UTF-8"),
        (event(17), None),
    ]
