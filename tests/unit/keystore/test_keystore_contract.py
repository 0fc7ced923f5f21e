"""The key store contract, written once and run against every backend."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from shredline.keystore.errors import KeystoreError, StaleMasterKey, TenantExists
from shredline.keystore.locking import LockTimeout
from shredline.keystore.sqlite_store import SqliteKeyStore
from shredline.keystore.store import (
    ACTIVE,
    TERMINATED,
    AuditHead,
    KeyRow,
    KeyStore,
    Policy,
    TenantFenced,
    TenantRow,
    key_digest,
)

NOW = 1_800_000_000.0


def sqlite_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], KeyStore]:
    return lambda: SqliteKeyStore(tmp_path / "keys.sqlite")


def postgres_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], KeyStore]:
    from shredline.keystore.postgres_store import PostgresKeyStore

    url = request.getfixturevalue("pg_url")  # a fresh database on the session's real server
    return lambda: PostgresKeyStore(url)


BACKENDS = {"sqlite": sqlite_backend, "postgresql": postgres_backend}


@pytest.fixture(params=sorted(BACKENDS))
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], KeyStore]:
    """Opens another handle on the test's store, as another process would."""
    return BACKENDS[request.param](request, tmp_path)


@pytest.fixture
def store(opener: Callable[[], KeyStore]) -> Iterator[KeyStore]:
    backend = opener()
    yield backend
    backend.close()


def tenant_row(tenant: str = "acme", generation: int = 1) -> TenantRow:
    return TenantRow(tenant, ACTIVE, generation, 1, os.urandom(12), os.urandom(48), 86_400, NOW)


def key_row(
    tenant: str = "acme",
    subject: str = "s1",
    scope: str = "conversation",
    generation: int = 1,
    expires: float | None = NOW + 100,
) -> KeyRow:
    return KeyRow(
        uuid.uuid4().hex,
        tenant,
        generation,
        scope,
        subject,
        0,
        os.urandom(12),
        os.urandom(48),
        NOW,
        expires if scope == "conversation" else None,
    )


def test_tenant_lifecycle_and_duplicate_provisioning(store: KeyStore) -> None:
    row = tenant_row()
    store.create_tenant(row, reprovision=False)
    stored = store.tenant("acme")
    assert stored is not None and stored.root_wrapped == row.root_wrapped and stored.state == ACTIVE
    with pytest.raises(TenantExists):
        store.create_tenant(tenant_row(), reprovision=False)
    with pytest.raises(TenantExists):  # active tenants cannot be re-provisioned either
        store.create_tenant(tenant_row(generation=2), reprovision=True)
    assert [t.tenant for t in store.tenants()] == ["acme"]


def test_acquire_returns_one_key_per_subject_and_reserves_uses(store: KeyStore) -> None:
    store.create_tenant(tenant_row(), reprovision=False)
    first = store.acquire(key_row(), block=10, cap=100)
    second = store.acquire(key_row(), block=10, cap=100)
    assert second.key_id == first.key_id and second.uses == 20 and second.wrapped == first.wrapped
    other = store.acquire(key_row(subject="s2"), block=10, cap=100)
    assert other.key_id != first.key_id


def test_acquire_rotates_past_the_cap_and_keeps_the_old_version_openable(store: KeyStore) -> None:
    store.create_tenant(tenant_row(), reprovision=False)
    first = store.acquire(key_row(), block=4, cap=8)
    assert store.acquire(key_row(), block=4, cap=8).key_id == first.key_id
    rotated = store.acquire(key_row(), block=4, cap=8)
    assert rotated.key_id != first.key_id and rotated.version == 2
    old = store.data_key(first.key_id)
    assert old is not None and old.state == "retired"
    assert not store.touch(first.key_id, NOW + 500)  # retired keys no longer seal


def test_acquire_extends_a_conversation_expiry_but_never_shortens_it(store: KeyStore) -> None:
    store.create_tenant(tenant_row(), reprovision=False)
    k = store.acquire(key_row(expires=NOW + 100), block=1, cap=100)
    assert store.acquire(key_row(expires=NOW + 50), block=1, cap=100).expires_at == NOW + 100
    assert store.acquire(key_row(expires=NOW + 300), block=1, cap=100).expires_at == NOW + 300
    assert store.touch(k.key_id, NOW + 400)
    assert store.touch(k.key_id, None)  # read-only check
    assert store.expire(NOW + 350, 10) == []
    assert store.expire(NOW + 401, 10) == [k.key_id]
    assert store.data_key(k.key_id) is None and store.was_destroyed(k.key_id)
    assert not store.touch(k.key_id, None) and not store.touch(k.key_id, NOW + 999)


