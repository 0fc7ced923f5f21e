"""The audit trail on `audit.events`: hash-chained, checkpoint-signed, never personal data.

Records start in the key store's outbox, written in the same transaction as the change they
describe (`KeyStore.record` and every key change), and `relay` moves them onto the topic. Relays
are serialised by a lock file beside the key store, so one chain grows in one order however many
processes (worker, CLI) share the store. Each record carries `seq` (equal to its offset), the
SHA-256 of the previous record and its own hash; the last record of every relay is a checkpoint
signed with the provider's Ed25519 key. `verify` walks the chain and names the first bad record.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from shredline.keystore.keys import Keys
from shredline.keystore.store import AuditEntry, KeyStore
from shredline.processors.roles import Role
from shredline.schemas.codec import DecodeError, decode, encode
from shredline.schemas.errors import ShredlineError
from shredline.streams.acl import Group
from shredline.streams.catalog import topic_name
from shredline.streams.errors import KafkaOperationError
from shredline.streams.kafka.connection import Connection
from shredline.streams.kafka.produce import Record, produce_and_wait
from shredline.streams.operations.signing import export_public_key, provider_key
from shredline.streams.settings import Settings

GENESIS = bytes(32)
RELAY_BATCH = 2000
DUPLICATE_WINDOW = 1000  # records read back to skip outbox entries a crashed relay already sent
_TRANSIENT = {
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError._TRANSPORT,
    KafkaError._TIMED_OUT,
}


class AuditError(ShredlineError):
    pass


def record_hash(record: dict[str, Any]) -> bytes:
    """SHA-256 over prev_hash and the record's other fields (canonical JSON, times in ms)."""
    body = {k: v for k, v in record.items() if k not in {"hash", "signature"}}
    body["at"] = int(body["at"].timestamp() * 1000)
    body["prev_hash"] = body["prev_hash"].hex()
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).digest()


def outbox_marker(store_id: str, entry_id: int) -> str:
    return f"{store_id}:{entry_id}"


def chain(
    last: dict[str, Any] | None, entries: Sequence[AuditEntry], store_id: str, signer: Ed25519PrivateKey
) -> list[dict[str, Any]]:
    """The records that continue the chain after `last`; the final one is a signed checkpoint."""
    records: list[dict[str, Any]] = []
    for entry in entries:
        previous = records[-1] if records else last
        record: dict[str, Any] = {
            "seq": 0 if previous is None else previous["seq"] + 1,
            "at": dt.datetime.fromtimestamp(entry.at, dt.UTC),
            "actor": entry.actor,
            "action": entry.action,
            "tenant": entry.tenant,
            "subject": entry.subject,
            "details": {**entry.details, "outbox": outbox_marker(store_id, entry.id)},
            "prev_hash": GENESIS if previous is None else previous["hash"],
            "signature": None,
        }
        record["hash"] = record_hash(record)
        records.append(record)
    if records:
        records[-1]["signature"] = signer.sign(records[-1]["hash"])
    return records


@dataclass(frozen=True)
class Verdict:
    records: int
    checkpoints: int
    unsigned_tail: int  # records after the last checkpoint: intact as a chain, not yet signed
    bad_seq: int | None = None  # the first bad record's position in the topic (its offset)
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None


def _problem(record: dict[str, Any], previous: dict[str, Any] | None, public_key: Ed25519PublicKey) -> str | None:
    if "undecodable" in record:
        return f"not an audit record ({record['undecodable']})"
    expected_seq = 0 if previous is None else previous["seq"] + 1
    if record["seq"] != expected_seq:
        return f"seq {record['seq']} where {expected_seq} was due: a record was removed, inserted or moved"
    if record["prev_hash"] != (GENESIS if previous is None else previous["hash"]):
        return "prev_hash does not match the record before it: a record was removed, inserted or moved"
    if record_hash(record) != record["hash"]:
        return "hash does not match the record's content: it was changed"
    if record["signature"] is not None:
        try:
            public_key.verify(record["signature"], record["hash"])
        except InvalidSignature:
            return "checkpoint signature is not the provider's"
    return None


def verify(records: Sequence[dict[str, Any]], public_key: Ed25519PublicKey) -> Verdict:
    """Walk the chain in topic order; stop at the first record that breaks it."""
    checkpoints, since_checkpoint = 0, 0
    previous: dict[str, Any] | None = None
    for position, record in enumerate(records):
        reason = _problem(record, previous, public_key)
        if reason is not None:
            return Verdict(position, checkpoints, since_checkpoint, position, reason)
        since_checkpoint += 1
        if record["signature"] is not None:
            checkpoints, since_checkpoint = checkpoints + 1, 0
        previous = record
    return Verdict(len(records), checkpoints, since_checkpoint)


# -- Kafka and the lock ----------------------------------------------------------------------------
def _watermarks(consumer: Consumer, topic: str, attempts: int = 20) -> tuple[int, int]:
    """Retries while a just-created topic's metadata is still propagating to the broker."""
    for attempt in range(attempts):
        try:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
            return int(low), int(high)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            transient = isinstance(error, KafkaError) and (error.retriable() or error.code() in _TRANSIENT)
            if attempt == attempts - 1 or not transient:
                raise KafkaOperationError(f"audit: cannot read {topic}: {exc}") from None
            time.sleep(0.5)
    raise AssertionError("unreachable")


