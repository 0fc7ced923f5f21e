"""`shredline demo`: the story so far, on the local broker, start to finish.

Today: a TLS broker comes up, the topic catalog is applied, synthetic events (Faker names,
`example.*` e-mails) are validated and published with the SDK, and one message is read back
and decoded. Later stages of the pipeline extend this script as they land.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from streams.catalog import INGEST_MESSAGES, topic_name
from streams.codec import decode
from streams.errors import KafkaOperationError
from streams.generate import default_start, generate
from streams.kafka.admin import apply_catalog
from streams.kafka.connection import Connection
from streams.launcher.broker import connect_or_launch
from streams.sdk import Publisher
from streams.settings import Settings

Progress = Callable[[str], None]


def first_since(conn: Connection, topic: str, since_ms: int, timeout_s: float = 30.0) -> Message:
    """The first record the broker appended to `topic` at or after `since_ms` (topics use LogAppendTime)."""
    consumer = Consumer(
        conn.confluent(
            **{"group.id": f"shredline-demo-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False, "log_level": 3}
        )
    )
    try:
        partitions = consumer.list_topics(topic, timeout=timeout_s).topics[topic].partitions
        wanted = [TopicPartition(topic, p, since_ms) for p in partitions]
        starts = [tp for tp in consumer.offsets_for_times(wanted, timeout=timeout_s) if tp.offset >= 0]
        consumer.assign(starts)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is None:
                return msg
    except KafkaException as exc:
        raise KafkaOperationError(f"reading {topic}: {exc}") from None
    finally:
        consumer.close()
    raise KafkaOperationError(f"reading {topic}: nothing appended since the demo started")


def run_demo(settings: Settings, progress: Progress) -> int:
    conn = connect_or_launch(settings, progress)

    changes = apply_catalog(conn, settings.topic_prefix, settings.replication_factor)
    created = sum(c.kind == "create" for c in changes)
    progress(f"topics applied: {created} created, {len(changes) - created} other changes")

    span = dt.timedelta(days=1)
    events = list(generate(3, 60, seed=1, start=default_start(dt.datetime.now(dt.UTC), span), span=span))
    started = time.perf_counter()
    since_ms = int(time.time() * 1000)
    with Publisher(conn, settings.topic_prefix) as publisher:
        queued = [publisher.publish(event) for event in events]
    elapsed_ms = (time.perf_counter() - started) * 1000
    by_topic = Counter(v.topic for v in queued)
    print(
        f"published {publisher.delivered} synthetic events over TLS in {elapsed_ms:.0f} ms: "
        + ", ".join(f"{n} to {t}" for t, n in sorted(by_topic.items()))
    )

    topic = topic_name(settings.topic_prefix, INGEST_MESSAGES)
    msg = first_since(conn, topic, since_ms)
    value = msg.value() or b""
    record, decoded = decode(value)
    print(
        f"read back {record} from {topic} partition {msg.partition()} offset {msg.offset()} "
        f"({len(value)} bytes, Avro single-object encoding):"
    )
    print(json.dumps(decoded, indent=2, default=str, ensure_ascii=False))
    progress("the broker keeps running; stop it with `shredline kafka down`")
    return 0
