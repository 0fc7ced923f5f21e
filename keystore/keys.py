"""The key hierarchy as the pipeline uses it: provision, seal, open, destroy, expire, rotate.

`Keys` is the only place that unwraps anything. It fails closed: when a key cannot be had,
it raises and nothing is sealed; it never falls back to plaintext.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import os
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from cryptography.exceptions import UnsupportedAlgorithm

from shredline.keystore.aead import DataKey, TenantKeys, bind, open_with, record_aad, seal_with
from shredline.keystore.cache import BoundedCache
from shredline.keystore.errors import (
    InvalidCiphertext,
    KeyDestroyed,
    MasterKeyError,
    StaleMasterKey,
    TenantExists,
    TenantTerminated,
    UnknownTenant,
)
from shredline.keystore.ingest import IngestPrivateKey, IngestPublicKey, Kem, derive_private_key
from shredline.keystore.master import MasterKeyring
from shredline.keystore.residue import SALT, Probes
from shredline.keystore.store import (
    ACTIVE,
    CONVERSATION,
    SCOPES,
    Destruction,
    KeyRow,
    KeyStore,
    TenantCounts,
    TenantFenced,
    TenantRow,
)

DEFAULT_BUFFER_TTL_S = 24 * 3600
DEFAULT_STALENESS_S = 1.0
# Random 96-bit nonces stay far from collision below 2^32 uses per key (NIST SP 800-38D);
# we rotate a key long before that.
DEFAULT_MAX_USES = 1 << 24
DEFAULT_RESERVE_BLOCK = 1024
# A conversation's stored expiry is pushed forward at most once a minute: expiry is exact to
# within this slack, and a busy conversation costs a durable write per minute, not per message.
EXPIRY_SLACK_S = 60.0
# De-duplication tokens for metrics use one key per UTC day, kept as the root key of a reserved
# pseudo-tenant (`~` is never in a tenant slug) so it is wrapped, rotated and shredded like one.
DEDUP_PREFIX = "~dedup-"
DEDUP_DAYS = 3


@dataclass(frozen=True)
class Sealed:
    """A sealed record as the buffer topics carry it (the `sealed_envelope` schema)."""

    tenant: str
    scope: str
    record_id: str  # pseudonym of the conversation or contact id
    key_id: str
    nonce: bytes
    ciphertext: bytes


class Keys:
    def __init__(
        self,
        store: KeyStore,
        master: MasterKeyring,
        *,
        clock: Callable[[], float] = time.time,
        staleness_s: float = DEFAULT_STALENESS_S,
        cache_size: int = 10_000,
        max_uses: int = DEFAULT_MAX_USES,
        reserve_block: int = DEFAULT_RESERVE_BLOCK,
        reload_master: Callable[[], MasterKeyring] | None = None,
    ) -> None:
        self.store = store
        self.master = master
        self._reload_master = reload_master
        self.clock = clock
        self.max_uses = max_uses
        self.reserve_block = min(reserve_block, max_uses)
        self._tenants: BoundedCache[TenantKeys] = BoundedCache(cache_size, staleness_s, clock)
        self._ttl: dict[str, int] = {}
        self._sealing: BoundedCache[DataKey] = BoundedCache(cache_size, staleness_s, clock)
        self._opening: BoundedCache[DataKey] = BoundedCache(cache_size, staleness_s, clock)
        self._ingest: BoundedCache[IngestPrivateKey] = BoundedCache(cache_size, staleness_s, clock)

    def __repr__(self) -> str:
        return f"Keys(master={self.master!r}, cached_tenants={len(self._tenants)})"

    # -- tenants -------------------------------------------------------------------------------
    @staticmethod
    def _wrap_root(ring: MasterKeyring, tenant: str, generation: int, root: bytes) -> tuple[int, bytes, bytes]:
        version = ring.current
        nonce, wrapped = seal_with(ring.aead(version), root, bind("tenant-root", tenant, generation, version))
        return version, nonce, wrapped

    @staticmethod
    def _unwrap_root(ring: MasterKeyring, row: TenantRow) -> bytes:
        assert row.master_version is not None and row.root_nonce is not None and row.root_wrapped is not None
        aad = bind("tenant-root", row.tenant, row.generation, row.master_version)
        return open_with(ring.aead(row.master_version), row.root_nonce, row.root_wrapped, aad)

    def _reload(self) -> bool:
        """Re-read the keyring (another process rotated the master key); False if we cannot."""
        if self._reload_master is None:
            return False
        self.master = self._reload_master()
        return True

    def provision(
        self, tenant: str, buffer_ttl_s: int = DEFAULT_BUFFER_TTL_S, *, reprovision: bool = False
    ) -> TenantRow:
        """A new random root key for `tenant`; a terminated tenant needs `reprovision` and gets a new generation.
        If the master key was rotated since this process loaded it, the root is wrapped again under
        the new version (never stored under one about to be destroyed)."""
        previous = self.store.tenant(tenant)
        generation = previous.generation + 1 if previous is not None else 1
        root = secrets.token_bytes(32)
        while True:
            version, nonce, wrapped = self._wrap_root(self.master, tenant, generation, root)
            row = TenantRow(tenant, ACTIVE, generation, version, nonce, wrapped, buffer_ttl_s, self.clock())
            try:
                self.store.create_tenant(row, reprovision=reprovision)
                break
            except StaleMasterKey as exc:
                if not self._reload() or self.master.current < exc.current:
                    raise
        self.evict_tenant(tenant)
        return row

    def tenant_keys(self, tenant: str) -> TenantKeys:
        entry, fresh = self._tenants.get(tenant)
        if entry is not None and fresh:
            return entry.value
        row = self.store.tenant(tenant)
        if row is None:
            raise UnknownTenant(tenant)
        if row.state != ACTIVE:
            self.evict_tenant(tenant)
            raise TenantTerminated(tenant)
        if entry is not None and entry.value.generation == row.generation:
            self._tenants.refreshed(entry)
            return entry.value
        if row.master_version not in self.master.versions:
            self._reload()  # another process rotated the master key
        keys = TenantKeys(tenant, row.generation, self._unwrap_root(self.master, row))
        self._ttl[tenant] = row.buffer_ttl_s
        self._tenants.put(tenant, keys, tenant)
        return keys

    def pseudonym(self, tenant: str, scope: str, raw_id: str) -> str:
        return self.tenant_keys(tenant).pseudonym(scope, raw_id)

    def evict_tenant(self, tenant: str) -> None:
        """Forget every cached key of `tenant` now (on a termination event)."""
        for cache in (self._tenants, self._sealing, self._opening, self._ingest):
            cache.evict_tenant(tenant)
        self._ttl.pop(tenant, None)

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Every key-store change made inside (keys created, uses reserved, expiries pushed, keys
        destroyed) in one durable transaction, committed when the block exits: seal a batch inside
        it and send the ciphertext after it, and every key is durable before ciphertext under it
        leaves. If the block raises (`KeyStoreUnavailable` included) nothing of it is stored, and
        every cached key is forgotten, since those made or reserved inside are gone with it.

        Each tenant a batch uses is re-read from the store once in it (one read per tenant per
        batch), so a tenant terminated by another process is refused from the next batch on,
        without waiting for the staleness bound or a control event."""
        self._tenants.stale_all()
        try:
            with self.store.batch():
                yield
        except BaseException:
            for cache in (self._tenants, self._sealing, self._opening, self._ingest):
                cache.clear()
            raise

    # -- data keys -----------------------------------------------------------------------------
    def _expiry(self, tenant: str, scope: str) -> float | None:
        return self.clock() + self._ttl.get(tenant, DEFAULT_BUFFER_TTL_S) if scope == CONVERSATION else None

    def _data_key(self, tenant_keys: TenantKeys, row: KeyRow) -> DataKey:
        raw = tenant_keys.unwrap(row.nonce, row.wrapped, scope=row.scope, subject=row.subject, key_id=row.key_id)
        return DataKey(row.tenant, row.key_id, row.scope, row.subject, raw)

    def sealing_key(self, tenant: str, scope: str, raw_id: str) -> DataKey:
        """The current key of a conversation or contact, created on first use (one per subject,
        even when several processes ask at once); reserves encryptions in blocks."""
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}")
        tenant_keys = self.tenant_keys(tenant)
        subject = tenant_keys.pseudonym(scope, raw_id)
        cache_key = (tenant, scope, subject)
        entry, fresh = self._sealing.get(cache_key)
        if entry is not None and entry.budget > 0:
            if not fresh:
                bump = self._expiry(tenant, scope)
                if bump is not None and bump - entry.expiry_written < EXPIRY_SLACK_S:
                    bump = None  # a read-only check is enough
                if not self.store.touch(entry.value.key_id, bump):
                    self._sealing.drop(cache_key)
                    entry = None
                else:
                    self._sealing.refreshed(entry)
                    entry.expiry_written = bump or entry.expiry_written
            if entry is not None:
                entry.budget -= 1
                return entry.value

        key_id = secrets.token_hex(16)
        raw = os.urandom(32)
        nonce, wrapped = tenant_keys.wrap(raw, scope=scope, subject=subject, key_id=key_id)
        candidate = KeyRow(
            key_id,
            tenant,
            tenant_keys.generation,
            scope,
            subject,
            0,
            nonce,
            wrapped,
            self.clock(),
            self._expiry(tenant, scope),
        )
        try:
            row = self.store.acquire(candidate, block=self.reserve_block, cap=self.max_uses)
        except TenantFenced:
            self.evict_tenant(tenant)
            raise TenantTerminated(tenant) from None
        key = DataKey(tenant, key_id, scope, subject, raw) if row.key_id == key_id else self._data_key(tenant_keys, row)
        self._sealing.put(cache_key, key, tenant, budget=self.reserve_block - 1, expiry_written=row.expires_at or 0.0)
        return key

    def opening_key(self, tenant: str, key_id: str) -> DataKey:
        entry, fresh = self._opening.get(key_id)
        if entry is not None:
            if fresh:
                return entry.value
            if self.store.data_key(key_id) is not None:
                self._opening.refreshed(entry)
                return entry.value
            self._opening.drop(key_id)
        tenant_keys = self.tenant_keys(tenant)  # raises TenantTerminated for a shredded tenant
        row = self.store.data_key(key_id)
        if row is None:
            if self.store.was_destroyed(key_id):
                raise KeyDestroyed()
            raise InvalidCiphertext()
        if row.tenant != tenant:
            raise InvalidCiphertext()
        key = self._data_key(tenant_keys, row)
        self._opening.put(key_id, key, tenant)
        return key

    # -- envelopes -----------------------------------------------------------------------------
    def seal(self, tenant: str, scope: str, raw_id: str, topic: str, plaintext: bytes) -> Sealed:
        key = self.sealing_key(tenant, scope, raw_id)
        nonce, ciphertext = key.seal(plaintext, record_aad(tenant, key.key_id, topic, key.subject))
        return Sealed(tenant, scope, key.subject, key.key_id, nonce, ciphertext)

    def open(self, sealed: Sealed, topic: str) -> bytes:
        """The plaintext, `KeyDestroyed` if it was shredded, `InvalidCiphertext` for anything else."""
        key = self.opening_key(sealed.tenant, sealed.key_id)
        if key.subject != sealed.record_id:
            raise InvalidCiphertext()
        return key.open(
            sealed.nonce, sealed.ciphertext, record_aad(sealed.tenant, sealed.key_id, topic, sealed.record_id)
        )

    # -- sealed ingest (HPKE, RFC 9180; see keystore/ingest.py) ---------------------------------
    def ingest_key(self, tenant: str, kem: Kem) -> IngestPrivateKey:
        """The tenant's current ingest private key for `kem`, derived from its root (cached per
        generation); `UnknownTenant`, or `TenantTerminated` once the root is destroyed."""
        root = self.tenant_keys(tenant)  # checks the tenant is live, within the staleness bound
        cache_key = (tenant, root.generation, kem)
        entry, _fresh = self._ingest.get(cache_key)
        if entry is not None:
            return entry.value
        key = derive_private_key(root, kem)
        self._ingest.put(cache_key, key, tenant)
        return key

    def ingest_public_keys(self, tenant: str) -> list[IngestPublicKey]:
        """The tenant's ingest public keys of its current generation, one per KEM this build of
        `cryptography` supports (ML-KEM needs a backend that has it; X25519 is always there)."""
        out = []
        for kem in Kem:
            try:
                out.append(self.ingest_key(tenant, kem).public)
            except UnsupportedAlgorithm:
                continue
        return out

    def open_ingest(self, tenant: str, generation: int, kem: Kem, topic: str, ciphertext: bytes) -> bytes:
        """Open an ingest envelope. `TenantTerminated` for a terminated tenant, `KeyDestroyed`
        for an earlier generation (destroyed with it), `UnknownTenant`, or `InvalidCiphertext`
        for anything else (a later generation than the store knows included)."""
        key = self.ingest_key(tenant, kem)
        if generation < key.public.generation:
            raise KeyDestroyed("sealed to an earlier key generation, destroyed with it")
        if generation != key.public.generation:
            raise InvalidCiphertext()
        return key.open(ciphertext, topic)

    # -- destruction ---------------------------------------------------------------------------
    def destroy_subject(self, tenant: str, scope: str, raw_id: str, reason: str) -> list[str]:
        """Destroy a conversation's (on close) or contact's (on delete) keys; returns their ids."""
        subject = self.pseudonym(tenant, scope, raw_id)
        ids = self.store.destroy_subject(tenant, scope, subject, reason, self.clock())
        self._sealing.drop((tenant, scope, subject))
        for key_id in ids:
            self._opening.drop(key_id)
        return ids

    def destroy_tenant(
        self, tenant: str, reason: str, *, witness: Callable[[Probes], bytes | None] | None = None
    ) -> Destruction:
        """Crypto-shred the tenant: its root and every data key, and fence it for good.
        `witness` gets, inside the destroying transaction, `Probes` of every key about to go (each
        wrapped as stored and unwrapped), to check later that no copy of them is left on disk; bytes
        it returns the store keeps with the tenant's termination record, in that same transaction;
        if it raises nothing is destroyed."""

        seen = None if witness is None else functools.partial(self._witness, witness)
        result = self.store.destroy_tenant(tenant, reason, self.clock(), seen)
        self.evict_tenant(tenant)
        return result

    def _witness(
        self, report: Callable[[Probes], bytes | None], root: TenantRow, rows: Sequence[KeyRow]
    ) -> bytes | None:
        return report(Probes.of(self._destroyed_secrets(root, rows), secrets.token_bytes(SALT)))

    def _destroyed_secrets(self, root: TenantRow, rows: Sequence[KeyRow]) -> list[bytes]:
        """The tenant's root and data keys, wrapped as stored and unwrapped; only what unwraps."""
        found: list[bytes] = []
        if root.root_wrapped is None:
            return [row.wrapped for row in rows]
        if root.master_version not in self.master.versions:
            self._reload()
        raw_root = self._unwrap_root(self.master, root)
        tenant_keys = TenantKeys(root.tenant, root.generation, raw_root)
        found += [root.root_wrapped, raw_root]
        for row in rows:
            found.append(row.wrapped)
            with contextlib.suppress(InvalidCiphertext):  # another generation's leftover: wrapped only
                found.append(
                    tenant_keys.unwrap(row.nonce, row.wrapped, scope=row.scope, subject=row.subject, key_id=row.key_id)
                )
        return found

    def expire(self, limit: int = 10_000) -> list[str]:
        """Destroy conversation keys past last activity + TTL, and de-dup day keys past their
        window (the janitor calls this)."""
        ids = self.store.expire(self.clock(), limit)
        for key_id in ids:
            self._opening.drop(key_id)
        oldest_kept = self._today() - dt.timedelta(days=DEDUP_DAYS - 1)
        for row in self.store.tenants():
            is_day_key = row.tenant.startswith(DEDUP_PREFIX) and row.state == ACTIVE
            if is_day_key and dt.date.fromisoformat(row.tenant.removeprefix(DEDUP_PREFIX)) < oldest_kept:
                self.destroy_tenant(row.tenant, "de-dup window passed")
        return ids

    def _today(self) -> dt.date:
        return dt.datetime.fromtimestamp(self.clock(), dt.UTC).date()

    def dedup_token(self, tenant: str, event_id: str, kind: str, occurred_at: dt.datetime) -> bytes | None:
        """The same 16 bytes every time this event's `kind` fact is emitted, while the key of its
        day lives (DEDUP_DAYS); None outside that window, where exact counting is not promised."""
        day = occurred_at.astimezone(dt.UTC).date()
        today = self._today()
        if not today - dt.timedelta(days=DEDUP_DAYS - 1) <= day <= today + dt.timedelta(days=1):
            return None
        name = f"{DEDUP_PREFIX}{day.isoformat()}"
        try:
            day_keys = self.tenant_keys(name)
        except UnknownTenant:
            with contextlib.suppress(TenantExists):  # another worker made it first
                self.provision(name, 0)
            day_keys = self.tenant_keys(name)
        except TenantTerminated:
            return None
        return bytes.fromhex(day_keys.pseudonym("dedup", f"{tenant}\x00{event_id}\x00{kind}"))

    def check_keyring(self, ring: MasterKeyring) -> None:
        """Raise `MasterKeyError` unless `ring` opens every root in the store (tenants' and the
        store's own day keys): a keyring another host has rotated past, or one that is not this
        store's, must not be rotated further (its new version would clash with the real one). The
        message names the tenant and the version, never key bytes."""
        for row in self.store.tenants():
            if row.root_wrapped is None:
                continue
            try:
                self._unwrap_root(ring, row)
            except (InvalidCiphertext, MasterKeyError):
                raise MasterKeyError(
                    f"master_key: this host's keyring (current v{ring.current}) cannot open the root of "
                    f"{row.tenant!r}, wrapped under v{row.master_version}: it is stale or not this key store's "
                    "(rotated on another host?); copy the current keyring here first. Nothing was changed"
                ) from None

    def rotate_master(self, new_master: MasterKeyring) -> int:
        """Re-wrap every active root under `new_master.current`; data keys and ciphertext stay as they
        are. Roots are unwrapped with `new_master` (which still holds the versions being replaced)."""

        def rewrap(row: TenantRow) -> tuple[int, bytes, bytes]:
            ring = new_master if row.master_version in new_master.versions else self.master
            root = self._unwrap_root(ring, row)
            return self._wrap_root(new_master, row.tenant, row.generation, root)

        count = self.store.rewrap_roots(new_master.current, rewrap)
        self.master = new_master
        return count

    def service_secret(self, service: str) -> bytes:
        """A 32-byte secret for an internal service (e.g. the DuckDB file key), derived from the
        root of a reserved pseudo-tenant `~service-<name>`: wrapped, rotated and shreddable like
        any root, created on first use. Callers must never log it."""
        name = f"~service-{service}"
        try:
            keys = self.tenant_keys(name)
        except UnknownTenant:
            with contextlib.suppress(TenantExists):
                self.provision(name, 0)
            keys = self.tenant_keys(name)
        return keys.derive(service)

    def report(self) -> list[TenantCounts]:
        return [c for c in self.store.counts() if not c.tenant.startswith("~")]
