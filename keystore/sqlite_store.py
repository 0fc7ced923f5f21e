"""The embedded key store: one SQLite file, safe for several processes on one host.

WAL mode for concurrent readers; `BEGIN IMMEDIATE` so writers serialise instead of failing
mid-transaction; `synchronous=FULL` because a key that is lost after its ciphertext was
published means lost data; `secure_delete` so deleted key bytes are overwritten with zeros,
and a WAL checkpoint (TRUNCATE) after every destruction so no old page image keeps them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from keystore.errors import KeyStoreUnavailable, TenantExists
from keystore.store import (
    ACTIVE,
    CONTACT,
    CONVERSATION,
    TERMINATED,
    Destruction,
    KeyRow,
    TenantCounts,
    TenantFenced,
    TenantRow,
)

log = logging.getLogger("shredline.keystore")
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tenants (
    tenant TEXT PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('active', 'terminated')),
    generation INTEGER NOT NULL,
    master_version INTEGER,
    root_nonce BLOB,
    root_wrapped BLOB,
    buffer_ttl_s INTEGER NOT NULL,
    created_at REAL NOT NULL,
    terminated_at REAL
);
CREATE TABLE IF NOT EXISTS data_keys (
    key_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    generation INTEGER NOT NULL,
    scope TEXT NOT NULL CHECK (scope IN ('conversation', 'contact')),
    subject TEXT NOT NULL,
    version INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('current', 'retired')),
    nonce BLOB NOT NULL,
    wrapped BLOB NOT NULL,
    uses INTEGER NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL,
    UNIQUE (tenant, scope, subject, version)
);
CREATE INDEX IF NOT EXISTS data_keys_subject ON data_keys (tenant, scope, subject, state);
CREATE INDEX IF NOT EXISTS data_keys_expiry ON data_keys (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS destroyed_keys (
    key_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    generation INTEGER NOT NULL,
    scope TEXT NOT NULL,
    reason TEXT NOT NULL,
    destroyed_at REAL NOT NULL
);
INSERT OR IGNORE INTO meta (k, v) VALUES ('schema_version', '1');
"""
_KEY_COLUMNS = (
    "key_id, tenant, generation, scope, subject, version, nonce, wrapped, created_at, expires_at, uses, state"
)
_TENANT_COLUMNS = (
    "tenant, state, generation, master_version, root_nonce, root_wrapped, buffer_ttl_s, created_at, terminated_at"
)


