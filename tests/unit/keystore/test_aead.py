"""Envelope properties: round trip, any flipped bit fails, nothing moves between bindings."""

from __future__ import annotations

import copy
import os
import pickle

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from shredline.keystore.aead import DataKey, TenantKeys, bind, open_with, record_aad, seal_with
from shredline.keystore.errors import InvalidCiphertext

KEY = AESGCM(bytes(range(32)))
OTHER = AESGCM(bytes(range(1, 33)))
names = st.text(min_size=1, max_size=12)


@settings(max_examples=300)
@given(st.binary(max_size=2048), names, names, names, names)
def test_round_trip(plaintext: bytes, tenant: str, key_id: str, topic: str, record_id: str) -> None:
    aad = record_aad(tenant, key_id, topic, record_id)
    nonce, ct = seal_with(KEY, plaintext, aad)
    assert len(nonce) == 12 and len(ct) == len(plaintext) + 16
    assert open_with(KEY, nonce, ct, aad) == plaintext


@settings(max_examples=300)
@given(st.binary(min_size=1, max_size=512), st.data())
def test_any_flipped_bit_fails_with_the_one_opaque_error(plaintext: bytes, data: st.DataObject) -> None:
    aad = record_aad("acme", "k1", "buffer.messages", "r1")
    nonce, ct = seal_with(KEY, plaintext, aad)
    blob = bytearray(nonce + ct)
    bit = data.draw(st.integers(0, len(blob) * 8 - 1))
    blob[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(InvalidCiphertext) as err:
        open_with(KEY, bytes(blob[:12]), bytes(blob[12:]), aad)
    assert str(err.value) == "ciphertext cannot be opened"


@settings(max_examples=300)
@given(st.binary(max_size=256), st.sampled_from(["tenant", "key_id", "topic", "record_id", "key"]), names)
def test_ciphertext_cannot_move_to_another_tenant_record_topic_or_key(plaintext: bytes, moved: str, other: str) -> None:
    binding = {"tenant": "acme", "key_id": "k1", "topic": "buffer.messages", "record_id": "r1"}
    nonce, ct = seal_with(KEY, plaintext, record_aad(**binding))
    if moved != "key" and other == binding[moved]:
        other += "x"
    target = {**binding, moved: other} if moved != "key" else binding
    with pytest.raises(InvalidCiphertext):
        open_with(OTHER if moved == "key" else KEY, nonce, ct, record_aad(**target))


def test_bindings_are_unambiguous() -> None:
    assert bind("ab", "c") != bind("a", "bc")
    assert bind("a", 1) != bind("a", "1", "")


def test_truncated_or_short_nonce_fails_cleanly() -> None:
    aad = record_aad("acme", "k1", "t", "r")
    nonce, ct = seal_with(KEY, b"hello", aad)
    for bad_nonce, bad_ct in ((nonce[:8], ct), (nonce, ct[:10]), (nonce, b"")):
        with pytest.raises(InvalidCiphertext):
            open_with(KEY, bad_nonce, bad_ct, aad)


def test_golden_vector_keeps_the_format_stable() -> None:
    """A fixed key, nonce and binding: if this changes, old buffers would no longer open."""
    aad = record_aad("acme", "00" * 16, "buffer.messages", "ab" * 16)
    ct = KEY.encrypt(bytes(12), b"Oi, tudo bem?", aad)
    assert ct.hex() == GOLDEN
    assert open_with(KEY, bytes(12), bytes.fromhex(GOLDEN), aad) == b"Oi, tudo bem?"


def test_tenant_keys_pseudonyms_are_stable_per_root_and_unlinkable_across_roots() -> None:
    root = os.urandom(32)
    a, b = TenantKeys("acme", 1, root), TenantKeys("acme", 1, root)
    assert a.pseudonym("conversation", "conv-1") == b.pseudonym("conversation", "conv-1")
    assert a.pseudonym("conversation", "conv-1") != a.pseudonym("contact", "conv-1")
    assert TenantKeys("acme", 1, os.urandom(32)).pseudonym("conversation", "conv-1") != a.pseudonym(
        "conversation", "conv-1"
    )
    assert "acme" in repr(a) and root.hex() not in repr(a)


def test_pseudonym_golden_vectors_keep_ids_stable() -> None:
    """HMAC-SHA256 (RFC 2104) under the root's HKDF "shredline pseudonym v1" key, first 16 bytes: if
    these change, metrics and buffers written before would no longer join with new ones."""
    keys = TenantKeys("acme", 1, bytes(range(32)))
    assert keys.pseudonym("event", "e1") == "9ac8556f6b1e4047b08e0e9cf53fed0f"
    assert keys.pseudonym("subject", "+5511987650001") == "5ba1bffbcc062c78e03fb1f4305a1f50"
    assert keys.pseudonym("event", "e1") == keys.pseudonym("event", "e1")  # the keyed MAC is copied, not consumed


GOLDEN = "41d599fec159e7d228cacc5827580efb342397e28de4d18bed6a072758"


def test_a_data_key_seals_and_opens_under_its_binding_only() -> None:
    key = DataKey("acme", "k1", "conversation", "subject-1", bytes(range(32)))
    aad = record_aad("acme", "k1", "buffer.messages", "subject-1")
    nonce, ct = key.seal(b"Oi, tudo bem?", aad)
    assert key.open(nonce, ct, aad) == b"Oi, tudo bem?"
    assert open_with(KEY, nonce, ct, aad) == b"Oi, tudo bem?"  # plain AES-256-GCM under those bytes
    golden_aad = record_aad("acme", "00" * 16, "buffer.messages", "ab" * 16)  # the golden vector's
    assert key.open(bytes(12), bytes.fromhex(GOLDEN), golden_aad) == b"Oi, tudo bem?"
    with pytest.raises(InvalidCiphertext):
        key.open(nonce, ct, record_aad("acme", "k1", "buffer.messages", "subject-2"))
    with pytest.raises(InvalidCiphertext):
        DataKey("acme", "k1", "conversation", "subject-1", bytes(range(1, 33))).open(nonce, ct, aad)


def test_a_data_key_never_shows_or_serialises_its_bytes() -> None:
    raw = os.urandom(32)
    key = DataKey("acme", "k1", "conversation", "subject-1", raw)
    assert raw.hex() not in repr(key) and str(raw) not in repr(key) and "subject-1" not in repr(key)
    assert not hasattr(key, "__dict__")  # only its slots: tenant, key_id, scope, subject and the key
    with pytest.raises(TypeError, match="not serialised"):
        pickle.dumps(key)
    with pytest.raises(TypeError, match="not serialised"):
        copy.copy(key)


@pytest.mark.parametrize("size", [0, 16, 31, 33])
def test_a_data_key_is_32_bytes(size: int) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        DataKey("acme", "k1", "conversation", "subject-1", bytes(size))
