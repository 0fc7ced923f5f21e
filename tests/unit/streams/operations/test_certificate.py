"""Deletion certificates: signed canonical JSON; any change or another signer fails with one error."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shredline.streams.operations.certificate import CertificateInvalid, render_text, sign, verify

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
BODY: dict[str, Any] = {
    "id": "5f0c",
    "tenant": "acme",
    "generation": 1,
    "terminated_at": "2026-11-28T10:00:00+00:00",
    "issued_at": "2026-11-28T10:00:03+00:00",
    "operator": "alice",
    "reason": "contract ended",
    "policy_version": "2026-11",
    "keys_destroyed": {"root": 1, "conversation": 12, "contact": 3, "before_termination": 4},
    "key_id_digests": ["00aa", "11bb"],
    "key_id_digests_sha256": "ff" * 32,
    "topics_affected": {"p.buffer.messages": "unreadable"},
    "verification": {
        "buffer_records_sampled": 20,
        "buffer_records_readable": 0,
        "data_keys_remaining": 0,
        "root_key_remaining": False,
    },
    "audit_head": {"seq": 41, "hash": "ab" * 32},
}


def test_a_signed_certificate_verifies_after_a_json_round_trip() -> None:
    document = json.loads(json.dumps(sign(BODY, KEY), indent=1))
    body = verify(document, KEY.public_key())
    assert body["tenant"] == "acme" and body["format"] == "shredline-deletion-certificate/1"
    assert body["signer"].startswith("ed25519:")


@pytest.mark.parametrize(
    "tamper",
    [
        lambda d: d["certificate"]["keys_destroyed"].update(conversation=13),
        lambda d: d["certificate"].update(operator="bob"),
        lambda d: d["certificate"]["key_id_digests"].pop(),
        lambda d: d["certificate"].update(extra=1),
        lambda d: d.update(signature=d["signature"][:-4] + "AAA="),
        lambda d: d.update(signature="not base64!"),
        lambda d: d.pop("signature"),
        lambda d: d.update(certificate="x"),
    ],
)
def test_any_change_fails_with_one_opaque_error(tamper: Any) -> None:
    document = copy.deepcopy(sign(BODY, KEY))
    tamper(document)
    with pytest.raises(CertificateInvalid, match="changed or not signed by this provider"):
        verify(document, KEY.public_key())


def test_another_signer_is_refused_even_with_its_own_valid_signature() -> None:
    other = Ed25519PrivateKey.generate()
    with pytest.raises(CertificateInvalid):
        verify(sign(BODY, other), KEY.public_key())


def test_the_text_rendering_names_what_was_destroyed_and_checked() -> None:
    text = render_text(sign(BODY, KEY)["certificate"])
    assert "Tenant           acme (key generation 1)" in text
    assert "conversation keys   12" in text and "of which still readable      0" in text
    assert f"Audit trail      reached seq 41, record SHA-256 {'ab' * 32}" in text
