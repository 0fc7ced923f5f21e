"""Residue of destroyed keys on a real SQLite store, with real processes: a reader holding an old
snapshot, a writer that must not wait on it, the scan that tells, and master-key rotation racing
a provisioning process."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shredline.keystore.errors import MasterKeyError
from shredline.keystore.keys import Keys
from shredline.keystore.master import load_keyring, rotate
from shredline.keystore.residue import SALT, WINDOW, Probes, ProbesInvalid, scan_tree, settle
from shredline.keystore.sqlite_store import SqliteKeyStore
from shredline.keystore.store import CONTACT, CONVERSATION
from tests.unit.keystore.forensics import Reader, raw_bytes, secrets_of

TOPIC = "buffer.messages"
FAST_S = 3.0  # "a few seconds": what a writer may wait on the store while a reader holds on


def open_keys(directory: Path, busy_timeout_s: float = 10.0) -> Keys:
    ring = load_keyring(None, directory / "master.key", create=True)
    store = SqliteKeyStore(directory / "keys.sqlite", busy_timeout_s=busy_timeout_s)
    return Keys(store, ring, reload_master=lambda: load_keyring(None, directory / "master.key", create=False))


def populated(directory: Path, busy_timeout_s: float = 10.0) -> Keys:
    keys = open_keys(directory, busy_timeout_s)
    for tenant in ("acme", "beta"):
        keys.provision(tenant)
        for i in range(40):
            keys.seal(tenant, CONVERSATION, f"conv-{i}", TOPIC, b"x")
            keys.seal(tenant, CONTACT, f"contact-{i}", "buffer.contacts", b"x")
    keys.store.checkpoint()
    return keys


@pytest.fixture
def reader(tmp_path: Path) -> Iterator[list[Reader]]:
    held: list[Reader] = []
    yield held
    for r in held:
        r.end()


def write_from_another_process(directory: Path, tenant: str) -> tuple[int, float]:
    """Provision `tenant` from a new process with the CLI's 10 s busy timeout; (exit code, seconds)."""
    code = (
        "import sys; from pathlib import Path; from shredline.keystore.keys import Keys;"
        "from shredline.keystore.sqlite_store import SqliteKeyStore;"
        "from shredline.keystore.master import load_keyring;"
        "d = Path(sys.argv[1]); Keys(SqliteKeyStore(d / 'keys.sqlite'), "
        "load_keyring(None, d / 'master.key', create=False)).provision(sys.argv[2])"
    )
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code, str(directory), tenant], capture_output=True, timeout=120)
    return done.returncode, time.monotonic() - started


def test_probes_find_every_copy_at_any_offset_and_hold_no_byte_of_it(tmp_path: Path) -> None:
    secrets = [os.urandom(48) for _ in range(20)] + [os.urandom(32) for _ in range(20)]
    probes = Probes.of(secrets, os.urandom(SALT))
    dump = probes.dump()
    for secret in secrets:  # nothing of a secret in what is written to disk, not even 8 bytes
        assert not any(secret[i : i + 8] in dump for i in range(len(secret) - 7))
    again = Probes.load(dump)
    assert again.digests == probes.digests and again.secrets == 40 and "digests=" in repr(again)
    with pytest.raises(ProbesInvalid):
        Probes.load(b"junk" + dump)
    for offset in range(2 * WINDOW):  # a copy anywhere is found; random bytes around it are not
        for secret in (secrets[0], secrets[-1]):
            data = os.urandom(1000 + offset) + secret + os.urandom(1000)
            path = tmp_path / "file"
            path.write_bytes(data)
            assert probes.count_in(path) >= 1
            path.write_bytes(os.urandom(len(data)))
            assert probes.count_in(path) == 0
    with pytest.raises(ValueError):
        Probes.of([os.urandom(31)], os.urandom(SALT))  # too short to be found at every offset


def test_the_tree_scan_reads_regular_files_only_and_honours_what_it_skips(tmp_path: Path) -> None:
    secret = os.urandom(48)
    probes = Probes.of([secret], os.urandom(SALT))
    (tmp_path / "data" / "backups").mkdir(parents=True)
    (tmp_path / "data" / "kafka").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "data" / "backups" / "copy.bak").write_bytes(b"x" * 7 + secret)
    (tmp_path / "data" / "kafka" / "segment.log").write_bytes(secret)
    (tmp_path / "data" / "keys.sqlite").write_bytes(secret)
    (tmp_path / "data" / "clean").write_bytes(os.urandom(4096))
    (tmp_path / "outside" / "elsewhere").write_bytes(secret)
    (tmp_path / "data" / "link").symlink_to(tmp_path / "outside" / "elsewhere")
    (tmp_path / "data" / "linked-dir").symlink_to(tmp_path / "outside")
    os.mkfifo(tmp_path / "data" / "pipe")  # opening it would block for ever
    found, unreadable = scan_tree(
        [tmp_path / "data"], probes, [tmp_path / "data" / "kafka", tmp_path / "data" / "keys.sqlite"]
    )
    assert found == {str(tmp_path / "data" / "backups" / "copy.bak"): 1} and unreadable == []


