"""Deletion certificates: what a termination destroyed and checked, signed by the provider.

Pure: no Kafka, no key store. The signed body is canonical JSON (sorted keys, no spaces), so
any change to any field, or a different signer, fails `verify` with one opaque error, as with a
tampered ciphertext. It names keys only by digest and holds no personal data.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from shredline.schemas.errors import ShredlineError
from shredline.streams.operations.signing import fingerprint

FORMAT = "shredline-deletion-certificate/1"


class CertificateInvalid(ShredlineError):
    """Changed, truncated, or not signed by this provider. Deliberately says nothing more."""

    exit_code = 1

    def __init__(self) -> None:
        super().__init__("certificate does not verify: it was changed or not signed by this provider's key")


def _canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def sign(body: dict[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    body = {"format": FORMAT, **body, "signer": fingerprint(key.public_key())}
    return {"certificate": body, "signature": base64.b64encode(key.sign(_canonical(body))).decode()}


def verify(document: dict[str, Any], public_key: Ed25519PublicKey) -> dict[str, Any]:
    """The certificate body, if the document is exactly what this provider signed."""
    try:
        body = document["certificate"]
        signature = base64.b64decode(document["signature"], validate=True)
        if body.get("format") != FORMAT or body.get("signer") != fingerprint(public_key):
            raise CertificateInvalid()
        public_key.verify(signature, _canonical(body))
    except (KeyError, TypeError, AttributeError, ValueError, binascii.Error, InvalidSignature):
        raise CertificateInvalid() from None
    return dict(body)


def render_text(body: dict[str, Any]) -> str:
    """The readable rendering that accompanies the JSON; the JSON is what is signed."""
    keys = body["keys_destroyed"]
    checks = body["verification"]
    lines = [
        "SHREDLINE DELETION CERTIFICATE",
        "",
        f"Certificate      {body['id']}",
        f"Tenant           {body['tenant']} (key generation {body['generation']})",
        f"Terminated at    {body['terminated_at']}",
        f"Issued at        {body['issued_at']}",
        f"Operator         {body['operator']}",
        f"Reason           {body['reason']}",
        f"Policy version   {body['policy_version'] or '(none accepted)'}",
        f"Audit trail      reached seq {body['audit_head']['seq']}, record SHA-256 {body['audit_head']['hash']}",
        "",
        "Keys destroyed by the termination (crypto-shredded; key bytes overwritten, never shown):",
        f"  root key            {keys['root']}",
        f"  conversation keys   {keys['conversation']}",
        f"  contact keys        {keys['contact']}",
        f"  data keys destroyed before (closed, expired, deleted)  {keys['before_termination']}",
        f"  key-id digest list  {len(body['key_id_digests'])} entries, SHA-256 {body['key_id_digests_sha256']}",
        "",
        "Topics affected:",
        *[f"  {topic:<34} {what}" for topic, what in sorted(body["topics_affected"].items())],
        "",
        "Verification:",
        f"  buffer records sampled       {checks['buffer_records_sampled']}",
        f"  of which still readable      {checks['buffer_records_readable']}",
        f"  data keys left in the store  {checks['data_keys_remaining']}",
        f"  root key left in the store   {'yes' if checks['root_key_remaining'] else 'no'}",
        "",
        f"Signed by the provider key {body['signer']} (Ed25519).",
        "Check with: shredline certificate verify FILE.json",
    ]
    return "\n".join(lines) + "\n"
