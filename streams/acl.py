"""Who may do what on the broker: one table, beside the topic catalog, and a pure planner.

Kafka's ACL model (KIP-11; `StandardAuthorizer` in KRaft): a binding allows (or denies) one
*principal* (`User:<name>`, from the client certificate) one *operation* (READ, WRITE, DELETE,
CREATE, DESCRIBE, ...) on one *resource pattern*: a resource type (TOPIC, GROUP, CLUSTER,
TRANSACTIONAL_ID), a name and a pattern type, LITERAL (exactly that name) or PREFIXED (every
name starting with it). READ, WRITE, DELETE and ALTER each imply DESCRIBE. With
`allow.everyone.if.no.acl.found=false` anything not granted is refused.

Every process runs as one *access role* (`AccessRole`) with a certificate of its own; `GRANTS`
says what each role's job needs, per environment (every name is under the topic prefix, so
environments sharing a cluster get separate bindings). `admin` is a super user of the broker
(it creates topics and ACLs) and needs no binding. No role uses transactions, and idempotent
producers need no IDEMPOTENT_WRITE on the cluster since Kafka 3.0 (KIP-679: WRITE on a topic is
enough), so the table has no TRANSACTIONAL_ID or CLUSTER rows.

`bindings(prefix, principals)` expands the table for one environment; `plan` compares it with
what the broker holds on the resources the table owns and says what to create and delete.
No Kafka here: `shredline.streams.kafka.acls` describes and applies.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from shredline.processors.roles import Role
from shredline.streams.catalog import topic_name


class AccessRole(StrEnum):
    """Who a process is on the broker; its certificate's CN is the role's name."""

    UPSTREAM = "upstream"  # workflow engines: publish ingest events
    WORKER = "worker"  # the stream processors (Faust)
    SINK = "sink"  # loads aggregates into the warehouse
    OPERATOR = "operator"  # tenant lifecycle, policies, buffer reads, keys, audit verify
    ADMIN = "admin"  # topics and ACLs; a super user of the broker


class Group(StrEnum):
    """Consumer group ids, without the environment prefix (`topic_name(prefix, group)`).

    Only the worker's groups are joined (READ: join, commit). Every other reader assigns its
    partitions and commits nothing, so it needs DESCRIBE on its group only (librdkafka still asks
    for the group's coordinator, and reports a refusal as an error)."""

    WORKER = "shredline-worker"  # the worker's split loop on the ingest topics
    TIMERS = "shredline-worker-timers"  # the worker's Faust app (janitor, trimmer, audit relay) and its app id
    SINK = "shredline-sink"  # assigns partitions itself; never commits
    UPSTREAM = "shredline-upstream"  # the SDK reading tenants' public keys on control.tenants
    AUDIT_READER = "shredline-audit-reader"  # the audit relay reading the chain's tail (worker, operators)
    BUFFER_READ = "shredline-buffer-read"  # `buffer read` scanning a conversation's buffer partition
    VERIFY = "shredline-verify"  # `tenant terminate` sampling buffer records
    BACKLOG = "shredline-backlog"  # `tenant terminate` counting the tenant's unprocessed sealed ingest


#: Topics Faust creates for the worker (the assignor's leader topic) start with the app id and a dash.
FAUST_TOPICS = f"{Group.TIMERS}-"


class Resource(StrEnum):
    TOPIC = "TOPIC"
    GROUP = "GROUP"


class Pattern(StrEnum):
    LITERAL = "LITERAL"
    PREFIXED = "PREFIXED"


class Op(StrEnum):
    READ = "READ"
    WRITE = "WRITE"
    DELETE = "DELETE"
    CREATE = "CREATE"
    DESCRIBE = "DESCRIBE"


@dataclass(frozen=True)
class Grant:
    """One row of the table: `role` may do `ops` on the resource named `name` (without the
    environment prefix) matched as `pattern`; `why` is the job that needs it."""

    role: AccessRole
    resource: Resource
    name: str
    ops: tuple[Op, ...]
    why: str
    pattern: Pattern = Pattern.LITERAL


INGEST = (Role.INGEST_MESSAGES, Role.INGEST_CONTACTS, Role.INGEST_EXECUTIONS)
_R, _WR, _D = Op.READ, Op.WRITE, Op.DELETE
_UP, _WK, _SK, _OP = AccessRole.UPSTREAM, AccessRole.WORKER, AccessRole.SINK, AccessRole.OPERATOR


def _topics(role: AccessRole, topics: Iterable[Role], ops: tuple[Op, ...], why: str) -> tuple[Grant, ...]:
    return tuple(Grant(role, Resource.TOPIC, t, ops, why) for t in topics)


GRANTS: tuple[Grant, ...] = (
    # upstream: publish; read tenants' public keys (sealed ingest)
    *_topics(_UP, INGEST, (_WR,), "publish events (idempotent producer)"),
    *_topics(_UP, [Role.CONTROL_TENANTS], (_R,), "tenants' public keys for sealed ingest"),
    Grant(_UP, Resource.GROUP, Group.UPSTREAM, (Op.DESCRIBE,), "reading control.tenants (assigned, never committed)"),
    # worker: split ingest, write every derived stream, trim what it processed, relay the audit outbox
    *_topics(_WK, INGEST, (_R, _WR, _D), "split; segment-roll markers; trim processed records (DeleteRecords)"),
    *_topics(
        _WK,
        [Role.BUFFER_MESSAGES, Role.BUFFER_CONTACTS, Role.METRICS_USAGE, Role.LOGS_EXECUTIONS, Role.DEADLETTER_INGEST],
        (_WR,),
        "outputs",
    ),
    *_topics(_WK, [Role.CONTROL_TENANTS], (_R,), "evict terminated tenants (no group)"),
    *_topics(_WK, [Role.AUDIT_EVENTS], (_R, _WR), "relay key changes onto the chain (reads its tail)"),
    Grant(_WK, Resource.GROUP, Group.WORKER, (_R,), "the split loop's consumer group (ingest offsets)"),
    Grant(_WK, Resource.GROUP, Group.TIMERS, (_R,), "the Faust app's consumer group (timers)"),
    Grant(_WK, Resource.GROUP, Group.AUDIT_READER, (Op.DESCRIBE,), "reading the chain's tail"),
    Grant(
        _WK,
        Resource.TOPIC,
        FAUST_TOPICS,
        (Op.CREATE, _R, _WR),
        "Faust's own topics: the assignor's leader topic",
        Pattern.PREFIXED,
    ),
    # sink: the aggregates and what it reports beside them
    *_topics(
        _SK,
        [Role.METRICS_USAGE, Role.LOGS_EXECUTIONS, Role.CONTROL_TENANTS, Role.AUDIT_EVENTS],
        (_R,),
        "load into the warehouse",
    ),
    Grant(_SK, Resource.GROUP, Group.SINK, (Op.DESCRIBE,), "the sink's consumer"),
    # operator: lifecycle on control, the audit chain, buffer reads, termination's trim/verify
    *_topics(_OP, [Role.CONTROL_TENANTS], (_WR,), "announce provisioning, termination, policies"),
    *_topics(_OP, [Role.AUDIT_EVENTS], (_R, _WR), "relay its commands' audit records; audit verify"),
    *_topics(
        _OP,
        [Role.BUFFER_MESSAGES],
        (_R,),
        "buffer read (ciphertext; opened with the key store); termination: verify samples",
    ),
    *_topics(_OP, [Role.BUFFER_CONTACTS], (_R,), "termination: verify samples"),
    *_topics(
        _OP, INGEST, (_R, _WR, _D), "termination: count the unprocessed (sealed) backlog, trim, segment-roll markers"
    ),
    Grant(_OP, Resource.GROUP, Group.WORKER, (Op.DESCRIBE,), "termination: the worker's committed offsets"),
    Grant(_OP, Resource.GROUP, Group.AUDIT_READER, (Op.DESCRIBE,), "reading the chain's tail"),
    Grant(_OP, Resource.GROUP, Group.BUFFER_READ, (Op.DESCRIBE,), "buffer read"),
    Grant(_OP, Resource.GROUP, Group.VERIFY, (Op.DESCRIBE,), "termination: verify"),
    Grant(_OP, Resource.GROUP, Group.BACKLOG, (Op.DESCRIBE,), "termination: the unprocessed backlog"),
)


@dataclass(frozen=True, order=True)
class Binding:
    """One Kafka ACL binding, by the names of Kafka's enums. The table only ever allows, from any
    host; a binding found on the broker may say otherwise (and then is not the table's)."""

    principal: str  # `User:<name>`
    resource: str  # Resource: TOPIC, GROUP (or another of Kafka's resource types)
    name: str  # the broker-side name, prefix included
    pattern: str  # Pattern: LITERAL, PREFIXED
    op: str  # Op, or another of Kafka's operations (ALTER, ALL, ...)
    permission: str = "ALLOW"
    host: str = "*"

    def describe(self) -> str:
        """`User:worker READ topic staging.ingest.messages` (+ ` (prefixed)`, a deny, a host)."""
        pattern = "" if self.pattern == Pattern.LITERAL else f" ({self.pattern.lower()})"
        verb = self.op if self.permission == "ALLOW" else f"{self.permission} {self.op}"
        host = "" if self.host == "*" else f" from {self.host}"
        return f"{self.principal} {verb} {self.resource.lower()} {self.name}{pattern}{host}"


def default_principals(principal_format: str = "User:{role}") -> dict[AccessRole, tuple[str, ...]]:
    """The principal of each role: `principal_format` with the role's name (certificates say CN=<role>)."""
    return {role: (principal_format.format(role=role.value),) for role in AccessRole}


def principals_with_operators(
    principals: Mapping[AccessRole, tuple[str, ...]], operators: Iterable[str]
) -> dict[AccessRole, tuple[str, ...]]:
    """The operator role held by the allow-listed principals instead, when there are any."""
    allowed = tuple(sorted(set(operators)))
    return {**principals, AccessRole.OPERATOR: allowed} if allowed else dict(principals)


def bindings(prefix: str, principals: Mapping[AccessRole, tuple[str, ...]]) -> frozenset[Binding]:
    """Every binding the table asks for in the environment `prefix`."""
    out: set[Binding] = set()
    for grant in GRANTS:
        resource, name, pattern = _pattern(prefix, grant)
        for principal in principals.get(grant.role, ()):
            for op in grant.ops:
                out.add(Binding(principal, resource, name, pattern, op.value))
    return frozenset(out)


#: Resource patterns earlier versions granted on, as (resource type, name, pattern type) without the
#: prefix: still owned, so `acl apply` deletes what is left on them after an upgrade. The split's
#: Faust app (`shredline-worker-*`), then the buffer view's app and changelog.
RETIRED: tuple[tuple[Resource, str, Pattern], ...] = (
    (Resource.TOPIC, "shredline-worker-", Pattern.PREFIXED),
    (Resource.GROUP, "shredline-worker-view", Pattern.LITERAL),
    (Resource.TOPIC, "shredline-worker-view-", Pattern.PREFIXED),
    (Resource.TOPIC, "shredline-worker-view-buffer-view-changelog", Pattern.LITERAL),
)


def owned_patterns(prefix: str) -> frozenset[tuple[str, str, str]]:
    """The resource patterns the table speaks for in `prefix`, today's and `RETIRED`: every binding
    on them is ours."""
    retired = {(kind.value, str(topic_name(prefix, name)), pattern.value) for kind, name, pattern in RETIRED}
    return frozenset(_pattern(prefix, g) for g in GRANTS) | retired


def _pattern(prefix: str, grant: Grant) -> tuple[str, str, str]:
    """(resource type, broker-side name, pattern type) as plain strings (the client's C code
    mishandles str subclasses such as the enums)."""
    return grant.resource.value, str(topic_name(prefix, grant.name)), grant.pattern.value


@dataclass(frozen=True)
class AclPlan:
    create: tuple[Binding, ...]
    delete: tuple[Binding, ...]

    def __bool__(self) -> bool:
        return bool(self.create or self.delete)


def plan(desired: frozenset[Binding], observed: Iterable[Binding]) -> AclPlan:
    """What to create and what to delete so the owned resources hold exactly `desired`.
    `observed` must be the broker's bindings on `owned_patterns` only (others are not ours)."""
    have = frozenset(observed)
    return AclPlan(tuple(sorted(desired - have)), tuple(sorted(have - desired)))


def describe_role(role: AccessRole) -> str:
    """What the table lets `role` do, in one line (names without the environment prefix; a `*`
    ends a prefixed name), e.g. "write topics `ingest.messages`, ...; describe group `...`". The
    README's table of roles is this text (a test keeps them equal)."""
    if role is AccessRole.ADMIN:
        return "super user of the broker: creates topics (`topics apply`) and ACLs (`acl apply`)"
    parts: dict[tuple[str, tuple[Op, ...]], list[str]] = {}
    for g in GRANTS:
        if g.role is role:
            name = f"`{g.name}{'*' if g.pattern is Pattern.PREFIXED else ''}`"
            parts.setdefault((g.resource.value.lower(), g.ops), []).append(name)
    return "; ".join(
        f"{'/'.join(op.value.lower() for op in ops)} {kind}{'s' if len(names) > 1 or '*' in names[0] else ''} "
        + ", ".join(names)
        for (kind, ops), names in parts.items()
    )


def role_of(principal: str, principals: Mapping[AccessRole, tuple[str, ...]]) -> AccessRole | None:
    return next((role for role, names in principals.items() if principal in names), None)


#: `ssl.principal.mapping.rules` for the broker: the certificate's CN becomes `User:<CN>`
#: (Kafka gives the subject as an RFC 2253 DN, most specific first: `CN=worker,O=...`).
PRINCIPAL_MAPPING_RULES = "RULE:^CN=([^,]+).*$/$1/,DEFAULT"
_CN_FIRST = re.compile(r"^CN=([^,]+).*$")


def principal_of_subject(rfc4514: str) -> str:
    """The principal the broker derives from a certificate subject, by `PRINCIPAL_MAPPING_RULES`."""
    match = _CN_FIRST.fullmatch(rfc4514)
    return f"User:{match.group(1) if match else rfc4514}"
