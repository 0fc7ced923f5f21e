"""What one ingest event turns into, as a list of effects; the worker carries them out.

Pure: no keys, no Kafka. A message becomes a sealed buffer record plus usage metrics (and, when
it closes its conversation, the destruction of the conversation key after sealing); a contact
upsert becomes a sealed contact record, a delete the destruction of the contact key plus a
tombstone; an execution becomes a redacted log line plus a metric.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shredline.processors.anonymise import contact_metric, execution_metric, message_metrics, minute
from shredline.processors.redact import redact
from shredline.processors.roles import Role

CONVERSATION, CONTACT = "conversation", "contact"


@dataclass(frozen=True)
class Seal:
    """Seal `record` (an Avro record of schema `schema`) under the subject's data key."""

    role: Role
    scope: str
    subject_id: str  # raw conversation/contact id: pseudonymised before it leaves the worker
    event_id: str
    schema: str
    record: dict[str, Any]


@dataclass(frozen=True)
class Emit:
    role: Role
    schema: str
    record: dict[str, Any]


@dataclass(frozen=True)
class Destroy:
    scope: str
    subject_id: str
    reason: str


@dataclass(frozen=True)
class Tombstone:
    role: Role
    scope: str
    subject_id: str


Effect = Seal | Emit | Destroy | Tombstone


def plan_message(event: dict[str, Any]) -> list[Effect]:
    effects: list[Effect] = [
        Seal(Role.BUFFER_MESSAGES, CONVERSATION, event["conversation_id"], event["event_id"], "message_event", event)
    ]
    effects += [Emit(Role.METRICS_USAGE, "usage_metric", m) for m in message_metrics(event)]
    if event["closes_conversation"]:
        effects.append(Destroy(CONVERSATION, event["conversation_id"], "conversation closed"))
    return effects


def plan_contact(event: dict[str, Any]) -> list[Effect]:
    metric = Emit(Role.METRICS_USAGE, "usage_metric", contact_metric(event))
    if event["op"] == "DELETE":
        return [
            Destroy(CONTACT, event["contact_id"], "contact deleted"),
            Tombstone(Role.BUFFER_CONTACTS, CONTACT, event["contact_id"]),
            metric,
        ]
    return [Seal(Role.BUFFER_CONTACTS, CONTACT, event["contact_id"], event["event_id"], "contact_event", event), metric]


def redacted_log(event: dict[str, Any]) -> dict[str, Any]:
    known = {"name": event["contact_name"], "phone": event["contact_phone"], "email": event["contact_email"]}
    return {
        "tenant": event["tenant"],
        "minute": minute(event["occurred_at"]),
        "workflow_id": event["workflow_id"],
        "step": event["step"],
        "feature_id": event["feature_id"],
        "status": event["status"],
        "duration_ms": event["duration_ms"],
        "message": redact(event["log_line"], **known) if event["log_line"] is not None else None,
        "error": redact(event["error"], **known) if event["error"] is not None else None,
    }


def plan_execution(event: dict[str, Any]) -> list[Effect]:
    return [
        Emit(Role.LOGS_EXECUTIONS, "redacted_log", redacted_log(event)),
        Emit(Role.METRICS_USAGE, "usage_metric", execution_metric(event)),
    ]


PLANS = {"message_event": plan_message, "contact_event": plan_contact, "execution_event": plan_execution}
