"""What the PostgreSQL store adds to the contract: its messages and logs never show a secret of its
URL (the URL itself: `test_dburl.py`), its waits are bounded and name the blocker, and an outbox
record committed late is never dropped unrelayed. Against the session's real server
(`tests/conftest.py`)."""

from __future__ import annotations

import logging
import os
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from shredline.keystore.dburl import DatabaseUrl
from shredline.keystore.errors import KeyStoreUnavailable
from shredline.keystore.postgres_store import PostgresKeyStore
from shredline.keystore.store import ACTIVE, AuditHead, TenantRow
from shredline.streams.launcher.broker import pick_port
from shredline.streams.launcher.certs import ensure_tls
from shredline.streams.launcher.postgres import PostgresServer

PASSWORD = "s3cr3t-Pa55"


def test_an_unreachable_server_fails_in_one_line_without_the_password(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    url = DatabaseUrl(f"postgresql://app:{PASSWORD}@127.0.0.1:{pick_port(0, set())}/keys?connect_timeout=1")
    started = time.monotonic()
    with pytest.raises(KeyStoreUnavailable) as caught:
        PostgresKeyStore(url, busy_timeout_s=1.0)
    assert time.monotonic() - started < 15
    message = str(caught.value)
    assert "\n" not in message and "127.0.0.1" in message and "app:***@" in message
    assert PASSWORD not in message and PASSWORD not in caplog.text


def test_a_refusal_by_the_server_names_no_secret_and_an_unverified_remote_host_is_warned_about(
    postgres: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wr0ng:Pa%40ss%2Fw%C3%B6rd"  # ':', '@', '/' and a non-ASCII letter, encoded
    url = DatabaseUrl(f"postgresql://shredline:{wrong}@127.0.0.1:{postgres.port}/postgres?sslpassword=S3cr3t-Key")
    with pytest.raises(KeyStoreUnavailable, match="password authentication failed") as caught:
        PostgresKeyStore(url, busy_timeout_s=1.0)
    for secret in (wrong, "wr0ng:Pa@ss/wörd", "S3cr3t-Key"):
        assert secret not in str(caught.value) and secret not in caplog.text and secret not in repr(url)
    assert "\n" not in str(caught.value) and "shredline:***@127.0.0.1" in str(caught.value)
    assert not [r for r in caplog.records if r.name == "shredline.keystore"]  # loopback: nothing to warn about
    remote = DatabaseUrl(f"postgresql://app:{PASSWORD}@192.0.2.1:5432/keys?connect_timeout=1&sslmode=require")
    with pytest.raises(KeyStoreUnavailable):
        PostgresKeyStore(remote, busy_timeout_s=1.0)
    warnings = [r.getMessage() for r in caplog.records if r.name == "shredline.keystore"]
    assert len(warnings) == 1 and "sslmode=verify-full" in warnings[0] and PASSWORD not in caplog.text


def test_a_row_lock_held_elsewhere_fails_in_bounded_time_naming_the_holder(pg_url: DatabaseUrl) -> None:
    store = PostgresKeyStore(pg_url, busy_timeout_s=0.5, actor="worker")
    store.create_tenant(TenantRow("acme", ACTIVE, 1, 1, os.urandom(12), os.urandom(48), 60, 0.0), reprovision=False)
    with psycopg.connect(pg_url.reveal(), application_name="a backup tool") as holder:
        holder.execute("SELECT 1 FROM tenants WHERE tenant = 'acme' FOR UPDATE")
        started = time.monotonic()
        with pytest.raises(KeyStoreUnavailable) as caught:
            store.destroy_tenant("acme", "ended", 1.0)
        assert time.monotonic() - started < 5
        assert "key store locked" in str(caught.value) and "a backup tool" in str(caught.value)
    assert store.destroy_tenant("acme", "ended", 1.0).generation == 1  # once it lets go
    store.close()


def test_an_outbox_record_committed_after_a_later_one_is_not_dropped_unrelayed(pg_url: DatabaseUrl) -> None:
    """Outbox ids come from a sequence: a transaction can take id 1, another id 2 and commit first.
    A relay that read only id 2 and dropped "up to 2" would lose id 1 for ever."""
    store = PostgresKeyStore(pg_url, busy_timeout_s=5.0)
    slow = PostgresKeyStore(pg_url, busy_timeout_s=5.0)
    with slow._write() as db:  # takes its id first, commits last
        slow._audit(db, "slow", None)
        store.record("fast")
        with pytest.raises(KeyStoreUnavailable):  # a relay waits for it (bounded), rather than skip it
            PostgresKeyStore(pg_url, busy_timeout_s=0.3).pending_audit(10)
    pending = store.pending_audit(10)
    assert [e.action for e in pending] == ["slow", "fast"]
    store.drop_audit(pending[-1].id, AuditHead(1, bytes(32)))
    assert store.pending_audit(10) == []
    store.close()
    slow.close()


def test_a_role_that_may_not_create_the_tables_fails_in_one_line(postgres: PostgresServer) -> None:
    role, password = f"weak{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    with psycopg.connect(postgres.url().reveal(), autocommit=True) as db:
        db.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")  # generated: letters and digits only
    url = DatabaseUrl(f"postgresql://{role}:{password}@127.0.0.1:{postgres.port}/postgres")
    with pytest.raises(KeyStoreUnavailable, match="permission denied for schema public") as caught:
        PostgresKeyStore(url, busy_timeout_s=2.0)
    assert "\n" not in str(caught.value) and password not in str(caught.value) and f"{role}:***@" in str(caught.value)


def test_tls_with_verify_full_reaches_the_server_and_a_foreign_ca_is_refused(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    assert postgres.ca is not None
    base = f"postgresql://shredline:{postgres.password}@127.0.0.1:{postgres.port}/postgres?sslmode=verify-full"
    store = PostgresKeyStore(DatabaseUrl(f"{base}&sslrootcert={postgres.ca}"), busy_timeout_s=2.0)
    with store._connection() as conn:
        assert conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone() == (True,)
    store.close()
    foreign = ensure_tls(tmp_path / "other").ca  # another CA: the server's certificate does not chain to it
    with pytest.raises(KeyStoreUnavailable, match="SSL error") as caught:
        PostgresKeyStore(DatabaseUrl(f"{base}&sslrootcert={foreign}&connect_timeout=2"), busy_timeout_s=1.0)
    assert "\n" not in str(caught.value) and postgres.password not in str(caught.value)
