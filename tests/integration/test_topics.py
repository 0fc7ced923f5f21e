"""`topics apply` against a real broker: creates, is idempotent, and puts drift right."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

from shredline.processors.roles import Role
from shredline.streams.catalog import CATALOG, topic_name
from shredline.streams.kafka.admin import apply_catalog, describe
from tests.conftest import Broker

pytestmark = pytest.mark.kafka


def _observed(broker: Broker, prefix: str) -> dict[str, tuple[int, dict[str, str]]]:
    admin = AdminClient(broker.connection.confluent())
    seen = describe(admin, [topic_name(prefix, s.role) for s in CATALOG])
    return {name: (t.partitions, dict(t.configs)) for name, t in seen.items()}


def test_apply_creates_every_topic_with_catalog_configs(broker: Broker, topic_prefix: str) -> None:
    changes = apply_catalog(broker.connection, topic_prefix, 1)
    assert sorted(c.topic for c in changes if c.kind == "create") == sorted(
        topic_name(topic_prefix, s.role) for s in CATALOG
    )
    observed = _observed(broker, topic_prefix)
    for spec in CATALOG:
        partitions, configs = observed[topic_name(topic_prefix, spec.role)]
        assert partitions == spec.partitions, spec.role
        for key, want in spec.configs.items():
            assert configs[key] == want, f"{spec.role} {key}"

    assert apply_catalog(broker.connection, topic_prefix, 1) == []


def test_drift_behind_its_back_is_put_right(broker: Broker, topic_prefix: str) -> None:
    apply_catalog(broker.connection, topic_prefix, 1)
    name = topic_name(topic_prefix, Role.BUFFER_MESSAGES)
    admin = AdminClient(broker.connection.confluent())
    drift = ConfigResource(
        ConfigResource.Type.TOPIC,
        name,
        incremental_configs=[
            ConfigEntry("retention.ms", "123456", incremental_operation=AlterConfigOpType.SET),
            ConfigEntry("message.timestamp.type", "CreateTime", incremental_operation=AlterConfigOpType.SET),
        ],
    )
    for fut in admin.incremental_alter_configs([drift]).values():
        fut.result(timeout=30)
    deadline = time.monotonic() + 30  # the broker learns of config changes asynchronously
    while _observed(broker, topic_prefix)[name][1]["retention.ms"] != "123456":
        assert time.monotonic() < deadline, "the drift never showed"
        time.sleep(0.2)

    fixed = apply_catalog(broker.connection, topic_prefix, 1)
    assert sorted((c.topic, c.kind, c.key) for c in fixed) == [
        (name, "config", "message.timestamp.type"),
        (name, "config", "retention.ms"),
    ]
    spec = next(s for s in CATALOG if s.role == Role.BUFFER_MESSAGES)
    configs = _observed(broker, topic_prefix)[name][1]
    assert configs["retention.ms"] == spec.configs["retention.ms"]
    assert configs["message.timestamp.type"] == "LogAppendTime"


def test_cli_prints_a_table_then_nothing_to_change(broker: Broker, topic_prefix: str) -> None:
    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "shredline.streams.cli", "topics", "apply"],
            env=broker.env(topic_prefix),
            capture_output=True,
            text=True,
            timeout=120,
        )

    first = run()
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[0].split() == ["TOPIC", "ACTION", "DETAIL"]
    assert f"{topic_prefix}.audit.events" in first.stdout
    second = run()
    assert second.returncode == 0 and second.stdout.strip() == "topics: nothing to change"
