"""Forensics helpers shared by the key-store tests: the raw bytes of a store's files, the secrets of
a tenant as stored, and another process holding a read transaction on the store."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from shredline.keystore.aead import TenantKeys
from shredline.keystore.keys import Keys


def raw_bytes(directory: Path) -> bytes:
    """Every byte of every file of the key store, as the disk has them."""
    return b"".join(p.read_bytes() for p in sorted(directory.glob("keys.sqlite*")))


def secrets_of(keys: Keys, tenant: str) -> list[bytes]:
    """Wrapped and raw root, then every wrapped and raw data key of `tenant`, read from the file."""
    row = keys.store.tenant(tenant)
    assert row is not None and row.root_wrapped is not None
    root = Keys._unwrap_root(keys.master, row)
    tenant_keys = TenantKeys(tenant, row.generation, root)
    found = [row.root_wrapped, root]
    db = sqlite3.connect(keys.store.path)  # type: ignore[attr-defined]
    for scope, subject, key_id, nonce, wrapped in db.execute(
        "SELECT scope, subject, key_id, nonce, wrapped FROM data_keys WHERE tenant = ?", (tenant,)
    ):
        found += [wrapped, tenant_keys.unwrap(nonce, wrapped, scope=scope, subject=subject, key_id=key_id)]
    db.close()
    return found


class Reader:
    """Another process with a read transaction open on the store, as a backup tool would hold."""

    def __init__(self, path: Path) -> None:
        code = (
            "import sqlite3, sys; db = sqlite3.connect(sys.argv[1], isolation_level=None); db.execute('BEGIN'); "
            "db.execute('SELECT * FROM tenants').fetchall(); print('reading', flush=True); sys.stdin.read()"
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "reading"

    def end(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            assert self.proc.wait(timeout=30) == 0
