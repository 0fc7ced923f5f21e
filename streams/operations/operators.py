"""Operator commands: who runs them (their certificate says), whether they may, and the audit
record of every attempt.

The operator is the principal of the client certificate in use (`User:<CN>`, as the broker
derives it), never a name the caller types. Two layers decide whether they may:

- the broker: `shredline acl apply` grants the operator role's ACLs (write `control.tenants`
  and `audit.events`, ...) only to the operator principals, and refuses everyone else;
- an optional allow-list of operator principals in the key store, changed only by `admin`
  (`shredline operators allow/revoke`). Empty, the operator role's principal (`User:operator`)
  is the one operator; otherwise exactly the listed principals are (and `acl apply` grants the
  operator ACLs to them instead).

Every attempt leaves a record in the key store's outbox, in the order it happened: `operator.
command` naming the operator and the command, or `operator.refused` (exit 77). A refused
principal never touches the broker (it could not write the trail anyway): its record reaches
`audit.events` with the next relay, the worker's (every 5 s) or the next operator's.
"""

from __future__ import annotations

import re
import time

from shredline.keystore.keys import Keys
from shredline.schemas.errors import ShredlineError
from shredline.streams.acl import AccessRole, default_principals, principals_with_operators
from shredline.streams.kafka.connection import Connection, certificate_principal, resolve_connection, role_certificate
from shredline.streams.key_store import open_keys, open_store, store_exists
from shredline.streams.operations.audit import Trail
from shredline.streams.settings import Settings

_PRINCIPAL = re.compile(r"^User:[^\s\x00-\x1f]{1,255}$")


class Refused(ShredlineError):
    exit_code = 77  # EX_NOPERM


def allow_list(settings: Settings) -> list[str]:
    """The allow-listed operator principals; empty without an allow-list (or a key store)."""
    if not store_exists(settings):
        return []
    store = open_store(settings)
    try:
        return store.operators()
    finally:
        store.close()


def role_principals(settings: Settings) -> dict[AccessRole, tuple[str, ...]]:
    """Each role's principals in this environment: `principal_format` per role, the operator role
    held by the allow-list when there is one. What `acl apply` grants to."""
    return principals_with_operators(default_principals(settings.principal_format), allow_list(settings))


def _authorise(identity: str, role: AccessRole, keys: Keys, settings: Settings) -> str | None:
    """None when `identity` may act as `role`, else why not."""
    if role is AccessRole.OPERATOR:
        listed = keys.store.operators()
        if listed:
            return None if identity in listed else "not on the operator allow-list"
    expected = settings.principal_format.format(role=role.value)
    return None if identity == expected else f"{role.value} commands need the {role.value} certificate ({expected})"


class Session:
    """An operator command's identity, keys and audit trail; refuses (exit 77) whoever may not.

    `online` sessions reach the broker (audit relay, control events); offline ones only parse the
    certificate. `role` is OPERATOR, or ADMIN for the commands that change who operators are."""

    def __init__(
        self, settings: Settings, command: str, *, online: bool = True, role: AccessRole = AccessRole.OPERATOR
    ) -> None:
        self.settings = settings
        self.operator = certificate_principal(role_certificate(settings, role))
        self.keys: Keys = open_keys(settings, actor=self.operator)
        refusal = _authorise(self.operator, role, self.keys, settings)
        action = "operator.command" if refusal is None else "operator.refused"
        self.keys.store.record(action, None, None, {"command": command, "role": role.value})
        if refusal is not None:
            raise Refused(f"{command}: {self.operator} is refused: {refusal}; the attempt was audited")
        self._conn = resolve_connection(settings, role) if online else None
        self._trail = Trail(self._conn, self.keys, settings) if self._conn else None
        if self._trail is not None:
            self._trail.flush()

    @property
    def conn(self) -> Connection:
        if self._conn is None:
            raise AssertionError("an offline session has no broker connection")
        return self._conn

    @property
    def trail(self) -> Trail:
        if self._trail is None:
            raise AssertionError("an offline session has no audit trail connection")
        return self._trail


def change_allow_list(settings: Settings, principal: str, allowed: bool) -> tuple[bool, list[str]]:
    """Admin only: add or remove an operator principal, audited, then bring the broker's ACLs in
    line (the operator role's bindings follow the allow-list). Returns (changed, the new list)."""
    from shredline.streams.kafka.acls import apply_acls

    if not _PRINCIPAL.fullmatch(principal):
        raise ShredlineError(f"principal: expected User:<name>, got {principal!r}")
    verb = "allow" if allowed else "revoke"
    admin = Session(settings, f"operators {verb}", role=AccessRole.ADMIN)
    changed = admin.keys.store.allow_operator(principal, allowed, time.time())
    admin.trail.flush()
    apply_acls(admin.conn, settings.topic_prefix, role_principals(settings))
    return changed, admin.keys.store.operators()
