"""The audit trail on `audit.events`: hash-chained, every record signed, head anchored, never personal data.

Records start in the key store's outbox, written in the same transaction as the change they
describe (`KeyStore.record` and every key change), and `relay` moves them onto the topic. Relays
are serialised by a lock file beside the key store, so one chain grows in one order however many
processes (worker, CLI) share the store. Each record carries `seq` (its place in the chain, from
0), the SHA-256 of the previous record, its own hash and the provider's Ed25519 signature over
that hash. The store anchors the chain's head (seq, hash) in the transaction that drops the
relayed entries, so a cut tail shows (`verify` with `anchors`); certificates carry the head too.

The relay extends only a tail it can prove is its own: the anchored head, then signed records
chained from it (a relay that died after sending). It never chains on anything else after the
head (a record someone else wrote, a replayed one) nor past a head that is missing from the
topic: it appends a signed alarm record chained from the last record it can prove, then the
outbox entries after it, and logs an error. It keeps going rather than refusing, since refusing
would let anyone who can write to the topic stop every audited action; the foreign record stays
on the topic, where `verify` names it, and so does the alarm.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from shredline.keystore.keys import Keys
from shredline.keystore.locking import LockTimeout
from shredline.keystore.store import AUDIT_RELAY, AuditEntry, AuditHead, KeyStore
from shredline.processors.roles import Role
from shredline.schemas.codec import DecodeError, decode, encode
from shredline.schemas.errors import ShredlineError
from shredline.streams.acl import Group
from shredline.streams.catalog import topic_name
from shredline.streams.errors import KafkaOperationError
from shredline.streams.kafka.connection import Connection
from shredline.streams.kafka.offsets import watermarks
from shredline.streams.kafka.produce import Record, produce_and_wait
from shredline.streams.operations.signing import export_public_key, provider_key
from shredline.streams.settings import Settings

log = logging.getLogger("shredline.audit")
GENESIS = bytes(32)
RELAY_BATCH = 2000
READ_STALL_S = 60.0  # a read of the trail fails when it has not advanced for this long
RELAY_LOCK_WAIT_S = 120.0  # far longer than a relay takes (each of its reads gives up after 60 s stalled)
RELAY_LOCK_TELL_S = 5.0
TAIL_WINDOW = RELAY_BATCH + 2  # the head, a dead relay's batch and its alarm: where the head must be
ALARM = "audit.alarm."
TAIL_NOT_OURS = ALARM + "tail-not-ours"  # records after the head that the provider did not write
HEAD_MISSING = ALARM + "head-missing"  # the anchored head is not on the topic: the trail was cut
Positioned = tuple[int, dict[str, Any]]  # (offset on audit.events, decoded record)


class AuditError(ShredlineError):
    pass


def record_hash(record: dict[str, Any]) -> bytes:
    """SHA-256 over prev_hash and the record's other fields (canonical JSON, times in ms)."""
    body = {k: v for k, v in record.items() if k not in {"hash", "signature"}}
    body["at"] = int(body["at"].timestamp() * 1000)
    body["prev_hash"] = body["prev_hash"].hex()
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).digest()


def head_of(record: dict[str, Any]) -> AuditHead:
    return AuditHead(record["seq"], record["hash"])


def outbox_marker(store_id: str, entry_id: int) -> str:
    return f"{store_id}:{entry_id}"


def _link(previous: AuditHead | None, fields: dict[str, Any], signer: Ed25519PrivateKey) -> dict[str, Any]:
    """A signed record with `fields` (at, actor, action, tenant, subject, details) after `previous`."""
    record: dict[str, Any] = {
        "seq": 0 if previous is None else previous.seq + 1,
        **fields,
        "prev_hash": GENESIS if previous is None else previous.hash,
        "signature": None,
    }
    record["hash"] = record_hash(record)
    record["signature"] = signer.sign(record["hash"])
    return record


