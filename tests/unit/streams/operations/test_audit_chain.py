"""The audit chain without Kafka: building it from outbox entries, and finding the first bad record."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shredline.keystore.store import AuditEntry
from shredline.schemas.codec import decode, encode
from shredline.streams.operations.audit import chain, record_hash, verify

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


def entries(first: int, n: int) -> list[AuditEntry]:
    return [
        AuditEntry(i, 1_800_000_000.0 + i, "alice", "key.create", "acme", f"digest{i}", {"scope": "conversation"})
        for i in range(first, first + n)
    ]


def trail() -> list[dict[str, Any]]:
    """Three relays of 4, 3 and 5 entries, each through Avro as the topic holds them."""
    records: list[dict[str, Any]] = []
    for first, n in ((1, 4), (5, 3), (8, 5)):
        batch = chain(records[-1] if records else None, entries(first, n), "store1", KEY)
        records += [decode(encode("audit_event", r), expect="audit_event")[1] for r in batch]
    return records


def test_an_untouched_trail_verifies_with_a_checkpoint_per_relay() -> None:
    records = trail()
    verdict = verify(records, KEY.public_key())
    assert verdict.ok and (verdict.records, verdict.checkpoints, verdict.unsigned_tail) == (12, 3, 0)
    assert [r["seq"] for r in records] == list(range(12))
    assert records[5]["details"]["outbox"] == "store1:6"


def test_an_unsigned_tail_is_reported_but_not_an_error() -> None:
    records = trail()
    records += chain(records[-1], entries(20, 2), "store1", KEY)
    records[-1]["signature"] = None
    verdict = verify(records, KEY.public_key())
    assert verdict.ok and verdict.unsigned_tail == 2


@pytest.mark.parametrize("field", ["actor", "action", "tenant", "subject", "details", "at"])
def test_a_changed_record_is_named(field: str) -> None:
    records = trail()
    forged = copy.deepcopy(records)
    value = forged[6][field]
    forged[6][field] = (
        {"scope": "contact"}
        if isinstance(value, dict)
        else (value + value if field != "at" else value.replace(year=2030))
    )
    verdict = verify(forged, KEY.public_key())
    assert (verdict.bad_seq, verdict.reason) == (6, "hash does not match the record's content: it was changed")


def test_a_removed_record_is_detected_where_the_gap_is() -> None:
    records = trail()
    del records[4]
    verdict = verify(records, KEY.public_key())
    assert verdict.bad_seq == 4 and "seq 5 where 4 was due" in (verdict.reason or "")


def test_reordered_records_are_detected_at_the_first_one_out_of_place() -> None:
    records = trail()
    records[7], records[8] = records[8], records[7]
    assert verify(records, KEY.public_key()).bad_seq == 7


def test_a_record_rebuilt_with_consistent_seq_and_hashes_still_fails_at_the_next_checkpoint() -> None:
    """An attacker without the provider key can rewrite a record and re-hash the rest of the chain,
    but cannot re-sign the checkpoint."""
    records = trail()
    records[5]["actor"] = "mallory"
    for i in range(5, len(records)):
        records[i]["prev_hash"] = records[i - 1]["hash"]
        records[i]["hash"] = record_hash(records[i])
    verdict = verify(records, KEY.public_key())
    assert verdict.bad_seq == 6 and verdict.reason == "checkpoint signature is not the provider's"


def test_a_record_that_is_not_an_audit_event_is_named() -> None:
    records = trail()
    records.insert(3, {"seq": None, "undecodable": "no single-object marker"})
    verdict = verify(records, KEY.public_key())
    assert verdict.bad_seq == 3 and "not an audit record" in (verdict.reason or "")
