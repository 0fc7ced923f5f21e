"""Test harness: one real broker per session, started by the project's own launcher, enforcing
ACLs like any other: every child process runs as the role its command needs.

`Broker.connection` is the `admin` role (a super user: tests set up topics and read anything);
`Broker.env` and `Broker.client_env` give children the credentials directory, so each picks its
own role's certificate, and grant the ACL table for their topic prefix on first use. Unit tests
never touch the broker (the fixture is lazy). Set SHREDLINE_BOOTSTRAP (and SHREDLINE_TLS_CA with
SHREDLINE_TLS_CREDENTIALS, or one SHREDLINE_TLS_CERT/_KEY for everything) to run the integration
tests against an existing broker instead.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, Message, TopicPartition
from hypothesis import settings

from shredline.keystore.dburl import DatabaseUrl
from shredline.streams.acl import AccessRole, default_principals
from shredline.streams.catalog import topic_name
from shredline.streams.errors import LauncherError
from shredline.streams.kafka.acls import apply_acls
from shredline.streams.kafka.admin import consumer_lag, record_counts
from shredline.streams.kafka.connection import Connection, client_environment, resolve_connection
from shredline.streams.kafka.offsets import watermarks
from shredline.streams.kafka.produce import close_producers
from shredline.streams.kafka.trim import INGEST
from shredline.streams.launcher.broker import Launcher
from shredline.streams.launcher.postgres import PostgresServer, running_postgres, server_bindir
from shredline.streams.operations.audit import close_reader
from shredline.streams.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[1]

# Property tests check what holds, never how fast: Hypothesis's default 200 ms per-example deadline
# fails a run as Flaky whenever a loaded CI host stalls one example.
settings.register_profile("shredline", deadline=None)
settings.load_profile("shredline")


_granted: set[tuple[str, str]] = set()  # (bootstrap, prefix) whose ACLs this session applied


@dataclass(frozen=True)
class Broker:
    connection: Connection  # as admin
    settings: Settings  # settings that reach this broker (data dir of the launcher, or the bootstrap)

    def role(self, role: AccessRole) -> Connection:
        """This broker as `role` (the admin connection itself when there is one certificate for all)."""
        return self.connection.for_role(role)

    def grant(self, prefix: str) -> None:
        """Apply the ACL table for `prefix` (once per session and prefix), so the roles can work there."""
        if self.connection.credentials is None or (self.connection.bootstrap, prefix) in _granted:
            return
        apply_acls(self.connection, prefix, default_principals())
        _granted.add((self.connection.bootstrap, prefix))

    def env(self, prefix: str = "") -> dict[str, str]:
        """Environment for running the `shredline` CLI against this broker (ACLs granted for `prefix`)."""
        self.grant(prefix)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHREDLINE_")}
        env["SHREDLINE_DATA_DIR"] = str(self.settings.data_dir)
        env["SHREDLINE_CACHE_DIR"] = str(self.settings.jar_cache)
        if self.settings.bootstrap:
            env.update({"SHREDLINE_BOOTSTRAP": self.settings.bootstrap})
            for name in ("tls_ca", "tls_cert", "tls_key", "tls_credentials"):
                value = getattr(self.settings, name)
                if value is not None:
                    env[f"SHREDLINE_{name.upper()}"] = str(value)
        if prefix:
            env["SHREDLINE_TOPIC_PREFIX"] = prefix
        return env

    def client_env(self, prefix: str, data_dir: Path) -> dict[str, str]:
        """Environment for a process with a data dir of its own (keys, worker state) on this broker,
        running as the role of its command (ACLs granted for `prefix`)."""
        self.grant(prefix)
        return client_environment(self.connection, data_dir, prefix, os.environ)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    if os.environ.get("SHREDLINE_BOOTSTRAP"):
        settings = load_settings(os.environ)
        yield Broker(resolve_connection(settings, AccessRole.ADMIN), settings)
        return
    cache = Path(os.environ.get("SHREDLINE_CACHE_DIR", REPO / ".shredline" / "cache"))
    settings = Settings(data_dir=tmp_path_factory.mktemp("shredline"), cache_dir=cache)
    launcher = Launcher(settings, progress=print)
    state, _ = launcher.up(port=0, controller_port=0)
    try:
        yield Broker(state.connection(), settings)
    finally:
        close_reader()  # cached clients would log connection errors once the broker is gone
        close_producers()
        launcher.down()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the session (Debian's packages, `streams/launcher/postgres.py`).
    Skipped when the server binaries are missing, except under CI=true, where that fails."""
    try:
        server_bindir()
    except LauncherError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and {exc}")
        pytest.skip(str(exc))
    with running_postgres(durable=False, tls=True) as server:
        yield server


