"""The producer SDK for upstream workflow engines.

    with Publisher.from_settings(settings) as publisher:
        publisher.publish({"type": "message", "event_id": ..., ...})

`publish` validates (raising `InvalidEvent`, which names fields and never values), encodes
with the current schema and queues the record; batches go out in the background. Delivery
failures surface as `DeliveryError` on the next call and, at the latest, when the block exits,
which flushes. The producer is idempotent with `acks=all`, over TLS.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from shredline.processors.validation import ValidEvent, validate
from shredline.schemas.codec import encode
from shredline.streams.acl import AccessRole
from shredline.streams.catalog import topic_name
from shredline.streams.errors import KafkaOperationError
from shredline.streams.kafka.connection import Connection, resolve_connection
from shredline.streams.settings import Settings

FLUSH_TIMEOUT_S = 60.0
PRODUCER_DEFAULTS: dict[str, Any] = {
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 20,
    "compression.type": "lz4",
    "log_level": 3,
}


class DeliveryError(KafkaOperationError):
    """The broker did not take some records; `failed` counts them."""

    def __init__(self, message: str, *, failed: int, code: int | None = None) -> None:
        super().__init__(message, code=code)
        self.failed = failed


class Publisher:
    def __init__(
        self,
        conn: Connection,
        topic_prefix: str = "",
        *,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        producer_config: Mapping[str, Any] | None = None,
    ) -> None:
        self._prefix = topic_prefix
        self._clock = clock
        self._producer = Producer(conn.confluent(**{**PRODUCER_DEFAULTS, **(producer_config or {})}))
        self.delivered = 0
        self.failed = 0
        self._first_error: KafkaError | None = None
        self._reported_failures = 0

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> Publisher:
        return cls(resolve_connection(settings, AccessRole.UPSTREAM), settings.topic_prefix, **kwargs)

    def publish(self, event: object) -> ValidEvent:
        """Validate, encode and queue one event; returns what was queued."""
        self._raise_failures()
        valid = validate(event, self._clock())
        payload = encode(valid.record, valid.value)
        topic = topic_name(self._prefix, valid.role)
        while True:
            try:
                self._producer.produce(topic, value=payload, key=valid.key, on_delivery=self._on_delivery)
                break
            except BufferError:  # local queue full: let deliveries drain, then retry
                self._producer.poll(0.5)
        self._producer.poll(0)
        return valid

    def flush(self, timeout_s: float = FLUSH_TIMEOUT_S) -> None:
        """Wait for every queued record; raise if any was not delivered."""
        left = self._producer.flush(timeout_s)
        if left:
            raise DeliveryError(f"{left} records still queued after {timeout_s:.0f}s", failed=left)
        self._raise_failures()

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is None:
            self.delivered += 1
            return
        self.failed += 1
        self._first_error = self._first_error or err

    def _raise_failures(self) -> None:
        if self.failed > self._reported_failures:
            err = self._first_error
            new = self.failed - self._reported_failures
            self._reported_failures = self.failed
            detail = err.str() if err is not None else "unknown error"
            raise DeliveryError(
                f"{new} records not delivered: {detail}", failed=new, code=err.code() if err is not None else None
            )

    def __enter__(self) -> Publisher:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.flush()
        else:  # still deliver what was valid, but never mask the original error
            self._producer.flush(FLUSH_TIMEOUT_S)
