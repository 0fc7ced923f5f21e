"""Several hosts on one PostgreSQL key store and one broker: worker processes with data dirs of
their own seal one tenant's conversations with one key each; a termination killed after its keys
step on one host is finished by a re-run on another; the audit chain that every host relayed onto
verifies; and with a master key that cannot be rotated from here, no certificate is issued.
Real processes, a real broker, a real PostgreSQL server (`tests/conftest.py`)."""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from shredline.keystore.dburl import DatabaseUrl
from shredline.keystore.master import format_keyring, write_private
from shredline.processors.roles import Role
from shredline.streams.catalog import topic_name
from shredline.streams.kafka.admin import apply_catalog
from shredline.streams.key_store import open_keys
from shredline.streams.launcher.postgres import PostgresServer
from shredline.streams.operations.termination import FAULT_EXIT
from shredline.streams.settings import load_settings
from tests.conftest import Broker, record_count, wait_for
from tests.integration.test_termination import Pipeline
from tests.integration.test_worker import Worker, cli, publish

pytestmark = pytest.mark.kafka


@dataclass
class Hosts:
    broker: Broker
    prefix: str
    root: Path
    url: DatabaseUrl
    master_key: Path  # the keyring every host shares (a mounted secret, say)

    def env(self, host: str, **extra: str) -> dict[str, str]:
        """A host: a data dir of its own, the shared store and keyring, the broker's credentials."""
        data_dir = self.root / host
        env = self.broker.client_env(self.prefix, data_dir)
        return {
            **env,
            "SHREDLINE_KEY_STORE": self.url.reveal(),
            "SHREDLINE_MASTER_KEY_FILE": str(self.master_key),
            **extra,
        }

    def cli(self, host: str, *args: str, **extra: str) -> Any:
        return cli(self.env(host, **extra), *args)


@pytest.fixture(scope="module")
def hosts(broker: Broker, postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hosts]:
    prefix = f"hosts{uuid.uuid4().hex[:8]}"
    schema = f"h{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres.url().reveal(), autocommit=True) as db:
        db.execute(f"CREATE SCHEMA {schema}")
    root = tmp_path_factory.mktemp("hosts")
    (root / "secrets").mkdir(mode=0o700)
    master_key = root / "secrets" / "master.key"
    write_private(master_key, format_keyring({1: secrets.token_bytes(32)}).encode())
    apply_catalog(broker.connection, prefix, 1)
    yield Hosts(broker, prefix, root, postgres.url(options=f"-csearch_path={schema}"), master_key)


def test_workers_on_two_hosts_share_keys_and_a_termination_crashed_on_one_host_is_finished_on_another(
    hosts: Hosts,
) -> None:
    workers = [Worker(hosts.env(f"worker-{i}"), hosts.root / f"worker-{i}.log") for i in (1, 2)]
    try:
        provisioned = hosts.cli("ops-1", "tenant", "provision", "acme")
        assert provisioned.returncode == 0, provisioned.stderr
        events = Pipeline(hosts.broker, hosts.prefix, hosts.root, {}).events_for("acme", 60, "acme")
        buffer = topic_name(hosts.prefix, Role.BUFFER_MESSAGES)
        publish(hosts.broker, hosts.prefix, events)
        wait_for(lambda: record_count(hosts.broker.connection, buffer) >= 60, 180, "60 messages sealed")
        keys = open_keys(load_settings(hosts.env("ops-2")))
        acme = next(c for c in keys.report() if c.tenant == "acme")
        assert acme.conversation_keys == 3  # one key per conversation, whichever worker sealed it

        crashed = hosts.cli(
            "ops-1", "tenant", "terminate", "acme", "--reason", "ended", "--yes", SHREDLINE_FAULT_AFTER="keys"
        )
        assert crashed.returncode == FAULT_EXIT, crashed.stderr
        rerun = hosts.cli("ops-2", "tenant", "terminate", "acme", "--reason", "ended", "--yes")
        assert rerun.returncode == 0, rerun.stderr
        assert "resuming the termination of acme" in rerun.stderr and "keys:" not in rerun.stderr
        certificate = hosts.root / "ops-2" / "certificates" / "acme.g1.json"
        assert hosts.cli("ops-2", "certificate", "verify", str(certificate)).returncode == 0
        body = json.loads(certificate.read_text())["certificate"]
        assert body["keys_destroyed"]["conversation"] == 3
        assert body["verification"]["key_store_files_scanned"] is False
        assert body["verification"]["master_key_rotated"] is True

        verified = hosts.cli("ops-2", "audit", "verify")  # every host relayed onto one chain
        assert verified.returncode == 0, verified.stdout + verified.stderr
    finally:
        codes = [w.stop() for w in workers]
    assert codes == [0, 0]


def test_without_a_rotatable_master_key_a_server_store_gives_no_certificate_until_it_is_rotated(
    hosts: Hosts,
) -> None:
    """The server's WAL keeps the wrapped root; only destroying the master version that wrapped it
    makes that copy useless. From SHREDLINE_MASTER_KEY Shredline cannot rotate it: no certificate."""
    assert hosts.cli("ops-1", "tenant", "provision", "beta").returncode == 0
    keyring = hosts.master_key.read_text()
    env_only = {"SHREDLINE_MASTER_KEY": keyring, "SHREDLINE_MASTER_KEY_FILE": str(hosts.root / "none")}
    refused = hosts.cli("ops-1", "tenant", "terminate", "beta", "--reason", "ended", "--yes", **env_only)
    assert refused.returncode == 1
    error = refused.stderr.strip().splitlines()[-1]
    assert "the key store is a server whose files this host cannot scan" in error, refused.stderr
    assert "no certificate until they are destroyed" in error and keyring.split(":")[1][:12] not in refused.stderr
    assert not (hosts.root / "ops-1" / "certificates" / "beta.g1.json").exists()

    rotated = hosts.cli("ops-1", "keys", "rotate-master")
    assert rotated.returncode == 0, rotated.stderr
    finished = hosts.cli("ops-1", "tenant", "terminate", "beta", "--reason", "ended", "--yes")
    assert finished.returncode == 0, finished.stderr
    assert (hosts.root / "ops-1" / "certificates" / "beta.g1.json").exists()
