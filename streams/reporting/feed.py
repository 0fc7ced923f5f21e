"""The sink's Kafka adapter: a confluent consumer behind `shredline.analytics.sink.SinkSource`.

The warehouse has a single writer, so the source assigns every partition itself: no group
rebalancing, and a restart resumes at once from the offsets stored with the rows. Nothing is
ever committed to Kafka.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from shredline.analytics.sink import SINK_INPUTS, Position, SinkRecord
from shredline.streams.catalog import topic_name
from shredline.streams.kafka.connection import Connection
from shredline.streams.kafka.offsets import end_offset


class KafkaSinkSource:
    """Reads the sink's inputs of one environment (`prefix`) from the broker of `conn`."""

    def __init__(self, conn: Connection, prefix: str) -> None:
        self._roles = {topic_name(prefix, role): role for role in SINK_INPUTS}
        self._consumer = Consumer(
            conn.confluent(
                **{
                    "group.id": topic_name(prefix, "shredline-sink"),
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                    "log_level": 3,
                }
            )
        )
        self._assigned: list[TopicPartition] = []

    def start(self, stored: Mapping[Position, int]) -> None:
        self._assigned = [
            TopicPartition(topic, p, stored.get((topic, p), OFFSET_BEGINNING))
            for topic in self._roles
            for p in self._consumer.list_topics(topic, timeout=30).topics[topic].partitions
        ]
        self._consumer.assign(self._assigned)

    def poll(self, max_records: int, timeout_s: float) -> Sequence[SinkRecord]:
        roles = self._roles
        return [
            # A record without a value (a tombstone) becomes b"", which the sink skips as undecodable.
            SinkRecord(roles[m.topic()], m.topic(), m.partition(), m.offset(), m.value() or b"")  # type: ignore[arg-type,index]
            for m in self._consumer.consume(max_records, timeout=timeout_s)
            if m.error() is None
        ]

    def caught_up(self, stored: Mapping[Position, int]) -> bool:
        """Against the end offsets the last fetch responses carried (`end_offset`)."""
        return all(
            stored.get((tp.topic, tp.partition), 0) >= end_offset(self._consumer, tp.topic, tp.partition)
            for tp in self._assigned
        )

    def close(self) -> None:
        self._consumer.close()
