"""What the worker's processors cost, each against its baseline in the same run (CPU time):

    python -m bench.redaction [--rounds 5] [--events 3000]

1. **Redaction per log line**, with the caches warm (a warm-up pass first, as in a running
   worker), against the redaction before issue 15.
2. **Redaction per log line, each contact met for the first time** (the name and phone caches,
   and Python's own pattern cache, emptied before each round), and warm, against the name and
   phone patterns compiled per contact as before (tests/unit/processors/compiled_reference.py).
3. **Validation per event** of the generator's events (3 tenants, one contact in three met
   again), the verdict caches emptied before each round, against the same with no e-mail verdict
   kept (email-validator on every address, as before it was cached).
4. **`Splitter.handle_batch` alone per event** (`bench.worker.splitter_cpu_us`: batches of 500,
   real keys on SQLite, plaintext and sealed X25519, the same events), every cache empty
   at the start (there, the preparation's validation left the verdicts cached), against the
   same with both old paths (patterns compiled per contact, no e-mail verdicts).

Lines for 1 and 2: the hand-written labelled set (tests/unit/processors/redaction_set_*.txt,
with their contacts) and 900 lines from the generator's templates. Rounds are interleaved (old,
new, old, new...) and the fastest kept: other load on the machine only ever slows a round down.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import re
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any
from unittest import mock

import phonenumbers

import bench.worker
from bench.results import Figure, save
from shredline.keystore.ingest import Kem
from shredline.processors import names, phones, validation
from shredline.processors.redact import redact
from shredline.streams.ingest.generate import generate
from tests.unit.processors import compiled_reference

_OLD_EMAIL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
Lines = list[tuple[str, dict[str, str]]]


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


class _Forgetful(dict[bytes, bool | None]):
    """A verdict cache that keeps nothing: every value is checked again."""

    def __setitem__(self, key: bytes, value: bool | None) -> None:
        return None


@contextlib.contextmanager
def old_paths(old: bool) -> Iterator[None]:
    """With `old`, the name and phone patterns compiled per contact and no e-mail verdict kept,
    as before they changed; else today's code. Every cache is empty on entry."""
    with contextlib.ExitStack() as stack:
        if old:
            stack.enter_context(mock.patch.object(names, "matcher", compiled_reference.name_matcher))
            stack.enter_context(mock.patch.object(phones, "known", compiled_reference.known_phone))
            stack.enter_context(mock.patch.object(validation, "_email_verdicts", _Forgetful()))
        names.matcher.cache_clear()
        phones.known.cache_clear()
        validation.forget_verdicts()
        yield


def _validate_keeping_nothing(event: object, now: dt.datetime) -> validation.ValidEvent:
    """`validate` that leaves the verdict caches as they were (for the Splitter's preparation)."""
    with (
        mock.patch.object(validation, "_email_verdicts", _Forgetful()),
        mock.patch.object(validation, "_phone_verdicts", _Forgetful()),
    ):
        return validation.validate(event, now)


def _splitter_us(events: list[dict[str, Any]], kem: Kem | None) -> float:
    """`bench.worker.splitter_cpu_us`, its preparation (which validates every event) leaving no verdict
    cached: the batches meet every contact's values for the first time, as a worker does."""
    with mock.patch.object(bench.worker, "validate", _validate_keeping_nothing):
        return bench.worker.splitter_cpu_us(events, kem)


def _lines() -> Lines:
    from tests.unit.processors.test_redaction import labelled_set
    from tests.unit.processors.test_redaction_labelled import load

    hand = [(c.text, c.contact) for c in load()]
    generated = [(text, known) for text, _expected, known in labelled_set(300)]
    return hand + generated


def _redaction_us(redactor: Callable[..., str], lines: Lines, *, warm: bool) -> float:
    """CPU µs per line of one pass over `lines`; after a warm-up pass if `warm`, else with
    Python's pattern cache emptied and refilled by the same lines without their contacts, so
    only what is built per contact is missing."""
    re.purge()
    for text, known in lines:
        if warm:
            redactor(text, **known)
        else:
            redactor(text)
    started = time.process_time()
    for text, known in lines:
        redactor(text, **known)
    return (time.process_time() - started) / len(lines) * 1e6


def _validation_us(events: list[dict[str, Any]], now: dt.datetime) -> float:
    started = time.process_time()
    for event in events:
        validation.validate(event, now)
    return (time.process_time() - started) / len(events) * 1e6


def _best_of(rounds: int, measures: dict[str, Callable[[], float]]) -> dict[str, float]:
    """Each measure's lowest figure over `rounds` interleaved rounds."""
    best: dict[str, float] = {}
    for _ in range(rounds):
        for name, measure in measures.items():
            best[name] = min(best.get(name, float("inf")), measure())
    return best


def _in(old: bool, measure: Callable[[], float]) -> Callable[[], float]:
    def run() -> float:
        with old_paths(old):
            return measure()

    return run


COMPILED = "name and phone patterns compiled per contact"
UNCACHED = "no e-mail verdict kept"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--events", type=int, default=3000, help="generated events for validation and the Splitter")
    args = parser.parse_args()
    lines = _lines()
    now = dt.datetime.now(dt.UTC)
    events = list(generate(3, args.events, 4, now - dt.timedelta(days=2), dt.timedelta(days=1)))
    kems: dict[str, Kem | None] = {"plaintext": None, "sealed X25519": Kem.X25519}
    warm = "redaction per line, caches warm"
    compared: list[tuple[str, str, Callable[[], float]]] = [  # what, its baseline, how it is measured
        ("redaction per line, each contact met first", COMPILED, lambda: _redaction_us(redact, lines, warm=False)),
        (warm, COMPILED, lambda: _redaction_us(redact, lines, warm=True)),
        ("validation per event, caches emptied first", UNCACHED, lambda: _validation_us(events, now)),
        *(
            (f"Splitter.handle_batch per event, {name}", f"{COMPILED}; {UNCACHED}", partial(_splitter_us, events, kem))
            for name, kem in kems.items()
        ),
    ]
    measures = {"before issue 15": lambda: _redaction_us(old_redact, lines, warm=True)}
    for what, _baseline, measure in compared:
        measures |= {f"{what}, before": _in(True, measure), what: _in(False, measure)}
    best = {name: round(value, 1) for name, value in _best_of(args.rounds, measures).items()}
    figures = [Figure(warm, best[warm], "redaction before issue 15", best["before issue 15"], "us")]
    figures += [Figure(what, best[what], baseline, best[f"{what}, before"], "us") for what, baseline, _m in compared]
    print(f"{len(lines)} log lines, {len(events)} events; CPU us, best of {args.rounds} interleaved rounds")
    print(f"{'':<46}{'now':>8}{'before':>9}{'ratio':>8}  before =")
    for f in figures:
        print(f"{f.what:<46}{f.value:>8.1f}{f.baseline_value:>9.1f}{f.ratio:>7.2f}x  {f.baseline}")
    save("redaction", figures, lines=len(lines), events=len(events), rounds=args.rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
