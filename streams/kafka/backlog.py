"""A tenant's unprocessed ingest records, counted without opening any of them.

The envelope's tenant is in the clear (it is not personal), so a termination can say how many
of the tenant's records the worker had not processed — those past the worker group's committed
offsets — and whether any of them is plaintext (written by a producer that does not seal).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaException, TopicPartition

from shredline.processors.validation import RECORD_TYPES
from shredline.schemas.codec import DecodeError, decode, writer_of
from shredline.streams.catalog import MARKER_HEADER
from shredline.streams.errors import KafkaOperationError
from shredline.streams.kafka.admin import committed_offsets
from shredline.streams.kafka.connection import Connection
from shredline.streams.kafka.offsets import watermarks

READ_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Backlog:
    sealed: int  # `sealed_ingest` envelopes of the tenant not yet processed
    plaintext: int  # unsealed events of the tenant not yet processed (old producers)

    @property
    def total(self) -> int:
        return self.sealed + self.plaintext


def unprocessed(conn: Connection, group: str, topics: Iterable[str], tenant: str, reader_group: str) -> Backlog:
    """Count `tenant`'s records in `topics` from `group`'s committed offsets (or the log start,
    where it committed nothing) to the current end, reading as `reader_group` (assigned, nothing
    committed). Raises `KafkaOperationError` if they cannot all be read."""
    try:
        committed = committed_offsets(conn, group)
    except KafkaException:  # no such group yet: nothing was processed
        committed = {}
    # A running worker may trim past a start offset meanwhile: those records were processed, so
    # read on from the new log start.
    options = {"group.id": reader_group, "enable.auto.commit": False, "auto.offset.reset": "earliest"}
    consumer = Consumer(conn.confluent(**options, log_level=3))
    sealed = plaintext = 0
    try:
        ends, starts = {}, []
        for topic in topics:
            for partition in consumer.list_topics(topic, timeout=30).topics[topic].partitions:
                low, high = watermarks(consumer, topic, partition)
                start = max(low, committed.get((topic, partition), low))
                if high > start:
                    ends[(topic, partition)] = high
                    starts.append(TopicPartition(topic, partition, start))
        consumer.assign(starts)
        left = sum(ends[(tp.topic, tp.partition)] - tp.offset for tp in starts)
        deadline = time.monotonic() + READ_TIMEOUT_S
        while ends:
            if time.monotonic() > deadline:
                raise KafkaOperationError(f"ingest backlog: not read to its end in {READ_TIMEOUT_S:.0f}s")
            # consume(n) waits for n records or the timeout: never ask for more than are left
            batch = consumer.consume(max(1, min(500, left)), timeout=1.0)
            if not batch:  # the worker may have trimmed a partition's rest away: all of it processed
                for where in [w for w in ends if watermarks(consumer, *w)[0] >= ends[w]]:
                    del ends[where]
            for msg in batch:
                error = msg.error()
                if error is not None:
                    raise KafkaOperationError(f"ingest backlog: {error.str()}")
                where, offset = (msg.topic() or "", msg.partition() or 0), msg.offset() or 0
                if where not in ends:
                    continue
                if offset >= ends[where]:  # reset past a trimmed rest (processed): this partition is done
                    del ends[where]
                    continue
                left -= 1
                if offset + 1 >= ends[where]:
                    del ends[where]
                value = msg.value()
                if not value or MARKER_HEADER in {header[0] for header in msg.headers() or []}:
                    continue
                kind = _tenant_record(value, tenant)
                sealed += kind == "sealed"
                plaintext += kind == "plaintext"
    finally:
        consumer.close()
    return Backlog(sealed, plaintext)


def _tenant_record(value: bytes, tenant: str) -> str | None:
    """ "sealed" or "plaintext" when `value` is an ingest record of `tenant`, else None."""
    try:
        record = writer_of(value).record
        if record != "sealed_ingest" and record not in RECORD_TYPES:
            return None
        if decode(value)[1].get("tenant") != tenant:
            return None
    except DecodeError:
        return None
    return "sealed" if record == "sealed_ingest" else "plaintext"
