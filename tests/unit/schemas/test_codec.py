"""Single-object encoding: round trips, version resolution, interop with Apache avro, and safe errors."""

from __future__ import annotations

import contextlib
import io
import json

import avro.io
import avro.schema
import pytest
from fastavro.schema import to_parsing_canonical_form
from hypothesis import given, settings
from hypothesis import strategies as st

from shredline.schemas import SCHEMA_DIR, registry
from shredline.schemas.codec import MARKER, DecodeError, decode, encode, writer_of
from tests.unit.samples import sample

CANARY = "canary-Zq9-ana.souza@example.com"


@pytest.mark.parametrize("record", registry().records())
def test_every_record_round_trips_with_its_current_version(record: str) -> None:
    current = registry().current(record)
    value = sample(current.parsed, CANARY)
    data = encode(record, value)
    assert data[:2] == MARKER and data[2:10] == current.fingerprint
    assert decode(data, expect=record) == (record, value)


def test_bytes_written_with_an_old_version_read_into_the_current_one() -> None:
    v1 = registry().versions("message_event")[0]
    old = sample(v1.parsed, CANARY)
    buf = io.BytesIO()
    buf.write(MARKER + v1.fingerprint)
    from fastavro import schemaless_writer

    schemaless_writer(buf, v1.parsed, old)
    assert writer_of(buf.getvalue()) == v1
    record, value = decode(buf.getvalue())
    assert record == "message_event"
    assert value == {**old, "attachment_count": 0, "opens_conversation": False}  # later fields take their defaults


@pytest.mark.parametrize("record", registry().records())
def test_apache_avro_reads_our_bytes_and_agrees_on_the_fingerprint(record: str) -> None:
    current = registry().current(record)
    path = SCHEMA_DIR / record / f"v{current.version}.avsc"
    reference = avro.schema.parse(path.read_text())
    # The spec's canonical form strips logicalType, so a timestamp-millis is plain "long" (as
    # Java computes it). Python avro keeps {"type":"long"} there and so fingerprints schemas
    # with logical types differently; we follow the spec. Apache avro's own CRC-64-AVRO over
    # the spec form must give our header bytes.
    canonical = to_parsing_canonical_form(current.parsed)
    assert "logicalType" not in canonical
    assert avro.schema.parse(canonical).fingerprint("CRC-64-AVRO") == current.fingerprint

    data = encode(record, sample(current.parsed, CANARY))
    body = io.BytesIO(data[10:])
    read = avro.io.DatumReader(reference).read(avro.io.BinaryDecoder(body))
    assert body.tell() == len(data) - 10
    assert json.dumps(read, default=str).count(CANARY) >= 1


def test_our_reader_reads_bytes_apache_avro_wrote() -> None:
    current = registry().current("dead_letter")
    reference = avro.schema.parse((SCHEMA_DIR / "dead_letter" / f"v{current.version}.avsc").read_text())
    value = sample(current.parsed, CANARY)
    body = io.BytesIO()
    avro.io.DatumWriter(reference).write(value, avro.io.BinaryEncoder(body))
    data = MARKER + current.fingerprint + body.getvalue()
    assert decode(data) == ("dead_letter", value)


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda b: b"\x00\x01" + b[2:], "missing C3 01 header"),
        (lambda b: b[:2] + b"\xff" * 8 + b[10:], "unknown schema fingerprint"),
        (lambda b: b[:14], "malformed"),
        (lambda b: b + b"\x00", "trailing bytes"),
        (lambda b: b[:5], "missing C3 01 header"),
    ],
)
def test_bad_bytes_give_a_reason_that_never_quotes_the_data(mangle: object, reason: str) -> None:
    data = encode("dead_letter", sample(registry().current("dead_letter").parsed, CANARY))
    with pytest.raises(DecodeError) as err:
        decode(mangle(data))  # type: ignore[operator]
    assert reason in err.value.reason
    assert CANARY not in str(err.value) and "canary" not in repr(err.value.__dict__)
    # no chained library exception (whose message might quote the data) is shown with it
    assert err.value.__cause__ is None
    assert err.value.__context__ is None or err.value.__suppress_context__


def test_expecting_another_record_is_refused() -> None:
    data = encode("dead_letter", sample(registry().current("dead_letter").parsed))
    with pytest.raises(DecodeError, match="expected message_event, got dead_letter"):
        decode(data, expect="message_event")


@settings(max_examples=2000)
@given(st.binary(max_size=300), st.sampled_from(registry().records()))
def test_random_bytes_after_a_real_header_only_ever_raise_decode_error(tail: bytes, record: str) -> None:
    data = MARKER + registry().current(record).fingerprint + tail
    with contextlib.suppress(DecodeError):
        decode(data)


# -- canonical: one byte form for records that are hashed or signed -------------------------------
def audit_record(seq: int = 0) -> bytes:
    import datetime as dt

    value = {
        "seq": seq,
        "at": dt.datetime(2026, 11, 29, tzinfo=dt.UTC),
        "actor": "alice",
        "action": "tenant.provision",
        "tenant": "acme",
        "subject": None,
        "details": {"a": "1", "b": "2"},
        "prev_hash": bytes(32),
        "hash": bytes(32),
        "signature": None,
    }
    return encode("audit_event", value)


@pytest.mark.parametrize(
    ("name", "forge"),
    [
        # a map with the key "a" twice: last-wins readers see {"a": "2"}, a first-wins reader "1"
        ("duplicate map key", lambda d: d.replace(b"\x02b\x022", b"\x02a\x022")),
        # the same map with its entries the other way round: same content, same hash, other bytes
        ("map entries out of key order", lambda d: d.replace(b"\x02a\x021\x02b\x022", b"\x02b\x022\x02a\x021")),
        # seq 0 written as an over-long varint (0x80 0x00) instead of 0x00
        ("over-long varint", lambda d: d[:10] + b"\x80\x00" + d[11:]),
    ],
)
def test_canonical_decoding_refuses_a_second_byte_form_of_a_record(name: str, forge: object) -> None:
    data = audit_record()
    assert data[10] == 0  # seq 0 is the body's first byte
    forged = forge(data)  # type: ignore[operator]
    assert forged != data
    decode(forged, expect="audit_event")  # the lenient reader takes it: this is what canonical closes
    with pytest.raises(DecodeError, match="not in its canonical encoding"):
        decode(forged, expect="audit_event", canonical=True)
    assert decode(data, expect="audit_event", canonical=True)[1]["details"] == {"a": "1", "b": "2"}


def test_canonical_encoding_writes_map_entries_in_key_order() -> None:
    value = decode(audit_record(), expect="audit_event")[1] | {"details": {"b": "2", "a": "1"}}
    assert encode("audit_event", value) != audit_record()  # a map is written in the dict's order...
    assert encode("audit_event", value, canonical=True) == audit_record()  # ...or in key order
