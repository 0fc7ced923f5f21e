"""AES-256-GCM envelopes and the derivations below a tenant root key.

Associated data binds every ciphertext to where it belongs (tenant, key id, topic, record id),
length-prefixed so no two different bindings encode alike; a record moved to another tenant,
record, topic or key fails to open with the same opaque `InvalidCiphertext` as a flipped bit.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from shredline.keystore.errors import InvalidCiphertext

NONCE_BYTES = 12
KEY_BYTES = 32
_AAD_VERSION = b"shredline/aead/v1"


def bind(*parts: str | bytes | int) -> bytes:
    """Unambiguous associated data: a version tag, then each part length-prefixed."""
    out = [_AAD_VERSION]
    for part in parts:
        raw = part if type(part) is bytes else str(part).encode()
        out.append(len(raw).to_bytes(4, "big"))
        out.append(raw)
    return b"".join(out)


def seal_with(aead: AESGCM, plaintext: bytes, aad: bytes) -> tuple[bytes, bytes]:
    nonce = os.urandom(NONCE_BYTES)
    return nonce, aead.encrypt(nonce, plaintext, aad)


def open_with(aead: AESGCM, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    if len(nonce) != NONCE_BYTES:
        raise InvalidCiphertext()
    try:
        return aead.decrypt(nonce, ciphertext, aad)
    except (InvalidTag, ValueError, OverflowError):
        raise InvalidCiphertext() from None


def _hkdf(root: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(root)


class TenantKeys:
    """What a tenant root key yields: the data-key wrapping key and the pseudonym key.

    The root itself is not kept; neither derived key shows in `repr`.
    """

    __slots__ = ("_derive_key", "_pseudonym_mac", "_wrap", "generation", "tenant")

    def __init__(self, tenant: str, generation: int, root: bytes) -> None:
        self.tenant = tenant
        self.generation = generation
        self._wrap = AESGCM(_hkdf(root, b"shredline wrap v1"))
        # keyed once; each pseudonym copies it (half the cost of a one-shot HMAC, which keys anew)
        self._pseudonym_mac = hmac.new(_hkdf(root, b"shredline pseudonym v1"), digestmod=hashlib.sha256)
        self._derive_key = _hkdf(root, b"shredline derive v1")

    def derive(self, purpose: str) -> bytes:
        """A 32-byte secret for `purpose`, gone with the root."""
        return hmac.digest(self._derive_key, bind("derive", purpose), "sha256")

    def pseudonym(self, scope: str, raw_id: str) -> str:
        """Stable within the tenant generation, unlinkable once the root is destroyed."""
        mac = self._pseudonym_mac.copy()
        mac.update(bind(scope, raw_id))
        return mac.digest()[:16].hex()

    def wrap(self, key: bytes, *, scope: str, subject: str, key_id: str) -> tuple[bytes, bytes]:
        return seal_with(self._wrap, key, bind("data-key", self.tenant, self.generation, scope, subject, key_id))

    def unwrap(self, nonce: bytes, wrapped: bytes, *, scope: str, subject: str, key_id: str) -> bytes:
        return open_with(
            self._wrap, nonce, wrapped, bind("data-key", self.tenant, self.generation, scope, subject, key_id)
        )

    def __repr__(self) -> str:
        return f"TenantKeys(tenant={self.tenant!r}, generation={self.generation})"


class DataKey:
    """An unwrapped 32-byte AES-256-GCM data key and what it belongs to.

    Its bytes never leave it: no accessor, not in `repr`, not picklable; `seal` and `open` use
    them. Held as bytes, not as an `AESGCM` object, which carries OpenSSL's encryption and
    decryption contexts (~1.4 KiB against ~0.1 KiB: the worker caches 10,000 keys); an `AESGCM` is
    made per call instead (~0.9 µs). In memory either way: neither is zeroed when dropped."""

    __slots__ = ("_key", "key_id", "scope", "subject", "tenant")

    def __init__(self, tenant: str, key_id: str, scope: str, subject: str, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"a data key is {KEY_BYTES} bytes")
        self.tenant = tenant
        self.key_id = key_id
        self.scope = scope
        self.subject = subject
        self._key = key

    def seal(self, plaintext: bytes, aad: bytes) -> tuple[bytes, bytes]:
        """(nonce, ciphertext with its 16-byte tag) under a fresh random 96-bit nonce."""
        return seal_with(AESGCM(self._key), plaintext, aad)

    def open(self, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        """The plaintext; `InvalidCiphertext` for any nonce, ciphertext or `aad` it was not sealed with."""
        return open_with(AESGCM(self._key), nonce, ciphertext, aad)

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("a data key is not serialised")

    def __repr__(self) -> str:
        return f"DataKey(tenant={self.tenant!r}, key_id={self.key_id!r}, scope={self.scope!r})"


def record_aad(tenant: str, key_id: str, topic: str, record_id: str) -> bytes:
    return bind("record", tenant, key_id, topic, record_id)
