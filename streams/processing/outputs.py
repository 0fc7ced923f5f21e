"""The worker's one producer for everything the splitter writes: sealed buffers, metrics, logs,
tombstones, dead letters.

A librdkafka (confluent-kafka) producer, idempotent with `acks=all`, so a batch costs a few µs per
record instead of a Faust send each. `send` is blocking and runs on the splitter's thread: it
returns only when every record of the batch is acknowledged or refused for good, so the split
loop, which commits the batch's input offsets after that, commits nothing whose outputs are not
durable or dead-lettered (at-least-once). Records are keyed as before and partitioned with
murmur2, Kafka's default partitioner, so a key lands on the partition it always did (`buffer
read` finds a conversation's partition from its key).

Each failed delivery has a `fate`:

- transient (broker away, timeouts, leader moving; anything not named below): sent again after
  RETRY_S, only the outputs that failed and the later ones under the same key (`resend`);
- the worker may not write the topic (an authorization refusal): sent again the same way, with an
  ERROR line naming the topic and Kafka's error, since only an operator can end it (the worker's
  watchdog restarts a worker stuck on it; dead-lettering would silently lose everything);
- refused for this record (too large, invalid): tried once more alone, since librdkafka fails a
  whole record batch for the one record the broker refuses; refused again, `send` returns it and
  the splitter dead-letters its source record, so one poison record cannot stall a partition;
- fatal (the idempotent producer cannot go on): `KafkaOperationError`, with Kafka's code; the
  worker exits and its supervisor restarts it.
"""

from __future__ import annotations

import enum
import logging
import time
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from typing import Protocol

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from shredline.streams.catalog import topic_name
from shredline.streams.errors import KafkaOperationError
from shredline.streams.kafka.admin import AUTHORIZATION_FAILED, error_of
from shredline.streams.kafka.connection import Connection
from shredline.streams.processing.splitter import Output, Refusals

log = logging.getLogger("shredline.outputs")
FLUSH_S = 1.0
RETRY_S = 0.5
Delivered = Callable[[KafkaError | None, Message], None]  # librdkafka's delivery report callback

#: What a broker (or, for MSG_SIZE_TOO_LARGE over `message.max.bytes`, the producer itself) refuses
#: of one record whoever sends it and however often: too large, or invalid.
REFUSED = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE, KafkaError.INVALID_RECORD})


class Fate(enum.Enum):
    """What `Outputs.send` does about an output that was not delivered."""

    RETRY = "retry"  # transient: send it again
    UNAUTHORIZED = "unauthorized"  # the worker may not write there: send it again, log an ERROR
    REFUSED = "refused"  # this record can never be written: its source is dead-lettered
    FATAL = "fatal"  # the producer is unusable: raise


def fate(error: KafkaError) -> Fate:
    """The fate of an output that `error` (a delivery report's, or `produce`'s own) kept from the
    broker. Delivery reports carry no retriable flag (confluent-kafka builds them from the bare
    code, after librdkafka has retried what it could), so besides `fatal()` and `retriable()` the
    codes decide, and an unknown one is retried: a retry loses nothing, and the watchdog ends a
    stall."""
    if error.fatal() or error.code() == KafkaError._FATAL:
        return Fate.FATAL
    if error.code() in AUTHORIZATION_FAILED:
        return Fate.UNAUTHORIZED
    if error.retriable() or error.code() not in REFUSED:
        return Fate.RETRY
    return Fate.REFUSED


def resend(outputs: Sequence[Output], failed: Collection[int]) -> list[int]:
    """The indexes of `outputs` to send again once those in `failed` were not delivered, in order:
    those, and every later output under the same role and key as one of them (a contact's
    tombstone after its upsert), so each key's last write is still the batch's last. Keyless
    outputs (dead letters) have no order to keep."""
    again: list[int] = []
    keys: set[tuple[str, bytes]] = set()
    for index, (role, key, _value) in enumerate(outputs):
        if index in failed or (key is not None and (role, key) in keys):
            again.append(index)
            if key is not None:
                keys.add((role, key))
    return again


class Producing(Protocol):
    """What `Outputs` uses of a confluent-kafka `Producer` (a stand-in in tests)."""

    def produce(
        self, topic: str, value: bytes | None = None, key: bytes | None = None, *, on_delivery: Delivered | None = None
    ) -> None: ...
    def poll(self, timeout: float = -1) -> int: ...
    def flush(self, timeout: float = -1) -> int: ...


