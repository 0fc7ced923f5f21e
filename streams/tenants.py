"""Tenant lifecycle as operators drive it: provision and terminate, announced on `control.tenants`
and recorded in the audit trail."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from keystore.keys import Keys
from keystore.store import Destruction
from streams import audit
from streams.catalog import BUFFER_MESSAGES, CONTROL_TENANTS, PURGE_HEADER, topic_name
from streams.codec import encode
from streams.kafka.connection import Connection
from streams.kafka.produce import Record, partitions_of, produce_and_wait


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
        **fields,
    }
    record = Record(topic_name(prefix, CONTROL_TENANTS), encode("tenant_control", event), key=tenant.encode())
    produce_and_wait(conn, [record], f"control {kind} for {tenant}")


def provision(keys: Keys, conn: Connection, prefix: str, tenant: str, operator: str, buffer_ttl_s: int) -> int:
    row = keys.provision(tenant, buffer_ttl_s)
    audit.append(
        conn,
        prefix,
        actor=operator,
        action="tenant.provision",
        tenant=tenant,
        details={"generation": str(row.generation), "buffer_ttl_s": str(buffer_ttl_s)},
    )
    announce(conn, prefix, "PROVISIONED", tenant, operator, generation=row.generation, buffer_ttl_seconds=buffer_ttl_s)
    return row.generation


def terminate(keys: Keys, conn: Connection, prefix: str, tenant: str, operator: str, reason: str) -> Destruction:
    """Destroy every key of the tenant (fencing it), then tell every worker to evict it."""
    audit.append(
        conn, prefix, actor=operator, action="tenant.terminate.intent", tenant=tenant, details={"reason": reason}
    )
    result = keys.destroy_tenant(tenant, reason)
    audit.append(
        conn,
        prefix,
        actor=operator,
        action="tenant.terminate.keys-destroyed",
        tenant=tenant,
        details={k: str(v) for k, v in result.by_scope.items()},
    )
    announce(conn, prefix, "TERMINATED", tenant, operator, generation=max(result.generation, 1), reason=reason)
    purge_buffer_view(conn, prefix, tenant)
    return result


def purge_buffer_view(conn: Connection, prefix: str, tenant: str) -> None:
    """A payload-less marker on every buffer partition: each partition's view drops the tenant."""
    topic = topic_name(prefix, BUFFER_MESSAGES)
    markers = [
        Record(topic, None, partition=p, headers=[(PURGE_HEADER, tenant.encode())]) for p in partitions_of(conn, topic)
    ]
    produce_and_wait(conn, markers, f"purge markers for {tenant}")
