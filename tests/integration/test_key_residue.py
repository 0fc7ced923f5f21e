"""`tenant terminate` while another process holds a read transaction on the key store, on a real
broker with a running worker: the command never certifies a destruction whose bytes are still in a
file of the key store, never makes other commands wait on the store, and a re-run finishes. Also:
the master key that wrapped the destroyed root is destroyed with it (or the certificate says not)."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from shredline.keystore.errors import MasterKeyError
from shredline.keystore.keys import Keys
from shredline.keystore.master import load_keyring
from shredline.streams.kafka.admin import apply_catalog
from shredline.streams.key_store import open_keys
from shredline.streams.settings import Settings, load_settings
from tests.conftest import Broker, wait_for
from tests.integration.test_termination import Pipeline, pipeline  # noqa: F401 - the module's worker and broker
from tests.integration.test_worker import cli
from tests.unit.keystore.forensics import Reader, raw_bytes, secrets_of

pytestmark = pytest.mark.kafka
OTHER_COMMAND_S = 5.0  # "a few seconds"; measured 0.2-0.8 s (interpreter start, broker, audit relay)


class Terminate:
    """`shredline tenant terminate TENANT --yes` running in the background; its stderr lines are
    collected as they come."""

    def __init__(self, env: dict[str, str], tenant: str) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "shredline.streams.cli",
                "tenant",
                "terminate",
                tenant,
                "--reason",
                "ended",
                "--yes",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._collect, daemon=True)
        self._reader.start()

    def _collect(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def said(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def finish(self, timeout_s: float = 120) -> int:
        try:
            code = self.proc.wait(timeout=timeout_s)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=10)
        return code


def state_of(data_dir: Path, tenant: str) -> str | None:
    db = sqlite3.connect(data_dir / "keys.sqlite")
    try:
        row = db.execute("SELECT state FROM tenants WHERE tenant = ?", (tenant,)).fetchone()
    finally:
        db.close()
    return None if row is None else str(row[0])


def provisioned_with_keys(p: Pipeline, tenant: str) -> tuple[Keys, list[bytes]]:
    assert p.cli("tenant", "provision", tenant).returncode == 0
    p.processed(tenant, 6, tenant)
    keys = open_keys(Settings(data_dir=p.data_dir))
    secrets = secrets_of(keys, tenant)
    assert len(secrets) == 2 + 2 * 3  # root and three conversation keys, each wrapped and raw
    return keys, secrets


def assert_no_residue(p: Pipeline, tenant: str, secrets: list[bytes], wrapped_root_version: int) -> dict[str, object]:
    """Scan every byte of every key-store file (and the termination's own files) for the destroyed
    keys; check the master version that wrapped the root is gone. Returns the certificate body."""
    raw = raw_bytes(p.data_dir)
    assert [i for i, s in enumerate(secrets) if s in raw] == []
    record = open_keys(Settings(data_dir=p.data_dir)).store.termination(tenant, 1)
    assert record is not None and record.probes is None  # the probes go with the certificate
    assert [i for i, s in enumerate(secrets) if s in (record.progress or "").encode()] == []
    ring = load_keyring(None, p.data_dir / "master.key", create=False)
    assert wrapped_root_version not in ring.versions
    certificate = p.data_dir / "certificates" / f"{tenant}.g1.json"
    assert p.cli("certificate", "verify", str(certificate)).returncode == 0
    body: dict[str, object] = json.loads(certificate.read_text())["certificate"]
    return body


def test_a_reader_on_the_key_store_fails_the_termination_cleanly_and_a_rerun_certifies(pipeline: Pipeline) -> None:  # noqa: F811
    tenant = "held"
    keys, secrets = provisioned_with_keys(pipeline, tenant)
    row = keys.store.tenant(tenant)
    assert row is not None and row.master_version is not None
    reader = Reader(pipeline.data_dir / "keys.sqlite")  # BEGIN; SELECT * FROM tenants; and holds on
    run = Terminate(pipeline.env, tenant)
    try:
        wait_for(lambda: state_of(pipeline.data_dir, tenant) == "terminated", 60, "the keys step to commit")
        # Meanwhile every other command gets the store at once (before: "key store locked" after 10 s).
        for command in (("tenant", "list"), ("keys", "report"), ("tenant", "provision", f"{tenant}-other")):
            started = time.monotonic()
            done = pipeline.cli(*command)
            took = time.monotonic() - started
            assert done.returncode == 0 and took < OTHER_COMMAND_S, f"{command}: exit {done.returncode}, {took:.1f} s"
        assert run.finish() == 1
        error = run.lines[-1]
        assert error.startswith(
            f"shredline: error: terminate {tenant}: keys: a reader holds a snapshot of keys.sqlite older than the last "
            "change (pid "
        ), error
        assert str(reader.proc.pid) in error and "bytes of the destroyed keys remain in keys.sqlite" in error
        assert error.endswith("re-run when it ends") and not run.said("5/6 verify:")
        assert not (pipeline.data_dir / "certificates" / f"{tenant}.g1.json").exists()
        assert row.root_wrapped in raw_bytes(pipeline.data_dir)  # what the reader's snapshot keeps on disk
    finally:
        reader.end()
        run.finish()

    rerun = pipeline.cli("tenant", "terminate", tenant, "--reason", "ended", "--yes")
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming the termination" in rerun.stderr and "verify: " in rerun.stderr
    body = assert_no_residue(pipeline, tenant, secrets, row.master_version)
    verification = body["verification"]
    assert isinstance(verification, dict)
    assert verification["key_store_residue"] == 0 and verification["master_key_rotated"] is True
    assert verification["root_key_remaining"] is False
    # A copy of the old row (a backup, a stray block) no longer opens: its master version is destroyed.
    with pytest.raises(MasterKeyError):
        Keys._unwrap_root(load_keyring(None, pipeline.data_dir / "master.key", create=False), row)


def test_a_reader_that_ends_while_verify_waits_lets_the_first_run_certify(pipeline: Pipeline) -> None:  # noqa: F811
    tenant = "brief"
    keys, secrets = provisioned_with_keys(pipeline, tenant)
    row = keys.store.tenant(tenant)
    assert row is not None and row.master_version is not None
    reader = Reader(pipeline.data_dir / "keys.sqlite")
    run = Terminate(pipeline.env, tenant)
    try:
        wait_for(lambda: run.said("2/6 keys:") or run.proc.poll() is not None, 60, "the keys step")
        assert run.said("master key v") and run.said("destroyed, roots re-wrapped under v")
        assert row.root_wrapped in raw_bytes(pipeline.data_dir)  # positive control: held by the reader
        reader.end()
        assert run.finish() == 0, "\n".join(run.lines)
    finally:
        reader.end()
        run.finish()
    body = assert_no_residue(pipeline, tenant, secrets, row.master_version)
    assert body["verification"] == {
        "buffer_records_sampled": 6,
        "buffer_records_readable": 0,
        "data_keys_remaining": 0,
        "root_key_remaining": False,
        "key_store_residue": 0,
        "other_files_residue": 0,
        "master_key_rotated": True,
        "key_store_files_scanned": True,
    }


def test_a_copy_of_the_key_store_in_the_data_dir_fails_the_termination_until_it_is_gone(
    broker: Broker, tmp_path: Path
) -> None:
    """A copy made by a backup tool or an operator next to the store (here while the key comes from
    the environment, so nothing makes the copy useless): the certificate said no key bytes were
    left, and the copy's wrapped root still opened with the live master key."""
    prefix = f"copy{uuid.uuid4().hex[:8]}"
    apply_catalog(broker.connection, prefix, 1)
    env = {
        **broker.client_env(prefix, tmp_path),
        "SHREDLINE_MASTER_KEY": "v1:" + base64.b64encode(os.urandom(32)).decode(),
    }
    assert cli(env, "tenant", "provision", "copied").returncode == 0
    keys = open_keys(load_settings(env))
    secrets = secrets_of(keys, "copied")
    keys.store.close()
    copy = tmp_path / "backups" / "keys.sqlite.bak"
    copy.parent.mkdir()
    copy.write_bytes((tmp_path / "keys.sqlite").read_bytes())
    (tmp_path / "a-fifo").mkdir()
    os.mkfifo(tmp_path / "a-fifo" / "pipe")  # never opened: the scan reads regular files only

    failed = cli(env, "tenant", "terminate", "copied", "--reason", "ended", "--yes")
    assert failed.returncode == 1
    assert failed.stderr.splitlines()[-1] == (
        "shredline: error: terminate copied: keys: bytes of the destroyed keys remain outside the key store, "
        f"in {copy} (a copy of it?); no certificate until they are gone: move or delete them, then re-run"
    )
    assert not (tmp_path / "certificates" / "copied.g1.json").exists()

    copy.unlink()
    done = cli(env, "tenant", "terminate", "copied", "--reason", "ended", "--yes")
    assert done.returncode == 0, done.stderr
    body = json.loads((tmp_path / "certificates" / "copied.g1.json").read_text())["certificate"]
    assert body["verification"]["other_files_residue"] == 0 and body["verification"]["key_store_residue"] == 0
    everything = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and "kafka" not in p.parts)
    assert [i for i, s in enumerate(secrets) if s in everything] == []


def test_a_master_key_from_the_environment_is_not_rotated_and_the_certificate_says_so(
    broker: Broker, tmp_path: Path
) -> None:
    prefix = f"envkey{uuid.uuid4().hex[:8]}"
    apply_catalog(broker.connection, prefix, 1)
    env = {
        **broker.client_env(prefix, tmp_path),
        "SHREDLINE_MASTER_KEY": "v1:" + base64.b64encode(os.urandom(32)).decode(),
    }
    assert cli(env, "tenant", "provision", "envkey").returncode == 0
    done = cli(env, "tenant", "terminate", "envkey", "--reason", "ended", "--yes")
    assert done.returncode == 0, done.stderr
    assert "master key NOT rotated: it comes from SHREDLINE_MASTER_KEY" in done.stderr
    assert not (tmp_path / "master.key").exists()
    body = json.loads((tmp_path / "certificates" / "envkey.g1.json").read_text())["certificate"]
    assert body["verification"]["master_key_rotated"] is False
    assert body["verification"]["key_store_residue"] == 0
