"""`shredline worker` supervises its Faust worker: a child process restarted when it stalls or dies.

Faust's consumer does not always come back after the broker restarts (seen here: timers and
fetches stop for good, the process stays up). The child's watchdog exits with STALLED when its
heartbeat timer has not run for STALL_S, or one of its loops has not moved on for as long (a batch
whose outputs a topic refuses to the worker, a consumer refused its group: `stalled`); this loop
restarts it after a short back-off. Restarts are safe: processing is at-least-once and every
output is idempotent (de-dup tokens, event refs).
SIGTERM/SIGINT are passed on to the child, whose clean exit ends the loop.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from types import FrameType

log = logging.getLogger("shredline.supervise")
STALLED = 75  # EX_TEMPFAIL: the child gave up on a stuck consumer; start it again
BACKOFF_S = (1, 2, 5, 10, 30)
PR_SET_PDEATHSIG = 1


def stalled(now: float, last: Mapping[str, float], stall_s: float, stopping: bool) -> tuple[str, float] | None:
    """The watchdog's decision: the longest silent of `last` (what moves -> when it last did, in
    the seconds of the same monotonic clock as `now`) with how long it has been silent, if more
    than `stall_s`; None while all move, and once a clean stop began (`stopping`: it has its own
    deadlines)."""
    if stopping or not last:
        return None
    name = min(last, key=lambda n: last[n])
    silent = now - last[name]
    return (name, silent) if silent > stall_s else None


def _die_with_parent() -> None:
    """Linux: the child gets SIGKILL when the supervisor dies, so no orphan keeps consuming."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def supervise(command: Sequence[str], say: Callable[[str], None]) -> int:
    stopping = False
    child: subprocess.Popen[bytes] | None = None

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        failures = 0
        while True:
            started = time.monotonic()
            child = subprocess.Popen(list(command), preexec_fn=_die_with_parent)
            code = child.wait()
            if stopping:
                return code
            if code == 0:
                return 0
            if time.monotonic() - started > 300:
                failures = 0  # it ran fine for a while: start the back-off over
            delay = BACKOFF_S[min(failures, len(BACKOFF_S) - 1)]
            failures += 1
            reason = "stalled" if code == STALLED else f"exited with {code}"
            say(f"worker {reason}; restarting in {delay} s (restart {failures})")
            time.sleep(delay)
            if stopping:
                return 0
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
