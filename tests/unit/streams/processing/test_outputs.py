"""`Outputs.send` without a broker: which failed deliveries are sent again, which are refused for
good (their sources are dead-lettered), which stop the worker; a stand-in producer plays Kafka."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from confluent_kafka import KafkaError, KafkaException, Message

from shredline.processors.roles import Role
from shredline.streams.errors import KafkaOperationError
from shredline.streams.kafka.connection import Connection
from shredline.streams.processing.outputs import Delivered, Fate, Outputs, fate, resend
from shredline.streams.processing.splitter import Output

Written = tuple[str, bytes | None, bytes | None]  # topic, key, value
BIG = b"x" * 100  # what the stand-in broker refuses (MSG_SIZE_TOO_LARGE), in any batch
HUGE = b"x" * 1000  # what the stand-in producer refuses itself, at `produce`


def error(code: int, *, fatal: bool = False, retriable: bool = False) -> KafkaError:
    return KafkaError(code, fatal=fatal, retriable=retriable)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (KafkaError.MSG_SIZE_TOO_LARGE, Fate.REFUSED),
        (KafkaError.RECORD_LIST_TOO_LARGE, Fate.REFUSED),
        (KafkaError.INVALID_RECORD, Fate.REFUSED),
        (KafkaError.TOPIC_AUTHORIZATION_FAILED, Fate.UNAUTHORIZED),
        (KafkaError.CLUSTER_AUTHORIZATION_FAILED, Fate.UNAUTHORIZED),
        (KafkaError._MSG_TIMED_OUT, Fate.RETRY),  # the broker was away for message.timeout.ms
        (KafkaError._TRANSPORT, Fate.RETRY),
        (KafkaError.NOT_LEADER_FOR_PARTITION, Fate.RETRY),
        (KafkaError.NOT_ENOUGH_REPLICAS, Fate.RETRY),
        (KafkaError.REQUEST_TIMED_OUT, Fate.RETRY),
        (KafkaError.UNKNOWN_TOPIC_OR_PART, Fate.RETRY),
        (KafkaError._FATAL, Fate.FATAL),  # a delivery report of a producer that failed fatally
    ],
)
def test_each_delivery_error_has_its_fate(code: int, expected: Fate) -> None:
    assert fate(error(code)) is expected


def test_the_library_flags_decide_before_the_codes() -> None:
    assert fate(error(KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, fatal=True)) is Fate.FATAL
    assert fate(error(KafkaError.MSG_SIZE_TOO_LARGE, retriable=True)) is Fate.RETRY


def test_what_is_sent_again_is_what_failed_and_what_follows_it_under_the_same_key() -> None:
    outputs: list[Output] = [
        (Role.BUFFER_CONTACTS, b"c1", b"upsert"),
        (Role.METRICS_USAGE, b"acme", b"m1"),
        (Role.BUFFER_CONTACTS, b"c2", b"other contact"),
        (Role.DEADLETTER_INGEST, None, b"d1"),
        (Role.DEADLETTER_INGEST, None, b"d2"),
        (Role.BUFFER_CONTACTS, b"c1", None),  # the tombstone must stay after the upsert sent again
        (Role.METRICS_USAGE, b"c1", b"same key, other topic"),
    ]
    assert resend(outputs, {0, 3}) == [0, 3, 5]
    assert resend(outputs, {5}) == [5]
    assert resend(outputs, set()) == []


@dataclass
class Kafka:
    """Stands in for the producer (the `Producing` protocol) and the broker behind it. `verdict`
    says what becomes of a record sent in a batch (the records of the same flush)."""

    verdict: Callable[[Written, list[Written]], KafkaError | None]
    written: list[Written] = field(default_factory=list)  # acknowledged, in order
    batches: list[list[Written]] = field(default_factory=list)
    queued: list[tuple[Written, Delivered]] = field(default_factory=list)
    flush_raises: KafkaException | None = None

    def produce(
        self, topic: str, value: bytes | None = None, key: bytes | None = None, *, on_delivery: Delivered | None = None
    ) -> None:
        if value is not None and len(value) >= len(HUGE):
            raise KafkaException(error(KafkaError.MSG_SIZE_TOO_LARGE))
        assert on_delivery is not None
        self.queued.append(((topic, key, value), on_delivery))

    def poll(self, timeout: float = -1) -> int:
        return 0

    def flush(self, timeout: float = -1) -> int:
        if self.flush_raises is not None:
            raise self.flush_raises
        queued, self.queued = self.queued, []
        batch = [record for record, _ in queued]
        self.batches.append(batch)
        for record, delivered in queued:
            failure = self.verdict(record, batch)
            if failure is None:
                self.written.append(record)
            delivered(failure, Message(topic=record[0]))
        return 0


def too_large(record: Written, batch: list[Written]) -> KafkaError | None:
    """A broker that refuses any batch holding a BIG record, as librdkafka reports it: every
    record of that batch fails."""
    return error(KafkaError.MSG_SIZE_TOO_LARGE) if any(value == BIG for _t, _k, value in batch) else None


def outputs_over(kafka: Kafka, pauses: list[float] | None = None) -> Outputs:
    return Outputs(Connection("127.0.0.1:1"), "t", producer=kafka, sleep=(pauses if pauses is not None else []).append)


def test_a_record_the_broker_refuses_is_returned_and_its_batch_mates_are_delivered_alone() -> None:
    kafka = Kafka(too_large)
    outputs: list[Output] = [
        (Role.METRICS_USAGE, b"acme", b"m1"),
        (Role.BUFFER_MESSAGES, b"r1", BIG),
        (Role.BUFFER_MESSAGES, b"r2", b"small"),
    ]
    pauses: list[float] = []
    assert outputs_over(kafka, pauses).send(outputs) == {1: "MSG_SIZE_TOO_LARGE"}
    assert sorted(kafka.written) == sorted(
        [("t.metrics.usage", b"acme", b"m1"), ("t.buffer.messages", b"r2", b"small")]
    )
    assert len(kafka.written) == 2 and pauses == []  # each delivered once; nothing waited for


def test_a_record_the_producer_refuses_outright_is_returned_too() -> None:
    kafka = Kafka(lambda _record, _batch: None)
    outputs: list[Output] = [(Role.LOGS_EXECUTIONS, b"acme", HUGE), (Role.METRICS_USAGE, b"acme", b"m1")]
    assert outputs_over(kafka).send(outputs) == {0: "MSG_SIZE_TOO_LARGE"}
    assert kafka.written == [("t.metrics.usage", b"acme", b"m1")]


def test_a_transient_failure_sends_again_only_what_failed() -> None:
    failures = {b"m2": 2}  # m2 times out twice, then goes through

    def flaky(record: Written, _batch: list[Written]) -> KafkaError | None:
        value = record[2] or b""
        if failures.get(value):
            failures[value] -= 1
            return error(KafkaError._MSG_TIMED_OUT)
        return None

    kafka = Kafka(flaky)
    outputs: list[Output] = [(Role.METRICS_USAGE, b"acme", b"m1"), (Role.DEADLETTER_INGEST, None, b"m2")]
    pauses: list[float] = []
    assert outputs_over(kafka, pauses).send(outputs) == {}
    assert [value for _t, _k, value in kafka.written] == [b"m1", b"m2"]  # m1 not sent again
    assert [len(batch) for batch in kafka.batches] == [2, 1, 1] and len(pauses) == 2


def test_a_key_sent_again_keeps_its_last_write_last() -> None:
    failures = {b"upsert": 1}

    def flaky(record: Written, _batch: list[Written]) -> KafkaError | None:
        if failures.get(record[2] or b""):
            failures[record[2] or b""] -= 1
            return error(KafkaError.NOT_ENOUGH_REPLICAS)
        return None

    kafka = Kafka(flaky)
    outputs: list[Output] = [(Role.BUFFER_CONTACTS, b"c1", b"upsert"), (Role.BUFFER_CONTACTS, b"c1", None)]
    assert outputs_over(kafka).send(outputs) == {}
    assert [value for _t, _k, value in kafka.written] == [None, b"upsert", None]


def test_a_topic_the_worker_may_not_write_is_retried_with_an_error_naming_it_never_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    granted_after = [3]  # three attempts are refused, then an operator grants the ACL

    def unauthorized(record: Written, _batch: list[Written]) -> KafkaError | None:
        if record[0] == "t.buffer.messages" and granted_after[0] > 0:
            granted_after[0] -= 1
            return error(KafkaError.TOPIC_AUTHORIZATION_FAILED)
        return None

    kafka = Kafka(unauthorized)
    outputs: list[Output] = [(Role.BUFFER_MESSAGES, b"r1", b"sealed"), (Role.METRICS_USAGE, b"acme", b"m1")]
    with caplog.at_level(logging.WARNING, "shredline.outputs"):
        assert outputs_over(kafka).send(outputs) == {}
    assert sorted(kafka.written) == sorted(
        [("t.buffer.messages", b"r1", b"sealed"), ("t.metrics.usage", b"acme", b"m1")]
    )
    assert len(kafka.batches) == 4  # sent again until granted
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]  # (the worker rate-limits them)
    assert errors and all("t.buffer.messages" in e and "TOPIC_AUTHORIZATION_FAILED" in e for e in errors)


def test_a_fatal_producer_error_raises_with_kafkas_code() -> None:
    kafka = Kafka(lambda _record, _batch: error(KafkaError._FATAL))
    with pytest.raises(KafkaOperationError) as raised:
        outputs_over(kafka).send([(Role.METRICS_USAGE, b"acme", b"m1")])
    assert raised.value.code == KafkaError._FATAL

    fenced = Kafka(lambda _record, _batch: None, flush_raises=KafkaException(error(KafkaError._FENCED, fatal=True)))
    with pytest.raises(KafkaOperationError) as raised:
        outputs_over(fenced).send([(Role.METRICS_USAGE, b"acme", b"m1")])
    assert raised.value.code == KafkaError._FENCED and "_FENCED" in str(raised.value)
