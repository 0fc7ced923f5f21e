"""`shredline buffer read`: a conversation's recent messages, decrypted, and the read audited.

The messages come from the worker's buffer view (its table's changelog holds ciphertext only);
opening them needs the conversation key, so a shredded conversation or tenant reads as deleted.
"""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from shredline.keystore.errors import KeyDestroyed
from shredline.keystore.keys import Sealed
from shredline.processors.roles import Role
from shredline.schemas.codec import decode
from shredline.schemas.errors import ShredlineError
from shredline.streams.acl import VIEW_CHANGELOG, Group
from shredline.streams.catalog import topic_name
from shredline.streams.kafka.connection import Connection
from shredline.streams.kafka.offsets import watermarks
from shredline.streams.operations.audit import Trail
from shredline.streams.processing.app import view_entry_envelopes
from shredline.streams.settings import Settings


class Deleted(ShredlineError):
    """The conversation's data was crypto-shredded (closed, expired, or tenant terminated)."""

    exit_code = 3


def latest_view_value(conn: Connection, prefix: str, key: bytes, timeout_s: float = 30.0) -> bytes | None:
    """The newest value for `key` in the buffer view's changelog of environment `prefix` (scans
    each partition to its end)."""
    topic = topic_name(prefix, VIEW_CHANGELOG)
    group = topic_name(prefix, Group.BUFFER_READ)
    consumer = Consumer(conn.confluent(**{"group.id": group, "enable.auto.commit": False, "log_level": 3}))
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if metadata is None or metadata.error is not None:
            return None
        ends = {}
        for p in metadata.partitions:
            low, high = watermarks(consumer, topic, p, timeout_s=timeout_s)
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        latest: bytes | None = None
        done: set[int] = set()
        deadline = time.monotonic() + timeout_s
        while len(done) < len(ends) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            if msg.key() == key:
                latest = msg.value()
            partition, offset = msg.partition() or 0, msg.offset() or 0
            if offset + 1 >= ends[partition]:
                done.add(partition)
        return latest
    finally:
        consumer.close()


def read_conversation(
    settings: Settings, conn: Connection, trail: Trail, tenant: str, conversation: str, *, purpose: str
) -> list[dict[str, Any]]:
    """The conversation's messages oldest first; raises `Deleted` when they were shredded."""
    keys = trail.keys
    try:
        record_id = keys.pseudonym(tenant, "conversation", conversation)
    except KeyDestroyed:
        raise Deleted(f"tenant {tenant} is terminated: its conversations are deleted") from None
    raw = latest_view_value(conn, settings.topic_prefix, record_id.encode())
    messages: list[dict[str, Any]] = []
    destroyed = 0
    topic = topic_name(settings.topic_prefix, Role.BUFFER_MESSAGES)
    for blob in view_entry_envelopes(raw) if raw else []:
        _r, env = decode(blob, expect="sealed_envelope")
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
