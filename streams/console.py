"""What every command shares: progress on stderr, tables on stdout, argument types."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Sequence
from typing import TypeAlias


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a positive integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError("expected a positive integer")
    return value


def duration_s(text: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        value = int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)
    except (ValueError, IndexError):
        raise argparse.ArgumentTypeError("expected a duration such as 90s, 30m, 24h or 7d") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("expected a positive duration")
    return value


def utc_time(text: str) -> dt.datetime:
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected an ISO-8601 time such as 2026-11-01T00:00:00Z") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


#: `add_subparsers(...)`'s return value, which each command module extends.
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"  # no public name in the stdlib
