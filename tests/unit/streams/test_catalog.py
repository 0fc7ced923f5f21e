from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shredline.processors.roles import Role
from shredline.streams.catalog import CATALOG, DAY_MS, ObservedTopic, plan, topic_name

DESIGN_TOPICS = {
    "ingest.messages",
    "ingest.contacts",
    "ingest.executions",
    "buffer.messages",
    "buffer.contacts",
    "metrics.usage",
    "logs.executions",
    "control.tenants",
    "audit.events",
    "deadletter.ingest",
}


def _as_observed(prefix: str) -> dict[str, ObservedTopic]:
    return {topic_name(prefix, s.role): ObservedTopic(s.partitions, dict(s.configs)) for s in CATALOG}


def test_catalog_holds_every_topic_of_the_design_once() -> None:
    names = [s.role for s in CATALOG]
    assert sorted(names) == sorted(DESIGN_TOPICS)


def test_every_topic_counts_retention_from_broker_time() -> None:
    for spec in CATALOG:
        assert spec.configs["message.timestamp.type"] == "LogAppendTime", spec.role
        assert spec.configs["cleanup.policy"] in {"delete", "compact"}


def test_short_lived_topics_roll_segments_well_within_their_retention() -> None:
    for spec in CATALOG:
        retention = int(spec.configs.get("retention.ms", "-1"))
        if 0 < retention <= 7 * DAY_MS:
            assert int(spec.configs["segment.ms"]) <= retention // 6, spec.role


def test_plaintext_ingest_is_kept_an_hour_at_most() -> None:
    for spec in CATALOG:
        if spec.role.startswith("ingest."):
            assert int(spec.configs["retention.ms"]) <= 3_600_000


def test_ordered_topics_have_one_partition() -> None:
    assert {s.role: s.partitions for s in CATALOG if s.partitions == 1} == {"control.tenants": 1, "audit.events": 1}


def test_plan_creates_missing_topics_with_prefix() -> None:
    changes = plan("dev", {})
    assert {c.topic for c in changes} == {f"dev.{t}" for t in DESIGN_TOPICS}
    assert {c.kind for c in changes} == {"create"}


@given(st.sampled_from(["", "dev", "stage-2"]))
def test_plan_is_empty_when_broker_matches(prefix: str) -> None:
    assert plan(prefix, _as_observed(prefix)) == []


def test_plan_fixes_drift_and_grows_but_never_shrinks_partitions() -> None:
    observed = _as_observed("")
    observed["metrics.usage"] = ObservedTopic(3, {**observed["metrics.usage"].configs, "retention.ms": "1"})
    observed["audit.events"] = ObservedTopic(4, observed["audit.events"].configs)
    changes = {(c.topic, c.kind): c for c in plan("", observed)}
    assert set(changes) == {("metrics.usage", "config"), ("metrics.usage", "partitions"), ("audit.events", "warn")}
    assert changes[("metrics.usage", "config")].key == "retention.ms"
    assert changes[("metrics.usage", "config")].value == str(7 * DAY_MS)
    assert changes[("metrics.usage", "partitions")].value == "6"


@pytest.mark.parametrize("role", [Role.BUFFER_MESSAGES, Role.BUFFER_CONTACTS])
@pytest.mark.parametrize("have", [3, 12])
def test_plan_never_changes_the_partitions_of_a_topic_read_by_key(role: Role, have: int) -> None:
    # growing would move keys: `buffer read` would miss older messages, and a contact's tombstone
    # would land apart from the upsert it must compact away
    observed = _as_observed("")
    observed[role.value] = ObservedTopic(have, observed[role.value].configs)
    [change] = plan("", observed)
    assert (change.topic, change.kind) == (role.value, "warn") and "found by their key's partition" in change.detail


def test_plan_ignores_configs_the_catalog_does_not_own() -> None:
    observed = _as_observed("")
    observed["ingest.messages"] = ObservedTopic(6, {**observed["ingest.messages"].configs, "flush.ms": "5"})
    assert plan("", observed) == []
