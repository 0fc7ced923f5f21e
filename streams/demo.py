"""`shredline demo`: the story so far, on the local broker, start to finish.

Today: a TLS broker comes up, the topic catalog is applied, and one synthetic message event
(fictional 555-01xx number, `.invalid` e-mail) is published to the ingest topic over TLS and
read back. Later stages of the pipeline extend this script as they land.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from streams.catalog import INGEST_MESSAGES, topic_name
from streams.errors import KafkaOperationError
from streams.kafka.admin import apply_catalog
from streams.kafka.connection import Connection, resolve_connection
from streams.settings import Settings

Progress = Callable[[str], None]


def ensure_broker(settings: Settings, progress: Progress) -> Connection:
    """The configured broker, or the local one (started if needed)."""
    if settings.bootstrap is not None:
        return resolve_connection(settings)
    from streams.launcher.broker import Launcher

    state, started = Launcher(settings, progress).up()
    progress(f"broker {'started' if started else 'already running'} at {state.bootstrap} (TLS, CA {state.ca})")
    return state.connection()


def round_trip(
    conn: Connection, topic: str, key: bytes, value: bytes, timeout_s: float = 30.0
) -> tuple[int, int, bytes]:
    """Publish one record with the durable producer settings, then read that exact record back."""
    delivered: list[tuple[int, int]] = []
    errors: list[str] = []

    def on_delivery(err: object, msg: object) -> None:
        if err is not None:
            errors.append(str(err))
        else:
            delivered.append((msg.partition(), msg.offset()))  # type: ignore[attr-defined]

    producer = Producer(conn.confluent(**{"enable.idempotence": True, "acks": "all", "log_level": 3}))
    producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
    if producer.flush(timeout_s) != 0 or errors or not delivered:
        raise KafkaOperationError(f"publishing to {topic} failed: {errors[0] if errors else 'timed out'}")
    partition, offset = delivered[0]

    consumer = Consumer(
        conn.confluent(
            **{"group.id": f"shredline-demo-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False, "log_level": 3}
        )
    )
    try:
        consumer.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            if msg.error():
                raise KafkaOperationError(f"reading {topic}: {msg.error()}")
            return partition, offset, msg.value() or b""
    except KafkaException as exc:
        raise KafkaOperationError(f"reading {topic}: {exc}") from None
    finally:
        consumer.close()
    raise KafkaOperationError(f"reading {topic}: record {partition}@{offset} not seen within {timeout_s:.0f}s")


def run_demo(settings: Settings, progress: Progress) -> int:
    conn = ensure_broker(settings, progress)

    changes = apply_catalog(conn, settings.topic_prefix, settings.replication_factor)
    created = sum(c.kind == "create" for c in changes)
    progress(f"topics applied: {created} created, {len(changes) - created} other changes")

    event = {
        "event_id": str(uuid.uuid4()),
        "tenant": "demo-tenant",
        "channel": "WHATSAPP",
        "direction": "INBOUND",
        "conversation_id": "demo-conversation-1",
        "contact_phone": "+15555550100",
        "body": "Hello! (synthetic demo message)",
    }
    topic = topic_name(settings.topic_prefix, INGEST_MESSAGES)
    started = time.perf_counter()
    partition, offset, value = round_trip(conn, topic, b"demo-tenant:demo-conversation-1", json.dumps(event).encode())
    elapsed_ms = (time.perf_counter() - started) * 1000
    print(f"round trip over TLS: {topic} partition {partition} offset {offset} in {elapsed_ms:.0f} ms")
    print(json.dumps(json.loads(value), indent=2))
    progress("the broker keeps running; stop it with `shredline kafka down`")
    return 0