class SqliteKeyStore:
    def __init__(self, path: Path, busy_timeout_s: float = 10.0) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA secure_delete=ON")
            self._db.execute("PRAGMA foreign_keys=ON")
            with self._write():
                for statement in filter(str.strip, SCHEMA.split(";")):
                    self._db.execute(statement)
        except sqlite3.Error as exc:
            raise KeyStoreUnavailable(f"key store {path}: {exc}") from None

    # -- plumbing ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: takes the write lock up front, so it never fails halfway."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise KeyStoreUnavailable(f"key store locked: {exc}") from None
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            try:
                self._db.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                self._db.execute("ROLLBACK")
                raise KeyStoreUnavailable(f"key store commit failed: {exc}") from None

    def _read(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.OperationalError as exc:
                raise KeyStoreUnavailable(f"key store read failed: {exc}") from None

    def checkpoint(self, attempts: int = 50) -> bool:
        """Fold the WAL into the main file and truncate it, so old page images are gone."""
        for _ in range(attempts):
            with self._lock:
                busy, _log, _done = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if not busy:
                return True
            time.sleep(0.02)
        # A reader holds an old snapshot; the next destruction or the janitor's expiry retries.
        log.warning("key store: WAL checkpoint stayed busy; destroyed keys may linger in the WAL until the next one")
        return False

    @staticmethod
    def _tenant_row(row: tuple[object, ...]) -> TenantRow:
        return TenantRow(*row)  # type: ignore[arg-type]

    @staticmethod
    def _key_row(row: tuple[object, ...]) -> KeyRow:
        return KeyRow(*row)  # type: ignore[arg-type]

    # -- tenants -------------------------------------------------------------------------------
    def create_tenant(self, row: TenantRow, *, reprovision: bool) -> TenantRow:
        with self._write() as db:
            existing = db.execute("SELECT state, generation FROM tenants WHERE tenant = ?", (row.tenant,)).fetchone()
            if existing is not None:
                if existing[0] != TERMINATED or not reprovision:
                    raise TenantExists(row.tenant, existing[0])
                if row.generation <= existing[1]:
                    raise TenantExists(row.tenant, f"generation {existing[1]} already used")
                db.execute("DELETE FROM tenants WHERE tenant = ?", (row.tenant,))
            db.execute(
                f"INSERT INTO tenants ({_TENANT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    row.tenant,
                    ACTIVE,
                    row.generation,
                    row.master_version,
                    row.root_nonce,
                    row.root_wrapped,
                    row.buffer_ttl_s,
                    row.created_at,
                    None,
                ),
            )
        return row

    def tenant(self, tenant: str) -> TenantRow | None:
        rows = self._read(f"SELECT {_TENANT_COLUMNS} FROM tenants WHERE tenant = ?", (tenant,))
        return self._tenant_row(rows[0]) if rows else None

    def tenants(self) -> list[TenantRow]:
        return [self._tenant_row(r) for r in self._read(f"SELECT {_TENANT_COLUMNS} FROM tenants ORDER BY tenant")]

    # -- data keys -----------------------------------------------------------------------------
    def acquire(self, candidate: KeyRow, *, block: int, cap: int) -> KeyRow:
        with self._write() as db:
            fence = db.execute("SELECT state, generation FROM tenants WHERE tenant = ?", (candidate.tenant,)).fetchone()
            if fence is None or fence[0] != ACTIVE or fence[1] != candidate.generation:
                raise TenantFenced(candidate.tenant, fence[0] if fence else None)
            current = db.execute(
                f"SELECT {_KEY_COLUMNS} FROM data_keys "
                "WHERE tenant = ? AND scope = ? AND subject = ? AND state = 'current'",
                (candidate.tenant, candidate.scope, candidate.subject),
            ).fetchone()
            if current is not None:
                row = self._key_row(current)
                if row.uses + block <= cap:
                    expires = None if row.expires_at is None else max(row.expires_at, candidate.expires_at or 0)
                    db.execute(
                        "UPDATE data_keys SET uses = uses + ?, expires_at = ? WHERE key_id = ?",
                        (block, expires, row.key_id),
                    )
                    return self._key_row(
                        db.execute(f"SELECT {_KEY_COLUMNS} FROM data_keys WHERE key_id = ?", (row.key_id,)).fetchone()
                    )
                db.execute("UPDATE data_keys SET state = 'retired' WHERE key_id = ?", (row.key_id,))
                version = row.version + 1
            else:
                version = 1
            db.execute(
                f"INSERT INTO data_keys ({_KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'current')",
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
            )
            return self._key_row(
                db.execute(f"SELECT {_KEY_COLUMNS} FROM data_keys WHERE key_id = ?", (candidate.key_id,)).fetchone()
            )

    def touch(self, key_id: str, expires_at: float | None) -> bool:
        if expires_at is None:
            return bool(
                self._read(
                    "SELECT 1 FROM data_keys k JOIN tenants t ON t.tenant = k.tenant AND t.generation = k.generation "
                    "AND t.state = 'active' WHERE k.key_id = ? AND k.state = 'current'",
                    (key_id,),
                )
            )
        with self._write() as db:
            cursor = db.execute(
                "UPDATE data_keys SET expires_at = CASE WHEN expires_at IS NULL THEN NULL ELSE max(expires_at, ?) END "
                "WHERE key_id = ? AND state = 'current' AND EXISTS "
                "(SELECT 1 FROM tenants t WHERE t.tenant = data_keys.tenant AND t.state = 'active' "
                " AND t.generation = data_keys.generation)",
                (expires_at, key_id),
            )
            return cursor.rowcount == 1

    def data_key(self, key_id: str) -> KeyRow | None:
        rows = self._read(
            f"SELECT {', '.join('k.' + c.strip() for c in _KEY_COLUMNS.split(','))} FROM data_keys k "
            "JOIN tenants t ON t.tenant = k.tenant AND t.generation = k.generation AND t.state = 'active' "
            "WHERE k.key_id = ?",
            (key_id,),
        )
        return self._key_row(rows[0]) if rows else None

    def was_destroyed(self, key_id: str) -> bool:
        return bool(self._read("SELECT 1 FROM destroyed_keys WHERE key_id = ?", (key_id,)))

    def _tombstone(
        self, db: sqlite3.Connection, where: str, args: tuple[object, ...], reason: str, now: float
    ) -> list[str]:
        ids = [r[0] for r in db.execute(f"SELECT key_id FROM data_keys WHERE {where}", args)]
        # Overwrite in place first: a same-size update rewrites the cell where it is, whereas a
        # delete alone can leave copies that b-tree rebalancing moved (seen in the forensics test).
        db.execute(
            f"UPDATE data_keys SET nonce = zeroblob(length(nonce)), wrapped = zeroblob(length(wrapped)) WHERE {where}",
            args,
        )
        db.execute(
            "INSERT OR IGNORE INTO destroyed_keys (key_id, tenant, generation, scope, reason, destroyed_at) "
            f"SELECT key_id, tenant, generation, scope, ?, ? FROM data_keys WHERE {where}",
            (reason, now, *args),
        )
        db.execute(f"DELETE FROM data_keys WHERE {where}", args)
        return ids

    def destroy_subject(self, tenant: str, scope: str, subject: str, reason: str, now: float) -> list[str]:
        with self._write() as db:
            ids = self._tombstone(db, "tenant = ? AND scope = ? AND subject = ?", (tenant, scope, subject), reason, now)
        if ids:
            self.checkpoint()
        return ids

    def destroy_tenant(self, tenant: str, reason: str, now: float) -> Destruction:
        with self._write() as db:
            row = db.execute("SELECT state, generation FROM tenants WHERE tenant = ?", (tenant,)).fetchone()
            if row is None:
                # Fence a tenant we never saw, too: old events for it must never create keys.
                db.execute(
                    f"INSERT INTO tenants ({_TENANT_COLUMNS}) VALUES (?, 'terminated', 0, NULL, NULL, NULL, 0, ?, ?)",
                    (tenant, now, now),
                )
                return Destruction(tenant, 0, (), {CONVERSATION: 0, CONTACT: 0}, already_terminated=False)
            by_scope = {
                scope: db.execute(
                    "SELECT count(*) FROM data_keys WHERE tenant = ? AND scope = ?", (tenant, scope)
                ).fetchone()[0]
                for scope in (CONVERSATION, CONTACT)
            }
            ids = self._tombstone(db, "tenant = ?", (tenant,), reason, now)
            db.execute(
                "UPDATE tenants SET root_nonce = zeroblob(length(root_nonce)), "
                "root_wrapped = zeroblob(length(root_wrapped)) WHERE tenant = ? AND root_wrapped IS NOT NULL",
                (tenant,),
            )
            db.execute(
                "UPDATE tenants SET state = 'terminated', master_version = NULL, root_nonce = NULL, "
                "root_wrapped = NULL, terminated_at = coalesce(terminated_at, ?) WHERE tenant = ?",
                (now, tenant),
            )
        self.checkpoint()
        return Destruction(tenant, int(row[1]), tuple(ids), by_scope, already_terminated=row[0] == TERMINATED)

    def expire(self, now: float, limit: int) -> list[str]:
        with self._write() as db:
            ids = [
                r[0]
                for r in db.execute(
                    "SELECT key_id FROM data_keys WHERE expires_at IS NOT NULL AND expires_at < ? LIMIT ?", (now, limit)
                )
            ]
            for key_id in ids:
                self._tombstone(db, "key_id = ?", (key_id,), "expired", now)
        if ids:
            self.checkpoint()
        return ids

    def rewrap_roots(self, rewrap: Callable[[TenantRow], tuple[int, bytes, bytes]]) -> int:
        with self._write() as db:
            rows = [
                self._tenant_row(r)
                for r in db.execute(f"SELECT {_TENANT_COLUMNS} FROM tenants WHERE state = 'active'").fetchall()
            ]
            for row in rows:
                version, nonce, wrapped = rewrap(row)
                db.execute(
                    "UPDATE tenants SET master_version = ?, root_nonce = ?, root_wrapped = ? WHERE tenant = ?",
                    (version, nonce, wrapped, row.tenant),
                )
        self.checkpoint()
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
        return [TenantCounts(*r) for r in rows]  # type: ignore[arg-type]

    def close(self) -> None:
        with self._lock:
            self._db.close()
