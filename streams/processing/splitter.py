"""Carries out what `processors.split` plans for one ingest record: seal, emit, destroy, tombstone.

Ingest records are `sealed_ingest` envelopes (HPKE to the tenant's ingest key, see
`shredline.keystore.ingest`): opened with the tenant's private key, then the event inside is
validated as before and must name the envelope's tenant. One sealed to a destroyed key (a
terminated tenant, or an earlier generation) is dropped and counted; one that does not open is
dead-lettered; a plaintext event is dead-lettered as `not sealed` unless the migration switch
is on.

Batched: `handle_batch` runs a batch's key-store work in one transaction (`Keys.batch`), on the
caller's thread (the worker's split loop, never the event loop); only once that transaction has
committed are the batch's outputs given, in order, to `send(outputs)`, which returns when each is
durable or refused for good. So every key is durable before ciphertext under it leaves, and a
destruction commits with (and after) the seals that precede it. The ingest record an output
refused for good came from (one too large for its topic, say) is dead-lettered, naming the topic
and Kafka's error, and the batch completes: one poison record cannot stall a partition.

Kafka-agnostic: `send` is any blocking callable, so this runs the same in the worker and in tests.
It fails closed: a record whose key cannot be had is dropped (terminated tenant, counted without
ids) or dead-lettered (ids and reason only, never payload); while the key store is unavailable
it waits and retries the whole batch, and nothing is written.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import logging
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from shredline.keystore.errors import (
    InvalidCiphertext,
    KeyDestroyed,
    KeyStoreUnavailable,
    MasterKeyError,
    TenantTerminated,
    UnknownTenant,
)
from shredline.keystore.ingest import Kem
from shredline.keystore.keys import Keys
from shredline.processors.anonymise import dropped_metric
from shredline.processors.roles import Role
from shredline.processors.split import PLANS, Destroy, Effect, Emit, Seal, Tombstone
from shredline.processors.validation import RECORD_TYPES, InvalidEvent, validate
from shredline.schemas.codec import DecodeError, decode, encode, writer_of
from shredline.streams.catalog import topic_name

log = logging.getLogger("shredline.splitter")
Output = tuple[Role, bytes | None, bytes | None]  # role, key, value (None: a tombstone)
#: The outputs `send` could not write, ever: index in the list it was given -> Kafka's error name.
Refusals = dict[int, str]
Send = Callable[[list[Output]], Refusals]  # blocking: returns once every output is durable or refused, in order
Where = tuple[Role, int, int]  # ingest role, partition, offset
Record = tuple[Role, int, int, bytes | None, dt.datetime | None]  # where, value, broker time
_TENANT = re.compile(r"[a-z0-9][a-z0-9-]{1,62}")
RETRY_S = 0.1  # then the busy timeout (0.5 s in the worker) waits again: the lock is polled, not slept through
SAY_WAITING_S = 10.0  # a batch waiting for the key store says so at most this often
SEAL_KINDS = {"conversation": "MESSAGE", "contact": "CONTACT"}


@dataclasses.dataclass
class _Source:
    """One ingest record of the batch in hand: where it is, its tenant once known, its outputs."""

    where: Where
    tenant: str | None = None
    outputs: list[Output] = dataclasses.field(default_factory=list)


class Splitter:
    """`allow_plaintext` is the migration switch (`allow_plaintext_ingest`): off, an unsealed
    ingest event is dead-lettered as `not sealed`; on, it is processed as before sealed ingest."""

    def __init__(
        self,
        keys: Keys,
        prefix: str,
        send: Send,
        clock: Callable[[], dt.datetime] | None = None,
        *,
        allow_plaintext: bool = False,
    ) -> None:
        self.keys = keys
        self.prefix = prefix
        self.send = send
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self.allow_plaintext = allow_plaintext
        self.counts = {"processed": 0, "dead": 0, "dropped": 0, "plaintext": 0}
        self._sources: list[_Source] = []
        self._tally: collections.Counter[str] = collections.Counter()

    def handle(
        self, role: Role, partition: int, offset: int, value: bytes | None, timestamp: dt.datetime | None = None
    ) -> str:
        """Process one ingest record; returns what happened: processed, dead or dropped.

        `timestamp` is the record's (broker) time: the minute counted when a sealed event of a
        terminated tenant is dropped, since nothing inside it can be read any more."""
        return self.handle_batch([(role, partition, offset, value, timestamp)])[0]

    def handle_batch(self, records: Sequence[Record], waiting: Callable[[], None] = lambda: None) -> list[str]:
        """Process ingest records in order; returns each one's outcome. Blocking: returns once the
        batch's key-store transaction has committed and `send` has delivered all its outputs (or
        refused some for good: their records are then dead-lettered, outcome "dead"). While the
        store is unavailable it retries the whole batch every RETRY_S, writing nothing, and calls
        `waiting()` before each retry (the split loop tells its watchdog: a restart would not help)."""
        since = said = None  # when the store became unavailable to this batch, when that was last logged
        while True:
            self._sources, self._tally = [], collections.Counter()
            try:
                with self.keys.batch():
                    outcomes = [self._handle_one((role, p, o), value, ts) for role, p, o, value, ts in records]
            except KeyStoreUnavailable:
                now = time.monotonic()
                since = since or now
                if said is None or now - said >= SAY_WAITING_S:
                    log.warning("key store unavailable for %.0f s; retrying (nothing written)", now - since)
                    said = now
                waiting()
                time.sleep(RETRY_S)
                continue
            if since is not None:
                log.warning("key store available again after %.0f s", time.monotonic() - since)
            outputs = [output for source in self._sources for output in source.outputs]
            owners = [i for i, source in enumerate(self._sources) for _ in source.outputs]
            refused = self.send(outputs)
            if refused:
                self._dead_letter_refused(refused, outputs, owners, outcomes)
            self._tally.update(outcomes)
            for name in self.counts:
                self.counts[name] += self._tally[name]
            return outcomes

    def _handle_one(self, where: Where, value: bytes | None, timestamp: dt.datetime | None) -> str:
        """Handle one record of the batch, its outputs kept apart (`_put`) from the others'."""
        self._sources.append(_Source(where))
        return self._handle(where, value, timestamp)

    def _dead_letter_refused(
        self, refused: Refusals, outputs: list[Output], owners: list[int], outcomes: list[str]
    ) -> None:
        """Dead-letter the source of each output in `refused` (by index into `outputs`; `owners`
        gives each output's source, by index into the batch), once per source, and set its outcome
        to "dead". A refused dead letter has no source left to stand for: it is logged at ERROR,
        and its record skipped."""
        letters: list[Output] = []
        lettered: list[int] = []  # the source of each letter
        for index, name in sorted(refused.items()):
            role, owner = outputs[index][0], owners[index]
            if role == Role.DEADLETTER_INGEST:
                self._unwritable(self._sources[owner].where, name)
            elif owner not in lettered:
                source = self._sources[owner]
                reason = f"output to {topic_name(self.prefix, role)} refused by Kafka: {name}"
                letters.append(self._letter(source.where, reason, source.tenant))
                lettered.append(owner)
                outcomes[owner] = "dead"
        for index, name in self.send(letters).items():
            self._unwritable(self._sources[lettered[index]].where, name)

    def _unwritable(self, where: Where, name: str) -> None:
        role, partition, offset = where
        log.error(
            "dead letter of %s[%d]@%d refused by Kafka (%s): that record is skipped",
            topic_name(self.prefix, role),
            partition,
            offset,
            name,
        )

    def _put(self, output: Output) -> None:
        self._sources[-1].outputs.append(output)

    def _handle(self, where: Where, value: bytes | None, timestamp: dt.datetime | None) -> str:
        try:
            envelope = self._envelope(value)
        except DecodeError as exc:
            return self._dead(where, exc.reason, None, exc.fingerprint)
        except InvalidEvent as exc:
            return self._dead(where, str(exc), None)
        if envelope is None:
            if not self.allow_plaintext:
                return self._dead(where, "not sealed", _plaintext_tenant(value or b""))
            self._tally["plaintext"] += 1
            return self._process(where, value or b"", None)
        tenant = envelope["tenant"]
        try:
            inner = self.keys.open_ingest(
                tenant,
                envelope["generation"],
                Kem(envelope["kem"]),
                topic_name(self.prefix, where[0]),
                envelope["ciphertext"],
            )
        except KeyDestroyed:  # TenantTerminated included
            # Sealed to a destroyed key: nobody can open it any more. Counted with the tenant and
            # the minute it reached the broker, and nothing else (there is nothing else to know).
            self._sources[-1].tenant = tenant
            dropped = dropped_metric(tenant, timestamp or self.clock())
            self._emit(Role.METRICS_USAGE, "usage_metric", {**dropped, "dedup": None})
            return "dropped"
        except UnknownTenant:
            return self._dead(where, "tenant: not provisioned", tenant)
        except InvalidCiphertext:
            return self._dead(where, "sealed: cannot be opened", tenant)
        except (KeyStoreUnavailable, MasterKeyError):
            raise  # this host cannot work now (a stale keyring: rotated on another host): nothing is lost
        except Exception as exc:  # a bug must not stop the worker or drop the offset silently
            log.exception("internal error opening %s[%d]@%d", *where)
            return self._dead(where, f"internal error ({type(exc).__name__})", tenant)
        return self._process(where, inner, tenant)

    def _envelope(self, value: bytes | None) -> dict[str, Any] | None:
        """The record's `sealed_ingest` envelope, None for a plaintext ingest event, or
        `DecodeError` / `InvalidEvent` for anything else."""
        if not value:
            raise DecodeError("empty record")
        writer = writer_of(value)
        if writer.record in RECORD_TYPES:
            return None
        if writer.record != "sealed_ingest":
            raise DecodeError(f"{writer.record} does not belong on an ingest topic", writer.fingerprint)
        _record, envelope = decode(value)
        if not _TENANT.fullmatch(envelope["tenant"]):
            raise InvalidEvent.one("tenant", "not a tenant slug")
        if envelope["kem"] not in Kem.__members__:
            raise InvalidEvent.one("kem", "not a supported KEM")
        return envelope

    def _process(self, where: Where, data: bytes, sealed_for: str | None) -> str:
        """Validate one event (opened, or plaintext under the migration switch) and apply its plan."""
        try:
            record, event = self._decode(data)
        except DecodeError as exc:
            return self._dead(where, exc.reason, sealed_for, exc.fingerprint)
        except InvalidEvent as exc:
            return self._dead(where, str(exc), sealed_for)
        if sealed_for is not None and event["tenant"] != sealed_for:
            return self._dead(where, "tenant: does not match the sealed envelope", sealed_for)
        try:
            return self._apply(PLANS[record](event), event)
        except UnknownTenant:
            return self._dead(where, "tenant: not provisioned", event["tenant"])
        except (KeyStoreUnavailable, MasterKeyError):
            raise  # this host cannot work now (a stale keyring: rotated on another host): nothing is lost
        except Exception as exc:  # a bug must not stop the worker or drop the offset silently
            log.exception("internal error on %s[%d]@%d", *where)
            return self._dead(where, f"internal error ({type(exc).__name__})", event["tenant"])

    def _decode(self, value: bytes) -> tuple[str, dict[str, Any]]:
        if not value:
            raise DecodeError("empty record")
        record, event = decode(value)
        kind = RECORD_TYPES.get(record)
        if kind is None:
            raise DecodeError(f"{record} does not belong on an ingest topic")
        valid = validate({"type": kind, **event}, self.clock())
        return record, valid.value

    def _apply(self, effects: list[Effect], event: dict[str, Any]) -> str:
        tenant = self._sources[-1].tenant = event["tenant"]
        try:
            self.keys.tenant_keys(tenant)  # every event, sealed or not, needs a live tenant
            for effect in effects:
                self._one(effect, tenant, event)
        except TenantTerminated:
            # Nothing of it is kept: only that one event of this tenant arrived after termination.
            dropped = dropped_metric(tenant, event["occurred_at"])
            dropped["dedup"] = self._token(event, dropped["kind"])
            self._emit(Role.METRICS_USAGE, "usage_metric", dropped)
            return "dropped"
        return "processed"

    def _one(self, effect: Effect, tenant: str, event: dict[str, Any]) -> None:
        if isinstance(effect, Seal):
            topic = topic_name(self.prefix, effect.role)
            sealed = self.keys.seal(
                tenant, effect.scope, effect.subject_id, topic, encode(effect.schema, effect.record)
            )
            envelope = {
                "tenant": tenant,
                "kind": SEAL_KINDS[effect.scope],
                "record_id": sealed.record_id,
                "key_id": sealed.key_id,
                "nonce": sealed.nonce,
                "ciphertext": sealed.ciphertext,
                "sealed_at": self.clock(),
                "event_ref": self.keys.pseudonym(tenant, "event", effect.event_id),
            }
            self._put((effect.role, sealed.record_id.encode(), encode("sealed_envelope", envelope)))
        elif isinstance(effect, Emit):
            record = effect.record
            if effect.schema == "usage_metric":
                record = {**record, "dedup": self._token(event, record["kind"])}
            self._emit(effect.role, effect.schema, record)
        elif isinstance(effect, Destroy):
            self.keys.destroy_subject(tenant, effect.scope, effect.subject_id, effect.reason)
        elif isinstance(effect, Tombstone):
            self._put((effect.role, self.keys.pseudonym(tenant, effect.scope, effect.subject_id).encode(), None))

    def _token(self, event: dict[str, Any], kind: str) -> bytes | None:
        return self.keys.dedup_token(event["tenant"], event["event_id"], kind, event["occurred_at"])

    def _emit(self, role: Role, schema: str, record: dict[str, Any]) -> None:
        self._put((role, record["tenant"].encode(), encode(schema, record)))

    def _dead(self, where: Where, reason: str, tenant: str | None, fingerprint: bytes | None = None) -> str:
        self._put(self._letter(where, reason, tenant, fingerprint))
        return "dead"

    def _letter(self, where: Where, reason: str, tenant: str | None, fingerprint: bytes | None = None) -> Output:
        """The dead letter of the record at `where`: references and `reason` only, never payload."""
        role, partition, offset = where
        letter = {
            "at": self.clock(),
            "source_topic": topic_name(self.prefix, role),
            "partition": partition,
            "offset": offset,
            "reason": reason,
            "tenant": tenant if tenant and _TENANT.fullmatch(tenant) else None,
            "fingerprint": fingerprint.hex() if fingerprint else None,
        }
        log.warning("dead letter: %s[%d]@%d: %s", letter["source_topic"], partition, offset, reason)
        return (Role.DEADLETTER_INGEST, None, encode("dead_letter", letter))


def _plaintext_tenant(value: bytes) -> str | None:
    """The tenant of an unsealed event, for its dead letter, if it can be read at all."""
    try:
        tenant = decode(value)[1].get("tenant")
    except DecodeError:
        return None
    return tenant if isinstance(tenant, str) else None
