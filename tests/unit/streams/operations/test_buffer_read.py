"""Which envelopes a buffer read shows, from a conversation's records in partition order (pure)."""

import datetime as dt

from shredline.schemas.codec import encode
from shredline.streams.operations.buffer_read import READ_DEPTH, latest_events

SEALED_AT = dt.datetime(2026, 12, 6, tzinfo=dt.UTC)


def envelope(ref: str | None, copy: int = 0) -> bytes:
    return encode(
        "sealed_envelope",
        {
            "tenant": "acme",
            "kind": "MESSAGE",
            "record_id": "conv",
            "key_id": f"k{copy}",
            "nonce": b"\0" * 12,
            "ciphertext": f"{ref}/{copy}".encode(),
            "sealed_at": SEALED_AT,
            "event_ref": ref,
        },
    )


def shown(records: list[bytes]) -> list[tuple[str | None, str]]:
    return [(e["event_ref"], e["key_id"]) for e in latest_events(enumerate(records))]


def test_the_newest_events_in_the_order_they_were_first_written() -> None:
    records = [envelope(f"e{i}") for i in range(READ_DEPTH + 10)]
    assert shown(records) == [(f"e{i}", "k0") for i in range(10, READ_DEPTH + 10)]


def test_an_event_sealed_again_shows_once_in_its_first_place_as_its_newest_copy() -> None:
    # a redelivery right after, and a replay of old events long after: neither repeats an event
    # nor pushes newer ones out of the newest READ_DEPTH
    records = [envelope(f"e{i}") for i in range(READ_DEPTH)]
    records += [envelope("e49", copy=1)] + [envelope(f"e{i}", copy=2) for i in range(10)]
    assert shown(records) == [(f"e{i}", "k2" if i < 10 else "k1" if i == 49 else "k0") for i in range(READ_DEPTH)]


def test_records_that_are_not_envelopes_are_skipped_and_events_without_a_ref_count_apart() -> None:
    records = [envelope(None), b"not avro", envelope(None), envelope("e1")]
    assert shown(records) == [(None, "k0"), (None, "k0"), ("e1", "k0")]