def test_contact_keys_never_expire(store: KeyStore) -> None:
    store.create_tenant(tenant_row(), reprovision=False)
    contact = store.acquire(key_row(scope="contact"), block=1, cap=10)
    assert contact.expires_at is None
    assert store.expire(NOW + 10**9, 10) == []


def test_destroy_subject_removes_every_version(store: KeyStore) -> None:
    store.create_tenant(tenant_row(), reprovision=False)
    v1 = store.acquire(key_row(), block=2, cap=2)
    v2 = store.acquire(key_row(), block=2, cap=2)
    keep = store.acquire(key_row(subject="s2"), block=1, cap=2)
    assert sorted(store.destroy_subject("acme", "conversation", "s1", "closed", NOW)) == sorted([v1.key_id, v2.key_id])
    assert store.data_key(v1.key_id) is None and store.data_key(v2.key_id) is None
    assert store.data_key(keep.key_id) is not None
    assert store.destroy_subject("acme", "conversation", "s1", "closed", NOW) == []


def test_destroy_tenant_removes_everything_and_fences_for_good(store: KeyStore) -> None:
    store.create_tenant(tenant_row(), reprovision=False)
    store.create_tenant(tenant_row("other"), reprovision=False)
    ids = {store.acquire(key_row(subject=f"s{i}"), block=1, cap=9).key_id for i in range(3)}
    ids.add(store.acquire(key_row(subject="c", scope="contact"), block=1, cap=9).key_id)
    survivor = store.acquire(key_row("other"), block=1, cap=9)

    result = store.destroy_tenant("acme", "contract ended", NOW)
    assert set(result.key_ids) == ids and result.by_scope == {"conversation": 3, "contact": 1}
    assert not result.already_terminated
    gone = store.tenant("acme")
    assert gone is not None and gone.state == TERMINATED and gone.root_wrapped is None and gone.root_nonce is None
    assert all(store.data_key(k) is None and store.was_destroyed(k) for k in ids)
    assert store.data_key(survivor.key_id) is not None

    with pytest.raises(TenantFenced):
        store.acquire(key_row(subject="late"), block=1, cap=9)
    with pytest.raises(TenantExists):
        store.create_tenant(tenant_row(generation=2), reprovision=False)
    again = store.destroy_tenant("acme", "contract ended", NOW + 60)
    assert again.already_terminated and again.key_ids == ()
    # what the destruction did, for a termination that crashed after it and is re-run
    assert again.by_scope == {"conversation": 3, "contact": 1}


def test_unknown_tenant_can_be_fenced_before_it_ever_existed(store: KeyStore) -> None:
    store.destroy_tenant("ghost", "never provisioned", NOW)
    with pytest.raises(TenantFenced):
        store.acquire(key_row("ghost"), block=1, cap=9)


def test_reprovisioning_needs_the_flag_and_a_new_generation(store: KeyStore) -> None:
    store.create_tenant(tenant_row(), reprovision=False)
    old = store.acquire(key_row(), block=1, cap=9)
    store.destroy_tenant("acme", "ended", NOW)
    store.create_tenant(tenant_row(generation=2), reprovision=True)
    with pytest.raises(TenantFenced):  # an old-generation writer stays fenced
        store.acquire(key_row(generation=1), block=1, cap=9)
    new = store.acquire(key_row(generation=2), block=1, cap=9)
    assert new.key_id != old.key_id and store.data_key(old.key_id) is None


def test_rewrap_roots_replaces_only_active_roots(store: KeyStore) -> None:
    store.create_tenant(tenant_row("a"), reprovision=False)
    store.create_tenant(tenant_row("b"), reprovision=False)
    store.destroy_tenant("b", "ended", NOW)
    count = store.rewrap_roots(2, lambda row: (2, b"n" * 12, b"w" * 48))
    assert count == 1
    a = store.tenant("a")
    assert a is not None and (a.master_version, a.root_wrapped) == (2, b"w" * 48)


