"""The worker's one producer for everything the splitter writes: sealed buffers, metrics, logs,
tombstones, dead letters.

A librdkafka (confluent-kafka) producer, idempotent with `acks=all`, so a batch costs a few µs per
record instead of a Faust send each. `send` is blocking and runs on the splitter's thread: it
returns only when every record of the batch is acknowledged, so Faust, which acks the batch's
input offsets after that, commits nothing whose outputs are not durable (at-least-once). Records
are keyed as before and partitioned with murmur2, Kafka's default partitioner, so a key lands on
the partition it always did (`buffer read` finds a conversation's partition from its key).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from shredline.streams.catalog import topic_name
from shredline.streams.kafka.connection import Connection
from shredline.streams.processing.splitter import Output

log = logging.getLogger("shredline.outputs")
FLUSH_S = 1.0
RETRY_S = 0.5


class Outputs:
    def __init__(self, conn: Connection, prefix: str, linger_ms: int = 5) -> None:
        self.prefix = prefix
        self._producer = Producer(
            conn.confluent(
                **{
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": linger_ms,
                    "partitioner": "murmur2_random",
                    "log_level": 3,
                }
            )
        )
        self._topics: dict[str, str] = {}

    def _topic(self, role: str) -> str:
        topic = self._topics.get(role)
        if topic is None:
            topic = self._topics[role] = topic_name(self.prefix, role)
        return topic

    def send(self, outputs: list[Output]) -> None:
        """Write `outputs` in order; returns once all are acknowledged. A failed delivery writes
        the whole batch again after RETRY_S (duplicates are harmless: de-dup tokens, event refs),
        so a broker that is away only delays it."""
        while outputs:
            failed: list[KafkaError] = []

            def delivered(err: KafkaError | None, _msg: Message, failed: list[KafkaError] = failed) -> None:
                if err is not None:
                    failed.append(err)

            for role, key, value in outputs:
                self._produce(self._topic(role), key, value, delivered)
            while self._producer.flush(FLUSH_S) > 0:
                log.warning("outputs: waiting for the broker to acknowledge the batch")
            if not failed:
                return
            log.warning(
                "outputs: %d of %d not delivered (%s); sending the batch again",
                len(failed),
                len(outputs),
                failed[0].name(),
            )
            time.sleep(RETRY_S)

    def _produce(self, topic: str, key: bytes | None, value: bytes | None, delivered: Any) -> None:
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, on_delivery=delivered)
                return
            except BufferError:  # the local queue is full: let it drain
                self._producer.poll(0.1)

    def close(self) -> None:
        self._producer.flush(10)
