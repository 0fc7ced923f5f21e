"""Deletion certificates: what a termination destroyed and checked, signed by the provider.

Pure: no Kafka, no key store. The signed body is canonical JSON (sorted keys, no spaces), so
any change to any field, or a different signer, fails `verify` with one opaque error, as with a
tampered ciphertext. It names keys only by digest and holds no personal data.

A certificate file has exactly one byte form, `dump(document)`. `load` accepts those bytes and
nothing else: no duplicate keys (a first-wins reader, or a person reading the top of the file,
would see another tenant than the signature covers), no NaN, no trailing data, no other
spacing, key order or escaping, and the signature only in its one base64 form. So what a person
reads is what was signed.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
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


class CertificateMalformed(ShredlineError):
    """The file is not in the one byte form certificates are written in; the reason says how."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"certificate: {reason}")


_SAFE_KEY = re.compile(r"[a-z_]{1,40}")


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            shown = f'"{key}"' if _SAFE_KEY.fullmatch(key) else "a key"
            raise CertificateMalformed(
                f"duplicate key {shown}: a reader could see a value the signature does not cover"
            )
        seen[key] = value
    return seen


def _no_constant(name: str) -> Any:
    raise CertificateMalformed(f"{name} is not a JSON number")


def dump(document: dict[str, Any]) -> bytes:
    """The file form of a signed certificate: JSON with sorted keys, one-space indent, ASCII only
    (other characters escaped), and one trailing newline. The only form `load` accepts."""
    return (json.dumps(document, indent=1, sort_keys=True, ensure_ascii=True, allow_nan=False) + "\n").encode("ascii")


def load(data: bytes) -> dict[str, Any]:
    """Parse a certificate file's bytes, strictly; raises `CertificateMalformed` naming the fault.

    Accepts exactly `dump(document)` for some document `{"certificate": {...}, "signature": str}`;
    the signature is checked by `verify`.
    """
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise CertificateMalformed("not ASCII: the written form escapes every other character") from None
    try:
        document, end = json.JSONDecoder(object_pairs_hook=_unique, parse_constant=_no_constant).raw_decode(text)
    except ValueError as exc:
        if isinstance(exc, CertificateMalformed):
            raise
        raise CertificateMalformed("not JSON") from None
    except RecursionError:  # the parser recurses per level: thousands of `[` exhaust the stack
        raise CertificateMalformed("nested too deeply to be a certificate") from None
    if text[end:] != "\n":
        raise CertificateMalformed(
            "trailing data after the JSON document" if text[end:].strip() else "not in canonical form"
        )
    if not isinstance(document, dict) or set(document) != {"certificate", "signature"}:
        raise CertificateMalformed('expected exactly the keys "certificate" and "signature"')
    if _signature_bytes(document["signature"]) is None:
        raise CertificateMalformed("the signature is not the canonical base64 of 64 bytes")
    if dump(document) != data:
        raise CertificateMalformed("not in canonical form (spacing, key order or escaping differ from what was signed)")
    return document


def _signature_bytes(text: object) -> bytes | None:
    """The Ed25519 signature `text` encodes, if it is the one base64 form of 64 bytes: the decoder
    ignores the last character's unused bits, so 16 strings would decode to the same signature."""
    if not isinstance(text, str):
        return None
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == 64 and base64.b64encode(raw).decode("ascii") == text else None


def _canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def sign(body: dict[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    body = {"format": FORMAT, **body, "signer": fingerprint(key.public_key())}
    return {"certificate": body, "signature": base64.b64encode(key.sign(_canonical(body))).decode()}


def verify(document: dict[str, Any], public_key: Ed25519PublicKey) -> dict[str, Any]:
    """The certificate body, if the document is exactly what this provider signed."""
    try:
        body = document["certificate"]
        signature = _signature_bytes(document["signature"])
        if signature is None or body.get("format") != FORMAT or body.get("signer") != fingerprint(public_key):
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
        *_backlog_lines(body.get("ingest_backlog")),
        "Verification:",
        f"  buffer records sampled       {checks['buffer_records_sampled']}",
        f"  of which still readable      {checks['buffer_records_readable']}",
        f"  data keys left in the store  {checks['data_keys_remaining']}",
        f"  root key left in the store   {'yes' if checks['root_key_remaining'] else 'no'}",
        (
            f"  key bytes left in its files  {checks['key_store_residue']} (scanned after the destruction)"
            if checks.get("key_store_files_scanned", True)
            else "  key bytes left in its files  not scannable from here (a database server): its old row versions"
            " and WAL may hold wrapped copies, under master key versions destroyed with the root"
        ),
        *(
            [f"  key bytes in other files     {checks['other_files_residue']} (the data dir; broker storage aside)"]
            if "other_files_residue" in checks
            else []
        ),
        f"  master key rotated           {'yes' if checks['master_key_rotated'] else 'no (kept outside Shredline)'}",
        "",
        f"Signed by the provider key {body['signer']} (Ed25519).",
        "Check with: shredline certificate verify FILE.json",
    ]
    return "\n".join(lines) + "\n"


def _backlog_lines(backlog: dict[str, Any] | None) -> list[str]:
    """The ingest backlog section (certificates issued before sealed ingest have none)."""
    if backlog is None:
        return []
    if not backlog["counted"]:
        return ["Ingest backlog: not counted", ""]
    return [
        "Ingest backlog (records the worker had not processed when the keys were destroyed):",
        f"  sealed to the tenant's ingest key  {backlog['unprocessed_sealed']}  unreadable: "
        f"the ingest private key ({backlog['ingest_private_key']})",
        f"  in plaintext (unsealed producer)   {backlog['unprocessed_plaintext']}",
        "",
    ]
