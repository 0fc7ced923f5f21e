"""`shredline keys ...` on real files: report, rotate-master, and a worker that sees the rotation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from shredline.keystore.store import CONVERSATION
from shredline.streams.key_store import open_keys
from shredline.streams.launcher.certs import ensure_tls
from shredline.streams.settings import Settings


def run(data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The CLI with the operator's certificate (the keys commands say who runs them) and no broker."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SHREDLINE_")}
    credentials = ensure_tls(data_dir.parent / f"{data_dir.name}-tls").credentials
    return subprocess.run(
        [sys.executable, "-m", "shredline.streams.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, "SHREDLINE_DATA_DIR": str(data_dir), "SHREDLINE_TLS_CREDENTIALS": str(credentials), **env},
    )


def test_report_and_rotation_through_the_cli(tmp_path: Path) -> None:
    assert run(tmp_path, "keys", "report").stdout.strip() == "no tenants"
    assert (tmp_path / "master.key").exists()  # created on first local use

    worker = open_keys(Settings(data_dir=tmp_path))
    worker.provision("acme")
    sealed = worker.seal("acme", CONVERSATION, "conv-1", "buffer.messages", b"hello")

    rotated = run(tmp_path, "keys", "rotate-master")
    assert rotated.returncode == 0, rotated.stderr
    assert rotated.stdout.strip() == "re-wrapped 1 tenant root keys under master key v2; retired v1"
    assert (tmp_path / "master.key").read_text().startswith("v2:")

    worker.evict_tenant("acme")  # the running worker only knew v1; it reloads the key file
    assert worker.open(sealed, "buffer.messages") == b"hello"

    report = run(tmp_path, "keys", "report").stdout.splitlines()
    assert report[0].split() == [
        "TENANT",
        "STATE",
        "GEN",
        "TTL",
        "CONVERSATION",
        "KEYS",
        "CONTACT",
        "KEYS",
        "RETIRED",
        "DESTROYED",
    ]
    assert report[1].split() == ["acme", "active", "1", "24h", "1", "0", "0", "0"]


def test_rotation_refuses_an_environment_key_and_a_missing_configured_key_file_is_an_error(tmp_path: Path) -> None:
    env_key = run(tmp_path, "keys", "rotate-master", SHREDLINE_MASTER_KEY="v1:" + "A" * 43 + "=")
    assert env_key.returncode == 1 and "needs a key file" in env_key.stderr
    missing = run(tmp_path, "keys", "report", SHREDLINE_MASTER_KEY_FILE=str(tmp_path / "nope.key"))
    assert missing.returncode == 2
    assert (
        missing.stderr.strip() == f"shredline: error: master_key: no key file at {tmp_path / 'nope.key'} "
        "and SHREDLINE_MASTER_KEY is not set"
    )
