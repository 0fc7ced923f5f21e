"""The key store interface: wrapped key material and its lifecycle, nothing cryptographic.

A store never sees an unwrapped key, a raw conversation or contact id (only pseudonyms), or
plaintext. Every method is atomic; `tests/unit/test_keystore_contract.py` is written once and
runs against every backend.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

ACTIVE = "active"
TERMINATED = "terminated"
CONVERSATION = "conversation"
CONTACT = "contact"
SCOPES = (CONVERSATION, CONTACT)


def key_digest(key_id: str) -> str:
    """What audit records and certificates show of a key: never the id's own bytes, never the key."""
    return hashlib.sha256(key_id.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class AuditEntry:
    """A record waiting in the store's outbox for `shredline.streams.operations.audit.relay`
    to chain it onto audit.events.

    Written in the same transaction as the key change it describes, so no change goes unrecorded."""

    id: int
    at: float
    actor: str
    action: str
    tenant: str | None
    subject: str | None
    details: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class AuditHead:
    """The last record relayed onto audit.events, as the store anchors it: its `seq` and its
    32-byte SHA-256 `hash`. Kept outside the topic, so a cut tail or a rewritten head shows."""

    seq: int
    hash: bytes


@dataclass(frozen=True)
class Policy:
    version: str
    sha256: str
    published_at: float
    operator: str


@dataclass(frozen=True, repr=False)
class TenantRow:
    tenant: str
    state: str
    generation: int
    master_version: int | None
    root_nonce: bytes | None
    root_wrapped: bytes | None
    buffer_ttl_s: int
    created_at: float
    terminated_at: float | None = None

    def __repr__(self) -> str:
        return f"TenantRow(tenant={self.tenant!r}, state={self.state!r}, generation={self.generation})"


@dataclass(frozen=True, repr=False)
class KeyRow:
    key_id: str
    tenant: str
    generation: int
    scope: str
    subject: str  # pseudonym of the conversation or contact id
    version: int  # 1, 2, ... as the key is rotated past its use cap
    nonce: bytes
    wrapped: bytes
    created_at: float
    expires_at: float | None  # conversations only: last activity + buffer TTL
    uses: int = 0  # encryptions reserved so far (blocks reserved by every process)
    state: str = "current"  # current | retired (still opens, no longer seals)

    def __repr__(self) -> str:
        return f"KeyRow(key_id={self.key_id!r}, tenant={self.tenant!r}, scope={self.scope!r}, v{self.version})"


@dataclass(frozen=True)
class Destruction:
    """What destroying a tenant removed: counts and ids, never key bytes."""

    tenant: str
    generation: int
    key_ids: tuple[str, ...]  # destroyed by this call
    # data keys the tenant's destruction destroyed, by scope: for a tenant already terminated, those
    # its first destruction did (so a run that crashed after it committed is reported right)
    by_scope: dict[str, int]
    already_terminated: bool


@dataclass(frozen=True)
class TenantCounts:
    tenant: str
    state: str
    generation: int
    buffer_ttl_s: int
    conversation_keys: int
    contact_keys: int
    retired_keys: int
    destroyed_keys: int


@dataclass(frozen=True)
class TerminationRecord:
    """A termination's progress as the store keeps it, so any host can resume it."""

    progress: str | None  # JSON text of the steps done so far (None: nothing saved yet)
    probes: bytes | None  # what the destruction's witness returned (`residue.Probes.dump()`), until done


# Sees a tenant's root and keys inside the destroying transaction; what it returns (if not None)
# is kept with the tenant's termination record in that same transaction.
Witness = Callable[[TenantRow, Sequence[KeyRow]], bytes | None]

# Store-wide locks (`KeyStore.lock`): one audit relay at a time, one master key rotation at a time.
AUDIT_RELAY = "audit"
MASTER_ROTATION = "rotation"


class TenantFenced(Exception):
    """Raised inside a store when a key is asked for a tenant that is not active."""

    def __init__(self, tenant: str, state: str | None) -> None:
        super().__init__(tenant)
        self.tenant = tenant
        self.state = state


class KeyStore(Protocol):
    actor: str  # who this process acts as: named by the audit records of its key changes

    def create_tenant(self, row: TenantRow, *, reprovision: bool) -> TenantRow:
        """Insert an active tenant; `reprovision` allows replacing a terminated one (new generation).
        Raises `StaleMasterKey` if the root is wrapped under a master version older than the
        current one (see `rewrap_roots`)."""

    def tenant(self, tenant: str) -> TenantRow | None: ...

    def tenants(self) -> list[TenantRow]: ...

    def acquire(self, candidate: KeyRow, *, block: int, cap: int) -> KeyRow:
        """The current key of (tenant, scope, subject) with `block` more uses reserved; the
        candidate becomes it when there is none or the current one would pass `cap`.
        Raises `TenantFenced` unless the tenant is active in the candidate's generation."""

    def touch(self, key_id: str, expires_at: float | None) -> bool:
        """Still current under an active tenant? With `expires_at`, also pushes a conversation
        key's expiry forward (a write); without, only reads."""

    def data_key(self, key_id: str) -> KeyRow | None:
        """The key, if it exists and its tenant is active."""

    def was_destroyed(self, key_id: str) -> bool: ...

    def destroy_subject(self, tenant: str, scope: str, subject: str, reason: str, now: float) -> list[str]:
        """Destroy every version of one conversation's or contact's key; returns their ids."""

    def destroy_tenant(self, tenant: str, reason: str, now: float, witness: Witness | None = None) -> Destruction:
        """Fence the tenant and destroy its root and every data key, in one transaction.
        `witness`, if given, sees the rows inside that transaction just before they are
        overwritten, and only when there is something to destroy; if it raises, nothing changes;
        bytes it returns are kept as the probes of the tenant's `termination` record."""

    def expire(self, now: float, limit: int) -> list[str]:
        """Destroy up to `limit` conversation keys whose expiry has passed; returns their ids."""

    def rewrap_roots(self, version: int, rewrap: Callable[[TenantRow], tuple[int, bytes, bytes]]) -> int:
        """Replace every active root's (master_version, nonce, wrapped) in one transaction, and
        record `version` as the current master version: from then on `create_tenant` refuses a
        root wrapped under an older one (`StaleMasterKey`), so none is wrapped under a version
        about to be destroyed. Raises `StaleMasterKey` if a newer version is already recorded."""

    def counts(self) -> list[TenantCounts]: ...

    def batch(self) -> AbstractContextManager[None]:
        """One transaction for every call made inside the block by this thread: their changes
        commit together, durably, when it exits, or not at all if it raises (`KeyStoreUnavailable`
        when the commit fails). A call that raises inside rolls back only its own changes. Other
        threads' calls wait until the block exits; other processes see nothing of it before. A
        store may take its write lock only at the block's first change (reads before it see the
        latest committed state), so a batch that changes nothing locks nobody out."""

    # -- residue: bytes of destroyed keys that the store's files may still hold ---------------
    @property
    def local(self) -> bool:
        """True when `files` lists every file that holds the store's bytes (an embedded store on
        this host), so a scan can prove residue gone; False for a server whose files are elsewhere."""

    def files(self) -> list[Path]:
        """Every local file that holds the store's bytes (those that exist), for residue scans."""

    def checkpoint(self) -> str | None:
        """One attempt, without waiting and without blocking anyone, to drop every old image of a
        changed page from the store's files; None when done, else one line on what blocks it."""

    def destroyed_keys(self, tenant: str, generation: int) -> list[tuple[str, str]]:
        """(key_id, scope) of every data key destroyed for that generation of the tenant."""

    # -- what used to be local files and file locks, for several hosts --------------------------
    def termination(self, tenant: str, generation: int) -> TerminationRecord | None:
        """The saved progress of that generation's termination; None if it never started."""

    def save_termination(self, tenant: str, generation: int, progress: str, *, drop_probes: bool = False) -> None:
        """Save a termination's progress (JSON text); `drop_probes` forgets its probes (it is done)."""

    def lock(self, name: str, wait_s: float, tell_s: float) -> AbstractContextManager[None]:
        """Hold the store-wide lock `name` (`AUDIT_RELAY`, `MASTER_ROTATION`) for the block, across
        every process and host that uses this store; logs whom it waits for after `tell_s`, raises
        `locking.LockTimeout` (naming the holder when known) after `wait_s`. A holder that dies
        releases it."""

    # -- audit outbox: every method above that changes keys adds its records here --------------
    @property
    def store_id(self) -> str:
        """Random and fixed per store: tells this store's outbox ids from another's."""

    def record(
        self, action: str, tenant: str | None = None, subject: str | None = None, details: dict[str, str] | None = None
    ) -> int:
        """Add an audit record by this store's actor; returns its outbox id."""

    def pending_audit(self, limit: int) -> list[AuditEntry]: ...

    def drop_audit(self, up_to: int, head: AuditHead, offset: int | None = None) -> None:
        """Forget outbox entries up to and including id `up_to` (they are on audit.events) and
        anchor `head`, the chain's new last record, at `offset` on the topic if known, in one
        transaction. Raises `KeystoreError` unless `head.seq` is past the anchored one (a head
        only moves forward)."""

    def audit_head(self) -> AuditHead | None:
        """The anchored head of the audit chain; None before the first relay."""

    def audit_head_offset(self) -> int | None:
        """Where on audit.events the anchored head was written, if known: the relay reads on from
        there, so what it reads is what follows its head, however long the topic."""

    # -- policies ------------------------------------------------------------------------------
    def publish_policy(self, policy: Policy) -> bool:
        """Record a policy version; False if it exists with the same text (raises if different)."""

    def policies(self) -> list[Policy]: ...

    def accept_policy(self, tenant: str, version: str, now: float) -> bool:
        """Record an active tenant's acceptance; False if already accepted."""

    def acceptances(self) -> dict[str, set[str]]: ...

    # -- operator allow-list (optional: empty means the broker's ACLs alone decide) ----------------
    def allow_operator(self, principal: str, allowed: bool, now: float) -> bool:
        """Add (`allowed`) or remove a principal (`User:<name>`) from the operator allow-list,
        audited in the same transaction; False if nothing changed."""

    def operators(self) -> list[str]:
        """The allow-listed operator principals, sorted; empty when there is no allow-list."""

    def close(self) -> None: ...
