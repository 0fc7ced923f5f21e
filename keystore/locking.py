"""Exclusive file locks between processes that never wait for ever.

A holder that never lets go (a command suspended with Ctrl-Z, a process stopped in a debugger)
must not stop everyone else without a word: `exclusive` says after `tell_s` whom it waits for
(the pids holding the lock, from /proc/locks on Linux) and gives up after `wait_s`.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

log = logging.getLogger("shredline.locks")


class LockTimeout(Exception):
    """The lock was held by someone else for the whole wait; `holder` says who, if known."""

    def __init__(self, name: str, holder: str, waited_s: float) -> None:
        super().__init__(f"{holder} has held {name} for over {waited_s:.0f} s")
        self.name, self.holder, self.waited_s = name, holder, waited_s


@contextlib.contextmanager
def exclusive(path: Path, wait_s: float, tell_s: float = 5.0, *, mode: int = 0o600) -> Iterator[None]:
    """Hold an exclusive flock on `path` (created with `mode`) for the block; raises `LockTimeout`
    after `wait_s` of waiting."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, mode)
    try:
        _acquire(fd, path, wait_s, tell_s, time.monotonic, time.sleep)
        yield
    finally:
        os.close(fd)  # releases the lock


def _acquire(
    fd: int, path: Path, wait_s: float, tell_s: float, clock: Callable[[], float], sleep: Callable[[float], None]
) -> None:
    started = clock()
    told = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            waited = clock() - started
            if waited >= wait_s:
                raise LockTimeout(path.name, holders(path), wait_s) from None
            if not told and waited >= tell_s:
                log.warning("waiting for the lock %s, held by %s", path.name, holders(path))
                told = True
            sleep(0.05)


def holders(path: Path) -> str:
    """Who holds a flock on `path`, from /proc/locks (Linux; best effort)."""
    try:
        info = os.stat(path)
        table = Path("/proc/locks").read_text()
    except OSError:
        return "another process"
    where = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    pids = sorted(
        {
            int(f[4])
            for line in table.splitlines()
            if len(f := line.split()) >= 6 and f[1] == "FLOCK" and f[5] == where and int(f[4]) != os.getpid()
        }
    )
    return f"another process (pid {', '.join(map(str, pids))})" if pids else "another process"
