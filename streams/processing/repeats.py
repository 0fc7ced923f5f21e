"""A logging filter that lets one record per message template through per interval.

While the broker is down, aiokafka logs each failed reconnect and metadata refresh at ERROR, from
every consumer and producer of the worker: ~12,000 lines per second, gigabytes for an outage of an
hour. The lines name no person, but a log nobody can read is no log, and a full disk stops the
worker. `RepeatFilter` keeps the first record of each (logger, template) per interval and counts
the rest; the next record that passes says how many were held back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

INTERVAL_S = 10.0

#: Loggers that repeat themselves in a reconnect loop (aiokafka logs from these names itself).
NOISY_LOGGERS = (
    "aiokafka",
    "aiokafka.conn",
    "aiokafka.cluster",
    "aiokafka.consumer.fetcher",
    "aiokafka.producer",
    "shredline.librdkafka",  # every confluent-kafka client (`Connection.confluent`)
    "shredline.split",  # its consumer's transient errors (the control loop's lines are events: never held back)
    "shredline.outputs",
)


class RepeatFilter(logging.Filter):
    """Passes the first record of each kind per `interval_s` seconds; counts the others and
    appends "(N similar held back)" to the next one that passes. A kind is (logger name, message
    template), and for a template that starts with its first argument, that argument too:
    confluent-kafka logs every librdkafka line as `"%s [%s] %s" % (facility, client, text)`, and
    a flood of one facility (CONNECT, FAIL) must not hold back another (an authorization ERROR).
    The clock is injectable for tests (seconds, monotonic)."""

    def __init__(self, interval_s: float = INTERVAL_S, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._interval_s, self._clock = interval_s, clock
        self._passed_at: dict[tuple[str, str, str], float] = {}
        self._held: dict[tuple[str, str, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg), _leading(record))
        now = self._clock()
        last = self._passed_at.get(key)
        if last is not None and now - last < self._interval_s:
            self._held[key] = self._held.get(key, 0) + 1
            return False
        self._passed_at[key] = now
        held = self._held.pop(key, 0)
        if held:
            record.msg = f"{record.getMessage()} ({held} similar held back in the last {self._interval_s:.0f}s)"
            record.args = ()
        return True


def _leading(record: logging.LogRecord) -> str:
    """The record's first argument when its template starts with it (`"%s ..."`), else ""."""
    args = record.args
    if isinstance(args, tuple) and args and str(record.msg).startswith("%s"):
        return str(args[0])
    return ""


def quiet_repeats(names: tuple[str, ...] = NOISY_LOGGERS, interval_s: float = INTERVAL_S) -> None:
    """Install one `RepeatFilter` on each named logger (idempotent: an existing one is kept)."""
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RepeatFilter) for f in logger.filters):
            logger.addFilter(RepeatFilter(interval_s))