@pytest.fixture
def pg_url(postgres: PostgresServer) -> DatabaseUrl:
    """A fresh, empty schema on the session's server (its URL sets the search path): one key store
    per test, cheaper than a database each."""
    import psycopg

    name = f"t{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres.url().reveal(), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")  # a generated name: letters and digits only
    return postgres.url(options=f"-csearch_path={name}")


@pytest.fixture
def topic_prefix() -> str:
    """A prefix of its own for each test, so tests never see each other's records."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def group_id(topic_prefix: str) -> str:
    return f"{topic_prefix}-group"


def drain(conn: Connection, topics: list[str], expected: int, group: str, timeout_s: float = 60.0) -> list[Message]:
    """Read `expected` records from the start of `topics` (fails the test if they do not come)."""
    consumer = Consumer(
        conn.confluent(
            **{
                "group.id": group,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "log_level": 3,
            }
        )
    )
    consumer.subscribe(topics)
    out: list[Message] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(500, timeout=1.0):
                assert msg.error() is None, msg.error()
                out.append(msg)
    finally:
        consumer.close()
    assert len(out) == expected, f"read {len(out)} of {expected} records"
    return out


def read_topic(conn: Connection, topic: str, group: str, timeout_s: float = 60.0) -> list[Message]:
    """Every record in `topic` as of now: each partition read from its start to the end offset it
    had when called, so records that others append meanwhile neither count nor get in the way."""
    consumer = Consumer(conn.confluent(**{"group.id": group, "enable.auto.commit": False, "log_level": 3}))
    try:
        ends: dict[int, int] = {}
        starts = []
        for partition in consumer.list_topics(topic, timeout=30).topics[topic].partitions:
            low, high = watermarks(consumer, topic, partition)
            if high > low:
                ends[partition] = high
                starts.append(TopicPartition(topic, partition, low))
        consumer.assign(starts)
        out: list[Message] = []
        deadline = time.monotonic() + timeout_s
        while ends:
            assert time.monotonic() < deadline, f"{topic}: partitions {sorted(ends)} not read to their end"
            for msg in consumer.consume(500, timeout=1.0):
                assert msg.error() is None, msg.error()
                partition, offset = msg.partition() or 0, msg.offset() or 0
                if partition in ends and offset < ends[partition]:
                    out.append(msg)
                    if offset + 1 >= ends[partition]:
                        del ends[partition]
        return out
    finally:
        consumer.close()


def record_count(conn: Connection, topic: str) -> int:
    """Records currently in `topic`."""
    return record_counts(conn, topic)[0]


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def caught_up(conn: Connection, group: str, topics: list[str]) -> bool:
    """Has `group` committed the end offset of every partition of `topics` (lag zero)? A group that
    is rebalancing cannot say: not yet."""
    try:
        return consumer_lag(conn, group, topics) == 0
    except (KafkaException, TimeoutError):
        return False


def wait_worker_caught_up(conn: Connection, prefix: str, timeout_s: float, what: str) -> None:
    """Wait until the worker's group has committed the end of every ingest partition. Record counts
    are no use here: re-delivered outputs inflate them."""
    group = topic_name(prefix, "shredline-worker")
    topics = [topic_name(prefix, t) for t in INGEST]
    wait_for(lambda: caught_up(conn, group, topics), timeout_s, what)
