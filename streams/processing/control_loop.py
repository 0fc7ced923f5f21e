"""The worker's control loop: every worker reads every `control.tenants` event, on its own thread.

A confluent-kafka consumer that joins no group (it assigns every partition itself, from where the
topic ended when the worker started, and commits nothing), so a worker evicts a terminated tenant's
keys within a poll of the event, whatever the split or the Faust app are doing: a batch in hand,
a locked key store, or the Faust app still joining its group after a restart. Its `progress_at`
tells the worker's watchdog when it last moved on (`split_loop.Progress`): a topic it may not
read, say, holds it.
"""

from __future__ import annotations

import logging
import threading

from confluent_kafka import Consumer, TopicPartition

from shredline.keystore.keys import Keys
from shredline.schemas.codec import DecodeError, decode
from shredline.streams.kafka.connection import Connection
from shredline.streams.kafka.offsets import topic_ends
from shredline.streams.processing.split_loop import Progress, consumer_error

log = logging.getLogger("shredline.control")
POLL_S = 0.2  # how long a poll waits; also how soon `stop` is seen


class ControlLoop:
    """`group` is one the worker may describe (librdkafka wants a group id on every consumer; this
    one never joins it). The start offsets are taken when the loop is built."""

    def __init__(self, conn: Connection, topic: str, partitions: int, group: str, keys: Keys) -> None:
        self.keys = keys
        self._start = [TopicPartition(topic, p, end) for p, end in topic_ends(conn, topic, partitions, group).items()]
        self._consumer = Consumer(conn.confluent(**{"group.id": group, "enable.auto.commit": False, "log_level": 3}))
        self._progress = Progress()

    def run(self, stop: threading.Event) -> None:
        """Evict each tenant a TERMINATED event names until `stop` is set. Raises `KafkaException`
        on a fatal consumer error (the worker exits and is restarted)."""
        self._consumer.assign(self._start)
        try:
            while not stop.is_set():
                message = self._consumer.poll(POLL_S)
                if message is not None:
                    error = message.error()
                    if error is None:
                        self.handle(message.value())
                    else:
                        consumer_error(error, "control", message.topic())
                self._progress.turn([] if message is None else [message])
        finally:
            self._consumer.close()

    @property
    def progress_at(self) -> float:
        """`time.monotonic()` seconds when the loop last moved on (see `split_loop.Progress`)."""
        return self._progress.at

    def handle(self, value: bytes | None) -> None:
        try:
            _record, event = decode(value or b"", expect="tenant_control")
        except DecodeError as exc:
            log.warning("control: skipped a record: %s", exc.reason)
            return
        log.info("control: %s %s", event["kind"], event["tenant"])
        if event["kind"] == "TERMINATED":
            self.keys.evict_tenant(event["tenant"])
