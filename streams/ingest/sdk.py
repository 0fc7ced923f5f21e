"""The producer SDK for upstream workflow engines.

    with Publisher.from_settings(settings) as publisher:
        publisher.publish({"type": "message", "event_id": ..., ...})

`publish` validates (raising `InvalidEvent`, which names fields and never values), encodes
with the current schema, **seals** the encoded event to the tenant's ingest public key (HPKE,
RFC 9180; `shredline.keystore.ingest`) and queues the `sealed_ingest` envelope; batches go out
in the background. A tenant without a public key (never provisioned, or terminated) is refused
with `NoIngestKey`, an `InvalidEvent` on `tenant`. Keys come from `control.tenants` by default
(`ControlDirectory`) or are given explicitly (`keys=StaticKeys([...])`).

Nothing on an ingest topic is personal in the clear: the value is the envelope (tenant,
generation, KEM, ciphertext), there are no headers, and the Kafka key is `tenant:bucket`, the
bucket being the first byte of SHA-256 over the tenant and conversation (or contact, or
execution) id. One conversation therefore stays on one partition, in order, while the key
reveals at most 8 bits of an id: conversation and contact ids can be phone numbers, and an
unkeyed hash of a phone number is reversed by trying them all, whereas 8 bits only say which
of 256 classes, shared by every other id in it, the id falls in.

Delivery failures surface as `DeliveryError` on the next call and, at the latest, when the
block exits, which flushes. The producer is idempotent with `acks=all`, over TLS.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from shredline.keystore.ingest import DEFAULT_KEM, IngestPublicKey, Kem
from shredline.processors.validation import ValidEvent, validate
from shredline.schemas.codec import encode
from shredline.streams.acl import AccessRole
from shredline.streams.catalog import topic_name
from shredline.streams.errors import KafkaOperationError
from shredline.streams.ingest.directory import ControlDirectory, IngestKeySource
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
_BUCKET_LABEL = b"shredline ingest bucket v1\x00"


def record_key(valid: ValidEvent) -> bytes:
    """The Kafka key of an ingest record: `tenant:bucket` (two hex digits, 256 buckets), the
    bucket being the first byte of SHA-256(label, tenant:conversation-or-contact-or-execution id)."""
    bucket = hashlib.sha256(_BUCKET_LABEL + valid.key).digest()[0]
    return f"{valid.value['tenant']}:{bucket:02x}".encode()


def sealed_envelope(key: IngestPublicKey, record: str, value: dict[str, Any], topic: str) -> bytes:
    """The `sealed_ingest` bytes of one validated event: `value` Avro-encoded as `record`, sealed
    to `key` (HPKE, bound to the full `topic` name) and wrapped with the key's tenant, generation and KEM."""
    envelope = {
        "tenant": key.tenant,
        "generation": key.generation,
        "kem": key.kem.value,
        "ciphertext": key.seal(encode(record, value), topic),
    }
    return encode("sealed_ingest", envelope)


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
        keys: IngestKeySource | None = None,
        kem: Kem = DEFAULT_KEM,
    ) -> None:
        """`keys`: where public keys come from (default: `control.tenants` under the prefix);
        `kem`: which of each tenant's key pairs to seal to (X25519, or the hybrid MLKEM768_X25519)."""
        self._prefix = topic_prefix
        self._clock = clock
        self._keys = keys if keys is not None else ControlDirectory(conn, topic_prefix)
        self._kem = kem
        self._producer = Producer(conn.confluent(**{**PRODUCER_DEFAULTS, **(producer_config or {})}))
        self.delivered = 0
        self.failed = 0
        self._first_error: KafkaError | None = None
        self._reported_failures = 0

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> Publisher:
        return cls(
            resolve_connection(settings, AccessRole.UPSTREAM), settings.topic_prefix, kem=settings.ingest_kem, **kwargs
        )

    def publish(self, event: object) -> ValidEvent:
        """Validate, encode, seal and queue one event; returns what was queued (before sealing).
        Raises `InvalidEvent` (`NoIngestKey` for a tenant without a public key)."""
        self._raise_failures()
        valid = validate(event, self._clock())
        key = self._keys.public_key(valid.value["tenant"], self._kem)
        topic = topic_name(self._prefix, valid.role)
        payload = sealed_envelope(key, valid.record, valid.value, topic)
        kafka_key = record_key(valid)
        while True:
            try:
                self._producer.produce(topic, value=payload, key=kafka_key, on_delivery=self._on_delivery)
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
        try:
            if exc_type is None:
                self.flush()
            else:  # still deliver what was valid, but never mask the original error
                self._producer.flush(FLUSH_TIMEOUT_S)
        finally:
            self._keys.close()
