"""The worker's split loop: one confluent-kafka consumer in the worker's group, on its own thread.

Each turn waits for one record and takes what the consumer had fetched with it (up to `batch`
records, so a batch adds no waiting: `consume(n, timeout)` alone would wait for n), gives it to
`Splitter.handle_batch` (one key-store transaction, outputs acknowledged by the broker), then
commits the batch's offsets synchronously. So an offset is committed only after every output of
every record below it is durable (at-least-once by construction: a crash re-processes at most
the batch in hand, and every output is idempotent), and the loop needs no acknowledgement
bookkeeping. Rebalance callbacks run inside `poll`, between batches, so a batch never
straddles a change of assignment; a commit the group refuses because it rebalanced meanwhile is
logged, and those records are processed again by their new owner.

librdkafka keeps the group membership on its own thread, so a batch that waits on a locked key
store keeps the partitions, up to `max.poll.interval.ms` (5 min).

`progress_at` tells the worker's watchdog when the loop last moved on (`Progress`): a turn that
polled nothing or finished its batch does, and so does each retry of a batch waiting for the key
store (a restart would only wait again, and give up the group membership the wait keeps); a batch
still in hand for any other reason (outputs retried) does not, nor does a loop its consumer
reported a permanent error to (an authorization refusal, an inconsistent group protocol), which
would otherwise only log.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Consumer, KafkaError, KafkaException, Message, TopicPartition

from shredline.processors.roles import Role
from shredline.streams.catalog import MARKER_HEADER
from shredline.streams.kafka.admin import error_of, permanent
from shredline.streams.kafka.connection import Connection
from shredline.streams.processing.splitter import Record, Splitter

log = logging.getLogger("shredline.split")
BATCH = 500  # records per batch at most: the first to arrive and what had been fetched with it
POLL_S = 0.5  # how long a turn waits for the first record; also how soon `stop` is seen


class SplitLoop:
    """`topics` maps each ingest topic's full name to its role; `group` is the worker's group."""

    def __init__(
        self, conn: Connection, group: str, topics: Mapping[str, Role], splitter: Splitter, batch: int = BATCH
    ) -> None:
        self.topics = dict(topics)
        self.splitter = splitter
        self.batch = batch
        self._progress = Progress()
        self._consumer = Consumer(
            conn.confluent(
                **{
                    "group.id": group,
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                    "session.timeout.ms": 15_000,  # a killed worker's partitions move on after 15 s
                    # librdkafka prefetches up to 64 MiB by default, and counts it compressed (lz4:
                    # several times that in memory, held while the worker lags). A batch needs 500
                    # records; 1 MiB is thousands. Below that the next fetch waits fetch.queue.backoff.ms
                    # (1 s by default: ~10k records/s at most), so it waits 50 ms instead.
                    "queued.max.messages.kbytes": 1024,
                    "fetch.queue.backoff.ms": 50,
                    "log_level": 3,
                }
            )
        )

    def run(self, stop: threading.Event) -> None:
        """Split until `stop` is set (seen within POLL_S plus the batch in hand), then leave the
        group. Raises `KafkaException` on a fatal consumer error, and whatever the splitter or the
        outputs raise: the worker exits and its supervisor restarts it."""
        self._consumer.subscribe(list(self.topics))
        try:
            while not stop.is_set():
                first = self._consumer.poll(POLL_S)  # waits for one record, not for a whole batch
                batch = [] if first is None else [first, *self._consumer.consume(self.batch - 1, 0)]
                if batch:
                    self.handle(batch)
                self._progress.turn(batch)
        finally:
            self._consumer.close()

    @property
    def progress_at(self) -> float:
        """`time.monotonic()` seconds when the loop last moved on (see `Progress`)."""
        return self._progress.at

    def handle(self, messages: list[Message]) -> None:
        """Split one batch, then commit where it ends."""
        records, ends = batch_of(messages, self.topics)
        if records:
            self.splitter.handle_batch(records, waiting=self._progress.waiting)
        if ends:
            self._commit(ends)

    def _commit(self, ends: dict[tuple[str, int], int]) -> None:
        try:
            self._consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in ends.items()], asynchronous=False)
        except KafkaException as exc:
            if error_of(exc).fatal():
                raise
            # The group rebalanced meanwhile: the new owner processes these records again.
            log.warning("split: commit refused (%s); those records will be processed again", error_of(exc).name())


Headers = Mapping[str, str | bytes | None] | Sequence[tuple[str, str | bytes | None]]  # as librdkafka types them


class KafkaMessage(Protocol):
    """What `batch_of` reads of a confluent-kafka `Message` (a stand-in in tests)."""

    def error(self) -> KafkaError | None: ...
    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def headers(self) -> Headers | None: ...
    def timestamp(self) -> tuple[int, int]: ...
    def value(self) -> bytes | None: ...


def batch_of(
    messages: Iterable[KafkaMessage], roles: Mapping[str, Role]
) -> tuple[list[Record], dict[tuple[str, int], int]]:
    """The splitter's records of a consumed batch, in order, and the offset to commit per
    (topic, partition): one past the last record seen, markers included. Partition-EOF and other
    non-fatal consumer errors are skipped (librdkafka retries them itself); a fatal one raises
    `KafkaException`. Broker timestamps become UTC datetimes (None when the record has none)."""
    records: list[Record] = []
    ends: dict[tuple[str, int], int] = {}
    for message in messages:
        error = message.error()
        if error is not None:
            consumer_error(error, "split", message.topic())
            continue
        topic, partition, offset = str(message.topic()), int(message.partition() or 0), int(message.offset() or 0)
        ends[(topic, partition)] = offset + 1
        headers = message.headers() or []
        if MARKER_HEADER in (headers.keys() if isinstance(headers, Mapping) else (name for name, _ in headers)):
            continue  # the trimmer's segment-roll marker: nothing to split
        when = broker_time(*message.timestamp())
        records.append((roles[topic], partition, offset, message.value(), when))
    return records, ends


def consumer_error(error: KafkaError, loop: str, topic: str | None = None) -> None:
    """What a consumer loop does with an error a poll returned in place of a record (of `topic`,
    if it names one): raises `KafkaException` for a fatal one; logs a permanent one at ERROR (the
    loop's `Progress` then holds, and the watchdog restarts the worker), any other but partition
    EOF as a warning (librdkafka retries it)."""
    if error.fatal():
        raise KafkaException(error)
    if permanent(error):
        where = topic or "its group"
        log.error("%s: consumer refused on %s (%s): only an operator can fix it", loop, where, error.name())
    elif error.code() != KafkaError._PARTITION_EOF:
        log.warning("%s: consumer reports %s (retrying)", loop, error.name())


class Progress:
    """When a consumer loop last moved on: `at`, in `time.monotonic()` seconds (`clock`), read by
    the worker's watchdog from another thread. The loop calls `turn` after each turn it completed,
    with what its poll returned (nothing for an idle poll): that turn moves it on unless a
    permanent consumer error stands. One stands from its report until a record arrives from its
    topic (from any topic, for an error of the group), since librdkafka reports most of them
    once, after which polls return nothing."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.at = clock()
        self._standing: set[str | None] = set()  # the topics of permanent errors (None: the group's)

    def turn(self, messages: Iterable[KafkaMessage]) -> None:
        """Note a completed turn and what its poll returned (records and errors, in order)."""
        for message in messages:
            error = message.error()
            if error is None:
                self._standing.difference_update((message.topic(), None))
            elif permanent(error):
                self._standing.add(message.topic())
        if not self._standing:
            self.at = self._clock()

    def waiting(self) -> None:
        """Note that the batch in hand waits for the key store: the loop is alive, and a restart
        would not make the store available. It moves the loop on unless a permanent error stands."""
        if not self._standing:
            self.at = self._clock()


def broker_time(kind: int, millis: int) -> dt.datetime | None:
    """A record's timestamp as a UTC datetime; None when it has none or cannot be one (a producer
    may set any CreateTime: one past year 9999 must not stop the split on every worker)."""
    if kind == TIMESTAMP_NOT_AVAILABLE:
        return None
    try:
        return dt.datetime.fromtimestamp(millis / 1000, dt.UTC)
    except (ValueError, OverflowError, OSError):
        return None