def chain(
    last: AuditHead | None, entries: Sequence[AuditEntry], store_id: str, signer: Ed25519PrivateKey
) -> list[dict[str, Any]]:
    """The signed records that continue the chain after `last` (None: from the genesis)."""
    records: list[dict[str, Any]] = []
    for entry in entries:
        fields = {
            "at": dt.datetime.fromtimestamp(entry.at, dt.UTC),
            "actor": entry.actor,
            "action": entry.action,
            "tenant": entry.tenant,
            "subject": entry.subject,
            "details": {**entry.details, "outbox": outbox_marker(store_id, entry.id)},
        }
        records.append(_link(head_of(records[-1]) if records else last, fields, signer))
    return records


def alarm(
    last: AuditHead | None, action: str, details: dict[str, str], actor: str, signer: Ed25519PrivateKey
) -> dict[str, Any]:
    """The signed alarm record the relay appends, after `last`, instead of chaining on a bad tail."""
    fields = {
        "at": dt.datetime.now(dt.UTC),
        "actor": actor,
        "action": action,
        "tenant": None,
        "subject": None,
        "details": details,
    }
    return _link(last, fields, signer)


# -- verification ----------------------------------------------------------------------------------
def not_the_providers(record: dict[str, Any], public_key: Ed25519PublicKey) -> str | None:
    """Why `record` is not one the provider wrote as it stands; None when it is."""
    if "undecodable" in record:
        return f"not an audit record ({record['undecodable']})"
    claim = f"the record claiming seq {record['seq']}"
    if record_hash(record) != record["hash"]:
        return f"{claim}: hash does not match the record's content: it was changed"
    if record["signature"] is None:
        return f"{claim} is not signed: the provider did not write it"
    try:
        public_key.verify(record["signature"], record["hash"])
    except (InvalidSignature, ValueError):
        return f"{claim}: signature is not the provider's"
    return None


def unlinked(record: dict[str, Any], previous: AuditHead | None) -> str | None:
    """Why a provider's record does not follow `previous` in the chain; None when it does."""
    expected = 0 if previous is None else previous.seq + 1
    if record["seq"] != expected:
        return f"seq {record['seq']} where {expected} was due: a record was removed, inserted or moved"
    if record["prev_hash"] != (GENESIS if previous is None else previous.hash):
        return f"seq {record['seq']}: prev_hash does not match the record before it: a record was removed or moved"
    return None


@dataclass(frozen=True)
class Finding:
    offset: int | None  # where on audit.events; None for a missing anchored head
    reason: str  # one line, never record content beyond seq numbers and actions


@dataclass(frozen=True)
class Verdict:
    records: int  # records read from the topic
    chained: int  # of which the provider's chain: signed, unchanged, hash-linked
    head: AuditHead | None  # the chain's last record
    findings: tuple[Finding, ...]  # records not the provider's, breaks, alarms, anchors not reached

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def summary(self) -> str:
        head = "empty" if self.head is None else f"head seq {self.head.seq}"
        return f"{self.records} records, {self.chained} signed by the provider and chained; {head}"


