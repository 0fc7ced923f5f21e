"""`shredline buffer read`: a conversation's recent messages, decrypted, and the read audited.

The messages are read from `buffer.messages` itself, where the worker's split wrote them sealed
under the conversation's key: the topic's records are keyed by the conversation's pseudonym, so
all of a conversation's messages are in the one partition that key hashes to (murmur2, the
partitioner of the worker's producer). A read scans that partition, which holds at most the
topic's retention (`MAX_BUFFER_TTL_MS`) of messages, and keeps the newest `READ_DEPTH` events.
No copy of the messages is kept anywhere else: opening them needs the conversation key, so a
shredded conversation or tenant reads as deleted.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from shredline.keystore.errors import KeyDestroyed, UnknownTenant
from shredline.keystore.keys import Sealed
from shredline.processors.roles import Role
from shredline.schemas.codec import DecodeError, decode
from shredline.schemas.errors import ShredlineError
from shredline.streams.acl import Group
from shredline.streams.catalog import topic_name
from shredline.streams.kafka.admin import kafka_error, permanent
from shredline.streams.kafka.connection import Connection
from shredline.streams.kafka.offsets import watermarks
from shredline.streams.kafka.produce import key_partition
from shredline.streams.operations.audit import Trail
from shredline.streams.settings import Settings

READ_DEPTH = 50  # events a read returns per conversation, the newest


class Deleted(ShredlineError):
    """The conversation's data was crypto-shredded (closed, expired, or tenant terminated)."""

    exit_code = 3


def conversation_envelopes(
    conn: Connection, prefix: str, record_id: bytes, timeout_s: float = 30.0
) -> list[dict[str, Any]]:
    """The sealed envelopes (decoded `sealed_envelope` records) of one conversation on environment
    `prefix`'s `buffer.messages`, in the order they were first written: the newest `READ_DEPTH`
    events, each once (an event sealed again, after a redelivery or a replay, keeps its first
    place, as its newest copy). Reads the partition `record_id` hashes to, from its start to the
    end it had when the read began; a record that is not an envelope is skipped. Raises
    `KafkaOperationError` when the broker refuses the read (its code kept) and `ShredlineError`
    when the topic does not exist or the read stops advancing for `timeout_s` seconds before
    that end: never an empty answer for a read that did not happen."""
    topic = topic_name(prefix, Role.BUFFER_MESSAGES)
    group = topic_name(prefix, Group.BUFFER_READ)
    settings = {"group.id": group, "enable.auto.commit": False, "auto.offset.reset": "earliest", "log_level": 3}
    consumer = Consumer(conn.confluent(**settings))
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if metadata is not None and metadata.error is not None:  # refused, or no such topic
            raise kafka_error(f"buffer read: {topic}", KafkaException(metadata.error), conn.principal())
        if metadata is None or not metadata.partitions:
            raise ShredlineError(f"buffer read: no topic {topic} (is SHREDLINE_TOPIC_PREFIX right?)")
        partition = key_partition(record_id, len(metadata.partitions))
        low, high = watermarks(consumer, topic, partition, timeout_s=timeout_s)
        found: list[tuple[int, bytes]] = []
        consumer.assign([TopicPartition(topic, partition, low)])
        moved, position = time.monotonic(), low
        while position < high:
            msg = consumer.poll(0.5)
            error = msg.error() if msg is not None else None
            if error is not None and (error.fatal() or permanent(error)):
                raise kafka_error(f"buffer read: {topic} [{partition}]", KafkaException(error), conn.principal())
            if msg is None or error is not None:
                if time.monotonic() - moved > timeout_s:
                    raise ShredlineError(f"buffer read: {topic} [{partition}] stopped at offset {position} of {high}")
                continue
            offset = msg.offset() or 0
            moved, position = time.monotonic(), offset + 1
            if msg.key() == record_id and (value := msg.value()):
                found.append((offset, value))
        return latest_events(found)
    finally:
        consumer.close()


def latest_events(records: Iterable[tuple[int, bytes]]) -> list[dict[str, Any]]:
    """Of one conversation's records on its partition, as (offset, value) in offset order, the
    decoded envelopes of the newest `READ_DEPTH` events, in the order each event was first
    written. An event sealed again (a redelivery, a replay of old events) keeps its first place,
    as its newest copy, so a replay neither shows an event twice nor pushes newer ones out; a
    value that is not an envelope is skipped."""
    by_event: dict[str, dict[str, Any]] = {}
    for offset, value in records:
        try:
            envelope = decode(value, expect="sealed_envelope")[1]
        except DecodeError:
            continue
        by_event[envelope["event_ref"] or f"offset {offset}"] = envelope
    return list(by_event.values())[-READ_DEPTH:]


def read_conversation(
    settings: Settings, conn: Connection, trail: Trail, tenant: str, conversation: str, *, purpose: str
) -> list[dict[str, Any]]:
    """The conversation's messages oldest first; raises `Deleted` when they were shredded. Every
    read is audited, one refused for its tenant (terminated, or not provisioned) included."""
    keys = trail.keys
    try:
        record_id = keys.pseudonym(tenant, "conversation", conversation)
    except (KeyDestroyed, UnknownTenant) as exc:
        refused = "tenant terminated" if isinstance(exc, KeyDestroyed) else "tenant not provisioned"
        trail.record("buffer.read", tenant, None, {"purpose": purpose, "count": "0", "refused": refused})
        if isinstance(exc, KeyDestroyed):
            raise Deleted(f"tenant {tenant} is terminated: its conversations are deleted") from None
        raise
    messages: list[dict[str, Any]] = []
    destroyed = 0
    topic = topic_name(settings.topic_prefix, Role.BUFFER_MESSAGES)
    for env in conversation_envelopes(conn, settings.topic_prefix, record_id.encode()):
        sealed = Sealed(env["tenant"], "conversation", env["record_id"], env["key_id"], env["nonce"], env["ciphertext"])
        try:
            messages.append(decode(keys.open(sealed, topic), expect="message_event")[1])
        except KeyDestroyed:
            destroyed += 1
    details = {"purpose": purpose, "count": str(len(messages)), "deleted": str(destroyed)}
    trail.record("buffer.read", tenant, record_id, details)
    if destroyed and not messages:
        raise Deleted("conversation deleted: its key was destroyed (closed or expired)")
    messages.sort(key=lambda m: m["occurred_at"])
    return messages