class Outputs:
    """`producer` and `sleep` (seconds) stand in for the real ones in tests; `conn` is then unused."""

    def __init__(
        self,
        conn: Connection,
        prefix: str,
        linger_ms: int = 5,
        *,
        producer: Producing | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.prefix = prefix
        self._producer: Producing = producer or Producer(
            conn.confluent(
                **{
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": linger_ms,
                    "partitioner": "murmur2_random",
                    "log_level": 3,
                }
            )
        )
        self._sleep = sleep
        self._topics: dict[str, str] = {}

    def _topic(self, role: str) -> str:
        topic = self._topics.get(role)
        if topic is None:
            topic = self._topics[role] = topic_name(self.prefix, role)
        return topic

    def send(self, outputs: Sequence[Output]) -> Refusals:
        """Write `outputs` in order; returns once each is acknowledged or refused for good, with
        the index of each refused one and Kafka's error name (e.g. "MSG_SIZE_TOO_LARGE"). What
        failed otherwise is sent again every RETRY_S until delivered (duplicates are harmless:
        de-dup tokens, event refs). Raises `KafkaOperationError` (Kafka's code on it) when the
        producer fails fatally."""
        refused: Refusals = {}
        pending = list(range(len(outputs)))
        while pending:
            failed = self._deliver(outputs, pending)
            if len(pending) > 1:  # a batch-mate may be what the broker refused: ask for each alone
                for index in [i for i, error in failed.items() if fate(error) is Fate.REFUSED]:
                    del failed[index]
                    failed.update(self._deliver(outputs, [index]))
            refused.update({i: error.name() for i, error in failed.items() if fate(error) is Fate.REFUSED})
            again = {i: error for i, error in failed.items() if i not in refused}
            if not again:
                break
            self._complain(outputs, again)
            self._sleep(RETRY_S)
            pending = resend(outputs, again)
        return refused

    def _deliver(self, outputs: Sequence[Output], indexes: Sequence[int]) -> dict[int, KafkaError]:
        """Produce the outputs at `indexes`, in order, and wait until every one is acknowledged or
        failed; returns the error of each that failed (`fate` says what next), and raises on a
        fatal one."""
        failed: dict[int, KafkaError] = {}

        def noting(index: int) -> Delivered:
            def delivered(error: KafkaError | None, _message: Message) -> None:
                if error is not None:
                    failed[index] = error

            return delivered

        for index in indexes:
            role, key, value = outputs[index]
            refusal = self._produce(self._topic(role), key, value, noting(index))
            if refusal is not None:
                failed[index] = refusal
        try:
            while self._producer.flush(FLUSH_S) > 0:
                log.warning("outputs: waiting for the broker to acknowledge the batch")
        except KafkaException as exc:  # confluent-kafka raises a fatal producer error from flush
            raise fatal(error_of(exc)) from None
        for error in failed.values():
            if fate(error) is Fate.FATAL:
                raise fatal(error)
        return failed

    def _produce(self, topic: str, key: bytes | None, value: bytes | None, delivered: Delivered) -> KafkaError | None:
        """Queue one record; returns the error when the producer refuses it outright (too large
        for its `message.max.bytes`, a topic it knows it may not write)."""
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, on_delivery=delivered)
                return None
            except BufferError:  # the local queue is full: let it drain
                self._producer.poll(0.1)
            except KafkaException as exc:
                return error_of(exc)

    def _complain(self, outputs: Sequence[Output], again: dict[int, KafkaError]) -> None:
        """One line per topic and error of the outputs to send again (the repeat filter keeps one
        per template and 10 s)."""
        seen = Counter((self._topic(outputs[i][0]), error.name(), fate(error)) for i, error in again.items())
        for (topic, name, what), count in seen.items():
            if what is Fate.UNAUTHORIZED:
                log.error(
                    "outputs: the broker refuses the worker %s (%s): %d outputs wait until an operator grants it "
                    "(shredline acl apply)",
                    topic,
                    name,
                    count,
                )
            else:
                log.warning("outputs: %d outputs not delivered to %s (%s); sending them again", count, topic, name)

    def close(self) -> None:
        self._producer.flush(10)


def fatal(error: KafkaError) -> KafkaOperationError:
    """The error `send` raises when the producer cannot go on: Kafka's code, its name only (a
    fatal error's text can name records)."""
    return KafkaOperationError(f"outputs: the producer failed for good ({error.name()})", code=error.code())
