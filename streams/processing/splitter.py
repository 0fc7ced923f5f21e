"""Carries out what `processors.split` plans for one ingest record: seal, emit, destroy, tombstone.

Kafka-agnostic: output goes through an async `send(role, key, value)`, so this runs the
same under Faust and in tests. It fails closed: a record whose key cannot be had is dropped
(terminated tenant, counted without ids) or dead-lettered (ids and reason only, never payload);
while the key store is unavailable it waits and retries, and nothing is written.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from shredline.keystore.errors import KeyStoreUnavailable, TenantTerminated, UnknownTenant
from shredline.keystore.keys import Keys
from shredline.processors.anonymise import dropped_metric
from shredline.processors.roles import Role
from shredline.processors.split import PLANS, Destroy, Effect, Emit, Seal, Tombstone
from shredline.processors.validation import RECORD_TYPES, InvalidEvent, validate
from shredline.schemas.codec import DecodeError, decode, encode
from shredline.streams.catalog import topic_name

log = logging.getLogger("shredline.splitter")
Send = Callable[[Role, bytes | None, bytes | None], Awaitable[None]]
_TENANT = re.compile(r"[a-z0-9][a-z0-9-]{1,62}")
RETRY_S = 0.5
SEAL_KINDS = {"conversation": "MESSAGE", "contact": "CONTACT"}


class Splitter:
    def __init__(self, keys: Keys, prefix: str, send: Send, clock: Callable[[], dt.datetime] | None = None) -> None:
        self.keys = keys
        self.prefix = prefix
        self.send = send
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self.counts = {"processed": 0, "dead": 0, "dropped": 0}

    async def handle(self, role: Role, partition: int, offset: int, value: bytes | None) -> str:
        """Process one ingest record; returns what happened: processed, dead or dropped."""
        try:
            record, event = self._decode(value)
        except DecodeError as exc:
            await self._dead(role, partition, offset, exc.reason, None, exc.fingerprint)
            return "dead"
        except InvalidEvent as exc:
            await self._dead(role, partition, offset, str(exc), None, None, exc.errors)
            return "dead"
        while True:
            try:
                outcome = await self._apply(PLANS[record](event), event)
            except KeyStoreUnavailable:
                log.warning("key store unavailable; retrying in %.1fs (nothing written)", RETRY_S)
                await asyncio.sleep(RETRY_S)
                continue
            except UnknownTenant:
                await self._dead(role, partition, offset, "tenant: not provisioned", event["tenant"], None)
                return "dead"
            except Exception as exc:  # a bug must not stop the worker or drop the offset silently
                log.exception("internal error on %s[%d]@%d", role, partition, offset)
                await self._dead(
                    role, partition, offset, f"internal error ({type(exc).__name__})", event["tenant"], None
                )
                return "dead"
            self.counts[outcome] += 1
            return outcome

    def _decode(self, value: bytes | None) -> tuple[str, dict[str, Any]]:
        if not value:
            raise DecodeError("empty record")
        record, event = decode(value)
        kind = RECORD_TYPES.get(record)
        if kind is None:
            raise DecodeError(f"{record} does not belong on an ingest topic")
        valid = validate({"type": kind, **event}, self.clock())
        return record, valid.value

    async def _apply(self, effects: list[Effect], event: dict[str, Any]) -> str:
        tenant = event["tenant"]
        try:
            self.keys.tenant_keys(tenant)  # every event, sealed or not, needs a live tenant
            for effect in effects:
                await self._one(effect, tenant, event)
        except TenantTerminated:
            # Nothing of it is kept: only that one event of this tenant arrived after termination.
            dropped = dropped_metric(tenant, event["occurred_at"])
            dropped["dedup"] = self._token(event, dropped["kind"])
            await self._emit(Role.METRICS_USAGE, "usage_metric", dropped)
            return "dropped"
        return "processed"

    async def _one(self, effect: Effect, tenant: str, event: dict[str, Any]) -> None:
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
            await self.send(effect.role, sealed.record_id.encode(), encode("sealed_envelope", envelope))
        elif isinstance(effect, Emit):
            record = effect.record
            if effect.schema == "usage_metric":
                record = {**record, "dedup": self._token(event, record["kind"])}
            await self._emit(effect.role, effect.schema, record)
        elif isinstance(effect, Destroy):
            self.keys.destroy_subject(tenant, effect.scope, effect.subject_id, effect.reason)
        elif isinstance(effect, Tombstone):
            await self.send(effect.role, self.keys.pseudonym(tenant, effect.scope, effect.subject_id).encode(), None)

    def _token(self, event: dict[str, Any], kind: str) -> bytes | None:
        return self.keys.dedup_token(event["tenant"], event["event_id"], kind, event["occurred_at"])

    async def _emit(self, role: Role, schema: str, record: dict[str, Any]) -> None:
        await self.send(role, record["tenant"].encode(), encode(schema, record))

    async def _dead(
        self,
        role: Role,
        partition: int,
        offset: int,
        reason: str,
        tenant: str | None,
        fingerprint: bytes | None,
        errors: object = None,
    ) -> None:
        self.counts["dead"] += 1
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
        await self.send(Role.DEADLETTER_INGEST, None, encode("dead_letter", letter))
