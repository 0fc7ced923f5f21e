"""The local broker: TLS round trips with both client libraries, and nothing without TLS."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition as AioTopicPartition
from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from shredline.streams.kafka.connection import Connection
from shredline.streams.launcher.broker import Launcher
from tests.conftest import Broker

pytestmark = pytest.mark.kafka


def round_trip(conn: Connection, topic: str, key: bytes, value: bytes) -> tuple[int, int, bytes | None]:
    """Publish one record with the durable producer settings, then read that exact record back."""
    delivered: list[Message] = []
    producer = Producer(conn.confluent(**{"enable.idempotence": True, "acks": "all"}))
    producer.produce(topic, value=value, key=key, on_delivery=lambda err, msg: delivered.append(msg))
    assert producer.flush(30) == 0 and delivered[0].error() is None
    partition, offset = delivered[0].partition(), delivered[0].offset()
    consumer = Consumer(conn.confluent(**{"group.id": f"rt-{uuid.uuid4().hex}", "enable.auto.commit": False}))
    try:
        consumer.assign([TopicPartition(topic, partition, offset)])
        msg = None
        deadline = time.monotonic() + 30
        while msg is None and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
        assert msg is not None and msg.error() is None
        return msg.partition(), msg.offset(), msg.value()
    finally:
        consumer.close()


def _create_topic(broker: Broker, name: str) -> None:
    admin = AdminClient(broker.connection.confluent())
    admin.create_topics([NewTopic(name, 1, 1)])[name].result(timeout=30)


def test_confluent_round_trip_over_tls(broker: Broker, topic_prefix: str) -> None:
    topic = f"{topic_prefix}.roundtrip"
    _create_topic(broker, topic)
    value = uuid.uuid4().bytes
    partition, offset, seen = round_trip(broker.connection, topic, b"k", value)
    assert (partition, offset, seen) == (0, 0, value)


def test_aiokafka_round_trip_over_tls(broker: Broker, topic_prefix: str, group_id: str) -> None:
    topic = f"{topic_prefix}.aio"
    _create_topic(broker, topic)
    value = uuid.uuid4().bytes
    conn = broker.connection

    async def go() -> bytes | None:
        producer = AIOKafkaProducer(
            bootstrap_servers=conn.bootstrap,
            security_protocol="SSL",
            ssl_context=conn.ssl_context(),
            acks="all",
            enable_idempotence=True,
        )
        await producer.start()
        try:
            meta = await producer.send_and_wait(topic, value, key=b"k")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=conn.bootstrap,
            security_protocol="SSL",
            ssl_context=conn.ssl_context(),
            group_id=group_id,
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            tp = AioTopicPartition(topic, meta.partition)
            consumer.assign([tp])
            consumer.seek(tp, meta.offset)
            msg = await asyncio.wait_for(consumer.getone(), timeout=30)
            return msg.value  # type: ignore[no-any-return]
        finally:
            await consumer.stop()

    assert asyncio.run(go()) == value


def test_plaintext_connection_is_refused(broker: Broker) -> None:
    conf = broker.connection.confluent(**{"security.protocol": "PLAINTEXT", "log_level": 0})
    for key in [k for k in conf if k.startswith("ssl.")]:
        del conf[key]
    with pytest.raises(KafkaException):
        AdminClient(conf).list_topics(timeout=5)


def test_tls_without_client_certificate_is_refused(broker: Broker) -> None:
    conf = broker.connection.confluent(log_level=0)
    for key in ("ssl.certificate.location", "ssl.key.location"):
        conf.pop(key, None)
    with pytest.raises(KafkaException):
        AdminClient(conf).list_topics(timeout=5)


def test_up_twice_reuses_the_running_broker_and_status_reports_it(broker: Broker) -> None:
    if broker.settings.bootstrap:
        pytest.skip("external broker: the launcher is not in charge")
    launcher = Launcher(broker.settings)
    first = launcher.running()
    assert first is not None
    again, started = launcher.up()
    assert not started and again.pid == first.pid

    status = subprocess.run(
        [sys.executable, "-m", "shredline.streams.cli", "kafka", "status"],
        env=broker.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    assert first.bootstrap in status.stdout and f"pid {first.pid}" in status.stdout
