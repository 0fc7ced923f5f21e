"""Redaction cost per log line: the redaction before issue 15 against today's, in the same run.

    python -m bench.redaction [--rounds 5]

Lines: the hand-written labelled set (tests/unit/processors/redaction_set_*.txt, with their
contacts) and 900 lines from the generator's templates. Each line is redacted `rounds` times
after one warm-up pass (so compiled patterns are cached, as in the worker); the figure is the
median over rounds of the mean microseconds per line.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import statistics
import time
from collections.abc import Callable

import phonenumbers

from bench.results import Figure, save
from shredline.processors.redact import redact

_OLD_EMAIL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")


def old_redact(text: str, *, name: str | None = None, phone: str | None = None, email: str | None = None) -> str:
    """The redaction as it was before issue 15 (main at 3d3dd17), for the baseline."""
    if email:
        text = re.sub(re.escape(email), "[EMAIL]", text, flags=re.IGNORECASE)
    if name:
        parts = [p.strip(".,") for p in name.split()]
        keep = [p for p in parts if len(p) >= 3]
        for part in sorted({name, *keep}, key=len, reverse=True):
            text = re.sub(rf"(?<!\w){re.escape(part)}(?!\w)", "[NAME]", text, flags=re.IGNORECASE)
    region = "US"
    if phone:
        with contextlib.suppress(phonenumbers.NumberParseException):
            region = phonenumbers.region_code_for_number(phonenumbers.parse(phone, None)) or "US"
    matches = list(phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.POSSIBLE))
    for match in reversed(matches):
        text = text[: match.start] + "[PHONE]" + text[match.end :]
    return _OLD_EMAIL.sub("[EMAIL]", text)


Redactor = Callable[..., str]


def _lines() -> list[tuple[str, dict[str, str]]]:
    from tests.unit.processors.test_redaction import labelled_set
    from tests.unit.processors.test_redaction_labelled import load

    hand = [(c.text, c.contact) for c in load()]
    generated = [(text, known) for text, _expected, known in labelled_set(300)]
    return hand + generated


def _per_line_us(redactor: Redactor, lines: list[tuple[str, dict[str, str]]], rounds: int) -> float:
    for text, known in lines:  # warm-up: caches filled, as in a running worker
        redactor(text, **known)
    means = []
    for _ in range(rounds):
        started = time.perf_counter()
        for text, known in lines:
            redactor(text, **known)
        means.append((time.perf_counter() - started) / len(lines) * 1e6)
    return statistics.median(means)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    lines = _lines()
    old = _per_line_us(old_redact, lines, args.rounds)
    new = _per_line_us(redact, lines, args.rounds)
    print(f"{len(lines)} lines: before issue 15 {old:.1f} us/line, now {new:.1f} us/line ({new / old:.2f}x)")
    save(
        "redaction",
        [
            Figure(
                f"redaction of {len(lines)} log lines", round(new, 1), "redaction before issue 15", round(old, 1), "us"
            )
        ],
        lines=len(lines),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
