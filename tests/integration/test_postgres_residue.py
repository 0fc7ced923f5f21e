"""What a destroyed key leaves in a real PostgreSQL server's files, read byte by byte.

PostgreSQL never sees a raw key (Shredline unwraps in its own process), but it keeps the wrapped
ones it held: in dead row versions in its heap pages until vacuum, and in its WAL until the
segment is overwritten (in archives, replicas and base backups for as long as they live). So on
this backend a destruction means: the rows are gone, vacuum drops the dead versions from the
heap, and the master key version that wrapped the root is destroyed, so what the WAL still holds
opens nothing (docs/key-residue.md). This test checks each part against the server's data dir,
with a positive control: before the destruction the same scan finds the wrapped keys."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from shredline.keystore.aead import TenantKeys
from shredline.keystore.errors import MasterKeyError
from shredline.keystore.keys import Keys
from shredline.keystore.master import load_keyring, rotate
from shredline.keystore.postgres_store import PostgresKeyStore
from shredline.keystore.store import CONVERSATION
from shredline.streams.launcher.postgres import PostgresServer, running_postgres


@pytest.fixture
def server(postgres: PostgresServer, tmp_path: Path) -> PostgresServer:
    """A server of its own (a small data dir to scan, no other test's rows), durable like production."""
    with running_postgres(durable=True) as fresh:
        yield fresh  # type: ignore[misc]


def found_in(data_dir: Path, secrets: dict[str, bytes]) -> dict[str, set[str]]:
    """{secret name: top-level folders of the data dir (base, pg_wal, global) whose files hold it}."""
    found: dict[str, set[str]] = {}
    for folder in ("base", "global", "pg_wal"):
        for path in (data_dir / folder).rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                for name, secret in secrets.items():
                    if secret in data:
                        found.setdefault(name, set()).add(folder)
    return found


def test_destroyed_keys_leave_only_wal_copies_wrapped_under_a_destroyed_master_version(
    server: PostgresServer, tmp_path: Path
) -> None:
    url = server.url()
    keys = Keys(PostgresKeyStore(url), load_keyring(None, tmp_path / "master.key", create=True))
    keys.provision("acme")
    keys.provision("kept")
    for i in range(3):
        keys.seal("acme", CONVERSATION, f"conv-{i}", "buffer.messages", b"personal data")
    row = keys.store.tenant("acme")
    assert row is not None and row.root_wrapped is not None
    root = Keys._unwrap_root(keys.master, row)
    secrets = {"root wrapped": row.root_wrapped, "root raw": root}
    tenant_keys = TenantKeys("acme", row.generation, root)
    with psycopg.connect(url.reveal(), autocommit=True) as db:
        for i, (scope, subject, key_id, nonce, wrapped) in enumerate(
            db.execute("SELECT scope, subject, key_id, nonce, wrapped FROM data_keys WHERE tenant = 'acme'")
        ):
            secrets[f"data key {i} wrapped"] = wrapped
            secrets[f"data key {i} raw"] = tenant_keys.unwrap(
                nonce, wrapped, scope=scope, subject=subject, key_id=key_id
            )
        db.execute("CHECKPOINT")  # so the heap files have what the server holds
    wrapped = {name for name in secrets if name.endswith("wrapped")}
    assert len(wrapped) == 4

    before = found_in(server.data_dir, secrets)
    assert set(before) == wrapped, before  # positive control: the scan sees every wrapped key...
    assert all("base" in before[name] for name in wrapped)  # ...in the heap, and no raw key anywhere

    keys.destroy_tenant("acme", "contract ended")  # what a termination's keys step does on this backend
    rotation = rotate(tmp_path / "master.key", keys)
    assert rotation.retired == [row.master_version]
    assert keys.store.checkpoint() is None  # vacuum and checkpoint: nothing in the way

    after = found_in(server.data_dir, secrets)
    assert all(folders == {"pg_wal"} for folders in after.values()), after  # the heap holds none of them
    assert set(after) <= wrapped  # the WAL keeps only wrapped copies...
    ring = load_keyring(None, tmp_path / "master.key", create=False)
    assert row.master_version not in ring.versions
    with pytest.raises(MasterKeyError, match="is not in the keyring"):
        Keys._unwrap_root(ring, row)  # ...and the version that wrapped the root is gone
    assert keys.tenant_keys("kept").generation == 1  # the other tenant re-wrapped and still opens
    keys.store.close()
