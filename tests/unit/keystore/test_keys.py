"""The key hierarchy on a real SQLite store: sealing, shredding, fencing, expiry, rotation,
concurrency across processes, and forensics on the store's raw bytes."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from shredline.keystore.errors import (
    InvalidCiphertext,
    KeyDestroyed,
    KeyStoreUnavailable,
    MasterKeyError,
    TenantExists,
    TenantTerminated,
    UnknownTenant,
)
from shredline.keystore.keys import Keys, Sealed
from shredline.keystore.master import MasterKeyring, add_version, load_keyring, parse_keyring, retire_versions_below
from shredline.keystore.sqlite_store import SqliteKeyStore
from shredline.keystore.store import CONTACT, CONVERSATION
from tests.unit.keystore.forensics import raw_bytes, secrets_of

TOPIC = "buffer.messages"


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_keys(tmp_path: Path, clock: Clock | None = None, **kwargs: object) -> Keys:
    ring = load_keyring(None, tmp_path / "master.key", create=True)
    return Keys(SqliteKeyStore(tmp_path / "keys.sqlite"), ring, clock=clock or Clock(), **kwargs)  # type: ignore[arg-type]


def test_seal_open_round_trip_with_one_key_per_conversation(tmp_path: Path) -> None:
    keys = make_keys(tmp_path)
    keys.provision("acme")
    a1 = keys.seal("acme", CONVERSATION, "conv-1", TOPIC, b"Oi, tudo bem?")
    a2 = keys.seal("acme", CONVERSATION, "conv-1", TOPIC, b"Tudo!")
    b1 = keys.seal("acme", CONVERSATION, "conv-2", TOPIC, b"Hola")
    assert a1.key_id == a2.key_id != b1.key_id
    assert a1.record_id == keys.pseudonym("acme", CONVERSATION, "conv-1") and "conv-1" not in a1.record_id
    assert keys.open(a1, TOPIC) == b"Oi, tudo bem?"
    fresh = make_keys(tmp_path)  # another process's view: nothing cached
    assert fresh.open(a2, TOPIC) == b"Tudo!" and fresh.open(b1, TOPIC) == b"Hola"


def test_misplaced_or_forged_envelopes_fail_opaquely(tmp_path: Path) -> None:
    keys = make_keys(tmp_path)
    keys.provision("acme")
    keys.provision("beta")
    sealed = keys.seal("acme", CONVERSATION, "conv-1", TOPIC, b"secret")
    other = keys.seal("acme", CONVERSATION, "conv-2", TOPIC, b"other")
    cases = [
        Sealed("beta", sealed.scope, sealed.record_id, sealed.key_id, sealed.nonce, sealed.ciphertext),
        Sealed("acme", sealed.scope, other.record_id, sealed.key_id, sealed.nonce, sealed.ciphertext),
        Sealed("acme", sealed.scope, sealed.record_id, other.key_id, sealed.nonce, sealed.ciphertext),
        Sealed("acme", sealed.scope, sealed.record_id, "f" * 32, sealed.nonce, sealed.ciphertext),
    ]
    for case in cases:
        with pytest.raises(InvalidCiphertext):
            keys.open(case, TOPIC)
    with pytest.raises(InvalidCiphertext):
        keys.open(sealed, "buffer.contacts")


def test_keys_rotate_past_their_use_cap_and_old_records_still_open(tmp_path: Path) -> None:
    keys = make_keys(tmp_path, max_uses=4, reserve_block=2)
    keys.provision("acme")
    sealed = [keys.seal("acme", CONVERSATION, "conv-1", TOPIC, f"m{i}".encode()) for i in range(9)]
    assert len({s.key_id for s in sealed}) == 3
    assert [keys.open(s, TOPIC) for s in sealed] == [f"m{i}".encode() for i in range(9)]


def test_closing_a_conversation_shreds_it_and_nothing_else(tmp_path: Path) -> None:
    keys = make_keys(tmp_path)
    keys.provision("acme")
    closed = keys.seal("acme", CONVERSATION, "conv-1", TOPIC, b"bye")
    contact = keys.seal("acme", CONTACT, "contact-1", "buffer.contacts", b"Ana")
    open_one = keys.seal("acme", CONVERSATION, "conv-2", TOPIC, b"still here")
    assert len(keys.destroy_subject("acme", CONVERSATION, "conv-1", "closed")) == 1
    for view in (keys, make_keys(tmp_path)):
        with pytest.raises(KeyDestroyed, match="key destroyed"):
            view.open(closed, TOPIC)
        assert view.open(open_one, TOPIC) == b"still here"
        assert view.open(contact, "buffer.contacts") == b"Ana"
    # A new message in the closed conversation gets a new key, not the shredded one.
    assert keys.seal("acme", CONVERSATION, "conv-1", TOPIC, b"new").key_id != closed.key_id


def test_tenant_destruction_shreds_every_record_for_every_reader(tmp_path: Path) -> None:
    clock = Clock()
    worker = make_keys(tmp_path, clock)
    worker.provision("acme")
    worker.provision("beta")
    sealed = [worker.seal("acme", CONVERSATION, f"conv-{i}", TOPIC, b"x") for i in range(5)]
    sealed.append(worker.seal("acme", CONTACT, "contact-1", "buffer.contacts", b"Ana"))
    beta = worker.seal("beta", CONVERSATION, "conv-1", TOPIC, b"kept")
    for s in sealed:  # the worker now has every key cached
        worker.open(s, TOPIC if s.scope == CONVERSATION else "buffer.contacts")

    operator = make_keys(tmp_path, clock)
    result = operator.destroy_tenant("acme", "contract ended")
    assert result.by_scope == {CONVERSATION: 5, CONTACT: 1}

    clock.now += 1.5  # past the staleness bound: the cached worker re-checks and refuses
    for s in sealed:
        with pytest.raises(KeyDestroyed):
            worker.open(s, TOPIC if s.scope == CONVERSATION else "buffer.contacts")
    assert worker.open(beta, TOPIC) == b"kept"

    code = (
        "import sys; from pathlib import Path; from shredline.keystore.keys import Keys, Sealed;"
        "from shredline.keystore.sqlite_store import SqliteKeyStore;"
        "from shredline.keystore.master import load_keyring;"
        "from shredline.keystore.errors import KeyDestroyed; d = Path(sys.argv[1]);"
        "k = Keys(SqliteKeyStore(d / 'keys.sqlite'), load_keyring(None, d / 'master.key', create=False));"
        f"s = Sealed('acme', 'conversation', {sealed[0].record_id!r}, {sealed[0].key_id!r}, "
        f"{sealed[0].nonce!r}, {sealed[0].ciphertext!r})\n"
        "try:\n    k.open(s, 'buffer.messages')\nexcept KeyDestroyed as e:\n    print('destroyed:', e)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "destroyed: tenant acme is terminated: its data is deleted"


def test_evict_makes_destruction_visible_at_once(tmp_path: Path) -> None:
    clock = Clock()
    worker = make_keys(tmp_path, clock)
    worker.provision("acme")
    sealed = worker.seal("acme", CONVERSATION, "conv-1", TOPIC, b"x")
    worker.open(sealed, TOPIC)
    make_keys(tmp_path, clock).destroy_tenant("acme", "ended")
    assert worker.open(sealed, TOPIC) == b"x"  # within the staleness bound the cache may still answer
    worker.evict_tenant("acme")  # what the control-topic consumer does on a termination event
    with pytest.raises(TenantTerminated):
        worker.open(sealed, TOPIC)


def test_the_fence_holds_against_late_events_and_silent_reprovisioning(tmp_path: Path) -> None:
    clock = Clock()
    worker = make_keys(tmp_path, clock)
    worker.provision("acme")
    old = worker.seal("acme", CONVERSATION, "conv-1", TOPIC, b"old")
    make_keys(tmp_path, clock).destroy_tenant("acme", "ended")
    clock.now += 2
    with pytest.raises(TenantTerminated):
        worker.seal("acme", CONVERSATION, "conv-late", TOPIC, b"late event")
    with pytest.raises(TenantExists):
        worker.provision("acme")
    worker.provision("acme", reprovision=True)
    assert worker.store.tenant("acme").generation == 2  # type: ignore[union-attr]
    with pytest.raises(KeyDestroyed):
        worker.open(old, TOPIC)
    new = worker.seal("acme", CONVERSATION, "conv-1", TOPIC, b"new")
    assert new.record_id != old.record_id  # new generation, new pseudonyms: no link to the old data
    assert worker.open(new, TOPIC) == b"new"
    with pytest.raises(UnknownTenant):
        worker.seal("nobody", CONVERSATION, "c", TOPIC, b"x")


def test_conversation_keys_expire_after_last_activity_plus_ttl(tmp_path: Path) -> None:
    clock = Clock()
    keys = make_keys(tmp_path, clock)
    keys.provision("acme", buffer_ttl_s=3600)
    idle = keys.seal("acme", CONVERSATION, "idle", TOPIC, b"a")
    busy = keys.seal("acme", CONVERSATION, "busy", TOPIC, b"b")
    contact = keys.seal("acme", CONTACT, "c1", "buffer.contacts", b"c")
    clock.now += 3000
    keys.seal("acme", CONVERSATION, "busy", TOPIC, b"activity pushes the expiry")
    clock.now += 700
    assert keys.expire() == [idle.key_id]
    with pytest.raises(KeyDestroyed):
        keys.open(idle, TOPIC)
    assert keys.open(busy, TOPIC) == b"b" and keys.open(contact, "buffer.contacts") == b"c"


def test_master_rotation_rewraps_roots_only_and_everything_stays_readable(tmp_path: Path) -> None:
    keys = make_keys(tmp_path)
    keys.provision("acme")
    keys.provision("beta")
    sealed = [
        keys.seal(t, CONVERSATION, f"c{i}", TOPIC, f"{t}{i}".encode()) for t in ("acme", "beta") for i in range(3)
    ]
    db = sqlite3.connect(tmp_path / "keys.sqlite")
    data_keys_before = db.execute("SELECT key_id, wrapped FROM data_keys ORDER BY key_id").fetchall()
    roots_before = db.execute("SELECT root_wrapped FROM tenants ORDER BY tenant").fetchall()

    path = tmp_path / "master.key"
    new_version = add_version(path)
    assert keys.rotate_master(load_keyring(None, path, create=False)) == 2
    assert retire_versions_below(path, new_version) == [1]

    assert db.execute("SELECT key_id, wrapped FROM data_keys ORDER BY key_id").fetchall() == data_keys_before
    assert db.execute("SELECT root_wrapped FROM tenants ORDER BY tenant").fetchall() != roots_before
    assert {r[0] for r in db.execute("SELECT master_version FROM tenants")} == {new_version}
    after = make_keys(tmp_path)  # only the new master version exists now
    assert after.master.versions == [new_version]
    assert [after.open(s, TOPIC) for s in sealed] == [f"{t}{i}".encode() for t in ("acme", "beta") for i in range(3)]


def test_master_key_file_is_private_and_errors_never_show_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "master.key"
    ring = load_keyring(None, path, create=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert text.startswith("v1:") and text.split(":")[1].strip() not in repr(ring)
    os.chmod(path, 0o644)
    with pytest.raises(MasterKeyError, match="readable by others"):
        load_keyring(None, path, create=False)
    with pytest.raises(MasterKeyError, match="no key file"):
        load_keyring(None, tmp_path / "missing.key", create=False)
    secret = "v1:c2hvcnQ="  # base64 of "short"
    with pytest.raises(MasterKeyError) as err:
        MasterKeyring(parse_keyring(secret, "SHREDLINE_MASTER_KEY"))
    assert "c2hvcnQ" not in str(err.value) and "version 1" in str(err.value)
    with pytest.raises(MasterKeyError, match="not `v<N>:<base64>`"):
        parse_keyring("hunter2", "SHREDLINE_MASTER_KEY")
    env_ring = load_keyring("v7:" + "A" * 43 + "=", tmp_path / "unused.key", create=True)
    assert env_ring.current == 7 and not (tmp_path / "unused.key").exists()


def test_nothing_secret_in_reprs(tmp_path: Path) -> None:
    keys = make_keys(tmp_path)
    row = keys.provision("acme")
    key = keys.sealing_key("acme", CONVERSATION, "conv-1")
    assert row.root_wrapped is not None
    for text in (repr(keys), repr(key), repr(row), repr(keys.master), repr(keys.store)):
        assert row.root_wrapped.hex() not in text and "conv-1" not in text


def test_a_locked_store_raises_unavailable_and_writes_nothing(tmp_path: Path) -> None:
    keys = make_keys(tmp_path)
    keys.provision("acme")
    locked = Keys(SqliteKeyStore(tmp_path / "keys.sqlite", busy_timeout_s=0.2), keys.master)
    blocker = sqlite3.connect(tmp_path / "keys.sqlite", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(KeyStoreUnavailable):
            locked.seal("acme", CONVERSATION, "conv-1", TOPIC, b"must not be sealed")
    finally:
        blocker.execute("ROLLBACK")
    assert keys.report()[0].conversation_keys == 0


def _race(path: str, barrier: multiprocessing.synchronize.Barrier, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    keys = Keys(SqliteKeyStore(Path(path) / "keys.sqlite"), load_keyring(None, Path(path) / "master.key", create=False))
    barrier.wait()
    sealed = keys.seal("acme", CONVERSATION, "conv-race", TOPIC, b"from " + str(os.getpid()).encode())
    out.put((sealed.key_id, sealed.record_id, sealed.nonce, sealed.ciphertext))


def test_two_processes_creating_the_same_conversation_key_get_one_key(tmp_path: Path) -> None:
    make_keys(tmp_path).provision("acme")
    ctx = multiprocessing.get_context("spawn")
    for _round in range(5):
        barrier, out = ctx.Barrier(2), ctx.Queue()
        procs = [ctx.Process(target=_race, args=(str(tmp_path), barrier, out)) for _ in range(2)]
        for p in procs:
            p.start()
        results = [out.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(timeout=60)
            assert p.exitcode == 0
        assert results[0][0] == results[1][0]
        keys = make_keys(tmp_path)
        for key_id, record_id, nonce, ct in results:  # and each can open what the other sealed
            assert keys.open(Sealed("acme", CONVERSATION, record_id, key_id, nonce, ct), TOPIC).startswith(b"from ")
        keys.destroy_subject("acme", CONVERSATION, "conv-race", "next round")
    assert make_keys(tmp_path).report()[0].destroyed_keys == 5


def test_forensics_no_byte_of_a_destroyed_key_remains_in_any_store_file(tmp_path: Path) -> None:
    keys = make_keys(tmp_path)
    for tenant in ("acme", "beta"):
        keys.provision(tenant)
        for i in range(200):
            keys.seal(tenant, CONVERSATION, f"conv-{i}", TOPIC, b"x")
        for i in range(50):
            keys.seal(tenant, CONTACT, f"contact-{i}", "buffer.contacts", b"x")
    acme, beta = secrets_of(keys, "acme"), secrets_of(keys, "beta")
    assert len(acme) == 2 + 2 * 250
    raw = raw_bytes(tmp_path)
    assert all(s in raw for s in acme[2::2])  # positive control: the scan finds wrapped keys that exist

    # One conversation first, then the whole tenant.
    conv_row = (
        sqlite3.connect(tmp_path / "keys.sqlite")
        .execute(
            "SELECT wrapped FROM data_keys WHERE tenant='acme' AND subject=?",
            (keys.pseudonym("acme", CONVERSATION, "conv-7"),),
        )
        .fetchone()
    )
    keys.destroy_subject("acme", CONVERSATION, "conv-7", "closed")
    assert conv_row[0] not in raw_bytes(tmp_path)

    keys.destroy_tenant("acme", "contract ended")
    raw = raw_bytes(tmp_path)
    leaked = [s for s in acme if s in raw]
    assert leaked == [], f"{len(leaked)} secrets of a destroyed tenant still on disk"
    assert all(s in raw for s in beta[::2]) and beta[0] in raw  # the other tenant is untouched


def test_dedup_tokens_are_stable_per_fact_and_die_with_their_day_key(tmp_path: Path) -> None:
    clock = Clock(dt.datetime(2026, 11, 28, 12, tzinfo=dt.UTC).timestamp())
    keys = make_keys(tmp_path, clock)
    keys.provision("acme")
    when = dt.datetime(2026, 11, 28, 11, 59, tzinfo=dt.UTC)
    token = keys.dedup_token("acme", "evt-1", "MESSAGE", when)
    assert token is not None and len(token) == 16
    assert make_keys(tmp_path, clock).dedup_token("acme", "evt-1", "MESSAGE", when) == token  # another worker
    assert keys.dedup_token("acme", "evt-1", "CONVERSATION_CLOSED", when) != token
    assert keys.dedup_token("acme", "evt-2", "MESSAGE", when) != token
    assert keys.dedup_token("acme", "evt-1", "MESSAGE", when - dt.timedelta(days=3)) is None  # outside the window
    assert [c.tenant for c in keys.report()] == ["acme"]  # day keys are not tenants to operators

    clock.now += 3 * 86_400  # three days later the day key of the 28th is destroyed...
    keys.expire()
    assert keys.dedup_token("acme", "evt-1", "MESSAGE", when) is None  # ...and cannot come back
    fenced = keys.store.tenant("~dedup-2026-11-28")
    assert fenced is not None and fenced.state == "terminated" and fenced.root_wrapped is None


def test_a_failed_batch_forgets_the_keys_it_made_so_none_seals_without_being_stored(tmp_path: Path) -> None:
    keys = make_keys(tmp_path)
    keys.provision("acme")
    other = make_keys(tmp_path)
    with pytest.raises(RuntimeError), keys.batch():
        lost = keys.seal("acme", CONVERSATION, "conv-1", TOPIC, b"Oi")
        with pytest.raises(InvalidCiphertext):  # another process sees nothing of a batch before it commits
            other.open(lost, TOPIC)
        raise RuntimeError("the batch fails")
    again = keys.seal("acme", CONVERSATION, "conv-1", TOPIC, b"Oi")
    assert again.key_id != lost.key_id  # not the rolled-back key, still cached
    with keys.batch():
        kept = keys.seal("acme", CONVERSATION, "conv-2", TOPIC, b"Hola")
    assert make_keys(tmp_path).open(kept, TOPIC) == b"Hola"


def test_a_batch_refuses_a_tenant_terminated_elsewhere_at_once(tmp_path: Path) -> None:
    keys = make_keys(tmp_path, staleness_s=3600.0)
    keys.provision("acme")
    keys.seal("acme", CONVERSATION, "conv-1", TOPIC, b"Oi")  # cached, and fresh for an hour
    make_keys(tmp_path).destroy_tenant("acme", "contract ended")  # another process, no control event
    with keys.batch(), pytest.raises(TenantTerminated):
        keys.seal("acme", CONVERSATION, "conv-1", TOPIC, b"Oi")


def test_a_batch_that_changes_nothing_locks_nobody_out(tmp_path: Path) -> None:
    keys = make_keys(tmp_path)
    keys.provision("acme")
    keys.seal("acme", CONVERSATION, "conv-1", TOPIC, b"Oi")
    other = make_keys(tmp_path)  # another process
    with keys.batch():
        keys.seal("acme", CONVERSATION, "conv-1", TOPIC, b"Oi de novo")  # a cached key: reads only
        other.provision("beta")  # needs the write lock, which the batch has not taken
        keys.seal("acme", CONVERSATION, "conv-2", TOPIC, b"Hola")  # a new key: the batch's first write
    assert other.open(keys.seal("acme", CONVERSATION, "conv-2", TOPIC, b"x"), TOPIC) == b"x"
