"""Tenant lifecycle as operators drive it: provisioning and control events on `control.tenants`,
recorded in the audit trail. Termination, a multi-step affair, is `shredline.streams.operations.termination`."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from shredline.keystore.ingest import IngestPublicKey
from shredline.keystore.keys import Keys
from shredline.processors.roles import Role
from shredline.schemas.codec import encode
from shredline.streams.catalog import topic_name
from shredline.streams.kafka.connection import Connection
from shredline.streams.kafka.produce import Record, produce_and_wait
from shredline.streams.operations.audit import Trail


def announce(conn: Connection, prefix: str, kind: str, tenant: str, operator: str, **fields: Any) -> None:
    """Publish a control event and wait until the broker has it."""
    event = {
        "event_id": str(uuid.uuid4()),
        "tenant": tenant,
        "occurred_at": dt.datetime.now(dt.UTC),
        "kind": kind,
        "operator": operator,
        "generation": 1,
        "policy_version": None,
        "buffer_ttl_seconds": None,
        "reason": None,
        "ingest_keys": [],
        **fields,
    }
    record = Record(topic_name(prefix, Role.CONTROL_TENANTS), encode("tenant_control", event), key=tenant.encode())
    produce_and_wait(conn, [record], f"control {kind} for {tenant}")


def provision(
    keys: Keys, conn: Connection, trail: Trail, tenant: str, buffer_ttl_s: int, *, reprovision: bool = False
) -> int:
    """A root key for the tenant (a new generation when `reprovision`ing a terminated one), audited
    and announced with the tenant's ingest public keys; returns the generation."""
    row = keys.provision(tenant, buffer_ttl_s, reprovision=reprovision)
    details = {"generation": str(row.generation), "buffer_ttl_s": str(buffer_ttl_s)}
    trail.record("tenant.provision", tenant, None, details)
    announce(
        conn,
        trail.prefix,
        "PROVISIONED",
        tenant,
        trail.actor,
        generation=row.generation,
        buffer_ttl_seconds=buffer_ttl_s,
        ingest_keys=ingest_keys_field(keys.ingest_public_keys(tenant)),
    )
    return row.generation


def announce_ingest_keys(keys: Keys, conn: Connection, trail: Trail, tenant: str) -> list[IngestPublicKey]:
    """Announce an active tenant's ingest public keys again (`INGEST_KEY`), e.g. for a tenant
    provisioned before sealed ingest existed; audited. Returns the keys."""
    public = keys.ingest_public_keys(tenant)  # UnknownTenant / TenantTerminated: nothing to announce
    trail.record("tenant.ingest-key.announce", tenant, None, {"generation": str(public[0].generation)})
    announce(
        conn,
        trail.prefix,
        "INGEST_KEY",
        tenant,
        trail.actor,
        generation=public[0].generation,
        ingest_keys=ingest_keys_field(public),
    )
    return public


def ingest_keys_field(public: list[IngestPublicKey]) -> list[dict[str, Any]]:
    """The `ingest_keys` field of a `tenant_control` event."""
    return [{"kem": key.kem.value, "public_key": key.raw} for key in public]
