"""The embedded key store: one SQLite file, safe for several processes on one host.

WAL mode for concurrent readers; `BEGIN IMMEDIATE` so writers serialise instead of failing
mid-transaction; `synchronous=FULL` because a key that is lost after its ciphertext was
published means lost data; `secure_delete` so deleted key bytes are overwritten with zeros,
and a WAL checkpoint (TRUNCATE) after every destruction so no old page image keeps them.

The checkpoint never waits: a reader whose snapshot predates a destruction keeps the old pages
in the main file (and the WAL cannot be truncated while anyone reads it), and waiting for it
while holding the write lock would stop every other writer. So each attempt runs with no busy
timeout and gives up at once, saying what blocks it; the next destruction, the janitor's expiry,
or a termination's verification (which scans the files, `keystore/residue.py`) tries again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from shredline.keystore import locking
from shredline.keystore.errors import (
    KeystoreError,
    KeyStoreUnavailable,
    StaleMasterKey,
    TenantExists,
    UnknownTenant,
)
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
CREATE TABLE IF NOT EXISTS audit_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    tenant TEXT,
    subject TEXT,
    details TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_head (
    one INTEGER PRIMARY KEY CHECK (one = 1), seq INTEGER NOT NULL, hash BLOB NOT NULL, anchored_at REAL NOT NULL,
    topic_offset INTEGER
);
CREATE TABLE IF NOT EXISTS policies (
    version TEXT PRIMARY KEY, sha256 TEXT NOT NULL, published_at REAL NOT NULL, operator TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS policy_acceptances (
    tenant TEXT NOT NULL, version TEXT NOT NULL REFERENCES policies (version), accepted_at REAL NOT NULL,
    PRIMARY KEY (tenant, version)
);
CREATE TABLE IF NOT EXISTS operators (principal TEXT PRIMARY KEY, added_at REAL NOT NULL, added_by TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS terminations (
    tenant TEXT NOT NULL, generation INTEGER NOT NULL, progress TEXT, probes BLOB, PRIMARY KEY (tenant, generation)
);
INSERT OR IGNORE INTO meta (k, v) VALUES ('schema_version', '1');
INSERT OR IGNORE INTO meta (k, v) VALUES ('store_id', lower(hex(randomblob(8))));
"""
_KEY_COLUMNS = (
    "key_id, tenant, generation, scope, subject, version, nonce, wrapped, created_at, expires_at, uses, state"
)
_TENANT_COLUMNS = (
    "tenant, state, generation, master_version, root_nonce, root_wrapped, buffer_ttl_s, created_at, terminated_at"
)


