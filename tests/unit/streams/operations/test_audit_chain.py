"""The audit chain without Kafka: building it from outbox entries, and finding every bad record."""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shredline.keystore.store import AuditEntry, AuditHead
from shredline.schemas.codec import decode, encode
from shredline.streams.operations.audit import Positioned, alarm, chain, head_of, record_hash, verify

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PUBLIC = KEY.public_key()


def entries(first: int, n: int) -> list[AuditEntry]:
    return [
        AuditEntry(i, 1_800_000_000.0 + i, "alice", "key.create", "acme", f"digest{i}", {"scope": "conversation"})
        for i in range(first, first + n)
    ]


def through_avro(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [decode(encode("audit_event", r), expect="audit_event")[1] for r in records]


def trail() -> list[dict[str, Any]]:
    """Three relays of 4, 3 and 5 entries, each through Avro as the topic holds them."""
    records: list[dict[str, Any]] = []
    for first, n in ((1, 4), (5, 3), (8, 5)):
        records += through_avro(chain(head_of(records[-1]) if records else None, entries(first, n), "store1", KEY))
    return records


def at(records: list[dict[str, Any]]) -> list[Positioned]:
    return list(enumerate(records))


def first(records: list[dict[str, Any]], **anchors: AuditHead) -> tuple[int | None, str]:
    verdict = verify(at(records), PUBLIC, {name.replace("_", " "): h for name, h in anchors.items()})
    assert not verdict.ok
    return verdict.findings[0].offset, verdict.findings[0].reason


def test_an_untouched_trail_verifies_every_record_signed() -> None:
    records = trail()
    verdict = verify(at(records), PUBLIC, {"the key store": head_of(records[-1])})
    assert verdict.ok and (verdict.records, verdict.chained, verdict.head) == (12, 12, head_of(records[-1]))
    assert [r["seq"] for r in records] == list(range(12))
    assert all(r["signature"] for r in records)
    assert records[5]["details"]["outbox"] == "store1:6"


def test_a_record_chained_right_but_unsigned_is_not_the_providers_wherever_it_is() -> None:
    """Issue 13 (a): right seq, right prev_hash, its own hash, no signature: named, not accepted."""
    records = trail()
    forged = {**records[-1], "seq": 12, "prev_hash": records[-1]["hash"], "actor": "root", "signature": None}
    forged["action"], forged["tenant"] = "tenant.terminate.certificate", "acme"
    forged["hash"] = record_hash(forged)
    assert first([*records, forged]) == (12, "the record claiming seq 12 is not signed: the provider did not write it")
    # ...and a signed record after it does not vouch for it: it is still named, first.
    after = chain(head_of(forged), entries(20, 1), "store1", KEY)
    verdict = verify(at([*records, forged, *after]), PUBLIC)
    assert verdict.findings[0].offset == 12 and "not signed" in verdict.findings[0].reason


@pytest.mark.parametrize("field", ["actor", "action", "tenant", "subject", "details", "at"])
def test_a_changed_record_is_named(field: str) -> None:
    forged = copy.deepcopy(trail())
    value = forged[6][field]
    forged[6][field] = (
        {"scope": "contact"}
        if isinstance(value, dict)
        else (value + value if field != "at" else value.replace(year=2030))
    )
    assert first(forged) == (6, "the record claiming seq 6: hash does not match the record's content: it was changed")


def test_a_record_rebuilt_with_consistent_hashes_fails_at_once_on_its_signature() -> None:
    """An attacker without the provider key can rewrite a record and re-hash the rest of the
    chain, but cannot sign any of them."""
    records = trail()
    records[5]["actor"] = "mallory"
    for i in range(5, len(records)):
        records[i]["prev_hash"] = records[i - 1]["hash"]
        records[i]["hash"] = record_hash(records[i])
    assert first(records) == (5, "the record claiming seq 5: signature is not the provider's")
    assert verify(at(records), PUBLIC).chained == 5


def test_a_removed_record_is_detected_where_the_gap_is() -> None:
    records = trail()
    del records[4]
    assert first(records) == (4, "seq 5 where 4 was due: a record was removed, inserted or moved")


def test_reordered_records_are_detected_at_the_first_one_out_of_place() -> None:
    records = trail()
    records[7], records[8] = records[8], records[7]
    assert first(records)[0] == 7


def test_a_replayed_record_of_the_provider_is_named_and_the_chain_goes_on_past_it() -> None:
    """The walk re-synced on the copy: the head was reported as seq 3, and the next genuine record
    was reported out of place too."""
    records = trail()
    following = chain(head_of(records[-1]), entries(100, 2), "store1", KEY)
    replayed = [*records, copy.deepcopy(records[3]), *through_avro(following)]
    assert first(replayed) == (12, "a copy of seq 3, already on the chain: replayed")
    verdict = verify(at(replayed), PUBLIC)
    assert len(verdict.findings) == 1 and verdict.head == head_of(following[-1])
    assert verdict.chained == len(records) + 2 and verdict.records == len(replayed)


def test_a_record_that_is_not_an_audit_event_is_named() -> None:
    records: list[Any] = trail()
    records.insert(3, {"seq": None, "undecodable": "no single-object marker"})
    assert first(records) == (3, "not an audit record (no single-object marker)")


def test_a_cut_tail_is_detected_against_the_key_store_anchor_and_a_certificate() -> None:
    """Issue 13 (b): the chain itself cannot tell a cut tail from a short trail; its anchors can."""
    records = trail()
    assert verify(at(records[:9]), PUBLIC).ok  # without an anchor a prefix looks whole
    offset, reason = first(records[:9], the_key_store=head_of(records[-1]))
    assert offset is None
    assert reason == "the key store says the trail reached seq 11, but the chain on the topic ends at seq 8: cut"
    certificate = {"certificate x.json": head_of(records[9])}
    assert verify(at(records[:9]), PUBLIC, certificate).findings[0].reason.startswith("certificate x.json says")
    assert verify(at(records), PUBLIC, certificate).ok
    other = AuditHead(4, bytes(32))
    assert first(records, the_key_store=other) == (
        None,
        "the key store holds another record at seq 4: the trail was rewritten",
    )


def test_an_alarm_chained_past_a_foreign_record_keeps_the_chain_whole_but_is_reported() -> None:
    records = trail()
    forged = {**records[-1], "seq": 12, "prev_hash": records[-1]["hash"], "signature": None}
    forged["hash"] = record_hash(forged)
    reason = "the record claiming seq 12 is not signed: the provider did not write it"
    raised = alarm(head_of(records[-1]), "audit.alarm.tail-not-ours", {"reason": reason}, "worker", KEY)
    after = chain(head_of(raised), entries(20, 2), "store1", KEY)
    verdict = verify(
        at(through_avro([*records, forged, raised, *after])), PUBLIC, {"the key store": head_of(after[-1])}
    )
    assert (verdict.chained, verdict.head) == (15, head_of(after[-1]))  # the provider's chain skips the forgery
    assert [(f.offset, f.reason) for f in verdict.findings] == [
        (12, reason),
        (13, f"alarm audit.alarm.tail-not-ours at seq 12: {reason}"),
    ]
    assert raised["seq"] == 12 and raised["prev_hash"] == records[-1]["hash"]


def test_signing_every_record_is_cheap() -> None:
    started = time.perf_counter()
    records = chain(None, entries(1, 2000), "store1", KEY)
    signed = time.perf_counter() - started
    started = time.perf_counter()
    assert verify(at(records), PUBLIC).ok
    checked = time.perf_counter() - started
    print(f"\n2000 records: chained and signed in {signed * 1000:.0f} ms, verified in {checked * 1000:.0f} ms")
    assert signed < 2.0 and checked < 2.0  # a relay batch; generous for a shared CI core
