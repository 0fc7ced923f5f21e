"""The topic catalog: every topic Shredline uses, with its partitions and configs, in one place.

Pure data and a pure planner: `plan()` compares the catalog with what a broker reports and
returns the changes needed, so the Kafka adapter only describes and applies. Retention is
enforced per segment, so every short-lived topic also has a short `segment.ms`; every topic
uses `LogAppendTime` so retention counts from when the broker received a record, not from
a timestamp an upstream producer chose.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from shredline.processors.roles import Role

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS

#: Longest buffer TTL a tenant may choose; the buffer topics keep ciphertext this long at most.
MAX_BUFFER_TTL_MS = 7 * DAY_MS


#: Header of the payload-less records the worker appends to trimmed ingest partitions so idle
#: segments roll; consumers skip them.
MARKER_HEADER = "shredline-marker"


@dataclass(frozen=True)
class TopicSpec:
    role: Role
    partitions: int
    configs: Mapping[str, str]
    purpose: str
    #: Records are found by the partition their key hashes to (`buffer read`, compaction of a
    #: contact's upsert by its tombstone): the partition count must never change, growing included.
    located_by_key: bool = False


def _delete(retention_ms: int, segment_ms: int) -> dict[str, str]:
    return {
        "cleanup.policy": "delete",
        "retention.ms": str(retention_ms),
        "segment.ms": str(segment_ms),
        "message.timestamp.type": "LogAppendTime",
    }


CATALOG: tuple[TopicSpec, ...] = (
    # Events sealed to the tenant's ingest key (HPKE): trimmed by the worker once processed;
    # retention is only the backstop for a stopped worker (upstream replays by event_id after that).
    TopicSpec(Role.INGEST_MESSAGES, 6, _delete(HOUR_MS, MINUTE_MS), "sealed message events, until processed"),
    TopicSpec(Role.INGEST_CONTACTS, 6, _delete(HOUR_MS, MINUTE_MS), "sealed contact events, until processed"),
    TopicSpec(Role.INGEST_EXECUTIONS, 6, _delete(HOUR_MS, MINUTE_MS), "sealed execution events, until processed"),
    # Ciphertext only; the conversation key's TTL is what really ends a buffer's life.
    TopicSpec(
        Role.BUFFER_MESSAGES,
        6,
        _delete(MAX_BUFFER_TTL_MS, HOUR_MS),
        "sealed chat messages (AES-GCM)",
        located_by_key=True,
    ),
    TopicSpec(
        Role.BUFFER_CONTACTS,
        6,
        {
            "cleanup.policy": "compact",
            "segment.ms": str(HOUR_MS),
            "delete.retention.ms": str(HOUR_MS),
            "max.compaction.lag.ms": str(HOUR_MS),
            "min.cleanable.dirty.ratio": "0.1",
            "message.timestamp.type": "LogAppendTime",
        },
        "sealed contact records, latest per contact pseudonym",
        located_by_key=True,
    ),
    TopicSpec(Role.METRICS_USAGE, 6, _delete(7 * DAY_MS, HOUR_MS), "anonymised usage metrics"),
    TopicSpec(Role.LOGS_EXECUTIONS, 6, _delete(7 * DAY_MS, HOUR_MS), "redacted execution logs"),
    # One partition each: control and audit need one total order.
    TopicSpec(Role.CONTROL_TENANTS, 1, _delete(-1, DAY_MS), "tenant lifecycle and policy events"),
    TopicSpec(Role.AUDIT_EVENTS, 1, _delete(-1, DAY_MS), "hash-chained audit trail, no personal data"),
    TopicSpec(Role.DEADLETTER_INGEST, 3, _delete(7 * DAY_MS, HOUR_MS), "rejected input: ids and reason only"),
)


def topic_name(prefix: str, logical: str) -> str:
    """The broker-side name: environments sharing a cluster are separated by a prefix."""
    return f"{prefix}.{logical}" if prefix else logical


@dataclass(frozen=True)
class ObservedTopic:
    """What the broker reports for one topic: its partition count and current configs."""

    partitions: int
    configs: Mapping[str, str]


@dataclass(frozen=True)
class Change:
    """One action `topics apply` takes (or, for `kind == "warn"`, reports but cannot take)."""

    topic: str
    kind: str  # "create" | "config" | "partitions" | "warn"
    detail: str
    key: str = ""
    value: str = ""


def plan(prefix: str, observed: Mapping[str, ObservedTopic], catalog: tuple[TopicSpec, ...] = CATALOG) -> list[Change]:
    """The changes that bring the broker in line with the catalog; empty when nothing drifted."""
    changes: list[Change] = []
    for spec in catalog:
        name = topic_name(prefix, spec.role)
        seen = observed.get(name)
        if seen is None:
            changes.append(Change(name, "create", f"{spec.partitions} partitions"))
            continue
        for key, want in sorted(spec.configs.items()):
            have = seen.configs.get(key)
            if have != want:
                changes.append(Change(name, "config", f"{key}: {have} -> {want}", key, want))
        if seen.partitions != spec.partitions and spec.located_by_key:
            changes.append(
                Change(
                    name,
                    "warn",
                    f"has {seen.partitions} partitions, catalog says {spec.partitions}; its records are found by "
                    "their key's partition, so it is left as it is (recreate it empty to change)",
                )
            )
        elif seen.partitions < spec.partitions:
            changes.append(
                Change(name, "partitions", f"{seen.partitions} -> {spec.partitions}", value=str(spec.partitions))
            )
        elif seen.partitions > spec.partitions:
            changes.append(
                Change(
                    name,
                    "warn",
                    f"has {seen.partitions} partitions, catalog says {spec.partitions}; Kafka cannot shrink",
                )
            )
    return changes