def verify(
    records: Iterable[Positioned], public_key: Ed25519PublicKey, anchors: Mapping[str, AuditHead] | None = None
) -> Verdict:
    """Walk `records` ((offset, record) in topic order). Records the provider did not write are
    findings and are left out of the chain; a provider's record that does not follow the one
    before is a finding (the walk re-syncs on it); every alarm record is a finding; and each of
    `anchors` (name -> head: the key store's anchor, a certificate's head) must be on the chain,
    else the trail was cut or rewritten after it. Findings come in topic order, anchors last."""
    findings: list[Finding] = []
    previous: AuditHead | None = None
    chained: dict[int, bytes] = {}
    count = 0
    for offset, record in records:
        count += 1
        reason = not_the_providers(record, public_key)
        if reason is not None:
            findings.append(Finding(offset, reason))
            continue
        if chained.get(record["seq"]) == record["hash"]:  # a copy of a record already on the chain
            findings.append(Finding(offset, f"a copy of seq {record['seq']}, already on the chain: replayed"))
            continue  # the chain goes on from where it was, so what follows is judged against it
        if (link := unlinked(record, previous)) is not None:
            findings.append(Finding(offset, link))
        if str(record["action"]).startswith(ALARM):
            details = record["details"]
            where = f" (offset {details['offset']})" if "offset" in details else ""
            reason = f"alarm {record['action']} at seq {record['seq']}: {details.get('reason', '')}{where}"
            findings.append(Finding(offset, reason))
        previous = head_of(record)
        chained.setdefault(previous.seq, previous.hash)
    for name, anchor in (anchors or {}).items():
        if chained.get(anchor.seq) == anchor.hash:
            continue
        if anchor.seq in chained:
            reason = f"{name} holds another record at seq {anchor.seq}: the trail was rewritten"
        else:
            end = "nothing" if previous is None else f"seq {previous.seq}"
            reason = f"{name} says the trail reached seq {anchor.seq}, but the chain on the topic ends at {end}: cut"
        findings.append(Finding(None, reason))
    return Verdict(count, len(chained), previous, tuple(findings))


# -- Kafka and the lock ----------------------------------------------------------------------------
_readers: dict[tuple[Connection, str], Consumer] = {}


