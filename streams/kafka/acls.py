"""The ACL table onto the broker: describe, create, delete (confluent-kafka's AdminClient), and
wait until the broker enforces the result.

Only bindings on the resource patterns the table owns for the environment are ever read or
deleted (`shredline.streams.acl.owned_patterns`), so other environments and other users of a
shared cluster are left alone. Needs a principal allowed to describe and alter ACLs (ALTER and
DESCRIBE on the cluster): the `admin` role, a super user of the local broker.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from concurrent.futures import Future
from enum import Enum
from typing import TypeVar

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from shredline.schemas.errors import ShredlineError
from shredline.streams.acl import AccessRole, AclPlan, Binding, bindings, owned_patterns, plan
from shredline.streams.errors import KafkaOperationError
from shredline.streams.kafka.admin import REQUEST_TIMEOUT_S, admin_client, kafka_error
from shredline.streams.kafka.connection import Connection

# None matches any name, principal and host (the stubs say str; the client documents None).
_EVERYTHING = AclBindingFilter(
    ResourceType.ANY,
    None,  # type: ignore[arg-type]
    ResourcePatternType.ANY,
    None,  # type: ignore[arg-type]
    None,  # type: ignore[arg-type]
    AclOperation.ANY,
    AclPermissionType.ANY,
)


def _name(value: object) -> str:
    return value.name if isinstance(value, Enum) else str(value)


def _binding(acl: AclBinding) -> Binding:
    return Binding(
        acl.principal,
        _name(acl.restype),
        acl.name,
        _name(acl.resource_pattern_type),
        _name(acl.operation),
        _name(acl.permission_type),
        acl.host,
    )


_Acl = TypeVar("_Acl", AclBinding, AclBindingFilter)


def _as(kind: type[_Acl], b: Binding) -> _Acl:
    """`b` as confluent's AclBinding (to create) or AclBindingFilter (to delete exactly it)."""
    return kind(
        ResourceType[b.resource],
        b.name,
        ResourcePatternType[b.pattern],
        b.principal,
        b.host,
        AclOperation[b.op],
        AclPermissionType[b.permission],
    )


def describe_owned(admin: AdminClient, prefix: str) -> list[Binding]:
    """Every binding the broker holds on the resources the table owns in `prefix`. (librdkafka
    2.16 reports a refused DescribeAcls as no bindings at all: only create and delete say.)"""
    owned = owned_patterns(prefix)
    try:
        found = admin.describe_acls(_EVERYTHING, request_timeout=REQUEST_TIMEOUT_S).result(timeout=REQUEST_TIMEOUT_S)
    except KafkaException as exc:
        raise kafka_error("describing ACLs", exc) from None
    return sorted(b for b in map(_binding, found) if (b.resource, b.name, b.pattern) in owned)


def apply_acls(conn: Connection, prefix: str, principals: Mapping[AccessRole, tuple[str, ...]]) -> AclPlan:
    """Bring the owned resources to exactly the table's bindings; returns what was changed
    (empty on a second run). Returns only once the broker reports (and so enforces) the result."""
    admin = admin_client(conn)
    desired = bindings(prefix, principals)
    changes = plan(desired, describe_owned(admin, prefix))
    if not changes:
        return changes
    who = _principal(conn)
    if changes.create:
        for fut in admin.create_acls(
            [_as(AclBinding, b) for b in changes.create], request_timeout=REQUEST_TIMEOUT_S
        ).values():
            _result(fut, "creating ACLs", who)
    if changes.delete:
        for fut in admin.delete_acls(
            [_as(AclBindingFilter, b) for b in changes.delete], request_timeout=REQUEST_TIMEOUT_S
        ).values():
            _result(fut, "deleting ACLs", who)
    deadline = time.monotonic() + REQUEST_TIMEOUT_S
    while pending := plan(desired, describe_owned(admin, prefix)):
        if time.monotonic() > deadline:
            first = (pending.create or pending.delete)[0]
            raise KafkaOperationError(f"acl apply: the broker still does not report {first.describe()}")
        time.sleep(0.1)
    return changes


def _principal(conn: Connection) -> str | None:
    try:
        return conn.principal()
    except ShredlineError:
        return None


def _result(future: Future[object], what: str, who: str | None) -> None:
    try:
        future.result(timeout=REQUEST_TIMEOUT_S)
    except KafkaException as exc:
        raise kafka_error(what, exc, who) from None
