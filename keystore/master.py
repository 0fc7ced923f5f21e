"""The master key (KEK): versioned, only ever wraps tenant root keys.

Keyring text format, in a file or in `SHREDLINE_MASTER_KEY`: one `v<N>:<base64 of 32 bytes>`
per line (or comma-separated); the highest version is current. Older versions stay only
until `rotate` (`shredline keys rotate-master`, and every tenant termination) has re-wrapped
every tenant root under the new one; then they are destroyed: the key file is replaced and the
replaced file's bytes overwritten. Why termination rotates: docs/key-residue.md.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shredline.keystore.errors import MasterKeyError
from shredline.keystore.locking import LockTimeout
from shredline.keystore.store import MASTER_ROTATION, KeyStore

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


def write_private(path: Path, data: bytes) -> None:
    """Replace `path` atomically with `data`, mode 0600, durably (file and directory fsynced); then
    overwrite the replaced file's bytes with zeros before letting it go. That overwrite is best
    effort: a copy-on-write or journaling filesystem, or an SSD, may keep the old blocks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    try:
        old: int | None = os.open(path, os.O_WRONLY)
    except (FileNotFoundError, PermissionError):  # nothing to replace, or a read-only file: no overwrite
        old = None
    try:
        os.replace(tmp, path)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        if old is not None:
            os.pwrite(old, bytes(os.fstat(old).st_size), 0)
            os.fsync(old)
    finally:
        if old is not None:
            os.close(old)


def _read_keyring(path: Path) -> str:
    """The key file's text; read again if it was caught while a replaced copy was being zeroed."""
    for _ in range(5):
        text = path.read_text(encoding="utf-8")
        if "\x00" not in text:
            break
    return text


def load_keyring(env_value: str | None, path: Path, create: bool) -> MasterKeyring:
    """From the environment if given, else from `path` (created with mode 0600 when `create`)."""
    if env_value:
        return MasterKeyring(parse_keyring(env_value, "SHREDLINE_MASTER_KEY"))
    if not path.exists():
        if not create:
            raise MasterKeyError(f"master_key: no key file at {path} and SHREDLINE_MASTER_KEY is not set")
        write_private(path, format_keyring({1: secrets.token_bytes(KEY_BYTES)}).encode())
    if path.stat().st_mode & 0o077:
        raise MasterKeyError(f"master_key: {path} is readable by others; chmod 600 it")
    return MasterKeyring(parse_keyring(_read_keyring(path), str(path)))


def add_version(path: Path) -> int:
    """Append a fresh version to the key file; returns it. Old versions stay until retired."""
    keys = parse_keyring(_read_keyring(path), str(path))
    version = max(keys) + 1
    keys[version] = secrets.token_bytes(KEY_BYTES)
    write_private(path, format_keyring(keys).encode())
    return version


def retire_versions_below(path: Path, keep: int) -> list[int]:
    """Drop versions older than `keep` from the key file (once nothing is wrapped under them)."""
    keys = parse_keyring(_read_keyring(path), str(path))
    retired = sorted(v for v in keys if v < keep)
    write_private(path, format_keyring({v: k for v, k in keys.items() if v >= keep}).encode())
    return retired


@dataclass(frozen=True)
class Rotation:
    version: int  # the new current master version
    retired: list[int]  # the versions destroyed
    roots: int  # tenant roots re-wrapped


ROTATION_LOCK_WAIT_S = 120.0  # far longer than a rotation takes (25 ms for 1,000 tenants)
ROTATION_LOCK_TELL_S = 5.0


@contextlib.contextmanager
def _rotation_lock(store: KeyStore) -> Iterator[None]:
    """The key store's rotation lock: every host that shares the store (and so the keyring) waits on it."""
    held = store.lock(MASTER_ROTATION, ROTATION_LOCK_WAIT_S, ROTATION_LOCK_TELL_S)
    try:
        held.__enter__()
    except LockTimeout as exc:
        raise MasterKeyError(
            f"master_key: {exc.holder} has held {exc.name} for over {exc.waited_s:.0f} s (a rotation stuck, "
            "or a command suspended?); nothing was rotated: retry when it ends"
        ) from None
    try:
        yield
    finally:
        held.__exit__(None, None, None)


class Rewraps(Protocol):
    """What `rotate` needs of `Keys`: its store, a check that a keyring opens every root, and
    the re-wrap of every root under a keyring's current version (returns how many)."""

    @property
    def store(self) -> KeyStore: ...
    def check_keyring(self, ring: MasterKeyring) -> None: ...
    def rotate_master(self, new_master: MasterKeyring) -> int: ...


def rotate(path: Path, keys: Rewraps) -> Rotation:
    """Add a master version to the key file, re-wrap every tenant root under it
    (`Keys.rotate_master`, which also makes the store refuse roots wrapped under older versions),
    then destroy every older version. One rotation at a time across processes and hosts (the
    store's rotation lock); a crash anywhere leaves a keyring that opens every root, and a re-run
    finishes. `Keys.check_keyring` raises first, with nothing written, when the keyring on disk does
    not open every root: a stale copy another host rotated past."""
    with _rotation_lock(keys.store):
        keys.check_keyring(load_keyring(None, path, create=False))
        version = add_version(path)
        roots = keys.rotate_master(load_keyring(None, path, create=False))
        retired = retire_versions_below(path, version)
    return Rotation(version, retired, roots)