def test_after_a_rotation_no_root_is_stored_under_an_older_master_version(store: KeyStore) -> None:
    """A process that loaded the keyring before a rotation must not store a root under a version
    that is about to be destroyed; nor may a slower rotation go back to an older version."""
    store.create_tenant(tenant_row("a"), reprovision=False)  # under v1, before any rotation: fine
    store.rewrap_roots(2, lambda row: (2, b"n" * 12, b"w" * 48))
    with pytest.raises(StaleMasterKey) as stale:
        store.create_tenant(tenant_row("late"), reprovision=False)
    assert (stale.value.version, stale.value.current) == (1, 2) and store.tenant("late") is None
    store.create_tenant(TenantRow("late", ACTIVE, 1, 2, os.urandom(12), os.urandom(48), 86_400, NOW), reprovision=False)
    with pytest.raises(StaleMasterKey):
        store.rewrap_roots(1, lambda row: (1, b"n" * 12, b"w" * 48))
    assert {t.master_version for t in store.tenants()} == {2}


def test_the_witness_sees_what_a_tenant_destruction_overwrites_and_can_stop_it(store: KeyStore) -> None:
    row = tenant_row()
    store.create_tenant(row, reprovision=False)
    key = store.acquire(key_row(), block=1, cap=9)
    seen: list[tuple[bytes | None, list[bytes]]] = []

    def refuse(root: TenantRow, keys: Sequence[KeyRow]) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError):
        store.destroy_tenant("acme", "ended", NOW, refuse)
    assert store.data_key(key.key_id) is not None and store.tenant("acme").state == ACTIVE  # type: ignore[union-attr]
    store.destroy_tenant(
        "acme", "ended", NOW, lambda root, keys: seen.append((root.root_wrapped, [k.wrapped for k in keys]))
    )
    assert seen == [(row.root_wrapped, [key.wrapped])]
    store.destroy_tenant("acme", "ended", NOW, lambda root, keys: seen.append((None, [])))  # nothing left to see
    assert len(seen) == 1


def test_an_idle_store_checkpoints_and_names_its_files(store: KeyStore) -> None:
    store.create_tenant(tenant_row(), reprovision=False)
    assert store.checkpoint() is None
    assert all(p.exists() for p in store.files())
    assert bool(store.files()) == store.local  # a server's files are not on this host


def test_counts_per_tenant_and_state(store: KeyStore) -> None:
    store.create_tenant(tenant_row("a"), reprovision=False)
    store.create_tenant(tenant_row("b"), reprovision=False)
    store.acquire(key_row("a", "s1"), block=1, cap=1)
    store.acquire(key_row("a", "s1"), block=1, cap=1)  # rotates: one retired, one current
    store.acquire(key_row("a", "c1", scope="contact"), block=1, cap=9)
    store.acquire(key_row("b", "s1"), block=1, cap=9)
    store.destroy_tenant("b", "ended", NOW)
    counts = {c.tenant: c for c in store.counts()}
    a, b = counts["a"], counts["b"]
    assert (a.state, a.conversation_keys, a.contact_keys, a.retired_keys, a.destroyed_keys) == (ACTIVE, 1, 1, 1, 0)
    assert (b.state, b.conversation_keys, b.destroyed_keys) == (TERMINATED, 0, 1)


def test_every_key_change_leaves_an_audit_record_in_the_same_transaction(store: KeyStore) -> None:
    store.create_tenant(tenant_row(), reprovision=False)
    k1 = store.acquire(key_row(subject="s1"), block=1, cap=10)
    store.acquire(key_row(subject="s1"), block=1, cap=10)  # reuses k1: nothing created
    k2 = store.acquire(key_row(subject="s2"), block=1, cap=10)
    store.destroy_subject("acme", "conversation", "s1", "conversation closed", NOW)
    store.destroy_tenant("acme", "contract ended", NOW)
    store.destroy_tenant("acme", "contract ended", NOW)  # nothing left to destroy: no record
    store.record("buffer.read", "acme", None, {"purpose": "support"})
    entries = store.pending_audit(100)
    assert [e.action for e in entries] == [
        "key.root.create",
        "key.create",
        "key.create",
        "key.destroy",
        "key.tenant.destroy",
        "buffer.read",
    ]
    assert entries[1].subject == key_digest(k1.key_id) and entries[2].subject == key_digest(k2.key_id)
    assert entries[3].details == {"scope": "conversation", "reason": "conversation closed"}
    assert entries[4].details["conversation_keys"] == "1"  # k2; k1 was already gone
    flat = repr(entries)
    assert k1.key_id not in flat and k2.key_id not in flat  # digests only
    store.drop_audit(entries[2].id, AuditHead(2, bytes(32)))
    assert [e.action for e in store.pending_audit(100)] == ["key.destroy", "key.tenant.destroy", "buffer.read"]
    assert store.destroyed_keys("acme", 1) == sorted([(k1.key_id, "conversation"), (k2.key_id, "conversation")])
    assert len(store.store_id) == 16


