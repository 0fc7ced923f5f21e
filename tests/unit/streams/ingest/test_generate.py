"""The synthetic workload: deterministic, valid, and realistic enough to exercise redaction."""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from itertools import islice

import phonenumbers

from shredline.processors.validation import validate
from shredline.streams.ingest.generate import default_start, generate

START = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
SPAN = dt.timedelta(days=7)
AFTER = START + SPAN


def events(seed: int = 1, count: int = 3000, tenants: int = 3) -> list[dict[str, object]]:
    return list(generate(tenants, count, seed, START, SPAN))


def test_same_seed_same_events_other_seed_other_events() -> None:
    first = events(seed=7)
    assert first == events(seed=7)
    assert first != events(seed=8)


def test_exact_count_in_time_order_within_the_span() -> None:
    assert len(list(generate(3, 600, 2, START, dt.timedelta(days=1)))) == 600
    out = events(count=2500)
    assert len(out) == 2500
    times = [str(e["occurred_at"]) for e in out]
    assert times == sorted(times)
    assert times[0] >= "2026-11-01" and times[-1] < "2026-11-08"


def test_every_generated_event_passes_validation() -> None:
    for event in events(count=4000, tenants=4):
        validate(event, AFTER)


def test_mix_of_types_channels_locales_and_lifecycles() -> None:
    out = events(count=6000)
    kinds = Counter(str(e["type"]) for e in out)
    assert kinds["message"] > 2000 and kinds["execution"] > 1000 and kinds["contact"] > 100
    assert {e["channel"] for e in out if e["type"] == "message"} == {"WHATSAPP", "SMS"}
    assert {e["direction"] for e in out if e["type"] == "message"} == {"INBOUND", "OUTBOUND"}
    assert any(e.get("closes_conversation") for e in out)
    assert {e["op"] for e in out if e["type"] == "contact"} == {"UPSERT", "DELETE"}
    assert any(e.get("status") == "FAILED" for e in out)
    regions = {
        phonenumbers.region_code_for_number(phonenumbers.parse(str(e["contact_phone"])))
        for e in out
        if e["type"] == "message"
    }
    assert regions == {"BR", "ES", "US"}


def test_log_lines_mention_people_the_ways_people_write_them() -> None:
    logs = [e for e in events(count=6000) if e["type"] == "execution"]
    with_name = sum(str(e["contact_name"]) in str(e["log_line"]) for e in logs)
    with_mail = sum(str(e["contact_email"]) in str(e["log_line"]) for e in logs)
    assert with_name > 100 and with_mail > 50
    phone_shapes = set()
    for e in logs:
        digits = str(e["contact_phone"])[-4:]
        for token in re.findall(r"[+(]?\d[\d ()\-]{6,}\d", str(e["log_line"])):
            if token.replace("-", "").replace(" ", "").endswith(digits):
                phone_shapes.add(("+" in token, " " in token, "-" in token, "(" in token))
    assert len(phone_shapes) >= 4  # E.164, international, national with brackets, dashes, bare digits


def test_default_start_keeps_the_data_in_the_past() -> None:
    now = dt.datetime(2026, 11, 28, 0, 30, tzinfo=dt.UTC)
    start = default_start(now, SPAN)
    assert start == dt.datetime(2026, 11, 21, tzinfo=dt.UTC)
    last = list(islice(generate(2, 500, 3, start, SPAN), 500))[-1]
    validate(last, now)
