"""Redaction quality on a labelled set built from the generator's own templates.

Each log line is the generator's template filled with a contact's real values (the input) and
with the placeholders (the label), so every mention is known: recall counts mentions replaced
by the right placeholder, precision counts placeholders that stand where a mention was.
"""

from __future__ import annotations

import datetime as dt
import random
import re
from collections import Counter

from shredline.processors.redact import EMAIL, NAME, PHONE, redact
from shredline.streams.ingest.generate import ERRORS, LOGS, _as_people_write_it, _Tenant

START = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
EXTRA_NEGATIVES = [
    "order #48213 shipped in 3 parcels",
    "retry 3 of 5 after 1500 ms",
    "HTTP 503 from crm.internal:8443",
    "model gpt-small answered in 812 ms (tokens=431)",
    "queue depth 12045",
    "invoice 2026-11-28/0042 created",
]
PLACEHOLDER = re.compile(r"\[(NAME|PHONE|EMAIL)\]")


def labelled_set(per_locale: int = 300) -> list[tuple[str, str, dict[str, str]]]:
    """(input, expected, known contact values) triples over the three locales."""
    out = []
    for index in range(3):
        tenant = _Tenant(index, seed=11, start=START, span=dt.timedelta(days=1), events=1000)
        rng = random.Random(index)
        for _ in range(per_locale):
            contact = tenant._contact()
            template = rng.choice(LOGS + ERRORS)
            phone_text = _as_people_write_it(contact.phone, rng)
            values = {"name": contact.name, "email": contact.email, "phone": phone_text, "ms": "250"}
            labels = {"name": NAME, "email": EMAIL, "phone": PHONE, "ms": "250"}
            out.append(
                (
                    template.format(**values),
                    template.format(**labels),
                    {"name": contact.name, "phone": contact.e164, "email": contact.email},
                )
            )
    out += [(text, text, {}) for text in EXTRA_NEGATIVES]
    return out


def score(cases: list[tuple[str, str, dict[str, str]]]) -> tuple[float, float, Counter[str]]:
    expected_total = emitted_total = correct = 0
    misses: Counter[str] = Counter()
    for text, expected, known in cases:
        got = redact(text, **known)
        want = PLACEHOLDER.findall(expected)
        have = PLACEHOLDER.findall(got)
        expected_total += len(want)
        emitted_total += len(have)
        matched = sum((Counter(want) & Counter(have)).values())
        correct += matched
        if got != expected:
            misses[template_of(expected)] += 1
    recall = correct / expected_total
    precision = correct / emitted_total if emitted_total else 1.0
    return precision, recall, misses


def template_of(expected: str) -> str:
    return re.sub(r"\d+", "#", expected)


def test_redaction_precision_and_recall_on_the_labelled_set() -> None:
    cases = labelled_set()
    precision, recall, misses = score(cases)
    print(
        f"\nredaction on {len(cases)} labelled lines: precision {precision:.4f}, recall {recall:.4f}; "
        f"lines not exactly as labelled: {sum(misses.values())} {misses.most_common(3)}"
    )
    assert recall == 1.0, misses.most_common(5)
    assert precision >= 0.99, misses.most_common(5)


def test_no_known_value_survives_redaction() -> None:
    for text, _expected, known in labelled_set(100):
        got = redact(text, **known)
        for value in filter(None, known.values()):
            assert value not in got
        digits = re.sub(r"\D", "", known.get("phone", ""))[-7:]
        if digits:
            assert digits not in re.sub(r"\D", "", got)


def test_unknown_people_in_text_are_caught_by_pattern() -> None:
    got = redact("forwarded to maria.lopez@example.org and +34 612 34 56 78, cc (201) 555-0123", phone="+12015550100")
    assert got == "forwarded to [EMAIL] and [PHONE], cc [PHONE]"
