"""Hostile input through the splitter (real keys on SQLite): whatever arrives on an ingest topic
ends as processed, dropped or dead-lettered with a reason, never as an exception, and no dead
letter carries the payload. Hypothesis drives three generators; see `EXAMPLES` for the count."""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import pytest
from fastavro import schemaless_writer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shredline.processors.validation import validate
from shredline.schemas import registry
from shredline.schemas.codec import MARKER, decode, encode
from tests.unit.streams.processing.test_splitter import NOW, Harness, message, plain

EXAMPLES = 1500  # per test below: 4,500 generated inputs in all, plus the fixed hostile cases
TOPICS = ("ingest.messages", "ingest.contacts", "ingest.executions")
CANARY = "zq9canary"
OUTCOMES = {"processed", "dead", "dropped"}


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Harness:
    h = Harness(tmp_path_factory.mktemp("hostile"))
    h.keys.provision("acme")
    return h


def no_canary_in_dead_letters(h: Harness) -> None:
    letters = b"".join(v or b"" for _k, v in h.on("deadletter.ingest"))
    assert CANARY.encode() not in letters.lower()


def valid_wire(h: Harness, **extra: Any) -> bytes:
    """A valid message as the SDK publishes it (sealed)."""
    return h.wire("ingest.messages", message(**extra))


@settings(max_examples=EXAMPLES, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=2000), st.sampled_from(TOPICS))
def test_random_bytes(harness: Harness, data: bytes, topic: str) -> None:
    assert harness.handle(topic, data) in OUTCOMES


@settings(max_examples=EXAMPLES, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.integers(0, 2**32),
    st.sampled_from(TOPICS),
    st.sampled_from(["flip", "truncate", "extend", "splice"]),
    st.sampled_from(["envelope", "sealed event"]),
)
def test_mutated_valid_records(harness: Harness, seed: int, topic: str, how: str, layer: str) -> None:
    """Mutations of the sealed envelope (they must not open), and of the event inside, sealed
    after the mutation (they must not pass validation unnoticed)."""
    rng = random.Random(seed)
    event = message(body=f"{CANARY} body {seed}", event_id=f"m-{seed}")
    data = bytearray(harness.wire(topic, event) if layer == "envelope" else plain(event))
    if how == "flip":
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif how == "truncate":
        data = data[: rng.randrange(len(data))]
    elif how == "extend":
        data += rng.randbytes(rng.randint(1, 64))
    else:
        at = rng.randrange(10, len(data))
        data[at:at] = b"\xff\xfe" * rng.randint(1, 40)  # invalid UTF-8 inside a string field
    wire = bytes(data) if layer == "envelope" else harness.seal(bytes(data), topic)
    assert harness.handle(topic, wire) in OUTCOMES
    no_canary_in_dead_letters(harness)


@settings(max_examples=EXAMPLES, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.text(max_size=6000),
    st.text(max_size=300),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=200),
    st.integers(-(2**40), 2**40),
)
def test_schema_valid_records_with_hostile_values(harness: Harness, body: str, phone: str, ident: str, n: int) -> None:
    """Avro-valid bytes the SDK would never write: any text, any id, any count."""
    current = registry().current("message_event")
    value = validate(message(), NOW).value | {
        "body": body,
        "contact_phone": phone,
        "conversation_id": ident,
        "attachment_count": max(min(n, 2**31 - 1), -(2**31)),
    }
    buf = io.BytesIO()
    buf.write(MARKER + current.fingerprint)
    schemaless_writer(buf, current.parsed, value)
    assert harness.handle("ingest.messages", harness.seal(buf.getvalue(), "ingest.messages")) in OUTCOMES


def test_fixed_hostile_cases_are_dead_lettered_with_their_reason(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.keys.provision("acme")
    oversize = validate(message(), NOW).value | {"body": CANARY + "x" * 100_000}
    nested = b'{"attributes": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5000 + b"}"
    cases = {
        "random": (random.Random(1).randbytes(512), "not Avro single-object encoded (missing C3 01 header)"),
        "unknown fingerprint": (MARKER + b"\x01" * 8 + CANARY.encode(), "unknown schema fingerprint"),
        "truncated": (valid_wire(h)[:30], None),
        "truncated inside": (h.seal(plain(message())[:30], "ingest.messages"), None),
        "oversize body": (
            h.seal(encode("message_event", oversize), "ingest.messages"),
            "body: longer than 4096 characters",
        ),
        "plaintext": (plain(message(body=CANARY)), "not sealed"),
        "deeply nested JSON": (nested, "not Avro single-object encoded (missing C3 01 header)"),
        "empty": (b"", "empty record"),
    }
    for name, (data, _reason) in cases.items():
        assert h.handle("ingest.messages", data) == "dead", name
    letters = [decode(v or b"")[1] for _k, v in h.on("deadletter.ingest")]
    assert len(letters) == len(cases)
    for (name, (_data, reason)), letter in zip(cases.items(), letters, strict=True):
        assert letter["reason"], name
        if reason is not None:
            assert letter["reason"] == reason, name
    no_canary_in_dead_letters(h)
