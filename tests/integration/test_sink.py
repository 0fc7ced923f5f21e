"""The sink on a real broker: exactly once through SIGKILLs, and upstream replays not counted twice."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shredline.analytics.warehouse import Warehouse
from shredline.processors.roles import Role
from shredline.streams.catalog import topic_name
from shredline.streams.kafka.admin import apply_catalog
from shredline.streams.key_store import open_keys
from shredline.streams.operations.audit import read_trail
from shredline.streams.settings import Settings
from tests.conftest import Broker, record_count, wait_for, wait_worker_caught_up
from tests.integration.test_worker import Worker, background, expected_metrics, provision, publish

pytestmark = pytest.mark.kafka


def sink(env: dict[str, str], *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "shredline.streams.cli", "sink", *extra],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def facts_in(tmp_path: Path, sql: str = "SELECT count(*) FROM w.usage_facts") -> int:
    keys = open_keys(Settings(data_dir=tmp_path))
    w = Warehouse(tmp_path / "analytics.duckdb", keys.service_secret("duckdb"))
    try:
        row = w.db.execute(sql).fetchone()
        return int(row[0]) if row else -1
    finally:
        w.close()


def test_sink_is_exact_through_kills_and_replays(broker: Broker, topic_prefix: str, tmp_path: Path) -> None:
    env = broker.client_env(topic_prefix, tmp_path)
    apply_catalog(broker.connection, topic_prefix, 1)
    events = background(2, 1500, seed=31)
    provision(env, {str(e["tenant"]) for e in events})
    metrics = topic_name(topic_prefix, Role.METRICS_USAGE)
    worker = Worker(env, tmp_path / "worker.log")
    try:
        publish(broker, topic_prefix, events)
        wait_for(lambda: record_count(broker.connection, metrics) >= expected_metrics(events), 180, "metrics")
        publish(broker, topic_prefix, events[:500])  # upstream replays a third of it
        wait_worker_caught_up(broker.connection, topic_prefix, 180, "the worker to catch up with the replay")
    finally:
        assert worker.stop() == 0
    # The stop relayed the outbox: every key the worker created is on audit.events now, whenever
    # its 5-s relay last ran (this once failed when the stop came within 5 s of the last creations).
    keys = open_keys(Settings(data_dir=tmp_path))
    assert keys.store.pending_audit(1) == []
    created = [r for r in read_trail(broker.connection, topic_prefix) if r["action"] == "key.create"]
    assert len(created) == sum(
        c.conversation_keys + c.contact_keys + c.retired_keys + c.destroyed_keys for c in keys.report()
    )
    keys.store.close()

    rng = random.Random(7)
    progress = []
    for run in range(6):  # kill -9 at random moments once it is loading: between and in the middle of batches
        log = tmp_path / f"sink-{run}.log"
        with open(log, "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "shredline.streams.cli", "sink", "--batch-size", "10"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        wait_for(
            lambda log=log, proc=proc: b"loaded" in log.read_bytes() or proc.poll() is not None, 60, "the sink to load"
        )
        time.sleep(rng.uniform(0.0, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        progress.append(facts_in(tmp_path) if (tmp_path / "analytics.duckdb").exists() else 0)
    assert any(0 < p < expected_metrics(events) for p in progress), progress  # killed while loading
    assert progress == sorted(progress)  # never lost what was committed
    final = sink(env, "--until-idle", "3")
    _out, err = final.communicate(timeout=300)
    assert final.returncode == 0, err.decode()[-2000:]
    assert facts_in(tmp_path) == expected_metrics(events)
    tenants = {str(e["tenant"]) for e in events}
    assert facts_in(tmp_path, "SELECT count(*) FROM w.tenant_states WHERE state = 'active'") == len(tenants)
    trail = read_trail(broker.connection, topic_prefix)  # key creations, provisioning: all loaded once
    assert len(trail) > len(tenants) and facts_in(tmp_path, "SELECT count(*) FROM w.audit_trail") == len(trail)
    loaded = "SELECT count(DISTINCT seq) FROM w.audit_trail WHERE action = 'key.create'"
    assert facts_in(tmp_path, loaded) == len(created)
    print(
        f"\nfacts after each SIGKILL: {progress}; final {expected_metrics(events)} of "
        f"{record_count(broker.connection, metrics)} metric records"
    )