def test_the_audit_head_is_anchored_with_the_drop_and_only_moves_forward(
    store: KeyStore, opener: Callable[[], KeyStore]
) -> None:
    assert store.audit_head() is None
    first = store.record("operator.command")
    store.drop_audit(first, AuditHead(0, b"\x01" * 32))
    assert store.audit_head() == AuditHead(0, b"\x01" * 32)
    second = store.record("operator.command")
    with pytest.raises(KeystoreError, match="not past the anchored seq 0"):
        store.drop_audit(second, AuditHead(0, b"\x02" * 32))
    assert [e.id for e in store.pending_audit(10)] == [second]  # the refused drop dropped nothing
    assert store.audit_head_offset() is None  # not said where
    store.drop_audit(second, AuditHead(7, b"\x03" * 32), offset=41)
    assert store.audit_head() == AuditHead(7, b"\x03" * 32) and store.pending_audit(10) == []
    assert store.audit_head_offset() == 41
    again = opener()  # durable: another process opening the store sees it
    assert again.audit_head() == AuditHead(7, b"\x03" * 32) and again.audit_head_offset() == 41
    again.close()


def test_a_store_from_before_the_head_offset_opens_and_keeps_its_head(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "keys.sqlite"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE audit_head (one INTEGER PRIMARY KEY CHECK (one = 1), seq INTEGER NOT NULL, "
        "hash BLOB NOT NULL, anchored_at REAL NOT NULL)"
    )
    old.execute("INSERT INTO audit_head VALUES (1, 5, ?, 0)", (b"\x05" * 32,))
    old.commit()
    old.close()
    store = SqliteKeyStore(path)
    assert store.audit_head() == AuditHead(5, b"\x05" * 32) and store.audit_head_offset() is None
    store.record("operator.command")
    store.drop_audit(store.pending_audit(1)[0].id, AuditHead(6, b"\x06" * 32), offset=9)
    assert store.audit_head_offset() == 9
    store.close()


def test_policies_are_published_once_and_accepted_by_active_tenants(store: KeyStore) -> None:
    store.create_tenant(tenant_row(), reprovision=False)
    policy = Policy("2026-11", "ab" * 32, NOW, "alice")
    assert store.publish_policy(policy) is True
    assert store.publish_policy(policy) is False  # idempotent
    with pytest.raises(KeystoreError, match="different text"):
        store.publish_policy(Policy("2026-11", "cd" * 32, NOW, "alice"))
    with pytest.raises(KeystoreError, match="never published"):
        store.accept_policy("acme", "2099-01", NOW)
    assert store.accept_policy("acme", "2026-11", NOW) is True
    assert store.accept_policy("acme", "2026-11", NOW) is False
    assert store.acceptances() == {"acme": {"2026-11"}}
    assert store.policies() == [policy]
    store.destroy_tenant("acme", "ended", NOW)
    with pytest.raises(TenantFenced):
        store.accept_policy("acme", "2026-11", NOW)


def test_the_operator_allow_list_changes_are_audited_and_idempotent(store: KeyStore) -> None:
    assert store.operators() == []
    assert store.allow_operator("User:bob", True, NOW) is True
    assert store.allow_operator("User:alice", True, NOW) is True
    assert store.allow_operator("User:alice", True, NOW) is False
    assert store.operators() == ["User:alice", "User:bob"]
    assert store.allow_operator("User:bob", False, NOW) is True
    assert store.allow_operator("User:bob", False, NOW) is False
    assert store.operators() == ["User:alice"]
    changes = [(e.action, e.details["principal"]) for e in store.pending_audit(100)]
    assert changes == [
        ("operators.allow", "User:bob"),
        ("operators.allow", "User:alice"),
        ("operators.revoke", "User:bob"),
    ]


def test_a_termination_record_keeps_the_witness_probes_and_its_progress(store: KeyStore) -> None:
    store.create_tenant(tenant_row(), reprovision=False)
    store.acquire(key_row(), block=1, cap=9)
    assert store.termination("acme", 1) is None
    store.save_termination("acme", 1, '{"steps": {"intent": {}}}')
    store.destroy_tenant("acme", "ended", NOW, lambda root, keys: b"probes of " + bytes(len(keys)))
    record = store.termination("acme", 1)
    assert record is not None and record.progress == '{"steps": {"intent": {}}}' and record.probes == b"probes of \0"
    store.save_termination("acme", 1, '{"steps": {"keys": {}}}')
    assert store.termination("acme", 1).probes == b"probes of \0"  # type: ignore[union-attr]
    store.save_termination("acme", 1, '{"steps": {"certificate": {}}}', drop_probes=True)
    done = store.termination("acme", 1)
    assert done is not None and done.probes is None and "certificate" in (done.progress or "")
    assert store.termination("acme", 2) is None


def test_a_store_wide_lock_is_held_across_handles_and_a_waiter_gives_up_in_bounded_time(
    store: KeyStore, opener: Callable[[], KeyStore]
) -> None:
    other = opener()  # as another process (or host) would open it
    try:
        with store.lock("audit", 5.0, 5.0):
            started = time.monotonic()
            with pytest.raises(LockTimeout) as waited, other.lock("audit", 0.3, 0.1):
                pass
            assert time.monotonic() - started < 5
            assert "has held" in str(waited.value) and "audit" in str(waited.value)
            with other.lock("rotation", 1.0, 1.0):  # another name is another lock
                pass
        with other.lock("audit", 1.0, 1.0):  # released at the end of the block
            pass
    finally:
        other.close()


def _acquire_many(opener: Callable[[], KeyStore], subjects: int, out: Any) -> None:
    store = opener()
    try:
        out.put(
            sorted(
                (k.subject, k.key_id)
                for k in (store.acquire(key_row(subject=f"s{i}"), block=1, cap=10**6) for i in range(subjects))
            )
        )
    finally:
        store.close()


def test_processes_asking_at_once_for_a_conversation_key_get_one_key(
    store: KeyStore, opener: Callable[[], KeyStore]
) -> None:
    import multiprocessing

    store.create_tenant(tenant_row(), reprovision=False)
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    workers = [ctx.Process(target=_acquire_many, args=(opener, 40, out)) for _ in range(4)]
    for worker in workers:
        worker.start()
    seen = [out.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert all(s == seen[0] for s in seen), "two processes got different keys for one conversation"
    assert len({key_id for _subject, key_id in seen[0]}) == 40
    assert store.counts()[0].conversation_keys == 40
    assert store.data_key(seen[0][0][1]).uses == 4  # type: ignore[union-attr]


def test_a_batch_commits_its_calls_together_or_not_at_all(store: KeyStore) -> None:
    store.create_tenant(tenant_row(), reprovision=False)
    kept, lost = key_row(subject="kept"), key_row(subject="lost")
    with store.batch():
        store.acquire(kept, block=10, cap=100)
        with pytest.raises(TenantFenced):  # a call that fails inside rolls back alone
            store.acquire(key_row(tenant="ghost"), block=10, cap=100)
        assert store.data_key(kept.key_id) is not None  # the batch sees its own changes
    assert store.data_key(kept.key_id) is not None
    with pytest.raises(RuntimeError), store.batch():
        store.acquire(lost, block=10, cap=100)
        store.destroy_subject("acme", "conversation", "kept", "closed", NOW)
        raise RuntimeError("the batch fails")
    assert store.data_key(lost.key_id) is None  # nothing of the failed batch is stored
    assert store.data_key(kept.key_id) is not None and not store.was_destroyed(kept.key_id)
    with store.batch():
        assert store.destroy_subject("acme", "conversation", "kept", "closed", NOW) == [kept.key_id]
    assert store.was_destroyed(kept.key_id)
