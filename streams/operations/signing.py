"""The provider's Ed25519 signing key: audit records and deletion certificates.

Derived from the root of the reserved pseudo-tenant `~service-provider-signing`, so it is
created on first use, wrapped by the master key and rotated with it like every root, and never
written to disk in the clear. Its public half is exported beside the data
(`provider-signing.pub`) for anyone who must verify without access to the key store.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from shredline.keystore.keys import Keys
from shredline.schemas.errors import ShredlineError

PUBLIC_KEY_FILE = "provider-signing.pub"


def provider_key(keys: Keys) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(keys.service_secret("provider-signing"))


def public_pem(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def fingerprint(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:32]


def export_public_key(data_dir: Path, key: Ed25519PrivateKey) -> Path:
    """Write the public key once (and again only if it changed); returns its path."""
    path = data_dir / PUBLIC_KEY_FILE
    pem = public_pem(key.public_key())
    if not path.exists() or path.read_bytes() != pem:
        data_dir.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        partial.write_bytes(pem)
        partial.replace(path)
    return path


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ShredlineError(f"public key {path}: cannot be read as a PEM public key ({type(exc).__name__})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ShredlineError(f"public key {path}: not an Ed25519 key")
    return key
