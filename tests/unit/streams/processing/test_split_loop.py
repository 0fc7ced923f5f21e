"""`batch_of`: what the split loop hands the splitter from a consumed batch, and where it commits."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_NOT_AVAILABLE, KafkaError, KafkaException

from shredline.processors.roles import Role
from shredline.streams.catalog import MARKER_HEADER
from shredline.streams.kafka.admin import permanent
from shredline.streams.processing.split_loop import Headers, Progress, batch_of

ROLES = {"t.ingest.messages": Role.INGEST_MESSAGES, "t.ingest.contacts": Role.INGEST_CONTACTS}


@dataclass
class Fake:
    """Stands in for a consumed confluent-kafka Message (the `KafkaMessage` protocol)."""

    topic_: str | None = "t.ingest.messages"
    partition_: int = 0
    offset_: int = 0
    value_: bytes | None = b"sealed"
    headers_: Headers | None = None
    timestamp_: tuple[int, int] = (TIMESTAMP_CREATE_TIME, 1_796_000_000_000)
    error_: KafkaError | None = field(default=None)

    def error(self) -> KafkaError | None:
        return self.error_

    def topic(self) -> str | None:
        return self.topic_

    def partition(self) -> int | None:
        return self.partition_

    def offset(self) -> int | None:
        return self.offset_

    def headers(self) -> Headers | None:
        return self.headers_

    def timestamp(self) -> tuple[int, int]:
        return self.timestamp_

    def value(self) -> bytes | None:
        return self.value_


def test_records_keep_their_order_and_each_partition_commits_one_past_its_last_record() -> None:
    batch = [
        Fake(offset_=7),
        Fake(topic_="t.ingest.contacts", partition_=2, offset_=40, value_=b"c"),
        Fake(offset_=8, value_=b"m2"),
        Fake(partition_=1, offset_=3),
    ]
    records, ends = batch_of(batch, ROLES)
    assert [(r[0], r[1], r[2], r[3]) for r in records] == [
        (Role.INGEST_MESSAGES, 0, 7, b"sealed"),
        (Role.INGEST_CONTACTS, 2, 40, b"c"),
        (Role.INGEST_MESSAGES, 0, 8, b"m2"),
        (Role.INGEST_MESSAGES, 1, 3, b"sealed"),
    ]
    assert ends == {("t.ingest.messages", 0): 9, ("t.ingest.contacts", 2): 41, ("t.ingest.messages", 1): 4}
    assert records[0][4] == dt.datetime(2026, 11, 30, 0, 53, 20, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    "headers", [[(MARKER_HEADER, b"1")], {MARKER_HEADER: b"1"}, [("x", None), (MARKER_HEADER, b"")]]
)
def test_a_trimmer_marker_is_committed_past_but_not_split(headers: Headers) -> None:
    records, ends = batch_of([Fake(offset_=5), Fake(offset_=6, value_=b"", headers_=headers)], ROLES)
    assert [r[2] for r in records] == [5]
    assert ends == {("t.ingest.messages", 0): 7}  # a batch of markers only still moves the offset on


def test_other_headers_do_not_hide_a_record() -> None:
    records, _ends = batch_of([Fake(headers_=[("traceparent", b"00-ab")])], ROLES)
    assert len(records) == 1


@pytest.mark.parametrize(
    "timestamp",
    [(TIMESTAMP_NOT_AVAILABLE, 0), (TIMESTAMP_CREATE_TIME, 253_402_300_800_000), (TIMESTAMP_CREATE_TIME, -(2**62))],
)
def test_a_record_without_a_usable_timestamp_has_none_and_is_still_split(timestamp: tuple[int, int]) -> None:
    """No timestamp, or one no datetime can hold (year 10000, far before year 1): a producer sets
    CreateTime, so one bad clock must not stop the split on every worker."""
    records, ends = batch_of([Fake(offset_=4, timestamp_=timestamp)], ROLES)
    assert [(r[2], r[4]) for r in records] == [(4, None)] and ends == {("t.ingest.messages", 0): 5}


def test_partition_eof_and_transient_errors_are_skipped_and_a_fatal_one_raises() -> None:
    eof = Fake(error_=KafkaError(KafkaError._PARTITION_EOF))
    transport = Fake(error_=KafkaError(KafkaError._TRANSPORT))
    records, ends = batch_of([eof, transport, Fake(offset_=1)], ROLES)
    assert [r[2] for r in records] == [1] and ends == {("t.ingest.messages", 0): 2}
    with pytest.raises(KafkaException):
        batch_of([Fake(error_=KafkaError(KafkaError._FATAL, fatal=True))], ROLES)


@pytest.mark.parametrize(
    "code",
    [
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.INCONSISTENT_GROUP_PROTOCOL,
        KafkaError.INVALID_GROUP_ID,
    ],
)
def test_only_an_operator_ends_these_consumer_errors(code: int) -> None:
    assert permanent(KafkaError(code))


@pytest.mark.parametrize(
    "code",
    [KafkaError._PARTITION_EOF, KafkaError._TRANSPORT, KafkaError._MAX_POLL_EXCEEDED, KafkaError.NOT_COORDINATOR],
)
def test_librdkafka_gets_over_these_consumer_errors_itself(code: int) -> None:
    assert not permanent(KafkaError(code))


def test_idle_turns_and_batches_move_a_loop_on_and_transient_errors_do_not_hold_it() -> None:
    now = [1000.0]  # monotonic seconds, moved by the test
    progress = Progress(lambda: now[0])
    assert progress.at == 1000.0
    now[0] += 1
    progress.turn([])  # an idle poll
    assert progress.at == 1001.0
    now[0] += 1
    progress.turn([Fake(offset_=1), Fake(error_=KafkaError(KafkaError._TRANSPORT))])
    assert progress.at == 1002.0


def test_a_group_refusal_holds_progress_through_idle_turns_until_a_record_arrives() -> None:
    now = [1000.0]  # monotonic seconds, moved by the test
    progress = Progress(lambda: now[0])
    progress.turn([Fake(topic_=None, error_=KafkaError(KafkaError.GROUP_AUTHORIZATION_FAILED))])
    for _ in range(5):  # librdkafka reports it once; later polls return nothing
        now[0] += 1
        progress.turn([])
    assert progress.at == 1000.0
    now[0] += 1
    progress.turn([Fake(topic_="t.ingest.contacts", offset_=9)])  # the group works again
    assert progress.at == now[0]


def test_a_topic_refusal_holds_progress_until_a_record_of_that_topic_arrives() -> None:
    now = [1000.0]  # monotonic seconds, moved by the test
    progress = Progress(lambda: now[0])
    refused = KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)
    progress.turn([Fake(offset_=1), Fake(topic_="t.ingest.contacts", error_=refused)])
    now[0] += 1
    progress.turn([Fake(offset_=2)])  # another topic's records do not show it went away
    assert progress.at == 1000.0
    now[0] += 1
    progress.turn([Fake(topic_="t.ingest.contacts", offset_=3)])
    assert progress.at == now[0]


def test_a_batch_waiting_for_the_key_store_moves_the_loop_on_unless_a_refusal_stands() -> None:
    now = [1000.0]  # monotonic seconds, moved by the test
    progress = Progress(lambda: now[0])
    for _ in range(3):  # a batch in hand, retried while the store is locked: 200 s and counting
        now[0] += 100
        progress.waiting()
        assert progress.at == now[0]
    progress.turn([Fake(topic_=None, error_=KafkaError(KafkaError.GROUP_AUTHORIZATION_FAILED))])
    refused_at = progress.at
    now[0] += 100
    progress.waiting()  # waiting does not hide a refusal only an operator can fix
    assert progress.at == refused_at
