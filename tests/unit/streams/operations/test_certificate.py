"""Deletion certificates: signed canonical JSON; any change or another signer fails with one error."""

from __future__ import annotations

import base64
import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shredline.streams.operations.certificate import (
    CertificateInvalid,
    CertificateMalformed,
    dump,
    load,
    render_text,
    sign,
    verify,
)
from shredline.streams.operations.signing import public_pem

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
        "key_store_residue": 0,
        "master_key_rotated": True,
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
    assert "key bytes left in its files  0" in text and "master key rotated           yes" in text
    assert f"Audit trail      reached seq 41, record SHA-256 {'ab' * 32}" in text


# -- one byte form: what a person or a first-wins reader sees is what was signed ---------------
def signed_file() -> bytes:
    return dump(sign(BODY, KEY))


def test_the_written_form_loads_and_verifies() -> None:
    body = verify(load(signed_file()), KEY.public_key())
    assert body["tenant"] == "acme"


def with_first_keys(data: bytes, inserted: str) -> bytes:
    """The issue's case: keys inserted at the top of the signed object, as an attacker would."""
    text = data.decode("ascii")
    head = '"certificate": {\n'
    assert head in text
    return text.replace(head, head + inserted, 1).encode("ascii")


def other_base64_of_the_signature(data: bytes) -> bytes:
    document = json.loads(data)
    text = document["signature"]
    assert text.endswith("==")  # 64 bytes: the last character before the padding carries 4 unused bits
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet.index(text[-3])
    other = text[:-3] + alphabet[last ^ 1] + "=="
    assert base64.b64decode(other) == base64.b64decode(text)  # what a lenient verifier checked
    document["signature"] = other
    return dump(document)


@pytest.mark.parametrize(
    ("forge", "reason"),
    [
        # the case: a reader that takes the first value sees another tenant and operator
        (
            lambda d: with_first_keys(d, '  "tenant": "acme-victim",\n  "operator": "nobody",\n'),
            'duplicate key "operator"',
        ),
        (lambda d: with_first_keys(d, '  "keys_destroyed": {},\n'), 'duplicate key "keys_destroyed"'),
        (lambda d: d.replace(b'"root": 1', b'"root": 1, "root": 0'), 'duplicate key "root"'),
        (lambda d: d.replace(b'"id"', b'"\\u0069d"'), "duplicate key|canonical"),
        (lambda d: d + b'{"certificate": {}}\n', "trailing data"),
        (lambda d: d + b"\n", "canonical"),
        (lambda d: d.rstrip(b"\n"), "canonical"),
        (lambda d: d.replace(b"\n", b"\r\n"), "canonical"),
        (lambda d: b"\xef\xbb\xbf" + d, "not ASCII"),
        (lambda d: json.dumps(json.loads(d), sort_keys=True).encode() + b"\n", "canonical"),
        (lambda d: json.dumps(dict(reversed(json.loads(d).items())), indent=1).encode() + b"\n", "canonical"),
        (lambda d: d.replace(b'"acme"', b'"\\u0061cme"'), "canonical"),
        (lambda d: d.replace(b'"generation": 1', b'"generation": 1e0'), "canonical"),
        (lambda d: d.replace(b'"generation": 1', b'"generation": NaN'), "NaN is not a JSON number"),
        (lambda d: d.replace(b'"alice"', '"alíce"'.encode()), "not ASCII"),
        (lambda d: d.replace(b'{\n "certificate"', b'{\n "extra": 1,\n "certificate"'), "exactly the keys"),
        (lambda d: b"[]\n", "exactly the keys"),
        # the same 64 signature bytes in another base64 string: the last character's unused bits set
        (lambda d: other_base64_of_the_signature(d), "canonical base64"),
        (lambda d: b"[" * 100_000 + b"]" * 100_000 + b"\n", "nested too deeply"),
        (lambda d: b"", "not JSON"),
        (lambda d: d[: len(d) // 2], "not JSON"),
    ],
)
def test_any_other_byte_form_is_refused_with_its_reason(forge: Any, reason: str) -> None:
    forged = forge(signed_file())
    assert forged != signed_file()
    with pytest.raises(CertificateMalformed, match=reason):
        load(forged)


def test_a_changed_value_in_the_canonical_form_still_fails_the_signature() -> None:
    changed = signed_file().replace(b'"generation": 1', b'"generation": 1.0')
    with pytest.raises(CertificateInvalid):
        verify(load(changed), KEY.public_key())


def test_a_duplicate_key_that_is_not_a_plain_name_is_not_echoed() -> None:
    forged = with_first_keys(signed_file(), '  "<script>": 1,\n  "<script>": 2,\n')
    with pytest.raises(CertificateMalformed, match="duplicate key a key") as caught:
        load(forged)
    assert "<script>" not in str(caught.value)


def run_verify(tmp_path: Path, data: bytes) -> subprocess.CompletedProcess[str]:
    (tmp_path / "cert.json").write_bytes(data)
    (tmp_path / "provider.pub").write_bytes(public_pem(KEY.public_key()))
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "shredline.streams.cli",
            "certificate",
            "verify",
            str(tmp_path / "cert.json"),
            "--public-key",
            str(tmp_path / "provider.pub"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"SHREDLINE_DATA_DIR": str(tmp_path), "PATH": ""},
    )


def test_the_command_refuses_the_duplicate_key_forgery_in_one_line(tmp_path: Path) -> None:
    good = run_verify(tmp_path, signed_file())
    assert good.returncode == 0 and "certificate valid: tenant acme " in good.stdout, good.stderr
    forged = run_verify(
        tmp_path, with_first_keys(signed_file(), '  "tenant": "acme-victim",\n  "operator": "nobody",\n')
    )
    assert forged.returncode == 1 and forged.stdout == ""
    assert forged.stderr.splitlines() == [
        'shredline: error: certificate: duplicate key "operator": '
        "a reader could see a value the signature does not cover"
    ]


@pytest.mark.parametrize(
    ("forge", "line"),
    [
        (other_base64_of_the_signature, "the signature is not the canonical base64 of 64 bytes"),
        (lambda d: b"[" * 100_000 + b"]" * 100_000 + b"\n", "nested too deeply to be a certificate"),
    ],
)
def test_the_command_refuses_other_byte_forms_in_one_line(tmp_path: Path, forge: Any, line: str) -> None:
    """The command said "certificate valid" for the first, and failed with an internal error for the second."""
    refused = run_verify(tmp_path, forge(signed_file()))
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr.splitlines() == [f"shredline: error: certificate: {line}"]
