"""The key store for several hosts: PostgreSQL through psycopg 3 and a small connection pool.

Selected by `SHREDLINE_KEY_STORE=postgresql://user:password@host:port/db?sslmode=verify-full&…`
(libpq's TLS parameters; the password never appears in a message, a log line or a repr).

Concurrency, as the SQLite store promises it on one host:
- One current key per (tenant, scope, subject): a partial unique index, the current row locked
  `FOR UPDATE` while its uses are reserved, and `INSERT … ON CONFLICT DO NOTHING` when there is
  none (the loser of a race re-reads the winner's key).
- The tenant fence: `acquire` and every key change hold the tenant row `FOR SHARE`, a destruction
  holds it `FOR UPDATE`, so no key is created for a tenant once its destruction committed.
- Store-wide locks (`lock`: the audit relay, the master key rotation) are session advisory locks,
  released by the server when their holder dies.
- Audit outbox ids are allocated from a sequence, so they can commit out of order: writers hold a
  shared advisory lock from the insert to their commit, and `pending_audit` takes it exclusively
  for a moment, so every id it can see below the ones it returns has committed (`drop_audit`
  removes "up to id N" without losing a record committed late).

Bounded waits: every statement runs with `lock_timeout` (the busy timeout) and a connection is
waited for at most as long; past either, `KeyStoreUnavailable` says in one line what blocks
(the sessions holding the locks, by pid and application name).

Residue: PostgreSQL keeps a deleted or updated row's old version in its heap pages until vacuum,
and its WAL (and any base backup or replica) longer; nothing here can overwrite those bytes. So
`local` is False: a termination certifies a destruction only once the master key versions that
wrapped the destroyed root are destroyed as well (docs/key-residue.md). `checkpoint` still
vacuums the key tables and asks for a checkpoint, best effort, to shorten the exposure.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import secrets
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import psycopg_pool
from psycopg import errors as pg_errors
from psycopg.pq import TransactionStatus

from shredline.keystore.dburl import DatabaseUrl, transport_warning
from shredline.keystore.errors import KeystoreError, KeyStoreUnavailable, StaleMasterKey, TenantExists, UnknownTenant
from shredline.keystore.locking import LockTimeout
from shredline.keystore.store import (
    ACTIVE,
    CONTACT,
    CONVERSATION,
    TERMINATED,
    AuditEntry,
    AuditHead,
    Destruction,
    KeyRow,
    Policy,
    TenantCounts,
    TenantFenced,
    TenantRow,
    TerminationRecord,
    Witness,
    key_digest,
)

log = logging.getLogger("shredline.keystore")

# Advisory lock keys: one namespace (the first int) for Shredline, the second names the lock.
_NAMESPACE = 0x5348_5244  # "SHRD"
_SCHEMA_LOCK = 1
_OUTBOX_LOCK = 2
POOL_MAX = 4  # a few connections per process: one may hold a store-wide lock while others work

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tenants (
    tenant TEXT PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('active', 'terminated')),
    generation INTEGER NOT NULL,
    master_version INTEGER,
    root_nonce BYTEA,
    root_wrapped BYTEA,
    buffer_ttl_s BIGINT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    terminated_at DOUBLE PRECISION
);
CREATE TABLE IF NOT EXISTS data_keys (
    key_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    generation INTEGER NOT NULL,
    scope TEXT NOT NULL CHECK (scope IN ('conversation', 'contact')),
    subject TEXT NOT NULL,
    version INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('current', 'retired')),
    nonce BYTEA NOT NULL,
    wrapped BYTEA NOT NULL,
    uses BIGINT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION,
    UNIQUE (tenant, scope, subject, version)
);
CREATE UNIQUE INDEX IF NOT EXISTS data_keys_current ON data_keys (tenant, scope, subject) WHERE state = 'current';
CREATE INDEX IF NOT EXISTS data_keys_expiry ON data_keys (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS destroyed_keys (
    key_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    generation INTEGER NOT NULL,
    scope TEXT NOT NULL,
    reason TEXT NOT NULL,
    destroyed_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS destroyed_keys_tenant ON destroyed_keys (tenant, generation);
CREATE TABLE IF NOT EXISTS audit_outbox (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at DOUBLE PRECISION NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    tenant TEXT,
    subject TEXT,
    details TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_head (
    one INTEGER PRIMARY KEY CHECK (one = 1), seq BIGINT NOT NULL, hash BYTEA NOT NULL,
    anchored_at DOUBLE PRECISION NOT NULL, topic_offset BIGINT
);
CREATE TABLE IF NOT EXISTS policies (
    version TEXT PRIMARY KEY, sha256 TEXT NOT NULL, published_at DOUBLE PRECISION NOT NULL, operator TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS policy_acceptances (
    tenant TEXT NOT NULL, version TEXT NOT NULL REFERENCES policies (version),
    accepted_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (tenant, version)
);
CREATE TABLE IF NOT EXISTS operators (
    principal TEXT PRIMARY KEY, added_at DOUBLE PRECISION NOT NULL, added_by TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS terminations (
    tenant TEXT NOT NULL, generation INTEGER NOT NULL, progress TEXT, probes BYTEA, PRIMARY KEY (tenant, generation)
)
"""
_KEY_COLUMNS = (
    "key_id, tenant, generation, scope, subject, version, nonce, wrapped, created_at, expires_at, uses, state"
)
_TENANT_COLUMNS = (
    "tenant, state, generation, master_version, root_nonce, root_wrapped, buffer_ttl_s, created_at, terminated_at"
)
_TABLES = ("tenants", "data_keys", "destroyed_keys", "audit_outbox", "audit_head", "meta", "terminations")


