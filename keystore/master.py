"""The master key (KEK): versioned, only ever wraps tenant root keys.

Keyring text format, in a file or in `SHREDLINE_MASTER_KEY`: one `v<N>:<base64 of 32 bytes>`
per line (or comma-separated); the highest version is current. Older versions stay only
until `shredline keys rotate-master` has re-wrapped every tenant root under the new one.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shredline.keystore.errors import MasterKeyError

KEY_BYTES = 32
_ENTRY = re.compile(r"v(\d{1,6}):([A-Za-z0-9+/=_-]+)")


class MasterKeyring:
    """The master key versions; holds AESGCM objects only, so no key bytes show anywhere."""

    def __init__(self, keys: dict[int, bytes]) -> None:
        if not keys:
            raise MasterKeyError("master_key: no key versions")
        for version, key in keys.items():
            if len(key) != KEY_BYTES:
                raise MasterKeyError(f"master_key: version {version} is not {KEY_BYTES} bytes")
        self._aeads = {v: AESGCM(k) for v, k in keys.items()}
        self.current = max(keys)

    @property
    def versions(self) -> list[int]:
        return sorted(self._aeads)

    def aead(self, version: int) -> AESGCM:
        try:
            return self._aeads[version]
        except KeyError:
            raise MasterKeyError(f"master_key: version {version} is not in the keyring") from None

    def __repr__(self) -> str:
        return f"MasterKeyring(versions={self.versions}, current={self.current})"


def parse_keyring(text: str, source: str) -> dict[int, bytes]:
    keys: dict[int, bytes] = {}
    for entry in re.split(r"[\s,]+", text.strip()):
        if not entry:
            continue
        match = _ENTRY.fullmatch(entry)
        if match is None:
            raise MasterKeyError(f"master_key: {source} is not `v<N>:<base64>` entries")
        try:
            keys[int(match.group(1))] = base64.b64decode(match.group(2), validate=True)
        except (binascii.Error, ValueError):
            raise MasterKeyError(f"master_key: version {match.group(1)} in {source} is not valid base64") from None
    return keys


def format_keyring(keys: dict[int, bytes]) -> str:
    return "".join(f"v{v}:{base64.b64encode(k).decode()}\n" for v, k in sorted(keys.items()))


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_keyring(env_value: str | None, path: Path, create: bool) -> MasterKeyring:
    """From the environment if given, else from `path` (created with mode 0600 when `create`)."""
    if env_value:
        return MasterKeyring(parse_keyring(env_value, "SHREDLINE_MASTER_KEY"))
    if not path.exists():
        if not create:
            raise MasterKeyError(f"master_key: no key file at {path} and SHREDLINE_MASTER_KEY is not set")
        _write_private(path, format_keyring({1: secrets.token_bytes(KEY_BYTES)}))
    if path.stat().st_mode & 0o077:
        raise MasterKeyError(f"master_key: {path} is readable by others; chmod 600 it")
    return MasterKeyring(parse_keyring(path.read_text(encoding="utf-8"), str(path)))


def add_version(path: Path) -> int:
    """Append a fresh version to the key file; returns it. Old versions stay until retired."""
    keys = parse_keyring(path.read_text(encoding="utf-8"), str(path))
    version = max(keys) + 1
    keys[version] = secrets.token_bytes(KEY_BYTES)
    _write_private(path, format_keyring(keys))
    return version


def retire_versions_below(path: Path, keep: int) -> list[int]:
    """Drop versions older than `keep` from the key file (once nothing is wrapped under them)."""
    keys = parse_keyring(path.read_text(encoding="utf-8"), str(path))
    retired = sorted(v for v in keys if v < keep)
    _write_private(path, format_keyring({v: k for v, k in keys.items() if v >= keep}))
    return retired
