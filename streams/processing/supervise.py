"""`shredline worker` supervises its Faust worker: a child process restarted when it stalls or dies.

Faust's consumer does not always come back after the broker restarts (seen here: timers and
fetches stop for good, the process stays up). The child's watchdog exits with STALLED when its
heartbeat timer has not run for STALL_S; this loop restarts it after a short back-off. Restarts are
safe: processing is at-least-once and every output is idempotent (de-dup tokens, event refs).
SIGTERM/SIGINT are passed on to the child, whose clean exit ends the loop.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from types import FrameType

log = logging.getLogger("shredline.supervise")
STALLED = 75  # EX_TEMPFAIL: the child gave up on a stuck consumer; start it again
BACKOFF_S = (1, 2, 5, 10, 30)
PR_SET_PDEATHSIG = 1


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