def _reader(conn: Connection, prefix: str) -> Consumer:
    """One per process, broker and environment, assigned anew for each read (nothing committed)."""
    if (conn, prefix) not in _readers:
        _readers[(conn, prefix)] = Consumer(
            conn.confluent(
                **{
                    "group.id": topic_name(prefix, Group.AUDIT_READER),
                    "enable.auto.commit": False,
                    # Every record anyone wrote, committed or not: read_committed stops at the first
                    # record of an open transaction, which anyone may leave open for up to the
                    # broker's transaction.max.timeout.ms, hiding the relay's own head behind it.
                    "isolation.level": "read_uncommitted",
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


def iter_positioned(
    conn: Connection, prefix: str, last: int | None = None, start: int | None = None
) -> Iterator[Positioned]:
    """(offset, record) of the trail in topic order, up to its end as of the call: all of them, the
    `last` few, or those from offset `start` on. A record that cannot be decoded as an audit event
    comes as {"seq": None, "undecodable": reason} so `verify` names it. Streams, so a trail of any
    length is read in bounded memory; gives up (KafkaOperationError) only when the read stops
    advancing for READ_STALL_S, never because the trail is long."""
    topic = topic_name(prefix, Role.AUDIT_EVENTS)
    consumer = _reader(conn, prefix)
    try:
        low, high = watermarks(consumer, topic, 0)
    except KafkaException as exc:
        raise KafkaOperationError(f"audit: cannot read {topic}: {exc}") from None
    first = low if last is None else max(low, high - last)
    if start is not None:
        first = max(first, start)
    if high <= first:
        return
    partition = TopicPartition(topic, 0, first)
    consumer.assign([partition])
    read, moved = 0, time.monotonic()
    try:
        # Up to the end by the consumer's position, not the last record's offset: a transaction's
        # control record (anyone may write one) takes an offset and is never delivered.
        while (position := consumer.position([partition])[0].offset) < high:
            if time.monotonic() - moved > READ_STALL_S:
                raise KafkaOperationError(
                    f"audit: read {read} records of {topic}, then nothing for {READ_STALL_S:.0f} s before offset {high}"
                )
            # consume(n) waits until n records or the timeout: never ask for more than remain
            remaining = high - (position if position >= first else first)
            batch = consumer.consume(min(1000, remaining), 1.0)
            if batch:
                moved = time.monotonic()
            for msg in batch:
                offset = msg.offset()
                if msg.error() is not None or offset is None or offset >= high:
                    continue
                read += 1
                try:
                    yield offset, decode(msg.value() or b"", expect="audit_event", canonical=True)[1]
                except DecodeError as exc:
                    yield offset, {"seq": None, "undecodable": exc.reason}
    finally:
        consumer.unassign()


def read_positioned(
    conn: Connection, prefix: str, last: int | None = None, start: int | None = None
) -> list[Positioned]:
    """`iter_positioned` as a list."""
    return list(iter_positioned(conn, prefix, last, start))


def read_trail(conn: Connection, prefix: str, last: int | None = None) -> list[dict[str, Any]]:
    """The records of `read_positioned`, without their offsets."""
    return [record for _offset, record in read_positioned(conn, prefix, last)]


@contextlib.contextmanager
def relay_lock(store: KeyStore) -> Iterator[None]:
    """One relay at a time across processes and hosts: the store's own lock (a file lock beside a
    SQLite store, an advisory lock in PostgreSQL), so one chain grows in one order. Waits at most
    RELAY_LOCK_WAIT_S, saying after RELAY_LOCK_TELL_S whom it waits for: a relay that never ends (a
    command suspended with Ctrl-Z, a process stopped in a debugger) made every audited command, and
    the worker's last relay at SIGTERM, wait for ever without a word. Giving up loses nothing: the
    records stay in the outbox."""
    try:
        lock = store.lock(AUDIT_RELAY, RELAY_LOCK_WAIT_S, RELAY_LOCK_TELL_S)
        lock.__enter__()
    except LockTimeout as exc:
        raise AuditError(
            f"audit: {exc.holder} has held the relay lock {exc.name} for over {exc.waited_s:.0f} s (a relay "
            "stuck, or a command suspended?); nothing was recorded on the topic yet, the records wait in the "
            "outbox: retry when it ends"
        ) from None
    try:
        yield
    finally:
        lock.__exit__(None, None, None)


@dataclass(frozen=True)
class Tail:
    """What follows the anchored head on the topic, as far as the relay can prove it its own."""

    last: AuditHead | None  # the last record provably the provider's: where the chain goes on
    ours: list[dict[str, Any]]  # signed records chained from the head (sent by a relay that died)
    alarm: tuple[str, dict[str, str]] | None = None  # (action, details) when something else is there
    last_offset: int | None = None  # where `last` is on the topic, when known


def own_tail(
    conn: Connection, prefix: str, head: AuditHead | None, public_key: Ed25519PublicKey, at: int | None = None
) -> Tail:
    """Read the topic after `head` (the store's anchor, written at offset `at` if known; None: the
    store never relayed, so the whole topic must be its own from the genesis) and tell the relay
    where it may chain on. From a known offset it reads only what follows the head, however many
    records anyone appended after it and however long the topic is."""
    head_offset: int | None = None
    if head is None:
        records = read_positioned(conn, prefix)
        start = 0
    else:
        records, found = [], None
        if at is not None:
            records = read_positioned(conn, prefix, start=at)
            found = 0 if records and records[0][0] == at and _find(records[:1], head, public_key) == 0 else None
        if found is None:
            records = read_positioned(conn, prefix, last=1)
            found = _find(records, head, public_key)
        if found is None:
            records = read_positioned(conn, prefix, last=TAIL_WINDOW)
            found = _find(records, head, public_key)
        if found is None:  # more than a window after it, or gone: look everywhere before concluding
            records = read_positioned(conn, prefix)
            found = _find(records, head, public_key)
        if found is None:
            reason = f"the anchored head seq {head.seq} is not on the topic: the trail was cut or rewritten"
            return Tail(head, [], (HEAD_MISSING, {"head_seq": str(head.seq), "reason": reason}))
        start = found + 1
        head_offset = records[found][0]
    last, ours, last_offset = head, list[dict[str, Any]](), head_offset
    first_bad: tuple[int, str] | None = None
    for offset, record in records[start:]:  # as `verify` walks: skip what is not ours, keep what is
        problem = not_the_providers(record, public_key) or unlinked(record, last)
        if problem is None:
            ours.append(record)
            last, last_offset = head_of(record), offset
        elif first_bad is None:
            first_bad = offset, problem
    if first_bad is None:
        return Tail(last, ours, None, last_offset)
    offset, problem = first_bad
    return Tail(last, ours, (TAIL_NOT_OURS, {"offset": str(offset), "reason": problem}), last_offset)


def _find(records: Sequence[Positioned], head: AuditHead, public_key: Ed25519PublicKey) -> int | None:
    """Index of the first record that is the anchored head, unchanged and signed."""
    return next(
        (
            i
            for i, (_o, r) in enumerate(records)
            if r.get("seq") == head.seq and r.get("hash") == head.hash and not_the_providers(r, public_key) is None
        ),
        None,
    )


def relay(conn: Connection, prefix: str, store: KeyStore, signer: Ed25519PrivateKey) -> int:
    """Move the store's pending audit records onto audit.events; returns how many records were
    appended (alarms included). Safe to crash anywhere: entries are dropped from the outbox, and
    the head anchored, only once the broker has them; a relay that died between the two left its
    records after the anchored head, where the next one recognises them by their outbox marker
    and sends nothing twice. Raises KafkaOperationError or KeyStoreUnavailable (nothing dropped)."""
    total = 0
    with relay_lock(store):
        while entries := store.pending_audit(RELAY_BATCH):
            head = store.audit_head()
            tail = own_tail(conn, prefix, head, signer.public_key(), store.audit_head_offset())
            mine = f"{store.store_id}:"
            sent = {
                int(m.split(":", 1)[1])
                for r in tail.ours
                if (m := (r.get("details") or {}).get("outbox", "")).startswith(mine)
            }
            records: list[dict[str, Any]] = []
            if tail.alarm is not None:
                action, details = tail.alarm
                records.append(alarm(tail.last, action, details, store.actor, signer))
            fresh = [e for e in entries if e.id not in sent]
            records += chain(head_of(records[-1]) if records else tail.last, fresh, store.store_id, signer)
            topic = topic_name(prefix, Role.AUDIT_EVENTS)
            offsets = (
                produce_and_wait(
                    conn,
                    [Record(topic, encode("audit_event", r, canonical=True), partition=0) for r in records],
                    "audit records",
                )
                if records
                else [tail.last_offset]
            )
            new_head = head_of(records[-1]) if records else tail.last
            if new_head is None:
                raise AssertionError("a relay with pending entries always has a head")
            store.drop_audit(
                entries[-1].id, new_head, offsets[-1] if offsets[-1] is not None and offsets[-1] >= 0 else None
            )
            if tail.alarm is not None:
                action, details = tail.alarm
                where = f" (offset {details['offset']})" if "offset" in details else ""
                log.error(
                    "audit alarm on %s: %s%s; the relay did not chain on it and recorded %s at seq %d; "
                    "see `shredline audit verify`",
                    topic,
                    details["reason"],
                    where,
                    action,
                    records[0]["seq"],
                )
            total += len(records)
            if len(entries) < RELAY_BATCH:
                # Everything pending when that batch was read is on the topic now; what came
                # since is the next relay's (any host's), so one relay never holds the lock for as
                # long as keys keep being created, with every other relay waiting behind it.
                break
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
        self,
        action: str,
        tenant: str | None = None,
        subject: str | None = None,
        details: dict[str, str] | None = None,
        *,
        relay: bool = True,
    ) -> None:
        """Record an action in the key store's outbox (durable, in order) and, unless `relay` is
        False, relay the outbox onto `audit.events` now. Unrelayed, it goes with the next relay of
        any process sharing the store (this one's next `flush`, a worker's every 5 s)."""
        self.keys.store.record(action, tenant, subject, details)
        if relay:
            self.flush()

    def flush(self) -> int:
        signer = self.signer  # before the lock: first use creates the key (itself an audited change)
        return relay(self.conn, self.prefix, self.keys.store, signer)

    def head(self) -> AuditHead:
        """The chain's head once everything recorded so far is on the topic (what certificates carry)."""
        self.flush()
        head = self.keys.store.audit_head()
        if head is None:
            raise AuditError("audit: nothing was ever relayed, so the trail has no head")
        return head
