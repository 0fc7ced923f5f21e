"""Writing a few records and waiting until the broker has them: for operator commands, where an
action must not proceed unrecorded (audit, control events)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka.partitioner import murmur2
from confluent_kafka import KafkaException, Producer

from shredline.streams.errors import KafkaOperationError
from shredline.streams.kafka.connection import Connection

TIMEOUT_S = 30.0
PARTITION_UA = -1  # "unassigned": let the partitioner choose


def key_partition(key: bytes, partitions: int) -> int:
    """The partition of `partitions` (> 0) where Kafka's default partitioner puts a record keyed
    `key`: murmur2 of the key, as librdkafka's `murmur2_random` and the Java client compute it."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


@dataclass(frozen=True)
class Record:
    topic: str
    value: bytes | None
    key: bytes | None = None
    partition: int | None = None
    headers: list[tuple[str, str | bytes | None]] = field(default_factory=list)


@functools.cache
def _producer(conn: Connection) -> Producer:
    """One per process and broker: a TLS handshake and metadata fetch per write would cost ~0.5 s.
    Every write flushes, so nothing is left in it at exit."""
    return Producer(conn.confluent(**{"enable.idempotence": True, "acks": "all", "linger.ms": 0, "log_level": 3}))


def close_producers() -> None:
    """Drop the cached producers (each write flushed already), e.g. before their broker goes away."""
    _producer.cache_clear()


def produce_and_wait(conn: Connection, records: Sequence[Record], what: str) -> list[int]:
    """Durably write `records` (idempotent, acks=all) or raise naming `what` failed; returns the
    offset each was written at, in order."""
    errors: list[str] = []
    offsets: list[int] = [-1] * len(records)

    def delivered(index: int, err: object, msg: Any) -> None:
        if err:
            errors.append(str(err))
        else:
            offsets[index] = msg.offset()

    producer = _producer(conn)
    try:
        for index, r in enumerate(records):
            producer.produce(
                r.topic,
                value=r.value,
                key=r.key,
                headers=r.headers or None,
                partition=r.partition if r.partition is not None else PARTITION_UA,
                on_delivery=functools.partial(delivered, index),
            )
        left = producer.flush(TIMEOUT_S)
    except (KafkaException, SystemError) as exc:
        # A fatal error (e.g. the broker refused this principal a producer id) is raised from flush;
        # the client then calls the purged records' callbacks with it still set, which Python
        # reports as a SystemError caused by it.
        fatal = exc if isinstance(exc, KafkaException) else exc.__cause__
        if not isinstance(fatal, KafkaException):
            raise
        _producer.cache_clear()  # a producer with a fatal error never produces again
        raise KafkaOperationError(f"{what}: not written ({fatal.args[0] if fatal.args else fatal})") from None
    if left or errors:
        raise KafkaOperationError(f"{what}: not written ({errors[0] if errors else 'timed out'})")
    return offsets


def partitions_of(conn: Connection, topic: str) -> list[int]:
    producer = Producer(conn.confluent(log_level=3))
    return sorted(producer.list_topics(topic, timeout=TIMEOUT_S).topics[topic].partitions)