def test_a_reader_holding_a_snapshot_keeps_destroyed_keys_on_disk_but_blocks_no_writer(
    tmp_path: Path, reader: list[Reader]
) -> None:
    keys = populated(tmp_path)
    acme, beta = secrets_of(keys, "acme"), secrets_of(keys, "beta")
    reader.append(Reader(tmp_path / "keys.sqlite"))
    seen: list[Probes] = []
    done = threading.Event()

    def destroy() -> None:
        keys.destroy_tenant("acme", "contract ended", witness=seen.append)
        done.set()

    # Before: the checkpoint waited on the reader while holding the write lock, 50 times over.
    threading.Thread(target=destroy, daemon=True).start()
    assert done.wait(FAST_S), "the destruction waited on a reader"
    code, took = write_from_another_process(tmp_path, "gamma")
    assert code == 0 and took < FAST_S + 2, f"another process's write took {took:.1f} s (exit {code})"

    # The reader's snapshot still needs the old pages: the destroyed keys are on disk, and the scan says so.
    raw = raw_bytes(tmp_path)
    assert acme[0] in raw  # positive control for the scan below: the wrapped root is still there
    residue = settle(keys.store, seen[0], wait_s=0.3)
    assert residue.found.get("keys.sqlite", 0) > 0
    assert residue.blocker is not None and f"pid {reader[0].proc.pid}" in residue.blocker
    assert seen[0].secrets == len(acme)  # every wrapped and raw key of the tenant was probed

    reader[0].end()
    residue = settle(keys.store, seen[0], wait_s=5)
    assert residue.found == {} and residue.blocker is None
    raw = raw_bytes(tmp_path)
    assert [s for s in acme if s in raw] == []
    assert all(s in raw for s in beta[::2])  # the other tenant's wrapped keys are all still there


def test_the_worker_timeout_store_closes_a_conversation_at_once_and_the_janitor_clears_the_residue(
    tmp_path: Path, reader: list[Reader]
) -> None:
    keys = populated(tmp_path, busy_timeout_s=0.5)  # the worker's setting
    subject = keys.pseudonym("acme", CONVERSATION, "conv-7")
    db = sqlite3.connect(tmp_path / "keys.sqlite")
    (wrapped,) = db.execute("SELECT wrapped FROM data_keys WHERE subject = ?", (subject,)).fetchone()
    db.close()
    reader.append(Reader(tmp_path / "keys.sqlite"))
    started = time.monotonic()
    assert len(keys.destroy_subject("acme", CONVERSATION, "conv-7", "closed")) == 1
    assert time.monotonic() - started < 0.5, "closing a conversation waited on a reader"
    assert wrapped in raw_bytes(tmp_path)  # held by the reader's snapshot
    reader[0].end()
    keys.expire()  # the janitor's tick retries the checkpoint even with nothing to expire
    assert wrapped not in raw_bytes(tmp_path)


def test_a_process_that_provisions_across_a_rotation_wraps_under_the_new_version(tmp_path: Path) -> None:
    rotator = populated(tmp_path)
    late = open_keys(tmp_path)  # loaded the keyring (v1 only) before the rotation
    sealed = rotator.seal("acme", CONVERSATION, "conv-1", TOPIC, b"kept")
    os.link(tmp_path / "master.key", tmp_path / "master.key.before")  # the old file's inode, to look at
    rotation = rotate(tmp_path / "master.key", rotator)
    assert (rotation.version, rotation.retired, rotation.roots) == (2, [1], 2)
    assert set((tmp_path / "master.key.before").read_bytes()) == {0}  # the replaced key file was zeroed
    assert oct((tmp_path / "master.key").stat().st_mode & 0o777) == "0o600"

    row = late.provision("late")  # before: stored under v1, destroyed a moment ago: lost
    assert row.master_version == 2
    fresh = open_keys(tmp_path)
    assert fresh.master.versions == [2]
    assert fresh.tenant_keys("late").generation == 1 and fresh.open(sealed, TOPIC) == b"kept"


