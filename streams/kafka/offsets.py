"""Watermark offsets that ride out a leader election.

Right after a broker restart, or while a new topic's metadata propagates, a watermark query is
answered "not leader for partition", "leader not available" or "unknown topic or partition" for a
moment. Every reader that needs a partition's end goes through `watermarks`, which retries those
transient errors within a bounded time instead of failing the command.
"""

from __future__ import annotations

import time

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from shredline.streams.kafka.connection import Connection

#: Errors the broker gives while leadership or metadata settles (librdkafka's `retriable()` is not
#: set on errors raised by `get_watermark_offsets`, so they are named).
TRANSIENT = frozenset(
    {
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError._TRANSPORT,
        KafkaError._TIMED_OUT,
        KafkaError._ALL_BROKERS_DOWN,
    }
)
RETRY_FOR_S = 30.0
BACKOFF_S = 0.2


def is_transient(exc: KafkaException) -> bool:
    """Whether `exc` is one of the errors that go away once leadership and metadata settle."""
    error = exc.args[0] if exc.args else None
    return isinstance(error, KafkaError) and (error.retriable() or error.code() in TRANSIENT)


def watermarks(
    consumer: Consumer, topic: str, partition: int, *, timeout_s: float = 10.0, retry_for_s: float = RETRY_FOR_S
) -> tuple[int, int]:
    """(low, high) offsets of one partition: the first readable record and the next offset to be
    written. Transient errors are retried for up to `retry_for_s` seconds (backoff 0.2 s doubling
    to 2 s); then, or on any other error, the last `KafkaException` is raised."""
    deadline = time.monotonic() + retry_for_s
    backoff = BACKOFF_S
    while True:
        try:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout_s)
            return int(low), int(high)
        except KafkaException as exc:
            if not is_transient(exc) or time.monotonic() + backoff > deadline:
                raise
        time.sleep(backoff)
        backoff = min(2.0, backoff * 2)


def end_offset(consumer: Consumer, topic: str, partition: int) -> int:
    """The next offset to be written to a partition that `consumer` is assigned and fetching, as
    the last fetch response reported it (no request: a watermark query waits behind the in-flight
    long-poll fetch, ~0.5 s per partition). At most one fetch wait behind the broker; a partition
    not fetched yet is asked of the broker (`watermarks`)."""
    _low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
    if high < 0:
        _low, high = watermarks(consumer, topic, partition)
    return int(high)


def topic_ends(conn: Connection, topic: str, partitions: int, group: str) -> dict[int, int]:
    """The next offset to be written to each partition of `topic`, asked of the broker now (for a
    reader that must start from this moment however late it starts reading). `group` is one the
    caller may describe: librdkafka wants one for any consumer, though this one joins nothing."""
    consumer = Consumer(conn.confluent(**{"group.id": group, "log_level": 3}))
    try:
        return {p: watermarks(consumer, topic, p)[1] for p in range(partitions)}
    finally:
        consumer.close()
