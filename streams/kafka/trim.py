"""Trimming the ingest topics: sealed events leave the broker once the worker has processed them.

Used by the worker every few seconds and by a termination as one of its steps.
"""

from __future__ import annotations

import logging

from confluent_kafka import ConsumerGroupTopicPartitions
from confluent_kafka import TopicPartition as CkTopicPartition
from confluent_kafka.admin import AdminClient

from shredline.processors.roles import Role
from shredline.streams.acl import Group
from shredline.streams.catalog import topic_name
from shredline.streams.kafka.connection import Connection
from shredline.streams.settings import Settings

log = logging.getLogger("shredline.trim")
INGEST = (Role.INGEST_MESSAGES, Role.INGEST_CONTACTS, Role.INGEST_EXECUTIONS)


def worker_group(settings: Settings) -> str:
    """The worker's consumer group on the ingest topics (its split loop): the committed offsets
    that say what has been processed."""
    return topic_name(settings.topic_prefix, Group.WORKER)


def timers_app_id(settings: Settings) -> str:
    """The Faust app id of the worker's timers (janitor, trimmer, audit relay), which is also that
    app's consumer group."""
    return topic_name(settings.topic_prefix, Group.TIMERS)


class IngestTrimmer:
    """Deletes ingest records below the worker group's committed offsets, so their ciphertext
    leaves the broker minutes after it was processed instead of at retention.

    Deleting records moves the log start offset, but bytes stay on disk until their segment
    rolls, and an idle active segment never rolls. So for every partition it trimmed, it asks
    for a marker record (no payload): once the segment is older than `segment.ms` that append
    rolls it, and the next retention check deletes the old one.
    """

    def __init__(self, conn: Connection, group: str, topics: list[str]) -> None:
        self.admin = AdminClient(conn.confluent(log_level=3))
        self.group = group
        self.topics = set(topics)
        self.trimmed_to: dict[tuple[str, int], int] = {}

    def trim(self) -> list[tuple[str, int]]:
        try:
            request = [ConsumerGroupTopicPartitions(self.group)]
            result = self.admin.list_consumer_group_offsets(request)[self.group].result(timeout=10)
        except Exception as exc:  # the group may not exist yet; try next time
            log.debug("trim: no committed offsets yet (%s)", type(exc).__name__)
            return []
        todo = [
            CkTopicPartition(tp.topic, tp.partition, tp.offset)
            for tp in result.topic_partitions
            if tp.topic in self.topics and tp.offset > self.trimmed_to.get((tp.topic, tp.partition), 0)
        ]
        if not todo:
            return []
        done = []
        for tp, future in self.admin.delete_records(todo).items():
            try:
                future.result(timeout=10)
            except Exception as exc:
                log.warning("trim: %s[%d] failed: %s", tp.topic, tp.partition, exc)
                continue
            self.trimmed_to[(tp.topic, tp.partition)] = tp.offset
            done.append((tp.topic, tp.partition))
        log.info("trim: deleted processed ingest records in %d partitions", len(done))
        return done
