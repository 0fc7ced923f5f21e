"""Finding copies of destroyed keys in files, without keeping any byte of them.

A copy of a secret of 32 bytes or more, at any offset of a file, covers a whole 16-byte window
that starts at a multiple of 16 in the file; which of the secret's 16 windows that is depends on
the copy's offset. `Probes` keeps a keyed 64-bit digest (BLAKE2b, random salt) of each of those
16 windows of each secret, and `Probes.count_in` hashes every 16-aligned window of a file and
looks it up: one pass, any number of secrets, about 0.4 s per 10 MB. The digests reveal nothing
about the secrets (each window has 128 bits of entropy), so probes may be written to disk while a
destruction is verified; a false match needs a 64-bit collision.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from shredline.keystore.store import KeyStore

WINDOW = 16
DIGEST = 8
SALT = 16
MIN_SECRET = 2 * WINDOW  # a copy at any offset must cover one whole aligned window
_MAGIC = b"shredline-probes/1\n"
_CHUNK = 1 << 20  # read files this much at a time (a multiple of WINDOW)


class ProbesInvalid(ValueError):
    """A probes file that is not one this module wrote."""


@dataclass(frozen=True, repr=False)
class Probes:
    """Keyed digests of the windows a copy of each secret would show at a 16-aligned offset."""

    salt: bytes
    digests: frozenset[bytes]
    secrets: int  # how many secrets they stand for

    @classmethod
    def of(cls, secrets: Iterable[bytes], salt: bytes) -> Probes:
        """Probes for `secrets` (each at least MIN_SECRET bytes); `salt` is SALT random bytes."""
        if len(salt) != SALT:
            raise ValueError(f"salt must be {SALT} bytes")
        digests: set[bytes] = set()
        count = 0
        for secret in secrets:
            if len(secret) < MIN_SECRET:
                raise ValueError(f"a secret must be at least {MIN_SECRET} bytes to be found at any offset")
            count += 1
            digests.update(_digest(salt, secret[shift : shift + WINDOW]) for shift in range(WINDOW))
        return cls(salt, frozenset(digests), count)

    def dump(self) -> bytes:
        """A self-describing byte string for `load`: magic, salt, count, the sorted digests."""
        return b"".join((_MAGIC, self.salt, struct.pack(">I", self.secrets), *sorted(self.digests)))

    @classmethod
    def load(cls, raw: bytes) -> Probes:
        """Raises `ProbesInvalid` for anything `dump` did not write."""
        head = len(_MAGIC) + SALT + 4
        if not raw.startswith(_MAGIC) or len(raw) < head or (len(raw) - head) % DIGEST:
            raise ProbesInvalid("not a probes file")
        salt = raw[len(_MAGIC) : len(_MAGIC) + SALT]
        (count,) = struct.unpack(">I", raw[head - 4 : head])
        return cls(salt, frozenset(raw[i : i + DIGEST] for i in range(head, len(raw), DIGEST)), count)

    def count_in(self, path: Path) -> int:
        """How many 16-aligned windows of the file belong to one of the secrets (0 for a missing
        file). Raises OSError if the file exists but cannot be read."""
        if not self.digests:
            return 0
        found = 0
        try:
            with open(path, "rb") as handle:
                while chunk := handle.read(_CHUNK):
                    view = memoryview(chunk)
                    for start in range(0, len(chunk) - WINDOW + 1, WINDOW):
                        found += _digest(self.salt, view[start : start + WINDOW]) in self.digests
        except FileNotFoundError:  # gone meanwhile (a -journal, a truncated WAL): holds nothing
            return 0
        return found

    def __repr__(self) -> str:
        return f"Probes(secrets={self.secrets}, digests={len(self.digests)})"


def _digest(salt: bytes, window: bytes | memoryview) -> bytes:
    return hashlib.blake2b(window, digest_size=DIGEST, key=salt).digest()


@dataclass(frozen=True)
class Residue:
    """What a scan of the store's files found after a destruction."""

    found: dict[str, int]  # file name -> windows of destroyed keys in it (only files with any)
    blocker: str | None  # what kept the store from dropping its old pages, if anything

    @property
    def windows(self) -> int:
        return sum(self.found.values())


def scan_tree(roots: Iterable[Path], probes: Probes, skip: Iterable[Path]) -> tuple[dict[str, int], list[str]]:
    """Windows of the probed secrets in every regular file under `roots` (symbolic links are not
    followed; fifos and sockets are not opened), except the files and folders in `skip`. Returns
    ({path: windows} for files with any, [paths that could not be read]); a file that vanishes
    meanwhile holds nothing."""
    skipped = {p.resolve() for p in skip}
    found: dict[str, int] = {}
    unreadable: list[str] = []
    seen: set[Path] = set()
    for root in roots:
        for folder, dirs, files in os.walk(root):
            here = Path(folder)
            if here.resolve() in seen:
                dirs[:] = []
                continue
            seen.add(here.resolve())
            dirs[:] = sorted(d for d in dirs if (here / d).resolve() not in skipped)
            for name in sorted(files):
                path = here / name
                try:
                    if not stat.S_ISREG(os.lstat(path).st_mode) or path.resolve() in skipped:
                        continue
                    if windows := probes.count_in(path):
                        found[str(path)] = windows
                except FileNotFoundError:
                    continue
                except OSError:
                    unreadable.append(str(path))
    return found, unreadable


def settle(store: KeyStore, probes: Probes, wait_s: float, poll_s: float = 0.1) -> Residue:
    """Checkpoint the store and scan its files until none holds a window of the probed secrets,
    or `wait_s` seconds have passed (then the residue and what blocks it). Holds no lock while
    it waits, so readers and writers of the store go on meanwhile."""
    deadline = time.monotonic() + wait_s
    while True:
        blocker = store.checkpoint()
        found = {path.name: n for path in store.files() if (n := probes.count_in(path))}
        if not found or time.monotonic() >= deadline:
            return Residue(found, blocker)
        time.sleep(poll_s)
