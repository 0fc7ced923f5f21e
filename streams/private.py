"""Private files: the data dir (0700) and what holds secrets in it (0600): the master key, the key
store and its WAL, the private keys of the broker and of every role. Every command checks them
before it starts (`check_private`) and refuses, naming the first one, when group or others have
any access to it: on a shared host that access is a copy of the keys.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

from shredline.streams.errors import ConfigError
from shredline.streams.settings import Settings


def _secrets(settings: Settings) -> Iterator[tuple[str, Path]]:
    """(setting, path) of every file that must be owner-only; missing ones are skipped later."""
    yield "master_key_file", settings.master_key_path
    store = settings.key_store_path
    for suffix in ("", "-wal", "-shm"):
        yield "key_store", store.with_name(store.name + suffix)
    yield "kafka", settings.kafka_dir / "tls" / "broker.pem"  # the broker's private key and certificate
    for folder, setting in (
        (settings.kafka_dir / "credentials", "kafka"),
        (settings.tls_credentials, "tls_credentials"),
    ):
        if folder is not None and folder.is_dir():
            yield from ((setting, key) for key in sorted(folder.glob("*.key")))
    if settings.tls_key is not None:
        yield "tls_key", settings.tls_key


def make_private_dir(path: Path) -> None:
    """Create `path` and every missing parent owner-only (0700), so whichever command creates the
    data dir first (the jar cache, the launcher, any command) leaves it as `check_private` wants
    it. Directories that already exist are left as they are."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        folder.mkdir(mode=0o700, exist_ok=True)


def check_private(settings: Settings) -> None:
    """Create the data dir (0700) if it is missing; raise ConfigError (exit 2), in one line naming
    the path, its mode and the fix, if it or any secret file is open to group or others."""
    data_dir = settings.data_dir
    make_private_dir(data_dir)
    _owner_only("data_dir", data_dir, 0o700)
    for setting, path in _secrets(settings):
        _owner_only(setting, path, 0o600)


def _owner_only(setting: str, path: Path, fix: int) -> None:
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return
    if mode & 0o077:
        raise ConfigError(
            f"{setting}: {path} is open to group or others (mode {mode:04o}); refusing to start: chmod {fix:o} {path}"
        )
