"""Where the SDK finds tenants' ingest public keys: the control topic, or keys given explicitly.

`ControlDirectory` reads `control.tenants` (one partition, kept forever) from its start once,
then only what was appended since: `PROVISIONED` and `INGEST_KEY` events set a tenant's keys
(their generation replaces any earlier one), `TERMINATED` removes them. It reads again when a
tenant has no key here and, for others, when its last read is older than `max_age_s`, so a
publisher stops sealing for a terminated tenant within that bound. `StaticKeys` holds keys given
explicitly (e.g. `shredline tenant public-key` lines) and never changes them.

Either answers `public_key(tenant, kem)` or raises `NoIngestKey`, an `InvalidEvent` on the
`tenant` field, so `shredline publish` reports it per line like any other rejection.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from shredline.keystore.ingest import IngestPublicKey, Kem
from shredline.processors.roles import Role
from shredline.processors.validation import FieldError, InvalidEvent
from shredline.schemas.codec import DecodeError, decode
from shredline.streams.acl import Group
from shredline.streams.catalog import topic_name
from shredline.streams.errors import KafkaOperationError
from shredline.streams.kafka.connection import Connection
from shredline.streams.kafka.offsets import end_offset

log = logging.getLogger("shredline.ingest")
MAX_AGE_S = 5.0
READ_TIMEOUT_S = 30.0


class NoIngestKey(InvalidEvent):
    """The event's tenant has no ingest public key here: never provisioned, or terminated."""

    def __init__(self) -> None:
        super().__init__([FieldError("tenant", "not provisioned or terminated (no ingest public key)")])


class IngestKeySource(Protocol):
    """What the SDK needs: the public key to seal a tenant's event to."""

    def public_key(self, tenant: str, kem: Kem) -> IngestPublicKey:
        """The tenant's current key for `kem`, or `NoIngestKey`."""
        ...

    def close(self) -> None: ...


class StaticKeys:
    """Keys given explicitly; for tenants it does not hold it raises `NoIngestKey`."""

    def __init__(self, keys: Iterable[IngestPublicKey]) -> None:
        self._keys = {(k.tenant, k.kem): k for k in keys}

    def public_key(self, tenant: str, kem: Kem) -> IngestPublicKey:
        key = self._keys.get((tenant, kem))
        if key is None:
            raise NoIngestKey()
        return key

    def close(self) -> None:
        pass


def keys_of(event: dict[str, Any]) -> list[IngestPublicKey] | None:
    """What one `tenant_control` event says about its tenant's keys: the new keys (PROVISIONED,
    INGEST_KEY), an empty list (TERMINATED: none), or None (nothing about keys). Keys that do
    not parse are skipped with a warning."""
    kind = event["kind"]
    if kind == "TERMINATED":
        return []
    if kind not in {"PROVISIONED", "INGEST_KEY"}:
        return None
    out = []
    for item in event.get("ingest_keys") or []:
        try:
            out.append(IngestPublicKey(event["tenant"], event["generation"], Kem(item["kem"]), item["public_key"]))
        except ValueError as exc:
            log.warning("control: skipped an ingest key of %s: %s", event["tenant"], exc)
    return out


class ControlDirectory:
    """Tenants' ingest public keys as `control.tenants` announces them (see the module doc)."""

    def __init__(
        self,
        conn: Connection,
        topic_prefix: str,
        *,
        max_age_s: float = MAX_AGE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._conn, self._topic = conn, topic_name(topic_prefix, Role.CONTROL_TENANTS)
        self._group = topic_name(topic_prefix, Group.UPSTREAM)  # assigned, never committed
        self._max_age_s, self._clock = max_age_s, clock
        self._consumer: Consumer | None = None
        self._next: dict[int, int] = {}  # partition -> next offset to read
        self._keys: dict[str, dict[Kem, IngestPublicKey]] = {}
        self._generation: dict[str, int] = {}
        self._read_at: float | None = None

    def public_key(self, tenant: str, kem: Kem) -> IngestPublicKey:
        known = self._keys.get(tenant)
        if not known or self._read_at is None or self._clock() - self._read_at > self._max_age_s:
            self.refresh()
            known = self._keys.get(tenant)
        key = (known or {}).get(kem)
        if key is None:
            raise NoIngestKey()
        return key

    def refresh(self) -> None:
        """Read what was appended to the control topic since the last read, up to its current end."""
        try:
            self._read_to_end()
        except KafkaException as exc:
            raise KafkaOperationError(f"ingest keys: cannot read {self._topic} ({exc.args[0].str()})") from None
        self._read_at = self._clock()

    def _read_to_end(self) -> None:
        consumer = self._open()
        ends = {}
        for partition in self._next:
            high = end_offset(consumer, self._topic, partition)  # ~0.5 s each if asked of the broker
            if high > self._next[partition]:
                ends[partition] = high
        deadline = self._clock() + READ_TIMEOUT_S
        while ends:
            if self._clock() > deadline:
                raise KafkaOperationError(f"ingest keys: {self._topic} not read to its end in {READ_TIMEOUT_S:.0f}s")
            # consume(n) waits for n records or the timeout: never ask for more than are left
            left = sum(end - self._next[p] for p, end in ends.items())
            for msg in consumer.consume(max(1, min(500, left)), timeout=1.0):
                if msg.error() is not None:
                    raise KafkaException(msg.error())
                partition, offset = msg.partition() or 0, msg.offset() or 0
                self._next[partition] = offset + 1
                self.apply(msg.value())
                if partition in ends and offset + 1 >= ends[partition]:
                    del ends[partition]

    def _open(self) -> Consumer:
        if self._consumer is None:
            consumer = Consumer(
                self._conn.confluent(**{"group.id": self._group, "enable.auto.commit": False, "log_level": 3})
            )
            metadata = consumer.list_topics(self._topic, timeout=10).topics.get(self._topic)
            if metadata is None or metadata.error is not None or not metadata.partitions:
                consumer.close()
                raise KafkaOperationError(f"ingest keys: {self._topic} does not exist (run `shredline topics apply`)")
            self._next = dict.fromkeys(metadata.partitions, 0)
            consumer.assign([TopicPartition(self._topic, p, OFFSET_BEGINNING) for p in metadata.partitions])
            self._consumer = consumer
        return self._consumer

    def apply(self, value: bytes | None) -> None:
        """Take one `control.tenants` record into account (records must come in topic order)."""
        if not value:
            return
        try:
            _record, event = decode(value, expect="tenant_control")
        except DecodeError as exc:
            log.warning("control: skipped a record: %s", exc.reason)
            return
        keys = keys_of(event)
        tenant, generation = str(event["tenant"]), int(event["generation"])
        if keys is None or generation < self._generation.get(tenant, 0):
            return
        self._generation[tenant] = generation
        self._keys[tenant] = {k.kem: k for k in keys}

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