def test_a_host_whose_keyring_another_host_rotated_past_cannot_rotate_it_and_changes_nothing(tmp_path: Path) -> None:
    # Host A and host B share the store; B's keyring is a copy taken before A rotated. Rotating on B
    # used to add a "v2" of its own beside A's real v2 (then v3, ...), and fail only at the re-wrap.
    host_a = populated(tmp_path)
    (tmp_path / "b").mkdir()
    stale = tmp_path / "b" / "master.key"
    stale.write_bytes((tmp_path / "master.key").read_bytes())
    stale.chmod(0o600)
    rotate(tmp_path / "master.key", host_a)
    before = stale.read_bytes()
    ring_b = load_keyring(None, stale, create=False)
    host_b = Keys(host_a.store, ring_b, reload_master=lambda: load_keyring(None, stale, create=False))
    for _attempt in range(2):
        with pytest.raises(
            MasterKeyError, match=r"cannot open the root of '(acme|beta)', wrapped under v2: it is stale"
        ):
            rotate(stale, host_b)
    assert stale.read_bytes() == before  # nothing added to the stale keyring
    assert host_a.store.tenant("acme").master_version == 2  # type: ignore[union-attr]


def test_an_old_wrapped_root_is_useless_once_its_master_version_is_destroyed(tmp_path: Path) -> None:
    keys = populated(tmp_path)
    copied = keys.store.tenant("acme")  # what a copy of the file or a stray disk block would hold
    assert copied is not None
    keys.destroy_tenant("acme", "ended")
    rotate(tmp_path / "master.key", keys)
    with pytest.raises(MasterKeyError, match="version 1 is not in the keyring"):
        Keys._unwrap_root(load_keyring(None, tmp_path / "master.key", create=False), copied)


def test_a_rotation_held_by_a_suspended_process_fails_in_one_line_not_for_ever(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`keys rotate-master` or a termination suspended (Ctrl-Z) inside the rotation: every other
    rotation, so every termination, waited on it for ever without a word."""
    from shredline.keystore import master
    from shredline.keystore.errors import MasterKeyError

    keys = open_keys(tmp_path)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, signal, sys; from pathlib import Path; from shredline.keystore.master import _rotation_lock\n"
            "from shredline.keystore.sqlite_store import SqliteKeyStore\n"
            "with _rotation_lock(SqliteKeyStore(Path(sys.argv[1]))):\n"
            "    print('held', flush=True); os.kill(os.getpid(), signal.SIGSTOP)",
            str(tmp_path / "keys.sqlite"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    outcome: list[BaseException | None] = []
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        stat = Path(f"/proc/{holder.pid}/stat")
        while stat.read_text().rsplit(")", 1)[1].split()[0] != "T":
            time.sleep(0.01)
        monkeypatch.setattr(master, "ROTATION_LOCK_WAIT_S", 1.0, raising=False)

        def attempt() -> None:
            try:
                rotate(tmp_path / "master.key", keys)
                outcome.append(None)
            except BaseException as exc:  # reported to the test thread
                outcome.append(exc)

        thread = threading.Thread(target=attempt, daemon=True)
        thread.start()
        thread.join(timeout=20)
        assert outcome, "the rotation waited on the suspended holder for ever"
        error = outcome[0]
        assert isinstance(error, MasterKeyError), error
        assert f"another process (pid {holder.pid}) has held keys.sqlite.rotation-lock for over 1 s" in str(error)
        assert load_keyring(None, tmp_path / "master.key", create=False).versions == [1]  # nothing rotated
    finally:
        holder.send_signal(signal.SIGCONT)
        holder.wait(timeout=30)
    assert rotate(tmp_path / "master.key", keys).version == 2  # once it ends


def test_a_store_locked_by_another_writer_names_its_pid(tmp_path: Path) -> None:
    """`key store locked: database is locked`, after the busy timeout, said nothing of who."""
    from shredline.keystore.errors import KeyStoreUnavailable

    store = SqliteKeyStore(tmp_path / "keys.sqlite", busy_timeout_s=0.2)
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys, time; db = sqlite3.connect(sys.argv[1], isolation_level=None);"
            "db.execute('BEGIN IMMEDIATE'); print('held', flush=True); time.sleep(60)",
            str(tmp_path / "keys.sqlite"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "held\n"
        with pytest.raises(KeyStoreUnavailable, match=rf"the write lock is held by pid {writer.pid}\)"):
            store.record("operator.command")
    finally:
        writer.kill()
        writer.wait()
    store.record("operator.command")
    store.close()