def _lock_id(name: str) -> int:
    """The advisory lock's second key for a store-wide lock `name` (stable across processes)."""
    return zlib.crc32(name.encode()) & 0x7FFF_FFFF


class PostgresKeyStore:
    def __init__(
        self, url: DatabaseUrl, busy_timeout_s: float = 10.0, actor: str = "shredline", pool_max: int = POOL_MAX
    ) -> None:
        self.url = url
        self.actor = actor  # who the audit records of this process's key changes name
        self._timeout_s = busy_timeout_s
        self._batch = threading.local()  # .conn: the connection of this thread's `batch`, if any
        self._checkpoint_due = False
        timeout_ms = max(1, int(busy_timeout_s * 1000))
        settings: dict[str, Any] = {
            "autocommit": True,
            "application_name": f"shredline {actor}"[:63],
            # after the URL's own options (a search_path, say), which these would otherwise replace
            "options": f"{url.params.get('options', '')} -c lock_timeout={timeout_ms} "
            "-c idle_in_transaction_session_timeout=600000".strip(),
        }
        warning = transport_warning(url)
        if warning is not None:
            log.warning("%s", warning)
        try:
            # One connection first, so a refusal (TLS, password, server down) is said as the server
            # said it, rather than as a pool that did not fill in time.
            first: dict[str, Any] = dict(settings)
            if "connect_timeout" not in url.params:
                first["connect_timeout"] = max(2, int(busy_timeout_s))
            psycopg.connect(url.reveal(), **first).close()
            self._pool = psycopg_pool.ConnectionPool(
                url.reveal(),
                min_size=1,
                max_size=max(2, pool_max),
                timeout=max(busy_timeout_s, 1.0),
                kwargs=settings,
                name="shredline-keys",
                open=False,
            )
            self._pool.open(wait=True, timeout=max(busy_timeout_s, 5.0))
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            raise KeyStoreUnavailable(f"key store {url}: cannot connect: {_one_line(exc, url)}") from None
        with self._write() as db:
            db.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_NAMESPACE, _SCHEMA_LOCK))
            for statement in filter(str.strip, SCHEMA.split(";")):
                db.execute(statement)
            db.execute("INSERT INTO meta (k, v) VALUES ('schema_version', '1') ON CONFLICT DO NOTHING")
            # 0: no rotation yet; the row exists so that provisioning can lock it against one
            db.execute("INSERT INTO meta (k, v) VALUES ('master_version', '0') ON CONFLICT DO NOTHING")
            db.execute(
                "INSERT INTO meta (k, v) VALUES ('store_id', %s) ON CONFLICT DO NOTHING", (secrets.token_hex(8),)
            )
            self._store_id = str(_one(db, "SELECT v FROM meta WHERE k = 'store_id'")[0])

    def __repr__(self) -> str:
        return f"PostgresKeyStore({self.url.masked!r}, actor={self.actor!r})"

    # -- plumbing ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        """The calling thread's batch connection inside `batch`, else one from the pool."""
        held: psycopg.Connection[Any] | None = getattr(self._batch, "conn", None)
        try:
            if held is not None:
                yield held
                return
            with self._pool.connection() as conn:
                yield conn
        except psycopg_pool.PoolTimeout:
            raise KeyStoreUnavailable(
                f"key store {self.url}: no connection within {self._timeout_s:.0f} s (server down or unreachable, "
                f"or this process's {self._pool.max_size} connections all busy)"
            ) from None
        except pg_errors.LockNotAvailable:
            raise self._locked() from None
        except (psycopg.OperationalError, pg_errors.InsufficientPrivilege) as exc:
            raise KeyStoreUnavailable(f"key store {self.url}: {_one_line(exc, self.url)}") from None

    @contextlib.contextmanager
    def _write(self) -> Iterator[psycopg.Connection[Any]]:
        """One transaction (read committed; rows it changes are locked until it ends); inside a
        `batch`, a savepoint of the batch's transaction that rolls back alone."""
        with self._connection() as conn, conn.transaction():
            yield conn

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """One transaction for every call this thread makes inside the block (see `KeyStore.batch`):
        the thread keeps one pooled connection, each call is a savepoint in it, and the block's exit
        commits. Row locks are taken by the changes themselves, so a batch that changes nothing
        locks nobody out; other threads use other connections and see nothing of it before."""
        assert getattr(self._batch, "conn", None) is None, "batches do not nest"
        with self._connection() as conn, conn.transaction():
            self._batch.conn = conn
            try:
                yield
            finally:
                self._batch.conn = None
            if conn.info.transaction_status == TransactionStatus.INERROR:
                # A statement failed outside a savepoint and was turned into a per-record outcome
                # upstream: the server would answer the COMMIT with a silent ROLLBACK, and outputs
                # under keys that were never stored would follow. Fail the whole batch instead.
                raise KeyStoreUnavailable("key store: a statement of the batch failed; nothing of it was committed")
        if self._checkpoint_due:
            self._checkpoint_due = False
            self.checkpoint()

    def _read(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        with self._connection() as conn:
            return conn.execute(sql, args).fetchall()

    def _locked(self) -> KeyStoreUnavailable:
        """What a lock timeout says: which sessions hold locks on the store's tables."""
        who = ""
        with contextlib.suppress(psycopg.Error, psycopg_pool.PoolTimeout), self._pool.connection() as conn:
            who = _holders(
                conn,
                "l.locktype = 'relation' AND l.relation = ANY (%s::regclass[])",
                (list(_TABLES),),
            )
        held = f" (held by {who})" if who else ""
        return KeyStoreUnavailable(f"key store locked: waited {self._timeout_s:.1f} s for a row or table lock{held}")

    @property
    def local(self) -> bool:
        return False

    def files(self) -> list[Path]:
        return []  # the server's files are on the server, not here

    def checkpoint(self) -> str | None:
        """Vacuum the key tables (drops dead row versions from their pages, for later reuse) and
        checkpoint, best effort and without waiting on anyone's locks: one line on what blocked."""
        if getattr(self._batch, "conn", None) is not None:  # VACUUM cannot run in a transaction
            self._checkpoint_due = True
            return None
        problems = []
        with self._connection() as conn:
            try:
                conn.execute("SET lock_timeout = 1")
                conn.execute("VACUUM (SKIP_LOCKED) tenants, data_keys")
            except psycopg.Error as exc:
                problems.append(f"vacuum: {_one_line(exc, self.url)}")
            try:
                conn.execute("CHECKPOINT")
            except pg_errors.InsufficientPrivilege:
                pass  # needs superuser or pg_checkpoint: the server's own checkpoints follow
            except psycopg.Error as exc:
                problems.append(f"checkpoint: {_one_line(exc, self.url)}")
            finally:
                conn.execute("RESET lock_timeout")
        return "; ".join(problems) or None

    def _audit(
        self,
        db: psycopg.Connection[Any],
        action: str,
        tenant: str | None,
        subject: str | None = None,
        details: dict[str, str] | None = None,
    ) -> int:
        # The shared outbox lock is taken (in the FROM) before the id is drawn (in the insert's row).
        return int(
            _one(
                db,
                "INSERT INTO audit_outbox (at, actor, action, tenant, subject, details) "
                "SELECT %s, %s, %s, %s, %s, %s FROM pg_advisory_xact_lock_shared(%s, %s) RETURNING id",
                (
                    time.time(),
                    self.actor,
                    action,
                    tenant,
                    subject,
                    json.dumps(details or {}, sort_keys=True),
                    _NAMESPACE,
                    _OUTBOX_LOCK,
                ),
            )[0]
        )

    # -- tenants -------------------------------------------------------------------------------
    def create_tenant(self, row: TenantRow, *, reprovision: bool) -> TenantRow:
        with self._write() as db:
            current = self._master_version(db, lock=True)
            if current is not None and (row.master_version is None or row.master_version < current):
                raise StaleMasterKey(row.master_version, current)
            existing = db.execute(
                "SELECT state, generation FROM tenants WHERE tenant = %s FOR UPDATE", (row.tenant,)
            ).fetchone()
            if existing is not None:
                if existing[0] != TERMINATED or not reprovision:
                    raise TenantExists(row.tenant, existing[0])
                if row.generation <= existing[1]:
                    raise TenantExists(row.tenant, f"generation {existing[1]} already used")
                db.execute("DELETE FROM tenants WHERE tenant = %s", (row.tenant,))
            inserted = db.execute(
                f"INSERT INTO tenants ({_TENANT_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, NULL) "
                "ON CONFLICT (tenant) DO NOTHING",
                (
                    row.tenant,
                    ACTIVE,
                    row.generation,
                    row.master_version,
                    row.root_nonce,
                    row.root_wrapped,
                    row.buffer_ttl_s,
                    row.created_at,
                ),
            ).rowcount
            if not inserted:  # another host provisioned it since our read
                raise TenantExists(row.tenant, ACTIVE)
            self._audit(db, "key.root.create", row.tenant, None, {"generation": str(row.generation)})
        return row

    @staticmethod
    def _master_version(db: psycopg.Connection[Any], lock: bool = False) -> int | None:
        found = db.execute(f"SELECT v FROM meta WHERE k = 'master_version'{' FOR SHARE' if lock else ''}").fetchone()
        return int(found[0]) or None if found is not None else None

    def tenant(self, tenant: str) -> TenantRow | None:
        rows = self._read(f"SELECT {_TENANT_COLUMNS} FROM tenants WHERE tenant = %s", (tenant,))
        return _tenant_row(rows[0]) if rows else None

    def tenants(self) -> list[TenantRow]:
        return [_tenant_row(r) for r in self._read(f"SELECT {_TENANT_COLUMNS} FROM tenants ORDER BY tenant")]

    # -- data keys -----------------------------------------------------------------------------
    def acquire(self, candidate: KeyRow, *, block: int, cap: int) -> KeyRow:
        with self._write() as db:
            fence = db.execute(
                "SELECT state, generation FROM tenants WHERE tenant = %s FOR SHARE", (candidate.tenant,)
            ).fetchone()
            if fence is None or fence[0] != ACTIVE or fence[1] != candidate.generation:
                raise TenantFenced(candidate.tenant, fence[0] if fence else None)
            where = (candidate.tenant, candidate.scope, candidate.subject)
            while True:
                current = db.execute(
                    f"SELECT {_KEY_COLUMNS} FROM data_keys "
                    "WHERE tenant = %s AND scope = %s AND subject = %s AND state = 'current' FOR UPDATE",
                    where,
                ).fetchone()
                if current is not None:
                    row = _key_row(current)
                    if row.uses + block <= cap:
                        expires = None if row.expires_at is None else max(row.expires_at, candidate.expires_at or 0)
                        updated = db.execute(
                            f"UPDATE data_keys SET uses = uses + %s, expires_at = %s WHERE key_id = %s "
                            f"RETURNING {_KEY_COLUMNS}",
                            (block, expires, row.key_id),
                        ).fetchone()
                        assert updated is not None
                        return _key_row(updated)
                    db.execute("UPDATE data_keys SET state = 'retired' WHERE key_id = %s", (row.key_id,))
                    version = row.version + 1
                else:
                    version = 1
                created = db.execute(
                    f"INSERT INTO data_keys ({_KEY_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, "
                    f"'current') ON CONFLICT DO NOTHING RETURNING {_KEY_COLUMNS}",
                    (
                        candidate.key_id,
                        candidate.tenant,
                        candidate.generation,
                        candidate.scope,
                        candidate.subject,
                        version,
                        candidate.nonce,
                        candidate.wrapped,
                        candidate.created_at,
                        candidate.expires_at,
                        block,
                    ),
                ).fetchone()
                if created is not None:
                    break
                # Another process created this subject's key after our read (and has committed: the
                # insert waited for it); take theirs.
            details = {"scope": candidate.scope, "version": str(version), "generation": str(candidate.generation)}
            self._audit(db, "key.create", candidate.tenant, key_digest(candidate.key_id), details)
            return _key_row(created)

    def touch(self, key_id: str, expires_at: float | None) -> bool:
        if expires_at is None:
            return bool(
                self._read(
                    "SELECT 1 FROM data_keys k JOIN tenants t ON t.tenant = k.tenant AND t.generation = k.generation "
                    "AND t.state = 'active' WHERE k.key_id = %s AND k.state = 'current'",
                    (key_id,),
                )
            )
        with self._write() as db:
            return (
                db.execute(
                    "UPDATE data_keys k SET expires_at = CASE WHEN k.expires_at IS NULL THEN NULL "
                    "ELSE greatest(k.expires_at, %s) END FROM tenants t "
                    "WHERE k.key_id = %s AND k.state = 'current' AND t.tenant = k.tenant AND t.state = 'active' "
                    "AND t.generation = k.generation",
                    (expires_at, key_id),
                ).rowcount
                == 1
            )

    def data_key(self, key_id: str) -> KeyRow | None:
        rows = self._read(
            f"SELECT {', '.join('k.' + c.strip() for c in _KEY_COLUMNS.split(','))} FROM data_keys k "
            "JOIN tenants t ON t.tenant = k.tenant AND t.generation = k.generation AND t.state = 'active' "
            "WHERE k.key_id = %s",
            (key_id,),
        )
        return _key_row(rows[0]) if rows else None

    def was_destroyed(self, key_id: str) -> bool:
        return bool(self._read("SELECT 1 FROM destroyed_keys WHERE key_id = %s", (key_id,)))

    def _tombstone(
        self,
        db: psycopg.Connection[Any],
        where: str,
        args: tuple[object, ...],
        reason: str,
        now: float,
        each: bool = True,
    ) -> list[str]:
        """Destroy the matching keys (the caller holds their tenant row); `each` audits one record
        per key (a tenant's destruction is audited once, with counts and a digest of its key ids).
        The deleted rows' bytes stay in dead row versions and the WAL: see the module docstring."""
        rows = db.execute(
            f"WITH gone AS (DELETE FROM data_keys WHERE {where} RETURNING key_id, tenant, generation, scope) "
            "INSERT INTO destroyed_keys (key_id, tenant, generation, scope, reason, destroyed_at) "
            "SELECT key_id, tenant, generation, scope, %s, %s FROM gone ON CONFLICT DO NOTHING "
            "RETURNING key_id, tenant, scope",
            (*args, reason, now),
        ).fetchall()
        if each:
            for key_id, tenant, scope in rows:
                self._audit(db, "key.destroy", tenant, key_digest(key_id), {"scope": scope, "reason": reason})
        return [r[0] for r in rows]

    def destroy_subject(self, tenant: str, scope: str, subject: str, reason: str, now: float) -> list[str]:
        with self._write() as db:
            db.execute("SELECT 1 FROM tenants WHERE tenant = %s FOR SHARE", (tenant,))
            return self._tombstone(
                db, "tenant = %s AND scope = %s AND subject = %s", (tenant, scope, subject), reason, now
            )

    def destroy_tenant(self, tenant: str, reason: str, now: float, witness: Witness | None = None) -> Destruction:
        with self._write() as db:
            fenced = db.execute(
                f"INSERT INTO tenants ({_TENANT_COLUMNS}) VALUES (%s, 'terminated', 0, NULL, NULL, NULL, 0, %s, %s) "
                "ON CONFLICT (tenant) DO NOTHING RETURNING tenant",
                (tenant, now, now),
            ).fetchone()
            if fenced is not None:  # a tenant we never saw is fenced too: old events must never create keys
                return Destruction(tenant, 0, (), {CONVERSATION: 0, CONTACT: 0}, already_terminated=False)
            root = _tenant_row(
                _one(db, f"SELECT {_TENANT_COLUMNS} FROM tenants WHERE tenant = %s FOR UPDATE", (tenant,))
            )
            if witness is not None:
                keys = [
                    _key_row(r)
                    for r in db.execute(f"SELECT {_KEY_COLUMNS} FROM data_keys WHERE tenant = %s", (tenant,))
                ]
                if root.root_wrapped is not None or keys:
                    probes = witness(root, keys)
                    if probes is not None:
                        db.execute(
                            "INSERT INTO terminations (tenant, generation, probes) VALUES (%s, %s, %s) "
                            "ON CONFLICT (tenant, generation) DO UPDATE SET probes = excluded.probes",
                            (tenant, root.generation, probes),
                        )
            by_scope = {CONVERSATION: 0, CONTACT: 0}
            for scope, n in db.execute(
                "SELECT scope, count(*) FROM data_keys WHERE tenant = %s GROUP BY scope", (tenant,)
            ):
                by_scope[scope] = n
            if root.state == TERMINATED:  # a re-run (the first crashed after committing): what it destroyed
                for scope, n in db.execute(
                    "SELECT d.scope, count(*) FROM destroyed_keys d JOIN tenants t ON t.tenant = d.tenant "
                    "WHERE d.tenant = %s AND d.generation = %s AND d.destroyed_at = t.terminated_at GROUP BY d.scope",
                    (tenant, root.generation),
                ):
                    by_scope[scope] = by_scope.get(scope, 0) + n
            ids = self._tombstone(db, "tenant = %s", (tenant,), reason, now, each=False)
            digest = hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:32]
            details = {"generation": str(root.generation), "reason": reason, "key_ids_sha256": digest}
            details |= {f"{scope}_keys": str(n) for scope, n in by_scope.items()}
            if root.state != TERMINATED:
                self._audit(db, "key.tenant.destroy", tenant, None, details)
            db.execute(
                "UPDATE tenants SET state = 'terminated', master_version = NULL, root_nonce = NULL, "
                "root_wrapped = NULL, terminated_at = coalesce(terminated_at, %s) WHERE tenant = %s",
                (now, tenant),
            )
        return Destruction(tenant, root.generation, tuple(ids), by_scope, already_terminated=root.state == TERMINATED)

    def expire(self, now: float, limit: int) -> list[str]:
        with self._write() as db:
            ids = [
                r[0]
                for r in db.execute(
                    "SELECT key_id FROM data_keys WHERE expires_at IS NOT NULL AND expires_at < %s "
                    "ORDER BY expires_at LIMIT %s FOR UPDATE SKIP LOCKED",
                    (now, limit),
                )
            ]
            if ids:
                self._tombstone(db, "key_id = ANY (%s)", (ids,), "expired", now)
        return ids

    def rewrap_roots(self, version: int, rewrap: Callable[[TenantRow], tuple[int, bytes, bytes]]) -> int:
        with self._write() as db:
            current = int(_one(db, "SELECT v FROM meta WHERE k = 'master_version' FOR UPDATE")[0])
            if current and version < current:
                raise StaleMasterKey(version, current)
            db.execute("UPDATE meta SET v = %s WHERE k = 'master_version'", (str(version),))
            rows = [
                _tenant_row(r)
                for r in db.execute(
                    f"SELECT {_TENANT_COLUMNS} FROM tenants WHERE state = 'active' ORDER BY tenant FOR UPDATE"
                ).fetchall()
            ]
            for row in rows:
                new_version, nonce, wrapped = rewrap(row)
                db.execute(
                    "UPDATE tenants SET master_version = %s, root_nonce = %s, root_wrapped = %s WHERE tenant = %s",
                    (new_version, nonce, wrapped, row.tenant),
                )
            self._audit(
                db, "key.master.rotate", None, None, {"roots_rewrapped": str(len(rows)), "version": str(version)}
            )
        return len(rows)

    def counts(self) -> list[TenantCounts]:
        rows = self._read(
            "SELECT t.tenant, t.state, t.generation, t.buffer_ttl_s, "
            " (SELECT count(*) FROM data_keys k WHERE k.tenant = t.tenant AND k.scope = 'conversation'"
            "  AND k.state = 'current'),"
            " (SELECT count(*) FROM data_keys k WHERE k.tenant = t.tenant AND k.scope = 'contact'"
            "  AND k.state = 'current'),"
            " (SELECT count(*) FROM data_keys k WHERE k.tenant = t.tenant AND k.state = 'retired'),"
            " (SELECT count(*) FROM destroyed_keys d WHERE d.tenant = t.tenant) "
            "FROM tenants t ORDER BY t.tenant"
        )
        return [TenantCounts(*r) for r in rows]

    def destroyed_keys(self, tenant: str, generation: int) -> list[tuple[str, str]]:
        rows = self._read(
            "SELECT key_id, scope FROM destroyed_keys WHERE tenant = %s AND generation = %s ORDER BY key_id",
            (tenant, generation),
        )
        return [(str(k), str(s)) for k, s in rows]

    # -- terminations and store-wide locks ----------------------------------------------------
    def termination(self, tenant: str, generation: int) -> TerminationRecord | None:
        rows = self._read(
            "SELECT progress, probes FROM terminations WHERE tenant = %s AND generation = %s", (tenant, generation)
        )
        return TerminationRecord(rows[0][0], None if rows[0][1] is None else bytes(rows[0][1])) if rows else None

    def save_termination(self, tenant: str, generation: int, progress: str, *, drop_probes: bool = False) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO terminations (tenant, generation, progress) VALUES (%s, %s, %s) ON CONFLICT "
                "(tenant, generation) DO UPDATE SET progress = excluded.progress, "
                "probes = CASE WHEN %s THEN NULL ELSE terminations.probes END",
                (tenant, generation, progress, drop_probes),
            )

    @contextlib.contextmanager
    def lock(self, name: str, wait_s: float, tell_s: float) -> Iterator[None]:
        """A session advisory lock on a connection held for the block (the server releases it if
        this process dies); polled, so the wait is bounded and its holder named."""
        key = (_NAMESPACE, _lock_id(name))
        with self._connection() as conn:
            started, told = time.monotonic(), False
            while not _one(conn, "SELECT pg_try_advisory_lock(%s, %s)", key)[0]:
                waited = time.monotonic() - started
                if waited >= wait_s or (not told and waited >= tell_s):
                    holder = _holders(conn, "l.locktype = 'advisory' AND l.classid = %s AND l.objid = %s", key)
                    holder = holder or "another session"
                    if waited >= wait_s:
                        raise LockTimeout(f"the key store's {name} lock", holder, wait_s)
                    log.warning("waiting for the key store's %s lock, held by %s", name, holder)
                    told = True
                time.sleep(0.05)
            try:
                yield
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s, %s)", key)

    # -- audit outbox --------------------------------------------------------------------------
    @property
    def store_id(self) -> str:
        return self._store_id

    def record(
        self, action: str, tenant: str | None = None, subject: str | None = None, details: dict[str, str] | None = None
    ) -> int:
        with self._write() as db:
            return self._audit(db, action, tenant, subject, details)

    def pending_audit(self, limit: int) -> list[AuditEntry]:
        with self._write() as db:
            # Every writer that took an outbox id has committed once this is granted (module docstring).
            db.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_NAMESPACE, _OUTBOX_LOCK))
            rows = db.execute(
                "SELECT id, at, actor, action, tenant, subject, details FROM audit_outbox ORDER BY id LIMIT %s",
                (limit,),
            ).fetchall()
        return [
            AuditEntry(i, at, actor, action, tenant, subject, json.loads(d))
            for i, at, actor, action, tenant, subject, d in rows
        ]

    def drop_audit(self, up_to: int, head: AuditHead, offset: int | None = None) -> None:
        with self._write() as db:
            anchored = db.execute("SELECT seq FROM audit_head FOR UPDATE").fetchone()
            if anchored is not None and head.seq <= anchored[0]:
                raise KeystoreError(f"audit head seq {head.seq} is not past the anchored seq {anchored[0]}")
            db.execute("DELETE FROM audit_outbox WHERE id <= %s", (up_to,))
            db.execute(
                "INSERT INTO audit_head (one, seq, hash, anchored_at, topic_offset) VALUES (1, %s, %s, %s, %s) "
                "ON CONFLICT (one) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, "
                "anchored_at = excluded.anchored_at, topic_offset = excluded.topic_offset",
                (head.seq, head.hash, time.time(), offset),
            )

    def audit_head(self) -> AuditHead | None:
        rows = self._read("SELECT seq, hash FROM audit_head")
        return AuditHead(int(rows[0][0]), bytes(rows[0][1])) if rows else None

    def audit_head_offset(self) -> int | None:
        rows = self._read("SELECT topic_offset FROM audit_head")
        return int(rows[0][0]) if rows and rows[0][0] is not None else None

    # -- policies ------------------------------------------------------------------------------
    def publish_policy(self, policy: Policy) -> bool:
        with self._write() as db:
            inserted = db.execute(
                "INSERT INTO policies (version, sha256, published_at, operator) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (version) DO NOTHING",
                (policy.version, policy.sha256, policy.published_at, policy.operator),
            ).rowcount
            if not inserted:
                existing = _one(db, "SELECT sha256 FROM policies WHERE version = %s", (policy.version,))
                if existing[0] != policy.sha256:
                    raise KeystoreError(f"policy {policy.version} was already published with a different text")
                return False
            self._audit(db, "policy.publish", None, None, {"version": policy.version, "sha256": policy.sha256})
            return True

    def policies(self) -> list[Policy]:
        rows = self._read("SELECT version, sha256, published_at, operator FROM policies ORDER BY published_at")
        return [Policy(*r) for r in rows]

    def accept_policy(self, tenant: str, version: str, now: float) -> bool:
        with self._write() as db:
            state = db.execute("SELECT state FROM tenants WHERE tenant = %s FOR SHARE", (tenant,)).fetchone()
            if state is None or state[0] != ACTIVE:
                raise UnknownTenant(tenant) if state is None else TenantFenced(tenant, state[0])
            if db.execute("SELECT 1 FROM policies WHERE version = %s", (version,)).fetchone() is None:
                raise KeystoreError(f"policy {version} was never published")
            accepted = db.execute(
                "INSERT INTO policy_acceptances (tenant, version, accepted_at) VALUES (%s, %s, %s) "
                "ON CONFLICT DO NOTHING",
                (tenant, version, now),
            ).rowcount
            if accepted:
                self._audit(db, "policy.accept", tenant, None, {"version": version})
            return accepted == 1

    def acceptances(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for tenant, version in self._read("SELECT tenant, version FROM policy_acceptances"):
            out.setdefault(str(tenant), set()).add(str(version))
        return out

    # -- operator allow-list -------------------------------------------------------------------
    def allow_operator(self, principal: str, allowed: bool, now: float) -> bool:
        with self._write() as db:
            if allowed:
                changed = db.execute(
                    "INSERT INTO operators (principal, added_at, added_by) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                    (principal, now, self.actor),
                ).rowcount
            else:
                changed = db.execute("DELETE FROM operators WHERE principal = %s", (principal,)).rowcount
            if changed:
                action = "operators.allow" if allowed else "operators.revoke"
                self._audit(db, action, None, None, {"principal": principal})
            return changed == 1

    def operators(self) -> list[str]:
        return [str(p) for (p,) in self._read("SELECT principal FROM operators ORDER BY principal")]

    def close(self) -> None:
        self._pool.close()


def _one(db: psycopg.Connection[Any], sql: str, args: tuple[object, ...] = ()) -> tuple[Any, ...]:
    row = db.execute(sql, args).fetchone()
    if row is None:
        raise KeystoreError(f"key store: expected a row from {sql.split()[0]} and got none")
    return row  # type: ignore[no-any-return]


def _holders(conn: psycopg.Connection[Any], where: str, args: tuple[object, ...]) -> str:
    """The other sessions holding a lock that matches `where` (pid, application, client address)."""
    rows = conn.execute(
        "SELECT DISTINCT a.pid, a.application_name, a.client_addr FROM pg_locks l "
        f"JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.granted AND l.pid <> pg_backend_pid() AND {where} "
        "ORDER BY a.pid",
        args,
    ).fetchall()
    return ", ".join(
        f"pid {pid}{f' ({app})' if app else ''}{f' from {addr}' if addr else ''}" for pid, app, addr in rows
    )


def _one_line(exc: BaseException, url: DatabaseUrl) -> str:
    """The driver's message on one line, every secret of `url` taken out should it echo one."""
    return " ".join(url.scrub(str(exc)).split()) or type(exc).__name__


def _tenant_row(row: tuple[Any, ...]) -> TenantRow:
    values = list(row)
    for i in (4, 5):  # bytea comes back as bytes already; memoryview on some paths
        if values[i] is not None:
            values[i] = bytes(values[i])
    return TenantRow(*values)


def _key_row(row: tuple[Any, ...]) -> KeyRow:
    values = list(row)
    values[6], values[7] = bytes(values[6]), bytes(values[7])
    return KeyRow(*values)
