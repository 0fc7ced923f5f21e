"""Appending to the audit trail on `audit.events`: hash-chained records, never personal data.

Each record carries `seq` and the SHA-256 of the previous record, and its own `hash` over
`prev_hash` and its other fields, so a changed, removed or inserted record breaks the chain.
The appender reads the last record of the single partition to continue the chain.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from streams.catalog import AUDIT_EVENTS, topic_name
from streams.codec import decode, encode
from streams.errors import KafkaOperationError
from streams.kafka.connection import Connection
from streams.kafka.produce import Record, produce_and_wait

GENESIS = bytes(32)
_TRANSIENT = {
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError._TRANSPORT,
    KafkaError._TIMED_OUT,
}


def record_hash(record: dict[str, Any]) -> bytes:
    """SHA-256 over prev_hash and the record's other fields (canonical JSON, times in ms)."""
    body = {k: v for k, v in record.items() if k not in {"hash", "signature"}}
    body["at"] = int(body["at"].timestamp() * 1000)
    body["prev_hash"] = body["prev_hash"].hex()
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).digest()


def _watermarks(consumer: Consumer, topic: str, attempts: int = 20) -> tuple[int, int]:
    """Retries while a just-created topic's metadata is still propagating to the broker."""
    for attempt in range(attempts):
        try:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
            return int(low), int(high)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            transient = isinstance(error, KafkaError) and (error.retriable() or error.code() in _TRANSIENT)
            if attempt == attempts - 1 or not transient:
                raise KafkaOperationError(f"audit: cannot read {topic}: {exc}") from None
            time.sleep(0.5)
    raise AssertionError("unreachable")


def _last(conn: Connection, topic: str) -> dict[str, Any] | None:
    consumer = Consumer(
        conn.confluent(**{"group.id": "shredline-audit-tail", "enable.auto.commit": False, "log_level": 3})
    )
    try:
        low, high = _watermarks(consumer, topic)
        if high <= low:
            return None
        consumer.assign([TopicPartition(topic, 0, high - 1)])
        for _ in range(30):
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is None:
                return decode(msg.value() or b"", expect="audit_event")[1]
        raise KafkaOperationError(f"audit: could not read the last record of {topic}")
    finally:
        consumer.close()


def append(
    conn: Connection,
    prefix: str,
    *,
    actor: str,
    action: str,
    tenant: str | None = None,
    subject: str | None = None,
    details: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Append one audit record and wait until the broker has it (an audited action must not
    proceed unrecorded)."""
    topic = topic_name(prefix, AUDIT_EVENTS)
    last = _last(conn, topic)
    record: dict[str, Any] = {
        "seq": 0 if last is None else last["seq"] + 1,
        "at": dt.datetime.now(dt.UTC),
        "actor": actor,
        "action": action,
        "tenant": tenant,
        "subject": subject,
        "details": details or {},
        "prev_hash": GENESIS if last is None else last["hash"],
        "signature": None,
    }
    record["hash"] = record_hash(record)
    produce_and_wait(conn, [Record(topic, encode("audit_event", record), partition=0)], f"audit {action}")
    return record
