"""Faults with real processes: the key store locked under a running worker, and the broker stopped
and restarted mid-stream. (SIGKILL of the worker and of the sink: test_worker.py, test_sink.py.)"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shredline.processors.roles import Role
from shredline.schemas.codec import decode
from shredline.streams.catalog import topic_name
from shredline.streams.kafka.admin import apply_catalog
from shredline.streams.kafka.connection import Connection
from shredline.streams.launcher.broker import Launcher
from shredline.streams.processing.app import STALL_S
from shredline.streams.settings import Settings
from tests.conftest import Broker, read_topic, record_count, wait_for, wait_worker_caught_up
from tests.integration.test_worker import (
    CANARIES,
    Worker,
    background,
    expected_metrics,
    provision,
    publish,
)

pytestmark = pytest.mark.kafka
# Longer than the worker's watchdog window: a batch waiting for the store is not a stalled worker
# (it keeps its partitions and its process), and longer than the 10 s busy timeout, so it is unavailable.
LOCK_HELD_S = STALL_S + 10


def exact(conn: Connection, prefix: str, events: list[dict[str, object]], group: str) -> None:
    """Every event counted exactly once (by de-dup token) and every message sealed."""
    metrics, buffer = topic_name(prefix, Role.METRICS_USAGE), topic_name(prefix, Role.BUFFER_MESSAGES)
    facts = [decode(m.value() or b"")[1] for m in read_topic(conn, metrics, group + "m")]
    tokens = {f["dedup"] for f in facts}
    assert None not in tokens and len(tokens) == expected_metrics(events)
    sealed = read_topic(conn, buffer, group + "b")
    refs = {decode(m.value() or b"")[1]["event_ref"] for m in sealed if m.value()}
    assert len(refs) == sum(e["type"] == "message" for e in events)


@pytest.mark.timeout(900)
def test_a_locked_key_store_makes_the_worker_wait_then_resume_with_nothing_lost(
    broker: Broker, topic_prefix: str, group_id: str, tmp_path: Path
) -> None:
    env = broker.client_env(topic_prefix, tmp_path)
    conn = broker.connection
    apply_catalog(conn, topic_prefix, 1)
    events = background(2, 600, seed=41)
    provision(env, {str(e["tenant"]) for e in events})
    worker = Worker(env, tmp_path / "worker.log")
    metrics = topic_name(topic_prefix, Role.METRICS_USAGE)
    try:
        publish(broker, topic_prefix, events[:200])
        wait_for(lambda: record_count(conn, metrics) >= expected_metrics(events[:200]), 180, "the first part")
        # Another process takes the key store's write lock and holds it.
        holder = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sqlite3, sys, time; db = sqlite3.connect(sys.argv[1], isolation_level=None); "
                "db.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); time.sleep(float(sys.argv[2]))",
                str(tmp_path / "keys.sqlite"),
                str(LOCK_HELD_S),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        locked_at = time.monotonic()
        publish(broker, topic_prefix, events[200:])
        wait_for(lambda: b"key store unavailable" in (tmp_path / "worker.log").read_bytes(), 60, "the worker to wait")
        during = record_count(conn, metrics)
        assert holder.wait(timeout=LOCK_HELD_S + 30) == 0
        assert time.monotonic() - locked_at >= LOCK_HELD_S - 1
        wait_worker_caught_up(conn, topic_prefix, 240, "the worker to resume and catch up")
        assert worker.proc.poll() is None  # it waited; it did not die
        log = worker.log.read_bytes()
        assert b"stalled" not in log and b"restarting" not in log
        # said when it starts, every 10 s while it lasts (not at every retry) and when it ends
        assert log.count(b"key store unavailable") <= LOCK_HELD_S / 10 + 3
        assert b"key store available again" in log
    finally:
        assert worker.stop() == 0
    assert during < expected_metrics(events)  # it really was held up
    assert record_count(conn, topic_name(topic_prefix, Role.DEADLETTER_INGEST)) == 0  # nothing valid dead-lettered
    exact(conn, topic_prefix, events, group_id)
    log = (tmp_path / "worker.log").read_bytes()
    assert not any(c.encode() in log for c in CANARIES)


@pytest.fixture
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    """A broker of this test's own, since the test stops it."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("own-broker"), cache_dir=Path(".shredline/cache").resolve())
    launcher = Launcher(settings, progress=print)
    launcher.up(port=0, controller_port=0)
    try:
        yield launcher
    finally:
        launcher.down()


@pytest.mark.timeout(900)
def test_the_pipeline_recovers_from_a_broker_restart_without_manual_action(
    own_broker: Launcher, topic_prefix: str, group_id: str, tmp_path: Path
) -> None:
    state = own_broker.running()
    assert state is not None
    conn = state.connection()
    apply_catalog(conn, topic_prefix, 1)
    env = Broker(conn, own_broker.settings).client_env(topic_prefix, tmp_path)
    events = background(2, 1200, seed=42)
    provision(env, {str(e["tenant"]) for e in events})
    publish(Broker(conn, own_broker.settings), topic_prefix, events[:600])
    worker = Worker(env, tmp_path / "worker.log")
    metrics = topic_name(topic_prefix, Role.METRICS_USAGE)
    try:
        wait_for(lambda: record_count(conn, metrics) >= 200, 180, "some progress")
        # The split runs from the start; the Faust app (timers) must be up too before the outage.
        wait_for(lambda: b"[^Worker]: Ready" in worker.log.read_bytes(), 180, "the worker's Faust app")
        seen = worker.log.stat().st_size
        own_broker.down()
        gone = b"Unable connect to node"  # aiokafka's line when the worker's reconnect fails
        wait_for(lambda: gone in worker.log.read_bytes()[seen:], 60, "the worker to see the broker gone")
        own_broker.up(port=state.port, controller_port=state.controller_port)
        publish(Broker(conn, own_broker.settings), topic_prefix, events[600:])
        wait_worker_caught_up(conn, topic_prefix, 600, "the worker to catch up after the restart")
        assert worker.proc.poll() is None, "the worker (its supervisor) died with the broker"
        # one line per 10 s, not ~12,000 per second (streams/processing/repeats.py)
        assert worker.log.read_bytes()[seen:].count(gone) <= 20
        # librdkafka's clients (split, control, outputs) log through Python too, as rarely
        assert worker.log.read_bytes()[seen:].count(b"Connection refused") <= 20
        assert b"%3|" not in worker.log.read_bytes()[seen:]  # nothing written by librdkafka itself
        assert b"Logging error" not in worker.log.read_bytes()
    finally:
        assert worker.stop() == 0
    exact(conn, topic_prefix, events, group_id)
