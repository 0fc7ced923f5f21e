"""What a certificate claims about the tenant's unprocessed ingest records: never more than was counted."""

from __future__ import annotations

from typing import Any

from shredline.streams.operations.certificate import render_text
from shredline.streams.operations.termination import backlog_claims
from tests.unit.streams.operations.test_certificate import BODY


def rendered(trim: dict[str, Any]) -> tuple[dict[str, Any], str, str]:
    backlog, effect = backlog_claims(trim)
    return backlog, effect, render_text({**BODY, "signer": "ed25519:00", "ingest_backlog": backlog})


def test_a_sealed_backlog_is_certified_unreadable_with_its_count() -> None:
    backlog, effect, text = rendered({"partitions": 0, "unprocessed_sealed": 3, "unprocessed_plaintext": 0})
    assert backlog == {
        "counted": True,
        "unprocessed_sealed": 3,
        "unprocessed_plaintext": 0,
        "ingest_private_key": "derived from the tenant root key; destroyed with it",
    }
    assert effect.startswith("processed records deleted; 3 unprocessed sealed to the destroyed ingest key (unreadable)")
    assert "PLAINTEXT" not in effect
    assert "  sealed to the tenant's ingest key  3  unreadable" in text
    assert "  in plaintext (unsealed producer)   0" in text


def test_plaintext_in_the_backlog_is_never_called_unreadable() -> None:
    _backlog, effect, text = rendered({"partitions": 2, "unprocessed_sealed": 1, "unprocessed_plaintext": 4})
    assert "4 unprocessed IN PLAINTEXT until retention" in effect
    assert "  in plaintext (unsealed producer)   4" in text


def test_a_trim_step_recorded_before_sealed_ingest_claims_nothing() -> None:
    backlog, effect, text = rendered({"partitions": 2})
    assert backlog == {"counted": False} and "not counted" in effect and "unreadable" not in effect
    assert "Ingest backlog: not counted" in text
    assert "Ingest backlog" not in render_text(
        {**BODY, "signer": "ed25519:00"}
    )  # certificates issued before it existed render as before
