"""Sealed ingest: each tenant's HPKE (RFC 9180) key pair, and sealing and opening with it.

Upstream seals every event to the tenant's public key before it leaves the process, so the
ingest topics hold ciphertext only; the worker opens with the private key. Suites (RFC 9180
§7, base mode, single-shot):

- `X25519` (default): DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM. 32-byte public
  key; 48 bytes of overhead per event (32 encapsulated key + 16 tag).
- `MLKEM768_X25519`: the post-quantum hybrid KEM ML-KEM-768 + X25519 (draft-ietf-hpke-pq),
  same KDF and AEAD. 1,216-byte public key (ML-KEM-768's 1,184 bytes, then X25519's 32);
  1,136 bytes of overhead per event. Ciphertext captured today stays safe against a future
  quantum computer as long as either component holds.

**The private key is derived, never stored.** It is HKDF output below the tenant root
(`TenantKeys.derive`, label `ingest-hpke-v1/<generation>/<kem>`): an X25519 scalar from 32
bytes, an ML-KEM-768 key from its 64-byte FIPS 203 seed. So destroying the root destroys the
private key by construction — no copy of it exists in the key store, its WAL or a backup to be
shredded separately — and a new generation (re-provisioning) yields a new pair. This is what
"wrapped under the tenant root" asks for, without the wrapped copy.

**`info` binds** a version label, the tenant, the key generation, the KEM and the topic
(length-prefixed, `aead.bind`): an envelope moved to another tenant, generation or topic does
not open. The event id is inside the sealed plaintext, so the AEAD authenticates it and a
replayed envelope is always the same event (ingest is idempotent on it); it is not in `info`
because that would need it in the clear, and event ids may embed personal identifiers.
Base mode does not authenticate the sender: anyone with the public key can seal; sealing
protects what rests in Kafka, and the worker still validates every opened event.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from enum import StrEnum

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from shredline.keystore.aead import TenantKeys, bind
from shredline.keystore.errors import InvalidCiphertext

X25519_BYTES = 32
MLKEM768_PUBLIC_BYTES = 1184
TEXT_PREFIX = "shredline-ingest-v1"
_TENANT = re.compile(r"[a-z0-9][a-z0-9-]{1,62}")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]{1,2000}")


class Kem(StrEnum):
    """The KEMs an ingest key pair exists for; values are the Avro enum symbols (`IngestKem`)."""

    X25519 = "X25519"
    MLKEM768_X25519 = "MLKEM768_X25519"


DEFAULT_KEM = Kem.X25519
_SUITE_KEM = {Kem.X25519: hpke.KEM.X25519, Kem.MLKEM768_X25519: hpke.KEM.MLKEM768_X25519}
SUITES = {kem: hpke.Suite(kem_id, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM) for kem, kem_id in _SUITE_KEM.items()}

HpkePublicKey = x25519.X25519PublicKey | hpke.MLKEM768X25519PublicKey
HpkePrivateKey = x25519.X25519PrivateKey | hpke.MLKEM768X25519PrivateKey


def info(tenant: str, generation: int, kem: Kem, topic: str) -> bytes:
    """The HPKE `info` of one envelope: where it belongs (tenant, generation, KEM, full topic name)."""
    return bind("ingest", tenant, generation, kem.value, topic)


def _public_object(kem: Kem, raw: bytes) -> HpkePublicKey:
    """The HPKE public key from its raw bytes; ValueError when they are not one."""
    if kem is Kem.X25519:
        if len(raw) != X25519_BYTES:
            raise ValueError("an X25519 public key is 32 bytes")
        return x25519.X25519PublicKey.from_public_bytes(raw)
    if len(raw) != MLKEM768_PUBLIC_BYTES + X25519_BYTES:
        raise ValueError("an ML-KEM-768 + X25519 public key is 1,216 bytes")
    return hpke.MLKEM768X25519PublicKey(
        mlkem.MLKEM768PublicKey.from_public_bytes(raw[:MLKEM768_PUBLIC_BYTES]),
        x25519.X25519PublicKey.from_public_bytes(raw[MLKEM768_PUBLIC_BYTES:]),
    )


@dataclass(frozen=True)
class IngestPublicKey:
    """A tenant's ingest public key for one KEM and key generation: what upstream seals to.

    `raw` is the public key's bytes (X25519: 32; hybrid: ML-KEM-768's 1,184 then X25519's 32).
    Its one-line text form, `text()` / `parse()`, is
    `shredline-ingest-v1:<tenant>:<generation>:<KEM>:<base64url raw, unpadded>`.
    Constructing one checks every part (ValueError naming it otherwise).
    """

    tenant: str
    generation: int
    kem: Kem
    raw: bytes = field(repr=False)
    _hpke: HpkePublicKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not _TENANT.fullmatch(self.tenant):
            raise ValueError("ingest key: tenant is not a tenant slug")
        if self.generation < 1:
            raise ValueError("ingest key: generation must be at least 1")
        object.__setattr__(self, "_hpke", _public_object(self.kem, self.raw))

    def seal(self, plaintext: bytes, topic: str) -> bytes:
        """HPKE single-shot seal (RFC 9180 base mode): `enc || ciphertext`, bound to `topic`
        (the full topic name, prefix included)."""
        return SUITES[self.kem].encrypt(plaintext, self._hpke, info=info(self.tenant, self.generation, self.kem, topic))

    def text(self) -> str:
        encoded = base64.urlsafe_b64encode(self.raw).decode().rstrip("=")
        return f"{TEXT_PREFIX}:{self.tenant}:{self.generation}:{self.kem.value}:{encoded}"

    @classmethod
    def parse(cls, text: str) -> IngestPublicKey:
        """The key of a `text()` line; ValueError naming the part that is wrong."""
        parts = text.strip().split(":")
        if len(parts) != 5 or parts[0] != TEXT_PREFIX:
            raise ValueError(f"ingest key: expected {TEXT_PREFIX}:TENANT:GENERATION:KEM:KEY")
        _prefix, tenant, generation, kem, encoded = parts
        if not generation.isdigit() or len(generation) > 9:
            raise ValueError("ingest key: generation is not a number")
        if kem not in Kem.__members__:
            raise ValueError(f"ingest key: KEM must be one of {', '.join(Kem)}")
        if not _BASE64URL.fullmatch(encoded):
            raise ValueError("ingest key: key is not base64url (A-Z a-z 0-9 - _, unpadded)")
        try:
            raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        except (binascii.Error, ValueError):
            raise ValueError("ingest key: key is not base64url (A-Z a-z 0-9 - _, unpadded)") from None
        return cls(tenant, int(generation), Kem(kem), raw)


class IngestPrivateKey:
    """A tenant's ingest private key for one KEM and generation, held as the library's key
    object: its bytes are never exposed and `repr` shows none of it. `public` is its pair."""

    __slots__ = ("_key", "public")

    def __init__(self, key: HpkePrivateKey, public: IngestPublicKey) -> None:
        self._key, self.public = key, public

    def open(self, ciphertext: bytes, topic: str) -> bytes:
        """The plaintext of an envelope sealed to this key's public half for `topic`;
        `InvalidCiphertext`, and nothing more specific, if it was sealed to another key,
        tenant, generation or topic, or changed in any way."""
        p = self.public
        try:
            return SUITES[p.kem].decrypt(ciphertext, self._key, info=info(p.tenant, p.generation, p.kem, topic))
        except (InvalidTag, ValueError, TypeError):
            raise InvalidCiphertext() from None

    def __repr__(self) -> str:
        p = self.public
        return f"IngestPrivateKey(tenant={p.tenant!r}, generation={p.generation}, kem={p.kem.value})"


def derive_private_key(root: TenantKeys, kem: Kem) -> IngestPrivateKey:
    """The ingest key pair of `root`'s tenant and generation for `kem`, derived from the root
    (HKDF, label `ingest-hpke-v1/<generation>/<kem>`): the same pair every time while the
    root lives, none once it is destroyed."""
    secret = root.derive(f"ingest-hpke-v1/{root.generation}/{kem.value}")
    key: HpkePrivateKey
    if kem is Kem.X25519:
        key = x25519.X25519PrivateKey.from_private_bytes(secret)
        raw = key.public_key().public_bytes_raw()
    else:
        # FIPS 203 ML-KEM-768 seed (d || z, 64 bytes), then a separate X25519 scalar.
        material = HKDFExpand(hashes.SHA256(), 96, b"shredline ingest mlkem768-x25519 v1").derive(secret)
        mlkem_key = mlkem.MLKEM768PrivateKey.from_seed_bytes(material[:64])
        x_key = x25519.X25519PrivateKey.from_private_bytes(material[64:])
        key = hpke.MLKEM768X25519PrivateKey(mlkem_key, x_key)
        raw = mlkem_key.public_key().public_bytes_raw() + x_key.public_key().public_bytes_raw()
    return IngestPrivateKey(key, IngestPublicKey(root.tenant, root.generation, kem, raw))