_readers: dict[tuple[Connection, str], Consumer] = {}


def _reader(conn: Connection, prefix: str) -> Consumer:
    """One per process, broker and environment, assigned anew for each read (nothing committed)."""
    if (conn, prefix) not in _readers:
        _readers[(conn, prefix)] = Consumer(
            conn.confluent(
                **{
                    "group.id": topic_name(prefix, Group.AUDIT_READER),
                    "enable.auto.commit": False,
                    "fetch.wait.max.ms": 10,
                    "log_level": 3,
                }
            )
        )
    return _readers[(conn, prefix)]


def close_reader() -> None:
    """Close the cached readers before their broker goes away (e.g. at the end of a test session)."""
    for consumer in _readers.values():
        consumer.close()
    _readers.clear()


def read_trail(conn: Connection, prefix: str, last: int | None = None) -> list[dict[str, Any]]:
    """Records of the trail in topic order: all of them, or the `last` few. A record that cannot be
    decoded as an audit event is returned as {"seq": None, ...} so `verify` flags it."""
    topic = topic_name(prefix, Role.AUDIT_EVENTS)
    consumer = _reader(conn, prefix)
    low, high = _watermarks(consumer, topic)
    start = low if last is None else max(low, high - last)
    if high <= start:
        return []
    consumer.assign([TopicPartition(topic, 0, start)])
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + 60
    try:
        while len(out) < high - start:
            if time.monotonic() > deadline:
                raise KafkaOperationError(f"audit: read {len(out)} of {high - start} records of {topic}")
            # consume(n) waits until n records or the timeout: never ask for more than remain
            for msg in consumer.consume(min(1000, high - start - len(out)), 1.0):
                if msg.error() is not None:
                    continue
                try:
                    out.append(decode(msg.value() or b"", expect="audit_event", canonical=True)[1])
                except DecodeError as exc:
                    out.append({"seq": None, "undecodable": str(exc)})
    finally:
        consumer.unassign()
    return out


@contextlib.contextmanager
def relay_lock(store_path: Path) -> Iterator[None]:
    with open(store_path.with_name(store_path.name + ".audit-lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_settled: set[str] = set()  # stores whose last relay in this process finished: nothing of theirs is in doubt


def relay(conn: Connection, prefix: str, store: KeyStore, store_path: Path, signer: Ed25519PrivateKey) -> int:
    """Move the store's pending audit records onto audit.events; returns how many were appended.
    Safe to crash anywhere: entries are dropped from the outbox only once the broker has them. Only
    a relay that died between sending and dropping leaves entries in doubt, so the first relay of a
    process (and the one after a failure) reads back the last DUPLICATE_WINDOW records and skips
    entries already there, recognised by their outbox marker; later ones read just the last record."""
    total = 0
    with relay_lock(store_path):
        while entries := store.pending_audit(RELAY_BATCH):
            settled = store.store_id in _settled
            _settled.discard(store.store_id)
            tail = read_trail(conn, prefix, last=1 if settled else DUPLICATE_WINDOW)
            if tail and tail[-1].get("seq") is None:  # junk at the end: chain on from the last real record
                tail = read_trail(conn, prefix, last=DUPLICATE_WINDOW)
            mine = f"{store.store_id}:"
            sent = {
                int(m.split(":", 1)[1])
                for r in tail
                if (m := (r.get("details") or {}).get("outbox", "")).startswith(mine)
            }
            fresh = [e for e in entries if e.id not in sent]
            last = next((r for r in reversed(tail) if r.get("seq") is not None), None)
            records = chain(last, fresh, store.store_id, signer)
            topic = topic_name(prefix, Role.AUDIT_EVENTS)
            produce_and_wait(
                conn, [Record(topic, encode("audit_event", r), partition=0) for r in records], "audit records"
            )
            store.drop_audit(entries[-1].id)
            _settled.add(store.store_id)
            total += len(records)
    return total


class Trail:
    """What commands and the worker use: record an audited action, then wait until it is on the
    topic (an audited action must not proceed unrecorded)."""

    def __init__(self, conn: Connection, keys: Keys, settings: Settings) -> None:
        self.conn, self.keys, self.settings = conn, keys, settings
        self.prefix = settings.topic_prefix
        self._signer: Ed25519PrivateKey | None = None

    @property
    def actor(self) -> str:
        return self.keys.store.actor

    @property
    def signer(self) -> Ed25519PrivateKey:
        if self._signer is None:
            self._signer = provider_key(self.keys)
            export_public_key(self.settings.data_dir, self._signer)  # for `audit verify` and auditors
        return self._signer

    def record(
        self, action: str, tenant: str | None = None, subject: str | None = None, details: dict[str, str] | None = None
    ) -> None:
        self.keys.store.record(action, tenant, subject, details)
        self.flush()

    def flush(self) -> int:
        signer = self.signer  # before the lock: first use creates the key (itself an audited change)
        return relay(self.conn, self.prefix, self.keys.store, self.settings.key_store_path, signer)
