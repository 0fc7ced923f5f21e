"""Anonymised usage facts: what the design allows a metric to carry, and nothing else.

A metric has the tenant, what happened, the channel/direction/workflow/feature/status, coarse
buckets and minute-grain time. Never an event, conversation or contact id, a hash of one, a
phone, e-mail, name or any text: hashing an identifier is pseudonymisation, not anonymisation.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

LENGTH_BUCKETS = ((0, "0"), (64, "1-64"), (256, "65-256"), (1024, "257-1024"))
DURATION_BUCKETS = ((100, "<100ms"), (1000, "100ms-1s"), (10_000, "1-10s"))


def minute(when: dt.datetime) -> dt.datetime:
    return when.astimezone(dt.UTC).replace(second=0, microsecond=0)


def length_bucket(length: int) -> str:
    for upper, label in LENGTH_BUCKETS:
        if length <= upper:
            return label
    return ">1024"


def duration_bucket(ms: int | None) -> str | None:
    if ms is None:
        return None
    for upper, label in DURATION_BUCKETS:
        if ms < upper:
            return label
    return ">10s"


def _metric(tenant: str, kind: str, when: dt.datetime, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "tenant": tenant,
        "kind": kind,
        "minute": minute(when),
        "channel": None,
        "direction": None,
        "workflow_id": None,
        "feature_id": None,
        "status": None,
        "duration_bucket": None,
        "length_bucket": None,
    }
    base.update(fields)
    return base


def message_metrics(event: dict[str, Any]) -> list[dict[str, Any]]:
    common = {"channel": event["channel"], "direction": event["direction"], "workflow_id": event["workflow_id"]}
    out = [
        _metric(
            event["tenant"], "MESSAGE", event["occurred_at"], length_bucket=length_bucket(len(event["body"])), **common
        )
    ]
    if event["opens_conversation"]:
        out.append(_metric(event["tenant"], "CONVERSATION_STARTED", event["occurred_at"], **common))
    if event["closes_conversation"]:
        out.append(_metric(event["tenant"], "CONVERSATION_CLOSED", event["occurred_at"], **common))
    return out


def metric_count(event: Mapping[str, Any]) -> int:
    """How many usage facts an ingest event yields (for tests, benches and the demo's wait)."""
    if event.get("type", "message") != "message":
        return 1
    return 1 + bool(event.get("opens_conversation")) + bool(event.get("closes_conversation"))


def contact_metric(event: dict[str, Any]) -> dict[str, Any]:
    kind = "CONTACT_DELETE" if event["op"] == "DELETE" else "CONTACT_UPSERT"
    return _metric(event["tenant"], kind, event["occurred_at"])


def execution_metric(event: dict[str, Any]) -> dict[str, Any]:
    return _metric(
        event["tenant"],
        "EXECUTION",
        event["occurred_at"],
        workflow_id=event["workflow_id"],
        feature_id=event["feature_id"],
        status=event["status"],
        duration_bucket=duration_bucket(event["duration_ms"]),
    )


def dropped_metric(tenant: str, when: dt.datetime) -> dict[str, Any]:
    """An event of a terminated tenant was dropped: counted, without anything about it."""
    return _metric(tenant, "DROPPED_TERMINATED", when)