class SqliteKeyStore:
    def __init__(self, path: Path, busy_timeout_s: float = 10.0, actor: str = "shredline") -> None:
        self.path = path
        self.actor = actor  # who the audit records of this process's key changes name
        self._busy_timeout_ms = int(busy_timeout_s * 1000)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        self._lock = threading.RLock()  # re-entered by the calls inside a `batch`
        self._in_batch = False  # inside `batch`, by the thread holding `_lock`
        self._batch_open = False  # ... and its transaction has begun (at its first write)
        self._checkpoint_due = False
        try:
            self._db = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA secure_delete=ON")
            self._db.execute("PRAGMA foreign_keys=ON")
            with self._write():
                for statement in filter(str.strip, SCHEMA.split(";")):
                    self._db.execute(statement)
                columns = {r[1] for r in self._db.execute("PRAGMA table_info(audit_head)")}
                if "topic_offset" not in columns:  # a store from before the head's offset was kept
                    self._db.execute("ALTER TABLE audit_head ADD COLUMN topic_offset INTEGER")
            self._store_id = str(self._read("SELECT v FROM meta WHERE k = 'store_id'")[0][0])
        except sqlite3.Error as exc:
            raise KeyStoreUnavailable(f"key store {path}: {exc}") from None

    # -- plumbing ------------------------------------------------------------------------------
    def _begin(self) -> None:
        """Start an IMMEDIATE transaction: takes the write lock up front, so it never fails halfway.
        The caller holds `_lock`."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            writers = _shm_lockers(self.path, _SHM_WRITE_LOCK)
            who = f" (the write lock is held by pid {', '.join(map(str, writers))})" if writers else ""
            raise KeyStoreUnavailable(f"key store locked: {exc}{who}") from None

    def _commit(self) -> None:
        try:
            self._db.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            self._db.execute("ROLLBACK")
            raise KeyStoreUnavailable(f"key store commit failed: {exc}") from None

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A transaction of its own, or inside a `batch` a savepoint that rolls back alone (the
        batch's first write opens its transaction, which holds the write lock until it ends)."""
        with self._lock:
            if not self._in_batch:
                self._begin()
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._commit()
                return
            if not self._batch_open:
                self._begin()
                self._batch_open = True
            self._db.execute("SAVEPOINT call")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK TO call")
                self._db.execute("RELEASE call")
                raise
            self._db.execute("RELEASE call")

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Reads before the batch's first write see the latest committed state and take no lock,
        so a batch that changes nothing never holds the write lock."""
        with self._lock:
            assert not self._in_batch, "batches do not nest"
            self._in_batch, self._batch_open = True, False
            try:
                yield
            except BaseException:
                if self._batch_open:
                    self._db.execute("ROLLBACK")
                raise
            else:
                if self._batch_open:
                    self._commit()
            finally:
                self._in_batch = self._batch_open = False
            if self._checkpoint_due:
                self._checkpoint_due = False
                self.checkpoint()

    def _read(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.OperationalError as exc:
                raise KeyStoreUnavailable(f"key store read failed: {exc}") from None

    @property
    def local(self) -> bool:
        return True

    def files(self) -> list[Path]:
        candidates = [self.path, *(self.path.with_name(self.path.name + s) for s in ("-wal", "-shm", "-journal"))]
        return [p for p in candidates if p.exists()]

    def checkpoint(self) -> str | None:
        """Fold the WAL into the main file and truncate it, so no old page image is left; one attempt
        with no busy timeout, so the write lock is never held while waiting for a reader."""
        with self._lock:
            if self._in_batch:  # none inside a transaction: the batch runs it once it has committed
                self._checkpoint_due = True
                return None
            try:
                self._db.execute("PRAGMA busy_timeout = 0")
                busy, frames, copied = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            except sqlite3.OperationalError as exc:
                busy, frames, copied = 1, -1, -1
                log.debug("key store checkpoint: %s", exc)
            finally:
                self._db.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
        if not busy:
            return None
        readers = _wal_readers(self.path)
        who = f" (pid {', '.join(map(str, readers))})" if readers else ""
        if frames > copied >= 0:
            blocker = f"a reader holds a snapshot of {self.path.name} older than the last change{who}"
        else:
            blocker = f"another connection is reading or writing {self.path.name}{who}"
        log.info("key store: checkpoint deferred: %s", blocker)
        return blocker

    def _audit(
        self,
        db: sqlite3.Connection,
        action: str,
        tenant: str | None,
        subject: str | None = None,
        details: dict[str, str] | None = None,
    ) -> int:
        cursor = db.execute(
            "INSERT INTO audit_outbox (at, actor, action, tenant, subject, details) VALUES (?, ?, ?, ?, ?, ?)",
            (time.time(), self.actor, action, tenant, subject, json.dumps(details or {}, sort_keys=True)),
        )
        return int(cursor.lastrowid or 0)

    @staticmethod
    def _tenant_row(row: tuple[object, ...]) -> TenantRow:
        return TenantRow(*row)  # type: ignore[arg-type]

    @staticmethod
    def _key_row(row: tuple[object, ...]) -> KeyRow:
        return KeyRow(*row)  # type: ignore[arg-type]

    # -- tenants -------------------------------------------------------------------------------
    def create_tenant(self, row: TenantRow, *, reprovision: bool) -> TenantRow:
        with self._write() as db:
            current = self._master_version(db)
            if current is not None and (row.master_version is None or row.master_version < current):
                raise StaleMasterKey(row.master_version, current)
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
            self._audit(db, "key.root.create", row.tenant, None, {"generation": str(row.generation)})
        return row

    @staticmethod
    def _master_version(db: sqlite3.Connection) -> int | None:
        found = db.execute("SELECT v FROM meta WHERE k = 'master_version'").fetchone()
        return None if found is None else int(found[0])

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
            details = {"scope": candidate.scope, "version": str(version), "generation": str(candidate.generation)}
            self._audit(db, "key.create", candidate.tenant, key_digest(candidate.key_id), details)
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
        self, db: sqlite3.Connection, where: str, args: tuple[object, ...], reason: str, now: float, each: bool = True
    ) -> list[str]:
        """Destroy the matching keys; `each` audits one record per key (a tenant's destruction is
        audited once, with counts and a digest over all its key ids)."""
        rows = db.execute(f"SELECT key_id, tenant, scope FROM data_keys WHERE {where}", args).fetchall()
        ids = [r[0] for r in rows]
        if each:
            for key_id, tenant, scope in rows:
                self._audit(db, "key.destroy", tenant, key_digest(key_id), {"scope": scope, "reason": reason})
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

    def destroy_tenant(self, tenant: str, reason: str, now: float, witness: Witness | None = None) -> Destruction:
        with self._write() as db:
            row = db.execute("SELECT state, generation FROM tenants WHERE tenant = ?", (tenant,)).fetchone()
            if witness is not None and row is not None:
                root = self._tenant_row(
                    db.execute(f"SELECT {_TENANT_COLUMNS} FROM tenants WHERE tenant = ?", (tenant,)).fetchone()
                )
                keys = [
                    self._key_row(r)
                    for r in db.execute(f"SELECT {_KEY_COLUMNS} FROM data_keys WHERE tenant = ?", (tenant,))
                ]
                if root.root_wrapped is not None or keys:
                    probes = witness(root, keys)
                    if probes is not None:
                        db.execute(
                            "INSERT INTO terminations (tenant, generation, probes) VALUES (?, ?, ?) "
                            "ON CONFLICT (tenant, generation) DO UPDATE SET probes = excluded.probes",
                            (tenant, root.generation, probes),
                        )
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
            if row[0] == TERMINATED:  # a re-run (the first crashed after committing): what it destroyed
                for scope, n in db.execute(
                    "SELECT d.scope, count(*) FROM destroyed_keys d JOIN tenants t ON t.tenant = d.tenant "
                    "WHERE d.tenant = ? AND d.generation = ? AND d.destroyed_at = t.terminated_at GROUP BY d.scope",
                    (tenant, row[1]),
                ):
                    by_scope[scope] = by_scope.get(scope, 0) + n
            ids = self._tombstone(db, "tenant = ?", (tenant,), reason, now, each=False)
            digest = hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:32]
            details = {"generation": str(row[1]), "reason": reason, "key_ids_sha256": digest}
            details |= {f"{scope}_keys": str(n) for scope, n in by_scope.items()}
            if row[0] != TERMINATED:
                self._audit(db, "key.tenant.destroy", tenant, None, details)
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
        self.checkpoint()  # also retries one that a reader deferred earlier
        return ids

    def rewrap_roots(self, version: int, rewrap: Callable[[TenantRow], tuple[int, bytes, bytes]]) -> int:
        with self._write() as db:
            current = self._master_version(db)
            if current is not None and version < current:
                raise StaleMasterKey(version, current)
            db.execute("INSERT OR REPLACE INTO meta (k, v) VALUES ('master_version', ?)", (str(version),))
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
            self._audit(
                db, "key.master.rotate", None, None, {"roots_rewrapped": str(len(rows)), "version": str(version)}
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

    def destroyed_keys(self, tenant: str, generation: int) -> list[tuple[str, str]]:
        rows = self._read(
            "SELECT key_id, scope FROM destroyed_keys WHERE tenant = ? AND generation = ? ORDER BY key_id",
            (tenant, generation),
        )
        return [(str(k), str(s)) for k, s in rows]

    # -- terminations and store-wide locks ----------------------------------------------------
    def termination(self, tenant: str, generation: int) -> TerminationRecord | None:
        rows = self._read(
            "SELECT progress, probes FROM terminations WHERE tenant = ? AND generation = ?", (tenant, generation)
        )
        return TerminationRecord(*rows[0]) if rows else None  # type: ignore[arg-type]

    def save_termination(self, tenant: str, generation: int, progress: str, *, drop_probes: bool = False) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO terminations (tenant, generation, progress) VALUES (?, ?, ?) ON CONFLICT "
                "(tenant, generation) DO UPDATE SET progress = excluded.progress, "
                "probes = CASE WHEN ? THEN NULL ELSE probes END",
                (tenant, generation, progress, drop_probes),
            )

    @contextlib.contextmanager
    def lock(self, name: str, wait_s: float, tell_s: float) -> Iterator[None]:
        """A flock on `<store file>.<name>-lock` (one host: every user of the file is on it)."""
        with locking.exclusive(self.path.with_name(f"{self.path.name}.{name}-lock"), wait_s, tell_s):
            yield

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
        with self._lock:
            rows = self._db.execute(
                "SELECT id, at, actor, action, tenant, subject, details FROM audit_outbox ORDER BY id LIMIT ?", (limit,)
            ).fetchall()
        return [
            AuditEntry(i, at, actor, action, tenant, subject, json.loads(d))
            for i, at, actor, action, tenant, subject, d in rows
        ]

    def drop_audit(self, up_to: int, head: AuditHead, offset: int | None = None) -> None:
        with self._write() as db:
            anchored = db.execute("SELECT seq FROM audit_head").fetchone()
            if anchored is not None and head.seq <= anchored[0]:
                raise KeystoreError(f"audit head seq {head.seq} is not past the anchored seq {anchored[0]}")
            db.execute("DELETE FROM audit_outbox WHERE id <= ?", (up_to,))
            db.execute(
                "INSERT INTO audit_head (one, seq, hash, anchored_at, topic_offset) VALUES (1, ?, ?, ?, ?) "
                "ON CONFLICT (one) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, "
                "anchored_at = excluded.anchored_at, topic_offset = excluded.topic_offset",
                (head.seq, head.hash, time.time(), offset),
            )

    def audit_head(self) -> AuditHead | None:
        rows = self._read("SELECT seq, hash FROM audit_head")
        return AuditHead(*rows[0]) if rows else None  # type: ignore[arg-type]

    def audit_head_offset(self) -> int | None:
        rows = self._read("SELECT topic_offset FROM audit_head")
        return int(rows[0][0]) if rows and rows[0][0] is not None else None  # type: ignore[call-overload]

    # -- policies ------------------------------------------------------------------------------
    def publish_policy(self, policy: Policy) -> bool:
        with self._write() as db:
            existing = db.execute("SELECT sha256 FROM policies WHERE version = ?", (policy.version,)).fetchone()
            if existing is not None:
                if existing[0] != policy.sha256:
                    raise KeystoreError(f"policy {policy.version} was already published with a different text")
                return False
            db.execute(
                "INSERT INTO policies (version, sha256, published_at, operator) VALUES (?, ?, ?, ?)",
                (policy.version, policy.sha256, policy.published_at, policy.operator),
            )
            self._audit(db, "policy.publish", None, None, {"version": policy.version, "sha256": policy.sha256})
            return True

    def policies(self) -> list[Policy]:
        rows = self._read("SELECT version, sha256, published_at, operator FROM policies ORDER BY published_at")
        return [Policy(*r) for r in rows]  # type: ignore[arg-type]

    def accept_policy(self, tenant: str, version: str, now: float) -> bool:
        with self._write() as db:
            state = db.execute("SELECT state FROM tenants WHERE tenant = ?", (tenant,)).fetchone()
            if state is None or state[0] != ACTIVE:
                raise UnknownTenant(tenant) if state is None else TenantFenced(tenant, state[0])
            if db.execute("SELECT 1 FROM policies WHERE version = ?", (version,)).fetchone() is None:
                raise KeystoreError(f"policy {version} was never published")
            cursor = db.execute(
                "INSERT OR IGNORE INTO policy_acceptances (tenant, version, accepted_at) VALUES (?, ?, ?)",
                (tenant, version, now),
            )
            if cursor.rowcount:
                self._audit(db, "policy.accept", tenant, None, {"version": version})
            return cursor.rowcount == 1

    def acceptances(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for tenant, version in self._read("SELECT tenant, version FROM policy_acceptances"):
            out.setdefault(str(tenant), set()).add(str(version))
        return out

    # -- operator allow-list -------------------------------------------------------------------
    def allow_operator(self, principal: str, allowed: bool, now: float) -> bool:
        with self._write() as db:
            if allowed:
                cursor = db.execute(
                    "INSERT OR IGNORE INTO operators (principal, added_at, added_by) VALUES (?, ?, ?)",
                    (principal, now, self.actor),
                )
            else:
                cursor = db.execute("DELETE FROM operators WHERE principal = ?", (principal,))
            if cursor.rowcount:
                action = "operators.allow" if allowed else "operators.revoke"
                self._audit(db, action, None, None, {"principal": principal})
            return cursor.rowcount == 1

    def operators(self) -> list[str]:
        return [str(p) for (p,) in self._read("SELECT principal FROM operators ORDER BY principal")]

    def close(self) -> None:
        with self._lock:
            self._db.close()


# SQLite's WAL locks are byte-range locks on the -shm file: bytes 120-127 are the write, checkpoint
# and recovery locks and the five read marks, which a connection holds while it reads.
_SHM_READ_MARKS = range(123, 128)
_SHM_WRITE_LOCK = range(120, 121)


def _wal_readers(path: Path) -> list[int]:
    """Other processes holding a read mark on the store's WAL (Linux /proc/locks; best effort,
    empty where that is not available)."""
    return _shm_lockers(path, _SHM_READ_MARKS)


def _shm_lockers(path: Path, locks: range) -> list[int]:
    """Other processes holding any of the `locks` bytes of the store's -shm file (Linux /proc/locks;
    best effort, empty where that is not available)."""
    try:
        shm = os.stat(path.with_name(path.name + "-shm"))
        table = Path("/proc/locks").read_text()
    except OSError:
        return []
    where = f"{os.major(shm.st_dev):02x}:{os.minor(shm.st_dev):02x}:{shm.st_ino}"
    pids: set[int] = set()
    for line in table.splitlines():
        fields = line.split()
        if len(fields) < 8 or fields[1] == "->" or fields[5] != where:
            continue
        start, end = int(fields[6]), (1 << 62 if fields[7] == "EOF" else int(fields[7]))
        if start <= locks[-1] and end >= locks[0] and int(fields[4]) != os.getpid():
            pids.add(int(fields[4]))
    return sorted(pids)
